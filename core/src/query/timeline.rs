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

/// What [`timeline`] needs of a record to pick it: its envelope.
#[derive(Clone, Copy, Debug)]
pub(crate) struct Pick {
    pub(crate) id: RecordId,
    pub(crate) kind: Kind,
    pub(crate) author: PartnerId,
    pub(crate) created_at: i64,
    pub(crate) removed: bool,
}

impl Pick {
    pub(crate) fn of(r: &Record) -> Self {
        Self {
            id: r.id,
            kind: r.kind(),
            author: r.author,
            created_at: r.created_at,
            removed: r.removed,
        }
    }
}

/// A query's page size and the cursor it continues from.
pub(crate) fn bounds(q: &TimelineQuery) -> Result<(usize, Option<(i64, RecordId)>)> {
    let limit = match q.limit {
        0 => 50,
        n => n.min(MAX_PAGE),
    };
    Ok((limit, q.cursor.as_deref().map(parse_cursor).transpose()?))
}

/// Whether `p` belongs on the timeline `q` asks for, past `after`.
pub(crate) fn wanted(q: &TimelineQuery, after: Option<(i64, RecordId)>, p: &Pick) -> bool {
    (q.kinds.is_empty() || q.kinds.contains(&p.kind))
        && q.author.is_none_or(|a| p.author == a)
        && q.from_ms.is_none_or(|f| p.created_at >= f)
        && q.to_ms.is_none_or(|t| p.created_at < t)
        && (q.include_removed || !p.removed)
        && after.is_none_or(|c| (p.created_at, p.id) < c)
}

/// Newest first.
pub(crate) fn sort_key(p: &Pick) -> std::cmp::Reverse<(i64, RecordId)> {
    std::cmp::Reverse((p.created_at, p.id))
}

/// The cursor that continues after `last`.
pub(crate) fn cursor_after(last: &Record) -> String {
    format!("{}/{}", last.created_at, last.id)
}

/// A page of `records` matching `q`.
pub fn timeline(records: &[Record], q: &TimelineQuery) -> Result<TimelinePage> {
    let (limit, after) = bounds(q)?;
    let mut matching: Vec<&Record> = records
        .iter()
        .filter(|r| wanted(q, after, &Pick::of(r)))
        .collect();
    matching.sort_by_key(|r| sort_key(&Pick::of(r)));
    let more = matching.len() > limit;
    matching.truncate(limit);
    let next_cursor = match (more, matching.last()) {
        (true, Some(last)) => Some(cursor_after(last)),
        _ => None,
    };
    Ok(TimelinePage {
        items: matching.into_iter().cloned().collect(),
        next_cursor,
    })
}
