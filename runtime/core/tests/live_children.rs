//! Children added to and removed from a running supervisor: an added process starts in
//! its place and shows in status, a removed one is stopped and its process is gone, the
//! same restart policy covers added children, and a duplicate name is refused.
//! Each test runs in its own process under nextest (the reaper and signals are global).

use std::time::Duration;

use bottle_runtime::policy::Strategy;
use bottle_runtime::spec::{ChildSpec, ChildStart, ProcessSpec, SupervisorSpec};
use bottle_runtime::{ControlError, Node, NodeConfig, NodeHandle, TreeEvent};
use tokio::sync::broadcast;

const WAIT: Duration = Duration::from_secs(10);

fn sleeper(name: &str, seconds: &str) -> ChildSpec {
    ChildSpec::new(name, ChildStart::Process(ProcessSpec::new(["/bin/sleep", seconds])))
        .stop_timeout(Duration::from_secs(2))
        .backoff(bottle_runtime::backoff::Backoff::ZERO)
}

async fn start(spec: SupervisorSpec) -> NodeHandle {
    let config =
        NodeConfig { sink: std::sync::Arc::new(|_: &str, _: &[u8]| {}), ..NodeConfig::default() };
    let node = Node::start(spec, config).await.expect("node");
    node.wait_root(WAIT).await.expect("root up");
    node
}

/// The next event that `pick` accepts, within [`WAIT`].
async fn next_matching<T>(
    events: &mut broadcast::Receiver<TreeEvent>,
    mut pick: impl FnMut(&TreeEvent) -> Option<T>,
) -> T {
    tokio::time::timeout(WAIT, async {
        loop {
            let event = events.recv().await.expect("event stream");
            if let Some(found) = pick(&event) {
                return found;
            }
        }
    })
    .await
    .expect("event in time")
}

async fn pid_of(node: &NodeHandle, name: &str) -> Option<i32> {
    let status = node.status().await.expect("status");
    status.children.iter().find(|c| c.name == name).and_then(|c| c.pid)
}

fn alive(pid: i32) -> bool {
    std::path::Path::new(&format!("/proc/{pid}")).exists()
}

async fn gone(pid: i32) -> bool {
    let deadline = tokio::time::Instant::now() + WAIT;
    while alive(pid) {
        if tokio::time::Instant::now() >= deadline {
            return false;
        }
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    true
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_added_process_starts_shows_in_status_and_is_gone_once_removed() {
    let node = start(SupervisorSpec::new("root").child(sleeper("a", "600"))).await;
    let mut events = node.subscribe();
    node.add_child(sleeper("b", "601"), None).await.expect("added");
    assert_eq!(
        next_matching(&mut events, |e| match e {
            TreeEvent::Added { path, index, .. } => Some((path.clone(), *index)),
            _ => None,
        })
        .await,
        ("root/b".to_string(), 1)
    );
    let started_pid = next_matching(&mut events, |e| match e {
        TreeEvent::Started { path, pid, .. } if path == "root/b" => Some(*pid),
        _ => None,
    })
    .await;
    let status = node.status().await.expect("status");
    let names: Vec<&str> = status.children.iter().map(|c| c.name.as_str()).collect();
    assert_eq!(names, ["a", "b"]);
    assert!(status.children[1].running);
    let pid = status.children[1].pid.expect("pid of b");
    assert_eq!(started_pid, Some(pid));
    assert!(alive(pid));

    node.remove_child("b").await.expect("removed");
    assert!(gone(pid).await, "the removed child's process {pid} is still there");
    let status = node.status().await.expect("status");
    assert_eq!(status.children.len(), 1, "{status:?}");
    assert_eq!(
        next_matching(&mut events, |e| match e {
            TreeEvent::Stopping { path, .. } => Some(format!("stopping {path}")),
            _ => None,
        })
        .await,
        "stopping root/b"
    );
    next_matching(&mut events, |e| {
        matches!(e, TreeEvent::Removed { path, .. } if path == "root/b").then_some(())
    })
    .await;

    // Removing it again names what is missing.
    assert_eq!(
        node.remove_child("b").await,
        Err(ControlError::NoSuchChild { path: "root/b".into() })
    );
    node.shutdown("test");
    assert_eq!(node.wait().await.code, 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_crash_of_an_added_child_is_restarted_by_the_same_policy() {
    let node = start(SupervisorSpec::new("root").intensity(5, Duration::from_secs(10))).await;
    let mut events = node.subscribe();
    node.add_child(sleeper("late", "600"), None).await.expect("added");
    let first = pid_of(&node, "late").await.expect("pid");
    // SIGKILL from outside the tree (through the reaper, which checks the pid is ours).
    assert!(node.reaper().signal_group(first, libc::SIGKILL).expect("kill"));
    let class = next_matching(&mut events, |e| match e {
        TreeEvent::Exited { path, class, .. } if path == "root/late" => Some(*class),
        _ => None,
    })
    .await;
    assert_eq!(class, bottle_runtime::exit::ExitClass::Crash);
    let attempt = next_matching(&mut events, |e| match e {
        TreeEvent::Restarting { path, attempt, .. } if path == "root/late" => Some(*attempt),
        _ => None,
    })
    .await;
    assert_eq!(attempt, 1);
    let second = next_matching(&mut events, |e| match e {
        TreeEvent::Started { path, pid, .. } if path == "root/late" => *pid,
        _ => None,
    })
    .await;
    assert_ne!(first, second);
    assert!(gone(first).await);
    node.shutdown("test");
    // Crash-then-shutdown keeps the crash's code: the added child counts like any other.
    assert_eq!(node.wait().await.code, 128 + 9);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_duplicate_name_is_refused_and_nothing_starts() {
    let node = start(SupervisorSpec::new("root").child(sleeper("a", "600"))).await;
    let before = pid_of(&node, "a").await.expect("pid");
    assert_eq!(
        node.add_child(sleeper("a", "601"), None).await,
        Err(ControlError::DuplicateName { path: "root/a".into() })
    );
    let bad = ChildSpec::new("b", ChildStart::Process(ProcessSpec::new(Vec::<String>::new())));
    match node.add_child(bad, None).await {
        Err(ControlError::InvalidSpec(bottle_runtime::spec::ConfigError::Child {
            child,
            problem,
        })) => {
            assert_eq!(child, "b");
            assert!(problem.contains("argv"), "{problem}");
        }
        other => panic!("an empty argv was not refused as invalid: {other:?}"),
    }
    assert_eq!(
        node.add_child(sleeper("c", "600"), Some(5)).await,
        Err(ControlError::BadIndex { supervisor: "root".into(), index: 5, len: 1 })
    );
    let status = node.status().await.expect("status");
    assert_eq!(status.children.len(), 1);
    assert_eq!(status.children[0].pid, Some(before), "the running child was touched");
    node.shutdown("test");
    assert_eq!(node.wait().await.code, 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rest_for_one_and_shutdown_order_follow_the_new_child_order() {
    let spec = SupervisorSpec::new("root")
        .strategy(Strategy::RestForOne)
        .intensity(5, Duration::from_secs(10))
        .child(sleeper("a", "600"))
        .child(sleeper("c", "600"));
    let node = start(spec).await;
    let mut events = node.subscribe();
    node.add_child(sleeper("b", "600"), Some(1)).await.expect("added in the middle");
    let status = node.status().await.expect("status");
    let names: Vec<&str> = status.children.iter().map(|c| c.name.as_str()).collect();
    assert_eq!(names, ["a", "b", "c"]);

    // a crashes: b (added) and c restart after it, stopped in reverse order first.
    let a = pid_of(&node, "a").await.expect("pid");
    assert!(node.reaper().signal_group(a, libc::SIGKILL).expect("kill"));
    let (stop, start) = next_matching(&mut events, |e| match e {
        TreeEvent::Restarting { path, stop, start, .. } if path == "root/a" => {
            Some((stop.clone(), start.clone()))
        }
        _ => None,
    })
    .await;
    assert_eq!(stop, ["root/c", "root/b"]);
    assert_eq!(start, ["root/a", "root/b", "root/c"]);
    next_matching(&mut events, |e| {
        matches!(e, TreeEvent::Started { path, .. } if path == "root/c").then_some(())
    })
    .await;

    // Shutdown stops every child in reverse order, the added one included.
    node.shutdown("test");
    let mut stopped = Vec::new();
    while stopped.len() < 3 {
        stopped.push(
            next_matching(&mut events, |e| match e {
                TreeEvent::Stopped { path, .. } => Some(path.clone()),
                _ => None,
            })
            .await,
        );
    }
    assert_eq!(stopped, ["root/c", "root/b", "root/a"]);
    let code = next_matching(&mut events, |e| match e {
        TreeEvent::NodeExited { code, .. } => Some(*code),
        _ => None,
    })
    .await;
    assert_eq!(code, 128 + 9);
    assert_eq!(node.wait().await.code, 128 + 9);
}
