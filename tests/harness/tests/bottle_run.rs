//! `bottle run` end to end, through the built binary: exit codes, usage errors, and the
//! commands that act on a running bottle (`ps`, `exec`, `logs`, `stop`). Each test has
//! its own state folder and checks that the bottle left nothing behind.

use std::time::Duration;

use bottle_tests::bottle_run::{Ending, Fixture, LAUNCH_WAIT, assert_torn_down};

#[test]
fn the_agents_own_exit_code_passes_through_and_nothing_is_left() {
    let fx = Fixture::with_api("run-code");
    let file = fx.bottle("code", "");
    let launched = fx.launch(&file, "echo agent-ran; exit 3");
    let (finished, seen) = launched.wait(LAUNCH_WAIT);
    assert_eq!(finished.code, Some(3), "{finished:?}");
    assert!(finished.stdout.contains("agent-ran"), "{finished:?}");
    let ids = fx.ids();
    assert_eq!(ids.len(), 1);
    // The checks below can fail: the watcher saw the sidecar, the helper and a sandbox.
    assert_eq!(seen.matching("bottle-init --config").len(), 1, "{seen:?}");
    assert!(!seen.matching("bottle-sandbox").is_empty(), "{seen:?}");
    assert!(!seen.namespaces.is_empty(), "the watcher saw no sandbox: {seen:?}");
    assert_torn_down(&fx, &seen, &ids, Ending::Exited(3));
}

#[test]
fn an_agent_killed_by_a_signal_exits_128_plus_the_signal() {
    let fx = Fixture::new("run-signal");
    let file = fx.bottle("signal", "");
    let (finished, seen) = fx.launch(&file, "kill -KILL $$").wait(LAUNCH_WAIT);
    assert_eq!(finished.code, Some(137), "{finished:?}");
    let ids = fx.ids();
    assert_torn_down(&fx, &seen, &ids, Ending::Exited(137));
}

#[test]
fn a_missing_command_exits_127_and_one_that_cannot_run_exits_126() {
    let fx = Fixture::new("run-127");
    let file = fx.bottle("missing", "");
    std::fs::write(fx.workspace().join("not-executable"), "#!/bin/sh\nexit 0\n").unwrap();
    for (program, code, says) in [
        ("/no/such/program", 127, "start the agent"),
        ("/workspace/not-executable", 126, "start the agent"),
    ] {
        let args = [
            "run",
            "--workspace",
            &fx.workspace().display().to_string(),
            &file.display().to_string(),
            "--",
            program,
        ]
        .map(String::from);
        let refs: Vec<&str> = args.iter().map(String::as_str).collect();
        let (finished, seen) = fx.launch_args(&refs).wait(LAUNCH_WAIT);
        assert_eq!(finished.code, Some(code), "{program}: {finished:?}");
        assert!(finished.stderr.contains(says), "{program}: {}", finished.stderr);
        let ids = fx.ids();
        assert_torn_down(&fx, &seen, &ids, Ending::Exited(code));
        for id in ids {
            std::fs::remove_dir_all(fx.bottle_dir(&id)).unwrap();
        }
    }
}

#[test]
fn usage_errors_exit_2_before_anything_is_made() {
    let fx = Fixture::new("run-usage");
    let good = fx.bottle("good", "").display().to_string();
    let bad = fx.dir.join("bottles/bad.md");
    std::fs::write(&bad, "---\negress:\n  rutes: []\n---\n").unwrap();
    let bad = bad.display().to_string();
    let missing_ws = fx.dir.join("no-such-dir").display().to_string();
    let cases: [(&[&str], &str); 5] = [
        (&["run", &good], "no command"),
        (&["run", &bad, "--", "true"], "unknown key `egress.rutes`"),
        (&["run", "no-such-bottle", "--", "true"], "no-such-bottle"),
        (&["run", "--workspace", &missing_ws, &good, "--", "true"], "workspace"),
        (&["run", "--frobnicate", &good, "--", "true"], "--frobnicate"),
    ];
    for (args, says) in cases {
        let finished = fx.bottle_cli(args);
        assert_eq!(finished.code, Some(2), "{args:?}: {finished:?}");
        assert!(finished.stderr.contains(says), "{args:?}: {}", finished.stderr);
    }
    assert!(fx.records().is_empty(), "a usage error made a bottle: {:?}", fx.records());
}

#[test]
fn ps_exec_logs_and_stop_act_on_a_running_bottle() {
    let fx = Fixture::with_api("run-manage");
    let file = fx.bottle("manage", "");
    let launched = fx.launch(&file, "echo note-from-the-agent > /tmp/agent-note; wait_for never");
    let record = fx.wait_record(LAUNCH_WAIT, |r| r["phase"] == "running");
    let id = record["id"].as_str().unwrap().to_string();

    let ps = fx.bottle_cli(&["ps", "--json"]);
    assert_eq!(ps.code, Some(0), "{ps:?}");
    assert!(ps.stderr.is_empty(), "ps warned: {}", ps.stderr);
    let rows: serde_json::Value = serde_json::from_str(&ps.stdout).expect("ps json");
    let rows = rows.as_array().expect("rows");
    assert_eq!(rows.len(), 1, "{rows:?}");
    assert_eq!(rows[0]["id"], id.as_str());
    assert_eq!(rows[0]["state"], "running");
    assert_eq!(rows[0]["backend"], "local");
    assert_eq!(rows[0]["launcher"]["pid"], launched.pid());

    let exec = fx.bottle_cli(&[
        "exec",
        &id,
        "--",
        "/bin/sh",
        "-c",
        "cat /tmp/agent-note; hostname; exit 7",
    ]);
    assert_eq!(exec.code, Some(7), "{exec:?}");
    assert!(exec.stdout.contains("note-from-the-agent"), "exec saw another /tmp: {exec:?}");
    assert!(exec.stdout.contains(&id), "exec ran outside the bottle (hostname): {exec:?}");

    let logs = fx.bottle_cli(&["logs", &id]);
    assert_eq!(logs.code, Some(0), "{logs:?}");
    assert!(logs.stdout.contains("Egress proxy listening."), "{logs:?}");
    assert!(logs.stdout.contains("bottle-init started."), "{logs:?}");

    launched.watcher.sync();
    let stop = fx.bottle_cli(&["stop", &id]);
    assert_eq!(stop.code, Some(0), "{stop:?}");
    assert!(stop.stdout.contains("Exited { code: 130 }"), "{stop:?}");
    let (finished, seen) = launched.wait(Duration::from_secs(20));
    assert_eq!(finished.code, Some(130), "stop is an interrupt: {finished:?}");
    assert!(finished.stderr.contains("interrupted"), "{}", finished.stderr);
    assert_torn_down(&fx, &seen, std::slice::from_ref(&id), Ending::Exited(130));

    let ps = fx.bottle_cli(&["ps", "--json"]);
    assert_eq!(ps.stdout.trim(), "[]", "an exited bottle is listed without --all: {ps:?}");
    let unknown = fx.bottle_cli(&["exec", "nope-00000000", "--", "true"]);
    assert_ne!(unknown.code, Some(0));
    assert!(unknown.stderr.contains("no bottle \"nope-00000000\""), "{unknown:?}");
}
