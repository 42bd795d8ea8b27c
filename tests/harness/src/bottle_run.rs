//! Fixtures for end-to-end tests of the `bottle` binary: a fake HTTPS API with its own CA
//! on the host's loopback, a private state folder per test, bottle files, wrapper
//! companions that inject failures, the launched `bottle run` and the checks that
//! nothing of a bottle is left behind.
//!
//! Hazard: these tests run the shipped binary, so a test that fails half-way leaks real
//! processes and namespaces into the machine, and a check that looks in the wrong place
//! passes while a bottle is still alive. So every launch is killed on drop and every
//! fixture's folder is removed; the launcher's whole process tree is watched from outside
//! while it runs (pids with start times, and the sandbox's namespaces), and "nothing
//! left" is checked against everything the watcher saw, not against names. The fake API
//! never writes the token or a request back, so the agent cannot learn it from a reply.

#![allow(clippy::disallowed_methods)] // drives `bottle` and curl with std; no reaper here

use std::collections::{BTreeMap, BTreeSet};
use std::convert::Infallible;
use std::net::SocketAddr;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use bottle_ca::{CaConfig, CertificateAuthority};
use bottle_proc::ProcessIdentity;
use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::service::service_fn;
use hyper_util::rt::{TokioExecutor, TokioIo};

use crate::external::{self, TempDir};

/// The host name the API's route names (never resolved: the route pins the address).
pub const API_HOST: &str = "api.bottle.test";
/// The host variable the route's `token_ref` names.
pub const TOKEN_VAR: &str = "BOTTLE_TEST_TOKEN";
/// How long any launch may take to reach a state a test waits for.
pub const LAUNCH_WAIT: Duration = Duration::from_secs(30);

/// One request the fake API received.
#[derive(Debug, Clone)]
pub struct Seen {
    /// Its method.
    pub method: String,
    /// Path and query.
    pub path: String,
    /// Whether `Authorization` was exactly `Bearer <the real token>`.
    pub authorized: bool,
}

/// A fake HTTPS API on 127.0.0.1 with a certificate from its own CA. It answers
/// `/whoami` with `authorized` (200) or `unauthorized` (401) and everything else with
/// `ok`; it never sends back a header, a body or the token.
#[derive(Debug)]
pub struct Api {
    /// Where it listens.
    pub addr: SocketAddr,
    /// The CA (PEM) its certificate chains to.
    pub ca_pem: String,
    /// The real token a request must carry.
    pub token: String,
    /// TCP connections accepted (TLS or not).
    connections: Arc<Mutex<u32>>,
    seen: Arc<Mutex<Vec<Seen>>>,
    runtime: Option<tokio::runtime::Runtime>,
}

impl Drop for Api {
    fn drop(&mut self) {
        if let Some(runtime) = self.runtime.take() {
            runtime.shutdown_background();
        }
    }
}

impl Api {
    /// Starts the API on its own runtime thread, with a fresh random token.
    pub fn start() -> Api {
        let token = format!("real-{:032x}{:032x}", rand::random::<u128>(), rand::random::<u128>());
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .enable_all()
            .build()
            .expect("api runtime");
        let ca = Arc::new(
            CertificateAuthority::mint(CaConfig {
                permitted: vec![API_HOST.to_string()],
                common_name: "bottle_run test API CA".into(),
                ..CaConfig::default()
            })
            .expect("api ca"),
        );
        let config = rustls::ServerConfig::builder_with_provider(Arc::new(
            rustls::crypto::ring::default_provider(),
        ))
        .with_safe_default_protocol_versions()
        .expect("tls versions")
        .with_no_client_auth()
        .with_cert_resolver(ca.resolver());
        let acceptor = tokio_rustls::TlsAcceptor::from(Arc::new(config));
        let listener =
            runtime.block_on(tokio::net::TcpListener::bind("127.0.0.1:0")).expect("api listener");
        let addr = listener.local_addr().expect("api addr");
        let seen = Arc::new(Mutex::new(Vec::new()));
        let connections = Arc::new(Mutex::new(0));
        let expected = Arc::new(format!("Bearer {token}"));
        let (counted, accepted) = (seen.clone(), connections.clone());
        runtime.spawn(async move {
            loop {
                let Ok((stream, _)) = listener.accept().await else { continue };
                *accepted.lock().unwrap() += 1;
                let (acceptor, expected, seen) =
                    (acceptor.clone(), expected.clone(), counted.clone());
                tokio::spawn(async move {
                    let Ok(tls) = acceptor.accept(stream).await else { return };
                    let service =
                        service_fn(move |req| answer(req, expected.clone(), seen.clone()));
                    let _ = hyper_util::server::conn::auto::Builder::new(TokioExecutor::new())
                        .serve_connection(TokioIo::new(tls), service)
                        .await;
                });
            }
        });
        Api {
            addr,
            ca_pem: ca.cert_pem().to_string(),
            token,
            connections,
            seen,
            runtime: Some(runtime),
        }
    }

    /// Every request so far.
    pub fn seen(&self) -> Vec<Seen> {
        self.seen.lock().unwrap().clone()
    }

    /// Requests whose path starts with `prefix`.
    pub fn requests_to(&self, prefix: &str) -> Vec<Seen> {
        self.seen().into_iter().filter(|s| s.path.starts_with(prefix)).collect()
    }

    /// TCP connections accepted so far.
    pub fn connections(&self) -> u32 {
        *self.connections.lock().unwrap()
    }
}

async fn answer(
    req: hyper::Request<hyper::body::Incoming>,
    expected: Arc<String>,
    seen: Arc<Mutex<Vec<Seen>>>,
) -> Result<hyper::Response<Full<Bytes>>, Infallible> {
    let path = req.uri().path_and_query().map(|p| p.to_string()).unwrap_or_default();
    let authorized = req
        .headers()
        .get(hyper::header::AUTHORIZATION)
        .is_some_and(|v| v.as_bytes() == expected.as_bytes());
    let method = req.method().to_string();
    let _ = req.into_body().collect().await;
    seen.lock().unwrap().push(Seen { method, path: path.clone(), authorized });
    let (status, text) = match (path.as_str(), authorized) {
        ("/whoami", true) => (200, "authorized\n"),
        ("/whoami", false) => (401, "unauthorized\n"),
        _ => (200, "ok\n"),
    };
    let response = hyper::Response::builder()
        .status(status)
        .header("content-type", "text/plain")
        .body(Full::new(Bytes::from_static(text.as_bytes())))
        .expect("response");
    Ok(response)
}

/// The agent's probes that need raw syscalls, as `python3 /workspace/probe.py WHAT ...`;
/// each prints one line: `ok ...`, `errno N`, or what came back.
pub const PROBE_PY: &str = r#"
import ctypes, errno, os, socket, sys
libc = ctypes.CDLL(None, use_errno=True)
what, args = sys.argv[1], sys.argv[2:]
def err(e): print("errno", e.errno if isinstance(e, OSError) else e)
def call(rc):
    print("ok" if rc == 0 else "errno %d" % ctypes.get_errno())
try:
    if what == "tcp":
        s = socket.create_connection((args[0], int(args[1])), timeout=5); print("connected")
    elif what == "tcp6":
        s = socket.socket(socket.AF_INET6); s.settimeout(5); s.connect((args[0], int(args[1]))); print("connected")
    elif what == "udp":
        # Connected, so an ICMP "port unreachable" comes back as ECONNREFUSED.
        fam = socket.AF_INET6 if ":" in args[0] else socket.AF_INET
        s = socket.socket(fam, socket.SOCK_DGRAM); s.settimeout(2)
        query = b"\x12\x34\x01\x00\x00\x01\x00\x00\x00\x00\x00\x00\x07example\x03com\x00\x00\x01\x00\x01"
        s.connect((args[0], int(args[1])))
        s.send(query)
        try:
            s.recv(512); print("answered")
        except socket.timeout:
            print("sent, no answer")
    elif what == "unix":
        s = socket.socket(socket.AF_UNIX); s.connect(args[0]); print("connected")
    elif what == "kill":
        os.kill(int(args[0]), int(args[1])); print("ok")
    elif what == "ptrace":
        call(libc.ptrace(16, int(args[0]), None, None))
    elif what == "open":
        open(args[0], "rb").read(1); print("ok")
    elif what == "listdir":
        print("ok", len(os.listdir(args[0])))
    elif what == "unshare":
        call(libc.unshare(int(args[0], 0)))
    elif what == "raw":
        # One request to the proxy as given (\n sent as \r\n); prints the response's
        # status line and its body's first line.
        s = socket.create_connection(("127.0.0.1", 9099), timeout=10)
        s.sendall(args[0].replace("\n", "\r\n").encode())
        data = b""
        while b"\r\n\r\n" not in data:
            chunk = s.recv(65536)
            if not chunk: break
            data += chunk
        head, _, body = data.partition(b"\r\n\r\n")
        length = [l.split(b":", 1)[1] for l in head.lower().split(b"\r\n") if l.startswith(b"content-length:")]
        want = int(length[0]) if length else 0
        while len(body) < want:
            chunk = s.recv(65536)
            if not chunk: break
            body += chunk
        lines = body.decode(errors="replace").strip().splitlines()
        print(head.split(b"\r\n")[0].decode(errors="replace"), "|", lines[0] if lines else "")
    else:
        print("unknown probe", what)
except OSError as e:
    err(e)
"#;

/// Shell helpers every agent script starts with: `wait_for FILE` (in /workspace, at most
/// 30 s, else exit 99), `ask NAME CURL-ARGS...` (prints `R NAME <status> <curl rc>
/// <first 200 bytes of body or error>`), `probe NAME ARGS...` (prints `R NAME <result>`).
pub const AGENT_PRELUDE: &str = r#"
wait_for() { n=0; while [ ! -e "/workspace/$1" ]; do n=$((n+1)); [ $n -gt 600 ] && exit 99; sleep 0.05; done; }
ask() { name=$1; shift; rm -f /tmp/b /tmp/e; code=$(curl -sS --max-time 15 -o /tmp/b -w '%{http_code}' "$@" 2>/tmp/e); rc=$?; printf 'R %s %s %s %s\n' "$name" "$code" "$rc" "$(cat /tmp/b /tmp/e 2>/dev/null | head -c 200 | tr '\r\n' '  ')"; }
probe() { name=$1; shift; printf 'R %s %s\n' "$name" "$(/usr/bin/python3 /workspace/probe.py "$@" 2>&1 | tail -n 1)"; }
"#;

/// One test's world: a temporary folder with the state root (`XDG_STATE_HOME`), a home,
/// a workspace, bottle files, an optional fake API and an optional folder of companions.
#[derive(Debug)]
pub struct Fixture {
    /// The folder (removed on drop).
    pub dir: TempDir,
    /// The fake API, when the test asked for one.
    pub api: Option<Api>,
    /// Where `bottle` finds `bottle-init` and `bottle-sandbox` (`BOTTLE_LIBEXEC`).
    pub libexec: PathBuf,
}

/// Results the agent printed as `R NAME VALUE...` lines.
pub type Results = BTreeMap<String, String>;

impl Fixture {
    /// A fixture without an API.
    pub fn new(tag: &str) -> Fixture {
        let dir = TempDir::new(tag);
        for sub in ["state", "home", "workspace", "bottles"] {
            std::fs::create_dir_all(dir.join(sub)).expect("fixture folder");
        }
        std::fs::write(dir.join("workspace/probe.py"), PROBE_PY).expect("probe");
        let libexec = built_dir();
        Fixture { dir, api: None, libexec }
    }

    /// A fixture with a fake API and its CA file.
    pub fn with_api(tag: &str) -> Fixture {
        let mut fixture = Fixture::new(tag);
        let api = Api::start();
        std::fs::write(fixture.dir.join("upstream-ca.pem"), &api.ca_pem).expect("ca file");
        fixture.api = Some(api);
        fixture
    }

    /// The API (panics if the fixture has none).
    pub fn api(&self) -> &Api {
        self.api.as_ref().expect("this fixture has no API")
    }

    /// The bottle state root (`$XDG_STATE_HOME/bottle`).
    pub fn state_root(&self) -> PathBuf {
        self.dir.join("state/bottle")
    }

    /// The host workspace (bound at /workspace).
    pub fn workspace(&self) -> PathBuf {
        self.dir.join("workspace")
    }

    /// Writes `bottles/<name>.md`: a route to the API (token injected, secrets blocked)
    /// when there is one, plus `extra` frontmatter lines. Returns its path.
    pub fn bottle(&self, name: &str, extra: &str) -> PathBuf {
        let routes = match &self.api {
            Some(api) => format!(
                "egress:\n  routes:\n    - host: {API_HOST}\n      connect: \"127.0.0.1:{port}\"\n      auth:\n        scheme: Bearer\n        token_ref: {TOKEN_VAR}\n      dlp:\n        outbound_on_match: block\n",
                port = api.addr.port()
            ),
            None => String::new(),
        };
        let path = self.dir.join(&format!("bottles/{name}.md"));
        std::fs::write(&path, format!("---\n{routes}{extra}---\nA test bottle.\n"))
            .expect("bottle file");
        path
    }

    /// `bottle ARGS` with this fixture's environment only: state, home, companions and
    /// (with an API) the real token, exactly as a user's shell would hold it.
    pub fn command(&self, args: &[&str]) -> Command {
        let mut command = external::command(bottle_binary());
        command
            .args(args)
            .env("XDG_STATE_HOME", self.dir.join("state"))
            .env("HOME", self.dir.join("home"))
            .env("BOTTLE_LIBEXEC", &self.libexec)
            .env("NO_COLOR", "1");
        if let Some(api) = &self.api {
            command.env(TOKEN_VAR, &api.token);
        }
        command
    }

    /// `bottle ARGS` to completion.
    pub fn bottle_cli(&self, args: &[&str]) -> Finished {
        let out = external::output(&mut self.command(args));
        Finished {
            code: out.status.code(),
            stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
            stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
        }
    }

    /// The argv of `bottle run` for `file` with `script` as the agent (`/bin/sh -c`), the
    /// workspace bound and the API's CA trusted upstream. The script starts with a
    /// comment naming this fixture's folder, so its process is found by name.
    pub fn run_args(&self, file: &Path, script: &str) -> Vec<String> {
        let mut args: Vec<String> =
            vec!["run".into(), "--workspace".into(), self.workspace().display().to_string()];
        if self.api.is_some() {
            args.push("--upstream-ca".into());
            args.push(self.dir.join("upstream-ca.pem").display().to_string());
        }
        args.push(file.display().to_string());
        args.push("--".into());
        args.push("/bin/sh".into());
        args.push("-c".into());
        args.push(format!("# fixture {}\n{AGENT_PRELUDE}\n{script}", self.dir.0.display()));
        args
    }

    /// Starts `bottle run` (see [`Fixture::run_args`]) and a watcher on its tree.
    pub fn launch(&self, file: &Path, script: &str) -> Launched {
        let args = self.run_args(file, script);
        let refs: Vec<&str> = args.iter().map(String::as_str).collect();
        self.launch_args(&refs)
    }

    /// Starts `bottle ARGS` and a watcher on its process tree.
    pub fn launch_args(&self, args: &[&str]) -> Launched {
        Launched::start(&mut self.command(args))
    }

    /// Every bottle record (`metadata.json`) in the state root.
    pub fn records(&self) -> Vec<serde_json::Value> {
        let Ok(entries) = std::fs::read_dir(self.state_root()) else { return Vec::new() };
        let mut records: Vec<serde_json::Value> = entries
            .filter_map(|e| e.ok())
            .filter_map(|e| std::fs::read_to_string(e.path().join("metadata.json")).ok())
            .filter_map(|text| serde_json::from_str(&text).ok())
            .collect();
        records.sort_by_key(|r| r["id"].as_str().unwrap_or_default().to_string());
        records
    }

    /// The ids of every bottle record.
    pub fn ids(&self) -> Vec<String> {
        self.records().iter().filter_map(|r| r["id"].as_str().map(String::from)).collect()
    }

    /// The one record in the state root, once `ready` holds for it (at most `timeout`).
    pub fn wait_record(
        &self,
        timeout: Duration,
        ready: impl Fn(&serde_json::Value) -> bool,
    ) -> serde_json::Value {
        let mut found = None;
        let ok = external::wait_until(timeout, || {
            found = self.records().into_iter().find(|r| ready(r));
            found.is_some()
        });
        assert!(ok, "no bottle record got ready within {timeout:?}: {:?}", self.records());
        found.expect("found")
    }

    /// The folder of bottle `id`.
    pub fn bottle_dir(&self, id: &str) -> PathBuf {
        self.state_root().join(id)
    }

    /// Creates `/workspace/<name>` (an agent waiting with `wait_for` goes on).
    pub fn signal_agent(&self, name: &str) {
        std::fs::write(self.workspace().join(name), b"").expect("signal file");
    }

    /// A companions folder in the fixture: the real `bottle-init` and `bottle-sandbox`
    /// unless `replace` gives a shell script for one of them (`$REAL` in the script is the
    /// real program's path, `$DIR` this folder). Used as `BOTTLE_LIBEXEC`.
    pub fn companions(&mut self, replace: &[(&str, &str)]) -> PathBuf {
        let dir = self.dir.join("libexec");
        std::fs::create_dir_all(&dir).expect("libexec");
        for name in ["bottle-init", "bottle-sandbox"] {
            let path = dir.join(name);
            let _ = std::fs::remove_file(&path);
            let real = built_dir().join(name);
            match replace.iter().find(|(n, _)| *n == name) {
                Some((_, script)) => {
                    let text = format!(
                        "#!/bin/sh\nREAL={real}\nDIR={dir}\n{script}\n",
                        real = real.display(),
                        dir = dir.display()
                    );
                    std::fs::write(&path, text).expect("wrapper");
                    std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o755))
                        .expect("chmod");
                }
                None => std::os::unix::fs::symlink(&real, &path).expect("symlink"),
            }
        }
        self.libexec = dir.clone();
        dir
    }

    /// The companions folder with `name` missing or not executable.
    pub fn companions_without(&mut self, name: &str, executable_file_instead: bool) -> PathBuf {
        let dir = self.companions(&[]);
        let path = dir.join(name);
        std::fs::remove_file(&path).expect("remove companion");
        if executable_file_instead {
            std::fs::write(&path, "#!/bin/sh\nexit 0\n").expect("file");
            std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o644)).expect("chmod");
        }
        dir
    }
}

/// The folder this build's binaries are in (target/debug).
pub fn built_dir() -> PathBuf {
    PathBuf::from(crate::sibling_binary("bottle")).parent().expect("target dir").to_path_buf()
}

/// The built `bottle` binary.
pub fn bottle_binary() -> PathBuf {
    let path = PathBuf::from(crate::sibling_binary("bottle"));
    assert!(path.exists(), "{} is missing: run `cargo build --workspace --bins`", path.display());
    path
}

/// A finished command.
#[derive(Debug, Clone)]
pub struct Finished {
    /// Its exit code (None: killed by a signal or timed out).
    pub code: Option<i32>,
    /// Its stdout.
    pub stdout: String,
    /// Its stderr.
    pub stderr: String,
}

impl Finished {
    /// The agent's `R NAME VALUE` lines.
    pub fn results(&self) -> Results {
        self.stdout
            .lines()
            .filter_map(|l| l.strip_prefix("R "))
            .filter_map(|l| l.split_once(' ').or(Some((l, ""))))
            .map(|(k, v)| (k.to_string(), v.trim().to_string()))
            .collect()
    }
}

/// A running `bottle` and the watcher on its process tree. Killed on drop.
#[derive(Debug)]
pub struct Launched {
    child: Option<std::process::Child>,
    stdout: Output,
    stderr: Output,
    /// Everything seen in its tree so far.
    pub watcher: Watcher,
}

/// A pipe drained by a thread into a buffer; `done` once it reached EOF.
#[derive(Debug, Clone, Default)]
struct Output {
    bytes: Arc<Mutex<Vec<u8>>>,
    done: Arc<AtomicBool>,
}

impl Output {
    fn drain(pipe: Option<impl std::io::Read + Send + 'static>) -> Output {
        let output = Output::default();
        let (bytes, done) = (output.bytes.clone(), output.done.clone());
        std::thread::spawn(move || {
            if let Some(mut pipe) = pipe {
                let mut buffer = [0u8; 8192];
                while let Ok(n) = pipe.read(&mut buffer) {
                    if n == 0 {
                        break;
                    }
                    bytes.lock().unwrap().extend_from_slice(&buffer[..n]);
                }
            }
            done.store(true, Ordering::SeqCst);
        });
        output
    }

    fn text(&self) -> String {
        String::from_utf8_lossy(&self.bytes.lock().unwrap()).into_owned()
    }
}

impl Launched {
    /// Starts `command` (a [`Fixture::command`], perhaps changed) and a watcher. Its
    /// stdout and stderr are drained as they come, so a full pipe never blocks it.
    pub fn start(command: &mut Command) -> Launched {
        use std::process::Stdio;
        let mut child = command
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("spawn bottle");
        let watcher = Watcher::start(child.id() as i32);
        let stdout = Output::drain(child.stdout.take());
        let stderr = Output::drain(child.stderr.take());
        Launched { child: Some(child), stdout, stderr, watcher }
    }

    /// The launcher's pid.
    pub fn pid(&self) -> i32 {
        self.child.as_ref().map(|c| c.id() as i32).unwrap_or(0)
    }

    /// Sends `signal` to the launcher.
    pub fn signal(&self, signal: i32) {
        external::signal(self.pid(), signal);
    }

    /// Waits (at most `timeout`, then SIGKILL) for the launcher to exit; stops the watcher
    /// and returns what it saw with the launcher's output. Output is collected until EOF
    /// or, when something else still holds the pipes (an agent that outlived a killed
    /// launcher), for at most 2 s more.
    pub fn wait(mut self, timeout: Duration) -> (Finished, Observed) {
        use std::os::unix::process::ExitStatusExt;
        let mut child = self.child.take().expect("child");
        let status = external::wait_or_kill(&mut child, timeout);
        external::wait_until(Duration::from_secs(2), || {
            self.stdout.done.load(Ordering::SeqCst) && self.stderr.done.load(Ordering::SeqCst)
        });
        let code = status.and_then(|s| s.code().or_else(|| s.signal().map(|n| 128 + n)));
        let finished = Finished { code, stdout: self.stdout.text(), stderr: self.stderr.text() };
        (finished, self.watcher.stop_here())
    }
}

impl Drop for Launched {
    fn drop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

/// A sandbox's namespaces: `(kind, inode)` for user, mnt, pid, net, ipc and uts.
pub type NsSet = Vec<(String, u64)>;

const NS_KINDS: [&str; 6] = ["user", "mnt", "pid", "net", "ipc", "uts"];

/// The namespaces of `pid`, if it is readable.
pub fn namespaces_of(pid: i32) -> Option<NsSet> {
    NS_KINDS
        .iter()
        .map(|kind| {
            let link = std::fs::read_link(format!("/proc/{pid}/ns/{kind}")).ok()?;
            let text = link.to_string_lossy().into_owned();
            let inode = text.split(['[', ']']).nth(1)?.parse().ok()?;
            Some((kind.to_string(), inode))
        })
        .collect()
}

/// What the watcher saw in a launcher's tree.
#[derive(Debug, Clone, Default)]
pub struct Observed {
    /// Every process that was ever a descendant of the launcher, with its command line.
    pub processes: Vec<(ProcessIdentity, String)>,
    /// Every namespace set (other than the host's) a descendant was in.
    pub namespaces: BTreeSet<NsSet>,
}

impl Observed {
    /// The processes whose command line contains `needle`.
    pub fn matching(&self, needle: &str) -> Vec<ProcessIdentity> {
        self.processes.iter().filter(|(_, c)| c.contains(needle)).map(|(p, _)| *p).collect()
    }
}

/// Polls a process tree every few milliseconds from a thread, recording every
/// descendant (pid and start time) and every namespace set other than the host's.
#[derive(Debug)]
pub struct Watcher {
    stop: Arc<AtomicBool>,
    passes: Arc<AtomicU64>,
    seen: Arc<Mutex<Observed>>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl Watcher {
    /// Watches `root`'s descendants.
    pub fn start(root: i32) -> Watcher {
        let stop = Arc::new(AtomicBool::new(false));
        let seen = Arc::new(Mutex::new(Observed::default()));
        let passes = Arc::new(AtomicU64::new(0));
        let (flag, record, passed) = (stop.clone(), seen.clone(), passes.clone());
        let host = namespaces_of(std::process::id() as i32).unwrap_or_default();
        let thread = std::thread::spawn(move || {
            while !flag.load(Ordering::Relaxed) {
                for pid in descendants(root) {
                    let Some(identity) = ProcessIdentity::of(pid) else { continue };
                    let mut seen = record.lock().unwrap();
                    if !seen.processes.iter().any(|(p, _)| *p == identity) {
                        seen.processes.push((identity, external::cmdline(pid)));
                    }
                    if let Some(ns) = namespaces_of(pid)
                        && ns.iter().zip(&host).any(|(a, b)| a != b)
                    {
                        seen.namespaces.insert(ns);
                    }
                }
                passed.fetch_add(1, Ordering::SeqCst);
                std::thread::sleep(Duration::from_millis(3));
            }
        });
        Watcher { stop, passes, seen, thread: Some(thread) }
    }

    /// Returns once the watcher made a whole pass that started after this call, so what
    /// exists now is in [`Watcher::seen`] (at most 10 s).
    pub fn sync(&self) {
        let target = self.passes.load(Ordering::SeqCst) + 2;
        let synced = external::wait_until(Duration::from_secs(10), || {
            self.passes.load(Ordering::SeqCst) >= target
        });
        assert!(synced, "the process watcher stalled");
    }

    /// What it saw so far.
    pub fn seen(&self) -> Observed {
        self.seen.lock().unwrap().clone()
    }

    /// Stops and returns what it saw.
    pub fn stop_here(&mut self) -> Observed {
        self.halt();
        self.seen()
    }

    fn halt(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

impl Drop for Watcher {
    fn drop(&mut self) {
        self.halt();
    }
}

/// Every live descendant of `root` (one pass over /proc).
pub fn descendants(root: i32) -> Vec<i32> {
    let parents: Vec<(i32, i32)> = bottle_runtime::proc::fd::list_pids()
        .into_iter()
        .filter_map(|pid| match bottle_runtime::proc::fd::state_and_ppid(pid) {
            Some((state, ppid)) if state != 'Z' => Some((pid, ppid)),
            _ => None,
        })
        .collect();
    let mut found = vec![root];
    let mut i = 0;
    while i < found.len() {
        let parent = found[i];
        found.extend(parents.iter().filter(|(_, pp)| *pp == parent).map(|(p, _)| *p));
        i += 1;
    }
    found.remove(0);
    found
}

/// Host processes (all of /proc) whose command line contains `needle`, but this one.
pub fn processes_mentioning(needle: &str) -> Vec<(i32, String)> {
    let me = std::process::id() as i32;
    bottle_runtime::proc::fd::list_pids()
        .into_iter()
        .filter(|&pid| pid != me)
        .filter(|&pid| !matches!(bottle_runtime::proc::fd::state_and_ppid(pid), Some(('Z', _))))
        .map(|pid| (pid, external::cmdline(pid)))
        .filter(|(_, cmdline)| cmdline.contains(needle))
        .collect()
}

/// What a bottle's end must look like, for [`assert_torn_down`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Ending {
    /// The record says `exited` with this code.
    Exited(i32),
    /// The folder is gone (`bottle cleanup` removed it).
    Removed,
}

/// Asserts that nothing of the bottles a launcher made is left: every process its tree
/// ever had is gone (within 10 s), no host process lives in a namespace set the sandbox
/// had or names the fixture's folder or a bottle id, each record ends as `ending` says,
/// the allocation lock is free, and no mount names the fixture's folder.
pub fn assert_torn_down(fixture: &Fixture, seen: &Observed, ids: &[String], ending: Ending) {
    let alive = |seen: &Observed| -> Vec<(ProcessIdentity, String)> {
        seen.processes.iter().filter(|(p, _)| p.is_alive()).cloned().collect()
    };
    external::wait_until(Duration::from_secs(10), || alive(seen).is_empty());
    assert_eq!(alive(seen), vec![], "processes of the launcher's tree are still alive");
    let mut in_sandbox = Vec::new();
    for pid in bottle_runtime::proc::fd::list_pids() {
        if let Some(ns) = namespaces_of(pid)
            && seen.namespaces.contains(&ns)
        {
            in_sandbox.push((pid, external::cmdline(pid)));
        }
    }
    assert_eq!(in_sandbox, vec![], "processes still live in a sandbox's namespaces");
    let folder = fixture.dir.0.display().to_string();
    assert_eq!(processes_mentioning(&folder), vec![], "processes still name {folder}");
    for id in ids {
        assert_eq!(processes_mentioning(id), vec![], "processes still name {id}");
        let record = std::fs::read_to_string(fixture.bottle_dir(id).join("metadata.json"));
        match ending {
            Ending::Exited(code) => {
                let record: serde_json::Value =
                    serde_json::from_str(&record.expect("record")).expect("record json");
                assert_eq!(
                    record["phase"],
                    serde_json::json!({ "exited": { "code": code } }),
                    "{id}'s record: {record}"
                );
                for socket in ["control.sock", "exec.sock"] {
                    let path = fixture.bottle_dir(id).join(socket);
                    assert!(
                        std::os::unix::net::UnixStream::connect(&path).is_err(),
                        "{} still answers",
                        path.display()
                    );
                }
            }
            Ending::Removed => {
                assert!(!fixture.bottle_dir(id).exists(), "{id}'s folder is still there")
            }
        }
    }
    assert!(allocation_lock_is_free(fixture), "the allocation lock is still held");
    for mounts in ["/proc/self/mountinfo", "/proc/1/mountinfo"] {
        let text = std::fs::read_to_string(mounts).unwrap_or_default();
        let lines: Vec<&str> = text.lines().filter(|l| l.contains(&folder)).collect();
        assert_eq!(lines, Vec::<&str>::new(), "{mounts} still names {folder}");
    }
}

/// True when nobody holds the state root's allocation lock (an exclusive, non-blocking
/// `flock` succeeds).
pub fn allocation_lock_is_free(fixture: &Fixture) -> bool {
    let path = fixture.state_root().join(".lock");
    let Ok(file) = std::fs::OpenOptions::new().write(true).open(&path) else {
        return !path.exists();
    };
    nix::fcntl::Flock::lock(file, nix::fcntl::FlockArg::LockExclusiveNonblock).is_ok()
}

/// Host processes whose command line or initial environment contains `needle`, but
/// those in `except`; as `pid file` strings.
pub fn processes_holding(needle: &str, except: &[i32]) -> Vec<String> {
    let me = std::process::id() as i32;
    let mut found = Vec::new();
    for pid in bottle_runtime::proc::fd::list_pids() {
        if pid == me || except.contains(&pid) {
            continue;
        }
        for file in ["cmdline", "environ"] {
            let bytes = std::fs::read(format!("/proc/{pid}/{file}")).unwrap_or_default();
            if memchr::memmem::find(&bytes, needle.as_bytes()).is_some() {
                found.push(format!("{pid} {file} ({})", external::cmdline(pid)));
            }
        }
    }
    found
}

/// Regular files under `root` (symlinks not followed, files over 16 MiB skipped) that
/// contain `needle`.
pub fn files_holding(root: &Path, needle: &str) -> Vec<PathBuf> {
    let mut found = Vec::new();
    let mut stack = vec![root.to_path_buf()];
    while let Some(dir) = stack.pop() {
        let Ok(entries) = std::fs::read_dir(&dir) else { continue };
        for entry in entries.filter_map(|e| e.ok()) {
            let Ok(kind) = entry.file_type() else { continue };
            let path = entry.path();
            if kind.is_dir() {
                stack.push(path);
            } else if kind.is_file() {
                let small = entry.metadata().map(|m| m.len() <= 16 << 20).unwrap_or(false);
                if small {
                    let bytes = std::fs::read(&path).unwrap_or_default();
                    if memchr::memmem::find(&bytes, needle.as_bytes()).is_some() {
                        found.push(path);
                    }
                }
            }
        }
    }
    found
}

/// The agent's shell (the `/bin/sh` whose command line names the fixture) among what the
/// watcher saw, once it exists.
pub fn agent_pid(fixture: &Fixture, watcher: &Watcher) -> i32 {
    let marker = format!("# fixture {}", fixture.dir.0.display());
    let mut pid = 0;
    let found = external::wait_until(LAUNCH_WAIT, || {
        pid = watcher
            .seen()
            .processes
            .iter()
            .find(|(p, c)| c.starts_with("/bin/sh -c") && c.contains(&marker) && p.is_alive())
            .map(|(p, _)| p.pid)
            .unwrap_or(0);
        pid != 0
    });
    assert!(found, "the agent never started");
    pid
}

/// Waits (bounded) until `path` exists.
pub fn wait_for_path(path: &Path, timeout: Duration) -> bool {
    external::wait_until(timeout, || path.exists())
}

/// Polls `f` until it returns `Some` or `timeout` passes.
pub fn wait_for<T>(timeout: Duration, mut f: impl FnMut() -> Option<T>) -> Option<T> {
    let deadline = Instant::now() + timeout;
    loop {
        if let Some(v) = f() {
            return Some(v);
        }
        if Instant::now() >= deadline {
            return None;
        }
        std::thread::sleep(Duration::from_millis(5));
    }
}
