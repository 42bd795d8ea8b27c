//! Splitting a bottle file into its YAML frontmatter and its Markdown body (the prompt).
//!
//! Hazard: files written on Windows or by editors that add a byte-order mark must read
//! the same as plain ones, or the first key silently becomes `\u{feff}env`; and line
//! numbers in errors must point into the file, not into the extracted YAML.

/// A bottle file cut in two.
#[derive(Debug, PartialEq, Eq)]
pub(crate) struct Split {
    /// The YAML between the `---` lines, with LF line ends.
    pub(crate) yaml: String,
    /// Lines of the file before the YAML's first line (1: the opening `---`).
    pub(crate) line_offset: u64,
    /// The body with leading blank lines and trailing whitespace removed.
    pub(crate) body: String,
}

/// Why a file has no usable frontmatter.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum SplitError {
    /// The first line is not `---`.
    Missing,
    /// No closing `---` line.
    Unclosed,
}

/// Splits `text` (BOM and CRLF tolerated).
pub(crate) fn split(text: &str) -> Result<Split, SplitError> {
    let text = text.strip_prefix('\u{feff}').unwrap_or(text);
    let text = text.replace("\r\n", "\n");
    let mut lines = text.split_inclusive('\n');
    let first = lines.next().ok_or(SplitError::Missing)?;
    if !is_fence(first) {
        return Err(SplitError::Missing);
    }
    let mut yaml = String::new();
    for line in lines.by_ref() {
        if is_fence(line) {
            let body: String = lines.collect();
            return Ok(Split { yaml, line_offset: 1, body: tidy_body(&body) });
        }
        yaml.push_str(line);
    }
    Err(SplitError::Unclosed)
}

fn is_fence(line: &str) -> bool {
    line.trim_end() == "---"
}

fn tidy_body(body: &str) -> String {
    let start =
        body.split_inclusive('\n').take_while(|l| l.trim().is_empty()).map(str::len).sum::<usize>();
    body[start..].trim_end().to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn frontmatter_and_body_are_separated() {
        let s = split("---\nenv: {}\n---\n\nYou are a bot.\n\nBe careful.\n").unwrap();
        assert_eq!(s.yaml, "env: {}\n");
        assert_eq!(s.line_offset, 1);
        assert_eq!(s.body, "You are a bot.\n\nBe careful.");
    }

    #[test]
    fn a_byte_order_mark_and_crlf_line_ends_read_like_plain_lf() {
        let plain = split("---\nenv:\n  A: b\n---\nprompt\n").unwrap();
        let windows = split("\u{feff}---\r\nenv:\r\n  A: b\r\n---\r\nprompt\r\n").unwrap();
        assert_eq!(plain, windows);
    }

    #[test]
    fn an_empty_frontmatter_and_no_body_are_allowed() {
        let s = split("---\n---\n").unwrap();
        assert_eq!((s.yaml.as_str(), s.body.as_str()), ("", ""));
        let s = split("---\n---").unwrap();
        assert_eq!((s.yaml.as_str(), s.body.as_str()), ("", ""));
    }

    #[test]
    fn a_file_without_an_opening_fence_has_no_frontmatter() {
        assert_eq!(split("env: {}\n---\n"), Err(SplitError::Missing));
        assert_eq!(split(""), Err(SplitError::Missing));
        assert_eq!(split(" ---\nenv: {}\n---\n"), Err(SplitError::Missing));
    }

    #[test]
    fn a_frontmatter_without_a_closing_fence_is_refused() {
        assert_eq!(split("---\nenv: {}\n"), Err(SplitError::Unclosed));
        assert_eq!(
            split("---\nenv: {}\n--- \n"),
            Ok(Split { yaml: "env: {}\n".into(), line_offset: 1, body: String::new() })
        );
    }
}
