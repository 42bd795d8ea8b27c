//! At the grace deadline every supervised process group is SIGKILLed and the tree
//! still ends with a complete report.

use std::time::{Duration, Instant};

use bottle_tests::init_tracing;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_grace_deadline_bounds_shutdown() {
    init_tracing();
    let node = bottle_tests::stubborn_node(Duration::from_millis(600), 42).await;
    let t0 = Instant::now();
    nix::sys::signal::raise(nix::sys::signal::Signal::SIGTERM).unwrap();
    tokio::time::sleep(Duration::from_millis(100)).await;
    // A second SIGTERM must not push the deadline out.
    nix::sys::signal::raise(nix::sys::signal::Signal::SIGTERM).unwrap();
    let exit =
        tokio::time::timeout(Duration::from_secs(10), node.wait()).await.expect("tree ended");
    let took = t0.elapsed();
    assert!(
        took >= Duration::from_millis(600) && took < Duration::from_millis(1600),
        "took {took:?}"
    );
    assert_eq!(exit.code, 0);
    assert_eq!(exit.report.supervisors[0].children[0].last.len(), 1);
}
