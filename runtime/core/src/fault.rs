//! Fault injection for tests (cargo feature `fault-injection`).
//!
//! Hazard: none in production, because none of this is compiled there. Each fault
//! goes through the same supervisor paths a real fault takes: a signal is a real
//! signal to the process group, a panic is a real panic in a real handler.

use std::ffi::OsString;
use std::time::Duration;

use crate::spec::ProcessSpec;

/// A program that does not exist, used to make the next exec fail.
pub const MISSING_PROGRAM: &str = "/nonexistent/bottle-fault-injection";

/// One fault.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Fault {
    /// Send this signal to the child's process group (SIGKILL, SIGSEGV, SIGSTOP to freeze...).
    Signal(i32),
    /// Panic inside the child's actor (process actor, supervisor, or an actor whose
    /// factory implements `inject_panic`).
    Panic,
    /// The next start of this process child fails at exec.
    FailNextExec,
    /// The next start of this process child reports ready only after this delay.
    DelayNextReadiness(Duration),
}

/// Faults waiting for a child's next start.
#[derive(Clone, Debug, Default)]
pub(crate) struct PendingFaults {
    pub(crate) fail_next_exec: bool,
    pub(crate) delay_next_readiness: Option<Duration>,
}

impl PendingFaults {
    pub(crate) fn apply(&mut self, spec: &mut ProcessSpec, ready_delay: &mut Option<Duration>) {
        if std::mem::take(&mut self.fail_next_exec) {
            spec.argv[0] = OsString::from(MISSING_PROGRAM);
        }
        if let Some(delay) = self.delay_next_readiness.take() {
            *ready_delay = Some(delay);
        }
    }
}
