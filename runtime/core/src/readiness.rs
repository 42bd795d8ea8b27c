//! Polling a probe with exponential backoff until it passes or a deadline expires.
//!
//! Hazard: a fixed `sleep(1.5)` before using a service (the reference system's
//! smolmachines race) is both too slow and not long enough. Poll instead, with a
//! deadline, and fail with an error that says what was polled and for how long.

use std::future::Future;
use std::time::Duration;

use tokio::time::Instant;

use crate::backoff::Backoff;

/// When to poll: first attempt at once, then after `backoff` delays, until `deadline`.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct PollSchedule {
    /// Delays between attempts (attempt n waits `backoff.delay(n)` after attempt n).
    pub backoff: Backoff,
    /// Overall budget measured from the first attempt.
    pub deadline: Duration,
}

impl PollSchedule {
    /// The VM exec-readiness schedule of the reference system (M1): 0.1 s doubling to a
    /// 0.5 s cap, 5 s deadline, no jitter.
    pub const VM_EXEC: PollSchedule = PollSchedule {
        backoff: Backoff {
            initial: Duration::from_millis(100),
            factor: 2.0,
            cap: Duration::from_millis(500),
            jitter: 0.0,
        },
        deadline: Duration::from_secs(5),
    };

    /// Fast local probes (sockets on this machine): 5 ms doubling to 100 ms.
    pub fn local(deadline: Duration) -> PollSchedule {
        PollSchedule {
            backoff: Backoff {
                initial: Duration::from_millis(5),
                factor: 2.0,
                cap: Duration::from_millis(100),
                jitter: 0.0,
            },
            deadline,
        }
    }
}

/// The probe passed.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct PollSuccess {
    /// Attempts made, including the successful one.
    pub attempts: u32,
    /// Time from the first attempt to success.
    pub elapsed: Duration,
}

/// The probe never passed.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("{what} not ready after {waited:?} ({attempts} attempts)")]
pub struct PollTimeout {
    /// What was polled.
    pub what: String,
    /// How long we polled.
    pub waited: Duration,
    /// How many attempts were made.
    pub attempts: u32,
}

/// Calls `probe` until it returns true or the schedule's deadline passes. Each probe
/// call is itself cut off at the deadline. `unit` supplies jitter draws in `[0, 1)`.
pub async fn poll_until<P, F>(
    what: &str,
    schedule: PollSchedule,
    mut unit: impl FnMut() -> f64,
    mut probe: P,
) -> Result<PollSuccess, PollTimeout>
where
    P: FnMut() -> F,
    F: Future<Output = bool>,
{
    let start = Instant::now();
    let deadline = start + schedule.deadline;
    let mut attempts = 0u32;
    loop {
        attempts += 1;
        let passed = tokio::time::timeout_at(deadline, probe()).await.unwrap_or(false);
        let now = Instant::now();
        if passed {
            return Ok(PollSuccess { attempts, elapsed: now - start });
        }
        if now >= deadline {
            return Err(PollTimeout { what: what.to_string(), waited: now - start, attempts });
        }
        let delay = schedule.backoff.delay(attempts, unit());
        tokio::time::sleep_until((now + delay).min(deadline)).await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::{Arc, Mutex};

    /// The reference system's M1 criterion, on tokio's paused clock: a VM whose exec
    /// channel is ready at t = 0.65 s is probed at 0, 0.1, 0.3 and 0.7 s.
    #[tokio::test(start_paused = true)]
    async fn vm_exec_schedule_probes_at_the_reference_times() {
        let t0 = Instant::now();
        let seen = Arc::new(Mutex::new(Vec::new()));
        let log = seen.clone();
        let ok = poll_until(
            "vm exec channel",
            PollSchedule::VM_EXEC,
            || 0.5,
            || {
                let elapsed = t0.elapsed();
                log.lock().unwrap().push(elapsed.as_millis());
                async move { elapsed >= Duration::from_millis(650) }
            },
        )
        .await
        .unwrap();
        assert_eq!(*seen.lock().unwrap(), vec![0, 100, 300, 700]);
        assert_eq!(ok.attempts, 4);
    }

    #[tokio::test(start_paused = true)]
    async fn never_ready_fails_at_the_deadline_with_a_typed_error() {
        let t0 = Instant::now();
        let err = poll_until("vm exec channel", PollSchedule::VM_EXEC, || 0.5, || async { false })
            .await
            .unwrap_err();
        assert_eq!(t0.elapsed(), Duration::from_secs(5));
        assert_eq!(err.waited, Duration::from_secs(5));
        // 0, .1, .3, .7, 1.2, ... 4.7 and a last one at 5.0
        assert_eq!(err.attempts, 13);
        assert_eq!(err.to_string(), "vm exec channel not ready after 5s (13 attempts)");
    }

    #[tokio::test(start_paused = true)]
    async fn a_hanging_probe_is_cut_off_at_the_deadline() {
        let schedule = PollSchedule::local(Duration::from_millis(300));
        let err =
            poll_until("hang", schedule, || 0.5, std::future::pending::<bool>).await.unwrap_err();
        assert_eq!(err.attempts, 1);
        assert_eq!(err.waited, Duration::from_millis(300));
    }
}
