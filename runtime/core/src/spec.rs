//! Child and supervisor specifications, validated at construction.
//!
//! Hazard: a malformed spec found at restart time would turn a config typo into a
//! crash loop. Every check runs in [`SupervisorSpec::validate`], before anything starts,
//! and fails with a typed [`ConfigError`] naming the child and the field.

use std::ffi::OsString;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use ractor::{ActorCell, SpawnErr};

use crate::backoff::Backoff;
use crate::policy::{ChildPolicy, Intensity, RestartType, Strategy};

/// A bad specification. Nothing is started when one is found.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ConfigError {
    /// A child spec is invalid.
    #[error("child {child:?}: {problem}")]
    Child {
        /// The child's name.
        child: String,
        /// What is wrong, naming the field.
        problem: String,
    },
    /// The supervisor spec is invalid.
    #[error("supervisor {supervisor:?}: {problem}")]
    Supervisor {
        /// The supervisor's name.
        supervisor: String,
        /// What is wrong, naming the field.
        problem: String,
    },
}

/// How to tell that a started process is ready to serve.
#[derive(Clone, Debug, PartialEq)]
pub enum Readiness {
    /// Ready as soon as exec succeeded.
    None,
    /// Ready when a TCP connect to `addr` succeeds.
    Tcp {
        /// Where to connect.
        addr: SocketAddr,
        /// Give up after this long.
        deadline: Duration,
    },
    /// Ready when a connect to the unix socket at `path` succeeds.
    Unix {
        /// Socket path.
        path: PathBuf,
        /// Give up after this long.
        deadline: Duration,
    },
    /// s6 style: the child writes a newline to fd `fd`.
    NotifyFd {
        /// The fd number the child writes to (3 or more).
        fd: i32,
        /// Give up after this long.
        deadline: Duration,
    },
    /// systemd style: the child sends `READY=1` to the datagram socket in `$NOTIFY_SOCKET`.
    SdNotify {
        /// Give up after this long.
        deadline: Duration,
    },
}

impl Readiness {
    /// The deadline, if any.
    pub fn deadline(&self) -> Option<Duration> {
        match self {
            Readiness::None => None,
            Readiness::Tcp { deadline, .. }
            | Readiness::Unix { deadline, .. }
            | Readiness::NotifyFd { deadline, .. }
            | Readiness::SdNotify { deadline } => Some(*deadline),
        }
    }
}

/// An external program to supervise. Its `Debug` lists environment names, never values.
#[derive(Clone, PartialEq)]
pub struct ProcessSpec {
    /// argv, never run through a shell.
    pub argv: Vec<OsString>,
    /// The complete environment of the child (secrets only for children that list them).
    pub env: Vec<(OsString, OsString)>,
    /// Working directory (`/` when unset).
    pub cwd: Option<PathBuf>,
    /// Readiness check.
    pub readiness: Readiness,
}

impl std::fmt::Debug for ProcessSpec {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // Names only: a value can be a secret handed to this one child.
        let env_names: Vec<&OsString> = self.env.iter().map(|(name, _)| name).collect();
        f.debug_struct("ProcessSpec")
            .field("argv", &self.argv)
            .field("env", &env_names)
            .field("cwd", &self.cwd)
            .field("readiness", &self.readiness)
            .finish()
    }
}

impl ProcessSpec {
    /// A process with an empty environment except `PATH`, no readiness check.
    pub fn new<I, S>(argv: I) -> ProcessSpec
    where
        I: IntoIterator<Item = S>,
        S: Into<OsString>,
    {
        ProcessSpec {
            argv: argv.into_iter().map(Into::into).collect(),
            env: vec![("PATH".into(), "/usr/local/bin:/usr/bin:/bin:/usr/sbin:/sbin".into())],
            cwd: None,
            readiness: Readiness::None,
        }
    }
}

/// Starts an in-process actor child linked to its supervisor. The actor must report
/// a crash by panicking or returning `Err` and a clean end by stopping.
#[async_trait::async_trait]
pub trait ActorFactory: Send + Sync + std::fmt::Debug {
    /// Spawns the actor linked to `supervisor` and returns its cell once started.
    async fn spawn_linked(
        &self,
        name: String,
        supervisor: ActorCell,
    ) -> Result<ActorCell, SpawnErr>;

    /// Deliver a reload (SIGHUP, `ctl reload`) to the running actor `cell`. The default:
    /// this kind of actor does not reload.
    async fn reload(&self, cell: &ActorCell) -> Result<String, String> {
        let _ = cell;
        Err("this actor does not reload".into())
    }

    /// Fault injection: make the running actor `cell` panic. Returns false when this
    /// kind of actor has no way to be told to (the default).
    fn inject_panic(&self, cell: &ActorCell) -> bool {
        let _ = cell;
        false
    }
}

/// How a child is started.
#[derive(Clone, Debug)]
pub enum ChildStart {
    /// An external process.
    Process(ProcessSpec),
    /// A nested supervisor.
    Supervisor(SupervisorSpec),
    /// An in-process actor.
    Actor(Arc<dyn ActorFactory>),
}

/// One child of a supervisor.
#[derive(Clone, Debug)]
pub struct ChildSpec {
    /// Unique among its siblings; used in logs as `[name] `.
    pub name: String,
    /// How to start it.
    pub start: ChildStart,
    /// When to restart it.
    pub restart: RestartType,
    /// How long a graceful stop may take before SIGKILL (processes) or kill (actors).
    pub stop_timeout: Duration,
    /// If it ends for good, its supervisor ends too.
    pub significant: bool,
    /// Restart delay curve.
    pub backoff: Backoff,
    /// Up time after which the backoff resets.
    pub reset_after: Duration,
    /// Exit codes that mean "do not restart" (EX_CONFIG by default).
    pub permanent_exit_codes: Vec<i32>,
}

impl ChildSpec {
    /// A permanent child with default stop timeout (5 s), backoff and reset dwell (10 s).
    pub fn new(name: impl Into<String>, start: ChildStart) -> ChildSpec {
        ChildSpec {
            name: name.into(),
            start,
            restart: RestartType::Permanent,
            stop_timeout: Duration::from_secs(5),
            significant: false,
            backoff: Backoff::default(),
            reset_after: Duration::from_secs(10),
            permanent_exit_codes: vec![78],
        }
    }

    /// Sets the restart type.
    pub fn restart(mut self, restart: RestartType) -> Self {
        self.restart = restart;
        self
    }

    /// Sets the stop timeout.
    pub fn stop_timeout(mut self, timeout: Duration) -> Self {
        self.stop_timeout = timeout;
        self
    }

    /// Marks the child significant.
    pub fn significant(mut self, significant: bool) -> Self {
        self.significant = significant;
        self
    }

    /// Sets the backoff curve.
    pub fn backoff(mut self, backoff: Backoff) -> Self {
        self.backoff = backoff;
        self
    }

    /// Sets the healthy dwell after which backoff resets.
    pub fn reset_after(mut self, dwell: Duration) -> Self {
        self.reset_after = dwell;
        self
    }

    /// The policy-relevant part of this spec.
    pub fn policy(&self) -> ChildPolicy {
        ChildPolicy {
            restart: self.restart,
            significant: self.significant,
            backoff: self.backoff,
            reset_after: self.reset_after,
        }
    }

    fn validate(&self) -> Result<(), ConfigError> {
        let bad = |problem: String| ConfigError::Child { child: self.name.clone(), problem };
        if self.name.is_empty()
            || self.name.contains('/')
            || self.name.chars().any(char::is_whitespace)
        {
            return Err(bad("name must be non-empty without '/' or spaces".into()));
        }
        if self.stop_timeout.is_zero() {
            return Err(bad("stop_timeout must be greater than zero".into()));
        }
        self.backoff.validate().map_err(bad)?;
        match &self.start {
            ChildStart::Process(p) => {
                if p.argv.is_empty() || p.argv[0].is_empty() {
                    return Err(bad("argv is empty: nothing to execute".into()));
                }
                if p.readiness.deadline().is_some_and(|d| d.is_zero()) {
                    return Err(bad("readiness deadline must be greater than zero".into()));
                }
                if let Readiness::NotifyFd { fd, .. } = p.readiness
                    && fd < 3
                {
                    return Err(bad(format!("notify fd must be 3 or more, got {fd}")));
                }
            }
            ChildStart::Supervisor(s) => s.validate()?,
            ChildStart::Actor(_) => {}
        }
        Ok(())
    }
}

/// A supervisor: ordered children, a strategy and a restart budget.
#[derive(Clone, Debug)]
pub struct SupervisorSpec {
    /// Name, used in child paths (`root/sub/child`).
    pub name: String,
    /// Which siblings restart together.
    pub strategy: Strategy,
    /// Restart budget.
    pub intensity: Intensity,
    /// Children in start order (stopped in reverse).
    pub children: Vec<ChildSpec>,
}

impl SupervisorSpec {
    /// An empty one-for-one supervisor with the default (OTP) intensity.
    pub fn new(name: impl Into<String>) -> SupervisorSpec {
        SupervisorSpec {
            name: name.into(),
            strategy: Strategy::OneForOne,
            intensity: Intensity::default(),
            children: Vec::new(),
        }
    }

    /// Sets the strategy.
    pub fn strategy(mut self, strategy: Strategy) -> Self {
        self.strategy = strategy;
        self
    }

    /// Sets the restart intensity.
    pub fn intensity(mut self, max_restarts: u32, period: Duration) -> Self {
        self.intensity = Intensity { max_restarts, period };
        self
    }

    /// Appends a child.
    pub fn child(mut self, child: ChildSpec) -> Self {
        self.children.push(child);
        self
    }

    /// Checks the whole tree.
    pub fn validate(&self) -> Result<(), ConfigError> {
        let bad =
            |problem: String| ConfigError::Supervisor { supervisor: self.name.clone(), problem };
        if self.intensity.period.is_zero() {
            return Err(bad(format!(
                "intensity period must be greater than zero (got {} restarts in 0 s)",
                self.intensity.max_restarts
            )));
        }
        let mut seen = std::collections::HashSet::new();
        for child in &self.children {
            if !seen.insert(child.name.as_str()) {
                return Err(bad(format!("duplicate child name {:?}", child.name)));
            }
            child.validate()?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn proc_child(name: &str, argv: &[&str]) -> ChildSpec {
        ChildSpec::new(name, ChildStart::Process(ProcessSpec::new(argv.iter().copied())))
    }

    #[test]
    fn debug_of_a_process_spec_names_env_variables_never_their_values() {
        let mut spec = ProcessSpec::new(["daemon"]);
        spec.env.push(("GH_TOKEN".into(), "ghp_realsecretvalue".into()));
        let child = ChildSpec::new("d", ChildStart::Process(spec.clone()));
        for shown in [format!("{spec:?}"), format!("{child:?}"), format!("{spec:#?}")] {
            assert!(!shown.contains("ghp_realsecretvalue"), "{shown}");
            assert!(shown.contains("GH_TOKEN") && shown.contains("daemon"), "{shown}");
        }
    }

    #[test]
    fn malformed_specs_are_typed_errors() {
        let empty = SupervisorSpec::new("root").child(proc_child("a", &[]));
        assert!(
            matches!(empty.validate(), Err(ConfigError::Child { problem, .. }) if problem.contains("argv"))
        );

        let zero_stop = SupervisorSpec::new("root")
            .child(proc_child("a", &["true"]).stop_timeout(Duration::ZERO));
        assert!(
            matches!(zero_stop.validate(), Err(ConfigError::Child { problem, .. }) if problem.contains("stop_timeout"))
        );

        let zero_intensity = SupervisorSpec::new("root").intensity(0, Duration::ZERO);
        assert!(
            matches!(zero_intensity.validate(), Err(ConfigError::Supervisor { problem, .. }) if problem.contains("period"))
        );

        let dup = SupervisorSpec::new("root")
            .child(proc_child("a", &["true"]))
            .child(proc_child("a", &["true"]));
        assert!(
            matches!(dup.validate(), Err(ConfigError::Supervisor { problem, .. }) if problem.contains("duplicate"))
        );

        let nested_bad = SupervisorSpec::new("root").child(ChildSpec::new(
            "sub",
            ChildStart::Supervisor(SupervisorSpec::new("sub").child(proc_child("x", &[]))),
        ));
        assert!(
            matches!(nested_bad.validate(), Err(ConfigError::Child { child, .. }) if child == "x")
        );

        let bad_name = SupervisorSpec::new("root").child(proc_child("a/b", &["true"]));
        assert!(bad_name.validate().is_err());
    }

    #[test]
    fn a_good_tree_validates() {
        let tree = SupervisorSpec::new("root")
            .intensity(3, Duration::from_secs(1))
            .child(proc_child("a", &["sleep", "1"]))
            .child(ChildSpec::new(
                "sub",
                ChildStart::Supervisor(
                    SupervisorSpec::new("sub").child(proc_child("b", &["true"])),
                ),
            ));
        assert_eq!(tree.validate(), Ok(()));
    }
}
