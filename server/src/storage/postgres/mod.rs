//! The PostgreSQL backend: several stateless relay instances share one database.
//!
//! Driver: `tokio-postgres` with a `deadpool-postgres` pool. It is the lighter choice (no
//! compile-time query checking, no macros, one small pool crate) and gives direct access to
//! asynchronous notifications, which LISTEN/NOTIFY fan-out needs.
//!
//! - Pushes go through a few writer tasks ([`writer`]) that batch what is queued into one call of
//!   the `mend_push` SQL function: one statement, one transaction, one commit for the whole
//!   batch. A space always maps to the same writer, so pushes issued in order commit in order.
//!   Acknowledged means committed, as with SQLite.
//! - Every write to a space locks its `spaces` row first, which keeps relay sequences gap-free
//!   and dedup exact when several instances write to one space at once.
//! - After each commit the writer NOTIFYs the spaces' new heads (ids, never payloads), in a
//!   transaction of its own that does not wait for the disk, before anyone is answered. [`listener`] turns the
//!   notifications into hints on this instance's [`LocalHub`]; live sockets then read the chunks
//!   from the table. A lost listener connection is reopened and every subscriber re-reads from
//!   its cursor, so nothing is missed or sent twice.
//! - A slow or unreachable database surfaces as [`StorageError::Unavailable`] (503 with
//!   `Retry-After`) within the acquire and statement timeouts, never as a hung socket.

mod listener;
mod pairing;
mod rollups;
mod schema;
mod seen;
mod writer;

use std::{
    collections::HashMap,
    fmt::Write as _,
    sync::{
        Arc, Mutex, PoisonError, RwLock,
        atomic::{AtomicBool, AtomicU64, Ordering::Relaxed},
    },
    time::{Duration, SystemTime, UNIX_EPOCH},
};

use deadpool_postgres::{Manager, ManagerConfig, Pool, PoolError, RecyclingMethod, Runtime};
use mend_protocol::{
    Chunk, DeviceId, DeviceList, Page, PairingInbox, PairingState, Push, RollupPush, Sizes,
    Snapshot, SpaceId,
};
use subtle::ConstantTimeEq;
use tokio::{sync::mpsc, task::JoinHandle};
use tokio_postgres::{NoTls, error::SqlState};
use tokio_util::sync::CancellationToken;

pub use self::schema::{MIGRATION_LOCK, SCHEMA_VERSION};
use super::{
    Audit, Created, EraseReason, NewPairing, PairingRecord, PairingSide, PairingSwept, PullRequest,
    Pushed, ROW_BYTES, Recount, RollupStored, SPACE_BYTES, Storage, StorageError, StorageFuture,
    Swept, TOMBSTONE_BYTES, TokenHash, Tombstone, unix_now,
};
use crate::{
    config::Postgres,
    live::{LiveEvent, Publisher},
};

/// The channel every instance LISTENs on.
pub(crate) const CHANNEL: &str = "mend_live";

/// How long opening waits for the notification listener.
const LISTEN_TIMEOUT: Duration = Duration::from_secs(10);

/// Token hashes cached at most; the cache is cleared beyond this.
const MAX_CACHED_TOKENS: usize = 100_000;

/// What went wrong talking to PostgreSQL.
#[derive(Debug, thiserror::Error)]
pub enum PgError {
    /// The database answered with an error or the connection failed.
    #[error("database: {0}")]
    Db(#[from] tokio_postgres::Error),
    /// No pooled connection in time, or none could be opened.
    #[error("database pool: {0}")]
    Pool(#[from] PoolError),
    /// The pool could not be built.
    #[error("database pool: {0}")]
    Build(#[from] deadpool_postgres::BuildError),
    /// The database was migrated by a newer relay.
    #[error(
        "the database schema is version {found}, newer than this relay understands \
         ({supported}); run the newer mend-relay or restore a matching backup"
    )]
    SchemaTooNew {
        /// Version found in the database.
        found: i32,
        /// Newest version this binary knows.
        supported: i32,
    },
    /// The URL could not be parsed (its text is not repeated: it may hold a password).
    #[error("invalid database URL")]
    Url,
    /// A connection stopped answering.
    #[error("database connection lost")]
    Lost,
    /// Work waited longer than the acquire timeout behind slower work.
    #[error("the database is too slow: the push waited too long")]
    Slow,
    /// The notification listener could not start.
    #[error("could not LISTEN for notifications within {0:?}")]
    NoListener(Duration),
    /// A row the database should never hold.
    #[error("corrupt relay database: {0}")]
    Corrupt(&'static str),
}

impl PgError {
    /// Whether the failure is the database being away, slow or overloaded (answer 503 and let
    /// the client retry) rather than a bug.
    fn is_unavailable(&self) -> bool {
        match self {
            PgError::Pool(_) | PgError::Lost | PgError::Slow | PgError::NoListener(_) => true,
            PgError::Db(error) => {
                error.is_closed()
                    || match error.code() {
                        // No SQLSTATE: the connection itself failed (I/O, timeout).
                        None => true,
                        Some(code) => {
                            let class = &code.code()[..2];
                            matches!(class, "08" | "53" | "57" | "40")
                                || *code == SqlState::QUERY_CANCELED
                        }
                    }
            }
            PgError::SchemaTooNew { .. }
            | PgError::Url
            | PgError::Build(_)
            | PgError::Corrupt(_) => false,
        }
    }

    /// The connection itself is gone: the socket broke, or the server ended the session (a
    /// FATAL error such as an idle-session timeout, SQLSTATE class 08, or 57P01–57P03: shut
    /// down, crashed, not accepting yet).
    fn is_connection_lost(&self) -> bool {
        let PgError::Db(error) = self else {
            return false;
        };
        // Not every error without a SQLSTATE: one raised by the client itself (a value that
        // does not convert) would fail the same way on any connection.
        let fatal = error.as_db_error().is_some_and(|db| {
            matches!(
                db.parsed_severity(),
                Some(
                    tokio_postgres::error::Severity::Fatal | tokio_postgres::error::Severity::Panic
                )
            )
        });
        error.is_closed()
            || fatal
            || error.code().is_some_and(|code| {
                code.code().starts_with("08")
                    || *code == SqlState::ADMIN_SHUTDOWN
                    || *code == SqlState::CRASH_SHUTDOWN
                    || *code == SqlState::CANNOT_CONNECT_NOW
            })
    }

    /// Deadlock or serialisation failure: the transaction may simply run again.
    fn is_retryable(&self) -> bool {
        matches!(self, PgError::Db(error) if matches!(
            error.code(),
            Some(code) if *code == SqlState::T_R_DEADLOCK_DETECTED
                || *code == SqlState::T_R_SERIALIZATION_FAILURE
        ))
    }
}

impl From<PgError> for StorageError {
    fn from(error: PgError) -> StorageError {
        if error.is_unavailable() {
            StorageError::Unavailable(Box::new(error))
        } else {
            StorageError::Backend(Box::new(error))
        }
    }
}

/// Counters of the backend, rendered into `/metrics`.
#[derive(Debug, Default)]
pub(crate) struct PgMetrics {
    pub(crate) batches: AtomicU64,
    pub(crate) batched_pushes: AtomicU64,
    pub(crate) batch_retries: AtomicU64,
    pub(crate) notifications: AtomicU64,
    pub(crate) listener_connects: AtomicU64,
    pub(crate) unavailable: AtomicU64,
}

/// State shared by the storage handle, its writers and its listener.
pub(crate) struct Shared {
    pub(crate) pool: Pool,
    pub(crate) tokens: TokenCache,
    pub(crate) publisher: Arc<dyn Publisher>,
    pub(crate) metrics: PgMetrics,
    /// True while the listener is connected and LISTENing.
    pub(crate) listening: tokio::sync::watch::Sender<bool>,
    /// The relay-wide byte limit, passed to every write.
    pub(crate) total_quota: AtomicU64,
}

/// Adds `delta` bytes to the relay-wide total: to one of its rows chosen at random, so
/// concurrent transactions rarely wait on each other (see `004_total_bytes.sql`).
const ADD_TO_TOTAL: &str = "UPDATE relay_usage SET bytes_used = bytes_used + $1
     WHERE shard = (SELECT floor(random() * 64)::smallint)";

/// Payload bytes of the rows before the previous one, in relay order. A page reads rows only
/// while this is within its byte budget: the rows that fit, the one that does not (it ends the
/// page) and one more (so a first row larger than the budget still shows that more follow).
/// Without it a page would load `limit` whole payloads (up to 1,025 MiB) before cutting.
/// `octet_length` reads a stored value's length without fetching it.
pub(crate) const EARLIER: &str = "coalesce(sum(coalesce(octet_length(payload), 0)) \
     OVER (ORDER BY seq ROWS BETWEEN UNBOUNDED PRECEDING AND 2 PRECEDING), 0)";

/// How many times a sweep looks past spaces whose rows other writes hold before it leaves the
/// rest for the next sweep.
pub(crate) const SWEEP_TRIES: usize = 8;

/// Spaces set right per transaction by a repair: each batch's spaces wait while they are
/// recounted, the others do not.
const REPAIR_BATCH: usize = 500;

/// The bytes of all spaces together.
const TOTAL: &str = "SELECT COALESCE(SUM(bytes_used), 0)::bigint FROM relay_usage";

/// Each space's counters as stored (payload bytes held, kept rows, pruned bytes not yet
/// swept), then the same recounted from its rows. Erased spaces' leftover rows are not theirs
/// any more: the erase gave their bytes back.
const RECOUNT: &str = "SELECT s.id, s.bytes_used, s.rows, s.pruned_bytes,
        (COALESCE((SELECT SUM(length(c.payload)) FROM chunks c
                    WHERE c.space = s.id AND c.payload IS NOT NULL), 0)
       + COALESCE((SELECT SUM(r.size) FROM rollups r
                    WHERE r.space = s.id AND r.payload IS NOT NULL), 0)
       + COALESCE((SELECT length(p.payload) FROM snapshots p WHERE p.space = s.id), 0))::bigint
        AS held,
        ((SELECT COUNT(*) FROM chunks c WHERE c.space = s.id)
       + (SELECT COUNT(*) FROM rollups r WHERE r.space = s.id))::bigint AS kept,
        (COALESCE((SELECT SUM(length(c.payload)) FROM chunks c
                    WHERE c.space = s.id AND c.pruned_at IS NOT NULL AND c.payload IS NOT NULL), 0)
       + COALESCE((SELECT SUM(r.size) FROM rollups r
                    WHERE r.space = s.id AND r.pruned_at IS NOT NULL AND r.payload IS NOT NULL),
                  0))::bigint AS pruned
   FROM spaces s";

impl std::fmt::Debug for Shared {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Shared").finish_non_exhaustive()
    }
}

/// The token hashes this instance has read, so that a request costs no query. An erase on
/// any instance removes its space's entry (a notification), so an entry must not be added from
/// a read made before an erase this instance has since heard of: every removal moves
/// `forgets`, and a read is kept only if it did not move since the read began.
#[derive(Default)]
pub(crate) struct TokenCache {
    map: RwLock<HashMap<SpaceId, TokenHash>>,
    forgets: AtomicU64,
}

impl TokenCache {
    pub(crate) fn get(&self, space: &SpaceId) -> Option<TokenHash> {
        self.map
            .read()
            .unwrap_or_else(PoisonError::into_inner)
            .get(space)
            .copied()
    }

    /// Taken before the database is read; passed to [`TokenCache::remember`].
    pub(crate) fn generation(&self) -> u64 {
        self.forgets.load(Relaxed)
    }

    pub(crate) fn forget(&self, space: &SpaceId) {
        let mut map = self.map.write().unwrap_or_else(PoisonError::into_inner);
        self.forgets.fetch_add(1, Relaxed);
        map.remove(space);
    }

    pub(crate) fn forget_all(&self) {
        let mut map = self.map.write().unwrap_or_else(PoisonError::into_inner);
        self.forgets.fetch_add(1, Relaxed);
        map.clear();
    }

    /// Keeps `hash`, read when the generation was `read_at`, unless something was forgotten
    /// since (it may have been this space, erased after the read).
    pub(crate) fn remember(&self, space: SpaceId, hash: TokenHash, read_at: u64) {
        let mut map = self.map.write().unwrap_or_else(PoisonError::into_inner);
        if self.forgets.load(Relaxed) != read_at {
            return;
        }
        if map.len() >= MAX_CACHED_TOKENS {
            map.clear();
        }
        map.insert(space, hash);
    }
}

impl Shared {
    pub(crate) fn forget_token(&self, space: &SpaceId) {
        self.tokens.forget(space);
    }

    pub(crate) fn forget_all_tokens(&self) {
        self.tokens.forget_all();
    }

    async fn client(&self) -> Result<deadpool_postgres::Client, PgError> {
        Ok(self.pool.get().await?)
    }

    /// Counts an unavailable answer and passes the error on.
    fn note(&self, error: PgError) -> StorageError {
        let error = StorageError::from(error);
        if matches!(error, StorageError::Unavailable(_)) {
            self.metrics.unavailable.fetch_add(1, Relaxed);
        }
        error
    }
}

/// Storage in a PostgreSQL database shared by any number of relay instances.
#[derive(Debug)]
pub struct PostgresStorage {
    shared: Arc<Shared>,
    writers: Mutex<Vec<mpsc::UnboundedSender<writer::Job>>>,
    tasks: Mutex<Vec<JoinHandle<()>>>,
    stop: CancellationToken,
    closed: AtomicBool,
}

/// How much longer than the statement timeout a round trip may take before its connection is
/// taken for dead: the server cancels a slow statement itself, so no answer by then means the
/// socket is gone.
pub(crate) const ANSWER_SLACK: Duration = Duration::from_secs(2);

/// Parses a URL and applies the relay's connection settings (statement timeout, keepalives).
fn pg_config(url: &str, settings: &Postgres) -> Result<tokio_postgres::Config, PgError> {
    let mut config: tokio_postgres::Config = url.parse().map_err(|_| PgError::Url)?;
    let timeout_ms = settings.statement_timeout.as_millis().max(1);
    let options = match config.get_options() {
        Some(options) => format!("{options} -c statement_timeout={timeout_ms}"),
        None => format!("-c statement_timeout={timeout_ms}"),
    };
    // A socket that stops answering (half-open: a NAT that forgot it, a pulled cable) fails
    // once sent data has gone unacknowledged past the longest a statement may run, instead of
    // after TCP's own ~15 minutes; idle ones are probed by keepalives.
    config
        .options(&options)
        .application_name("mend-relay")
        .connect_timeout(settings.acquire_timeout)
        .keepalives(true)
        .keepalives_idle(Duration::from_secs(30))
        .keepalives_interval(Duration::from_secs(5))
        .keepalives_retries(3)
        .tcp_user_timeout(settings.statement_timeout.saturating_add(ANSWER_SLACK));
    Ok(config)
}

impl PostgresStorage {
    /// Connects, applies migrations (under an advisory lock), and starts the writers and the
    /// notification listener. Committed chunks, from this instance or any other, are announced
    /// to `publisher`.
    pub async fn open(
        url: &str,
        settings: Postgres,
        publisher: Arc<dyn Publisher>,
    ) -> Result<PostgresStorage, PgError> {
        let mut config = pg_config(url, &settings)?;
        let commit = {
            let (mut client, connection) = config.connect(NoTls).await?;
            let driver = tokio::spawn(connection);
            let migrated = schema::migrate(&mut client).await;
            let commit = client.query_one("SHOW synchronous_commit", &[]).await;
            drop(client);
            let _ = driver.await;
            migrated?;
            commit?.try_get::<_, String>(0)?
        };
        // An acknowledged push is a committed one whatever the server's, database's or role's
        // default says: `off` there would acknowledge before the disk has it. (Stronger
        // settings, such as waiting for a standby, are the operator's and kept.)
        if commit == "off" {
            tracing::warn!(
                "synchronous_commit is off for this database; the relay turns it on for its \
                 own connections"
            );
            let options = config.get_options().unwrap_or_default().to_owned();
            config.options(format!("{options} -c synchronous_commit=on"));
        }
        let manager = Manager::from_config(
            config.clone(),
            NoTls,
            ManagerConfig {
                recycling_method: RecyclingMethod::Fast,
            },
        );
        let pool = Pool::builder(manager)
            .max_size(settings.pool_size.max(1))
            .wait_timeout(Some(settings.acquire_timeout))
            .create_timeout(Some(settings.acquire_timeout))
            .recycle_timeout(Some(settings.acquire_timeout))
            .runtime(Runtime::Tokio1)
            .build()?;
        let shared = Arc::new(Shared {
            pool,
            tokens: TokenCache::default(),
            publisher,
            metrics: PgMetrics::default(),
            listening: tokio::sync::watch::Sender::new(false),
            total_quota: AtomicU64::new(u64::MAX),
        });
        let stop = CancellationToken::new();
        let mut tasks = Vec::new();
        let mut writers = Vec::new();
        for _ in 0..settings.writers.max(1) {
            let (sender, receiver) = mpsc::unbounded_channel();
            writers.push(sender);
            let writer = writer::Writer::new(shared.clone(), receiver, settings);
            tasks.push(tokio::spawn(writer.run()));
        }
        let mut listening = shared.listening.subscribe();
        tasks.push(tokio::spawn(listener::run(
            config,
            shared.clone(),
            stop.clone(),
        )));
        let storage = PostgresStorage {
            shared,
            writers: Mutex::new(writers),
            tasks: Mutex::new(tasks),
            stop,
            closed: AtomicBool::new(false),
        };
        // Serve nothing live before this instance hears the others.
        let up = tokio::time::timeout(LISTEN_TIMEOUT, async {
            listening.wait_for(|up| *up).await.is_ok()
        })
        .await;
        if up != Ok(true) {
            let _ = storage.close().await;
            return Err(PgError::NoListener(LISTEN_TIMEOUT));
        }
        Ok(storage)
    }

    /// The schema version recorded in the database at `url` (0 for an empty database).
    pub async fn schema_version(url: &str) -> Result<i32, PgError> {
        let config = pg_config(url, &Postgres::default())?;
        let (client, connection) = config.connect(NoTls).await?;
        let driver = tokio::spawn(connection);
        let version = schema::version(&client).await;
        drop(client);
        let _ = driver.await;
        version
    }

    fn run<T: Send + 'static, F>(
        &self,
        work: impl FnOnce(Arc<Shared>) -> F + Send + 'static,
    ) -> StorageFuture<T>
    where
        F: Future<Output = Result<Result<T, StorageError>, PgError>> + Send + 'static,
    {
        if self.closed.load(Relaxed) {
            return Box::pin(std::future::ready(Err(StorageError::Closed)));
        }
        let shared = self.shared.clone();
        Box::pin(async move {
            let fut = work(shared.clone());
            fut.await.map_err(|error| shared.note(error))?
        })
    }
}

/// Locks the rows of those of `spaces` no other write holds, in id order like every write, and
/// returns their ids: a sweep passes over the others rather than wait for them.
async fn lock_free(
    tx: &deadpool_postgres::Transaction<'_>,
    spaces: &[i64],
) -> Result<Vec<i64>, PgError> {
    Ok(tx
        .query(
            "SELECT id FROM spaces WHERE id = ANY ($1) ORDER BY id FOR UPDATE SKIP LOCKED",
            &[&spaces],
        )
        .await?
        .iter()
        .map(|row| row.try_get::<_, i64>(0))
        .collect::<Result<_, _>>()?)
}

/// A READ COMMITTED transaction, whatever the database's default: each statement sees what
/// committed before it, the holders of the locks it waited for included.
async fn read_committed(
    client: &mut deadpool_postgres::Client,
) -> Result<deadpool_postgres::Transaction<'_>, tokio_postgres::Error> {
    client
        .build_transaction()
        .isolation_level(tokio_postgres::IsolationLevel::ReadCommitted)
        .start()
        .await
}

fn now_secs() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| i64::try_from(d.as_secs()).unwrap_or(i64::MAX))
}

/// The writer a space's pushes go through. The whole id is hashed: ids are random in
/// production, but nothing should depend on which of their bytes are.
fn writer_of(space: &SpaceId, writers: usize) -> usize {
    let mut hasher = std::hash::DefaultHasher::new();
    std::hash::Hash::hash(space, &mut hasher);
    let hash = std::hash::Hasher::finish(&hasher);
    usize::try_from(hash % writers.max(1) as u64).unwrap_or(0)
}

/// The advisory lock key of a space: creation and erasure of one space never interleave.
fn space_lock(space: &SpaceId) -> i64 {
    let mut key = [0u8; 8];
    key.copy_from_slice(&space.0[..8]);
    i64::from_le_bytes(key)
}

/// A u64 the protocol allows, stored bit for bit in a bigint.
/// `Err(RelayFull)` if adding `adding` bytes would take the relay-wide total, as committed
/// before this transaction, past the limit.
async fn room_for(
    shared: &Shared,
    tx: &impl deadpool_postgres::GenericClient,
    adding: u64,
) -> Result<Result<(), StorageError>, PgError> {
    let limit = shared.total_quota.load(Relaxed);
    let total = nonneg(tx.query_one(TOTAL, &[]).await?.try_get(0)?);
    if total.saturating_add(adding) > limit {
        return Ok(Err(StorageError::RelayFull {
            used: total,
            adding,
            limit,
        }));
    }
    Ok(Ok(()))
}

fn to_db(value: u64) -> i64 {
    value as i64
}

fn from_db(value: i64) -> u64 {
    value as u64
}

/// A count or size that can never be negative in a sound database.
fn nonneg(value: i64) -> u64 {
    u64::try_from(value).unwrap_or(0)
}

/// The mark of the chunk at `seq` from a row's (device id, device sequence, payload hash)
/// columns starting at `at`, if the relay holds one there.
fn row_mark(
    row: &tokio_postgres::Row,
    at: usize,
    seq: u64,
) -> Result<Option<mend_protocol::Mark>, PgError> {
    let device: Option<&[u8]> = row.try_get(at)?;
    let device_seq: Option<i64> = row.try_get(at + 1)?;
    let hash: Option<&[u8]> = row.try_get(at + 2)?;
    let (Some(device), Some(device_seq), Some(hash)) = (device, device_seq, hash) else {
        return Ok(None);
    };
    let device = <[u8; 16]>::try_from(device).map_err(|_| PgError::Corrupt("device id length"))?;
    Ok(Some(mend_protocol::chunk_mark(
        seq,
        &DeviceId(device),
        from_db(device_seq),
        &hash32(hash, "payload hash length")?,
    )))
}

fn hash32(bytes: &[u8], what: &'static str) -> Result<[u8; 32], PgError> {
    <[u8; 32]>::try_from(bytes).map_err(|_| PgError::Corrupt(what))
}

/// Batches of an erased space's rows deleted per sweep, each a statement of its own.
const ERASE_BATCHES_PER_SWEEP: usize = 10;

/// Deletes what erased spaces left (`erasing`): up to [`ERASE_BATCHES_PER_SWEEP`] batches of
/// `limit` chunks or rollups, lowest space id first; a space with nothing left leaves the
/// queue.
/// Each batch is its own short statement, so the sweep never holds a lock for long and
/// several instances may run it at once (a row deleted twice is deleted once).
async fn erase_in_batches(client: &deadpool_postgres::Client, limit: i64) -> Result<(), PgError> {
    for _ in 0..ERASE_BATCHES_PER_SWEEP {
        let Some(row) = client
            .query_opt("SELECT space FROM erasing ORDER BY space LIMIT 1", &[])
            .await?
        else {
            return Ok(());
        };
        let space: i64 = row.try_get(0)?;
        let mut deleted = 0u64;
        for table in ["chunks", "rollups"] {
            deleted = deleted.saturating_add(
                client
                    .execute(
                        &format!(
                            "DELETE FROM {table} WHERE ctid = ANY (ARRAY(
                                 SELECT ctid FROM {table} WHERE space = $1 LIMIT $2))"
                        ),
                        &[&space, &limit],
                    )
                    .await?,
            );
        }
        if deleted == 0 {
            client
                .execute("DELETE FROM erasing WHERE space = $1", &[&space])
                .await?;
        }
    }
    Ok(())
}

impl Storage for PostgresStorage {
    fn create_space(&self, space: SpaceId, token_hash: TokenHash) -> StorageFuture<Created> {
        self.run(move |shared| async move {
            let read_at = shared.tokens.generation();
            let mut client = shared.client().await?;
            let tx = client.transaction().await?;
            tx.execute("SELECT pg_advisory_xact_lock($1)", &[&space_lock(&space)])
                .await?;
            let erased = tx
                .query_opt(
                    "SELECT reason FROM erased WHERE space_id = $1",
                    &[&&space.0[..]],
                )
                .await?;
            if let Some(row) = erased {
                let reason: i16 = row.try_get(0)?;
                return Ok(Err(StorageError::SpaceErased(EraseReason::from_db(
                    reason.into(),
                ))));
            }
            let inserted = tx
                .query_opt(
                    "INSERT INTO spaces (space_id, token_hash, next_seq, bytes_used, covers, created_at)
                     VALUES ($1, $2, 1, 0, 0, $3) ON CONFLICT (space_id) DO NOTHING RETURNING id",
                    &[&&space.0[..], &&token_hash[..], &now_secs()],
                )
                .await?;
            if inserted.is_some() {
                // A new space counts in the relay-wide total until it is erased.
                if let Err(full) = room_for(&shared, &tx, SPACE_BYTES).await? {
                    return Ok(Err(full));
                }
                tx.execute(ADD_TO_TOTAL, &[&to_db(SPACE_BYTES)]).await?;
                tx.commit().await?;
                shared.tokens.remember(space, token_hash, read_at);
                return Ok(Ok(Created::New));
            }
            let row = tx
                .query_one(
                    "SELECT token_hash FROM spaces WHERE space_id = $1",
                    &[&&space.0[..]],
                )
                .await?;
            tx.commit().await?;
            let existing = hash32(row.try_get(0)?, "token hash length")?;
            if bool::from(existing.ct_eq(&token_hash)) {
                shared.tokens.remember(space, existing, read_at);
                Ok(Ok(Created::Existing))
            } else {
                Ok(Err(StorageError::SpaceExists))
            }
        })
    }

    fn known_token(&self, space: SpaceId) -> Option<TokenHash> {
        self.shared.tokens.get(&space)
    }

    fn token_hash(&self, space: SpaceId) -> StorageFuture<Option<TokenHash>> {
        if let Some(hash) = self.shared.tokens.get(&space) {
            return Box::pin(std::future::ready(Ok(Some(hash))));
        }
        self.run(move |shared| async move {
            let read_at = shared.tokens.generation();
            let client = shared.client().await?;
            let statement = client
                .prepare_cached("SELECT token_hash FROM spaces WHERE space_id = $1")
                .await?;
            let Some(row) = client.query_opt(&statement, &[&&space.0[..]]).await? else {
                return Ok(Ok(None));
            };
            let hash = hash32(row.try_get(0)?, "token hash length")?;
            shared.tokens.remember(space, hash, read_at);
            Ok(Ok(Some(hash)))
        })
    }

    fn push(&self, space: SpaceId, push: Push, quota: u64) -> StorageFuture<Pushed> {
        if self.closed.load(Relaxed) {
            return Box::pin(std::future::ready(Err(StorageError::Closed)));
        }
        let (reply, answer) = tokio::sync::oneshot::channel();
        let queued = {
            let writers = self.writers.lock().unwrap_or_else(PoisonError::into_inner);
            // The same space always goes to the same writer: its pushes commit in order.
            let index = writer_of(&space, writers.len());
            writers.get(index).map(|writer| {
                writer.send(writer::Job {
                    space,
                    push,
                    quota,
                    reply,
                    queued: std::time::Instant::now(),
                })
            })
        };
        Box::pin(async move {
            match queued {
                Some(Ok(())) => answer.await.map_err(|_| StorageError::Closed)?,
                _ => Err(StorageError::Closed),
            }
        })
    }

    fn pull(&self, space: SpaceId, request: PullRequest) -> StorageFuture<Page> {
        if request.rollups {
            return self
                .run(move |shared| async move { rollups::pull(&shared, space, request).await });
        }
        self.run(move |shared| async move {
            let client = shared.client().await?;
            let limit = request.limit.max(1);
            let fetch = i64::try_from(limit.saturating_add(1)).unwrap_or(i64::MAX);
            let after = i64::try_from(request.after).unwrap_or(i64::MAX);
            let exclude = request.exclude_device.map(|device| device.0.to_vec());
            // One statement: the head and the chunks come from the same snapshot.
            let statement = client
                .prepare_cached(&format!(
                    "SELECT s.next_seq, s.covers, c.seq, c.device_id, c.device_seq, c.payload,
                            a.device_id, a.device_seq, coalesce(a.payload_hash, sha256(a.payload)),
                            h.device_id, h.device_seq, coalesce(h.payload_hash, sha256(h.payload))
                     FROM spaces s
                     LEFT JOIN chunks a ON a.space = s.id AND a.seq = $2
                     LEFT JOIN chunks h ON h.space = s.id AND h.seq = s.next_seq - 1
                     LEFT JOIN LATERAL (
                         SELECT w.seq, w.device_id, w.device_seq, p.payload FROM (
                             SELECT seq, device_id, device_seq, {EARLIER} AS earlier
                             FROM chunks
                             WHERE space = s.id AND seq > $2
                               AND ($4::bytea IS NULL OR device_id <> $4)
                             ORDER BY seq LIMIT $3
                         ) w JOIN chunks p ON p.space = s.id AND p.seq = w.seq
                         WHERE w.earlier <= $5
                     ) c ON true
                     WHERE s.space_id = $1
                     ORDER BY c.seq"
                ))
                .await?;
            let max_bytes = i64::try_from(request.max_bytes).unwrap_or(i64::MAX);
            let rows = client
                .query(
                    &statement,
                    &[&&space.0[..], &after, &fetch, &exclude, &max_bytes],
                )
                .await?;
            let Some(first) = rows.first() else {
                return Ok(Err(StorageError::SpaceNotFound));
            };
            let head = nonneg(first.try_get::<_, i64>(0)?).saturating_sub(1);
            let covers = nonneg(first.try_get(1)?);
            if request.after < covers && !request.include_pruned {
                return Ok(Err(StorageError::Pruned {
                    snapshot_covers: covers,
                }));
            }
            let mut chunks = Vec::new();
            let mut total = 0usize;
            let mut more = false;
            for row in &rows {
                let Some(seq) = row.try_get::<_, Option<i64>>(2)? else {
                    break;
                };
                let Some(payload) = row.try_get::<_, Option<Vec<u8>>>(5)? else {
                    // Below the snapshot, pruned chunks are served until deleted after their
                    // grace; deleted ones form a prefix of the log.
                    if from_db(seq) <= covers {
                        return Ok(Err(StorageError::Pruned {
                            snapshot_covers: covers,
                        }));
                    }
                    return Err(PgError::Corrupt("pruned chunk above the snapshot"));
                };
                if chunks.len() == limit
                    || (!chunks.is_empty()
                        && total.saturating_add(payload.len()) > request.max_bytes)
                {
                    more = true;
                    break;
                }
                let device: &[u8] = row.try_get(3)?;
                let device = <[u8; 16]>::try_from(device)
                    .map_err(|_| PgError::Corrupt("device id length"))?;
                total = total.saturating_add(payload.len());
                chunks.push(Chunk {
                    relay_seq: from_db(seq),
                    device_id: DeviceId(device),
                    device_seq: from_db(row.try_get(4)?),
                    payload,
                });
            }
            let (next_after, next_mark) = match chunks.last() {
                Some(last) if more => (last.relay_seq, Some(last.mark())),
                _ => (head, row_mark(first, 9, head)?),
            };
            Ok(Ok(Page {
                head,
                next_after,
                more,
                after_mark: row_mark(first, 6, request.after)?,
                next_mark,
                chunks,
                rollups: Vec::new(),
            }))
        })
    }

    fn push_rollup(
        &self,
        space: SpaceId,
        rollup: RollupPush,
        quota: u64,
    ) -> StorageFuture<RollupStored> {
        self.run(move |shared| async move { rollups::push(&shared, space, rollup, quota).await })
    }

    fn sizes(
        &self,
        space: SpaceId,
        after: u64,
        exclude_device: Option<DeviceId>,
    ) -> StorageFuture<Sizes> {
        self.run(move |shared| async move {
            rollups::sizes(&shared, space, after, exclude_device).await
        })
    }

    fn put_snapshot(
        &self,
        space: SpaceId,
        snapshot: Snapshot,
        quota: u64,
        grace: Duration,
    ) -> StorageFuture<()> {
        self.run(move |shared| async move {
            let mut client = shared.client().await?;
            let tx = client.transaction().await?;
            let Some(row) = tx
                .query_opt(
                    "SELECT id, next_seq, bytes_used, covers, pruned_bytes FROM spaces
                     WHERE space_id = $1 FOR UPDATE",
                    &[&&space.0[..]],
                )
                .await?
            else {
                return Ok(Err(StorageError::SpaceNotFound));
            };
            let id: i64 = row.try_get(0)?;
            let head = nonneg(row.try_get(1)?).saturating_sub(1);
            let bytes_used = nonneg(row.try_get(2)?);
            let covers = nonneg(row.try_get(3)?);
            let pruned = nonneg(row.try_get(4)?);
            if snapshot.covers < covers {
                return Ok(Err(StorageError::SnapshotStale { current: covers }));
            }
            if snapshot.covers > head {
                return Ok(Err(StorageError::SnapshotBeyondHead { head }));
            }
            let old_len: i64 = tx
                .query_opt(
                    "SELECT length(payload)::bigint FROM snapshots WHERE space = $1",
                    &[&id],
                )
                .await?
                .map(|row| row.try_get(0))
                .transpose()?
                .unwrap_or(0);
            // Payload bytes up to the new coverage: still held from earlier prunes (the space's
            // counter), pruned now, and due for deletion now (pruned `grace` ago, or now when
            // the grace is zero). Only the rows pruned now and those deleted now are read
            // (`chunks_held_by_space` for the latter): summing every pruned row at each snapshot
            // let repeated snapshots scan days of them.
            let now = unix_now();
            let expired = now.saturating_sub(grace.as_secs());
            let sums = tx
                .query_one(
                    "SELECT (SELECT COALESCE(SUM(length(payload)), 0)::bigint FROM chunks
                             WHERE space = $1 AND seq > $2 AND seq <= $3 AND payload IS NOT NULL),
                            (SELECT COALESCE(SUM(length(payload)), 0)::bigint FROM chunks
                             WHERE space = $1 AND seq > $2 AND seq <= $3 AND payload IS NOT NULL
                               AND COALESCE(pruned_at, $4) <= $5)
                          + (SELECT COALESCE(SUM(length(payload)), 0)::bigint FROM chunks
                             WHERE space = $1 AND pruned_at <= $5 AND payload IS NOT NULL)",
                    &[
                        &id,
                        &to_db(covers),
                        &to_db(snapshot.covers),
                        &to_db(now),
                        &to_db(expired),
                    ],
                )
                .await?;
            // Rollups are pruned and deleted by their relay sequence, like chunks.
            let (r_pruning, r_deleting) =
                rollups::snapshot_sums(&tx, id, covers, snapshot.covers, now, expired).await?;
            let held = pruned;
            let pruning = nonneg(sums.try_get(0)?).saturating_add(r_pruning);
            let deleting = nonneg(sums.try_get(1)?).saturating_add(r_deleting);
            let adding = snapshot.payload.len() as u64;
            let kept = bytes_used
                .saturating_sub(nonneg(old_len))
                .saturating_add(adding);
            // The quota bounds what stays live, so a full space can still compact its log.
            if kept.saturating_sub(held).saturating_sub(pruning) > quota {
                return Ok(Err(StorageError::QuotaExceeded {
                    used: bytes_used,
                    adding,
                    quota,
                }));
            }
            // Pruned chunks count until deleted, so the relay-wide limit bounds what is on disk.
            let used = kept.saturating_sub(deleting);
            let growth = used.saturating_sub(bytes_used);
            if growth > 0
                && let Err(full) = room_for(&shared, &tx, growth).await?
            {
                return Ok(Err(full));
            }
            // Pruned now, deleted after the grace: a garbage snapshot cannot destroy the only
            // copy.
            tx.execute(
                "UPDATE chunks SET pruned_at = $4 WHERE space = $1 AND seq > $2 AND seq <= $3",
                &[&id, &to_db(covers), &to_db(snapshot.covers), &to_db(now)],
            )
            .await?;
            // Every pruned row is at or below the coverage: the held rows' index finds them.
            tx.execute(
                "UPDATE chunks SET payload = NULL
                 WHERE space = $1 AND pruned_at <= $2 AND payload IS NOT NULL",
                &[&id, &to_db(expired)],
            )
            .await?;
            rollups::prune(&tx, id, covers, snapshot.covers, now, expired).await?;
            tx.execute(
                "INSERT INTO snapshots (space, covers, payload) VALUES ($1, $2, $3)
                 ON CONFLICT (space) DO UPDATE SET covers = excluded.covers,
                                                   payload = excluded.payload",
                &[&id, &to_db(snapshot.covers), &snapshot.payload],
            )
            .await?;
            let pruned = pruned.saturating_add(pruning).saturating_sub(deleting);
            tx.execute(
                "UPDATE spaces SET covers = $2, bytes_used = $3, pruned_bytes = $4 WHERE id = $1",
                &[&id, &to_db(snapshot.covers), &to_db(used), &to_db(pruned)],
            )
            .await?;
            let delta = to_db(used).saturating_sub(to_db(bytes_used));
            if delta != 0 {
                tx.execute(ADD_TO_TOTAL, &[&delta]).await?;
            }
            tx.commit().await?;
            Ok(Ok(()))
        })
    }

    fn sweep_pruned(
        &self,
        grace: Duration,
        max_chunks: usize,
        max_bytes: u64,
    ) -> StorageFuture<Swept> {
        self.run(move |shared| async move {
            let expired = to_db(unix_now().saturating_sub(grace.as_secs()));
            let limit = i64::try_from(max_chunks).unwrap_or(i64::MAX);
            let max_bytes_u64 = max_bytes;
            let max_bytes = i64::try_from(max_bytes).unwrap_or(i64::MAX);
            let mut client = shared.client().await?;
            // What erased spaces left goes first; a failure there (another instance deleting
            // the same rows) is tried again next sweep and stops nothing else.
            if let Err(e) = erase_in_batches(&client, limit).await {
                tracing::warn!(error = %e, "could not delete what an erased space left");
            }
            let tx = client.transaction().await?;
            // The spaces' rows first, in id order, like every other write to a space; then the
            // chunks, checked again under those locks (another instance may have swept them).
            // A space whose row another write holds is passed over, not waited for, and the
            // rows due after it are looked at instead: one busy space holds up neither the
            // pushes behind the sweep nor the sweep of every space after it. Its own turn comes
            // at a later sweep (or its next snapshot).
            let mut passed: Vec<i64> = Vec::new();
            let mut due: Vec<i64> = Vec::new();
            for _ in 0..SWEEP_TRIES {
                let next = tx
                    .query(
                        "SELECT DISTINCT space FROM (
                             SELECT space, (SUM(length(payload)::bigint) OVER w)::bigint - length(payload) AS before
                             FROM (SELECT space, seq, pruned_at, payload FROM chunks
                                   WHERE pruned_at <= $1 AND payload IS NOT NULL
                                     AND space NOT IN (SELECT space FROM erasing)
                                     AND space <> ALL ($4)
                                   ORDER BY pruned_at, space, seq LIMIT $2) c
                             WINDOW w AS (ORDER BY pruned_at, space, seq)
                         ) d WHERE before < $3::bigint",
                        &[&expired, &limit, &max_bytes, &passed],
                    )
                    .await?
                    .iter()
                    .map(|row| row.try_get::<_, i64>(0))
                    .collect::<Result<Vec<_>, _>>()?;
                if next.is_empty() {
                    break;
                }
                due = lock_free(&tx, &next).await?;
                if !due.is_empty() {
                    break;
                }
                passed.extend(next);
            }
            if due.is_empty() {
                drop(tx);
                let swept =
                    rollups::sweep(&mut client, expired, limit, max_bytes_u64, Swept::default())
                        .await?;
                return Ok(Ok(swept));
            }
            let freed = tx
                .query(
                    "WITH picked AS (
                         SELECT space, seq, pruned_at, length(payload)::bigint AS len FROM chunks
                         WHERE space = ANY ($3) AND pruned_at <= $1 AND payload IS NOT NULL
                         ORDER BY pruned_at, space, seq LIMIT $2 FOR UPDATE
                     ), d AS (
                         SELECT space, seq, len FROM (
                             SELECT space, seq, len,
                                    (SUM(len) OVER (ORDER BY pruned_at, space, seq))::bigint - len AS before
                             FROM picked
                         ) p WHERE before < $4::bigint
                     ), cleared AS (
                         UPDATE chunks c SET payload = NULL FROM d
                         WHERE c.space = d.space AND c.seq = d.seq
                         RETURNING d.space, d.len
                     )
                     SELECT space, COUNT(*)::bigint, SUM(len)::bigint FROM cleared GROUP BY space",
                    &[&expired, &limit, &due, &max_bytes],
                )
                .await?;
            let mut swept = Swept::default();
            let (mut spaces, mut bytes) = (Vec::new(), Vec::new());
            for row in &freed {
                let freed_bytes: i64 = row.try_get(2)?;
                spaces.push(row.try_get::<_, i64>(0)?);
                bytes.push(freed_bytes);
                swept.chunks = swept.chunks.saturating_add(nonneg(row.try_get(1)?));
                swept.bytes = swept.bytes.saturating_add(nonneg(freed_bytes));
            }
            if !spaces.is_empty() {
                // The total loses what the spaces' counters lost, clamped at zero like them,
                // so a counter that was already short can never take the total below the truth.
                let lost: i64 = tx
                    .query_one(
                        "WITH old AS (
                             SELECT s.id, s.bytes_used AS before, u.freed FROM spaces s
                             JOIN unnest($1::bigint[], $2::bigint[]) AS u(id, freed)
                               ON s.id = u.id
                         ), changed AS (
                             UPDATE spaces s SET bytes_used = GREATEST(old.before - old.freed, 0),
                                                 pruned_bytes = GREATEST(s.pruned_bytes - old.freed, 0)
                             FROM old WHERE s.id = old.id
                             RETURNING old.before - s.bytes_used AS lost
                         )
                         SELECT COALESCE(SUM(lost), 0)::bigint FROM changed",
                        &[&spaces, &bytes],
                    )
                    .await?
                    .try_get(0)?;
                if lost != 0 {
                    tx.execute(ADD_TO_TOTAL, &[&0i64.saturating_sub(lost)]).await?;
                }
            }
            tx.commit().await?;
            let swept = rollups::sweep(&mut client, expired, limit, max_bytes_u64, swept).await?;
            Ok(Ok(swept))
        })
    }

    fn set_total_quota(&self, bytes: u64) {
        self.shared.total_quota.store(bytes, Relaxed);
    }

    fn total_bytes(&self) -> StorageFuture<u64> {
        self.run(move |shared| async move {
            let client = shared.client().await?;
            Ok(Ok(nonneg(client.query_one(TOTAL, &[]).await?.try_get(0)?)))
        })
    }

    fn get_snapshot(&self, space: SpaceId) -> StorageFuture<Option<Snapshot>> {
        self.run(move |shared| async move {
            let client = shared.client().await?;
            let row = client
                .query_opt(
                    "SELECT n.covers, n.payload FROM snapshots n JOIN spaces s ON s.id = n.space
                     WHERE s.space_id = $1",
                    &[&&space.0[..]],
                )
                .await?;
            let Some(row) = row else {
                return Ok(Ok(None));
            };
            Ok(Ok(Some(Snapshot {
                covers: nonneg(row.try_get(0)?),
                payload: row.try_get(1)?,
            })))
        })
    }

    fn tombstone(&self, space: SpaceId) -> StorageFuture<Option<Tombstone>> {
        self.run(move |shared| async move {
            let client = shared.client().await?;
            let statement = client
                .prepare_cached("SELECT erased_at, reason FROM erased WHERE space_id = $1")
                .await?;
            let Some(row) = client.query_opt(&statement, &[&&space.0[..]]).await? else {
                return Ok(Ok(None));
            };
            let erased_at: i64 = row.try_get(0)?;
            let reason: i16 = row.try_get(1)?;
            Ok(Ok(Some(Tombstone {
                erased_at: u64::try_from(erased_at).unwrap_or(0),
                reason: EraseReason::from_db(reason.into()),
            })))
        })
    }

    fn claim_successor(&self, space: SpaceId, id: [u8; 32]) -> StorageFuture<[u8; 32]> {
        self.run(move |shared| async move {
            let client = shared.client().await?;
            // One statement: the row lock makes the first offer the one kept.
            let statement = client
                .prepare_cached(
                    "UPDATE spaces SET successor = COALESCE(successor, $2) WHERE space_id = $1 \
                     RETURNING successor",
                )
                .await?;
            let Some(row) = client
                .query_opt(&statement, &[&&space.0[..], &&id[..]])
                .await?
            else {
                return Ok(Err(StorageError::SpaceNotFound));
            };
            let kept: Vec<u8> = row.try_get(0)?;
            Ok(<[u8; 32]>::try_from(kept.as_slice()).map_err(|_| StorageError::SpaceNotFound))
        })
    }

    fn erase(&self, space: SpaceId, reason: EraseReason) -> StorageFuture<bool> {
        self.run(move |shared| async move {
            let mut client = shared.client().await?;
            let tx = client.transaction().await?;
            tx.execute("SELECT pg_advisory_xact_lock($1)", &[&space_lock(&space)])
                .await?;
            let Some(row) = tx
                .query_opt(
                    "DELETE FROM spaces WHERE space_id = $1 RETURNING id, bytes_used, rows",
                    &[&&space.0[..]],
                )
                .await?
            else {
                return Ok(Ok(false));
            };
            let id: i64 = row.try_get(0)?;
            // Itself, its payloads and the rows the relay counted for it, all but the
            // tombstone, which stays.
            let rows: i64 = row.try_get(2)?;
            let held = row
                .try_get::<_, i64>(1)?
                .saturating_add(rows.saturating_mul(to_db(ROW_BYTES)))
                .saturating_add(to_db(SPACE_BYTES))
                .saturating_sub(to_db(TOMBSTONE_BYTES));
            if held != 0 {
                tx.execute(ADD_TO_TOTAL, &[&held.saturating_neg()]).await?;
            }
            // The chunks and rollups go in batches ([`erase_in_batches`]): one delete of a
            // large space would outlast the statement timeout and be cut at every try, holding
            // the space's lock (and every batch of pushes waiting on it) meanwhile.
            tx.execute("INSERT INTO erasing (space) VALUES ($1)", &[&id])
                .await?;
            tx.execute("DELETE FROM snapshots WHERE space = $1", &[&id])
                .await?;
            tx.execute("DELETE FROM device_seen WHERE space = $1", &[&id])
                .await?;
            tx.execute(
                "INSERT INTO erased (space_id, erased_at, reason) VALUES ($1, $2, $3)
                 ON CONFLICT (space_id)
                 DO UPDATE SET erased_at = excluded.erased_at, reason = excluded.reason",
                &[&&space.0[..], &now_secs(), &reason.to_db()],
            )
            .await?;
            tx.execute(
                "SELECT pg_notify($1, $2)",
                &[&CHANNEL, &listener::erased_message(&space)],
            )
            .await?;
            tx.commit().await?;
            shared.forget_token(&space);
            shared.publisher.publish(&space, LiveEvent::Erased);
            Ok(Ok(true))
        })
    }

    fn touch_device(&self, space: SpaceId, device: DeviceId, at: u64) -> StorageFuture<()> {
        self.run(move |shared| seen::touch(shared, space, device, at))
    }

    fn devices(&self, space: SpaceId) -> StorageFuture<DeviceList> {
        self.run(move |shared| seen::list(shared, space))
    }

    fn count_creation(
        &self,
        client: [u8; 32],
        window_start: u64,
        keep_after: u64,
    ) -> StorageFuture<u64> {
        self.run(move |shared| async move {
            let db = shared.client().await?;
            let statement = db
                .prepare_cached(
                    "INSERT INTO creations (client, window_start, count) VALUES ($1, $2, 1)
                     ON CONFLICT (client, window_start) DO UPDATE SET count = creations.count + 1
                     RETURNING count",
                )
                .await?;
            let count: i32 = db
                .query_one(&statement, &[&&client[..], &to_db(window_start)])
                .await?
                .try_get(0)?;
            // Old windows are dropped now and then, not on every creation.
            if count == 1 {
                db.execute(
                    "DELETE FROM creations WHERE window_start < $1",
                    &[&to_db(keep_after)],
                )
                .await?;
            }
            Ok(Ok(u64::try_from(count).unwrap_or(0)))
        })
    }

    fn open_pairing(&self, new: NewPairing) -> StorageFuture<String> {
        self.run(move |shared| pairing::open(shared, new))
    }

    fn claim_pairing(
        &self,
        mailbox: String,
        guest_hash: TokenHash,
        now: u64,
    ) -> StorageFuture<u64> {
        self.run(move |shared| pairing::claim(shared, mailbox, guest_hash, now))
    }

    fn pairing(&self, mailbox: String, now: u64) -> StorageFuture<Option<PairingRecord>> {
        self.run(move |shared| pairing::record(shared, mailbox, now))
    }

    fn post_pairing(
        &self,
        mailbox: String,
        side: PairingSide,
        body: Vec<u8>,
        now: u64,
    ) -> StorageFuture<u64> {
        self.run(move |shared| pairing::post(shared, mailbox, side, body, now))
    }

    fn read_pairing(
        &self,
        mailbox: String,
        reader: PairingSide,
        after: u64,
        now: u64,
    ) -> StorageFuture<PairingInbox> {
        self.run(move |shared| pairing::inbox(shared, mailbox, reader, after, now))
    }

    fn close_pairing(
        &self,
        mailbox: String,
        burn: bool,
        now: u64,
    ) -> StorageFuture<Option<PairingState>> {
        self.run(move |shared| pairing::close(shared, mailbox, burn, now))
    }

    fn sweep_pairings(&self, now: u64, linger: Duration) -> StorageFuture<PairingSwept> {
        self.run(move |shared| pairing::sweep(shared, now, linger))
    }

    fn audit(&self, repair: bool) -> StorageFuture<Audit> {
        self.run(move |shared| async move {
            let mut client = shared.client().await?;
            // One snapshot of every table, so counters and rows agree as committed together,
            // while writes go on. It holds no lock, so it runs without the statement timeout:
            // on a large database the recount takes what it takes, and waits for nothing.
            let tx = client
                .build_transaction()
                .isolation_level(tokio_postgres::IsolationLevel::RepeatableRead)
                .read_only(true)
                .start()
                .await?;
            tx.batch_execute("SET LOCAL statement_timeout = 0").await?;
            let mut recount =
                Recount::new(nonneg(tx.query_one(TOTAL, &[]).await?.try_get(0)?));
            for row in tx.query(RECOUNT, &[]).await? {
                recount.space(
                    row.try_get(0)?,
                    [row.try_get(1)?, row.try_get(2)?, row.try_get(3)?],
                    [row.try_get(4)?, row.try_get(5)?, row.try_get(6)?],
                );
            }
            let tombstones = tx
                .query_one("SELECT COUNT(*) FROM erased", &[])
                .await?
                .try_get(0)?;
            tx.commit().await?;
            let (mut found, off) = recount.finish(tombstones);
            if !repair || found.clean() {
                return Ok(Ok(found));
            }
            // Every write changes a space's rows and counters together, so the spaces found
            // right stay right. Those found off are recounted again and set right in batches,
            // each locking only its spaces (in id order, like every write, so none deadlocks
            // with this) while it recounts them.
            let ids: Vec<i64> = off.iter().map(|(id, _)| *id).collect();
            let recount_off = format!(
                "UPDATE spaces t SET bytes_used = r.held, rows = r.kept, pruned_bytes = r.pruned
                 FROM ({RECOUNT} WHERE s.id = ANY ($1)) r WHERE t.id = r.id"
            );
            for batch in ids.chunks(REPAIR_BATCH) {
                let batch = batch.to_vec();
                let tx = read_committed(&mut client).await?;
                tx.execute(
                    "SELECT 1 FROM (SELECT id FROM spaces WHERE id = ANY ($1) ORDER BY id FOR UPDATE) l",
                    &[&batch],
                )
                .await?;
                tx.execute(&recount_off, &[&batch]).await?;
                tx.commit().await?;
            }
            // Then the total, from every space's counters, all right now, and the tombstones.
            // Holding every share of it, the sum sees each write that counted in it committed,
            // and those still to count add theirs after; they wait only for the sum.
            let tx = read_committed(&mut client).await?;
            tx.execute(
                "SELECT 1 FROM (SELECT shard FROM relay_usage ORDER BY shard FOR UPDATE) l",
                &[],
            )
            .await?;
            tx.execute(
                "UPDATE relay_usage SET bytes_used = CASE WHEN shard = 0 THEN
                     (SELECT COALESCE(SUM(bytes_used + $1 * rows + $2), 0) FROM spaces)
                     + $3 * (SELECT COUNT(*) FROM erased) ELSE 0 END",
                &[
                    &to_db(ROW_BYTES),
                    &to_db(SPACE_BYTES),
                    &to_db(TOMBSTONE_BYTES),
                ],
            )
            .await?;
            tx.commit().await?;
            found.repaired = true;
            Ok(Ok(found))
        })
    }

    fn ready(&self) -> StorageFuture<()> {
        self.run(move |shared| async move {
            let client = shared.client().await?;
            client.simple_query("SELECT 1").await?;
            if !*shared.listening.borrow() {
                return Ok(Err(StorageError::Unavailable(
                    "the notification listener is reconnecting".into(),
                )));
            }
            Ok(Ok(()))
        })
    }

    fn render_metrics(&self, out: &mut String) {
        let status = self.shared.pool.status();
        let m = &self.shared.metrics;
        let lines: [(&str, &str, &str, u64); 11] = [
            (
                "mend_db_pool_max",
                "gauge",
                "Most connections in the database pool.",
                status.max_size as u64,
            ),
            (
                "mend_db_pool_size",
                "gauge",
                "Open connections in the database pool.",
                status.size as u64,
            ),
            (
                "mend_db_pool_available",
                "gauge",
                "Idle connections in the database pool.",
                status.available as u64,
            ),
            (
                "mend_db_pool_waiting",
                "gauge",
                "Requests waiting for a pooled connection.",
                status.waiting as u64,
            ),
            (
                "mend_db_unavailable_total",
                "counter",
                "Requests answered 503 because the database was slow or away.",
                m.unavailable.load(Relaxed),
            ),
            (
                "mend_db_batches_total",
                "counter",
                "Push batches committed.",
                m.batches.load(Relaxed),
            ),
            (
                "mend_db_batched_pushes_total",
                "counter",
                "Pushes in committed batches.",
                m.batched_pushes.load(Relaxed),
            ),
            (
                "mend_db_batch_retries_total",
                "counter",
                "Push batches run again after a deadlock, a serialisation failure or a lost connection.",
                m.batch_retries.load(Relaxed),
            ),
            (
                "mend_db_notifications_total",
                "counter",
                "Notifications received from the database.",
                m.notifications.load(Relaxed),
            ),
            (
                "mend_db_listener_up",
                "gauge",
                "1 while the notification listener is connected.",
                u64::from(*self.shared.listening.borrow()),
            ),
            (
                "mend_db_listener_connects_total",
                "counter",
                "Times the notification listener (re)connected.",
                m.listener_connects.load(Relaxed),
            ),
        ];
        for (name, kind, help, value) in lines {
            let _ = writeln!(
                out,
                "# HELP {name} {help}\n# TYPE {name} {kind}\n{name} {value}"
            );
        }
    }

    fn close(&self) -> StorageFuture<()> {
        self.closed.store(true, Relaxed);
        // Dropping the senders lets each writer finish what is queued and exit.
        self.writers
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .clear();
        let tasks: Vec<_> = self
            .tasks
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .drain(..)
            .collect();
        let stop = self.stop.clone();
        let pool = self.shared.pool.clone();
        Box::pin(async move {
            // Writers first (they drain their queues), then the listener.
            let (writers, listener): (Vec<_>, Vec<_>) = {
                let count = tasks.len().saturating_sub(1);
                let mut tasks = tasks;
                let listener = tasks.split_off(count);
                (tasks, listener)
            };
            for task in writers {
                let _ = task.await;
            }
            stop.cancel();
            for task in listener {
                let _ = task.await;
            }
            pool.close();
            Ok(())
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A database whose default is `synchronous_commit = off` (a common tuning) still gets
    /// durable commits from the relay's connections.
    #[tokio::test]
    async fn the_relays_connections_commit_durably_whatever_the_default() -> anyhow::Result<()> {
        let db = crate::storage::test_db::TestDatabase::create().await?;
        let name = db.url().rsplit('/').next().unwrap_or_default().to_owned();
        let (admin, connection) = db
            .url()
            .parse::<tokio_postgres::Config>()?
            .connect(NoTls)
            .await?;
        let driver = tokio::spawn(connection);
        admin
            .batch_execute(&format!(
                "ALTER DATABASE {name} SET synchronous_commit = off"
            ))
            .await?;
        drop(admin);
        let _ = driver.await;
        let storage = PostgresStorage::open(
            db.url(),
            Postgres::default(),
            Arc::new(crate::live::LocalHub::default()),
        )
        .await?;
        let client = storage.shared.pool.get().await?;
        let setting: String = client
            .query_one("SHOW synchronous_commit", &[])
            .await?
            .get(0);
        drop(client);
        storage.close().await?;
        assert_eq!(setting, "on");
        Ok(())
    }

    /// An erase this instance heard of while it read a token (another instance erased the
    /// space just after the read) leaves nothing cached: before, the stale hash stayed and the
    /// space answered "not found" instead of "erased".
    #[test]
    fn a_token_read_before_an_erase_is_not_cached_after_it() {
        let cache = TokenCache::default();
        let space = SpaceId([7; 32]);
        let read_at = cache.generation();
        // The erase's notification arrives while the read is on its way back.
        cache.forget(&space);
        cache.remember(space, [1; 32], read_at);
        assert_eq!(cache.get(&space), None);
        // A read begun after it is kept.
        let read_at = cache.generation();
        cache.remember(space, [1; 32], read_at);
        assert_eq!(cache.get(&space), Some([1; 32]));
        cache.forget_all();
        assert_eq!(cache.get(&space), None);
    }
}
