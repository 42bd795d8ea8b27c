//! Errors of process spawning and reaping.

use std::path::PathBuf;

/// Why a child could not be started. Exec failures are reported synchronously by the
/// fork/exec error pipe, so the caller sees them before any exit status exists.
#[derive(Debug, thiserror::Error)]
pub enum SpawnError {
    /// The argv was empty: there is nothing to exec.
    #[error("empty argv: nothing to execute")]
    EmptyArgv,
    /// The program does not exist (ENOENT); shells report this as 127.
    #[error("program not found: {program:?}")]
    NotFound {
        program: PathBuf,
        #[source]
        source: std::io::Error,
    },
    /// The program exists but cannot be executed (EACCES, ENOEXEC); shells report 126.
    #[error("program not executable: {program:?}")]
    NotExecutable {
        program: PathBuf,
        #[source]
        source: std::io::Error,
    },
    /// The working directory is missing or not a directory.
    #[error("failed to spawn {program:?}")]
    Other {
        program: PathBuf,
        #[source]
        source: std::io::Error,
    },
}

impl SpawnError {
    /// The exit code a shell would report for this failure (tini's convention:
    /// 127 not found, 126 not executable, 1 anything else).
    pub fn shell_code(&self) -> i32 {
        match self {
            SpawnError::NotFound { .. } => 127,
            SpawnError::NotExecutable { .. } => 126,
            SpawnError::EmptyArgv | SpawnError::Other { .. } => 1,
        }
    }
}

/// Errors of the reaper itself.
#[derive(Debug, thiserror::Error)]
pub enum ReaperError {
    /// A second reaper was requested in a process that already has one.
    #[error("a reaper is already installed in this process; exactly one may wait on children")]
    AlreadyInstalled,
    /// `prctl(PR_SET_CHILD_SUBREAPER)` failed.
    #[error("failed to become a child subreaper")]
    Subreaper(#[source] std::io::Error),
}

/// Why [`crate::confine::fork_process`] did not fork.
#[derive(Debug, thiserror::Error)]
pub enum ForkError {
    /// The process has more than one thread: a forked child could deadlock on a lock
    /// another thread held. Spawn a helper through [`crate::Reaper::spawn`] instead.
    #[error(
        "refusing to fork a process with {threads} threads (only single-threaded helpers fork)"
    )]
    MultiThreaded { threads: usize },
    /// `fork` itself failed (EAGAIN, ENOMEM; ENOMEM also after `unshare(CLONE_NEWPID)`
    /// once the namespace's first process has died).
    #[error("fork failed")]
    Fork(#[source] std::io::Error),
    /// The pipe that tells the child its parent died could not be made.
    #[error("failed to create the parent-death pipe")]
    DeathPipe(#[source] std::io::Error),
}
