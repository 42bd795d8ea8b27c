//! SIGTERM to the process becomes a message to the node: graceful shutdown, exit 0,
//! the reason recorded in the report. One scenario per file: signals are process-wide.

use std::time::Duration;

use bottle_runtime::Node;
use bottle_runtime::spec::SupervisorSpec;
use bottle_tests::{Captured, Recorder, init_tracing, my_children, test_config, testchild};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_stops_the_tree_gracefully_with_exit_zero() {
    init_tracing();
    let spec = SupervisorSpec::new("root")
        .child(testchild("a", &["sleep", "60"]))
        .child(testchild("b", &["sleep", "60"]));
    let node = Node::start(spec, test_config(&Captured::default(), &Recorder::default(), 40))
        .await
        .unwrap();
    node.wait_root(Duration::from_secs(5)).await.unwrap();
    nix::sys::signal::raise(nix::sys::signal::Signal::SIGTERM).unwrap();
    let exit =
        tokio::time::timeout(Duration::from_secs(10), node.wait()).await.expect("tree ended");
    assert_eq!(exit.code, 0, "{}", exit.report.to_json());
    assert_eq!(exit.report.shutdown_reason.as_deref(), Some("SIGTERM"));
    assert!(my_children().is_empty());
}
