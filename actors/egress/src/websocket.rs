//! WebSocket relay with pipelock on text messages, both ways.
//!
//! Hazard: once a connection is upgraded, a byte copy would carry any secret out and any
//! injection in. So the relay parses frames (RFC 6455): text messages are reassembled
//! from their fragments (control frames may interleave and pass at once), held back
//! until complete, and scanned; outbound ones go through the route's block / redact /
//! hold policy, inbound ones through injection detection. A frame with a reserved bit
//! set (compression we did not let the peers negotiate), an unknown opcode, or a message
//! over [`MAX_MESSAGE`] closes both sides with 1008 (policy violation): fail closed.
//! Binary messages are relayed unscanned.

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
    payload.extend(reason.bytes().take(120));
    let mask = masked.then(|| {
        use rand::Rng;
        rand::rng().random::<[u8; 4]>()
    });
    Frame { fin: true, rsv: 0, opcode: OP_CLOSE, mask, payload }.encode()
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

/// Relays frames both ways until either side closes or a scan refuses.
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
    tokio::select! {
        () = out => {}
        () = inb => {}
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
    // Frames from the agent are masked; we send upstream as a client (masked) and to
    // the agent as a server (unmasked).
    let refuse = |why: &str| {
        let why = why.to_string();
        let (to, back) = (to.clone(), back.clone());
        async move {
            let masked_to = direction == Direction::Out;
            let _ =
                to.lock().await.write_all(&close_frame(1008, "bottle: blocked", masked_to)).await;
            let _ = back.lock().await.write_all(&close_frame(1008, &why, !masked_to)).await;
        }
    };
    let mut message: Vec<Frame> = Vec::new();
    let mut size = 0usize;
    let mut in_binary = false;
    loop {
        let frame = match read_frame(&mut from, MAX_MESSAGE).await {
            Ok(f) => f,
            Err(_) => return,
        };
        if frame.rsv != 0 || !matches!(frame.opcode, 0 | 1 | 2 | 8 | 9 | 10) {
            (ctx.note)("websocket frame with reserved bits or an unknown opcode", true);
            refuse("unsupported websocket frame").await;
            return;
        }
        let passes = match frame.opcode {
            // Control frames may interleave with a fragmented message.
            8..=10 => true,
            OP_BINARY if message.is_empty() && !in_binary => {
                in_binary = !frame.fin;
                true
            }
            OP_CONTINUATION if in_binary => {
                in_binary = !frame.fin;
                true
            }
            OP_TEXT if message.is_empty() && !in_binary => false,
            OP_CONTINUATION if !message.is_empty() => false,
            _ => {
                refuse("websocket frames out of order").await;
                return;
            }
        };
        if passes {
            if to.lock().await.write_all(&frame.encode()).await.is_err() {
                return;
            }
            if frame.opcode == OP_CLOSE {
                return;
            }
            continue;
        }
        size += frame.payload.len();
        if size > MAX_MESSAGE {
            refuse("websocket message exceeds the scan limit").await;
            return;
        }
        let fin = frame.fin;
        message.push(frame);
        if !fin {
            continue;
        }
        let text: Vec<u8> = message.iter().flat_map(|f| f.payload.iter().copied()).collect();
        let text = String::from_utf8_lossy(&text).into_owned();
        let verdict = match direction {
            Direction::Out => dlp::inspect_frame(&ctx, &text).await,
            Direction::In => dlp::inspect_inbound_frame(&ctx, &text),
        };
        let bytes: Vec<u8> = match verdict {
            Ok(None) => message.iter().flat_map(Frame::encode).collect(),
            Ok(Some(replacement)) => {
                let first = &message[0];
                Frame {
                    fin: true,
                    rsv: 0,
                    opcode: OP_TEXT,
                    mask: first.mask,
                    payload: replacement.into_bytes(),
                }
                .encode()
            }
            Err(why) => {
                refuse(&why).await;
                return;
            }
        };
        message.clear();
        size = 0;
        if to.lock().await.write_all(&bytes).await.is_err() {
            return;
        }
    }
}
