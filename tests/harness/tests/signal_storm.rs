//! A storm of 1000 signals: handlers do no work, deliveries coalesce, nothing
//! deadlocks and the node stays responsive (reference X1).

use std::sync::Arc;
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::Duration;

use bottle_runtime::Node;
use bottle_runtime::signals::SignalKind;
use bottle_runtime::spec::SupervisorSpec;
use bottle_tests::{Captured, Recorder, init_tracing, test_config, testchild};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_thousand_signals_coalesce_without_deadlock() {
    init_tracing();
    let seen = Arc::new(AtomicU32::new(0));
    let counter = seen.clone();
    let spec = SupervisorSpec::new("root").child(testchild("a", &["sleep", "60"]));
    let mut config = test_config(&Captured::default(), &Recorder::default(), 44);
    config.on_signal = Some(Arc::new(move |kind, _root| {
        if kind == SignalKind::Usr1 {
            counter.fetch_add(1, Ordering::SeqCst);
        }
    }));
    let node = Node::start(spec, config).await.unwrap();
    node.wait_root(Duration::from_secs(5)).await.unwrap();
    let me = std::process::id() as i32;
    let storm = std::thread::spawn(move || {
        for _ in 0..1000 {
            bottle_tests::external::signal(me, libc::SIGUSR1);
        }
    });
    storm.join().unwrap();
    assert!(
        bottle_tests::eventually(Duration::from_secs(5), || seen.load(Ordering::SeqCst) > 0).await
    );
    let status =
        tokio::time::timeout(Duration::from_secs(5), node.status()).await.expect("responsive");
    assert!(status.unwrap().children[0].running);
    let n = seen.load(Ordering::SeqCst);
    assert!(n < 1000, "no coalescing: {n} deliveries for 1000 signals");
    node.shutdown("test");
    assert_eq!(node.wait().await.code, 0);
}
