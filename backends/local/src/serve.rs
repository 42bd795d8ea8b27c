//! PID 1's exec server: a second command in a running sandbox, with the agent's confinement.
//!
//! Hazard: whatever PID 1 forks inherits PID 1's state, which is exactly the agent's
//! confinement (namespaces, no capabilities, no_new_privs, seccomp, the pivoted root),
//! and PID 1's fds, which are not: the exec listener and other clients' connections and
//! stdio. So a command gets fds 0-2 from its own client and nothing else (every other fd
//! is close-on-exec), a session of its own, and the environment of the agent with the
//! client's variables laid over it. PID 1 is single-threaded and also the sandbox's
//! init, so nothing here may block for long: the listener is non-blocking, a request
//! must arrive within [`REQUEST_TIMEOUT`], and the command's own setup is reported over
//! a close-on-exec channel whose end of stream means "exec'd". Every child is reaped by
//! the one supervise loop ([`bottle_proc::confine::supervise_serving`]), which reports
//! it back here; a client that hangs up gets its command killed.

use std::os::fd::{AsFd, AsRawFd, OwnedFd, RawFd};
use std::path::PathBuf;
use std::time::Duration;

use bottle_proc::{ExitStatus, Pid};

use crate::exec::ExecRequest;
use crate::helper::{Stdio, exec_failure_code, overlay};
use crate::wire::{self, ExecMsg, ExecReply, Step};

/// How long a connected client may take to send its request.
pub(crate) const REQUEST_TIMEOUT: Duration = Duration::from_secs(5);

/// One client whose command runs.
struct Client {
    /// The command's pid (its process group, too).
    pid: Pid,
    /// The connection; `None` once the client hung up (its command was killed).
    connection: Option<OwnedFd>,
}

/// The exec listener and the commands it started.
pub(crate) struct ExecServer {
    listener: Option<OwnedFd>,
    clients: Vec<Client>,
    agent_env: Vec<(String, String)>,
    agent_cwd: PathBuf,
}

impl ExecServer {
    /// Serves `listener` (none: nothing to serve, only reaping).
    pub(crate) fn new(
        listener: Option<OwnedFd>,
        agent_env: Vec<(String, String)>,
        agent_cwd: PathBuf,
    ) -> ExecServer {
        ExecServer { listener, clients: Vec::new(), agent_env, agent_cwd }
    }

    fn accept(&mut self) {
        let Some(listener) = &self.listener else { return };
        let Ok(connection) = bottle_proc::fdpass::seqpacket_accept(listener.as_fd()) else {
            return;
        };
        if let Some(pid) = self.start(&connection) {
            self.clients.push(Client { pid, connection: Some(connection) });
        }
    }

    /// Reads one request and starts its command; replies `Started` or `Failed`.
    fn start(&self, connection: &OwnedFd) -> Option<Pid> {
        let reply = match self.read_request(connection) {
            Ok((request, stdio)) => self.spawn(&request, stdio),
            Err(reply) => Err(reply),
        };
        match reply {
            Ok(pid) => reply_to(connection, &ExecReply::Started { pid }).ok().map(|()| pid),
            Err(reply) => {
                let _ = reply_to(connection, &reply);
                None
            }
        }
    }

    fn read_request(&self, connection: &OwnedFd) -> Result<(ExecRequest, Stdio), ExecReply> {
        let bad = |detail: String| ExecReply::Failed { step: Step::ReadSpec, detail, errno: 0 };
        bottle_proc::fdpass::set_receive_timeout(connection.as_fd(), Some(REQUEST_TIMEOUT))
            .map_err(|err| bad(err.to_string()))?;
        let message = bottle_proc::fdpass::recv_message(connection.as_fd(), wire::MAX_MESSAGE)
            .map_err(|err| bad(err.to_string()))?
            .ok_or_else(|| bad("end of stream".into()))?;
        let request = match serde_json::from_slice(&message.bytes) {
            Ok(ExecMsg::Run(request)) => request,
            Ok(ExecMsg::Signal(_)) => return Err(bad("a signal before a command".into())),
            Err(err) => return Err(bad(err.to_string())),
        };
        if request.argv.is_empty() {
            return Err(bad("empty argv".into()));
        }
        let count = message.fds.len();
        let Ok(fds) = <[OwnedFd; 3]>::try_from(message.fds) else {
            return Err(bad(format!("{count} fds instead of stdin, stdout and stderr")));
        };
        let stdio = if request.tty {
            let [stdin, _, _] = fds;
            if !bottle_proc::pty::is_terminal(stdin.as_fd()) {
                return Err(ExecReply::Failed {
                    step: Step::ReadSpec,
                    detail: "tty requested but stdin is not a terminal".into(),
                    errno: libc::ENOTTY,
                });
            }
            Stdio::Pty(stdin)
        } else {
            Stdio::Inherit(fds)
        };
        Ok((request, stdio))
    }

    /// Forks the command; returns its pid once it has exec'd.
    fn spawn(&self, request: &ExecRequest, stdio: Stdio) -> Result<Pid, ExecReply> {
        let failed = |step, detail: &str, err: &std::io::Error| ExecReply::Failed {
            step,
            detail: detail.to_string(),
            errno: err.raw_os_error().unwrap_or(0),
        };
        let (ours, theirs) = bottle_proc::fdpass::seqpacket_pair()
            .map_err(|err| failed(Step::ForkAgent, "channel", &err))?;
        let env = overlay(&self.agent_env, &request.env);
        let cwd = request.cwd.clone().unwrap_or_else(|| self.agent_cwd.clone());
        let pid = bottle_proc::confine::fork_process(true, (theirs, stdio), |(channel, stdio)| {
            run_command(&channel, &stdio, &request.argv, &env, &cwd)
        })
        .map_err(|(err, _)| failed(Step::ForkAgent, "fork", &std::io::Error::other(err)))?;
        // End of stream: the command exec'd. A message: it failed (and exits; it is
        // reaped like any other child, with nobody to tell).
        let _ = bottle_proc::fdpass::set_receive_timeout(ours.as_fd(), Some(REQUEST_TIMEOUT));
        match bottle_proc::fdpass::recv_message(ours.as_fd(), wire::MAX_MESSAGE) {
            Ok(None) => Ok(pid),
            Ok(Some(message)) => {
                Err(serde_json::from_slice(&message.bytes).unwrap_or_else(|err| {
                    failed(Step::Exec, &err.to_string(), &std::io::Error::from_raw_os_error(0))
                }))
            }
            Err(err) => {
                let _ = bottle_proc::confine::signal_child_group(pid, libc::SIGKILL);
                Err(failed(Step::Exec, "report", &err))
            }
        }
    }

    fn client_ready(&mut self, fd: RawFd) {
        let Some(client) = self
            .clients
            .iter_mut()
            .find(|c| c.connection.as_ref().is_some_and(|conn| conn.as_raw_fd() == fd))
        else {
            return;
        };
        let Some(connection) = &client.connection else { return };
        let message = bottle_proc::fdpass::recv_message(connection.as_fd(), wire::MAX_MESSAGE);
        match message.map(|m| m.map(|m| serde_json::from_slice::<ExecMsg>(&m.bytes))) {
            Ok(Some(Ok(ExecMsg::Signal(signal)))) => {
                let _ = bottle_proc::confine::signal_child_group(client.pid, signal);
            }
            // Anything else: a second Run, garbage, or the client is gone.
            _ => {
                client.connection = None;
                let _ = bottle_proc::confine::signal_child_group(client.pid, libc::SIGKILL);
            }
        }
    }
}

impl bottle_proc::confine::Served for ExecServer {
    fn watched(&self) -> Vec<RawFd> {
        let listener = self.listener.iter().map(|l| l.as_raw_fd());
        let clients =
            self.clients.iter().filter_map(|c| c.connection.as_ref().map(|c| c.as_raw_fd()));
        listener.chain(clients).collect()
    }

    fn ready(&mut self, fd: RawFd) {
        if self.listener.as_ref().is_some_and(|l| l.as_raw_fd() == fd) {
            self.accept();
        } else {
            self.client_ready(fd);
        }
    }

    fn reaped(&mut self, pid: Pid, status: ExitStatus) {
        let Some(index) = self.clients.iter().position(|c| c.pid == pid) else { return };
        let client = self.clients.swap_remove(index);
        if let Some(connection) = client.connection {
            let reply = match status {
                ExitStatus::Exited(code) => ExecReply::Exited { code },
                ExitStatus::Signaled { signal, core_dumped } => {
                    ExecReply::Killed { signal, core_dumped }
                }
            };
            let _ = reply_to(&connection, &reply);
        }
    }
}

fn reply_to(connection: &OwnedFd, reply: &ExecReply) -> std::io::Result<()> {
    bottle_proc::fdpass::send_message(connection.as_fd(), &wire::encode(reply), None)
}

/// The exec'd command, forked from PID 1. Returns only if it could not exec.
fn run_command(
    channel: &OwnedFd,
    stdio: &Stdio,
    argv: &[String],
    env: &[(String, String)],
    cwd: &std::path::Path,
) -> i32 {
    let report = |step, detail: &str, err: &std::io::Error| {
        let reply = ExecReply::Failed {
            step,
            detail: detail.to_string(),
            errno: err.raw_os_error().unwrap_or(0),
        };
        let _ = reply_to(channel, &reply);
    };
    if let Err(err) = stdio.install().and_then(|()| bottle_proc::confine::prepare_exec()) {
        report(Step::Exec, "stdio", &err);
        return 126;
    }
    if let Err(errno) = nix::unistd::chdir(cwd) {
        report(Step::Chdir, &cwd.display().to_string(), &errno.into());
        return 126;
    }
    let err = bottle_proc::confine::exec_program(argv, env);
    report(Step::Exec, argv.first().map_or("", String::as_str), &err);
    exec_failure_code(&err)
}
