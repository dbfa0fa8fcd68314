//! A record's thread: what hangs from it, so an app (and the CLI's `show`) can show it whole
//! without working out the links itself.

use serde::{Deserialize, Serialize};

use super::status::{BoundaryStatus, boundary_status};
use crate::{
    LocalDate,
    ids::{PartnerId, RecordId},
    model::{Body, Claim, Record, View},
};

/// One occurrence of a commitment's follow-through ledger: the owner's claim and the partner's
/// view, each kept by its own writer.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct LedgerEntry {
    /// The occurrence (the day, or a weekly commitment's first day of the week).
    pub occurrence: LocalDate,
    /// The owner's claim, if made.
    pub claim: Option<Claim>,
    /// The partner's view, if given.
    pub view: Option<View>,
}

/// A record with everything attached to it, each list in the order written.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Thread {
    /// The record itself.
    pub record: Record,
    /// A question's answers (removed ones stay as placeholders, so the thread stays whole).
    pub answers: Vec<Record>,
    /// A share's replies.
    pub replies: Vec<Record>,
    /// Validations of the record.
    pub validations: Vec<Record>,
    /// A boundary's state and each partner's consent to its current wording.
    pub boundary: Option<BoundaryStatus>,
    /// A commitment's ledger, oldest occurrence first.
    pub ledger: Vec<LedgerEntry>,
}

/// What answers, replies to or validates `id`, oldest first, placeholders included.
pub(crate) fn attached_to(records: &[Record], id: RecordId) -> Vec<&Record> {
    let mut out: Vec<&Record> = records
        .iter()
        .filter(|c| match &c.body {
            Body::Answer(a) => a.question == Some(id),
            Body::Reply(r) => r.share == Some(id),
            Body::Validation(v) => v.target == Some(id),
            _ => false,
        })
        .collect();
    out.sort_by_key(|c| (c.created_at, c.id));
    out
}

/// The thread of `record` among `records` (what this partner can see); `partners` are the
/// couple's partner ids, for a boundary's consents.
pub fn thread(records: &[Record], partners: &[PartnerId], record: Record) -> Thread {
    let (mut answers, mut replies, mut validations) = (Vec::new(), Vec::new(), Vec::new());
    for r in attached_to(records, record.id) {
        match r.body {
            Body::Answer(_) => answers.push(r.clone()),
            Body::Reply(_) => replies.push(r.clone()),
            _ => validations.push(r.clone()),
        }
    }
    let boundary = match record.body {
        Body::Boundary(_) => boundary_status(std::slice::from_ref(&record), partners).pop(),
        _ => None,
    };
    let ledger = match &record.body {
        Body::Commitment(c) => {
            let mut dates: Vec<LocalDate> =
                c.claims.keys().chain(c.views.keys()).copied().collect();
            dates.sort();
            dates.dedup();
            dates
                .into_iter()
                .map(|occurrence| LedgerEntry {
                    occurrence,
                    claim: c.claims.get(&occurrence).cloned(),
                    view: c.views.get(&occurrence).cloned(),
                })
                .collect()
        }
        _ => Vec::new(),
    };
    Thread {
        record,
        answers,
        replies,
        validations,
        boundary,
        ledger,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{
        Visibility,
        model::{Answer, ClaimStatus, Commitment, PartnerView, Question, Reply, Share, Validation},
    };

    fn record(id: RecordId, at: i64, body: Body) -> Record {
        Record {
            id,
            author: PartnerId::generate(),
            created_at: at,
            updated_at: at,
            visibility: Visibility::Shared,
            removed: false,
            body,
            conflicts: Vec::new(),
        }
    }

    #[test]
    fn gathers_what_hangs_from_a_record_in_the_order_written() {
        let (q, s) = (RecordId::generate(), RecordId::generate());
        let later = record(
            RecordId::generate(),
            30,
            Body::Answer(Answer {
                question: Some(q),
                text: "second".into(),
            }),
        );
        let mut earlier = record(
            RecordId::generate(),
            20,
            Body::Answer(Answer {
                question: Some(q),
                text: "first".into(),
            }),
        );
        earlier.removed = true;
        let all = vec![
            record(q, 10, Body::Question(Question::default())),
            later.clone(),
            earlier.clone(),
            record(
                RecordId::generate(),
                40,
                Body::Reply(Reply {
                    share: Some(s),
                    ..Default::default()
                }),
            ),
            record(
                RecordId::generate(),
                50,
                Body::Validation(Validation {
                    target: Some(q),
                    text: String::new(),
                }),
            ),
        ];
        let t = thread(&all, &[], all[0].clone());
        assert_eq!(
            t.answers,
            vec![earlier, later],
            "placeholders stay, oldest first"
        );
        assert!(
            t.replies.is_empty(),
            "replies to another share are not this thread's"
        );
        assert_eq!(t.validations.len(), 1);
        assert!(t.boundary.is_none() && t.ledger.is_empty());
        let share = record(s, 5, Body::Share(Share::default()));
        assert_eq!(thread(&all, &[], share).replies.len(), 1);
    }

    #[test]
    fn a_commitments_ledger_pairs_claims_and_views_by_occurrence() {
        let (d1, d2): (LocalDate, LocalDate) = (
            "2026-11-23".parse().expect("date"),
            "2026-11-24".parse().expect("date"),
        );
        let mut c = Commitment::default();
        c.claims.insert(
            d2,
            Claim {
                status: ClaimStatus::Done,
                ..Default::default()
            },
        );
        c.views.insert(
            d1,
            View {
                view: PartnerView::Confirmed,
                ..Default::default()
            },
        );
        c.views.insert(d2, View::default());
        let t = thread(
            &[],
            &[],
            record(RecordId::generate(), 1, Body::Commitment(c)),
        );
        let occurrences: Vec<_> = t.ledger.iter().map(|e| e.occurrence).collect();
        assert_eq!(occurrences, vec![d1, d2]);
        assert!(t.ledger[0].claim.is_none() && t.ledger[0].view.is_some());
        assert!(t.ledger[1].claim.is_some() && t.ledger[1].view.is_some());
    }
}
