//! What the agent is given: its environment (placeholders, proxy and CA variables) and
//! its view of the trust store (the machine's roots plus the bottle CA).
//!
//! Hazard: the agent's environment is the one place a real token would be most useful
//! to it. It is built here from three sources only: the launcher's fixed variables, the
//! manifest's literal `env`, and the placeholders the sidecar generated. No host
//! variable is passed through, and the real values never enter this module.

use std::io::Write;
use std::path::{Path, PathBuf};

/// Where the agent sees the bottle's trust files (a read-only bind of the state folder's
/// `certs/`).
pub const CERTS_DIR_INSIDE: &str = "/etc/bottle";
/// The machine's roots plus the bottle CA.
pub const BUNDLE_NAME: &str = "ca-certificates.crt";
/// The bottle CA alone.
pub const CA_NAME: &str = "bottle-ca.pem";

/// Creates the state folder's `certs/` with empty trust files, so they can be bound into
/// the sandbox before the sidecar has minted the CA; [`write_trust`] fills them in place.
pub fn prepare_certs_dir(state_dir: &Path) -> std::io::Result<PathBuf> {
    let dir = state_dir.join("certs");
    std::fs::create_dir_all(&dir)?;
    for name in [BUNDLE_NAME, CA_NAME] {
        std::fs::File::create(dir.join(name))?;
    }
    Ok(dir)
}

/// Writes the trust files in place (same inodes, so a bind of either file sees them).
pub fn write_trust(certs_dir: &Path, ca_pem: &str, system_bundle: &Path) -> std::io::Result<()> {
    let mut bundle = std::fs::read_to_string(system_bundle).unwrap_or_default();
    if !bundle.is_empty() && !bundle.ends_with('\n') {
        bundle.push('\n');
    }
    bundle.push_str(ca_pem);
    overwrite(&certs_dir.join(BUNDLE_NAME), &bundle)?;
    overwrite(&certs_dir.join(CA_NAME), ca_pem)
}

fn overwrite(path: &Path, text: &str) -> std::io::Result<()> {
    let mut file = std::fs::OpenOptions::new().write(true).truncate(true).open(path)?;
    file.write_all(text.as_bytes())?;
    file.sync_all()
}

/// The agent's base environment: fixed variables and the manifest's `env` (which may
/// not override the launcher's own: the manifest refuses those names).
pub fn base_env(
    manifest_env: &[(String, String)],
    term: Option<String>,
    home: &str,
) -> Vec<(String, String)> {
    let mut env = vec![
        (
            "PATH".to_string(),
            "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin".to_string(),
        ),
        ("HOME".to_string(), home.to_string()),
        ("LANG".to_string(), "C.UTF-8".to_string()),
        ("TERM".to_string(), term.unwrap_or_else(|| "dumb".to_string())),
    ];
    for (name, value) in manifest_env {
        env.retain(|(n, _)| n != name);
        env.push((name.clone(), value.clone()));
    }
    env
}

/// What the agent gets once the sidecar is ready: proxy variables (both cases), the CA
/// variables every common client reads, and a placeholder per credential.
pub fn ready_env(proxy: &str, placeholders: &[(String, String)]) -> Vec<(String, String)> {
    let bundle = format!("{CERTS_DIR_INSIDE}/{BUNDLE_NAME}");
    let ca = format!("{CERTS_DIR_INSIDE}/{CA_NAME}");
    let mut env: Vec<(String, String)> = Vec::new();
    for name in ["HTTP_PROXY", "HTTPS_PROXY", "http_proxy", "https_proxy", "ALL_PROXY", "all_proxy"]
    {
        env.push((name.into(), proxy.into()));
    }
    for name in ["NO_PROXY", "no_proxy"] {
        env.push((name.into(), "localhost,127.0.0.1,::1".into()));
    }
    for name in ["SSL_CERT_FILE", "CURL_CA_BUNDLE", "REQUESTS_CA_BUNDLE", "GIT_SSL_CAINFO"] {
        env.push((name.into(), bundle.clone()));
    }
    for name in ["NODE_EXTRA_CA_CERTS", "CODEX_CA_CERTIFICATE"] {
        env.push((name.into(), ca.clone()));
    }
    env.extend(placeholders.iter().cloned());
    env
}

pub use crate::manifest::GIT_GATE_HOST;

/// The egress route to the git gate listening on the host's `127.0.0.1:<port>`: plain
/// HTTP, fetch and push allowed (the only route that allows push), no credential, and
/// no DLP (the gate scans every push itself, before upstream sees it).
pub fn git_gate_route(port: u16) -> bottle_egress::routes::RouteSpec {
    serde_json::from_value(serde_json::json!({
        "host": GIT_GATE_HOST,
        "connect": format!("127.0.0.1:{port}"),
        "git": { "fetch": true, "push": true },
        "dlp": { "outbound_detectors": false, "inbound_detectors": false },
    }))
    .expect("the git gate route matches the routes schema")
}

/// The agent's git configuration, as environment variables only (`GIT_CONFIG_COUNT`,
/// `GIT_CONFIG_KEY_n`, `GIT_CONFIG_VALUE_n`): each declared upstream URL is rewritten to
/// the gate (`url.<gate>.insteadOf`), and the commit identity is set. No secret: the
/// upstream URLs and the identity are the manifest's.
pub fn git_env<'a>(
    repos: impl IntoIterator<Item = (&'a str, &'a str)>,
    user_name: Option<&str>,
    user_email: Option<&str>,
) -> Vec<(String, String)> {
    let mut pairs: Vec<(String, String)> = repos
        .into_iter()
        .map(|(name, url)| {
            (format!("url.http://{GIT_GATE_HOST}/{name}.git.insteadOf"), url.to_string())
        })
        .collect();
    pairs.extend(user_name.map(|n| ("user.name".to_string(), n.to_string())));
    pairs.extend(user_email.map(|e| ("user.email".to_string(), e.to_string())));
    if pairs.is_empty() {
        return Vec::new();
    }
    let mut env = vec![("GIT_CONFIG_COUNT".to_string(), pairs.len().to_string())];
    for (i, (key, value)) in pairs.into_iter().enumerate() {
        env.push((format!("GIT_CONFIG_KEY_{i}"), key));
        env.push((format!("GIT_CONFIG_VALUE_{i}"), value));
    }
    env
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_agent_gets_proxies_cas_and_placeholders_and_nothing_from_the_host() {
        let env = ready_env(
            "http://127.0.0.1:9099",
            &[("GH_TOKEN".into(), "bottle-placeholder-1".into())],
        );
        let get = |k: &str| env.iter().find(|(n, _)| n == k).map(|(_, v)| v.as_str());
        assert_eq!(get("HTTPS_PROXY"), Some("http://127.0.0.1:9099"));
        assert_eq!(get("https_proxy"), Some("http://127.0.0.1:9099"));
        assert_eq!(get("SSL_CERT_FILE"), Some("/etc/bottle/ca-certificates.crt"));
        assert_eq!(get("NODE_EXTRA_CA_CERTS"), Some("/etc/bottle/bottle-ca.pem"));
        assert_eq!(get("GIT_SSL_CAINFO"), Some("/etc/bottle/ca-certificates.crt"));
        assert_eq!(get("GH_TOKEN"), Some("bottle-placeholder-1"));
        let base = base_env(&[("FOO".into(), "bar".into())], None, "/tmp");
        assert_eq!(
            base.iter().map(|(n, _)| n.as_str()).collect::<Vec<_>>(),
            ["PATH", "HOME", "LANG", "TERM", "FOO"]
        );
    }

    #[test]
    fn the_agents_git_is_pointed_at_the_gate_through_the_environment() {
        let env = git_env(
            [("demo", "https://example.com/o/demo.git")],
            Some("Agent"),
            Some("agent@example.com"),
        );
        let get = |k: &str| env.iter().find(|(n, _)| n == k).map(|(_, v)| v.as_str());
        assert_eq!(get("GIT_CONFIG_COUNT"), Some("3"));
        assert_eq!(
            get("GIT_CONFIG_KEY_0"),
            Some("url.http://git.bottle.internal/demo.git.insteadOf")
        );
        assert_eq!(get("GIT_CONFIG_VALUE_0"), Some("https://example.com/o/demo.git"));
        assert_eq!(get("GIT_CONFIG_KEY_2"), Some("user.email"));
        assert!(git_env([], None, None).is_empty());
        let route = git_gate_route(4242);
        assert_eq!(route.connect.as_deref(), Some("127.0.0.1:4242"));
        assert!(route.git.as_ref().is_some_and(|g| g.push && g.fetch));
        assert!(route.auth.is_none());
    }

    #[test]
    fn trust_files_are_filled_in_place() {
        let tmp = tempfile::tempdir().unwrap();
        let dir = prepare_certs_dir(tmp.path()).unwrap();
        use std::os::unix::fs::MetadataExt;
        let before = std::fs::metadata(dir.join(BUNDLE_NAME)).unwrap().ino();
        let roots = tmp.path().join("roots.pem");
        std::fs::write(&roots, "ROOTS").unwrap();
        write_trust(&dir, "CA\n", &roots).unwrap();
        assert_eq!(std::fs::read_to_string(dir.join(BUNDLE_NAME)).unwrap(), "ROOTS\nCA\n");
        assert_eq!(std::fs::read_to_string(dir.join(CA_NAME)).unwrap(), "CA\n");
        assert_eq!(std::fs::metadata(dir.join(BUNDLE_NAME)).unwrap().ino(), before, "same inode");
    }
}
