//! One space's Automerge document: the couple's journal or a partner's personal space.
//!
//! Layout of every document:
//! ```text
//! root { schema_version: int, partners: { <partner id>: { name, joined_at } },
//!        records: { <record id>: { kind, author, created_at, updated_at, visibility, removed,
//!                                  …body fields } } }
//! ```
//! Every replica starts from the same genesis change (fixed actor, fixed content), so the root
//! maps are one object everywhere instead of concurrent creations that would hide each other.

pub(crate) mod inflate;
pub(crate) mod json;
mod lazy;
pub(crate) mod rebuild;

pub(crate) use lazy::LazyDoc;
pub use lazy::Loaded;

use automerge::{
    ActorId, Automerge, ChangeHash, LoadOptions, ObjId, ObjType, Prop, ROOT, ReadDoc, ScalarValue,
    VerificationMode,
    transaction::{Transactable, Transaction},
};
use std::collections::HashMap;

use serde_json::{Map, Value};

use crate::{
    error::{Error, Result},
    ids::RecordId,
    model::Conflict,
};

/// The document layout version this build writes.
pub const SCHEMA_VERSION: i64 = 1;

/// Envelope keys a record map carries besides its body's fields.
pub(crate) const ENVELOPE_KEYS: [&str; 6] = [
    "kind",
    "author",
    "created_at",
    "updated_at",
    "visibility",
    "removed",
];

/// Most keys from the root to any value of the couple's document. The app's deepest is a
/// consent's field (`records/<id>/consents/<partner>/state`, five); the rest is room for a
/// newer version's fields. Receivers refuse deeper writes, and readers never recurse further
/// below any object than this, whatever an older replica holds.
pub(crate) const MAX_DEPTH: usize = 8;

/// Keys whose concurrent values are expected and not worth showing as conflicts. A boundary's
/// `wordings` is keyed by the words' hash: two devices recording one wording write one value.
const QUIET_KEYS: [&str; 2] = ["updated_at", "wordings"];

/// An Automerge document with the journal's layout.
#[derive(Debug)]
pub(crate) struct SpaceDoc {
    doc: Automerge,
    records: ObjId,
    partners: ObjId,
}

impl SpaceDoc {
    /// A fresh document holding only the genesis change, with `actor` for later edits.
    pub(crate) fn genesis(actor: ActorId) -> Result<Self> {
        let mut doc = Automerge::new().with_actor(ActorId::from([0u8; 16]));
        let mut tx = doc.transaction();
        tx.put(ROOT, "schema_version", SCHEMA_VERSION)?;
        tx.put_object(ROOT, "partners", ObjType::Map)?;
        tx.put_object(ROOT, "records", ObjType::Map)?;
        tx.commit();
        Self::from_doc(doc.with_actor(actor))
    }

    /// Loads a document from a full save followed by any number of change chunks.
    ///
    /// `trusted` skips re-hashing every change of the save: right for bytes this device wrote
    /// to its own database, wrong for bytes from elsewhere.
    pub(crate) fn load(
        snapshot: Option<&[u8]>,
        changes: &[u8],
        actor: ActorId,
        trusted: bool,
    ) -> Result<Self> {
        let verification = if trusted {
            VerificationMode::DontCheck
        } else {
            VerificationMode::Check
        };
        let Some(bytes) = snapshot else {
            // No full save: start from genesis like every replica, then apply the changes,
            // whose dependencies begin at genesis.
            let mut doc = Self::genesis(actor)?;
            if !changes.is_empty() {
                doc.doc.load_incremental(changes)?;
            }
            return Ok(doc);
        };
        let mut doc = Automerge::load_with_options(
            bytes,
            LoadOptions::new().verification_mode(verification),
        )?;
        if !changes.is_empty() {
            doc.load_incremental(changes)?;
        }
        Self::from_doc(doc.with_actor(actor))
    }

    fn from_doc(doc: Automerge) -> Result<Self> {
        let records = root_map(&doc, "records")?;
        let partners = root_map(&doc, "partners")?;
        Ok(Self {
            doc,
            records,
            partners,
        })
    }

    /// The underlying document, for reads.
    pub(crate) fn am(&self) -> &Automerge {
        &self.doc
    }

    /// The records map.
    pub(crate) fn records_obj(&self) -> &ObjId {
        &self.records
    }

    /// Whether the document holds the change with this hash.
    pub(crate) fn has_change(&self, hash: &ChangeHash) -> bool {
        // Nothing waits in Automerge's queue of a checked document, so a hash it reports
        // missing is one it lacks.
        self.doc
            .get_missing_deps(std::slice::from_ref(hash))
            .is_empty()
    }

    /// Applies one change whose dependencies it holds.
    pub(crate) fn apply_change(&mut self, change: automerge::Change) -> Result<()> {
        self.doc.apply_changes([change])?;
        Ok(())
    }

    /// Sets the actor later edits are made under.
    pub(crate) fn set_actor(&mut self, actor: ActorId) {
        self.doc.set_actor(actor);
    }

    /// The partners map.
    pub(crate) fn partners_obj(&self) -> &ObjId {
        &self.partners
    }

    /// The schema version stored in the document (the newest any writer used).
    pub(crate) fn schema_version(&self) -> i64 {
        match self.doc.get(ROOT, "schema_version") {
            Ok(Some((automerge::Value::Scalar(s), _))) => match s.as_ref() {
                ScalarValue::Int(i) => *i,
                ScalarValue::Uint(u) => i64::try_from(*u).unwrap_or(i64::MAX),
                _ => 0,
            },
            _ => 0,
        }
    }

    /// Runs `f` in one Automerge transaction and returns its result with the change's bytes,
    /// or `None` bytes when `f` changed nothing.
    pub(crate) fn transact<T>(
        &mut self,
        f: impl FnOnce(&mut Transaction<'_>, &Handles) -> Result<T>,
    ) -> Result<(T, Option<Vec<u8>>)> {
        let handles = Handles {
            records: self.records.clone(),
            partners: self.partners.clone(),
        };
        let mut tx = self.doc.transaction();
        match f(&mut tx, &handles) {
            Ok(out) => {
                let (hash, _) = tx.commit();
                let bytes = match hash {
                    Some(h) => Some(
                        self.doc
                            .get_change_by_hash(&h)
                            .map(|c| c.raw_bytes().to_vec())
                            .ok_or_else(|| Error::Corrupt("committed change is missing".into()))?,
                    ),
                    None => None,
                };
                Ok((out, bytes))
            }
            Err(e) => {
                tx.rollback();
                Err(e)
            }
        }
    }

    /// The map holding record `id`, if this document has it.
    pub(crate) fn record_obj(&self, id: RecordId) -> Option<ObjId> {
        match self.doc.get(&self.records, id.to_string()) {
            Ok(Some((automerge::Value::Object(ObjType::Map), obj))) => Some(obj),
            _ => None,
        }
    }

    /// Every record id in this document, in id order (which is creation order for UUIDv7).
    pub(crate) fn record_ids(&self) -> Vec<RecordId> {
        self.doc
            .keys(&self.records)
            .filter_map(|k| k.parse().ok())
            .collect()
    }

    /// Record `id` as a JSON object (winning values) with its conflicts.
    pub(crate) fn record_json(&self, id: RecordId) -> Option<(Map<String, Value>, Vec<Conflict>)> {
        let key = id.to_string();
        let all = self.doc.get_all(&self.records, key.as_str()).ok()?;
        let obj = self.record_obj(id)?;
        let Value::Object(map) = json::obj_to_json(&self.doc, &obj) else {
            return None;
        };
        let mut conflicts = Vec::new();
        if all.len() > 1 {
            // Two devices created the same record (a check-in for the same day) at once.
            let values = all
                .iter()
                .rev()
                .map(|(v, o)| json::value_to_json(&self.doc, v.clone(), o))
                .collect();
            conflicts.push(Conflict {
                field: "*".into(),
                values,
            });
        }
        self.collect_conflicts(&obj, "", 2, &mut conflicts);
        Some((map, conflicts))
    }

    fn collect_conflicts(&self, obj: &ObjId, prefix: &str, depth: u8, out: &mut Vec<Conflict>) {
        for key in self.doc.keys(obj) {
            if prefix.is_empty() && QUIET_KEYS.contains(&key.as_str()) {
                continue;
            }
            let Ok(all) = self.doc.get_all(obj, key.as_str()) else {
                continue;
            };
            let field = if prefix.is_empty() {
                key.clone()
            } else {
                format!("{prefix}.{key}")
            };
            if all.len() > 1 {
                // Automerge lists the winning value last; `Conflict` promises it first.
                let values = all
                    .iter()
                    .rev()
                    .map(|(v, o)| json::value_to_json(&self.doc, v.clone(), o))
                    .collect();
                out.push(Conflict { field, values });
            } else if depth > 1
                && let Some((automerge::Value::Object(ObjType::Map), child)) =
                    all.into_iter().next()
            {
                self.collect_conflicts(&child, &field, depth - 1, out);
            }
        }
    }

    /// Applies change bytes (change chunks or a full save) from another replica.
    pub(crate) fn apply(&mut self, bytes: &[u8]) -> Result<()> {
        self.doc.load_incremental(bytes)?;
        Ok(())
    }

    /// The records change chunks (already applied) touch, read from their operations, so the
    /// cost follows the changes: an Automerge diff walks the whole document (30 ms per change
    /// on a 10k-record journal). `None` for anything else, such as a snapshot's full save.
    pub(crate) fn touched_by_ops(&self, mut bytes: &[u8]) -> Option<Vec<RecordId>> {
        let records = self.records.to_string();
        let mut owners: HashMap<String, Option<RecordId>> = HashMap::new();
        let mut ids = Vec::new();
        while !bytes.is_empty() {
            let (chunk, rest) = split_chunk(bytes)?;
            bytes = rest;
            let change = automerge::Change::try_from(chunk).ok()?;
            for op in change.decode().operations {
                let automerge::legacy::ObjectId::Id(obj) = op.obj else {
                    continue;
                };
                let obj = obj.to_string();
                if obj == records {
                    if let automerge::legacy::Key::Map(key) = &op.key
                        && let Ok(id) = key.parse()
                    {
                        ids.push(id);
                    }
                    continue;
                }
                if let Some(owner) = owners.get(&obj) {
                    ids.extend(*owner);
                    continue;
                }
                let owner = self.owner_of(&obj);
                ids.extend(owner);
                owners.insert(obj, owner);
            }
        }
        ids.sort();
        ids.dedup();
        Some(ids)
    }

    /// The record whose map holds object `obj` (given as `counter@actor`), at any depth.
    fn owner_of(&self, obj: &str) -> Option<RecordId> {
        let obj = self.doc.import_obj(obj).ok()?;
        self.doc.parents(obj).ok()?.find_map(|parent| {
            if parent.obj != self.records {
                return None;
            }
            match parent.prop {
                Prop::Map(key) => key.parse().ok(),
                Prop::Seq(_) => None,
            }
        })
    }

    /// Current heads.
    pub(crate) fn heads(&self) -> Vec<ChangeHash> {
        self.doc.get_heads()
    }

    /// Current heads as the read model stores them (hex, space separated).
    pub(crate) fn heads_text(&self) -> String {
        let heads: Vec<String> = self.heads().iter().map(|h| h.to_string()).collect();
        heads.join(" ")
    }

    /// The dependencies changes in Automerge's queue wait for (empty: nothing is queued).
    pub(crate) fn missing_deps(&self) -> Vec<ChangeHash> {
        self.doc.get_missing_deps(&[])
    }

    /// A full, compressed save.
    /// Every change of the document, each as its own bytes (compressed when large), so that
    /// pushing the whole document again can be split into chunks the relay takes.
    pub(crate) fn changes(&self) -> Vec<Vec<u8>> {
        self.doc
            .get_changes(&[])
            .into_iter()
            .map(|mut c| c.bytes().into_owned())
            .collect()
    }

    pub(crate) fn save(&self) -> Vec<u8> {
        self.doc.save()
    }

    /// The changes after `heads`, as concatenated change chunks.
    pub(crate) fn save_after(&self, heads: &[ChangeHash]) -> Vec<u8> {
        self.doc.save_after(heads)
    }
}

/// Object handles passed into a transaction.
#[derive(Debug)]
pub(crate) struct Handles {
    pub(crate) records: ObjId,
    pub(crate) partners: ObjId,
}

/// Splits the first chunk (`magic, checksum, type, uLEB128 length, body`) off `bytes`; `None`
/// for anything but a change chunk, or bytes that do not frame.
pub(crate) fn split_chunk(bytes: &[u8]) -> Option<(&[u8], &[u8])> {
    const MAGIC: [u8; 4] = [0x85, 0x6f, 0x4a, 0x83];
    const CHANGE: u8 = 1;
    const COMPRESSED_CHANGE: u8 = 2;
    if bytes.get(..4)? != MAGIC || !matches!(bytes.get(8)?, &CHANGE | &COMPRESSED_CHANGE) {
        return None;
    }
    let mut len: u64 = 0;
    let mut at = 9;
    for shift in (0..64).step_by(7) {
        let b = *bytes.get(at)?;
        at += 1;
        len |= u64::from(b & 0x7f) << shift;
        if b & 0x80 == 0 {
            let end = at.checked_add(usize::try_from(len).ok()?)?;
            return (end <= bytes.len()).then(|| bytes.split_at(end));
        }
    }
    None
}

fn root_map(doc: &Automerge, key: &str) -> Result<ObjId> {
    match doc.get(ROOT, key) {
        Ok(Some((automerge::Value::Object(ObjType::Map), obj))) => Ok(obj),
        _ => Err(Error::Corrupt(format!("document has no {key} map"))),
    }
}
