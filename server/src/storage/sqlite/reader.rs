//! Reads: a small pool of read-only connections, used from blocking tasks.
//!
//! In WAL mode readers never block the writer nor each other, so pulls and snapshot fetches run
//! beside group commits. Each read runs in its own transaction so a page's `head` and its chunks
//! come from the same instant.

use std::{
    path::PathBuf,
    sync::{Mutex, PoisonError},
};

use mend_protocol::{Chunk, DeviceId, Mark, Page, Snapshot, SpaceId, chunk_mark, payload_sha256};
use rusqlite::{Connection, OptionalExtension, params};

use super::schema;
use crate::storage::{PullRequest, StorageError};

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
