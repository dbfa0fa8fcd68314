//! The storage conformance suite run against PostgreSQL, each test in a database of its own,
//! plus what only a shared database has to show: concurrent migrations, a schema newer than the
//! binary, and two instances writing to one space at once.

use std::{
    collections::HashSet,
    net::SocketAddr,
    sync::{
        Arc,
        atomic::{AtomicBool, AtomicU64, Ordering},
    },
    time::Duration,
};

use mend_protocol::{DeviceId, Push, SpaceId};
use mend_relay::{
    config::Postgres,
    live::{LiveEvent, LiveFeed, LocalHub},
    storage::{
        EraseReason, PullRequest, ROW_BYTES, SPACE_BYTES, Storage, StorageError, TOMBSTONE_BYTES,
        conformance::Backend,
        postgres::{MIGRATION_LOCK, PgError, PostgresStorage, SCHEMA_VERSION},
        test_db::TestDatabase,
    },
};
use tokio::{
    io::{AsyncReadExt, AsyncWriteExt},
    net::{TcpListener, TcpStream},
    task::JoinSet,
};

async fn database() -> TestDatabase {
    TestDatabase::create()
        .await
        .unwrap_or_else(|e| panic!("creating a test database: {e}"))
}

async fn open_on(db: &TestDatabase, hub: &LocalHub) -> PostgresStorage {
    PostgresStorage::open(db.url(), Postgres::default(), Arc::new(hub.clone()))
        .await
        .unwrap_or_else(|e| panic!("open: {e}"))
}

async fn open_postgres(hub: LocalHub) -> Backend {
    let db = database().await;
    let storage = open_on(&db, &hub).await;
    // The store is declared after the database so it closes first.
    Backend::new(Arc::new(storage), hub, db)
}

mend_relay::storage_conformance_tests!(open_postgres);

fn all() -> PullRequest {
    PullRequest {
        after: 0,
        limit: 100_000,
        max_bytes: usize::MAX,
        exclude_device: None,
        include_pruned: false,
        rollups: false,
    }
}

/// Instances starting at once on an empty database: one migrates, all open.
#[tokio::test]
async fn concurrent_starts_migrate_once() {
    let db = database().await;
    let opens = (0..4).map(|_| {
        let url = db.url().to_owned();
        tokio::spawn(async move {
            PostgresStorage::open(&url, Postgres::default(), Arc::new(LocalHub::default())).await
        })
    });
    let mut stores = Vec::new();
    for open in opens {
        stores.push(
            open.await
                .unwrap_or_else(|e| panic!("{e}"))
                .unwrap_or_else(|e| panic!("open: {e}")),
        );
    }
    assert_eq!(
        PostgresStorage::schema_version(db.url()).await.ok(),
        Some(SCHEMA_VERSION)
    );
    for store in stores {
        store.close().await.unwrap_or_else(|e| panic!("{e}"));
    }
}

/// An instance starting while another migrates waits for it, however long that takes beside
/// the statement timeout (before: its wait for the migration lock was cancelled at 5 s, and a
/// migration that ran longer was cancelled at every start).
#[tokio::test]
async fn a_start_waits_for_another_migration_past_the_statement_timeout() {
    let db = database().await;
    let (client, driver) = session(&db).await;
    client
        .execute("SELECT pg_advisory_lock($1)", &[&MIGRATION_LOCK])
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    let settings = Postgres {
        statement_timeout: Duration::from_millis(300),
        ..Postgres::default()
    };
    let url = db.url().to_owned();
    let opening = tokio::spawn(async move {
        PostgresStorage::open(&url, settings, Arc::new(LocalHub::default())).await
    });
    // The "other instance" migrates for several statement timeouts.
    tokio::time::sleep(Duration::from_millis(1500)).await;
    assert!(
        !opening.is_finished(),
        "the start did not wait for the lock"
    );
    client
        .execute("SELECT pg_advisory_unlock($1)", &[&MIGRATION_LOCK])
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    drop(client);
    let _ = driver.await;
    let store = tokio::time::timeout(Duration::from_secs(30), opening)
        .await
        .unwrap_or_else(|e| panic!("{e}"))
        .unwrap_or_else(|e| panic!("{e}"))
        .unwrap_or_else(|e| panic!("open: {e}"));
    store.close().await.unwrap_or_else(|e| panic!("{e}"));
}

/// An erase touches none of the space's chunks: they go afterwards, in bounded batches of the
/// sweep. Before, one statement deleted them all inside the erase, so a space with more rows
/// than that statement could delete within the statement timeout (here: rows another session
/// holds, which the delete must wait for) was cut at every try, holding the space's lock
/// meanwhile, and could never be erased.
#[tokio::test]
async fn a_large_space_is_erased_within_the_statement_timeout() {
    let db = database().await;
    let settings = Postgres {
        statement_timeout: Duration::from_millis(300),
        ..Postgres::default()
    };
    let store = PostgresStorage::open(db.url(), settings, Arc::new(LocalHub::default()))
        .await
        .unwrap_or_else(|e| panic!("open: {e}"));
    store
        .create_space(SpaceId([5; 32]), [5; 32])
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    store
        .push(
            SpaceId([5; 32]),
            Push {
                device_id: DeviceId([1; 16]),
                device_seq: 1,
                payload: vec![1; 64],
            },
            u64::MAX,
        )
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    let (client, driver) = session(&db).await;
    // Rows as a long-lived space leaves them (pruned: no payload), made directly.
    client
        .execute(
            "INSERT INTO chunks (space, seq, device_id, device_seq)
             SELECT s.id, g + 1, '\\x02020202020202020202020202020202'::bytea, g
             FROM spaces s, generate_series(1, 20000) g WHERE s.space_id = $1",
            &[&&[5u8; 32][..]],
        )
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    // Another session holds one of the rows for longer than the statement timeout.
    let (holder, held) = session(&db).await;
    holder
        .batch_execute("BEGIN; SELECT 1 FROM chunks WHERE seq = 500 FOR UPDATE")
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    let erased = store
        .erase(SpaceId([5; 32]), EraseReason::Erased)
        .await
        .unwrap_or_else(|e| panic!("erase: {e}"));
    assert!(erased);
    holder
        .batch_execute("COMMIT")
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    drop(holder);
    let _ = held.await;
    // The sweep deletes what is left, a bounded batch at a time.
    let mut rounds = 0;
    loop {
        let rows: i64 = client
            .query_one("SELECT count(*) FROM chunks", &[])
            .await
            .unwrap_or_else(|e| panic!("{e}"))
            .get(0);
        let queued: i64 = client
            .query_one("SELECT count(*) FROM erasing", &[])
            .await
            .unwrap_or_else(|e| panic!("{e}"))
            .get(0);
        if rows == 0 && queued == 0 {
            break;
        }
        rounds += 1;
        assert!(rounds < 400, "{rows} rows left after {rounds} sweeps");
        store
            .sweep_pruned(Duration::from_secs(3600), 1000, u64::MAX)
            .await
            .unwrap_or_else(|e| panic!("sweep: {e}"));
    }
    drop(client);
    let _ = driver.await;
    store.close().await.unwrap_or_else(|e| panic!("{e}"));
}

/// A database migrated by a newer relay stops this one with a clear message.
#[tokio::test]
async fn refuses_a_newer_schema() {
    let db = database().await;
    let store = open_on(&db, &LocalHub::default()).await;
    store.close().await.unwrap_or_else(|e| panic!("{e}"));
    let (client, driver) = session(&db).await;
    client
        .execute(
            "UPDATE mend_schema SET version = $1",
            &[&(SCHEMA_VERSION + 1)],
        )
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    drop(client);
    let _ = driver.await;
    match PostgresStorage::open(db.url(), Postgres::default(), Arc::new(LocalHub::default())).await
    {
        Err(error @ PgError::SchemaTooNew { .. }) => {
            let message = error.to_string();
            assert!(message.contains("newer"), "{message}");
        }
        other => panic!("expected SchemaTooNew, got {other:?}"),
    }
}

/// Two instances pushing to one space at once, with every push sent to both: sequences are
/// gap-free, each chunk is stored once, and each instance hears the other's commits.
#[tokio::test]
async fn two_instances_share_one_space() {
    let db = database().await;
    let (hub_a, hub_b) = (LocalHub::default(), LocalHub::default());
    let a: Arc<dyn Storage> = Arc::new(open_on(&db, &hub_a).await);
    let b: Arc<dyn Storage> = Arc::new(open_on(&db, &hub_b).await);
    let space = SpaceId([7; 32]);
    let mut heard_by_b = hub_b.subscribe(&space);
    a.create_space(space, [1; 32])
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(b.token_hash(space).await.ok().flatten(), Some([1; 32]));
    let mut tasks = Vec::new();
    for i in 0..300u64 {
        for store in [&a, &b] {
            let store = store.clone();
            tasks.push(tokio::spawn(async move {
                let push = Push {
                    device_id: DeviceId([(i % 3) as u8; 16]),
                    device_seq: i / 3 + 1,
                    payload: i.to_le_bytes().to_vec(),
                };
                store.push(space, push, u64::MAX).await
            }));
        }
    }
    let mut fresh = HashSet::new();
    for task in tasks {
        let pushed = task
            .await
            .unwrap_or_else(|e| panic!("{e}"))
            .unwrap_or_else(|e| panic!("push: {e}"));
        if !pushed.duplicate {
            assert!(fresh.insert(pushed.relay_seq), "sequence given twice");
        }
    }
    assert_eq!(fresh.len(), 300);
    for store in [&a, &b] {
        let page = store
            .pull(space, all())
            .await
            .unwrap_or_else(|e| panic!("{e}"));
        let seqs: Vec<u64> = page.chunks.iter().map(|c| c.relay_seq).collect();
        assert_eq!(seqs, (1..=300).collect::<Vec<_>>());
    }
    // B hears every commit, its own as chunks and A's as heads, up to the end.
    let mut heard = 0;
    while heard < 300 {
        match tokio::time::timeout(Duration::from_secs(10), heard_by_b.recv()).await {
            Ok(Ok(LiveEvent::Chunk(chunk))) => heard = heard.max(chunk.relay_seq),
            Ok(Ok(LiveEvent::Head(head))) => heard = heard.max(head),
            Ok(Ok(_)) | Ok(Err(_)) => {}
            Err(_) => panic!("instance B heard only up to {heard}"),
        }
    }
    // An erase on A reaches B's subscribers and B's token cache.
    assert!(
        a.erase(space, EraseReason::Erased)
            .await
            .unwrap_or_else(|e| panic!("{e}"))
    );
    let erased = tokio::time::timeout(Duration::from_secs(10), async {
        loop {
            if let Ok(LiveEvent::Erased) = heard_by_b.recv().await {
                return;
            }
        }
    })
    .await;
    assert!(erased.is_ok(), "instance B never heard the erase");
    assert!(matches!(
        b.push(
            space,
            Push {
                device_id: DeviceId([9; 16]),
                device_seq: 1,
                payload: vec![1]
            },
            u64::MAX
        )
        .await,
        Err(StorageError::SpaceNotFound)
    ));
    for store in [a, b] {
        store.close().await.unwrap_or_else(|e| panic!("{e}"));
    }
}

/// Chunks stored before payload hashes were kept (a NULL hash) are compared by their payload
/// while it is held; once pruned they cannot be compared and a replay counts as a duplicate.
#[tokio::test]
async fn rows_without_a_hash_fall_back_to_the_payload() {
    use mend_protocol::Snapshot;

    let db = database().await;
    let store = open_on(&db, &LocalHub::default()).await;
    let space = SpaceId([1; 32]);
    let push = |seq: u64, byte: u8| Push {
        device_id: DeviceId([2; 16]),
        device_seq: seq,
        payload: vec![byte; 8],
    };
    store
        .create_space(space, [7; 32])
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    for seq in 1..=2 {
        store
            .push(space, push(seq, seq as u8), u64::MAX)
            .await
            .unwrap_or_else(|e| panic!("{e}"));
    }
    let (client, driver) = session(&db).await;
    client
        .execute("UPDATE chunks SET payload_hash = NULL", &[])
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    drop(client);
    let _ = driver.await;

    let same = store.push(space, push(1, 1), u64::MAX).await;
    assert!(matches!(same, Ok(p) if p.duplicate && p.relay_seq == 1));
    let other = store.push(space, push(1, 9), u64::MAX).await;
    assert!(matches!(
        other,
        Err(StorageError::SeqConflict { relay_seq: 1 })
    ));
    let snapshot = Snapshot {
        covers: 2,
        payload: vec![0; 4],
    };
    store
        .put_snapshot(space, snapshot, u64::MAX, Duration::ZERO)
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    let pruned = store.push(space, push(2, 9), u64::MAX).await;
    assert!(matches!(pruned, Ok(p) if p.duplicate && p.relay_seq == 2));
    store.close().await.unwrap_or_else(|e| panic!("{e}"));
}

/// A session of its own on the test database, and the task driving it.
async fn session(
    db: &TestDatabase,
) -> (
    tokio_postgres::Client,
    tokio::task::JoinHandle<Result<(), tokio_postgres::Error>>,
) {
    let (client, connection) = db
        .url()
        .parse::<tokio_postgres::Config>()
        .unwrap_or_else(|e| panic!("{e}"))
        .connect(tokio_postgres::NoTls)
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    (client, tokio::spawn(connection))
}

/// Runs `sql` on the test database directly.
async fn execute_on(db: &TestDatabase, sql: &str) {
    let (client, driver) = session(db).await;
    client
        .batch_execute(sql)
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    drop(client);
    let _ = driver.await;
}

/// A database from before the relay-wide total (schema 3) starts with what its spaces hold.
#[tokio::test]
async fn the_total_of_an_older_database_starts_from_its_spaces() {
    let db = database().await;
    let store = open_on(&db, &LocalHub::default()).await;
    for (n, bytes) in [(1u8, 300usize), (2, 45)] {
        let space = SpaceId([n; 32]);
        store
            .create_space(space, [n; 32])
            .await
            .unwrap_or_else(|e| panic!("{e}"));
        let push = Push {
            device_id: DeviceId([n; 16]),
            device_seq: 1,
            payload: vec![n; bytes],
        };
        store
            .push(space, push, u64::MAX)
            .await
            .unwrap_or_else(|e| panic!("{e}"));
    }
    store.close().await.unwrap_or_else(|e| panic!("{e}"));
    drop(store);
    // Back to schema 3: no total, the 5-argument mend_push only.
    execute_on(
        &db,
        "DROP TABLE relay_usage;
         DROP INDEX chunks_held;
         DROP INDEX chunks_held_by_space;
         DROP FUNCTION mend_push(bytea[], bytea[], bigint[], bytea[], bigint[], bigint);
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
         UPDATE mend_schema SET version = 3;",
    )
    .await;
    let store = open_on(&db, &LocalHub::default()).await;
    // The payloads, and then each space itself and its one chunk row (`013_row_cost.sql`).
    assert_eq!(
        store.total_bytes().await.unwrap_or_else(|e| panic!("{e}")),
        345 + 2 * ROW_BYTES + 2 * SPACE_BYTES
    );
    store.close().await.unwrap_or_else(|e| panic!("{e}"));
}

/// The relay-wide limit holds across instances: bytes one stores count against what another
/// accepts, and an erase through either gives them back.
#[tokio::test]
async fn the_total_is_shared_by_every_instance() {
    let db = database().await;
    let (first, second) = (
        open_on(&db, &LocalHub::default()).await,
        open_on(&db, &LocalHub::default()).await,
    );
    let (a, b) = (SpaceId([1; 32]), SpaceId([2; 32]));
    // 1000 payload bytes, two rows and the two spaces.
    let limit = 1000 + 2 * ROW_BYTES + 2 * SPACE_BYTES;
    for store in [&first, &second] {
        store.set_total_quota(limit);
    }
    first
        .create_space(a, [1; 32])
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    second
        .create_space(b, [2; 32])
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    let push = |n: u8, seq: u64, len: usize| Push {
        device_id: DeviceId([n; 16]),
        device_seq: seq,
        payload: vec![n; len],
    };
    first
        .push(a, push(1, 1, 700), u64::MAX)
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    assert!(matches!(
        second.push(b, push(2, 1, 400), u64::MAX).await,
        Err(StorageError::RelayFull {
            used,
            adding,
            limit: l
        }) if used == 700 + ROW_BYTES + 2 * SPACE_BYTES && adding == 400 + ROW_BYTES && l == limit
    ));
    assert!(
        second
            .erase(a, EraseReason::Erased)
            .await
            .unwrap_or_else(|e| panic!("{e}"))
    );
    second
        .push(b, push(2, 1, 400), u64::MAX)
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(
        first.total_bytes().await.unwrap_or_else(|e| panic!("{e}")),
        400 + ROW_BYTES + SPACE_BYTES + TOMBSTONE_BYTES
    );
    for store in [first, second] {
        store.close().await.unwrap_or_else(|e| panic!("{e}"));
    }
}

/// A tombstone outlives the relay that wrote it: a relay opened later on the same database
/// still refuses to bring the space back, and says why.
#[tokio::test]
async fn tombstones_survive_a_restart() {
    let db = database().await;
    let store = open_on(&db, &LocalHub::default()).await;
    let (erased, retired) = (SpaceId([1; 32]), SpaceId([2; 32]));
    for (space, reason) in [
        (erased, EraseReason::Erased),
        (retired, EraseReason::Retired),
    ] {
        store
            .create_space(space, [7; 32])
            .await
            .unwrap_or_else(|e| panic!("{e}"));
        assert!(
            store
                .erase(space, reason)
                .await
                .unwrap_or_else(|e| panic!("{e}"))
        );
    }
    store.close().await.unwrap_or_else(|e| panic!("{e}"));
    drop(store);
    let store = open_on(&db, &LocalHub::default()).await;
    for (space, reason) in [
        (erased, EraseReason::Erased),
        (retired, EraseReason::Retired),
    ] {
        let tombstone = store
            .tombstone(space)
            .await
            .unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(tombstone.map(|t| t.reason), Some(reason));
        assert!(matches!(
            store.create_space(space, [7; 32]).await,
            Err(StorageError::SpaceErased(r)) if r == reason
        ));
    }
    store.close().await.unwrap_or_else(|e| panic!("{e}"));
}

/// A new space of id `[byte; 32]`.
async fn created(store: &PostgresStorage, byte: u8) -> SpaceId {
    let space = SpaceId([byte; 32]);
    store
        .create_space(space, [1; 32])
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    space
}

/// Push `seq` of one device, its payload its number.
fn push(seq: u64) -> Push {
    Push {
        device_id: DeviceId([1; 16]),
        device_seq: seq,
        payload: seq.to_le_bytes().to_vec(),
    }
}

/// A push writer keeps its connection between batches. When the server ends it while idle (a
/// restart, `idle_session_timeout`, an administrator), the next push is still stored at once,
/// not answered 503: the writer takes another connection, and runs a batch whose connection
/// broke under it again.
#[tokio::test]
async fn a_writer_whose_connection_was_ended_pushes_on() {
    let db = database().await;
    let hub = LocalHub::default();
    let store = open_on(&db, &hub).await;
    let space = created(&store, 9).await;
    for round in 1..=3u64 {
        let first = store.push(space, push(round * 2 - 1), u64::MAX).await;
        assert!(first.is_ok(), "round {round}: {first:?}");
        execute_on(
            &db,
            "SELECT pg_terminate_backend(pid) FROM pg_stat_activity
              WHERE datname = current_database() AND pid <> pg_backend_pid()",
        )
        .await;
        // Half the rounds push at once, before the writer's connection can have noticed.
        if round != 2 {
            tokio::time::sleep(Duration::from_millis(300)).await;
        }
        let next = store.push(space, push(round * 2), u64::MAX).await;
        assert!(
            matches!(next, Ok(ref p) if !p.duplicate && p.relay_seq == round * 2),
            "round {round}: {next:?}"
        );
    }
    store.close().await.unwrap_or_else(|e| panic!("{e}"));
}

/// A TCP path to the database that can start dropping every byte without closing anything:
/// what a half-open connection (a NAT that forgot it, a pulled cable) looks like from the
/// relay. It also counts the bytes the database sends. Its tasks end when it is dropped.
struct BlackHole {
    url: String,
    dropping: Arc<AtomicBool>,
    from_db: Arc<AtomicU64>,
    task: tokio::task::JoinHandle<()>,
}

impl BlackHole {
    async fn in_front_of(db: &TestDatabase) -> BlackHole {
        let config: tokio_postgres::Config = db.url().parse().unwrap_or_else(|e| panic!("{e}"));
        let host = match config.get_hosts().first() {
            Some(tokio_postgres::config::Host::Tcp(host)) => host.clone(),
            other => panic!("the test database is not reached over TCP: {other:?}"),
        };
        let port = config.get_ports().first().copied().unwrap_or(5432);
        let target = format!("{host}:{port}");
        let listener = TcpListener::bind("127.0.0.1:0")
            .await
            .unwrap_or_else(|e| panic!("{e}"));
        let addr: SocketAddr = listener.local_addr().unwrap_or_else(|e| panic!("{e}"));
        let url = db.url().replacen(&target, &addr.to_string(), 1);
        assert_ne!(url, db.url(), "the URL names {target}");
        let dropping = Arc::new(AtomicBool::new(false));
        let flag = dropping.clone();
        let from_db = Arc::new(AtomicU64::new(0));
        let counted = from_db.clone();
        let task = tokio::spawn(async move {
            let mut pipes = JoinSet::new();
            while let Ok((inbound, _)) = listener.accept().await {
                let Ok(outbound) = TcpStream::connect(&target).await else {
                    continue;
                };
                let (from_relay, to_relay) = inbound.into_split();
                let (from_db, to_db) = outbound.into_split();
                let uncounted = Arc::new(AtomicU64::new(0));
                pipes.spawn(Self::carry(from_relay, to_db, flag.clone(), uncounted));
                pipes.spawn(Self::carry(
                    from_db,
                    to_relay,
                    flag.clone(),
                    counted.clone(),
                ));
            }
        });
        BlackHole {
            url,
            dropping,
            from_db,
            task,
        }
    }

    /// Copies until either side closes, dropping what it reads while the hole is open.
    async fn carry(
        mut from: tokio::net::tcp::OwnedReadHalf,
        mut to: tokio::net::tcp::OwnedWriteHalf,
        dropping: Arc<AtomicBool>,
        carried: Arc<AtomicU64>,
    ) {
        let mut buf = vec![0u8; 16 * 1024];
        loop {
            let n = match from.read(&mut buf).await {
                Ok(0) | Err(_) => return,
                Ok(n) => n,
            };
            carried.fetch_add(n as u64, Ordering::SeqCst);
            if dropping.load(Ordering::SeqCst) {
                continue;
            }
            if to.write_all(&buf[..n]).await.is_err() {
                return;
            }
        }
    }

    /// Starts (`true`) or stops swallowing what either side sends.
    fn swallow(&self, swallowing: bool) {
        self.dropping.store(swallowing, Ordering::SeqCst);
    }

    /// Bytes the database has sent so far.
    fn received(&self) -> u64 {
        self.from_db.load(Ordering::SeqCst)
    }
}

impl Drop for BlackHole {
    fn drop(&mut self) {
        // Dropping the accept task drops its JoinSet, which aborts every pipe.
        self.task.abort();
    }
}

/// A push whose connection stopped answering without closing (no reset, no FIN: the server
/// never saw the statement, so its statement timeout cannot fire) is answered 503 soon after
/// the statement timeout instead of waiting minutes for TCP to give up, and the writer goes on
/// with a new connection.
#[tokio::test]
async fn a_push_on_a_connection_that_stopped_answering_is_answered_in_time() {
    let db = database().await;
    let hole = BlackHole::in_front_of(&db).await;
    let settings = Postgres {
        // Short, so the test is quick; long enough for migrations on a loaded machine.
        statement_timeout: Duration::from_secs(1),
        ..Postgres::default()
    };
    let store = PostgresStorage::open(&hole.url, settings, Arc::new(LocalHub::default()))
        .await
        .unwrap_or_else(|e| panic!("open: {e}"));
    let space = created(&store, 10).await;
    let first = store.push(space, push(1), u64::MAX).await;
    assert!(matches!(first, Ok(ref p) if p.relay_seq == 1), "{first:?}");
    hole.swallow(true);
    // Far longer than the answer deadline (1 s + 2 s), far shorter than TCP's give-up.
    let lost = tokio::time::timeout(
        Duration::from_secs(30),
        store.push(space, push(2), u64::MAX),
    )
    .await
    .unwrap_or_else(|_| panic!("the push hung on a connection that stopped answering"));
    assert!(
        matches!(lost, Err(StorageError::Unavailable(_))),
        "{lost:?}"
    );
    hole.swallow(false);
    let again = store.push(space, push(2), u64::MAX).await;
    assert!(
        matches!(again, Ok(ref p) if !p.duplicate && p.relay_seq == 2),
        "{again:?}"
    );
    store.close().await.unwrap_or_else(|e| panic!("{e}"));
}

/// Counters set wrong in the shared database (as an instance older than a migration can leave
/// them) are found by the audit of any instance and repaired while two instances keep pushing:
/// the repair waits for the writes in flight and they for it, so no push is lost from the
/// count either way.
#[tokio::test]
async fn an_audit_repairs_counters_while_instances_push() {
    let db = database().await;
    let one = Arc::new(open_on(&db, &LocalHub::default()).await);
    let two = Arc::new(open_on(&db, &LocalHub::default()).await);
    let spaces = [created(&one, 1).await, created(&one, 2).await];
    for seq in 1..=20 {
        for space in spaces {
            one.push(space, push(seq), u64::MAX)
                .await
                .unwrap_or_else(|e| panic!("{e}"));
        }
    }
    let clean = two.audit(false).await.unwrap_or_else(|e| panic!("{e}"));
    assert!(clean.clean() && clean.spaces == 2, "{clean:?}");
    execute_on(
        &db,
        "UPDATE spaces SET rows = rows + 3, pruned_bytes = 11 WHERE id = (SELECT min(id) FROM spaces);
         UPDATE relay_usage SET bytes_used = bytes_used - 500 WHERE shard = 7;",
    )
    .await;
    let found = two.audit(false).await.unwrap_or_else(|e| panic!("{e}"));
    assert_eq!((found.spaces, found.spaces_off), (2, 1), "{found:?}");
    // The total is recounted from the rows, not from the spaces' counters.
    assert_eq!(found.counted_total + 500, found.actual_total, "{found:?}");

    // Both instances push on while instance two repairs: each has pushed before the repair
    // starts, and pushes again after it ends.
    let stop = Arc::new(AtomicBool::new(false));
    let done = Arc::new([AtomicU64::new(0), AtomicU64::new(0)]);
    let mut pushers = JoinSet::new();
    for (n, store) in [one.clone(), two.clone()].into_iter().enumerate() {
        let (stop, done) = (stop.clone(), done.clone());
        let space = spaces[n];
        pushers.spawn(async move {
            for seq in 21..5000 {
                if stop.load(Ordering::Relaxed) {
                    break;
                }
                store
                    .push(space, push(seq), u64::MAX)
                    .await
                    .unwrap_or_else(|e| panic!("{e}"));
                done[n].fetch_add(1, Ordering::Relaxed);
            }
        });
    }
    let at_least = |n: u64| {
        let done = done.clone();
        async move {
            for _ in 0..1000 {
                if done.iter().all(|d| d.load(Ordering::Relaxed) >= n) {
                    return;
                }
                tokio::time::sleep(Duration::from_millis(5)).await;
            }
            panic!("the pushers stalled");
        }
    };
    at_least(10).await;
    let repaired = two.audit(true).await.unwrap_or_else(|e| panic!("{e}"));
    assert!(
        repaired.repaired && repaired.spaces_off == 1,
        "{repaired:?}"
    );
    let after_repair = done
        .iter()
        .map(|d| d.load(Ordering::Relaxed))
        .max()
        .unwrap_or(0);
    at_least(after_repair + 10).await;
    stop.store(true, Ordering::Relaxed);
    while let Some(finished) = pushers.join_next().await {
        finished.unwrap_or_else(|e| panic!("{e}"));
    }
    let after = one.audit(false).await.unwrap_or_else(|e| panic!("{e}"));
    assert!(after.clean(), "{after:?}");
    one.close().await.unwrap_or_else(|e| panic!("{e}"));
    two.close().await.unwrap_or_else(|e| panic!("{e}"));
}

/// A push in flight while a repair sets the total (its transaction open, its share of the
/// total not yet committed) is counted once it commits: the repair waits for it before it sums
/// the spaces, rather than summing without it and writing over its share.
#[tokio::test]
async fn a_repair_counts_a_push_that_commits_while_it_waits() {
    let db = database().await;
    let store = Arc::new(open_on(&db, &LocalHub::default()).await);
    // Space 1's counters are set wrong; space 2 takes the open push.
    created(&store, 1).await;
    let busy = created(&store, 2).await;
    execute_on(
        &db,
        "UPDATE spaces SET rows = rows + 1 WHERE id = (SELECT min(id) FROM spaces)",
    )
    .await;
    // Another instance's push, held open: a chunk stored, the space and one share of the total
    // locked and changed, nothing committed yet.
    let (writer, driver) = session(&db).await;
    writer
        .batch_execute("BEGIN")
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    let payload = vec![7u8; 100];
    writer
        .query(
            "SELECT * FROM mend_push(ARRAY[$1]::bytea[], ARRAY[$2]::bytea[], ARRAY[1]::bigint[],
                                     ARRAY[$3]::bytea[], ARRAY[1000000]::bigint[], 1000000000)",
            &[&&busy.0[..], &&[9u8; 16][..], &payload],
        )
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    let repair = tokio::spawn({
        let store = store.clone();
        async move { store.audit(true).await }
    });
    // Until the repair waits on a lock the open push holds.
    let (watcher, watching) = session(&db).await;
    let mut waiting = false;
    for _ in 0..500 {
        let row = watcher
            .query_one(
                "SELECT COUNT(*) FROM pg_stat_activity
                 WHERE datname = current_database() AND wait_event_type = 'Lock'",
                &[],
            )
            .await
            .unwrap_or_else(|e| panic!("{e}"));
        if row.get::<_, i64>(0) > 0 {
            waiting = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    assert!(waiting, "the repair never waited for the open push");
    writer
        .batch_execute("COMMIT")
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    let repaired = repair
        .await
        .unwrap_or_else(|e| panic!("{e}"))
        .unwrap_or_else(|e| panic!("{e}"));
    assert!(
        repaired.repaired && repaired.spaces_off == 1,
        "{repaired:?}"
    );
    let after = store.audit(false).await.unwrap_or_else(|e| panic!("{e}"));
    assert!(after.clean(), "{after:?}");
    assert!(
        after.actual_total >= 2 * SPACE_BYTES + 100 + ROW_BYTES,
        "{after:?}"
    );
    drop((writer, watcher));
    let _ = (driver.await, watching.await);
    store.close().await.unwrap_or_else(|e| panic!("{e}"));
}

/// A sweep passes over a space whose row a write holds (a long push batch, a snapshot, another
/// instance's sweep) instead of waiting for it, also when that space's rows are the first due
/// and fill the sweep's batch: it deletes what other spaces have due after them, chunks and
/// rollups, and the held space's turn comes at a later sweep.
#[tokio::test]
async fn a_sweep_passes_over_a_space_a_write_holds() {
    use mend_protocol::{RollupPush, Snapshot};

    let db = database().await;
    let store = open_on(&db, &LocalHub::default()).await;
    let (held, free) = (created(&store, 1).await, created(&store, 2).await);
    for space in [held, free] {
        for seq in 1..=4 {
            store
                .push(space, push(seq), u64::MAX)
                .await
                .unwrap_or_else(|e| panic!("{e}"));
        }
        let rollup = RollupPush {
            device_id: DeviceId([1; 16]),
            first_seq: 1,
            last_seq: 2,
            payload: vec![5; 12],
        };
        store
            .push_rollup(space, rollup, u64::MAX)
            .await
            .unwrap_or_else(|e| panic!("{e}"));
        let snapshot = Snapshot {
            covers: 4,
            payload: vec![0; 8],
        };
        store
            .put_snapshot(space, snapshot, u64::MAX, Duration::from_secs(3600))
            .await
            .unwrap_or_else(|e| panic!("{e}"));
    }
    // Another transaction holds space 1's row.
    let (writer, driver) = session(&db).await;
    writer
        .batch_execute(
            "BEGIN; SELECT id FROM spaces WHERE id = (SELECT min(id) FROM spaces) FOR UPDATE",
        )
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    // Space 1's rows are due first (pruned first, or with the lower id), more than a batch of 3.
    let sweep = |max: usize| {
        tokio::time::timeout(
            Duration::from_secs(5),
            store.sweep_pruned(Duration::ZERO, max, u64::MAX),
        )
    };
    let swept = sweep(3)
        .await
        .unwrap_or_else(|_| panic!("the sweep waited for the held space"))
        .unwrap_or_else(|e| panic!("{e}"));
    // Three of space 2's chunks (8 bytes each).
    assert_eq!((swept.chunks, swept.bytes), (3, 3 * 8), "{swept:?}");
    // Its last chunk, then a rollup: space 1's is due first.
    let swept = sweep(2)
        .await
        .unwrap_or_else(|_| panic!("the sweep waited for the held space"))
        .unwrap_or_else(|e| panic!("{e}"));
    assert_eq!((swept.chunks, swept.bytes), (2, 8 + 12), "{swept:?}");
    writer
        .batch_execute("COMMIT")
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    let swept = store
        .sweep_pruned(Duration::ZERO, 100, u64::MAX)
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    assert_eq!((swept.chunks, swept.bytes), (5, 4 * 8 + 12), "{swept:?}");
    let audit = store.audit(false).await.unwrap_or_else(|e| panic!("{e}"));
    assert!(audit.clean(), "{audit:?}");
    drop(writer);
    let _ = driver.await;
    store.close().await.unwrap_or_else(|e| panic!("{e}"));
}

/// The check reads every row, which on a large database outlasts the statement timeout that
/// bounds requests; it holds no lock, so it runs without it.
#[tokio::test]
async fn a_check_outlasts_the_statement_timeout() {
    let db = database().await;
    let store = open_on(&db, &LocalHub::default()).await;
    let space = created(&store, 1).await;
    store
        .push(space, push(1), u64::MAX)
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    store.close().await.unwrap_or_else(|e| panic!("{e}"));
    // 500,000 more rows of that space, its counters kept in step: a recount of tens of
    // milliseconds, several times the timeout below.
    execute_on(
        &db,
        "INSERT INTO chunks (space, seq, device_id, device_seq, payload, payload_hash)
         SELECT s.id, g + 1, '\\x01010101010101010101010101010101'::bytea, g + 1,
                int8send(g + 1), sha256(int8send(g + 1))
           FROM spaces s, generate_series(1, 500000) g;
         UPDATE spaces SET next_seq = 500002, rows = 500001, bytes_used = 500001 * 8;
         UPDATE relay_usage SET bytes_used = bytes_used + 500000 * (8 + 150) WHERE shard = 0;",
    )
    .await;
    let settings = Postgres {
        statement_timeout: Duration::from_millis(10),
        ..Postgres::default()
    };
    let store = PostgresStorage::open(db.url(), settings, Arc::new(LocalHub::default()))
        .await
        .unwrap_or_else(|e| panic!("open: {e}"));
    let audit = store.audit(false).await.unwrap_or_else(|e| panic!("{e}"));
    assert!(audit.clean() && audit.spaces == 1, "{audit:?}");
    store.close().await.unwrap_or_else(|e| panic!("{e}"));
}

/// A page is cut at its byte budget inside the database: a pull of up to 1,024 chunks of
/// 256 KiB with a 1 MiB budget brings the page (four chunks) and at most two chunks more from
/// PostgreSQL, not every chunk the limit allows; with rollups too.
#[tokio::test]
async fn a_page_reads_about_its_byte_budget_from_the_database() {
    let db = database().await;
    let tap = BlackHole::in_front_of(&db).await;
    let store = PostgresStorage::open(&tap.url, Postgres::default(), Arc::new(LocalHub::default()))
        .await
        .unwrap_or_else(|e| panic!("open: {e}"));
    let space = created(&store, 12).await;
    const SIZE: usize = 256 * 1024;
    for seq in 1..=40u64 {
        let push = Push {
            device_id: DeviceId([1; 16]),
            device_seq: seq,
            // Not compressible, so the database stores and sends every byte.
            payload: (0..SIZE)
                .map(|i| {
                    (i as u64)
                        .wrapping_mul(seq.wrapping_add(7))
                        .wrapping_mul(2_654_435_761) as u8
                        ^ (i >> 8) as u8
                })
                .collect(),
        };
        let stored = store.push(space, push, u64::MAX).await;
        assert!(
            matches!(stored, Ok(ref p) if p.relay_seq == seq),
            "{stored:?}"
        );
    }
    for rollups in [false, true] {
        let before = tap.received();
        let request = PullRequest {
            after: 0,
            limit: 1024,
            max_bytes: 1024 * 1024,
            exclude_device: None,
            include_pruned: false,
            rollups,
        };
        let page = store
            .pull(space, request)
            .await
            .unwrap_or_else(|e| panic!("pull: {e}"));
        let read = tap.received().saturating_sub(before);
        assert_eq!(
            (page.chunks.len(), page.more, page.next_after),
            (4, true, 4),
            "rollups: {rollups}"
        );
        assert!(
            read <= 6 * SIZE as u64 + 64 * 1024,
            "rollups: {rollups}: {read} bytes came from the database for a 1 MiB page"
        );
    }
    store.close().await.unwrap_or_else(|e| panic!("{e}"));
}

/// A device seen while its space is being erased leaves nothing behind: the touch waits for the
/// erase and then finds no space, instead of writing a row the erase has already cleared.
#[tokio::test]
async fn a_device_seen_during_an_erase_leaves_no_row() {
    let db = database().await;
    let store = Arc::new(open_on(&db, &LocalHub::default()).await);
    let space = created(&store, 13).await;
    let (eraser, driver) = session(&db).await;
    // The erase's own steps, held open before its commit.
    eraser
        .batch_execute("BEGIN")
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    let row = eraser
        .query_one(
            "DELETE FROM spaces WHERE space_id = $1 RETURNING id",
            &[&&space.0[..]],
        )
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    let id: i64 = row.get(0);
    eraser
        .execute("DELETE FROM device_seen WHERE space = $1", &[&id])
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    let touch = tokio::spawn({
        let store = Arc::clone(&store);
        async move { store.touch_device(space, DeviceId([9; 16]), 7_200).await }
    });
    // Long enough for a touch that does not wait to have written its row.
    tokio::time::sleep(Duration::from_millis(500)).await;
    eraser
        .batch_execute("COMMIT")
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    let touched = tokio::time::timeout(Duration::from_secs(10), touch)
        .await
        .unwrap_or_else(|_| panic!("the touch never finished"))
        .unwrap_or_else(|e| panic!("{e}"));
    assert!(touched.is_ok(), "{touched:?}");
    let left: i64 = eraser
        .query_one("SELECT count(*) FROM device_seen WHERE space = $1", &[&id])
        .await
        .unwrap_or_else(|e| panic!("{e}"))
        .get(0);
    assert_eq!(left, 0, "a row of the erased space was kept");
    drop(eraser);
    let _ = driver.await;
    store.close().await.unwrap_or_else(|e| panic!("{e}"));
}
