//! [`Journal`]: the object an app holds, one per open journal.
//!
//! A newtype over `mend_client::Device`; each method forwards to one call and translates its
//! arguments and result. Writes and reads are synchronous (a write returns once its change is
//! committed to SQLite, well under a millisecond; reads use their own connection and never
//! wait for sync): call them off the main thread. `sync_now` and `stop_live` are async.

use std::{path::Path, sync::Arc, time::Duration};

use mend_client::{Device, Keyring, SyncObserver};
use mend_core::{Journal as CoreJournal, OpenOptions};

use crate::{
    bodies::RecordBody,
    convert::{date, record_id},
    enums::{
        ClaimStatus, ConsentState, ExportFormat, NeedResponseKind, PartnerView, QuestionStatus,
        Visibility,
    },
    error::Result,
    queries::{
        BoundaryStatus, PacketOptions, Progress, QuestionThread, RecordThread, TimelinePage,
        TimelineQuery,
    },
    records::{JournalRecord, Partner, records},
    runtime::{run, runtime},
    sync::{JournalObserver, ObserverSlot, SyncStatus},
};

/// One device's replica of a couple's journal, with its keys and its relay connection.
///
/// Who keeps the secrets: the app. After `create` or `join`, store `keyring_secret()` in the
/// Keychain (iOS) or in Keystore-backed storage (Android); hand it back to `open` at each
/// launch. The database never holds it.
#[derive(uniffi::Object)]
pub struct Journal {
    device: Arc<Device>,
    observer: Arc<ObserverSlot>,
}

impl std::fmt::Debug for Journal {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Journal")
            .field("device", &self.device)
            .finish_non_exhaustive()
    }
}

impl Journal {
    fn assemble(
        open: impl FnOnce(Option<Arc<dyn SyncObserver>>) -> mend_core::Result<Device>,
    ) -> Result<Arc<Self>> {
        let observer = Arc::new(ObserverSlot::default());
        let device = open(Some(Arc::clone(&observer) as Arc<dyn SyncObserver>))?;
        Ok(Arc::new(Self {
            device: Arc::new(device),
            observer,
        }))
    }

    /// The device this object wraps.
    pub(crate) fn device(&self) -> &Device {
        &self.device
    }

    /// Reads on the device's read-only connection.
    pub(crate) fn with<T>(
        &self,
        f: impl FnOnce(&CoreJournal) -> mend_core::Result<T>,
    ) -> Result<T> {
        Ok(self.device.read(f)?)
    }

    /// A write: the device tells the observer and wakes live sync.
    pub(crate) fn write<T>(
        &self,
        f: impl FnOnce(&mut CoreJournal) -> mend_core::Result<T>,
    ) -> Result<T> {
        Ok(self.device.write(f)?)
    }
}

#[uniffi::export]
impl Journal {
    /// Creates a new journal at `path` (a file that must not exist yet) for its first partner,
    /// with new secrets, syncing through the relay at `relay_url`.
    #[uniffi::constructor]
    pub fn create(path: String, name: String, relay_url: String) -> Result<Arc<Self>> {
        Self::assemble(|o| {
            Device::create(
                Path::new(&path),
                &name,
                &relay_url,
                OpenOptions::default(),
                o,
            )
        })
    }

    /// Joins with an invite code: the other partner (`name` is theirs) or another device of the
    /// same partner (`name` is ignored). The journal fills on the first `sync_now`.
    #[uniffi::constructor]
    pub fn join(path: String, invite: String, name: String) -> Result<Arc<Self>> {
        Self::assemble(|o| {
            Device::join(Path::new(&path), &invite, &name, OpenOptions::default(), o)
        })
    }

    /// Opens the journal at `path` with the secret the app kept from `keyring_secret()`.
    #[uniffi::constructor]
    pub fn open(path: String, keyring_secret: String) -> Result<Arc<Self>> {
        let keyring = Keyring::from_secret_string(&keyring_secret)?;
        Self::assemble(|o| Device::open(Path::new(&path), keyring, OpenOptions::default(), o))
    }

    /// The secrets to keep in the Keychain or Keystore and pass to `open`. Handle it like a
    /// password: never log it, never put it in a backup that leaves the device unencrypted.
    pub fn keyring_secret(&self) -> String {
        // The app's copy crosses the FFI boundary as a plain string; this side's is wiped.
        self.device.keyring().to_secret_string().as_str().to_owned()
    }

    /// An invite for the other partner (a string for a QR code): it carries the couple's
    /// secret, so show it only to them.
    pub fn partner_invite(&self) -> Result<String> {
        Ok(self.device.partner_invite()?)
    }

    /// An invite for another device of this partner (both the couple's and the personal space).
    pub fn device_invite(&self) -> Result<String> {
        Ok(self.device.device_invite()?)
    }

    /// This partner's id.
    pub fn me(&self) -> Result<String> {
        self.with(|j| Ok(j.me().to_string()))
    }

    /// The partners this device knows of, in id order (one until the other's join has synced).
    pub fn partners(&self) -> Result<Vec<Partner>> {
        self.with(|j| Ok(j.partners().into_iter().map(Into::into).collect()))
    }

    /// Adds a record written by this partner and returns its id once committed. `visibility`
    /// `null` takes the kind's default (processing notes and triggers start private).
    #[uniffi::method(default(visibility = None))]
    pub fn add(&self, body: RecordBody, visibility: Option<Visibility>) -> Result<String> {
        let body = body.try_into()?;
        self.write(|j| j.add_with(body, visibility.map(Into::into)))
            .map(|id| id.to_string())
    }

    /// Edits a record: pass its body as you want it now (usually one you read, changed). Only
    /// changed fields are written, each checked against who may write it.
    pub fn edit(&self, id: String, body: RecordBody) -> Result<()> {
        let (id, body) = (record_id(&id)?, body.try_into()?);
        self.write(|j| j.edit(id, body))
    }

    /// Removes a record (its author only). A placeholder keeps threads whole.
    pub fn remove(&self, id: String) -> Result<()> {
        let id = record_id(&id)?;
        self.write(|j| j.remove(id))
    }

    /// Gives this partner's consent to a boundary's current wording.
    pub fn consent(&self, boundary_id: String, state: ConsentState) -> Result<()> {
        let id = record_id(&boundary_id)?;
        self.write(|j| j.consent(id, state.into()))
    }

    /// The owner's claim for one occurrence (`YYYY-MM-DD`: the day, or a weekly commitment's
    /// Monday) of their commitment.
    #[uniffi::method(default(note = ""))]
    pub fn claim(
        &self,
        commitment_id: String,
        occurrence: String,
        status: ClaimStatus,
        note: String,
    ) -> Result<()> {
        let (id, day) = (record_id(&commitment_id)?, date(&occurrence)?);
        self.write(|j| j.claim(id, day, status.into(), &note))
    }

    /// The partner's view of one occurrence of the other's commitment.
    #[uniffi::method(default(note = ""))]
    pub fn confirm(
        &self,
        commitment_id: String,
        occurrence: String,
        view: PartnerView,
        note: String,
    ) -> Result<()> {
        let (id, day) = (record_id(&commitment_id)?, date(&occurrence)?);
        self.write(|j| j.confirm(id, day, view.into(), &note))
    }

    /// The partner's response to a need.
    #[uniffi::method(default(note = ""))]
    pub fn respond_to_need(
        &self,
        need_id: String,
        kind: NeedResponseKind,
        note: String,
    ) -> Result<()> {
        let id = record_id(&need_id)?;
        self.write(|j| j.respond_to_need(id, kind.into(), &note))
    }

    /// Sets a question's status: the asker may reopen or withdraw it, the partner may say "not
    /// now", either may mark it answered.
    pub fn set_question_status(&self, question_id: String, status: QuestionStatus) -> Result<()> {
        let id = record_id(&question_id)?;
        self.write(|j| j.set_question_status(id, status.into()))
    }

    /// Shares a private processing note with the partner. Sharing cannot be undone.
    pub fn share(&self, id: String) -> Result<()> {
        let id = record_id(&id)?;
        self.write(|j| j.share(id))
    }

    /// One record, as this partner may see it.
    pub fn get(&self, id: String) -> Result<JournalRecord> {
        let id = record_id(&id)?;
        self.with(|j| j.get(id)).map(Into::into)
    }

    /// A record with its answers, replies, validations and, for a boundary, its consents.
    pub fn thread(&self, id: String) -> Result<RecordThread> {
        let id = record_id(&id)?;
        self.with(|j| j.thread(id)).map(Into::into)
    }

    /// A page of the timeline, newest first.
    pub fn timeline(&self, query: TimelineQuery) -> Result<TimelinePage> {
        let query = query.try_into()?;
        self.with(|j| j.timeline(&query)).map(Into::into)
    }

    /// Questions still open or put off, oldest first, each with its answers.
    pub fn open_questions(&self) -> Result<Vec<QuestionThread>> {
        self.with(|j| Ok(j.open_questions()?.into_iter().map(Into::into).collect()))
    }

    /// Every live boundary and whether both partners agreed to its current wording.
    pub fn boundary_status(&self) -> Result<Vec<BoundaryStatus>> {
        self.with(|j| Ok(j.boundary_status()?.into_iter().map(Into::into).collect()))
    }

    /// Every live need with the partner's response, oldest first.
    pub fn needs(&self) -> Result<Vec<JournalRecord>> {
        self.with(|j| Ok(records(j.needs()?)))
    }

    /// Weekly progress for the whole weeks touching `from_date..=to_date` (`YYYY-MM-DD`), as
    /// of `to_date`, in the calendar set with `set_calendar`.
    pub fn progress(&self, from_date: String, to_date: String) -> Result<Progress> {
        let (from, to) = (date(&from_date)?, date(&to_date)?);
        self.with(|j| j.progress(from, to)).map(Into::into)
    }

    /// The therapist packet as Markdown or one self-contained HTML page, made on the device.
    pub fn export(&self, options: PacketOptions, format: ExportFormat) -> Result<String> {
        let options = options.try_into()?;
        self.with(|j| j.export_packet(&options, format.into()))
    }

    /// Sets (or clears, with `null`) the observer told about changed records (local writes and
    /// what sync brings) and about sync status.
    pub fn set_observer(&self, observer: Option<Arc<dyn JournalObserver>>) {
        self.observer.set(observer);
    }

    /// One bounded push and pull for the few seconds the OS grants in the background
    /// (BGAppRefreshTask, WorkManager). Returns the status at the end; `syncing` still true
    /// means the budget ran out first and the next round carries on.
    #[uniffi::method(default(budget_ms = 10000))]
    pub async fn sync_now(&self, budget_ms: u32) -> Result<SyncStatus> {
        let device = Arc::clone(&self.device);
        let budget = Duration::from_millis(u64::from(budget_ms));
        run(async move { Ok(device.sync_now(budget).await?.into()) }).await
    }

    /// Starts live sync for the foreground: a WebSocket per space, each local write pushed at
    /// once, the observer told of the partner's writes as they land. Calling it again while
    /// live only swaps the observer.
    pub fn start_live(&self, observer: Arc<dyn JournalObserver>) -> Result<()> {
        self.observer.set(Some(observer));
        let _context = runtime()?.enter();
        Ok(self.device.start_live()?)
    }

    /// Stops live sync (when the app leaves the foreground) and waits for the sockets to close.
    pub async fn stop_live(&self) -> Result<()> {
        let device = Arc::clone(&self.device);
        run(async move {
            device.stop_live().await;
            Ok(())
        })
        .await
    }

    /// Whether live sync is running.
    pub fn is_live(&self) -> bool {
        self.device.is_live()
    }
}
