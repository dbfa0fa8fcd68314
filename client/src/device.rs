//! The device: a journal, its keys and its relay connection, as the CLI and the bindings hold
//! it. Creating and joining a couple's journal, opening it, syncing and erasing.

use std::{
    future::Future,
    path::{Path, PathBuf},
    sync::{
        Arc, Mutex, PoisonError,
        atomic::{AtomicBool, Ordering},
    },
    time::Duration,
};

use mend_core::{
    Calendar, Certified, Error, Journal, Keyring, KeyringEpoch, Partner, PartnerId, Result, Space,
    crypto::{Invite, InviteKind, PairingKind, PartnerIdentity, SpaceSecret},
    ids::DeviceId,
    journal::{
        EpochNews, EpochSecrets, JoinSource, OldSpace, OpenOptions, Reason, RejoinAsk, Written,
    },
    sync::{Problem, ProblemKind, SpaceLink, SyncStatus, SyncStore},
};

use futures_util::{FutureExt, future::FusedFuture};
use zeroize::Zeroizing;

use crate::{
    Invitation, RelayOptions,
    http::RelayHttp,
    sync::{LiveSync, RoundReport, SyncClient, SyncObserver, blocking, lock},
};

/// The longest the round before a rejoin takes (see [`Device::rejoin_check`]).
const REJOIN_CHECK: Duration = Duration::from_secs(30);

/// How long the task that follows new epochs for live sync waits after a round that did not
/// move, before it listens again.
const FOLLOW_PAUSE: Duration = Duration::from_secs(5);
/// The longest that pause grows to, while the journal still cannot move.
const FOLLOW_PAUSE_MAX: Duration = Duration::from_secs(300);

/// A journal with its keys and its relay connection: what the CLI and the bindings hold.
///
/// Writes go through [`Device::write`], which tells the observer what changed and wakes live
/// sync, whoever called it. Reads go through [`Device::read`], on their own read-only SQLite
/// connection, so they never wait for a write, a merge or the background load.
pub struct Device {
    journal: Arc<Mutex<Journal>>,
    path: PathBuf,
    reader: Mutex<Journal>,
    /// The couple's calendar as last set, for readers opened apart ([`Device::read_apart`]).
    calendar: Mutex<mend_core::Calendar>,
    /// Replaced when the journal moves to a new epoch: store [`Device::keyring`] again then.
    keyring: Mutex<Keyring>,
    relay: RelayOptions,
    client: Arc<SyncClient>,
    observer: Option<Arc<dyn SyncObserver>>,
    live: Mutex<Option<LiveSync>>,
    /// Set once the couple's document holds this device's certificate.
    certified: AtomicBool,
    /// Why this device no longer syncs, once a new epoch began without it.
    removed: Mutex<Option<String>>,
    /// Whether a task follows new epochs for live sync ([`Device::start_live_following`]).
    following: AtomicBool,
    /// Live sync was asked for ([`Device::start_live`]) and not stopped since: a round that
    /// finds it not running (it ended on keys another process replaced, or a move was cut
    /// between stopping and starting it) starts it again.
    live_wanted: AtomicBool,
    /// The journal was opened with an erase of this device's cut off after its marker (the
    /// app killed in between): the next round finishes it ([`Device::finish_erase`]).
    resume_erase: AtomicBool,
    /// The last round found an announcement to claim and the relay did not answer the claim.
    unclaimed: AtomicBool,
    /// Held for the length of a sync round.
    rounds: tokio::sync::Mutex<()>,
    /// Set by [`Device::stop_live`]: ends a round the epoch-following task is running.
    live_stopped: tokio::sync::watch::Sender<u64>,
}

/// The asks to rejoin a journal holds ([`Device::rejoin_asks`]).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct RejoinAsks {
    /// This partner's ask to let a new device in as the other partner.
    pub mine: Option<RejoinAsk>,
    /// The other partner's ask to let a new device in as this partner: unless this partner
    /// lost their other devices and asked for it, a device of theirs should cancel it.
    pub about_me: Option<RejoinAsk>,
    /// How long an ask stands before this device lets the rejoin go ahead.
    pub wait: Duration,
    /// Whether `mine` has stood the wait uncancelled: a rejoin pairing can go ahead.
    pub ready: bool,
}

impl std::fmt::Debug for Device {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Device")
            .field("relay", &self.keyring().relay_url)
            .finish_non_exhaustive()
    }
}

impl Device {
    /// `relay.pin`, when set, replaces the keyring's pin (and is kept in it).
    fn assemble(
        journal: Journal,
        mut keyring: Keyring,
        mut relay: RelayOptions,
        observer: Option<Arc<dyn SyncObserver>>,
    ) -> Result<Self> {
        if relay.pin.is_some() {
            keyring.relay_pin = relay.pin;
        }
        relay.pin = keyring.relay_pin;
        let path = journal.store().path().to_owned();
        let reader = Journal::open_reader(&path)?;
        let calendar = Mutex::new(reader.calendar().clone());
        let mut journal = journal;
        catch_up_keyring(&journal, &mut keyring)?;
        if let Some(key) = &keyring.device_key {
            journal.step(|j| j.settle_couple_space(key))?;
        }
        journal.track_written();
        let resume_erase = journal.erase_pending()?;
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| i64::try_from(d.as_millis()).unwrap_or(i64::MAX));
        if let Some(signer) = keyring.signer(journal.me(), journal.device(), now) {
            journal.set_signer(signer).map_err(|e| match e {
                // The database is of an earlier epoch than the keyring (a restored backup):
                // its own secrets are not in the keyring any more.
                Error::MovedElsewhere => Error::Invalid(
                    "this journal's database is older than the secrets kept for it (a restored \
                     backup?): restore the journal from the kept secrets instead"
                        .into(),
                ),
                other => other,
            })?;
            // Signing took the keyring's couple secret as the journal's: the journal's epoch is
            // that secret's (a keyring kept before keyrings named it learns it here).
            keyring.epoch = journal.keyring_epoch()?;
        }
        if let Some(identity) = &keyring.identity {
            journal.keep_identity(identity.clone());
        }
        let journal = Arc::new(Mutex::new(journal));
        let client = Arc::new(SyncClient::new(
            Arc::clone(&journal),
            &keyring.relay_url,
            &relay,
            keyring.links(),
            observer.clone(),
        )?);
        Ok(Self {
            journal,
            path,
            reader: Mutex::new(reader),
            calendar,
            keyring: Mutex::new(keyring),
            relay,
            client,
            observer,
            live: Mutex::new(None),
            certified: AtomicBool::new(false),
            removed: Mutex::new(None),
            following: AtomicBool::new(false),
            live_wanted: AtomicBool::new(false),
            resume_erase: AtomicBool::new(resume_erase),
            unclaimed: AtomicBool::new(false),
            rounds: tokio::sync::Mutex::new(()),
            live_stopped: tokio::sync::watch::Sender::new(0),
        })
    }

    /// Runs a write on the journal, then, with the journal's lock released, tells the observer
    /// which records it wrote and wakes live sync so the change leaves at once. Keep `f` to
    /// one journal call: it holds the writer's lock.
    pub fn write<T>(&self, f: impl FnOnce(&mut Journal) -> Result<T>) -> Result<T> {
        let (out, written) = {
            let mut journal = lock(&self.journal)?;
            // One step: in extension mode the file lock is held around `f` alone.
            let out = journal.step(f);
            // Taken even when `f` failed: a write that committed before a later step failed
            // was still made.
            (out, journal.take_written())
        };
        self.written(written);
        out
    }

    /// After a write, lock released: tell the observer and wake live sync. Not generic, so the
    /// app's library holds it once rather than once per kind of write.
    fn written(&self, written: Written) {
        if written.is_empty() {
            return;
        }
        if let Some(o) = &self.observer {
            for (space, ids) in written {
                o.records_changed(space, ids);
            }
        }
        if let Ok(live) = self.live.lock()
            && let Some(live) = live.as_ref()
        {
            live.local_edit();
        }
    }

    /// Runs reads on the device's read-only connection, in one read transaction: they see
    /// the last commit whole (never half of a write to both spaces) and never wait for the
    /// writer.
    pub fn read<T>(&self, f: impl FnOnce(&Journal) -> Result<T>) -> Result<T> {
        // The reader keeps no state a panicked read could have left half-changed.
        let mut reader = self.reader.lock().unwrap_or_else(PoisonError::into_inner);
        reader.read_consistent(f)
    }

    /// [`Device::read`] on a read-only connection of its own, opened for this call: for a long
    /// read (the packet) that must not hold up the quick ones, which share one connection.
    pub fn read_apart<T>(&self, f: impl FnOnce(&Journal) -> Result<T>) -> Result<T> {
        let calendar = self
            .calendar
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .clone();
        let mut reader = Journal::open_reader(&self.path)?;
        reader.set_calendar(calendar);
        reader.read_consistent(f)
    }

    /// Sets the couple's calendar (time zone, first day of the week) for writes and reads
    /// alike: "today", date checks and weeks follow it.
    pub fn set_calendar(&self, calendar: Calendar) -> Result<()> {
        lock(&self.journal)?.set_calendar(calendar.clone());
        *self.calendar.lock().unwrap_or_else(PoisonError::into_inner) = calendar.clone();
        self.reader
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .set_calendar(calendar);
        Ok(())
    }

    /// Waits for the journal's background load without holding anything (an app calls it
    /// after opening, so the first edit does not wait); a document that cannot load is
    /// reported here.
    pub async fn ready(&self) -> Result<()> {
        self.client.loaded().await?;
        let journal = Arc::clone(&self.journal);
        blocking(move || lock(&journal)?.ready()).await?;
        self.certify_quietly().await;
        Ok(())
    }

    /// Records this device's certificate in the couple's document unless it is there
    /// ([`Journal::certify_device`]); done when the journal is ready and after each sync round
    /// until it is.
    pub async fn certify(&self) -> Result<Certified> {
        if self.certified.load(Ordering::Relaxed) {
            return Ok(Certified::Present);
        }
        let keyring = self.keyring();
        let (Some(identity), Some(key)) = (keyring.identity.clone(), keyring.device_key.clone())
        else {
            return Err(Error::Invalid("this keyring has no signing keys".into()));
        };
        let space = keyring.couple.derive_space_id();
        let journal = Arc::clone(&self.journal);
        let (out, written) = blocking(move || {
            let mut journal = lock(&journal)?;
            let out = journal.step(|j| j.certify_device(&space, &identity, &key));
            Ok((out, journal.take_written()))
        })
        .await?;
        self.written(written);
        let out = out?;
        if out != Certified::Pending {
            self.certified.store(true, Ordering::Relaxed);
        }
        Ok(out)
    }

    /// [`Device::certify`] where a failure must not stop what called it: it is logged (the
    /// message names no secret) and tried again later.
    async fn certify_quietly(&self) {
        match self.certify().await {
            // An erased journal records nothing more, certificates included; keys of an epoch
            // the journal left are taken up by the next round, which certifies then.
            Ok(_) | Err(Error::Erased(_) | Error::MovedElsewhere) => {}
            Err(e) => tracing::warn!(error = %e, "this device's certificate is not recorded"),
        }
    }

    /// Creates a new journal at `path` for its first partner, with new secrets. `relay` says
    /// how to reach the relay: its pin (kept in the keyring and passed on in invites), the
    /// clear-text opt-in, extra trust anchors.
    pub fn create(
        path: &Path,
        name: &str,
        relay_url: &str,
        options: OpenOptions,
        relay: RelayOptions,
        observer: Option<Arc<dyn SyncObserver>>,
    ) -> Result<Self> {
        RelayHttp::new(relay_url, &relay)?.check()?;
        clear_unfinished(path)?;
        let keyring = Keyring::generate(relay_url)?;
        let journal = Journal::create_with(path, name, keyring.open_options(options))?;
        Self::assemble(journal, keyring, relay, observer)
    }

    /// Joins with the secrets a pairing handed over ([`Device::partner_invite`] or
    /// [`Device::device_invite`] on the inviting side): the other partner (`name` is theirs) or
    /// another device of the same partner. The journal fills on the first sync. The relay pin
    /// handed over is kept unless `relay.pin` replaces it. Apps join with
    /// [`Device::start_join`], which refuses codes that carry secrets.
    pub fn join(
        path: &Path,
        invite: &str,
        name: &str,
        options: OpenOptions,
        relay: RelayOptions,
        observer: Option<Arc<dyn SyncObserver>>,
    ) -> Result<Self> {
        Self::join_as(path, invite, name, None, options, relay, observer)
    }

    /// [`Device::join`], with the personal secret a rejoining partner made before the pairing
    /// (their identity, which the inviting partner vouched for, derives from it).
    pub(crate) fn join_as(
        path: &Path,
        invite: &str,
        name: &str,
        rejoin: Option<SpaceSecret>,
        options: OpenOptions,
        relay: RelayOptions,
        observer: Option<Arc<dyn SyncObserver>>,
    ) -> Result<Self> {
        let invite = Invite::decode(invite)?;
        let relay_pin = relay.pin.or(invite.relay_pin);
        // A rejoin's hello named a key; a handover of another kind would join as someone else.
        if rejoin.is_some() != matches!(invite.kind, InviteKind::Rejoin { .. }) {
            return Err(Error::Pairing(mend_core::crypto::PairingFailure::Tampered));
        }
        let rejoined = rejoin.is_some();
        let (keyring, source) = match invite.kind {
            InviteKind::Rejoin { partner } => {
                let personal = rejoin.ok_or_else(|| {
                    Error::Invite(
                        "this handover rejoins a partner and works only inside the pairing \
                         that made it"
                            .into(),
                    )
                })?;
                let identity = PartnerIdentity::derive_from(&personal);
                (
                    Keyring {
                        relay_url: invite.relay_url,
                        relay_pin,
                        couple: invite.couple,
                        personal,
                        identity: Some(identity),
                        device_key: None,
                        epoch: KeyringEpoch::Known(invite.epoch),
                    },
                    JoinSource {
                        couple: Vec::new(),
                        personal: None,
                        partner: Some(partner),
                    },
                )
            }
            InviteKind::Partner => (
                Keyring {
                    relay_url: invite.relay_url,
                    relay_pin,
                    couple: invite.couple,
                    personal: SpaceSecret::generate()?,
                    identity: None,
                    device_key: None,
                    epoch: KeyringEpoch::Known(invite.epoch),
                },
                JoinSource {
                    couple: Vec::new(),
                    personal: None,
                    partner: None,
                },
            ),
            InviteKind::Device {
                personal,
                partner,
                identity,
            } => (
                Keyring {
                    relay_url: invite.relay_url,
                    relay_pin,
                    couple: invite.couple,
                    personal,
                    identity,
                    device_key: None,
                    epoch: KeyringEpoch::Known(invite.epoch),
                },
                JoinSource {
                    couple: Vec::new(),
                    personal: Some(Vec::new()),
                    partner: Some(partner),
                },
            ),
        };
        // A partner's identity, when the invite carried none, derived as the inviter does.
        let mut keyring = keyring;
        keyring.ensure_signing_keys()?;
        let relay = RelayOptions {
            pin: relay_pin,
            ..relay
        };
        RelayHttp::new(&keyring.relay_url, &relay)?.check()?;
        clear_unfinished(path)?;
        let mut journal =
            Journal::join_unfinished(path, &source, name, keyring.open_options(options))?;
        if rejoined {
            journal.own_new_personal_space(name)?;
        }
        // Joined through a device past the first epoch: start in that one.
        if let Some((epoch, base)) = invite.epoch {
            journal.start_in_epoch(epoch, base)?;
        }
        journal.finish_making()?;
        Self::assemble(journal, keyring, relay, observer)
    }

    /// Opens an existing journal with the keys the app kept. A relay the device refuses
    /// (clear text off this machine without the opt-in) does not stop the journal from
    /// opening: local reads and writes work, and syncing fails with
    /// [`Error::UntrustedRelay`]. `relay.pin`, when set, replaces the keyring's pin, and a
    /// keyring from before signing keys gets them here: in either case, save
    /// [`Device::keyring`] again afterwards.
    pub fn open(
        path: &Path,
        mut keyring: Keyring,
        options: OpenOptions,
        relay: RelayOptions,
        observer: Option<Arc<dyn SyncObserver>>,
    ) -> Result<Self> {
        keyring.ensure_signing_keys()?;
        let journal = Journal::open_with(path, keyring.open_options(options))?;
        Self::assemble(journal, keyring, relay, observer)
    }

    /// Restores a journal whose database is gone (an app reinstalled, a phone restored
    /// without its files) from the keyring alone: downloads the personal space from the relay
    /// into a staging file beside `path`, learns from it which partner this is (only its owner
    /// ever wrote there), then creates `path` as a new device of that partner in the epoch the
    /// keyring names and fills it with a sync that checks every change as any device does (the
    /// staging copy checks nothing: it cannot know whose journal it holds). A keyring kept
    /// before keyrings named their epoch downloads the couple's space too, to learn which
    /// epochs it may be in, and takes one only if this partner's own devices built on it. Fails with
    /// `Unreachable` when the download does not finish within `budget`, leaving nothing at
    /// `path`. The new device gets a signing key of its own: save [`Device::keyring`] again
    /// afterwards.
    pub async fn restore(
        path: &Path,
        mut keyring: Keyring,
        budget: Duration,
        options: OpenOptions,
        relay: RelayOptions,
        observer: Option<Arc<dyn SyncObserver>>,
    ) -> Result<Self> {
        clear_unfinished(path)?;
        if path.exists() {
            return Err(Error::Invalid(format!(
                "a journal already exists at {}; open it instead",
                path.display()
            )));
        }
        let deadline = tokio::time::Instant::now() + budget;
        keyring.device_key = None;
        keyring.ensure_signing_keys()?;
        let Some(identity) = keyring.identity.as_ref().map(PartnerIdentity::public) else {
            return Err(Error::Invalid("the keyring holds no identity".into()));
        };
        let staging = staging_path(path);
        remove_database(&staging)?;
        let mut relay = relay;
        if relay.pin.is_none() {
            relay.pin = keyring.relay_pin;
        }
        let restored = download(&staging, &keyring, budget, options, &relay).await;
        // The staging copy served its purpose whatever happened; it holds the journal's words,
        // so it goes now (and, after a crash, at the start of the next restore).
        let cleanup = remove_database(&staging);
        let (me, candidates) = restored?;
        cleanup?;
        let (vouching, tries) = match keyring.epoch {
            // The keyring names its epoch: the only one to try, and nothing to vouch for (the
            // app's own storage said so, not the relay).
            KeyringEpoch::Known(epoch) => (Vouching::Named, vec![epoch]),
            // A keyring from before keyrings named their epoch. A first change of a later
            // epoch is anyone's to push, so when the relay holds any, each is tried (and then
            // epoch 0), and only one this partner's devices built on is kept: a secret of a
            // later epoch whose own work never reached the relay must not land in epoch 0.
            // Without any, epoch 0 is kept either way (nothing is taken unchecked there), but
            // not written into the keyring unless own work shows it.
            KeyringEpoch::Unknown => {
                let vouched = if candidates.is_empty() {
                    Vouching::Noted
                } else {
                    Vouching::Required
                };
                let mut tries: Vec<Option<(u32, [u8; 32])>> = candidates
                    .into_iter()
                    .take(MAX_EPOCH_CANDIDATES)
                    .map(Some)
                    .collect();
                tries.push(None);
                (vouched, tries)
            }
        };
        // An attempt that fails (out of time, say) passes to the next while time is left: a
        // first change pushed to crowd out the real one costs an attempt, not the restore.
        let mut failed = None;
        let mut out_of_time = false;
        for epoch in tries {
            let left = deadline.saturating_duration_since(tokio::time::Instant::now());
            if left.is_zero() {
                out_of_time = true;
                break;
            }
            let attempt = Self::restore_in(
                path,
                me,
                epoch,
                (vouching, &identity),
                left,
                (keyring.clone(), options, relay.clone()),
            )
            .await;
            match attempt {
                Ok(Some(keyring)) => {
                    // Kept: opened again with the app's observer, which heard nothing of
                    // the attempts.
                    return Self::open(path, keyring, options, relay, observer);
                }
                Ok(None) => {}
                // An attempt kept whose closing failed leaves its journal at `path`: no other
                // attempt may replace it.
                Err(e) if path.exists() => return Err(e),
                Err(e) => {
                    tracing::info!(error = %e, "a restore attempt failed");
                    failed = Some(e);
                }
            }
        }
        // Not every epoch was tried: the budget ran out first (attempts of made-up epochs may
        // have taken it), so nothing is known to be wrong with the relay's copy.
        if out_of_time {
            return Err(Error::Unreachable);
        }
        if let Some(e) = failed {
            return Err(e);
        }
        Err(Error::Invalid(
            "the relay's copy of this journal holds nothing your own devices wrote in the epoch \
             it names, so it cannot be trusted: restore on another of your devices, or pair \
             this one again"
                .into(),
        ))
    }

    /// One try of [`Device::restore`] in `epoch` (`None`: epoch 0): the journal made empty,
    /// filled by a checked round, and kept only if it is whole and (`Required`) this partner's
    /// own devices built on its epoch. `None` when they did not; nothing is left at `path`
    /// unless it returns the keyring the journal was made with (closed: the caller opens it).
    /// An attempt tells no observer and uploads no snapshot: it may be thrown away.
    async fn restore_in(
        path: &Path,
        me: PartnerId,
        epoch: Option<(u32, [u8; 32])>,
        (vouching, identity): (Vouching, &mend_core::crypto::IdentityKey),
        budget: Duration,
        (keyring, options, relay): (Keyring, OpenOptions, RelayOptions),
    ) -> Result<Option<Keyring>> {
        let source = JoinSource {
            couple: Vec::new(),
            personal: Some(Vec::new()),
            partner: Some(me),
        };
        let target = path.to_owned();
        let options = keyring.open_options(options);
        let made = blocking(move || {
            let mut journal = Journal::join_unfinished(&target, &source, "", options)?;
            if let Some((epoch, base)) = epoch {
                journal.start_in_epoch(epoch, base)?;
            }
            Ok(journal)
        })
        .await;
        let journal = match made {
            Ok(journal) => journal,
            Err(e) => {
                let _ = remove_database(path);
                return Err(e);
            }
        };
        let device = match Self::assemble(journal, keyring, relay, None) {
            Ok(device) => device,
            Err(e) => {
                let _ = remove_database(path);
                return Err(e);
            }
        };
        device.client.set_snapshot_every(u64::MAX);
        let filled = device.client.sync_now(budget).await;
        let kept = match filled {
            Ok(status) if status.syncing || !status.online => Err(Error::Unreachable),
            // The relay keeps this keyring's spaces no more: a journal filled from nothing
            // would be kept as if whole.
            Ok(status)
                if status.problems.iter().any(|p| {
                    matches!(
                        p.kind,
                        ProblemKind::Retired | ProblemKind::SpaceGone | ProblemKind::Erased { .. }
                    )
                }) =>
            {
                Err(Error::Invalid(
                    "the relay no longer keeps this keyring's spaces: the journal was erased, \
                     or moved to new secrets after this keyring was stored; restore on another \
                     of your devices, or pair this one again"
                        .into(),
                ))
            }
            Ok(_) => {
                let identity = *identity;
                let journal = Arc::clone(&device.journal);
                blocking(move || {
                    let mut journal = lock(&journal)?;
                    let own = match vouching {
                        Vouching::Named => true,
                        Vouching::Required | Vouching::Noted => {
                            journal.step(|j| j.shows_own_work(&identity))?
                        }
                    };
                    if matches!(vouching, Vouching::Required) && !own {
                        return Ok(false);
                    }
                    // An epoch the keyring named whose first change the relay does not hold
                    // (it lost it, or serves an older copy): nothing of the epoch would show.
                    // (Own work in an epoch shows its first change is held.)
                    if matches!(vouching, Vouching::Named)
                        && !journal.step(|j| j.holds_epoch_base())?
                    {
                        return Err(Error::Invalid(
                            "the relay does not hold the start of the epoch this keyring names, \
                             so the journal cannot be restored from it: if the journal moved to \
                             new secrets after this keyring was stored, pair this device again \
                             through another of your devices; otherwise try again later"
                                .into(),
                        ));
                    }
                    if !own {
                        journal.mark_epoch_unconfirmed()?;
                    }
                    journal.finish_making()?;
                    Ok(true)
                })
                .await
            }
            Err(e) => Err(e),
        };
        let keyring = device.keyring();
        let closed = device.close().await;
        match kept {
            Ok(true) => closed.map(|()| Some(keyring)),
            other => {
                remove_database(path)?;
                closed?;
                other.map(|_| None)
            }
        }
    }

    /// The writer's journal, shared with the sync task. Prefer [`Device::write`] and
    /// [`Device::read`]: a write made here directly tells no observer and wakes no live sync.
    pub fn journal(&self) -> &Arc<Mutex<Journal>> {
        &self.journal
    }

    /// The keys to keep. They change when the journal moves to a new epoch (a device removed,
    /// a partner asking to forget): store them again after every sync round that says so
    /// ([`RoundReport::keyring_changed`]), and after opening.
    pub fn keyring(&self) -> Keyring {
        self.keyring
            .lock()
            .map(|k| k.clone())
            .unwrap_or_else(|poisoned| poisoned.into_inner().clone())
    }

    /// How this device reaches its relay.
    pub(crate) fn relay_options(&self) -> &RelayOptions {
        &self.relay
    }

    /// The relay connection.
    pub fn client(&self) -> &Arc<SyncClient> {
        &self.client
    }

    /// The secrets a pairing hands the other partner (the couple's secret: never show it to
    /// anyone; [`Device::invite`] is what a user shares).
    pub fn partner_invite(&self) -> Result<Zeroizing<String>> {
        self.keyring().partner_invite()
    }

    /// The secrets a pairing hands another of this partner's devices (never show them to
    /// anyone; [`Device::invite`] is what a user shares).
    pub fn device_invite(&self) -> Result<Zeroizing<String>> {
        let me = lock(&self.journal)?.me();
        self.keyring().device_invite(me)
    }

    /// Erases this partner's spaces at the relay: the couple's space (for both partners) and
    /// this partner's personal space, leaving tombstones. No marker is written: [`Device::erase`]
    /// is the erase that tells the other devices. The local journal is left to the caller.
    pub async fn erase_remote(&self) -> Result<()> {
        let keyring = self.keyring();
        let http = RelayHttp::new(&keyring.relay_url, &self.relay)?;
        http.check()?;
        for link in keyring.links() {
            if let Err(e) = http.erase(&link).await {
                return Err(http.take_problem().map_or(e, Error::UntrustedRelay));
            }
        }
        Ok(())
    }

    /// Erases the shared journal everywhere it can reach, within `budget` for reaching the
    /// relay: first a round that shows the relay answers (unreachable: nothing is marked or
    /// erased, [`Error::Unreachable`]); then this partner's erase marker is written and pushed,
    /// so this partner's other devices and the other partner learn who erased it and when even
    /// if they sync before the tombstones; then both spaces are deleted at the relay. The
    /// local journal is left to the caller, refusing writes from now on.
    pub async fn erase(&self, budget: Duration) -> Result<EraseReport> {
        let http = RelayHttp::new(&self.keyring().relay_url, &self.relay)?;
        http.check()?;
        // The spaces to erase are those of the epoch the journal is in, wherever it moved.
        self.adopt_elsewhere_now().await?;
        let journal = Arc::clone(&self.journal);
        // On the blocking pool: the journal's lock may wait behind a merge.
        let already =
            blocking(move || Ok(lock(&journal)?.erasure()?.is_some_and(|e| e.by_me))).await?;
        if !already {
            // A whole round, which follows a move to a new epoch the relay holds: the spaces
            // to erase are the ones the journal lives in now, not the ones it left.
            let reached = self.sync_round(budget).await?;
            if !reached.status.online || !reached.finished {
                return Err(Error::Unreachable);
            }
            // A move the round could not claim (the relay did not answer): erasing now would
            // delete the spaces the journal may be leaving and leave the new ones. An
            // announcement the relay answered for and this device stays put under (one it
            // cannot follow) does not stop an erase.
            if self.unclaimed.load(Ordering::Relaxed) {
                return Err(Error::Invalid(
                    "the journal is moving to new secrets and this device has not followed yet: \
                     nothing was erased; sync, then erase again"
                        .into(),
                ));
            }
        }
        let journal = Arc::clone(&self.journal);
        blocking(move || lock(&journal)?.mark_erased()).await?;
        // From here the marker is written and the erase stands: what fails now is told as an
        // erase not finished (a later call or round finishes it), never as one not made.
        self.resume_erase.store(true, Ordering::Relaxed);
        let marker_pushed = match self.client.sync_now(budget).await {
            Ok(pushed) => pushed.online && pushed.pending == 0,
            Err(e) => {
                tracing::warn!(error = %e, "the erase marker was not pushed yet");
                false
            }
        };
        let finished = match self.delete_erased_spaces().await {
            Ok(()) => true,
            Err(e) => {
                tracing::warn!(error = %e, "the erase is recorded; the relay has not deleted the spaces yet");
                false
            }
        };
        Ok(EraseReport {
            marker_pushed,
            finished,
        })
    }

    /// The last step of an erase: both spaces deleted at the relay, then nothing pending.
    async fn delete_erased_spaces(&self) -> Result<()> {
        self.erase_remote().await?;
        let journal = Arc::clone(&self.journal);
        blocking(move || lock(&journal)?.erase_done()).await?;
        self.resume_erase.store(false, Ordering::Relaxed);
        Ok(())
    }

    /// Finishes an erase of this device's that was cut off after its marker (the app killed
    /// in between): the marker goes out with the round, then the spaces are deleted.
    async fn finish_erase(&self, deadline: tokio::time::Instant) -> Result<()> {
        if !self.resume_erase.load(Ordering::Relaxed) {
            return Ok(());
        }
        let journal = Arc::clone(&self.journal);
        if !blocking(move || lock(&journal)?.erase_pending()).await? {
            self.resume_erase.store(false, Ordering::Relaxed);
            return Ok(());
        }
        let budget = deadline.saturating_duration_since(tokio::time::Instant::now());
        let pushed = self.client.sync_now(budget).await?;
        if !pushed.online {
            return Ok(());
        }
        match tokio::time::timeout_at(deadline, self.delete_erased_spaces()).await {
            Ok(done) => {
                done?;
                tracing::info!("finished an erase that was cut off");
                Ok(())
            }
            Err(_) => Ok(()),
        }
    }

    /// Sets the name this device goes by ([`Journal::set_device_name`]): written into the
    /// couple's document beside its certificate, now or once the certificate is there.
    pub fn set_device_name(&self, name: &str) -> Result<()> {
        self.write(|journal| journal.set_device_name(name))
    }

    /// One bounded push and pull (and, when it brings a new epoch, the move and a round in
    /// it).
    pub async fn sync_now(&self, budget: Duration) -> Result<SyncStatus> {
        Ok(self.sync_round(budget).await?.status)
    }

    /// One push and pull with a hard deadline, saying what it did ([`SyncClient::sync_round`]).
    /// Dropping the future stops the round: its requests are cut and nothing is lost.
    pub async fn sync_round(&self, budget: Duration) -> Result<RoundReport> {
        self.sync_round_or(budget, std::future::pending()).await
    }

    /// [`Device::sync_round`], also cut when `stop` completes. The deadline and `stop` hold
    /// for every step: the wait for another round to end, the round, and what follows it
    /// (certifying, retiring old spaces); a move to a new epoch is not cut once begun, and
    /// none begins after the deadline (the next round makes it).
    pub async fn sync_round_or(
        &self,
        budget: Duration,
        stop: impl Future<Output = ()>,
    ) -> Result<RoundReport> {
        self.refuse_if_removed()?;
        let deadline = tokio::time::Instant::now() + budget;
        let stops = *self.live_stopped.borrow();
        // Fused: polled again after it fired, it stays pending instead of panicking.
        let mut stop = std::pin::pin!(stop.fuse());
        // One round at a time: a round that moves the journal to a new epoch must not run
        // beside another whose engine still holds the old epoch's keys. This one waits for
        // the other no longer than its own deadline, then keeps what is left of it.
        let turn = tokio::select! {
            turn = self.rounds.lock() => Some(turn),
            () = tokio::time::sleep_until(deadline) => None,
            () = stop.as_mut() => None,
        };
        let Some(_turn) = turn else {
            // Another round held the turn throughout: this one did nothing, sync is under way.
            // (Whether the relay answers is that round's to say.)
            let journal = Arc::clone(&self.journal);
            let summary = blocking(move || lock(&journal)?.sync_summary())
                .await
                .unwrap_or_default();
            return Ok(RoundReport {
                status: SyncStatus {
                    syncing: true,
                    pending: summary.pending,
                    last_synced: summary.last_synced,
                    problems: summary.problems,
                    ..SyncStatus::default()
                },
                ..RoundReport::default()
            });
        };
        let over = |fired: bool| fired || tokio::time::Instant::now() >= deadline;
        let mut moved = self.adopt_within(deadline, stop.as_mut()).await?;
        // The spaces of the epoch the journal is in, wherever it moved.
        if let Some(Err(e)) = within(deadline, stop.as_mut(), self.finish_erase(deadline)).await {
            tracing::warn!(error = %e, "could not finish an erase that was cut off");
        }
        let budget = deadline.saturating_duration_since(tokio::time::Instant::now());
        let mut report = match self.client.sync_round_or(budget, stop.as_mut()).await {
            // The other process moved while this round ran: nothing was sent; once more with
            // the new keys.
            Err(Error::MovedElsewhere) if self.adopt_within(deadline, stop.as_mut()).await? => {
                moved = true;
                let left = deadline.saturating_duration_since(tokio::time::Instant::now());
                self.client.sync_round_or(left, stop.as_mut()).await?
            }
            other => other?,
        };
        if !over(stop.is_terminated()) {
            within(deadline, stop.as_mut(), self.certify_quietly()).await;
        }
        // A round can bring a new epoch: move, then sync the new spaces in what is left.
        self.unclaimed.store(false, Ordering::Relaxed);
        for _ in 0..2 {
            if over(stop.is_terminated()) {
                break;
            }
            let claimed = within(deadline, stop.as_mut(), self.claim_epoch()).await;
            let kept = match claimed.transpose()? {
                Some(Claim::Kept(kept)) => kept,
                Some(Claim::Nothing) => break,
                // The relay did not answer the claim (or the round was cut while it asked):
                // a move may be waiting that this device could not follow yet.
                Some(Claim::Unanswered) | None => {
                    self.unclaimed.store(true, Ordering::Relaxed);
                    break;
                }
            };
            if !self.follow_epoch(kept).await? {
                break;
            }
            moved = true;
            self.certified.store(false, Ordering::Relaxed);
            let left = deadline.saturating_duration_since(tokio::time::Instant::now());
            report = self.client.sync_round_or(left, stop.as_mut()).await?;
            if !over(stop.is_terminated()) {
                within(deadline, stop.as_mut(), self.certify_quietly()).await;
            }
        }
        report.keyring_changed |= moved;
        self.note_retired(&report.status);
        self.refuse_if_removed()?;
        if !over(stop.is_terminated()) {
            self.finish_removal().await;
        }
        if report.status.online && !over(stop.is_terminated()) {
            within(deadline, stop.as_mut(), self.retire_old_epochs()).await;
        }
        // An ask to rejoin waits from when it reached the relay; one naming this partner is
        // noted as shown (by the next round, when this one is over: the step may wait for
        // the journal).
        if !over(stop.is_terminated()) {
            let journal = Arc::clone(&self.journal);
            let noted = within(
                deadline,
                stop.as_mut(),
                blocking(move || {
                    let mut journal = lock(&journal)?;
                    journal.step(Journal::note_rejoin_asks)
                }),
            )
            .await;
            if let Some(Err(e)) = noted {
                tracing::warn!(error = %e, "could not note the asks to rejoin");
            }
        }
        // Not against spaces the relay refuses for good (erased, retired, a revoked token):
        // live sync would end again at once.
        if !report.status.problems.iter().any(|p| p.kind.is_fatal()) {
            self.restart_live(stops)?;
        }
        Ok(report)
    }

    /// Brings what the relay holds before a rejoin goes ahead (a cancel of the ask among it),
    /// and says why not if it may not: the relay must answer, whatever the journal holds.
    pub(crate) async fn rejoin_check(&self, partner: PartnerId) -> Result<()> {
        let report = self.sync_round(REJOIN_CHECK).await?;
        // A couple's space the relay refuses for good (erased, retired, a revoked token) syncs
        // nothing, whatever the round says.
        let refused = report
            .status
            .problems
            .iter()
            .any(|p| p.space == Space::Couple.as_str() && p.kind.is_fatal());
        if !report.finished || !report.status.online || refused {
            return Err(Error::Invalid(
                "a sync round with the relay did not finish, so whether your partner's devices \
                 cancelled the ask to rejoin is not known: try again when the relay answers"
                    .into(),
            ));
        }
        let journal = Arc::clone(&self.journal);
        let refusal = blocking(move || {
            let mut journal = lock(&journal)?;
            journal.step(|j| j.rejoin_refusal(partner))
        })
        .await?;
        match refusal {
            Some(why) => Err(Error::Invalid(why)),
            None => Ok(()),
        }
    }

    /// Another device's rotation won at the relay and kept a device this one removed (or left
    /// this partner's personal space as it was): removes it again, in this epoch. The next
    /// round hands the announcement out. Best effort: tried after every round.
    async fn finish_removal(&self) {
        let journal = Arc::clone(&self.journal);
        let done = blocking(move || {
            let mut journal = lock(&journal)?;
            journal.step(|j| {
                if j.epoch_offer()?.is_some() || j.announced(j.epoch()?.saturating_add(1))? {
                    return Ok(false);
                }
                let again = j.unfinished_removal()?;
                if again.is_empty() {
                    return Ok(false);
                }
                j.rotate(Reason::RemoveDevices, &again)?;
                Ok(true)
            })
        })
        .await;
        match done {
            Ok(true) => {
                if let Ok(live) = self.live.lock()
                    && let Some(live) = live.as_ref()
                {
                    live.local_edit();
                }
            }
            Ok(false) => {}
            Err(e) => tracing::warn!(error = %e, "a removal could not be made again yet"),
        }
    }

    /// A couple's space the relay retired under this device means the journal moved on
    /// without it.
    fn note_retired(&self, status: &SyncStatus) {
        if status
            .problems
            .iter()
            .any(|p| p.space == Space::Couple.as_str() && matches!(p.kind, ProblemKind::Retired))
            && let Ok(mut removed) = self.removed.lock()
            && removed.is_none()
        {
            *removed = Some(
                "this journal moved to new secrets without this device (it was removed, or \
                 away longer than an old epoch is kept): pair it again"
                    .into(),
            );
        }
    }

    /// Deletes at the relay the old epochs' spaces this device left, once every device that
    /// moved with it is in the new epoch (or the grace period passed): best effort, tried again
    /// after the next round when the relay does not answer.
    async fn retire_old_epochs(&self) {
        let Some(key) = self.keyring().device_key else {
            return;
        };
        let journal = Arc::clone(&self.journal);
        let old = match blocking(move || lock(&journal)?.retirement(&key)).await {
            Ok(old) => old,
            Err(e) => {
                tracing::warn!(error = %e, "the old epochs' spaces cannot be read");
                return;
            }
        };
        if old.is_empty() {
            return;
        }
        let Ok(http) = RelayHttp::new(&self.keyring().relay_url, &self.relay) else {
            return;
        };
        if http.check().is_err() {
            return;
        }
        for o in &old {
            let link = SpaceLink {
                space: o.space,
                keys: o.secret.derive_keys(),
            };
            if let Err(e) = http.retire(&link).await {
                tracing::info!(error = %e, "an old epoch's space is not retired yet");
                return;
            }
        }
        let journal = Arc::clone(&self.journal);
        let Some(key) = self.keyring().device_key else {
            return;
        };
        if let Err(e) = blocking(move || lock(&journal)?.old_spaces_retired(&key, &old)).await {
            tracing::warn!(error = %e, "the old epochs' spaces were retired but not forgotten");
        }
    }

    /// Fails with [`Error::DeviceRemoved`] once a new epoch began without this device.
    fn refuse_if_removed(&self) -> Result<()> {
        match self.removed.lock().ok().and_then(|r| r.clone()) {
            Some(why) => Err(Error::DeviceRemoved(why)),
            None => Ok(()),
        }
    }

    /// The announcement of the next epoch the relay keeps, if the journal holds one to offer:
    /// devices that rotated at once each announced an epoch, the relay keeps the first offered,
    /// and every device follows that one. A request like any other, so a round's deadline or
    /// a cancel may cut it (nothing has moved yet).
    async fn claim_epoch(&self) -> Result<Claim> {
        let keyring = self.keyring();
        if keyring.identity.is_none() || keyring.device_key.is_none() {
            return Ok(Claim::Nothing);
        }
        let journal = Arc::clone(&self.journal);
        let Some(offer) = blocking(move || lock(&journal)?.epoch_offer()).await? else {
            return Ok(Claim::Nothing);
        };
        let http = RelayHttp::new(&keyring.relay_url, &self.relay)?;
        http.check()?;
        let link = SpaceLink {
            space: Space::Couple,
            keys: keyring.couple.derive_keys(),
        };
        // Out of reach: the move waits for the next round.
        Ok(match http.claim_successor(&link, offer).await {
            Ok(kept) => Claim::Kept(kept),
            Err(_) => Claim::Unanswered,
        })
    }

    /// Moves to the new epoch the relay keeps (`kept`, [`Device::claim_epoch`]), if there is
    /// one for this device: the journal starts over in it, the keyring takes its secrets and
    /// sync its spaces. Answers whether it moved; notes a removal.
    async fn follow_epoch(&self, kept: [u8; 32]) -> Result<bool> {
        let keyring = self.keyring();
        let (Some(identity), Some(key)) = (keyring.identity.clone(), keyring.device_key.clone())
        else {
            return Ok(false);
        };
        // Live sync's engine and sockets are this epoch's: none may run while the journal moves
        // (it would read the old spaces into the new epoch's state, or push the new epoch's
        // changes under the old keys). Started again on the spaces the journal is in after.
        let was_live = self.is_live();
        // A `stop_live` made while the journal moves must not be undone by the restart after.
        let stops = *self.live_stopped.borrow();
        if was_live {
            self.stop_live_inner().await;
        }
        let resume = || {
            if was_live {
                self.restart_live(stops)
            } else {
                Ok(())
            }
        };
        let journal = Arc::clone(&self.journal);
        let (old_couple, old_personal) = (keyring.couple.clone(), keyring.personal.clone());
        let moved = blocking(move || {
            let mut journal = lock(&journal)?;
            journal.step(|j| match j.epoch_news(&key, &kept)? {
                EpochNews::Current => Ok(Followed::Stay),
                EpochNews::Removed {
                    at,
                    rejoined,
                    despite_cancel,
                    early,
                    ..
                } => Ok(Followed::Removed(
                    at,
                    rejoined,
                    despite_cancel,
                    early.then(|| j.rejoin_wait() / 2),
                )),
                EpochNews::Move(step) => {
                    let secrets = step.secrets.clone();
                    // The spaces left behind, to delete at the relay once every device moved.
                    let mut old = vec![OldSpace {
                        space: Space::Couple,
                        secret: old_couple,
                    }];
                    if secrets.personal.is_some() {
                        old.push(OldSpace {
                            space: Space::Personal,
                            secret: old_personal,
                        });
                    }
                    j.move_to_epoch(*step, &identity, &key, old)?;
                    Ok(Followed::Moved(secrets, j.keyring_epoch()?))
                }
            })
        })
        .await;
        let moved = match moved {
            Ok(moved) => moved,
            Err(e) => {
                resume()?;
                return Err(e);
            }
        };
        match moved {
            Followed::Stay => {
                resume()?;
                Ok(false)
            }
            Followed::Removed(at, rejoined, despite_cancel, early) => {
                let when = mend_core::date::LocalDate::from_unix_ms(at, 0);
                if let Ok(mut removed) = self.removed.lock() {
                    *removed = Some(if let Some(cancelled) = despite_cancel {
                        let cancelled = mend_core::date::LocalDate::from_unix_ms(cancelled, 0);
                        format!(
                            "on {when} your partner let a new device into the journal as you, \
                             although a device of yours had cancelled that on {cancelled}, and \
                             every device of yours was shut out: talk to your partner now; this \
                             device no longer syncs"
                        )
                    } else if let Some(shown) = early.filter(|_| rejoined) {
                        format!(
                            "on {when} your partner let a new device into the journal as you \
                             before this device had been shown the ask for {}, and every device \
                             of yours was shut out: if that was not you, talk to your partner now; \
                             this device no longer syncs",
                            mend_core::journal::describe_wait(shown)
                        )
                    } else if rejoined {
                        format!(
                            "on {when} your partner let a new device into the journal as you, and \
                             every device of yours was shut out: if that was not you, talk to \
                             your partner now; this device no longer syncs"
                        )
                    } else {
                        format!(
                            "this device was removed from the journal on {when}: it no longer \
                             syncs, and nothing written on it reaches the other devices"
                        )
                    });
                }
                self.stop_live_soon();
                self.tell_removed().await;
                Ok(false)
            }
            Followed::Moved(secrets, epoch) => {
                self.take_secrets(secrets.couple, secrets.personal, epoch)?;
                resume()?;
                if let Some(observer) = &self.observer {
                    observer.keyring_changed();
                }
                Ok(true)
            }
        }
    }

    /// Keeps the secrets of the epoch the journal moved to (the personal one when it changed)
    /// and syncs their spaces from the next round on.
    fn take_secrets(
        &self,
        couple: SpaceSecret,
        personal: Option<SpaceSecret>,
        epoch: KeyringEpoch,
    ) -> Result<()> {
        let links = {
            let mut kept = self
                .keyring
                .lock()
                .map_err(|_| Error::Internal("the keyring is unusable".into()))?;
            kept.couple = couple;
            kept.epoch = epoch;
            if let Some(personal) = personal {
                kept.personal = personal;
            }
            kept.links()
        };
        self.client.relink(links);
        Ok(())
    }

    /// [`Device::adopt_elsewhere`] outside a round: taking the rounds' turn first, so no
    /// round sends what it built with the old keys to the new spaces.
    pub(crate) async fn adopt_elsewhere_now(&self) -> Result<bool> {
        let _turn = self.rounds.lock().await;
        self.adopt_elsewhere().await
    }

    /// Takes the new secrets when another process (an app extension, in extension mode) moved
    /// the journal to a new epoch: the journal holds them, sealed to this device, since that
    /// move. Live sync starts again on the new spaces, and the observer is told to store the
    /// keyring. Returns whether it did.
    async fn adopt_elsewhere(&self) -> Result<bool> {
        match self.moved_elsewhere().await? {
            Some(keyring) => self.adopt(keyring).await,
            None => Ok(false),
        }
    }

    /// [`Device::adopt_elsewhere`] within a round: looking waits for the journal (in extension
    /// mode, while the other process holds it), so it is cut at the deadline or a stop, and
    /// loses nothing then; following a move, once found, is not cut.
    async fn adopt_within(
        &self,
        deadline: tokio::time::Instant,
        stop: std::pin::Pin<&mut impl Future<Output = ()>>,
    ) -> Result<bool> {
        match within(deadline, stop, self.moved_elsewhere()).await {
            Some(found) => match found? {
                Some(keyring) => self.adopt(keyring).await,
                None => Ok(false),
            },
            None => Ok(false),
        }
    }

    /// The keyring with the new secrets, when another process moved the journal to a new
    /// epoch ([`Device::adopt_elsewhere`]). Only reads: cutting it loses nothing.
    async fn moved_elsewhere(&self) -> Result<Option<Keyring>> {
        let mut keyring = self.keyring();
        let before = keyring.couple.derive_space_id();
        let journal = Arc::clone(&self.journal);
        let adopted = blocking(move || {
            let mut journal = lock(&journal)?;
            // The step reads again what the other process committed.
            journal.step(|j| {
                if j.couple_space_id().is_none_or(|space| space == before) {
                    return Ok(None);
                }
                catch_up_keyring(j, &mut keyring)?;
                keyring.epoch = j.keyring_epoch()?;
                Ok(Some(keyring))
            })
        })
        .await?;
        Ok(adopted)
    }

    /// Takes the secrets [`Device::moved_elsewhere`] found. Not to be cut once begun: live
    /// sync is stopped, the secrets taken, and live sync started again on them.
    async fn adopt(&self, adopted: Keyring) -> Result<bool> {
        let before = self.keyring().couple.derive_space_id();
        if adopted.couple.derive_space_id() == before {
            tracing::warn!(
                "the journal moved in another process and holds no secrets for this one"
            );
            return Ok(false);
        }
        let was_live = self.is_live();
        let stops = *self.live_stopped.borrow();
        if was_live {
            self.stop_live_inner().await;
        }
        self.take_secrets(adopted.couple, Some(adopted.personal), adopted.epoch)?;
        self.certified.store(false, Ordering::Relaxed);
        if was_live {
            self.restart_live(stops)?;
        }
        if let Some(observer) = &self.observer {
            observer.keyring_changed();
        }
        Ok(true)
    }

    /// Tells the app that this device was shut out, as a `Retired` problem on the couple's
    /// space: kept with the other problems, and handed to the observer at once, so an app that
    /// only runs live sync hears of it too (its next `sync_now` fails with the words).
    async fn tell_removed(&self) {
        let journal = Arc::clone(&self.journal);
        let status = blocking(move || {
            let mut journal = lock(&journal)?;
            let problem = Problem {
                space: Space::Couple.as_str().into(),
                kind: ProblemKind::Retired,
                at: crate::now_ms(),
            };
            journal.record_problem(Space::Couple, &problem)?;
            let summary = journal.step(|j| j.sync_summary())?;
            Ok(SyncStatus {
                online: true,
                syncing: false,
                pending: summary.pending,
                last_synced: summary.last_synced,
                problems: summary.problems,
                untrusted_relay: None,
            })
        })
        .await;
        match status {
            Ok(status) => {
                if let Some(observer) = &self.observer {
                    observer.status_changed(status);
                }
            }
            Err(e) => tracing::warn!(error = %e, "could not record that this device was removed"),
        }
    }

    fn stop_live_soon(&self) {
        if let Some(live) = self.live.lock().ok().and_then(|mut l| l.take()) {
            tokio::spawn(live.stop());
        }
    }

    /// Shuts one of this partner's own devices (a lost phone) out of the journal: a new epoch
    /// whose secrets every other device receives sealed to its own key; the removed one reads
    /// nothing written after. Syncs within `budget` to hand it out; store
    /// [`Device::keyring`] again afterwards.
    pub async fn remove_device(&self, device: DeviceId, budget: Duration) -> Result<RoundReport> {
        self.rotate(Reason::RemoveDevices, vec![device], budget)
            .await
    }

    /// Starts a new epoch whose journal keeps no history: removed records keep their place and
    /// lose their words on every device that moves (and, once the old epoch is retired, at the
    /// relay). Syncs within `budget`; store [`Device::keyring`] again afterwards.
    pub async fn forget(&self, budget: Duration) -> Result<RoundReport> {
        self.rotate(Reason::Forget, Vec::new(), budget).await
    }

    /// Asks to let a new device in as the other partner, who lost every device
    /// ([`Journal::ask_rejoin`]). Sync carries the ask to their devices, which show it and
    /// can cancel it; the rejoin ([`PairingKind::Rejoin`]) can go ahead once it has stood for
    /// [`Device::rejoin_asks`]'s wait. Sync soon after, so the wait counts from an ask they
    /// can see.
    pub fn ask_rejoin(&self) -> Result<RejoinAsk> {
        self.write(Journal::ask_rejoin)
    }

    /// Cancels the other partner's ask to let a new device in as this partner
    /// ([`Journal::cancel_rejoin`]): this partner still has a device, this one. A device
    /// already shut out cannot.
    pub fn cancel_rejoin(&self) -> Result<RejoinAsk> {
        self.refuse_if_removed()?;
        self.write(Journal::cancel_rejoin)
    }

    /// The asks to rejoin this journal holds: the app shows one naming this partner (with a
    /// way to cancel it) and the state of this partner's own.
    pub fn rejoin_asks(&self) -> Result<RejoinAsks> {
        let removed = self.refuse_if_removed().is_err();
        let mut journal = lock(&self.journal)?;
        journal.step(|j| {
            let removed = removed || j.replaced_here()?;
            let me = j.me();
            let other = j.partner().map(|p| p.id);
            let wait = j.rejoin_wait();
            let mine = match other {
                Some(other) => j.rejoin_ask(other)?.filter(|ask| ask.asked_by == me),
                None => None,
            };
            let refusal = match other {
                Some(other) => j.rejoin_refusal(other)?,
                None => None,
            };
            Ok(RejoinAsks {
                mine,
                // A device already shut out has nothing left to cancel.
                about_me: j.rejoin_ask(me)?.filter(|_| !removed),
                wait,
                ready: mine.is_some() && refusal.is_none(),
            })
        })
    }

    /// How long an ask to rejoin stands before this device lets the rejoin go ahead
    /// ([`mend_core::journal::REJOIN_WAIT`] unless set).
    pub fn set_rejoin_wait(&self, wait: Duration) -> Result<()> {
        lock(&self.journal)?.set_rejoin_wait(wait);
        Ok(())
    }

    /// Accepts whoever joins through `invitation` ([`Invitation::accept`]). For a rejoin, first
    /// starts a new epoch that shuts out every device of the other partner and vouches for
    /// the joiner's new identity, syncs within `budget` until this device has moved, and only
    /// then hands over the new epoch's couple secret. Store [`Device::keyring`] again after a
    /// rejoin.
    pub async fn welcome(&self, mut invitation: Invitation, budget: Duration) -> Result<()> {
        if invitation.kind() != PairingKind::Rejoin {
            // The secrets of the epoch the journal is in now, wherever it moved since the
            // invite opened.
            if let Err(e) = self.adopt_elsewhere_now().await {
                invitation.cancel().await;
                return Err(e);
            }
            match self.handover(invitation.kind()) {
                Ok(handover) => invitation.set_handover(handover),
                Err(e) => {
                    invitation.cancel().await;
                    return Err(e);
                }
            }
            return invitation.accept().await;
        }
        let outcome = self.rotate_for_rejoin(&invitation, budget).await;
        match outcome {
            Ok(handover) => {
                invitation.set_handover(handover);
                invitation.accept().await
            }
            Err(e) => {
                invitation.cancel().await;
                Err(e)
            }
        }
    }

    async fn rotate_for_rejoin(
        &self,
        invitation: &Invitation,
        budget: Duration,
    ) -> Result<Zeroizing<String>> {
        self.refuse_if_removed()?;
        let identity = invitation.joiner_identity().ok_or_else(|| {
            Error::Invalid("nobody has asked to join yet: wait for the joiner first".into())
        })?;
        let deadline = tokio::time::Instant::now() + budget;
        let (partner, epoch) = self.read(|j| {
            let partner = j
                .partner()
                .map(|p| p.id)
                .ok_or_else(|| Error::Invalid("this journal has no other partner".into()))?;
            Ok((partner, j.epoch()?))
        })?;
        // A cancel may have reached the relay since the invite opened.
        self.rejoin_check(partner).await?;
        let journal = Arc::clone(&self.journal);
        let written = blocking(move || {
            let mut journal = lock(&journal)?;
            journal.step(|j| j.rotate_for_rejoin(partner, identity))?;
            Ok(journal.take_written())
        })
        .await?;
        self.written(written);
        // A few rounds: one pushes the announcement, the next may be needed to hear the relay
        // keep it, and they go on until nothing waits to be pushed: the new epoch's first
        // change must be at the relay before the joiner's first push, or a device reading the
        // epoch from its start would meet the joiner's device before the change that vouches
        // for it. Another device's rotation may win instead: then the joiner's key is not the
        // one in force, and this pairing stops.
        let mut pushed = false;
        for _ in 0..4 {
            let left = deadline.saturating_duration_since(tokio::time::Instant::now());
            if left.is_zero() {
                break;
            }
            let report = self.sync_round(left).await?;
            pushed = report.finished && report.status.pending == 0;
            if self.read(|j| j.epoch())? > epoch && pushed {
                break;
            }
        }
        let journal = Arc::clone(&self.journal);
        let (moved, vouched, start) = blocking(move || {
            let j = lock(&journal)?;
            Ok((
                j.epoch()? > epoch,
                j.identity_in_force(partner)? == Some(identity),
                j.epoch_start()?,
            ))
        })
        .await?;
        let (true, true, true, Some(start)) = (moved, vouched, pushed, start) else {
            return Err(Error::Invite(
                "the journal could not move to new secrets for the rejoin in time (your \
                 partner's old devices may be shut out already); check the connection, sync, \
                 and try again with a new invite"
                    .into(),
            ));
        };
        let keyring = self.keyring();
        // The secret and its epoch from one snapshot of the keyring: a move after the read
        // above would otherwise pair the newer secret with the older epoch's start.
        let start = match keyring.epoch {
            KeyringEpoch::Known(Some(known)) => known,
            KeyringEpoch::Known(None) | KeyringEpoch::Unknown => start,
        };
        Invite {
            relay_url: keyring.relay_url.clone(),
            couple: keyring.couple.clone(),
            kind: InviteKind::Rejoin { partner },
            relay_pin: keyring.relay_pin,
            epoch: Some(start),
        }
        .encode()
    }

    async fn rotate(
        &self,
        reason: Reason,
        remove: Vec<DeviceId>,
        budget: Duration,
    ) -> Result<RoundReport> {
        self.refuse_if_removed()?;
        let journal = Arc::clone(&self.journal);
        let written = blocking(move || {
            let mut journal = lock(&journal)?;
            journal.step(|j| j.rotate(reason, &remove))?;
            Ok(journal.take_written())
        })
        .await?;
        self.written(written);
        self.sync_round(budget).await
    }

    /// Starts live sync on the current tokio runtime (a WebSocket per space, each write pushed
    /// at once). Starting it again while it runs does nothing.
    pub fn start_live(&self) -> Result<()> {
        let mut live = self
            .live
            .lock()
            .map_err(|_| Error::Internal("live sync state is unusable".into()))?;
        self.live_wanted.store(true, Ordering::Release);
        if live.as_ref().is_none_or(LiveSync::is_finished) {
            *live = Some(self.client.start_live());
        }
        Ok(())
    }

    /// Starts live sync again if it is wanted, not running, and not stopped since `stops`
    /// (the stop counter when the caller began): checked and started under the lock
    /// [`Device::stop_live`] takes, so a stop made meanwhile is never undone.
    fn restart_live(&self, stops: u64) -> Result<()> {
        let mut live = self
            .live
            .lock()
            .map_err(|_| Error::Internal("live sync state is unusable".into()))?;
        if self.live_wanted.load(Ordering::Acquire)
            && *self.live_stopped.borrow() == stops
            && live.as_ref().is_none_or(LiveSync::is_finished)
        {
            *live = Some(self.client.start_live());
        }
        Ok(())
    }

    /// [`Device::start_live`], and a task (one per device, for its life) that follows a new
    /// epoch as soon as live sync brings its announcement: live sync alone stays in the epoch
    /// its sockets opened, so the task runs a sync round ([`Device::sync_round`], within
    /// `budget`), which moves the journal, tells the observer to store the keyring again,
    /// and opens live sync on the new spaces. The task holds the device weakly: it ends once
    /// the device is dropped or closed, or learns it was removed.
    pub fn start_live_following(self: &Arc<Self>, budget: Duration) -> Result<()> {
        self.start_live()?;
        if self.following.swap(true, Ordering::AcqRel) {
            return Ok(());
        }
        let device = Arc::downgrade(self);
        let news = self.client.epoch_news();
        let mut stopped = self.live_stopped.subscribe();
        tokio::spawn(async move {
            let mut pause = FOLLOW_PAUSE;
            loop {
                news.notified().await;
                let Some(device) = device.upgrade() else {
                    break;
                };
                if !device.live_wanted.load(Ordering::Acquire) {
                    continue;
                }
                stopped.mark_unchanged();
                let cut = async {
                    let _ = stopped.changed().await;
                };
                let outcome = device.sync_round_or(budget, cut).await;
                drop(device);
                match outcome {
                    Ok(report) if report.keyring_changed => {
                        pause = FOLLOW_PAUSE;
                        continue;
                    }
                    Ok(_) => {}
                    Err(Error::DeviceRemoved(_)) => break,
                    Err(e) => tracing::info!(error = %e, "a new epoch could not be followed yet"),
                }
                // Not moved (the relay out of reach, the history the epoch starts from still
                // on its way, or an announcement this device cannot follow): the next news
                // tries again after a pause that grows, so a journal that cannot move does
                // not run round after round.
                tokio::time::sleep(pause).await;
                pause = pause.saturating_mul(2).min(FOLLOW_PAUSE_MAX);
            }
        });
        Ok(())
    }

    /// Stops live sync and waits for its sockets to close. A round the epoch-following task
    /// runs is cut too.
    pub async fn stop_live(&self) {
        let live = {
            let mut live = self.live.lock().unwrap_or_else(PoisonError::into_inner);
            self.live_wanted.store(false, Ordering::Release);
            self.live_stopped.send_modify(|n| *n = n.wrapping_add(1));
            live.take()
        };
        if let Some(live) = live {
            live.stop().await;
        }
    }

    async fn stop_live_inner(&self) {
        let live = self.live.lock().ok().and_then(|mut l| l.take());
        if let Some(live) = live {
            live.stop().await;
        }
    }

    /// Closes the journal: stops live sync, waits for storage work still in flight (a sync
    /// round that was cancelled finishes its current step first) and releases the file lock,
    /// so the journal can be opened again at once, here or by another process.
    pub async fn close(self) -> Result<()> {
        self.stop_live().await;
        // A task following epochs for live sync wakes, finds the device gone, and ends.
        self.client.epoch_news().notify_one();
        let journal = Arc::clone(&self.journal);
        let shown = self.path.display().to_string();
        drop(self);
        blocking(move || {
            // Work in flight holds its own reference to the journal; it ends within one engine
            // step. A bound keeps a stuck step from hanging the caller.
            let until = std::time::Instant::now() + Duration::from_secs(30);
            while Arc::strong_count(&journal) > 1 {
                if std::time::Instant::now() >= until {
                    return Err(Error::Locked(shown));
                }
                std::thread::sleep(Duration::from_millis(2));
            }
            drop(journal);
            Ok(())
        })
        .await
    }

    /// Whether live sync is running (false once its task has ended, however it ended).
    pub fn is_live(&self) -> bool {
        self.live
            .lock()
            .map(|l| l.as_ref().is_some_and(|l| !l.is_finished()))
            .unwrap_or(false)
    }
}

impl Drop for Device {
    /// The task following epochs for live sync waits for news: woken, it finds the device
    /// gone and ends, also when the app dropped the device without closing it.
    fn drop(&mut self) {
        self.client.epoch_news().notify_one();
    }
}

/// Removes a journal at `path` whose making a crash cut off: it holds nothing yet, and the
/// make that follows replaces it ([`Error::Unfinished`]).
fn clear_unfinished(path: &Path) -> Result<()> {
    if Journal::remove_unfinished(path)? {
        tracing::warn!("removed a journal whose making was cut off");
    }
    Ok(())
}

/// First changes of later epochs a restore tries at most: an honest relay holds one; more
/// were pushed by someone with the couple's secret.
const MAX_EPOCH_CANDIDATES: usize = 3;

/// Where [`Device::restore`] downloads before it knows whose journal this is.
fn staging_path(path: &Path) -> PathBuf {
    let mut name = path.file_name().map(ToOwned::to_owned).unwrap_or_default();
    name.push(".restoring");
    path.with_file_name(name)
}

/// Removes a database and the files SQLite and the store keep beside it.
pub fn remove_database(path: &Path) -> Result<()> {
    mend_core::store::Store::remove_files(path, &["", "-wal", "-shm", ".lock"])
}

/// Pulls both spaces into a staging journal and returns whose they are and the epochs the
/// couple's document says it may be in ([`Journal::epoch_candidates`]). The staging journal
/// stands in for an unknown partner and checks nothing; it only pulls (it has written
/// nothing, and snapshots are left to real devices). What it learns only decides what the
/// checked restore tries.
///
/// With a keyring that names its epoch only the personal space is downloaded (whose owner it
/// is), and no candidates are worked out.
async fn download(
    staging: &Path,
    keyring: &Keyring,
    budget: Duration,
    options: OpenOptions,
    relay: &RelayOptions,
) -> Result<(PartnerId, Vec<(u32, [u8; 32])>)> {
    let known = matches!(keyring.epoch, KeyringEpoch::Known(_));
    let source = JoinSource {
        couple: Vec::new(),
        personal: Some(Vec::new()),
        partner: Some(PartnerId::generate()),
    };
    let at = staging.to_owned();
    let journal = blocking(move || Journal::join_with(&at, &source, "", options)).await?;
    let journal = Arc::new(Mutex::new(journal));
    let links = keyring
        .links()
        .into_iter()
        .filter(|l| !known || l.space == Space::Personal)
        .collect();
    let client = SyncClient::new(Arc::clone(&journal), &keyring.relay_url, relay, links, None)?;
    client.set_snapshot_every(u64::MAX);
    let status = client.sync_now(budget).await?;
    drop(client);
    if status.syncing || !status.online {
        return Err(Error::Unreachable);
    }
    blocking(move || {
        let journal = lock(&journal)?;
        let owners: Vec<Partner> = match journal.store().space_view(Space::Personal)? {
            Some(view) => serde_json::from_str(&view.partners).map_err(|_| {
                Error::Corrupt("the personal space's partners cannot be read".into())
            })?,
            None => Vec::new(),
        };
        let [owner] = owners.as_slice() else {
            return Err(Error::Invalid(format!(
                "the relay holds no journal for this keyring ({} owners in its personal space)",
                owners.len()
            )));
        };
        let candidates = if known {
            Vec::new()
        } else {
            journal.epoch_candidates()?
        };
        Ok((owner.id, candidates))
    })
    .await
}

/// What a restore attempt needs before it keeps its journal.
#[derive(Clone, Copy)]
enum Vouching {
    /// Nothing: the keyring named the epoch.
    Named,
    /// This partner's own devices built on the epoch.
    Required,
    /// Nothing, but without such work the epoch is not written into the keyring (the only
    /// one the relay offered to a keyring that named none).
    Noted,
}

/// What claiming the next epoch at the relay found.
enum Claim {
    /// No announcement to offer.
    Nothing,
    /// The relay did not answer: a move may wait that this device could not follow yet.
    Unanswered,
    /// The announcement the relay keeps.
    Kept([u8; 32]),
}

/// What following the couple's epochs did.
enum Followed {
    Stay,
    /// When, whether as a rejoin, when a device of this partner had cancelled it, and, if it
    /// came before this device had been shown the ask for half the wait, that half.
    Removed(i64, bool, Option<i64>, Option<Duration>),
    /// With the epoch moved to, for the keyring.
    Moved(EpochSecrets, KeyringEpoch),
}

/// A keyring the app did not store again after the journal moved to a new epoch (the app was
/// killed in between) takes the new epoch's secrets from the box the journal kept.
fn catch_up_keyring(journal: &Journal, keyring: &mut Keyring) -> Result<()> {
    let Some(key) = keyring.device_key.clone() else {
        return Ok(());
    };
    if journal.epoch()? == 0 {
        return Ok(());
    }
    // The box the journal moved with decides (not the space id the journal names, which a
    // crash in the middle of a move could leave behind).
    if let Some(secrets) = journal.epoch_secrets(&key)?
        && secrets.couple.derive_space_id() != keyring.couple.derive_space_id()
    {
        keyring.couple = secrets.couple;
        if let Some(personal) = secrets.personal {
            keyring.personal = personal;
        }
    }
    Ok(())
}

/// What [`Device::erase`] did beside deleting both spaces at the relay.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct EraseReport {
    /// The erase marker reached the relay before the spaces were deleted: devices that synced
    /// in between saw it. Devices that sync later learn it from the tombstones all the same.
    pub marker_pushed: bool,
    /// Both spaces are deleted at the relay. False: the erase is recorded here (every write
    /// is refused from now on) but the relay did not delete them yet; keep the journal's files
    /// and call [`Device::erase`] again (any sync round finishes it too).
    pub finished: bool,
}

/// Runs `work` until `deadline` or `stop`, whichever comes first; `None` if cut.
async fn within<T>(
    deadline: tokio::time::Instant,
    stop: std::pin::Pin<&mut impl Future<Output = ()>>,
    work: impl Future<Output = T>,
) -> Option<T> {
    tokio::select! {
        done = tokio::time::timeout_at(deadline, work) => done.ok(),
        () = stop => None,
    }
}
