//! A second SIGTERM does not reset the grace deadline; a third kills at once.

use std::time::{Duration, Instant};

use bottle_tests::init_tracing;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_third_termination_signal_kills_everything_at_once() {
    init_tracing();
    let node = bottle_tests::stubborn_node(Duration::from_secs(30), 41).await;
    let t0 = Instant::now();
    for signal in [
        nix::sys::signal::Signal::SIGTERM,
        nix::sys::signal::Signal::SIGINT,
        nix::sys::signal::Signal::SIGTERM,
    ] {
        nix::sys::signal::raise(signal).unwrap();
        // Separate deliveries: identical pending signals would coalesce into one.
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let exit =
        tokio::time::timeout(Duration::from_secs(10), node.wait()).await.expect("tree ended");
    assert!(t0.elapsed() < Duration::from_secs(3), "took {:?}", t0.elapsed());
    assert_eq!(
        exit.code,
        0,
        "killed by our own escalation counts as clean: {}",
        exit.report.to_json()
    );
}
