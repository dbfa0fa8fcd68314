//! Opening the database: pragmas and numbered migrations tracked by `PRAGMA user_version`.
//!
//! Durability is not negotiable here: WAL with `synchronous=FULL`, so a commit that returned has
//! reached the disk. Throughput comes from group commit in the writer, not from weaker syncs.

use std::{path::Path, time::Duration};

use rusqlite::{Connection, OpenFlags};

/// Migrations in order; migration `i` moves the schema from version `i` to `i + 1`.
const MIGRATIONS: &[&str] = &[
    include_str!("migrations/001_initial.sql"),
    include_str!("migrations/002_erased.sql"),
    include_str!("migrations/003_payload_hash.sql"),
    include_str!("migrations/004_prune_grace.sql"),
    include_str!("migrations/005_total_bytes.sql"),
    include_str!("migrations/006_held_index.sql"),
    include_str!("migrations/007_recount.sql"),
    include_str!("migrations/008_rollups.sql"),
    include_str!("migrations/009_pairings.sql"),
    include_str!("migrations/010_device_seen.sql"),
    include_str!("migrations/011_tombstone_reason.sql"),
    include_str!("migrations/012_successor.sql"),
    include_str!("migrations/013_erasing.sql"),
    include_str!("migrations/014_row_cost.sql"),
    include_str!("migrations/015_held_by_space.sql"),
];

/// The schema version this code writes.
pub(crate) const SCHEMA_VERSION: i64 = MIGRATIONS.len() as i64;

/// Page cache of the writer connection, in KiB (negative `cache_size` means KiB).
const WRITER_CACHE_KIB: i64 = 32 * 1024;
/// The WAL is truncated back to this size after a checkpoint resets it.
const WAL_SIZE_LIMIT: i64 = 64 << 20;

/// Opens the writer connection and brings the schema up to date. `autocheckpoint_pages` is
/// the WAL size at which the writer checkpoints itself (so the WAL can restart); the background
/// checkpointer copies most frames before then, so a high value keeps the writer's own
/// checkpoints, and their database fsync, rare.
pub(crate) fn open_writer(path: &Path, autocheckpoint_pages: u32) -> rusqlite::Result<Connection> {
    let mut conn = Connection::open(path)?;
    conn.busy_timeout(Duration::from_secs(5))?;
    conn.pragma_update(None, "journal_mode", "WAL")?;
    conn.pragma_update(None, "synchronous", "FULL")?;
    conn.pragma_update(None, "cache_size", -WRITER_CACHE_KIB)?;
    conn.pragma_update(None, "journal_size_limit", WAL_SIZE_LIMIT)?;
    conn.pragma_update(None, "wal_autocheckpoint", autocheckpoint_pages)?;
    // Deleted rows are zeroed, not left in free pages: an erased or retired space's
    // ciphertext leaves the file (the WAL is truncated after each erase, see the writer).
    conn.pragma_update(None, "secure_delete", "ON")?;
    migrate(&mut conn)?;
    Ok(conn)
}

/// Opens the connection of the background checkpointer.
pub(crate) fn open_checkpointer(path: &Path) -> rusqlite::Result<Connection> {
    let conn = Connection::open(path)?;
    conn.busy_timeout(Duration::from_secs(5))?;
    conn.pragma_update(None, "synchronous", "FULL")?;
    Ok(conn)
}

/// Opens a read-only connection.
pub(crate) fn open_reader(path: &Path) -> rusqlite::Result<Connection> {
    let conn = Connection::open_with_flags(
        path,
        OpenFlags::SQLITE_OPEN_READ_ONLY | OpenFlags::SQLITE_OPEN_NO_MUTEX,
    )?;
    conn.busy_timeout(Duration::from_secs(5))?;
    Ok(conn)
}

fn migrate(conn: &mut Connection) -> rusqlite::Result<()> {
    let version: i64 = conn.pragma_query_value(None, "user_version", |row| row.get(0))?;
    if version > SCHEMA_VERSION {
        return Err(rusqlite::Error::SqliteFailure(
            rusqlite::ffi::Error::new(rusqlite::ffi::SQLITE_MISUSE),
            Some(format!(
                "database schema version {version} is newer than this relay ({SCHEMA_VERSION})"
            )),
        ));
    }
    for (index, sql) in (1..).zip(MIGRATIONS).skip(version.max(0) as usize) {
        let tx = conn.transaction()?;
        tx.execute_batch(sql)?;
        tx.pragma_update(None, "user_version", index)?;
        tx.commit()?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn migrates_fresh_database_and_is_idempotent() -> rusqlite::Result<()> {
        let dir =
            tempfile::tempdir().map_err(|e| rusqlite::Error::ToSqlConversionFailure(e.into()))?;
        let path = dir.path().join("relay.sqlite3");
        drop(open_writer(&path, 1000)?);
        let conn = open_writer(&path, 1000)?;
        let version: i64 = conn.pragma_query_value(None, "user_version", |row| row.get(0))?;
        assert_eq!(version, SCHEMA_VERSION);
        let mode: String = conn.pragma_query_value(None, "journal_mode", |row| row.get(0))?;
        assert_eq!(mode, "wal");
        let sync: i64 = conn.pragma_query_value(None, "synchronous", |row| row.get(0))?;
        assert_eq!(sync, 2, "synchronous must be FULL");
        Ok(())
    }

    /// A database from before the relay-wide total starts with the bytes its spaces hold.
    #[test]
    fn total_bytes_start_from_the_spaces_of_an_older_database() -> rusqlite::Result<()> {
        let dir =
            tempfile::tempdir().map_err(|e| rusqlite::Error::ToSqlConversionFailure(e.into()))?;
        let path = dir.path().join("relay.sqlite3");
        let conn = open_writer(&path, 1000)?;
        for (n, bytes) in [(1u8, 300i64), (2, 45)] {
            conn.execute(
                "INSERT INTO spaces (space_id, token_hash, next_seq, bytes_used, covers, created_at)
                 VALUES (?1, ?2, 2, ?3, 0, 0)",
                rusqlite::params![vec![n; 32], vec![0u8; 32], bytes],
            )?;
            conn.execute(
                "INSERT INTO chunks (space, seq, device_id, device_seq, payload)
                 VALUES (?1, 1, ?2, 1, zeroblob(?3))",
                rusqlite::params![i64::from(n), vec![0u8; 16], bytes],
            )?;
        }
        // Back to the schema before 005_total_bytes.sql.
        conn.execute_batch(
            "DROP TABLE relay_usage; DROP INDEX chunks_held; DROP INDEX chunks_held_by_space;
             DROP TABLE rollups;
             ALTER TABLE chunks DROP COLUMN rollup_seq;
             DROP TABLE pairings; DROP TABLE pairing_messages; DROP TABLE device_seen;
             ALTER TABLE erased DROP COLUMN reason; ALTER TABLE spaces DROP COLUMN successor;
             ALTER TABLE spaces DROP COLUMN rows; ALTER TABLE spaces DROP COLUMN pruned_bytes;
             DROP TABLE erasing",
        )?;
        conn.pragma_update(None, "user_version", 4)?;
        drop(conn);
        let conn = open_writer(&path, 1000)?;
        let total: i64 = conn.query_row(
            "SELECT bytes_used FROM relay_usage WHERE id = 1",
            [],
            |row| row.get(0),
        )?;
        // The payloads, and then each space itself and its one chunk row (`014_row_cost.sql`).
        let (row, space) = (
            crate::storage::ROW_BYTES as i64,
            crate::storage::SPACE_BYTES as i64,
        );
        assert_eq!(total, 345 + 2 * row + 2 * space);
        Ok(())
    }

    #[test]
    fn refuses_a_newer_schema() -> rusqlite::Result<()> {
        let dir =
            tempfile::tempdir().map_err(|e| rusqlite::Error::ToSqlConversionFailure(e.into()))?;
        let path = dir.path().join("relay.sqlite3");
        let conn = open_writer(&path, 1000)?;
        conn.pragma_update(None, "user_version", SCHEMA_VERSION + 1)?;
        drop(conn);
        assert!(open_writer(&path, 1000).is_err());
        Ok(())
    }
}
