//! One benchmark run for docs/benchmarks.md: clone and push of a generated repository
//! (about 50 MB of file data, 3000 commits) through the gate against directly to the
//! same HTTPS upstream, and the push scanner's throughput on the same new blobs.
//!
//! `cargo run --release -p bottle-git-gate --example gate_bench`
#![allow(clippy::print_stdout)] // a benchmark binary reports on stdout

#[path = "../tests/common/mod.rs"]
mod common;

use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};

use bottle_git_gate::process::Git;
use bottle_git_gate::scan::{ObjectView, ScanLimits, ScanOutcome, scan_new_blobs};
use common::{Fixture, run, run_raw};

const COMMITS: usize = 3000;
const FILES: usize = 400;

/// A fast-import stream: COMMITS commits, each rewriting a few of FILES text files.
fn fast_import_stream() -> (Vec<u8>, u64) {
    use rand::{Rng, SeedableRng};
    let mut rng = rand::rngs::StdRng::seed_from_u64(7);
    let words: Vec<String> = (0..4000)
        .map(|_| {
            (0..rng.random_range(3..10)).map(|_| rng.random_range(b'a'..=b'z') as char).collect()
        })
        .collect();
    let mut out = Vec::new();
    let mut total = 0u64;
    for c in 0..COMMITS {
        let mut changes = Vec::new();
        for _ in 0..3 {
            let file = rng.random_range(0..FILES);
            let mut text = String::new();
            while text.len() < 5600 {
                text.push_str(&words[rng.random_range(0..words.len())]);
                text.push(if rng.random_range(0..12) == 0 { '\n' } else { ' ' });
            }
            total += text.len() as u64;
            changes.push((format!("src/mod{}/file{file}.txt", file % 20), text));
        }
        let message = format!("commit {c}\n");
        out.extend(format!("commit refs/heads/main\ncommitter Bench <b@example.com> {} +0000\ndata {}\n{message}", 1_700_000_000 + c, message.len()).into_bytes());
        for (path, text) in changes {
            out.extend(format!("M 100644 inline {path}\ndata {}\n", text.len()).into_bytes());
            out.extend(text.into_bytes());
            out.push(b'\n');
        }
        out.push(b'\n');
    }
    (out, total)
}

async fn timed(git: &Git, dir: &Path, args: &[&str]) -> Duration {
    let start = Instant::now();
    let out = run_raw(git, dir, args).await;
    assert!(out.status.success(), "git {args:?}: {}", out.stderr);
    start.elapsed()
}

fn direct_auth(fx: &Fixture) -> Vec<String> {
    vec![
        "-c".into(),
        format!("http.extraHeader=Authorization: {}", common::expected_authorization()),
        "-c".into(),
        format!("http.sslCAInfo={}", fx.upstream.ca_file.display()),
    ]
}

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() {
    let fx = Fixture::start(|s, up| {
        for name in ["bench", "pushed"] {
            let mut repo = s.repos["demo"].clone();
            repo.url = up.url(name);
            s.repos.insert(name.into(), repo);
        }
        s.max_body_bytes = 512 * 1024 * 1024;
        s.upstream_timeout_seconds = 600;
        s.scan_timeout_seconds = 600;
    })
    .await;
    let tmp = fx.tmp.path();
    let (stream, data_bytes) = fast_import_stream();
    let src = tmp.join("src");
    std::fs::create_dir_all(&src).unwrap();
    run(&fx.git, &src, &["init", "-q", "-b", "main"]).await;
    let out = fx
        .git
        .command("fast-import", ["fast-import", "--quiet"])
        .cwd(&src)
        .output(Some(&stream), 1 << 20)
        .await
        .unwrap();
    assert!(out.status.success(), "{}", out.stderr);
    run(&fx.git, &src, &["gc", "-q", "--aggressive"]).await;
    let pack: u64 = std::fs::read_dir(src.join(".git/objects/pack"))
        .unwrap()
        .map(|e| e.unwrap().metadata().unwrap().len())
        .sum();
    println!(
        "repository: {COMMITS} commits, {} MB of file data, pack {} MB",
        data_bytes / 1_000_000,
        pack / 1_000_000
    );
    for name in ["bench", "pushed", "pushed-direct"] {
        fx.upstream.create(name).await;
    }
    run(
        &fx.git,
        &src,
        &["push", "-q", fx.upstream.root.join("bench.git").to_str().unwrap(), "main"],
    )
    .await;

    // Clone: direct, through the gate cold (mirror empty) and warm.
    let auth = direct_auth(&fx);
    let mut args: Vec<&str> = auth.iter().map(String::as_str).collect();
    let direct_url = fx.upstream.url("bench");
    let gate_url = fx.url("bench");
    let mut direct = Vec::new();
    let mut warm = Vec::new();
    let cold = timed(&fx.git, tmp, &["clone", "-q", "--bare", &gate_url, "c-cold"]).await;
    for i in 0..3 {
        let d = format!("c-direct-{i}");
        let mut a = args.clone();
        a.extend(["clone", "-q", "--bare", direct_url.as_str(), d.as_str()]);
        direct.push(timed(&fx.git, tmp, &a).await);
        let w = format!("c-warm-{i}");
        warm.push(timed(&fx.git, tmp, &["clone", "-q", "--bare", &gate_url, &w]).await);
    }
    let best = |v: &[Duration]| v.iter().min().copied().unwrap();
    println!(
        "clone: direct {:.2} s, gate warm {:.2} s ({:.2}x), gate cold {:.2} s (best of 3; cold once)",
        best(&direct).as_secs_f64(),
        best(&warm).as_secs_f64(),
        best(&warm).as_secs_f64() / best(&direct).as_secs_f64(),
        cold.as_secs_f64()
    );

    // Push the whole history into empty repositories: direct, and through the gate.
    let pushed_direct = fx.upstream.url("pushed-direct");
    args.extend(["push", "-q", pushed_direct.as_str(), "main"]);
    let push_direct = timed(&fx.git, &src, &args).await;
    let start = Instant::now();
    let out = run_raw(&fx.git, &src, &["push", &fx.url("pushed"), "main"]).await;
    let push_gate = start.elapsed();
    assert!(out.status.success(), "{}", out.stderr);
    let scanned =
        out.stderr.lines().find(|l| l.contains("scanned")).unwrap_or("").trim().to_string();
    println!(
        "push: direct {:.2} s, gate {:.2} s ({:.2}x); {scanned}",
        push_direct.as_secs_f64(),
        push_gate.as_secs_f64(),
        push_gate.as_secs_f64() / push_direct.as_secs_f64()
    );

    // The scanner alone over the same blobs: a copy of the repository with no refs.
    let scan_repo = tmp.join("scan.git");
    run(
        &fx.git,
        tmp,
        &["clone", "-q", "--bare", src.to_str().unwrap(), scan_repo.to_str().unwrap()],
    )
    .await;
    let head = run(&fx.git, &scan_repo, &["rev-parse", "HEAD"]).await;
    run(&fx.git, &scan_repo, &["update-ref", "-d", "refs/heads/main"]).await;
    let pipelock = Arc::new(bottle_pipelock::Pipelock::new(&[], &[]).unwrap());
    let view = ObjectView { git_dir: scan_repo.display().to_string(), env: Vec::new() };
    let limits =
        ScanLimits { max_blob: 32 << 20, max_total: 1 << 30, timeout: Duration::from_secs(600) };
    let start = Instant::now();
    let outcome = scan_new_blobs(&fx.git, &view, &[head], &pipelock, limits).await.unwrap();
    let took = start.elapsed();
    let ScanOutcome::Scanned { findings, blobs, bytes } = outcome else { panic!("{outcome:?}") };
    println!(
        "scan: {blobs} blobs, {:.1} MB in {:.2} s = {:.1} MB/s, {} findings",
        bytes as f64 / 1e6,
        took.as_secs_f64(),
        bytes as f64 / 1e6 / took.as_secs_f64(),
        findings.len()
    );
    fx.node.shutdown("bench done");
}
