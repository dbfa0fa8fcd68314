//! What the sync engine needs from the journal: batches to push, and committing what was
//! pulled together with the cursor, so the document never runs ahead of the disk.

use super::Journal;
use crate::{
    error::Result,
    ids::RecordId,
    store::{PeerSeqs, PulledChange, Space, Store, SyncState, ViewUpdate},
};

impl Journal {
    /// Sync bookkeeping of a space.
    pub fn sync_state(&self, space: Space) -> Result<SyncState> {
        self.store.sync_state(space)
    }

    /// Local changes of a space not yet acknowledged by the relay.
    pub fn pending_changes(&self, space: Space) -> Result<u64> {
        self.store.pending_changes(space)
    }

    /// The next batch to push: (device sequence, plaintext change bytes).
    pub fn next_batch(&mut self, space: Space, max_bytes: usize) -> Result<Option<(u64, Vec<u8>)>> {
        self.store.next_batch(space, max_bytes)
    }

    /// The relay stored batch `device_seq` at `relay_seq`.
    pub fn acknowledge(&mut self, space: Space, device_seq: u64, relay_seq: u64) -> Result<()> {
        self.store.acknowledge(space, device_seq, relay_seq)
    }

    /// The last sequence number applied from another device.
    pub fn peer_seq(&self, space: Space, device: &[u8; 16]) -> Result<u64> {
        self.store.peer_seq(space, device)
    }

    /// Applies pulled changes and commits them with the devices' sequence numbers and the new
    /// cursor in one transaction. Returns the records that changed.
    pub fn apply_pulled(
        &mut self,
        space: Space,
        pulled: &[PulledChange<'_>],
        cursor: u64,
    ) -> Result<Vec<RecordId>> {
        // One load of everything: Automerge sorts out the order of the changes itself.
        let all: Vec<u8> = pulled
            .iter()
            .filter_map(|p| p.bytes)
            .flatten()
            .copied()
            .collect();
        let committed = self.merge_and_commit(space, &all, |store, view| {
            store.commit_pulled(space, pulled, cursor, view)
        });
        self.finish_merge(space, committed)
    }

    /// Merges a snapshot's document and commits it with the devices' numbers and the sequence
    /// it covers.
    pub fn apply_snapshot(
        &mut self,
        space: Space,
        doc: &[u8],
        peers: &[([u8; 16], u64)],
        covers: u64,
    ) -> Result<Vec<RecordId>> {
        let committed = self.merge_and_commit(space, doc, |store, view| {
            store.commit_snapshot(space, doc, peers, covers, view)
        });
        self.finish_merge(space, committed)
    }

    /// Applies `bytes` to a space's document and runs `commit` with the read-model update
    /// (`None` when nothing changed). Returns the update and the records that changed.
    pub(super) fn merge_and_commit(
        &mut self,
        space: Space,
        bytes: &[u8],
        commit: impl FnOnce(&mut Store, Option<&ViewUpdate>) -> Result<()>,
    ) -> Result<(Option<ViewUpdate>, Vec<RecordId>)> {
        if bytes.is_empty() {
            // Only numbers to record (a refused chunk, the cursor): the document can go on
            // loading.
            commit(&mut self.store, None)?;
            return Ok((None, Vec::new()));
        }
        let doc = self.doc_mut(space)?;
        let before = doc.heads();
        let waiting = doc.missing_deps();
        doc.apply(bytes)?;
        let doc = self.doc(space)?;
        let (view, changed) = if doc.heads() == before {
            (None, Vec::new())
        } else if !waiting.is_empty() && doc.missing_deps() != waiting {
            // Changes held back for a missing dependency went in with these; only the whole
            // document says which records they touched. (A queue that stays as it was, such
            // as one waiting for a refused chunk, costs nothing here.)
            let (view, changed) = self.view_resync(space)?;
            (Some(view), changed)
        } else if let Some(touched) = doc.touched_by_ops(bytes) {
            (Some(self.view_update(space, Some(&touched))?), touched)
        } else {
            let (view, changed) = self.view_resync(space)?;
            (Some(view), changed)
        };
        commit(&mut self.store, view.as_ref())?;
        Ok((view, changed))
    }

    /// After [`Self::merge_and_commit`]: on failure, forgets the merge in memory too.
    pub(super) fn finish_merge(
        &mut self,
        space: Space,
        committed: Result<(Option<ViewUpdate>, Vec<RecordId>)>,
    ) -> Result<Vec<RecordId>> {
        let (view, changed) = match committed {
            Ok(done) => done,
            Err(e) => {
                self.reload(space)?;
                return Err(e);
            }
        };
        self.views_committed(view.as_slice());
        self.maybe_compact(space);
        Ok(changed)
    }

    /// What a snapshot of `space` holds: the full document and every device's last number
    /// (this device's included, as the last batch the relay acknowledged).
    pub fn snapshot_material(&self, space: Space) -> Result<(Vec<u8>, PeerSeqs)> {
        let mut peers = self.store.peer_seqs(space)?;
        let state = self.store.sync_state(space)?;
        let mine = state.next_seq.saturating_sub(1);
        if mine > 0 {
            peers.retain(|(d, _)| d != self.device.as_bytes());
            peers.push((*self.device.as_bytes(), mine));
            peers.sort();
        }
        Ok((self.doc(space)?.save(), peers))
    }

    /// Records that the relay stored a snapshot covering `covers`.
    pub fn snapshot_uploaded(&mut self, space: Space, covers: u64) -> Result<()> {
        self.store.snapshot_uploaded(space, covers)
    }

    /// Records that a chunk at `relay_seq` was refused and needs healing from a snapshot.
    pub fn mark_refused(&mut self, space: Space, relay_seq: u64) -> Result<()> {
        self.store.mark_refused(space, relay_seq)
    }

    /// Records a completed sync round.
    pub fn mark_synced(&mut self, space: Space, now_ms: i64) -> Result<()> {
        self.store.mark_synced(space, now_ms)
    }
}
