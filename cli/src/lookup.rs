//! Finding a record from what the user typed: its full id, or the short id `mend list` shows.
//!
//! Short ids are the end of the id, not the start: UUIDv7 ids begin with a timestamp, so
//! records written in the same minute share their first characters but never their last.

use mend_core::{Journal, RecordId};

use crate::failure::Failure;

/// Characters of an id shown in tables.
pub const SHORT: usize = 8;

/// The short form of an id.
pub fn short(id: RecordId) -> String {
    let s = id.to_string();
    s[s.len() - SHORT..].to_owned()
}

/// The record `typed` names: a full id as is, or the one record whose id ends with it.
pub fn resolve(journal: &Journal, typed: &str) -> Result<RecordId, Failure> {
    let typed = typed.trim();
    if let Ok(id) = typed.parse::<RecordId>() {
        return Ok(id);
    }
    let shown = crate::choice::truncate(typed);
    if typed.len() < 4 || !typed.chars().all(|c| c.is_ascii_hexdigit() || c == '-') {
        return Err(Failure::input(format!("not a record id: {shown:?}")));
    }
    let needle = typed.to_ascii_lowercase();
    let mut found = journal
        .records()?
        .into_iter()
        .map(|r| r.id)
        .filter(|id| id.to_string().ends_with(&needle));
    match (found.next(), found.next()) {
        (Some(id), None) => Ok(id),
        (None, _) => Err(Failure::input(format!("no record with id {shown}"))),
        (Some(_), Some(_)) => Err(Failure::input(format!(
            "{shown} matches more than one record; give more of the id"
        ))),
    }
}
