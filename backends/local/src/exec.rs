//! The exec client: run a second command in a running sandbox, from any process.
//!
//! Hazard: `bottle exec` runs in another process than the launcher that owns the
//! sandbox, and `setns` into it would need privilege over its user namespace. So the
//! command is started by the sandbox's PID 1 (see `serve`), which already carries the
//! agent's confinement; the client only connects to the exec socket (a host path, mode
//! 0600, outside the sandbox's view) and hands over argv, environment, working
//! directory and its stdin, stdout and stderr. The calls here block: use them from a
//! plain thread or `spawn_blocking`. Waiting has no timeout (a command may run for
//! hours); starting does ([`START_TIMEOUT`]: a held sandbox answers only once released).

use std::os::fd::{AsFd, BorrowedFd, OwnedFd};
use std::path::{Path, PathBuf};
use std::time::Duration;

use bottle_proc::{ExitStatus, Pid};
use serde::{Deserialize, Serialize};

use crate::LocalError;
use crate::wire::{self, ExecMsg, ExecReply};

/// How long [`ExecSession::start`] waits for the command to be exec'd.
pub const START_TIMEOUT: Duration = Duration::from_secs(30);

/// A command to run in the sandbox.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ExecRequest {
    /// argv; `argv[0]` is looked up on `PATH` of the resulting environment.
    pub argv: Vec<String>,
    /// Laid over the agent's environment (the spec's plus what `release` added).
    pub env: Vec<(String, String)>,
    /// Working directory inside (default: the agent's).
    pub cwd: Option<PathBuf>,
    /// stdin is a pty slave: make it the command's controlling terminal.
    pub tty: bool,
}

impl ExecRequest {
    /// `argv` with the agent's environment and working directory, no tty.
    pub fn new(argv: Vec<String>) -> ExecRequest {
        ExecRequest { argv, env: Vec::new(), cwd: None, tty: false }
    }
}

/// A command running in a sandbox, started by [`ExecSession::start`].
#[derive(Debug)]
pub struct ExecSession {
    connection: OwnedFd,
    pid: Pid,
}

impl ExecSession {
    /// Connects to the exec socket at `socket`, sends `request` with `stdio` (stdin,
    /// stdout, stderr; copies go to the command) and returns once the command exec'd.
    /// Blocking.
    pub fn start(
        socket: &Path,
        request: &ExecRequest,
        stdio: [BorrowedFd<'_>; 3],
    ) -> Result<ExecSession, LocalError> {
        let unreachable =
            |source| LocalError::ExecUnreachable { socket: socket.to_path_buf(), source };
        let connection = bottle_proc::fdpass::seqpacket_connect(socket).map_err(unreachable)?;
        let message = wire::encode(&ExecMsg::Run(request.clone()));
        bottle_proc::fdpass::send_message_with_fds(connection.as_fd(), &message, &stdio)
            .map_err(unreachable)?;
        bottle_proc::fdpass::set_receive_timeout(connection.as_fd(), Some(START_TIMEOUT))
            .map_err(LocalError::Channel)?;
        let session = ExecSession { connection, pid: 0 };
        match session.next_reply()? {
            ExecReply::Started { pid } => {
                bottle_proc::fdpass::set_receive_timeout(session.connection.as_fd(), None)
                    .map_err(LocalError::Channel)?;
                Ok(ExecSession { pid, ..session })
            }
            ExecReply::Failed { step, detail, errno } => Err(LocalError::ExecFailed {
                step,
                detail,
                source: std::io::Error::from_raw_os_error(errno),
            }),
            other => Err(LocalError::ExecLost { last: format!("{other:?} before Started") }),
        }
    }

    /// The command's pid inside the sandbox.
    pub fn pid(&self) -> Pid {
        self.pid
    }

    /// Sends `signal` to the command's process group (for the client's Ctrl-C or
    /// SIGTERM; with a tty the pty delivers keyboard signals itself). Blocking, brief.
    pub fn signal(&self, signal: i32) -> Result<(), LocalError> {
        bottle_proc::fdpass::send_message(
            self.connection.as_fd(),
            &wire::encode(&ExecMsg::Signal(signal)),
            None,
        )
        .map_err(LocalError::Channel)
    }

    /// Waits for the command to end. `Signaled { SIGKILL }` also when the sandbox ended
    /// under it (its agent exited). Blocking, no timeout; [`ExecSession::signal`] may be
    /// called meanwhile from another thread.
    pub fn wait(&self) -> Result<ExitStatus, LocalError> {
        match self.next_reply()? {
            ExecReply::Exited { code } => Ok(ExitStatus::Exited(code)),
            ExecReply::Killed { signal, core_dumped } => {
                Ok(ExitStatus::Signaled { signal, core_dumped })
            }
            other => Err(LocalError::ExecLost { last: format!("{other:?} instead of a status") }),
        }
    }

    fn next_reply(&self) -> Result<ExecReply, LocalError> {
        let message = bottle_proc::fdpass::recv_message(self.connection.as_fd(), wire::MAX_MESSAGE)
            .map_err(LocalError::Channel)?
            .ok_or_else(|| LocalError::ExecLost { last: "end of stream".into() })?;
        serde_json::from_slice(&message.bytes).map_err(|err| {
            LocalError::Channel(std::io::Error::new(std::io::ErrorKind::InvalidData, err))
        })
    }
}

/// Runs `request` in the sandbox whose exec socket is `socket`, with `stdio`, and
/// returns its status: [`ExecSession::start`] then [`ExecSession::wait`]. Blocking.
pub fn exec(
    socket: &Path,
    request: &ExecRequest,
    stdio: [BorrowedFd<'_>; 3],
) -> Result<ExitStatus, LocalError> {
    ExecSession::start(socket, request, stdio)?.wait()
}
