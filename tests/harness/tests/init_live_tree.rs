//! bottle-init's live control plane, end to end: a reload that adds, removes and changes
//! daemons applies to the running tree (the removed daemon's process is gone), and
//! `ctl events` streams the tree's events as NDJSON to several observers at once.
#![allow(clippy::disallowed_methods)] // drives bottle-init; no reaper in this process

use std::io::{BufRead, BufReader, Write};
use std::os::unix::net::UnixStream;
use std::sync::mpsc;
use std::time::Duration;

use bottle_runtime::TreeEvent;
use bottle_runtime::exit::{ExitClass, Termination};
use bottle_tests::external::{Guarded, TempDir, bottle_init, cmdline, command, output, wait_until};
use bottle_tests::testchild_path;

const WAIT: Duration = Duration::from_secs(10);

struct Init {
    process: Guarded,
    dir: TempDir,
}

impl Init {
    fn start(tag: &str, daemons: &[(&str, &str)]) -> Init {
        let dir = TempDir::new(tag);
        std::fs::write(dir.join("init.toml"), config(&dir, daemons)).unwrap();
        let process = Guarded::spawn(
            command(bottle_init())
                .arg("--config")
                .arg(dir.join("init.toml"))
                .arg("--grace")
                .arg("4"),
        );
        let init = Init { process, dir };
        assert!(
            wait_until(WAIT, || init.running().len() == daemons.len()),
            "daemons not up: {:?}",
            init.ctl(&["status"])
        );
        init
    }

    fn rewrite(&self, daemons: &[(&str, &str)]) {
        std::fs::write(self.dir.join("init.toml"), config(&self.dir, daemons)).unwrap();
    }

    fn ctl(&self, args: &[&str]) -> (bool, String, String) {
        let out =
            output(command(bottle_init()).arg("ctl").arg("--socket").arg(self.socket()).args(args));
        (
            out.status.success(),
            String::from_utf8_lossy(&out.stdout).into_owned(),
            String::from_utf8_lossy(&out.stderr).into_owned(),
        )
    }

    fn socket(&self) -> std::path::PathBuf {
        self.dir.join("ctl.sock")
    }

    /// `(name, pid)` of every running daemon, in start order.
    fn running(&self) -> Vec<(String, i32)> {
        let (ok, out, _) = self.ctl(&["status", "--json"]);
        if !ok {
            return Vec::new();
        }
        let status: serde_json::Value = serde_json::from_str(&out).unwrap();
        status["children"]
            .as_array()
            .unwrap()
            .iter()
            .filter(|c| c["running"] == true)
            .map(|c| (c["name"].as_str().unwrap().to_string(), c["pid"].as_i64().unwrap() as i32))
            .collect()
    }

    fn pid_of(&self, name: &str) -> i32 {
        self.running().into_iter().find(|(n, _)| n == name).map(|(_, p)| p).expect("running")
    }

    /// `ctl stop`, then bottle-init's exit code.
    fn stop(self) -> Option<i32> {
        let (ok, _, err) = self.ctl(&["stop"]);
        assert!(ok, "{err}");
        let (status, _, _) = self.process.wait(WAIT);
        status.and_then(|s| s.code())
    }
}

/// A config whose daemons are `bottle-testchild sleep SECONDS`.
fn config(dir: &TempDir, daemons: &[(&str, &str)]) -> String {
    let mut text = format!("control_socket = \"{}\"\n", dir.join("ctl.sock").display());
    for (name, seconds) in daemons {
        text.push_str(&format!(
            "[[daemon]]\nname = \"{name}\"\ncommand = [\"{}\", \"sleep\", \"{seconds}\"]\nstop_timeout = 2\nbackoff = {{ initial = 0.01 }}\n",
            testchild_path().to_str().unwrap()
        ));
    }
    text
}

fn gone(pid: i32) -> bool {
    !std::path::Path::new(&format!("/proc/{pid}")).exists()
}

#[test]
fn a_reload_starts_added_daemons_stops_removed_ones_and_restarts_changed_ones() {
    let init = Init::start("reload", &[("a", "600"), ("b", "601"), ("c", "602")]);
    let (a, b, c) = (init.pid_of("a"), init.pid_of("b"), init.pid_of("c"));

    // b goes, d comes between a and c, c's definition changes.
    init.rewrite(&[("a", "600"), ("d", "603"), ("c", "612")]);
    let (ok, said, err) = init.ctl(&["reload"]);
    assert!(ok, "{err}");
    for note in [
        "b: removed from the config; stopped",
        "c: changed; restarted with the new definition",
        "d: new daemon; started",
    ] {
        assert!(said.contains(note), "{note:?} missing from {said:?}");
    }
    assert!(!said.contains("a:"), "a did not change: {said:?}");

    let running = init.running();
    let names: Vec<&str> = running.iter().map(|(n, _)| n.as_str()).collect();
    assert_eq!(names, ["a", "d", "c"], "status after the reload");
    assert!(wait_until(WAIT, || gone(b)), "the removed daemon's process {b} is still there");
    assert_eq!(init.pid_of("a"), a, "an unchanged daemon was restarted");
    let new_c = init.pid_of("c");
    assert_ne!(new_c, c, "the changed daemon was not restarted");
    assert!(gone(c), "the changed daemon's old process {c} is still there");
    assert!(cmdline(new_c).ends_with("sleep 612"), "{}", cmdline(new_c));
    assert!(cmdline(init.pid_of("d")).ends_with("sleep 603"));

    // A second reload of the same file changes nothing.
    let (ok, said, err) = init.ctl(&["reload"]);
    assert!(ok && said.contains("nothing changed"), "{said} {err}");
    assert_eq!(init.stop(), Some(0));
}

/// One observer of the event stream: its lines arrive on a channel.
struct Observer {
    lines: mpsc::Receiver<String>,
}

impl Observer {
    /// `bottle-init ctl events`, read line by line as it prints.
    fn ctl(init: &Init) -> (Observer, Guarded) {
        let mut process = Guarded::spawn(
            command(bottle_init()).arg("ctl").arg("--socket").arg(init.socket()).arg("events"),
        );
        let stdout = process.0.as_mut().unwrap().stdout.take().unwrap();
        (Observer::from_reader(stdout), process)
    }

    /// A raw connection to the control socket.
    fn raw(init: &Init) -> Observer {
        let mut stream = UnixStream::connect(init.socket()).unwrap();
        stream.write_all(b"\"events\"\n").unwrap();
        Observer::from_reader(stream)
    }

    fn from_reader(reader: impl std::io::Read + Send + 'static) -> Observer {
        let (tx, lines) = mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(reader).lines() {
                let Ok(line) = line else { break };
                if tx.send(line).is_err() {
                    break;
                }
            }
        });
        Observer { lines }
    }

    /// The next event; panics after [`WAIT`] or at the end of the stream.
    fn next(&self) -> TreeEvent {
        let line = self.lines.recv_timeout(WAIT).expect("an event line in time");
        serde_json::from_str(&line).unwrap_or_else(|e| panic!("not a TreeEvent: {line:?}: {e}"))
    }

    /// Events up to and including the first that `last` accepts.
    fn until(&self, mut last: impl FnMut(&TreeEvent) -> bool) -> Vec<TreeEvent> {
        let mut seen = Vec::new();
        loop {
            let event = self.next();
            let done = last(&event);
            seen.push(event);
            if done {
                return seen;
            }
        }
    }

    /// Whether the stream ended (the server closed it) within [`WAIT`].
    fn ended(&self) -> bool {
        matches!(self.lines.recv_timeout(WAIT), Err(mpsc::RecvTimeoutError::Disconnected))
    }
}

#[test]
fn ctl_events_streams_a_crash_and_its_restart_to_two_observers_at_once() {
    let init = Init::start("events", &[("a", "600")]);
    let (via_ctl, ctl_process) = Observer::ctl(&init);
    let raw = Observer::raw(&init);
    for observer in [&via_ctl, &raw] {
        assert_eq!(observer.next(), TreeEvent::Subscribed);
    }

    let first = init.pid_of("a");
    nix::sys::signal::kill(nix::unistd::Pid::from_raw(first), nix::sys::signal::Signal::SIGKILL)
        .unwrap();
    for observer in [&via_ctl, &raw] {
        let seen =
            observer.until(|e| matches!(e, TreeEvent::Started { path, .. } if path == "init/a"));
        let [
            TreeEvent::Exited { path: exited, termination, class, .. },
            TreeEvent::Restarting { path: restarting, attempt, start, .. },
            TreeEvent::Started { pid, .. },
        ] = seen.as_slice()
        else {
            panic!("not exited, restarting, started: {seen:?}");
        };
        assert_eq!((exited.as_str(), restarting.as_str()), ("init/a", "init/a"));
        assert_eq!(*class, ExitClass::Crash);
        assert!(
            matches!(
                termination,
                Termination::Exited { signal: Some(9), stop_requested: false, .. }
            ),
            "{termination:?}"
        );
        assert_eq!((*attempt, start.as_slice()), (1, ["init/a".to_string()].as_slice()));
        assert_eq!(*pid, Some(init.pid_of("a")));
        assert_ne!(*pid, Some(first));
    }

    // Crash-then-shutdown keeps the crash's code (128 + SIGKILL).
    assert_eq!(init.stop(), Some(137));
    for observer in [&via_ctl, &raw] {
        let seen = observer.until(|e| matches!(e, TreeEvent::NodeExited { .. }));
        assert!(
            seen.iter().any(
                |e| matches!(e, TreeEvent::ShuttingDown { reason, .. } if reason == "ctl stop")
            ),
            "{seen:?}"
        );
        assert!(
            seen.iter().any(|e| matches!(e, TreeEvent::Stopped { path, .. } if path == "init/a")),
            "{seen:?}"
        );
        assert!(
            matches!(seen.last(), Some(TreeEvent::NodeExited { code: 137, .. })),
            "{:?}",
            seen.last()
        );
        assert!(observer.ended(), "the stream did not end with the node");
    }
    let (status, _, err) = ctl_process.wait(WAIT);
    assert_eq!(status.and_then(|s| s.code()), Some(0), "ctl events: {err}");
}
