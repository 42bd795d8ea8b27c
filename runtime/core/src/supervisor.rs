//! The supervisor actor: ordered children, one restart policy for actors and processes.
//!
//! Hazard: a restart that starts after shutdown began leaks a daemon; a supervision
//! event from a child we stopped on purpose must not count as a crash. So: every
//! intentional stop first forgets the child's actor id (its later event is ignored),
//! scheduled restarts carry an epoch that shutdown bumps, and the pure
//! [`RestartPolicy`] refuses every decision once shutdown began.
//! Children start in order and each `spawn_linked` returns only after the child is
//! ready; they stop in reverse order in `post_stop`, each within its stop timeout.
//! Children added at run time take their place in that order and start there; a
//! removed child gets the same graceful stop. Because indices move when the child set
//! changes, anything that outlives one handler (a scheduled restart, the rest of a
//! batch waiting for it) names children by [`ChildId`], never by index.

use std::collections::{HashMap, VecDeque};
use std::sync::Arc;
use std::sync::atomic::{AtomicI32, Ordering};
use std::time::{Duration, Instant};

use ractor::{
    Actor, ActorCell, ActorId, ActorProcessingErr, ActorRef, RpcReplyPort, SupervisionEvent,
};

use crate::context::{ExitSlot, TreeContext, fill_slot, new_slot, take_slot};
use crate::events::TreeEvent;
use crate::exit::{CrashRecord, ExitClass, Termination, TreeCause};
use crate::policy::{Decision, RestartPolicy};
use crate::process::{ProcessActor, ProcessArgs, ProcessMsg};
use crate::report::{ChildReport, HISTORY, HistoryEntry, SupervisorReport};
use crate::spec::{ChildSpec, ChildStart, ConfigError, SupervisorSpec};

/// Extra time granted on top of a child's stop timeout before it is killed outright.
const STOP_MARGIN: Duration = Duration::from_secs(1);

/// How long a supervisor waits for a nested supervisor's restart, add or fault reply.
const NESTED_CALL: Duration = Duration::from_secs(30);

/// How long a supervisor waits for a signal or reload reply.
const QUICK_CALL: Duration = Duration::from_secs(5);

/// Why a control request to a running tree (restart, signal, reload, add, remove,
/// fault injection) was refused or failed.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum ControlError {
    /// No child has that name: `path` is the supervisor's path and the first name
    /// that is missing under it.
    #[error("no child {:?} under {}", leaf(path), parent(path))]
    NoSuchChild {
        /// `root/sub/name`.
        path: String,
    },
    /// The tree (its root supervisor) is not up.
    #[error("the tree is not up")]
    TreeNotUp,
    /// The child exists but is down.
    #[error("{path} is not running")]
    NotRunning {
        /// `root/sub/name`.
        path: String,
    },
    /// The supervisor began its shutdown; it takes no more requests that start children.
    #[error("{supervisor} is shutting down")]
    ShuttingDown {
        /// The supervisor's path.
        supervisor: String,
    },
    /// The request does not apply to this kind of child.
    #[error("{path} is not {expected}")]
    WrongKind {
        /// `root/sub/name`.
        path: String,
        /// What it would have to be (`a running supervisor`, `a process`, ...).
        expected: &'static str,
    },
    /// The actor that had to answer did not answer in time.
    #[error("{path} did not answer within {timeout:?}")]
    Timeout {
        /// Who did not answer.
        path: String,
        /// How long we waited.
        timeout: Duration,
    },
    /// The actor that had to answer is gone.
    #[error("{path} cannot be reached")]
    Unreachable {
        /// Who could not be reached.
        path: String,
    },
    /// The child was (re)started but failed to start; the policy took it from there.
    #[error("{path} failed to start: {what}")]
    StartFailed {
        /// `root/sub/name`.
        path: String,
        /// Its termination, readable.
        what: String,
    },
    /// The child refused the request (an actor's reload hook, a fault that does not apply).
    #[error("{path} refused: {reason}")]
    Refused {
        /// `root/sub/name`.
        path: String,
        /// Why.
        reason: String,
    },
    /// A child with this name already exists.
    #[error("{path} already exists")]
    DuplicateName {
        /// `root/sub/name` of the existing child.
        path: String,
    },
    /// The place asked for is past the end of the start order.
    #[error("index {index} is past the end of {supervisor}'s {len} children")]
    BadIndex {
        /// The supervisor's path.
        supervisor: String,
        /// The index asked for.
        index: usize,
        /// How many children it has.
        len: usize,
    },
    /// The child spec to add is invalid; nothing was started.
    #[error("invalid child spec")]
    InvalidSpec(#[source] ConfigError),
}

fn leaf(path: &str) -> &str {
    path.rsplit_once('/').map_or(path, |(_, leaf)| leaf)
}

fn parent(path: &str) -> &str {
    path.rsplit_once('/').map_or("", |(parent, _)| parent)
}

/// A [`ControlError`] for a failed call to the actor at `path`.
pub(crate) fn call_error<M>(
    path: &str,
    timeout: Duration,
    err: ractor::RactorErr<M>,
) -> ControlError {
    match err {
        ractor::RactorErr::Timeout => ControlError::Timeout { path: path.to_string(), timeout },
        _ => ControlError::Unreachable { path: path.to_string() },
    }
}

/// Milliseconds of `d`, for `call_t!`.
fn millis(d: Duration) -> u64 {
    u64::try_from(d.as_millis()).unwrap_or(u64::MAX)
}

/// A child's identity for the life of its supervisor: unlike its index, it does not
/// move when children are added or removed, and is never reused.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct ChildId(u64);

/// Everything a supervisor can be asked to do. Closed on purpose.
#[derive(Debug)]
pub enum SupervisorMsg {
    /// Sent by this supervisor's own restart timer. Ignored if `epoch` is stale
    /// (shutdown began after it was scheduled).
    RestartDue {
        /// Epoch at scheduling time.
        epoch: u64,
        /// Children to start, in order (removed ones are skipped).
        start: Vec<ChildId>,
    },
    /// Stop every child in reverse order, then end with cause `Shutdown`. Idempotent.
    Shutdown,
    /// A snapshot of this subtree. Callers must use a timeout.
    Status(RpcReplyPort<SupervisorStatus>),
    /// Operator restart of the child at `path` (`name` or `sub/name`): stop it and
    /// start it again at once. Not a crash, no backoff.
    RestartChild {
        /// Child path relative to this supervisor.
        path: String,
        /// Result.
        reply: RpcReplyPort<Result<(), ControlError>>,
    },
    /// Add a direct child at place `index` of the start order (`None`: at the end) and
    /// start it there. Refused once shutdown began, for a name already taken and for an
    /// invalid spec. Replies once it is started, or `StartFailed` (the policy then
    /// treats that like a crash of the added child).
    AddChild {
        /// The new child.
        spec: Box<ChildSpec>,
        /// Its place; `None` appends.
        index: Option<usize>,
        /// Result.
        reply: RpcReplyPort<Result<(), ControlError>>,
    },
    /// Stop the direct child `name` gracefully (as at shutdown) and remove it. Replies
    /// once it is stopped and gone.
    RemoveChild {
        /// Its name.
        name: String,
        /// Result.
        reply: RpcReplyPort<Result<(), ControlError>>,
    },
    /// Replace the spec of the direct child named like `spec.name`. Takes effect at its
    /// next start (a restart, or an operator restart); the running child is untouched.
    UpdateChild {
        /// The new spec (its name selects the child).
        spec: Box<ChildSpec>,
        /// Result.
        reply: RpcReplyPort<Result<(), ControlError>>,
    },
    /// Reload the actor child at `path` through its factory's reload hook.
    ReloadChild {
        /// Child path relative to this supervisor.
        path: String,
        /// What it reported.
        reply: RpcReplyPort<Result<String, ControlError>>,
    },
    /// Send `signal` to the process child at `path`; replies whether it was delivered.
    SignalChild {
        /// Child path relative to this supervisor.
        path: String,
        /// Signal number.
        signal: i32,
        /// Result.
        reply: RpcReplyPort<Result<bool, ControlError>>,
    },
    /// Fault injection at `path` (empty path: this supervisor itself).
    #[cfg(feature = "fault-injection")]
    Inject {
        /// Child path relative to this supervisor.
        path: String,
        /// What to do.
        fault: crate::fault::Fault,
        /// Result.
        reply: RpcReplyPort<Result<(), ControlError>>,
    },
}

/// A live snapshot of one child.
#[derive(Clone, Debug, PartialEq, serde::Serialize)]
pub struct ChildStatus {
    /// Its name.
    pub name: String,
    /// `process`, `supervisor` or `actor`.
    pub kind: &'static str,
    /// Whether it is up.
    pub running: bool,
    /// Whether it passed its readiness check (children start only once ready, so this
    /// is `running`; kept separate for clients that show both).
    pub ready: bool,
    /// Process id, for running processes.
    pub pid: Option<i32>,
    /// Seconds since it became ready, for running processes.
    pub uptime_secs: Option<f64>,
    /// Restarts performed.
    pub restarts: u32,
    /// Its last termination, readable.
    pub last_exit: Option<String>,
    /// Its restart type.
    pub restart: crate::policy::RestartType,
    /// The subtree, for nested supervisors.
    pub children: Option<Vec<ChildStatus>>,
}

/// A live snapshot of a supervisor.
#[derive(Clone, Debug, PartialEq, serde::Serialize)]
pub struct SupervisorStatus {
    /// `root/sub`.
    pub path: String,
    /// Whether shutdown began.
    pub shutting_down: bool,
    /// Children in start order.
    pub children: Vec<ChildStatus>,
}

/// Arguments of [`SupervisorActor`].
#[derive(Debug)]
pub struct SupervisorArgs {
    /// The spec (validated by the caller).
    pub spec: SupervisorSpec,
    /// `root` or `parent/name`.
    pub path: String,
    /// Shared tree context.
    pub ctx: TreeContext,
    /// Where this supervisor leaves its outcome for its parent.
    pub slot: ExitSlot,
}

/// The actor (stateless; see [`SupervisorState`]).
#[derive(Debug)]
pub struct SupervisorActor;

#[derive(Debug, Clone)]
enum ChildHandle {
    Process(ActorRef<ProcessMsg>),
    Supervisor(ActorRef<SupervisorMsg>),
    Actor(ActorCell),
}

impl ChildHandle {
    fn cell(&self) -> ActorCell {
        match self {
            ChildHandle::Process(r) => r.get_cell(),
            ChildHandle::Supervisor(r) => r.get_cell(),
            ChildHandle::Actor(c) => c.clone(),
        }
    }
}

#[derive(Debug)]
struct ChildSlot {
    id: ChildId,
    spec: ChildSpec,
    handle: Option<ChildHandle>,
    exit: ExitSlot,
    starts: u32,
    history: VecDeque<HistoryEntry>,
    #[cfg(feature = "fault-injection")]
    faults: crate::fault::PendingFaults,
}

impl ChildSlot {
    fn new(id: ChildId, spec: ChildSpec) -> ChildSlot {
        ChildSlot {
            id,
            spec,
            handle: None,
            exit: new_slot(),
            starts: 0,
            history: VecDeque::new(),
            #[cfg(feature = "fault-injection")]
            faults: Default::default(),
        }
    }

    fn kind(&self) -> &'static str {
        match self.spec.start {
            ChildStart::Process(_) => "process",
            ChildStart::Supervisor(_) => "supervisor",
            ChildStart::Actor(_) => "actor",
        }
    }

    fn restarts(&self) -> u32 {
        self.starts.saturating_sub(1)
    }
}

/// The supervisor's state.
#[derive(Debug)]
pub struct SupervisorState {
    path: String,
    ctx: TreeContext,
    slot: ExitSlot,
    policy: RestartPolicy,
    children: Vec<ChildSlot>,
    by_actor: HashMap<ActorId, ChildId>,
    epoch: u64,
    next_id: u64,
    pending: Vec<ChildId>,
    cause: Option<TreeCause>,
    first_crash: Option<CrashRecord>,
}

impl Actor for SupervisorActor {
    type Msg = SupervisorMsg;
    type State = SupervisorState;
    type Arguments = SupervisorArgs;

    /// Starts every child in order, each ready before the next (OTP `start_link`).
    async fn pre_start(
        &self,
        myself: ActorRef<SupervisorMsg>,
        args: SupervisorArgs,
    ) -> Result<SupervisorState, ActorProcessingErr> {
        let SupervisorArgs { spec, path, ctx, slot } = args;
        let policy = RestartPolicy::new(
            spec.strategy,
            spec.intensity,
            spec.children.iter().map(ChildSpec::policy).collect(),
        );
        let children = spec
            .children
            .into_iter()
            .zip(0..)
            .map(|(spec, id)| ChildSlot::new(ChildId(id), spec))
            .collect::<Vec<_>>();
        let mut state = SupervisorState {
            path,
            ctx,
            slot,
            policy,
            next_id: children.len() as u64,
            children,
            by_actor: HashMap::new(),
            epoch: 0,
            pending: Vec::new(),
            cause: None,
            first_crash: None,
        };
        let all: Vec<usize> = (0..state.children.len()).collect();
        state.start_batch(&myself, all).await;
        Ok(state)
    }

    async fn handle(
        &self,
        myself: ActorRef<SupervisorMsg>,
        msg: SupervisorMsg,
        state: &mut SupervisorState,
    ) -> Result<(), ActorProcessingErr> {
        match msg {
            SupervisorMsg::RestartDue { epoch, start } => {
                if epoch == state.epoch && !state.policy.shutting_down() {
                    let start = state.indices(&start);
                    state.start_batch(&myself, start).await;
                }
            }
            SupervisorMsg::Shutdown => state.begin_shutdown(&myself, TreeCause::Shutdown),
            SupervisorMsg::Status(reply) => {
                let status = state.status().await;
                if !reply.is_closed() {
                    let _ = reply.send(status);
                }
            }
            SupervisorMsg::RestartChild { path, reply } => {
                let result = state.restart_child(&myself, &path).await;
                if !reply.is_closed() {
                    let _ = reply.send(result);
                }
            }
            SupervisorMsg::AddChild { spec, index, reply } => {
                let result = state.add_child(&myself, *spec, index).await;
                if !reply.is_closed() {
                    let _ = reply.send(result);
                }
            }
            SupervisorMsg::RemoveChild { name, reply } => {
                let result = state.remove_child(&name).await;
                if !reply.is_closed() {
                    let _ = reply.send(result);
                }
            }
            SupervisorMsg::UpdateChild { spec, reply } => {
                let result = state.find(&spec.name).map(|(idx, _)| {
                    state.policy.set_child_policy(idx, spec.policy());
                    state.children[idx].spec = *spec;
                });
                if !reply.is_closed() {
                    let _ = reply.send(result);
                }
            }
            SupervisorMsg::ReloadChild { path, reply } => {
                let result = state.reload_child(&path).await;
                if !reply.is_closed() {
                    let _ = reply.send(result);
                }
            }
            SupervisorMsg::SignalChild { path, signal, reply } => {
                let result = state.signal_child(&path, signal).await;
                if !reply.is_closed() {
                    let _ = reply.send(result);
                }
            }
            #[cfg(feature = "fault-injection")]
            SupervisorMsg::Inject { path, fault, reply } => {
                if path.is_empty() && fault == crate::fault::Fault::Panic {
                    let _ = reply.send(Ok(()));
                    panic!("fault injection: panic in supervisor {}", state.path);
                }
                let result = state.inject(&path, fault).await;
                if !reply.is_closed() {
                    let _ = reply.send(result);
                }
            }
        }
        Ok(())
    }

    async fn handle_supervisor_evt(
        &self,
        myself: ActorRef<SupervisorMsg>,
        event: SupervisionEvent,
        state: &mut SupervisorState,
    ) -> Result<(), ActorProcessingErr> {
        let (cell, fallback) = match event {
            SupervisionEvent::ActorTerminated(cell, _, _) => {
                (cell, Termination::ActorStopped { stop_requested: false })
            }
            SupervisionEvent::ActorFailed(cell, err) => {
                (cell, Termination::ActorFailed { reason: err.to_string() })
            }
            _ => return Ok(()),
        };
        // Children we stopped on purpose were forgotten first: their events end here.
        let Some(id) = state.by_actor.remove(&cell.get_id()) else { return Ok(()) };
        let Some(idx) = state.index_of(id) else { return Ok(()) };
        state.children[idx].handle = None;
        let termination = take_slot(&state.children[idx].exit).unwrap_or(fallback);
        state.child_down(&myself, idx, termination).await;
        Ok(())
    }

    /// Stops the children in reverse start order, then leaves the outcome in the slot.
    async fn post_stop(
        &self,
        _myself: ActorRef<SupervisorMsg>,
        state: &mut SupervisorState,
    ) -> Result<(), ActorProcessingErr> {
        state.policy.begin_shutdown();
        state.epoch += 1;
        for idx in (0..state.children.len()).rev() {
            state.stop_child(idx).await;
        }
        let cause = state.cause.clone().unwrap_or(TreeCause::Shutdown);
        state.ctx.store_report(state.report(&cause));
        fill_slot(
            &state.slot,
            Termination::Supervisor { cause, first_crash: state.first_crash.clone() },
        );
        Ok(())
    }
}

/// Time to allow a child's graceful stop, subtree included.
fn stop_budget(spec: &ChildSpec) -> Duration {
    match &spec.start {
        ChildStart::Supervisor(sup) => {
            sup.children.iter().map(stop_budget).sum::<Duration>() + STOP_MARGIN
        }
        _ => spec.stop_timeout + STOP_MARGIN,
    }
}

// === impl SupervisorState ===

impl SupervisorState {
    fn child_path(&self, idx: usize) -> String {
        format!("{}/{}", self.path, self.children[idx].spec.name)
    }

    fn index_of(&self, id: ChildId) -> Option<usize> {
        self.children.iter().position(|c| c.id == id)
    }

    /// The current indices of `ids`, in order; removed children are skipped.
    fn indices(&self, ids: &[ChildId]) -> Vec<usize> {
        ids.iter().filter_map(|&id| self.index_of(id)).collect()
    }

    fn ids(&self, indices: &[usize]) -> Vec<ChildId> {
        indices.iter().map(|&idx| self.children[idx].id).collect()
    }

    fn paths(&self, indices: &[usize]) -> Vec<String> {
        indices.iter().map(|&idx| self.child_path(idx)).collect()
    }

    /// Keeps the earliest crash of the subtree (nested records arrive late, when the
    /// nested supervisor ends, so compare times rather than arrival order).
    fn note_crash(&mut self, candidate: CrashRecord) {
        if self.first_crash.as_ref().is_none_or(|c| candidate.at_ms < c.at_ms) {
            self.first_crash = Some(candidate);
        }
    }

    fn record(&mut self, idx: usize, termination: &Termination, class: ExitClass) {
        let entry = HistoryEntry {
            at_ms: self.ctx.since_start_ms(),
            what: termination.describe(),
            class,
            code: termination.code(),
        };
        let history = &mut self.children[idx].history;
        if history.len() == HISTORY {
            history.pop_front();
        }
        history.push_back(entry);
    }

    fn begin_shutdown(&mut self, myself: &ActorRef<SupervisorMsg>, cause: TreeCause) {
        if self.cause.is_none() {
            self.cause = Some(cause);
        }
        self.policy.begin_shutdown();
        self.epoch += 1;
        myself.stop(None);
    }

    /// Starts `batch` in order. A child that fails to start goes through the policy
    /// like a crash; if that schedules a restart, the rest of the batch waits for it.
    async fn start_batch(&mut self, myself: &ActorRef<SupervisorMsg>, batch: Vec<usize>) {
        let mut queue: VecDeque<usize> = batch.into();
        while let Some(idx) = queue.pop_front() {
            if self.ctx.shutdown_requested() {
                self.policy.begin_shutdown();
            }
            if self.policy.shutting_down() {
                return;
            }
            if self.children[idx].handle.is_some() {
                continue;
            }
            if let Err(termination) = self.start_child(myself, idx).await {
                if self.ctx.shutdown_requested() {
                    // Stopped during its start because the tree is shutting down.
                    self.policy.begin_shutdown();
                    let class = termination.classify(&self.children[idx].spec.permanent_exit_codes);
                    self.record(idx, &termination, class);
                    return;
                }
                let rest: Vec<usize> = queue.drain(..).collect();
                self.pending.extend(self.ids(&rest));
                let decision = self.child_down(myself, idx, termination).await;
                if !matches!(decision, Decision::Restart { .. }) {
                    let pending = std::mem::take(&mut self.pending);
                    queue.extend(self.indices(&pending));
                }
            }
        }
    }

    async fn start_child(
        &mut self,
        myself: &ActorRef<SupervisorMsg>,
        idx: usize,
    ) -> Result<(), Termination> {
        let path = self.child_path(idx);
        let exit = new_slot();
        let child = &mut self.children[idx];
        child.exit = exit.clone();
        child.starts += 1;
        let spec = child.spec.clone();
        let supervisor = myself.get_cell();
        let pid_cell = Arc::new(AtomicI32::new(0));
        let spawned = match &spec.start {
            ChildStart::Process(process) => {
                #[allow(unused_mut)]
                let mut process = process.clone();
                #[allow(unused_mut)]
                let mut ready_delay = None;
                #[cfg(feature = "fault-injection")]
                child.faults.apply(&mut process, &mut ready_delay);
                let args = ProcessArgs {
                    pid: pid_cell.clone(),
                    path: path.clone(),
                    name: spec.name.clone(),
                    spec: process,
                    stop_timeout: spec.stop_timeout,
                    slot: exit.clone(),
                    ctx: self.ctx.clone(),
                    ready_delay,
                };
                Actor::spawn_linked(None, ProcessActor, args, supervisor)
                    .await
                    .map(|(r, _)| ChildHandle::Process(r))
            }
            ChildStart::Supervisor(sup) => {
                let args = SupervisorArgs {
                    spec: sup.clone(),
                    path: path.clone(),
                    ctx: self.ctx.clone(),
                    slot: exit.clone(),
                };
                Actor::spawn_linked(None, SupervisorActor, args, supervisor)
                    .await
                    .map(|(r, _)| ChildHandle::Supervisor(r))
            }
            ChildStart::Actor(factory) => {
                factory.spawn_linked(path.clone(), supervisor).await.map(ChildHandle::Actor)
            }
        };
        match spawned {
            Ok(handle) => {
                let pid = match &handle {
                    ChildHandle::Process(_) => Some(pid_cell.load(Ordering::Acquire)),
                    _ => None,
                };
                self.by_actor.insert(handle.cell().get_id(), self.children[idx].id);
                self.children[idx].handle = Some(handle);
                let now = Instant::now();
                self.policy.on_started(idx, now);
                tracing::info!(child = %path, pid, "Started.");
                self.ctx.observe(TreeEvent::Started { path, at: self.ctx.at(now), pid });
                Ok(())
            }
            Err(err) => Err(take_slot(&exit).unwrap_or_else(|| Termination::ActorFailed {
                reason: crate::process::error_chain(&err),
            })),
        }
    }

    /// A child ended on its own or failed to start: classify, record, decide, act.
    async fn child_down(
        &mut self,
        myself: &ActorRef<SupervisorMsg>,
        idx: usize,
        termination: Termination,
    ) -> Decision {
        let now = Instant::now();
        let path = self.child_path(idx);
        let class = termination.classify(&self.children[idx].spec.permanent_exit_codes);
        self.record(idx, &termination, class);
        if !self.policy.shutting_down() {
            if let Termination::Supervisor { first_crash: Some(nested), .. } = &termination {
                self.note_crash(nested.clone());
            } else if class != ExitClass::Clean {
                self.note_crash(CrashRecord {
                    at_ms: self.ctx.since_start_ms(),
                    child: path.clone(),
                    code: termination.code(),
                    what: termination.describe(),
                });
            }
        }
        let at = self.ctx.at(now);
        self.ctx.observe(TreeEvent::Exited {
            path: path.clone(),
            at,
            termination: termination.clone(),
            class,
        });
        let decision = self.policy.on_exit(idx, class, now, self.ctx.jitter_draw());
        match &decision {
            Decision::Ignore => {}
            Decision::LeaveDown => {
                tracing::warn!(child = %path, what = %termination.describe(), "Ended; not restarted.");
                self.ctx.observe(TreeEvent::LeftDown { path: path.clone(), at });
            }
            Decision::Restart { stop, start, delay, attempt } => {
                tracing::warn!(child = %path, what = %termination.describe(), ?delay, attempt, "Ended; restarting.");
                self.ctx.observe(TreeEvent::Restarting {
                    path: path.clone(),
                    at,
                    attempt: *attempt,
                    delay: *delay,
                    stop: self.paths(stop),
                    start: self.paths(start),
                });
                for &sibling in stop {
                    self.stop_child(sibling).await;
                }
                let mut start = self.ids(start);
                for id in self.pending.drain(..) {
                    if !start.contains(&id) {
                        start.push(id);
                    }
                }
                let epoch = self.epoch;
                if delay.is_zero() {
                    let _ = myself.send_message(SupervisorMsg::RestartDue { epoch, start });
                } else {
                    myself.send_after(*delay, move || SupervisorMsg::RestartDue { epoch, start });
                }
            }
            Decision::Shutdown { clean } => {
                tracing::warn!(child = %path, what = %termination.describe(), "Significant child ended; shutting down.");
                self.ctx.observe(TreeEvent::SignificantEnded {
                    path: path.clone(),
                    at,
                    clean: *clean,
                });
                let cause = TreeCause::SignificantChildExited {
                    child: path.clone(),
                    clean: *clean,
                    code: termination.code(),
                };
                self.begin_shutdown(myself, cause);
            }
            Decision::Escalate => {
                tracing::error!(child = %path, what = %termination.describe(), "Restart intensity exceeded; escalating.");
                self.ctx.observe(TreeEvent::Escalated { path: path.clone(), at });
                let cause = TreeCause::IntensityExceeded {
                    child: path.clone(),
                    readiness_timeout: matches!(termination, Termination::ReadinessTimeout { .. }),
                };
                self.begin_shutdown(myself, cause);
            }
        }
        decision
    }

    /// Stops child `idx` on purpose (if running) and waits for it, killing it if it
    /// outlives its budget.
    async fn stop_child(&mut self, idx: usize) {
        let Some(handle) = self.children[idx].handle.take() else { return };
        let cell = handle.cell();
        self.by_actor.remove(&cell.get_id());
        self.ctx.observe(TreeEvent::Stopping {
            path: self.child_path(idx),
            at: self.ctx.at(Instant::now()),
        });
        let budget = stop_budget(&self.children[idx].spec);
        if cell.stop_and_wait(None, Some(budget)).await.is_err() {
            tracing::error!(child = %self.child_path(idx), ?budget, "Did not stop in time; killing its actor.");
            cell.kill();
        }
        self.policy.on_stopped(idx);
        if let Some(termination) = take_slot(&self.children[idx].exit) {
            let class = termination.classify(&self.children[idx].spec.permanent_exit_codes);
            self.record(idx, &termination, class);
            // A crash that happened before this stop (a nested supervisor's, or the
            // child's own exit racing our stop) still counts.
            if let Termination::Supervisor { first_crash: Some(nested), .. } = &termination {
                self.note_crash(nested.clone());
            } else if class != ExitClass::Clean && !termination.stop_requested() {
                self.note_crash(CrashRecord {
                    at_ms: self.ctx.since_start_ms(),
                    child: self.child_path(idx),
                    code: termination.code(),
                    what: termination.describe(),
                });
            }
        }
        self.ctx.observe(TreeEvent::Stopped {
            path: self.child_path(idx),
            at: self.ctx.at(Instant::now()),
        });
    }

    /// The direct child named by `path`'s first segment, and the rest of the path.
    fn find(&self, path: &str) -> Result<(usize, Option<String>), ControlError> {
        let (head, rest) = match path.split_once('/') {
            Some((head, rest)) => (head, Some(rest.to_string())),
            None => (path, None),
        };
        self.children
            .iter()
            .position(|c| c.spec.name == head)
            .map(|idx| (idx, rest))
            .ok_or_else(|| ControlError::NoSuchChild { path: format!("{}/{head}", self.path) })
    }

    /// The running nested supervisor at `idx`, for a request that goes further down.
    fn nested(&self, idx: usize) -> Result<ActorRef<SupervisorMsg>, ControlError> {
        match &self.children[idx].handle {
            Some(ChildHandle::Supervisor(sub)) => Ok(sub.clone()),
            _ => Err(ControlError::WrongKind {
                path: self.child_path(idx),
                expected: "a running supervisor",
            }),
        }
    }

    fn refuse_if_shutting_down(&self) -> Result<(), ControlError> {
        if self.policy.shutting_down() || self.ctx.shutdown_requested() {
            return Err(ControlError::ShuttingDown { supervisor: self.path.clone() });
        }
        Ok(())
    }

    async fn restart_child(
        &mut self,
        myself: &ActorRef<SupervisorMsg>,
        path: &str,
    ) -> Result<(), ControlError> {
        self.refuse_if_shutting_down()?;
        let (idx, rest) = self.find(path)?;
        if let Some(rest) = rest {
            let sub = self.nested(idx)?;
            return ractor::call_t!(
                sub,
                |reply| SupervisorMsg::RestartChild { path: rest, reply },
                millis(NESTED_CALL)
            )
            .map_err(|e| call_error(&self.child_path(idx), NESTED_CALL, e))?;
        }
        self.stop_child(idx).await;
        self.start_or_report(myself, idx).await
    }

    /// Starts child `idx` at once; a failed start goes through the policy like a crash.
    async fn start_or_report(
        &mut self,
        myself: &ActorRef<SupervisorMsg>,
        idx: usize,
    ) -> Result<(), ControlError> {
        match self.start_child(myself, idx).await {
            Ok(()) => Ok(()),
            Err(termination) => {
                let what = termination.describe();
                let path = self.child_path(idx);
                self.child_down(myself, idx, termination).await;
                Err(ControlError::StartFailed { path, what })
            }
        }
    }

    /// Adds `spec` at `index` (the end by default) and starts it in place.
    async fn add_child(
        &mut self,
        myself: &ActorRef<SupervisorMsg>,
        spec: ChildSpec,
        index: Option<usize>,
    ) -> Result<(), ControlError> {
        self.refuse_if_shutting_down()?;
        if self.children.iter().any(|c| c.spec.name == spec.name) {
            return Err(ControlError::DuplicateName {
                path: format!("{}/{}", self.path, spec.name),
            });
        }
        // The same checks as at start: a spec with only this child validates it alone.
        SupervisorSpec::new(self.path.clone())
            .child(spec.clone())
            .validate()
            .map_err(ControlError::InvalidSpec)?;
        let len = self.children.len();
        let idx = index.unwrap_or(len);
        if idx > len {
            return Err(ControlError::BadIndex { supervisor: self.path.clone(), index: idx, len });
        }
        let id = ChildId(self.next_id);
        self.next_id += 1;
        self.policy.insert_child(idx, spec.policy());
        self.children.insert(idx, ChildSlot::new(id, spec));
        let path = self.child_path(idx);
        tracing::info!(child = %path, index = idx, "Added.");
        self.ctx.observe(TreeEvent::Added { path, at: self.ctx.at(Instant::now()), index: idx });
        self.start_or_report(myself, idx).await
    }

    /// Stops the direct child `name` as at shutdown, then forgets it.
    async fn remove_child(&mut self, name: &str) -> Result<(), ControlError> {
        let (idx, rest) = self.find(name)?;
        if rest.is_some() {
            return Err(ControlError::NoSuchChild { path: format!("{}/{name}", self.path) });
        }
        self.stop_child(idx).await;
        let path = self.child_path(idx);
        let removed = self.children.remove(idx);
        self.policy.remove_child(idx);
        self.pending.retain(|&id| id != removed.id);
        tracing::info!(child = %path, "Removed.");
        self.ctx.observe(TreeEvent::Removed { path, at: self.ctx.at(Instant::now()) });
        Ok(())
    }

    async fn reload_child(&mut self, path: &str) -> Result<String, ControlError> {
        let (idx, rest) = self.find(path)?;
        let child_path = self.child_path(idx);
        match (&self.children[idx].handle, rest, &self.children[idx].spec.start) {
            (Some(ChildHandle::Supervisor(sub)), Some(rest), _) => ractor::call_t!(
                sub,
                |reply| SupervisorMsg::ReloadChild { path: rest, reply },
                millis(NESTED_CALL)
            )
            .map_err(|e| call_error(&child_path, NESTED_CALL, e))?,
            (Some(ChildHandle::Actor(cell)), None, ChildStart::Actor(factory)) => factory
                .reload(cell)
                .await
                .map_err(|reason| ControlError::Refused { path: child_path, reason }),
            (None, _, _) => Err(ControlError::NotRunning { path: child_path }),
            _ => Err(ControlError::WrongKind { path: child_path, expected: "a reloadable actor" }),
        }
    }

    async fn signal_child(&mut self, path: &str, signal: i32) -> Result<bool, ControlError> {
        let (idx, rest) = self.find(path)?;
        let child_path = self.child_path(idx);
        match (&self.children[idx].handle, rest) {
            (Some(ChildHandle::Supervisor(sub)), Some(rest)) => ractor::call_t!(
                sub,
                |reply| SupervisorMsg::SignalChild { path: rest, signal, reply },
                millis(QUICK_CALL)
            )
            .map_err(|e| call_error(&child_path, QUICK_CALL, e))?,
            (Some(ChildHandle::Process(p)), None) => {
                ractor::call_t!(p, |reply| ProcessMsg::Signal(signal, reply), millis(QUICK_CALL))
                    .map_err(|e| call_error(&child_path, QUICK_CALL, e))
            }
            (None, _) => Ok(false),
            _ => Err(ControlError::WrongKind { path: child_path, expected: "a process" }),
        }
    }

    async fn status(&self) -> SupervisorStatus {
        let mut children = Vec::with_capacity(self.children.len());
        for child in &self.children {
            let (mut pid, mut uptime_secs, mut nested) = (None, None, None);
            match &child.handle {
                Some(ChildHandle::Process(p)) => {
                    if let Ok(s) = ractor::call_t!(p, ProcessMsg::Status, 1000) {
                        pid = Some(s.pid);
                        uptime_secs = Some(s.uptime.as_secs_f64());
                    }
                }
                Some(ChildHandle::Supervisor(s)) => {
                    nested =
                        ractor::call_t!(s, SupervisorMsg::Status, 5000).ok().map(|s| s.children);
                }
                _ => {}
            }
            children.push(ChildStatus {
                name: child.spec.name.clone(),
                kind: child.kind(),
                running: child.handle.is_some(),
                ready: child.handle.is_some(),
                pid,
                uptime_secs,
                restarts: child.restarts(),
                last_exit: child.history.back().map(|h| h.what.clone()),
                restart: child.spec.restart,
                children: nested,
            });
        }
        SupervisorStatus {
            path: self.path.clone(),
            shutting_down: self.policy.shutting_down(),
            children,
        }
    }

    fn report(&self, cause: &TreeCause) -> SupervisorReport {
        SupervisorReport {
            path: self.path.clone(),
            cause: cause.clone(),
            children: self
                .children
                .iter()
                .map(|c| ChildReport {
                    name: c.spec.name.clone(),
                    kind: c.kind(),
                    restarts: c.restarts(),
                    last: c.history.iter().cloned().collect(),
                })
                .collect(),
        }
    }

    #[cfg(feature = "fault-injection")]
    async fn inject(&mut self, path: &str, fault: crate::fault::Fault) -> Result<(), ControlError> {
        use crate::fault::Fault;
        let (idx, rest) = self.find(path)?;
        let child_path = self.child_path(idx);
        if let Some(rest) = rest {
            let sub = self.nested(idx)?;
            return ractor::call_t!(
                sub,
                |reply| SupervisorMsg::Inject { path: rest, fault, reply },
                millis(NESTED_CALL)
            )
            .map_err(|e| call_error(&child_path, NESTED_CALL, e))?;
        }
        let refused = |reason: &str| ControlError::Refused {
            path: child_path.clone(),
            reason: reason.to_string(),
        };
        let child = &mut self.children[idx];
        match (fault, &child.handle, &child.spec.start) {
            (Fault::FailNextExec, _, ChildStart::Process(_)) => {
                child.faults.fail_next_exec = true;
                Ok(())
            }
            (Fault::DelayNextReadiness(d), _, ChildStart::Process(_)) => {
                child.faults.delay_next_readiness = Some(d);
                Ok(())
            }
            (Fault::Signal(signal), Some(ChildHandle::Process(p)), _) => {
                let sent = ractor::call_t!(
                    p,
                    |reply| ProcessMsg::Signal(signal, reply),
                    millis(QUICK_CALL)
                )
                .map_err(|e| call_error(&child_path, QUICK_CALL, e))?;
                if sent { Ok(()) } else { Err(refused("process already gone")) }
            }
            (Fault::Panic, Some(ChildHandle::Process(p)), _) => p
                .send_message(ProcessMsg::Panic)
                .map_err(|_| ControlError::Unreachable { path: child_path.clone() }),
            (Fault::Panic, Some(ChildHandle::Supervisor(s)), _) => {
                let s = s.clone();
                ractor::call_t!(
                    s,
                    |reply| SupervisorMsg::Inject { path: String::new(), fault, reply },
                    millis(QUICK_CALL)
                )
                .map_err(|e| call_error(&child_path, QUICK_CALL, e))?
            }
            (Fault::Panic, Some(ChildHandle::Actor(cell)), ChildStart::Actor(factory)) => {
                if factory.inject_panic(cell) {
                    Ok(())
                } else {
                    Err(refused("this actor has no panic hook"))
                }
            }
            (_, None, _) => Err(ControlError::NotRunning { path: child_path.clone() }),
            (fault, _, _) => Err(refused(&format!("{fault:?} does not apply"))),
        }
    }
}
