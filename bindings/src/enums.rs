//! The model's small enums, mirrored one to one.
//!
//! Each has the core's `Unknown` value: a record written by a newer version of Mend reads with
//! `Unknown` where this version does not know the value, and passing it back through `edit`
//! leaves the stored value alone (the core writes only fields that changed).

use mend_core::{export, model as m, query};

/// Declares a uniffi enum with the same variants as a core enum, and both conversions.
macro_rules! mirror_enum {
    ($(#[$doc:meta])* $name:ident => $core:path { $($(#[$vdoc:meta])* $variant:ident),+ $(,)? }) => {
        $(#[$doc])*
        #[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, uniffi::Enum)]
        pub enum $name {
            $($(#[$vdoc])* $variant,)+
        }

        impl From<$core> for $name {
            fn from(v: $core) -> Self {
                type Core = $core;
                match v {
                    $(Core::$variant => Self::$variant,)+
                }
            }
        }

        impl From<$name> for $core {
            fn from(v: $name) -> Self {
                type Core = $core;
                match v {
                    $($name::$variant => Core::$variant,)+
                }
            }
        }
    };
}

mirror_enum!(
    /// The fifteen kinds of record.
    RecordKind => m::Kind {
        AccountabilityNote, Question, Answer, ProcessingNote, Boundary, DisclosurePreference,
        Need, CheckIn, Share, Reply, Commitment, HonestyMoment, Validation, TriggerEvent,
        PreAssurance,
    }
);
mirror_enum!(
    /// Shared with the partner, or kept in the author's personal space.
    RecordVisibility => m::Visibility { Shared, Private }
);
mirror_enum!(
    /// Where a question stands.
    QuestionStatus => m::QuestionStatus { Open, Answered, NotNow, Withdrawn, Unknown }
);
mirror_enum!(
    /// The area a boundary covers.
    BoundaryArea => m::BoundaryArea {
        Communication, Transparency, Space, Contact, Disclosure, Unknown,
    }
);
mirror_enum!(
    /// One partner's stance on a boundary's wording.
    ConsentState => m::ConsentState { Proposed, Agreed, Declined, Revisit, Unknown }
);
mirror_enum!(
    /// What the hurt partner wants to hear about a topic.
    DisclosureChoice => m::DisclosureChoice { WantDetails, NotNow, No, Unknown }
);
mirror_enum!(
    /// The kind of need.
    NeedKind => m::NeedKind { CheckInCadence, Therapy, HonestyOnTopic, AloneTime, Other, Unknown }
);
mirror_enum!(
    /// Where a need stands.
    NeedStatus => m::NeedStatus { Open, Met, Withdrawn, Unknown }
);
mirror_enum!(
    /// The partner's response to a need.
    NeedResponseKind => m::NeedResponseKind { Receptive, Reassured, LetsTalk, Unknown }
);
mirror_enum!(
    /// The kind of reply to a share.
    ReplyKind => m::ReplyKind { Reflect, Validate, Ask, Apologise, Pause, Unknown }
);
mirror_enum!(
    /// How often a commitment falls due.
    Cadence => m::Cadence { Daily, Weekly, Unknown }
);
mirror_enum!(
    /// Where a commitment stands.
    CommitmentStatus => m::CommitmentStatus { Active, Paused, Done, Retired, Unknown }
);
mirror_enum!(
    /// The owner's claim for one occurrence of a commitment.
    ClaimStatus => m::ClaimStatus { Done, Partial, Missed, Unknown }
);
mirror_enum!(
    /// The partner's view of one occurrence of a commitment.
    PartnerView => m::PartnerView { Confirmed, DidNotNotice, Disagree, Unknown }
);
mirror_enum!(
    /// What kind of honesty was noticed.
    HonestyKind => m::HonestyKind {
        VolunteeredTruth, PromiseKept, FeelingShared, HardAnswer, Unknown,
    }
);
mirror_enum!(
    /// When a honesty moment is meant to be seen.
    HonestyTiming => m::HonestyTiming { ShareNow, WeeklyTalk, Unknown }
);
mirror_enum!(
    /// What the triggered partner would like.
    WantedResponse => m::WantedResponse { Space, Reassure, TalkLater, Unknown }
);
mirror_enum!(
    /// How much of a trigger event the partner sees.
    TriggerSharing => m::TriggerSharing { Private, Signal, Full, Unknown }
);
mirror_enum!(
    /// The check-in fields that can be kept private one by one.
    CheckInField => m::CheckInField {
        Safety, Trust, Connection, MoodTags, NeedToday, Note, Unknown,
    }
);
mirror_enum!(
    /// Where a boundary stands.
    BoundaryState => query::BoundaryState { Agreed, Pending, Declined, Revisit }
);
mirror_enum!(
    /// The therapist packet's format.
    ExportFormat => export::Format { Markdown, Html }
);
