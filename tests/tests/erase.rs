//! A separation end to end over a real relay on 127.0.0.1 (TLS): Alex, with two devices, erases
//! the shared journal from one. Alex's other device, which has the erase marker, refuses every
//! write from its next sync on, for good (after a reopen too); Blake is told in plain words,
//! with Alex's name, keeps reading, can no longer share, and keeps syncing Blake's personal
//! space. The relay keeps only tombstones, and nothing brings the spaces back. A device the
//! marker did not reach takes the relay's tombstone for a space gone, not for an erase.

use anyhow::{Result, ensure};
use mend_core::{
    Body, Error, Visibility,
    crypto::PairingKind,
    model::{ProcessingNote, Share},
    sync::{ProblemKind, SyncStatus},
};
use mend_e2e::{Phone, Relay};

const ROUND: std::time::Duration = std::time::Duration::from_secs(20);

fn share(text: &str) -> Body {
    Body::Share(Share {
        feeling: text.into(),
        tough_question: false,
    })
}

fn note(text: &str) -> Body {
    Body::ProcessingNote(ProcessingNote { text: text.into() })
}

/// The words of the erased problem the status carries, if any.
fn erased_words(status: &SyncStatus) -> Option<String> {
    status.problems.iter().find_map(|p| match &p.kind {
        ProblemKind::Erased { words } => Some(words.clone()),
        _ => None,
    })
}

/// Whether the status reports the couple's space gone from the relay.
fn couple_gone(status: &SyncStatus) -> bool {
    status
        .problems
        .iter()
        .any(|p| p.space == "couple" && matches!(p.kind, ProblemKind::SpaceGone))
}

/// Rows of the relay's `table` (`spaces` or `erased`) for one space, read from its database.
fn relay_rows(relay: &Relay, table: &str, space: &[u8; 32]) -> Result<i64> {
    let db = rusqlite::Connection::open_with_flags(
        relay.data_dir.join(mend_relay::storage::sqlite::DB_FILE),
        rusqlite::OpenFlags::SQLITE_OPEN_READ_ONLY,
    )?;
    Ok(db.query_row(
        &format!("SELECT count(*) FROM {table} WHERE space_id = ?1"),
        [&space[..]],
        |r| r.get(0),
    )?)
}

fn is_erased<T: std::fmt::Debug>(result: Result<T>) -> bool {
    result
        .err()
        .and_then(|e| e.downcast::<Error>().ok())
        .is_some_and(|e| matches!(e, Error::Erased(_)))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_erase_reaches_every_device_and_the_partner_is_told_in_plain_words() -> Result<()> {
    let dir = tempfile::tempdir()?;
    let relay = Relay::start(dir.path()).await?;
    let (a, b) = mend_e2e::couple(dir.path(), &relay).await?;
    let a2 = Phone::pair(
        dir.path(),
        "a2.db",
        &a,
        PairingKind::Device,
        false,
        "",
        &relay,
    )
    .await?;
    a2.sync().await?;
    let from_b = b.with(|j| j.add(share("ERASE-MARKER-blake-before")))?;
    a.with(|j| j.add(share("ERASE-MARKER-alex-before")))?;
    a.with(|j| j.add_with(note("ERASE-MARKER-alex-private"), Some(Visibility::Private)))?;
    for phone in [&b, &a, &a2] {
        phone.sync().await?;
    }

    // The marker reaches Alex's other device and Blake's before the spaces go, as live sync
    // brings it; `Device::erase` is the same three steps in one call (tested below).
    a.with(|j| j.mark_erased())?;
    a.sync().await?;
    a2.sync().await?;
    b.sync().await?;
    // What the marker says is read on the read connection too, as an app reads it.
    ensure!(
        a2.read(|j| j.erasure())?.is_some_and(|e| e.by_me),
        "Alex's other device does not read the erase it holds"
    );
    ensure!(
        b.read(|j| j.erasure())?
            .is_some_and(|e| !e.by_me && e.name == "Alex"),
        "Blake does not read Alex's erase"
    );
    a.device.erase_remote().await?;
    ensure!(
        is_erased(a.with(|j| j.add(share("after")))),
        "the erasing device still writes"
    );

    // Alex's other device: erased, from another of Alex's devices, never "unreachable".
    let status = a2.device.sync_now(ROUND).await?;
    let words = erased_words(&status).unwrap_or_default();
    ensure!(
        words.contains("one of your devices"),
        "Alex's other device was not told: {status:?}"
    );
    ensure!(!status.syncing, "Alex's other device keeps syncing");
    ensure!(status.online, "an erased journal reads as out of reach");
    ensure!(
        is_erased(a2.with(|j| j.add(share("couple, after")))),
        "Alex's other device still writes to the couple's space"
    );
    ensure!(
        is_erased(a2.with(|j| j.add_with(note("mine, after"), Some(Visibility::Private)))),
        "Alex's other device still writes to the personal space"
    );
    let erasure = a2.read(|j| j.erasure())?;
    ensure!(erasure.as_ref().is_some_and(|e| e.by_me), "{erasure:?}");
    // It stays erased after a restart, without the relay.
    let keyring = a2.device.keyring().clone();
    let path = a2.path.clone();
    a2.device.close().await?;
    let a2 = Phone::reopen(&path, keyring, &relay)?;
    ensure!(
        a2.read(|j| j.erasure())?.is_some_and(|e| e.by_me),
        "the erased state did not survive a reopen"
    );
    ensure!(
        is_erased(a2.with(|j| j.add(share("after a reopen")))),
        "a reopened erased journal writes"
    );

    // Blake: told in plain words with Alex's name; reading works; sharing is over; Blake's
    // personal space is Blake's and keeps syncing.
    let status = b.device.sync_now(ROUND).await?;
    let words = erased_words(&status).unwrap_or_default();
    ensure!(
        words.contains("Alex erased the shared journal on")
            && words.contains("Your copy stays on this device; nothing more can be shared."),
        "Blake was not told in plain words: {status:?}"
    );
    ensure!(
        b.read(|j| j.get(from_b))?.id == from_b,
        "Blake lost the record"
    );
    ensure!(
        is_erased(b.with(|j| j.add(share("to nobody")))),
        "Blake still writes to the couple's space"
    );
    b.with(|j| j.add_with(note("still mine"), Some(Visibility::Private)))?;
    let status = b.device.sync_now(ROUND).await?;
    ensure!(
        status.pending == 0,
        "Blake's personal write did not sync: {status:?}"
    );
    ensure!(
        !b.read(|j| j.erasure())?.is_some_and(|e| e.by_me),
        "Blake's journal thinks Blake erased it"
    );

    // The relay: tombstones for both of Alex's spaces, neither back, no text from before.
    let couple_id = a.device.keyring().couple.derive_space_id();
    let conn = rusqlite::Connection::open(relay.data_dir.join("relay.sqlite3"))?;
    let back: i64 = conn.query_row(
        "SELECT COUNT(*) FROM spaces WHERE space_id = ?1",
        [&couple_id[..]],
        |r| r.get(0),
    )?;
    ensure!(back == 0, "the erased couple's space is back at the relay");
    let tombstones: i64 = conn.query_row("SELECT COUNT(*) FROM erased", [], |r| r.get(0))?;
    ensure!(tombstones == 2, "{tombstones} tombstones, not 2");
    drop(conn);
    let data_dir = relay.data_dir.clone();
    relay.stop().await?;
    let mut files = Vec::new();
    mend_e2e::files_under(&data_dir, &mut files)?;
    for file in &files {
        let bytes = std::fs::read(file)?;
        ensure!(
            !bytes.windows(13).any(|w| w == b"ERASE-MARKER-"),
            "{} holds text written before the erase",
            file.display()
        );
    }
    Ok(())
}

/// `Device::erase` pushes the marker before deleting; a device that was away then finds only
/// the tombstones: the relay's word, which could be a lie, so the space is gone but the
/// journal is not erased there (writes go on, kept), and nothing says a partner erased it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_device_the_marker_missed_is_not_erased_on_the_relays_word() -> Result<()> {
    let dir = tempfile::tempdir()?;
    let relay = Relay::start(dir.path()).await?;
    let (a, b) = mend_e2e::couple(dir.path(), &relay).await?;
    b.sync().await?;
    let report = a.device.erase(ROUND).await?;
    ensure!(report.marker_pushed, "the marker did not reach the relay");
    ensure!(
        is_erased(a.with(|j| j.add(share("after")))),
        "the erasing device still writes"
    );
    let status = b.device.sync_now(ROUND).await?;
    ensure!(
        erased_words(&status).is_none()
            && status
                .problems
                .iter()
                .any(|p| p.space == "couple" && matches!(p.kind, ProblemKind::SpaceGone)),
        "Blake took the relay's word: {status:?}"
    );
    ensure!(status.online, "a relay that answers reads as out of reach");
    ensure!(
        b.read(|j| j.erasure())?.is_none(),
        "Blake's journal is erased"
    );
    b.with(|j| j.add(share("kept")))?;
    relay.stop().await?;
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_erase_without_the_relay_erases_nothing() -> Result<()> {
    let dir = tempfile::tempdir()?;
    let relay = Relay::start(dir.path()).await?;
    let (a, b) = mend_e2e::couple(dir.path(), &relay).await?;
    relay.stop().await?;
    ensure!(
        matches!(a.device.erase(ROUND).await, Err(Error::Unreachable)),
        "an erase without the relay did not say so"
    );
    // Nothing was marked: Alex still writes, and Blake sees no erase.
    ensure!(a.read(|j| j.erasure())?.is_none(), "marked erased");
    a.with(|j| j.add(share("still here")))?;
    ensure!(b.read(|j| j.erasure())?.is_none(), "Blake sees an erase");
    Ok(())
}

/// Alex's app is killed after the erase marker is written and before the relay deleted the
/// spaces: the next round, after a reopen, pushes the marker and deletes them.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_erase_cut_off_after_its_marker_is_finished_by_the_next_round() -> Result<()> {
    let dir = tempfile::tempdir()?;
    let relay = Relay::start(dir.path()).await?;
    let (a, b) = mend_e2e::couple(dir.path(), &relay).await?;
    b.sync().await?;
    let couple_space = a.device.keyring().couple.derive_space_id();
    a.with(|j| j.mark_erased())?;
    let (path, keyring) = (a.path.clone(), a.device.keyring());
    a.device.close().await?;
    let a = Phone::reopen(&path, keyring, &relay)?;
    let _ = a.device.sync_round(ROUND).await;
    ensure!(
        relay_rows(&relay, "erased", &couple_space)? == 1,
        "the relay still holds the couple's space"
    );
    ensure!(
        !a.read(|j| j.erase_pending())?,
        "the erase is still pending"
    );
    // Blake, who had not synced since, finds the space gone (the marker came and went).
    let status = b.device.sync_now(ROUND).await?;
    ensure!(
        couple_gone(&status),
        "Blake still syncs the space: {status:?}"
    );
    relay.stop().await?;
    Ok(())
}

/// The other partner moved the journal to a new epoch (new spaces at the relay) just before
/// the erase, and this device had not followed: the erase follows first and erases the
/// spaces the journal now lives in.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_erase_follows_a_move_it_had_not_seen_and_erases_the_new_spaces() -> Result<()> {
    let dir = tempfile::tempdir()?;
    let relay = Relay::start(dir.path()).await?;
    let (a, b) = mend_e2e::couple(dir.path(), &relay).await?;
    b.with(|j| j.add(share("ERASE-MARKER-written before the move")))?;
    b.sync().await?;
    a.sync().await?;
    b.device.forget(ROUND).await?;
    ensure!(b.read(|j| j.epoch())? == 1, "Blake did not move");
    let moved_space = b.device.keyring().couple.derive_space_id();

    let report = a.device.erase(ROUND).await?;
    ensure!(report.marker_pushed, "the marker did not reach the relay");
    ensure!(
        relay_rows(&relay, "spaces", &moved_space)? == 0,
        "the relay still holds the space the journal moved to"
    );
    // Blake, who had not synced since, finds the space the journal moved to gone.
    let status = b.device.sync_now(ROUND).await?;
    ensure!(
        couple_gone(&status),
        "Blake still syncs the space: {status:?}"
    );
    relay.stop().await
}

/// The same move, but the relay sits on this device's claim of it, so the round cannot
/// follow: the erase refuses (nothing marked, nothing deleted) rather than delete the spaces
/// the journal is leaving and call the journal erased.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_erase_that_cannot_follow_a_move_erases_nothing() -> Result<()> {
    let dir = tempfile::tempdir()?;
    let relay = Relay::start_plain(dir.path()).await?;
    let (a, b) = mend_e2e::couple(dir.path(), &relay).await?;
    let proxy = mend_e2e::StallingProxy::start(relay.addr, b"/successor ").await?;
    let a = a.through(&proxy.url(), &relay).await?;
    a.sync().await?;
    let old_space = a.device.keyring().couple.derive_space_id();
    b.device.forget(ROUND).await?;

    let erased = a.device.erase(std::time::Duration::from_secs(2)).await;
    ensure!(
        matches!(&erased, Err(Error::Invalid(m)) if m.contains("moving")),
        "{erased:?}"
    );
    ensure!(a.read(|j| j.erasure())?.is_none(), "marked erased");
    ensure!(
        relay_rows(&relay, "erased", &old_space)? == 0,
        "the space the journal is leaving was erased"
    );
    a.device.close().await?;
    drop(proxy);
    relay.stop().await
}
