//! Fixtures for the git gate's tests: a local HTTPS upstream wrapping `git http-backend`
//! (checking the token the gate injects), the gate itself as the builtin actor under a
//! real node (whose reaper collects every git child), and an agent-side git client.
#![allow(dead_code, unreachable_pub)]

use std::convert::Infallible;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use bottle_ca::{CaConfig, CertificateAuthority};
use bottle_git_gate::process::{Git, Output};
use bottle_git_gate::{GitGateFactory, GitGateSettings, RepoSettings};
use bottle_protocol::secrets::{Secret, Secrets};
use bottle_runtime::spec::{ChildSpec, ChildStart, SupervisorSpec};
use bottle_runtime::{Node, NodeConfig, NodeHandle};
use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::{Request, Response};
use hyper_util::rt::{TokioExecutor, TokioIo};
use tokio::net::TcpListener;

/// The token upstream requires (the agent never sees it).
pub const UPSTREAM_TOKEN: &str = "upstream-test-token-7f3a9c2e5b1d";
/// The Basic credentials the gate must send: base64("x-access-token:<token>").
pub fn expected_authorization() -> String {
    let pair = format!("x-access-token:{UPSTREAM_TOKEN}");
    let mut b64 = bottle_pipelock::base64_encode(pair.as_bytes(), false);
    while !b64.len().is_multiple_of(4) {
        b64.push('=');
    }
    format!("Basic {b64}")
}

/// A fake classic GitHub token (random each call): the scanner's `github-pat-classic`.
pub fn fake_github_token() -> String {
    use rand::Rng;
    const ALNUM: &[u8] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789";
    let mut rng = rand::rng();
    let body: String = (0..36).map(|_| ALNUM[rng.random_range(0..ALNUM.len())] as char).collect();
    format!("ghp_{body}")
}

/// A git runner for test-side work (upstream CGI, agent clients, seeding). Test-side
/// children run before the node starts, so the test reaps too: on SIGCHLD and on a
/// tick, through the same one reaper (its `reap` is the only waiter either way).
pub fn git(home: &Path) -> Git {
    let reaper = bottle_runtime::process_reaper().expect("reaper");
    let driver = reaper.clone();
    tokio::spawn(async move {
        let mut child =
            tokio::signal::unix::signal(tokio::signal::unix::SignalKind::child()).expect("sigchld");
        let mut tick = tokio::time::interval(Duration::from_millis(50));
        loop {
            tokio::select! {
                _ = child.recv() => {}
                _ = tick.tick() => {}
            }
            driver.reap();
        }
    });
    std::fs::create_dir_all(home).unwrap();
    Git::new(reaper, "git".into(), "/usr/local/bin:/usr/bin:/bin".into(), home.to_path_buf())
}

/// What the upstream saw.
#[derive(Debug, Default)]
pub struct Seen {
    /// `Authorization` values, in order.
    pub authorizations: Vec<Option<String>>,
    /// Requests served (any).
    pub requests: usize,
}

/// A local HTTPS git server (`git http-backend`) requiring [`UPSTREAM_TOKEN`].
#[derive(Debug, Clone)]
pub struct Upstream {
    /// `https://localhost:<port>`.
    pub base: String,
    /// The bare repositories' parent.
    pub root: PathBuf,
    /// The CA certificate (PEM file) that signed its certificate.
    pub ca_file: PathBuf,
    /// What it saw.
    pub seen: Arc<Mutex<Seen>>,
    git: Git,
}

impl Upstream {
    /// Starts it with repositories under `root`.
    pub async fn start(root: PathBuf, git: Git) -> Upstream {
        std::fs::create_dir_all(&root).unwrap();
        let ca = Arc::new(
            CertificateAuthority::mint(CaConfig {
                permitted: vec!["localhost".into()],
                common_name: "git-gate test upstream CA".into(),
                ..CaConfig::default()
            })
            .unwrap(),
        );
        let ca_file = root.join("ca.pem");
        std::fs::write(&ca_file, ca.cert_pem()).unwrap();
        let mut config = rustls::ServerConfig::builder_with_provider(Arc::new(
            rustls::crypto::ring::default_provider(),
        ))
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_no_client_auth()
        .with_cert_resolver(ca.resolver());
        config.alpn_protocols = vec![b"http/1.1".to_vec()];
        let acceptor = tokio_rustls::TlsAcceptor::from(Arc::new(config));
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = listener.local_addr().unwrap().port();
        let upstream = Upstream {
            base: format!("https://localhost:{port}"),
            root,
            ca_file,
            seen: Arc::default(),
            git,
        };
        let served = upstream.clone();
        tokio::spawn(async move {
            loop {
                let Ok((stream, _)) = listener.accept().await else { continue };
                let acceptor = acceptor.clone();
                let served = served.clone();
                tokio::spawn(async move {
                    let Ok(tls) = acceptor.accept(stream).await else { return };
                    let service = hyper::service::service_fn(move |req| {
                        let served = served.clone();
                        async move { Ok::<_, Infallible>(served.cgi(req).await) }
                    });
                    let _ = hyper_util::server::conn::auto::Builder::new(TokioExecutor::new())
                        .serve_connection(TokioIo::new(tls), service)
                        .await;
                });
            }
        });
        upstream
    }

    /// Creates the bare repository `name.git` (pushes over HTTP enabled).
    pub async fn create(&self, name: &str) -> PathBuf {
        let dir = self.root.join(format!("{name}.git"));
        let out = self
            .git
            .command("init", ["init", "--bare", "--quiet", "-b", "main", dir.to_str().unwrap()])
            .output(None, 1 << 20)
            .await
            .unwrap();
        assert!(out.status.success(), "{}", out.stderr);
        run(&self.git, &dir, &["config", "http.receivepack", "true"]).await;
        dir
    }

    /// The URL of `name.git`.
    pub fn url(&self, name: &str) -> String {
        format!("{}/{name}.git", self.base)
    }

    /// The object id `rev` names in `name.git` (None if it does not resolve).
    pub async fn rev(&self, name: &str, rev: &str) -> Option<String> {
        let dir = self.root.join(format!("{name}.git"));
        let out = self
            .git
            .command("rev-parse", ["rev-parse", "--verify", "--quiet", rev])
            .cwd(&dir)
            .output(None, 1 << 20)
            .await
            .unwrap();
        out.status.success().then(|| String::from_utf8_lossy(&out.stdout).trim().to_string())
    }

    async fn cgi(&self, req: Request<hyper::body::Incoming>) -> Response<Full<Bytes>> {
        let auth = req
            .headers()
            .get(hyper::header::AUTHORIZATION)
            .map(|v| v.to_str().unwrap_or("?").to_string());
        {
            let mut seen = self.seen.lock().unwrap();
            seen.requests += 1;
            seen.authorizations.push(auth.clone());
        }
        if auth.as_deref() != Some(expected_authorization().as_str()) {
            let mut r = Response::new(Full::new(Bytes::from_static(b"token required\n")));
            *r.status_mut() = hyper::StatusCode::UNAUTHORIZED;
            r.headers_mut().insert("www-authenticate", "Basic realm=\"test\"".parse().unwrap());
            return r;
        }
        let method = req.method().to_string();
        let path = req.uri().path().to_string();
        let query = req.uri().query().unwrap_or("").to_string();
        let header = |name: &str| {
            req.headers().get(name).and_then(|v| v.to_str().ok()).unwrap_or("").to_string()
        };
        let (content_type, encoding, protocol) =
            (header("content-type"), header("content-encoding"), header("git-protocol"));
        let body = req.into_body().collect().await.unwrap().to_bytes();
        let mut inv = self
            .git
            .command("http-backend", ["http-backend"])
            .env("GIT_PROJECT_ROOT", &self.root)
            .env("GIT_HTTP_EXPORT_ALL", "1")
            .env("REMOTE_USER", "test")
            .env("REMOTE_ADDR", "127.0.0.1")
            .env("REQUEST_METHOD", method)
            .env("PATH_INFO", path)
            .env("QUERY_STRING", query)
            .env("CONTENT_TYPE", content_type)
            .env("CONTENT_LENGTH", body.len().to_string())
            .env("GATEWAY_INTERFACE", "CGI/1.1")
            .timeout(Duration::from_secs(120));
        if !encoding.is_empty() {
            inv = inv.env("HTTP_CONTENT_ENCODING", encoding);
        }
        if !protocol.is_empty() {
            inv = inv.env("GIT_PROTOCOL", protocol);
        }
        let out = inv.output(Some(&body), 1 << 30).await.unwrap();
        cgi_response(&out.stdout)
    }
}

fn cgi_response(raw: &[u8]) -> Response<Full<Bytes>> {
    let split = raw
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .map(|i| (i, 4))
        .or_else(|| raw.windows(2).position(|w| w == b"\n\n").map(|i| (i, 2)));
    let Some((end, sep)) = split else {
        return Response::new(Full::new(Bytes::copy_from_slice(raw)));
    };
    let mut response = Response::new(Full::new(Bytes::copy_from_slice(&raw[end + sep..])));
    for line in String::from_utf8_lossy(&raw[..end]).lines() {
        let Some((name, value)) = line.split_once(':') else { continue };
        let value = value.trim();
        if name.eq_ignore_ascii_case("status") {
            let code = value.split(' ').next().unwrap_or("200").parse().unwrap_or(200);
            *response.status_mut() = hyper::StatusCode::from_u16(code).unwrap();
        } else if let (Ok(n), Ok(v)) = (
            hyper::header::HeaderName::from_bytes(name.as_bytes()),
            hyper::header::HeaderValue::from_str(value),
        ) {
            response.headers_mut().insert(n, v);
        }
    }
    response
}

/// Runs git in `dir`, asserting success; answers stdout.
pub async fn run(git: &Git, dir: &Path, args: &[&str]) -> String {
    let out = run_raw(git, dir, args).await;
    assert!(out.status.success(), "git {args:?} failed: {}", out.stderr);
    String::from_utf8_lossy(&out.stdout).trim().to_string()
}

/// Runs git in `dir` with an identity configured.
pub async fn run_raw(git: &Git, dir: &Path, args: &[&str]) -> Output {
    git.command("client", args.iter().map(|s| s.to_string()))
        .cwd(dir)
        .config("user.name", "Agent")
        .config("user.email", "agent@example.com")
        .config("init.defaultBranch", "main")
        .config("protocol.allow", "always")
        .timeout(Duration::from_secs(120))
        .output(None, 1 << 30)
        .await
        .unwrap()
}

/// Writes `files` into `work`, commits them with `message`; answers the commit id.
pub async fn commit(git: &Git, work: &Path, files: &[(&str, &str)], message: &str) -> String {
    for (path, contents) in files {
        let p = work.join(path);
        std::fs::create_dir_all(p.parent().unwrap()).unwrap();
        std::fs::write(p, contents).unwrap();
    }
    run(git, work, &["add", "-A"]).await;
    run(git, work, &["commit", "-q", "-m", message]).await;
    run(git, work, &["rev-parse", "HEAD"]).await
}

/// The gate under a node, its upstream, and the directories of one test.
pub struct Fixture {
    /// Temporary root (upstream, mirrors, agent work trees).
    pub tmp: tempfile::TempDir,
    /// The upstream.
    pub upstream: Upstream,
    /// Where the gate listens.
    pub gate: SocketAddr,
    /// The gate's settings as started.
    pub settings: GitGateSettings,
    /// Test-side git.
    pub git: Git,
    /// The node running the gate.
    pub node: NodeHandle,
}

impl std::fmt::Debug for Fixture {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Fixture").field("gate", &self.gate).finish_non_exhaustive()
    }
}

static NODES: AtomicUsize = AtomicUsize::new(0);

impl Fixture {
    /// An upstream with repository `demo` (seeded with one commit) and a gate serving it.
    pub async fn start(customize: impl FnOnce(&mut GitGateSettings, &Upstream)) -> Fixture {
        let tmp = tempfile::tempdir().unwrap();
        let git = git(&tmp.path().join("home"));
        let upstream = Upstream::start(tmp.path().join("upstream"), git.clone()).await;
        let bare = upstream.create("demo").await;
        let seed = tmp.path().join("seed");
        std::fs::create_dir_all(&seed).unwrap();
        run(&git, &seed, &["init", "-q", "-b", "main"]).await;
        commit(&git, &seed, &[("README.md", "# demo\n")], "initial").await;
        run(&git, &seed, &["push", "-q", bare.to_str().unwrap(), "main"]).await;

        let mut settings = GitGateSettings::new(tmp.path().join("mirrors"));
        settings.listen = bottle_git_gate::Listen::Addr("127.0.0.1:0".parse().unwrap());
        settings.upstream_ca = Some(upstream.ca_file.clone());
        settings.upstream_timeout_seconds = 20;
        settings.repos.insert(
            "demo".into(),
            RepoSettings {
                url: upstream.url("demo"),
                token_ref: Some("DEMO_TOKEN".into()),
                username: "x-access-token".into(),
                identity: None,
                host_key: None,
            },
        );
        customize(&mut settings, &upstream);
        let mut secrets = Secrets::new();
        secrets.insert("DEMO_TOKEN", Secret::new(UPSTREAM_TOKEN));
        let factory = Arc::new(GitGateFactory::new(settings.clone(), secrets));
        let spec = SupervisorSpec::new("root")
            .child(ChildSpec::new("git-gate", ChildStart::Actor(factory.clone())));
        let config = NodeConfig {
            seed: NODES.fetch_add(1, Ordering::Relaxed) as u64,
            ..NodeConfig::default()
        };
        let node = Node::start(spec, config).await.unwrap();
        let gate = wait_for(Duration::from_secs(30), || factory.listening()).await;
        Fixture { tmp, upstream, gate, settings, git, node }
    }

    /// The gate's URL for `name`.
    pub fn url(&self, name: &str) -> String {
        format!("http://{}/{name}.git", self.gate)
    }

    /// A fresh clone of `name` through the gate, in `<tmp>/<dir>`.
    pub async fn clone_repo(&self, name: &str, dir: &str) -> PathBuf {
        let work = self.tmp.path().join(dir);
        let out = run_raw(
            &self.git,
            self.tmp.path(),
            &["clone", "-q", &self.url(name), work.to_str().unwrap()],
        )
        .await;
        assert!(out.status.success(), "clone failed: {}", out.stderr);
        work
    }

    /// The mirror's value of `rev`.
    pub async fn mirror_rev(&self, name: &str, rev: &str) -> Option<String> {
        let dir = self.settings.root.join(format!("{name}.git"));
        let out = self
            .git
            .command("rev-parse", ["rev-parse", "--verify", "--quiet", rev])
            .cwd(&dir)
            .output(None, 1 << 20)
            .await
            .unwrap();
        out.status.success().then(|| String::from_utf8_lossy(&out.stdout).trim().to_string())
    }
}

/// Polls `f` until it answers `Some`, at most `limit`.
pub async fn wait_for<T>(limit: Duration, mut f: impl FnMut() -> Option<T>) -> T {
    let start = Instant::now();
    let mut pause = Duration::from_millis(5);
    loop {
        if let Some(v) = f() {
            return v;
        }
        assert!(start.elapsed() < limit, "condition not met within {limit:?}");
        tokio::time::sleep(pause).await;
        pause = (pause * 2).min(Duration::from_millis(200));
    }
}

/// One raw HTTP/1.1 exchange with the gate; answers the status code and the body.
pub async fn raw_http(addr: SocketAddr, request: &[u8]) -> (u16, String) {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut stream = tokio::net::TcpStream::connect(addr).await.unwrap();
    stream.write_all(request).await.unwrap();
    let mut buf = Vec::new();
    let _ = tokio::time::timeout(Duration::from_secs(30), stream.read_to_end(&mut buf)).await;
    let text = String::from_utf8_lossy(&buf).to_string();
    let code = text.split(' ').nth(1).and_then(|c| c.parse().ok()).unwrap_or(0);
    let body = text.split_once("\r\n\r\n").map(|(_, b)| b.to_string()).unwrap_or_default();
    (code, body)
}
