//! In-process daemons (`[daemon.builtin.<name>]`): actors from the crates that implement
//! them, started like any other child.
//!
//! Hazard: a builtin named in a config but missing from this build must be a
//! configuration error at start, never a silent no-op daemon. The settings are typed
//! (`bottle_protocol::init::Builtin`, a closed enum); this match is the complete list of
//! what this build runs: `egress` and `git-gate`. `supervise` is refused. A builtin's
//! settings are checked here, so a bad table is refused at load with its key path.

use std::sync::Arc;

use bottle_protocol::egress::EgressSettings;
use bottle_protocol::git_gate::GitGateSettings;
use bottle_protocol::init::Builtin;
use bottle_protocol::secrets::Secrets;
use bottle_runtime::spec::ActorFactory;

/// Creates the builtin daemon `name` from its settings, handing it the secrets
/// bottle-init resolved at start.
pub(crate) fn create(
    name: &str,
    settings: &Builtin,
    secrets: &Secrets,
) -> Result<Arc<dyn ActorFactory>, String> {
    match settings {
        Builtin::Egress(settings) => egress(settings, secrets),
        Builtin::GitGate(settings) => git_gate(settings, secrets),
        Builtin::Supervise(_) => Err(format!(
            "daemon {name:?}: builtin `{}` is not in this build (it has egress and git-gate)",
            settings.name()
        )),
    }
}

/// The egress proxy, with the secrets its routes inject.
fn egress(settings: &EgressSettings, secrets: &Secrets) -> Result<Arc<dyn ActorFactory>, String> {
    Ok(Arc::new(bottle_egress::EgressFactory::new(settings.clone(), secrets.clone())))
}

/// The git gate, with the secrets its repositories' `token_ref`s name. Every repository
/// is checked now (names, URLs, SSH pins); secrets are resolved when it starts.
fn git_gate(
    settings: &GitGateSettings,
    secrets: &Secrets,
) -> Result<Arc<dyn ActorFactory>, String> {
    bottle_git_gate::settings::validate(settings).map_err(|e| e.to_string())?;
    Ok(Arc::new(bottle_git_gate::GitGateFactory::new(settings.clone(), secrets.clone())))
}
