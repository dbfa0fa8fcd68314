//! The views the app needs, computed from records.
//!
//! Every query is a pure function of a record list, so the same records give the same answer on
//! every device; [`Journal`](crate::Journal) has a method for each that feeds it what this partner
//! can see.

mod occurrence;
mod progress;
mod status;
mod thread;
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
pub(crate) use thread::attached_to;
pub use thread::{LedgerEntry, Thread, thread};
pub use timeline::{MAX_PAGE, TimelinePage, TimelineQuery, timeline};
pub use today::{CONFIRM_WITHIN_DAYS, Occurrence, Today, today};

use std::collections::HashSet;

use timeline::Pick;

use crate::{Error, Journal, LocalDate, RecordId, Result, store::Space};

impl Journal {
    /// A page of the timeline, newest first.
    ///
    /// The page is picked by walking the read model's envelope index newest first, and only
    /// its records are decoded, so a page costs what it shows, whatever the journal's size.
    pub fn timeline(&self, query: &TimelineQuery) -> Result<TimelinePage> {
        let (limit, after) = timeline::bounds(query)?;
        let before = after.map(|(at, id)| (at, id.to_string()));
        let mut items = Vec::with_capacity(limit);
        let mut seen: HashSet<RecordId> = HashSet::new();
        let mut more = false;
        let mut failed = None;
        self.store().visit_newest(
            before.as_ref().map(|(at, id)| (*at, id.as_str())),
            |space, id, e| {
                let (Ok(id), Ok(kind), Ok(author)) =
                    (id.parse::<RecordId>(), e.kind.parse(), e.author.parse())
                else {
                    return Ok(true);
                };
                // A record in both spaces (a check-in with private fields) takes its place from
                // the couple's envelope, as `get` does: the private half, which may carry
                // another creation time (two devices made it at once), only stands for a record
                // with no shared half.
                if space == Space::Personal
                    && self.store().view_has(Space::Couple, &id.to_string())?
                {
                    return Ok(true);
                }
                if !seen.insert(id) {
                    return Ok(true); // the record's other space, already decided
                }
                let pick = Pick {
                    id,
                    kind,
                    author,
                    created_at: e.created_at,
                    removed: e.removed,
                };
                if !timeline::wanted(query, after, &pick) {
                    return Ok(true);
                }
                // Records this version cannot read are left out, as in `records()`.
                let record = match self.get(id) {
                    // The decoded record decides, should its envelope differ from the columns.
                    Ok(record) if timeline::wanted(query, after, &Pick::of(&record)) => record,
                    Ok(_) => return Ok(true),
                    Err(e @ Error::Storage(_)) => {
                        failed = Some(e);
                        return Ok(false);
                    }
                    Err(_) => return Ok(true),
                };
                if items.len() == limit {
                    more = true;
                    return Ok(false);
                }
                items.push(record);
                Ok(true)
            },
        )?;
        if let Some(e) = failed {
            return Err(e);
        }
        let next_cursor = match (more, items.last()) {
            (true, Some(last)) => Some(timeline::cursor_after(last)),
            _ => None,
        };
        Ok(TimelinePage { items, next_cursor })
    }

    /// Record `id` with its thread: answers, replies, validations, a boundary's consents, a
    /// commitment's ledger.
    pub fn thread(&self, id: RecordId) -> Result<Thread> {
        let record = self.get(id)?;
        let partners: Vec<_> = self.partners().into_iter().map(|p| p.id).collect();
        Ok(thread(&self.records()?, &partners, record))
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
