//! Settings of the git gate: bottle-init's `git-gate` builtin table, rendered by the
//! launcher from the manifest's `git-gate.repos`.
//!
//! Hazard: this is the shape only. A repository name or URL that reaches a path, a URL or
//! an ssh command line unchecked is a traversal or an injection (reference G6, G7), so
//! `bottle-git-gate` checks every name, URL and SSH pin before it serves anything
//! (`bottle_git_gate::settings::validate`). Token values are never in the settings: a
//! repository names its token by `token_ref`, resolved from the secrets the caller passes.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::PathBuf;

use serde::{Deserialize, Serialize};

pub use crate::egress::Listen;

/// Everything that configures one git gate.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct GitGateSettings {
    /// Where the agent's git connects (smart HTTP): an address to bind, or an inherited
    /// listening socket. Default `127.0.0.1:9420`, the reference system's port.
    #[serde(default = "default_listen")]
    pub listen: Listen,
    /// Directory holding one bare mirror per repository (`<root>/<name>.git`) and the
    /// gate's own files (`<root>/.gate`). Default `/git`.
    #[serde(default = "default_root")]
    pub root: PathBuf,
    /// The declared repositories by name; nothing else is served.
    #[serde(default)]
    pub repos: BTreeMap<String, RepoSettings>,
    /// Largest request body accepted, in bytes (413 above). Default 100 MiB.
    #[serde(default = "default_max_body")]
    pub max_body_bytes: u64,
    /// Budget for each upstream fetch or push, in seconds; past it the git child is
    /// killed and the agent's request fails. Default 60.
    #[serde(default = "default_upstream_timeout")]
    pub upstream_timeout_seconds: u64,
    /// Budget for serving one upload-pack request to the agent, in seconds. Default 600.
    #[serde(default = "default_serve_timeout")]
    pub serve_timeout_seconds: u64,
    /// Largest single blob the push scanner reads, in bytes; a larger new blob refuses
    /// the push (never skipped). Default 32 MiB.
    #[serde(default = "default_max_blob")]
    pub max_blob_bytes: u64,
    /// Most new blob bytes one push may bring, in bytes; more refuses the push.
    /// Default 512 MiB.
    #[serde(default = "default_max_scan")]
    pub max_scan_bytes: u64,
    /// Budget for scanning one push, in seconds; past it the push is refused. Default 120.
    #[serde(default = "default_scan_timeout")]
    pub scan_timeout_seconds: u64,
    /// pipelock's approval queue directory (shared with the egress proxy). Without it,
    /// a push that asks for an exception is refused at once (fail closed).
    #[serde(default)]
    pub approvals: Option<PathBuf>,
    /// How long a push waiting for an exception waits for a decision, in seconds.
    #[serde(default = "default_hold_timeout")]
    pub hold_timeout_seconds: u64,
    /// This bottle's name in approval requests.
    #[serde(default = "default_bottle")]
    pub bottle: String,
    /// Extra CA certificates (PEM) trusted for HTTPS upstreams (besides the system's).
    #[serde(default)]
    pub upstream_ca: Option<PathBuf>,
    /// The git program. Default `git`, looked up on `path`.
    #[serde(default = "default_git")]
    pub git: PathBuf,
    /// `PATH` of every git child (git finds its helpers, `ssh` and `git-remote-https`,
    /// there). Default `/usr/local/bin:/usr/bin:/bin`.
    #[serde(default = "default_path")]
    pub path: String,
}

/// One declared repository.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RepoSettings {
    /// The upstream: `https://host[:port]/path` or `ssh://[user@]host[:port]/path`.
    pub url: String,
    /// HTTPS: the name of the secret holding the token the gate sends upstream (HTTP
    /// Basic, user `username`). Without it the upstream is reached anonymously.
    #[serde(default)]
    pub token_ref: Option<String>,
    /// HTTPS: the Basic-auth user name paired with the token. Default `x-access-token`
    /// (GitHub; GitLab takes `oauth2`).
    #[serde(default = "default_username")]
    pub username: String,
    /// SSH: the private key file the gate authenticates with (never the agent's).
    #[serde(default)]
    pub identity: Option<PathBuf>,
    /// SSH: the upstream's pinned host key, `<type> <base64>` (`ssh-ed25519 AAAA...`).
    /// Required for SSH: without it the repository is refused.
    #[serde(default)]
    pub host_key: Option<String>,
}

fn default_listen() -> Listen {
    Listen::Addr(SocketAddr::from(([127, 0, 0, 1], 9420)))
}
fn default_root() -> PathBuf {
    PathBuf::from("/git")
}
fn default_max_body() -> u64 {
    100 * 1024 * 1024
}
fn default_upstream_timeout() -> u64 {
    60
}
fn default_serve_timeout() -> u64 {
    600
}
fn default_max_blob() -> u64 {
    32 * 1024 * 1024
}
fn default_max_scan() -> u64 {
    512 * 1024 * 1024
}
fn default_scan_timeout() -> u64 {
    120
}
fn default_hold_timeout() -> u64 {
    300
}
fn default_bottle() -> String {
    "bottle".into()
}
fn default_git() -> PathBuf {
    PathBuf::from("git")
}
fn default_path() -> String {
    "/usr/local/bin:/usr/bin:/bin".into()
}
fn default_username() -> String {
    "x-access-token".into()
}

impl GitGateSettings {
    /// Settings with every default, mirrors under `root` and no repositories.
    pub fn new(root: impl Into<PathBuf>) -> GitGateSettings {
        GitGateSettings {
            listen: default_listen(),
            root: root.into(),
            repos: BTreeMap::new(),
            max_body_bytes: default_max_body(),
            upstream_timeout_seconds: default_upstream_timeout(),
            serve_timeout_seconds: default_serve_timeout(),
            max_blob_bytes: default_max_blob(),
            max_scan_bytes: default_max_scan(),
            scan_timeout_seconds: default_scan_timeout(),
            approvals: None,
            hold_timeout_seconds: default_hold_timeout(),
            bottle: default_bottle(),
            upstream_ca: None,
            git: default_git(),
            path: default_path(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_table_parses_with_defaults_and_refuses_unknown_keys() {
        let text = r#"
            root = "/tmp/g"
            [repos.demo]
            url = "https://example.com/o/demo.git"
            token_ref = "GITHUB_TOKEN"
        "#;
        let s: GitGateSettings = toml::from_str(text).unwrap();
        assert_eq!(s.max_body_bytes, 100 * 1024 * 1024);
        assert_eq!(s.listen, Listen::Addr("127.0.0.1:9420".parse().unwrap()));
        assert_eq!(s.repos["demo"].username, "x-access-token");
        let err = toml::from_str::<GitGateSettings>("rooot = \"/x\"").unwrap_err();
        assert!(err.to_string().contains("unknown field"), "{err}");
        let err = toml::from_str::<GitGateSettings>("[repos.a]\nurl = \"x\"\nidentty = \"/k\"")
            .unwrap_err();
        assert!(err.to_string().contains("identty"), "{err}");
    }

    #[test]
    fn listen_may_be_an_inherited_fd() {
        let s: GitGateSettings = toml::from_str("listen = { fd = 5 }").unwrap();
        assert_eq!(s.listen, Listen::Fd(5));
        assert_eq!(s.root, PathBuf::from("/git"));
    }
}
