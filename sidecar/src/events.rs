//! `bottle-init ctl events`: the tree's events as newline-delimited JSON on the control
//! socket, one [`TreeEvent`] a line, flushed per line.
//!
//! Hazard: a client that reads slowly, or never, must not hold PID 1 back. The stream
//! reads from a bounded broadcast receiver, so the supervisor never waits for it: a
//! client that falls behind gets a `lagged` line saying how many events it missed. The
//! stream ends after the node's last event (`node_exited`) or as soon as the client
//! closes its end; a write that fails ends it too.

use std::path::Path;

use bottle_runtime::TreeEvent;
use bottle_runtime::events::next_event;
use tokio::io::{AsyncBufReadExt, AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt, BufReader};
use tokio::sync::broadcast;

/// Serves one subscriber until the tree ends or the client leaves. The first line is
/// `{"event":"subscribed"}`: every event after it reaches the client.
pub(crate) async fn stream(
    mut from_client: impl AsyncRead + Unpin,
    mut to_client: impl AsyncWrite + Unpin,
    mut events: broadcast::Receiver<TreeEvent>,
) -> std::io::Result<()> {
    write_line(&mut to_client, &TreeEvent::Subscribed).await?;
    let mut ended = false;
    let mut scratch = [0u8; 64];
    loop {
        tokio::select! {
            // Biased towards events: a client that sent more bytes after its request
            // must not starve them.
            biased;
            event = next_event(&mut events, &mut ended) => match event {
                Some(event) => write_line(&mut to_client, &event).await?,
                None => break,
            },
            read = from_client.read(&mut scratch) => match read {
                // The client closed its end (or it broke): stop following.
                Ok(0) | Err(_) => break,
                // Bytes after the request mean nothing; keep following.
                Ok(_) => {}
            },
        }
    }
    to_client.shutdown().await
}

async fn write_line(
    to_client: &mut (impl AsyncWrite + Unpin),
    event: &TreeEvent,
) -> std::io::Result<()> {
    let mut line = serde_json::to_vec(event).map_err(std::io::Error::other)?;
    line.push(b'\n');
    to_client.write_all(&line).await?;
    to_client.flush().await
}

/// Client side of `ctl events`: asks for the stream and prints each line as it comes
/// until the server ends it. Lines that are not events are printed too (an error reply).
#[allow(clippy::print_stdout)] // the stream is the command's output
pub(crate) async fn follow(socket: &Path) -> anyhow::Result<()> {
    use anyhow::Context;
    let mut stream = tokio::net::UnixStream::connect(socket)
        .await
        .with_context(|| format!("cannot connect to {}", socket.display()))?;
    stream.write_all(&bottle_protocol::control::Request::Events.to_line()).await?;
    let mut lines = BufReader::new(stream).lines();
    while let Some(line) = lines.next_line().await.context("reading the event stream")? {
        // stdout is line-buffered: each event reaches a pipe as it arrives.
        println!("{line}");
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[tokio::test]
    async fn the_stream_says_subscribed_then_one_event_a_line_and_ends_with_the_node() {
        let (tx, rx) = broadcast::channel(16);
        let (client, server) = tokio::io::duplex(4096);
        let (server_read, server_write) = tokio::io::split(server);
        let serving = tokio::spawn(stream(server_read, server_write, rx));
        let mut lines = BufReader::new(client).lines();
        assert_eq!(lines.next_line().await.unwrap().unwrap(), r#"{"event":"subscribed"}"#);
        let started = TreeEvent::Started {
            path: "init/a".into(),
            at: Duration::from_millis(3),
            pid: Some(7),
        };
        let exited = TreeEvent::NodeExited { at: Duration::from_millis(4), code: 0 };
        tx.send(started.clone()).unwrap();
        tx.send(exited.clone()).unwrap();
        for expected in [started, exited] {
            let line = lines.next_line().await.unwrap().unwrap();
            assert_eq!(serde_json::from_str::<TreeEvent>(&line).unwrap(), expected);
        }
        assert_eq!(lines.next_line().await.unwrap(), None, "the stream ends after node_exited");
        serving.await.unwrap().unwrap();
    }

    #[tokio::test]
    async fn the_stream_ends_when_the_client_leaves() {
        let (_tx, rx) = broadcast::channel::<TreeEvent>(16);
        let (client, server) = tokio::io::duplex(4096);
        let (server_read, server_write) = tokio::io::split(server);
        let serving = tokio::spawn(stream(server_read, server_write, rx));
        let mut client = BufReader::new(client);
        let mut first = String::new();
        client.read_line(&mut first).await.unwrap();
        drop(client);
        let ended = tokio::time::timeout(Duration::from_secs(5), serving).await;
        assert!(ended.is_ok(), "the stream kept running after the client left");
    }
}
