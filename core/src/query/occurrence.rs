//! When a commitment falls due: the follow-through rules, in one place.
//!
//! A daily commitment is due each day it is active; a weekly one once per week (Monday to
//! Sunday, keyed by the Monday whatever the display week) if it is active on any day of it.
//! Its life runs from `starts_on` (or the day it was made) through its status changes: paused,
//! done and retired days are not due. Claims, confirmations and progress all use these rules,
//! so a claim the core refused can never be counted and a week's figures add up.

use crate::{
    calendar::Calendar,
    date::LocalDate,
    model::{Body, Cadence, Commitment, CommitmentStatus, Record},
};

/// A commitment's life, read once from its record.
#[derive(Clone, Debug, PartialEq)]
pub struct Life {
    /// Daily or weekly.
    pub cadence: Cadence,
    /// The first day it may be due.
    pub start: LocalDate,
    changes: Vec<(LocalDate, CommitmentStatus)>,
    current: CommitmentStatus,
}

impl Life {
    /// The life of a commitment record, dated in `calendar`'s zone; `None` for other kinds.
    pub fn of(record: &Record, calendar: &Calendar) -> Option<Self> {
        let Body::Commitment(c) = &record.body else {
            return None;
        };
        Some(Self::of_commitment(c, calendar.date_of(record.created_at)))
    }

    /// The life of a commitment made on `made_on`.
    pub fn of_commitment(c: &Commitment, made_on: LocalDate) -> Self {
        Self {
            cadence: c.cadence,
            start: c.starts_on.unwrap_or(made_on),
            changes: c.status_changes.iter().map(|(d, s)| (*d, *s)).collect(),
            current: c.status,
        }
    }

    /// Its status on `day` (before its start: its first recorded status).
    pub fn status_on(&self, day: LocalDate) -> CommitmentStatus {
        if self.changes.is_empty() {
            // Written before status changes were recorded: its status now is all we know.
            return self.current;
        }
        self.changes
            .iter()
            .rev()
            .find(|(d, _)| *d <= day)
            .or(self.changes.first())
            .map_or(self.current, |(_, s)| *s)
    }

    /// Whether it is running on `day`.
    pub fn active_on(&self, day: LocalDate) -> bool {
        day >= self.start && self.status_on(day) == CommitmentStatus::Active
    }

    /// The ledger key of the occurrence `day` falls in: the day itself, or for a weekly
    /// commitment its ISO week's Monday (so both partners name the same occurrence).
    pub fn occurrence_of(&self, day: LocalDate) -> LocalDate {
        match self.cadence {
            Cadence::Weekly => day.week_start(),
            _ => day,
        }
    }

    /// Whether the occurrence keyed `key` was due, counting days up to `as_of` only.
    pub fn is_due(&self, key: LocalDate, as_of: LocalDate) -> bool {
        if self.occurrence_of(key) != key {
            return false;
        }
        let last = match self.cadence {
            Cadence::Weekly => key.add_days(6),
            _ => key,
        }
        .min(as_of);
        let mut day = key;
        while day <= last {
            if self.active_on(day) {
                return true;
            }
            day = day.add_days(1);
        }
        false
    }

    /// Keys of the occurrences due with a key in `from..=to`, counting days up to `as_of`.
    pub fn due_between(&self, from: LocalDate, to: LocalDate, as_of: LocalDate) -> Vec<LocalDate> {
        let mut out = Vec::new();
        let mut day = self.occurrence_of(from.max(self.start.add_days(-6)));
        while day <= to && day <= as_of {
            if day >= from && self.is_due(day, as_of) {
                out.push(day);
            }
            day = day.add_days(match self.cadence {
                Cadence::Weekly => 7,
                _ => 1,
            });
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use super::*;

    fn d(s: &str) -> LocalDate {
        s.parse().unwrap_or(LocalDate::from_unix_ms(0, 0))
    }

    fn daily(changes: &[(&str, CommitmentStatus)]) -> Life {
        let c = Commitment {
            cadence: Cadence::Daily,
            status: changes.last().map_or(CommitmentStatus::Active, |c| c.1),
            starts_on: Some(d("2026-11-23")),
            status_changes: changes
                .iter()
                .map(|(s, st)| (d(s), *st))
                .collect::<BTreeMap<_, _>>(),
            ..Default::default()
        };
        Life::of_commitment(&c, d("2026-11-25"))
    }

    #[test]
    fn a_daily_commitment_is_due_from_its_start_and_not_while_paused_or_ended() {
        let life = daily(&[
            ("2026-11-23", CommitmentStatus::Active),
            ("2026-11-26", CommitmentStatus::Paused),
            ("2026-11-28", CommitmentStatus::Active),
            ("2026-12-01", CommitmentStatus::Done),
        ]);
        let due = life.due_between(d("2026-11-16"), d("2026-12-06"), d("2026-12-06"));
        let want: Vec<_> = [
            "2026-11-23",
            "2026-11-24",
            "2026-11-25",
            "2026-11-28",
            "2026-11-29",
            "2026-11-30",
        ]
        .into_iter()
        .map(d)
        .collect();
        assert_eq!(due, want);
        assert!(
            !life.is_due(d("2026-11-22"), d("2026-12-06")),
            "before its start"
        );
        assert!(!life.is_due(d("2026-11-27"), d("2026-12-06")), "paused");
        assert!(!life.is_due(d("2026-12-02"), d("2026-12-06")), "done");
        assert!(!life.is_due(d("2026-11-25"), d("2026-11-24")), "not yet");
    }

    #[test]
    fn a_weekly_commitment_is_due_in_any_week_it_was_running() {
        let c = Commitment {
            cadence: Cadence::Weekly,
            status: CommitmentStatus::Retired,
            starts_on: Some(d("2026-11-26")),
            status_changes: [
                (d("2026-11-26"), CommitmentStatus::Active),
                (d("2026-12-08"), CommitmentStatus::Retired),
            ]
            .into_iter()
            .collect(),
            ..Default::default()
        };
        let life = Life::of_commitment(&c, d("2026-11-26"));
        assert_eq!(life.occurrence_of(d("2026-11-29")), d("2026-11-23"));
        let due = life.due_between(d("2026-11-01"), d("2026-12-31"), d("2026-12-31"));
        assert_eq!(due, vec![d("2026-11-23"), d("2026-11-30"), d("2026-12-07")]);
        assert!(
            !life.is_due(d("2026-11-24"), d("2026-12-31")),
            "not a week's key"
        );
    }

    #[test]
    fn a_commitment_from_before_status_changes_follows_its_current_status() {
        let c = Commitment {
            cadence: Cadence::Daily,
            status: CommitmentStatus::Paused,
            ..Default::default()
        };
        let life = Life::of_commitment(&c, d("2026-11-23"));
        assert!(
            life.due_between(d("2026-11-23"), d("2026-11-30"), d("2026-11-30"))
                .is_empty()
        );
    }
}
