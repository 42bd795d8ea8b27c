//! The one error type of the git gate.
//!
//! Hazard: an error message is shown to the agent (as `remote:` lines or an HTTP body)
//! and written to logs, so none may carry a token, a secret found in a push, or an
//! upstream's full error output unfiltered. Messages name the repository, the step and
//! the reason; causes are attached with `#[source]`, never formatted into the message.

use std::path::PathBuf;

/// Why a git gate operation failed.
#[derive(Debug, thiserror::Error)]
pub enum GitGateError {
    /// A declared repository is malformed (settings).
    #[error("git-gate repository {name:?}: {problem}")]
    Repo {
        /// The repository name as written.
        name: String,
        /// What is wrong.
        problem: String,
    },
    /// A `token_ref` names a secret the caller did not pass.
    #[error("git-gate repository {name:?}: no secret named {token_ref:?}")]
    MissingSecret {
        /// The repository.
        name: String,
        /// The missing secret's name.
        token_ref: String,
    },
    /// A file or directory of the gate could not be created or read.
    #[error("git-gate: {path:?}")]
    Io {
        /// The path.
        path: PathBuf,
        /// Why.
        #[source]
        source: std::io::Error,
    },
    /// A git child could not be started.
    #[error("git-gate: cannot run git {step}")]
    Spawn {
        /// `fetch`, `index-pack`, ...
        step: &'static str,
        /// Why.
        #[source]
        source: bottle_proc::SpawnError,
    },
    /// Talking to a git child's pipes failed.
    #[error("git-gate: git {step} pipe")]
    Pipe {
        /// The step.
        step: &'static str,
        /// Why.
        #[source]
        source: std::io::Error,
    },
    /// A git child ran past its budget and was killed.
    #[error("git {step} did not finish within {seconds} s")]
    Timeout {
        /// The step.
        step: &'static str,
        /// The budget.
        seconds: u64,
    },
    /// A git child failed; `detail` is its last stderr lines, filtered.
    #[error("git {step} failed ({status}): {detail}")]
    Git {
        /// The step.
        step: &'static str,
        /// Exit status.
        status: String,
        /// Filtered stderr.
        detail: String,
    },
    /// The listening socket could not be bound.
    #[error("git-gate: cannot listen on {listen}")]
    Bind {
        /// The address, or `inherited fd N`.
        listen: String,
        /// Why.
        #[source]
        source: std::io::Error,
    },
}
