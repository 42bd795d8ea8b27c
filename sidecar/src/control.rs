//! The control socket: `bottle-init ctl <status | restart NAME | reload | stop>`.
//!
//! Hazard: the socket is a way into PID 1. It is a unix socket created 0600 in a 0700
//! directory, every peer's uid is checked against ours (SO_PEERCRED), requests are one
//! JSON line of at most [`MAX_REQUEST_BYTES`] bytes read under a timeout, and anything
//! else (an unknown request, a mistyped field, an oversize line) gets a typed error
//! reply before it can reach the daemon tree, never a crash.

use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use bottle_protocol::control::{
    ErrorKind, ErrorReply, MAX_REQUEST_BYTES, Reply, Request, TreeStatus,
};
use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};
use tokio::net::{UnixListener, UnixStream};

use crate::init::Init;

const READ_TIMEOUT: Duration = Duration::from_secs(5);

fn error(kind: ErrorKind, message: impl Into<String>) -> Reply {
    Reply::Error(ErrorReply::new(kind, message))
}

fn outcome(result: Result<String, String>) -> Reply {
    match result {
        Ok(message) => Reply::Done { message },
        Err(why) => error(ErrorKind::Failed, why),
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
        error(
            ErrorKind::PermissionDenied,
            "permission denied: the control socket is for its owner and root only",
        )
    } else {
        let mut line = Vec::new();
        let mut reader = BufReader::new(read).take(MAX_REQUEST_BYTES as u64 + 1);
        match tokio::time::timeout(READ_TIMEOUT, reader.read_until(b'\n', &mut line)).await {
            Err(_) => error(ErrorKind::Timeout, "timed out waiting for a request line"),
            Ok(Err(e)) => error(ErrorKind::Malformed, format!("cannot read the request: {e}")),
            Ok(Ok(_)) => match Request::from_line(&line) {
                Err(refused) => Reply::Error(refused),
                Ok(Request::Events) => match init.subscribe() {
                    Some(events) => {
                        return crate::events::stream(reader.into_inner(), write, events).await;
                    }
                    None => error(ErrorKind::NotUp, "the daemon tree is not up"),
                },
                Ok(request) => dispatch(request, &init).await,
            },
        }
    };
    write.write_all(&reply.to_line()).await?;
    write.shutdown().await
}

async fn dispatch(request: Request, init: &Init) -> Reply {
    match request {
        Request::Status => match init.status().await {
            Some(status) => Reply::Status(TreeStatus::from(&status)),
            None => error(ErrorKind::NotUp, "the daemon tree is not up"),
        },
        Request::Restart { name } => {
            outcome(init.restart(&name).await.map(|()| format!("restarted {name}")))
        }
        Request::Reload => outcome(init.reload().await),
        Request::Stop => {
            init.stop("ctl stop");
            Reply::Done { message: "stopping".into() }
        }
        Request::Events => error(ErrorKind::Failed, "events is a stream, served before dispatch"),
    }
}

/// Sends one request and returns the reply (client side of `bottle-init ctl`).
pub(crate) async fn call(path: &PathBuf, request: &Request) -> anyhow::Result<Reply> {
    use anyhow::Context;
    let mut stream = UnixStream::connect(path)
        .await
        .with_context(|| format!("cannot connect to {}", path.display()))?;
    stream.write_all(&request.to_line()).await?;
    let mut reader = BufReader::new(stream);
    let mut answer = Vec::new();
    tokio::time::timeout(Duration::from_secs(120), reader.read_until(b'\n', &mut answer))
        .await
        .context("no reply from bottle-init")??;
    Reply::from_line(&answer).context("malformed reply from bottle-init")
}
