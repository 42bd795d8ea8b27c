//! The HTTP side: accept, route, read the body within the cap, dispatch.
//!
//! Hazard: the agent controls every header and byte. A declared `Content-Length` over
//! the cap is answered 413 before a byte is read, a chunked body is counted as it
//! arrives and cut off at the cap (413), a malformed length is hyper's 400, a body is
//! decompressed (gzip, as git sends large fetch requests) only up to the same cap, and
//! `Git-Protocol` is passed to git only when it is exactly `version=<0|1|2>`.

use std::io::Read;
use std::sync::Arc;

use bytes::Bytes;
use http_body_util::{BodyExt, Limited};
use hyper::{Request, Response, StatusCode};
use hyper_util::rt::{TokioExecutor, TokioIo};
use tokio::net::TcpListener;

use crate::gate::{Body, GitGate, text};
use crate::route::{NotServed, Service, route};

/// Accepts connections until the task is aborted.
pub async fn serve(gate: Arc<GitGate>, listener: TcpListener) {
    loop {
        let Ok((stream, _)) = listener.accept().await else { continue };
        let gate = gate.clone();
        tokio::spawn(async move {
            let service = hyper::service::service_fn(move |req| {
                let gate = gate.clone();
                async move { Ok::<_, std::convert::Infallible>(handle(gate, req).await) }
            });
            let _ = hyper_util::server::conn::auto::Builder::new(TokioExecutor::new())
                .serve_connection(TokioIo::new(stream), service)
                .await;
        });
    }
}

/// Answers one request.
pub async fn handle(gate: Arc<GitGate>, req: Request<hyper::body::Incoming>) -> Response<Body> {
    let path = req.uri().path().to_string();
    let query = req.uri().query().map(String::from);
    let routed =
        route(req.method().as_str(), &path, query.as_deref(), |n| gate.mirror(n).is_some());
    let route = match routed {
        Ok(r) => r,
        Err(NotServed::NotFound) => {
            return text(StatusCode::NOT_FOUND, "bottle: git-gate: not found");
        }
        Err(NotServed::Method) => {
            return text(StatusCode::METHOD_NOT_ALLOWED, "bottle: git-gate: method not allowed");
        }
    };
    let Some(mirror) = gate.mirror(route.repo).cloned() else {
        return text(StatusCode::NOT_FOUND, "bottle: git-gate: not found");
    };
    if !mirror.is_sound() {
        tracing::warn!(repo = %mirror.name, "The mirror is not a plain directory; not serving it.");
        return text(StatusCode::NOT_FOUND, "bottle: git-gate: not found");
    }
    let protocol = git_protocol(&req);
    match route.service {
        Service::AdvertiseUpload => gate.advertise_upload(&mirror, protocol.as_deref()).await,
        Service::AdvertiseReceive => gate.advertise_receive(&mirror).await,
        Service::UploadPack => match read_body(&gate, req).await {
            Ok(body) => gate.upload_pack(&mirror, body, protocol.as_deref()).await,
            Err(response) => response,
        },
        Service::ReceivePack => match read_body(&gate, req).await {
            Ok(body) => gate.receive_pack(mirror, body).await,
            Err(response) => response,
        },
    }
}

/// `Git-Protocol`, when it is exactly `version=0`, `version=1` or `version=2`.
fn git_protocol(req: &Request<hyper::body::Incoming>) -> Option<String> {
    let value = req.headers().get("git-protocol")?.to_str().ok()?;
    matches!(value, "version=0" | "version=1" | "version=2").then(|| value.to_string())
}

fn too_large(max: u64) -> Response<Body> {
    text(
        StatusCode::PAYLOAD_TOO_LARGE,
        &format!("bottle: git-gate: request body over the {max} byte limit"),
    )
}

/// The body within the cap, decompressed when it says `Content-Encoding: gzip`.
async fn read_body(
    gate: &GitGate,
    req: Request<hyper::body::Incoming>,
) -> Result<Bytes, Response<Body>> {
    let max = gate.max_body;
    let declared = req
        .headers()
        .get(hyper::header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok()?.parse::<u64>().ok());
    if declared.is_some_and(|n| n > max) {
        return Err(too_large(max));
    }
    let encoding = req
        .headers()
        .get(hyper::header::CONTENT_ENCODING)
        .map(|v| v.to_str().unwrap_or("?").to_ascii_lowercase());
    let limit = usize::try_from(max).unwrap_or(usize::MAX);
    let collected = match Limited::new(req.into_body(), limit).collect().await {
        Ok(c) => c.to_bytes(),
        Err(err) if err.downcast_ref::<http_body_util::LengthLimitError>().is_some() => {
            return Err(too_large(max));
        }
        Err(_) => {
            return Err(text(
                StatusCode::BAD_REQUEST,
                "bottle: git-gate: the request body could not be read",
            ));
        }
    };
    match encoding.as_deref() {
        None | Some("identity") => Ok(collected),
        Some("gzip" | "x-gzip") => {
            let mut out = Vec::new();
            let decoder = flate2::read::GzDecoder::new(collected.as_ref());
            match decoder.take(max + 1).read_to_end(&mut out) {
                Ok(_) if out.len() as u64 > max => Err(too_large(max)),
                Ok(_) => Ok(Bytes::from(out)),
                Err(_) => Err(text(
                    StatusCode::BAD_REQUEST,
                    "bottle: git-gate: the gzip request body is corrupt",
                )),
            }
        }
        Some(_) => Err(text(
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
            "bottle: git-gate: unsupported Content-Encoding",
        )),
    }
}
