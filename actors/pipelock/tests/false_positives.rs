//! The false-positive budget, measured on real text nobody wrote for this purpose: the
//! sources of the crates in the local cargo registry (Rust code, docs, tests) and
//! /usr/share/doc. Budget: under 1 finding per 10 MB, through the whole outbound
//! pipeline (every normalization step, joined JSON fields). The inbound injection
//! scanner runs over the same text: under 1 high-confidence finding per 10 MB. The rates
//! are printed.

use std::path::{Path, PathBuf};

use bottle_pipelock::{Confidence, Detectors, Pipelock};

const LIMIT: usize = 40 * 1024 * 1024;

fn collect(root: &Path, exts: &[&str], out: &mut Vec<PathBuf>) {
    let Ok(entries) = std::fs::read_dir(root) else { return };
    let mut entries: Vec<_> = entries.flatten().map(|e| e.path()).collect();
    entries.sort();
    for path in entries {
        if path.is_dir() {
            collect(&path, exts, out);
        } else if path.extension().and_then(|e| e.to_str()).is_some_and(|e| exts.contains(&e)) {
            out.push(path);
        }
    }
}

#[test]
#[allow(clippy::print_stdout)] // the measured rate and the hits are the report of this test
fn false_positive_rate_on_real_text_is_under_one_per_10_mb() {
    let mut files = Vec::new();
    let home = std::env::var_os("CARGO_HOME").map(PathBuf::from).unwrap_or_else(|| {
        PathBuf::from(std::env::var_os("HOME").unwrap_or_default()).join(".cargo")
    });
    collect(&home.join("registry/src"), &["rs", "md", "toml"], &mut files);
    collect(Path::new("/usr/share/doc"), &["txt", "md", "html", "copyright"], &mut files);
    let pipelock = Pipelock::new(&[], &[]).unwrap();
    let (mut bytes, mut hits, mut keys) = (0usize, Vec::new(), 0usize);
    let mut injections = Vec::new();
    for file in files {
        if bytes >= LIMIT {
            break;
        }
        let Ok(text) = std::fs::read_to_string(&file) else { continue };
        // Test fixtures full of deliberate keys are not "text nobody wrote for this".
        let name = file.to_string_lossy();
        if name.contains("/tests/") || name.contains("/testdata/") || name.contains("test_") {
            continue;
        }
        bytes += text.len();
        for f in pipelock.scan_body(&text, Detectors::ALL) {
            // A PEM private key in a crate's docs is a real private key (an example one):
            // a true positive, reported but not counted as a false alarm.
            if f.rule.ends_with("private-key") {
                keys += 1;
                continue;
            }
            hits.push(format!("{} ({}) {} {}", f.rule, f.encoding, file.display(), f.excerpt));
        }
        for f in pipelock.scan_inbound(&text) {
            if f.confidence == Confidence::High {
                injections.push(format!("{} {} {:?}", f.rule, file.display(), f.excerpt));
            }
        }
    }
    let per_10mb = hits.len() as f64 / (bytes as f64 / 10e6);
    println!(
        "scanned {:.1} MB, {} false positives ({:.2} per 10 MB), {keys} embedded example private keys",
        bytes as f64 / 1e6,
        hits.len(),
        per_10mb
    );
    for h in hits.iter().take(40) {
        println!("  {h}");
    }
    let injection_per_10mb = injections.len() as f64 / (bytes as f64 / 10e6);
    println!(
        "inbound: {} high-confidence injection findings ({injection_per_10mb:.2} per 10 MB)",
        injections.len()
    );
    for h in injections.iter().take(40) {
        println!("  {h}");
    }
    assert!(bytes > 5 * 1024 * 1024, "not enough text to measure: {bytes} bytes");
    assert!(injection_per_10mb < 1.0, "{} injection findings", injections.len());
    assert!(per_10mb < 1.0, "{} findings in {:.1} MB", hits.len(), bytes as f64 / 1e6);
}
