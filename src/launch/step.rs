//! The step actor and the launch supervisor.
//!
//! Hazard: a step interrupted while it is creating something (a process half-started, a
//! directory made but not yet recorded) must still have that thing undone. So a step
//! records each resource in its own fields as soon as it exists, its `run` future may be
//! dropped at any await point, and its `undo` removes whatever its fields record, whether
//! `run` finished or not. The step lives inside its actor; the actor is stopped only after
//! `undo` ran.

use std::future::Future;
use std::time::Duration;

use ractor::{Actor, ActorProcessingErr, ActorRef, RpcReplyPort, SupervisionEvent};
use tokio::sync::{mpsc, watch};

/// Why a launch did not complete.
#[derive(Debug, thiserror::Error)]
pub enum LaunchError {
    /// A step failed for a reason of its own.
    #[error("{step}: {message}")]
    Step {
        /// The step's name.
        step: &'static str,
        /// What went wrong (never a secret).
        message: String,
    },
    /// Ctrl-C or SIGTERM arrived during a step.
    #[error("interrupted during {step}")]
    Interrupted {
        /// The step that was running.
        step: &'static str,
    },
    /// A step's actor panicked or could not be started.
    #[error("{step}: the step's actor failed: {message}")]
    Actor {
        /// The step's name.
        step: &'static str,
        /// The panic or spawn error.
        message: String,
    },
}

impl LaunchError {
    /// A step's own failure.
    pub fn step(step: &'static str, message: impl Into<String>) -> LaunchError {
        LaunchError::Step { step, message: message.into() }
    }
}

/// What one step does. `run` may be cancelled at any await point (the future is
/// dropped); `undo` must then remove whatever `run` had already recorded in `self`.
pub trait Step: Send + 'static {
    /// What the step needs.
    type Input: Send + 'static;
    /// What the step makes, for the steps after it.
    type Output: Send + 'static;
    /// The step's name in messages and the progress display.
    const NAME: &'static str;

    /// Does the work. Records every resource in `self` as soon as it exists.
    fn run(
        &mut self,
        input: Self::Input,
        cx: &StepContext,
    ) -> impl Future<Output = Result<Self::Output, LaunchError>> + Send;

    /// Removes what `run` made (all of it, or the part it got to). Called at most once.
    fn undo(&mut self) -> impl Future<Output = Result<(), LaunchError>> + Send;
}

/// What every step can see: whether the launch was interrupted.
#[derive(Debug, Clone)]
pub struct StepContext {
    interrupted: watch::Receiver<bool>,
}

impl StepContext {
    /// Resolves once the launch is interrupted (at once if it already was).
    pub async fn interrupted(&self) {
        let mut rx = self.interrupted.clone();
        // An error means the launch itself is gone: treat it as an interrupt.
        let _ = rx.wait_for(|flag| *flag).await;
    }

    /// True once the launch was interrupted.
    pub fn is_interrupted(&self) -> bool {
        *self.interrupted.borrow()
    }
}

/// The handle signal handling uses to interrupt a launch (first Ctrl-C or SIGTERM).
#[derive(Debug, Clone)]
pub struct Interrupt {
    tx: watch::Sender<bool>,
}

impl Interrupt {
    /// An interrupt that reaches no launch (for commands that only need the signals).
    pub fn unconnected() -> Interrupt {
        Interrupt { tx: watch::channel(false).0 }
    }

    /// Interrupts the running step. Teardown is not affected: it always runs to the end.
    pub fn fire(&self) {
        self.tx.send_replace(true);
    }
}

/// The messages of a step actor. Closed on purpose.
enum StepMsg<S: Step> {
    /// Run the step once with this input (sent by the launch, first).
    Run(S::Input, StepContext, RpcReplyPort<Result<S::Output, LaunchError>>),
    /// Undo what the step made (sent by the launch's teardown, last).
    Undo(RpcReplyPort<Result<(), LaunchError>>),
}

/// The actor a step runs in (`fn() -> S`: the actor itself holds no step, its state does).
struct StepActor<S>(std::marker::PhantomData<fn() -> S>);

impl<S: Step> Actor for StepActor<S> {
    type Msg = StepMsg<S>;
    type State = S;
    type Arguments = S;

    async fn pre_start(&self, _: ActorRef<Self::Msg>, step: S) -> Result<S, ActorProcessingErr> {
        Ok(step)
    }

    async fn handle(
        &self,
        _: ActorRef<Self::Msg>,
        msg: Self::Msg,
        step: &mut S,
    ) -> Result<(), ActorProcessingErr> {
        match msg {
            StepMsg::Run(input, cx, reply) => {
                let result = tokio::select! {
                    // Biased: an interrupt that arrived first wins over a result.
                    biased;
                    () = cx.interrupted() => Err(LaunchError::Interrupted { step: S::NAME }),
                    result = step.run(input, &cx) => result,
                };
                if !reply.is_closed() {
                    let _ = reply.send(result);
                }
            }
            StepMsg::Undo(reply) => {
                let result = step.undo().await;
                if !reply.is_closed() {
                    let _ = reply.send(result);
                }
            }
        }
        Ok(())
    }
}

/// One step that ran (or started to), waiting to be undone.
struct Done {
    name: &'static str,
    undo: Box<dyn FnOnce() -> futures::future::BoxFuture<'static, Result<(), LaunchError>> + Send>,
}

/// Forwards the step actors' supervision events (a panic) to the launch.
struct LaunchSupervisor;

impl Actor for LaunchSupervisor {
    type Msg = ();
    type State = mpsc::UnboundedSender<String>;
    type Arguments = mpsc::UnboundedSender<String>;

    async fn pre_start(
        &self,
        _: ActorRef<()>,
        tx: mpsc::UnboundedSender<String>,
    ) -> Result<Self::State, ActorProcessingErr> {
        Ok(tx)
    }

    async fn handle_supervisor_evt(
        &self,
        _: ActorRef<()>,
        event: SupervisionEvent,
        tx: &mut Self::State,
    ) -> Result<(), ActorProcessingErr> {
        if let SupervisionEvent::ActorFailed(_, err) = event {
            let _ = tx.send(err.to_string());
        }
        Ok(())
    }
}

/// What teardown did: each step it undid, and the errors it met (never hiding the cause).
#[derive(Debug, Default)]
pub struct TeardownReport {
    /// Steps undone, in the order they were undone (reverse of launch order).
    pub undone: Vec<&'static str>,
    /// Steps whose undo failed, with why. The remaining steps were still undone.
    pub errors: Vec<LaunchError>,
}

/// A failed launch: the cause, and what tearing down found.
#[derive(Debug, thiserror::Error)]
#[error("{cause}")]
pub struct LaunchFailure {
    /// What made the launch stop.
    #[source]
    pub cause: LaunchError,
    /// What teardown did afterwards.
    pub teardown: TeardownReport,
}

/// A launch in progress: its steps so far and the supervisor they run under.
pub struct Launch {
    supervisor: ActorRef<()>,
    failures: mpsc::UnboundedReceiver<String>,
    interrupt_tx: watch::Sender<bool>,
    cx: StepContext,
    done: Vec<Done>,
    undo_timeout: Duration,
}

impl std::fmt::Debug for Launch {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let names: Vec<_> = self.done.iter().map(|d| d.name).collect();
        f.debug_struct("Launch").field("steps", &names).finish_non_exhaustive()
    }
}

impl Launch {
    /// A launch with no steps yet. `undo_timeout` bounds each step's undo.
    pub async fn new(undo_timeout: Duration) -> Result<Launch, LaunchError> {
        let (tx, failures) = mpsc::unbounded_channel();
        let (supervisor, _) = Actor::spawn(None, LaunchSupervisor, tx)
            .await
            .map_err(|e| LaunchError::Actor { step: "launch", message: e.to_string() })?;
        let (interrupt_tx, interrupted) = watch::channel(false);
        Ok(Launch {
            supervisor,
            failures,
            interrupt_tx,
            cx: StepContext { interrupted },
            done: Vec::new(),
            undo_timeout,
        })
    }

    /// The handle that interrupts this launch.
    pub fn interrupt(&self) -> Interrupt {
        Interrupt { tx: self.interrupt_tx.clone() }
    }

    /// What steps see: whether the launch was interrupted.
    pub fn context(&self) -> StepContext {
        self.cx.clone()
    }

    /// The names of the steps that ran so far, in order.
    pub fn steps(&self) -> Vec<&'static str> {
        self.done.iter().map(|d| d.name).collect()
    }

    /// Runs `step` with `input` in its own actor. Whatever happens (success, failure,
    /// interrupt, panic), the step is recorded for teardown: its undo removes what it made.
    pub async fn step<S: Step>(
        &mut self,
        step: S,
        input: S::Input,
    ) -> Result<S::Output, LaunchError> {
        if self.cx.is_interrupted() {
            return Err(LaunchError::Interrupted { step: S::NAME });
        }
        let (actor, _) = Actor::spawn_linked(
            None,
            StepActor::<S>(Default::default()),
            step,
            self.supervisor.get_cell(),
        )
        .await
        .map_err(|e| LaunchError::Actor { step: S::NAME, message: e.to_string() })?;
        let undo_actor = actor.clone();
        let timeout = self.undo_timeout;
        self.done.push(Done {
            name: S::NAME,
            undo: Box::new(move || {
                Box::pin(async move {
                    let result =
                        ractor::call_t!(undo_actor, StepMsg::Undo, timeout.as_millis() as u64);
                    undo_actor.stop(None);
                    match result {
                        Ok(result) => result,
                        Err(e) => Err(LaunchError::Actor { step: S::NAME, message: e.to_string() }),
                    }
                })
            }),
        });
        let (reply_tx, reply_rx) = ractor::concurrency::oneshot();
        actor
            .cast(StepMsg::Run(input, self.cx.clone(), reply_tx.into()))
            .map_err(|e| LaunchError::Actor { step: S::NAME, message: e.to_string() })?;
        tokio::select! {
            reply = reply_rx => match reply {
                Ok(result) => result,
                // The reply port dropped: the actor died. Its supervision event (with
                // the panic) follows; wait for it briefly so the cause says why.
                Err(_) => {
                    let why = tokio::time::timeout(Duration::from_secs(2), self.failures.recv()).await;
                    let message = match why {
                        Ok(Some(panic)) => panic,
                        _ => "the step ended without answering".into(),
                    };
                    Err(LaunchError::Actor { step: S::NAME, message })
                }
            },
            Some(panic) = self.failures.recv() => Err(LaunchError::Actor { step: S::NAME, message: panic }),
        }
    }

    /// Undoes every step that ran, last first, each within the undo timeout. Interrupts
    /// do not shorten it. Errors are collected; every remaining step is still undone.
    pub async fn teardown(mut self) -> TeardownReport {
        let mut report = TeardownReport::default();
        while let Some(done) = self.done.pop() {
            match (done.undo)().await {
                Ok(()) => report.undone.push(done.name),
                Err(err) => {
                    report.undone.push(done.name);
                    report.errors.push(err);
                }
            }
        }
        self.supervisor.stop(None);
        report
    }

    /// Tears down and wraps `cause` with the teardown's report.
    pub async fn fail(self, cause: LaunchError) -> LaunchFailure {
        let teardown = self.teardown().await;
        LaunchFailure { cause, teardown }
    }
}

#[cfg(test)]
mod tests {
    use std::sync::{Arc, Mutex};

    use super::*;

    /// A step that records what it made in a shared log, and can fail, hang or panic.
    struct Probe {
        name: &'static str,
        log: Arc<Mutex<Vec<String>>>,
        behaviour: Behaviour,
        made: bool,
    }

    #[derive(Clone, Copy)]
    enum Behaviour {
        Succeed,
        FailAfterMaking,
        HangAfterMaking,
        Panic,
        UndoFails,
    }

    fn probe(name: &'static str, log: &Arc<Mutex<Vec<String>>>, behaviour: Behaviour) -> Probe {
        Probe { name, log: log.clone(), behaviour, made: false }
    }

    macro_rules! probe_step {
        ($ty:ident, $name:literal) => {
            struct $ty(Probe);
            impl Step for $ty {
                type Input = u32;
                type Output = u32;
                const NAME: &'static str = $name;
                async fn run(&mut self, input: u32, _: &StepContext) -> Result<u32, LaunchError> {
                    let p = &mut self.0;
                    p.made = true;
                    p.log.lock().unwrap().push(format!("made {}", p.name));
                    match p.behaviour {
                        Behaviour::Succeed | Behaviour::UndoFails => Ok(input + 1),
                        Behaviour::FailAfterMaking => Err(LaunchError::step($name, "broke")),
                        Behaviour::HangAfterMaking => std::future::pending().await,
                        Behaviour::Panic => panic!("step panicked on purpose"),
                    }
                }
                async fn undo(&mut self) -> Result<(), LaunchError> {
                    let p = &mut self.0;
                    if p.made {
                        p.log.lock().unwrap().push(format!("undid {}", p.name));
                    }
                    match p.behaviour {
                        Behaviour::UndoFails => Err(LaunchError::step($name, "undo broke")),
                        _ => Ok(()),
                    }
                }
            }
        };
    }
    probe_step!(First, "first");
    probe_step!(Second, "second");
    probe_step!(Third, "third");

    async fn three(
        behaviours: [Behaviour; 3],
        interrupt_after: Option<Duration>,
    ) -> (Result<u32, LaunchFailure>, Vec<String>) {
        let log = Arc::new(Mutex::new(Vec::new()));
        let mut launch = Launch::new(Duration::from_secs(5)).await.unwrap();
        if let Some(after) = interrupt_after {
            let interrupt = launch.interrupt();
            tokio::spawn(async move {
                tokio::time::sleep(after).await;
                interrupt.fire();
            });
        }
        let result = async {
            let a = launch.step(First(probe("a", &log, behaviours[0])), 0).await?;
            let b = launch.step(Second(probe("b", &log, behaviours[1])), a).await?;
            launch.step(Third(probe("c", &log, behaviours[2])), b).await
        }
        .await;
        let outcome = match result {
            Ok(v) => {
                let report = launch.teardown().await;
                assert!(report.errors.is_empty());
                Ok(v)
            }
            Err(cause) => Err(launch.fail(cause).await),
        };
        let log = log.lock().unwrap().clone();
        (outcome, log)
    }

    use Behaviour::*;

    #[tokio::test]
    async fn outputs_flow_forward_and_teardown_runs_in_reverse() {
        let (result, log) = three([Succeed, Succeed, Succeed], None).await;
        assert_eq!(result.unwrap(), 3);
        assert_eq!(log, ["made a", "made b", "made c", "undid c", "undid b", "undid a"]);
    }

    #[tokio::test]
    async fn a_failing_step_is_undone_with_everything_before_it_and_keeps_the_cause() {
        let (result, log) = three([Succeed, FailAfterMaking, Succeed], None).await;
        let failure = result.unwrap_err();
        assert!(matches!(failure.cause, LaunchError::Step { step: "second", .. }), "{failure:?}");
        assert_eq!(failure.teardown.undone, ["second", "first"]);
        assert_eq!(log, ["made a", "made b", "undid b", "undid a"]);
    }

    #[tokio::test]
    async fn an_interrupt_cancels_the_running_step_and_still_undoes_its_part() {
        let (result, log) =
            three([Succeed, HangAfterMaking, Succeed], Some(Duration::from_millis(50))).await;
        let failure = result.unwrap_err();
        assert!(
            matches!(failure.cause, LaunchError::Interrupted { step: "second" }),
            "{failure:?}"
        );
        assert_eq!(log, ["made a", "made b", "undid b", "undid a"]);
    }

    #[tokio::test]
    async fn a_panicking_step_fails_the_launch_and_earlier_steps_are_undone() {
        let (result, log) = three([Succeed, Succeed, Panic], None).await;
        let failure = result.unwrap_err();
        match &failure.cause {
            LaunchError::Actor { step: "third", message } => {
                assert!(message.contains("panicked on purpose"), "{message}")
            }
            other => panic!("wrong cause: {other:?}"),
        }
        assert_eq!(log, ["made a", "made b", "made c", "undid b", "undid a"]);
        // The panicked step's actor is gone: its undo is reported, not silently skipped.
        assert_eq!(failure.teardown.errors.len(), 1, "{:?}", failure.teardown);
    }

    #[tokio::test]
    async fn an_undo_error_is_collected_and_the_rest_are_still_undone() {
        let (result, log) = three([Succeed, UndoFails, FailAfterMaking], None).await;
        let failure = result.unwrap_err();
        assert!(matches!(failure.cause, LaunchError::Step { step: "third", .. }));
        assert_eq!(failure.teardown.undone, ["third", "second", "first"]);
        assert_eq!(failure.teardown.errors.len(), 1);
        assert!(failure.teardown.errors[0].to_string().contains("undo broke"));
        assert_eq!(log, ["made a", "made b", "made c", "undid c", "undid b", "undid a"]);
    }

    #[tokio::test]
    async fn a_second_interrupt_during_teardown_does_not_skip_it() {
        let log = Arc::new(Mutex::new(Vec::new()));
        let mut launch = Launch::new(Duration::from_secs(5)).await.unwrap();
        launch.step(First(probe("a", &log, Succeed)), 0).await.unwrap();
        launch.step(Second(probe("b", &log, Succeed)), 0).await.unwrap();
        let interrupt = launch.interrupt();
        interrupt.fire();
        let report = launch.teardown().await;
        interrupt.fire();
        assert_eq!(report.undone, ["second", "first"]);
        assert_eq!(*log.lock().unwrap(), ["made a", "made b", "undid b", "undid a"]);
    }

    #[tokio::test]
    async fn no_step_starts_after_an_interrupt() {
        let log = Arc::new(Mutex::new(Vec::new()));
        let mut launch = Launch::new(Duration::from_secs(5)).await.unwrap();
        launch.interrupt().fire();
        let err = launch.step(First(probe("a", &log, Succeed)), 0).await.unwrap_err();
        assert!(matches!(err, LaunchError::Interrupted { step: "first" }));
        assert!(log.lock().unwrap().is_empty());
        assert!(launch.steps().is_empty());
    }
}
