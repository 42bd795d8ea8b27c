//! `bottle approvals`, `bottle approve ID`, `bottle reject ID --reason TEXT`: the host's
//! side of pipelock's hold-for-approval queue.
//!
//! The queue is the journal the sidecar writes (bind-mounted to the host, or the
//! directory `bottle proxy --approvals` was given). Decisions are appended under the
//! journal's lock; the first decision of a hold wins.

use std::path::PathBuf;
use std::process::ExitCode;

use bottle_pipelock::approvals::{Decision, Journal};

/// Where the queue is.
#[derive(Debug, clap::Args)]
pub(crate) struct QueueDir {
    /// The approval queue directory.
    #[arg(long = "dir", env = "BOTTLE_APPROVALS", value_name = "DIR")]
    dir: Option<PathBuf>,
}

impl QueueDir {
    /// The directory: `--dir`, `$BOTTLE_APPROVALS`, or the per-user state directory.
    pub(crate) fn resolve(&self) -> PathBuf {
        if let Some(dir) = &self.dir {
            return dir.clone();
        }
        default_dir()
    }
}

/// `$XDG_STATE_HOME/bottle/approvals`, else `~/.local/state/bottle/approvals`.
pub(crate) fn default_dir() -> PathBuf {
    let state = std::env::var_os("XDG_STATE_HOME").map(PathBuf::from).unwrap_or_else(|| {
        PathBuf::from(std::env::var_os("HOME").unwrap_or_else(|| "/root".into()))
            .join(".local/state")
    });
    state.join("bottle/approvals")
}

fn who() -> String {
    std::env::var("SUDO_USER")
        .or_else(|_| std::env::var("USER"))
        .unwrap_or_else(|_| "operator".into())
}

/// `bottle approvals`.
#[allow(clippy::print_stdout)] // the listing is this command's output
pub(crate) fn list(dir: &QueueDir, all: bool, json: bool) -> anyhow::Result<ExitCode> {
    let journal = Journal::open(&dir.resolve())?;
    let held: Vec<_> =
        journal.list()?.into_iter().filter(|h| all || h.decision.is_none()).collect();
    if json {
        println!("{}", serde_json::to_string_pretty(&held)?);
        return Ok(ExitCode::SUCCESS);
    }
    if held.is_empty() {
        println!(
            "no {}held requests in {}",
            if all { "" } else { "pending " },
            journal.path().display()
        );
        return Ok(ExitCode::SUCCESS);
    }
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs_f64())
        .unwrap_or(0.0);
    for h in held {
        let state = match &h.decision {
            None => format!("pending, expires in {:.0}s", (h.expires_at - now).max(0.0)),
            Some((d, Some(reason))) => format!("{d}: {reason}"),
            Some((d, None)) => d.to_string(),
        };
        println!(
            "{}  {} {} {}{}  [{}]  ({state})",
            h.id,
            h.request.bottle,
            h.request.method,
            h.request.host,
            h.request.path,
            h.request.detections.len()
        );
        for d in &h.request.detections {
            println!(
                "    {} in {} ({}): {} fp {}",
                d.rule, d.location, d.encoding, d.excerpt, d.fingerprint
            );
        }
    }
    Ok(ExitCode::SUCCESS)
}

/// `bottle approve ID` / `bottle reject ID --reason TEXT`.
#[allow(clippy::print_stdout)]
pub(crate) fn decide(
    dir: &QueueDir,
    id: &str,
    decision: Decision,
    reason: Option<String>,
) -> anyhow::Result<ExitCode> {
    let journal = Journal::open(&dir.resolve())?;
    journal.decide(id, decision, reason, &who())?;
    println!("{id} {decision}");
    Ok(ExitCode::SUCCESS)
}
