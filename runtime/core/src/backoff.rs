//! Exponential backoff with jitter: the one curve used for restart delays and for
//! readiness polling.

use std::time::Duration;

/// `delay(n) = min(cap, initial * factor^(n-1))`, then spread by ±`jitter` (a fraction)
/// and clamped to `cap`. Attempt numbers start at 1.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Backoff {
    /// Delay before the first retry.
    pub initial: Duration,
    /// Growth factor per attempt (>= 1).
    pub factor: f64,
    /// Upper bound of any delay.
    pub cap: Duration,
    /// Relative jitter in `[0, 1]`: 0.1 spreads each delay over ±10 %.
    pub jitter: f64,
}

impl Default for Backoff {
    /// 100 ms doubling to a 30 s cap with ±10 % jitter.
    fn default() -> Backoff {
        Backoff {
            initial: Duration::from_millis(100),
            factor: 2.0,
            cap: Duration::from_secs(30),
            jitter: 0.1,
        }
    }
}

impl Backoff {
    /// No delay at all: restart at once.
    pub const ZERO: Backoff =
        Backoff { initial: Duration::ZERO, factor: 1.0, cap: Duration::ZERO, jitter: 0.0 };

    /// The delay before retry number `attempt` (1-based) without jitter.
    pub fn base(&self, attempt: u32) -> Duration {
        let exponent = attempt.saturating_sub(1).min(1_000) as i32;
        let secs = self.initial.as_secs_f64() * self.factor.powi(exponent);
        if !secs.is_finite() || secs >= self.cap.as_secs_f64() {
            self.cap
        } else {
            Duration::from_secs_f64(secs)
        }
    }

    /// The delay before retry number `attempt`, with `unit` in `[0, 1)` choosing the
    /// point inside the jitter band (0.5 is the middle).
    pub fn delay(&self, attempt: u32, unit: f64) -> Duration {
        let base = self.base(attempt).as_secs_f64();
        let spread = 1.0 - self.jitter + 2.0 * self.jitter * unit.clamp(0.0, 1.0);
        Duration::from_secs_f64((base * spread).max(0.0)).min(self.cap)
    }

    /// The smallest and largest delay [`Backoff::delay`] can return for `attempt`.
    pub fn bounds(&self, attempt: u32) -> (Duration, Duration) {
        (self.delay(attempt, 0.0), self.delay(attempt, 1.0))
    }

    /// Checks the fields; the error names the bad one.
    pub fn validate(&self) -> Result<(), String> {
        if !(self.factor.is_finite() && self.factor >= 1.0) {
            return Err(format!("backoff factor must be >= 1, got {}", self.factor));
        }
        if !(0.0..=1.0).contains(&self.jitter) {
            return Err(format!("backoff jitter must be in [0, 1], got {}", self.jitter));
        }
        if self.cap < self.initial {
            return Err(format!(
                "backoff cap ({:?}) is below the initial delay ({:?})",
                self.cap, self.initial
            ));
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ms(n: u64) -> Duration {
        Duration::from_millis(n)
    }

    #[test]
    fn curve_doubles_then_caps() {
        let b = Backoff { initial: ms(100), factor: 2.0, cap: ms(500), jitter: 0.0 };
        let got: Vec<_> = (1..=6).map(|n| b.base(n)).collect();
        assert_eq!(got, vec![ms(100), ms(200), ms(400), ms(500), ms(500), ms(500)]);
    }

    #[test]
    fn jitter_stays_inside_its_band_and_under_the_cap() {
        let b = Backoff { initial: ms(1000), factor: 3.0, cap: ms(5000), jitter: 0.2 };
        for attempt in 1..10 {
            let (lo, hi) = b.bounds(attempt);
            for i in 0..100 {
                let d = b.delay(attempt, f64::from(i) / 100.0);
                assert!(lo <= d && d <= hi, "attempt {attempt}: {d:?} outside {lo:?}..{hi:?}");
                assert!(d <= b.cap);
            }
            assert!(lo.as_secs_f64() >= b.base(attempt).as_secs_f64() * 0.8 - 1e-9);
        }
    }

    #[test]
    fn huge_attempt_numbers_do_not_overflow() {
        assert_eq!(Backoff::default().base(u32::MAX), Duration::from_secs(30));
    }

    #[test]
    fn validation_names_the_field() {
        let bad = Backoff { factor: 0.5, ..Backoff::default() };
        assert!(bad.validate().unwrap_err().contains("factor"));
        let bad = Backoff { jitter: 2.0, ..Backoff::default() };
        assert!(bad.validate().unwrap_err().contains("jitter"));
        let bad = Backoff { cap: ms(1), ..Backoff::default() };
        assert!(bad.validate().unwrap_err().contains("cap"));
    }
}
