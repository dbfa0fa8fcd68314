//! Epochs under the simulation: a lost device is shut out by a rotation while the other
//! partner is offline and writing, and a "forget" rotation leaves a removed record's words in
//! no device's database.

mod sim;

use anyhow::{Result, ensure};
use mend_core::{Body, journal::Reason, model::Share};
use sim::Sim;

fn share(text: &str) -> Body {
    Body::Share(Share {
        feeling: text.into(),
        tough_question: false,
    })
}

fn feelings(sim: &Sim, d: usize) -> Result<Vec<String>> {
    let mut out: Vec<String> = sim.devices[d]
        .journal()
        .records()?
        .into_iter()
        .filter_map(|r| match r.body {
            Body::Share(s) => Some(s.feeling),
            _ => None,
        })
        .collect();
    out.sort();
    Ok(out)
}

#[test]
fn a_lost_device_is_shut_out_and_an_offline_partner_keeps_what_it_wrote() -> Result<()> {
    // Alex's phone (0) and lost tablet (1); Blake's phone (2).
    let mut sim = Sim::new(21, 2, 1, 1_000)?;
    sim.settle()?;
    sim.devices[0].journal_mut().add(share("before"))?;
    sim.devices[1].journal_mut().add(share("from the tablet"))?;
    sim.settle()?;
    ensure!(
        feelings(&sim, 1)? == ["before", "from the tablet"],
        "the tablet had synced"
    );

    // Blake is away and writes; Alex removes the tablet meanwhile.
    sim.devices[2].offline = true;
    sim.devices[2]
        .journal_mut()
        .add(share("written while apart"))?;
    sim.rotate(0, Reason::RemoveDevices, &[1])?;
    for _ in 0..4 {
        sim.round_of(0)?;
    }
    ensure!(sim.devices[0].journal().epoch()? == 1, "Alex's phone moved");
    sim.devices[0].journal_mut().add(share("after the move"))?;
    sim.round_of(0)?;

    // The tablet reads the announcement, finds no box for itself, and knows.
    sim.round_of(1)?;
    ensure!(sim.devices[1].removed, "the tablet was not told");
    ensure!(sim.devices[1].journal().epoch()? == 0);
    // What it writes now reaches nobody in the new epoch.
    sim.devices[1]
        .journal_mut()
        .add(share("from the removed tablet"))?;
    sim.round_of(1)?;

    // Blake comes back: moves, and keeps what it wrote while apart.
    sim.devices[2].offline = false;
    for _ in 0..4 {
        sim.round_of(2)?;
        sim.round_of(0)?;
    }
    ensure!(sim.devices[2].journal().epoch()? == 1, "Blake moved");
    let alex = feelings(&sim, 0)?;
    let blake = feelings(&sim, 2)?;
    ensure!(alex == blake, "not converged: {alex:?} / {blake:?}");
    ensure!(
        alex == [
            "after the move",
            "before",
            "from the tablet",
            "written while apart"
        ],
        "lost or extra: {alex:?}"
    );
    ensure!(
        !feelings(&sim, 1)?.contains(&"after the move".to_string()),
        "the removed tablet reads the new epoch"
    );
    // Both partners are still there, each with their devices certified again.
    let partners = sim.devices[2].journal().partners();
    ensure!(partners.len() == 2, "{} partners", partners.len());
    ensure!(
        partners.iter().all(|p| !p.devices.is_empty()),
        "a partner without a certified device: {partners:?}"
    );
    let tablet = sim.devices[1].journal().device();
    ensure!(
        partners
            .iter()
            .all(|p| p.devices.iter().all(|d| d.id != tablet)),
        "the removed tablet is still listed"
    );
    Ok(())
}

#[test]
fn after_a_forget_rotation_the_removed_words_are_in_no_database() -> Result<()> {
    let mut sim = Sim::new(5, 1, 1, 1_000)?;
    sim.settle()?;
    let secret = "WORDS-TO-FORGET-7q";
    let id = sim.devices[0].journal_mut().add(share(secret))?;
    sim.devices[0].journal_mut().add(share("kept"))?;
    sim.settle()?;
    ensure!(feelings(&sim, 1)?.contains(&secret.to_string()));
    sim.devices[0].journal_mut().remove(id)?;
    sim.settle()?;
    let holds = |sim: &Sim, d: usize| -> Result<bool> {
        let mut found = false;
        for suffix in ["", "-wal"] {
            let mut path = sim.devices[d].path.clone().into_os_string();
            path.push(suffix);
            if let Ok(bytes) = std::fs::read(&path) {
                found |= bytes.windows(secret.len()).any(|w| w == secret.as_bytes());
            }
        }
        Ok(found)
    };
    // The history still holds the words before the rotation (else the check proves nothing).
    ensure!(
        holds(&sim, 0)? || holds(&sim, 1)?,
        "the words were never on disk"
    );

    sim.rotate(1, Reason::Forget, &[])?;
    sim.settle()?;
    for d in 0..2 {
        ensure!(
            sim.devices[d].journal().epoch()? == 1,
            "device {d} did not move"
        );
        ensure!(
            !holds(&sim, d)?,
            "device {d}'s database still holds the words"
        );
        let record = sim.devices[d].journal().get(id)?;
        ensure!(record.removed, "the placeholder is gone on device {d}");
    }
    ensure!(feelings(&sim, 0)? == feelings(&sim, 1)?);
    ensure!(feelings(&sim, 0)?.contains(&"kept".to_string()));
    Ok(())
}

#[test]
fn two_devices_that_rotate_apart_end_in_one_epoch() -> Result<()> {
    // Alex's phone (0) and tablet (1), Blake's phone (2): Alex and Blake both ask to forget
    // on the same evening, each before seeing the other's announcement.
    let mut sim = Sim::new(33, 2, 1, 1_000)?;
    sim.settle()?;
    // Every device has been heard from (its first write introduces it).
    for d in 0..3 {
        sim.devices[d]
            .journal_mut()
            .add(share(&format!("before, from {d}")))?;
    }
    sim.settle()?;
    sim.rotate(2, Reason::Forget, &[])?;
    sim.rotate(0, Reason::Forget, &[])?;
    // Blake's announcement reaches the relay first and is the one kept; Alex's phone then
    // holds both, and follows Blake's whatever Automerge would pick.
    for _ in 0..3 {
        sim.round_of(2)?;
    }
    ensure!(
        sim.devices[2].journal().epoch()? == 1,
        "Blake's phone moved"
    );
    for _ in 0..3 {
        sim.round_of(0)?;
    }
    sim.settle()?;
    for d in 0..3 {
        ensure!(!sim.devices[d].removed, "device {d} was left out");
        ensure!(
            sim.devices[d].journal().epoch()? == 1,
            "device {d} is elsewhere"
        );
        sim.devices[d]
            .journal_mut()
            .add(share(&format!("after, from {d}")))?;
    }
    sim.settle()?;
    let all = feelings(&sim, 0)?;
    ensure!(
        all == [
            "after, from 0",
            "after, from 1",
            "after, from 2",
            "before, from 0",
            "before, from 1",
            "before, from 2"
        ],
        "split or lost: {all:?}"
    );
    for d in 1..3 {
        ensure!(feelings(&sim, d)? == all, "device {d} differs");
    }
    Ok(())
}

#[test]
fn a_removal_made_while_another_device_rotates_still_happens() -> Result<()> {
    // Alex's phone (0), tablet (1) and lost phone (2); Blake's phone (3). Blake asks to forget;
    // Alex's phone, not yet aware, removes the lost phone at the same time.
    let mut sim = Sim::new(34, 3, 1, 1_000)?;
    sim.settle()?;
    for d in 0..4 {
        sim.devices[d]
            .journal_mut()
            .add(share(&format!("from {d}")))?;
    }
    sim.settle()?;
    sim.rotate(3, Reason::Forget, &[])?;
    sim.rotate(0, Reason::RemoveDevices, &[2])?;
    for _ in 0..3 {
        sim.round_of(3)?;
    }
    ensure!(
        sim.devices[3].journal().epoch()? == 1,
        "Blake's phone moved"
    );
    // Blake's rotation won and kept the lost phone: Alex's phone follows it, then removes the
    // lost phone again in the new epoch.
    sim.settle()?;
    ensure!(sim.devices[2].removed, "the lost phone was not shut out");
    let epoch = sim.devices[0].journal().epoch()?;
    ensure!(epoch == 2, "Alex's phone is in epoch {epoch}");
    for d in [1, 3] {
        ensure!(
            sim.devices[d].journal().epoch()? == epoch,
            "device {d} is elsewhere: {:?}",
            sim.devices
                .iter()
                .map(|x| (x.journal().epoch().ok(), x.removed, x.problems.len()))
                .collect::<Vec<_>>()
        );
    }
    sim.devices[0].journal_mut().add(share("after"))?;
    sim.settle()?;
    ensure!(
        !feelings(&sim, 2)?.contains(&"after".to_string()),
        "the lost phone reads the new epoch"
    );
    for d in [1, 3] {
        ensure!(
            feelings(&sim, d)? == feelings(&sim, 0)?,
            "device {d} differs"
        );
    }
    let lost = sim.devices[2].journal().device();
    ensure!(
        sim.devices[3]
            .journal()
            .partners()
            .iter()
            .all(|p| p.devices.iter().all(|d| d.id != lost)),
        "the lost phone is still listed"
    );
    Ok(())
}

#[test]
fn a_device_that_has_not_moved_yet_is_listed_and_can_be_removed() -> Result<()> {
    // Alex's phone (0) and tablet (1), Blake's phone (2). The tablet is off while Blake asks
    // to forget; then it goes missing.
    let mut sim = Sim::new(35, 2, 1, 1_000)?;
    sim.settle()?;
    for d in 0..3 {
        sim.devices[d]
            .journal_mut()
            .add(share(&format!("from {d}")))?;
    }
    sim.settle()?;
    sim.devices[1].offline = true;
    sim.rotate(2, Reason::Forget, &[])?;
    for _ in 0..3 {
        sim.round_of(2)?;
        sim.round_of(0)?;
    }
    ensure!(sim.devices[0].journal().epoch()? == 1, "Alex's phone moved");
    let tablet = sim.devices[1].journal().device();
    let listed = sim.devices[0].journal().devices();
    ensure!(
        listed.iter().any(|d| d.id == tablet && d.mine),
        "the tablet, not moved yet, is not listed: {listed:?}"
    );
    sim.rotate(0, Reason::RemoveDevices, &[1])?;
    sim.devices[1].offline = false;
    sim.settle()?;
    ensure!(sim.devices[1].removed, "the tablet was not shut out");
    ensure!(sim.devices[0].journal().epoch()? == 2);
    ensure!(sim.devices[2].journal().epoch()? == 2);
    ensure!(
        sim.devices[0]
            .journal()
            .devices()
            .iter()
            .all(|d| d.id != tablet),
        "the removed tablet is still listed"
    );
    Ok(())
}

/// Alex's tablet is put back to an older copy of itself and moves to a new device id (its
/// numbers were used); its certificate still names the old id, under which Alex's phone then
/// seals its box in a rotation. The tablet finds that box and moves, instead of taking itself
/// for removed.
#[test]
fn a_device_that_moved_to_a_new_id_still_finds_its_box() -> Result<()> {
    // Alex's phone (0) and tablet (1); Blake's phone (2).
    let mut sim = Sim::new(43, 2, 1, 1_000)?;
    sim.devices[1].journal_mut().add(share("from the tablet"))?;
    sim.settle()?;
    sim.keep_copy(1)?;
    sim.devices[1].journal_mut().add(share("then lost there"))?;
    sim.settle()?;
    let old_id = sim.devices[1].journal().device();
    ensure!(sim.roll_back(1)?, "no copy to put back");
    sim.devices[1]
        .journal_mut()
        .add(share("after the rollback"))?;
    sim.settle()?;
    ensure!(
        sim.devices[1].journal().device() != old_id,
        "the tablet kept its id"
    );

    sim.rotate(0, Reason::Forget, &[])?;
    for _ in 0..4 {
        sim.settle()?;
    }
    for d in &sim.devices {
        ensure!(!d.removed, "{} was shut out", d.name);
        ensure!(d.journal().epoch()? == 1, "{} did not move", d.name);
    }
    // It reopens its box (a keyring not stored again after the move catches up from it).
    let key = sim.devices[1].key.clone();
    ensure!(
        sim.devices[1].journal().epoch_secrets(&key)?.is_some(),
        "the tablet cannot open the box it moved with"
    );
    sim.devices[2].journal_mut().add(share("after the move"))?;
    sim.settle()?;
    ensure!(
        feelings(&sim, 1)?.contains(&"after the move".to_string()),
        "the tablet does not read the new epoch"
    );
    Ok(())
}
