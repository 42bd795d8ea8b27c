//! The exit report bottle-init writes when it ends (`exit_report = "..."`), read by the
//! launcher to say why a bottle stopped.
//!
//! Hazard: the report is built by the runtime and read by another program; a field
//! renamed on one side reads as missing on the other. This is the wire form: built from
//! the runtime's report by [`From`], so a field the runtime adds fails to compile here
//! rather than vanish, and a test checks both serialise to the same JSON.

use bottle_runtime::report as runtime;
use serde::{Deserialize, Serialize};

pub use bottle_runtime::exit::{CrashRecord, ExitClass, TreeCause};
pub use bottle_runtime::report::HistoryEntry;

use crate::ProtocolError;

/// Why the tree ended, with which code, and every supervisor's final state.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ExitReport {
    /// The process exit code chosen by the table in docs/exit-codes.md.
    pub exit_code: i32,
    /// Why the tree ended.
    pub cause: TreeCause,
    /// The first crash anywhere in the tree, kept across a later graceful shutdown.
    pub first_crash: Option<CrashRecord>,
    /// Why shutdown began, when it was requested (`SIGTERM`, `ctl stop`, ...).
    pub shutdown_reason: Option<String>,
    /// Orphans (processes bottle-init did not spawn) reaped while the tree ran.
    pub orphans_reaped: u64,
    /// Every supervisor's final report.
    pub supervisors: Vec<SupervisorReport>,
}

/// A supervisor's final state.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SupervisorReport {
    /// Its path, `root/sub`.
    pub path: String,
    /// Why it ended.
    pub cause: TreeCause,
    /// Its children, in start order.
    pub children: Vec<ChildReport>,
}

/// One child in a supervisor's report.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ChildReport {
    /// Its name.
    pub name: String,
    /// `process`, `supervisor` or `actor`.
    pub kind: String,
    /// Restarts performed.
    pub restarts: u32,
    /// Its last terminations, oldest first.
    pub last: Vec<HistoryEntry>,
}

impl ExitReport {
    /// Pretty JSON, as written to the report file.
    pub fn to_json(&self) -> Result<String, ProtocolError> {
        serde_json::to_string_pretty(self)
            .map_err(|e| ProtocolError::Render { format: "JSON", message: e.to_string() })
    }

    /// Reads a report file's contents.
    pub fn from_json(bytes: &[u8]) -> Result<ExitReport, ProtocolError> {
        crate::schema::from_json(bytes)
    }
}

impl From<&runtime::ExitReport> for ExitReport {
    fn from(r: &runtime::ExitReport) -> ExitReport {
        let runtime::ExitReport {
            exit_code,
            cause,
            first_crash,
            shutdown_reason,
            orphans_reaped,
            supervisors,
        } = r;
        ExitReport {
            exit_code: *exit_code,
            cause: cause.clone(),
            first_crash: first_crash.clone(),
            shutdown_reason: shutdown_reason.clone(),
            orphans_reaped: *orphans_reaped,
            supervisors: supervisors.iter().map(SupervisorReport::from).collect(),
        }
    }
}

impl From<&runtime::SupervisorReport> for SupervisorReport {
    fn from(r: &runtime::SupervisorReport) -> SupervisorReport {
        let runtime::SupervisorReport { path, cause, children } = r;
        SupervisorReport {
            path: path.clone(),
            cause: cause.clone(),
            children: children.iter().map(ChildReport::from).collect(),
        }
    }
}

impl From<&runtime::ChildReport> for ChildReport {
    fn from(r: &runtime::ChildReport) -> ChildReport {
        let runtime::ChildReport { name, kind, restarts, last } = r;
        ChildReport {
            name: name.clone(),
            kind: (*kind).to_string(),
            restarts: *restarts,
            last: last.clone(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample() -> runtime::ExitReport {
        runtime::ExitReport {
            exit_code: 137,
            cause: TreeCause::Shutdown,
            first_crash: Some(CrashRecord {
                at_ms: 12,
                child: "init/a".into(),
                code: 137,
                what: "killed by SIGKILL".into(),
            }),
            shutdown_reason: Some("SIGTERM".into()),
            orphans_reaped: 3,
            supervisors: vec![runtime::SupervisorReport {
                path: "init".into(),
                cause: TreeCause::IntensityExceeded { child: "a".into(), readiness_timeout: false },
                children: vec![runtime::ChildReport {
                    name: "a".into(),
                    kind: "process",
                    restarts: 2,
                    last: vec![HistoryEntry {
                        at_ms: 12,
                        what: "killed by SIGKILL".into(),
                        class: ExitClass::Crash,
                        code: 137,
                    }],
                }],
            }],
        }
    }

    #[test]
    fn the_wire_report_is_the_runtime_report_field_for_field() {
        let built = sample();
        let wire = ExitReport::from(&built);
        assert_eq!(
            serde_json::to_value(&wire).unwrap(),
            serde_json::from_str::<serde_json::Value>(&built.to_json()).unwrap()
        );
        let back = ExitReport::from_json(built.to_json().as_bytes()).unwrap();
        assert_eq!(back, wire);
    }
}
