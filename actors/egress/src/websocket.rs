//! WebSocket relay with pipelock on text messages, both ways.
//!
//! Hazard: once a connection is upgraded, a byte copy would carry any secret out and any
//! injection in. So the relay parses frames (RFC 6455): text messages are reassembled
//! from their fragments (control frames may interleave and pass at once), held back
//! until complete, and scanned; outbound ones go through the route's block / redact /
//! hold policy, inbound ones through injection detection. A frame with a reserved bit
//! set (compression we did not let the peers negotiate), an unknown opcode, or a message
//! over [`MAX_MESSAGE`] closes both sides (1008 policy, 1002 protocol, 1009 size): fail
//! closed. Binary messages are scanned as lossy UTF-8 (as bodies are) and cannot be
//! redacted; control frames are checked (at most 125 bytes, final) and their payloads
//! scanned going out. Clients must mask; frames sent upstream get our own fresh masking
//! keys, never the agent's.

use std::sync::Arc;

use bottle_pipelock::Pipelock;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};

use crate::dlp::{self, DlpConfig};
use crate::routes::RouteDlp;

/// The largest text message reassembled for a scan.
pub(crate) const MAX_MESSAGE: usize = 16 << 20;

const OP_CONTINUATION: u8 = 0;
const OP_TEXT: u8 = 1;
const OP_BINARY: u8 = 2;
const OP_CLOSE: u8 = 8;

/// One frame as read.
#[derive(Debug, Clone)]
struct Frame {
    fin: bool,
    rsv: u8,
    opcode: u8,
    mask: Option<[u8; 4]>,
    /// Unmasked payload.
    payload: Vec<u8>,
}

impl Frame {
    fn encode(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(self.payload.len() + 14);
        out.push((u8::from(self.fin) << 7) | (self.rsv << 4) | self.opcode);
        let masked = if self.mask.is_some() { 0x80 } else { 0 };
        let len = self.payload.len();
        if len < 126 {
            out.push(masked | len as u8);
        } else if len <= 0xffff {
            out.push(masked | 126);
            out.extend_from_slice(&(len as u16).to_be_bytes());
        } else {
            out.push(masked | 127);
            out.extend_from_slice(&(len as u64).to_be_bytes());
        }
        match self.mask {
            Some(key) => {
                out.extend_from_slice(&key);
                out.extend(self.payload.iter().enumerate().map(|(i, b)| b ^ key[i % 4]));
            }
            None => out.extend_from_slice(&self.payload),
        }
        out
    }
}

async fn read_frame<R: AsyncRead + Unpin>(r: &mut R, limit: usize) -> Result<Frame, String> {
    let mut head = [0u8; 2];
    r.read_exact(&mut head).await.map_err(|e| e.to_string())?;
    let fin = head[0] & 0x80 != 0;
    let rsv = (head[0] >> 4) & 0x7;
    let opcode = head[0] & 0x0f;
    let masked = head[1] & 0x80 != 0;
    let len = match head[1] & 0x7f {
        126 => {
            let mut b = [0u8; 2];
            r.read_exact(&mut b).await.map_err(|e| e.to_string())?;
            u64::from(u16::from_be_bytes(b))
        }
        127 => {
            let mut b = [0u8; 8];
            r.read_exact(&mut b).await.map_err(|e| e.to_string())?;
            u64::from_be_bytes(b)
        }
        n => u64::from(n),
    };
    if len > limit as u64 {
        return Err(format!("a {len}-byte frame exceeds the scan limit"));
    }
    let mask = if masked {
        let mut key = [0u8; 4];
        r.read_exact(&mut key).await.map_err(|e| e.to_string())?;
        Some(key)
    } else {
        None
    };
    let mut payload = vec![0u8; len as usize];
    r.read_exact(&mut payload).await.map_err(|e| e.to_string())?;
    if let Some(key) = mask {
        for (i, b) in payload.iter_mut().enumerate() {
            *b ^= key[i % 4];
        }
    }
    Ok(Frame { fin, rsv, opcode, mask, payload })
}

/// Close frame with a status code and reason; masked when sent by a client.
fn close_frame(code: u16, reason: &str, masked: bool) -> Vec<u8> {
    let mut payload = code.to_be_bytes().to_vec();
    // At most 123 bytes of reason, cut on a character boundary (it must stay UTF-8).
    let mut cut = reason.len().min(120);
    while !reason.is_char_boundary(cut) {
        cut -= 1;
    }
    payload.extend(reason[..cut].bytes());
    Frame { fin: true, rsv: 0, opcode: OP_CLOSE, mask: masked.then(fresh_mask), payload }.encode()
}

/// A new masking key: frames we send upstream never reuse the agent's key (which would
/// let the agent choose the exact bytes on the upstream wire).
fn fresh_mask() -> [u8; 4] {
    use rand::Rng;
    rand::rng().random::<[u8; 4]>()
}

/// Writes an audit note: (text, whether it is a block).
pub(crate) type AuditNote = Arc<dyn Fn(&str, bool) + Send + Sync>;

/// What the relay knows about its route.
#[derive(Clone)]
pub(crate) struct WsContext {
    pub(crate) pipelock: Arc<Pipelock>,
    pub(crate) config: DlpConfig,
    pub(crate) policy: RouteDlp,
    pub(crate) host: String,
    pub(crate) own: Vec<String>,
    /// Called with a note for the audit log (blocks, redactions, warnings).
    pub(crate) note: AuditNote,
}

/// Which way a pump carries messages.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Direction {
    /// Agent to upstream: secrets.
    Out,
    /// Upstream to agent: injections.
    In,
}

/// Relays frames both ways until either side closes or a scan refuses. After one side's
/// Close, the other direction gets a few seconds to answer with its own.
pub(crate) async fn relay<C, U>(client: C, upstream: U, ctx: WsContext)
where
    C: AsyncRead + AsyncWrite + Unpin + Send + 'static,
    U: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let (client_r, client_w) = tokio::io::split(client);
    let (upstream_r, upstream_w) = tokio::io::split(upstream);
    let client_w = Arc::new(tokio::sync::Mutex::new(client_w));
    let upstream_w = Arc::new(tokio::sync::Mutex::new(upstream_w));
    let out = pump(client_r, upstream_w.clone(), client_w.clone(), Direction::Out, ctx.clone());
    let inb = pump(upstream_r, client_w.clone(), upstream_w.clone(), Direction::In, ctx);
    tokio::pin!(out, inb);
    let grace = std::time::Duration::from_secs(5);
    tokio::select! {
        () = &mut out => { let _ = tokio::time::timeout(grace, &mut inb).await; }
        () = &mut inb => { let _ = tokio::time::timeout(grace, &mut out).await; }
    }
    let _ = client_w.lock().await.shutdown().await;
    let _ = upstream_w.lock().await.shutdown().await;
}

async fn pump<R, W, B>(
    mut from: R,
    to: Arc<tokio::sync::Mutex<W>>,
    back: Arc<tokio::sync::Mutex<B>>,
    direction: Direction,
    ctx: WsContext,
) where
    R: AsyncRead + Unpin,
    W: AsyncWrite + Unpin,
    B: AsyncWrite + Unpin,
{
    // We send upstream as a client (masked, with our own keys) and to the agent as a
    // server (unmasked).
    let outbound = direction == Direction::Out;
    let refuse = |code: u16, why: &str| {
        let why = why.to_string();
        let (to, back) = (to.clone(), back.clone());
        async move {
            let _ =
                to.lock().await.write_all(&close_frame(code, "bottle: blocked", outbound)).await;
            let _ = back.lock().await.write_all(&close_frame(code, &why, !outbound)).await;
        }
    };
    let send = |mut frame: Frame| {
        frame.mask = outbound.then(fresh_mask);
        let to = to.clone();
        async move { to.lock().await.write_all(&frame.encode()).await.is_ok() }
    };
    let mut message: Vec<Frame> = Vec::new();
    let mut size = 0usize;
    loop {
        let frame = match read_frame(&mut from, MAX_MESSAGE).await {
            Ok(f) => f,
            Err(_) => return,
        };
        if frame.rsv != 0 || !matches!(frame.opcode, 0..=2 | 8..=10) {
            (ctx.note)("websocket frame with reserved bits or an unknown opcode", true);
            refuse(1008, "unsupported websocket frame").await;
            return;
        }
        // RFC 6455: clients mask every frame.
        if outbound && frame.mask.is_none() {
            refuse(1002, "unmasked client frame").await;
            return;
        }
        if frame.opcode >= 8 {
            // Control frames: at most 125 bytes, never fragmented; they may interleave
            // with a fragmented message and pass at once (after a scan, going out).
            if frame.payload.len() > 125 || !frame.fin {
                refuse(1002, "malformed control frame").await;
                return;
            }
            if outbound && frame.payload.len() > 2 {
                let text = String::from_utf8_lossy(&frame.payload).into_owned();
                if !matches!(dlp::inspect_frame(&ctx, &text).await, Ok(None)) {
                    refuse(1008, "control frame payload refused").await;
                    return;
                }
            }
            let close = frame.opcode == OP_CLOSE;
            if !send(frame).await || close {
                return;
            }
            continue;
        }
        match frame.opcode {
            OP_TEXT | OP_BINARY if message.is_empty() => {}
            OP_CONTINUATION if !message.is_empty() => {}
            _ => {
                refuse(1002, "websocket frames out of order").await;
                return;
            }
        }
        size += frame.payload.len();
        if size > MAX_MESSAGE {
            refuse(1009, "websocket message exceeds the scan limit").await;
            return;
        }
        let fin = frame.fin;
        message.push(frame);
        if !fin {
            continue;
        }
        // Text and binary messages alike (binary read as lossy UTF-8, as bodies are).
        let binary = message[0].opcode == OP_BINARY;
        let bytes: Vec<u8> = message.iter().flat_map(|f| f.payload.iter().copied()).collect();
        let text = String::from_utf8_lossy(&bytes).into_owned();
        let verdict = match direction {
            Direction::Out => dlp::inspect_frame(&ctx, &text).await,
            Direction::In => dlp::inspect_inbound_frame(&ctx, text).await,
        };
        let frames: Vec<Frame> = match verdict {
            Ok(None) => std::mem::take(&mut message),
            // A binary message cannot be redacted in place: refuse it.
            Ok(Some(_)) if binary => {
                refuse(1008, "a binary message holds a secret").await;
                return;
            }
            Ok(Some(replacement)) => vec![Frame {
                fin: true,
                rsv: 0,
                opcode: OP_TEXT,
                mask: None,
                payload: replacement.into_bytes(),
            }],
            Err(why) => {
                refuse(1008, &why).await;
                return;
            }
        };
        message.clear();
        size = 0;
        for frame in frames {
            if !send(frame).await {
                return;
            }
        }
    }
}
