//! Weekly progress: consistency rather than streaks, per partner, in the couple's calendar.
//!
//! A missed day does not reset anything; each week stands on its own. Weeks are whole weeks
//! starting on the calendar's first day, so a week's figures never depend on the range asked
//! for: only days after `to` (the day the figures are "as of") are not yet due. A week with
//! nothing due has no consistency (`None`), never 0 %.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use super::occurrence::Life;
use crate::{
    calendar::Calendar,
    date::LocalDate,
    error::{Error, Result},
    ids::PartnerId,
    model::{Body, ClaimStatus, PartnerView, Record},
};

/// Longest range a progress query covers, in weeks.
pub const MAX_WEEKS: i32 = 520;

/// Commitments in one week.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct CommitmentWeek {
    /// Occurrences that fell due (daily: each active day; weekly: once).
    pub expected: u32,
    /// Owner's claims of due occurrences: done counts 1, partial ½.
    pub claimed: f64,
    /// Due occurrences the partner confirmed.
    pub confirmed: u32,
    /// claimed / expected; `None` when nothing was due.
    pub consistency: Option<f64>,
    /// confirmed / expected; `None` when nothing was due.
    pub confirmation: Option<f64>,
}

impl CommitmentWeek {
    fn add(&mut self, other: &CommitmentWeek) {
        self.expected += other.expected;
        self.claimed += other.claimed;
        self.confirmed += other.confirmed;
    }

    fn finish(&mut self) {
        if self.expected > 0 {
            let e = f64::from(self.expected);
            self.consistency = Some(self.claimed / e);
            self.confirmation = Some(f64::from(self.confirmed) / e);
        }
    }
}

/// Check-in averages over a set of check-ins.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct CheckInAverages {
    /// How many check-ins.
    pub count: u32,
    /// Mean safety, when any check-in gave one.
    pub safety: Option<f64>,
    /// Mean trust.
    pub trust: Option<f64>,
    /// Mean connection.
    pub connection: Option<f64>,
}

/// One partner's week.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct PartnerWeek {
    /// Their check-ins.
    pub check_ins: CheckInAverages,
    /// Their own commitments: their claims, and the other partner's confirmations.
    pub commitments: CommitmentWeek,
    /// Honesty moments they noticed.
    pub honesty_noticed: u32,
}

/// One week.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct WeekProgress {
    /// Its first day.
    pub week_start: LocalDate,
    /// Its last day.
    pub week_end: LocalDate,
    /// Both partners' commitments together.
    pub commitments: CommitmentWeek,
    /// Both partners' check-ins together.
    pub check_ins: CheckInAverages,
    /// Honesty moments noticed by either.
    pub honesty_moments: u32,
    /// Each partner's own figures.
    pub by_partner: BTreeMap<PartnerId, PartnerWeek>,
}

/// Change per week of the weekly check-in averages (least-squares slope), when at least two
/// weeks have data.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct Trend {
    /// Safety points per week.
    pub safety: Option<f64>,
    /// Trust points per week.
    pub trust: Option<f64>,
    /// Connection points per week.
    pub connection: Option<f64>,
}

/// Progress over a range of weeks.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Progress {
    /// Each week, oldest first.
    pub weeks: Vec<WeekProgress>,
    /// The day the figures are as of: later days are not yet due.
    pub as_of: LocalDate,
    /// Check-in trend of both partners together.
    pub trend: Trend,
    /// Each partner's check-in trend.
    pub trend_by_partner: BTreeMap<PartnerId, Trend>,
}

/// The top of a check-in's scales.
const MAX_SCORE: u8 = 10;

#[derive(Default, Clone)]
struct Sums {
    count: u32,
    s: (f64, u32),
    t: (f64, u32),
    c: (f64, u32),
}

impl Sums {
    fn add(&mut self, safety: Option<u8>, trust: Option<u8>, connection: Option<u8>) {
        self.count += 1;
        for (acc, v) in [
            (&mut self.s, safety),
            (&mut self.t, trust),
            (&mut self.c, connection),
        ] {
            // A score past the scale (the app never writes one; a modified app could) counts as
            // not given, so one check-in cannot drag a mean or a chart off the scale.
            if let Some(v) = v.filter(|v| *v <= MAX_SCORE) {
                acc.0 += f64::from(v);
                acc.1 += 1;
            }
        }
    }

    fn averages(&self) -> CheckInAverages {
        let mean = |(sum, n): (f64, u32)| (n > 0).then(|| sum / f64::from(n));
        CheckInAverages {
            count: self.count,
            safety: mean(self.s),
            trust: mean(self.t),
            connection: mean(self.c),
        }
    }
}

#[derive(Default, Clone)]
struct Acc {
    sums: Sums,
    commitments: CommitmentWeek,
    honesty: u32,
}

/// The day an honesty moment belongs to: when it happened, else when it was noted.
pub fn honesty_day(record: &Record, calendar: &Calendar) -> LocalDate {
    match &record.body {
        Body::HonestyMoment(h) => h
            .noticed_on
            .unwrap_or_else(|| calendar.date_of(record.created_at)),
        _ => calendar.date_of(record.created_at),
    }
}

/// Weekly progress over the whole weeks touching `from..=to`, as of `to`, for `partners`
/// (anyone else who wrote a counted record is added).
pub fn progress(
    records: &[Record],
    partners: &[PartnerId],
    from: LocalDate,
    to: LocalDate,
    calendar: &Calendar,
) -> Result<Progress> {
    if to < from {
        return Err(Error::Invalid("the range ends before it starts".into()));
    }
    let first = calendar.week_of(from);
    let last = calendar.week_of(to);
    let n_weeks = (last.days() - first.days()) / 7 + 1;
    if n_weeks > MAX_WEEKS {
        return Err(Error::Invalid(format!(
            "a progress range covers at most {MAX_WEEKS} weeks"
        )));
    }
    let end = last.add_days(6);
    let week_index = |d: LocalDate| -> Option<usize> {
        if d < first || d > end || d > to {
            return None;
        }
        usize::try_from((d.days() - first.days()) / 7).ok()
    };
    let n = usize::try_from(n_weeks).unwrap_or_default();
    let mut weeks: Vec<BTreeMap<PartnerId, Acc>> = vec![BTreeMap::new(); n];
    for w in &mut weeks {
        for p in partners {
            w.insert(*p, Acc::default());
        }
    }

    for r in records.iter().filter(|r| !r.removed) {
        match &r.body {
            Body::CheckIn(c) => {
                if let Some(i) = c.local_date.and_then(week_index) {
                    let acc = weeks[i].entry(r.author).or_default();
                    acc.sums.add(c.safety, c.trust, c.connection);
                }
            }
            Body::HonestyMoment(_) => {
                if let Some(i) = week_index(honesty_day(r, calendar)) {
                    weeks[i].entry(r.author).or_default().honesty += 1;
                }
            }
            Body::Commitment(c) => {
                let Some(life) = Life::of(r, calendar) else {
                    continue;
                };
                // A weekly occurrence counts in the week holding its Monday key.
                for key in life.due_between(first, end, to) {
                    let Some(i) = week_index(key) else {
                        continue;
                    };
                    let acc = &mut weeks[i].entry(r.author).or_default().commitments;
                    acc.expected += 1;
                    acc.claimed += match c.claims.get(&key).map(|c| c.status) {
                        Some(ClaimStatus::Done) => 1.0,
                        Some(ClaimStatus::Partial) => 0.5,
                        _ => 0.0,
                    };
                    if c.views.get(&key).map(|v| v.view) == Some(PartnerView::Confirmed) {
                        acc.confirmed += 1;
                    }
                }
            }
            _ => {}
        }
    }

    let weeks: Vec<WeekProgress> = weeks
        .into_iter()
        .enumerate()
        .map(|(i, accs)| {
            let start = first.add_days(7 * i as i32);
            let mut commitments = CommitmentWeek::default();
            let mut sums = Sums::default();
            let mut honesty = 0;
            let mut by_partner = BTreeMap::new();
            for (p, acc) in accs {
                commitments.add(&acc.commitments);
                sums.count += acc.sums.count;
                for (all, one) in [
                    (&mut sums.s, acc.sums.s),
                    (&mut sums.t, acc.sums.t),
                    (&mut sums.c, acc.sums.c),
                ] {
                    all.0 += one.0;
                    all.1 += one.1;
                }
                honesty += acc.honesty;
                let mut mine = acc.commitments.clone();
                mine.finish();
                by_partner.insert(
                    p,
                    PartnerWeek {
                        check_ins: acc.sums.averages(),
                        commitments: mine,
                        honesty_noticed: acc.honesty,
                    },
                );
            }
            commitments.finish();
            WeekProgress {
                week_start: start,
                week_end: start.add_days(6),
                commitments,
                check_ins: sums.averages(),
                honesty_moments: honesty,
                by_partner,
            }
        })
        .collect();
    let trend = trend_of(weeks.iter().map(|w| Some(&w.check_ins)));
    let mut trend_by_partner = BTreeMap::new();
    let everyone: std::collections::BTreeSet<PartnerId> = weeks
        .iter()
        .flat_map(|w| w.by_partner.keys().copied())
        .collect();
    for p in everyone {
        trend_by_partner.insert(
            p,
            trend_of(
                weeks
                    .iter()
                    .map(|w| w.by_partner.get(&p).map(|x| &x.check_ins)),
            ),
        );
    }
    Ok(Progress {
        weeks,
        as_of: to,
        trend,
        trend_by_partner,
    })
}

fn trend_of<'a>(weeks: impl Iterator<Item = Option<&'a CheckInAverages>> + Clone) -> Trend {
    let slope_of = |pick: fn(&CheckInAverages) -> Option<f64>| {
        slope(
            weeks
                .clone()
                .enumerate()
                .filter_map(|(i, w)| w.and_then(pick).map(|v| (i as f64, v))),
        )
    };
    Trend {
        safety: slope_of(|a| a.safety),
        trust: slope_of(|a| a.trust),
        connection: slope_of(|a| a.connection),
    }
}

/// Least-squares slope of (x, y) points; `None` for fewer than two distinct x.
fn slope(points: impl Iterator<Item = (f64, f64)>) -> Option<f64> {
    let pts: Vec<(f64, f64)> = points.collect();
    if pts.len() < 2 {
        return None;
    }
    let n = pts.len() as f64;
    let mx = pts.iter().map(|p| p.0).sum::<f64>() / n;
    let my = pts.iter().map(|p| p.1).sum::<f64>() / n;
    let sxx: f64 = pts.iter().map(|p| (p.0 - mx).powi(2)).sum();
    let sxy: f64 = pts.iter().map(|p| (p.0 - mx) * (p.1 - my)).sum();
    (sxx > 0.0).then(|| sxy / sxx)
}

#[cfg(test)]
mod tests {
    use super::Sums;

    #[test]
    fn a_score_past_the_scale_counts_as_not_given() {
        let mut sums = Sums::default();
        sums.add(Some(4), Some(200), None);
        sums.add(Some(6), Some(8), Some(255));
        let a = sums.averages();
        assert_eq!(a.count, 2);
        assert_eq!(a.safety, Some(5.0));
        assert_eq!(a.trust, Some(8.0));
        assert_eq!(a.connection, None);
    }
}
