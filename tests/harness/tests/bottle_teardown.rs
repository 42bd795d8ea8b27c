//! Teardown of a real bottle leaves no process, mount, namespace, lock or live state,
//! however the launch ends: a failure at each step (injected from outside, through
//! companions in `BOTTLE_LIBEXEC` that fail, are missing or block), Ctrl-C at each step
//! that can be waited in, SIGKILL of the sidecar, and SIGKILL of the launcher followed by
//! `bottle cleanup`. No fixed sleeps: each interrupt is sent once the state folder or a
//! wrapper's marker shows the step was reached.

use std::time::Duration;

use bottle_tests::bottle_run::{
    Ending, Fixture, LAUNCH_WAIT, Launched, TOKEN_VAR, assert_torn_down, wait_for_path,
};

/// A wrapper body that marks `$DIR/<name>.reached`, then waits (at most 30 s) for
/// `$DIR/go` before running the real program.
fn blocking(name: &str) -> String {
    format!(
        "touch \"$DIR/{name}.reached\"\nn=0\nwhile [ ! -e \"$DIR/go\" ] && [ $n -lt 600 ]; do n=$((n+1)); sleep 0.05; done\nexec \"$REAL\" \"$@\""
    )
}

fn expect_failure(fx: &Fixture, launched: Launched, code: i32, says: &[&str]) {
    let (finished, seen) = launched.wait(LAUNCH_WAIT);
    assert_eq!(finished.code, Some(code), "{finished:?}");
    for needle in says {
        assert!(finished.stderr.contains(needle), "stderr lacks {needle:?}: {}", finished.stderr);
    }
    assert!(!finished.stderr.contains("teardown:"), "teardown met errors: {}", finished.stderr);
    let ids = fx.ids();
    assert_eq!(ids.len(), 1, "{:?}", fx.records());
    assert_torn_down(fx, &seen, &ids, Ending::Exited(code));
}

#[test]
fn a_token_missing_from_the_host_fails_before_anything_is_made() {
    let fx = Fixture::with_api("td-secret");
    let file = fx.bottle("secret", "");
    let args = fx.run_args(&file, "echo agent-ran");
    let refs: Vec<&str> = args.iter().map(String::as_str).collect();
    let mut command = fx.command(&refs);
    command.env_remove(TOKEN_VAR);
    let (finished, seen) = Launched::start(&mut command).wait(LAUNCH_WAIT);
    assert_eq!(finished.code, Some(125), "{finished:?}");
    assert!(
        finished.stderr.contains(&format!(
            "resolve secrets: route \"api.bottle.test\" injects ${TOKEN_VAR}, which is not set"
        )),
        "{}",
        finished.stderr
    );
    assert!(!finished.stdout.contains("agent-ran"));
    assert!(fx.records().is_empty(), "a folder was made: {:?}", fx.records());
    assert_torn_down(&fx, &seen, &[], Ending::Removed);
}

#[test]
fn a_state_root_that_cannot_be_made_fails_allocate() {
    let fx = Fixture::new("td-alloc");
    let file = fx.bottle("alloc", "");
    std::fs::remove_dir_all(fx.dir.join("state")).unwrap();
    std::fs::write(fx.dir.join("state"), "a file where the state root should be").unwrap();
    let (finished, seen) = fx.launch(&file, "echo agent-ran").wait(LAUNCH_WAIT);
    assert_eq!(finished.code, Some(125), "{finished:?}");
    assert!(finished.stderr.contains("allocate: state directory"), "{}", finished.stderr);
    assert!(seen.processes.is_empty(), "the launch started processes: {seen:?}");
}

#[test]
fn a_failing_sandbox_helper_fails_prepare_the_sandbox() {
    let mut fx = Fixture::with_api("td-helper");
    fx.companions(&[("bottle-sandbox", "echo helper-refuses >&2; exit 1")]);
    let file = fx.bottle("helper", "");
    let launched = fx.launch(&file, "echo agent-ran");
    expect_failure(&fx, launched, 125, &["prepare the sandbox"]);
}

#[test]
fn a_missing_or_unexecutable_sidecar_fails_start_the_sidecar() {
    for executable_file_instead in [false, true] {
        let mut fx = Fixture::with_api("td-init");
        fx.companions_without("bottle-init", executable_file_instead);
        let file = fx.bottle("init", "");
        let launched = fx.launch(&file, "echo agent-ran");
        let why =
            if executable_file_instead { "program not executable" } else { "program not found" };
        expect_failure(&fx, launched, 125, &["start the sidecar", why]);
    }
}

#[test]
fn a_sidecar_that_exits_during_start_fails_wait_for_the_sidecar() {
    let mut fx = Fixture::with_api("td-wait");
    fx.companions(&[("bottle-init", "echo sidecar-gives-up >&2; exit 1")]);
    let file = fx.bottle("wait", "");
    let launched = fx.launch(&file, "echo agent-ran");
    expect_failure(
        &fx,
        launched,
        125,
        &["wait for the sidecar", "the sidecar exited during start"],
    );
    let id = &fx.ids()[0];
    let log = std::fs::read_to_string(fx.bottle_dir(id).join("sidecar.log")).unwrap();
    assert!(log.contains("sidecar-gives-up"), "the sidecar's output is in its log: {log}");
}

#[test]
fn ctrl_c_while_the_sandbox_is_prepared_exits_130_and_leaves_nothing() {
    let mut fx = Fixture::with_api("td-int-prep");
    let libexec = fx.companions(&[("bottle-sandbox", &blocking("sandbox"))]);
    let file = fx.bottle("intprep", "");
    let launched = fx.launch(&file, "echo agent-ran");
    assert!(wait_for_path(&libexec.join("sandbox.reached"), LAUNCH_WAIT), "the helper never ran");
    launched.watcher.sync();
    launched.signal(libc::SIGINT);
    let (finished, seen) = launched.wait(LAUNCH_WAIT);
    assert_eq!(finished.code, Some(130), "{finished:?}");
    assert!(finished.stderr.contains("interrupted"), "{}", finished.stderr);
    assert!(!finished.stdout.contains("agent-ran"));
    assert!(!seen.matching(&libexec.display().to_string()).is_empty(), "{seen:?}");
    assert_torn_down(&fx, &seen, &fx.ids(), Ending::Exited(130));
}

#[test]
fn ctrl_c_while_waiting_for_the_sidecar_exits_130_and_leaves_nothing() {
    let mut fx = Fixture::with_api("td-int-wait");
    let libexec = fx.companions(&[("bottle-init", &blocking("init"))]);
    let file = fx.bottle("intwait", "");
    let launched = fx.launch(&file, "echo agent-ran");
    assert!(wait_for_path(&libexec.join("init.reached"), LAUNCH_WAIT), "the sidecar never ran");
    launched.watcher.sync();
    let record = fx.wait_record(LAUNCH_WAIT, |r| !r["sidecar"].is_null());
    let id = record["id"].as_str().unwrap().to_string();
    assert!(fx.bottle_dir(&id).join("sidecar.toml").exists());
    assert_eq!(record["phase"], "launching");
    launched.signal(libc::SIGINT);
    let (finished, seen) = launched.wait(LAUNCH_WAIT);
    assert_eq!(finished.code, Some(130), "{finished:?}");
    assert!(!finished.stdout.contains("agent-ran"));
    assert_torn_down(&fx, &seen, &[id], Ending::Exited(130));
}

#[test]
fn ctrl_c_while_the_agent_runs_stops_it_and_a_second_one_does_not_skip_teardown() {
    let fx = Fixture::with_api("td-int-run");
    let file = fx.bottle("intrun", "");
    // The agent takes its time to stop, so the second Ctrl-C lands mid-teardown.
    let script = "trap 'touch /workspace/got-term; sleep 1; exit 143' TERM\ntouch /workspace/running\nwait_for never";
    let launched = fx.launch(&file, script);
    assert!(wait_for_path(&fx.workspace().join("running"), LAUNCH_WAIT));
    let id = fx.wait_record(LAUNCH_WAIT, |r| r["phase"] == "running")["id"]
        .as_str()
        .unwrap()
        .to_string();
    launched.watcher.sync();
    launched.signal(libc::SIGINT);
    fx.wait_record(LAUNCH_WAIT, |r| r["phase"] == "stopping");
    launched.signal(libc::SIGINT);
    let (finished, seen) = launched.wait(LAUNCH_WAIT);
    assert_eq!(finished.code, Some(130), "{finished:?}");
    assert!(finished.stderr.contains("interrupt 2 ignored"), "{}", finished.stderr);
    assert!(fx.workspace().join("got-term").exists(), "the agent was not asked to stop");
    assert_torn_down(&fx, &seen, &[id], Ending::Exited(130));
}

#[test]
fn ctrl_c_while_waiting_for_the_allocation_lock_exits_130_at_once() {
    let fx = Fixture::new("td-int-lock");
    let file = fx.bottle("intlock", "");
    std::fs::create_dir_all(fx.state_root()).unwrap();
    let lock = std::fs::File::create(fx.state_root().join(".lock")).unwrap();
    let held = nix::fcntl::Flock::lock(lock, nix::fcntl::FlockArg::LockExclusive).unwrap();
    let launched = fx.launch(&file, "echo agent-ran");
    // The launcher is queued once it holds the lock file open and has made no folder.
    let lock_path = fx.state_root().join(".lock");
    let blocked = bottle_tests::external::wait_until(LAUNCH_WAIT, || {
        std::fs::read_dir(format!("/proc/{}/fd", launched.pid()))
            .map(|fds| {
                fds.filter_map(|e| e.ok())
                    .any(|e| std::fs::read_link(e.path()).is_ok_and(|l| l == lock_path))
            })
            .unwrap_or(false)
    });
    assert!(blocked, "the launcher never waited for the lock");
    launched.signal(libc::SIGINT);
    let (finished, seen) = launched.wait(Duration::from_secs(10));
    drop(held);
    assert_eq!(finished.code, Some(130), "Ctrl-C waited for the lock: {finished:?}");
    assert!(fx.records().is_empty(), "{:?}", fx.records());
    assert_torn_down(&fx, &seen, &[], Ending::Removed);
}

#[test]
fn sigkill_of_the_sidecar_makes_the_launcher_tear_down_and_exit_125() {
    let fx = Fixture::with_api("td-kill-sidecar");
    let file = fx.bottle("killsidecar", "");
    let launched = fx.launch(&file, "touch /workspace/running; wait_for never");
    assert!(wait_for_path(&fx.workspace().join("running"), LAUNCH_WAIT));
    let record = fx.wait_record(LAUNCH_WAIT, |r| r["phase"] == "running");
    let id = record["id"].as_str().unwrap().to_string();
    let sidecar: bottle_proc::ProcessIdentity =
        serde_json::from_value(record["sidecar"].clone()).unwrap();
    launched.watcher.sync();
    assert!(sidecar.signal_group(libc::SIGKILL), "the sidecar was not there to kill");
    let (finished, seen) = launched.wait(LAUNCH_WAIT);
    assert_eq!(finished.code, Some(125), "{finished:?}");
    assert!(finished.stderr.contains("the sidecar died under the agent"), "{}", finished.stderr);
    assert_torn_down(&fx, &seen, &[id], Ending::Exited(125));
}

#[test]
fn sigkill_of_the_launcher_then_cleanup_removes_everything() {
    let fx = Fixture::with_api("td-kill-launcher");
    let file = fx.bottle("killlauncher", "");
    let launched = fx.launch(&file, "touch /workspace/running; wait_for never");
    assert!(wait_for_path(&fx.workspace().join("running"), LAUNCH_WAIT));
    let id = fx.wait_record(LAUNCH_WAIT, |r| r["phase"] == "running")["id"]
        .as_str()
        .unwrap()
        .to_string();
    launched.watcher.sync();
    let before = launched.watcher.seen();
    launched.signal(libc::SIGKILL);
    let (finished, _) = launched.wait(LAUNCH_WAIT);
    assert_eq!(finished.code, Some(128 + libc::SIGKILL), "{finished:?}");

    let ps = fx.bottle_cli(&["ps", "--json"]);
    let rows: serde_json::Value = serde_json::from_str(&ps.stdout).expect("ps json");
    assert_eq!(rows[0]["id"], id.as_str(), "{ps:?}");
    assert_eq!(rows[0]["state"], "dead", "{ps:?}");
    let dry = fx.bottle_cli(&["cleanup", "--dry-run"]);
    assert!(dry.stdout.contains(&format!("would remove {id}")), "{dry:?}");
    assert!(fx.bottle_dir(&id).exists(), "a dry run removed the folder");
    let cleanup = fx.bottle_cli(&["cleanup"]);
    assert_eq!(cleanup.code, Some(0), "{cleanup:?}");
    assert!(cleanup.stdout.contains(&format!("removed {id}")), "{cleanup:?}");
    assert!(cleanup.stderr.is_empty(), "{cleanup:?}");
    assert_torn_down(&fx, &before, std::slice::from_ref(&id), Ending::Removed);
    let again = fx.bottle_cli(&["cleanup"]);
    assert!(again.stdout.contains("nothing to clean up"), "{again:?}");

    // The state root works for the next bottle.
    let (next, seen) = fx.launch(&file, "echo next-ran").wait(LAUNCH_WAIT);
    assert_eq!(next.code, Some(0), "{next:?}");
    assert!(next.stdout.contains("next-ran"));
    assert_torn_down(&fx, &seen, &fx.ids(), Ending::Exited(0));
}

#[test]
fn a_slow_sidecar_is_waited_for_and_the_bottle_runs() {
    let mut fx = Fixture::with_api("td-slow");
    let libexec = fx.companions(&[("bottle-init", &blocking("init"))]);
    let file = fx.bottle("slow", "");
    let launched = fx.launch(&file, "ask allowed https://api.bottle.test/whoami");
    assert!(wait_for_path(&libexec.join("init.reached"), LAUNCH_WAIT), "the sidecar never ran");
    let record = fx.wait_record(LAUNCH_WAIT, |r| !r["sidecar"].is_null());
    assert_eq!(record["phase"], "launching", "the agent started before the sidecar was ready");
    std::fs::write(libexec.join("go"), b"").unwrap();
    let (finished, seen) = launched.wait(LAUNCH_WAIT);
    assert_eq!(finished.code, Some(0), "{finished:?}");
    assert_eq!(finished.results()["allowed"], "200 0 authorized", "{finished:?}");
    assert_torn_down(&fx, &seen, &fx.ids(), Ending::Exited(0));
}
