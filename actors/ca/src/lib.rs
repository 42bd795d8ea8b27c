//! The per-bottle certificate authority.
//!
//! Hazard: a leaked interception CA lets its holder impersonate any site to anyone who
//! trusts it. So the CA is minted fresh per bottle (ECDSA P-256, `CA:TRUE, pathlen:0`),
//! lives only as long as the bottle plus a margin (7 days by default, not 10 years),
//! its private key never leaves this process (only the certificate is ever written),
//! and it carries X.509 name constraints: its permitted subtrees are the hosts the
//! routes bump, so a leaf for any other name fails verification everywhere (rustls,
//! webpki, OpenSSL, browsers). Leaves are minted on demand per SNI host, live 24 h, sit
//! in a bounded cache, and concurrent first requests for one host mint once.
#![forbid(unsafe_code)]

mod actor;
mod authority;

pub use actor::{CaActor, CaArgs, CaMsg, CaStatus};
pub use authority::{CaConfig, CaError, CertificateAuthority, LeafResolver};
