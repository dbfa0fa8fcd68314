//! relay-load: the relay load generator (DESIGN §7 targets).
//!
//! Runs against a relay already listening (normally a release build on 127.0.0.1) and prints
//! what it measured:
//! - `idle`: relay RSS with N idle live connections (target: 10k in ≤ 256 MB);
//! - `push`: durable pushes per second with 1 KiB chunks and ack latency p50/p99
//!   (target: ≥ 20k/s with p99 ≤ 20 ms);
//! - `fanout`: latency from a push by device A to its arrival at subscribed device B, over many
//!   pairs (target: p99 ≤ 10 ms with 1k pairs).
//!
//! Timing lives here, never in tests. Every run is bounded in connections and time and talks
//! only to the address it is given (use loopback). See docs/benchmarks.md for the commands.

mod client;
mod fanout;
mod idle;
mod push;
mod report;

use std::net::SocketAddr;

use clap::{Parser, Subcommand};

#[derive(Debug, Parser)]
#[command(name = "relay-load", about = "Load generator for mend-relay")]
struct Args {
    /// Relay address (host:port), normally on loopback.
    #[arg(long, global = true, default_value = "127.0.0.1:8787")]
    relay: SocketAddr,
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Relay RSS with many idle live connections.
    Idle(idle::IdleArgs),
    /// Durable push throughput and ack latency.
    Push(push::PushArgs),
    /// Live fan-out latency between pairs of devices.
    Fanout(fanout::FanoutArgs),
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    match args.command {
        Command::Idle(idle) => idle::run(args.relay, idle).await,
        Command::Push(push) => push::run(args.relay, push).await,
        Command::Fanout(fanout) => fanout::run(args.relay, fanout).await,
    }
}
