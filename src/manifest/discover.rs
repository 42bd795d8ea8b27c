//! Where bottle files are looked for, and what a bottle name may be.
//!
//! Hazard: the trust boundary. A bottle routes host secrets to hosts; a `bottles/`
//! directory in a cloned repository must never be read implicitly, or the repository
//! could redirect a token to its own server. Only the user's own directories are
//! searched, and a file elsewhere is read only when its path is given. Names are checked
//! before they become paths, so `extends: ../../x` cannot leave the search path.
//!
//! `$HOME`, `$XDG_CONFIG_HOME` and the current directory are parameters, so tests use
//! temporary directories and never the real home.

use std::path::{Path, PathBuf};

use super::error::{ManifestError, Result};

/// Longest bottle name (names end up in container and network names).
pub const MAX_NAME_LEN: usize = 63;

/// The directories bottles are read from, in order, and the places that are not.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SearchPath {
    dirs: Vec<PathBuf>,
    home: Option<PathBuf>,
    cwd: Option<PathBuf>,
}

impl SearchPath {
    /// `$XDG_CONFIG_HOME/bottle/bottles` (or `$HOME/.config/bottle/bottles` when it is
    /// unset, empty or relative), then the reference system's `$HOME/.bot-bottle/bottles`
    /// (read only). `cwd` is only used to warn about bottles that are not read there.
    pub fn new(
        home: Option<&Path>,
        xdg_config_home: Option<&Path>,
        cwd: Option<&Path>,
    ) -> SearchPath {
        let home = home.filter(|h| h.is_absolute()).map(Path::to_path_buf);
        let config = xdg_config_home
            .filter(|x| x.is_absolute())
            .map(Path::to_path_buf)
            .or_else(|| home.as_ref().map(|h| h.join(".config")));
        let mut dirs = Vec::new();
        dirs.extend(config.map(|c| c.join("bottle").join("bottles")));
        dirs.extend(home.as_ref().map(|h| h.join(".bot-bottle").join("bottles")));
        SearchPath { dirs, home, cwd: cwd.map(Path::to_path_buf) }
    }

    /// From this process's `HOME`, `XDG_CONFIG_HOME` and current directory (for `main`).
    pub fn from_process_env() -> SearchPath {
        let home = std::env::var_os("HOME").map(PathBuf::from);
        let xdg = std::env::var_os("XDG_CONFIG_HOME").map(PathBuf::from);
        let cwd = std::env::current_dir().ok();
        SearchPath::new(home.as_deref(), xdg.as_deref(), cwd.as_deref())
    }

    /// The searched directories, in order.
    pub fn dirs(&self) -> &[PathBuf] {
        &self.dirs
    }

    /// The home directory (for `~/` in paths), if known.
    pub fn home(&self) -> Option<&Path> {
        self.home.as_deref()
    }

    /// `path` made absolute against the current directory, when that is known.
    pub fn absolute(&self, path: &Path) -> PathBuf {
        match &self.cwd {
            Some(cwd) if path.is_relative() => cwd.join(path),
            _ => path.to_path_buf(),
        }
    }

    /// The file of the bottle `name`: the first directory that has `<name>.md`.
    pub fn find(&self, name: &str) -> Result<PathBuf> {
        validate_name(name)?;
        let candidates = self.candidates(name);
        match candidates.iter().find(|p| p.is_file()) {
            Some(found) => Ok(found.clone()),
            None => Err(ManifestError::NotFound {
                name: name.to_string(),
                searched: candidates,
                ignored_in_cwd: self.ignored_in_cwd(name),
            }),
        }
    }

    /// The files looked for, in order.
    pub(crate) fn candidates(&self, name: &str) -> Vec<PathBuf> {
        self.dirs.iter().map(|d| d.join(format!("{name}.md"))).collect()
    }

    /// A bottle of that name under the current directory, which is never read implicitly.
    pub(crate) fn ignored_in_cwd(&self, name: &str) -> Option<PathBuf> {
        let cwd = self.cwd.as_ref()?;
        [cwd.join("bottles"), cwd.join(".bot-bottle").join("bottles")]
            .into_iter()
            .map(|d| d.join(format!("{name}.md")))
            .find(|p| p.is_file() && !self.dirs.iter().any(|d| p.starts_with(d)))
    }
}

/// What the command line named: a bottle on the search path, or a file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Target {
    /// A name, looked up on the search path.
    Name(String),
    /// An explicit path (it has a `/` or ends in `.md`), read as given.
    Path(PathBuf),
}

impl Target {
    /// `dev` is a name; `./dev.md`, `dev.md` and `/x/dev.md` are paths.
    pub fn parse(name_or_path: &str) -> Result<Target> {
        if name_or_path.contains('/') || name_or_path.ends_with(".md") {
            return Ok(Target::Path(PathBuf::from(name_or_path)));
        }
        validate_name(name_or_path)?;
        Ok(Target::Name(name_or_path.to_string()))
    }
}

/// Checks that `name` is `[a-z][a-z0-9-]*` and at most [`MAX_NAME_LEN`] long.
pub fn validate_name(name: &str) -> Result<()> {
    let bad = |reason| Err(ManifestError::BadName { name: name.to_string(), reason });
    let Some(first) = name.chars().next() else {
        return bad("a name cannot be empty");
    };
    if !first.is_ascii_lowercase() {
        return bad("a name starts with a lowercase letter (a-z)");
    }
    if !name.chars().all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-') {
        return bad("a name has only lowercase letters, digits and '-'");
    }
    if name.len() > MAX_NAME_LEN {
        return bad("a name is at most 63 characters");
    }
    Ok(())
}

/// The bottle name of a file: its stem, which must be a valid name, with `.md`.
pub(crate) fn name_of_file(path: &Path) -> Result<String> {
    let file_name = path.file_name().and_then(|n| n.to_str()).unwrap_or_default();
    let Some(stem) = file_name.strip_suffix(".md") else {
        return Err(ManifestError::BadName {
            name: file_name.to_string(),
            reason: "a bottle file is named <name>.md",
        });
    };
    validate_name(stem)?;
    Ok(stem.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn reason(result: Result<()>) -> &'static str {
        match result {
            Err(ManifestError::BadName { reason, .. }) => reason,
            other => panic!("expected BadName, got {other:?}"),
        }
    }

    #[test]
    fn names_follow_the_reference_rule() {
        validate_name("dev").unwrap();
        validate_name("a1-b2").unwrap();
        assert_eq!(reason(validate_name("")), "a name cannot be empty");
        assert_eq!(reason(validate_name("Dev")), "a name starts with a lowercase letter (a-z)");
        assert_eq!(reason(validate_name("1dev")), "a name starts with a lowercase letter (a-z)");
        assert_eq!(reason(validate_name("-dev")), "a name starts with a lowercase letter (a-z)");
        assert_eq!(
            reason(validate_name("my_bottle")),
            "a name has only lowercase letters, digits and '-'"
        );
        assert_eq!(
            reason(validate_name("a..b")),
            "a name has only lowercase letters, digits and '-'"
        );
        assert_eq!(reason(validate_name(&"a".repeat(64))), "a name is at most 63 characters");
    }

    #[test]
    fn the_config_dir_comes_first_and_the_reference_dir_second() {
        let search = SearchPath::new(Some(Path::new("/h")), None, None);
        assert_eq!(
            search.dirs(),
            [PathBuf::from("/h/.config/bottle/bottles"), PathBuf::from("/h/.bot-bottle/bottles")]
        );
        let search = SearchPath::new(Some(Path::new("/h")), Some(Path::new("/x")), None);
        assert_eq!(search.dirs()[0], PathBuf::from("/x/bottle/bottles"));
        // A relative XDG_CONFIG_HOME is ignored, as the XDG spec says.
        let search = SearchPath::new(Some(Path::new("/h")), Some(Path::new("rel")), None);
        assert_eq!(search.dirs()[0], PathBuf::from("/h/.config/bottle/bottles"));
        assert!(SearchPath::new(None, None, Some(Path::new("/cwd"))).dirs().is_empty());
    }

    #[test]
    fn targets_with_a_slash_or_md_suffix_are_paths() {
        assert_eq!(Target::parse("dev").unwrap(), Target::Name("dev".into()));
        assert_eq!(Target::parse("dev.md").unwrap(), Target::Path("dev.md".into()));
        assert_eq!(Target::parse("./x/dev").unwrap(), Target::Path("./x/dev".into()));
        match Target::parse("Dev") {
            Err(ManifestError::BadName { name, .. }) => assert_eq!(name, "Dev"),
            other => panic!("expected BadName, got {other:?}"),
        }
    }

    #[test]
    fn a_file_is_named_by_its_stem() {
        assert_eq!(name_of_file(Path::new("/a/dev.md")).unwrap(), "dev");
        match name_of_file(Path::new("/a/dev.yaml")) {
            Err(ManifestError::BadName { reason, .. }) => {
                assert_eq!(reason, "a bottle file is named <name>.md");
            }
            other => panic!("expected BadName, got {other:?}"),
        }
        match name_of_file(Path::new("/a/My_Dev.md")) {
            Err(ManifestError::BadName { name, .. }) => assert_eq!(name, "My_Dev"),
            other => panic!("expected BadName, got {other:?}"),
        }
    }
}
