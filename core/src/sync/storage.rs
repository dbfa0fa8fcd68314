//! The engine's storage boundary: exactly what the sync engine needs of the device's store.
//!
//! [`crate::Journal`] implements it over SQLite and Automerge. Every call that changes sync
//! bookkeeping returns the state it left, so the engine keeps cursors and peer sequence
//! numbers in memory instead of re-reading them at each step.

use super::Problem;
use crate::{
    crypto::GroupScope,
    error::Result,
    ids::RecordId,
    store::{PeerSeqs, PulledChange, Space, SyncState},
};

/// What a merge did: the records that changed and the space's state after the commit.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Merged {
    /// Records another device changed.
    pub records: Vec<RecordId>,
    /// The sync state the commit left.
    pub state: SyncState,
    /// Changes (or a snapshot's) refused by this device's checks, to report.
    pub forged: Vec<crate::sync::ProblemKind>,
    /// The snapshot carried a change that was refused: nothing of it was merged.
    pub unusable: bool,
}

/// The store as the sync engine sees it.
pub trait SyncStore {
    /// This device's id: its Automerge actor and the sender named in its chunks.
    fn device(&self) -> [u8; 16];

    /// Counts every change to sync bookkeeping made through this store. An engine that finds
    /// a count it did not leave knows another engine (a background round beside live sync)
    /// moved the cursors, and reloads.
    fn sync_revision(&self) -> u64;

    /// A space's sync state, read when a round starts.
    fn sync_state(&self, space: Space) -> Result<SyncState>;

    /// The couple's space id of the journal's epoch, once it signs. An engine holding keys
    /// for another space stops ([`crate::Error::MovedElsewhere`]) rather than send the new
    /// epoch's changes under the old epoch's keys.
    fn epoch_space(&self) -> Option<[u8; 32]> {
        None
    }

    /// Every device's last applied sequence number in a space, read when a round starts.
    fn peer_seqs(&self, space: Space) -> Result<PeerSeqs>;

    /// The devices whose chunks opened here (or that a snapshot vouched for): a refused chunk
    /// from one of them is a real edit, never given up.
    fn authentic_peers(&self, space: Space) -> Result<Vec<[u8; 16]>>;

    /// Local changes of a space not yet acknowledged by the relay.
    fn pending_changes(&self, space: Space) -> Result<u64>;

    /// The oldest unacknowledged batch, made from unsent changes when there is none:
    /// (device sequence, plaintext change bytes). The sequence is committed before it returns.
    fn next_batch(&mut self, space: Space, max_bytes: usize) -> Result<Option<(u64, Vec<u8>)>>;

    /// The relay stored batch `device_seq` at `relay_seq`.
    fn acknowledge(&mut self, space: Space, device_seq: u64, relay_seq: u64) -> Result<SyncState>;

    /// Merges pulled changes and commits them with the devices' sequence numbers and the new
    /// cursor in one transaction.
    fn apply_pulled(
        &mut self,
        space: Space,
        pulled: &[PulledChange<'_>],
        cursor: u64,
    ) -> Result<Merged>;

    /// Merges a snapshot's document and commits it with the devices' numbers and the relay
    /// sequence it covers.
    fn apply_snapshot(
        &mut self,
        space: Space,
        doc: &[u8],
        peers: &[([u8; 16], u64)],
        covers: u64,
    ) -> Result<Merged>;

    /// What a snapshot of `space` holds: the full document and every device's last number
    /// (this device's included, as its last batch).
    fn snapshot_material(&mut self, space: Space) -> Result<(Vec<u8>, PeerSeqs)>;

    /// The relay stored a snapshot covering `covers`.
    fn snapshot_uploaded(&mut self, space: Space, covers: u64) -> Result<SyncState>;

    /// A chunk at `relay_seq` was refused and needs healing from a snapshot; `real` when its
    /// device's chunks were merged here before (then only a snapshot covering it ends the wait).
    fn mark_refused(&mut self, space: Space, relay_seq: u64, real: bool) -> Result<SyncState>;

    /// The relay's snapshot, fetched after a chunk of a device never seen here was refused, did
    /// not heal it: the refused chunks count as consumed (nothing left to heal), so this device
    /// snapshots again.
    fn give_up_healing(&mut self, space: Space) -> Result<SyncState>;

    /// Whether the space's document holds changes it cannot apply yet, for want of one they
    /// depend on: a chunk refused (or withheld) that another device's later edits build on.
    fn awaits_changes(&self, space: Space) -> Result<bool>;

    /// A round completed at `now_ms`.
    fn mark_synced(&mut self, space: Space, now_ms: i64) -> Result<SyncState>;

    /// Keeps the relay's mark for the chunk at relay sequence `at`, the cursor just reached,
    /// to compare with what the relay says is there when this device reads on from it.
    fn keep_cursor_mark(&mut self, space: Space, at: u64, mark: [u8; 16]) -> Result<SyncState>;

    /// The relay went back in time: read from the start (cursor, acknowledgements and
    /// snapshot forgotten, nothing left to heal) and queue this device's whole document to
    /// push again, so whatever the relay lost is there again.
    fn relay_rewound(&mut self, space: Space) -> Result<SyncState>;

    /// The relay holds another payload under one of this device's numbers: take a new device
    /// id (and Automerge actor), number the outbox again from 1, and return the new id.
    fn change_device(&mut self) -> Result<[u8; 16]>;

    /// The relay answered that `space` was erased (`space_erased`): what to tell the person
    /// when a partner's own erase marker confirms it, else `None` (the space is reported gone;
    /// the relay's word alone stops nothing for good). A store that keeps nothing answers
    /// `None`.
    fn space_erased(&mut self, space: Space) -> Result<Option<String>> {
        let _ = space;
        Ok(None)
    }

    /// Keeps a problem where `status` shows it until it is over.
    fn record_problem(&mut self, space: Space, problem: &Problem) -> Result<()>;

    /// A clean round with nothing left to heal: the space's problems are over.
    fn clear_problems(&mut self, space: Space) -> Result<()>;

    /// A rollup of this device's acknowledged chunks, once at least `min_chunks` wait for
    /// one: (first device sequence, last, plaintext). A store that makes none answers `None`.
    fn next_rollup(
        &mut self,
        space: Space,
        min_chunks: usize,
    ) -> Result<Option<(u64, u64, Vec<u8>)>> {
        let _ = (space, min_chunks);
        Ok(None)
    }

    /// The relay stored the rollup ending at `last_seq` (`stored`) or refused it for good.
    fn rollup_done(&mut self, space: Space, last_seq: u64, stored: bool) -> Result<()> {
        let _ = (space, last_seq, stored);
        Ok(())
    }

    /// Whether a rollup's opened plaintext, served for `scope`, holds what it claims (checked
    /// before any of it is merged; one that fails is read as its chunks instead). `earlier` are the plaintexts
    /// opened before it in the same batch, not merged yet: the introductions they carry count.
    fn rollup_holds(
        &self,
        space: Space,
        scope: &GroupScope,
        plain: &[u8],
        earlier: &[&[u8]],
    ) -> bool {
        let _ = (space, scope, plain, earlier);
        false
    }
}
