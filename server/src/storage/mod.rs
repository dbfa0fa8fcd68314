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
pub mod pairing;
pub mod postgres;
pub mod sqlite;
#[cfg(any(test, feature = "conformance"))]
pub mod test_db;

use std::{future::Future, pin::Pin, time::Duration};

use mend_protocol::{
    Chunk, DeviceId, DeviceList, LAST_SEEN_GRAIN_SECS, Page, PairingInbox, PairingState, Push,
    Rollup, RollupPush, Sizes, Snapshot, SpaceId,
};

pub use self::pairing::{NewPairing, PairingRecord, PairingSide, PairingSwept};

/// Unix seconds now, for the times storage records (0 if the clock is before 1970).
pub(crate) fn unix_now() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

/// `at` (unix seconds) rounded down to the hour: the relay keeps no finer last-seen time.
pub fn last_seen_hour(at: u64) -> u64 {
    at - at % LAST_SEEN_GRAIN_SECS
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

/// Why a space was deleted: what its tombstone answers from then on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum EraseReason {
    /// A device erased it (`space_erased`).
    Erased,
    /// A key rotation replaced it (`space_retired`).
    Retired,
}

impl EraseReason {
    /// How the reason is stored (a small integer column).
    pub(crate) fn to_db(self) -> i16 {
        match self {
            EraseReason::Erased => 0,
            EraseReason::Retired => 1,
        }
    }

    /// The stored reason; values a newer relay may write read as erased.
    pub(crate) fn from_db(value: i64) -> EraseReason {
        if value == 1 {
            EraseReason::Retired
        } else {
            EraseReason::Erased
        }
    }
}

/// What the relay keeps of a deleted space, forever: its id, when, and why. A few dozen bytes,
/// so a device that still holds the secret is told the space is gone for good instead of
/// recreating it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Tombstone {
    /// When it was deleted (unix seconds).
    pub erased_at: u64,
    /// Why.
    pub reason: EraseReason,
}

/// A push the backend has made durable.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Pushed {
    /// The chunk's relay sequence.
    pub relay_seq: u64,
    /// The chunk had been pushed before; nothing was stored and `relay_seq` is the original.
    pub duplicate: bool,
}

/// A rollup the backend has made durable.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RollupStored {
    /// The relay sequence of the first chunk it stands for (the lowest): its place in the log.
    pub relay_seq: u64,
    /// The relay sequence of the last chunk it stands for (the highest).
    pub last_relay_seq: u64,
    /// The same (device, first, last) was stored before; nothing was stored and the first
    /// payload stands.
    pub duplicate: bool,
}

/// Most chunks one rollup may stand for: `last_seq - first_seq` must stay below this, so
/// checking a rollup reads a bounded range of the log.
pub const MAX_ROLLUP_CHUNKS: u64 = 4096;

/// Bytes each stored chunk or rollup row counts in the relay-wide total beside its payload,
/// for as long as the row is kept. Rows outlive their payloads (a pruned chunk's hash answers
/// replays and catches reused sequences), so without this a client repeating "push tiny
/// chunks, snapshot, wait for the sweep" would grow the store past `--max-total-bytes` while
/// the counted bytes stayed flat. A space's own quota counts payloads alone: rows that are
/// never deleted must not make any space full for good. About what a row and its index
/// entries cost SQLite; PostgreSQL's `mend_push` (migration `013_row_cost.sql`) charges the
/// same.
pub const ROW_BYTES: u64 = 150;

/// Bytes each space counts in the relay-wide total from its creation until it is erased: its
/// own row and the most devices it lists as seen, a row each. Spaces need no account and are
/// rate-limited only per address, so uncounted, empty spaces from many addresses could grow
/// the store past `--max-total-bytes`.
pub const SPACE_BYTES: u64 = ROW_BYTES * (1 + mend_protocol::MAX_LISTED_DEVICES as u64);

/// Bytes an erased space's tombstone keeps in the relay-wide total for good: the tombstone is
/// never deleted (it keeps the space from being created again), so creating and erasing
/// spaces over and over would otherwise grow the store past `--max-total-bytes`.
pub const TOMBSTONE_BYTES: u64 = ROW_BYTES;

/// What one [`Storage::sweep_pruned`] deleted.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Swept {
    /// Chunks and rollups whose payloads were deleted.
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
    /// Serve rollups of other devices that start after `after` in place of the chunks they
    /// stand for. A page then never ends inside a rollup's range: it ends before the rollup,
    /// or, when the rollup comes first and cannot fit with everything up to its last chunk,
    /// the rollup is passed over and its chunks are served one by one.
    pub rollups: bool,
}

/// What [`Storage::audit`] found.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Audit {
    /// Spaces checked.
    pub spaces: u64,
    /// Spaces whose counters did not match their rows.
    pub spaces_off: u64,
    /// The relay-wide total as counted.
    pub counted_total: u64,
    /// The relay-wide total recounted from the rows.
    pub actual_total: u64,
    /// The counters were set to the recount.
    pub repaired: bool,
}

impl Audit {
    /// Every counter matched its rows.
    pub fn clean(&self) -> bool {
        self.spaces_off == 0 && self.counted_total == self.actual_total
    }
}

/// An audit added up space by space, the same for every backend: each space's counters as
/// stored and as recounted (payload bytes held, rows kept, pruned bytes held).
#[derive(Debug)]
pub(crate) struct Recount {
    audit: Audit,
    total: u64,
    /// Spaces whose counters differ, with their recounted values.
    off: Vec<(i64, [i64; 3])>,
}

impl Recount {
    pub(crate) fn new(counted_total: u64) -> Recount {
        Recount {
            audit: Audit {
                counted_total,
                ..Audit::default()
            },
            total: 0,
            off: Vec::new(),
        }
    }

    /// One space: its internal id, its counters, and the same recounted from its rows.
    pub(crate) fn space(&mut self, id: i64, stored: [i64; 3], actual: [i64; 3]) {
        let [bytes, kept, _] = actual.map(|v| u64::try_from(v).unwrap_or(0));
        self.audit.spaces += 1;
        self.total = self
            .total
            .saturating_add(bytes)
            .saturating_add(kept.saturating_mul(ROW_BYTES))
            .saturating_add(SPACE_BYTES);
        if stored != actual {
            self.audit.spaces_off += 1;
            self.off.push((id, actual));
        }
    }

    /// The audit, once every space is counted and the tombstones with them, and the spaces to
    /// set right.
    pub(crate) fn finish(mut self, tombstones: i64) -> (Audit, Vec<(i64, [i64; 3])>) {
        let tombstones = u64::try_from(tombstones).unwrap_or(0);
        self.audit.actual_total = self
            .total
            .saturating_add(tombstones.saturating_mul(TOMBSTONE_BYTES));
        (self.audit, self.off)
    }
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
    /// The space was erased or retired; it cannot be created again.
    #[error("space was erased")]
    SpaceErased(EraseReason),
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
    /// A rollup does not match the log: a chunk it names is not held, it overlaps another
    /// rollup, or its range is too long; nothing was stored.
    #[error("rollup does not match the stored chunks: {reason}")]
    RollupMismatch {
        /// What did not match.
        reason: &'static str,
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
    /// No pairing mailbox has this id.
    #[error("no such pairing mailbox")]
    PairingUnknown,
    /// The pairing mailbox was claimed (or closed) before.
    #[error("the pairing mailbox was already claimed")]
    PairingUsed,
    /// The pairing mailbox is past its expiry.
    #[error("the pairing mailbox has expired")]
    PairingExpired,
    /// The pairing mailbox was closed or burned.
    #[error("the pairing mailbox is closed")]
    PairingClosed,
    /// This side posted the most messages a side may.
    #[error("this side already posted {max} messages")]
    PairingFull {
        /// The per-side cap.
        max: u64,
    },
    /// The relay holds the most live pairing mailboxes it may.
    #[error("too many pairing mailboxes open ({live})")]
    PairingsFull {
        /// Mailboxes open or claimed and not expired.
        live: u64,
    },
    /// The backend is shut down.
    #[error("storage is closed")]
    Closed,
    /// Another process (a relay, or `mend-relay check`) holds the SQLite data directory.
    #[error(
        "the data directory {} is in use by another relay process; stop it first",
        .0.display()
    )]
    InUse(std::path::PathBuf),
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

    /// The space's token hash if the backend holds it in memory (no database read); `None`
    /// when it would have to read (or the space does not exist). Requests whose token this
    /// answers cost nothing to check, so the limit on failed tokens never refuses them.
    fn known_token(&self, space: SpaceId) -> Option<TokenHash> {
        let _ = space;
        None
    }

    /// Stores a chunk unless `(device_id, device_seq)` was stored before, in which case it
    /// returns the original relay sequence flagged as a duplicate (even after pruning) when
    /// the payload is the same, and [`StorageError::SeqConflict`] when it differs.
    /// Fails with [`StorageError::QuotaExceeded`] if the space's bytes would exceed `quota`,
    /// and with [`StorageError::RelayFull`] if the relay-wide total (payloads, [`ROW_BYTES`]
    /// for each kept row and this one, [`SPACE_BYTES`] for each space, [`TOMBSTONE_BYTES`] for
    /// each erased one) would exceed the total quota (a replay of a stored chunk is still
    /// answered either way).
    fn push(&self, space: SpaceId, push: Push, quota: u64) -> StorageFuture<Pushed>;

    /// Reads chunks after a cursor. [`StorageError::Pruned`] if the cursor is below the
    /// snapshot, unless the request includes pruned chunks and the page's are all still held.
    /// With [`PullRequest::rollups`], held rollups of other devices whose relay sequence is
    /// above the cursor are served in place of their chunks (see [`PullRequest::rollups`]).
    fn pull(&self, space: SpaceId, request: PullRequest) -> StorageFuture<Page>;

    /// Stores a rollup standing for the chunks `(device_id, first_seq..=last_seq)` of the
    /// space, which must all be stored with their payloads not yet deleted (pruned but held is
    /// fine), none of them stood for by another rollup, and `last_seq - first_seq` below
    /// [`MAX_ROLLUP_CHUNKS`]; otherwise [`StorageError::RollupMismatch`]. The same range stored
    /// before is answered as a duplicate (the first payload stands). Its payload counts against
    /// `quota` and the total quota exactly like a chunk's, and is given back when deleted.
    /// Durable before it resolves.
    fn push_rollup(
        &self,
        space: SpaceId,
        rollup: RollupPush,
        quota: u64,
    ) -> StorageFuture<RollupStored>;

    /// What catching up from `after` costs: the head, the snapshot's coverage and payload bytes,
    /// and the payload bytes and entries a pull with rollups and pruned chunks would serve up
    /// to the head, with whether every chunk that needs is still held. Aggregates only.
    fn sizes(
        &self,
        space: SpaceId,
        after: u64,
        exclude_device: Option<DeviceId>,
    ) -> StorageFuture<Sizes>;

    /// Stores the snapshot if it covers at least what the stored one does and no more than the
    /// head, then prunes the chunks and rollups it covers (a rollup by its relay sequence):
    /// they are deleted only `grace` after they were pruned (by [`Storage::sweep_pruned`], or by
    /// a later snapshot of the space past that time), so a garbage snapshot cannot destroy the
    /// only copy; their dedup keys and payload hashes remain. Until deleted, pruned chunks and
    /// rollups are still served by [`Storage::pull`] and still count in both byte counters,
    /// which count what is on disk. Once a rollup is deleted, its chunks are served again.
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

    /// Deletes the payloads of at most `max_chunks` chunks and rollups (chunks first), of any
    /// space, that were pruned `grace` or longer ago (oldest first), and takes their bytes off
    /// the space's and the relay-wide counters. It stops taking them once their payloads reach
    /// `max_bytes` (the first is always taken), so one batch of large chunks stays a short
    /// transaction: a batch cut short by bytes has at least `max_bytes`. The relay calls it periodically; several
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

    /// Removes the space and everything in it, and leaves its [`Tombstone`] with `reason`
    /// (replacing an older one). `false` if the space did not exist.
    fn erase(&self, space: SpaceId, reason: EraseReason) -> StorageFuture<bool>;

    /// The space's tombstone, if it was erased. Tombstones are never deleted.
    fn tombstone(&self, space: SpaceId) -> StorageFuture<Option<Tombstone>>;

    /// Keeps `id` as the announcement that ends `space`'s epoch unless one is kept already,
    /// and answers the one kept: the first offered wins, for good, so two devices that rotated
    /// at once follow the same one. An unknown (or erased) space is
    /// [`StorageError::SpaceNotFound`]. The default keeps nothing (test doubles).
    fn claim_successor(&self, space: SpaceId, id: [u8; 32]) -> StorageFuture<[u8; 32]> {
        let _ = (space, id);
        Box::pin(std::future::ready(Err(StorageError::SpaceNotFound)))
    }

    /// Records that the relay served `device` in `space` at `at` (unix seconds), kept only
    /// rounded down to the hour ([`last_seen_hour`]) and never moved back. A space keeps at
    /// most [`mend_protocol::MAX_LISTED_DEVICES`] devices, forgetting the longest unseen. An
    /// unknown space records nothing. The default records nothing (test doubles).
    fn touch_device(&self, space: SpaceId, device: DeviceId, at: u64) -> StorageFuture<()> {
        let _ = (space, device, at);
        Box::pin(std::future::ready(Ok(())))
    }

    /// When the relay last served each device of `space`, in device id order (empty for an
    /// unknown space). The default lists none (test doubles).
    fn devices(&self, space: SpaceId) -> StorageFuture<DeviceList> {
        let _ = space;
        Box::pin(std::future::ready(Ok(DeviceList::default())))
    }

    /// Counts one space creation by `client` (a SHA-256 of its address: not keyed, so anyone
    /// holding the database can find an IPv4 address by trying them all) in the window that
    /// starts at `window_start` (unix seconds), and returns the count including this one.
    /// Windows that started before `keep_after` may be forgotten. A backend shared by several
    /// relays counts across all of them.
    fn count_creation(
        &self,
        client: [u8; 32],
        window_start: u64,
        keep_after: u64,
    ) -> StorageFuture<u64>;

    /// Allocates a pairing mailbox in state open and returns its id. With
    /// [`pairing::MailboxChoice::Short`] the backend picks a free number; a long id that is
    /// taken fails with [`StorageError::PairingUsed`]. Fails with
    /// [`StorageError::PairingsFull`] when `max_live` mailboxes are open or claimed and not
    /// expired. A short number stays taken while its record is kept.
    fn open_pairing(&self, new: NewPairing) -> StorageFuture<String>;

    /// Claims an open mailbox for the guest whose token hashes to `guest_hash` and returns its
    /// expiry. Only the first claim ever succeeds: a claimed, closed or burned mailbox is
    /// [`StorageError::PairingUsed`]; an open one past its expiry
    /// [`StorageError::PairingExpired`]; none [`StorageError::PairingUnknown`].
    fn claim_pairing(&self, mailbox: String, guest_hash: TokenHash, now: u64)
    -> StorageFuture<u64>;

    /// The mailbox's token hashes, state at `now` and expiry, or `None`.
    fn pairing(&self, mailbox: String, now: u64) -> StorageFuture<Option<PairingRecord>>;

    /// Stores `body` as `side`'s next message (numbered from 1 per side) and returns its
    /// number. [`StorageError::PairingClosed`] once closed or burned,
    /// [`StorageError::PairingExpired`] past expiry, [`StorageError::PairingFull`] after
    /// [`pairing::MAX_MESSAGES_PER_SIDE`] messages, [`StorageError::PairingUnknown`] if none.
    fn post_pairing(
        &self,
        mailbox: String,
        side: PairingSide,
        body: Vec<u8>,
        now: u64,
    ) -> StorageFuture<u64>;

    /// The state at `now` and the messages of the side other than `reader` numbered above
    /// `after` (none once closed, burned or expired). [`StorageError::PairingUnknown`] if none.
    fn read_pairing(
        &self,
        mailbox: String,
        reader: PairingSide,
        after: u64,
        now: u64,
    ) -> StorageFuture<PairingInbox>;

    /// Closes the mailbox (burns it with `burn`) and deletes every message at once. Returns
    /// the state it moved to, or `None` when nothing changed: closing again, burning a burned
    /// mailbox, or closing one past its expiry (whose messages are deleted all the same). A
    /// burned mailbox stays burned. [`StorageError::PairingUnknown`] if none.
    fn close_pairing(
        &self,
        mailbox: String,
        burn: bool,
        now: u64,
    ) -> StorageFuture<Option<PairingState>>;

    /// Marks open and claimed mailboxes past their expiry expired and deletes their messages,
    /// and forgets mailboxes `linger` past their expiry. Several instances may call it at once.
    fn sweep_pairings(&self, now: u64, linger: Duration) -> StorageFuture<PairingSwept>;

    /// Resolves once the backend can serve requests (`/readyz`).
    fn ready(&self) -> StorageFuture<()>;

    /// Recounts every space's counters (payload bytes held, kept rows, pruned bytes not yet
    /// swept) and the relay-wide total from the rows themselves, and reports where they
    /// differ; with `repair`, sets them to the recount. Reads every row: an operator's tool
    /// (`mend-relay check`), not a request path.
    fn audit(&self, repair: bool) -> StorageFuture<Audit>;

    /// Appends the backend's own figures to the Prometheus text of `/metrics`.
    fn render_metrics(&self, out: &mut String) {
        let _ = out;
    }

    /// Finishes queued writes and stops. Later calls fail with [`StorageError::Closed`].
    fn close(&self) -> StorageFuture<()>;
}

/// The device sequences of a rollup as stored (bit for bit in a signed 64-bit column), if its
/// range is one the relay accepts: at most [`MAX_ROLLUP_CHUNKS`] chunks, all numbered below
/// 2^63 (so the range is one span of the column).
pub(crate) fn check_rollup(rollup: &RollupPush) -> Result<(i64, i64), StorageError> {
    let mismatch = |reason| Err(StorageError::RollupMismatch { reason });
    if rollup.last_seq < rollup.first_seq {
        return mismatch("last_seq below first_seq");
    }
    if rollup.last_seq - rollup.first_seq >= MAX_ROLLUP_CHUNKS {
        return mismatch("range too long");
    }
    match (
        i64::try_from(rollup.first_seq),
        i64::try_from(rollup.last_seq),
    ) {
        (Ok(first), Ok(last)) => Ok((first, last)),
        _ => mismatch("device sequence out of range"),
    }
}

/// The relay sequences of the first and last chunk a rollup stands for, from what the log holds
/// in its range: `count` chunks, `held` of them with a payload, `covered` already stood for by
/// a rollup, and their lowest and highest relay sequences.
pub(crate) fn check_rollup_chunks(
    rollup: &RollupPush,
    count: i64,
    held: i64,
    covered: i64,
    span: Option<(i64, i64)>,
) -> Result<(u64, u64), StorageError> {
    let mismatch = |reason| Err(StorageError::RollupMismatch { reason });
    let expected = rollup
        .last_seq
        .saturating_sub(rollup.first_seq)
        .saturating_add(1);
    if u64::try_from(count).ok() != Some(expected) {
        return mismatch("not every chunk of the range is stored");
    }
    if held != count {
        return mismatch("a chunk of the range was deleted");
    }
    if covered != 0 {
        return mismatch("overlaps another rollup");
    }
    match span {
        Some((low, high)) if low > 0 && high >= low => Ok((low as u64, high as u64)),
        _ => mismatch("not every chunk of the range is stored"),
    }
}

/// One entry of a pull with rollups, in relay order.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Entry {
    Chunk(Chunk),
    Rollup(Rollup),
}

impl Entry {
    /// Where it sits in the log (a rollup at its first chunk).
    pub(crate) fn seq(&self) -> u64 {
        match self {
            Entry::Chunk(chunk) => chunk.relay_seq,
            Entry::Rollup(rollup) => rollup.relay_seq,
        }
    }

    fn len(&self) -> usize {
        match self {
            Entry::Chunk(chunk) => chunk.payload.len(),
            Entry::Rollup(rollup) => rollup.payload.len(),
        }
    }
}

/// How a pull with rollups ends.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum Walked {
    /// The page's entries; `next_after` is `None` when nothing is left (the cursor is the head).
    Page {
        chunks: Vec<Chunk>,
        rollups: Vec<Rollup>,
        next_after: Option<u64>,
    },
    /// The first entry is the rollup at this relay sequence, and it does not fit in one page
    /// with everything up to its last chunk: read again serving its chunks one by one.
    PassOver(u64),
}

/// Takes the entries of a page with rollups, in relay order, from `next`.
///
/// Entries count against `limit` and their payloads against `max_bytes` together (the first
/// always fits). A page holding a rollup may only end at or past the rollup's last chunk (a
/// device cannot take a rollup and keep a cursor inside its range), so when the limits are
/// reached inside a rollup's range the page ends before that rollup instead, with the cursor
/// at the last entry before it. A rollup that cannot end a page even as its first entry is
/// passed over ([`Walked::PassOver`]): its chunks are then served one by one, and the rollup is
/// never served again to that cursor. When the page ends early, its cursor is the relay
/// sequence of its last entry, or the last chunk of a rollup it holds if that is higher.
pub(crate) fn walk<E>(
    mut next: impl FnMut() -> Result<Option<Entry>, E>,
    limit: usize,
    max_bytes: usize,
) -> Result<Walked, E> {
    let limit = limit.max(1);
    let mut taken: Vec<Entry> = Vec::new();
    let mut bytes = 0usize;
    // The highest last chunk of the rollups taken: the page may not end below it.
    let mut pending = 0u64;
    // (entries, cursor) of the last place the page may end.
    let mut cut: Option<(usize, u64)> = None;
    while let Some(entry) = next()? {
        let seq = entry.seq();
        if let Some(last) = taken.last()
            && seq > pending
        {
            cut = Some((taken.len(), last.seq().max(pending)));
        }
        let fits = taken.is_empty()
            || (taken.len() < limit && bytes.saturating_add(entry.len()) <= max_bytes);
        if !fits {
            return Ok(match (cut, taken.first()) {
                (Some((len, next_after)), _) => {
                    taken.truncate(len);
                    split(taken, Some(next_after))
                }
                (None, Some(Entry::Rollup(rollup))) => Walked::PassOver(rollup.relay_seq),
                // A first chunk always leaves a place to end after it.
                (None, _) => {
                    let next_after = taken.last().map(Entry::seq).unwrap_or(seq);
                    split(taken, Some(next_after.max(pending)))
                }
            });
        }
        bytes = bytes.saturating_add(entry.len());
        if let Entry::Rollup(rollup) = &entry {
            pending = pending.max(rollup.last_relay_seq);
        }
        taken.push(entry);
    }
    Ok(split(taken, None))
}

fn split(taken: Vec<Entry>, next_after: Option<u64>) -> Walked {
    let (mut chunks, mut rollups) = (Vec::new(), Vec::new());
    for entry in taken {
        match entry {
            Entry::Chunk(chunk) => chunks.push(chunk),
            Entry::Rollup(rollup) => rollups.push(rollup),
        }
    }
    Walked::Page {
        chunks,
        rollups,
        next_after,
    }
}

#[cfg(test)]
mod walk_tests {
    use super::*;

    fn chunk(seq: u64, len: usize) -> Entry {
        Entry::Chunk(Chunk {
            relay_seq: seq,
            device_id: DeviceId([1; 16]),
            device_seq: seq,
            payload: vec![0; len],
        })
    }

    fn rollup(seq: u64, last: u64, len: usize) -> Entry {
        Entry::Rollup(Rollup {
            relay_seq: seq,
            last_relay_seq: last,
            device_id: DeviceId([2; 16]),
            first_seq: 1,
            last_seq: 2,
            payload: vec![0; len],
        })
    }

    fn run(entries: Vec<Entry>, limit: usize, max_bytes: usize) -> Walked {
        let mut entries = entries.into_iter();
        walk(|| Ok::<_, ()>(entries.next()), limit, max_bytes).unwrap_or(Walked::PassOver(0))
    }

    fn seqs(walked: &Walked) -> (Vec<u64>, Vec<u64>, Option<u64>) {
        match walked {
            Walked::Page {
                chunks,
                rollups,
                next_after,
            } => (
                chunks.iter().map(|c| c.relay_seq).collect(),
                rollups.iter().map(|r| r.relay_seq).collect(),
                *next_after,
            ),
            Walked::PassOver(seq) => (vec![], vec![*seq], Some(0)),
        }
    }

    #[test]
    fn a_page_ends_before_a_rollup_it_cannot_finish() {
        // Rollup at 2 stands for 2, 4, 6; chunks of others at 3, 5, 7.
        let entries = || {
            vec![
                chunk(1, 1),
                rollup(2, 6, 1),
                chunk(3, 1),
                chunk(5, 1),
                chunk(7, 1),
            ]
        };
        assert_eq!(seqs(&run(entries(), 3, 100)), (vec![1], vec![], Some(1)));
        assert_eq!(
            seqs(&run(entries(), 4, 100)),
            (vec![1, 3, 5], vec![2], Some(6))
        );
        assert_eq!(
            seqs(&run(entries(), 9, 100)),
            (vec![1, 3, 5, 7], vec![2], None)
        );
        // By bytes too.
        assert_eq!(seqs(&run(entries(), 9, 3)), (vec![1], vec![], Some(1)));
    }

    #[test]
    fn a_first_rollup_that_cannot_end_a_page_is_passed_over() {
        let entries = || vec![rollup(2, 6, 1), chunk(3, 1), chunk(5, 1), chunk(7, 1)];
        assert_eq!(run(entries(), 2, 100), Walked::PassOver(2));
        assert_eq!(
            seqs(&run(entries(), 3, 100)),
            (vec![3, 5], vec![2], Some(6))
        );
        // Alone it always fits, however large.
        assert_eq!(
            seqs(&run(vec![rollup(2, 6, 500), chunk(7, 1)], 5, 10)),
            (vec![], vec![2], Some(6))
        );
    }

    #[test]
    fn without_rollups_pages_end_as_before() {
        let entries = || vec![chunk(1, 4), chunk(2, 4), chunk(3, 4)];
        assert_eq!(seqs(&run(entries(), 2, 100)), (vec![1, 2], vec![], Some(2)));
        assert_eq!(seqs(&run(entries(), 9, 8)), (vec![1, 2], vec![], Some(2)));
        assert_eq!(seqs(&run(entries(), 9, 1)), (vec![1], vec![], Some(1)));
        assert_eq!(seqs(&run(entries(), 3, 100)), (vec![1, 2, 3], vec![], None));
    }
}
