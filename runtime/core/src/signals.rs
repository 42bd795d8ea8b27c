//! The signal bridge: signals become messages to one actor.
//!
//! Hazard: a signal handler runs in async-signal context and may do nothing but set a
//! flag. signal-hook's handler only writes to a self-pipe; this module's task reads
//! that pipe and sends one [`SignalKind`] message per received signal to the node
//! actor, which does the work. Identical signals that arrive before the task reads
//! them coalesce into one message (as SIGCHLD always does in the kernel).
//! Handlers are process-wide and live until exit (a tokio and signal-hook caveat).
//!
//! Dispositions (docs/runtime-semantics.md): TERM, INT, QUIT, HUP, USR1, USR2 and CHLD
//! are handled; ALRM, VTALRM, PROF, PWR, WINCH, TSTP, TTIN, TTOU, URG, IO, XCPU and
//! XFSZ, STKFLT and every real-time signal are caught and ignored (logged at debug) so
//! none of them can stop or kill us;
//! PIPE is ignored by the Rust runtime (writes fail with EPIPE instead); SEGV, BUS,
//! ILL, FPE, TRAP, SYS and ABRT keep their default action (they mean a bug in us);
//! KILL and STOP cannot be caught.

use futures::StreamExt;
use ractor::{ActorRef, Message};
use signal_hook::consts::signal::*;
use signal_hook_tokio::Signals;
use tokio::task::JoinHandle;

/// A received signal.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum SignalKind {
    /// SIGTERM: graceful shutdown.
    Term,
    /// SIGINT: graceful shutdown.
    Int,
    /// SIGQUIT: log a status snapshot.
    Quit,
    /// SIGHUP: reload (handled by the node's hook).
    Hup,
    /// SIGUSR1: user-defined (bottle-init: restart the configured daemons).
    Usr1,
    /// SIGUSR2: user-defined.
    Usr2,
    /// SIGCHLD: a child changed state; reap.
    Child,
    /// Any other caught signal: ignored.
    Other(i32),
}

impl SignalKind {
    fn from_raw(signal: i32) -> SignalKind {
        match signal {
            SIGTERM => SignalKind::Term,
            SIGINT => SignalKind::Int,
            SIGQUIT => SignalKind::Quit,
            SIGHUP => SignalKind::Hup,
            SIGUSR1 => SignalKind::Usr1,
            SIGUSR2 => SignalKind::Usr2,
            SIGCHLD => SignalKind::Child,
            other => SignalKind::Other(other),
        }
    }
}

/// Signals the bridge acts on.
pub const HANDLED: &[i32] = &[SIGTERM, SIGINT, SIGQUIT, SIGHUP, SIGUSR1, SIGUSR2, SIGCHLD];

/// Signals caught only so their default action (stop or terminate) cannot hit us.
pub const IGNORED: &[i32] = &[
    SIGALRM,
    SIGVTALRM,
    SIGPROF,
    libc::SIGPWR,
    SIGWINCH,
    SIGTSTP,
    SIGTTIN,
    SIGTTOU,
    SIGURG,
    SIGIO,
    SIGXCPU,
    SIGXFSZ,
];

/// A running bridge. Dropping it stops forwarding (the handlers stay installed).
#[derive(Debug)]
pub struct SignalBridge {
    handle: signal_hook_tokio::Handle,
    task: JoinHandle<()>,
}

impl SignalBridge {
    /// Registers the handlers and starts forwarding to `target`, converting each
    /// signal with `into_msg`.
    pub fn start<M: Message>(
        target: ActorRef<M>,
        into_msg: fn(SignalKind) -> M,
    ) -> std::io::Result<SignalBridge> {
        // Real-time signals and SIGSTKFLT terminate by default: catch and ignore them too.
        let realtime = (libc::SIGRTMIN()..=libc::SIGRTMAX())
            .filter(|s| !signal_hook::consts::FORBIDDEN.contains(s));
        let all: Vec<i32> = HANDLED
            .iter()
            .chain(IGNORED)
            .copied()
            .chain([libc::SIGSTKFLT])
            .chain(realtime)
            .collect();
        let signals = Signals::new(&all)?;
        let handle = signals.handle();
        let task = tokio::spawn(async move {
            let mut signals = signals;
            while let Some(signal) = signals.next().await {
                if target.send_message(into_msg(SignalKind::from_raw(signal))).is_err() {
                    break;
                }
            }
        });
        Ok(SignalBridge { handle, task })
    }
}

impl Drop for SignalBridge {
    fn drop(&mut self) {
        self.handle.close();
        self.task.abort();
    }
}
