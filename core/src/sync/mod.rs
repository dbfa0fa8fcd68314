//! The sync engine: sans-IO.
//!
//! [`SyncEngine`] is a state machine. It is fed [`Event`]s (a sync was asked for, a local edit
//! happened, time passed, the relay answered) and returns [`Action`]s (send this request, these
//! records changed, the status is now this). It does no networking and reads no clock: the
//! tokio transport in `mend-client` and the deterministic simulation in the tests are both thin
//! drivers around it.
//!
//! Per space, a round is: make sure the space exists at the relay, read everything after the
//! cursor (paged pulls, or a live subscription that sends the backlog then an up-to-date
//! marker), then push local batches one at a time in sequence order, then, now and then, upload
//! a snapshot so the relay can prune.

mod backoff;
pub(crate) mod engine;
mod snapshot;
mod storage;
mod types;

pub use engine::{
    MAX_BATCH_BYTES, Mode, REQUEST_TIMEOUT_MS, ROLLUP_EVERY, SNAPSHOT_EVERY, SpaceLink, SyncEngine,
};

pub use snapshot::{decode_snapshot, encode_snapshot};
pub use storage::{Merged, SyncStore};
pub use types::{
    Action, Entry, Event, Failure, MAX_PROBLEMS, Outcome, Problem, ProblemKind, Request, Response,
    SyncStatus,
};
