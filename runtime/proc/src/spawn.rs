//! What to spawn and what comes back.
//!
//! Hazard: everything in the `pre_exec` hook runs between `fork` and `exec` in a copy of
//! a multi-threaded process, so it may only call async-signal-safe functions: no
//! allocation, no locks, no logging. It resets every signal disposition and the signal
//! mask (a daemon must not inherit our ignored signals: tini's sigconf test), places the
//! readiness pipe at its agreed fd and marks every other inherited fd close-on-exec.

use std::ffi::OsString;
use std::os::fd::{AsRawFd, OwnedFd, RawFd};
use std::path::PathBuf;

use tokio::sync::oneshot;

use crate::{ExitStatus, Pid};

/// The write end of an s6-style readiness pipe, and the fd number the child finds it at.
#[derive(Debug)]
pub struct NotifyFd {
    /// Write end of the pipe (ours until exec; the child inherits it at `target`).
    pub write_end: OwnedFd,
    /// The fd number in the child, e.g. 3.
    pub target: RawFd,
}

/// A fully explicit description of a child: nothing is inherited unless listed here.
/// Its `Debug` lists environment names, never values (they can be secrets).
#[derive(Default)]
pub struct SpawnSpec {
    /// argv; `argv[0]` is the program, looked up on the `PATH` given in `env` if it has no slash.
    pub argv: Vec<OsString>,
    /// The complete environment. Our own environment is never passed through implicitly.
    pub env: Vec<(OsString, OsString)>,
    /// Working directory; `/` when unset so a daemon never pins an unexpected directory.
    pub cwd: Option<PathBuf>,
    /// Pipe stdout and stderr back to us (otherwise they go to /dev/null).
    pub capture_output: bool,
    /// Optional readiness pipe.
    pub notify_fd: Option<NotifyFd>,
    /// The child's stdin (`/dev/null` when unset), e.g. the read end of a pipe.
    pub stdin: Option<OwnedFd>,
    /// Further descriptors the child inherits, each at its agreed number (for example
    /// a listening socket and a pipe carrying secrets). Every other fd is closed on exec.
    pub inherit: Vec<InheritFd>,
}

/// A descriptor the child finds at `target`.
#[derive(Debug)]
pub struct InheritFd {
    /// Ours until exec; closed in this process once the child is spawned.
    pub fd: OwnedFd,
    /// The fd number in the child (3 or above).
    pub target: RawFd,
}

/// At most this many descriptors are placed in a child (the placement runs between fork
/// and exec, where nothing may allocate, so it works on a fixed array).
pub const MAX_INHERITED: usize = 16;

impl std::fmt::Debug for SpawnSpec {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let env_names: Vec<&OsString> = self.env.iter().map(|(name, _)| name).collect();
        f.debug_struct("SpawnSpec")
            .field("argv", &self.argv)
            .field("env", &env_names)
            .field("cwd", &self.cwd)
            .field("capture_output", &self.capture_output)
            .field("notify_fd", &self.notify_fd)
            .field("stdin", &self.stdin)
            .field("inherit", &self.inherit)
            .finish()
    }
}

/// A running child. Its exit status arrives on `exit` from the reaper; nobody else waits.
#[derive(Debug)]
pub struct SpawnedChild {
    /// The child's pid, which is also its process-group id.
    pub pid: Pid,
    /// Read end of the child's stdout, when captured.
    pub stdout: Option<OwnedFd>,
    /// Read end of the child's stderr, when captured.
    pub stderr: Option<OwnedFd>,
    /// Resolves once the reaper has collected the child.
    pub exit: oneshot::Receiver<ExitStatus>,
}

#[cfg(not(any(target_arch = "x86_64", target_arch = "aarch64")))]
compile_error!("child_setup's rt_sigaction layout is only written down for x86_64 and aarch64");

/// Runs in the forked child before exec. Only async-signal-safe calls.
pub(crate) fn child_setup(placements: &[(RawFd, RawFd)]) -> std::io::Result<()> {
    // SAFETY: rt_sigaction, sigemptyset, sigprocmask, dup2, fcntl and close_range are
    // async-signal-safe (signal-safety(7)); all pointers are to locals on this stack.
    unsafe {
        // The raw syscall, not glibc's sigaction: glibc refuses (EINVAL) to touch its
        // internal signals 32 and 33, and an inherited SIG_IGN there would leak into
        // the daemon. The kernel's struct is {handler, flags, restorer, mask} here.
        #[repr(C)]
        struct KernelSigaction {
            handler: usize,
            flags: libc::c_ulong,
            restorer: usize,
            mask: u64,
        }
        let action = KernelSigaction { handler: libc::SIG_DFL, flags: 0, restorer: 0, mask: 0 };
        for signal in 1..=64 {
            if signal == libc::SIGKILL || signal == libc::SIGSTOP {
                continue;
            }
            // Errors (numbers the kernel rejects) are harmless: nothing to reset there.
            libc::syscall(
                libc::SYS_rt_sigaction,
                signal,
                &action as *const KernelSigaction,
                std::ptr::null_mut::<KernelSigaction>(),
                8usize,
            );
        }
        let mut empty: libc::sigset_t = std::mem::zeroed();
        libc::sigemptyset(&mut empty);
        if libc::sigprocmask(libc::SIG_SETMASK, &empty, std::ptr::null_mut()) != 0 {
            return Err(std::io::Error::last_os_error());
        }
        // Mark (not close) every fd above stderr close-on-exec: std's own exec-error
        // pipe is among them and must stay open until exec succeeds.
        const CLOSE_RANGE_CLOEXEC: libc::c_uint = 1 << 2;
        libc::syscall(
            libc::SYS_close_range,
            3 as libc::c_uint,
            libc::c_uint::MAX,
            CLOSE_RANGE_CLOEXEC,
        );
        // Two passes so no placement clobbers a source not yet placed: first copy every
        // source above the highest target (close-on-exec copies), then dup2 each copy
        // onto its target (dup2 clears close-on-exec on the target).
        let above = placements.iter().map(|&(_, target)| target).max().unwrap_or(2) + 1;
        let mut copies = [-1 as RawFd; MAX_INHERITED];
        for (i, &(source, _)) in placements.iter().enumerate() {
            copies[i] = libc::fcntl(source, libc::F_DUPFD_CLOEXEC, above);
            if copies[i] < 0 {
                return Err(std::io::Error::last_os_error());
            }
        }
        for (i, &(_, target)) in placements.iter().enumerate() {
            if libc::dup2(copies[i], target) < 0 {
                return Err(std::io::Error::last_os_error());
            }
        }
    }
    Ok(())
}

/// Every (our fd, child's fd) pair of a spec, readiness pipe first. Refuses targets
/// below 3, duplicate targets and more than [`MAX_INHERITED`].
pub(crate) fn placements(
    notify: &Option<NotifyFd>,
    inherit: &[InheritFd],
) -> std::io::Result<Vec<(RawFd, RawFd)>> {
    let pairs: Vec<(RawFd, RawFd)> = notify
        .iter()
        .map(|n| (n.write_end.as_raw_fd(), n.target))
        .chain(inherit.iter().map(|i| (i.fd.as_raw_fd(), i.target)))
        .collect();
    let mut targets: Vec<RawFd> = pairs.iter().map(|&(_, t)| t).collect();
    targets.sort_unstable();
    targets.dedup();
    if pairs.len() > MAX_INHERITED
        || targets.len() != pairs.len()
        || targets.first().is_some_and(|&t| t < 3)
    {
        return Err(std::io::Error::from_raw_os_error(libc::EINVAL));
    }
    Ok(pairs)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn fd() -> OwnedFd {
        std::fs::File::open("/dev/null").unwrap().into()
    }

    #[test]
    fn placements_refuse_low_and_duplicate_targets() {
        let low = [InheritFd { fd: fd(), target: 2 }];
        assert_eq!(placements(&None, &low).unwrap_err().raw_os_error(), Some(libc::EINVAL));
        let twice = [InheritFd { fd: fd(), target: 5 }, InheritFd { fd: fd(), target: 5 }];
        assert_eq!(placements(&None, &twice).unwrap_err().raw_os_error(), Some(libc::EINVAL));
        let notify = Some(NotifyFd { write_end: fd(), target: 4 });
        let clash = [InheritFd { fd: fd(), target: 4 }];
        assert!(placements(&notify, &clash).is_err(), "the readiness fd's number is taken");
        let fine = [InheritFd { fd: fd(), target: 7 }];
        assert_eq!(
            placements(&notify, &fine).unwrap().iter().map(|p| p.1).collect::<Vec<_>>(),
            [4, 7]
        );
    }
}
