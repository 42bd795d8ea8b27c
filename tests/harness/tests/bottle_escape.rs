//! The escape suite against the local backend, through the built `bottle` binary: an
//! agent (a shell script with a small python probe) tries every way out the issue lists,
//! from inside a real bottle, and prints what happened; the test checks each refusal's
//! reason (the proxy's 403 text or the errno inside), that the servers on the host saw
//! nothing, and that the one allowed request reached the API with the real token.
//! A second test looks for the real token everywhere on the host and in the sandbox.

use std::net::{TcpListener, UdpSocket};
use std::time::Duration;

use bottle_tests::bottle_run::{
    Ending, Fixture, LAUNCH_WAIT, TOKEN_VAR, agent_pid, assert_torn_down, files_holding,
    processes_holding, wait_for_path,
};

/// A GitHub classic token shape (pipelock's `github-pat-classic`), random each run.
fn fake_github_token() -> String {
    const ALPHABET: &[u8] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789";
    let tail: String =
        (0..36).map(|_| ALPHABET[rand::random_range(0..ALPHABET.len())] as char).collect();
    format!("ghp_{tail}")
}

/// The resolver the host uses (the agent sees the same `/etc/resolv.conf`).
fn host_resolver() -> String {
    std::fs::read_to_string("/etc/resolv.conf")
        .unwrap_or_default()
        .lines()
        .find_map(|l| l.strip_prefix("nameserver "))
        .map(|s| s.trim().to_string())
        .filter(|s| s.parse::<std::net::Ipv4Addr>().is_ok())
        .unwrap_or_else(|| "8.8.4.4".into())
}

const ESCAPES: &str = r#"
wait_for targets
. /workspace/targets
ask allowed -H "Authorization: Bearer $BOTTLE_TEST_TOKEN" https://api.bottle.test/whoami

ask unlisted_https https://unlisted.bottle.test/
ask unlisted_http http://unlisted.bottle.test/
probe unlisted_connect raw "CONNECT unlisted.bottle.test:443 HTTP/1.1
Host: unlisted.bottle.test:443

"
probe ip_spoofed_http raw "GET http://127.0.0.1:$API_PORT/whoami HTTP/1.1
Host: api.bottle.test
Connection: close

"
probe ip_spoofed_connect raw "CONNECT 127.0.0.1:$API_PORT HTTP/1.1
Host: api.bottle.test

"
probe ip_decimal_http raw "GET http://2130706433:$API_PORT/whoami HTTP/1.1
Host: 2130706433:$API_PORT
Connection: close

"
ask ip_https --noproxy "" -H "Host: api.bottle.test" https://127.0.0.1:$API_PORT/whoami

ask secret_path "https://api.bottle.test/notes/$GHP"
ask secret_query "https://api.bottle.test/notes?key=$GHP"
ask secret_header -H "X-Deploy-Key: $GHP" https://api.bottle.test/notes
ask secret_body --data "key=$GHP" https://api.bottle.test/notes

ask direct_by_name --noproxy '*' https://api.bottle.test/whoami
probe direct_host_loopback tcp 127.0.0.1 $API_PORT
probe direct_outside tcp 8.8.8.8 443
probe direct_outside6 tcp6 2001:4860:4860::8888 443

probe dns_host_loopback udp 127.0.0.1 $DNS_PORT
probe dns_outside udp 8.8.8.8 53
probe dns_outside6 udp 2001:4860:4860::8888 53
probe dns_host_resolver udp $RESOLVER 53
if getent hosts api.bottle.test >/dev/null 2>&1; then echo "R dns_getent resolved"; else echo "R dns_getent failed $?"; fi

probe loopback_service tcp 127.0.0.1 $SERVICE_PORT
ask loopback_via_proxy --noproxy "" http://127.0.0.1:$SERVICE_PORT/
ask localhost_via_proxy --noproxy "" http://localhost:$SERVICE_PORT/

probe docker_var_run unix /var/run/docker.sock
probe docker_run unix /run/docker.sock

probe sidecar_kill kill $SIDECAR_PID 9
probe sidecar_ptrace ptrace $SIDECAR_PID
probe sidecar_proc open /proc/$SIDECAR_PID/environ
probe pid1_ptrace ptrace 1
probe pid1_environ open /proc/1/environ
probe pid1_mem open /proc/1/mem
probe parent_kill_control kill $$ 0
probe sidecar_config open $STATE/sidecar.toml
probe sidecar_routes open $STATE/routes.yaml
probe sidecar_control unix $STATE/control.sock
probe state_root listdir $STATE_ROOT

probe userns unshare 0x10000000
if unshare -U true 2>/tmp/e; then echo "R userns_tool created"; else echo "R userns_tool $(cat /tmp/e)"; fi
echo done
"#;

/// What each probe must print (a substring of its `R` line), and why.
fn expectations(ghp_rule: &str) -> Vec<(&'static str, String)> {
    let secret = |location: &str| format!("request contains a secret: {ghp_rule} in {location}");
    vec![
        ("allowed", "200 0 authorized".into()),
        ("unlisted_https", "CONNECT tunnel failed, response 403".into()),
        ("unlisted_http", "403 0 bottle: blocked: no route for host \"unlisted.bottle.test\"".into()),
        ("unlisted_connect", "403 Forbidden | bottle: blocked: no route for host \"unlisted.bottle.test\"".into()),
        ("ip_spoofed_http", "403 Forbidden | bottle: blocked: Host header \"api.bottle.test\" does not match the target host \"127.0.0.1\"".into()),
        ("ip_spoofed_connect", "403 Forbidden | bottle: blocked: IP address 127.0.0.1 is not a route".into()),
        ("ip_decimal_http", "403 Forbidden | bottle: blocked: IP address 127.0.0.1 is not a route".into()),
        ("ip_https", "CONNECT tunnel failed, response 403".into()),
        ("secret_path", format!("403 0 bottle: blocked: {}", secret("url"))),
        ("secret_query", format!("403 0 bottle: blocked: {}", secret("url"))),
        ("secret_header", format!("403 0 bottle: blocked: {}", secret("header x-deploy-key"))),
        ("secret_body", format!("403 0 bottle: blocked: {}", secret("body"))),
        ("direct_by_name", "000 6 curl: (6) Could not resolve host: api.bottle.test".into()),
        ("direct_host_loopback", format!("errno {}", libc::ECONNREFUSED)),
        ("direct_outside", format!("errno {}", libc::ENETUNREACH)),
        ("direct_outside6", format!("errno {}", libc::ENETUNREACH)),
        ("dns_host_loopback", format!("errno {}", libc::ECONNREFUSED)),
        ("dns_outside", format!("errno {}", libc::ENETUNREACH)),
        ("dns_outside6", format!("errno {}", libc::ENETUNREACH)),
        ("dns_host_resolver", format!("errno {}", libc::ENETUNREACH)),
        ("dns_getent", "failed".into()),
        ("loopback_service", format!("errno {}", libc::ECONNREFUSED)),
        ("loopback_via_proxy", "403 0 bottle: blocked: IP address 127.0.0.1 is not a route".into()),
        ("localhost_via_proxy", "403 0 bottle: blocked: no route for host \"localhost\"".into()),
        ("docker_var_run", format!("errno {}", libc::ENOENT)),
        ("docker_run", format!("errno {}", libc::ENOENT)),
        ("sidecar_kill", format!("errno {}", libc::ESRCH)),
        ("sidecar_ptrace", format!("errno {}", libc::EPERM)),
        ("sidecar_proc", format!("errno {}", libc::ENOENT)),
        ("pid1_ptrace", format!("errno {}", libc::EPERM)),
        ("pid1_environ", format!("errno {}", libc::EACCES)),
        ("pid1_mem", format!("errno {}", libc::EACCES)),
        ("parent_kill_control", "ok".into()),
        ("sidecar_config", format!("errno {}", libc::ENOENT)),
        ("sidecar_routes", format!("errno {}", libc::ENOENT)),
        ("sidecar_control", format!("errno {}", libc::ENOENT)),
        ("state_root", format!("errno {}", libc::ENOENT)),
        ("userns", format!("errno {}", libc::EPERM)),
        ("userns_tool", "unshare failed: Operation not permitted".into()),
    ]
}

#[test]
fn every_escape_is_refused_for_its_reason_and_the_allowed_request_gets_the_token() {
    let fx = Fixture::with_api("escape");
    let file = fx.bottle("escape", "");
    let dns = UdpSocket::bind("127.0.0.1:0").unwrap();
    dns.set_nonblocking(true).unwrap();
    let service = TcpListener::bind("127.0.0.1:0").unwrap();
    service.set_nonblocking(true).unwrap();
    let ghp = fake_github_token();
    let launched = fx.launch(&file, ESCAPES);
    let record = fx.wait_record(LAUNCH_WAIT, |r| r["phase"] == "running");
    let id = record["id"].as_str().unwrap().to_string();
    let sidecar = record["sidecar"]["pid"].as_i64().unwrap();
    let targets = format!(
        "API_PORT={api}\nDNS_PORT={dns}\nSERVICE_PORT={service}\nSIDECAR_PID={sidecar}\nSTATE={state}\nSTATE_ROOT={root}\nRESOLVER={resolver}\nGHP={ghp}\n",
        api = fx.api().addr.port(),
        dns = dns.local_addr().unwrap().port(),
        service = service.local_addr().unwrap().port(),
        state = fx.bottle_dir(&id).display(),
        root = fx.state_root().display(),
        resolver = host_resolver(),
    );
    std::fs::write(fx.workspace().join("targets"), targets).unwrap();
    let (finished, seen) = launched.wait(Duration::from_secs(90));
    assert_eq!(finished.code, Some(0), "{finished:?}");
    assert!(finished.stdout.contains("\ndone"), "the agent did not finish: {finished:?}");
    let results = finished.results();

    let mut wrong = Vec::new();
    for (name, expected) in expectations("github-pat-classic") {
        let got = results.get(name).cloned().unwrap_or_else(|| "<no result>".into());
        if !got.contains(&expected) {
            wrong.push(format!("{name}: expected {expected:?}, got {got:?}"));
        }
    }
    assert!(
        wrong.is_empty(),
        "escapes not refused as expected:\n{}\n\nall: {results:#?}",
        wrong.join("\n")
    );
    // The fake secret and the real token never came back in a refusal.
    assert!(!finished.stdout.contains(&fx.api().token), "the agent saw the real token");

    // The host side saw only the allowed request, with the real token injected.
    let api = fx.api().seen();
    assert_eq!(api.len(), 1, "the API saw more than the allowed request: {api:?}");
    assert_eq!((api[0].method.as_str(), api[0].path.as_str()), ("GET", "/whoami"));
    assert!(api[0].authorized, "the allowed request did not carry the real token");
    assert_eq!(fx.api().connections(), 1, "another connection reached the API");
    let mut buffer = [0u8; 512];
    assert_eq!(
        dns.recv(&mut buffer).map_err(|e| e.kind()),
        Err(std::io::ErrorKind::WouldBlock),
        "the host's DNS-ish server got a datagram"
    );
    assert_eq!(
        service.accept().map(|_| ()).map_err(|e| e.kind()),
        Err(std::io::ErrorKind::WouldBlock),
        "the host's loopback service accepted a connection"
    );
    // Controls: from the host, both servers are reachable, so the checks above can fail.
    UdpSocket::bind("127.0.0.1:0").unwrap().send_to(b"x", dns.local_addr().unwrap()).unwrap();
    assert!(bottle_tests::external::wait_until(Duration::from_secs(5), || dns
        .recv(&mut buffer)
        .is_ok()));
    let _client = std::net::TcpStream::connect(service.local_addr().unwrap()).unwrap();
    assert!(bottle_tests::external::wait_until(Duration::from_secs(5), || service
        .accept()
        .is_ok()));
    assert!(
        std::path::Path::new("/run/docker.sock").exists()
            || std::path::Path::new("/var/run/docker.sock").exists(),
        "control: this host has a Docker socket the agent could not reach"
    );
    assert_torn_down(&fx, &seen, &[id], Ending::Exited(0));
}

#[test]
fn the_real_token_is_nowhere_but_the_launchers_own_environment() {
    let fx = Fixture::with_api("token");
    let file = fx.bottle("token", "");
    let script = r#"
ask allowed https://api.bottle.test/whoami
env > /tmp/agent-env
cp /tmp/agent-env /workspace/agent-env
touch /workspace/ready
wait_for scanned
echo done
"#;
    let launched = fx.launch(&file, script);
    let token = fx.api().token.clone();
    assert!(wait_for_path(&fx.workspace().join("ready"), LAUNCH_WAIT), "the agent never got ready");
    let agent = agent_pid(&fx, &launched.watcher);

    // Control: the scan finds the token where it must be (the launcher's environment is
    // how the user hands it over), so an empty result below means something.
    let holders = processes_holding(&token, &[]);
    assert!(
        holders.iter().any(|h| h.starts_with(&format!("{} environ", launched.pid()))),
        "the scan missed the launcher: {holders:?}"
    );
    let elsewhere = processes_holding(&token, &[launched.pid()]);
    assert_eq!(elsewhere, Vec::<String>::new(), "the real token is in these processes");
    let environ = std::fs::read(format!("/proc/{agent}/environ")).unwrap();
    let environ = String::from_utf8_lossy(&environ);
    let placeholder = environ
        .split('\0')
        .find_map(|kv| kv.strip_prefix(&format!("{TOKEN_VAR}=")))
        .expect("the agent has a placeholder");
    assert!(placeholder.starts_with("bottle-placeholder-"), "{placeholder}");

    let root = std::path::PathBuf::from(format!("/proc/{agent}/root"));
    for dir in ["etc", "tmp", "workspace"] {
        let inside = root.join(dir);
        assert!(inside.is_dir(), "{} is not readable from the host", inside.display());
        let found = files_holding(&inside, &token);
        assert_eq!(found, Vec::<std::path::PathBuf>::new(), "in the sandbox's /{dir}");
    }
    // The sandbox's own /proc, by its own pids: every process's environment and argv.
    let mut inside_pids = 0;
    for entry in std::fs::read_dir(root.join("proc")).unwrap().filter_map(|e| e.ok()) {
        if entry.file_name().to_str().is_some_and(|n| n.parse::<u32>().is_ok()) {
            inside_pids += 1;
            for file in ["environ", "cmdline"] {
                let bytes = std::fs::read(entry.path().join(file)).unwrap_or_default();
                assert!(
                    memchr::memmem::find(&bytes, token.as_bytes()).is_none(),
                    "{}/{file} inside holds the token",
                    entry.path().display()
                );
            }
        }
    }
    assert!(inside_pids >= 2, "the sandbox's /proc shows {inside_pids} processes");
    let agent_env = std::fs::read_to_string(root.join("tmp/agent-env")).unwrap();
    assert!(agent_env.contains(placeholder), "the agent's own env dump: {agent_env}");
    let state = files_holding(&fx.state_root(), &token);
    assert_eq!(state, Vec::<std::path::PathBuf>::new(), "the state folder holds the token");

    fx.signal_agent("scanned");
    let (finished, seen) = launched.wait(LAUNCH_WAIT);
    assert_eq!(finished.code, Some(0), "{finished:?}");
    assert_eq!(finished.results()["allowed"], "200 0 authorized", "{finished:?}");
    for (what, text) in [("stdout", &finished.stdout), ("stderr", &finished.stderr)] {
        assert!(!text.contains(&token), "the launcher's {what} holds the token");
    }
    // Everything the bottle wrote (state, logs, audit, workspace) after teardown.
    assert_eq!(files_holding(&fx.dir.0, &token), Vec::<std::path::PathBuf>::new());
    let ids = fx.ids();
    assert_torn_down(&fx, &seen, &ids, Ending::Exited(0));
}
