//! Inbound prompt-injection detection.
//!
//! Hazard: a fetched page or API response is read by the model as if the operator
//! wrote it. Text that tells the model to drop its instructions, that forges a system or
//! turn boundary, or that hides instructions from the human (invisible tag characters,
//! bidi overrides) is an attack on the agent. Detection is by phrase rules on the
//! normalized text (Unicode folding, percent-decoding and escapes, as for secrets, so
//! `іgnore` with a Cyrillic `і` or a zero-width space inside a word does not slip by).
//! High confidence blocks (where the route says so); medium warns and forwards.
//!
//! This is a tripwire, not a guarantee: nobody can enumerate every way to phrase an
//! instruction. It catches the common, copy-pasted payloads cheaply.

use aho_corasick::{AhoCorasick, AhoCorasickBuilder, MatchKind};
use regex::Regex;

use crate::normalize;

/// How sure a finding is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Confidence {
    /// Logged; the response is forwarded.
    Medium,
    /// Blocked where the route's `inbound_on_match` is `block`.
    High,
}

/// One injection finding.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct InjectionFinding {
    /// Rule id.
    pub rule: &'static str,
    /// How sure.
    pub confidence: Confidence,
    /// Up to 80 characters of the matched text.
    pub excerpt: String,
}

struct PhraseRule {
    id: &'static str,
    confidence: Confidence,
    keywords: &'static [&'static str],
    pattern: &'static str,
}

const PHRASES: &[PhraseRule] = &[
    PhraseRule {
        id: "ignore-previous-instructions",
        confidence: Confidence::High,
        keywords: &["ignore", "disregard", "forget", "override", "bypass"],
        pattern: r"(?i)(?-u:\b)(?:ignore|disregard|forget|override|bypass)\s+(?:all\s+|any\s+|each\s+|every\s+)?(?:of\s+)?(?:the\s+|your\s+|my\s+|these\s+|those\s+)?(?:previous|prior|above|earlier|preceding|original|initial|system|existing)\s+(?:instructions?|prompts?|directions?|directives?|rules|guidelines|guardrails|context|messages?)",
    },
    PhraseRule {
        id: "new-instructions",
        confidence: Confidence::High,
        keywords: &["instructions", "system prompt"],
        pattern: r"(?i)(?:(?-u:\b)your\s+new\s+(?:instructions|system\s+prompt|task)\s+(?:are|is)(?-u:\b)|(?-u:\b)new\s+system\s+prompt\s*:|(?-u:\b)updated\s+instructions\s+from\s+(?:the\s+)?(?:user|operator|developer|system|anthropic|openai)(?-u:\b))",
    },
    PhraseRule {
        id: "role-token-spoofing",
        confidence: Confidence::High,
        keywords: &[
            "<|im_start|>",
            "<|system|>",
            "<|start_header_id|>",
            "[inst]",
            "<<sys>>",
            "<|endoftext|>",
        ],
        pattern: r"(?i)(?:<\|im_start\|>\s*(?:system|assistant)|<\|system\|>|<\|start_header_id\|>\s*system|\[INST\]|<<SYS>>|<\|endoftext\|>)",
    },
    PhraseRule {
        id: "turn-spoofing",
        confidence: Confidence::High,
        keywords: &["human:", "assistant:", "system:"],
        pattern: r"(?m)(?:^|\n)\s*(?:Human|Assistant|System)\s*:\s*(?:ignore|you\s+(?:are|must|will|should)|new\s+instructions|from\s+now\s+on)",
    },
    PhraseRule {
        id: "system-tag-spoofing",
        confidence: Confidence::Medium,
        keywords: &["<system", "</system", "system-reminder", "[system"],
        pattern: r"(?i)(?:</?system(?:[_\-]?(?:prompt|message|reminder))?>|\[system(?:\s+message)?\])",
    },
    PhraseRule {
        id: "jailbreak-persona",
        confidence: Confidence::High,
        keywords: &["you are now", "developer mode", "jailbr", "do anything now"],
        pattern: r"(?i)(?:(?-u:\b)you\s+are\s+now\s+(?:in\s+)?(?:dan|developer\s+mode|jailbroken|unrestricted|unfiltered|an?\s+(?:unrestricted|unfiltered|evil))(?-u:\b)|(?-u:\b)enable\s+developer\s+mode(?-u:\b)|(?-u:\b)do\s+anything\s+now(?-u:\b))",
    },
    PhraseRule {
        id: "exfiltrate-secrets",
        confidence: Confidence::High,
        keywords: &["send", "post", "upload", "exfiltrate", "leak", "curl"],
        pattern: r"(?i)(?-u:\b)(?:send|post|upload|exfiltrate|leak|curl|transmit|forward)(?-u:\b)[^.\n]{0,40}(?-u:\b)(?:your|the|all)\s+(?:api\s+keys?|credentials|secrets|tokens?|passwords?|env(?:ironment)?\s+variables|ssh\s+keys?|\.env)(?-u:\b)[^.\n]{0,40}(?-u:\b)(?:to|at)\s+(?:https?://|this\s+url|the\s+following)",
    },
    PhraseRule {
        id: "conceal-from-user",
        confidence: Confidence::Medium,
        keywords: &["user", "human", "operator"],
        pattern: r"(?i)(?-u:\b)(?:do\s+not|don't|never)\s+(?:tell|inform|mention\s+(?:this\s+)?to|reveal\s+(?:this\s+)?to|show)\s+(?:the\s+)?(?:user|human|operator)(?-u:\b)|(?-u:\b)without\s+(?:telling|informing|alerting)\s+(?:the\s+)?(?:user|human|operator)(?-u:\b)",
    },
    PhraseRule {
        id: "instruction-override-soft",
        confidence: Confidence::Medium,
        keywords: &["from now on", "act as", "pretend to be", "important:"],
        pattern: r"(?i)(?:(?-u:\b)from\s+now\s+on,?\s+you\s+(?:will|must|are)(?-u:\b)|(?-u:\b)(?:act|behave)\s+as\s+(?:if\s+you\s+(?:were|are)\s+)?(?:an?\s+)?(?:unrestricted|unfiltered|different)(?-u:\b)|(?-u:\b)pretend\s+to\s+be\s+(?:an?\s+)?(?:system|admin|developer|operator)(?-u:\b)|(?-u:\b)important\s*:\s*(?:the\s+)?(?:ai|assistant|agent|model|claude|llm)\s+(?:must|should)(?-u:\b))",
    },
];

/// The inbound scanner.
pub struct InjectionScanner {
    automaton: AhoCorasick,
    keyword_rules: Vec<Vec<usize>>,
    regexes: Vec<Regex>,
}

impl std::fmt::Debug for InjectionScanner {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("InjectionScanner").field("rules", &self.regexes.len()).finish()
    }
}

impl Default for InjectionScanner {
    fn default() -> Self {
        InjectionScanner::new()
    }
}

impl InjectionScanner {
    /// The built-in phrase rules.
    pub fn new() -> InjectionScanner {
        let mut keywords: Vec<String> = Vec::new();
        let mut keyword_rules: Vec<Vec<usize>> = Vec::new();
        let mut regexes = Vec::new();
        for (idx, rule) in PHRASES.iter().enumerate() {
            // Tested to compile; an error here is a bug in this file.
            regexes.push(Regex::new(rule.pattern).unwrap_or_else(|e| bad_rule(rule.id, &e)));
            for k in rule.keywords {
                let k = k.to_ascii_lowercase();
                match keywords.iter().position(|x| *x == k) {
                    Some(i) => keyword_rules[i].push(idx),
                    None => {
                        keywords.push(k);
                        keyword_rules.push(vec![idx]);
                    }
                }
            }
        }
        let automaton = AhoCorasickBuilder::new()
            .ascii_case_insensitive(true)
            .match_kind(MatchKind::Standard)
            .build(&keywords)
            .unwrap_or_else(|e| bad_rule("<keywords>", &e));
        InjectionScanner { automaton, keyword_rules, regexes }
    }

    /// Number of phrase rules (hidden-text checks come on top).
    pub fn rule_count(&self) -> usize {
        self.regexes.len()
    }

    /// Findings in `text`, most confident first.
    pub fn scan(&self, text: &str) -> Vec<InjectionFinding> {
        let mut findings = Vec::new();
        if !text.is_ascii() {
            hidden_text(text, &mut findings);
        }
        let mut texts: Vec<String> = Vec::new();
        for view in normalize::derived_views(text) {
            if matches!(
                view.encoding,
                normalize::Encoding::Unicode
                    | normalize::Encoding::Percent
                    | normalize::Encoding::Escapes
            ) {
                texts.push(view.text);
            }
        }
        self.scan_one(text, &mut findings);
        for t in &texts {
            self.scan_one(t, &mut findings);
        }
        findings.sort_by_key(|f| std::cmp::Reverse(f.confidence));
        findings.dedup_by(|a, b| a.rule == b.rule);
        findings
    }

    fn scan_one(&self, text: &str, findings: &mut Vec<InjectionFinding>) {
        let mut fire = vec![false; self.regexes.len()];
        for m in self.automaton.find_overlapping_iter(text) {
            for &i in &self.keyword_rules[m.pattern().as_usize()] {
                fire[i] = true;
            }
        }
        for (i, regex) in self.regexes.iter().enumerate() {
            if !fire[i] || findings.iter().any(|f| f.rule == PHRASES[i].id) {
                continue;
            }
            if let Some(m) = regex.find(text) {
                findings.push(InjectionFinding {
                    rule: PHRASES[i].id,
                    confidence: PHRASES[i].confidence,
                    excerpt: m.as_str().chars().take(80).collect(),
                });
            }
        }
    }
}

/// Invisible carriers of text: Unicode tag characters (high: they exist to smuggle
/// ASCII past a human), bidi overrides and runs of zero-width characters (medium).
fn hidden_text(text: &str, findings: &mut Vec<InjectionFinding>) {
    let mut tags = String::new();
    let (mut bidi, mut zero_width_run, mut max_zero_width) = (0usize, 0usize, 0usize);
    for c in text.chars() {
        let code = c as u32;
        if (0xe0020..=0xe007e).contains(&code) {
            tags.push(char::from_u32(code - 0xe0000).unwrap_or(' '));
        }
        if matches!(c, '\u{202a}'..='\u{202e}' | '\u{2066}'..='\u{2069}') {
            bidi += 1;
        }
        if matches!(c, '\u{200b}'..='\u{200d}' | '\u{2060}' | '\u{feff}') {
            zero_width_run += 1;
            max_zero_width = max_zero_width.max(zero_width_run);
        } else {
            zero_width_run = 0;
        }
    }
    if tags.len() >= 4 {
        findings.push(InjectionFinding {
            rule: "unicode-tag-smuggling",
            confidence: Confidence::High,
            excerpt: tags.chars().take(80).collect(),
        });
    }
    if bidi >= 2 {
        findings.push(InjectionFinding {
            rule: "bidi-override",
            confidence: Confidence::Medium,
            excerpt: format!("{bidi} bidirectional override characters"),
        });
    }
    if max_zero_width >= 4 {
        findings.push(InjectionFinding {
            rule: "zero-width-run",
            confidence: Confidence::Medium,
            excerpt: format!("{max_zero_width} zero-width characters in a row"),
        });
    }
}

#[cold]
fn bad_rule(id: &str, e: &dyn std::fmt::Display) -> ! {
    panic!("built-in injection rule {id} does not compile: {e}")
}

/// Ids of the phrase rules, for tests and docs.
pub fn phrase_rule_ids() -> Vec<&'static str> {
    PHRASES.iter().map(|r| r.id).collect()
}
