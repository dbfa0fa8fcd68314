//! A partner who lost every device rejoins through the other partner, over a real relay: the
//! new phone joins as the partner they were (their words stay theirs, and they can still
//! remove them), the journal moves to new secrets, and the lost phone, found again by someone
//! else, reads nothing new and gets nothing in.

use anyhow::{Result, ensure};
use mend_core::{Error, crypto::PairingKind};
use mend_e2e::{Phone, ROUND, Relay, couple, honest, honest_texts};

fn texts(phone: &Phone) -> Result<Vec<String>> {
    honest_texts(&phone.device)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_partner_who_lost_every_device_rejoins_through_the_other() -> Result<()> {
    let dir = tempfile::tempdir()?;
    let relay = Relay::start(dir.path()).await?;
    let (lost, b) = couple(dir.path(), &relay).await?;
    let alex = lost.read(|j| Ok(j.me()))?;
    let owned = lost.with(|j| j.add(honest("Alex, before the phone was lost")))?;
    b.with(|j| j.add(honest("Blake, before")))?;
    for phone in [&lost, &b, &lost] {
        phone.sync().await?;
    }

    // Alex's only phone is gone. Blake asks first: every device of Alex's is shown the ask
    // and could cancel it, and Blake's phone goes ahead only once it has stood the wait.
    let asked = b.device.ask_rejoin()?;
    ensure!(asked.partner == alex, "the ask names {:?}", asked.partner);
    b.sync().await?;
    let refused = b.device.invite(PairingKind::Rejoin, true).await;
    ensure!(
        matches!(&refused, Err(Error::Invalid(m)) if m.contains("72 hours")),
        "the rejoin went ahead before the wait: {:?}",
        refused.map(|_| ())
    );
    // (Were the lost phone on, it would show this; it is in a drawer and says nothing.)
    lost.sync().await?;
    let shown = lost.device.rejoin_asks()?;
    ensure!(
        shown
            .about_me
            .is_some_and(|a| a.cancelled_at.is_none() && a.at == asked.at),
        "Alex's phone is not shown the ask: {shown:?}"
    );
    ensure!(shown.mine.is_none() && !shown.ready, "{shown:?}");
    // The wait passes (this test shortens it) with no cancel.
    b.device.set_rejoin_wait(std::time::Duration::ZERO)?;
    ensure!(b.device.rejoin_asks()?.ready, "the ask is not ready");

    // On a new phone, Alex reads out a short code Blake's phone shows.
    let new = Phone::pair(
        dir.path(),
        "a2.db",
        &b,
        PairingKind::Rejoin,
        true,
        "",
        &relay,
    )
    .await?;
    ensure!(
        b.read(|j| j.epoch())? == 1,
        "Blake's phone did not move first"
    );
    for phone in [&new, &b, &new] {
        phone.sync().await?;
    }
    ensure!(
        new.read(|j| Ok(j.me()))? == alex,
        "Alex came back as someone else"
    );
    ensure!(
        texts(&new)? == ["Alex, before the phone was lost", "Blake, before"],
        "the new phone reads {:?}",
        texts(&new)?
    );

    // Alex writes again, and removes an entry written on the lost phone: both are Alex's.
    let again = new.with(|j| j.add(honest("Alex, on the new phone")))?;
    new.with(|j| j.remove(owned))?;
    b.with(|j| j.add(honest("Blake, after")))?;
    for phone in [&new, &b, &new] {
        phone.sync().await?;
    }
    let seen = b.read(|j| j.records())?;
    ensure!(
        seen.iter().any(|r| r.id == again && r.author == alex),
        "Blake does not see Alex's new entry as Alex's"
    );
    ensure!(
        seen.iter().any(|r| r.id == owned && r.removed),
        "Alex's removal of an entry from the lost phone did not count"
    );
    ensure!(
        texts(&b)? == ["Alex, on the new phone", "Blake, after", "Blake, before"],
        "Blake reads {:?}",
        texts(&b)?
    );
    ensure!(texts(&new)? == texts(&b)?, "not converged");
    let partners = b.read(|j| Ok(j.partners()))?;
    ensure!(partners.len() == 2, "{} partners", partners.len());
    let lost_id = lost.read(|j| Ok(j.device()))?;
    let new_id = new.read(|j| Ok(j.device()))?;
    let alex_devices: Vec<_> = partners
        .iter()
        .filter(|p| p.id == alex)
        .flat_map(|p| p.devices.iter().map(|d| d.id))
        .collect();
    ensure!(
        alex_devices == [new_id],
        "Alex's devices as Blake sees them: {alex_devices:?} (lost {lost_id:?})"
    );

    // The lost phone, found and opened by someone else: told it was removed, it reads nothing
    // written since, and nothing written on it arrives.
    let refused = lost.device.sync_now(ROUND).await;
    ensure!(
        matches!(&refused, Err(Error::DeviceRemoved(m)) if m.contains("as you")
            && m.contains("before this device had been shown the ask for 36 hours")),
        "the lost phone was not told: {refused:?}"
    );
    ensure!(
        !texts(&lost)?
            .iter()
            .any(|t| t.contains("after") || t.contains("new phone")),
        "the lost phone reads the new epoch"
    );
    // Opened again (an app restarted), it still shows no ask and cancels nothing: its
    // journal holds the rejoin.
    let lost_path = lost.path.clone();
    let lost_keyring = lost.device.keyring();
    drop(lost);
    let lost = Phone::reopen(&lost_path, lost_keyring, &relay)?;
    ensure!(
        lost.device.rejoin_asks()?.about_me.is_none(),
        "the replaced phone still offers to cancel"
    );
    let late = lost.device.cancel_rejoin();
    ensure!(
        matches!(&late, Err(Error::Invalid(m)) if m.contains("already came in as you")),
        "{late:?}"
    );
    lost.with(|j| j.add(honest("from the found phone")))?;
    let _ = lost.device.sync_now(ROUND).await;
    for phone in [&b, &new] {
        phone.sync().await?;
        ensure!(
            !texts(phone)?.iter().any(|t| t == "from the found phone"),
            "the found phone's entry arrived"
        );
    }

    // Devices paired later in this epoch read it from its start: Blake's tablet and Alex's
    // second new device both take Alex's new key as Alex's, and what they write arrives.
    let tablet = Phone::pair(
        dir.path(),
        "bt.db",
        &b,
        PairingKind::Device,
        false,
        "",
        &relay,
    )
    .await?;
    let second = Phone::pair(
        dir.path(),
        "a3.db",
        &new,
        PairingKind::Device,
        false,
        "",
        &relay,
    )
    .await?;
    let from_second = second.with(|j| j.add(honest("Alex, on a second new device")))?;
    for phone in [&second, &tablet, &new, &b, &tablet, &second] {
        phone.sync().await?;
    }
    for phone in [&tablet, &second, &b, &new] {
        ensure!(
            texts(phone)?
                == [
                    "Alex, on a second new device",
                    "Alex, on the new phone",
                    "Blake, after",
                    "Blake, before"
                ],
            "a device reads {:?}",
            texts(phone)?
        );
        ensure!(
            phone
                .read(|j| j.records())?
                .iter()
                .any(|r| r.id == from_second && r.author == alex),
            "the second new device's entry is not Alex's"
        );
    }
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_rejoin_needs_the_other_partner_and_a_pairing() -> Result<()> {
    let dir = tempfile::tempdir()?;
    let relay = Relay::start(dir.path()).await?;
    // Alone in the journal: there is nobody to rejoin.
    let alone = Phone::create(dir.path(), "alone.db", "Sam", &relay)?;
    alone.sync().await?;
    let refused = alone.device.invite(PairingKind::Rejoin, false).await;
    ensure!(
        matches!(&refused, Err(Error::Invalid(m)) if m.contains("partner")),
        "{refused:?}"
    );
    // A partner cannot rejoin themselves from a device they still hold.
    let (a, b) = couple(dir.path(), &relay).await?;
    for phone in [&a, &b] {
        phone.device.ask_rejoin()?;
        phone.device.set_rejoin_wait(std::time::Duration::ZERO)?;
    }
    let me = a.read(|j| Ok(j.me()))?;
    let key = mend_core::crypto::PartnerIdentity::generate()?.public();
    let refused = a.with(|j| j.rotate_for_rejoin(me, key));
    ensure!(refused.is_err(), "a partner vouched for themselves");
    // Nor can the key a partner already has (their lost phones') be vouched for again.
    let theirs = a
        .device
        .keyring()
        .identity
        .map(|i| i.public())
        .ok_or_else(|| anyhow::anyhow!("no identity"))?;
    let refused = b.with(|j| j.rotate_for_rejoin(me, theirs));
    ensure!(refused.is_err(), "the lost key was vouched for again");
    Ok(())
}

/// The rejoined partner's new phone is later reinstalled: its keyring alone restores it, as
/// the partner it is, in the epoch the rejoin started.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_rejoined_partner_restores_from_the_keyring() -> Result<()> {
    let dir = tempfile::tempdir()?;
    let relay = Relay::start(dir.path()).await?;
    let (lost, b) = couple(dir.path(), &relay).await?;
    let alex = lost.read(|j| Ok(j.me()))?;
    lost.with(|j| j.add(honest("Alex, before")))?;
    lost.sync().await?;
    b.sync().await?;
    b.device.ask_rejoin()?;
    b.device.set_rejoin_wait(std::time::Duration::ZERO)?;
    let new = Phone::pair(
        dir.path(),
        "a2.db",
        &b,
        PairingKind::Rejoin,
        false,
        "",
        &relay,
    )
    .await?;
    new.with(|j| j.add(honest("Alex, on the new phone")))?;
    for phone in [&new, &b, &new] {
        phone.sync().await?;
    }
    let keyring = new.device.keyring();
    let path = new.path.clone();
    new.device.close().await?;
    for suffix in ["", "-wal", "-shm", ".lock"] {
        let _ = std::fs::remove_file(format!("{}{suffix}", path.display()));
    }
    let restored =
        mend_client::Device::restore(&path, keyring, ROUND, mend_e2e::opts(), relay.trust(), None)
            .await?;
    ensure!(
        restored.read(|j| Ok(j.me()))? == alex,
        "restored as someone else"
    );
    let status = restored.sync_now(ROUND).await?;
    ensure!(!status.syncing, "{status:?}");
    let seen = honest_texts(&restored)?;
    ensure!(
        seen == ["Alex, before", "Alex, on the new phone"],
        "restored reads {seen:?} ({:?})",
        status.problems
    );
    Ok(())
}

/// Alex still has a phone: Blake's ask shows on it, Alex cancels, and Blake's phone will not
/// let a new device in as Alex, whatever its wait, until Blake asks again.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_partner_who_still_has_a_device_cancels_the_rejoin() -> Result<()> {
    let dir = tempfile::tempdir()?;
    let relay = Relay::start(dir.path()).await?;
    let (a, b) = couple(dir.path(), &relay).await?;
    let alex = a.read(|j| Ok(j.me()))?;
    // Nothing to cancel yet.
    let nothing = a.device.cancel_rejoin();
    ensure!(matches!(&nothing, Err(Error::Invalid(_))), "{nothing:?}");
    b.device.ask_rejoin()?;
    b.sync().await?;
    a.sync().await?;
    let shown = a.device.rejoin_asks()?.about_me;
    ensure!(
        shown.is_some_and(|ask| ask.partner == alex && ask.cancelled_at.is_none()),
        "Alex's phone is not shown the ask: {shown:?}"
    );
    a.device.cancel_rejoin()?;
    a.sync().await?;
    // Blake's phone has not synced since the cancel reached the relay: the rejoin fetches it
    // before it goes ahead.
    b.device.set_rejoin_wait(std::time::Duration::ZERO)?;
    ensure!(
        b.device.rejoin_asks()?.ready,
        "the ask is not ready before the sync"
    );
    let refused = b.device.invite(PairingKind::Rejoin, true).await;
    ensure!(
        matches!(&refused, Err(Error::Invalid(m)) if m.contains("cancelled")),
        "a cancelled ask let a rejoin go ahead: {:?}",
        refused.map(|_| ())
    );
    let mine = b.device.rejoin_asks()?;
    ensure!(
        mine.mine.is_some_and(|ask| ask.cancelled_at.is_some()) && !mine.ready,
        "Blake's phone does not see the cancel: {mine:?}"
    );
    // Asking again shows again on Alex's phone.
    b.device.ask_rejoin()?;
    b.sync().await?;
    a.sync().await?;
    ensure!(
        a.device
            .rejoin_asks()?
            .about_me
            .is_some_and(|ask| ask.cancelled_at.is_none()),
        "the new ask is not shown"
    );
    ensure!(b.device.rejoin_asks()?.ready, "the new ask is not ready");
    ensure!(
        b.read(|j| j.epoch())? == 0 && a.read(|j| j.epoch())? == 0,
        "the journal moved"
    );
    Ok(())
}

/// The invite opened while the ask stood; Alex cancels while the new phone pairs: accepting
/// fetches the cancel first and moves nothing.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_cancel_that_comes_while_the_new_phone_pairs_stops_the_rejoin() -> Result<()> {
    let dir = tempfile::tempdir()?;
    let relay = Relay::start(dir.path()).await?;
    let (a, b) = couple(dir.path(), &relay).await?;
    b.device.ask_rejoin()?;
    b.sync().await?;
    a.sync().await?;
    b.device.set_rejoin_wait(std::time::Duration::ZERO)?;
    let mut invitation = b.device.invite(PairingKind::Rejoin, true).await?;
    let code = invitation.code().to_owned();
    let hosting = async {
        let joiner = invitation.wait_for_joiner(ROUND).await?;
        anyhow::ensure!(joiner.is_some(), "nobody joined");
        a.device.cancel_rejoin()?;
        a.sync().await?;
        let refused = b.device.welcome(invitation, ROUND).await;
        anyhow::ensure!(
            matches!(&refused, Err(Error::Invalid(m)) if m.contains("cancelled")),
            "the rejoin went ahead past a cancel: {refused:?}"
        );
        anyhow::Ok(())
    };
    let (hosted, joined) = tokio::join!(
        hosting,
        Phone::join_code(dir.path(), "a2.db", &code, "", &relay)
    );
    hosted?;
    ensure!(joined.is_err(), "the new phone got in");
    ensure!(b.read(|j| j.epoch())? == 0, "Blake's phone moved");
    a.sync().await?;
    ensure!(a.read(|j| j.epoch())? == 0, "Alex's phone was shut out");
    Ok(())
}

/// Alex's phone runs live sync alone: an ask that live sync brings is noted as shown then, as
/// a round would note it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn live_sync_notes_when_an_ask_is_shown() -> Result<()> {
    let dir = tempfile::tempdir()?;
    let relay = Relay::start(dir.path()).await?;
    let (a, b) = couple(dir.path(), &relay).await?;
    a.device.start_live()?;
    b.device.ask_rejoin()?;
    b.sync().await?;
    let mut shown = None;
    for _ in 0..300 {
        shown = a
            .device
            .rejoin_asks()?
            .about_me
            .and_then(|ask| ask.shown_at);
        if shown.is_some() {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
    ensure!(shown.is_some(), "live sync did not note the ask as shown");
    a.device.stop_live().await;
    Ok(())
}
