//! The sync engine's tables: unsent changes, the outbox, cursors and peer sequence numbers.
//!
//! Every method that changes more than one table does it in one transaction, so a crash leaves
//! the device either before or after a step, never between.

use rusqlite::{OptionalExtension, params};

use super::{Checked, Space, Store, ViewUpdate};
use crate::{
    error::Result,
    sync::{MAX_PROBLEMS, Problem},
};

/// Each device's last sequence number in a space.
pub type PeerSeqs = Vec<([u8; 16], u64)>;

/// Per-space sync bookkeeping.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct SyncState {
    /// Relay sequence up to which this device has pulled.
    pub cursor: u64,
    /// The next device sequence number for a batch.
    pub next_seq: u64,
    /// Highest relay sequence the relay acknowledged for this device's pushes.
    pub last_ack_relay: u64,
    /// Relay sequence covered by the last snapshot this device uploaded or loaded.
    pub snapshot_covers: u64,
    /// A refused chunk up to this relay sequence is waiting to be healed by a snapshot (0: none).
    pub heal_after: u64,
    /// One of the refused chunks came from a device whose chunks were merged here before: its
    /// edit is real and only a snapshot covering it may end the wait.
    pub heal_real: bool,
    /// When a sync round last completed (unix ms).
    pub last_synced: Option<i64>,
    /// The relay's mark for the chunk at `cursor`, as it was when this device got there.
    pub cursor_mark: Option<[u8; 16]>,
    /// This device's highest sequence number the relay acknowledged under its current id (0:
    /// none yet; then `last_ack_relay`, if set, is an earlier id's chunk). Batches go out and
    /// are acknowledged in order, so it is the one stored at `last_ack_relay`.
    pub acked_seq: u64,
}

/// A chunk pulled from another device, opened, to be committed with the cursor.
#[derive(Debug)]
pub struct PulledChange<'a> {
    /// The sending device.
    pub device: [u8; 16],
    /// The first of its numbers this brings (a rollup stands for several chunks; a chunk's is
    /// its own).
    pub first_seq: u64,
    /// Its sequence number (a rollup's last).
    pub device_seq: u64,
    /// The plaintext change bytes, or `None` for a chunk refused as tampered (its number is
    /// consumed so the device's later chunks still line up).
    pub bytes: Option<&'a [u8]>,
}

/// This device's acknowledged chunks kept for a rollup, at most (per space).
const MAX_OWN_CHUNKS: u64 = 4096;

/// The hashes of the Automerge changes in `bytes` (concatenated change chunks), 32 bytes
/// each; `None` unless every change parses.
fn change_hashes(bytes: &[u8]) -> Option<Vec<u8>> {
    let mut out = Vec::new();
    let mut rest = bytes;
    while !rest.is_empty() {
        let (one, after) = crate::doc::split_chunk(rest)?;
        rest = after;
        let change = automerge::Change::from_bytes(one.to_vec()).ok()?;
        out.extend_from_slice(&change.hash().0);
    }
    (!out.is_empty()).then_some(out)
}

/// Raises a device's last sequence number (`?1` space, `?2` device, `?3` sequence).
/// `?4` is 1 when the chunk opened (or a snapshot vouches for the device), 0 for a refused one.
const RAISE_PEER_SEQ: &str = "INSERT INTO peer_seqs (space, device, last_seq, authentic) \
     VALUES (?1, ?2, ?3, ?4) ON CONFLICT (space, device) DO UPDATE SET \
     last_seq = MAX(last_seq, excluded.last_seq), authentic = MAX(authentic, excluded.authentic)";

fn u(v: i64) -> u64 {
    v.max(0).unsigned_abs()
}

fn i(v: u64) -> i64 {
    i64::try_from(v).unwrap_or(i64::MAX)
}

impl Store {
    /// The space's sync state (defaults before the first sync).
    pub fn sync_state(&self, space: Space) -> Result<SyncState> {
        let row = self
            .conn
            .query_row(
                "SELECT cursor, next_seq, last_ack_relay, snapshot_covers, last_synced, heal_after, \
                 cursor_mark, mark_at, \
                 (SELECT MIN(device_seq) FROM outbox WHERE outbox.space = sync_state.space), \
                 heal_real \
                 FROM sync_state WHERE space = ?1",
                [space.as_str()],
                |r| {
                    let cursor = u(r.get(0)?);
                    let mark: Option<Vec<u8>> = r.get(6)?;
                    let mark_at: Option<i64> = r.get(7)?;
                    // A mark kept for another cursor (or of the wrong size) is no mark.
                    let cursor_mark = mark
                        .filter(|_| mark_at.map(u) == Some(cursor))
                        .and_then(|m| <[u8; 16]>::try_from(m.as_slice()).ok());
                    let next_seq = u(r.get(1)?);
                    let waiting: Option<i64> = r.get(8)?;
                    let acked_seq = waiting.map_or(next_seq, |w| u(w).min(next_seq));
                    Ok(SyncState {
                        cursor,
                        next_seq,
                        acked_seq: acked_seq.saturating_sub(1),
                        last_ack_relay: u(r.get(2)?),
                        snapshot_covers: u(r.get(3)?),
                        last_synced: r.get(4)?,
                        heal_after: u(r.get(5)?),
                        heal_real: r.get::<_, i64>(9)? != 0,
                        cursor_mark,
                    })
                },
            )
            .optional()?;
        Ok(row.unwrap_or(SyncState {
            next_seq: 1,
            ..SyncState::default()
        }))
    }

    fn ensure_state(tx: &rusqlite::Transaction<'_>, space: Space) -> Result<()> {
        tx.execute(
            "INSERT OR IGNORE INTO sync_state (space) VALUES (?1)",
            [space.as_str()],
        )?;
        Ok(())
    }

    /// Local changes (unsent rows plus those in un-acknowledged batches) not yet at the relay.
    pub fn pending_changes(&self, space: Space) -> Result<u64> {
        let n: i64 = self.conn.query_row(
            "SELECT (SELECT COUNT(*) FROM unsent WHERE space = ?1) + \
                    (SELECT COALESCE(SUM(changes), 0) FROM outbox WHERE space = ?1)",
            [space.as_str()],
            |r| r.get(0),
        )?;
        Ok(u(n))
    }

    /// The oldest un-acknowledged batch, making one from unsent changes (up to `max_bytes`,
    /// at least one change) when there is none. Returns (device sequence, plaintext).
    pub fn next_batch(&mut self, space: Space, max_bytes: usize) -> Result<Option<(u64, Vec<u8>)>> {
        let existing = self.oldest_batch(space)?;
        if existing.is_some() {
            return Ok(existing);
        }
        // The number leaves the device with this batch: under `synchronous = NORMAL` a power
        // cut could otherwise roll it back and the next batch would reuse it. One fsync per
        // batch made, never per edit.
        self.durably(|store| store.make_batch(space, max_bytes))
    }

    fn oldest_batch(&self, space: Space) -> Result<Option<(u64, Vec<u8>)>> {
        let existing: Option<(i64, Vec<u8>)> = self
            .conn
            .query_row(
                "SELECT device_seq, bytes FROM outbox WHERE space = ?1 ORDER BY device_seq LIMIT 1",
                [space.as_str()],
                |r| Ok((r.get(0)?, r.get(1)?)),
            )
            .optional()?;
        Ok(existing.map(|(seq, bytes)| (u(seq), bytes)))
    }

    fn make_batch(&mut self, space: Space, max_bytes: usize) -> Result<Option<(u64, Vec<u8>)>> {
        let tx = self.conn.transaction()?;
        let mut batch = Vec::new();
        let mut last_id = None;
        let mut count = 0i64;
        {
            let mut stmt =
                tx.prepare("SELECT id, bytes FROM unsent WHERE space = ?1 ORDER BY id")?;
            let mut rows = stmt.query([space.as_str()])?;
            while let Some(row) = rows.next()? {
                let bytes = row.get_ref(1)?.as_blob().map_err(rusqlite::Error::from)?;
                if count > 0 && batch.len() + bytes.len() > max_bytes {
                    break;
                }
                batch.extend_from_slice(bytes);
                last_id = Some(row.get::<_, i64>(0)?);
                count += 1;
            }
        }
        let Some(last_id) = last_id else {
            return Ok(None);
        };
        Self::ensure_state(&tx, space)?;
        let seq: i64 = tx.query_row(
            "SELECT next_seq FROM sync_state WHERE space = ?1",
            [space.as_str()],
            |r| r.get(0),
        )?;
        tx.execute(
            "INSERT INTO outbox (space, device_seq, bytes, changes) VALUES (?1, ?2, ?3, ?4)",
            params![space.as_str(), seq, batch, count],
        )?;
        tx.execute(
            "DELETE FROM unsent WHERE space = ?1 AND id <= ?2",
            params![space.as_str(), last_id],
        )?;
        tx.execute(
            "UPDATE sync_state SET next_seq = ?2 WHERE space = ?1",
            params![space.as_str(), seq.saturating_add(1)],
        )?;
        tx.commit()?;
        Ok(Some((u(seq), batch)))
    }

    /// Keeps the relay's mark for the chunk at relay sequence `at` (the cursor just reached).
    pub fn keep_cursor_mark(&mut self, space: Space, at: u64, mark: [u8; 16]) -> Result<SyncState> {
        let tx = self.conn.transaction()?;
        Self::ensure_state(&tx, space)?;
        tx.execute(
            "UPDATE sync_state SET cursor_mark = ?2, mark_at = ?3 WHERE space = ?1",
            params![space.as_str(), &mark[..], i(at)],
        )?;
        tx.commit()?;
        self.sync_state(space)
    }

    /// The relay went back in time: read from the start, forget what it acknowledged and
    /// what it had pruned, and queue `changes` (every change of this device's document, each
    /// on its own, so batches stay within the chunk limit) to push again.
    pub fn relay_rewound(&mut self, space: Space, changes: &[Vec<u8>]) -> Result<SyncState> {
        let tx = self.conn.transaction()?;
        Self::ensure_state(&tx, space)?;
        tx.execute(
            "UPDATE sync_state SET cursor = 0, last_ack_relay = 0, snapshot_covers = 0, \
             heal_after = 0, heal_real = 0, cursor_mark = NULL, mark_at = NULL WHERE space = ?1",
            [space.as_str()],
        )?;
        // Every unsent change is in the document queued below: a relay that keeps rewinding
        // must not grow the queue by a whole document each time.
        tx.execute("DELETE FROM unsent WHERE space = ?1", [space.as_str()])?;
        // The relay lost what they stood for.
        tx.execute("DELETE FROM own_chunks WHERE space = ?1", [space.as_str()])?;
        {
            let mut insert = tx.prepare("INSERT INTO unsent (space, bytes) VALUES (?1, ?2)")?;
            for change in changes {
                insert.execute(params![space.as_str(), change])?;
            }
        }
        tx.commit()?;
        self.sync_state(space)
    }

    /// [`Store::set_meta`], fsynced before it returns.
    pub(crate) fn set_meta_durably(&mut self, pairs: &[(&str, &str)]) -> Result<()> {
        self.durably(|store| store.set_meta(pairs))
    }

    /// Runs `f` with every commit fsynced, whatever the connection's `synchronous` level,
    /// then puts the level back. (It cannot change inside a transaction.)
    fn durably<T>(&mut self, f: impl FnOnce(&mut Self) -> Result<T>) -> Result<T> {
        let level = self.fsync_commits()?;
        let done = f(self);
        self.restore_commits(level)?;
        done
    }

    /// Makes every commit from now on fsynced; returns the level to give back to
    /// [`Store::restore_commits`]. Outside a transaction only.
    pub(crate) fn fsync_commits(&mut self) -> Result<Option<i64>> {
        const FULL: i64 = 2;
        self.fsynced_steps = self.fsynced_steps.saturating_add(1);
        let level: i64 = self
            .conn
            .pragma_query_value(None, "synchronous", |r| r.get(0))?;
        if level >= FULL {
            return Ok(None);
        }
        self.conn.pragma_update(None, "synchronous", FULL)?;
        Ok(Some(level))
    }

    /// How many steps made their commits fsynced whatever the durability: what a power cut
    /// cannot take back, as tests see it.
    pub(crate) fn fsynced_steps(&self) -> u64 {
        self.fsynced_steps
    }

    /// Puts back the level [`Store::fsync_commits`] raised.
    pub(crate) fn restore_commits(&mut self, level: Option<i64>) -> Result<()> {
        if let Some(level) = level {
            self.conn.pragma_update(None, "synchronous", level)?;
        }
        Ok(())
    }

    /// This device takes the id `device`: every batch still in an outbox is numbered again
    /// from 1 in its order, the next batch follows them, and every space reads from the start.
    pub fn change_device(&mut self, device: &str) -> Result<()> {
        self.durably(|store| store.renumber(device))
    }

    fn renumber(&mut self, device: &str) -> Result<()> {
        let tx = self.conn.transaction()?;
        tx.execute("UPDATE meta SET value = ?1 WHERE key = 'device'", [device])?;
        // The old id's chunks are another device's now: no rollup of this one stands for them.
        tx.execute("DELETE FROM own_chunks", [])?;
        for space in Space::ALL {
            Self::ensure_state(&tx, space)?;
            let seqs: Vec<i64> = tx
                .prepare("SELECT device_seq FROM outbox WHERE space = ?1 ORDER BY device_seq")?
                .query_map([space.as_str()], |r| r.get(0))?
                .collect::<rusqlite::Result<_>>()?;
            // Through negative numbers first, so no two rows ever share a key.
            let mut to = tx.prepare(
                "UPDATE outbox SET device_seq = ?3 WHERE space = ?1 AND device_seq = ?2",
            )?;
            for (n, seq) in (1i64..).zip(&seqs) {
                to.execute(params![space.as_str(), seq, -n])?;
            }
            for n in (1i64..).take(seqs.len()) {
                to.execute(params![space.as_str(), -n, n])?;
            }
            drop(to);
            // Read from the start: the old id's chunks are no longer this device's own, and
            // what it lost when it went back in time comes back with them.
            tx.execute(
                "UPDATE sync_state SET cursor = 0, next_seq = \
                 (SELECT COUNT(*) FROM outbox WHERE space = ?1) + 1 WHERE space = ?1",
                [space.as_str()],
            )?;
        }
        tx.commit()?;
        Ok(())
    }

    /// Starts each space of `saves` over in a new epoch: its document becomes the full save,
    /// and everything kept of the old epoch's sync (cursor, outbox, proofs, introductions, held
    /// and refused changes, rollup runs, problems) goes. `unsent` are this device's changes
    /// (held in those saves already) to push in the new epoch, and `metas` the epoch's
    /// metadata: all in one durable transaction, so a crash leaves the device in one epoch
    /// or the other, never between.
    pub fn start_epoch(
        &mut self,
        saves: &[(Space, &[u8])],
        unsent: &[(Space, &[u8])],
        metas: &[(&str, &str)],
        now_ms: i64,
    ) -> Result<()> {
        self.durably(|store| {
            let tx = store.conn.transaction()?;
            for (space, full_save) in saves {
                Self::restart_space(&tx, *space, full_save, now_ms)?;
            }
            for (space, bytes) in unsent {
                tx.execute(
                    "INSERT INTO unsent (space, bytes) VALUES (?1, ?2)",
                    params![space.as_str(), bytes],
                )?;
            }
            Self::put_meta(&tx, metas)?;
            tx.commit()?;
            for (space, _) in saves {
                store.rows[*space as usize].set(Some(0));
            }
            // The old history must not wait in the write-ahead log either.
            store
                .conn
                .query_row("PRAGMA wal_checkpoint(TRUNCATE)", [], |_| Ok(()))?;
            Ok(())
        })
    }

    /// One space starting over from `full_save`, inside `tx`: everything of its old history
    /// and its sync state goes.
    fn restart_space(
        tx: &rusqlite::Transaction<'_>,
        space: Space,
        full_save: &[u8],
        now_ms: i64,
    ) -> Result<()> {
        {
            let s = space.as_str();
            tx.execute(
                "INSERT INTO doc_snapshots (space, bytes, saved_at) VALUES (?1, ?2, ?3) \
                 ON CONFLICT (space) DO UPDATE SET bytes = excluded.bytes, \
                 saved_at = excluded.saved_at",
                params![s, full_save, now_ms],
            )?;
            for table in [
                "doc_changes",
                "unsent",
                "outbox",
                "peer_seqs",
                "change_proofs",
                "known_devices",
                "held_changes",
                "refused_changes",
                "proof_groups",
                "own_chunks",
                // The read model goes with the old history, in this transaction: cut off before
                // it is built again, the journal opens without one and builds it from the new
                // document, never serving the old epoch's rows.
                "record_views",
                "space_views",
            ] {
                tx.execute(&format!("DELETE FROM {table} WHERE space = ?1"), [s])?;
            }
            Self::ensure_state(tx, space)?;
            tx.execute(
                "UPDATE sync_state SET cursor = 0, next_seq = 1, last_ack_relay = 0, \
                 snapshot_covers = 0, heal_after = 0, heal_real = 0, problems = NULL, \
                 cursor_mark = NULL, mark_at = NULL, last_synced = NULL WHERE space = ?1",
                [s],
            )?;
            Ok(())
        }
    }

    /// Problems reported in a space and not over yet, oldest first.
    pub fn open_problems(&self, space: Space) -> Result<Vec<Problem>> {
        let json: Option<String> = self
            .conn
            .query_row(
                "SELECT problems FROM sync_state WHERE space = ?1",
                [space.as_str()],
                |r| r.get(0),
            )
            .optional()?
            .flatten();
        // Written only by this build; a row it cannot read shows no problems rather than fail.
        Ok(json
            .and_then(|j| serde_json::from_str(&j).ok())
            .unwrap_or_default())
    }

    /// Keeps `problem` until [`Self::clear_problems`] (one of each kind, newest last).
    pub fn record_problem(&mut self, space: Space, problem: &Problem) -> Result<()> {
        let mut open = self.open_problems(space)?;
        open.retain(|p| p.kind != problem.kind);
        open.push(problem.clone());
        if open.len() > MAX_PROBLEMS {
            let excess = open.len() - MAX_PROBLEMS;
            open.drain(..excess);
        }
        let json = serde_json::to_string(&open)
            .map_err(|e| crate::Error::Corrupt(format!("a problem did not encode: {e}")))?;
        let tx = self.conn.transaction()?;
        Self::ensure_state(&tx, space)?;
        tx.execute(
            "UPDATE sync_state SET problems = ?2 WHERE space = ?1",
            params![space.as_str(), json],
        )?;
        tx.commit()?;
        Ok(())
    }

    /// The space's problems are over.
    pub fn clear_problems(&mut self, space: Space) -> Result<()> {
        self.conn.execute(
            "UPDATE sync_state SET problems = NULL WHERE space = ?1 AND problems IS NOT NULL",
            [space.as_str()],
        )?;
        Ok(())
    }

    /// The relay has `device_seq` durably at `relay_seq`: the batch leaves the outbox.
    pub fn acknowledge(
        &mut self,
        space: Space,
        device_seq: u64,
        relay_seq: u64,
    ) -> Result<SyncState> {
        let tx = self.conn.transaction()?;
        Self::ensure_state(&tx, space)?;
        let bytes: Option<Vec<u8>> = tx
            .query_row(
                "SELECT bytes FROM outbox WHERE space = ?1 AND device_seq = ?2",
                params![space.as_str(), i(device_seq)],
                |r| r.get(0),
            )
            .optional()?;
        // What a rollup of this chunk will have to hold again. (A chunk whose changes do not
        // all parse is left out: runs stop at the hole it leaves, and it stays a chunk.)
        if let Some(hashes) = bytes.as_deref().and_then(change_hashes) {
            tx.execute(
                "INSERT OR REPLACE INTO own_chunks (space, device_seq, relay_seq, hashes) \
                 VALUES (?1, ?2, ?3, ?4)",
                params![space.as_str(), i(device_seq), i(relay_seq), hashes],
            )?;
            // Bounded: a relay that never takes a rollup leaves only the newest waiting.
            tx.execute(
                "DELETE FROM own_chunks WHERE space = ?1 AND device_seq <= ?2",
                params![space.as_str(), i(device_seq.saturating_sub(MAX_OWN_CHUNKS))],
            )?;
        }
        tx.execute(
            "DELETE FROM outbox WHERE space = ?1 AND device_seq = ?2",
            params![space.as_str(), i(device_seq)],
        )?;
        tx.execute(
            "UPDATE sync_state SET last_ack_relay = MAX(last_ack_relay, ?2) WHERE space = ?1",
            params![space.as_str(), i(relay_seq)],
        )?;
        tx.commit()?;
        self.sync_state(space)
    }

    /// The oldest run of this device's acknowledged chunks no rollup stands for yet, with
    /// consecutive numbers, at most `max`: (device sequence, relay sequence, change hashes).
    pub fn own_chunk_run(&self, space: Space, max: usize) -> Result<Vec<(u64, u64, Vec<u8>)>> {
        let mut stmt = self.conn.prepare_cached(
            "SELECT device_seq, relay_seq, hashes FROM own_chunks WHERE space = ?1 \
             ORDER BY device_seq LIMIT ?2",
        )?;
        let limit = i64::try_from(max).unwrap_or(i64::MAX);
        let rows = stmt.query_map(params![space.as_str(), limit], |r| {
            Ok((u(r.get(0)?), u(r.get(1)?), r.get::<_, Vec<u8>>(2)?))
        })?;
        let mut run: Vec<(u64, u64, Vec<u8>)> = Vec::new();
        for row in rows {
            let row = row?;
            if run
                .last()
                .is_some_and(|last| last.0.saturating_add(1) != row.0)
            {
                break;
            }
            run.push(row);
        }
        Ok(run)
    }

    /// How many acknowledged chunks of this device wait for a rollup.
    pub fn own_chunks_waiting(&self, space: Space) -> Result<u64> {
        let n: i64 = self.conn.query_row(
            "SELECT COUNT(*) FROM own_chunks WHERE space = ?1",
            [space.as_str()],
            |r| r.get(0),
        )?;
        Ok(u(n))
    }

    /// A rollup stands for this device's chunks up to `through` (or none ever will).
    pub fn forget_own_chunks(&mut self, space: Space, through: u64) -> Result<()> {
        self.conn.execute(
            "DELETE FROM own_chunks WHERE space = ?1 AND device_seq <= ?2",
            params![space.as_str(), i(through)],
        )?;
        Ok(())
    }

    /// The devices of a space whose chunks opened here, or that a snapshot vouched for.
    pub fn authentic_peers(&self, space: Space) -> Result<Vec<[u8; 16]>> {
        let mut stmt = self
            .conn
            .prepare("SELECT device FROM peer_seqs WHERE space = ?1 AND authentic != 0")?;
        let rows = stmt.query_map([space.as_str()], |r| r.get::<_, Vec<u8>>(0))?;
        let mut out = Vec::new();
        for row in rows {
            if let Ok(d) = <[u8; 16]>::try_from(row?.as_slice()) {
                out.push(d);
            }
        }
        Ok(out)
    }

    /// Every device's last sequence number in a space.
    pub fn peer_seqs(&self, space: Space) -> Result<PeerSeqs> {
        let mut stmt = self
            .conn
            .prepare("SELECT device, last_seq FROM peer_seqs WHERE space = ?1")?;
        let rows = stmt.query_map([space.as_str()], |r| {
            Ok((r.get::<_, Vec<u8>>(0)?, r.get::<_, i64>(1)?))
        })?;
        let mut out = Vec::new();
        for row in rows {
            let (d, s) = row?;
            if let Ok(d) = <[u8; 16]>::try_from(d.as_slice()) {
                out.push((d, u(s)));
            }
        }
        out.sort();
        Ok(out)
    }

    /// Commits pulled changes, the devices' sequence numbers and the new cursor together.
    pub(crate) fn commit_pulled(
        &mut self,
        space: Space,
        pulled: &[PulledChange<'_>],
        cursor: u64,
        view: Option<&ViewUpdate>,
        checked: Option<&Checked>,
    ) -> Result<()> {
        let tx = self.conn.transaction()?;
        Self::ensure_state(&tx, space)?;
        if let Some(view) = view {
            Self::write_view(&tx, view)?;
        }
        let mut rows = 0u64;
        {
            let mut insert =
                tx.prepare_cached("INSERT INTO doc_changes (space, bytes) VALUES (?1, ?2)")?;
            let mut seq = tx.prepare_cached(RAISE_PEER_SEQ)?;
            if let Some(checked) = checked {
                // What passed the checks, not what came: a refused change never reaches the
                // document on a later load.
                if !checked.accepted.is_empty() {
                    insert.execute(params![space.as_str(), &checked.accepted])?;
                    rows += 1;
                }
                Self::write_checked(&tx, space, checked)?;
            }
            for p in pulled {
                if let (Some(bytes), None) = (p.bytes, checked) {
                    insert.execute(params![space.as_str(), bytes])?;
                    rows += 1;
                }
                seq.execute(params![
                    space.as_str(),
                    p.device.as_slice(),
                    i(p.device_seq),
                    i64::from(p.bytes.is_some())
                ])?;
            }
        }
        tx.execute(
            "UPDATE sync_state SET cursor = MAX(cursor, ?2) WHERE space = ?1",
            params![space.as_str(), i(cursor)],
        )?;
        tx.commit()?;
        self.count_rows(space, rows);
        Ok(())
    }

    /// Commits a loaded snapshot: its document, the devices' numbers and the cursor it covers.
    pub(crate) fn commit_snapshot(
        &mut self,
        space: Space,
        doc: &[u8],
        peers: &[([u8; 16], u64)],
        covers: u64,
        view: Option<&ViewUpdate>,
        checked: Option<&Checked>,
    ) -> Result<()> {
        let tx = self.conn.transaction()?;
        Self::ensure_state(&tx, space)?;
        if let Some(view) = view {
            Self::write_view(&tx, view)?;
        }
        tx.execute(
            "INSERT INTO doc_changes (space, bytes) VALUES (?1, ?2)",
            params![space.as_str(), doc],
        )?;
        if let Some(checked) = checked {
            Self::write_checked(&tx, space, checked)?;
        }
        for (device, seq) in peers {
            tx.execute(
                RAISE_PEER_SEQ,
                params![space.as_str(), device.as_slice(), i(*seq), 1],
            )?;
        }
        tx.execute(
            "UPDATE sync_state SET cursor = MAX(cursor, ?2), snapshot_covers = MAX(snapshot_covers, ?2), \
             heal_real = CASE WHEN heal_after <= ?2 THEN 0 ELSE heal_real END, \
             heal_after = CASE WHEN heal_after <= ?2 THEN 0 ELSE heal_after END WHERE space = ?1",
            params![space.as_str(), i(covers)],
        )?;
        tx.commit()?;
        self.count_rows(space, 1);
        Ok(())
    }

    /// Records that a snapshot covering `covers` was stored at the relay.
    pub fn snapshot_uploaded(&mut self, space: Space, covers: u64) -> Result<SyncState> {
        self.update_state(
            space,
            "UPDATE sync_state SET snapshot_covers = MAX(snapshot_covers, ?2) WHERE space = ?1",
            i(covers),
        )
    }

    /// Records that a chunk at `relay_seq` was refused and needs healing; `real` when its
    /// device's chunks were merged here before.
    pub fn mark_refused(&mut self, space: Space, relay_seq: u64, real: bool) -> Result<SyncState> {
        let tx = self.conn.transaction()?;
        Self::ensure_state(&tx, space)?;
        tx.execute(
            "UPDATE sync_state SET heal_after = MAX(heal_after, ?2), \
             heal_real = MAX(heal_real, ?3) WHERE space = ?1",
            params![space.as_str(), i(relay_seq), i64::from(real)],
        )?;
        tx.commit()?;
        self.sync_state(space)
    }

    /// Gives up waiting for a snapshot to heal what was refused: the refused chunks count as
    /// consumed, and this device may snapshot again.
    pub fn give_up_healing(&mut self, space: Space) -> Result<SyncState> {
        self.update_state(
            space,
            "UPDATE sync_state SET heal_after = ?2, heal_real = 0 WHERE space = ?1",
            0,
        )
    }

    /// Records a completed sync round.
    pub fn mark_synced(&mut self, space: Space, now_ms: i64) -> Result<SyncState> {
        self.update_state(
            space,
            "UPDATE sync_state SET last_synced = ?2 WHERE space = ?1",
            now_ms,
        )
    }

    /// Runs one `UPDATE sync_state …` (`?1` the space, `?2` the value) on the space's row,
    /// creating the row first, and returns the state it left.
    fn update_state(&mut self, space: Space, sql: &str, value: i64) -> Result<SyncState> {
        let tx = self.conn.transaction()?;
        Self::ensure_state(&tx, space)?;
        tx.execute(sql, params![space.as_str(), value])?;
        tx.commit()?;
        self.sync_state(space)
    }
}
