//! The setup channel between the launcher and the sandbox helper (a seqpacket pair).
//!
//! Hazard: the launcher must never mistake a half-built sandbox for a running one. The
//! helper reports each outcome as one closed message, and success of the last step
//! (the agent's `execve`) is the end of the stream itself: every copy of the helper's
//! end is close-on-exec, so EOF arrives exactly when the agent has exec'd, or when a
//! process died. A [`HelperMsg::SetupFailed`] before EOF says which step failed and why.

use serde::{Deserialize, Serialize};

use crate::SandboxSpec;

/// Largest message either side sends (the spec, with its environment).
pub const MAX_MESSAGE: usize = 256 * 1024;

/// The fd number the helper finds its end of the setup channel at.
pub const HELPER_FD: i32 = 3;

/// Launcher to helper: the first and only message.
#[derive(Debug, Serialize, Deserialize)]
pub struct Hello {
    /// What to build.
    pub spec: SandboxSpec,
}

/// Helper to launcher.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum HelperMsg {
    /// The egress listener, created and listening inside the sandbox's network
    /// namespace; the socket rides along as `SCM_RIGHTS`.
    EgressListener,
    /// A setup step failed; the agent was not started.
    SetupFailed(SetupFailure),
    /// Probe mode: every step succeeded, up to and including the seccomp filter.
    ProbePassed,
}

/// Which step failed, with the OS error and what the helper saw of the host's settings.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SetupFailure {
    /// The step.
    pub step: Step,
    /// The path or value the step worked on, when there is one.
    pub detail: String,
    /// The raw OS error number (0 if the failure was not an OS error).
    pub errno: i32,
    /// The user-namespace settings, read in the helper when the step failed.
    pub sysctls: crate::preflight::UsernsSysctls,
}

/// Every step of the helper, in order. `Display` names them for messages.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum Step {
    /// Reading the spec from the launcher.
    ReadSpec,
    /// `unshare(CLONE_NEWUSER)`.
    UnshareUser,
    /// Writing `/proc/self/setgroups`, `uid_map`, `gid_map`.
    WriteIdMaps,
    /// `unshare` of mount, network, IPC, UTS and cgroup namespaces.
    UnshareNamespaces,
    /// `unshare(CLONE_NEWPID)` and the fork that makes PID 1.
    ForkPidOne,
    /// Bringing `lo` up.
    Loopback,
    /// Binding and listening on the egress address.
    EgressListen,
    /// Sending the listener over the setup channel.
    SendListener,
    /// Making the mount tree private.
    MountPrivate,
    /// Building the new root (tmpfs, binds, generated files).
    BuildRoot,
    /// Mounting the fresh `/proc`.
    MountProc,
    /// Building `/dev` and its devpts.
    MountDev,
    /// `pivot_root` and detaching the old root.
    PivotRoot,
    /// `sethostname`.
    Hostname,
    /// Dropping every capability.
    DropCapabilities,
    /// `PR_SET_NO_NEW_PRIVS`.
    NoNewPrivs,
    /// Compiling and loading the seccomp filter.
    Seccomp,
    /// Forking the agent.
    ForkAgent,
    /// Changing to the working directory.
    Chdir,
    /// `execve` of the agent.
    Exec,
}

impl std::fmt::Display for Step {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let text = match self {
            Step::ReadSpec => "reading the sandbox spec",
            Step::UnshareUser => "creating the user namespace",
            Step::WriteIdMaps => "writing the uid/gid maps",
            Step::UnshareNamespaces => {
                "creating the mount, network, IPC, UTS and cgroup namespaces"
            }
            Step::ForkPidOne => "creating the PID namespace",
            Step::Loopback => "bringing up loopback",
            Step::EgressListen => "listening on the egress address",
            Step::SendListener => "handing the egress listener to the launcher",
            Step::MountPrivate => "making mounts private",
            Step::BuildRoot => "building the read-only root",
            Step::MountProc => "mounting /proc",
            Step::MountDev => "building /dev",
            Step::PivotRoot => "pivoting into the new root",
            Step::Hostname => "setting the hostname",
            Step::DropCapabilities => "dropping capabilities",
            Step::NoNewPrivs => "setting no_new_privs",
            Step::Seccomp => "loading the seccomp filter",
            Step::ForkAgent => "forking the agent",
            Step::Chdir => "entering the working directory",
            Step::Exec => "executing the agent",
        };
        f.write_str(text)
    }
}

/// Encodes a message (JSON; the channel is local and the messages are tiny).
pub fn encode<T: Serialize>(message: &T) -> Vec<u8> {
    // Serializing these plain structs cannot fail (no maps with non-string keys).
    serde_json::to_vec(message).unwrap_or_default()
}
