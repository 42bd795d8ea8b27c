//! `bottle ps`, `stop` and `cleanup`: reading and acting on the state directory.
//!
//! Hazard: these commands act on pids read from files that a crashed launcher left, and
//! a pid may have been recycled since. Every signal goes through
//! [`bottle_proc::ProcessIdentity::signal_group`] (pid plus start time, pinned by a pidfd),
//! so a stranger that inherited the number is never hit; and `cleanup` touches only
//! records whose launcher is gone, never a running bottle.

use std::time::Duration;

use serde::Serialize;

use crate::state::{BottleRecord, Phase, StateError, StateRoot};

/// One row of `bottle ps`.
#[derive(Debug, Clone, Serialize)]
pub struct PsRow {
    /// The record.
    #[serde(flatten)]
    pub record: BottleRecord,
    /// `running`, `launching`, `stopping`, `exited` or `dead` (launcher gone mid-launch).
    pub state: &'static str,
}

impl PsRow {
    fn of(record: BottleRecord) -> PsRow {
        let state = if record.is_dead() {
            "dead"
        } else {
            match record.phase {
                Phase::Launching => "launching",
                Phase::Running => "running",
                Phase::Stopping => "stopping",
                Phase::Exited { .. } => "exited",
            }
        };
        PsRow { record, state }
    }
}

/// The bottles in `root`, exited ones only when `all`. Damaged records come back as
/// errors beside the rows.
pub fn ps(root: &StateRoot, all: bool) -> (Vec<PsRow>, Vec<StateError>) {
    let mut rows = Vec::new();
    let mut errors = Vec::new();
    for entry in root.list() {
        match entry {
            Ok(record) => {
                let row = PsRow::of(record);
                if all || row.state != "exited" {
                    rows.push(row);
                }
            }
            Err(err) => errors.push(err),
        }
    }
    (rows, errors)
}

/// What cleanup did (or, dry, would do) for one dead bottle.
#[derive(Debug, Clone, Serialize)]
pub struct Cleaned {
    /// The bottle.
    pub id: String,
    /// Processes that were still alive and were killed (`sidecar`, `agent`).
    pub killed: Vec<&'static str>,
    /// Whether its folder was removed.
    pub removed: bool,
}

/// Removes what crashed launches left: their live processes (SIGKILL to each recorded
/// process group, identity-checked) and their folders. Running and exited bottles are
/// untouched. With `dry_run`, reports without acting.
pub fn cleanup(root: &StateRoot, dry_run: bool) -> (Vec<Cleaned>, Vec<StateError>) {
    let mut done = Vec::new();
    let mut errors = Vec::new();
    for entry in root.list() {
        let record = match entry {
            Ok(record) if record.is_dead() => record,
            Ok(_) => continue,
            Err(err) => {
                errors.push(err);
                continue;
            }
        };
        let mut killed = Vec::new();
        for (what, process) in [("agent", record.agent), ("sidecar", record.sidecar)] {
            let Some(process) = process else { continue };
            if process.is_alive() {
                if !dry_run {
                    process.signal_group(libc_sigkill());
                }
                killed.push(what);
            }
        }
        let removed = if dry_run {
            false
        } else {
            match root.remove(&record.id) {
                Ok(()) => true,
                Err(err) => {
                    errors.push(err);
                    false
                }
            }
        };
        done.push(Cleaned { id: record.id, killed, removed });
    }
    (done, errors)
}

/// Why `bottle stop` could not stop a bottle.
#[derive(Debug, thiserror::Error)]
pub enum StopError {
    /// The state directory said no.
    #[error(transparent)]
    State(#[from] StateError),
    /// The launcher did not finish its teardown in time.
    #[error(
        "bottle {id:?} did not stop within {waited:?}; `bottle cleanup` removes what is left once its launcher is gone"
    )]
    Timeout {
        /// The bottle.
        id: String,
        /// How long we waited.
        waited: Duration,
    },
}

/// Asks bottle `id`'s launcher to tear down (SIGTERM, the same path as Ctrl-C) and waits
/// until it has. A bottle whose launcher is already gone is cleaned up instead.
pub async fn stop(root: &StateRoot, id: &str, wait: Duration) -> Result<Phase, StopError> {
    let record = root.get(id)?;
    if let Phase::Exited { .. } = record.phase {
        return Ok(record.phase);
    }
    if !record.launcher_alive() {
        cleanup_one(root, &record);
        return Ok(Phase::Exited { code: 125 });
    }
    record.launcher.signal_group(libc_sigterm());
    let schedule = bottle_runtime::readiness::PollSchedule::local(wait);
    let probe = || {
        let root = root.clone();
        let id = id.to_string();
        async move {
            root.get(&id)
                .map(|r| matches!(r.phase, Phase::Exited { .. }) || !r.launcher_alive())
                .unwrap_or(true)
        }
    };
    bottle_runtime::readiness::poll_until("the bottle's teardown", schedule, || 0.0, probe)
        .await
        .map_err(|t| StopError::Timeout { id: id.to_string(), waited: t.waited })?;
    Ok(root.get(id).map(|r| r.phase).unwrap_or(Phase::Exited { code: 125 }))
}

fn cleanup_one(root: &StateRoot, record: &BottleRecord) {
    for process in [record.agent, record.sidecar].into_iter().flatten() {
        process.signal_group(libc_sigkill());
    }
    let _ = root.remove(&record.id);
}

fn libc_sigkill() -> i32 {
    nix::sys::signal::Signal::SIGKILL as i32
}

fn libc_sigterm() -> i32 {
    nix::sys::signal::Signal::SIGTERM as i32
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::state::BackendKind;

    #[test]
    fn cleanup_removes_only_dead_bottles() {
        let tmp = tempfile::tempdir().unwrap();
        let root = StateRoot::at(tmp.path());
        let mut live = root.allocate("live", BackendKind::Local).unwrap();
        live.release_lock();
        let mut exited = root.allocate("exited", BackendKind::Local).unwrap();
        exited.update(|r| r.phase = Phase::Exited { code: 0 }).unwrap();
        exited.release_lock();
        let mut dead = root.allocate("dead", BackendKind::Local).unwrap();
        // A launcher identity that no longer exists: the same pid, another start time.
        dead.update(|r| r.launcher.start_time += 1).unwrap();
        let dead_id = dead.record().id.clone();
        drop((dead, exited));

        let (dry, errors) = cleanup(&root, true);
        assert!(errors.is_empty());
        assert_eq!(dry.iter().map(|c| c.id.as_str()).collect::<Vec<_>>(), [dead_id.as_str()]);
        assert!(root.get(&dead_id).is_ok(), "a dry run removes nothing");

        let (done, _) = cleanup(&root, false);
        assert_eq!(done.len(), 1);
        assert!(done[0].removed);
        assert!(matches!(root.get(&dead_id), Err(StateError::NoSuchBottle { .. })));
        let (rows, _) = ps(&root, true);
        let states: Vec<_> = rows.iter().map(|r| (r.record.name.as_str(), r.state)).collect();
        assert_eq!(states, [("exited", "exited"), ("live", "launching")]);
        drop(live);
    }
}
