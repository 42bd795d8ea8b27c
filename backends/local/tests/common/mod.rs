//! Shared fixtures: one reaper per test process (nextest runs each test alone), a
//! throw-away workspace, and running a spec to completion with its output.
#![allow(dead_code, unreachable_pub)]

use std::io::Read;
use std::os::fd::OwnedFd;
use std::path::PathBuf;
use std::time::Duration;

use bottle_local::{HelperCommand, LocalSandbox, SandboxSpec, Started, Workspace};
use bottle_proc::{ExitStatus, Pid, Reaper};

/// The process's reaper, driven by a task that collects children every few ms.
pub fn reaper() -> Reaper {
    let reaper = Reaper::install(false).expect("one reaper per test process");
    let driver = reaper.clone();
    tokio::spawn(async move {
        loop {
            driver.reap();
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
    });
    reaper
}

pub fn helper() -> HelperCommand {
    HelperCommand::binary(env!("CARGO_BIN_EXE_bottle-sandbox"))
}

pub fn backend() -> LocalSandbox {
    LocalSandbox::new(helper()).capture_output(true)
}

/// A directory under the system temp dir, removed on drop.
pub struct TempDir(pub PathBuf);

impl TempDir {
    pub fn new(tag: &str) -> TempDir {
        let path = std::env::temp_dir().join(format!("bottle-local-{tag}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&path);
        std::fs::create_dir_all(&path).expect("temp dir");
        TempDir(path)
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// `sh -c script` on the host root with `workspace` at /workspace and PATH set.
pub fn shell(script: &str, workspace: &TempDir) -> SandboxSpec {
    let mut spec = SandboxSpec::new(vec!["sh".into(), "-c".into(), script.into()]);
    spec.env = vec![("PATH".into(), "/usr/local/bin:/usr/bin:/bin".into())];
    spec.workspace = Some(Workspace { source: workspace.0.clone(), target: "/workspace".into() });
    spec
}

/// Output and status of a finished sandbox.
#[derive(Debug)]
pub struct Finished {
    pub status: ExitStatus,
    pub stdout: String,
    pub stderr: String,
}

pub async fn read_all(fd: Option<OwnedFd>) -> String {
    let Some(fd) = fd else { return String::new() };
    tokio::task::spawn_blocking(move || {
        let mut text = String::new();
        let _ = std::fs::File::from(fd).read_to_string(&mut text);
        text
    })
    .await
    .expect("reader")
}

/// Waits for a started sandbox to finish and collects its output.
pub async fn finish(started: Started) -> Finished {
    let mut sandbox = started.sandbox;
    drop(started.egress);
    let stdout = read_all(sandbox.stdout.take());
    let stderr = read_all(sandbox.stderr.take());
    let (stdout, stderr) = tokio::join!(stdout, stderr);
    let status = tokio::time::timeout(Duration::from_secs(20), sandbox.wait())
        .await
        .expect("sandbox ends")
        .expect("status");
    Finished { status, stdout, stderr }
}

/// Starts `spec` and waits for it to finish.
pub async fn run(reaper: &Reaper, spec: &SandboxSpec) -> Finished {
    let started = backend().start(spec, reaper).await.expect("sandbox starts");
    finish(started).await
}

/// `python3 -c script` in the sandbox (python's ctypes and socket reach raw syscalls
/// without any unsafe code on our side).
pub fn python(script: &str, workspace: &TempDir) -> SandboxSpec {
    let mut spec = shell("", workspace);
    spec.argv = vec!["python3".into(), "-c".into(), script.into()];
    spec
}

/// Polls `condition` every 10 ms until it holds or `limit` passes.
pub async fn wait_until(limit: Duration, mut condition: impl FnMut() -> bool) -> bool {
    let deadline = tokio::time::Instant::now() + limit;
    while tokio::time::Instant::now() < deadline {
        if condition() {
            return true;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    condition()
}

/// Every descendant of `root` on the host, by walking ppid links in /proc.
pub fn descendants(root: Pid) -> Vec<Pid> {
    let mut family = vec![root];
    loop {
        let before = family.len();
        for pid in bottle_proc::fd::list_pids() {
            if let Some((_, ppid)) = bottle_proc::fd::state_and_ppid(pid)
                && family.contains(&ppid)
                && !family.contains(&pid)
            {
                family.push(pid);
            }
        }
        if family.len() == before {
            family.remove(0);
            return family;
        }
    }
}

/// Whether `pid` exists and is not a zombie.
pub fn running(pid: Pid) -> bool {
    matches!(bottle_proc::fd::state_and_ppid(pid), Some((state, _)) if state != 'Z')
}

/// Reads `fd` on a thread of its own until EOF (or EIO: a pty master whose slave is
/// closed everywhere), so a test can wait for text to appear.
pub struct Collector {
    text: std::sync::Arc<std::sync::Mutex<String>>,
}

impl Collector {
    pub fn new(fd: OwnedFd) -> Collector {
        let text = std::sync::Arc::new(std::sync::Mutex::new(String::new()));
        let sink = text.clone();
        std::thread::spawn(move || {
            let mut file = std::fs::File::from(fd);
            let mut buffer = [0u8; 4096];
            while let Ok(n) = file.read(&mut buffer) {
                if n == 0 {
                    break;
                }
                sink.lock().unwrap().push_str(&String::from_utf8_lossy(&buffer[..n]));
            }
        });
        Collector { text }
    }

    pub fn text(&self) -> String {
        self.text.lock().unwrap().clone()
    }

    /// Waits until the text contains `needle`; returns all the text so far.
    pub async fn wait_for(&self, needle: &str, limit: Duration) -> String {
        let found = wait_until(limit, || self.text().contains(needle)).await;
        let text = self.text();
        assert!(found, "never saw {needle:?}; got {text:?}");
        text
    }
}

/// A pipe: (read end, write end), both close-on-exec.
pub fn pipe() -> (OwnedFd, OwnedFd) {
    nix::unistd::pipe2(nix::fcntl::OFlag::O_CLOEXEC).expect("pipe")
}
