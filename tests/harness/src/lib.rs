//! Test support shared by the end-to-end, chaos and PID-1 tests: fixtures for specs,
//! an output sink that captures lines, an event recorder and /proc checks.
//!
//! Every test that touches signals or the reaper runs in its own process (nextest runs
//! each test in a separate process: signals and the reaper are process-wide).

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
