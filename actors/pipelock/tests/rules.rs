//! Every built-in rule: a true positive and a near miss, both made of fake values
//! generated here from the rule's templates (never real credentials).

use bottle_pipelock::{BUILTIN, Scanner};
use rand::Rng;
use rand::SeedableRng;
use rand::rngs::StdRng;

fn pick(rng: &mut StdRng, alphabet: &[u8], n: usize) -> String {
    (0..n).map(|_| alphabet[rng.random_range(0..alphabet.len())] as char).collect()
}

fn luhn_card(rng: &mut StdRng) -> String {
    let mut digits: Vec<u32> = vec![4];
    for _ in 0..14 {
        digits.push(rng.random_range(0..10));
    }
    for check in 0..10 {
        let mut all = digits.clone();
        all.push(check);
        let sum: u32 = all
            .iter()
            .rev()
            .enumerate()
            .map(|(i, &d)| {
                if i % 2 == 1 {
                    let x = d * 2;
                    if x > 9 { x - 9 } else { x }
                } else {
                    d
                }
            })
            .sum();
        if sum.is_multiple_of(10) {
            let s: String = all.iter().map(|d| char::from_digit(*d, 10).unwrap()).collect();
            return format!("{} {} {} {}", &s[0..4], &s[4..8], &s[8..12], &s[12..16]);
        }
    }
    unreachable!("some check digit works")
}

fn iban(rng: &mut StdRng) -> String {
    let bban = format!("WEST{}", pick(rng, b"0123456789", 14));
    for check in 2..99u32 {
        let candidate = format!("GB{check:02}{bban}");
        let (head, tail) = candidate.split_at(4);
        let mut r = 0u32;
        for c in tail.chars().chain(head.chars()) {
            let v = c.to_digit(36).unwrap();
            for d in v.to_string().chars() {
                r = (r * 10 + d.to_digit(10).unwrap()) % 97;
            }
        }
        if r == 1 {
            return candidate
                .as_bytes()
                .chunks(4)
                .map(|c| String::from_utf8_lossy(c).into_owned())
                .collect::<Vec<_>>()
                .join(" ");
        }
    }
    unreachable!("some check digits work")
}

fn b64url(data: &[u8]) -> String {
    bottle_pipelock::base64_encode(data, true)
}

/// Fills a rule template with fake characters.
fn fill(template: &str, rng: &mut StdRng) -> String {
    let mut out = String::new();
    let mut rest = template;
    while let Some(open) = rest.find('{') {
        out.push_str(&rest[..open]);
        let close = rest[open..].find('}').map(|c| c + open).expect("closing brace");
        let spec = &rest[open + 1..close];
        let (kind, n) = spec
            .split_once(':')
            .map(|(k, n)| (k, n.parse::<usize>().unwrap()))
            .unwrap_or((spec, 0));
        let value = match kind {
            "a" => pick(rng, b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789", n),
            "A" => pick(rng, b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz", n),
            "l" => pick(rng, b"abcdefghijklmnopqrstuvwxyz0123456789", n),
            "u" => pick(rng, b"ABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789", n),
            "U" => pick(rng, b"ABCDEFGHIJKLMNOPQRSTUVWXYZ234567", n),
            "h" => pick(rng, b"0123456789abcdef", n),
            "d" => pick(rng, b"0123456789", n),
            "w" => {
                pick(rng, b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789_-", n)
            }
            "b" => {
                pick(rng, b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/", n)
            }
            "BECH" => pick(rng, b"QPZRY9X8GF2TVDW0S3JN54KHCE6MUA7L", n),
            "CARD" => luhn_card(rng),
            "IBAN" => iban(rng),
            "JWT" => format!(
                "{}.{}.{}",
                b64url(br#"{"alg":"HS256","typ":"JWT"}"#),
                b64url(
                    format!(r#"{{"sub":"{}","iat":1700000000}}"#, pick(rng, b"0123456789", 10))
                        .as_bytes()
                ),
                pick(rng, b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789_-", 43)
            ),
            "X" => format!(
                "M{}.{}.{}",
                pick(rng, b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789", 23),
                pick(rng, b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789_-", 6),
                pick(rng, b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789_-", 38)
            ),
            other => panic!("unknown template kind {other}"),
        };
        out.push_str(&value);
        rest = &rest[close + 1..];
    }
    out.push_str(rest);
    out
}

#[test]
fn there_are_at_least_60_rules_with_unique_ids_and_they_compile() {
    assert!(BUILTIN.len() >= 60, "only {} rules", BUILTIN.len());
    let mut ids: Vec<_> = BUILTIN.iter().map(|r| r.id).collect();
    ids.sort();
    ids.dedup();
    assert_eq!(ids.len(), BUILTIN.len(), "duplicate rule ids");
    assert_eq!(Scanner::builtin().rule_count(), BUILTIN.len());
}

#[test]
fn every_rule_finds_its_true_positive_and_ignores_its_near_miss() {
    let scanner = Scanner::builtin();
    let mut rng = StdRng::seed_from_u64(7);
    let mut failures = Vec::new();
    for rule in BUILTIN {
        for round in 0..20 {
            let positive = fill(rule.example, &mut rng);
            let text = format!("some context before\n{positive}\nand after");
            let findings = scanner.scan(&text);
            if !findings.iter().any(|f| f.rule == rule.id) {
                failures.push(format!("{}: missed {positive:?} (round {round})", rule.id));
                break;
            }
            for f in findings.iter().filter(|f| f.rule == rule.id) {
                let secret = &text[f.start..f.end];
                if secret.len() > 8 && f.excerpt.contains(&secret[4..]) {
                    failures.push(format!("{}: excerpt leaks the secret", rule.id));
                }
            }
            let negative = fill(rule.near_miss, &mut rng);
            let text = format!("some context before\n{negative}\nand after");
            if scanner.scan(&text).iter().any(|f| f.rule == rule.id) {
                failures.push(format!("{}: matched its near miss {negative:?}", rule.id));
                break;
            }
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}

#[test]
fn findings_carry_a_stable_fingerprint_and_no_secret() {
    let scanner = Scanner::builtin();
    let secret = format!("ghp_{}", "a1B2c3D4e5F6g7H8i9J0k1L2m3N4o5P6q7R8");
    let a = scanner.scan(&format!("token={secret}"));
    let b = scanner.scan(&format!("x {secret} y"));
    assert_eq!(a[0].fingerprint, b[0].fingerprint);
    assert_eq!(a[0].fingerprint.len(), 16);
    assert!(!a[0].excerpt.contains(&secret[4..]));
    assert!(a[0].excerpt.starts_with("ghp_"));
}

#[test]
fn clean_prose_and_code_find_nothing() {
    let scanner = Scanner::builtin();
    let text = include_str!("../src/scanner.rs");
    let findings = scanner.scan(text);
    assert!(findings.is_empty(), "{findings:?}");
}

#[test]
fn adjacent_secrets_separated_by_one_character_are_each_found() {
    let scanner = Scanner::builtin();
    let a = format!("ghp_{}", "a1B2c3D4e5F6g7H8i9J0k1L2m3N4o5P6q7R8");
    let b = format!("ghp_{}", "Z9y8X7w6V5u4T3s2R1q0P9o8N7m6L5k4J3i2");
    for sep in [" ", ",", "\n", "\""] {
        let found = scanner.scan(&format!("{a}{sep}{b}"));
        assert_eq!(found.len(), 2, "{sep:?}: {found:?}");
    }
}
