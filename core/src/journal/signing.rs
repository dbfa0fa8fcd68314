//! Signing this device's changes to the couple's space, and checking everyone else's before
//! they are merged (the rules are in [`super::guard`]).
//!
//! Only the couple's space is signed: a personal space is shared by one partner's devices
//! alone, so there is no one in it to forge for.

use std::{collections::HashMap, sync::Arc};

use automerge::{ActorId, Change, ChangeHash};

use super::{
    Journal,
    guard::{self, Bundle, Refused, Signed},
    proof::{self, Group, Proof},
};
use crate::{
    crypto::{ChangeProof, GroupScope, INTRO_LEN, Intro, KeyId, Signer, sign_change},
    doc::{SpaceDoc, split_chunk},
    error::{Error, Result},
    store::{Checked, GroupRow, ProofRow, PulledChange, Space},
    sync::{Merged, ProblemKind},
};

/// Where the introduction this device first signed with is kept: batches signed again after a
/// crash must be the same bytes, and a certificate issued later would differ.
const META_OWN_INTRO: &str = "own_intro";
/// When this journal first signed (unset: it never has).
const META_SIGNING_SINCE: &str = "signing_since";
/// The first byte of a snapshot's document part that carries proofs (a bare Automerge save
/// begins with 0x85).
const PROVEN_SNAPSHOT: u8 = 2;
/// The same, with group proofs too (the changes that came in rollups).
const PROVEN_SNAPSHOT_WITH_GROUPS: u8 = 3;
/// Bytes of one proof in a snapshot: change hash, signer, signature.
const PROOF_LEN: usize = 32 + 16 + 64;
/// Changes held for a missing dependency, per signing device, at most (count and bytes): the
/// newest are kept, so a device that sends changes built on what never comes crowds out only
/// its own.
const MAX_HELD_PER_DEVICE: usize = 1_000;
const MAX_HELD_BYTES_PER_DEVICE: usize = 4 << 20;

fn corrupt(what: &str) -> Error {
    Error::Corrupt(what.into())
}

impl Journal {
    /// Gives the journal what this device signs the couple's changes with. From then on every
    /// batch it pushes to the couple's space is signed, and every change pulled or loaded from
    /// a snapshot is checked before it is merged: a journal without a signer neither signs
    /// nor checks.
    pub fn set_signer(&mut self, signer: Signer) -> Result<()> {
        self.step(|j| j.set_signer_in_step(signer))
    }

    pub(super) fn set_signer_in_step(&mut self, mut signer: Signer) -> Result<()> {
        let stored = self
            .store
            .meta(META_OWN_INTRO)?
            .and_then(|h| hex::decode(h).ok())
            .and_then(|b| Intro::from_bytes(&b).ok());
        match stored {
            Some(intro)
                if intro.cert.device_key == signer.intro.cert.device_key
                    && intro.identity == signer.intro.identity
                    && intro.cert.space_id == signer.space_id =>
            {
                signer.intro = intro;
            }
            _ => self
                .store
                .set_meta(&[(META_OWN_INTRO, &hex::encode(signer.intro.to_bytes()))])?,
        }
        self.set_couple_space(&signer.space_id)?;
        self.load_roster()?;
        if self.roster.admit(&signer.intro, &signer.space_id) == Ok(true) {
            self.store.keep_intros(
                Space::Couple,
                &[(signer.key_id().0, signer.intro.to_bytes().to_vec())],
            )?;
        }
        let key = signer.key_id();
        if self.key_id != Some(key) {
            // A journal opened without its key: the changes it makes from now on carry it.
            self.key_id = Some(key);
            self.actor = super::new_actor(Some(key));
            let actor = ActorId::from(self.actor.as_slice());
            for space in Space::ALL {
                self.doc_mut(space)?.set_actor(actor.clone());
            }
        }
        self.signer = Some(signer);
        if self.store.meta(META_SIGNING_SINCE)?.is_none() {
            self.vouch_for_the_past()?;
            self.store
                .set_meta(&[(META_SIGNING_SINCE, &self.now().to_string())])?;
        }
        Ok(())
    }

    /// The first open that signs, in a journal from before signing: the changes of the
    /// couple's document from before (16-byte actors) that this partner could have made are
    /// pushed again, now signed by this device, so a device that never received them (the
    /// relay refuses nothing, but receivers refuse unsigned chunks) gets them from their
    /// author's side. The other partner's are left to the other partner's devices.
    fn vouch_for_the_past(&mut self) -> Result<()> {
        let state = self.store.sync_state(Space::Couple)?;
        if state.cursor == 0 && state.next_seq <= 1 {
            // Never synced: whatever it made still waits to be pushed, and will be signed.
            return Ok(());
        }
        let me = self.me;
        let doc = self.doc(Space::Couple)?;
        let mut past = Vec::new();
        for change in doc.am().get_changes(&[]) {
            let actor = change.actor_id().to_bytes();
            if actor.len() == guard::LEGACY_ACTOR_LEN
                && actor != [0u8; 16]
                && guard::rules_allow(doc, &change, me)
            {
                past.push(change.raw_bytes().to_vec());
            }
        }
        if !past.is_empty() {
            self.store.queue_changes(Space::Couple, &past)?;
            self.sync_revision = self.sync_revision.wrapping_add(1);
        }
        Ok(())
    }

    /// Reads the devices introduced here and the changes refused for good.
    pub(super) fn load_roster(&mut self) -> Result<()> {
        let Some(space_id) = self.couple_space else {
            return Ok(());
        };
        let mut roster = guard::Roster::default();
        roster.base = self.epoch_base()?;
        // Only past the first epoch (which waits for the document's load), and never failing:
        // a document that cannot be loaded still leaves the read model readable.
        if roster.base.is_some()
            && let Ok(doc) = self.doc(Space::Couple)
        {
            roster.read_vouched(doc);
        }
        for bytes in self.store.known_devices(Space::Couple)? {
            if let Ok(intro) = Intro::from_bytes(&bytes) {
                // Admitted once already: replayed in the same order, the same ones pass.
                let _ = roster.admit(&intro, &space_id);
            }
        }
        self.roster = roster;
        self.banned = self
            .store
            .banned(Space::Couple)?
            .into_iter()
            .map(ChangeHash)
            .collect();
        Ok(())
    }

    /// This device's own introduction, admitted as soon as the roster can: a rejoined
    /// partner's only once this epoch's first change, which vouches for its key, is held.
    fn admit_own(&mut self) -> Result<()> {
        let Some(signer) = &self.signer else {
            return Ok(());
        };
        if self.roster.intro(&signer.key_id()).is_some() {
            return Ok(());
        }
        if self.roster.admit(&signer.intro, &signer.space_id) == Ok(true) {
            self.store.keep_intros(
                Space::Couple,
                &[(signer.key_id().0, signer.intro.to_bytes().to_vec())],
            )?;
        }
        Ok(())
    }

    /// Whether this journal signs and checks `space`.
    pub(super) fn checks(&self, space: Space) -> bool {
        space == Space::Couple && self.signer.is_some()
    }

    /// A batch of this device's changes (concatenated, as the outbox keeps them) as a signed
    /// bundle. A change pushed again after a rewind keeps the proof it came with; this
    /// device's own are signed (the signature is the same every time).
    pub(super) fn sign_batch(&mut self, raw: &[u8]) -> Result<Vec<u8>> {
        let Some(signer) = self.signer.clone() else {
            return Ok(raw.to_vec());
        };
        let me = signer.key_id();
        let mut bundle = Bundle::default();
        let mut fresh: Vec<ProofRow> = Vec::new();
        let mut introduce_me = false;
        let mut others: Vec<KeyId> = Vec::new();
        let mut rest = raw;
        while !rest.is_empty() {
            let (one, after) =
                split_chunk(rest).ok_or_else(|| corrupt("a queued change is malformed"))?;
            rest = after;
            let change = Change::from_bytes(one.to_vec())
                .map_err(|_| corrupt("a queued change is malformed"))?;
            let hash = change.hash().0;
            let actor = change.actor_id().to_bytes();
            let stored = match self.store.proof_of(Space::Couple, &hash)? {
                Some((by, sig, false)) => Some((KeyId(by), Proof::One(ChangeProof(sig)))),
                // A group proof does not travel in a chunk: this device signs its own change
                // again on its own, and leaves out the other partner's, which their devices
                // push again themselves.
                Some((by, _, true)) if KeyId(by) != me => continue,
                Some((_, _, true)) | None => None,
            };
            let (by, proof) = match stored {
                Some(stored) => stored,
                None => {
                    let proof = sign_change(&signer.key, &signer.space_id, &hash);
                    fresh.push((hash, me.0, proof.0, false));
                    (me, Proof::One(proof))
                }
            };
            if by == me {
                // The first change of each opening (a new actor) or a change from before
                // signing: receivers may not know this device yet.
                introduce_me |= actor.len() != guard::ACTOR_LEN || change.seq() == 1;
            } else if !others.contains(&by) {
                others.push(by);
            }
            bundle.changes.push(Signed {
                bytes: one.to_vec(),
                signer: by,
                proof,
            });
        }
        if introduce_me {
            bundle.intros.push(signer.intro);
        }
        for key in others {
            bundle.intros.extend(self.roster.intro(&key));
        }
        if !fresh.is_empty() {
            self.store.keep_proofs(Space::Couple, &fresh, &[])?;
        }
        Ok(bundle.encode())
    }

    /// The group stored under `signature`, read once per use.
    fn stored_group(&self, signature: &[u8; 64]) -> Result<Option<Arc<Group>>> {
        Ok(self
            .store
            .group(Space::Couple, signature)?
            .map(|(signer, scope, sig, hashes)| {
                Arc::new(Group::new(KeyId(signer), scope, ChangeProof(sig), hashes))
            }))
    }

    /// Checks pulled chunks of the couple's space (and changes held from before), merges what
    /// passes, and commits it with the devices' numbers and `cursor`.
    pub(super) fn apply_checked(
        &mut self,
        pulled: &[PulledChange<'_>],
        cursor: u64,
    ) -> Result<Merged> {
        let space = Space::Couple;
        let space_id = self
            .couple_space
            .ok_or_else(|| corrupt("no couple space"))?;
        let mut intros = Vec::new();
        let mut groups: HashMap<[u8; 64], Arc<Group>> = HashMap::new();
        let mut pending: Vec<Signed> = Vec::new();
        for (_, bytes, signer, sig, grp) in self.store.held(space)? {
            let proof = if grp {
                let group = match groups.get(&sig) {
                    Some(g) => Some(Arc::clone(g)),
                    None => self.stored_group(&sig)?,
                };
                match group {
                    Some(g) => {
                        groups.insert(sig, Arc::clone(&g));
                        Proof::Group(g)
                    }
                    // Its group was never stored: it cannot be proven, and is dropped.
                    None => continue,
                }
            } else {
                Proof::One(ChangeProof(sig))
            };
            pending.push(Signed {
                bytes,
                signer: KeyId(signer),
                proof,
            });
        }
        let mut refused = Vec::new();
        for p in pulled {
            let Some(plain) = p.bytes else { continue };
            if proof::is_rollup(plain) {
                let scope = GroupScope {
                    device: p.device,
                    first_seq: p.first_seq,
                    last_seq: p.device_seq,
                };
                match proof::decode_rollup(plain, scope) {
                    Ok(rollup) => {
                        intros.extend(rollup.intros);
                        let signer = rollup.group.signer;
                        pending.extend(rollup.changes.into_iter().map(|c| Signed {
                            bytes: c.raw_bytes().to_vec(),
                            signer,
                            proof: Proof::Group(Arc::clone(&rollup.group)),
                        }));
                    }
                    Err(_) => refused.push(Refused {
                        signer: KeyId(p.device),
                        partner: None,
                        breach: guard::Breach::Malformed,
                    }),
                }
            } else if Bundle::is_bundle(plain) {
                // A bundle no device can read is refused like a forged change: it opened, so a
                // holder of the couple's key made it, and no snapshot will ever heal it.
                match Bundle::decode(plain) {
                    Ok(bundle) => {
                        intros.extend(bundle.intros);
                        pending.extend(bundle.changes);
                    }
                    Err(_) => refused.push(Refused {
                        signer: KeyId(p.device),
                        partner: None,
                        breach: guard::Breach::Malformed,
                    }),
                }
            } else {
                refused.push(Refused {
                    signer: KeyId(p.device),
                    partner: None,
                    breach: guard::Breach::Unsigned,
                });
            }
        }
        let mut roster = self.roster.clone();
        let banned = std::mem::take(&mut self.banned);
        let outcome = self.merge_with(
            space,
            |doc| guard::run(doc, &mut roster, &banned, &space_id, &intros, pending),
            |verdicts| {
                let accepted: Vec<u8> = verdicts
                    .accepted
                    .iter()
                    .flat_map(|(_, s)| s.bytes.iter().copied())
                    .collect();
                accepted
            },
            |store, view, verdicts, accepted| {
                let checked = checked_of(verdicts, accepted);
                store.commit_pulled(space, pulled, cursor, view, Some(&checked))
            },
        );
        self.banned = banned;
        let (verdicts, records) = outcome?;
        if verdicts.apply_failed {
            self.reload(space)?;
        }
        self.roster = roster;
        self.admit_own()?;
        self.banned.extend(verdicts.banned.iter().copied());
        refused.extend(verdicts.refused);
        let state = self.store.sync_state(space);
        Ok(Merged {
            records,
            state: self.bump(state)?,
            forged: self.forged_problems(&refused),
            unusable: false,
        })
    }

    /// The document part of a couple's snapshot: the proofs and introductions every change in
    /// it needs, then the full save.
    pub(super) fn proven_save(&mut self) -> Result<Vec<u8>> {
        let Some(signer) = self.signer.clone() else {
            return Ok(self.doc(Space::Couple)?.save());
        };
        let mut proofs = self.store.all_proofs(Space::Couple)?;
        // Changes not yet in a batch have no stored proof yet.
        let mut fresh = Vec::new();
        for bytes in self.store.unsent(Space::Couple)? {
            let mut rest = bytes.as_slice();
            while let Some((one, after)) = split_chunk(rest) {
                rest = after;
                if let Ok(change) = Change::from_bytes(one.to_vec()) {
                    let hash = change.hash().0;
                    let proof = sign_change(&signer.key, &signer.space_id, &hash);
                    fresh.push((hash, signer.key_id().0, proof.0, false));
                }
            }
        }
        if !fresh.is_empty() {
            self.store.keep_proofs(Space::Couple, &fresh, &[])?;
            proofs.extend(fresh);
        }
        let intros = self.roster.intros();
        let save = self.doc(Space::Couple)?.save();
        // A change proven by a group needs no line of its own: the group's hashes name it.
        let singles: Vec<&ProofRow> = proofs.iter().filter(|p| !p.3).collect();
        let groups: Vec<GroupRow> = if proofs.iter().any(|p| p.3) {
            self.store.all_groups(Space::Couple)?
        } else {
            Vec::new()
        };
        let mut out = Vec::with_capacity(
            save.len()
                + singles.len() * PROOF_LEN
                + groups.iter().map(|g| 117 + g.3.len() * 2).sum::<usize>()
                + intros.len() * INTRO_LEN
                + 15,
        );
        out.push(if groups.is_empty() {
            PROVEN_SNAPSHOT
        } else {
            PROVEN_SNAPSHOT_WITH_GROUPS
        });
        out.extend_from_slice(&u16::try_from(intros.len()).unwrap_or(0).to_be_bytes());
        for intro in intros.iter().take(usize::from(u16::MAX)) {
            out.extend_from_slice(&intro.to_bytes());
        }
        if !groups.is_empty() {
            // A group names its changes by their places in the save's changes sorted by hash
            // (a byte or two each) rather than by their hashes (32): the receiver sorts the
            // same save's hashes.
            let mut sorted: Vec<[u8; 32]> = self
                .doc(Space::Couple)?
                .am()
                .get_changes(&[])
                .iter()
                .map(|c| c.hash().0)
                .collect();
            sorted.sort_unstable();
            let groups: Vec<&GroupRow> = groups
                .iter()
                .filter(|g| !g.3.is_empty() && g.3.len() <= proof::MAX_GROUP)
                .collect();
            out.extend_from_slice(&u32::try_from(groups.len()).unwrap_or(0).to_be_bytes());
            for (signer, scope, sig, hashes) in groups {
                proof::encode_snapshot_group(
                    &Group::new(KeyId(*signer), *scope, ChangeProof(*sig), hashes.clone()),
                    &sorted,
                    &mut out,
                );
            }
        }
        out.extend_from_slice(&u32::try_from(singles.len()).unwrap_or(0).to_be_bytes());
        for (hash, signer, sig, _) in singles.iter().take(u32::MAX as usize) {
            out.extend_from_slice(hash);
            out.extend_from_slice(signer);
            out.extend_from_slice(sig);
        }
        out.extend_from_slice(&save);
        Ok(out)
    }

    /// Checks a couple's snapshot: every change in it this replica lacks must pass, or
    /// nothing of it is merged (`unusable`, with what was refused reported).
    pub(super) fn apply_checked_snapshot(
        &mut self,
        payload: &[u8],
        peers: &[([u8; 16], u64)],
        covers: u64,
    ) -> Result<Merged> {
        let space = Space::Couple;
        let space_id = self
            .couple_space
            .ok_or_else(|| corrupt("no couple space"))?;
        let (intros, read, save) = parse_proven(payload)?;
        let scratch = SpaceDoc::load(Some(save), &[], ActorId::random(), false)?;
        let all = scratch.am().get_changes(&[]);
        let mut sorted: Vec<[u8; 32]> = all.iter().map(|c| c.hash().0).collect();
        sorted.sort_unstable();
        let proofs = read.resolve(&sorted)?;
        let mine = self.doc(space)?;
        let changes: Vec<(Change, Option<Signed>)> = all
            .into_iter()
            .filter(|c| !mine.has_change(&c.hash()))
            .map(|c| {
                let signed = proofs
                    .get(&c.hash().0)
                    .and_then(|found| proof_for(&c, found))
                    .map(|(signer, proof)| Signed {
                        bytes: Vec::new(),
                        signer: KeyId(*signer),
                        proof: proof.clone(),
                    });
                (c, signed)
            })
            .collect();
        // Only the proofs just checked are kept: one for a change held already was not, and
        // must not replace the one kept for it.
        let kept: Vec<([u8; 32], SnapshotProof)> = changes
            .iter()
            .filter_map(|(c, s)| {
                s.as_ref()
                    .map(|s| (c.hash().0, (s.signer.0, s.proof.clone())))
            })
            .collect();
        // A journal that has read nothing from the relay yet holds only its own first changes.
        let state = self.store.sync_state(space)?;
        let first_load = state.cursor == 0 && state.snapshot_covers == 0;
        let mut roster = self.roster.clone();
        let (admitted, refused) = guard::judge_closed(
            &scratch,
            &mut roster,
            &self.banned,
            &space_id,
            &intros,
            changes,
        );
        if !refused.is_empty() {
            let state = self.store.sync_state(space);
            return Ok(Merged {
                records: Vec::new(),
                state: self.bump(state)?,
                forged: self.forged_problems(&refused),
                unusable: true,
            });
        }
        let checked = Checked {
            groups: groups_of(kept.iter().map(|(_, (_, p))| p)),
            proofs: kept
                .iter()
                .map(|(hash, (signer, p))| (*hash, *signer, p.signature(), p.group().is_some()))
                .collect(),
            intros: admitted
                .iter()
                .map(|i| (i.cert.device_key.key_id().0, i.to_bytes().to_vec()))
                .collect(),
            held: self.store.held(space)?.into_iter().collect(),
            ..Checked::default()
        };
        let records = if first_load {
            // Nothing here but this device's own first changes: they go onto the snapshot's
            // document, already loaded, rather than the snapshot onto them (a second load).
            let mut merged = scratch;
            merged.set_actor(ActorId::from(self.actor.as_slice()));
            for change in self.doc(space)?.am().get_changes(&[]) {
                if !merged.has_change(&change.hash()) {
                    merged.apply_change(change)?;
                }
            }
            let (_, records) = self.merge_with(
                space,
                move |doc| {
                    *doc = merged;
                    Ok(())
                },
                |()| save.to_vec(),
                |store, view, (), _| {
                    store.commit_snapshot(space, save, peers, covers, view, Some(&checked))
                },
            )?;
            records
        } else {
            let committed = self.merge_and_commit(space, save, |store, view| {
                store.commit_snapshot(space, save, peers, covers, view, Some(&checked))
            });
            self.finish_merge(space, committed)?
        };
        self.roster = roster;
        self.admit_own()?;
        let state = self.store.sync_state(space);
        Ok(Merged {
            records,
            state: self.bump(state)?,
            forged: Vec::new(),
            unusable: false,
        })
    }

    /// The problems the sync status shows for refusals, in plain words with the device named
    /// and no journal text.
    fn forged_problems(&self, refused: &[Refused]) -> Vec<ProblemKind> {
        // A name is the partner's own words: shown short and on one line.
        let clean =
            |name: &str| -> String { name.chars().filter(|c| !c.is_control()).take(40).collect() };
        let name_of = |id: crate::ids::PartnerId| {
            self.partners
                .iter()
                .find(|p| p.id == id)
                .map(|p| clean(&p.name))
        };
        let mut out: Vec<ProblemKind> = Vec::new();
        for r in refused {
            let (from, target) = match r.partner {
                Some(p) => {
                    let from = match name_of(p) {
                        Some(_) if p == self.me => format!("your device {}", r.signer.short()),
                        Some(name) => format!("{name}'s device {}", r.signer.short()),
                        None => format!("device {}", r.signer.short()),
                    };
                    let other = self.partners.iter().find(|q| q.id != p);
                    let target = match other {
                        Some(q) if q.id == self.me => "you".to_owned(),
                        Some(q) => clean(&q.name),
                        None => "the other partner".to_owned(),
                    };
                    (from, target)
                }
                None => (
                    format!("an unknown device {}", r.signer.short()),
                    "a partner".to_owned(),
                ),
            };
            let kind = ProblemKind::Forged {
                partner: r.partner.map(|p| p.to_string()).unwrap_or_default(),
                device: r.signer.short(),
                breach: r.breach.code().to_owned(),
                words: format!(
                    "a change from {from} {} and was refused",
                    r.breach.words(&target)
                ),
            };
            // One line per cause: a burst of forged changes is one problem to act on.
            if !out.contains(&kind) {
                out.push(kind);
            }
        }
        out
    }
}

/// The stored form of a pass of the guard.
fn checked_of(verdicts: &guard::Verdicts, accepted: Vec<u8>) -> Checked {
    let row = |(hash, s): &(ChangeHash, Signed)| -> ProofRow {
        (
            hash.0,
            s.signer.0,
            s.proof.signature(),
            s.proof.group().is_some(),
        )
    };
    Checked {
        accepted,
        groups: groups_of(
            verdicts
                .accepted
                .iter()
                .chain(&verdicts.known)
                .chain(&verdicts.held)
                .map(|(_, s)| &s.proof),
        ),
        proofs: verdicts.accepted.iter().map(row).collect(),
        intros: verdicts
            .intros
            .iter()
            .map(|i| (i.cert.device_key.key_id().0, i.to_bytes().to_vec()))
            .collect(),
        held: bounded_held(&verdicts.held),
        known: verdicts.known.iter().map(row).collect(),
        banned: verdicts.banned.iter().map(|h| h.0).collect(),
    }
}

/// The groups among `proofs`, each once, as stored.
fn groups_of<'a>(proofs: impl Iterator<Item = &'a Proof>) -> Vec<GroupRow> {
    let mut seen: std::collections::HashSet<[u8; 64]> = std::collections::HashSet::new();
    let mut out = Vec::new();
    for g in proofs.filter_map(Proof::group) {
        if seen.insert(g.signature.0) {
            out.push((g.signer.0, g.scope, g.signature.0, g.hashes.clone()));
        }
    }
    out
}

/// The changes of a chunk's plaintext, concatenated: a signed bundle's, a rollup's, or the
/// plaintext itself (a chunk from before signing).
pub(super) fn unwrap_changes(plain: &[u8]) -> Result<Vec<u8>> {
    if proof::is_rollup(plain) {
        // Nothing is verified here (a journal without a signer): the scope is not read.
        let scope = GroupScope {
            device: [0; 16],
            first_seq: 0,
            last_seq: 0,
        };
        let rollup =
            proof::decode_rollup(plain, scope).map_err(|_| corrupt("a rollup is malformed"))?;
        return Ok(rollup
            .changes
            .iter()
            .flat_map(|c| c.raw_bytes().iter().copied())
            .collect());
    }
    if !Bundle::is_bundle(plain) {
        return Ok(plain.to_vec());
    }
    let bundle = Bundle::decode(plain).map_err(|_| corrupt("a signed chunk is malformed"))?;
    // Each piece alone: joined, a piece cut short would read on into the next.
    if !bundle
        .changes
        .iter()
        .all(|c| crate::doc::inflate::is_one_chunk(&c.bytes))
    {
        return Err(corrupt("a signed chunk is malformed"));
    }
    Ok(bundle.changes.into_iter().flat_map(|c| c.bytes).collect())
}

/// The save inside a snapshot's document part, proofs or not.
pub(super) fn unwrap_save(payload: &[u8]) -> Result<&[u8]> {
    parse_proven(payload).map(|(_, _, save)| save)
}

/// What stays held: per signing device, its newest changes within the bounds.
fn bounded_held(held: &[(ChangeHash, Signed)]) -> Vec<crate::store::HeldRow> {
    let mut per: HashMap<KeyId, (usize, usize)> = HashMap::new();
    let mut kept: Vec<crate::store::HeldRow> = Vec::new();
    for (hash, s) in held.iter().rev() {
        let (count, bytes) = per.entry(s.signer).or_default();
        // What it inflates to when it is read again, not its compressed size.
        let cap = u64::try_from(MAX_HELD_BYTES_PER_DEVICE).unwrap_or(u64::MAX);
        let size = usize::try_from(crate::doc::inflate::cost(&s.bytes, cap)).unwrap_or(usize::MAX);
        if *count >= MAX_HELD_PER_DEVICE || bytes.saturating_add(size) > MAX_HELD_BYTES_PER_DEVICE {
            continue;
        }
        *count += 1;
        *bytes = bytes.saturating_add(size);
        kept.push((
            hash.0,
            s.bytes.clone(),
            s.signer.0,
            s.proof.signature(),
            s.proof.group().is_some(),
        ));
    }
    kept.reverse();
    kept
}

/// A change's proof in a snapshot: its signer and the proof.
type SnapshotProof = ([u8; 16], Proof);
/// Every proof a snapshot offers for a change (a crafted snapshot may offer several).
type Proofs = HashMap<[u8; 32], Vec<SnapshotProof>>;

/// A snapshot's proofs as read: single proofs by hash, and groups whose members may still be
/// places in the save's sorted hashes.
#[derive(Default)]
struct ReadProofs {
    proofs: Proofs,
    groups: Vec<proof::SnapshotGroup>,
}

impl ReadProofs {
    /// Every proof, with the groups' members resolved against the save's `sorted` hashes; a
    /// group naming a place past them is malformed.
    fn resolve(mut self, sorted: &[[u8; 32]]) -> Result<Proofs> {
        for g in self.groups {
            let group = Arc::new(
                g.resolve(sorted)
                    .ok_or_else(|| corrupt("a snapshot's group is malformed"))?,
            );
            for hash in &group.hashes {
                let proof = (group.signer.0, Proof::Group(Arc::clone(&group)));
                self.proofs.entry(*hash).or_default().push(proof);
            }
        }
        Ok(self.proofs)
    }
}

/// Of the proofs offered for `change`, the one by the device its actor names (any, for a
/// change from before signing): another device's group naming its hash proves nothing.
fn proof_for<'a>(change: &Change, found: &'a [SnapshotProof]) -> Option<&'a SnapshotProof> {
    let actor = change.actor_id().to_bytes();
    if actor.len() == guard::ACTOR_LEN {
        found.iter().find(|(signer, _)| signer[..] == actor[..16])
    } else {
        found.iter().find(|(_, p)| p.group().is_none())
    }
}

/// Splits a snapshot's document part into introductions, proofs and the save. A bare save (a
/// snapshot from before signing) has neither.
fn parse_proven(payload: &[u8]) -> Result<(Vec<Intro>, ReadProofs, &[u8])> {
    let bad = || corrupt("a snapshot's proofs are malformed");
    let with_groups = match payload.first() {
        Some(&PROVEN_SNAPSHOT) => false,
        Some(&PROVEN_SNAPSHOT_WITH_GROUPS) => true,
        _ => return Ok((Vec::new(), ReadProofs::default(), payload)),
    };
    let mut r = guard::Reader(&payload[1..]);
    let count = r.u16().ok_or_else(bad)?;
    let mut intros = Vec::with_capacity(usize::from(count));
    for _ in 0..count {
        intros.push(Intro::from_bytes(r.take(INTRO_LEN).ok_or_else(bad)?).map_err(|_| bad())?);
    }
    let mut read = ReadProofs::default();
    if with_groups {
        let count = r.u32().ok_or_else(bad)?;
        for _ in 0..count {
            read.groups
                .push(proof::decode_snapshot_group(&mut r).ok_or_else(bad)?);
        }
    }
    let count = r.u32().ok_or_else(bad)?;
    for _ in 0..count {
        let hash: [u8; 32] = r.array().ok_or_else(bad)?;
        let signer: [u8; 16] = r.array().ok_or_else(bad)?;
        let sig: [u8; 64] = r.array().ok_or_else(bad)?;
        let proof = (signer, Proof::One(ChangeProof(sig)));
        read.proofs.entry(hash).or_default().push(proof);
    }
    Ok((intros, read, r.0))
}
