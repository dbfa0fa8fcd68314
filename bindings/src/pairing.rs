//! [`Invitation`]: the inviting side of a pairing (docs/mobile.md, "Pairing").
//!
//! `Journal::invite` opens one; the app shows `code()` (a QR code, or the short code to read
//! out), waits with `wait_for_joiner`, asks its user, then calls `accept` or `decline`. The
//! joining side is `Journal::join`.

use std::sync::Arc;

use mend_core::crypto::PairingKind;
use tokio::sync::Mutex;

use crate::{
    error::{MendError, Result},
    journal::millis,
    runtime::run,
};

/// Who asked to join, for the user to accept or decline.
#[derive(Clone, Debug, PartialEq, Eq, uniffi::Record)]
pub struct Joiner {
    /// The name the joining partner gave; empty for another device of this partner.
    pub name: String,
    /// Whether it is another device of this partner rather than the other partner.
    pub for_device: bool,
}

/// An open pairing on the inviting device. It works once, for ten minutes; until `accept`,
/// nothing of the journal leaves this device.
#[derive(uniffi::Object)]
pub struct Invitation {
    inner: Arc<Mutex<Option<mend_client::Invitation>>>,
    code: String,
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
    pub(crate) fn new(invitation: mend_client::Invitation) -> Self {
        Self {
            code: invitation.code().to_owned(),
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
        self.code.clone()
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
        let budget = millis(timeout_ms);
        run(async move {
            let mut guard = inner.lock().await;
            let invitation = guard
                .as_mut()
                .ok_or_else(|| MendError::Invalid("this pairing has ended".into()))?;
            let joiner = invitation.wait_for_joiner(budget).await?;
            Ok(joiner.map(|j| Joiner {
                name: j.name,
                for_device: j.kind == PairingKind::Device,
            }))
        })
        .await
    }

    /// Lets the joiner in: the journal's secrets go to it, sealed for it alone. Returns once
    /// it has taken them (or after 30 s).
    pub async fn accept(&self) -> Result<()> {
        let inner = Arc::clone(&self.inner);
        run(async move { Ok(Self::take(&inner).await?.accept().await?) }).await
    }

    /// Refuses the joiner: nothing is shared, and the joining app is told.
    pub async fn decline(&self) -> Result<()> {
        let inner = Arc::clone(&self.inner);
        run(async move { Ok(Self::take(&inner).await?.decline().await?) }).await
    }

    /// Stops the pairing: the code no longer works.
    pub async fn cancel(&self) -> Result<()> {
        let inner = Arc::clone(&self.inner);
        run(async move {
            if let Some(invitation) = inner.lock().await.take() {
                invitation.cancel().await;
            }
            Ok(())
        })
        .await
    }
}
