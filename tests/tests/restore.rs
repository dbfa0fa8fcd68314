//! A journal restored from the keyring alone: the database is gone (an app reinstalled, the
//! Keychain kept), the relay still holds both spaces.

use anyhow::{Result, ensure};
use mend_client::Device;
use mend_core::{
    Body, Error,
    model::{ProcessingNote, Share},
};
use mend_e2e::{ROUND, Relay, couple, opts};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_reinstalled_app_restores_its_journal_from_the_keyring_alone() -> Result<()> {
    let dir = tempfile::tempdir()?;
    let relay = Relay::start(dir.path()).await?;
    let (a, b) = couple(dir.path(), &relay).await?;
    let shared = b.with(|j| {
        j.add(Body::Share(Share {
            feeling: "seen".into(),
            tough_question: false,
        }))
    })?;
    let private = b.with(|j| {
        j.add(Body::ProcessingNote(ProcessingNote {
            text: "only mine".into(),
        }))
    })?;
    b.sync().await?;
    let me = b.read(|j| Ok(j.me()))?;
    let keyring = b.device.keyring().clone();

    // The app is reinstalled: the database and everything beside it are gone.
    let path = b.path.clone();
    b.device.close().await?;
    for suffix in ["", "-wal", "-shm", ".lock"] {
        let _ = std::fs::remove_file(format!("{}{suffix}", path.display()));
    }
    ensure!(!path.exists());

    let restored =
        Device::restore(&path, keyring.clone(), ROUND, opts(), relay.trust(), None).await?;
    // The same partner, on a new device, with both spaces back.
    ensure!(
        restored.read(|j| Ok(j.me()))? == me,
        "restored as someone else"
    );
    ensure!(restored.read(|j| j.get(shared))?.author == me);
    ensure!(restored.read(|j| j.get(private))?.author == me);
    ensure!(restored.read(|j| Ok(j.partners().len()))? == 2);
    // No staging file is left behind.
    let staging = format!("{}.restoring", path.display());
    ensure!(
        !std::path::Path::new(&staging).exists(),
        "staging left behind"
    );

    // The restored device writes and syncs like any other; the partner sees it.
    let note = restored.write(|j| {
        j.add(Body::Share(Share {
            feeling: "back".into(),
            tough_question: false,
        }))
    })?;
    ensure!(!restored.sync_now(ROUND).await?.syncing);
    a.sync().await?;
    ensure!(a.read(|j| j.get(note))?.author == me);

    // Restoring over an existing journal is refused, and the journal is left alone.
    let again = Device::restore(&path, keyring, ROUND, opts(), relay.trust(), None).await;
    ensure!(matches!(again, Err(Error::Invalid(_))), "{again:?}");
    ensure!(restored.read(|j| j.get(note)).is_ok());
    relay.stop().await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn restoring_a_keyring_the_relay_never_saw_fails_and_leaves_nothing() -> Result<()> {
    let dir = tempfile::tempdir()?;
    let relay = Relay::start(dir.path()).await?;
    let keyring = mend_core::Keyring::generate(&relay.url())?;
    let path = dir.path().join("r.db");
    let restored = Device::restore(&path, keyring, ROUND, opts(), relay.trust(), None).await;
    ensure!(matches!(restored, Err(Error::Invalid(_))), "{restored:?}");
    ensure!(!path.exists());
    ensure!(!dir.path().join("r.db.restoring").exists());
    relay.stop().await
}

/// A keyring that names an epoch whose first change the relay does not hold (it lost it, or
/// serves an older copy) restores nothing, and says why, rather than a journal that would read
/// nothing of the epoch.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_keyring_naming_an_epoch_the_relay_does_not_hold_restores_nothing() -> Result<()> {
    let dir = tempfile::tempdir()?;
    let relay = Relay::start(dir.path()).await?;
    let (a, _b) = couple(dir.path(), &relay).await?;
    let keyring = mend_core::Keyring {
        epoch: mend_core::KeyringEpoch::Known(Some((1, [7; 32]))),
        ..a.device.keyring()
    };
    restores_nothing(a, keyring, &relay, "start of the epoch").await?;
    relay.stop().await
}

/// `phone`'s database lost, then a restore from `keyring` that fails with `invalid` saying
/// `why`, and leaves nothing behind.
async fn restores_nothing(
    phone: mend_e2e::Phone,
    keyring: mend_core::Keyring,
    relay: &Relay,
    why: &str,
) -> Result<()> {
    let path = phone.path.clone();
    phone.device.close().await?;
    lose(&path);
    let restored = Device::restore(&path, keyring, ROUND, opts(), relay.trust(), None).await;
    ensure!(
        matches!(&restored, Err(Error::Invalid(said)) if said.contains(why)),
        "{restored:?}"
    );
    ensure!(!path.exists());
    Ok(())
}

/// The app was killed before it stored the keyring of the journal's new epoch, and the old
/// epoch's spaces are gone from the relay since: a restore from the keyring it kept restores
/// nothing and says why, instead of a journal filled from nothing that it calls whole.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_keyring_whose_spaces_the_relay_retired_restores_nothing() -> Result<()> {
    let dir = tempfile::tempdir()?;
    let relay = Relay::start(dir.path()).await?;
    let (a, b) = couple(dir.path(), &relay).await?;
    a.with(|j| j.add(share("written before the move")))?;
    a.sync().await?;
    let stale = b.device.keyring();
    a.device.forget(ROUND).await?;
    for phone in [&b, &a, &b, &a] {
        phone.sync().await?;
    }
    ensure!(b.read(|j| j.epoch())? == 1, "Blake did not move");
    restores_nothing(b, stale, &relay, "no longer keeps").await?;
    relay.stop().await
}

/// The keyring an app kept after the journal moved to new secrets (a lost phone removed, a
/// "forget") restores the journal in that epoch: the restored device reads and writes it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_keyring_kept_after_a_rotation_restores_the_new_epoch() -> Result<()> {
    let dir = tempfile::tempdir()?;
    let relay = Relay::start(dir.path()).await?;
    let (a, b) = couple(dir.path(), &relay).await?;
    let before = a.with(|j| {
        j.add(Body::Share(Share {
            feeling: "before".into(),
            tough_question: false,
        }))
    })?;
    a.sync().await?;
    a.device.forget(ROUND).await?;
    let report = b.device.sync_round(ROUND).await?;
    ensure!(report.keyring_changed, "Blake's phone did not move");
    b.sync().await?;
    ensure!(b.read(|j| j.epoch())? == 1);
    let me = b.read(|j| Ok(j.me()))?;
    let start = b.read(|j| j.epoch_start())?;
    ensure!(start.is_some_and(|(e, _)| e == 1));
    let keyring = b.device.keyring();

    let path = b.path.clone();
    b.device.close().await?;
    for suffix in ["", "-wal", "-shm", ".lock"] {
        let _ = std::fs::remove_file(format!("{}{suffix}", path.display()));
    }
    let restored = Device::restore(&path, keyring, ROUND, opts(), relay.trust(), None).await?;
    ensure!(restored.read(|j| Ok(j.me()))? == me);
    // It knows the epoch it is in, as the device before it did.
    ensure!(
        restored.read(|j| j.epoch_start())? == start,
        "restored outside the epoch"
    );
    let status = restored.sync_now(ROUND).await?;
    ensure!(!status.syncing, "{status:?}");
    ensure!(
        restored.read(|j| j.get(before)).is_ok(),
        "the restored device does not read the journal: {:?}",
        status.problems
    );
    let note = restored.write(|j| {
        j.add(Body::Share(Share {
            feeling: "restored after the move".into(),
            tough_question: false,
        }))
    })?;
    ensure!(!restored.sync_now(ROUND).await?.syncing);
    a.sync().await?;
    ensure!(
        a.read(|j| j.get(note)).is_ok_and(|r| r.author == me),
        "Alex does not see the restored device's entry"
    );
    // It can start the next epoch, and Alex follows.
    restored.forget(ROUND).await?;
    let moved = a.device.sync_round(ROUND).await?;
    ensure!(
        moved.keyring_changed,
        "Alex did not follow the restored device's rotation"
    );
    ensure!(a.read(|j| j.epoch())? == 2 && restored.read(|j| j.epoch())? == 2);
    relay.stop().await
}

/// The app is killed while a restore makes the journal: once before anything but the file
/// existed, once between joining and starting in the journal's epoch. Either way the next
/// launch finds it unfinished (an app restores then, as for a missing database), and the
/// restore that follows replaces it and reads what the relay holds.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_restore_cut_off_midway_is_made_again() -> Result<()> {
    let dir = tempfile::tempdir()?;
    let relay = Relay::start(dir.path()).await?;
    let (a, b) = couple(dir.path(), &relay).await?;
    a.device.forget(ROUND).await?;
    b.device.sync_round(ROUND).await?;
    let shared = b.with(|j| {
        j.add(Body::Share(Share {
            feeling: "kept at the relay".into(),
            tough_question: false,
        }))
    })?;
    b.sync().await?;
    let me = b.read(|j| Ok(j.me()))?;
    let couple_doc = b.with(|j| j.document(mend_core::Space::Couple))?;
    let keyring = b.device.keyring();
    let path = b.path.clone();
    b.device.close().await?;
    let gone = || {
        for suffix in ["", "-wal", "-shm", ".lock"] {
            let _ = std::fs::remove_file(format!("{}{suffix}", path.display()));
        }
    };
    gone();

    // Cut off once the file existed, before anything was in it.
    drop(mend_core::store::Store::open(
        &path,
        true,
        mend_core::store::Durability::Normal,
        mend_core::store::LockMode::Exclusive,
    )?);
    let opened = Device::open(&path, keyring.clone(), opts(), relay.trust(), None);
    ensure!(
        matches!(opened, Err(Error::Unfinished { .. })),
        "opened: {:?}",
        opened.err()
    );
    let restored =
        Device::restore(&path, keyring.clone(), ROUND, opts(), relay.trust(), None).await?;
    ensure!(restored.read(|j| j.get(shared))?.author == me);
    ensure!(restored.read(|j| j.epoch())? == 1);
    restored.close().await?;
    gone();

    // Cut off after joining, before starting in the epoch the document is in.
    let source = mend_core::JoinSource {
        couple: couple_doc,
        personal: Some(Vec::new()),
        partner: Some(me),
    };
    drop(mend_core::Journal::join_unfinished(
        &path,
        &source,
        "",
        opts(),
    )?);
    let opened = Device::open(&path, keyring.clone(), opts(), relay.trust(), None);
    ensure!(
        matches!(opened, Err(Error::Unfinished { .. })),
        "opened: {:?}",
        opened.err()
    );
    let restored = Device::restore(&path, keyring, ROUND, opts(), relay.trust(), None).await?;
    ensure!(restored.read(|j| j.get(shared))?.author == me);
    ensure!(
        restored.read(|j| j.epoch())? == 1,
        "restored outside the epoch"
    );
    relay.stop().await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_journal_still_being_made_elsewhere_is_not_removed_from_under_its_maker() -> Result<()> {
    let dir = tempfile::tempdir()?;
    let relay = Relay::start(dir.path()).await?;
    let (_a, b) = couple(dir.path(), &relay).await?;
    let keyring = b.device.keyring();
    let path = dir.path().join("second.db");

    // Another handle (another process, an extension) is making a journal at this path: its
    // file exists, holds no journal yet, and its writer holds the lock.
    let maker = mend_core::store::Store::open(
        &path,
        true,
        mend_core::store::Durability::Normal,
        mend_core::store::LockMode::Exclusive,
    )?;
    ensure!(mend_core::Journal::is_unfinished(&path)?);
    let restored =
        Device::restore(&path, keyring.clone(), ROUND, opts(), relay.trust(), None).await;
    ensure!(
        matches!(restored, Err(Error::Locked(_))),
        "restored: {:?}",
        restored.err()
    );
    ensure!(path.exists(), "the maker's file was removed");
    drop(maker);

    // The same for a maker in extension mode, whose steps otherwise let the lock go: it keeps
    // it from its first commit until the journal is whole.
    let source = mend_core::JoinSource {
        couple: b.with(|j| j.document(mend_core::Space::Couple))?,
        personal: Some(Vec::new()),
        partner: Some(b.read(|j| Ok(j.me()))?),
    };
    let extension = mend_core::OpenOptions {
        lock: mend_core::store::LockMode::Extension {
            wait: std::time::Duration::from_millis(50),
        },
        ..opts()
    };
    ensure!(mend_core::Journal::remove_unfinished(&path)?);
    let maker = mend_core::Journal::join_unfinished(&path, &source, "", extension)?;
    ensure!(mend_core::Journal::is_unfinished(&path)?);
    let restored =
        Device::restore(&path, keyring.clone(), ROUND, opts(), relay.trust(), None).await;
    ensure!(
        matches!(restored, Err(Error::Locked(_))),
        "restored beside an extension's making: {:?}",
        restored.err()
    );
    drop(maker);

    // Once its maker is gone, the unfinished journal is made again.
    let restored = Device::restore(&path, keyring, ROUND, opts(), relay.trust(), None).await?;
    ensure!(restored.read(|j| j.epoch())? == 0);
    restored.close().await?;
    relay.stop().await
}

/// The database and the files beside it gone, as after a reinstall.
fn lose(path: &std::path::Path) {
    for suffix in ["", "-wal", "-shm", ".lock"] {
        let _ = std::fs::remove_file(format!("{}{suffix}", path.display()));
    }
}

/// A first change of epoch `epoch` made on the genesis of the couple's document `held`, under
/// that epoch's actor: empty, or naming the epoch at the root.
fn made_up_first(held: &[u8], epoch: u32, named: bool) -> Result<Vec<u8>> {
    use automerge::transaction::Transactable;
    let doc = automerge::Automerge::load(held)?;
    let genesis = doc
        .get_changes(&[])
        .into_iter()
        .find(|c| c.deps().is_empty())
        .map(|c| c.raw_bytes().to_vec())
        .ok_or_else(|| anyhow::anyhow!("no genesis"))?;
    let mut fork = automerge::AutoCommit::load(&genesis)?;
    let mut actor = [0u8; 16];
    actor[..10].copy_from_slice(b"mend-epoch");
    actor[12..].copy_from_slice(&epoch.to_be_bytes());
    fork.set_actor(automerge::ActorId::from(actor));
    if named {
        fork.put(automerge::ROOT, "epoch", i64::from(epoch))?;
        fork.commit();
    } else {
        fork.empty_change(automerge::transaction::CommitOptions::default());
    }
    fork.get_last_local_change()
        .map(|c| c.raw_bytes().to_vec())
        .ok_or_else(|| anyhow::anyhow!("no change made"))
}

/// Pushes `raw` changes (and whatever `write` adds) to the couple's space `via`'s keyring
/// opens, from a journal that signs nothing and speaks as `speaking_as`: what a modified app
/// holding the couple's secret can do. Returns the ids `write` made.
async fn push_unsigned(
    dir: &std::path::Path,
    relay: &Relay,
    via: &mend_e2e::Phone,
    speaking_as: mend_core::PartnerId,
    raw: &[Vec<u8>],
    write: impl FnOnce(&mut mend_core::Journal) -> mend_core::Result<Vec<mend_core::RecordId>>,
) -> Result<Vec<mend_core::RecordId>> {
    let path = dir.join("hostile.db");
    lose(&path);
    let source = mend_core::JoinSource {
        couple: via.with(|j| j.document(mend_core::Space::Couple))?,
        personal: Some(Vec::new()),
        partner: Some(speaking_as),
    };
    drop(mend_core::Journal::join_with(&path, &source, "", opts())?);
    let db = rusqlite::Connection::open(&path)?;
    for bytes in raw {
        db.execute(
            "INSERT INTO unsent (space, bytes) VALUES ('couple', ?1)",
            [bytes],
        )?;
    }
    drop(db);
    let mut hostile = mend_core::Journal::open_with(&path, opts())?;
    let written = write(&mut hostile)?;
    let couple_only: Vec<_> = via
        .device
        .keyring()
        .links()
        .into_iter()
        .filter(|l| l.space == mend_core::Space::Couple)
        .collect();
    let pusher = mend_client::SyncClient::new(
        std::sync::Arc::new(std::sync::Mutex::new(hostile)),
        &relay.url(),
        &relay.trust(),
        couple_only,
        None,
    )?;
    ensure!(pusher.sync_now(ROUND).await?.pending == 0, "nothing pushed");
    Ok(written)
}

/// Alex's database lost, then restored from the keyring.
async fn reinstall(a: mend_e2e::Phone, relay: &Relay) -> Result<Device> {
    let keyring = a.device.keyring();
    let path = a.path.clone();
    a.device.close().await?;
    lose(&path);
    Ok(Device::restore(&path, keyring, ROUND, opts(), relay.trust(), None).await?)
}

/// The restored phone lost in turn, and restored again from its keyring as an older build kept
/// it: without the epoch, which the restore then works out from what the relay holds.
async fn reinstall_from_an_older_keyring(
    restored: Device,
    path: &std::path::Path,
    relay: &Relay,
) -> Result<Device> {
    let keyring = mend_core::Keyring {
        epoch: mend_core::KeyringEpoch::Unknown,
        ..restored.keyring()
    };
    restored.close().await?;
    lose(path);
    Ok(Device::restore(path, keyring, ROUND, opts(), relay.trust(), None).await?)
}

/// `made_up_first` of epoch `epoch` with `after` more changes built on it (under an actor of
/// no epoch): a made-up epoch with more history than the real one.
fn made_up_branch(held: &[u8], epoch: u32, after: usize) -> Result<Vec<Vec<u8>>> {
    use automerge::transaction::Transactable;
    let first = made_up_first(held, epoch, false)?;
    let mut fork = automerge::AutoCommit::load(&first_with_genesis(held, &first)?)?;
    fork.set_actor(automerge::ActorId::random());
    let mut branch = vec![first];
    for i in 0..after {
        fork.put(automerge::ROOT, "filler", i64::try_from(i)?)?;
        fork.commit();
        let change = fork
            .get_last_local_change()
            .ok_or_else(|| anyhow::anyhow!("no change made"))?;
        branch.push(change.raw_bytes().to_vec());
    }
    Ok(branch)
}

/// The genesis of `held` followed by `first`, as one document's bytes.
fn first_with_genesis(held: &[u8], first: &[u8]) -> Result<Vec<u8>> {
    let doc = automerge::Automerge::load(held)?;
    let mut bytes = doc
        .get_changes(&[])
        .into_iter()
        .find(|c| c.deps().is_empty())
        .map(|c| c.raw_bytes().to_vec())
        .ok_or_else(|| anyhow::anyhow!("no genesis"))?;
    bytes.extend_from_slice(first);
    Ok(bytes)
}

fn share(text: &str) -> Body {
    Body::Share(Share {
        feeling: text.into(),
        tough_question: false,
    })
}

/// Blake's app, modified, pushes a share in Alex's name that no device of Alex's signed: every
/// device refuses it, and the blind relay keeps it. Alex reinstalls and restores from the
/// keyring: the restored phone checks what the relay holds as any device does, refuses it
/// too, and what Alex writes afterwards still reaches Blake.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_restore_refuses_what_the_other_partner_forged_at_the_relay() -> Result<()> {
    let dir = tempfile::tempdir()?;
    let relay = Relay::start(dir.path()).await?;
    let (a, b) = couple(dir.path(), &relay).await?;
    let honest = a.with(|j| j.add(share("written by Alex")))?;
    a.sync().await?;
    b.sync().await?;
    let alex = a.read(|j| Ok(j.me()))?;

    let forged = push_unsigned(dir.path(), &relay, &b, alex, &[], |j| {
        Ok(vec![j.add(share("forged in Alex's name"))?])
    })
    .await?;
    let forged = forged[0];
    b.sync().await?;
    ensure!(b.read(|j| j.get(forged)).is_err(), "Blake's phone took it");

    let restored = reinstall(a, &relay).await?;
    ensure!(restored.read(|j| j.get(honest))?.author == alex);
    ensure!(
        restored.read(|j| j.get(forged)).is_err(),
        "the restored phone shows a share Alex never wrote"
    );
    still_reaches(&restored, &b).await?;
    relay.stop().await
}

/// What the restored phone writes reaches the partner.
async fn still_reaches(restored: &Device, b: &mend_e2e::Phone) -> Result<()> {
    let after = restored.write(|j| j.add(share("written after the restore")))?;
    ensure!(!restored.sync_now(ROUND).await?.syncing);
    b.sync().await?;
    ensure!(
        b.read(|j| j.get(after)).is_ok(),
        "what Alex wrote after the restore never reached Blake"
    );
    Ok(())
}

/// An epoch's first change is signed by no one (every device that moves builds it itself), so
/// anyone with the couple's secret can push one: Blake pushes a first change of an epoch 1
/// that never happened into the journal's space. Alex's restore takes an epoch only if
/// Alex's own devices built on it: it stays in epoch 0, without the forged change, and keeps
/// syncing with Blake.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_restore_does_not_take_an_epoch_the_other_partner_made_up() -> Result<()> {
    let dir = tempfile::tempdir()?;
    let relay = Relay::start(dir.path()).await?;
    let (a, b) = couple(dir.path(), &relay).await?;
    a.with(|j| j.add(share("written by Alex")))?;
    a.sync().await?;
    b.sync().await?;
    let alex = a.read(|j| Ok(j.me()))?;
    let held = b.with(|j| j.document(mend_core::Space::Couple))?;
    let first = made_up_first(&held, 1, true)?;
    push_unsigned(dir.path(), &relay, &b, alex, &[first], |_| Ok(Vec::new())).await?;

    let path = a.path.clone();
    let restored = reinstall(a, &relay).await?;
    ensure!(
        restored.read(|j| j.epoch())? == 0,
        "the restore took the made-up epoch"
    );
    still_reaches(&restored, &b).await?;
    let restored = reinstall_from_an_older_keyring(restored, &path, &relay).await?;
    ensure!(
        restored.read(|j| j.epoch())? == 0,
        "the restore from an older keyring took the made-up epoch"
    );
    still_reaches(&restored, &b).await?;
    relay.stop().await
}

/// The same made-up first change, but signed by the other partner's own device and empty, so
/// every rule about what a partner may write lets it through: devices refuse a change under
/// an epoch's actor from anyone (it is no one's to sign), so Alex's devices never build on
/// it, and Alex's restore stays in epoch 0.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_restore_does_not_take_an_epoch_the_other_partner_signed_into_the_history() -> Result<()>
{
    use automerge::ReadDoc;
    let dir = tempfile::tempdir()?;
    let relay = Relay::start(dir.path()).await?;
    let (a, b) = couple(dir.path(), &relay).await?;
    let first = made_up_first(&b.with(|j| j.document(mend_core::Space::Couple))?, 1, false)?;

    // Blake's device signs and pushes it with its next batch.
    let (b_path, b_keyring) = (b.path.clone(), b.device.keyring());
    b.device.close().await?;
    rusqlite::Connection::open(&b_path)?.execute(
        "INSERT INTO unsent (space, bytes) VALUES ('couple', ?1)",
        [&first],
    )?;
    let b = mend_e2e::Phone::reopen(&b_path, b_keyring, &relay)?;
    b.sync().await?;
    // Alex's phone hears it, writes, and syncs.
    a.sync().await?;
    a.with(|j| j.add(share("written by Alex after")))?;
    a.sync().await?;
    let first_hash = automerge::Change::try_from(first.as_slice())?.hash();
    let alex_holds =
        automerge::Automerge::load(&a.with(|j| j.document(mend_core::Space::Couple))?)?;
    ensure!(
        alex_holds.get_change_by_hash(&first_hash).is_none(),
        "Alex's phone took a change under an epoch's actor"
    );

    let restored = reinstall(a, &relay).await?;
    ensure!(
        restored.read(|j| j.epoch())? == 0,
        "the restore took the epoch the other partner signed in"
    );
    still_reaches(&restored, &b).await?;
    relay.stop().await
}

/// In a journal past its first epoch, whoever holds the couple's secret pushes first changes
/// of three later epochs that never began, to crowd out the real one. The restore tries the
/// first change most of the history was built on first, and lands in the real epoch.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn made_up_epochs_do_not_crowd_out_the_real_one() -> Result<()> {
    let dir = tempfile::tempdir()?;
    let relay = Relay::start(dir.path()).await?;
    let (a, b) = couple(dir.path(), &relay).await?;
    a.device.forget(ROUND).await?;
    b.device.sync_round(ROUND).await?;
    ensure!(b.read(|j| j.epoch())? == 1, "Blake did not move");
    let kept = b.with(|j| j.add(share("written in epoch 1")))?;
    b.sync().await?;
    a.sync().await?;

    let held = b.with(|j| j.document(mend_core::Space::Couple))?;
    let firsts = [5, 6, 7]
        .into_iter()
        .map(|epoch| made_up_first(&held, epoch, false))
        .collect::<Result<Vec<_>>>()?;
    let blake = b.read(|j| Ok(j.me()))?;
    push_unsigned(dir.path(), &relay, &b, blake, &firsts, |_| Ok(Vec::new())).await?;

    let path = a.path.clone();
    let restored = reinstall(a, &relay).await?;
    ensure!(restored.read(|j| j.epoch())? == 1, "not in the real epoch");
    ensure!(
        restored.read(|j| j.get(kept)).is_ok(),
        "the epoch's words are missing"
    );
    // A keyring from before keyrings named their epoch: the first change most history was
    // built on is tried first.
    let restored = reinstall_from_an_older_keyring(restored, &path, &relay).await?;
    ensure!(
        restored.read(|j| j.epoch())? == 1,
        "not in the real epoch from an older keyring"
    );
    ensure!(restored.read(|j| j.get(kept)).is_ok());
    relay.stop().await
}

/// Made-up epochs with more history after them than the real one, more of them than a restore
/// tries: the keyring names its epoch, so the restore goes straight to the real one.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn made_up_epochs_with_more_history_do_not_crowd_out_the_one_the_keyring_names() -> Result<()>
{
    let dir = tempfile::tempdir()?;
    let relay = Relay::start(dir.path()).await?;
    let (a, b) = couple(dir.path(), &relay).await?;
    a.device.forget(ROUND).await?;
    b.device.sync_round(ROUND).await?;
    ensure!(b.read(|j| j.epoch())? == 1, "Blake did not move");
    let kept = b.with(|j| j.add(share("written in epoch 1")))?;
    b.sync().await?;
    a.sync().await?;

    let held = b.with(|j| j.document(mend_core::Space::Couple))?;
    let mut branches = Vec::new();
    for epoch in 5..10 {
        branches.extend(made_up_branch(&held, epoch, 40)?);
    }
    let blake = b.read(|j| Ok(j.me()))?;
    push_unsigned(dir.path(), &relay, &b, blake, &branches, |_| Ok(Vec::new())).await?;

    let restored = reinstall(a, &relay).await?;
    ensure!(restored.read(|j| j.epoch())? == 1, "not in the real epoch");
    ensure!(
        restored.read(|j| j.get(kept)).is_ok(),
        "the epoch's words are missing"
    );
    still_reaches(&restored, &b).await?;
    relay.stop().await
}

/// A keyring from before keyrings named their epoch, whose journal the relay shows in no later
/// epoch: the restore lands in epoch 0, and names it in the keyring only when this partner's
/// own work there shows it is theirs. Blake's phone joined, but none of its pushes to the
/// couple's space reached the relay, so nothing there shows the epoch is Blake's: the restored
/// keyring leaves it unknown, for a later restore to work out again, rather than writing down a
/// guess that every later restore would trust.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_older_keyring_names_its_epoch_only_when_own_work_shows_it() -> Result<()> {
    let dir = tempfile::tempdir()?;
    let relay = Relay::start_plain(dir.path()).await?;
    let a = mend_e2e::Phone::create(dir.path(), "a.db", "Alex", &relay)?;
    a.sync().await?;
    let b = mend_e2e::Phone::pair(
        dir.path(),
        "b.db",
        &a,
        mend_core::crypto::PairingKind::Partner,
        false,
        "Blake",
        &relay,
    )
    .await?;
    let couple_space = hex::encode(a.device.keyring().couple.derive_space_id());
    let pushes: &'static [u8] = Box::leak(
        format!("POST /v1/spaces/{couple_space}/chunks")
            .into_bytes()
            .into_boxed_slice(),
    );
    let proxy = mend_e2e::StallingProxy::dropping(relay.addr, pushes).await?;
    let b = b.through(&proxy.url(), &relay).await?;
    b.with(|j| j.add(share("never reaches the relay")))?;
    let _ = b.device.sync_round(std::time::Duration::from_secs(3)).await;
    let older = |phone: &Device| mend_core::Keyring {
        epoch: mend_core::KeyringEpoch::Unknown,
        relay_url: relay.url(),
        ..phone.keyring()
    };

    // Alex's own work shows: the restored keyring names epoch 0.
    let (a_keyring, a_path) = (older(&a.device), a.path.clone());
    a.device.close().await?;
    lose(&a_path);
    let restored = Device::restore(&a_path, a_keyring, ROUND, opts(), relay.trust(), None).await?;
    ensure!(restored.keyring().epoch == mend_core::KeyringEpoch::Known(None));
    restored.close().await?;

    let (b_keyring, b_path) = (older(&b.device), b.path.clone());
    b.device.close().await?;
    lose(&b_path);
    let restored = Device::restore(&b_path, b_keyring, ROUND, opts(), relay.trust(), None).await?;
    ensure!(restored.read(|j| j.epoch())? == 0);
    ensure!(
        restored.keyring().epoch == mend_core::KeyringEpoch::Unknown,
        "the guess was written into the keyring: {:?}",
        restored.keyring().epoch
    );
    restored.close().await?;
    relay.stop().await
}

/// Blake's phone follows Alex into a new epoch, but nothing it pushes there reaches the relay
/// (the phone is lost right after), so nothing in the relay's copy of the epoch shows Blake's
/// own devices built on it. Blake's restore still lands in that epoch (the keyring names it)
/// and reads what Alex wrote there, where working the epoch out from the relay's copy refused
/// to restore at all.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_partner_whose_work_in_the_new_epoch_never_reached_the_relay_restores_into_it()
-> Result<()> {
    let dir = tempfile::tempdir()?;
    // In the clear, so the proxy can read which requests push to the new epoch's space.
    let relay = Relay::start_plain(dir.path()).await?;
    let (a, b) = couple(dir.path(), &relay).await?;
    a.device.forget(ROUND).await?;
    let new_space = hex::encode(a.device.keyring().couple.derive_space_id());
    let pushes: &'static [u8] = Box::leak(
        format!("POST /v1/spaces/{new_space}/chunks")
            .into_bytes()
            .into_boxed_slice(),
    );
    let proxy = mend_e2e::StallingProxy::dropping(relay.addr, pushes).await?;
    let b = b.through(&proxy.url(), &relay).await?;
    // The round moves and then fails to push.
    let _ = b.device.sync_round(ROUND).await;
    ensure!(b.read(|j| j.epoch())? == 1, "Blake did not move");
    let start = b.read(|j| j.epoch_start())?;
    let mut keyring = b.device.keyring();
    ensure!(keyring.epoch == mend_core::KeyringEpoch::Known(start));
    keyring.relay_url = relay.url();
    let written = a.with(|j| j.add(share("written by Alex in epoch 1")))?;
    a.sync().await?;

    let path = b.path.clone();
    b.device.close().await?;
    lose(&path);
    let restored = Device::restore(&path, keyring, ROUND, opts(), relay.trust(), None).await?;
    ensure!(
        restored.read(|j| j.epoch_start())? == start,
        "restored outside the epoch"
    );
    ensure!(
        restored.read(|j| j.get(written)).is_ok(),
        "the restored phone does not read what Alex wrote in the epoch"
    );
    let after = restored.write(|j| j.add(share("written after the restore")))?;
    ensure!(!restored.sync_now(ROUND).await?.syncing);
    a.sync().await?;
    ensure!(
        a.read(|j| j.get(after)).is_ok(),
        "what Blake wrote after the restore never reached Alex"
    );
    relay.stop().await
}
