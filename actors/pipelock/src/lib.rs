//! pipelock: bottle's data-loss-prevention stage.
//!
//! Hazard: a scanner that can fail or stall is a scanner an agent can switch off. The core
//! here is pure: bytes in, findings out, no I/O, no clock, no error path once built;
//! every rule is data compiled once at start; one Aho-Corasick automaton over every
//! rule's keywords and every known secret's encodings decides which regexes run at all,
//! so clean text costs one automaton pass. Findings carry a rule id, where, in which
//! spelling, a redacted excerpt and a fingerprint, never the secret.
//!
//! Map:
//! - [`rules`](RuleSpec): the built-in credential rules; [`RuleDef`] for user rules.
//! - `scanner`: the keyword automaton and windowed regexes.
//! - `normalize`: the other spellings (percent, escapes, Unicode folding, base64 /
//!   base32 / hex runs, joined fields).
//! - `known`: the bottle's own secrets in their encodings.
//! - `hostname`: DNS-exfiltration-shaped names.
//! - `injection`: inbound prompt-injection phrases and hidden text.
//! - `decode`: Content-Encoding with a size limit (fail closed).
//! - [`Pipelock`]: the pipeline over request parts, the safelist, redaction.
//! - [`approvals`]: the durable approval queue (journal), its actor and its client.
#![forbid(unsafe_code)]

pub mod approvals;
mod decode;
mod engine;
mod hostname;
mod injection;
mod known;
pub mod normalize;
mod rules;
mod scanner;

pub use decode::{DecodeError, decode_body};
pub use engine::{
    Detection, Detectors, Location, MAX_DETECTIONS, Pipelock, PipelockError, REDACTED, Safelist,
    redact, safelist_key,
};
pub use hostname::suspicious_hostname;
pub use injection::{Confidence, InjectionFinding, InjectionScanner, phrase_rule_ids};
pub use known::{KnownSecret, MIN_KNOWN_LEN, base64_encode};
pub use rules::{BUILTIN, RuleDef, RuleSpec, Validator};
pub use scanner::{
    DEFAULT_REACH, Finding, FingerprintKey, Literal, MAX_FINDINGS, Scanner, ScannerError,
    WINDOW_AFTER, WINDOW_BEFORE, shannon_entropy,
};
