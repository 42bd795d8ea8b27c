//! bottle-init's run: config -> tree -> signals and control -> shutdown -> sweep -> exit.
//!
//! Hazard: when PID 1 exits, the kernel SIGKILLs everything left in the namespace, so
//! a graceful stop must finish *before* we return: daemons in reverse order within the
//! grace budget, then a sweep of every remaining process (SIGTERM, a short wait,
//! SIGKILL), all inside `grace_seconds`. Work triggered by signals (reload, restarts)
//! runs in tasks, never in the node's handler, and USR1 restarts coalesce.
//! A reload diffs the running daemons against the new file: removed daemons are stopped
//! (in reverse order) and removed, changed ones restart with their new definition, added
//! ones start in their configured place; the running tree is the truth it diffs against.

use std::collections::BTreeMap;
use std::ffi::OsString;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use bottle_runtime::exit::TreeExitCode;
use bottle_runtime::signals::SignalKind;
use bottle_runtime::spec::{ChildSpec, ChildStart, ProcessSpec, SupervisorSpec};
use bottle_runtime::{
    ControlError, EventFeed, Node, NodeConfig, NodeHandle, NodeMsg, SupervisorMsg,
    SupervisorStatus, TreeEvent,
};
use ractor::ActorRef;
use tokio::sync::{broadcast, mpsc};

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
    feed: Mutex<Option<EventFeed>>,
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
        restart_daemon(&root, name).await.map_err(|e| e.to_string())
    }

    /// Every tree event from now on (`ctl events`); `None` before the tree started.
    pub(crate) fn subscribe(&self) -> Option<broadcast::Receiver<TreeEvent>> {
        self.feed.lock().unwrap_or_else(|p| p.into_inner()).as_ref().map(EventFeed::subscribe)
    }

    pub(crate) fn stop(&self, reason: &str) {
        if let Some(node) = self.node.lock().unwrap_or_else(|p| p.into_inner()).as_ref() {
            let _ = node.send_message(NodeMsg::Shutdown(reason.to_string()));
        }
    }

    /// Re-reads the config and applies it to the running tree (see the module docs).
    /// An invalid file keeps the running configuration.
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
        let running: Vec<String> = ractor::call_t!(root, SupervisorMsg::Status, 10_000)
            .map_err(|_| "the daemon tree did not answer; configuration unchanged".to_string())?
            .children
            .into_iter()
            .map(|c| c.name)
            .collect();
        let old = self.config.lock().unwrap_or_else(|p| p.into_inner()).clone();
        let target: Vec<&str> = spec.children.iter().map(|c| c.name.as_str()).collect();
        let definition = |config: Option<&InitConfig>, name: &str| {
            config.and_then(|c| c.daemon.iter().find(|d| d.name == name)).cloned()
        };
        let plan = ReloadPlan::new(&running, &target, |name| {
            definition(old.as_ref(), name) != definition(Some(&new), name)
        });
        let mut children: BTreeMap<String, ChildSpec> =
            spec.children.into_iter().map(|c| (c.name.clone(), c)).collect();
        let mut notes = Vec::new();
        for name in &plan.removed {
            notes.push(match remove_daemon(&root, name).await {
                Ok(()) => format!("{name}: removed from the config; stopped"),
                Err(e) => format!("{name}: removal failed: {e}"),
            });
        }
        for name in &plan.changed {
            let Some(child) = children.remove(name) else { continue };
            notes.push(match replace_daemon(&root, child).await {
                Ok(()) => format!("{name}: changed; restarted with the new definition"),
                Err(e) => format!("{name}: changed; restart failed: {e}"),
            });
        }
        for (name, index) in &plan.added {
            let Some(child) = children.remove(name) else { continue };
            notes.push(match add_daemon(&root, child, *index).await {
                Ok(()) => format!("{name}: new daemon; started"),
                Err(e) => format!("{name}: new daemon; {e}"),
            });
        }
        for name in &plan.kept {
            let Some(daemon) = new.daemon.iter().find(|d| &d.name == name) else { continue };
            if daemon.builtin.is_some() {
                notes.push(match reload_daemon(&root, name).await {
                    Ok(what) => format!("{name}: {what}"),
                    Err(e) => format!("{name}: reload failed: {e}"),
                });
            }
            if let Some(signal) = daemon.reload_signal().ok().flatten() {
                notes.push(match signal_daemon(&root, name, signal).await {
                    Ok(true) => {
                        format!("{name}: sent {}", bottle_runtime::proc::signal::name(signal))
                    }
                    Ok(false) => format!("{name}: not running; reload signal not sent"),
                    Err(e) => format!("{name}: reload signal failed: {e}"),
                });
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

/// What a reload changes, from the names of the running daemons (in start order) and
/// of the reloaded configuration (in config order).
#[derive(Debug, Default, PartialEq)]
struct ReloadPlan {
    /// Running but no longer configured: stopped and removed, in reverse start order.
    removed: Vec<String>,
    /// In both, with a different definition: restarted with the new one.
    changed: Vec<String>,
    /// Configured but not running: added at this index (counted after the removals and
    /// the additions before it), right after the configured daemon before it.
    added: Vec<(String, usize)>,
    /// In both and unchanged: they get their reload hook and reload signal.
    kept: Vec<String>,
}

impl ReloadPlan {
    fn new(running: &[String], target: &[&str], changed: impl Fn(&str) -> bool) -> ReloadPlan {
        let mut plan = ReloadPlan {
            removed: running
                .iter()
                .rev()
                .filter(|r| !target.contains(&r.as_str()))
                .cloned()
                .collect(),
            ..ReloadPlan::default()
        };
        let mut order: Vec<&str> =
            running.iter().map(String::as_str).filter(|r| target.contains(r)).collect();
        for (i, &name) in target.iter().enumerate() {
            if order.contains(&name) {
                if changed(name) {
                    plan.changed.push(name.to_string());
                } else {
                    plan.kept.push(name.to_string());
                }
                continue;
            }
            let after = target[..i].iter().rev().find_map(|p| order.iter().position(|o| o == p));
            let index = after.map_or(0, |p| p + 1);
            order.insert(index, name);
            plan.added.push((name.to_string(), index));
        }
        plan
    }
}

const DAEMON_CALL_MS: u64 = 120_000;

fn unreachable(name: &str) -> ControlError {
    ControlError::Unreachable { path: format!("init/{name}") }
}

async fn restart_daemon(root: &ActorRef<SupervisorMsg>, name: &str) -> Result<(), ControlError> {
    let path = name.to_string();
    ractor::call_t!(root, |reply| SupervisorMsg::RestartChild { path, reply }, DAEMON_CALL_MS)
        .map_err(|_| unreachable(name))?
}

async fn remove_daemon(root: &ActorRef<SupervisorMsg>, name: &str) -> Result<(), ControlError> {
    let name_owned = name.to_string();
    ractor::call_t!(
        root,
        |reply| SupervisorMsg::RemoveChild { name: name_owned, reply },
        DAEMON_CALL_MS
    )
    .map_err(|_| unreachable(name))?
}

/// The new definition replaces the old one, then the daemon restarts with it.
async fn replace_daemon(
    root: &ActorRef<SupervisorMsg>,
    child: ChildSpec,
) -> Result<(), ControlError> {
    let name = child.name.clone();
    let spec = Box::new(child);
    ractor::call_t!(root, |reply| SupervisorMsg::UpdateChild { spec, reply }, 10_000)
        .map_err(|_| unreachable(&name))??;
    restart_daemon(root, &name).await
}

async fn add_daemon(
    root: &ActorRef<SupervisorMsg>,
    child: ChildSpec,
    index: usize,
) -> Result<(), ControlError> {
    let name = child.name.clone();
    let spec = Box::new(child);
    ractor::call_t!(
        root,
        |reply| SupervisorMsg::AddChild { spec, index: Some(index), reply },
        DAEMON_CALL_MS
    )
    .map_err(|_| unreachable(&name))?
}

async fn reload_daemon(root: &ActorRef<SupervisorMsg>, name: &str) -> Result<String, ControlError> {
    let path = name.to_string();
    ractor::call_t!(root, |reply| SupervisorMsg::ReloadChild { path, reply }, 30_000)
        .map_err(|_| unreachable(name))?
}

async fn signal_daemon(
    root: &ActorRef<SupervisorMsg>,
    name: &str,
    signal: i32,
) -> Result<bool, ControlError> {
    let path = name.to_string();
    ractor::call_t!(root, |reply| SupervisorMsg::SignalChild { path, signal, reply }, 10_000)
        .map_err(|_| unreachable(name))?
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
        feed: Mutex::new(None),
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
    *init.feed.lock().unwrap_or_else(|p| p.into_inner()) = Some(node.feed());
    tracing::info!(pid1 = is_pid1, grace = ?grace, control = ?control_path, "bottle-init started.");
    // Start-up (arguments, configuration, the first spawns) is over: hand what it freed
    // back to the kernel, so a bottle-long PID 1 does not keep it.
    bottle_runtime::proc::memory::release_free_heap();

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

    let feed = node.feed();
    let exit = node.wait().await;
    let sweep_started = Instant::now();
    drain_event_streams(&feed, STREAM_DRAIN).await;
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

/// How long bottle-init waits, at exit, for `ctl events` streams to deliver the node's
/// last event (a client that does not read cannot hold PID 1 longer than this).
const STREAM_DRAIN: Duration = Duration::from_millis(100);

/// Waits (at most `budget`) until every event stream has ended, which each does right
/// after writing `node_exited`.
async fn drain_event_streams(feed: &EventFeed, budget: Duration) {
    let deadline = Instant::now() + budget;
    while feed.subscribers() > 0 && Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(1)).await;
    }
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

#[cfg(test)]
mod tests {
    use super::*;

    fn names(list: &[&str]) -> Vec<String> {
        list.iter().map(|s| s.to_string()).collect()
    }

    #[test]
    fn a_reload_plan_removes_in_reverse_adds_in_place_and_restarts_changed_daemons() {
        let running = names(&["a", "b", "c", "d"]);
        let plan = ReloadPlan::new(&running, &["x", "a", "c", "y", "z"], |name| name == "c");
        assert_eq!(
            plan,
            ReloadPlan {
                removed: names(&["d", "b"]),
                changed: names(&["c"]),
                // After the removals the tree is [a, c]: x goes first, y and z after c.
                added: vec![("x".into(), 0), ("y".into(), 3), ("z".into(), 4)],
                kept: names(&["a"]),
            }
        );
    }

    #[test]
    fn an_unchanged_reload_plans_nothing_but_the_reload_hooks() {
        let running = names(&["a", "b"]);
        let plan = ReloadPlan::new(&running, &["a", "b"], |_| false);
        assert_eq!(plan, ReloadPlan { kept: names(&["a", "b"]), ..ReloadPlan::default() });
    }
}
