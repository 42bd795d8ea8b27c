//! `ManifestError`: why a bottle could not be loaded.
//!
//! Hazard: an error message is printed, logged and pasted into issues, and a bottle's
//! `env` values may be secrets. No variant holds a value from a manifest: errors carry the
//! file, the line (when the YAML parser knows it), the key path and a description of
//! what was expected. The YAML parser's own error is never kept as a source, because its
//! message and its `Debug` quote the offending scalar.

use std::fmt;
use std::path::PathBuf;

/// Where in which file: `path:line`, or only `path` when the line is unknown.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SourcePos {
    /// The bottle file.
    pub file: PathBuf,
    /// 1-based line in the file (not in the frontmatter), when known.
    pub line: Option<u64>,
}

impl SourcePos {
    pub(crate) fn file(file: impl Into<PathBuf>) -> SourcePos {
        SourcePos { file: file.into(), line: None }
    }
}

impl fmt::Display for SourcePos {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.line {
            Some(line) => write!(f, "{}:{line}", self.file.display()),
            None => write!(f, "{}", self.file.display()),
        }
    }
}

/// Why a bottle could not be found, read, parsed, validated or merged.
#[derive(Debug, thiserror::Error)]
pub enum ManifestError {
    /// A bottle name (on the command line or in `extends`) is not `[a-z][a-z0-9-]*`.
    #[error("bottle name {name:?} is invalid: {reason}")]
    BadName {
        /// The name as given (names are not secrets).
        name: String,
        /// Which rule it breaks.
        reason: &'static str,
    },
    /// No file for the name in any directory of the search path.
    #[error(
        "no bottle named {name:?} (looked in {}){}",
        list_paths(searched),
        ignored_in_cwd.as_ref().map(|p| format!("; {} exists but bottles are never read from the current directory: pass its path explicitly if you trust it", p.display())).unwrap_or_default()
    )]
    NotFound {
        /// The name.
        name: String,
        /// The files looked for, in order.
        searched: Vec<PathBuf>,
        /// A file of that name under the current directory, which is never read implicitly.
        ignored_in_cwd: Option<PathBuf>,
    },
    /// The file could not be read.
    #[error("cannot read bottle file {}", path.display())]
    Read {
        /// The file.
        path: PathBuf,
        /// The I/O error.
        #[source]
        source: std::io::Error,
    },
    /// The file is larger than a bottle file can reasonably be.
    #[error("bottle file {} is larger than {limit} bytes", path.display())]
    TooLarge {
        /// The file.
        path: PathBuf,
        /// The limit.
        limit: u64,
    },
    /// The file is not UTF-8.
    #[error("bottle file {} is not UTF-8 text", path.display())]
    NotUtf8 {
        /// The file.
        path: PathBuf,
    },
    /// The file does not start with a `---` line.
    #[error("{}: no frontmatter: a bottle file starts with a line `---`", path.display())]
    NoFrontmatter {
        /// The file.
        path: PathBuf,
    },
    /// The frontmatter opened on line 1 is never closed.
    #[error("{}: the frontmatter opened on line 1 is not closed by a line `---`", path.display())]
    UnclosedFrontmatter {
        /// The file.
        path: PathBuf,
    },
    /// A key the format does not have.
    #[error("{at}: unknown key `{key_path}`{}", suggestion.map(|s| format!("; did you mean `{s}`?")).unwrap_or_default())]
    UnknownKey {
        /// Where.
        at: SourcePos,
        /// Dotted path of the key, e.g. `git-gate.repos.myrepo.ulr`.
        key_path: String,
        /// The closest valid key at that level, if one is close.
        suggestion: Option<&'static str>,
    },
    /// A key the format had once and dropped (or reserves); the hint says what to write.
    #[error("{at}: key `{key_path}` is no longer accepted: {hint}")]
    RemovedKey {
        /// Where.
        at: SourcePos,
        /// Dotted path of the key.
        key_path: String,
        /// How to migrate.
        hint: &'static str,
    },
    /// A required key is absent.
    #[error("{at}: `{key_path}` needs the key `{key}`")]
    MissingKey {
        /// Where.
        at: SourcePos,
        /// The mapping that lacks it (empty for the top level).
        key_path: String,
        /// The missing key.
        key: &'static str,
    },
    /// A value of the wrong type (the value itself is not repeated).
    #[error("{at}: `{key_path}`: expected {expected}")]
    WrongType {
        /// Where.
        at: SourcePos,
        /// Dotted path of the value.
        key_path: String,
        /// What the format wants there.
        expected: String,
    },
    /// A value outside a closed set (the value itself is not repeated).
    #[error("{at}: `{key_path}`: unknown value, expected one of {}{}", expected.join(", "), suggestion.map(|s| format!("; did you mean `{s}`?")).unwrap_or_default())]
    UnknownValue {
        /// Where.
        at: SourcePos,
        /// Dotted path of the value.
        key_path: String,
        /// The accepted values.
        expected: Vec<&'static str>,
        /// The closest accepted value, if one is close.
        suggestion: Option<&'static str>,
    },
    /// The same key twice in one mapping.
    #[error("{at}: duplicate key `{key_path}`")]
    DuplicateKey {
        /// Where.
        at: SourcePos,
        /// Dotted path of the key.
        key_path: String,
    },
    /// The frontmatter is not well-formed YAML.
    #[error("{at}: invalid YAML in the frontmatter: {problem}")]
    Syntax {
        /// Where.
        at: SourcePos,
        /// The parser's description, with any quoted text cut out.
        problem: String,
    },
    /// A value that parses but breaks a rule of the format.
    #[error("{at}: `{key_path}`: {problem}")]
    Invalid {
        /// Where.
        at: SourcePos,
        /// Dotted path of the value.
        key_path: String,
        /// The rule (never the value, except for names and hosts, which are not secrets).
        problem: String,
    },
    /// A bottle lists itself in `extends`.
    #[error("{}: bottle {name:?} extends itself", path.display())]
    SelfReference {
        /// The bottle.
        name: String,
        /// Its file.
        path: PathBuf,
    },
    /// Bottles extend each other in a loop.
    #[error("bottles extend each other in a cycle: {}", chain.join(" -> "))]
    Cycle {
        /// The loop, starting and ending with the same bottle.
        chain: Vec<String>,
    },
    /// A parent named in `extends` does not exist.
    #[error(
        "bottle {child:?} extends {parent:?}, which does not exist (chain: {}; looked in {})",
        chain.join(" -> "),
        list_paths(searched)
    )]
    MissingParent {
        /// The bottle whose `extends` names it.
        child: String,
        /// The missing parent.
        parent: String,
        /// From the bottle asked for down to `child`.
        chain: Vec<String>,
        /// The files looked for.
        searched: Vec<PathBuf>,
    },
    /// The merged bottle breaks a rule no single file breaks.
    #[error("bottle {name:?}: `{key_path}`: {problem}")]
    Merged {
        /// The bottle asked for.
        name: String,
        /// Dotted path of the merged value.
        key_path: String,
        /// What is wrong, naming the files involved.
        problem: String,
    },
}

fn list_paths(paths: &[PathBuf]) -> String {
    if paths.is_empty() {
        return "nowhere: neither HOME nor XDG_CONFIG_HOME is set".to_string();
    }
    paths.iter().map(|p| p.display().to_string()).collect::<Vec<_>>().join(", ")
}

/// The crate's result type.
pub type Result<T, E = ManifestError> = std::result::Result<T, E>;
