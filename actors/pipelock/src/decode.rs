//! Content-Encoding decoding with a size limit.
//!
//! Hazard: a compressed body is opaque to every rule, and a decompression bomb turns a
//! small request into gigabytes of scanner work. Bodies are decoded (gzip, deflate, br,
//! zstd, stacked in the order the header lists them) up to a limit; anything larger,
//! undecodable or in an unknown coding is an error, and the caller blocks (fail closed).

use std::io::Read;

/// Why a body could not be decoded for scanning.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum DecodeError {
    /// A coding nobody here reads. (The value is kept for the caller but never
    /// displayed: it is agent- or upstream-controlled text.)
    #[error("unsupported content-encoding")]
    Unsupported(String),
    /// The decoded body exceeds the limit.
    #[error("decoded body exceeds {0} bytes")]
    TooLarge(usize),
    /// The body is not valid in its coding.
    #[error("corrupt {coding} body")]
    Corrupt {
        /// The coding.
        coding: String,
    },
}

/// Decodes `body` per the `Content-Encoding` header value (`None` or `identity` is a
/// no-op), refusing output above `limit` bytes.
pub fn decode_body(
    content_encoding: Option<&str>,
    body: &[u8],
    limit: usize,
) -> Result<Vec<u8>, DecodeError> {
    let mut data = body.to_vec();
    if data.len() > limit {
        return Err(DecodeError::TooLarge(limit));
    }
    let Some(header) = content_encoding else { return Ok(data) };
    // Codings are listed in the order they were applied: undo them in reverse.
    let codings: Vec<String> = header
        .split(',')
        .map(|c| c.trim().to_ascii_lowercase())
        .filter(|c| !c.is_empty() && c != "identity")
        .collect();
    for coding in codings.iter().rev() {
        data = decode_one(coding, &data, limit)?;
    }
    Ok(data)
}

fn decode_one(coding: &str, data: &[u8], limit: usize) -> Result<Vec<u8>, DecodeError> {
    let corrupt = || DecodeError::Corrupt { coding: coding.to_string() };
    let reader: Box<dyn Read + '_> = match coding {
        "gzip" | "x-gzip" => Box::new(flate2::read::MultiGzDecoder::new(data)),
        "deflate" => {
            // RFC 9110 says zlib-wrapped; some servers send raw deflate. Try both, and
            // refuse bytes after the end of the stream (they would go out unscanned).
            let mut out = Vec::new();
            let mut zlib = flate2::bufread::ZlibDecoder::new(data);
            match read_limited(&mut zlib, limit, &mut out) {
                Ok(()) if zlib.get_ref().is_empty() => return Ok(out),
                Ok(()) => return Err(corrupt()),
                Err(DecodeError::TooLarge(n)) => return Err(DecodeError::TooLarge(n)),
                Err(_) => {}
            }
            let mut raw = flate2::bufread::DeflateDecoder::new(data);
            let mut out = Vec::new();
            read_limited(&mut raw, limit, &mut out).map_err(|e| match e {
                DecodeError::TooLarge(n) => DecodeError::TooLarge(n),
                _ => corrupt(),
            })?;
            if !raw.get_ref().is_empty() {
                return Err(corrupt());
            }
            return Ok(out);
        }
        "br" => Box::new(brotli_decompressor::Decompressor::new(data, 4096)),
        "zstd" => {
            // Every frame, as libzstd decodes them: a decoder that stopped after the
            // first would scan one frame while the upstream reads them all.
            let mut input: &[u8] = data;
            let mut out = Vec::new();
            while !input.is_empty() {
                let before = input.len();
                let decoder =
                    ruzstd::decoding::StreamingDecoder::new(&mut input).map_err(|_| corrupt())?;
                let mut frame = Vec::new();
                read_limited(decoder, limit.saturating_sub(out.len()), &mut frame).map_err(
                    |e| match e {
                        DecodeError::TooLarge(_) => DecodeError::TooLarge(limit),
                        _ => corrupt(),
                    },
                )?;
                out.extend(frame);
                if input.len() >= before {
                    return Err(corrupt());
                }
            }
            return Ok(out);
        }
        other => return Err(DecodeError::Unsupported(other.to_string())),
    };
    let mut out = Vec::new();
    read_limited(reader, limit, &mut out).map_err(|e| match e {
        DecodeError::Corrupt { .. } => corrupt(),
        other => other,
    })?;
    Ok(out)
}

fn read_limited(reader: impl Read, limit: usize, out: &mut Vec<u8>) -> Result<(), DecodeError> {
    let mut limited = reader.take(limit as u64 + 1);
    limited.read_to_end(out).map_err(|_| DecodeError::Corrupt { coding: String::new() })?;
    if out.len() > limit {
        return Err(DecodeError::TooLarge(limit));
    }
    Ok(())
}
