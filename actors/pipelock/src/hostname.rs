//! Hostnames shaped like DNS exfiltration.
//!
//! Hazard: a lookup of `<encoded secret>.attacker.example` leaks the secret to the
//! attacker's name server before any connection is made, so this check runs on the name
//! before anything resolves it. A label is suspicious when it is very long (DNS allows
//! 63 bytes; people rarely use more than 30) or long and random-looking (high entropy
//! with digits mixed in, as hex, base32 and base64 encodings are).

use crate::scanner::shannon_entropy;

/// Labels at least this long are flagged outright.
pub(crate) const MAX_LABEL: usize = 48;
/// Labels at least this long are checked for randomness.
pub(crate) const RANDOM_LABEL: usize = 24;
/// Entropy (bits per character) above which a long label counts as random.
pub(crate) const RANDOM_ENTROPY: f64 = 3.6;
/// Whole names longer than this are flagged.
pub(crate) const MAX_NAME: usize = 180;

/// Why `host` looks like exfiltration, or `None`.
pub fn suspicious_hostname(host: &str) -> Option<String> {
    let host = host.trim_end_matches('.');
    if host.parse::<std::net::IpAddr>().is_ok() {
        return None;
    }
    if host.len() > MAX_NAME {
        return Some(format!("hostname is {} bytes long", host.len()));
    }
    for label in host.split('.') {
        if label.len() >= MAX_LABEL {
            return Some(format!("a {}-byte DNS label", label.len()));
        }
        if label.len() >= RANDOM_LABEL && label.bytes().all(|b| b.is_ascii_hexdigit()) {
            return Some(format!("a {}-byte hex DNS label", label.len()));
        }
        if label.len() >= RANDOM_LABEL {
            let digits = label.bytes().filter(u8::is_ascii_digit).count();
            let entropy = shannon_entropy(label.as_bytes());
            if entropy >= RANDOM_ENTROPY && digits * 10 >= label.len() {
                return Some(format!(
                    "a random-looking {}-byte DNS label ({entropy:.1} bits/char)",
                    label.len()
                ));
            }
        }
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ordinary_names_pass() {
        for host in [
            "api.github.com",
            "objects.githubusercontent.com",
            "d111111abcdef8.cloudfront.net",
            "static-content-delivery.example-company-website.com",
            "registry.npmjs.org",
            "storage.googleapis.com",
            "my-bucket-name.s3.us-east-1.amazonaws.com",
            "10.0.0.1",
            "::1",
        ] {
            assert_eq!(suspicious_hostname(host), None, "{host}");
        }
    }

    #[test]
    fn encoded_labels_are_flagged() {
        for host in [
            "6768705f61626364656667686970.x.example",     // hex, 28
            "MFRGGZDFMZTWQ2LKNNWG23TPOBYXE.evil.example", // base32, 29
            "Z2hwX2FiY2RlZmdoaWprbG1ub3BxcnN0dXZ3.evil.example",
            &format!("{}.evil.example", "a".repeat(50)),
            &format!("{}.example", "ab.".repeat(70)),
        ] {
            assert!(suspicious_hostname(host).is_some(), "{host}");
        }
    }
}
