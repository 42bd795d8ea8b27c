//! The sandbox helper: the single-threaded process that builds one sandbox.
//!
//! Hazard: namespace setup cannot run between `fork` and `exec` of the multi-threaded
//! launcher (only async-signal-safe calls are allowed there), and a half-built sandbox
//! must never run the agent. So the launcher spawns this helper (a fresh, single-threaded
//! process) and the helper does the setup in ordinary code, reporting the first failure
//! over the setup channel and stopping there. Three processes result:
//!
//! 1. the helper (the launcher's child): `unshare` user (then its uid/gid maps), mount,
//!    network, IPC, UTS, cgroup and PID namespaces; forks PID 1; forwards signals to it
//!    and exits with its code;
//! 2. PID 1 of the new PID namespace: brings `lo` up, listens on the egress address and
//!    hands the listener to the launcher, builds and pivots into the new root, mounts
//!    `/proc` and `/dev`, sets the hostname, drops every capability, sets no_new_privs,
//!    loads the seccomp filter; forks the agent, forwards signals to it, reaps orphans,
//!    exits with the agent's code (128 + signal if it was killed);
//!    binds the exec socket (`spec.exec_socket`) while the host's paths are still its
//!    own; reports `Held` and waits for the launcher's `Release` (the sidecar starts
//!    meanwhile); forks the agent, then serves exec requests in the same loop that
//!    forwards signals and reaps; when the agent ends it kills whatever is left;
//! 3. the agent: its stdio (fds 0-2) and a session of its own (the pty as controlling
//!    terminal), resets signals, marks fds close-on-exec, `execve`.
//!
//! PID 1 and the agent die with their parent (`PR_SET_PDEATHSIG`), and everything in the
//! PID namespace dies with PID 1, so killing the helper leaves no process behind.

use std::os::fd::{AsFd, OwnedFd};

use nix::sched::CloneFlags;

use crate::preflight::UsernsSysctls;
use crate::serve::ExecServer;
use crate::spec::{Mode, SandboxSpec};
use crate::wire::{self, HelperMsg, LauncherMsg, SetupFailure, StdioKind, Step};
use crate::{mounts, seccomp};

/// The helper's exit code when setup failed (the launcher learns why from the channel).
pub const SETUP_FAILED: i32 = 125;

/// Runs the helper on the setup channel the launcher placed at [`wire::HELPER_FD`].
/// Returns the exit code for `main`: the agent's, or [`SETUP_FAILED`].
pub fn main_from_inherited_fd() -> i32 {
    match bottle_proc::fdpass::take_inherited(wire::HELPER_FD) {
        Ok(channel) => run(channel),
        Err(_) => SETUP_FAILED,
    }
}

/// Runs the helper on `channel`.
pub fn run(channel: OwnedFd) -> i32 {
    SYSCTLS.get_or_init(UsernsSysctls::read);
    let (spec, stdio) = match read_hello(&channel) {
        Ok(hello) => hello,
        Err(failure) => return report(&channel, failure),
    };
    match enter_namespaces(&spec) {
        Ok(()) => {}
        Err(failure) => return report(&channel, failure),
    }
    if let Err(err) = bottle_proc::confine::block_all_signals() {
        return report(&channel, failure(Step::ForkPidOne, "sigprocmask", &err));
    }
    // PID 1 gets the channel and the agent's stdio; here they are closed once the fork
    // succeeded.
    let pid_one = bottle_proc::confine::fork_process(true, (channel, stdio), |(channel, stdio)| {
        pid_one(channel, stdio, &spec)
    });
    let pid_one = match pid_one {
        Ok(pid) => pid,
        Err((err, (channel, _))) => {
            return report(&channel, fork_failure(Step::ForkPidOne, &err));
        }
    };
    match bottle_proc::confine::supervise_child(pid_one) {
        Ok(status) => status.shell_code(),
        Err(_) => SETUP_FAILED,
    }
}

/// The agent's stdio as the helper received it.
pub(crate) enum Stdio {
    /// Keep the helper's own 0, 1, 2.
    Null,
    /// stdin, stdout, stderr.
    Inherit([OwnedFd; 3]),
    /// A pty slave for all three and the controlling terminal.
    Pty(OwnedFd),
}

impl Stdio {
    /// Installs this stdio as fds 0-2 and starts a session of its own (the pty, if any,
    /// as its controlling terminal). For a forked child before exec.
    pub(crate) fn install(&self) -> std::io::Result<()> {
        match self {
            Stdio::Null => bottle_proc::pty::start_session(None),
            Stdio::Inherit([stdin, stdout, stderr]) => {
                bottle_proc::confine::install_stdio([
                    stdin.as_fd(),
                    stdout.as_fd(),
                    stderr.as_fd(),
                ])?;
                bottle_proc::pty::start_session(None)
            }
            Stdio::Pty(slave) => {
                bottle_proc::confine::install_stdio([slave.as_fd(), slave.as_fd(), slave.as_fd()])?;
                bottle_proc::pty::start_session(Some(slave.as_fd()))
            }
        }
    }
}

fn read_hello(channel: &OwnedFd) -> Result<(SandboxSpec, Stdio), SetupFailure> {
    let message = bottle_proc::fdpass::recv_message(channel.as_fd(), wire::MAX_MESSAGE)
        .map_err(|err| failure(Step::ReadSpec, "recv", &err))?
        .ok_or_else(|| failure(Step::ReadSpec, "end of stream", &no_errno()))?;
    let hello: wire::Hello = serde_json::from_slice(&message.bytes)
        .map_err(|err| failure(Step::ReadSpec, &err.to_string(), &no_errno()))?;
    let expected = hello.stdio.fd_count();
    if message.fds.len() != expected {
        let detail = format!("{:?} stdio with {} fds", hello.stdio, message.fds.len());
        return Err(failure(Step::ReadSpec, &detail, &no_errno()));
    }
    let mut fds = message.fds.into_iter();
    let stdio = match (hello.stdio, fds.next(), fds.next(), fds.next()) {
        (StdioKind::Inherit, Some(stdin), Some(stdout), Some(stderr)) => {
            Stdio::Inherit([stdin, stdout, stderr])
        }
        (StdioKind::Pty, Some(slave), None, None) => Stdio::Pty(slave),
        _ => Stdio::Null,
    };
    Ok((hello.spec, stdio))
}

/// User namespace first (so the rest needs no host privilege), then its maps, then the
/// others; the PID namespace applies to the next child.
fn enter_namespaces(spec: &SandboxSpec) -> Result<(), SetupFailure> {
    let outer_uid = nix::unistd::getuid().as_raw();
    let outer_gid = nix::unistd::getgid().as_raw();
    nix::sched::unshare(CloneFlags::CLONE_NEWUSER)
        .map_err(|e| failure(Step::UnshareUser, "", &e.into()))?;
    write_id_maps(spec, outer_uid, outer_gid)?;
    let mut flags = CloneFlags::CLONE_NEWNS
        | CloneFlags::CLONE_NEWNET
        | CloneFlags::CLONE_NEWIPC
        | CloneFlags::CLONE_NEWUTS;
    if std::path::Path::new("/proc/self/ns/cgroup").exists() {
        flags |= CloneFlags::CLONE_NEWCGROUP;
    }
    nix::sched::unshare(flags).map_err(|e| failure(Step::UnshareNamespaces, "", &e.into()))?;
    nix::sched::unshare(CloneFlags::CLONE_NEWPID)
        .map_err(|e| failure(Step::ForkPidOne, "unshare", &e.into()))
}

fn write_id_maps(spec: &SandboxSpec, outer_uid: u32, outer_gid: u32) -> Result<(), SetupFailure> {
    let write = |path: &str, text: String| {
        std::fs::write(path, text).map_err(|err| failure(Step::WriteIdMaps, path, &err))
    };
    // "deny" must precede an unprivileged gid_map write; kernels before 3.19 lack the file.
    match std::fs::write("/proc/self/setgroups", "deny") {
        Err(err) if err.kind() != std::io::ErrorKind::NotFound => {
            return Err(failure(Step::WriteIdMaps, "/proc/self/setgroups", &err));
        }
        _ => {}
    }
    write("/proc/self/uid_map", format!("{} {outer_uid} 1\n", spec.uid))?;
    write("/proc/self/gid_map", format!("{} {outer_gid} 1\n", spec.gid))
}

/// PID 1 of the sandbox. Returns its exit code (it never returns into the helper).
fn pid_one(channel: OwnedFd, stdio: Stdio, spec: &SandboxSpec) -> i32 {
    let exec_listener = match build_sandbox(&channel, spec) {
        Ok(listener) => listener,
        Err(failure) => return report(&channel, failure),
    };
    if spec.mode == Mode::Probe {
        let _ = send(&channel, &HelperMsg::ProbePassed);
        return 0;
    }
    let Some(extra_env) = hold(&channel) else { return SETUP_FAILED };
    let env = overlay(&spec.env, &extra_env);
    let agent = bottle_proc::confine::fork_process(true, (channel, stdio), |(channel, stdio)| {
        run_agent(channel, &stdio, spec, &env)
    });
    let agent = match agent {
        Ok(pid) => pid,
        Err((err, (channel, _))) => return report(&channel, fork_failure(Step::ForkAgent, &err)),
    };
    let mut server = ExecServer::new(exec_listener, env, spec.effective_cwd());
    let status = match bottle_proc::confine::supervise_serving(agent, &mut server) {
        Ok(status) => status.shell_code(),
        Err(_) => SETUP_FAILED,
    };
    // The sandbox ends with its agent: exec'd commands are killed and their clients told.
    bottle_proc::confine::kill_and_reap_the_rest(&mut server, std::time::Duration::from_secs(2));
    status
}

/// Tells the launcher the sandbox is built and waits for its go. `None`: the launcher
/// closed the channel (aborted) or sent something else.
fn hold(channel: &OwnedFd) -> Option<Vec<(String, String)>> {
    send(channel, &HelperMsg::Held).ok()?;
    let message = bottle_proc::fdpass::recv_message(channel.as_fd(), wire::MAX_MESSAGE).ok()??;
    match serde_json::from_slice(&message.bytes).ok()? {
        LauncherMsg::Release { extra_env } => Some(extra_env),
    }
}

/// `base` with every variable of `extra` added, replacing one of the same name.
pub(crate) fn overlay(
    base: &[(String, String)],
    extra: &[(String, String)],
) -> Vec<(String, String)> {
    let mut env: Vec<(String, String)> =
        base.iter().filter(|(key, _)| !extra.iter().any(|(k, _)| k == key)).cloned().collect();
    env.extend(extra.iter().cloned());
    env
}

/// Builds and confines the sandbox around this process (PID 1). Returns the exec
/// listener when the spec asks for one.
fn build_sandbox(channel: &OwnedFd, spec: &SandboxSpec) -> Result<Option<OwnedFd>, SetupFailure> {
    // Its own process group: a signal to the helper's group reaches PID 1 once, through
    // the helper's forwarding, not twice.
    nix::unistd::setpgid(nix::unistd::Pid::from_raw(0), nix::unistd::Pid::from_raw(0))
        .map_err(|e| failure(Step::ForkPidOne, "setpgid", &e.into()))?;
    bottle_proc::confine::loopback_up().map_err(|err| failure(Step::Loopback, "lo", &err))?;
    let listen = spec.egress_listen.to_string();
    let listener = std::net::TcpListener::bind(spec.egress_listen)
        .map_err(|err| failure(Step::EgressListen, &listen, &err))?;
    bottle_proc::fdpass::send_message(
        channel.as_fd(),
        &wire::encode(&HelperMsg::EgressListener),
        Some(listener.as_fd()),
    )
    .map_err(|err| failure(Step::SendListener, &listen, &err))?;
    drop(listener);
    // Bound while the host's filesystem is still our root: after the pivot the path is
    // out of the sandbox's view, and the fd (close-on-exec) stays with PID 1 alone.
    let exec_listener = match &spec.exec_socket {
        Some(path) => Some(exec_listen(path)?),
        None => None,
    };
    mounts::make_private().map_err(|f| mount_failure(Step::MountPrivate, f))?;
    let entries = mounts::plan(spec).map_err(|err| failure(Step::BuildRoot, "plan", &err))?;
    mounts::build_root(&entries, spec.tmp_bytes).map_err(|f| mount_failure(Step::BuildRoot, f))?;
    mounts::mount_proc().map_err(|f| mount_failure(Step::MountProc, f))?;
    mounts::mount_dev().map_err(|f| mount_failure(Step::MountDev, f))?;
    mounts::seal_root().map_err(|f| mount_failure(Step::PivotRoot, f))?;
    nix::unistd::sethostname(&spec.hostname)
        .map_err(|e| failure(Step::Hostname, &spec.hostname, &e.into()))?;
    bottle_proc::confine::drop_all_capabilities()
        .map_err(|err| failure(Step::DropCapabilities, "", &err))?;
    nix::sys::prctl::set_no_new_privs().map_err(|e| failure(Step::NoNewPrivs, "", &e.into()))?;
    // Not dumpable: the agent (same uid, no capabilities) cannot open /proc/1/fd, /proc/1/mem
    // or take PID 1's fds (the exec listener, clients' stdio). Exec resets it for the agent.
    nix::sys::prctl::set_dumpable(false)
        .map_err(|e| failure(Step::NoNewPrivs, "dumpable", &e.into()))?;
    seccomp::load().map_err(|err| {
        let errno = std::error::Error::source(&err)
            .and_then(|s| s.downcast_ref::<std::io::Error>())
            .and_then(std::io::Error::raw_os_error)
            .unwrap_or(0);
        failure(Step::Seccomp, &err.to_string(), &std::io::Error::from_raw_os_error(errno))
    })?;
    Ok(exec_listener)
}

fn exec_listen(path: &std::path::Path) -> Result<OwnedFd, SetupFailure> {
    let detail = path.display().to_string();
    let listener = bottle_proc::fdpass::seqpacket_listen(path)
        .map_err(|err| failure(Step::ExecSocket, &detail, &err))?;
    // Non-blocking: a client that vanishes between poll and accept must not stall PID 1.
    let flags = nix::fcntl::fcntl(&listener, nix::fcntl::FcntlArg::F_GETFL)
        .map_err(|e| failure(Step::ExecSocket, &detail, &e.into()))?;
    let flags = nix::fcntl::OFlag::from_bits_truncate(flags) | nix::fcntl::OFlag::O_NONBLOCK;
    nix::fcntl::fcntl(&listener, nix::fcntl::FcntlArg::F_SETFL(flags))
        .map_err(|e| failure(Step::ExecSocket, &detail, &e.into()))?;
    Ok(listener)
}

/// The agent, forked from PID 1 after confinement. Returns only if exec failed.
fn run_agent(channel: OwnedFd, stdio: &Stdio, spec: &SandboxSpec, env: &[(String, String)]) -> i32 {
    if let Err(err) = stdio.install() {
        return report(&channel, failure(Step::Exec, "stdio", &err));
    }
    if let Err(err) = bottle_proc::confine::prepare_exec() {
        return report(&channel, failure(Step::Exec, "prepare", &err));
    }
    let cwd = spec.effective_cwd();
    if let Err(errno) = nix::unistd::chdir(&cwd) {
        return report(&channel, failure(Step::Chdir, &cwd.display().to_string(), &errno.into()));
    }
    let err = bottle_proc::confine::exec_program(&spec.argv, env);
    let program = spec.argv.first().cloned().unwrap_or_default();
    report(&channel, failure(Step::Exec, &program, &err));
    exec_failure_code(&err)
}

/// The shell's code for a failed exec: 127 not found, 126 otherwise.
pub(crate) fn exec_failure_code(err: &std::io::Error) -> i32 {
    if err.raw_os_error() == Some(libc::ENOENT) { 127 } else { 126 }
}

/// The host's user-namespace settings, read once before anything is unshared or
/// pivoted (later, `/proc/sys` is not the host's or not there).
static SYSCTLS: std::sync::OnceLock<UsernsSysctls> = std::sync::OnceLock::new();

fn failure(step: Step, detail: &str, err: &std::io::Error) -> SetupFailure {
    SetupFailure {
        step,
        detail: detail.to_string(),
        errno: err.raw_os_error().unwrap_or(0),
        sysctls: SYSCTLS.get().cloned().unwrap_or_default(),
    }
}

fn fork_failure(step: Step, err: &bottle_proc::ForkError) -> SetupFailure {
    match err {
        bottle_proc::ForkError::Fork(source) | bottle_proc::ForkError::DeathPipe(source) => {
            failure(step, "fork", source)
        }
        other => failure(step, &other.to_string(), &no_errno()),
    }
}

fn no_errno() -> std::io::Error {
    std::io::Error::from_raw_os_error(0)
}

fn mount_failure(step: Step, failure_at: mounts::MountFailure) -> SetupFailure {
    failure(step, &failure_at.path.display().to_string(), &failure_at.source)
}

fn send(channel: &OwnedFd, message: &HelperMsg) -> std::io::Result<()> {
    bottle_proc::fdpass::send_message(channel.as_fd(), &wire::encode(message), None)
}

/// Reports a failure (best effort: the launcher may be gone) and returns [`SETUP_FAILED`].
fn report(channel: &OwnedFd, failure: SetupFailure) -> i32 {
    let _ = send(channel, &HelperMsg::SetupFailed(failure));
    SETUP_FAILED
}
