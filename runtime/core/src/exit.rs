//! Exit classification and the exit-code policy (docs/exit-codes.md).
//!
//! Hazard: the reference system took the maximum child return code, which masked a
//! signal crash that happened before a graceful shutdown and reported 143 for a
//! daemon that exited by our own SIGTERM. Here one classifier serves actors and
//! processes alike, and one table turns a supervision tree's outcome into a code.

use std::time::Duration;

use bottle_proc::ExitStatus;
use serde::{Deserialize, Serialize};

/// How a child's ending counts for the restart policy.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum ExitClass {
    /// Exit 0, or killed by a signal we sent while stopping it.
    Clean,
    /// Anything else: non-zero exit, a signal we did not send, a panic, an `Err`.
    Crash,
    /// An exit code the spec marks as do-not-restart (e.g. 78, EX_CONFIG).
    Permanent,
}

/// What happened to a child, actor or process.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum Termination {
    /// The process was reaped with this status.
    Exited {
        /// Exit code, or `None` when killed by a signal.
        code: Option<i32>,
        /// The signal that killed it, if any.
        signal: Option<i32>,
        /// Whether we had asked it to stop (SIGTERM, then SIGKILL at the stop timeout).
        stop_requested: bool,
        /// Whether the stop escalated to SIGKILL.
        forced: bool,
    },
    /// exec failed (`shell_code` 127 not found, 126 not executable).
    SpawnFailed {
        /// Why, as a readable chain.
        reason: String,
        /// The code a shell would report.
        shell_code: i32,
    },
    /// The readiness check did not pass before its deadline; the process was killed.
    ReadinessTimeout {
        /// How long we waited.
        #[serde(with = "duration_ms")]
        waited: Duration,
    },
    /// An actor stopped normally.
    ActorStopped {
        /// Whether we had asked it to stop.
        stop_requested: bool,
    },
    /// An actor panicked or its handler returned `Err`.
    ActorFailed {
        /// The panic message or error chain.
        reason: String,
    },
    /// A nested supervisor ended.
    Supervisor {
        /// Why it ended.
        cause: TreeCause,
        /// The first crash it saw, if any.
        first_crash: Option<CrashRecord>,
    },
}

impl Termination {
    /// A process termination from the reaper's status.
    pub fn from_status(status: ExitStatus, stop_requested: bool, forced: bool) -> Termination {
        let (code, signal) = match status {
            ExitStatus::Exited(code) => (Some(code), None),
            ExitStatus::Signaled { signal, .. } => (None, Some(signal)),
        };
        Termination::Exited { code, signal, stop_requested, forced }
    }

    /// Whether this ending came after we asked the child to stop.
    pub fn stop_requested(&self) -> bool {
        matches!(
            self,
            Termination::Exited { stop_requested: true, .. }
                | Termination::ActorStopped { stop_requested: true }
        )
    }

    /// The one classifier. `permanent_codes` are this child's do-not-restart exit codes.
    pub fn classify(&self, permanent_codes: &[i32]) -> ExitClass {
        match self {
            Termination::Exited { code: Some(0), .. } => ExitClass::Clean,
            Termination::Exited { code: Some(code), stop_requested, .. } => {
                if permanent_codes.contains(code) {
                    ExitClass::Permanent
                } else if *stop_requested && *code == 128 + libc::SIGTERM {
                    // A shell-style daemon that trapped our SIGTERM and exited 143.
                    ExitClass::Clean
                } else {
                    ExitClass::Crash
                }
            }
            Termination::Exited { signal: Some(signal), stop_requested, .. } => {
                let ours = *signal == libc::SIGTERM || *signal == libc::SIGKILL;
                if *stop_requested && ours { ExitClass::Clean } else { ExitClass::Crash }
            }
            Termination::Exited { .. } => ExitClass::Crash,
            Termination::SpawnFailed { .. } | Termination::ReadinessTimeout { .. } => {
                ExitClass::Crash
            }
            Termination::ActorStopped { .. } => ExitClass::Clean,
            Termination::ActorFailed { .. } => ExitClass::Crash,
            Termination::Supervisor { cause, .. } => match cause {
                TreeCause::Shutdown | TreeCause::SignificantChildExited { clean: true, .. } => {
                    ExitClass::Clean
                }
                TreeCause::SignificantChildExited { clean: false, code, .. }
                    if permanent_codes.contains(code) =>
                {
                    ExitClass::Permanent
                }
                _ => ExitClass::Crash,
            },
        }
    }

    /// The exit code this termination stands for when it decides the tree's code.
    pub fn code(&self) -> i32 {
        match self {
            Termination::Exited { code: Some(code), .. } => *code,
            Termination::Exited { signal: Some(signal), .. } => 128 + signal,
            Termination::Exited { .. } => TreeExitCode::Internal.code(),
            Termination::SpawnFailed { shell_code, .. } => *shell_code,
            Termination::ReadinessTimeout { .. } => TreeExitCode::ReadinessTimeout.code(),
            Termination::ActorStopped { .. } => 0,
            Termination::ActorFailed { .. } => TreeExitCode::ActorCrashed.code(),
            Termination::Supervisor { cause, first_crash } => cause.exit_code(first_crash.as_ref()),
        }
    }

    /// One line for logs and reports.
    pub fn describe(&self) -> String {
        match self {
            Termination::Exited { code: Some(code), forced, .. } => {
                format!("exit code {code}{}", if *forced { " (after SIGKILL)" } else { "" })
            }
            Termination::Exited { signal: Some(signal), stop_requested, forced, .. } => format!(
                "killed by {}{}",
                bottle_proc::signal::name(*signal),
                match (stop_requested, forced) {
                    (true, true) => " (stop timeout: we sent SIGKILL)",
                    (true, false) => " (we stopped it)",
                    _ => "",
                }
            ),
            Termination::Exited { .. } => "unknown status".into(),
            Termination::SpawnFailed { reason, .. } => format!("spawn failed: {reason}"),
            Termination::ReadinessTimeout { waited } => format!("not ready after {waited:?}"),
            Termination::ActorStopped { .. } => "actor stopped".into(),
            Termination::ActorFailed { reason } => format!("actor failed: {reason}"),
            Termination::Supervisor { cause, .. } => format!("supervisor ended: {cause:?}"),
        }
    }
}

/// Why a supervisor (or the whole tree) ended.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(tag = "cause", rename_all = "snake_case")]
pub enum TreeCause {
    /// A graceful shutdown was requested (SIGTERM, a parent, an API call).
    Shutdown,
    /// A significant child ended and was not to be restarted.
    SignificantChildExited {
        /// Its name.
        child: String,
        /// Whether it ended cleanly.
        clean: bool,
        /// The code its termination stands for.
        code: i32,
    },
    /// Restart intensity was exceeded by `child`'s ending.
    IntensityExceeded {
        /// The child whose ending went over budget.
        child: String,
        /// Whether that last ending was a readiness timeout.
        readiness_timeout: bool,
    },
    /// The supervisor itself failed (a bug or an injected panic).
    Internal {
        /// What failed.
        reason: String,
    },
}

impl TreeCause {
    /// The exit-code table (docs/exit-codes.md).
    pub fn exit_code(&self, first_crash: Option<&CrashRecord>) -> i32 {
        match self {
            // Crash-then-shutdown keeps the first crash's code.
            TreeCause::Shutdown | TreeCause::SignificantChildExited { clean: true, .. } => {
                first_crash.map_or(0, |c| c.code)
            }
            TreeCause::SignificantChildExited { clean: false, code, .. } => *code,
            TreeCause::IntensityExceeded { readiness_timeout: true, .. } => {
                TreeExitCode::ReadinessTimeout.code()
            }
            TreeCause::IntensityExceeded { .. } => TreeExitCode::IntensityExceeded.code(),
            TreeCause::Internal { .. } => TreeExitCode::Internal.code(),
        }
    }
}

/// The first crash in a (sub)tree: kept so a later graceful shutdown cannot hide it.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct CrashRecord {
    /// Milliseconds since the tree started.
    pub at_ms: u64,
    /// Path of the child, `root/sub/name`.
    pub child: String,
    /// The code its crash stands for (exit code or 128+signal).
    pub code: i32,
    /// Readable description.
    pub what: String,
}

/// The codes bottle itself reserves. Child exit codes 1..=125, 126/127 for exec
/// failures and 128+N for signals pass through; these sit above 128+64 and below
/// systemd's 200..=243 range.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[repr(u8)]
pub enum TreeExitCode {
    /// Clean shutdown.
    Clean = 0,
    /// Command-line usage error (clap's convention).
    Usage = 2,
    /// bottle's own bug, or a supervisor panicked.
    Internal = 193,
    /// Restart intensity exceeded at the root.
    IntensityExceeded = 194,
    /// A child never became ready and the root gave up.
    ReadinessTimeout = 195,
    /// Invalid configuration; nothing was started.
    Config = 196,
    /// An in-process actor child crashed (panic or `Err`) and decided the exit code.
    ActorCrashed = 197,
}

impl TreeExitCode {
    /// The numeric code.
    pub fn code(self) -> i32 {
        self as i32
    }
}

mod duration_ms {
    pub(super) fn serialize<S: serde::Serializer>(
        d: &std::time::Duration,
        s: S,
    ) -> Result<S::Ok, S::Error> {
        s.serialize_u64(u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
    }

    pub(super) fn deserialize<'de, D: serde::Deserializer<'de>>(
        d: D,
    ) -> Result<std::time::Duration, D::Error> {
        <u64 as serde::Deserialize>::deserialize(d).map(std::time::Duration::from_millis)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn exited(code: i32, stop: bool) -> Termination {
        Termination::from_status(ExitStatus::Exited(code), stop, false)
    }

    fn killed(signal: i32, stop: bool) -> Termination {
        Termination::from_status(ExitStatus::Signaled { signal, core_dumped: false }, stop, false)
    }

    #[test]
    fn exit_code_sweep_classifies_and_keeps_every_code() {
        for code in 0..=255 {
            let t = exited(code, false);
            let expect = match code {
                0 => ExitClass::Clean,
                78 => ExitClass::Permanent,
                _ => ExitClass::Crash,
            };
            assert_eq!(t.classify(&[78]), expect, "code {code}");
            assert_eq!(t.code(), code);
        }
    }

    #[test]
    fn signals_we_sent_while_stopping_are_clean_others_crash() {
        for signal in [libc::SIGTERM, libc::SIGKILL] {
            assert_eq!(killed(signal, true).classify(&[]), ExitClass::Clean);
            assert_eq!(killed(signal, false).classify(&[]), ExitClass::Crash);
        }
        for signal in [libc::SIGHUP, libc::SIGQUIT, libc::SIGSEGV, libc::SIGINT] {
            assert_eq!(killed(signal, true).classify(&[]), ExitClass::Crash);
            assert_eq!(killed(signal, false).code(), 128 + signal);
        }
        assert_eq!(exited(143, true).classify(&[]), ExitClass::Clean);
        assert_eq!(exited(143, false).classify(&[]), ExitClass::Crash);
    }

    #[test]
    fn table_maps_tree_causes() {
        let crash =
            CrashRecord { at_ms: 1, child: "root/a".into(), code: 139, what: "SIGSEGV".into() };
        assert_eq!(TreeCause::Shutdown.exit_code(None), 0);
        assert_eq!(TreeCause::Shutdown.exit_code(Some(&crash)), 139);
        let sig = TreeCause::SignificantChildExited { child: "a".into(), clean: false, code: 78 };
        assert_eq!(sig.exit_code(Some(&crash)), 78);
        let over = TreeCause::IntensityExceeded { child: "a".into(), readiness_timeout: false };
        assert_eq!(over.exit_code(None), 194);
        let ready = TreeCause::IntensityExceeded { child: "a".into(), readiness_timeout: true };
        assert_eq!(ready.exit_code(None), 195);
        assert_eq!(TreeCause::Internal { reason: "x".into() }.exit_code(None), 193);
    }

    #[test]
    fn reserved_codes_avoid_shell_and_signal_ranges() {
        for code in [
            TreeExitCode::Internal,
            TreeExitCode::IntensityExceeded,
            TreeExitCode::ReadinessTimeout,
            TreeExitCode::Config,
            TreeExitCode::ActorCrashed,
        ] {
            let n = code.code();
            assert!(n > 128 + 64 && n < 200, "{code:?} = {n}");
        }
    }

    #[test]
    fn nested_supervisor_outcome_classifies_for_its_parent() {
        let clean = Termination::Supervisor { cause: TreeCause::Shutdown, first_crash: None };
        assert_eq!(clean.classify(&[]), ExitClass::Clean);
        let over = Termination::Supervisor {
            cause: TreeCause::IntensityExceeded { child: "x".into(), readiness_timeout: false },
            first_crash: None,
        };
        assert_eq!(over.classify(&[]), ExitClass::Crash);
        assert_eq!(over.code(), 194);
    }
}

/// A linked actor that ended, as an actor holding links sees it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LinkedEnd {
    /// Its registered name, if it has one.
    pub name: Option<String>,
    /// Why it ended: its stop reason ("stopped" when none) or its failure.
    pub why: String,
}

/// The linked actor a supervision event says ended (terminated or failed); `None` for
/// events that are not an end (a start, a process-group change).
pub fn linked_end(event: &ractor::SupervisionEvent) -> Option<LinkedEnd> {
    let (cell, why) = match event {
        ractor::SupervisionEvent::ActorTerminated(cell, _, reason) => {
            (cell, reason.clone().unwrap_or_else(|| "stopped".into()))
        }
        ractor::SupervisionEvent::ActorFailed(cell, err) => (cell, err.to_string()),
        _ => return None,
    };
    Some(LinkedEnd { name: cell.get_name(), why })
}
