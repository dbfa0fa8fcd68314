//! `fanout`: pairs of devices on one space each; A pushes at a steady rate, B is subscribed;
//! measures the time from A's send to B's receipt of the chunk.
//!
//! Both devices live in this process, so one clock times both ends. The send time travels in
//! the first eight bytes of the (otherwise opaque) payload.

use std::{
    net::SocketAddr,
    time::{Duration, Instant},
};

use anyhow::Context;
use clap::Args;
use futures_util::{SinkExt, StreamExt};
use hdrhistogram::Histogram;
use mend_protocol::{Push, ServerMessage};
use tokio_tungstenite::tungstenite::Message;

use crate::{client, report};

#[derive(Debug, Args)]
pub struct FanoutArgs {
    /// Pairs of devices (one space each).
    #[arg(long, default_value_t = 1000)]
    pairs: u64,
    /// Pushes per second by each pair's device A.
    #[arg(long, default_value_t = 2.0)]
    rate: f64,
    /// Chunk payload bytes (at least 8).
    #[arg(long, default_value_t = 256)]
    chunk_bytes: usize,
    /// Seconds of measurement.
    #[arg(long, default_value_t = 10)]
    seconds: u64,
}

pub async fn run(relays: &[SocketAddr], args: FanoutArgs) -> anyhow::Result<()> {
    let seed = client::run_seed();
    let spaces = client::create_spaces(relays[0], seed, args.pairs, 64).await?;
    let origin = Instant::now();
    let start = origin + Duration::from_secs(1);
    let end = start + Duration::from_secs(args.seconds);
    let period = Duration::from_secs_f64(1.0 / args.rate.max(0.01));
    let mut receivers = Vec::new();
    let mut senders = Vec::new();
    for (i, space) in spaces.iter().enumerate() {
        let (a, b) = (
            client::bench_device(2 * i as u64),
            client::bench_device(2 * i as u64 + 1),
        );
        // With several relays, A and B of a pair are on different instances.
        let subscriber = client::connect(relays[(i + 1) % relays.len()], space, 0, Some(b)).await?;
        let pusher = client::connect(relays[i % relays.len()], space, u64::MAX, Some(a)).await?;
        receivers.push(tokio::spawn(receive(subscriber, origin, end)));
        // Spread the pairs' sends evenly over one period.
        let offset = period.mul_f64(i as f64 / args.pairs.max(1) as f64);
        senders.push(tokio::spawn(send(
            pusher,
            a,
            args.chunk_bytes.max(8),
            origin,
            start + offset,
            period,
            end,
        )));
    }
    let mut acks = report::histogram();
    for sender in senders {
        acks.add(&sender.await??)?;
    }
    let mut fanout = report::histogram();
    for receiver in receivers {
        fanout.add(&receiver.await??)?;
    }
    println!(
        "fanout: {} pairs over {} relay(s), {:.1} pushes/s each ({:.0}/s total), {} B chunks, {} s",
        args.pairs,
        relays.len(),
        args.rate,
        args.rate * args.pairs as f64,
        args.chunk_bytes,
        args.seconds
    );
    println!("A→relay→B latency: {}", report::summary(&fanout));
    println!("A's ack latency:   {}", report::summary(&acks));
    Ok(())
}

async fn send(
    socket: client::Socket,
    device: mend_protocol::DeviceId,
    chunk_bytes: usize,
    origin: Instant,
    first: Instant,
    period: Duration,
    end: Instant,
) -> anyhow::Result<Histogram<u64>> {
    let (mut sink, mut stream) = socket.split();
    let mut ticks = tokio::time::interval_at(first.into(), period);
    ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut acks = report::histogram();
    let mut sent_at = std::collections::VecDeque::new();
    let mut device_seq = 0;
    loop {
        tokio::select! {
            tick = ticks.tick() => {
                if tick.into_std() >= end {
                    break;
                }
                device_seq += 1;
                let now = Instant::now();
                let mut payload = vec![0u8; chunk_bytes];
                payload[..8].copy_from_slice(&(now - origin).as_nanos().to_le_bytes()[..8]);
                sent_at.push_back(now);
                let frame = Push { device_id: device, device_seq, payload }.to_bytes();
                sink.send(Message::Binary(frame.into())).await?;
            }
            message = stream.next() => {
                let message = message.context("relay closed the pushing socket")??;
                if let Message::Binary(bytes) = message
                    && let ServerMessage::Ack(_) = client::decode(&bytes)?
                    && let Some(sent) = sent_at.pop_front()
                {
                    report::record(&mut acks, sent.elapsed());
                }
            }
        }
    }
    // Collect the last acknowledgements.
    while !sent_at.is_empty() {
        match tokio::time::timeout(Duration::from_secs(5), stream.next()).await {
            Ok(Some(Ok(Message::Binary(bytes)))) => {
                if let ServerMessage::Ack(_) = client::decode(&bytes)?
                    && let Some(sent) = sent_at.pop_front()
                {
                    report::record(&mut acks, sent.elapsed());
                }
            }
            Ok(Some(Ok(_))) => {}
            _ => break,
        }
    }
    let _ = sink.close().await;
    Ok(acks)
}

async fn receive(
    socket: client::Socket,
    origin: Instant,
    end: Instant,
) -> anyhow::Result<Histogram<u64>> {
    let (mut sink, mut stream) = socket.split();
    let mut latencies = report::histogram();
    let deadline = end + Duration::from_secs(2);
    while let Ok(Some(message)) = tokio::time::timeout_at(deadline.into(), stream.next()).await {
        let Message::Binary(bytes) = message? else {
            continue;
        };
        if let ServerMessage::Chunk(chunk) = client::decode(&bytes)? {
            let now = (Instant::now() - origin).as_nanos() as u64;
            let mut sent = [0u8; 8];
            sent.copy_from_slice(&chunk.payload[..8]);
            let sent = u64::from_le_bytes(sent);
            report::record(
                &mut latencies,
                Duration::from_nanos(now.saturating_sub(sent)),
            );
        }
    }
    let _ = sink.close().await;
    Ok(latencies)
}
