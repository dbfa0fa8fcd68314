//! `export`: the therapist packet, rendered by mend-core, written to a file only its owner can
//! read (it holds the journal's words).

use std::{fs, io::Write, path::Path};

use anyhow::{Context as _, Result};
use mend_core::{
    Body, Kind, LocalDate,
    export::{Format, PacketOptions},
};

use super::lock;
use crate::{cli::ExportFormat, dates, home::Home, say, term::ProgressLine};

/// The range and kinds asked for.
#[derive(Debug)]
pub struct Range {
    /// First day, or the oldest record's.
    pub from: Option<String>,
    /// Last day, or today.
    pub to: Option<String>,
    /// Only these kinds.
    pub kinds: Vec<Kind>,
    /// Include this partner's private records.
    pub include_private: bool,
}

/// `export`: writes the file and prints its path.
pub fn export(home: &Home, format: ExportFormat, out: &Path, range: &Range) -> Result<()> {
    let progress = ProgressLine::new();
    progress.show("Opening the journal…");
    let device = home.open(None)?;
    let journal = lock(&device)?;
    let to = dates::or_today(range.to.as_deref())?;
    let from = match &range.from {
        Some(s) => dates::parse(s)?,
        None => oldest(&journal)?.unwrap_or(to).min(to),
    };
    let options = PacketOptions {
        from,
        to,
        kinds: range.kinds.clone(),
        include_private: range.include_private,
        offset_minutes: 0,
    };
    let format = match format {
        ExportFormat::Md => Format::Markdown,
        ExportFormat::Html => Format::Html,
    };
    progress.show(&format!(
        "Rendering {} records from {from} to {to}…",
        journal.records()?.len()
    ));
    let text = journal.export_packet(&options, format)?;
    progress.show(&format!("Writing {}…", out.display()));
    write_private(out, text.as_bytes())?;
    progress.clear();
    say!("{}", out.display());
    Ok(())
}

/// The day of the oldest record (a check-in by its own date).
fn oldest(journal: &mend_core::Journal) -> mend_core::Result<Option<LocalDate>> {
    Ok(journal
        .records()?
        .iter()
        .map(|r| match &r.body {
            Body::CheckIn(c) => c
                .local_date
                .unwrap_or(LocalDate::from_unix_ms(r.created_at, 0)),
            _ => LocalDate::from_unix_ms(r.created_at, 0),
        })
        .min())
}

fn write_private(path: &Path, bytes: &[u8]) -> Result<()> {
    let mut options = fs::OpenOptions::new();
    options.write(true).create(true).truncate(true);
    #[cfg(unix)]
    std::os::unix::fs::OpenOptionsExt::mode(&mut options, 0o600);
    let mut file = options
        .open(path)
        .with_context(|| format!("cannot write {}", path.display()))?;
    file.write_all(bytes)
        .with_context(|| format!("cannot write {}", path.display()))?;
    Ok(())
}
