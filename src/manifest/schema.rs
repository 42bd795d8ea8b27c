//! The frontmatter of one bottle file, as written: every key optional, nothing merged.
//!
//! Hazard: a lenient schema turns a typo into a silently ignored setting (`egres:` would
//! drop every route, `ulr:` the upstream). Every struct denies unknown fields, so serde
//! names the key and lists the valid ones, which `parse` turns into "did you mean".

use std::collections::BTreeMap;
use std::fmt;

use bottle_egress::routes::RouteSpec;
use serde::Deserialize;
use serde::de::{self, Deserializer, SeqAccess, Visitor};

use super::EnvValue;

/// The top level of the frontmatter.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct Frontmatter {
    /// Parent bottles, folded left to right before this file.
    #[serde(default)]
    pub(crate) extends: Option<Extends>,
    /// Variables set in the agent's environment.
    #[serde(default)]
    pub(crate) env: Option<BTreeMap<String, EnvValue>>,
    /// The egress proxy's routes.
    #[serde(default)]
    pub(crate) egress: Option<EgressSection>,
    /// The git gate's upstreams and commit identity.
    #[serde(default, rename = "git-gate")]
    pub(crate) git_gate: Option<GitGateSection>,
    /// Which agent runs in the bottle (`claude`, `codex`, `pi`, or a plugin's name).
    #[serde(default)]
    pub(crate) agent_provider: Option<String>,
    /// The agent's image, by reference.
    #[serde(default)]
    pub(crate) image: Option<String>,
    /// The agent's image, built from this Dockerfile (relative to the bottle file).
    #[serde(default)]
    pub(crate) dockerfile: Option<String>,
}

/// `extends: base` or `extends: [base, extra]`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Extends(pub(crate) Vec<String>);

impl<'de> Deserialize<'de> for Extends {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Extends, D::Error> {
        struct ExtendsVisitor;
        impl<'de> Visitor<'de> for ExtendsVisitor {
            type Value = Extends;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a bottle name or a list of bottle names")
            }
            fn visit_str<E: de::Error>(self, v: &str) -> Result<Extends, E> {
                Ok(Extends(vec![v.to_string()]))
            }
            fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Extends, A::Error> {
                let mut names = Vec::new();
                while let Some(name) = seq.next_element::<String>()? {
                    names.push(name);
                }
                Ok(Extends(names))
            }
        }
        deserializer.deserialize_any(ExtendsVisitor)
    }
}

/// `egress:`.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct EgressSection {
    /// Routes in the egress schema (actors/egress `RouteSpec`).
    #[serde(default)]
    pub(crate) routes: Option<Vec<RouteSpec>>,
    /// The reference's request-log switch.
    #[serde(default)]
    pub(crate) log: Option<super::EgressLog>,
}

/// `git-gate:`.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct GitGateSection {
    /// The commit identity inside the bottle.
    #[serde(default)]
    pub(crate) user: Option<GitUserSpec>,
    /// Upstreams by name.
    #[serde(default)]
    pub(crate) repos: Option<BTreeMap<String, RepoSpec>>,
}

/// `git-gate.user`: every field optional, overlaid per field by `extends`.
#[derive(Debug, Default, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct GitUserSpec {
    /// `user.name`.
    #[serde(default)]
    pub(crate) name: Option<String>,
    /// `user.email`.
    #[serde(default)]
    pub(crate) email: Option<String>,
}

/// `git-gate.repos.<name>`: every field optional here (a child may override one field
/// of its parent's repo); once merged, `url` is required, and `identity` and `host_key`
/// for an ssh upstream.
#[derive(Debug, Default, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RepoSpec {
    /// `ssh://` or `https://` upstream.
    #[serde(default)]
    pub(crate) url: Option<String>,
    /// Host path of the SSH private key for the upstream.
    #[serde(default)]
    pub(crate) identity: Option<String>,
    /// The upstream's SSH host key (`<type> <base64>`), pinned: no trust on first use.
    #[serde(default)]
    pub(crate) host_key: Option<String>,
    /// HTTPS: the host variable holding the token the gate sends upstream.
    #[serde(default)]
    pub(crate) token_ref: Option<String>,
}

/// A route's `role:` key, which the reference reserves. Deserializing it always fails, so
/// the probe in `parse` finds it with its path and line.
#[derive(Debug)]
pub(crate) struct Reserved;

pub(crate) const RESERVED_MARK: &str = "bottle-manifest-reserved-key";

impl<'de> Deserialize<'de> for Reserved {
    fn deserialize<D: Deserializer<'de>>(_deserializer: D) -> Result<Reserved, D::Error> {
        Err(de::Error::custom(RESERVED_MARK))
    }
}

/// The probe's view of the file: only where reserved keys hide inside foreign types.
#[derive(Debug, Deserialize)]
pub(crate) struct Probe {
    #[serde(default)]
    #[allow(dead_code, reason = "deserializing is the whole point")]
    egress: Option<ProbeEgress>,
}

#[derive(Debug, Deserialize)]
struct ProbeEgress {
    #[serde(default)]
    #[allow(dead_code, reason = "deserializing is the whole point")]
    routes: Option<Vec<ProbeRoute>>,
}

#[derive(Debug, Deserialize)]
struct ProbeRoute {
    #[serde(default)]
    #[allow(dead_code, reason = "deserializing is the whole point")]
    role: Option<Reserved>,
}
