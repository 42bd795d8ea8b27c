//! `bottle proxy`: the egress firewall on its own.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use bottle_ca::{CaConfig, CertificateAuthority};
use bottle_egress::routes::RouteTable;
use bottle_egress::{DlpConfig, Egress, EgressConfig, Placeholders};
use bottle_pipelock::approvals::{ApprovalClient, ApprovalStore, fingerprint_key};

/// Arguments of `bottle proxy`.
#[derive(Debug, clap::Args)]
pub(crate) struct ProxyArgs {
    /// The routes file (YAML, the reference system's schema).
    #[arg(long)]
    routes: PathBuf,
    /// Where to listen.
    #[arg(long, default_value = "127.0.0.1:9099")]
    listen: SocketAddr,
    /// Write the CA certificate (never its key) to DIR/ca.pem.
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

fn load(path: &PathBuf) -> anyhow::Result<RouteTable> {
    let text =
        std::fs::read_to_string(path).with_context(|| format!("cannot read {}", path.display()))?;
    Ok(RouteTable::parse(&text, &|name| std::env::var(name).ok())?)
}

#[allow(clippy::print_stdout)] // the environment for clients is this command's output
pub(crate) async fn run(args: ProxyArgs) -> anyhow::Result<ExitCode> {
    let table = load(&args.routes)?;
    let ca = CertificateAuthority::mint(CaConfig {
        lifetime: Duration::from_secs(args.ca_days.max(1) * 24 * 3600),
        permitted: table.bumped_hosts(),
        ..CaConfig::default()
    })?;
    let ca = Arc::new(ca);
    tracing::info!(fingerprint = %ca.fingerprint(), "Minted the bottle CA.");
    let placeholders = Placeholders::generate(&table);
    let mut dlp = DlpConfig { bottle: "proxy".into(), ..DlpConfig::default() };
    let name = format!("approvals:{}", args.listen);
    if let Some(dir) = &args.approvals {
        dlp.fingerprint_key = fingerprint_key(dir)?;
        dlp.approvals = Some(ApprovalClient {
            store: name.clone(),
            timeout: Duration::from_secs(args.hold_timeout),
        });
    }
    let config = EgressConfig {
        upstream_ca: args.upstream_ca.clone(),
        audit_log: args.audit_log.clone(),
        dlp,
        ..EgressConfig::default()
    };
    let egress = Egress::new(table, ca.clone(), placeholders.clone(), config)?;
    let mut store = None;
    if let Some(dir) = &args.approvals {
        let store_args = egress.approval_store_args(dir, "proxy");
        let (actor, _) = ractor::Actor::spawn(Some(name), ApprovalStore, store_args)
            .await
            .map_err(|e| anyhow::anyhow!("cannot start the approval queue: {e}"))?;
        store = Some(actor);
        tracing::info!(dir = %dir.display(), "Holding requests with secrets for `bottle approve`.");
    }
    let listener = tokio::net::TcpListener::bind(args.listen)
        .await
        .with_context(|| format!("cannot listen on {}", args.listen))?;
    let local = listener.local_addr()?;
    let ca_path = match &args.ca_out {
        Some(dir) => {
            std::fs::create_dir_all(dir)?;
            let path = dir.join("ca.pem");
            std::fs::write(&path, ca.cert_pem())?;
            // SSL_CERT_FILE replaces a client's whole trust store: give it the machine's
            // roots plus ours, so passthrough origins still verify.
            let system = std::env::var_os("SSL_CERT_FILE")
                .map(PathBuf::from)
                .unwrap_or_else(|| PathBuf::from("/etc/ssl/certs/ca-certificates.crt"));
            let mut bundle = std::fs::read_to_string(&system).unwrap_or_default();
            if !bundle.is_empty() && !bundle.ends_with('\n') {
                bundle.push('\n');
            }
            bundle.push_str(ca.cert_pem());
            std::fs::write(dir.join("bundle.pem"), bundle)?;
            Some(path)
        }
        None => None,
    };
    let proxy = format!("http://{local}");
    println!("# bottle proxy listening on {local}; CA SHA-256 {}", ca.fingerprint());
    for var in ["HTTP_PROXY", "HTTPS_PROXY", "http_proxy", "https_proxy"] {
        println!("export {var}={proxy}");
    }
    if let Some(path) = &ca_path {
        let bundle = path.with_file_name("bundle.pem");
        for var in ["SSL_CERT_FILE", "CURL_CA_BUNDLE", "REQUESTS_CA_BUNDLE"] {
            println!("export {var}={}", bundle.display());
        }
        for var in ["NODE_EXTRA_CA_CERTS", "CODEX_CA_CERTIFICATE"] {
            println!("export {var}={}", path.display());
        }
    } else {
        println!("# pass --ca-out DIR to write the CA certificate for clients");
    }
    for (var, placeholder) in placeholders.env() {
        println!("export {var}={placeholder}");
    }
    let serve = {
        let egress = egress.clone();
        tokio::spawn(async move { egress.serve(listener).await })
    };
    let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())?;
    let mut int = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::interrupt())?;
    let mut hup = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::hangup())?;
    loop {
        tokio::select! {
            _ = term.recv() => break,
            _ = int.recv() => break,
            _ = hup.recv() => match load(&args.routes).map_err(|e| format!("{e:#}")).and_then(|t| egress.reload(t).map_err(|e| e.to_string())) {
                Ok(()) => tracing::info!("Routes reloaded."),
                Err(why) => tracing::warn!(%why, "Reload failed; keeping the current routes."),
            },
        }
    }
    serve.abort();
    if let Some(store) = store {
        store.stop(None);
    }
    Ok(ExitCode::SUCCESS)
}
