//! Epochs: a couple's journal moving to new secrets (docs/security.md, "A lost phone").
//!
//! A device that rotates (to shut out a removed device, or because its partner asked to
//! forget) makes new space secrets and writes an announcement into the old couple's document
//! under `epoch:<n>`: where it cut the old history (the heads), the devices it removed, and one
//! box per remaining device holding the new secrets, sealed to that device's key
//! ([`crate::crypto::seal_to_device`]). Each remaining device, once it holds the announcement,
//! opens its box, builds the new epoch's first document itself from the old one at the cut
//! ([`crate::doc::rebuild`]: no history, removed records without their words, no
//! certificates), carries over what it wrote after the cut, and from then on syncs the new
//! spaces. A device without a box learns that it was removed.
//!
//! Two rotations to the same epoch, made apart, meet in one key: the one Automerge keeps is
//! the one every device follows, and the other's author rotates again once moved if what it
//! wanted (a device shut out) still holds.
//!
//! A partner who lost every device rejoins through the other ([`Journal::rotate_for_rejoin`]):
//! the announcement removes all of their devices and names their new identity key, which only
//! the other partner's announcement may do.

use std::collections::{BTreeMap, BTreeSet, HashMap, HashSet};

use automerge::{
    ChangeHash, ObjId, ObjType, Prop, ROOT, ReadDoc, ScalarValue, Value,
    transaction::{Transactable, Transaction},
};
use zeroize::Zeroizing;

use super::{Journal, registry};
use crate::{
    crypto::{
        DeviceCertificate, DeviceKey, IdentityKey, Intro, KeyId, PartnerIdentity, Signer,
        SpaceSecret, open_from_device, seal_to_device,
    },
    doc::{SpaceDoc, rebuild},
    error::{Error, Result},
    ids::{DeviceId, PartnerId},
    model::Kind,
    store::Space,
};

/// Root keys of announcements: `epoch:<n>`.
pub(crate) const EPOCH_KEY: &str = "epoch:";
/// The epoch this database is in (absent: 0).
const META_EPOCH: &str = "epoch";
/// The box this device moved with, and the old couple's space id it was sealed under: a
/// keyring the app did not store again after the move opens it again
/// ([`Journal::epoch_secrets`]). Sealed to the device key, which the database never holds.
const META_EPOCH_BOX: &str = "epoch_box";
const META_EPOCH_FROM: &str = "epoch_from";
/// The device id that box was sealed under, when it is not the journal's own (see
/// [`Journal::certified_device`]).
const META_EPOCH_BOX_DEVICE: &str = "epoch_box_device";
/// The hash of this epoch's first change in the couple's space.
const META_EPOCH_BASE: &str = "epoch_base";
/// An epoch a restore from a keyring that named none started in without anything showing it
/// was this partner's (the relay offered no other): its number, so a move past it ends it.
const META_EPOCH_UNCONFIRMED: &str = "epoch_unconfirmed";
/// The old epochs' space secrets, sealed to this device's key, kept until every device that
/// moved has shown up in the new epoch (or [`RETIRE_GRACE_MS`] passed): then the relay is
/// asked to delete the old spaces ([`Journal::retirement`]).
const META_RETIRE: &str = "epoch_retire";
/// The devices the newest announcement sealed a box to (comma-separated: each one's
/// introduction in hex as the old epoch knew it, or its id alone), and when this device moved.
/// A rotation also seals a box to those of them not introduced in this epoch yet: they are
/// still on their way here.
const META_RETIRE_WAIT: &str = "epoch_wait";
const META_RETIRE_AT: &str = "epoch_at";
const RETIRE_CONTEXT: &[u8] = b"mend/v1/retire\0";
/// Set ("1") when the move into this epoch was a rejoin: the old epoch stays at the relay for
/// the whole grace, so that a device of the rejoined partner that still exists reads the
/// announcement and says that a new device came in as its partner (rather than only that the
/// journal moved on).
const META_RETIRE_HOLD: &str = "epoch_hold";
/// Whether the move into this epoch rotated this partner's personal space ("1") or not.
const META_PERSONAL_ROTATED: &str = "epoch_personal_rotated";
/// The personal space's secret from this partner's newest own move, sealed to the device key:
/// a later move by the other partner carries none, so a keyring not stored again across
/// both takes it from here ([`Journal::epoch_secrets`]).
const META_PERSONAL_BOX: &str = "epoch_personal_box";
const PERSONAL_CONTEXT: &[u8] = b"mend/v1/personal\0";
/// Devices this device asked to remove (comma-separated ids): when another device's rotation
/// won at the relay and still sealed a box to one of them, this device rotates again.
const META_WANT_REMOVED: &str = "epoch_want_removed";
/// How long an old epoch's spaces wait at the relay for a device that has not moved: 30
/// days. A device away longer finds them retired and is paired again.
pub const RETIRE_GRACE_MS: i64 = 30 * 24 * 60 * 60 * 1000;
const BOX_CONTEXT: &[u8] = b"mend/v1/epoch\0";
const SECRETS_VERSION: u8 = 1;

/// A new epoch's secrets, as a box carries them to one device: the couple's secret for every
/// remaining device, and a new personal secret for the rotating partner's own devices when
/// that partner's space rotates too.
#[derive(Clone, PartialEq, Eq)]
pub struct EpochSecrets {
    /// The epoch they open.
    pub epoch: u32,
    /// The couple's space secret in that epoch.
    pub couple: SpaceSecret,
    /// This partner's new personal secret, when it changed.
    pub personal: Option<SpaceSecret>,
}

impl std::fmt::Debug for EpochSecrets {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("EpochSecrets")
            .field("epoch", &self.epoch)
            .field("personal", &self.personal.is_some())
            .finish_non_exhaustive()
    }
}

impl EpochSecrets {
    fn encode(&self) -> Zeroizing<Vec<u8>> {
        let mut out = Zeroizing::new(Vec::with_capacity(1 + 4 + 1 + 64));
        out.push(SECRETS_VERSION);
        out.extend_from_slice(&self.epoch.to_be_bytes());
        out.extend_from_slice(self.couple.expose());
        match &self.personal {
            Some(p) => {
                out.push(1);
                out.extend_from_slice(p.expose());
            }
            None => out.push(0),
        }
        out
    }

    fn decode(bytes: &[u8]) -> Result<Self> {
        let bad = || Error::Tampered;
        match bytes {
            [SECRETS_VERSION, rest @ ..]
                if rest.len() == 4 + 32 + 1 || rest.len() == 4 + 64 + 1 =>
            {
                let epoch = u32::from_be_bytes(rest[..4].try_into().map_err(|_| bad())?);
                let couple = SpaceSecret::from_slice(&rest[4..36])?;
                let personal = match (rest[36], rest.len()) {
                    (0, 37) => None,
                    (1, 69) => Some(SpaceSecret::from_slice(&rest[37..69])?),
                    _ => return Err(bad()),
                };
                Ok(Self {
                    epoch,
                    couple,
                    personal,
                })
            }
            _ => Err(bad()),
        }
    }
}

/// What the couple's document says of the next epoch, for this device.
#[derive(Debug)]
pub enum EpochNews {
    /// Nothing: this device is in the newest epoch.
    Current,
    /// A new epoch waits, and this device holds its secrets.
    Move(Box<EpochMove>),
    /// A new epoch began without this device: it was removed.
    Removed {
        /// The partner whose device rotated.
        by: PartnerId,
        /// When (that device's clock, Unix ms).
        at: i64,
        /// The other partner let a new device in as this device's partner (a rejoin): if
        /// that was not this partner, they must hear of it at once.
        rejoined: bool,
        /// For a rejoin: when a device of this partner had cancelled the ask, if one had and
        /// the rejoin went ahead without having seen it.
        despite_cancel: Option<i64>,
        /// For a rejoin: it came before this device had been shown the ask for half the wait
        /// (by this device's clock and wait), or without this device having been shown it.
        early: bool,
    },
}

/// A move this device can make.
#[derive(Debug)]
pub struct EpochMove {
    /// The new secrets (this device's box, opened).
    pub secrets: EpochSecrets,
    /// Where the couple's history was cut.
    heads: Vec<ChangeHash>,
    /// Where this partner's personal history was cut, when it rotates too.
    personal_heads: Option<Vec<ChangeHash>>,
    /// The devices removed.
    pub removed: Vec<DeviceId>,
    /// This device's box and the old couple's space id (kept to open it again).
    sealed: Option<(Vec<u8>, [u8; 32])>,
    /// The device that rotated.
    rotator: Option<DeviceId>,
    /// The devices the announcement sealed a box to: once all of them are introduced in the
    /// new epoch, the old one can go.
    members: Vec<DeviceId>,
    /// A partner rejoining with a new identity key, vouched for by the other, and when.
    rekey: Option<(PartnerId, IdentityKey, i64)>,
}

/// An old epoch's space, to delete at the relay ([`Journal::retirement`]).
#[derive(Debug)]
pub struct OldSpace {
    /// Which space it was.
    pub space: Space,
    /// Its secret, from which the relay address and token derive.
    pub secret: SpaceSecret,
}

/// Why a rotation happens.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Reason {
    /// Devices of this partner are shut out.
    RemoveDevices,
    /// The partner asked that removed records' words be forgotten.
    Forget,
}

fn box_context(space_id: &[u8; 32], epoch: u32, device: DeviceId) -> Vec<u8> {
    let mut c = Vec::with_capacity(BOX_CONTEXT.len() + 32 + 4 + 16);
    c.extend_from_slice(BOX_CONTEXT);
    c.extend_from_slice(space_id);
    c.extend_from_slice(&epoch.to_be_bytes());
    c.extend_from_slice(device.as_bytes());
    c
}

fn hashes_of(list: &[String]) -> Result<Vec<ChangeHash>> {
    list.iter()
        .map(|h| {
            let mut out = [0u8; 32];
            hex::decode_to_slice(h, &mut out).map_err(|_| Error::Tampered)?;
            Ok(ChangeHash(out))
        })
        .collect()
}

/// An announcement as read from the document.
struct Announcement {
    by: PartnerId,
    device: Option<DeviceId>,
    at: i64,
    heads: Vec<ChangeHash>,
    personal: Option<(PartnerId, Vec<ChangeHash>)>,
    removed: Vec<DeviceId>,
    boxes: BTreeMap<String, Vec<u8>>,
    /// The other partner, who lost every device, rejoins with this new identity key.
    rekey: Option<(PartnerId, IdentityKey)>,
}

fn read_str_list(doc: &automerge::Automerge, obj: &ObjId, key: &str) -> Vec<String> {
    match doc.get(obj, key) {
        Ok(Some((Value::Object(ObjType::List), list))) => (0..doc.length(&list))
            .filter_map(|i| match doc.get(&list, i) {
                Ok(Some((Value::Scalar(s), _))) => match s.as_ref() {
                    ScalarValue::Str(s) => Some(s.to_string()),
                    _ => None,
                },
                _ => None,
            })
            .collect(),
        _ => Vec::new(),
    }
}

fn read_scalar(doc: &automerge::Automerge, obj: &ObjId, key: &str) -> Option<ScalarValue> {
    match doc.get(obj, key) {
        Ok(Some((Value::Scalar(s), _))) => Some(s.into_owned()),
        _ => None,
    }
}

/// Every announcement of `epoch` written at once (by devices that rotated apart), readable
/// or not.
fn announcements(doc: &SpaceDoc, epoch: u32) -> Result<Vec<Result<Announcement>>> {
    let am = doc.am();
    let key = format!("{EPOCH_KEY}{epoch}");
    Ok(am
        .get_all(ROOT, key.as_str())?
        .into_iter()
        .filter_map(|(value, obj)| match value {
            Value::Object(ObjType::Map) => Some(read_announcement_at(am, &obj)),
            _ => None,
        })
        .collect())
}

fn read_announcement_at(am: &automerge::Automerge, obj: &ObjId) -> Result<Announcement> {
    let by = match read_scalar(am, obj, "by") {
        Some(ScalarValue::Str(s)) => s.parse().map_err(|_| Error::Tampered)?,
        _ => return Err(Error::Tampered),
    };
    let device = match read_scalar(am, obj, "device") {
        Some(ScalarValue::Str(s)) => s.parse().ok(),
        _ => None,
    };
    let at = match read_scalar(am, obj, "at") {
        Some(ScalarValue::Int(at)) => at,
        _ => 0,
    };
    // A rejoin keeps its cut under `cut` and none under `heads`: a build that does not know
    // rejoins finds it unreadable and passes it over, rather than following it without the
    // new identity (and splitting from the devices that do).
    let cut_key = if read_scalar(am, obj, "rejoin").is_some() {
        "cut"
    } else {
        "heads"
    };
    let heads = hashes_of(&read_str_list(am, obj, cut_key))?;
    if heads.is_empty() {
        return Err(Error::Tampered);
    }
    let personal = match read_scalar(am, obj, "personal") {
        Some(ScalarValue::Str(s)) => Some((
            s.parse().map_err(|_| Error::Tampered)?,
            hashes_of(&read_str_list(am, obj, "personal_heads"))?,
        )),
        _ => None,
    };
    let removed = read_str_list(am, obj, "removed")
        .iter()
        .filter_map(|d| d.parse().ok())
        .collect();
    let rekey = match (
        read_scalar(am, obj, "rejoin"),
        read_scalar(am, obj, "rejoin_key"),
    ) {
        (None, None) => None,
        (Some(ScalarValue::Str(partner)), Some(ScalarValue::Bytes(key))) => Some((
            partner.parse().map_err(|_| Error::Tampered)?,
            <[u8; 32]>::try_from(key.as_slice())
                .map_err(|_| Error::Tampered)
                .and_then(|k| IdentityKey::from_bytes(&k).map_err(|_| Error::Tampered))?,
        )),
        _ => return Err(Error::Tampered),
    };
    let mut boxes = BTreeMap::new();
    if let Some((Value::Object(ObjType::Map), b)) = am.get(obj, "boxes")? {
        for device in am.keys(&b) {
            if let Ok(Some((Value::Scalar(s), _))) = am.get(&b, device.as_str())
                && let ScalarValue::Bytes(bytes) = s.as_ref()
            {
                boxes.insert(device, bytes.clone());
            }
        }
    }
    Ok(Announcement {
        by,
        device,
        at,
        heads,
        personal,
        removed,
        boxes,
        rekey,
    })
}

impl Announcement {
    /// Its id, which the relay keeps for the first one offered ([`Journal::epoch_offer`]): a
    /// hash of everything it says, so that no other announcement (a copy with other boxes)
    /// can pass for the one kept.
    fn id(&self) -> [u8; 32] {
        use sha2::{Digest, Sha256};
        let mut h = Sha256::new();
        let mut put = |bytes: &[u8]| {
            h.update((bytes.len() as u64).to_be_bytes());
            h.update(bytes);
        };
        put(b"mend/v1/announcement");
        put(self.by.as_bytes());
        put(self.device.as_ref().map_or(&[][..], |d| d.as_bytes()));
        put(&self.at.to_be_bytes());
        for head in &self.heads {
            put(&head.0);
        }
        put(b"personal");
        if let Some((partner, heads)) = &self.personal {
            put(partner.as_bytes());
            for head in heads {
                put(&head.0);
            }
        }
        put(b"removed");
        for device in &self.removed {
            put(device.as_bytes());
        }
        put(b"boxes");
        for (device, sealed) in &self.boxes {
            put(device.as_bytes());
            put(sealed);
        }
        if let Some((partner, key)) = &self.rekey {
            put(b"rejoin");
            put(partner.as_bytes());
            put(&key.to_bytes());
        }
        h.finalize().into()
    }
}

impl Journal {
    /// The epoch this journal is in: 0 until its first rotation.
    pub fn epoch(&self) -> Result<u32> {
        Ok(self
            .store
            .meta(META_EPOCH)?
            .and_then(|e| e.parse().ok())
            .unwrap_or(0))
    }

    /// The secrets of the epoch this journal is in, from the box it moved with: for a keyring
    /// the app did not store again after a move (the app was killed in between). `None` in
    /// epoch 0.
    pub fn epoch_secrets(&self, device_key: &DeviceKey) -> Result<Option<EpochSecrets>> {
        let epoch = self.epoch()?;
        let (Some(sealed), Some(from)) = (
            self.store.meta(META_EPOCH_BOX)?,
            self.store.meta(META_EPOCH_FROM)?,
        ) else {
            return Ok(None);
        };
        let sealed = hex::decode(sealed).map_err(|_| Error::Corrupt("an epoch box".into()))?;
        let mut space_id = [0u8; 32];
        hex::decode_to_slice(from, &mut space_id)
            .map_err(|_| Error::Corrupt("an epoch box".into()))?;
        let sealed_under = match self.store.meta(META_EPOCH_BOX_DEVICE)? {
            Some(id) if !id.is_empty() => id
                .parse()
                .map_err(|_| Error::Corrupt("an epoch box".into()))?,
            _ => self.device,
        };
        let plain = open_from_device(
            device_key,
            &box_context(&space_id, epoch, sealed_under),
            &sealed,
        )?;
        let mut secrets = EpochSecrets::decode(&plain)?;
        if secrets.epoch != epoch {
            return Err(Error::Corrupt("an epoch box of another epoch".into()));
        }
        // The personal secret is never the box's own: one from the other partner's
        // announcement is not theirs to give, and one from an earlier own move would be lost
        // behind a later move of theirs.
        secrets.personal = match self.store.meta(META_PERSONAL_BOX)? {
            // One that does not open costs the catch-up its personal secret, not the open.
            Some(sealed) if !sealed.is_empty() => hex::decode(sealed)
                .ok()
                .and_then(|sealed| open_from_device(device_key, PERSONAL_CONTEXT, &sealed).ok())
                .and_then(|plain| SpaceSecret::from_slice(&plain).ok())
                .or_else(|| {
                    tracing::warn!("the personal space's box does not open");
                    None
                }),
            // Moved by a version that kept no such box: the box's own, when the move was
            // this partner's own rotation of it.
            _ if self.store.meta(META_PERSONAL_ROTATED)?.as_deref() == Some("1") => {
                secrets.personal
            }
            _ => None,
        };
        Ok(Some(secrets))
    }

    /// This epoch's first change in the couple's space, which the guard takes as it is.
    pub(crate) fn epoch_base(&self) -> Result<Option<ChangeHash>> {
        Ok(self.store.meta(META_EPOCH_BASE)?.and_then(|h| {
            let mut out = [0u8; 32];
            hex::decode_to_slice(h, &mut out)
                .ok()
                .map(|()| ChangeHash(out))
        }))
    }

    /// Where this journal stands in its couple's epochs, for a device it pairs: the epoch
    /// and its first change in the couple's space (`None` in epoch 0).
    pub fn epoch_start(&self) -> Result<Option<(u32, [u8; 32])>> {
        let epoch = self.epoch()?;
        Ok(match (epoch, self.epoch_base()?) {
            (0, _) | (_, None) => None,
            (epoch, Some(base)) => Some((epoch, base.0)),
        })
    }

    /// The epoch this journal is in, for the keyring whose couple secret is that epoch's:
    /// unknown past epoch 0 without a recorded first change, and in an epoch a restore could
    /// not confirm ([`Journal::mark_epoch_unconfirmed`]), so that a later restore works it
    /// out again rather than trusting a guess.
    pub fn keyring_epoch(&self) -> Result<crate::KeyringEpoch> {
        let epoch = self.epoch()?;
        if self.store.meta(META_EPOCH_UNCONFIRMED)? == Some(epoch.to_string()) {
            return Ok(crate::KeyringEpoch::Unknown);
        }
        Ok(match (epoch, self.epoch_base()?) {
            (0, _) => crate::KeyringEpoch::Known(None),
            (epoch, Some(base)) => crate::KeyringEpoch::Known(Some((epoch, base.0))),
            (_, None) => crate::KeyringEpoch::Unknown,
        })
    }

    /// Marks the epoch this journal is in as one a restore took without confirming it: its
    /// keyring names no epoch until the journal moves to another.
    pub fn mark_epoch_unconfirmed(&mut self) -> Result<()> {
        let epoch = self.epoch()?.to_string();
        self.store.set_meta(&[(META_EPOCH_UNCONFIRMED, &epoch)])
    }

    /// Whether the couple's document holds this epoch's first change (true in epoch 0): a
    /// journal started in an epoch waits for it from the relay, and reads nothing of the
    /// epoch without it.
    pub fn holds_epoch_base(&self) -> Result<bool> {
        Ok(match self.epoch_base()? {
            None => true,
            Some(base) => self
                .doc(Space::Couple)?
                .am()
                .get_change_by_hash(&base)
                .is_some(),
        })
    }

    /// A journal joined through a device in a later epoch starts there: the epoch's number,
    /// and its first change, which arrives from the relay like any other.
    pub fn start_in_epoch(&mut self, epoch: u32, base: [u8; 32]) -> Result<()> {
        self.step(|j| {
            j.store.set_meta(&[
                (META_EPOCH, &epoch.to_string()),
                (META_EPOCH_BASE, &hex::encode(base)),
            ])?;
            j.load_roster()
        })
    }

    /// The epochs the couple's document says it may be in, each with its first change's
    /// hash: for a journal rebuilt from what the relay holds (a restore from the keyring),
    /// whose metadata knows no epoch yet. Empty in epoch 0.
    ///
    /// A first change is one made on the genesis alone by an epoch's actor (its number is in
    /// the actor). Nothing signs it, and anyone with the couple's secret can push one, so
    /// these are only candidates, the one with the most history after it first:
    /// [`Journal::shows_own_work`] tells the one this partner's own devices built on.
    pub fn epoch_candidates(&self) -> Result<Vec<(u32, [u8; 32])>> {
        let am = self.doc(Space::Couple)?.am();
        let changes = am.get_changes(&[]);
        let Some(genesis) = changes
            .iter()
            .find(|c| c.deps().is_empty())
            .map(|c| c.hash())
        else {
            return Ok(Vec::new());
        };
        let firsts: Vec<(u32, ChangeHash)> = changes
            .iter()
            .filter(|c| c.deps() == [genesis])
            .filter_map(|c| Some((rebuild::epoch_of_actor(c.actor_id())?, c.hash())))
            .collect();
        // The one most of the history was built on first: an epoch number is anyone's to
        // choose, and a first change pushed to crowd out the real one has little after it.
        let mut ranked: Vec<(usize, u32, [u8; 32])> = firsts
            .iter()
            .map(|(n, first)| {
                let mut after: HashSet<ChangeHash> = HashSet::from([*first]);
                for c in &changes {
                    if c.deps().iter().any(|d| after.contains(d)) {
                        after.insert(c.hash());
                    }
                }
                (after.len(), *n, first.0)
            })
            .collect();
        ranked.sort_by(|a, b| b.cmp(a));
        Ok(ranked.into_iter().map(|(_, n, h)| (n, h)).collect())
    }

    /// Whether this journal, filled by a checked sync, holds work of this partner's own
    /// devices in the epoch it started in: the roster gives this partner `identity`, and a
    /// change one of its devices signed descends from the epoch's first change (in epoch 0,
    /// any such change). The first change itself is taken unchecked (nobody signs it), so a
    /// restore that picked it from what the relay holds needs this partner's own devices to
    /// have built on it. (They never build on one that is not their epoch's: devices refuse
    /// a change under an epoch's actor anywhere but as the base they moved to.) A device
    /// that joined the epoch may also hold changes it made on the genesis before the first
    /// change reached it; those neither vouch nor count against.
    pub fn shows_own_work(&self, identity: &IdentityKey) -> Result<bool> {
        if self.roster.identity_of(self.me) != Some(*identity) {
            return Ok(false);
        }
        let mine = self.roster.keys_of(self.me);
        let am = self.doc(Space::Couple)?.am();
        let base = self.roster.base;
        let mut after: HashSet<ChangeHash> = base.into_iter().collect();
        let mut own = false;
        for change in am.get_changes(&[]) {
            let descends = base.is_none() || change.deps().iter().any(|d| after.contains(d));
            if descends && base.is_some() {
                after.insert(change.hash());
            }
            let actor = change.actor_id().to_bytes();
            let by_me = actor.len() == super::guard::ACTOR_LEN
                && actor
                    .get(..16)
                    .and_then(|k| <[u8; 16]>::try_from(k).ok())
                    .is_some_and(|k| mine.contains(&KeyId(k)));
            own |= by_me && descends;
        }
        Ok(own)
    }

    /// The couple's space id this journal syncs (that of its epoch), once it signs.
    pub fn couple_space_id(&self) -> Option<[u8; 32]> {
        self.couple_space
    }

    /// Whether this journal holds an announcement of epoch `epoch`.
    pub fn announced(&self, epoch: u32) -> Result<bool> {
        Ok(announcements(self.doc(Space::Couple)?, epoch)?
            .iter()
            .any(Result::is_ok))
    }

    /// Every device introduced here (its certificate checked), with its partner: the devices
    /// that sign the couple's changes, so the ones a new epoch's secrets go to.
    fn members(&mut self) -> Result<Vec<(PartnerId, DeviceCertificate)>> {
        if self.couple_space.is_none() {
            return Err(Error::Invalid(
                "this device does not sign yet: sync first".into(),
            ));
        }
        self.load_roster()?;
        let mut members: Vec<(PartnerId, DeviceCertificate)> = self
            .roster
            .intros()
            .into_iter()
            .map(|i| (i.cert.partner, i.cert))
            .collect();
        // By id and key: a device on its way keeps its place beside another key under its id,
        // and beside its own key under another id (which a removal then finds).
        for intro in self.expected()?.into_iter().filter_map(Result::ok) {
            if !members.iter().any(|(_, c)| {
                c.device_key == intro.cert.device_key && c.device == intro.cert.device
            }) {
                members.push((intro.cert.partner, intro.cert));
            }
        }
        Ok(members)
    }

    /// The device id this device's certificate names, under which a rotation seals its box.
    /// A relay rewind gives the journal a new id (`change_device`), but its certificate keeps
    /// the old one until the next epoch certifies it again.
    pub(crate) fn certified_device(&self) -> DeviceId {
        self.signer
            .as_ref()
            .map_or(self.device, |s| s.intro.cert.device)
    }

    /// The devices the announcement this journal moved with sealed a box to: the ones that
    /// follow into this epoch (empty in epoch 0).
    pub fn epoch_members(&self) -> Result<Vec<DeviceId>> {
        Ok(self
            .expected()?
            .into_iter()
            .map(|e| match e {
                Ok(intro) => intro.cert.device,
                Err(id) => id,
            })
            .collect())
    }

    /// The devices introduced in this epoch (as the roster last loaded says).
    fn introduced(&self) -> HashSet<DeviceId> {
        self.roster
            .intros()
            .into_iter()
            .map(|i| i.cert.device)
            .collect()
    }

    /// The devices the announcement this journal moved with sealed a box to that are not
    /// introduced in this epoch yet: on their way here (or never coming).
    pub(super) fn awaited(&self) -> Vec<Intro> {
        let here = self.introduced();
        self.expected()
            .unwrap_or_default()
            .into_iter()
            .filter_map(Result::ok)
            .filter(|i| !here.contains(&i.cert.device))
            .collect()
    }

    /// The devices the announcement this journal moved with sealed a box to: each one's
    /// introduction, or (when this device never knew it) its id.
    fn expected(&self) -> Result<Vec<std::result::Result<Intro, DeviceId>>> {
        let wait = self.store.meta(META_RETIRE_WAIT)?.unwrap_or_default();
        Ok(wait
            .split(',')
            .filter_map(|entry| {
                let bytes = hex::decode(entry).ok()?;
                match Intro::from_bytes(&bytes) {
                    Ok(intro) => Some(Ok(intro)),
                    Err(_) => <[u8; 16]>::try_from(bytes.as_slice())
                        .ok()
                        .map(|id| Err(DeviceId::from_uuid(uuid::Uuid::from_bytes(id)))),
                }
            })
            .collect())
    }

    /// Whether the couple's document holds the other partner's rejoin of this partner for the
    /// next epoch: this device is being shut out (the relay confirms it at the next round)
    /// and has no ask left to cancel.
    pub fn replaced_here(&self) -> Result<bool> {
        let next = self.epoch()?.saturating_add(1);
        Ok(announcements(self.doc(Space::Couple)?, next)?
            .into_iter()
            .flatten()
            .any(|a| a.by != self.me && a.rekey.is_some_and(|(partner, _)| partner == self.me)))
    }

    /// Starts a new epoch: new secrets for the couple's space (and for this partner's personal
    /// space, so a removed device of this partner reads neither), sealed to every remaining
    /// device in an announcement written to the couple's document. `remove` names devices of
    /// this partner to shut out (never this one); `Forget` removes none and rotates so that
    /// removed records' words leave every database. This device moves like every other, once
    /// the relay holds the announcement ([`Journal::epoch_news`]).
    pub fn rotate(&mut self, reason: Reason, remove: &[DeviceId]) -> Result<[u8; 32]> {
        self.rotate_with(reason, remove, None)
    }

    /// Starts a new epoch for the other partner, who lost every device and asks from a new one
    /// to rejoin, once this partner's ask has stood for the wait without being cancelled
    /// ([`Journal::ask_rejoin`]): every device of theirs is removed, and in the new epoch their identity is
    /// `identity` (the new device's), vouched for by this partner. Their words stay theirs;
    /// their personal space, which only their lost devices could read, starts empty.
    pub fn rotate_for_rejoin(
        &mut self,
        partner: PartnerId,
        identity: IdentityKey,
    ) -> Result<[u8; 32]> {
        self.ready()?;
        if partner == self.me || !self.partners().iter().any(|p| p.id == partner) {
            return Err(Error::Invalid(
                "only the other partner of this journal can rejoin through this device".into(),
            ));
        }
        if let Some(why) = self.rejoin_refusal(partner)? {
            return Err(Error::Invalid(why));
        }
        let members = self.members()?;
        if members
            .iter()
            .any(|(_, c)| c.device_key.to_bytes() == identity.to_bytes())
            || self.roster.identity_of(self.me) == Some(identity)
            || self.roster.identity_of(partner) == Some(identity)
            || identity.partner_id() == partner
        {
            return Err(Error::Invalid("that key is already in use here".into()));
        }
        let lost = rejoin_removals(&members, partner);
        self.rotate_with(Reason::RemoveDevices, &lost, Some((partner, identity)))
    }

    fn rotate_with(
        &mut self,
        reason: Reason,
        remove: &[DeviceId],
        rekey: Option<(PartnerId, IdentityKey)>,
    ) -> Result<[u8; 32]> {
        self.ready()?;
        let (me, device, now) = (self.me, self.device, self.now());
        let rejoining = rekey.map(|(p, _)| p);
        if reason == Reason::RemoveDevices && remove.is_empty() && rekey.is_none() {
            return Err(Error::Invalid("name a device to remove".into()));
        }
        if remove.contains(&device) {
            return Err(Error::Invalid(
                "this device cannot remove itself: remove it from another of your devices".into(),
            ));
        }
        let epoch = self.epoch()?.saturating_add(1);
        if announcements(self.doc(Space::Couple)?, epoch)?
            .iter()
            .any(Result::is_ok)
        {
            return Err(Error::Invalid(
                "another device has started a new epoch: sync, then try again".into(),
            ));
        }
        let members = self.members()?;
        // A box goes only to devices introduced here: a partner none of whose devices is would
        // be shut out of the new epoch altogether.
        for partner in self.partners() {
            if Some(partner.id) != rejoining && !members.iter().any(|(p, _)| *p == partner.id) {
                return Err(Error::Invalid(
                    "this device has not yet heard from every partner's device: sync, then try \
                     again"
                        .into(),
                ));
            }
        }
        // A device never introduced here gets no box anyway; one of the other partner's is
        // not this partner's to remove. An id that also names a device of this partner's is:
        // the other partner can certify a device of theirs under any id it has seen, and would
        // otherwise keep this partner's lost phone in the journal for good.
        for gone in remove {
            let whose = |mine: bool| {
                members
                    .iter()
                    .any(|(p, c)| c.device == *gone && (*p == me || Some(*p) == rejoining) == mine)
            };
            if whose(false) && !whose(true) {
                return Err(Error::PermissionDenied(
                    "only one of your own devices can be removed".into(),
                ));
            }
        }
        let Some(space_id) = self.couple_space else {
            return Err(Error::Invalid("sync first".into()));
        };
        let couple = SpaceSecret::generate()?;
        let personal = SpaceSecret::generate()?;
        let mut boxes = Vec::new();
        for (partner, cert) in sealed_to(&members, remove) {
            let secrets = EpochSecrets {
                epoch,
                couple: couple.clone(),
                personal: (partner == me).then(|| personal.clone()),
            };
            let sealed = seal_to_device(
                &cert.device_key,
                &box_context(&space_id, epoch, cert.device),
                &secrets.encode(),
            )?;
            boxes.push((cert.device.to_string(), sealed));
        }
        let heads = self.doc(Space::Couple)?.heads();
        let personal_heads = self.doc(Space::Personal)?.heads();
        let hex_list = |h: &[ChangeHash]| h.iter().map(|h| hex::encode(h.0)).collect::<Vec<_>>();
        let (heads_hex, personal_hex) = (hex_list(&heads), hex_list(&personal_heads));
        let removed: Vec<String> = remove.iter().map(ToString::to_string).collect();
        let key = format!("{EPOCH_KEY}{epoch}");
        let id = Announcement {
            by: me,
            device: Some(device),
            at: now,
            heads: heads.clone(),
            personal: Some((me, personal_heads.clone())),
            removed: remove.to_vec(),
            boxes: boxes.iter().cloned().collect(),
            rekey,
        }
        .id();
        let (_, bytes) = self.doc_mut(Space::Couple)?.transact(|tx, _| {
            let obj = tx.put_object(ROOT, key.as_str(), ObjType::Map)?;
            tx.put(&obj, "by", me.to_string())?;
            tx.put(&obj, "device", device.to_string())?;
            tx.put(&obj, "at", now)?;
            let empty = Vec::new();
            let (heads_list, cut_list) = if rekey.is_some() {
                (&empty, &heads_hex)
            } else {
                (&heads_hex, &empty)
            };
            for (name, list) in [
                ("heads", heads_list),
                ("cut", cut_list),
                ("personal_heads", &personal_hex),
                ("removed", &removed),
            ] {
                if name == "cut" && rekey.is_none() {
                    continue;
                }
                let l = tx.put_object(&obj, name, ObjType::List)?;
                for (i, item) in list.iter().enumerate() {
                    tx.insert(&l, i, item.as_str())?;
                }
            }
            tx.put(&obj, "personal", me.to_string())?;
            let b = tx.put_object(&obj, "boxes", ObjType::Map)?;
            for (device, sealed) in &boxes {
                tx.put(&b, device.as_str(), ScalarValue::Bytes(sealed.clone()))?;
            }
            if let Some((partner, key)) = &rekey {
                tx.put(&obj, "rejoin", partner.to_string())?;
                tx.put(
                    &obj,
                    "rejoin_key",
                    ScalarValue::Bytes(key.to_bytes().to_vec()),
                )?;
            }
            Ok(())
        })?;
        let changes = bytes.map(|b| vec![(Space::Couple, b)]).unwrap_or_default();
        // A lost phone's removal, a forgetting: a power cut must not take back what the
        // partner was told is done (or keep the announcement and lose the note that makes the
        // removal again should another rotation win), so both commits are fsynced, whatever
        // the journal's durability.
        let level = self.store.fsync_commits()?;
        let done = self.persist(changes, &[]).and_then(|()| {
            // A rejoin's removals are the other partner's devices: not this partner's to make
            // again should another rotation win.
            if remove.is_empty() || rekey.is_some() {
                return Ok(());
            }
            let mut wanted = self.wanted_removed()?;
            wanted.extend(remove.iter().copied());
            wanted.sort();
            wanted.dedup();
            let list: Vec<String> = wanted.iter().map(ToString::to_string).collect();
            self.store.set_meta(&[(META_WANT_REMOVED, &list.join(","))])
        });
        self.store.restore_commits(level)?;
        done.map(|()| id)
    }

    fn wanted_removed(&self) -> Result<Vec<DeviceId>> {
        Ok(self
            .store
            .meta(META_WANT_REMOVED)?
            .unwrap_or_default()
            .split(',')
            .filter_map(|d| d.parse().ok())
            .collect())
    }

    /// Devices this device asked to remove that the epoch it is in still sealed a box to:
    /// another device's rotation won at the relay. The caller rotates again to remove them
    /// ([`Journal::rotate`]); empty once none is left.
    pub fn unfinished_removal(&mut self) -> Result<Vec<DeviceId>> {
        let wanted = self.wanted_removed()?;
        if wanted.is_empty() {
            return Ok(wanted);
        }
        // The other partner's rotation leaves this partner's personal space as it was: a removed
        // device would still read it.
        let personal_kept =
            self.epoch()? > 0 && self.store.meta(META_PERSONAL_ROTATED)?.as_deref() == Some("0");
        let expected = self.epoch_members()?;
        let left: Vec<DeviceId> = wanted
            .into_iter()
            .filter(|d| (personal_kept || expected.contains(d)) && *d != self.device)
            .collect();
        if left.is_empty() {
            self.store.set_meta(&[(META_WANT_REMOVED, "")])?;
        }
        Ok(left)
    }

    /// The announcement of the next epoch to offer the relay ([`Journal::epoch_news`] moves
    /// only to the one the relay keeps): `None` while there is none, or while this device
    /// still has changes of this epoch to push (an announcement it wrote itself among them,
    /// which the relay must hold before anyone can follow it).
    pub fn epoch_offer(&self) -> Result<Option<[u8; 32]>> {
        if self.couple_space.is_none() || self.store.pending_changes(Space::Couple)? > 0 {
            return Ok(None);
        }
        let epoch = self.epoch()?.saturating_add(1);
        // Any readable one will do (the relay keeps the first offered); an unreadable one
        // among them is passed over, so it cannot stop a move.
        let mut ids: Vec<[u8; 32]> = Vec::new();
        for news in announcements(self.doc(Space::Couple)?, epoch)? {
            match news {
                Ok(news) => ids.push(news.id()),
                Err(e) => {
                    tracing::warn!(epoch, error = %e, "an unreadable announcement of a new epoch");
                }
            }
        }
        Ok(ids.into_iter().min())
    }

    /// What the couple's document says of the epoch after this one, for the device holding
    /// `device_key`, following the announcement `kept`: the one the relay keeps for this
    /// space ([`Journal::epoch_offer`]), so that devices that rotated at once all follow the
    /// same. A move waits ([`EpochNews::Current`]) while this device does not hold that
    /// announcement, still has changes of the old epoch to push, or lacks the history the new
    /// epoch starts from.
    pub fn epoch_news(&self, device_key: &DeviceKey, kept: &[u8; 32]) -> Result<EpochNews> {
        let epoch = self.epoch()?.saturating_add(1);
        let Some(space_id) = self.couple_space else {
            return Ok(EpochNews::Current);
        };
        let doc = self.doc(Space::Couple)?;
        // An announcement this build cannot read is no move to make: sync goes on in this
        // epoch rather than stopping at every round.
        let mut found = None;
        for news in announcements(doc, epoch)? {
            match news {
                Ok(news) if news.id() == *kept => found = Some(news),
                Ok(_) => {}
                Err(e) => {
                    tracing::warn!(epoch, error = %e, "an unreadable announcement of a new epoch");
                }
            }
        }
        let Some(news) = found else {
            return Ok(EpochNews::Current);
        };
        let device = self.certified_device();
        // Only the other partner can vouch for a partner's new identity; one that names this
        // device's own partner means this partner's devices are all replaced.
        let rekey = news.rekey.filter(|(partner, _)| *partner != news.by);
        let replaced = rekey.is_some_and(|(partner, _)| partner == self.me);
        let sealed = news.boxes.get(&device.to_string()).filter(|_| !replaced);
        let Some(sealed) = sealed else {
            // Removed, or never introduced to the device that rotated: either way, the new
            // epoch's secrets are not this device's to read.
            let ask = if replaced {
                super::rejoin::read_ask(doc, self.me, None)
            } else {
                None
            };
            let despite_cancel = ask.and_then(|ask| ask.cancelled_at);
            // The rejoin's own date is the other partner's to write: it counts only when it is
            // earlier than this device's now.
            let arrived = self.now().min(news.at);
            let wait = i64::try_from(self.rejoin_wait().as_millis()).unwrap_or(i64::MAX);
            // Half the wait: this device notes an ask a little after the asking one sees it at
            // the relay (at the end of a round, or as live sync brings it), so an honest rejoin
            // made as soon as the wait is over never looks early; one well before it does.
            let early = replaced
                && match &ask {
                    Some(ask) => self
                        .ask_seen_at(ask)?
                        .is_none_or(|seen| arrived.saturating_sub(seen) < wait / 2),
                    None => true,
                };
            return Ok(EpochNews::Removed {
                by: news.by,
                at: news.at,
                rejoined: replaced,
                despite_cancel,
                early,
            });
        };
        let opened = open_from_device(device_key, &box_context(&space_id, epoch, device), sealed)
            .and_then(|plain| EpochSecrets::decode(&plain));
        let secrets = match opened {
            Ok(secrets) if secrets.epoch == epoch => secrets,
            // A box that does not open was not sealed for this device by a device that knew
            // its key: nothing to move with.
            _ => {
                tracing::warn!(epoch, "a new epoch's box for this device does not open");
                return Ok(EpochNews::Current);
            }
        };
        // A new personal secret counts only from this partner's own announcement: the other
        // partner has no say over this partner's space (and never reads it).
        let own = news.by == self.me;
        let mut secrets = secrets;
        if !own {
            secrets.personal = None;
        }
        let personal_heads = match (&news.personal, &secrets.personal) {
            (Some((partner, heads)), Some(_))
                if own && *partner == self.me && !heads.is_empty() =>
            {
                Some(heads.clone())
            }
            _ => {
                secrets.personal = None;
                None
            }
        };
        let held = |space: Space, heads: &[ChangeHash]| -> Result<bool> {
            let doc = self.doc(space)?;
            Ok(heads.iter().all(|h| doc.has_change(h)))
        };
        if !held(Space::Couple, &news.heads)?
            || !held(
                Space::Personal,
                personal_heads.as_deref().unwrap_or_default(),
            )?
            || self.store.pending_changes(Space::Couple)? > 0
            || (personal_heads.is_some() && self.store.pending_changes(Space::Personal)? > 0)
        {
            return Ok(EpochNews::Current);
        }
        Ok(EpochNews::Move(Box::new(EpochMove {
            secrets,
            heads: news.heads,
            personal_heads,
            removed: news.removed,
            sealed: Some((sealed.clone(), space_id)),
            rotator: news.device,
            members: news.boxes.keys().filter_map(|d| d.parse().ok()).collect(),
            rekey: rekey.map(|(partner, key)| (partner, key, news.at)),
        })))
    }

    /// Moves this journal into the epoch `step` opens: each rotating space starts over from the
    /// old one's state at the cut, then what this device wrote after the cut is written again
    /// (signed in the new epoch); everything the relay kept of the old epoch is forgotten here,
    /// and this device certifies itself in the new couple's space.
    pub fn move_to_epoch(
        &mut self,
        step: EpochMove,
        identity: &PartnerIdentity,
        device_key: &DeviceKey,
        left: Vec<OldSpace>,
    ) -> Result<()> {
        self.ready()?;
        let epoch = step.secrets.epoch;
        if epoch != self.epoch()?.saturating_add(1) {
            return Err(Error::Invalid("not the next epoch".into()));
        }
        // The old epoch's introductions (and those it expected), before the move resets them.
        let mut known = {
            self.load_roster()?;
            self.roster.intros()
        };
        // Every key claiming a removed id: nothing they wrote after the cut is carried.
        let removed: Vec<[u8; 16]> = known
            .iter()
            .filter(|i| step.removed.contains(&i.cert.device))
            .map(|i| i.cert.device_key.key_id().0)
            .collect();
        // The devices this partner's replay may carry edits of (see [`replay_own`]).
        let mut ours: Vec<[u8; 16]> = known
            .iter()
            .filter(|i| i.cert.partner == self.me)
            .map(|i| i.cert.device_key.key_id().0)
            .filter(|k| !removed.contains(k))
            .collect();
        ours.extend(self.key_id.map(|k| k.0));
        // The keys whose writes after the cut may be carried: those of the devices the new
        // epoch keeps (a removed device can still write into the old spaces, and certify new
        // keys of its own there).
        let mut trusted: Vec<[u8; 16]> = step
            .members
            .iter()
            .filter_map(|d| {
                let claims: Vec<&Intro> = known.iter().filter(|i| i.cert.device == *d).collect();
                owner(claims, |i| &i.cert).map(|i| i.cert.device_key.key_id().0)
            })
            .filter(|k| !removed.contains(k))
            .collect();
        trusted.extend(self.key_id.map(|k| k.0));
        known.extend(self.expected()?.into_iter().filter_map(Result::ok));
        let leave = rebuild::Leave {
            partner_keys_prefixes: vec![registry::DEVICE.to_owned()],
            rekey: step.rekey.map(|(partner, key, at)| {
                (
                    partner.to_string(),
                    format!("{}{}", registry::IDENTITY, hex::encode(key.to_bytes())),
                    at,
                )
            }),
        };
        let mut moved = Vec::new();
        for (space, heads) in [
            (Space::Couple, Some(&step.heads)),
            (Space::Personal, step.personal_heads.as_ref()),
        ] {
            let Some(heads) = heads else { continue };
            let old = self.doc(space)?;
            if heads.iter().any(|h| !old.has_change(h)) {
                return Err(Error::Invalid(
                    "this device does not hold the history the new epoch starts from: sync first"
                        .into(),
                ));
            }
            // What the old space still owes the relay is lost with it: only a move that
            // [`Journal::epoch_news`] offered (nothing pending) carries everything.
            let actor = automerge::ActorId::from(self.actor.as_slice());
            let (mut new, base) = rebuild::rebuild(old.am(), heads, epoch, &leave, actor)?;
            let own = self.key_id.map(|k| k.0);
            let replay = replay_own(
                old.am(),
                heads,
                own.as_ref(),
                Writers {
                    ours: &ours,
                    trusted: &trusted,
                },
                self.me,
                space == Space::Couple,
                &mut new,
            )?;
            moved.push((space, new, replay, base));
        }
        let now = self.now();
        let mut changes = Vec::new();
        let mut couple_base = None;
        let mut saves = Vec::new();
        for (space, new, replay, base) in &moved {
            // The device that rotated hands the first change to the relay, for devices that
            // join later; every device that moves built it itself.
            if step.rotator == Some(self.device)
                && let Some(first) = new.am().get_change_by_hash(base)
            {
                changes.push((*space, first.raw_bytes().to_vec()));
            }
            if *space == Space::Couple {
                couple_base = Some(*base);
            }
            for bytes in replay {
                changes.push((*space, bytes.clone()));
            }
            saves.push((*space, new.save()));
        }
        let epoch_text = epoch.to_string();
        let wait: Vec<String> = step
            .members
            .iter()
            .map(|d| {
                let claims: Vec<&Intro> = known.iter().filter(|i| i.cert.device == *d).collect();
                match owner(claims, |i| &i.cert) {
                    Some(intro) => hex::encode(intro.to_bytes()),
                    None => hex::encode(d.as_bytes()),
                }
            })
            .collect();
        let wait = wait.join(",");
        // The spaces left behind, beside older ones not yet retired, for deletion at the
        // relay once every device has moved ([`Journal::retirement`]).
        let mut old = self.old_spaces(device_key)?;
        old.extend(left);
        let old = hex::encode(seal_old_spaces(device_key, &old)?);
        // This device's clock, not the rotating one's: a clock far behind cannot cut the
        // grace short.
        let now_text = now.to_string();
        let personal_rotated = if step.personal_heads.is_some() {
            "1"
        } else {
            "0"
        };
        let base = couple_base.map(|b| hex::encode(b.0));
        let sealed = step
            .sealed
            .as_ref()
            .map(|(sealed, from)| (hex::encode(sealed), hex::encode(from)));
        let hold = if step.rekey.is_some() { "1" } else { "" };
        let space_id = step.secrets.couple.derive_space_id();
        let space_hex = hex::encode(space_id);
        let mut metas: Vec<(&str, &str)> = vec![
            (registry::META_COUPLE_SPACE, &space_hex),
            (META_RETIRE_HOLD, hold),
            (META_EPOCH, &epoch_text),
            (META_RETIRE_WAIT, &wait),
            (META_RETIRE_AT, &now_text),
            (META_RETIRE, &old),
            (META_PERSONAL_ROTATED, personal_rotated),
            // Notes about asks belong to the document they were made in: the next one numbers
            // its objects from the start again, so an ask there could take an old one's id.
            (super::rejoin::META_ASK_SENT, ""),
            (super::rejoin::META_ASK_SEEN, ""),
        ];
        if let Some(base) = &base {
            metas.push((META_EPOCH_BASE, base));
        }
        if let Some((sealed, from)) = &sealed {
            metas.push((META_EPOCH_BOX, sealed));
            metas.push((META_EPOCH_FROM, from));
        }
        let personal_box = match (&step.secrets.personal, &step.personal_heads) {
            (Some(personal), Some(_)) => Some(hex::encode(seal_to_device(
                &device_key.public(),
                PERSONAL_CONTEXT,
                personal.expose(),
            )?)),
            _ => None,
        };
        if let Some(personal_box) = &personal_box {
            metas.push((META_PERSONAL_BOX, personal_box));
        }
        let sealed_under = self.certified_device();
        let sealed_under = if sealed_under == self.device {
            String::new()
        } else {
            sealed_under.to_string()
        };
        metas.push((META_EPOCH_BOX_DEVICE, &sealed_under));
        // One transaction: the new documents, what this device still has to push in them, the
        // epoch and everything that goes with it.
        let save_refs: Vec<(Space, &[u8])> =
            saves.iter().map(|(s, b)| (*s, b.as_slice())).collect();
        let unsent: Vec<(Space, &[u8])> = changes.iter().map(|(s, b)| (*s, b.as_slice())).collect();
        self.store.start_epoch(&save_refs, &unsent, &metas, now)?;
        self.couple_space = Some(space_id);
        for (space, new, _, _) in moved {
            match space {
                Space::Couple => self.couple.set(new),
                Space::Personal => self.personal.set(new),
            }
        }
        self.banned.clear();
        self.roster = super::guard::Roster::default();
        for space in [Space::Couple, Space::Personal] {
            self.rebuild_view(space)?;
        }
        let signer = Signer::new(
            space_id,
            identity,
            self.me,
            self.device,
            device_key.clone(),
            now,
        );
        self.set_signer(signer)?;
        self.certify_device(&space_id, identity, device_key)?;
        self.sync_revision = self.sync_revision.wrapping_add(1);
        Ok(())
    }
}

impl Journal {
    /// The old epochs' spaces to delete at the relay now: every device the newest
    /// announcement sealed a box to is introduced in this epoch (so none of them still reads
    /// the old one), or [`RETIRE_GRACE_MS`] passed since this device moved. Empty when there is
    /// nothing to retire yet; call [`Journal::old_spaces_retired`] once the relay deleted them.
    pub fn retirement(&mut self, device_key: &DeviceKey) -> Result<Vec<OldSpace>> {
        let now_ms = self.now();
        let old = self.old_spaces(device_key)?;
        if old.is_empty() {
            return Ok(old);
        }
        // No time kept (an older database): the grace starts now.
        let at: i64 = match self
            .store
            .meta(META_RETIRE_AT)?
            .and_then(|a| a.parse().ok())
        {
            Some(at) => at,
            None => {
                self.store
                    .set_meta(&[(META_RETIRE_AT, &now_ms.to_string())])?;
                now_ms
            }
        };
        let waited = now_ms >= at.saturating_add(RETIRE_GRACE_MS);
        let held = self.store.meta(META_RETIRE_HOLD)?.as_deref() == Some("1");
        let mut moved = || -> Result<bool> {
            if held {
                return Ok(false);
            }
            self.load_roster()?;
            let here = self.introduced();
            Ok(self.epoch_members()?.iter().all(|d| here.contains(d)))
        };
        if waited || moved()? {
            Ok(old)
        } else {
            Ok(Vec::new())
        }
    }

    /// The relay deleted the old spaces [`Journal::retirement`] named: forget their secrets
    /// (only theirs: a move in between may have added others).
    pub fn old_spaces_retired(&mut self, device_key: &DeviceKey, gone: &[OldSpace]) -> Result<()> {
        let left: Vec<OldSpace> = self
            .old_spaces(device_key)?
            .into_iter()
            .filter(|o| !gone.iter().any(|g| g.secret == o.secret))
            .collect();
        let sealed = if left.is_empty() {
            String::new()
        } else {
            hex::encode(seal_old_spaces(device_key, &left)?)
        };
        self.store.set_meta(&[(META_RETIRE, &sealed)])
    }

    fn old_spaces(&self, device_key: &DeviceKey) -> Result<Vec<OldSpace>> {
        let Some(sealed) = self.store.meta(META_RETIRE)?.filter(|s| !s.is_empty()) else {
            return Ok(Vec::new());
        };
        let bad = || Error::Corrupt("the old epochs' spaces".into());
        let sealed = hex::decode(sealed).map_err(|_| bad())?;
        let plain = open_from_device(device_key, RETIRE_CONTEXT, &sealed)?;
        plain
            .chunks(33)
            .map(|entry| match entry {
                [tag, secret @ ..] if secret.len() == 32 => Ok(OldSpace {
                    space: if *tag == 0 {
                        Space::Couple
                    } else {
                        Space::Personal
                    },
                    secret: SpaceSecret::from_slice(secret)?,
                }),
                _ => Err(bad()),
            })
            .collect()
    }
}

/// The members a new epoch's boxes go to, one per device id, leaving out `removed`: every key
/// claiming a removed id, under whatever id it also claims (a lost phone can introduce its own
/// key again under a new id).
fn sealed_to(
    members: &[(PartnerId, DeviceCertificate)],
    removed: &[DeviceId],
) -> Vec<(PartnerId, DeviceCertificate)> {
    let removed_keys: HashSet<_> = members
        .iter()
        .filter(|(_, c)| removed.contains(&c.device))
        .map(|(_, c)| c.device_key.key_id())
        .collect();
    let mut by_id: BTreeMap<DeviceId, Vec<(PartnerId, DeviceCertificate)>> = BTreeMap::new();
    for (partner, cert) in members {
        if !removed.contains(&cert.device) && !removed_keys.contains(&cert.device_key.key_id()) {
            by_id
                .entry(cert.device)
                .or_default()
                .push((*partner, *cert));
        }
    }
    by_id
        .into_values()
        .filter_map(|claims| owner(claims, |(_, cert)| cert))
        .collect()
}

/// The ids a rejoin of `partner` removes: every one a device of theirs claims, but not one
/// that also names a device of the other partner's and was not made for the rejoining
/// partner's key. Whoever holds a lost phone holds its partner's identity and can certify a
/// key under any id it has seen: it could otherwise have the rejoin shut out a device of the
/// other partner's, or refuse outright by naming the rejoining device itself. Its key gets no
/// box there anyway: an id's box goes to the key the id was made for ([`sealed_to`]).
fn rejoin_removals(
    members: &[(PartnerId, DeviceCertificate)],
    partner: PartnerId,
) -> Vec<DeviceId> {
    let mut by_id: BTreeMap<DeviceId, Vec<&(PartnerId, DeviceCertificate)>> = BTreeMap::new();
    for member in members {
        by_id.entry(member.1.device).or_default().push(member);
    }
    by_id
        .into_iter()
        .filter(|(_, claims)| {
            claims.iter().any(|(p, _)| *p == partner)
                && (claims.iter().all(|(p, _)| *p == partner)
                    || owner(claims.clone(), |(_, cert)| cert).is_some_and(|(p, _)| *p == partner))
        })
        .map(|(id, _)| id)
        .collect()
}

/// Which of the keys claiming one device id is that device. Boxes are found by device id,
/// and whoever holds an identity key (the other partner, or a lost phone, which holds its
/// partner's) can certify a key of its own under another device's id: where two keys claim an
/// id, it is the one whose id was made for it ([`DeviceId::generate_for_key`], every device
/// since signing), and neither when that does not settle it (no box: a device from before
/// signing then pairs again).
fn owner<T>(claims: Vec<T>, cert: impl Fn(&T) -> &DeviceCertificate) -> Option<T> {
    // One key certified again (in another epoch, or twice) is one claim.
    let mut keys = HashSet::new();
    let claims: Vec<T> = claims
        .into_iter()
        .filter(|claim| keys.insert(cert(claim).device_key.key_id()))
        .collect();
    if claims.len() <= 1 {
        return claims.into_iter().next();
    }
    let count = claims.len();
    let mut bound = claims.into_iter().filter(|claim| {
        let c = cert(claim);
        c.device.is_bound_to(&c.device_key.key_id().0)
    });
    match (bound.next(), bound.next()) {
        (Some(one), None) => Some(one),
        _ => {
            tracing::warn!(
                keys = count,
                "several keys claim one device id: no box for it"
            );
            None
        }
    }
}

/// The old spaces' secrets, sealed to this device's own key. (The context is not bound to
/// the device id, which a sequence conflict may change.)
fn seal_old_spaces(device_key: &DeviceKey, old: &[OldSpace]) -> Result<Vec<u8>> {
    let mut plain = Zeroizing::new(Vec::with_capacity(old.len().saturating_mul(33)));
    for o in old {
        plain.push(u8::from(o.space == Space::Personal));
        plain.extend_from_slice(o.secret.expose());
    }
    seal_to_device(&device_key.public(), RETIRE_CONTEXT, &plain)
}

/// What this device wrote after the cut into one record.
#[derive(Debug, Default)]
struct Touched {
    /// It made the record (or filed it again) itself.
    whole: bool,
    /// The fields it wrote.
    fields: BTreeMap<String, FieldTouched>,
}

/// What this device wrote after the cut into one field of a record.
#[derive(Debug, Default)]
struct FieldTouched {
    /// It wrote (or deleted) the field itself.
    itself: bool,
    /// The keys it wrote inside it: of a managed map, the entries.
    entries: BTreeSet<String>,
}

/// What to write again: one record, or one key of this partner's entry.
#[derive(Debug)]
enum Unit {
    Record(String, Touched),
    Partner(String, String),
}

/// Whose writes a replay carries, by key id.
#[derive(Clone, Copy)]
struct Writers<'a> {
    /// This partner's devices: whatever actor begins with one wrote for this partner.
    ours: &'a [[u8; 16]],
    /// The devices the new epoch keeps: only their writes after the cut are carried.
    trusted: &'a [[u8; 16]],
}

/// What the replay reads besides the old document.
struct Replay<'a> {
    old: &'a automerge::Automerge,
    /// Key ids of this partner's devices: whatever actor begins with one wrote for this
    /// partner.
    ours: &'a [[u8; 16]],
    me: String,
    /// The last value this device's own operations put at each path, where it was a scalar.
    own_values: HashMap<Vec<String>, ScalarValue>,
    /// The operation counters of the changes after the cut, by actor.
    after: HashMap<Vec<u8>, Vec<(u64, u64)>>,
    /// Key ids whose writes after the cut may be carried.
    trusted: &'a [[u8; 16]],
    /// What this partner's kept devices (this one among them) last did at each map key (by
    /// path) after the cut: what stands where a device left out of the new epoch wrote or
    /// deleted over it.
    last_kept: HashMap<Vec<String>, KeptOp>,
    /// The map keys (by path) a kept device of either partner was the last of them to touch
    /// after the cut, deleting them: deleted in the new epoch, whatever a left-out device did.
    deleted: HashSet<Vec<String>>,
}

/// What a kept device last did at a key after the cut.
#[derive(Debug)]
enum KeptOp {
    Put(ScalarValue),
    Delete,
    /// Made an object there, or anything else: nothing to write again in its place.
    Other,
}

/// Writes again into `new`, in one change, what the changes of `old` made by this device
/// (actors beginning with `own`) after `heads` did: each record field (or whole record, or
/// partner entry key) they wrote takes the value it has in `old` now. Values, not changes: an
/// edit built on another device's edit after the cut is carried as well, without that edit's
/// author having moved, unless that author is a device the new epoch leaves out
/// (`writers.trusted`: its value is not carried). The other partner's devices write theirs again themselves, so what
/// they may write alone (a consent, a view, a response) is never written here: a managed map
/// (consents, wordings, a commitment's ledgers) is written entry by entry, only the entries this
/// device wrote, and a record or map the new document lacks is made again without the other
/// partner's entries. With `check` (the couple's space, whose receivers run the guard), the
/// change must pass the guard's rules for that partner, or a record it would be refused for is
/// left out: a refused replay would have every later change of this device refused with it.
/// Answers the changes' bytes: one, or one per record when together they would be refused;
/// none when there was nothing to write.
fn replay_own(
    old: &automerge::Automerge,
    heads: &[ChangeHash],
    own: Option<&[u8; 16]>,
    writers: Writers<'_>,
    me: PartnerId,
    check: bool,
    new: &mut SpaceDoc,
) -> Result<Vec<Vec<u8>>> {
    let Some(own) = own else {
        return Ok(Vec::new());
    };
    let mut records: BTreeMap<String, Touched> = BTreeMap::new();
    let mut partners: BTreeSet<(String, String)> = BTreeSet::new();
    let mut own_values: HashMap<Vec<String>, ScalarValue> = HashMap::new();
    let mut after: HashMap<Vec<u8>, Vec<(u64, u64)>> = HashMap::new();
    let mut last_kept: HashMap<Vec<String>, (u64, Vec<u8>, KeptOp)> = HashMap::new();
    let mut last_delete: HashMap<Vec<String>, (u64, Vec<u8>, bool)> = HashMap::new();
    for change in old.get_changes(heads) {
        let actor = change.actor_id().to_bytes();
        let start = change.start_op().get();
        let len = u64::try_from(change.len()).unwrap_or(u64::MAX);
        after
            .entry(actor.to_vec())
            .or_default()
            .push((start, start.saturating_add(len)));
        let mine = signed_by(actor, own);
        let trusted = mine || writers.trusted.iter().any(|k| signed_by(actor, k));
        // This partner's kept devices: the other partner's write theirs again themselves.
        let kept = writers
            .trusted
            .iter()
            .any(|k| signed_by(actor, k) && writers.ours.contains(k));
        if !trusted {
            continue;
        }
        for (counter, op) in (start..).zip(change.decode().operations) {
            let mut path = match &op.obj {
                automerge::legacy::ObjectId::Root => Vec::new(),
                automerge::legacy::ObjectId::Id(obj) => path_of(old, &obj.to_string()),
            };
            // A list element's operation names the list: only map keys hold one value.
            let map_key = match &op.key {
                automerge::legacy::Key::Map(key) => {
                    path.push(key.to_string());
                    true
                }
                automerge::legacy::Key::Seq(_) => false,
            };
            // Whether a kept device of either partner last deleted the key, or put a value.
            if map_key {
                let deleted = matches!(op.action, automerge::legacy::OpType::Delete);
                let later = last_delete
                    .get(&path)
                    .is_none_or(|(c, a, _)| (counter, actor) > (*c, a.as_slice()));
                if later {
                    last_delete.insert(path.clone(), (counter, actor.to_vec(), deleted));
                }
            }
            if map_key && (mine || kept) {
                let did = match &op.action {
                    automerge::legacy::OpType::Put(value) => KeptOp::Put(value.clone()),
                    automerge::legacy::OpType::Delete => KeptOp::Delete,
                    _ => KeptOp::Other,
                };
                // The one Automerge ranks last (a later operation has a higher counter; at
                // one counter, the greater actor), whatever order the history holds them in.
                let later = last_kept
                    .get(&path)
                    .is_none_or(|(c, a, _)| (counter, actor) > (*c, a.as_slice()));
                if later {
                    last_kept.insert(path.clone(), (counter, actor.to_vec(), did));
                }
            }
            if !mine {
                continue;
            }
            if map_key {
                match &op.action {
                    automerge::legacy::OpType::Put(value) => {
                        own_values.insert(path.clone(), value.clone());
                    }
                    _ => {
                        own_values.remove(&path);
                    }
                }
            }
            match (path.first().map(String::as_str), path.get(1), path.get(2)) {
                (Some("records"), Some(id), field) => {
                    let touched = records.entry(id.clone()).or_default();
                    match field {
                        None => touched.whole = true,
                        Some(field) => {
                            let field = touched.fields.entry(field.clone()).or_default();
                            match path.get(3) {
                                Some(entry) => {
                                    field.entries.insert(entry.clone());
                                }
                                None => field.itself = true,
                            }
                        }
                    }
                }
                // Certificates are made again in the new epoch.
                (Some("partners"), Some(partner), Some(key))
                    if !key.starts_with(registry::DEVICE)
                        && !key.starts_with(registry::IDENTITY) =>
                {
                    partners.insert((partner.clone(), key.clone()));
                }
                _ => {}
            }
        }
    }
    let units: Vec<Unit> = records
        .into_iter()
        .map(|(id, touched)| Unit::Record(id, touched))
        .chain(partners.into_iter().map(|(p, k)| Unit::Partner(p, k)))
        .collect();
    if units.is_empty() {
        return Ok(Vec::new());
    }
    let replay = Replay {
        old,
        ours: writers.ours,
        me: me.to_string(),
        own_values,
        after,
        trusted: writers.trusted,
        last_kept: last_kept
            .into_iter()
            .map(|(path, (_, _, did))| (path, did))
            .collect(),
        deleted: last_delete
            .into_iter()
            .filter(|(_, (_, _, deleted))| *deleted)
            .map(|(path, _)| path)
            .collect(),
    };
    let passes = |new: &SpaceDoc, change: &automerge::Change| {
        !check
            || std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
                super::guard::rules_allow(new, change, me)
            }))
            .unwrap_or(false)
    };
    // The change for `units`, if the receivers would take it (`Some(None)`: nothing to write).
    let accepted = |units: &[&Unit], new: &SpaceDoc| match replay.build(units, new) {
        Ok(change) if change.as_ref().is_none_or(|c| passes(new, c)) => Some(change),
        Ok(_) => None,
        Err(_) => {
            tracing::warn!("an edit made after the cut could not be written again");
            None
        }
    };
    let all: Vec<&Unit> = units.iter().collect();
    let mut written = Vec::new();
    if let Some(change) = accepted(&all, new) {
        if let Some(change) = change {
            written.push(change.raw_bytes().to_vec());
            new.apply_change(change)?;
        }
        return Ok(written);
    }
    // Something in it would be refused (or it is too big for one change): each record as a
    // change of its own, on the document as it grows, and only those that pass.
    let mut left_out = 0usize;
    for unit in &units {
        match accepted(&[unit], new) {
            Some(Some(change)) => {
                written.push(change.raw_bytes().to_vec());
                new.apply_change(change)?;
            }
            Some(None) => {}
            None => left_out = left_out.saturating_add(1),
        }
    }
    if left_out > 0 {
        tracing::warn!(
            left_out,
            "edits made after the cut that the new epoch would refuse are not written again"
        );
    }
    Ok(written)
}

/// Whether `actor` is one of the device whose key id is `key`. Only a signed actor says so:
/// the guard ties its first 16 bytes to the change's signer, while a 16-byte actor from before
/// signing is taken under any bytes, the other partner's key ids (public in certificates)
/// included.
fn signed_by(actor: &[u8], key: &[u8; 16]) -> bool {
    actor.len() == super::guard::ACTOR_LEN && actor.starts_with(key)
}

/// How deep below a record [`Replay::copy_ours`] goes: the app's deepest value is three levels
/// below one (`consents/<partner>/state`); a lost phone's deeper maps must not exhaust the
/// stack of the device that moves.
const COPY_DEPTH: usize = 16;

/// The managed maps of a record of kind `kind`: each entry is one partner's to write, and the
/// guard refuses a whole one written where one stands already.
fn managed_map(kind: Option<&str>, field: &str) -> bool {
    matches!(
        (kind.and_then(|k| k.parse::<Kind>().ok()), field),
        (Some(Kind::Boundary), "consents" | "wordings")
            | (
                Some(Kind::Commitment),
                "claims" | "views" | "status_changes"
            )
    )
}

fn str_at(doc: &impl ReadDoc, obj: &ObjId, key: &str) -> Option<String> {
    match doc.get(obj, key) {
        Ok(Some((Value::Scalar(s), _))) => s.as_str().map(str::to_owned),
        _ => None,
    }
}

impl Replay<'_> {
    /// The change writing `units` into a copy of `new` (which stays as it was), if it writes
    /// anything.
    fn build(&self, units: &[&Unit], new: &SpaceDoc) -> Result<Option<automerge::Change>> {
        let mut trial = new.am().clone();
        let mut tx = trial.transaction();
        for unit in units {
            if let Err(e) = self.write(unit, &mut tx) {
                tx.rollback();
                return Err(e);
            }
        }
        let (hash, _) = tx.commit();
        Ok(hash.and_then(|h| trial.get_change_by_hash(&h)))
    }

    fn write(&self, unit: &Unit, tx: &mut Transaction<'_>) -> Result<()> {
        let root = match unit {
            Unit::Record(..) => "records",
            Unit::Partner(..) => "partners",
        };
        let (Some((_, from_parent)), Some((_, to_parent))) =
            (self.old.get(ROOT, root)?, tx.get(ROOT, root)?)
        else {
            return Ok(());
        };
        match unit {
            Unit::Partner(partner, key) => {
                let Some((Value::Object(_), from)) =
                    self.old.get(&from_parent, partner.as_str())?
                else {
                    return Ok(());
                };
                let to = match tx.get(&to_parent, partner.as_str())? {
                    Some((Value::Object(_), to)) => to,
                    _ => tx.put_object(&to_parent, partner.as_str(), ObjType::Map)?,
                };
                self.write_value(&from, tx, &to, key, &["partners", partner.as_str()])
            }
            Unit::Record(id, touched) => {
                self.write_record(&from_parent, &to_parent, id, touched, tx)
            }
        }
    }

    fn write_record(
        &self,
        from_records: &ObjId,
        to_records: &ObjId,
        id: &str,
        touched: &Touched,
        tx: &mut Transaction<'_>,
    ) -> Result<()> {
        let Some((Value::Object(ObjType::Map), from)) = self.old.get(from_records, id)? else {
            return Ok(());
        };
        // A record of the other partner's they removed since: nothing of it is this
        // device's to write again (removing their entries there would be refused).
        let theirs = str_at(self.old, &from, "author").is_some_and(|a| a != self.me);
        let removed = matches!(
            self.old.get(&from, "removed")?,
            Some((Value::Scalar(s), id))
                if matches!(s.as_ref(), ScalarValue::Boolean(true)) && self.carries(&id)
        );
        if theirs && removed {
            return Ok(());
        }
        let to = match tx.get(to_records, id)? {
            Some((Value::Object(ObjType::Map), to)) => Some(to),
            _ => None,
        };
        // A record this device made after the cut is made again whole, by this device alone
        // (two devices making it again would make two records under one id); one the new
        // document lacks otherwise is its maker's to make.
        let to = match to {
            Some(to) if !touched.whole => to,
            _ if touched.whole => {
                let to = tx.put_object(to_records, id, ObjType::Map)?;
                let mut path = vec!["records".to_owned(), id.to_owned()];
                return self.copy_ours(&from, tx, &to, &mut path, COPY_DEPTH);
            }
            _ => return Ok(()),
        };
        let kind = str_at(self.old, &from, "kind");
        for (field, touched) in &touched.fields {
            if !managed_map(kind.as_deref(), field) {
                self.write_value(&from, tx, &to, field, &["records", id])?;
                continue;
            }
            match (
                self.old.get(&from, field.as_str())?,
                tx.get(&to, field.as_str())?,
            ) {
                // Deleted with its record by its author (this device).
                (None, Some(_))
                    if touched.itself
                        && self.deleted.contains(&vec![
                            "records".to_owned(),
                            id.to_owned(),
                            field.clone(),
                        ]) =>
                {
                    tx.delete(&to, field.as_str())?;
                }
                (None, _) => {}
                // Entry by entry into the map that stands: never the map again.
                (
                    Some((Value::Object(ObjType::Map), from_map)),
                    Some((Value::Object(ObjType::Map), to_map)),
                ) => {
                    for entry in &touched.entries {
                        self.write_value(
                            &from_map,
                            tx,
                            &to_map,
                            entry,
                            &["records", id, field.as_str()],
                        )?;
                    }
                }
                (Some((Value::Object(ObjType::Map), from_map)), _) => {
                    let to_map = tx.put_object(&to, field.as_str(), ObjType::Map)?;
                    let mut path = vec!["records".to_owned(), id.to_owned(), field.clone()];
                    self.copy_ours(&from_map, tx, &to_map, &mut path, COPY_DEPTH)?;
                }
                // Not a map where one belongs: as it stands, for the guard to judge.
                _ => self.write_value(&from, tx, &to, field, &["records", id])?,
            }
        }
        Ok(())
    }

    /// Whether the value operation `id` put may be carried: one put before the cut (the new
    /// epoch starts from it), or after it under a signed actor of a key the new epoch keeps. A
    /// removed device keeps the old epoch's secrets and can still write there (under a key it
    /// certifies anew, too): what it wrote must not reach the new epoch under the signature of
    /// a device that moves later.
    fn carries(&self, id: &ObjId) -> bool {
        let ObjId::Id(counter, actor, _) = id else {
            return true;
        };
        let actor = actor.to_bytes();
        let after_cut = self.after.get(actor).is_some_and(|ops| {
            ops.iter()
                .any(|&(start, end)| (start..end).contains(counter))
        });
        !after_cut || self.trusted.iter().any(|k| signed_by(actor, k))
    }

    /// Writes `to.key` as `from.key` (at `path`) holds it now. Where a device left out of the
    /// new epoch put the value that stands, or deleted the key, what a kept device last did
    /// there is done instead (nothing, if none did anything there after the cut).
    fn write_value(
        &self,
        from: &ObjId,
        tx: &mut Transaction<'_>,
        to: &ObjId,
        key: &str,
        path: &[&str],
    ) -> Result<()> {
        let at: Vec<String> = path
            .iter()
            .copied()
            .chain([key])
            .map(str::to_owned)
            .collect();
        match self.old.get(from, key)? {
            Some((_, id)) if !self.carries(&id) => self.as_kept_left_it(tx, to, key, &at)?,
            Some((Value::Object(kind), child)) => {
                let copy = tx.put_object(to, key, kind)?;
                rebuild::copy_obj(self.old, &child, kind, tx, &copy, &|id| self.carries(id))?;
            }
            Some((Value::Scalar(s), _)) => tx.put(to, key, s.into_owned())?,
            None => self.as_kept_left_it(tx, to, key, &at)?,
        }
        Ok(())
    }

    /// Does at `to.key` what a kept device last did at `at` after the cut: a delete by either
    /// partner's, else what this partner's last put there.
    fn as_kept_left_it(
        &self,
        tx: &mut Transaction<'_>,
        to: &ObjId,
        key: &str,
        at: &[String],
    ) -> Result<()> {
        if self.deleted.contains(at) {
            if tx.get(to, key)?.is_some() {
                tx.delete(to, key)?;
            }
            return Ok(());
        }
        match self.last_kept.get(at) {
            Some(KeptOp::Put(value)) => tx.put(to, key, value.clone())?,
            Some(KeptOp::Delete) if tx.get(to, key)?.is_some() => tx.delete(to, key)?,
            _ => {}
        }
        Ok(())
    }

    /// Copies the map `from` (at `path`) into `to`, leaving out what the other partner wrote:
    /// where their value stands over one this device put, this device's is written instead.
    /// Maps more than `depth` levels below `from` are left out.
    fn copy_ours(
        &self,
        from: &ObjId,
        tx: &mut Transaction<'_>,
        to: &ObjId,
        path: &mut Vec<String>,
        depth: usize,
    ) -> Result<()> {
        for key in self.old.keys(from) {
            let Some((value, id)) = self.old.get(from, key.as_str())? else {
                continue;
            };
            path.push(key.clone());
            let written = match &id {
                ObjId::Id(_, actor, _) => {
                    let actor = actor.to_bytes();
                    self.ours.iter().any(|k| signed_by(actor, k)) && self.carries(&id)
                }
                ObjId::Root => false,
            };
            match value {
                Value::Object(ObjType::Map) if written => {
                    if depth > 1 {
                        let copy = tx.put_object(to, key.as_str(), ObjType::Map)?;
                        self.copy_ours(&id, tx, &copy, path, depth.saturating_sub(1))?;
                    }
                }
                Value::Object(kind) if written => {
                    let copy = tx.put_object(to, key.as_str(), kind)?;
                    rebuild::copy_obj(self.old, &id, kind, tx, &copy, &|id| self.carries(id))?;
                }
                Value::Scalar(s) if written => tx.put(to, key.as_str(), s.into_owned())?,
                _ => {
                    if let Some(mine) = self.own_values.get(path.as_slice()) {
                        tx.put(to, key.as_str(), mine.clone())?;
                    }
                }
            }
            path.pop();
        }
        Ok(())
    }
}

/// The keys from the root to the object `obj` (`counter@actor`) of `doc`; a list position is
/// `#`. Empty when the document does not hold it.
fn path_of(doc: &automerge::Automerge, obj: &str) -> Vec<String> {
    let Ok((ex, _)) = doc.import(obj) else {
        return Vec::new();
    };
    match doc.parents(&ex) {
        Ok(parents) => parents
            .path()
            .into_iter()
            .map(|(_, prop)| match prop {
                Prop::Map(k) => k,
                Prop::Seq(_) => "#".into(),
            })
            .collect(),
        Err(_) => Vec::new(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cert(identity: &PartnerIdentity, device: Option<DeviceId>) -> DeviceCertificate {
        let key = DeviceKey::generate()
            .unwrap_or_else(|e| panic!("{e}"))
            .public();
        let device = device.unwrap_or_else(|| DeviceId::generate_for_key(&key.key_id().0));
        let public = identity.public();
        identity.certify(&[7; 32], public.partner_id(), device, &key, 1)
    }

    /// An actor of the device whose key id is `key`.
    fn actor(key: [u8; 16]) -> automerge::ActorId {
        automerge::ActorId::from([key.as_slice(), &[0u8; 8]].concat())
    }

    #[test]
    fn what_a_left_out_device_wrote_gives_way_to_what_this_partners_kept_devices_did() -> Result<()>
    {
        let (mover, thief, partner) = ([1u8; 16], [2u8; 16], [5u8; 16]);
        let me = PartnerId::generate();
        let mut old = SpaceDoc::genesis(actor([3; 16]))?.am().clone();
        let records = match old.get(ROOT, "records")? {
            Some((Value::Object(_), id)) => id,
            _ => return Err(Error::Corrupt("no records".into())),
        };
        let mut tx = old.transaction();
        let record = tx.put_object(&records, "r1", ObjType::Map)?;
        tx.put(&record, "author", me.to_string())?;
        tx.put(&record, "kind", "share")?;
        tx.put(&record, "feeling", "at the cut")?;
        tx.put(&record, "note", "at the cut")?;
        let tags = tx.put_object(&record, "tags", ObjType::List)?;
        tx.insert(&tags, 0, "at the cut")?;
        tx.commit();
        let heads = old.get_heads();
        // The mover adds a tag; the left-out device puts another list in the field's place.
        old.set_actor(actor(mover));
        let mut tx = old.transaction();
        tx.insert(&tags, 1, "the mover's")?;
        tx.commit();
        old.set_actor(actor(thief));
        let mut tx = old.transaction();
        let theirs = tx.put_object(&record, "tags", ObjType::List)?;
        tx.insert(&theirs, 0, "the thief's")?;
        tx.commit();
        // After the cut: the mover writes both fields; a device the new epoch leaves out
        // deletes one over it, and the mover deletes the other itself.
        // The other partner's kept device writes one after the mover: its own value is its to
        // write again, so where the left-out device wrote over it the mover's stands.
        for (who, field, value) in [
            (mover, "feeling", Some("the mover's")),
            (mover, "note", Some("the mover's")),
            (mover, "status", Some("the mover's")),
            (partner, "status", Some("the partner's")),
            (thief, "feeling", None),
            (mover, "note", None),
            (thief, "status", Some("the thief's")),
            (mover, "review", Some("the mover's")),
            (partner, "review", None),
        ] {
            old.set_actor(actor(who));
            let mut tx = old.transaction();
            match value {
                Some(v) => tx.put(&record, field, v)?,
                None => tx.delete(&record, field)?,
            }
            tx.commit();
        }
        let leave = rebuild::Leave {
            partner_keys_prefixes: Vec::new(),
            rekey: None,
        };
        let (mut new, _) = rebuild::rebuild(&old, &heads, 1, &leave, actor(mover))?;
        let writers = Writers {
            ours: &[mover],
            trusted: &[mover, partner],
        };
        replay_own(&old, &heads, Some(&mover), writers, me, false, &mut new)?;
        let am = new.am();
        let record = match am.get(ROOT, "records")? {
            Some((Value::Object(_), records)) => match am.get(&records, "r1")? {
                Some((Value::Object(_), r)) => r,
                _ => return Err(Error::Corrupt("no record".into())),
            },
            _ => return Err(Error::Corrupt("no records".into())),
        };
        assert_eq!(
            str_at(am, &record, "feeling").as_deref(),
            Some("the mover's")
        );
        assert_eq!(str_at(am, &record, "note"), None);
        assert_eq!(
            str_at(am, &record, "status").as_deref(),
            Some("the mover's")
        );
        // The other partner deleted it after the mover wrote it: deleted it stays.
        assert_eq!(str_at(am, &record, "review"), None);
        // A list still, as it was at the cut: neither the other list nor a lone tag.
        match am.get(&record, "tags")? {
            Some((Value::Object(ObjType::List), tags)) => {
                assert_eq!(am.length(&tags), 1);
                assert_eq!(
                    am.get(&tags, 0)?
                        .map(|(v, _)| v.as_str().map(str::to_owned)),
                    Some(Some("at the cut".to_owned()))
                );
            }
            other => panic!("tags became {other:?}"),
        }
        Ok(())
    }

    #[test]
    fn a_box_goes_to_the_key_a_device_id_was_made_for() {
        let new = |()| PartnerIdentity::generate().unwrap_or_else(|e| panic!("{e}"));
        let (alex, blake) = (new(()), new(()));
        let phone = cert(&blake, None);
        let copy = cert(&alex, Some(phone.device));
        let tablet = cert(&alex, None);
        let claim = |c: &DeviceCertificate| (c.partner, *c);
        for members in [
            vec![claim(&phone), claim(&copy), claim(&tablet)],
            vec![claim(&copy), claim(&tablet), claim(&phone)],
        ] {
            let mut sealed: Vec<DeviceCertificate> = sealed_to(&members, &[])
                .into_iter()
                .map(|(_, c)| c)
                .collect();
            sealed.sort_by_key(|c| c.device);
            let mut want = vec![phone, tablet];
            want.sort_by_key(|c| c.device);
            assert_eq!(sealed, want);
            // Removing the id removes every key under it.
            let left = sealed_to(&members, &[phone.device]);
            assert_eq!(left.len(), 1);
            assert_eq!(left[0].1, tablet);
        }
        // Two keys under an id made for neither (devices from before signing): no box.
        let old = DeviceId::generate();
        let (first, second) = (cert(&alex, Some(old)), cert(&blake, Some(old)));
        assert!(sealed_to(&[claim(&first), claim(&second)], &[]).is_empty());
        // One key certified twice is one claim.
        assert_eq!(sealed_to(&[claim(&first), claim(&first)], &[]).len(), 1);
        // A removed device's key introduced again under another id gets no box there either.
        let mut again = tablet;
        again.device = DeviceId::generate();
        let members = [claim(&tablet), claim(&again), claim(&phone)];
        let left = sealed_to(&members, &[tablet.device]);
        assert_eq!(left.len(), 1);
        assert_eq!(left[0].1, phone);
    }
}
