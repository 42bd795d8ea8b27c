//! The approval queue for held requests: a journal on disk, the actor that owns it, and
//! the client a parked request waits through.
//!
//! Hazard: a hold that is forgotten on restart either hangs the agent forever or, worse,
//! is silently released; a decision written twice (approve from one terminal, reject from
//! another) must not both count; a queue that fails must refuse, not forward. So:
//!
//! - The queue is an append-only JSON-lines journal (`approvals.jsonl`) in a directory
//!   the host can read (the launcher bind-mounts it). Every request and every decision
//!   is one line written with a single `write` under an exclusive file lock; a torn last
//!   line (a crash mid-write) is skipped on read. Replaying the journal rebuilds the
//!   queue, so a restart of the store, the sidecar or the launcher loses nothing.
//! - A decision is appended only while holding the lock and only if the hold is still
//!   pending, so the first decision wins and later ones are refused with a reason.
//! - The parked request waits through [`ApprovalClient`], which has its own deadline:
//!   if the store actor dies, the client finds the restarted one by name and waits again
//!   on the same id; if none answers before the deadline, the answer is "expired" and
//!   the request is refused (fail closed).
//! - Approval requests carry detections (rule, location, excerpt, fingerprint), never
//!   the secret; the held URL is stored with detected spans redacted, or withheld.

use std::collections::HashMap;
use std::fs::{File, OpenOptions};
use std::io::{Read, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use ractor::{Actor, ActorProcessingErr, ActorRef, RpcReplyPort};

use crate::engine::Detection;

/// The journal's file name inside the queue directory.
pub const JOURNAL: &str = "approvals.jsonl";
/// How long a hold waits for a decision unless configured otherwise (the reference
/// system's `EGRESS_TOKEN_ALLOW_TIMEOUT_SECONDS`).
pub const DEFAULT_HOLD_TIMEOUT: Duration = Duration::from_secs(300);
/// How often the store looks for decisions written by the host.
pub const POLL: Duration = Duration::from_millis(100);

/// Why a queue operation failed.
#[derive(Debug, thiserror::Error)]
pub enum ApprovalError {
    /// The journal could not be read or written.
    #[error("approval journal {path:?}: {source}")]
    Io {
        /// The journal.
        path: PathBuf,
        /// Why.
        #[source]
        source: std::io::Error,
    },
    /// No hold has this id.
    #[error("no held request with id {0:?}")]
    Unknown(String),
    /// The hold was already decided.
    #[error("held request {id:?} was already {decision}")]
    AlreadyDecided {
        /// The id.
        id: String,
        /// What it was.
        decision: String,
    },
    /// A rejection needs a reason.
    #[error("a rejection needs a reason (--reason TEXT)")]
    ReasonRequired,
}

/// The file beside the journal holding the bottle's [`crate::FingerprintKey`] (0600).
pub const KEY_FILE: &str = "fingerprint.key";

/// The fingerprint key stored in `dir`, created (0600, 32 random bytes) if missing, so
/// fingerprints in the journal still match after the sidecar restarts.
pub fn fingerprint_key(dir: &Path) -> Result<crate::FingerprintKey, ApprovalError> {
    let path = dir.join(KEY_FILE);
    let io = |source| ApprovalError::Io { path: path.clone(), source };
    std::fs::create_dir_all(dir).map_err(io)?;
    if let Ok(bytes) = std::fs::read(&path)
        && let Ok(bytes) = <[u8; 32]>::try_from(bytes.as_slice())
    {
        return Ok(crate::FingerprintKey::from_bytes(bytes));
    }
    // Written whole to a private name, then linked into place: a racing process sees
    // either no key or all of it, and the first link wins.
    let key = crate::FingerprintKey::random();
    let tmp = dir.join(format!(".{KEY_FILE}.{}", std::process::id()));
    let mut options = OpenOptions::new();
    options.write(true).create(true).truncate(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::OpenOptionsExt;
        options.mode(0o600);
    }
    let mut file = options.open(&tmp).map_err(io)?;
    file.write_all(&key.to_bytes()).map_err(io)?;
    file.sync_all().map_err(io)?;
    let linked = std::fs::hard_link(&tmp, &path);
    let _ = std::fs::remove_file(&tmp);
    match linked {
        Ok(()) => Ok(key),
        Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {
            let bytes = std::fs::read(&path).map_err(io)?;
            let bytes = <[u8; 32]>::try_from(bytes.as_slice()).map_err(|_| {
                io(std::io::Error::new(std::io::ErrorKind::InvalidData, "not a 32-byte key"))
            })?;
            Ok(crate::FingerprintKey::from_bytes(bytes))
        }
        Err(e) => Err(io(e)),
    }
}

/// What a held request asks the operator.
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct HoldRequest {
    /// Which bottle (or proxy) holds it.
    pub bottle: String,
    /// Method.
    pub method: String,
    /// Target host.
    pub host: String,
    /// Path and query with detected spans redacted (or `[withheld]`).
    pub path: String,
    /// What was found.
    pub detections: Vec<Detection>,
}

/// The operator's answer.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Decision {
    /// Forward it; safelist its fingerprints for the bottle's lifetime.
    Approve,
    /// Refuse it (403).
    Reject,
    /// Nobody answered in time (403).
    Expire,
}

impl std::fmt::Display for Decision {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Decision::Approve => "approved",
            Decision::Reject => "rejected",
            Decision::Expire => "expired",
        })
    }
}

/// One journal line.
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
#[serde(tag = "op", rename_all = "lowercase")]
pub enum Entry {
    /// A request was held.
    Hold {
        /// Short id the operator types.
        id: String,
        /// Unix seconds.
        at: f64,
        /// Unix seconds after which it expires.
        expires_at: f64,
        /// What it asks.
        #[serde(flatten)]
        request: HoldRequest,
    },
    /// It was decided.
    Decide {
        /// The hold.
        id: String,
        /// Unix seconds.
        at: f64,
        /// The answer.
        decision: Decision,
        /// Why (required for a rejection).
        #[serde(default, skip_serializing_if = "Option::is_none")]
        reason: Option<String>,
        /// Who (user name, or `bottle` for expiry).
        by: String,
    },
}

/// A hold as the queue sees it after replay.
#[derive(Debug, Clone, PartialEq, serde::Serialize)]
pub struct Held {
    /// Id.
    pub id: String,
    /// When held (unix seconds).
    pub at: f64,
    /// When it expires (unix seconds).
    pub expires_at: f64,
    /// What it asks.
    pub request: HoldRequest,
    /// The answer, if any.
    pub decision: Option<(Decision, Option<String>)>,
}

fn now() -> f64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map(|d| d.as_secs_f64()).unwrap_or(0.0)
}

/// The journal in `dir`.
#[derive(Debug, Clone)]
pub struct Journal {
    path: PathBuf,
}

impl Journal {
    /// Opens (creating, 0700 directory and 0600 file) the journal in `dir`.
    pub fn open(dir: &Path) -> Result<Journal, ApprovalError> {
        let path = dir.join(JOURNAL);
        let io = |source| ApprovalError::Io { path: path.clone(), source };
        std::fs::create_dir_all(dir).map_err(io)?;
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            let _ = std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o700));
        }
        let mut options = OpenOptions::new();
        options.create(true).append(true);
        #[cfg(unix)]
        {
            use std::os::unix::fs::OpenOptionsExt;
            options.mode(0o600);
        }
        options.open(&path).map_err(io)?;
        Ok(Journal { path })
    }

    /// The journal file.
    pub fn path(&self) -> &Path {
        &self.path
    }

    fn io(&self, source: std::io::Error) -> ApprovalError {
        ApprovalError::Io { path: self.path.clone(), source }
    }

    fn locked(&self) -> Result<File, ApprovalError> {
        let file =
            OpenOptions::new().read(true).append(true).open(&self.path).map_err(|e| self.io(e))?;
        file.lock().map_err(|e| self.io(e))?;
        Ok(file)
    }

    /// Every complete entry from `offset`, and the offset after the last complete line.
    pub fn read_from(&self, offset: u64) -> Result<(Vec<Entry>, u64), ApprovalError> {
        let mut file = File::open(&self.path).map_err(|e| self.io(e))?;
        file.seek(SeekFrom::Start(offset)).map_err(|e| self.io(e))?;
        let mut bytes = Vec::new();
        file.read_to_end(&mut bytes).map_err(|e| self.io(e))?;
        Ok(parse(&bytes, offset))
    }

    /// Appends a hold under the lock; the id is fresh (not in the journal).
    pub fn hold(&self, request: HoldRequest, timeout: Duration) -> Result<Held, ApprovalError> {
        let mut file = self.locked()?;
        let (entries, _) = read_locked(&mut file).map_err(|e| self.io(e))?;
        let taken: std::collections::HashSet<String> = entries
            .iter()
            .map(|e| match e {
                Entry::Hold { id, .. } | Entry::Decide { id, .. } => id.clone(),
            })
            .collect();
        let id = loop {
            let id: String = {
                use rand::Rng;
                let mut rng = rand::rng();
                (0..6).map(|_| format!("{:x}", rng.random_range(0..16u8))).collect()
            };
            if !taken.contains(&id) {
                break id;
            }
        };
        let at = now();
        let expires_at = at + timeout.as_secs_f64();
        let entry = Entry::Hold { id: id.clone(), at, expires_at, request: request.clone() };
        append_line(&mut file, &entry).map_err(|e| self.io(e))?;
        Ok(Held { id, at, expires_at, request, decision: None })
    }

    /// Appends a decision if the hold is still pending (first decision wins).
    pub fn decide(
        &self,
        id: &str,
        decision: Decision,
        reason: Option<String>,
        by: &str,
    ) -> Result<(), ApprovalError> {
        if decision == Decision::Reject && reason.as_deref().is_none_or(|r| r.trim().is_empty()) {
            return Err(ApprovalError::ReasonRequired);
        }
        let mut file = self.locked()?;
        let (entries, _) = read_locked(&mut file).map_err(|e| self.io(e))?;
        let held = replay(&entries);
        let Some(h) = held.iter().find(|h| h.id == id) else {
            return Err(ApprovalError::Unknown(id.to_string()));
        };
        if let Some((d, _)) = &h.decision {
            return Err(ApprovalError::AlreadyDecided {
                id: id.to_string(),
                decision: d.to_string(),
            });
        }
        // Past its expiry the hold was refused already (the waiting request gave up):
        // an approval now would only safelist a value nobody looked at in time.
        if decision != Decision::Expire && h.expires_at <= now() {
            let entry = Entry::Decide {
                id: id.to_string(),
                at: now(),
                decision: Decision::Expire,
                reason: None,
                by: "bottle".into(),
            };
            append_line(&mut file, &entry).map_err(|e| self.io(e))?;
            return Err(ApprovalError::AlreadyDecided {
                id: id.to_string(),
                decision: "expired".into(),
            });
        }
        let entry =
            Entry::Decide { id: id.to_string(), at: now(), decision, reason, by: by.to_string() };
        append_line(&mut file, &entry).map_err(|e| self.io(e))
    }

    /// Every hold, oldest first, with its decision.
    pub fn list(&self) -> Result<Vec<Held>, ApprovalError> {
        let (entries, _) = self.read_from(0)?;
        Ok(replay(&entries))
    }
}

fn read_locked(file: &mut File) -> std::io::Result<(Vec<Entry>, u64)> {
    file.seek(SeekFrom::Start(0))?;
    let mut bytes = Vec::new();
    file.read_to_end(&mut bytes)?;
    Ok(parse(&bytes, 0))
}

fn append_line(file: &mut File, entry: &Entry) -> std::io::Result<()> {
    let mut line = Vec::new();
    // A torn last line (a crash mid-write) must not swallow this one: start on a new line.
    let len = file.seek(SeekFrom::End(0))?;
    if len > 0 {
        file.seek(SeekFrom::Start(len - 1))?;
        let mut last = [0u8; 1];
        file.read_exact(&mut last)?;
        if last[0] != b'\n' {
            line.push(b'\n');
        }
    }
    line.extend(serde_json::to_vec(entry).map_err(std::io::Error::other)?);
    line.push(b'\n');
    // One write of the whole line (O_APPEND): readers see all of it or none of it.
    file.write_all(&line)?;
    file.sync_data()
}

/// Complete lines only; a line that does not parse (torn, or garbage) is skipped.
fn parse(bytes: &[u8], offset: u64) -> (Vec<Entry>, u64) {
    let complete = bytes.iter().rposition(|&b| b == b'\n').map_or(0, |i| i + 1);
    let entries = bytes[..complete]
        .split(|&b| b == b'\n')
        .filter(|line| !line.is_empty())
        .filter_map(|line| match serde_json::from_slice::<Entry>(line) {
            Ok(e) => Some(e),
            Err(err) => {
                tracing::warn!(error = %err, "Skipping an unreadable approval journal line.");
                None
            }
        })
        .collect();
    (entries, offset + complete as u64)
}

/// Rebuilds the queue from entries; the first decision of a hold counts.
pub fn replay(entries: &[Entry]) -> Vec<Held> {
    let mut queue = Queue::default();
    for entry in entries {
        queue.apply(entry);
    }
    queue.held
}

/// The queue as the journal so far makes it, kept up to date entry by entry.
#[derive(Debug, Default)]
struct Queue {
    held: Vec<Held>,
    index: HashMap<String, usize>,
}

impl Queue {
    /// Applies one entry; returns the hold it decided, if it decided one.
    fn apply(&mut self, entry: &Entry) -> Option<&Held> {
        match entry {
            Entry::Hold { id, at, expires_at, request } => {
                if !self.index.contains_key(id) {
                    self.index.insert(id.clone(), self.held.len());
                    self.held.push(Held {
                        id: id.clone(),
                        at: *at,
                        expires_at: *expires_at,
                        request: request.clone(),
                        decision: None,
                    });
                }
                None
            }
            Entry::Decide { id, decision, reason, .. } => {
                let &i = self.index.get(id)?;
                let held = &mut self.held[i];
                if held.decision.is_some() {
                    return None;
                }
                held.decision = Some((*decision, reason.clone()));
                Some(held)
            }
        }
    }

    fn get(&self, id: &str) -> Option<&Held> {
        self.index.get(id).map(|&i| &self.held[i])
    }
}

/// What a parked request learns.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outcome {
    /// Forward it.
    Approved {
        /// The hold's id.
        id: String,
    },
    /// Refuse it.
    Refused {
        /// The hold's id, if it got one.
        id: Option<String>,
        /// Why (rejection reason, expiry, queue failure).
        why: String,
    },
}

/// The store's answer to a submission.
#[derive(Debug, Clone, PartialEq)]
pub enum Submitted {
    /// Journaled: wait for the decision.
    Held {
        /// Its id.
        id: String,
    },
    /// Every fingerprint was approved earlier (the safelist had not caught up yet).
    AlreadyApproved,
}

/// Everything the store actor can be asked. Closed on purpose.
#[derive(Debug)]
pub enum ApprovalMsg {
    /// Journal a new hold; answers its id, or that every
    /// fingerprint in it was already approved (no new hold).
    Submit(HoldRequest, Duration, RpcReplyPort<Result<Submitted, String>>),
    /// Answer when hold `id` is decided (at once if it already is).
    Await(String, RpcReplyPort<Option<(Decision, Option<String>)>>),
    /// Read decisions the host appended; expire overdue holds.
    Tick,
    /// The current queue.
    List(RpcReplyPort<Vec<Held>>),
}

/// Where a waiter gets a hold's decision (`None`: the hold is unknown).
type AnswerPort = RpcReplyPort<Option<(Decision, Option<String>)>>;

/// The store actor: owns the journal's reader side and the waiters.
#[derive(Debug)]
pub struct ApprovalStore;

/// Called with the `(host, fingerprint)` pairs of every approval the store sees (including ones made
/// while no request waited, e.g. after a restart), to put them on the safelist.
pub type OnApprove = std::sync::Arc<dyn Fn(&[(String, String)]) + Send + Sync>;

/// What the store starts from.
#[derive(Clone)]
pub struct StoreArgs {
    /// The queue directory.
    pub dir: PathBuf,
    /// Safelist hook.
    pub on_approve: Option<OnApprove>,
    /// Only holds of this bottle count (a directory may be shared); `None`: all.
    pub bottle: Option<String>,
}

impl std::fmt::Debug for StoreArgs {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("StoreArgs").field("dir", &self.dir).finish_non_exhaustive()
    }
}

impl From<PathBuf> for StoreArgs {
    fn from(dir: PathBuf) -> StoreArgs {
        StoreArgs { dir, on_approve: None, bottle: None }
    }
}

/// Its state.
pub struct StoreState {
    on_approve: Option<OnApprove>,
    bottle: Option<String>,
    journal: Journal,
    offset: u64,
    queue: Queue,
    waiters: HashMap<String, Vec<AnswerPort>>,
    ticker: Option<tokio::task::JoinHandle<()>>,
}

impl std::fmt::Debug for StoreState {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("StoreState").field("journal", &self.journal).finish_non_exhaustive()
    }
}

impl StoreState {
    /// Applies new journal entries; approvals reach the safelist hook as they appear.
    fn absorb(&mut self, entries: Vec<Entry>) {
        let mut approved: Vec<Held> = Vec::new();
        for entry in &entries {
            if let Some(held) = self.queue.apply(entry)
                && matches!(held.decision, Some((Decision::Approve, _)))
            {
                approved.push(held.clone());
            }
        }
        if let Some(hook) = &self.on_approve {
            let fps = approved_pairs(&approved, self.bottle.as_deref());
            if !fps.is_empty() {
                hook(&fps);
            }
        }
    }

    /// Reads what the journal gained since the last read.
    fn read_new(&mut self) {
        match self.journal.read_from(self.offset) {
            Ok((entries, offset)) => {
                if !entries.is_empty() {
                    self.absorb(entries);
                }
                self.offset = offset;
            }
            Err(err) => tracing::warn!(error = %err, "Cannot read the approval journal."),
        }
    }

    fn catch_up(&mut self) {
        self.read_new();
        let t = now();
        let overdue: Vec<String> = self
            .queue
            .held
            .iter()
            .filter(|h| h.decision.is_none() && h.expires_at <= t)
            .map(|h| h.id.clone())
            .collect();
        for id in &overdue {
            let _ = self.journal.decide(id, Decision::Expire, None, "bottle");
        }
        if !overdue.is_empty() {
            self.read_new();
        }
        let queue = &self.queue;
        self.waiters.retain(|id, ports| {
            let Some(decision) = queue.get(id).and_then(|h| h.decision.clone()) else {
                ports.retain(|p| !p.is_closed());
                return !ports.is_empty();
            };
            for port in ports.drain(..) {
                let _ = port.send(Some(decision.clone()));
            }
            false
        });
    }
}

impl Actor for ApprovalStore {
    type Msg = ApprovalMsg;
    type State = StoreState;
    type Arguments = StoreArgs;

    async fn pre_start(
        &self,
        myself: ActorRef<ApprovalMsg>,
        args: StoreArgs,
    ) -> Result<StoreState, ActorProcessingErr> {
        let journal = Journal::open(&args.dir)?;
        let mut state = StoreState {
            on_approve: args.on_approve,
            bottle: args.bottle,
            journal,
            offset: 0,
            queue: Queue::default(),
            waiters: HashMap::new(),
            ticker: None,
        };
        // Replaying the journal puts earlier approvals back on the safelist.
        let (entries, offset) = state.journal.read_from(0)?;
        state.absorb(entries);
        state.offset = offset;
        let pending = state.queue.held.iter().filter(|h| h.decision.is_none()).count();
        tracing::info!(journal = %state.journal.path().display(), pending, "Approval queue open.");
        state.ticker = Some(myself.send_interval(POLL, || ApprovalMsg::Tick));
        Ok(state)
    }

    async fn handle(
        &self,
        _: ActorRef<ApprovalMsg>,
        msg: ApprovalMsg,
        state: &mut StoreState,
    ) -> Result<(), ActorProcessingErr> {
        match msg {
            ApprovalMsg::Submit(request, timeout, reply) => {
                state.catch_up();
                let approved = approved_pairs(&state.queue.held, state.bottle.as_deref());
                let covered = !request.detections.is_empty()
                    && request.detections.iter().all(|d| {
                        approved.iter().any(|(h, fp)| *h == request.host && *fp == d.fingerprint)
                    });
                let result = if covered {
                    Ok(Submitted::AlreadyApproved)
                } else {
                    state
                        .journal
                        .hold(request, timeout)
                        .map(|h| Submitted::Held { id: h.id })
                        .map_err(|e| e.to_string())
                };
                state.catch_up();
                let _ = reply.send(result);
            }
            ApprovalMsg::Await(id, reply) => {
                state.catch_up();
                match state.queue.get(&id).map(|h| h.decision.clone()) {
                    None => {
                        let _ = reply.send(None);
                    }
                    Some(Some(d)) => {
                        let _ = reply.send(Some(d));
                    }
                    Some(None) => state.waiters.entry(id).or_default().push(reply),
                }
            }
            ApprovalMsg::Tick => state.catch_up(),
            ApprovalMsg::List(reply) => {
                state.catch_up();
                let _ = reply.send(state.queue.held.clone());
            }
        }
        Ok(())
    }

    async fn post_stop(
        &self,
        _: ActorRef<ApprovalMsg>,
        state: &mut StoreState,
    ) -> Result<(), ActorProcessingErr> {
        if let Some(t) = state.ticker.take() {
            t.abort();
        }
        Ok(())
    }
}

/// How a parked request reaches the store: by registered name, so a restarted store is
/// found again.
#[derive(Debug, Clone)]
pub struct ApprovalClient {
    /// The store actor's registered name.
    pub store: String,
    /// How long a hold waits.
    pub timeout: Duration,
}

impl ApprovalClient {
    fn store(&self) -> Option<ActorRef<ApprovalMsg>> {
        ractor::registry::where_is(self.store.clone()).map(Into::into)
    }

    /// Journals `request` and waits for its decision, at most `self.timeout`. Never
    /// fails open: no store, a journal error or the deadline all answer `Refused`.
    pub async fn hold(&self, request: HoldRequest) -> Outcome {
        let deadline = tokio::time::Instant::now() + self.timeout;
        let refused = |id: Option<String>, why: &str| Outcome::Refused { id, why: why.to_string() };
        // Submit once: a hold is journaled before anyone waits on it.
        let id = loop {
            if tokio::time::Instant::now() >= deadline {
                return refused(None, "the approval queue did not answer in time");
            }
            let Some(store) = self.store() else {
                return refused(None, "no approval queue is running");
            };
            let left = deadline.saturating_duration_since(tokio::time::Instant::now());
            match store
                .call(|reply| ApprovalMsg::Submit(request.clone(), self.timeout, reply), Some(left))
                .await
            {
                Ok(ractor::rpc::CallResult::Success(Ok(Submitted::Held { id }))) => break id,
                Ok(ractor::rpc::CallResult::Success(Ok(Submitted::AlreadyApproved))) => {
                    return Outcome::Approved { id: "safelisted".into() };
                }
                Ok(ractor::rpc::CallResult::Success(Err(why))) => {
                    return Outcome::Refused {
                        id: None,
                        why: format!("approval queue failed: {why}"),
                    };
                }
                _ => tokio::time::sleep(Duration::from_millis(50)).await,
            }
        };
        tracing::warn!(%id, host = %request.host, "Request held for approval: `bottle approve {id}` or `bottle reject {id} --reason ...`.");
        loop {
            let left = deadline.saturating_duration_since(tokio::time::Instant::now());
            if left.is_zero() {
                return refused(Some(id), "no decision before the hold timed out");
            }
            let Some(store) = self.store() else {
                // Restarting: look again shortly.
                tokio::time::sleep(Duration::from_millis(50).min(left)).await;
                continue;
            };
            match store.call(|reply| ApprovalMsg::Await(id.clone(), reply), Some(left)).await {
                Ok(ractor::rpc::CallResult::Success(Some((Decision::Approve, _)))) => {
                    return Outcome::Approved { id };
                }
                Ok(ractor::rpc::CallResult::Success(Some((Decision::Reject, reason)))) => {
                    let why = format!("rejected by the operator: {}", reason.unwrap_or_default());
                    return Outcome::Refused { id: Some(id), why };
                }
                Ok(ractor::rpc::CallResult::Success(Some((Decision::Expire, _)))) => {
                    return refused(Some(id), "no decision before the hold timed out");
                }
                Ok(ractor::rpc::CallResult::Success(None)) => {
                    return refused(Some(id), "the approval queue lost the hold");
                }
                Ok(ractor::rpc::CallResult::Timeout) => {
                    return refused(Some(id), "no decision before the hold timed out");
                }
                // The store died while we waited: find its successor and wait again.
                _ => tokio::time::sleep(Duration::from_millis(50).min(left)).await,
            }
        }
    }
}

/// Fingerprints of every approved hold in the journal (to restore the safelist).
pub fn approved_fingerprints(held: &[Held]) -> Vec<String> {
    approved_pairs(held, None).into_iter().map(|(_, fp)| fp).collect()
}

/// `(host, fingerprint)` of every approved hold (of `bottle`, when given): approvals are
/// per destination.
pub fn approved_pairs(held: &[Held], bottle: Option<&str>) -> Vec<(String, String)> {
    held.iter()
        .filter(|h| matches!(h.decision, Some((Decision::Approve, _))))
        .filter(|h| bottle.is_none_or(|b| h.request.bottle == b))
        .flat_map(|h| {
            h.request.detections.iter().map(|d| (h.request.host.clone(), d.fingerprint.clone()))
        })
        .collect()
}
