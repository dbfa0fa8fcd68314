//! When live sync moves a journal to new secrets (the other partner forgot, removed a device
//! or let a rejoin in), the app hears it on its status listener and stores the keyring again:
//! the secret it kept before cannot restore the new spaces.

use std::sync::{
    Arc,
    atomic::{AtomicUsize, Ordering},
};

use anyhow::{Context, Result, ensure};
use mend_e2e::{Relay, eventually};
use mend_ffi_api::{
    Joining, Journal, JournalOptions, ListenerError, SyncStatus, SyncStatusListener,
};

#[derive(Default)]
struct Heard {
    statuses: AtomicUsize,
    keyrings: AtomicUsize,
}

impl SyncStatusListener for Heard {
    fn on_status(&self, _status: SyncStatus) -> Result<(), ListenerError> {
        self.statuses.fetch_add(1, Ordering::SeqCst);
        Ok(())
    }

    fn on_keyring_changed(&self) -> Result<(), ListenerError> {
        self.keyrings.fetch_add(1, Ordering::SeqCst);
        Ok(())
    }
}

#[test]
fn a_status_listener_hears_when_live_sync_moves_to_new_secrets() -> Result<()> {
    mend_e2e::runtime()?.block_on(async {
        let dir = tempfile::tempdir()?;
        let relay = Relay::start_plain(dir.path()).await?;
        let path = |name: &str| dir.path().join(name).display().to_string();
        let alex = Journal::create(
            path("alex.db"),
            "Alex".into(),
            relay.url(),
            JournalOptions::default(),
        )
        .await?;
        alex.sync_now(20_000).await?;

        let invitation = alex.invite(false, false).await?;
        let waiting = {
            let invitation = Arc::clone(&invitation);
            tokio::spawn(async move { invitation.wait_for_joiner(30_000).await })
        };
        let joining = Joining::start(
            invitation.code(),
            "Blake".into(),
            None,
            JournalOptions::default(),
        )
        .await?;
        waiting.await??.context("no joiner")?;
        let letting_in = {
            let invitation = Arc::clone(&invitation);
            tokio::spawn(async move { invitation.accept().await })
        };
        let blake = joining.finish(path("blake.db")).await?;
        letting_in.await??;
        blake.sync_now(20_000).await?;
        alex.sync_now(20_000).await?;

        let heard = Arc::new(Heard::default());
        let _subscription = blake.subscribe_status(heard.clone());
        blake.start_live()?;
        eventually("Blake's live sync up", || Ok(blake.is_live())).await?;
        let kept = blake.keyring_secret()?;

        // Alex starts the journal over; Blake's phone, live only, follows on its own.
        alex.forget(30_000).await?;
        eventually("Blake's listener told of the new secrets", || {
            Ok(heard.keyrings.load(Ordering::SeqCst) > 0)
        })
        .await?;
        ensure!(
            blake.keyring_secret()? != kept,
            "the keyring the app is told to store again is the new one"
        );
        ensure!(
            heard.statuses.load(Ordering::SeqCst) > 0,
            "statuses still flow"
        );

        blake.shutdown().await?;
        alex.shutdown().await?;
        relay.stop().await
    })
}
