//! The single reaper: the one place in a bottle process that calls `waitpid`.
//!
//! Hazard: if the reaper could collect a child between `fork` and the moment the child's
//! pid is entered in the table, the status would be misfiled as an orphan's; and std's
//! `Command::spawn` itself waits on a child whose exec failed, which a concurrent
//! `waitpid(-1)` would turn into a panic. So the table lock is held across the whole of
//! `spawn` (fork, exec, the exec-error read, std's internal wait) and across every
//! `waitpid(-1, WNOHANG)` call. Orphans re-parented to us (as PID 1, or as a child
//! subreaper) are reaped and counted; their statuses go nowhere.
//!
//! When a supervised child exits, what is left of its process group is SIGKILLed, and a
//! group is only ever signalled while its leader is unreaped: a pid (so a pgid) can be
//! recycled the moment its zombie is collected, and any process (not only ours, which
//! the table lock holds back) may fork, take that pid and `setsid`. So the reaper first
//! peeks at the exited child (`waitid(WNOWAIT)` leaves the zombie in place, pinning its
//! pid), SIGKILLs the group, and only then collects that one pid.

use std::collections::HashMap;
use std::os::fd::OwnedFd;
use std::os::unix::process::CommandExt;
use std::process::Stdio;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};

use tokio::sync::oneshot;

use crate::spawn::{child_setup, placements};
use crate::{ExitStatus, Pid, ReaperError, SpawnError, SpawnSpec, SpawnedChild};

static INSTALLED: AtomicBool = AtomicBool::new(false);

/// What one call to [`Reaper::reap`] collected.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct ReapSummary {
    /// Supervised children whose status was delivered.
    pub supervised: usize,
    /// Orphans (children we did not spawn) that were reaped.
    pub orphans: usize,
}

/// Handle to the process's one reaper. Cheap to clone.
#[derive(Clone, Debug)]
pub struct Reaper {
    inner: Arc<Inner>,
}

#[derive(Debug)]
struct Inner {
    table: Mutex<Table>,
    orphans_reaped: AtomicU64,
}

#[derive(Debug, Default)]
struct Table {
    /// Children spawned by us and not yet reaped, keyed by pid.
    waiting: HashMap<Pid, Option<oneshot::Sender<ExitStatus>>>,
}

impl Reaper {
    /// Installs the process's reaper. Fails if one is already installed: there must be
    /// exactly one waiter. With `subreaper`, orphaned descendants are re-parented to us
    /// (`PR_SET_CHILD_SUBREAPER`; redundant but harmless when we are PID 1).
    pub fn install(subreaper: bool) -> Result<Reaper, ReaperError> {
        if INSTALLED.swap(true, Ordering::SeqCst) {
            return Err(ReaperError::AlreadyInstalled);
        }
        if subreaper {
            nix::sys::prctl::set_child_subreaper(true)
                .map_err(|errno| ReaperError::Subreaper(errno.into()))?;
        }
        Ok(Reaper {
            inner: Arc::new(Inner {
                table: Mutex::new(Table::default()),
                orphans_reaped: AtomicU64::new(0),
            }),
        })
    }

    fn table(&self) -> MutexGuard<'_, Table> {
        // A poisoned lock only means a panic elsewhere while holding it; the table is
        // still consistent (every mutation is a single insert or remove).
        self.inner.table.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// Spawns a child in its own process group, with exactly the environment given.
    #[allow(clippy::disallowed_methods)] // this is the one sanctioned spawn site
    pub fn spawn(&self, spec: SpawnSpec) -> Result<SpawnedChild, SpawnError> {
        let SpawnSpec { argv, env, cwd, capture_output, notify_fd, stdin, inherit } = spec;
        let Some(program) = argv.first() else { return Err(SpawnError::EmptyArgv) };
        let program_path = std::path::PathBuf::from(program);
        let mut command = std::process::Command::new(program);
        command
            .args(&argv[1..])
            .env_clear()
            .envs(env.iter().map(|(k, v)| (k, v)))
            .current_dir(cwd.unwrap_or_else(|| "/".into()))
            .stdin(stdin.map(Stdio::from).unwrap_or_else(Stdio::null))
            .process_group(0);
        if capture_output {
            command.stdout(Stdio::piped()).stderr(Stdio::piped());
        } else {
            command.stdout(Stdio::null()).stderr(Stdio::null());
        }
        let placed = placements(&notify_fd, &inherit)
            .map_err(|source| SpawnError::Other { program: program_path.clone(), source })?;
        let highest = placed.iter().map(|&(_, target)| target).max();
        let in_child = placed.clone();
        // SAFETY: child_setup only makes async-signal-safe calls (see spawn.rs); the
        // placements were computed (and allocated) before the fork.
        unsafe {
            command.pre_exec(move || child_setup(&in_child));
        }
        let (tx, rx) = oneshot::channel();
        // std's exec-error pipe takes the lowest free fds; if one landed on the readiness
        // fd's number, the child's dup2 would clobber it. Occupy every free number up to
        // the target (close-on-exec) for the duration of the spawn.
        let _reserved = highest.map(reserve_up_to).unwrap_or_default();
        let mut table = self.table();
        let mut child =
            command.spawn().map_err(|source| classify_spawn_error(program_path, source))?;
        let pid = Pid::try_from(child.id()).unwrap_or(Pid::MAX);
        table.waiting.insert(pid, Some(tx));
        drop(table);
        // Our copy of the readiness pipe's write end must close now, or EOF never comes.
        drop(notify_fd);
        drop(inherit);
        let stdout = child.stdout.take().map(OwnedFd::from);
        let stderr = child.stderr.take().map(OwnedFd::from);
        // Dropping std's Child neither waits nor kills.
        drop(child);
        Ok(SpawnedChild { pid, stdout, stderr, exit: rx })
    }

    /// Collects every child that has exited, without blocking. Called on each SIGCHLD
    /// (and on a slow safety tick). SIGCHLD coalesces, so this drains until empty.
    pub fn reap(&self) -> ReapSummary {
        let mut summary = ReapSummary::default();
        loop {
            let mut table = self.table();
            let Some(pid) = peek_exited() else { return summary };
            if table.waiting.contains_key(&pid) {
                // The leader is a zombie, so its pgid is still its own. Whatever it left
                // in its group goes with it (systemd's control-group kill), so no helper
                // outlives its daemon into the next restart.
                let _ = crate::signal::kill_group(pid, libc::SIGKILL);
            }
            let Some(raw) = collect(pid) else { return summary };
            let Some(status) = ExitStatus::from_raw(raw) else { continue };
            match table.waiting.remove(&pid) {
                Some(sender) => {
                    summary.supervised += 1;
                    if let Some(sender) = sender {
                        // The receiver may be gone (its actor was killed): that is fine.
                        let _ = sender.send(status);
                    }
                }
                None => {
                    summary.orphans += 1;
                    self.inner.orphans_reaped.fetch_add(1, Ordering::Relaxed);
                    tracing::debug!(pid, %status, "Reaped an orphan.");
                }
            }
        }
    }

    /// Signals the process group led by `pid`, but only if that child has not been
    /// reaped yet (so its pgid cannot have been recycled). Returns whether it was sent.
    pub fn signal_group(&self, pid: Pid, signal: i32) -> std::io::Result<bool> {
        let table = self.table();
        if !table.waiting.contains_key(&pid) {
            return Ok(false);
        }
        crate::signal::kill_group(pid, signal)?;
        drop(table);
        Ok(true)
    }

    /// The last sweep before exit: sends `signal` to every process left that we did not
    /// spawn through [`Reaper::spawn`] (orphans re-parented to us) or, with
    /// `whole_namespace` (we are PID 1), to every other process in the PID namespace.
    /// Holds the table lock, so no pid we signal can be reaped and recycled meanwhile.
    /// Returns how many processes were signalled.
    pub fn sweep_signal(&self, signal: i32, whole_namespace: bool) -> usize {
        let _table = self.table();
        if whole_namespace {
            return crate::signal::signal_all_others(signal);
        }
        let me = std::process::id() as Pid;
        crate::fd::children_of(me)
            .into_iter()
            .filter(|&pid| crate::signal::kill_pid(pid, signal))
            .count()
    }

    /// Pids of supervised children not yet reaped.
    pub fn live_children(&self) -> Vec<Pid> {
        self.table().waiting.keys().copied().collect()
    }

    /// Orphans reaped since install.
    pub fn orphans_reaped(&self) -> u64 {
        self.inner.orphans_reaped.load(Ordering::Relaxed)
    }
}

/// The pid of a child that has exited, left unreaped (`WNOWAIT`): its zombie keeps the pid
/// and pgid from being recycled. `None` when no child has exited (or we have none).
/// Call with the table lock held.
#[allow(clippy::disallowed_methods)] // the one sanctioned waiter
fn peek_exited() -> Option<Pid> {
    loop {
        // SAFETY: siginfo_t is plain data; all zeroes is a valid value, and si_pid must
        // read 0 when WNOHANG finds nothing (waitid(2) leaves it untouched then).
        let mut info: libc::siginfo_t = unsafe { std::mem::zeroed() };
        // SAFETY: waitid with a valid out-pointer; WNOHANG never blocks, WNOWAIT reaps nothing.
        let rc = unsafe {
            libc::waitid(libc::P_ALL, 0, &mut info, libc::WEXITED | libc::WNOHANG | libc::WNOWAIT)
        };
        if rc < 0 {
            // ECHILD: no children at all. EINTR: try again.
            if std::io::Error::last_os_error().raw_os_error() == Some(libc::EINTR) {
                continue;
            }
            return None;
        }
        // SAFETY: waitid filled `info` for a child event (or left the zeroes).
        let pid = unsafe { info.si_pid() };
        return (pid > 0).then_some(pid);
    }
}

/// Collects the exited child `pid` (seen by [`peek_exited`]) and returns its raw status.
/// Call with the table lock held.
#[allow(clippy::disallowed_methods)] // the one sanctioned waiter
fn collect(pid: Pid) -> Option<i32> {
    loop {
        let mut raw = 0;
        // SAFETY: waitpid with a valid out-pointer; WNOHANG never blocks.
        let rc = unsafe { libc::waitpid(pid, &mut raw, libc::WNOHANG) };
        if rc == pid {
            return Some(raw);
        }
        if rc < 0 && std::io::Error::last_os_error().raw_os_error() == Some(libc::EINTR) {
            continue;
        }
        // Nobody else waits, so this does not happen; stop the drain rather than spin.
        tracing::error!(pid, rc, "A child seen exiting could not be collected.");
        return None;
    }
}

/// Opens /dev/null until the lowest free fd number is above `target`.
fn reserve_up_to(target: std::os::fd::RawFd) -> Vec<std::fs::File> {
    use std::os::fd::AsRawFd;
    let mut held = Vec::new();
    while held.len() < 4096 {
        let Ok(file) = std::fs::File::open("/dev/null") else { break };
        if file.as_raw_fd() > target {
            break;
        }
        held.push(file);
    }
    held
}

fn classify_spawn_error(program: std::path::PathBuf, source: std::io::Error) -> SpawnError {
    match source.raw_os_error() {
        Some(libc::ENOENT) => SpawnError::NotFound { program, source },
        Some(libc::EACCES) | Some(libc::ENOEXEC) | Some(libc::EISDIR) => {
            SpawnError::NotExecutable { program, source }
        }
        _ => SpawnError::Other { program, source },
    }
}

#[cfg(test)]
mod tests {
    use std::io::BufRead;
    use std::time::{Duration, Instant};

    use super::*;

    /// Polls `cond` until it holds; panics after 10 s.
    fn until(what: &str, mut cond: impl FnMut() -> bool) {
        let deadline = Instant::now() + Duration::from_secs(10);
        while !cond() {
            assert!(Instant::now() < deadline, "timed out waiting for {what}");
            std::thread::sleep(Duration::from_millis(2));
        }
    }

    /// Whether `pid` is gone or a zombie (dead, not yet collected by its new parent).
    fn dead(pid: Pid) -> bool {
        match std::fs::read_to_string(format!("/proc/{pid}/stat")) {
            Err(_) => true,
            Ok(stat) => {
                stat.rsplit(')').next().is_some_and(|rest| rest.trim_start().starts_with('Z'))
            }
        }
    }

    /// The only test in this crate that installs a reaper: under `cargo test` the unit
    /// tests share a process (nextest gives each its own), and a second install fails.
    #[test]
    fn a_second_install_is_refused_and_the_first_kills_what_a_leader_left_in_its_group() {
        let first = Reaper::install(false).expect("the first reaper installs");
        let second = Reaper::install(false).expect_err("a second reaper must be refused");
        assert!(matches!(second, ReaperError::AlreadyInstalled), "{second:?}");
        assert!(second.to_string().contains("exactly one may wait on children"), "{second}");

        // The leader prints its background helper's pid and exits 7; the helper is in
        // the leader's group and must die with it.
        let script = "sleep 60 & echo $!; exit 7";
        let child = first
            .spawn(SpawnSpec {
                argv: vec!["/bin/sh".into(), "-c".into(), script.into()],
                env: vec![("PATH".into(), "/usr/bin:/bin".into())],
                capture_output: true,
                ..SpawnSpec::default()
            })
            .expect("spawn");
        let mut line = String::new();
        let stdout = std::fs::File::from(child.stdout.expect("captured stdout"));
        std::io::BufReader::new(stdout).read_line(&mut line).expect("read the helper's pid");
        let helper: Pid = line.trim().parse().expect("a pid");
        let mut exit = child.exit;
        let mut status = None;
        until("the leader's status", || {
            first.reap();
            status = exit.try_recv().ok();
            status.is_some()
        });
        assert_eq!(status, Some(ExitStatus::Exited(7)));
        assert!(first.live_children().is_empty());
        until("the helper left in the leader's group to die", || dead(helper));
    }
    #[test]
    fn debug_of_a_spawn_spec_names_env_variables_never_their_values() {
        let spec = SpawnSpec {
            argv: vec!["daemon".into()],
            env: vec![("GH_TOKEN".into(), "ghp_realsecretvalue".into())],
            ..SpawnSpec::default()
        };
        let shown = format!("{spec:?}");
        assert!(!shown.contains("ghp_realsecretvalue"), "{shown}");
        assert!(shown.contains("GH_TOKEN") && shown.contains("daemon"), "{shown}");
    }
}
