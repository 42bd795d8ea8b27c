//! The control socket's requests and replies: one JSON line each way.
//!
//! Hazard: the socket is a way into PID 1. A request is at most [`MAX_REQUEST_BYTES`]
//! bytes; one of an unknown type, with an unknown or mistyped field, or too long is
//! answered by a typed [`ErrorReply`] and never reaches the daemon tree. Error messages
//! name fields, never the values sent.

use bottle_runtime::policy::RestartType;
use bottle_runtime::{ChildStatus, SupervisorStatus};
use serde::{Deserialize, Serialize};

use crate::ProtocolError;

/// Longest request line accepted, in bytes (the newline included).
pub const MAX_REQUEST_BYTES: usize = 64 * 1024;

/// One request to bottle-init. On the wire a request without fields is its name as a
/// JSON string (`"status"`), one with fields an object keyed by its name
/// (`{"restart":{"name":"egress"}}`): serde's external tagging, which keeps the path of
/// a bad field for the error reply.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase", deny_unknown_fields)]
pub enum Request {
    /// Every daemon's state.
    Status,
    /// Restart one daemon now.
    Restart {
        /// Its name.
        name: String,
    },
    /// Re-read the configuration file (like SIGHUP).
    Reload,
    /// Graceful shutdown (like SIGTERM).
    Stop,
    /// Follow the tree: the reply is a stream of tree events, one JSON object a line,
    /// until the tree ends or the client leaves (no [`Reply`] is sent).
    Events,
}

impl Request {
    /// The request as one line (JSON and a newline).
    pub fn to_line(&self) -> Vec<u8> {
        line(self)
    }

    /// Reads one request line. Anything but a valid request of a known type is an
    /// [`ErrorReply`] saying why, without echoing what was sent.
    pub fn from_line(bytes: &[u8]) -> Result<Request, ErrorReply> {
        if bytes.len() > MAX_REQUEST_BYTES {
            return Err(ErrorReply::new(
                ErrorKind::TooLarge,
                format!("request longer than {MAX_REQUEST_BYTES} bytes"),
            ));
        }
        crate::schema::from_json(bytes).map_err(|e| {
            let kind = match &e {
                ProtocolError::Syntax { .. } | ProtocolError::Render { .. } => ErrorKind::Malformed,
                ProtocolError::UnknownVariant { .. } => ErrorKind::UnknownRequest,
                ProtocolError::UnknownKey { .. } | ProtocolError::Invalid { .. } => {
                    ErrorKind::InvalidField
                }
            };
            ErrorReply::new(kind, e.to_string())
        })
    }
}

/// One reply from bottle-init.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case", deny_unknown_fields)]
pub enum Reply {
    /// The tree's state (for [`Request::Status`]).
    Status(TreeStatus),
    /// The request was carried out; what happened, readable.
    Done {
        /// What happened (`restarted b`, `reloaded; ...`, `stopping`).
        message: String,
    },
    /// The request was refused or failed.
    Error(ErrorReply),
}

impl Reply {
    /// The reply as one line (JSON and a newline).
    pub fn to_line(&self) -> Vec<u8> {
        line(self)
    }

    /// Reads one reply line.
    pub fn from_line(bytes: &[u8]) -> Result<Reply, ProtocolError> {
        crate::schema::from_json(bytes)
    }
}

/// Why a request got no result.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ErrorReply {
    /// The class of failure, for programs.
    pub kind: ErrorKind,
    /// What went wrong, for people.
    pub message: String,
}

impl ErrorReply {
    /// An error of `kind`.
    pub fn new(kind: ErrorKind, message: impl Into<String>) -> ErrorReply {
        ErrorReply { kind, message: message.into() }
    }
}

/// The classes of control-socket failure.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ErrorKind {
    /// The peer is neither bottle-init's user nor root.
    PermissionDenied,
    /// No complete request line arrived in time.
    Timeout,
    /// The request line is longer than [`MAX_REQUEST_BYTES`].
    TooLarge,
    /// The line is not JSON.
    Malformed,
    /// The request names no request type this bottle-init knows.
    UnknownRequest,
    /// A field is missing, unknown or of the wrong type.
    InvalidField,
    /// The daemon tree is not running (starting or stopping).
    NotUp,
    /// A valid request that could not be carried out (no such daemon, a bad reload).
    Failed,
}

/// A live snapshot of a supervisor (the wire form of the runtime's status).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TreeStatus {
    /// Its path, `init` for the root.
    pub path: String,
    /// Whether shutdown began.
    pub shutting_down: bool,
    /// Children in start order.
    pub children: Vec<DaemonStatus>,
}

/// A live snapshot of one child.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DaemonStatus {
    /// Its name.
    pub name: String,
    /// `process`, `supervisor` or `actor`.
    pub kind: String,
    /// Whether it is up.
    pub running: bool,
    /// Whether it passed its readiness check.
    pub ready: bool,
    /// Process id, for running processes.
    pub pid: Option<i32>,
    /// Seconds since it became ready, for running processes.
    pub uptime_secs: Option<f64>,
    /// Restarts performed.
    pub restarts: u32,
    /// Its last termination, readable.
    pub last_exit: Option<String>,
    /// Its restart type.
    pub restart: RestartType,
    /// The subtree, for nested supervisors.
    pub children: Option<Vec<DaemonStatus>>,
}

impl From<&SupervisorStatus> for TreeStatus {
    fn from(s: &SupervisorStatus) -> TreeStatus {
        TreeStatus {
            path: s.path.clone(),
            shutting_down: s.shutting_down,
            children: s.children.iter().map(DaemonStatus::from).collect(),
        }
    }
}

impl From<&ChildStatus> for DaemonStatus {
    fn from(c: &ChildStatus) -> DaemonStatus {
        DaemonStatus {
            name: c.name.clone(),
            kind: c.kind.to_string(),
            running: c.running,
            ready: c.ready,
            pid: c.pid,
            uptime_secs: c.uptime_secs,
            restarts: c.restarts,
            last_exit: c.last_exit.clone(),
            restart: c.restart,
            children: c.children.as_ref().map(|v| v.iter().map(DaemonStatus::from).collect()),
        }
    }
}

fn line<T: Serialize>(value: &T) -> Vec<u8> {
    // These types hold strings, numbers and enums only: serialising cannot fail.
    let mut out = serde_json::to_vec(value).unwrap_or_default();
    out.push(b'\n');
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn refused(line: &[u8]) -> ErrorReply {
        Request::from_line(line).unwrap_err()
    }

    #[test]
    fn requests_and_replies_round_trip() {
        for request in [
            Request::Status,
            Request::Reload,
            Request::Stop,
            Request::Restart { name: "egress".into() },
        ] {
            assert_eq!(Request::from_line(&request.to_line()).unwrap(), request);
        }
        let status = TreeStatus { path: "init".into(), shutting_down: false, children: vec![] };
        for reply in [
            Reply::Status(status),
            Reply::Done { message: "stopping".into() },
            Reply::Error(ErrorReply::new(ErrorKind::Failed, "no child")),
        ] {
            assert_eq!(Reply::from_line(&reply.to_line()).unwrap(), reply);
        }
    }

    #[test]
    fn bad_requests_are_typed_errors_that_do_not_echo_the_input() {
        let e = refused(br#""explode""#);
        assert_eq!(e.kind, ErrorKind::UnknownRequest, "{e:?}");
        assert!(e.message.contains("`status`, `restart`, `reload`, `stop`"), "{e:?}");
        assert!(!e.message.contains("explode"), "{e:?}");
        let e = refused(br#"{"restrat":{"name":"a"}}"#);
        assert!(e.message.ends_with("did you mean `restart`?"), "{e:?}");
        let e = refused(br#"{"restart":{"name":5}}"#);
        assert_eq!(e.kind, ErrorKind::InvalidField, "{e:?}");
        assert_eq!(e.message, "`restart.name`: wrong type, expected a string");
        let e = refused(br#"{"restart":{"name":"a","nmae":"sk-secret"}}"#);
        assert_eq!(e.kind, ErrorKind::InvalidField, "{e:?}");
        assert_eq!(e.message, "unknown key `restart.nmae`; did you mean `name`?");
        let e = refused(br#"{"restart":{}}"#);
        assert_eq!(e.kind, ErrorKind::InvalidField, "{e:?}");
        assert!(e.message.contains("missing key `name`"), "{e:?}");
        let e = refused(b"garbage \"sk-secret\"\n");
        assert_eq!(e.kind, ErrorKind::Malformed, "{e:?}");
        assert!(!e.message.contains("sk-secret"), "{e:?}");
        let e = refused(&vec![b' '; MAX_REQUEST_BYTES + 1]);
        assert_eq!(e.kind, ErrorKind::TooLarge, "{e:?}");
    }
}
