//! What a sandbox is made of: the one description the launcher fills in and the helper obeys.
//!
//! Hazard: anything the helper inherits implicitly (our environment, our fds, the host's
//! whole filesystem) is a way out. So the spec is explicit and closed: the agent's
//! environment is exactly `env`, its filesystem exactly the root below plus the listed
//! binds, and nothing is added by default except what [`RootFs::Host`] documents.

use std::net::SocketAddrV4;
use std::os::fd::OwnedFd;
use std::path::PathBuf;

use serde::{Deserialize, Serialize};

/// The read-only root filesystem of the sandbox.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum RootFs {
    /// The host's system directories (`/usr`, `/bin`, `/sbin`, `/lib*`, as directories or
    /// the same symlinks the host has) and a curated set of `/etc` entries
    /// ([`crate::mounts::HOST_ETC`]); `/etc/passwd`, `/etc/group`, `/etc/hosts` and
    /// `/etc/hostname` are generated for the sandbox, never the host's.
    Host,
    /// Every top-level entry of this directory (a root filesystem the bottle names),
    /// except `proc`, `dev`, `tmp`, `sys`, `run`, `home` and the workspace target, which
    /// the sandbox makes itself or leaves out.
    Dir(PathBuf),
}

/// A host path visible read-only inside at `target` (e.g. the sidecar's CA bundle).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ReadOnlyBind {
    /// Host path, file or directory.
    pub source: PathBuf,
    /// Absolute path inside. Its parent must be creatable: not inside another bind.
    pub target: PathBuf,
}

/// The workspace: a host directory bound read-write.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Workspace {
    /// Host directory.
    pub source: PathBuf,
    /// Absolute path inside, e.g. `/workspace`.
    pub target: PathBuf,
}

/// Whether the helper runs the agent or only proves every step would work.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum Mode {
    /// Build the sandbox and exec the agent.
    Run,
    /// Build the sandbox, confine the would-be agent, report success and exit 0 (the
    /// preflight of `bottle doctor`). `argv` is not executed.
    Probe,
}

/// One sandbox: the agent's argv and environment and the world it sees.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct SandboxSpec {
    /// Run or probe.
    pub mode: Mode,
    /// The agent's argv; `argv[0]` is looked up on `PATH` from `env` if it has no slash.
    pub argv: Vec<String>,
    /// The agent's complete environment. Nothing is inherited.
    pub env: Vec<(String, String)>,
    /// Working directory inside (default: the workspace target, else `/`).
    pub cwd: Option<PathBuf>,
    /// The read-only root.
    pub root: RootFs,
    /// The read-write workspace, if any.
    pub workspace: Option<Workspace>,
    /// Further read-only binds.
    pub read_only: Vec<ReadOnlyBind>,
    /// Hostname inside (UTS namespace).
    pub hostname: String,
    /// Where the egress listener listens inside the sandbox's network namespace.
    pub egress_listen: SocketAddrV4,
    /// The agent's uid inside; mapped to the launcher's uid outside.
    pub uid: u32,
    /// The agent's gid inside; mapped to the launcher's gid outside.
    pub gid: u32,
    /// Size limit of the private `/tmp` tmpfs, in bytes.
    pub tmp_bytes: u64,
    /// Host path where PID 1 listens for `bottle exec` (e.g. `<state>/<id>/exec.sock`;
    /// mode 0600, bound before the pivot, so never visible inside). None: no exec.
    pub exec_socket: Option<PathBuf>,
}

/// How the agent's stdin, stdout and stderr are wired. Not part of [`SandboxSpec`]:
/// fds are not data, they travel beside the spec.
#[derive(Debug)]
pub enum AgentStdio {
    /// The helper's own: stdin `/dev/null`; stdout and stderr `/dev/null`, or the pipes
    /// of [`crate::LocalSandbox::capture_output`].
    Null,
    /// These three fds, e.g. the launcher's own stdin, stdout and stderr for a headless
    /// `bottle run`. The agent still gets a session of its own (no controlling terminal).
    Inherit {
        /// The agent's stdin.
        stdin: OwnedFd,
        /// The agent's stdout.
        stdout: OwnedFd,
        /// The agent's stderr.
        stderr: OwnedFd,
    },
    /// A pty slave the launcher allocated ([`bottle_proc::pty::openpty`]): the agent's
    /// stdin, stdout, stderr and controlling terminal. The launcher keeps the master.
    Pty(OwnedFd),
}

impl SandboxSpec {
    /// A spec for running `argv` on the host's system directories, with an empty
    /// environment, no workspace, hostname `bottle`, egress on 127.0.0.1:9099, uid/gid 0
    /// inside, a 256 MiB `/tmp`.
    pub fn new(argv: Vec<String>) -> SandboxSpec {
        SandboxSpec {
            mode: Mode::Run,
            argv,
            env: Vec::new(),
            cwd: None,
            root: RootFs::Host,
            workspace: None,
            read_only: Vec::new(),
            hostname: "bottle".to_string(),
            egress_listen: SocketAddrV4::new(std::net::Ipv4Addr::LOCALHOST, 9099),
            uid: 0,
            gid: 0,
            tmp_bytes: 256 << 20,
            exec_socket: None,
        }
    }

    /// The working directory the agent starts in.
    pub fn effective_cwd(&self) -> PathBuf {
        self.cwd
            .clone()
            .or_else(|| self.workspace.as_ref().map(|w| w.target.clone()))
            .unwrap_or_else(|| PathBuf::from("/"))
    }
}
