//! A relay the device refuses shows in the status an app subscribes to, with its reason, not
//! as "offline"; and `sync_now` says the same at once.

use std::{sync::Arc, sync::Mutex, time::Duration};

use anyhow::{Context, Result, ensure};
use mend_e2e::Relay;
use mend_ffi_api::{
    Journal, JournalOptions, ListenerError, MendError, SyncStatus, SyncStatusListener,
};

#[derive(Default)]
struct Seen(Mutex<Vec<SyncStatus>>);

impl SyncStatusListener for Seen {
    fn on_status(&self, status: SyncStatus) -> Result<(), ListenerError> {
        if let Ok(mut seen) = self.0.lock() {
            seen.push(status);
        }
        Ok(())
    }

    fn on_keyring_changed(&self) -> Result<(), ListenerError> {
        Ok(())
    }
}

#[test]
fn a_relay_pinned_to_another_key_shows_as_untrusted_in_the_status() -> Result<()> {
    mend_e2e::runtime()?.block_on(async {
        let dir = tempfile::tempdir()?;
        let relay = Relay::start(dir.path()).await?;
        // The pin of a key the relay does not hold: a renewal gone wrong, or someone in between.
        let other = mend_testkit::self_signed()?.pin();
        let options = JournalOptions {
            relay_pin: Some(other),
            ..JournalOptions::default()
        };
        let path = dir.path().join("j.db").display().to_string();
        let journal = Journal::create(path, "Alex".into(), relay.url(), options).await?;
        let seen = Arc::new(Seen::default());
        let _subscription = journal.subscribe_status(seen.clone());

        let refused = journal.sync_now(20_000).await;
        ensure!(
            matches!(refused, Err(MendError::UntrustedRelay(_))),
            "sync_now against a relay with another key: {refused:?}"
        );

        journal.start_live()?;
        let mut status = None;
        for _ in 0..800 {
            status = seen.0.lock().ok().and_then(|s| {
                s.iter()
                    .rev()
                    .find(|s| s.untrusted_relay.is_some())
                    .cloned()
            });
            if status.is_some() {
                break;
            }
            tokio::time::sleep(Duration::from_millis(25)).await;
        }
        journal.stop_live().await?;
        let status = status.context("no status named the refusal")?;
        let why = status.untrusted_relay.clone().unwrap_or_default();
        ensure!(
            why.contains("pin"),
            "the reason does not name the pin: {why}"
        );
        ensure!(!status.online, "{status:?}");
        journal.shutdown().await?;
        Ok(())
    })
}
