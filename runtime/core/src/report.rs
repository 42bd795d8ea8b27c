//! The machine-readable exit report (JSON): why the tree ended, with which code, and
//! every child's restart count and last statuses.

use serde::{Deserialize, Serialize};

use crate::exit::{CrashRecord, ExitClass, TreeCause};

/// How many past terminations each child keeps.
pub const HISTORY: usize = 8;

/// One past termination of a child.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct HistoryEntry {
    /// Milliseconds since the tree started.
    pub at_ms: u64,
    /// What happened, readable.
    pub what: String,
    /// How it was classified.
    pub class: ExitClass,
    /// The code it stands for.
    pub code: i32,
}

/// One child in a supervisor report.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct ChildReport {
    /// Its name.
    pub name: String,
    /// `process`, `supervisor` or `actor`.
    pub kind: &'static str,
    /// Restarts performed.
    pub restarts: u32,
    /// Its last terminations, oldest first.
    pub last: Vec<HistoryEntry>,
}

/// A supervisor's final state.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct SupervisorReport {
    /// `root/sub`.
    pub path: String,
    /// Why it ended.
    pub cause: TreeCause,
    /// Its children.
    pub children: Vec<ChildReport>,
}

/// The whole tree's exit report.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct ExitReport {
    /// The process exit code chosen by the table in docs/exit-codes.md.
    pub exit_code: i32,
    /// Why the tree ended.
    pub cause: TreeCause,
    /// The first crash anywhere in the tree, kept across a later graceful shutdown.
    pub first_crash: Option<CrashRecord>,
    /// Why shutdown began, when it was requested (`SIGTERM`, `api`, ...).
    pub shutdown_reason: Option<String>,
    /// Orphans (processes we did not spawn) reaped while the tree ran.
    pub orphans_reaped: u64,
    /// Every supervisor's final report.
    pub supervisors: Vec<SupervisorReport>,
}

impl ExitReport {
    /// Pretty JSON.
    pub fn to_json(&self) -> String {
        serde_json::to_string_pretty(self).unwrap_or_else(|e| format!("{{\"error\":\"{e}\"}}"))
    }
}
