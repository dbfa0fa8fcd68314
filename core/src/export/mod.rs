//! The therapist packet: a date range of the shared journal, as Markdown or as one
//! self-contained HTML page that prints cleanly to PDF.
//!
//! Both formats render one model (`model.rs`): a cover with a summary per practice, the weekly
//! progress per partner (with a chart in HTML), the records as whole threads (a question with
//! its answers, a share with its replies and validations, a boundary with both consents, a
//! commitment with its ledger), and the check-ins as one table per partner. Private records
//! are never included: a packet is made to be handed to someone. Generated on the device.

mod html;
mod markdown;
mod model;

use serde::{Deserialize, Serialize};

use crate::{
    Journal, LocalDate,
    calendar::Calendar,
    error::{Error, Result},
    model::{Body, Kind, Record, Visibility},
    query::{self, MAX_WEEKS},
};

/// Output format.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Format {
    /// Markdown text.
    Markdown,
    /// One HTML page, no external resources, no scripts.
    Html,
}

/// What goes into the packet.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct PacketOptions {
    /// First local date included.
    pub from: LocalDate,
    /// Last local date included.
    pub to: LocalDate,
    /// Kinds to include (empty: all).
    pub kinds: Vec<Kind>,
}

/// The local date a record belongs to in the packet: a check-in's own day, an honesty
/// moment's day, otherwise the day it was written in the couple's zone.
pub fn record_date(r: &Record, calendar: &Calendar) -> LocalDate {
    match &r.body {
        Body::CheckIn(c) => c
            .local_date
            .unwrap_or_else(|| calendar.date_of(r.created_at)),
        Body::HonestyMoment(_) => query::honesty_day(r, calendar),
        _ => calendar.date_of(r.created_at),
    }
}

impl Journal {
    /// The range a packet covers by default: from the oldest live shared record (never earlier
    /// than the journal's dates allow, nor more than the longest progress range) to today.
    pub fn default_packet_range(&self) -> Result<(LocalDate, LocalDate)> {
        let to = self.today();
        let floor = self
            .date_bounds()
            .0
            .max(to.add_days(-7 * (MAX_WEEKS - 1)))
            .max(self.calendar().week_of(to).add_days(-7 * (MAX_WEEKS - 1)));
        let oldest = self
            .shared_records()?
            .iter()
            .filter(|r| !r.removed)
            .map(|r| record_date(r, self.calendar()))
            .min()
            .unwrap_or(to);
        Ok((oldest.clamp(floor, to), to))
    }

    /// Renders the therapist packet from the shared journal.
    pub fn export_packet(&self, options: &PacketOptions, format: Format) -> Result<String> {
        if options.to < options.from {
            return Err(Error::Invalid("the range ends before it starts".into()));
        }
        let shared: Vec<Record> = self
            .shared_records()?
            .into_iter()
            .filter(|r| r.visibility == Visibility::Shared)
            .collect();
        let partners: Vec<_> = self.partners().into_iter().map(|p| p.id).collect();
        let progress = query::progress(
            &shared,
            &partners,
            options.from,
            options.to,
            self.calendar(),
        )?;
        let names = self
            .partners()
            .into_iter()
            .map(|p| (p.id, p.name))
            .collect();
        let packet = model::build(options, names, &shared, progress, self.calendar());
        Ok(match format {
            Format::Markdown => markdown::render(&packet),
            Format::Html => html::render(&packet),
        })
    }
}
