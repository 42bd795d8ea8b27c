//! The agent's stdio: inherited fds (a headless run's pipes) and a pty that is its
//! controlling terminal and passes window size changes on.
mod common;

use std::io::Write;
use std::os::fd::AsFd;
use std::time::Duration;

use bottle_local::AgentStdio;
use bottle_proc::ExitStatus;
use bottle_proc::pty::{self, WindowSize};

#[tokio::test]
async fn inherited_pipes_carry_stdin_in_and_output_back() {
    let reaper = common::reaper();
    let workspace = common::TempDir::new("stdio-pipes");
    let (stdin_read, stdin_write) = common::pipe();
    let (stdout_read, stdout_write) = common::pipe();
    let (stderr_read, stderr_write) = common::pipe();
    let spec = common::shell(
        "read line; echo \"got $line\"; if [ -t 0 ]; then echo tty; else echo no-tty; fi; echo oops >&2",
        &workspace,
    );
    let stdio =
        AgentStdio::Inherit { stdin: stdin_read, stdout: stdout_write, stderr: stderr_write };
    let (held, _egress) = common::backend().start_held(&spec, stdio, &reaper).await.expect("held");
    let sandbox = held.release(Vec::new()).await.expect("released");
    let mut stdin = std::fs::File::from(stdin_write);
    stdin.write_all(b"hello from the host\n").expect("write stdin");
    drop(stdin);
    let (stdout, stderr) =
        tokio::join!(common::read_all(Some(stdout_read)), common::read_all(Some(stderr_read)));
    let status = tokio::time::timeout(Duration::from_secs(20), sandbox.wait())
        .await
        .expect("ends")
        .expect("status");
    assert_eq!(status, ExitStatus::Exited(0), "{stdout} {stderr}");
    assert_eq!(stdout, "got hello from the host\nno-tty\n");
    assert_eq!(stderr, "oops\n");
}

#[tokio::test]
async fn a_pty_is_the_agents_controlling_terminal_and_resizes_reach_it() {
    let reaper = common::reaper();
    let workspace = common::TempDir::new("stdio-pty");
    let pair = pty::openpty().expect("pty");
    pty::set_window_size(pair.master.as_fd(), WindowSize { rows: 33, cols: 101 }).expect("size");
    // /dev/tty opens only for a process with a controlling terminal (ENXIO otherwise).
    let script = "python3 -c \"import os; print('isatty', os.isatty(0), os.get_terminal_size(0)); os.open('/dev/tty', os.O_RDWR); print('ctty ok')\"; read x; echo size $(stty size)";
    let spec = common::shell(script, &workspace);
    let (held, _egress) = common::backend()
        .start_held(&spec, AgentStdio::Pty(pair.slave), &reaper)
        .await
        .expect("held");
    let sandbox = held.release(Vec::new()).await.expect("released");
    let master = pair.master;
    let output = common::Collector::new(master.try_clone().expect("dup master"));
    let first = output.wait_for("ctty ok", Duration::from_secs(20)).await;
    assert!(first.contains("isatty True os.terminal_size(columns=101, lines=33)"), "{first:?}");
    pty::set_window_size(master.as_fd(), WindowSize { rows: 40, cols: 120 }).expect("resize");
    std::fs::File::from(master.try_clone().expect("dup")).write_all(b"go\n").expect("type");
    let all = output.wait_for("size 40 120", Duration::from_secs(20)).await;
    let status = tokio::time::timeout(Duration::from_secs(20), sandbox.wait())
        .await
        .expect("ends")
        .expect("status");
    assert_eq!(status, ExitStatus::Exited(0), "{all:?}");
}
