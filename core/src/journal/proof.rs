//! What proves a change of the couple's space was made by the device that signed it: a
//! signature over the change alone, or one signature over a group of changes (a rollup of the
//! device's own chunks), and the rollup's own format.
//!
//! A group proof costs 64 bytes for the whole run instead of 64 bytes a change: a device
//! catching up on a thousand edits receives a few signatures, not a thousand.

use std::sync::{Arc, OnceLock};

use automerge::Change;

use super::guard::Reader;
use crate::{
    crypto::{
        ChangeProof, DevicePublicKey, GroupScope, INTRO_LEN, Intro, KeyId, verify_change,
        verify_group,
    },
    error::{Error, Result},
};

/// The first byte of a couple's rollup plaintext (a signed chunk's bundle begins with 1 or 2,
/// an Automerge chunk with 0x85).
pub(crate) const ROLLUP_VERSION: u8 = 3;
/// Introductions one rollup may carry.
const MAX_INTROS: usize = 64;
/// Changes one group proof may cover: a rollup is bounded by the relay's chunk limit anyway,
/// and this bounds what a reader allocates for a snapshot's groups.
pub(crate) const MAX_GROUP: usize = 1 << 16;

/// A proof of one change.
#[derive(Clone)]
pub(crate) enum Proof {
    /// A signature over the change's hash alone.
    One(ChangeProof),
    /// A signature over a group of hashes this change's is one of.
    Group(Arc<Group>),
}

impl std::fmt::Debug for Proof {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Proof::One(_) => f.write_str("Proof::One"),
            Proof::Group(g) => write!(f, "Proof::Group({} changes)", g.hashes.len()),
        }
    }
}

impl Proof {
    /// The signature (of the change, or of its group).
    pub(crate) fn signature(&self) -> [u8; 64] {
        match self {
            Proof::One(p) => p.0,
            Proof::Group(g) => g.signature.0,
        }
    }

    /// The group, if this is a group proof.
    pub(crate) fn group(&self) -> Option<&Arc<Group>> {
        match self {
            Proof::One(_) => None,
            Proof::Group(g) => Some(g),
        }
    }

    /// Whether `key` signed the change with hash `hash` in space `space_id` (strictly).
    pub(crate) fn verify(
        &self,
        key: &DevicePublicKey,
        space_id: &[u8; 32],
        hash: &[u8; 32],
    ) -> bool {
        match self {
            Proof::One(p) => verify_change(key, space_id, hash, p).is_ok(),
            Proof::Group(g) => g.contains(hash) && g.verify(key, space_id),
        }
    }
}

/// One signature over many changes' hashes (and the chunks they came in).
pub(crate) struct Group {
    /// The signing device.
    pub(crate) signer: KeyId,
    /// The device id and numbers of the chunks the rollup stood for.
    pub(crate) scope: GroupScope,
    /// Its signature.
    pub(crate) signature: ChangeProof,
    /// The hashes it covers, increasing and without repeats (what was signed).
    pub(crate) hashes: Vec<[u8; 32]>,
    /// The verdict for the key it was checked under: a group covers many changes and is
    /// checked once.
    verdict: OnceLock<([u8; 32], bool)>,
}

impl std::fmt::Debug for Group {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Group")
            .field("signer", &self.signer)
            .field("changes", &self.hashes.len())
            .finish_non_exhaustive()
    }
}

impl Group {
    /// A group over `hashes` (sorted and deduplicated here, as they were signed).
    pub(crate) fn new(
        signer: KeyId,
        scope: GroupScope,
        signature: ChangeProof,
        mut hashes: Vec<[u8; 32]>,
    ) -> Self {
        hashes.sort_unstable();
        hashes.dedup();
        Self {
            signer,
            scope,
            signature,
            hashes,
            verdict: OnceLock::new(),
        }
    }

    /// Whether the group covers `hash`.
    pub(crate) fn contains(&self, hash: &[u8; 32]) -> bool {
        self.hashes.binary_search(hash).is_ok()
    }

    /// Whether `key` signed the group.
    fn verify(&self, key: &DevicePublicKey, space_id: &[u8; 32]) -> bool {
        let key_bytes = key.to_bytes();
        let check =
            || verify_group(key, space_id, &self.scope, &self.hashes, &self.signature).is_ok();
        let (checked_under, ok) = *self.verdict.get_or_init(|| (key_bytes, check()));
        if checked_under == key_bytes {
            ok
        } else {
            check()
        }
    }
}

/// A couple's rollup, opened: the introductions it carries, who signed it, and its changes.
pub(crate) struct Rollup {
    pub(crate) intros: Vec<Intro>,
    pub(crate) group: Arc<Group>,
    pub(crate) changes: Vec<Change>,
}

impl std::fmt::Debug for Rollup {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Rollup")
            .field("intros", &self.intros.len())
            .field("group", &self.group)
            .field("changes", &self.changes.len())
            .finish()
    }
}

/// `version (3) | intros (u16) | intro… | signer (16) | signature (64) | Automerge bundle`.
pub(crate) fn encode_rollup(
    intros: &[Intro],
    signer: KeyId,
    signature: ChangeProof,
    bundle: &[u8],
) -> Vec<u8> {
    let intros = &intros[..intros.len().min(MAX_INTROS)];
    let mut out = Vec::with_capacity(3 + intros.len() * INTRO_LEN + 80 + bundle.len());
    out.push(ROLLUP_VERSION);
    out.extend_from_slice(&u16::try_from(intros.len()).unwrap_or(0).to_be_bytes());
    for intro in intros {
        out.extend_from_slice(&intro.to_bytes());
    }
    out.extend_from_slice(&signer.0);
    out.extend_from_slice(&signature.0);
    out.extend_from_slice(bundle);
    out
}

/// Whether a couple's plaintext is a rollup.
pub(crate) fn is_rollup(plain: &[u8]) -> bool {
    plain.first() == Some(&ROLLUP_VERSION)
}

/// Reads [`encode_rollup`] of a rollup served for `scope`: the group's hashes are those of the
/// changes the bundle holds, and its signature must cover `scope`.
pub(crate) fn decode_rollup(plain: &[u8], scope: GroupScope) -> Result<Rollup> {
    let bad = || Error::Invalid("a rollup is malformed".into());
    let mut r = Reader(plain);
    if r.take(1).ok_or_else(bad)? != [ROLLUP_VERSION] {
        return Err(bad());
    }
    let count = usize::from(r.u16().ok_or_else(bad)?);
    if count > MAX_INTROS {
        return Err(bad());
    }
    let mut intros = Vec::with_capacity(count);
    for _ in 0..count {
        intros.push(Intro::from_bytes(r.take(INTRO_LEN).ok_or_else(bad)?)?);
    }
    let signer: [u8; 16] = r.array().ok_or_else(bad)?;
    let signature: [u8; 64] = r.array().ok_or_else(bad)?;
    let changes = bundle_changes(r.0)?;
    if changes.is_empty() || changes.len() > MAX_GROUP {
        return Err(bad());
    }
    let hashes = changes.iter().map(|c| c.hash().0).collect();
    Ok(Rollup {
        intros,
        group: Arc::new(Group::new(
            KeyId(signer),
            scope,
            ChangeProof(signature),
            hashes,
        )),
        changes,
    })
}

/// The changes of an Automerge bundle. A panic inside Automerge on a crafted bundle refuses
/// it rather than stopping the app at the same rollup on every start.
pub(crate) fn bundle_changes(bytes: &[u8]) -> Result<Vec<Change>> {
    let bad = || Error::Invalid("a rollup's changes are malformed".into());
    std::panic::catch_unwind(|| {
        let bundle = automerge::Bundle::try_from(bytes).ok()?;
        bundle.to_changes().ok()
    })
    .ok()
    .flatten()
    .ok_or_else(bad)
}

/// How a snapshot's group names its changes.
#[derive(Debug)]
enum Members {
    /// Places in the save's change hashes sorted increasing.
    Places(Vec<usize>),
    /// The hashes themselves (a change the save does not hold).
    Hashes(Vec<[u8; 32]>),
}

/// A group read from a snapshot, its members not yet resolved against the save.
#[derive(Debug)]
pub(crate) struct SnapshotGroup {
    signer: KeyId,
    scope: GroupScope,
    signature: ChangeProof,
    members: Members,
}

const BY_PLACE: u8 = 0;
const BY_HASH: u8 = 1;

/// `signer (16) | device (16) | first (u64) | last (u64) | signature (64) | count (u32) | form
/// (u8) | members`: form 0, each member's place in `sorted` (the save's change hashes,
/// increasing) as a LEB128 varint of its distance from the one before (minus one); form 1, the
/// hashes (32 each), when one of them is not in `sorted`.
pub(crate) fn encode_snapshot_group(group: &Group, sorted: &[[u8; 32]], out: &mut Vec<u8>) {
    out.extend_from_slice(&group.signer.0);
    out.extend_from_slice(&group.scope.device);
    out.extend_from_slice(&group.scope.first_seq.to_be_bytes());
    out.extend_from_slice(&group.scope.last_seq.to_be_bytes());
    out.extend_from_slice(&group.signature.0);
    out.extend_from_slice(
        &u32::try_from(group.hashes.len())
            .unwrap_or(u32::MAX)
            .to_be_bytes(),
    );
    let places: Option<Vec<usize>> = group
        .hashes
        .iter()
        .map(|h| sorted.binary_search(h).ok())
        .collect();
    match places {
        Some(places) => {
            out.push(BY_PLACE);
            let mut next = 0usize;
            for place in places {
                let gap = place.saturating_sub(next);
                mend_protocol::varint::write(out, u64::try_from(gap).unwrap_or(u64::MAX));
                next = place.saturating_add(1);
            }
        }
        None => {
            out.push(BY_HASH);
            for hash in &group.hashes {
                out.extend_from_slice(hash);
            }
        }
    }
}

/// Reads [`encode_snapshot_group`]; `None` if malformed.
pub(crate) fn decode_snapshot_group(r: &mut Reader<'_>) -> Option<SnapshotGroup> {
    let signer: [u8; 16] = r.array()?;
    let scope = GroupScope {
        device: r.array()?,
        first_seq: u64::from_be_bytes(r.array()?),
        last_seq: u64::from_be_bytes(r.array()?),
    };
    let signature: [u8; 64] = r.array()?;
    let count = usize::try_from(r.u32()?).ok()?;
    // Each member takes a byte at least.
    if count == 0 || count > MAX_GROUP || count > r.0.len() {
        return None;
    }
    let members = match r.take(1)? {
        [BY_PLACE] => {
            let mut places = Vec::with_capacity(count);
            let mut next = 0usize;
            for _ in 0..count {
                let (gap, used) = mend_protocol::varint::read(r.0).ok()?;
                r.take(used)?;
                let place = next.checked_add(usize::try_from(gap).ok()?)?;
                places.push(place);
                next = place.checked_add(1)?;
            }
            Members::Places(places)
        }
        [BY_HASH] => {
            if count.checked_mul(32)? > r.0.len() {
                return None;
            }
            let mut hashes: Vec<[u8; 32]> = Vec::with_capacity(count);
            for _ in 0..count {
                let hash: [u8; 32] = r.array()?;
                if hashes.last().is_some_and(|last| *last >= hash) {
                    return None;
                }
                hashes.push(hash);
            }
            Members::Hashes(hashes)
        }
        _ => return None,
    };
    Some(SnapshotGroup {
        signer: KeyId(signer),
        scope,
        signature: ChangeProof(signature),
        members,
    })
}

impl SnapshotGroup {
    /// The group, its places read in the save's `sorted` hashes; `None` past their end.
    pub(crate) fn resolve(self, sorted: &[[u8; 32]]) -> Option<Group> {
        let hashes = match self.members {
            Members::Places(places) => places
                .into_iter()
                .map(|p| sorted.get(p).copied())
                .collect::<Option<Vec<_>>>()?,
            Members::Hashes(hashes) => hashes,
        };
        Some(Group::new(self.signer, self.scope, self.signature, hashes))
    }
}
