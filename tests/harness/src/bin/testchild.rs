//! A small, well-behaved (or deliberately badly behaved) child for the runtime tests.
//!
//! `bottle-testchild MODE [ARGS]`; every mode is deterministic so tests can assert
//! exact outcomes. Modes:
//! - `exit CODE`: exit at once with CODE.
//! - `sleep SECS`: sleep, then exit 0.
//! - `ignore-term SECS`: ignore SIGTERM, sleep, exit 0.
//! - `lines N`: print N numbered lines to stdout and N to stderr, then a partial line
//!   without a newline, then exit 0.
//! - `notify-fd FD DELAY_MS`: after DELAY_MS write a newline to FD, then sleep.
//! - `sd-notify DELAY_MS`: after DELAY_MS send `READY=1` to $NOTIFY_SOCKET, then sleep.
//! - `tcp ADDR DELAY_MS`: after DELAY_MS listen on ADDR, then sleep.
//! - `unix PATH DELAY_MS`: after DELAY_MS listen on the unix socket PATH, then sleep.
//! - `env`: print the environment, one `K=V` per line, then sleep.
//! - `sigstatus`: print the SigBlk/SigIgn/SigCgt lines of /proc/self/status, then sleep.
//! - `orphans N SECS`: start N children that sleep SECS, then exit at once (orphaning them).
//! - `exit-on-usr1 FILE`: sleep until SIGUSR1, then exit with the code written in FILE.

use std::io::Write;
use std::time::Duration;

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let arg = |i: usize| args.get(i).cloned().unwrap_or_default();
    let num = |i: usize| arg(i).parse::<u64>().unwrap_or(0);
    match arg(0).as_str() {
        "exit" => finish(arg(1).parse().unwrap_or(1)),
        "sleep" => nap(num(1)),
        "ignore-term" => {
            let mut signals = signal_hook::iterator::Signals::new([signal_hook::consts::SIGTERM])
                .expect("register SIGTERM");
            std::thread::spawn(move || for _ in signals.forever() {});
            nap(num(1));
        }
        "lines" => {
            let n = num(1);
            let out = std::io::stdout();
            let err = std::io::stderr();
            for i in 0..n {
                let _ = writeln!(out.lock(), "out line {i} {}", "x".repeat(64));
                let _ = writeln!(err.lock(), "err line {i} {}", "y".repeat(64));
            }
            let _ = write!(out.lock(), "partial tail");
            let _ = out.lock().flush();
            finish(0);
        }
        "notify-fd" => {
            std::thread::sleep(Duration::from_millis(num(2)));
            let fd: i32 = arg(1).parse().unwrap_or(3);
            let path = format!("/proc/self/fd/{fd}");
            let mut file = std::fs::OpenOptions::new().write(true).open(path).expect("notify fd");
            let _ = file.write_all(b"\n");
            drop(file);
            nap(3600);
        }
        "sd-notify" => {
            std::thread::sleep(Duration::from_millis(num(1)));
            let socket = std::env::var("NOTIFY_SOCKET").expect("NOTIFY_SOCKET");
            let sock = std::os::unix::net::UnixDatagram::unbound().expect("socket");
            sock.send_to(b"STATUS=starting\nREADY=1\n", socket).expect("send");
            nap(3600);
        }
        "tcp" => {
            std::thread::sleep(Duration::from_millis(num(2)));
            let _listener = std::net::TcpListener::bind(arg(1)).expect("bind");
            nap(3600);
        }
        "unix" => {
            std::thread::sleep(Duration::from_millis(num(2)));
            let _listener = std::os::unix::net::UnixListener::bind(arg(1)).expect("bind");
            nap(3600);
        }
        "env" => {
            let mut out = std::io::stdout().lock();
            for (k, v) in std::env::vars_os() {
                let _ = writeln!(out, "{}={}", k.to_string_lossy(), v.to_string_lossy());
            }
            let _ = out.flush();
            drop(out);
            nap(3600);
        }
        "sigstatus" => {
            let status = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
            let mut out = std::io::stdout().lock();
            for line in status.lines().filter(|l| l.starts_with("Sig")) {
                let _ = writeln!(out, "{line}");
            }
            let _ = out.flush();
            drop(out);
            nap(3600);
        }
        "orphans" => {
            // Start N children that sleep SECS, then exit without waiting: they are
            // re-parented to the nearest subreaper (or PID 1).
            let n = num(1);
            let me = std::env::current_exe().expect("exe");
            for _ in 0..n {
                #[allow(clippy::disallowed_methods)] // a test helper making orphans on purpose
                let _ = std::process::Command::new(&me).args(["sleep", &arg(2)]).spawn();
            }
            finish(0);
        }
        "exit-on-usr1" => {
            let mut signals = signal_hook::iterator::Signals::new([signal_hook::consts::SIGUSR1])
                .expect("register SIGUSR1");
            let _ = signals.forever().next();
            let code = std::fs::read_to_string(arg(1)).ok().and_then(|s| s.trim().parse().ok());
            finish(code.unwrap_or(1));
        }
        other => usage(other),
    }
}

#[allow(clippy::print_stderr)] // a usage error of a test helper binary
fn usage(mode: &str) -> ! {
    eprintln!("bottle-testchild: unknown mode {mode:?}");
    finish(2)
}

fn nap(secs: u64) {
    std::thread::sleep(Duration::from_secs(secs));
    finish(0);
}

#[allow(clippy::exit, clippy::disallowed_methods)] // a test helper binary: it decides its own exit
fn finish(code: i32) -> ! {
    let _ = std::io::stdout().flush();
    std::process::exit(code)
}
