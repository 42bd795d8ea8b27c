//! The child-process actor: one external program, from spawn to reaped.
//!
//! Hazard: if this actor dies without stopping its process (a panic, a `kill` from an
//! ended supervisor), the process would run on unsupervised. [`KillGuard`] lives in the
//! actor state and SIGKILLs the process group when dropped, whatever the reason.
//! Stopping is SIGTERM to the whole group (plus SIGCONT, so a frozen child can act on
//! it), then SIGKILL to the group at the stop timeout.

use std::os::fd::OwnedFd;
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicI32, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use bottle_proc::{ExitStatus, NotifyFd, Pid, Reaper, SpawnSpec};
use ractor::{Actor, ActorProcessingErr, ActorRef, RpcReplyPort};
use tokio::io::AsyncReadExt;
use tokio::sync::watch;
use tokio::task::JoinHandle;

use crate::context::{ExitSlot, TreeContext, fill_slot};
use crate::exit::Termination;
use crate::readiness::{PollSchedule, poll_until};
use crate::spec::{ProcessSpec, Readiness};

/// How long we wait for a child's output pipes to drain after it exited. A grandchild
/// that inherited the pipe may keep it open forever; we do not wait for it.
const PUMP_DRAIN: Duration = Duration::from_millis(250);

/// How long we wait for the reaper after SIGKILL before giving up on a process
/// (a task in uninterruptible sleep cannot be killed sooner).
const KILL_WAIT: Duration = Duration::from_secs(5);

/// Everything the process actor can be asked to do. Closed on purpose.
#[derive(Debug)]
pub enum ProcessMsg {
    /// Sent by this actor's own exit watcher when the reaper collected the child.
    Exited(ExitStatus),
    /// Send a signal to the child's process group (SIGHUP reload, fault injection).
    /// Replies whether it was delivered (false once the child is gone).
    Signal(i32, RpcReplyPort<bool>),
    /// Current pid and uptime.
    Status(RpcReplyPort<ProcessStatus>),
    /// Fault injection: panic inside the handler (the guard must kill the process).
    #[cfg(feature = "fault-injection")]
    Panic,
}

/// A process child's live status.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ProcessStatus {
    /// Its pid.
    pub pid: Pid,
    /// Time since it became ready.
    pub uptime: Duration,
}

/// Arguments of [`ProcessActor`].
#[derive(Debug)]
pub struct ProcessArgs {
    /// `root/sub/name`, for logs.
    pub path: String,
    /// The name used as the `[name] ` output prefix.
    pub name: String,
    /// What to run.
    pub spec: ProcessSpec,
    /// SIGTERM-to-SIGKILL budget.
    pub stop_timeout: Duration,
    /// Where the termination is left for the supervisor.
    pub slot: ExitSlot,
    /// The tree's shared context.
    pub ctx: TreeContext,
    /// Fault injection: hold readiness back this long.
    pub ready_delay: Option<Duration>,
    /// Where the pid is published once spawned (saves the supervisor a round trip).
    pub pid: Arc<AtomicI32>,
}

/// The actor (stateless; see [`ProcessState`]).
#[derive(Debug)]
pub struct ProcessActor;

/// Kills the process group on drop unless the child was reaped.
#[derive(Debug)]
struct KillGuard {
    reaper: Reaper,
    pid: Pid,
    exit: watch::Receiver<Option<ExitStatus>>,
}

impl Drop for KillGuard {
    fn drop(&mut self) {
        if self.exit.borrow().is_none() {
            let _ = self.reaper.signal_group(self.pid, libc::SIGKILL);
        }
    }
}

/// The actor's state: one running child.
#[derive(Debug)]
pub struct ProcessState {
    guard: KillGuard,
    pumps: Vec<JoinHandle<()>>,
    path: String,
    stop_timeout: Duration,
    slot: ExitSlot,
    ready_at: Instant,
}

impl Actor for ProcessActor {
    type Msg = ProcessMsg;
    type State = ProcessState;
    type Arguments = ProcessArgs;

    /// Spawns the child and waits for readiness: the supervisor's `spawn_linked`
    /// returns only once the child is ready, which makes start order meaningful.
    async fn pre_start(
        &self,
        myself: ActorRef<ProcessMsg>,
        args: ProcessArgs,
    ) -> Result<ProcessState, ActorProcessingErr> {
        let ProcessArgs { path, name, spec, stop_timeout, slot, ctx, ready_delay, pid: pid_out } =
            args;
        let mut env = spec.env.clone();
        let mut notify_fd = None;
        let mut notify_read: Option<OwnedFd> = None;
        let mut notify_socket: Option<NotifySocket> = None;
        match &spec.readiness {
            Readiness::NotifyFd { fd, .. } => {
                let (read, write) = nix::unistd::pipe2(nix::fcntl::OFlag::O_CLOEXEC)?;
                notify_fd = Some(NotifyFd { write_end: write, target: *fd });
                notify_read = Some(read);
            }
            Readiness::SdNotify { .. } => {
                let socket = NotifySocket::bind()?;
                env.push(("NOTIFY_SOCKET".into(), socket.path.clone().into_os_string()));
                notify_socket = Some(socket);
            }
            _ => {}
        }
        let spawned = match ctx.reaper.spawn(SpawnSpec {
            argv: spec.argv.clone(),
            env,
            cwd: spec.cwd.clone(),
            capture_output: true,
            notify_fd,
            stdin: None,
            inherit: Vec::new(),
        }) {
            Ok(spawned) => spawned,
            Err(err) => {
                let reason = error_chain(&err);
                tracing::error!(child = %path, error = %reason, "Spawn failed.");
                fill_slot(&slot, Termination::SpawnFailed { reason, shell_code: err.shell_code() });
                return Err(Box::new(err));
            }
        };
        let pid = spawned.pid;
        let (exit_tx, exit_rx) = watch::channel(None);
        pid_out.store(pid, std::sync::atomic::Ordering::Release);
        let reaped = spawned.exit;
        // One hop from the reaper to this actor: the watch serves stop and readiness,
        // the message serves the running actor (queued until its loop starts).
        tokio::spawn(async move {
            if let Ok(status) = reaped.await {
                let _ = exit_tx.send(Some(status));
                let _ = myself.send_message(ProcessMsg::Exited(status));
            }
        });
        let guard = KillGuard { reaper: ctx.reaper.clone(), pid, exit: exit_rx.clone() };
        let mut pumps = Vec::new();
        for fd in [spawned.stdout, spawned.stderr].into_iter().flatten() {
            pumps.push(tokio::spawn(crate::output::pump(name.clone(), fd, ctx.sink.clone())));
        }
        tracing::debug!(child = %path, pid, "Spawned.");

        // Without a readiness check the child is started once exec succeeded: no race
        // with an exit that may already be on its way (that exit arrives as a message).
        if spec.readiness == Readiness::None && ready_delay.is_none() {
            return Ok(ProcessState {
                guard,
                pumps,
                path,
                stop_timeout,
                slot,
                ready_at: Instant::now(),
            });
        }
        let deadline = spec.readiness.deadline();
        let ready = async {
            if let Some(delay) = ready_delay {
                tokio::time::sleep(delay).await;
            }
            wait_ready(&spec.readiness, &path, notify_read, notify_socket.as_ref(), &ctx).await
        };
        let mut exit_watch = exit_rx.clone();
        let outcome = tokio::select! {
            // Biased: an exit that raced readiness is reported as an exit, not as ready;
            // a shutdown of the tree stops a child that is still starting.
            biased;
            status = exit_watch.wait_for(Option::is_some) => Err(StartFailure::Exited(status.ok().and_then(|s| *s))),
            () = ctx.shutdown_signalled() => Err(StartFailure::Shutdown),
            ready = ready => ready.map_err(|_| StartFailure::NotReady),
        };
        drop(notify_socket);
        let started = Instant::now();
        match outcome {
            Ok(()) => {
                Ok(ProcessState { guard, pumps, path, stop_timeout, slot, ready_at: started })
            }
            Err(StartFailure::Shutdown) => {
                let (status, forced) =
                    stop_group(&ctx.reaper, pid, stop_timeout, &mut exit_watch, &path).await;
                drain_pumps(&mut pumps).await;
                match status {
                    Some(status) => {
                        fill_slot(&slot, Termination::from_status(status, true, forced))
                    }
                    None => fill_slot(
                        &slot,
                        Termination::ActorFailed { reason: format!("pid {pid} survived SIGKILL") },
                    ),
                }
                Err(format!("{path} stopped while starting: the tree is shutting down").into())
            }
            Err(StartFailure::Exited(Some(status))) => {
                drain_pumps(&mut pumps).await;
                tracing::warn!(child = %path, %status, "Exited before it was ready.");
                fill_slot(&slot, Termination::from_status(status, false, false));
                Err(format!("{path} exited before it was ready ({status})").into())
            }
            Err(StartFailure::Exited(None) | StartFailure::NotReady) => {
                let waited = deadline.unwrap_or_default() + ready_delay.unwrap_or_default();
                let _ = ctx.reaper.signal_group(pid, libc::SIGKILL);
                let _ = tokio::time::timeout(KILL_WAIT, exit_watch.wait_for(Option::is_some)).await;
                drain_pumps(&mut pumps).await;
                tracing::error!(child = %path, ?waited, "Not ready before its deadline; killed.");
                fill_slot(&slot, Termination::ReadinessTimeout { waited });
                Err(format!("{path} not ready after {waited:?}").into())
            }
        }
    }

    async fn handle(
        &self,
        myself: ActorRef<ProcessMsg>,
        msg: ProcessMsg,
        state: &mut ProcessState,
    ) -> Result<(), ActorProcessingErr> {
        match msg {
            ProcessMsg::Exited(status) => {
                drain_pumps(&mut state.pumps).await;
                fill_slot(&state.slot, Termination::from_status(status, false, false));
                myself.stop(None);
            }
            ProcessMsg::Signal(signal, reply) => {
                let sent =
                    state.guard.reaper.signal_group(state.guard.pid, signal).unwrap_or(false);
                if !reply.is_closed() {
                    let _ = reply.send(sent);
                }
            }
            ProcessMsg::Status(reply) => {
                if !reply.is_closed() {
                    let _ = reply.send(ProcessStatus {
                        pid: state.guard.pid,
                        uptime: state.ready_at.elapsed(),
                    });
                }
            }
            #[cfg(feature = "fault-injection")]
            ProcessMsg::Panic => panic!("fault injection: panic in process actor {}", state.path),
        }
        Ok(())
    }

    /// Graceful stop: SIGTERM (+SIGCONT) to the group, SIGKILL at the stop timeout.
    async fn post_stop(
        &self,
        _myself: ActorRef<ProcessMsg>,
        state: &mut ProcessState,
    ) -> Result<(), ActorProcessingErr> {
        let mut exit = state.guard.exit.clone();
        let already = *exit.borrow();
        if let Some(status) = already {
            // It ended on its own before (or while) we were asked to stop it: report that.
            drain_pumps(&mut state.pumps).await;
            fill_slot(&state.slot, Termination::from_status(status, false, false));
            return Ok(());
        }
        let pid = state.guard.pid;
        let (status, forced) =
            stop_group(&state.guard.reaper, pid, state.stop_timeout, &mut exit, &state.path).await;
        drain_pumps(&mut state.pumps).await;
        match status {
            Some(status) => fill_slot(&state.slot, Termination::from_status(status, true, forced)),
            None => {
                tracing::error!(child = %state.path, pid, "Still not reaped after SIGKILL.");
                fill_slot(
                    &state.slot,
                    Termination::ActorFailed {
                        reason: format!("pid {pid} survived SIGKILL for {KILL_WAIT:?}"),
                    },
                );
            }
        }
        Ok(())
    }
}

async fn drain_pumps(pumps: &mut Vec<JoinHandle<()>>) {
    let deadline = tokio::time::Instant::now() + PUMP_DRAIN;
    for pump in pumps.iter_mut() {
        if tokio::time::timeout_at(deadline, &mut *pump).await.is_err() {
            pump.abort();
        }
    }
    pumps.clear();
}

async fn wait_ready(
    readiness: &Readiness,
    path: &str,
    notify_read: Option<OwnedFd>,
    notify_socket: Option<&NotifySocket>,
    ctx: &TreeContext,
) -> Result<(), ()> {
    match readiness {
        Readiness::None => Ok(()),
        Readiness::Tcp { addr, deadline } => {
            let addr = *addr;
            poll_until(
                &format!("{path} tcp {addr}"),
                PollSchedule::local(*deadline),
                || ctx.jitter_draw(),
                || async move { tokio::net::TcpStream::connect(addr).await.is_ok() },
            )
            .await
            .map(drop)
            .map_err(drop)
        }
        Readiness::Unix { path: socket, deadline } => poll_until(
            &format!("{path} unix {}", socket.display()),
            PollSchedule::local(*deadline),
            || ctx.jitter_draw(),
            || async { tokio::net::UnixStream::connect(socket).await.is_ok() },
        )
        .await
        .map(drop)
        .map_err(drop),
        Readiness::NotifyFd { deadline, .. } => {
            let fd = notify_read.ok_or(())?;
            let read = async {
                let mut pipe = tokio::net::unix::pipe::Receiver::from_owned_fd(fd).map_err(drop)?;
                let mut buf = [0u8; 256];
                loop {
                    match pipe.read(&mut buf).await {
                        Ok(0) | Err(_) => {
                            // EOF without a newline: the child will never report ready.
                            std::future::pending::<()>().await;
                        }
                        Ok(n) if buf[..n].contains(&b'\n') => return Ok(()),
                        Ok(_) => {}
                    }
                }
            };
            tokio::time::timeout(*deadline, read).await.map_err(drop)?
        }
        Readiness::SdNotify { deadline } => {
            let socket = notify_socket.ok_or(())?;
            let read = async {
                let mut buf = vec![0u8; 4096];
                loop {
                    let n = socket.socket.recv(&mut buf).await.map_err(drop)?;
                    let text = String::from_utf8_lossy(&buf[..n]);
                    if text.lines().any(|line| line.trim() == "READY=1") {
                        return Ok(());
                    }
                }
            };
            tokio::time::timeout(*deadline, read).await.map_err(drop)?
        }
    }
}

/// Why a start did not end ready.
enum StartFailure {
    /// The child exited (status, if the reaper delivered one).
    Exited(Option<ExitStatus>),
    /// The readiness check failed or timed out.
    NotReady,
    /// The tree began shutting down.
    Shutdown,
}

/// SIGTERM (+SIGCONT) to the group, SIGKILL at `timeout`; returns the status and whether
/// SIGKILL was needed.
async fn stop_group(
    reaper: &Reaper,
    pid: Pid,
    timeout: Duration,
    exit: &mut watch::Receiver<Option<ExitStatus>>,
    path: &str,
) -> (Option<ExitStatus>, bool) {
    let _ = reaper.signal_group(pid, libc::SIGTERM);
    let _ = reaper.signal_group(pid, libc::SIGCONT);
    let graceful = tokio::time::timeout(timeout, exit.wait_for(Option::is_some))
        .await
        .ok()
        .and_then(|r| r.ok().and_then(|s| *s));
    if graceful.is_some() {
        return (graceful, false);
    }
    tracing::warn!(child = %path, ?timeout, "Did not stop after SIGTERM; sending SIGKILL.");
    let _ = reaper.signal_group(pid, libc::SIGKILL);
    let status = tokio::time::timeout(KILL_WAIT, exit.wait_for(Option::is_some))
        .await
        .ok()
        .and_then(|r| r.ok().and_then(|s| *s));
    (status, true)
}

/// A bound `NOTIFY_SOCKET` datagram socket; the file is removed on drop.
#[derive(Debug)]
struct NotifySocket {
    socket: tokio::net::UnixDatagram,
    path: PathBuf,
}

impl NotifySocket {
    fn bind() -> std::io::Result<NotifySocket> {
        static COUNTER: AtomicU64 = AtomicU64::new(0);
        let dir =
            std::env::var_os("XDG_RUNTIME_DIR").map_or_else(std::env::temp_dir, PathBuf::from);
        let path = dir.join(format!(
            "bottle-notify-{}-{}.sock",
            std::process::id(),
            COUNTER.fetch_add(1, Ordering::Relaxed)
        ));
        let _ = std::fs::remove_file(&path);
        let socket = tokio::net::UnixDatagram::bind(&path)?;
        Ok(NotifySocket { socket, path })
    }
}

impl Drop for NotifySocket {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.path);
    }
}

/// `error: cause: cause` on one line, for logs and reports.
pub fn error_chain(err: &dyn std::error::Error) -> String {
    let mut text = err.to_string();
    let mut source = err.source();
    while let Some(cause) = source {
        text.push_str(": ");
        text.push_str(&cause.to_string());
        source = cause.source();
    }
    text
}
