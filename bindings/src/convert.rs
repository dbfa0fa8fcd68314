//! Small translations shared by every module: ids and dates travel as strings, scores as
//! `i32` (`Int` in Kotlin, where unsigned types are awkward to write), and a string that does not parse is `Invalid`.

use mend_core::{LocalDate, PartnerId, RecordId};

use crate::error::{MendError, Result};

pub(crate) fn record_id(s: &str) -> Result<RecordId> {
    Ok(s.parse()?)
}

pub(crate) fn opt_record_id(s: Option<&str>) -> Result<Option<RecordId>> {
    s.map(record_id).transpose()
}

pub(crate) fn record_ids(ids: &[String]) -> Result<Vec<RecordId>> {
    ids.iter().map(|s| record_id(s)).collect()
}

pub(crate) fn partner_id(s: &str) -> Result<PartnerId> {
    Ok(s.parse()?)
}

/// A `YYYY-MM-DD` date.
pub(crate) fn date(s: &str) -> Result<LocalDate> {
    Ok(s.parse()?)
}

pub(crate) fn opt_date(s: Option<&str>) -> Result<Option<LocalDate>> {
    s.map(date).transpose()
}

pub(crate) fn strings<T: ToString>(items: &[T]) -> Vec<String> {
    items.iter().map(ToString::to_string).collect()
}

/// A 0–10 score; the core checks the range, this only refuses what does not fit a byte.
pub(crate) fn score(v: i32) -> Result<u8> {
    u8::try_from(v).map_err(|_| MendError::invalid(format!("a score must be 0 to 10, not {v}")))
}

pub(crate) fn opt_score(v: Option<i32>) -> Result<Option<u8>> {
    v.map(score).transpose()
}
