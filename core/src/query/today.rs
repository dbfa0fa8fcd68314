//! What waits on one partner today: enough for an app to schedule local notifications
//! without reading the whole journal.

use serde::{Deserialize, Serialize};

use super::occurrence::Life;
use crate::{
    calendar::Calendar,
    date::LocalDate,
    ids::{PartnerId, RecordId},
    model::{Body, ConsentState, NeedStatus, QuestionStatus, Record},
};

/// How far back a partner's claim still asks for a confirmation.
pub const CONFIRM_WITHIN_DAYS: i32 = 7;

/// One occurrence of a commitment.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Occurrence {
    /// The commitment.
    pub commitment: RecordId,
    /// Its ledger key (the day, or the week's Monday).
    pub occurrence: LocalDate,
}

/// What waits on a partner on one day.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Today {
    /// The day, in the couple's zone.
    pub date: Option<LocalDate>,
    /// Their own check-in for the day is not written yet.
    pub check_in_due: bool,
    /// Their own commitments due today (this week, for weekly ones) and not yet claimed.
    pub claims_due: Vec<Occurrence>,
    /// The partner's claims of the last week that await their view.
    pub claims_to_confirm: Vec<Occurrence>,
    /// The partner's open questions, waiting for their answer.
    pub questions_to_answer: Vec<RecordId>,
    /// The partner's open needs without their response.
    pub needs_to_respond: Vec<RecordId>,
    /// Boundaries whose current wording has no consent from them.
    pub boundaries_to_consent: Vec<RecordId>,
    /// Boundaries whose review date has come.
    pub boundaries_to_review: Vec<RecordId>,
}

impl Today {
    /// Whether nothing waits.
    pub fn is_empty(&self) -> bool {
        !self.check_in_due
            && self.claims_due.is_empty()
            && self.claims_to_confirm.is_empty()
            && self.questions_to_answer.is_empty()
            && self.needs_to_respond.is_empty()
            && self.boundaries_to_consent.is_empty()
            && self.boundaries_to_review.is_empty()
    }
}

/// What waits on partner `me` on `day`.
pub fn today(records: &[Record], me: PartnerId, day: LocalDate, calendar: &Calendar) -> Today {
    let mut out = Today {
        date: Some(day),
        check_in_due: true,
        ..Today::default()
    };
    for r in records.iter().filter(|r| !r.removed) {
        let mine = r.author == me;
        match &r.body {
            Body::CheckIn(c) if mine && c.local_date == Some(day) => out.check_in_due = false,
            Body::Commitment(c) => {
                let Some(life) = Life::of(r, calendar) else {
                    continue;
                };
                if mine {
                    let key = life.occurrence_of(day);
                    if life.is_due(key, day) && !c.claims.contains_key(&key) {
                        out.claims_due.push(Occurrence {
                            commitment: r.id,
                            occurrence: key,
                        });
                    }
                } else {
                    let since = day.add_days(-CONFIRM_WITHIN_DAYS);
                    for key in c.claims.keys() {
                        if *key >= since && *key <= day && !c.views.contains_key(key) {
                            out.claims_to_confirm.push(Occurrence {
                                commitment: r.id,
                                occurrence: *key,
                            });
                        }
                    }
                }
            }
            Body::Question(q) if !mine && q.status == QuestionStatus::Open => {
                out.questions_to_answer.push(r.id);
            }
            Body::Need(n) if !mine && n.status == NeedStatus::Open && n.response.is_none() => {
                out.needs_to_respond.push(r.id);
            }
            Body::Boundary(b) => {
                let wording = crate::wording_hash(&b.text);
                let answered = b
                    .consents
                    .get(&me)
                    .is_some_and(|c| c.wording == wording && c.state != ConsentState::Proposed);
                if !answered {
                    out.boundaries_to_consent.push(r.id);
                }
                if b.review_date.is_some_and(|d| d <= day) {
                    out.boundaries_to_review.push(r.id);
                }
            }
            _ => {}
        }
    }
    out
}
