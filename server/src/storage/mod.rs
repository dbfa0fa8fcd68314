//! Where spaces live: the storage trait every backend implements, and the backends.
//!
//! The relay keeps, per space, the SHA-256 of its token, an append-only log of opaque chunks
//! numbered by relay sequence, and at most one snapshot. The trait is object-safe and async so
//! the same router runs on embedded SQLite (one process, group commit) and on PostgreSQL shared
//! by several stateless relays. Live fan-out is not part of this trait: a backend announces
//! commits through a [`crate::live::Publisher`], which is what lets the Postgres backend relay
//! LISTEN/NOTIFY into the same in-process hub.
//!
//! Every backend must pass the conformance suite in `conformance` (`storage_conformance_tests!`,
//! built with the `conformance` feature so it stays out of the release binary).

pub mod bounded;
#[cfg(any(test, feature = "conformance"))]
pub mod conformance;
pub mod postgres;
pub mod sqlite;
#[cfg(any(test, feature = "conformance"))]
pub mod test_db;

use std::{future::Future, pin::Pin, time::Duration};

use mend_protocol::{DeviceId, Page, Push, Snapshot, SpaceId};

/// Unix seconds now, for the times storage records (0 if the clock is before 1970).
pub(crate) fn unix_now() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

/// SHA-256 of a space's bearer token. The relay never stores the token itself.
pub type TokenHash = [u8; 32];

/// The future a storage method returns. It owns everything it needs (`'static`), so callers
/// can queue it (a live socket keeps several pushes in flight) without borrowing the store.
pub type StorageFuture<T> = Pin<Box<dyn Future<Output = Result<T, StorageError>> + Send + 'static>>;

/// The outcome of creating a space.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Created {
    /// The space is new.
    New,
    /// The space already existed with the same token hash; nothing changed.
    Existing,
}

/// A push the backend has made durable.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Pushed {
    /// The chunk's relay sequence.
    pub relay_seq: u64,
    /// The chunk had been pushed before; nothing was stored and `relay_seq` is the original.
    pub duplicate: bool,
}

/// What one [`Storage::sweep_pruned`] deleted.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Swept {
    /// Chunks whose payloads were deleted.
    pub chunks: u64,
    /// Their payload bytes, given back to the space and relay-wide counters.
    pub bytes: u64,
}

/// What a pull asks for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PullRequest {
    /// Return chunks with a relay sequence above this.
    pub after: u64,
    /// Most chunks to return (at least 1).
    pub limit: usize,
    /// Stop before the payload total would exceed this (a first chunk is always returned).
    pub max_bytes: usize,
    /// Withhold this device's own chunks.
    pub exclude_device: Option<DeviceId>,
    /// Below the snapshot, serve chunks it pruned while they are held (within the prune
    /// grace) instead of answering [`StorageError::Pruned`]: for a device that cannot use the
    /// snapshot.
    pub include_pruned: bool,
}

/// What went wrong in storage. Variants other than [`StorageError::Backend`] are answers the
/// relay passes on to the client.
#[derive(Debug, thiserror::Error)]
pub enum StorageError {
    /// No such space.
    #[error("space not found")]
    SpaceNotFound,
    /// The space exists with another token.
    #[error("space exists with a different token")]
    SpaceExists,
    /// The space was erased; it cannot be created again.
    #[error("space was erased")]
    SpaceErased,
    /// The write would take the space over its quota.
    #[error("space quota of {quota} bytes exceeded ({used} used, {adding} more)")]
    QuotaExceeded {
        /// Bytes held now.
        used: u64,
        /// Bytes the write adds.
        adding: u64,
        /// The quota in force.
        quota: u64,
    },
    /// The write would take the whole relay over its byte limit
    /// ([`Storage::set_total_quota`]); nothing was stored.
    #[error("relay byte limit of {limit} bytes reached ({used} used, {adding} more)")]
    RelayFull {
        /// Bytes all spaces hold now.
        used: u64,
        /// Bytes the write adds.
        adding: u64,
        /// The limit in force.
        limit: u64,
    },
    /// The requested cursor is below the snapshot and those chunks were deleted.
    #[error("chunks up to {snapshot_covers} were pruned; fetch the snapshot")]
    Pruned {
        /// The snapshot's covered sequence.
        snapshot_covers: u64,
    },
    /// The push reuses a (device, device sequence) stored with a different payload; nothing
    /// was stored.
    #[error("device sequence already used by another payload (relay sequence {relay_seq})")]
    SeqConflict {
        /// The relay sequence of the chunk stored first.
        relay_seq: u64,
    },
    /// A snapshot covering less than the stored one was offered.
    #[error("stored snapshot covers {current}, newer than the one offered")]
    SnapshotStale {
        /// What the stored snapshot covers.
        current: u64,
    },
    /// A snapshot claims to cover chunks beyond the head.
    #[error("snapshot covers beyond the head ({head})")]
    SnapshotBeyondHead {
        /// The space's head.
        head: u64,
    },
    /// The backend is shut down.
    #[error("storage is closed")]
    Closed,
    /// The backend is slow, overloaded or unreachable; the client should retry later (503).
    #[error("storage unavailable: {0}")]
    Unavailable(#[source] Box<dyn std::error::Error + Send + Sync>),
    /// The backend failed (I/O, database). Logged by the relay; clients see a generic error.
    #[error("storage backend failed: {0}")]
    Backend(#[source] Box<dyn std::error::Error + Send + Sync>),
}

/// A relay storage backend.
///
/// Every method must be durable before it resolves: a resolved `push` has been committed.
/// Methods are async and take owned arguments so a backend may hand work to a writer thread
/// or a database pool.
pub trait Storage: Send + Sync + 'static {
    /// Creates `space` with the hash of its token. Same hash again: [`Created::Existing`].
    /// Another hash: [`StorageError::SpaceExists`].
    fn create_space(&self, space: SpaceId, token_hash: TokenHash) -> StorageFuture<Created>;

    /// The space's token hash, or `None` if the space does not exist.
    fn token_hash(&self, space: SpaceId) -> StorageFuture<Option<TokenHash>>;

    /// Stores a chunk unless `(device_id, device_seq)` was stored before, in which case it
    /// returns the original relay sequence flagged as a duplicate (even after pruning) when
    /// the payload is the same, and [`StorageError::SeqConflict`] when it differs.
    /// Fails with [`StorageError::QuotaExceeded`] if the space's bytes would exceed `quota`,
    /// and with [`StorageError::RelayFull`] if all spaces' bytes would exceed the total quota
    /// (a replay of a stored chunk is still answered either way).
    fn push(&self, space: SpaceId, push: Push, quota: u64) -> StorageFuture<Pushed>;

    /// Reads chunks after a cursor. [`StorageError::Pruned`] if the cursor is below the
    /// snapshot, unless the request includes pruned chunks and the page's are all still held.
    fn pull(&self, space: SpaceId, request: PullRequest) -> StorageFuture<Page>;

    /// Stores the snapshot if it covers at least what the stored one does and no more than the
    /// head, then prunes the chunks it covers: they are deleted only `grace` after they were
    /// pruned (by [`Storage::sweep_pruned`], or by a later snapshot of the space past that
    /// time), so a garbage snapshot cannot destroy the only copy; their dedup keys and payload
    /// hashes remain. Until deleted, pruned chunks are still served by [`Storage::pull`] and
    /// still count in both byte counters, which count what is on disk.
    ///
    /// The space's `quota` bounds what the snapshot leaves live (the snapshot and the chunks
    /// after it), so a space at its quota can always compact; the relay-wide limit is checked
    /// against everything held, pruned chunks included.
    fn put_snapshot(
        &self,
        space: SpaceId,
        snapshot: Snapshot,
        quota: u64,
        grace: Duration,
    ) -> StorageFuture<()>;

    /// Deletes the payloads of at most `max_chunks` chunks, of any space, that were pruned
    /// `grace` or longer ago (oldest first), and takes their bytes off the space's and the
    /// relay-wide counters. It stops taking chunks once their payloads reach `max_bytes` (the
    /// first is always taken), so one batch of large chunks stays a short transaction: a batch
    /// cut short by bytes has at least `max_bytes`. The relay calls it periodically; several
    /// instances sharing a database may call it at once.
    fn sweep_pruned(
        &self,
        grace: Duration,
        max_chunks: usize,
        max_bytes: u64,
    ) -> StorageFuture<Swept>;

    /// Sets the byte limit over all spaces together (chunk and snapshot payloads they hold,
    /// pruned chunks until deleted); unlimited until set. The backend keeps the total
    /// with the per-space counters, in the same transaction, so checking it costs no query.
    /// A snapshot that frees bytes, or keeps them level, is accepted even above the limit.
    fn set_total_quota(&self, bytes: u64);

    /// The bytes all spaces hold together, as counted against the total quota.
    fn total_bytes(&self) -> StorageFuture<u64>;

    /// The space's snapshot, if any.
    fn get_snapshot(&self, space: SpaceId) -> StorageFuture<Option<Snapshot>>;

    /// Removes the space and everything in it. `false` if it did not exist.
    fn erase(&self, space: SpaceId) -> StorageFuture<bool>;

    /// Counts one space creation by `client` (a keyed hash of its address) in the window that
    /// starts at `window_start` (unix seconds), and returns the count including this one.
    /// Windows that started before `keep_after` may be forgotten. A backend shared by several
    /// relays counts across all of them.
    fn count_creation(
        &self,
        client: [u8; 32],
        window_start: u64,
        keep_after: u64,
    ) -> StorageFuture<u64>;

    /// Resolves once the backend can serve requests (`/readyz`).
    fn ready(&self) -> StorageFuture<()>;

    /// Appends the backend's own figures to the Prometheus text of `/metrics`.
    fn render_metrics(&self, out: &mut String) {
        let _ = out;
    }

    /// Finishes queued writes and stops. Later calls fail with [`StorageError::Closed`].
    fn close(&self) -> StorageFuture<()>;
}
