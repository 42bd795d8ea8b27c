//! Turning serde's errors into [`ProtocolError`]s: a key path, a suggestion, no values.
//!
//! Hazard: serde and toml put the offending value into their messages (`invalid type:
//! string "sk-live-...", expected f64`) and toml quotes the whole source line, which may
//! hold a secret. Every message passes through [`describe`], which keeps the schema's
//! side (field names, variant names, the expected type) and drops the input's side.

use std::fmt;

/// Why a value of this crate could not be read or written. Messages name key paths and
/// schema names only, never a configured value.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ProtocolError {
    /// The text is not valid TOML or JSON at all.
    #[error("not valid {format}: {message} (line {line}, column {column})")]
    Syntax {
        /// `TOML` or `JSON`.
        format: &'static str,
        /// What is wrong, without the offending text.
        message: String,
        /// 1-based line.
        line: usize,
        /// 1-based column.
        column: usize,
    },
    /// A key the schema does not have.
    #[error("unknown key `{path}`{}", DidYouMean(suggestion.as_deref()))]
    UnknownKey {
        /// Where, including the key itself (`daemon[2].builtin.egress.listn`).
        path: String,
        /// The closest valid key at that place, if one is close.
        suggestion: Option<String>,
    },
    /// A value that is not one of the names the schema allows there.
    #[error("`{path}` is not one of {}{}", Names(expected), DidYouMean(suggestion.as_deref()))]
    UnknownVariant {
        /// Where (`daemon[0].restart`).
        path: String,
        /// Every name allowed there.
        expected: Vec<String>,
        /// The closest allowed name, if one is close.
        suggestion: Option<String>,
    },
    /// A value of the wrong type or shape, or a missing key.
    #[error("`{path}`: {problem}")]
    Invalid {
        /// Where.
        path: String,
        /// What is wrong, in the schema's words.
        problem: String,
    },
    /// A value could not be rendered (a bug in the caller's value, such as a NaN).
    #[error("cannot render the {format}: {message}")]
    Render {
        /// `TOML` or `JSON`.
        format: &'static str,
        /// Why.
        message: String,
    },
}

struct DidYouMean<'a>(Option<&'a str>);

impl fmt::Display for DidYouMean<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.0 {
            Some(s) => write!(f, "; did you mean `{s}`?"),
            None => Ok(()),
        }
    }
}

struct Names<'a>(&'a [String]);

impl fmt::Display for Names<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let quoted: Vec<String> = self.0.iter().map(|n| format!("`{n}`")).collect();
        f.write_str(&quoted.join(", "))
    }
}

/// The path as shown to people: `the top level` for the root.
fn shown(path: &str) -> String {
    if path.is_empty() || path == "." { "the top level".into() } else { path.into() }
}

/// The backtick-quoted names in a serde message, in order. serde quotes only schema
/// names and the unknown key or variant this way.
fn backticked(message: &str) -> Vec<String> {
    message.split('`').skip(1).step_by(2).map(str::to_string).collect()
}

/// Maps one serde error message at `path` to an error that names the path, suggests the
/// closest valid name and quotes no value.
pub(crate) fn describe(path: &str, message: &str) -> ProtocolError {
    if let Some(rest) = message.strip_prefix("unknown field ") {
        let names = backticked(rest);
        let suggestion = names.split_first().and_then(|(got, valid)| closest(got, valid));
        return ProtocolError::UnknownKey { path: shown(path), suggestion };
    }
    if let Some(rest) = message.strip_prefix("unknown variant ") {
        let names = backticked(rest);
        let (got, expected) = names.split_first().map_or(("", &[][..]), |(g, e)| (g, e));
        return ProtocolError::UnknownVariant {
            path: shown(path),
            expected: expected.to_vec(),
            suggestion: closest(got, expected),
        };
    }
    let problem = if message.starts_with("missing field ")
        || message.starts_with("duplicate field ")
    {
        message.replacen("field", "key", 1)
    } else if let Some(rest) = message.strip_prefix("invalid type: ") {
        match rest.split_once(", expected ") {
            Some(("unit variant", "newtype variant")) => {
                "needs its settings as a table, not a bare name".into()
            }
            Some((_, expected)) => format!("wrong type, expected {}", strip_values(expected)),
            None => "wrong type".into(),
        }
    } else if let Some(rest) = message.strip_prefix("invalid value: ") {
        match rest.split_once(", expected ") {
            Some((_, expected)) => format!("invalid value, expected {}", strip_values(expected)),
            None => "invalid value".into(),
        }
    } else if let Some(rest) = message.strip_prefix("invalid length ") {
        match rest.split_once(", expected ") {
            Some((_, expected)) => format!("wrong length, expected {}", strip_values(expected)),
            None => "wrong length".into(),
        }
    } else {
        strip_values(message)
    };
    ProtocolError::Invalid { path: shown(path), problem }
}

/// A TOML or JSON syntax error without the offending text. toml quotes the source line
/// and both quote the token they choke on; any double-quoted part becomes `"..."`.
pub(crate) fn syntax(
    format: &'static str,
    message: &str,
    line: usize,
    column: usize,
) -> ProtocolError {
    ProtocolError::Syntax { format, message: strip_values(message), line, column }
}

/// Reads a `T` from TOML text, every error mapped by [`describe`] or [`syntax`].
pub(crate) fn from_toml<T: serde::de::DeserializeOwned>(text: &str) -> Result<T, ProtocolError> {
    let de = toml::Deserializer::parse(text).map_err(|e| toml_syntax(&e, text))?;
    serde_path_to_error::deserialize(de).map_err(|e| {
        let path = e.path().to_string();
        describe(&path, e.inner().message())
    })
}

fn toml_syntax(e: &toml::de::Error, text: &str) -> ProtocolError {
    let (line, column) = e.span().map_or((0, 0), |span| line_column(text, span.start));
    syntax("TOML", e.message(), line, column)
}

/// Renders a `T` as TOML.
pub(crate) fn to_toml<T: serde::Serialize>(value: &T) -> Result<String, ProtocolError> {
    toml::to_string(value).map_err(|e| ProtocolError::Render {
        format: "TOML",
        message: strip_values(&e.to_string()),
    })
}

/// Reads a `T` from one JSON document, every error mapped by [`describe`] or [`syntax`].
pub(crate) fn from_json<T: serde::de::DeserializeOwned>(bytes: &[u8]) -> Result<T, ProtocolError> {
    let mut de = serde_json::Deserializer::from_slice(bytes);
    let value: T = serde_path_to_error::deserialize(&mut de).map_err(|e| {
        let path = e.path().to_string();
        json_error(&path, e.inner())
    })?;
    de.end().map_err(|e| json_error("", &e))?;
    Ok(value)
}

fn json_error(path: &str, e: &serde_json::Error) -> ProtocolError {
    let text = e.to_string();
    // serde_json appends " at line L column C"; the position is kept separately.
    let message = text.rfind(" at line ").map_or(text.as_str(), |i| &text[..i]);
    match e.classify() {
        serde_json::error::Category::Data => describe(path, message),
        _ => syntax("JSON", message, e.line(), e.column()),
    }
}

/// 1-based line and column of byte `offset` in `text`.
pub(crate) fn line_column(text: &str, offset: usize) -> (usize, usize) {
    let mut offset = offset.min(text.len());
    while !text.is_char_boundary(offset) {
        offset -= 1;
    }
    let before = &text[..offset];
    let line = before.matches('\n').count() + 1;
    let column = before.len() - before.rfind('\n').map_or(0, |i| i + 1) + 1;
    (line, column)
}

/// Replaces every double-quoted part of a message by `"..."` and drops the rest of a
/// line after a newline (where toml starts quoting source).
fn strip_values(message: &str) -> String {
    let first = message.lines().next().unwrap_or_default();
    let mut out = String::new();
    let mut in_quotes = false;
    for c in first.chars() {
        if c == '"' {
            out.push_str(if in_quotes { "...\"" } else { "\"" });
            in_quotes = !in_quotes;
        } else if !in_quotes {
            out.push(c);
        }
    }
    if in_quotes {
        out.push_str("...\"");
    }
    out
}

/// Levenshtein distance, for "did you mean".
fn distance(a: &str, b: &str) -> usize {
    let b: Vec<char> = b.chars().collect();
    let mut row: Vec<usize> = (0..=b.len()).collect();
    for (i, ca) in a.chars().enumerate() {
        let mut prev = row[0];
        row[0] = i + 1;
        for (j, cb) in b.iter().enumerate() {
            let cur = row[j + 1];
            row[j + 1] = (prev + usize::from(ca != *cb)).min(row[j] + 1).min(row[j + 1] + 1);
            prev = cur;
        }
    }
    row[b.len()]
}

/// The valid name closest to `got`, when it is close enough to be a typo.
fn closest(got: &str, valid: &[String]) -> Option<String> {
    valid
        .iter()
        .map(|v| (distance(got, v), v))
        .filter(|(d, v)| *d <= (v.len() / 2).max(2))
        .min()
        .map(|(_, v)| v.clone())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn unknown_fields_get_the_closest_schema_name() {
        let e = describe(
            "daemon[2].stop_timout",
            "unknown field `stop_timout`, expected one of `name`, `stop_timeout`, `restart`",
        );
        assert_eq!(
            e.to_string(),
            "unknown key `daemon[2].stop_timout`; did you mean `stop_timeout`?"
        );
        let e = describe("zzzzzz", "unknown field `zzzzzz`, expected `grace_seconds` or `daemon`");
        assert_eq!(e.to_string(), "unknown key `zzzzzz`");
    }

    #[test]
    fn an_unknown_variant_lists_the_names_and_never_the_value() {
        let e = describe(
            "daemon[0].restart",
            "unknown variant `sometimes`, expected one of `permanent`, `transient`, `temporary`",
        );
        let text = e.to_string();
        assert!(!text.contains("sometimes"), "{text}");
        assert!(text.contains("`permanent`, `transient`, `temporary`"), "{text}");
        let e = describe(
            "daemon[0].restart",
            "unknown variant `temporery`, expected `permanent` or `temporary`",
        );
        assert!(e.to_string().ends_with("did you mean `temporary`?"), "{e}");
    }

    #[test]
    fn type_errors_keep_the_expected_type_and_drop_the_value() {
        let e =
            describe("daemon[0].stop_timeout", "invalid type: string \"sk-live-1\", expected f64");
        assert_eq!(e.to_string(), "`daemon[0].stop_timeout`: wrong type, expected f64");
        let e = describe(
            "daemon[0].cwd",
            "something custom about \"sk-live-1\"\n  | line = \"sk-live-1\"",
        );
        assert!(!e.to_string().contains("sk-live"), "{e}");
    }
}
