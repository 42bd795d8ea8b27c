//! A process named by pid *and* start time, so a recycled pid is never mistaken for it.
//!
//! Hazard: a launcher that crashed leaves pids in its state directory; by the time
//! `bottle cleanup` or `bottle stop` reads them, the kernel may have given those numbers
//! to unrelated processes. Signalling a bare pid from a file can kill a stranger. So a
//! recorded process is a [`ProcessIdentity`] (pid plus the kernel's start time in clock
//! ticks since boot), and [`ProcessIdentity::signal_group`] opens a pidfd first, checks the
//! start time through it, and signals through the pidfd: between the check and the signal
//! the pid cannot be recycled, because the open pidfd pins the process.

use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};

use serde::{Deserialize, Serialize};

use crate::Pid;

/// A process: its pid and its start time (field 22 of `/proc/<pid>/stat`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct ProcessIdentity {
    /// The pid in the recording process's PID namespace.
    pub pid: Pid,
    /// Clock ticks after boot at which it started.
    pub start_time: u64,
}

impl ProcessIdentity {
    /// The identity of `pid` now, if it exists.
    pub fn of(pid: Pid) -> Option<ProcessIdentity> {
        start_time(pid).map(|start_time| ProcessIdentity { pid, start_time })
    }

    /// This process.
    pub fn current() -> Option<ProcessIdentity> {
        ProcessIdentity::of(std::process::id() as Pid)
    }

    /// True while this very process exists (and is not a zombie).
    pub fn is_alive(&self) -> bool {
        self.pin().is_some()
    }

    /// Sends `signal` to this process's group (it leads one: every child we spawn does),
    /// and, when the group is empty or not led by it, to the process alone. False when
    /// the process is gone or the pid now names another process.
    pub fn signal_group(&self, signal: i32) -> bool {
        let Some(pidfd) = self.pin() else { return false };
        // The pidfd pins the process, and a pid that leads a group cannot be recycled
        // while the group exists: a group with this id is this process's own.
        if pgid_of(self.pid) == Some(self.pid) {
            return crate::signal::kill_group(self.pid, signal).is_ok();
        }
        send_via_pidfd(&pidfd, signal)
    }

    /// Opens a pidfd and checks through it that the pid still names this process.
    fn pin(&self) -> Option<OwnedFd> {
        if self.pid <= 1 {
            return None;
        }
        let pidfd = pidfd_open(self.pid)?;
        // The pidfd was opened on whatever holds the pid now; it is ours only if its
        // start time is the recorded one. Read after opening, so the check is of the
        // pinned process.
        match start_time(self.pid) {
            Some(t) if t == self.start_time && !is_zombie(self.pid) => Some(pidfd),
            _ => None,
        }
    }
}

fn stat_fields(pid: Pid) -> Option<Vec<String>> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // The command name is in parentheses and may itself contain spaces or ')'.
    let after = stat.get(stat.rfind(')')? + 2..)?;
    Some(after.split(' ').map(str::to_string).collect())
}

/// Field 22 of `/proc/<pid>/stat` (index 19 after the command name).
fn start_time(pid: Pid) -> Option<u64> {
    stat_fields(pid)?.get(19)?.parse().ok()
}

fn pgid_of(pid: Pid) -> Option<Pid> {
    stat_fields(pid)?.get(2)?.parse().ok()
}

fn is_zombie(pid: Pid) -> bool {
    stat_fields(pid).and_then(|f| f.first().cloned()).is_some_and(|s| s == "Z")
}

fn pidfd_open(pid: Pid) -> Option<OwnedFd> {
    // SAFETY: pidfd_open(2) takes a pid and flags and returns a new fd or -1; no memory
    // is passed.
    let fd = unsafe { libc::syscall(libc::SYS_pidfd_open, pid, 0) };
    if fd < 0 {
        return None;
    }
    // SAFETY: the kernel just returned this fd to us and nobody else owns it.
    Some(unsafe { OwnedFd::from_raw_fd(fd as i32) })
}

fn send_via_pidfd(pidfd: &OwnedFd, signal: i32) -> bool {
    // SAFETY: pidfd_send_signal(2) with a valid pidfd, a signal number, a null siginfo
    // (the kernel fills it as for kill(2)) and no flags.
    let rc = unsafe {
        libc::syscall(
            libc::SYS_pidfd_send_signal,
            pidfd.as_raw_fd(),
            signal,
            std::ptr::null::<libc::siginfo_t>(),
            0,
        )
    };
    rc == 0
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_current_process_is_alive_and_a_changed_start_time_is_not_it() {
        let me = ProcessIdentity::current().unwrap();
        assert!(me.is_alive());
        let impostor = ProcessIdentity { start_time: me.start_time + 1, ..me };
        assert!(!impostor.is_alive());
        // Signal 0 checks without delivering: a wrong identity is never signalled.
        assert!(!impostor.signal_group(0));
    }

    #[test]
    fn pid_one_and_below_are_never_signalled() {
        let init = ProcessIdentity { pid: 1, start_time: start_time(1).unwrap_or(0) };
        assert!(!init.signal_group(0));
    }
}
