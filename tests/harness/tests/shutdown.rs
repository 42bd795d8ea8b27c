//! Graceful shutdown and the crash-then-shutdown rule (the reference system's
//! known exit-code bug), with real processes.

use std::time::{Duration, Instant};

use bottle_runtime::exit::TreeCause;
use bottle_runtime::spec::SupervisorSpec;
use bottle_runtime::{Node, TreeEvent};
use bottle_tests::{
    Captured, Recorder, eventually, init_tracing, my_zombies, shell, test_config, testchild,
};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn shutdown_that_kills_children_with_our_sigterm_exits_zero() {
    init_tracing();
    let spec = SupervisorSpec::new("root")
        .child(testchild("a", &["sleep", "60"]))
        .child(shell("b", "exec sleep 60"))
        .child(shell("c", "trap 'exit 143' TERM; while :; do sleep 0.05; done"));
    let recorder = Recorder::default();
    let node = Node::start(spec, test_config(&Captured::default(), &recorder, 2)).await.unwrap();
    assert!(node.wait_root(Duration::from_secs(5)).await.is_some());
    node.shutdown("test");
    let exit = node.wait().await;
    assert_eq!(exit.code, 0, "{}", exit.report.to_json());
    assert_eq!(exit.report.cause, TreeCause::Shutdown);
    assert!(exit.report.first_crash.is_none());
    // Stopped in reverse start order.
    let stops: Vec<String> = recorder
        .events()
        .into_iter()
        .filter_map(|e| match e {
            TreeEvent::Stopped { path, .. } => Some(path),
            _ => None,
        })
        .collect();
    assert_eq!(stops, vec!["root/c", "root/b", "root/a"]);
    assert!(my_zombies().is_empty());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_child_ignoring_sigterm_is_killed_at_its_stop_timeout_and_still_counts_clean() {
    init_tracing();
    let stop_timeout = Duration::from_millis(700);
    let spec = SupervisorSpec::new("root")
        .child(testchild("stubborn", &["ignore-term", "60"]).stop_timeout(stop_timeout));
    let node = Node::start(spec, test_config(&Captured::default(), &Recorder::default(), 3))
        .await
        .unwrap();
    node.wait_root(Duration::from_secs(5)).await.unwrap();
    let pid = node.status().await.unwrap().children[0].pid.unwrap();
    assert!(
        eventually(Duration::from_secs(5), || bottle_tests::has_handler(pid, libc::SIGTERM)).await
    );
    let t0 = Instant::now();
    node.shutdown("test");
    let exit = node.wait().await;
    let took = t0.elapsed();
    assert!(took >= stop_timeout, "stopped after {took:?}, before the stop timeout");
    assert!(took < stop_timeout + Duration::from_secs(2), "took {took:?}");
    assert_eq!(exit.code, 0);
    let last = &exit.report.supervisors[0].children[0].last;
    assert!(last.last().unwrap().what.contains("stop timeout: we sent SIGKILL"), "{last:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_crash_before_a_graceful_shutdown_keeps_its_code() {
    init_tracing();
    // `flaky` dies by SIGSEGV once (restarted), then the tree is shut down cleanly:
    // the reference system's max-of-returncodes would have reported 0 here.
    let marker = std::env::temp_dir().join(format!("bottle-crash-once-{}", std::process::id()));
    let script = format!(
        "if [ ! -e {m} ]; then touch {m}; kill -SEGV $$; fi; exec sleep 60",
        m = marker.display()
    );
    let spec = SupervisorSpec::new("root")
        .intensity(5, Duration::from_secs(10))
        .child(testchild("steady", &["sleep", "60"]))
        .child(shell("flaky", &script).backoff(bottle_runtime::backoff::Backoff::ZERO));
    let recorder = Recorder::default();
    let node = Node::start(spec, test_config(&Captured::default(), &recorder, 4)).await.unwrap();
    assert!(eventually(Duration::from_secs(5), || recorder.starts_of("root/flaky") == 2).await);
    node.shutdown("test");
    let exit = node.wait().await;
    let _ = std::fs::remove_file(&marker);
    assert_eq!(exit.code, 128 + libc::SIGSEGV, "{}", exit.report.to_json());
    let crash = exit.report.first_crash.expect("first crash recorded");
    assert_eq!(crash.child, "root/flaky");
    let flaky = &exit.report.supervisors[0].children[1];
    assert_eq!(flaky.restarts, 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn shutdown_while_a_restart_is_scheduled_starts_nothing() {
    init_tracing();
    let backoff = bottle_runtime::backoff::Backoff {
        initial: Duration::from_millis(400),
        factor: 1.0,
        cap: Duration::from_millis(400),
        jitter: 0.0,
    };
    let spec = SupervisorSpec::new("root")
        .intensity(5, Duration::from_secs(10))
        .child(testchild("dies", &["exit", "1"]).backoff(backoff));
    let recorder = Recorder::default();
    let node = Node::start(spec, test_config(&Captured::default(), &recorder, 5)).await.unwrap();
    // First start, then the crash; the restart is 400 ms away when we shut down.
    assert!(
        eventually(Duration::from_secs(5), || recorder
            .events()
            .iter()
            .any(|e| matches!(e, TreeEvent::Restarting { .. })))
        .await
    );
    node.shutdown("test");
    let exit = node.wait().await;
    tokio::time::sleep(Duration::from_millis(600)).await;
    assert_eq!(recorder.starts_of("root/dies"), 1, "a restart started after shutdown began");
    assert_eq!(exit.code, 1, "crash-then-shutdown keeps the crash code");
}
