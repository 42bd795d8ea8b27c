//! The routes file: which hosts, paths, methods and headers the agent may reach, and
//! what to inject there.
//!
//! Hazard: a lenient parser turns a typo into an open door (`method` instead of
//! `methods` would match everything) and a token value into a log line. Unknown keys are
//! errors that name the key; every regex compiles at load; `token_ref` names a secret the
//! caller resolved and passes in (never the process environment), and errors name the
//! secret, never its value.
//! `role` is reserved and refused, as in the reference system.

use std::collections::HashMap;

use serde::{Deserialize, Serialize};

/// Why a routes file was refused. The running table stays in place.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum RoutesError {
    /// The YAML did not match the schema (the message names the key or field).
    #[error("routes file is invalid: {0}")]
    Parse(String),
    /// A route is inconsistent.
    #[error("route {host:?}: {problem}")]
    Route {
        /// The route's host.
        host: String,
        /// What is wrong.
        problem: String,
    },
}

/// The file.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
struct RoutesFile {
    routes: Vec<RouteSpec>,
    /// File-wide DLP settings: the operator's own rules.
    #[serde(default)]
    dlp: Option<FileDlp>,
}

/// The routes file's top-level `dlp:` block.
#[derive(Debug, Clone, Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct FileDlp {
    /// Extra credential rules, compiled next to the built-in ones.
    #[serde(default)]
    rules: Vec<bottle_pipelock::RuleDef>,
}

/// One route as written.
#[derive(Debug, Clone, Deserialize, Serialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct RouteSpec {
    /// Exact host, case-insensitive (a DNS name or an IP address).
    pub host: String,
    /// Credential injection.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub auth: Option<AuthSpec>,
    /// OR across entries; none means every path and method.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub matches: Vec<MatchSpec>,
    /// DLP policy (used by pipelock).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub dlp: Option<DlpSpec>,
    /// Git over HTTPS.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub git: Option<GitSpec>,
    /// Tunnel without interception (after checking the ClientHello SNI).
    #[serde(default, skip_serializing_if = "is_false")]
    pub tls_passthrough: bool,
    /// Allow DNS-over-HTTPS requests on this route (blocked everywhere else).
    #[serde(default, skip_serializing_if = "is_false")]
    pub doh: bool,
    /// Connect here instead of resolving `host` (operator-pinned; may be a private or
    /// loopback address, which resolution would refuse).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub connect: Option<String>,
    /// Ports the agent may ask for. Default: 443 through CONNECT, 80 for plain HTTP.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub ports: Vec<u16>,
    /// Reserved by the reference system; refused.
    #[serde(default, skip_serializing)]
    role: Option<serde_saphyr_value::Ignored>,
}

fn is_false(b: &bool) -> bool {
    !*b
}

/// A placeholder type so `role:` can be detected and refused with a clear message.
mod serde_saphyr_value {
    /// Any YAML value, ignored.
    #[derive(Debug, Clone, PartialEq)]
    pub(super) struct Ignored;

    impl<'de> serde::Deserialize<'de> for Ignored {
        fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
            serde::de::IgnoredAny::deserialize(d).map(|_| Ignored)
        }
    }
}

/// How to present the real credential upstream.
#[derive(Debug, Clone, Copy, Deserialize, Serialize, PartialEq, Eq)]
pub enum AuthScheme {
    /// `Authorization: Bearer <token>`.
    Bearer,
    /// `Authorization: token <token>` (GitHub style).
    #[serde(rename = "token")]
    Token,
    /// `Authorization: Basic <token>` (the token is already `base64(user:pass)`).
    Basic,
    /// `<header>: <token>`.
    #[serde(rename = "header")]
    Header,
}

/// Credential injection for a route.
#[derive(Debug, Clone, Deserialize, Serialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct AuthSpec {
    /// The scheme.
    pub scheme: AuthScheme,
    /// Name of the secret holding the real token (the caller resolves it).
    pub token_ref: String,
    /// Header name, for `scheme: header`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub header: Option<String>,
    /// Also inject over plain HTTP (the real token then crosses the wire unencrypted).
    /// Off by default: without TLS upstream the request is refused.
    #[serde(default, skip_serializing_if = "is_false")]
    pub plaintext: bool,
}

/// One match entry: all its parts must hold (AND); entries are ORed.
#[derive(Debug, Clone, Deserialize, Serialize, PartialEq, Default)]
#[serde(deny_unknown_fields)]
pub struct MatchSpec {
    /// Any of these paths (none: any path).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub paths: Vec<PathMatch>,
    /// Any of these methods, case-insensitive (none: any method).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub methods: Vec<String>,
    /// All of these headers.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub headers: Vec<HeaderMatch>,
}

/// How a path matches.
#[derive(Debug, Clone, Copy, Deserialize, Serialize, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub enum PathKind {
    /// Segment-aware prefix: `/api` matches `/api` and `/api/x`, not `/apix`.
    Prefix,
    /// The whole path.
    Exact,
    /// A regex over the whole path (anchored).
    Regex,
}

/// A path match.
#[derive(Debug, Clone, Deserialize, Serialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct PathMatch {
    /// Kind.
    #[serde(rename = "type")]
    pub kind: PathKind,
    /// The path or pattern.
    pub value: String,
}

/// How a header matches.
#[derive(Debug, Clone, Copy, Deserialize, Serialize, PartialEq, Eq, Default)]
#[serde(rename_all = "lowercase")]
pub enum HeaderKind {
    /// Exact value.
    #[default]
    Exact,
    /// Anchored regex over the value.
    Regex,
    /// Present with any value.
    Present,
}

/// A header match.
#[derive(Debug, Clone, Deserialize, Serialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct HeaderMatch {
    /// Header name, case-insensitive.
    pub name: String,
    /// Value (not for `present`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub value: Option<String>,
    /// Kind.
    #[serde(default, rename = "type")]
    pub kind: HeaderKind,
}

/// What pipelock does on a match.
#[derive(Debug, Clone, Copy, Deserialize, Serialize, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub enum OnMatch {
    /// 403.
    Block,
    /// Replace the value, re-scan, forward.
    Redact,
    /// Hold for approval (the reference system's `supervise`).
    #[serde(alias = "supervise")]
    Hold,
    /// Log and forward (inbound only).
    Warn,
}

/// DLP policy of a route (enforced by pipelock).
#[derive(Debug, Clone, Deserialize, Serialize, PartialEq, Default)]
#[serde(deny_unknown_fields)]
pub struct DlpSpec {
    /// Outbound detectors (`token_patterns`, `known_secrets`), or `false` for none.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub outbound_detectors: Option<DetectorList>,
    /// Inbound detectors (`naive_injection_detection`), or `false` for none.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub inbound_detectors: Option<DetectorList>,
    /// On an outbound finding.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub outbound_on_match: Option<OnMatch>,
    /// On an inbound finding.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub inbound_on_match: Option<OnMatch>,
}

/// A detector list as written: names, or `false` for none (as in the reference schema).
#[derive(Debug, Clone, Deserialize, Serialize, PartialEq)]
#[serde(untagged)]
pub enum DetectorList {
    /// These detectors.
    Names(Vec<String>),
    /// `false`: none (`true` is refused: name them).
    Off(bool),
}

impl DetectorList {
    fn names(&self) -> &[String] {
        match self {
            DetectorList::Names(n) => n,
            DetectorList::Off(_) => &[],
        }
    }
}

/// A route's DLP policy with the defaults filled in.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RouteDlp {
    /// Outbound detectors that run.
    pub outbound: bottle_pipelock::Detectors,
    /// Inbound injection detection runs.
    pub inbound: bool,
    /// On an outbound finding: block, redact or hold (default hold).
    pub on_outbound: OnMatch,
    /// On a high-confidence inbound finding: block or warn (default block).
    pub on_inbound: OnMatch,
}

/// Git over HTTPS on a route.
#[derive(Debug, Clone, Deserialize, Serialize, PartialEq, Default)]
#[serde(deny_unknown_fields)]
pub struct GitSpec {
    /// Allow fetch and clone (`git-upload-pack`).
    #[serde(default)]
    pub fetch: bool,
    /// Allow push (`git-receive-pack`). Only the route the launcher adds to the bottle's
    /// own git gate sets it (the gate scans every push before upstream sees it); a
    /// bottle file may not (the manifest refuses it), so pushes never leave directly.
    #[serde(default, skip_serializing_if = "is_false")]
    pub push: bool,
}

/// A compiled route. Its `Debug` shows whether it has a token, never the token.
#[derive(Clone)]
pub struct Route {
    /// As written.
    pub spec: RouteSpec,
    /// Lowercased host without a trailing dot.
    pub host: String,
    /// Compiled path regexes, by (match index, path index).
    path_regexes: HashMap<(usize, usize), regex::Regex>,
    /// Compiled header regexes, by (match index, header index).
    header_regexes: HashMap<(usize, usize), regex::Regex>,
    /// The real token, resolved from the given secrets at load. Never serialized.
    token: Option<String>,
    /// The DLP policy, defaults filled in.
    dlp: RouteDlp,
}

impl std::fmt::Debug for Route {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // The token's name is in `spec.auth.token_ref`; its value never leaves the proxy.
        f.debug_struct("Route")
            .field("host", &self.host)
            .field("spec", &self.spec)
            .field("token", &self.token.as_ref().map(|_| "<redacted>"))
            .field("dlp", &self.dlp)
            .finish_non_exhaustive()
    }
}

/// The live table.
#[derive(Debug, Clone, Default)]
pub struct RouteTable {
    routes: Vec<Route>,
    by_host: HashMap<String, usize>,
    dlp_rules: Vec<bottle_pipelock::RuleDef>,
}

const OUTBOUND: &[&str] = &["token_patterns", "known_secrets"];
const INBOUND: &[&str] = &["naive_injection_detection"];

/// Lowercase, no trailing dot, brackets off IPv6.
pub fn normalize_host(host: &str) -> String {
    host.trim_end_matches('.').trim_start_matches('[').trim_end_matches(']').to_ascii_lowercase()
}

impl RouteTable {
    /// Parses and validates `text`, resolving `token_ref`s through `env`.
    pub fn parse(
        text: &str,
        env: &dyn Fn(&str) -> Option<String>,
    ) -> Result<RouteTable, RoutesError> {
        let file: RoutesFile = serde_saphyr::from_str(text)
            .map_err(|e| RoutesError::Parse(first_line(&e.to_string())))?;
        let mut table = RouteTable::default();
        if let Some(dlp) = file.dlp {
            // Compiled here so a bad rule refuses the file (and a reload keeps the old one).
            bottle_pipelock::Pipelock::new(&dlp.rules, &[])
                .map_err(|e| RoutesError::Parse(format!("dlp.rules: {e}")))?;
            table.dlp_rules = dlp.rules;
        }
        for spec in file.routes {
            let route = compile(spec, env)?;
            if table.by_host.contains_key(&route.host) {
                return Err(RoutesError::Route {
                    host: route.host,
                    problem: "duplicate host".into(),
                });
            }
            table.by_host.insert(route.host.clone(), table.routes.len());
            table.routes.push(route);
        }
        Ok(table)
    }

    /// The `token_ref` names `text` uses, each once, in file order, without resolving
    /// them: what a caller must look up before [`RouteTable::parse`].
    pub fn token_refs(text: &str) -> Result<Vec<String>, RoutesError> {
        let file: RoutesFile = serde_saphyr::from_str(text)
            .map_err(|e| RoutesError::Parse(first_line(&e.to_string())))?;
        let mut names: Vec<String> = Vec::new();
        for auth in file.routes.into_iter().filter_map(|r| r.auth) {
            if !names.contains(&auth.token_ref) {
                names.push(auth.token_ref);
            }
        }
        Ok(names)
    }

    /// The route for `host` (already normalized).
    pub fn get(&self, host: &str) -> Option<&Route> {
        self.by_host.get(host).map(|&i| &self.routes[i])
    }

    /// Every route.
    pub fn routes(&self) -> &[Route] {
        &self.routes
    }

    /// The operator's extra DLP rules.
    pub fn dlp_rules(&self) -> &[bottle_pipelock::RuleDef] {
        &self.dlp_rules
    }

    /// Hosts that are TLS-intercepted (everything but passthrough routes).
    pub fn bumped_hosts(&self) -> Vec<String> {
        self.routes.iter().filter(|r| !r.spec.tls_passthrough).map(|r| r.host.clone()).collect()
    }

    /// Every real token of the table with the hosts allowed to receive it (a
    /// `token_ref` shared by several routes belongs to all of them).
    pub fn tokens(&self) -> Vec<(String, Vec<String>)> {
        let mut out: Vec<(String, Vec<String>)> = Vec::new();
        for r in &self.routes {
            let Some(token) = &r.token else { continue };
            match out.iter_mut().find(|(t, _)| t == token) {
                Some((_, hosts)) => hosts.push(r.host.clone()),
                None => out.push((token.clone(), vec![r.host.clone()])),
            }
        }
        out
    }

    /// The table as JSON without any secret (introspection).
    pub fn to_public_json(&self) -> serde_json::Value {
        serde_json::json!({ "routes": self.routes.iter().map(|r| &r.spec).collect::<Vec<_>>() })
    }
}

fn first_line(message: &str) -> String {
    message.lines().next().unwrap_or(message).to_string()
}

fn compile(spec: RouteSpec, env: &dyn Fn(&str) -> Option<String>) -> Result<Route, RoutesError> {
    let host = normalize_host(&spec.host);
    let bad = |problem: String| RoutesError::Route { host: host.clone(), problem };
    if spec.role.is_some() {
        return Err(bad("`role` is reserved and not accepted".into()));
    }
    if host.is_empty()
        || host.contains('/')
        || host.contains(char::is_whitespace)
        || host.contains('*')
    {
        return Err(bad(
            "host must be one exact host name or IP address (no wildcards, paths or spaces)".into(),
        ));
    }
    let mut path_regexes = HashMap::new();
    let mut header_regexes = HashMap::new();
    for (mi, m) in spec.matches.iter().enumerate() {
        for method in &m.methods {
            if !VALID_METHODS.contains(&method.to_ascii_uppercase().as_str()) {
                return Err(bad(format!("unknown method {method:?}")));
            }
        }
        for (pi, p) in m.paths.iter().enumerate() {
            match p.kind {
                PathKind::Regex => {
                    let re = regex::Regex::new(&format!("^(?:{})$", p.value))
                        .map_err(|e| bad(format!("path regex {:?}: {e}", p.value)))?;
                    path_regexes.insert((mi, pi), re);
                }
                _ if !p.value.starts_with('/') => {
                    return Err(bad(format!("path {:?} must start with /", p.value)));
                }
                _ => {}
            }
        }
        for (hi, h) in m.headers.iter().enumerate() {
            match (h.kind, &h.value) {
                (HeaderKind::Present, Some(_)) => {
                    return Err(bad(format!("header {:?}: `present` takes no value", h.name)));
                }
                (HeaderKind::Exact | HeaderKind::Regex, None) => {
                    return Err(bad(format!("header {:?} needs a value", h.name)));
                }
                (HeaderKind::Regex, Some(v)) => {
                    let re = regex::Regex::new(&format!("^(?:{v})$"))
                        .map_err(|e| bad(format!("header regex {v:?}: {e}")))?;
                    header_regexes.insert((mi, hi), re);
                }
                _ => {}
            }
        }
    }
    if let Some(dlp) = &spec.dlp {
        for list in [&dlp.outbound_detectors, &dlp.inbound_detectors].into_iter().flatten() {
            if *list == DetectorList::Off(true) {
                return Err(bad("detectors take a list of names or `false`".into()));
            }
        }
        for d in dlp.outbound_detectors.iter().flat_map(DetectorList::names) {
            if !OUTBOUND.contains(&d.as_str()) {
                return Err(bad(format!(
                    "unknown outbound detector {d:?} (known: {})",
                    OUTBOUND.join(", ")
                )));
            }
        }
        for d in dlp.inbound_detectors.iter().flat_map(DetectorList::names) {
            if !INBOUND.contains(&d.as_str()) {
                return Err(bad(format!(
                    "unknown inbound detector {d:?} (known: {})",
                    INBOUND.join(", ")
                )));
            }
        }
        if matches!(dlp.outbound_on_match, Some(OnMatch::Warn)) {
            return Err(bad(
                "outbound_on_match: warn would forward a secret; use block, redact or hold".into(),
            ));
        }
        if matches!(dlp.inbound_on_match, Some(OnMatch::Redact | OnMatch::Hold)) {
            return Err(bad("inbound_on_match takes block or warn".into()));
        }
    }
    if spec.tls_passthrough && (!spec.matches.is_empty() || spec.dlp.is_some()) {
        return Err(bad(
            "tls_passthrough routes cannot match paths or run DLP: nothing is decrypted".into(),
        ));
    }
    if spec.tls_passthrough && spec.auth.is_some() {
        return Err(bad(
            "tls_passthrough routes cannot inject credentials: nothing is decrypted".into()
        ));
    }
    if let Some(connect) = &spec.connect
        && connect.parse::<std::net::SocketAddr>().is_err()
        && connect.parse::<std::net::IpAddr>().is_err()
    {
        return Err(bad(format!("connect {connect:?} must be an ip or ip:port address")));
    }
    let token = match &spec.auth {
        None => None,
        Some(auth) => {
            if auth.scheme == AuthScheme::Header && auth.header.as_deref().is_none_or(str::is_empty)
            {
                return Err(bad("auth scheme `header` needs `header: <name>`".into()));
            }
            if auth.scheme != AuthScheme::Header && auth.header.is_some() {
                // The named header would be neither replaced nor scanned.
                return Err(bad("`header:` belongs to auth scheme `header` only".into()));
            }
            // The name only, never the value.
            let value = env(&auth.token_ref).filter(|v| !v.is_empty()).ok_or_else(|| {
                bad(format!("token_ref {:?} is not set (no secret by that name)", auth.token_ref))
            })?;
            Some(value)
        }
    };
    let dlp = route_dlp(spec.dlp.as_ref());
    Ok(Route { spec, host, path_regexes, header_regexes, token, dlp })
}

/// Methods a route may name.
pub const VALID_METHODS: &[&str] =
    &["GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS", "TRACE", "CONNECT"];

/// A route's DLP policy with the defaults filled in (once, at load).
fn route_dlp(spec: Option<&DlpSpec>) -> RouteDlp {
    // An unset list means every detector of its kind; `false` means none.
    let has = |list: Option<&DetectorList>, name: &str| {
        list.is_none_or(|l| l.names().iter().any(|n| n == name))
    };
    let outbound = spec.and_then(|s| s.outbound_detectors.as_ref());
    let inbound = spec.and_then(|s| s.inbound_detectors.as_ref());
    RouteDlp {
        outbound: bottle_pipelock::Detectors {
            token_patterns: has(outbound, "token_patterns"),
            known_secrets: has(outbound, "known_secrets"),
        },
        inbound: has(inbound, "naive_injection_detection"),
        on_outbound: spec.and_then(|s| s.outbound_on_match).unwrap_or(OnMatch::Hold),
        on_inbound: spec.and_then(|s| s.inbound_on_match).unwrap_or(OnMatch::Block),
    }
}

impl Route {
    /// The DLP policy with defaults: every detector on, outbound findings held for
    /// approval, high-confidence inbound findings blocked.
    pub fn dlp(&self) -> RouteDlp {
        self.dlp
    }

    /// The operator-pinned address for a request to `port`: `connect: ip:port` pins both,
    /// `connect: ip` pins the address and keeps the requested port.
    pub fn connect_addr(&self, port: u16) -> Option<std::net::SocketAddr> {
        let connect = self.spec.connect.as_deref()?;
        connect.parse::<std::net::SocketAddr>().ok().or_else(|| {
            connect.parse::<std::net::IpAddr>().ok().map(|ip| std::net::SocketAddr::new(ip, port))
        })
    }

    /// Whether the agent may ask for `port` (`tls`: through CONNECT).
    pub fn port_allowed(&self, port: u16, tls: bool) -> bool {
        if self.spec.ports.is_empty() {
            port == if tls { 443 } else { 80 }
        } else {
            self.spec.ports.contains(&port)
        }
    }

    /// The real token of this route, if it injects one.
    pub fn token(&self) -> Option<&str> {
        self.token.as_deref()
    }

    /// Whether `method path headers` pass this route's `matches` (none: everything).
    pub fn matches(&self, method: &str, path: &str, header: &dyn Fn(&str) -> Vec<String>) -> bool {
        if self.spec.matches.is_empty() {
            return true;
        }
        self.spec.matches.iter().enumerate().any(|(mi, m)| {
            let method_ok =
                m.methods.is_empty() || m.methods.iter().any(|x| x.eq_ignore_ascii_case(method));
            let path_ok = m.paths.is_empty()
                || m.paths.iter().enumerate().any(|(pi, p)| match p.kind {
                    PathKind::Exact => path == p.value,
                    PathKind::Prefix => {
                        let prefix = p.value.trim_end_matches('/');
                        prefix.is_empty()
                            || path == prefix
                            || path.strip_prefix(prefix).is_some_and(|rest| rest.starts_with('/'))
                    }
                    PathKind::Regex => self.path_regexes[&(mi, pi)].is_match(path),
                });
            let headers_ok = m.headers.iter().enumerate().all(|(hi, h)| {
                let values = header(&h.name);
                match h.kind {
                    HeaderKind::Present => !values.is_empty(),
                    HeaderKind::Exact => {
                        values.iter().any(|v| Some(v.as_str()) == h.value.as_deref())
                    }
                    HeaderKind::Regex => {
                        values.iter().any(|v| self.header_regexes[&(mi, hi)].is_match(v))
                    }
                }
            });
            method_ok && path_ok && headers_ok
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn env(name: &str) -> Option<String> {
        (name == "GH_TOKEN").then(|| "ghp_realsecretvalue".to_string())
    }

    fn table(text: &str) -> Result<RouteTable, RoutesError> {
        RouteTable::parse(text, &env)
    }

    #[test]
    fn debug_of_a_route_or_table_names_the_token_never_its_value() {
        let t = table(
            "routes:\n  - host: api.github.com\n    auth: {scheme: token, token_ref: GH_TOKEN}\n",
        )
        .unwrap();
        for shown in [format!("{:?}", t.get("api.github.com").unwrap()), format!("{t:?}")] {
            assert!(!shown.contains("ghp_realsecretvalue"), "{shown}");
            assert!(shown.contains("GH_TOKEN") && shown.contains("<redacted>"), "{shown}");
        }
    }

    #[test]
    fn unknown_keys_are_named() {
        let err =
            table("routes:\n  - host: a.example\n    method: [GET]\n").unwrap_err().to_string();
        assert!(err.contains("method"), "{err}");
        let err = table("routes:\n  - host: a.example\n    matches:\n      - paths: [{type: prefix, valu: /x}]\n").unwrap_err().to_string();
        assert!(err.contains("valu"), "{err}");
        let err = table("route: []\n").unwrap_err().to_string();
        assert!(err.contains("route"), "{err}");
    }

    #[test]
    fn token_refs_resolve_and_errors_name_the_variable_not_the_value() {
        let t = table(
            "routes:\n  - host: api.github.com\n    auth: {scheme: token, token_ref: GH_TOKEN}\n",
        )
        .unwrap();
        assert_eq!(t.get("api.github.com").unwrap().token(), Some("ghp_realsecretvalue"));
        let err = table(
            "routes:\n  - host: x.example\n    auth: {scheme: Bearer, token_ref: MISSING_VAR}\n",
        )
        .unwrap_err()
        .to_string();
        assert!(err.contains("MISSING_VAR") && err.contains("not set"), "{err}");
        let refs = RouteTable::token_refs(
            "routes:\n  - host: a.example\n    auth: {scheme: token, token_ref: A}\n  - host: b.example\n    auth: {scheme: token, token_ref: A}\n  - host: c.example\n",
        )
        .unwrap();
        assert_eq!(refs, ["A"]);
        let json = t.to_public_json().to_string();
        assert!(!json.contains("ghp_realsecretvalue") && json.contains("GH_TOKEN"), "{json}");
    }

    #[test]
    fn bad_routes_are_refused_with_reasons() {
        for (text, needle) in [
            ("routes:\n  - host: a.example\n    role: admin\n", "reserved"),
            ("routes:\n  - host: '*.example'\n", "wildcard"),
            ("routes:\n  - host: a.example\n  - host: A.example.\n", "duplicate"),
            ("routes:\n  - host: a.example\n    matches: [{methods: [FETCH]}]\n", "unknown method"),
            (
                "routes:\n  - host: a.example\n    matches: [{paths: [{type: regex, value: '('}]}]\n",
                "path regex",
            ),
            (
                "routes:\n  - host: a.example\n    matches: [{paths: [{type: prefix, value: api}]}]\n",
                "must start with /",
            ),
            (
                "routes:\n  - host: a.example\n    tls_passthrough: true\n    matches: [{methods: [GET]}]\n",
                "nothing is decrypted",
            ),
            (
                "routes:\n  - host: a.example\n    dlp: {outbound_detectors: [magic]}\n",
                "unknown outbound detector",
            ),
            (
                "routes:\n  - host: a.example\n    auth: {scheme: header, token_ref: GH_TOKEN}\n",
                "needs `header",
            ),
            ("routes:\n  - host: a.example\n    connect: nowhere\n", "ip or ip:port"),
        ] {
            let err = table(text).unwrap_err().to_string();
            assert!(err.contains(needle), "{text}: {err}");
        }
    }

    #[test]
    fn matches_are_or_across_entries_and_and_within() {
        let t = table(
            r#"routes:
  - host: api.example.com
    matches:
      - paths: [{type: prefix, value: /api/v1/}]
        methods: [get, POST]
      - paths: [{type: exact, value: /health}]
      - paths: [{type: regex, value: '/repos/[a-z]+/issues'}]
        headers: [{name: X-Mode, value: read}]
"#,
        )
        .unwrap();
        let r = t.get("api.example.com").unwrap();
        let none = |_: &str| Vec::<String>::new();
        let mode = |n: &str| {
            if n.eq_ignore_ascii_case("x-mode") { vec!["read".to_string()] } else { vec![] }
        };
        assert!(r.matches("GET", "/api/v1/users", &none));
        assert!(r.matches("post", "/api/v1", &none));
        assert!(!r.matches("DELETE", "/api/v1/users", &none));
        assert!(!r.matches("GET", "/api/v10", &none), "prefix is segment-aware");
        assert!(r.matches("DELETE", "/health", &none));
        assert!(!r.matches("GET", "/health/x", &none));
        assert!(r.matches("GET", "/repos/abc/issues", &mode));
        assert!(!r.matches("GET", "/repos/abc/issues", &none), "header required");
        assert!(!r.matches("GET", "/repos/abc/issues/1", &mode), "regex is anchored");
        assert!(!r.matches("GET", "/other", &none));
    }

    #[test]
    fn a_route_without_matches_allows_every_path_and_method() {
        let t = table("routes:\n  - host: A.Example.com.\n").unwrap();
        let r = t.get("a.example.com").unwrap();
        assert!(r.matches("PATCH", "/anything", &|_| Vec::new()));
        assert_eq!(t.bumped_hosts(), vec!["a.example.com".to_string()]);
    }
}
