//! Settings of the egress proxy: bottle-init's `egress` builtin table, and the flags of
//! `bottle proxy`, are this one type.
//!
//! Hazard: two programs that assemble the proxy from differently named options drift
//! (default listen address, which files are written, whether the approval store is
//! restarted). Both ends fill an [`EgressSettings`] and hand it to the one constructor
//! in `bottle-egress`.

use std::net::SocketAddr;
use std::path::PathBuf;

use serde::{Deserialize, Serialize};

/// Where the proxy accepts agents' connections.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case", deny_unknown_fields)]
pub enum Listen {
    /// Bind this address (`127.0.0.1:0` picks a free port).
    Addr(SocketAddr),
    /// Accept on an already listening TCP socket inherited as this file descriptor (the
    /// local backend creates it inside the agent's network namespace).
    Fd(i32),
}

impl std::fmt::Display for Listen {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Listen::Addr(addr) => write!(f, "{addr}"),
            Listen::Fd(fd) => write!(f, "inherited fd {fd}"),
        }
    }
}

impl Default for Listen {
    fn default() -> Listen {
        Listen::Addr(SocketAddr::from(([127, 0, 0, 1], 9099)))
    }
}

/// Everything that configures one egress proxy.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct EgressSettings {
    /// The routes file (YAML, the reference system's schema). Token values are never in
    /// it: routes name them by `token_ref`, resolved from the secrets the caller passes.
    pub routes: PathBuf,
    /// Where agents connect. Default `127.0.0.1:9099`.
    #[serde(default)]
    pub listen: Listen,
    /// Directory for `ca.pem` (the certificate, never the key), `bundle.pem` (the
    /// machine's roots plus the bottle CA) and `placeholders.env`.
    #[serde(default)]
    pub ca_out: Option<PathBuf>,
    /// Extra CA certificates (PEM) trusted for upstream servers.
    #[serde(default)]
    pub upstream_ca: Option<PathBuf>,
    /// JSON-lines audit file, one line per decision.
    #[serde(default)]
    pub audit_log: Option<PathBuf>,
    /// Lifetime of the per-bottle CA, in days (at least 1).
    #[serde(default = "default_ca_days")]
    pub ca_days: u64,
    /// pipelock's approval queue directory. Without it, a request a route would hold is
    /// refused at once (fail closed).
    #[serde(default)]
    pub approvals: Option<PathBuf>,
    /// How long a held request waits for a decision, in seconds.
    #[serde(default = "default_hold_timeout")]
    pub hold_timeout_seconds: u64,
    /// This bottle's name in approval requests and the audit log.
    #[serde(default = "default_bottle")]
    pub bottle: String,
}

impl EgressSettings {
    /// Settings with every default and this routes file.
    pub fn new(routes: impl Into<PathBuf>) -> EgressSettings {
        EgressSettings {
            routes: routes.into(),
            listen: Listen::default(),
            ca_out: None,
            upstream_ca: None,
            audit_log: None,
            ca_days: default_ca_days(),
            approvals: None,
            hold_timeout_seconds: default_hold_timeout(),
            bottle: default_bottle(),
        }
    }
}

fn default_ca_days() -> u64 {
    7
}

fn default_hold_timeout() -> u64 {
    300
}

fn default_bottle() -> String {
    "bottle".into()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_fill_everything_but_routes() {
        let s: EgressSettings = serde_json::from_str(r#"{"routes": "/r.yaml"}"#).unwrap();
        assert_eq!(s, EgressSettings::new("/r.yaml"));
    }

    #[test]
    fn listen_is_an_address_or_an_inherited_fd() {
        let s: EgressSettings =
            serde_json::from_str(r#"{"routes": "/r", "listen": {"fd": 3}}"#).unwrap();
        assert_eq!(s.listen, Listen::Fd(3));
        let s: EgressSettings =
            serde_json::from_str(r#"{"routes": "/r", "listen": {"addr": "0.0.0.0:1"}}"#).unwrap();
        assert_eq!(s.listen, Listen::Addr("0.0.0.0:1".parse().unwrap()));
    }

    #[test]
    fn unknown_keys_are_refused() {
        let err =
            serde_json::from_str::<EgressSettings>(r#"{"routes": "/r", "listn": 1}"#).unwrap_err();
        assert!(err.to_string().contains("listn"), "{err}");
    }
}
