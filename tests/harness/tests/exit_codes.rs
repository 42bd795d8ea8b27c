//! Exit-code sweep and signal exits through a real node: every code 0..=255 of a
//! significant temporary child becomes the tree's code (docs/exit-codes.md), signals
//! map to 128+N unless we sent them while stopping, exec failures to 127/126.

use std::time::Duration;

use bottle_runtime::exit::{ExitClass, TreeCause};
use bottle_runtime::policy::RestartType;
use bottle_runtime::spec::SupervisorSpec;
use bottle_runtime::{Node, NodeExit};
use bottle_tests::{Captured, Recorder, init_tracing, shell, test_config, testchild};

async fn run_one(child: bottle_runtime::spec::ChildSpec) -> NodeExit {
    let spec = SupervisorSpec::new("root")
        .intensity(10, Duration::from_secs(1))
        .child(child.restart(RestartType::Temporary).significant(true));
    Node::run(spec, test_config(&Captured::default(), &Recorder::default(), 1)).await.expect("node")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_exit_code_of_a_significant_child_becomes_the_tree_exit_code() {
    init_tracing();
    for code in 0..=255 {
        let exit = run_one(testchild("c", &["exit", &code.to_string()])).await;
        assert_eq!(exit.code, code, "child exit {code}: report {}", exit.report.to_json());
        match exit.report.cause {
            TreeCause::SignificantChildExited { clean, code: c, .. } => {
                assert_eq!(clean, code == 0);
                assert_eq!(c, code);
            }
            other => panic!("code {code}: unexpected cause {other:?}"),
        }
        let class = &exit.report.supervisors[0].children[0].last[0].class;
        let expected = match code {
            0 => ExitClass::Clean,
            78 => ExitClass::Permanent,
            _ => ExitClass::Crash,
        };
        assert_eq!(*class, expected, "code {code}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_child_killed_by_a_signal_we_did_not_send_gives_128_plus_n() {
    init_tracing();
    for signal in [
        libc::SIGTERM,
        libc::SIGHUP,
        libc::SIGQUIT,
        libc::SIGKILL,
        libc::SIGSEGV,
        libc::SIGINT,
        libc::SIGUSR1,
    ] {
        let script = format!("kill -{signal} $$; sleep 5");
        let exit = run_one(shell("s", &script)).await;
        assert_eq!(exit.code, 128 + signal, "signal {signal}: {}", exit.report.to_json());
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn exec_failures_are_127_and_126_with_a_clear_reason() {
    init_tracing();
    let missing = run_one(bottle_runtime::spec::ChildSpec::new(
        "m",
        bottle_runtime::spec::ChildStart::Process(bottle_runtime::spec::ProcessSpec::new([
            "/nonexistent/prog",
        ])),
    ))
    .await;
    assert_eq!(missing.code, 127);
    let what = &missing.report.supervisors[0].children[0].last[0].what;
    assert!(what.contains("program not found") && what.contains("/nonexistent/prog"), "{what}");

    let dir = std::env::temp_dir().join(format!("bottle-noexec-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let file = dir.join("not-executable");
    std::fs::write(&file, "#!/bin/sh\nexit 0\n").unwrap();
    let not_exec = run_one(bottle_runtime::spec::ChildSpec::new(
        "n",
        bottle_runtime::spec::ChildStart::Process(bottle_runtime::spec::ProcessSpec::new([
            file.as_os_str()
        ])),
    ))
    .await;
    assert_eq!(not_exec.code, 126);
    let what = &not_exec.report.supervisors[0].children[0].last[0].what;
    assert!(what.contains("not executable"), "{what}");
    std::fs::remove_dir_all(&dir).unwrap();
}
