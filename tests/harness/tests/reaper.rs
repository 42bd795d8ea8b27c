//! The single reaper: orphans re-parented to us are reaped, no supervised status is
//! ever lost when many children die at once, and nobody else waits.

use std::time::Duration;

use bottle_runtime::policy::RestartType;
use bottle_runtime::spec::SupervisorSpec;
use bottle_runtime::{Node, TreeEvent};
use bottle_tests::{
    Captured, Recorder, eventually, init_tracing, my_children, my_zombies, shell, test_config,
    testchild,
};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn double_forked_grandchildren_are_all_reaped() {
    init_tracing();
    // Each run leaves 5 orphans that outlive their parent and get re-parented to us
    // (we are a child subreaper).
    let script = "for i in 1 2 3 4 5; do (sleep 0.3 &) ; done; exit 0";
    let spec = SupervisorSpec::new("root")
        .intensity(10, Duration::from_secs(5))
        .child(shell("forker", script).restart(RestartType::Transient));
    let node = Node::start(spec, test_config(&Captured::default(), &Recorder::default(), 6))
        .await
        .unwrap();
    let reaper = node.reaper().clone();
    assert!(
        eventually(Duration::from_secs(5), || reaper.orphans_reaped() >= 5).await,
        "orphans reaped: {}",
        reaper.orphans_reaped()
    );
    assert!(
        eventually(Duration::from_secs(2), || my_zombies().is_empty() && my_children().is_empty())
            .await
    );
    node.shutdown("test");
    let exit = node.wait().await;
    assert_eq!(exit.code, 0);
    assert!(exit.report.orphans_reaped >= 5);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn no_status_is_lost_when_fifty_children_die_at_once() {
    init_tracing();
    let mut spec = SupervisorSpec::new("root").intensity(100, Duration::from_secs(5));
    let dir = std::env::temp_dir().join(format!("bottle-burst-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let go = dir.join("go");
    for i in 0..50 {
        // All wait for the same file, then exit together with distinct codes.
        let script =
            format!("while [ ! -e {} ]; do sleep 0.01; done; exit {}", go.display(), i + 1);
        spec = spec.child(shell(&format!("c{i}"), &script).restart(RestartType::Temporary));
    }
    let recorder = Recorder::default();
    let node = Node::start(spec, test_config(&Captured::default(), &recorder, 7)).await.unwrap();
    node.wait_root(Duration::from_secs(10)).await.unwrap();
    std::fs::write(&go, "").unwrap();
    let exits =
        || recorder.events().iter().filter(|e| matches!(e, TreeEvent::Exited { .. })).count();
    assert!(
        eventually(Duration::from_secs(10), || exits() == 50).await,
        "only {} exits seen",
        exits()
    );
    node.shutdown("test");
    let exit = node.wait().await;
    std::fs::remove_dir_all(&dir).unwrap();
    for (i, child) in exit.report.supervisors[0].children.iter().enumerate() {
        assert_eq!(child.last.len(), 1, "{}", child.name);
        assert_eq!(child.last[0].code, i as i32 + 1, "{} lost or misfiled its status", child.name);
    }
    assert!(my_zombies().is_empty());
}

#[test]
fn a_second_reaper_in_one_process_is_refused() {
    let first = bottle_runtime::process_reaper().expect("first");
    let again = bottle_runtime::process_reaper().expect("the same reaper again");
    drop((first, again));
    assert!(matches!(
        bottle_runtime::proc::Reaper::install(false),
        Err(bottle_runtime::proc::ReaperError::AlreadyInstalled)
    ));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_child_stopped_with_the_tree_leaves_no_process_behind() {
    init_tracing();
    let spec = SupervisorSpec::new("root")
        .child(testchild("a", &["sleep", "60"]))
        .child(shell("b", "sleep 60 & sleep 60 & wait"));
    let node = Node::start(spec, test_config(&Captured::default(), &Recorder::default(), 8))
        .await
        .unwrap();
    node.wait_root(Duration::from_secs(5)).await.unwrap();
    assert!(eventually(Duration::from_secs(2), || my_children().len() == 2).await);
    node.shutdown("test");
    node.wait().await;
    // b's own children were in b's process group: SIGTERM reached them too.
    assert!(
        eventually(Duration::from_secs(3), || my_children().is_empty() && my_zombies().is_empty())
            .await,
        "left: {:?}",
        my_children()
    );
}
