//! Errors of the local backend, as the launcher sees them.

use std::time::Duration;

use crate::preflight::Refusal;

/// Why a local sandbox did not start or run.
#[derive(Debug, thiserror::Error)]
pub enum LocalError {
    /// The spec cannot describe a sandbox (empty argv, relative target, missing source).
    #[error("invalid sandbox spec: {0}")]
    InvalidSpec(String),
    /// The setup channel to the helper failed.
    #[error("setup channel to the sandbox helper failed")]
    Channel(#[source] std::io::Error),
    /// The helper could not be spawned.
    #[error("could not start the sandbox helper")]
    Spawn(#[source] bottle_proc::SpawnError),
    /// The host refused a step of the sandbox; the message names the cause and the fix.
    /// Nothing ran with weaker isolation.
    #[error("the local sandbox cannot run here: {0}")]
    Refused(Refusal),
    /// The helper did not finish setting up in time (it was killed).
    #[error("the sandbox helper did not finish setup within {0:?}")]
    SetupTimeout(Duration),
    /// The helper ended before reporting (crashed, or killed from outside).
    #[error("the sandbox helper died during setup ({status})")]
    HelperDied {
        /// Its exit status as the reaper saw it, or "unknown".
        status: String,
    },
    /// The exec socket could not be reached (no such sandbox, or it ended).
    #[error("cannot reach the sandbox's exec socket {socket:?}")]
    ExecUnreachable {
        /// The socket path.
        socket: std::path::PathBuf,
        /// The OS error.
        #[source]
        source: std::io::Error,
    },
    /// The sandbox refused or failed to start the command.
    #[error("exec in the sandbox failed: {step} ({detail})")]
    ExecFailed {
        /// The step that failed.
        step: crate::wire::Step,
        /// The program or path it worked on.
        detail: String,
        /// The OS error (errno 0 when the failure was not one).
        #[source]
        source: std::io::Error,
    },
    /// The connection to the sandbox ended without the command's status.
    #[error("the sandbox ended the exec session without a status ({last})")]
    ExecLost {
        /// What was received last.
        last: String,
    },
    /// The seccomp rules could not be compiled (a bug in the rules).
    #[error("invalid seccomp rules")]
    SeccompRules(#[source] seccompiler::BackendError),
    /// The kernel refused the seccomp filter.
    #[error("loading the seccomp filter failed")]
    SeccompLoad(#[source] seccompiler::Error),
}
