//! The views the app needs, computed from records.
//!
//! Every query is a pure function of a record list, so the same records give the same answer on
//! every device; [`Journal`](crate::Journal) has a method for each that feeds it what this partner
//! can see.

mod progress;
mod status;
mod timeline;

pub use progress::{CheckInAverages, CommitmentWeek, Progress, Trend, WeekProgress, progress};
pub use status::{
    BoundaryState, BoundaryStatus, ConsentView, QuestionThread, boundary_status, needs,
    open_questions,
};
pub use timeline::{MAX_PAGE, TimelinePage, TimelineQuery, timeline};

use crate::{Journal, LocalDate, Result};

impl Journal {
    /// A page of the timeline, newest first.
    pub fn timeline(&self, query: &TimelineQuery) -> Result<TimelinePage> {
        timeline(&self.records(), query)
    }

    /// Questions still open (or put off with "not now"), with their answers.
    pub fn open_questions(&self) -> Vec<QuestionThread> {
        open_questions(&self.records())
    }

    /// Every live boundary with whether it is agreed on its current wording.
    pub fn boundary_status(&self) -> Vec<BoundaryStatus> {
        let partners: Vec<_> = self.partners().into_iter().map(|p| p.id).collect();
        boundary_status(&self.records(), &partners)
    }

    /// Every live need with the partner's response.
    pub fn needs(&self) -> Vec<crate::Record> {
        needs(&self.records())
    }

    /// Weekly progress for the weeks touching `from..=to`, in a zone `offset_minutes` east of UTC.
    pub fn progress(
        &self,
        from: LocalDate,
        to: LocalDate,
        offset_minutes: i32,
    ) -> Result<Progress> {
        progress(&self.records(), from, to, offset_minutes)
    }
}
