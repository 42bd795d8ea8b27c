//! Signal numbers, names and delivery to process groups.
//!
//! Hazard: a pid (and so a process-group id) is recycled as soon as it is reaped.
//! Signalling a group that was already reaped can hit an unrelated process, so callers
//! go through [`crate::Reaper::signal_group`], which holds the reaper's table lock and
//! signals only groups whose leader has not been reaped yet.

use crate::Pid;

/// The name of a signal, `SIGTERM` style, or `SIG<n>` for unnamed ones.
pub fn name(signal: i32) -> String {
    match nix::sys::signal::Signal::try_from(signal) {
        Ok(sig) => sig.as_str().to_string(),
        Err(_) => format!("SIG{signal}"),
    }
}

/// Parses `TERM`, `SIGTERM` or `15` into a signal number.
pub fn parse(text: &str) -> Option<i32> {
    if let Ok(number) = text.parse::<i32>() {
        return nix::sys::signal::Signal::try_from(number).ok().map(|s| s as i32);
    }
    let upper = text.to_ascii_uppercase();
    let full = if upper.starts_with("SIG") { upper } else { format!("SIG{upper}") };
    full.parse::<nix::sys::signal::Signal>().ok().map(|s| s as i32)
}

/// Sends `signal` to the process group `pgid`. `ESRCH` (nobody left) is not an error.
pub(crate) fn kill_group(pgid: Pid, signal: i32) -> std::io::Result<()> {
    // pgid > 1 is checked so we never signal every process (-1) or an invalid group.
    if pgid <= 1 {
        return Err(std::io::Error::from_raw_os_error(libc::EINVAL));
    }
    // SAFETY: kill(2) has no memory-safety preconditions; a negative pid addresses the group.
    let rc = unsafe { libc::kill(-pgid, signal) };
    if rc == 0 {
        return Ok(());
    }
    let err = std::io::Error::last_os_error();
    if err.raw_os_error() == Some(libc::ESRCH) { Ok(()) } else { Err(err) }
}

/// Sends `signal` to a process (or, with a negative `pid`, a process group) that no
/// [`crate::Reaper`] of ours supervises: a test driver's own `std::process::Child` it has
/// not waited for yet, a process inside a PID namespace the caller created, or this
/// process itself.
///
/// Hazard: nothing here protects against a recycled pid. The caller must know `pid` is
/// still the process it means (an unwaited child's pid cannot be reused; a reaped one
/// can). Supervised children go through [`crate::Reaper::signal_group`] instead, which
/// checks under the table lock. `pid` 0, 1, -1 and the group of init are refused (`EINVAL`):
/// they address our own group, init, or every process.
pub fn send_unsupervised(pid: Pid, signal: i32) -> std::io::Result<()> {
    if pid.unsigned_abs() <= 1 {
        return Err(std::io::Error::from_raw_os_error(libc::EINVAL));
    }
    // SAFETY: kill(2) has no memory-safety preconditions; |pid| > 1 addresses one process
    // or one group, never everyone.
    if unsafe { libc::kill(pid, signal) } == 0 {
        Ok(())
    } else {
        Err(std::io::Error::last_os_error())
    }
}

/// Sends `signal` to one process; false if it is gone.
pub(crate) fn kill_pid(pid: Pid, signal: i32) -> bool {
    // SAFETY: kill(2) has no memory-safety preconditions; pid > 1 addresses one process.
    pid > 1 && unsafe { libc::kill(pid, signal) } == 0
}

/// Sends `signal` to every process we can see in our PID namespace except ourselves:
/// the last sweep of a PID 1 before it exits. Returns how many were signalled.
pub(crate) fn signal_all_others(signal: i32) -> usize {
    let me = std::process::id();
    let mut n = 0;
    for pid in crate::fd::list_pids() {
        if pid as u32 == me {
            continue;
        }
        // SAFETY: kill(2) has no memory-safety preconditions; pid > 1 is a real process
        // of our namespace (read from /proc just now).
        if pid > 1 && unsafe { libc::kill(pid, signal) } == 0 {
            n += 1;
        }
    }
    n
}
