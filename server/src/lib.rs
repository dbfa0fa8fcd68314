//! mend-relay: the blind store-and-forward relay between a space's devices.
//!
//! The relay keeps, per space, an append-only log of opaque encrypted chunks numbered by relay
//! sequence, plus at most one snapshot, and forwards new chunks to connected devices. It never
//! holds a key and never sees plaintext; it speaks only [`mend_protocol`].
//!
//! Map of the crate:
//! - [`routes::app`] builds the HTTP router; [`ws`] is the live WebSocket.
//! - [`server::run`] serves it on a listener with connection caps, timeouts and graceful
//!   shutdown.
//! - [`storage`] is the backend trait, its SQLite (default, group commit) and PostgreSQL
//!   (several instances, LISTEN/NOTIFY) implementations, and the conformance suite every
//!   backend must pass; [`live`] is fan-out between storage and live sockets.
//! - [`sweeper`] deletes pruned chunks once their grace is over, and expired pairing
//!   mailboxes, on a timer; [`wakeups`] wakes pairing reads waiting for a message.
//! - [`config`], [`cli`], [`metrics`], [`rate`], [`caps`], [`budget`], [`client`], [`auth`],
//!   [`pairing_tokens`], [`error`] hold one concern each.

pub mod auth;
pub mod budget;
pub mod caps;
pub mod cli;
pub mod client;
pub mod config;
pub mod error;
pub mod live;
pub mod metrics;
pub mod pairing_tokens;
pub mod rate;
pub mod routes;
pub mod seen;
pub mod server;
pub mod state;
pub mod storage;
pub mod sweeper;
pub mod telemetry;
pub mod tls;
pub mod wakeups;
mod ws;

pub use config::Config;
pub use routes::app;
pub use server::{run, run_metrics, run_tls};
pub use state::AppState;
