//! `push`: many sockets push 1 KiB chunks as fast as their in-flight window allows; measures
//! durable acknowledgements per second and ack latency.

use std::{
    collections::VecDeque,
    net::SocketAddr,
    sync::{Arc, Mutex},
    time::{Duration, Instant},
};

use clap::Args;
use futures_util::{SinkExt, StreamExt};
use hdrhistogram::Histogram;
use mend_protocol::{Push, ServerMessage};
use tokio::sync::Semaphore;
use tokio_tungstenite::tungstenite::Message;

use crate::{client, report};

#[derive(Debug, Args)]
pub struct PushArgs {
    /// Live sockets pushing at once.
    #[arg(long, default_value_t = 64)]
    connections: u64,
    /// Spaces the sockets spread over.
    #[arg(long, default_value_t = 64)]
    spaces: u64,
    /// Pushes in flight per socket.
    #[arg(long, default_value_t = 16)]
    inflight: usize,
    /// Chunk payload bytes.
    #[arg(long, default_value_t = 1024)]
    chunk_bytes: usize,
    /// Seconds of measurement (after a one-second warm-up).
    #[arg(long, default_value_t = 10)]
    seconds: u64,
}

pub async fn run(relays: &[SocketAddr], args: PushArgs) -> anyhow::Result<()> {
    let seed = client::run_seed();
    let spaces = client::create_spaces(relays[0], seed, args.spaces.max(1), 64).await?;
    let warm_up = Instant::now() + Duration::from_secs(1);
    let end = warm_up + Duration::from_secs(args.seconds);
    let mut tasks = Vec::new();
    for i in 0..args.connections {
        let space = spaces[(i % spaces.len() as u64) as usize].clone();
        let device = client::bench_device(i);
        let relay = relays[i as usize % relays.len()];
        let socket = client::connect(relay, &space, u64::MAX, Some(device)).await?;
        let chunk_bytes = args.chunk_bytes;
        let inflight = args.inflight;
        tasks.push(tokio::spawn(async move {
            pusher(socket, device, chunk_bytes, inflight, warm_up, end).await
        }));
    }
    let mut total = report::histogram();
    let mut acked = 0u64;
    let mut refused = 0u64;
    for task in tasks {
        let (histogram, nacks) = task.await??;
        acked += histogram.len();
        refused += nacks;
        total.add(&histogram)?;
    }
    println!(
        "push: {} sockets over {} spaces and {} relay(s), {} in flight each, {} B chunks, {} s",
        args.connections,
        args.spaces,
        relays.len(),
        args.inflight,
        args.chunk_bytes,
        args.seconds
    );
    println!(
        "durable pushes/s: {:.0} ({} acknowledged in the window, {} refused)",
        acked as f64 / args.seconds as f64,
        acked,
        refused
    );
    println!("ack latency: {}", report::summary(&total));
    Ok(())
}

/// Pushes until `end`; returns the latencies of acks received between `warm_up` and `end`.
async fn pusher(
    socket: client::Socket,
    device: mend_protocol::DeviceId,
    chunk_bytes: usize,
    inflight: usize,
    warm_up: Instant,
    end: Instant,
) -> anyhow::Result<(Histogram<u64>, u64)> {
    let (mut sink, mut stream) = socket.split();
    let window = Arc::new(Semaphore::new(inflight));
    let sent_at = Arc::new(Mutex::new(VecDeque::<Instant>::new()));
    let writer = {
        let window = window.clone();
        let sent_at = sent_at.clone();
        tokio::spawn(async move {
            let payload = vec![0x5a; chunk_bytes];
            let mut device_seq = 0;
            while Instant::now() < end {
                let Ok(permit) = window.acquire().await else {
                    break;
                };
                permit.forget();
                device_seq += 1;
                let frame = Push {
                    device_id: device,
                    device_seq,
                    payload: payload.clone(),
                }
                .to_bytes();
                if let Ok(mut queue) = sent_at.lock() {
                    queue.push_back(Instant::now());
                }
                if sink.send(Message::Binary(frame.into())).await.is_err() {
                    break;
                }
            }
            sink
        })
    };
    let mut histogram = report::histogram();
    let mut nacks = 0;
    let deadline = end + Duration::from_secs(5);
    while let Ok(Some(message)) = tokio::time::timeout_at(deadline.into(), stream.next()).await {
        let Message::Binary(bytes) = message? else {
            continue;
        };
        let now = Instant::now();
        let sent = sent_at.lock().ok().and_then(|mut queue| queue.pop_front());
        match client::decode(&bytes)? {
            ServerMessage::Ack(_) => {
                if let Some(sent) = sent
                    && sent >= warm_up
                    && now <= end
                {
                    report::record(&mut histogram, now - sent);
                }
            }
            ServerMessage::Nack(_) => nacks += 1,
            _ => continue,
        }
        window.add_permits(1);
        let drained = sent_at.lock().map_or(true, |queue| queue.is_empty());
        if now >= end && drained {
            break;
        }
    }
    window.close();
    if let Ok(mut sink) = writer.await {
        let _ = sink.close().await;
    }
    Ok((histogram, nacks))
}
