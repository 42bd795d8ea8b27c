//! `bottle demo`: a real bottle on the local backend, pointed at a fake API this command
//! starts itself, with a scripted agent that shows what the sidecar allows and refuses.
//!
//! Hazard: a demo must prove the product's claims, not print them. Every row of its
//! table is the agent's own observation from inside the bottle (a status code and the
//! refusal's first line), and the last check is made outside the bottle by the launcher:
//! the value the agent held is compared with the real token.

pub mod fake_api;

use std::path::{Path, PathBuf};

use bottle_protocol::secrets::Secret;

use crate::manifest::{self, SearchPath};
use crate::run::{RunOutcome, RunRequest};
use crate::state::StateRoot;

/// Why the demo could not be set up.
#[derive(Debug, thiserror::Error)]
pub enum DemoError {
    /// The fake API did not start.
    #[error(transparent)]
    Api(#[from] fake_api::FakeApiError),
    /// A scratch file could not be written.
    #[error("cannot prepare the demo's files in {dir:?}")]
    Files {
        /// The scratch folder.
        dir: PathBuf,
        /// Why.
        #[source]
        source: std::io::Error,
    },
    /// The demo's own bottle file was refused (a bug).
    #[error("the demo's bottle was refused: {0}")]
    Manifest(String),
}

/// What the demo found outside the bottle, after the agent ran.
#[derive(Debug)]
pub struct DemoReport {
    /// How the run ended.
    pub outcome: RunOutcome,
    /// Requests that reached the fake API, by path.
    pub api_hits: std::collections::BTreeMap<String, u32>,
    /// Whether the value the agent held was the real token (it must not be).
    pub agent_held_real_token: Option<bool>,
}

/// The environment variable the route injects.
pub const TOKEN_VAR: &str = "DEMO_API_TOKEN";

/// The agent's script: each line is one request and what came back.
const AGENT_SCRIPT: &str = r#"
row() { printf '  %-44s %s\n' "$1" "$2"; }
first() { head -c 200 "$1" | tr '\r\n' '  ' | cut -c1-70; }
ask() { rm -f /tmp/body /tmp/err; code=$(curl -sS -o /tmp/body -w '%{http_code}' "$@" 2>/tmp/err) || true; [ -s /tmp/body ] || cp /tmp/err /tmp/body; }
echo "Inside bottle $(hostname):"
ask https://api.demo.test/whoami
row "GET api.demo.test/whoami (routed, injected)" "$code $(first /tmp/body)"
ask http://unlisted.demo.test/
row "GET unlisted.demo.test (no route)" "$code $(first /tmp/body)"
ask -X POST --data "note=deploy key ${FAKE_SECRET}" https://api.demo.test/notes
row "POST a GitHub token in the body" "$code $(first /tmp/body)"
if curl -sS --noproxy '*' --max-time 5 -o /dev/null https://api.demo.test/whoami 2>/tmp/err; then
  row "direct connection, ignoring the proxy" "CONNECTED (this must not happen)"
else
  row "direct connection, ignoring the proxy" "failed: $(first /tmp/err)"
fi
printf '%s' "$DEMO_API_TOKEN" > /workspace/agent-held-token
row "token in the agent's environment" "$(printf '%s' "$DEMO_API_TOKEN" | cut -c1-16)... (checked below)"
"#;

fn files(dir: &Path) -> impl FnOnce(std::io::Error) -> DemoError + '_ {
    move |source| DemoError::Files { dir: dir.to_path_buf(), source }
}

/// The demo's bottle file: one route to the fake API, token injected, secrets blocked.
fn bottle_text(api: &fake_api::FakeApi) -> String {
    format!(
        "---\n\
         # The demo: one route to a fake API on this machine's loopback.\n\
         egress:\n  routes:\n    - host: {host}\n      connect: \"127.0.0.1:{port}\"\n      auth:\n        scheme: Bearer\n        token_ref: {var}\n      dlp:\n        outbound_on_match: block\n\
         ---\nThe bottle demo.\n",
        host = fake_api::HOST,
        port = api.addr.port(),
        var = TOKEN_VAR,
    )
}

/// Runs the demo: starts the fake API, launches the bottle with the scripted agent,
/// and checks from outside what the agent held.
pub async fn run(
    scratch: &Path,
    state: StateRoot,
    approvals: PathBuf,
    libexec: Option<PathBuf>,
    progress: Box<dyn Fn(&str) + Send + Sync>,
) -> Result<DemoReport, DemoError> {
    let token = format!("demo-real-token-{:032x}", rand::random::<u128>());
    let api = fake_api::FakeApi::start(Secret::new(token.clone())).await?;
    let workspace = scratch.join("workspace");
    std::fs::create_dir_all(&workspace).map_err(files(scratch))?;
    let bottle_file = scratch.join("demo.md");
    std::fs::write(&bottle_file, bottle_text(&api)).map_err(files(scratch))?;
    let ca_file = scratch.join("demo-api-ca.pem");
    std::fs::write(&ca_file, &api.ca_pem).map_err(files(scratch))?;
    let search = SearchPath::new(None, None, Some(scratch));
    let bottle = manifest::resolve(&bottle_file.display().to_string(), &search)
        .map_err(|e| DemoError::Manifest(e.to_string()))?;
    let fake_secret = format!("ghp_{}", random_alnum(36));
    let script = format!("FAKE_SECRET={fake_secret}\n{AGENT_SCRIPT}");
    let real = token.clone();
    let request = RunRequest {
        bottle,
        command: vec!["/bin/sh".into(), "-c".into(), script],
        workspace: Some(workspace.clone()),
        state,
        approvals,
        libexec,
        host_secret: Box::new(move |name| (name == TOKEN_VAR).then(|| real.clone())),
        upstream_ca: Some(ca_file),
        progress,
        term: None,
    };
    let outcome = crate::run::run(request).await;
    let held = std::fs::read_to_string(workspace.join("agent-held-token")).ok();
    Ok(DemoReport {
        outcome,
        api_hits: api.hits(),
        agent_held_real_token: held.map(|held| held == token),
    })
}

fn random_alnum(n: usize) -> String {
    const ALPHABET: &[u8] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789";
    (0..n).map(|_| ALPHABET[rand::random_range(0..ALPHABET.len())] as char).collect()
}
