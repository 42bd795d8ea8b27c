//! The egress proxy end to end: curl and a Rust client through a proxy in this process
//! to local HTTP and HTTPS upstreams started here.
#![allow(clippy::disallowed_methods)] // drives curl; no reaper in this process

use std::time::Duration;

use bottle_tests::egress::{Proxy, Upstream};

const API_TOKEN: &str = "real-api-token-0123456789";
const GH_TOKEN: &str = "ghp_realgithubtoken0123456789";

struct World {
    proxy: Proxy,
    https: Upstream,
}

async fn world() -> World {
    let http = Upstream::http().await;
    let https = Upstream::https(&[
        "secure.test",
        "nofetch.test",
        "pass.test",
        "api.github.test",
        "basic.test",
        "named.test",
    ])
    .await;
    let routes = format!(
        r#"routes:
  - host: plain.test
    connect: "{h}"
    auth: {{scheme: Bearer, token_ref: API_TOKEN, plaintext: true}}
    matches:
      - paths: [{{type: prefix, value: /api/}}]
        methods: [GET, POST]
      - paths: [{{type: exact, value: /health}}]
      - paths: [{{type: regex, value: '/repos/[a-z]+/issues'}}]
        headers: [{{name: X-Mode, value: read}}]
  - host: secure.test
    connect: "{s}"
    auth: {{scheme: token, token_ref: GH_TOKEN}}
    git: {{fetch: true}}
  - host: nofetch.test
    connect: "{s}"
  - host: pass.test
    connect: "{s}"
    tls_passthrough: true
  - host: localhost
  - host: api.github.test
    connect: "{s}"
    auth: {{scheme: token, token_ref: GH_TOKEN}}
  - host: basic.test
    connect: "{s}"
    auth: {{scheme: Basic, token_ref: BASIC_TOKEN}}
  - host: named.test
    connect: "{s}"
    auth: {{scheme: header, token_ref: API_TOKEN, header: X-Api-Key}}
  - host: noplain.test
    connect: "{h}"
    auth: {{scheme: Bearer, token_ref: API_TOKEN}}
  - host: ports.test
    connect: "{h}"
    ports: [80, 8080]
"#,
        h = http.addr,
        s = https.addr
    );
    let proxy = Proxy::start(
        &routes,
        &[
            ("API_TOKEN", API_TOKEN),
            ("GH_TOKEN", GH_TOKEN),
            ("BASIC_TOKEN", "dXNlcjpwYXNzd29yZA=="),
        ],
        https.ca_pem.as_deref(),
    )
    .await;
    World { proxy, https }
}

fn json(body: &str) -> serde_json::Value {
    serde_json::from_str(body).unwrap_or_else(|e| panic!("not JSON ({e}): {body}"))
}

fn header_values(echo: &serde_json::Value, name: &str) -> Vec<String> {
    echo["headers"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|h| h[0].as_str().unwrap().eq_ignore_ascii_case(name))
        .map(|h| h[1].as_str().unwrap().to_string())
        .collect()
}

async fn curl(w: &World, args: &[&str]) -> (u16, String, String) {
    bottle_tests::egress::curl_via(w.proxy.addr, w.proxy.ca_file(), args).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_match_kind_allows_and_denies_as_written() {
    let w = world().await;
    for (args, status) in [
        (vec!["http://plain.test/api/users"], 200),
        (vec!["-X", "POST", "-d", "x=1", "http://plain.test/api/users"], 200),
        (vec!["-X", "DELETE", "http://plain.test/api/users"], 403),
        // Gateway API semantics: the prefix `/api/` also matches `/api` itself.
        (vec!["http://plain.test/api"], 200),
        (vec!["http://plain.test/apix"], 403),
        (vec!["http://plain.test/health"], 200),
        (vec!["http://plain.test/health/deep"], 403),
        (vec!["-H", "X-Mode: read", "http://plain.test/repos/abc/issues"], 200),
        (vec!["http://plain.test/repos/abc/issues"], 403),
        (vec!["-H", "X-Mode: write", "http://plain.test/repos/abc/issues"], 403),
        (vec!["--path-as-is", "http://plain.test/api/../admin"], 403),
        (vec!["--path-as-is", "http://plain.test/api/%2e%2e/admin"], 403),
        (vec!["http://unlisted.test/"], 403),
    ] {
        let (code, body, err) = curl(&w, &args).await;
        assert_eq!(code, status, "{args:?}: {body} {err}");
        if status == 403 {
            assert!(body.starts_with("bottle: blocked: "), "{body}");
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_real_token_is_injected_exactly_once_and_the_agents_never_leaves() {
    let w = world().await;
    let (code, body, _) = curl(
        &w,
        &[
            "-H",
            "Authorization: Bearer agent-supplied",
            "-H",
            "Proxy-Authorization: Basic eDp5",
            "http://plain.test/api/x",
        ],
    )
    .await;
    assert_eq!(code, 200, "{body}");
    let echo = json(&body);
    assert_eq!(header_values(&echo, "authorization"), vec![format!("Bearer {API_TOKEN}")]);
    assert!(header_values(&echo, "proxy-authorization").is_empty());
    assert!(!body.contains("agent-supplied"));
    // Over intercepted HTTPS too, with the route's scheme.
    let (code, body, err) =
        curl(&w, &["-H", "Authorization: token agent", "https://secure.test/user"]).await;
    assert_eq!(code, 200, "{body} {err}");
    assert_eq!(header_values(&json(&body), "authorization"), vec![format!("token {GH_TOKEN}")]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn http2_works_through_an_intercepted_route() {
    let w = world().await;
    let (code, body, err) =
        curl(&w, &["--http2", "-w", "|%{http_version}\n%{http_code}", "https://secure.test/h2"])
            .await;
    assert_eq!(code, 200, "{body} {err}");
    assert!(body.ends_with("|2"), "curl did not speak HTTP/2 to the proxy: {body}");
    assert!(body.contains("\"path\":\"/h2\""), "{body}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn host_sni_and_host_header_spoofing_is_blocked() {
    let w = world().await;
    let (code, body, _) = curl(&w, &["-H", "Host: evil.test", "http://plain.test/api/x"]).await;
    assert_eq!(code, 403, "{body}");
    assert!(body.contains("Host header"), "{body}");
    // CONNECT to one allowed host, TLS SNI naming another allowed host.
    let ca = w.proxy.ca.cert_pem().to_string();
    let reply = w.proxy.connect_tls("secure.test:443", "nofetch.test", &ca, "/").await.unwrap();
    assert!(reply.starts_with("HTTP/1.1 403") && reply.contains("SNI"), "{reply}");
    // SNI naming a host the CA may not sign for: no certificate, no connection.
    let err = w.proxy.connect_tls("secure.test:443", "evil.test", &ca, "/").await.unwrap_err();
    assert!(err.starts_with("tls:"), "{err}");
}

/// A TCP listener on loopback that only counts the connections it accepts: where a
/// proxy that failed to refuse an SSRF would have connected.
struct Trap {
    addr: std::net::SocketAddr,
    accepted: std::sync::Arc<std::sync::atomic::AtomicUsize>,
}

impl Trap {
    async fn bind(at: &str) -> Trap {
        let listener = tokio::net::TcpListener::bind(at).await.unwrap();
        let addr = listener.local_addr().unwrap();
        let accepted = std::sync::Arc::new(std::sync::atomic::AtomicUsize::new(0));
        let count = accepted.clone();
        tokio::spawn(async move {
            while let Ok((stream, _)) = listener.accept().await {
                count.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
                drop(stream);
            }
        });
        Trap { addr, accepted }
    }

    fn accepted(&self) -> usize {
        self.accepted.load(std::sync::atomic::Ordering::SeqCst)
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ip_literals_in_every_encoding_and_private_resolutions_are_blocked() {
    let w = world().await;
    // Every spelling of 127.0.0.1 names the trap's port: a proxy that dialled any of them
    // would be counted. The other literals are refused the same way (no route), before
    // any dial, so they keep the default port.
    let trap = Trap::bind("127.0.0.1:0").await;
    let port = trap.addr.port();
    let loopback = [
        "127.0.0.1",
        "2130706433",
        "0x7f000001",
        "0x7f.1",
        "0177.0.0.1",
        "127.1",
        "[::ffff:127.0.0.1]",
    ];
    let private = [
        "[::1]",
        "169.254.169.254",
        "10.0.0.1",
        "172.16.0.1",
        "192.168.1.1",
        "100.64.0.1",
        "224.0.0.1",
        "[fe80::1]",
        "[fd00:ec2::254]",
    ];
    let urls = loopback
        .iter()
        .map(|l| format!("http://{l}:{port}/"))
        .chain(private.iter().map(|l| format!("http://{l}/")));
    for url in urls {
        let (code, body, err) = curl(&w, &[&url]).await;
        assert_eq!(code, 403, "{url}: {body} {err}");
        assert!(body.contains("is not a route"), "{url}: {body}");
    }
    let (code, body, _) = curl(&w, &["http://localhost/"]).await;
    assert_eq!(code, 403, "{body}");
    assert!(body.contains("Loopback"), "{body}");

    // A route whose name resolves to loopback, on the trap's port: refused after the
    // lookup, before the dial.
    let routes = format!(
        "routes:\n  - host: localhost\n    ports: [{port}]\n  - host: trap.test\n    connect: \"{}\"\n",
        trap.addr
    );
    let second = Proxy::start(&routes, &[], None).await;
    let (code, body, err) = bottle_tests::egress::curl_via(
        second.addr,
        second.ca_file(),
        &[&format!("http://localhost:{port}/")],
    )
    .await;
    assert_eq!(code, 403, "{body} {err}");
    assert!(body.contains("Loopback"), "{body}");
    assert_eq!(trap.accepted(), 0, "the proxy connected to a refused loopback address");

    // The control: an operator's `connect` to the same address is dialled, and counted.
    let (code, body, err) =
        bottle_tests::egress::curl_via(second.addr, second.ca_file(), &["http://trap.test/"]).await;
    assert_ne!(code, 403, "{body} {err}");
    assert!(
        bottle_tests::eventually(Duration::from_secs(5), || trap.accepted() > 0).await,
        "the trap never counted the control connection"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn doh_and_git_push_are_blocked_and_fetch_needs_the_flag() {
    let w = world().await;
    for (args, status, needle) in [
        (
            vec!["https://secure.test/dns-query?dns=AAABAAABAAAAAAAAA3d3dwdleGFtcGxlA2NvbQAAAQAB"],
            403,
            "DNS-over-HTTPS",
        ),
        (
            vec!["-H", "Accept: application/dns-message", "https://secure.test/q"],
            403,
            "DNS-over-HTTPS",
        ),
        (vec!["https://secure.test/org/r.git/info/refs?service=git-receive-pack"], 403, "git push"),
        (vec!["-X", "POST", "https://secure.test/org/r.git/git-receive-pack"], 403, "git push"),
        (
            vec!["https://secure.test/org/r.git/info/refs?service=git%2Dreceive%2Dpack"],
            403,
            "git push",
        ),
        (vec!["https://secure.test/org/r.git/info/refs?service=git-upload-pack"], 200, ""),
        (
            vec!["https://nofetch.test/org/r.git/info/refs?service=git-upload-pack"],
            403,
            "git fetch is not enabled",
        ),
    ] {
        let (code, body, err) = curl(&w, &args).await;
        assert_eq!(code, status, "{args:?}: {body} {err}");
        assert!(body.contains(needle), "{args:?}: {body}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn passthrough_tunnels_only_when_the_sni_matches() {
    let w = world().await;
    let upstream_ca = w.https.ca_pem.clone().unwrap();
    // The client verifies against the origin's own CA: nothing was intercepted.
    let reply =
        w.proxy.connect_tls("pass.test:443", "pass.test", &upstream_ca, "/tunnel").await.unwrap();
    assert!(reply.starts_with("HTTP/1.1 200") && reply.contains("/tunnel"), "{reply}");
    let err =
        w.proxy.connect_tls("pass.test:443", "secure.test", &upstream_ca, "/").await.unwrap_err();
    assert!(err.starts_with("tls:"), "{err}");
    tokio::time::sleep(Duration::from_millis(100)).await;
    let records = w.proxy.egress.audit().recent();
    assert!(
        records.iter().any(|r| r
            .reason
            .as_deref()
            .is_some_and(|x| x.contains("SNI \"secure.test\" does not match"))),
        "{records:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_placeholder_sent_to_another_host_is_blocked_and_raises_an_alarm() {
    let w = world().await;
    let placeholder =
        w.proxy.placeholders.env().into_iter().find(|(k, _)| k == "API_TOKEN").unwrap().1;
    let (code, body, _) =
        curl(&w, &["-H", &format!("X-Leak: {placeholder}"), "https://secure.test/x"]).await;
    assert_eq!(code, 403, "{body}");
    let (code, _, _) = curl(&w, &[&format!("https://secure.test/x?k={GH_TOKEN}")]).await;
    assert_eq!(code, 200, "a route's own token on its own host is no alarm");
    let (code, body, _) = curl(&w, &[&format!("https://secure.test/x?k={API_TOKEN}")]).await;
    assert_eq!(code, 403, "{body}");
    let alarms = w.proxy.egress.audit().recent().into_iter().filter(|r| r.alarm).count();
    assert_eq!(alarms, 2);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn introspection_lists_the_routes_without_secrets() {
    let w = world().await;
    let (code, body, _) = curl(&w, &["http://_bottle.internal/routes"]).await;
    assert_eq!(code, 200);
    assert!(body.contains("plain.test") && body.contains("API_TOKEN"), "{body}");
    assert!(!body.contains(API_TOKEN) && !body.contains(GH_TOKEN), "{body}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn malformed_requests_get_400_and_the_proxy_keeps_serving() {
    let w = world().await;
    let conflict = "POST http://plain.test/api/x HTTP/1.1\r\nHost: plain.test\r\nContent-Length: 5\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n".to_string();
    let huge = format!(
        "GET http://plain.test/api/x HTTP/1.1\r\nHost: plain.test\r\nX-Big: {}\r\n\r\n",
        "a".repeat(200_000)
    );
    for request in [
        conflict,
        "GARBAGE\r\n\r\n".to_string(),
        "GET http://plain.test/api/x HTTP/9.9\r\n\r\n".to_string(),
        huge,
        "POST http://plain.test/api/x HTTP/1.1\r\nHost: plain.test\r\nContent-Length: 5\r\nContent-Length: 6\r\n\r\nhello!".to_string(),
        "POST http://plain.test/api/x HTTP/1.1\r\nHost: plain.test\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\nhello\r\n0\r\n\r\n".to_string(),
    ] {
        let reply = w.proxy.raw(request.as_bytes()).await;
        let status = reply.split_whitespace().nth(1).unwrap_or("none").to_string();
        assert!(matches!(status.as_str(), "400" | "431" | "505") || reply.is_empty(), "{:?} -> {reply:?}", &request[..40.min(request.len())]);
        assert!(!reply.contains("\"method\""), "a malformed request reached the upstream: {reply}");
    }
    let (code, _, _) = curl(&w, &["http://plain.test/api/x"]).await;
    assert_eq!(code, 200);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_content_length_and_chunked_conflict_is_400_and_cannot_smuggle_a_request() {
    let w = world().await;
    let smuggle = "POST http://plain.test/api/x HTTP/1.1\r\nHost: plain.test\r\nContent-Length: 60\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\nGET http://plain.test/health HTTP/1.1\r\nHost: plain.test\r\n\r\n";
    let reply = w.proxy.raw(smuggle.as_bytes()).await;
    assert!(reply.starts_with("HTTP/1.1 400"), "{reply}");
    assert_eq!(reply.matches("HTTP/1.1 ").count(), 1, "{reply}");
    assert!(!reply.contains("/health"), "{reply}");
    // Inside an intercepted TLS connection too.
    let ca = w.proxy.ca.cert_pem().to_string();
    let reply = w.proxy.connect_tls_raw("secure.test:443", "secure.test", &ca, "POST /x HTTP/1.1\r\nHost: secure.test\r\nContent-Length: 3\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n").await.unwrap();
    assert!(reply.starts_with("HTTP/1.1 400"), "{reply}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_reload_under_load_fails_no_request_and_applies_to_new_ones() {
    let w = world().await;
    let http = Upstream::http().await;
    let table = |extra: &str| {
        format!(
            "routes:\n  - host: plain.test\n    connect: \"{}\"\n    matches: [{{paths: [{{type: prefix, value: /api/}}]}}]\n{extra}",
            http.addr
        )
    };
    let reload = |text: String| {
        let t = bottle_egress::routes::RouteTable::parse(&text, &|_| None).unwrap();
        w.proxy.egress.reload(t).unwrap();
    };
    reload(table(""));
    let addr = w.proxy.addr;
    let mut clients = Vec::new();
    for c in 0..6 {
        clients.push(tokio::spawn(async move {
            use tokio::io::{AsyncReadExt, AsyncWriteExt};
            let mut failures = Vec::new();
            for i in 0..40 {
                let mut s = tokio::net::TcpStream::connect(addr).await.unwrap();
                let req = format!("GET http://plain.test/api/{c}/{i} HTTP/1.1\r\nHost: plain.test\r\nConnection: close\r\n\r\n");
                s.write_all(req.as_bytes()).await.unwrap();
                let mut out = String::new();
                s.read_to_string(&mut out).await.unwrap();
                if !out.starts_with("HTTP/1.1 200") {
                    failures.push(out);
                }
            }
            failures
        }));
    }
    // 30 reloads while 240 requests run; every table allows /api/.
    for i in 0..30 {
        reload(table(&format!("  - host: extra{i}.test\n")));
        tokio::time::sleep(Duration::from_millis(3)).await;
    }
    for client in clients {
        let failures = client.await.unwrap();
        assert!(failures.is_empty(), "{failures:?}");
    }
    // A table without the route takes effect for the next request; an invalid one is refused.
    reload("routes:\n  - host: other.test\n".into());
    let (code, _, _) = curl(&w, &["http://plain.test/api/x"]).await;
    assert_eq!(code, 403);
    let bad = bottle_egress::routes::RouteTable::parse(
        "routes:\n  - host: plain.test\n    methds: [GET]\n",
        &|_| None,
    );
    assert!(bad.unwrap_err().to_string().contains("methds"));
    // A new intercepted host outside the CA's constraints: plain HTTP works, CONNECT is
    // refused with the reason (the CA cannot sign for it until restart).
    let text = format!("routes:\n  - host: new.test\n    connect: \"{}\"\n", http.addr);
    w.proxy
        .egress
        .reload(bottle_egress::routes::RouteTable::parse(&text, &|_| None).unwrap())
        .unwrap();
    let (code, _, _) = curl(&w, &["http://new.test/x"]).await;
    assert_eq!(code, 200);
    let reply = w
        .proxy
        .raw(b"CONNECT new.test:443 HTTP/1.1\r\nHost: new.test\r\nConnection: close\r\n\r\n")
        .await;
    assert!(reply.starts_with("HTTP/1.1 403") && reply.contains("restarts"), "{reply}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_websocket_upgrade_on_an_allowed_route_is_proxied_both_ways() {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let w = world().await;
    let mut s = tokio::net::TcpStream::connect(w.proxy.addr).await.unwrap();
    s.write_all(
        b"GET http://plain.test/api/ws HTTP/1.1\r\nHost: plain.test\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n",
    )
    .await
    .unwrap();
    let mut head = Vec::new();
    let mut byte = [0u8; 1];
    while !head.ends_with(b"\r\n\r\n") {
        assert_eq!(
            s.read(&mut byte).await.unwrap(),
            1,
            "closed: {}",
            String::from_utf8_lossy(&head)
        );
        head.push(byte[0]);
    }
    let head = String::from_utf8_lossy(&head).to_ascii_lowercase();
    assert!(head.starts_with("http/1.1 101"), "{head}");
    // RFC 6455's example key and its accept value.
    assert!(head.contains("sec-websocket-accept: s3pplmbitxaq9kygzzhzrbk+xoo="), "{head}");
    // A masked text frame "Hello" goes up and comes back (the echo returns the frame
    // the proxy sent it; the proxy hands it to the agent unmasked, as a server does).
    let frame = [0x81u8, 0x85, 0x37, 0xfa, 0x21, 0x3d, 0x7f, 0x9f, 0x4d, 0x51, 0x58];
    for _ in 0..3 {
        s.write_all(&frame).await.unwrap();
        let mut back = [0u8; 7];
        tokio::time::timeout(Duration::from_secs(5), s.read_exact(&mut back))
            .await
            .unwrap()
            .unwrap();
        assert_eq!(back, [0x81, 0x05, b'H', b'e', b'l', b'l', b'o']);
    }
    // A route that does not allow the path refuses the upgrade.
    let reply = w.proxy.raw(b"GET http://plain.test/ws HTTP/1.1\r\nHost: plain.test\r\nUpgrade: websocket\r\nConnection: Upgrade, close\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n").await;
    assert!(reply.starts_with("HTTP/1.1 403"), "{reply}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_decision_is_audited_with_bytes_up_and_down() {
    let w = world().await;
    let (code, body, _) = curl(&w, &["-d", "hello world", "http://plain.test/api/upload"]).await;
    assert_eq!(code, 200);
    let (code, _, _) = curl(&w, &["http://plain.test/nope"]).await;
    assert_eq!(code, 403);
    let mut records = Vec::new();
    for _ in 0..200 {
        records = w.proxy.egress.audit().recent();
        if records.len() >= 2 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    let allow = records.iter().find(|r| r.verdict == "allow").expect("allow record");
    assert_eq!(
        (allow.method.as_str(), allow.path.as_str(), allow.status),
        ("POST", "/api/upload", 200)
    );
    assert_eq!(allow.bytes_up, 11);
    assert_eq!(allow.bytes_down, body.len() as u64);
    let block = records.iter().find(|r| r.verdict == "block").expect("block record");
    assert_eq!(block.path, "/nope");
    assert!(block.reason.as_deref().unwrap().contains("not allowed"));
    let line = serde_json::to_string(allow).unwrap();
    assert!(!line.contains(API_TOKEN), "{line}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_real_git_client_cannot_push_through_egress_and_fetches_only_where_allowed() {
    let w = world().await;
    let repo = bottle_tests::external::TempDir::new("git-client");
    let proxy = format!("http://{}", w.proxy.addr);
    let ca = w.proxy.ca_file();
    let git = move |args: &[&str], dir: &std::path::Path| {
        let mut cmd = bottle_tests::external::command("git");
        cmd.current_dir(dir)
            .env("HOME", dir)
            .env("GIT_SSL_CAINFO", &ca)
            .env("https_proxy", &proxy)
            .env("GIT_TERMINAL_PROMPT", "0")
            .args(["-c", "user.email=a@b", "-c", "user.name=a"])
            .args(args);
        let out = bottle_tests::external::output(&mut cmd);
        (
            out.status.success(),
            format!(
                "{}{}",
                String::from_utf8_lossy(&out.stdout),
                String::from_utf8_lossy(&out.stderr)
            ),
        )
    };
    let dir = repo.0.clone();
    let results = tokio::task::spawn_blocking(move || {
        assert!(git(&["init", "-q", "-b", "main"], &dir).0);
        std::fs::write(dir.join("f"), "x").unwrap();
        assert!(git(&["add", "f"], &dir).0);
        assert!(git(&["commit", "-q", "-m", "c"], &dir).0);
        let push = git(&["push", "https://secure.test/org/r.git", "main"], &dir);
        let fetch_denied = git(&["ls-remote", "https://nofetch.test/org/r.git"], &dir);
        let fetch_allowed = git(&["ls-remote", "https://secure.test/org/r.git"], &dir);
        (push, fetch_denied, fetch_allowed)
    })
    .await
    .unwrap();
    let (push, fetch_denied, fetch_allowed) = results;
    assert!(!push.0 && push.1.contains("403"), "push: {}", push.1);
    assert!(!fetch_denied.0 && fetch_denied.1.contains("403"), "fetch: {}", fetch_denied.1);
    // Allowed through egress; it fails only because the echo upstream is no git server.
    assert!(!fetch_allowed.1.contains("403"), "fetch on a git.fetch route: {}", fetch_allowed.1);
    let records = w.proxy.egress.audit().recent();
    assert!(
        records.iter().any(|r| r.reason.as_deref().is_some_and(|x| x.contains("git push"))),
        "{records:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_builtin_injects_the_secrets_it_is_given_and_accepts_on_an_inherited_fd() {
    use std::os::fd::IntoRawFd;
    const NAME: &str = "BOTTLE_TEST_BUILTIN_TOKEN";
    const TOKEN: &str = "builtin-real-token-0123456789";
    // The token reaches the proxy only through the secrets map.
    assert!(std::env::var_os(NAME).is_none());
    let http = Upstream::http().await;
    let dir = bottle_tests::external::TempDir::new("builtin-fd");
    let routes = dir.join("routes.yaml");
    std::fs::write(
        &routes,
        format!(
            "routes:\n  - host: plain.test\n    connect: \"{}\"\n    auth: {{scheme: Bearer, token_ref: {NAME}, plaintext: true}}\n",
            http.addr
        ),
    )
    .unwrap();
    // A listening socket the "launcher" made, handed down by number.
    let socket = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = socket.local_addr().unwrap();
    let fd = socket.into_raw_fd();
    let settings = bottle_egress::EgressSettings {
        listen: bottle_egress::Listen::Fd(fd),
        ca_out: Some(dir.join("out")),
        ..bottle_egress::EgressSettings::new(&routes)
    };
    let factory = bottle_egress::EgressFactory::new(
        settings,
        bottle_tests::egress::secrets(&[(NAME, TOKEN)]),
    );
    let (actor, info, _parent) = bottle_tests::egress::builtin(&factory).await;
    assert_eq!(info.listening, addr);
    let ca = dir.join("out").join("ca.pem");
    let get = || bottle_tests::egress::curl_via(addr, ca.clone(), &["http://plain.test/api/x"]);
    let (code, body, err) = get().await;
    assert_eq!(code, 200, "{body} {err}");
    assert_eq!(header_values(&json(&body), "authorization"), vec![format!("Bearer {TOKEN}")]);

    // The same client files as `bottle proxy` writes: the CA, a whole trust store ending
    // with it, and the agent's placeholders (never the token).
    let files = info.files.clone().unwrap();
    assert_eq!(std::fs::read_to_string(&files.ca).unwrap(), info.ca.cert_pem());
    let bundle = std::fs::read_to_string(&files.bundle).unwrap();
    assert!(bundle.ends_with(info.ca.cert_pem()), "the bundle does not end with the CA");
    assert!(bundle.matches("BEGIN CERTIFICATE").count() > 1, "no machine roots in the bundle");
    let env = std::fs::read_to_string(&files.placeholders).unwrap();
    assert!(env.starts_with(&format!("{NAME}=bottle-placeholder-")), "{env}");
    assert!(!env.contains(TOKEN) && !bundle.contains(TOKEN));

    // A restart (the supervisor starting the factory again) accepts on the same socket,
    // with the CA and placeholders the clients already hold.
    let (first_ca, first_env) = (info.ca.cert_pem().to_string(), info.placeholders.env());
    actor.stop(None);
    let stopped = || actor.get_status() == ractor::ActorStatus::Stopped;
    assert!(bottle_tests::eventually(Duration::from_secs(5), stopped).await);
    let (again, info, _parent) = bottle_tests::egress::builtin(&factory).await;
    assert_eq!(info.listening, addr);
    assert_eq!(info.ca.cert_pem(), first_ca, "a restart minted a new CA");
    assert_eq!(info.placeholders.env(), first_env, "a restart changed the placeholders");
    let (code, body, err) = get().await;
    assert_eq!(code, 200, "after a restart: {body} {err}");
    again.stop(None);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bottle_proxy_resolves_its_secrets_prints_the_client_environment_and_writes_the_files() {
    use bottle_tests::external::{Guarded, TempDir, command, wait_until};
    let http = Upstream::http().await;
    let dir = TempDir::new("bottle-proxy");
    let routes = dir.join("routes.yaml");
    std::fs::write(
        &routes,
        format!(
            "routes:\n  - host: plain.test\n    connect: \"{}\"\n    auth: {{scheme: Bearer, token_ref: CLI_TOKEN, plaintext: true}}\n",
            http.addr
        ),
    )
    .unwrap();
    let port = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
    let listen = std::net::SocketAddr::from(([127, 0, 0, 1], port));
    let out = dir.join("out");
    let mut cmd = command(bottle_tests::sibling_binary("bottle"));
    cmd.args(["proxy", "--routes"])
        .arg(&routes)
        .args(["--listen", &listen.to_string(), "--ca-out"])
        .arg(&out)
        .env("CLI_TOKEN", API_TOKEN);
    let proxy = Guarded::spawn(&mut cmd);
    let env_file = out.join("placeholders.env");
    let ready = tokio::task::spawn_blocking(move || {
        wait_until(Duration::from_secs(10), || {
            env_file.exists() && std::net::TcpStream::connect(listen).is_ok()
        })
    });
    assert!(ready.await.unwrap(), "bottle proxy did not start");
    let (code, body, err) =
        bottle_tests::egress::curl_via(listen, out.join("ca.pem"), &["http://plain.test/api/x"])
            .await;
    assert_eq!(code, 200, "{body} {err}");
    assert_eq!(header_values(&json(&body), "authorization"), vec![format!("Bearer {API_TOKEN}")]);
    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(proxy.pid()),
        nix::sys::signal::Signal::SIGTERM,
    )
    .unwrap();
    let (status, stdout, stderr) =
        tokio::task::spawn_blocking(move || proxy.wait(Duration::from_secs(10))).await.unwrap();
    assert!(status.is_some_and(|s| s.success()), "{status:?} {stderr}");
    assert!(stdout.contains(&format!("export HTTPS_PROXY=http://{listen}\n")), "{stdout}");
    let bundle = out.join("bundle.pem");
    assert!(stdout.contains(&format!("export SSL_CERT_FILE={}\n", bundle.display())), "{stdout}");
    assert!(stdout.contains("export CLI_TOKEN=bottle-placeholder-"), "{stdout}");
    let written = std::fs::read_to_string(out.join("placeholders.env")).unwrap();
    assert!(stdout.contains(&format!("export {}", written.trim())), "{stdout} / {written}");
    assert!(bundle.exists());
    assert!(!stdout.contains(API_TOKEN) && !stderr.contains(API_TOKEN), "the token leaked");
}
