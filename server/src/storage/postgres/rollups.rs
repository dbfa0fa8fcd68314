//! Rollups in PostgreSQL: storing them, pages that serve them in place of their chunks, the
//! sizes of a tail, and deleting pruned ones after their grace.

use std::collections::VecDeque;

use deadpool_postgres::GenericClient;
use mend_protocol::{Chunk, DeviceId, Page, Rollup, RollupPush, Sizes, SpaceId};

use super::{ADD_TO_TOTAL, EARLIER, PgError, Shared, from_db, nonneg, row_mark, to_db};
use crate::storage::{
    Entry, PullRequest, ROW_BYTES, RollupStored, StorageError, Swept, Walked, check_rollup,
    check_rollup_chunks, walk,
};

/// Chunks a pull with rollups serves: above the cursor, not the excluded device's, and not
/// stood for by a held rollup above the cursor (other than the one at `$4`, passed over).
const SERVED_CHUNKS: &str =
    "c.space = $1 AND c.seq > $2 AND ($3::bytea IS NULL OR c.device_id <> $3)
     AND (c.rollup_seq IS NULL OR c.rollup_seq <= $2 OR c.rollup_seq = $4::bigint
          OR NOT EXISTS (SELECT 1 FROM rollups r WHERE r.space = c.space AND r.seq = c.rollup_seq
                         AND r.payload IS NOT NULL))";

/// Rollups a pull serves: held, above the cursor, not the excluded device's.
const SERVED_ROLLUPS: &str = "space = $1 AND seq > $2 AND ($3::bytea IS NULL OR device_id <> $3)
     AND payload IS NOT NULL AND seq IS DISTINCT FROM $4::bigint";

/// Reads in one snapshot of the database, like the single statement of a plain pull.
const READ_SNAPSHOT: &str = "SET TRANSACTION ISOLATION LEVEL REPEATABLE READ, READ ONLY";

fn device_id(bytes: &[u8]) -> Result<DeviceId, PgError> {
    <[u8; 16]>::try_from(bytes)
        .map(DeviceId)
        .map_err(|_| PgError::Corrupt("device id length"))
}

pub(super) async fn push(
    shared: &Shared,
    space: SpaceId,
    rollup: RollupPush,
    quota: u64,
) -> Result<Result<RollupStored, StorageError>, PgError> {
    let mut client = shared.client().await?;
    let tx = client.transaction().await?;
    // The space's row first, like every write to a space: its chunks cannot change meanwhile.
    let Some(row) = tx
        .query_opt(
            "SELECT id, bytes_used, covers FROM spaces WHERE space_id = $1 FOR UPDATE",
            &[&&space.0[..]],
        )
        .await?
    else {
        return Ok(Err(StorageError::SpaceNotFound));
    };
    let id: i64 = row.try_get(0)?;
    let bytes_used = nonneg(row.try_get(1)?);
    let covers = nonneg(row.try_get(2)?);
    let (first, last) = match check_rollup(&rollup) {
        Ok(range) => range,
        Err(error) => return Ok(Err(error)),
    };
    let device = &rollup.device_id.0[..];
    if let Some(row) = tx
        .query_opt(
            "SELECT seq, last_seq FROM rollups
             WHERE space = $1 AND device_id = $2 AND first_dseq = $3 AND last_dseq = $4",
            &[&id, &device, &first, &last],
        )
        .await?
    {
        return Ok(Ok(RollupStored {
            relay_seq: from_db(row.try_get(0)?),
            last_relay_seq: from_db(row.try_get(1)?),
            duplicate: true,
        }));
    }
    let row = tx
        .query_one(
            "SELECT COUNT(*), COUNT(payload), COUNT(rollup_seq), MIN(seq), MAX(seq) FROM chunks
             WHERE space = $1 AND device_id = $2 AND device_seq BETWEEN $3 AND $4",
            &[&id, &device, &first, &last],
        )
        .await?;
    let low: Option<i64> = row.try_get(3)?;
    let high: Option<i64> = row.try_get(4)?;
    let (relay_seq, last_relay_seq) = match check_rollup_chunks(
        &rollup,
        row.try_get(0)?,
        row.try_get(1)?,
        row.try_get(2)?,
        low.zip(high),
    ) {
        Ok(range) => range,
        Err(error) => return Ok(Err(error)),
    };
    let size = rollup.payload.len() as u64;
    if bytes_used.saturating_add(size) > quota {
        return Ok(Err(StorageError::QuotaExceeded {
            used: bytes_used,
            adding: size,
            quota,
        }));
    }
    // Its row is kept like a chunk's, and the relay counts it alike.
    let adding = size.saturating_add(ROW_BYTES);
    if let Err(full) = super::room_for(shared, &tx, adding).await? {
        return Ok(Err(full));
    }
    let (size, adding) = (to_db(size), to_db(adding));
    // A rollup whose first chunk a snapshot already covers is pruned as it is stored, so the
    // sweep deletes it with those chunks (a device that was offline rolls up late).
    let pruned_at: Option<i64> = (relay_seq <= covers).then(|| to_db(super::unix_now()));
    tx.execute(
        "INSERT INTO rollups
         (space, seq, last_seq, device_id, first_dseq, last_dseq, size, payload, pruned_at)
         VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9)",
        &[
            &id,
            &to_db(relay_seq),
            &to_db(last_relay_seq),
            &device,
            &first,
            &last,
            &size,
            &rollup.payload,
            &pruned_at,
        ],
    )
    .await?;
    tx.execute(
        "UPDATE chunks SET rollup_seq = $5
         WHERE space = $1 AND device_id = $2 AND device_seq BETWEEN $3 AND $4",
        &[&id, &device, &first, &last, &to_db(relay_seq)],
    )
    .await?;
    tx.execute(
        "UPDATE spaces SET bytes_used = bytes_used + $2, rows = rows + 1,
                           pruned_bytes = pruned_bytes + CASE WHEN $3 THEN $2 ELSE 0 END
         WHERE id = $1",
        &[&id, &size, &pruned_at.is_some()],
    )
    .await?;
    if adding != 0 {
        tx.execute(ADD_TO_TOTAL, &[&adding]).await?;
    }
    tx.commit().await?;
    Ok(Ok(RollupStored {
        relay_seq,
        last_relay_seq,
        duplicate: false,
    }))
}

/// The mark of the chunk at `seq`, if the relay holds one there.
async fn mark_at(
    client: &impl GenericClient,
    id: i64,
    seq: u64,
) -> Result<Option<mend_protocol::Mark>, PgError> {
    if seq == 0 {
        return Ok(None);
    }
    let row = client
        .query_opt(
            "SELECT device_id, device_seq, coalesce(payload_hash, sha256(payload)) FROM chunks
             WHERE space = $1 AND seq = $2",
            &[&id, &to_db(seq)],
        )
        .await?;
    match row {
        Some(row) => row_mark(&row, 0, seq),
        None => Ok(None),
    }
}

/// A page with rollups in place of the chunks they stand for (see `storage::walk`).
pub(super) async fn pull(
    shared: &Shared,
    space: SpaceId,
    request: PullRequest,
) -> Result<Result<Page, StorageError>, PgError> {
    let mut client = shared.client().await?;
    let tx = client.transaction().await?;
    tx.batch_execute(READ_SNAPSHOT).await?;
    let Some(row) = tx
        .query_opt(
            "SELECT id, next_seq, covers FROM spaces WHERE space_id = $1",
            &[&&space.0[..]],
        )
        .await?
    else {
        return Ok(Err(StorageError::SpaceNotFound));
    };
    let id: i64 = row.try_get(0)?;
    let head = nonneg(row.try_get(1)?).saturating_sub(1);
    let covers = nonneg(row.try_get(2)?);
    if request.after < covers && !request.include_pruned {
        return Ok(Err(StorageError::Pruned {
            snapshot_covers: covers,
        }));
    }
    let after = i64::try_from(request.after).unwrap_or(i64::MAX);
    let fetch = i64::try_from(request.limit.max(1).saturating_add(1)).unwrap_or(i64::MAX);
    let exclude = request.exclude_device.map(|d| d.0.to_vec());
    let max_bytes = i64::try_from(request.max_bytes).unwrap_or(i64::MAX);
    let mut pass_over: Option<i64> = None;
    let (chunks, rollups, next_after) = loop {
        let chunk_rows = tx
            .query(
                &format!(
                    "SELECT w.seq, w.device_id, w.device_seq, p.payload FROM (
                         SELECT c.seq, c.device_id, c.device_seq, {EARLIER} AS earlier
                         FROM chunks c WHERE {SERVED_CHUNKS} ORDER BY c.seq LIMIT $5
                     ) w JOIN chunks p ON p.space = $1 AND p.seq = w.seq
                     WHERE w.earlier <= $6 ORDER BY w.seq"
                ),
                &[&id, &after, &exclude, &pass_over, &fetch, &max_bytes],
            )
            .await?;
        let rollup_rows = tx
            .query(
                &format!(
                    "SELECT w.seq, w.last_seq, w.device_id, w.first_dseq, w.last_dseq, p.payload
                     FROM (
                         SELECT seq, last_seq, device_id, first_dseq, last_dseq,
                                {EARLIER} AS earlier
                         FROM rollups WHERE {SERVED_ROLLUPS} ORDER BY seq LIMIT $5
                     ) w JOIN rollups p ON p.space = $1 AND p.seq = w.seq
                     WHERE w.earlier <= $6 ORDER BY w.seq"
                ),
                &[&id, &after, &exclude, &pass_over, &fetch, &max_bytes],
            )
            .await?;
        let mut chunks = VecDeque::with_capacity(chunk_rows.len());
        for row in &chunk_rows {
            let seq = from_db(row.try_get(0)?);
            let payload: Option<Vec<u8>> = row.try_get(3)?;
            chunks.push_back((
                seq,
                match payload {
                    Some(payload) => Some(Chunk {
                        relay_seq: seq,
                        device_id: device_id(row.try_get(1)?)?,
                        device_seq: from_db(row.try_get(2)?),
                        payload,
                    }),
                    None => None,
                },
            ));
        }
        let mut rollups = VecDeque::with_capacity(rollup_rows.len());
        for row in &rollup_rows {
            rollups.push_back(Rollup {
                relay_seq: from_db(row.try_get(0)?),
                last_relay_seq: from_db(row.try_get(1)?),
                device_id: device_id(row.try_get(2)?)?,
                first_seq: from_db(row.try_get(3)?),
                last_seq: from_db(row.try_get(4)?),
                payload: row.try_get(5)?,
            });
        }
        let walked = walk(
            || -> Result<Option<Entry>, StorageError> {
                let take_rollup = match (chunks.front(), rollups.front()) {
                    (Some((seq, _)), Some(rollup)) => rollup.relay_seq < *seq,
                    (None, Some(_)) => true,
                    (_, None) => false,
                };
                if take_rollup {
                    return Ok(rollups.pop_front().map(Entry::Rollup));
                }
                match chunks.pop_front() {
                    None => Ok(None),
                    Some((_, Some(chunk))) => Ok(Some(Entry::Chunk(chunk))),
                    // Pruned chunks are served until deleted; deleted ones form a prefix.
                    Some((seq, None)) if seq <= covers => Err(StorageError::Pruned {
                        snapshot_covers: covers,
                    }),
                    Some((_, None)) => {
                        Err(PgError::Corrupt("pruned chunk above the snapshot").into())
                    }
                }
            },
            request.limit,
            request.max_bytes,
        );
        match walked {
            Err(error) => return Ok(Err(error)),
            Ok(Walked::PassOver(seq)) if pass_over.is_none() => {
                pass_over = Some(i64::try_from(seq).unwrap_or(i64::MAX));
            }
            Ok(Walked::PassOver(_)) => return Err(PgError::Corrupt("a rollup passed over twice")),
            Ok(Walked::Page {
                chunks,
                rollups,
                next_after,
            }) => break (chunks, rollups, next_after),
        }
    };
    let more = next_after.is_some();
    let next_after = next_after.unwrap_or(head);
    let after_mark = mark_at(&tx, id, request.after).await?;
    let next_mark = mark_at(&tx, id, next_after).await?;
    tx.commit().await?;
    Ok(Ok(Page {
        head,
        next_after,
        more,
        after_mark,
        next_mark,
        chunks,
        rollups,
    }))
}

/// What catching up from `after` costs (`Storage::sizes`), from aggregates only.
pub(super) async fn sizes(
    shared: &Shared,
    space: SpaceId,
    after: u64,
    exclude: Option<DeviceId>,
) -> Result<Result<Sizes, StorageError>, PgError> {
    let mut client = shared.client().await?;
    let tx = client.transaction().await?;
    tx.batch_execute(READ_SNAPSHOT).await?;
    let Some(row) = tx
        .query_opt(
            "SELECT s.id, s.next_seq, n.covers, octet_length(n.payload)::bigint
             FROM spaces s LEFT JOIN snapshots n ON n.space = s.id WHERE s.space_id = $1",
            &[&&space.0[..]],
        )
        .await?
    else {
        return Ok(Err(StorageError::SpaceNotFound));
    };
    let id: i64 = row.try_get(0)?;
    let head = nonneg(row.try_get(1)?).saturating_sub(1);
    let covers: Option<i64> = row.try_get(2)?;
    let bytes: Option<i64> = row.try_get(3)?;
    let after = i64::try_from(after).unwrap_or(i64::MAX);
    let exclude = exclude.map(|d| d.0.to_vec());
    let none: Option<i64> = None;
    let chunks = tx
        .query_one(
            &format!(
                "SELECT COALESCE(SUM(octet_length(c.payload)), 0)::bigint, COUNT(*),
                        COUNT(*) - COUNT(c.payload)
                 FROM chunks c WHERE {SERVED_CHUNKS}"
            ),
            &[&id, &after, &exclude, &none],
        )
        .await?;
    let rollups = tx
        .query_one(
            &format!(
                "SELECT COALESCE(SUM(size), 0)::bigint, COUNT(*) FROM rollups
                 WHERE {SERVED_ROLLUPS}"
            ),
            &[&id, &after, &exclude, &none],
        )
        .await?;
    let deleted: i64 = chunks.try_get(2)?;
    tx.commit().await?;
    Ok(Ok(Sizes {
        head,
        snapshot: covers.map(|covers| (nonneg(covers), nonneg(bytes.unwrap_or(0)))),
        tail_bytes: nonneg(chunks.try_get(0)?).saturating_add(nonneg(rollups.try_get(0)?)),
        tail_entries: nonneg(chunks.try_get(1)?).saturating_add(nonneg(rollups.try_get(1)?)),
        tail_held: deleted == 0,
    }))
}

/// Payload bytes of a space's rollups up to `new_covers`: held from earlier prunes (at or
/// below `old_covers`), pruned now, and due for deletion now (pruned before `expired`).
pub(super) async fn snapshot_sums(
    tx: &impl GenericClient,
    id: i64,
    old_covers: u64,
    new_covers: u64,
    now: u64,
    expired: u64,
) -> Result<(u64, u64), PgError> {
    // What it prunes, and what is due for deletion: the held rollups' index finds the latter.
    let row = tx
        .query_one(
            "SELECT (SELECT COALESCE(SUM(size), 0)::bigint FROM rollups
                     WHERE space = $1 AND seq > $2 AND seq <= $3 AND payload IS NOT NULL),
                    (SELECT COALESCE(SUM(size), 0)::bigint FROM rollups
                     WHERE space = $1 AND seq > $2 AND seq <= $3 AND payload IS NOT NULL
                       AND COALESCE(pruned_at, $4) <= $5)
                  + (SELECT COALESCE(SUM(size), 0)::bigint FROM rollups
                     WHERE space = $1 AND pruned_at <= $5 AND payload IS NOT NULL)",
            &[
                &id,
                &to_db(old_covers),
                &to_db(new_covers),
                &to_db(now),
                &to_db(expired),
            ],
        )
        .await?;
    Ok((nonneg(row.try_get(0)?), nonneg(row.try_get(1)?)))
}

/// Prunes the space's rollups a snapshot covers and deletes those whose grace is over.
pub(super) async fn prune(
    tx: &impl GenericClient,
    id: i64,
    old_covers: u64,
    new_covers: u64,
    now: u64,
    expired: u64,
) -> Result<(), PgError> {
    tx.execute(
        "UPDATE rollups SET pruned_at = $4 WHERE space = $1 AND seq > $2 AND seq <= $3",
        &[&id, &to_db(old_covers), &to_db(new_covers), &to_db(now)],
    )
    .await?;
    tx.execute(
        "UPDATE rollups SET payload = NULL
         WHERE space = $1 AND pruned_at <= $2 AND payload IS NOT NULL",
        &[&id, &to_db(expired)],
    )
    .await?;
    Ok(())
}

/// Deletes expired pruned rollups with what a sweep's chunks left of its budget, and gives
/// their bytes back to their spaces and the relay.
pub(super) async fn sweep(
    client: &mut deadpool_postgres::Client,
    expired: i64,
    limit: i64,
    max_bytes: u64,
    mut swept: Swept,
) -> Result<Swept, PgError> {
    let left = limit.saturating_sub(i64::try_from(swept.chunks).unwrap_or(i64::MAX));
    if left <= 0 || (swept.chunks > 0 && swept.bytes >= max_bytes) {
        return Ok(swept);
    }
    let tx = client.transaction().await?;
    // Spaces another write holds are passed over, and the rollups due after them looked at
    // instead, as in the chunks' sweep.
    let mut passed: Vec<i64> = Vec::new();
    let (mut spaces, mut seqs) = (Vec::new(), Vec::new());
    for _ in 0..super::SWEEP_TRIES {
        let picked = tx
            .query(
                "SELECT space, seq, size FROM rollups WHERE pruned_at <= $1 AND payload IS NOT NULL
                   AND space NOT IN (SELECT space FROM erasing) AND space <> ALL ($3)
                 ORDER BY pruned_at, space, seq LIMIT $2",
                &[&expired, &left, &passed],
            )
            .await?;
        let (mut due, mut due_seqs) = (Vec::new(), Vec::new());
        let mut planned = swept;
        for row in &picked {
            if planned.chunks > 0 && planned.bytes >= max_bytes {
                break;
            }
            due.push(row.try_get::<_, i64>(0)?);
            due_seqs.push(row.try_get::<_, i64>(1)?);
            planned.chunks = planned.chunks.saturating_add(1);
            planned.bytes = planned.bytes.saturating_add(nonneg(row.try_get(2)?));
        }
        if due.is_empty() {
            break;
        }
        let mut wanted = due.clone();
        wanted.sort_unstable();
        wanted.dedup();
        let locked: std::collections::HashSet<i64> =
            super::lock_free(&tx, &wanted).await?.into_iter().collect();
        (spaces, seqs) = due
            .into_iter()
            .zip(due_seqs)
            .filter(|(space, _)| locked.contains(space))
            .unzip();
        if !spaces.is_empty() {
            break;
        }
        passed.extend(wanted);
    }
    if spaces.is_empty() {
        return Ok(swept);
    }
    // Checked again under the locks: another instance may have swept them.
    let freed = tx
        .query(
            "WITH cleared AS (
                 UPDATE rollups r SET payload = NULL
                 FROM unnest($1::bigint[], $2::bigint[]) AS u(space, seq)
                 WHERE r.space = u.space AND r.seq = u.seq AND r.payload IS NOT NULL
                 RETURNING r.space, r.size
             )
             SELECT space, COUNT(*)::bigint, SUM(size)::bigint FROM cleared GROUP BY space",
            &[&spaces, &seqs],
        )
        .await?;
    let (mut ids, mut bytes) = (Vec::new(), Vec::new());
    for row in &freed {
        let freed_bytes: i64 = row.try_get(2)?;
        ids.push(row.try_get::<_, i64>(0)?);
        bytes.push(freed_bytes);
        swept.chunks = swept.chunks.saturating_add(nonneg(row.try_get(1)?));
        swept.bytes = swept.bytes.saturating_add(nonneg(freed_bytes));
    }
    if !ids.is_empty() {
        let lost: i64 = tx
            .query_one(
                "WITH old AS (
                     SELECT s.id, s.bytes_used AS before, u.freed FROM spaces s
                     JOIN unnest($1::bigint[], $2::bigint[]) AS u(id, freed) ON s.id = u.id
                 ), changed AS (
                     UPDATE spaces s SET bytes_used = GREATEST(old.before - old.freed, 0),
                                         pruned_bytes = GREATEST(s.pruned_bytes - old.freed, 0)
                     FROM old WHERE s.id = old.id
                     RETURNING old.before - s.bytes_used AS lost
                 )
                 SELECT COALESCE(SUM(lost), 0)::bigint FROM changed",
                &[&ids, &bytes],
            )
            .await?
            .try_get(0)?;
        if lost != 0 {
            tx.execute(ADD_TO_TOTAL, &[&0i64.saturating_sub(lost)])
                .await?;
        }
    }
    tx.commit().await?;
    Ok(swept)
}
