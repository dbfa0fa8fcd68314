//! The journal's records: the shared envelope, the kinds, and the bodies.
//!
//! A record is stored as one Automerge map whose keys are the envelope fields plus the body's
//! fields, side by side. Editing writes only the keys that changed, so fields written by a newer
//! version of Mend survive an edit by this one.

mod kinds;
pub mod rules;

use serde::{Deserialize, Serialize};

pub use kinds::*;

use crate::ids::{PartnerId, RecordId};

/// Every kind of record, one per body struct.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Kind {
    /// [`AccountabilityNote`]
    AccountabilityNote,
    /// [`Question`]
    Question,
    /// [`Answer`]
    Answer,
    /// [`ProcessingNote`]
    ProcessingNote,
    /// [`Boundary`]
    Boundary,
    /// [`DisclosurePreference`]
    DisclosurePreference,
    /// [`Need`]
    Need,
    /// [`CheckIn`]
    CheckIn,
    /// [`Share`]
    Share,
    /// [`Reply`]
    Reply,
    /// [`Commitment`]
    Commitment,
    /// [`HonestyMoment`]
    HonestyMoment,
    /// [`Validation`]
    Validation,
    /// [`TriggerEvent`]
    TriggerEvent,
    /// [`PreAssurance`]
    PreAssurance,
}

impl Kind {
    /// Every kind.
    pub const ALL: [Kind; 15] = [
        Kind::AccountabilityNote,
        Kind::Question,
        Kind::Answer,
        Kind::ProcessingNote,
        Kind::Boundary,
        Kind::DisclosurePreference,
        Kind::Need,
        Kind::CheckIn,
        Kind::Share,
        Kind::Reply,
        Kind::Commitment,
        Kind::HonestyMoment,
        Kind::Validation,
        Kind::TriggerEvent,
        Kind::PreAssurance,
    ];

    /// The stored name (snake_case).
    pub fn as_str(self) -> &'static str {
        match self {
            Kind::AccountabilityNote => "accountability_note",
            Kind::Question => "question",
            Kind::Answer => "answer",
            Kind::ProcessingNote => "processing_note",
            Kind::Boundary => "boundary",
            Kind::DisclosurePreference => "disclosure_preference",
            Kind::Need => "need",
            Kind::CheckIn => "check_in",
            Kind::Share => "share",
            Kind::Reply => "reply",
            Kind::Commitment => "commitment",
            Kind::HonestyMoment => "honesty_moment",
            Kind::Validation => "validation",
            Kind::TriggerEvent => "trigger_event",
            Kind::PreAssurance => "pre_assurance",
        }
    }

    /// A human label ("Honesty moment").
    pub fn label(self) -> &'static str {
        match self {
            Kind::AccountabilityNote => "Accountability note",
            Kind::Question => "Question",
            Kind::Answer => "Answer",
            Kind::ProcessingNote => "Processing note",
            Kind::Boundary => "Boundary",
            Kind::DisclosurePreference => "Disclosure preference",
            Kind::Need => "Need",
            Kind::CheckIn => "Check-in",
            Kind::Share => "Share",
            Kind::Reply => "Reply",
            Kind::Commitment => "Commitment",
            Kind::HonestyMoment => "Honesty moment",
            Kind::Validation => "Validation",
            Kind::TriggerEvent => "Trigger event",
            Kind::PreAssurance => "Pre-assurance",
        }
    }
}

impl Kind {
    /// The label in the plural, for headings ("Honesty moments", "Boundaries").
    pub fn plural_label(self) -> String {
        let label = self.label();
        match label.strip_suffix('y') {
            Some(stem) if !label.ends_with("ey") => format!("{stem}ies"),
            _ => format!("{label}s"),
        }
    }
}

impl std::fmt::Display for Kind {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

impl std::str::FromStr for Kind {
    type Err = crate::error::Error;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let norm = s.trim().replace('-', "_").to_ascii_lowercase();
        Kind::ALL
            .into_iter()
            .find(|k| k.as_str() == norm)
            .ok_or_else(|| {
                crate::error::Error::Invalid(format!(
                    "unknown record kind {:?}",
                    crate::ids::truncate(s)
                ))
            })
    }
}

/// A record's body: what differs between kinds.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
#[allow(missing_docs)]
pub enum Body {
    AccountabilityNote(AccountabilityNote),
    Question(Question),
    Answer(Answer),
    ProcessingNote(ProcessingNote),
    Boundary(Boundary),
    DisclosurePreference(DisclosurePreference),
    Need(Need),
    CheckIn(CheckIn),
    Share(Share),
    Reply(Reply),
    Commitment(Commitment),
    HonestyMoment(HonestyMoment),
    Validation(Validation),
    TriggerEvent(TriggerEvent),
    PreAssurance(PreAssurance),
}

impl Body {
    /// The kind of this body.
    pub fn kind(&self) -> Kind {
        match self {
            Body::AccountabilityNote(_) => Kind::AccountabilityNote,
            Body::Question(_) => Kind::Question,
            Body::Answer(_) => Kind::Answer,
            Body::ProcessingNote(_) => Kind::ProcessingNote,
            Body::Boundary(_) => Kind::Boundary,
            Body::DisclosurePreference(_) => Kind::DisclosurePreference,
            Body::Need(_) => Kind::Need,
            Body::CheckIn(_) => Kind::CheckIn,
            Body::Share(_) => Kind::Share,
            Body::Reply(_) => Kind::Reply,
            Body::Commitment(_) => Kind::Commitment,
            Body::HonestyMoment(_) => Kind::HonestyMoment,
            Body::Validation(_) => Kind::Validation,
            Body::TriggerEvent(_) => Kind::TriggerEvent,
            Body::PreAssurance(_) => Kind::PreAssurance,
        }
    }
}

/// Shared with the partner, or kept in the author's personal space.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize, Default)]
#[serde(rename_all = "snake_case")]
pub enum Visibility {
    /// In the couple's document.
    #[default]
    Shared,
    /// Only in the author's personal space.
    Private,
}

/// Two or more values a field holds at once because devices set it concurrently.
///
/// Automerge keeps one as the winner (shown in the record); the app sees all of them here and
/// can ask the author to settle it.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Conflict {
    /// The field's stored name.
    pub field: String,
    /// Every concurrent value, as JSON; the first is the one shown.
    pub values: Vec<serde_json::Value>,
}

/// A record as the app reads it.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Record {
    /// Its id.
    pub id: RecordId,
    /// Its author.
    pub author: PartnerId,
    /// Created (unix ms).
    pub created_at: i64,
    /// Last changed (unix ms).
    pub updated_at: i64,
    /// Shared or private. A split record (a check-in with private fields) reads as shared.
    pub visibility: Visibility,
    /// Removed by its author: the body is blanked and only links remain.
    pub removed: bool,
    /// The body.
    pub body: Body,
    /// Fields with concurrent values.
    pub conflicts: Vec<Conflict>,
}

impl Record {
    /// The record's kind.
    pub fn kind(&self) -> Kind {
        self.body.kind()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn labels_pluralise_for_headings() {
        assert_eq!(Kind::Boundary.plural_label(), "Boundaries");
        assert_eq!(Kind::HonestyMoment.plural_label(), "Honesty moments");
        assert_eq!(Kind::Reply.plural_label(), "Replies");
        assert_eq!(Kind::CheckIn.plural_label(), "Check-ins");
        for k in Kind::ALL {
            assert_eq!(k.as_str().parse::<Kind>().ok(), Some(k));
        }
    }
}
