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
}

impl std::fmt::Debug for SpawnSpec {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let env_names: Vec<&OsString> = self.env.iter().map(|(name, _)| name).collect();
        f.debug_struct("SpawnSpec")
            .field("argv", &self.argv)
            .field("env", &env_names)
            .field("cwd", &self.cwd)
            .field("capture_output", &self.capture_output)
            .field("notify_fd", &self.notify_fd)
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
pub(crate) fn child_setup(notify: Option<(RawFd, RawFd)>) -> std::io::Result<()> {
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
        let mut keep = -1;
        if let Some((source, target)) = notify {
            if source == target {
                // dup2 onto itself keeps CLOEXEC set; clear it by hand.
                let flags = libc::fcntl(target, libc::F_GETFD);
                libc::fcntl(target, libc::F_SETFD, flags & !libc::FD_CLOEXEC);
            } else if libc::dup2(source, target) < 0 {
                return Err(std::io::Error::last_os_error());
            }
            keep = target;
        }
        // Mark (not close) every fd above stderr close-on-exec: std's own exec-error
        // pipe is among them and must stay open until exec succeeds.
        const CLOSE_RANGE_CLOEXEC: libc::c_uint = 1 << 2;
        let mark = |first: libc::c_uint, last: libc::c_uint| {
            if first <= last {
                libc::syscall(libc::SYS_close_range, first, last, CLOSE_RANGE_CLOEXEC);
            }
        };
        if keep >= 3 {
            mark(3, (keep - 1) as libc::c_uint);
            mark((keep + 1) as libc::c_uint, libc::c_uint::MAX);
        } else {
            mark(3, libc::c_uint::MAX);
        }
    }
    Ok(())
}

pub(crate) fn notify_pair(notify: &Option<NotifyFd>) -> Option<(RawFd, RawFd)> {
    notify.as_ref().map(|n| (n.write_end.as_raw_fd(), n.target))
}
