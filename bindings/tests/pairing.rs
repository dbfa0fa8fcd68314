//! An invitation the app cancels while it waits for a joiner: the wait ends at once, and so does
//! the cancel, instead of both waiting out the wait's own timeout.

use std::{sync::Arc, time::Duration};

use anyhow::{Result, ensure};
use mend_e2e::Relay;
use mend_ffi_api::{Journal, JournalOptions, MendError};

#[test]
fn cancelling_an_invitation_ends_a_wait_for_the_joiner_at_once() -> Result<()> {
    mend_e2e::runtime()?.block_on(async {
        let dir = tempfile::tempdir()?;
        let relay = Relay::start_plain(dir.path()).await?;
        let path = dir.path().join("j.db").display().to_string();
        let journal =
            Journal::create(path, "Alex".into(), relay.url(), JournalOptions::default()).await?;
        journal.sync_now(20_000).await?;
        let invitation = journal.invite(false, true).await?;
        // Two waits at once (one holds the invitation, the other waits for it).
        let waits: Vec<_> = (0..2)
            .map(|_| {
                let invitation = Arc::clone(&invitation);
                tokio::spawn(async move { invitation.wait_for_joiner(600_000).await })
            })
            .collect();
        // Let the wait begin (it holds the invitation while it waits).
        tokio::time::sleep(Duration::from_millis(300)).await;
        // Both end long before the ten minutes the wait would otherwise take.
        let limit = Duration::from_secs(60);
        tokio::time::timeout(limit, invitation.cancel()).await??;
        for waiting in waits {
            let waited = tokio::time::timeout(limit, waiting).await??;
            ensure!(
                matches!(&waited, Err(MendError::Invalid(m)) if m.contains("ended")),
                "{waited:?}"
            );
        }
        journal.shutdown().await?;
        relay.stop().await
    })
}
