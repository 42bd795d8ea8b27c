//! Bottle manifests: Markdown files with YAML frontmatter in the reference system's
//! format, found on a search path in the user's home, merged along `extends`.
//!
//! Hazard: a manifest decides where the agent's requests may go and which host
//! credentials ride along. So:
//! - a bottle is never read from the current directory unless its path is given (a cloned
//!   repository must not be able to redirect a secret to its own host);
//! - unknown keys are errors, because a typo would otherwise drop a setting silently;
//! - removed keys are errors with a migration hint;
//! - no error and no `Debug` output contains an `env` value (values may be secrets);
//! - routes are checked by the egress proxy's own parser (`RouteTable::parse`), so the
//!   launcher accepts exactly what the sidecar will load.
//!
//! The entry point is [`resolve`]; docs/manifest.md is the format reference.

mod discover;
mod error;
mod frontmatter;
mod merge;
mod parse;
mod schema;
mod validate;

use std::collections::BTreeMap;
use std::fmt;
use std::path::{Path, PathBuf};

pub use bottle_egress::routes::RouteSpec;
pub use discover::{MAX_NAME_LEN, SearchPath, Target, validate_name};
pub use error::{ManifestError, Result, SourcePos};
pub use merge::{MAX_BOTTLES, resolve};

/// The host the agent's git reaches the bottle's git gate at, through egress. The
/// launcher routes it; a bottle file may not.
pub const GIT_GATE_HOST: &str = "git.bottle.internal";

/// Largest bottle file read, in bytes: far above any real one, small enough that a
/// mistaken path (a log, an image) fails at once.
pub const MAX_FILE_BYTES: u64 = 256 * 1024;

/// A value for the agent's environment. Treated as a secret: `Debug` shows its length
/// only, there is no `Display`, and no error repeats it.
#[derive(Clone, PartialEq, Eq, serde::Deserialize)]
#[serde(transparent)]
pub struct EnvValue(String);

impl EnvValue {
    /// Wraps a value.
    pub fn new(value: impl Into<String>) -> EnvValue {
        EnvValue(value.into())
    }

    /// The value, for the one place that puts it in the agent's environment.
    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for EnvValue {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "EnvValue(<{} bytes>)", self.0.len())
    }
}

/// `egress.log`: the reference names the key without documenting its type; a switch or a
/// level name are both accepted and kept as written.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum EgressLog {
    /// `log: true` / `log: false`.
    Enabled(bool),
    /// `log: <level>`.
    Level(String),
}

impl<'de> serde::Deserialize<'de> for EgressLog {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<EgressLog, D::Error> {
        struct LogVisitor;
        impl serde::de::Visitor<'_> for LogVisitor {
            type Value = EgressLog;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("`true`, `false` or a log level name")
            }
            fn visit_bool<E: serde::de::Error>(self, v: bool) -> Result<EgressLog, E> {
                Ok(EgressLog::Enabled(v))
            }
            fn visit_str<E: serde::de::Error>(self, v: &str) -> Result<EgressLog, E> {
                Ok(EgressLog::Level(v.to_string()))
            }
        }
        deserializer.deserialize_any(LogVisitor)
    }
}

/// The commit identity inside the bottle (`git-gate.user`).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct GitUser {
    /// `user.name`.
    pub name: Option<String>,
    /// `user.email`.
    pub email: Option<String>,
}

/// One upstream of the git gate, complete after merging.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GitRepo {
    /// The `ssh://` or `https://` upstream URL.
    pub url: String,
    /// SSH: the private key on the host (absolute: `~/` expanded, relative paths taken
    /// from the directory of the file that set it). Required for ssh, refused for https.
    pub identity: Option<PathBuf>,
    /// SSH: the pinned host key of the upstream. Required for ssh, refused for https.
    pub host_key: Option<String>,
    /// HTTPS: the host variable holding the token the gate injects (none: anonymous).
    pub token_ref: Option<String>,
}

/// Where the agent's image comes from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ImageSource {
    /// A reference to pull or use (`image:`).
    Image(String),
    /// A Dockerfile to build (`dockerfile:`), absolute.
    Dockerfile(PathBuf),
}

/// Something the caller should tell the user; the library prints nothing.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ManifestWarning {
    /// A bottle of the requested name exists under the current directory and was not read.
    IgnoredCwdBottle {
        /// That file.
        path: PathBuf,
    },
}

impl fmt::Display for ManifestWarning {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ManifestWarning::IgnoredCwdBottle { path } => write!(
                f,
                "ignoring {}: bottles are never read from the current directory (pass the path explicitly if you trust it)",
                path.display()
            ),
        }
    }
}

/// One bottle file, parsed and checked on its own (nothing merged yet).
#[derive(Debug)]
pub struct Bottle {
    /// The bottle's name (the file name without `.md`).
    pub name: String,
    /// The file.
    pub path: PathBuf,
    /// The Markdown body: the agent's prompt.
    pub prompt: String,
    front: schema::Frontmatter,
}

impl Bottle {
    /// Reads and parses the file at `path` (at most [`MAX_FILE_BYTES`]).
    pub fn load(path: &Path) -> Result<Bottle> {
        let text = read_limited(path)?;
        Bottle::parse(path, &text)
    }

    /// Parses `text` as the bottle file `path` (whose stem is the bottle's name).
    pub fn parse(path: &Path, text: &str) -> Result<Bottle> {
        let name = discover::name_of_file(path)?;
        let split = frontmatter::split(text).map_err(|e| match e {
            frontmatter::SplitError::Missing => {
                ManifestError::NoFrontmatter { path: path.to_path_buf() }
            }
            frontmatter::SplitError::Unclosed => {
                ManifestError::UnclosedFrontmatter { path: path.to_path_buf() }
            }
        })?;
        let front = parse::frontmatter(&split.yaml, path, split.line_offset)?;
        validate::file(&front, path)?;
        Ok(Bottle { name, path: path.to_path_buf(), prompt: split.body, front })
    }

    /// The parents named in `extends`, in order.
    pub fn extends(&self) -> &[String] {
        self.front.extends.as_ref().map_or(&[], |e| e.0.as_slice())
    }
}

fn read_limited(path: &Path) -> Result<String> {
    use std::io::Read;
    let read_err = |source| ManifestError::Read { path: path.to_path_buf(), source };
    let file = std::fs::File::open(path).map_err(read_err)?;
    let mut bytes = Vec::new();
    file.take(MAX_FILE_BYTES + 1).read_to_end(&mut bytes).map_err(read_err)?;
    if bytes.len() as u64 > MAX_FILE_BYTES {
        return Err(ManifestError::TooLarge { path: path.to_path_buf(), limit: MAX_FILE_BYTES });
    }
    String::from_utf8(bytes).map_err(|_| ManifestError::NotUtf8 { path: path.to_path_buf() })
}

/// A bottle with its `extends` chain folded in: what a launch needs.
#[derive(Debug, Clone)]
pub struct ResolvedBottle {
    /// The bottle's name.
    pub name: String,
    /// The agent's environment, by variable name.
    pub env: BTreeMap<String, EnvValue>,
    /// Egress routes in order (parents first).
    pub routes: Vec<RouteSpec>,
    /// `egress.log`, if any file set it.
    pub egress_log: Option<EgressLog>,
    /// The commit identity.
    pub git_user: GitUser,
    /// Git gate upstreams by name.
    pub repos: BTreeMap<String, GitRepo>,
    /// Which agent runs.
    pub agent_provider: Option<String>,
    /// The agent's image.
    pub image: Option<ImageSource>,
    /// The prompt: the body of the last file in the fold that has one.
    pub prompt: String,
    /// Every file folded in, in fold order (the bottle asked for is last).
    pub sources: Vec<PathBuf>,
    /// Things to tell the user.
    pub warnings: Vec<ManifestWarning>,
}

impl ResolvedBottle {
    /// The routes as a routes file for the egress proxy (`{"routes": [...]}`; JSON is
    /// YAML, and `RouteTable::parse` reads it). Holds `token_ref` names, never tokens.
    pub fn routes_file_text(&self) -> String {
        routes_file_text(&self.routes)
    }
}

pub(crate) fn routes_file_text(routes: &[RouteSpec]) -> String {
    serde_json::json!({ "routes": routes }).to_string()
}

#[cfg(test)]
mod tests;
