//! A relay upgraded from before pruned chunks counted until deleted: the counters are recounted
//! from the rows, so the chunks it had already pruned are not given back a second time when
//! the sweep deletes them, on either backend. And a counter that is short anyway never takes
//! the relay's total below zero.
#![allow(clippy::unwrap_used)]

use std::{sync::Arc, time::Duration};

use mend_protocol::{DeviceId, Push, Snapshot, SpaceId};
use mend_relay::{
    config::{GroupCommit, Postgres},
    live::LocalHub,
    storage::{
        ROW_BYTES, SPACE_BYTES, Storage, Swept,
        postgres::PostgresStorage,
        sqlite::{DB_FILE, SqliteStorage},
        test_db::TestDatabase,
    },
};

const GRACE: Duration = Duration::from_secs(3 * 24 * 3600);
const SPACE: SpaceId = SpaceId([1; 32]);

fn four_days_ago() -> i64 {
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs());
    i64::try_from(now.saturating_sub(4 * 24 * 3600)).unwrap()
}

/// One space with two 100-byte chunks and a 10-byte snapshot covering none of them.
async fn fill(storage: &dyn Storage) {
    storage.create_space(SPACE, [2; 32]).await.unwrap();
    for seq in 1..=2 {
        let push = Push {
            device_id: DeviceId([3; 16]),
            device_seq: seq,
            payload: vec![seq as u8; 100],
        };
        storage.push(SPACE, push, u64::MAX).await.unwrap();
    }
    let snapshot = Snapshot {
        covers: 0,
        payload: vec![9; 10],
    };
    storage
        .put_snapshot(SPACE, snapshot, u64::MAX, GRACE)
        .await
        .unwrap();
}

/// An SQLite relay that pruned chunk 1 four days before its upgrade counted it no more (110
/// bytes: chunk 2 and the snapshot). Upgraded and swept, it holds exactly those 110 bytes,
/// beside the rows it keeps.
#[tokio::test]
async fn sqlite_upgrade_recounts_chunks_pruned_before_it() {
    let dir = tempfile::tempdir().unwrap();
    let open = || {
        SqliteStorage::open(
            dir.path(),
            Arc::new(LocalHub::default()),
            GroupCommit::default(),
        )
        .unwrap()
    };
    let storage = open();
    fill(&storage).await;
    storage.close().await.unwrap();
    drop(storage);
    // Back to the schema and the counters of the relay before the change.
    let db = rusqlite::Connection::open(dir.path().join(DB_FILE)).unwrap();
    db.execute_batch(&format!(
        "DROP INDEX chunks_held;
         DROP INDEX chunks_held_by_space;
         UPDATE chunks SET pruned_at = {} WHERE seq = 1;
         UPDATE spaces SET covers = 1, bytes_used = 110;
         UPDATE snapshots SET covers = 1;
         UPDATE relay_usage SET bytes_used = 110;
         DROP TABLE rollups;
         ALTER TABLE chunks DROP COLUMN rollup_seq;
         DROP TABLE pairings;
         DROP TABLE pairing_messages;
         DROP TABLE device_seen;
         ALTER TABLE erased DROP COLUMN reason;
         ALTER TABLE spaces DROP COLUMN successor;
         ALTER TABLE spaces DROP COLUMN rows;
         ALTER TABLE spaces DROP COLUMN pruned_bytes;
         DROP TABLE erasing;
         PRAGMA user_version = 5;",
        four_days_ago()
    ))
    .unwrap();
    drop(db);

    let storage = open();
    let swept = storage.sweep_pruned(GRACE, 1000, u64::MAX).await.unwrap();
    assert_eq!(
        swept,
        Swept {
            chunks: 1,
            bytes: 100
        }
    );
    // Those 110 bytes, the two chunk rows and the space, counted since `014_row_cost.sql`.
    assert_eq!(
        storage.total_bytes().await.unwrap(),
        110 + 2 * ROW_BYTES + SPACE_BYTES
    );
    storage.close().await.unwrap();
    drop(storage);
    let db = rusqlite::Connection::open(dir.path().join(DB_FILE)).unwrap();
    let used: i64 = db
        .query_row("SELECT bytes_used FROM spaces", [], |row| row.get(0))
        .unwrap();
    assert_eq!(used, 110);
}

async fn client(db: &TestDatabase) -> tokio_postgres::Client {
    let (client, connection) = db
        .url()
        .parse::<tokio_postgres::Config>()
        .unwrap()
        .connect(tokio_postgres::NoTls)
        .await
        .unwrap();
    tokio::spawn(connection);
    client
}

async fn counters(client: &tokio_postgres::Client) -> (i64, i64) {
    let space: i64 = client
        .query_one("SELECT bytes_used FROM spaces", &[])
        .await
        .unwrap()
        .get(0);
    let total: i64 = client
        .query_one("SELECT SUM(bytes_used)::bigint FROM relay_usage", &[])
        .await
        .unwrap()
        .get(0);
    (space, total)
}

/// The same upgrade on PostgreSQL; then a space whose counter is short (50 bytes for a
/// 100-byte chunk) is swept: the space stops at zero and so does the relay's total, never
/// below.
#[tokio::test]
async fn postgres_upgrade_recounts_and_the_total_never_goes_below_zero() {
    let db = TestDatabase::create().await.unwrap();
    let open = || async {
        PostgresStorage::open(db.url(), Postgres::default(), Arc::new(LocalHub::default()))
            .await
            .unwrap()
    };
    let storage = open().await;
    fill(&storage).await;
    storage.close().await.unwrap();
    drop(storage);
    let sql = client(&db).await;
    sql.batch_execute(&format!(
        "DROP INDEX chunks_held;
         DROP INDEX chunks_held_by_space;
         UPDATE chunks SET pruned_at = {} WHERE seq = 1;
         UPDATE spaces SET covers = 1, bytes_used = 110;
         UPDATE snapshots SET covers = 1;
         UPDATE relay_usage SET bytes_used = CASE WHEN shard = 0 THEN 110 ELSE 0 END;
         DROP TABLE rollups;
         ALTER TABLE chunks DROP COLUMN rollup_seq;
         DROP TABLE pairings;
         DROP TABLE pairing_messages;
         DROP TABLE device_seen;
         ALTER TABLE erased DROP COLUMN reason;
         ALTER TABLE spaces DROP COLUMN successor;
         ALTER TABLE spaces DROP COLUMN rows;
         ALTER TABLE spaces DROP COLUMN pruned_bytes;
         DROP TABLE erasing;
         UPDATE mend_schema SET version = 4;",
        four_days_ago()
    ))
    .await
    .unwrap();

    let storage = open().await;
    let swept = storage.sweep_pruned(GRACE, 1000, u64::MAX).await.unwrap();
    assert_eq!(
        swept,
        Swept {
            chunks: 1,
            bytes: 100
        }
    );
    let held = 110 + 2 * ROW_BYTES as i64 + SPACE_BYTES as i64;
    assert_eq!(counters(&sql).await, (110, held));

    // Both counters short: the space's by 50 payload bytes, the total by those and the rows.
    sql.batch_execute(&format!(
        "UPDATE chunks SET pruned_at = {} WHERE seq = 2;
         UPDATE spaces SET covers = 2, bytes_used = 50;
         UPDATE relay_usage SET bytes_used = CASE WHEN shard = 0 THEN 50 ELSE 0 END;",
        four_days_ago()
    ))
    .await
    .unwrap();
    let swept = storage.sweep_pruned(GRACE, 1000, u64::MAX).await.unwrap();
    assert_eq!(
        swept,
        Swept {
            chunks: 1,
            bytes: 100
        }
    );
    assert_eq!(counters(&sql).await, (0, 0));
    storage.close().await.unwrap();
}
