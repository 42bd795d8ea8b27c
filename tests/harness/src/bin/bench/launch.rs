//! `bottle-bench launch`: `bottle run --backend local <bottle> -- true` end to end against
//! `unshare` creating the same namespaces for `true` (the floor), and launch to the first
//! allowed request through egress. Measured from the outside, like a user's shell does.

use std::io::{Read, Write};
use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use bottle_tests::external::TempDir;

fn release_bin(name: &str) -> PathBuf {
    let exe = std::env::current_exe().expect("current exe");
    exe.parent().expect("bin dir").join(name)
}

fn time(mut command: Command) -> Duration {
    let t0 = Instant::now();
    let status = command.stdout(Stdio::null()).stderr(Stdio::null()).status().expect("spawn");
    let elapsed = t0.elapsed();
    assert!(status.success(), "{command:?} failed: {status}");
    elapsed
}

/// An HTTP server on loopback that answers 200 to everything, in a thread.
fn upstream() -> u16 {
    let listener = TcpListener::bind("127.0.0.1:0").expect("bind");
    let port = listener.local_addr().expect("addr").port();
    std::thread::spawn(move || {
        for stream in listener.incoming().flatten() {
            let mut stream = stream;
            let mut buf = [0u8; 4096];
            let _ = stream.read(&mut buf);
            let _ = stream
                .write_all(b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\nconnection: close\r\n\r\nok");
        }
    });
    port
}

fn bottle_file(dir: &Path, name: &str, port: Option<u16>) -> PathBuf {
    let routes = match port {
        Some(port) => format!(
            "egress:\n  routes:\n    - host: echo.test\n      connect: \"127.0.0.1:{port}\"\n"
        ),
        None => String::new(),
    };
    let path = dir.join(format!("{name}.md"));
    std::fs::write(&path, format!("---\nenv:\n  BENCH: \"1\"\n{routes}---\nbench\n"))
        .expect("write bottle");
    path
}

fn bottle(state: &Path, file: &Path, argv: &[&str]) -> Command {
    let mut command = Command::new(release_bin("bottle"));
    command.env("XDG_STATE_HOME", state).arg("run").arg(file).arg("--").args(argv);
    command
}

fn row(name: &str, samples: &mut [Duration], floor: Duration) {
    let p50 = super::percentile(samples, 0.5);
    let p90 = super::percentile(samples, 0.9);
    println!(
        "| {name} | {:.1} ms | {:.1} ms | {:.2}x |",
        p50.as_secs_f64() * 1e3,
        p90.as_secs_f64() * 1e3,
        p50.as_secs_f64() / floor.as_secs_f64()
    );
}

/// Runs the group.
pub(crate) fn run(iterations: usize) {
    let dir = TempDir::new("bench-launch");
    let state = dir.join("state");
    let port = upstream();
    let plain = bottle_file(&dir.0, "plain", None);
    let routed = bottle_file(&dir.0, "routed", Some(port));
    let floor_cmd = || {
        let mut c = Command::new("unshare");
        c.args([
            "--user",
            "--map-root-user",
            "--mount",
            "--pid",
            "--net",
            "--ipc",
            "--uts",
            "--cgroup",
            "--fork",
            "--mount-proc",
            "true",
        ]);
        c
    };
    // One untimed run of each warms the page cache.
    time(floor_cmd());
    time(bottle(&state, &plain, &["/bin/true"]));
    let mut floor: Vec<Duration> = (0..iterations).map(|_| time(floor_cmd())).collect();
    let mut launch: Vec<Duration> =
        (0..iterations).map(|_| time(bottle(&state, &plain, &["/bin/true"]))).collect();
    let request = ["/usr/bin/curl", "-sf", "-o", "/dev/null", "http://echo.test/"];
    let mut first: Vec<Duration> =
        (0..iterations).map(|_| time(bottle(&state, &routed, &request))).collect();
    let floor_p50 = super::percentile(&mut floor, 0.5);
    println!("\n### Launch ({iterations} runs each, release build)\n");
    println!("| what | p50 | p90 | p50 / floor |");
    println!("|---|---|---|---|");
    row("floor: `unshare -Urmpinu --cgroup --fork --mount-proc true`", &mut floor, floor_p50);
    row("`bottle run --backend local <bottle> -- true`", &mut launch, floor_p50);
    row(
        "launch to the first allowed request through egress (curl, then exit)",
        &mut first,
        floor_p50,
    );
}
