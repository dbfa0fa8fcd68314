//! Rollups end to end over a real mend-relay (TLS, 127.0.0.1): a partner back from a weekend
//! catches up through a few rollups, over a relay restarted between them, on both paths; and
//! rollups made while the other partner's pushes and reads go on converge.

use std::time::Duration;

use anyhow::{Result, ensure};
use mend_core::{Body, RecordId, Space, model::HonestyMoment, sync::ProblemKind};
use mend_e2e::{Phone, Relay};

fn moment(text: String) -> Body {
    Body::HonestyMoment(HonestyMoment {
        text,
        ..Default::default()
    })
}

/// `n` edits by `phone`, each pushed in a round of its own.
async fn edits(phone: &Phone, n: usize, tag: &str) -> Result<Vec<RecordId>> {
    let mut ids = Vec::new();
    for k in 0..n {
        ids.push(phone.with(|j| j.add(moment(format!("{tag} {k}"))))?);
        phone.sync().await?;
    }
    Ok(ids)
}

fn holds_all(phone: &Phone, ids: &[RecordId]) -> Result<bool> {
    phone.read(|j| Ok(ids.iter().all(|id| j.get(*id).is_ok())))
}

fn problems(phone: &Phone) -> Result<Vec<ProblemKind>> {
    Ok(phone
        .read(|j| j.sync_summary())?
        .problems
        .into_iter()
        .map(|p| p.kind)
        .collect())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_partner_back_from_a_weekend_catches_up_through_rollups_over_a_restarted_relay()
-> Result<()> {
    let dir = tempfile::tempdir()?;
    let data = dir.path().join("relay-data");
    let relay = Relay::start_at(&data).await?;
    let addr = relay.addr;
    let (a, b) = mend_e2e::couple(dir.path(), &relay).await?;
    a.device.client().set_rollup_every(8);
    let mut ids = edits(&a, 24, "before the restart").await?;
    relay.stop().await?;
    let relay = Relay::start_on(&data, addr).await?;
    ids.extend(edits(&a, 24, "after the restart").await?);
    let (stored, _) = relay.rollups();
    ensure!(stored >= 3, "{stored} rollups stored after the restart");

    // B catches up with one bounded round: rollups in place of the chunks they stand for.
    b.sync().await?;
    ensure!(holds_all(&b, &ids)?, "B lacks A's edits after sync_now");
    let (_, rollup_bytes) = relay.rollups();
    ensure!(rollup_bytes > 0, "B read no rollup");
    ensure!(problems(&b)?.is_empty(), "B reported {:?}", problems(&b)?);

    // A second phone of A's partner, never synced, catches up live.
    let c = Phone::join(dir.path(), "c.db", &b.device.device_invite()?, "", &relay)?;
    c.device.start_live()?;
    let mut waited = 0;
    while !holds_all(&c, &ids)? {
        ensure!(
            waited < 600,
            "the live catch-up did not bring A's edits in 30 s"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
        waited += 1;
    }
    c.device.stop_live().await;
    ensure!(problems(&c)?.is_empty(), "C reported {:?}", problems(&c)?);
    let (_, after_live) = relay.rollups();
    ensure!(
        after_live > rollup_bytes,
        "the live backlog served no rollup"
    );
    relay.stop().await?;
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rollups_racing_the_pushes_and_reads_they_cover_converge() -> Result<()> {
    let dir = tempfile::tempdir()?;
    let relay = Relay::start(dir.path()).await?;
    let (a, b) = mend_e2e::couple(dir.path(), &relay).await?;
    a.device.client().set_rollup_every(3);
    b.device.client().set_rollup_every(2);
    // B stays live while A pushes and rolls up in bounded rounds, and B writes too.
    b.device.start_live()?;
    let (from_a, from_b) = tokio::join!(edits(&a, 30, "from A"), async {
        let mut ids = Vec::new();
        for k in 0..15 {
            ids.push(b.with(|j| j.add(moment(format!("from B {k}"))))?);
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        anyhow::Ok(ids)
    });
    let (from_a, from_b) = (from_a?, from_b?);
    let mut waited = 0;
    while !(holds_all(&b, &from_a)? && holds_all(&a, &from_b)?) {
        ensure!(waited < 600, "the partners did not converge in 30 s");
        a.sync().await?;
        tokio::time::sleep(Duration::from_millis(50)).await;
        waited += 1;
    }
    b.device.stop_live().await;
    a.sync().await?;
    b.sync().await?;
    let heads = |p: &Phone| -> Result<Vec<String>> {
        let mut h = p.with(|j| j.heads(Space::Couple))?;
        h.sort();
        Ok(h)
    };
    ensure!(heads(&a)? == heads(&b)?, "the couple's documents differ");
    ensure!(problems(&a)?.is_empty(), "A reported {:?}", problems(&a)?);
    ensure!(problems(&b)?.is_empty(), "B reported {:?}", problems(&b)?);
    let (stored, _) = relay.rollups();
    ensure!(stored >= 10, "only {stored} rollups stored");
    // A fresh device of A reads everything from rollups and the chunks between them.
    let c = Phone::join(dir.path(), "c.db", &a.device.device_invite()?, "", &relay)?;
    c.sync().await?;
    ensure!(
        holds_all(&c, &from_a)? && holds_all(&c, &from_b)?,
        "a new device lacks edits"
    );
    ensure!(problems(&c)?.is_empty(), "C reported {:?}", problems(&c)?);
    relay.stop().await?;
    Ok(())
}
