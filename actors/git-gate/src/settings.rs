//! The git gate's settings: bottle-init's `git-gate` builtin table, rendered by the launcher
//! from the manifest's `git-gate.repos`.
//!
//! Hazard: a repository name or URL that reaches a path, a URL or an ssh command line
//! unchecked is a traversal or an injection (reference G6, G7). Names must match
//! `[A-Za-z0-9._-]+` (and are not `.` or `..`), URLs are parsed into their parts here,
//! once, and an SSH upstream without a pinned host key is refused at load: there is no
//! trust on first use. Token values are never in the settings: a repository names its
//! token by `token_ref`, resolved from the secrets the caller passes.

use std::collections::BTreeMap;

pub use bottle_protocol::git_gate::{GitGateSettings, Listen, RepoSettings};

use crate::GitGateError;

/// Every repository of `settings` checked: names, URLs, SSH pins. The first problem wins.
pub fn validate(settings: &GitGateSettings) -> Result<BTreeMap<String, UpstreamUrl>, GitGateError> {
    let mut out = BTreeMap::new();
    for (name, repo) in &settings.repos {
        let bad =
            |problem: &str| GitGateError::Repo { name: name.clone(), problem: problem.into() };
        if !valid_name(name) {
            return Err(bad("the name must match [A-Za-z0-9._-]+ and not be . or .."));
        }
        let url = UpstreamUrl::parse(&repo.url).map_err(&bad)?;
        if url.scheme == Scheme::Ssh {
            if repo.identity.is_none() {
                return Err(bad("an ssh upstream needs `identity` (the gate's key file)"));
            }
            match &repo.host_key {
                None => {
                    return Err(bad(
                        "an ssh upstream needs `host_key` pinned (no trust on first use)",
                    ));
                }
                Some(key) if !valid_host_key(key) => {
                    return Err(bad("`host_key` must be `<type> <base64>` on one line"));
                }
                Some(_) => {}
            }
            if repo.token_ref.is_some() {
                return Err(bad("`token_ref` is for https upstreams; ssh uses `identity`"));
            }
        } else if repo.identity.is_some() || repo.host_key.is_some() {
            return Err(bad("`identity` and `host_key` are for ssh upstreams"));
        }
        if repo.username.is_empty()
            || !repo.username.bytes().all(|b| b.is_ascii_graphic() && b != b':')
        {
            return Err(bad("`username` must be printable ASCII without ':'"));
        }
        out.insert(name.clone(), url);
    }
    Ok(out)
}

/// Whether `name` may name a repository: `[A-Za-z0-9._-]+`, not `.` or `..`.
pub fn valid_name(name: &str) -> bool {
    !name.is_empty()
        && name != "."
        && name != ".."
        && name.len() <= 100
        && name.bytes().all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'-'))
}

fn valid_host_key(key: &str) -> bool {
    let mut parts = key.split(' ');
    let (Some(kind), Some(blob), None) = (parts.next(), parts.next(), parts.next()) else {
        return false;
    };
    !kind.is_empty()
        && kind.bytes().all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'@' | b'.'))
        && !blob.is_empty()
        && blob.bytes().all(|b| b.is_ascii_alphanumeric() || matches!(b, b'+' | b'/' | b'='))
}

/// An upstream's scheme.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Scheme {
    /// Smart HTTP over TLS; the gate injects the token.
    Https,
    /// SSH with the gate's key and a pinned host key.
    Ssh,
}

/// An upstream URL taken apart (and put back together without surprises).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UpstreamUrl {
    /// The scheme.
    pub scheme: Scheme,
    /// SSH user, if any.
    pub user: Option<String>,
    /// Host name or address (IPv6 without brackets).
    pub host: String,
    /// Port, if given.
    pub port: Option<u16>,
    /// Path, starting with `/`.
    pub path: String,
}

impl UpstreamUrl {
    /// Parses `https://host[:port]/path` or `ssh://[user@]host[:port]/path`. Refuses
    /// anything with whitespace, control characters, credentials in an https URL, a
    /// query or a fragment.
    pub fn parse(url: &str) -> Result<UpstreamUrl, &'static str> {
        if url.bytes().any(|b| !b.is_ascii_graphic()) {
            return Err("the url must be printable ASCII without spaces");
        }
        let (scheme, rest) = if let Some(rest) = url.strip_prefix("https://") {
            (Scheme::Https, rest)
        } else if let Some(rest) = url.strip_prefix("ssh://") {
            (Scheme::Ssh, rest)
        } else {
            return Err("the url must start with https:// or ssh://");
        };
        if rest.contains(['?', '#', '\\', '\'', '"', '`', '$', ';']) {
            return Err("the url must not have a query, a fragment or shell characters");
        }
        let (authority, path) = match rest.find('/') {
            Some(i) => (&rest[..i], &rest[i..]),
            None => return Err("the url needs a path"),
        };
        if path.len() < 2 || path.split('/').any(|seg| seg == "..") {
            return Err("the url needs a path without ..");
        }
        let (user, hostport) = match authority.rsplit_once('@') {
            Some(_) if scheme == Scheme::Https => {
                return Err("credentials do not belong in the url: use token_ref");
            }
            Some((user, hostport)) => (Some(user.to_string()), hostport),
            None => (None, authority),
        };
        if user.as_deref().is_some_and(|u| {
            u.is_empty()
                || u.starts_with('-')
                || !u.bytes().all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'-'))
        }) {
            return Err("the ssh user must match [A-Za-z0-9._-]+");
        }
        let (host, port) = split_host_port(hostport)?;
        if host.is_empty()
            || host.starts_with('-')
            || !host.bytes().all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'-' | b':'))
        {
            return Err("the host must be a name or an address");
        }
        Ok(UpstreamUrl { scheme, user, host, port, path: path.to_string() })
    }

    /// The URL git is given (never with credentials).
    pub fn render(&self) -> String {
        let host =
            if self.host.contains(':') { format!("[{}]", self.host) } else { self.host.clone() };
        let port = self.port.map(|p| format!(":{p}")).unwrap_or_default();
        match self.scheme {
            Scheme::Https => format!("https://{host}{port}{}", self.path),
            Scheme::Ssh => {
                let user = self.user.as_ref().map(|u| format!("{u}@")).unwrap_or_default();
                format!("ssh://{user}{host}{port}{}", self.path)
            }
        }
    }

    /// The host as `known_hosts` names it: `host`, or `[host]:port` off port 22.
    pub fn known_hosts_name(&self) -> String {
        match self.port {
            Some(port) if port != 22 => format!("[{}]:{port}", self.host),
            _ => self.host.clone(),
        }
    }
}

fn split_host_port(hostport: &str) -> Result<(String, Option<u16>), &'static str> {
    let bad_port = "the port must be a number from 1 to 65535";
    if let Some(rest) = hostport.strip_prefix('[') {
        let (host, after) = rest.split_once(']').ok_or("unclosed [ in the host")?;
        let port = match after.strip_prefix(':') {
            Some(p) => Some(p.parse::<u16>().ok().filter(|&p| p > 0).ok_or(bad_port)?),
            None if after.is_empty() => None,
            None => return Err("junk after ] in the host"),
        };
        return Ok((host.to_string(), port));
    }
    match hostport.rsplit_once(':') {
        Some((host, port)) => {
            let port = port.parse::<u16>().ok().filter(|&p| p > 0).ok_or(bad_port)?;
            Ok((host.to_string(), Some(port)))
        }
        None => Ok((hostport.to_string(), None)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn repo(url: &str) -> RepoSettings {
        RepoSettings {
            url: url.into(),
            token_ref: None,
            username: "x-access-token".into(),
            identity: None,
            host_key: None,
        }
    }

    fn check(name: &str, repo: RepoSettings) -> Result<(), String> {
        let mut s = GitGateSettings::new("/git");
        s.repos.insert(name.into(), repo);
        validate(&s).map(|_| ()).map_err(|e| e.to_string())
    }

    #[test]
    fn names_outside_the_alphabet_are_refused() {
        for name in ["..", ".", "a/b", "a b", "a;b", "$(x)", "a\nb", "", "é"] {
            let err = check(name, repo("https://example.com/o/r.git")).unwrap_err();
            assert!(err.contains("[A-Za-z0-9._-]+"), "{name:?}: {err}");
        }
        check("my-repo_1.x", repo("https://example.com/o/r.git")).unwrap();
    }

    #[test]
    fn urls_with_shell_characters_credentials_or_other_schemes_are_refused() {
        let cases = [
            ("http://example.com/r.git", "https:// or ssh://"),
            ("ext::sh -c touch% /tmp/x", "printable ASCII"),
            ("file:///etc", "https:// or ssh://"),
            ("https://user:pw@example.com/r.git", "token_ref"),
            ("https://example.com/r.git?x=1", "query"),
            ("https://example.com/$(id)", "shell characters"),
            ("https://example.com/a/../b", "without .."),
            ("https://-oProxyCommand=x/r", "host"),
            ("ssh://-oProxyCommand=x@h/r", "ssh user"),
            ("https://example.com:0/r", "port"),
            ("https://example.com", "path"),
        ];
        for (url, why) in cases {
            let err = check("r", repo(url)).unwrap_err();
            assert!(err.contains(why), "{url}: {err}");
        }
    }

    #[test]
    fn ssh_needs_a_pinned_host_key_and_an_identity() {
        let mut r = repo("ssh://git@example.com:2222/o/r.git");
        r.identity = Some("/keys/id".into());
        assert!(check("r", r.clone()).unwrap_err().contains("host_key"));
        r.host_key = Some("ssh-ed25519 AAAA\nevil".into());
        assert!(check("r", r.clone()).unwrap_err().contains("one line"));
        r.host_key = Some("ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIB".into());
        check("r", r.clone()).unwrap();
        r.identity = None;
        assert!(check("r", r).unwrap_err().contains("identity"));
    }

    #[test]
    fn urls_render_back_without_surprises() {
        let u = UpstreamUrl::parse("ssh://git@[::1]:2222/o/r.git").unwrap();
        assert_eq!((u.host.as_str(), u.port), ("::1", Some(2222)));
        assert_eq!(u.render(), "ssh://git@[::1]:2222/o/r.git");
        assert_eq!(u.known_hosts_name(), "[::1]:2222");
        let u = UpstreamUrl::parse("https://example.com/o/r.git").unwrap();
        assert_eq!(u.render(), "https://example.com/o/r.git");
        assert_eq!(u.known_hosts_name(), "example.com");
    }
}
