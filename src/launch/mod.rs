//! Launching a bottle as a sequence of steps, each an actor with typed input and output,
//! under one launch supervisor that tears down exactly what was made, in reverse order.
//!
//! Hazard: a launch that fails (or is interrupted) half-way must not leave a sidecar, a
//! namespace or a lock behind, and a teardown error must not hide the failure that caused
//! the teardown. The reference system swallowed exceptions in its Docker teardown and
//! skipped cleanup on a second Ctrl-C (reference-system.md rows L1, L2). Here every step
//! that ran is undone, in reverse order, whatever happened; a second interrupt during
//! teardown is reported and ignored; the original cause is kept and teardown errors are
//! collected beside it.

mod step;

pub use step::{Interrupt, Launch, LaunchError, LaunchFailure, Step, StepContext, TeardownReport};
