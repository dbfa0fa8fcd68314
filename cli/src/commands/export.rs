//! `export`: the therapist packet, rendered by mend-core, written to a file only its owner can
//! read (it holds the journal's words). An existing file is replaced only with `--force`.

use std::{fs, io::Write, path::Path};

use anyhow::{Context as _, Result};
use mend_core::{
    Kind,
    export::{Format, PacketOptions},
};

use super::reading;
use crate::{
    cli::ExportFormat,
    dates,
    failure::{Exit, Failure},
    home::Home,
    say,
    term::ProgressLine,
};

/// The range and kinds asked for.
#[derive(Debug)]
pub struct Range {
    /// First day, or the oldest shared record's.
    pub from: Option<String>,
    /// Last day, or today.
    pub to: Option<String>,
    /// Only these kinds.
    pub kinds: Vec<Kind>,
}

/// `export`: writes the file and prints its path.
pub fn export(
    home: &Home,
    format: ExportFormat,
    out: &Path,
    range: &Range,
    force: bool,
) -> Result<()> {
    if !force && out.exists() {
        return Err(Failure::new(
            Exit::Usage,
            format!(
                "{} already exists; pass --force to replace it",
                out.display()
            ),
        )
        .into());
    }
    let progress = ProgressLine::new();
    progress.show("Opening the journal…");
    let device = home.open(None)?;
    reading(&device, |journal| -> Result<()> {
        let (oldest, today) = journal.default_packet_range()?;
        let to = dates::or_today(range.to.as_deref(), today)?;
        let from = match &range.from {
            Some(s) => dates::parse(s)?,
            None => oldest.min(to),
        };
        let options = PacketOptions {
            from,
            to,
            kinds: range.kinds.clone(),
        };
        let format = match format {
            ExportFormat::Md => Format::Markdown,
            ExportFormat::Html => Format::Html,
        };
        progress.show(&format!("Rendering {from} to {to}…"));
        let text = journal.export_packet(&options, format)?;
        progress.show(&format!("Writing {}…", out.display()));
        write_private(out, text.as_bytes(), force)?;
        progress.clear();
        say!("{}", out.display());
        Ok(())
    })
}

fn write_private(path: &Path, bytes: &[u8], force: bool) -> Result<()> {
    if !force {
        // create_new: a file that appeared since the check above is not overwritten either.
        return write_new(path, bytes);
    }
    // Replaced, not rewritten in place: the packet gets a file of its own, readable by its
    // owner alone, whatever the old file's mode was, and a symlink there is replaced rather
    // than followed.
    // One name per target: a part left by a run cut off is replaced by the next.
    let name = path
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    let temp = path.with_file_name(format!(".{name}.part"));
    let _ = fs::remove_file(&temp);
    let written = write_new(&temp, bytes).and_then(|()| {
        fs::rename(&temp, path).with_context(|| format!("cannot write {}", path.display()))
    });
    if written.is_err() {
        let _ = fs::remove_file(&temp);
    }
    // The rename itself reaches the disk with its directory.
    if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty())
        && let Ok(dir) = fs::File::open(dir)
    {
        let _ = dir.sync_all();
    }
    written
}

/// Writes a new file, owner-only, that must not exist yet.
fn write_new(path: &Path, bytes: &[u8]) -> Result<()> {
    let mut options = fs::OpenOptions::new();
    options.write(true).create_new(true);
    #[cfg(unix)]
    std::os::unix::fs::OpenOptionsExt::mode(&mut options, 0o600);
    let mut file = options
        .open(path)
        .with_context(|| format!("cannot write {}", path.display()))?;
    file.write_all(bytes)
        .and_then(|()| file.sync_all())
        .with_context(|| format!("cannot write {}", path.display()))?;
    Ok(())
}
