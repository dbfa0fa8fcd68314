//! `sync_now` and live sync against relays that misbehave on purpose, on 127.0.0.1: one that
//! accepts and never answers, one that refuses every key. (The stories in bindings/kotlin and
//! bindings/python run a real relay, and a delaying proxy in front of it.)

use std::{sync::Arc, time::Duration};

use anyhow::{Result, bail, ensure};
use mend_ffi_api::{Journal, JournalOptions};
use tokio::{
    io::{AsyncReadExt, AsyncWriteExt},
    net::{TcpListener, TcpStream},
};

/// Far longer than any step here takes, far shorter than the rounds' own deadlines.
const GENEROUS: Duration = Duration::from_secs(20);

/// An executor that is not the bindings' runtime, as Kotlin's or Swift's is.
fn executor() -> Result<tokio::runtime::Runtime> {
    Ok(tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?)
}

async fn journal(dir: &tempfile::TempDir, relay: &TcpListener) -> Result<Arc<Journal>> {
    let path = dir.path().join("j.db").display().to_string();
    let url = format!("http://{}", relay.local_addr()?);
    Ok(Journal::create(path, "Alex".into(), url, JournalOptions::default()).await?)
}

/// Reads what the device sends until it closes the connection.
async fn until_closed(mut conn: TcpStream) {
    let mut buf = vec![0u8; 16 * 1024];
    while let Ok(n) = conn.read(&mut buf).await {
        if n == 0 {
            break;
        }
    }
}

#[test]
fn a_cancelled_round_closes_its_request_and_releases_the_journal() -> Result<()> {
    executor()?.block_on(async {
        let dir = tempfile::tempdir()?;
        let silent = TcpListener::bind("127.0.0.1:0").await?;
        let journal = journal(&dir, &silent).await?;
        // A deadline far past everything below: only cancelling can end this round early.
        let mut round = Box::pin(journal.sync_now(600_000));
        let conn = tokio::select! {
            accepted = silent.accept() => accepted?.0,
            done = &mut round => bail!("a round against a silent relay ended: {done:?}"),
        };
        // The app's coroutine or task is cancelled: uniffi drops the future.
        drop(round);
        // The request's connection is dropped with the round (before: it stayed open until
        // the request's own timeout, and the round went on retrying).
        tokio::time::timeout(GENEROUS, until_closed(conn)).await?;
        // Nothing holds the journal any more: shutdown does not wait for a detached round
        // (before: `locked`, the round still held it).
        journal.shutdown().await?;
        Ok(())
    })
}

#[test]
fn cancel_sync_stops_a_round_and_it_says_what_it_did() -> Result<()> {
    executor()?.block_on(async {
        let dir = tempfile::tempdir()?;
        let silent = TcpListener::bind("127.0.0.1:0").await?;
        let journal = journal(&dir, &silent).await?;
        let mut round = Box::pin(journal.sync_now(600_000));
        let conn = tokio::select! {
            accepted = silent.accept() => accepted?.0,
            done = &mut round => bail!("a round against a silent relay ended: {done:?}"),
        };
        // What Swift's `onCancel` or a BGTask's expiration handler calls.
        journal.cancel_sync();
        let report = tokio::time::timeout(GENEROUS, round).await??;
        ensure!(!report.finished && report.status.syncing, "{report:?}");
        tokio::time::timeout(GENEROUS, until_closed(conn)).await?;
        journal.shutdown().await?;
        Ok(())
    })
}

/// The app closes the journal (before suspension, or to let an extension in) while a
/// background round waits on a relay that never answers: the round stops, the file is free.
#[test]
fn shutdown_stops_a_round_in_flight_and_releases_the_journal() -> Result<()> {
    executor()?.block_on(async {
        let dir = tempfile::tempdir()?;
        let silent = TcpListener::bind("127.0.0.1:0").await?;
        let journal = journal(&dir, &silent).await?;
        let secret = journal.keyring_secret()?;
        let round = tokio::spawn({
            let journal = Arc::clone(&journal);
            async move { journal.sync_now(600_000).await }
        });
        let conn = tokio::time::timeout(GENEROUS, silent.accept()).await??.0;
        // Before: shutdown waited 30 s for the round, then failed with `locked` while the
        // round still held the file.
        tokio::time::timeout(Duration::from_secs(5), journal.shutdown()).await??;
        let report = tokio::time::timeout(GENEROUS, round).await???;
        ensure!(!report.finished, "{report:?}");
        tokio::time::timeout(GENEROUS, until_closed(conn)).await?;
        let path = dir.path().join("j.db").display().to_string();
        let again = Journal::open(path, secret, JournalOptions::default()).await?;
        again.shutdown().await?;
        Ok(())
    })
}

/// A short background round while a long one waits on a silent relay: it waits for its turn
/// no longer than its own deadline (before: until the long one ended).
#[test]
fn a_round_waiting_for_another_still_ends_by_its_deadline() -> Result<()> {
    executor()?.block_on(async {
        let dir = tempfile::tempdir()?;
        let silent = TcpListener::bind("127.0.0.1:0").await?;
        let journal = journal(&dir, &silent).await?;
        let long = tokio::spawn({
            let journal = Arc::clone(&journal);
            async move { journal.sync_now(600_000).await }
        });
        let conn = tokio::time::timeout(GENEROUS, silent.accept()).await??.0;
        let report = tokio::time::timeout(GENEROUS, journal.sync_now(200)).await??;
        ensure!(!report.finished && report.status.syncing, "{report:?}");
        ensure!(report.pushed == 0 && report.pulled == 0, "{report:?}");
        journal.cancel_sync();
        tokio::time::timeout(GENEROUS, long).await???;
        drop(conn);
        journal.shutdown().await?;
        Ok(())
    })
}

#[test]
fn the_deadline_cuts_a_request_the_relay_never_answers() -> Result<()> {
    executor()?.block_on(async {
        let dir = tempfile::tempdir()?;
        let silent = TcpListener::bind("127.0.0.1:0").await?;
        let journal = journal(&dir, &silent).await?;
        let held = tokio::spawn(async move {
            let mut open = Vec::new();
            while let Ok((conn, _)) = silent.accept().await {
                open.push(conn);
            }
        });
        // The request waits for an answer that never comes; the relay's own timeout (10 s and
        // more) is not what ends the round, the deadline is.
        let report = tokio::time::timeout(Duration::from_secs(8), journal.sync_now(200)).await??;
        ensure!(!report.finished && report.status.syncing, "{report:?}");
        ensure!(report.pushed == 0 && report.pulled == 0, "{report:?}");
        held.abort();
        journal.shutdown().await?;
        Ok(())
    })
}

/// Answers every request (HTTP or a WebSocket upgrade) with 401: the relay does not know the
/// key.
async fn refuse_everything(relay: TcpListener) {
    while let Ok((mut conn, _)) = relay.accept().await {
        tokio::spawn(async move {
            let mut buf = vec![0u8; 16 * 1024];
            loop {
                match conn.read(&mut buf).await {
                    Ok(0) | Err(_) => return,
                    Ok(_) => {
                        let answer = b"HTTP/1.1 401 Unauthorized\r\ncontent-length: 0\r\n\r\n";
                        if conn.write_all(answer).await.is_err() {
                            return;
                        }
                    }
                }
            }
        });
    }
}

#[test]
fn live_sync_the_relay_refuses_ends_and_is_live_says_so() -> Result<()> {
    executor()?.block_on(async {
        let dir = tempfile::tempdir()?;
        let relay = TcpListener::bind("127.0.0.1:0").await?;
        let journal = journal(&dir, &relay).await?;
        let server = tokio::spawn(refuse_everything(relay));
        journal.start_live()?;
        // Before: the task stayed up, waiting forever, and `is_live` said true.
        let ended = tokio::time::timeout(GENEROUS, async {
            while journal.is_live() {
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
        })
        .await;
        ensure!(
            ended.is_ok(),
            "live sync still says it runs after every space was refused"
        );
        server.abort();
        journal.shutdown().await?;
        Ok(())
    })
}

/// A `shutdown` whose caller gives up waiting (a cancelled coroutine or Swift task, whose
/// future is dropped) goes on closing, and a `shutdown` after it answers only when it has
/// closed: before, the second found the journal already taken and answered at once, with the
/// file still held.
#[test]
fn a_shutdown_after_a_cancelled_one_answers_when_the_file_is_free() -> Result<()> {
    executor()?.block_on(second_shutdown(true))
}

/// Two `shutdown`s at once (the app's and a lifecycle hook's): the second answers only when
/// the first has closed, so the file is free whenever either says so (before: the second
/// answered at once, while the first still waited for a call in flight).
#[test]
fn a_second_shutdown_answers_when_the_first_has_closed() -> Result<()> {
    executor()?.block_on(second_shutdown(false))
}

/// A `shutdown` while a call in flight holds the journal, its caller giving up
/// (`cancel_first`) or waiting, then a second: when the second answers, the file is free.
async fn second_shutdown(cancel_first: bool) -> Result<()> {
    let dir = tempfile::tempdir()?;
    let silent = TcpListener::bind("127.0.0.1:0").await?;
    let journal = journal(&dir, &silent).await?;
    let secret = journal.keyring_secret()?;
    // A call in flight that holds the journal until the relay answers or its deadline.
    let listing = tokio::spawn({
        let journal = Arc::clone(&journal);
        async move { journal.devices(3_000).await }
    });
    let conn = tokio::time::timeout(GENEROUS, silent.accept()).await??.0;
    let first = tokio::spawn({
        let journal = Arc::clone(&journal);
        async move { journal.shutdown().await }
    });
    tokio::time::sleep(Duration::from_millis(100)).await;
    let first = if cancel_first {
        first.abort();
        let _ = first.await;
        None
    } else {
        Some(first)
    };
    tokio::time::timeout(GENEROUS, journal.shutdown()).await??;
    let path = dir.path().join("j.db").display().to_string();
    let again = Journal::open(path, secret, JournalOptions::default()).await;
    ensure!(again.is_ok(), "the file was still held: {:?}", again.err());
    if let Some(first) = first {
        tokio::time::timeout(GENEROUS, first).await???;
    }
    let _ = tokio::time::timeout(GENEROUS, listing).await?;
    drop(conn);
    if let Ok(again) = again {
        again.shutdown().await?;
    }
    Ok(())
}

/// In extension mode, while another process holds the journal (longer than a step waits), a
/// `sync_now` still returns at its deadline, with what it did: nothing, and `finished` false.
/// Before, the steps before and after the round were not under the deadline: the call waited
/// for the journal and failed `locked` 5 s later, too late for a background window.
#[test]
fn the_deadline_holds_while_another_process_holds_the_journal() -> Result<()> {
    executor()?.block_on(async {
        let dir = tempfile::tempdir()?;
        let silent = TcpListener::bind("127.0.0.1:0").await?;
        let path = dir.path().join("j.db");
        let url = format!("http://{}", silent.local_addr()?);
        let options = JournalOptions {
            extension_mode: true,
            ..JournalOptions::default()
        };
        let journal =
            Journal::create(path.display().to_string(), "Alex".into(), url, options).await?;
        let mut lock_name = path.into_os_string();
        lock_name.push(".lock");
        let held = std::fs::OpenOptions::new().write(true).open(&lock_name)?;
        held.lock()?;
        let began = std::time::Instant::now();
        let report = tokio::time::timeout(GENEROUS, journal.sync_now(300)).await?;
        let took = began.elapsed();
        held.unlock()?;
        let report = report?;
        ensure!(!report.finished, "{report:?}");
        ensure!(
            took < Duration::from_secs(3),
            "a 300 ms round took {took:?} while the journal was held"
        );
        journal.shutdown().await?;
        Ok(())
    })
}
