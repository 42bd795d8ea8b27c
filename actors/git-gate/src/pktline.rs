//! pkt-line framing (gitprotocol-common(5)): a sans-IO reader over a buffered body and
//! the writers the gate answers with.
//!
//! Hazard: the agent writes these bytes. A length field is checked against the bytes
//! actually present and against the 65520-byte maximum before anything is sliced, and a
//! malformed header is an error, never a panic or a guess.

/// Largest pkt-line, header included.
pub const MAX_PKT: usize = 65520;
/// Largest payload of a side-band-64k data packet (one byte goes to the band).
pub const MAX_SIDEBAND_DATA: usize = MAX_PKT - 4 - 1;

/// One packet.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Packet<'a> {
    /// `0000`.
    Flush,
    /// `0001` (protocol v2).
    Delim,
    /// `0002` (protocol v2).
    ResponseEnd,
    /// A data packet's payload.
    Data(&'a [u8]),
}

/// Why a body is not pkt-lines.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PktError {
    /// The body ended inside a packet.
    #[error("truncated pkt-line at byte {0}")]
    Truncated(usize),
    /// The 4-byte length is not hex, is 3, or is above the maximum.
    #[error("bad pkt-line length at byte {0}")]
    BadLength(usize),
}

/// Reads packets from a buffer, remembering where it is.
#[derive(Debug)]
pub struct Reader<'a> {
    data: &'a [u8],
    at: usize,
}

impl<'a> Reader<'a> {
    /// A reader at the start of `data`.
    pub fn new(data: &'a [u8]) -> Reader<'a> {
        Reader { data, at: 0 }
    }

    /// Offset of the next unread byte.
    pub fn position(&self) -> usize {
        self.at
    }

    /// The unread rest.
    pub fn rest(&self) -> &'a [u8] {
        &self.data[self.at..]
    }

    /// The next packet; `Ok(None)` at the end of the buffer.
    pub fn next_packet(&mut self) -> Result<Option<Packet<'a>>, PktError> {
        let rest = self.rest();
        if rest.is_empty() {
            return Ok(None);
        }
        let Some(head) = rest.get(..4) else { return Err(PktError::Truncated(self.at)) };
        let mut len = 0usize;
        for &b in head {
            let digit = (b as char).to_digit(16).ok_or(PktError::BadLength(self.at))?;
            len = len * 16 + digit as usize;
        }
        let packet = match len {
            0 => Packet::Flush,
            1 => Packet::Delim,
            2 => Packet::ResponseEnd,
            3 => return Err(PktError::BadLength(self.at)),
            n if n > MAX_PKT => return Err(PktError::BadLength(self.at)),
            n => {
                let payload = rest.get(4..n).ok_or(PktError::Truncated(self.at))?;
                self.at += n;
                return Ok(Some(Packet::Data(payload)));
            }
        };
        self.at += 4;
        Ok(Some(packet))
    }
}

/// `data` as one pkt-line (callers keep it under [`MAX_PKT`]).
pub fn data(payload: &[u8]) -> Vec<u8> {
    let mut out = format!("{:04x}", payload.len() + 4).into_bytes();
    out.extend_from_slice(payload);
    out
}

/// `0000`.
pub const FLUSH: &[u8] = b"0000";

/// `payload` on side-band `band` (1 data, 2 progress, 3 error), split as needed.
pub fn sideband(band: u8, payload: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(payload.len() + 16);
    for chunk in payload.chunks(MAX_SIDEBAND_DATA) {
        let mut pkt = Vec::with_capacity(chunk.len() + 1);
        pkt.push(band);
        pkt.extend_from_slice(chunk);
        out.extend(data(&pkt));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn packets(body: &[u8]) -> Result<Vec<String>, PktError> {
        let mut r = Reader::new(body);
        let mut out = Vec::new();
        while let Some(p) = r.next_packet()? {
            out.push(match p {
                Packet::Flush => "flush".into(),
                Packet::Delim => "delim".into(),
                Packet::ResponseEnd => "end".into(),
                Packet::Data(d) => String::from_utf8_lossy(d).into_owned(),
            });
        }
        Ok(out)
    }

    #[test]
    fn reads_data_flush_and_delim() {
        assert_eq!(packets(b"0009hello00000001").unwrap(), ["hello", "flush", "delim"]);
    }

    #[test]
    fn refuses_bad_lengths_before_slicing() {
        assert_eq!(packets(b"000"), Err(PktError::Truncated(0)));
        assert_eq!(packets(b"0003"), Err(PktError::BadLength(0)));
        assert_eq!(packets(b"zzzz"), Err(PktError::BadLength(0)));
        assert_eq!(packets(b"fff1xx"), Err(PktError::BadLength(0)));
        assert_eq!(packets(b"0009hel"), Err(PktError::Truncated(0)));
        assert_eq!(packets(b"0005a0010abc"), Err(PktError::Truncated(5)));
    }

    #[test]
    fn sideband_splits_long_payloads() {
        let long = vec![b'x'; MAX_SIDEBAND_DATA + 10];
        let framed = sideband(2, &long);
        let mut r = Reader::new(&framed);
        let Some(Packet::Data(first)) = r.next_packet().unwrap() else { panic!() };
        assert_eq!(first.len(), MAX_SIDEBAND_DATA + 1);
        assert_eq!(first[0], 2);
        let Some(Packet::Data(second)) = r.next_packet().unwrap() else { panic!() };
        assert_eq!(second.len(), 11);
    }
}
