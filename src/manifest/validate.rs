//! Rules one bottle file must keep on its own, beyond its YAML shape.
//!
//! Hazard: every string here ends up somewhere sensitive: variable names in the agent's
//! environment, repo names in paths under `/git`, URLs in `ssh` invocations, routes in
//! the proxy. Each is checked where it is written, so the error names the file and the key;
//! a value is never repeated (names and hosts are not secrets, values may be).

use std::path::Path;

use bottle_egress::routes::{RouteTable, RoutesError, normalize_host};

use super::discover::validate_name;
use super::error::{ManifestError, Result, SourcePos};
use super::schema::{Frontmatter, RepoSpec};

/// Variables the launcher sets in the agent's environment; a bottle may not redirect them
/// (the proxy, the CA trust, the gate and supervise URLs).
pub(crate) const LAUNCHER_OWNED_ENV: &[&str] = &[
    "HTTP_PROXY",
    "HTTPS_PROXY",
    "ALL_PROXY",
    "NO_PROXY",
    "http_proxy",
    "https_proxy",
    "all_proxy",
    "no_proxy",
    "NODE_EXTRA_CA_CERTS",
    "SSL_CERT_FILE",
    "REQUESTS_CA_BUNDLE",
    "CODEX_CA_CERTIFICATE",
    "GIT_GATE_URL",
    "MCP_SUPERVISE_URL",
];

/// Checks `front` (the file `path`).
pub(crate) fn file(front: &Frontmatter, path: &Path) -> Result<()> {
    let invalid = |key_path: String, problem: String| ManifestError::Invalid {
        at: SourcePos::file(path),
        key_path,
        problem,
    };
    extends(front, &invalid)?;
    env(front, &invalid)?;
    git_gate(front, &invalid)?;
    image(front, &invalid)?;
    if let Some(provider) = &front.agent_provider
        && !is_provider_name(provider)
    {
        return Err(invalid(
            "agent_provider".into(),
            "a provider name is [a-z][a-z0-9_-]* (claude, codex, pi or a plugin's name)".into(),
        ));
    }
    if let Some(egress) = &front.egress {
        if let Some(super::EgressLog::Level(level)) = &egress.log
            && level.trim().is_empty()
        {
            return Err(invalid("egress.log".into(), "a log level cannot be empty".into()));
        }
        if let Some(routes) = &egress.routes {
            routes_parse(routes).map_err(|(key_path, problem)| invalid(key_path, problem))?;
            if let Some(i) =
                routes.iter().position(|r| r.host.eq_ignore_ascii_case(super::GIT_GATE_HOST))
            {
                return Err(invalid(
                    format!("egress.routes[{i}].host"),
                    "this host is the bottle's git gate; the launcher routes it".into(),
                ));
            }
            if let Some(i) = routes.iter().position(|r| r.git.as_ref().is_some_and(|g| g.push)) {
                return Err(invalid(
                    format!("egress.routes[{i}].git.push"),
                    "pushes go through the git gate only: declare the repo under git-gate.repos"
                        .into(),
                ));
            }
        }
    }
    Ok(())
}

type Invalid<'a> = dyn Fn(String, String) -> ManifestError + 'a;

fn extends(front: &Frontmatter, invalid: &Invalid<'_>) -> Result<()> {
    let Some(parents) = &front.extends else { return Ok(()) };
    if parents.0.is_empty() {
        return Err(invalid(
            "extends".into(),
            "an empty list; name a parent or drop the key".into(),
        ));
    }
    for (i, parent) in parents.0.iter().enumerate() {
        if let Err(ManifestError::BadName { reason, .. }) = validate_name(parent) {
            return Err(invalid(
                format!("extends[{i}]"),
                format!("{parent:?} is not a bottle name: {reason}"),
            ));
        }
    }
    Ok(())
}

fn env(front: &Frontmatter, invalid: &Invalid<'_>) -> Result<()> {
    for (name, value) in front.env.iter().flatten() {
        let key_path = format!("env.{name}");
        if !is_env_name(name) {
            return Err(invalid(key_path, "a variable name is [A-Za-z_][A-Za-z0-9_]*".into()));
        }
        if LAUNCHER_OWNED_ENV.contains(&name.as_str()) || name.starts_with("EGRESS_TOKEN_") {
            return Err(invalid(
                key_path,
                "set by the launcher; a bottle cannot override it".into(),
            ));
        }
        if value.expose().contains('\0') {
            return Err(invalid(key_path, "the value contains a NUL byte".into()));
        }
    }
    Ok(())
}

fn git_gate(front: &Frontmatter, invalid: &Invalid<'_>) -> Result<()> {
    let Some(gate) = &front.git_gate else { return Ok(()) };
    if let Some(user) = &gate.user {
        for (field, value) in [("name", &user.name), ("email", &user.email)] {
            if let Some(value) = value
                && (value.trim().is_empty() || value.contains(['\n', '\r', '\0']))
            {
                return Err(invalid(
                    format!("git-gate.user.{field}"),
                    "must be one non-empty line".into(),
                ));
            }
        }
    }
    for (name, repo) in gate.repos.iter().flatten() {
        let key_path = format!("git-gate.repos.{name}");
        if !is_repo_name(name) {
            return Err(invalid(
                key_path,
                "a repo name is [A-Za-z0-9._-]+, not only dots and not starting with '-'".into(),
            ));
        }
        repo_fields(repo, &key_path, invalid)?;
    }
    Ok(())
}

fn repo_fields(repo: &RepoSpec, key_path: &str, invalid: &Invalid<'_>) -> Result<()> {
    if let Some(url) = &repo.url
        && let Err(problem) = check_url(url)
    {
        return Err(invalid(format!("{key_path}.url"), problem.into()));
    }
    if let Some(identity) = &repo.identity
        && (identity.trim().is_empty() || identity.contains(['\n', '\0']))
    {
        return Err(invalid(format!("{key_path}.identity"), "must be a path to a key file".into()));
    }
    if let Some(host_key) = &repo.host_key
        && (host_key.split_whitespace().count() < 2 || host_key.contains(['\n', '\r', '\0']))
    {
        return Err(invalid(
            format!("{key_path}.host_key"),
            "must be one line `<key type> <base64 key>` (as in known_hosts)".into(),
        ));
    }
    Ok(())
}

/// Upstreams are SSH (`ssh://[user@]host[:port]/path`, as in the reference) or HTTPS
/// (`https://host[:port]/path`, the gate injecting a `token_ref`; no credentials in the URL).
/// The gate checks them again, fully, at load.
fn check_url(url: &str) -> std::result::Result<(), &'static str> {
    if let Some(rest) = url.strip_prefix("https://") {
        if rest.split('/').next().unwrap_or_default().contains('@') {
            return Err("credentials do not belong in the URL: name the token with token_ref");
        }
        return check_ssh_url(&format!("ssh://{rest}"))
            .map_err(|_| "write https://host[:port]/path (no spaces, a host and a path)");
    }
    check_ssh_url(url)
}

/// `ssh://[user@]host[:port]/path`.
fn check_ssh_url(url: &str) -> std::result::Result<(), &'static str> {
    let Some(rest) = url.strip_prefix("ssh://") else {
        return Err("upstreams are ssh:// or https://: write ssh://[user@]host[:port]/path");
    };
    if url.chars().any(|c| c.is_whitespace() || c.is_control()) {
        return Err("a URL has no spaces or control characters");
    }
    let (authority, path) = rest.split_once('/').unwrap_or((rest, ""));
    let host = authority.rsplit('@').next().unwrap_or_default();
    if host.is_empty() || host.starts_with(':') || host.starts_with('-') {
        return Err("the URL has no host: write ssh://[user@]host[:port]/path");
    }
    if path.is_empty() {
        return Err("the URL has no repository path: write ssh://[user@]host[:port]/path");
    }
    Ok(())
}

fn image(front: &Frontmatter, invalid: &Invalid<'_>) -> Result<()> {
    if front.image.is_some() && front.dockerfile.is_some() {
        return Err(invalid(
            "image".into(),
            "`image` and `dockerfile` exclude each other; keep one".into(),
        ));
    }
    if let Some(image) = &front.image
        && (image.is_empty() || image.chars().any(|c| c.is_whitespace() || c.is_control()))
    {
        return Err(invalid("image".into(), "an image reference has no spaces".into()));
    }
    if let Some(dockerfile) = &front.dockerfile
        && (dockerfile.trim().is_empty() || dockerfile.contains(['\n', '\0']))
    {
        return Err(invalid("dockerfile".into(), "must be a path to a Dockerfile".into()));
    }
    Ok(())
}

/// Checks routes with the egress proxy's own parser, accepting any `token_ref` name (the
/// tokens are resolved from the host environment at launch, not here). On failure returns
/// the key path of the route and the problem.
pub(crate) fn routes_parse(
    routes: &[bottle_egress::routes::RouteSpec],
) -> std::result::Result<(), (String, String)> {
    let text = super::routes_file_text(routes);
    match RouteTable::parse(&text, &|_| Some("token-resolved-at-launch".into())) {
        Ok(_) => Ok(()),
        Err(RoutesError::Route { host, problem }) => {
            let matching: Vec<usize> = routes
                .iter()
                .enumerate()
                .filter(|(_, r)| normalize_host(&r.host) == host)
                .map(|(i, _)| i)
                .collect();
            // For a duplicate host the second route is the offending one.
            let index =
                if problem == "duplicate host" { matching.get(1) } else { matching.first() };
            let key_path = index.map_or("egress.routes".into(), |i| format!("egress.routes[{i}]"));
            Err((key_path, format!("route {host:?}: {problem}")))
        }
        Err(RoutesError::Parse(problem)) => Err(("egress.routes".into(), problem)),
    }
}

fn is_env_name(name: &str) -> bool {
    let mut chars = name.chars();
    chars.next().is_some_and(|c| c.is_ascii_alphabetic() || c == '_')
        && chars.all(|c| c.is_ascii_alphanumeric() || c == '_')
}

fn is_repo_name(name: &str) -> bool {
    !name.is_empty()
        && !name.starts_with('-')
        && !name.chars().all(|c| c == '.')
        && name.chars().all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-'))
}

fn is_provider_name(name: &str) -> bool {
    let mut chars = name.chars();
    chars.next().is_some_and(|c| c.is_ascii_lowercase())
        && chars.all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || matches!(c, '_' | '-'))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ssh_urls_need_a_host_and_a_path() {
        check_url("https://example.com/org/repo.git").unwrap();
        assert_eq!(
            check_url("https://user:pw@example.com/repo"),
            Err("credentials do not belong in the URL: name the token with token_ref")
        );
        assert_eq!(
            check_url("https://example.com"),
            Err("write https://host[:port]/path (no spaces, a host and a path)")
        );
        check_ssh_url("ssh://git@example.com/org/repo.git").unwrap();
        check_ssh_url("ssh://example.com:2222/repo").unwrap();
        assert_eq!(
            check_ssh_url("https://example.com/repo"),
            Err("upstreams are ssh:// or https://: write ssh://[user@]host[:port]/path")
        );
        assert_eq!(
            check_ssh_url("git@example.com:org/repo.git"),
            Err("upstreams are ssh:// or https://: write ssh://[user@]host[:port]/path")
        );
        assert_eq!(
            check_ssh_url("ssh://git@/repo"),
            Err("the URL has no host: write ssh://[user@]host[:port]/path")
        );
        assert_eq!(
            check_ssh_url("ssh://-oProxyCommand=x/repo"),
            Err("the URL has no host: write ssh://[user@]host[:port]/path")
        );
        assert_eq!(
            check_ssh_url("ssh://example.com"),
            Err("the URL has no repository path: write ssh://[user@]host[:port]/path")
        );
        assert_eq!(
            check_ssh_url("ssh://example.com/a b"),
            Err("a URL has no spaces or control characters")
        );
    }

    #[test]
    fn names_of_variables_repos_and_providers() {
        assert!(is_env_name("ANTHROPIC_BASE_URL") && is_env_name("_x1"));
        assert!(!is_env_name("1A") && !is_env_name("A-B") && !is_env_name(""));
        assert!(is_repo_name("my.repo_1-x"));
        assert!(!is_repo_name("..") && !is_repo_name("-x") && !is_repo_name("a/b"));
        assert!(is_provider_name("claude") && is_provider_name("my_agent-2"));
        assert!(!is_provider_name("Claude") && !is_provider_name("../x"));
    }
}
