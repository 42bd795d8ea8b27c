//! `bottle`, the host launcher: `run` (a bottle on the local backend), `demo` (a real
//! bottle against a fake API), `ps`, `logs`, `exec`, `stop`, `cleanup`, `doctor`, `proxy`
//! (the egress firewall on its own), the approval queue (`approvals`, `approve`,
//! `reject`) and `tree-demo` (a supervision tree). Thin main: parse, call the library,
//! print, and map the outcome to an exit code (only here).

use std::process::ExitCode;

use clap::{Parser, Subcommand};

mod approvals;
mod commands;
mod proxy;
mod tree_demo;

/// Run AI coding agents in throw-away sandboxes behind a sidecar they cannot touch.
#[derive(Debug, Parser)]
#[command(name = "bottle", version, about)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Run a bottle: the agent command in a sandbox whose only way out is the sidecar.
    Run(commands::RunArgs),
    /// Launch a real bottle against a fake API on this machine and show, from inside,
    /// what the sidecar allows and refuses (no Docker, no network needed).
    Demo,
    /// List bottles (running and dead ones; `--all` adds exited ones).
    Ps {
        /// Include exited bottles.
        #[arg(long)]
        all: bool,
        /// JSON output.
        #[arg(long)]
        json: bool,
    },
    /// Show a bottle's sidecar log.
    Logs {
        /// The bottle's id (from `bottle ps`).
        id: String,
        /// Keep printing as the log grows, until the bottle ends.
        #[arg(long, short)]
        follow: bool,
    },
    /// Run another command in a running bottle, with the same confinement.
    Exec {
        /// The bottle's id.
        id: String,
        /// The command.
        #[arg(last = true, required = true)]
        command: Vec<String>,
    },
    /// Stop a running bottle (its launcher tears it down).
    Stop {
        /// The bottle's id.
        id: String,
    },
    /// Remove what crashed launches left behind (processes, state); nothing else.
    Cleanup {
        /// Say what would be removed, remove nothing.
        #[arg(long)]
        dry_run: bool,
    },
    /// Which backends work on this machine, and for each that does not, why and how to fix it.
    Doctor {
        /// JSON output.
        #[arg(long)]
        json: bool,
    },
    /// Run a demo supervision tree: a daemon crashes and is restarted, an in-process
    /// actor and a nested supervisor run beside it; then a graceful shutdown.
    TreeDemo {
        /// How long to let the tree run before shutting it down (Ctrl-C stops sooner).
        #[arg(long, default_value_t = 7)]
        seconds: u64,
        /// Print the full JSON exit report.
        #[arg(long)]
        json: bool,
    },
    /// Run only the egress firewall: a default-deny HTTP/HTTPS proxy with TLS
    /// interception by a fresh name-constrained CA, token injection, SSRF and DoH
    /// blocking. Prints where the CA certificate is and the environment a client needs,
    /// then serves until SIGTERM; SIGHUP reloads the routes file.
    Proxy(proxy::ProxyArgs),
    /// List requests pipelock holds for approval (pending ones unless --all).
    Approvals {
        #[command(flatten)]
        dir: approvals::QueueDir,
        /// Include decided holds.
        #[arg(long)]
        all: bool,
        /// JSON output.
        #[arg(long)]
        json: bool,
    },
    /// Release a held request; its secrets are safelisted for the bottle's lifetime.
    Approve {
        /// The hold's id (from `bottle approvals`).
        id: String,
        #[command(flatten)]
        dir: approvals::QueueDir,
        /// Why (recorded in the journal).
        #[arg(long)]
        reason: Option<String>,
    },
    /// Refuse a held request (the agent gets a 403 with the reason).
    Reject {
        /// The hold's id (from `bottle approvals`).
        id: String,
        #[command(flatten)]
        dir: approvals::QueueDir,
        /// Why (required; recorded and shown to the agent).
        #[arg(long)]
        reason: String,
    },
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info,ractor=warn")),
        )
        .with_writer(std::io::stderr)
        .with_target(false)
        .init();
    let runtime =
        match tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build() {
            Ok(runtime) => runtime,
            Err(err) => {
                tracing::error!(error = %err, "Cannot start the async runtime.");
                return ExitCode::from(1);
            }
        };
    let result = runtime.block_on(async {
        match cli.command {
            Command::Run(args) => commands::run(args).await,
            Command::Demo => commands::demo().await,
            Command::Ps { all, json } => commands::ps(all, json),
            Command::Logs { id, follow } => commands::logs(&id, follow).await,
            Command::Exec { id, command } => commands::exec(&id, command).await,
            Command::Stop { id } => commands::stop(&id).await,
            Command::Cleanup { dry_run } => commands::cleanup(dry_run),
            Command::Doctor { json } => commands::doctor(json).await,
            Command::TreeDemo { seconds, json } => tree_demo::run(seconds, json).await,
            Command::Proxy(args) => proxy::run(args).await,
            Command::Approvals { dir, all, json } => approvals::list(&dir, all, json),
            Command::Approve { id, dir, reason } => {
                approvals::decide(&dir, &id, bottle_pipelock::approvals::Decision::Approve, reason)
            }
            Command::Reject { id, dir, reason } => approvals::decide(
                &dir,
                &id,
                bottle_pipelock::approvals::Decision::Reject,
                Some(reason),
            ),
        }
    });
    match result {
        Ok(code) => code,
        Err(err) => {
            tracing::error!("{err:#}");
            ExitCode::from(1)
        }
    }
}
