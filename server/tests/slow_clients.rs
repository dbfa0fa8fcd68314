//! Clients that hold the relay's memory or connections by reading slowly or not at all, or by
//! sending oversized request heads, against a relay served by `run` on 127.0.0.1:0.
#![allow(clippy::unwrap_used)]

mod common;

use std::{sync::atomic::Ordering::Relaxed, time::Duration};

use anyhow::ensure;
use common::{Relay, WAIT, http, parse_response, push, space, token};
use mend_protocol::{Snapshot, paths};
use tokio::{
    io::{AsyncReadExt, AsyncWriteExt},
    net::{TcpSocket, TcpStream},
};

/// Larger than what the kernel buffers on both ends of a loopback connection (at most 4 MiB
/// to send by default, and the small receive buffer of [`not_reading`]).
const LARGE: usize = 12 << 20;

/// Waits (a bounded number of times) until `done` holds.
async fn eventually(what: &str, done: impl Fn() -> bool) -> anyhow::Result<()> {
    for _ in 0..250 {
        if done() {
            return Ok(());
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    anyhow::bail!("not within 5 s: {what}")
}

/// A connection with a small receive buffer that sends `request` and then reads nothing.
async fn not_reading(relay: &Relay, request: &str) -> anyhow::Result<TcpStream> {
    let socket = TcpSocket::new_v4()?;
    socket.set_recv_buffer_size(4096)?;
    let mut stream = socket.connect(relay.addr).await?;
    stream.write_all(request.as_bytes()).await?;
    Ok(stream)
}

#[tokio::test]
async fn a_client_that_stops_reading_an_answer_is_dropped_and_its_slot_freed() -> anyhow::Result<()>
{
    let relay = Relay::start_with(|config| {
        config.limits.max_snapshot_bytes = 16 << 20;
        config.limits.space_quota_bytes = 64 << 20;
        config.limits.write_timeout = Duration::from_millis(300);
    })
    .await?;
    let (s, t) = (space(1), token(1));
    relay.create(&s, &t).await?;
    let snapshot = Snapshot {
        covers: 0,
        payload: vec![7; LARGE],
    }
    .to_bytes();
    let (status, _) = http(relay.addr, "PUT", &paths::snapshot(&s), Some(&t), &snapshot).await?;
    assert_eq!(status, 204);

    let request = format!(
        "GET {} HTTP/1.1\r\nhost: relay\r\nauthorization: Bearer {t}\r\n\r\n",
        paths::snapshot(&s)
    );
    let mut stalled = not_reading(&relay, &request).await?;
    let metrics = relay.state.metrics();
    eventually("the connection is accepted", || {
        metrics.connections_open.load(Relaxed) == 1
    })
    .await?;
    // Its connection (and the snapshot held for it) is given back soon after its writes
    // stall, though the client keeps the connection open.
    eventually("the stalled connection is dropped", || {
        metrics.connections_open.load(Relaxed) == 0
    })
    .await?;
    // What the relay had not handed to the kernel is gone.
    let mut received = Vec::new();
    let _ = tokio::time::timeout(WAIT, stalled.read_to_end(&mut received)).await;
    assert!(received.len() < snapshot.len(), "{}", received.len());

    // A client that reads is served the whole answer.
    let (status, body) = http(relay.addr, "GET", &paths::snapshot(&s), Some(&t), &[]).await?;
    assert_eq!((status, body.len()), (200, snapshot.len()));
    relay.assert_others_served(1).await?;
    relay.stop().await
}

#[tokio::test]
async fn a_live_client_that_stops_reading_its_catch_up_is_dropped() -> anyhow::Result<()> {
    let relay = Relay::start_with(|config| {
        config.limits.max_chunk_bytes = 1 << 20;
        config.limits.max_ws_message_bytes = (1 << 20) + 1024;
        config.limits.space_quota_bytes = 64 << 20;
        config.limits.idle_timeout = Duration::from_millis(500);
        // Only the session's own deadline on sends is under test here.
        config.limits.write_timeout = Duration::from_secs(60);
    })
    .await?;
    let (s, t) = (space(1), token(1));
    relay.create(&s, &t).await?;
    let chunk = vec![3; 1 << 20];
    for seq in 1..=(LARGE >> 20) as u64 {
        relay
            .push_http(&s, &t, &push(common::device(1), seq, &chunk))
            .await?;
    }
    let upgrade = format!(
        "GET {}?after=0 HTTP/1.1\r\nhost: relay\r\nupgrade: websocket\r\nconnection: Upgrade\r\n\
         sec-websocket-key: dGhlIHNhbXBsZSBub25jZQ==\r\nsec-websocket-version: 13\r\n\
         authorization: Bearer {t}\r\n\r\n",
        paths::live(&s)
    );
    let _stalled = not_reading(&relay, &upgrade).await?;
    let metrics = relay.state.metrics();
    eventually("the live session starts", || {
        metrics.live_open.load(Relaxed) == 1
    })
    .await?;
    // The catch-up cannot go on; the session ends, and the connection with it.
    eventually("the stalled session ends", || {
        metrics.live_open.load(Relaxed) == 0 && metrics.connections_open.load(Relaxed) == 0
    })
    .await?;
    relay.stop().await
}

#[tokio::test]
async fn an_oversized_request_head_is_refused() -> anyhow::Result<()> {
    let relay = Relay::start().await?;
    let request = format!(
        "GET {} HTTP/1.1\r\nhost: relay\r\nx-padding: {}\r\nconnection: close\r\n\r\n",
        paths::HEALTHZ,
        "a".repeat(100 * 1024)
    );
    let mut stream = TcpStream::connect(relay.addr).await?;
    // The relay may answer and close before the whole head is written.
    let _ = stream.write_all(request.as_bytes()).await;
    let mut answer = Vec::new();
    let read = tokio::time::timeout(WAIT, stream.read_to_end(&mut answer)).await?;
    // Answered 431, or reset before the answer could be read: never served.
    if read.is_ok() || !answer.is_empty() {
        let (status, _) = parse_response(&answer)?;
        ensure!(status == 431, "answered {status}");
    }
    let (status, _) = http(relay.addr, "GET", paths::HEALTHZ, None, &[]).await?;
    assert_eq!(status, 200);
    relay.stop().await
}
