//! Reading the SNI of a TLS ClientHello without terminating TLS (passthrough routes).
//!
//! Hazard: a passthrough tunnel to an allowed host carries whatever the agent sends; if
//! the ClientHello names another host (domain fronting), the tunnel reaches a server we
//! never allowed. The first record must be a complete ClientHello whose SNI equals the
//! CONNECT host; anything else (no SNI, a malformed or fragmented hello, over 16 KiB)
//! is refused. Sans-IO: bytes in, a verdict out.

/// What the first bytes of a tunnel say.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Hello {
    /// Need more bytes (at most this many more are worth reading).
    Incomplete,
    /// A ClientHello with this server name (lowercase).
    Sni(String),
    /// A ClientHello without a server name.
    NoSni,
    /// Not a TLS ClientHello.
    NotTls,
}

/// Largest ClientHello record we accept.
pub const MAX_HELLO: usize = 16 * 1024 + 5;

/// Parses the beginning of a TLS stream.
pub fn parse(buf: &[u8]) -> Hello {
    if buf.len() < 5 {
        return Hello::Incomplete;
    }
    if buf[0] != 0x16 || buf[1] != 0x03 {
        return Hello::NotTls;
    }
    let record_len = usize::from(u16::from_be_bytes([buf[3], buf[4]]));
    if record_len > MAX_HELLO - 5 {
        return Hello::NotTls;
    }
    if buf.len() < 5 + record_len {
        return Hello::Incomplete;
    }
    parse_handshake(&buf[5..5 + record_len]).unwrap_or(Hello::NotTls)
}

struct Reader<'a> {
    data: &'a [u8],
    pos: usize,
}

impl<'a> Reader<'a> {
    fn take(&mut self, n: usize) -> Option<&'a [u8]> {
        let out = self.data.get(self.pos..self.pos.checked_add(n)?)?;
        self.pos += n;
        Some(out)
    }
    fn u8(&mut self) -> Option<usize> {
        self.take(1).map(|b| usize::from(b[0]))
    }
    fn u16(&mut self) -> Option<usize> {
        self.take(2).map(|b| usize::from(u16::from_be_bytes([b[0], b[1]])))
    }
    fn u24(&mut self) -> Option<usize> {
        self.take(3)
            .map(|b| (usize::from(b[0]) << 16) | (usize::from(b[1]) << 8) | usize::from(b[2]))
    }
}

fn parse_handshake(record: &[u8]) -> Option<Hello> {
    let mut r = Reader { data: record, pos: 0 };
    if r.u8()? != 1 {
        return Some(Hello::NotTls); // not a ClientHello
    }
    let len = r.u24()?;
    let body = r.take(len)?; // a hello split over records is refused (take fails)
    let mut r = Reader { data: body, pos: 0 };
    r.take(2)?; // client version
    r.take(32)?; // random
    let sid = r.u8()?;
    r.take(sid)?;
    let suites = r.u16()?;
    r.take(suites)?;
    let comp = r.u8()?;
    r.take(comp)?;
    if r.pos == body.len() {
        return Some(Hello::NoSni);
    }
    let ext_len = r.u16()?;
    let exts = r.take(ext_len)?;
    let mut r = Reader { data: exts, pos: 0 };
    while r.pos < exts.len() {
        let kind = r.u16()?;
        let len = r.u16()?;
        let data = r.take(len)?;
        if kind == 0 {
            let mut s = Reader { data, pos: 0 };
            let list_len = s.u16()?;
            let list = s.take(list_len)?;
            let mut l = Reader { data: list, pos: 0 };
            while l.pos < list.len() {
                let name_type = l.u8()?;
                let name_len = l.u16()?;
                let name = l.take(name_len)?;
                if name_type == 0 {
                    let name = std::str::from_utf8(name).ok()?;
                    return Some(Hello::Sni(name.trim_end_matches('.').to_ascii_lowercase()));
                }
            }
        }
    }
    Some(Hello::NoSni)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A real ClientHello produced by rustls for `name`.
    fn hello(name: &str) -> Vec<u8> {
        use std::sync::Arc;
        let config = rustls::ClientConfig::builder_with_provider(Arc::new(
            rustls::crypto::ring::default_provider(),
        ))
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_root_certificates(rustls::RootCertStore::empty())
        .with_no_client_auth();
        let mut conn =
            rustls::ClientConnection::new(Arc::new(config), name.to_string().try_into().unwrap())
                .unwrap();
        let mut out = Vec::new();
        conn.write_tls(&mut out).unwrap();
        out
    }

    #[test]
    fn reads_the_sni_of_a_real_client_hello() {
        let bytes = hello("API.Example.com");
        assert_eq!(parse(&bytes), Hello::Sni("api.example.com".into()));
        for cut in [0, 3, 5, 40, bytes.len() - 1] {
            assert_eq!(parse(&bytes[..cut]), Hello::Incomplete, "cut at {cut}");
        }
    }

    #[test]
    fn an_ip_hello_has_no_sni_and_garbage_is_not_tls() {
        assert_eq!(parse(&hello("10.0.0.1")), Hello::NoSni);
        assert_eq!(parse(b"GET / HTTP/1.1\r\n\r\n"), Hello::NotTls);
        assert_eq!(parse(&[0x16, 0x03, 0x01, 0xff, 0xff]), Hello::NotTls);
        let mut broken = hello("a.example");
        broken[7] ^= 0xff; // corrupt the handshake length: it no longer fits the record
        assert_eq!(parse(&broken), Hello::NotTls);
    }
}
