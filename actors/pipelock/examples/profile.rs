//! Profiles the outbound pipeline on a file: `cargo run --release -p bottle-pipelock
//! --example profile -- FILE [ROUNDS]` (for perf; the benchmark proper is bottle-bench).
use bottle_pipelock::{Detectors, Pipelock};

#[allow(clippy::print_stdout)] // the throughput is this example's output
fn main() {
    let mut args = std::env::args().skip(1);
    let path = args.next().unwrap_or_else(|| "/usr/share/common-licenses/GPL-3".into());
    let rounds: usize = args.next().and_then(|r| r.parse().ok()).unwrap_or(200);
    let text = std::fs::read_to_string(&path).unwrap_or_default();
    let p = Pipelock::new(&[], &[]).unwrap_or_else(|e| panic!("{e}"));
    let t0 = std::time::Instant::now();
    let mut n = 0;
    for _ in 0..rounds {
        n += p.scan_body(&text, Detectors::ALL).len();
    }
    let secs = t0.elapsed().as_secs_f64();
    println!("{n} findings, {:.0} MB/s", (text.len() * rounds) as f64 / 1e6 / secs);
}
