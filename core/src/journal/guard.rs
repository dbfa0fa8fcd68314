//! Every receiver's check of the couple's changes: which device made each one, and whether
//! its partner could have made it through the API.
//!
//! A chunk of the couple's space carries a [`Bundle`]: each Automerge change with the key id of
//! the device that signed it and its signature, and the introductions ([`Intro`]) of devices
//! a receiver may not know yet. A change's actor begins with its device's key id, so one
//! device cannot sign for another. Before a change is merged, the receiver checks that
//! - the signing device is introduced (its key certified by a partner's identity) and signed it;
//! - every change it depends on is merged here (else it waits; one built on a refused change
//!   is refused with it);
//! - each operation is one its partner could have made through the API.
//!
//! The rules read only the change itself, facts that never change once written (a record's
//! author and kind) and the document as the change's own dependencies left it, never what else
//! this replica happens to hold, so every honest replica refuses the same changes.

use std::collections::{HashMap, HashSet};

use automerge::{
    Change, ChangeHash, ObjId, Prop, ReadDoc, ScalarValue, Value,
    legacy::{Key, ObjectId, OpType},
};

use crate::{
    crypto::{
        CERTIFICATE_LEN, ChangeProof, DeviceCertificate, DevicePublicKey, INTRO_LEN, IdentityKey,
        Intro, KeyId,
    },
    date::LocalDate,
    doc::{MAX_DEPTH, SpaceDoc},
    error::{Error, Result},
    ids::{DeviceId, PartnerId, RecordId},
    model::{
        Kind, QuestionStatus,
        rules::{self, Writer},
    },
};

use super::{
    names::{DEVICE_NAME, MAX_DEVICE_NAME},
    proof::Proof,
    registry::MAX_DEVICES,
};

/// The first byte of a signed bundle. (Automerge's own chunks begin with 0x85, so a chunk from
/// before bundles is told apart.)
const BUNDLE_VERSION: u8 = 1;
/// Introductions one bundle may carry.
const MAX_INTROS: usize = 64;
/// Bytes of an actor made by a device that signs: its key id, then 8 random bytes.
pub(crate) const ACTOR_LEN: usize = 24;
/// Actors from before signing were 16 bytes.
pub(crate) const LEGACY_ACTOR_LEN: usize = 16;

/// One change with the device that signed it. (`Debug` shows its length, never its bytes:
/// they hold journal text.)
#[derive(Clone)]
pub(crate) struct Signed {
    /// The change's bytes.
    pub(crate) bytes: Vec<u8>,
    /// The signing device.
    pub(crate) signer: KeyId,
    /// Its proof.
    pub(crate) proof: Proof,
}

impl std::fmt::Debug for Signed {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Signed")
            .field("bytes", &self.bytes.len())
            .field("signer", &self.signer)
            .finish_non_exhaustive()
    }
}

/// What a signed chunk (or the proof part of a snapshot) holds.
#[derive(Clone, Debug, Default)]
pub(crate) struct Bundle {
    pub(crate) intros: Vec<Intro>,
    pub(crate) changes: Vec<Signed>,
}

impl Bundle {
    /// Whether `plain` is a bundle (as against a chunk from before signing).
    pub(crate) fn is_bundle(plain: &[u8]) -> bool {
        plain.first() == Some(&BUNDLE_VERSION)
    }

    /// `version | intros (u16) | intro… | changes (u32) | (signer 16 | signature 64 | length
    /// u32 | change)…`, big-endian. Every change's proof is its own signature: a group proof
    /// never travels in a chunk (what makes a batch signs its own changes again, and leaves
    /// out the other partner's that only a group proves).
    pub(crate) fn encode(&self) -> Vec<u8> {
        let size = self
            .changes
            .iter()
            .map(|c| 84 + c.bytes.len())
            .sum::<usize>()
            + 7
            + self.intros.len() * INTRO_LEN;
        let mut out = Vec::with_capacity(size);
        out.push(BUNDLE_VERSION);
        let intros = self.intros.len().min(MAX_INTROS);
        out.extend_from_slice(&u16::try_from(intros).unwrap_or(0).to_be_bytes());
        for intro in self.intros.iter().take(intros) {
            out.extend_from_slice(&intro.to_bytes());
        }
        out.extend_from_slice(
            &u32::try_from(self.changes.len())
                .unwrap_or(u32::MAX)
                .to_be_bytes(),
        );
        for c in &self.changes {
            out.extend_from_slice(&c.signer.0);
            out.extend_from_slice(&c.proof.signature());
            out.extend_from_slice(
                &u32::try_from(c.bytes.len())
                    .unwrap_or(u32::MAX)
                    .to_be_bytes(),
            );
            out.extend_from_slice(&c.bytes);
        }
        out
    }

    /// Parses [`Bundle::encode`], refusing anything malformed.
    pub(crate) fn decode(plain: &[u8]) -> Result<Self> {
        let bad = || Error::Invalid("a signed chunk is malformed".into());
        let mut r = Reader(plain);
        if r.take(1).ok_or_else(bad)? != [BUNDLE_VERSION] {
            return Err(bad());
        }
        let intros = usize::from(r.u16().ok_or_else(bad)?);
        if intros > MAX_INTROS {
            return Err(bad());
        }
        let mut bundle = Bundle::default();
        for _ in 0..intros {
            bundle
                .intros
                .push(Intro::from_bytes(r.take(INTRO_LEN).ok_or_else(bad)?)?);
        }
        let count = r.u32().ok_or_else(bad)?;
        for _ in 0..count {
            let signer: [u8; 16] = r.array().ok_or_else(bad)?;
            let proof: [u8; 64] = r.array().ok_or_else(bad)?;
            let len = usize::try_from(r.u32().ok_or_else(bad)?).map_err(|_| bad())?;
            let bytes = r.take(len).ok_or_else(bad)?.to_vec();
            bundle.changes.push(Signed {
                bytes,
                signer: KeyId(signer),
                proof: Proof::One(ChangeProof(proof)),
            });
        }
        if !r.0.is_empty() {
            return Err(bad());
        }
        Ok(bundle)
    }
}

/// Reads fixed-width fields off the front of a byte string.
pub(crate) struct Reader<'a>(pub(crate) &'a [u8]);

impl<'a> Reader<'a> {
    pub(crate) fn take(&mut self, n: usize) -> Option<&'a [u8]> {
        if self.0.len() < n {
            return None;
        }
        let (head, rest) = self.0.split_at(n);
        self.0 = rest;
        Some(head)
    }

    pub(crate) fn array<const N: usize>(&mut self) -> Option<[u8; N]> {
        self.take(N)?.try_into().ok()
    }

    pub(crate) fn u16(&mut self) -> Option<u16> {
        self.array().map(u16::from_be_bytes)
    }

    pub(crate) fn u32(&mut self) -> Option<u32> {
        self.array().map(u32::from_be_bytes)
    }
}

/// Why a change (or an introduction) was refused, for the sync status.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Breach {
    /// Wrote a record in the other partner's name.
    Impersonation,
    /// Consented (or withdrew consent) for the other partner.
    Consent,
    /// Claimed follow-through on a commitment that is not theirs.
    Claim,
    /// Confirmed their own follow-through.
    View,
    /// Answered their own need.
    Response,
    /// Answered their own question, or validated their own words.
    Role,
    /// Set a question's status only the other partner may set.
    QuestionStatus,
    /// Changed what only the record's author may change.
    AuthorOnly,
    /// Edited a record that can only be added.
    AddOnly,
    /// Changed what cannot change after creation.
    Fixed,
    /// Removed what is not theirs to remove.
    Removal,
    /// Replaced a whole consent map, ledger or wording history (hiding every entry in it).
    Wipe,
    /// Wrote a check-in under an id that is not theirs for its date.
    CheckInId,
    /// Filed a record under an id that was not made for them.
    RecordId,
    /// Wrote the other partner's entry in the partners list.
    OtherPartner,
    /// Tried to add a third partner.
    ThirdPartner,
    /// Registered a device certificate that is not theirs to register.
    Certificate,
    /// Claimed another identity for a partner who already has one.
    OtherIdentity,
    /// Registered more devices than a partner may have.
    TooManyDevices,
    /// Recorded a device name that is not a short string under a device id.
    DeviceName,
    /// Changed the journal's structure.
    Structure,
    /// Signed a change made under another device's actor.
    OtherActor,
    /// Sent a signature that does not verify.
    BadSignature,
    /// Came from a device no partner introduced.
    UnknownDevice,
    /// Built on a change that was refused.
    DependsOnRefused,
    /// Could not be read as a change.
    Malformed,
    /// Came without a signature (a device on a version of Mend from before signing).
    Unsigned,
    /// Asked to let a new device in as its own partner, or cancelled an ask naming the other.
    RejoinAsk,
    /// Let a new device in as a partner with no standing ask in its past (never asked, or
    /// cancelled by a device of that partner).
    Unasked,
    /// Wrote a value of a shape the app never writes there (a consent, a ledger entry or a
    /// response that no device could read), or a field the app does not have.
    Shape,
    /// Recorded words under the hash of other words: what a consent was given to.
    Wording,
    /// Replied to itself, or to a record that is not a share.
    Link,
}

impl Breach {
    /// Stable name, for the status and the CLI.
    pub fn code(self) -> &'static str {
        match self {
            Self::Impersonation => "impersonation",
            Self::Consent => "consent",
            Self::Claim => "claim",
            Self::View => "view",
            Self::Response => "response",
            Self::Role => "role",
            Self::QuestionStatus => "question_status",
            Self::AuthorOnly => "author_only",
            Self::AddOnly => "add_only",
            Self::Fixed => "fixed",
            Self::Removal => "removal",
            Self::Wipe => "wipe",
            Self::CheckInId => "check_in_id",
            Self::RecordId => "record_id",
            Self::OtherPartner => "other_partner",
            Self::ThirdPartner => "third_partner",
            Self::Certificate => "certificate",
            Self::OtherIdentity => "other_identity",
            Self::TooManyDevices => "too_many_devices",
            Self::DeviceName => "device_name",
            Self::Structure => "structure",
            Self::OtherActor => "other_actor",
            Self::BadSignature => "bad_signature",
            Self::UnknownDevice => "unknown_device",
            Self::DependsOnRefused => "depends_on_refused",
            Self::Malformed => "malformed",
            Self::Unsigned => "unsigned",
            Self::RejoinAsk => "rejoin_ask",
            Self::Unasked => "rejoin_unasked",
            Self::Shape => "shape",
            Self::Wording => "wording",
            Self::Link => "link",
        }
    }

    /// What the device tried, as the end of "a change from Blake's device … ", where `target`
    /// is whom it tried it on ("you" or the other partner's name).
    pub fn words(self, target: &str) -> String {
        let whose = if target == "you" {
            "your".to_owned()
        } else {
            format!("{target}'s")
        };
        match self {
            Self::Impersonation => format!("tried to write a record as {target}"),
            Self::Consent => format!("tried to consent for {target}"),
            Self::Claim => format!("tried to claim follow-through on {whose} commitment"),
            Self::View => "tried to confirm its own follow-through".into(),
            Self::Response => "tried to answer its own need".into(),
            Self::Role => "tried to answer its own question or validate its own words".into(),
            Self::QuestionStatus => format!("tried to set a question's status for {target}"),
            Self::AuthorOnly => format!("tried to change {whose} record"),
            Self::AddOnly => "tried to edit a record that can only be added".into(),
            Self::Fixed => "tried to change what cannot change after creation".into(),
            Self::Removal => format!("tried to remove what {target} wrote"),
            Self::Wipe => "tried to wipe out a record's consents or ledger".into(),
            Self::CheckInId => "tried to file a check-in under another id".into(),
            Self::RecordId => "tried to file a record under an id that is not its own".into(),
            Self::OtherPartner => format!("tried to change {whose} entry in the partners list"),
            Self::ThirdPartner => "tried to add a third partner".into(),
            Self::Certificate => format!("tried to register a device for {target}"),
            Self::OtherIdentity => format!("tried to give {target} another identity"),
            Self::TooManyDevices => format!("tried to register more than {MAX_DEVICES} devices"),
            Self::DeviceName => {
                format!("tried to record a device name longer than {MAX_DEVICE_NAME} bytes")
            }
            Self::Structure => "tried to change the journal's structure".into(),
            Self::OtherActor => "sent a change made under another device's name".into(),
            Self::BadSignature => "sent a change whose signature does not verify".into(),
            Self::UnknownDevice => "came from a device no partner registered".into(),
            Self::DependsOnRefused => "built on a change that was refused".into(),
            Self::Malformed => "could not be read".into(),
            Self::Unsigned => {
                "was not signed (the device runs a version of Mend from before signing)".into()
            }
            Self::RejoinAsk => {
                "tried to ask or cancel a rejoin that was not its partner's to".into()
            }
            Self::Unasked => format!(
                "tried to let a new device in as {target} without a standing ask ({whose} devices \
                 are asked first and can cancel)"
            ),
            Self::Shape => "tried to write a value the app never writes there".into(),
            Self::Wording => "tried to change the words a consent was given to".into(),
            Self::Link => "tried to reply to something that is not a share".into(),
        }
    }
}

/// One refusal.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct Refused {
    /// The device that signed (or introduced itself).
    pub(crate) signer: KeyId,
    /// Its partner, when known.
    pub(crate) partner: Option<PartnerId>,
    /// What it did.
    pub(crate) breach: Breach,
}

impl Refused {
    /// A refusal of what `signer` sent, naming its partner when this replica knows it.
    fn of(roster: &Roster, signer: KeyId, breach: Breach) -> Self {
        Self {
            signer,
            partner: roster.get(&signer).map(|(p, _)| p),
            breach,
        }
    }
}

/// The devices this replica knows: each key's partner, and each partner's identity.
#[derive(Debug, Default, Clone)]
pub(crate) struct Roster {
    keys: HashMap<KeyId, (PartnerId, DevicePublicKey)>,
    identities: HashMap<PartnerId, IdentityKey>,
    /// Every introduction admitted, in order (a snapshot carries them all).
    intros: Vec<Intro>,
    /// This epoch's first change (`journal/epoch.rs`): built from the old epoch by every
    /// device that moved, or named by the device that paired this one; taken as it is, since
    /// it writes every partner's records and no device made it.
    pub(crate) base: Option<ChangeHash>,
    /// Identities this epoch's first change names for partners whose ids they do not prove:
    /// a partner who lost every device and rejoined, vouched for by the other partner
    /// ([`super::Journal::rotate_for_rejoin`]). Such a partner is admitted with that key only.
    pub(crate) vouched: HashMap<PartnerId, IdentityKey>,
    /// Whether [`Roster::vouched`] was read from the first change (it never changes after).
    vouched_read: bool,
}

impl Roster {
    /// The partner and key of a device.
    pub(crate) fn get(&self, key: &KeyId) -> Option<(PartnerId, DevicePublicKey)> {
        self.keys.get(key).copied()
    }

    /// The keys of a partner's devices introduced here.
    pub(crate) fn keys_of(&self, partner: PartnerId) -> HashSet<KeyId> {
        self.keys
            .iter()
            .filter(|(_, (p, _))| *p == partner)
            .map(|(k, _)| *k)
            .collect()
    }

    /// The identity a partner's devices are introduced with here.
    pub(crate) fn identity_of(&self, partner: PartnerId) -> Option<IdentityKey> {
        self.identities.get(&partner).copied()
    }

    /// Reads [`Roster::vouched`] from `doc`, which holds this epoch's first change.
    pub(crate) fn read_vouched(&mut self, doc: &SpaceDoc) {
        if self.vouched_read {
            return;
        }
        match self.base {
            None => self.vouched_read = true,
            Some(base) if doc.has_change(&base) => {
                self.vouched = vouched_at(doc, base);
                self.vouched_read = true;
            }
            Some(_) => {}
        }
    }

    /// The introduction of a device.
    pub(crate) fn intro(&self, key: &KeyId) -> Option<Intro> {
        self.intros
            .iter()
            .find(|i| i.cert.device_key.key_id() == *key)
            .copied()
    }

    /// Every introduction admitted, in order.
    pub(crate) fn intros(&self) -> Vec<Intro> {
        self.intros.clone()
    }

    /// Admits every introduction of `intros`: returns those new here, and a refusal for each
    /// that is not admitted.
    pub(crate) fn admit_all(
        &mut self,
        intros: &[Intro],
        space_id: &[u8; 32],
    ) -> (Vec<Intro>, Vec<Refused>) {
        let (mut admitted, mut refused) = (Vec::new(), Vec::new());
        for intro in intros {
            match self.admit(intro, space_id) {
                Ok(true) => admitted.push(*intro),
                Ok(false) => {}
                Err(breach) => refused.push(Refused {
                    signer: intro.cert.device_key.key_id(),
                    partner: Some(intro.cert.partner),
                    breach,
                }),
            }
        }
        (admitted, refused)
    }

    /// Admits an introduction: `Ok(true)` when the device is new here.
    ///
    /// A partner whose id the identity key proves ([`Intro::self_certifying`]) is settled by
    /// the key; an older partner's random id is tied to the first identity seen for it. Two
    /// partners at most, [`MAX_DEVICES`] keys each.
    pub(crate) fn admit(
        &mut self,
        intro: &Intro,
        space_id: &[u8; 32],
    ) -> std::result::Result<bool, Breach> {
        let key_id = intro.cert.device_key.key_id();
        let partner = intro.cert.partner;
        if intro.verify(space_id).is_err() {
            return Err(Breach::Certificate);
        }
        // An id derived from an identity key (a version 8 UUID) admits only that key, or the
        // one this epoch's first change vouches for.
        match self.vouched.get(&partner) {
            Some(key) if *key != intro.identity => return Err(Breach::OtherIdentity),
            Some(_) => {}
            None if partner.as_uuid().get_version_num() == 8 && !intro.self_certifying() => {
                return Err(Breach::OtherIdentity);
            }
            None => {}
        }
        match self.identities.get(&partner) {
            Some(known) if *known != intro.identity => return Err(Breach::OtherIdentity),
            Some(_) => {}
            None => {
                if self.identities.len() >= 2 {
                    return Err(Breach::ThirdPartner);
                }
            }
        }
        if let Some((p, _)) = self.keys.get(&key_id) {
            return if *p == partner {
                Ok(false)
            } else {
                Err(Breach::Certificate)
            };
        }
        let devices = self.keys.values().filter(|(p, _)| *p == partner).count();
        if devices >= MAX_DEVICES {
            return Err(Breach::TooManyDevices);
        }
        self.identities.insert(partner, intro.identity);
        self.keys.insert(key_id, (partner, intro.cert.device_key));
        self.intros.push(*intro);
        Ok(true)
    }
}

/// The identities `base` (an epoch's first change) names for partners whose ids they do not
/// prove (see [`Roster::vouched`]): the earliest claim of each such partner, as the registry
/// picks it.
fn vouched_at(doc: &SpaceDoc, base: ChangeHash) -> HashMap<PartnerId, IdentityKey> {
    let (am, heads) = (doc.am(), [base]);
    let mut out = HashMap::new();
    let Ok(Some((Value::Object(_), partners))) = am.get_at(automerge::ROOT, "partners", &heads)
    else {
        return out;
    };
    for id in am.keys_at(&partners, &heads) {
        let (Ok(partner), Ok(Some((Value::Object(_), entry)))) = (
            id.parse::<PartnerId>(),
            am.get_at(&partners, id.as_str(), &heads),
        ) else {
            continue;
        };
        let mut claims: Vec<(i64, [u8; 32])> = Vec::new();
        for key in am.keys_at(&entry, &heads) {
            let Some(hex_key) = key.strip_prefix(super::registry::IDENTITY) else {
                continue;
            };
            let mut bytes = [0u8; 32];
            if hex::decode_to_slice(hex_key, &mut bytes).is_err() {
                continue;
            }
            if let Ok(Some((Value::Scalar(at), _))) = am.get_at(&entry, key.as_str(), &heads)
                && let ScalarValue::Int(at) = at.as_ref()
            {
                claims.push((*at, bytes));
            }
        }
        claims.sort();
        if let Some(key) = claims
            .iter()
            .find_map(|(_, key)| IdentityKey::from_bytes(key).ok())
            && partner.as_uuid().get_version_num() == 8
            && key.partner_id() != partner
        {
            out.insert(partner, key);
        }
    }
    out
}

/// What a pass of the guard decided.
#[derive(Debug, Default)]
pub(crate) struct Verdicts {
    /// Merged into the document, in order, with their proofs.
    pub(crate) accepted: Vec<(ChangeHash, Signed)>,
    /// Waiting for changes they depend on.
    pub(crate) held: Vec<(ChangeHash, Signed)>,
    /// Refused, with why.
    pub(crate) refused: Vec<Refused>,
    /// Hashes refused for good: whatever depends on them is refused too.
    pub(crate) banned: Vec<ChangeHash>,
    /// Introductions admitted.
    pub(crate) intros: Vec<Intro>,
    /// Automerge refused a change the rules passed: the document in memory is loaded again.
    pub(crate) apply_failed: bool,
    /// Proofs for changes this replica already held without one (a change from before signing,
    /// vouched for now by its partner's device): kept, so its snapshots carry them.
    pub(crate) known: Vec<(ChangeHash, Signed)>,
}

/// Checks `pending` (changes that came now and changes held before) and merges into `doc`
/// each one that passes, in an order where every change follows what it depends on.
pub(crate) fn run(
    doc: &mut SpaceDoc,
    roster: &mut Roster,
    banned: &HashSet<ChangeHash>,
    space_id: &[u8; 32],
    intros: &[Intro],
    pending: Vec<Signed>,
) -> Result<Verdicts> {
    // This epoch's first change goes in before any introduction is judged: it names the
    // identity a rejoined partner's devices are introduced with.
    let mut seen = HashSet::new();
    let mut first = Vec::new();
    if let Some(base) = roster.base
        && !doc.has_change(&base)
    {
        for signed in &pending {
            if let Ok(change) = Change::from_bytes(signed.bytes.clone())
                && change.hash() == base
            {
                if change.deps().iter().all(|d| doc.has_change(d))
                    && doc.apply_change(change).is_ok()
                {
                    seen.insert(base);
                    first.push((base, signed.clone()));
                }
                break;
            }
        }
    }
    roster.read_vouched(doc);
    let (admitted, refused) = roster.admit_all(intros, space_id);
    let mut out = Verdicts {
        intros: admitted,
        refused,
        accepted: first,
        ..Verdicts::default()
    };
    let mut refused_now: HashSet<ChangeHash> = HashSet::new();
    let mut queue: Vec<(Change, Signed)> = Vec::new();
    for signed in pending {
        let change = match Change::from_bytes(signed.bytes.clone()) {
            Ok(c) => c,
            Err(_) => {
                out.refused
                    .push(Refused::of(roster, signed.signer, Breach::Malformed));
                continue;
            }
        };
        let hash = change.hash();
        if !seen.insert(hash) || banned.contains(&hash) {
            // Refused for good before: not judged (nor reported) again.
            continue;
        }
        if doc.has_change(&hash) {
            // Held already. A proof for it is kept if it holds, for the snapshots this replica
            // makes (a change from before signing, vouched for now).
            if judge(doc, roster, space_id, &change, &signed, None).is_ok() {
                out.known.push((hash, signed));
            }
            continue;
        }
        // What needs no dependency is checked before a change may wait for one: only an
        // introduced device's own, verified change is held. A refusal for good is one here
        // too, so what builds on it is refused with it instead of held for it.
        if roster.base != Some(hash)
            && let Err((breach, ban)) = authenticate(roster, space_id, &change, &signed, None)
        {
            out.refused.push(Refused::of(roster, signed.signer, breach));
            // Kept for good only when a member's device signed it: what anyone else sends is
            // dropped as it comes, and never grows the list kept on disk.
            if ban && signed_by_a_member(roster, space_id, &change, &signed) {
                refused_now.insert(hash);
                out.banned.push(hash);
            }
            continue;
        }
        queue.push((change, signed));
    }
    // Passes until nothing more can be decided: a change whose dependencies came later in the
    // queue is decided on a later pass.
    loop {
        let mut progress = false;
        let mut waiting = Vec::new();
        for (change, signed) in queue {
            let hash = change.hash();
            if change
                .deps()
                .iter()
                .any(|d| banned.contains(d) || refused_now.contains(d))
            {
                out.refused
                    .push(Refused::of(roster, signed.signer, Breach::DependsOnRefused));
                refused_now.insert(hash);
                out.banned.push(hash);
                progress = true;
                continue;
            }
            if !change.deps().iter().all(|d| doc.has_change(d)) {
                waiting.push((change, signed));
                continue;
            }
            progress = true;
            let own_actor = change.actor_id().to_bytes().len() == ACTOR_LEN;
            let mut apply_failed = false;
            let judged = if roster.base == Some(hash) {
                Ok(())
            } else {
                judge(doc, roster, space_id, &change, &signed, Some(true))
            };
            let verdict = judged.and_then(|()| {
                // Automerge refuses what the rules cannot see (a sequence number used twice
                // under one actor): refused like any other, never an error that stops sync.
                doc.apply_change(change).map_err(|_| {
                    apply_failed = true;
                    (Breach::Malformed, own_actor)
                })
            });
            match verdict {
                Ok(()) => {
                    out.accepted.push((hash, signed));
                }
                Err((breach, ban)) => {
                    out.apply_failed |= apply_failed;
                    out.refused.push(Refused::of(roster, signed.signer, breach));
                    if ban {
                        refused_now.insert(hash);
                        out.banned.push(hash);
                    }
                }
            }
        }
        queue = waiting;
        if !progress || queue.is_empty() {
            break;
        }
    }
    out.held = queue.into_iter().map(|(c, s)| (c.hash(), s)).collect();
    Ok(out)
}

/// Judges a snapshot's changes that this replica lacks, in the snapshot's order (each after
/// what it depends on), against `scratch`: the snapshot's own document, which holds every one
/// of them and their past. Merges nothing. A change with no proof is refused.
pub(crate) fn judge_closed(
    scratch: &SpaceDoc,
    roster: &mut Roster,
    banned: &HashSet<ChangeHash>,
    space_id: &[u8; 32],
    intros: &[Intro],
    changes: Vec<(Change, Option<Signed>)>,
) -> (Vec<Intro>, Vec<Refused>) {
    roster.read_vouched(scratch);
    let (admitted, mut refused) = roster.admit_all(intros, space_id);
    let verified = verify_all(roster, space_id, &changes);
    let mut refused_now: HashSet<ChangeHash> = HashSet::new();
    for ((change, signed), signature_ok) in changes.into_iter().zip(verified) {
        let hash = change.hash();
        let signer = signed.as_ref().map_or(KeyId([0; 16]), |s| s.signer);
        let verdict = if roster.base == Some(hash) {
            Ok(())
        } else if banned.contains(&hash) {
            Err(Breach::Malformed)
        } else if change
            .deps()
            .iter()
            .any(|d| banned.contains(d) || refused_now.contains(d))
        {
            Err(Breach::DependsOnRefused)
        } else {
            match &signed {
                Some(signed) => judge(
                    scratch,
                    roster,
                    space_id,
                    &change,
                    signed,
                    Some(signature_ok),
                )
                .map_err(|(b, _)| b),
                None => Err(Breach::Unsigned),
            }
        };
        if let Err(breach) = verdict {
            refused_now.insert(hash);
            refused.push(Refused::of(roster, signer, breach));
        }
    }
    (admitted, refused)
}

/// Checks the signatures of `changes` (those from introduced devices) on every core: a
/// snapshot of a large journal holds thousands. One entry per change; `true` where there is
/// nothing to check here (`judge` then says why).
fn verify_all(
    roster: &Roster,
    space_id: &[u8; 32],
    changes: &[(Change, Option<Signed>)],
) -> Vec<bool> {
    let work: Vec<Option<(DevicePublicKey, [u8; 32], Proof)>> = changes
        .iter()
        .map(|(change, signed)| {
            let signed = signed.as_ref()?;
            let (_, key) = roster.get(&signed.signer)?;
            Some((key, change.hash().0, signed.proof.clone()))
        })
        .collect();
    let check = |item: &Option<(DevicePublicKey, [u8; 32], Proof)>| match item {
        Some((key, hash, proof)) => proof.verify(key, space_id, hash),
        None => true,
    };
    let threads = std::thread::available_parallelism().map_or(1, |n| n.get().min(8));
    if threads < 2 || work.len() < 256 {
        return work.iter().map(check).collect();
    }
    let per = work.len().div_ceil(threads);
    std::thread::scope(|scope| {
        let parts: Vec<_> = work
            .chunks(per)
            .map(|part| {
                (
                    part.len(),
                    scope.spawn(move || part.iter().map(check).collect::<Vec<bool>>()),
                )
            })
            .collect();
        parts
            .into_iter()
            .flat_map(|(len, h)| h.join().unwrap_or_else(|_| vec![false; len]))
            .collect()
    })
}

/// Accepts or refuses one change whose dependencies are all merged. The flag says whether the
/// refusal is for good (the change's own device signed it): a change from before signing that
/// one device vouched for may still pass with its own author's word.
fn judge(
    doc: &SpaceDoc,
    roster: &Roster,
    space_id: &[u8; 32],
    change: &Change,
    signed: &Signed,
    verified: Option<bool>,
) -> std::result::Result<(), (Breach, bool)> {
    let (partner, own_actor) = authenticate(roster, space_id, change, signed, verified)?;
    let identity = roster.identities.get(&partner).copied();
    let others: Vec<PartnerId> = roster
        .identities
        .keys()
        .filter(|p| **p != partner)
        .copied()
        .collect();
    // A panic in a check (an input no rule foresaw reaching Automerge) refuses the change
    // rather than stopping every device at the same chunk on every start.
    let checked = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
        check_ops(doc, change, partner, identity, &others)
    }))
    .unwrap_or(Err(Breach::Malformed));
    checked.map_err(|b| (b, own_actor))
}

/// Which partner's device signed `change`, and whether under its own actor: everything about
/// a change that needs nothing it depends on.
fn authenticate(
    roster: &Roster,
    space_id: &[u8; 32],
    change: &Change,
    signed: &Signed,
    verified: Option<bool>,
) -> std::result::Result<(PartnerId, bool), (Breach, bool)> {
    let actor = change.actor_id().to_bytes();
    let own_actor = match actor.len() {
        ACTOR_LEN => {
            if actor[..16] != signed.signer.0 {
                return Err((Breach::OtherActor, false));
            }
            true
        }
        // The genesis actor made one change, the same everywhere: nobody writes under it.
        LEGACY_ACTOR_LEN if actor.iter().all(|b| *b == 0) => {
            return Err((Breach::OtherActor, false));
        }
        // An epoch's actor makes that epoch's first change, which every device that moves
        // builds itself and which is taken only as the base it names: nobody signs under it.
        // (Taken as a change from before signing, it would sit among the history as a first
        // change of an epoch that never began, for a restore to start in.)
        LEGACY_ACTOR_LEN if crate::doc::rebuild::epoch_of_actor(change.actor_id()).is_some() => {
            return Err((Breach::OtherActor, true));
        }
        LEGACY_ACTOR_LEN => false,
        _ => return Err((Breach::Malformed, true)),
    };
    let Some((partner, key)) = roster.get(&signed.signer) else {
        return Err((Breach::UnknownDevice, false));
    };
    let ok = verified.unwrap_or_else(|| signed.proof.verify(&key, space_id, &change.hash().0));
    if !ok {
        return Err((Breach::BadSignature, false));
    }
    Ok((partner, own_actor))
}

/// Whether an introduced device signed `change`, whatever else is wrong with it.
fn signed_by_a_member(
    roster: &Roster,
    space_id: &[u8; 32],
    change: &Change,
    signed: &Signed,
) -> bool {
    roster
        .get(&signed.signer)
        .is_some_and(|(_, key)| signed.proof.verify(&key, space_id, &change.hash().0))
}

/// Whether partner `me` could have made `change` through the API (its signature aside).
pub(crate) fn rules_allow(doc: &SpaceDoc, change: &Change, me: PartnerId) -> bool {
    check_ops(doc, change, me, None, &[]).is_ok()
}

/// Where an object sits: its path from the root, and the record map it belongs to.
#[derive(Clone, Debug)]
struct Loc {
    path: Vec<String>,
    /// The record map (as `counter@actor`) when the object is a record or inside one.
    record: Option<String>,
    /// What kind of object it is: a map takes keys, a list positions.
    list: bool,
}

/// What a record is, from the change that created it or from the document.
#[derive(Clone, Debug, Default)]
struct Facts {
    kind: Option<String>,
    author: Option<String>,
    local_date: Option<String>,
    question: Option<String>,
    target: Option<String>,
    share: Option<String>,
}

fn str_value(action: &OpType) -> Option<String> {
    match action {
        OpType::Put(ScalarValue::Str(s)) => Some(s.to_string()),
        _ => None,
    }
}

fn segment_of(key: &Key) -> String {
    match key {
        Key::Map(k) => k.to_string(),
        Key::Seq(_) => "#".into(),
    }
}

/// Most operations one change may carry: the app's largest write is a record of a few
/// dozen fields; an import of many records is many changes.
const MAX_OPS: usize = 50_000;

/// Checks every operation of `change` against what partner `me` may do through the API.
/// `identity` is `me`'s identity key as this replica knows it (identity claims must name it).
fn check_ops(
    doc: &SpaceDoc,
    change: &Change,
    me: PartnerId,
    identity: Option<IdentityKey>,
    others: &[PartnerId],
) -> std::result::Result<(), Breach> {
    if change.len() > MAX_OPS {
        return Err(Breach::Malformed);
    }
    let expanded = change.decode();
    let start = change.start_op().get();
    let actor = change.actor_id().to_hex_string();
    let me_text = me.to_string();
    let deps = change.deps();
    let mut made: HashMap<String, Loc> = HashMap::new();
    let mut made_records: HashMap<String, String> = HashMap::new();
    let mut facts: HashMap<String, Facts> = HashMap::new();
    // Each record's last `removed` value in this change: a removal is judged on where the
    // change leaves the record, not on a `true` it takes back.
    let mut removed_final: HashMap<String, bool> = HashMap::new();
    // Objects this change did not make, each checked once: it must exist, where the change's
    // own past holds it.
    let mut known: HashMap<String, Option<Loc>> = HashMap::new();
    let mut locs: Vec<(Loc, String, &OpType)> = Vec::with_capacity(expanded.operations.len());
    // Whether each operation writes into an object this change made (or the root).
    let mut fresh: Vec<bool> = Vec::with_capacity(expanded.operations.len());
    // First pass: where each operation writes, and what the records made here say.
    for (i, op) in expanded.operations.iter().enumerate() {
        let id = format!("{}@{actor}", start.saturating_add(i as u64));
        let loc = match &op.obj {
            ObjectId::Root => {
                fresh.push(true);
                Loc {
                    path: Vec::new(),
                    record: None,
                    list: false,
                }
            }
            ObjectId::Id(obj) => {
                let key = obj.to_string();
                fresh.push(made.contains_key(&key));
                let found = match made.get(&key) {
                    Some(loc) => loc,
                    None => known
                        .entry(key)
                        .or_insert_with_key(|key| locate_at(doc, key, deps))
                        .as_ref()
                        .ok_or(Breach::Structure)?,
                };
                // Deeper than the app ever writes: refused before its path is copied, so a
                // chain of nested maps costs a few steps to refuse, not a copy per level.
                if found.path.len() >= MAX_DEPTH {
                    return Err(Breach::Structure);
                }
                found.clone()
            }
        };
        // A map takes keys and a list positions: Automerge itself does not check, and an
        // operation of the wrong shape corrupts the document (the app writes none).
        match (&op.key, loc.list) {
            (Key::Map(_), false) if !op.insert => {}
            (Key::Seq(_), true) => {}
            _ => return Err(Breach::Structure),
        }
        let segment = segment_of(&op.key);
        if let OpType::Make(kind) = op.action {
            let list = match kind {
                automerge::ObjType::Map => false,
                automerge::ObjType::List => true,
                // The journal keeps no text or table objects.
                _ => return Err(Breach::Structure),
            };
            let mut path = loc.path.clone();
            path.push(segment.clone());
            let record = if path.len() == 2 && path[0] == "records" {
                facts.insert(id.clone(), Facts::default());
                // One record per id and change: a second map made beside the first (one that
                // does not replace it) would stand as a conflicting version of the record
                // that the creation check, which reads the last, never saw.
                if made_records.insert(path[1].clone(), id.clone()).is_some() {
                    return Err(Breach::Structure);
                }
                Some(id.clone())
            } else {
                loc.record.clone()
            };
            made.insert(id, Loc { path, record, list });
        }
        if loc.path.len() == 2
            && loc.path[0] == "records"
            && let Some(record) = &loc.record
        {
            if segment == "removed" {
                let removed = matches!(op.action, OpType::Put(ScalarValue::Boolean(true)));
                removed_final.insert(record.clone(), removed);
            }
            if let Some(f) = facts.get_mut(record) {
                let value = str_value(&op.action);
                match segment.as_str() {
                    "kind" => f.kind = value,
                    "author" => f.author = value,
                    "local_date" => f.local_date = value,
                    "question" => f.question = value,
                    "target" => f.target = value,
                    "share" => f.share = value,
                    _ => {}
                }
            }
        }
        locs.push((loc, segment, &op.action));
    }
    let fact_of = |record: &str| -> Facts {
        match facts.get(record) {
            Some(f) => f.clone(),
            None => stored_facts(doc, record),
        }
    };
    for ((loc, segment, action), fresh) in locs.iter().zip(&fresh) {
        let mut path = loc.path.clone();
        path.push(segment.clone());
        match path.first().map(String::as_str) {
            Some(key) if key.starts_with(super::epoch::EPOCH_KEY) => {
                check_epoch(doc, deps, &path, action, *fresh, &me_text)?;
            }
            Some(key) if key.starts_with(super::rejoin::ASK_KEY) => {
                check_ask(&path, action, *fresh, &me_text)?;
            }
            Some("schema_version") if path.len() == 1 => {
                if !matches!(
                    action,
                    OpType::Put(ScalarValue::Int(_) | ScalarValue::Uint(_))
                ) {
                    return Err(Breach::Structure);
                }
            }
            Some("partners") if path.len() >= 2 => {
                check_partner(doc, deps, &path, action, &me_text, identity)?;
            }
            Some("records") if path.len() == 2 => {
                let OpType::Make(_) = action else {
                    return Err(Breach::Removal);
                };
                let Some(record) = made_records.get(&path[1]) else {
                    return Err(Breach::Structure);
                };
                check_creation(
                    doc,
                    deps,
                    &path[1],
                    &fact_of(record),
                    (&me_text, me),
                    others,
                )?;
            }
            Some("records") if path.len() >= 3 => {
                let Some(record) = &loc.record else {
                    return Err(Breach::Structure);
                };
                let created_here = facts.contains_key(record);
                let removing = removed_final.get(record) == Some(&true);
                let f = fact_of(record);
                if !created_here && removed_at(doc, record, deps) {
                    // A removed record is a placeholder: nothing is written into it again.
                    return Err(Breach::Removal);
                }
                check_field(
                    doc,
                    deps,
                    record,
                    &f,
                    (created_here, removing),
                    &path[2..],
                    action,
                    &me_text,
                )?;
            }
            _ => return Err(Breach::Structure),
        }
    }
    Ok(())
}

/// An announcement of a new epoch (`epoch:<n>` at the root, see `journal/epoch.rs`): made
/// whole in one change, under a key no announcement holds yet in the change's own past, and
/// never written into afterwards; naming its writer's partner as `by`; strings, integers,
/// bytes, lists and maps only.
fn check_epoch(
    doc: &SpaceDoc,
    deps: &[ChangeHash],
    path: &[String],
    action: &OpType,
    fresh: bool,
    me: &str,
) -> std::result::Result<(), Breach> {
    if !fresh {
        return Err(Breach::Structure);
    }
    // An announcement is its writer's own: it names the writer's partner, never the other.
    if path.len() == 2
        && path[1] == "by"
        && !matches!(action, OpType::Put(ScalarValue::Str(by)) if by.as_str() == me)
    {
        return Err(Breach::OtherPartner);
    }
    // Only the other partner vouches for a partner's new identity (a rejoin): a device cannot
    // hand its own partner's identity to a key of its choosing.
    if path.len() == 2 && path[1] == "rejoin" {
        let other = match action {
            OpType::Put(ScalarValue::Str(p)) => p
                .parse::<PartnerId>()
                .ok()
                .filter(|id| id.to_string() == p.as_str())
                .is_some_and(|id| Some(id) != me.parse::<PartnerId>().ok()),
            _ => false,
        };
        if !other {
            return Err(Breach::OtherIdentity);
        }
        // ... and only once the devices it replaces were asked, and none of them cancelled.
        let named = match action {
            OpType::Put(ScalarValue::Str(p)) => p.parse::<PartnerId>().ok(),
            _ => None,
        };
        let standing = named
            .and_then(|partner| super::rejoin::read_ask(doc, partner, Some(deps)))
            .is_some_and(|ask| {
                ask.cancelled_at.is_none() && ask.asked_by.to_string().as_str() == me
            });
        if !standing {
            return Err(Breach::Unasked);
        }
    }
    if path.len() == 1 {
        let number = path[0]
            .strip_prefix(super::epoch::EPOCH_KEY)
            .unwrap_or_default();
        let valid = number
            .parse::<u32>()
            .is_ok_and(|n| n > 0 && n.to_string() == number);
        let taken = matches!(
            doc.am().get_at(automerge::ROOT, path[0].as_str(), deps),
            Ok(Some(_))
        );
        if !valid || taken || !matches!(action, OpType::Make(automerge::ObjType::Map)) {
            return Err(Breach::Structure);
        }
        return Ok(());
    }
    match action {
        OpType::Make(automerge::ObjType::Map | automerge::ObjType::List)
        | OpType::Put(ScalarValue::Str(_) | ScalarValue::Int(_) | ScalarValue::Bytes(_)) => Ok(()),
        _ => Err(Breach::Structure),
    }
}

/// An ask to rejoin (`rejoin_ask:<partner>` at the root, see `journal/rejoin.rs`): made whole
/// in one change by a device of the other partner than the one it names (`by` its writer's
/// partner, `at` an integer), and afterwards written into only to cancel it, by a device of the
/// partner it names.
fn check_ask(
    path: &[String],
    action: &OpType,
    fresh: bool,
    me: &str,
) -> std::result::Result<(), Breach> {
    let named = path[0]
        .strip_prefix(super::rejoin::ASK_KEY)
        .and_then(|p| p.parse::<PartnerId>().ok().filter(|id| id.to_string() == p));
    let Some(named) = named else {
        return Err(Breach::Structure);
    };
    let mine = named.to_string() == me;
    match (path.len(), path.get(1).map(String::as_str), fresh) {
        (1, _, _) if matches!(action, OpType::Make(automerge::ObjType::Map)) => {
            if mine {
                Err(Breach::RejoinAsk)
            } else {
                Ok(())
            }
        }
        (2, Some("by"), true) => match action {
            OpType::Put(ScalarValue::Str(by)) if by.as_str() == me => Ok(()),
            _ => Err(Breach::RejoinAsk),
        },
        (2, Some("at"), true) if is_date(action) => Ok(()),
        (2, Some("cancelled"), false) if is_date(action) => {
            if mine {
                Ok(())
            } else {
                Err(Breach::RejoinAsk)
            }
        }
        _ => Err(Breach::Structure),
    }
}

/// A time an ask or a cancel may carry: unix ms from 1970 to 9999.
fn is_date(action: &OpType) -> bool {
    matches!(action, OpType::Put(ScalarValue::Int(at)) if (0..=super::rejoin::LATEST_MS).contains(at))
}

/// Where an existing object sits, if the change's own past (`deps`) holds it there: every
/// step of its path must be visible at `deps` (objects never move, but a change must not
/// write into one its author could not see).
fn locate_at(doc: &SpaceDoc, obj: &str, deps: &[ChangeHash]) -> Option<Loc> {
    let (ex, kind) = doc.am().import(obj).ok()?;
    let list = match kind {
        automerge::ObjType::Map => false,
        automerge::ObjType::List => true,
        _ => return None,
    };
    // Walked up no further than the deepest path a change may write into (a replica from
    // before that bound may hold deeper chains).
    let mut parents: Vec<(ObjId, Prop)> = doc
        .am()
        .parents(&ex)
        .ok()?
        .take(MAX_DEPTH.saturating_add(1))
        .map(|p| (p.obj, p.prop))
        .collect();
    if parents.len() > MAX_DEPTH {
        return None;
    }
    parents.reverse();
    // The maps every replica starts with (the genesis change's) are in every past.
    let genesis = obj.ends_with(&format!("@{}", "0".repeat(32)));
    let mut path = Vec::with_capacity(parents.len());
    for (i, (parent, prop)) in parents.iter().enumerate() {
        let child = parents.get(i + 1).map_or(&ex, |(next, _)| next);
        // A list position moves with later inserts; the app never writes into an element of
        // a list it did not make in the same change, so only map steps are checked.
        let seen = genesis
            || matches!(prop, Prop::Seq(_))
            || doc
                .am()
                .get_all_at(parent, prop.clone(), deps)
                .ok()?
                .into_iter()
                .any(|(_, id)| id == *child);
        if !seen {
            return None;
        }
        path.push(match prop {
            Prop::Map(k) => k.clone(),
            Prop::Seq(_) => "#".into(),
        });
    }
    let record = if path.len() >= 2 && path[0] == "records" {
        match parents.get(2) {
            Some((record, _)) => Some(record.to_string()),
            None => Some(ex.to_string()),
        }
    } else {
        None
    };
    Some(Loc { path, record, list })
}

/// Whether the record map `record` is marked removed where `deps` leave it.
fn removed_at(doc: &SpaceDoc, record: &str, deps: &[ChangeHash]) -> bool {
    let Ok(obj) = doc.am().import_obj(record) else {
        return false;
    };
    matches!(
        doc.am().get_at(&obj, "removed", deps),
        Ok(Some((Value::Scalar(s), _))) if matches!(s.as_ref(), ScalarValue::Boolean(true))
    )
}

fn read_str(doc: &SpaceDoc, obj: &ObjId, key: &str) -> Option<String> {
    match doc.am().get(obj, key) {
        Ok(Some((Value::Scalar(s), _))) => s.as_str().map(str::to_owned),
        _ => None,
    }
}

/// A record's facts as the document holds them. Written once, by the change that made the
/// record (a receiver refuses any later write of them), so any state that holds the record
/// holds the same facts.
fn stored_facts(doc: &SpaceDoc, record: &str) -> Facts {
    let Ok(obj) = doc.am().import_obj(record) else {
        return Facts::default();
    };
    Facts {
        kind: read_str(doc, &obj, "kind"),
        author: read_str(doc, &obj, "author"),
        local_date: read_str(doc, &obj, "local_date"),
        question: read_str(doc, &obj, "question"),
        target: read_str(doc, &obj, "target"),
        // Only a reply's creation reads its share, from the change that makes it.
        share: None,
    }
}

/// The kind of the record at id `id` as the change's own past shows it (of maps made there
/// concurrently, the one every replica reads, as the writer's own check did).
fn kind_at(doc: &SpaceDoc, id: &str, deps: &[ChangeHash]) -> Option<String> {
    let (_, obj) = doc.am().get_at(doc.records_obj(), id, deps).ok()??;
    match doc.am().get_at(&obj, "kind", deps) {
        Ok(Some((Value::Scalar(s), _))) => s.as_str().map(str::to_owned),
        _ => None,
    }
}

/// The authors of the record maps at id `id`, as the change's own past holds them.
fn authors_at(doc: &SpaceDoc, id: &str, deps: &[ChangeHash]) -> Vec<Option<String>> {
    let Ok(found) = doc.am().get_all_at(doc.records_obj(), id, deps) else {
        return Vec::new();
    };
    found
        .into_iter()
        .map(|(_, obj)| match doc.am().get_at(&obj, "author", deps) {
            Ok(Some((Value::Scalar(s), _))) => s.as_str().map(str::to_owned),
            _ => None,
        })
        .collect()
}

fn check_partner(
    doc: &SpaceDoc,
    deps: &[ChangeHash],
    path: &[String],
    action: &OpType,
    me: &str,
    identity: Option<IdentityKey>,
) -> std::result::Result<(), Breach> {
    if path[1] != me {
        return Err(if PartnerId::parse_canonical(&path[1]).is_some() {
            Breach::OtherPartner
        } else {
            Breach::Structure
        });
    }
    if path.len() == 2 {
        // Joining: an entry made once, by a partner the couple has room for.
        let OpType::Make(_) = action else {
            return Err(Breach::Structure);
        };
        let partners = doc.partners_obj();
        let before: Vec<String> = doc.am().keys_at(partners, deps).collect();
        if before.iter().any(|p| p == me) {
            return Err(Breach::Structure);
        }
        if before.len() >= 2 {
            return Err(Breach::ThirdPartner);
        }
        return Ok(());
    }
    if path.len() == 3
        && let Some(device) = path[2].strip_prefix("device:")
    {
        let OpType::Put(ScalarValue::Bytes(bytes)) = action else {
            return Err(Breach::Certificate);
        };
        let cert = DeviceCertificate::from_bytes(bytes).map_err(|_| Breach::Certificate)?;
        if bytes.len() != CERTIFICATE_LEN
            || cert.partner.to_string() != me
            || cert.device.to_string() != device
        {
            return Err(Breach::Certificate);
        }
    }
    if let Some(device) = path[2].strip_prefix(DEVICE_NAME) {
        // A short string under a device id in its one spelling (the entry is already this
        // partner's: the other partner's devices never get here).
        let named = device
            .parse::<DeviceId>()
            .is_ok_and(|d| d.to_string() == device);
        let OpType::Put(ScalarValue::Str(name)) = action else {
            return Err(Breach::DeviceName);
        };
        if path.len() != 3 || !named || name.len() > MAX_DEVICE_NAME {
            return Err(Breach::DeviceName);
        }
    }
    if path.len() == 3
        && path[2] == super::erase::ERASED_AT
        && !matches!(
            action,
            OpType::Put(ScalarValue::Int(_) | ScalarValue::Uint(_))
        )
    {
        // The erase marker is a time, nothing else.
        return Err(Breach::Structure);
    }
    if path.len() == 3
        && let Some(key) = path[2].strip_prefix("identity:")
        && let Some(identity) = identity
        && key != hex::encode(identity.to_bytes())
    {
        // A partner's devices all claim the identity they were introduced with.
        return Err(Breach::OtherIdentity);
    }
    Ok(())
}

fn check_creation(
    doc: &SpaceDoc,
    deps: &[ChangeHash],
    id: &str,
    facts: &Facts,
    (me_text, me): (&str, PartnerId),
    others: &[PartnerId],
) -> std::result::Result<(), Breach> {
    let Some(rid) = RecordId::parse_canonical(id) else {
        return Err(Breach::Structure);
    };
    if facts.author.as_deref() != Some(me_text) {
        return Err(Breach::Impersonation);
    }
    let kind: Option<Kind> = facts.kind.as_deref().and_then(|k| k.parse().ok());
    let date: Option<LocalDate> = facts.local_date.as_deref().and_then(|d| d.parse().ok());
    let check_in_id = date.map(|d| RecordId::derive_check_in(me, d));
    let here = authors_at(doc, id, deps);
    if here.iter().any(|a| a.as_deref() != Some(me_text)) {
        // A record already at this id, as the change's own past holds it, is its author's.
        return Err(Breach::Impersonation);
    }
    if kind == Some(Kind::CheckIn) {
        // A check-in's id is its author's for its date.
        if check_in_id != Some(rid) {
            return Err(Breach::CheckInId);
        }
    } else if others.iter().any(|p| rid.bound_to(*p)) {
        // Made for the other partner: never theirs to file, whatever past the change claims
        // (the other partner is introduced before any record of theirs reaches a replica).
        return Err(Breach::RecordId);
    } else if !rid.bound_to(me) && here.is_empty() {
        // A new record's id is made for its author (`RecordId::generate_for`). An id from
        // before that may be filed again only by its author (sharing a private note): then
        // nothing else may stand at it in this replica either, or the partner who saw an id
        // could file a record of theirs beside it from a past of their choosing.
        let records = doc.records_obj();
        let elsewhere = doc
            .am()
            .get_all(records, id)
            .unwrap_or_default()
            .into_iter()
            .any(|(_, obj)| read_str(doc, &obj, "author").as_deref() != Some(me_text));
        if elsewhere || rid.as_uuid().get_version_num() != 7 {
            return Err(Breach::RecordId);
        }
    }
    let link_author = |link: &Option<String>| -> std::result::Result<Option<String>, Breach> {
        let Some(link) = link else { return Ok(None) };
        if RecordId::parse_canonical(link).is_none() {
            return Err(Breach::Structure);
        }
        let authors = authors_at(doc, link, deps);
        // What it links to must be in its past.
        authors.into_iter().next().ok_or(Breach::Role)
    };
    let link = match kind {
        Some(Kind::Answer) => &facts.question,
        Some(Kind::Validation) => &facts.target,
        _ => &None,
    };
    if link_author(link)?.as_deref() == Some(me_text) {
        return Err(Breach::Role);
    }
    // A reply answers a share: never itself, nor a record of another kind in its past, so
    // replies cannot chain one under another. (One whose share has not reached this replica
    // yet stands: an epoch move replays a reply whose share came after the cut. Readers lay
    // each record out once, so replies written for each other loop nothing.)
    if kind == Some(Kind::Reply)
        && let Some(share) = &facts.share
    {
        if share == id || RecordId::parse_canonical(share).is_none() {
            return Err(Breach::Link);
        }
        if kind_at(doc, share, deps).is_some_and(|k| k != "share") {
            return Err(Breach::Link);
        }
    }
    Ok(())
}

/// Maps whose entries belong to one partner, keyed by who may write them.
fn managed_map(kind: Option<Kind>, field: &str) -> bool {
    matches!(
        (kind, field),
        (Some(Kind::Boundary), "consents" | "wordings")
            | (
                Some(Kind::Commitment),
                "claims" | "views" | "status_changes"
            )
    )
}

#[allow(clippy::too_many_arguments)]
fn check_field(
    doc: &SpaceDoc,
    deps: &[ChangeHash],
    record: &str,
    facts: &Facts,
    (created_here, removing): (bool, bool),
    rest: &[String],
    action: &OpType,
    me: &str,
) -> std::result::Result<(), Breach> {
    let field = rest[0].as_str();
    let kind: Option<Kind> = facts.kind.as_deref().and_then(|k| k.parse().ok());
    let author = facts.author.as_deref() == Some(me);
    let deleting = matches!(action, OpType::Delete);
    if matches!(
        action,
        OpType::Increment(_) | OpType::MarkBegin(_) | OpType::MarkEnd(_)
    ) {
        return Err(Breach::Structure);
    }
    match field {
        "kind" | "author" | "created_at" => {
            return if created_here {
                Ok(())
            } else {
                Err(Breach::Fixed)
            };
        }
        "updated_at" => {
            // A time, as every version writes it.
            return if rest.len() == 1 && is_int(action) {
                Ok(())
            } else {
                Err(Breach::Shape)
            };
        }
        "visibility" => {
            return if author {
                Ok(())
            } else {
                Err(Breach::AuthorOnly)
            };
        }
        "removed" => {
            // Marked removed by its author, once; never taken back (no call of the app does).
            let marking = matches!(action, OpType::Put(ScalarValue::Boolean(true)));
            return if author && (marking || created_here) {
                Ok(())
            } else {
                Err(Breach::Removal)
            };
        }
        _ => {}
    }
    // Removal: its author marks the record removed and deletes its words, all of them (the
    // partner's consents and responses with it), in one change; the links stay, so threads
    // stay whole.
    if author && removing && deleting && rest.len() == 1 {
        let links = kind.map_or(&[][..], rules::link_fields);
        return if links.contains(&field) {
            Err(Breach::Removal)
        } else {
            Ok(())
        };
    }
    let Some(kind) = kind else {
        // A kind this version does not know: its author's to write.
        return if author {
            Ok(())
        } else {
            Err(Breach::AuthorOnly)
        };
    };
    if rules::is_add_only(kind) && !created_here {
        return Err(Breach::AddOnly);
    }
    // Replacing or deleting a whole ledger, consent map or wording history would hide every
    // entry in it.
    if rest.len() == 1 && managed_map(Some(kind), field) && !created_here {
        if deleting {
            return Err(Breach::Wipe);
        }
        let existing = doc
            .am()
            .import_obj(record)
            .ok()
            .and_then(|obj| doc.am().get_at(&obj, field, deps).ok().flatten());
        if existing.is_some() {
            return Err(Breach::Wipe);
        }
    }
    let allowed = match (kind, field) {
        (Kind::Boundary, "consents") => {
            if rest.len() >= 2 && rest[1] != me {
                return Err(Breach::Consent);
            }
            Ok(())
        }
        (Kind::Boundary, "wordings") => Ok(()),
        (Kind::Commitment, "claims" | "status_changes") => {
            if author {
                Ok(())
            } else {
                Err(Breach::Claim)
            }
        }
        (Kind::Commitment, "views") => {
            // Its author makes the empty ledger with the commitment; only the partner fills it.
            if author && !(created_here && rest.len() == 1) {
                Err(Breach::View)
            } else {
                Ok(())
            }
        }
        (Kind::Need, "response") => {
            // Its author writes "no response yet" with the need; only the partner responds.
            let empty = matches!(action, OpType::Put(ScalarValue::Null));
            if author && !(created_here && rest.len() == 1 && empty) {
                Err(Breach::Response)
            } else {
                Ok(())
            }
        }
        (Kind::Question, "status") => {
            let status: Option<QuestionStatus> = str_value(action).and_then(|s| s.parse().ok());
            let allowed = match status {
                Some(QuestionStatus::Open | QuestionStatus::Withdrawn) => author,
                Some(QuestionStatus::NotNow) => !author,
                Some(QuestionStatus::Answered) => true,
                _ => author,
            };
            if allowed {
                Ok(())
            } else {
                Err(Breach::QuestionStatus)
            }
        }
        _ => match rules::writer(kind, field) {
            Writer::Either => Ok(()),
            Writer::Author | Writer::Managed => {
                if author {
                    Ok(())
                } else if deleting {
                    Err(Breach::Removal)
                } else {
                    Err(Breach::AuthorOnly)
                }
            }
            Writer::Fixed => {
                if created_here {
                    Ok(())
                } else {
                    Err(Breach::Fixed)
                }
            }
        },
    };
    allowed?;
    check_shape(kind, rest, action)
}

/// Whether a value a partner may write into a record the other also reads has the shape the
/// app writes (`model/kinds.rs`, `journal/write.rs`, `journal/ops.rs`): a value of another
/// shape fails to read, and the whole record would drop out of every list and refuse every
/// edit. Fields only a record's author writes are the author's own to get wrong.
fn check_shape(kind: Kind, rest: &[String], action: &OpType) -> std::result::Result<(), Breach> {
    let key = rest.get(1).map(String::as_str);
    let leaf = rest.get(2).map(String::as_str);
    let fits = match (kind, rest[0].as_str(), rest.len()) {
        // A consent: `{state, wording (the words' hash), at}`, made whole.
        (Kind::Boundary, "consents", 1 | 2) => is_map(action),
        (Kind::Boundary, "consents", 3) => match leaf {
            Some("state") => is_str(action),
            Some("wording") => {
                matches!(action, OpType::Put(ScalarValue::Str(w)) if is_hash(w))
            }
            Some("at") => is_int(action),
            // A key this version does not know: a newer version's, ignored when read.
            _ => is_plain(action),
        },
        // Every wording under its own hash: a consent shows the words it was given to.
        (Kind::Boundary, "wordings", 1) => is_map(action),
        (Kind::Boundary, "wordings", 2) => {
            let words = match action {
                OpType::Put(ScalarValue::Str(w)) => Some(w.as_str()),
                _ => None,
            };
            return match words {
                Some(words) if key == Some(super::write::wording_hash(words).as_str()) => Ok(()),
                _ => Err(Breach::Wording),
            };
        }
        (Kind::Boundary, "text" | "area", 1) => is_str(action),
        (Kind::Boundary, "review_date", 1) => {
            matches!(action, OpType::Put(ScalarValue::Null)) || is_date_str(action)
        }
        (Kind::Boundary, "text" | "area" | "review_date" | "consents" | "wordings", _) => false,
        // A field this version does not know (a newer version's): ignored when read.
        (Kind::Boundary, _, _) => true,
        // A ledger entry: under an occurrence's date, `{status or view, note, at}`.
        (Kind::Commitment, "claims" | "views", 1) => is_map(action),
        (Kind::Commitment, "claims" | "views", 2) => key.is_some_and(is_day) && is_map(action),
        (Kind::Commitment, field @ ("claims" | "views"), 3) => match leaf {
            Some("status") if field == "claims" => is_str(action),
            Some("view") if field == "views" => is_str(action),
            Some("note") => is_str(action),
            Some("at") => is_int(action),
            Some("status" | "view") => false,
            _ => is_plain(action),
        },
        (Kind::Commitment, "status_changes", 1) => is_map(action),
        (Kind::Commitment, "status_changes", 2) => key.is_some_and(is_day) && is_str(action),
        (Kind::Commitment, "claims" | "views" | "status_changes", _) => false,
        // A response: none yet, or `{kind, note, at}`.
        (Kind::Need, "response", 1) => {
            is_map(action) || matches!(action, OpType::Put(ScalarValue::Null))
        }
        (Kind::Need, "response", 2) => match key {
            Some("kind" | "note") => is_str(action),
            Some("at") => is_int(action),
            _ => is_plain(action),
        },
        (Kind::Need, "response", _) => false,
        _ => true,
    };
    if fits { Ok(()) } else { Err(Breach::Shape) }
}

fn is_map(action: &OpType) -> bool {
    matches!(action, OpType::Make(automerge::ObjType::Map))
}

/// A plain value (or its deletion) under a key this version does not know: a newer version
/// may add keys, which readers here ignore, so refusing them would cut its devices off.
fn is_plain(action: &OpType) -> bool {
    matches!(action, OpType::Put(_) | OpType::Delete)
}

fn is_str(action: &OpType) -> bool {
    matches!(action, OpType::Put(ScalarValue::Str(_)))
}

/// An integer a reader takes as an `i64` (a time).
fn is_int(action: &OpType) -> bool {
    match action {
        OpType::Put(ScalarValue::Int(_)) => true,
        OpType::Put(ScalarValue::Uint(u)) => i64::try_from(*u).is_ok(),
        _ => false,
    }
}

/// A local date in its one spelling (`YYYY-MM-DD`).
fn is_day(text: &str) -> bool {
    text.parse::<LocalDate>()
        .is_ok_and(|d| d.to_string() == text)
}

fn is_date_str(action: &OpType) -> bool {
    matches!(action, OpType::Put(ScalarValue::Str(s)) if is_day(s))
}

/// A SHA-256 as the app spells it: 64 lowercase hex digits.
fn is_hash(text: &str) -> bool {
    text.len() == 64 && text.bytes().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f'))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_signed_change_shows_its_length_not_its_words() {
        let words = b"what I could not say".to_vec();
        let signed = Signed {
            bytes: words.clone(),
            signer: KeyId([1; 16]),
            proof: Proof::One(ChangeProof([0; 64])),
        };
        let shown = format!("{signed:?}");
        assert!(
            shown.contains(&format!("bytes: {}", words.len())),
            "{shown}"
        );
        assert!(
            !shown.contains(&format!("{}, {}", words[0], words[1])),
            "{shown}"
        );
        let bundle = Bundle {
            intros: Vec::new(),
            changes: vec![signed],
        };
        let again = Bundle::decode(&bundle.encode()).map(|b| b.changes[0].bytes.clone());
        assert_eq!(again.ok(), Some(words));
    }
}
