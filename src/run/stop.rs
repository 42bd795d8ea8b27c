//! Stopping a process a launch started: SIGTERM to its group, its grace, then SIGKILL.
//!
//! Hazard: a teardown that sends SIGTERM and moves on leaves a process that ignores it
//! running after the launcher exits. Every stop here ends in SIGKILL unless the process
//! is seen gone, and says so when even SIGKILL did not end it.

use std::time::Duration;

use bottle_proc::{Pid, Reaper};

/// How long a process gets after SIGKILL before the stop is reported as failed.
const AFTER_KILL: Duration = Duration::from_secs(5);

/// SIGTERM to `pid`'s group and `grace` (none when `grace` is zero), then SIGKILL and
/// [`AFTER_KILL`]. `gone_within(limit)` waits up to `limit` and says whether the process
/// is gone; it is asked once first, with no wait.
pub(super) async fn terminate<F>(
    reaper: &Reaper,
    pid: Pid,
    what: &str,
    grace: Duration,
    gone_within: impl Fn(Duration) -> F,
) -> Result<(), String>
where
    F: std::future::Future<Output = bool>,
{
    if gone_within(Duration::ZERO).await {
        return Ok(());
    }
    if !grace.is_zero() {
        let _ = reaper.signal_group(pid, nix::sys::signal::Signal::SIGTERM as i32);
        if gone_within(grace).await {
            return Ok(());
        }
    }
    let _ = reaper.signal_group(pid, nix::sys::signal::Signal::SIGKILL as i32);
    if gone_within(AFTER_KILL).await {
        Ok(())
    } else {
        Err(format!("{what} (pid {pid}) did not exit after SIGKILL"))
    }
}
