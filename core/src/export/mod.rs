//! The therapist packet: a chosen date range and kinds of records, as Markdown or as one
//! self-contained HTML page with the weekly progress drawn as an inline SVG chart.
//!
//! Generated on the device; nothing leaves it unless the partner shares the file.

mod html;
mod markdown;
mod render;

use serde::{Deserialize, Serialize};

use crate::{
    Journal, LocalDate,
    error::{Error, Result},
    model::{Kind, Record, Visibility},
    query::{self, Progress},
};

/// Output format.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Format {
    /// Markdown text.
    Markdown,
    /// One HTML page, no external resources.
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
    /// Include this partner's private records (off by default: a packet is usually shared).
    pub include_private: bool,
    /// Offset of the local zone from UTC, in minutes.
    pub offset_minutes: i32,
}

/// Everything a renderer needs.
#[derive(Debug)]
pub(crate) struct Packet {
    pub(crate) options: PacketOptions,
    pub(crate) names: Vec<(crate::PartnerId, String)>,
    pub(crate) records: Vec<Record>,
    pub(crate) progress: Progress,
}

impl Packet {
    pub(crate) fn name_of(&self, id: crate::PartnerId) -> &str {
        self.names
            .iter()
            .find(|(p, _)| *p == id)
            .map_or("unknown partner", |(_, n)| n.as_str())
    }
}

/// The local date a record belongs to in the packet.
pub(crate) fn record_date(r: &Record, offset_minutes: i32) -> LocalDate {
    match &r.body {
        crate::Body::CheckIn(c) => c
            .local_date
            .unwrap_or_else(|| LocalDate::from_unix_ms(r.created_at, offset_minutes)),
        _ => LocalDate::from_unix_ms(r.created_at, offset_minutes),
    }
}

impl Journal {
    /// Renders the therapist packet.
    pub fn export_packet(&self, options: &PacketOptions, format: Format) -> Result<String> {
        if options.to < options.from {
            return Err(Error::Invalid("the range ends before it starts".into()));
        }
        let all = if options.include_private {
            self.records()?
        } else {
            self.shared_records()?
        };
        let mut records: Vec<Record> = all
            .iter()
            .filter(|r| !r.removed)
            .filter(|r| options.include_private || r.visibility == Visibility::Shared)
            .filter(|r| options.kinds.is_empty() || options.kinds.contains(&r.kind()))
            .filter(|r| {
                let d = record_date(r, options.offset_minutes);
                d >= options.from && d <= options.to
            })
            .cloned()
            .collect();
        records.sort_by_key(|r| {
            (
                Kind::ALL.iter().position(|k| *k == r.kind()),
                r.created_at,
                r.id,
            )
        });
        let progress_input: Vec<Record> = all
            .into_iter()
            .filter(|r| options.include_private || r.visibility == Visibility::Shared)
            .collect();
        let progress = query::progress(
            &progress_input,
            options.from,
            options.to,
            options.offset_minutes,
        )?;
        let names = self
            .partners()
            .into_iter()
            .map(|p| (p.id, p.name))
            .collect();
        let packet = Packet {
            options: options.clone(),
            names,
            records,
            progress,
        };
        Ok(match format {
            Format::Markdown => markdown::render(&packet),
            Format::Html => html::render(&packet),
        })
    }
}
