//! A lost device removed over a real relay: it can no longer read what is written after, says
//! so, and nothing it writes arrives; the other partner, offline meanwhile, catches up with
//! the new epoch and keeps what it wrote, even with a keyring its app did not store again.

use anyhow::{Result, ensure};
use mend_core::{Body, Error, crypto::PairingKind, model::HonestyMoment};
use mend_e2e::{Phone, ROUND, Relay, couple};

fn honest(text: &str) -> Body {
    Body::HonestyMoment(HonestyMoment {
        text: text.into(),
        ..Default::default()
    })
}

fn texts(phone: &Phone) -> Result<Vec<String>> {
    let mut out: Vec<String> = phone
        .read(|j| j.records())?
        .into_iter()
        .filter_map(|r| match r.body {
            Body::HonestyMoment(h) => Some(h.text),
            _ => None,
        })
        .collect();
    out.sort();
    Ok(out)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_lost_tablet_is_shut_out_while_the_partner_is_away_and_writing() -> Result<()> {
    let dir = tempfile::tempdir()?;
    let relay = Relay::start(dir.path()).await?;
    let (a, b) = couple(dir.path(), &relay).await?;
    let tablet = Phone::pair(
        dir.path(),
        "t.db",
        &a,
        PairingKind::Device,
        false,
        "",
        &relay,
    )
    .await?;
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
    let new = Phone::pair(
        dir.path(),
        "n.db",
        &b,
        PairingKind::Device,
        false,
        "",
        &relay,
    )
    .await?;
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
