//! The two-phase start: a held sandbox runs no agent until released, gets the extra
//! environment, sees files written later into a read-only bound directory, and leaves
//! nothing behind when dropped or aborted.
mod common;

use std::time::Duration;

use bottle_local::{AgentStdio, ReadOnlyBind};
use bottle_proc::ExitStatus;

#[tokio::test]
async fn a_held_sandbox_starts_its_agent_only_on_release_with_the_extra_env() {
    let reaper = common::reaper();
    let workspace = common::TempDir::new("held");
    // The sidecar's CA directory: empty when bound, written before the release.
    let ca_dir = common::TempDir::new("held-ca");
    let mut spec = common::shell(
        "cat /etc/bottle-ca/ca.pem; echo \"$PLACEHOLDER $KEEP $REPLACED\"; echo started > /workspace/ran",
        &workspace,
    );
    spec.env.push(("KEEP".into(), "kept".into()));
    spec.env.push(("REPLACED".into(), "old".into()));
    spec.read_only.push(ReadOnlyBind { source: ca_dir.0.clone(), target: "/etc/bottle-ca".into() });
    let (held, _egress) =
        common::backend().start_held(&spec, AgentStdio::Null, &reaper).await.expect("held");
    let helper = held.pid().expect("helper pid");
    // Held: the helper has one descendant (PID 1), and the agent has not run.
    assert_eq!(common::descendants(helper).len(), 1, "only PID 1 while held");
    assert!(!workspace.0.join("ran").exists());
    std::fs::write(ca_dir.0.join("ca.pem"), "-----CA-----\n").expect("write CA");
    let mut sandbox = held
        .release(vec![("PLACEHOLDER".into(), "ph-1".into()), ("REPLACED".into(), "new".into())])
        .await
        .expect("released");
    let stdout = common::read_all(sandbox.stdout.take()).await;
    let status = tokio::time::timeout(Duration::from_secs(20), sandbox.wait())
        .await
        .expect("ends")
        .expect("status");
    assert_eq!(status, ExitStatus::Exited(0), "{stdout}");
    assert_eq!(stdout, "-----CA-----\nph-1 kept new\n");
    assert_eq!(std::fs::read_to_string(workspace.0.join("ran")).expect("ran"), "started\n");
}

#[tokio::test]
async fn dropping_a_held_sandbox_leaves_no_process_and_no_socket() {
    let reaper = common::reaper();
    let workspace = common::TempDir::new("held-drop");
    let state = common::TempDir::new("held-drop-state");
    let socket = state.0.join("exec.sock");
    let mut spec = common::shell("echo never > /workspace/ran", &workspace);
    spec.exec_socket = Some(socket.clone());
    let (held, _egress) =
        common::backend().start_held(&spec, AgentStdio::Null, &reaper).await.expect("held");
    let helper = held.pid().expect("helper pid");
    let mut family = common::descendants(helper);
    family.push(helper);
    assert_eq!(family.len(), 2, "helper and PID 1: {family:?}");
    assert!(socket.exists(), "the exec socket exists while held");
    drop(held);
    let gone = common::wait_until(Duration::from_secs(10), || {
        family.iter().all(|&pid| !common::running(pid))
    })
    .await;
    assert!(gone, "left: {:?}", family.iter().filter(|&&p| common::running(p)).collect::<Vec<_>>());
    assert!(!socket.exists(), "the exec socket file is removed");
    assert!(!workspace.0.join("ran").exists(), "the agent never ran");
}

#[tokio::test]
async fn aborting_a_held_sandbox_reports_the_kill() {
    let reaper = common::reaper();
    let workspace = common::TempDir::new("held-abort");
    let spec = common::shell("echo never > /workspace/ran", &workspace);
    let (held, _egress) =
        common::backend().start_held(&spec, AgentStdio::Null, &reaper).await.expect("held");
    let status = held.abort().await.expect("status");
    assert_eq!(status, ExitStatus::Signaled { signal: libc::SIGKILL, core_dumped: false });
    assert!(!workspace.0.join("ran").exists(), "the agent never ran");
}
