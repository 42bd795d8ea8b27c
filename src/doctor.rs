//! `bottle doctor`: which backends work on this machine, and for each that does not,
//! exactly why and how to fix it.
//!
//! Hazard: a doctor that guesses (reads a sysctl and assumes) says "works" on a machine
//! where the launch then fails, or the reverse. The local backend is probed by running
//! every step of a real sandbox without an agent; the Docker engine by asking it.

use std::io::{Read, Write};
use std::path::{Path, PathBuf};

use bottle_local::{CheckOutcome, HelperCommand, LocalSandbox};
use serde::Serialize;

use crate::launch::Interrupt;
use crate::run::local::companion;

/// One backend's verdict.
#[derive(Debug, Clone, Serialize)]
pub struct BackendReport {
    /// `local`, `docker` or `vm`.
    pub backend: &'static str,
    /// Whether `bottle run --backend <this>` can work here.
    pub works: bool,
    /// What was checked.
    pub checks: Vec<CheckLine>,
}

/// One check.
#[derive(Debug, Clone, Serialize)]
pub struct CheckLine {
    /// What was checked.
    pub name: String,
    /// Whether it passed.
    pub ok: bool,
    /// What was seen.
    pub detail: String,
    /// How to fix a failure.
    pub fix: Option<String>,
}

fn line(name: &str, ok: bool, detail: impl Into<String>, fix: Option<&str>) -> CheckLine {
    CheckLine { name: name.into(), ok, detail: detail.into(), fix: fix.map(String::from) }
}

/// Checks every backend.
pub async fn run(libexec: Option<PathBuf>) -> Vec<BackendReport> {
    vec![local(libexec).await, docker(), vm()]
}

async fn local(libexec: Option<PathBuf>) -> BackendReport {
    let mut checks = Vec::new();
    for program in ["bottle-init", "bottle-sandbox"] {
        let path = companion(program, libexec.clone());
        let found = path.is_file();
        checks.push(line(
            program,
            found,
            path.display().to_string(),
            (!found).then_some("build it beside `bottle` (cargo build --release --workspace --bins) or point $BOTTLE_LIBEXEC at its folder"),
        ));
    }
    let helper = companion("bottle-sandbox", libexec);
    if helper.is_file() {
        checks.extend(probe(&helper).await);
    }
    let works = checks.iter().all(|c| c.ok);
    BackendReport { backend: "local", works, checks }
}

async fn probe(helper: &Path) -> Vec<CheckLine> {
    let reaper = match bottle_runtime::process_reaper() {
        Ok(reaper) => reaper,
        Err(e) => return vec![line("reaper", false, e.to_string(), None)],
    };
    let Ok((signals, _)) =
        crate::run::signals::start(reaper.clone(), Interrupt::unconnected()).await
    else {
        return vec![line("signals", false, "cannot handle SIGCHLD", None)];
    };
    let sandbox = LocalSandbox::new(HelperCommand::binary(helper.as_os_str().to_os_string()));
    let lines = sandbox
        .doctor(&reaper)
        .await
        .into_iter()
        .map(|check| match check.outcome {
            CheckOutcome::Pass(detail) => line(check.name, true, detail, None),
            CheckOutcome::Fail { summary, refusal } => {
                line(check.name, false, summary, refusal.as_ref().map(|r| r.cause.fix()))
            }
        })
        .collect();
    signals.stop(None);
    lines
}

fn docker() -> BackendReport {
    let socket = std::env::var("DOCKER_HOST")
        .ok()
        .and_then(|h| h.strip_prefix("unix://").map(PathBuf::from))
        .unwrap_or_else(|| PathBuf::from("/var/run/docker.sock"));
    let engine = match ping(&socket) {
        Ok(()) => line("engine", true, format!("answers on {}", socket.display()), None),
        Err(e) => line(
            "engine",
            false,
            format!("{}: {e}", socket.display()),
            Some("start the Docker Engine (systemctl start docker)"),
        ),
    };
    let backend = line(
        "backend",
        false,
        "the Docker backend is not in this build yet",
        Some("use --backend local (the default)"),
    );
    BackendReport { backend: "docker", works: false, checks: vec![engine, backend] }
}

fn ping(socket: &Path) -> std::io::Result<()> {
    let mut stream = std::os::unix::net::UnixStream::connect(socket)?;
    stream.set_read_timeout(Some(std::time::Duration::from_secs(3)))?;
    stream.write_all(b"GET /_ping HTTP/1.0\r\nHost: docker\r\n\r\n")?;
    let mut answer = String::new();
    stream.take(4096).read_to_string(&mut answer)?;
    if answer.starts_with("HTTP/1.") && answer.contains(" 200 ") {
        Ok(())
    } else {
        Err(std::io::Error::other("the engine did not answer /_ping with 200"))
    }
}

fn vm() -> BackendReport {
    let kvm = std::fs::OpenOptions::new().read(true).write(true).open("/dev/kvm");
    let kvm = match kvm {
        Ok(_) => line("/dev/kvm", true, "opens read-write", None),
        Err(e) => line(
            "/dev/kvm",
            false,
            e.to_string(),
            Some(
                "enable KVM (nested virtualisation on a VM host) and give this user access to /dev/kvm",
            ),
        ),
    };
    let backend = line(
        "backend",
        false,
        "the VM backend is not in this build yet",
        Some("use --backend local (the default)"),
    );
    BackendReport { backend: "vm", works: false, checks: vec![kvm, backend] }
}
