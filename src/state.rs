//! The state directory: one folder per bottle under `$XDG_STATE_HOME/bottle/`, and the
//! lock that keeps concurrent launches from colliding.
//!
//! Hazard: two launches started at once must never get the same id, folder or port (the
//! reference system's residual race, section 3.8), and a launcher killed with SIGKILL
//! leaves a folder and processes behind that `bottle cleanup` must find and remove
//! without touching anything else. So ids are allocated under an exclusive `flock` on
//! `<root>/.lock`, held by the [`Allocation`] until the launch's resources exist; every
//! process a launch starts is recorded as a [`ProcessIdentity`] (pid plus start time),
//! never a bare pid; and a record whose launcher is gone is dead whatever its phase says.
//! Nothing written here holds a secret: records carry names, paths and pids only.

use std::fs::{self, File, OpenOptions};
use std::io::Write;
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt};
use std::path::{Path, PathBuf};

use bottle_proc::ProcessIdentity;
use serde::{Deserialize, Serialize};

/// Why the state directory could not be used.
#[derive(Debug, thiserror::Error)]
pub enum StateError {
    /// A file or folder could not be read or written.
    #[error("state directory {path:?}")]
    Io {
        /// What was being read or written.
        path: PathBuf,
        /// Why.
        #[source]
        source: std::io::Error,
    },
    /// A record exists but is not valid JSON of the expected shape.
    #[error("state record {path:?} is damaged: {message}")]
    Damaged {
        /// The record.
        path: PathBuf,
        /// The parse error (positions only).
        message: String,
    },
    /// No bottle has this id.
    #[error("no bottle {id:?} (see `bottle ps`)")]
    NoSuchBottle {
        /// The id asked for.
        id: String,
    },
}

type Result<T> = std::result::Result<T, StateError>;

fn io(path: &Path) -> impl FnOnce(std::io::Error) -> StateError + '_ {
    move |source| StateError::Io { path: path.to_path_buf(), source }
}

/// Where a bottle runs.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, clap::ValueEnum)]
#[serde(rename_all = "snake_case")]
pub enum BackendKind {
    /// Namespaces and seccomp on this machine (no Docker needed).
    Local,
    /// Containers through the Docker Engine API.
    Docker,
    /// A KVM micro-VM.
    Vm,
}

impl std::fmt::Display for BackendKind {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            BackendKind::Local => "local",
            BackendKind::Docker => "docker",
            BackendKind::Vm => "vm",
        })
    }
}

/// Where a launch has got to.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Phase {
    /// Steps are running.
    Launching,
    /// The agent's command runs.
    Running,
    /// Teardown is running.
    Stopping,
    /// Torn down after the agent exited with `code` (or the launch failed with it).
    Exited {
        /// The launcher's exit code.
        code: i32,
    },
}

/// One bottle's `metadata.json`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct BottleRecord {
    /// The id (`<name>-<8 hex>`), also the folder's name.
    pub id: String,
    /// The bottle's name (its manifest's).
    pub name: String,
    /// Where it runs.
    pub backend: BackendKind,
    /// Seconds since the Unix epoch at allocation.
    pub created_unix: u64,
    /// The launcher process that owns it.
    pub launcher: ProcessIdentity,
    /// The sidecar, once started.
    #[serde(default)]
    pub sidecar: Option<ProcessIdentity>,
    /// The agent's outermost process, once started.
    #[serde(default)]
    pub agent: Option<ProcessIdentity>,
    /// Where the launch has got to.
    pub phase: Phase,
}

impl BottleRecord {
    /// True while the launcher that owns it is alive.
    pub fn launcher_alive(&self) -> bool {
        self.launcher.is_alive()
    }

    /// Left behind by a launcher that died before it finished its teardown.
    pub fn is_dead(&self) -> bool {
        !matches!(self.phase, Phase::Exited { .. }) && !self.launcher_alive()
    }
}

/// The root of every bottle's state.
#[derive(Debug, Clone)]
pub struct StateRoot {
    dir: PathBuf,
}

impl StateRoot {
    /// `$XDG_STATE_HOME/bottle`, else `$HOME/.local/state/bottle`. `env` reads the
    /// caller's environment (tests pass their own).
    pub fn from_env(env: &dyn Fn(&str) -> Option<String>) -> StateRoot {
        let base = env("XDG_STATE_HOME")
            .filter(|v| !v.is_empty())
            .map(PathBuf::from)
            .or_else(|| env("HOME").map(|h| PathBuf::from(h).join(".local/state")))
            .unwrap_or_else(|| PathBuf::from("/var/lib"));
        StateRoot { dir: base.join("bottle") }
    }

    /// A root at `dir` itself.
    pub fn at(dir: impl Into<PathBuf>) -> StateRoot {
        StateRoot { dir: dir.into() }
    }

    /// The root folder.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// The folder of bottle `id`.
    pub fn bottle_dir(&self, id: &str) -> PathBuf {
        self.dir.join(id)
    }

    fn ensure(&self) -> Result<()> {
        fs::DirBuilder::new().recursive(true).mode(0o700).create(&self.dir).map_err(io(&self.dir))
    }

    /// Takes the allocation lock (blocking until no other launch holds it), picks a fresh
    /// id for `name`, creates its folder (0700) and writes its first record. The lock is
    /// held until the returned [`Allocation`] is released or dropped.
    pub fn allocate(&self, name: &str, backend: BackendKind) -> Result<Allocation> {
        let (file, lock_path) = self.open_lock()?;
        let lock = nix::fcntl::Flock::lock(file, nix::fcntl::FlockArg::LockExclusive)
            .map_err(|(_, e)| StateError::Io { path: lock_path, source: e.into() })?;
        self.allocate_locked(lock, name, backend)
    }

    /// Opens the allocation lock for a caller that must stay interruptible while other
    /// launches hold it: [`LockWait::try_allocate`] never blocks.
    pub fn lock_wait(&self) -> Result<LockWait> {
        let (file, _) = self.open_lock()?;
        Ok(LockWait { root: self.clone(), file: Some(file) })
    }

    fn open_lock(&self) -> Result<(File, PathBuf)> {
        self.ensure()?;
        let lock_path = self.dir.join(".lock");
        let file = OpenOptions::new()
            .create(true)
            .truncate(false)
            .write(true)
            .mode(0o600)
            .open(&lock_path)
            .map_err(io(&lock_path))?;
        Ok((file, lock_path))
    }

    fn allocate_locked(
        &self,
        lock: nix::fcntl::Flock<File>,
        name: &str,
        backend: BackendKind,
    ) -> Result<Allocation> {
        let id = loop {
            let candidate = format!("{name}-{:08x}", rand::random::<u32>());
            if !self.bottle_dir(&candidate).exists() {
                break candidate;
            }
        };
        let dir = self.bottle_dir(&id);
        fs::DirBuilder::new().mode(0o700).create(&dir).map_err(io(&dir))?;
        let launcher = ProcessIdentity::current().ok_or_else(|| StateError::Io {
            path: PathBuf::from("/proc/self/stat"),
            source: std::io::Error::other("cannot read this process's start time"),
        })?;
        let record = BottleRecord {
            id: id.clone(),
            name: name.to_string(),
            backend,
            created_unix: std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map(|d| d.as_secs())
                .unwrap_or(0),
            launcher,
            sidecar: None,
            agent: None,
            phase: Phase::Launching,
        };
        write_record(&dir, &record)?;
        Ok(Allocation { lock: Some(lock), dir, record })
    }

    /// Every bottle record, sorted by id. Damaged records are returned as errors beside
    /// the good ones, so one bad file does not hide the rest.
    pub fn list(&self) -> Vec<Result<BottleRecord>> {
        let Ok(entries) = fs::read_dir(&self.dir) else { return Vec::new() };
        // Other folders live here too (the approval queue's `approvals/`): only names
        // shaped like an id are bottles.
        let mut dirs: Vec<PathBuf> = entries
            .filter_map(|e| e.ok())
            .filter(|e| e.file_type().map(|t| t.is_dir()).unwrap_or(false))
            .filter(|e| e.file_name().to_str().is_some_and(is_bottle_id))
            .map(|e| e.path())
            .collect();
        dirs.sort();
        dirs.iter().map(|d| read_record(d)).collect()
    }

    /// The record of bottle `id`.
    pub fn get(&self, id: &str) -> Result<BottleRecord> {
        let dir = self.bottle_dir(id);
        if !is_bottle_id(id) || !dir.is_dir() {
            return Err(StateError::NoSuchBottle { id: id.to_string() });
        }
        read_record(&dir)
    }

    /// Removes bottle `id`'s folder.
    pub fn remove(&self, id: &str) -> Result<()> {
        let dir = self.bottle_dir(id);
        fs::remove_dir_all(&dir).map_err(io(&dir))
    }
}

/// The allocation lock's file, open, waiting to be taken without blocking.
#[derive(Debug)]
pub struct LockWait {
    root: StateRoot,
    file: Option<File>,
}

impl LockWait {
    /// Allocates as [`StateRoot::allocate`] does if the lock is free now; `None` while
    /// another launch holds it.
    pub fn try_allocate(&mut self, name: &str, backend: BackendKind) -> Result<Option<Allocation>> {
        let path = self.root.dir.join(".lock");
        let Some(file) = self.file.take() else {
            return Err(StateError::Io {
                path,
                source: std::io::Error::other("lock already taken"),
            });
        };
        match nix::fcntl::Flock::lock(file, nix::fcntl::FlockArg::LockExclusiveNonblock) {
            Ok(lock) => self.root.allocate_locked(lock, name, backend).map(Some),
            Err((file, nix::errno::Errno::EWOULDBLOCK)) => {
                self.file = Some(file);
                Ok(None)
            }
            Err((_, e)) => Err(StateError::Io { path, source: e.into() }),
        }
    }
}

/// A bottle's folder and record while its launch runs; holds the allocation lock until
/// [`Allocation::release_lock`].
#[derive(Debug)]
pub struct Allocation {
    lock: Option<nix::fcntl::Flock<File>>,
    dir: PathBuf,
    record: BottleRecord,
}

impl Allocation {
    /// The bottle's folder.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// The current record.
    pub fn record(&self) -> &BottleRecord {
        &self.record
    }

    /// Lets other launches allocate (call once this launch's resources exist).
    pub fn release_lock(&mut self) {
        self.lock = None;
    }

    /// Changes the record and writes it (atomically: a temporary file renamed over it).
    pub fn update(&mut self, change: impl FnOnce(&mut BottleRecord)) -> Result<()> {
        change(&mut self.record);
        write_record(&self.dir, &self.record)
    }
}

/// True for `<name>-<8 hex digits>` with a manifest-style name (`[a-z][a-z0-9-]*`): the
/// ids [`StateRoot::allocate`] makes, and nothing that could leave the root.
fn is_bottle_id(id: &str) -> bool {
    let Some((name, suffix)) = id.rsplit_once('-') else { return false };
    let name_ok = name.starts_with(|c: char| c.is_ascii_lowercase())
        && name.chars().all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-');
    let suffix_ok =
        suffix.len() == 8 && suffix.chars().all(|c| c.is_ascii_digit() || ('a'..='f').contains(&c));
    name_ok && suffix_ok
}

fn write_record(dir: &Path, record: &BottleRecord) -> Result<()> {
    let path = dir.join("metadata.json");
    let tmp = dir.join(".metadata.json.tmp");
    let text = serde_json::to_string_pretty(record)
        .map_err(|e| StateError::Damaged { path: path.clone(), message: e.to_string() })?;
    let mut file = OpenOptions::new()
        .create(true)
        .truncate(true)
        .write(true)
        .mode(0o600)
        .open(&tmp)
        .map_err(io(&tmp))?;
    file.write_all(text.as_bytes()).and_then(|()| file.sync_all()).map_err(io(&tmp))?;
    fs::rename(&tmp, &path).map_err(io(&path))
}

fn read_record(dir: &Path) -> Result<BottleRecord> {
    let path = dir.join("metadata.json");
    let text = fs::read_to_string(&path).map_err(io(&path))?;
    serde_json::from_str(&text).map_err(|e| StateError::Damaged {
        path,
        message: format!("line {} column {}", e.line(), e.column()),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn root() -> (tempfile::TempDir, StateRoot) {
        let tmp = tempfile::tempdir().unwrap();
        let root = StateRoot::at(tmp.path().join("bottle"));
        (tmp, root)
    }

    #[test]
    fn xdg_state_home_wins_then_home() {
        let xdg = StateRoot::from_env(&|k| (k == "XDG_STATE_HOME").then(|| "/x".into()));
        assert_eq!(xdg.dir(), Path::new("/x/bottle"));
        let home = StateRoot::from_env(&|k| (k == "HOME").then(|| "/h".into()));
        assert_eq!(home.dir(), Path::new("/h/.local/state/bottle"));
    }

    #[test]
    fn allocation_writes_a_private_record_that_lists_and_updates() {
        use std::os::unix::fs::PermissionsExt;
        let (_tmp, root) = root();
        let mut a = root.allocate("demo", BackendKind::Local).unwrap();
        assert!(a.record().id.starts_with("demo-"));
        let mode = fs::metadata(a.dir()).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o700);
        a.update(|r| r.phase = Phase::Running).unwrap();
        let listed: Vec<_> = root.list().into_iter().map(|r| r.unwrap()).collect();
        assert_eq!(listed, vec![a.record().clone()]);
        assert!(!listed[0].is_dead(), "our own launcher is alive");
    }

    #[test]
    fn a_record_whose_launcher_is_gone_is_dead_unless_it_exited() {
        let (_tmp, root) = root();
        let mut a = root.allocate("demo", BackendKind::Local).unwrap();
        a.update(|r| r.launcher.start_time += 1).unwrap();
        assert!(root.get(&a.record().id).unwrap().is_dead());
        a.update(|r| r.phase = Phase::Exited { code: 0 }).unwrap();
        assert!(!root.get(&a.record().id).unwrap().is_dead());
    }

    #[test]
    fn concurrent_allocations_get_distinct_ids_and_folders() {
        let (_tmp, root) = root();
        let handles: Vec<_> = (0..16)
            .map(|_| {
                let root = root.clone();
                std::thread::spawn(move || {
                    root.allocate("same", BackendKind::Local).unwrap().record().id.clone()
                })
            })
            .collect();
        let mut ids: Vec<String> = handles.into_iter().map(|h| h.join().unwrap()).collect();
        ids.sort();
        ids.dedup();
        assert_eq!(ids.len(), 16);
        assert_eq!(root.list().len(), 16);
    }

    #[test]
    fn folders_that_are_not_bottles_are_neither_listed_nor_found() {
        let (_tmp, root) = root();
        let a = root.allocate("demo", BackendKind::Local).unwrap();
        // The approval queue keeps its folder in the same root.
        fs::create_dir_all(root.dir().join("approvals")).unwrap();
        let listed: Vec<_> = root.list().into_iter().map(|r| r.unwrap().id).collect();
        assert_eq!(listed, [a.record().id.clone()]);
        assert!(matches!(root.get("approvals"), Err(StateError::NoSuchBottle { .. })));
    }

    #[test]
    fn a_lock_wait_does_not_block_while_another_launch_holds_the_lock() {
        let (_tmp, root) = root();
        let first = root.allocate("a", BackendKind::Local).unwrap();
        let mut wait = root.lock_wait().unwrap();
        assert!(wait.try_allocate("b", BackendKind::Local).unwrap().is_none());
        assert!(wait.try_allocate("b", BackendKind::Local).unwrap().is_none());
        drop(first);
        let second = wait.try_allocate("b", BackendKind::Local).unwrap().expect("free now");
        assert!(second.record().id.starts_with("b-"));
        assert_eq!(root.list().len(), 2);
    }

    #[test]
    fn ids_that_escape_the_root_are_refused() {
        let (_tmp, root) = root();
        for id in ["../etc", ".lock", "a/b", "../demo-0000000a", "demo-0000000a/.."] {
            let err = root.get(id).unwrap_err();
            assert!(matches!(err, StateError::NoSuchBottle { .. }), "{id}: {err}");
        }
    }

    #[test]
    fn a_damaged_record_is_reported_without_hiding_the_others() {
        let (_tmp, root) = root();
        let good = root.allocate("good", BackendKind::Local).unwrap();
        let bad = root.bottle_dir("bad-00000000");
        fs::create_dir_all(&bad).unwrap();
        fs::write(bad.join("metadata.json"), "{\"id\": \"sk-secret-value\"").unwrap();
        let listed = root.list();
        assert_eq!(listed.len(), 2);
        let errors: Vec<String> =
            listed.iter().filter_map(|r| r.as_ref().err()).map(|e| e.to_string()).collect();
        assert_eq!(errors.len(), 1);
        assert!(errors[0].contains("damaged") && !errors[0].contains("sk-secret"), "{}", errors[0]);
        assert!(listed.iter().any(|r| r.as_ref().is_ok_and(|r| r.id == good.record().id)));
    }
}
