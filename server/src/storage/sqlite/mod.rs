//! The embedded SQLite backend: zero set-up, one file per relay, durable on every ack.
//!
//! Writes go to one writer thread that commits in groups ([`writer`]); reads use a pool of
//! read-only connections on blocking tasks ([`reader`]). Token hashes of all spaces are kept in
//! memory (64 bytes a space), so authenticating a request never touches the disk; the writer
//! updates that map after each commit, and it is the only writer.

mod checkpointer;
mod pairing;
mod reader;
mod schema;
mod seen;
mod writer;

use std::{
    collections::HashMap,
    path::{Path, PathBuf},
    sync::{
        Arc, Mutex, PoisonError, RwLock, RwLockWriteGuard,
        atomic::{AtomicU64, Ordering::Relaxed},
    },
    thread::JoinHandle,
    time::Duration,
};

use mend_protocol::{
    DeviceId, DeviceList, Page, PairingInbox, PairingState, Push, RollupPush, Sizes, Snapshot,
    SpaceId,
};
use tokio::sync::{mpsc, oneshot};

use self::{
    checkpointer::Checkpointer,
    pairing::{PairingDone, PairingOp},
    reader::Readers,
    writer::{Command, Write, Writer},
};
use super::{
    Created, EraseReason, NewPairing, PairingRecord, PairingSide, PairingSwept, PullRequest,
    Pushed, RollupStored, Storage, StorageError, StorageFuture, Swept, TokenHash, Tombstone,
};
use crate::{config::GroupCommit, live::Publisher};

/// The database file inside the data directory.
pub const DB_FILE: &str = "relay.sqlite3";

/// The lock file inside the data directory, locked for as long as the writer thread runs: a
/// second relay (or `mend-relay check`) on the same directory is refused at once. Two writers
/// on one file would each cache the spaces' counters and write them back over the other's.
pub const LOCK_FILE: &str = "relay.lock";

/// State shared by the writer thread and the async side.
#[derive(Debug)]
pub(crate) struct Shared {
    tokens: RwLock<HashMap<SpaceId, TokenHash>>,
    /// The relay-wide byte limit the writer enforces.
    pub(crate) total_quota: AtomicU64,
}

impl Default for Shared {
    fn default() -> Shared {
        Shared {
            tokens: RwLock::default(),
            total_quota: AtomicU64::new(u64::MAX),
        }
    }
}

impl Shared {
    pub(crate) fn tokens_mut(&self) -> RwLockWriteGuard<'_, HashMap<SpaceId, TokenHash>> {
        self.tokens.write().unwrap_or_else(PoisonError::into_inner)
    }
}

/// Storage in one SQLite database (WAL, `synchronous=FULL`).
#[derive(Debug)]
pub struct SqliteStorage {
    commands: mpsc::UnboundedSender<Command>,
    shared: Arc<Shared>,
    readers: Arc<Readers>,
    writer: Mutex<Option<JoinHandle<()>>>,
    checkpointer: Arc<Mutex<Checkpointer>>,
    /// Space creations per (client, window). In memory: one SQLite relay is one instance.
    creations: Mutex<crate::rate::SweptMap<([u8; 32], u64), u64>>,
}

fn backend(error: impl std::error::Error + Send + Sync + 'static) -> StorageError {
    StorageError::Backend(Box::new(error))
}

impl SqliteStorage {
    /// Opens (creating if needed) the database in `data_dir` and starts the writer thread.
    /// Committed chunks are announced to `publisher`.
    pub fn open(
        data_dir: &Path,
        publisher: Arc<dyn Publisher>,
        group_commit: GroupCommit,
    ) -> Result<SqliteStorage, StorageError> {
        std::fs::create_dir_all(data_dir).map_err(backend)?;
        let lock = lock_dir(data_dir)?;
        let path: PathBuf = data_dir.join(DB_FILE);
        let conn =
            schema::open_writer(&path, group_commit.autocheckpoint_pages).map_err(backend)?;
        let shared = Arc::new(Shared::default());
        shared
            .tokens_mut()
            .extend(reader::token_hashes(&conn).map_err(backend)?);
        let checkpointer =
            Checkpointer::start(path.clone(), group_commit.checkpoint_interval).map_err(backend)?;
        let (commands, receiver) = mpsc::unbounded_channel();
        // The writer holds the lock until it stops: after `close`, or after the last write
        // queued by anyone (a scrub task outliving the store) when the store is dropped.
        let writer = Writer::new(
            conn,
            receiver,
            shared.clone(),
            publisher,
            group_commit,
            lock,
        );
        let handle = std::thread::Builder::new()
            .name("mend-sqlite-writer".into())
            .spawn(move || writer.run())
            .map_err(backend)?;
        Ok(SqliteStorage {
            commands,
            shared,
            readers: Arc::new(Readers::new(path)),
            writer: Mutex::new(Some(handle)),
            checkpointer: Arc::new(Mutex::new(checkpointer)),
            creations: Mutex::new(crate::rate::SweptMap::new()),
        })
    }

    /// The schema version of the database in `data_dir`, read without changing anything;
    /// `None` when there is no database there.
    pub fn schema_version(data_dir: &Path) -> Result<Option<i64>, StorageError> {
        let path = data_dir.join(DB_FILE);
        if !path.try_exists().map_err(backend)? {
            return Ok(None);
        }
        let conn = schema::open_reader(&path).map_err(backend)?;
        let version = conn
            .pragma_query_value(None, "user_version", |row| row.get(0))
            .map_err(backend)?;
        Ok(Some(version))
    }

    /// The schema version this relay writes.
    pub const SCHEMA_VERSION: i64 = schema::SCHEMA_VERSION;

    /// Queues a write now (so writes issued in order commit in order) and awaits its answer.
    fn write<T: Send + 'static>(
        &self,
        make: impl FnOnce(oneshot::Sender<Result<T, StorageError>>) -> Write,
    ) -> StorageFuture<T> {
        let (reply, answer) = oneshot::channel();
        let queued = self.commands.send(Command::Write(make(reply)));
        Box::pin(async move {
            queued.map_err(|_| StorageError::Closed)?;
            answer.await.map_err(|_| StorageError::Closed)?
        })
    }

    /// Queues a pairing write and takes its answer apart with `answer`.
    fn pairing_write<T: Send + 'static>(
        &self,
        op: PairingOp,
        answer: fn(PairingDone) -> Option<T>,
    ) -> StorageFuture<T> {
        let done = self.write(|reply| Write::Pairing { op, reply });
        Box::pin(async move {
            answer(done.await?).ok_or_else(|| {
                StorageError::Backend("the writer answered another pairing write".into())
            })
        })
    }

    /// Runs a read on a blocking task.
    fn read<T: Send + 'static>(
        &self,
        read: impl FnOnce(&mut rusqlite::Connection) -> rusqlite::Result<Result<T, StorageError>>
        + Send
        + 'static,
    ) -> StorageFuture<T> {
        let readers = self.readers.clone();
        Box::pin(async move {
            tokio::task::spawn_blocking(move || readers.with(read))
                .await
                .map_err(backend)?
                .map_err(backend)?
        })
    }
}

/// Opens and locks the data directory's [`LOCK_FILE`]. The lock is advisory (`flock` on Unix,
/// `LockFileEx` on Windows) and the system drops it with the process, so a relay killed
/// outright leaves nothing to clean up. A file another user created (`sudo mend-relay
/// check`) is opened for reading, which is enough to lock it locally. A file system without
/// locks (no lock daemon behind a network mount) is warned about, not refused.
fn lock_dir(data_dir: &Path) -> Result<Option<std::fs::File>, StorageError> {
    let path = data_dir.join(LOCK_FILE);
    let opened = std::fs::OpenOptions::new()
        .create(true)
        .truncate(false)
        .write(true)
        .open(&path);
    let file = match opened {
        Ok(file) => file,
        Err(error) if error.kind() == std::io::ErrorKind::PermissionDenied => {
            std::fs::File::open(&path).map_err(backend)?
        }
        Err(error) => return Err(backend(error)),
    };
    match file.try_lock() {
        Ok(()) => Ok(Some(file)),
        Err(std::fs::TryLockError::WouldBlock) => Err(StorageError::InUse(data_dir.to_owned())),
        Err(std::fs::TryLockError::Error(error))
            if error.kind() == std::io::ErrorKind::Unsupported
                || error.raw_os_error() == Some(libc::ENOLCK) =>
        {
            tracing::warn!(
                %error,
                "the data directory cannot be locked here: make sure only one relay uses it"
            );
            Ok(None)
        }
        Err(std::fs::TryLockError::Error(error)) => Err(backend(error)),
    }
}

impl Storage for SqliteStorage {
    fn create_space(&self, space: SpaceId, token_hash: TokenHash) -> StorageFuture<Created> {
        self.write(|reply| Write::Create {
            space,
            token_hash,
            reply,
        })
    }

    fn token_hash(&self, space: SpaceId) -> StorageFuture<Option<TokenHash>> {
        Box::pin(std::future::ready(Ok(self.known_token(space))))
    }

    fn known_token(&self, space: SpaceId) -> Option<TokenHash> {
        // Every space's token is held in memory.
        self.shared
            .tokens
            .read()
            .unwrap_or_else(PoisonError::into_inner)
            .get(&space)
            .copied()
    }

    fn push(&self, space: SpaceId, push: Push, quota: u64) -> StorageFuture<Pushed> {
        self.write(|reply| Write::Push {
            space,
            push,
            quota,
            reply,
        })
    }

    fn pull(&self, space: SpaceId, request: PullRequest) -> StorageFuture<Page> {
        self.read(move |conn| reader::pull(conn, &space, request))
    }

    fn push_rollup(
        &self,
        space: SpaceId,
        rollup: RollupPush,
        quota: u64,
    ) -> StorageFuture<RollupStored> {
        self.write(|reply| Write::Rollup {
            space,
            rollup,
            quota,
            reply,
        })
    }

    fn sizes(
        &self,
        space: SpaceId,
        after: u64,
        exclude_device: Option<DeviceId>,
    ) -> StorageFuture<Sizes> {
        self.read(move |conn| reader::sizes(conn, &space, after, exclude_device))
    }

    fn put_snapshot(
        &self,
        space: SpaceId,
        snapshot: Snapshot,
        quota: u64,
        grace: Duration,
    ) -> StorageFuture<()> {
        self.write(|reply| Write::PutSnapshot {
            space,
            snapshot,
            quota,
            grace,
            reply,
        })
    }

    fn sweep_pruned(
        &self,
        grace: Duration,
        max_chunks: usize,
        max_bytes: u64,
    ) -> StorageFuture<Swept> {
        self.write(|reply| Write::Sweep {
            grace,
            max_chunks,
            max_bytes,
            reply,
        })
    }

    fn set_total_quota(&self, bytes: u64) {
        self.shared.total_quota.store(bytes, Relaxed);
    }

    fn total_bytes(&self) -> StorageFuture<u64> {
        self.read(reader::total_bytes)
    }

    fn get_snapshot(&self, space: SpaceId) -> StorageFuture<Option<Snapshot>> {
        self.read(move |conn| reader::snapshot(conn, &space).map(Ok))
    }

    fn erase(&self, space: SpaceId, reason: EraseReason) -> StorageFuture<bool> {
        let erased = self.write(|reply| Write::Erase {
            space,
            reason,
            reply,
        });
        let commands = self.commands.clone();
        Box::pin(async move {
            let Some(id) = erased.await? else {
                return Ok(false);
            };
            // The space's rows go in short transactions of their own, other writes between
            // them, in a task of its own (a caller that stops waiting does not stop it); the
            // answer waits for the last, so an erase answered `true` left nothing in the files.
            // One cut short (the relay stopping) fails here and is finished by the periodic
            // sweep: the space is erased already, so a retry finds its tombstone.
            let scrubbing = tokio::spawn(async move {
                loop {
                    let (reply, answer) = oneshot::channel();
                    commands
                        .send(Command::Write(Write::Scrub { space: id, reply }))
                        .map_err(|_| StorageError::Closed)?;
                    if !answer.await.map_err(|_| StorageError::Closed)?? {
                        return Ok(true);
                    }
                }
            });
            scrubbing.await.map_err(|_| StorageError::Closed)?
        })
    }

    fn tombstone(&self, space: SpaceId) -> StorageFuture<Option<Tombstone>> {
        self.read(move |conn| reader::tombstone(conn, &space).map(Ok))
    }

    fn claim_successor(&self, space: SpaceId, id: [u8; 32]) -> StorageFuture<[u8; 32]> {
        self.write(|reply| Write::Successor { space, id, reply })
    }

    fn touch_device(&self, space: SpaceId, device: DeviceId, at: u64) -> StorageFuture<()> {
        self.write(|reply| Write::Seen {
            space,
            device,
            at,
            reply,
        })
    }

    fn devices(&self, space: SpaceId) -> StorageFuture<DeviceList> {
        self.read(move |conn| seen::list(conn, &space))
    }

    fn count_creation(
        &self,
        client: [u8; 32],
        window_start: u64,
        keep_after: u64,
    ) -> StorageFuture<u64> {
        let mut creations = self
            .creations
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        // Counts of past windows are forgotten in amortised sweeps, not one per new client.
        let count = creations.get_or_insert_with(
            (client, window_start),
            |(_, start), _| *start < keep_after,
            || 0,
        );
        *count = count.saturating_add(1);
        Box::pin(std::future::ready(Ok(*count)))
    }

    fn open_pairing(&self, new: NewPairing) -> StorageFuture<String> {
        self.pairing_write(PairingOp::Open(new), |done| match done {
            PairingDone::Opened(mailbox) => Some(mailbox),
            _ => None,
        })
    }

    fn claim_pairing(
        &self,
        mailbox: String,
        guest_hash: TokenHash,
        now: u64,
    ) -> StorageFuture<u64> {
        let op = PairingOp::Claim {
            mailbox,
            guest_hash,
            now,
        };
        self.pairing_write(op, |done| match done {
            PairingDone::Claimed(expires_at) => Some(expires_at),
            _ => None,
        })
    }

    fn pairing(&self, mailbox: String, now: u64) -> StorageFuture<Option<PairingRecord>> {
        self.read(move |conn| pairing::record(conn, &mailbox, now))
    }

    fn post_pairing(
        &self,
        mailbox: String,
        side: PairingSide,
        body: Vec<u8>,
        now: u64,
    ) -> StorageFuture<u64> {
        let op = PairingOp::Post {
            mailbox,
            side,
            body,
            now,
        };
        self.pairing_write(op, |done| match done {
            PairingDone::Posted(seq) => Some(seq),
            _ => None,
        })
    }

    fn read_pairing(
        &self,
        mailbox: String,
        reader: PairingSide,
        after: u64,
        now: u64,
    ) -> StorageFuture<PairingInbox> {
        self.read(move |conn| pairing::inbox(conn, &mailbox, reader, after, now))
    }

    fn close_pairing(
        &self,
        mailbox: String,
        burn: bool,
        now: u64,
    ) -> StorageFuture<Option<PairingState>> {
        self.pairing_write(PairingOp::Close { mailbox, burn, now }, |done| match done {
            PairingDone::Closed(state) => Some(state),
            _ => None,
        })
    }

    fn sweep_pairings(&self, now: u64, linger: Duration) -> StorageFuture<PairingSwept> {
        self.pairing_write(PairingOp::Sweep { now, linger }, |done| match done {
            PairingDone::Swept(swept) => Some(swept),
            _ => None,
        })
    }

    fn ready(&self) -> StorageFuture<()> {
        if self.commands.is_closed() {
            return Box::pin(std::future::ready(Err(StorageError::Closed)));
        }
        self.read(|conn| {
            conn.query_row("SELECT 1", [], |_| Ok(()))?;
            Ok(Ok(()))
        })
    }

    fn audit(&self, repair: bool) -> StorageFuture<super::Audit> {
        self.write(|reply| Write::Audit { repair, reply })
    }

    fn close(&self) -> StorageFuture<()> {
        let (reply, stopped) = oneshot::channel();
        let queued = self.commands.send(Command::Stop(reply));
        let handle = self
            .writer
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .take();
        let checkpointer = self.checkpointer.clone();
        Box::pin(async move {
            if queued.is_ok() {
                // An error means the writer already stopped.
                let _ = stopped.await;
            }
            if let Some(handle) = handle {
                tokio::task::spawn_blocking(move || handle.join())
                    .await
                    .map_err(backend)?
                    .map_err(|_| {
                        StorageError::Backend("the SQLite writer thread panicked".into())
                    })?;
            }
            tokio::task::spawn_blocking(move || {
                checkpointer
                    .lock()
                    .unwrap_or_else(PoisonError::into_inner)
                    .stop();
            })
            .await
            .map_err(backend)?;
            Ok(())
        })
    }
}
