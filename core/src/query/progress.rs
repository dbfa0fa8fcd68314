//! Weekly progress: consistency rather than streaks.
//!
//! A missed day does not reset anything; each week stands on its own, and the owner's claims
//! and the partner's confirmations are counted side by side.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use crate::{
    date::LocalDate,
    error::{Error, Result},
    ids::PartnerId,
    model::{Body, Cadence, ClaimStatus, CommitmentStatus, PartnerView, Record},
};

/// Longest range a progress query covers, in weeks.
pub const MAX_WEEKS: i32 = 520;

/// Commitments in one week.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct CommitmentWeek {
    /// Occurrences that fell due (daily: each day; weekly: once).
    pub expected: u32,
    /// Owner's claims: done counts 1, partial ½.
    pub claimed: f64,
    /// Occurrences the partner confirmed.
    pub confirmed: u32,
    /// claimed / expected (0 when nothing was due).
    pub consistency: f64,
    /// confirmed / expected (0 when nothing was due).
    pub confirmation: f64,
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

/// One week (Monday to Sunday).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct WeekProgress {
    /// Its Monday.
    pub week_start: LocalDate,
    /// Commitment consistency.
    pub commitments: CommitmentWeek,
    /// Check-ins of both partners together.
    pub check_ins: CheckInAverages,
    /// Check-ins per author.
    pub check_ins_by_author: BTreeMap<PartnerId, CheckInAverages>,
    /// Honesty moments noticed.
    pub honesty_moments: u32,
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
    /// Check-in trend over those weeks.
    pub trend: Trend,
}

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
            if let Some(v) = v {
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

/// Weekly progress over the weeks touching `from..=to`.
pub fn progress(
    records: &[Record],
    from: LocalDate,
    to: LocalDate,
    offset_minutes: i32,
) -> Result<Progress> {
    if to < from {
        return Err(Error::Invalid("the range ends before it starts".into()));
    }
    let first = from.week_start();
    let last = to.week_start();
    let n_weeks = (last.days() - first.days()) / 7 + 1;
    if n_weeks > MAX_WEEKS {
        return Err(Error::Invalid(format!(
            "a progress range covers at most {MAX_WEEKS} weeks"
        )));
    }
    let week_index = |d: LocalDate| -> Option<usize> {
        if d < from || d > to {
            return None;
        }
        usize::try_from((d.days() - first.days()) / 7).ok()
    };
    let n = usize::try_from(n_weeks).unwrap_or_default();
    let mut commitments = vec![CommitmentWeek::default(); n];
    let mut sums: Vec<Sums> = (0..n).map(|_| Sums::default()).collect();
    let mut by_author: Vec<BTreeMap<PartnerId, Sums>> = vec![BTreeMap::new(); n];
    let mut honesty = vec![0u32; n];

    for r in records.iter().filter(|r| !r.removed) {
        match &r.body {
            Body::CheckIn(c) => {
                let Some(i) = c.local_date.and_then(week_index) else {
                    continue;
                };
                sums[i].add(c.safety, c.trust, c.connection);
                by_author[i]
                    .entry(r.author)
                    .or_default()
                    .add(c.safety, c.trust, c.connection);
            }
            Body::HonestyMoment(_) => {
                if let Some(i) = week_index(LocalDate::from_unix_ms(r.created_at, offset_minutes)) {
                    honesty[i] += 1;
                }
            }
            Body::Commitment(c) => {
                let created = LocalDate::from_unix_ms(r.created_at, offset_minutes);
                if c.status == CommitmentStatus::Active {
                    for (i, week) in commitments.iter_mut().enumerate() {
                        let start = first.add_days(7 * i as i32);
                        let end = start.add_days(6).min(to);
                        let begin = start.max(created).max(from);
                        if begin > end {
                            continue;
                        }
                        week.expected += match c.cadence {
                            Cadence::Weekly => 1,
                            _ => (end.days() - begin.days() + 1).unsigned_abs(),
                        };
                    }
                }
                for (date, claim) in &c.claims {
                    if let Some(i) = week_index(*date) {
                        commitments[i].claimed += match claim.status {
                            ClaimStatus::Done => 1.0,
                            ClaimStatus::Partial => 0.5,
                            _ => 0.0,
                        };
                    }
                }
                for (date, view) in &c.views {
                    if let (Some(i), PartnerView::Confirmed) = (week_index(*date), view.view) {
                        commitments[i].confirmed += 1;
                    }
                }
            }
            _ => {}
        }
    }

    let weeks: Vec<WeekProgress> = (0..n)
        .map(|i| {
            let mut c = commitments[i].clone();
            if c.expected > 0 {
                let e = f64::from(c.expected);
                c.consistency = (c.claimed / e).min(1.0);
                c.confirmation = (f64::from(c.confirmed) / e).min(1.0);
            }
            WeekProgress {
                week_start: first.add_days(7 * i as i32),
                commitments: c,
                check_ins: sums[i].averages(),
                check_ins_by_author: by_author[i]
                    .iter()
                    .map(|(p, s)| (*p, s.averages()))
                    .collect(),
                honesty_moments: honesty[i],
            }
        })
        .collect();
    let slope_of = |pick: fn(&CheckInAverages) -> Option<f64>| {
        slope(
            weeks
                .iter()
                .enumerate()
                .filter_map(|(i, w)| pick(&w.check_ins).map(|v| (i as f64, v))),
        )
    };
    let trend = Trend {
        safety: slope_of(|a| a.safety),
        trust: slope_of(|a| a.trust),
        connection: slope_of(|a| a.connection),
    };
    Ok(Progress { weeks, trend })
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
