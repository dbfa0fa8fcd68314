//! Records as people and scripts read them: one-line summaries for tables, and JSON that is
//! the same on both partners' devices once they have synced (names, not "you" and "them").

use std::collections::BTreeMap;

use mend_core::{
    Body, Journal, PartnerId, Record, Visibility,
    query::{BoundaryState, BoundaryStatus},
};
use serde::Serialize;

use crate::{dates, lookup, term::clip};

/// Partner names by id.
#[derive(Debug)]
pub struct Names(BTreeMap<PartnerId, String>);

impl Names {
    /// The journal's partners.
    pub fn of(journal: &Journal) -> Self {
        Self(
            journal
                .partners()
                .into_iter()
                .map(|p| (p.id, p.name))
                .collect(),
        )
    }

    /// A partner's name.
    pub fn get(&self, id: PartnerId) -> String {
        self.0
            .get(&id)
            .cloned()
            .unwrap_or_else(|| "(not yet synced)".to_owned())
    }
}

/// A record for `--json`: the record as mend-core reads it, its author's name and, for a
/// boundary, whether it is agreed on its current wording.
#[derive(Debug, Serialize)]
pub struct RecordView<'a> {
    #[serde(flatten)]
    record: &'a Record,
    author_name: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    boundary_state: Option<BoundaryState>,
}

/// Boundary states by record, for tables and JSON.
#[derive(Debug)]
pub struct Context {
    /// Partner names.
    pub names: Names,
    /// Each live boundary's status.
    pub boundaries: Vec<BoundaryStatus>,
    /// The couple's calendar, for times shown.
    pub calendar: mend_core::Calendar,
}

impl Context {
    /// What rendering needs from the journal.
    pub fn of(journal: &Journal) -> mend_core::Result<Self> {
        Ok(Self {
            names: Names::of(journal),
            boundaries: journal.boundary_status()?,
            calendar: journal.calendar().clone(),
        })
    }

    /// The status of boundary `record`, if it is a live boundary.
    pub fn boundary(&self, record: &Record) -> Option<&BoundaryStatus> {
        self.boundaries.iter().find(|b| b.boundary.id == record.id)
    }

    /// The JSON view of a record.
    pub fn view<'a>(&self, record: &'a Record) -> RecordView<'a> {
        RecordView {
            record,
            author_name: self.names.get(record.author),
            boundary_state: self.boundary(record).map(|b| b.state),
        }
    }

    /// A table row: id, when, kind, author, what.
    pub fn row(&self, r: &Record) -> Vec<String> {
        vec![
            lookup::short(r.id),
            dates::local_instant(&self.calendar, r.created_at),
            r.kind().label().to_owned(),
            self.names.get(r.author),
            self.summary(r),
        ]
    }

    /// One line saying what a record is about.
    pub fn summary(&self, r: &Record) -> String {
        if r.removed {
            return "(removed)".to_owned();
        }
        let text = match &r.body {
            Body::AccountabilityNote(b) => b.what_i_did.clone(),
            Body::Question(b) => format!("[{}] {}", b.status.label(), b.text),
            Body::Answer(b) => b.text.clone(),
            Body::ProcessingNote(b) => b.text.clone(),
            Body::Boundary(b) => {
                let state = self.boundary(r).map_or("?", |s| state_name(s.state));
                format!("[{state}] ({}) {}", b.area.label(), b.text)
            }
            Body::DisclosurePreference(b) => format!("{}: {}", b.topic, b.preference.label()),
            Body::Need(b) => {
                let response = b
                    .response
                    .as_ref()
                    .map_or("no response yet", |x| x.kind.label());
                format!("[{}, {response}] {}", b.status.label(), b.text)
            }
            Body::CheckIn(b) => check_in_line(b),
            Body::Share(b) => {
                let tough = if b.tough_question {
                    " [tough question]"
                } else {
                    ""
                };
                format!("{}{tough}", b.feeling)
            }
            Body::Reply(b) => format!("{}: {}", b.kind.label(), b.text),
            Body::Commitment(b) => {
                format!("[{}, {}] {}", b.cadence.label(), b.status.label(), b.text)
            }
            Body::HonestyMoment(b) => {
                let later = if b.timing == mend_core::model::HonestyTiming::WeeklyTalk {
                    " [for the weekly talk]"
                } else {
                    ""
                };
                format!("{}{later}: {}", b.kind.label(), b.text)
            }
            Body::Validation(b) => b.text.clone(),
            Body::TriggerEvent(b)
                if b.sharing == mend_core::model::TriggerSharing::Signal || b.cue.is_empty() =>
            {
                format!(
                    "I'm triggered; would like {}",
                    b.wanted_response.label().to_lowercase()
                )
            }
            Body::TriggerEvent(b) => format!("{} (intensity {} of 10)", b.cue, b.intensity),
            Body::PreAssurance(b) => match b.date {
                Some(d) => format!("{} ({d}): {}", b.occasion, b.plan),
                None => format!("{}: {}", b.occasion, b.plan),
            },
        };
        let private = if r.visibility == Visibility::Private {
            "[private] "
        } else {
            ""
        };
        let conflict = if r.conflicts.is_empty() {
            ""
        } else {
            "[to settle] "
        };
        clip(&format!("{conflict}{private}{text}"), 72)
    }
}

/// A boundary state in words.
pub fn state_name(state: BoundaryState) -> &'static str {
    match state {
        BoundaryState::Agreed => "agreed",
        BoundaryState::Pending => "waiting for agreement",
        BoundaryState::Declined => "declined",
        BoundaryState::Revisit => "to be revisited",
    }
}

fn check_in_line(b: &mend_core::model::CheckIn) -> String {
    let mut parts = Vec::new();
    if let Some(d) = b.local_date {
        parts.push(d.to_string());
    }
    for (name, v) in [
        ("safety", b.safety),
        ("trust", b.trust),
        ("connection", b.connection),
    ] {
        if let Some(v) = v {
            parts.push(format!("{name} {v}"));
        }
    }
    if !b.mood_tags.is_empty() {
        parts.push(b.mood_tags.join(", "));
    }
    let mut line = parts.join(" · ");
    if let Some(note) = &b.note {
        line.push_str(" — ");
        line.push_str(note);
    }
    line
}
