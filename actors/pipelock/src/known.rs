//! Known secrets: the bottle's real tokens and the placeholders handed to the agent.
//!
//! Hazard: a pattern rule only knows token *shapes*; the bottle knows the actual values,
//! and an agent that base64s a placeholder before posting it defeats a raw comparison.
//! Each value becomes literals in the scanner's one automaton: raw, base64 and base64url
//! at all three byte alignments (the characters fully determined by the value whatever
//! surrounds it), hex (either case) and full percent-encoding (either case). A value
//! shorter than [`MIN_KNOWN_LEN`] is refused: it would match ordinary text.

use crate::scanner::{FingerprintKey, Literal};

/// Shortest value matched as a known secret.
pub const MIN_KNOWN_LEN: usize = 8;

/// A secret the scanner must recognize in any of its encodings.
#[derive(Clone, PartialEq, Eq)]
pub struct KnownSecret {
    /// Name reported in findings (`known-secret:<name>`), e.g. the `token_ref`.
    pub name: String,
    /// The value. Never printed.
    pub value: String,
}

impl std::fmt::Debug for KnownSecret {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("KnownSecret").field("name", &self.name).finish_non_exhaustive()
    }
}

const STD: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
const URL: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_";

/// Base64 of `data` without padding.
pub fn base64_encode(data: &[u8], url: bool) -> String {
    let table = if url { URL } else { STD };
    let mut out = String::with_capacity(data.len().div_ceil(3) * 4);
    for chunk in data.chunks(3) {
        let n = (u32::from(chunk[0]) << 16)
            | (u32::from(*chunk.get(1).unwrap_or(&0)) << 8)
            | u32::from(*chunk.get(2).unwrap_or(&0));
        for i in 0..=chunk.len() {
            out.push(table[((n >> (18 - 6 * i)) & 63) as usize] as char);
        }
    }
    out
}

/// The base64 characters that `value` alone determines when it starts `align` bytes
/// into a 3-byte group (whatever precedes or follows it).
fn aligned(value: &[u8], align: usize, url: bool) -> String {
    let mut data = vec![0u8; align];
    data.extend_from_slice(value);
    let encoded = base64_encode(&data, url);
    let first = (8 * align).div_ceil(6);
    let last = 8 * data.len() / 6;
    encoded.get(first..last).unwrap_or("").to_string()
}

/// Literals for every encoding of `secrets`. Values below [`MIN_KNOWN_LEN`] are skipped.
pub(crate) fn literals(secrets: &[KnownSecret], key: &FingerprintKey) -> Vec<Literal> {
    let mut out: Vec<Literal> = Vec::new();
    for secret in secrets {
        let value = secret.value.as_bytes();
        if value.len() < MIN_KNOWN_LEN {
            continue;
        }
        let rule = format!("known-secret:{}", secret.name);
        let fp = key.fingerprint(&secret.value);
        let mut push = |text: String, any_case: bool| {
            if text.len() >= MIN_KNOWN_LEN && !out.iter().any(|l| l.text == text) {
                out.push(Literal { rule: rule.clone(), text, any_case, fingerprint: fp.clone() });
            }
        };
        // A value in one case (hex keys, placeholders) survives case changes: match it in
        // any case.
        let one_case = !(secret.value.chars().any(|c| c.is_ascii_uppercase())
            && secret.value.chars().any(|c| c.is_ascii_lowercase()));
        push(secret.value.clone(), one_case);
        for url in [false, true] {
            for align in 0..3 {
                push(aligned(value, align, url), false);
            }
        }
        push(value.iter().map(|b| format!("{b:02x}")).collect(), true);
        push(value.iter().map(|b| format!("%{b:02X}")).collect(), true);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_alignment_is_a_substring_of_the_real_encoding() {
        let value = b"bottle-placeholder-0123456789abcdef";
        for prefix in ["", "x", "xy", "xyz", "{\"k\":\""] {
            let mut data = prefix.as_bytes().to_vec();
            data.extend_from_slice(value);
            data.extend_from_slice(b"\"} trailing");
            for url in [false, true] {
                let encoded = base64_encode(&data, url);
                let align = prefix.len() % 3;
                let needle = aligned(value, align, url);
                assert!(needle.len() >= 40, "{needle}");
                assert!(encoded.contains(&needle), "{prefix:?} {url}");
            }
        }
    }
}
