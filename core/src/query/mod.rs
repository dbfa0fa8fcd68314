//! The views the app needs, computed from records.
//!
//! Every query is a pure function of a record list, so the same records give the same answer on
//! every device; [`Journal`](crate::Journal) has a method for each that feeds it what this partner
//! can see.

mod occurrence;
mod progress;
mod status;
mod timeline;
mod today;

pub use occurrence::Life;
pub use progress::{
    CheckInAverages, CommitmentWeek, MAX_WEEKS, PartnerWeek, Progress, Trend, WeekProgress,
    honesty_day, progress,
};
pub use status::{
    BoundaryState, BoundaryStatus, ConsentView, QuestionThread, boundary_status, needs,
    open_questions,
};
pub use timeline::{MAX_PAGE, TimelinePage, TimelineQuery, timeline};
pub use today::{CONFIRM_WITHIN_DAYS, Occurrence, Today, today};

use std::collections::HashMap;

use timeline::Pick;

use crate::{Error, Journal, LocalDate, RecordId, Result, store::Space};

impl Journal {
    /// A page of the timeline, newest first.
    ///
    /// The page is picked from the read model's envelope columns and only its records are
    /// decoded, so the first page of a large journal costs milliseconds.
    pub fn timeline(&self, query: &TimelineQuery) -> Result<TimelinePage> {
        let (limit, after) = timeline::bounds(query)?;
        // The couple's envelope wins over a private copy, as in the records themselves.
        let mut picks: HashMap<RecordId, Pick> = HashMap::new();
        for space in [Space::Personal, Space::Couple] {
            for (id, e) in self.store().view_envelopes(space)? {
                let (Ok(id), Ok(kind), Ok(author)) = (id.parse(), e.kind.parse(), e.author.parse())
                else {
                    continue;
                };
                picks.insert(
                    id,
                    Pick {
                        id,
                        kind,
                        author,
                        created_at: e.created_at,
                        removed: e.removed,
                    },
                );
            }
        }
        let mut picks: Vec<Pick> = picks
            .into_values()
            .filter(|p| timeline::wanted(query, after, p))
            .collect();
        picks.sort_by_key(timeline::sort_key);
        let mut items = Vec::with_capacity(limit.min(picks.len()));
        let mut more = false;
        for pick in picks {
            // Records this version cannot read are left out, as in `records()`.
            let record = match self.get(pick.id) {
                // The decoded record decides, should its envelope differ from the columns.
                Ok(record) if timeline::wanted(query, after, &Pick::of(&record)) => record,
                Ok(_) => continue,
                Err(e @ Error::Storage(_)) => return Err(e),
                Err(_) => continue,
            };
            if items.len() == limit {
                more = true;
                break;
            }
            items.push(record);
        }
        let next_cursor = match (more, items.last()) {
            (true, Some(last)) => Some(timeline::cursor_after(last)),
            _ => None,
        };
        Ok(TimelinePage { items, next_cursor })
    }

    /// Questions still open (or put off with "not now"), with their answers.
    pub fn open_questions(&self) -> Result<Vec<QuestionThread>> {
        Ok(open_questions(&self.records()?))
    }

    /// Every live boundary with whether it is agreed on its current wording.
    pub fn boundary_status(&self) -> Result<Vec<BoundaryStatus>> {
        let partners: Vec<_> = self.partners().into_iter().map(|p| p.id).collect();
        Ok(boundary_status(&self.records()?, &partners))
    }

    /// Every live need with the partner's response.
    pub fn needs(&self) -> Result<Vec<crate::Record>> {
        Ok(needs(&self.records()?))
    }

    /// Weekly progress for the whole weeks touching `from..=to`, as of `to`, in the journal's
    /// calendar.
    pub fn progress(&self, from: LocalDate, to: LocalDate) -> Result<Progress> {
        let partners: Vec<_> = self.partners().into_iter().map(|p| p.id).collect();
        progress(&self.records()?, &partners, from, to, self.calendar())
    }

    /// What waits on this partner today, in the couple's zone.
    pub fn waiting_today(&self) -> Result<Today> {
        Ok(today(
            &self.records()?,
            self.me(),
            self.today(),
            self.calendar(),
        ))
    }

    /// Progress for the last `weeks` whole weeks up to today (this week included).
    pub fn recent_progress(&self, weeks: u32) -> Result<Progress> {
        if weeks == 0 || weeks > MAX_WEEKS.unsigned_abs() {
            return Err(Error::Invalid(format!(
                "progress covers 1 to {MAX_WEEKS} weeks"
            )));
        }
        let today = self.today();
        let from = self
            .calendar()
            .week_of(today)
            .add_days(-7 * (weeks as i32 - 1));
        self.progress(from, today)
    }
}
