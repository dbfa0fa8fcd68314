//! The fifteen record bodies and the [`RecordBody`] enum that carries one of them.
//!
//! Each body mirrors its core struct field by field (see docs/journal.md for who may write
//! each field). Ids and dates are strings; fields the app usually leaves empty have defaults so
//! Kotlin and Swift callers name only what they set. Fields marked *managed* are written by
//! their own operation (`consent`, `claim`, `confirm`, `respond_to_need`,
//! `set_question_status`): `add` resets them and `edit` leaves them alone, so pass back what
//! you read.

use mend_core::model as m;

use crate::{
    convert::{
        PartnerId, RecordId, date, opt_date, opt_record_id, opt_score, partner_id, record_ids,
        score, strings,
    },
    enums::*,
    error::Result,
};

/// Practice 1: what I did and its impact, as I understand it.
#[derive(Clone, Debug, PartialEq, uniffi::Record)]
pub struct AccountabilityNote {
    /// What I did (required).
    pub what_i_did: String,
    /// Its impact as I understand it.
    #[uniffi(default)]
    pub impact: String,
    /// Ids of commitments that make amends.
    #[uniffi(default)]
    pub amends: Vec<RecordId>,
}

/// Practice 1: a question from the hurt partner.
#[derive(Clone, Debug, PartialEq, uniffi::Record)]
pub struct Question {
    /// The question (required).
    pub text: String,
    /// A free category chosen by the app.
    #[uniffi(default)]
    pub category: String,
    /// Managed by `set_question_status` and by answers; always `Open` on add.
    pub status: QuestionStatus,
}

/// Practice 1: an answer to a question. Add-only.
#[derive(Clone, Debug, PartialEq, uniffi::Record)]
pub struct Answer {
    /// The question answered (required; a removed answer keeps it).
    pub question: Option<RecordId>,
    /// The answer (required).
    pub text: String,
}

/// Practice 1: a note while processing; private unless its author shares it.
#[derive(Clone, Debug, PartialEq, uniffi::Record)]
pub struct ProcessingNote {
    /// The note (required).
    pub text: String,
}

/// One partner's consent, tied to the exact wording it was given to.
#[derive(Clone, Debug, PartialEq, uniffi::Record)]
pub struct Consent {
    /// The partner who gave it.
    pub partner: PartnerId,
    /// Agreed, declined, revisit (or proposed).
    pub state: ConsentState,
    /// SHA-256 (hex) of the wording it was given to.
    pub wording: String,
    /// When (unix ms).
    pub at: i64,
}

/// Practice 2: a boundary. Either partner may reword it; a new wording voids earlier consents.
#[derive(Clone, Debug, PartialEq, uniffi::Record)]
pub struct Boundary {
    /// Its area.
    pub area: BoundaryArea,
    /// Its wording (required).
    pub text: String,
    /// When to look at it again (`YYYY-MM-DD`).
    #[uniffi(default)]
    pub review_date: Option<String>,
    /// Managed by `consent`: each partner's consent.
    #[uniffi(default)]
    pub consents: Vec<Consent>,
}

/// Practice 2: the hurt partner's wish about details on one topic.
#[derive(Clone, Debug, PartialEq, uniffi::Record)]
pub struct DisclosurePreference {
    /// The topic (required).
    pub topic: String,
    /// Want details, not now, or no.
    pub preference: DisclosureChoice,
}

/// The partner's response to a need.
#[derive(Clone, Debug, PartialEq, uniffi::Record)]
pub struct NeedResponse {
    /// Receptive, reassured or let's talk.
    pub kind: NeedResponseKind,
    /// An optional word with it.
    pub note: String,
    /// When (unix ms).
    pub at: i64,
}

/// Practice 3: a need.
#[derive(Clone, Debug, PartialEq, uniffi::Record)]
pub struct Need {
    /// What kind of need.
    pub kind: NeedKind,
    /// The need in words (required).
    pub text: String,
    /// Open, met or withdrawn.
    pub status: NeedStatus,
    /// Managed by `respond_to_need`: the partner's response.
    #[uniffi(default)]
    pub response: Option<NeedResponse>,
}

/// Practice 4: one check-in per author per local date; each field may be kept private.
#[derive(Clone, Debug, PartialEq, uniffi::Record)]
pub struct CheckIn {
    /// The author's local date (`YYYY-MM-DD`, required; fixed once added).
    pub local_date: Option<String>,
    /// Feeling safe, 0–10.
    #[uniffi(default)]
    pub safety: Option<i32>,
    /// Trust, 0–10.
    #[uniffi(default)]
    pub trust: Option<i32>,
    /// Connection, 0–10.
    #[uniffi(default)]
    pub connection: Option<i32>,
    /// Mood tags.
    #[uniffi(default)]
    pub mood_tags: Vec<String>,
    /// Today's need.
    #[uniffi(default)]
    pub need_today: Option<String>,
    /// A note.
    #[uniffi(default)]
    pub note: Option<String>,
    /// Fields kept in the author's personal space only.
    #[uniffi(default)]
    pub private_fields: Vec<CheckInField>,
}

/// Practice 4: a feeling shared in the safe space.
#[derive(Clone, Debug, PartialEq, uniffi::Record)]
pub struct Share {
    /// The feeling, in words (required).
    pub feeling: String,
    /// Flags a tough question.
    #[uniffi(default)]
    pub tough_question: bool,
}

/// Practice 4: a reply to a share. Add-only.
#[derive(Clone, Debug, PartialEq, uniffi::Record)]
pub struct Reply {
    /// The share replied to (required).
    pub share: Option<RecordId>,
    /// Reflect, validate, ask, apologise or pause.
    pub kind: ReplyKind,
    /// The reply.
    #[uniffi(default)]
    pub text: String,
}

/// The owner's claim for one occurrence of a commitment.
#[derive(Clone, Debug, PartialEq, uniffi::Record)]
pub struct ClaimEntry {
    /// The occurrence: its local date, or the week's Monday (`YYYY-MM-DD`).
    pub occurrence: String,
    /// Done, partial or missed.
    pub status: ClaimStatus,
    /// An optional note.
    pub note: String,
    /// When (unix ms).
    pub at: i64,
}

/// The partner's view of one occurrence of a commitment.
#[derive(Clone, Debug, PartialEq, uniffi::Record)]
pub struct PartnerViewEntry {
    /// The occurrence (`YYYY-MM-DD`).
    pub occurrence: String,
    /// Confirmed, didn't notice or disagree.
    pub view: PartnerView,
    /// An optional note.
    pub note: String,
    /// When (unix ms).
    pub at: i64,
}

/// Practice 5: a small commitment with a two-sided follow-through ledger.
#[derive(Clone, Debug, PartialEq, uniffi::Record)]
pub struct Commitment {
    /// What is committed to (required).
    pub text: String,
    /// Daily or weekly.
    pub cadence: Cadence,
    /// The boundary or need it serves.
    #[uniffi(default)]
    pub link: Option<RecordId>,
    /// Active, paused, done or retired.
    pub status: CommitmentStatus,
    /// The first day it falls due (`YYYY-MM-DD`); the day it is added when null.
    #[uniffi(default)]
    pub starts_on: Option<String>,
    /// Managed by `claim`: the owner's claims, oldest occurrence first.
    #[uniffi(default)]
    pub claims: Vec<ClaimEntry>,
    /// Managed by `confirm`: the partner's views, oldest occurrence first.
    #[uniffi(default)]
    pub views: Vec<PartnerViewEntry>,
}

/// Practice 6: a moment of honesty noticed. Add-only.
#[derive(Clone, Debug, PartialEq, uniffi::Record)]
pub struct HonestyMoment {
    /// What kind of honesty.
    pub kind: HonestyKind,
    /// What happened (required).
    pub text: String,
    /// A related record.
    #[uniffi(default)]
    pub link: Option<RecordId>,
    /// Share now or keep for the weekly talk.
    pub timing: HonestyTiming,
    /// The day it happened (`YYYY-MM-DD`); the day it is added when null.
    #[uniffi(default)]
    pub noticed_on: Option<String>,
}

/// Practice 7: a validation attached to a shared record. Add-only.
#[derive(Clone, Debug, PartialEq, uniffi::Record)]
pub struct Validation {
    /// The record validated (required).
    pub target: Option<RecordId>,
    /// The words of validation.
    #[uniffi(default)]
    pub text: String,
}

/// Practice 7: a trigger; private by default, a content-free signal, or shared in full.
#[derive(Clone, Debug, PartialEq, uniffi::Record)]
pub struct TriggerEvent {
    /// What set it off.
    #[uniffi(default)]
    pub cue: String,
    /// Intensity, 0–10.
    #[uniffi(default)]
    pub intensity: i32,
    /// Feelings.
    #[uniffi(default)]
    pub feelings: Vec<String>,
    /// What helped.
    #[uniffi(default)]
    pub what_helped: String,
    /// The response wanted.
    pub wanted_response: WantedResponse,
    /// Private, signal or full.
    pub sharing: TriggerSharing,
}

/// Practice 7: a plan for a known hard date or place.
#[derive(Clone, Debug, PartialEq, uniffi::Record)]
pub struct PreAssurance {
    /// The date or place, in words.
    #[uniffi(default)]
    pub occasion: String,
    /// The date, when there is one (`YYYY-MM-DD`).
    #[uniffi(default)]
    pub date: Option<String>,
    /// The plan (required).
    pub plan: String,
}

/// A record's body: one variant per kind, each with its struct in `value` (a named field,
/// so Kotlin reads `body.value`, not `body.v1`).
#[derive(Clone, Debug, PartialEq, uniffi::Enum)]
#[allow(missing_docs)]
pub enum RecordBody {
    AccountabilityNote {
        /// The body.
        value: AccountabilityNote,
    },
    Question {
        /// The body.
        value: Question,
    },
    Answer {
        /// The body.
        value: Answer,
    },
    ProcessingNote {
        /// The body.
        value: ProcessingNote,
    },
    Boundary {
        /// The body.
        value: Boundary,
    },
    DisclosurePreference {
        /// The body.
        value: DisclosurePreference,
    },
    Need {
        /// The body.
        value: Need,
    },
    CheckIn {
        /// The body.
        value: CheckIn,
    },
    Share {
        /// The body.
        value: Share,
    },
    Reply {
        /// The body.
        value: Reply,
    },
    Commitment {
        /// The body.
        value: Commitment,
    },
    HonestyMoment {
        /// The body.
        value: HonestyMoment,
    },
    Validation {
        /// The body.
        value: Validation,
    },
    TriggerEvent {
        /// The body.
        value: TriggerEvent,
    },
    PreAssurance {
        /// The body.
        value: PreAssurance,
    },
}

fn opt_string<T: ToString, O: From<String>>(v: Option<T>) -> Option<O> {
    v.map(|x| O::from(x.to_string()))
}

impl From<m::Body> for RecordBody {
    fn from(body: m::Body) -> Self {
        match body {
            m::Body::AccountabilityNote(b) => Self::AccountabilityNote {
                value: AccountabilityNote {
                    what_i_did: b.what_i_did,
                    impact: b.impact,
                    amends: strings(&b.amends),
                },
            },
            m::Body::Question(b) => Self::Question {
                value: Question {
                    text: b.text,
                    category: b.category,
                    status: b.status.into(),
                },
            },
            m::Body::Answer(b) => Self::Answer {
                value: Answer {
                    question: opt_string(b.question),
                    text: b.text,
                },
            },
            m::Body::ProcessingNote(b) => Self::ProcessingNote {
                value: ProcessingNote { text: b.text },
            },
            m::Body::Boundary(b) => Self::Boundary {
                value: Boundary {
                    area: b.area.into(),
                    text: b.text,
                    review_date: opt_string(b.review_date),
                    consents: b
                        .consents
                        .into_iter()
                        .map(|(partner, c)| Consent {
                            partner: partner.to_string().into(),
                            state: c.state.into(),
                            wording: c.wording,
                            at: c.at,
                        })
                        .collect(),
                },
            },
            m::Body::DisclosurePreference(b) => Self::DisclosurePreference {
                value: DisclosurePreference {
                    topic: b.topic,
                    preference: b.preference.into(),
                },
            },
            m::Body::Need(b) => Self::Need {
                value: Need {
                    kind: b.kind.into(),
                    text: b.text,
                    status: b.status.into(),
                    response: b.response.map(|r| NeedResponse {
                        kind: r.kind.into(),
                        note: r.note,
                        at: r.at,
                    }),
                },
            },
            m::Body::CheckIn(b) => Self::CheckIn {
                value: CheckIn {
                    local_date: opt_string(b.local_date),
                    safety: b.safety.map(i32::from),
                    trust: b.trust.map(i32::from),
                    connection: b.connection.map(i32::from),
                    mood_tags: b.mood_tags,
                    need_today: b.need_today,
                    note: b.note,
                    private_fields: b.private_fields.into_iter().map(Into::into).collect(),
                },
            },
            m::Body::Share(b) => Self::Share {
                value: Share {
                    feeling: b.feeling,
                    tough_question: b.tough_question,
                },
            },
            m::Body::Reply(b) => Self::Reply {
                value: Reply {
                    share: opt_string(b.share),
                    kind: b.kind.into(),
                    text: b.text,
                },
            },
            m::Body::Commitment(b) => Self::Commitment {
                value: Commitment {
                    text: b.text,
                    cadence: b.cadence.into(),
                    link: opt_string(b.link),
                    status: b.status.into(),
                    starts_on: opt_string(b.starts_on),
                    claims: b
                        .claims
                        .into_iter()
                        .map(|(day, c)| ClaimEntry {
                            occurrence: day.to_string(),
                            status: c.status.into(),
                            note: c.note,
                            at: c.at,
                        })
                        .collect(),
                    views: b
                        .views
                        .into_iter()
                        .map(|(day, v)| PartnerViewEntry {
                            occurrence: day.to_string(),
                            view: v.view.into(),
                            note: v.note,
                            at: v.at,
                        })
                        .collect(),
                },
            },
            m::Body::HonestyMoment(b) => Self::HonestyMoment {
                value: HonestyMoment {
                    kind: b.kind.into(),
                    text: b.text,
                    link: opt_string(b.link),
                    timing: b.timing.into(),
                    noticed_on: opt_string(b.noticed_on),
                },
            },
            m::Body::Validation(b) => Self::Validation {
                value: Validation {
                    target: opt_string(b.target),
                    text: b.text,
                },
            },
            m::Body::TriggerEvent(b) => Self::TriggerEvent {
                value: TriggerEvent {
                    cue: b.cue,
                    intensity: i32::from(b.intensity),
                    feelings: b.feelings,
                    what_helped: b.what_helped,
                    wanted_response: b.wanted_response.into(),
                    sharing: b.sharing.into(),
                },
            },
            m::Body::PreAssurance(b) => Self::PreAssurance {
                value: PreAssurance {
                    occasion: b.occasion,
                    date: opt_string(b.date),
                    plan: b.plan,
                },
            },
        }
    }
}

impl TryFrom<RecordBody> for m::Body {
    type Error = crate::error::MendError;

    fn try_from(body: RecordBody) -> Result<Self> {
        Ok(match body {
            RecordBody::AccountabilityNote { value: b } => {
                Self::AccountabilityNote(m::AccountabilityNote {
                    what_i_did: b.what_i_did,
                    impact: b.impact,
                    amends: record_ids(&b.amends)?,
                })
            }
            RecordBody::Question { value: b } => Self::Question(m::Question {
                category: b.category,
                text: b.text,
                status: b.status.into(),
            }),
            RecordBody::Answer { value: b } => Self::Answer(m::Answer {
                question: opt_record_id(b.question.as_deref())?,
                text: b.text,
            }),
            RecordBody::ProcessingNote { value: b } => {
                Self::ProcessingNote(m::ProcessingNote { text: b.text })
            }
            RecordBody::Boundary { value: b } => Self::Boundary(m::Boundary {
                area: b.area.into(),
                text: b.text,
                review_date: opt_date(b.review_date.as_deref())?,
                // Written by the core when the wording changes.
                wordings: Default::default(),
                consents: b
                    .consents
                    .into_iter()
                    .map(|c| {
                        let consent = m::Consent {
                            state: c.state.into(),
                            wording: c.wording,
                            at: c.at,
                        };
                        Ok((partner_id(&c.partner)?, consent))
                    })
                    .collect::<Result<_>>()?,
            }),
            RecordBody::DisclosurePreference { value: b } => {
                Self::DisclosurePreference(m::DisclosurePreference {
                    topic: b.topic,
                    preference: b.preference.into(),
                })
            }
            RecordBody::Need { value: b } => Self::Need(m::Need {
                kind: b.kind.into(),
                text: b.text,
                status: b.status.into(),
                response: b.response.map(|r| m::NeedResponse {
                    kind: r.kind.into(),
                    note: r.note,
                    at: r.at,
                }),
            }),
            RecordBody::CheckIn { value: b } => Self::CheckIn(m::CheckIn {
                local_date: opt_date(b.local_date.as_deref())?,
                safety: opt_score(b.safety)?,
                trust: opt_score(b.trust)?,
                connection: opt_score(b.connection)?,
                mood_tags: b.mood_tags,
                need_today: b.need_today,
                note: b.note,
                private_fields: b.private_fields.into_iter().map(Into::into).collect(),
            }),
            RecordBody::Share { value: b } => Self::Share(m::Share {
                feeling: b.feeling,
                tough_question: b.tough_question,
            }),
            RecordBody::Reply { value: b } => Self::Reply(m::Reply {
                share: opt_record_id(b.share.as_deref())?,
                kind: b.kind.into(),
                text: b.text,
            }),
            RecordBody::Commitment { value: b } => Self::Commitment(m::Commitment {
                text: b.text,
                cadence: b.cadence.into(),
                link: opt_record_id(b.link.as_deref())?,
                status: b.status.into(),
                starts_on: opt_date(b.starts_on.as_deref())?,
                // Written by the core when the status changes.
                status_changes: Default::default(),
                claims: b
                    .claims
                    .into_iter()
                    .map(|c| {
                        let claim = m::Claim {
                            status: c.status.into(),
                            note: c.note,
                            at: c.at,
                        };
                        Ok((date(&c.occurrence)?, claim))
                    })
                    .collect::<Result<_>>()?,
                views: b
                    .views
                    .into_iter()
                    .map(|v| {
                        let view = m::View {
                            view: v.view.into(),
                            note: v.note,
                            at: v.at,
                        };
                        Ok((date(&v.occurrence)?, view))
                    })
                    .collect::<Result<_>>()?,
            }),
            RecordBody::HonestyMoment { value: b } => Self::HonestyMoment(m::HonestyMoment {
                kind: b.kind.into(),
                text: b.text,
                link: opt_record_id(b.link.as_deref())?,
                timing: b.timing.into(),
                noticed_on: opt_date(b.noticed_on.as_deref())?,
            }),
            RecordBody::Validation { value: b } => Self::Validation(m::Validation {
                target: opt_record_id(b.target.as_deref())?,
                text: b.text,
            }),
            RecordBody::TriggerEvent { value: b } => Self::TriggerEvent(m::TriggerEvent {
                cue: b.cue,
                intensity: score(b.intensity)?,
                feelings: b.feelings,
                what_helped: b.what_helped,
                wanted_response: b.wanted_response.into(),
                sharing: b.sharing.into(),
            }),
            RecordBody::PreAssurance { value: b } => Self::PreAssurance(m::PreAssurance {
                occasion: b.occasion,
                date: opt_date(b.date.as_deref())?,
                plan: b.plan,
            }),
        })
    }
}
