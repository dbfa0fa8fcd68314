//! The timeline: every record, newest first, paged with an opaque cursor.

use serde::{Deserialize, Serialize};

use crate::{
    error::{Error, Result},
    ids::{PartnerId, RecordId},
    model::{Kind, Record},
};

/// Most records a page may hold.
pub const MAX_PAGE: usize = 500;

/// What to show.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct TimelineQuery {
    /// Only these kinds (empty: all).
    pub kinds: Vec<Kind>,
    /// Only this author.
    pub author: Option<PartnerId>,
    /// Created at or after (unix ms).
    pub from_ms: Option<i64>,
    /// Created before (unix ms).
    pub to_ms: Option<i64>,
    /// Show removed placeholders too.
    pub include_removed: bool,
    /// Page size (0 means 50).
    pub limit: usize,
    /// Where the previous page ended.
    pub cursor: Option<String>,
}

/// One page.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct TimelinePage {
    /// Records, newest first.
    pub items: Vec<Record>,
    /// Pass back to get the next page; `None` at the end.
    pub next_cursor: Option<String>,
}

fn parse_cursor(cursor: &str) -> Result<(i64, RecordId)> {
    let bad = || Error::Invalid("not a timeline cursor".into());
    let (at, id) = cursor.split_once('/').ok_or_else(bad)?;
    Ok((
        at.parse().map_err(|_| bad())?,
        id.parse().map_err(|_| bad())?,
    ))
}

/// A page of `records` matching `q`.
pub fn timeline(records: &[Record], q: &TimelineQuery) -> Result<TimelinePage> {
    let limit = match q.limit {
        0 => 50,
        n => n.min(MAX_PAGE),
    };
    let after = q.cursor.as_deref().map(parse_cursor).transpose()?;
    let mut matching: Vec<&Record> = records
        .iter()
        .filter(|r| q.kinds.is_empty() || q.kinds.contains(&r.kind()))
        .filter(|r| q.author.is_none_or(|a| r.author == a))
        .filter(|r| q.from_ms.is_none_or(|f| r.created_at >= f))
        .filter(|r| q.to_ms.is_none_or(|t| r.created_at < t))
        .filter(|r| q.include_removed || !r.removed)
        .filter(|r| after.is_none_or(|c| (r.created_at, r.id) < c))
        .collect();
    matching.sort_by_key(|r| std::cmp::Reverse((r.created_at, r.id)));
    let more = matching.len() > limit;
    matching.truncate(limit);
    let next_cursor = match (more, matching.last()) {
        (true, Some(last)) => Some(format!("{}/{}", last.created_at, last.id)),
        _ => None,
    };
    Ok(TimelinePage {
        items: matching.into_iter().cloned().collect(),
        next_cursor,
    })
}
