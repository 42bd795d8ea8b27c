//! In-process daemons (`[daemon.builtin.<name>]`): actors from the crates that implement
//! them, started like any other child.
//!
//! Hazard: a builtin named in a config but missing from this build must be a
//! configuration error at start, never a silent no-op daemon. The settings are typed
//! (`bottle_protocol::init::Builtin`, a closed enum); this match is the complete list of
//! what this build runs: `egress`. `git-gate` and `supervise` are refused.

use std::sync::Arc;

use bottle_protocol::egress::{EgressSettings, Listen};
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

/// The egress proxy.
///
/// ADAPTER, until `bottle_egress::EgressFactory::new(EgressSettings, Secrets)` lands
/// (branch wt-egress): today's factory takes its own settings type and resolves
/// `token_ref`s from the process environment, so this converts the settings, refuses
/// what the old factory cannot do (an inherited listening fd) and refuses secrets that
/// did not come from bottle-init's environment rather than let the proxy read other
/// values than the ones it was given.
fn egress(settings: &EgressSettings, secrets: &Secrets) -> Result<Arc<dyn ActorFactory>, String> {
    let listen = match settings.listen {
        Listen::Addr(addr) => addr,
        Listen::Fd(_) => {
            return Err("listen = { fd = N } needs the egress constructor that takes an \
                        inherited socket; this build binds an address only"
                .into());
        }
    };
    let from_env = secrets
        .names()
        .all(|n| std::env::var(n).ok() == secrets.get(n).map(|s| s.expose().to_string()));
    if !from_env {
        return Err("this build's egress reads token_ref values from bottle-init's \
                    environment; secrets from an fd need the newer egress constructor"
            .into());
    }
    let settings = bottle_egress::EgressSettings {
        routes: settings.routes.clone(),
        listen,
        ca_out: settings.ca_out.clone(),
        upstream_ca: settings.upstream_ca.clone(),
        audit_log: settings.audit_log.clone(),
        ca_days: settings.ca_days,
        approvals: settings.approvals.clone(),
        hold_timeout_seconds: settings.hold_timeout_seconds,
        bottle: settings.bottle.clone(),
    };
    Ok(Arc::new(bottle_egress::EgressFactory { settings }))
}
