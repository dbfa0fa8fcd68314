//! Numbered schema migrations tracked by `PRAGMA user_version`.
//!
//! Each migration runs in its own transaction with the version bump, so a crash leaves the
//! database at one version or the next, never between.

use rusqlite::Connection;

use crate::error::{Error, Result};

/// Every migration, in order; entry `i` takes the database from version `i` to `i + 1`.
pub(crate) const MIGRATIONS: &[&str] = &[
    include_str!("sql/001_journal.sql"),
    include_str!("sql/002_sync.sql"),
    include_str!("sql/003_views.sql"),
    include_str!("sql/004_timeline.sql"),
    include_str!("sql/005_sync_problems.sql"),
    include_str!("sql/006_cursor_mark.sql"),
    include_str!("sql/007_heal_real.sql"),
    include_str!("sql/008_signed_changes.sql"),
    include_str!("sql/009_rollups.sql"),
];

/// The schema version this build creates.
pub const LATEST: u32 = MIGRATIONS.len() as u32;

/// Brings `conn` up to [`LATEST`], or refuses a database from a newer build.
pub(crate) fn migrate(conn: &mut Connection) -> Result<()> {
    migrate_to(conn, LATEST)
}

/// Brings `conn` up to `target` (tests build old versions with this).
pub fn migrate_to(conn: &mut Connection, target: u32) -> Result<()> {
    let current: u32 = conn.pragma_query_value(None, "user_version", |r| r.get(0))?;
    if current > LATEST {
        return Err(Error::TooNew {
            found: current,
            supported: LATEST,
        });
    }
    for version in current..target.min(LATEST) {
        let tx = conn.transaction()?;
        tx.execute_batch(MIGRATIONS[version as usize])?;
        tx.pragma_update(None, "user_version", version + 1)?;
        tx.commit()?;
    }
    Ok(())
}
