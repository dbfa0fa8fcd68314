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
