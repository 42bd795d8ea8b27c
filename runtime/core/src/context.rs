//! What every actor of one supervision tree shares: the reaper, the output sink, the
//! event observer and feed, the jitter source and the final reports.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use bottle_proc::Reaper;
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};

use crate::events::{EventFeed, TreeEvent};
use crate::exit::Termination;
use crate::output::LineSink;
use crate::report::SupervisorReport;

/// Receives every [`TreeEvent`] synchronously, in order, none lost (tests, the chaos
/// replay). Must be cheap and must not block; observers that may be slow subscribe to
/// the [`EventFeed`] instead.
pub type Observer = Arc<dyn Fn(&TreeEvent) + Send + Sync>;

/// Shared by all actors of one tree.
#[derive(Clone)]
pub struct TreeContext {
    pub(crate) reaper: Reaper,
    pub(crate) sink: LineSink,
    pub(crate) observer: Option<Observer>,
    pub(crate) feed: EventFeed,
    rng: Arc<Mutex<StdRng>>,
    pub(crate) reports: Arc<Mutex<BTreeMap<String, SupervisorReport>>>,
    started: Instant,
    shutdown: Arc<tokio::sync::watch::Sender<bool>>,
}

impl std::fmt::Debug for TreeContext {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TreeContext").finish_non_exhaustive()
    }
}

impl TreeContext {
    /// A context over `reaper`, writing child output to `sink`; `seed` fixes jitter.
    pub fn new(reaper: Reaper, sink: LineSink, observer: Option<Observer>, seed: u64) -> Self {
        TreeContext {
            reaper,
            sink,
            observer,
            feed: EventFeed::default(),
            rng: Arc::new(Mutex::new(StdRng::seed_from_u64(seed))),
            reports: Arc::new(Mutex::new(BTreeMap::new())),
            started: Instant::now(),
            shutdown: Arc::new(tokio::sync::watch::channel(false).0),
        }
    }

    /// Marks the whole tree as shutting down: starts in progress give up (a child still
    /// waiting for readiness is stopped) and no supervisor starts another child.
    pub(crate) fn request_shutdown(&self) {
        self.shutdown.send_replace(true);
    }

    /// Whether shutdown was requested for the tree.
    pub(crate) fn shutdown_requested(&self) -> bool {
        *self.shutdown.borrow()
    }

    /// Resolves once shutdown is requested.
    pub(crate) async fn shutdown_signalled(&self) {
        let mut rx = self.shutdown.subscribe();
        let _ = rx.wait_for(|requested| *requested).await;
    }

    pub(crate) fn observe(&self, event: TreeEvent) {
        if let Some(observer) = &self.observer {
            observer(&event);
        }
        self.feed.publish(event);
    }

    /// `now` as an offset from the tree's start: the time of [`TreeEvent`]s.
    pub(crate) fn at(&self, now: Instant) -> Duration {
        now.saturating_duration_since(self.started)
    }

    /// The instant the tree started: the base of [`TreeEvent`] times.
    pub fn started_at(&self) -> Instant {
        self.started
    }

    pub(crate) fn jitter_draw(&self) -> f64 {
        self.rng.lock().unwrap_or_else(|p| p.into_inner()).random::<f64>()
    }

    pub(crate) fn store_report(&self, report: SupervisorReport) {
        self.reports.lock().unwrap_or_else(|p| p.into_inner()).insert(report.path.clone(), report);
    }

    /// The last report of every supervisor in the tree, by path.
    pub fn reports(&self) -> Vec<SupervisorReport> {
        self.reports.lock().unwrap_or_else(|p| p.into_inner()).values().cloned().collect()
    }

    /// Milliseconds since the tree started: the one time base of reports.
    pub fn since_start_ms(&self) -> u64 {
        u64::try_from(self.started.elapsed().as_millis()).unwrap_or(u64::MAX)
    }

    /// The reaper.
    pub fn reaper(&self) -> &Reaper {
        &self.reaper
    }
}

/// Where a child leaves its [`Termination`] before its actor ends, so the supervisor
/// reads a typed outcome instead of parsing a stop-reason string.
pub type ExitSlot = Arc<Mutex<Option<Termination>>>;

pub(crate) fn new_slot() -> ExitSlot {
    Arc::new(Mutex::new(None))
}

pub(crate) fn fill_slot(slot: &ExitSlot, termination: Termination) {
    let mut guard = slot.lock().unwrap_or_else(|p| p.into_inner());
    if guard.is_none() {
        *guard = Some(termination);
    }
}

pub(crate) fn take_slot(slot: &ExitSlot) -> Option<Termination> {
    slot.lock().unwrap_or_else(|p| p.into_inner()).take()
}
