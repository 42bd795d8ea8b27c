//! The demo's fake API: a small HTTPS server on the host's loopback that the bottle's
//! route points at, so `bottle demo` shows token injection without any outside host.
//!
//! Hazard: a demo that echoes what it received would print the real token it was sent.
//! This server only ever answers whether the `Authorization` it saw was the real token;
//! it never writes the header, the token or a request body back, and it counts requests
//! per path so the demo can show which ones reached it.

use std::collections::BTreeMap;
use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};

use bottle_ca::{CaConfig, CertificateAuthority};
use bottle_protocol::secrets::Secret;
use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::service::service_fn;
use hyper_util::rt::{TokioExecutor, TokioIo};
use tokio::net::TcpListener;
use tokio::task::JoinHandle;

/// The demo API's host name (never resolved: the route pins the address).
pub const HOST: &str = "api.demo.test";

/// Why the fake API could not start.
#[derive(Debug, thiserror::Error)]
pub enum FakeApiError {
    /// Its certificate could not be made.
    #[error("cannot mint the demo API's certificate")]
    Ca(#[source] bottle_ca::CaError),
    /// Its TLS configuration was refused.
    #[error("cannot configure TLS for the demo API: {0}")]
    Tls(String),
    /// It could not listen.
    #[error("cannot listen for the demo API")]
    Listen(#[source] std::io::Error),
}

/// The running fake API.
pub struct FakeApi {
    /// Where it listens (127.0.0.1, a free port).
    pub addr: SocketAddr,
    /// The CA (PEM) its certificate chains to; the sidecar trusts it as an upstream CA.
    pub ca_pem: String,
    hits: Arc<Mutex<BTreeMap<String, u32>>>,
    serve: JoinHandle<()>,
}

impl std::fmt::Debug for FakeApi {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("FakeApi").field("addr", &self.addr).finish_non_exhaustive()
    }
}

impl Drop for FakeApi {
    fn drop(&mut self) {
        self.serve.abort();
    }
}

impl FakeApi {
    /// Starts the server. `token` is the value a request must carry to be authorized.
    pub async fn start(token: Secret) -> Result<FakeApi, FakeApiError> {
        let ca = CertificateAuthority::mint(CaConfig {
            permitted: vec![HOST.to_string()],
            common_name: "bottle demo API CA".into(),
            ..CaConfig::default()
        })
        .map_err(FakeApiError::Ca)?;
        let ca = Arc::new(ca);
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let config = rustls::ServerConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .map_err(|e| FakeApiError::Tls(e.to_string()))?
            .with_no_client_auth()
            .with_cert_resolver(ca.resolver());
        let acceptor = tokio_rustls::TlsAcceptor::from(Arc::new(config));
        let listener = TcpListener::bind("127.0.0.1:0").await.map_err(FakeApiError::Listen)?;
        let addr = listener.local_addr().map_err(FakeApiError::Listen)?;
        let hits = Arc::new(Mutex::new(BTreeMap::new()));
        let expected = Arc::new(format!("Bearer {}", token.expose()));
        let counted = hits.clone();
        let serve = tokio::spawn(async move {
            loop {
                let Ok((stream, _)) = listener.accept().await else { continue };
                let acceptor = acceptor.clone();
                let expected = expected.clone();
                let hits = counted.clone();
                tokio::spawn(async move {
                    let Ok(tls) = acceptor.accept(stream).await else { return };
                    let service =
                        service_fn(move |req| answer(req, expected.clone(), hits.clone()));
                    let _ = hyper_util::server::conn::auto::Builder::new(TokioExecutor::new())
                        .serve_connection(TokioIo::new(tls), service)
                        .await;
                });
            }
        });
        Ok(FakeApi { addr, ca_pem: ca.cert_pem().to_string(), hits, serve })
    }

    /// Requests that reached it, by path.
    pub fn hits(&self) -> BTreeMap<String, u32> {
        self.hits.lock().unwrap_or_else(|p| p.into_inner()).clone()
    }
}

async fn answer(
    req: hyper::Request<hyper::body::Incoming>,
    expected: Arc<String>,
    hits: Arc<Mutex<BTreeMap<String, u32>>>,
) -> Result<hyper::Response<Full<Bytes>>, Infallible> {
    let path = req.uri().path().to_string();
    *hits.lock().unwrap_or_else(|p| p.into_inner()).entry(path.clone()).or_default() += 1;
    let authorized = req
        .headers()
        .get(hyper::header::AUTHORIZATION)
        .is_some_and(|v| v.as_bytes() == expected.as_bytes());
    // Drain the body without keeping it.
    let _ = req.into_body().collect().await;
    let (status, text) = match (path.as_str(), authorized) {
        ("/whoami", true) => (200, "authorized: the sidecar injected the real token\n"),
        ("/whoami", false) => (401, "unauthorized: no real token arrived\n"),
        (_, _) => (200, "stored\n"),
    };
    let response = hyper::Response::builder()
        .status(status)
        .header("content-type", "text/plain")
        .body(Full::new(Bytes::from_static(text.as_bytes())));
    Ok(response.unwrap_or_else(|_| hyper::Response::new(Full::new(Bytes::new()))))
}
