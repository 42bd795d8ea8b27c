//! In-process daemons (`builtin = "<name>"`): actors registered by the crates that
//! implement them (the egress proxy, the git gate) and started like any other child.
//!
//! Hazard: a builtin named in a config but missing from this build must be a
//! configuration error at start, never a silent no-op daemon. The registry below is the
//! complete list: `egress` (the egress proxy); the git gate adds its own.

use std::sync::Arc;

use bottle_runtime::spec::ActorFactory;

/// A builtin's constructor: its `config` table in, a factory out (or why not).
type Constructor = fn(Option<&toml::Table>) -> Result<Arc<dyn ActorFactory>, String>;

/// Every builtin this build knows.
const REGISTRY: &[(&str, Constructor)] = &[("egress", egress)];

/// `builtin = "egress"`: the egress proxy, configured by its `[daemon.config]` table
/// (`routes`, `listen`, `ca_out`, `upstream_ca`, `audit_log`, `ca_days`).
fn egress(config: Option<&toml::Table>) -> Result<Arc<dyn ActorFactory>, String> {
    let table =
        config.cloned().ok_or("builtin \"egress\" needs a config table with at least `routes`")?;
    let settings: bottle_egress::EgressSettings = toml::Value::Table(table)
        .try_into()
        .map_err(|e: toml::de::Error| format!("egress config: {}", e.message()))?;
    Ok(Arc::new(bottle_egress::EgressFactory::new(settings, bottle_egress::Secrets::new())))
}

/// Names of the builtins in this build.
pub(crate) fn names() -> Vec<&'static str> {
    REGISTRY.iter().map(|(name, _)| *name).collect()
}

/// Creates the builtin `name` from its config table.
pub(crate) fn create(
    name: &str,
    config: Option<&toml::Table>,
) -> Result<Arc<dyn ActorFactory>, String> {
    match REGISTRY.iter().find(|(n, _)| *n == name) {
        Some((_, constructor)) => constructor(config),
        None => {
            let known = names();
            Err(format!(
                "unknown builtin {name:?}; this build has {}",
                if known.is_empty() { "none".to_string() } else { known.join(", ") }
            ))
        }
    }
}
