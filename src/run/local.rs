//! The local backend's launch steps: prepare the sandbox (namespaces, mounts, the egress
//! listener inside its network namespace) with the agent held, then start the agent.
//!
//! Hazard: the agent must not start before the sidecar is ready (its placeholders and CA
//! bundle would be missing), and a sandbox prepared but never started must not outlive a
//! failed launch. So preparing returns the sandbox held at its last step; the agent is
//! released only by the start step, and each step's undo kills what it made.

use std::path::PathBuf;
use std::time::Duration;

use bottle_local::{AgentStdio, Held, LocalSandbox, SandboxHandle, SandboxSpec};
use bottle_proc::{Pid, ProcessIdentity, Reaper};

use crate::launch::{LaunchError, Step, StepContext};

/// What preparing made: the egress listener for the sidecar, and the held sandbox.
pub struct Prepared {
    /// The listener inside the sandbox's network namespace.
    pub egress: std::os::fd::OwnedFd,
    /// The sandbox, waiting for its agent.
    pub held: Held,
    /// The helper's identity (for the state record).
    pub identity: Option<ProcessIdentity>,
}

impl std::fmt::Debug for Prepared {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Prepared").field("identity", &self.identity).finish_non_exhaustive()
    }
}

/// Step: build the sandbox and hold it before the agent starts.
#[derive(Debug)]
pub struct PrepareSandbox {
    backend: LocalSandbox,
    reaper: Reaper,
    made: Option<(Pid, Option<ProcessIdentity>)>,
}

impl PrepareSandbox {
    /// A step that starts sandboxes through `backend`.
    pub fn new(backend: LocalSandbox, reaper: Reaper) -> PrepareSandbox {
        PrepareSandbox { backend, reaper, made: None }
    }
}

/// The sandbox to build and how its agent's stdio is wired.
#[derive(Debug)]
pub struct SandboxRequest {
    /// The sandbox.
    pub spec: SandboxSpec,
    /// The agent's stdin, stdout and stderr.
    pub stdio: AgentStdio,
}

impl Step for PrepareSandbox {
    type Input = SandboxRequest;
    type Output = Prepared;
    const NAME: &'static str = "prepare the sandbox";

    async fn run(
        &mut self,
        request: SandboxRequest,
        _: &StepContext,
    ) -> Result<Prepared, LaunchError> {
        let (held, egress) = self
            .backend
            .start_held(&request.spec, request.stdio, &self.reaper)
            .await
            .map_err(|e| LaunchError::step(Self::NAME, bottle_runtime::error_chain(&e)))?;
        let pid = held
            .pid()
            .ok_or_else(|| LaunchError::step(Self::NAME, "the sandbox ended while held"))?;
        let identity = ProcessIdentity::of(pid);
        self.made = Some((pid, identity));
        Ok(Prepared { egress: egress.into(), held, identity })
    }

    async fn undo(&mut self) -> Result<(), LaunchError> {
        let Some((pid, identity)) = self.made.take() else { return Ok(()) };
        kill_and_wait(&self.reaper, pid, identity, Duration::ZERO)
            .await
            .map_err(|e| LaunchError::step(Self::NAME, e))
    }
}

/// Step: release the held sandbox with the agent's final environment.
#[derive(Debug)]
pub struct StartAgent {
    reaper: Reaper,
    grace: Duration,
    made: Option<(Pid, Option<ProcessIdentity>)>,
}

impl StartAgent {
    /// A step that gives the agent `grace` to stop on teardown.
    pub fn new(reaper: Reaper, grace: Duration) -> StartAgent {
        StartAgent { reaper, grace, made: None }
    }
}

/// The held sandbox and what to add to the agent's environment.
#[derive(Debug)]
pub struct Release {
    /// The sandbox.
    pub held: Held,
    /// Placeholders, proxy and CA variables.
    pub extra_env: Vec<(String, String)>,
}

impl Step for StartAgent {
    type Input = Release;
    type Output = SandboxHandle;
    const NAME: &'static str = "start the agent";

    async fn run(
        &mut self,
        release: Release,
        _: &StepContext,
    ) -> Result<SandboxHandle, LaunchError> {
        if let Some(pid) = release.held.pid() {
            self.made = Some((pid, ProcessIdentity::of(pid)));
        }
        release
            .held
            .release(release.extra_env)
            .await
            .map_err(|e| LaunchError::step(Self::NAME, bottle_runtime::error_chain(&e)))
    }

    async fn undo(&mut self) -> Result<(), LaunchError> {
        let Some((pid, identity)) = self.made.take() else { return Ok(()) };
        kill_and_wait(&self.reaper, pid, identity, self.grace)
            .await
            .map_err(|e| LaunchError::step(Self::NAME, e))
    }
}

/// SIGTERM (forwarded to the agent by the sandbox's init) and `grace`, then SIGKILL
/// (which takes the whole sandbox with the helper); waits until the helper is gone.
async fn kill_and_wait(
    reaper: &Reaper,
    pid: Pid,
    identity: Option<ProcessIdentity>,
    grace: Duration,
) -> Result<(), String> {
    let gone_within = |limit: Duration| async move {
        let schedule = bottle_runtime::readiness::PollSchedule::local(limit);
        let probe = || async move { !identity.is_some_and(|i| i.is_alive()) };
        bottle_runtime::readiness::poll_until("the sandbox's exit", schedule, || 0.0, probe)
            .await
            .is_ok()
    };
    super::stop::terminate(reaper, pid, "the sandbox", grace, gone_within).await
}

/// Where the `bottle-sandbox` helper and `bottle-init` are: beside the running `bottle`,
/// unless `$BOTTLE_LIBEXEC` names another folder.
pub fn companion(name: &str, libexec: Option<PathBuf>) -> PathBuf {
    let dir = libexec
        .or_else(|| std::env::current_exe().ok().and_then(|p| p.parent().map(PathBuf::from)));
    dir.map(|d| d.join(name)).unwrap_or_else(|| PathBuf::from(name))
}
