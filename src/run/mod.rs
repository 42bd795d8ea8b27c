//! `bottle run`: one bottle, from manifest to teardown, as launch steps.
//!
//! Hazard: every failure, interrupt or sidecar death at any point must end in the same
//! place: what was made is undone in reverse order, the state record says how it ended,
//! and the exit code tells the agent's own failure (its code) from the launcher's (125),
//! an interrupt (130) and a usage error (2). The order of the steps is the one rule that
//! keeps the agent from running unprotected: the agent is released only after the
//! sidecar said its egress is up and the CA and placeholders exist.

pub mod local;
pub mod provision;
pub mod sidecar;
pub mod signals;
mod stop;
pub mod tty;

use std::path::{Path, PathBuf};
use std::time::Duration;

use bottle_local::{AgentStdio, LocalSandbox, ReadOnlyBind, SandboxHandle, SandboxSpec, Workspace};
use bottle_proc::{ExitStatus, Reaper};
use bottle_protocol::secrets::{Secret, Secrets};

use crate::exit::RunExit;
use crate::launch::{Launch, LaunchError, LaunchFailure, Step, TeardownReport};
use crate::manifest::ResolvedBottle;
use crate::state::{Allocation, BackendKind, Phase, StateRoot};

/// Reads a host variable by name.
pub type HostSecret = dyn Fn(&str) -> Option<String> + Send + Sync;

/// Everything `bottle run` needs, resolved by `main`.
pub struct RunRequest {
    /// The bottle.
    pub bottle: ResolvedBottle,
    /// The agent's argv.
    pub command: Vec<String>,
    /// A host directory bound read-write at `/workspace`.
    pub workspace: Option<PathBuf>,
    /// Where bottles keep their state.
    pub state: StateRoot,
    /// The approval queue folder (`bottle approvals`).
    pub approvals: PathBuf,
    /// Where `bottle-init` and `bottle-sandbox` are.
    pub libexec: Option<PathBuf>,
    /// Reads a host variable a route's `token_ref` names (the only way a real token
    /// enters the launch).
    pub host_secret: Box<HostSecret>,
    /// Extra upstream CA certificates (PEM) for the sidecar (the demo's fake API).
    pub upstream_ca: Option<PathBuf>,
    /// Called with each step's name as it starts (the progress display).
    pub progress: Box<dyn Fn(&str) + Send + Sync>,
    /// The host's `TERM`, when the agent gets a terminal.
    pub term: Option<String>,
}

impl std::fmt::Debug for RunRequest {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RunRequest")
            .field("bottle", &self.bottle.name)
            .field("command", &self.command)
            .field("workspace", &self.workspace)
            .finish_non_exhaustive()
    }
}

/// How a run ended.
#[derive(Debug)]
pub struct RunOutcome {
    /// The bottle's id, once allocated.
    pub id: Option<String>,
    /// The exit code.
    pub exit: RunExit,
    /// Why the launch stopped, when it did not run the agent to its end.
    pub cause: Option<LaunchError>,
    /// What teardown did.
    pub teardown: TeardownReport,
}

/// The sidecar's grace to stop, and the agent's.
const GRACE: Duration = Duration::from_secs(10);
/// Where agents reach egress inside the sandbox.
const PROXY_INSIDE: &str = "http://127.0.0.1:9099";

/// Runs a bottle on the local backend to the end.
pub async fn run(request: RunRequest) -> RunOutcome {
    let reaper = match bottle_runtime::process_reaper() {
        Ok(reaper) => reaper,
        Err(e) => {
            return early_failure(LaunchError::step(
                "start",
                format!("cannot install the reaper: {e}"),
            ));
        }
    };
    let mut launch = match Launch::new(GRACE * 2).await {
        Ok(launch) => launch,
        Err(e) => return early_failure(e),
    };
    let (signals, resized) = match signals::start(reaper.clone(), launch.interrupt()).await {
        Ok(started) => started,
        Err(e) => {
            return early_failure(LaunchError::step(
                "start",
                format!("cannot handle signals: {e}"),
            ));
        }
    };
    let mut allocation = None;
    let result = launch_and_wait(&request, &reaper, &mut launch, &mut allocation, resized).await;
    let (exit, cause) = match result {
        Ok(status) => (RunExit::from_status(status), None),
        Err(cause) => (exit_for(&cause), Some(cause)),
    };
    if let Some(a) = allocation.as_mut() {
        let _ = a.update(|r| r.phase = Phase::Stopping);
    }
    let teardown = launch.teardown().await;
    if let Some(a) = allocation.as_mut() {
        let _ = a.update(|r| r.phase = Phase::Exited { code: i32::from(exit.code()) });
    }
    signals.stop(None);
    RunOutcome { id: allocation.map(|a| a.record().id.clone()), exit, cause, teardown }
}

fn early_failure(cause: LaunchError) -> RunOutcome {
    RunOutcome {
        id: None,
        exit: RunExit::LaunchFailed,
        cause: Some(cause),
        teardown: TeardownReport::default(),
    }
}

fn exit_for(cause: &LaunchError) -> RunExit {
    match cause {
        LaunchError::Interrupted { .. } => RunExit::Interrupted,
        LaunchError::Step { step, message } if *step == <local::StartAgent as Step>::NAME => {
            if message.contains("not found") || message.contains("No such file") {
                RunExit::NotFound
            } else if message.contains("ermission denied") || message.contains("not executable") {
                RunExit::CannotExecute
            } else {
                RunExit::LaunchFailed
            }
        }
        _ => RunExit::LaunchFailed,
    }
}

async fn launch_and_wait(
    request: &RunRequest,
    reaper: &Reaper,
    launch: &mut Launch,
    allocation: &mut Option<Allocation>,
    resized: tokio::sync::watch::Receiver<u64>,
) -> Result<ExitStatus, LaunchError> {
    let secrets = resolve_secrets(&request.bottle, &*request.host_secret)?;
    let progress = &request.progress;
    progress("allocate");
    let alloc = allocate(&request.state, &request.bottle.name, &launch.context()).await?;
    let dir = alloc.dir().to_path_buf();
    let id = alloc.record().id.clone();
    let certs = provision::prepare_certs_dir(&dir)
        .map_err(|e| LaunchError::step("allocate", e.to_string()))?;
    *allocation = Some(alloc);
    let terminal = tty::Terminal::detect();
    let (stdio, pty) = tty::agent_stdio(&terminal).map_err(|e| LaunchError::step("allocate", e))?;
    let spec = sandbox_spec(request, &id, &dir, &certs);
    let helper = LocalSandbox::new(bottle_local::HelperCommand::binary(local::companion(
        "bottle-sandbox",
        request.libexec.clone(),
    )));
    progress(<local::PrepareSandbox as Step>::NAME);
    let prepared = launch
        .step(
            local::PrepareSandbox::new(helper, reaper.clone()),
            local::SandboxRequest { spec, stdio },
        )
        .await?;
    let alloc = allocation.as_mut().expect("allocated above");
    let _ = alloc.update(|r| r.agent = prepared.identity);
    // Every resource this launch allocates exists now: let other launches allocate.
    alloc.release_lock();
    progress(<sidecar::StartSidecar as Step>::NAME);
    let (git_gate, gate_route) = git_gate_plan(&request.bottle)?;
    let mut routes = request.bottle.routes.clone();
    routes.extend(gate_route);
    let plan = sidecar::SidecarPlan {
        bottle_id: id.clone(),
        state_dir: dir.clone(),
        init_program: local::companion("bottle-init", request.libexec.clone()),
        routes_text: crate::manifest::routes_file_text(&routes),
        secrets,
        egress: prepared.egress,
        upstream_ca: request.upstream_ca.clone(),
        approvals: request.approvals.clone(),
        git_gate,
    };
    let running = launch.step(sidecar::StartSidecar::new(reaper.clone(), GRACE), plan).await?;
    let _ = alloc.update(|r| r.sidecar = running.identity);
    progress(<sidecar::WaitReady as Step>::NAME);
    let ready = launch
        .step(
            sidecar::WaitReady {
                deadline: Duration::from_secs(30),
                git_gate: !request.bottle.repos.is_empty(),
            },
            running.clone(),
        )
        .await?;
    provision::write_trust(&certs, &ready.ca_pem, Path::new("/etc/ssl/certs/ca-certificates.crt"))
        .map_err(|e| LaunchError::step("provision", e.to_string()))?;
    let mut extra_env = provision::ready_env(PROXY_INSIDE, &ready.placeholders);
    let user = &request.bottle.git_user;
    extra_env.extend(provision::git_env(
        request.bottle.repos.iter().map(|(name, repo)| (name.as_str(), repo.url.as_str())),
        user.name.as_deref(),
        user.email.as_deref(),
    ));
    progress(<local::StartAgent as Step>::NAME);
    let agent = launch
        .step(
            local::StartAgent::new(reaper.clone(), GRACE),
            local::Release { held: prepared.held, extra_env },
        )
        .await?;
    let _ = alloc.update(|r| r.phase = Phase::Running);
    let _copy = pty.map(|master| tty::attach(master, &terminal, resized));
    wait_for_agent(agent, &running, launch).await
}

/// Allocates the bottle's id and folder, waiting for other launches to release the lock
/// without ever blocking a runtime thread, so Ctrl-C ends the wait at once.
async fn allocate(
    state: &StateRoot,
    name: &str,
    cx: &crate::launch::StepContext,
) -> Result<Allocation, LaunchError> {
    let failed = |e: crate::state::StateError| {
        LaunchError::step("allocate", bottle_runtime::error_chain(&e))
    };
    let mut lock = state.lock_wait().map_err(failed)?;
    loop {
        if let Some(allocation) = lock.try_allocate(name, BackendKind::Local).map_err(failed)? {
            return Ok(allocation);
        }
        tokio::select! {
            () = cx.interrupted() => return Err(LaunchError::Interrupted { step: "allocate" }),
            () = tokio::time::sleep(Duration::from_millis(20)) => {}
        }
    }
}

/// Waits for the agent to exit, the sidecar to die, or an interrupt.
async fn wait_for_agent(
    agent: SandboxHandle,
    sidecar: &sidecar::Sidecar,
    launch: &Launch,
) -> Result<ExitStatus, LaunchError> {
    let interrupted = launch.context();
    tokio::select! {
        status = agent.wait() => status.map_err(|e| LaunchError::step("run the agent", bottle_runtime::error_chain(&e))),
        status = sidecar.wait() => Err(LaunchError::step(
            "run the agent",
            format!("the sidecar died under the agent ({status:?}); see {}", sidecar.paths.log.display()),
        )),
        () = interrupted.interrupted() => Err(LaunchError::Interrupted { step: "run the agent" }),
    }
}

/// The git gate for a bottle that declares repositories: its listener on the host's
/// loopback (the sidecar runs on the host) and the egress route the agent reaches it by.
fn git_gate_plan(
    bottle: &ResolvedBottle,
) -> Result<(Option<sidecar::GitGatePlan>, Option<bottle_egress::routes::RouteSpec>), LaunchError> {
    if bottle.repos.is_empty() {
        return Ok((None, None));
    }
    let fail = |e: std::io::Error| {
        LaunchError::step(
            <sidecar::StartSidecar as Step>::NAME,
            format!("cannot listen for the git gate: {e}"),
        )
    };
    let listener = std::net::TcpListener::bind(("127.0.0.1", 0)).map_err(fail)?;
    let port = listener.local_addr().map_err(fail)?.port();
    let repos = bottle
        .repos
        .iter()
        .map(|(name, repo)| {
            let settings = bottle_protocol::git_gate::RepoSettings {
                url: repo.url.clone(),
                token_ref: repo.token_ref.clone(),
                username: "x-access-token".into(),
                identity: repo.identity.clone(),
                host_key: repo.host_key.clone(),
            };
            (name.clone(), settings)
        })
        .collect();
    let plan = sidecar::GitGatePlan { listener: listener.into(), repos };
    Ok((Some(plan), Some(provision::git_gate_route(port))))
}

/// The real values of every token the routes and the repositories name, read from the host.
fn resolve_secrets(
    bottle: &ResolvedBottle,
    lookup: &dyn Fn(&str) -> Option<String>,
) -> Result<Secrets, LaunchError> {
    let mut secrets = Secrets::new();
    for (name, repo) in &bottle.repos {
        let Some(token_ref) = &repo.token_ref else { continue };
        match lookup(token_ref) {
            Some(value) if !value.is_empty() => {
                secrets.insert(token_ref.clone(), Secret::new(value));
            }
            _ => {
                return Err(LaunchError::step(
                    "resolve secrets",
                    format!(
                        "repo {name:?} uses ${token_ref}, which is not set in this environment"
                    ),
                ));
            }
        }
    }
    for route in &bottle.routes {
        let Some(auth) = &route.auth else { continue };
        let name = &auth.token_ref;
        match lookup(name) {
            Some(value) if !value.is_empty() => secrets.insert(name.clone(), Secret::new(value)),
            _ => {
                return Err(LaunchError::step(
                    "resolve secrets",
                    format!(
                        "route {:?} injects ${name}, which is not set in this environment",
                        route.host
                    ),
                ));
            }
        }
    }
    Ok(secrets)
}

fn sandbox_spec(request: &RunRequest, id: &str, dir: &Path, certs: &Path) -> SandboxSpec {
    let mut spec = SandboxSpec::new(request.command.clone());
    let manifest_env: Vec<(String, String)> =
        request.bottle.env.iter().map(|(k, v)| (k.clone(), v.expose().to_string())).collect();
    spec.env = provision::base_env(&manifest_env, request.term.clone(), "/tmp");
    spec.workspace = request
        .workspace
        .as_ref()
        .map(|source| Workspace { source: source.clone(), target: PathBuf::from("/workspace") });
    spec.read_only.push(ReadOnlyBind {
        source: certs.to_path_buf(),
        target: PathBuf::from(provision::CERTS_DIR_INSIDE),
    });
    spec.hostname = id.chars().take(63).collect();
    spec.exec_socket = Some(dir.join("exec.sock"));
    spec
}

/// What a failed launch says, for `main` to print.
pub fn describe_failure(failure: &LaunchFailure) -> String {
    let mut text = failure.cause.to_string();
    for err in &failure.teardown.errors {
        text.push_str(&format!("\nteardown: {err}"));
    }
    text
}

/// The stdio a headless agent gets: the launcher's own.
pub fn inherited_stdio() -> std::io::Result<AgentStdio> {
    use std::os::fd::AsFd;
    Ok(AgentStdio::Inherit {
        stdin: std::io::stdin().as_fd().try_clone_to_owned()?,
        stdout: std::io::stdout().as_fd().try_clone_to_owned()?,
        stderr: std::io::stderr().as_fd().try_clone_to_owned()?,
    })
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use super::*;
    use crate::manifest::{GitRepo, GitUser};

    fn bottle(repos: BTreeMap<String, GitRepo>) -> ResolvedBottle {
        ResolvedBottle {
            name: "b".into(),
            env: BTreeMap::new(),
            routes: Vec::new(),
            egress_log: None,
            git_user: GitUser::default(),
            repos,
            agent_provider: None,
            image: None,
            prompt: String::new(),
            sources: Vec::new(),
            warnings: Vec::new(),
        }
    }

    #[test]
    fn declared_repos_get_a_listening_gate_a_route_and_their_tokens_resolved() {
        assert!(matches!(git_gate_plan(&bottle(BTreeMap::new())), Ok((None, None))));
        let ssh = GitRepo {
            url: "ssh://git@example.com/o/infra.git".into(),
            identity: Some("/keys/infra".into()),
            host_key: Some("ssh-ed25519 AAAA".into()),
            token_ref: None,
        };
        let https = GitRepo {
            url: "https://example.com/o/web.git".into(),
            identity: None,
            host_key: None,
            token_ref: Some("WEB_TOKEN".into()),
        };
        let b = bottle([("infra".into(), ssh), ("web".into(), https)].into());
        let Ok((Some(plan), Some(route))) = git_gate_plan(&b) else { panic!("no gate") };
        let listener = std::net::TcpListener::from(plan.listener);
        let port = listener.local_addr().unwrap().port();
        assert_eq!(route.connect, Some(format!("127.0.0.1:{port}")));
        assert_eq!(plan.repos["infra"].host_key.as_deref(), Some("ssh-ed25519 AAAA"));
        assert_eq!(plan.repos["web"].token_ref.as_deref(), Some("WEB_TOKEN"));
        let secrets = resolve_secrets(&b, &|n| (n == "WEB_TOKEN").then(|| "v".to_string()));
        assert!(secrets.unwrap().get("WEB_TOKEN").is_some());
        let err = resolve_secrets(&b, &|_| None).unwrap_err().to_string();
        assert!(err.contains("repo \"web\" uses $WEB_TOKEN, which is not set"), "{err}");
    }
}
