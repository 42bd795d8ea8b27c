//! `bottle-init`: PID 1 of the bottle sidecar. Reaps every process, turns signals into
//! messages, supervises the sidecar's daemons, and exits by docs/exit-codes.md.
//! Thin main: parse, run, map the outcome to an exit code (only here).

use std::ffi::OsString;
use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand, ValueEnum};

mod builtin;
mod config;
mod control;
mod events;
mod init;
mod secrets;

/// PID 1 of the bottle sidecar.
#[derive(Debug, Parser)]
#[command(name = "bottle-init", version, about, args_conflicts_with_subcommands = true)]
struct Cli {
    #[command(subcommand)]
    command: Option<Command>,
    /// Daemons to supervise (TOML). Also `BOTTLE_INIT_CONFIG`.
    #[arg(long, env = "BOTTLE_INIT_CONFIG")]
    config: Option<PathBuf>,
    /// Grace budget in seconds from SIGTERM to exit (overrides the config; default 8).
    #[arg(long)]
    grace: Option<f64>,
    /// Control socket path (overrides the config; empty disables it).
    #[arg(long)]
    control_socket: Option<PathBuf>,
    /// Write the JSON exit report here (overrides the config).
    #[arg(long)]
    exit_report: Option<PathBuf>,
    /// Format of bottle-init's own log lines (child lines are always `[name] line`).
    #[arg(long, value_enum, default_value_t = LogFormat::Text)]
    log_format: LogFormat,
    /// Single-program mode, tini style: run this program as the only daemon.
    #[arg(last = true)]
    program: Vec<OsString>,
}

#[derive(Debug, Clone, Copy, ValueEnum)]
enum LogFormat {
    Text,
    Json,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Talk to a running bottle-init over its control socket.
    Ctl {
        /// The control socket.
        #[arg(long, default_value = config::DEFAULT_CONTROL_SOCKET)]
        socket: PathBuf,
        #[command(subcommand)]
        action: CtlAction,
    },
}

#[derive(Debug, Subcommand)]
enum CtlAction {
    /// Every daemon's state, pid, restarts, last exit.
    Status {
        /// Print JSON.
        #[arg(long)]
        json: bool,
    },
    /// Restart one daemon now.
    Restart {
        /// Its name.
        name: String,
    },
    /// Re-read the configuration (like SIGHUP).
    Reload,
    /// Graceful shutdown (like SIGTERM).
    Stop,
    /// Follow the daemons: one JSON tree event a line until bottle-init stops.
    Events,
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let json = matches!(cli.log_format, LogFormat::Json);
    let filter = tracing_subscriber::EnvFilter::try_from_env("BOTTLE_INIT_LOG")
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info,ractor=warn"));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_target(false);
    if json {
        builder.json().init();
    } else {
        builder.init();
    }
    let runtime = match tokio::runtime::Builder::new_current_thread().enable_all().build() {
        Ok(runtime) => runtime,
        Err(err) => {
            tracing::error!(error = %err, "Cannot start the async runtime.");
            return code(bottle_runtime::exit::TreeExitCode::Internal.code());
        }
    };
    let result = runtime.block_on(async move {
        match cli.command {
            Some(Command::Ctl { socket, action }) => ctl(socket, action).await,
            None => {
                let mode = match (cli.config, cli.program.is_empty()) {
                    (Some(path), true) => init::Mode::Config(path),
                    (None, false) => init::Mode::Single(cli.program),
                    (Some(_), false) => {
                        tracing::error!("Give either --config or a program after --, not both.");
                        return bottle_runtime::exit::TreeExitCode::Usage.code();
                    }
                    (None, true) => {
                        tracing::error!("Nothing to run: give --config FILE (or BOTTLE_INIT_CONFIG) or -- PROGRAM [ARGS].");
                        return bottle_runtime::exit::TreeExitCode::Usage.code();
                    }
                };
                let options = init::Options { mode, grace: cli.grace, control_socket: cli.control_socket, exit_report: cli.exit_report };
                match init::run(options).await {
                    Ok(code) => code,
                    Err(err) => {
                        tracing::error!(error = %chain(&err), "bottle-init cannot start; nothing was started.");
                        err.exit_code()
                    }
                }
            }
        }
    });
    // Do not wait for detached tasks (their sockets and timers die with us).
    runtime.shutdown_background();
    code(result)
}

fn code(value: i32) -> ExitCode {
    ExitCode::from(u8::try_from(value).unwrap_or(1))
}

pub(crate) use bottle_runtime::error_chain as chain;

#[allow(clippy::print_stdout)] // ctl's output is the answer
async fn ctl(socket: PathBuf, action: CtlAction) -> i32 {
    use bottle_protocol::control::{Reply, Request};
    let (request, json) = match action {
        CtlAction::Status { json } => (Request::Status, json),
        CtlAction::Restart { name } => (Request::Restart { name }, false),
        CtlAction::Reload => (Request::Reload, false),
        CtlAction::Stop => (Request::Stop, false),
        CtlAction::Events => {
            return match events::follow(&socket).await {
                Ok(()) => 0,
                Err(err) => {
                    tracing::error!("{err:#}");
                    1
                }
            };
        }
    };
    let reply = match control::call(&socket, &request).await {
        Ok(reply) => reply,
        Err(err) => {
            tracing::error!("{err:#}");
            return 1;
        }
    };
    match reply {
        Reply::Error(refused) => {
            tracing::error!(kind = ?refused.kind, "{}", refused.message);
            return 1;
        }
        Reply::Status(status) if json => {
            println!("{}", serde_json::to_string_pretty(&status).unwrap_or_default())
        }
        Reply::Status(status) => print!("{}", render_status(&status)),
        Reply::Done { message } => println!("{message}"),
    }
    0
}

fn render_status(status: &bottle_protocol::control::TreeStatus) -> String {
    let mut out = format!(
        "{:<16} {:<8} {:>8} {:>8} {:<6} {}\n",
        "NAME", "STATE", "PID", "RESTARTS", "READY", "LAST EXIT"
    );
    for child in &status.children {
        out.push_str(&format!(
            "{:<16} {:<8} {:>8} {:>8} {:<6} {}\n",
            child.name,
            if child.running { "running" } else { "down" },
            child.pid.map(|p| p.to_string()).unwrap_or_else(|| "-".into()),
            child.restarts,
            if child.ready { "yes" } else { "no" },
            child.last_exit.as_deref().unwrap_or("-"),
        ));
    }
    out
}
