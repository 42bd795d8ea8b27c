//! The launcher's side: start a sandbox, get its egress listener, await its exit.
//!
//! Hazard: the launcher is multi-threaded, so it never forks itself into a sandbox: it
//! spawns the helper through the one [`Reaper`] (fork and exec at once) and talks to it
//! over a seqpacket setup channel at fd 3. It returns only once the agent has exec'd
//! (the channel's EOF) or a step failed; a failure is a [`LocalError::Refused`] naming
//! the cause and fix, and the helper is killed. There is no fallback to a weaker sandbox.

use std::ffi::OsString;
use std::os::fd::{AsFd, OwnedFd};
use std::time::Duration;

use bottle_proc::{ExitStatus, NotifyFd, Pid, Reaper, SpawnSpec};
use tokio::sync::oneshot;

use crate::LocalError;
use crate::preflight::{Refusal, UsernsSysctls};
use crate::spec::{Mode, SandboxSpec};
use crate::wire::{self, HelperMsg};

/// How to run the sandbox helper: the `bottle-sandbox` binary, or any command that ends
/// by exec'ing it with fd 3 intact (tests wrap it in `unshare` to simulate a host).
#[derive(Debug, Clone)]
pub struct HelperCommand {
    /// Program and arguments.
    pub argv: Vec<OsString>,
}

impl HelperCommand {
    /// The helper binary at `program`, with no arguments.
    pub fn binary(program: impl Into<OsString>) -> HelperCommand {
        HelperCommand { argv: vec![program.into()] }
    }
}

/// The local backend: starts sandboxes through a helper.
#[derive(Debug, Clone)]
pub struct LocalSandbox {
    helper: HelperCommand,
    setup_timeout: Duration,
    capture_output: bool,
}

/// A started sandbox and the egress listener created inside its network namespace.
#[derive(Debug)]
pub struct Started {
    /// The running sandbox.
    pub sandbox: SandboxHandle,
    /// Listening on the spec's `egress_listen` inside the sandbox's network namespace:
    /// the sidecar accepts on it. Blocking mode, close-on-exec.
    pub egress: std::net::TcpListener,
}

/// A running sandbox: the helper's pid (its process group is the helper alone) and its
/// exit, which carries the agent's code.
#[derive(Debug)]
pub struct SandboxHandle {
    /// The helper's pid on the host.
    pub pid: Pid,
    /// The agent's stdout, when captured.
    pub stdout: Option<OwnedFd>,
    /// The agent's stderr, when captured.
    pub stderr: Option<OwnedFd>,
    exit: oneshot::Receiver<ExitStatus>,
}

impl SandboxHandle {
    /// Waits for the sandbox to end. `Exited(code)` carries the agent's shell code
    /// (128 + signal if the agent was killed); `Signaled` means the helper itself was
    /// killed (everything inside died with it).
    pub async fn wait(self) -> Result<ExitStatus, LocalError> {
        self.exit
            .await
            .map_err(|_| LocalError::HelperDied { status: "reaper dropped the status".into() })
    }

    /// Sends `signal` to the helper, which forwards it to the agent through PID 1
    /// (SIGKILL kills the helper and, with it, the whole sandbox).
    pub fn signal(&self, reaper: &Reaper, signal: i32) -> std::io::Result<bool> {
        reaper.signal_group(self.pid, signal)
    }
}

/// One line of `bottle doctor` for the local backend.
#[derive(Debug, Clone)]
pub struct Check {
    /// What was checked.
    pub name: &'static str,
    /// How it went.
    pub outcome: CheckOutcome,
}

/// The result of one check.
#[derive(Debug, Clone)]
pub enum CheckOutcome {
    /// Fine; the text says what was seen.
    Pass(String),
    /// Not fine; `refusal` has the cause and fix when the helper reported a step.
    Fail {
        /// One line for the person at the terminal.
        summary: String,
        /// The classified refusal, when there is one.
        refusal: Option<Refusal>,
    },
}

impl LocalSandbox {
    /// A backend running `helper`, 30 s setup timeout, agent output not captured.
    pub fn new(helper: HelperCommand) -> LocalSandbox {
        LocalSandbox { helper, setup_timeout: Duration::from_secs(30), capture_output: false }
    }

    /// Pipes the agent's stdout and stderr back ([`SandboxHandle::stdout`]).
    pub fn capture_output(mut self, capture: bool) -> LocalSandbox {
        self.capture_output = capture;
        self
    }

    /// Bounds the setup (namespaces, mounts, exec) to `timeout`.
    pub fn setup_timeout(mut self, timeout: Duration) -> LocalSandbox {
        self.setup_timeout = timeout;
        self
    }

    /// Builds the sandbox and execs the agent. Returns once the agent runs.
    pub async fn start(&self, spec: &SandboxSpec, reaper: &Reaper) -> Result<Started, LocalError> {
        let spec = validated(spec, Mode::Run)?;
        let (mut handle, outcome) = self.launch(spec, reaper).await?;
        match outcome {
            Setup::Running { egress } => Ok(Started { sandbox: handle, egress }),
            Setup::Refused(refusal) => Err(LocalError::Refused(refusal)),
            Setup::ProbePassed | Setup::Eof => {
                let status = wait_status(&mut handle).await;
                Err(LocalError::HelperDied { status })
            }
        }
    }

    /// Runs every step of a sandbox without an agent (`Mode::Probe`).
    pub async fn probe(&self, reaper: &Reaper) -> Result<(), LocalError> {
        let mut spec = SandboxSpec::new(vec!["/bin/true".into()]);
        spec.mode = Mode::Probe;
        let (mut handle, outcome) = self.launch(spec, reaper).await?;
        let status = wait_status(&mut handle).await;
        match outcome {
            Setup::ProbePassed => Ok(()),
            Setup::Refused(refusal) => Err(LocalError::Refused(refusal)),
            Setup::Running { .. } | Setup::Eof => Err(LocalError::HelperDied { status }),
        }
    }

    /// The local backend's lines of `bottle doctor`.
    pub async fn doctor(&self, reaper: &Reaper) -> Vec<Check> {
        let sysctls = UsernsSysctls::read();
        let settings = Check {
            name: "user namespace settings",
            outcome: CheckOutcome::Pass(format!(
                "user.max_user_namespaces={}, kernel.unprivileged_userns_clone={}, kernel.apparmor_restrict_unprivileged_userns={}",
                show(sysctls.max_user_namespaces),
                show(sysctls.unprivileged_userns_clone),
                show(sysctls.apparmor_restrict_unprivileged_userns),
            )),
        };
        let outcome = match self.probe(reaper).await {
            Ok(()) => CheckOutcome::Pass(
                "namespaces, mounts, pivot_root, /proc, devpts, capabilities and seccomp all work"
                    .into(),
            ),
            Err(LocalError::Refused(refusal)) => {
                CheckOutcome::Fail { summary: refusal.to_string(), refusal: Some(refusal) }
            }
            Err(other) => CheckOutcome::Fail { summary: other.to_string(), refusal: None },
        };
        vec![settings, Check { name: "sandbox probe", outcome }]
    }

    async fn launch(
        &self,
        spec: SandboxSpec,
        reaper: &Reaper,
    ) -> Result<(SandboxHandle, Setup), LocalError> {
        let (ours, theirs) = bottle_proc::fdpass::seqpacket_pair().map_err(LocalError::Channel)?;
        let child = reaper
            .spawn(SpawnSpec {
                argv: self.helper.argv.clone(),
                env: Vec::new(),
                cwd: None,
                capture_output: self.capture_output,
                notify_fd: Some(NotifyFd { write_end: theirs, target: wire::HELPER_FD }),
            })
            .map_err(LocalError::Spawn)?;
        let handle = SandboxHandle {
            pid: child.pid,
            stdout: child.stdout,
            stderr: child.stderr,
            exit: child.exit,
        };
        let hello = wire::encode(&wire::Hello { spec });
        let timeout = self.setup_timeout;
        let outcome = tokio::task::spawn_blocking(move || handshake(ours, &hello, timeout))
            .await
            .map_err(|err| LocalError::Channel(std::io::Error::other(err.to_string())))?;
        match outcome {
            Ok(Setup::Running { egress }) => Ok((handle, Setup::Running { egress })),
            Ok(other) => {
                if matches!(other, Setup::Refused(_)) {
                    let _ = reaper.signal_group(handle.pid, libc::SIGKILL);
                }
                Ok((handle, other))
            }
            Err(err) => {
                let _ = reaper.signal_group(handle.pid, libc::SIGKILL);
                if err.kind() == std::io::ErrorKind::WouldBlock
                    || err.kind() == std::io::ErrorKind::TimedOut
                {
                    Err(LocalError::SetupTimeout(timeout))
                } else {
                    Err(LocalError::Channel(err))
                }
            }
        }
    }
}

/// What the setup channel said.
enum Setup {
    /// The listener arrived and the agent exec'd.
    Running { egress: std::net::TcpListener },
    /// A step failed.
    Refused(Refusal),
    /// Probe mode passed.
    ProbePassed,
    /// End of stream without a listener or a report: a process died.
    Eof,
}

fn handshake(channel: OwnedFd, hello: &[u8], timeout: Duration) -> std::io::Result<Setup> {
    use nix::sys::socket::{setsockopt, sockopt};
    setsockopt(
        &channel,
        sockopt::ReceiveTimeout,
        &nix::sys::time::TimeVal::from(libc::timeval {
            tv_sec: timeout.as_secs() as libc::time_t,
            tv_usec: 0,
        }),
    )?;
    bottle_proc::fdpass::send_message(channel.as_fd(), hello, None)?;
    let mut egress = None;
    let mut probe_passed = false;
    while let Some(message) = bottle_proc::fdpass::recv_message(channel.as_fd(), wire::MAX_MESSAGE)?
    {
        let parsed: HelperMsg = serde_json::from_slice(&message.bytes)
            .map_err(|err| std::io::Error::new(std::io::ErrorKind::InvalidData, err))?;
        match parsed {
            HelperMsg::EgressListener => {
                let fd = message.fd.ok_or_else(|| {
                    std::io::Error::new(
                        std::io::ErrorKind::InvalidData,
                        "egress listener message without an fd",
                    )
                })?;
                egress = Some(std::net::TcpListener::from(fd));
            }
            HelperMsg::SetupFailed(failure) => {
                return Ok(Setup::Refused(Refusal::from_failure(failure)));
            }
            HelperMsg::ProbePassed => probe_passed = true,
        }
    }
    Ok(match (egress, probe_passed) {
        (_, true) => Setup::ProbePassed,
        (Some(egress), false) => Setup::Running { egress },
        (None, false) => Setup::Eof,
    })
}

async fn wait_status(handle: &mut SandboxHandle) -> String {
    match tokio::time::timeout(Duration::from_secs(10), &mut handle.exit).await {
        Ok(Ok(status)) => status.to_string(),
        _ => "unknown".into(),
    }
}

fn show(value: Option<u64>) -> String {
    value.map_or_else(|| "absent".to_string(), |v| v.to_string())
}

/// Checks the spec and makes its host paths canonical (binds are taken from the host
/// root as seen after a pivot, where a symlinked path would not resolve).
fn validated(spec: &SandboxSpec, mode: Mode) -> Result<SandboxSpec, LocalError> {
    let mut spec = spec.clone();
    spec.mode = mode;
    if spec.argv.is_empty() {
        return Err(LocalError::InvalidSpec("empty argv".into()));
    }
    let canonical = |path: &std::path::Path| {
        std::fs::canonicalize(path)
            .map_err(|err| LocalError::InvalidSpec(format!("{}: {err}", path.display())))
    };
    let absolute = |path: &std::path::Path| {
        if path.is_absolute() {
            Ok(())
        } else {
            Err(LocalError::InvalidSpec(format!("{} is not absolute", path.display())))
        }
    };
    if let Some(workspace) = &mut spec.workspace {
        absolute(&workspace.target)?;
        workspace.source = canonical(&workspace.source)?;
    }
    for bind in &mut spec.read_only {
        absolute(&bind.target)?;
        bind.source = canonical(&bind.source)?;
    }
    if let crate::spec::RootFs::Dir(dir) = &mut spec.root {
        *dir = canonical(dir)?;
    }
    if let Some(cwd) = &spec.cwd {
        absolute(cwd)?;
    }
    Ok(spec)
}
