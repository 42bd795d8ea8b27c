//! The launcher's signals as messages: SIGCHLD drives the one reaper, the first SIGINT or
//! SIGTERM interrupts the launch, SIGWINCH resizes the agent's terminal.
//!
//! Hazard: a signal handler that does work races everything else, and a second Ctrl-C
//! that kills the launcher mid-teardown leaves the sidecar behind (reference row L2). The
//! handler only writes a byte (signal-hook); this actor does the work, and interrupts
//! after the first are counted and reported, never allowed to skip teardown.

use std::sync::Arc;
use std::sync::atomic::{AtomicU32, Ordering};

use bottle_proc::Reaper;
use bottle_runtime::signals::{SignalBridge, SignalKind};
use ractor::{Actor, ActorProcessingErr, ActorRef};
use tokio::sync::watch;

use crate::launch::Interrupt;

/// Everything the launcher's signal actor receives. Closed on purpose.
#[derive(Debug)]
pub enum LauncherSignal {
    /// A signal, from the bridge.
    Signal(SignalKind),
}

/// The actor's configuration.
#[derive(Debug)]
pub struct SignalArgs {
    /// Reaps on SIGCHLD.
    pub reaper: Reaper,
    /// Fired on the first SIGINT/SIGTERM.
    pub interrupt: Interrupt,
    /// Bumped on SIGWINCH.
    pub resized: watch::Sender<u64>,
    /// How many interrupts arrived (the first interrupts, later ones are reported).
    pub interrupts: Arc<AtomicU32>,
}

/// The actor.
#[derive(Debug)]
pub struct LauncherSignals;

/// Its state: the bridge lives as long as the actor.
#[derive(Debug)]
pub struct SignalState {
    args: SignalArgs,
    _bridge: SignalBridge,
}

impl Actor for LauncherSignals {
    type Msg = LauncherSignal;
    type State = SignalState;
    type Arguments = SignalArgs;

    async fn pre_start(
        &self,
        myself: ActorRef<LauncherSignal>,
        args: SignalArgs,
    ) -> Result<SignalState, ActorProcessingErr> {
        let bridge = SignalBridge::start(myself, LauncherSignal::Signal)?;
        Ok(SignalState { args, _bridge: bridge })
    }

    async fn handle(
        &self,
        _: ActorRef<LauncherSignal>,
        msg: LauncherSignal,
        state: &mut SignalState,
    ) -> Result<(), ActorProcessingErr> {
        let LauncherSignal::Signal(kind) = msg;
        match kind {
            SignalKind::Child => {
                state.args.reaper.reap();
            }
            SignalKind::Int | SignalKind::Term | SignalKind::Hup => {
                let n = state.args.interrupts.fetch_add(1, Ordering::SeqCst) + 1;
                state.args.interrupt.fire();
                if n > 1 {
                    tracing::warn!(
                        "Still tearing down the bottle; it finishes on its own (interrupt {n} ignored)."
                    );
                }
            }
            SignalKind::Other(signal) if signal == libc_sigwinch() => {
                state.args.resized.send_modify(|n| *n += 1);
            }
            _ => {}
        }
        Ok(())
    }
}

fn libc_sigwinch() -> i32 {
    nix::sys::signal::Signal::SIGWINCH as i32
}

/// Starts the signal actor: from now on SIGCHLD reaps and the first SIGINT/SIGTERM fires
/// `interrupt`. The returned receiver changes on every SIGWINCH.
pub async fn start(
    reaper: Reaper,
    interrupt: Interrupt,
) -> Result<(ActorRef<LauncherSignal>, watch::Receiver<u64>), ractor::SpawnErr> {
    let (resized, rx) = watch::channel(0u64);
    let args = SignalArgs { reaper, interrupt, resized, interrupts: Arc::new(AtomicU32::new(0)) };
    let (actor, _) = Actor::spawn(None, LauncherSignals, args).await?;
    Ok((actor, rx))
}
