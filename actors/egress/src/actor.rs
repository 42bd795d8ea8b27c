//! The egress proxy as a supervised actor: the one way it is assembled, whether it runs
//! as bottle-init's builtin daemon `egress`, as `bottle proxy`, or in a test.
//!
//! Hazard: copies of the assembly drift (default listen address, which files are
//! written, whether the approval store comes back after it dies), and a reload that
//! half-applies leaves the proxy with no table or the wrong CA. So every caller fills an
//! [`EgressSettings`], passes the secrets it resolved (never the process environment)
//! and runs [`EgressActor`]; `pre_start` does every fallible step (read and validate the
//! routes, mint the CA, write the client files, open the approval queue, bind or adopt
//! the socket) so a failure is a start failure the caller sees; a reload reads and
//! validates the new file first and swaps atomically, keeping the old table on any error.
//! Nothing is registered under a name derived from the settings: two proxies in one
//! process (or one port number in two namespaces) never share an approval store.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bottle_ca::{CaActor, CaArgs, CaConfig, CaMsg, CertificateAuthority};
use bottle_pipelock::approvals::{ApprovalClient, ApprovalStore, fingerprint_key};
pub use bottle_protocol::egress::{EgressSettings, Listen};
pub use bottle_protocol::secrets::{Secret, Secrets};
use ractor::{
    Actor, ActorCell, ActorProcessingErr, ActorRef, RpcReplyPort, SpawnErr, SupervisionEvent,
};
use tokio::task::JoinHandle;

use crate::routes::RouteTable;
use crate::{DlpConfig, Egress, EgressConfig, EgressError, Placeholders};

/// Limits that are not settings (tests lower them); the defaults are what ships.
#[derive(Debug, Clone)]
pub struct Limits {
    /// Budget for DNS plus TCP connect plus TLS handshake upstream.
    pub connect_timeout: Duration,
    /// Budget for the upstream response head.
    pub response_timeout: Duration,
    /// Request body limit.
    pub max_request_body: usize,
    /// Text response limit.
    pub max_response_body: usize,
}

impl Default for Limits {
    fn default() -> Limits {
        let (config, dlp) = (EgressConfig::default(), DlpConfig::default());
        Limits {
            connect_timeout: config.connect_timeout,
            response_timeout: config.response_timeout,
            max_request_body: dlp.max_request_body,
            max_response_body: dlp.max_response_body,
        }
    }
}

/// What [`EgressActor`] starts from. Clones share the adopted inherited socket, the CA
/// and the placeholders, so a restart accepts on the same socket and clients keep
/// trusting it.
#[derive(Debug, Clone)]
pub struct EgressArgs {
    /// The settings.
    pub settings: EgressSettings,
    /// Secret values by name, resolved by the caller; routes' `token_ref`s name them.
    pub secrets: Secrets,
    /// Limits.
    pub limits: Limits,
    /// The socket adopted from [`Listen::Fd`], once, on the first start.
    inherited: bottle_runtime::listener::ListenerSlot,
    /// The CA and placeholders clients were given, kept for restarts.
    kept: Arc<Mutex<Kept>>,
}

/// What a restart keeps so that clients configured at the first start still work: the
/// CA their trust store holds (while the intercepted hosts are the same; a CA cannot sign
/// for hosts outside its constraints) and the placeholders in their environment.
#[derive(Debug, Default)]
struct Kept {
    ca: Option<(Vec<String>, Arc<CertificateAuthority>)>,
    placeholders: Option<Placeholders>,
}

impl EgressArgs {
    /// Settings and secrets with the default limits.
    pub fn new(settings: EgressSettings, secrets: Secrets) -> EgressArgs {
        EgressArgs {
            settings,
            secrets,
            limits: Limits::default(),
            inherited: Default::default(),
            kept: Arc::default(),
        }
    }
}

/// Everything the egress actor can be asked. Closed on purpose.
#[derive(Debug)]
pub enum EgressMsg {
    /// Re-read and swap the routes file (SIGHUP via bottle-init, `ctl reload`).
    Reload(RpcReplyPort<Result<String, String>>),
    /// Where it listens and what clients need (the CA, placeholders, files written).
    Describe(RpcReplyPort<EgressInfo>),
}

/// The files written to `ca_out` for clients.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ClientFiles {
    /// The bottle CA's certificate (never its key).
    pub ca: PathBuf,
    /// The machine's roots plus the bottle CA: a whole trust store (`SSL_CERT_FILE`).
    pub bundle: PathBuf,
    /// `NAME=placeholder` lines for the agent's environment.
    pub placeholders: PathBuf,
}

/// A running proxy as its clients and tests see it.
#[derive(Debug, Clone)]
pub struct EgressInfo {
    /// The address it accepts on (the bound port when `:0` was asked).
    pub listening: SocketAddr,
    /// The proxy itself (audit trail, safelist).
    pub egress: Egress,
    /// Its CA.
    pub ca: Arc<CertificateAuthority>,
    /// The placeholders the agent holds instead of tokens.
    pub placeholders: Placeholders,
    /// What was written to `ca_out`, if it is set.
    pub files: Option<ClientFiles>,
    /// The approval store's registered name (unique in the process), if there is a queue.
    pub approval_store: Option<String>,
}

/// The actor.
#[derive(Debug)]
pub struct EgressActor;

/// Its state.
#[derive(Debug)]
pub struct EgressState {
    info: EgressInfo,
    args: EgressArgs,
    serve: JoinHandle<()>,
}

/// Makes every approval store's name unique in the process.
static STORES: AtomicU64 = AtomicU64::new(0);

fn store_name(bottle: &str) -> String {
    format!("approvals:{bottle}:{}", STORES.fetch_add(1, Ordering::Relaxed))
}

fn read_routes(path: &Path, secrets: &Secrets) -> Result<RouteTable, EgressError> {
    let text = std::fs::read_to_string(path)
        .map_err(|source| EgressError::RoutesFile { path: path.to_path_buf(), source })?;
    Ok(RouteTable::parse(&text, &|name| secrets.lookup(name))?)
}

/// The CA is its own actor, linked to the proxy: it mints (and logs its fingerprint) in
/// its pre_start and dies with the proxy.
async fn mint_ca(
    settings: &EgressSettings,
    permitted: Vec<String>,
    supervisor: ActorCell,
) -> Result<Arc<CertificateAuthority>, ActorProcessingErr> {
    let config = CaConfig {
        lifetime: Duration::from_secs(settings.ca_days.max(1) * 24 * 3600),
        permitted,
        ..CaConfig::default()
    };
    let (ca_actor, _) = Actor::spawn_linked(None, CaActor, CaArgs { config }, supervisor).await?;
    Ok(ractor::call_t!(ca_actor, CaMsg::Authority, 5_000)?)
}

/// The first start mints the CA and generates placeholders; a restart reuses them (the
/// CA only while the intercepted hosts are unchanged).
async fn ca_and_placeholders(
    args: &EgressArgs,
    table: &RouteTable,
    supervisor: ActorCell,
) -> Result<(Arc<CertificateAuthority>, Placeholders), ActorProcessingErr> {
    let permitted = table.bumped_hosts();
    let earlier = {
        let kept = args.kept.lock().unwrap_or_else(|p| p.into_inner());
        kept.ca.as_ref().filter(|(hosts, _)| *hosts == permitted).map(|(_, ca)| ca.clone())
    };
    let ca = match earlier {
        Some(ca) => {
            tracing::info!(fingerprint = %ca.fingerprint(), "Kept the bottle CA across the restart.");
            ca
        }
        None => mint_ca(&args.settings, permitted.clone(), supervisor).await?,
    };
    let mut kept = args.kept.lock().unwrap_or_else(|p| p.into_inner());
    let placeholders = match &kept.placeholders {
        Some(earlier) => Placeholders::generate(table).keeping(earlier),
        None => Placeholders::generate(table),
    };
    kept.ca = Some((permitted, ca.clone()));
    kept.placeholders = Some(placeholders.clone());
    Ok((ca, placeholders))
}

/// A certificate in PEM.
fn pem(der: &[u8]) -> String {
    let mut b64 = bottle_pipelock::base64_encode(der, false);
    while !b64.len().is_multiple_of(4) {
        b64.push('=');
    }
    let mut out = String::from("-----BEGIN CERTIFICATE-----\n");
    for line in b64.as_bytes().chunks(64) {
        out.push_str(&String::from_utf8_lossy(line));
        out.push('\n');
    }
    out.push_str("-----END CERTIFICATE-----\n");
    out
}

/// Writes `ca.pem`, `bundle.pem` and `placeholders.env` into `dir`.
fn write_client_files(
    dir: &Path,
    ca: &CertificateAuthority,
    placeholders: &Placeholders,
) -> Result<ClientFiles, EgressError> {
    let write = |name: &str, text: &str| {
        let path = dir.join(name);
        std::fs::create_dir_all(dir)
            .and_then(|()| std::fs::write(&path, text))
            .map(|()| path.clone())
            .map_err(|source| EgressError::ClientFile { path, source })
    };
    // A bundle replaces a client's whole trust store: the machine's roots plus ours, so
    // passthrough origins still verify.
    let mut bundle: String = crate::proxy::machine_roots().iter().map(|c| pem(c)).collect();
    bundle.push_str(ca.cert_pem());
    let env: String = placeholders.env().into_iter().map(|(k, v)| format!("{k}={v}\n")).collect();
    Ok(ClientFiles {
        ca: write("ca.pem", ca.cert_pem())?,
        bundle: write("bundle.pem", &bundle)?,
        placeholders: write("placeholders.env", &env)?,
    })
}

/// pipelock's settings: with a queue directory, holds go to a store with a fresh name
/// (returned), and fingerprints are keyed by the queue's key so earlier approvals match.
fn dlp_config(
    settings: &EgressSettings,
    limits: &Limits,
) -> Result<(DlpConfig, Option<String>), EgressError> {
    let mut dlp = DlpConfig {
        bottle: settings.bottle.clone(),
        max_request_body: limits.max_request_body,
        max_response_body: limits.max_response_body,
        ..DlpConfig::default()
    };
    let Some(dir) = &settings.approvals else { return Ok((dlp, None)) };
    dlp.fingerprint_key = fingerprint_key(dir)?;
    let name = store_name(&settings.bottle);
    dlp.approvals = Some(ApprovalClient {
        store: name.clone(),
        timeout: Duration::from_secs(settings.hold_timeout_seconds),
    });
    Ok((dlp, Some(name)))
}

/// Binds the address, or accepts on the inherited descriptor (adopted on the first
/// start, duplicated for each start after).
fn open_listener(args: &EgressArgs) -> Result<tokio::net::TcpListener, EgressError> {
    let listen = args.settings.listen;
    let opened = match listen {
        Listen::Addr(addr) => args.inherited.bind(addr),
        Listen::Fd(fd) => args.inherited.inherited(fd),
    };
    opened.map_err(|source| EgressError::Listen { listen: listen.to_string(), source })
}

async fn spawn_store(
    name: &str,
    args: &EgressArgs,
    egress: &Egress,
    supervisor: ActorCell,
) -> Result<(), ActorProcessingErr> {
    let Some(dir) = &args.settings.approvals else { return Ok(()) };
    let store_args = egress.approval_store_args(dir, &args.settings.bottle);
    Actor::spawn_linked(Some(name.to_string()), ApprovalStore, store_args, supervisor).await?;
    Ok(())
}

impl Actor for EgressActor {
    type Msg = EgressMsg;
    type State = EgressState;
    type Arguments = EgressArgs;

    async fn pre_start(
        &self,
        myself: ActorRef<EgressMsg>,
        args: EgressArgs,
    ) -> Result<EgressState, ActorProcessingErr> {
        let settings = &args.settings;
        let table = read_routes(&settings.routes, &args.secrets)?;
        let (ca, placeholders) = ca_and_placeholders(&args, &table, myself.get_cell()).await?;
        let files = match &settings.ca_out {
            Some(dir) => Some(write_client_files(dir, &ca, &placeholders)?),
            None => None,
        };
        let (dlp, approval_store) = dlp_config(settings, &args.limits)?;
        let config = EgressConfig {
            upstream_ca: settings.upstream_ca.clone(),
            audit_log: settings.audit_log.clone(),
            connect_timeout: args.limits.connect_timeout,
            response_timeout: args.limits.response_timeout,
            dlp,
        };
        let egress = Egress::new(table, ca.clone(), placeholders.clone(), config)?;
        if let Some(name) = &approval_store {
            // A store linked here, restarted if it dies (the journal keeps every hold);
            // replaying the journal puts approvals from earlier in the bottle's life back
            // on the safelist before the first request is served.
            spawn_store(name, &args, &egress, myself.get_cell()).await?;
        }
        let listener = open_listener(&args)?;
        let listening = listener.local_addr()?;
        tracing::info!(%listening, "Egress proxy listening.");
        let serving = egress.clone();
        let serve = tokio::spawn(async move { serving.serve(listener).await });
        let info = EgressInfo { listening, egress, ca, placeholders, files, approval_store };
        Ok(EgressState { info, args, serve })
    }

    async fn handle_supervisor_evt(
        &self,
        myself: ActorRef<EgressMsg>,
        event: SupervisionEvent,
        state: &mut EgressState,
    ) -> Result<(), ActorProcessingErr> {
        let Some(ended) = bottle_runtime::exit::linked_end(&event) else { return Ok(()) };
        let why = ended.why;
        match &state.info.approval_store {
            Some(name) if ended.name.as_deref() == Some(name.as_str()) => {
                // Held requests wait on the store by name: a new one replays the journal
                // and answers them.
                tracing::warn!(%why, "The approval store stopped; restarting it.");
                spawn_store(name, &state.args, &state.info.egress, myself.get_cell()).await
            }
            // The CA (or anything else linked here) is not restartable on its own: the
            // proxy's TLS depends on it, so the proxy fails and its supervisor decides.
            _ => Err(format!("a linked actor of the egress proxy ended: {why}").into()),
        }
    }

    async fn handle(
        &self,
        _: ActorRef<EgressMsg>,
        msg: EgressMsg,
        state: &mut EgressState,
    ) -> Result<(), ActorProcessingErr> {
        match msg {
            EgressMsg::Reload(reply) => {
                let result = read_routes(&state.args.settings.routes, &state.args.secrets)
                    .and_then(|table| state.info.egress.reload(table))
                    .map(|()| "routes reloaded".to_string())
                    .map_err(|e| crate::error_chain(&e));
                if let Err(why) = &result {
                    tracing::warn!(%why, "Routes reload failed; keeping the current table.");
                }
                if !reply.is_closed() {
                    let _ = reply.send(result);
                }
            }
            EgressMsg::Describe(reply) => {
                let _ = reply.send(state.info.clone());
            }
        }
        Ok(())
    }

    async fn post_stop(
        &self,
        _: ActorRef<EgressMsg>,
        state: &mut EgressState,
    ) -> Result<(), ActorProcessingErr> {
        state.serve.abort();
        state.info.egress.shutdown();
        Ok(())
    }
}

/// A proxy started on its own, with no supervisor above it (`bottle proxy`, tests).
#[derive(Debug)]
pub struct Standalone {
    /// The actor (reload, stop).
    pub actor: ActorRef<EgressMsg>,
    /// Ends when the actor does.
    pub handle: JoinHandle<()>,
    /// What it is serving.
    pub info: EgressInfo,
}

/// Starts [`EgressActor`] with no supervisor: the same assembly as the builtin, its
/// approval store linked and restarted by the actor like there.
pub async fn start_standalone(args: EgressArgs) -> Result<Standalone, EgressError> {
    let (actor, handle) = Actor::spawn(None, EgressActor, args)
        .await
        .map_err(|e| EgressError::Actor(crate::error_chain(&e)))?;
    let info = ractor::call_t!(actor, EgressMsg::Describe, 5_000)
        .map_err(|e| EgressError::Actor(e.to_string()))?;
    Ok(Standalone { actor, handle, info })
}

/// Starts [`EgressActor`]s for a supervisor (bottle-init's builtin `egress`).
#[derive(Debug)]
pub struct EgressFactory {
    args: EgressArgs,
}

impl EgressFactory {
    /// A factory for the proxy these settings describe, injecting these secrets.
    pub fn new(settings: EgressSettings, secrets: Secrets) -> EgressFactory {
        EgressFactory { args: EgressArgs::new(settings, secrets) }
    }

    /// Like [`EgressFactory::new`] from prepared arguments (limits set).
    pub fn from_args(args: EgressArgs) -> EgressFactory {
        EgressFactory { args }
    }
}

#[async_trait::async_trait]
impl bottle_runtime::spec::ActorFactory for EgressFactory {
    async fn spawn_linked(
        &self,
        _name: String,
        supervisor: ActorCell,
    ) -> Result<ActorCell, SpawnErr> {
        Ok(Actor::spawn_linked(None, EgressActor, self.args.clone(), supervisor)
            .await?
            .0
            .get_cell())
    }

    async fn reload(&self, cell: &ActorCell) -> Result<String, String> {
        let actor: ActorRef<EgressMsg> = cell.clone().into();
        ractor::call_t!(actor, EgressMsg::Reload, 30_000).map_err(|e| e.to_string())?
    }
}
