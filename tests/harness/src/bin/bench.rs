//! bottle's own benchmark harness. Every figure is reported next to a baseline measured
//! in the same run, as a ratio. Reproduce with:
//!
//!     cargo run --release -p bottle-tests --bin bottle-bench -- [runtime] [--iterations N]
//!
//!     cargo run --release -p bottle-tests --bin bottle-bench -- init [--iterations N]
//!     cargo build --release -p bottle && cargo run --release -p bottle-tests --bin bottle-bench -- egress
//!
//!     cargo run --release -p bottle-tests --bin bottle-bench -- pipelock
//!
//!     cargo build --release -p bottle -p bottle-init -p bottle-local --bins && \
//!         cargo run --release -p bottle-tests --bin bottle-bench -- launch [--iterations N]
//!
//! `pipelock`: scanner throughput on 1 MB of clean text, 1 MB of JSON and a real source
//! tree, against a single-literal memchr scan of the same bytes (the floor) and
//! detect-secrets (`pip install detect-secrets`) on the same files; per-URL latency.
//!
//! `egress`: bottle proxy against mitmproxy (`pip install mitmproxy`) and a direct
//! connection (the floor), same upstream, same load generator: plain HTTP keep-alive,
//! HTTPS intercepted keep-alive, HTTPS intercepted with a new connection per request,
//! and a 100 MB download.
//!
//! (one group per invocation: `runtime` installs a reaper in this process, `init` runs
//! other supervisors as children and waits for them with std.)
//!
//! `init`: idle RSS of bottle-init with 3 daemons against supervisord with the same 3,
//! and with 1 child against tini; start-to-ready time; restart latency after SIGKILL
//! against supervisord and s6-supervise (restarts observed from /proc for all alike).
//!
//! `runtime`: process restart latency (SIGKILL to the replacement exec'd) against the
//! raw spawn+kill+reap floor with no supervisor; actor restart latency (panic to
//! restarted); supervisor message overhead against a bare ractor actor.
// The report (markdown tables on stdout, notes on stderr) is this binary's output.
#![allow(clippy::print_stdout, clippy::print_stderr)]

use std::sync::Arc;
use std::time::{Duration, Instant};

use async_trait::async_trait;
use bottle_runtime::backoff::Backoff;
use bottle_runtime::proc::SpawnSpec;
use bottle_runtime::spec::{ActorFactory, ChildSpec, ChildStart, SupervisorSpec};
use bottle_runtime::{Node, NodeConfig, SupervisorMsg, TreeEvent};
use bottle_tests::{Recorder, testchild, testchild_path};
use ractor::{Actor, ActorCell, ActorProcessingErr, ActorRef, SpawnErr};

/// When the bench actor last panicked: the start of an actor-restart measurement.
static PANIC_AT: std::sync::Mutex<Option<Instant>> = std::sync::Mutex::new(None);

#[derive(Debug)]
struct Echo;

impl Actor for Echo {
    type Msg = u64;
    type State = u64;
    type Arguments = ();
    async fn pre_start(&self, _: ActorRef<u64>, _: ()) -> Result<u64, ActorProcessingErr> {
        Ok(0)
    }
    async fn handle(
        &self,
        _: ActorRef<u64>,
        msg: u64,
        sum: &mut u64,
    ) -> Result<(), ActorProcessingErr> {
        if msg == u64::MAX {
            *PANIC_AT.lock().unwrap() = Some(Instant::now());
            panic!("bench panic");
        }
        *sum = sum.wrapping_add(msg);
        Ok(())
    }
}

/// Starts [`Echo`]s and keeps the latest one, so the bench can make it panic without the
/// runtime's fault injection (which shipped binaries never contain, and this is a binary).
#[derive(Debug, Clone, Default)]
struct EchoFactory {
    latest: Arc<std::sync::Mutex<Option<ActorCell>>>,
}

impl EchoFactory {
    /// Makes the running echo panic (its handler records the time first).
    fn panic_latest(&self) {
        let cell = self.latest.lock().unwrap().clone().expect("the echo actor started");
        cell.send_message(u64::MAX).expect("the echo actor is running");
    }
}

#[async_trait]
impl ActorFactory for EchoFactory {
    async fn spawn_linked(&self, _: String, supervisor: ActorCell) -> Result<ActorCell, SpawnErr> {
        let cell = Actor::spawn_linked(None, Echo, (), supervisor).await?.0.get_cell();
        *self.latest.lock().unwrap() = Some(cell.clone());
        Ok(cell)
    }
    fn inject_panic(&self, cell: &ActorCell) -> bool {
        cell.send_message(u64::MAX).is_ok()
    }
}

fn percentile(samples: &mut [Duration], p: f64) -> Duration {
    samples.sort();
    let idx = ((samples.len() as f64 - 1.0) * p).round() as usize;
    samples[idx]
}

fn micros(d: Duration) -> String {
    format!("{:.1} µs", d.as_secs_f64() * 1e6)
}

/// The last start of `path` after `after`; `base` is the tree's start (event times count
/// from it).
fn started_after(
    recorder: &Recorder,
    path: &str,
    base: Instant,
    after: Instant,
) -> Option<Instant> {
    recorder.events().into_iter().rev().find_map(|e| match e {
        TreeEvent::Started { path: p, at, .. } if p == path && base + at > after => Some(base + at),
        _ => None,
    })
}

fn current_pid(recorder: &Recorder, path: &str) -> i32 {
    recorder
        .events()
        .into_iter()
        .rev()
        .find_map(|e| match e {
            TreeEvent::Started { path: p, pid, .. } if p == path => pid,
            _ => None,
        })
        .expect("pid")
}

async fn wait_started(recorder: &Recorder, path: &str, base: Instant, after: Instant) -> Instant {
    loop {
        if let Some(at) = started_after(recorder, path, base, after) {
            return at;
        }
        tokio::task::yield_now().await;
    }
}

async fn runtime_bench(iterations: usize) {
    let recorder = Recorder::default();
    let echo = EchoFactory::default();
    let spec = SupervisorSpec::new("root")
        .intensity(1_000_000, Duration::from_secs(1))
        .child(testchild("proc", &["sleep", "600"]).backoff(Backoff::ZERO))
        .child(
            ChildSpec::new("actor", ChildStart::Actor(Arc::new(echo.clone())))
                .backoff(Backoff::ZERO),
        );
    let config = NodeConfig {
        sink: Arc::new(|_: &str, _: &[u8]| {}),
        observer: Some(recorder.observer()),
        seed: 1,
        ..NodeConfig::default()
    };
    let node = Node::start(spec, config).await.expect("node");
    let root = node.wait_root(Duration::from_secs(5)).await.expect("root");
    let reaper = node.reaper().clone();

    // Process restart through the supervisor: SIGKILL -> replacement exec'd. The
    // clock starts at the kill(2) itself, sent straight to the pid.
    let mut supervised = Vec::with_capacity(iterations);
    for _ in 0..iterations {
        let pid = current_pid(&recorder, "root/proc");
        let t0 = Instant::now();
        // SIGKILL straight to the child, as an outside killer would.
        assert!(reaper.signal_group(pid, libc::SIGKILL).expect("kill"), "{pid} is supervised");
        let at = wait_started(&recorder, "root/proc", node.started_at(), t0).await;
        supervised.push(at - t0);
    }

    // The floor: the same steps with no supervisor (kill, reap, spawn, exec'd).
    let spawn = || {
        reaper
            .spawn(SpawnSpec {
                argv: vec![testchild_path(), "sleep".into(), "600".into()],
                env: vec![("PATH".into(), "/usr/bin:/bin".into())],
                cwd: None,
                capture_output: true,
                notify_fd: None,
                stdin: None,
                inherit: Vec::new(),
            })
            .expect("spawn")
    };
    let mut child = spawn();
    let mut floor = Vec::with_capacity(iterations);
    for _ in 0..iterations {
        let t0 = Instant::now();
        reaper.signal_group(child.pid, libc::SIGKILL).expect("kill");
        let _ = child.exit.await;
        child = spawn();
        floor.push(t0.elapsed());
    }
    let _ = reaper.signal_group(child.pid, libc::SIGKILL);
    let _ = child.exit.await;

    // Actor restart: panic -> replacement started, timed from inside the panicking handler.
    let mut actor = Vec::with_capacity(iterations);
    for _ in 0..iterations {
        let t0 = Instant::now();
        // The supervisor's Started event comes after spawn_linked returned, so `latest`
        // is the replacement by the time wait_started saw it.
        echo.panic_latest();
        let at = wait_started(&recorder, "root/actor", node.started_at(), t0).await;
        let panicked = PANIC_AT.lock().unwrap().take().expect("panic time");
        actor.push(at - panicked);
    }

    // Message overhead: supervisor no-op (stale RestartDue) vs a bare actor.
    let n = 200_000u64;
    let (bare, _) = Actor::spawn(None, Echo, ()).await.expect("bare");
    let t0 = Instant::now();
    for i in 0..n {
        bare.send_message(i).expect("send");
    }
    let _ = bare.stop_and_wait(None, None).await;
    let bare_per = t0.elapsed() / n as u32;
    let t0 = Instant::now();
    for _ in 0..n {
        root.send_message(SupervisorMsg::RestartDue { epoch: u64::MAX, start: Vec::new() })
            .expect("send");
    }
    let _ = ractor::call_t!(root, SupervisorMsg::Status, 60_000);
    let sup_per = t0.elapsed() / n as u32;

    node.shutdown("bench done");
    node.wait().await;

    let (sp50, sp99) = (percentile(&mut supervised, 0.5), percentile(&mut supervised, 0.99));
    let (fp50, fp99) = (percentile(&mut floor, 0.5), percentile(&mut floor, 0.99));
    let (ap50, ap99) = (percentile(&mut actor, 0.5), percentile(&mut actor, 0.99));
    println!("| runtime ({iterations} iterations) | p50 | p99 | ratio (p50) |");
    println!("|---|---|---|---|");
    println!(
        "| process restart, zero backoff (SIGKILL to replacement exec'd) | {} | {} | {:.2}x floor |",
        micros(sp50),
        micros(sp99),
        sp50.as_secs_f64() / fp50.as_secs_f64()
    );
    println!(
        "| floor: kill + reap + spawn same binary, no supervisor | {} | {} | 1.00x |",
        micros(fp50),
        micros(fp99)
    );
    println!(
        "| actor restart (panic to restarted) | {} | {} | goal < 50 µs |",
        micros(ap50),
        micros(ap99)
    );
    println!(
        "| supervisor message (no-op) | {:.0} ns | | {:.2}x bare actor |",
        sup_per.as_nanos(),
        sup_per.as_secs_f64() / bare_per.as_secs_f64()
    );
    println!("| bare ractor actor message | {:.0} ns | | 1.00x |", bare_per.as_nanos());
}

fn main() {
    // Injected panics are expected here; printing a backtrace for each would be the
    // cost being measured.
    std::panic::set_hook(Box::new(|_| {}));
    let args: Vec<String> = std::env::args().skip(1).collect();
    let iterations = args
        .iter()
        .position(|a| a == "--iterations")
        .and_then(|i| args.get(i + 1))
        .and_then(|n| n.parse().ok())
        .unwrap_or(300);
    let which: Vec<&str> = args
        .iter()
        .map(String::as_str)
        .filter(|a| !a.starts_with("--") && a.parse::<usize>().is_err())
        .collect();
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("runtime");
    match which.first().copied() {
        Some("init") => init_bench::run(iterations.min(30)),
        Some("egress") => runtime.block_on(egress_bench::run()),
        Some("pipelock") => pipelock_bench::run(),
        Some("launch") => launch_bench::run(iterations.min(50)),
        Some("runtime") | None => runtime.block_on(runtime_bench(iterations)),
        Some(other) => eprintln!("unknown group {other:?}: runtime or init"),
    }
}

/// `bottle run` measured from the outside (std children waited by std, like init_bench).
#[allow(clippy::disallowed_methods)]
#[path = "bench/launch.rs"]
mod launch_bench;

/// Other supervisors, measured from the outside. Nothing here uses bottle's reaper.
#[allow(clippy::disallowed_methods)]
mod init_bench {
    use std::net::TcpStream;
    use std::path::{Path, PathBuf};
    use std::process::{Child, Command, Stdio};
    use std::time::{Duration, Instant};

    use bottle_tests::external::{TempDir, children_matching, cmdline};

    struct Running(Child);

    impl Drop for Running {
        fn drop(&mut self) {
            let _ = bottle_proc::signal::send_unsupervised(self.0.id() as i32, libc::SIGTERM);
            let deadline = Instant::now() + Duration::from_secs(15);
            while Instant::now() < deadline {
                if let Ok(Some(_)) = self.0.try_wait() {
                    return;
                }
                std::thread::sleep(Duration::from_millis(10));
            }
            let _ = self.0.kill();
            let _ = self.0.wait();
        }
    }

    fn spawn(cmd: &mut Command) -> Running {
        Running(
            cmd.stdin(Stdio::null())
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .spawn()
                .expect("spawn"),
        )
    }

    fn rss_kb(pid: u32) -> u64 {
        std::fs::read_to_string(format!("/proc/{pid}/status"))
            .ok()
            .and_then(|s| {
                s.lines()
                    .find(|l| l.starts_with("VmRSS:"))
                    .and_then(|l| l.split_whitespace().nth(1)?.parse().ok())
            })
            .unwrap_or(0)
    }

    fn wait_for(timeout: Duration, mut cond: impl FnMut() -> bool) -> bool {
        let deadline = Instant::now() + timeout;
        while Instant::now() < deadline {
            if cond() {
                return true;
            }
            std::thread::sleep(Duration::from_micros(50));
        }
        false
    }

    fn binary(name: &str) -> PathBuf {
        PathBuf::from(bottle_tests::sibling_binary(name))
    }

    fn which(name: &str) -> Option<PathBuf> {
        std::env::var_os("PATH")?
            .to_str()?
            .split(':')
            .map(|d| Path::new(d).join(name))
            .find(|p| p.exists())
    }

    fn ports(n: usize) -> Vec<u16> {
        let listeners: Vec<_> =
            (0..n).map(|_| std::net::TcpListener::bind("127.0.0.1:0").unwrap()).collect();
        listeners.iter().map(|l| l.local_addr().unwrap().port()).collect()
    }

    fn bottle_init_config(dir: &TempDir, tc: &Path, ports: &[u16], ready: bool) -> PathBuf {
        let mut text = format!(
            "control_socket = \"{}\"\nintensity = {{ max_restarts = 10000, period_seconds = 1 }}\n",
            dir.join("ctl.sock").display()
        );
        for (i, port) in ports.iter().enumerate() {
            text.push_str(&format!(
                "[[daemon]]\nname = \"d{i}\"\ncommand = [\"{}\", \"tcp\", \"127.0.0.1:{port}\", \"0\"]\nbackoff = {{ initial = 0, factor = 1, cap = 0, jitter = 0 }}\n",
                tc.display()
            ));
            if ready {
                text.push_str(&format!(
                    "ready = {{ tcp = \"127.0.0.1:{port}\", deadline = 10 }}\n"
                ));
            }
        }
        let path = dir.join("init.toml");
        std::fs::write(&path, text).unwrap();
        path
    }

    fn supervisord_config(dir: &TempDir, tc: &Path, ports: &[u16]) -> PathBuf {
        let mut text = format!(
            "[supervisord]\nnodaemon=true\nlogfile={}\npidfile={}\n[unix_http_server]\nfile={}\n",
            dir.join("sd.log").display(),
            dir.join("sd.pid").display(),
            dir.join("sd.sock").display()
        );
        for (i, port) in ports.iter().enumerate() {
            text.push_str(&format!(
                "[program:d{i}]\ncommand={} tcp 127.0.0.1:{port} 0\nautorestart=true\nstartsecs=0\nstartretries=1000\nstdout_logfile=NONE\nstderr_logfile=NONE\n",
                tc.display()
            ));
        }
        let path = dir.join("supervisord.conf");
        std::fs::write(&path, text).unwrap();
        path
    }

    fn all_listening(ports: &[u16]) -> bool {
        ports.iter().all(|p| TcpStream::connect(("127.0.0.1", *p)).is_ok())
    }

    /// Direct children of `pid`, from `/proc/PID/task/*/children` (cheap enough to poll
    /// every 50 µs, unlike a scan of all of /proc).
    fn fast_children(pid: u32) -> Vec<i32> {
        let Ok(tasks) = std::fs::read_dir(format!("/proc/{pid}/task")) else { return Vec::new() };
        let mut out = Vec::new();
        for task in tasks.flatten() {
            if let Ok(text) = std::fs::read_to_string(task.path().join("children")) {
                out.extend(text.split_whitespace().filter_map(|p| p.parse::<i32>().ok()));
            }
        }
        out
    }

    /// Kills the child running `needle` under `supervisor` and times until a new one
    /// has exec'd (its cmdline is the program's again).
    fn restart_latency(
        supervisor: u32,
        needle: &str,
        iterations: usize,
        settle: Duration,
    ) -> Vec<Duration> {
        let mut samples = Vec::new();
        for _ in 0..iterations {
            std::thread::sleep(settle);
            let Some(&old) = children_matching(supervisor as i32, needle).first() else { break };
            // The exact command line: other daemons of the same program must not count.
            let exact = cmdline(old);
            let t0 = Instant::now();
            let _ = bottle_proc::signal::send_unsupervised(old, libc::SIGKILL);
            let ok = wait_for(Duration::from_secs(10), || {
                fast_children(supervisor).into_iter().any(|p| p != old && cmdline(p) == exact)
            });
            if ok {
                samples.push(t0.elapsed());
            }
        }
        samples
    }

    fn median(mut v: Vec<Duration>) -> Duration {
        v.sort();
        v.get(v.len() / 2).copied().unwrap_or_default()
    }

    fn ms(d: Duration) -> String {
        format!("{:.2} ms", d.as_secs_f64() * 1e3)
    }

    pub(super) fn run(iterations: usize) {
        let bi = binary("bottle-init");
        let tc = binary("bottle-testchild");
        let Some(supervisord) = which("supervisord") else {
            eprintln!("supervisord missing: apt-get install supervisor");
            return;
        };
        let s6 = which("s6-supervise");
        let tini = which("tini");

        // 1. Idle RSS with 3 daemons, and start-to-ready.
        let dir = TempDir::new("bench-bi");
        let p = ports(3);
        let t0 = Instant::now();
        let init = spawn(
            Command::new(&bi)
                .arg("--config")
                .arg(bottle_init_config(&dir, &tc, &p, true))
                .env_clear(),
        );
        wait_for(Duration::from_secs(10), || all_listening(&p));
        let bi_ready = t0.elapsed();
        std::thread::sleep(Duration::from_secs(2));
        let bi_rss = rss_kb(init.0.id());
        let bi_restart =
            restart_latency(init.0.id(), "tcp 127.0.0.1", iterations, Duration::from_millis(300));
        drop(init);

        let dir = TempDir::new("bench-sd");
        let p = ports(3);
        let t0 = Instant::now();
        let sd = spawn(Command::new(&supervisord).arg("-c").arg(supervisord_config(&dir, &tc, &p)));
        wait_for(Duration::from_secs(20), || all_listening(&p));
        let sd_ready = t0.elapsed();
        std::thread::sleep(Duration::from_secs(2));
        let sd_rss = rss_kb(sd.0.id());
        let sd_restart =
            restart_latency(sd.0.id(), "tcp 127.0.0.1", iterations, Duration::from_millis(300));
        drop(sd);

        // s6-supervise restarts at once only if the service ran for more than 1 s.
        let s6_restart = s6.map(|s6| {
            let dir = TempDir::new("bench-s6");
            let service = dir.join("svc");
            std::fs::create_dir_all(&service).unwrap();
            let run = service.join("run");
            std::fs::write(&run, format!("#!/bin/sh\nexec {} sleep 600\n", tc.display())).unwrap();
            std::os::unix::fs::PermissionsExt::set_mode(
                &mut std::fs::metadata(&run).unwrap().permissions(),
                0o755,
            );
            std::fs::set_permissions(&run, std::os::unix::fs::PermissionsExt::from_mode(0o755))
                .unwrap();
            let sup = spawn(Command::new(&s6).arg(&service));
            wait_for(Duration::from_secs(5), || {
                !children_matching(sup.0.id() as i32, "sleep 600").is_empty()
            });
            let samples = restart_latency(
                sup.0.id(),
                "sleep 600",
                iterations.min(10),
                Duration::from_millis(1100),
            );
            let _ = Command::new(which("s6-svc").unwrap_or_else(|| "s6-svc".into()))
                .args(["-dx"])
                .arg(&service)
                .status();
            drop(sup);
            samples
        });

        // The floor: a shell loop that re-execs the program as soon as wait(2) returns.
        let floor = {
            let script = format!("while :; do {} sleep 600; done", tc.display());
            let sh = spawn(Command::new("/bin/sh").args(["-c", &script]));
            wait_for(Duration::from_secs(5), || {
                !children_matching(sh.0.id() as i32, "sleep 600").is_empty()
            });
            let samples =
                restart_latency(sh.0.id(), "sleep 600", iterations, Duration::from_millis(300));
            let _ = bottle_proc::signal::send_unsupervised(-(sh.0.id() as i32), libc::SIGKILL);
            drop(sh);
            samples
        };

        // 2. One child: bottle-init against tini.
        let one = spawn(Command::new(&bi).arg("--").arg(&tc).args(["sleep", "600"]).env_clear());
        std::thread::sleep(Duration::from_secs(1));
        let bi_one = rss_kb(one.0.id());
        drop(one);
        let tini_one = tini.map(|t| {
            let r = spawn(Command::new(t).arg("-s").arg("--").arg(&tc).args(["sleep", "600"]));
            std::thread::sleep(Duration::from_secs(1));
            let kb = rss_kb(r.0.id());
            drop(r);
            kb
        });

        println!("| init ({iterations} restarts each) | bottle-init | peer | ratio |");
        println!("|---|---|---|---|");
        println!(
            "| idle VmRSS, 3 daemons (supervisord) | {bi_rss} kB | {sd_rss} kB | {:.2} |",
            bi_rss as f64 / sd_rss as f64
        );
        if let Some(t) = tini_one {
            println!(
                "| idle VmRSS, 1 child (tini -s) | {bi_one} kB | {t} kB | {:.2} |",
                bi_one as f64 / t as f64
            );
        }
        println!(
            "| start to 3 daemons listening (supervisord) | {} | {} | {:.2} |",
            ms(bi_ready),
            ms(sd_ready),
            bi_ready.as_secs_f64() / sd_ready.as_secs_f64()
        );
        let bi_med = median(bi_restart.clone());
        let sd_med = median(sd_restart.clone());
        println!(
            "| restart after SIGKILL, median (supervisord) | {} | {} | {:.1}x faster |",
            ms(bi_med),
            ms(sd_med),
            sd_med.as_secs_f64() / bi_med.as_secs_f64()
        );
        let floor_med = median(floor);
        println!(
            "| restart after SIGKILL, median (floor: `while :; do prog; done` in sh) | {} | {} | {:.2}x the floor |",
            ms(bi_med),
            ms(floor_med),
            bi_med.as_secs_f64() / floor_med.as_secs_f64()
        );
        if let Some(s6) = s6_restart {
            let s6_med = median(s6);
            println!(
                "| restart after SIGKILL, median (s6-supervise) | {} | {} | {:.1}x faster |",
                ms(bi_med),
                ms(s6_med),
                s6_med.as_secs_f64() / bi_med.as_secs_f64()
            );
        }
    }
}

/// Egress proxies under the same load. Processes are spawned and waited for with std;
/// this group installs no reaper.
#[allow(clippy::disallowed_methods)]
mod egress_bench {
    use std::net::SocketAddr;
    use std::process::{Child, Command, Stdio};
    use std::sync::Arc;
    use std::time::{Duration, Instant};

    use bytes::Bytes;
    use http_body_util::{BodyExt, Empty, Full};
    use hyper::client::conn::http1::SendRequest;
    use hyper_util::rt::{TokioExecutor, TokioIo};
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    use tokio::net::TcpStream;

    const CONCURRENCY: usize = 8;
    const SECONDS: u64 = 4;
    const BIG: usize = 100 * 1024 * 1024;

    struct Proc(Child);
    impl Drop for Proc {
        fn drop(&mut self) {
            let _ = self.0.kill();
            let _ = self.0.wait();
        }
    }

    async fn serve(tls: Option<tokio_rustls::TlsAcceptor>) -> SocketAddr {
        let big = Bytes::from(vec![b'x'; BIG]);
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        tokio::spawn(async move {
            loop {
                let Ok((stream, _)) = listener.accept().await else { continue };
                let _ = stream.set_nodelay(true);
                let (tls, big) = (tls.clone(), big.clone());
                tokio::spawn(async move {
                    let service = hyper::service::service_fn(
                        move |req: hyper::Request<hyper::body::Incoming>| {
                            let big = big.clone();
                            async move {
                                let body = if req.uri().path() == "/big" {
                                    big
                                } else {
                                    Bytes::from_static(b"ok")
                                };
                                // A file download, labelled as one.
                                let mut resp = hyper::Response::new(Full::new(body));
                                resp.headers_mut().insert(
                                    "content-type",
                                    hyper::header::HeaderValue::from_static(
                                        "application/octet-stream",
                                    ),
                                );
                                Ok::<_, std::convert::Infallible>(resp)
                            }
                        },
                    );
                    let builder =
                        hyper_util::server::conn::auto::Builder::new(TokioExecutor::new());
                    match tls {
                        Some(acceptor) => {
                            if let Ok(s) = acceptor.accept(stream).await {
                                let _ = builder.serve_connection(TokioIo::new(s), service).await;
                            }
                        }
                        None => {
                            let _ = builder.serve_connection(TokioIo::new(stream), service).await;
                        }
                    }
                });
            }
        });
        addr
    }

    fn roots(pem: &str) -> Arc<rustls::ClientConfig> {
        let mut roots = rustls::RootCertStore::empty();
        use rustls::pki_types::pem::PemObject;
        for cert in rustls::pki_types::CertificateDer::pem_slice_iter(pem.as_bytes()) {
            roots.add(cert.unwrap()).unwrap();
        }
        let mut config = rustls::ClientConfig::builder_with_provider(Arc::new(
            rustls::crypto::ring::default_provider(),
        ))
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_root_certificates(roots)
        .with_no_client_auth();
        config.alpn_protocols = vec![b"http/1.1".to_vec()];
        Arc::new(config)
    }

    #[derive(Clone)]
    struct Target {
        proxy: Option<SocketAddr>,
        upstream: SocketAddr,
        tls: Option<Arc<rustls::ClientConfig>>,
    }

    impl Target {
        /// A connection ready for requests, and the URI to request.
        async fn connect(&self) -> Option<(SendRequest<Empty<Bytes>>, String)> {
            let port = self.upstream.port();
            let mut stream = TcpStream::connect(self.proxy.unwrap_or(self.upstream)).await.ok()?;
            let _ = stream.set_nodelay(true);
            match &self.tls {
                None => {
                    let uri = if self.proxy.is_some() {
                        format!("http://localhost:{port}/")
                    } else {
                        "/".into()
                    };
                    let (sender, conn) =
                        hyper::client::conn::http1::handshake(TokioIo::new(stream)).await.ok()?;
                    tokio::spawn(conn);
                    Some((sender, uri))
                }
                Some(config) => {
                    if self.proxy.is_some() {
                        stream.write_all(format!("CONNECT localhost:{port} HTTP/1.1\r\nHost: localhost:{port}\r\n\r\n").as_bytes()).await.ok()?;
                        let mut head = Vec::new();
                        let mut b = [0u8; 1];
                        while !head.ends_with(b"\r\n\r\n") {
                            if stream.read(&mut b).await.ok()? == 0 {
                                return None;
                            }
                            head.push(b[0]);
                        }
                        if !head.starts_with(b"HTTP/1.1 200") && !head.starts_with(b"HTTP/1.0 200")
                        {
                            return None;
                        }
                    }
                    let connector = tokio_rustls::TlsConnector::from(config.clone());
                    let tls = connector
                        .connect(rustls::pki_types::ServerName::try_from("localhost").ok()?, stream)
                        .await
                        .ok()?;
                    let (sender, conn) =
                        hyper::client::conn::http1::handshake(TokioIo::new(tls)).await.ok()?;
                    tokio::spawn(conn);
                    Some((sender, "/".into()))
                }
            }
        }
    }

    async fn get(sender: &mut SendRequest<Empty<Bytes>>, uri: &str, port: u16) -> Option<usize> {
        sender.ready().await.ok()?;
        let req = hyper::Request::get(uri)
            .header("host", format!("localhost:{port}"))
            .body(Empty::new())
            .ok()?;
        let resp = sender.send_request(req).await.ok()?;
        if !resp.status().is_success() {
            return None;
        }
        Some(resp.into_body().collect().await.ok()?.to_bytes().len())
    }

    struct Load {
        rps: f64,
        p50: Duration,
        p99: Duration,
        errors: usize,
    }

    async fn load(target: &Target, keep_alive: bool) -> Load {
        let deadline = Instant::now() + Duration::from_secs(SECONDS);
        let mut tasks = Vec::new();
        for _ in 0..CONCURRENCY {
            let target = target.clone();
            tasks.push(tokio::spawn(async move {
                let mut lat = Vec::new();
                let mut errors = 0;
                let mut conn = None;
                while Instant::now() < deadline {
                    let t0 = Instant::now();
                    if conn.is_none() || !keep_alive {
                        conn = target.connect().await;
                    }
                    let ok = match conn.as_mut() {
                        Some((sender, uri)) => {
                            get(sender, &uri.clone(), target.upstream.port()).await.is_some()
                        }
                        None => false,
                    };
                    if ok {
                        lat.push(t0.elapsed());
                    } else {
                        errors += 1;
                        conn = None;
                        tokio::time::sleep(Duration::from_millis(5)).await;
                    }
                }
                (lat, errors)
            }));
        }
        let mut all = Vec::new();
        let mut errors = 0;
        for t in tasks {
            let (l, e) = t.await.unwrap();
            all.extend(l);
            errors += e;
        }
        all.sort();
        let pick = |p: f64| {
            all.get(((all.len().max(1) - 1) as f64 * p) as usize).copied().unwrap_or_default()
        };
        Load { rps: all.len() as f64 / SECONDS as f64, p50: pick(0.5), p99: pick(0.99), errors }
    }

    async fn download(target: &Target) -> Option<f64> {
        let target = target.clone();
        let (mut sender, uri) = target.connect().await?;
        let uri = if uri.ends_with('/') { format!("{uri}big") } else { uri };
        let t0 = Instant::now();
        let n = get(&mut sender, &uri, target.upstream.port()).await?;
        (n == BIG).then(|| BIG as f64 / 1e6 / t0.elapsed().as_secs_f64())
    }

    fn wait_port(addr: SocketAddr) -> bool {
        for _ in 0..400 {
            if std::net::TcpStream::connect(addr).is_ok() {
                return true;
            }
            std::thread::sleep(Duration::from_millis(25));
        }
        false
    }

    fn free_port() -> u16 {
        std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port()
    }

    pub(super) async fn run() {
        let dir = bottle_tests::external::TempDir::new("bench-egress");
        let up_ca = bottle_ca::CertificateAuthority::mint(bottle_ca::CaConfig {
            permitted: vec!["localhost".into()],
            ..Default::default()
        })
        .unwrap();
        let up_ca = Arc::new(up_ca);
        std::fs::write(dir.join("upstream-ca.pem"), up_ca.cert_pem()).unwrap();
        let mut server = rustls::ServerConfig::builder_with_provider(Arc::new(
            rustls::crypto::ring::default_provider(),
        ))
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_no_client_auth()
        .with_cert_resolver(up_ca.resolver());
        server.alpn_protocols = vec![b"http/1.1".to_vec()];
        let http_up = serve(None).await;
        let https_up = serve(Some(tokio_rustls::TlsAcceptor::from(Arc::new(server)))).await;

        // bottle proxy, as its own process.
        let bottle = bottle_tests::sibling_binary("bottle");
        std::fs::write(
            dir.join("routes.yaml"),
            format!(
                "routes:\n  - host: localhost\n    connect: 127.0.0.1\n    ports: [{}, {}]\n",
                http_up.port(),
                https_up.port()
            ),
        )
        .unwrap();
        let bottle_addr: SocketAddr = format!("127.0.0.1:{}", free_port()).parse().unwrap();
        let _bottle = Proc(
            Command::new(&bottle)
                .args(["proxy", "--routes"])
                .arg(dir.join("routes.yaml"))
                .args(["--listen", &bottle_addr.to_string(), "--ca-out"])
                .arg(dir.join("bottle-ca"))
                .arg("--upstream-ca")
                .arg(dir.join("upstream-ca.pem"))
                .env("RUST_LOG", "warn")
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .spawn()
                .expect("bottle proxy (build it: cargo build --release -p bottle)"),
        );
        assert!(wait_port(bottle_addr), "bottle proxy did not start");
        let bottle_ca = std::fs::read_to_string(dir.join("bottle-ca/ca.pem")).unwrap();

        // mitmproxy, the reference system's engine.
        let mitm_addr: SocketAddr = format!("127.0.0.1:{}", free_port()).parse().unwrap();
        let mitm = Command::new("mitmdump")
            .args([
                "-q",
                "--listen-host",
                "127.0.0.1",
                "--listen-port",
                &mitm_addr.port().to_string(),
            ])
            .arg("--set")
            .arg(format!("confdir={}", dir.join("mitm").display()))
            .arg("--set")
            .arg(format!(
                "ssl_verify_upstream_trusted_ca={}",
                dir.join("upstream-ca.pem").display()
            ))
            .args(["--set", "stream_large_bodies=1m"])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .map(Proc);
        let mitm = match mitm {
            Ok(p) if wait_port(mitm_addr) => Some(p),
            _ => {
                eprintln!("mitmdump not available (pip install mitmproxy): skipping its column");
                None
            }
        };
        let mitm_ca = mitm
            .as_ref()
            .and_then(|_| std::fs::read_to_string(dir.join("mitm/mitmproxy-ca-cert.pem")).ok());

        let up_pem = up_ca.cert_pem().to_string();
        // The same upstream seen directly, through bottle and through mitmproxy; each
        // client trusts the CA of whoever terminates its TLS.
        let mitm_on = mitm.is_some();
        let trio = |upstream: SocketAddr, tls: bool| {
            let with = |pem: &str| tls.then(|| roots(pem));
            (
                Target { proxy: None, upstream, tls: with(&up_pem) },
                Target { proxy: Some(bottle_addr), upstream, tls: with(&bottle_ca) },
                mitm_on
                    .then(|| match (&mitm_ca, tls) {
                        (_, false) => Some(Target { proxy: Some(mitm_addr), upstream, tls: None }),
                        (Some(ca), true) => {
                            Some(Target { proxy: Some(mitm_addr), upstream, tls: with(ca) })
                        }
                        (None, true) => None,
                    })
                    .flatten(),
            )
        };
        let scenarios = [
            ("plain HTTP, keep-alive", true, trio(http_up, false)),
            ("HTTPS intercepted, keep-alive", true, trio(https_up, true)),
            ("HTTPS intercepted, new connection per request", false, trio(https_up, true)),
        ];
        println!(
            "| scenario ({CONCURRENCY} connections, {SECONDS} s) | direct req/s (p50/p99) | bottle req/s (p50/p99) | mitmproxy req/s (p50/p99) | bottle / mitmproxy req/s | mitmproxy p99 / bottle p99 | bottle p50 / direct p50 |"
        );
        println!("|---|---|---|---|---|---|---|");
        let fmt = |l: &Load| {
            format!(
                "{:.0} ({:.2} / {:.2} ms){}",
                l.rps,
                l.p50.as_secs_f64() * 1e3,
                l.p99.as_secs_f64() * 1e3,
                if l.errors > 0 { format!(" [{} errors]", l.errors) } else { String::new() }
            )
        };
        for (name, keep_alive, (direct, ours, theirs)) in &scenarios {
            let d = load(direct, *keep_alive).await;
            let b = load(ours, *keep_alive).await;
            let m = match theirs {
                Some(t) => Some(load(t, *keep_alive).await),
                None => None,
            };
            let (mcol, ratio, p99r) = match &m {
                Some(m) => (
                    fmt(m),
                    format!("{:.1}x", b.rps / m.rps.max(1e-9)),
                    format!("{:.1}x", m.p99.as_secs_f64() / b.p99.as_secs_f64().max(1e-9)),
                ),
                None => ("-".into(), "-".into(), "-".into()),
            };
            println!(
                "| {name} | {} | {} | {mcol} | {ratio} | {p99r} | {:.2}x |",
                fmt(&d),
                fmt(&b),
                b.p50.as_secs_f64() / d.p50.as_secs_f64().max(1e-9)
            );
        }
        let direct = download(&Target { proxy: None, upstream: http_up, tls: None }).await;
        let ours = download(&Target {
            proxy: Some(bottle_addr),
            upstream: https_up,
            tls: Some(roots(&bottle_ca)),
        })
        .await;
        let theirs = match &mitm_ca {
            Some(ca) => {
                download(&Target {
                    proxy: Some(mitm_addr),
                    upstream: https_up,
                    tls: Some(roots(ca)),
                })
                .await
            }
            None => None,
        };
        let mb =
            |v: Option<f64>| v.map(|x| format!("{x:.0} MB/s")).unwrap_or_else(|| "failed".into());
        println!(
            "| 100 MB download (direct: plain HTTP; proxies: HTTPS intercepted) | {} | {} | {} | {} | | |",
            mb(direct),
            mb(ours),
            mb(theirs),
            match (ours, theirs) {
                (Some(a), Some(b)) => format!("{:.1}x", a / b),
                _ => "-".into(),
            }
        );
    }
}

/// pipelock's scanner against the memchr floor and detect-secrets.
#[allow(clippy::disallowed_methods)]
mod pipelock_bench {
    use std::path::{Path, PathBuf};
    use std::process::Command;
    use std::time::{Duration, Instant};

    use bottle_pipelock::{Detectors, KnownSecret, Pipelock, Scanner};

    fn sources(root: &Path, out: &mut Vec<PathBuf>, budget: &mut usize) {
        let Ok(entries) = std::fs::read_dir(root) else { return };
        let mut entries: Vec<_> = entries.flatten().map(|e| e.path()).collect();
        entries.sort();
        for path in entries {
            if *budget == 0 {
                return;
            }
            if path.is_dir() {
                sources(&path, out, budget);
            } else if path.extension().is_some_and(|e| e == "rs") {
                let len = std::fs::metadata(&path).map(|m| m.len() as usize).unwrap_or(0);
                *budget = budget.saturating_sub(len);
                out.push(path);
            }
        }
    }

    fn collect_text(root: &Path, out: &mut Vec<PathBuf>) {
        let Ok(entries) = std::fs::read_dir(root) else { return };
        let mut entries: Vec<_> = entries.flatten().map(|e| e.path()).collect();
        entries.sort();
        for path in entries {
            if path.is_dir() {
                collect_text(&path, out);
            } else if path
                .file_name()
                .is_some_and(|n| n == "copyright" || n.to_string_lossy().ends_with(".txt"))
            {
                out.push(path);
            }
        }
    }

    fn mbps(bytes: usize, d: Duration) -> f64 {
        bytes as f64 / 1e6 / d.as_secs_f64()
    }

    fn time<F: FnMut()>(mut f: F, rounds: u32) -> Duration {
        f();
        let t0 = Instant::now();
        for _ in 0..rounds {
            f();
        }
        t0.elapsed() / rounds
    }

    pub(super) fn run() {
        let scanner = Scanner::builtin();
        // The full outbound pipeline as a bottle runs it: built-in rules, four known
        // secrets (two tokens, two placeholders) in all their encodings, every
        // normalization step and joined JSON fields.
        let known: Vec<KnownSecret> = (0..4)
            .map(|i| KnownSecret {
                name: format!("TOKEN_{i}"),
                value: format!("bottle-known-secret-{i}-0123456789abcdef0123456789abcdef"),
            })
            .collect();
        let pipelock = Pipelock::new(&[], &known).unwrap();
        let dir = bottle_tests::external::TempDir::new("bench-pipelock");
        // 1 MB of clean prose: the machine's own documentation (/usr/share/doc), which
        // nobody wrote for this benchmark.
        let mut doc_files = Vec::new();
        collect_text(Path::new("/usr/share/doc"), &mut doc_files);
        let mut text = String::new();
        for f in doc_files {
            if text.len() >= 1_000_000 {
                break;
            }
            if let Ok(t) = std::fs::read_to_string(&f) {
                text.push_str(&t);
            }
        }
        while !text.is_char_boundary(text.len().min(1_000_000)) {
            text.pop();
        }
        text.truncate(1_000_000);
        // 1 MB of JSON.
        let mut json = String::from("[");
        let mut i = 0;
        while json.len() < 1_000_000 {
            json.push_str(&format!("{{\"id\":{i},\"name\":\"user {i}\",\"email\":\"user{i}@example.com\",\"tags\":[\"a\",\"b\"],\"score\":{}.5}},", i % 97));
            i += 1;
        }
        json.push_str("{}]");
        // A real source tree: crates from the local registry, up to 20 MB.
        let home = std::env::var_os("HOME").map(PathBuf::from).unwrap_or_default();
        let mut files = Vec::new();
        let mut budget = 20 * 1024 * 1024;
        sources(&home.join(".cargo/registry/src"), &mut files, &mut budget);
        let tree: Vec<String> =
            files.iter().filter_map(|f| std::fs::read_to_string(f).ok()).collect();
        let tree_bytes: usize = tree.iter().map(String::len).sum();

        println!(
            "| input | pipeline MB/s | rules only MB/s | memchr floor MB/s | pipeline / floor | detect-secrets MB/s | pipeline / detect-secrets |"
        );
        println!("|---|---|---|---|---|---|---|");
        let inputs: Vec<(&str, Vec<&str>, usize)> = vec![
            ("clean prose (/usr/share/doc)", vec![text.as_str()], text.len()),
            ("1 MB JSON", vec![json.as_str()], json.len()),
            ("source tree", tree.iter().map(String::as_str).collect(), tree_bytes),
        ];
        for (name, parts, bytes) in inputs {
            let rounds = if bytes > 5_000_000 { 2 } else { 10 };
            let ours = time(
                || {
                    for p in &parts {
                        std::hint::black_box(pipelock.scan_body(p, Detectors::ALL));
                    }
                },
                rounds,
            );
            let rules_only = time(
                || {
                    for p in &parts {
                        std::hint::black_box(scanner.scan(p));
                    }
                },
                rounds,
            );
            let floor = time(
                || {
                    for p in &parts {
                        std::hint::black_box(memchr::memmem::find(p.as_bytes(), b"ghp_"));
                    }
                },
                rounds,
            );
            // detect-secrets on the same bytes, written to files.
            let sub = dir.join(&name.replace(' ', "-"));
            std::fs::create_dir_all(&sub).unwrap();
            for (i, p) in parts.iter().enumerate() {
                std::fs::write(sub.join(format!("f{i}.txt")), p).unwrap();
            }
            let t0 = Instant::now();
            // Run from inside the directory: given a path outside its working directory,
            // detect-secrets silently scans nothing (an earlier version of this harness
            // timed exactly that).
            let ds = Command::new("detect-secrets")
                .args(["scan", "--all-files", "."])
                .current_dir(&sub)
                .output();
            let ds = match ds {
                Ok(out) if out.status.success() => {
                    let report: serde_json::Value =
                        serde_json::from_slice(&out.stdout).unwrap_or_default();
                    let scanned = report["results"].as_object().map_or(0, |r| r.len());
                    eprintln!(
                        "detect-secrets on {name}: {} files, {scanned} with findings",
                        parts.len()
                    );
                    Some(t0.elapsed())
                }
                _ => None,
            };
            let (ds_col, ratio) = match ds {
                Some(d) => (
                    format!("{:.2}", mbps(bytes, d)),
                    format!("{:.0}x", d.as_secs_f64() / ours.as_secs_f64()),
                ),
                None => ("not installed".into(), "-".into()),
            };
            println!(
                "| {name} ({:.1} MB) | {:.0} | {:.0} | {:.0} | {:.1}x | {ds_col} | {ratio} |",
                bytes as f64 / 1e6,
                mbps(bytes, ours),
                mbps(bytes, rules_only),
                mbps(bytes, floor),
                ours.as_secs_f64() / floor.as_secs_f64()
            );
        }
        // Per-URL latency.
        let urls: Vec<String> = (0..10_000).map(|i| format!("https://api.example.com/v1/repos/org{i}/issues?page={}&per_page=100&state=open", i % 7)).collect();
        let mut lat: Vec<Duration> = urls
            .iter()
            .map(|u| {
                let t0 = Instant::now();
                std::hint::black_box(pipelock.scan_url(u, Detectors::ALL));
                t0.elapsed()
            })
            .collect();
        lat.sort();
        println!(
            "\nper-URL scan: p50 {:.2} µs, p99 {:.2} µs ({} URLs)",
            lat[lat.len() / 2].as_secs_f64() * 1e6,
            lat[lat.len() * 99 / 100].as_secs_f64() * 1e6,
            lat.len()
        );
    }
}
