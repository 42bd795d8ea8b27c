//! `bottle exec`: a second command in a running sandbox, started by its PID 1 with the
//! agent's confinement; the agent cannot reach the exec socket; the sandbox ends with
//! its agent, and exec'd commands with it.
mod common;

use std::io::BufRead;
use std::os::fd::{AsFd, OwnedFd};
use std::path::PathBuf;
use std::time::Duration;

use bottle_local::{ExecRequest, ExecSession, LocalError, SandboxHandle};
use bottle_proc::ExitStatus;

/// The agent: leaves a file in its /tmp, says ready, runs until /workspace/stop exists.
const AGENT: &str = "echo agent-was-here > /tmp/from-agent; echo ready; while [ ! -e /workspace/stop ]; do sleep 0.05; done";

struct Running {
    sandbox: SandboxHandle,
    socket: PathBuf,
    workspace: common::TempDir,
    _state: common::TempDir,
}

async fn start(reaper: &bottle_proc::Reaper, tag: &str, agent: &str) -> Running {
    let workspace = common::TempDir::new(tag);
    let state = common::TempDir::new(&format!("{tag}-state"));
    let socket = state.0.join("exec.sock");
    let mut spec = common::shell(agent, &workspace);
    spec.hostname = "exec-host".into();
    spec.env.push(("AGENT_VAR".into(), "from-agent-env".into()));
    spec.exec_socket = Some(socket.clone());
    let mut started = common::backend().start(&spec, reaper).await.expect("start");
    let stdout = started.sandbox.stdout.take().expect("stdout");
    let mut first = String::new();
    std::io::BufReader::new(std::fs::File::from(stdout)).read_line(&mut first).expect("ready");
    assert_eq!(first, "ready\n");
    Running { sandbox: started.sandbox, socket, workspace, _state: state }
}

/// Runs `request` with /dev/null in and pipes out; returns (status, stdout, stderr).
async fn exec_collect(
    socket: PathBuf,
    request: ExecRequest,
) -> (Result<ExitStatus, LocalError>, String, String) {
    let (out_read, out_write) = common::pipe();
    let (err_read, err_write) = common::pipe();
    let null: OwnedFd = std::fs::File::open("/dev/null").expect("null").into();
    let status = tokio::task::spawn_blocking(move || {
        bottle_local::exec(&socket, &request, [null.as_fd(), out_write.as_fd(), err_write.as_fd()])
    })
    .await
    .expect("exec thread");
    let (stdout, stderr) =
        tokio::join!(common::read_all(Some(out_read)), common::read_all(Some(err_read)));
    (status, stdout, stderr)
}

async fn stop(running: Running) -> ExitStatus {
    std::fs::write(running.workspace.0.join("stop"), b"").expect("stop file");
    tokio::time::timeout(Duration::from_secs(20), running.sandbox.wait())
        .await
        .expect("ends")
        .expect("status")
}

fn sh(script: &str) -> ExecRequest {
    ExecRequest::new(vec!["sh".into(), "-c".into(), script.into()])
}

#[tokio::test]
async fn exec_shares_the_agents_world_and_confinement_and_returns_its_code() {
    let reaper = common::reaper();
    let running = start(&reaper, "exec-world", AGENT).await;
    let mut request = sh(
        "hostname; cat /tmp/from-agent; grep -E '^(CapEff|Seccomp):' /proc/self/status; echo \"$AGENT_VAR $EXTRA\"; pwd; echo to-stderr >&2; exit 7",
    );
    request.env.push(("EXTRA".into(), "extra-var".into()));
    let (status, stdout, stderr) = exec_collect(running.socket.clone(), request).await;
    assert_eq!(status.expect("status"), ExitStatus::Exited(7), "{stdout} {stderr}");
    assert_eq!(
        stdout,
        "exec-host\nagent-was-here\nCapEff:\t0000000000000000\nSeccomp:\t2\nfrom-agent-env extra-var\n/workspace\n"
    );
    assert_eq!(stderr, "to-stderr\n");
    assert_eq!(stop(running).await, ExitStatus::Exited(0));
}

#[tokio::test]
async fn exec_of_a_missing_program_is_refused_with_the_reason() {
    let reaper = common::reaper();
    let running = start(&reaper, "exec-missing", AGENT).await;
    let (status, _, _) =
        exec_collect(running.socket.clone(), ExecRequest::new(vec!["no-such-program".into()]))
            .await;
    let err = status.expect_err("nothing to exec");
    match &err {
        LocalError::ExecFailed { step, detail, source } => {
            assert_eq!(*step, bottle_local::wire::Step::Exec);
            assert_eq!(detail, "no-such-program");
            assert_eq!(source.raw_os_error(), Some(libc::ENOENT), "{err}");
        }
        other => panic!("wrong error: {other:?}"),
    }
    let mut in_dir = sh("true");
    in_dir.cwd = Some("/no/such/dir".into());
    let (status, _, _) = exec_collect(running.socket.clone(), in_dir).await;
    let text = status.expect_err("no such cwd").to_string();
    assert!(text.contains("entering the working directory (/no/such/dir)"), "{text}");
    assert_eq!(stop(running).await, ExitStatus::Exited(0));
}

#[tokio::test]
async fn the_agent_cannot_reach_the_exec_socket_or_pid_one_s_fds() {
    let reaper = common::reaper();
    let workspace = common::TempDir::new("exec-reach");
    let state = common::TempDir::new("exec-reach-state");
    let socket = state.0.join("exec.sock");
    let script = format!(
        r#"
import errno, os, socket, time
def fds():
    seen = []
    for name in os.listdir('/proc/self/fd'):
        try:
            os.readlink('/proc/self/fd/' + name)
            seen.append(int(name))
        except OSError:
            pass
    return sorted(seen)
def attempt(action):
    try:
        action()
        return 'reached'
    except OSError as e:
        return errno.errorcode[e.errno]
print('agent fds', fds())
s = socket.socket(socket.AF_UNIX, socket.SOCK_SEQPACKET)
print('connect', attempt(lambda: s.connect('{path}')))
print('pid1 fds', attempt(lambda: [os.readlink('/proc/1/fd/' + n) for n in os.listdir('/proc/1/fd')]))
print('pid1 mem', attempt(lambda: open('/proc/1/mem', 'rb')))
print('ready', flush=True)
while not os.path.exists('/workspace/stop'):
    time.sleep(0.05)
"#,
        path = socket.display()
    );
    let mut spec = common::python(&script, &workspace);
    spec.exec_socket = Some(socket.clone());
    let mut started = common::backend().start(&spec, &reaper).await.expect("start");
    let output = common::Collector::new(started.sandbox.stdout.take().expect("stdout"));
    let text = output.wait_for("ready\n", Duration::from_secs(20)).await;
    assert_eq!(
        text,
        "agent fds [0, 1, 2]\nconnect ENOENT\npid1 fds EACCES\npid1 mem EACCES\nready\n"
    );
    // Control: the socket is there on the host and works; the exec'd command sees only
    // its own three fds, too.
    assert!(socket.exists());
    let fds_script = "import os\nprint(sorted(int(n) for n in os.listdir('/proc/self/fd') if os.path.exists('/proc/self/fd/' + n)))";
    let request = ExecRequest::new(vec!["python3".into(), "-c".into(), fds_script.into()]);
    let (status, stdout, stderr) = exec_collect(socket.clone(), request).await;
    assert_eq!(status.expect("status"), ExitStatus::Exited(0), "{stderr}");
    assert_eq!(stdout, "[0, 1, 2]\n");
    std::fs::write(workspace.0.join("stop"), b"").expect("stop");
    let status = tokio::time::timeout(Duration::from_secs(20), started.sandbox.wait())
        .await
        .expect("ends")
        .expect("status");
    assert_eq!(status, ExitStatus::Exited(0));
    assert!(!socket.exists(), "the socket file goes with the sandbox");
}

#[tokio::test]
async fn a_signal_from_the_client_reaches_the_command() {
    let reaper = common::reaper();
    let running = start(&reaper, "exec-signal", AGENT).await;
    let (out_read, out_write) = common::pipe();
    let null: OwnedFd = std::fs::File::open("/dev/null").expect("null").into();
    let request = sh("trap 'echo got-term; exit 9' TERM; echo ready; while :; do sleep 0.05; done");
    let socket = running.socket.clone();
    let session = tokio::task::spawn_blocking(move || {
        ExecSession::start(&socket, &request, [null.as_fd(), out_write.as_fd(), out_write.as_fd()])
    })
    .await
    .expect("thread")
    .expect("started");
    assert!(session.pid() > 2, "a pid inside the sandbox: {}", session.pid());
    let output = common::Collector::new(out_read);
    output.wait_for("ready\n", Duration::from_secs(20)).await;
    session.signal(libc::SIGTERM).expect("signal");
    let status = tokio::task::spawn_blocking(move || session.wait()).await.expect("thread");
    assert_eq!(status.expect("status"), ExitStatus::Exited(9));
    output.wait_for("got-term\n", Duration::from_secs(5)).await;
    assert_eq!(stop(running).await, ExitStatus::Exited(0));
}

#[tokio::test]
async fn when_the_agent_exits_exec_commands_die_and_nothing_is_left() {
    let reaper = common::reaper();
    let running = start(&reaper, "exec-end", AGENT).await;
    let (out_read, out_write) = common::pipe();
    let null: OwnedFd = std::fs::File::open("/dev/null").expect("null").into();
    // The command ignores SIGTERM and SIGHUP and leaves a child of its own.
    let request = sh("trap '' TERM HUP; sleep 1000 & echo ready; wait");
    let socket = running.socket.clone();
    let session = tokio::task::spawn_blocking(move || {
        ExecSession::start(&socket, &request, [null.as_fd(), out_write.as_fd(), out_write.as_fd()])
    })
    .await
    .expect("thread")
    .expect("started");
    common::Collector::new(out_read).wait_for("ready\n", Duration::from_secs(20)).await;
    let helper = running.sandbox.pid;
    let mut family = common::descendants(helper);
    family.push(helper);
    // Helper, PID 1, the agent's shell (and its sleep), the command's shell and its sleep.
    assert!(family.len() >= 5, "{family:?}");
    let waiter = tokio::task::spawn_blocking(move || session.wait());
    let status = stop(running).await;
    assert_eq!(status, ExitStatus::Exited(0));
    let command = waiter.await.expect("thread").expect("status");
    assert_eq!(command, ExitStatus::Signaled { signal: libc::SIGKILL, core_dumped: false });
    let gone = common::wait_until(Duration::from_secs(10), || {
        family.iter().all(|&pid| !common::running(pid))
    })
    .await;
    assert!(gone, "left: {:?}", family.iter().filter(|&&p| common::running(p)).collect::<Vec<_>>());
}

#[tokio::test]
async fn exec_without_a_sandbox_names_the_socket() {
    let state = common::TempDir::new("exec-none");
    let socket = state.0.join("exec.sock");
    let null: OwnedFd = std::fs::File::open("/dev/null").expect("null").into();
    let err = bottle_local::exec(&socket, &sh("true"), [null.as_fd(), null.as_fd(), null.as_fd()])
        .expect_err("nobody listens");
    match &err {
        LocalError::ExecUnreachable { socket: named, source } => {
            assert_eq!(named, &socket);
            assert_eq!(source.raw_os_error(), Some(libc::ENOENT));
        }
        other => panic!("wrong error: {other:?}"),
    }
}
