//! The launcher's side: start a sandbox, get its egress listener, await its exit.
//!
//! Hazard: the launcher is multi-threaded, so it never forks itself into a sandbox: it
//! spawns the helper through the one [`Reaper`] (fork and exec at once) and talks to it
//! over a seqpacket setup channel at fd 3. The start has two phases: [`LocalSandbox::start_held`]
//! returns once every namespace, mount and the egress listener exist and PID 1 is
//! confined and waiting ([`Held`]); [`Held::release`] hands PID 1 the extra environment
//! (the sidecar's placeholders) and returns once the agent has exec'd (the channel's
//! EOF). A failure is a [`LocalError::Refused`] naming the cause and fix, and the helper
//! is killed; so is a [`Held`] that is dropped, and so is a helper whose start is
//! cancelled mid-handshake (the caller's future dropped on Ctrl-C): nothing else knows
//! its pid yet. There is no fallback to a weaker sandbox.

use std::ffi::OsString;
use std::os::fd::{AsFd, OwnedFd};
use std::path::{Path, PathBuf};
use std::time::Duration;

use bottle_proc::{ExitStatus, NotifyFd, Pid, Reaper, SpawnSpec};
use tokio::sync::oneshot;

use crate::LocalError;
use crate::preflight::{Refusal, UsernsSysctls};
use crate::spec::{AgentStdio, Mode, SandboxSpec};
use crate::wire::{self, HelperMsg, LauncherMsg, StdioKind};

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
    exec_socket: Option<PathBuf>,
}

impl SandboxHandle {
    /// Waits for the sandbox to end. `Exited(code)` carries the agent's shell code
    /// (128 + signal if the agent was killed); `Signaled` means the helper itself was
    /// killed (everything inside died with it). The exec socket's file is removed.
    pub async fn wait(self) -> Result<ExitStatus, LocalError> {
        let status = self
            .exit
            .await
            .map_err(|_| LocalError::HelperDied { status: "reaper dropped the status".into() });
        remove_socket(self.exec_socket.as_deref());
        status
    }

    /// The host path of the exec socket, when the spec asked for one.
    pub fn exec_socket(&self) -> Option<&Path> {
        self.exec_socket.as_deref()
    }

    /// Sends `signal` to the helper, which forwards it to the agent through PID 1
    /// (SIGKILL kills the helper and, with it, the whole sandbox).
    pub fn signal(&self, reaper: &Reaper, signal: i32) -> std::io::Result<bool> {
        reaper.signal_group(self.pid, signal)
    }
}

/// A built sandbox whose PID 1 waits to start the agent: every namespace and mount, the
/// egress listener and the exec socket exist, PID 1 is confined. Release it once the
/// sidecar is ready; dropping it (or [`Held::abort`]) kills the sandbox.
#[derive(Debug)]
pub struct Held {
    sandbox: Option<SandboxHandle>,
    channel: Option<OwnedFd>,
    reaper: Reaper,
    timeout: Duration,
}

impl Held {
    /// The helper's pid on the host.
    pub fn pid(&self) -> Option<Pid> {
        self.sandbox.as_ref().map(|s| s.pid)
    }

    /// Starts the agent with `extra_env` added to the spec's environment (a variable of
    /// the same name is replaced). Returns once the agent has exec'd; on a failure the
    /// sandbox is killed and the error names the step.
    pub async fn release(
        mut self,
        extra_env: Vec<(String, String)>,
    ) -> Result<SandboxHandle, LocalError> {
        let Some(channel) = self.channel.take() else {
            return Err(LocalError::HelperDied { status: "released twice".into() });
        };
        let message = wire::encode(&LauncherMsg::Release { extra_env });
        let outcome = tokio::task::spawn_blocking(move || await_exec(&channel, &message))
            .await
            .map_err(|err| LocalError::Channel(std::io::Error::other(err.to_string())))?;
        match outcome {
            Ok(Setup::Eof) => self
                .sandbox
                .take()
                .ok_or_else(|| LocalError::HelperDied { status: "no sandbox".into() }),
            Ok(Setup::Refused(refusal)) => Err(LocalError::Refused(refusal)),
            Ok(_) => Err(LocalError::HelperDied { status: "unexpected message".into() }),
            Err(err) if timed_out(&err) => Err(LocalError::SetupTimeout(self.timeout)),
            Err(err) => Err(LocalError::Channel(err)),
        }
    }

    /// Kills the held sandbox and waits until it is gone.
    pub async fn abort(mut self) -> Result<ExitStatus, LocalError> {
        self.channel.take();
        let Some(sandbox) = self.sandbox.take() else {
            return Err(LocalError::HelperDied { status: "no sandbox".into() });
        };
        let _ = self.reaper.signal_group(sandbox.pid, libc::SIGKILL);
        sandbox.wait().await
    }
}

impl Drop for Held {
    fn drop(&mut self) {
        if let Some(sandbox) = self.sandbox.take() {
            let _ = self.reaper.signal_group(sandbox.pid, libc::SIGKILL);
            remove_socket(sandbox.exec_socket.as_deref());
        }
    }
}

/// Sends the release and reads until the agent exec'd (EOF) or a step failed.
fn await_exec(channel: &OwnedFd, release: &[u8]) -> std::io::Result<Setup> {
    bottle_proc::fdpass::send_message(channel.as_fd(), release, None)?;
    match bottle_proc::fdpass::recv_message(channel.as_fd(), wire::MAX_MESSAGE)? {
        None => Ok(Setup::Eof),
        Some(message) => match serde_json::from_slice(&message.bytes) {
            Ok(HelperMsg::SetupFailed(failure)) => {
                Ok(Setup::Refused(Refusal::from_failure(failure)))
            }
            Ok(_) => Ok(Setup::ProbePassed),
            Err(err) => Err(std::io::Error::new(std::io::ErrorKind::InvalidData, err)),
        },
    }
}

fn timed_out(err: &std::io::Error) -> bool {
    matches!(err.kind(), std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut)
}

/// Removes the exec socket's file, if it is still a socket (never anything else).
fn remove_socket(path: Option<&Path>) {
    use std::os::unix::fs::FileTypeExt;
    if let Some(path) = path
        && std::fs::symlink_metadata(path).is_ok_and(|m| m.file_type().is_socket())
    {
        let _ = std::fs::remove_file(path);
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

    /// Builds the sandbox and execs the agent with the helper's stdio ([`AgentStdio::Null`])
    /// and no extra environment: [`LocalSandbox::start_held`] then [`Held::release`].
    pub async fn start(&self, spec: &SandboxSpec, reaper: &Reaper) -> Result<Started, LocalError> {
        let (held, egress) = self.start_held(spec, AgentStdio::Null, reaper).await?;
        let sandbox = held.release(Vec::new()).await?;
        Ok(Started { sandbox, egress })
    }

    /// Builds the sandbox up to the agent: returns once namespaces, mounts, the egress
    /// listener (returned here, for the sidecar) and the exec socket exist and PID 1 is
    /// confined and waiting. The agent's stdio is wired as `stdio` says.
    pub async fn start_held(
        &self,
        spec: &SandboxSpec,
        stdio: AgentStdio,
        reaper: &Reaper,
    ) -> Result<(Held, std::net::TcpListener), LocalError> {
        let spec = validated(spec, Mode::Run)?;
        let (mut handle, outcome) = self.launch(spec, stdio, reaper).await?;
        match outcome {
            Setup::Held { egress, channel } => Ok((
                Held {
                    sandbox: Some(handle),
                    channel: Some(channel),
                    reaper: reaper.clone(),
                    timeout: self.setup_timeout,
                },
                egress,
            )),
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
        let (mut handle, outcome) = self.launch(spec, AgentStdio::Null, reaper).await?;
        if matches!(outcome, Setup::Held { .. }) {
            let _ = reaper.signal_group(handle.pid, libc::SIGKILL);
        }
        let status = wait_status(&mut handle).await;
        match outcome {
            Setup::ProbePassed => Ok(()),
            Setup::Refused(refusal) => Err(LocalError::Refused(refusal)),
            Setup::Held { .. } | Setup::Eof => Err(LocalError::HelperDied { status }),
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
        stdio: AgentStdio,
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
                stdin: None,
                inherit: Vec::new(),
            })
            .map_err(LocalError::Spawn)?;
        // Until the handshake has an outcome, only this future knows the helper: if it is
        // dropped (the launch was interrupted), the guard kills the helper, which also
        // ends the blocking handshake (its channel reaches EOF).
        let mut guard = KillUnlessDisarmed { reaper: reaper.clone(), pid: child.pid, armed: true };
        let handle = SandboxHandle {
            pid: child.pid,
            stdout: child.stdout,
            stderr: child.stderr,
            exit: child.exit,
            exec_socket: spec.exec_socket.clone(),
        };
        let (kind, fds) = match stdio {
            AgentStdio::Null => (StdioKind::Null, Vec::new()),
            AgentStdio::Inherit { stdin, stdout, stderr } => {
                (StdioKind::Inherit, vec![stdin, stdout, stderr])
            }
            AgentStdio::Pty(slave) => (StdioKind::Pty, vec![slave]),
        };
        let hello = wire::encode(&wire::Hello { spec, stdio: kind });
        let timeout = self.setup_timeout;
        // The stdio fds are dropped here once sent: the agent's copies are the only ones
        // left, so the launcher sees EOF (or EIO on a pty master) when the agent is done.
        let outcome = tokio::task::spawn_blocking(move || handshake(ours, &hello, fds, timeout))
            .await
            .map_err(|err| LocalError::Channel(std::io::Error::other(err.to_string())));
        guard.armed = matches!(outcome, Err(_) | Ok(Err(_)) | Ok(Ok(Setup::Refused(_))));
        drop(guard);
        match outcome? {
            Ok(setup) => Ok((handle, setup)),
            Err(err) => {
                if timed_out(&err) {
                    Err(LocalError::SetupTimeout(timeout))
                } else {
                    Err(LocalError::Channel(err))
                }
            }
        }
    }
}

/// SIGKILLs the helper's process group on drop while armed.
struct KillUnlessDisarmed {
    reaper: Reaper,
    pid: Pid,
    armed: bool,
}

impl Drop for KillUnlessDisarmed {
    fn drop(&mut self) {
        if self.armed {
            let _ = self.reaper.signal_group(self.pid, libc::SIGKILL);
        }
    }
}

/// What the setup channel said.
enum Setup {
    /// The listener arrived and PID 1 waits for the release (on `channel`).
    Held { egress: std::net::TcpListener, channel: OwnedFd },
    /// A step failed.
    Refused(Refusal),
    /// Probe mode passed.
    ProbePassed,
    /// End of stream without a listener or a report: a process died.
    Eof,
}

fn handshake(
    channel: OwnedFd,
    hello: &[u8],
    fds: Vec<OwnedFd>,
    timeout: Duration,
) -> std::io::Result<Setup> {
    bottle_proc::fdpass::set_receive_timeout(channel.as_fd(), Some(timeout))?;
    let borrowed: Vec<_> = fds.iter().map(|fd| fd.as_fd()).collect();
    bottle_proc::fdpass::send_message_with_fds(channel.as_fd(), hello, &borrowed)?;
    drop(borrowed);
    drop(fds);
    let mut egress = None;
    let mut probe_passed = false;
    while let Some(mut message) =
        bottle_proc::fdpass::recv_message(channel.as_fd(), wire::MAX_MESSAGE)?
    {
        let parsed: HelperMsg = serde_json::from_slice(&message.bytes)
            .map_err(|err| std::io::Error::new(std::io::ErrorKind::InvalidData, err))?;
        match parsed {
            HelperMsg::EgressListener => {
                let fd = message.take_fd().ok_or_else(|| {
                    std::io::Error::new(
                        std::io::ErrorKind::InvalidData,
                        "egress listener message without an fd",
                    )
                })?;
                egress = Some(std::net::TcpListener::from(fd));
            }
            HelperMsg::Held => {
                let egress = egress.ok_or_else(|| {
                    std::io::Error::new(std::io::ErrorKind::InvalidData, "held without a listener")
                })?;
                return Ok(Setup::Held { egress, channel });
            }
            HelperMsg::SetupFailed(failure) => {
                return Ok(Setup::Refused(Refusal::from_failure(failure)));
            }
            HelperMsg::ProbePassed => probe_passed = true,
        }
    }
    Ok(if probe_passed { Setup::ProbePassed } else { Setup::Eof })
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
    if let Some(socket) = &mut spec.exec_socket {
        absolute(socket)?;
        let (Some(parent), Some(name)) = (socket.parent(), socket.file_name()) else {
            return Err(LocalError::InvalidSpec(format!("{} has no file name", socket.display())));
        };
        *socket = canonical(parent)?.join(name);
    }
    Ok(spec)
}
