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
//! 3. the agent: resets signals, marks fds close-on-exec, `execve`.
//!
//! PID 1 and the agent die with their parent (`PR_SET_PDEATHSIG`), and everything in the
//! PID namespace dies with PID 1, so killing the helper leaves no process behind.

use std::os::fd::{AsFd, OwnedFd};

use nix::sched::CloneFlags;

use crate::preflight::UsernsSysctls;
use crate::spec::{Mode, SandboxSpec};
use crate::wire::{self, HelperMsg, SetupFailure, Step};
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
    let spec = match read_spec(&channel) {
        Ok(spec) => spec,
        Err(failure) => return report(&channel, failure),
    };
    match enter_namespaces(&spec) {
        Ok(()) => {}
        Err(failure) => return report(&channel, failure),
    }
    if let Err(err) = bottle_proc::confine::block_all_signals() {
        return report(&channel, failure(Step::ForkPidOne, "sigprocmask", &err));
    }
    // PID 1 gets the channel; here it is closed once the fork succeeded.
    let pid_one =
        bottle_proc::confine::fork_process(true, channel, |channel| pid_one(channel, &spec));
    let pid_one = match pid_one {
        Ok(pid) => pid,
        Err((err, channel)) => return report(&channel, fork_failure(Step::ForkPidOne, &err)),
    };
    match bottle_proc::confine::supervise_child(pid_one) {
        Ok(status) => status.shell_code(),
        Err(_) => SETUP_FAILED,
    }
}

fn read_spec(channel: &OwnedFd) -> Result<SandboxSpec, SetupFailure> {
    let message = bottle_proc::fdpass::recv_message(channel.as_fd(), wire::MAX_MESSAGE)
        .map_err(|err| failure(Step::ReadSpec, "recv", &err))?
        .ok_or_else(|| failure(Step::ReadSpec, "end of stream", &no_errno()))?;
    let hello: wire::Hello = serde_json::from_slice(&message.bytes)
        .map_err(|err| failure(Step::ReadSpec, &err.to_string(), &no_errno()))?;
    Ok(hello.spec)
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
fn pid_one(channel: OwnedFd, spec: &SandboxSpec) -> i32 {
    if let Err(failure) = build_sandbox(&channel, spec) {
        return report(&channel, failure);
    }
    if spec.mode == Mode::Probe {
        let _ = send(&channel, &HelperMsg::ProbePassed);
        return 0;
    }
    let agent =
        bottle_proc::confine::fork_process(true, channel, |channel| run_agent(channel, spec));
    let agent = match agent {
        Ok(pid) => pid,
        Err((err, channel)) => return report(&channel, fork_failure(Step::ForkAgent, &err)),
    };
    match bottle_proc::confine::supervise_child(agent) {
        Ok(status) => status.shell_code(),
        Err(_) => SETUP_FAILED,
    }
}

fn build_sandbox(channel: &OwnedFd, spec: &SandboxSpec) -> Result<(), SetupFailure> {
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
    seccomp::load().map_err(|err| {
        let errno = std::error::Error::source(&err)
            .and_then(|s| s.downcast_ref::<std::io::Error>())
            .and_then(std::io::Error::raw_os_error)
            .unwrap_or(0);
        failure(Step::Seccomp, &err.to_string(), &std::io::Error::from_raw_os_error(errno))
    })
}

/// The agent, forked from PID 1 after confinement. Returns only if exec failed.
fn run_agent(channel: OwnedFd, spec: &SandboxSpec) -> i32 {
    if let Err(err) = bottle_proc::confine::prepare_exec() {
        return report(&channel, failure(Step::Exec, "prepare", &err));
    }
    let cwd = spec.effective_cwd();
    if let Err(errno) = nix::unistd::chdir(&cwd) {
        return report(&channel, failure(Step::Chdir, &cwd.display().to_string(), &errno.into()));
    }
    let err = bottle_proc::confine::exec_program(&spec.argv, &spec.env);
    let program = spec.argv.first().cloned().unwrap_or_default();
    report(&channel, failure(Step::Exec, &program, &err));
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
