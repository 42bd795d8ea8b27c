//! The launcher's commands as the binary runs them: parse what the library needs from the
//! command line and the environment, call it, print, pick the exit code.

#![allow(clippy::print_stdout, clippy::print_stderr)] // printing is what these commands are for

use std::io::IsTerminal;
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use anyhow::Context;
use bottle::exit::RunExit;
use bottle::manifest::{self, SearchPath};
use bottle::run::{RunOutcome, RunRequest};
use bottle::state::{BackendKind, StateRoot};

/// Arguments of `bottle run`.
#[derive(Debug, clap::Args)]
pub(crate) struct RunArgs {
    /// Where the agent runs. Default: local (namespaces and seccomp on this machine).
    #[arg(long, value_enum)]
    backend: Option<BackendKind>,
    /// A host directory the agent gets read-write at /workspace.
    #[arg(long, value_name = "DIR")]
    workspace: Option<PathBuf>,
    /// Extra CA certificates (PEM) the sidecar trusts for upstream servers (a private
    /// registry's or a corporate CA), beside the machine's roots. The agent never sees it.
    #[arg(long, value_name = "PEM", env = "BOTTLE_UPSTREAM_CA")]
    upstream_ca: Option<PathBuf>,
    /// The bottle: a name (~/.config/bottle/bottles/NAME.md, then ~/.bot-bottle/bottles/)
    /// or a path to a bottle file.
    bottle: String,
    /// The agent's command.
    #[arg(last = true)]
    command: Vec<String>,
}

fn env(name: &str) -> Option<String> {
    std::env::var(name).ok()
}

fn state_root() -> StateRoot {
    StateRoot::from_env(&env)
}

fn libexec() -> Option<PathBuf> {
    env("BOTTLE_LIBEXEC").map(PathBuf::from)
}

/// Step names on a terminal, nothing in a pipe.
fn progress() -> Box<dyn Fn(&str) + Send + Sync> {
    if std::io::stderr().is_terminal() {
        Box::new(|step| eprintln!("bottle: {step}..."))
    } else {
        Box::new(|_| {})
    }
}

fn exit(code: RunExit) -> ExitCode {
    ExitCode::from(code.code())
}

fn report_outcome(outcome: &RunOutcome) {
    if let Some(cause) = &outcome.cause {
        if !matches!(cause, bottle::launch::LaunchError::Interrupted { .. }) {
            eprintln!("bottle: error: {cause}");
        } else {
            eprintln!("bottle: interrupted; the bottle was torn down");
        }
    }
    for err in &outcome.teardown.errors {
        eprintln!("bottle: teardown: {err}");
    }
}

/// `bottle run`.
pub(crate) async fn run(args: RunArgs) -> anyhow::Result<ExitCode> {
    match args.backend {
        None | Some(BackendKind::Local) => {}
        Some(other) => {
            eprintln!(
                "bottle: error: the {other} backend is not in this build yet; use --backend local"
            );
            return Ok(exit(RunExit::LaunchFailed));
        }
    }
    if args.command.is_empty() {
        eprintln!("bottle: error: no command: give the agent's command after `--`");
        return Ok(exit(RunExit::Usage));
    }
    let search = SearchPath::from_process_env();
    let bottle = match manifest::resolve(&args.bottle, &search) {
        Ok(bottle) => bottle,
        Err(err) => {
            eprintln!("bottle: error: {err}");
            return Ok(exit(RunExit::Usage));
        }
    };
    for warning in &bottle.warnings {
        eprintln!("bottle: warning: {warning}");
    }
    if let Some(image) = &bottle.image {
        eprintln!(
            "bottle: error: this bottle asks for an image ({image:?}); the local backend runs the host's system directories. Use --backend docker or --backend vm"
        );
        return Ok(exit(RunExit::Usage));
    }
    // Absolute paths: the sidecar runs in the bottle's state folder and the sandbox
    // binds by absolute path. A path that does not exist is a usage error.
    let absolute = |what: &str, path: Option<PathBuf>| match path {
        Some(path) => std::fs::canonicalize(&path)
            .with_context(|| format!("{what} {}", path.display()))
            .map(Some),
        None => Ok(None),
    };
    let (workspace, upstream_ca) =
        match (absolute("workspace", args.workspace), absolute("upstream CA", args.upstream_ca)) {
            (Ok(workspace), Ok(upstream_ca)) => (workspace, upstream_ca),
            (Err(err), _) | (_, Err(err)) => {
                eprintln!("bottle: error: {err:#}");
                return Ok(exit(RunExit::Usage));
            }
        };
    let request = RunRequest {
        bottle,
        command: args.command,
        workspace,
        state: state_root(),
        approvals: crate::approvals::default_dir(),
        libexec: libexec(),
        host_secret: Box::new(env),
        upstream_ca,
        progress: progress(),
        term: env("TERM"),
    };
    let outcome = bottle::run::run(request).await;
    report_outcome(&outcome);
    Ok(exit(outcome.exit))
}

/// `bottle demo`.
pub(crate) async fn demo() -> anyhow::Result<ExitCode> {
    let scratch = std::env::temp_dir().join(format!("bottle-demo-{}", std::process::id()));
    std::fs::create_dir_all(&scratch)?;
    println!(
        "bottle demo: a fake API on 127.0.0.1, one route to it, a scripted agent inside a bottle.\n"
    );
    let result = bottle::demo::run(
        &scratch,
        state_root(),
        crate::approvals::default_dir(),
        libexec(),
        progress(),
    )
    .await;
    let _ = std::fs::remove_dir_all(&scratch);
    let report = result?;
    report_demo(&report);
    Ok(exit(report.outcome.exit))
}

fn report_demo(report: &bottle::demo::DemoReport) {
    println!("\nOutside the bottle:");
    let hits: Vec<String> = report.api_hits.iter().map(|(p, n)| format!("{p} x{n}")).collect();
    println!(
        "  {:<44} {}",
        "requests that reached the fake API",
        if hits.is_empty() { "none".into() } else { hits.join(", ") }
    );
    let held = match report.agent_held_real_token {
        Some(false) => "a placeholder, not the real token",
        Some(true) => "THE REAL TOKEN (this must not happen)",
        None => "unknown (the agent did not report it)",
    };
    println!("  {:<44} {}", "what the agent held in $DEMO_API_TOKEN", held);
    if let Some(id) = &report.outcome.id {
        println!(
            "  {:<44} {}",
            "state, audit log and sidecar log",
            state_root().bottle_dir(id).display()
        );
    }
    report_outcome(&report.outcome);
}

/// `bottle ps`.
pub(crate) fn ps(all: bool, json: bool) -> anyhow::Result<ExitCode> {
    let (rows, errors) = bottle::manage::ps(&state_root(), all);
    for err in &errors {
        eprintln!("bottle: warning: {err}");
    }
    if json {
        println!("{}", serde_json::to_string_pretty(&rows)?);
        return Ok(ExitCode::SUCCESS);
    }
    println!("{:<28} {:<10} {:<8} {:<10} {:>8}", "ID", "NAME", "BACKEND", "STATE", "AGE");
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0);
    for row in rows {
        let age = now.saturating_sub(row.record.created_unix);
        println!(
            "{:<28} {:<10} {:<8} {:<10} {:>7}s",
            row.record.id, row.record.name, row.record.backend, row.state, age
        );
    }
    Ok(ExitCode::SUCCESS)
}

/// `bottle logs`.
pub(crate) async fn logs(id: &str, follow: bool) -> anyhow::Result<ExitCode> {
    let root = state_root();
    root.get(id)?;
    let path = root.bottle_dir(id).join("sidecar.log");
    let mut offset = 0usize;
    loop {
        let text = std::fs::read(&path).unwrap_or_default();
        if text.len() > offset {
            use std::io::Write;
            std::io::stdout().write_all(&text[offset..])?;
            offset = text.len();
        }
        let ended = root
            .get(id)
            .map(|r| matches!(r.phase, bottle::state::Phase::Exited { .. }) || r.is_dead())
            .unwrap_or(true);
        if !follow || ended {
            return Ok(ExitCode::SUCCESS);
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

/// `bottle exec`.
pub(crate) async fn exec(id: &str, command: Vec<String>) -> anyhow::Result<ExitCode> {
    let root = state_root();
    root.get(id)?;
    let socket = root.bottle_dir(id).join("exec.sock");
    let status = tokio::task::spawn_blocking(move || {
        use std::os::fd::AsFd;
        let request = bottle_local::ExecRequest::new(command);
        let stdin = std::io::stdin();
        let stdout = std::io::stdout();
        let stderr = std::io::stderr();
        bottle_local::exec(&socket, &request, [stdin.as_fd(), stdout.as_fd(), stderr.as_fd()])
    })
    .await?;
    match status {
        Ok(status) => Ok(exit(RunExit::from_status(status))),
        Err(err) => {
            eprintln!("bottle: error: {}", bottle_runtime::error_chain(&err));
            Ok(exit(RunExit::LaunchFailed))
        }
    }
}

/// `bottle stop`.
pub(crate) async fn stop(id: &str) -> anyhow::Result<ExitCode> {
    let phase = bottle::manage::stop(&state_root(), id, Duration::from_secs(60)).await?;
    println!("{id}: {phase:?}");
    Ok(ExitCode::SUCCESS)
}

/// `bottle cleanup`.
pub(crate) fn cleanup(dry_run: bool) -> anyhow::Result<ExitCode> {
    let (done, errors) = bottle::manage::cleanup(&state_root(), dry_run);
    for c in &done {
        let verb = if dry_run { "would remove" } else { "removed" };
        let killed = if c.killed.is_empty() {
            String::new()
        } else {
            format!(" (killed {})", c.killed.join(", "))
        };
        println!("{verb} {}{killed}", c.id);
    }
    if done.is_empty() {
        println!("nothing to clean up");
    }
    for err in &errors {
        eprintln!("bottle: warning: {err}");
    }
    Ok(ExitCode::SUCCESS)
}

/// `bottle doctor`.
pub(crate) async fn doctor(json: bool) -> anyhow::Result<ExitCode> {
    let checks = bottle::doctor::run(libexec()).await;
    if json {
        println!("{}", serde_json::to_string_pretty(&checks)?);
    } else {
        for backend in &checks {
            let verdict = if backend.works { "works" } else { "does not work here" };
            println!("{}: {verdict}", backend.backend);
            for line in &backend.checks {
                let mark = if line.ok { "ok  " } else { "FAIL" };
                println!("  {mark} {}: {}", line.name, line.detail);
                if let Some(fix) = &line.fix {
                    println!("       fix: {fix}");
                }
            }
        }
    }
    let local_works = checks.iter().any(|b| b.backend == "local" && b.works);
    Ok(if local_works { ExitCode::SUCCESS } else { ExitCode::from(1) })
}
