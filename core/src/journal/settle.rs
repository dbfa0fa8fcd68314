//! Conflicts in plain words, and settling one.
//!
//! When two devices set the same field at once, Automerge keeps every value and shows one.
//! [`Journal::conflicts`] lists them as the journal's own words; [`Journal::settle`] writes the
//! chosen value again, which supersedes all of them, even when it is the value already shown.

use automerge::{ObjType, ReadDoc, transaction::Transactable};
use serde::{Deserialize, Serialize};
use serde_json::Value;

use super::Journal;
use crate::{
    doc::json::put_json,
    error::{Error, Result},
    ids::{PartnerId, RecordId},
    model::{
        ClaimStatus, ConsentState, Kind, NeedResponseKind, PartnerView, Record,
        rules::{self, Writer},
    },
    store::Space,
    words,
};

/// One value a device wrote.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct ConflictChoice {
    /// The value as stored: pass it back to [`Journal::settle`] to keep it.
    pub value: Value,
    /// The value in words.
    pub words: String,
}

/// A field of a record that holds more than one value.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct OpenConflict {
    /// The field as stored (`text`, `claims.2026-11-24`, `*` for the whole record).
    pub field: String,
    /// What the field is, in words.
    pub label: String,
    /// Each value, the one shown first.
    pub choices: Vec<ConflictChoice>,
}

impl Journal {
    /// The open conflicts of record `id`, in the journal's words.
    pub fn conflicts(&self, id: RecordId) -> Result<Vec<OpenConflict>> {
        let record = self.get(id)?;
        let names = self.partners();
        let name = |p: &str| {
            p.parse::<PartnerId>()
                .ok()
                .and_then(|p| names.iter().find(|n| n.id == p))
                .map_or_else(|| "a partner".to_owned(), |n| n.name.clone())
        };
        Ok(record
            .conflicts
            .iter()
            .map(|c| {
                let (root, entry) = split(&c.field);
                let label = match (root, entry) {
                    ("*", _) => "The whole record (made on two devices at once)".to_owned(),
                    ("consents", Some(p)) => format!("{}'s consent", name(p)),
                    ("claims", Some(d)) => format!("The claim for {d}"),
                    ("views", Some(d)) => format!("The partner's view of {d}"),
                    (f, _) => words::field_label(record.kind(), f),
                };
                let choices = c
                    .values
                    .iter()
                    .map(|v| ConflictChoice {
                        value: v.clone(),
                        words: value_words(&record, root, v),
                    })
                    .collect();
                OpenConflict {
                    field: c.field.clone(),
                    label,
                    choices,
                }
            })
            .collect())
    }

    /// Settles the conflict on `field` of record `id` by keeping `chosen`, which must be one of
    /// the values listed. Who may settle is who may write that field.
    pub fn settle(&mut self, id: RecordId, field: &str, chosen: &Value) -> Result<()> {
        self.step(|j| j.settle_step(id, field, chosen))
    }

    fn settle_step(&mut self, id: RecordId, field: &str, chosen: &Value) -> Result<()> {
        let record = self.get(id)?;
        let Some(conflict) = record.conflicts.iter().find(|c| c.field == field) else {
            return Err(Error::Invalid(format!(
                "record {id} has no conflict on that field"
            )));
        };
        if !conflict.values.contains(chosen) {
            return Err(Error::Invalid(
                "the chosen value is not one of the values in conflict".into(),
            ));
        }
        self.may_settle(&record, field)?;
        self.ready()?;
        let key = id.to_string();
        let space = [Space::Couple, Space::Personal]
            .into_iter()
            .find(|s| {
                self.doc(*s)
                    .ok()
                    .and_then(|d| d.record_json(id))
                    .is_some_and(|(_, cs)| cs.iter().any(|c| c.field == field))
            })
            .ok_or(Error::NotFound(id))?;
        let now = self.now();
        let (root, entry) = split(field);
        let (_, bytes) = self.doc_mut(space)?.transact(|tx, h| {
            if root == "*" {
                return put_json(tx, &h.records, key.as_str(), chosen);
            }
            let Some((_, obj)) = tx.get(&h.records, key.as_str())? else {
                return Err(Error::NotFound(id));
            };
            match entry {
                Some(entry) => {
                    let map = match tx.get(&obj, root)? {
                        Some((automerge::Value::Object(ObjType::Map), m)) => m,
                        _ => tx.put_object(&obj, root, ObjType::Map)?,
                    };
                    put_json(tx, &map, entry, chosen)?;
                }
                None => put_json(tx, &obj, root, chosen)?,
            }
            tx.put(&obj, "updated_at", now)?;
            Ok(())
        })?;
        self.persist(bytes.map(|b| vec![(space, b)]).unwrap_or_default(), &[id])?;
        Ok(())
    }

    fn may_settle(&self, record: &Record, field: &str) -> Result<()> {
        let mine = record.author == self.me;
        let (root, entry) = split(field);
        let allowed = match (root, entry) {
            ("*", _) => mine,
            ("consents", Some(p)) => p == self.me.to_string(),
            ("claims", _) => mine,
            ("views", _) | ("response", _) => !mine,
            ("status", _) if record.kind() == Kind::Question => true,
            (f, _) => match rules::writer(record.kind(), f) {
                Writer::Either => true,
                _ => mine,
            },
        };
        if allowed {
            Ok(())
        } else {
            Err(Error::PermissionDenied(format!(
                "the conflict on record {} is for the partner who writes that field to settle",
                record.id
            )))
        }
    }
}

fn split(field: &str) -> (&str, Option<&str>) {
    match field.split_once('.') {
        Some((root, entry)) => (root, Some(entry)),
        None => (field, None),
    }
}

/// A stored value in words.
fn value_words(record: &Record, root: &str, v: &Value) -> String {
    let text = |k: &str| v.get(k).and_then(Value::as_str).unwrap_or_default();
    let with_note = |label: &str| match text("note") {
        "" => label.to_owned(),
        note => format!("{label}: {note}"),
    };
    match root {
        "consents" => {
            let state = text("state").parse::<ConsentState>().unwrap_or_default();
            let current = match &record.body {
                crate::Body::Boundary(b) => crate::wording_hash(&b.text) == text("wording"),
                _ => false,
            };
            format!(
                "{} ({})",
                state.label(),
                if current {
                    "on the current wording"
                } else {
                    "on an earlier wording"
                }
            )
        }
        "claims" => with_note(
            text("status")
                .parse::<ClaimStatus>()
                .unwrap_or_default()
                .label(),
        ),
        "views" => with_note(
            text("view")
                .parse::<PartnerView>()
                .unwrap_or_default()
                .label(),
        ),
        "response" => with_note(
            text("kind")
                .parse::<NeedResponseKind>()
                .unwrap_or_default()
                .label(),
        ),
        "*" => "A separate copy of the whole record".to_owned(),
        field => match v {
            Value::String(s) => {
                words::value_label(record.kind(), field, s).map_or_else(|| s.clone(), str::to_owned)
            }
            Value::Null => "(empty)".to_owned(),
            Value::Bool(true) => "Yes".to_owned(),
            Value::Bool(false) => "No".to_owned(),
            Value::Array(items) => items
                .iter()
                .map(|i| i.as_str().map_or_else(|| i.to_string(), str::to_owned))
                .collect::<Vec<_>>()
                .join(", "),
            other => other.to_string(),
        },
    }
}
