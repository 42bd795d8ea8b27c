//! The launcher's exit codes, after `docker run`'s convention (docs/exit-codes.md).
//!
//! Hazard: a script that runs `bottle run ... -- make test` must be able to tell the
//! agent's own failure from a launch that never got the agent going. So the agent's code
//! passes through unchanged when the agent ran, and the launcher's own failures use the
//! codes `docker run` uses for the same cases.

use bottle_proc::ExitStatus;

/// How `bottle run` (and `bottle exec`) ends.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RunExit {
    /// The agent ran and exited with this code (128 + N when killed by signal N).
    Agent(u8),
    /// The launch failed before the agent ran, or the sidecar died under it: 125.
    LaunchFailed,
    /// The command exists but cannot be executed: 126.
    CannotExecute,
    /// The command was not found: 127.
    NotFound,
    /// Ctrl-C or SIGTERM stopped the bottle: 130.
    Interrupted,
    /// Bad command line or manifest: 2.
    Usage,
}

impl RunExit {
    /// The process exit code.
    pub fn code(self) -> u8 {
        match self {
            RunExit::Agent(code) => code,
            RunExit::LaunchFailed => 125,
            RunExit::CannotExecute => 126,
            RunExit::NotFound => 127,
            RunExit::Interrupted => 130,
            RunExit::Usage => 2,
        }
    }

    /// The agent's exit status as a code.
    pub fn from_status(status: ExitStatus) -> RunExit {
        RunExit::Agent(u8::try_from(status.shell_code()).unwrap_or(255))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn codes_follow_docker_run() {
        assert_eq!(RunExit::LaunchFailed.code(), 125);
        assert_eq!(RunExit::CannotExecute.code(), 126);
        assert_eq!(RunExit::NotFound.code(), 127);
        assert_eq!(RunExit::Interrupted.code(), 130);
        assert_eq!(RunExit::Usage.code(), 2);
        assert_eq!(RunExit::from_status(ExitStatus::Exited(3)).code(), 3);
        assert_eq!(
            RunExit::from_status(ExitStatus::Signaled { signal: 9, core_dumped: false }).code(),
            137
        );
    }
}
