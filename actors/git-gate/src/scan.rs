//! The push scanner: every blob new to the mirror, scanned once, before anything leaves.
//!
//! Hazard: scanning too little lets a secret through (a blob a later commit deletes is
//! still in the pack and in upstream's history); scanning too much blocks a new branch
//! whose old history, already upstream, holds a secret nobody can fix (reference
//! PRD 0028). So the set is exactly `git rev-list --objects <new>... --not
//! --exclude-hidden=receive --all`, run with the quarantine as the object directory and
//! the mirror as its alternate: every object reachable from the pushed tips and from
//! no ref the mirror already has. Blobs are kept with `cat-file --batch-check`, streamed
//! through one `cat-file --batch`, and each distinct blob is scanned once, off the
//! async threads. A blob over the size cap, a push over the total cap, or a scan past
//! its deadline refuses the push: nothing is ever skipped. rev-list failing (an object
//! the pack promised but did not bring) refuses too; it doubles as the connectivity
//! check receive-pack would do.

use std::collections::{HashMap, HashSet};
use std::sync::Arc;
use std::time::Duration;

use bottle_pipelock::{Detection, Detectors, Location, Pipelock};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

use crate::GitGateError;
use crate::process::{Git, check};

/// The inline markers that turn a finding into a request for an exception.
pub const SUPPRESSIONS: &[&str] = &["gitleaks:allow", "bottle:allow"];

/// The scanner's caps.
#[derive(Debug, Clone, Copy)]
pub struct ScanLimits {
    /// Largest blob.
    pub max_blob: u64,
    /// Most new blob bytes in one push.
    pub max_total: u64,
    /// Deadline for the whole scan.
    pub timeout: Duration,
}

/// One finding in one blob.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BlobFinding {
    /// The blob's id.
    pub blob: String,
    /// A path it was reached by.
    pub path: String,
    /// 1-based line of the finding (0 when the spelling has no offsets).
    pub line: usize,
    /// What pipelock found (never the secret).
    pub detection: Detection,
    /// The line carries an inline suppression marker.
    pub suppressed: bool,
}

/// What scanning a push found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ScanOutcome {
    /// Scanned, and this is what was found (empty: clean).
    Scanned {
        /// Findings, in blob order.
        findings: Vec<BlobFinding>,
        /// Distinct blobs scanned.
        blobs: usize,
        /// Their bytes.
        bytes: u64,
    },
    /// Refused without a complete scan (a cap, the deadline, missing objects).
    Refused(String),
}

/// Where the scanner's git children look: the mirror plus the quarantine.
#[derive(Debug, Clone)]
pub struct ObjectView {
    /// `--git-dir` of the mirror.
    pub git_dir: String,
    /// The quarantine's variables.
    pub env: Vec<(String, String)>,
}

impl ObjectView {
    fn command(
        &self,
        git: &Git,
        step: &'static str,
        args: Vec<String>,
    ) -> crate::process::Invocation {
        let mut argv = vec![format!("--git-dir={}", self.git_dir)];
        argv.extend(args);
        let mut inv = git.command(step, argv);
        for (k, v) in &self.env {
            inv = inv.env(k.clone(), v.clone());
        }
        inv
    }
}

/// Scans every blob reachable from `tips` and from no ref of the mirror.
pub async fn scan_new_blobs(
    git: &Git,
    view: &ObjectView,
    tips: &[String],
    pipelock: &Arc<Pipelock>,
    limits: ScanLimits,
) -> Result<ScanOutcome, GitGateError> {
    if tips.is_empty() {
        return Ok(ScanOutcome::Scanned { findings: Vec::new(), blobs: 0, bytes: 0 });
    }
    let deadline = tokio::time::Instant::now() + limits.timeout;
    match tokio::time::timeout_at(deadline, scan_inner(git, view, tips, pipelock, limits)).await {
        Ok(result) => result,
        Err(_) => Ok(ScanOutcome::Refused(format!(
            "the secret scan did not finish within {} s",
            limits.timeout.as_secs()
        ))),
    }
}

async fn scan_inner(
    git: &Git,
    view: &ObjectView,
    tips: &[String],
    pipelock: &Arc<Pipelock>,
    limits: ScanLimits,
) -> Result<ScanOutcome, GitGateError> {
    let mut args: Vec<String> = vec!["rev-list".into(), "--objects".into()];
    args.extend(tips.iter().cloned());
    args.extend(["--not".into(), "--exclude-hidden=receive".into(), "--all".into()]);
    let out =
        view.command(git, "rev-list", args).timeout(limits.timeout).output(None, 1 << 30).await?;
    if !out.status.success() {
        return Ok(ScanOutcome::Refused("the push is missing objects it refers to".into()));
    }
    // `<id>` for commits, `<id> <path>` for trees and blobs.
    let mut paths: HashMap<String, String> = HashMap::new();
    let mut ids = Vec::new();
    for line in String::from_utf8_lossy(&out.stdout).lines() {
        let (id, path) = line.split_once(' ').unwrap_or((line, ""));
        if paths.insert(id.to_string(), path.to_string()).is_none() {
            ids.push(id.to_string());
        }
    }
    let mut input = ids.join("\n");
    input.push('\n');
    let args =
        vec!["cat-file".into(), "--batch-check=%(objectname) %(objecttype) %(objectsize)".into()];
    let out = view
        .command(git, "cat-file", args)
        .timeout(limits.timeout)
        .output(Some(input.as_bytes()), 1 << 30)
        .await?;
    let out = check("cat-file", out)?;
    let mut blobs: Vec<(String, u64)> = Vec::new();
    let mut total = 0u64;
    for line in String::from_utf8_lossy(&out.stdout).lines() {
        let mut parts = line.split(' ');
        let (Some(id), Some(kind), Some(size)) = (parts.next(), parts.next(), parts.next()) else {
            return Ok(ScanOutcome::Refused("the push is missing objects it refers to".into()));
        };
        if kind != "blob" {
            continue;
        }
        let size: u64 = size.parse().unwrap_or(u64::MAX);
        if size > limits.max_blob {
            let path = paths.get(id).cloned().unwrap_or_default();
            return Ok(ScanOutcome::Refused(format!(
                "blob {id} ({path}) is {size} bytes, above the {} byte scan limit",
                limits.max_blob
            )));
        }
        total = total.saturating_add(size);
        if total > limits.max_total {
            return Ok(ScanOutcome::Refused(format!(
                "the push brings more than {} bytes of new files, above the scan limit",
                limits.max_total
            )));
        }
        blobs.push((id.to_string(), size));
    }
    let findings = stream_and_scan(git, view, &blobs, &paths, pipelock, limits).await?;
    Ok(ScanOutcome::Scanned { findings, blobs: blobs.len(), bytes: total })
}

/// One `cat-file --batch` over every blob; each blob is scanned as it arrives.
async fn stream_and_scan(
    git: &Git,
    view: &ObjectView,
    blobs: &[(String, u64)],
    paths: &HashMap<String, String>,
    pipelock: &Arc<Pipelock>,
    limits: ScanLimits,
) -> Result<Vec<BlobFinding>, GitGateError> {
    if blobs.is_empty() {
        return Ok(Vec::new());
    }
    let step = "cat-file";
    let mut running = view
        .command(git, step, vec!["cat-file".into(), "--batch".into()])
        .timeout(limits.timeout)
        .spawn(true)?;
    let mut stdin = running
        .stdin
        .take()
        .ok_or(GitGateError::Pipe { step, source: std::io::Error::other("no stdin") })?;
    let stdout = running
        .stdout
        .take()
        .ok_or(GitGateError::Pipe { step, source: std::io::Error::other("no stdout") })?;
    let mut input = String::with_capacity(blobs.len() * 41);
    for (id, _) in blobs {
        input.push_str(id);
        input.push('\n');
    }
    let feeder = tokio::spawn(async move {
        let _ = stdin.write_all(input.as_bytes()).await;
    });
    let mut reader = tokio::io::BufReader::with_capacity(256 * 1024, stdout);
    let mut findings = Vec::new();
    let mut seen: HashSet<String> = HashSet::new();
    let pipe = |source| GitGateError::Pipe { step, source };
    for (id, size) in blobs {
        let mut header = Vec::new();
        read_line(&mut reader, &mut header).await.map_err(pipe)?;
        let expect = format!("{id} blob {size}");
        if header != expect.as_bytes() {
            return Err(GitGateError::Git {
                step,
                status: "protocol".into(),
                detail: "unexpected cat-file output".into(),
            });
        }
        let len = usize::try_from(*size).unwrap_or(usize::MAX);
        let mut content = vec![0u8; len];
        reader.read_exact(&mut content).await.map_err(pipe)?;
        let mut newline = [0u8; 1];
        reader.read_exact(&mut newline).await.map_err(pipe)?;
        if !seen.insert(id.clone()) {
            continue;
        }
        let scanner = pipelock.clone();
        let (id, path) = (id.clone(), paths.get(id).cloned().unwrap_or_default());
        let found = tokio::task::spawn_blocking(move || scan_blob(&scanner, &id, &path, &content))
            .await
            .map_err(|e| pipe(std::io::Error::other(e.to_string())))?;
        findings.extend(found);
    }
    let _ = feeder.await;
    let (status, stderr) = running.wait().await?;
    if !status.success() {
        return Err(GitGateError::Git {
            step,
            status: status.to_string(),
            detail: crate::process::tail_lines(&stderr, 4),
        });
    }
    Ok(findings)
}

async fn read_line<R: tokio::io::AsyncBufRead + Unpin>(
    reader: &mut R,
    out: &mut Vec<u8>,
) -> std::io::Result<()> {
    use tokio::io::AsyncBufReadExt;
    let n = reader.read_until(b'\n', out).await?;
    if n == 0 || out.last() != Some(&b'\n') {
        return Err(std::io::Error::new(std::io::ErrorKind::UnexpectedEof, "cat-file ended early"));
    }
    out.pop();
    Ok(())
}

/// Findings in one blob, with line numbers and suppression markers.
pub fn scan_blob(pipelock: &Pipelock, id: &str, path: &str, content: &[u8]) -> Vec<BlobFinding> {
    let text = String::from_utf8_lossy(content);
    pipelock
        .scan(Location::Body, &text, Detectors::ALL)
        .into_iter()
        .map(|detection| {
            let (line, suppressed) = match detection.span {
                Some((start, _)) if start <= text.len() => {
                    let line_start = text[..start].rfind('\n').map_or(0, |i| i + 1);
                    let line_end = text[start..].find('\n').map_or(text.len(), |i| start + i);
                    let line_text = &text[line_start..line_end];
                    let number = text[..start].bytes().filter(|&b| b == b'\n').count() + 1;
                    (number, SUPPRESSIONS.iter().any(|m| line_text.contains(m)))
                }
                _ => (0, false),
            };
            BlobFinding {
                blob: id.to_string(),
                path: path.to_string(),
                line,
                detection,
                suppressed,
            }
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pat() -> String {
        // A classic GitHub token shape, assembled so this file holds no literal token.
        format!("ghp_{}", "aB3dE5gH7jK9mN1pQ3sT5vW7yZ9bC1dF3hJ5")
    }

    #[test]
    fn findings_carry_the_line_and_the_suppression_marker() {
        let pipelock = Pipelock::new(&[], &[]).unwrap();
        let text = format!(
            "first line\nsee {} here\nand {} # gitleaks:allow\n",
            pat(),
            pat().replace('a', "x")
        );
        let found = scan_blob(&pipelock, "abc", "src/config.py", text.as_bytes());
        assert_eq!(found.len(), 2, "{found:?}");
        assert_eq!((found[0].line, found[0].suppressed), (2, false));
        assert_eq!((found[1].line, found[1].suppressed), (3, true));
        assert_eq!(found[0].detection.rule, "github-pat-classic");
        assert!(!format!("{found:?}").contains(&pat()[8..]), "a finding carries the secret");
    }

    #[test]
    fn known_secrets_are_found_in_their_encodings() {
        let known = [bottle_pipelock::KnownSecret {
            name: "UPSTREAM_TOKEN".into(),
            value: "s3cr3t-upstream-value-0042".into(),
        }];
        let pipelock = Pipelock::new(&[], &known).unwrap();
        let encoded = bottle_pipelock::base64_encode(b"s3cr3t-upstream-value-0042", false);
        let found = scan_blob(&pipelock, "abc", "notes.txt", format!("x\n{encoded}\n").as_bytes());
        assert!(
            found.iter().any(|f| f.detection.rule == "known-secret:UPSTREAM_TOKEN"),
            "{found:?}"
        );
    }
}
