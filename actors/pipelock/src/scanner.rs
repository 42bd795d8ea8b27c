//! The scanner: one keyword automaton, then only the regexes whose keywords occurred.

use aho_corasick::{AhoCorasick, AhoCorasickBuilder, AhoCorasickKind, MatchKind};
use regex::Regex;

use crate::rules::{RuleDef, RuleSpec, Validator};

/// A rule that failed to compile (a bug in a built-in rule, or a bad user rule).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ScannerError {
    /// The rule.
    pub rule: String,
    /// Why.
    pub problem: String,
}

impl std::error::Error for ScannerError {}

impl std::fmt::Display for ScannerError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "rule {:?}: {}", self.rule, self.problem)
    }
}

/// One finding. Never contains the secret itself.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Finding {
    /// Rule id (`known-secret:<name>` for a bottle's own token or placeholder).
    pub rule: String,
    /// Byte offsets of the secret in the scanned text.
    pub start: usize,
    /// End offset (exclusive).
    pub end: usize,
    /// The secret with all but its first 4 characters masked, e.g. `ghp_************`.
    pub excerpt: String,
    /// First 16 hex digits of SHA-256 of the secret: stable, not reversible.
    pub fingerprint: String,
}

/// A rule compiled for scanning; built-in and user rules alike.
struct Compiled {
    id: String,
    min_entropy: Option<f64>,
    validator: Validator,
    regex: Regex,
    /// How far past a keyword hit the secret may end.
    reach: usize,
}

/// A literal the scanner must find wherever it occurs (a bottle's own secret in one of
/// its encodings), case-sensitively unless `any_case`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Literal {
    /// Reported as the finding's rule (e.g. `known-secret:GITHUB_TOKEN`).
    pub rule: String,
    /// The bytes to find.
    pub text: String,
    /// Hex variants match in either case.
    pub any_case: bool,
    /// Fingerprint of the underlying secret (the same for every encoding of it), made with
    /// the scanner's [`FingerprintKey`].
    pub fingerprint: String,
}

/// A compiled rule set.
pub struct Scanner {
    rules: Vec<Compiled>,
    automaton: AhoCorasick,
    /// The same patterns, searched non-overlapping with a prefilter: finds where the
    /// (slower, prefilter-less) overlapping search must look.
    fast: AhoCorasick,
    /// The longest pattern, in bytes.
    longest: usize,
    /// Automaton pattern index -> what it stands for.
    targets: Vec<Target>,
    always: Vec<usize>,
    literals: Vec<Literal>,
    key: FingerprintKey,
}

/// What an automaton pattern stands for.
#[derive(Debug, Clone)]
enum Target {
    /// A keyword of these rules.
    Keyword(Vec<usize>),
    /// A known literal (index into `literals`).
    Literal(usize),
}

impl std::fmt::Debug for Scanner {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Scanner").field("rules", &self.rules.len()).finish()
    }
}

/// Shannon entropy in bits per byte.
pub fn shannon_entropy(data: &[u8]) -> f64 {
    if data.is_empty() {
        return 0.0;
    }
    let mut counts = [0u32; 256];
    for &b in data {
        counts[usize::from(b)] += 1;
    }
    let n = data.len() as f64;
    counts.iter().filter(|&&c| c > 0).map(|&c| f64::from(c) / n).map(|p| -p * p.log2()).sum()
}

fn luhn(text: &str) -> bool {
    let digits: Vec<u32> = text.chars().filter_map(|c| c.to_digit(10)).collect();
    if !(13..=19).contains(&digits.len()) {
        return false;
    }
    let sum: u32 = digits
        .iter()
        .rev()
        .enumerate()
        .map(|(i, &d)| if i % 2 == 1 { if d * 2 > 9 { d * 2 - 9 } else { d * 2 } } else { d })
        .sum();
    sum.is_multiple_of(10)
}

fn iban(text: &str) -> bool {
    let compact: String = text.chars().filter(|c| !c.is_whitespace()).collect();
    // `(?i)[A-Z]` also matches `ſ` and the Kelvin sign: never split inside a character.
    if !compact.is_ascii() {
        return false;
    }
    if !(15..=34).contains(&compact.len()) {
        return false;
    }
    let (head, tail) = compact.split_at(4);
    let mut remainder: u32 = 0;
    for c in tail.chars().chain(head.chars()) {
        let value = match c {
            '0'..='9' => c as u32 - '0' as u32,
            'A'..='Z' => c as u32 - 'A' as u32 + 10,
            _ => return false,
        };
        for digit in value.to_string().chars() {
            remainder = (remainder * 10 + (digit as u32 - '0' as u32)) % 97;
        }
    }
    remainder == 1
}

fn jwt(text: &str) -> bool {
    let Some(header) = text.split('.').next() else { return false };
    // The regex already confined the header to the base64url alphabet.
    let h = crate::normalize::base64_decode(header.as_bytes());
    let h = String::from_utf8_lossy(&h);
    h.trim_start().starts_with('{') && h.contains("\"alg\"")
}

/// Values a human writes as a stand-in: they must never count as findings.
fn looks_like_placeholder(value: &str) -> bool {
    let lower = value.to_ascii_lowercase();
    const WORDS: &[&str] = &[
        "password",
        "passw0rd",
        "changeme",
        "example",
        "placeholder",
        "redacted",
        "your",
        "xxxx",
        "secret",
        "dummy",
        "sample",
        "insert",
    ];
    WORDS.iter().any(|w| lower.contains(w))
        || !value.chars().any(|c| c.is_ascii_digit())
            && value.chars().all(|c| c.is_ascii_uppercase() || c == '_')
        || value.split('.').count() > 1
            && value.split('.').all(|part| {
                // `self.client_secret.expand`, `CONFIG.API_TOKEN`: identifier paths.
                let snake =
                    part.chars().all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_');
                let screaming =
                    part.chars().all(|c| c.is_ascii_uppercase() || c.is_ascii_digit() || c == '_');
                (snake || screaming)
                    && part.chars().next().is_some_and(|c| c.is_ascii_alphabetic() || c == '_')
            })
}

pub(crate) fn excerpt(secret: &str) -> String {
    // Printable ASCII only: an excerpt is shown in the operator's terminal.
    let shown: String =
        secret.chars().take(4).map(|c| if c.is_ascii_graphic() { c } else { '?' }).collect();
    let count = secret.chars().count();
    // Short secrets (card numbers, short passwords) show nothing: 4 characters of 16
    // would be a real head start for a guess.
    if count < 20 {
        return "*".repeat(count.min(24));
    }
    let hidden = count.saturating_sub(4).min(24);
    format!("{shown}{}", "*".repeat(hidden))
}

/// The key fingerprints are made with: HMAC-SHA-256, so a fingerprint of a short or
/// low-entropy secret (a card number) cannot be brute-forced by whoever reads the audit
/// log without the key. One per bottle, kept beside its approval journal so approvals
/// still match after a restart.
#[derive(Clone)]
pub struct FingerprintKey(ring::hmac::Key, [u8; 32]);

impl FingerprintKey {
    /// A fresh random key.
    pub fn random() -> FingerprintKey {
        use rand::Rng;
        FingerprintKey::from_bytes(rand::rng().random::<[u8; 32]>())
    }

    /// A key from stored bytes.
    pub fn from_bytes(bytes: [u8; 32]) -> FingerprintKey {
        FingerprintKey(ring::hmac::Key::new(ring::hmac::HMAC_SHA256, &bytes), bytes)
    }

    /// The bytes, to store (0600) beside the journal.
    pub fn to_bytes(&self) -> [u8; 32] {
        self.1
    }

    /// First 16 hex digits of HMAC-SHA-256(key, secret): stable per bottle, not reversible.
    pub fn fingerprint(&self, secret: &str) -> String {
        let tag = ring::hmac::sign(&self.0, secret.as_bytes());
        tag.as_ref()[..8].iter().map(|b| format!("{b:02x}")).collect()
    }
}

impl std::fmt::Debug for FingerprintKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("FingerprintKey(..)")
    }
}

impl Scanner {
    /// Compiles `rules`. Rules are data: a bad one is an error naming it.
    pub fn new(rules: &[RuleSpec]) -> Result<Scanner, ScannerError> {
        let defs: Vec<RuleDef> = rules.iter().map(RuleDef::from).collect();
        Scanner::with_literals(&defs, Vec::new(), FingerprintKey::random())
    }

    /// Compiles `rules` plus `literals` (known secrets in their encodings) into one
    /// automaton.
    pub fn with_literals(
        rules: &[RuleDef],
        literals: Vec<Literal>,
        key: FingerprintKey,
    ) -> Result<Scanner, ScannerError> {
        let mut compiled = Vec::with_capacity(rules.len());
        let mut patterns: Vec<String> = Vec::new();
        let mut targets: Vec<Target> = Vec::new();
        let mut always = Vec::new();
        for (idx, def) in rules.iter().enumerate() {
            let bad = |problem: String| ScannerError { rule: def.id.clone(), problem };
            if def.id.is_empty()
                || !def.id.chars().all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_')
            {
                return Err(bad("ids are non-empty and use [A-Za-z0-9_-]".into()));
            }
            if compiled.iter().any(|c: &Compiled| c.id == def.id) {
                return Err(bad("duplicate rule id".into()));
            }
            let regex = Regex::new(&def.pattern).map_err(|e| bad(e.to_string()))?;
            if def.keywords.iter().any(|k| k.len() < 3) {
                return Err(bad(
                    "keywords need at least 3 characters (a shorter one fires everywhere)".into(),
                ));
            }
            if def.keywords.is_empty() {
                always.push(idx);
            }
            for keyword in &def.keywords {
                let keyword = keyword.to_ascii_lowercase();
                match patterns.iter().position(|k| *k == keyword) {
                    Some(i) => match &mut targets[i] {
                        Target::Keyword(rules) => rules.push(idx),
                        Target::Literal(_) => unreachable_target(),
                    },
                    None => {
                        patterns.push(keyword);
                        targets.push(Target::Keyword(vec![idx]));
                    }
                }
            }
            compiled.push(Compiled {
                id: def.id.clone(),
                min_entropy: def.min_entropy,
                validator: def.validator,
                regex,
                reach: def.reach.unwrap_or(DEFAULT_REACH),
            });
        }
        for (i, literal) in literals.iter().enumerate() {
            patterns.push(literal.text.clone());
            targets.push(Target::Literal(i));
        }
        let build = |kind: Option<AhoCorasickKind>| {
            AhoCorasickBuilder::new()
                .ascii_case_insensitive(true)
                .match_kind(MatchKind::Standard)
                .kind(kind)
                .build(&patterns)
                .map_err(|e| ScannerError { rule: "<keywords>".into(), problem: e.to_string() })
        };
        let automaton = build(None)?;
        let fast = build(Some(AhoCorasickKind::DFA))?;
        let longest = patterns.iter().map(String::len).max().unwrap_or(0);
        Ok(Scanner { rules: compiled, automaton, fast, longest, targets, always, literals, key })
    }

    /// The built-in rule set.
    pub fn builtin() -> Scanner {
        // The built-in rules are tested to compile; a failure here is a bug in this crate.
        Scanner::new(crate::rules::BUILTIN).unwrap_or_else(|e| unreachable_rules(&e))
    }

    /// Number of rules.
    pub fn rule_count(&self) -> usize {
        self.rules.len()
    }

    /// Every finding in `text`, in order of position.
    ///
    /// Each rule's regex runs only on windows around its keyword hits (from the start of
    /// the hit's line, at most [`WINDOW_BEFORE`] bytes back, to the rule's reach past
    /// the hit), and only where a cheap `is_match` says there is something to capture,
    /// so text without keywords costs one automaton pass and keyword-dense text costs
    /// short windows, not whole-text regex passes.
    pub fn scan(&self, text: &str) -> Vec<Finding> {
        let mut hits: Vec<Vec<usize>> = vec![Vec::new(); self.rules.len()];
        let mut findings = Vec::new();
        // Every overlapping match overlaps a non-overlapping one (or is one), so the
        // overlapping search runs only around those, and clean text costs one
        // prefiltered DFA pass.
        let mut regions: Vec<(usize, usize)> = Vec::new();
        for m in self.fast.find_iter(text) {
            let start = m.start().saturating_sub(self.longest);
            let end = (m.end() + self.longest).min(text.len());
            match regions.last_mut() {
                Some(last) if start <= last.1 => last.1 = last.1.max(end),
                _ => regions.push((start, end)),
            }
        }
        let overlapping = regions.iter().flat_map(|&(start, end)| {
            self.automaton.find_overlapping_iter(aho_corasick::Input::new(text).span(start..end))
        });
        let mut seen: std::collections::HashSet<(usize, usize, usize)> =
            std::collections::HashSet::new();
        for m in overlapping {
            if !seen.insert((m.pattern().as_usize(), m.start(), m.end())) {
                continue;
            }
            match &self.targets[m.pattern().as_usize()] {
                Target::Keyword(rules) => {
                    for &i in rules {
                        hits[i].push(m.start());
                    }
                }
                Target::Literal(i) => {
                    let literal = &self.literals[*i];
                    let found = &text[m.start()..m.end()];
                    if (literal.any_case || found == literal.text) && findings.len() < MAX_FINDINGS
                    {
                        findings.push(Finding {
                            rule: literal.rule.clone(),
                            start: m.start(),
                            end: m.end(),
                            excerpt: excerpt(found),
                            fingerprint: literal.fingerprint.clone(),
                        });
                    }
                }
            }
        }
        for (idx, rule) in self.rules.iter().enumerate() {
            if hits[idx].is_empty() && !self.always.contains(&idx) {
                continue;
            }
            let windows: Vec<(usize, usize)> = if self.always.contains(&idx) {
                vec![(0, text.len())]
            } else {
                windows(text, &hits[idx], rule.reach)
            };
            for (start, end) in windows {
                if findings.len() >= MAX_FINDINGS {
                    break;
                }
                let slice = &text[start..end];
                if !rule.regex.is_match(slice) {
                    continue;
                }
                // Resume after the secret, not after the whole match: a boundary
                // character that ended one match may start the next (two tokens with
                // one space between them are two findings).
                let mut at = 0;
                while at <= slice.len() {
                    let Some(caps) = rule.regex.captures_at(slice, at) else { break };
                    let Some(whole) = caps.get(0) else { break };
                    let m = caps.name("s").unwrap_or(whole);
                    self.check(rule, m.as_str(), start + m.start(), start + m.end(), &mut findings);
                    let next = if m.end() > at { m.end() } else { whole.end() };
                    at = if next > at { next } else { ceil_boundary(slice, at + 1) };
                    if at == slice.len() && whole.end() == slice.len() {
                        break;
                    }
                }
            }
        }
        findings.sort_by(|a, b| (a.start, a.end, &a.rule).cmp(&(b.start, b.end, &b.rule)));
        findings.dedup_by(|a, b| a.rule == b.rule && a.start == b.start && a.end == b.end);
        findings
    }

    fn check(
        &self,
        rule: &Compiled,
        secret: &str,
        start: usize,
        end: usize,
        findings: &mut Vec<Finding>,
    ) {
        if let Some(min) = rule.min_entropy
            && shannon_entropy(secret.as_bytes()) < min
        {
            return;
        }
        // A "secret" that is an identifier or a placeholder is not one.
        if rule.min_entropy.is_some() && looks_like_placeholder(secret) {
            return;
        }
        let valid = match rule.validator {
            Validator::None => true,
            Validator::Luhn => luhn(secret),
            Validator::Iban => iban(secret),
            Validator::Jwt => jwt(secret),
        };
        if valid {
            findings.push(Finding {
                rule: rule.id.clone(),
                start,
                end,
                excerpt: excerpt(secret),
                fingerprint: self.key.fingerprint(secret),
            });
        }
    }
}

/// How far past a keyword hit a rule's secret may end, unless the rule says otherwise.
pub const DEFAULT_REACH: usize = 320;

/// Findings per scan at most: past that a text is hostile or broken, and any one
/// finding already decides the policy.
pub const MAX_FINDINGS: usize = 4096;

/// How far before a keyword hit a rule's regex may start (the line's start if nearer).
pub const WINDOW_BEFORE: usize = 256;
/// The longest reach a rule may ask for.
pub const WINDOW_AFTER: usize = 8192;

fn floor_boundary(text: &str, mut i: usize) -> usize {
    while i > 0 && !text.is_char_boundary(i) {
        i -= 1;
    }
    i
}

fn ceil_boundary(text: &str, mut i: usize) -> usize {
    while i < text.len() && !text.is_char_boundary(i) {
        i += 1;
    }
    i
}

/// Merged windows around sorted-or-not hit positions.
fn windows(text: &str, hits: &[usize], reach: usize) -> Vec<(usize, usize)> {
    let mut out: Vec<(usize, usize)> = Vec::new();
    let mut positions = hits.to_vec();
    positions.sort_unstable();
    for p in positions {
        let back = floor_boundary(text, p.saturating_sub(WINDOW_BEFORE));
        let line_start = text[back..p].rfind('\n').map_or(back, |i| back + i + 1);
        let start = floor_boundary(text, line_start);
        let end = ceil_boundary(text, (p + reach.min(WINDOW_AFTER)).min(text.len()));
        match out.last_mut() {
            Some(last) if start <= last.1 => last.1 = last.1.max(end),
            _ => out.push((start, end)),
        }
    }
    out
}

#[cold]
fn unreachable_target() -> ! {
    // Keywords and literals get distinct pattern slots: keywords are pushed first.
    panic!("a keyword slot holds a literal")
}

#[cold]
fn unreachable_rules(e: &ScannerError) -> Scanner {
    // No panic in library code paths that run on agent input: an empty scanner that
    // reports nothing would fail open, so this is a hard programming error instead.
    panic!("built-in pipelock rules do not compile: {e}")
}
