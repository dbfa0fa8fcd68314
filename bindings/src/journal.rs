//! [`Journal`]: the object an app holds, one per open journal.
//!
//! A handle over `mend_client::Device`; each method forwards to one call and translates its
//! arguments and result. Every call that touches the database or the network is async
//! (`suspend` in Kotlin, `async` in Swift): the work runs on the bindings' blocking pool, so
//! no call blocks the caller's thread. Only `keyring_secret`, `is_live`,
//! `cancel_sync` and `subscribe*` are plain calls: they read memory and return within
//! microseconds.

use std::{
    path::{Path, PathBuf},
    sync::{Arc, PoisonError, RwLock},
    time::{Duration, Instant},
};

use mend_client::{Device, Keyring, RelayOptions, SyncObserver};
use mend_core::{
    Calendar, Journal as CoreJournal, LockMode, OpenOptions, Weekday, crypto::PairingKind,
};
use tokio::sync::watch;
use zeroize::Zeroizing;

use crate::{
    bodies::RecordBody,
    callbacks::{Hub, JournalListener, JournalSubscription, SyncStatusListener},
    convert::{PartnerId, RecordId, date, record_id},
    enums::{
        ClaimStatus, ConsentState, ExportFormat, NeedResponseKind, PartnerView, QuestionStatus,
        RecordVisibility,
    },
    error::{MendError, Result},
    pairing::{Invitation, RejoinAsk, RejoinAsks},
    queries::{
        BoundaryStatus, PacketOptions, ProgressReport, QuestionThread, RecordThread, TimelinePage,
        TimelineQuery,
    },
    records::{JournalRecord, Partner, records},
    runtime::{blocking, run, runtime},
    sync::{EraseReport, SyncReport},
};

/// How long `close` waits for calls still in flight before giving up with `locked`.
const CLOSE_WAIT: Duration = Duration::from_secs(30);
/// The most a round that follows a new epoch during live sync takes: below `CLOSE_WAIT`, so a
/// shutdown that comes during one still closes.
const FOLLOW_BUDGET: Duration = Duration::from_secs(20);

/// How a journal is opened. Every field has a default: `JournalOptions()` is fine.
#[derive(Clone, Debug, Default, PartialEq, Eq, uniffi::Record)]
pub struct JournalOptions {
    /// The couple's IANA time zone (`Australia/Sydney`); UTC when null. "Today", check-in
    /// dates and weeks follow it. `set_calendar` changes it later.
    #[uniffi(default)]
    pub time_zone: Option<String>,
    /// The first day of the couple's week (`monday` … `sunday`); Monday when null.
    #[uniffi(default)]
    pub week_starts: Option<String>,
    /// The relay's pin (`sha256/<base64>`, the SHA-256 of its certificate's public key): trusts
    /// a self-hosted relay no public CA signed. Kept in the keyring and passed on in invites;
    /// on `join` it replaces the invite's pin, on `open` the keyring's (keep `keyring_secret()`
    /// again afterwards).
    #[uniffi(default)]
    pub relay_pin: Option<String>,
    /// Allows `http://` to a relay off this device. INSECURE, for development only: anyone on
    /// the network can take the relay token and erase, prune or fill the journal's spaces.
    /// Loopback relays never need it.
    #[uniffi(default)]
    pub allow_insecure_cleartext: bool,
    /// Shares the journal with app extensions (a widget, a share or notification extension):
    /// the file lock is held only around each write or sync step, waiting up to 5 s for
    /// another process's, then `locked`. The app and every extension must all set it.
    #[uniffi(default)]
    pub extension_mode: bool,
    /// What this device is called in `devices()` (both partners see it): at most 64 bytes,
    /// no control characters. Written beside the device's certificate once it is in the
    /// journal (the first sync for a joining device); on `open` it renames the device when
    /// it differs. Null writes no name.
    #[uniffi(default)]
    pub device_name: Option<String>,
}

impl JournalOptions {
    /// How the journal's database is opened.
    fn open(&self) -> OpenOptions {
        OpenOptions {
            lock: if self.extension_mode {
                LockMode::EXTENSION
            } else {
                LockMode::Exclusive
            },
            ..OpenOptions::default()
        }
    }

    /// How the journal reaches its relay.
    pub(crate) fn relay(&self) -> Result<RelayOptions> {
        let pin = self
            .relay_pin
            .as_deref()
            .map(mend_core::crypto::RelayPin::parse)
            .transpose()?;
        Ok(RelayOptions {
            pin,
            allow_insecure_cleartext: self.allow_insecure_cleartext,
            extra_roots: Vec::new(),
        })
    }

    /// The device name these options ask for, checked before anything is opened or created.
    fn device_name(&self) -> Result<Option<String>> {
        Ok(self
            .device_name
            .as_deref()
            .map(mend_core::journal::clean_device_name)
            .transpose()?)
    }

    /// The calendar these options ask for, checked before anything is opened or created.
    fn calendar(&self) -> Result<Option<Calendar>> {
        if self.time_zone.is_none() && self.week_starts.is_none() {
            return Ok(None);
        }
        let zone = self.time_zone.as_deref().unwrap_or("UTC");
        let week = Weekday::parse(self.week_starts.as_deref().unwrap_or("monday"))?;
        Ok(Some(Calendar::new(zone, week)?))
    }
}

/// One device's replica of a couple's journal, with its keys and its relay connection.
///
/// Who keeps the secrets: the app. After `create` or `join`, store `keyring_secret()` in the
/// Keychain (iOS) or in Keystore-backed storage (Android); hand it back to `open` at each
/// launch. The database never holds it.
#[derive(uniffi::Object)]
pub struct Journal {
    /// `None` once closed. Shared with the task a `shutdown` runs in.
    device: Arc<RwLock<Option<Arc<Device>>>>,
    hub: Arc<Hub>,
    /// Bumped by `cancel_sync`: each `sync_now` stops at the first bump after it started.
    cancel: Arc<watch::Sender<u64>>,
    /// Held by a `shutdown` while it closes: a second one waits for it, and answers as it
    /// ends (the file free, or the journal still open), never before. The task that closes
    /// holds it, not the caller's future, so a caller that gives up waiting (a cancelled
    /// coroutine) does not let a second `shutdown` answer early.
    closing: Arc<tokio::sync::Mutex<()>>,
}

impl std::fmt::Debug for Journal {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Journal").finish_non_exhaustive()
    }
}

impl Journal {
    /// The journal around an opened device, its listeners' hub attached.
    fn wired(device: Arc<Device>, hub: Arc<Hub>) -> Arc<Self> {
        hub.attach(&device);
        Arc::new(Self {
            device: Arc::new(RwLock::new(Some(device))),
            hub,
            cancel: Arc::new(watch::Sender::new(0)),
            closing: Arc::new(tokio::sync::Mutex::new(())),
        })
    }

    /// Opens with `open` on the blocking pool and wires the listeners' hub to the device.
    /// `made`: the database `open` creates there, removed if the caller has gone.
    async fn assemble(
        options: JournalOptions,
        made: Option<PathBuf>,
        open: impl FnOnce(Arc<dyn SyncObserver>) -> Result<Device> + Send + 'static,
    ) -> Result<Arc<Self>> {
        let calendar = options.calendar()?;
        let device_name = options.device_name()?;
        let hub = Arc::new(Hub::default());
        let observer = Arc::clone(&hub) as Arc<dyn SyncObserver>;
        let device =
            blocking(move || Made::new(open(observer)?, made).settled(calendar, device_name))
                .await?
                .handed_over()?;
        Ok(Self::wired(device, hub))
    }

    /// A journal made by finishing a join ([`crate::Joining::finish`]).
    pub(crate) async fn joined(
        joining: mend_client::Joining,
        path: String,
        options: JournalOptions,
    ) -> Result<Arc<Self>> {
        let relay = options.relay()?;
        let open = options.open();
        let calendar = options.calendar()?;
        let device_name = options.device_name()?;
        let hub = Arc::new(Hub::default());
        let observer = Arc::clone(&hub) as Arc<dyn SyncObserver>;
        // Not cancellable: a join cut halfway would leave the inviting device waiting. If the
        // caller has gone by its end, the journal made is removed (nobody holds its keys).
        let device = run(async move {
            let device = joining
                .finish(Path::new(&path), open, relay, Some(observer))
                .await?;
            Made::new(device, Some(PathBuf::from(path))).settled(calendar, device_name)
        })
        .await?
        .handed_over()?;
        Ok(Self::wired(device, hub))
    }

    /// The device, or `closed`.
    pub(crate) fn device(&self) -> Result<Arc<Device>> {
        self.device
            .read()
            .unwrap_or_else(PoisonError::into_inner)
            .clone()
            .ok_or_else(|| MendError::Closed("the journal was closed".into()))
    }

    /// Reads on the device's read-only connection, on the blocking pool.
    pub(crate) async fn read<T: Send + 'static>(
        &self,
        f: impl FnOnce(&CoreJournal) -> mend_core::Result<T> + Send + 'static,
    ) -> Result<T> {
        let device = self.device()?;
        blocking(move || Ok(device.read(f)?)).await
    }

    /// A write on the blocking pool: the device tells the listeners and wakes live sync.
    pub(crate) async fn write<T: Send + 'static>(
        &self,
        f: impl FnOnce(&mut CoreJournal) -> mend_core::Result<T> + Send + 'static,
    ) -> Result<T> {
        let device = self.device()?;
        blocking(move || Ok(device.write(f)?)).await
    }
}

/// A journal a call opened or made for a caller that may have gone: uniffi drops the future of
/// a cancelled coroutine or Task, while the work runs on to its end. One that created its
/// database and is never handed over is closed and its files removed: nobody holds its keys,
/// and left there it would make the next attempt fail ("a journal already exists").
struct Made {
    device: Option<Arc<Device>>,
    created: Option<PathBuf>,
}

impl Made {
    fn new(device: Device, created: Option<PathBuf>) -> Self {
        Self {
            device: Some(Arc::new(device)),
            created,
        }
    }

    /// With the couple's calendar and this device's name set, as the app asked.
    fn settled(self, calendar: Option<Calendar>, name: Option<String>) -> Result<Self> {
        if let Some(calendar) = calendar {
            self.get()?.set_calendar(calendar)?;
        }
        if let Some(name) = name {
            let device = self.get()?;
            // Apps pass the same name at every launch: nothing to write then, and nothing to
            // wait for (a rename waits for the documents' background load).
            if device.read(|j| j.device_name())?.as_deref() != Some(name.as_str())
                && let Err(e) = device.set_device_name(&name)
            {
                // A name is not worth the journal: a damaged document still opens and reads
                // (`ready` reports it), and a journal just made or restored is not thrown away
                // over it. The name is kept when it could be, and written once it can be.
                tracing::warn!(error = %e, "the device's new name is not written yet");
            }
        }
        Ok(self)
    }

    fn get(&self) -> Result<&Arc<Device>> {
        self.device
            .as_ref()
            .ok_or_else(|| MendError::Internal("the journal was handed over already".into()))
    }

    /// The journal, now the caller's.
    fn handed_over(mut self) -> Result<Arc<Device>> {
        self.device
            .take()
            .ok_or_else(|| MendError::Internal("the journal was handed over already".into()))
    }
}

impl Drop for Made {
    fn drop(&mut self) {
        let (Some(device), Some(path)) = (self.device.take(), self.created.take()) else {
            return;
        };
        // Held nowhere else (nothing has started on it): dropping it closes the database and
        // releases its lock.
        if Arc::strong_count(&device) != 1 {
            return;
        }
        drop(device);
        match remove_made(&path) {
            Ok(true) => tracing::info!("removed a journal made for a call that was cancelled"),
            Ok(false) => tracing::info!("a journal made for a cancelled call is in use; kept"),
            Err(e) => {
                tracing::warn!(error = %e, "could not remove a journal made for a cancelled call")
            }
        }
    }
}

/// Removes the database at `path` and SQLite's files beside it while holding its lock, so a
/// new attempt at the same path waits (or fails `locked`) rather than build its journal among
/// files being removed. The lock file stays: removing it would let two openers lock two
/// files. `false` when another opener holds the lock.
fn remove_made(path: &Path) -> std::io::Result<bool> {
    let with = |suffix: &str| {
        let mut name = path.as_os_str().to_owned();
        name.push(suffix);
        PathBuf::from(name)
    };
    let lock = std::fs::OpenOptions::new()
        .write(true)
        .open(with(".lock"))?;
    if lock.try_lock().is_err() {
        return Ok(false);
    }
    for suffix in ["", "-wal", "-shm"] {
        match std::fs::remove_file(with(suffix)) {
            Ok(()) => {}
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(e) => return Err(e),
        }
    }
    Ok(true)
}

/// Refuses to open what is not there, so a missing database reads as `missing`, not `corrupt`.
fn existing(path: &str) -> Result<()> {
    if Path::new(path).exists() {
        Ok(())
    } else {
        Err(MendError::Missing(format!(
            "no journal database at {path}; restore it from the keyring"
        )))
    }
}

#[uniffi::export]
impl Journal {
    /// Creates a new journal at `path` (a file that must not exist yet) for its first partner,
    /// with new secrets, syncing through the relay at `relay_url`.
    #[uniffi::constructor]
    pub async fn create(
        path: String,
        name: String,
        relay_url: String,
        options: JournalOptions,
    ) -> Result<Arc<Self>> {
        let relay = options.relay()?;
        let open = options.open();
        let made = Some(PathBuf::from(&path));
        Self::assemble(options, made, move |o| {
            Ok(Device::create(
                Path::new(&path),
                &name,
                &relay_url,
                open,
                relay,
                Some(o),
            )?)
        })
        .await
    }

    /// Opens the journal at `path` with the secret the app kept from `keyring_secret()`. It
    /// returns as soon as the journal can be read; `ready()` waits for the rest. A keyring
    /// from before signing keys gets them here: store `keyring_secret()` again after opening.
    #[uniffi::constructor]
    pub async fn open(
        path: String,
        keyring_secret: String,
        options: JournalOptions,
    ) -> Result<Arc<Self>> {
        // The app's string is dropped here, not at the end of the call: wiped.
        let keyring = Keyring::from_secret_string(&Zeroizing::new(keyring_secret))?;
        existing(&path)?;
        let relay = options.relay()?;
        let open = options.open();
        Self::assemble(options, None, move |o| {
            Ok(Device::open(
                Path::new(&path),
                keyring,
                open,
                relay,
                Some(o),
            )?)
        })
        .await
    }

    /// Restores a journal whose database is gone (after a reinstall the Keychain survives,
    /// the app's files do not) from the kept secret alone: creates `path` as a new device of
    /// the same partner, in the epoch the secret names, filled from the relay. Fails with
    /// `unreachable` when that does not finish within `budget_ms` (nothing is left at `path`
    /// then), and with `invalid` when `path` exists or the relay holds nothing (or not the
    /// start of that epoch) for this keyring. The new
    /// device gets a signing key of its own: store `keyring_secret()` again afterwards.
    #[uniffi::constructor]
    pub async fn restore(
        path: String,
        keyring_secret: String,
        budget_ms: i32,
        options: JournalOptions,
    ) -> Result<Arc<Self>> {
        // The app's string is dropped here, not at the end of the call: wiped.
        let keyring = Keyring::from_secret_string(&Zeroizing::new(keyring_secret))?;
        let calendar = options.calendar()?;
        let device_name = options.device_name()?;
        let relay = options.relay()?;
        let open = options.open();
        let hub = Arc::new(Hub::default());
        let observer = Arc::clone(&hub) as Arc<dyn SyncObserver>;
        let budget = millis(budget_ms);
        let device = run(async move {
            let device = Device::restore(
                Path::new(&path),
                keyring,
                budget,
                open,
                relay,
                Some(observer),
            )
            .await?;
            Made::new(device, Some(PathBuf::from(path))).settled(calendar, device_name)
        })
        .await?
        .handed_over()?;
        Ok(Self::wired(device, hub))
    }

    /// Waits for the journal's background load (about 100 ms for 10k records on a desktop,
    /// more on a phone), so the first write does not. Reads never need it. A document that
    /// cannot load is reported here (`corrupt`).
    pub async fn ready(&self) -> Result<()> {
        let device = self.device()?;
        run(async move { Ok(device.ready().await?) }).await
    }

    /// Closes the journal: stops live sync and any `sync_now` under way (as `cancel_sync`
    /// does), waits for calls still in flight, and releases the file, so it can be opened
    /// again at once (here or by an app extension). Every later call fails with `closed`;
    /// closing again does nothing (a second `shutdown` while one is closing waits for it, also
    /// when the first one's caller stopped waiting).
    /// `closed` from `shutdown` itself: closed, but work it started still held the file past
    /// the wait; the file is let go of as that work ends. A call that holds the journal for
    /// more than 30 s more (an erase, a removal) makes it fail with `locked`, the journal
    /// still open and usable.
    /// (Kotlin's `close()` of the generated class only frees the handle: call `shutdown()`
    /// first.)
    pub async fn shutdown(&self) -> Result<()> {
        let (slot, closing, cancel) = (
            Arc::clone(&self.device),
            Arc::clone(&self.closing),
            Arc::clone(&self.cancel),
        );
        run(async move {
            let _turn = closing.lock_owned().await;
            let taken = slot.write().unwrap_or_else(PoisonError::into_inner).take();
            let Some(device) = taken else {
                return Ok(());
            };
            // A `sync_now` under way holds the journal until its deadline: it stops now,
            // keeping what it applied.
            cancel.send_modify(|n| *n = n.wrapping_add(1));
            let Some(device) = close_within(device).await? else {
                return Ok(());
            };
            // Still open (an erase or a removal that has not ended holds it): the journal
            // stays usable rather than closed with its file still locked; try again later.
            let mut slot = slot.write().unwrap_or_else(PoisonError::into_inner);
            if slot.is_none() {
                *slot = Some(device);
            }
            Err(MendError::Locked(
                "calls still in flight kept the journal open; it stays open".into(),
            ))
        })
        .await
    }

    /// Erases the shared journal: this partner's erase marker is pushed (so their other
    /// devices and the other partner learn who erased it and when), then the couple's space
    /// and this partner's personal space are deleted at the relay, which keeps only
    /// tombstones. Each of its two rounds waits at most `budget_ms`. `unreachable`: nothing
    /// was erased. Otherwise the erase stands (every write here is refused with `erased`
    /// from now on) and the report says whether the marker reached the relay first (devices
    /// that sync later learn of the erase all the same) and whether the relay deleted the
    /// spaces. Only when it did (`finished`): `shutdown()`, then delete the files. When it
    /// did not, keep them and call `erase` again later (any `syncNow` finishes it too).
    pub async fn erase(&self, budget_ms: i32) -> Result<EraseReport> {
        let device = self.device()?;
        let budget = millis(budget_ms);
        run(async move {
            let report = device.erase(budget).await?;
            Ok(EraseReport {
                marker_pushed: report.marker_pushed,
                finished: report.finished,
            })
        })
        .await
    }

    /// When the shared journal was erased (from another of this partner's devices, or by the
    /// other partner), what to tell the person, in plain words; `None` while it is not.
    pub async fn erased(&self) -> Result<Option<String>> {
        self.read(|j| Ok(j.erasure()?.map(|e| e.words()))).await
    }

    /// Tells `listener` which records change from now on, by this device's writes or by what
    /// sync brings, on the bindings' callback thread. Keep the subscription: dropping or
    /// cancelling it unsubscribes. Any number may be active.
    pub fn subscribe(&self, listener: Arc<dyn JournalListener>) -> Arc<JournalSubscription> {
        self.hub.subscribe(listener)
    }

    /// Tells `listener` of every change of the sync status, on the callback thread.
    pub fn subscribe_status(
        &self,
        listener: Arc<dyn SyncStatusListener>,
    ) -> Arc<JournalSubscription> {
        self.hub.subscribe_status(listener)
    }

    /// The secrets to keep in the Keychain or Keystore and pass to `open`. Handle it like a
    /// password: never log it, never put it in a backup that leaves the device unencrypted.
    /// Memory only.
    pub fn keyring_secret(&self) -> Result<String> {
        // The app's copy crosses the FFI boundary as a plain string; this side's is wiped.
        Ok(self
            .device()?
            .keyring()
            .to_secret_string()
            .as_str()
            .to_owned())
    }

    /// Opens a pairing at the relay for the other partner, or (`for_device`) another device
    /// of this partner: an invite to show as a QR code, or with `short_code` a number and two
    /// words to read out on a call. Nothing leaves this device until `Invitation.accept`.
    pub async fn invite(&self, for_device: bool, short_code: bool) -> Result<Arc<Invitation>> {
        let device = self.device()?;
        let kind = if for_device {
            PairingKind::Device
        } else {
            PairingKind::Partner
        };
        run(async move {
            Ok(Arc::new(Invitation::new(
                device.invite(kind, short_code).await?,
                Arc::downgrade(&device),
            )))
        })
        .await
    }

    /// Opens a pairing for the other partner, who lost every device, to rejoin on a new one
    /// (an invite, or with `short_code` a short code). Accepting it first moves the journal to
    /// new secrets that none of their old devices can read, then lets the new device in as
    /// the partner they were. Fails with `invalid` when nobody has joined as the partner yet,
    /// or until this partner's ask (`askToRejoin`) has stood for the wait uncancelled.
    pub async fn invite_to_rejoin(&self, short_code: bool) -> Result<Arc<Invitation>> {
        let device = self.device()?;
        run(async move {
            let invitation = device.invite(PairingKind::Rejoin, short_code).await?;
            Ok(Arc::new(Invitation::new(
                invitation,
                Arc::downgrade(&device),
            )))
        })
        .await
    }

    /// Asks to let a new device in as the other partner, who lost every device. Every device
    /// of theirs shows the ask (`rejoinAsks().aboutMe`) and can cancel it; `inviteToRejoin`
    /// works once it has stood for the wait uncancelled. Sync soon after (`syncNow`), so the
    /// wait counts from an ask their devices can see. Asking again while an ask stands keeps
    /// its time. Put it behind the owner's own authentication, as `inviteToRejoin`.
    pub async fn ask_to_rejoin(&self) -> Result<RejoinAsk> {
        let device = self.device()?;
        blocking(move || Ok(device.ask_rejoin()?.into())).await
    }

    /// Cancels the other partner's ask to let a new device in as this partner (this partner
    /// still has a device: this one). Sync soon after, so their devices see it.
    pub async fn cancel_rejoin(&self) -> Result<RejoinAsk> {
        let device = self.device()?;
        blocking(move || Ok(device.cancel_rejoin()?.into())).await
    }

    /// The asks to rejoin this journal holds. Show `aboutMe`, when it stands, loudly and with
    /// a way to cancel: unless this partner lost every other device and asked for it, someone
    /// is trying to come in as them. Read it again after each sync.
    pub async fn rejoin_asks(&self) -> Result<RejoinAsks> {
        let device = self.device()?;
        blocking(move || Ok(device.rejoin_asks()?.into())).await
    }

    /// How long an ask to rejoin stands before this device lets the rejoin go ahead (72 hours
    /// unless set; a shorter wait leaves a partner who still has a device less time to
    /// cancel).
    pub async fn set_rejoin_wait(&self, seconds: i64) -> Result<()> {
        let seconds = u64::try_from(seconds)
            .map_err(|_| MendError::Invalid("a wait cannot be negative".into()))?;
        let device = self.device()?;
        blocking(move || Ok(device.set_rejoin_wait(std::time::Duration::from_secs(seconds))?)).await
    }

    /// Shuts one of this partner's own devices (a lost phone; its id from `partners()`) out of
    /// the journal: a new epoch whose secrets go to every other device sealed to its own key.
    /// Syncs up to `deadline_ms` to hand them out; store `keyring_secret()` again after it.
    pub async fn remove_device(&self, device_id: String, deadline_ms: i32) -> Result<SyncReport> {
        let device = self.device()?;
        let id: mend_core::ids::DeviceId = device_id
            .parse()
            .map_err(|_| MendError::Invalid(format!("not a device id: {device_id:?}")))?;
        let budget = millis(deadline_ms);
        run(async move { Ok(device.remove_device(id, budget).await?.into()) }).await
    }

    /// Starts the journal over without its history: removed records keep their place and lose
    /// their words on every device, each as it next syncs. Syncs up to `deadline_ms`; store
    /// `keyring_secret()` again after it.
    pub async fn forget(&self, deadline_ms: i32) -> Result<SyncReport> {
        let device = self.device()?;
        let budget = millis(deadline_ms);
        run(async move { Ok(device.forget(budget).await?.into()) }).await
    }

    /// This partner's id.
    pub async fn me(&self) -> Result<PartnerId> {
        self.read(|j| Ok(j.me().to_string().into())).await
    }

    /// The partners this device knows of, in id order (one until the other's join has synced).
    pub async fn partners(&self) -> Result<Vec<Partner>> {
        self.read(|j| Ok(j.partners().into_iter().map(Into::into).collect()))
            .await
    }

    /// Adds a record written by this partner and returns its id once committed. `visibility`
    /// `null` takes the kind's default (processing notes and triggers start private).
    #[uniffi::method(default(visibility = None))]
    pub async fn add(
        &self,
        body: RecordBody,
        visibility: Option<RecordVisibility>,
    ) -> Result<RecordId> {
        let body = body.try_into()?;
        self.write(move |j| j.add_with(body, visibility.map(Into::into)))
            .await
            .map(|id| id.to_string().into())
    }

    /// Edits a record: pass its body as you want it now (usually one you read, changed). Only
    /// changed fields are written, each checked against who may write it.
    pub async fn edit(&self, id: RecordId, body: RecordBody) -> Result<()> {
        let (id, body) = (record_id(&id)?, body.try_into()?);
        self.write(move |j| j.edit(id, body)).await
    }

    /// Removes a record (its author only). A placeholder keeps threads whole.
    pub async fn remove(&self, id: RecordId) -> Result<()> {
        let id = record_id(&id)?;
        self.write(move |j| j.remove(id)).await
    }

    /// Gives this partner's consent to a boundary's current wording.
    pub async fn consent(&self, boundary_id: RecordId, state: ConsentState) -> Result<()> {
        let id = record_id(&boundary_id)?;
        self.write(move |j| j.consent(id, state.into())).await
    }

    /// The owner's claim for one occurrence (`YYYY-MM-DD`: the day, or a weekly commitment's
    /// Monday) of their commitment.
    #[uniffi::method(default(note = ""))]
    pub async fn claim(
        &self,
        commitment_id: RecordId,
        occurrence: String,
        status: ClaimStatus,
        note: String,
    ) -> Result<()> {
        let (id, day) = (record_id(&commitment_id)?, date(&occurrence)?);
        self.write(move |j| j.claim(id, day, status.into(), &note))
            .await
    }

    /// The partner's view of one occurrence of the other's commitment.
    #[uniffi::method(default(note = ""))]
    pub async fn confirm(
        &self,
        commitment_id: RecordId,
        occurrence: String,
        view: PartnerView,
        note: String,
    ) -> Result<()> {
        let (id, day) = (record_id(&commitment_id)?, date(&occurrence)?);
        self.write(move |j| j.confirm(id, day, view.into(), &note))
            .await
    }

    /// The partner's response to a need.
    #[uniffi::method(default(note = ""))]
    pub async fn respond_to_need(
        &self,
        need_id: RecordId,
        kind: NeedResponseKind,
        note: String,
    ) -> Result<()> {
        let id = record_id(&need_id)?;
        self.write(move |j| j.respond_to_need(id, kind.into(), &note))
            .await
    }

    /// Sets a question's status: the asker may reopen or withdraw it, the partner may say "not
    /// now", either may mark it answered.
    pub async fn set_question_status(
        &self,
        question_id: RecordId,
        status: QuestionStatus,
    ) -> Result<()> {
        let id = record_id(&question_id)?;
        self.write(move |j| j.set_question_status(id, status.into()))
            .await
    }

    /// Shares a private processing note with the partner. Sharing cannot be undone.
    pub async fn share(&self, id: RecordId) -> Result<()> {
        let id = record_id(&id)?;
        self.write(move |j| j.share(id)).await
    }

    /// One record, as this partner may see it.
    pub async fn get(&self, id: RecordId) -> Result<JournalRecord> {
        let id = record_id(&id)?;
        self.read(move |j| j.get(id)).await.map(Into::into)
    }

    /// A record with its answers, replies, validations and, for a boundary, its consents.
    pub async fn thread(&self, id: RecordId) -> Result<RecordThread> {
        let id = record_id(&id)?;
        self.read(move |j| j.thread(id)).await.map(Into::into)
    }

    /// A page of the timeline, newest first.
    pub async fn timeline(&self, query: TimelineQuery) -> Result<TimelinePage> {
        let query = query.try_into()?;
        self.read(move |j| j.timeline(&query)).await.map(Into::into)
    }

    /// Questions still open or put off, oldest first, each with its answers.
    pub async fn open_questions(&self) -> Result<Vec<QuestionThread>> {
        self.read(|j| Ok(j.open_questions()?.into_iter().map(Into::into).collect()))
            .await
    }

    /// Every live boundary and whether both partners agreed to its current wording.
    pub async fn boundary_status(&self) -> Result<Vec<BoundaryStatus>> {
        self.read(|j| Ok(j.boundary_status()?.into_iter().map(Into::into).collect()))
            .await
    }

    /// Every live need with the partner's response, oldest first.
    pub async fn needs(&self) -> Result<Vec<JournalRecord>> {
        self.read(|j| Ok(records(j.needs()?))).await
    }

    /// Weekly progress for the whole weeks touching `from_date..=to_date` (`YYYY-MM-DD`), as
    /// of `to_date`, in the couple's calendar.
    pub async fn progress(&self, from_date: String, to_date: String) -> Result<ProgressReport> {
        let (from, to) = (date(&from_date)?, date(&to_date)?);
        self.read(move |j| j.progress(from, to))
            .await
            .map(Into::into)
    }

    /// The therapist packet as Markdown or one self-contained HTML page, made on the device.
    pub async fn export(&self, options: PacketOptions, format: ExportFormat) -> Result<String> {
        let options = options.try_into()?;
        let device = self.device()?;
        // On a connection of its own: a large packet takes seconds, and the quick reads (and
        // the listeners, which read what changed) share the device's one reader.
        blocking(move || Ok(device.read_apart(|j| j.export_packet(&options, format.into()))?)).await
    }

    /// One push and pull for the few seconds the OS grants in the background
    /// (BGAppRefreshTask, WorkManager), over within `deadline_ms` from now: no request starts
    /// after it and whatever is in flight then (connecting, TLS, writing, reading) is cut.
    /// Cancelling the awaiting coroutine or task stops the round the same way. Either way
    /// nothing is lost: what was applied is committed whole, and what was not is asked for or
    /// sent again by the next round. Returns what the round did; `finished` false means the
    /// deadline came first.
    #[uniffi::method(default(deadline_ms = 10000))]
    pub async fn sync_now(&self, deadline_ms: i32) -> Result<SyncReport> {
        // Subscribed first, before the device is taken and the round spawned, so a
        // `cancel_sync` made at once counts, and so does a `shutdown` that takes the device
        // and cancels between the two.
        let mut cancel = self.cancel.subscribe();
        let device = self.device()?;
        let deadline = millis(deadline_ms);
        // Dropped with this call's future (a cancelled coroutine or Task): the round is then
        // stopped as `cancel_sync` stops it, at its next step, rather than aborted wherever it
        // waits, which could cut a move to a new epoch halfway (live sync left off, the
        // keyring not told).
        let (_caller, gone) = tokio::sync::oneshot::channel::<()>();
        let stop = async move {
            let mut gone = std::pin::pin!(gone);
            tokio::select! {
                changed = cancel.changed() => {
                    // A closed channel (the journal is gone) stops nothing by itself.
                    if changed.is_err() {
                        let _ = gone.await;
                    }
                }
                _ = &mut gone => {}
            }
        };
        run(async move { Ok(device.sync_round_or(deadline, stop).await?.into()) }).await
    }

    /// Stops every `sync_now` round under way at once; each returns what it did so far
    /// (`finished` false). For Swift, whose generated async calls do not see a cancelled
    /// `Task`: call it from `withTaskCancellationHandler`'s `onCancel` or from a
    /// BGTask's `expirationHandler`. Rounds started later are not affected. Memory only.
    pub fn cancel_sync(&self) {
        self.cancel.send_modify(|n| *n = n.wrapping_add(1));
    }

    /// Starts live sync for the foreground: a WebSocket per space, each local write pushed at
    /// once, the partner's writes told to the subscriptions as they land. Starting it while
    /// it runs does nothing. Returns at once. When live sync brings a new epoch (a device
    /// removed, a "forget", a rejoin), the journal moves at once with a sync round of its own
    /// and the status listeners' `on_keyring_changed` asks the app to store the keyring again.
    pub fn start_live(&self) -> Result<()> {
        let device = self.device()?;
        let _context = runtime()?.enter();
        Ok(device.start_live_following(FOLLOW_BUDGET)?)
    }

    /// Stops live sync (when the app leaves the foreground) and waits for the sockets to close.
    pub async fn stop_live(&self) -> Result<()> {
        let device = self.device()?;
        run(async move {
            device.stop_live().await;
            Ok(())
        })
        .await
    }

    /// Whether live sync is running: false once its task has ended, however it ended.
    /// Memory only.
    pub fn is_live(&self) -> bool {
        self.device().is_ok_and(|d| d.is_live())
    }
}

/// A budget in milliseconds; a negative one is no time at all.
pub(crate) fn millis(ms: i32) -> Duration {
    Duration::from_millis(u64::try_from(ms).unwrap_or(0))
}

/// Stops `device`'s live sync and closes it once the calls in flight (each holding its own
/// reference, each ending within one storage step) let go, waiting at most [`CLOSE_WAIT`].
/// `Some`: still held after the wait, handed back open.
async fn close_within(mut device: Arc<Device>) -> Result<Option<Arc<Device>>> {
    device.stop_live().await;
    let until = Instant::now() + CLOSE_WAIT;
    loop {
        match Arc::try_unwrap(device) {
            Ok(device) => {
                // Closed here whatever comes: the journal answers `closed` from now on, so a
                // failure is told as that (its file is let go of as the work that still holds
                // it ends), never as `locked`, which means still open.
                if let Err(e) = device.close().await {
                    tracing::warn!(error = %e, "closed, with work still holding the file");
                    return Err(MendError::Closed(
                        "the journal is closed, but work it started still holds its file for a \
                         moment: opening it again may answer `locked` until that work ends"
                            .into(),
                    ));
                }
                return Ok(None);
            }
            Err(shared) if Instant::now() < until => {
                device = shared;
                tokio::time::sleep(Duration::from_millis(2)).await;
            }
            Err(shared) => return Ok(Some(shared)),
        }
    }
}
