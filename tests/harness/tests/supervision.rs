//! Strategies, intensity and escalation through a tree, with process and actor
//! children under one policy engine.

use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use bottle_runtime::exit::TreeCause;
use bottle_runtime::fault::Fault;
use bottle_runtime::policy::Strategy;
use bottle_runtime::spec::{ChildSpec, ChildStart, SupervisorSpec};
use bottle_runtime::{ChildStatus, Node, NodeHandle};
use bottle_tests::{Captured, Recorder, eventually, init_tracing, test_config, testchild};

use bottle_tests::worker::WorkerFactory;

fn pids(children: &[ChildStatus]) -> Vec<Option<i32>> {
    children.iter().map(|c| c.pid).collect()
}

async fn status(node: &NodeHandle) -> Vec<ChildStatus> {
    node.status().await.expect("status").children
}

async fn wait_all_running(node: &NodeHandle) -> Vec<ChildStatus> {
    for _ in 0..1000 {
        let s = status(node).await;
        if s.iter().all(|c| c.running) {
            return s;
        }
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    panic!("children did not all come back: {:?}", status(node).await);
}

async fn tree(strategy: Strategy, recorder: &Recorder) -> NodeHandle {
    let spec = SupervisorSpec::new("root")
        .strategy(strategy)
        .intensity(10, Duration::from_secs(5))
        .child(testchild("a", &["sleep", "60"]).backoff(bottle_runtime::backoff::Backoff::ZERO))
        .child(testchild("b", &["sleep", "60"]).backoff(bottle_runtime::backoff::Backoff::ZERO))
        .child(testchild("c", &["sleep", "60"]).backoff(bottle_runtime::backoff::Backoff::ZERO));
    let node = Node::start(spec, test_config(&Captured::default(), recorder, 30)).await.unwrap();
    node.wait_root(Duration::from_secs(5)).await.unwrap();
    node
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_for_one_replaces_only_the_killed_child() {
    init_tracing();
    let recorder = Recorder::default();
    let node = tree(Strategy::OneForOne, &recorder).await;
    let before = pids(&status(&node).await);
    node.inject("b", Fault::Signal(libc::SIGKILL)).await.unwrap();
    assert!(eventually(Duration::from_secs(5), || recorder.starts_of("root/b") == 2).await);
    let after = pids(&wait_all_running(&node).await);
    assert_eq!(after[0], before[0]);
    assert_ne!(after[1], before[1]);
    assert_eq!(after[2], before[2]);
    node.shutdown("test");
    assert_eq!(node.wait().await.code, 128 + libc::SIGKILL);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_for_all_replaces_every_child() {
    init_tracing();
    let recorder = Recorder::default();
    let node = tree(Strategy::OneForAll, &recorder).await;
    let before = pids(&status(&node).await);
    node.inject("b", Fault::Signal(libc::SIGKILL)).await.unwrap();
    assert!(eventually(Duration::from_secs(5), || recorder.starts_of("root/c") == 2).await);
    let after = pids(&wait_all_running(&node).await);
    for i in 0..3 {
        assert_ne!(after[i], before[i], "child {i} kept its pid");
    }
    node.shutdown("test");
    node.wait().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rest_for_one_replaces_the_child_and_those_after_it() {
    init_tracing();
    let recorder = Recorder::default();
    let node = tree(Strategy::RestForOne, &recorder).await;
    let before = pids(&status(&node).await);
    node.inject("b", Fault::Signal(libc::SIGKILL)).await.unwrap();
    assert!(eventually(Duration::from_secs(5), || recorder.starts_of("root/c") == 2).await);
    let after = pids(&wait_all_running(&node).await);
    assert_eq!(after[0], before[0]);
    assert_ne!(after[1], before[1]);
    assert_ne!(after[2], before[2]);
    node.shutdown("test");
    node.wait().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_crash_loop_escalates_through_a_nested_supervisor_to_the_root() {
    init_tracing();
    let inner = SupervisorSpec::new("inner")
        .intensity(2, Duration::from_secs(10))
        .child(testchild("loop", &["exit", "5"]).backoff(bottle_runtime::backoff::Backoff::ZERO));
    let spec = SupervisorSpec::new("root")
        .intensity(1, Duration::from_secs(10))
        .child(testchild("bystander", &["sleep", "60"]))
        .child(ChildSpec::new("inner", ChildStart::Supervisor(inner)));
    let recorder = Recorder::default();
    let exit = Node::run(spec, test_config(&Captured::default(), &recorder, 31)).await.unwrap();
    // inner: 3 starts of loop (2 restarts allowed), then escalates; root restarts
    // inner once (1 allowed), inner escalates again, root escalates: 194.
    assert_eq!(exit.code, 194, "{}", exit.report.to_json());
    assert_eq!(
        exit.report.cause,
        TreeCause::IntensityExceeded { child: "root/inner".into(), readiness_timeout: false }
    );
    assert_eq!(recorder.starts_of("root/inner"), 2);
    assert_eq!(recorder.starts_of("root/inner/loop"), 6);
    assert_eq!(exit.report.first_crash.unwrap().child, "root/inner/loop");
    assert!(bottle_tests::my_children().is_empty());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn actor_children_panic_and_are_restarted_under_the_same_policy() {
    init_tracing();
    let factory = WorkerFactory::default();
    let spec = SupervisorSpec::new("root")
        .intensity(3, Duration::from_secs(10))
        .child(
            ChildSpec::new("worker", ChildStart::Actor(Arc::new(factory.clone())))
                .backoff(bottle_runtime::backoff::Backoff::ZERO),
        )
        .child(testchild("proc", &["sleep", "60"]));
    let recorder = Recorder::default();
    let node = Node::start(spec, test_config(&Captured::default(), &recorder, 32)).await.unwrap();
    node.wait_root(Duration::from_secs(5)).await.unwrap();
    for round in 1..=3u32 {
        node.inject("worker", Fault::Panic).await.unwrap();
        assert!(
            eventually(Duration::from_secs(5), || factory.starts.load(Ordering::SeqCst)
                == round + 1)
            .await
        );
        wait_all_running(&node).await;
    }
    // The fourth panic in the window exceeds max_restarts = 3.
    node.inject("worker", Fault::Panic).await.unwrap();
    let exit = node.wait().await;
    assert_eq!(exit.code, 194);
    let worker = &exit.report.supervisors[0].children[0];
    assert_eq!(worker.restarts, 3);
    assert!(worker.last.iter().all(|h| h.what.contains("worker boom")), "{:?}", worker.last);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_panicking_process_actor_does_not_leak_its_process() {
    init_tracing();
    let spec = SupervisorSpec::new("root")
        .intensity(3, Duration::from_secs(10))
        .child(testchild("p", &["sleep", "60"]).backoff(bottle_runtime::backoff::Backoff::ZERO));
    let recorder = Recorder::default();
    let node = Node::start(spec, test_config(&Captured::default(), &recorder, 33)).await.unwrap();
    node.wait_root(Duration::from_secs(5)).await.unwrap();
    let old = status(&node).await[0].pid.unwrap();
    node.inject("p", Fault::Panic).await.unwrap();
    assert!(eventually(Duration::from_secs(5), || recorder.starts_of("root/p") == 2).await);
    assert!(
        eventually(Duration::from_secs(5), || !std::path::Path::new(&format!("/proc/{old}"))
            .exists())
        .await,
        "old process survived its actor"
    );
    node.shutdown("test");
    let exit = node.wait().await;
    assert_eq!(exit.code, 197, "an actor crash decides the code: {}", exit.report.to_json());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_panicking_nested_supervisor_takes_its_subtree_down_and_is_restarted() {
    init_tracing();
    let inner = SupervisorSpec::new("inner").child(testchild("x", &["sleep", "60"]));
    let spec = SupervisorSpec::new("root").intensity(3, Duration::from_secs(10)).child(
        ChildSpec::new("inner", ChildStart::Supervisor(inner))
            .backoff(bottle_runtime::backoff::Backoff::ZERO),
    );
    let recorder = Recorder::default();
    let node = Node::start(spec, test_config(&Captured::default(), &recorder, 34)).await.unwrap();
    node.wait_root(Duration::from_secs(5)).await.unwrap();
    let old = status(&node).await[0].children.clone().unwrap()[0].pid.unwrap();
    node.inject("inner", Fault::Panic).await.unwrap();
    assert!(eventually(Duration::from_secs(5), || recorder.starts_of("root/inner/x") == 2).await);
    assert!(
        eventually(Duration::from_secs(5), || !std::path::Path::new(&format!("/proc/{old}"))
            .exists())
        .await
    );
    node.shutdown("test");
    node.wait().await;
    assert!(bottle_tests::my_children().is_empty());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn operator_restart_replaces_a_child_without_counting_a_crash() {
    init_tracing();
    let recorder = Recorder::default();
    let node = tree(Strategy::OneForOne, &recorder).await;
    let before = pids(&status(&node).await);
    node.restart_child("a").await.unwrap();
    let after = pids(&status(&node).await);
    assert_ne!(after[0], before[0]);
    assert_eq!(
        node.restart_child("nope").await,
        Err(bottle_runtime::ControlError::NoSuchChild { path: "root/nope".into() })
    );
    node.shutdown("test");
    let exit = node.wait().await;
    assert_eq!(exit.code, 0, "an operator restart is not a crash");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn exec_failure_injected_once_is_retried_and_recovers() {
    init_tracing();
    let recorder = Recorder::default();
    let node = tree(Strategy::OneForOne, &recorder).await;
    node.inject("c", Fault::FailNextExec).await.unwrap();
    node.inject("c", Fault::Signal(libc::SIGKILL)).await.unwrap();
    // start 2 fails at exec, start 3 works
    assert!(eventually(Duration::from_secs(5), || recorder.starts_of("root/c") == 2).await);
    wait_all_running(&node).await;
    node.shutdown("test");
    let exit = node.wait().await;
    let c = &exit.report.supervisors[0].children[2];
    assert!(c.last.iter().any(|h| h.what.contains("program not found")), "{:?}", c.last);
}
