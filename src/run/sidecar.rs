//! Starting the sidecar (`bottle-init` with the egress builtin) for a bottle, waiting
//! until it is ready, and stopping it.
//!
//! Hazard: the sidecar holds every real token. They must reach it without passing
//! through argv, a file, the state directory or an environment variable: they are written
//! as one JSON map into a pipe whose read end `bottle-init` inherits at a fixed fd and
//! reads once (`secrets = { fd = 4 }`). The rendered configuration and the routes file in
//! the state directory name tokens, never hold them. The egress listener reaches the
//! sidecar the same way, as an inherited fd, so no port is allocated on the host.

use std::io::Write;
use std::os::fd::OwnedFd;
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};
use std::time::Duration;

use bottle_proc::{ExitStatus, InheritFd, Pid, ProcessIdentity, Reaper, SpawnSpec};
use bottle_protocol::control::{Reply, Request};
use bottle_protocol::egress::{EgressSettings, Listen};
use bottle_protocol::git_gate::{GitGateSettings, RepoSettings};
use bottle_protocol::init::{Builtin, DaemonConfig, InitConfig, SecretsSource};
use bottle_protocol::secrets::Secrets;
use tokio::io::{AsyncBufReadExt, AsyncWriteExt};
use tokio::sync::watch;

use crate::launch::{LaunchError, Step, StepContext};

/// The fd `bottle-init` finds the egress listener at.
pub const EGRESS_FD: i32 = 3;
/// The fd `bottle-init` reads the secrets map from.
pub const SECRETS_FD: i32 = 4;
/// The fd `bottle-init` finds the git gate's listener at.
pub const GIT_GATE_FD: i32 = 5;

/// The git gate of a bottle that declares repositories.
#[derive(Debug)]
pub struct GitGatePlan {
    /// The gate's listening socket (the launcher binds it; egress connects to it).
    pub listener: OwnedFd,
    /// The declared repositories (token names only).
    pub repos: std::collections::BTreeMap<String, RepoSettings>,
}

/// Everything the sidecar step needs.
pub struct SidecarPlan {
    /// The bottle's id (names the approval requests and audit lines).
    pub bottle_id: String,
    /// The bottle's state folder.
    pub state_dir: PathBuf,
    /// The `bottle-init` program.
    pub init_program: PathBuf,
    /// The routes file's text (token names only).
    pub routes_text: String,
    /// The real token values, by the names the routes use.
    pub secrets: Secrets,
    /// The listening socket agents connect to (created by the backend).
    pub egress: OwnedFd,
    /// Extra upstream CA certificates (PEM), e.g. the demo API's.
    pub upstream_ca: Option<PathBuf>,
    /// The approval queue folder shared with `bottle approvals`.
    pub approvals: PathBuf,
    /// The git gate, when the bottle declares repositories.
    pub git_gate: Option<GitGatePlan>,
}

impl std::fmt::Debug for SidecarPlan {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SidecarPlan")
            .field("bottle_id", &self.bottle_id)
            .field("secrets", &self.secrets)
            .finish_non_exhaustive()
    }
}

/// Paths of a bottle's sidecar files inside its state folder.
#[derive(Debug, Clone)]
pub struct SidecarPaths {
    /// `sidecar.toml`, the rendered configuration.
    pub config: PathBuf,
    /// `routes.yaml`.
    pub routes: PathBuf,
    /// `control.sock`.
    pub control: PathBuf,
    /// `ca/`: `ca.pem`, `bundle.pem`, `placeholders.env`.
    pub ca_dir: PathBuf,
    /// `audit.jsonl`.
    pub audit: PathBuf,
    /// `sidecar.log`.
    pub log: PathBuf,
    /// `sidecar-exit.json`.
    pub exit_report: PathBuf,
    /// `git/`: the git gate's mirrors and its own files.
    pub git: PathBuf,
}

impl SidecarPaths {
    /// The paths for a bottle folder.
    pub fn new(state_dir: &Path) -> SidecarPaths {
        SidecarPaths {
            config: state_dir.join("sidecar.toml"),
            routes: state_dir.join("routes.yaml"),
            control: state_dir.join("control.sock"),
            ca_dir: state_dir.join("ca"),
            audit: state_dir.join("audit.jsonl"),
            log: state_dir.join("sidecar.log"),
            exit_report: state_dir.join("sidecar-exit.json"),
            git: state_dir.join("git"),
        }
    }
}

/// A running sidecar.
#[derive(Debug, Clone)]
pub struct Sidecar {
    /// Its pid (it leads its own process group).
    pub pid: Pid,
    /// Pid plus start time, for the state record.
    pub identity: Option<ProcessIdentity>,
    /// Its files.
    pub paths: SidecarPaths,
    /// Its exit status once the reaper collected it.
    pub exited: watch::Receiver<Option<ExitStatus>>,
}

impl Sidecar {
    /// Resolves with the exit status once the sidecar has exited.
    pub async fn wait(&self) -> ExitStatus {
        let mut rx = self.exited.clone();
        loop {
            if let Some(status) = *rx.borrow_and_update() {
                return status;
            }
            if rx.changed().await.is_err() {
                return ExitStatus::Signaled { signal: 9, core_dumped: false };
            }
        }
    }
}

/// The rendered configuration of a bottle's sidecar (no secrets: they go through the pipe).
pub fn render_config(plan: &SidecarPlan, paths: &SidecarPaths) -> InitConfig {
    let mut egress = EgressSettings::new(&paths.routes);
    egress.listen = Listen::Fd(EGRESS_FD);
    egress.ca_out = Some(paths.ca_dir.clone());
    egress.audit_log = Some(paths.audit.clone());
    egress.upstream_ca = plan.upstream_ca.clone();
    egress.approvals = Some(plan.approvals.clone());
    egress.bottle = plan.bottle_id.clone();
    let mut daemon = vec![DaemonConfig::builtin("egress", Builtin::Egress(egress))];
    if let Some(gate) = &plan.git_gate {
        let mut settings = GitGateSettings::new(&paths.git);
        settings.listen = Listen::Fd(GIT_GATE_FD);
        settings.repos = gate.repos.clone();
        settings.approvals = Some(plan.approvals.clone());
        settings.bottle = plan.bottle_id.clone();
        settings.upstream_ca = plan.upstream_ca.clone();
        daemon.push(DaemonConfig::builtin("git-gate", Builtin::GitGate(settings)));
    }
    InitConfig {
        control_socket: Some(paths.control.clone()),
        exit_report: Some(paths.exit_report.clone()),
        secrets: SecretsSource::Fd(SECRETS_FD),
        daemon,
        ..InitConfig::default()
    }
}

fn write_private(path: &Path, text: &str) -> std::io::Result<()> {
    let mut file = std::fs::OpenOptions::new()
        .create(true)
        .truncate(true)
        .write(true)
        .mode(0o600)
        .open(path)?;
    file.write_all(text.as_bytes())
}

fn failed(message: impl std::fmt::Display) -> LaunchError {
    LaunchError::step(StartSidecar::NAME, message.to_string())
}

/// Step: start `bottle-init` for the bottle.
#[derive(Debug)]
pub struct StartSidecar {
    reaper: Reaper,
    running: Option<Sidecar>,
    grace: Duration,
}

impl StartSidecar {
    /// A step that spawns through `reaper` and gives the sidecar `grace` to stop.
    pub fn new(reaper: Reaper, grace: Duration) -> StartSidecar {
        StartSidecar { reaper, running: None, grace }
    }
}

impl Step for StartSidecar {
    type Input = SidecarPlan;
    type Output = Sidecar;
    const NAME: &'static str = "start the sidecar";

    async fn run(
        &mut self,
        mut plan: SidecarPlan,
        _: &StepContext,
    ) -> Result<Sidecar, LaunchError> {
        let paths = SidecarPaths::new(&plan.state_dir);
        write_private(&paths.routes, &plan.routes_text)
            .map_err(|e| failed(format!("cannot write the routes file: {e}")))?;
        let config = render_config(&plan, &paths).to_toml().map_err(failed)?;
        write_private(&paths.config, &config)
            .map_err(|e| failed(format!("cannot write the sidecar config: {e}")))?;
        let secrets = secrets_pipe(&plan.secrets)
            .map_err(|e| failed(format!("cannot pass the secrets: {e}")))?;
        let mut inherit = vec![
            InheritFd { fd: plan.egress, target: EGRESS_FD },
            InheritFd { fd: secrets, target: SECRETS_FD },
        ];
        if let Some(gate) = plan.git_gate.take() {
            inherit.push(InheritFd { fd: gate.listener, target: GIT_GATE_FD });
        }
        let spec = SpawnSpec {
            argv: vec![
                plan.init_program.clone().into(),
                "--config".into(),
                paths.config.clone().into(),
            ],
            env: vec![
                ("PATH".into(), "/usr/local/bin:/usr/bin:/bin".into()),
                ("BOTTLE_INIT_LOG".into(), "info,ractor=warn".into()),
                ("NO_COLOR".into(), "1".into()),
            ],
            cwd: Some(plan.state_dir.clone()),
            capture_output: true,
            inherit,
            ..SpawnSpec::default()
        };
        let mut child = self.reaper.spawn(spec).map_err(failed)?;
        let (tx, exited) = watch::channel(None);
        let exit = std::mem::replace(&mut child.exit, tokio::sync::oneshot::channel().1);
        tokio::spawn(async move {
            let status =
                exit.await.unwrap_or(ExitStatus::Signaled { signal: 9, core_dumped: false });
            tx.send_replace(Some(status));
        });
        pump_log(child.stdout.take(), child.stderr.take(), &paths.log);
        let sidecar =
            Sidecar { pid: child.pid, identity: ProcessIdentity::of(child.pid), paths, exited };
        self.running = Some(sidecar.clone());
        Ok(sidecar)
    }

    async fn undo(&mut self) -> Result<(), LaunchError> {
        let Some(sidecar) = self.running.take() else { return Ok(()) };
        let gone_within = |limit: Duration| {
            let mut rx = sidecar.exited.clone();
            async move { tokio::time::timeout(limit, rx.wait_for(|s| s.is_some())).await.is_ok() }
        };
        super::stop::terminate(&self.reaper, sidecar.pid, "the sidecar", self.grace, gone_within)
            .await
            .map_err(|e| LaunchError::step(Self::NAME, e))
    }
}

/// A pipe already holding the secrets as JSON, write end closed: the read end.
fn secrets_pipe(secrets: &Secrets) -> std::io::Result<OwnedFd> {
    let text = serde_json::to_vec(secrets).map_err(std::io::Error::other)?;
    let (read, mut write) = std::io::pipe()?;
    // A pipe holds 64 KiB before a write blocks; a secrets map is far smaller, and a
    // bigger one is refused rather than deadlocking the launch.
    if text.len() >= 60 << 10 {
        return Err(std::io::Error::other("the secrets map is larger than 60 KiB"));
    }
    write.write_all(&text)?;
    drop(write);
    Ok(read.into())
}

/// Copies the sidecar's stdout and stderr into its log file.
fn pump_log(stdout: Option<OwnedFd>, stderr: Option<OwnedFd>, log: &Path) {
    let log = log.to_path_buf();
    for fd in [stdout, stderr].into_iter().flatten() {
        let log = log.clone();
        tokio::spawn(async move {
            let Ok(pipe) = tokio::net::unix::pipe::Receiver::from_owned_fd(fd) else { return };
            let Ok(mut file) = tokio::fs::OpenOptions::new()
                .create(true)
                .append(true)
                .mode(0o600)
                .open(&log)
                .await
            else {
                return;
            };
            let mut lines = tokio::io::BufReader::new(pipe).lines();
            while let Ok(Some(line)) = lines.next_line().await {
                let _ = file.write_all(format!("{line}\n").as_bytes()).await;
            }
        });
    }
}

/// What the agent needs from a ready sidecar.
#[derive(Debug, Clone)]
pub struct Ready {
    /// The bottle CA certificate (PEM).
    pub ca_pem: String,
    /// `NAME=placeholder` pairs the agent gets instead of tokens.
    pub placeholders: Vec<(String, String)>,
}

/// Step: wait until the sidecar's egress daemon is up and its CA and placeholders exist.
#[derive(Debug)]
pub struct WaitReady {
    /// Overall budget.
    pub deadline: Duration,
    /// Whether the git gate must be running too.
    pub git_gate: bool,
}

impl Step for WaitReady {
    type Input = Sidecar;
    type Output = Ready;
    const NAME: &'static str = "wait for the sidecar";

    async fn run(&mut self, sidecar: Sidecar, _: &StepContext) -> Result<Ready, LaunchError> {
        // A unix-socket round trip costs microseconds: poll often (every 2-10 ms), since
        // the launch waits on exactly this (doubling to 100 ms cost up to half of it).
        let schedule = bottle_runtime::readiness::PollSchedule {
            backoff: bottle_runtime::backoff::Backoff {
                initial: Duration::from_millis(2),
                factor: 1.5,
                cap: Duration::from_millis(10),
                jitter: 0.0,
            },
            deadline: self.deadline,
        };
        let daemons: &[&str] = if self.git_gate { &["egress", "git-gate"] } else { &["egress"] };
        let probe = || {
            let sidecar = sidecar.clone();
            async move {
                sidecar.exited.borrow().is_some() || running(&sidecar.paths.control, daemons).await
            }
        };
        bottle_runtime::readiness::poll_until("the sidecar's egress", schedule, || 0.0, probe)
            .await
            .map_err(|t| LaunchError::step(Self::NAME, t.to_string()))?;
        if let Some(status) = *sidecar.exited.borrow() {
            return Err(LaunchError::step(
                Self::NAME,
                format!(
                    "the sidecar exited during start ({status:?}); see {}",
                    sidecar.paths.log.display()
                ),
            ));
        }
        let ca_pem = std::fs::read_to_string(sidecar.paths.ca_dir.join("ca.pem"))
            .map_err(|e| LaunchError::step(Self::NAME, format!("no CA certificate: {e}")))?;
        let env = std::fs::read_to_string(sidecar.paths.ca_dir.join("placeholders.env"))
            .map_err(|e| LaunchError::step(Self::NAME, format!("no placeholders: {e}")))?;
        let placeholders = env
            .lines()
            .filter_map(|line| line.split_once('='))
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        Ok(Ready { ca_pem, placeholders })
    }

    async fn undo(&mut self) -> Result<(), LaunchError> {
        Ok(())
    }
}

/// True when the control socket answers and its `egress` daemon runs.
pub async fn egress_running(control: &Path) -> bool {
    running(control, &["egress"]).await
}

/// True when the control socket answers and every one of `daemons` runs.
pub async fn running(control: &Path, daemons: &[&str]) -> bool {
    matches!(status(control).await, Some(Reply::Status(tree))
        if daemons.iter().all(|name| tree.children.iter().any(|d| d.name == *name && d.running)))
}

/// One control-socket request and its reply.
pub async fn status(control: &Path) -> Option<Reply> {
    let mut stream = tokio::net::UnixStream::connect(control).await.ok()?;
    stream.write_all(&Request::Status.to_line()).await.ok()?;
    let mut line = Vec::new();
    let mut reader = tokio::io::BufReader::new(stream);
    tokio::time::timeout(Duration::from_secs(2), reader.read_until(b'\n', &mut line))
        .await
        .ok()?
        .ok()?;
    Reply::from_line(&line).ok()
}

#[cfg(test)]
mod tests {
    use super::*;
    use bottle_protocol::secrets::Secret;

    fn fd() -> OwnedFd {
        std::fs::File::open("/dev/null").unwrap().into()
    }

    #[test]
    fn a_bottle_with_repos_gets_a_git_gate_on_its_inherited_fd_and_no_secret_in_the_config() {
        let mut secrets = Secrets::new();
        secrets.insert("GH", Secret::new("ghp_real_value_never_rendered_0123"));
        let repo = RepoSettings {
            url: "https://example.com/o/demo.git".into(),
            token_ref: Some("GH".into()),
            username: "x-access-token".into(),
            identity: None,
            host_key: None,
        };
        let plan = SidecarPlan {
            bottle_id: "b-1".into(),
            state_dir: "/state/b-1".into(),
            init_program: "bottle-init".into(),
            routes_text: String::new(),
            secrets,
            egress: fd(),
            upstream_ca: None,
            approvals: "/approvals".into(),
            git_gate: Some(GitGatePlan { listener: fd(), repos: [("demo".into(), repo)].into() }),
        };
        let config = render_config(&plan, &SidecarPaths::new(&plan.state_dir));
        let text = config.to_toml().unwrap();
        assert!(!text.contains("ghp_real_value"), "{text}");
        assert_eq!(InitConfig::from_toml(&text).unwrap(), config);
        let names: Vec<&str> = config.daemon.iter().map(|d| d.name.as_str()).collect();
        assert_eq!(names, ["egress", "git-gate"]);
        let Some(Builtin::GitGate(gate)) = &config.daemon[1].builtin else { panic!("{text}") };
        assert_eq!(gate.listen, Listen::Fd(GIT_GATE_FD));
        assert_eq!(gate.root, PathBuf::from("/state/b-1/git"));
        assert_eq!(gate.approvals.as_deref(), Some(Path::new("/approvals")));
        assert_eq!(gate.bottle, "b-1");
        assert_eq!(gate.repos["demo"].token_ref.as_deref(), Some("GH"));
    }
}
