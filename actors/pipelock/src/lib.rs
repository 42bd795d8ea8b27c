//! pipelock: bottle's data-loss-prevention scanner.
//!
//! Hazard: a scanner that can fail or stall is a scanner an agent can switch off. The core
//! here is pure: bytes in, findings out, no I/O, no clock, no error path; every rule is
//! data compiled once at start; one Aho-Corasick automaton over every rule's keywords
//! decides which regexes run at all, so clean text costs one automaton pass. Findings
//! carry a rule id, offsets, a redacted excerpt and a fingerprint, never the secret.
//!
//! Status: the outbound rule engine (built-in credential rules with keyword prefilter,
//! entropy thresholds and validators). Normalization against evasion, known-secret
//! matching in encodings, inbound injection detection, the per-route policy and the
//! approval queue come next (issue 5).
#![forbid(unsafe_code)]

mod rules;
mod scanner;

pub use rules::{BUILTIN, RuleSpec, Validator};
pub use scanner::{Finding, Scanner, ScannerError, WINDOW_AFTER, WINDOW_BEFORE, shannon_entropy};
