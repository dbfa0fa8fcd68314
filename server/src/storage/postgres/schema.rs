//! Numbered migrations, applied at start under an advisory lock.
//!
//! Several instances may start at once against one database. Each takes the same session-level
//! advisory lock before it reads the schema version, so exactly one applies a migration while
//! the others wait and then find nothing left to do. A database whose schema is newer than this
//! binary stops the instance: an older relay must not write tables it does not understand.

use tokio_postgres::Client;

use super::PgError;

/// Migrations in order; migration `i` moves the schema from version `i` to `i + 1`.
const MIGRATIONS: &[&str] = &[
    include_str!("migrations/001_initial.sql"),
    include_str!("migrations/002_payload_hash.sql"),
    include_str!("migrations/003_prune_grace.sql"),
    include_str!("migrations/004_total_bytes.sql"),
    include_str!("migrations/005_held_index.sql"),
    include_str!("migrations/006_recount.sql"),
    include_str!("migrations/007_rollups.sql"),
    include_str!("migrations/008_pairings.sql"),
    include_str!("migrations/009_device_seen.sql"),
    include_str!("migrations/010_tombstone_reason.sql"),
    include_str!("migrations/011_successor.sql"),
    include_str!("migrations/012_erasing.sql"),
    include_str!("migrations/013_row_cost.sql"),
    include_str!("migrations/014_held_by_space.sql"),
];

/// The schema version this code writes.
pub const SCHEMA_VERSION: i32 = MIGRATIONS.len() as i32;

/// Key of the advisory lock that serialises migrations (any constant shared by all instances).
pub const MIGRATION_LOCK: i64 = 0x6d65_6e64_5f6d_6967; // "mend_mig"

/// Brings the schema up to date, or fails if the database is newer than this binary.
pub(crate) async fn migrate(client: &mut Client) -> Result<(), PgError> {
    // Not under the relay's statement timeout: waiting for another instance's migration, or
    // a migration of a large database (an index on every chunk), takes what it takes, and a
    // cut one would be cut again at every start.
    client
        .batch_execute("SET statement_timeout = 0; SET lock_timeout = 0")
        .await?;
    client
        .execute("SELECT pg_advisory_lock($1)", &[&MIGRATION_LOCK])
        .await?;
    let result = migrate_locked(client).await;
    // The lock is per session; if unlocking fails the connection is closed and the lock with it.
    let unlocked = client
        .execute("SELECT pg_advisory_unlock($1)", &[&MIGRATION_LOCK])
        .await;
    result?;
    unlocked?;
    Ok(())
}

async fn migrate_locked(client: &mut Client) -> Result<(), PgError> {
    client
        .batch_execute(
            "CREATE TABLE IF NOT EXISTS mend_schema (
                 only_row boolean PRIMARY KEY DEFAULT true CHECK (only_row),
                 version integer NOT NULL
             );
             INSERT INTO mend_schema (version) VALUES (0) ON CONFLICT DO NOTHING;",
        )
        .await?;
    let version: i32 = client
        .query_one("SELECT version FROM mend_schema", &[])
        .await?
        .try_get(0)?;
    if version > SCHEMA_VERSION {
        return Err(PgError::SchemaTooNew {
            found: version,
            supported: SCHEMA_VERSION,
        });
    }
    for (index, sql) in (1..).zip(MIGRATIONS).skip(version.max(0) as usize) {
        let tx = client.transaction().await?;
        tx.batch_execute(sql).await?;
        tx.execute("UPDATE mend_schema SET version = $1", &[&index])
            .await?;
        tx.commit().await?;
        tracing::info!(version = index, "database migrated");
    }
    Ok(())
}

/// The schema version recorded in the database (0 if it has none).
pub(crate) async fn version(client: &Client) -> Result<i32, PgError> {
    match client
        .query_one("SELECT version FROM mend_schema", &[])
        .await
    {
        Ok(row) => Ok(row.try_get(0)?),
        Err(error) if error.code() == Some(&tokio_postgres::error::SqlState::UNDEFINED_TABLE) => {
            Ok(0)
        }
        Err(error) => Err(error.into()),
    }
}
