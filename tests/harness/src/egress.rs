//! Egress test fixtures: echo upstreams (HTTP and HTTPS with their own CA), an
//! in-process proxy, and clients (curl, and raw CONNECT + TLS in Rust).

use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::Arc;

use bottle_ca::{CaConfig, CertificateAuthority};
use bottle_egress::{
    Egress, EgressArgs, EgressInfo, EgressMsg, EgressSettings, Listen, Placeholders, Secret,
    Secrets,
};
use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::service::service_fn;
use hyper_util::rt::{TokioExecutor, TokioIo};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

/// What the echo upstream saw, returned as its JSON body.
pub fn echo_json(
    method: &str,
    path: &str,
    version: &str,
    headers: &[(String, String)],
    body: &[u8],
) -> String {
    let text: String = String::from_utf8_lossy(&body[..body.len().min(64 << 10)]).into_owned();
    serde_json::json!({ "method": method, "path": path, "version": version, "headers": headers, "body_len": body.len(), "body": text }).to_string()
}

/// The echo upstream's canned answer: `x-respond-body` (with `\n` for newlines) as the
/// body, `x-respond-type` as its content type, gzip-encoded if `x-respond-gzip` is set.
fn canned(headers: &hyper::HeaderMap) -> Option<hyper::Response<Full<Bytes>>> {
    let body = headers.get("x-respond-body")?.to_str().ok()?.replace("\\n", "\n");
    let kind = headers
        .get("x-respond-type")
        .and_then(|v| v.to_str().ok())
        .unwrap_or("text/plain")
        .to_string();
    let mut resp = hyper::Response::builder();
    if !kind.is_empty() {
        resp = resp.header("content-type", kind);
    }
    let bytes = if headers.contains_key("x-respond-gzip") {
        use std::io::Write;
        let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
        gz.write_all(body.as_bytes()).ok()?;
        resp = resp.header("content-encoding", "gzip");
        gz.finish().ok()?
    } else {
        body.into_bytes()
    };
    resp.body(Full::new(Bytes::from(bytes))).ok()
}

/// Standard base64 (for Sec-WebSocket-Accept).
pub fn base64(data: &[u8]) -> String {
    let mut out = bottle_pipelock::base64_encode(data, false);
    while !out.len().is_multiple_of(4) {
        out.push('=');
    }
    out
}

/// Answers a WebSocket upgrade with 101 and then echoes every byte back.
fn websocket_echo(mut req: hyper::Request<hyper::body::Incoming>) -> hyper::Response<Full<Bytes>> {
    let key = req
        .headers()
        .get("sec-websocket-key")
        .and_then(|v| v.to_str().ok())
        .unwrap_or("")
        .to_string();
    let accept = format!("{key}258EAFA5-E914-47DA-95CA-C5AB0DC85B11");
    let digest = ring::digest::digest(&ring::digest::SHA1_FOR_LEGACY_USE_ONLY, accept.as_bytes());
    let upgrade = hyper::upgrade::on(&mut req);
    tokio::spawn(async move {
        if let Ok(upgraded) = upgrade.await {
            let (mut r, mut w) = tokio::io::split(TokioIo::new(upgraded));
            let _ = tokio::io::copy(&mut r, &mut w).await;
        }
    });
    hyper::Response::builder()
        .status(101)
        .header("upgrade", "websocket")
        .header("connection", "Upgrade")
        .header("sec-websocket-accept", base64(digest.as_ref()))
        .body(Full::new(Bytes::new()))
        .unwrap()
}

async fn echo(
    req: hyper::Request<hyper::body::Incoming>,
) -> Result<hyper::Response<Full<Bytes>>, Infallible> {
    if req.headers().get("upgrade").is_some_and(|v| v.as_bytes().eq_ignore_ascii_case(b"websocket"))
    {
        return Ok(websocket_echo(req));
    }
    if let Some(resp) = canned(req.headers()) {
        return Ok(resp);
    }
    let method = req.method().to_string();
    let path = req.uri().path_and_query().map(|p| p.as_str().to_string()).unwrap_or_default();
    let version = format!("{:?}", req.version());
    let headers: Vec<(String, String)> = req
        .headers()
        .iter()
        .map(|(k, v)| (k.as_str().to_string(), String::from_utf8_lossy(v.as_bytes()).into_owned()))
        .collect();
    let body = req.into_body().collect().await.map(|b| b.to_bytes()).unwrap_or_default();
    Ok(hyper::Response::new(Full::new(Bytes::from(echo_json(
        &method, &path, &version, &headers, &body,
    )))))
}

/// A local upstream: plain HTTP, or HTTPS with a leaf for `names` from its own CA.
#[derive(Debug)]
pub struct Upstream {
    /// Where it listens.
    pub addr: SocketAddr,
    /// The CA (PEM) that signed its certificate, for HTTPS upstreams.
    pub ca_pem: Option<String>,
}

impl Upstream {
    /// Starts a plain HTTP echo server on 127.0.0.1.
    pub async fn http() -> Upstream {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        tokio::spawn(async move {
            loop {
                let Ok((stream, _)) = listener.accept().await else { continue };
                tokio::spawn(async move {
                    let _ = hyper_util::server::conn::auto::Builder::new(TokioExecutor::new())
                        .serve_connection_with_upgrades(TokioIo::new(stream), service_fn(echo))
                        .await;
                });
            }
        });
        Upstream { addr, ca_pem: None }
    }

    /// Starts an HTTPS echo server on 127.0.0.1 for `names`.
    pub async fn https(names: &[&str]) -> Upstream {
        let ca = Arc::new(
            CertificateAuthority::mint(CaConfig {
                permitted: names.iter().map(|s| s.to_string()).collect(),
                common_name: "test upstream CA".into(),
                ..CaConfig::default()
            })
            .unwrap(),
        );
        let mut config = rustls::ServerConfig::builder_with_provider(Arc::new(
            rustls::crypto::ring::default_provider(),
        ))
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_no_client_auth()
        .with_cert_resolver(ca.resolver());
        config.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
        let acceptor = tokio_rustls::TlsAcceptor::from(Arc::new(config));
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        tokio::spawn(async move {
            loop {
                let Ok((stream, _)) = listener.accept().await else { continue };
                let acceptor = acceptor.clone();
                tokio::spawn(async move {
                    let Ok(tls) = acceptor.accept(stream).await else { return };
                    let _ = hyper_util::server::conn::auto::Builder::new(TokioExecutor::new())
                        .serve_connection_with_upgrades(TokioIo::new(tls), service_fn(echo))
                        .await;
                });
            }
        });
        Upstream { addr, ca_pem: Some(ca.cert_pem().to_string()) }
    }
}

/// A proxy running in this process, assembled exactly as `bottle proxy` and the
/// builtin assemble it ([`bottle_egress::start_standalone`]). Stopped on drop.
#[derive(Debug)]
pub struct Proxy {
    /// Where it listens.
    pub addr: SocketAddr,
    /// The proxy itself (reload, audit).
    pub egress: Egress,
    /// Its CA.
    pub ca: Arc<CertificateAuthority>,
    /// Placeholders handed to the agent.
    pub placeholders: Placeholders,
    /// The actor (reload, stop, its approval store's name in `info`).
    pub actor: ractor::ActorRef<EgressMsg>,
    /// What the actor reported at start.
    pub info: EgressInfo,
    /// Temporary files (routes, CA PEMs, the client files).
    pub dir: crate::external::TempDir,
}

/// Secrets from `(name, value)` pairs.
pub fn secrets(pairs: &[(&str, &str)]) -> Secrets {
    pairs.iter().map(|(k, v)| (k.to_string(), Secret::new(*v))).collect()
}

impl Proxy {
    /// Starts a proxy over `routes` with these secrets, trusting `upstream_ca` (PEM) for
    /// upstreams.
    pub async fn start(routes: &str, secrets: &[(&str, &str)], upstream_ca: Option<&str>) -> Proxy {
        Proxy::start_with(routes, secrets, upstream_ca, |_| {}).await
    }

    /// Like [`Proxy::start`]; `tune` may change the arguments (approvals, limits) before
    /// the start. Listens on a free loopback port and writes the client files to `dir`.
    pub async fn start_with(
        routes: &str,
        secret_pairs: &[(&str, &str)],
        upstream_ca: Option<&str>,
        tune: impl FnOnce(&mut EgressArgs),
    ) -> Proxy {
        let dir = crate::external::TempDir::new("egress");
        let routes_file = dir.join("routes.yaml");
        std::fs::write(&routes_file, routes).unwrap();
        let mut settings = EgressSettings::new(&routes_file);
        settings.listen = Listen::Addr(SocketAddr::from(([127, 0, 0, 1], 0)));
        settings.ca_out = Some(dir.0.clone());
        settings.upstream_ca = upstream_ca.map(|pem| {
            let path = dir.join("upstream-ca.pem");
            std::fs::write(&path, pem).unwrap();
            path
        });
        let mut args = EgressArgs::new(settings, secrets(secret_pairs));
        tune(&mut args);
        Proxy::from_args(args, dir).await
    }

    /// Starts a proxy from prepared arguments; `dir` is kept for the proxy's lifetime.
    pub async fn from_args(args: EgressArgs, dir: crate::external::TempDir) -> Proxy {
        let started = bottle_egress::start_standalone(args).await.unwrap();
        let info = started.info;
        Proxy {
            addr: info.listening,
            egress: info.egress.clone(),
            ca: info.ca.clone(),
            placeholders: info.placeholders.clone(),
            actor: started.actor,
            info,
            dir,
        }
    }

    /// Path of the proxy CA's certificate.
    pub fn ca_file(&self) -> std::path::PathBuf {
        self.info.files.as_ref().map_or_else(|| self.dir.join("ca.pem"), |f| f.ca.clone())
    }

    /// Runs curl through the proxy; returns (HTTP status or 0, body, stderr).
    pub fn curl(&self, args: &[&str]) -> (u16, String, String) {
        curl_blocking(self.addr, &self.ca_file(), args)
    }

    /// Sends raw bytes to the proxy and returns everything it answers until it closes
    /// (or 5 s pass).
    pub async fn raw(&self, request: &[u8]) -> String {
        let mut stream = TcpStream::connect(self.addr).await.unwrap();
        let _ = stream.write_all(request).await;
        let mut out = Vec::new();
        let _ =
            tokio::time::timeout(std::time::Duration::from_secs(5), stream.read_to_end(&mut out))
                .await;
        String::from_utf8_lossy(&out).into_owned()
    }

    /// CONNECT to `target`, then TLS with `sni` trusting `roots_pem`; sends one GET and
    /// returns the response text, or the error.
    pub async fn connect_tls(
        &self,
        target: &str,
        sni: &str,
        roots_pem: &str,
        path: &str,
    ) -> Result<String, String> {
        let host = target.split(':').next().unwrap_or(target).to_string();
        let request = format!("GET {path} HTTP/1.1\r\nHost: {host}\r\nConnection: close\r\n\r\n");
        self.connect_tls_raw(target, sni, roots_pem, &request).await
    }

    /// Like [`Proxy::connect_tls`], sending `request` as it is.
    pub async fn connect_tls_raw(
        &self,
        target: &str,
        sni: &str,
        roots_pem: &str,
        request: &str,
    ) -> Result<String, String> {
        let mut stream = TcpStream::connect(self.addr).await.map_err(|e| e.to_string())?;
        stream
            .write_all(format!("CONNECT {target} HTTP/1.1\r\nHost: {target}\r\n\r\n").as_bytes())
            .await
            .map_err(|e| e.to_string())?;
        let mut head = Vec::new();
        let mut byte = [0u8; 1];
        while !head.ends_with(b"\r\n\r\n") {
            let n = stream.read(&mut byte).await.map_err(|e| e.to_string())?;
            if n == 0 {
                return Err(format!("proxy closed: {}", String::from_utf8_lossy(&head)));
            }
            head.push(byte[0]);
        }
        let head = String::from_utf8_lossy(&head).into_owned();
        if !head.starts_with("HTTP/1.1 200") {
            return Err(head);
        }
        let mut roots = rustls::RootCertStore::empty();
        use rustls::pki_types::pem::PemObject;
        for cert in rustls::pki_types::CertificateDer::pem_slice_iter(roots_pem.as_bytes()) {
            roots.add(cert.unwrap()).unwrap();
        }
        let config = rustls::ClientConfig::builder_with_provider(Arc::new(
            rustls::crypto::ring::default_provider(),
        ))
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_root_certificates(roots)
        .with_no_client_auth();
        let connector = tokio_rustls::TlsConnector::from(Arc::new(config));
        let name =
            rustls::pki_types::ServerName::try_from(sni.to_string()).map_err(|e| e.to_string())?;
        let mut tls = connector.connect(name, stream).await.map_err(|e| format!("tls: {e}"))?;
        tls.write_all(request.as_bytes()).await.map_err(|e| e.to_string())?;
        let mut out = Vec::new();
        let _ = tokio::time::timeout(std::time::Duration::from_secs(5), tls.read_to_end(&mut out))
            .await;
        Ok(String::from_utf8_lossy(&out).into_owned())
    }
}

impl Drop for Proxy {
    fn drop(&mut self) {
        self.actor.stop(None);
    }
}

/// Runs curl through the proxy at `addr`, trusting `ca`; returns (HTTP status or 0,
/// body, stderr).
#[allow(clippy::disallowed_methods)] // curl is a client under test; no reaper here
pub fn curl_blocking(
    addr: SocketAddr,
    ca: &std::path::Path,
    args: &[&str],
) -> (u16, String, String) {
    let mut cmd = crate::external::command("curl");
    cmd.args(["-s", "-S", "--max-time", "30", "-x", &format!("http://{addr}"), "--cacert"])
        .arg(ca)
        .args(["-w", "\n%{http_code}"])
        .args(args);
    let out = crate::external::output(&mut cmd);
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    let (body, code) = stdout.rsplit_once('\n').unwrap_or(("", "0"));
    (
        code.trim().parse().unwrap_or(0),
        body.to_string(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

/// [`curl_blocking`] off the async runtime.
pub async fn curl_via(
    addr: SocketAddr,
    ca: std::path::PathBuf,
    args: &[&str],
) -> (u16, String, String) {
    let args: Vec<String> = args.iter().map(|s| s.to_string()).collect();
    tokio::task::spawn_blocking(move || {
        let refs: Vec<&str> = args.iter().map(String::as_str).collect();
        curl_blocking(addr, &ca, &refs)
    })
    .await
    .unwrap_or((0, String::new(), "curl task failed".into()))
}

/// A parent for builtin egress actors in tests: it only watches (bottle-init's
/// supervisor decides restarts; here a failure just ends the child).
#[derive(Debug)]
pub struct Parent;

impl ractor::Actor for Parent {
    type Msg = ();
    type State = ();
    type Arguments = ();

    async fn pre_start(
        &self,
        _: ractor::ActorRef<()>,
        _: (),
    ) -> Result<(), ractor::ActorProcessingErr> {
        Ok(())
    }

    async fn handle_supervisor_evt(
        &self,
        _: ractor::ActorRef<()>,
        _: ractor::SupervisionEvent,
        _: &mut (),
    ) -> Result<(), ractor::ActorProcessingErr> {
        Ok(())
    }
}

/// Starts the builtin `egress` from `factory` exactly as bottle-init's supervisor does
/// (`ActorFactory::spawn_linked`), under a fresh [`Parent`]; returns the actor, what it
/// serves, and the parent.
pub async fn builtin(
    factory: &bottle_egress::EgressFactory,
) -> (ractor::ActorRef<EgressMsg>, EgressInfo, ractor::ActorRef<()>) {
    use bottle_runtime::spec::ActorFactory;
    let (parent, _) = ractor::Actor::spawn(None, Parent, ()).await.unwrap();
    let cell = factory.spawn_linked("egress".into(), parent.get_cell()).await.unwrap();
    let actor: ractor::ActorRef<EgressMsg> = cell.into();
    let info = ractor::call_t!(actor, EgressMsg::Describe, 5_000).unwrap();
    (actor, info, parent)
}
