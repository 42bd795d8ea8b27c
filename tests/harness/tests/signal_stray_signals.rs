//! Stray signals never stop or kill the node: each has an explicit disposition.

use std::time::Duration;

use bottle_runtime::Node;
use bottle_runtime::spec::SupervisorSpec;
use bottle_tests::{Captured, Recorder, init_tracing, test_config, testchild};
use nix::sys::signal::Signal;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stray_signals_are_ignored_and_the_tree_keeps_running() {
    init_tracing();
    let spec = SupervisorSpec::new("root").child(testchild("a", &["sleep", "60"]));
    let node = Node::start(spec, test_config(&Captured::default(), &Recorder::default(), 43))
        .await
        .unwrap();
    node.wait_root(Duration::from_secs(5)).await.unwrap();
    let pid = node.status().await.unwrap().children[0].pid;
    for signal in [
        Signal::SIGHUP,
        Signal::SIGUSR1,
        Signal::SIGUSR2,
        Signal::SIGQUIT,
        Signal::SIGALRM,
        Signal::SIGVTALRM,
        Signal::SIGPROF,
        Signal::SIGWINCH,
        Signal::SIGTSTP,
        Signal::SIGTTIN,
        Signal::SIGTTOU,
        Signal::SIGURG,
        Signal::SIGIO,
        Signal::SIGPIPE,
        Signal::SIGPWR,
        Signal::SIGXCPU,
        Signal::SIGXFSZ,
        Signal::SIGCHLD,
    ] {
        nix::sys::signal::raise(signal).unwrap();
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    let status = node.status().await.expect("node still answers");
    assert!(status.children[0].running);
    assert_eq!(status.children[0].pid, pid, "the child was disturbed");
    node.shutdown("test");
    assert_eq!(node.wait().await.code, 0);
}
