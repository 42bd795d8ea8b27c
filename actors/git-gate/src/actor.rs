//! The git gate as a supervised actor (bottle-init's builtin daemon `git-gate`).
//!
//! Hazard: a gate that starts half-configured serves some repositories with the wrong
//! credentials or none. `pre_start` does every fallible step (validate every repository,
//! resolve every `token_ref`, write the pinned known-hosts files, create the mirrors,
//! open the approval queue, bind the port) so any failure is a start failure the
//! supervisor sees, and nothing is served before all of it succeeded.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::Path;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bottle_pipelock::approvals::{ApprovalClient, ApprovalStore, StoreArgs, fingerprint_key};
use bottle_pipelock::{FingerprintKey, KnownSecret, Pipelock, Safelist};
use bottle_protocol::secrets::Secrets;
use ractor::{
    Actor, ActorCell, ActorProcessingErr, ActorRef, RpcReplyPort, SpawnErr, SupervisionEvent,
};
use tokio::task::JoinHandle;

use crate::GitGateError;
use crate::gate::GitGate;
use crate::mirror::Mirror;
use crate::process::Git;
use crate::scan::ScanLimits;
use crate::settings::{GitGateSettings, Listen, Scheme};
use crate::upstream::{SshPin, Upstream, known_hosts_line};

/// Everything the git gate actor can be asked. Closed on purpose.
#[derive(Debug)]
pub enum GitGateMsg {
    /// The address the gate accepts on (the bound port when `:0` was asked).
    Listening(RpcReplyPort<SocketAddr>),
}

/// What the actor starts from.
#[derive(Debug, Clone)]
pub struct GitGateArgs {
    /// The settings.
    pub settings: GitGateSettings,
    /// Secret values by name: `token_ref`s name them, and all of them are known secrets
    /// the push scanner looks for.
    pub secrets: Secrets,
    /// Where the bound address is reported (the factory reads it).
    listening: Arc<Mutex<Option<SocketAddr>>>,
    /// The socket adopted from [`Listen::Fd`], once, on the first start; clones share
    /// it, so a restart accepts on the same one.
    inherited: bottle_runtime::listener::ListenerSlot,
}

/// The actor.
#[derive(Debug)]
pub struct GitGateActor;

/// Its state.
#[derive(Debug)]
pub struct GitGateState {
    args: GitGateArgs,
    listening: SocketAddr,
    serve: JoinHandle<()>,
    store: Option<String>,
}

static STORES: AtomicU64 = AtomicU64::new(0);

fn io_err(path: &Path) -> impl FnOnce(std::io::Error) -> GitGateError + '_ {
    move |source| GitGateError::Io { path: path.to_path_buf(), source }
}

fn write_private(path: &Path, contents: &str) -> Result<(), GitGateError> {
    use std::io::Write;
    use std::os::unix::fs::OpenOptionsExt;
    let mut file = std::fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(0o600)
        .open(path)
        .map_err(io_err(path))?;
    file.write_all(contents.as_bytes()).map_err(io_err(path))
}

/// Builds the gate from settings and secrets (everything but the socket).
pub async fn build_gate(
    settings: &GitGateSettings,
    secrets: &Secrets,
    approvals: Option<ApprovalClient>,
    key: &FingerprintKey,
) -> Result<GitGate, GitGateError> {
    let urls = crate::settings::validate(settings)?;
    let reaper = bottle_runtime::process_reaper().map_err(|e| GitGateError::Io {
        path: settings.root.clone(),
        source: std::io::Error::other(e.to_string()),
    })?;
    let gate_dir = settings.root.join(".gate");
    let home = gate_dir.join("home");
    let ssh_dir = gate_dir.join("ssh");
    for dir in [&settings.root, &home, &ssh_dir] {
        std::fs::create_dir_all(dir).map_err(io_err(dir))?;
    }
    let git = Git::new(reaper, settings.git.clone(), settings.path.clone(), home);
    let upstream_timeout = Duration::from_secs(settings.upstream_timeout_seconds.max(1));
    let mut mirrors = BTreeMap::new();
    for (name, url) in urls {
        let repo = &settings.repos[&name];
        let basic = match &repo.token_ref {
            Some(token_ref) => {
                let secret = secrets.get(token_ref).ok_or_else(|| GitGateError::MissingSecret {
                    name: name.clone(),
                    token_ref: token_ref.clone(),
                })?;
                Some((repo.username.clone(), secret.clone()))
            }
            None => None,
        };
        let ssh = match (url.scheme, &repo.identity, &repo.host_key) {
            (Scheme::Ssh, Some(identity), Some(host_key)) => {
                let known_hosts = ssh_dir.join(format!("{name}.known_hosts"));
                write_private(&known_hosts, &known_hosts_line(&url, host_key))?;
                Some(SshPin { identity: identity.clone(), known_hosts })
            }
            _ => None,
        };
        let upstream = Upstream {
            url,
            basic,
            ssh,
            ca_file: settings.upstream_ca.clone(),
            stall_seconds: settings.upstream_timeout_seconds.max(1),
        };
        let mirror = Mirror {
            name: name.clone(),
            dir: settings.root.join(format!("{name}.git")),
            upstream,
            upstream_timeout,
            refs_lock: tokio::sync::Mutex::new(()),
            push_lock: tokio::sync::Mutex::new(()),
        };
        mirror.ensure(&git).await?;
        mirrors.insert(name, Arc::new(mirror));
    }
    let known: Vec<KnownSecret> = secrets
        .names()
        .filter_map(|n| {
            Some(KnownSecret { name: n.to_string(), value: secrets.get(n)?.expose().to_string() })
        })
        .collect();
    let pipelock = Pipelock::with_safelist(&[], &known, Safelist::default(), key)
        .map_err(|e| GitGateError::Repo { name: "-".into(), problem: e.to_string() })?;
    Ok(GitGate {
        git,
        mirrors,
        pipelock: Arc::new(pipelock),
        limits: ScanLimits {
            max_blob: settings.max_blob_bytes,
            max_total: settings.max_scan_bytes,
            timeout: Duration::from_secs(settings.scan_timeout_seconds.max(1)),
        },
        max_body: settings.max_body_bytes,
        serve_timeout: Duration::from_secs(settings.serve_timeout_seconds.max(1)),
        approvals,
        bottle: settings.bottle.clone(),
        scrub: known.iter().map(|k| k.value.clone()).collect(),
    })
}

/// Binds the address, or accepts on the inherited descriptor (adopted on the first
/// start, duplicated for each start after).
fn open_listener(args: &GitGateArgs) -> Result<tokio::net::TcpListener, GitGateError> {
    let listen = args.settings.listen;
    let opened = match listen {
        Listen::Addr(addr) => args.inherited.bind(addr),
        Listen::Fd(fd) => args.inherited.inherited(fd),
    };
    opened.map_err(|source| GitGateError::Bind { listen: listen.to_string(), source })
}

async fn spawn_store(
    name: &str,
    args: &GitGateArgs,
    supervisor: ActorCell,
) -> Result<(), ActorProcessingErr> {
    let Some(dir) = &args.settings.approvals else { return Ok(()) };
    let store_args = StoreArgs {
        dir: dir.clone(),
        on_approve: None,
        bottle: Some(args.settings.bottle.clone()),
    };
    Actor::spawn_linked(Some(name.to_string()), ApprovalStore, store_args, supervisor).await?;
    Ok(())
}

impl Actor for GitGateActor {
    type Msg = GitGateMsg;
    type State = GitGateState;
    type Arguments = GitGateArgs;

    async fn pre_start(
        &self,
        myself: ActorRef<GitGateMsg>,
        args: GitGateArgs,
    ) -> Result<GitGateState, ActorProcessingErr> {
        let settings = &args.settings;
        let (key, approvals, store) = match &settings.approvals {
            Some(dir) => {
                let name = format!(
                    "approvals:git-gate:{}:{}",
                    settings.bottle,
                    STORES.fetch_add(1, Ordering::Relaxed)
                );
                let client = ApprovalClient {
                    store: name.clone(),
                    timeout: Duration::from_secs(settings.hold_timeout_seconds),
                };
                (fingerprint_key(dir)?, Some(client), Some(name))
            }
            None => (FingerprintKey::random(), None, None),
        };
        let gate = build_gate(settings, &args.secrets, approvals, &key).await?;
        if let Some(name) = &store {
            spawn_store(name, &args, myself.get_cell()).await?;
        }
        let listener = open_listener(&args)?;
        let listening = listener
            .local_addr()
            .map_err(|source| GitGateError::Bind { listen: settings.listen.to_string(), source })?;
        tracing::info!(%listening, repos = gate.mirrors.len(), "Git gate listening.");
        *args.listening.lock().unwrap_or_else(|p| p.into_inner()) = Some(listening);
        let serve = tokio::spawn(crate::server::serve(Arc::new(gate), listener));
        Ok(GitGateState { args, listening, serve, store })
    }

    async fn handle(
        &self,
        _: ActorRef<GitGateMsg>,
        msg: GitGateMsg,
        state: &mut GitGateState,
    ) -> Result<(), ActorProcessingErr> {
        match msg {
            GitGateMsg::Listening(reply) => {
                let _ = reply.send(state.listening);
            }
        }
        Ok(())
    }

    async fn handle_supervisor_evt(
        &self,
        myself: ActorRef<GitGateMsg>,
        event: SupervisionEvent,
        state: &mut GitGateState,
    ) -> Result<(), ActorProcessingErr> {
        let Some(ended) = bottle_runtime::exit::linked_end(&event) else { return Ok(()) };
        let why = ended.why;
        match &state.store {
            Some(name) if ended.name.as_deref() == Some(name.as_str()) => {
                // Held pushes wait on the store by name: a new one replays the journal.
                tracing::warn!(%why, "The git gate's approval store stopped; restarting it.");
                spawn_store(name, &state.args, myself.get_cell()).await
            }
            _ => Err(format!("a linked actor of the git gate ended: {why}").into()),
        }
    }

    async fn post_stop(
        &self,
        _: ActorRef<GitGateMsg>,
        state: &mut GitGateState,
    ) -> Result<(), ActorProcessingErr> {
        state.serve.abort();
        Ok(())
    }
}

/// Starts [`GitGateActor`]s for a supervisor.
#[derive(Debug)]
pub struct GitGateFactory {
    args: GitGateArgs,
}

impl GitGateFactory {
    /// A factory for the gate these settings describe, with these secrets.
    pub fn new(settings: GitGateSettings, secrets: Secrets) -> GitGateFactory {
        GitGateFactory {
            args: GitGateArgs {
                settings,
                secrets,
                listening: Arc::default(),
                inherited: Default::default(),
            },
        }
    }

    /// Where the last started gate accepts connections (`None` before the first start).
    pub fn listening(&self) -> Option<SocketAddr> {
        *self.args.listening.lock().unwrap_or_else(|p| p.into_inner())
    }
}

#[async_trait::async_trait]
impl bottle_runtime::spec::ActorFactory for GitGateFactory {
    async fn spawn_linked(
        &self,
        _name: String,
        supervisor: ActorCell,
    ) -> Result<ActorCell, SpawnErr> {
        Ok(Actor::spawn_linked(None, GitGateActor, self.args.clone(), supervisor)
            .await?
            .0
            .get_cell())
    }
}
