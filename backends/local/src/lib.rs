//! The local backend: one agent process confined by the kernel, no container engine.
//!
//! Hazard: every namespace, mount, capability and syscall the agent keeps is a way out,
//! and a sandbox that half-builds and runs anyway is worse than none. So the agent runs
//! in new user, mount, PID, network, IPC, UTS (and cgroup) namespaces, on a read-only
//! root that holds only what [`mounts::plan`] lists, with every capability dropped,
//! no_new_privs and a seccomp deny list ([`seccomp`]); its only way out is the egress
//! listener created inside its network namespace and handed to the launcher
//! ([`Started::egress`]). Any step that fails aborts the start with a [`Refusal`] naming
//! the cause and fix ([`preflight`]); nothing ever runs with weaker isolation.
//!
//! The setup runs in a separate single-threaded helper ([`helper`], the `bottle-sandbox`
//! binary), never between fork and exec of the launcher. docs/local-backend.md has the
//! order of operations and the reasons.
#![forbid(unsafe_code)]

mod error;
pub mod exec;
pub mod helper;
mod launch;
pub mod mounts;
pub mod preflight;
pub mod seccomp;
mod serve;
pub mod spec;
pub mod wire;

pub use error::LocalError;
pub use exec::{ExecRequest, ExecSession, exec};
pub use launch::{Check, CheckOutcome, Held, HelperCommand, LocalSandbox, SandboxHandle, Started};
pub use preflight::{Cause, Refusal, UsernsSysctls};
pub use spec::{AgentStdio, Mode, ReadOnlyBind, RootFs, SandboxSpec, Workspace};
