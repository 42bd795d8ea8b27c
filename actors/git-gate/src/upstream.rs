//! How the gate reaches an upstream: the configuration and environment of the git child
//! that fetches or pushes.
//!
//! Hazard: the token is the one thing the agent must never hold, and the one thing an
//! upstream fetch or push must carry. It travels only in the child's environment as an
//! `http.extraHeader` config value (`GIT_CONFIG_VALUE_<n>`), never in argv, the URL, a
//! file or a log line; redirects are not followed (git would replay the header to
//! wherever a redirect points) and only the https and ssh transports are allowed
//! (`protocol.allow=never`). SSH runs with the reference hardening: `BatchMode`,
//! `StrictHostKeyChecking=yes` against a known-hosts file holding only the pinned key,
//! `IdentitiesOnly` with the gate's key, `ConnectTimeout`; `GIT_SSH_COMMAND` is built
//! from argv pieces each quoted for the shell git hands it to, and pieces are checked
//! to be printable before quoting.

use std::path::{Path, PathBuf};

use bottle_protocol::secrets::Secret;

use crate::settings::{Scheme, UpstreamUrl};

/// Seconds ssh may spend connecting.
pub const SSH_CONNECT_TIMEOUT: u64 = 10;

/// A resolved upstream: URL plus how to authenticate.
#[derive(Clone)]
pub struct Upstream {
    /// The URL git is given (no credentials in it).
    pub url: UpstreamUrl,
    /// HTTPS Basic credentials (user, token).
    pub basic: Option<(String, Secret)>,
    /// SSH: the gate's key file and the known-hosts file with the pinned key.
    pub ssh: Option<SshPin>,
    /// Extra CA bundle for HTTPS.
    pub ca_file: Option<PathBuf>,
    /// Low-speed abort (seconds without progress) handed to curl.
    pub stall_seconds: u64,
}

impl std::fmt::Debug for Upstream {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Upstream")
            .field("url", &self.url.render())
            .field("token", &self.basic.as_ref().map(|_| "<redacted>"))
            .finish_non_exhaustive()
    }
}

/// SSH key material locations.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SshPin {
    /// The gate's private key.
    pub identity: PathBuf,
    /// A known-hosts file with exactly the pinned host key.
    pub known_hosts: PathBuf,
}

/// The known-hosts line for a pinned key.
pub fn known_hosts_line(url: &UpstreamUrl, host_key: &str) -> String {
    format!("{} {host_key}\n", url.known_hosts_name())
}

impl Upstream {
    /// Configuration for the git child (through `GIT_CONFIG_*`).
    pub fn config(&self) -> Vec<(String, String)> {
        let mut out: Vec<(String, String)> = vec![
            ("protocol.allow".into(), "never".into()),
            ("credential.helper".into(), String::new()),
            ("core.askPass".into(), "/bin/false".into()),
        ];
        match self.url.scheme {
            Scheme::Https => {
                out.push(("protocol.https.allow".into(), "always".into()));
                out.push(("http.followRedirects".into(), "false".into()));
                out.push(("http.lowSpeedLimit".into(), "1".into()));
                out.push(("http.lowSpeedTime".into(), self.stall_seconds.max(1).to_string()));
                if let Some(ca) = &self.ca_file {
                    out.push(("http.sslCAInfo".into(), ca.display().to_string()));
                }
                if let Some((user, token)) = &self.basic {
                    let pair = format!("{user}:{}", token.expose());
                    let header = format!(
                        "Authorization: Basic {}",
                        bottle_pipelock::base64_encode(pair.as_bytes(), false)
                            + padding(pair.len())
                    );
                    out.push(("http.extraHeader".into(), header));
                }
            }
            Scheme::Ssh => out.push(("protocol.ssh.allow".into(), "always".into())),
        }
        out
    }

    /// Environment for the git child (SSH only: the ssh command).
    pub fn env(&self) -> Vec<(String, String)> {
        match &self.ssh {
            Some(pin) => vec![
                ("GIT_SSH_COMMAND".into(), shell_join(&ssh_argv(&pin.identity, &pin.known_hosts))),
                ("GIT_SSH_VARIANT".into(), "ssh".into()),
            ],
            None => Vec::new(),
        }
    }
}

fn padding(len: usize) -> &'static str {
    match len % 3 {
        1 => "==",
        2 => "=",
        _ => "",
    }
}

/// The hardened ssh argv (git appends the host and the remote command).
pub fn ssh_argv(identity: &Path, known_hosts: &Path) -> Vec<String> {
    let mut argv: Vec<String> = vec!["ssh".into(), "-F".into(), "/dev/null".into()];
    for option in [
        format!("IdentityFile={}", identity.display()),
        "IdentitiesOnly=yes".into(),
        "IdentityAgent=none".into(),
        format!("UserKnownHostsFile={}", known_hosts.display()),
        "GlobalKnownHostsFile=/dev/null".into(),
        "StrictHostKeyChecking=yes".into(),
        "UpdateHostKeys=no".into(),
        "BatchMode=yes".into(),
        format!("ConnectTimeout={SSH_CONNECT_TIMEOUT}"),
        "ServerAliveInterval=15".into(),
        "ServerAliveCountMax=2".into(),
        "PermitLocalCommand=no".into(),
        "ForwardAgent=no".into(),
        "ClearAllForwardings=yes".into(),
    ] {
        argv.push("-o".into());
        argv.push(option);
    }
    argv
}

/// `argv` as one string a POSIX shell splits back into exactly these words: every word
/// single-quoted, each `'` written as `'\''`. Control characters cannot be quoted
/// safely for every shell and are dropped by the settings check before this point.
pub fn shell_join(argv: &[String]) -> String {
    argv.iter()
        .map(|word| format!("'{}'", word.replace('\'', r"'\''")))
        .collect::<Vec<_>>()
        .join(" ")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn upstream(url: &str) -> Upstream {
        Upstream {
            url: UpstreamUrl::parse(url).unwrap(),
            basic: None,
            ssh: None,
            ca_file: None,
            stall_seconds: 30,
        }
    }

    #[test]
    fn the_ssh_argv_carries_the_reference_hardening() {
        let argv = ssh_argv(Path::new("/git/.gate/id"), Path::new("/git/.gate/demo.known_hosts"));
        let joined = argv.join(" ");
        for needle in [
            "-o BatchMode=yes",
            "-o StrictHostKeyChecking=yes",
            "-o IdentitiesOnly=yes",
            "-o ConnectTimeout=10",
            "-o UserKnownHostsFile=/git/.gate/demo.known_hosts",
            "-o GlobalKnownHostsFile=/dev/null",
            "-o IdentityFile=/git/.gate/id",
            "-F /dev/null",
        ] {
            assert!(joined.contains(needle), "{needle} missing from {joined}");
        }
    }

    #[test]
    fn shell_join_keeps_every_word_whole() {
        let words = vec!["ssh".to_string(), "-o".into(), "IdentityFile=/k/it's $(id) `x`;y".into()];
        let joined = shell_join(&words);
        assert_eq!(joined, r#"'ssh' '-o' 'IdentityFile=/k/it'\''s $(id) `x`;y'"#);
    }

    #[test]
    fn https_config_injects_basic_auth_and_refuses_redirects_and_other_transports() {
        let mut up = upstream("https://example.com/o/r.git");
        up.basic = Some(("x-access-token".into(), Secret::new("ghp_token")));
        let config = up.config();
        let get = |k: &str| config.iter().find(|(key, _)| key == k).map(|(_, v)| v.clone());
        // base64("x-access-token:ghp_token")
        assert_eq!(
            get("http.extraHeader").unwrap(),
            "Authorization: Basic eC1hY2Nlc3MtdG9rZW46Z2hwX3Rva2Vu"
        );
        assert_eq!(get("http.followRedirects").unwrap(), "false");
        assert_eq!(get("protocol.allow").unwrap(), "never");
        assert_eq!(get("protocol.https.allow").unwrap(), "always");
        assert!(get("protocol.ssh.allow").is_none());
        assert!(up.env().is_empty());
        assert!(!format!("{up:?}").contains("ghp_token"));
    }

    #[test]
    fn known_hosts_lines_name_the_port() {
        let url = UpstreamUrl::parse("ssh://git@example.com:2222/r.git").unwrap();
        assert_eq!(
            known_hosts_line(&url, "ssh-ed25519 AAAA"),
            "[example.com]:2222 ssh-ed25519 AAAA\n"
        );
    }
}
