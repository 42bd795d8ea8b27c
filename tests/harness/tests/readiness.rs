//! Readiness checks with deadlines: TCP, unix socket, s6 notify fd, sd_notify; a child
//! that never becomes ready is killed and, past the restart budget, ends the tree
//! with the readiness-timeout code; start order waits for readiness.

use std::net::TcpListener;
use std::time::{Duration, Instant};

use bottle_runtime::exit::TreeCause;
use bottle_runtime::spec::{ChildSpec, ChildStart, ProcessSpec, Readiness, SupervisorSpec};
use bottle_runtime::{Node, TreeEvent};
use bottle_tests::{Captured, Recorder, init_tracing, test_config, testchild, testchild_path};

fn with_readiness(mut child: ChildSpec, readiness: Readiness) -> ChildSpec {
    if let ChildStart::Process(p) = &mut child.start {
        p.readiness = readiness;
    }
    child
}

fn free_port() -> std::net::SocketAddr {
    TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap()
}

/// When `path` started, since the tree started.
fn started_at(recorder: &Recorder, path: &str) -> Duration {
    recorder
        .events()
        .into_iter()
        .find_map(|e| match e {
            TreeEvent::Started { path: p, at, .. } if p == path => Some(at),
            _ => None,
        })
        .unwrap_or_else(|| panic!("{path} never started"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn each_readiness_kind_gates_the_next_child() {
    init_tracing();
    let addr = free_port();
    let sock = std::env::temp_dir().join(format!("bottle-ready-{}.sock", std::process::id()));
    let _ = std::fs::remove_file(&sock);
    let deadline = Duration::from_secs(5);
    let spec = SupervisorSpec::new("root")
        .child(with_readiness(
            testchild("tcp", &["tcp", &addr.to_string(), "300"]),
            Readiness::Tcp { addr, deadline },
        ))
        .child(with_readiness(
            testchild("unix", &["unix", sock.to_str().unwrap(), "300"]),
            Readiness::Unix { path: sock.clone(), deadline },
        ))
        .child(with_readiness(
            testchild("fd", &["notify-fd", "5", "300"]),
            Readiness::NotifyFd { fd: 5, deadline },
        ))
        .child(with_readiness(
            testchild("sd", &["sd-notify", "300"]),
            Readiness::SdNotify { deadline },
        ))
        .child(testchild("last", &["sleep", "60"]));
    let recorder = Recorder::default();
    let t0 = Instant::now();
    let node = Node::start(spec, test_config(&Captured::default(), &recorder, 10)).await.unwrap();
    node.wait_root(Duration::from_secs(20)).await.unwrap();
    let times: Vec<Duration> = ["root/tcp", "root/unix", "root/fd", "root/sd", "root/last"]
        .iter()
        .map(|p| started_at(&recorder, p))
        .collect();
    // Each checked child is ready only after its 300 ms delay, and the next one
    // starts only after that.
    for (i, pair) in times.windows(2).take(3).enumerate() {
        assert!(
            pair[1] - pair[0] >= Duration::from_millis(250),
            "child {} gated too early: {:?}",
            i + 1,
            pair[1] - pair[0]
        );
    }
    assert!(node.started_at() + times[0] - t0 >= Duration::from_millis(250));
    node.shutdown("test");
    assert_eq!(node.wait().await.code, 0);
    let _ = std::fs::remove_file(&sock);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn never_ready_is_killed_and_ends_the_tree_with_the_readiness_code() {
    init_tracing();
    let deadline = Duration::from_millis(300);
    let child = with_readiness(
        testchild("mute", &["sleep", "60"]),
        Readiness::Tcp { addr: free_port(), deadline },
    )
    .backoff(bottle_runtime::backoff::Backoff::ZERO);
    let spec = SupervisorSpec::new("root").intensity(1, Duration::from_secs(30)).child(child);
    let t0 = Instant::now();
    let exit =
        Node::run(spec, test_config(&Captured::default(), &Recorder::default(), 11)).await.unwrap();
    assert_eq!(exit.code, 195, "{}", exit.report.to_json());
    assert!(matches!(
        exit.report.cause,
        TreeCause::IntensityExceeded { readiness_timeout: true, .. }
    ));
    // two attempts (one restart allowed), each cut at the deadline
    assert!(t0.elapsed() >= deadline * 2);
    let last = &exit.report.supervisors[0].children[0].last;
    assert_eq!(last.len(), 2);
    assert!(last.iter().all(|h| h.what.contains("not ready after")), "{last:?}");
    assert!(bottle_tests::my_children().is_empty());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_child_that_exits_before_ready_reports_its_exit() {
    init_tracing();
    let child = ChildSpec::new(
        "quitter",
        ChildStart::Process(ProcessSpec {
            readiness: Readiness::SdNotify { deadline: Duration::from_secs(10) },
            ..ProcessSpec::new([testchild_path(), "exit".into(), "9".into()])
        }),
    )
    .restart(bottle_runtime::policy::RestartType::Temporary)
    .significant(true);
    let t0 = Instant::now();
    let exit = Node::run(
        SupervisorSpec::new("root").child(child),
        test_config(&Captured::default(), &Recorder::default(), 12),
    )
    .await
    .unwrap();
    assert_eq!(exit.code, 9);
    assert!(t0.elapsed() < Duration::from_secs(5), "waited for the deadline instead of the exit");
}
