//! Who may write what, and what each kind keeps private.
//!
//! These rules are enforced by the core, not only the UI: the common threat in intimate-partner
//! apps is the other partner using the normal interface.

use serde_json::{Map, Value};

use super::{Kind, Visibility};

/// Who may change a field after the record is created.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Writer {
    /// Only the record's author.
    Author,
    /// Either partner (a boundary's wording: two rewrites are two proposals to settle).
    Either,
    /// Nobody: set once at creation (add-only records, links, a check-in's date).
    Fixed,
    /// Only through a dedicated operation that checks its own rule (consents, ledger, response).
    Managed,
}

/// Records that are only ever added (and removed by their author), never edited.
pub fn is_add_only(kind: Kind) -> bool {
    matches!(
        kind,
        Kind::Answer | Kind::Reply | Kind::HonestyMoment | Kind::Validation
    )
}

/// Who may write `field` of a record of `kind`.
pub fn writer(kind: Kind, field: &str) -> Writer {
    if is_add_only(kind) {
        return Writer::Fixed;
    }
    match (kind, field) {
        (Kind::Boundary, "consents" | "wordings") => Writer::Managed,
        (Kind::Boundary, _) => Writer::Either,
        (Kind::Need, "response") => Writer::Managed,
        (Kind::Commitment, "claims" | "views" | "status_changes") => Writer::Managed,
        (Kind::Question, "status") => Writer::Managed,
        (Kind::CheckIn, "local_date") => Writer::Fixed,
        _ => Writer::Author,
    }
}

/// Fields that link a record to another; they survive removal so threads stay whole.
pub fn link_fields(kind: Kind) -> &'static [&'static str] {
    match kind {
        Kind::Answer => &["question"],
        Kind::Reply => &["share"],
        Kind::Validation => &["target"],
        Kind::HonestyMoment | Kind::Commitment => &["link"],
        Kind::CheckIn => &["local_date"],
        Kind::AccountabilityNote => &["amends"],
        _ => &[],
    }
}

/// The visibility a new record of `kind` gets when the caller does not choose.
pub fn default_visibility(kind: Kind) -> Visibility {
    match kind {
        Kind::ProcessingNote | Kind::TriggerEvent => Visibility::Private,
        _ => Visibility::Shared,
    }
}

/// Kinds that may be kept private. Everything else is shared by nature (a question asked of
/// the partner, a consent, a reply).
pub fn may_be_private(kind: Kind) -> bool {
    matches!(kind, Kind::ProcessingNote | Kind::TriggerEvent)
}

/// Fields of one record, by stored key.
pub type Fields = Map<String, Value>;

/// Splits a body's fields between the couple's document and the author's personal space.
///
/// Returns (shared part, private part); `None` means the record does not live in that space.
/// A check-in sends each field named in `private_fields` to the personal space; a trigger
/// shared as a signal leaves only "I'm triggered" (and the response wanted) in the shared part.
pub fn split(
    kind: Kind,
    visibility: Visibility,
    fields: &Map<String, Value>,
) -> (Option<Fields>, Option<Fields>) {
    if visibility == Visibility::Private {
        return (None, Some(fields.clone()));
    }
    match kind {
        Kind::CheckIn => {
            let private: Vec<String> = fields
                .get("private_fields")
                .and_then(Value::as_array)
                .map(|a| {
                    a.iter()
                        .filter_map(|v| v.as_str().map(str::to_owned))
                        .collect()
                })
                .unwrap_or_default();
            if private.is_empty() {
                return (Some(fields.clone()), None);
            }
            let mut shared = Map::new();
            let mut mine = Map::new();
            for (k, v) in fields {
                if private.iter().any(|p| p == k) {
                    mine.insert(k.clone(), v.clone());
                } else {
                    shared.insert(k.clone(), v.clone());
                }
            }
            mine.insert(
                "local_date".into(),
                fields.get("local_date").cloned().unwrap_or(Value::Null),
            );
            (Some(shared), Some(mine))
        }
        Kind::TriggerEvent if fields.get("sharing").and_then(Value::as_str) == Some("signal") => {
            let mut shared = Map::new();
            for key in ["sharing", "wanted_response"] {
                if let Some(v) = fields.get(key) {
                    shared.insert(key.into(), v.clone());
                }
            }
            (Some(shared), Some(fields.clone()))
        }
        _ => (Some(fields.clone()), None),
    }
}
