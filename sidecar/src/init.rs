//! bottle-init's run: config -> tree -> signals and control -> shutdown -> sweep -> exit.
//!
//! Hazard: when PID 1 exits, the kernel SIGKILLs everything left in the namespace, so
//! a graceful stop must finish *before* we return: daemons in reverse order within the
//! grace budget, then a sweep of every remaining process (SIGTERM, a short wait,
//! SIGKILL), all inside `grace_seconds`. Work triggered by signals (reload, restarts)
//! runs in tasks, never in the node's handler, and USR1 restarts coalesce.

use std::collections::BTreeMap;
use std::ffi::OsString;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use bottle_runtime::exit::TreeExitCode;
use bottle_runtime::signals::SignalKind;
use bottle_runtime::spec::{ChildSpec, ChildStart, ProcessSpec, SupervisorSpec};
use bottle_runtime::{Node, NodeConfig, NodeHandle, NodeMsg, SupervisorMsg, SupervisorStatus};
use ractor::ActorRef;
use tokio::sync::mpsc;

use bottle_protocol::secrets::Secrets;

use crate::config::{
    ConfigFileError, DEFAULT_CONTROL_SOCKET, DaemonReload, InitConfig, InitConfigFile,
};

/// What to run.
#[derive(Debug)]
pub(crate) enum Mode {
    /// Daemons from a config file.
    Config(PathBuf),
    /// One program, tini style: it inherits our environment; its exit is ours.
    Single(Vec<OsString>),
}

/// Command-line choices that are not in the config file.
#[derive(Debug)]
pub(crate) struct Options {
    pub(crate) mode: Mode,
    pub(crate) grace: Option<f64>,
    pub(crate) control_socket: Option<PathBuf>,
    pub(crate) exit_report: Option<PathBuf>,
}

/// Why bottle-init could not run its tree.
#[derive(Debug, thiserror::Error)]
pub(crate) enum InitError {
    #[error("configuration error")]
    Config(#[from] ConfigFileError),
    #[error("cannot start the supervision tree")]
    Runtime(#[from] bottle_runtime::RuntimeError),
    #[error("cannot bind the control socket {path:?}")]
    Control {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
}

impl InitError {
    /// The exit code for this error (docs/exit-codes.md).
    pub(crate) fn exit_code(&self) -> i32 {
        match self {
            InitError::Config(_) | InitError::Runtime(bottle_runtime::RuntimeError::Config(_)) => {
                TreeExitCode::Config.code()
            }
            InitError::Control { .. } => TreeExitCode::Config.code(),
            InitError::Runtime(_) => TreeExitCode::Internal.code(),
        }
    }
}

/// The running init: what the control socket and the signal hook act on.
pub(crate) struct Init {
    config_path: Option<PathBuf>,
    config: Mutex<Option<InitConfig>>,
    node: Mutex<Option<ActorRef<NodeMsg>>>,
    root: tokio::sync::OnceCell<ActorRef<SupervisorMsg>>,
    usr1: mpsc::Sender<()>,
    /// Resolved once at start; a reload hands the builtins the same values.
    secrets: Secrets,
}

impl std::fmt::Debug for Init {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Init").field("config_path", &self.config_path).finish_non_exhaustive()
    }
}

fn environ() -> BTreeMap<String, OsString> {
    std::env::vars_os().filter_map(|(k, v)| Some((k.into_string().ok()?, v))).collect()
}

fn daemons_filter() -> Option<String> {
    std::env::var("BOTTLE_SIDECAR_DAEMONS").ok()
}

impl Init {
    async fn root(&self) -> Option<ActorRef<SupervisorMsg>> {
        if let Some(root) = self.root.get() {
            return Some(root.clone());
        }
        let node = self.node.lock().unwrap_or_else(|p| p.into_inner()).clone()?;
        let root = ractor::call_t!(node, NodeMsg::Root, 5000).ok().flatten()?;
        let _ = self.root.set(root.clone());
        Some(root)
    }

    pub(crate) async fn status(&self) -> Option<SupervisorStatus> {
        let root = self.root().await?;
        ractor::call_t!(root, SupervisorMsg::Status, 10_000).ok()
    }

    pub(crate) async fn restart(&self, name: &str) -> Result<(), String> {
        let root = self.root().await.ok_or("the daemon tree is not up")?;
        let path = name.to_string();
        ractor::call_t!(root, |reply| SupervisorMsg::RestartChild { path, reply }, 120_000)
            .map_err(|e| e.to_string())?
    }

    pub(crate) fn stop(&self, reason: &str) {
        if let Some(node) = self.node.lock().unwrap_or_else(|p| p.into_inner()).as_ref() {
            let _ = node.send_message(NodeMsg::Shutdown(reason.to_string()));
        }
    }

    /// Re-reads the config. An invalid file keeps the running configuration.
    pub(crate) async fn reload(&self) -> Result<String, String> {
        let Some(path) = &self.config_path else {
            return Err("no config file to reload (single-program mode)".into());
        };
        let new = InitConfig::load(path).and_then(|c| {
            c.to_spec(&environ(), daemons_filter().as_deref(), &self.secrets).map(|spec| (c, spec))
        });
        let (new, spec) = match new {
            Ok(ok) => ok,
            Err(err) => {
                let why = crate::chain(&err);
                tracing::warn!(error = %why, "Reload failed; keeping the current configuration.");
                return Err(format!("reload failed, configuration unchanged: {why}"));
            }
        };
        let root = self.root().await.ok_or("the daemon tree is not up")?;
        let old = self.config.lock().unwrap_or_else(|p| p.into_inner()).clone();
        let mut notes = Vec::new();
        for child in spec.children {
            let name = child.name.clone();
            let old_daemon = old.as_ref().and_then(|o| o.daemon.iter().find(|d| d.name == name));
            let new_daemon = new.daemon.iter().find(|d| d.name == name);
            match old_daemon {
                None => notes.push(format!("{name}: new daemon, starts with the next bottle-init")),
                Some(o) if Some(o) != new_daemon => {
                    let result = ractor::call_t!(
                        root,
                        |reply| SupervisorMsg::UpdateChild { spec: Box::new(child), reply },
                        10_000
                    );
                    match result {
                        Ok(Ok(())) => {
                            notes.push(format!("{name}: changed, takes effect at its next restart"))
                        }
                        Ok(Err(e)) => notes.push(format!("{name}: {e}")),
                        Err(e) => notes.push(format!("{name}: {e}")),
                    }
                }
                Some(_) => {}
            }
            if new_daemon.is_some_and(|d| d.builtin.is_some()) {
                let path = name.clone();
                match ractor::call_t!(
                    root,
                    |reply| SupervisorMsg::ReloadChild { path, reply },
                    30_000
                ) {
                    Ok(Ok(what)) => notes.push(format!("{name}: {what}")),
                    Ok(Err(why)) => notes.push(format!("{name}: reload failed: {why}")),
                    Err(e) => notes.push(format!("{name}: reload failed: {e}")),
                }
            }
            if let Some(signal) = new_daemon.and_then(|d| d.reload_signal().ok().flatten()) {
                let path = name.clone();
                match ractor::call_t!(
                    root,
                    |reply| SupervisorMsg::SignalChild { path, signal, reply },
                    10_000
                ) {
                    Ok(Ok(true)) => notes.push(format!(
                        "{name}: sent {}",
                        bottle_runtime::proc::signal::name(signal)
                    )),
                    Ok(Ok(false)) => {
                        notes.push(format!("{name}: not running; reload signal not sent"))
                    }
                    other => notes.push(format!("{name}: reload signal failed: {other:?}")),
                }
            }
        }
        if let Some(old) = &old {
            for gone in old.daemon.iter().filter(|o| !new.daemon.iter().any(|n| n.name == o.name)) {
                notes.push(format!(
                    "{}: removed from the config, keeps running until bottle-init restarts",
                    gone.name
                ));
            }
        }
        *self.config.lock().unwrap_or_else(|p| p.into_inner()) = Some(new);
        let summary = if notes.is_empty() {
            "reloaded; nothing changed".to_string()
        } else {
            format!("reloaded; {}", notes.join("; "))
        };
        tracing::info!(%summary, "Configuration reloaded.");
        Ok(summary)
    }

    fn usr1_names(&self) -> Vec<String> {
        self.config
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .as_ref()
            .map(|c| c.usr1_restarts.clone())
            .unwrap_or_default()
    }
}

fn single_spec(argv: Vec<OsString>, stop_timeout: Duration) -> SupervisorSpec {
    let name = std::path::Path::new(argv.first().map(OsString::as_os_str).unwrap_or_default())
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .filter(|n| !n.is_empty() && !n.contains('/'))
        .unwrap_or_else(|| "main".into());
    let process = ProcessSpec {
        argv,
        env: std::env::vars_os().collect(),
        cwd: std::env::current_dir().ok(),
        readiness: bottle_runtime::spec::Readiness::None,
    };
    SupervisorSpec::new("init").child(
        ChildSpec::new(name, ChildStart::Process(process))
            .restart(bottle_runtime::policy::RestartType::Temporary)
            .significant(true)
            .stop_timeout(stop_timeout),
    )
}

/// Runs bottle-init to completion and returns the process exit code.
pub(crate) async fn run(options: Options) -> Result<i32, InitError> {
    let is_pid1 = std::process::id() == 1;
    let (config, config_path, argv) = match options.mode {
        Mode::Config(path) => (Some(InitConfig::load(&path)?), Some(path), None),
        Mode::Single(argv) => (None, None, Some(argv)),
    };
    let single = config.is_none();
    let grace = match options.grace {
        Some(seconds) if seconds.is_finite() && seconds > 0.0 => Duration::from_secs_f64(seconds),
        Some(seconds) => {
            return Err(ConfigFileError::Invalid {
                location: "--grace".into(),
                problem: format!("must be > 0 seconds, got {seconds}"),
            }
            .into());
        }
        None => {
            config.as_ref().map(InitConfig::grace).transpose()?.unwrap_or(Duration::from_secs(8))
        }
    };
    // Keep a slice of the grace budget for the final sweep of the namespace.
    let sweep_budget =
        (grace / 8).clamp(Duration::from_millis(200), Duration::from_secs(1)).min(grace / 2);
    let secrets = match &config {
        Some(config) => crate::secrets::resolve(config.secrets)?,
        None => Secrets::new(),
    };
    let spec = match &config {
        Some(config) => config.to_spec(&environ(), daemons_filter().as_deref(), &secrets)?,
        // An empty argv cannot come from main; if it did, validation refuses it.
        None => single_spec(
            argv.unwrap_or_default(),
            grace.saturating_sub(sweep_budget).max(Duration::from_millis(100)),
        ),
    };
    let control_path = options
        .control_socket
        .or_else(|| {
            config
                .as_ref()
                .map(|c| c.control_socket.clone().unwrap_or_else(|| DEFAULT_CONTROL_SOCKET.into()))
        })
        .filter(|p| !p.as_os_str().is_empty());
    let exit_report =
        options.exit_report.or_else(|| config.as_ref().and_then(|c| c.exit_report.clone()));

    let (usr1_tx, mut usr1_rx) = mpsc::channel::<()>(1);
    let init = Arc::new(Init {
        config_path,
        config: Mutex::new(config),
        node: Mutex::new(None),
        root: tokio::sync::OnceCell::new(),
        usr1: usr1_tx,
        secrets,
    });
    // Bind before starting daemons so a bad socket path is a config error with nothing started.
    let listener = match &control_path {
        Some(path) => Some(
            crate::control::bind(path)
                .map_err(|source| InitError::Control { path: path.clone(), source })?,
        ),
        None => None,
    };

    let hook_init = init.clone();
    let on_signal: bottle_runtime::SignalHook = Arc::new(move |kind, root| {
        let init = hook_init.clone();
        match (kind, single) {
            // tini style: the program gets HUP/USR1/USR2 as they come.
            (SignalKind::Hup | SignalKind::Usr1 | SignalKind::Usr2, true) => {
                if let Some(root) = root {
                    let root = root.clone();
                    let signal = match kind {
                        SignalKind::Hup => libc::SIGHUP,
                        SignalKind::Usr1 => libc::SIGUSR1,
                        _ => libc::SIGUSR2,
                    };
                    tokio::spawn(async move {
                        let status = ractor::call_t!(root, SupervisorMsg::Status, 5000);
                        if let Ok(status) = status {
                            for child in status.children {
                                let path = child.name;
                                let _ = ractor::call_t!(
                                    root,
                                    |reply| SupervisorMsg::SignalChild { path, signal, reply },
                                    5000
                                );
                            }
                        }
                    });
                }
            }
            (SignalKind::Hup, false) => {
                tokio::spawn(async move {
                    let _ = init.reload().await;
                });
            }
            (SignalKind::Usr1, false) => {
                // Capacity 1: restarts requested while one runs coalesce into one more.
                if init.usr1.try_send(()).is_err() {
                    tracing::info!("SIGUSR1 coalesced with a restart already pending.");
                }
            }
            _ => tracing::info!(signal = ?kind, "Signal has no meaning here; ignored."),
        }
    });

    let node_config = NodeConfig {
        grace: grace.saturating_sub(sweep_budget),
        on_signal: Some(on_signal),
        ..NodeConfig::default()
    };
    let node: NodeHandle = Node::start(spec, node_config).await?;
    *init.node.lock().unwrap_or_else(|p| p.into_inner()) = Some(node.actor().clone());
    tracing::info!(pid1 = is_pid1, grace = ?grace, control = ?control_path, "bottle-init started.");

    let usr1_init = init.clone();
    let usr1_task = tokio::spawn(async move {
        while usr1_rx.recv().await.is_some() {
            for name in usr1_init.usr1_names() {
                match usr1_init.restart(&name).await {
                    Ok(()) => tracing::info!(daemon = %name, "Restarted (SIGUSR1)."),
                    Err(why) => tracing::info!(daemon = %name, %why, "Restart skipped (SIGUSR1)."),
                }
            }
        }
    });
    let control_task = listener.map(|l| tokio::spawn(crate::control::serve(l, init.clone())));

    let exit = node.wait().await;
    let sweep_started = Instant::now();
    usr1_task.abort();
    if let Some(task) = control_task {
        task.abort();
    }
    if let Some(path) = &control_path {
        let _ = std::fs::remove_file(path);
    }
    let swept = sweep(is_pid1, sweep_budget).await;
    tracing::info!(code = exit.code, cause = ?exit.report.cause, swept, sweep = ?sweep_started.elapsed(), "bottle-init exiting.");
    if let Some(path) = exit_report
        && let Err(err) = write_report(&path, &exit.report)
    {
        tracing::error!(path = %path.display(), error = %err, "Cannot write the exit report.");
    }
    Ok(exit.code)
}

/// Last sweep: SIGTERM (+SIGCONT) to every remaining process, half the budget to exit,
/// then SIGKILL; reap throughout. Returns how many were signalled.
async fn sweep(whole_namespace: bool, budget: Duration) -> usize {
    let Ok(reaper) = bottle_runtime::process_reaper() else { return 0 };
    let deadline = Instant::now() + budget;
    let others = |reaper: &bottle_runtime::proc::Reaper| {
        reaper.reap();
        let me = std::process::id() as i32;
        if whole_namespace {
            bottle_runtime::proc::fd::list_pids().into_iter().filter(|&p| p != me).count()
        } else {
            bottle_runtime::proc::fd::children_of(me).len()
                + bottle_runtime::proc::fd::zombies_of(me).len()
        }
    };
    if others(&reaper) == 0 {
        return 0;
    }
    let signalled = reaper.sweep_signal(libc::SIGTERM, whole_namespace);
    reaper.sweep_signal(libc::SIGCONT, whole_namespace);
    tracing::info!(signalled, "Sweeping leftover processes: SIGTERM.");
    let term_deadline = Instant::now() + budget / 2;
    while Instant::now() < term_deadline && others(&reaper) > 0 {
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    if others(&reaper) > 0 {
        let killed = reaper.sweep_signal(libc::SIGKILL, whole_namespace);
        tracing::warn!(killed, "Leftover processes ignored SIGTERM: SIGKILL.");
        while Instant::now() < deadline && others(&reaper) > 0 {
            tokio::time::sleep(Duration::from_millis(2)).await;
        }
    }
    signalled
}

fn write_report(
    path: &std::path::Path,
    report: &bottle_runtime::report::ExitReport,
) -> std::io::Result<()> {
    let json =
        bottle_protocol::exit::ExitReport::from(report).to_json().map_err(std::io::Error::other)?;
    if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
        std::fs::create_dir_all(dir)?;
    }
    let tmp = path.with_extension("json.tmp");
    std::fs::write(&tmp, json)?;
    std::fs::rename(&tmp, path)
}
