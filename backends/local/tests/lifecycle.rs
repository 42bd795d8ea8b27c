//! Exit codes, signal forwarding and teardown: killing the helper leaves nothing behind.
mod common;

use std::io::BufRead;
use std::time::Duration;

use bottle_proc::ExitStatus;

#[tokio::test]
async fn agent_crash_maps_to_128_plus_signal() {
    let reaper = common::reaper();
    let workspace = common::TempDir::new("crash");
    let segv = common::run(&reaper, &common::shell("kill -SEGV $$", &workspace)).await;
    assert_eq!(segv.status, ExitStatus::Exited(128 + libc::SIGSEGV), "{segv:?}");
    let killed = common::run(&reaper, &common::shell("kill -KILL $$", &workspace)).await;
    assert_eq!(killed.status, ExitStatus::Exited(128 + libc::SIGKILL), "{killed:?}");
}

#[tokio::test]
async fn exec_failure_is_a_refusal_naming_the_program() {
    let reaper = common::reaper();
    let workspace = common::TempDir::new("noexec");
    let mut spec = common::shell("", &workspace);
    spec.argv = vec!["no-such-agent-binary".into()];
    let err = common::backend().start(&spec, &reaper).await.expect_err("nothing to exec");
    let text = err.to_string();
    assert!(
        text.contains("executing the agent (no-such-agent-binary): No such file or directory"),
        "{text}"
    );
}

#[tokio::test]
async fn sigterm_to_the_sandbox_reaches_the_agent() {
    let reaper = common::reaper();
    let workspace = common::TempDir::new("term");
    let script = "trap 'echo got-term; exit 3' TERM; echo ready; while :; do sleep 0.05; done";
    let mut started =
        common::backend().start(&common::shell(script, &workspace), &reaper).await.expect("start");
    let stdout = started.sandbox.stdout.take().expect("stdout");
    let mut lines = std::io::BufReader::new(std::fs::File::from(stdout));
    let mut first = String::new();
    lines.read_line(&mut first).expect("ready line");
    assert_eq!(first, "ready\n");
    assert!(started.sandbox.signal(&reaper, libc::SIGTERM).expect("signal"));
    let mut rest = String::new();
    lines.read_line(&mut rest).expect("term line");
    assert_eq!(rest, "got-term\n");
    let status = tokio::time::timeout(Duration::from_secs(10), started.sandbox.wait())
        .await
        .expect("ends")
        .expect("status");
    assert_eq!(status, ExitStatus::Exited(3));
}

#[tokio::test]
async fn killing_the_helper_kills_everything_inside() {
    let reaper = common::reaper();
    let workspace = common::TempDir::new("teardown");
    // The agent leaves a grandchild that ignores SIGTERM and SIGHUP.
    let script = "(trap '' TERM HUP; sleep 1000) & sleep 1000 & echo ready; wait";
    let mut started =
        common::backend().start(&common::shell(script, &workspace), &reaper).await.expect("start");
    let stdout = started.sandbox.stdout.take().expect("stdout");
    let mut first = String::new();
    std::io::BufReader::new(std::fs::File::from(stdout)).read_line(&mut first).expect("ready");
    assert_eq!(first, "ready\n");
    let helper = started.sandbox.pid;
    let inside = common::descendants(helper);
    // PID 1, the agent's shell, the subshell and two sleeps.
    assert!(inside.len() >= 4, "{inside:?}");
    assert!(started.sandbox.signal(&reaper, libc::SIGKILL).expect("signal"));
    let status = tokio::time::timeout(Duration::from_secs(10), started.sandbox.wait())
        .await
        .expect("ends")
        .expect("status");
    assert_eq!(status, ExitStatus::Signaled { signal: libc::SIGKILL, core_dumped: false });
    let all_gone = common::wait_until(Duration::from_secs(10), || {
        inside.iter().all(|&pid| !common::running(pid))
    })
    .await;
    assert!(
        all_gone,
        "left running: {:?}",
        inside.iter().filter(|&&pid| common::running(pid)).collect::<Vec<_>>()
    );
}
