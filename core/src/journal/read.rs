//! Reading records: the couple's copy with this partner's private parts laid over it.

use std::collections::BTreeMap;

use automerge::ReadDoc;
use serde_json::{Map, Value};

use super::{Journal, Partner, view};
use crate::{
    doc::{ENVELOPE_KEYS, SpaceDoc, json},
    error::{Error, Result},
    ids::{PartnerId, RecordId},
    model::{Body, Conflict, Kind, Record, Visibility},
    store::Space,
};

/// A record's stored parts, before they become a [`Record`].
#[derive(Debug, Default)]
pub(super) struct Parts {
    pub(super) shared: Option<Map<String, Value>>,
    pub(super) private: Option<Map<String, Value>>,
    pub(super) conflicts: Vec<Conflict>,
}

impl Parts {
    /// The fields as this partner sees them: private values over shared ones.
    pub(super) fn merged(&self) -> Map<String, Value> {
        let mut out = self.shared.clone().unwrap_or_default();
        if let Some(private) = &self.private {
            for (k, v) in private {
                if !(ENVELOPE_KEYS.contains(&k.as_str()) && out.contains_key(k)) {
                    out.insert(k.clone(), v.clone());
                }
            }
        }
        out
    }

    pub(super) fn exists(&self) -> bool {
        self.shared.is_some() || self.private.is_some()
    }
}

/// The partners in `doc`, with their identities and devices when `couple_space` is the id of
/// the couple's space `doc` is.
pub(super) fn partners(
    doc: &SpaceDoc,
    couple_space: Option<&[u8; 32]>,
    checker: &super::registry::CertChecker,
) -> Vec<Partner> {
    let am = doc.am();
    let mut out: Vec<Partner> = am
        .map_range(doc.partners_obj(), ..)
        .filter_map(|item| {
            let id: PartnerId = item.key.parse().ok()?;
            let Value::Object(fields) = json::obj_to_json(am, &item.id()) else {
                return None;
            };
            let registry =
                super::registry::Registry::read(doc, &item.id(), id, couple_space, checker);
            Some(Partner {
                identity: registry.identity.map(|k| k.fingerprint()),
                devices: registry.device_views(),
                id,
                name: fields
                    .get("name")
                    .and_then(Value::as_str)
                    .unwrap_or_default()
                    .to_owned(),
                joined_at: fields
                    .get("joined_at")
                    .and_then(Value::as_i64)
                    .unwrap_or_default(),
            })
        })
        .collect();
    out.sort_by_key(|p| p.id);
    out
}

/// Builds a record from its merged fields.
pub(super) fn to_record(
    id: RecordId,
    fields: Map<String, Value>,
    conflicts: Vec<Conflict>,
) -> Result<Record> {
    let bad = |what: &str| Error::Corrupt(format!("record {id} has no valid {what}"));
    let author: PartnerId = fields
        .get("author")
        .and_then(Value::as_str)
        .ok_or_else(|| bad("author"))?
        .parse()
        .map_err(|_| bad("author"))?;
    let visibility = match fields.get("visibility").and_then(Value::as_str) {
        Some("private") => Visibility::Private,
        _ => Visibility::Shared,
    };
    let created_at = fields
        .get("created_at")
        .and_then(Value::as_i64)
        .unwrap_or_default();
    let updated_at = fields
        .get("updated_at")
        .and_then(Value::as_i64)
        .unwrap_or(created_at);
    let removed = fields
        .get("removed")
        .and_then(Value::as_bool)
        .unwrap_or(false);
    let body: Body = serde_json::from_value(Value::Object(fields)).map_err(|e| {
        Error::Corrupt(format!("record {id} cannot be read: {}", e.classify_name()))
    })?;
    Ok(Record {
        id,
        author,
        created_at,
        updated_at,
        visibility,
        removed,
        body,
        conflicts,
    })
}

pub(super) trait ClassifyName {
    fn classify_name(&self) -> &'static str;
}

impl ClassifyName for serde_json::Error {
    // serde's messages can quote the offending value; name only the category.
    fn classify_name(&self) -> &'static str {
        match self.classify() {
            serde_json::error::Category::Data => "unknown kind or bad field",
            serde_json::error::Category::Syntax => "syntax",
            serde_json::error::Category::Eof => "truncated",
            serde_json::error::Category::Io => "io",
        }
    }
}

/// A stored row for a list, or `None` (logged, by id only) when it cannot be read: one bad
/// record leaves the list, as a record of an unknown kind does, instead of failing it.
fn readable(id: &str, data: crate::store::RowData) -> Option<(Map<String, Value>, Vec<Conflict>)> {
    match view::parse_row(id, data) {
        Ok(parsed) => Some(parsed),
        Err(e) => {
            tracing::warn!(record = id, error = %e, "stored record left out");
            None
        }
    }
}

impl Journal {
    pub(super) fn parts(&self, id: RecordId) -> Result<Parts> {
        let key = id.to_string();
        let mut parts = Parts::default();
        if let Some(row) = self.store.view_row(Space::Couple, &key)? {
            let (map, conflicts) = view::parse_row(&key, row)?;
            parts.shared = Some(map);
            parts.conflicts.extend(conflicts);
        }
        if let Some(row) = self.store.view_row(Space::Personal, &key)? {
            let (map, conflicts) = view::parse_row(&key, row)?;
            parts.private = Some(map);
            parts.conflicts.extend(conflicts);
        }
        Ok(parts)
    }

    /// Record `id` as this partner sees it.
    pub fn get(&self, id: RecordId) -> Result<Record> {
        let parts = self.parts(id)?;
        if !parts.exists() {
            return Err(Error::NotFound(id));
        }
        to_record(id, parts.merged(), parts.conflicts)
    }

    /// Record `id`, checking its kind.
    pub fn get_kind(&self, id: RecordId, kind: Kind) -> Result<Record> {
        let record = self.get(id)?;
        if record.kind() != kind {
            return Err(Error::WrongKind {
                id,
                expected: kind,
                actual: record.kind(),
            });
        }
        Ok(record)
    }

    /// Every record this partner can see (shared ones and their own private ones), in id order.
    /// Records of kinds this version does not know are left out.
    pub fn records(&self) -> Result<Vec<Record>> {
        let mut all: BTreeMap<RecordId, Parts> = BTreeMap::new();
        for space in Space::ALL {
            for row in self.store.view_rows(space)? {
                let (Ok(id), Some(json)) = (row.id.parse::<RecordId>(), row.data) else {
                    continue;
                };
                let Some((map, conflicts)) = readable(&row.id, json) else {
                    continue;
                };
                let parts = all.entry(id).or_default();
                match space {
                    Space::Couple => parts.shared = Some(map),
                    Space::Personal => parts.private = Some(map),
                }
                parts.conflicts.extend(conflicts);
            }
        }
        Ok(all
            .into_iter()
            .filter_map(|(id, parts)| to_record(id, parts.merged(), parts.conflicts).ok())
            .collect())
    }

    /// Only the couple's document's records, exactly as both partners' devices hold them.
    pub fn shared_records(&self) -> Result<Vec<Record>> {
        let mut out = Vec::new();
        for row in self.store.view_rows(Space::Couple)? {
            let (Ok(id), Some(json)) = (row.id.parse::<RecordId>(), row.data) else {
                continue;
            };
            let Some((map, conflicts)) = readable(&row.id, json) else {
                continue;
            };
            if let Ok(record) = to_record(id, map, conflicts) {
                out.push(record);
            }
        }
        Ok(out)
    }

    /// The raw stored fields of a record in one space, including fields this version does not
    /// know. For diagnostics and forward-compatibility checks.
    pub fn raw_fields(&self, space: Space, id: RecordId) -> Result<Option<Map<String, Value>>> {
        let key = id.to_string();
        match self.store.view_row(space, &key)? {
            Some(row) => Ok(Some(view::parse_row(&key, row)?.0)),
            None => Ok(None),
        }
    }
}
