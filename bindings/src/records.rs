//! Records as the app reads them, and the partners of the journal.

use mend_core::{journal, model as m};

use crate::{
    bodies::RecordBody,
    convert::{PartnerId, RecordId},
    enums::{RecordKind, RecordVisibility},
};

/// Two or more values a field holds at once because devices set it concurrently. The record
/// shows the first; ask the author to settle it (writing the field again does).
#[derive(Clone, Debug, PartialEq, uniffi::Record)]
pub struct FieldConflict {
    /// The field's stored name (`text`, `claims.2026-11-24`, or `*` for a doubly-created record).
    pub field: String,
    /// Every concurrent value as JSON, the shown one first.
    pub values_json: Vec<String>,
}

/// A record: the shared envelope and its body.
#[derive(Clone, Debug, PartialEq, uniffi::Record)]
pub struct JournalRecord {
    /// Its id.
    pub id: RecordId,
    /// Its kind (the same as the body's variant).
    pub kind: RecordKind,
    /// The partner who wrote it.
    pub author: PartnerId,
    /// Created (unix ms).
    pub created_at: i64,
    /// Last changed (unix ms).
    pub updated_at: i64,
    /// Shared or private; a check-in with private fields reads as shared.
    pub visibility: RecordVisibility,
    /// Removed by its author: the body is blanked and only its links remain.
    pub removed: bool,
    /// The body.
    pub body: RecordBody,
    /// Fields with concurrent values.
    pub conflicts: Vec<FieldConflict>,
}

impl From<m::Record> for JournalRecord {
    fn from(r: m::Record) -> Self {
        Self {
            id: r.id.to_string().into(),
            kind: r.kind().into(),
            author: r.author.to_string().into(),
            created_at: r.created_at,
            updated_at: r.updated_at,
            visibility: r.visibility.into(),
            removed: r.removed,
            body: r.body.into(),
            conflicts: r
                .conflicts
                .into_iter()
                .map(|c| FieldConflict {
                    field: c.field,
                    values_json: c.values.iter().map(ToString::to_string).collect(),
                })
                .collect(),
        }
    }
}

pub(crate) fn records(list: Vec<m::Record>) -> Vec<JournalRecord> {
    list.into_iter().map(Into::into).collect()
}

/// A partner as the couple's journal knows them.
#[derive(Clone, Debug, PartialEq, Eq, uniffi::Record)]
pub struct Partner {
    /// Their id, the same on all their devices.
    pub id: PartnerId,
    /// The name they chose.
    pub name: String,
    /// When they joined (unix ms).
    pub joined_at: i64,
    /// Their identity key's fingerprint (16 hex digits), once one of their devices recorded it.
    pub identity: Option<String>,
    /// Their devices, earliest first (at most 8).
    pub devices: Vec<PartnerDevice>,
}

/// One of a partner's devices, as the couple's journal records it.
#[derive(Clone, Debug, PartialEq, Eq, uniffi::Record)]
pub struct PartnerDevice {
    /// The device's id.
    pub id: String,
    /// Its signing key's fingerprint (16 hex digits), to compare between devices.
    pub fingerprint: String,
    /// When it was added (unix ms, that device's clock).
    pub added_at: i64,
}

impl From<journal::Partner> for Partner {
    fn from(p: journal::Partner) -> Self {
        Self {
            id: p.id.to_string().into(),
            name: p.name,
            joined_at: p.joined_at,
            identity: p.identity,
            devices: p
                .devices
                .into_iter()
                .map(|d| PartnerDevice {
                    id: d.id.to_string(),
                    fingerprint: d.fingerprint,
                    added_at: d.added_at,
                })
                .collect(),
        }
    }
}
