//! How a child ended, as the kernel reported it to the reaper.

use std::fmt;

/// The exit status of a reaped child.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum ExitStatus {
    /// The child called `exit(code)`.
    Exited(i32),
    /// The child was terminated by a signal.
    Signaled {
        /// The signal number.
        signal: i32,
        /// Whether the kernel wrote a core dump.
        core_dumped: bool,
    },
}

impl ExitStatus {
    /// Decodes a raw `wait` status word.
    pub fn from_raw(raw: i32) -> Option<ExitStatus> {
        if libc::WIFEXITED(raw) {
            Some(ExitStatus::Exited(libc::WEXITSTATUS(raw)))
        } else if libc::WIFSIGNALED(raw) {
            Some(ExitStatus::Signaled {
                signal: libc::WTERMSIG(raw),
                core_dumped: libc::WCOREDUMP(raw),
            })
        } else {
            None
        }
    }

    /// The code a shell would report: the exit code, or 128 + the signal number.
    pub fn shell_code(self) -> i32 {
        match self {
            ExitStatus::Exited(code) => code,
            ExitStatus::Signaled { signal, .. } => 128 + signal,
        }
    }

    /// True for `exit(0)`.
    pub fn success(self) -> bool {
        self == ExitStatus::Exited(0)
    }
}

impl fmt::Display for ExitStatus {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ExitStatus::Exited(code) => write!(f, "exit code {code}"),
            ExitStatus::Signaled { signal, core_dumped } => {
                write!(f, "killed by {}", crate::signal::name(*signal))?;
                if *core_dumped {
                    f.write_str(" (core dumped)")?;
                }
                Ok(())
            }
        }
    }
}
