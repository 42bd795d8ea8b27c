//! The egress proxy: the agent's only way to the network.
//!
//! Hazard: the agent is assumed compromised. Every decision is default deny and made
//! before an upstream socket exists ([`policy::decide`], pure); the host comes from the
//! CONNECT target and must agree with SNI and Host; destinations are checked after DNS
//! and the checked address is the one dialled ([`addr`]); credentials are injected here
//! and never reach the agent, which only ever holds placeholders.
#![forbid(unsafe_code)]

mod actor;
pub mod addr;
pub mod audit;
pub mod dial;
pub mod dlp;
mod framing;
pub mod policy;
mod proxy;
pub mod routes;
pub mod sni;
mod websocket;

pub use actor::{
    ClientFiles, EgressActor, EgressArgs, EgressFactory, EgressInfo, EgressMsg, EgressSettings,
    Limits, Listen, Secret, Secrets, Standalone, start_standalone,
};
pub use dlp::DlpConfig;
pub use proxy::{Egress, EgressConfig, EgressError, Placeholders};

pub(crate) use bottle_runtime::error_chain;
