//! YAML frontmatter to `Frontmatter`, with errors that name the key path and never the
//! value.
//!
//! Hazard: serde-saphyr's messages quote the offending scalar (`invalid type: string
//! "sk-..."`), and an `env` value may be a secret. Errors are rebuilt here from the
//! structured parts (key path from serde_path_to_error, line, expected type or field
//! list); free-form parser text is kept only with its quoted parts cut out.
//!
//! Strictness follows the reference: unknown keys fail with the closest valid key, removed
//! keys fail with a migration hint, duplicate keys fail, and a plain scalar that YAML would
//! read as a number or boolean is not a string (`PORT: 8080` must be quoted).

use std::cell::RefCell;
use std::path::Path;

use serde::Deserialize;

use super::error::{ManifestError, Result, SourcePos};
use super::schema::{Frontmatter, Probe, RESERVED_MARK};

/// Keys the reference dropped or reserves, by key path (`[]` stands for any index), with
/// what to write instead.
const REMOVED_KEYS: &[(&str, &str)] = &[
    (
        "supervise",
        "supervision is always on (held requests wait in the approval queue, see `bottle approvals`); delete the key",
    ),
    (
        "git",
        "`git` was renamed: write the upstreams as `git-gate: {repos: {<name>: {url, identity, host_key}}}`",
    ),
    ("git_user", "`git_user` moved to `git-gate.user` (`{name, email}`)"),
    (
        "runtime",
        "the runtime is not chosen per bottle: gVisor (runsc) is used automatically when the container engine has it; delete the key",
    ),
    (
        "egress.routes[].path_allowlist",
        "`path_allowlist` was replaced by `matches`: write `matches: [{paths: [{type: prefix, value: /api/}]}]`",
    ),
    (
        "egress.routes[].role",
        "`role` is reserved: provider routes (for example the model API) come from `agent_provider`; delete the key",
    ),
];

/// Field names serde lists as valid that are never suggested (reserved ones).
const NEVER_SUGGESTED: &[&str] = &["role"];

/// Parses the frontmatter of `file`; `line_offset` is the number of file lines before the
/// YAML's first line.
pub(crate) fn frontmatter(yaml: &str, file: &Path, line_offset: u64) -> Result<Frontmatter> {
    let parsed = deserialize_with_path::<Frontmatter>(yaml)
        .map_err(|failure| map_error(&failure.1, &failure.0, file, line_offset))?;
    // A second, lenient pass finds reserved keys that the schema's own types accept.
    if let Err(failure) = deserialize_with_path::<Probe>(yaml)
        && is_reserved_marker(&failure.1)
    {
        let (path, err) = *failure;
        return Err(removed_or_unknown(&path, Vec::new(), position(&err, file, line_offset)));
    }
    Ok(parsed)
}

fn options() -> serde_saphyr::Options {
    let mut options = serde_saphyr::Options::default();
    // Strings must be strings: `A: 1`, `A: yes`, `A: null` in a string field are errors.
    options.no_schema = true;
    options.strict_booleans = true;
    options.duplicate_keys = serde_saphyr::DuplicateKeyPolicy::Error;
    options.with_snippet = false;
    options
}

/// Deserializes `yaml`, returning the key path of the failure with the error.
fn deserialize_with_path<T: for<'de> Deserialize<'de>>(
    yaml: &str,
) -> std::result::Result<T, Box<(String, serde_saphyr::Error)>> {
    let failed_at = RefCell::new(String::new());
    serde_saphyr::with_deserializer_from_str_with_options(yaml, options(), |deserializer| {
        serde_path_to_error::deserialize::<_, T>(deserializer).map_err(|err| {
            *failed_at.borrow_mut() = err.path().to_string();
            err.into_inner()
        })
    })
    .map_err(|err| Box::new((clean_path(&failed_at.into_inner()), err)))
}

/// serde_path_to_error writes `.` for the root and `?` for a segment it cannot name.
fn clean_path(path: &str) -> String {
    let path = path.trim_end_matches(".?").trim_end_matches('?');
    if path == "." { String::new() } else { path.to_string() }
}

fn position(err: &serde_saphyr::Error, file: &Path, line_offset: u64) -> SourcePos {
    SourcePos {
        file: file.to_path_buf(),
        line: err.location().map(|l| l.line()).filter(|&l| l > 0).map(|l| l + line_offset),
    }
}

fn is_reserved_marker(err: &serde_saphyr::Error) -> bool {
    matches!(err.without_snippet(), serde_saphyr::Error::Message { msg, .. } if msg == RESERVED_MARK)
}

fn map_error(
    err: &serde_saphyr::Error,
    path: &str,
    file: &Path,
    line_offset: u64,
) -> ManifestError {
    use serde_saphyr::Error as E;
    let at = position(err, file, line_offset);
    let key_path = path.to_string();
    match err.without_snippet() {
        E::SerdeUnknownField { expected, .. } => removed_or_unknown(path, expected.clone(), at),
        E::SerdeMissingField { field, .. } => {
            ManifestError::MissingKey { at, key_path, key: field }
        }
        E::SerdeInvalidType { expected, .. }
        | E::SerdeInvalidValue { expected, .. }
        | E::SerdeInvalidLength { expected, .. } => {
            ManifestError::WrongType { at, key_path, expected: expected.clone() }
        }
        E::Unexpected { expected, .. } => {
            ManifestError::WrongType { at, key_path, expected: format!("a {expected}") }
        }
        E::QuotingRequired { .. } => ManifestError::WrongType {
            at,
            key_path,
            expected: "a string (quote values that read as numbers or booleans)".into(),
        },
        E::NullIntoString { .. } => ManifestError::WrongType {
            at,
            key_path,
            expected: "a string, not an empty value".into(),
        },
        E::InvalidScalar { ty, .. } => {
            ManifestError::WrongType { at, key_path, expected: format!("a value of type {ty}") }
        }
        E::InvalidBooleanStrict { .. } => {
            ManifestError::WrongType { at, key_path, expected: "`true` or `false`".into() }
        }
        E::SerdeUnknownVariant { variant, expected, .. } => ManifestError::UnknownValue {
            at,
            key_path,
            suggestion: closest(variant, expected),
            expected: expected.clone(),
        },
        E::DuplicateMappingKey { key, .. } => {
            let key_path = match key {
                Some(key) if path.is_empty() => key.clone(),
                Some(key) => format!("{path}.{key}"),
                None => key_path,
            };
            ManifestError::DuplicateKey { at, key_path }
        }
        E::MultipleDocuments { .. } => ManifestError::Syntax {
            at,
            problem: "more than one YAML document; the frontmatter is one mapping".into(),
        },
        other => ManifestError::Syntax { at, problem: without_quoted_text(&other.to_string()) },
    }
}

/// An unknown key is a removed one if the table names it, otherwise unknown with the
/// closest valid key at its level.
fn removed_or_unknown(path: &str, expected: Vec<&'static str>, at: SourcePos) -> ManifestError {
    let pattern = index_free(path);
    if let Some((_, hint)) = REMOVED_KEYS.iter().find(|(key, _)| *key == pattern) {
        return ManifestError::RemovedKey { at, key_path: path.to_string(), hint };
    }
    let key = path.rsplit('.').next().unwrap_or(path);
    let candidates: Vec<&'static str> =
        expected.into_iter().filter(|k| !NEVER_SUGGESTED.contains(k)).collect();
    ManifestError::UnknownKey {
        at,
        key_path: path.to_string(),
        suggestion: closest(key, &candidates),
    }
}

/// `egress.routes[3].role` -> `egress.routes[].role`.
fn index_free(path: &str) -> String {
    let mut out = String::with_capacity(path.len());
    let mut in_index = false;
    for c in path.chars() {
        match c {
            '[' => {
                in_index = true;
                out.push('[');
            }
            ']' => {
                in_index = false;
                out.push(']');
            }
            _ if in_index => {}
            _ => out.push(c),
        }
    }
    out
}

/// The candidate nearest to `written` by edit distance, if it is near enough to be a typo.
pub(crate) fn closest(written: &str, candidates: &[&'static str]) -> Option<&'static str> {
    candidates
        .iter()
        .map(|c| (strsim::osa_distance(&written.to_ascii_lowercase(), &c.to_ascii_lowercase()), *c))
        // A third of the word (transpositions count once): `ulr` -> `url`, not `rol` -> `doh`.
        .filter(|(distance, c)| *distance <= (c.len() / 3).max(1))
        .min()
        .map(|(_, c)| c)
}

/// Parser text with quoted parts (which may hold a value) replaced by `…`, and the
/// trailing location (reported separately) cut off.
fn without_quoted_text(message: &str) -> String {
    let message = message.split(" at line ").next().unwrap_or(message);
    let mut out = String::with_capacity(message.len());
    let mut open: Option<char> = None;
    for c in message.chars() {
        match open {
            Some(quote) if c == quote => open = None,
            Some(_) => {}
            None if matches!(c, '"' | '\'' | '`') => {
                open = Some(c);
                out.push('…');
            }
            None => out.push(c),
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn suggestions_are_near_misses_only() {
        let keys = ["url", "identity", "host_key"];
        assert_eq!(closest("ulr", &keys), Some("url"));
        assert_eq!(closest("hostkey", &keys), Some("host_key"));
        assert_eq!(closest("Identity", &keys), Some("identity"));
        assert_eq!(closest("completely-different", &keys), None);
        assert_eq!(closest("rol", &["doh", "git"]), None);
    }

    #[test]
    fn index_free_paths_match_the_removed_key_table() {
        assert_eq!(index_free("egress.routes[12].role"), "egress.routes[].role");
        assert_eq!(index_free("supervise"), "supervise");
    }

    #[test]
    fn quoted_parser_text_is_cut_out() {
        assert_eq!(
            without_quoted_text("found character 'x' that \"s3cr3t\" at line 3, column 4"),
            "found character … that …"
        );
    }
}
