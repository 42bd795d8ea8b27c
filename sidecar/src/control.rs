//! The control socket: `bottle-init ctl <status | restart NAME | reload | stop>`.
//!
//! Hazard: the socket is a way into PID 1. It is a unix socket created 0600 in a 0700
//! directory, every peer's uid is checked against ours (SO_PEERCRED), requests are one
//! JSON line of at most [`MAX_REQUEST`] bytes read under a timeout, and anything
//! malformed gets an error reply, never a crash.

use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use serde::{Deserialize, Serialize};
use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};
use tokio::net::{UnixListener, UnixStream};

use crate::init::Init;

/// Longest request line accepted.
pub(crate) const MAX_REQUEST: usize = 64 * 1024;
const READ_TIMEOUT: Duration = Duration::from_secs(5);

/// One request.
#[derive(Debug, Serialize, Deserialize, PartialEq)]
#[serde(tag = "cmd", rename_all = "lowercase", deny_unknown_fields)]
pub(crate) enum Request {
    /// Every daemon's state.
    Status,
    /// Restart one daemon.
    Restart {
        /// Its name.
        name: String,
    },
    /// Re-read the configuration.
    Reload,
    /// Graceful shutdown.
    Stop,
    /// Follow the tree's events: NDJSON until the tree ends (sidecar/src/events.rs).
    Events,
}

/// One reply.
#[derive(Debug, Serialize, Deserialize, PartialEq)]
pub(crate) struct Reply {
    pub(crate) ok: bool,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub(crate) message: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub(crate) error: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub(crate) status: Option<serde_json::Value>,
}

impl Reply {
    fn result(result: Result<String, String>) -> Reply {
        match result {
            Ok(message) => Reply { ok: true, message: Some(message), error: None, status: None },
            Err(error) => Reply::error(error),
        }
    }

    fn error(error: impl Into<String>) -> Reply {
        Reply { ok: false, message: None, error: Some(error.into()), status: None }
    }
}

/// Binds the control socket (0600, parent directory 0700).
pub(crate) fn bind(path: &Path) -> std::io::Result<UnixListener> {
    if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty() && !d.exists()) {
        std::fs::create_dir_all(dir)?;
        std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o700))?;
    }
    // A stale socket from an earlier run would make bind fail.
    if std::os::unix::net::UnixStream::connect(path).is_err() {
        let _ = std::fs::remove_file(path);
    }
    let listener = UnixListener::bind(path)?;
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o600))?;
    Ok(listener)
}

/// Serves requests until the listener is dropped.
pub(crate) async fn serve(listener: UnixListener, init: Arc<Init>) {
    let me = nix::unistd::geteuid().as_raw();
    loop {
        let Ok((stream, _)) = listener.accept().await else { continue };
        let init = init.clone();
        tokio::spawn(async move {
            let allowed =
                stream.peer_cred().map(|c| c.uid() == me || c.uid() == 0).unwrap_or(false);
            let _ = handle(stream, init, allowed).await;
        });
    }
}

async fn handle(stream: UnixStream, init: Arc<Init>, allowed: bool) -> std::io::Result<()> {
    let (read, mut write) = stream.into_split();
    let reply = if !allowed {
        Reply::error("permission denied: the control socket is for its owner and root only")
    } else {
        let mut line = Vec::new();
        let mut reader = BufReader::new(read).take(MAX_REQUEST as u64 + 1);
        match tokio::time::timeout(READ_TIMEOUT, reader.read_until(b'\n', &mut line)).await {
            Err(_) => Reply::error("timed out waiting for a request line"),
            Ok(Err(e)) => Reply::error(format!("cannot read the request: {e}")),
            Ok(Ok(_)) if line.len() > MAX_REQUEST => {
                Reply::error(format!("request longer than {MAX_REQUEST} bytes"))
            }
            Ok(Ok(_)) => match serde_json::from_slice::<Request>(&line) {
                Err(e) => Reply::error(format!("malformed request: {e}")),
                Ok(Request::Events) => match init.subscribe() {
                    Some(events) => {
                        return crate::events::stream(reader.into_inner(), write, events).await;
                    }
                    None => Reply::error("the daemon tree is not up"),
                },
                Ok(request) => dispatch(request, &init).await,
            },
        }
    };
    let mut out = serde_json::to_vec(&reply).unwrap_or_default();
    out.push(b'\n');
    write.write_all(&out).await?;
    write.shutdown().await
}

async fn dispatch(request: Request, init: &Init) -> Reply {
    match request {
        Request::Status => match init.status().await {
            Some(status) => Reply {
                ok: true,
                message: None,
                error: None,
                status: serde_json::to_value(status).ok(),
            },
            None => Reply::error("the daemon tree is not up"),
        },
        Request::Restart { name } => {
            Reply::result(init.restart(&name).await.map(|()| format!("restarted {name}")))
        }
        Request::Reload => Reply::result(init.reload().await),
        Request::Stop => {
            init.stop("ctl stop");
            Reply::result(Ok("stopping".into()))
        }
        Request::Events => Reply::error("events is a stream, served before dispatch"),
    }
}

/// Sends one request and returns the reply (client side of `bottle-init ctl`).
pub(crate) async fn call(path: &PathBuf, request: &Request) -> anyhow::Result<Reply> {
    use anyhow::Context;
    let mut stream = UnixStream::connect(path)
        .await
        .with_context(|| format!("cannot connect to {}", path.display()))?;
    let mut line = serde_json::to_vec(request)?;
    line.push(b'\n');
    stream.write_all(&line).await?;
    let mut reader = BufReader::new(stream);
    let mut answer = String::new();
    tokio::time::timeout(Duration::from_secs(120), reader.read_line(&mut answer))
        .await
        .context("no reply from bottle-init")??;
    serde_json::from_str(&answer).with_context(|| format!("malformed reply {answer:?}"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn requests_round_trip_and_unknown_ones_are_refused() {
        for request in [
            Request::Status,
            Request::Reload,
            Request::Stop,
            Request::Events,
            Request::Restart { name: "egress".into() },
        ] {
            let text = serde_json::to_string(&request).unwrap();
            assert_eq!(serde_json::from_str::<Request>(&text).unwrap(), request);
        }
        serde_json::from_str::<Request>(r#"{"cmd":"explode"}"#).unwrap_err();
        serde_json::from_str::<Request>(r#"{"cmd":"restart"}"#).unwrap_err();
    }
}
