//! A second, minimal HTTP/1 framing reader that watches the agent's byte stream as hyper
//! reads it, to catch what hyper resolves silently.
//!
//! Hazard: request smuggling lives in framing ambiguity. A request with both
//! `Content-Length` and `Transfer-Encoding` is answered 400 (RFC 9112 6.1 allows that or
//! processing by Transfer-Encoding alone; hyper does the latter and hides the conflict
//! from the service). This reader follows request heads and bodies (fixed length and
//! chunked) and records, per request head in order, whether it carried the conflict; the
//! service pops one verdict per request. After a CONNECT, an `Upgrade` request, an HTTP/2
//! preface or anything it cannot follow, it stops reading and records nothing more
//! (hyper's own parser still applies).

use std::collections::VecDeque;
use std::io;
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};

use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};

/// Verdicts, one per request head seen: `true` means conflicting framing.
pub(crate) type Verdicts = Arc<Mutex<VecDeque<bool>>>;

const MAX_HEAD: usize = 256 * 1024;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum State {
    Head,
    Fixed(u64),
    ChunkSize,
    ChunkData(u64),
    ChunkCrlf(u8),
    Trailers,
    Off,
}

/// The incremental reader.
#[derive(Debug)]
pub(crate) struct Sniffer {
    state: State,
    buf: Vec<u8>,
    verdicts: Verdicts,
}

fn header_values<'a>(head: &'a str, name: &str) -> Vec<&'a str> {
    head.split("\r\n")
        .skip(1)
        .filter_map(|line| line.split_once(':'))
        .filter(|(n, _)| n.trim().eq_ignore_ascii_case(name))
        .map(|(_, v)| v.trim())
        .collect()
}

impl Sniffer {
    pub(crate) fn new(verdicts: Verdicts) -> Sniffer {
        Sniffer { state: State::Head, buf: Vec::new(), verdicts }
    }

    fn push(&self, conflict: bool) {
        self.verdicts.lock().unwrap_or_else(|p| p.into_inner()).push_back(conflict);
    }

    fn head(&mut self, head: &str) -> State {
        let request_line = head.split("\r\n").next().unwrap_or("");
        if request_line.starts_with("PRI ") {
            return State::Off; // HTTP/2 preface: not ours to follow
        }
        let method = request_line.split(' ').next().unwrap_or("");
        let cl = header_values(head, "content-length");
        let te = header_values(head, "transfer-encoding");
        self.push(!cl.is_empty() && !te.is_empty());
        if method.eq_ignore_ascii_case("CONNECT") || !header_values(head, "upgrade").is_empty() {
            return State::Off;
        }
        if te.iter().any(|v| v.to_ascii_lowercase().split(',').any(|t| t.trim() == "chunked")) {
            return State::ChunkSize;
        }
        match cl.first().map(|v| v.parse::<u64>()) {
            Some(Ok(0)) | None => State::Head,
            Some(Ok(n)) => State::Fixed(n),
            Some(Err(_)) => State::Off,
        }
    }

    /// Feeds bytes as they are read.
    pub(crate) fn feed(&mut self, mut data: &[u8]) {
        while !data.is_empty() {
            match self.state {
                State::Off => return,
                State::Head | State::ChunkSize | State::Trailers => {
                    let terminator: &[u8] =
                        if self.state == State::ChunkSize { b"\r\n" } else { b"\r\n\r\n" };
                    let start = self.buf.len().saturating_sub(terminator.len() - 1);
                    // Trailers end at an empty line right away, too.
                    self.buf.extend_from_slice(data);
                    let found = if self.state == State::Trailers && self.buf.starts_with(b"\r\n") {
                        Some(0)
                    } else {
                        self.buf[start..]
                            .windows(terminator.len())
                            .position(|w| w == terminator)
                            .map(|p| p + start)
                    };
                    let Some(pos) = found else {
                        if self.buf.len() > MAX_HEAD {
                            self.state = State::Off;
                        }
                        return;
                    };
                    let end = if self.state == State::Trailers && pos == 0 {
                        2
                    } else {
                        pos + terminator.len()
                    };
                    let consumed_from_data = end - (self.buf.len() - data.len());
                    let unit = String::from_utf8_lossy(&self.buf[..end]).into_owned();
                    self.buf.clear();
                    data = &data[consumed_from_data..];
                    self.state = match self.state {
                        State::Head => {
                            let head = unit.trim_start_matches("\r\n");
                            if head.is_empty() { State::Head } else { self.head(head) }
                        }
                        State::ChunkSize => {
                            let size = unit.trim().split(';').next().unwrap_or("");
                            match u64::from_str_radix(size.trim(), 16) {
                                Ok(0) => State::Trailers,
                                Ok(n) => State::ChunkData(n),
                                Err(_) => State::Off,
                            }
                        }
                        _ => State::Head,
                    };
                }
                State::Fixed(n) | State::ChunkData(n) => {
                    let take = (n.min(data.len() as u64)) as usize;
                    data = &data[take..];
                    let left = n - take as u64;
                    self.state = match (self.state, left) {
                        (State::Fixed(_), 0) => State::Head,
                        (State::Fixed(_), l) => State::Fixed(l),
                        (_, 0) => State::ChunkCrlf(2),
                        (_, l) => State::ChunkData(l),
                    };
                }
                State::ChunkCrlf(k) => {
                    let take = (k as usize).min(data.len());
                    data = &data[take..];
                    let left = k - take as u8;
                    self.state = if left == 0 { State::ChunkSize } else { State::ChunkCrlf(left) };
                }
            }
        }
    }
}

/// An IO stream whose reads also feed a [`Sniffer`].
#[derive(Debug)]
pub(crate) struct Sniffed<S> {
    inner: S,
    sniffer: Sniffer,
}

impl<S> Sniffed<S> {
    pub(crate) fn new(inner: S, verdicts: Verdicts) -> Sniffed<S> {
        Sniffed { inner, sniffer: Sniffer::new(verdicts) }
    }
}

impl<S: AsyncRead + Unpin> AsyncRead for Sniffed<S> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let before = buf.filled().len();
        let polled = Pin::new(&mut self.inner).poll_read(cx, buf);
        if let Poll::Ready(Ok(())) = polled {
            self.sniffer.feed(&buf.filled()[before..]);
        }
        polled
    }
}

impl<S: AsyncWrite + Unpin> AsyncWrite for Sniffed<S> {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        data: &[u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.inner).poll_write(cx, data)
    }
    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.inner).poll_write_vectored(cx, bufs)
    }
    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }
    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_flush(cx)
    }
    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_shutdown(cx)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn run(chunks: &[&[u8]]) -> Vec<bool> {
        let verdicts: Verdicts = Arc::default();
        let mut s = Sniffer::new(verdicts.clone());
        for c in chunks {
            s.feed(c);
        }
        verdicts.lock().unwrap().iter().copied().collect()
    }

    #[test]
    fn follows_fixed_and_chunked_bodies_across_pipelined_requests() {
        let stream: &[u8] = b"POST http://a/x HTTP/1.1\r\nHost: a\r\nContent-Length: 5\r\n\r\nhelloPOST http://a/y HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n5;ext=1\r\nhello\r\n0\r\nX-T: 1\r\n\r\nGET http://a/z HTTP/1.1\r\nContent-Length: 3\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\nGET http://a/w HTTP/1.1\r\n\r\n";
        assert_eq!(run(&[stream]), vec![false, false, true, false]);
        // The same bytes one at a time.
        let bytes: Vec<&[u8]> = stream.chunks(1).collect();
        assert_eq!(run(&bytes), vec![false, false, true, false]);
    }

    #[test]
    fn stops_after_connect_upgrade_or_h2() {
        assert_eq!(
            run(&[b"CONNECT a:443 HTTP/1.1\r\n\r\n\x16\x03\x01garbage Content-Length: 1\r\n\r\n"]),
            vec![false]
        );
        assert_eq!(run(&[b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n"]), Vec::<bool>::new());
        assert_eq!(run(&[b"GET / HTTP/1.1\r\nUpgrade: websocket\r\n\r\nframes"]), vec![false]);
    }
}
