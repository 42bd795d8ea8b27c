//! The outbound and inbound pipeline over request and response parts.
//!
//! Hazard: a detection that carries the secret leaks it into the audit log, the 403 body
//! and the approval queue; a redaction that misses one spelling forwards the secret
//! anyway. A [`Detection`] carries the rule, where it was found (host, URL, header,
//! body, frame), in which spelling, a redacted excerpt and a fingerprint, never the
//! value. Redaction replaces raw spans only where every detection maps back to one, and
//! the caller re-scans the result; a detection without a raw span (Unicode folding,
//! joined fields) cannot be redacted and must be blocked.

use std::collections::HashSet;
use std::sync::{Arc, RwLock};

use crate::hostname::suspicious_hostname;
use crate::injection::{InjectionFinding, InjectionScanner};
use crate::known::KnownSecret;
use crate::normalize::{self, Encoding, Origin};
use crate::rules::{BUILTIN, RuleDef};
use crate::scanner::{Finding, FingerprintKey, Scanner, ScannerError};

/// Why the pipeline could not be built.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PipelockError {
    /// A rule does not compile or is malformed (the message names it).
    #[error("{0}")]
    Rule(String),
}

impl From<ScannerError> for PipelockError {
    fn from(e: ScannerError) -> PipelockError {
        PipelockError::Rule(e.to_string())
    }
}

/// Where in a request or response something was found.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "snake_case", tag = "kind", content = "name")]
pub enum Location {
    /// The target hostname.
    Host,
    /// Path and query.
    Url,
    /// A header (its name).
    Header(String),
    /// The body.
    Body,
    /// A WebSocket message.
    Frame,
}

impl std::fmt::Display for Location {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Location::Host => f.write_str("hostname"),
            Location::Url => f.write_str("url"),
            Location::Header(name) => write!(f, "header {name}"),
            Location::Body => f.write_str("body"),
            Location::Frame => f.write_str("websocket message"),
        }
    }
}

/// One outbound detection. Never contains the secret.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct Detection {
    /// Rule id (`known-secret:<name>` for the bottle's own tokens and placeholders).
    pub rule: String,
    /// Where.
    pub location: Location,
    /// In which spelling (`raw`, `percent`, `base64`, ...).
    pub encoding: String,
    /// Raw byte offsets in the scanned part, when the spelling maps back to them.
    pub span: Option<(usize, usize)>,
    /// The secret with all but its first 4 characters masked.
    pub excerpt: String,
    /// First 16 hex digits of SHA-256 of the secret.
    pub fingerprint: String,
}

/// Which outbound detectors a route runs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Detectors {
    /// Credential pattern rules (`token_patterns`).
    pub token_patterns: bool,
    /// The bottle's own secrets and placeholders (`known_secrets`).
    pub known_secrets: bool,
}

impl Detectors {
    /// Both.
    pub const ALL: Detectors = Detectors { token_patterns: true, known_secrets: true };
    /// Neither.
    pub const NONE: Detectors = Detectors { token_patterns: false, known_secrets: false };

    /// Whether any is on.
    pub fn any(self) -> bool {
        self.token_patterns || self.known_secrets
    }
}

/// Detections reported per scanned part at most; past that the part is refused anyway
/// (and a redaction would leave the rest, which the re-scan catches).
pub const MAX_DETECTIONS: usize = 256;

/// Safelist entries are per destination host: an approval for one host is not one for
/// every host.
pub fn safelist_key(host: &str, fingerprint: &str) -> String {
    format!("{host}\0{fingerprint}")
}

/// The placeholder written over a redacted secret.
pub const REDACTED: &str = "REDACTED";

/// The DLP pipeline: rules and known secrets compiled once, plus the bottle-lifetime
/// safelist of approved fingerprints.
pub struct Pipelock {
    scanner: Scanner,
    injection: InjectionScanner,
    safelist: Safelist,
    key: FingerprintKey,
}

/// Approved fingerprints, shared by every generation of the pipeline (reloads rebuild
/// the rules and known secrets; approvals stay for the bottle's lifetime).
pub type Safelist = Arc<RwLock<HashSet<String>>>;

impl std::fmt::Debug for Pipelock {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Pipelock")
            .field("rules", &self.scanner.rule_count())
            .field("injection_rules", &self.injection.rule_count())
            .finish_non_exhaustive()
    }
}

impl Pipelock {
    /// Built-in rules plus `extra` (from the manifest), and `known` secrets.
    pub fn new(extra: &[RuleDef], known: &[KnownSecret]) -> Result<Pipelock, PipelockError> {
        Pipelock::with_safelist(extra, known, Safelist::default(), &FingerprintKey::random())
    }

    /// Like [`Pipelock::new`], sharing an existing safelist and fingerprint key (after a
    /// route reload, or across restarts with the key stored beside the journal).
    pub fn with_safelist(
        extra: &[RuleDef],
        known: &[KnownSecret],
        safelist: Safelist,
        key: &FingerprintKey,
    ) -> Result<Pipelock, PipelockError> {
        let mut defs: Vec<RuleDef> = BUILTIN.iter().map(RuleDef::from).collect();
        defs.extend(extra.iter().cloned());
        let literals = crate::known::literals(known, key);
        let scanner = Scanner::with_literals(&defs, literals, key.clone())?;
        Ok(Pipelock { scanner, injection: InjectionScanner::new(), safelist, key: key.clone() })
    }

    /// Number of pattern rules.
    pub fn rule_count(&self) -> usize {
        self.scanner.rule_count()
    }

    /// Marks fingerprints as approved toward `host` for the bottle's lifetime.
    pub fn approve<'a>(&self, host: &str, fingerprints: impl IntoIterator<Item = &'a str>) {
        let mut safe = self.safelist.write().unwrap_or_else(|p| p.into_inner());
        safe.extend(fingerprints.into_iter().map(|fp| safelist_key(host, fp)));
    }

    /// Whether a fingerprint was approved toward `host`.
    pub fn is_approved(&self, host: &str, fingerprint: &str) -> bool {
        self.safelist
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .contains(&safelist_key(host, fingerprint))
    }

    /// `detections` without the ones approved toward `host` (scanning found them all: a
    /// second secret next to an approved one is still there).
    pub fn unapproved(&self, host: &str, detections: Vec<Detection>) -> Vec<Detection> {
        detections.into_iter().filter(|d| !self.is_approved(host, &d.fingerprint)).collect()
    }

    /// The target host: exfiltration-shaped labels and secrets in the name.
    pub fn scan_host(&self, host: &str, detectors: Detectors) -> Vec<Detection> {
        let mut out = Vec::new();
        if detectors.any()
            && let Some(why) = suspicious_hostname(host)
        {
            out.push(Detection {
                rule: "dns-exfil-label".into(),
                location: Location::Host,
                encoding: "raw".into(),
                span: None,
                excerpt: why,
                fingerprint: self.key.fingerprint(host),
            });
        }
        out.extend(self.scan(Location::Host, host, detectors));
        // Nothing in a hostname can be redacted.
        for d in &mut out {
            d.span = None;
        }
        out
    }

    /// Path and query, including the query values joined.
    pub fn scan_url(&self, path_and_query: &str, detectors: Detectors) -> Vec<Detection> {
        let mut out = self.scan(Location::Url, path_and_query, detectors);
        if let Some(joined) = normalize::joined_query(path_and_query) {
            self.scan_joined(Location::Url, &joined, detectors, &mut out);
        }
        out
    }

    /// A header value.
    pub fn scan_header(&self, name: &str, value: &str, detectors: Detectors) -> Vec<Detection> {
        self.scan(Location::Header(name.to_ascii_lowercase()), value, detectors)
    }

    /// A (decoded) body, including JSON string fields joined.
    pub fn scan_body(&self, body: &str, detectors: Detectors) -> Vec<Detection> {
        self.scan_document(Location::Body, body, detectors)
    }

    /// A WebSocket message, including JSON string fields joined.
    pub fn scan_frame(&self, text: &str, detectors: Detectors) -> Vec<Detection> {
        self.scan_document(Location::Frame, text, detectors)
    }

    /// A body-like text: scanned as is, then its JSON string fields joined.
    fn scan_document(
        &self,
        location: Location,
        text: &str,
        detectors: Detectors,
    ) -> Vec<Detection> {
        let mut out = self.scan(location.clone(), text, detectors);
        if let Some(joined) = normalize::joined_json(text) {
            self.scan_joined(location, &joined, detectors, &mut out);
        }
        out
    }

    /// Prompt-injection findings in response text.
    pub fn scan_inbound(&self, text: &str) -> Vec<InjectionFinding> {
        self.injection.scan(text)
    }

    fn scan_joined(
        &self,
        location: Location,
        joined: &str,
        detectors: Detectors,
        out: &mut Vec<Detection>,
    ) {
        let known: HashSet<String> = out.iter().map(|o| o.fingerprint.clone()).collect();
        for mut d in self.scan(location, joined, detectors) {
            if known.contains(&d.fingerprint) || out.len() >= MAX_DETECTIONS {
                continue;
            }
            d.encoding = "joined".into();
            d.span = None;
            out.push(d);
        }
    }

    /// Every detection in `text` under all its spellings (at most [`MAX_DETECTIONS`]).
    pub fn scan(&self, location: Location, text: &str, detectors: Detectors) -> Vec<Detection> {
        if !detectors.any() {
            return Vec::new();
        }
        let mut found = Found { location, detectors, out: Vec::new(), seen: HashSet::new() };
        found.add(Encoding::Raw, &Origin::Identity, self.scanner.scan(text));
        for view in normalize::derived_views(text) {
            if found.out.len() >= MAX_DETECTIONS {
                break;
            }
            found.add(view.encoding, &view.origin, self.scanner.scan(&view.text));
        }
        found.out
    }
}

/// Detections of one part, gathered across its spellings.
struct Found {
    location: Location,
    detectors: Detectors,
    out: Vec<Detection>,
    /// (fingerprint, raw span) already reported.
    seen: HashSet<(String, Option<(usize, usize)>)>,
}

impl Found {
    /// Adds the findings of one spelling (of `encoding`, with offsets through `origin`).
    fn add(&mut self, encoding: Encoding, origin: &Origin, findings: Vec<Finding>) {
        for f in findings {
            let known = f.rule.starts_with("known-secret:");
            if (known && !self.detectors.known_secrets)
                || (!known && !self.detectors.token_patterns)
            {
                continue;
            }
            if self.out.len() >= MAX_DETECTIONS {
                return;
            }
            let span = origin.raw_span(f.start, f.end);
            // The same secret seen again in another spelling adds nothing new, unless
            // this spelling maps to a different raw span.
            if !self.seen.insert((f.fingerprint.clone(), span)) {
                continue;
            }
            self.out.push(Detection {
                rule: f.rule,
                location: self.location.clone(),
                encoding: encoding.as_str().into(),
                span,
                excerpt: f.excerpt,
                fingerprint: f.fingerprint,
            });
        }
    }
}

/// `text` with every detection's raw span replaced by [`REDACTED`], or `None` when a
/// detection has no raw span (it cannot be redacted in place: block instead).
pub fn redact(text: &str, detections: &[Detection]) -> Option<String> {
    let mut spans: Vec<(usize, usize)> = Vec::with_capacity(detections.len());
    for d in detections {
        spans.push(d.span?);
    }
    spans.sort_unstable();
    let mut out = String::with_capacity(text.len());
    let mut at = 0;
    for (start, end) in spans {
        if end <= at {
            continue;
        }
        let start = start.max(at);
        if !text.is_char_boundary(start) || !text.is_char_boundary(end) || end > text.len() {
            return None;
        }
        out.push_str(&text[at..start]);
        out.push_str(REDACTED);
        at = end;
    }
    out.push_str(&text[at..]);
    Some(out)
}
