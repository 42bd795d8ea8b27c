//! The setup channel between the launcher and the sandbox helper (a seqpacket pair).
//!
//! Hazard: the launcher must never mistake a half-built sandbox for a running one. The
//! helper reports each outcome as one closed message, and success of the last step
//! (the agent's `execve`) is the end of the stream itself: every copy of the helper's
//! end is close-on-exec, so EOF arrives exactly when the agent has exec'd, or when a
//! process died. A [`HelperMsg::SetupFailed`] before EOF says which step failed and why.
//! In between, PID 1 reports [`HelperMsg::Held`] and starts nothing until the launcher's
//! [`LauncherMsg::Release`]; the exec socket carries [`ExecMsg`] and [`ExecReply`].

use serde::{Deserialize, Serialize};

use crate::SandboxSpec;

/// Largest message either side sends (the spec, with its environment).
pub const MAX_MESSAGE: usize = 256 * 1024;

/// The fd number the helper finds its end of the setup channel at.
pub const HELPER_FD: i32 = 3;

/// Launcher to helper: the first message. The agent's stdio fds ride along as
/// `SCM_RIGHTS` (three for [`StdioKind::Inherit`], one for [`StdioKind::Pty`]).
#[derive(Debug, Serialize, Deserialize)]
pub struct Hello {
    /// What to build.
    pub spec: SandboxSpec,
    /// How the agent's stdio is wired.
    pub stdio: StdioKind,
}

/// How the agent's stdio is wired (the fds themselves travel beside the message).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum StdioKind {
    /// The helper's own stdio (stdin /dev/null; stdout and stderr /dev/null or captured).
    Null,
    /// Three fds: stdin, stdout, stderr.
    Inherit,
    /// One pty slave: stdin, stdout, stderr and the controlling terminal.
    Pty,
}

impl StdioKind {
    /// How many fds come with a [`Hello`] of this kind.
    pub fn fd_count(self) -> usize {
        match self {
            StdioKind::Null => 0,
            StdioKind::Inherit => 3,
            StdioKind::Pty => 1,
        }
    }
}

/// Launcher to PID 1, after [`HelperMsg::Held`]. Closing the channel instead aborts.
#[derive(Debug, Serialize, Deserialize)]
pub enum LauncherMsg {
    /// Start the agent with these variables added to (or replacing those of) the spec's
    /// environment: the sidecar's placeholders and proxy settings.
    Release {
        /// The extra environment.
        extra_env: Vec<(String, String)>,
    },
}

/// Helper to launcher.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum HelperMsg {
    /// The egress listener, created and listening inside the sandbox's network
    /// namespace; the socket rides along as `SCM_RIGHTS`.
    EgressListener,
    /// Every step up to and including the seccomp filter succeeded; PID 1 waits for a
    /// [`LauncherMsg`] before it forks the agent.
    Held,
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
    /// Binding the exec socket at its host path.
    ExecSocket,
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
            Step::ExecSocket => "binding the exec socket",
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

/// An exec client to PID 1, over a connection to the exec socket.
#[derive(Debug, Serialize, Deserialize)]
pub enum ExecMsg {
    /// Run a command; its stdin, stdout and stderr ride along as three fds. The first
    /// message of a connection, and the only `Run`.
    Run(crate::exec::ExecRequest),
    /// Send this signal to the command's process group (the client's Ctrl-C, SIGTERM).
    Signal(i32),
}

/// PID 1 to an exec client.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum ExecReply {
    /// The command was exec'd; `pid` is its pid inside the sandbox.
    Started {
        /// Its pid in the sandbox's PID namespace.
        pid: i32,
    },
    /// The command could not be started (bad request, fork, chdir or execve failed).
    Failed {
        /// The step.
        step: Step,
        /// The program or path the step worked on.
        detail: String,
        /// The raw OS error number (0 if none).
        errno: i32,
    },
    /// The command called `exit(code)`.
    Exited {
        /// Its exit code.
        code: i32,
    },
    /// The command was killed by `signal` (also: the sandbox ended under it).
    Killed {
        /// The signal number.
        signal: i32,
        /// Whether it dumped core.
        core_dumped: bool,
    },
}

/// Encodes a message (JSON; the channel is local and the messages are tiny).
pub fn encode<T: Serialize>(message: &T) -> Vec<u8> {
    // Serializing these plain structs cannot fail (no maps with non-string keys).
    serde_json::to_vec(message).unwrap_or_default()
}
