//! Reads: a small pool of read-only connections, used from blocking tasks.
//!
//! In WAL mode readers never block the writer nor each other, so pulls and snapshot fetches run
//! beside group commits. Each read runs in its own transaction so a page's `head` and its chunks
//! come from the same instant.

use std::{
    path::PathBuf,
    sync::{Mutex, PoisonError},
};

use mend_protocol::{
    Chunk, DeviceId, Mark, Page, Rollup, Sizes, Snapshot, SpaceId, chunk_mark, payload_sha256,
};
use rusqlite::{Connection, OptionalExtension, params};

use super::schema;
use crate::storage::{Entry, EraseReason, PullRequest, StorageError, Tombstone, Walked, walk};

/// Idle read connections kept for reuse.
const MAX_IDLE: usize = 8;

/// A pool of read-only connections.
#[derive(Debug)]
pub(crate) struct Readers {
    path: PathBuf,
    idle: Mutex<Vec<Connection>>,
}

impl Readers {
    pub(crate) fn new(path: PathBuf) -> Readers {
        Readers {
            path,
            idle: Mutex::new(Vec::new()),
        }
    }

    /// Runs `read` on a pooled connection. Blocking: call from a blocking task.
    pub(crate) fn with<T>(
        &self,
        read: impl FnOnce(&mut Connection) -> rusqlite::Result<T>,
    ) -> rusqlite::Result<T> {
        let pooled = self
            .idle
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .pop();
        let mut conn = match pooled {
            Some(conn) => conn,
            None => schema::open_reader(&self.path)?,
        };
        let result = read(&mut conn);
        if result.is_ok() {
            let mut idle = self.idle.lock().unwrap_or_else(PoisonError::into_inner);
            if idle.len() < MAX_IDLE {
                idle.push(conn);
            }
        }
        result
    }
}

/// A row the database should never hold (a wrong-sized id, a pruned chunk past the snapshot).
fn corrupt(what: &'static str) -> rusqlite::Error {
    rusqlite::Error::ToSqlConversionFailure(format!("corrupt relay database: {what}").into())
}

/// Reads one page of chunks.
pub(crate) fn pull(
    conn: &mut Connection,
    space: &SpaceId,
    request: PullRequest,
) -> rusqlite::Result<Result<Page, StorageError>> {
    let tx = conn.transaction()?;
    let meta: Option<(i64, i64, i64)> = tx
        .prepare_cached("SELECT id, next_seq, covers FROM spaces WHERE space_id = ?1")?
        .query_row([&space.0[..]], |row| {
            Ok((row.get(0)?, row.get(1)?, row.get(2)?))
        })
        .optional()?;
    let Some((id, next_seq, covers)) = meta else {
        return Ok(Err(StorageError::SpaceNotFound));
    };
    let head = (next_seq - 1) as u64;
    let covers = covers as u64;
    if request.after < covers && !request.include_pruned {
        return Ok(Err(StorageError::Pruned {
            snapshot_covers: covers,
        }));
    }
    if request.rollups {
        let page = pull_rollups(&tx, id, head, covers, &request)?;
        tx.commit()?;
        return Ok(page);
    }
    let after = i64::try_from(request.after).unwrap_or(i64::MAX);
    let limit = request.limit.max(1);
    let fetch = i64::try_from(limit + 1).unwrap_or(i64::MAX);
    let mut chunks = Vec::new();
    let mut total = 0usize;
    let mut more = false;
    {
        let mut statement;
        let mut rows = match &request.exclude_device {
            Some(device) => {
                statement = tx.prepare_cached(
                    "SELECT seq, device_id, device_seq, payload FROM chunks
                     WHERE space = ?1 AND seq > ?2 AND device_id <> ?4 ORDER BY seq LIMIT ?3",
                )?;
                statement.query(params![id, after, fetch, &device.0[..]])?
            }
            None => {
                statement = tx.prepare_cached(
                    "SELECT seq, device_id, device_seq, payload FROM chunks
                     WHERE space = ?1 AND seq > ?2 ORDER BY seq LIMIT ?3",
                )?;
                statement.query(params![id, after, fetch])?
            }
        };
        while let Some(row) = rows.next()? {
            let payload: Option<Vec<u8>> = row.get(3)?;
            let Some(payload) = payload else {
                // Below the snapshot, pruned chunks are served until deleted after their
                // grace; deleted ones form a prefix of the log.
                if (row.get::<_, i64>(0)? as u64) <= covers {
                    return Ok(Err(StorageError::Pruned {
                        snapshot_covers: covers,
                    }));
                }
                return Err(corrupt("pruned chunk above the snapshot"));
            };
            if chunks.len() == limit
                || (!chunks.is_empty() && total + payload.len() > request.max_bytes)
            {
                more = true;
                break;
            }
            let device_id: Vec<u8> = row.get(1)?;
            let device_id = <[u8; 16]>::try_from(device_id.as_slice())
                .map_err(|_| corrupt("device id length"))?;
            total += payload.len();
            chunks.push(Chunk {
                relay_seq: row.get::<_, i64>(0)? as u64,
                device_id: DeviceId(device_id),
                device_seq: row.get::<_, i64>(2)? as u64,
                payload,
            });
        }
    }
    let next_after = match chunks.last() {
        Some(last) if more => last.relay_seq,
        _ => head,
    };
    let after_mark = mark_at(&tx, id, request.after)?;
    let next_mark = mark_at(&tx, id, next_after)?;
    tx.commit()?;
    Ok(Ok(Page {
        head,
        next_after,
        more,
        after_mark,
        next_mark,
        chunks,
        rollups: Vec::new(),
    }))
}

/// Chunks a pull with rollups serves: above the cursor, not the excluded device's, and not
/// stood for by a held rollup above the cursor (other than the one at `?4`, passed over).
const SERVED_CHUNKS: &str = "c.space = ?1 AND c.seq > ?2 AND (?3 IS NULL OR c.device_id <> ?3)
     AND (c.rollup_seq IS NULL OR c.rollup_seq <= ?2 OR c.rollup_seq IS ?4
          OR NOT EXISTS (SELECT 1 FROM rollups r WHERE r.space = c.space AND r.seq = c.rollup_seq
                         AND r.payload IS NOT NULL))";

/// Rollups a pull serves: held, above the cursor, not the excluded device's.
const SERVED_ROLLUPS: &str = "space = ?1 AND seq > ?2 AND (?3 IS NULL OR device_id <> ?3)
     AND payload IS NOT NULL AND seq IS NOT ?4";

/// Reads one page with rollups in place of the chunks they stand for (see `storage::walk`).
fn pull_rollups(
    tx: &rusqlite::Transaction<'_>,
    id: i64,
    head: u64,
    covers: u64,
    request: &PullRequest,
) -> rusqlite::Result<Result<Page, StorageError>> {
    let after = i64::try_from(request.after).unwrap_or(i64::MAX);
    let fetch = i64::try_from(request.limit.max(1).saturating_add(1)).unwrap_or(i64::MAX);
    let exclude = request.exclude_device.map(|d| d.0.to_vec());
    let mut pass_over: Option<i64> = None;
    loop {
        let mut chunk_rows = tx.prepare_cached(&format!(
            "SELECT c.seq, c.device_id, c.device_seq, c.payload FROM chunks c
             WHERE {SERVED_CHUNKS} ORDER BY c.seq LIMIT ?5"
        ))?;
        let mut rollup_rows = tx.prepare_cached(&format!(
            "SELECT seq, last_seq, device_id, first_dseq, last_dseq, payload FROM rollups
             WHERE {SERVED_ROLLUPS} ORDER BY seq LIMIT ?5"
        ))?;
        let mut chunks = chunk_rows.query(params![id, after, exclude, pass_over, fetch])?;
        let mut rollups = rollup_rows.query(params![id, after, exclude, pass_over, fetch])?;
        let mut next_chunk = read_chunk(chunks.next()?)?;
        let mut next_rollup = read_rollup(rollups.next()?)?;
        let walked = walk(
            || -> Result<Option<Entry>, StorageError> {
                let take_rollup = match (&next_chunk, &next_rollup) {
                    (Some((seq, _)), Some(r)) => r.relay_seq < *seq,
                    (None, Some(_)) => true,
                    (_, None) => false,
                };
                if take_rollup {
                    let rollup = next_rollup.take();
                    next_rollup = read_rollup(rollups.next().map_err(backend)?).map_err(backend)?;
                    return Ok(rollup.map(Entry::Rollup));
                }
                let Some((seq, chunk)) = next_chunk.take() else {
                    return Ok(None);
                };
                next_chunk = read_chunk(chunks.next().map_err(backend)?).map_err(backend)?;
                match chunk {
                    Some(chunk) => Ok(Some(Entry::Chunk(chunk))),
                    // Pruned chunks are served until deleted; deleted ones form a prefix.
                    None if seq <= covers => Err(StorageError::Pruned {
                        snapshot_covers: covers,
                    }),
                    None => Err(backend(corrupt("pruned chunk above the snapshot"))),
                }
            },
            request.limit,
            request.max_bytes,
        );
        let (chunks, rollups, next_after) = match walked {
            Err(error) => return Ok(Err(error)),
            Ok(Walked::PassOver(seq)) if pass_over.is_none() => {
                pass_over = Some(i64::try_from(seq).unwrap_or(i64::MAX));
                continue;
            }
            Ok(Walked::PassOver(_)) => return Err(corrupt("a rollup passed over twice")),
            Ok(Walked::Page {
                chunks,
                rollups,
                next_after,
            }) => (chunks, rollups, next_after),
        };
        let more = next_after.is_some();
        let next_after = next_after.unwrap_or(head);
        return Ok(Ok(Page {
            head,
            next_after,
            more,
            after_mark: mark_at(tx, id, request.after)?,
            next_mark: mark_at(tx, id, next_after)?,
            chunks,
            rollups,
        }));
    }
}

fn backend(error: rusqlite::Error) -> StorageError {
    StorageError::Backend(Box::new(error))
}

/// A chunk row of `pull_rollups`: its relay sequence and the chunk (`None` once its payload
/// is deleted).
type ChunkRow = (u64, Option<Chunk>);

fn read_chunk(row: Option<&rusqlite::Row<'_>>) -> rusqlite::Result<Option<ChunkRow>> {
    let Some(row) = row else { return Ok(None) };
    let seq = row.get::<_, i64>(0)? as u64;
    let Some(payload) = row.get::<_, Option<Vec<u8>>>(3)? else {
        return Ok(Some((seq, None)));
    };
    let device: Vec<u8> = row.get(1)?;
    Ok(Some((
        seq,
        Some(Chunk {
            relay_seq: seq,
            device_id: device_id(&device)?,
            device_seq: row.get::<_, i64>(2)? as u64,
            payload,
        }),
    )))
}

fn read_rollup(row: Option<&rusqlite::Row<'_>>) -> rusqlite::Result<Option<Rollup>> {
    let Some(row) = row else { return Ok(None) };
    let device: Vec<u8> = row.get(2)?;
    Ok(Some(Rollup {
        relay_seq: row.get::<_, i64>(0)? as u64,
        last_relay_seq: row.get::<_, i64>(1)? as u64,
        device_id: device_id(&device)?,
        first_seq: row.get::<_, i64>(3)? as u64,
        last_seq: row.get::<_, i64>(4)? as u64,
        payload: row.get(5)?,
    }))
}

fn device_id(bytes: &[u8]) -> rusqlite::Result<DeviceId> {
    <[u8; 16]>::try_from(bytes)
        .map(DeviceId)
        .map_err(|_| corrupt("device id length"))
}

/// What catching up from `after` costs (`Storage::sizes`), from aggregates only.
pub(crate) fn sizes(
    conn: &mut Connection,
    space: &SpaceId,
    after: u64,
    exclude: Option<DeviceId>,
) -> rusqlite::Result<Result<Sizes, StorageError>> {
    let tx = conn.transaction()?;
    let meta: Option<(i64, i64)> = tx
        .prepare_cached("SELECT id, next_seq FROM spaces WHERE space_id = ?1")?
        .query_row([&space.0[..]], |row| Ok((row.get(0)?, row.get(1)?)))
        .optional()?;
    let Some((id, next_seq)) = meta else {
        return Ok(Err(StorageError::SpaceNotFound));
    };
    let snapshot: Option<(i64, i64)> = tx
        .prepare_cached("SELECT covers, length(payload) FROM snapshots WHERE space = ?1")?
        .query_row([id], |row| Ok((row.get(0)?, row.get(1)?)))
        .optional()?;
    let after = i64::try_from(after).unwrap_or(i64::MAX);
    let exclude = exclude.map(|d| d.0.to_vec());
    let none: Option<i64> = None;
    let (chunk_bytes, chunk_count, deleted): (i64, i64, i64) = tx
        .prepare_cached(&format!(
            "SELECT COALESCE(SUM(length(c.payload)), 0), COUNT(*), COUNT(*) - COUNT(c.payload)
             FROM chunks c WHERE {SERVED_CHUNKS}"
        ))?
        .query_row(params![id, after, exclude, none], |row| {
            Ok((row.get(0)?, row.get(1)?, row.get(2)?))
        })?;
    let (rollup_bytes, rollup_count): (i64, i64) = tx
        .prepare_cached(&format!(
            "SELECT COALESCE(SUM(size), 0), COUNT(*) FROM rollups WHERE {SERVED_ROLLUPS}"
        ))?
        .query_row(params![id, after, exclude, none], |row| {
            Ok((row.get(0)?, row.get(1)?))
        })?;
    tx.commit()?;
    let n = |v: i64| u64::try_from(v).unwrap_or(0);
    Ok(Ok(Sizes {
        head: n(next_seq).saturating_sub(1),
        snapshot: snapshot.map(|(covers, bytes)| (n(covers), n(bytes))),
        tail_bytes: n(chunk_bytes).saturating_add(n(rollup_bytes)),
        tail_entries: n(chunk_count).saturating_add(n(rollup_count)),
        tail_held: deleted == 0,
    }))
}

/// The mark of the chunk at `seq` in space row `id`, if the relay holds one there (its payload
/// hash, or its payload for a row from before hashes were kept).
fn mark_at(tx: &rusqlite::Transaction<'_>, id: i64, seq: u64) -> rusqlite::Result<Option<Mark>> {
    let Ok(seq_db) = i64::try_from(seq) else {
        return Ok(None);
    };
    if seq == 0 {
        return Ok(None);
    }
    // (device id, device sequence, payload hash, payload when there is no hash)
    type Row = (Vec<u8>, i64, Option<Vec<u8>>, Option<Vec<u8>>);
    let row: Option<Row> = tx
        .prepare_cached(
            "SELECT device_id, device_seq, payload_hash,
                    CASE WHEN payload_hash IS NULL THEN payload END
             FROM chunks WHERE space = ?1 AND seq = ?2",
        )?
        .query_row(params![id, seq_db], |row| {
            Ok((row.get(0)?, row.get(1)?, row.get(2)?, row.get(3)?))
        })
        .optional()?;
    let Some((device, device_seq, hash, payload)) = row else {
        return Ok(None);
    };
    let device =
        <[u8; 16]>::try_from(device.as_slice()).map_err(|_| corrupt("device id length"))?;
    let hash = match (hash, payload) {
        (Some(hash), _) => {
            <[u8; 32]>::try_from(hash.as_slice()).map_err(|_| corrupt("payload hash length"))?
        }
        (None, Some(payload)) => payload_sha256(&payload),
        (None, None) => return Ok(None),
    };
    Ok(Some(chunk_mark(
        seq,
        &DeviceId(device),
        device_seq as u64,
        &hash,
    )))
}

/// Reads the snapshot of a space.
pub(crate) fn snapshot(
    conn: &mut Connection,
    space: &SpaceId,
) -> rusqlite::Result<Option<Snapshot>> {
    conn.prepare_cached(
        "SELECT s.covers, s.payload FROM snapshots s JOIN spaces p ON p.id = s.space
         WHERE p.space_id = ?1",
    )?
    .query_row([&space.0[..]], |row| {
        Ok(Snapshot {
            covers: row.get::<_, i64>(0)? as u64,
            payload: row.get(1)?,
        })
    })
    .optional()
}

/// Every space's token hash, loaded once at start.
/// The bytes of all spaces together.
pub(crate) fn total_bytes(conn: &mut Connection) -> rusqlite::Result<Result<u64, StorageError>> {
    let bytes: i64 = conn
        .prepare_cached("SELECT bytes_used FROM relay_usage WHERE id = 1")?
        .query_row([], |row| row.get(0))?;
    Ok(Ok(u64::try_from(bytes).unwrap_or(0)))
}

pub(crate) fn tombstone(
    conn: &mut Connection,
    space: &SpaceId,
) -> rusqlite::Result<Option<Tombstone>> {
    conn.prepare_cached("SELECT erased_at, reason FROM erased WHERE space_id = ?1")?
        .query_row([&space.0[..]], |row| {
            Ok(Tombstone {
                erased_at: u64::try_from(row.get::<_, i64>(0)?).unwrap_or(0),
                reason: EraseReason::from_db(row.get(1)?),
            })
        })
        .optional()
}

pub(crate) fn token_hashes(conn: &Connection) -> rusqlite::Result<Vec<(SpaceId, [u8; 32])>> {
    let mut statement = conn.prepare("SELECT space_id, token_hash FROM spaces")?;
    let rows = statement.query_map([], |row| {
        let space: Vec<u8> = row.get(0)?;
        let hash: Vec<u8> = row.get(1)?;
        Ok((space, hash))
    })?;
    rows.map(|row| {
        let (space, hash) = row?;
        let space =
            <[u8; 32]>::try_from(space.as_slice()).map_err(|_| corrupt("space id length"))?;
        let hash =
            <[u8; 32]>::try_from(hash.as_slice()).map_err(|_| corrupt("token hash length"))?;
        Ok((SpaceId(space), hash))
    })
    .collect()
}
