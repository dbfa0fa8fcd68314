//! A lost device removed over a real relay: it can no longer read what is written after, says
//! so, and nothing it writes arrives; the other partner, offline meanwhile, catches up with
//! the new epoch and keeps what it wrote, even with a keyring its app did not store again.

use anyhow::{Result, ensure};
use mend_core::{Error, crypto::PairingKind};
use mend_e2e::{Phone, ROUND, Relay, couple, eventually, honest, honest_texts};

/// A device of the same partner as `of`, paired through the relay.
async fn another_device(
    dir: &std::path::Path,
    file: &str,
    of: &Phone,
    relay: &Relay,
) -> Result<Phone> {
    Phone::pair(dir, file, of, PairingKind::Device, false, "", relay).await
}

fn texts(phone: &Phone) -> Result<Vec<String>> {
    honest_texts(&phone.device)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_lost_tablet_is_shut_out_while_the_partner_is_away_and_writing() -> Result<()> {
    let dir = tempfile::tempdir()?;
    let relay = Relay::start(dir.path()).await?;
    let (a, b) = couple(dir.path(), &relay).await?;
    let tablet = another_device(dir.path(), "t.db", &a, &relay).await?;
    tablet.sync().await?;
    a.with(|j| j.add(honest("before")))?;
    for phone in [&a, &tablet, &b, &a] {
        phone.sync().await?;
    }
    ensure!(texts(&tablet)? == ["before"]);

    // Blake is away and writes; Alex removes the lost tablet from the phone.
    let blake_kept = b.device.keyring();
    b.with(|j| j.add(honest("written while away")))?;
    let lost = tablet.read(|j| Ok(j.device()))?;
    let report = a.device.remove_device(lost, ROUND).await?;
    ensure!(report.keyring_changed, "Alex's phone did not move");
    ensure!(a.read(|j| j.epoch())? == 1);
    a.with(|j| j.add(honest("after the tablet was lost")))?;
    a.sync().await?;

    // The tablet learns it was removed, in words, and reads nothing new.
    let refused = tablet.device.sync_now(ROUND).await;
    ensure!(
        matches!(&refused, Err(Error::DeviceRemoved(m)) if m.contains("removed")),
        "the tablet was not told: {refused:?}"
    );
    tablet.with(|j| j.add(honest("from the lost tablet")))?;
    ensure!(matches!(
        tablet.device.sync_now(ROUND).await,
        Err(Error::DeviceRemoved(_))
    ));
    ensure!(
        texts(&tablet)? == ["before", "from the lost tablet"],
        "the tablet reads the new epoch: {:?}",
        texts(&tablet)?
    );

    // Blake's app is killed right after its phone moves, before it stores the new keyring:
    // opened again with the old one, it catches up from the box the journal kept.
    let moved = b.device.sync_round(ROUND).await?;
    ensure!(moved.keyring_changed, "Blake's phone did not move");
    let path = b.path.clone();
    b.device.close().await?;
    let b = Phone::reopen(&path, blake_kept.clone(), &relay)?;
    ensure!(
        b.device.keyring() != blake_kept,
        "the keyring did not catch up"
    );
    for phone in [&b, &a, &b] {
        phone.sync().await?;
    }
    let alex = texts(&a)?;
    ensure!(
        alex == texts(&b)?,
        "not converged: {alex:?} / {:?}",
        texts(&b)?
    );
    ensure!(
        alex == ["after the tablet was lost", "before", "written while away"],
        "lost or extra: {alex:?}"
    );
    let listed = b.read(|j| Ok(j.partners()))?;
    ensure!(
        listed
            .iter()
            .all(|p| p.devices.iter().all(|d| d.id != lost)),
        "the lost tablet is still listed"
    );

    // A device paired after the rotation joins the new epoch and reads everything.
    let new = another_device(dir.path(), "n.db", &b, &relay).await?;
    for phone in [&new, &b, &new] {
        phone.sync().await?;
    }
    let report = new.device.sync_round(ROUND).await?;
    ensure!(
        texts(&new)? == alex,
        "the new device reads {:?} in epoch {} ({:?}, {:?})",
        texts(&new)?,
        new.read(|j| j.epoch())?,
        report.problems,
        new.with(|j| j.heads(mend_core::Space::Couple))?
    );
    Ok(())
}

/// Every file of a directory (a relay's data, or a phone's database with its WAL), read.
fn bytes_under(dir: &std::path::Path) -> Result<Vec<Vec<u8>>> {
    let mut paths = Vec::new();
    mend_e2e::files_under(dir, &mut paths)?;
    Ok(paths.iter().filter_map(|p| std::fs::read(p).ok()).collect())
}

fn holds(files: &[Vec<u8>], needle: &[u8]) -> bool {
    files
        .iter()
        .any(|f| f.windows(needle.len()).any(|w| w == needle))
}

/// What the relay stores for a space, sealed: its chunks, rollups and snapshot.
fn stored(relay: &Relay, space_id: &[u8; 32]) -> Result<Vec<Vec<u8>>> {
    let db = rusqlite::Connection::open_with_flags(
        relay.data_dir.join(mend_relay::storage::sqlite::DB_FILE),
        rusqlite::OpenFlags::SQLITE_OPEN_READ_ONLY,
    )?;
    let mut out = Vec::new();
    for sql in [
        "SELECT payload FROM chunks WHERE payload IS NOT NULL AND space = \
         (SELECT id FROM spaces WHERE space_id = ?1)",
        "SELECT payload FROM rollups WHERE payload IS NOT NULL AND space = \
         (SELECT id FROM spaces WHERE space_id = ?1)",
        "SELECT payload FROM snapshots WHERE space = (SELECT id FROM spaces WHERE space_id = ?1)",
    ] {
        let mut q = db.prepare(sql)?;
        let rows = q.query_map([&space_id[..]], |r| r.get::<_, Vec<u8>>(0))?;
        for row in rows {
            out.push(row?);
        }
    }
    Ok(out)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn after_a_forget_the_old_epoch_is_gone_from_the_relay_and_every_file() -> Result<()> {
    let dir = tempfile::tempdir()?;
    let relay = Relay::start(dir.path()).await?;
    let (a, b) = couple(dir.path(), &relay).await?;
    // A snapshot at every chunk: the old epoch's snapshots hold the words too.
    for phone in [&a, &b] {
        phone.device.client().set_snapshot_every(1);
    }
    let words = "WORDS-TO-FORGET-e2e-9k";
    let id = a.with(|j| j.add(honest(words)))?;
    a.with(|j| j.add(honest("kept")))?;
    for phone in [&a, &b, &a] {
        phone.sync().await?;
    }
    a.with(|j| j.remove(id))?;
    for phone in [&a, &b, &a] {
        phone.sync().await?;
    }
    let old = [
        a.device.keyring().couple.derive_space_id(),
        a.device.keyring().personal.derive_space_id(),
    ];
    let sealed: Vec<Vec<u8>> = old
        .iter()
        .map(|s| stored(&relay, s))
        .collect::<Result<Vec<_>>>()?
        .concat();
    ensure!(
        sealed.len() >= 3,
        "the relay held too little of the old epoch to show anything ({})",
        sealed.len()
    );
    // Each sealed payload, found by a slice of its middle: ciphertext is random, so a slice
    // found anywhere is that payload left behind.
    let slices: Vec<Vec<u8>> = sealed
        .iter()
        .filter(|p| p.len() >= 64)
        .map(|p| p[p.len() / 2 - 16..p.len() / 2 + 16].to_vec())
        .collect();
    let before = bytes_under(&relay.data_dir)?;
    ensure!(
        slices.iter().all(|s| holds(&before, s)),
        "the search does not find what the relay holds"
    );

    a.device.forget(ROUND).await?;
    for phone in [&b, &a, &b, &a] {
        phone.sync().await?;
    }
    for phone in [&a, &b] {
        ensure!(phone.read(|j| j.epoch())? == 1, "a phone did not move");
    }
    for space in &old {
        ensure!(
            stored(&relay, space)?.is_empty(),
            "the relay still holds an old space"
        );
    }
    // The erase returned; its WAL truncation may have waited for a reader (bounded).
    let mut left = None;
    for _ in 0..50 {
        let after = bytes_under(&relay.data_dir)?;
        left = slices.iter().position(|s| holds(&after, s));
        if left.is_none() {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
    if let Some(i) = left {
        anyhow::bail!("payload {i} of the old epoch is still in a relay file");
    }

    // A phone paired now reads the new epoch from the relay (its snapshot included): the
    // placeholder stays, the words are in no phone's files.
    let new = another_device(dir.path(), "n.db", &b, &relay).await?;
    for phone in [&new, &b, &new] {
        phone.sync().await?;
    }
    let read = texts(&new)?;
    ensure!(
        read.contains(&"kept".to_owned()) && !read.contains(&words.to_owned()),
        "the new phone reads {read:?}"
    );
    ensure!(new.read(|j| j.get(id))?.removed, "the placeholder is gone");
    for phone in [&a, &b, &new] {
        let mut files = Vec::new();
        for suffix in ["", "-wal"] {
            let mut path = phone.path.clone().into_os_string();
            path.push(suffix);
            if let Ok(bytes) = std::fs::read(&path) {
                files.push(bytes);
            }
        }
        ensure!(
            !holds(&files, words.as_bytes()),
            "{} still holds the words",
            phone.path.display()
        );
    }
    Ok(())
}

/// Alex's tablet runs live sync alone (no rounds of its own) when Alex's phone removes it: the
/// app hears of it through its observer, as a `Retired` problem, and live sync stops.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_device_removed_while_only_live_syncing_is_told() -> Result<()> {
    let dir = tempfile::tempdir()?;
    let relay = Relay::start(dir.path()).await?;
    let (a, _b) = couple(dir.path(), &relay).await?;
    let tablet = another_device(dir.path(), "t.db", &a, &relay).await?;
    tablet.sync().await?;
    a.sync().await?;
    let id = tablet.read(|j| Ok(j.device()))?;
    let recorder = std::sync::Arc::clone(&tablet.recorder);
    let device = std::sync::Arc::new(tablet.device);
    device.start_live_following(ROUND)?;
    eventually("the tablet's live sync connects", || {
        Ok(recorder
            .statuses
            .lock()
            .map_err(|_| anyhow::anyhow!("poisoned"))?
            .iter()
            .any(|s| s.online))
    })
    .await?;

    a.device.remove_device(id, ROUND).await?;
    ensure!(a.read(|j| j.epoch())? == 1, "Alex's phone did not move");
    eventually("the tablet's app is told it was removed", || {
        Ok(recorder
            .statuses
            .lock()
            .map_err(|_| anyhow::anyhow!("poisoned"))?
            .iter()
            .any(|s| {
                s.problems
                    .iter()
                    .any(|p| p.space == "couple" && p.kind == mend_core::sync::ProblemKind::Retired)
            }))
    })
    .await?;
    eventually("the tablet's live sync stops", || Ok(!device.is_live())).await?;
    let refused = device.sync_now(ROUND).await;
    ensure!(
        matches!(&refused, Err(Error::DeviceRemoved(m)) if m.contains("removed")),
        "{refused:?}"
    );
    Ok(())
}

/// A phone that only runs live sync (an app in the foreground) follows a rotation as soon as
/// live sync brings its announcement, and goes on hearing the partner in the new epoch.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn live_sync_alone_follows_a_rotation() -> Result<()> {
    let dir = tempfile::tempdir()?;
    let relay = Relay::start(dir.path()).await?;
    let (a, b) = couple(dir.path(), &relay).await?;
    let blake = std::sync::Arc::new(b.device);
    blake.start_live_following(ROUND)?;
    eventually("Blake's live sync connects", || {
        Ok(b.recorder
            .statuses
            .lock()
            .map_err(|_| anyhow::anyhow!("poisoned"))?
            .iter()
            .any(|s| s.online))
    })
    .await?;

    a.device.forget(ROUND).await?;
    ensure!(a.read(|j| j.epoch())? == 1, "Alex did not move");
    eventually("Blake's phone moves with live sync alone", || {
        Ok(blake.read(|j| j.epoch())? == 1)
    })
    .await?;
    // The move commits before live sync opens on the new spaces: it is live again soon after.
    eventually("live sync starts again on the new spaces", || {
        Ok(blake.is_live())
    })
    .await?;

    let after = a.with(|j| j.add(honest("written in the new epoch")))?;
    a.sync().await?;
    eventually("Blake hears the new epoch live", || {
        Ok(blake.read(|j| j.get(after)).is_ok())
    })
    .await?;
    blake.stop_live().await;
    Ok(())
}

/// A journal whose stored couple space lags its epoch (a move an older build cut between its
/// steps, or the old space a stale keyring's certificate wrote back) opens in the epoch its box
/// names, and syncs there.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stored_couple_space_behind_the_epoch_is_settled_at_open() -> Result<()> {
    let dir = tempfile::tempdir()?;
    let relay = Relay::start(dir.path()).await?;
    let (a, b) = couple(dir.path(), &relay).await?;
    let old = hex::encode(b.device.keyring().couple.derive_space_id());
    let report = a.device.forget(ROUND).await?;
    anyhow::ensure!(report.finished, "{report:?}");
    b.sync().await?;
    let (keyring, path) = (b.device.keyring(), b.path.clone());
    anyhow::ensure!(
        hex::encode(keyring.couple.derive_space_id()) != old,
        "B did not move"
    );
    b.device.close().await?;
    rusqlite::Connection::open(&path)?.execute(
        "UPDATE meta SET value = ?1 WHERE key = 'couple_space'",
        [&old],
    )?;
    let b = Phone::reopen(&path, keyring, &relay)?;
    let id = b.with(|j| j.add(honest("written after opening again")))?;
    b.sync().await?;
    a.sync().await?;
    anyhow::ensure!(a.read(|j| j.get(id)).is_ok(), "the write never reached A");
    relay.stop().await
}

/// Alex's tablet, away, catches up with two moves in a row (Alex's own `forget`, which gives
/// Alex's private space a new secret, then Blake's), and its app is killed before it stores
/// the keyring: opened again with the keyring from before both, it takes both moves' secrets,
/// the private space's included.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_keyring_not_stored_after_two_moves_keeps_the_private_spaces_new_secret() -> Result<()> {
    let dir = tempfile::tempdir()?;
    let relay = Relay::start(dir.path()).await?;
    let (a, b) = couple(dir.path(), &relay).await?;
    let tablet = another_device(dir.path(), "t.db", &a, &relay).await?;
    // Blake's phone hears of the tablet (its certificate goes out with its second round):
    // Blake's rotation then seals the tablet a box too.
    for phone in [&tablet, &tablet, &a, &b] {
        phone.sync().await?;
    }
    let kept = tablet.device.keyring();
    a.device.forget(ROUND).await?;
    a.sync().await?;
    b.sync().await?;
    ensure!(b.read(|j| j.epoch())? == 1, "Blake did not move");
    b.device.forget(ROUND).await?;
    b.sync().await?;
    a.sync().await?;
    ensure!(a.read(|j| j.epoch())? == 2, "Alex did not move twice");
    for _ in 0..3 {
        if tablet.read(|j| j.epoch())? == 2 {
            break;
        }
        tablet.device.sync_round(ROUND).await?;
    }
    ensure!(
        tablet.read(|j| j.epoch())? == 2,
        "the tablet did not move twice"
    );
    let moved = tablet.device.keyring();
    ensure!(
        moved.personal != kept.personal,
        "Alex's private space kept its secret"
    );
    let path = tablet.path.clone();
    tablet.device.close().await?;
    let tablet = Phone::reopen(&path, kept, &relay)?;
    ensure!(
        tablet.device.keyring() == moved,
        "the keyring caught up to another state"
    );
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_removal_and_a_forgetting_are_fsynced_whatever_the_journals_durability() -> Result<()> {
    let dir = tempfile::tempdir()?;
    let relay = Relay::start(dir.path()).await?;
    let (a, b) = couple(dir.path(), &relay).await?;
    let tablet = another_device(dir.path(), "t.db", &a, &relay).await?;
    for phone in [&tablet, &a, &b, &a] {
        phone.sync().await?;
    }
    // Journals here commit with `synchronous = NORMAL`, where a power cut takes back the last
    // commits. A lost phone's removal is not one of them once the partner is told it is done.
    let lost = tablet.read(|j| Ok(j.device()))?;
    let before = a.with(|j| Ok(j.fsynced_steps()))?;
    a.with(|j| j.rotate(mend_core::journal::Reason::RemoveDevices, &[lost]))?;
    ensure!(
        a.with(|j| Ok(j.fsynced_steps()))? > before,
        "the removal was committed without an fsync"
    );
    a.sync().await?;
    b.sync().await?;
    a.sync().await?;

    let before = b.with(|j| Ok(j.fsynced_steps()))?;
    b.with(|j| j.rotate(mend_core::journal::Reason::Forget, &[]))?;
    ensure!(
        b.with(|j| Ok(j.fsynced_steps()))? > before,
        "the forgetting was committed without an fsync"
    );
    relay.stop().await
}

/// Blake's phone moves the journal to a new epoch; Alex's next round finds the announcement
/// and claims it at the relay, which takes the claim and never answers. The round still ends
/// by its deadline (a background task's window is short), and the move waits for a later one.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_round_ends_by_its_deadline_when_the_relay_sits_on_an_epoch_claim() -> Result<()> {
    let dir = tempfile::tempdir()?;
    let relay = Relay::start_plain(dir.path()).await?;
    let (a, b) = couple(dir.path(), &relay).await?;
    let proxy = mend_e2e::StallingProxy::start(relay.addr, b"/successor ").await?;
    let a = a.through(&proxy.url(), &relay).await?;
    a.sync().await?;

    b.device.forget(ROUND).await?;
    ensure!(b.read(|j| j.epoch())? == 1, "Blake did not move");
    let budget = std::time::Duration::from_secs(2);
    let round = tokio::time::timeout(
        std::time::Duration::from_secs(8),
        a.device.sync_round(budget),
    )
    .await;
    ensure!(
        round.is_ok(),
        "the round waited on the relay past its deadline"
    );
    round??;
    ensure!(a.read(|j| j.epoch())? == 0, "Alex moved without the relay");
    a.device.close().await?;
    drop(proxy);
    relay.stop().await
}

/// Alex opens an invite for a new phone; before it is accepted, Blake's phone moves the
/// journal to a new epoch and Alex's phone follows. The new phone joins in the epoch the
/// journal is in when Alex accepts, not the one it was in when the invite opened (whose
/// space is about to be retired).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_device_joins_in_the_epoch_the_journal_is_in_when_it_is_let_in() -> Result<()> {
    let dir = tempfile::tempdir()?;
    let relay = Relay::start(dir.path()).await?;
    let (a, b) = couple(dir.path(), &relay).await?;
    a.with(|j| j.add(honest("before the move")))?;
    a.sync().await?;
    let mut invitation = a.device.invite(PairingKind::Device, false).await?;
    let code = invitation.code().to_owned();

    b.device.forget(ROUND).await?;
    a.device.sync_round(ROUND).await?;
    ensure!(a.read(|j| j.epoch())? == 1, "Alex's phone did not move");

    let hosting = async {
        let joiner = invitation.wait_for_joiner(ROUND).await?;
        ensure!(joiner.is_some(), "nobody joined");
        a.device.welcome(invitation, ROUND).await?;
        anyhow::Ok(())
    };
    let (hosted, joined) = tokio::join!(
        hosting,
        Phone::join_code(dir.path(), "tablet.db", &code, "", &relay)
    );
    hosted?;
    let tablet = joined?;
    ensure!(
        tablet.device.keyring().couple.derive_space_id()
            == a.device.keyring().couple.derive_space_id(),
        "the new phone got the secrets of the epoch the journal left"
    );
    tablet.sync().await?;
    ensure!(texts(&tablet)? == ["before the move"]);
    relay.stop().await
}
