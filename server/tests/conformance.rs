//! The storage conformance suite run against the SQLite backend.

use std::sync::Arc;

use mend_relay::{
    config::GroupCommit,
    live::LocalHub,
    storage::{conformance::Backend, sqlite::SqliteStorage},
};

async fn open_sqlite(hub: LocalHub) -> Backend {
    let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("tempdir: {e}"));
    let storage = SqliteStorage::open(dir.path(), Arc::new(hub.clone()), GroupCommit::default())
        .unwrap_or_else(|e| panic!("open: {e}"));
    Backend::new(Arc::new(storage), hub, dir)
}

mend_relay::storage_conformance_tests!(open_sqlite);

/// Specific to a durable backend: what was acknowledged survives a reopen, and sequences
/// continue where they stopped.
#[tokio::test]
async fn sqlite_state_survives_reopen() {
    use mend_protocol::{DeviceId, Push, SpaceId};
    use mend_relay::storage::{PullRequest, Storage};

    let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("tempdir: {e}"));
    let space = SpaceId([1; 32]);
    let push = |seq: u64| Push {
        device_id: DeviceId([2; 16]),
        device_seq: seq,
        payload: vec![seq as u8; 8],
    };
    let open = || {
        SqliteStorage::open(
            dir.path(),
            Arc::new(LocalHub::default()),
            GroupCommit::default(),
        )
        .unwrap_or_else(|e| panic!("open: {e}"))
    };
    let first = open();
    first
        .create_space(space, [7; 32])
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    for seq in 1..=3 {
        first
            .push(space, push(seq), u64::MAX)
            .await
            .unwrap_or_else(|e| panic!("{e}"));
    }
    first.close().await.unwrap_or_else(|e| panic!("{e}"));
    drop(first);

    let second = open();
    assert_eq!(second.token_hash(space).await.ok().flatten(), Some([7; 32]));
    let replay = second
        .push(space, push(2), u64::MAX)
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    assert!(replay.duplicate && replay.relay_seq == 2);
    let next = second
        .push(space, push(4), u64::MAX)
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(next.relay_seq, 4);
    let request = PullRequest {
        after: 0,
        limit: 100,
        max_bytes: usize::MAX,
        exclude_device: None,
        include_pruned: false,
        rollups: false,
    };
    let page = second
        .pull(space, request)
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(page.chunks.len(), 4);
}

/// Chunks stored before payload hashes were kept (a NULL hash) are compared by their payload
/// while it is held; once pruned they cannot be compared and a replay counts as a duplicate.
#[tokio::test]
async fn sqlite_rows_without_a_hash_fall_back_to_the_payload() {
    use mend_protocol::{DeviceId, Push, Snapshot, SpaceId};
    use mend_relay::storage::{Storage, StorageError, sqlite::DB_FILE};

    let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("tempdir: {e}"));
    let space = SpaceId([1; 32]);
    let push = |seq: u64, byte: u8| Push {
        device_id: DeviceId([2; 16]),
        device_seq: seq,
        payload: vec![byte; 8],
    };
    let open = || {
        SqliteStorage::open(
            dir.path(),
            Arc::new(LocalHub::default()),
            GroupCommit::default(),
        )
        .unwrap_or_else(|e| panic!("open: {e}"))
    };
    let first = open();
    first
        .create_space(space, [7; 32])
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    for seq in 1..=2 {
        first
            .push(space, push(seq, seq as u8), u64::MAX)
            .await
            .unwrap_or_else(|e| panic!("{e}"));
    }
    first.close().await.unwrap_or_else(|e| panic!("{e}"));
    drop(first);
    let conn = rusqlite::Connection::open(dir.path().join(DB_FILE))
        .unwrap_or_else(|e| panic!("sqlite: {e}"));
    conn.execute("UPDATE chunks SET payload_hash = NULL", [])
        .unwrap_or_else(|e| panic!("sqlite: {e}"));
    drop(conn);

    let second = open();
    let same = second.push(space, push(1, 1), u64::MAX).await;
    assert!(matches!(same, Ok(p) if p.duplicate && p.relay_seq == 1));
    let other = second.push(space, push(1, 9), u64::MAX).await;
    assert!(matches!(
        other,
        Err(StorageError::SeqConflict { relay_seq: 1 })
    ));
    let snapshot = Snapshot {
        covers: 2,
        payload: vec![0; 4],
    };
    second
        .put_snapshot(space, snapshot, u64::MAX, std::time::Duration::ZERO)
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    let pruned = second.push(space, push(2, 9), u64::MAX).await;
    assert!(matches!(pruned, Ok(p) if p.duplicate && p.relay_seq == 2));
}

/// An erase waits for its own space's rows alone: what another erase left (here, rows a stop
/// cut short, listed for the sweep) is not its work, so a small erase is never held behind a
/// large one. Its own rows are gone when it answers.
#[tokio::test]
async fn an_erase_waits_for_its_own_rows_alone() {
    use mend_protocol::{DeviceId, Push, SpaceId};
    use mend_relay::storage::{EraseReason, Storage, sqlite::DB_FILE};

    let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("tempdir: {e}"));
    let storage = SqliteStorage::open(
        dir.path(),
        Arc::new(LocalHub::default()),
        GroupCommit::default(),
    )
    .unwrap_or_else(|e| panic!("open: {e}"));
    let small = SpaceId([3; 32]);
    storage
        .create_space(small, [3; 32])
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    for seq in 1..=3 {
        let push = Push {
            device_id: DeviceId([2; 16]),
            device_seq: seq,
            payload: vec![9; 64],
        };
        storage
            .push(small, push, u64::MAX)
            .await
            .unwrap_or_else(|e| panic!("{e}"));
    }
    let db = rusqlite::Connection::open(dir.path().join(DB_FILE)).unwrap_or_else(|e| panic!("{e}"));
    db.busy_timeout(std::time::Duration::from_secs(10))
        .unwrap_or_else(|e| panic!("{e}"));
    // Another erased space's rows, still listed: internal id 0, below every real one.
    db.execute_batch(
        "INSERT INTO erasing (space) VALUES (0);
         WITH RECURSIVE g(n) AS (SELECT 1 UNION ALL SELECT n + 1 FROM g WHERE n < 5000)
         INSERT INTO chunks (space, seq, device_id, device_seq)
         SELECT 0, n, x'02020202020202020202020202020202', n FROM g;",
    )
    .unwrap_or_else(|e| panic!("{e}"));
    let count = |space: i64| -> i64 {
        db.query_row(
            "SELECT COUNT(*) FROM chunks WHERE space = ?1",
            [space],
            |r| r.get(0),
        )
        .unwrap_or_else(|e| panic!("{e}"))
    };
    let small_id: i64 = db
        .query_row(
            "SELECT id FROM spaces WHERE space_id = ?1",
            [&small.0[..]],
            |r| r.get(0),
        )
        .unwrap_or_else(|e| panic!("{e}"));
    assert!(
        storage
            .erase(small, EraseReason::Erased)
            .await
            .unwrap_or_else(|e| panic!("erase: {e}"))
    );
    assert_eq!(count(small_id), 0, "the erase answered with its rows left");
    assert_eq!(count(0), 5000, "the erase worked through another's rows");
    storage.close().await.unwrap_or_else(|e| panic!("{e}"));
}

/// A store on `dir` with the default settings.
fn open_in(dir: &std::path::Path) -> Result<SqliteStorage, mend_relay::storage::StorageError> {
    SqliteStorage::open(dir, Arc::new(LocalHub::default()), GroupCommit::default())
}

/// One data directory, one relay: a second store opened on it is refused (two writers would
/// each cache the counters and write them back over the other's), and once the first closes,
/// the directory opens again.
#[tokio::test]
async fn a_second_store_on_one_data_directory_is_refused() {
    use mend_relay::storage::{Storage, StorageError};

    let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("tempdir: {e}"));
    let open = || open_in(dir.path());
    let first = open().unwrap_or_else(|e| panic!("open: {e}"));
    match open() {
        Err(error @ StorageError::InUse(_)) => {
            let message = error.to_string();
            assert!(message.contains("in use by another relay"), "{message}");
            assert!(
                message.contains(&dir.path().display().to_string()),
                "{message}"
            );
        }
        Err(other) => panic!("refused for another reason: {other}"),
        Ok(_) => panic!("a second store opened the same directory"),
    }
    first.close().await.unwrap_or_else(|e| panic!("{e}"));
    let again = open().unwrap_or_else(|e| panic!("reopen after close: {e}"));
    again.close().await.unwrap_or_else(|e| panic!("{e}"));
    drop(again);
    drop(first);
    open().unwrap_or_else(|e| panic!("reopen after drop: {e}"));
}

/// Counters that no longer match the rows (here set wrong by hand, as a bug or an older
/// instance could leave them) are found by the audit and set right by its repair, for good:
/// the relay-wide limit then counts what is really stored.
#[tokio::test]
async fn an_audit_finds_counters_off_and_repairs_them() {
    use mend_protocol::{DeviceId, Push, Snapshot, SpaceId};
    use mend_relay::storage::{Audit, Storage, StorageError, sqlite::DB_FILE};

    let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("tempdir: {e}"));
    let open = || open_in(dir.path()).unwrap_or_else(|e| panic!("open: {e}"));
    let store = open();
    for n in 1..=3u8 {
        let space = SpaceId([n; 32]);
        store
            .create_space(space, [n; 32])
            .await
            .unwrap_or_else(|e| panic!("{e}"));
        for seq in 1..=4 {
            let push = Push {
                device_id: DeviceId([2; 16]),
                device_seq: seq,
                payload: vec![n; 100],
            };
            store
                .push(space, push, u64::MAX)
                .await
                .unwrap_or_else(|e| panic!("{e}"));
        }
    }
    let snapshot = Snapshot {
        covers: 2,
        payload: vec![0; 10],
    };
    store
        .put_snapshot(
            SpaceId([1; 32]),
            snapshot,
            u64::MAX,
            std::time::Duration::from_secs(3600),
        )
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    let clean = store.audit(false).await.unwrap_or_else(|e| panic!("{e}"));
    assert!(clean.clean() && clean.spaces == 3, "{clean:?}");
    let total = clean.actual_total;
    store.close().await.unwrap_or_else(|e| panic!("{e}"));
    drop(store);

    // Space 1 forgets its pruned bytes and a row, space 2 counts 5000 bytes it does not hold,
    // and the total is 100 KB high.
    let db = rusqlite::Connection::open(dir.path().join(DB_FILE)).unwrap_or_else(|e| panic!("{e}"));
    db.execute_batch(
        "UPDATE spaces SET pruned_bytes = 0, rows = rows - 1 WHERE space_id = x'0101010101010101010101010101010101010101010101010101010101010101';
         UPDATE spaces SET bytes_used = bytes_used + 5000 WHERE space_id = x'0202020202020202020202020202020202020202020202020202020202020202';
         UPDATE relay_usage SET bytes_used = bytes_used + 100000;",
    )
    .unwrap_or_else(|e| panic!("{e}"));
    drop(db);

    let store = open();
    let found = store.audit(false).await.unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(
        found,
        Audit {
            spaces: 3,
            spaces_off: 2,
            counted_total: total + 100_000,
            actual_total: total,
            repaired: false,
        }
    );
    // Checking alone changed nothing: the relay still counts the wrong total.
    assert_eq!(store.total_bytes().await.ok(), Some(total + 100_000));
    // So a limit just above what is stored refuses a push it should take.
    store.set_total_quota(total + 1000);
    let push = |seq| Push {
        device_id: DeviceId([2; 16]),
        device_seq: seq,
        payload: vec![7; 100],
    };
    assert!(matches!(
        store.push(SpaceId([2; 32]), push(5), u64::MAX).await,
        Err(StorageError::RelayFull { .. })
    ));
    let repaired = store.audit(true).await.unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(
        repaired,
        Audit {
            repaired: true,
            ..found
        }
    );
    store
        .push(SpaceId([2; 32]), push(5), u64::MAX)
        .await
        .unwrap_or_else(|e| panic!("after the repair: {e}"));
    let after = store.audit(false).await.unwrap_or_else(|e| panic!("{e}"));
    assert!(after.clean(), "{after:?}");
    store.close().await.unwrap_or_else(|e| panic!("{e}"));
    drop(store);
    // The repair was committed.
    let store = open();
    let reopened = store.audit(false).await.unwrap_or_else(|e| panic!("{e}"));
    assert!(reopened.clean(), "{reopened:?}");
}
