//! The translation is lossless: every kind of body, with every field set (managed ones too),
//! comes back unchanged from core → bindings → core, so an app that reads a record and passes it
//! back to `edit` changes nothing it did not touch.

use std::collections::BTreeMap;

use mend_core::{Body, LocalDate, PartnerId, RecordId, model::*};
use mend_ffi_api::RecordBody;

fn day(n: i32) -> LocalDate {
    LocalDate::from_unix_ms(1_795_000_000_000, 0).add_days(n)
}

fn every_kind() -> Vec<Body> {
    let (a, b) = (PartnerId::generate(), PartnerId::generate());
    let (r1, r2) = (RecordId::generate(), RecordId::generate());
    vec![
        Body::AccountabilityNote(AccountabilityNote {
            what_i_did: "what".into(),
            impact: "impact".into(),
            amends: vec![r1, r2],
        }),
        Body::Question(Question {
            category: "c".into(),
            text: "q".into(),
            status: QuestionStatus::NotNow,
        }),
        Body::Answer(Answer {
            question: Some(r1),
            text: "a".into(),
        }),
        Body::ProcessingNote(ProcessingNote { text: "p".into() }),
        Body::Boundary(Boundary {
            area: BoundaryArea::Contact,
            text: "b".into(),
            review_date: Some(day(30)),
            // Written by the core only; the binding does not carry it in.
            wordings: BTreeMap::new(),
            consents: BTreeMap::from([
                (
                    a,
                    Consent {
                        state: ConsentState::Agreed,
                        wording: "ab12".into(),
                        at: 5,
                    },
                ),
                (
                    b,
                    Consent {
                        state: ConsentState::Unknown,
                        wording: "cd34".into(),
                        at: 6,
                    },
                ),
            ]),
        }),
        Body::DisclosurePreference(DisclosurePreference {
            topic: "t".into(),
            preference: DisclosureChoice::WantDetails,
        }),
        Body::Need(Need {
            kind: NeedKind::AloneTime,
            text: "n".into(),
            status: NeedStatus::Met,
            response: Some(NeedResponse {
                kind: NeedResponseKind::LetsTalk,
                note: "x".into(),
                at: 7,
            }),
        }),
        Body::CheckIn(CheckIn {
            local_date: Some(day(0)),
            safety: Some(0),
            trust: Some(10),
            connection: None,
            mood_tags: vec!["tired".into(), "hopeful".into()],
            need_today: Some("walk".into()),
            note: None,
            private_fields: vec![CheckInField::Note, CheckInField::Unknown],
        }),
        Body::Share(Share {
            feeling: "f".into(),
            tough_question: true,
        }),
        Body::Reply(Reply {
            share: Some(r2),
            kind: ReplyKind::Apologise,
            text: "r".into(),
        }),
        Body::Commitment(Commitment {
            text: "c".into(),
            cadence: Cadence::Weekly,
            link: Some(r1),
            status: CommitmentStatus::Paused,
            starts_on: Some(day(1)),
            // Written by the core only; the binding does not carry it in.
            status_changes: BTreeMap::new(),
            claims: BTreeMap::from([(
                day(0),
                Claim {
                    status: ClaimStatus::Partial,
                    note: "n".into(),
                    at: 8,
                },
            )]),
            views: BTreeMap::from([(
                day(0),
                View {
                    view: PartnerView::Disagree,
                    note: "v".into(),
                    at: 9,
                },
            )]),
        }),
        Body::HonestyMoment(HonestyMoment {
            kind: HonestyKind::HardAnswer,
            text: "h".into(),
            link: None,
            timing: HonestyTiming::WeeklyTalk,
            noticed_on: Some(day(2)),
        }),
        Body::Validation(Validation {
            target: Some(r2),
            text: "v".into(),
        }),
        Body::TriggerEvent(TriggerEvent {
            cue: "song".into(),
            intensity: 7,
            feelings: vec!["fear".into()],
            what_helped: "air".into(),
            wanted_response: WantedResponse::TalkLater,
            sharing: TriggerSharing::Signal,
        }),
        Body::PreAssurance(PreAssurance {
            occasion: "o".into(),
            date: Some(day(3)),
            plan: "p".into(),
        }),
    ]
}

#[test]
fn every_kind_survives_the_bindings_unchanged() -> Result<(), mend_ffi_api::MendError> {
    let bodies = every_kind();
    assert_eq!(bodies.len(), Kind::ALL.len(), "one body per kind");
    for body in bodies {
        let back = Body::try_from(RecordBody::from(body.clone()))?;
        assert_eq!(
            back,
            body,
            "{} changed on its way through the bindings",
            body.kind()
        );
    }
    Ok(())
}

#[test]
fn bad_ids_dates_and_scores_are_invalid_not_panics() {
    let bad = [
        RecordBody::Answer {
            value: mend_ffi_api::Answer {
                question: Some("not-an-id".into()),
                text: "a".into(),
            },
        },
        RecordBody::PreAssurance {
            value: mend_ffi_api::PreAssurance {
                occasion: String::new(),
                date: Some("2026-13-45".into()),
                plan: "p".into(),
            },
        },
        RecordBody::TriggerEvent {
            value: mend_ffi_api::TriggerEvent {
                cue: String::new(),
                intensity: 300,
                feelings: vec![],
                what_helped: String::new(),
                wanted_response: mend_ffi_api::WantedResponse::Space,
                sharing: mend_ffi_api::TriggerSharing::Private,
            },
        },
    ];
    for body in bad {
        let result = Body::try_from(body);
        assert!(
            matches!(result, Err(mend_ffi_api::MendError::Invalid(_))),
            "{result:?}"
        );
    }
}
