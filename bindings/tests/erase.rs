//! `Journal.erase` against a real relay on 127.0.0.1: the marker reaches the relay, the spaces
//! are deleted, and from then on every write throws `erased` and `erased()` says so.

use anyhow::{Result, ensure};
use mend_e2e::Relay;
use mend_ffi_api::{Journal, JournalOptions, MendError, RecordBody, Share};

#[test]
fn erase_pushes_the_marker_and_every_write_then_throws_erased() -> Result<()> {
    mend_e2e::runtime()?.block_on(async {
        let dir = tempfile::tempdir()?;
        let relay = Relay::start_plain(dir.path()).await?;
        let path = dir.path().join("j.db").display().to_string();
        let journal =
            Journal::create(path, "Alex".into(), relay.url(), JournalOptions::default()).await?;
        journal.sync_now(20_000).await?;
        ensure!(journal.erased().await?.is_none(), "erased before erasing");
        let report = journal.erase(20_000).await?;
        ensure!(report.marker_pushed, "the marker did not reach the relay");
        ensure!(report.finished, "the relay kept the spaces: {report:?}");
        let body = RecordBody::Share {
            value: Share {
                feeling: "after".into(),
                tough_question: false,
            },
        };
        let refused = journal.add(body, None).await;
        ensure!(
            matches!(&refused, Err(e @ MendError::Erased(_)) if e.code() == "erased"),
            "{refused:?}"
        );
        ensure!(journal.erased().await?.is_some(), "erased() says nothing");
        journal.shutdown().await?;
        relay.stop().await
    })
}

/// The relay (or the network) fails once the marker is written: the erase stands and says it
/// is not finished, so the app keeps the files; it never reads as "nothing was erased".
#[test]
fn an_erase_the_relay_did_not_finish_says_so_and_still_stands() -> Result<()> {
    mend_e2e::runtime()?.block_on(async {
        let dir = tempfile::tempdir()?;
        let relay = Relay::start_plain(dir.path()).await?;
        let proxy = mend_e2e::StallingProxy::dropping(relay.addr, b"DELETE ").await?;
        let path = dir.path().join("j.db").display().to_string();
        let journal =
            Journal::create(path, "Alex".into(), proxy.url(), JournalOptions::default()).await?;
        journal.sync_now(20_000).await?;
        let report = journal.erase(20_000).await;
        ensure!(
            matches!(&report, Ok(r) if r.marker_pushed && !r.finished),
            "{report:?}"
        );
        ensure!(journal.erased().await?.is_some(), "erased() says nothing");
        let refused = journal
            .add(
                RecordBody::Share {
                    value: Share {
                        feeling: "after".into(),
                        tough_question: false,
                    },
                },
                None,
            )
            .await;
        ensure!(matches!(refused, Err(MendError::Erased(_))), "{refused:?}");
        journal.shutdown().await?;
        relay.stop().await
    })
}
