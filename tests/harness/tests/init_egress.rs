//! bottle-init running the egress proxy as its builtin daemon: the proxy serves, its CA
//! certificate (never the key) and the agent's placeholders are written out, SIGHUP and
//! `ctl reload` swap the routes, and an invalid routes file keeps the old table.
#![allow(clippy::disallowed_methods)] // drives bottle-init and curl; no reaper in this process

use std::time::Duration;

use bottle_tests::egress::Upstream;
use bottle_tests::external::{Guarded, TempDir, bottle_init, command, output, wait_until};

fn curl(proxy: &str, url: &str) -> u16 {
    let out = output(command("curl").args([
        "-s",
        "-o",
        "/dev/null",
        "-w",
        "%{http_code}",
        "--max-time",
        "10",
        "-x",
        proxy,
        url,
    ]));
    String::from_utf8_lossy(&out.stdout).trim().parse().unwrap_or(0)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_builtin_egress_serves_reloads_on_sighup_and_keeps_the_old_table_on_error() {
    let upstream = Upstream::http().await;
    let dir = TempDir::new("init-egress");
    let port = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
    let routes = dir.join("routes.yaml");
    let route = |host: &str| format!("  - host: {host}\n    connect: \"{}\"\n", upstream.addr);
    std::fs::write(&routes, format!("routes:\n{}", route("plain.test"))).unwrap();
    std::fs::write(
        dir.join("init.toml"),
        format!(
            "control_socket = \"{d}/ctl.sock\"\n[[daemon]]\nname = \"egress\"\nbuiltin = \"egress\"\nsignificant = true\n[daemon.config]\nroutes = \"{r}\"\nlisten = {{ addr = \"127.0.0.1:{port}\" }}\nca_out = \"{d}/ca\"\n",
            d = dir.0.display(),
            r = routes.display()
        ),
    )
    .unwrap();
    let mut cmd = command(bottle_init());
    cmd.arg("--config").arg(dir.join("init.toml"));
    let init = Guarded::spawn(&mut cmd);
    let proxy = format!("http://127.0.0.1:{port}");
    let (p, u) = (proxy.clone(), "http://plain.test/x");
    assert!(
        tokio::task::spawn_blocking(
            move || wait_until(Duration::from_secs(10), || curl(&p, u) == 200)
        )
        .await
        .unwrap(),
        "egress never served"
    );
    let pp = proxy.clone();
    assert_eq!(
        tokio::task::spawn_blocking(move || curl(&pp, "http://new.test/x")).await.unwrap(),
        403
    );

    // The CA certificate and placeholders are written; no private key anywhere.
    let pem = std::fs::read_to_string(dir.join("ca/ca.pem")).unwrap();
    assert!(pem.contains("BEGIN CERTIFICATE"));
    for entry in std::fs::read_dir(dir.join("ca")).unwrap() {
        let text = std::fs::read_to_string(entry.unwrap().path()).unwrap();
        assert!(!text.contains("PRIVATE KEY"));
    }

    // SIGHUP: bottle-init reloads, the builtin re-reads its routes.
    std::fs::write(&routes, format!("routes:\n{}{}", route("plain.test"), route("new.test")))
        .unwrap();
    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(init.pid()),
        nix::sys::signal::Signal::SIGHUP,
    )
    .unwrap();
    let pp = proxy.clone();
    assert!(
        tokio::task::spawn_blocking(move || wait_until(Duration::from_secs(10), || curl(
            &pp,
            "http://new.test/x"
        ) == 200))
        .await
        .unwrap()
    );

    // An invalid routes file: `ctl reload` reports it, the old table stays.
    std::fs::write(&routes, "routes:\n  - host: plain.test\n    methds: [GET]\n").unwrap();
    let out = output(
        command(bottle_init()).arg("ctl").arg("--socket").arg(dir.join("ctl.sock")).arg("reload"),
    );
    let said =
        format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
    assert!(said.contains("egress: reload failed") && said.contains("methds"), "{said}");
    let pp = proxy.clone();
    assert_eq!(
        tokio::task::spawn_blocking(move || curl(&pp, "http://new.test/x")).await.unwrap(),
        200
    );

    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(init.pid()),
        nix::sys::signal::Signal::SIGTERM,
    )
    .unwrap();
    let (status, _, err) = init.wait(Duration::from_secs(10));
    assert_eq!(status.and_then(|s| s.code()), Some(0), "{err}");
}
