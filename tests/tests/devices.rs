//! Devices you can see: Alex with a phone and a tablet, Blake with a phone. After syncing,
//! every device lists the same three, each under its partner with the name it chose, and
//! when the relay last served it; with the relay gone the listing still answers.

use std::time::Duration;

use anyhow::{Result, ensure};
use mend_core::crypto::PairingKind;
use mend_e2e::{Phone, ROUND, Relay, couple};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn each_partner_sees_every_device_with_its_owner_name_and_last_seen() -> Result<()> {
    let dir = tempfile::tempdir()?;
    let relay = Relay::start(dir.path()).await?;
    let (alex, blake) = couple(dir.path(), &relay).await?;
    alex.device.set_device_name("Alex's phone")?;
    blake.device.set_device_name("  Blake's phone ")?;
    let tablet = Phone::pair(
        dir.path(),
        "tablet.db",
        &alex,
        PairingKind::Device,
        false,
        "",
        &relay,
    )
    .await?;
    // Chosen before its first sync: written once its certificate is in the document.
    tablet.device.set_device_name("Alex's tablet")?;
    for _ in 0..3 {
        for phone in [&alex, &tablet, &blake] {
            phone.sync().await?;
        }
    }

    let (a, b) = (alex.read(|j| Ok(j.me()))?, blake.read(|j| Ok(j.me()))?);
    let ids = |p: &Phone| p.read(|j| Ok(j.device()));
    let expected = [
        (a, "Alex", ids(&alex)?, "Alex's phone"),
        (a, "Alex", ids(&tablet)?, "Alex's tablet"),
        (b, "Blake", ids(&blake)?, "Blake's phone"),
    ];
    for phone in [&alex, &tablet, &blake] {
        let me = phone.read(|j| Ok((j.me(), j.device())))?;
        let listed = phone.device.devices(ROUND).await?;
        let mut seen: Vec<_> = listed
            .iter()
            .map(|d| {
                (
                    d.info.partner,
                    d.info.partner_name.as_str(),
                    d.info.id,
                    d.info.name.as_deref().unwrap_or(""),
                )
            })
            .collect();
        // This partner's devices come first.
        ensure!(listed.first().is_some_and(|d| d.info.mine), "{listed:?}");
        seen.sort_by_key(|d| (d.1, d.2));
        let mut want = expected.to_vec();
        want.sort_by_key(|d| (d.1, d.2));
        ensure!(seen == want, "{seen:?}");
        for d in &listed {
            ensure!(d.info.mine == (d.info.partner == me.0));
            ensure!(d.info.this_device == (d.info.id == me.1));
            // Every device synced: the relay served each, and keeps the hour only.
            let last = d
                .last_seen
                .ok_or_else(|| anyhow::anyhow!("no last seen: {d:?}"))?;
            ensure!(last % 3600 == 0 && last > 1_700_000_000, "{last}");
        }
    }

    // Without the relay, the journal's part of the listing still answers.
    relay.stop().await?;
    let offline = alex.device.devices(Duration::from_secs(2)).await?;
    ensure!(offline.len() == 3, "{offline:?}");
    ensure!(offline.iter().all(|d| d.last_seen.is_none()), "{offline:?}");
    Ok(())
}
