//! bottle's supervision runtime: domain-free, on ractor and tokio.
//!
//! A [`Node`] runs one tree of [`SupervisorActor`]s whose children are external
//! processes ([`ProcessActor`]), in-process actors, or nested supervisors, all under
//! one restart policy ([`policy`]) and one exit classifier ([`exit`]). Signals reach the
//! node as messages ([`signals`]); one reaper ([`bottle_proc::Reaper`]) waits on every
//! child. Nothing here exits the process: binaries map [`NodeExit::code`] to an exit.
#![forbid(unsafe_code)]

pub mod backoff;
mod context;
pub mod events;
pub mod exit;
#[cfg(feature = "fault-injection")]
pub mod fault;
pub mod listener;
mod node;
pub mod output;
pub mod policy;
mod process;
pub mod readiness;
pub mod report;
pub mod signals;
pub mod spec;
mod supervisor;

pub use bottle_proc as proc;
pub use context::{ExitSlot, Observer, TreeContext};
pub use events::{EventFeed, TreeEvent};
pub use node::{
    Node, NodeActor, NodeConfig, NodeExit, NodeHandle, NodeMsg, RuntimeError, SignalHook,
    process_reaper,
};
pub use process::{ProcessActor, ProcessArgs, ProcessMsg, ProcessStatus, error_chain};
pub use supervisor::{
    ChildId, ChildStatus, ControlError, SupervisorActor, SupervisorArgs, SupervisorMsg,
    SupervisorStatus,
};
