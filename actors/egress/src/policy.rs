//! The egress policy: a pure decision over a request head, made before any upstream
//! socket exists.
//!
//! Hazard: every string the agent controls is an attack surface: the CONNECT target,
//! the SNI, the Host header, the path (dot segments, percent-encoding), the query. The
//! decision takes the host from the CONNECT target (or the absolute URI), requires SNI
//! and Host to agree with it, refuses IP literals in every encoding unless a route names
//! that IP, normalizes the path (RFC 3986 dot-segment removal after decoding unreserved
//! characters) and forwards the normalized form, so what was checked is what is sent.
//! Anything it cannot parse is blocked. It cannot fail: it returns a verdict.

use crate::addr;
use crate::routes::{Route, RouteTable, normalize_host};
use bottle_pipelock::normalize::hex_val as hex;

/// The host name of introspection requests.
pub const INTROSPECTION_HOST: &str = "_bottle.internal";

/// Hosts that serve DNS-over-HTTPS (blocked unless a route opts in with `doh: true`).
pub const DOH_HOSTS: &[&str] = &[
    "dns.google",
    "dns.google.com",
    "cloudflare-dns.com",
    "mozilla.cloudflare-dns.com",
    "chrome.cloudflare-dns.com",
    "one.one.one.one",
    "1.1.1.1",
    "1.0.0.1",
    "8.8.8.8",
    "8.8.4.4",
    "9.9.9.9",
    "dns.quad9.net",
    "dns9.quad9.net",
    "doh.opendns.com",
    "dns.adguard.com",
    "dns.adguard-dns.com",
    "dns.nextdns.io",
    "doh.cleanbrowsing.org",
    "doh.dns.sb",
    "dns.alidns.com",
    "doh.pub",
];

/// What the agent asked for, as far as the policy cares.
#[derive(Debug, Clone, Copy)]
pub struct RequestHead<'a> {
    /// Method.
    pub method: &'a str,
    /// The CONNECT target host or the absolute-form URI host: the one that decides.
    pub target_host: &'a str,
    /// ClientHello SNI, for intercepted or tunnelled TLS.
    pub sni: Option<&'a str>,
    /// Host header or HTTP/2 `:authority` of the request, port stripped.
    pub host_header: Option<&'a str>,
    /// Path and query as sent (origin form).
    pub path_and_query: &'a str,
    /// Headers, names lowercase.
    pub headers: &'a [(String, String)],
}

/// The decision.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Verdict {
    /// Forward to `host` with `path_and_query` (normalized).
    Allow {
        /// The route's host.
        host: String,
        /// The path and query to send upstream.
        path_and_query: String,
    },
    /// Answer the introspection request.
    Introspect,
    /// Refuse with 403 and this reason.
    Block {
        /// Why, for the 403 body and the audit log (never a secret).
        reason: String,
        /// A credential canary fired: raise an alarm.
        alarm: bool,
    },
}

fn block(reason: impl Into<String>) -> Verdict {
    Verdict::Block { reason: reason.into(), alarm: false }
}

/// Secrets the agent must never send anywhere but their own route: the real tokens and
/// the placeholders handed to the agent.
#[derive(Debug, Clone, Default)]
pub struct Canaries {
    entries: Vec<(String, Vec<String>)>,
}

impl Canaries {
    /// `(value, hosts allowed to receive it)` pairs; values shorter than 8 bytes are
    /// ignored (no false positives on short strings).
    pub fn new(entries: impl IntoIterator<Item = (String, Vec<String>)>) -> Canaries {
        Canaries { entries: entries.into_iter().filter(|(v, _)| v.len() >= 8).collect() }
    }

    /// An owner of the first canary found in `haystack` that `host` may not receive.
    fn foreign<'a>(&'a self, haystack: &str, host: &str) -> Option<&'a str> {
        self.entries
            .iter()
            .find(|(v, owners)| !owners.iter().any(|o| o == host) && haystack.contains(v.as_str()))
            .and_then(|(_, owners)| owners.first().map(String::as_str))
    }
}

/// Decides `head` against `table`.
pub fn decide(table: &RouteTable, canaries: &Canaries, head: &RequestHead<'_>) -> Verdict {
    let host = normalize_host(head.target_host);
    if host.is_empty() {
        return block("no target host");
    }
    if let Some(sni) = head.sni {
        let sni = normalize_host(sni);
        if sni != host {
            return block(format!("SNI {sni:?} does not match the CONNECT host {host:?}"));
        }
    }
    if let Some(header) = head.host_header {
        let header = normalize_host(strip_port(header));
        if header != host {
            return block(format!(
                "Host header {header:?} does not match the target host {host:?}"
            ));
        }
    }
    if host == INTROSPECTION_HOST {
        return if head.method.eq_ignore_ascii_case("GET") {
            Verdict::Introspect
        } else {
            block("introspection is GET only")
        };
    }
    let route = match route_for_host(table, &host) {
        Ok(route) => route,
        Err(reason) => return block(reason),
    };
    let Some((path, query)) = normalize_path(head.path_and_query) else {
        return block("malformed request path");
    };
    // What an upstream that decodes once more (nginx) or honours path parameters
    // (Tomcat, Spring) would see must not climb out of the checked path either.
    let fully = decode_repeatedly(&path);
    if fully.split(['/', '\\']).any(|seg| seg == ".." || seg == ".")
        || path.split('/').any(|seg| seg.starts_with("..;") || seg.starts_with(".;"))
    {
        return block(
            "ambiguous request path (encoded separators or path parameters around dot segments)",
        );
    }
    let path_and_query = match &query {
        Some(q) => format!("{path}?{q}"),
        None => path.clone(),
    };
    // Canaries before anything route-specific: a foreign credential is an alarm.
    let decoded = decode_repeatedly(&path_and_query);
    for text in [path_and_query.as_str(), decoded.as_str()] {
        if let Some(owner) = canaries.foreign(text, &route.host) {
            return Verdict::Block {
                reason: format!("a credential of {owner:?} was sent to {host:?}"),
                alarm: true,
            };
        }
    }
    for (name, value) in head.headers {
        let decoded = decode_repeatedly(value);
        if let Some(owner) =
            canaries.foreign(value, &route.host).or_else(|| canaries.foreign(&decoded, &route.host))
        {
            return Verdict::Block {
                reason: format!("a credential of {owner:?} was sent to {host:?} in header {name}"),
                alarm: true,
            };
        }
    }
    let lowered = decoded.to_ascii_lowercase();
    if lowered.contains("git-receive-pack") && !route.spec.git.as_ref().is_some_and(|g| g.push) {
        return block("git push is not allowed through egress; push through the git gate");
    }
    if lowered.contains("git-upload-pack") && !route.spec.git.as_ref().is_some_and(|g| g.fetch) {
        return block(format!("git fetch is not enabled for {host:?}"));
    }
    if !route.spec.doh && is_doh(&host, &path, query.as_deref(), head.headers) {
        return block(format!("DNS-over-HTTPS is not allowed on {host:?}"));
    }
    let header = |name: &str| -> Vec<String> {
        head.headers
            .iter()
            .filter(|(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.clone())
            .collect()
    };
    if !route.matches(head.method, &path, &header) {
        return block(format!(
            "{} {path} is not allowed on {host:?}",
            head.method.to_ascii_uppercase()
        ));
    }
    Verdict::Allow { host, path_and_query }
}

/// The route for a (normalized) host, or why there is none. Used for CONNECT, before
/// any path is known, and by [`decide`].
pub fn route_for_host<'a>(table: &'a RouteTable, host: &str) -> Result<&'a Route, String> {
    find_route(table, host).ok_or_else(|| match addr::parse_ip_literal(host) {
        Some(ip) => format!("IP address {ip} is not a route"),
        None => format!("no route for host {host:?}"),
    })
}

fn find_route<'a>(table: &'a RouteTable, host: &str) -> Option<&'a Route> {
    if let Some(route) = table.get(host) {
        return Some(route);
    }
    // An IP literal in any encoding matches a route that names the same IP.
    let ip = addr::parse_ip_literal(host)?;
    table.routes().iter().find(|r| addr::parse_ip_literal(&r.host) == Some(ip))
}

fn strip_port(authority: &str) -> &str {
    if let Some(rest) = authority.strip_prefix('[') {
        return rest.split(']').next().unwrap_or(rest);
    }
    match authority.rsplit_once(':') {
        Some((host, port)) if !host.contains(':') && port.chars().all(|c| c.is_ascii_digit()) => {
            host
        }
        _ => authority,
    }
}

fn is_doh(host: &str, path: &str, query: Option<&str>, headers: &[(String, String)]) -> bool {
    if DOH_HOSTS.contains(&host) {
        return true;
    }
    let path = path.to_ascii_lowercase();
    if path == "/dns-query" || path.ends_with("/dns-query") {
        return true;
    }
    if path.ends_with("/resolve")
        && query.is_some_and(|q| q.split('&').any(|kv| kv.starts_with("name=")))
    {
        return true;
    }
    headers.iter().any(|(name, value)| {
        (name == "accept" || name == "content-type") && {
            let v = value.to_ascii_lowercase();
            v.contains("application/dns-message") || v.contains("application/dns-json")
        }
    })
}

/// Percent-decodes everything, up to 4 rounds (to see through `%252e`-style layering).
pub fn decode_repeatedly(text: &str) -> String {
    let mut current = text.to_string();
    for _ in 0..4 {
        match bottle_pipelock::normalize::percent_decode(&current) {
            Some((decoded, _)) => current = decoded,
            None => break,
        }
    }
    current
}

/// Splits origin-form `path?query`, decodes percent-encoded unreserved characters in the
/// path and removes dot segments. `None` for anything that is not origin form or has
/// broken escapes, NULs or backslashes (blocked).
pub fn normalize_path(path_and_query: &str) -> Option<(String, Option<String>)> {
    let (path, query) = match path_and_query.split_once('?') {
        Some((p, q)) => (p, Some(q.to_string())),
        None => (path_and_query, None),
    };
    let path = if path.is_empty() { "/" } else { path };
    if !path.starts_with('/') || path.contains('\\') || path.bytes().any(|b| b < 0x20 || b == 0x7f)
    {
        return None;
    }
    // Decode only unreserved characters (RFC 3986 6.2.2.2): %2F stays a data byte.
    let bytes = path.as_bytes();
    let mut decoded = String::with_capacity(path.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'%' {
            let (h, l) = (hex(*bytes.get(i + 1)?)?, hex(*bytes.get(i + 2)?)?);
            let c = h * 16 + l;
            if c == 0 || c == b'\\' {
                return None;
            }
            if c.is_ascii_alphanumeric() || matches!(c, b'-' | b'.' | b'_' | b'~') {
                decoded.push(c as char);
            } else {
                decoded.push('%');
                decoded.push(bytes[i + 1].to_ascii_uppercase() as char);
                decoded.push(bytes[i + 2].to_ascii_uppercase() as char);
            }
            i += 3;
        } else {
            decoded.push(bytes[i] as char);
            i += 1;
        }
    }
    // RFC 3986 5.2.4 dot-segment removal.
    let mut out: Vec<&str> = Vec::new();
    let segments: Vec<&str> = decoded.split('/').skip(1).collect();
    let last = segments.len().saturating_sub(1);
    let mut trailing_slash = false;
    for (i, seg) in segments.iter().enumerate() {
        match *seg {
            "." => trailing_slash = i == last,
            ".." => {
                out.pop();
                trailing_slash = i == last;
            }
            s => {
                out.push(s);
                trailing_slash = false;
            }
        }
    }
    let mut normalized = format!("/{}", out.join("/"));
    if trailing_slash && !normalized.ends_with('/') {
        normalized.push('/');
    }
    Some((normalized, query))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn env(name: &str) -> Option<String> {
        (name == "TOKEN").then(|| "real-token-0123456789".to_string())
    }

    fn table() -> RouteTable {
        RouteTable::parse(
            r#"routes:
  - host: api.example.com
    auth: {scheme: Bearer, token_ref: TOKEN}
    matches:
      - paths: [{type: prefix, value: /v1/}]
        methods: [GET, POST]
  - host: github.com
    git: {fetch: true}
  - host: gitlab.example.com
  - host: 93.184.216.34
  - host: doh.example.net
    doh: true
  - host: git.bottle.internal
    git: {fetch: true, push: true}
"#,
            &env,
        )
        .unwrap()
    }

    fn head<'a>(
        method: &'a str,
        host: &'a str,
        path: &'a str,
        headers: &'a [(String, String)],
    ) -> RequestHead<'a> {
        RequestHead {
            method,
            target_host: host,
            sni: None,
            host_header: None,
            path_and_query: path,
            headers,
        }
    }

    fn check(h: RequestHead<'_>) -> Verdict {
        let canaries = Canaries::new([
            ("real-token-0123456789".to_string(), vec!["api.example.com".to_string()]),
            ("bottle-placeholder-abcdef".to_string(), vec!["api.example.com".to_string()]),
        ]);
        decide(&table(), &canaries, &h)
    }

    fn blocked(v: &Verdict, needle: &str) -> bool {
        matches!(v, Verdict::Block { reason, .. } if reason.contains(needle))
    }

    #[test]
    fn default_deny_and_route_matching() {
        assert!(blocked(&check(head("GET", "evil.example.org", "/", &[])), "no route"));
        assert_eq!(
            check(head("GET", "API.example.com.", "/v1/users?page=2", &[])),
            Verdict::Allow {
                host: "api.example.com".into(),
                path_and_query: "/v1/users?page=2".into()
            }
        );
        assert!(blocked(
            &check(head("DELETE", "api.example.com", "/v1/users", &[])),
            "DELETE /v1/users is not allowed"
        ));
        assert!(blocked(&check(head("GET", "api.example.com", "/admin", &[])), "not allowed"));
    }

    #[test]
    fn dot_segments_and_encodings_cannot_escape_a_prefix() {
        for path in [
            "/v1/../admin",
            "/v1/%2e%2e/admin",
            "/v1/%2E%2E/admin",
            "/v1/.%2e/admin",
            "/v1/./../admin",
        ] {
            assert!(blocked(&check(head("GET", "api.example.com", path, &[])), "/admin"), "{path}");
        }
        assert_eq!(
            check(head("GET", "api.example.com", "/v1/a/./b/../c", &[])),
            Verdict::Allow { host: "api.example.com".into(), path_and_query: "/v1/a/c".into() }
        );
        for path in ["/v1/%zz", "/v1/%", "/v1/a\\b", "/v1/%00", "v1/x", "/v1/%5c"] {
            assert!(
                blocked(&check(head("GET", "api.example.com", path, &[])), "malformed"),
                "{path}"
            );
        }
        // Upstreams that decode again or honour path parameters would climb out: refused.
        for path in ["/v1/..;/admin", "/v1/.;/x", "/v1/..%2Fadmin", "/v1/..%252Fadmin"] {
            assert!(
                blocked(&check(head("GET", "api.example.com", path, &[])), "ambiguous"),
                "{path}"
            );
        }
        // An encoded slash stays data: upstream sees it as data too.
        assert!(
            matches!(check(head("GET", "api.example.com", "/v1/a%2fb", &[])), Verdict::Allow { path_and_query, .. } if path_and_query == "/v1/a%2Fb")
        );
    }

    #[test]
    fn host_spoofing_is_blocked() {
        let mut h = head("GET", "api.example.com", "/v1/x", &[]);
        h.sni = Some("evil.example.org");
        assert!(blocked(&check(h), "SNI"));
        let mut h = head("GET", "api.example.com", "/v1/x", &[]);
        h.host_header = Some("evil.example.org:443");
        assert!(blocked(&check(h), "Host header"));
        let mut h = head("GET", "api.example.com", "/v1/x", &[]);
        h.host_header = Some("API.example.com:443");
        h.sni = Some("api.example.com");
        assert!(matches!(check(h), Verdict::Allow { .. }));
    }

    #[test]
    fn ip_literals_need_a_route_naming_that_ip_in_any_encoding() {
        assert!(blocked(
            &check(head("GET", "127.0.0.1", "/", &[])),
            "IP address 127.0.0.1 is not a route"
        ));
        assert!(blocked(&check(head("GET", "2130706433", "/", &[])), "IP address 127.0.0.1"));
        assert!(blocked(&check(head("GET", "[::1]", "/", &[])), "IP address ::1"));
        assert!(matches!(check(head("GET", "93.184.216.34", "/", &[])), Verdict::Allow { .. }));
        // 93.184.216.34 as one decimal number is the same IP: the same route.
        assert!(matches!(check(head("GET", "1572395042", "/", &[])), Verdict::Allow { .. }));
    }

    #[test]
    fn doh_is_blocked_unless_the_route_opts_in() {
        let accept = vec![("accept".to_string(), "application/dns-message".to_string())];
        assert!(blocked(
            &check(head("GET", "gitlab.example.com", "/dns-query?dns=AAAB", &[])),
            "DNS-over-HTTPS"
        ));
        assert!(blocked(
            &check(head("POST", "gitlab.example.com", "/x", &accept)),
            "DNS-over-HTTPS"
        ));
        assert!(blocked(
            &check(head("GET", "gitlab.example.com", "/resolve?name=example.com&type=A", &[])),
            "DNS-over-HTTPS"
        ));
        assert!(matches!(
            check(head("GET", "doh.example.net", "/dns-query?dns=AAAB", &accept)),
            Verdict::Allow { .. }
        ));
        assert!(blocked(&check(head("GET", "dns.google", "/", &[])), "no route"));
    }

    #[test]
    fn git_push_is_blocked_everywhere_but_the_gate_route_and_fetch_needs_the_flag() {
        for path in [
            "/org/repo.git/git-receive-pack",
            "/org/repo.git/info/refs?service=git-receive-pack",
            "/org/repo.git/git%2Dreceive%2Dpack",
            "/org/repo.git/info/refs?service=git%252Dreceive-pack",
            "/org/repo.git/GIT-RECEIVE-PACK",
        ] {
            assert!(blocked(&check(head("POST", "github.com", path, &[])), "git push"), "{path}");
            assert!(
                matches!(
                    check(head("POST", "git.bottle.internal", path, &[])),
                    Verdict::Allow { .. }
                ),
                "the git gate's route allows push: {path}"
            );
        }
        assert!(matches!(
            check(head(
                "GET",
                "github.com",
                "/org/repo.git/info/refs?service=git-upload-pack",
                &[]
            )),
            Verdict::Allow { .. }
        ));
        assert!(blocked(
            &check(head("POST", "gitlab.example.com", "/org/repo.git/git-upload-pack", &[])),
            "git fetch is not enabled"
        ));
    }

    #[test]
    fn a_credential_sent_to_a_foreign_host_is_blocked_with_an_alarm() {
        let auth =
            vec![("authorization".to_string(), "Bearer bottle-placeholder-abcdef".to_string())];
        let v = check(head("GET", "gitlab.example.com", "/", &auth));
        assert!(
            matches!(v, Verdict::Block { alarm: true, ref reason } if reason.contains("api.example.com")),
            "{v:?}"
        );
        let encoded = vec![("x-leak".to_string(), "bottle%2Dplaceholder%2Dabcdef".to_string())];
        let v = check(head("GET", "gitlab.example.com", "/", &encoded));
        assert!(matches!(v, Verdict::Block { alarm: true, .. }), "{v:?}");
        let v = check(head("GET", "gitlab.example.com", "/x?t=real%2Dtoken-0123456789", &[]));
        assert!(matches!(v, Verdict::Block { alarm: true, .. }), "{v:?}");
        // To its own host it is fine (the proxy strips it and injects the real one).
        assert!(matches!(
            check(head("GET", "api.example.com", "/v1/x", &auth)),
            Verdict::Allow { .. }
        ));
    }

    #[test]
    fn introspection_is_answered_for_get_only() {
        assert_eq!(check(head("GET", "_bottle.internal", "/routes", &[])), Verdict::Introspect);
        assert!(blocked(&check(head("POST", "_bottle.internal", "/routes", &[])), "GET only"));
    }
}
