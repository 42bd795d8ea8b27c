//! Running git: argv and a complete environment, spawned through the one reaper.
//!
//! Hazard: a git child that outlives its request keeps a lock on the mirror or holds a
//! half-written pack; one that inherits our environment sees the operator's config,
//! credentials helpers or a terminal to prompt on; one that is waited on by anything but
//! the reaper steals its exit status. So every child is spawned by
//! [`bottle_proc::Reaper::spawn`] with argv (never a shell) and an environment built
//! here from nothing (no system or global config, no prompts, `HOME` in the gate's own
//! directory), gets a deadline after which its process group is SIGKILLed, and is
//! SIGKILLed as well when the [`Running`] handle is dropped (the agent hung up).
//! Configuration reaches git through `GIT_CONFIG_COUNT` variables, never argv, so a
//! token in an `http.extraHeader` never shows in `/proc/<pid>/cmdline`.
//!
//! The child's stdin, when it reads one, is a pipe (`SpawnSpec::stdin`).

use std::ffi::OsString;
use std::os::fd::OwnedFd;
use std::path::PathBuf;
use std::time::Duration;

use bottle_proc::{ExitStatus, Pid, Reaper, SpawnSpec};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::unix::pipe;

use crate::GitGateError;

/// How much of a child's stderr is kept (the tail matters; the rest is dropped).
const STDERR_KEEP: usize = 64 * 1024;

/// The git program and the environment every child starts from.
#[derive(Debug, Clone)]
pub struct Git {
    reaper: Reaper,
    program: PathBuf,
    path: String,
    home: PathBuf,
}

impl Git {
    /// `program` (looked up on `path` when it has no slash), with `HOME` at `home`.
    pub fn new(reaper: Reaper, program: PathBuf, path: String, home: PathBuf) -> Git {
        Git { reaper, program, path, home }
    }

    /// The reaper children are spawned through.
    pub fn reaper(&self) -> &Reaper {
        &self.reaper
    }

    /// A git invocation with these arguments.
    pub fn command<I, S>(&self, step: &'static str, args: I) -> Invocation
    where
        I: IntoIterator<Item = S>,
        S: Into<OsString>,
    {
        let mut argv = vec![self.program.clone().into_os_string()];
        argv.extend(args.into_iter().map(Into::into));
        let env: Vec<(OsString, OsString)> = vec![
            ("PATH".into(), self.path.clone().into()),
            ("HOME".into(), self.home.clone().into_os_string()),
            ("LC_ALL".into(), "C".into()),
            ("GIT_CONFIG_NOSYSTEM".into(), "1".into()),
            ("GIT_CONFIG_GLOBAL".into(), "/dev/null".into()),
            ("GIT_TERMINAL_PROMPT".into(), "0".into()),
            ("GIT_ASKPASS".into(), "/bin/false".into()),
            ("SSH_ASKPASS".into(), "/bin/false".into()),
        ];
        Invocation {
            reaper: self.reaper.clone(),
            step,
            argv,
            env,
            config: Vec::new(),
            cwd: None,
            timeout: Duration::from_secs(600),
        }
    }
}

/// One git child, before it starts.
#[derive(Debug)]
pub struct Invocation {
    reaper: Reaper,
    step: &'static str,
    argv: Vec<OsString>,
    env: Vec<(OsString, OsString)>,
    config: Vec<(String, String)>,
    cwd: Option<PathBuf>,
    timeout: Duration,
}

/// What a finished child left.
#[derive(Debug)]
pub struct Output {
    /// Its exit status.
    pub status: ExitStatus,
    /// Everything it wrote to stdout.
    pub stdout: Vec<u8>,
    /// The tail of its stderr.
    pub stderr: String,
}

impl Invocation {
    /// Adds an environment variable.
    pub fn env(mut self, key: impl Into<OsString>, value: impl Into<OsString>) -> Invocation {
        self.env.push((key.into(), value.into()));
        self
    }

    /// Adds a configuration value (through `GIT_CONFIG_KEY_<n>`, never argv).
    pub fn config(mut self, key: impl Into<String>, value: impl Into<String>) -> Invocation {
        self.config.push((key.into(), value.into()));
        self
    }

    /// Adds configuration values.
    pub fn configs(mut self, pairs: impl IntoIterator<Item = (String, String)>) -> Invocation {
        self.config.extend(pairs);
        self
    }

    /// Sets the working directory.
    pub fn cwd(mut self, dir: impl Into<PathBuf>) -> Invocation {
        self.cwd = Some(dir.into());
        self
    }

    /// Sets the deadline (from spawn to exit).
    pub fn timeout(mut self, timeout: Duration) -> Invocation {
        self.timeout = timeout;
        self
    }

    /// Starts the child with a stdin pipe (when `stdin`), stdout and stderr pipes.
    pub fn spawn(self, stdin: bool) -> Result<Running, GitGateError> {
        let Invocation { reaper, step, argv, mut env, config, cwd, timeout } = self;
        if !config.is_empty() {
            env.push(("GIT_CONFIG_COUNT".into(), config.len().to_string().into()));
            for (i, (key, value)) in config.into_iter().enumerate() {
                env.push((format!("GIT_CONFIG_KEY_{i}").into(), key.into()));
                env.push((format!("GIT_CONFIG_VALUE_{i}").into(), value.into()));
            }
        }
        let pipe_err = |source| GitGateError::Pipe { step, source };
        let (writer, stdin) = if stdin {
            let (writer, reader) = pipe::pipe().map_err(pipe_err)?;
            let read_end: OwnedFd = reader.into_blocking_fd().map_err(pipe_err)?;
            (Some(writer), Some(read_end))
        } else {
            (None, None)
        };
        let spawned = reaper
            .spawn(SpawnSpec {
                argv,
                env,
                cwd,
                capture_output: true,
                stdin,
                ..SpawnSpec::default()
            })
            .map_err(|source| GitGateError::Spawn { step, source })?;
        let guard = KillGuard { reaper, pid: spawned.pid };
        let stdout = match spawned.stdout {
            Some(fd) => Some(pipe::Receiver::from_owned_fd(fd).map_err(pipe_err)?),
            None => None,
        };
        let stderr = match spawned.stderr {
            Some(fd) => {
                let mut rx = pipe::Receiver::from_owned_fd(fd).map_err(pipe_err)?;
                Some(tokio::spawn(async move { read_tail(&mut rx).await }))
            }
            None => None,
        };
        Ok(Running {
            step,
            stdin: writer,
            stdout,
            stderr,
            exit: spawned.exit,
            deadline: tokio::time::Instant::now() + timeout,
            timeout,
            guard,
        })
    }

    /// Runs the child to completion, feeding it `input`, collecting stdout (up to
    /// `max_stdout` bytes; more is an error) and the tail of stderr.
    pub async fn output(
        self,
        input: Option<&[u8]>,
        max_stdout: usize,
    ) -> Result<Output, GitGateError> {
        let mut running = self.spawn(input.is_some())?;
        let step = running.step;
        let mut stdin = running.stdin.take();
        let mut stdout = running.stdout.take();
        let feed = async {
            if let (Some(w), Some(data)) = (stdin.as_mut(), input) {
                // A child that exits early closes its stdin: not our error, its status says.
                let _ = w.write_all(data).await;
            }
            drop(stdin.take());
        };
        let collect = async {
            let mut out = Vec::new();
            if let Some(rx) = stdout.as_mut() {
                let mut buf = vec![0u8; 64 * 1024];
                loop {
                    let n = rx
                        .read(&mut buf)
                        .await
                        .map_err(|source| GitGateError::Pipe { step, source })?;
                    if n == 0 {
                        break;
                    }
                    if out.len() + n > max_stdout {
                        return Err(GitGateError::Git {
                            step,
                            status: "output".into(),
                            detail: format!("more than {max_stdout} bytes of output"),
                        });
                    }
                    out.extend_from_slice(&buf[..n]);
                }
            }
            Ok(out)
        };
        let deadline = running.deadline;
        let (_, out) = match tokio::time::timeout_at(deadline, futures_join(feed, collect)).await {
            Ok(pair) => pair,
            Err(_) => return Err(running.timed_out()),
        };
        let stdout = out?;
        let (status, stderr) = running.wait().await?;
        Ok(Output { status, stdout, stderr })
    }
}

async fn futures_join<A: std::future::Future, B: std::future::Future>(
    a: A,
    b: B,
) -> (A::Output, B::Output) {
    tokio::join!(a, b)
}

async fn read_tail(rx: &mut pipe::Receiver) -> String {
    let mut kept: Vec<u8> = Vec::new();
    let mut buf = vec![0u8; 8192];
    while let Ok(n) = rx.read(&mut buf).await {
        if n == 0 {
            break;
        }
        kept.extend_from_slice(&buf[..n]);
        if kept.len() > 2 * STDERR_KEEP {
            kept.drain(..kept.len() - STDERR_KEEP);
        }
    }
    if kept.len() > STDERR_KEEP {
        kept.drain(..kept.len() - STDERR_KEEP);
    }
    String::from_utf8_lossy(&kept).into_owned()
}

/// SIGKILLs the child's process group unless the reaper already collected it.
#[derive(Debug)]
struct KillGuard {
    reaper: Reaper,
    pid: Pid,
}

impl Drop for KillGuard {
    fn drop(&mut self) {
        // signal_group is a no-op once the leader is reaped (its pid may be recycled).
        let _ = self.reaper.signal_group(self.pid, libc::SIGKILL);
    }
}

/// A running git child. Dropping it kills the child.
#[derive(Debug)]
pub struct Running {
    step: &'static str,
    /// Its stdin, when asked for.
    pub stdin: Option<pipe::Sender>,
    /// Its stdout.
    pub stdout: Option<pipe::Receiver>,
    stderr: Option<tokio::task::JoinHandle<String>>,
    exit: tokio::sync::oneshot::Receiver<ExitStatus>,
    deadline: tokio::time::Instant,
    timeout: Duration,
    guard: KillGuard,
}

impl Running {
    /// The step name (for errors).
    pub fn step(&self) -> &'static str {
        self.step
    }

    /// When the child's budget ends.
    pub fn deadline(&self) -> tokio::time::Instant {
        self.deadline
    }

    /// Kills the child and answers the timeout error.
    pub fn timed_out(&self) -> GitGateError {
        let _ = self.guard.reaper.signal_group(self.guard.pid, libc::SIGKILL);
        GitGateError::Timeout { step: self.step, seconds: self.timeout.as_secs() }
    }

    /// Waits (within the deadline) for the exit status and the stderr tail.
    pub async fn wait(mut self) -> Result<(ExitStatus, String), GitGateError> {
        drop(self.stdin.take());
        let status = match tokio::time::timeout_at(self.deadline, &mut self.exit).await {
            Ok(Ok(status)) => status,
            Ok(Err(_)) => {
                return Err(GitGateError::Git {
                    step: self.step,
                    status: "lost".into(),
                    detail: "the reaper dropped the child's status".into(),
                });
            }
            Err(_) => return Err(self.timed_out()),
        };
        let stderr = match self.stderr.take() {
            Some(task) => tokio::time::timeout(Duration::from_secs(5), task)
                .await
                .ok()
                .and_then(Result::ok)
                .unwrap_or_default(),
            None => String::new(),
        };
        Ok((status, stderr))
    }
}

/// `output` as a success or a [`GitGateError::Git`] carrying its filtered stderr.
pub fn check(step: &'static str, output: Output) -> Result<Output, GitGateError> {
    if output.status.success() {
        Ok(output)
    } else {
        Err(GitGateError::Git {
            step,
            status: output.status.to_string(),
            detail: tail_lines(&output.stderr, 4),
        })
    }
}

/// The last `n` non-empty lines of `text`, printable characters only, each at most 300
/// characters: enough to say why, never a dump.
pub fn tail_lines(text: &str, n: usize) -> String {
    let lines: Vec<String> = text
        .lines()
        .map(str::trim)
        .filter(|l| !l.is_empty())
        .map(|l| l.chars().filter(|c| !c.is_control()).take(300).collect())
        .collect();
    lines[lines.len().saturating_sub(n)..].join("; ")
}
