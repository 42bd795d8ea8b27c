//! Tidy checks (rust-analyzer style): invariants of the tree itself, read from the sources,
//! the lock file, cargo's own feature resolution and the built `bottle-init`.
//!
//! Hazard: a rule that lives only in prose erodes one review at a time. Each rule here is
//! one that clippy cannot express: `#![forbid(unsafe_code)]` in every library but
//! runtime/proc, a `//!` module doc on every source file, one crypto provider, no
//! `tokio::process`, runtime/proc's clippy list in step with the workspace's, and no
//! fault injection in anything but a test build. Every failure names the file or package.
#![allow(clippy::disallowed_methods)] // runs `cargo metadata` and `cargo tree`; no reaper here

use std::path::{Path, PathBuf};
use std::process::Command;

/// The workspace root (tests/harness/../..).
fn root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../..").canonicalize().expect("workspace root")
}

/// Runs cargo (the one running these tests, when it says so) in the workspace root,
/// offline, and returns its stdout.
fn cargo(args: &[&str]) -> String {
    let cargo = std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into());
    let out = Command::new(cargo)
        .args(args)
        .arg("--offline")
        .current_dir(root())
        .output()
        .expect("run cargo");
    assert!(
        out.status.success(),
        "cargo {args:?} failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).expect("cargo prints UTF-8")
}

/// Workspace packages: (name, manifest directory, library source if it has a library).
fn packages() -> Vec<(String, PathBuf, Option<PathBuf>)> {
    let text = cargo(&["metadata", "--no-deps", "--format-version", "1"]);
    let metadata: serde_json::Value = serde_json::from_str(&text).expect("cargo metadata JSON");
    let packages = metadata["packages"].as_array().expect("packages").iter();
    packages
        .map(|package| {
            let name = package["name"].as_str().expect("name").to_string();
            let manifest = PathBuf::from(package["manifest_path"].as_str().expect("manifest"));
            let lib = package["targets"].as_array().expect("targets").iter().find_map(|t| {
                let kinds = t["kind"].as_array().expect("kind");
                let src = t["src_path"].as_str().expect("src_path");
                kinds.iter().any(|k| k == "lib").then(|| PathBuf::from(src))
            });
            (name, manifest.parent().expect("manifest dir").to_path_buf(), lib)
        })
        .collect()
}

/// Every `.rs` file in the workspace, outside `target/` and hidden directories.
fn rust_files(dir: &Path, found: &mut Vec<PathBuf>) {
    for entry in std::fs::read_dir(dir).expect("read dir").map(|e| e.expect("dir entry")) {
        let path = entry.path();
        let name = entry.file_name();
        let name = name.to_string_lossy();
        if entry.file_type().expect("file type").is_dir() {
            if name != "target" && !name.starts_with('.') {
                rust_files(&path, found);
            }
        } else if name.ends_with(".rs") {
            found.push(path);
        }
    }
}

/// `cargo tree --prefix none` lines `NAME vX (...) features=[a,b]` for package `name`,
/// over the given edge kinds, as feature lists.
fn resolved_features(name: &str, edges: &str) -> Vec<Vec<String>> {
    let text = cargo(&[
        "tree",
        "--workspace",
        "--target",
        "all",
        "--edges",
        edges,
        "--prefix",
        "none",
        "--format",
        "{p} features=[{f}]",
    ]);
    text.lines()
        .filter(|line| line.split(' ').next() == Some(name))
        .map(|line| {
            let list = line.split("features=[").nth(1).and_then(|rest| rest.split(']').next());
            list.unwrap_or("").split(',').filter(|f| !f.is_empty()).map(str::to_string).collect()
        })
        .collect()
}

#[test]
fn every_library_crate_forbids_unsafe_code_except_runtime_proc() {
    let mut checked = 0;
    for (name, dir, lib) in packages() {
        let Some(lib) = lib else { continue };
        if dir.ends_with("runtime/proc") {
            continue;
        }
        let source = std::fs::read_to_string(&lib).expect("read lib.rs");
        assert!(
            source.lines().any(|line| line.trim() == "#![forbid(unsafe_code)]"),
            "{name}: {} lacks #![forbid(unsafe_code)] (only runtime/proc may use unsafe)",
            lib.display()
        );
        checked += 1;
    }
    assert!(checked >= 5, "found only {checked} library crates: is cargo metadata parsed?");
}

#[test]
fn every_rust_source_file_starts_with_a_module_doc() {
    let mut files = Vec::new();
    rust_files(&root(), &mut files);
    assert!(files.len() > 50, "found only {} .rs files under {}", files.len(), root().display());
    let undocumented: Vec<String> = files
        .iter()
        .filter(|path| {
            let text = std::fs::read_to_string(path).expect("read source");
            !text.starts_with("//!")
        })
        .map(|path| path.strip_prefix(root()).unwrap_or(path).display().to_string())
        .collect();
    assert!(
        undocumented.is_empty(),
        "these files do not start with a //! module doc (what it is, then the hazard): {undocumented:#?}"
    );
}

#[test]
fn the_lock_file_has_one_crypto_provider_ring() {
    let lock = std::fs::read_to_string(root().join("Cargo.lock")).expect("read Cargo.lock");
    let names: Vec<&str> =
        lock.lines().filter_map(|line| line.strip_prefix("name = \"")?.strip_suffix('"')).collect();
    assert!(names.contains(&"ring"), "ring, the one crypto provider, is missing from Cargo.lock");
    let others = ["aws-lc-rs", "aws-lc-sys", "aws-lc-fips-sys", "openssl", "openssl-sys", "boring"];
    let found: Vec<&&str> =
        names.iter().filter(|n| others.contains(n) || n.starts_with("boring-")).collect();
    assert!(
        found.is_empty(),
        "Cargo.lock has a second crypto provider {found:?}: rustls would refuse to pick a \
         default, and aws-lc doubles release build time (`cargo tree -i NAME` shows who pulls it)"
    );
}

#[test]
fn tokio_process_cannot_compile_anywhere() {
    // Every edge kind: not even a test may link tokio::process beside a reaper.
    let resolved = resolved_features("tokio", "normal,build,dev");
    assert!(!resolved.is_empty(), "tokio is not in the tree: is cargo tree parsed?");
    for features in resolved {
        assert!(features.contains(&"rt".to_string()), "tokio resolved without rt: {features:?}");
        assert!(
            !features.iter().any(|f| f == "process" || f == "full"),
            "tokio's \"process\" feature is on ({features:?}): tokio::process waits on its own \
             children and races the single reaper. `cargo tree -e features -i tokio` shows who \
             enables it"
        );
    }
}

#[test]
fn runtime_proc_clippy_list_is_the_workspace_list_without_process_control() {
    let entries = |path: PathBuf| -> Vec<String> {
        let text = std::fs::read_to_string(&path).expect("read clippy.toml");
        text.lines().map(str::trim).filter(|l| l.starts_with("{ path")).map(String::from).collect()
    };
    let workspace = entries(root().join("clippy.toml"));
    let proc = entries(root().join("runtime/proc/clippy.toml"));
    let expected: Vec<String> = workspace
        .iter()
        .filter(|e| !e.contains("reason = \"outside runtime/proc"))
        .cloned()
        .collect();
    assert!(expected.len() >= 10 && expected.len() < workspace.len(), "{workspace:#?}");
    assert_eq!(
        proc, expected,
        "runtime/proc/clippy.toml must list every workspace entry except those whose reason \
         starts \"outside runtime/proc\", in the same order"
    );
}

/// Feature resolution does not depend on the profile, so this covers release builds too:
/// `cargo build --release -p bottle-init` and `cargo build --release --workspace --bins`
/// resolve exactly the normal and build edges checked here. The dev edges must turn the
/// feature on (the integration tests need it): that half proves the parse is not vacuous.
#[test]
fn only_test_builds_resolve_fault_injection() {
    let shipped = resolved_features("bottle-runtime", "normal,build");
    assert!(!shipped.is_empty(), "bottle-runtime is not in the tree: is cargo tree parsed?");
    for features in &shipped {
        assert!(
            !features.iter().any(|f| f == "fault-injection"),
            "a non-test build resolves bottle-runtime with fault-injection ({features:?}): some \
             package takes it as a normal dependency, and every binary of the workspace build \
             would link it. Take it as a [dev-dependencies] entry"
        );
    }
    let tests = resolved_features("bottle-runtime", "normal,build,dev");
    assert!(
        tests.iter().any(|f| f.iter().any(|f| f == "fault-injection")),
        "no test build enables fault-injection any more: {tests:?}"
    );
}

/// The artifact itself: the `bottle-init` that `cargo build --workspace --bins` (as
/// scripts/test runs it) leaves beside this test, which the PID-1 and container tests
/// run. Fault injection's exec fault names a marker path; it is in the binary exactly when
/// the fault code is linked (checked by hand: the binary built before the fix had it).
/// A release build is too slow to make here; `only_test_builds_resolve_fault_injection`
/// covers it through feature resolution.
#[test]
fn the_built_bottle_init_contains_no_fault_injection() {
    let path = PathBuf::from(bottle_tests::sibling_binary("bottle-init"));
    let binary = std::fs::read(&path).unwrap_or_else(|err| {
        panic!("{}: {err} (build it first: cargo build --workspace --bins)", path.display())
    });
    let marker = bottle_runtime::fault::MISSING_PROGRAM.as_bytes();
    assert!(
        memchr::memmem::find(&binary, marker).is_none(),
        "{} contains fault injection (the marker {:?}): a shipped binary was built with the \
         fault-injection feature",
        path.display(),
        bottle_runtime::fault::MISSING_PROGRAM
    );
}
