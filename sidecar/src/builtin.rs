//! In-process daemons (`[daemon.builtin.<name>]`): actors from the crates that implement
//! them, started like any other child.
//!
//! Hazard: a builtin named in a config but missing from this build must be a
//! configuration error at start, never a silent no-op daemon. The settings are typed
//! (`bottle_protocol::init::Builtin`, a closed enum); this match is the complete list of
//! what this build runs: `egress`. `git-gate` and `supervise` are refused.

use std::sync::Arc;

use bottle_protocol::egress::EgressSettings;
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
        Builtin::GitGate(_) | Builtin::Supervise(_) => Err(format!(
            "daemon {name:?}: builtin `{}` is not in this build (it has egress)",
            settings.name()
        )),
    }
}

/// The egress proxy, with the secrets its routes inject.
fn egress(settings: &EgressSettings, secrets: &Secrets) -> Result<Arc<dyn ActorFactory>, String> {
    Ok(Arc::new(bottle_egress::EgressFactory::new(settings.clone(), secrets.clone())))
}
