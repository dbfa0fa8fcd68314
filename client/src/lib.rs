//! mend-client: the device side of Mend around the sans-IO core.
//!
//! `mend-core` holds the journal, its store and the sync engine as a state machine, and does
//! no I/O but its own SQLite file. This crate carries the engine's requests to the relay (a
//! small HTTP/1.1 client for background rounds, a WebSocket per space for live sync, both over
//! verified TLS or, to this machine only, clear text), runs
//! SQLite and Automerge work on blocking threads, never on async workers, and holds the
//! [`Device`]: a journal with its keys and relay connection, which tells the app's observers
//! and wakes live sync after every write, whoever made it.

mod device;
mod devices;
mod http;
mod live;
mod pairing;
mod sync;
mod transport;

pub use device::{Device, EraseReport, RejoinAsks, remove_database};
pub use devices::SeenDevice;
pub use http::RelayHttp;
pub use mend_core::{Error, Keyring, Result};
pub use pairing::{Invitation, Joiner, Joining, unix_now};
pub use sync::{LiveSync, RoundReport, SyncClient, SyncObserver};
pub use transport::RelayOptions;

/// Log directives every app must add to its tracing filter, whatever level it chooses:
/// mend-core's (Automerge logs journal text at TRACE) and the WebSocket library's, which logs
/// request headers (the relay token) at TRACE.
pub const LOG_REDACTIONS: &str =
    "automerge=warn,hexane=warn,tungstenite=debug,tokio_tungstenite=debug";

/// Now, in unix milliseconds, as the client feeds the engine.
pub fn now_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| i64::try_from(d.as_millis()).unwrap_or(i64::MAX))
        .unwrap_or(0)
}
