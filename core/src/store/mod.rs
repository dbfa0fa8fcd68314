//! The device's local store: one SQLite database per device, in WAL mode, with one writer.
//!
//! A write call returns only after its change bytes are committed here. A database that fails
//! to open is reported and left exactly as it was: a journal cannot always be re-synced.

pub mod migrations;
mod proofs;
mod sync;
mod view;

pub(crate) use proofs::{Checked, GroupRow, HeldRow, ProofRow, split_hashes};
pub use sync::{PeerSeqs, PulledChange, SyncState};
pub use view::{Envelope, RowData, SpaceView, ViewRow, ViewUpdate};

use std::{
    fs::{File, OpenOptions, TryLockError},
    path::{Path, PathBuf},
    time::{Duration, Instant},
};

use rusqlite::{Connection, OpenFlags, OptionalExtension, params};

use crate::error::{Error, Result};

/// Which document a row belongs to.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Space {
    /// The couple's shared journal.
    Couple,
    /// This partner's personal space.
    Personal,
}

impl Space {
    /// Both spaces.
    pub const ALL: [Space; 2] = [Space::Couple, Space::Personal];

    /// The stored name.
    pub fn as_str(self) -> &'static str {
        match self {
            Space::Couple => "couple",
            Space::Personal => "personal",
        }
    }
}

/// How hard a commit waits for the disk.
///
/// Either way an edit that returned survives the app being killed at any moment (WAL). The
/// difference is a power cut or OS crash: `Full` fsyncs every commit (milliseconds on slow
/// flash), `Normal` fsyncs at checkpoints, so the last few edits before a power cut can roll back
/// (the database itself stays consistent).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub enum Durability {
    /// fsync on every commit.
    Full,
    /// fsync at WAL checkpoints (the default).
    #[default]
    Normal,
}

/// Who may write the database, and for how long the writer holds its lock file.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub enum LockMode {
    /// The writer holds the lock for as long as it is open: a second process gets
    /// `Error::Locked` at once (the default).
    #[default]
    Exclusive,
    /// The lock is held only around a write or a sync step, waiting up to `wait` for it, so an
    /// app and its extensions (a widget, a share or notification extension) can each keep
    /// the journal open. Every process on the database must use this mode.
    Extension {
        /// How long a step waits for another process's step before failing with `Locked`.
        wait: Duration,
    },
}

impl LockMode {
    /// How long a step waits by default: SQLite's own busy timeout here.
    pub const EXTENSION_WAIT: Duration = Duration::from_secs(5);
    /// Extension mode with the default wait.
    pub const EXTENSION: LockMode = LockMode::Extension {
        wait: Self::EXTENSION_WAIT,
    };
}

/// The writer's lock file. Released by the OS when the process dies, so a crash never leaves
/// it stuck.
#[derive(Debug)]
struct WriterLock {
    file: File,
    mode: LockMode,
    held: bool,
}

impl WriterLock {
    /// The lock file beside the database at `path`, created (owner-only) if missing; not
    /// taken yet.
    fn open(path: &Path, mode: LockMode) -> Result<Self> {
        let mut options = OpenOptions::new();
        options.create(true).truncate(false).write(true);
        owner_only(&mut options);
        let file = options
            .open(lock_path(path))
            .map_err(|e| Error::Unavailable {
                path: path.display().to_string(),
                reason: format!("cannot create lock file: {e}"),
            })?;
        Ok(Self {
            file,
            mode,
            held: false,
        })
    }

    /// Takes the lock: at once or `Locked` in exclusive mode, within the mode's wait otherwise.
    fn take(&mut self, shown: &str) -> Result<()> {
        let wait = match self.mode {
            LockMode::Exclusive => Duration::ZERO,
            LockMode::Extension { wait } => wait,
        };
        // `None`: a wait too long to represent, as good as forever.
        let until = Instant::now().checked_add(wait);
        let mut pause = Duration::from_millis(1);
        loop {
            match self.file.try_lock() {
                Ok(()) => {
                    self.held = true;
                    return Ok(());
                }
                Err(TryLockError::WouldBlock) if until.is_none_or(|u| Instant::now() < u) => {
                    // Another process's step is a write or a merge: milliseconds, rarely more.
                    let left = until.map_or(pause, |u| u.saturating_duration_since(Instant::now()));
                    std::thread::sleep(pause.min(left));
                    pause = (pause * 2).min(Duration::from_millis(50));
                }
                Err(TryLockError::WouldBlock) => return Err(Error::Locked(shown.to_owned())),
                Err(TryLockError::Error(e)) => {
                    return Err(Error::Unavailable {
                        path: shown.to_owned(),
                        reason: format!("cannot lock: {e}"),
                    });
                }
            }
        }
    }

    fn release(&mut self) {
        if self.held {
            // Unlocking a file this process locked cannot fail in a way worth reporting: the
            // lock goes with the file at the latest.
            let _ = self.file.unlock();
            self.held = false;
        }
    }
}

/// The local database.
#[derive(Debug)]
pub struct Store {
    conn: Connection,
    path: PathBuf,
    // The writer's lock file: a second writer gets `Error::Locked` instead of writing beside
    // it. In exclusive mode held for the writer's life; in extension mode only between
    // `begin_step` and `end_step`. Readers hold none.
    lock: Option<WriterLock>,
    /// Change rows per space since its last full save, counted once and then kept up by the
    /// writes themselves, so an edit never pays for a COUNT.
    rows: [std::cell::Cell<Option<u64>>; 2],
    /// Steps whose commits were fsynced whatever the durability ([`Store::fsync_commits`]).
    fsynced_steps: u64,
}

/// What SQLite's refusal to open `path` means: the file is damaged (not a database, corrupt
/// pages), or the device cannot open it now (I/O, a full disk, a read-only or protected file).
fn opening_failed(path: &str, e: rusqlite::Error) -> Error {
    let damaged = crate::error::damaged_database(&e);
    let (path, reason) = (path.to_owned(), e.to_string());
    if damaged {
        Error::Open { path, reason }
    } else {
        Error::Unavailable { path, reason }
    }
}

/// New files of a journal are its owner's alone (mode 0600 on Unix).
fn owner_only(options: &mut OpenOptions) {
    #[cfg(unix)]
    std::os::unix::fs::OpenOptionsExt::mode(options, 0o600);
    #[cfg(not(unix))]
    let _ = options;
}

impl Store {
    /// Opens the database at `path`. With `create`, a missing file is created; without it, a
    /// missing file is an error. An existing file is never replaced. Returns with the lock
    /// held; in extension mode [`Store::end_step`] releases it.
    pub fn open(path: &Path, create: bool, durability: Durability, mode: LockMode) -> Result<Self> {
        let shown = path.display().to_string();
        let open_err = |reason: String| Error::Open {
            path: shown.clone(),
            reason,
        };
        let unavailable = |reason: String| Error::Unavailable {
            path: shown.clone(),
            reason,
        };
        let sqlite_err = |e: rusqlite::Error| opening_failed(&shown, e);
        if !create && !path.exists() {
            return Err(open_err("no journal database there".into()));
        }
        let mut lock = WriterLock::open(path, mode)?;
        lock.take(&shown)?;

        let mut flags = OpenFlags::SQLITE_OPEN_READ_WRITE | OpenFlags::SQLITE_OPEN_NO_MUTEX;
        if create {
            flags |= OpenFlags::SQLITE_OPEN_CREATE;
            // The journal's words are in this file in the clear: readable by its owner only,
            // whatever the umask or the directory. SQLite gives its WAL and shared-memory files
            // the database's mode, so creating the (empty) file here first covers them too.
            let mut options = OpenOptions::new();
            options.write(true).create_new(true);
            owner_only(&mut options);
            match options.open(path) {
                Ok(_) => {}
                Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {}
                Err(e) => return Err(unavailable(format!("cannot create the database: {e}"))),
            }
        }
        let mut conn = Connection::open_with_flags(path, flags).map_err(sqlite_err)?;
        // Read the version before anything writes (switching to WAL rewrites the header), so a
        // database from a newer build, or a file that is not a database, stays byte-for-byte.
        let version: u32 = conn
            .pragma_query_value(None, "user_version", |r| r.get(0))
            .map_err(sqlite_err)?;
        if version > migrations::LATEST {
            return Err(Error::TooNew {
                found: version,
                supported: migrations::LATEST,
            });
        }
        let sync = match durability {
            Durability::Full => "FULL",
            Durability::Normal => "NORMAL",
        };
        // Checkpoints fsync; at SQLite's default (every 1000 WAL pages, ~150 edits here) they
        // land in the slowest 1 % of edits. Every 4000 pages (≤ 16 MiB of WAL, truncated back
        // to 32 MiB at most) keeps them rarer than that.
        // `secure_delete`: what a rotation forgets (a removed record's words in an old
        // epoch's history) must not linger in free pages of the file.
        let setup = format!(
            "PRAGMA journal_mode = WAL; PRAGMA synchronous = {sync}; PRAGMA foreign_keys = ON; \
             PRAGMA busy_timeout = 5000; PRAGMA wal_autocheckpoint = 4000; \
             PRAGMA journal_size_limit = 33554432; PRAGMA secure_delete = ON;"
        );
        conn.execute_batch(&setup).map_err(sqlite_err)?;
        migrations::migrate(&mut conn).map_err(|e| match e {
            Error::TooNew { .. } => e,
            Error::Storage(e) => sqlite_err(e),
            other => open_err(other.to_string()),
        })?;
        Ok(Self {
            conn,
            path: path.to_owned(),
            lock: Some(lock),
            rows: Default::default(),
            fsynced_steps: 0,
        })
    }

    /// A read-only connection to the database a writer in this process has open. In WAL mode
    /// it reads the last committed state and never waits for the writer, so the app's reads do
    /// not queue behind a merge or a sync round.
    pub fn open_reader(path: &Path) -> Result<Self> {
        let shown = path.display().to_string();
        let open_err = |reason: String| Error::Open {
            path: shown.clone(),
            reason,
        };
        let sqlite_err = |e: rusqlite::Error| opening_failed(&shown, e);
        let flags = OpenFlags::SQLITE_OPEN_READ_ONLY | OpenFlags::SQLITE_OPEN_NO_MUTEX;
        let conn = Connection::open_with_flags(path, flags).map_err(sqlite_err)?;
        conn.execute_batch("PRAGMA busy_timeout = 5000;")
            .map_err(sqlite_err)?;
        let version: u32 = conn
            .pragma_query_value(None, "user_version", |r| r.get(0))
            .map_err(sqlite_err)?;
        if version != migrations::LATEST {
            return Err(open_err(format!(
                "schema version {version}, expected {}",
                migrations::LATEST
            )));
        }
        Ok(Self {
            conn,
            path: path.to_owned(),
            lock: None,
            rows: Default::default(),
            fsynced_steps: 0,
        })
    }

    /// Takes the writer's lock for one step, in extension mode. Returns false when there is
    /// nothing to take: exclusive mode (held for good), a reader, or a step already running.
    pub(crate) fn begin_step(&mut self) -> Result<bool> {
        let shown = self.path.display().to_string();
        match self.lock.as_mut() {
            Some(lock) if lock.mode != LockMode::Exclusive && !lock.held => {
                lock.take(&shown)?;
                Ok(true)
            }
            _ => Ok(false),
        }
    }

    /// Whether other processes may write beside this one (extension mode).
    pub(crate) fn is_shared(&self) -> bool {
        self.lock
            .as_ref()
            .is_some_and(|l| l.mode != LockMode::Exclusive)
    }

    /// Releases the lock a step took (extension mode only).
    pub(crate) fn end_step(&mut self) {
        if let Some(lock) = self.lock.as_mut()
            && lock.mode != LockMode::Exclusive
        {
            lock.release();
        }
    }

    /// The change rows a space had by this connection's count, if it has counted them.
    pub(crate) fn counted_rows(&self, space: Space) -> Option<u64> {
        self.rows[space as usize].get()
    }

    /// Forgets what was counted from the tables: another process may have changed them.
    pub(crate) fn forget_counts(&self) {
        for cell in &self.rows {
            cell.set(None);
        }
    }

    /// Where the database lives.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// The connection, for diagnostics and tests that inspect the tables.
    pub fn conn(&self) -> &Connection {
        &self.conn
    }

    /// SQLite's `data_version`: it changes when another connection commits.
    pub(crate) fn data_version(&self) -> Result<i64> {
        Ok(self
            .conn
            .pragma_query_value(None, "data_version", |r| r.get(0))?)
    }

    /// A metadata value.
    pub fn meta(&self, key: &str) -> Result<Option<String>> {
        Ok(self
            .conn
            .query_row("SELECT value FROM meta WHERE key = ?1", [key], |r| r.get(0))
            .optional()?)
    }

    /// Sets metadata values in one transaction.
    pub fn set_meta(&mut self, pairs: &[(&str, &str)]) -> Result<()> {
        let tx = self.conn.transaction()?;
        Self::put_meta(&tx, pairs)?;
        tx.commit()?;
        Ok(())
    }

    /// Whether either space holds any document (a snapshot or a change).
    pub(crate) fn has_documents(&self) -> Result<bool> {
        Ok(self.conn.query_row(
            "SELECT EXISTS (SELECT 1 FROM doc_snapshots) OR EXISTS (SELECT 1 FROM doc_changes)",
            [],
            |r| r.get(0),
        )?)
    }

    /// Removes the database at `path` (with its WAL and shared-memory files) when `judge`
    /// says so, holding the writer's lock while it judges and removes: a writer that has it
    /// open, or is making it, gets its file kept and the caller `Locked`. The lock file
    /// stays (a process waiting on it must not end up locking a file no one else sees).
    /// `judge` runs once before the lock is taken (a whole journal someone has open is
    /// reported by the caller as it is, not as `Locked`) and again under it.
    pub fn remove_if(path: &Path, judge: impl Fn(&Path) -> Result<bool>) -> Result<bool> {
        if !path.exists() || !judge(path)? {
            return Ok(false);
        }
        let mut lock = WriterLock::open(path, LockMode::Exclusive)?;
        lock.take(&path.display().to_string())?;
        let removed = if judge(path)? {
            Self::remove_files(path, &["", "-wal", "-shm"])?;
            true
        } else {
            false
        };
        lock.release();
        Ok(removed)
    }

    /// Removes the files named `path` plus each of `suffixes` that exist.
    pub fn remove_files(path: &Path, suffixes: &[&str]) -> Result<()> {
        for suffix in suffixes {
            let mut name = path.as_os_str().to_owned();
            name.push(suffix);
            match std::fs::remove_file(PathBuf::from(name)) {
                Ok(()) => {}
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
                Err(e) => return Err(Error::Io(e)),
            }
        }
        Ok(())
    }

    /// Whether the file at `path` is a SQLite database with nothing in it (a journal cut off
    /// before its schema was written). Read-only; false for anything else or what cannot be
    /// read.
    pub(crate) fn is_empty_database(path: &Path) -> bool {
        let flags = OpenFlags::SQLITE_OPEN_READ_ONLY | OpenFlags::SQLITE_OPEN_NO_MUTEX;
        Connection::open_with_flags(path, flags)
            .and_then(|conn| {
                conn.query_row("SELECT count(*) FROM sqlite_master", [], |r| {
                    r.get::<_, i64>(0)
                })
            })
            .is_ok_and(|n| n == 0)
    }

    /// Writes `pairs` into the metadata inside `tx`.
    pub(crate) fn put_meta(tx: &rusqlite::Transaction<'_>, pairs: &[(&str, &str)]) -> Result<()> {
        for (k, v) in pairs {
            tx.execute(
                "INSERT INTO meta (key, value) VALUES (?1, ?2) \
                 ON CONFLICT (key) DO UPDATE SET value = excluded.value",
                params![k, v],
            )?;
        }
        Ok(())
    }

    /// Adds `n` committed change rows to a space's count.
    pub(crate) fn count_rows(&self, space: Space, n: u64) {
        let cell = &self.rows[space as usize];
        if let Some(rows) = cell.get() {
            cell.set(Some(rows + n));
        }
    }

    /// A space's latest full save, its change chunks since (concatenated), and their count.
    pub fn load(&self, space: Space) -> Result<(Option<Vec<u8>>, Vec<u8>, u64)> {
        let snapshot: Option<Vec<u8>> = self
            .conn
            .query_row(
                "SELECT bytes FROM doc_snapshots WHERE space = ?1",
                [space.as_str()],
                |r| r.get(0),
            )
            .optional()?;
        let mut stmt = self
            .conn
            .prepare_cached("SELECT bytes FROM doc_changes WHERE space = ?1 ORDER BY id")?;
        let mut rows = stmt.query([space.as_str()])?;
        let mut changes = Vec::new();
        let mut count = 0;
        while let Some(row) = rows.next()? {
            let bytes = row.get_ref(0)?.as_blob().map_err(rusqlite::Error::from)?;
            changes.extend_from_slice(bytes);
            count += 1;
        }
        Ok((snapshot, changes, count))
    }

    /// Commits change chunks of one or both spaces, with what they do to the read model, in one
    /// transaction. Returns when durable. `local` changes were made on this device and also wait
    /// in `unsent` for the relay.
    pub(crate) fn append_changes(
        &mut self,
        changes: &[(Space, &[u8])],
        local: bool,
        views: &[ViewUpdate],
    ) -> Result<()> {
        let tx = self.conn.transaction()?;
        for view in views {
            Self::write_view(&tx, view)?;
        }
        {
            let mut stmt =
                tx.prepare_cached("INSERT INTO doc_changes (space, bytes) VALUES (?1, ?2)")?;
            let mut unsent =
                tx.prepare_cached("INSERT INTO unsent (space, bytes) VALUES (?1, ?2)")?;
            for (space, bytes) in changes {
                stmt.execute(params![space.as_str(), bytes])?;
                if local {
                    unsent.execute(params![space.as_str(), bytes])?;
                }
            }
        }
        tx.commit()?;
        for (space, _) in changes {
            self.count_rows(*space, 1);
        }
        Ok(())
    }

    /// Replaces a space's rows with one full save, in one transaction.
    pub fn compact(&mut self, space: Space, full_save: &[u8], now_ms: i64) -> Result<()> {
        let tx = self.conn.transaction()?;
        tx.execute(
            "INSERT INTO doc_snapshots (space, bytes, saved_at) VALUES (?1, ?2, ?3) \
             ON CONFLICT (space) DO UPDATE SET bytes = excluded.bytes, saved_at = excluded.saved_at",
            params![space.as_str(), full_save, now_ms],
        )?;
        tx.execute("DELETE FROM doc_changes WHERE space = ?1", [space.as_str()])?;
        tx.commit()?;
        self.rows[space as usize].set(Some(0));
        Ok(())
    }

    /// How many change chunks a space has since its last full save.
    pub fn change_rows(&self, space: Space) -> Result<u64> {
        let cell = &self.rows[space as usize];
        if let Some(rows) = cell.get() {
            return Ok(rows);
        }
        let n: i64 = self.conn.query_row(
            "SELECT COUNT(*) FROM doc_changes WHERE space = ?1",
            [space.as_str()],
            |r| r.get(0),
        )?;
        cell.set(Some(n.unsigned_abs()));
        Ok(n.unsigned_abs())
    }
}

/// The lock file beside a database.
fn lock_path(db: &Path) -> PathBuf {
    let mut name = db.file_name().map(|n| n.to_os_string()).unwrap_or_default();
    name.push(".lock");
    db.with_file_name(name)
}
