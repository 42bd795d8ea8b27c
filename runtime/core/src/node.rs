//! The node: one supervision tree in one process, with its reaper, its signal bridge
//! and its exit code.
//!
//! Hazard: the node actor is the target of every signal, so it must never block: the
//! root supervisor (whose start waits for children to become ready) is spawned from a
//! separate task, and reaping on SIGCHLD is a non-blocking drain. Graceful shutdown is
//! idempotent: a second SIGTERM/SIGINT does not reset the grace deadline, a third
//! within the grace period SIGKILLs every supervised process group at once. At the
//! deadline every supervised group is SIGKILLed, so the tree still ends with a
//! complete report.

use std::sync::{Arc, Mutex, OnceLock};
use std::time::{Duration, Instant};

use bottle_proc::{Reaper, ReaperError};
use ractor::{Actor, ActorProcessingErr, ActorRef, RpcReplyPort, SupervisionEvent};
use tokio::sync::oneshot;

use crate::context::{ExitSlot, Observer, TreeContext, new_slot, take_slot};
use crate::events::{EventFeed, TreeEvent};
use crate::exit::{Termination, TreeCause};
use crate::output::{LineSink, stdout_sink};
use crate::report::ExitReport;
use crate::signals::{SignalBridge, SignalKind};
use crate::spec::{ChildSpec, ConfigError, SupervisorSpec};
use crate::supervisor::{
    ControlError, SupervisorActor, SupervisorArgs, SupervisorMsg, SupervisorStatus, call_error,
};

/// Reaping happens on SIGCHLD; this slow tick is a safety net for orphans whose
/// SIGCHLD coalesced with one we had already drained.
const REAP_TICK: Duration = Duration::from_secs(1);

/// Who a failed control call to the root is about.
const ROOT: &str = "the root supervisor";

/// Errors of starting a node.
#[derive(Debug, thiserror::Error)]
pub enum RuntimeError {
    /// The spec is invalid; nothing was started.
    #[error("invalid configuration")]
    Config(#[from] ConfigError),
    /// The reaper could not be installed.
    #[error("cannot install the reaper")]
    Reaper(#[from] ReaperError),
    /// The signal handlers could not be registered.
    #[error("cannot register signal handlers")]
    Signals(#[source] std::io::Error),
    /// The node actor could not be spawned.
    #[error("cannot spawn the node actor: {0}")]
    Spawn(String),
}

/// Called for SIGHUP, SIGUSR1 and SIGUSR2 with the root supervisor (when it is up).
pub type SignalHook = Arc<dyn Fn(SignalKind, Option<&ActorRef<SupervisorMsg>>) + Send + Sync>;

/// How a node runs.
#[derive(Clone)]
pub struct NodeConfig {
    /// Budget from the first SIGTERM to SIGKILL of everything left.
    pub grace: Duration,
    /// Child output sink.
    pub sink: LineSink,
    /// Tree event observer.
    pub observer: Option<Observer>,
    /// Seed of the jitter source (printed by tests so a run can be replayed).
    pub seed: u64,
    /// Handler for HUP/USR1/USR2.
    pub on_signal: Option<SignalHook>,
    /// Whether to install the signal bridge (tests that drive shutdown by API and
    /// run several nodes in one process may skip it; reaping then relies on the tick).
    pub signals: bool,
}

impl std::fmt::Debug for NodeConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("NodeConfig")
            .field("grace", &self.grace)
            .field("seed", &self.seed)
            .finish_non_exhaustive()
    }
}

impl Default for NodeConfig {
    fn default() -> NodeConfig {
        NodeConfig {
            grace: Duration::from_secs(8),
            sink: stdout_sink(),
            observer: None,
            seed: rand::random(),
            on_signal: None,
            signals: true,
        }
    }
}

/// How the node ended.
#[derive(Clone, Debug)]
pub struct NodeExit {
    /// The process exit code (docs/exit-codes.md).
    pub code: i32,
    /// The full report.
    pub report: ExitReport,
}

/// The process's one reaper, installed (as a child subreaper) on first use.
pub fn process_reaper() -> Result<Reaper, ReaperError> {
    static REAPER: OnceLock<Reaper> = OnceLock::new();
    static INSTALL: Mutex<()> = Mutex::new(());
    let _serial = INSTALL.lock().unwrap_or_else(|p| p.into_inner());
    if let Some(reaper) = REAPER.get() {
        return Ok(reaper.clone());
    }
    let reaper = Reaper::install(true)?;
    Ok(REAPER.get_or_init(|| reaper).clone())
}

/// Everything the node actor can be asked to do. Closed on purpose.
#[derive(Debug)]
pub enum NodeMsg {
    /// From the signal bridge.
    Signal(SignalKind),
    /// From the root-start task once the root supervisor's start returned.
    RootStarted(Result<ActorRef<SupervisorMsg>, String>),
    /// Graceful shutdown by API, with a reason for the report.
    Shutdown(String),
    /// Timer: the grace period is over; SIGKILL what is left.
    GraceExpired,
    /// The root supervisor, if it is up.
    Root(RpcReplyPort<Option<ActorRef<SupervisorMsg>>>),
    /// Safety-net reap.
    ReapTick,
}

/// The node actor.
#[derive(Debug)]
pub struct NodeActor;

/// Arguments of [`NodeActor`].
pub struct NodeArgs {
    spec: SupervisorSpec,
    config: NodeConfig,
    ctx: TreeContext,
    done: oneshot::Sender<NodeExit>,
}

impl std::fmt::Debug for NodeArgs {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("NodeArgs").finish_non_exhaustive()
    }
}

/// The node's state.
pub struct NodeState {
    config: NodeConfig,
    ctx: TreeContext,
    root: Option<ActorRef<SupervisorMsg>>,
    root_slot: ExitSlot,
    done: Option<oneshot::Sender<NodeExit>>,
    shutdown: Option<(Instant, String)>,
    term_count: u32,
    _bridge: Option<SignalBridge>,
}

impl std::fmt::Debug for NodeState {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("NodeState").field("shutdown", &self.shutdown).finish_non_exhaustive()
    }
}

impl Actor for NodeActor {
    type Msg = NodeMsg;
    type State = NodeState;
    type Arguments = NodeArgs;

    async fn pre_start(
        &self,
        myself: ActorRef<NodeMsg>,
        args: NodeArgs,
    ) -> Result<NodeState, ActorProcessingErr> {
        let NodeArgs { spec, config, ctx, done } = args;
        let bridge = if config.signals {
            Some(SignalBridge::start(myself.clone(), NodeMsg::Signal)?)
        } else {
            None
        };
        myself.send_interval(REAP_TICK, || NodeMsg::ReapTick);
        let root_slot = new_slot();
        let args = SupervisorArgs {
            path: spec.name.clone(),
            spec,
            ctx: ctx.clone(),
            slot: root_slot.clone(),
        };
        let node = myself.clone();
        // Spawned off the node's handler: the root's start waits for readiness.
        tokio::spawn(async move {
            let result = Actor::spawn_linked(None, SupervisorActor, args, node.get_cell())
                .await
                .map(|(root, _)| root)
                .map_err(|e| crate::process::error_chain(&e));
            let _ = node.send_message(NodeMsg::RootStarted(result));
        });
        Ok(NodeState {
            config,
            ctx,
            root: None,
            root_slot,
            done: Some(done),
            shutdown: None,
            term_count: 0,
            _bridge: bridge,
        })
    }

    async fn handle(
        &self,
        myself: ActorRef<NodeMsg>,
        msg: NodeMsg,
        state: &mut NodeState,
    ) -> Result<(), ActorProcessingErr> {
        match msg {
            NodeMsg::Signal(SignalKind::Child) | NodeMsg::ReapTick => {
                state.ctx.reaper.reap();
            }
            NodeMsg::Signal(kind @ (SignalKind::Term | SignalKind::Int)) => {
                state.term_count += 1;
                let name = if kind == SignalKind::Term { "SIGTERM" } else { "SIGINT" };
                match state.term_count {
                    1 => state.begin_shutdown(&myself, name.to_string()),
                    2 => tracing::info!(
                        signal = name,
                        "Already shutting down; the grace deadline stands."
                    ),
                    _ => {
                        tracing::warn!(
                            signal = name,
                            "Third termination signal: killing every supervised process now."
                        );
                        state.kill_all();
                    }
                }
            }
            NodeMsg::Signal(SignalKind::Quit) => {
                // Off the node's handler: the snapshot waits on every supervisor.
                if let Some(root) = state.root.clone() {
                    tokio::spawn(async move {
                        if let Ok(status) = ractor::call_t!(root, SupervisorMsg::Status, 2000) {
                            let json = serde_json::to_string(&status).unwrap_or_default();
                            tracing::info!(status = %json, "Status snapshot (SIGQUIT).");
                        }
                    });
                }
            }
            NodeMsg::Signal(kind @ (SignalKind::Hup | SignalKind::Usr1 | SignalKind::Usr2)) => {
                match &state.config.on_signal {
                    Some(hook) => hook(kind, state.root.as_ref()),
                    None => tracing::info!(signal = ?kind, "Signal has no handler here; ignored."),
                }
            }
            NodeMsg::Signal(SignalKind::Other(signal)) => {
                tracing::debug!(signal = %bottle_proc::signal::name(signal), "Ignored signal.");
            }
            NodeMsg::RootStarted(Ok(root)) => {
                if state.shutdown.is_some() {
                    let _ = root.send_message(SupervisorMsg::Shutdown);
                }
                state.root = Some(root);
            }
            NodeMsg::RootStarted(Err(reason)) => {
                let termination = take_slot(&state.root_slot).unwrap_or(Termination::Supervisor {
                    cause: TreeCause::Internal { reason },
                    first_crash: None,
                });
                state.finish(&myself, termination);
            }
            NodeMsg::Shutdown(reason) => state.begin_shutdown(&myself, reason),
            NodeMsg::GraceExpired => {
                tracing::warn!(grace = ?state.config.grace, "Grace period over: killing every supervised process.");
                state.kill_all();
            }
            NodeMsg::Root(reply) => {
                if !reply.is_closed() {
                    let _ = reply.send(state.root.clone());
                }
            }
        }
        Ok(())
    }

    async fn handle_supervisor_evt(
        &self,
        myself: ActorRef<NodeMsg>,
        event: SupervisionEvent,
        state: &mut NodeState,
    ) -> Result<(), ActorProcessingErr> {
        let termination = match event {
            SupervisionEvent::ActorTerminated(..) => take_slot(&state.root_slot),
            SupervisionEvent::ActorFailed(_, err) => {
                take_slot(&state.root_slot).or(Some(Termination::Supervisor {
                    cause: TreeCause::Internal { reason: format!("root supervisor failed: {err}") },
                    first_crash: None,
                }))
            }
            _ => return Ok(()),
        };
        let termination = termination.unwrap_or(Termination::Supervisor {
            cause: TreeCause::Internal {
                reason: "root supervisor ended without an outcome".into(),
            },
            first_crash: None,
        });
        state.finish(&myself, termination);
        Ok(())
    }
}

// === impl NodeState ===

impl NodeState {
    fn begin_shutdown(&mut self, myself: &ActorRef<NodeMsg>, reason: String) {
        if self.shutdown.is_some() {
            return;
        }
        tracing::info!(%reason, grace = ?self.config.grace, "Shutting down.");
        let now = Instant::now();
        self.ctx.observe(TreeEvent::ShuttingDown { at: self.ctx.at(now), reason: reason.clone() });
        self.shutdown = Some((now, reason));
        // Reaches supervisors still starting children (the root may not exist yet).
        self.ctx.request_shutdown();
        if let Some(root) = &self.root {
            let _ = root.send_message(SupervisorMsg::Shutdown);
        }
        myself.send_after(self.config.grace, || NodeMsg::GraceExpired);
    }

    fn kill_all(&self) {
        for pid in self.ctx.reaper.live_children() {
            let _ = self.ctx.reaper.signal_group(pid, libc::SIGKILL);
        }
    }

    fn finish(&mut self, myself: &ActorRef<NodeMsg>, termination: Termination) {
        self.root = None;
        let (cause, first_crash) = match termination {
            Termination::Supervisor { cause, first_crash } => (cause, first_crash),
            other => (TreeCause::Internal { reason: other.describe() }, None),
        };
        // Nothing supervised may outlive the tree.
        self.kill_all();
        self.ctx.reaper.reap();
        let code = cause.exit_code(first_crash.as_ref());
        let report = ExitReport {
            exit_code: code,
            cause,
            first_crash,
            shutdown_reason: self.shutdown.as_ref().map(|(_, r)| r.clone()),
            orphans_reaped: self.ctx.reaper.orphans_reaped(),
            supervisors: self.ctx.reports(),
        };
        self.ctx.observe(TreeEvent::NodeExited { at: self.ctx.at(Instant::now()), code });
        if let Some(done) = self.done.take() {
            let _ = done.send(NodeExit { code, report });
        }
        myself.stop(None);
    }
}

/// A running node.
#[derive(Debug)]
pub struct NodeHandle {
    node: ActorRef<NodeMsg>,
    done: oneshot::Receiver<NodeExit>,
    ctx: TreeContext,
}

/// Entry point: validate, install the reaper and the signal bridge, start the tree.
#[derive(Debug)]
pub struct Node;

impl Node {
    /// Starts `spec` under a new node. Fails (starting nothing) on an invalid spec.
    pub async fn start(
        spec: SupervisorSpec,
        config: NodeConfig,
    ) -> Result<NodeHandle, RuntimeError> {
        spec.validate()?;
        let reaper = process_reaper()?;
        let ctx =
            TreeContext::new(reaper, config.sink.clone(), config.observer.clone(), config.seed);
        let (done_tx, done) = oneshot::channel();
        let args = NodeArgs { spec, config, ctx: ctx.clone(), done: done_tx };
        let (node, _) = Actor::spawn(None, NodeActor, args)
            .await
            .map_err(|e| RuntimeError::Spawn(crate::process::error_chain(&e)))?;
        Ok(NodeHandle { node, done, ctx })
    }

    /// Starts `spec` and waits for it to end.
    pub async fn run(spec: SupervisorSpec, config: NodeConfig) -> Result<NodeExit, RuntimeError> {
        Ok(Node::start(spec, config).await?.wait().await)
    }
}

impl NodeHandle {
    /// Waits for the tree to end.
    pub async fn wait(self) -> NodeExit {
        match self.done.await {
            Ok(exit) => exit,
            Err(_) => {
                let cause =
                    TreeCause::Internal { reason: "node actor ended without a report".into() };
                NodeExit {
                    code: cause.exit_code(None),
                    report: ExitReport {
                        exit_code: cause.exit_code(None),
                        cause,
                        first_crash: None,
                        shutdown_reason: None,
                        orphans_reaped: self.ctx.reaper.orphans_reaped(),
                        supervisors: self.ctx.reports(),
                    },
                }
            }
        }
    }

    /// Begins a graceful shutdown (idempotent).
    pub fn shutdown(&self, reason: impl Into<String>) {
        let _ = self.node.send_message(NodeMsg::Shutdown(reason.into()));
    }

    /// The node actor, for the signal bridge of a binary that owns several trees.
    pub fn actor(&self) -> &ActorRef<NodeMsg> {
        &self.node
    }

    /// The root supervisor, once it is up.
    pub async fn root(&self) -> Option<ActorRef<SupervisorMsg>> {
        ractor::call_t!(self.node, NodeMsg::Root, 5000).ok().flatten()
    }

    /// Waits (polling) until the root supervisor is up, at most `timeout`.
    pub async fn wait_root(&self, timeout: Duration) -> Option<ActorRef<SupervisorMsg>> {
        let deadline = Instant::now() + timeout;
        loop {
            if let Some(root) = self.root().await {
                return Some(root);
            }
            if Instant::now() >= deadline {
                return None;
            }
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
    }

    /// A snapshot of the whole tree.
    pub async fn status(&self) -> Option<SupervisorStatus> {
        let root = self.root().await?;
        ractor::call_t!(root, SupervisorMsg::Status, 10_000).ok()
    }

    async fn root_or_err(&self) -> Result<ActorRef<SupervisorMsg>, ControlError> {
        self.root().await.ok_or(ControlError::TreeNotUp)
    }

    /// Operator restart of the child at `path` (relative to the root).
    pub async fn restart_child(&self, path: &str) -> Result<(), ControlError> {
        let root = self.root_or_err().await?;
        let path = path.to_string();
        ractor::call_t!(root, |reply| SupervisorMsg::RestartChild { path, reply }, 60_000)
            .map_err(|e| call_error(ROOT, Duration::from_secs(60), e))?
    }

    /// Sends `signal` to the process child at `path`; whether it was delivered.
    pub async fn signal_child(&self, path: &str, signal: i32) -> Result<bool, ControlError> {
        let root = self.root_or_err().await?;
        let path = path.to_string();
        ractor::call_t!(root, |reply| SupervisorMsg::SignalChild { path, signal, reply }, 10_000)
            .map_err(|e| call_error(ROOT, Duration::from_secs(10), e))?
    }

    /// Adds `spec` to the root supervisor at `index` of its start order (`None`: the
    /// end) and starts it there (see [`SupervisorMsg::AddChild`]).
    pub async fn add_child(
        &self,
        spec: ChildSpec,
        index: Option<usize>,
    ) -> Result<(), ControlError> {
        let root = self.root_or_err().await?;
        let spec = Box::new(spec);
        ractor::call_t!(root, |reply| SupervisorMsg::AddChild { spec, index, reply }, 120_000)
            .map_err(|e| call_error(ROOT, Duration::from_secs(120), e))?
    }

    /// Stops the root's child `name` gracefully and removes it.
    pub async fn remove_child(&self, name: &str) -> Result<(), ControlError> {
        let root = self.root_or_err().await?;
        let name = name.to_string();
        ractor::call_t!(root, |reply| SupervisorMsg::RemoveChild { name, reply }, 120_000)
            .map_err(|e| call_error(ROOT, Duration::from_secs(120), e))?
    }

    /// Fault injection at `path` (relative to the root).
    #[cfg(feature = "fault-injection")]
    pub async fn inject(&self, path: &str, fault: crate::fault::Fault) -> Result<(), ControlError> {
        let root = self.root_or_err().await?;
        let path = path.to_string();
        ractor::call_t!(root, |reply| SupervisorMsg::Inject { path, fault, reply }, 60_000)
            .map_err(|e| call_error(ROOT, Duration::from_secs(60), e))?
    }

    /// Every tree event from now on. The channel is bounded ([`crate::events::EVENT_BUFFER`]):
    /// a receiver that falls behind loses the oldest events and is told how many
    /// (`RecvError::Lagged`); the tree never waits for it.
    pub fn subscribe(&self) -> tokio::sync::broadcast::Receiver<TreeEvent> {
        self.ctx.feed.subscribe()
    }

    /// The tree's event feed, for a task that subscribes later (a control socket).
    pub fn feed(&self) -> EventFeed {
        self.ctx.feed.clone()
    }

    /// The instant the tree started: every [`TreeEvent`]'s `at` counts from here.
    pub fn started_at(&self) -> Instant {
        self.ctx.started_at()
    }

    /// The tree's reaper.
    pub fn reaper(&self) -> &Reaper {
        &self.ctx.reaper
    }
}
