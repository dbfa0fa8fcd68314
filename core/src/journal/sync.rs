//! The journal as the sync engine's store ([`SyncStore`]): batches to push, and committing
//! what was pulled together with the cursor, so the document never runs ahead of the disk.

use super::Journal;
use crate::{
    crypto::GroupScope,
    error::Result,
    ids::RecordId,
    store::{PeerSeqs, PulledChange, Space, Store, SyncState, ViewUpdate},
    sync::{Merged, Problem, SyncStore},
};

impl Journal {
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
        let (view, changed) = self.view_after(space, &before, &waiting, bytes)?;
        commit(&mut self.store, view.as_ref())?;
        Ok((view, changed))
    }

    /// Like [`Self::merge_and_commit`], with the merge done by `merge` (which applies what it
    /// accepts); `applied` says which change bytes it applied, and `commit` stores them.
    pub(super) fn merge_with<T>(
        &mut self,
        space: Space,
        merge: impl FnOnce(&mut crate::doc::SpaceDoc) -> Result<T>,
        applied: impl FnOnce(&T) -> Vec<u8>,
        commit: impl FnOnce(&mut Store, Option<&ViewUpdate>, &T, Vec<u8>) -> Result<()>,
    ) -> Result<(T, Vec<RecordId>)> {
        let doc = self.doc_mut(space)?;
        let before = doc.heads();
        let waiting = doc.missing_deps();
        let done = merge(doc).and_then(|t| {
            let bytes = applied(&t);
            let (view, changed) = self.view_after(space, &before, &waiting, &bytes)?;
            commit(&mut self.store, view.as_ref(), &t, bytes)?;
            Ok((t, view, changed))
        });
        let mut merged = None;
        let committed = done.map(|(t, view, changed)| {
            merged = Some(t);
            (view, changed)
        });
        let changed = self.finish_merge(space, committed)?;
        let t =
            merged.ok_or_else(|| crate::error::Error::Corrupt("a merge left nothing".into()))?;
        Ok((t, changed))
    }

    /// The read-model update after `bytes` were applied to a document whose heads were
    /// `before` and which waited for `waiting`.
    fn view_after(
        &mut self,
        space: Space,
        before: &[automerge::ChangeHash],
        waiting: &[automerge::ChangeHash],
        bytes: &[u8],
    ) -> Result<(Option<ViewUpdate>, Vec<RecordId>)> {
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

    /// Counts a change to sync bookkeeping (see [`SyncStore::sync_revision`]).
    pub(super) fn bump(&mut self, state: Result<SyncState>) -> Result<SyncState> {
        self.sync_revision = self.sync_revision.wrapping_add(1);
        state
    }
}

impl SyncStore for Journal {
    fn device(&self) -> [u8; 16] {
        *self.device.as_bytes()
    }

    fn sync_revision(&self) -> u64 {
        self.sync_revision
    }

    fn epoch_space(&self) -> Option<[u8; 32]> {
        self.couple_space
    }

    fn sync_state(&self, space: Space) -> Result<SyncState> {
        self.store.sync_state(space)
    }

    fn peer_seqs(&self, space: Space) -> Result<PeerSeqs> {
        self.store.peer_seqs(space)
    }

    fn authentic_peers(&self, space: Space) -> Result<Vec<[u8; 16]>> {
        self.store.authentic_peers(space)
    }

    fn pending_changes(&self, space: Space) -> Result<u64> {
        self.store.pending_changes(space)
    }

    fn next_batch(&mut self, space: Space, max_bytes: usize) -> Result<Option<(u64, Vec<u8>)>> {
        self.step(|j| {
            let batch = j.store.next_batch(space, max_bytes);
            j.sync_revision = j.sync_revision.wrapping_add(1);
            match batch? {
                Some((seq, raw)) if j.checks(space) => Ok(Some((seq, j.sign_batch(&raw)?))),
                other => Ok(other),
            }
        })
    }

    fn acknowledge(&mut self, space: Space, device_seq: u64, relay_seq: u64) -> Result<SyncState> {
        self.step(|j| {
            let state = j.store.acknowledge(space, device_seq, relay_seq);
            j.bump(state)
        })
    }

    fn apply_pulled(
        &mut self,
        space: Space,
        pulled: &[PulledChange<'_>],
        cursor: u64,
    ) -> Result<Merged> {
        let merged = self.step(|j| {
            if j.checks(space) {
                return j.apply_checked(pulled, cursor);
            }
            // Without a signer nothing is checked: a signed chunk's changes are taken as they
            // are (and stored without their proofs).
            let unwrapped: Vec<Option<Vec<u8>>> = pulled
                .iter()
                .map(|p| p.bytes.map(super::signing::unwrap_changes).transpose())
                .collect::<Result<_>>()?;
            let pulled: Vec<PulledChange<'_>> = pulled
                .iter()
                .zip(&unwrapped)
                .map(|(p, bytes)| PulledChange {
                    device: p.device,
                    first_seq: p.first_seq,
                    device_seq: p.device_seq,
                    bytes: bytes.as_deref(),
                })
                .collect();
            // One load of everything: Automerge sorts out the order of the changes itself.
            let all: Vec<u8> = pulled
                .iter()
                .filter_map(|p| p.bytes)
                .flatten()
                .copied()
                .collect();
            let committed = j.merge_and_commit(space, &all, |store, view| {
                store.commit_pulled(space, &pulled, cursor, view, None)
            });
            let records = j.finish_merge(space, committed)?;
            let state = j.store.sync_state(space);
            Ok(Merged {
                records,
                state: j.bump(state)?,
                forged: Vec::new(),
                unusable: false,
            })
        })?;
        // An erase marker among what came is kept where the read connection sees it.
        self.step(|j| j.keep_erase_marker(space))?;
        Ok(merged)
    }

    fn apply_snapshot(
        &mut self,
        space: Space,
        doc: &[u8],
        peers: &[([u8; 16], u64)],
        covers: u64,
    ) -> Result<Merged> {
        let merged = self.step(|j| {
            if j.checks(space) {
                return j.apply_checked_snapshot(doc, peers, covers);
            }
            let doc = super::signing::unwrap_save(doc)?;
            let committed = j.merge_and_commit(space, doc, |store, view| {
                store.commit_snapshot(space, doc, peers, covers, view, None)
            });
            let records = j.finish_merge(space, committed)?;
            let state = j.store.sync_state(space);
            Ok(Merged {
                records,
                state: j.bump(state)?,
                forged: Vec::new(),
                unusable: false,
            })
        })?;
        self.step(|j| j.keep_erase_marker(space))?;
        Ok(merged)
    }

    fn snapshot_material(&mut self, space: Space) -> Result<(Vec<u8>, PeerSeqs)> {
        let doc = if self.checks(space) {
            self.step(|j| j.proven_save())?
        } else {
            self.doc(space)?.save()
        };
        let mut peers = self.store.peer_seqs(space)?;
        let state = self.store.sync_state(space)?;
        let mine = state.next_seq.saturating_sub(1);
        if mine > 0 {
            peers.retain(|(d, _)| d != self.device.as_bytes());
            peers.push((*self.device.as_bytes(), mine));
            peers.sort();
        }
        Ok((doc, peers))
    }

    fn snapshot_uploaded(&mut self, space: Space, covers: u64) -> Result<SyncState> {
        self.step(|j| {
            let state = j.store.snapshot_uploaded(space, covers);
            j.bump(state)
        })
    }

    fn mark_refused(&mut self, space: Space, relay_seq: u64, real: bool) -> Result<SyncState> {
        self.step(|j| {
            let state = j.store.mark_refused(space, relay_seq, real);
            j.bump(state)
        })
    }

    fn awaits_changes(&self, space: Space) -> Result<bool> {
        Ok(!self.doc(space)?.missing_deps().is_empty())
    }

    fn give_up_healing(&mut self, space: Space) -> Result<SyncState> {
        self.step(|j| {
            let state = j.store.give_up_healing(space);
            j.bump(state)
        })
    }

    fn mark_synced(&mut self, space: Space, now_ms: i64) -> Result<SyncState> {
        self.step(|j| {
            let state = j.store.mark_synced(space, now_ms);
            j.bump(state)
        })
    }

    fn keep_cursor_mark(&mut self, space: Space, at: u64, mark: [u8; 16]) -> Result<SyncState> {
        let state = self.store.keep_cursor_mark(space, at, mark);
        self.bump(state)
    }

    fn relay_rewound(&mut self, space: Space) -> Result<SyncState> {
        self.step(|j| {
            // Change by change, not one saved document: a document larger than the relay's
            // chunk limit would be refused for ever and hold back every later edit.
            let changes = j.doc(space)?.changes();
            let state = j.store.relay_rewound(space, &changes);
            j.bump(state)
        })
    }

    fn change_device(&mut self) -> Result<[u8; 16]> {
        self.step(|j| {
            let device = super::new_device_id(j.key_id);
            j.store.change_device(&device.to_string())?;
            j.device = device;
            j.actor = super::new_actor(j.key_id);
            // The documents take the new actor, so no change made from now on can reuse an
            // (actor, sequence) pair the old id's lost changes used.
            for space in Space::ALL {
                j.reload(space)?;
            }
            j.sync_revision = j.sync_revision.wrapping_add(1);
            Ok(*device.as_bytes())
        })
    }

    fn space_erased(&mut self, space: Space) -> Result<Option<String>> {
        self.space_found_erased(space)
    }

    fn record_problem(&mut self, space: Space, problem: &Problem) -> Result<()> {
        self.step(|j| j.store.record_problem(space, problem))
    }

    fn clear_problems(&mut self, space: Space) -> Result<()> {
        self.step(|j| j.store.clear_problems(space))
    }

    fn next_rollup(
        &mut self,
        space: Space,
        min_chunks: usize,
    ) -> Result<Option<(u64, u64, Vec<u8>)>> {
        self.step(|j| j.make_rollup(space, min_chunks))
    }

    fn rollup_done(&mut self, space: Space, last_seq: u64, stored: bool) -> Result<()> {
        self.step(|j| j.rollup_done(space, last_seq, stored))
    }

    fn rollup_holds(
        &self,
        space: Space,
        scope: &GroupScope,
        plain: &[u8],
        earlier: &[&[u8]],
    ) -> bool {
        Journal::rollup_holds(self, space, scope, plain, earlier)
    }
}

/// What sync looks like from this device without asking the relay.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct SyncSummary {
    /// Local changes the relay has not acknowledged, both spaces.
    pub pending: u64,
    /// A change from the relay was refused and waits for a snapshot to heal it.
    pub healing: bool,
    /// When a round last completed in any space (unix ms).
    pub last_synced: Option<i64>,
    /// Problems sync reported that are not over yet (a clean round or a healing snapshot
    /// ends them), both spaces.
    pub problems: Vec<Problem>,
}

impl Journal {
    /// The sync summary an app shows (and `mend status` prints), from the store alone.
    pub fn sync_summary(&self) -> Result<SyncSummary> {
        let mut summary = SyncSummary::default();
        for space in Space::ALL {
            let state = self.store.sync_state(space)?;
            summary.last_synced = summary.last_synced.max(state.last_synced);
            summary.healing |= state.heal_after > 0;
            summary.problems.extend(self.store.open_problems(space)?);
            summary.pending = summary
                .pending
                .saturating_add(self.store.pending_changes(space)?);
        }
        Ok(summary)
    }
}
