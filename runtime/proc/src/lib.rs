//! The only crate that forks, execs, signals and waits on processes.
//!
//! Hazard: a process has exactly one right to collect each child's exit status.
//! A second waiter (`tokio::process`, `Command::status`, a stray `waitpid(-1)`) steals
//! statuses from the first and turns a crash into `ECHILD` (docs/runtime-semantics.md, "Reaping").
//! So every child of a bottle process is spawned through [`Reaper::spawn`] and its status
//! arrives from the one [`Reaper`], which is also the only caller of `waitpid`.
//! This is also the only crate allowed `unsafe`: the `pre_exec` hook and a few syscalls.
//! [`confine`] and [`fdpass`] hold the primitives of the local sandbox's single-threaded
//! helper (fork, a tiny init, exec, capabilities, loopback, fd passing).
#![allow(unsafe_code)]

pub mod confine;
mod error;
pub mod fd;
pub mod fdpass;
mod identity;
pub mod memory;
pub mod pty;
mod reaper;
pub mod signal;
mod spawn;
mod status;

pub use error::{ForkError, ReaperError, SpawnError};
pub use identity::ProcessIdentity;
pub use reaper::{ReapSummary, Reaper};
pub use spawn::{InheritFd, MAX_INHERITED, NotifyFd, SpawnSpec, SpawnedChild};
pub use status::ExitStatus;

/// A process id as the kernel gives it. Also the process-group id of every child we
/// spawn, since each child leads its own group.
pub type Pid = i32;
