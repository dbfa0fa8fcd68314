//! The live WebSocket and the socket-level limits, against a relay served by `run` on
//! 127.0.0.1:0. Each hostile client gets its exact close code or status, and a well-behaved
//! client on the same relay is served right after.
#![allow(clippy::unwrap_used)]

mod common;

use std::time::Duration;

use common::{Relay, Ws, device, http, parse_response, push, space, token, upgrade_status};
use mend_protocol::{
    ErrorCode, MAX_PUSH_OVERHEAD, PROTOCOL_VERSION, Snapshot, SpaceId, UpToDate, close_code, paths,
};
use mend_relay::storage::{ROW_BYTES, SPACE_BYTES};
use tokio::{
    io::{AsyncReadExt, AsyncWriteExt},
    net::TcpStream,
};

#[tokio::test]
async fn two_devices_sync_live() -> anyhow::Result<()> {
    let relay = Relay::start().await?;
    let (s, t) = (space(1), token(1));
    relay.create(&s, &t).await?;
    // Something in the backlog before anyone connects.
    relay
        .push_http(&s, &t, &push(device(2), 1, b"bob, earlier"))
        .await?;

    let alice_device = device(1);
    let mut alice = relay
        .connect(&s, &t, &format!("after=0&device={alice_device}"))
        .await?;
    let backlog = alice.expect_chunk().await?;
    assert_eq!(
        (backlog.relay_seq, backlog.payload.as_slice()),
        (1, &b"bob, earlier"[..])
    );
    assert_eq!(alice.expect_up_to_date().await?, 1);

    let mut bob = relay
        .connect(&s, &t, &format!("after=1&device={}", device(2)))
        .await?;
    assert_eq!(bob.expect_up_to_date().await?, 1);

    // Alice pushes over the socket: she gets an Ack, Bob gets the chunk.
    alice
        .send_push(&push(alice_device, 1, b"hello bob"))
        .await?;
    let ack = alice.expect_ack().await?;
    assert_eq!(
        (ack.device_seq, ack.relay_seq, ack.duplicate),
        (1, 2, false)
    );
    let chunk = bob.expect_chunk().await?;
    assert_eq!(
        (
            chunk.relay_seq,
            chunk.device_id,
            chunk.device_seq,
            chunk.payload.as_slice()
        ),
        (2, alice_device, 1, &b"hello bob"[..])
    );

    // A replay is acknowledged as a duplicate and not delivered again.
    alice
        .send_push(&push(alice_device, 1, b"hello bob"))
        .await?;
    let replay = alice.expect_ack().await?;
    assert_eq!((replay.relay_seq, replay.duplicate), (2, true));
    // Another payload under that sequence is refused, and not delivered either.
    alice
        .send_push(&push(alice_device, 1, b"rolled back"))
        .await?;
    let conflict = alice.expect_nack().await?;
    assert_eq!(
        (conflict.device_seq, conflict.code, conflict.code.to_u8()),
        (1, ErrorCode::SeqConflict, 17)
    );

    // Bob answers over HTTP; Alice sees Bob's chunk and never her own; Bob, who named his
    // device, does not get his own back (the next thing he sees is chunk 4).
    relay
        .push_http(&s, &t, &push(device(2), 2, b"hi alice"))
        .await?;
    let chunk = alice.expect_chunk().await?;
    assert_eq!(
        (chunk.relay_seq, chunk.payload.as_slice()),
        (3, &b"hi alice"[..])
    );

    // A third socket that names no device gets everything, its own pushes included.
    let mut carol = relay.connect(&s, &t, "after=3").await?;
    assert_eq!(carol.expect_up_to_date().await?, 3);

    // Pipelined pushes are answered in order.
    for seq in 2..=21 {
        alice
            .send_push(&push(alice_device, seq, &[seq as u8; 100]))
            .await?;
    }
    for seq in 2..=21 {
        let ack = alice.expect_ack().await?;
        assert_eq!(ack.device_seq, seq);
    }
    for expected in 4..=23 {
        assert_eq!(bob.expect_chunk().await?.relay_seq, expected);
        assert_eq!(carol.expect_chunk().await?.relay_seq, expected);
    }
    carol.send_push(&push(device(3), 1, b"carol")).await?;
    let mut got = [carol.next().await?, carol.next().await?];
    got.sort_by_key(|m| matches!(m, mend_protocol::ServerMessage::Chunk(_)));
    assert!(matches!(&got[0], mend_protocol::ServerMessage::Ack(a) if a.relay_seq == 24));
    assert!(matches!(&got[1], mend_protocol::ServerMessage::Chunk(c) if c.relay_seq == 24));
    assert_eq!(alice.expect_chunk().await?.relay_seq, 24);
    carol.close().await;
    alice.close().await;
    bob.close().await;
    relay.stop().await
}

#[tokio::test]
async fn reconnect_resumes_from_the_cursor_and_pruned_cursor_is_refused() -> anyhow::Result<()> {
    let relay = Relay::start().await?;
    let (s, t) = (space(1), token(1));
    relay.create(&s, &t).await?;
    for seq in 1..=5 {
        relay.push_http(&s, &t, &push(device(2), seq, b"c")).await?;
    }
    let mut ws = relay.connect(&s, &t, "after=3").await?;
    assert_eq!(ws.expect_chunk().await?.relay_seq, 4);
    assert_eq!(ws.expect_chunk().await?.relay_seq, 5);
    assert_eq!(ws.expect_up_to_date().await?, 5);
    ws.close().await;

    let snapshot = Snapshot {
        covers: 4,
        payload: b"snap".to_vec(),
    };
    let (status, _) = http(
        relay.addr,
        "PUT",
        &paths::snapshot(&s),
        Some(&t),
        &snapshot.to_bytes(),
    )
    .await?;
    assert_eq!(status, 204);
    let mut stale = relay.connect(&s, &t, "after=2").await?;
    let (code, reason) = stale.expect_close().await?;
    assert_eq!(code, close_code::PRUNED, "{reason}");
    let mut fresh = relay.connect(&s, &t, "after=4").await?;
    assert_eq!(fresh.expect_chunk().await?.relay_seq, 5);
    assert_eq!(fresh.expect_up_to_date().await?, 5);
    fresh.close().await;
    relay.assert_others_served(1).await?;
    relay.stop().await
}

#[tokio::test]
async fn hostile_frames_get_exact_close_codes() -> anyhow::Result<()> {
    let relay = Relay::start().await?;
    let (s, t) = (space(1), token(1));
    relay.create(&s, &t).await?;
    let valid = push(device(1), 1, b"payload").to_bytes();
    let mut wrong_version = valid.clone();
    wrong_version[0] = PROTOCOL_VERSION + 1;
    let cases: Vec<(&str, Vec<u8>, u16)> = vec![
        (
            "garbage",
            b"\x01\x7fgarbage".to_vec(),
            close_code::MALFORMED,
        ),
        (
            "truncated",
            valid[..valid.len() - 2].to_vec(),
            close_code::MALFORMED,
        ),
        ("empty", vec![], close_code::MALFORMED),
        (
            "server-only kind",
            UpToDate {
                head: 1,
                after_mark: None,
                head_mark: None,
            }
            .to_bytes(),
            close_code::MALFORMED,
        ),
        (
            "unknown version",
            wrong_version,
            close_code::UNSUPPORTED_VERSION,
        ),
        (
            "oversized message",
            vec![PROTOCOL_VERSION; 6000],
            close_code::MESSAGE_TOO_BIG,
        ),
    ];
    for (round, (name, frame, expected)) in cases.into_iter().enumerate() {
        let mut ws = relay.connect(&s, &t, "after=0").await?;
        ws.expect_up_to_date().await?;
        ws.send_raw(frame).await?;
        let (code, reason) = ws.expect_close().await?;
        assert_eq!(code, expected, "{name}: {reason}");
        relay.assert_others_served(round as u8).await?;
    }

    let mut ws = relay.connect(&s, &t, "after=0").await?;
    ws.expect_up_to_date().await?;
    ws.socket
        .send(tokio_tungstenite::tungstenite::Message::Text(
            "hello".into(),
        ))
        .await?;
    let (code, _) = ws.expect_close().await?;
    assert_eq!(code, close_code::TEXT_NOT_ACCEPTED);

    // Nothing hostile was stored.
    let mut check = relay.connect(&s, &t, "after=0").await?;
    assert_eq!(check.expect_up_to_date().await?, 0);
    check.close().await;
    relay.assert_others_served(10).await?;
    relay.stop().await
}

use futures_util::SinkExt;

#[tokio::test]
async fn oversized_chunk_within_message_limit_is_nacked_and_the_socket_lives_on()
-> anyhow::Result<()> {
    let relay = Relay::start().await?;
    let (s, t) = (space(1), token(1));
    relay.create(&s, &t).await?;
    let mut ws = relay
        .connect(&s, &t, &format!("after=0&device={}", device(1)))
        .await?;
    ws.expect_up_to_date().await?;
    ws.send_push(&push(device(1), 1, &[0; 4097])).await?;
    let nack = ws.expect_nack().await?;
    assert_eq!((nack.device_seq, nack.code), (1, ErrorCode::ChunkTooLarge));
    ws.send_push(&push(device(1), 1, &[0; 4096])).await?;
    assert_eq!(ws.expect_ack().await?.relay_seq, 1);
    ws.close().await;
    relay.assert_others_served(1).await?;
    relay.stop().await
}

/// Payloads shorter than any sealed one are refused, over HTTP and live: each row costs the
/// database far more than its payload, which is all the quota counts (before: empty payloads
/// were stored without end).
#[tokio::test]
async fn payloads_shorter_than_a_sealed_one_are_refused() -> anyhow::Result<()> {
    let relay = Relay::start_with(|config| config.limits.min_chunk_bytes = 40).await?;
    let (s, t) = (space(1), token(1));
    relay.create(&s, &t).await?;
    let body = push(device(1), 1, &[]).to_bytes();
    let (status, answer) =
        common::http(relay.addr, "POST", &paths::chunks(&s), Some(&t), &body).await?;
    assert_eq!(
        (status, common::error_code(&answer).as_str()),
        (400, "malformed")
    );
    let mut ws = relay
        .connect(&s, &t, &format!("after=0&device={}", device(1)))
        .await?;
    ws.expect_up_to_date().await?;
    ws.send_push(&push(device(1), 1, &[0; 39])).await?;
    let nack = ws.expect_nack().await?;
    assert_eq!((nack.device_seq, nack.code), (1, ErrorCode::Malformed));
    ws.send_push(&push(device(1), 1, &[0; 40])).await?;
    assert_eq!(ws.expect_ack().await?.relay_seq, 1);
    ws.close().await;
    relay.stop().await
}

/// A live push past the relay-wide byte limit gets a Nack `relay_full` with a retry hint, the
/// socket stays open, and a push that still fits is acknowledged.
#[tokio::test]
async fn a_push_to_a_full_relay_is_nacked_and_the_socket_lives_on() -> anyhow::Result<()> {
    // Room for the space itself and 6000 bytes.
    let relay =
        Relay::start_with(|config| config.limits.max_total_bytes = 6000 + SPACE_BYTES).await?;
    let (s, t) = (space(1), token(1));
    relay.create(&s, &t).await?;
    let mut ws = relay
        .connect(&s, &t, &format!("after=0&device={}", device(1)))
        .await?;
    ws.expect_up_to_date().await?;
    ws.send_push(&push(device(1), 1, &[1; 4000])).await?;
    assert_eq!(ws.expect_ack().await?.relay_seq, 1);
    ws.send_push(&push(device(1), 2, &[2; 3000])).await?;
    let nack = ws.expect_nack().await?;
    assert_eq!((nack.device_seq, nack.code), (2, ErrorCode::RelayFull));
    assert!(nack.retry_after_ms > 0);
    // Nothing of the relay-wide figures reaches a client.
    assert!(
        !nack.message.chars().any(|c| c.is_ascii_digit()),
        "{}",
        nack.message
    );
    // What is left: 6000 less the first chunk and two rows (150 bytes each).
    ws.send_push(&push(device(1), 2, &[2; 1700])).await?;
    assert_eq!(ws.expect_ack().await?.relay_seq, 2);
    ws.close().await;
    relay.stop().await
}

#[tokio::test]
async fn upgrades_are_refused_with_http_statuses() -> anyhow::Result<()> {
    let relay = Relay::start().await?;
    let (alice, bob) = (space(1), space(2));
    relay.create(&alice, &token(1)).await?;
    relay.create(&bob, &token(2)).await?;
    let live = |s| format!("{}?after=0", paths::live(s));
    assert_eq!(
        upgrade_status(Ws::connect(relay.addr, &live(&alice), None).await)?,
        401
    );
    assert_eq!(
        upgrade_status(Ws::connect(relay.addr, &live(&alice), Some(&token(9))).await)?,
        401
    );
    // Alice's token on Bob's space.
    assert_eq!(
        upgrade_status(Ws::connect(relay.addr, &live(&bob), Some(&token(1))).await)?,
        401
    );
    assert_eq!(
        upgrade_status(Ws::connect(relay.addr, &live(&space(3)), Some(&token(1))).await)?,
        404
    );
    let bad_query = format!("{}?after=x", paths::live(&alice));
    assert_eq!(
        upgrade_status(Ws::connect(relay.addr, &bad_query, Some(&token(1))).await)?,
        400
    );
    relay.assert_others_served(1).await?;

    // The per-space cap (4 in tests) refuses the fifth socket with 429.
    let mut open = Vec::new();
    for _ in 0..4 {
        let mut ws = relay.connect(&alice, &token(1), "after=0").await?;
        ws.expect_up_to_date().await?;
        open.push(ws);
    }
    assert_eq!(
        upgrade_status(relay.connect(&alice, &token(1), "after=0").await)?,
        429
    );
    relay.assert_others_served(2).await?;
    // Closing one frees a slot.
    if let Some(ws) = open.pop() {
        ws.close().await;
    }
    let mut again = None;
    for _ in 0..50 {
        if let Ok(ws) = relay.connect(&alice, &token(1), "after=0").await {
            again = Some(ws);
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert!(again.is_some(), "a slot was not freed");
    for ws in open.into_iter().chain(again) {
        ws.close().await;
    }
    relay.stop().await
}

#[tokio::test]
async fn silent_clients_are_dropped() -> anyhow::Result<()> {
    let relay = Relay::start_with(|config| {
        config.limits.idle_timeout = Duration::from_millis(300);
        config.limits.header_timeout = Duration::from_millis(300);
    })
    .await?;
    let (s, t) = (space(1), token(1));
    relay.create(&s, &t).await?;

    // A WebSocket that never sends anything is closed with 4008.
    let mut ws = relay.connect(&s, &t, "after=0").await?;
    ws.expect_up_to_date().await?;
    let (code, _) = ws.expect_close().await?;
    assert_eq!(code, close_code::IDLE_TIMEOUT);

    // A TCP connection that never sends a request is closed.
    let mut silent = TcpStream::connect(relay.addr).await?;
    let mut buf = [0u8; 256];
    let read = tokio::time::timeout(common::WAIT, silent.read(&mut buf)).await;
    assert!(
        matches!(read, Ok(Ok(0)) | Ok(Err(_))),
        "a silent connection was not closed: {read:?}"
    );

    // So is a connection that sends half a request and stalls.
    let mut stalled = TcpStream::connect(relay.addr).await?;
    stalled
        .write_all(b"GET /healthz HTTP/1.1\r\nhost: x\r\n")
        .await?;
    let mut response = Vec::new();
    let read = tokio::time::timeout(common::WAIT, stalled.read_to_end(&mut response)).await;
    assert!(read.is_ok(), "a stalled request was not dropped");
    if !response.is_empty() {
        let (status, _) = parse_response(&response)?;
        assert_eq!(status, 408);
    }
    relay.assert_others_served(1).await?;
    relay.stop().await
}

#[tokio::test]
async fn a_client_that_pings_stays_connected() -> anyhow::Result<()> {
    let relay =
        Relay::start_with(|config| config.limits.idle_timeout = Duration::from_millis(400)).await?;
    let (s, t) = (space(1), token(1));
    relay.create(&s, &t).await?;
    let mut ws = relay
        .connect(&s, &t, &format!("after=0&device={}", device(1)))
        .await?;
    ws.expect_up_to_date().await?;
    // Ping at half the idle timeout for well past it.
    for _ in 0..6 {
        ws.socket
            .send(tokio_tungstenite::tungstenite::Message::Ping(
                Vec::new().into(),
            ))
            .await?;
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    ws.send_push(&push(device(1), 1, b"still here")).await?;
    assert_eq!(ws.expect_ack().await?.relay_seq, 1);
    ws.close().await;
    relay.stop().await
}

#[tokio::test]
async fn erasing_closes_live_connections() -> anyhow::Result<()> {
    let relay = Relay::start().await?;
    let (s, t) = (space(1), token(1));
    relay.create(&s, &t).await?;
    let mut ws = relay.connect(&s, &t, "after=0").await?;
    ws.expect_up_to_date().await?;
    let (status, _) = http(relay.addr, "DELETE", &paths::space(&s), Some(&t), &[]).await?;
    assert_eq!(status, 204);
    let (code, _) = ws.expect_close().await?;
    assert_eq!(code, close_code::SPACE_NOT_FOUND);
    relay.assert_others_served(1).await?;
    relay.stop().await
}

#[tokio::test]
async fn connections_over_the_relay_cap_get_503() -> anyhow::Result<()> {
    let relay = Relay::start_with(|config| config.limits.max_connections = 2).await?;
    let (s, t) = (space(1), token(1));
    relay.create(&s, &t).await?;
    let mut first = relay.connect(&s, &t, "after=0").await?;
    first.expect_up_to_date().await?;
    let mut second = relay.connect(&s, &t, "after=0").await?;
    second.expect_up_to_date().await?;
    let (status, body) = http(relay.addr, "GET", paths::HEALTHZ, None, &[]).await?;
    assert_eq!(
        (status, common::error_code(&body).as_str()),
        (503, "too_many_connections")
    );
    first.close().await;
    // Once a slot frees up, requests are served again.
    let mut served = false;
    for _ in 0..50 {
        if http(relay.addr, "GET", paths::HEALTHZ, None, &[]).await?.0 == 200 {
            served = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert!(served, "the freed slot was not reused");
    relay.stop().await
}

#[tokio::test]
async fn shutdown_answers_every_push_it_stored() -> anyhow::Result<()> {
    // Room for all 200 pushes: a slow shutdown must not turn the last ones into quota Nacks.
    let mut relay = Relay::start_with(|config| config.limits.space_quota_bytes = 1 << 20).await?;
    let (s, t) = (space(1), token(1));
    relay.create(&s, &t).await?;
    let mut ws = relay
        .connect(&s, &t, &format!("after=0&device={}", device(1)))
        .await?;
    ws.expect_up_to_date().await?;
    for seq in 1..=200 {
        ws.send_push(&push(device(1), seq, &[seq as u8; 512]))
            .await?;
    }
    // Shut down while pushes are in flight: after the first acknowledgement.
    let mut acked = vec![ws.expect_ack().await?.device_seq];
    relay.begin_stop();
    let close = loop {
        match tokio::time::timeout(common::WAIT, futures_util::StreamExt::next(&mut ws.socket))
            .await?
        {
            Some(Ok(tokio_tungstenite::tungstenite::Message::Binary(bytes))) => {
                match mend_protocol::ServerMessage::decode(&bytes, &mend_protocol::Limits::DEFAULT)?
                {
                    mend_protocol::ServerMessage::Ack(ack) => acked.push(ack.device_seq),
                    other => anyhow::bail!("unexpected {other:?}"),
                }
            }
            Some(Ok(tokio_tungstenite::tungstenite::Message::Close(frame))) => {
                // Send the close reply so the relay need not wait for it.
                let _ = futures_util::StreamExt::next(&mut ws.socket).await;
                break frame;
            }
            other => anyhow::bail!("unexpected {other:?}"),
        };
    };
    assert_eq!(
        close.map(|f| u16::from(f.code)),
        Some(close_code::GOING_AWAY)
    );
    let dir = relay.dir.path().to_path_buf();
    // Keep the directory alive while reopening the database.
    let state_dir = std::mem::replace(&mut relay.dir, tempfile::tempdir()?);
    relay.stop().await?;

    let reopened = Relay::start_with(|config| config.data_dir = dir.clone()).await?;
    let mut check = reopened.connect(&s, &t, "after=0").await?;
    let mut stored = Vec::new();
    loop {
        match check.next().await? {
            mend_protocol::ServerMessage::Chunk(chunk) => stored.push(chunk.device_seq),
            mend_protocol::ServerMessage::UpToDate(_) => break,
            other => anyhow::bail!("unexpected {other:?}"),
        }
    }
    assert_eq!(
        acked, stored,
        "every stored push was acknowledged, in order, before closing"
    );
    assert!(!acked.is_empty());
    check.close().await;
    reopened.stop().await?;
    drop(state_dir);
    Ok(())
}

#[tokio::test]
async fn space_creations_and_live_sockets_are_limited_per_address() -> anyhow::Result<()> {
    let relay = Relay::start_with(|config| {
        config.limits.creations_per_address = 3;
        config.limits.max_connections_per_address = 2;
        config.limits.client_ip_header = Some("x-forwarded-for".to_owned());
    })
    .await?;
    // Creations from one address: three pass, the fourth is refused with a wait.
    for n in 1..=3 {
        relay.create(&space(n), &token(n)).await?;
    }
    let (status, body) = http(
        relay.addr,
        "PUT",
        &paths::space(&space(4)),
        Some(&token(4)),
        &[],
    )
    .await?;
    assert_eq!(
        (status, common::error_code(&body).as_str()),
        (429, "rate_limited")
    );
    // Re-creating an existing space is what devices do every round: never counted.
    relay.create(&space(1), &token(1)).await?;
    // Another address, as told by the trusted proxy header, has its own budget.
    let created = proxied(
        relay.addr,
        "PUT",
        &paths::space(&space(4)),
        &token(4),
        "192.0.2.9",
    )
    .await?;
    assert!(created.starts_with("HTTP/1.1 201"), "{created}");

    // Live sockets: two per address on this instance.
    let mut open = Vec::new();
    for _ in 0..2 {
        let mut ws = relay.connect(&space(1), &token(1), "after=0").await?;
        ws.expect_up_to_date().await?;
        open.push(ws);
    }
    assert_eq!(
        upgrade_status(relay.connect(&space(2), &token(2), "after=0").await)?,
        429
    );
    let refused = proxied(
        relay.addr,
        "GET",
        &format!("{}?after=0", paths::live(&space(2))),
        &token(2),
        "127.0.0.1",
    )
    .await?;
    assert!(refused.starts_with("HTTP/1.1 429"), "{refused}");
    for ws in open {
        ws.close().await;
    }
    relay.stop().await
}

/// A request as a proxy would forward it, with `x-forwarded-for`; answered as raw text.
async fn proxied(
    addr: std::net::SocketAddr,
    method: &str,
    path: &str,
    tok: &str,
    client: &str,
) -> anyhow::Result<String> {
    let mut stream = TcpStream::connect(addr).await?;
    let upgrade = if method == "GET" {
        "connection: upgrade\r\nupgrade: websocket\r\nsec-websocket-version: 13\r\n\
         sec-websocket-key: dGhlIHNhbXBsZSBub25jZQ==\r\n"
    } else {
        "connection: close\r\ncontent-length: 0\r\n"
    };
    let request = format!(
        "{method} {path} HTTP/1.1\r\nhost: {addr}\r\nauthorization: Bearer {tok}\r\n\
         x-forwarded-for: 203.0.113.1, {client}\r\n{upgrade}\r\n"
    );
    stream.write_all(request.as_bytes()).await?;
    let mut response = vec![0u8; 4096];
    let n = tokio::time::timeout(common::WAIT, stream.read(&mut response)).await??;
    Ok(String::from_utf8_lossy(&response[..n]).into_owned())
}

/// A request body that trickles (a push declaring 500 KB that sends 10 bytes, a snapshot that
/// stops halfway) is answered 408 and its connection closed, while others are served.
#[tokio::test]
async fn slow_bodies_are_timed_out() -> anyhow::Result<()> {
    let relay = Relay::start_with(|config| {
        config.limits.max_chunk_bytes = 1 << 20;
        config.limits.max_ws_message_bytes = (1 << 20) + 1024;
        config.limits.body_timeout = Duration::from_millis(200);
        config.limits.min_body_rate = 10 << 20;
    })
    .await?;
    let (s, t) = (space(1), token(1));
    relay.create(&s, &t).await?;
    for (path, declared) in [(paths::chunks(&s), 500_000), (paths::snapshot(&s), 4000)] {
        let method = if path.ends_with("chunks") {
            "POST"
        } else {
            "PUT"
        };
        let mut slow = TcpStream::connect(relay.addr).await?;
        slow.write_all(
            format!(
                "{method} {path} HTTP/1.1\r\nhost: x\r\nauthorization: Bearer {t}\r\n\
                 content-length: {declared}\r\n\r\n0123456789"
            )
            .as_bytes(),
        )
        .await?;
        let mut response = Vec::new();
        // The relay answers and closes: reading to the end returns.
        tokio::time::timeout(common::WAIT, slow.read_to_end(&mut response))
            .await
            .map_err(|_| anyhow::anyhow!("{method}: slow body not timed out"))??;
        let (status, body) = parse_response(&response)?;
        assert_eq!(
            (status, common::error_code(&body).as_str()),
            (408, "malformed"),
            "{method} {path}"
        );
    }
    relay.assert_others_served(1).await?;
    relay.stop().await
}

/// A push that declares `declared` bytes and sends ten of them, then stalls.
async fn slow_push(
    relay: &Relay,
    space: &SpaceId,
    token: &str,
    declared: u64,
) -> anyhow::Result<TcpStream> {
    let mut stream = TcpStream::connect(relay.addr).await?;
    let path = paths::chunks(space);
    stream
        .write_all(
            format!(
                "POST {path} HTTP/1.1\r\nhost: x\r\nauthorization: Bearer {token}\r\n\
                 content-length: {declared}\r\n\r\n0123456789"
            )
            .as_bytes(),
        )
        .await?;
    Ok(stream)
}

/// Reads one answer (head and the body its content-length declares) without waiting for the
/// connection to close; returns the status, the head and the body.
async fn read_answer(stream: &mut TcpStream) -> anyhow::Result<(u16, String, Vec<u8>)> {
    let mut answer = Vec::new();
    let mut buf = [0u8; 4096];
    loop {
        if let Some(end) = answer.windows(4).position(|w| w == b"\r\n\r\n") {
            let head = String::from_utf8_lossy(&answer[..end]).to_ascii_lowercase();
            let length: usize = head
                .lines()
                .find_map(|line| line.strip_prefix("content-length:"))
                .and_then(|value| value.trim().parse().ok())
                .unwrap_or(0);
            if answer.len() >= end + 4 + length {
                let (status, body) = parse_response(&answer)?;
                return Ok((status, head, body));
            }
        }
        let n = tokio::time::timeout(common::WAIT, stream.read(&mut buf)).await??;
        anyhow::ensure!(n > 0, "connection closed before a whole answer");
        answer.extend_from_slice(&buf[..n]);
    }
}

/// Waits (boundedly) until the relay's count of reserved body bytes is `expected`.
async fn reserved_reaches(relay: &Relay, expected: u64) -> anyhow::Result<()> {
    let budget = relay.state.body_budget();
    for _ in 0..500 {
        if budget.reserved() == expected {
            return Ok(());
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    anyhow::bail!(
        "reserved body bytes {} never reached {expected}",
        budget.reserved()
    )
}

/// Many slow pushes on one token, each declaring a whole chunk and sending ten bytes of it:
/// the space holds only its body budget (the next is answered `503 unavailable` with
/// `Retry-After` before a byte of it is read), a second slow space takes what is left of the
/// relay's budget and no more, the relay's own count of buffered bytes never passes the
/// budget, and a well-behaved client on another space pushes meanwhile. Closing the slow
/// connections gives every byte back and the space pushes again.
#[tokio::test]
async fn slow_bodies_hold_only_their_byte_budget() -> anyhow::Result<()> {
    const BODY: u64 = (4096 + MAX_PUSH_OVERHEAD) as u64;
    const SPACE_SHARE: u64 = 5 * BODY;
    const RELAY_SHARE: u64 = 8 * BODY + 1000;
    let relay = Relay::start_with(|config| {
        config.limits.max_body_bytes_per_space = SPACE_SHARE;
        config.limits.max_body_bytes = RELAY_SHARE;
        // The slow bodies must outlive the story, not be timed out halfway through it.
        config.limits.body_timeout = Duration::from_secs(120);
    })
    .await?;
    let (hog, hog_token) = (space(1), token(1));
    let (second, second_token) = (space(2), token(2));
    relay.create(&hog, &hog_token).await?;
    relay.create(&second, &second_token).await?;
    let mut held = Vec::new();
    for (space, tok, accepted) in [(&hog, &hog_token, 5u64), (&second, &second_token, 3)] {
        for _ in 0..accepted {
            held.push(slow_push(&relay, space, tok, BODY).await?);
            reserved_reaches(&relay, held.len() as u64 * BODY).await?;
        }
        // One more: refused at once, from its declared length alone.
        let mut refused = slow_push(&relay, space, tok, BODY).await?;
        let (status, head, body) = read_answer(&mut refused).await?;
        assert_eq!(
            (status, common::error_code(&body).as_str()),
            (503, ErrorCode::Unavailable.name()),
            "{head}"
        );
        assert!(head.contains("retry-after: 1"), "{head}");
    }
    let budget = relay.state.body_budget();
    assert_eq!(budget.reserved(), 8 * BODY);
    assert!(budget.peak() <= RELAY_SHARE, "peak {}", budget.peak());
    let (status, metrics) = http(relay.addr, "GET", paths::METRICS, None, &[]).await?;
    assert_eq!(status, 200);
    let metrics = String::from_utf8_lossy(&metrics);
    assert!(
        metrics.contains(&format!("mend_body_bytes_reserved {}\n", 8 * BODY)),
        "{metrics}"
    );
    // Meanwhile a well-behaved device on its own space pushes and syncs.
    relay.assert_others_served(1).await?;
    // The slow connections go; their bytes come back, and the space pushes again.
    drop(held);
    reserved_reaches(&relay, 0).await?;
    let ack = relay
        .push_http(&hog, &hog_token, &push(device(1), 1, b"after"))
        .await?;
    assert_eq!(ack.relay_seq, 1);
    assert!(budget.peak() <= RELAY_SHARE, "peak {}", budget.peak());
    relay.stop().await
}

/// Pruned chunks are deleted by the periodic sweep once their grace is over, in a space that
/// never uploads another snapshot, and both byte counters give their bytes back.
#[tokio::test]
async fn the_periodic_sweep_deletes_expired_pruned_chunks() -> anyhow::Result<()> {
    let relay = Relay::start_with(|config| {
        config.limits.prune_grace = Duration::from_secs(1);
        config.limits.sweep_interval = Duration::from_millis(100);
    })
    .await?;
    let (s, t) = (space(1), token(1));
    relay.create(&s, &t).await?;
    for seq in 1..=3 {
        relay
            .push_http(&s, &t, &push(device(1), seq, &[seq as u8; 1000]))
            .await?;
    }
    let snapshot = Snapshot {
        covers: 3,
        payload: vec![0; 10],
    };
    let (status, _) = http(
        relay.addr,
        "PUT",
        &paths::snapshot(&s),
        Some(&t),
        &snapshot.to_bytes(),
    )
    .await?;
    assert_eq!(status, 204);
    // Nothing else happens in the space: the sweep alone brings the total down.
    // The snapshot and the three rows, which are kept, stay counted.
    let storage = relay.state.storage();
    let left = 10 + 3 * ROW_BYTES + SPACE_BYTES;
    let mut total = storage.total_bytes().await?;
    for _ in 0..500 {
        if total == left {
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
        total = storage.total_bytes().await?;
    }
    assert_eq!(total, left, "the pruned chunks were never swept");
    let (status, metrics) = http(relay.addr, "GET", paths::METRICS, None, &[]).await?;
    assert_eq!(status, 200);
    let metrics = String::from_utf8_lossy(&metrics);
    assert!(metrics.contains("mend_swept_chunks_total 3\n"), "{metrics}");
    assert!(
        metrics.contains("mend_swept_bytes_total 3000\n"),
        "{metrics}"
    );
    // What the relay-wide limit counts, and the limit, for an operator to watch.
    assert!(
        metrics.contains(&format!("\nmend_stored_bytes {left}\n")),
        "{metrics}"
    );
    assert!(
        metrics.contains(&format!(
            "\nmend_stored_bytes_limit {}\n",
            relay.state.config().limits.max_total_bytes
        )),
        "{metrics}"
    );
    relay.assert_others_served(1).await?;
    relay.stop().await
}

/// One address holds only its share of the relay's TCP connections, whatever it sends on them
/// (idle keep-alive connections, plain requests): the next is answered 503 at once, and a slot
/// comes back when one of its connections closes.
#[tokio::test]
async fn one_address_holds_only_its_share_of_tcp_connections() -> anyhow::Result<()> {
    let relay = Relay::start_with(|config| config.limits.max_connections_per_address = 2).await?;
    let mut held = Vec::new();
    for _ in 0..2 {
        held.push(tokio::net::TcpStream::connect(relay.addr).await?);
    }
    let mut third = tokio::net::TcpStream::connect(relay.addr).await?;
    let mut answer = Vec::new();
    tokio::time::timeout(Duration::from_secs(20), third.read_to_end(&mut answer)).await??;
    let (status, body) = parse_response(&answer)?;
    assert_eq!(
        (status, common::error_code(&body).as_str()),
        (503, "too_many_connections")
    );
    // The connections it holds still serve it.
    let first = &mut held[0];
    first
        .write_all(b"GET /healthz HTTP/1.1\r\nhost: relay\r\nconnection: close\r\n\r\n")
        .await?;
    let mut answer = Vec::new();
    tokio::time::timeout(Duration::from_secs(20), first.read_to_end(&mut answer)).await??;
    assert_eq!(parse_response(&answer)?.0, 200);
    // That one closed: its slot is free again (once the relay has let go of it).
    let mut status = 0;
    for _ in 0..200 {
        status = http(relay.addr, "GET", "/healthz", None, &[]).await?.0;
        if status == 200 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert_eq!(status, 200, "the freed slot never came back");
    drop(held);
    relay.stop().await?;
    Ok(())
}

/// A subscriber that stops reading while 24 chunks of 1 MiB are committed (more than the
/// kernel buffers, so its session stalls on a send, and far more than its space's share of the
/// live channel may hold) then reads again: it gets every chunk, in relay order, none twice;
/// those the channel could not hold come from storage.
#[tokio::test]
async fn a_slow_subscriber_gets_every_large_chunk_in_order() -> anyhow::Result<()> {
    const CHUNKS: u64 = 24;
    const SIZE: usize = 1 << 20;
    let relay = Relay::start_with(|config| {
        config.limits.max_chunk_bytes = SIZE;
        config.limits.max_ws_message_bytes = SIZE + 1024;
        config.limits.space_quota_bytes = 64 << 20;
        // The stalled session's sends must outlast the pushes.
        config.limits.idle_timeout = Duration::from_secs(60);
    })
    .await?;
    let (s, t) = (space(1), token(1));
    relay.create(&s, &t).await?;
    let mut slow = relay.connect(&s, &t, "after=0").await?;
    assert_eq!(slow.expect_up_to_date().await?, 0);
    for seq in 1..=CHUNKS {
        let ack = relay
            .push_http(&s, &t, &push(device(2), seq, &vec![seq as u8; SIZE]))
            .await?;
        assert_eq!(ack.relay_seq, seq);
    }
    for seq in 1..=CHUNKS {
        let chunk = slow.expect_chunk().await?;
        assert_eq!(chunk.relay_seq, seq, "out of order or missed");
        assert!(chunk.payload.len() == SIZE && chunk.payload.iter().all(|b| *b == seq as u8));
    }
    // The next message is the next chunk: none was sent twice.
    relay
        .push_http(&s, &t, &push(device(3), 1, b"after"))
        .await?;
    assert_eq!(slow.expect_chunk().await?.relay_seq, CHUNKS + 1);
    slow.close().await;
    relay.stop().await
}
