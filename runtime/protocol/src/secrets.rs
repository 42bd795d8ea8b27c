//! Secret values resolved by the launcher and handed to the sidecar.
//!
//! Hazard: a secret that reaches `Debug`, a log line, an error message, argv or a rendered
//! file is leaked. [`Secret`] and [`Secrets`] print names only; the value is reachable
//! only through [`Secret::expose`], and serialisation exists for one purpose: the
//! launcher writes the map into an inherited pipe that only the sidecar reads.

use std::collections::BTreeMap;
use std::fmt;

use serde::{Deserialize, Serialize};

/// One secret value. `Debug` and `Display` print a fixed mask.
#[derive(Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(transparent)]
pub struct Secret(String);

impl Secret {
    /// Wraps a value.
    pub fn new(value: impl Into<String>) -> Secret {
        Secret(value.into())
    }

    /// The value itself: only for the one place that must send it upstream.
    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Secret(<redacted>)")
    }
}

/// Secret values by the name the routes refer to them by (a route's `token_ref`).
#[derive(Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(transparent)]
pub struct Secrets(BTreeMap<String, Secret>);

impl Secrets {
    /// An empty map.
    pub fn new() -> Secrets {
        Secrets::default()
    }

    /// Adds or replaces `name`.
    pub fn insert(&mut self, name: impl Into<String>, value: Secret) {
        self.0.insert(name.into(), value);
    }

    /// The secret called `name`.
    pub fn get(&self, name: &str) -> Option<&Secret> {
        self.0.get(name)
    }

    /// The names, sorted.
    pub fn names(&self) -> impl Iterator<Item = &str> {
        self.0.keys().map(String::as_str)
    }

    /// A resolver in the shape the routes parser takes (`name -> value`).
    pub fn lookup(&self, name: &str) -> Option<String> {
        self.0.get(name).map(|s| s.expose().to_string())
    }

    /// True when there are none.
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }
}

impl FromIterator<(String, Secret)> for Secrets {
    fn from_iter<I: IntoIterator<Item = (String, Secret)>>(iter: I) -> Secrets {
        Secrets(iter.into_iter().collect())
    }
}

impl fmt::Debug for Secrets {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_list().entries(self.0.keys()).finish()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn debug_prints_names_never_values() {
        let mut secrets = Secrets::new();
        secrets.insert("GITHUB_TOKEN", Secret::new("ghp_do_not_print_me_0123456789"));
        let shown = format!("{secrets:?} {:?}", secrets.get("GITHUB_TOKEN"));
        assert!(shown.contains("GITHUB_TOKEN"), "{shown}");
        assert!(!shown.contains("do_not_print"), "{shown}");
    }

    #[test]
    fn round_trips_through_json_for_the_pipe() {
        let secrets: Secrets = [("A".to_string(), Secret::new("v"))].into_iter().collect();
        let text = serde_json::to_string(&secrets).unwrap();
        let back: Secrets = serde_json::from_str(&text).unwrap();
        assert_eq!(back.lookup("A").as_deref(), Some("v"));
    }
}
