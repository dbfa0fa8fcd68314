//! mend-core: the couple's journal as Automerge documents in a crash-safe SQLite store.
//!
//! Start at [`Journal`]: it opens the store, holds the couple's document and this partner's
//! personal space, enforces who may write what, and answers the app's queries.

pub mod calendar;
pub mod crypto;
pub mod date;
mod doc;
pub mod error;
pub mod export;
pub mod ids;
pub mod journal;
pub mod keyring;
pub mod model;
pub mod query;
pub mod store;
pub mod sync;
pub mod words;

/// Log directives every app must add to its tracing filter, whatever level it chooses:
/// Automerge logs inserted values (journal text) at TRACE, and the device side's WebSocket
/// library (in `mend-client`) logs request headers, the relay token among them, at TRACE.
/// Listed here too, so an app that follows either crate's advice is covered.
pub const LOG_REDACTIONS: &str =
    "automerge=warn,hexane=warn,tungstenite=debug,tokio_tungstenite=debug";

pub use calendar::{Calendar, Weekday};
pub use date::LocalDate;
pub use doc::{Loaded, SCHEMA_VERSION};
pub use error::{Error, Result};
pub use ids::{DeviceId, PartnerId, RecordId};
pub use journal::{
    Breach, Certified, DeviceInfo, Erasure, JoinSource, Journal, MAX_DEVICE_NAME, MAX_DEVICES,
    OpenOptions, Partner, PartnerDevice, SyncSummary, wording_hash,
};
pub use keyring::{Keyring, KeyringEpoch};
pub use model::{Body, Conflict, Kind, Record, Visibility};
pub use store::{Durability, LockMode, Space};
