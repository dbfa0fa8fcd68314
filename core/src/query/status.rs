//! Open questions, boundary status and needs.

use serde::{Deserialize, Serialize};

use crate::{
    ids::PartnerId,
    journal::wording_hash,
    model::{Body, ConsentState, QuestionStatus, Record},
};

/// A question with its answers, oldest answer first.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct QuestionThread {
    /// The question.
    pub question: Record,
    /// Its answers (removed ones stay as placeholders).
    pub answers: Vec<Record>,
}

/// Questions that are open or put off, oldest first, each with its answers.
pub fn open_questions(records: &[Record]) -> Vec<QuestionThread> {
    let mut out: Vec<QuestionThread> = records
        .iter()
        .filter(|r| !r.removed)
        .filter(|r| {
            matches!(&r.body, Body::Question(q) if matches!(q.status, QuestionStatus::Open | QuestionStatus::NotNow))
        })
        .map(|q| QuestionThread {
            question: q.clone(),
            answers: records
                .iter()
                .filter(|a| matches!(&a.body, Body::Answer(x) if x.question == Some(q.id)))
                .cloned()
                .collect(),
        })
        .collect();
    out.sort_by_key(|t| (t.question.created_at, t.question.id));
    for t in &mut out {
        t.answers.sort_by_key(|a| (a.created_at, a.id));
    }
    out
}

/// Where a boundary stands.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum BoundaryState {
    /// Both partners agreed to the current wording.
    Agreed,
    /// Someone has not yet agreed to the current wording.
    Pending,
    /// Someone declined the current wording.
    Declined,
    /// Someone asked to revisit it; this beats the other's agreement.
    Revisit,
}

/// One partner's consent as it counts now.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct ConsentView {
    /// The partner.
    pub partner: PartnerId,
    /// Their last word (proposed when they have said nothing).
    pub state: ConsentState,
    /// Whether it was given to the current wording; an old consent does not count.
    pub current: bool,
}

/// A boundary and where it stands.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct BoundaryStatus {
    /// The boundary.
    pub boundary: Record,
    /// Its state.
    pub state: BoundaryState,
    /// Each partner's consent.
    pub consents: Vec<ConsentView>,
}

/// Every live boundary, oldest first. `partners` are the couple's partner ids: a boundary is
/// agreed only when each of them agreed to its current wording.
pub fn boundary_status(records: &[Record], partners: &[PartnerId]) -> Vec<BoundaryStatus> {
    let mut out = Vec::new();
    for r in records.iter().filter(|r| !r.removed) {
        let Body::Boundary(b) = &r.body else { continue };
        let hash = wording_hash(&b.text);
        let consents: Vec<ConsentView> = partners
            .iter()
            .map(|p| match b.consents.get(p) {
                Some(c) => ConsentView {
                    partner: *p,
                    state: c.state,
                    current: c.wording == hash,
                },
                None => ConsentView {
                    partner: *p,
                    state: ConsentState::Proposed,
                    current: false,
                },
            })
            .collect();
        let counts = |s: ConsentState| consents.iter().any(|c| c.current && c.state == s);
        let state = if counts(ConsentState::Revisit) {
            BoundaryState::Revisit
        } else if counts(ConsentState::Declined) {
            BoundaryState::Declined
        } else if partners.len() >= 2
            && consents
                .iter()
                .all(|c| c.current && c.state == ConsentState::Agreed)
        {
            BoundaryState::Agreed
        } else {
            BoundaryState::Pending
        };
        out.push(BoundaryStatus {
            boundary: r.clone(),
            state,
            consents,
        });
    }
    out.sort_by_key(|s| (s.boundary.created_at, s.boundary.id));
    out
}

/// Every live need, oldest first; each carries the partner's response in its body.
pub fn needs(records: &[Record]) -> Vec<Record> {
    let mut out: Vec<Record> = records
        .iter()
        .filter(|r| !r.removed && matches!(r.body, Body::Need(_)))
        .cloned()
        .collect();
    out.sort_by_key(|r| (r.created_at, r.id));
    out
}
