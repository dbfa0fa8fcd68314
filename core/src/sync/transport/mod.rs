//! The tokio transport: a thin driver that carries the engine's requests over HTTP and a live
//! WebSocket, feeds the answers back, and tells the app what changed.
//!
//! [`SyncClient::sync_now`] runs one bounded round over HTTP for the few seconds an OS grants
//! in the background; [`SyncClient::start_live`] keeps a WebSocket per space open while the app
//! is in the foreground. Plain `http://` relays only for now; put a TLS-terminating proxy in
//! front of a relay reached over the internet (client TLS is on the roadmap in
//! docs/security.md).

mod client;
mod http;
mod live;

pub use client::{LiveSync, SyncClient, SyncObserver};
pub use http::RelayHttp;

/// Now, in unix milliseconds.
pub(crate) fn now_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| i64::try_from(d.as_millis()).unwrap_or(i64::MAX))
        .unwrap_or(0)
}
