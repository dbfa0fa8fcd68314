//! `idle`: open N live connections that do nothing (but keep-alive pings), then read the
//! relay's RSS.

use std::{net::SocketAddr, sync::Arc, time::Duration};

use anyhow::Context;
use clap::Args;
use futures_util::{SinkExt, StreamExt};
use mend_protocol::ServerMessage;
use tokio::sync::Semaphore;
use tokio_tungstenite::tungstenite::Message;

use crate::client::{self, rss_bytes};

#[derive(Debug, Args)]
pub struct IdleArgs {
    /// Idle connections to open.
    #[arg(long, default_value_t = 10_000)]
    connections: u64,
    /// Connections per space (the relay caps this per space; default cap 32).
    #[arg(long, default_value_t = 4)]
    per_space: u64,
    /// PID of each relay (comma-separated, in `--relay` order), to read their RSS.
    #[arg(long, value_delimiter = ',', required = true)]
    relay_pid: Vec<u32>,
    /// Seconds to hold the connections open before measuring.
    #[arg(long, default_value_t = 5)]
    hold_secs: u64,
    /// Handshakes in flight at once.
    #[arg(long, default_value_t = 256)]
    parallel: usize,
}

/// Resident set sizes of every relay.
fn rss_all(pids: &[u32]) -> anyhow::Result<Vec<u64>> {
    pids.iter().map(|pid| rss_bytes(*pid)).collect()
}

pub async fn run(relays: &[SocketAddr], args: IdleArgs) -> anyhow::Result<()> {
    let seed = client::run_seed();
    let space_count = args.connections.div_ceil(args.per_space.max(1));
    let spaces = client::create_spaces(relays[0], seed, space_count, 64).await?;
    tokio::time::sleep(Duration::from_millis(500)).await;
    let before = rss_all(&args.relay_pid)?;
    for (pid, rss) in args.relay_pid.iter().zip(&before) {
        println!(
            "relay {pid} RSS before: {:.1} MiB ({} spaces created)",
            mib(*rss),
            spaces.len()
        );
    }

    let gate = Arc::new(Semaphore::new(args.parallel));
    let stop = Arc::new(tokio::sync::Notify::new());
    let mut tasks = Vec::new();
    let (ready_tx, mut ready_rx) = tokio::sync::mpsc::channel::<anyhow::Result<()>>(1024);
    for i in 0..args.connections {
        let space = spaces[(i / args.per_space.max(1)) as usize].clone();
        let relay = relays[i as usize % relays.len()];
        let gate = gate.clone();
        let stop = stop.clone();
        let ready = ready_tx.clone();
        tasks.push(tokio::spawn(async move {
            let permit = gate.acquire_owned().await;
            let opened = async {
                let mut socket = client::connect(relay, &space, 0, None).await?;
                // Wait for UpToDate so the relay has set the session up completely.
                loop {
                    let message = socket.next().await.context("closed early")??;
                    if let Message::Binary(bytes) = message
                        && let ServerMessage::UpToDate(_) = client::decode(&bytes)?
                    {
                        break;
                    }
                }
                anyhow::Ok(socket)
            }
            .await;
            drop(permit);
            let mut socket = match opened {
                Ok(socket) => {
                    let _ = ready.send(Ok(())).await;
                    socket
                }
                Err(error) => {
                    let _ = ready.send(Err(error)).await;
                    return;
                }
            };
            // Hold, pinging well within the relay's idle timeout.
            let mut ping = tokio::time::interval(Duration::from_secs(20));
            ping.tick().await;
            loop {
                tokio::select! {
                    () = stop.notified() => break,
                    _ = ping.tick() => {
                        if socket.send(Message::Ping(Vec::new().into())).await.is_err() {
                            break;
                        }
                    }
                    message = socket.next() => if message.is_none() { break },
                }
            }
            let _ = socket.close(None).await;
        }));
    }
    drop(ready_tx);
    let mut open = 0u64;
    let mut failed = 0u64;
    while let Some(result) = ready_rx.recv().await {
        match result {
            Ok(()) => open += 1,
            Err(error) => {
                failed += 1;
                if failed <= 3 {
                    eprintln!("connection failed: {error:#}");
                }
            }
        }
        if open + failed == args.connections {
            break;
        }
    }
    println!("open connections: {open} (failed: {failed})");
    tokio::time::sleep(Duration::from_secs(args.hold_secs)).await;
    let after = rss_all(&args.relay_pid)?;
    let per_relay = open / relays.len().max(1) as u64;
    for ((pid, rss), start) in args.relay_pid.iter().zip(&after).zip(&before) {
        println!(
            "relay {pid} RSS with ~{per_relay} idle connections: {:.1} MiB",
            mib(*rss)
        );
        if per_relay > 0 {
            println!(
                "  per connection: {:.1} KiB (RSS delta {:.1} MiB)",
                rss.saturating_sub(*start) as f64 / 1024.0 / per_relay as f64,
                mib(rss.saturating_sub(*start))
            );
        }
    }
    stop.notify_waiters();
    for task in tasks {
        let _ = tokio::time::timeout(Duration::from_secs(5), task).await;
    }
    Ok(())
}

fn mib(bytes: u64) -> f64 {
    bytes as f64 / (1024.0 * 1024.0)
}
