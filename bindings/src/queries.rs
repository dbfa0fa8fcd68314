//! The derived views: timeline, open questions, boundary status, weekly progress, and the
//! therapist packet's options. Plain data mirrored from `mend_core::query` and `export`.

use std::collections::HashMap;

use mend_core::{export, query};

use crate::{
    convert::{PartnerId, date, partner_id},
    enums::{BoundaryState, ConsentState, RecordKind},
    error::Result,
    records::{JournalRecord, records},
};

/// What the timeline shows. Every field has a default: `TimelineQuery()` is the first page of
/// everything.
#[derive(Clone, Debug, PartialEq, uniffi::Record)]
pub struct TimelineQuery {
    /// Only these kinds (empty: all).
    #[uniffi(default)]
    pub kinds: Vec<RecordKind>,
    /// Only this author's records.
    #[uniffi(default)]
    pub author: Option<PartnerId>,
    /// Created at or after (unix ms).
    #[uniffi(default)]
    pub from_ms: Option<i64>,
    /// Created before (unix ms).
    #[uniffi(default)]
    pub to_ms: Option<i64>,
    /// Show removed placeholders too.
    #[uniffi(default)]
    pub include_removed: bool,
    /// Page size (0 means 50, at most 500).
    #[uniffi(default)]
    pub limit: i32,
    /// `next_cursor` of the previous page.
    #[uniffi(default)]
    pub cursor: Option<String>,
}

/// A count for Kotlin's `Int`; counts of a journal's records never reach 2³¹, and saturate.
fn signed(v: u32) -> i32 {
    i32::try_from(v).unwrap_or(i32::MAX)
}

impl TryFrom<TimelineQuery> for query::TimelineQuery {
    type Error = crate::error::MendError;

    fn try_from(q: TimelineQuery) -> Result<Self> {
        Ok(Self {
            kinds: q.kinds.into_iter().map(Into::into).collect(),
            author: q.author.as_deref().map(partner_id).transpose()?,
            from_ms: q.from_ms,
            to_ms: q.to_ms,
            include_removed: q.include_removed,
            // Negative reads as 0, the default page.
            limit: usize::try_from(q.limit).unwrap_or(0),
            cursor: q.cursor,
        })
    }
}

/// One page of the timeline.
#[derive(Clone, Debug, PartialEq, uniffi::Record)]
pub struct TimelinePage {
    /// Records, newest first.
    pub items: Vec<JournalRecord>,
    /// Pass back in `TimelineQuery.cursor` for the next page; `null` at the end.
    pub next_cursor: Option<String>,
}

impl From<query::TimelinePage> for TimelinePage {
    fn from(p: query::TimelinePage) -> Self {
        Self {
            items: records(p.items),
            next_cursor: p.next_cursor,
        }
    }
}

/// A question with its answers, oldest answer first.
#[derive(Clone, Debug, PartialEq, uniffi::Record)]
pub struct QuestionThread {
    /// The question.
    pub question: JournalRecord,
    /// Its answers (removed ones stay as placeholders).
    pub answers: Vec<JournalRecord>,
}

impl From<query::QuestionThread> for QuestionThread {
    fn from(t: query::QuestionThread) -> Self {
        Self {
            question: t.question.into(),
            answers: records(t.answers),
        }
    }
}

/// A record with what hangs from it, each list in the order written. A commitment's ledger is
/// its body's `claims` and `views`.
#[derive(Clone, Debug, PartialEq, uniffi::Record)]
pub struct RecordThread {
    /// The record.
    pub record: JournalRecord,
    /// A question's answers (removed ones stay as placeholders).
    pub answers: Vec<JournalRecord>,
    /// A share's replies.
    pub replies: Vec<JournalRecord>,
    /// Validations of the record.
    pub validations: Vec<JournalRecord>,
    /// A boundary's state and each partner's consent.
    pub boundary: Option<BoundaryStatus>,
}

impl From<query::Thread> for RecordThread {
    fn from(t: query::Thread) -> Self {
        Self {
            record: t.record.into(),
            answers: records(t.answers),
            replies: records(t.replies),
            validations: records(t.validations),
            boundary: t.boundary.map(Into::into),
        }
    }
}

/// One partner's consent as it counts now.
#[derive(Clone, Debug, PartialEq, uniffi::Record)]
pub struct ConsentView {
    /// The partner.
    pub partner: PartnerId,
    /// Their last word (`Proposed` when they have said nothing).
    pub state: ConsentState,
    /// Whether it was given to the current wording; an old consent does not count.
    pub current: bool,
}

/// A boundary and where it stands.
#[derive(Clone, Debug, PartialEq, uniffi::Record)]
pub struct BoundaryStatus {
    /// The boundary.
    pub boundary: JournalRecord,
    /// Agreed only while both partners agreed to the current wording.
    pub state: BoundaryState,
    /// Each partner's consent.
    pub consents: Vec<ConsentView>,
}

impl From<query::BoundaryStatus> for BoundaryStatus {
    fn from(s: query::BoundaryStatus) -> Self {
        Self {
            boundary: s.boundary.into(),
            state: s.state.into(),
            consents: s
                .consents
                .into_iter()
                .map(|c| ConsentView {
                    partner: c.partner.to_string().into(),
                    state: c.state.into(),
                    current: c.current,
                })
                .collect(),
        }
    }
}

/// Commitments in one week.
#[derive(Clone, Debug, PartialEq, uniffi::Record)]
pub struct CommitmentWeek {
    /// Occurrences that fell due.
    pub expected: i32,
    /// The owners' claims: done counts 1, partial ½.
    pub claimed: f64,
    /// Occurrences the partner confirmed.
    pub confirmed: i32,
    /// claimed / expected; null when nothing was due (not 0 %).
    pub consistency: Option<f64>,
    /// confirmed / expected; null when nothing was due.
    pub confirmation: Option<f64>,
}

impl From<query::CommitmentWeek> for CommitmentWeek {
    fn from(c: query::CommitmentWeek) -> Self {
        Self {
            expected: signed(c.expected),
            claimed: c.claimed,
            confirmed: signed(c.confirmed),
            consistency: c.consistency,
            confirmation: c.confirmation,
        }
    }
}

/// One partner's week.
#[derive(Clone, Debug, PartialEq, uniffi::Record)]
pub struct PartnerWeek {
    /// Their check-ins.
    pub check_ins: CheckInAverages,
    /// Their own commitments: their claims and the other's confirmations.
    pub commitments: CommitmentWeek,
    /// Honesty moments they noticed.
    pub honesty_noticed: i32,
}

/// Check-in averages.
#[derive(Clone, Debug, PartialEq, uniffi::Record)]
pub struct CheckInAverages {
    /// How many check-ins.
    pub count: i32,
    /// Mean safety, when any check-in gave one.
    pub safety: Option<f64>,
    /// Mean trust.
    pub trust: Option<f64>,
    /// Mean connection.
    pub connection: Option<f64>,
}

impl From<query::CheckInAverages> for CheckInAverages {
    fn from(a: query::CheckInAverages) -> Self {
        Self {
            count: signed(a.count),
            safety: a.safety,
            trust: a.trust,
            connection: a.connection,
        }
    }
}

/// One whole week of the couple's calendar: consistency, not streaks.
#[derive(Clone, Debug, PartialEq, uniffi::Record)]
pub struct WeekProgress {
    /// Its first day (`YYYY-MM-DD`).
    pub week_start: String,
    /// Its last day.
    pub week_end: String,
    /// Both partners' commitments together.
    pub commitments: CommitmentWeek,
    /// Both partners' check-ins together.
    pub check_ins: CheckInAverages,
    /// Honesty moments noticed by either.
    pub honesty_moments: i32,
    /// Each partner's figures (partner id → week).
    pub by_partner: HashMap<String, PartnerWeek>,
}

/// Change per week of the weekly check-in averages, when at least two weeks have data.
#[derive(Clone, Debug, PartialEq, uniffi::Record)]
pub struct Trend {
    /// Safety points per week.
    pub safety: Option<f64>,
    /// Trust points per week.
    pub trust: Option<f64>,
    /// Connection points per week.
    pub connection: Option<f64>,
}

/// Progress over a range of weeks.
#[derive(Clone, Debug, PartialEq, uniffi::Record)]
pub struct ProgressReport {
    /// Each week, oldest first.
    pub weeks: Vec<WeekProgress>,
    /// The day the figures are as of (`YYYY-MM-DD`).
    pub as_of: String,
    /// The check-in trend over those weeks.
    pub trend: Trend,
    /// Each partner's check-in trend.
    pub trend_by_partner: HashMap<String, Trend>,
}

impl From<query::Trend> for Trend {
    fn from(t: query::Trend) -> Self {
        Self {
            safety: t.safety,
            trust: t.trust,
            connection: t.connection,
        }
    }
}

impl From<query::Progress> for ProgressReport {
    fn from(p: query::Progress) -> Self {
        Self {
            weeks: p
                .weeks
                .into_iter()
                .map(|w| WeekProgress {
                    week_start: w.week_start.to_string(),
                    week_end: w.week_end.to_string(),
                    commitments: w.commitments.into(),
                    check_ins: w.check_ins.into(),
                    honesty_moments: signed(w.honesty_moments),
                    by_partner: w
                        .by_partner
                        .into_iter()
                        .map(|(p, x)| {
                            let week = PartnerWeek {
                                check_ins: x.check_ins.into(),
                                commitments: x.commitments.into(),
                                honesty_noticed: signed(x.honesty_noticed),
                            };
                            (p.to_string(), week)
                        })
                        .collect(),
                })
                .collect(),
            as_of: p.as_of.to_string(),
            trend: p.trend.into(),
            trend_by_partner: p
                .trend_by_partner
                .into_iter()
                .map(|(p, t)| (p.to_string(), t.into()))
                .collect(),
        }
    }
}

/// What goes into the therapist packet.
#[derive(Clone, Debug, PartialEq, uniffi::Record)]
pub struct PacketOptions {
    /// First local date included (`YYYY-MM-DD`).
    pub from_date: String,
    /// Last local date included (`YYYY-MM-DD`).
    pub to_date: String,
    /// Kinds to include (empty: all).
    #[uniffi(default)]
    pub kinds: Vec<RecordKind>,
}

impl TryFrom<PacketOptions> for export::PacketOptions {
    type Error = crate::error::MendError;

    fn try_from(o: PacketOptions) -> Result<Self> {
        Ok(Self {
            from: date(&o.from_date)?,
            to: date(&o.to_date)?,
            kinds: o.kinds.into_iter().map(Into::into).collect(),
        })
    }
}
