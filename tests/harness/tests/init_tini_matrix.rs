//! The tini / dumb-init test matrix applied to bottle-init in single-program mode
//! (`bottle-init -- PROGRAM`), as PID 1 of a fresh PID namespace: exit-code sweep,
//! signal exits, exec failures, orphan reaping of double-forked grandchildren, a child
//! ignoring SIGTERM, signals reaching the child's process group, and a clean signal
//! mask and dispositions in the child.
#![allow(clippy::disallowed_methods)] // drives unshare and bottle-init; no reaper in this process

use std::time::{Duration, Instant};

use bottle_tests::external::{
    Guarded, TempDir, bottle_init, children_matching, command, init_under, output,
};
use bottle_tests::testchild_path;

fn pid1(args: &[&str]) -> std::process::Command {
    let mut cmd = command("unshare");
    cmd.args(["--pid", "--fork", "--mount-proc"]).arg(bottle_init());
    cmd.args(args);
    cmd
}

fn run(args: &[&str]) -> (i32, String, String) {
    let out = output(&mut pid1(args));
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

fn tc() -> String {
    testchild_path().to_str().unwrap().to_string()
}

#[test]
fn every_exit_code_of_the_program_is_passed_through() {
    for code in 0..=255 {
        let (got, _, err) = run(&["--", &tc(), "exit", &code.to_string()]);
        assert_eq!(got, code, "exit {code}: {err}");
    }
}

#[test]
fn a_program_killed_by_signal_n_gives_128_plus_n() {
    for signal in [
        libc::SIGHUP,
        libc::SIGINT,
        libc::SIGQUIT,
        libc::SIGKILL,
        libc::SIGSEGV,
        libc::SIGTERM,
        libc::SIGUSR1,
    ] {
        let script = format!("kill -{signal} $$");
        let (got, _, err) = run(&["--", "/bin/sh", "-c", &script]);
        assert_eq!(got, 128 + signal, "signal {signal}: {err}");
    }
}

#[test]
fn exec_failures_are_127_and_126() {
    let (missing, _, err) = run(&["--", "/nonexistent/program"]);
    assert_eq!(missing, 127, "{err}");
    assert!(err.contains("program not found"), "{err}");
    let dir = TempDir::new("noexec");
    let file = dir.join("script");
    std::fs::write(&file, "#!/bin/sh\n").unwrap();
    let (denied, _, err) = run(&["--", file.to_str().unwrap()]);
    assert_eq!(denied, 126, "{err}");
}

#[test]
fn double_forked_grandchildren_are_reaped() {
    let dir = TempDir::new("orphans");
    let report = dir.join("report.json");
    let script = format!("{tc} orphans 5 0; {tc} orphans 5 0; sleep 0.5", tc = tc());
    let (code, _, err) =
        run(&["--exit-report", report.to_str().unwrap(), "--", "/bin/sh", "-c", &script]);
    assert_eq!(code, 0, "{err}");
    let report: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&report).unwrap()).unwrap();
    assert_eq!(report["orphans_reaped"], 10, "{report}");
}

#[test]
fn a_program_ignoring_sigterm_is_killed_within_the_grace() {
    let mut cmd = pid1(&["--grace", "1.5", "--", &tc(), "ignore-term", "600"]);
    let unshare = Guarded::spawn(&mut cmd);
    let upid = unshare.pid();
    let init = init_under(upid, |init| {
        children_matching(init, "ignore-term")
            .first()
            .is_some_and(|&p| bottle_tests::has_handler(p, libc::SIGTERM))
    });
    let t0 = Instant::now();
    bottle_tests::external::signal(init, libc::SIGTERM);
    let (status, _, err) = unshare.wait(Duration::from_secs(10));
    let took = t0.elapsed();
    assert!(
        took >= Duration::from_millis(1000) && took < Duration::from_millis(2500),
        "took {took:?}: {err}"
    );
    // Killed by our own escalation during a requested stop: clean (tini would say 137).
    assert_eq!(status.and_then(|s| s.code()), Some(0), "{err}");
}

#[test]
fn signals_reach_the_programs_whole_process_group() {
    // HUP is forwarded to the group: both the shell and its child see it.
    let script = format!("trap 'exit 7' HUP; {} sleep 600 & wait; exit 9", tc());
    let mut cmd = pid1(&["--", "/bin/sh", "-c", &script]);
    let unshare = Guarded::spawn(&mut cmd);
    let upid = unshare.pid();
    let init = init_under(upid, |init| {
        children_matching(init, "/bin/sh")
            .first()
            .is_some_and(|&sh| !children_matching(sh, "sleep 600").is_empty())
    });
    let sh = children_matching(init, "/bin/sh")[0];
    let grandchild = children_matching(sh, "sleep 600")[0];
    bottle_tests::external::signal(init, libc::SIGHUP);
    let (status, _, err) = unshare.wait(Duration::from_secs(10));
    assert_eq!(status.and_then(|s| s.code()), Some(7), "{err}");
    assert!(
        !std::path::Path::new(&format!("/proc/{grandchild}")).exists(),
        "the grandchild missed the HUP"
    );
}

#[test]
fn the_program_starts_with_an_empty_signal_mask_and_no_ignored_signals() {
    let (code, out, err) = run(&["--", "/bin/grep", "^Sig", "/proc/self/status"]);
    assert_eq!(code, 0, "{err}");
    assert!(out.contains("[grep] SigBlk:\t0000000000000000"), "{out}");
    assert!(out.contains("[grep] SigIgn:\t0000000000000000"), "{out}");
}
