//! Rollups: a run of this device's acknowledged chunks sealed again as one compact batch, so a
//! device catching up receives one Automerge bundle (and, in the couple's space, one signature)
//! instead of a chunk and a signature per edit.

use std::sync::Arc;

use automerge::{ChangeHash, ReadDoc};

use super::{
    Journal, guard,
    proof::{self, Group, Proof},
};
use crate::{
    crypto::{GroupScope, KeyId, sign_group},
    error::Result,
    store::{ProofRow, Space, split_hashes},
};

/// The most chunks one rollup stands for.
const MAX_ROLLUP_CHUNKS: usize = 256;
/// The largest rollup plaintext (like a batch: far under the relay's chunk limit).
const MAX_ROLLUP_BYTES: usize = 256 * 1024;

/// A rollup made and not yet stored at the relay: what it proves, to keep once it is.
#[derive(Debug)]
pub(super) struct Made {
    space: Space,
    last_seq: u64,
    group: Option<Arc<Group>>,
}

impl Journal {
    /// The next rollup of `space` once at least `min_chunks` of this device's acknowledged
    /// chunks wait for one: (first device sequence, last, plaintext).
    pub(super) fn make_rollup(
        &mut self,
        space: Space,
        min_chunks: usize,
    ) -> Result<Option<(u64, u64, Vec<u8>)>> {
        // Runs of exactly `min_chunks` from the oldest: a rollup tried again after a lost
        // answer stands for the same chunks, so the relay takes it as the same one.
        let min_chunks = min_chunks.clamp(1, MAX_ROLLUP_CHUNKS);
        let signs = self.checks(space);
        let mine = self.key_id;
        // Receivers take a couple's rollup only from the key its device id is bound to.
        if signs && !mine.is_some_and(|k| self.device.is_bound_to(&k.0)) {
            return Ok(None);
        }
        let run = self.store.own_chunk_run(space, min_chunks)?;
        if run.len() < min_chunks {
            if self.store.own_chunks_waiting(space)? > u64::try_from(run.len()).unwrap_or(0)
                && let Some((last, ..)) = run.last()
            {
                // A hole (a chunk that cannot be rolled up) ends this run short for good: its
                // chunks stay chunks, and runs start after the hole.
                self.store.forget_own_chunks(space, *last)?;
            }
            return Ok(None);
        }
        // Only this device's own changes: a chunk pushed again after a rewind may carry the
        // other partner's, whose proofs this device cannot make. The run stops before one.
        let mut take = 0;
        let mut hashes: Vec<ChangeHash> = Vec::new();
        {
            let doc = self.doc(space)?;
            'chunks: for (_, _, chunk_hashes) in &run {
                let mut these = Vec::new();
                for hash in split_hashes(chunk_hashes) {
                    let hash = ChangeHash(hash);
                    let ok = match doc.am().get_change_by_hash(&hash) {
                        Some(change) => {
                            !signs
                                || mine.is_some_and(|k| {
                                    change.actor_id().to_bytes().len() == guard::ACTOR_LEN
                                        && change.actor_id().to_bytes()[..16] == k.0
                                })
                        }
                        None => false,
                    };
                    if !ok {
                        break 'chunks;
                    }
                    these.push(hash);
                }
                hashes.extend(these);
                take += 1;
            }
        }
        if take == 0 {
            // The oldest cannot be rolled up: it stays a chunk, and the next run starts after.
            if let Some((first, ..)) = run.first() {
                self.store.forget_own_chunks(space, *first)?;
            }
            return Ok(None);
        }
        if take < min_chunks {
            // Chunks before one that cannot be rolled up: they stay chunks.
            if let Some((last, ..)) = run.get(take.saturating_sub(1)).filter(|_| take > 0) {
                self.store.forget_own_chunks(space, *last)?;
            }
            return Ok(None);
        }
        let mut run = &run[..take];
        // Halve the run until its bundle fits (a run of large edits).
        let bundle = loop {
            let upto = run.iter().map(|(_, _, h)| h.len() / 32).sum::<usize>();
            let bundle = self.doc(space)?.am().bundle(hashes[..upto].iter().copied());
            match bundle {
                Ok(b) if b.bytes().len() <= MAX_ROLLUP_BYTES => break b.bytes().to_vec(),
                _ if run.len() > 1 => run = &run[..run.len() / 2],
                _ => {
                    // One chunk too large (or a bundle Automerge cannot make): left a chunk.
                    if let Some((first, ..)) = run.first() {
                        self.store.forget_own_chunks(space, *first)?;
                    }
                    return Ok(None);
                }
            }
        };
        let (Some((first, ..)), Some((last, ..))) = (run.first(), run.last()) else {
            return Ok(None);
        };
        let (first, last) = (*first, *last);
        let count = run.iter().map(|(_, _, h)| h.len() / 32).sum::<usize>();
        let covered: Vec<[u8; 32]> = hashes[..count].iter().map(|h| h.0).collect();
        let plain = match (signs, self.signer.clone()) {
            (true, Some(signer)) => {
                let scope = GroupScope {
                    device: *self.device.as_bytes(),
                    first_seq: first,
                    last_seq: last,
                };
                let mut sorted = covered;
                sorted.sort_unstable();
                sorted.dedup();
                let signature = sign_group(&signer.key, &signer.space_id, &scope, &sorted);
                let group = Arc::new(Group::new(signer.key_id(), scope, signature, sorted));
                // A receiver that never saw this device needs its introduction before the
                // first change of an opening, as with a chunk.
                let doc = self.doc(space)?;
                let introduce = hashes[..count]
                    .iter()
                    .any(|h| doc.am().get_change_by_hash(h).is_some_and(|c| c.seq() == 1));
                let intros = if introduce {
                    vec![signer.intro]
                } else {
                    Vec::new()
                };
                self.made = Some(Made {
                    space,
                    last_seq: last,
                    group: Some(Arc::clone(&group)),
                });
                proof::encode_rollup(&intros, signer.key_id(), signature, &bundle)
            }
            _ => {
                self.made = Some(Made {
                    space,
                    last_seq: last,
                    group: None,
                });
                bundle
            }
        };
        Ok(Some((first, last, plain)))
    }

    /// The relay stored the rollup ending at `last_seq` (`stored`), or refused it for good: its
    /// chunks wait for no other. Once stored, this device's own proofs of its changes become
    /// the group's, so its snapshots carry one signature for the run instead of one a change.
    pub(super) fn rollup_done(&mut self, space: Space, last_seq: u64, stored: bool) -> Result<()> {
        self.store.forget_own_chunks(space, last_seq)?;
        let made = self.made.take();
        if let Some(Made {
            space: s,
            last_seq: l,
            group: Some(group),
        }) = made
            && stored
            && s == space
            && l == last_seq
        {
            let rows: Vec<ProofRow> = group
                .hashes
                .iter()
                .map(|h| (*h, group.signer.0, group.signature.0, true))
                .collect();
            let groups = [(
                group.signer.0,
                group.scope,
                group.signature.0,
                group.hashes.clone(),
            )];
            self.store.keep_proofs(space, &rows, &groups)?;
        }
        Ok(())
    }

    /// Whether a rollup's plaintext holds what it claims, before anything of it is merged: in
    /// the couple's space, changes all made under the signing device's actors and one
    /// signature of that device (introduced here or in the rollup) over exactly their hashes;
    /// elsewhere, a bundle that parses. A rollup that fails is not merged, and the chunks it
    /// stands for are read instead.
    pub(super) fn rollup_holds(
        &self,
        space: Space,
        scope: &GroupScope,
        plain: &[u8],
        earlier: &[&[u8]],
    ) -> bool {
        if !self.checks(space) {
            return if proof::is_rollup(plain) {
                proof::decode_rollup(plain, *scope).is_ok()
            } else {
                proof::bundle_changes(plain).is_ok_and(|c| !c.is_empty())
            };
        }
        let Some(space_id) = self.couple_space else {
            return false;
        };
        let Ok(rollup) = proof::decode_rollup(plain, *scope) else {
            return false;
        };
        let signer: KeyId = rollup.group.signer;
        // The device id its chunks were filed under is its signer's: another partner's key
        // cannot stand in for this device's chunks.
        if !crate::ids::DeviceId::from_uuid(uuid::Uuid::from_bytes(scope.device))
            .is_bound_to(&signer.0)
        {
            return false;
        }
        let mut roster = self.roster.clone();
        if roster.get(&signer).is_none() {
            // Introduced earlier in the same batch, not merged yet.
            for before in earlier {
                let intros = if proof::is_rollup(before) {
                    proof::decode_rollup(before, *scope).map(|r| r.intros)
                } else {
                    guard::Bundle::decode(before).map(|b| b.intros)
                };
                if let Ok(intros) = intros {
                    let _ = roster.admit_all(&intros, &space_id);
                }
            }
        }
        let _ = roster.admit_all(&rollup.intros, &space_id);
        let Some((_, key)) = roster.get(&signer) else {
            return false;
        };
        let own = rollup.changes.iter().all(|c| {
            let actor = c.actor_id().to_bytes();
            actor.len() == guard::ACTOR_LEN && actor[..16] == signer.0
        });
        let proof = Proof::Group(Arc::clone(&rollup.group));
        own && rollup
            .changes
            .first()
            .is_some_and(|c| proof.verify(&key, &space_id, &c.hash().0))
    }
}
