//! The record bodies: one struct per kind of record, with the small enums they use.
//!
//! Every field has a serde default so a record written by another version (missing a field, or
//! removed and blanked) still reads. Field names are the keys stored in the document: renaming
//! one is a schema change.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use crate::{
    date::LocalDate,
    ids::{PartnerId, RecordId},
};

macro_rules! str_enum {
    ($(#[$doc:meta])* $name:ident { $($(#[$vdoc:meta])* $variant:ident = $s:literal => $label:literal),+ $(,)? }) => {
        $(#[$doc])*
        #[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Default)]
        pub enum $name {
            $($(#[$vdoc])* $variant,)+
            /// A value written by a newer version of Mend (kept as is when read).
            #[default]
            Unknown,
        }

        impl serde::Serialize for $name {
            fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
                s.serialize_str(self.as_str())
            }
        }

        impl<'de> serde::Deserialize<'de> for $name {
            fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
                let s = String::deserialize(d)?;
                Ok(s.parse().unwrap_or($name::Unknown))
            }
        }

        impl $name {
            /// Every known value.
            pub const ALL: &'static [$name] = &[$($name::$variant),+];

            /// The stored name.
            pub fn as_str(self) -> &'static str {
                match self {
                    $($name::$variant => $s,)+
                    $name::Unknown => "unknown",
                }
            }

            /// The words people read (English; `label_key` names it for a translation).
            pub fn label(self) -> &'static str {
                match self {
                    $($name::$variant => $label,)+
                    $name::Unknown => "Something a newer version of Mend wrote",
                }
            }

            /// The key an app translates this value by: `value.<type>.<stored name>`.
            pub fn label_key(self) -> String {
                format!("value.{}.{}", crate::words::snake(stringify!($name)), self.as_str())
            }
        }

        impl std::fmt::Display for $name {
            fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str(self.as_str())
            }
        }

        impl std::str::FromStr for $name {
            type Err = crate::error::Error;
            fn from_str(s: &str) -> Result<Self, Self::Err> {
                match s {
                    $($s => Ok($name::$variant),)+
                    _ => Err(crate::error::Error::Invalid(format!(
                        "{} must be one of: {}",
                        crate::words::snake(stringify!($name)).replace('_', " "),
                        [$($s),+].join(", ")
                    ))),
                }
            }
        }
    };
}

str_enum!(
    /// Where a question stands.
    QuestionStatus { Open = "open" => "Open", Answered = "answered" => "Answered", NotNow = "not_now" => "Not now", Withdrawn = "withdrawn" => "Withdrawn" }
);
str_enum!(
    /// The area a boundary covers.
    BoundaryArea {
        Communication = "communication" => "Communication",
        Transparency = "transparency" => "Transparency",
        Space = "space" => "Space",
        Contact = "contact" => "Contact",
        Disclosure = "disclosure" => "Disclosure",
    }
);
str_enum!(
    /// One partner's stance on a boundary's wording.
    ConsentState { Proposed = "proposed" => "Proposed", Agreed = "agreed" => "Agreed", Declined = "declined" => "Declined", Revisit = "revisit" => "Wants to revisit" }
);
str_enum!(
    /// What the hurt partner wants to hear about a topic.
    DisclosureChoice { WantDetails = "want_details" => "Wants the details", NotNow = "not_now" => "Not now", No = "no" => "Would rather not know" }
);
str_enum!(
    /// The kind of need.
    NeedKind {
        CheckInCadence = "check_in_cadence" => "How often we check in",
        Therapy = "therapy" => "Therapy",
        HonestyOnTopic = "honesty_on_topic" => "Honesty about a topic",
        AloneTime = "alone_time" => "Time alone",
        Other = "other" => "Other",
    }
);
str_enum!(
    /// Where a need stands.
    NeedStatus { Open = "open" => "Open", Met = "met" => "Met", Withdrawn = "withdrawn" => "Withdrawn" }
);
str_enum!(
    /// The partner's response to a need.
    NeedResponseKind { Receptive = "receptive" => "Receptive", Reassured = "reassured" => "Reassured", LetsTalk = "lets_talk" => "Let's talk" }
);
str_enum!(
    /// The kind of reply to a share.
    ReplyKind { Reflect = "reflect" => "Reflecting back", Validate = "validate" => "Validating", Ask = "ask" => "Asking", Apologise = "apologise" => "Apologising", Pause = "pause" => "Asking for a pause" }
);
str_enum!(
    /// How often a commitment falls due.
    Cadence { Daily = "daily" => "Daily", Weekly = "weekly" => "Weekly" }
);
str_enum!(
    /// Where a commitment stands.
    CommitmentStatus { Active = "active" => "Active", Paused = "paused" => "Paused", Done = "done" => "Done", Retired = "retired" => "Retired" }
);
str_enum!(
    /// The owner's claim for one occurrence of a commitment.
    ClaimStatus { Done = "done" => "Done", Partial = "partial" => "Partly done", Missed = "missed" => "Missed" }
);
str_enum!(
    /// The partner's view of one occurrence of a commitment.
    PartnerView { Confirmed = "confirmed" => "Confirmed", DidNotNotice = "did_not_notice" => "Didn't notice", Disagree = "disagree" => "Disagrees" }
);
str_enum!(
    /// What kind of honesty was noticed.
    HonestyKind {
        VolunteeredTruth = "volunteered_truth" => "Volunteered the truth",
        PromiseKept = "promise_kept" => "Kept a promise",
        FeelingShared = "feeling_shared" => "Shared a feeling",
        HardAnswer = "hard_answer" => "Gave a hard answer",
    }
);
str_enum!(
    /// When a honesty moment is meant to be seen.
    HonestyTiming { ShareNow = "share_now" => "Shared right away", WeeklyTalk = "weekly_talk" => "Saved for the weekly talk" }
);
str_enum!(
    /// What the triggered partner would like.
    WantedResponse { Space = "space" => "Some space", Reassure = "reassure" => "Reassurance", TalkLater = "talk_later" => "To talk later" }
);
str_enum!(
    /// How much of a trigger event the partner sees.
    TriggerSharing { Private = "private" => "Private", Signal = "signal" => "Only \"I'm triggered\"", Full = "full" => "In full" }
);
str_enum!(
    /// The check-in fields that can be kept private one by one.
    CheckInField {
        Safety = "safety" => "Safety",
        Trust = "trust" => "Trust",
        Connection = "connection" => "Connection",
        MoodTags = "mood_tags" => "Mood",
        NeedToday = "need_today" => "Today's need",
        Note = "note" => "Note",
    }
);

/// Practice 1: what I did and its impact, as I understand it.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct AccountabilityNote {
    /// What I did.
    pub what_i_did: String,
    /// Its impact as I understand it.
    pub impact: String,
    /// Amends: commitments that answer it.
    pub amends: Vec<RecordId>,
}

/// Practice 1: a question from the hurt partner.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct Question {
    /// A free category chosen by the app ("timeline", "contact", …).
    pub category: String,
    /// The question.
    pub text: String,
    /// Open, answered, not now or withdrawn.
    pub status: QuestionStatus,
}

/// Practice 1: an answer to a question. Add-only.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct Answer {
    /// The question answered.
    pub question: Option<RecordId>,
    /// The answer.
    pub text: String,
}

/// Practice 1: a note while processing; private unless its author shares it.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct ProcessingNote {
    /// The note.
    pub text: String,
}

/// One partner's consent to a boundary, tied to the exact wording it was given to.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
pub struct Consent {
    /// Agreed, declined, revisit (or proposed).
    pub state: ConsentState,
    /// SHA-256 (hex) of the boundary text this consent was given to.
    pub wording: String,
    /// When it was given (unix ms).
    pub at: i64,
}

/// Practice 2: a boundary. Either partner may reword it; a new wording voids earlier consents.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct Boundary {
    /// Its area.
    pub area: BoundaryArea,
    /// Its wording.
    pub text: String,
    /// When to look at it again.
    pub review_date: Option<LocalDate>,
    /// Each partner's consent, written only by that partner (through `consent`).
    pub consents: BTreeMap<PartnerId, Consent>,
    /// Every wording it has had, by hash: what each consent was given to. Written by the core.
    pub wordings: BTreeMap<String, String>,
}

/// Practice 2: the hurt partner's wish about details on one topic.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct DisclosurePreference {
    /// The topic.
    pub topic: String,
    /// Want details, not now, or no.
    pub preference: DisclosureChoice,
}

/// The partner's response to a need.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct NeedResponse {
    /// Receptive, reassured or let's talk.
    pub kind: NeedResponseKind,
    /// An optional word with it.
    pub note: String,
    /// When (unix ms).
    pub at: i64,
}

/// Practice 3: a need.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct Need {
    /// What kind of need (stored as `need_kind`: `kind` is the record's own tag).
    #[serde(rename = "need_kind")]
    pub kind: NeedKind,
    /// The need in words.
    pub text: String,
    /// Open, met or withdrawn.
    pub status: NeedStatus,
    /// The partner's response (written only by the partner, through `respond_to_need`).
    pub response: Option<NeedResponse>,
}

/// Practice 4: one check-in per author per local date. Each field may be kept private.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct CheckIn {
    /// The author's local date this check-in is for.
    pub local_date: Option<LocalDate>,
    /// Feeling safe, 0–10.
    pub safety: Option<u8>,
    /// Trust, 0–10.
    pub trust: Option<u8>,
    /// Connection, 0–10.
    pub connection: Option<u8>,
    /// Mood tags.
    pub mood_tags: Vec<String>,
    /// Today's need.
    pub need_today: Option<String>,
    /// A note.
    pub note: Option<String>,
    /// Fields kept in the author's personal space only.
    pub private_fields: Vec<CheckInField>,
}

/// Practice 4: a feeling shared in the safe space.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct Share {
    /// The feeling, in words.
    pub feeling: String,
    /// Flags a tough question.
    pub tough_question: bool,
}

/// Practice 4: a reply to a share. Add-only.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct Reply {
    /// The share replied to.
    pub share: Option<RecordId>,
    /// Reflect, validate, ask, apologise or pause (stored as `reply_kind`).
    #[serde(rename = "reply_kind")]
    pub kind: ReplyKind,
    /// The reply.
    pub text: String,
}

/// The owner's claim for one occurrence.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct Claim {
    /// Done, partial or missed.
    pub status: ClaimStatus,
    /// An optional note.
    pub note: String,
    /// When claimed (unix ms).
    pub at: i64,
}

/// The partner's view of one occurrence.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct View {
    /// Confirmed, didn't notice or disagree.
    pub view: PartnerView,
    /// An optional note.
    pub note: String,
    /// When (unix ms).
    pub at: i64,
}

/// Practice 5: a small commitment with a two-sided follow-through ledger.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct Commitment {
    /// What is committed to.
    pub text: String,
    /// Daily or weekly.
    pub cadence: Cadence,
    /// The boundary or need it serves.
    pub link: Option<RecordId>,
    /// Active, paused, done or retired.
    pub status: CommitmentStatus,
    /// The first day it falls due: the day it was made unless its owner backdates it.
    pub starts_on: Option<LocalDate>,
    /// Each change of `status`, by the local date it took effect: the commitment's life
    /// (active, paused, ended), from which progress counts what was due. Written by the core.
    pub status_changes: BTreeMap<LocalDate, CommitmentStatus>,
    /// The owner's claims, keyed by occurrence (the local date, or the week's Monday).
    pub claims: BTreeMap<LocalDate, Claim>,
    /// The partner's views, keyed like `claims`.
    pub views: BTreeMap<LocalDate, View>,
}

/// Practice 6: a moment of honesty noticed. Add-only.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct HonestyMoment {
    /// What kind of honesty (stored as `honesty_kind`).
    #[serde(rename = "honesty_kind")]
    pub kind: HonestyKind,
    /// What happened.
    pub text: String,
    /// An optional related record.
    pub link: Option<RecordId>,
    /// Share now or keep for the weekly talk.
    pub timing: HonestyTiming,
    /// The day it happened: the day it was noted unless backdated.
    pub noticed_on: Option<LocalDate>,
}

/// Practice 7: a validation attached to any shared record. Add-only.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct Validation {
    /// The record validated.
    pub target: Option<RecordId>,
    /// The words of validation.
    pub text: String,
}

/// Practice 7: a trigger; private by default, or a content-free signal, or shared in full.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct TriggerEvent {
    /// What set it off.
    pub cue: String,
    /// Intensity, 0–10.
    pub intensity: u8,
    /// Feelings.
    pub feelings: Vec<String>,
    /// What helped.
    pub what_helped: String,
    /// The response wanted.
    pub wanted_response: WantedResponse,
    /// Private, signal or full.
    pub sharing: TriggerSharing,
}

/// Practice 7: a plan for a known hard date or place.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct PreAssurance {
    /// The date or place, in words.
    pub occasion: String,
    /// The date, when there is one.
    pub date: Option<LocalDate>,
    /// The plan.
    pub plan: String,
}
