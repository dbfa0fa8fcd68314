//! The journal: the couple's document and this partner's personal space, kept in the store.
//!
//! `Journal` is the API the app (through mend-ffi) and the CLI call. Every write checks who may
//! make it, applies it to the Automerge document, and commits the change bytes to SQLite before
//! it returns.

mod epoch;
pub use epoch::{EpochMove, EpochNews, EpochSecrets, OldSpace, RETIRE_GRACE_MS, Reason};
mod erase;
pub use erase::Erasure;
mod guard;
pub use guard::Breach;
mod names;
pub use names::{DeviceInfo, MAX_DEVICE_NAME, clean_device_name};
mod ops;
mod proof;
pub use settle::{ConflictChoice, OpenConflict};
pub use write::wording_hash;
mod read;
mod registry;
mod rejoin;
pub use rejoin::{REJOIN_WAIT, RejoinAsk, describe as describe_wait};
mod rollup;
mod signing;
pub use registry::{Certified, MAX_DEVICES};
mod settle;
mod sync;
pub use sync::SyncSummary;
mod validate;
mod view;
mod write;

use std::path::Path;

use automerge::ActorId;
use serde::{Deserialize, Serialize};

use crate::{
    calendar::Calendar,
    crypto::{DevicePublicKey, IdentityKey, KeyId, Signer},
    date::LocalDate,
    doc::{LazyDoc, SpaceDoc},
    error::{Error, Result},
    ids::{DeviceId, PartnerId, RecordId},
    store::{Durability, LockMode, Space, Store},
};

/// Incremental rows per space before they are folded into one full save.
const COMPACT_AFTER_ROWS: u64 = 1000;

/// A partner as the couple's document knows them.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Partner {
    /// Their id.
    pub id: PartnerId,
    /// The name they chose.
    pub name: String,
    /// When they joined (unix ms).
    pub joined_at: i64,
    /// Their identity key's fingerprint, once one of their devices recorded it.
    #[serde(default)]
    pub identity: Option<String>,
    /// Their devices whose certificates verify under that identity, earliest first (at most
    /// [`MAX_DEVICES`]).
    #[serde(default)]
    pub devices: Vec<PartnerDevice>,
}

/// One of a partner's devices, as its certificate in the couple's document describes it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct PartnerDevice {
    /// The device.
    pub id: DeviceId,
    /// Its signing key's fingerprint (16 hex digits), to compare between devices.
    pub fingerprint: String,
    /// When its partner's identity certified it (unix ms, that device's clock).
    pub added_at: i64,
    /// The name it recorded, if any (control characters replaced).
    #[serde(default)]
    pub name: Option<String>,
}

/// Options for opening a journal.
#[derive(Clone, Copy, Debug, Default)]
pub struct OpenOptions {
    /// How hard commits wait for the disk.
    pub durability: Durability,
    /// Whether the journal holds its file lock for its whole life or only around each step
    /// (so app extensions can open it too).
    pub lock: LockMode,
    /// Where "now" comes from; `None` is the system clock. Tests set it so that what a journal
    /// records at creation (when each partner joined) follows the same clock as what comes after.
    pub clock: Option<Clock>,
    /// This device's public signing key: every change it makes carries the key's id in its
    /// actor, so receivers know which device must have signed it. `None` makes changes no
    /// receiver that checks will accept (tests of the journal alone).
    pub device_key: Option<DevicePublicKey>,
    /// The identity of a partner this journal creates (its first device): the partner id is
    /// derived from it ([`IdentityKey::partner_id`]). `None` picks a random id.
    pub identity: Option<IdentityKey>,
}

/// Source of the current time, replaceable in tests.
pub type Clock = fn() -> i64;

/// What local writes touched since it was last taken: per committed change, its space and the
/// records it wrote (see [`Journal::take_written`]).
pub type Written = Vec<(Space, Vec<RecordId>)>;

fn system_clock() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| i64::try_from(d.as_millis()).unwrap_or(i64::MAX))
        .unwrap_or(0)
}

/// One device's replica of the journal.
pub struct Journal {
    store: Store,
    me: PartnerId,
    device: DeviceId,
    /// The Automerge actor of this opening: new at every open, so a database that went back
    /// in time (a power cut, a restored backup) never makes a change under an (actor,
    /// sequence) pair a lost change already used, which other replicas would refuse.
    actor: Vec<u8>,
    /// This device's signing key id, when it signs: every actor begins with it.
    key_id: Option<KeyId>,
    /// What this device signs the couple's changes with, once given ([`Journal::set_signer`]).
    signer: Option<Signer>,
    /// The partner's identity, kept ([`Journal::keep_identity`]) so that a move to a new
    /// epoch made by another process (an app extension) is signed for here too.
    identity: Option<crate::crypto::PartnerIdentity>,
    /// The devices introduced here, for checking the couple's changes.
    roster: guard::Roster,
    /// Changes refused for good.
    banned: std::collections::HashSet<automerge::ChangeHash>,
    /// The rollup made and not yet stored at the relay.
    made: Option<rollup::Made>,
    couple: LazyDoc,
    personal: LazyDoc,
    /// The couple's partners and schema version, from the read model.
    partners: Vec<Partner>,
    schema_version: i64,
    clock: Clock,
    /// How long an ask to rejoin stands before this device lets the rejoin go ahead.
    rejoin_wait: std::time::Duration,
    /// The couple's zone and first day of the week (set by the app; UTC until then).
    calendar: Calendar,
    /// `Some` once a device asked to hear of writes ([`Journal::track_written`]).
    written: Option<Written>,
    /// See [`crate::sync::SyncStore::sync_revision`].
    sync_revision: u64,
    /// SQLite's `data_version` when a reader last read the partners: unchanged means no other
    /// connection has committed since, and the cached partners stand.
    seen_version: Option<i64>,
    /// In extension mode, `data_version` when this writer last held the lock: a step that
    /// finds another value reloads what another process may have changed.
    disk_version: Option<i64>,
    /// Being made by this handle: in extension mode it keeps the writer's lock from its
    /// first commit to [`Journal::finish_making`], so no other process takes the unfinished
    /// journal for one a crash left and removes it ([`Journal::remove_unfinished`]).
    making: bool,
    /// The couple's space id, once the device certified itself: certificates are checked
    /// against it.
    couple_space: Option<[u8; 32]>,
    /// Certificate checks already made.
    cert_checker: registry::CertChecker,
}

impl std::fmt::Debug for Journal {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // No record content here: Debug output ends up in logs.
        f.debug_struct("Journal")
            .field("me", &self.me)
            .field("device", &self.device)
            .finish()
    }
}

/// What a device needs from an existing replica to join (in the product, this arrives through
/// the relay; tests hand it over directly).
#[derive(Clone, Debug, Default)]
pub struct JoinSource {
    /// The couple's document (a full save or change chunks).
    pub couple: Vec<u8>,
    /// This partner's personal space, when this is a partner's second device.
    pub personal: Option<Vec<u8>>,
    /// The partner this device belongs to, when it is a second device.
    pub partner: Option<PartnerId>,
}

impl Journal {
    /// Creates a new journal at `path` for its first partner, named `name`.
    pub fn create(path: &Path, name: &str) -> Result<Self> {
        Self::create_with(path, name, OpenOptions::default())
    }

    /// [`Journal::create`] with options.
    pub fn create_with(path: &Path, name: &str, options: OpenOptions) -> Result<Self> {
        let me = options
            .identity
            .map_or_else(PartnerId::generate, |k| k.partner_id());
        let mut journal = Self::init(path, me, None, None, options)?;
        journal.register_partner(name)?;
        journal.finish_making()?;
        Ok(journal)
    }

    /// Creates a replica at `path` from another replica's documents: the second partner
    /// (`source.partner` is `None`, a new partner named `name` is added) or a partner's second
    /// device (`source.partner` names them; `name` is ignored).
    pub fn join(path: &Path, source: &JoinSource, name: &str) -> Result<Self> {
        Self::join_with(path, source, name, OpenOptions::default())
    }

    /// [`Journal::join`] with options.
    pub fn join_with(
        path: &Path,
        source: &JoinSource,
        name: &str,
        options: OpenOptions,
    ) -> Result<Self> {
        let mut journal = Self::join_unfinished(path, source, name, options)?;
        journal.finish_making()?;
        Ok(journal)
    }

    /// [`Journal::join_with`] for a caller with steps of its own to take before the journal
    /// is whole (start in a later epoch, own a new personal space): it ends them with
    /// [`Journal::finish_making`]. Cut off before that, the journal opens as
    /// [`Error::Unfinished`] and is made again.
    pub fn join_unfinished(
        path: &Path,
        source: &JoinSource,
        name: &str,
        options: OpenOptions,
    ) -> Result<Self> {
        let me = source.partner.unwrap_or_else(|| {
            options
                .identity
                .map_or_else(PartnerId::generate, |k| k.partner_id())
        });
        let mut journal = Self::init(
            path,
            me,
            Some(&source.couple),
            source.personal.as_deref(),
            options,
        )?;
        if source.partner.is_none() {
            journal.register_partner(name)?;
        }
        Ok(journal)
    }

    /// How many of this handle's steps were fsynced whatever its durability (the making of
    /// the journal, an epoch move, a new device id): tests check what a power cut cannot
    /// take back.
    #[doc(hidden)]
    pub fn fsynced_steps(&self) -> u64 {
        self.store.fsynced_steps()
    }

    /// Marks the journal whole, fsynced: from now on it opens, and making it again refuses.
    pub fn finish_making(&mut self) -> Result<()> {
        self.step(|j| j.store.set_meta_durably(&[(META_MAKING, "")]))?;
        if std::mem::take(&mut self.making) {
            self.store.end_step();
        }
        Ok(())
    }

    /// Whether the database at `path` is a journal whose making was cut off
    /// ([`Error::Unfinished`]): it holds nothing yet, and the caller may remove it and make it
    /// again. False when there is no file.
    pub fn is_unfinished(path: &Path) -> Result<bool> {
        if !path.exists() {
            return Ok(false);
        }
        if Store::is_empty_database(path) {
            return Ok(true);
        }
        // Read-only, and only a journal of this version: any other file at `path` is not this
        // code's to judge, let alone remove.
        match Store::open_reader(path) {
            Ok(store) => unfinished(&store),
            Err(_) => Ok(false),
        }
    }

    /// Removes the journal at `path` if its making was cut off ([`Journal::is_unfinished`]),
    /// so that the make that follows can replace it. Holds the writer's lock meanwhile: a
    /// journal another handle or process has open (or is still making) is left alone and
    /// this returns `Locked`. Returns whether it removed one.
    pub fn remove_unfinished(path: &Path) -> Result<bool> {
        Store::remove_if(path, Self::is_unfinished)
    }

    fn init(
        path: &Path,
        me: PartnerId,
        couple: Option<&[u8]>,
        personal: Option<&[u8]>,
        options: OpenOptions,
    ) -> Result<Self> {
        if path.exists() {
            return Err(Error::Invalid(format!(
                "a journal already exists at {}; open it instead",
                path.display()
            )));
        }
        let mut store = Store::open(path, true, options.durability, options.lock)?;
        store.set_meta(&[(META_MAKING, "1")])?;
        let key_id = options.device_key.map(|k| k.key_id());
        let device = new_device_id(key_id);
        let actor_bytes = new_actor(key_id);
        let actor = ActorId::from(actor_bytes.as_slice());
        let couple_doc = match couple {
            Some(bytes) => SpaceDoc::load(None, bytes, actor.clone(), false)?,
            None => SpaceDoc::genesis(actor.clone())?,
        };
        let personal_doc = match personal {
            Some(bytes) => SpaceDoc::load(None, bytes, actor, false)?,
            None => SpaceDoc::genesis(actor)?,
        };
        let clock = options.clock.unwrap_or(system_clock);
        let now = clock();
        store.compact(Space::Couple, &couple_doc.save(), now)?;
        store.compact(Space::Personal, &personal_doc.save(), now)?;
        store.set_meta(&[
            ("partner", &me.to_string()),
            ("device", &device.to_string()),
        ])?;
        let mut journal = Self::assemble(
            store,
            (me, device),
            LazyDoc::ready(couple_doc),
            LazyDoc::ready(personal_doc),
        );
        journal.clock = clock;
        journal.actor = actor_bytes;
        journal.key_id = key_id;
        for space in Space::ALL {
            journal.rebuild_view(space)?;
        }
        journal.making = true;
        journal.opened()?;
        Ok(journal)
    }

    /// Opens the journal at `path`.
    pub fn open(path: &Path) -> Result<Self> {
        Self::open_with(path, OpenOptions::default())
    }

    /// [`Journal::open`] with options.
    pub fn open_with(path: &Path, options: OpenOptions) -> Result<Self> {
        let store = Store::open(path, false, options.durability, options.lock)?;
        if unfinished(&store)? {
            return Err(Error::Unfinished {
                path: path.display().to_string(),
            });
        }
        let (me, device) = stored_ids(&store)?;
        let key_id = options.device_key.map(|k| k.key_id());
        let fresh = new_actor(key_id);
        let actor = ActorId::from(fresh.as_slice());
        // Reads are served by the read model; Automerge loads in the background unless the
        // read model has yet to be built (a database from before it existed).
        let mut missing = Vec::new();
        let mut docs = Vec::new();
        for space in Space::ALL {
            let doc = match store.space_view(space)? {
                Some(view) => {
                    let (snapshot, changes, _) = store.load(space)?;
                    let actor = actor.clone();
                    let load = move || {
                        SpaceDoc::load(snapshot.as_deref(), &changes, actor, true).map_err(|e| {
                            Error::Corrupt(format!(
                                "the {} document cannot be loaded: {e}",
                                space.as_str()
                            ))
                        })
                    };
                    LazyDoc::spawn(load, view.heads)?
                }
                None => {
                    missing.push(space);
                    LazyDoc::ready(load_space(&store, space, actor.clone())?)
                }
            };
            docs.push(doc);
        }
        let (Some(personal), Some(couple)) = (docs.pop(), docs.pop()) else {
            return Err(Error::Corrupt("a space is missing".into()));
        };
        let mut journal = Self::assemble(store, (me, device), couple, personal);
        if let Some(clock) = options.clock {
            journal.clock = clock;
        }
        journal.actor = fresh;
        journal.key_id = key_id;
        for space in missing {
            journal.rebuild_view(space)?;
        }
        journal.refresh()?;
        journal.opened()?;
        Ok(journal)
    }

    /// The end of opening, which ran under the lock: in extension mode, remember what was
    /// read and release the lock until the first step.
    fn opened(&mut self) -> Result<()> {
        if self.store.is_shared() {
            // Counted now, so the first step can tell whether another process added rows.
            for space in Space::ALL {
                self.store.change_rows(space)?;
            }
        }
        self.disk_version = Some(self.store.data_version()?);
        if !self.making {
            self.store.end_step();
        }
        Ok(())
    }

    /// Runs `f` as one step. In extension mode ([`LockMode::Extension`]) the step takes the
    /// file lock (waiting up to the mode's bound, then `Locked`), first reloads what other
    /// processes committed since this one last held it, and releases it at the end; in
    /// exclusive mode, or inside a step, it just runs `f`. Every write is a step by itself;
    /// calls that belong together (a sync engine's batch of events) share one.
    pub fn step<T>(&mut self, f: impl FnOnce(&mut Self) -> Result<T>) -> Result<T> {
        if !self.store.begin_step()? {
            return f(self);
        }
        let out = self.catch_up().and_then(|()| f(self));
        self.store.end_step();
        out
    }

    /// Another process committed since this one last held the lock: what is kept in memory
    /// from the database is read again (the device id, which a sequence conflict may have
    /// changed, the row counts, the partners, each document the other process changed), and
    /// the sync revision moves, so an engine re-reads its cursors and numbers. The documents
    /// keep this opening's actor.
    fn catch_up(&mut self) -> Result<()> {
        let version = self.store.data_version()?;
        if self.disk_version == Some(version) {
            return Ok(());
        }
        self.device = stored_ids(&self.store)?.1;
        let moved = stored_couple_space(&self.store) != self.couple_space;
        let counted = Space::ALL.map(|space| self.store.counted_rows(space));
        self.store.forget_counts();
        for (space, counted) in Space::ALL.into_iter().zip(counted) {
            // A document is reloaded only if the other process changed it: its heads moved, or
            // it stored changes (some wait for a dependency and leave the heads as they were).
            let rows = self.store.change_rows(space)?;
            let stored = self.store.space_view(space)?.map(|v| v.heads);
            // A document whose background load failed gets a second try here too.
            let current = self.doc(space).map(SpaceDoc::heads_text).ok();
            if counted != Some(rows) || stored.is_none() || stored != current {
                // What the other process wrote or pulled is news to this one's listeners too
                // (worked out only when a device listens: `track_written`; not across a move).
                let before = if self.written.is_some() && !moved {
                    self.doc(space).map(SpaceDoc::heads).ok()
                } else {
                    None
                };
                self.reload(space)?;
                if let Some(before) = before {
                    let touched = self.touched_since(space, &before);
                    self.record_written(space, &touched);
                }
            }
            // The other process moved to a new epoch and was cut off before it built the read
            // model again.
            if stored.is_none() {
                self.rebuild_view(space)?;
            }
        }
        if moved {
            self.follow_elsewhere()?;
        } else {
            // Devices the other process admitted (a new device's introduction arrives once)
            // and changes it refused for good.
            self.load_roster()?;
        }
        self.sync_revision = self.sync_revision.wrapping_add(1);
        self.seen_version = None;
        self.refresh()?;
        self.disk_version = Some(version);
        Ok(())
    }

    /// The records the changes `space`'s document gained since `before` touch (none when
    /// `before` is not in its history, as after a move).
    fn touched_since(&self, space: Space, before: &[automerge::ChangeHash]) -> Vec<RecordId> {
        let Ok(doc) = self.doc(space) else {
            return Vec::new();
        };
        if before.iter().any(|h| !doc.has_change(h)) {
            return Vec::new();
        }
        let bytes: Vec<u8> = doc
            .am()
            .get_changes(before)
            .iter()
            .flat_map(|c| c.raw_bytes().to_vec())
            .collect();
        doc.touched_by_ops(&bytes).unwrap_or_default()
    }

    /// Another process moved this journal to a new epoch: the couple's space and its
    /// introductions are those it stored, and this opening signs for them from now on (the
    /// move wrote this device's certificate for the new space).
    /// Without the identity ([`Journal::keep_identity`]) it stops signing instead, so nothing
    /// goes out under the old epoch's introduction.
    fn follow_elsewhere(&mut self) -> Result<()> {
        let previous = self.couple_space;
        self.couple_space = stored_couple_space(&self.store);
        self.banned.clear();
        self.roster = guard::Roster::default();
        let old = self.signer.take();
        let key = old.as_ref().map(|s| s.key.clone());
        if let (Some(space), Some(identity), Some(key)) =
            (self.couple_space, self.identity.clone(), key)
        {
            let signer = Signer::new(space, &identity, self.me, self.device, key, self.now());
            if let Err(e) = self.set_signer_in_step(signer) {
                // As it was, so that the next step (which finds the move again) tries again.
                self.couple_space = previous;
                self.signer = old;
                return Err(e);
            }
        } else {
            self.load_roster()?;
        }
        Ok(())
    }

    /// Keeps the partner's identity, so that this opening signs for a new epoch that another
    /// process moved the journal to (extension mode); [`Journal::set_signer`] is still what
    /// starts signing.
    pub fn keep_identity(&mut self, identity: crate::crypto::PartnerIdentity) {
        self.identity = Some(identity);
    }

    /// A journal over `store` with these documents, before its partners are read.
    fn assemble(
        store: Store,
        (me, device): (PartnerId, DeviceId),
        couple: LazyDoc,
        personal: LazyDoc,
    ) -> Self {
        let couple_space = stored_couple_space(&store);
        Self {
            couple_space,
            cert_checker: registry::CertChecker::default(),
            store,
            me,
            actor: device.as_bytes().to_vec(),
            key_id: None,
            signer: None,
            identity: None,
            roster: guard::Roster::default(),
            banned: std::collections::HashSet::new(),
            made: None,
            device,
            couple,
            personal,
            partners: Vec::new(),
            schema_version: 0,
            clock: system_clock,
            rejoin_wait: REJOIN_WAIT,
            calendar: Calendar::utc(),
            written: None,
            sync_revision: 0,
            seen_version: None,
            disk_version: None,
            making: false,
        }
    }

    /// A read-only handle on the journal at `path`, which a writer in this process has open:
    /// its own SQLite connection over the read model, so its reads never wait for the writer,
    /// a merge or the background load. It holds no document; every write fails. Call
    /// [`Journal::refresh`] before reading to see partners that joined since.
    pub fn open_reader(path: &Path) -> Result<Self> {
        let store = Store::open_reader(path)?;
        let (me, device) = stored_ids(&store)?;
        let mut journal = Self::assemble(store, (me, device), LazyDoc::absent(), LazyDoc::absent());
        journal.refresh()?;
        Ok(journal)
    }

    /// Re-reads the partners and schema version from the read model (a reader's cache) when
    /// another connection has committed since the last read.
    pub fn refresh(&mut self) -> Result<()> {
        let version = self.store.data_version()?;
        if self.seen_version == Some(version) {
            return Ok(());
        }
        if let Some(head) = self.store.space_view(Space::Couple)? {
            self.partners = view::parse_partners(&head)?;
            self.schema_version = head.schema_version;
        }
        self.seen_version = Some(version);
        Ok(())
    }

    /// Waits until both documents are loaded, which the first write or merge otherwise does.
    /// Reads never need this. An app may call it off the main thread after opening, so the
    /// first edit does not wait; a document that cannot be loaded is reported here.
    pub fn ready(&self) -> Result<()> {
        for space in Space::ALL {
            self.doc(space)?;
        }
        Ok(())
    }

    /// Waiters that finish once each document has finished loading in the background, to wait
    /// on without holding the journal (writes then do not queue behind the load).
    pub fn loaded(&self) -> [crate::Loaded; 2] {
        [self.couple.finished(), self.personal.finished()]
    }

    /// Starts keeping what writes and merges committed, for [`Journal::take_written`]. Off by
    /// default, so a journal nobody drains never grows the list.
    pub fn track_written(&mut self) {
        self.written.get_or_insert_with(Vec::new);
    }

    /// What writes (and `apply_changes` merges) committed since the last call: each change's
    /// space and the records it wrote, as the writer knew them. The device object takes this
    /// after each write to tell observers and wake live sync.
    pub fn take_written(&mut self) -> Written {
        self.written
            .as_mut()
            .map(std::mem::take)
            .unwrap_or_default()
    }

    fn record_written(&mut self, space: Space, ids: &[RecordId]) {
        if let (Some(written), false) = (self.written.as_mut(), ids.is_empty()) {
            written.push((space, ids.to_vec()));
        }
    }

    /// Runs `f` in one read transaction on this journal's connection: on a reader, every
    /// statement `f` runs sees the same commit, never half of a write that touches both
    /// spaces (WAL: it does not block the writer).
    pub fn read_consistent<T>(&mut self, f: impl FnOnce(&Self) -> Result<T>) -> Result<T> {
        self.store
            .conn()
            .prepare_cached("BEGIN DEFERRED")?
            .execute([])?;
        let out = self.refresh().and_then(|()| f(self));
        // A read transaction has nothing to keep: ending it cannot lose anything.
        let ended = self
            .store
            .conn()
            .prepare_cached("COMMIT")
            .and_then(|mut end| end.execute([]));
        let out = out?;
        ended?;
        Ok(out)
    }

    /// Replaces the clock (tests and benchmarks pin time with this).
    pub fn set_clock(&mut self, clock: Clock) {
        self.clock = clock;
    }

    pub(crate) fn now(&self) -> i64 {
        (self.clock)()
    }

    /// Sets the couple's time zone and first day of the week: "today", check-in dates and
    /// week boundaries follow it. The app sets it on every open (it is a device setting).
    pub fn set_calendar(&mut self, calendar: Calendar) {
        self.calendar = calendar;
    }

    /// The calendar in use.
    pub fn calendar(&self) -> &Calendar {
        &self.calendar
    }

    /// Today's date in the couple's time zone.
    pub fn today(&self) -> LocalDate {
        self.calendar.date_of(self.now())
    }

    /// The dates a record may carry (a check-in's day, a claimed occurrence, a backdated
    /// moment): from a year before the journal began to tomorrow. Anything else is a typo or
    /// a clock gone wrong, and would stretch every range the journal is shown over.
    pub fn date_bounds(&self) -> (LocalDate, LocalDate) {
        let began = self
            .partners
            .iter()
            .map(|p| p.joined_at)
            .min()
            .unwrap_or_else(|| self.now());
        (
            self.calendar.date_of(began).add_days(-366),
            self.today().add_days(1),
        )
    }

    /// Refuses a date outside [`date_bounds`](Self::date_bounds).
    pub(crate) fn check_date(&self, what: &str, date: LocalDate) -> Result<()> {
        let (first, last) = self.date_bounds();
        if date < first || date > last {
            return Err(Error::Invalid(format!(
                "{what} {date} is outside the journal's dates ({first} to {last})"
            )));
        }
        Ok(())
    }

    /// The partner this device belongs to.
    pub fn me(&self) -> PartnerId {
        self.me
    }

    /// This device.
    pub fn device(&self) -> DeviceId {
        self.device
    }

    /// A space's whole Automerge document as one save (what a snapshot holds), for tools and
    /// tests that look beneath the API.
    pub fn document(&self, space: Space) -> Result<Vec<u8>> {
        Ok(self.doc(space)?.save())
    }

    /// The Automerge actor this opening writes under (its first 16 bytes are this device's
    /// key id when it signs).
    pub fn actor(&self) -> &[u8] {
        &self.actor
    }

    /// The store (the sync engine writes through it).
    pub fn store(&self) -> &Store {
        &self.store
    }

    /// The partners in the couple's document, in id order.
    pub fn partners(&self) -> Vec<Partner> {
        self.partners.clone()
    }

    /// The other partner, once they have joined.
    pub fn partner(&self) -> Option<Partner> {
        self.partners().into_iter().find(|p| p.id != self.me)
    }

    /// The schema version recorded in the couple's document.
    pub fn schema_version(&self) -> i64 {
        self.schema_version
    }

    /// A full save of one space's document.
    pub fn save_space(&self, space: Space) -> Result<Vec<u8>> {
        Ok(self.doc(space)?.save())
    }

    /// The current heads of one space, as hex strings.
    pub fn heads(&self, space: Space) -> Result<Vec<String>> {
        Ok(self
            .doc(space)?
            .heads()
            .iter()
            .map(|h| h.to_string())
            .collect())
    }

    /// The change chunks of `space` that a replica at `heads` lacks.
    pub fn changes_since(&self, space: Space, heads: &[String]) -> Result<Vec<u8>> {
        let heads = heads
            .iter()
            .map(|h| {
                h.parse()
                    .map_err(|_| Error::Invalid("not a change hash".into()))
            })
            .collect::<Result<Vec<automerge::ChangeHash>>>()?;
        Ok(self.doc(space)?.save_after(&heads))
    }

    /// Applies change chunks from another replica of `space` and commits them; returns the
    /// records that changed.
    pub fn apply_changes(&mut self, space: Space, bytes: &[u8]) -> Result<Vec<RecordId>> {
        self.step(|j| j.apply_changes_step(space, bytes))
    }

    fn apply_changes_step(&mut self, space: Space, bytes: &[u8]) -> Result<Vec<RecordId>> {
        if bytes.is_empty() {
            return Ok(Vec::new());
        }
        // Stored even when nothing shows yet: changes Automerge queues for a missing
        // dependency must be on disk when that dependency arrives.
        let committed = self.merge_and_commit(space, bytes, |store, view| {
            let views = view.map(std::slice::from_ref).unwrap_or_default();
            store.append_changes(&[(space, bytes)], false, views)
        });
        let changed = self.finish_merge(space, committed)?;
        self.record_written(space, &changed);
        Ok(changed)
    }

    /// Folds each space's incremental rows into one full save.
    pub fn compact(&mut self) -> Result<()> {
        self.step(|j| j.compact_step())
    }

    fn compact_step(&mut self) -> Result<()> {
        for space in Space::ALL {
            let save = self.doc(space)?.save();
            self.store.compact(space, &save, self.now())?;
        }
        Ok(())
    }

    /// Folds a space's rows once there are many. Runs after a durable commit, so a failure is
    /// logged rather than failing that call (the next commit tries again).
    fn maybe_compact(&mut self, space: Space) {
        let compacted = self.store.change_rows(space).and_then(|rows| {
            if rows >= COMPACT_AFTER_ROWS {
                let save = self.doc(space)?.save();
                self.store.compact(space, &save, self.now())?;
            }
            Ok(())
        });
        if let Err(e) = compacted {
            tracing::warn!(space = space.as_str(), error = %e, "compaction failed");
        }
    }

    /// A space's document, waiting for its background load if needed.
    pub(crate) fn doc(&self, space: Space) -> Result<&SpaceDoc> {
        self.lazy(space).get()
    }

    /// A space's document for writing or merging, waiting for its background load if needed.
    fn doc_mut(&mut self, space: Space) -> Result<&mut SpaceDoc> {
        if let Err(e) = self.doc(space) {
            // One synchronous retry: a background load can fail for passing reasons.
            if self.reload(space).is_err() {
                return Err(e);
            }
        }
        if self.lazy(space).take_stale() {
            // Only a bug or a hand-edited database gets here; the document is the truth.
            tracing::warn!(
                space = space.as_str(),
                "read model behind its document; resynced"
            );
            self.resync_view(space)?;
        }
        match space {
            Space::Couple => self.couple.get_mut(),
            Space::Personal => self.personal.get_mut(),
        }
    }

    fn lazy(&self, space: Space) -> &LazyDoc {
        match space {
            Space::Couple => &self.couple,
            Space::Personal => &self.personal,
        }
    }

    /// Drops in-memory state of `space` and reloads what the store holds, after a failed commit.
    fn reload(&mut self, space: Space) -> Result<()> {
        let actor = ActorId::from(self.actor.as_slice());
        let doc = load_space(&self.store, space, actor)?;
        match space {
            Space::Couple => self.couple.set(doc),
            Space::Personal => self.personal.set(doc),
        }
        Ok(())
    }

    /// Commits change bytes produced in memory, which wrote records `ids` (the writer knows
    /// them; nothing decodes the bytes it just made). On failure, forgets them in memory too so
    /// the document never runs ahead of the disk.
    fn persist(&mut self, changes: Vec<(Space, Vec<u8>)>, ids: &[RecordId]) -> Result<()> {
        let erased = changes
            .iter()
            .try_for_each(|(space, _)| self.check_not_erased(*space));
        if let Err(e) = erased {
            for (space, _) in &changes {
                self.reload(*space)?;
            }
            return Err(e);
        }
        self.persist_unchecked(changes, ids)
    }

    /// [`Self::persist`] without the erased check: for the erase marker itself.
    fn persist_unchecked(
        &mut self,
        changes: Vec<(Space, Vec<u8>)>,
        ids: &[RecordId],
    ) -> Result<()> {
        if changes.is_empty() {
            return Ok(());
        }
        let refs: Vec<(Space, &[u8])> = changes.iter().map(|(s, b)| (*s, b.as_slice())).collect();
        let committed = self.local_views(&changes, ids).and_then(|views| {
            self.store.append_changes(&refs, true, &views)?;
            Ok(views)
        });
        let views = match committed {
            Ok(views) => views,
            Err(e) => {
                for (space, _) in &changes {
                    self.reload(*space)?;
                }
                return Err(e);
            }
        };
        self.views_committed(&views);
        for (space, _) in &changes {
            self.maybe_compact(*space);
            self.record_written(*space, ids);
        }
        Ok(())
    }

    /// Read-model updates for local changes that wrote records `ids` (a record absent from a
    /// space leaves no row there).
    fn local_views(
        &self,
        changes: &[(Space, Vec<u8>)],
        ids: &[RecordId],
    ) -> Result<Vec<crate::store::ViewUpdate>> {
        changes
            .iter()
            .map(|(space, _)| self.view_update(*space, Some(ids)))
            .collect()
    }

    fn register_partner(&mut self, name: &str) -> Result<()> {
        self.register_in(name, &Space::ALL)
    }

    /// A partner who rejoined on a new device (every old one lost) starts a new personal
    /// space: its owner is recorded there, as for a new partner, so that a restore from the
    /// keyring knows whose it is. (Their entry in the couple's document is the one they had.)
    pub fn own_new_personal_space(&mut self, name: &str) -> Result<()> {
        let name = if name.trim().is_empty() { "me" } else { name };
        self.register_in(name, &[Space::Personal])
    }

    fn register_in(&mut self, name: &str, spaces: &[Space]) -> Result<()> {
        let name = validate::name(name)?;
        let me = self.me.to_string();
        let now = self.now();
        self.ready()?;
        let mut changes = Vec::new();
        for &space in spaces {
            let (_, bytes) = self.doc_mut(space)?.transact(|tx, h| {
                use automerge::transaction::Transactable;
                let p = tx.put_object(&h.partners, me.as_str(), automerge::ObjType::Map)?;
                tx.put(&p, "name", name.as_str())?;
                tx.put(&p, "joined_at", now)?;
                Ok(())
            })?;
            if let Some(b) = bytes {
                changes.push((space, b));
            }
        }
        self.persist(changes, &[])
    }
}

/// A new actor: this device's key id and 8 random bytes, or 16 random bytes for a journal
/// that does not sign.
/// A new device id: bound to the device's key when it has one.
pub(crate) fn new_device_id(key_id: Option<KeyId>) -> DeviceId {
    match key_id {
        Some(key) => DeviceId::generate_for_key(&key.0),
        None => DeviceId::generate(),
    }
}

pub(crate) fn new_actor(key_id: Option<KeyId>) -> Vec<u8> {
    let fresh = *DeviceId::generate().as_bytes();
    match key_id {
        Some(key) => {
            let mut actor = key.0.to_vec();
            actor.extend_from_slice(&fresh[..guard::ACTOR_LEN - 16]);
            actor
        }
        None => fresh.to_vec(),
    }
}

/// The couple's space id the store names (that of the journal's epoch), once it signs.
fn stored_couple_space(store: &Store) -> Option<[u8; 32]> {
    store
        .meta(registry::META_COUPLE_SPACE)
        .ok()
        .flatten()
        .and_then(|h| {
            let mut id = [0u8; 32];
            hex::decode_to_slice(h, &mut id).ok().map(|()| id)
        })
}

/// Set ("1") while a journal is being made, cleared (fsynced) once it is whole.
const META_MAKING: &str = "making";

/// A journal whose making was cut off: marked so, or cut before it wrote anything (its
/// ids or a document). A journal with documents but no ids is damaged, not unfinished.
fn unfinished(store: &Store) -> Result<bool> {
    Ok(store.meta(META_MAKING)?.as_deref() == Some("1")
        || (store.meta("partner")?.is_none() && !store.has_documents()?))
}

/// The partner and device a stored journal belongs to.
fn stored_ids(store: &Store) -> Result<(PartnerId, DeviceId)> {
    let meta = |key: &str| {
        store
            .meta(key)?
            .ok_or_else(|| Error::Corrupt(format!("the database has no {key} id")))
    };
    Ok((meta("partner")?.parse()?, meta("device")?.parse()?))
}

fn load_space(store: &Store, space: Space, actor: ActorId) -> Result<SpaceDoc> {
    let (snapshot, changes, _) = store.load(space)?;
    SpaceDoc::load(snapshot.as_deref(), &changes, actor, true)
}
