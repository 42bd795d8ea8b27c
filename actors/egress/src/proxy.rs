//! The proxy server: HTTP/1.1 forward proxy (absolute-form) and CONNECT, with TLS
//! interception (HTTP/1.1 or HTTP/2 by ALPN) or SNI-checked passthrough.
//!
//! Hazard: every request is decided by [`crate::policy::decide`] against the table that
//! was live when the request started (a reload never changes an in-flight decision),
//! before any upstream socket is opened; the agent's `Authorization` and
//! `Proxy-Authorization` never leave the proxy; the real token is added only on the way
//! out to its own route; hop-by-hop headers are dropped in both directions.

use std::convert::Infallible;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::{Arc, Mutex, RwLock};
use std::time::{Duration, Instant};

use bottle_ca::CertificateAuthority;
use bytes::Bytes;
use http::header::{self, HeaderMap, HeaderName, HeaderValue};
use http::{Method, Request, Response, StatusCode, Version};
use http_body_util::combinators::BoxBody;
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use hyper::client::conn::http1::SendRequest;
use hyper::service::service_fn;
use hyper_util::rt::TokioIo;
use rustls::pki_types::ServerName;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpListener;

use bottle_pipelock::{KnownSecret, Location, Pipelock, Safelist};

use crate::audit::{Audit, AuditRecord};
use crate::dial;
use crate::dlp::{self, DlpConfig, Outgoing, ResponseRefusal};
use crate::framing::{Sniffed, Verdicts};
use crate::policy::{self, Canaries, RequestHead, Verdict};
use crate::routes::{AuthScheme, RouteTable, normalize_host};
use crate::sni::{self, Hello};

type Body = BoxBody<Bytes, hyper::Error>;

/// A body that counts its bytes and runs `on_done` with the count once, when it ends or
/// is dropped (a client that hangs up mid-download still gets its audit line).
struct Metered {
    inner: Body,
    bytes: Arc<std::sync::atomic::AtomicU64>,
    on_done: Option<Box<dyn FnOnce(u64) + Send + Sync>>,
}

impl Metered {
    fn new(
        inner: Body,
        bytes: Arc<std::sync::atomic::AtomicU64>,
        on_done: Option<Box<dyn FnOnce(u64) + Send + Sync>>,
    ) -> Metered {
        Metered { inner, bytes, on_done }
    }

    fn finish(&mut self) {
        if let Some(done) = self.on_done.take() {
            done(self.bytes.load(std::sync::atomic::Ordering::Relaxed));
        }
    }
}

impl hyper::body::Body for Metered {
    type Data = Bytes;
    type Error = hyper::Error;

    fn poll_frame(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Option<Result<hyper::body::Frame<Bytes>, hyper::Error>>> {
        let polled = std::pin::Pin::new(&mut self.inner).poll_frame(cx);
        match &polled {
            std::task::Poll::Ready(Some(Ok(frame))) => {
                if let Some(data) = frame.data_ref() {
                    self.bytes.fetch_add(data.len() as u64, std::sync::atomic::Ordering::Relaxed);
                }
            }
            std::task::Poll::Ready(None) | std::task::Poll::Ready(Some(Err(_))) => self.finish(),
            std::task::Poll::Pending => {}
        }
        polled
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> hyper::body::SizeHint {
        self.inner.size_hint()
    }
}

impl Drop for Metered {
    fn drop(&mut self) {
        self.finish();
    }
}

/// Errors of building or reloading the proxy.
#[derive(Debug, thiserror::Error)]
pub enum EgressError {
    /// A bumped host is outside the CA's name constraints (the CA cannot sign for it).
    #[error(
        "route {host:?} is intercepted but outside the CA's name constraints; restart the bottle to add intercepted hosts"
    )]
    OutsideCa {
        /// The host.
        host: String,
    },
    /// The extra upstream CA file could not be read.
    #[error("cannot read upstream CA file {path:?}")]
    UpstreamCa {
        /// The file.
        path: PathBuf,
        /// Why.
        #[source]
        source: std::io::Error,
    },
    /// The audit log could not be opened.
    #[error("cannot open the audit log")]
    Audit(#[source] std::io::Error),
    /// TLS configuration failed.
    #[error("tls configuration: {0}")]
    Tls(String),
    /// pipelock's rules did not compile.
    #[error("dlp: {0}")]
    Dlp(String),
    /// The routes file could not be read.
    #[error("cannot read the routes file {path:?}")]
    RoutesFile {
        /// The file.
        path: PathBuf,
        /// Why.
        #[source]
        source: std::io::Error,
    },
    /// The routes file is invalid (the message names the key, route or secret).
    #[error(transparent)]
    Routes(#[from] crate::routes::RoutesError),
    /// A file for clients (`ca.pem`, `bundle.pem`, `placeholders.env`) could not be written.
    #[error("cannot write {path:?}")]
    ClientFile {
        /// The file.
        path: PathBuf,
        /// Why.
        #[source]
        source: std::io::Error,
    },
    /// The approval queue could not be opened.
    #[error("approval queue: {0}")]
    Approvals(#[from] bottle_pipelock::approvals::ApprovalError),
    /// The listening socket could not be bound or adopted.
    #[error("cannot listen on {listen}")]
    Listen {
        /// The address or inherited descriptor.
        listen: String,
        /// Why.
        #[source]
        source: std::io::Error,
    },
    /// The proxy actor did not start or did not answer.
    #[error("egress actor: {0}")]
    Actor(String),
}

/// How the proxy runs.
#[derive(Debug, Clone)]
pub struct EgressConfig {
    /// Extra CA certificates (PEM) trusted for upstream servers, on top of the machine's
    /// trust store (which honours `SSL_CERT_FILE` and `SSL_CERT_DIR`).
    pub upstream_ca: Option<PathBuf>,
    /// Budget for DNS plus TCP connect plus TLS handshake upstream.
    pub connect_timeout: Duration,
    /// Budget for the upstream response head.
    pub response_timeout: Duration,
    /// JSON-lines audit file.
    pub audit_log: Option<PathBuf>,
    /// pipelock: approval queue and scan limits.
    pub dlp: DlpConfig,
}

impl Default for EgressConfig {
    fn default() -> EgressConfig {
        EgressConfig {
            upstream_ca: None,
            connect_timeout: Duration::from_secs(10),
            response_timeout: Duration::from_secs(120),
            audit_log: None,
            dlp: DlpConfig::default(),
        }
    }
}

/// Placeholders handed to the agent instead of real tokens: distinct random values.
#[derive(Debug, Clone, Default)]
pub struct Placeholders {
    entries: Vec<(String, String, Vec<String>)>,
}

impl Placeholders {
    /// One placeholder per credential (`token_ref`), with every host that credential is
    /// injected on: `(token_ref, placeholder, hosts)`.
    pub fn generate(table: &RouteTable) -> Placeholders {
        use rand::Rng;
        let mut rng = rand::rng();
        let mut entries: Vec<(String, String, Vec<String>)> = Vec::new();
        for route in table.routes() {
            let Some(auth) = &route.spec.auth else { continue };
            match entries.iter_mut().find(|(var, _, _)| *var == auth.token_ref) {
                Some((_, _, hosts)) => hosts.push(route.host.clone()),
                None => {
                    let random: String =
                        (0..32).map(|_| format!("{:x}", rng.random_range(0..16u8))).collect();
                    entries.push((
                        auth.token_ref.clone(),
                        format!("bottle-placeholder-{random}"),
                        vec![route.host.clone()],
                    ));
                }
            }
        }
        Placeholders { entries }
    }

    /// These placeholders, with `earlier`'s value for every credential both have: a
    /// restarted proxy keeps recognising what the agent already holds.
    pub fn keeping(mut self, earlier: &Placeholders) -> Placeholders {
        for (var, value, _) in &mut self.entries {
            if let Some((_, old, _)) = earlier.entries.iter().find(|(v, _, _)| v == var) {
                value.clone_from(old);
            }
        }
        self
    }

    /// `(variable, placeholder)` pairs for the agent's environment.
    pub fn env(&self) -> Vec<(String, String)> {
        self.entries.iter().map(|(v, p, _)| (v.clone(), p.clone())).collect()
    }
}

struct Live {
    table: RouteTable,
    canaries: Canaries,
    pipelock: Arc<Pipelock>,
    /// `known-secret:<name>` rule -> hosts that may receive that secret (its routes).
    known_owners: Vec<(String, Vec<String>)>,
}

struct Shared {
    live: RwLock<Arc<Live>>,
    ca: Arc<CertificateAuthority>,
    placeholders: Placeholders,
    server_tls: Arc<rustls::ServerConfig>,
    client_tls: Arc<rustls::ClientConfig>,
    audit: Audit,
    config: EgressConfig,
    safelist: Safelist,
    /// Set once by [`Egress::shutdown`]: every connection task ends.
    shutdown: tokio::sync::watch::Sender<bool>,
}

impl Shared {
    /// Runs `work` on its own task until it ends or the proxy shuts down (then it is
    /// dropped: its sockets close, a held request is refused by disconnection).
    fn spawn(&self, work: impl std::future::Future<Output = ()> + Send + 'static) {
        let mut stop = self.shutdown.subscribe();
        tokio::spawn(async move {
            if *stop.borrow() {
                return;
            }
            tokio::select! {
                () = work => {}
                _ = stop.wait_for(|s| *s) => {}
            }
        });
    }

    fn live(&self) -> Arc<Live> {
        self.live.read().unwrap_or_else(|p| p.into_inner()).clone()
    }
}

/// The running proxy. Cheap to clone.
#[derive(Clone)]
pub struct Egress {
    shared: Arc<Shared>,
}

impl std::fmt::Debug for Egress {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Egress").finish_non_exhaustive()
    }
}

fn live(
    table: RouteTable,
    placeholders: &Placeholders,
    safelist: &Safelist,
    key: &bottle_pipelock::FingerprintKey,
) -> Result<Live, EgressError> {
    let mut canaries = table.tokens();
    canaries.extend(placeholders.entries.iter().map(|(_, p, hosts)| (p.clone(), hosts.clone())));
    // pipelock knows every real token and every placeholder by its `token_ref`.
    let mut known: Vec<KnownSecret> = Vec::new();
    let mut known_owners: Vec<(String, Vec<String>)> = Vec::new();
    for route in table.routes() {
        let (Some(auth), Some(token)) = (&route.spec.auth, route.token()) else { continue };
        let rule = format!("known-secret:{}", auth.token_ref);
        match known_owners.iter_mut().find(|(r, _)| *r == rule) {
            Some((_, hosts)) => hosts.push(route.host.clone()),
            None => {
                known.push(KnownSecret { name: auth.token_ref.clone(), value: token.to_string() });
                known_owners.push((rule, vec![route.host.clone()]));
            }
        }
    }
    for (token_ref, placeholder, hosts) in &placeholders.entries {
        let name = format!("{token_ref}-placeholder");
        known_owners.push((format!("known-secret:{name}"), hosts.clone()));
        known.push(KnownSecret { name, value: placeholder.clone() });
    }
    let pipelock = Pipelock::with_safelist(table.dlp_rules(), &known, safelist.clone(), key)
        .map_err(|e| EgressError::Dlp(e.to_string()))?;
    Ok(Live {
        table,
        canaries: Canaries::new(canaries),
        pipelock: Arc::new(pipelock),
        known_owners,
    })
}

/// The machine's trust store (honouring `SSL_CERT_FILE` and `SSL_CERT_DIR`): what the
/// proxy trusts upstream, and what `bundle.pem` gives clients next to the bottle CA.
pub(crate) fn machine_roots() -> Vec<rustls::pki_types::CertificateDer<'static>> {
    rustls_native_certs::load_native_certs().certs
}

impl Egress {
    /// A proxy over `table`, intercepting with `ca`.
    pub fn new(
        table: RouteTable,
        ca: Arc<CertificateAuthority>,
        placeholders: Placeholders,
        config: EgressConfig,
    ) -> Result<Egress, EgressError> {
        check_ca(&table, &ca)?;
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let mut server_tls = rustls::ServerConfig::builder_with_provider(provider.clone())
            .with_safe_default_protocol_versions()
            .map_err(|e| EgressError::Tls(e.to_string()))?
            .with_no_client_auth()
            .with_cert_resolver(ca.resolver());
        server_tls.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
        let mut roots = rustls::RootCertStore::empty();
        for cert in machine_roots() {
            let _ = roots.add(cert);
        }
        if let Some(path) = &config.upstream_ca {
            let pem = std::fs::read(path)
                .map_err(|source| EgressError::UpstreamCa { path: path.clone(), source })?;
            use rustls::pki_types::pem::PemObject;
            for cert in rustls::pki_types::CertificateDer::pem_slice_iter(&pem) {
                let cert = cert.map_err(|e| EgressError::UpstreamCa {
                    path: path.clone(),
                    source: std::io::Error::other(e.to_string()),
                })?;
                roots.add(cert).map_err(|e| EgressError::Tls(e.to_string()))?;
            }
        }
        let mut client_tls = rustls::ClientConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .map_err(|e| EgressError::Tls(e.to_string()))?
            .with_root_certificates(roots)
            .with_no_client_auth();
        client_tls.alpn_protocols = vec![b"http/1.1".to_vec()];
        let audit = Audit::open(config.audit_log.clone()).map_err(EgressError::Audit)?;
        let safelist = Safelist::default();
        let live = live(table, &placeholders, &safelist, &config.dlp.fingerprint_key)?;
        Ok(Egress {
            shared: Arc::new(Shared {
                live: RwLock::new(Arc::new(live)),
                safelist,
                shutdown: tokio::sync::watch::Sender::new(false),
                ca,
                placeholders,
                server_tls: Arc::new(server_tls),
                client_tls: Arc::new(client_tls),
                audit,
                config,
            }),
        })
    }

    /// Swaps the route table atomically. Requests in flight finish under the old one.
    /// An intercepted host the CA's name constraints do not cover (added after start)
    /// is accepted with a warning: plain HTTP to it works, and CONNECT to it is refused
    /// with the reason until the bottle restarts with a CA that covers it.
    pub fn reload(&self, table: RouteTable) -> Result<(), EgressError> {
        for host in table.bumped_hosts() {
            if !self.shared.ca.permits(&host) {
                tracing::warn!(%host, "New intercepted host is outside the CA's name constraints: HTTPS to it is refused until restart.");
            }
        }
        let new = Arc::new(live(
            table,
            &self.shared.placeholders,
            &self.shared.safelist,
            &self.shared.config.dlp.fingerprint_key,
        )?);
        *self.shared.live.write().unwrap_or_else(|p| p.into_inner()) = new;
        Ok(())
    }

    /// Ends every connection (the listener loop ends with its task): in-flight and held
    /// requests are dropped, never forwarded.
    pub fn shutdown(&self) {
        self.shared.shutdown.send_replace(true);
    }

    /// What an approval store for this proxy starts from: the queue in `dir`, holds of
    /// `bottle` only, and approvals going onto this proxy's safelist.
    pub fn approval_store_args(
        &self,
        dir: &std::path::Path,
        bottle: &str,
    ) -> bottle_pipelock::approvals::StoreArgs {
        let safelisting = self.clone();
        bottle_pipelock::approvals::StoreArgs {
            dir: dir.to_path_buf(),
            on_approve: Some(Arc::new(move |fps: &[(String, String)]| {
                safelisting.approve_fingerprints(fps)
            })),
            bottle: Some(bottle.to_string()),
        }
    }

    /// Marks `(host, fingerprint)` pairs approved for the bottle's lifetime (from the
    /// approval journal, also after a restart).
    pub fn approve_fingerprints(&self, approved: &[(String, String)]) {
        let mut safe = self.shared.safelist.write().unwrap_or_else(|p| p.into_inner());
        safe.extend(approved.iter().map(|(host, fp)| bottle_pipelock::safelist_key(host, fp)));
    }

    /// The audit trail.
    pub fn audit(&self) -> &Audit {
        &self.shared.audit
    }

    /// Accepts connections until the listener fails, the task is dropped or the proxy
    /// shuts down.
    pub async fn serve(&self, listener: TcpListener) {
        let mut stop = self.shared.shutdown.subscribe();
        loop {
            let accepted = tokio::select! {
                accepted = listener.accept() => accepted,
                _ = stop.wait_for(|s| *s) => return,
            };
            let (stream, peer) = match accepted {
                Ok(ok) => ok,
                Err(err) => {
                    tracing::warn!(error = %err, "Accept failed.");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            };
            let _ = stream.set_nodelay(true);
            let shared = self.shared.clone();
            self.shared.clone().spawn(async move {
                // Upstream connections for plain-HTTP requests are reused per client
                // connection and upstream host.
                let plain: Arc<PlainPools> = Arc::default();
                let verdicts: Verdicts = Arc::default();
                let io = Sniffed::new(stream, verdicts.clone());
                let service = service_fn(move |req| {
                    let (shared, plain, verdicts) =
                        (shared.clone(), plain.clone(), verdicts.clone());
                    async move {
                        if framing_conflict(&verdicts) {
                            return Ok::<_, Infallible>(conflict());
                        }
                        Ok::<_, Infallible>(front(shared, plain, req).await)
                    }
                });
                let conn = hyper::server::conn::http1::Builder::new()
                    .timer(hyper_util::rt::TokioTimer::new())
                    .header_read_timeout(Duration::from_secs(30))
                    .max_buf_size(64 * 1024)
                    .serve_connection(TokioIo::new(io), service)
                    .with_upgrades();
                if let Err(err) = conn.await {
                    tracing::debug!(%peer, error = %err, "Client connection ended with an error.");
                }
            });
        }
    }
}

fn check_ca(table: &RouteTable, ca: &CertificateAuthority) -> Result<(), EgressError> {
    for host in table.bumped_hosts() {
        if !ca.permits(&host) {
            return Err(EgressError::OutsideCa { host });
        }
    }
    Ok(())
}

fn text(status: StatusCode, body: String) -> Response<Body> {
    let mut resp =
        Response::new(Full::new(Bytes::from(body)).map_err(|never| match never {}).boxed());
    *resp.status_mut() = status;
    resp.headers_mut()
        .insert(header::CONTENT_TYPE, HeaderValue::from_static("text/plain; charset=utf-8"));
    resp
}

/// Pops this request's framing verdict (see `framing.rs`): true for a conflict.
fn framing_conflict(verdicts: &Verdicts) -> bool {
    verdicts.lock().unwrap_or_else(|p| p.into_inner()).pop_front().unwrap_or(false)
}

fn conflict() -> Response<Body> {
    let mut resp = text(
        StatusCode::BAD_REQUEST,
        "bottle: bad request: both Content-Length and Transfer-Encoding\n".into(),
    );
    resp.headers_mut().insert(header::CONNECTION, HeaderValue::from_static("close"));
    resp
}

/// Audits `record` as a block with `reason` and answers `status`.
fn refuse_with(
    shared: &Shared,
    mut record: AuditRecord,
    status: StatusCode,
    reason: String,
) -> Response<Body> {
    record.verdict = "block";
    record.status = status.as_u16();
    record.reason = Some(reason.clone());
    shared.audit.record(record);
    text(status, format!("bottle: blocked: {reason}\n"))
}

/// Withholds the URL and host of a refused request's audit record when pipelock finds a
/// secret in them (refusals before the DLP stage would otherwise log them as sent).
fn scrub(pipelock: &Pipelock, record: &mut AuditRecord, host: &str, raw_path: &str) {
    let detectors = bottle_pipelock::Detectors::ALL;
    if !pipelock.scan_url(raw_path, detectors).is_empty() {
        record.path = "[withheld: dlp]".into();
        record.alarm = true;
        if record.reason.as_deref().is_some_and(|r| r.contains(raw_path) || r.contains('?')) {
            record.reason = Some("refused; the reason quoted a secret and is withheld".into());
        }
    }
    if !pipelock.scan_host(host, detectors).is_empty() {
        record.host = "[withheld: dlp]".into();
        record.alarm = true;
        if record.reason.as_deref().is_some_and(|r| r.contains(host)) {
            record.reason = Some("refused; the reason quoted a secret and is withheld".into());
        }
    }
}

/// An audit note for DLP detections: rules, locations, spellings and fingerprints.
fn dlp_note(action: &str, detections: &[bottle_pipelock::Detection]) -> String {
    let items: Vec<String> = detections
        .iter()
        .map(|d| format!("{} in {} ({}, fp {})", d.rule, d.location, d.encoding, d.fingerprint))
        .collect();
    format!("{action}: {}", items.join("; "))
}

fn blocked(reason: &str) -> Response<Body> {
    text(StatusCode::FORBIDDEN, format!("bottle: blocked: {reason}\n"))
}

/// Spawns hyper's per-stream tasks so that they end with the proxy.
#[derive(Clone)]
struct ShutdownExecutor(tokio::sync::watch::Sender<bool>);

impl<F> hyper::rt::Executor<F> for ShutdownExecutor
where
    F: std::future::Future + Send + 'static,
    F::Output: Send + 'static,
{
    fn execute(&self, work: F) {
        let mut stop = self.0.subscribe();
        tokio::spawn(async move {
            tokio::select! {
                _ = work => {}
                _ = stop.wait_for(|s| *s) => {}
            }
        });
    }
}

/// Mints the leaf for the ClientHello's SNI, or for the CONNECT host when there is none.
#[derive(Debug)]
struct ConnResolver {
    ca: Arc<CertificateAuthority>,
    fallback: String,
}

impl rustls::server::ResolvesServerCert for ConnResolver {
    fn resolve(
        &self,
        hello: rustls::server::ClientHello<'_>,
    ) -> Option<Arc<rustls::sign::CertifiedKey>> {
        let host = hello.server_name().unwrap_or(&self.fallback);
        self.ca.leaf(host).ok()
    }
}

/// Per client connection (or per CONNECT tunnel) context.
struct ConnCtx {
    host: String,
    port: u16,
    tls: bool,
    sni: Option<String>,
    pool: Mutex<Vec<SendRequest<Metered>>>,
    /// HTTP/2 from the agent: streams run concurrently on this context.
    multiplexed: bool,
}

/// Plain-HTTP upstream contexts kept per client connection.
const MAX_PLAIN_POOLS: usize = 32;

/// Per client connection: one context (and upstream pool) per plain-HTTP upstream.
type PlainPools = Mutex<std::collections::HashMap<(String, u16), Arc<ConnCtx>>>;

async fn front(
    shared: Arc<Shared>,
    plain: Arc<PlainPools>,
    req: Request<Incoming>,
) -> Response<Body> {
    if req.method() == Method::CONNECT {
        return connect(shared, req).await;
    }
    let uri = req.uri().clone();
    match (uri.scheme_str(), uri.host()) {
        (Some("http"), Some(host)) => {
            let key = (normalize_host(host), uri.port_u16().unwrap_or(80));
            let ctx = {
                let mut pools = plain.lock().unwrap_or_else(|p| p.into_inner());
                // Bounded: an agent naming endless hosts on one connection must not grow it.
                if pools.len() >= MAX_PLAIN_POOLS && !pools.contains_key(&key) {
                    pools.clear();
                }
                pools
                    .entry(key.clone())
                    .or_insert_with(|| {
                        Arc::new(ConnCtx {
                            host: key.0,
                            port: key.1,
                            tls: false,
                            sni: None,
                            pool: Mutex::new(Vec::new()),
                            multiplexed: false,
                        })
                    })
                    .clone()
            };
            forward(shared, ctx, req).await
        }
        (Some(other), Some(_)) => text(
            StatusCode::BAD_REQUEST,
            format!("bottle: unsupported scheme {other:?}; use CONNECT for https\n"),
        ),
        _ => text(
            StatusCode::BAD_REQUEST,
            "bottle: this is a proxy: send absolute-form requests or CONNECT\n".into(),
        ),
    }
}

async fn connect(shared: Arc<Shared>, req: Request<Incoming>) -> Response<Body> {
    let Some(authority) = req.uri().authority().cloned() else {
        return text(StatusCode::BAD_REQUEST, "bottle: CONNECT needs host:port\n".into());
    };
    let host = normalize_host(authority.host());
    let port = authority.port_u16().unwrap_or(443);
    let live = shared.live();
    let mut record = AuditRecord::now("CONNECT", &host, "");
    let route = match policy::route_for_host(&live.table, &host) {
        Ok(route) => route,
        Err(reason) => {
            record.reason = Some(reason.clone());
            scrub(&live.pipelock, &mut record, &host, "");
            shared.audit.record(record);
            return blocked(&reason);
        }
    };
    let passthrough = route.spec.tls_passthrough;
    if !route.port_allowed(port, true) {
        let reason = format!("port {port} is not allowed for {host:?}");
        record.reason = Some(reason.clone());
        shared.audit.record(record);
        return blocked(&reason);
    }
    if !passthrough && !shared.ca.permits(&host) {
        let reason = format!(
            "{host:?} was added after the bottle's CA was minted; its TLS cannot be intercepted until the bottle restarts"
        );
        record.reason = Some(reason.clone());
        shared.audit.record(record);
        return blocked(&reason);
    }
    let pinned = route.connect_addr(port);
    let route_host = route.host.clone();
    drop(live);
    let spawner = shared.clone();
    spawner.spawn(async move {
        match hyper::upgrade::on(req).await {
            Ok(upgraded) => {
                if passthrough {
                    tunnel(shared, upgraded, host, port, pinned, route_host).await;
                } else {
                    bump(shared, upgraded, host, port).await;
                }
            }
            Err(err) => tracing::debug!(error = %err, "CONNECT upgrade failed."),
        }
    });
    Response::new(http_body_util::Empty::new().map_err(|never| match never {}).boxed())
}

async fn bump(shared: Arc<Shared>, upgraded: hyper::upgrade::Upgraded, host: String, port: u16) {
    // Clients send no SNI for IP hosts: fall back to the CONNECT host.
    let mut config = (*shared.server_tls).clone();
    config.cert_resolver = Arc::new(ConnResolver { ca: shared.ca.clone(), fallback: host.clone() });
    let acceptor = tokio_rustls::TlsAcceptor::from(Arc::new(config));
    let tls = match tokio::time::timeout(
        Duration::from_secs(10),
        acceptor.accept(TokioIo::new(upgraded)),
    )
    .await
    {
        Ok(Ok(tls)) => tls,
        Ok(Err(err)) => {
            tracing::debug!(%host, error = %err, "TLS handshake with the agent failed.");
            return;
        }
        Err(_) => return,
    };
    let sni = tls.get_ref().1.server_name().map(str::to_string);
    let multiplexed = tls.get_ref().1.alpn_protocol() == Some(b"h2");
    let ctx =
        Arc::new(ConnCtx { host, port, tls: true, sni, pool: Mutex::new(Vec::new()), multiplexed });
    let verdicts: Verdicts = Arc::default();
    let io = Sniffed::new(tls, verdicts.clone());
    let executor = ShutdownExecutor(shared.shutdown.clone());
    let service = service_fn(move |req| {
        let (shared, ctx, verdicts) = (shared.clone(), ctx.clone(), verdicts.clone());
        async move {
            if framing_conflict(&verdicts) {
                return Ok::<_, Infallible>(conflict());
            }
            Ok::<_, Infallible>(forward(shared, ctx, req).await)
        }
    });
    // HTTP/2 streams run on tasks of their own: they too end when the proxy shuts down
    // (a held request must not be released into a proxy that is gone).
    let mut builder = hyper_util::server::conn::auto::Builder::new(executor);
    builder
        .http1()
        .timer(hyper_util::rt::TokioTimer::new())
        .header_read_timeout(Duration::from_secs(30));
    builder
        .http2()
        .timer(hyper_util::rt::TokioTimer::new())
        .keep_alive_interval(Duration::from_secs(60));
    if let Err(err) = builder.serve_connection_with_upgrades(TokioIo::new(io), service).await {
        tracing::debug!(error = %err, "Intercepted connection ended with an error.");
    }
}

async fn tunnel(
    shared: Arc<Shared>,
    upgraded: hyper::upgrade::Upgraded,
    host: String,
    port: u16,
    pinned: Option<SocketAddr>,
    route: String,
) {
    let started = Instant::now();
    let mut client = TokioIo::new(upgraded);
    let mut record = AuditRecord::now("CONNECT", &host, "");
    record.route = Some(route);
    let mut hello = Vec::with_capacity(1024);
    // One deadline for the whole ClientHello: it cannot be dribbled in for hours.
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    let verdict = loop {
        let mut chunk = [0u8; 4096];
        let n = match tokio::time::timeout_at(deadline, client.read(&mut chunk)).await {
            Ok(Ok(n)) if n > 0 => n,
            _ => break Err("no TLS ClientHello".to_string()),
        };
        hello.extend_from_slice(&chunk[..n]);
        match sni::parse(&hello) {
            Hello::Incomplete if hello.len() < sni::MAX_HELLO => continue,
            Hello::Sni(name) if name == host => break Ok(()),
            Hello::Sni(name) => {
                break Err(format!(
                    "ClientHello SNI {name:?} does not match the CONNECT host {host:?}"
                ));
            }
            Hello::NoSni => break Err("ClientHello without SNI on a passthrough route".into()),
            _ => break Err("not a TLS ClientHello".into()),
        }
    };
    if let Err(reason) = verdict {
        record.reason = Some(reason);
        shared.audit.record(record);
        return;
    }
    let mut upstream = match dial::connect(&host, port, pinned, shared.config.connect_timeout).await
    {
        Ok((stream, _)) => stream,
        Err(err) => {
            record.verdict = "error";
            record.status = 502;
            record.reason = Some(crate::error_chain(&err));
            shared.audit.record(record);
            return;
        }
    };
    if upstream.write_all(&hello).await.is_err() {
        return;
    }
    let (up, down) =
        tokio::io::copy_bidirectional(&mut client, &mut upstream).await.unwrap_or((0, 0));
    record.verdict = "allow";
    record.status = 200;
    record.bytes_up = up + hello.len() as u64;
    record.bytes_down = down;
    record.duration_ms = started.elapsed().as_secs_f64() * 1e3;
    shared.audit.record(record);
}

const HOP_BY_HOP: &[&str] = &[
    "connection",
    "proxy-connection",
    "keep-alive",
    "te",
    "trailer",
    "transfer-encoding",
    "upgrade",
    "proxy-authorization",
    "proxy-authenticate",
];

fn strip_hop_by_hop(headers: &mut HeaderMap, keep_upgrade: bool) {
    let listed: Vec<HeaderName> = headers
        .get_all(header::CONNECTION)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .filter_map(|name| HeaderName::from_bytes(name.trim().as_bytes()).ok())
        .filter(|name| !(keep_upgrade && name == header::UPGRADE))
        .collect();
    for name in listed {
        headers.remove(name);
    }
    for name in HOP_BY_HOP {
        if keep_upgrade && (*name == "upgrade" || *name == "connection") {
            continue;
        }
        headers.remove(*name);
    }
}

fn is_websocket(headers: &HeaderMap) -> bool {
    headers
        .get(header::UPGRADE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.eq_ignore_ascii_case("websocket"))
}

async fn forward(
    shared: Arc<Shared>,
    ctx: Arc<ConnCtx>,
    mut req: Request<Incoming>,
) -> Response<Body> {
    let started = Instant::now();
    let live = shared.live();
    let method = req.method().as_str().to_string();
    let raw_path =
        req.uri().path_and_query().map(|p| p.as_str().to_string()).unwrap_or_else(|| "/".into());
    let host_header = req
        .headers()
        .get(header::HOST)
        .and_then(|v| v.to_str().ok())
        .map(str::to_string)
        .or_else(|| req.uri().authority().map(|a| a.as_str().to_string()));
    let headers: Vec<(String, String)> = req
        .headers()
        .iter()
        .filter(|(n, _)| *n != header::PROXY_AUTHORIZATION)
        .map(|(n, v)| (n.as_str().to_string(), String::from_utf8_lossy(v.as_bytes()).into_owned()))
        .collect();
    let head = RequestHead {
        method: &method,
        target_host: &ctx.host,
        sni: ctx.sni.as_deref(),
        host_header: host_header.as_deref(),
        path_and_query: &raw_path,
        headers: &headers,
    };
    let verdict = policy::decide(&live.table, &live.canaries, &head);
    let mut record = AuditRecord::now(&method, &ctx.host, &raw_path);
    let (host, mut path_and_query) = match verdict {
        Verdict::Introspect => {
            let body = if raw_path.starts_with("/audit") {
                serde_json::to_string_pretty(&shared.audit.recent()).unwrap_or_default()
            } else {
                serde_json::to_string_pretty(&live.table.to_public_json()).unwrap_or_default()
            };
            let mut resp = text(StatusCode::OK, body);
            resp.headers_mut()
                .insert(header::CONTENT_TYPE, HeaderValue::from_static("application/json"));
            return resp;
        }
        Verdict::Block { reason, alarm } => {
            record.reason = Some(reason.clone());
            record.alarm = alarm;
            if alarm {
                // The URL may hold the credential itself: keep it out of every log.
                record.path = "[withheld: credential canary]".into();
            }
            scrub(&live.pipelock, &mut record, &ctx.host, &raw_path);
            shared.audit.record(record);
            return blocked(&reason);
        }
        Verdict::Allow { host, path_and_query } => (host, path_and_query),
    };
    record.path = path_and_query.clone();
    record.route = Some(host.clone());
    let Some(route) =
        live.table.get(&host).or_else(|| policy::route_for_host(&live.table, &host).ok())
    else {
        return blocked("route disappeared");
    };
    let refuse = |reason: String, mut record: AuditRecord| {
        record.reason = Some(reason.clone());
        scrub(&live.pipelock, &mut record, &ctx.host, &raw_path);
        shared.audit.record(record);
        blocked(&reason)
    };
    if !route.port_allowed(ctx.port, ctx.tls) {
        return refuse(format!("port {} is not allowed for {host:?}", ctx.port), record);
    }
    if !ctx.tls && route.spec.auth.as_ref().is_some_and(|a| !a.plaintext) {
        return refuse(
            format!("{host:?} injects a credential, which never crosses plain HTTP: use https://"),
            record,
        );
    }
    let websocket = is_websocket(req.headers());
    let client_upgrade = websocket.then(|| hyper::upgrade::on(&mut req));
    let (mut parts, body) = req.into_parts();
    strip_hop_by_hop(&mut parts.headers, websocket);
    if websocket {
        // No permessage-deflate: compressed frames could not be scanned.
        parts.headers.remove(header::SEC_WEBSOCKET_EXTENSIONS);
    }
    // The agent's credentials never leave; the route's real one is added here.
    parts.headers.remove(header::AUTHORIZATION);
    parts.headers.remove(header::PROXY_AUTHORIZATION);
    // pipelock, outbound: the host, URL, headers (but the credential ones the proxy
    // removes or injects) and the buffered body, under the route's policy.
    let policy = route.dlp();
    // A route's own credential (or its placeholder) going to that route is expected.
    let own_secrets: Vec<String> = live
        .known_owners
        .iter()
        .filter(|(_, hosts)| hosts.contains(&host))
        .map(|(rule, _)| rule.clone())
        .collect();
    let mut body: Body = body.boxed();
    if policy.outbound.any() {
        let mut bytes = Bytes::new();
        let had_body = !hyper::body::Body::is_end_stream(&body);
        if had_body {
            match dlp::collect_limited(body, shared.config.dlp.max_request_body).await {
                Ok(Some(b)) => bytes = b,
                Ok(None) => {
                    let reason = format!(
                        "the request body exceeds the DLP scan limit ({} bytes)",
                        shared.config.dlp.max_request_body
                    );
                    record.status = 413;
                    return refuse_with(&shared, record, StatusCode::PAYLOAD_TOO_LARGE, reason);
                }
                Err(_) => {
                    record.status = 400;
                    return refuse_with(
                        &shared,
                        record,
                        StatusCode::BAD_REQUEST,
                        "malformed request body".into(),
                    );
                }
            }
        }
        // Only headers the proxy removes and replaces go unscanned.
        let mut skip = vec![header::AUTHORIZATION, header::PROXY_AUTHORIZATION];
        if let Some(name) = route
            .spec
            .auth
            .as_ref()
            .filter(|a| a.scheme == AuthScheme::Header && route.token().is_some())
            .and_then(|a| a.header.as_deref())
            .and_then(|h| HeaderName::from_bytes(h.as_bytes()).ok())
        {
            skip.push(name);
        }
        let outgoing = Outgoing {
            own: &own_secrets,
            method: &method,
            host: &host,
            path_and_query: &mut path_and_query,
            headers: &mut parts.headers,
            body: &mut bytes,
            skip: &skip,
        };
        match dlp::inspect_request(&live.pipelock, &shared.config.dlp, &policy, outgoing).await {
            Ok(passed) => {
                if !passed.detections.is_empty() {
                    record.dlp = Some(dlp_note(&passed.action, &passed.detections));
                    // What the audit keeps of the URL: the redacted one, or nothing when an
                    // approved secret is in it.
                    let in_url = passed.detections.iter().any(|d| d.location == Location::Url);
                    record.path = if passed.action == "redacted" || !in_url {
                        path_and_query.clone()
                    } else {
                        "[withheld: approved secret]".into()
                    };
                }
            }
            Err(refusal) => {
                record.dlp = Some(dlp_note("blocked", &refusal.detections));
                record.alarm = !refusal.detections.is_empty();
                // The URL may hold the secret: the audit keeps the redacted form only.
                record.path = "[withheld: dlp]".into();
                record.status = refusal.status.as_u16();
                return refuse_with(&shared, record, refusal.status, refusal.reason);
            }
        }
        if had_body && !parts.headers.contains_key(header::CONTENT_LENGTH) {
            parts.headers.insert(header::CONTENT_LENGTH, HeaderValue::from(bytes.len()));
        }
        body = Full::new(bytes).map_err(|never| match never {}).boxed();
    }
    if let (Some(auth), Some(token)) = (&route.spec.auth, route.token()) {
        let (name, value) = match auth.scheme {
            AuthScheme::Bearer => (header::AUTHORIZATION, format!("Bearer {token}")),
            AuthScheme::Token => (header::AUTHORIZATION, format!("token {token}")),
            AuthScheme::Basic => (header::AUTHORIZATION, format!("Basic {token}")),
            AuthScheme::Header => {
                let name = auth
                    .header
                    .as_deref()
                    .and_then(|h| HeaderName::from_bytes(h.as_bytes()).ok())
                    .unwrap_or(header::AUTHORIZATION);
                parts.headers.remove(&name);
                (name, token.to_string())
            }
        };
        match HeaderValue::from_str(&value) {
            Ok(mut v) => {
                v.set_sensitive(true);
                parts.headers.insert(name, v);
            }
            Err(_) => return blocked("the route's token is not a valid header value"),
        }
    }
    let default_port = if ctx.tls { 443 } else { 80 };
    let bracketed = if host.contains(':') { format!("[{host}]") } else { host.clone() };
    let authority =
        if ctx.port == default_port { bracketed } else { format!("{bracketed}:{}", ctx.port) };
    match HeaderValue::from_str(&authority) {
        Ok(v) => {
            parts.headers.insert(header::HOST, v);
        }
        Err(_) => return blocked("bad host"),
    }
    parts.uri = match path_and_query.parse() {
        Ok(uri) => uri,
        Err(_) => return blocked("malformed request path"),
    };
    parts.version = Version::HTTP_11;
    let pinned = route.connect_addr(ctx.port);
    let live_pipelock = live.pipelock.clone();
    drop(live);
    let bytes_up = Arc::new(std::sync::atomic::AtomicU64::new(0));
    let upstream_req = Request::from_parts(parts, Metered::new(body, bytes_up.clone(), None));

    let sender =
        ctx.pool.lock().unwrap_or_else(|p| p.into_inner()).pop().filter(|s| !s.is_closed());
    let mut sender = match sender {
        Some(s) => s,
        None => match open_upstream(&shared, &host, ctx.port, ctx.tls, pinned).await {
            Ok(s) => s,
            Err((status, reason)) => {
                record.verdict = if status == StatusCode::FORBIDDEN { "block" } else { "error" };
                record.status = status.as_u16();
                record.reason = Some(reason.clone());
                shared.audit.record(record);
                if status == StatusCode::FORBIDDEN {
                    return blocked(&reason);
                }
                return text(status, format!("bottle: upstream error: {reason}\n"));
            }
        },
    };
    let sent = tokio::time::timeout(shared.config.response_timeout, async {
        sender.ready().await?;
        sender.send_request(upstream_req).await
    })
    .await;
    let mut resp = match sent {
        Ok(Ok(resp)) => resp.map(|b| b.boxed()),
        Ok(Err(err)) if err.is_user() => {
            // The agent's own body failed (broken chunking, reset mid-body): its fault.
            record.verdict = "block";
            record.status = 400;
            record.reason = Some(format!("malformed request body: {err}"));
            shared.audit.record(record);
            return text(StatusCode::BAD_REQUEST, "bottle: malformed request body\n".into());
        }
        Ok(Err(err)) => {
            record.verdict = "error";
            record.status = 502;
            record.reason = Some(format!("upstream failed: {err}"));
            shared.audit.record(record);
            return text(StatusCode::BAD_GATEWAY, format!("bottle: upstream error: {err}\n"));
        }
        Err(_) => {
            record.verdict = "error";
            record.status = 504;
            record.reason = Some("upstream response timed out".into());
            shared.audit.record(record);
            return text(
                StatusCode::GATEWAY_TIMEOUT,
                "bottle: upstream response timed out\n".into(),
            );
        }
    };
    let upgraded = websocket && resp.status() == StatusCode::SWITCHING_PROTOCOLS;
    // pipelock, inbound: text responses are buffered and scanned whole; event streams
    // are scanned event by event (below, as the body streams).
    let sse = !upgraded && policy.inbound && dlp::event_stream(resp.headers());
    let response_coding = dlp::joined_header(resp.headers(), &header::CONTENT_ENCODING);
    let encoded = !matches!(&response_coding, Ok(None));
    if !upgraded && policy.inbound && (response_coding.is_err() || (sse && encoded)) {
        // A coding nobody agrees on, or a compressed event stream: cannot be scanned.
        let reason = "the response's Content-Encoding cannot be scanned".to_string();
        return refuse_with(&shared, record, StatusCode::BAD_GATEWAY, reason);
    }
    if !upgraded && policy.inbound && !sse && !dlp::binary_media(resp.headers()) {
        let coding = response_coding.ok().flatten();
        match dlp::scan_response(&live_pipelock, &shared.config.dlp, &policy, &host, resp, coding)
            .await
        {
            Ok((scanned, note)) => {
                resp = scanned;
                if note.is_some() {
                    record.dlp = note;
                }
            }
            Err(ResponseRefusal::Blocked { status, reason, alarm }) => {
                record.alarm |= alarm;
                return refuse_with(&shared, record, status, reason);
            }
            Err(ResponseRefusal::Upstream(err)) => {
                record.verdict = "error";
                record.status = 502;
                record.reason = Some(format!("upstream body failed: {err}"));
                shared.audit.record(record);
                return text(StatusCode::BAD_GATEWAY, format!("bottle: upstream error: {err}\n"));
            }
        }
    }
    if upgraded {
        let upstream_upgrade = hyper::upgrade::on(&mut resp);
        if let Some(client_upgrade) = client_upgrade {
            let note_shared = shared.clone();
            let note_host = host.clone();
            let ws = crate::websocket::WsContext {
                pipelock: live_pipelock.clone(),
                config: shared.config.dlp.clone(),
                policy,
                host: host.clone(),
                own: own_secrets.clone(),
                note: Arc::new(move |why: &str, block: bool| {
                    let mut note = AuditRecord::now("WEBSOCKET", &note_host, "");
                    note.verdict = if block { "block" } else { "allow" };
                    note.alarm = block;
                    note.status = 101;
                    note.dlp = Some(why.to_string());
                    note_shared.audit.record(note);
                }),
            };
            let scanned = policy.outbound.any() || policy.inbound;
            shared.spawn(async move {
                if let (Ok(client), Ok(upstream)) = (client_upgrade.await, upstream_upgrade.await) {
                    let (mut a, mut b) = (TokioIo::new(client), TokioIo::new(upstream));
                    if scanned {
                        crate::websocket::relay(a, b, ws).await;
                    } else {
                        let _ = tokio::io::copy_bidirectional(&mut a, &mut b).await;
                    }
                }
            });
        }
    }
    // An HTTP/1.1 upstream connection is free again only when this response body ended.
    // An HTTP/1.1 agent sends its next request only after this response, so its context
    // gets the connection back at once; concurrent HTTP/2 streams must not take it before
    // the body ended (they would wait behind it), so theirs returns it at the end.
    let mut sender = (!upgraded).then_some(sender);
    if !ctx.multiplexed
        && let Some(sender) = sender.take()
    {
        ctx.pool.lock().unwrap_or_else(|p| p.into_inner()).push(sender);
    }
    let pool_ctx = ctx.clone();
    strip_hop_by_hop(resp.headers_mut(), upgraded);
    record.verdict = "allow";
    record.status = resp.status().as_u16();
    record.duration_ms = started.elapsed().as_secs_f64() * 1e3;
    // The audit line is written when the response body ends, with both byte counts.
    let audit_shared = shared.clone();
    let on_done: Box<dyn FnOnce(u64) + Send + Sync> = Box::new(move |down| {
        if let Some(sender) = sender.take() {
            pool_ctx.pool.lock().unwrap_or_else(|p| p.into_inner()).push(sender);
        }
        record.bytes_up = bytes_up.load(std::sync::atomic::Ordering::Relaxed);
        record.bytes_down = down;
        audit_shared.audit.record(record);
    });
    if sse {
        // Events are held back, dropped or replaced: the length is no longer known.
        resp.headers_mut().remove(header::CONTENT_LENGTH);
    }
    let sse_scan = sse.then(|| (live_pipelock.clone(), shared.clone(), host.clone()));
    resp.map(|b| {
        let b = match sse_scan {
            Some((pipelock, shared, host)) => {
                let on_finding: Box<dyn Fn(&str) + Send + Sync> = Box::new(move |why| {
                    let mut note = AuditRecord::now("SSE", &host, "");
                    note.verdict = if why.starts_with("warning") { "warn" } else { "block" };
                    note.alarm = note.verdict == "block";
                    note.status = 200;
                    note.reason = Some(why.to_string());
                    shared.audit.record(note);
                });
                dlp::SseScan::new(b, pipelock, policy, on_finding).boxed()
            }
            None => b,
        };
        Metered::new(b, Arc::new(std::sync::atomic::AtomicU64::new(0)), Some(on_done)).boxed()
    })
}

async fn open_upstream(
    shared: &Shared,
    host: &str,
    port: u16,
    tls: bool,
    pinned: Option<SocketAddr>,
) -> Result<SendRequest<Metered>, (StatusCode, String)> {
    let timeout = shared.config.connect_timeout;
    let (tcp, _) = dial::connect(host, port, pinned, timeout).await.map_err(|err| {
        let status = match err {
            dial::DialError::NotPublic { .. } => StatusCode::FORBIDDEN,
            dial::DialError::Timeout { .. } => StatusCode::GATEWAY_TIMEOUT,
            _ => StatusCode::BAD_GATEWAY,
        };
        (status, crate::error_chain(&err))
    })?;
    let bad = |e: String| (StatusCode::BAD_GATEWAY, e);
    if tls {
        let name = ServerName::try_from(host.to_string()).map_err(|e| bad(e.to_string()))?;
        let connector = tokio_rustls::TlsConnector::from(shared.client_tls.clone());
        let stream = tokio::time::timeout(timeout, connector.connect(name, tcp))
            .await
            .map_err(|_| {
                (StatusCode::GATEWAY_TIMEOUT, format!("TLS handshake with {host} timed out"))
            })?
            .map_err(|e| bad(format!("TLS handshake with {host} failed: {e}")))?;
        let (sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
            .await
            .map_err(|e| bad(e.to_string()))?;
        tokio::spawn(conn.with_upgrades());
        Ok(sender)
    } else {
        let (sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(tcp))
            .await
            .map_err(|e| bad(e.to_string()))?;
        tokio::spawn(conn.with_upgrades());
        Ok(sender)
    }
}
