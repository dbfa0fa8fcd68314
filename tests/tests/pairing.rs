//! Pairing through the relay's mailbox, as outsiders would try it: an invite used twice, an
//! invite past its ten minutes, and a third person trying every way into a couple's journal.

use std::time::Duration;

use anyhow::{Result, ensure};
use mend_core::{
    Body, Error,
    crypto::{PairingFailure, PairingKind},
    model::HonestyMoment,
};
use mend_e2e::{Phone, ROUND, Relay, couple};

fn failure(result: mend_core::Result<Phone>) -> Option<PairingFailure> {
    match result {
        Err(Error::Pairing(failure)) => Some(failure),
        _ => None,
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_invite_works_once_and_only_after_the_host_accepts() -> Result<()> {
    let dir = tempfile::tempdir()?;
    let relay = Relay::start(dir.path()).await?;
    let a = Phone::create(dir.path(), "a.db", "Alex", &relay)?;
    a.sync().await?;
    let note = a.with(|j| {
        j.add(Body::HonestyMoment(HonestyMoment {
            text: "written before Blake joined".into(),
            ..Default::default()
        }))
    })?;
    a.sync().await?;

    let mut invitation = a.device.invite(PairingKind::Partner, false).await?;
    let code = invitation.code().to_owned();
    ensure!(code.starts_with("MEND4-"), "not an invite: {code}");
    // Nothing has been handed over yet: the code alone holds no key of the journal.
    let keyring = a.device.keyring().to_secret_string();
    ensure!(!keyring.contains(&code[6..]));

    // Blake's device says whose journal it joins and shows words Alex's device shows too.
    let trust = relay.trust();
    let (asked, joining) = tokio::join!(
        invitation.wait_for_joiner(ROUND),
        mend_client::Device::start_join(&code, "Blake", None, &trust, ROUND)
    );
    let joiner = asked?.ok_or_else(|| anyhow::anyhow!("nobody joined"))?;
    let joining = joining?;
    ensure!(joiner.name == "Blake" && joiner.kind == PairingKind::Partner);
    ensure!(joining.inviter() == "Alex" && joining.kind() == PairingKind::Partner);
    ensure!(
        joiner.confirmation == joining.confirmation()
            && joining.confirmation().split(' ').count() == 3,
        "the words differ: {} / {}",
        joiner.confirmation,
        joining.confirmation()
    );
    let path = dir.path().join("b.db");
    let (hosted, joined) = tokio::join!(
        invitation.accept(),
        joining.finish(&path, mend_e2e::opts(), relay.trust(), None)
    );
    hosted?;
    let b = Phone {
        device: joined?,
        recorder: std::sync::Arc::default(),
        path,
    };
    b.sync().await?;
    a.sync().await?;
    ensure!(
        b.read(|j| j.get(note))?.id == note,
        "Blake cannot read the journal"
    );
    ensure!(a.read(|j| Ok(j.partner().map(|p| p.name)))? == Some("Blake".into()));

    // The same invite again, from anyone: refused at the relay, and nothing is left behind.
    let again = Phone::join_code(dir.path(), "c.db", &code, "Carol", &relay).await;
    ensure!(failure(again) == Some(PairingFailure::Used));
    ensure!(
        !dir.path().join("c.db").exists(),
        "a refused join left a journal"
    );
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_invite_past_its_time_is_refused_on_both_sides() -> Result<()> {
    let dir = tempfile::tempdir()?;
    let relay = Relay::start_with(dir.path(), |c| {
        // Whole seconds: a mailbox opened late in a second lives less than its TTL, so two
        // give the host at least one to post its first message on a loaded machine.
        c.limits.pairing_ttl = Duration::from_secs(2);
    })
    .await?;
    let a = Phone::create(dir.path(), "a.db", "Alex", &relay)?;
    for short in [false, true] {
        let mut invitation = a.device.invite(PairingKind::Partner, short).await?;
        let code = invitation.code().to_owned();
        // Bounded: the mailbox expires two seconds after it opened.
        let past = invitation.expires_at().saturating_add(1);
        while mend_client::unix_now() < past {
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        let late = Phone::join_code(dir.path(), "b.db", &code, "Blake", &relay).await;
        ensure!(
            failure(late) == Some(PairingFailure::Expired),
            "a late join was not refused as expired"
        );
        ensure!(!dir.path().join("b.db").exists());
        let waited = invitation.wait_for_joiner(Duration::from_secs(2)).await;
        ensure!(
            matches!(waited, Err(Error::Pairing(PairingFailure::Expired))),
            "the host was not told: {waited:?}"
        );
    }
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_third_person_finds_no_way_into_the_couple() -> Result<()> {
    let dir = tempfile::tempdir()?;
    let relay = Relay::start(dir.path()).await?;
    let (a, b) = couple(dir.path(), &relay).await?;

    // 0. No partner invite once the partner has joined: a second partner would be refused
    //    everywhere, yet read the couple's space unseen.
    let again = a.device.invite(PairingKind::Partner, false).await;
    ensure!(
        matches!(&again, Err(Error::Invalid(m)) if m.contains("already joined")),
        "a partner invite was opened: {:?}",
        again.map(|i| i.kind())
    );

    // 1. A photographed invite, redeemed before the device it was for: the host sees a join it
    //    did not expect and declines. Carol gets nothing; the invite is then found used.
    let mut invitation = a.device.invite(PairingKind::Device, false).await?;
    let code = invitation.code().to_owned();
    let hosting = async {
        let joiner = invitation.wait_for_joiner(ROUND).await?;
        // A device of Alex's own joins with no name: Alex, who started none, declines.
        ensure!(joiner.is_some_and(|j| j.kind == PairingKind::Device));
        invitation.decline().await?;
        anyhow::Ok(())
    };
    let (hosted, stolen) = tokio::join!(
        hosting,
        Phone::join_code(dir.path(), "c.db", &code, "Carol", &relay)
    );
    hosted?;
    ensure!(failure(stolen) == Some(PairingFailure::Declined));
    ensure!(!dir.path().join("c.db").exists());
    let late = Phone::join_code(dir.path(), "c.db", &code, "Carol", &relay).await;
    ensure!(failure(late) == Some(PairingFailure::Used));

    // 2. A guessed short code: one guess, and the code is burned for everyone. The host says
    //    someone tried the wrong words.
    let mut invitation = a.device.invite(PairingKind::Device, true).await?;
    let code = invitation.code().to_owned();
    let (number, words) = code.split_once('-').unwrap_or_default();
    let guess = if words == "acorn-acorn" {
        format!("{number}-zebra-zebra")
    } else {
        format!("{number}-acorn-acorn")
    };
    let (hosted, guessed) = tokio::join!(
        invitation.wait_for_joiner(ROUND),
        Phone::join_code(dir.path(), "c.db", &guess, "Carol", &relay)
    );
    ensure!(failure(guessed) == Some(PairingFailure::WrongCode));
    ensure!(
        matches!(hosted, Err(Error::Pairing(PairingFailure::Burned))),
        "the host was not told: {hosted:?}"
    );
    let right_too_late = Phone::join_code(dir.path(), "c.db", &code, "Carol", &relay).await;
    ensure!(failure(right_too_late) == Some(PairingFailure::Used));
    ensure!(!dir.path().join("c.db").exists());

    // 3. A mailbox number tried blind, or one that never existed: unknown to the relay.
    let blind = Phone::join_code(dir.path(), "c.db", "999999-acorn-acorn", "Carol", &relay).await;
    ensure!(failure(blind) == Some(PairingFailure::Unknown));

    // 4. The couple's secret itself, leaked (as a code from an older app carried it): Carol
    //    can open the space, but the partners' journals refuse a third partner and all she
    //    writes.
    let leaked = a.device.partner_invite()?;
    let c = Phone::join(dir.path(), "c.db", &leaked, "Carol", &relay)?;
    c.with(|j| {
        j.add(Body::HonestyMoment(HonestyMoment {
            text: "a third voice".into(),
            ..Default::default()
        }))
    })?;
    let _ = c.sync().await;
    for phone in [&a, &b, &a] {
        let _ = phone.sync().await;
    }
    for (who, phone) in [("Alex", &a), ("Blake", &b)] {
        let partners = phone.read(|j| Ok(j.partners()))?;
        ensure!(
            partners.len() == 2,
            "{who} lists {} partners",
            partners.len()
        );
        ensure!(
            partners.iter().all(|p| p.name != "Carol"),
            "{who} lists Carol"
        );
        let records = phone.read(|j| j.records())?;
        ensure!(
            !records
                .iter()
                .any(|r| matches!(&r.body, Body::HonestyMoment(n) if n.text == "a third voice")),
            "{who} shows Carol's words"
        );
    }
    Ok(())
}
