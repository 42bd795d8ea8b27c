//! Normalization against evasion: the other spellings of the same bytes.
//!
//! Hazard: a scanner that only reads the raw bytes is beaten by one `base64` call, a
//! round of percent-encoding, a zero-width space inside the token or a Cyrillic `е` in
//! `sеcret`. Every view here is another spelling of the input the rules also run on:
//! iterative percent-decoding (bounded rounds), JSON/JS escapes, Unicode folding (NFKC,
//! zero-width and format characters dropped, tag characters mapped back to ASCII,
//! confusables folded to Latin), and decoded base64 / base64url / base32 / hex runs
//! (bounded depth and volume). Decoding is bounded so a crafted input cannot make the
//! scanner's work explode: the total decoded volume is at most [`MAX_DECODED_FACTOR`]
//! times the input.
//!
//! Where a view's offsets map back to the raw input (percent-decoding, a decoded run),
//! the view carries that map so a finding can be redacted in place; where they cannot
//! (Unicode folding, joined fields), a finding there cannot be redacted, only blocked.

use unicode_normalization::UnicodeNormalization;

/// How a view was derived from the raw text.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Encoding {
    /// The bytes as sent.
    Raw,
    /// Percent-decoded (one or more rounds).
    Percent,
    /// `\uXXXX` / `\xXX` escapes decoded.
    Escapes,
    /// Unicode-folded (NFKC, invisible characters dropped, confusables folded).
    Unicode,
    /// A base64 run decoded.
    Base64,
    /// A base32 run decoded.
    Base32,
    /// A hex run decoded.
    Hex,
    /// Query parameters or JSON string fields joined.
    Joined,
}

impl Encoding {
    /// Lowercase name, as in audit records.
    pub fn as_str(self) -> &'static str {
        match self {
            Encoding::Raw => "raw",
            Encoding::Percent => "percent",
            Encoding::Escapes => "escapes",
            Encoding::Unicode => "unicode",
            Encoding::Base64 => "base64",
            Encoding::Base32 => "base32",
            Encoding::Hex => "hex",
            Encoding::Joined => "joined",
        }
    }
}

/// Where a view's bytes came from in the raw text.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Origin {
    /// The raw text itself.
    Identity,
    /// View offset `i` is raw offset `map[i]`; `map[len]` is the end. Identity for the raw view.
    Mapped(Vec<usize>),
    /// The whole view came from `raw[start..end]` (a decoded run).
    Span(usize, usize),
    /// No usable map (folded or joined text).
    Unmapped,
}

/// One spelling of the input.
#[derive(Debug, Clone)]
pub struct View {
    /// The text the rules run on.
    pub text: String,
    /// The last transform applied.
    pub encoding: Encoding,
    /// Offsets back to the raw text.
    pub origin: Origin,
}

impl Origin {
    /// The raw span of `view[start..end]` of a view with this origin, if it can be told.
    pub fn raw_span(&self, start: usize, end: usize) -> Option<(usize, usize)> {
        match self {
            Origin::Mapped(map) => {
                let s = *map.get(start)?;
                // The end is where the byte after the last one starts in the raw text.
                let e = *map.get(end)?;
                Some((s, e.max(s)))
            }
            Origin::Identity => Some((start, end)),
            Origin::Span(s, e) => Some((*s, *e)),
            Origin::Unmapped => None,
        }
    }
}

/// At most this many percent-decoding rounds.
pub const MAX_PERCENT_ROUNDS: usize = 4;
/// Decoded runs are themselves normalized this deep (base64 of base64 of a token).
pub const MAX_DEPTH: usize = 2;
/// Shortest base64 / base32 run worth decoding (12 bytes of payload).
pub const MIN_B64_RUN: usize = 16;
/// Shortest hex run worth decoding (16 bytes of payload).
pub const MIN_HEX_RUN: usize = 32;
/// Total decoded bytes at most this many times the input.
pub const MAX_DECODED_FACTOR: usize = 2;

/// The views of `text` other than the raw one (for callers that scan `text` itself).
/// Clean ASCII text costs a vectorized search for `%` and `\` and one pass over 8-byte
/// blocks for encoded runs.
pub fn derived_views(text: &str) -> Vec<View> {
    let mut out = Vec::new();
    let mut budget = text.len().saturating_mul(MAX_DECODED_FACTOR) + 4096;
    expand(text, &Origin::Identity, &mut out, &mut budget, 0);
    out
}

/// False when no transform could change `bytes`: ASCII without `%`, `\` or a run long
/// enough to decode.
fn needs_work(bytes: &[u8]) -> bool {
    !bytes.is_ascii() || memchr::memchr2(b'%', b'\\', bytes).is_some() || has_long_run(bytes)
}

fn compose(outer: &Origin, inner: Vec<usize>) -> Origin {
    match outer {
        Origin::Identity => Origin::Mapped(inner),
        Origin::Mapped(map) => Origin::Mapped(inner.into_iter().map(|i| map[i]).collect()),
        Origin::Span(s, e) => Origin::Span(*s, *e),
        Origin::Unmapped => Origin::Unmapped,
    }
}

fn span_of(outer: &Origin, start: usize, end: usize) -> Origin {
    match outer {
        Origin::Identity => Origin::Span(start, end),
        Origin::Mapped(map) => Origin::Span(map[start], map[end]),
        Origin::Span(s, e) => Origin::Span(*s, *e),
        Origin::Unmapped => Origin::Unmapped,
    }
}

/// Percent rounds then escapes on one line: the decoded line and its byte map, if it
/// changed.
fn decode_line(line: &str) -> Option<(String, Vec<usize>, Encoding)> {
    let mut current: Option<(String, Vec<usize>)> = None;
    let mut encoding = Encoding::Escapes;
    // Percent-decoding and escapes alternate until nothing changes (an escape may
    // produce a `%XX`, a percent round a `\uXXXX`), within the round bound.
    for _ in 0..MAX_PERCENT_ROUNDS {
        let mut changed = false;
        let text = current.as_ref().map_or(line, |(t, _)| t.as_str());
        if text.as_bytes().contains(&b'%')
            && let Some((decoded, map)) = percent_decode(text)
        {
            encoding = Encoding::Percent;
            changed = true;
            current = Some(match current {
                None => (decoded, map),
                Some((_, outer)) => (decoded, map.into_iter().map(|i| outer[i]).collect()),
            });
        }
        let text = current.as_ref().map_or(line, |(t, _)| t.as_str());
        if text.contains('\\')
            && let Some((decoded, map)) = unescape(text)
        {
            changed = true;
            current = Some(match current {
                None => (decoded, map),
                Some((_, outer)) => (decoded, map.into_iter().map(|i| outer[i]).collect()),
            });
        }
        if !changed {
            break;
        }
    }
    current.map(|(t, m)| (t, m, encoding))
}

/// Index of the first byte >= 0x80: 64-byte chunks through std's vectorized `is_ascii`,
/// then a byte loop inside the one chunk that is not.
fn first_non_ascii(bytes: &[u8]) -> Option<usize> {
    let mut at = 0;
    for chunk in bytes.chunks(64) {
        if !chunk.is_ascii() {
            return chunk.iter().position(|&b| b >= 0x80).map(|i| at + i);
        }
        at += chunk.len();
    }
    None
}

/// Finds, left to right, the bytes that are `%`, `\\` or not ASCII. Keeps the next
/// escape position between calls, so a text with many non-ASCII lines and few escapes
/// is not searched for escapes once per line.
struct Interesting<'a> {
    bytes: &'a [u8],
    /// The whole text is ASCII: only escapes can be interesting.
    ascii: bool,
    /// Next escape at or after the last query (`None`: none left); `Some(None)` unknown.
    escape: Option<Option<usize>>,
}

impl<'a> Interesting<'a> {
    fn new(bytes: &'a [u8]) -> Interesting<'a> {
        Interesting { bytes, ascii: bytes.is_ascii(), escape: None }
    }

    fn next(&mut self, from: usize) -> Option<usize> {
        let rest = self.bytes.get(from..)?;
        let escape = match self.escape {
            Some(Some(at)) if at >= from => Some(at),
            Some(None) => None,
            _ => memchr::memchr2(b'%', b'\\', rest).map(|i| from + i),
        };
        self.escape = Some(escape);
        if self.ascii {
            return escape;
        }
        let limit = escape.map_or(rest.len(), |e| e - from);
        let wide = first_non_ascii(&rest[..limit]).map(|i| from + i);
        wide.or(escape)
    }
}

/// Derives views of `text` (whose offsets map to the raw input through `origin`).
///
/// Percent-decoding, escapes and Unicode folding work line by line, and only changed
/// lines go into the (one) decoded view and the (one) folded view, so a large body with
/// a few escapes costs a few lines, not another copy of the body.
fn expand(text: &str, origin: &Origin, out: &mut Vec<View>, budget: &mut usize, depth: usize) {
    let mut decoded = String::new();
    let mut decoded_map: Vec<usize> = Vec::new();
    let mut decoded_encoding = Encoding::Escapes;
    let mut folded = String::new();
    // Only lines holding an escape byte or a non-ASCII byte can change: jump from one
    // such byte to the next instead of walking every line.
    let bytes = text.as_bytes();
    let mut cursor = 0;
    let mut interesting = Interesting::new(bytes);
    while let Some(hit) = interesting.next(cursor) {
        let line_start = memchr::memrchr(b'\n', &bytes[..hit]).map_or(0, |i| i + 1);
        let line_end = memchr::memchr(b'\n', &bytes[hit..]).map_or(bytes.len(), |i| hit + i + 1);
        cursor = line_end;
        let line = &text[line_start..line_end];
        let escapes = memchr::memchr2(b'%', b'\\', line.as_bytes()).is_some();
        let mut changed: Option<String> = None;
        if escapes && let Some((line_decoded, map, encoding)) = decode_line(line) {
            if encoding == Encoding::Percent {
                decoded_encoding = Encoding::Percent;
            }
            decoded_map.extend(map[..map.len() - 1].iter().map(|i| line_start + i));
            decoded.push_str(&line_decoded);
            if !line_decoded.ends_with('\n') {
                decoded_map.push(line_start + line.len());
                decoded.push('\n');
            }
            changed = Some(line_decoded);
        }
        let plain = changed.as_deref().unwrap_or(line);
        if !plain.is_ascii() {
            // Folding can make new escapes (a full-width `％`, a `%` split by a
            // zero-width space): decode the folded line once more.
            let f = fold_unicode(plain);
            let f = match decode_line(&f) {
                Some((decoded, _, _)) => decoded,
                None => f,
            };
            folded.push_str(&f);
            folded.push('\n');
        }
    }
    // Derived views count against the same budget as decoded runs.
    *budget = budget.saturating_sub(decoded.len() + folded.len());
    let mut level: Vec<(std::borrow::Cow<'_, str>, Origin)> =
        vec![(std::borrow::Cow::Borrowed(text), origin.clone())];
    if !decoded.is_empty() {
        decoded_map.push(text.len());
        let view_origin = compose(origin, decoded_map);
        out.push(View {
            text: decoded.clone(),
            encoding: decoded_encoding,
            origin: view_origin.clone(),
        });
        level.push((std::borrow::Cow::Owned(decoded), view_origin));
    }
    if !folded.is_empty() {
        out.push(View {
            text: folded.clone(),
            encoding: Encoding::Unicode,
            origin: Origin::Unmapped,
        });
        level.push((std::borrow::Cow::Owned(folded), Origin::Unmapped));
    }
    if depth >= MAX_DEPTH {
        return;
    }
    for (level_text, level_origin) in &level {
        if *budget == 0 {
            return;
        }
        for (start, end, encoding, run_text) in decode_runs(level_text, budget) {
            let run_origin = span_of(level_origin, start, end);
            if needs_work(run_text.as_bytes()) {
                expand(&run_text, &run_origin, out, budget, depth + 1);
            }
            out.push(View { text: run_text, encoding, origin: run_origin });
        }
    }
}

/// The value of one hex digit.
pub fn hex_val(b: u8) -> Option<u8> {
    match b {
        b'0'..=b'9' => Some(b - b'0'),
        b'a'..=b'f' => Some(b - b'a' + 10),
        b'A'..=b'F' => Some(b - b'A' + 10),
        _ => None,
    }
}

/// One round of percent-decoding, with each output byte's source
/// offset. `None` if nothing changed.
pub fn percent_decode(text: &str) -> Option<(String, Vec<usize>)> {
    let bytes = text.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut map = Vec::with_capacity(bytes.len() + 1);
    let mut i = 0;
    let mut changed = false;
    while i < bytes.len() {
        if bytes[i] == b'%'
            && i + 2 < bytes.len()
            && let (Some(h), Some(l)) = (hex_val(bytes[i + 1]), hex_val(bytes[i + 2]))
        {
            out.push(h << 4 | l);
            map.push(i);
            i += 3;
            changed = true;
            continue;
        }
        out.push(bytes[i]);
        map.push(i);
        i += 1;
    }
    map.push(bytes.len());
    changed.then(|| lossy_with_map(out, map))
}

/// Decodes JSON and JavaScript string escapes: `\uXXXX`, `\xXX`, `\n`, `\r`, `\t`,
/// `\b`, `\f`, `\/`, `\"`, `\'` and `\\`.
fn unescape(text: &str) -> Option<(String, Vec<usize>)> {
    let bytes = text.as_bytes();
    let mut out = String::with_capacity(bytes.len());
    let mut map = Vec::with_capacity(bytes.len() + 1);
    let mut i = 0;
    let mut changed = false;
    while i < bytes.len() {
        if bytes[i] == b'\\' && i + 1 < bytes.len() {
            let (width, value) = match bytes[i + 1] {
                b'u' if i + 6 <= bytes.len() => (6, parse_hex(&bytes[i + 2..i + 6])),
                b'x' if i + 4 <= bytes.len() => (4, parse_hex(&bytes[i + 2..i + 4])),
                b'/' | b'"' | b'\'' | b'\\' => (2, Some(u32::from(bytes[i + 1]))),
                b'n' => (2, Some(u32::from(b'\n'))),
                b'r' => (2, Some(u32::from(b'\r'))),
                b't' => (2, Some(u32::from(b'\t'))),
                b'b' => (2, Some(8)),
                b'f' => (2, Some(12)),
                _ => (0, None),
            };
            if let Some(c) = value.and_then(char::from_u32) {
                for _ in 0..c.len_utf8() {
                    map.push(i);
                }
                out.push(c);
                i += width;
                changed = true;
                continue;
            }
        }
        let c = text[i..].chars().next().unwrap_or('\u{fffd}');
        for _ in 0..c.len_utf8() {
            map.push(i);
        }
        out.push(c);
        i += c.len_utf8().max(1);
    }
    map.push(bytes.len());
    changed.then_some((out, map))
}

fn parse_hex(bytes: &[u8]) -> Option<u32> {
    bytes.iter().try_fold(0u32, |acc, &b| hex_val(b).map(|v| acc << 4 | u32::from(v)))
}

/// Decoded bytes as text, keeping the offset map aligned with what `from_utf8_lossy`
/// makes of invalid sequences.
fn lossy_with_map(bytes: Vec<u8>, map: Vec<usize>) -> (String, Vec<usize>) {
    match String::from_utf8(bytes) {
        Ok(s) => (s, map),
        Err(e) => {
            let bytes = e.into_bytes();
            let mut out = String::with_capacity(bytes.len());
            let mut out_map = Vec::with_capacity(map.len());
            let mut i = 0;
            for chunk in bytes.utf8_chunks() {
                for c in chunk.valid().chars() {
                    for _ in 0..c.len_utf8() {
                        out_map.push(map[i]);
                    }
                    i += c.len_utf8();
                    out.push(c);
                }
                if !chunk.invalid().is_empty() {
                    for _ in 0..'\u{fffd}'.len_utf8() {
                        out_map.push(map[i]);
                    }
                    i += chunk.invalid().len();
                    out.push('\u{fffd}');
                }
            }
            out_map.push(*map.last().unwrap_or(&0));
            (out, out_map)
        }
    }
}

/// Characters that render as nothing (or steer rendering) and are dropped.
fn invisible(c: char) -> bool {
    matches!(c,
        '\u{00ad}' | '\u{034f}' | '\u{061c}' | '\u{115f}' | '\u{1160}' | '\u{17b4}' | '\u{17b5}'
        | '\u{180b}'..='\u{180f}' | '\u{200b}'..='\u{200f}' | '\u{202a}'..='\u{202e}'
        | '\u{2060}'..='\u{206f}' | '\u{3164}' | '\u{fe00}'..='\u{fe0f}' | '\u{feff}'
        | '\u{ffa0}' | '\u{1bca0}'..='\u{1bca3}' | '\u{1d173}'..='\u{1d17a}'
        | '\u{e0001}' | '\u{e007f}' | '\u{e0100}'..='\u{e01ef}'
        | '\u{fff9}'..='\u{fffb}' | '\u{0600}'..='\u{0605}' | '\u{06dd}' | '\u{070f}'
        | '\u{13430}'..='\u{1343f}' | '\u{2028}' | '\u{2029}')
}

/// Latin look-alikes from Cyrillic, Greek and other scripts (the common confusables).
fn confusable(c: char) -> Option<char> {
    Some(match c {
        'а' => 'a',
        'в' => 'b',
        'е' | 'ё' => 'e',
        'к' => 'k',
        'м' => 'm',
        'н' => 'h',
        'о' => 'o',
        'р' => 'p',
        'с' => 'c',
        'т' => 't',
        'у' => 'y',
        'х' => 'x',
        'ѕ' => 's',
        'і' => 'i',
        'ј' => 'j',
        'ԁ' => 'd',
        'ԛ' => 'q',
        'ԝ' => 'w',
        'һ' => 'h',
        'А' => 'A',
        'В' => 'B',
        'Е' => 'E',
        'К' => 'K',
        'М' => 'M',
        'Н' => 'H',
        'О' => 'O',
        'Р' => 'P',
        'С' => 'C',
        'Т' => 'T',
        'У' => 'Y',
        'Х' => 'X',
        'Ѕ' => 'S',
        'І' => 'I',
        'Ј' => 'J',
        'α' => 'a',
        'β' => 'b',
        'ε' => 'e',
        'ι' => 'i',
        'κ' => 'k',
        'ν' => 'v',
        'ο' => 'o',
        'ρ' => 'p',
        'τ' => 't',
        'υ' => 'u',
        'χ' => 'x',
        'γ' => 'y',
        'Α' => 'A',
        'Β' => 'B',
        'Ε' => 'E',
        'Ζ' => 'Z',
        'Η' => 'H',
        'Ι' => 'I',
        'Κ' => 'K',
        'Μ' => 'M',
        'Ν' => 'N',
        'Ο' => 'O',
        'Ρ' => 'P',
        'Τ' => 'T',
        'Υ' => 'Y',
        'Χ' => 'X',
        'ı' => 'i',
        'ȷ' => 'j',
        'ɡ' => 'g',
        'ℓ' => 'l',
        '‐' | '‑' | '‒' | '–' | '—' | '−' => '-',
        _ => return None,
    })
}

/// NFKD with combining marks dropped, NFKC, then invisible characters dropped, tag characters mapped to the ASCII they
/// smuggle, and confusables folded to Latin.
pub fn fold_unicode(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    // NFKD first so combining marks (underlines, accents stacked on a token) come apart
    // from their base letters and are dropped; then the rest is composed again.
    let stripped: String =
        text.nfkd().filter(|&c| !unicode_normalization::char::is_combining_mark(c)).collect();
    for c in stripped.nfkc() {
        if invisible(c) {
            continue;
        }
        let code = c as u32;
        if (0xe0020..=0xe007e).contains(&code) {
            // Unicode tag characters: invisible copies of ASCII ("ASCII smuggling").
            out.push(char::from_u32(code - 0xe0000).unwrap_or(' '));
            continue;
        }
        out.push(confusable(c).unwrap_or(c));
    }
    out
}

/// Whether any run of encoding-alphabet bytes is long enough to be worth decoding.
fn has_long_run(bytes: &[u8]) -> bool {
    let mut run = 0usize;
    for &b in bytes {
        if in_alphabet(b) {
            run += 1;
            if run >= MIN_B64_RUN {
                return true;
            }
        } else {
            run = 0;
        }
    }
    false
}

/// Whether `b` is in the base64 / base64url alphabet, branch-free so that a block
/// check vectorizes.
#[inline(always)]
fn in_alphabet(b: u8) -> bool {
    let lower = b | 0x20;
    (lower.wrapping_sub(b'a') < 26)
        | (b.wrapping_sub(b'0') < 10)
        | (b == b'+')
        | (b == b'/')
        | (b == b'-')
        | (b == b'_')
}

/// Decoded text of every long encoded run in `text`: `(start, end, encoding, text)`.
///
/// A run of at least 16 alphabet bytes covers at least one whole 8-byte-aligned block,
/// so the search checks blocks (branch-free) and grows a run only from a block that
/// is entirely alphabet: prose and code cost one cheap pass. A run whose length is a
/// multiple of 4 and that ends a line is joined with the following lines of the same
/// shape (base64 wrapped at 64 or 76 columns, PEM style), so a secret that crosses a
/// line break is decoded whole.
fn decode_runs(text: &str, budget: &mut usize) -> Vec<(usize, usize, Encoding, String)> {
    let bytes = text.as_bytes();
    let mut out = Vec::new();
    let mut done = 0usize;
    let mut block = 0usize;
    while block + 8 <= bytes.len() {
        let start_block = block;
        block += 8;
        if start_block < done {
            continue;
        }
        let all =
            bytes[start_block..start_block + 8].iter().fold(true, |acc, &b| acc & in_alphabet(b));
        if !all {
            continue;
        }
        let mut start = start_block;
        while start > done && in_alphabet(bytes[start - 1]) {
            start -= 1;
        }
        let (body, end) = wrapped_run(bytes, start);
        done = end;
        if body.len() < MIN_B64_RUN || *budget == 0 {
            continue;
        }
        // Lowercase words joined by `-`, `_`, `/` or `+` (paths, slugs, identifiers) are
        // not an encoding of anything: base64 of real data has capitals or digits within
        // 16 characters (all-lowercase odds: (30/64)^16, about 1 in 180,000), and hex and
        // base32 runs have digits. (Lowercase base32, the DNS form, has digits too.)
        if !body.iter().any(|b| b.is_ascii_uppercase() || b.is_ascii_digit()) {
            continue;
        }
        for (encoding, decoded) in decode_run(&body) {
            if *budget == 0 {
                break;
            }
            *budget = budget.saturating_sub(decoded.len());
            out.push((start, end, encoding, decoded));
        }
    }
    out
}

/// The run starting at `start`: its alphabet bytes (wrapped lines joined) and the end of
/// its last byte (padding included).
fn wrapped_run(bytes: &[u8], start: usize) -> (Vec<u8>, usize) {
    let mut body = Vec::new();
    let mut at = start;
    let mut first_line: Option<usize> = None;
    loop {
        let line_start = at;
        while at < bytes.len() && in_alphabet(bytes[at]) {
            at += 1;
        }
        body.extend_from_slice(&bytes[line_start..at]);
        let line_len = at - line_start;
        let mut end = at;
        while end < bytes.len() && bytes[end] == b'=' && end - at < 2 {
            end += 1;
        }
        // Another line of the same shape follows: keep going.
        let newline = [&b"\r\n"[..], b"\n", b"\\r\\n", b"\\n"]
            .iter()
            .find(|nl| bytes[end..].starts_with(nl))
            .map(|nl| nl.len());
        let same_shape = line_len >= MIN_B64_RUN
            && line_len.is_multiple_of(4)
            && end == at
            && first_line.is_none_or(|w| w == line_len);
        match newline {
            Some(n) if same_shape && end + n < bytes.len() && in_alphabet(bytes[end + n]) => {
                first_line.get_or_insert(line_len);
                at = end + n;
            }
            _ => return (body, end),
        }
    }
}

/// Every printable stretch of at least [`MIN_STRETCH`] characters in decoded bytes.
fn stretches(bytes: &[u8]) -> Vec<String> {
    let text = String::from_utf8_lossy(bytes);
    text.split(|c: char| (c.is_control() && !c.is_whitespace()) || c == '\u{fffd}')
        .filter(|s| s.chars().count() >= MIN_STRETCH)
        .map(str::to_string)
        .collect()
}

/// Shortest printable stretch kept from a decoded run.
const MIN_STRETCH: usize = 12;

/// At most this many start points inside one run (after `/`, `-`, `_`, `+`).
const MAX_RUN_STARTS: usize = 8;

/// Decodes a run every way that could make sense and keeps the printable stretches:
/// hex (after an optional `0x`, at both nibble alignments), base32 (single-case runs,
/// case-folded, at all 8 alignments), base64 (4 alignments); from the run's start and
/// from just after each separator inside it (`/api/<base64>`).
fn decode_run(body: &[u8]) -> Vec<(Encoding, String)> {
    let mut starts = vec![0usize];
    starts.extend(
        body.iter()
            .enumerate()
            .filter(|(_, b)| matches!(b, b'/' | b'-' | b'_' | b'+'))
            .map(|(i, _)| i + 1)
            .filter(|&i| body.len() - i >= MIN_B64_RUN)
            .take(MAX_RUN_STARTS),
    );
    let mut out: Vec<(Encoding, String)> = Vec::new();
    let mut push = |encoding: Encoding, decoded: Vec<u8>| {
        for stretch in stretches(&decoded) {
            if !out.iter().any(|(_, s)| *s == stretch) {
                out.push((encoding, stretch));
            }
        }
    };
    for &from in &starts {
        let piece = &body[from..];
        let hex_piece = piece.strip_prefix(b"0x").unwrap_or(piece);
        if hex_piece.len() >= MIN_HEX_RUN && hex_piece.iter().all(u8::is_ascii_hexdigit) {
            for skip in 0..2 {
                let aligned = &hex_piece[skip..];
                let even = &aligned[..aligned.len() & !1];
                let decoded: Vec<u8> = even
                    .chunks(2)
                    .map(|p| hex_val(p[0]).unwrap_or(0) << 4 | hex_val(p[1]).unwrap_or(0))
                    .collect();
                push(Encoding::Hex, decoded);
            }
            continue;
        }
        let upper = piece.iter().any(u8::is_ascii_uppercase);
        let lower = piece.iter().any(u8::is_ascii_lowercase);
        let folded: Vec<u8> = piece.iter().map(u8::to_ascii_uppercase).collect();
        let base32 = |b: &u8| b.is_ascii_uppercase() || (b'2'..=b'7').contains(b);
        if !(upper && lower) && folded.iter().all(base32) {
            for skip in 0..8 {
                if folded.len() < skip + MIN_B64_RUN {
                    break;
                }
                push(Encoding::Base32, base32_decode(&folded[skip..]));
            }
        }
        // Base64 of anything has capitals: 16 characters without one happen about once
        // in 4,000 (38/64 per character). Lowercase paths and ids with digits are skipped.
        if !upper {
            continue;
        }
        for skip in 0..4 {
            if piece.len() < skip + MIN_B64_RUN {
                break;
            }
            push(Encoding::Base64, base64_decode(&piece[skip..]));
        }
    }
    out
}

/// Base64, standard or URL-safe alphabet, no padding needed; trailing partial bits dropped.
pub fn base64_decode(body: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(body.len() * 3 / 4);
    let (mut buf, mut bits) = (0u32, 0u32);
    for &c in body {
        let v = match c {
            b'A'..=b'Z' => c - b'A',
            b'a'..=b'z' => c - b'a' + 26,
            b'0'..=b'9' => c - b'0' + 52,
            b'+' | b'-' => 62,
            b'/' | b'_' => 63,
            _ => break,
        };
        buf = (buf << 6) | u32::from(v);
        bits += 6;
        if bits >= 8 {
            bits -= 8;
            out.push((buf >> bits) as u8);
            buf &= (1 << bits) - 1;
        }
    }
    out
}

/// RFC 4648 base32 (uppercase alphabet), no padding needed.
pub fn base32_decode(body: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(body.len() * 5 / 8);
    let (mut buf, mut bits) = (0u64, 0u32);
    for &c in body {
        let v = match c {
            b'A'..=b'Z' => c - b'A',
            b'2'..=b'7' => c - b'2' + 26,
            _ => break,
        };
        buf = (buf << 5) | u64::from(v);
        bits += 5;
        if bits >= 8 {
            bits -= 8;
            out.push((buf >> bits) as u8);
            buf &= (1 << bits) - 1;
        }
    }
    out
}

/// Query parameter values (percent-decoded) joined in order, when there are two or more.
pub fn joined_query(path_and_query: &str) -> Option<String> {
    let query = path_and_query.split_once('?')?.1;
    let values: Vec<String> = query
        .split('&')
        .filter_map(|pair| pair.split_once('=').map(|(_, v)| v))
        .map(|v| percent_decode(v).map(|(s, _)| s).unwrap_or_else(|| v.to_string()))
        .collect();
    (values.len() >= 2).then(|| values.concat())
}

/// JSON string values (not keys) joined in document order, when the text looks like
/// JSON and has two or more. A one-pass lexer, not a parser: the join only has to put
/// split pieces back together (escapes inside are undone by the views scanned later),
/// and building a document tree costs more than the scan.
pub fn joined_json(text: &str) -> Option<String> {
    let trimmed = text.trim_start();
    if !(trimmed.starts_with('{') || trimmed.starts_with('[')) {
        return None;
    }
    let bytes = text.as_bytes();
    let mut out = String::new();
    let mut values = 0usize;
    let mut i = 0;
    while let Some(open) = memchr::memchr(b'"', &bytes[i..]).map(|o| i + o) {
        // Find the closing quote, skipping escaped characters.
        let mut j = open + 1;
        loop {
            let Some(next) = memchr::memchr2(b'"', b'\\', &bytes[j..]).map(|o| j + o) else {
                // Unterminated: the rest of the text is one last value.
                out.push_str(&text[open + 1..]);
                return (values >= 1).then_some(out);
            };
            if bytes[next] == b'\\' {
                j = next + 2;
                if j >= bytes.len() {
                    out.push_str(&text[open + 1..]);
                    return (values >= 1).then_some(out);
                }
                continue;
            }
            j = next;
            break;
        }
        let after = bytes[j + 1..].iter().find(|b| !b.is_ascii_whitespace());
        if after != Some(&b':') {
            out.push_str(&text[open + 1..j]);
            values += 1;
        }
        i = j + 1;
    }
    (values >= 2).then_some(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn percent_map_points_back_at_the_raw_bytes() {
        let (text, map) = percent_decode("a%41b").unwrap();
        assert_eq!(text, "aAb");
        assert_eq!(map, vec![0, 1, 4, 5]);
    }

    #[test]
    fn clean_ascii_needs_no_work() {
        assert!(!needs_work(b"plain words and short ids like abc_def only"));
        assert!(needs_work(b"a%20b"));
        assert!(needs_work("caf\u{e9}".as_bytes()));
        assert!(needs_work(b"Z2hwX2FiY2RlZmdoaWprbG1ub3A="));
    }
}
