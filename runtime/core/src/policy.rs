//! The restart policy as a pure state machine: no actors, no clocks, no randomness of
//! its own (time and the jitter draw are inputs), so every decision is unit-testable
//! and the chaos test can replay a run through it.
//!
//! Hazard: a restart decided after shutdown began would start a daemon that nobody
//! stops; a child set changed behind the policy's back would make it decide on the
//! wrong indices. Children added or removed at run time go through
//! [`RestartPolicy::insert_child`] and [`RestartPolicy::remove_child`], so group
//! strategies apply to the new order. [`RestartPolicy::begin_shutdown`] makes every later exit an
//! [`Decision::Ignore`], and the supervisor drops restarts already scheduled.

use std::collections::VecDeque;
use std::time::{Duration, Instant};

use crate::backoff::Backoff;
use crate::exit::ExitClass;

/// When a child is restarted (OTP's restart types).
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum RestartType {
    /// Always restarted, whether it crashed or exited cleanly.
    Permanent,
    /// Restarted only after a crash.
    Transient,
    /// Never restarted.
    Temporary,
}

/// Which siblings restart with a crashed child.
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Strategy {
    /// Only the child that ended.
    OneForOne,
    /// Every child: the others are stopped (in reverse order) and all start again in order.
    OneForAll,
    /// The child that ended and every child started after it.
    RestForOne,
}

/// At most `max_restarts` restarts within any `period`; one more escalates.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Intensity {
    /// Restarts allowed inside the window.
    pub max_restarts: u32,
    /// The sliding window.
    pub period: Duration,
}

impl Default for Intensity {
    /// OTP's default: 1 restart in 5 seconds.
    fn default() -> Intensity {
        Intensity { max_restarts: 1, period: Duration::from_secs(5) }
    }
}

/// The policy-relevant part of one child spec.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct ChildPolicy {
    /// Restart type.
    pub restart: RestartType,
    /// Whether this child ending for good ends its supervisor (OTP `significant`).
    pub significant: bool,
    /// Restart delay curve.
    pub backoff: Backoff,
    /// How long a child must have been up (ready and alive) for its backoff to reset.
    pub reset_after: Duration,
}

/// What the supervisor must do after a child ended.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Decision {
    /// Shutdown already began: do nothing.
    Ignore,
    /// The child stays down (temporary, transient after a clean exit, or a permanent
    /// failure of a child that is not significant).
    LeaveDown,
    /// Stop `stop` (already in stop order), then after `delay` start `start` in order.
    Restart {
        /// Running siblings to stop first, in the order to stop them.
        stop: Vec<usize>,
        /// Children to start, in start order.
        start: Vec<usize>,
        /// How long to wait before starting them.
        delay: Duration,
        /// The crashed child's attempt number (1 after a reset).
        attempt: u32,
    },
    /// A significant child ended for good: the supervisor shuts down. `clean` tells
    /// whether that ending was clean.
    Shutdown {
        /// Whether the significant child ended cleanly.
        clean: bool,
    },
    /// More than `max_restarts` in `period`: the supervisor gives up and escalates.
    Escalate,
}

#[derive(Clone, Copy, Debug, Default)]
struct ChildTrack {
    attempts: u32,
    up_since: Option<Instant>,
    running: bool,
}

/// The state machine. One per supervisor.
#[derive(Debug)]
pub struct RestartPolicy {
    strategy: Strategy,
    intensity: Intensity,
    children: Vec<ChildPolicy>,
    tracks: Vec<ChildTrack>,
    restarts: VecDeque<Instant>,
    shutting_down: bool,
}

impl RestartPolicy {
    /// A policy for `children` in start order.
    pub fn new(strategy: Strategy, intensity: Intensity, children: Vec<ChildPolicy>) -> Self {
        let tracks = vec![ChildTrack::default(); children.len()];
        RestartPolicy {
            strategy,
            intensity,
            children,
            tracks,
            restarts: VecDeque::new(),
            shutting_down: false,
        }
    }

    /// Child `idx` is up (started and, if it has a readiness check, ready) at `now`.
    pub fn on_started(&mut self, idx: usize, now: Instant) {
        let track = &mut self.tracks[idx];
        track.running = true;
        track.up_since = Some(now);
    }

    /// Replaces child `idx`'s policy (after a configuration reload). Its attempt counter
    /// and up time are kept.
    pub fn set_child_policy(&mut self, idx: usize, policy: ChildPolicy) {
        self.children[idx] = policy;
    }

    /// A child added at run time takes place `idx` of the start order (`idx` may be the
    /// current length: appended); the children from `idx` on move one place later. It is
    /// counted as down until [`RestartPolicy::on_started`].
    ///
    /// # Panics
    /// If `idx` is past the end (the supervisor checks it first).
    pub fn insert_child(&mut self, idx: usize, policy: ChildPolicy) {
        self.children.insert(idx, policy);
        self.tracks.insert(idx, ChildTrack::default());
    }

    /// Child `idx` (already stopped) leaves the policy; later children move one place
    /// earlier. The intensity window keeps the restarts it counted.
    ///
    /// # Panics
    /// If `idx` is out of range.
    pub fn remove_child(&mut self, idx: usize) {
        self.children.remove(idx);
        self.tracks.remove(idx);
    }

    /// How many children the policy knows.
    pub fn len(&self) -> usize {
        self.children.len()
    }

    /// Whether the policy has no children.
    pub fn is_empty(&self) -> bool {
        self.children.is_empty()
    }

    /// Child `idx` was stopped on purpose (by a group restart or shutdown): no decision.
    pub fn on_stopped(&mut self, idx: usize) {
        let track = &mut self.tracks[idx];
        track.running = false;
        track.up_since = None;
    }

    /// Whether child `idx` is currently counted as running.
    pub fn is_running(&self, idx: usize) -> bool {
        self.tracks[idx].running
    }

    /// The attempt counter of child `idx` (restarts since its last backoff reset).
    pub fn attempts(&self, idx: usize) -> u32 {
        self.tracks[idx].attempts
    }

    /// From now on every exit is ignored. Idempotent.
    pub fn begin_shutdown(&mut self) {
        self.shutting_down = true;
    }

    /// Whether shutdown began.
    pub fn shutting_down(&self) -> bool {
        self.shutting_down
    }

    /// Child `idx` ended on its own (or failed to start) with `class` at `now`.
    /// `unit` in `[0, 1)` is the jitter draw.
    pub fn on_exit(&mut self, idx: usize, class: ExitClass, now: Instant, unit: f64) -> Decision {
        let policy = self.children[idx];
        let track = &mut self.tracks[idx];
        let was_up_since = track.up_since.take();
        track.running = false;
        if self.shutting_down {
            return Decision::Ignore;
        }
        // Backoff resets only after a healthy dwell (ready and alive for reset_after).
        if let Some(since) = was_up_since
            && now.saturating_duration_since(since) >= policy.reset_after
        {
            track.attempts = 0;
        }
        let restart = match (class, policy.restart) {
            (ExitClass::Permanent, _) => false,
            (_, RestartType::Temporary) => false,
            (ExitClass::Clean, RestartType::Transient) => false,
            (_, RestartType::Permanent) | (ExitClass::Crash, RestartType::Transient) => true,
        };
        if !restart {
            return if policy.significant {
                Decision::Shutdown { clean: class == ExitClass::Clean }
            } else {
                Decision::LeaveDown
            };
        }
        // Intensity: count this restart in the sliding window.
        while let Some(&first) = self.restarts.front() {
            if now.saturating_duration_since(first) >= self.intensity.period {
                self.restarts.pop_front();
            } else {
                break;
            }
        }
        self.restarts.push_back(now);
        if self.restarts.len() > self.intensity.max_restarts as usize {
            return Decision::Escalate;
        }
        let track = &mut self.tracks[idx];
        track.attempts = track.attempts.saturating_add(1);
        let attempt = track.attempts;
        let delay = policy.backoff.delay(attempt, unit);
        let (stop, start) = self.group(idx);
        for &s in &stop {
            self.on_stopped(s);
        }
        Decision::Restart { stop, start, delay, attempt }
    }

    /// The siblings to stop and the children to start for a restart of `idx`.
    fn group(&self, idx: usize) -> (Vec<usize>, Vec<usize>) {
        let members: Vec<usize> = match self.strategy {
            Strategy::OneForOne => return (Vec::new(), vec![idx]),
            Strategy::OneForAll => (0..self.children.len()).collect(),
            Strategy::RestForOne => (idx..self.children.len()).collect(),
        };
        let others = members.iter().copied().filter(|&j| j != idx);
        let stop: Vec<usize> = others.filter(|&j| self.tracks[j].running).rev().collect();
        // Temporary siblings are stopped but not restarted (as in OTP).
        let start = members
            .into_iter()
            .filter(|&j| {
                j == idx
                    || (stop.contains(&j) && self.children[j].restart != RestartType::Temporary)
            })
            .collect();
        (stop, start)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ms(n: u64) -> Duration {
        Duration::from_millis(n)
    }

    fn child(restart: RestartType) -> ChildPolicy {
        ChildPolicy {
            restart,
            significant: false,
            backoff: Backoff { initial: ms(100), factor: 2.0, cap: ms(1000), jitter: 0.0 },
            reset_after: Duration::from_secs(10),
        }
    }

    fn started(
        strategy: Strategy,
        intensity: Intensity,
        kids: Vec<ChildPolicy>,
    ) -> (RestartPolicy, Instant) {
        let t0 = Instant::now();
        let n = kids.len();
        let mut p = RestartPolicy::new(strategy, intensity, kids);
        for i in 0..n {
            p.on_started(i, t0);
        }
        (p, t0)
    }

    fn lenient() -> Intensity {
        Intensity { max_restarts: 100, period: Duration::from_secs(1) }
    }

    fn restart(stop: Vec<usize>, start: Vec<usize>, delay: Duration, attempt: u32) -> Decision {
        Decision::Restart { stop, start, delay, attempt }
    }

    #[test]
    fn restart_types_follow_the_exit_class() {
        use ExitClass::{Clean, Crash};
        let cases = [
            (RestartType::Permanent, Clean, true),
            (RestartType::Permanent, Crash, true),
            (RestartType::Permanent, ExitClass::Permanent, false),
            (RestartType::Transient, Clean, false),
            (RestartType::Transient, Crash, true),
            (RestartType::Transient, ExitClass::Permanent, false),
            (RestartType::Temporary, Clean, false),
            (RestartType::Temporary, Crash, false),
        ];
        for (restart_type, class, expect_restart) in cases {
            let (mut p, t0) = started(Strategy::OneForOne, lenient(), vec![child(restart_type)]);
            let d = p.on_exit(0, class, t0 + ms(1), 0.5);
            assert_eq!(
                matches!(d, Decision::Restart { .. }),
                expect_restart,
                "{restart_type:?} after {class:?} gave {d:?}"
            );
            if !expect_restart {
                assert_eq!(d, Decision::LeaveDown);
            }
        }
    }

    #[test]
    fn significant_child_that_stays_down_shuts_the_supervisor_down() {
        let mut kid = child(RestartType::Transient);
        kid.significant = true;
        let (mut p, t0) = started(Strategy::OneForOne, lenient(), vec![kid]);
        assert_eq!(p.on_exit(0, ExitClass::Clean, t0, 0.5), Decision::Shutdown { clean: true });
        p.on_started(0, t0);
        assert_eq!(
            p.on_exit(0, ExitClass::Permanent, t0, 0.5),
            Decision::Shutdown { clean: false }
        );
    }

    #[test]
    fn one_for_one_restarts_only_the_child() {
        let kids = vec![child(RestartType::Permanent); 3];
        let (mut p, t0) = started(Strategy::OneForOne, lenient(), kids);
        assert_eq!(p.on_exit(1, ExitClass::Crash, t0, 0.5), restart(vec![], vec![1], ms(100), 1));
    }

    #[test]
    fn one_for_all_stops_others_in_reverse_and_restarts_all_in_order() {
        let kids = vec![child(RestartType::Permanent); 4];
        let (mut p, t0) = started(Strategy::OneForAll, lenient(), kids);
        assert_eq!(
            p.on_exit(1, ExitClass::Crash, t0, 0.5),
            restart(vec![3, 2, 0], vec![0, 1, 2, 3], ms(100), 1)
        );
        assert!(!p.is_running(0) && !p.is_running(3));
    }

    #[test]
    fn rest_for_one_restarts_the_child_and_later_siblings() {
        let kids = vec![child(RestartType::Permanent); 4];
        let (mut p, t0) = started(Strategy::RestForOne, lenient(), kids);
        assert_eq!(
            p.on_exit(1, ExitClass::Crash, t0, 0.5),
            restart(vec![3, 2], vec![1, 2, 3], ms(100), 1)
        );
    }

    #[test]
    fn group_restart_drops_temporary_and_stopped_siblings() {
        let kids = vec![
            child(RestartType::Permanent),
            child(RestartType::Temporary),
            child(RestartType::Permanent),
            child(RestartType::Transient),
        ];
        let (mut p, t0) = started(Strategy::OneForAll, lenient(), kids);
        p.on_stopped(3); // already down: not stopped again, not restarted
        assert_eq!(
            p.on_exit(2, ExitClass::Crash, t0, 0.5),
            restart(vec![1, 0], vec![0, 2], ms(100), 1)
        );
    }

    #[test]
    fn intensity_window_escalates_on_the_first_restart_over_budget() {
        let intensity = Intensity { max_restarts: 3, period: Duration::from_secs(1) };
        let (mut p, t0) =
            started(Strategy::OneForOne, intensity, vec![child(RestartType::Permanent)]);
        for i in 0..3 {
            let d = p.on_exit(0, ExitClass::Crash, t0 + ms(i * 10), 0.5);
            assert!(matches!(d, Decision::Restart { .. }), "restart {i}: {d:?}");
            p.on_started(0, t0 + ms(i * 10));
        }
        assert_eq!(p.on_exit(0, ExitClass::Crash, t0 + ms(40), 0.5), Decision::Escalate);
    }

    #[test]
    fn intensity_window_slides() {
        let intensity = Intensity { max_restarts: 2, period: Duration::from_secs(1) };
        let (mut p, t0) =
            started(Strategy::OneForOne, intensity, vec![child(RestartType::Permanent)]);
        // Restarts at 0 s, 0.6 s, 1.2 s, 1.8 s: never more than 2 within any 1 s.
        for i in 0..10u64 {
            let now = t0 + ms(600 * i);
            let d = p.on_exit(0, ExitClass::Crash, now, 0.5);
            assert!(matches!(d, Decision::Restart { .. }), "restart {i}: {d:?}");
            p.on_started(0, now);
        }
    }

    #[test]
    fn zero_restarts_allowed_escalates_at_once() {
        let intensity = Intensity { max_restarts: 0, period: Duration::from_secs(1) };
        let (mut p, t0) =
            started(Strategy::OneForOne, intensity, vec![child(RestartType::Permanent)]);
        assert_eq!(p.on_exit(0, ExitClass::Crash, t0, 0.5), Decision::Escalate);
    }

    #[test]
    fn backoff_grows_per_attempt_and_resets_after_a_healthy_dwell() {
        let (mut p, t0) =
            started(Strategy::OneForOne, lenient(), vec![child(RestartType::Permanent)]);
        let mut now = t0;
        let mut delays = Vec::new();
        for _ in 0..5 {
            now += ms(5);
            match p.on_exit(0, ExitClass::Crash, now, 0.5) {
                Decision::Restart { delay, .. } => delays.push(delay),
                d => panic!("{d:?}"),
            }
            p.on_started(0, now);
        }
        assert_eq!(delays, vec![ms(100), ms(200), ms(400), ms(800), ms(1000)]);
        // Up for exactly the dwell: the next crash starts the curve again.
        now += Duration::from_secs(10);
        assert_eq!(p.on_exit(0, ExitClass::Crash, now, 0.5), restart(vec![], vec![0], ms(100), 1));
    }

    #[test]
    fn no_reset_when_the_child_never_came_up() {
        let (mut p, t0) =
            started(Strategy::OneForOne, lenient(), vec![child(RestartType::Permanent)]);
        assert!(matches!(
            p.on_exit(0, ExitClass::Crash, t0, 0.5),
            Decision::Restart { attempt: 1, .. }
        ));
        // Start failed (never on_started), long after: still attempt 2.
        let later = t0 + Duration::from_secs(60);
        assert!(matches!(
            p.on_exit(0, ExitClass::Crash, later, 0.5),
            Decision::Restart { attempt: 2, .. }
        ));
    }

    #[test]
    fn no_restart_once_shutdown_began() {
        let kids = vec![child(RestartType::Permanent); 2];
        let (mut p, t0) = started(Strategy::OneForAll, lenient(), kids);
        p.begin_shutdown();
        p.begin_shutdown();
        for class in [ExitClass::Clean, ExitClass::Crash, ExitClass::Permanent] {
            assert_eq!(p.on_exit(0, class, t0, 0.5), Decision::Ignore);
        }
        assert!(p.shutting_down());
    }

    #[test]
    fn an_inserted_child_joins_the_group_at_its_place() {
        let kids = vec![child(RestartType::Permanent); 3];
        let (mut p, t0) = started(Strategy::RestForOne, lenient(), kids);
        p.insert_child(1, child(RestartType::Permanent));
        assert_eq!(p.len(), 4);
        assert!(!p.is_running(1), "an added child is down until it starts");
        p.on_started(1, t0);
        // The old child 0 crashes: everything after it, the added one included, restarts.
        assert_eq!(
            p.on_exit(0, ExitClass::Crash, t0, 0.5),
            restart(vec![3, 2, 1], vec![0, 1, 2, 3], ms(100), 1)
        );
    }

    #[test]
    fn an_appended_child_is_restarted_by_the_same_policy() {
        let (mut p, t0) =
            started(Strategy::OneForOne, lenient(), vec![child(RestartType::Permanent)]);
        p.insert_child(1, child(RestartType::Transient));
        p.on_started(1, t0);
        assert_eq!(p.on_exit(1, ExitClass::Crash, t0, 0.5), restart(vec![], vec![1], ms(100), 1));
        p.on_started(1, t0);
        assert_eq!(p.on_exit(1, ExitClass::Clean, t0, 0.5), Decision::LeaveDown);
    }

    #[test]
    fn a_removed_child_leaves_the_group_and_later_children_move_up() {
        let kids = vec![
            child(RestartType::Permanent),
            child(RestartType::Temporary),
            child(RestartType::Permanent),
        ];
        let (mut p, t0) = started(Strategy::OneForAll, lenient(), kids);
        p.on_stopped(1);
        p.remove_child(1);
        assert_eq!(p.len(), 2);
        // The former child 2 is now child 1 and keeps its policy (permanent).
        assert_eq!(
            p.on_exit(0, ExitClass::Crash, t0, 0.5),
            restart(vec![1], vec![0, 1], ms(100), 1)
        );
    }

    #[test]
    fn removal_keeps_the_restarts_already_counted() {
        let intensity = Intensity { max_restarts: 1, period: Duration::from_secs(10) };
        let kids = vec![child(RestartType::Permanent); 2];
        let (mut p, t0) = started(Strategy::OneForOne, intensity, kids);
        assert!(matches!(p.on_exit(0, ExitClass::Crash, t0, 0.5), Decision::Restart { .. }));
        p.remove_child(0);
        // The budget was spent by the removed child: the next restart escalates.
        assert_eq!(p.on_exit(0, ExitClass::Crash, t0 + ms(1), 0.5), Decision::Escalate);
    }

    #[test]
    fn jitter_draw_moves_the_delay_inside_the_band() {
        let mut kid = child(RestartType::Permanent);
        kid.backoff.jitter = 0.5;
        let (mut p, t0) = started(Strategy::OneForOne, lenient(), vec![kid]);
        let d_lo = p.on_exit(0, ExitClass::Crash, t0, 0.0);
        assert_eq!(d_lo, restart(vec![], vec![0], ms(50), 1));
        p.on_started(0, t0);
        let d_hi = p.on_exit(0, ExitClass::Crash, t0, 1.0);
        assert_eq!(d_hi, restart(vec![], vec![0], ms(300), 2));
    }
}
