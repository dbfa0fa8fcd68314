//! The couple's calendar, what waits on this partner today, and conflicts in plain words.
//! Each method forwards to one mend-core call.

use mend_core::{Calendar, Kind, Weekday, query, words};

use crate::{
    convert::{RecordId, record_id, strings},
    enums::RecordKind,
    error::{MendError, Result},
    journal::Journal,
    runtime::blocking,
};

/// One occurrence of a commitment.
#[derive(Clone, Debug, PartialEq, uniffi::Record)]
pub struct DueOccurrence {
    /// The commitment's id.
    pub commitment: RecordId,
    /// Its ledger key (`YYYY-MM-DD`: the day, or the week's Monday).
    pub occurrence: String,
}

impl From<query::Occurrence> for DueOccurrence {
    fn from(o: query::Occurrence) -> Self {
        Self {
            commitment: o.commitment.to_string().into(),
            occurrence: o.occurrence.to_string(),
        }
    }
}

/// What waits on this partner today: what an app schedules local notifications from.
#[derive(Clone, Debug, PartialEq, uniffi::Record)]
pub struct TodayView {
    /// The day (`YYYY-MM-DD`) in the couple's zone.
    pub date: String,
    /// Their check-in for the day is not written yet.
    pub check_in_due: bool,
    /// Their own commitments due and not yet claimed.
    pub claims_due: Vec<DueOccurrence>,
    /// The partner's claims of the last week awaiting their view.
    pub claims_to_confirm: Vec<DueOccurrence>,
    /// Ids of the partner's open questions.
    pub questions_to_answer: Vec<RecordId>,
    /// Ids of the partner's needs without a response.
    pub needs_to_respond: Vec<RecordId>,
    /// Ids of boundaries whose current wording awaits their consent.
    pub boundaries_to_consent: Vec<RecordId>,
    /// Ids of boundaries due for review.
    pub boundaries_to_review: Vec<RecordId>,
}

/// One value a device wrote.
#[derive(Clone, Debug, PartialEq, uniffi::Record)]
pub struct ConflictChoice {
    /// The value as stored, as JSON: pass it back to `settle` to keep it.
    pub value_json: String,
    /// The value in words.
    pub words: String,
}

/// A field holding values from two devices.
#[derive(Clone, Debug, PartialEq, uniffi::Record)]
pub struct RecordConflict {
    /// The field as stored (`text`, `claims.2026-11-24`, `*`).
    pub field: String,
    /// The field in words.
    pub label: String,
    /// The values, the one shown first.
    pub choices: Vec<ConflictChoice>,
}

#[uniffi::export]
impl Journal {
    /// Sets the couple's IANA time zone (`Australia/Sydney`) and the first day of their week
    /// (`monday` … `sunday`). Call it after every open: "today", check-in dates and weeks
    /// follow it (UTC and Monday until then).
    pub async fn set_calendar(&self, time_zone: String, week_starts: String) -> Result<()> {
        let calendar = Weekday::parse(&week_starts)
            .and_then(|w| Calendar::new(&time_zone, w))
            .map_err(MendError::from)?;
        let device = self.device()?;
        // Takes the writer's lock, which a merge may hold: on the blocking pool.
        blocking(move || Ok(device.set_calendar(calendar)?)).await
    }

    /// Today's date (`YYYY-MM-DD`) in the couple's zone.
    pub async fn today(&self) -> Result<String> {
        self.read(|j| Ok(j.today().to_string())).await
    }

    /// What waits on this partner today.
    pub async fn waiting_today(&self) -> Result<TodayView> {
        self.read(|j| {
            let date = j.today().to_string();
            let t = j.waiting_today()?;
            Ok(TodayView {
                date,
                check_in_due: t.check_in_due,
                claims_due: t.claims_due.into_iter().map(Into::into).collect(),
                claims_to_confirm: t.claims_to_confirm.into_iter().map(Into::into).collect(),
                questions_to_answer: strings(&t.questions_to_answer),
                needs_to_respond: strings(&t.needs_to_respond),
                boundaries_to_consent: strings(&t.boundaries_to_consent),
                boundaries_to_review: strings(&t.boundaries_to_review),
            })
        })
        .await
    }

    /// The open conflicts of a record, in words.
    pub async fn conflicts(&self, id: RecordId) -> Result<Vec<RecordConflict>> {
        let id = record_id(&id)?;
        self.read(move |j| {
            Ok(j.conflicts(id)?
                .into_iter()
                .map(|c| RecordConflict {
                    field: c.field,
                    label: c.label,
                    choices: c
                        .choices
                        .into_iter()
                        .map(|x| ConflictChoice {
                            value_json: x.value.to_string(),
                            words: x.words,
                        })
                        .collect(),
                })
                .collect())
        })
        .await
    }

    /// Settles a conflict by keeping one of its values (`value_json` from `conflicts`).
    pub async fn settle(&self, id: RecordId, field: String, value_json: String) -> Result<()> {
        let id = record_id(&id)?;
        let value: serde_json::Value = serde_json::from_str(&value_json)
            .map_err(|_| MendError::invalid("value_json is not a value from conflicts()"))?;
        self.write(move |j| j.settle(id, &field, &value)).await
    }
}

/// Words to show, and the key an app translates them by.
#[derive(Clone, Debug, PartialEq, uniffi::Record)]
pub struct DisplayWords {
    /// English.
    pub text: String,
    /// `kind.…`, `field.…` or `value.…`.
    pub key: String,
}

/// A kind's name ("Honesty moment").
#[uniffi::export]
pub fn kind_label(kind: RecordKind) -> DisplayWords {
    let kind: Kind = kind.into();
    DisplayWords {
        text: kind.label().to_owned(),
        key: words::kind_key(kind),
    }
}

/// A field's name ("What I did") by its stored name.
#[uniffi::export]
pub fn field_label(kind: RecordKind, field: String) -> DisplayWords {
    let kind: Kind = kind.into();
    DisplayWords {
        text: words::field_label(kind, &field),
        key: words::field_key(kind, &field),
    }
}

/// A stored enum value in words ("not_now" → "Not now"); null for a field that holds text.
#[uniffi::export]
pub fn value_label(kind: RecordKind, field: String, value: String) -> Option<DisplayWords> {
    words::value_word(kind.into(), &field, &value).map(|(text, key)| DisplayWords {
        text: text.to_owned(),
        key,
    })
}
