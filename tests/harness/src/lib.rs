//! Test support shared by the end-to-end, chaos and PID-1 tests: fixtures for specs,
//! an output sink that captures lines, an event recorder and /proc checks.
//!
//! Every test that touches signals or the reaper runs in its own process (nextest runs
//! each test in a separate process: signals and the reaper are process-wide).
#![forbid(unsafe_code)]

pub mod bottle_run;
pub mod egress;
pub mod worker;

use std::ffi::OsString;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use bottle_runtime::output::LineSink;
use bottle_runtime::spec::{ChildSpec, ChildStart, ProcessSpec};
use bottle_runtime::{NodeConfig, Observer, TreeEvent};

/// Lines captured from children, as `(name, line)`.
#[derive(Clone, Default, Debug)]
pub struct Captured(pub Arc<Mutex<Vec<(String, String)>>>);

impl Captured {
    /// A sink that appends here.
    pub fn sink(&self) -> LineSink {
        let lines = self.0.clone();
        Arc::new(move |name: &str, line: &[u8]| {
            lines
                .lock()
                .unwrap()
                .push((name.to_string(), String::from_utf8_lossy(line).into_owned()));
        })
    }

    /// Lines of child `name`.
    pub fn lines_of(&self, name: &str) -> Vec<String> {
        self.0.lock().unwrap().iter().filter(|(n, _)| n == name).map(|(_, l)| l.clone()).collect()
    }
}

/// Tree events recorded in order.
#[derive(Clone, Default, Debug)]
pub struct Recorder(pub Arc<Mutex<Vec<TreeEvent>>>);

impl Recorder {
    /// An observer that records here.
    pub fn observer(&self) -> Observer {
        let events = self.0.clone();
        Arc::new(move |event: &TreeEvent| events.lock().unwrap().push(event.clone()))
    }

    /// A copy of the events so far.
    pub fn events(&self) -> Vec<TreeEvent> {
        self.0.lock().unwrap().clone()
    }

    /// How many times `path` started.
    pub fn starts_of(&self, path: &str) -> usize {
        self.events()
            .iter()
            .filter(|e| matches!(e, TreeEvent::Started { path: p, .. } if p == path))
            .count()
    }
}

/// A node config for tests: captured output, recorded events, fixed seed, short grace.
pub fn test_config(captured: &Captured, recorder: &Recorder, seed: u64) -> NodeConfig {
    NodeConfig {
        grace: Duration::from_secs(8),
        sink: captured.sink(),
        observer: Some(recorder.observer()),
        seed,
        on_signal: None,
        signals: true,
    }
}

/// The path of the test child binary (built by cargo for this package's tests).
pub fn testchild_path() -> OsString {
    std::env::var_os("BOTTLE_TESTCHILD")
        .or_else(|| option_env!("CARGO_BIN_EXE_bottle-testchild").map(OsString::from))
        .unwrap_or_else(|| sibling_binary("bottle-testchild"))
}

/// A binary built into the same target directory as the running test.
pub fn sibling_binary(name: &str) -> OsString {
    let exe = std::env::current_exe().expect("current exe");
    // target/<profile>/deps/test-xxxx or target/<profile>/bin -> target/<profile>/<name>
    let mut dir = exe.parent().expect("exe dir");
    if dir.ends_with("deps") {
        dir = dir.parent().expect("profile dir");
    }
    dir.join(name).into_os_string()
}

/// A process child running `bottle-testchild ARGS`.
pub fn testchild(name: &str, args: &[&str]) -> ChildSpec {
    let mut argv = vec![testchild_path()];
    argv.extend(args.iter().map(OsString::from));
    ChildSpec::new(name, ChildStart::Process(ProcessSpec::new(argv)))
}

/// A process child running `/bin/sh -c SCRIPT`.
pub fn shell(name: &str, script: &str) -> ChildSpec {
    ChildSpec::new(name, ChildStart::Process(ProcessSpec::new(["/bin/sh", "-c", script])))
}

/// Polls `cond` every 5 ms until it holds or `timeout` passes.
pub async fn eventually(timeout: Duration, mut cond: impl FnMut() -> bool) -> bool {
    let deadline = Instant::now() + timeout;
    loop {
        if cond() {
            return true;
        }
        if Instant::now() >= deadline {
            return false;
        }
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
}

/// Zombie children of this process.
pub fn my_zombies() -> Vec<i32> {
    bottle_runtime::proc::fd::zombies_of(std::process::id() as i32)
}

/// Live children of this process.
pub fn my_children() -> Vec<i32> {
    bottle_runtime::proc::fd::children_of(std::process::id() as i32)
}

/// Installs a test-friendly tracing subscriber once (honours RUST_LOG).
pub fn init_tracing() {
    let _ = tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("warn")),
        )
        .with_test_writer()
        .try_init();
}

/// Running external tools (unshare, docker, peer inits) from tests.
///
/// These tests drive other programs and wait for them with std; they never install a
/// bottle reaper in the same process, so nothing races for the children's statuses.
#[allow(clippy::disallowed_methods)]
pub mod external {
    use std::ffi::OsStr;
    use std::io::Read;
    use std::path::PathBuf;
    use std::process::{Child, Command, Output, Stdio};
    use std::time::{Duration, Instant};

    /// The `bottle-init` binary of this build.
    pub fn bottle_init() -> PathBuf {
        let path = PathBuf::from(super::sibling_binary("bottle-init"));
        assert!(
            path.exists(),
            "{} is missing: build the workspace (scripts/test does)",
            path.display()
        );
        path
    }

    /// A command with a clean, explicit environment.
    pub fn command(program: impl AsRef<OsStr>) -> Command {
        let mut command = Command::new(program);
        command
            .env_clear()
            .env("PATH", "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin");
        command
    }

    /// Runs to completion, capturing output.
    pub fn output(command: &mut Command) -> Output {
        command.stdin(Stdio::null()).output().expect("run command")
    }

    /// A child that is killed (and waited for) when dropped.
    #[derive(Debug)]
    pub struct Guarded(pub Option<Child>);

    /// Waits up to `timeout` for `child` (polling every 5 ms), then kills and reaps it;
    /// `None` when it had to be killed.
    pub fn wait_or_kill(
        child: &mut std::process::Child,
        timeout: Duration,
    ) -> Option<std::process::ExitStatus> {
        let deadline = Instant::now() + timeout;
        loop {
            if let Some(status) = child.try_wait().expect("try_wait") {
                return Some(status);
            }
            if Instant::now() >= deadline {
                let _ = child.kill();
                let _ = child.wait();
                return None;
            }
            std::thread::sleep(Duration::from_millis(5));
        }
    }

    impl Guarded {
        /// Spawns `command` with piped stdout and stderr.
        pub fn spawn(command: &mut Command) -> Guarded {
            let child = command
                .stdin(Stdio::null())
                .stdout(Stdio::piped())
                .stderr(Stdio::piped())
                .spawn()
                .expect("spawn");
            Guarded(Some(child))
        }

        /// Its pid.
        pub fn pid(&self) -> i32 {
            self.0.as_ref().map(|c| c.id() as i32).unwrap_or(0)
        }

        /// Waits up to `timeout`; returns the status and the captured stdout and stderr.
        pub fn wait(
            mut self,
            timeout: Duration,
        ) -> (Option<std::process::ExitStatus>, String, String) {
            let mut child = self.0.take().expect("child");
            let status = wait_or_kill(&mut child, timeout);
            let mut out = String::new();
            let mut err = String::new();
            if let Some(mut s) = child.stdout.take() {
                let _ = s.read_to_string(&mut out);
            }
            if let Some(mut s) = child.stderr.take() {
                let _ = s.read_to_string(&mut err);
            }
            (status, out, err)
        }
    }

    impl Drop for Guarded {
        fn drop(&mut self) {
            if let Some(mut child) = self.0.take() {
                let _ = child.kill();
                let _ = child.wait();
            }
        }
    }

    /// Sends `signal` to `pid`, a process this test drives from outside: its own unwaited
    /// child (whose pid cannot be recycled yet), a process inside a namespace or container
    /// it created, or the test process itself. Panics when delivery fails.
    pub fn signal(pid: i32, signal: i32) {
        bottle_proc::signal::send_unsupervised(pid, signal).unwrap_or_else(|err| {
            panic!("sending {} to {pid}: {err}", bottle_proc::signal::name(signal))
        });
    }

    /// Polls `cond` every 5 ms until it holds or `timeout` passes (blocking).
    pub fn wait_until(timeout: Duration, mut cond: impl FnMut() -> bool) -> bool {
        let deadline = Instant::now() + timeout;
        loop {
            if cond() {
                return true;
            }
            if Instant::now() >= deadline {
                return false;
            }
            std::thread::sleep(Duration::from_millis(5));
        }
    }

    /// The command line of `pid`, NUL-separated arguments joined by spaces.
    pub fn cmdline(pid: i32) -> String {
        std::fs::read(format!("/proc/{pid}/cmdline"))
            .map(|b| {
                b.split(|&c| c == 0)
                    .map(|a| String::from_utf8_lossy(a).into_owned())
                    .collect::<Vec<_>>()
                    .join(" ")
            })
            .unwrap_or_default()
            .trim()
            .to_string()
    }

    /// The pid (in our namespace) of the bottle-init that `unshare_pid` forked, once
    /// `ready(init)` holds; panics after 5 s.
    pub fn init_under(unshare_pid: i32, mut ready: impl FnMut(i32) -> bool) -> i32 {
        let mut init = 0;
        let found = wait_until(Duration::from_secs(5), || {
            init = children_matching(unshare_pid, "bottle-init").first().copied().unwrap_or(0);
            init != 0 && ready(init)
        });
        assert!(found, "bottle-init under unshare {unshare_pid} did not get ready");
        init
    }

    /// Live children of `pid` whose command line contains `needle`.
    pub fn children_matching(pid: i32, needle: &str) -> Vec<i32> {
        bottle_runtime::proc::fd::children_of(pid)
            .into_iter()
            .filter(|&c| cmdline(c).contains(needle))
            .collect()
    }

    /// A fresh temporary directory, removed on drop.
    #[derive(Debug)]
    pub struct TempDir(pub PathBuf);

    impl TempDir {
        /// Creates `/tmp/bottle-<tag>-<pid>-<n>`.
        pub fn new(tag: &str) -> TempDir {
            static N: std::sync::atomic::AtomicU32 = std::sync::atomic::AtomicU32::new(0);
            let n = N.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
            let path =
                std::env::temp_dir().join(format!("bottle-{tag}-{}-{n}", std::process::id()));
            let _ = std::fs::remove_dir_all(&path);
            std::fs::create_dir_all(&path).expect("temp dir");
            TempDir(path)
        }

        /// A path inside.
        pub fn join(&self, name: &str) -> PathBuf {
            self.0.join(name)
        }
    }

    impl Drop for TempDir {
        fn drop(&mut self) {
            let _ = std::fs::remove_dir_all(&self.0);
        }
    }
}

/// Whether process `pid` has a handler installed for `signal` (its `SigCgt` bit), read
/// from /proc: the precise "the child is ready to ignore SIGTERM" condition tests wait on.
pub fn has_handler(pid: i32, signal: i32) -> bool {
    let Ok(status) = std::fs::read_to_string(format!("/proc/{pid}/status")) else { return false };
    status
        .lines()
        .find_map(|l| l.strip_prefix("SigCgt:"))
        .and_then(|hex| u64::from_str_radix(hex.trim(), 16).ok())
        .is_some_and(|mask| mask & (1 << (signal - 1)) != 0)
}

/// A node supervising one child that ignores SIGTERM with a 30 s stop timeout, started
/// and waited for until the child's SIGTERM handler is installed.
pub async fn stubborn_node(grace: Duration, seed: u64) -> bottle_runtime::NodeHandle {
    let spec = bottle_runtime::spec::SupervisorSpec::new("root")
        .child(testchild("stubborn", &["ignore-term", "60"]).stop_timeout(Duration::from_secs(30)));
    let mut config = test_config(&Captured::default(), &Recorder::default(), seed);
    config.grace = grace;
    let node = bottle_runtime::Node::start(spec, config).await.expect("node");
    node.wait_root(Duration::from_secs(5)).await.expect("root");
    let pid = node.status().await.expect("status").children[0].pid.expect("pid");
    assert!(eventually(Duration::from_secs(5), || has_handler(pid, libc::SIGTERM)).await);
    node
}
