//! The git gate: the agent clones, fetches and pushes through it and never holds an
//! upstream credential (reference system section 3.4, rows G1-G7).
//!
//! Hazard: git is a code-execution and exfiltration channel. A push carries whatever
//! the agent put in its history, a fetch serves whatever the mirror holds, and every
//! path, ref name and URL in a request is the agent's choice. So: only declared
//! repositories are served, by name, never by path ([`route`]); every fetch first
//! refreshes the mirror from upstream and fails closed ([`mirror`]); every push is
//! indexed into a quarantine and its new blobs are scanned with pipelock before any
//! upstream contact ([`scan`]), findings reject it or hold it for the operator, and
//! only a clean or approved push is forwarded, with the token injected here
//! ([`upstream`]); the mirror's refs move only for what upstream accepted ([`gate`]).
//! All git work is git itself, spawned through the one reaper with argv ([`process`]).
//!
//! Map:
//! - [`settings`]: the `git-gate` builtin table ([`GitGateSettings`]), names and URLs checked.
//! - [`route`]: request line to (repository, service); everything else 404.
//! - [`pktline`], [`receive`]: sans-IO framing and the push request.
//! - [`mirror`]: bare mirrors, refresh, quarantines.
//! - [`scan`]: the push scanner. [`report`]: what the client is told.
//! - [`upstream`]: token injection and the hardened ssh command.
//! - [`gate`], `server`: the request handlers and the hyper glue.
//! - [`GitGateActor`], [`GitGateFactory`]: the builtin daemon.
#![forbid(unsafe_code)]

mod actor;
mod error;
pub mod gate;
pub mod mirror;
pub mod pktline;
pub mod process;
pub mod receive;
pub mod report;
pub mod route;
pub mod scan;
mod server;
pub mod settings;
pub mod upstream;

pub use actor::{GitGateActor, GitGateArgs, GitGateFactory, GitGateMsg, GitGateState, build_gate};
pub use error::GitGateError;
pub use server::{handle, serve};
pub use settings::{GitGateSettings, Listen, RepoSettings};
