//! The egress proxy as a supervised actor (bottle-init's builtin daemon `egress`).
//!
//! Hazard: a reload that half-applies would leave the proxy with no table or the wrong
//! CA. `pre_start` does every fallible step (read and validate the routes, mint the CA,
//! bind the port) so a failure is a start failure the supervisor sees; a reload reads and
//! validates the new file first and swaps atomically, keeping the old table on any error.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use bottle_ca::{CaActor, CaArgs, CaConfig, CaMsg, CertificateAuthority};
use bottle_pipelock::approvals::{ApprovalClient, ApprovalStore, fingerprint_key};
use ractor::{
    Actor, ActorCell, ActorProcessingErr, ActorRef, RpcReplyPort, SpawnErr, SupervisionEvent,
};
use tokio::task::JoinHandle;

use crate::routes::RouteTable;
use crate::{DlpConfig, Egress, EgressConfig, Placeholders};

/// How the builtin runs (bottle-init's `[daemon.config]` table).
#[derive(Debug, Clone, serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub struct EgressSettings {
    /// The routes file.
    pub routes: PathBuf,
    /// Listen address.
    #[serde(default = "default_listen")]
    pub listen: SocketAddr,
    /// Directory for `ca.pem` (the certificate only) and `placeholders.env`.
    #[serde(default)]
    pub ca_out: Option<PathBuf>,
    /// Extra upstream CA certificates (PEM).
    #[serde(default)]
    pub upstream_ca: Option<PathBuf>,
    /// JSON-lines audit file.
    #[serde(default)]
    pub audit_log: Option<PathBuf>,
    /// CA lifetime in days.
    #[serde(default = "default_days")]
    pub ca_days: u64,
    /// pipelock's approval queue directory (bind-mounted from the host). Without it,
    /// requests a route would hold are refused at once.
    #[serde(default)]
    pub approvals: Option<PathBuf>,
    /// How long a held request waits for a decision, in seconds.
    #[serde(default = "default_hold_timeout")]
    pub hold_timeout_seconds: u64,
    /// This bottle's name in approval requests.
    #[serde(default = "default_bottle")]
    pub bottle: String,
}

fn default_hold_timeout() -> u64 {
    300
}

fn default_bottle() -> String {
    std::env::var("BOTTLE_NAME").unwrap_or_else(|_| "bottle".into())
}

fn default_listen() -> SocketAddr {
    SocketAddr::from(([0, 0, 0, 0], 9099))
}

fn default_days() -> u64 {
    7
}

/// Everything the egress actor can be asked. Closed on purpose.
#[derive(Debug)]
pub enum EgressMsg {
    /// Re-read and swap the routes file (SIGHUP via bottle-init, `ctl reload`).
    Reload(RpcReplyPort<Result<String, String>>),
}

/// The actor.
#[derive(Debug)]
pub struct EgressActor;

/// Its state.
#[derive(Debug)]
pub struct EgressState {
    egress: Egress,
    settings: EgressSettings,
    serve: JoinHandle<()>,
    /// The approval store's registered name, when there is a queue.
    store: Option<String>,
}

/// The approval store's registered name for an egress listening on `listen`.
pub fn approval_store_name(listen: &SocketAddr) -> String {
    format!("approvals:{listen}")
}

async fn spawn_store(
    name: &str,
    dir: &std::path::Path,
    bottle: &str,
    egress: &Egress,
    supervisor: ActorCell,
) -> Result<(), ActorProcessingErr> {
    let args = egress.approval_store_args(dir, bottle);
    Actor::spawn_linked(Some(name.to_string()), ApprovalStore, args, supervisor).await?;
    Ok(())
}

fn read_routes(path: &PathBuf) -> Result<RouteTable, String> {
    let text = std::fs::read_to_string(path)
        .map_err(|e| format!("cannot read {}: {e}", path.display()))?;
    RouteTable::parse(&text, &|name| std::env::var(name).ok()).map_err(|e| e.to_string())
}

impl Actor for EgressActor {
    type Msg = EgressMsg;
    type State = EgressState;
    type Arguments = EgressSettings;

    async fn pre_start(
        &self,
        myself: ActorRef<EgressMsg>,
        settings: EgressSettings,
    ) -> Result<EgressState, ActorProcessingErr> {
        let table = read_routes(&settings.routes)?;
        // The CA is its own actor, linked to this one: it mints (and logs its fingerprint)
        // in its pre_start and dies with the proxy.
        let config = CaConfig {
            lifetime: Duration::from_secs(settings.ca_days.max(1) * 24 * 3600),
            permitted: table.bumped_hosts(),
            ..CaConfig::default()
        };
        let (ca_actor, _) =
            Actor::spawn_linked(None, CaActor, CaArgs { config }, myself.get_cell()).await?;
        let ca: Arc<CertificateAuthority> = ractor::call_t!(ca_actor, CaMsg::Authority, 5_000)?;
        let placeholders = Placeholders::generate(&table);
        if let Some(dir) = &settings.ca_out {
            std::fs::create_dir_all(dir)?;
            std::fs::write(dir.join("ca.pem"), ca.cert_pem())?;
            let env: String =
                placeholders.env().into_iter().map(|(k, v)| format!("{k}={v}\n")).collect();
            std::fs::write(dir.join("placeholders.env"), env)?;
        }
        // pipelock's approval queue: a store actor linked here (restarted if it dies; the
        // journal keeps every hold), and the fingerprints approved earlier in this
        // bottle's life back on the safelist.
        let mut dlp = DlpConfig { bottle: settings.bottle.clone(), ..DlpConfig::default() };
        let mut store = None;
        if let Some(dir) = &settings.approvals {
            dlp.fingerprint_key = fingerprint_key(dir)?;
            let name = approval_store_name(&settings.listen);
            dlp.approvals = Some(ApprovalClient {
                store: name.clone(),
                timeout: Duration::from_secs(settings.hold_timeout_seconds),
            });
            store = Some(name);
        }
        let config = EgressConfig {
            upstream_ca: settings.upstream_ca.clone(),
            audit_log: settings.audit_log.clone(),
            dlp,
            ..EgressConfig::default()
        };
        let egress = Egress::new(table, ca, placeholders, config)?;
        if let (Some(name), Some(dir)) = (&store, &settings.approvals) {
            // Replays the journal: approvals from earlier in the bottle's life go back on
            // the safelist before the first request is served.
            spawn_store(name, dir, &settings.bottle, &egress, myself.get_cell()).await?;
        }
        let listener = tokio::net::TcpListener::bind(settings.listen).await?;
        tracing::info!(listen = %settings.listen, "Egress proxy listening.");
        let serving = egress.clone();
        let serve = tokio::spawn(async move { serving.serve(listener).await });
        Ok(EgressState { egress, settings, serve, store })
    }

    async fn handle_supervisor_evt(
        &self,
        myself: ActorRef<EgressMsg>,
        event: SupervisionEvent,
        state: &mut EgressState,
    ) -> Result<(), ActorProcessingErr> {
        let (cell, why) = match &event {
            SupervisionEvent::ActorTerminated(cell, _, reason) => {
                (cell, reason.clone().unwrap_or_else(|| "stopped".into()))
            }
            SupervisionEvent::ActorFailed(cell, err) => (cell, err.to_string()),
            _ => return Ok(()),
        };
        match (&state.store, &state.settings.approvals) {
            (Some(name), Some(dir)) if cell.get_name().as_deref() == Some(name.as_str()) => {
                // Held requests wait on the store by name: a new one replays the journal
                // and answers them.
                tracing::warn!(%why, "The approval store stopped; restarting it.");
                spawn_store(name, dir, &state.settings.bottle, &state.egress, myself.get_cell())
                    .await
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
                let result = read_routes(&state.settings.routes)
                    .and_then(|table| state.egress.reload(table).map_err(|e| e.to_string()))
                    .map(|()| "routes reloaded".to_string());
                if let Err(why) = &result {
                    tracing::warn!(%why, "Routes reload failed; keeping the current table.");
                }
                if !reply.is_closed() {
                    let _ = reply.send(result);
                }
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
        state.egress.shutdown();
        Ok(())
    }
}

/// Starts [`EgressActor`]s for a supervisor.
#[derive(Debug)]
pub struct EgressFactory {
    /// The settings every start uses.
    pub settings: EgressSettings,
}

#[async_trait::async_trait]
impl bottle_runtime::spec::ActorFactory for EgressFactory {
    async fn spawn_linked(
        &self,
        _name: String,
        supervisor: ActorCell,
    ) -> Result<ActorCell, SpawnErr> {
        Ok(Actor::spawn_linked(None, EgressActor, self.settings.clone(), supervisor)
            .await?
            .0
            .get_cell())
    }

    async fn reload(&self, cell: &ActorCell) -> Result<String, String> {
        let actor: ActorRef<EgressMsg> = cell.clone().into();
        ractor::call_t!(actor, EgressMsg::Reload, 30_000).map_err(|e| e.to_string())?
    }
}
