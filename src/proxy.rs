//! `bottle proxy`: the egress firewall on its own, assembled exactly as bottle-init's
//! builtin (`bottle_egress::EgressActor`); this file maps flags to settings, resolves the
//! routes' secrets from this process's environment, and prints what a client needs.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::Context;
use bottle_egress::routes::RouteTable;
use bottle_egress::{EgressArgs, EgressInfo, EgressMsg, EgressSettings, Listen, Secret, Secrets};

/// Arguments of `bottle proxy`.
#[derive(Debug, clap::Args)]
pub(crate) struct ProxyArgs {
    /// The routes file (YAML, the reference system's schema).
    #[arg(long)]
    routes: PathBuf,
    /// Where to listen.
    #[arg(long, default_value = "127.0.0.1:9099")]
    listen: SocketAddr,
    /// Write DIR/ca.pem (the CA certificate, never its key), DIR/bundle.pem (the
    /// machine's roots plus the CA) and DIR/placeholders.env.
    #[arg(long, value_name = "DIR")]
    ca_out: Option<PathBuf>,
    /// Extra CA certificates (PEM) to trust for upstream servers.
    #[arg(long)]
    upstream_ca: Option<PathBuf>,
    /// Append one JSON line per decision here.
    #[arg(long)]
    audit_log: Option<PathBuf>,
    /// CA lifetime in days.
    #[arg(long, default_value_t = 7)]
    ca_days: u64,
    /// Hold requests with secrets in this approval queue directory (see `bottle
    /// approvals`); without it a hold is refused at once.
    #[arg(long, value_name = "DIR")]
    approvals: Option<PathBuf>,
    /// How long a held request waits for a decision.
    #[arg(long, default_value_t = 300)]
    hold_timeout: u64,
}

impl ProxyArgs {
    /// The flags as egress settings (`bottle` is `proxy` in approval requests).
    fn settings(&self) -> EgressSettings {
        EgressSettings {
            listen: Listen::Addr(self.listen),
            ca_out: self.ca_out.clone(),
            upstream_ca: self.upstream_ca.clone(),
            audit_log: self.audit_log.clone(),
            ca_days: self.ca_days,
            approvals: self.approvals.clone(),
            hold_timeout_seconds: self.hold_timeout,
            bottle: "proxy".into(),
            ..EgressSettings::new(&self.routes)
        }
    }
}

/// The secrets the routes name (`token_ref`), from this process's environment: the one
/// place a token is read from the environment. A missing one is left out, and the
/// routes parser names it.
fn secrets_from_env(routes: &std::path::Path) -> anyhow::Result<Secrets> {
    let text = std::fs::read_to_string(routes)
        .with_context(|| format!("cannot read {}", routes.display()))?;
    Ok(RouteTable::token_refs(&text)?
        .into_iter()
        .filter_map(|name| std::env::var(&name).ok().map(|value| (name, Secret::new(value))))
        .collect())
}

/// The `export` lines a client needs.
fn client_environment(info: &EgressInfo) -> Vec<String> {
    let proxy = format!("http://{}", info.listening);
    let mut lines = vec![format!(
        "# bottle proxy listening on {}; CA SHA-256 {}",
        info.listening,
        info.ca.fingerprint()
    )];
    for var in ["HTTP_PROXY", "HTTPS_PROXY", "http_proxy", "https_proxy"] {
        lines.push(format!("export {var}={proxy}"));
    }
    match &info.files {
        Some(files) => {
            for var in ["SSL_CERT_FILE", "CURL_CA_BUNDLE", "REQUESTS_CA_BUNDLE"] {
                lines.push(format!("export {var}={}", files.bundle.display()));
            }
            for var in ["NODE_EXTRA_CA_CERTS", "CODEX_CA_CERTIFICATE"] {
                lines.push(format!("export {var}={}", files.ca.display()));
            }
        }
        None => lines.push("# pass --ca-out DIR to write the CA certificate for clients".into()),
    }
    for (var, placeholder) in info.placeholders.env() {
        lines.push(format!("export {var}={placeholder}"));
    }
    lines
}

async fn reload(actor: &ractor::ActorRef<EgressMsg>) -> Result<String, String> {
    ractor::call_t!(actor, EgressMsg::Reload, 30_000).map_err(|e| e.to_string())?
}

#[allow(clippy::print_stdout)] // the environment for clients is this command's output
pub(crate) async fn run(args: ProxyArgs) -> anyhow::Result<ExitCode> {
    let secrets = secrets_from_env(&args.routes)?;
    let proxy = bottle_egress::start_standalone(EgressArgs::new(args.settings(), secrets)).await?;
    if let Some(dir) = &args.approvals {
        tracing::info!(dir = %dir.display(), "Holding requests with secrets for `bottle approve`.");
    }
    for line in client_environment(&proxy.info) {
        println!("{line}");
    }
    let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())?;
    let mut int = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::interrupt())?;
    let mut hup = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::hangup())?;
    let mut handle = proxy.handle;
    loop {
        tokio::select! {
            _ = term.recv() => break,
            _ = int.recv() => break,
            _ = &mut handle => anyhow::bail!("the egress proxy stopped"),
            // On failure the actor logged why and kept the current routes.
            _ = hup.recv() => if reload(&proxy.actor).await.is_ok() {
                tracing::info!("Routes reloaded.");
            },
        }
    }
    proxy.actor.stop(None);
    let _ = handle.await;
    Ok(ExitCode::SUCCESS)
}
