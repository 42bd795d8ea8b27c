//! What the pushing client is told: `remote:` lines and the report-status block.
//!
//! Hazard: the message is what the agent reads, so it must say exactly why and how to
//! ask for an exception, and must never echo the secret: a finding is shown by rule,
//! commit, path, line and pipelock's masked excerpt, at most [`MAX_LISTED`] of them.

use crate::pktline;
use crate::receive::PushRequest;
use crate::scan::BlobFinding;

/// Findings listed in a rejection; the rest are counted.
pub const MAX_LISTED: usize = 5;

/// The push option that asks for an exception with a reason.
pub const BYPASS_OPTION: &str = "bottle.bypass";

/// A finding with the commit that introduced it (when one was found).
#[derive(Debug, Clone)]
pub struct Located<'a> {
    /// The finding.
    pub finding: &'a BlobFinding,
    /// The commit (full id), if known.
    pub commit: Option<String>,
}

/// One line per finding: `<rule>: commit <sha> path <file>:<line>` and the excerpt.
pub fn finding_lines(located: &[Located<'_>]) -> Vec<String> {
    let mut out = Vec::new();
    for l in located.iter().take(MAX_LISTED) {
        let f = l.finding;
        let commit =
            l.commit.as_deref().map_or("unknown".to_string(), |c| c.chars().take(12).collect());
        let line = if f.line > 0 { format!(":{}", f.line) } else { String::new() };
        let suppressed = if f.suppressed { " (marked gitleaks:allow)" } else { "" };
        out.push(format!(
            "  {}: commit {commit} path {}{line}{suppressed}",
            f.detection.rule,
            printable(&f.path)
        ));
        out.push(format!("    {}", f.detection.excerpt));
    }
    if located.len() > MAX_LISTED {
        out.push(format!("  ... and {} more", located.len() - MAX_LISTED));
    }
    out
}

/// The rejection for findings nobody asked an exception for.
pub fn rejection(located: &[Located<'_>]) -> Vec<String> {
    let mut out = vec!["bottle: push rejected: secret detected".to_string()];
    out.extend(finding_lines(located));
    out.push("To fix: remove the secret from every commit of the push (rewrite them, e.g. `git commit --amend` or `git rebase -i`) and push again.".into());
    out.push(format!(
        "To ask for an exception: add `gitleaks:allow` to the line, or push with `git push -o {BYPASS_OPTION}=\"<why>\"`; the operator approves or rejects it (`bottle approvals`)."
    ));
    out
}

/// Strips control characters (a path is agent-chosen and ends up in a terminal).
pub fn printable(text: &str) -> String {
    text.chars().map(|c| if c.is_control() { '?' } else { c }).collect()
}

/// `text` as a `remote:` line (progress band), or nothing when the client did not ask
/// for side-band.
pub fn message(request: &PushRequest, text: &str) -> Vec<u8> {
    if request.side_band {
        pktline::sideband(2, format!("{text}\n").as_bytes())
    } else {
        Vec::new()
    }
}

/// The end of a receive-pack response: per ref `ok` or `ng <reason>` (`unpack` is
/// `None` for `unpack ok`, `Some(why)` for an unpack failure), on band 1 with
/// side-band, then the closing flush.
pub fn status_block(
    request: &PushRequest,
    unpack: Option<&str>,
    results: &[(String, Result<(), String>)],
) -> Vec<u8> {
    let mut out = Vec::new();
    if request.report_status {
        let mut status = Vec::new();
        let unpack_line = match unpack {
            None => "unpack ok\n".to_string(),
            Some(why) => format!("unpack {}\n", one_line(why)),
        };
        status.extend(pktline::data(unpack_line.as_bytes()));
        for (refname, result) in results {
            let line = match result {
                Ok(()) => format!("ok {refname}\n"),
                Err(why) => format!("ng {refname} {}\n", one_line(why)),
            };
            status.extend(pktline::data(line.as_bytes()));
        }
        status.extend_from_slice(pktline::FLUSH);
        if request.side_band {
            out.extend(pktline::sideband(1, &status));
        } else {
            out.extend(status);
        }
    }
    if request.side_band {
        out.extend_from_slice(pktline::FLUSH);
    }
    out
}

/// Messages then the status block, in one buffer.
pub fn response(
    request: &PushRequest,
    messages: &[String],
    unpack: Option<&str>,
    results: &[(String, Result<(), String>)],
) -> Vec<u8> {
    let mut out: Vec<u8> = messages.iter().flat_map(|m| message(request, m)).collect();
    out.extend(status_block(request, unpack, results));
    out
}

fn one_line(text: &str) -> String {
    let line: String = printable(&text.replace('\n', " "));
    line.chars().take(400).collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use bottle_pipelock::{Detection, Location};

    fn finding(rule: &str, line: usize) -> BlobFinding {
        BlobFinding {
            blob: "b".repeat(40),
            path: "config/app\u{1b}[31m.env".into(),
            line,
            detection: Detection {
                rule: rule.into(),
                location: Location::Body,
                encoding: "raw".into(),
                span: Some((0, 10)),
                excerpt: "ghp_****************".into(),
                fingerprint: "0123456789abcdef".into(),
            },
            suppressed: false,
        }
    }

    #[test]
    fn the_rejection_lists_five_findings_and_says_how_to_ask() {
        let findings: Vec<BlobFinding> =
            (1..=7).map(|i| finding("github-pat-classic", i)).collect();
        let located: Vec<Located<'_>> =
            findings.iter().map(|f| Located { finding: f, commit: Some("c".repeat(40)) }).collect();
        let lines = rejection(&located);
        assert_eq!(lines[0], "bottle: push rejected: secret detected");
        assert_eq!(
            lines[1],
            "  github-pat-classic: commit cccccccccccc path config/app?[31m.env:1"
        );
        assert_eq!(lines[2], "    ghp_****************");
        assert_eq!(lines[11], "  ... and 2 more");
        assert!(lines.last().unwrap().contains("-o bottle.bypass="), "{lines:?}");
        assert!(lines.iter().any(|l| l.contains("gitleaks:allow")));
    }

    #[test]
    fn the_status_block_rides_band_one_after_the_messages() {
        let request = PushRequest {
            commands: Vec::new(),
            report_status: true,
            side_band: true,
            atomic: false,
            options: Vec::new(),
            pack_offset: 0,
        };
        let body = response(
            &request,
            &["hello".into()],
            None,
            &[("refs/heads/main".into(), Err("secret detected".into()))],
        );
        let text = String::from_utf8_lossy(&body);
        assert!(text.starts_with("000b\u{2}hello\n"), "{text}");
        assert!(
            text.contains("\u{1}000eunpack ok\n0027ng refs/heads/main secret detected\n0000"),
            "{text}"
        );
        assert!(text.ends_with("0000"));
    }
}
