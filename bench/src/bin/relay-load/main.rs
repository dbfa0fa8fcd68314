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
//! `--relay` takes one address or several (comma-separated): relay instances sharing one
//! PostgreSQL database. Sockets are spread over them round-robin, and in `fanout` each pair's two
//! devices sit on different instances, so every chunk crosses LISTEN/NOTIFY.
//!
//! Timing lives here, never in tests. Every run is bounded in connections and time and talks
//! only to the addresses it is given (use loopback). See docs/benchmarks.md for the commands.

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
    /// Relay addresses (host:port, comma-separated), normally on loopback.
    #[arg(
        long,
        global = true,
        value_delimiter = ',',
        default_value = "127.0.0.1:8787"
    )]
    relay: Vec<SocketAddr>,
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
        Command::Idle(idle) => idle::run(&args.relay, idle).await,
        Command::Push(push) => push::run(&args.relay, push).await,
        Command::Fanout(fanout) => fanout::run(&args.relay, fanout).await,
    }
}
