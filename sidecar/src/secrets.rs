//! The secret values builtins look up by name, resolved once at start.
//!
//! Hazard: a secret must never reach argv, a log line, an error message or a child's
//! environment. The values stay in a [`Secrets`] map (whose `Debug` prints names) that
//! only builtins receive; errors say where reading failed, never what was read.

use std::io::Read;

use bottle_protocol::init::SecretsSource;
use bottle_protocol::secrets::{Secret, Secrets};

use crate::config::ConfigFileError;

/// The most bytes read from a secrets fd: a map of tokens, not a file system.
const MAX_SECRETS_BYTES: u64 = 1024 * 1024;

/// Resolves the secrets from `source`: bottle-init's own environment, or a JSON map on
/// an inherited fd that is read to its end and closed.
pub(crate) fn resolve(source: SecretsSource) -> Result<Secrets, ConfigFileError> {
    match source {
        SecretsSource::Env => Ok(std::env::vars_os()
            .filter_map(|(k, v)| Some((k.into_string().ok()?, Secret::new(v.into_string().ok()?))))
            .collect()),
        SecretsSource::Fd(fd) => from_fd(fd),
    }
}

fn from_fd(fd: i32) -> Result<Secrets, ConfigFileError> {
    let problem =
        |what: String| ConfigFileError::Invalid { location: "secrets".into(), problem: what };
    let owned = bottle_runtime::proc::fd::take_inherited(fd)
        .map_err(|e| problem(format!("cannot take the inherited fd {fd}: {e}")))?;
    let mut text = Vec::new();
    // Dropping the file closes the fd.
    std::fs::File::from(owned)
        .take(MAX_SECRETS_BYTES + 1)
        .read_to_end(&mut text)
        .map_err(|e| problem(format!("cannot read fd {fd}: {e}")))?;
    if text.len() as u64 > MAX_SECRETS_BYTES {
        return Err(problem(format!("fd {fd} holds more than {MAX_SECRETS_BYTES} bytes")));
    }
    // serde_json's message may quote a value: keep only the position.
    serde_json::from_slice(&text).map_err(|e| {
        problem(format!(
            "fd {fd} is not a JSON object of name -> string (line {}, column {})",
            e.line(),
            e.column()
        ))
    })
}
