//! bottle's own benchmark harness. Every figure is reported next to a baseline measured
//! in the same run, as a ratio. Reproduce with:
//!
//!     cargo run --release -p bottle-tests --bin bottle-bench -- [runtime] [--iterations N]
//!
//! `runtime`: process restart latency (SIGKILL to the replacement exec'd) against the
//! raw spawn+kill+reap floor with no supervisor; actor restart latency (panic to
//! restarted); supervisor message overhead against a bare ractor actor.

use std::sync::Arc;
use std::time::{Duration, Instant};

use async_trait::async_trait;
use bottle_runtime::backoff::Backoff;
use bottle_runtime::fault::Fault;
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

#[derive(Debug)]
struct EchoFactory;

#[async_trait]
impl ActorFactory for EchoFactory {
    async fn spawn_linked(&self, _: String, supervisor: ActorCell) -> Result<ActorCell, SpawnErr> {
        Ok(Actor::spawn_linked(None, Echo, (), supervisor).await?.0.get_cell())
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

fn started_after(recorder: &Recorder, path: &str, after: Instant) -> Option<Instant> {
    recorder.events().into_iter().rev().find_map(|e| match e {
        TreeEvent::Started { path: p, at, .. } if p == path && at > after => Some(at),
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

async fn wait_started(recorder: &Recorder, path: &str, after: Instant) -> Instant {
    loop {
        if let Some(at) = started_after(recorder, path, after) {
            return at;
        }
        tokio::task::yield_now().await;
    }
}

async fn runtime_bench(iterations: usize) {
    let recorder = Recorder::default();
    let spec = SupervisorSpec::new("root")
        .intensity(1_000_000, Duration::from_secs(1))
        .child(testchild("proc", &["sleep", "600"]).backoff(Backoff::ZERO))
        .child(
            ChildSpec::new("actor", ChildStart::Actor(Arc::new(EchoFactory)))
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
        nix::sys::signal::kill(nix::unistd::Pid::from_raw(pid), nix::sys::signal::Signal::SIGKILL)
            .expect("kill");
        let at = wait_started(&recorder, "root/proc", t0).await;
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
        node.inject("actor", Fault::Panic).await.expect("panic");
        let at = wait_started(&recorder, "root/actor", t0).await;
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
    if which.is_empty() || which.contains(&"runtime") {
        runtime.block_on(runtime_bench(iterations));
    }
}
