//! Child output: pumped line by line to one sink with a `[name] ` prefix.
//!
//! Hazard: two children writing at once must never interleave inside a line, and a
//! child that never writes a newline must not grow our memory without bound. Each
//! line is written with one `write_all` under the stdout lock; lines longer than
//! [`MAX_LINE`] are split; a partial last line is flushed (with a newline) at EOF.

use std::io::Write;
use std::os::fd::OwnedFd;
use std::sync::Arc;

use tokio::io::AsyncReadExt;

/// Longest line passed through in one piece.
pub const MAX_LINE: usize = 16 * 1024;

/// Where child output lines go. Receives the child's name and one line without its
/// newline.
pub type LineSink = Arc<dyn Fn(&str, &[u8]) + Send + Sync>;

/// The default sink: `[name] line` on our stdout.
pub fn stdout_sink() -> LineSink {
    Arc::new(|name: &str, line: &[u8]| {
        let mut buf = Vec::with_capacity(name.len() + line.len() + 4);
        buf.push(b'[');
        buf.extend_from_slice(name.as_bytes());
        buf.extend_from_slice(b"] ");
        buf.extend_from_slice(line);
        buf.push(b'\n');
        let stdout = std::io::stdout();
        let mut lock = stdout.lock();
        // Nowhere to report a failed write to our own stdout; dropping the line is all we can do.
        let _ = lock.write_all(&buf);
        let _ = lock.flush();
    })
}

/// Reads `fd` until EOF, handing each line to `sink`.
pub(crate) async fn pump(name: String, fd: OwnedFd, sink: LineSink) {
    let Ok(mut pipe) = tokio::net::unix::pipe::Receiver::from_owned_fd(fd) else { return };
    let mut pending: Vec<u8> = Vec::new();
    let mut chunk = vec![0u8; 8192];
    loop {
        let n = match pipe.read(&mut chunk).await {
            Ok(0) | Err(_) => break,
            Ok(n) => n,
        };
        pending.extend_from_slice(&chunk[..n]);
        let mut start = 0;
        while let Some(pos) = memchr(b'\n', &pending[start..]) {
            sink(&name, &pending[start..start + pos]);
            start += pos + 1;
        }
        pending.drain(..start);
        while pending.len() >= MAX_LINE {
            sink(&name, &pending[..MAX_LINE]);
            pending.drain(..MAX_LINE);
        }
    }
    if !pending.is_empty() {
        sink(&name, &pending);
    }
}

fn memchr(needle: u8, haystack: &[u8]) -> Option<usize> {
    haystack.iter().position(|&b| b == needle)
}
