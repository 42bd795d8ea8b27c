//! Confinement: fail closed when upstream is down, 404 for anything undeclared or
//! traversing, 413 and 400 for oversize and malformed bodies, serialized pushes.

mod common;

use std::time::{Duration, Instant};

use bottle_git_gate::RepoSettings;
use common::{Fixture, commit, raw_http, run, run_raw};

fn repo(url: String) -> RepoSettings {
    RepoSettings {
        url,
        token_ref: Some("DEMO_TOKEN".into()),
        username: "x-access-token".into(),
        identity: None,
        host_key: None,
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn upstream_down_or_stalled_makes_clone_fail_with_a_reason_not_hang() {
    // A port nobody listens on, and one that accepts and never answers.
    let closed = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
    let stalled = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let stalled_port = stalled.local_addr().unwrap().port();
    tokio::spawn(async move {
        let mut held = Vec::new();
        while let Ok((stream, _)) = stalled.accept().await {
            held.push(stream);
        }
    });
    let fx = Fixture::start(|s, _| {
        s.upstream_timeout_seconds = 3;
        s.repos.insert("down".into(), repo(format!("https://localhost:{closed}/down.git")));
        s.repos.insert(
            "stalled".into(),
            repo(format!("https://localhost:{stalled_port}/stalled.git")),
        );
    })
    .await;
    for name in ["down", "stalled"] {
        let started = Instant::now();
        let out = run_raw(&fx.git, fx.tmp.path(), &["clone", &fx.url(name), name]).await;
        let took = started.elapsed();
        assert!(!out.status.success(), "{name}: clone succeeded");
        assert!(took < Duration::from_secs(15), "{name}: took {took:?}");
        assert!(
            out.stderr.contains(&format!("remote: bottle: git-gate: cannot refresh {name} from upstream, refusing to serve stale data")),
            "{name}: {}",
            out.stderr
        );
        let why =
            if name == "down" { "git fetch failed" } else { "git fetch did not finish within 3 s" };
        assert!(out.stderr.contains(why), "{name}: {}", out.stderr);
    }
    // A working repository of the same gate still clones, and a fetch after the
    // upstream disappears fails instead of serving what the mirror had.
    let work = fx.clone_repo("demo", "agent").await;
    std::fs::rename(fx.upstream.root.join("demo.git"), fx.upstream.root.join("gone.git")).unwrap();
    let out = run_raw(&fx.git, &work, &["fetch", "origin"]).await;
    assert!(!out.status.success(), "fetch served stale data: {}", out.stderr);
    assert!(out.stderr.contains("cannot refresh demo from upstream"), "{}", out.stderr);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn traversal_undeclared_and_symlinked_repositories_are_not_found() {
    let fx = Fixture::start(|s, up| {
        s.repos.insert("linked".into(), repo(up.url("demo")));
    })
    .await;
    let q = "?service=git-upload-pack";
    for path in [
        format!("/undeclared.git/info/refs{q}"),
        format!("/../demo.git/info/refs{q}"),
        format!("/%2e%2e/demo.git/info/refs{q}"),
        format!("/demo.git/%2e%2e/info/refs{q}"),
        format!("/demo%2Egit/info/refs{q}"),
        "/demo.git/../../etc/passwd".to_string(),
        "/demo.git/objects/info/packs".to_string(),
        "/demo.git/HEAD".to_string(),
        format!("//demo.git/info/refs{q}"),
        format!("/.gate/info/refs{q}"),
    ] {
        let request = format!("GET {path} HTTP/1.1\r\nHost: gate\r\nConnection: close\r\n\r\n");
        let (code, body) = raw_http(fx.gate, request.as_bytes()).await;
        assert_eq!(code, 404, "{path}: {body}");
        assert!(body.contains("bottle: git-gate: not found"), "{path}: {body}");
    }
    // An absolute-form target is routed by its path only.
    let request = "GET http://gate/etc/passwd HTTP/1.1\r\nHost: gate\r\nConnection: close\r\n\r\n"
        .to_string();
    assert_eq!(raw_http(fx.gate, request.as_bytes()).await.0, 404);
    // A real client asking for an undeclared repository is told so.
    let out = run_raw(&fx.git, fx.tmp.path(), &["clone", &fx.url("undeclared"), "u"]).await;
    assert!(!out.status.success());
    assert!(out.stderr.contains("not found"), "{}", out.stderr);
    // A mirror replaced by a symlink is not served.
    let linked = fx.settings.root.join("linked.git");
    std::fs::rename(&linked, fx.tmp.path().join("moved.git")).unwrap();
    std::os::unix::fs::symlink(fx.tmp.path().join("moved.git"), &linked).unwrap();
    let request =
        format!("GET /linked.git/info/refs{q} HTTP/1.1\r\nHost: gate\r\nConnection: close\r\n\r\n");
    assert_eq!(raw_http(fx.gate, request.as_bytes()).await.0, 404);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn oversize_and_malformed_bodies_are_refused_with_their_status() {
    let fx = Fixture::start(|s, _| s.max_body_bytes = 64 * 1024).await;
    let post = |headers: &str, body: &[u8]| {
        let mut r = format!("POST /demo.git/git-receive-pack HTTP/1.1\r\nHost: gate\r\nConnection: close\r\n{headers}\r\n").into_bytes();
        r.extend_from_slice(body);
        r
    };
    // Declared too large: refused before the body is read.
    let (code, body) = raw_http(fx.gate, &post("Content-Length: 10000000\r\n", b"")).await;
    assert_eq!(code, 413, "{body}");
    assert!(body.contains("over the 65536 byte limit"), "{body}");
    // Chunked and too large: cut off at the cap.
    let chunk = vec![b'a'; 40 * 1024];
    let mut chunked = Vec::new();
    for _ in 0..2 {
        chunked.extend(format!("{:x}\r\n", chunk.len()).into_bytes());
        chunked.extend_from_slice(&chunk);
        chunked.extend_from_slice(b"\r\n");
    }
    chunked.extend_from_slice(b"0\r\n\r\n");
    let (code, _) = raw_http(fx.gate, &post("Transfer-Encoding: chunked\r\n", &chunked)).await;
    assert_eq!(code, 413);
    // Malformed lengths are hyper's 400.
    for bad in ["Content-Length: abc\r\n", "Content-Length: -5\r\n"] {
        let (code, _) = raw_http(fx.gate, &post(bad, b"")).await;
        assert_eq!(code, 400, "{bad}");
    }
    // A body that is not a push, a truncated one, an empty one.
    for body in [&b"hello world"[..], b"00a4", b""] {
        let headers = format!("Content-Length: {}\r\n", body.len());
        let (code, text) = raw_http(fx.gate, &post(&headers, body)).await;
        assert_eq!(code, 400, "{body:?}: {text}");
        assert!(text.contains("bottle: git-gate: malformed push"), "{text}");
    }
    // A chunked push within the cap is read whole (git sends large pushes chunked).
    let work = fx.clone_repo("demo", "agent").await;
    let big: String = (0..3000).map(|i| format!("line {i} of a file\n")).collect();
    commit(&fx.git, &work, &[("big.txt", &big)], "big").await;
    let out =
        run_raw(&fx.git, &work, &["-c", "http.postBuffer=1024", "push", "origin", "main"]).await;
    assert!(out.status.success(), "{}", out.stderr);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_concurrent_pushes_to_one_repository_are_serialized() {
    let fx = Fixture::start(|_, _| {}).await;
    let a = fx.clone_repo("demo", "a").await;
    let b = fx.clone_repo("demo", "b").await;
    run(&fx.git, &a, &["checkout", "-q", "-b", "one"]).await;
    run(&fx.git, &b, &["checkout", "-q", "-b", "two"]).await;
    let one = commit(&fx.git, &a, &[("one.txt", "1\n")], "one").await;
    let two = commit(&fx.git, &b, &[("two.txt", "2\n")], "two").await;
    // And two pushes racing for the same branch: exactly one wins.
    let a_main = commit(&fx.git, &a, &[("a.txt", "a\n")], "a main").await;
    let b_main = commit(&fx.git, &b, &[("b.txt", "b\n")], "b main").await;
    let (ra, rb) = tokio::join!(
        run_raw(&fx.git, &a, &["push", "origin", "one", "HEAD:refs/heads/race"]),
        run_raw(&fx.git, &b, &["push", "origin", "two", "HEAD:refs/heads/race"]),
    );
    // Each branch carries its clone's second commit on top of the first.
    assert_eq!(fx.upstream.rev("demo", "refs/heads/one~1").await.as_deref(), Some(one.as_str()));
    assert_eq!(fx.upstream.rev("demo", "refs/heads/two~1").await.as_deref(), Some(two.as_str()));
    assert_eq!(fx.upstream.rev("demo", "refs/heads/one").await.as_deref(), Some(a_main.as_str()));
    assert_eq!(fx.upstream.rev("demo", "refs/heads/two").await.as_deref(), Some(b_main.as_str()));
    let race = fx.upstream.rev("demo", "refs/heads/race").await.unwrap();
    let (winner, loser) = if race == a_main { (&ra, &rb) } else { (&rb, &ra) };
    assert!(race == a_main || race == b_main);
    assert!(winner.status.success(), "{}", winner.stderr);
    assert!(!loser.status.success(), "both won: {}", loser.stderr);
    // Racing at the gate, the loser's lease fails upstream; arriving after the winner
    // landed, its own client sees the newer ref in the advertisement.
    let raced = loser.stderr.contains("HEAD -> race (upstream rejected: [rejected] (stale info))");
    let late = loser.stderr.contains("HEAD -> race (fetch first)");
    assert!(raced || late, "{}", loser.stderr);
    // The mirror agrees with upstream on every ref.
    for r in ["refs/heads/one", "refs/heads/two", "refs/heads/race"] {
        assert_eq!(fx.mirror_rev("demo", r).await, fx.upstream.rev("demo", r).await, "{r}");
    }
}
