//! [`Invitation`]: the inviting side of a pairing (docs/mobile.md, "Pairing").
//!
//! `Journal::invite` opens one; the app shows `code()` (a QR code, or the short code to read
//! out), waits with `wait_for_joiner`, asks its user (showing the joiner's name and the
//! confirmation words), then calls `accept` or `decline`. The joining side is [`Joining`]:
//! `Joining.start` with the code, show who invites and the same words, then `finish`.

use std::sync::{Arc, Weak};

use mend_core::crypto::PairingKind;
use tokio::sync::{Mutex, watch};
use zeroize::Zeroizing;

use crate::{
    convert::PartnerId,
    error::{MendError, Result},
    journal::{Journal, JournalOptions, millis},
    runtime::run,
};

/// Who asked to join, for the user to accept or decline.
#[derive(Clone, Debug, PartialEq, Eq, uniffi::Record)]
pub struct Joiner {
    /// The name the joining partner gave; empty for another device of this partner.
    pub name: String,
    /// Whether it is another device of this partner rather than the other partner.
    pub for_device: bool,
    /// Whether it is the other partner, who lost every device, rejoining on a new one.
    pub rejoin: bool,
    /// Three words the joiner's screen shows too: ask the user to compare them (in the room,
    /// or on the phone) before accepting.
    pub confirmation: String,
}

/// An open pairing on the inviting device. It works once, for ten minutes; until `accept`,
/// nothing of the journal leaves this device.
#[derive(uniffi::Object)]
pub struct Invitation {
    inner: Arc<Mutex<Option<mend_client::Invitation>>>,
    /// The inviting device: accepting hands over the secrets of the epoch the journal is in
    /// then (and a rejoin moves the journal first). Weak, so an invitation the app keeps never
    /// holds the journal open.
    device: Weak<mend_client::Device>,
    /// Set when the app cancels or declines: ends every `wait_for_joiner` in progress (one
    /// holds the invitation, others wait for it), so those never wait out a timeout.
    stop: watch::Sender<bool>,
    code: Zeroizing<String>,
    short: bool,
    expires_at: u64,
}

impl std::fmt::Debug for Invitation {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // The code is a secret until the pairing ends.
        f.debug_struct("Invitation")
            .field("short", &self.short)
            .finish_non_exhaustive()
    }
}

impl Invitation {
    pub(crate) fn new(
        invitation: mend_client::Invitation,
        device: Weak<mend_client::Device>,
    ) -> Self {
        Self {
            device,
            stop: watch::Sender::new(false),
            code: Zeroizing::new(invitation.code().to_owned()),
            short: invitation.is_short(),
            expires_at: invitation.expires_at(),
            inner: Arc::new(Mutex::new(Some(invitation))),
        }
    }

    /// Takes the invitation for a last call; `invalid` once accepted, declined or cancelled.
    async fn take(
        inner: &Mutex<Option<mend_client::Invitation>>,
    ) -> Result<mend_client::Invitation> {
        inner
            .lock()
            .await
            .take()
            .ok_or_else(|| MendError::Invalid("this pairing has ended".into()))
    }
}

#[uniffi::export]
impl Invitation {
    /// What to show: an invite (`MEND4-…`, for a QR code or text) or a short code to read out
    /// (`42-olive-harbor`). Secret until the pairing ends; never log it. Memory only.
    pub fn code(&self) -> String {
        // The app's copy crosses the boundary as a plain string; the one kept here is wiped.
        self.code.as_str().to_owned()
    }

    /// Whether `code()` is a short code (the joiner then also needs the relay's address).
    /// Memory only.
    pub fn is_short_code(&self) -> bool {
        self.short
    }

    /// When the code stops working, in milliseconds since the epoch. Memory only.
    pub fn expires_at_ms(&self) -> i64 {
        i64::try_from(self.expires_at.saturating_mul(1000)).unwrap_or(i64::MAX)
    }

    /// Waits up to `timeout_ms` for someone to join: null when nobody did yet (call again),
    /// or who it is. Fails with `pairing` when the code ran out or someone tried a wrong
    /// short code (the code then no longer works: open a new invitation).
    pub async fn wait_for_joiner(&self, timeout_ms: i32) -> Result<Option<Joiner>> {
        let inner = Arc::clone(&self.inner);
        let mut stop = self.stop.subscribe();
        let budget = millis(timeout_ms);
        run(async move {
            let ended = || MendError::Invalid("this pairing has ended".into());
            let mut guard = tokio::select! {
                guard = inner.lock() => guard,
                _ = stop.wait_for(|s| *s) => return Err(ended()),
            };
            let invitation = guard.as_mut().ok_or_else(ended)?;
            if *stop.borrow() {
                return Err(ended());
            }
            let joiner = tokio::select! {
                joiner = invitation.wait_for_joiner(budget) => joiner?,
                _ = stop.wait_for(|s| *s) => return Err(ended()),
            };
            Ok(joiner.map(|j| Joiner {
                name: j.name,
                for_device: j.kind == PairingKind::Device,
                rejoin: j.kind == PairingKind::Rejoin,
                confirmation: j.confirmation,
            }))
        })
        .await
    }

    /// Lets the joiner in: the journal's secrets go to it, sealed for it alone. Returns once
    /// it has taken them (or after 30 s). For a rejoin, the journal first moves to new
    /// secrets without the other partner's old devices (the status listeners' `on_keyring_changed`
    /// then asks the app to store the keyring again).
    pub async fn accept(&self) -> Result<()> {
        let inner = Arc::clone(&self.inner);
        let device = self.device.clone();
        run(async move {
            if !inner.lock().await.as_ref().is_some_and(|i| i.has_joiner()) {
                return Err(MendError::Invalid(
                    "nobody has asked to join yet: wait for the joiner first".into(),
                ));
            }
            let invitation = Self::take(&inner).await?;
            let Some(device) = device.upgrade() else {
                invitation.cancel().await;
                return Err(MendError::Closed("the journal was closed".into()));
            };
            Ok(device.welcome(invitation, REJOIN_WAIT).await?)
        })
        .await
    }

    /// Refuses the joiner: nothing is shared, and the joining app is told.
    pub async fn decline(&self) -> Result<()> {
        let inner = Arc::clone(&self.inner);
        self.stop.send_replace(true);
        run(async move { Ok(Self::take(&inner).await?.decline().await?) }).await
    }

    /// Stops the pairing: the code no longer works. A `wait_for_joiner` in progress ends at
    /// once (with `invalid`).
    pub async fn cancel(&self) -> Result<()> {
        let inner = Arc::clone(&self.inner);
        self.stop.send_replace(true);
        run(async move {
            if let Some(invitation) = inner.lock().await.take() {
                invitation.cancel().await;
            }
            Ok(())
        })
        .await
    }
}

/// The joining side of a pairing: `start` with the code the inviting partner shows, show
/// `inviter()` and `confirmation()` (the inviting screen shows the same words), then `finish`
/// once they let this device in.
#[derive(uniffi::Object)]
pub struct Joining {
    inner: Arc<Mutex<Option<mend_client::Joining>>>,
    inviter: String,
    for_device: bool,
    rejoin: bool,
    confirmation: String,
    options: JournalOptions,
}

impl std::fmt::Debug for Joining {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Joining")
            .field("for_device", &self.for_device)
            .finish_non_exhaustive()
    }
}

/// How long accepting a rejoin waits for the journal to move to new secrets.
const REJOIN_WAIT: std::time::Duration = std::time::Duration::from_secs(90);

/// How long a join waits for the inviting device, from `start` to the end of `finish`.
const JOIN_WAIT: std::time::Duration = std::time::Duration::from_secs(180);

#[uniffi::export]
impl Joining {
    /// Starts joining with `code`: an invite (`MEND4-…`, scanned from a QR code or pasted) or
    /// a short code read out on a call (`42-olive-harbor`; `relay_url` then says which relay,
    /// an invite names its own). `name` is the joining partner's name (ignored when joining
    /// as another device of the inviting partner). Fails with `pairing` when the code was used,
    /// ran out or was read wrong (it then no longer works, on both sides).
    #[uniffi::constructor]
    pub async fn start(
        code: String,
        name: String,
        relay_url: Option<String>,
        options: JournalOptions,
    ) -> Result<Arc<Self>> {
        let code = Zeroizing::new(code);
        let relay = options.relay()?;
        let joining = run(async move {
            Ok(mend_client::Device::start_join(
                &code,
                &name,
                relay_url.as_deref(),
                &relay,
                JOIN_WAIT,
            )
            .await?)
        })
        .await?;
        Ok(Arc::new(Self {
            inviter: joining.inviter().to_owned(),
            for_device: joining.kind() == PairingKind::Device,
            rejoin: joining.kind() == PairingKind::Rejoin,
            confirmation: joining.confirmation().to_owned(),
            inner: Arc::new(Mutex::new(Some(joining))),
            options,
        }))
    }

    /// The inviting partner's name. Memory only.
    pub fn inviter(&self) -> String {
        self.inviter.clone()
    }

    /// Whether this joins as another device of the inviting partner. Memory only.
    pub fn for_device(&self) -> bool {
        self.for_device
    }

    /// Whether this rejoins, as the partner this person was, a journal all of whose devices
    /// of theirs were lost (their entries stay theirs; their personal space starts empty).
    /// Memory only.
    pub fn rejoin(&self) -> bool {
        self.rejoin
    }

    /// Three words the inviting screen shows too. Memory only.
    pub fn confirmation(&self) -> String {
        self.confirmation.clone()
    }

    /// Waits for the inviting partner to let this device in, then creates the journal at
    /// `path` (a file that must not exist yet). Fails with `pairing` when they decline. The
    /// journal fills on the first `sync_now`; store its `keyring_secret()`.
    pub async fn finish(&self, path: String) -> Result<Arc<Journal>> {
        let joining = self
            .inner
            .lock()
            .await
            .take()
            .ok_or_else(|| MendError::Invalid("this join has ended".into()))?;
        Journal::joined(joining, path, self.options.clone()).await
    }

    /// Gives up: the inviting device is told.
    pub async fn cancel(&self) -> Result<()> {
        let inner = Arc::clone(&self.inner);
        run(async move {
            if let Some(joining) = inner.lock().await.take() {
                joining.cancel().await;
            }
            Ok(())
        })
        .await
    }
}

/// An ask to let a new device in as a partner who lost every device.
#[derive(Clone, Debug, PartialEq, uniffi::Record)]
pub struct RejoinAsk {
    /// The partner whose devices the rejoin would replace.
    pub partner: PartnerId,
    /// The partner who asked.
    pub asked_by: PartnerId,
    /// When (unix ms, the asking device's clock).
    pub asked_at: i64,
    /// When a device of `partner` cancelled it (unix ms), if one did.
    pub cancelled_at: Option<i64>,
    /// For this partner's own ask: when this device first saw it at the relay (unix ms); the
    /// wait counts from then.
    pub reached_relay_at: Option<i64>,
    /// For an ask naming this partner: when this device was first shown it (unix ms).
    pub shown_at: Option<i64>,
}

impl From<mend_core::journal::RejoinAsk> for RejoinAsk {
    fn from(a: mend_core::journal::RejoinAsk) -> Self {
        Self {
            partner: a.partner.to_string().into(),
            asked_by: a.asked_by.to_string().into(),
            asked_at: a.at,
            cancelled_at: a.cancelled_at,
            reached_relay_at: a.sent_at,
            shown_at: a.shown_at,
        }
    }
}

/// The asks to rejoin a journal holds (`Journal.rejoinAsks`).
#[derive(Clone, Debug, PartialEq, uniffi::Record)]
pub struct RejoinAsks {
    /// This partner's ask to let a new device in as the other partner.
    pub mine: Option<RejoinAsk>,
    /// The other partner's ask to let a new device in as this partner.
    pub about_me: Option<RejoinAsk>,
    /// When `mine` may go ahead, by this device's wait (unix ms; null until it reached the
    /// relay).
    pub mine_ready_at: Option<i64>,
    /// Whether `mine` stood the wait uncancelled: `inviteToRejoin` can go ahead.
    pub ready: bool,
}

impl From<mend_client::RejoinAsks> for RejoinAsks {
    fn from(a: mend_client::RejoinAsks) -> Self {
        Self {
            mine: a.mine.map(Into::into),
            about_me: a.about_me.map(Into::into),
            mine_ready_at: a.mine.and_then(|m| m.ready_at(a.wait)),
            ready: a.ready,
        }
    }
}
