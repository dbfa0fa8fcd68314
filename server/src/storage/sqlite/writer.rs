//! The single writer thread and its group commit.
//!
//! Every write goes through one connection on one thread. The thread takes the first queued
//! command, then everything else already queued (up to a batch limit), applies them all in one
//! transaction, commits once (one fsync under `synchronous=FULL`), and only then answers each
//! caller and announces the new chunks. Many concurrent pushes thus share one fsync, which is
//! how the relay reaches tens of thousands of durable pushes per second without weakening
//! durability.
//!
//! Each command checks everything before it writes, so a refused command (quota, stale
//! snapshot) leaves the transaction untouched for the others. A database error fails the whole
//! batch: nothing of it was committed, and every caller hears so.

use std::{
    collections::{HashMap, HashSet},
    sync::{Arc, atomic::Ordering::Relaxed},
    time::{Duration, SystemTime, UNIX_EPOCH},
};

use mend_protocol::{Chunk, DeviceId, Push, RollupPush, Snapshot, SpaceId};
use rusqlite::{Connection, OptionalExtension, Transaction, TransactionBehavior, params};
use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;
use tokio::sync::{mpsc, oneshot};

use super::{
    Shared,
    pairing::{self, PairingDone, PairingOp},
    seen,
};
use crate::{
    config::GroupCommit,
    live::{LiveEvent, Publisher},
    storage::{
        Audit, Created, EraseReason, Pushed, ROW_BYTES, Recount, RollupStored, SPACE_BYTES,
        StorageError, Swept, TOMBSTONE_BYTES, TokenHash, check_rollup, check_rollup_chunks,
        unix_now,
    },
};

type Reply<T> = oneshot::Sender<Result<T, StorageError>>;

/// What the writer thread is asked to do.
pub(crate) enum Command {
    /// Apply a write (batched with others).
    Write(Write),
    /// Finish the current batch, answer, and exit.
    Stop(oneshot::Sender<()>),
}

/// A write for the writer thread.
pub(crate) enum Write {
    Create {
        space: SpaceId,
        token_hash: TokenHash,
        reply: Reply<Created>,
    },
    Push {
        space: SpaceId,
        push: Push,
        quota: u64,
        reply: Reply<Pushed>,
    },
    Rollup {
        space: SpaceId,
        rollup: RollupPush,
        quota: u64,
        reply: Reply<RollupStored>,
    },
    PutSnapshot {
        space: SpaceId,
        snapshot: Snapshot,
        quota: u64,
        grace: Duration,
        reply: Reply<()>,
    },
    /// Answers the erased space's internal id (its rows to [`Write::Scrub`]), `None` when
    /// there was no such space.
    Erase {
        space: SpaceId,
        reason: EraseReason,
        reply: Reply<Option<i64>>,
    },
    Sweep {
        grace: Duration,
        max_chunks: usize,
        max_bytes: u64,
        reply: Reply<Swept>,
    },
    /// Deletes a bounded batch of what erased space `space` left; answers whether more is
    /// left.
    Scrub {
        space: i64,
        reply: Reply<bool>,
    },
    Pairing {
        op: PairingOp,
        reply: Reply<PairingDone>,
    },
    Seen {
        space: SpaceId,
        device: DeviceId,
        at: u64,
        reply: Reply<()>,
    },
    Successor {
        space: SpaceId,
        id: [u8; 32],
        reply: Reply<[u8; 32]>,
    },
    Audit {
        repair: bool,
        reply: Reply<Audit>,
    },
}

impl Write {
    fn payload_len(&self) -> usize {
        match self {
            Write::Push { push, .. } => push.payload.len(),
            Write::Rollup { rollup, .. } => rollup.payload.len(),
            Write::PutSnapshot { snapshot, .. } => snapshot.payload.len(),
            Write::Pairing { op, .. } => op.payload_len(),
            // As many as it may delete: a batch holds one scrub, not one per erase under way.
            Write::Scrub { .. } => SCRUB_BYTES,
            Write::Create { .. }
            | Write::Erase { .. }
            | Write::Sweep { .. }
            | Write::Seen { .. }
            | Write::Successor { .. }
            | Write::Audit { .. } => 0,
        }
    }

    /// The answer slot of a write that was never applied (its batch failed first).
    fn unanswered(self) -> Answer {
        match self {
            Write::Create { reply, .. } => Answer::Create(reply, Err(StorageError::Closed)),
            Write::Push { reply, .. } => Answer::Push(reply, Err(StorageError::Closed)),
            Write::Rollup { reply, .. } => Answer::Rollup(reply, Err(StorageError::Closed)),
            Write::PutSnapshot { reply, .. } => Answer::Snapshot(reply, Err(StorageError::Closed)),
            Write::Erase { reply, .. } => Answer::Erase(reply, Err(StorageError::Closed)),
            Write::Sweep { reply, .. } => Answer::Sweep(reply, Err(StorageError::Closed)),
            Write::Scrub { reply, .. } => Answer::Scrub(reply, Err(StorageError::Closed)),
            Write::Pairing { reply, .. } => Answer::Pairing(reply, Err(StorageError::Closed)),
            Write::Seen { reply, .. } => Answer::Seen(reply, Err(StorageError::Closed)),
            Write::Successor { reply, .. } => Answer::Successor(reply, Err(StorageError::Closed)),
            Write::Audit { reply, .. } => Answer::Audit(reply, Err(StorageError::Closed)),
        }
    }
}

/// A command's answer, held until the batch commits.
enum Answer {
    Create(Reply<Created>, Result<Created, StorageError>),
    Push(Reply<Pushed>, Result<Pushed, StorageError>),
    Rollup(Reply<RollupStored>, Result<RollupStored, StorageError>),
    Snapshot(Reply<()>, Result<(), StorageError>),
    Erase(Reply<Option<i64>>, Result<Option<i64>, StorageError>),
    Sweep(Reply<Swept>, Result<Swept, StorageError>),
    Scrub(Reply<bool>, Result<bool, StorageError>),
    Pairing(Reply<PairingDone>, Result<PairingDone, StorageError>),
    Seen(Reply<()>, Result<(), StorageError>),
    Successor(Reply<[u8; 32]>, Result<[u8; 32], StorageError>),
    Audit(Reply<Audit>, Result<Audit, StorageError>),
}

impl Answer {
    fn send(self) {
        // A dropped receiver means the caller went away; the write stands regardless.
        match self {
            Answer::Create(tx, result) => drop(tx.send(result)),
            Answer::Push(tx, result) => drop(tx.send(result)),
            Answer::Rollup(tx, result) => drop(tx.send(result)),
            Answer::Snapshot(tx, result) => drop(tx.send(result)),
            Answer::Erase(tx, result) => drop(tx.send(result)),
            Answer::Sweep(tx, result) => drop(tx.send(result)),
            Answer::Scrub(tx, result) => drop(tx.send(result)),
            Answer::Pairing(tx, result) => drop(tx.send(result)),
            Answer::Seen(tx, result) => drop(tx.send(result)),
            Answer::Successor(tx, result) => drop(tx.send(result)),
            Answer::Audit(tx, result) => drop(tx.send(result)),
        }
    }

    fn fail(self, reason: &str) {
        let error = || StorageError::Backend(reason.to_owned().into());
        match self {
            Answer::Create(tx, _) => drop(tx.send(Err(error()))),
            Answer::Push(tx, _) => drop(tx.send(Err(error()))),
            Answer::Rollup(tx, _) => drop(tx.send(Err(error()))),
            Answer::Snapshot(tx, _) => drop(tx.send(Err(error()))),
            Answer::Erase(tx, _) => drop(tx.send(Err(error()))),
            Answer::Sweep(tx, _) => drop(tx.send(Err(error()))),
            Answer::Scrub(tx, _) => drop(tx.send(Err(error()))),
            Answer::Pairing(tx, _) => drop(tx.send(Err(error()))),
            Answer::Seen(tx, _) => drop(tx.send(Err(error()))),
            Answer::Successor(tx, _) => drop(tx.send(Err(error()))),
            Answer::Audit(tx, _) => drop(tx.send(Err(error()))),
        }
    }
}

/// What becomes visible outside the database once the batch commits.
enum Effect {
    TokenAdded(SpaceId, TokenHash),
    Erased(SpaceId),
    /// The last of an erased space's rows deleted.
    Scrubbed,
    Chunk(SpaceId, Arc<Chunk>),
}

/// The counters of a space, cached between batches (the writer is the only one changing them).
#[derive(Debug, Clone, Copy)]
struct SpaceMeta {
    id: i64,
    next_seq: u64,
    /// Payload bytes held: what the space's quota bounds.
    bytes_used: u64,
    covers: u64,
    /// Chunk and rollup rows kept, each [`ROW_BYTES`] of the relay-wide total.
    rows: u64,
    /// Payload bytes of pruned rows not yet deleted (part of `bytes_used`): kept as a counter
    /// so a snapshot need not sum them.
    pruned: u64,
}

impl SpaceMeta {
    /// What the space counts in the relay-wide total: itself, its payloads and its rows.
    fn counted(&self) -> u64 {
        self.bytes_used
            .saturating_add(self.rows.saturating_mul(ROW_BYTES))
            .saturating_add(SPACE_BYTES)
    }
}

/// The bytes of all spaces together, cached between batches like [`SpaceMeta`].
#[derive(Debug, Clone, Copy)]
struct Usage {
    /// Bytes all spaces hold.
    bytes: u64,
    /// The relay-wide limit for this batch.
    limit: u64,
    /// Changed in this batch: written back before the commit.
    dirty: bool,
}

impl Usage {
    /// `Err(RelayFull)` if growing from `before` to `after` bytes (of one space) would take
    /// the relay over its limit. Shrinking or staying level is always allowed.
    fn check(&self, before: u64, after: u64) -> Result<(), StorageError> {
        let adding = after.saturating_sub(before);
        if adding > 0 && self.bytes.saturating_add(adding) > self.limit {
            return Err(StorageError::RelayFull {
                used: self.bytes,
                adding,
                limit: self.limit,
            });
        }
        Ok(())
    }

    /// Records one space going from `before` to `after` bytes.
    fn change(&mut self, before: u64, after: u64) {
        self.bytes = self.bytes.saturating_sub(before).saturating_add(after);
        self.dirty = true;
    }
}

/// A group commit slower than this is logged at debug level.
const SLOW_COMMIT: std::time::Duration = std::time::Duration::from_millis(10);

/// Spaces cached at most; the cache is cleared beyond this.
const MAX_CACHED_SPACES: usize = 100_000;

pub(crate) struct Writer {
    conn: Connection,
    commands: mpsc::UnboundedReceiver<Command>,
    shared: Arc<Shared>,
    publisher: Arc<dyn Publisher>,
    limits: GroupCommit,
    cache: HashMap<SpaceId, SpaceMeta>,
    /// The relay-wide byte count; `None` until loaded (and after a failed batch).
    total: Option<u64>,
    /// The data directory's lock, released when the writer is dropped (see `LOCK_FILE`).
    _lock: Option<std::fs::File>,
}

impl Writer {
    pub(crate) fn new(
        conn: Connection,
        commands: mpsc::UnboundedReceiver<Command>,
        shared: Arc<Shared>,
        publisher: Arc<dyn Publisher>,
        limits: GroupCommit,
        lock: Option<std::fs::File>,
    ) -> Writer {
        Writer {
            conn,
            commands,
            shared,
            publisher,
            limits,
            cache: HashMap::new(),
            total: None,
            _lock: lock,
        }
    }

    /// Runs until told to stop or until every sender is gone.
    pub(crate) fn run(mut self) {
        while let Some(first) = self.commands.blocking_recv() {
            let mut batch = Vec::new();
            let mut bytes = 0;
            let mut stop = None;
            let mut next = Some(first);
            while let Some(command) = next.take() {
                match command {
                    Command::Write(write) => {
                        bytes += write.payload_len();
                        batch.push(write);
                    }
                    Command::Stop(reply) => {
                        stop = Some(reply);
                        break;
                    }
                }
                if batch.len() < self.limits.max_batch && bytes < self.limits.max_batch_bytes {
                    next = self.commands.try_recv().ok();
                }
            }
            if !batch.is_empty() {
                self.commit_batch(batch);
            }
            if let Some(reply) = stop {
                // Commands queued behind the stop are dropped: their callers see `Closed`.
                self.commands.close();
                let _ = reply.send(());
                return;
            }
        }
    }

    fn commit_batch(&mut self, batch: Vec<Write>) {
        let started = std::time::Instant::now();
        let size = batch.len();
        let mut answers = Vec::with_capacity(size);
        let mut effects = Vec::with_capacity(size);
        if self.cache.len() > MAX_CACHED_SPACES {
            self.cache.clear();
        }
        let mut total = None;
        let outcome = (|| -> rusqlite::Result<()> {
            let tx = self
                .conn
                .transaction_with_behavior(TransactionBehavior::Immediate)?;
            let mut dirty = HashSet::new();
            let bytes = match self.total {
                Some(bytes) => bytes,
                None => tx
                    .prepare_cached("SELECT bytes_used FROM relay_usage WHERE id = 1")?
                    .query_row([], |row| row.get::<_, i64>(0))
                    .map(|bytes| u64::try_from(bytes).unwrap_or(0))?,
            };
            let mut usage = Usage {
                bytes,
                limit: self.shared.total_quota.load(Relaxed),
                dirty: false,
            };
            let mut batch = batch.into_iter();
            for write in batch.by_ref() {
                let mut state = State {
                    cache: &mut self.cache,
                    dirty: &mut dirty,
                    usage: &mut usage,
                    effects: &mut effects,
                };
                let answer = apply(&tx, &mut state, write);
                match answer {
                    Ok(answer) => answers.push(answer),
                    Err((answer, error)) => {
                        answers.push(answer);
                        // Not yet applied commands still need an answer.
                        answers.extend(batch.map(Write::unanswered));
                        return Err(error);
                    }
                }
            }
            if usage.dirty {
                tx.prepare_cached("UPDATE relay_usage SET bytes_used = ?1 WHERE id = 1")?
                    .execute([i64::try_from(usage.bytes).unwrap_or(i64::MAX)])?;
            }
            total = Some(usage.bytes);
            for space in dirty {
                if let Some(meta) = self.cache.get(&space) {
                    store_meta(&tx, meta)?;
                }
            }
            tx.commit()
        })();
        match outcome {
            Ok(()) => {
                self.total = total;
                // Once an erased space's last rows are gone (its own row and snapshot went
                // with the erase, before them).
                let erased = effects.iter().any(|e| matches!(e, Effect::Scrubbed));
                self.apply_effects(effects);
                if erased {
                    // The erased pages are zeroed in the database; the WAL still holds their
                    // earlier versions until it is checkpointed and cut back to nothing.
                    // Before the answer, so an erase that returned left nothing behind.
                    // A reader (or the background checkpointer) in the way answers busy, the
                    // first column, not an error: a few short tries, then the next complete
                    // checkpoint cuts the WAL instead.
                    for attempt in 0..10 {
                        match self
                            .conn
                            .query_row("PRAGMA wal_checkpoint(TRUNCATE)", [], |r| {
                                r.get::<_, i64>(0)
                            }) {
                            Ok(0) => break,
                            Ok(_) if attempt < 9 => {
                                std::thread::sleep(std::time::Duration::from_millis(10));
                            }
                            Ok(_) => {
                                tracing::info!("the WAL is truncated at a later checkpoint");
                            }
                            Err(error) => {
                                tracing::warn!(%error, "the WAL was not truncated after an erase");
                                break;
                            }
                        }
                    }
                }
                answers.into_iter().for_each(Answer::send);
                let elapsed = started.elapsed();
                if elapsed > SLOW_COMMIT {
                    tracing::debug!(
                        size,
                        micros = elapsed.as_micros() as u64,
                        "slow group commit"
                    );
                } else {
                    tracing::trace!(size, micros = elapsed.as_micros() as u64, "group commit");
                }
            }
            Err(error) => {
                self.cache.clear();
                self.total = None;
                tracing::error!(%error, size, "write batch failed; nothing of it was committed");
                let reason = format!("write batch failed: {error}");
                answers.into_iter().for_each(|answer| answer.fail(&reason));
            }
        }
    }

    fn apply_effects(&self, effects: Vec<Effect>) {
        for effect in effects {
            match effect {
                Effect::TokenAdded(space, hash) => {
                    self.shared.tokens_mut().insert(space, hash);
                }
                Effect::Erased(space) => {
                    self.shared.tokens_mut().remove(&space);
                    self.publisher.publish(&space, LiveEvent::Erased);
                }
                Effect::Chunk(space, chunk) => {
                    self.publisher.publish(&space, LiveEvent::Chunk(chunk));
                }
                Effect::Scrubbed => {}
            }
        }
    }
}

type Applied = Result<Answer, (Answer, rusqlite::Error)>;

/// What a batch's writes update besides the database.
struct State<'a> {
    cache: &'a mut HashMap<SpaceId, SpaceMeta>,
    dirty: &'a mut HashSet<SpaceId>,
    usage: &'a mut Usage,
    effects: &'a mut Vec<Effect>,
}

/// Applies one write inside the batch's transaction.
fn apply(tx: &Transaction<'_>, state: &mut State<'_>, write: Write) -> Applied {
    match write {
        Write::Create {
            space,
            token_hash,
            reply,
        } => match create(tx, state, space, token_hash) {
            Ok(result) => Ok(Answer::Create(reply, result)),
            Err(e) => Err((Answer::Create(reply, Err(StorageError::Closed)), e)),
        },
        Write::Push {
            space,
            push,
            quota,
            reply,
        } => match push_chunk(tx, state, space, push, quota) {
            Ok(result) => Ok(Answer::Push(reply, result)),
            Err(e) => Err((Answer::Push(reply, Err(StorageError::Closed)), e)),
        },
        Write::Rollup {
            space,
            rollup,
            quota,
            reply,
        } => match push_rollup(tx, state, space, rollup, quota) {
            Ok(result) => Ok(Answer::Rollup(reply, result)),
            Err(e) => Err((Answer::Rollup(reply, Err(StorageError::Closed)), e)),
        },
        Write::PutSnapshot {
            space,
            snapshot,
            quota,
            grace,
            reply,
        } => match put_snapshot(tx, state, space, snapshot, quota, grace) {
            Ok(result) => Ok(Answer::Snapshot(reply, result)),
            Err(e) => Err((Answer::Snapshot(reply, Err(StorageError::Closed)), e)),
        },
        Write::Pairing { op, reply } => match pairing::apply(tx, op) {
            Ok(result) => Ok(Answer::Pairing(reply, result)),
            Err(e) => Err((Answer::Pairing(reply, Err(StorageError::Closed)), e)),
        },
        Write::Seen {
            space,
            device,
            at,
            reply,
        } => {
            let touched = meta(tx, state.cache, &space).and_then(|meta| match meta {
                Some(meta) => seen::touch(tx, meta.id, device, at),
                None => Ok(()),
            });
            match touched {
                Ok(()) => Ok(Answer::Seen(reply, Ok(()))),
                Err(e) => Err((Answer::Seen(reply, Err(StorageError::Closed)), e)),
            }
        }
        Write::Successor { space, id, reply } => {
            // One statement: the first offer is the one kept.
            let kept = tx
                .prepare_cached(
                    "UPDATE spaces SET successor = COALESCE(successor, ?2) WHERE space_id = ?1 \
                     RETURNING successor",
                )
                .and_then(|mut q| {
                    q.query_row(params![&space.0[..], &id[..]], |r| r.get::<_, Vec<u8>>(0))
                        .optional()
                });
            match kept {
                Ok(kept) => Ok(Answer::Successor(
                    reply,
                    kept.and_then(|k| <[u8; 32]>::try_from(k.as_slice()).ok())
                        .ok_or(StorageError::SpaceNotFound),
                )),
                Err(e) => Err((Answer::Successor(reply, Err(StorageError::Closed)), e)),
            }
        }
        Write::Erase {
            space,
            reason,
            reply,
        } => match erase(tx, state, space, reason) {
            Ok(result) => Ok(Answer::Erase(reply, result)),
            Err(e) => Err((Answer::Erase(reply, Err(StorageError::Closed)), e)),
        },
        Write::Sweep {
            grace,
            max_chunks,
            max_bytes,
            reply,
        } => match sweep(tx, state, grace, max_chunks, max_bytes) {
            Ok(result) => Ok(Answer::Sweep(reply, Ok(result))),
            Err(e) => Err((Answer::Sweep(reply, Err(StorageError::Closed)), e)),
        },
        Write::Audit { repair, reply } => match audit(tx, state, repair) {
            Ok(result) => Ok(Answer::Audit(reply, Ok(result))),
            Err(e) => Err((Answer::Audit(reply, Err(StorageError::Closed)), e)),
        },
        Write::Scrub { space, reply } => {
            match scrub(tx, state, Some(space), SCRUB_ROWS, SCRUB_BYTES) {
                Ok((_, left)) => Ok(Answer::Scrub(reply, Ok(left))),
                Err(e) => Err((Answer::Scrub(reply, Err(StorageError::Closed)), e)),
            }
        }
    }
}

/// Writes a space's cached counters back.
fn store_meta(tx: &Transaction<'_>, meta: &SpaceMeta) -> rusqlite::Result<()> {
    tx.prepare_cached(
        "UPDATE spaces SET next_seq = ?1, bytes_used = ?2, covers = ?3, rows = ?4,
                          pruned_bytes = ?5
         WHERE id = ?6",
    )?
    .execute(params![
        meta.next_seq as i64,
        meta.bytes_used as i64,
        meta.covers as i64,
        meta.rows as i64,
        meta.pruned as i64,
        meta.id
    ])?;
    Ok(())
}

/// Each space's counters as stored (payload bytes held, kept rows, pruned bytes not yet
/// swept), then the same recounted from its rows. Erased spaces' leftover rows are not theirs
/// any more: the erase gave their bytes back.
const RECOUNT: &str = "SELECT s.id, s.bytes_used, s.rows, s.pruned_bytes,
        COALESCE((SELECT SUM(length(c.payload)) FROM chunks c
                   WHERE c.space = s.id AND c.payload IS NOT NULL), 0)
      + COALESCE((SELECT SUM(r.size) FROM rollups r
                   WHERE r.space = s.id AND r.payload IS NOT NULL), 0)
      + COALESCE((SELECT length(p.payload) FROM snapshots p WHERE p.space = s.id), 0),
        (SELECT COUNT(*) FROM chunks c WHERE c.space = s.id)
      + (SELECT COUNT(*) FROM rollups r WHERE r.space = s.id),
        COALESCE((SELECT SUM(length(c.payload)) FROM chunks c
                   WHERE c.space = s.id AND c.pruned_at IS NOT NULL AND c.payload IS NOT NULL), 0)
      + COALESCE((SELECT SUM(r.size) FROM rollups r
                   WHERE r.space = s.id AND r.pruned_at IS NOT NULL AND r.payload IS NOT NULL), 0)
   FROM spaces s";

/// Recounts every space's counters and the relay-wide total from the rows (see
/// [`Storage::audit`](crate::storage::Storage::audit)); with `repair`, sets them to the
/// recount. Runs in the writer, so nothing changes under it.
fn audit(tx: &Transaction<'_>, state: &mut State<'_>, repair: bool) -> rusqlite::Result<Audit> {
    // What this batch changed so far is only in the cache: written first, so the recount
    // compares against the counters the writer holds.
    for space in state.dirty.iter() {
        if let Some(meta) = state.cache.get(space) {
            store_meta(tx, meta)?;
        }
    }
    let mut recount = Recount::new(state.usage.bytes);
    {
        let mut query = tx.prepare(RECOUNT)?;
        let mut rows = query.query([])?;
        while let Some(row) = rows.next()? {
            recount.space(
                row.get(0)?,
                [row.get(1)?, row.get(2)?, row.get(3)?],
                [row.get(4)?, row.get(5)?, row.get(6)?],
            );
        }
    }
    let tombstones = tx.query_row("SELECT COUNT(*) FROM erased", [], |row| row.get(0))?;
    let (mut found, off) = recount.finish(tombstones);
    if repair && !found.clean() {
        for (id, [bytes, kept, pruned]) in off {
            tx.execute(
                "UPDATE spaces SET bytes_used = ?1, rows = ?2, pruned_bytes = ?3 WHERE id = ?4",
                params![bytes, kept, pruned, id],
            )?;
        }
        // The cache held the counters just replaced (the dirty ones were written above).
        state.cache.clear();
        state.usage.bytes = found.actual_total;
        state.usage.dirty = true;
        found.repaired = true;
    }
    Ok(found)
}

/// The cached counters of `space`, loading them on a miss. `None` if the space does not exist.
fn meta<'c>(
    tx: &Transaction<'_>,
    cache: &'c mut HashMap<SpaceId, SpaceMeta>,
    space: &SpaceId,
) -> rusqlite::Result<Option<&'c mut SpaceMeta>> {
    if !cache.contains_key(space) {
        let loaded = tx
            .prepare_cached(
                "SELECT id, next_seq, bytes_used, covers, rows, pruned_bytes FROM spaces
                 WHERE space_id = ?1",
            )?
            .query_row([&space.0[..]], |row| {
                Ok(SpaceMeta {
                    id: row.get(0)?,
                    next_seq: row.get::<_, i64>(1)? as u64,
                    bytes_used: row.get::<_, i64>(2)? as u64,
                    covers: row.get::<_, i64>(3)? as u64,
                    rows: row.get::<_, i64>(4)? as u64,
                    pruned: row.get::<_, i64>(5)? as u64,
                })
            })
            .optional()?;
        match loaded {
            Some(meta) => cache.insert(*space, meta),
            None => return Ok(None),
        };
    }
    Ok(cache.get_mut(space))
}

fn create(
    tx: &Transaction<'_>,
    state: &mut State<'_>,
    space: SpaceId,
    token_hash: TokenHash,
) -> rusqlite::Result<Result<Created, StorageError>> {
    let existing: Option<Vec<u8>> = tx
        .prepare_cached("SELECT token_hash FROM spaces WHERE space_id = ?1")?
        .query_row([&space.0[..]], |row| row.get(0))
        .optional()?;
    let erased: Option<i64> = tx
        .prepare_cached("SELECT reason FROM erased WHERE space_id = ?1")?
        .query_row([&space.0[..]], |row| row.get(0))
        .optional()?;
    if let Some(reason) = erased {
        return Ok(Err(StorageError::SpaceErased(EraseReason::from_db(reason))));
    }
    if let Some(existing) = existing {
        let same: bool = existing.as_slice().ct_eq(&token_hash[..]).into();
        return Ok(if same {
            Ok(Created::Existing)
        } else {
            Err(StorageError::SpaceExists)
        });
    }
    // A new space counts in the relay-wide total until it is erased.
    if let Err(full) = state.usage.check(0, SPACE_BYTES) {
        return Ok(Err(full));
    }
    let now = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs() as i64);
    // Above every id an erased space still has rows under, which SQLite's own choice (one
    // past the highest id in `spaces`) would hand out again.
    tx.prepare_cached(
        "INSERT INTO spaces (id, space_id, token_hash, next_seq, bytes_used, covers, created_at)
         VALUES (max(COALESCE((SELECT MAX(id) FROM spaces), 0),
                     COALESCE((SELECT MAX(space) FROM erasing), 0)) + 1,
                 ?1, ?2, 1, 0, 0, ?3)",
    )?
    .execute(params![&space.0[..], &token_hash[..], now])?;
    state.usage.change(0, SPACE_BYTES);
    state.effects.push(Effect::TokenAdded(space, token_hash));
    Ok(Ok(Created::New))
}

/// What the relay keeps of a payload to tell a replay from a reused sequence.
fn payload_hash(payload: &[u8]) -> [u8; 32] {
    Sha256::digest(payload).into()
}

fn push_chunk(
    tx: &Transaction<'_>,
    state: &mut State<'_>,
    space: SpaceId,
    push: Push,
    quota: u64,
) -> rusqlite::Result<Result<Pushed, StorageError>> {
    let Some(meta) = meta(tx, state.cache, &space)? else {
        return Ok(Err(StorageError::SpaceNotFound));
    };
    // device_seq is stored bit-for-bit as i64 so the whole u64 range is accepted.
    let device_seq = push.device_seq as i64;
    let hash = payload_hash(&push.payload);
    // The stored chunk with this (device, device_seq): a duplicate if its payload matches,
    // a conflict if not. A row from before payload hashes were kept is compared by its payload
    // while that is held; once pruned it cannot be compared and counts as a duplicate.
    let original =
        |tx: &Transaction<'_>| -> rusqlite::Result<Option<Result<Pushed, StorageError>>> {
            let row: Option<(i64, Option<Vec<u8>>)> = tx
                .prepare_cached(
                    "SELECT seq, payload_hash, CASE WHEN payload_hash IS NULL THEN payload END
                     FROM chunks WHERE space = ?1 AND device_id = ?2 AND device_seq = ?3",
                )?
                .query_row(params![meta.id, &push.device_id.0[..], device_seq], |row| {
                    let stored_hash: Option<Vec<u8>> = row.get(1)?;
                    let old_payload: Option<Vec<u8>> = row.get(2)?;
                    let stored_hash =
                        stored_hash.or_else(|| old_payload.map(|p| payload_hash(&p).to_vec()));
                    Ok((row.get(0)?, stored_hash))
                })
                .optional()?;
            Ok(row.map(|(seq, stored_hash)| match stored_hash {
                Some(stored) if stored[..] != hash[..] => Err(StorageError::SeqConflict {
                    relay_seq: seq as u64,
                }),
                _ => Ok(Pushed {
                    relay_seq: seq as u64,
                    duplicate: true,
                }),
            }))
        };
    let adding = push.payload.len() as u64;
    if meta.bytes_used.saturating_add(adding) > quota {
        // A replay of a stored chunk is still answered, even at the quota.
        return Ok(original(tx)?.unwrap_or(Err(StorageError::QuotaExceeded {
            used: meta.bytes_used,
            adding,
            quota,
        })));
    }
    // The row outlives the payload (its hash stays), so the relay counts it while kept.
    let counted = meta.counted();
    let grown = counted.saturating_add(adding).saturating_add(ROW_BYTES);
    if let Err(full) = state.usage.check(counted, grown) {
        // Likewise at the relay's limit.
        return Ok(original(tx)?.unwrap_or(Err(full)));
    }
    let relay_seq = meta.next_seq;
    // The common case (a new chunk) costs one insert; the dedup index refuses a replay, and
    // only then is the original looked up.
    let inserted = tx
        .prepare_cached(
            "INSERT INTO chunks (space, seq, device_id, device_seq, payload, payload_hash)
             VALUES (?1, ?2, ?3, ?4, ?5, ?6) ON CONFLICT DO NOTHING",
        )?
        .execute(params![
            meta.id,
            relay_seq as i64,
            &push.device_id.0[..],
            device_seq,
            &push.payload,
            &hash[..]
        ])?;
    if inserted == 0 {
        return match original(tx)? {
            Some(answer) => Ok(answer),
            None => Err(rusqlite::Error::ToSqlConversionFailure(
                "chunk insert refused without a duplicate".into(),
            )),
        };
    }
    meta.next_seq += 1;
    state.usage.change(counted, grown);
    meta.bytes_used = meta.bytes_used.saturating_add(adding);
    meta.rows = meta.rows.saturating_add(1);
    state.dirty.insert(space);
    state.effects.push(Effect::Chunk(
        space,
        Arc::new(Chunk {
            relay_seq,
            device_id: push.device_id,
            device_seq: push.device_seq,
            payload: push.payload,
        }),
    ));
    Ok(Ok(Pushed {
        relay_seq,
        duplicate: false,
    }))
}

fn push_rollup(
    tx: &Transaction<'_>,
    state: &mut State<'_>,
    space: SpaceId,
    rollup: RollupPush,
    quota: u64,
) -> rusqlite::Result<Result<RollupStored, StorageError>> {
    let Some(meta) = meta(tx, state.cache, &space)? else {
        return Ok(Err(StorageError::SpaceNotFound));
    };
    let (first, last) = match check_rollup(&rollup) {
        Ok(range) => range,
        Err(error) => return Ok(Err(error)),
    };
    let device = &rollup.device_id.0[..];
    let stored: Option<(i64, i64)> = tx
        .prepare_cached(
            "SELECT seq, last_seq FROM rollups
             WHERE space = ?1 AND device_id = ?2 AND first_dseq = ?3 AND last_dseq = ?4",
        )?
        .query_row(params![meta.id, device, first, last], |row| {
            Ok((row.get(0)?, row.get(1)?))
        })
        .optional()?;
    if let Some((seq, last_seq)) = stored {
        return Ok(Ok(RollupStored {
            relay_seq: seq as u64,
            last_relay_seq: last_seq as u64,
            duplicate: true,
        }));
    }
    let (count, held, covered, low, high): (i64, i64, i64, Option<i64>, Option<i64>) = tx
        .prepare_cached(
            "SELECT COUNT(*), COUNT(payload), COUNT(rollup_seq), MIN(seq), MAX(seq) FROM chunks
             WHERE space = ?1 AND device_id = ?2 AND device_seq BETWEEN ?3 AND ?4",
        )?
        .query_row(params![meta.id, device, first, last], |row| {
            Ok((
                row.get(0)?,
                row.get(1)?,
                row.get(2)?,
                row.get(3)?,
                row.get(4)?,
            ))
        })?;
    let (relay_seq, last_relay_seq) =
        match check_rollup_chunks(&rollup, count, held, covered, low.zip(high)) {
            Ok(range) => range,
            Err(error) => return Ok(Err(error)),
        };
    let size = rollup.payload.len() as u64;
    if meta.bytes_used.saturating_add(size) > quota {
        return Ok(Err(StorageError::QuotaExceeded {
            used: meta.bytes_used,
            adding: size,
            quota,
        }));
    }
    // Its row is kept like a chunk's, and counted by the relay alike.
    let counted = meta.counted();
    let grown = counted.saturating_add(size).saturating_add(ROW_BYTES);
    if let Err(full) = state.usage.check(counted, grown) {
        return Ok(Err(full));
    }
    // A rollup whose first chunk a snapshot already covers is pruned as it is stored, so the
    // sweep deletes it with those chunks (a device that was offline rolls up late).
    let pruned_at = (relay_seq <= meta.covers).then(|| unix_now() as i64);
    tx.prepare_cached(
        "INSERT INTO rollups
         (space, seq, last_seq, device_id, first_dseq, last_dseq, size, payload, pruned_at)
         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9)",
    )?
    .execute(params![
        meta.id,
        relay_seq as i64,
        last_relay_seq as i64,
        device,
        first,
        last,
        size as i64,
        &rollup.payload,
        pruned_at
    ])?;
    tx.prepare_cached(
        "UPDATE chunks SET rollup_seq = ?5
         WHERE space = ?1 AND device_id = ?2 AND device_seq BETWEEN ?3 AND ?4",
    )?
    .execute(params![meta.id, device, first, last, relay_seq as i64])?;
    state.usage.change(counted, grown);
    meta.bytes_used = meta.bytes_used.saturating_add(size);
    meta.rows = meta.rows.saturating_add(1);
    if pruned_at.is_some() {
        meta.pruned = meta.pruned.saturating_add(size);
    }
    state.dirty.insert(space);
    Ok(Ok(RollupStored {
        relay_seq,
        last_relay_seq,
        duplicate: false,
    }))
}

/// Payload bytes of a space's pruned rows due for deletion (pruned by `?2`), through
/// `chunks_held_by_space`: only those rows are read, and the snapshot deletes them. Every
/// pruned row is at or below the coverage, so no bound on the sequence is needed.
pub(crate) const DUE_CHUNKS: &str = "SELECT COALESCE(SUM(length(payload)), 0) FROM chunks
     WHERE space = ?1 AND pruned_at <= ?2 AND payload IS NOT NULL";
/// The same for rollups, through `rollups_held_by_space`.
pub(crate) const DUE_ROLLUPS: &str = "SELECT COALESCE(SUM(size), 0) FROM rollups
     WHERE space = ?1 AND pruned_at <= ?2 AND payload IS NOT NULL";
/// Deletes the payloads of a space's rows pruned by `?2`, through `chunks_held_by_space`.
pub(crate) const DELETE_DUE_CHUNKS: &str = "UPDATE chunks SET payload = NULL
     WHERE space = ?1 AND pruned_at <= ?2 AND payload IS NOT NULL";
/// The same for rollups, through `rollups_held_by_space`.
pub(crate) const DELETE_DUE_ROLLUPS: &str = "UPDATE rollups SET payload = NULL
     WHERE space = ?1 AND pruned_at <= ?2 AND payload IS NOT NULL";
/// Payload bytes a snapshot prunes, above the old coverage (`?2`) up to its own (`?3`), and
/// those of them due for deletion at once (`?4` now, `?5` the end of the grace).
const CHUNKS_PRUNING: &str = "SELECT COALESCE(SUM(length(payload)), 0),
            COALESCE(SUM(CASE WHEN COALESCE(pruned_at, ?4) <= ?5 THEN length(payload) END), 0)
     FROM chunks WHERE space = ?1 AND seq > ?2 AND seq <= ?3 AND payload IS NOT NULL";
/// The same for rollups.
const ROLLUPS_PRUNING: &str = "SELECT COALESCE(SUM(size), 0),
            COALESCE(SUM(CASE WHEN COALESCE(pruned_at, ?4) <= ?5 THEN size END), 0)
     FROM rollups WHERE space = ?1 AND seq > ?2 AND seq <= ?3 AND payload IS NOT NULL";

fn put_snapshot(
    tx: &Transaction<'_>,
    state: &mut State<'_>,
    space: SpaceId,
    snapshot: Snapshot,
    quota: u64,
    grace: Duration,
) -> rusqlite::Result<Result<(), StorageError>> {
    let Some(meta) = meta(tx, state.cache, &space)? else {
        return Ok(Err(StorageError::SpaceNotFound));
    };
    let head = meta.next_seq - 1;
    if snapshot.covers < meta.covers {
        return Ok(Err(StorageError::SnapshotStale {
            current: meta.covers,
        }));
    }
    if snapshot.covers > head {
        return Ok(Err(StorageError::SnapshotBeyondHead { head }));
    }
    let old_len: i64 = tx
        .prepare_cached("SELECT length(payload) FROM snapshots WHERE space = ?1")?
        .query_row([meta.id], |row| row.get(0))
        .optional()?
        .unwrap_or(0);
    // Payload bytes up to the new coverage: still held from earlier prunes (the space's
    // counter), pruned now, and due for deletion now (pruned `grace` ago, or now when the grace
    // is zero). Only the rows pruned now and those deleted now are read: a space keeps every
    // row after its payload, and pruned payloads stay for days, so summing them at each
    // snapshot let repeated snapshots hold the one writer for as long as a scan of them all.
    let now = unix_now();
    let expired = now.saturating_sub(grace.as_secs());
    let held = meta.pruned as i64;
    let mut pruning = 0i64;
    let mut deleting = 0i64;
    for (due, range) in [(DUE_CHUNKS, CHUNKS_PRUNING), (DUE_ROLLUPS, ROLLUPS_PRUNING)] {
        let bytes: i64 = tx
            .prepare_cached(due)?
            .query_row(params![meta.id, expired as i64], |row| row.get(0))?;
        deleting = deleting.saturating_add(bytes);
        let (bytes, due): (i64, i64) = tx.prepare_cached(range)?.query_row(
            params![
                meta.id,
                meta.covers as i64,
                snapshot.covers as i64,
                now as i64,
                expired as i64
            ],
            |row| Ok((row.get(0)?, row.get(1)?)),
        )?;
        pruning = pruning.saturating_add(bytes);
        deleting = deleting.saturating_add(due);
    }
    let adding = snapshot.payload.len() as u64;
    let kept = meta
        .bytes_used
        .saturating_sub(old_len as u64)
        .saturating_add(adding);
    // The quota bounds what stays live, so a full space can still compact its log.
    let live = kept
        .saturating_sub(held as u64)
        .saturating_sub(pruning as u64);
    if live > quota {
        return Ok(Err(StorageError::QuotaExceeded {
            used: meta.bytes_used,
            adding,
            quota,
        }));
    }
    // Pruned chunks count until deleted, so the relay-wide limit bounds what is on disk.
    let used = kept.saturating_sub(deleting as u64);
    if let Err(full) = state.usage.check(meta.bytes_used, used) {
        return Ok(Err(full));
    }
    // Pruned now, deleted after the grace: a garbage snapshot cannot destroy the only copy.
    tx.prepare_cached(
        "UPDATE chunks SET pruned_at = ?4 WHERE space = ?1 AND seq > ?2 AND seq <= ?3",
    )?
    .execute(params![
        meta.id,
        meta.covers as i64,
        snapshot.covers as i64,
        now as i64
    ])?;
    tx.prepare_cached(DELETE_DUE_CHUNKS)?
        .execute(params![meta.id, expired as i64])?;
    tx.prepare_cached(
        "UPDATE rollups SET pruned_at = ?4 WHERE space = ?1 AND seq > ?2 AND seq <= ?3",
    )?
    .execute(params![
        meta.id,
        meta.covers as i64,
        snapshot.covers as i64,
        now as i64
    ])?;
    tx.prepare_cached(DELETE_DUE_ROLLUPS)?
        .execute(params![meta.id, expired as i64])?;
    tx.prepare_cached(
        "INSERT INTO snapshots (space, covers, payload) VALUES (?1, ?2, ?3)
         ON CONFLICT (space) DO UPDATE SET covers = excluded.covers, payload = excluded.payload",
    )?
    .execute(params![meta.id, snapshot.covers as i64, &snapshot.payload])?;
    meta.covers = snapshot.covers;
    state.usage.change(meta.bytes_used, used);
    meta.bytes_used = used;
    meta.pruned = meta
        .pruned
        .saturating_add(pruning as u64)
        .saturating_sub(deleting as u64);
    state.dirty.insert(space);
    Ok(Ok(()))
}

/// Rows of an erased space one writer transaction deletes at most, and their payload bytes
/// (past the first row): short enough that pushes queued behind it wait milliseconds, not the
/// seconds a large space's delete in one go took (`secure_delete` writes zeros over each).
pub(crate) const SCRUB_ROWS: usize = 2_000;
pub(crate) const SCRUB_BYTES: usize = 8 << 20;

/// Deletes chunks and rollups of erased space `only` (`None`: the lowest listed in
/// `erasing`, then the next), at most `max_rows` rows and, past the first, `max_bytes` of
/// payload; a space with none left leaves the list. Answers what it deleted, and whether
/// rows are left (of `only`, or of any). Their bytes were given back at the erase.
fn scrub(
    tx: &Transaction<'_>,
    state: &mut State<'_>,
    only: Option<i64>,
    max_rows: usize,
    max_bytes: usize,
) -> rusqlite::Result<(Swept, bool)> {
    let mut swept = Swept::default();
    let mut rows = 0usize;
    let max_rows = max_rows.max(1);
    let max_bytes = u64::try_from(max_bytes).unwrap_or(u64::MAX);
    loop {
        let space = match only {
            Some(space) => tx
                .prepare_cached("SELECT space FROM erasing WHERE space = ?1")?
                .query_row([space], |row| row.get::<_, i64>(0))
                .optional()?,
            None => tx
                .prepare_cached("SELECT space FROM erasing ORDER BY space LIMIT 1")?
                .query_row([], |row| row.get::<_, i64>(0))
                .optional()?,
        };
        let Some(space) = space else {
            return Ok((swept, false));
        };
        for table in ["chunks", "rollups"] {
            let left = max_rows.saturating_sub(rows);
            let due: Vec<(i64, i64)> = tx
                .prepare_cached(&format!(
                    "SELECT id, COALESCE(length(payload), 0) FROM {table} WHERE space = ?1 LIMIT ?2"
                ))?
                .query_map(
                    params![space, i64::try_from(left).unwrap_or(i64::MAX)],
                    |row| Ok((row.get(0)?, row.get(1)?)),
                )?
                .collect::<rusqlite::Result<_>>()?;
            let mut delete = tx.prepare_cached(&format!("DELETE FROM {table} WHERE id = ?1"))?;
            for (id, len) in due {
                if rows > 0 && swept.bytes >= max_bytes {
                    return Ok((swept, true));
                }
                delete.execute([id])?;
                rows = rows.saturating_add(1);
                swept.chunks = swept.chunks.saturating_add(1);
                swept.bytes = swept.bytes.saturating_add(u64::try_from(len).unwrap_or(0));
            }
            if rows >= max_rows {
                return Ok((swept, true));
            }
        }
        tx.prepare_cached("DELETE FROM erasing WHERE space = ?1")?
            .execute([space])?;
        // The WAL still holds the deleted pages' earlier versions: cut it after the commit.
        state.effects.push(Effect::Scrubbed);
        if only.is_some() {
            return Ok((swept, false));
        }
    }
}

/// Deletes the payloads of the oldest expired pruned chunks, at most `max_chunks` and until
/// they reach `max_bytes`, and gives their bytes back to their spaces and the relay. Then
/// deletes up to `max_chunks` rows an erase left (after a restart cut one short).
fn sweep(
    tx: &Transaction<'_>,
    state: &mut State<'_>,
    grace: Duration,
    max_chunks: usize,
    max_bytes: u64,
) -> rusqlite::Result<Swept> {
    let expired = unix_now().saturating_sub(grace.as_secs());
    let due: Vec<(i64, Vec<u8>, i64)> = tx
        .prepare_cached(
            "SELECT c.id, s.space_id, length(c.payload) FROM chunks c
             JOIN spaces s ON s.id = c.space
             WHERE c.pruned_at <= ?1 AND c.payload IS NOT NULL
             ORDER BY c.pruned_at LIMIT ?2",
        )?
        .query_map(
            params![
                i64::try_from(expired).unwrap_or(i64::MAX),
                i64::try_from(max_chunks).unwrap_or(i64::MAX)
            ],
            |row| Ok((row.get(0)?, row.get(1)?, row.get(2)?)),
        )?
        .collect::<rusqlite::Result<_>>()?;
    // Then expired rollups, with what the chunks left of the batch.
    let due_rollups: Vec<(i64, Vec<u8>, i64)> = tx
        .prepare_cached(
            "SELECT r.id, s.space_id, r.size FROM rollups r
             JOIN spaces s ON s.id = r.space
             WHERE r.pruned_at <= ?1 AND r.payload IS NOT NULL
             ORDER BY r.pruned_at LIMIT ?2",
        )?
        .query_map(
            params![
                i64::try_from(expired).unwrap_or(i64::MAX),
                i64::try_from(max_chunks.saturating_sub(due.len())).unwrap_or(i64::MAX)
            ],
            |row| Ok((row.get(0)?, row.get(1)?, row.get(2)?)),
        )?
        .collect::<rusqlite::Result<_>>()?;
    let due = due
        .into_iter()
        .map(|(id, space, len)| (false, id, space, len))
        .chain(
            due_rollups
                .into_iter()
                .map(|(id, space, len)| (true, id, space, len)),
        );
    let mut swept = Swept::default();
    for (is_rollup, id, space, len) in due {
        if swept.chunks > 0 && swept.bytes >= max_bytes {
            break;
        }
        let clear = if is_rollup {
            "UPDATE rollups SET payload = NULL WHERE id = ?1"
        } else {
            "UPDATE chunks SET payload = NULL WHERE id = ?1"
        };
        tx.prepare_cached(clear)?.execute([id])?;
        let len = u64::try_from(len).unwrap_or(0);
        swept.chunks += 1;
        swept.bytes = swept.bytes.saturating_add(len);
        // Deleted either way, so a malformed row cannot stall the sweep; only a sound space
        // has a counter to give the bytes back to.
        let Ok(space) = <[u8; 32]>::try_from(space.as_slice()).map(SpaceId) else {
            continue;
        };
        if let Some(meta) = meta(tx, state.cache, &space)? {
            let after = meta.bytes_used.saturating_sub(len);
            state.usage.change(meta.bytes_used, after);
            meta.bytes_used = after;
            meta.pruned = meta.pruned.saturating_sub(len);
            state.dirty.insert(space);
        }
    }
    // Counted with the pruned chunks, so a sweep that finds many left asks for more at once.
    if usize::try_from(swept.chunks).unwrap_or(usize::MAX) < max_chunks && swept.bytes < max_bytes {
        let (scrubbed, _) = scrub(
            tx,
            state,
            None,
            max_chunks.saturating_sub(usize::try_from(swept.chunks).unwrap_or(max_chunks)),
            usize::try_from(max_bytes.saturating_sub(swept.bytes)).unwrap_or(usize::MAX),
        )?;
        swept.chunks = swept.chunks.saturating_add(scrubbed.chunks);
        swept.bytes = swept.bytes.saturating_add(scrubbed.bytes);
    }
    Ok(swept)
}

fn erase(
    tx: &Transaction<'_>,
    state: &mut State<'_>,
    space: SpaceId,
    reason: EraseReason,
) -> rusqlite::Result<Result<Option<i64>, StorageError>> {
    let Some((id, counted)) = meta(tx, state.cache, &space)?.map(|meta| (meta.id, meta.counted()))
    else {
        return Ok(Ok(None));
    };
    // The chunks and rollups go afterwards, a bounded batch per transaction ([`scrub`]): one
    // delete of a large space would hold the writer, and every push behind it, for seconds.
    tx.prepare_cached("INSERT OR IGNORE INTO erasing (space) VALUES (?1)")?
        .execute([id])?;
    tx.prepare_cached("DELETE FROM snapshots WHERE space = ?1")?
        .execute([id])?;
    seen::forget(tx, id)?;
    tx.prepare_cached("DELETE FROM spaces WHERE id = ?1")?
        .execute([id])?;
    let now = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs() as i64);
    tx.prepare_cached(
        "INSERT OR REPLACE INTO erased (space_id, erased_at, reason) VALUES (?1, ?2, ?3)",
    )?
    .execute(params![&space.0[..], now, reason.to_db()])?;
    state.cache.remove(&space);
    state.dirty.remove(&space);
    // All but its tombstone, which stays.
    state.usage.change(counted, TOMBSTONE_BYTES);
    state.effects.push(Effect::Erased(space));
    Ok(Ok(Some(id)))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Rows of `space_id`'s chunks and rollups, by its internal id.
    fn rows(conn: &Connection, id: i64) -> rusqlite::Result<i64> {
        conn.query_row(
            "SELECT (SELECT COUNT(*) FROM chunks WHERE space = ?1)
                  + (SELECT COUNT(*) FROM rollups WHERE space = ?1)",
            [id],
            |row| row.get(0),
        )
    }

    /// Runs `work` in one transaction with fresh batch state, as the writer does for a batch.
    fn in_tx<T>(
        conn: &mut Connection,
        work: impl FnOnce(&Transaction<'_>, &mut State<'_>) -> rusqlite::Result<T>,
    ) -> rusqlite::Result<(T, Vec<Effect>)> {
        let (mut cache, mut dirty, mut effects) = (HashMap::new(), HashSet::new(), Vec::new());
        let mut usage = Usage {
            bytes: 0,
            limit: u64::MAX,
            dirty: false,
        };
        let tx = conn.transaction()?;
        let out = work(
            &tx,
            &mut State {
                cache: &mut cache,
                dirty: &mut dirty,
                usage: &mut usage,
                effects: &mut effects,
            },
        )?;
        tx.commit()?;
        Ok((out, effects))
    }

    /// A snapshot reads and deletes what its space still holds below its coverage through the
    /// indexes of held rows, never by walking every row the space kept after its payload went:
    /// on a long-lived space that walk is its whole history, inside the one writer.
    #[test]
    fn a_snapshot_reads_only_the_rows_still_held() -> rusqlite::Result<()> {
        let dir =
            tempfile::tempdir().map_err(|e| rusqlite::Error::ToSqlConversionFailure(e.into()))?;
        let conn = super::super::schema::open_writer(&dir.path().join("relay.db"), 1000)?;
        for (sql, index) in [
            (DUE_CHUNKS, "chunks_held_by_space"),
            (DUE_ROLLUPS, "rollups_held_by_space"),
            (DELETE_DUE_CHUNKS, "chunks_held_by_space"),
            (DELETE_DUE_ROLLUPS, "rollups_held_by_space"),
        ] {
            let plan: Vec<String> = conn
                .prepare(&format!("EXPLAIN QUERY PLAN {sql}"))?
                .query_map(params![1i64, 50i64], |row| row.get(3))?
                .collect::<rusqlite::Result<_>>()?;
            assert!(
                plan.iter().any(|step| step.contains(index)),
                "{sql}: {plan:?}"
            );
        }
        Ok(())
    }

    /// An erase deletes none of a space's chunks and rollups itself: they go a bounded batch
    /// per transaction, so the one writer never holds every push behind it for as long as a
    /// large space takes to delete (before, the erase's own transaction deleted them all). A
    /// space made meanwhile gets an id of its own, not the erased one's, and sees none of them.
    #[test]
    fn an_erase_deletes_a_large_space_a_bounded_batch_per_transaction() -> rusqlite::Result<()> {
        let dir =
            tempfile::tempdir().map_err(|e| rusqlite::Error::ToSqlConversionFailure(e.into()))?;
        let mut conn = super::super::schema::open_writer(&dir.path().join("relay.db"), 1000)?;
        let (big, other, later) = (SpaceId([5; 32]), SpaceId([6; 32]), SpaceId([7; 32]));
        in_tx(&mut conn, |tx, state| {
            let made = [
                create(tx, state, other, [6; 32])?,
                create(tx, state, big, [5; 32])?,
            ];
            assert!(made.iter().all(|m| matches!(m, Ok(Created::New))));
            Ok(())
        })?;
        let id: i64 = conn.query_row(
            "SELECT id FROM spaces WHERE space_id = ?1",
            [&big.0[..]],
            |r| r.get(0),
        )?;
        // Rows as a long-lived space leaves them (pruned: no payload), the highest id's.
        conn.execute(
            "WITH RECURSIVE g(n) AS (SELECT 1 UNION ALL SELECT n + 1 FROM g WHERE n < 5000)
             INSERT INTO chunks (space, seq, device_id, device_seq)
             SELECT ?1, n, x'02020202020202020202020202020202', n FROM g",
            [id],
        )?;
        conn.execute(
            "INSERT INTO rollups (space, seq, last_seq, device_id, first_dseq, last_dseq, size)
             VALUES (?1, 1, 2, x'02020202020202020202020202020202', 1, 2, 0)",
            [id],
        )?;

        let (erased, effects) = in_tx(&mut conn, |tx, state| {
            erase(tx, state, big, EraseReason::Erased)
        })?;
        assert_eq!(erased.ok().flatten(), Some(id));
        assert!(effects.iter().any(|e| matches!(e, Effect::Erased(_))));
        assert_eq!(rows(&conn, id)?, 5001, "the erase deleted rows itself");

        // A space made now does not take the erased one's id (SQLite would: one past the
        // highest left in `spaces`).
        let (made, _) = in_tx(&mut conn, |tx, state| create(tx, state, later, [7; 32]))?;
        assert!(matches!(made, Ok(Created::New)));
        let new_id: i64 = conn.query_row(
            "SELECT id FROM spaces WHERE space_id = ?1",
            [&later.0[..]],
            |r| r.get(0),
        )?;
        assert!(new_id > id, "{new_id} reuses {id}");

        let mut batches = 0;
        loop {
            let before = rows(&conn, id)?;
            let ((_, left), effects) = in_tx(&mut conn, |tx, state| {
                scrub(tx, state, Some(id), 1000, usize::MAX)
            })?;
            batches += 1;
            assert!(
                before - rows(&conn, id)? <= 1000,
                "a batch went past its bound"
            );
            if !left {
                assert!(effects.iter().any(|e| matches!(e, Effect::Scrubbed)));
                break;
            }
            assert!(batches < 10, "{} rows left", rows(&conn, id)?);
        }
        assert_eq!(rows(&conn, id)?, 0);
        let queued: i64 = conn.query_row("SELECT COUNT(*) FROM erasing", [], |r| r.get(0))?;
        assert_eq!(queued, 0);
        Ok(())
    }

    /// A batch stops at its bytes too: a few large chunks are as long to zero as many small
    /// ones. The periodic sweep deletes what an erase left (after a stop cut it short) and
    /// counts it, so a sweep that finds many asks for the next batch at once.
    #[test]
    fn a_scrub_stops_at_its_bytes_and_the_sweep_counts_what_it_deletes() -> rusqlite::Result<()> {
        let dir =
            tempfile::tempdir().map_err(|e| rusqlite::Error::ToSqlConversionFailure(e.into()))?;
        let mut conn = super::super::schema::open_writer(&dir.path().join("relay.db"), 1000)?;
        let big = SpaceId([5; 32]);
        let (made, _) = in_tx(&mut conn, |tx, state| create(tx, state, big, [5; 32]))?;
        assert!(matches!(made, Ok(Created::New)));
        let id: i64 = conn.query_row("SELECT id FROM spaces", [], |r| r.get(0))?;
        conn.execute(
            "WITH RECURSIVE g(n) AS (SELECT 1 UNION ALL SELECT n + 1 FROM g WHERE n < 40)
             INSERT INTO chunks (space, seq, device_id, device_seq, payload)
             SELECT ?1, n, x'02020202020202020202020202020202', n, zeroblob(1048576) FROM g",
            [id],
        )?;
        let (erased, _) = in_tx(&mut conn, |tx, state| {
            erase(tx, state, big, EraseReason::Erased)
        })?;
        assert_eq!(erased.ok().flatten(), Some(id));
        let ((swept, left), _) = in_tx(&mut conn, |tx, state| {
            scrub(tx, state, Some(id), SCRUB_ROWS, SCRUB_BYTES)
        })?;
        assert!(left);
        assert_eq!(swept.bytes, u64::try_from(SCRUB_BYTES).unwrap_or(0));
        assert_eq!(rows(&conn, id)?, 32);
        let (swept, _) = in_tx(&mut conn, |tx, state| {
            sweep(tx, state, Duration::from_secs(3600), 10, u64::MAX)
        })?;
        assert_eq!(swept.chunks, 10, "{swept:?}");
        assert_eq!(rows(&conn, id)?, 22);
        Ok(())
    }
}
