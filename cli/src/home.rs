//! One device's state on disk: `journal.db` (the replica) and `keyring` (its secrets).
//!
//! The keyring is what a phone keeps in Keychain or Keystore; here it is a file only its owner
//! can read (mode 0600), written whole by rename so a crash never leaves half a key. It is
//! never printed or logged.

use std::{
    fs,
    io::Write,
    path::{Path, PathBuf},
    sync::{
        Arc,
        atomic::{AtomicBool, Ordering},
    },
};

use anyhow::{Context, Result};
use mend_client::{Device, Keyring, RelayOptions, SyncObserver};
use mend_core::journal::OpenOptions;
use zeroize::Zeroizing;

use crate::{
    failure::{Exit, Failure},
    tell,
};

const JOURNAL: &str = "journal.db";
const KEYRING: &str = "keyring";

/// A home directory.
#[derive(Debug, Clone)]
pub struct Home {
    dir: PathBuf,
    /// Whether this run created the directory, so a failed `init` can leave nothing behind.
    made: Arc<AtomicBool>,
    /// How to reach the relay: `--relay-pin`, `--insecure-cleartext-relay`.
    relay: RelayOptions,
}

impl Home {
    /// The home given with `--home` or `MEND_HOME`, else `~/.mend`.
    pub fn resolve(given: Option<PathBuf>, relay: RelayOptions) -> Result<Self> {
        let dir = match given {
            Some(dir) => dir,
            None => std::env::var_os("HOME")
                .map(|h| PathBuf::from(h).join(".mend"))
                .ok_or_else(|| {
                    Failure::new(Exit::Usage, "no home: pass --home DIR or set MEND_HOME")
                })?,
        };
        Ok(Self {
            dir,
            made: Arc::default(),
            relay,
        })
    }

    /// How to reach the relay, as the command line says.
    pub fn relay(&self) -> RelayOptions {
        self.relay.clone()
    }

    /// The directory.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// The journal database.
    pub fn journal_path(&self) -> PathBuf {
        self.dir.join(JOURNAL)
    }

    fn keyring_path(&self) -> PathBuf {
        self.dir.join(KEYRING)
    }

    /// Refuses to create a journal over an existing one, or beside a keyring: the keyring may
    /// hold the only keys that can read the relay's copy of a journal.
    pub fn ensure_empty(&self) -> Result<()> {
        let unfinished = mend_core::Journal::is_unfinished(&self.journal_path())?;
        if self.keyring_path().exists() && (!self.journal_path().exists() || unfinished) {
            return Err(Failure::new(
                Exit::Home,
                format!(
                    "{} holds a keyring but no journal; it was kept, because it may be the only \
                     copy of your keys. Move it somewhere safe to start afresh, or recover the \
                     journal by joining from your other device (`mend invite --device` there, \
                     then `mend join` with another --home)",
                    self.dir.display()
                ),
            )
            .into());
        }
        if self.journal_path().exists() && !unfinished && !self.keyring_path().exists() {
            // Cut off between making the journal and storing its keyring: nothing can open it.
            return Err(Failure::new(
                Exit::Home,
                format!(
                    "{} holds a journal without its keyring, which nothing can open; remove {} \
                     (and the files beside it named after it) to start afresh",
                    self.dir.display(),
                    self.journal_path().display()
                ),
            )
            .into());
        }
        // A journal whose making was cut off holds nothing yet: making it again replaces it.
        if self.journal_path().exists() && !unfinished {
            return Err(Failure::new(
                Exit::Home,
                format!(
                    "a journal already exists in {}; use another --home, or `mend erase --yes` first",
                    self.dir.display()
                ),
            )
            .into());
        }
        if !self.dir.exists() {
            fs::create_dir_all(&self.dir)
                .with_context(|| format!("cannot create the home {}", self.dir.display()))?;
            self.made.store(true, Ordering::Relaxed);
            // Only a home made here is narrowed: an existing directory is the user's to set.
            restrict(&self.dir, 0o700)?;
        }
        Ok(())
    }

    /// Opens the device kept in this home.
    pub fn open(&self, observer: Option<Arc<dyn SyncObserver>>) -> Result<Device> {
        if !self.journal_path().exists() {
            return Err(Failure::new(
                Exit::Home,
                format!(
                    "no journal in {}; create one with `mend init` or join one with `mend join`",
                    self.dir.display()
                ),
            )
            .into());
        }
        let keyring = self.load_keyring()?;
        let calendar = crate::dates::calendar()?;
        let kept = keyring.clone();
        let device = Device::open(
            &self.journal_path(),
            keyring,
            OpenOptions::default(),
            self.relay(),
            observer,
        )
        .map_err(|e| self.damaged(e))?;
        // A new --relay-pin, and the signing keys an older keyring gets on its first open, are
        // kept for the next runs.
        if device.keyring() != kept {
            self.save_keyring(&device.keyring())?;
        }
        device.set_calendar(calendar)?;
        if let Some(wait) = rejoin_wait()? {
            device.set_rejoin_wait(wait)?;
        }
        Ok(device)
    }

    /// Stores the device's keyring again if it changed (a sync that moved the journal to a new
    /// epoch hands it new secrets).
    pub fn keep_keyring(&self, device: &Device) -> Result<()> {
        let now = device.keyring();
        if self.load_keyring()? != now {
            self.save_keyring(&now)?;
        }
        Ok(())
    }

    /// A journal that cannot be read gets its own exit code and the way back; the file is
    /// never touched.
    fn damaged(&self, e: mend_core::Error) -> anyhow::Error {
        let unreadable = e.is_damaged_journal();
        if !unreadable {
            return e.into();
        }
        Failure::new(
            Exit::Damaged,
            format!(
                "{} is damaged and cannot be read ({e}); it was left as it is. To recover, keep \
                 the keyring, move journal.db aside, and join again from your other device \
                 (`mend invite --device` there, `mend join` here), or restore a backup",
                self.journal_path().display()
            ),
        )
        .into()
    }

    fn load_keyring(&self) -> Result<Keyring> {
        let path = self.keyring_path();
        // The whole keyring: kept in a buffer wiped on drop.
        let text = Zeroizing::new(fs::read_to_string(&path).map_err(|e| {
            Failure::new(
                Exit::Home,
                format!("cannot read the keyring {}: {}", path.display(), e.kind()),
            )
        })?);
        warn_if_readable_by_others(&path);
        Keyring::from_secret_string(&text).map_err(|_| {
            Failure::new(
                Exit::Home,
                format!("{} is not a Mend keyring", path.display()),
            )
            .into()
        })
    }

    /// Stores the keyring, readable by its owner only.
    pub fn save_keyring(&self, keyring: &Keyring) -> Result<()> {
        let path = self.keyring_path();
        let tmp = self.dir.join(format!("{KEYRING}.tmp"));
        let _ = fs::remove_file(&tmp);
        let mut options = fs::OpenOptions::new();
        options.write(true).create_new(true);
        #[cfg(unix)]
        std::os::unix::fs::OpenOptionsExt::mode(&mut options, 0o600);
        let mut file = options
            .open(&tmp)
            .with_context(|| format!("cannot write the keyring in {}", self.dir.display()))?;
        file.write_all(keyring.to_secret_string().as_bytes())
            .and_then(|()| file.sync_all())
            .with_context(|| format!("cannot write the keyring in {}", self.dir.display()))?;
        fs::rename(&tmp, &path)
            .with_context(|| format!("cannot write the keyring in {}", self.dir.display()))?;
        // The rename is durable only once the directory is: a power cut could otherwise bring
        // back the keyring from before an epoch move, or none after a join.
        #[cfg(unix)]
        fs::File::open(&self.dir)
            .and_then(|dir| dir.sync_all())
            .with_context(|| format!("cannot write the keyring in {}", self.dir.display()))?;
        Ok(())
    }

    /// Removes a journal created a moment ago whose keys could not be stored: without them it
    /// could never sync. (A journal that existed before is never deleted this way.)
    pub fn discard_new(&self) {
        self.remove_files();
        if self.made.load(Ordering::Relaxed) {
            let _ = fs::remove_dir(&self.dir);
        }
    }

    /// Deletes this device's journal and keys, and the home if nothing else is in it.
    pub fn erase_local(&self) -> Result<()> {
        self.remove_files();
        if self.journal_path().exists() || self.keyring_path().exists() {
            return Err(Failure::new(
                Exit::Local,
                format!("could not delete everything in {}", self.dir.display()),
            )
            .into());
        }
        let _ = fs::remove_dir(&self.dir);
        Ok(())
    }

    fn remove_files(&self) {
        for name in [
            JOURNAL.to_owned(),
            format!("{JOURNAL}-wal"),
            format!("{JOURNAL}-shm"),
            format!("{JOURNAL}-journal"),
            format!("{JOURNAL}.lock"),
            KEYRING.to_owned(),
            format!("{KEYRING}.tmp"),
        ] {
            let _ = fs::remove_file(self.dir.join(name));
        }
    }
}

#[cfg(unix)]
fn restrict(path: &Path, mode: u32) -> Result<()> {
    use std::os::unix::fs::PermissionsExt;
    fs::set_permissions(path, fs::Permissions::from_mode(mode))
        .with_context(|| format!("cannot set permissions on {}", path.display()))
}

#[cfg(not(unix))]
fn restrict(_path: &Path, _mode: u32) -> Result<()> {
    Ok(())
}

#[cfg(unix)]
fn warn_if_readable_by_others(path: &Path) {
    use std::os::unix::fs::PermissionsExt;
    if let Ok(meta) = fs::metadata(path)
        && meta.permissions().mode() & 0o077 != 0
    {
        tell!(
            "mend: warning: {} can be read by other users; run `chmod 600` on it",
            path.display()
        );
    }
}

#[cfg(not(unix))]
fn warn_if_readable_by_others(_path: &Path) {}

/// The wait before a rejoin may go ahead, from `MEND_REJOIN_WAIT` (seconds), when set.
fn rejoin_wait() -> Result<Option<std::time::Duration>> {
    match std::env::var("MEND_REJOIN_WAIT") {
        Ok(secs) => secs
            .trim()
            .parse::<u64>()
            .map(|s| Some(std::time::Duration::from_secs(s)))
            .map_err(|_| Failure::input("MEND_REJOIN_WAIT: a number of seconds").into()),
        Err(_) => Ok(None),
    }
}
