//! The audit trail: one JSON line per decision, to a file and a bounded in-memory ring,
//! and rate-limited lines on stderr.
//!
//! Hazard: the agent triggers these events, so it could flood our logs (and disk) or
//! smuggle a secret into them. Records hold only the host, method, normalized path,
//! route, verdict and reason (never headers or bodies); stderr lines are capped per
//! second with a count of what was suppressed; the ring is bounded.

use std::collections::VecDeque;
use std::io::Write;
use std::path::PathBuf;
use std::sync::Mutex;
use std::time::{Instant, SystemTime, UNIX_EPOCH};

use serde::Serialize;

/// Ring capacity.
pub const RING: usize = 1024;
/// Stderr lines allowed per second.
pub const STDERR_PER_SECOND: u32 = 20;

/// One decision.
#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct AuditRecord {
    /// Unix time, seconds with milliseconds.
    pub time: f64,
    /// Method (`CONNECT` for tunnels).
    pub method: String,
    /// Target host.
    pub host: String,
    /// Normalized path and query (empty for tunnels).
    pub path: String,
    /// Matched route host, if any.
    pub route: Option<String>,
    /// `allow`, `block`, `error`.
    pub verdict: &'static str,
    /// Why (blocks and errors).
    pub reason: Option<String>,
    /// A credential canary fired.
    pub alarm: bool,
    /// Status sent to the agent.
    pub status: u16,
    /// Request body bytes forwarded.
    pub bytes_up: u64,
    /// Response body bytes returned.
    pub bytes_down: u64,
    /// Milliseconds from request to response head.
    pub duration_ms: f64,
    /// pipelock's note: what it found (rules, locations, fingerprints) and did.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub dlp: Option<String>,
}

impl AuditRecord {
    /// A record stamped now.
    pub fn now(method: &str, host: &str, path: &str) -> AuditRecord {
        AuditRecord {
            time: SystemTime::now()
                .duration_since(UNIX_EPOCH)
                .map(|d| d.as_secs_f64())
                .unwrap_or(0.0),
            method: method.to_string(),
            host: host.to_string(),
            path: path.to_string(),
            route: None,
            verdict: "block",
            reason: None,
            alarm: false,
            status: 403,
            bytes_up: 0,
            bytes_down: 0,
            duration_ms: 0.0,
            dlp: None,
        }
    }
}

struct Limiter {
    window: Instant,
    used: u32,
    suppressed: u64,
}

/// The audit sink.
pub struct Audit {
    file: Option<Mutex<std::fs::File>>,
    path: Option<PathBuf>,
    ring: Mutex<VecDeque<AuditRecord>>,
    alarms: Mutex<VecDeque<AuditRecord>>,
    limiter: Mutex<Limiter>,
}

impl std::fmt::Debug for Audit {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Audit").field("path", &self.path).finish_non_exhaustive()
    }
}

impl Audit {
    /// Appends to `path` (created 0600) if given.
    pub fn open(path: Option<PathBuf>) -> std::io::Result<Audit> {
        let file = match &path {
            Some(p) => {
                use std::os::unix::fs::OpenOptionsExt;
                Some(Mutex::new(
                    std::fs::OpenOptions::new().create(true).append(true).mode(0o600).open(p)?,
                ))
            }
            None => None,
        };
        Ok(Audit {
            file,
            path,
            ring: Mutex::new(VecDeque::with_capacity(RING)),
            alarms: Mutex::new(VecDeque::new()),
            limiter: Mutex::new(Limiter { window: Instant::now(), used: 0, suppressed: 0 }),
        })
    }

    /// Records one decision.
    pub fn record(&self, record: AuditRecord) {
        if let Some(file) = &self.file
            && let Ok(mut line) = serde_json::to_vec(&record)
        {
            line.push(b'\n');
            let mut f = file.lock().unwrap_or_else(|p| p.into_inner());
            // One write per line keeps lines whole for concurrent readers.
            let _ = f.write_all(&line);
        }
        if record.verdict != "allow" || record.alarm {
            self.stderr(&record);
        }
        let mut ring = self.ring.lock().unwrap_or_else(|p| p.into_inner());
        if ring.len() == RING {
            ring.pop_front();
        }
        ring.push_back(record);
    }

    fn stderr(&self, record: &AuditRecord) {
        if record.alarm {
            // Alarms are never rate-limited: a flood of blocks must not hide one.
            tracing::error!(host = %record.host, method = %record.method, reason = %record.reason.as_deref().unwrap_or(""), "ALARM: credential canary.");
            let mut alarms = self.alarms.lock().unwrap_or_else(|p| p.into_inner());
            if alarms.len() == RING {
                alarms.pop_front();
            }
            alarms.push_back(record.clone());
            return;
        }
        let mut limiter = self.limiter.lock().unwrap_or_else(|p| p.into_inner());
        if limiter.window.elapsed().as_secs() >= 1 {
            if limiter.suppressed > 0 {
                tracing::warn!(
                    suppressed = limiter.suppressed,
                    "Egress log lines suppressed by the rate limit."
                );
            }
            *limiter = Limiter { window: Instant::now(), used: 0, suppressed: 0 };
        }
        if limiter.used >= STDERR_PER_SECOND {
            limiter.suppressed += 1;
            return;
        }
        limiter.used += 1;
        drop(limiter);
        let reason = record.reason.as_deref().unwrap_or("");
        if record.alarm {
            tracing::error!(host = %record.host, method = %record.method, %reason, "ALARM: credential canary.");
        } else {
            tracing::info!(host = %record.host, method = %record.method, path = %record.path, status = record.status, %reason, "Egress {}.", record.verdict);
        }
    }

    /// Every alarm (the last 1024), kept apart so ordinary traffic cannot push them out.
    pub fn alarms(&self) -> Vec<AuditRecord> {
        self.alarms.lock().unwrap_or_else(|p| p.into_inner()).iter().cloned().collect()
    }

    /// The most recent records, oldest first.
    pub fn recent(&self) -> Vec<AuditRecord> {
        self.ring.lock().unwrap_or_else(|p| p.into_inner()).iter().cloned().collect()
    }
}
