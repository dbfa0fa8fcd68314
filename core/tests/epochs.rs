//! Epochs under the simulation: a lost device is shut out by a rotation while the other
//! partner is offline and writing, and a "forget" rotation leaves a removed record's words in
//! no device's database.

mod sim;

use anyhow::{Result, anyhow, bail, ensure};
use mend_core::{
    Body, Record, RecordId,
    journal::Reason,
    model::{
        Boundary, BoundaryArea, ClaimStatus, Commitment, CommitmentStatus, ConsentState, Need,
        NeedResponseKind, PartnerView, Share,
    },
    sync::ProblemKind,
};
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

/// Every device writes once, which introduces it: a rotation seals a box to it.
fn heard_from(sim: &mut Sim) -> Result<()> {
    for d in 0..sim.devices.len() {
        sim.devices[d]
            .journal_mut()
            .add(share(&format!("before, from {d}")))?;
    }
    sim.settle()
}

/// No device was blamed for a change it could not have made: every replay passed.
fn none_refused(sim: &Sim) -> Result<()> {
    for d in &sim.devices {
        let forged: Vec<_> = d
            .problems
            .iter()
            .filter(|p| matches!(p.kind, ProblemKind::Forged { .. }))
            .collect();
        ensure!(forged.is_empty(), "{} refused: {forged:?}", d.name);
    }
    Ok(())
}

/// Every device is in `epoch` and holds the same records as device 0.
fn converged(sim: &Sim, epoch: u32) -> Result<Vec<Record>> {
    let all = sim.devices[0].journal().records()?;
    for d in &sim.devices {
        ensure!(!d.removed, "{} was left out", d.name);
        ensure!(d.journal().epoch()? == epoch, "{} is elsewhere", d.name);
        let here = d.journal().records()?;
        ensure!(
            here.len() == all.len()
                && here
                    .iter()
                    .zip(&all)
                    .all(|(a, b)| a.id == b.id && a.body == b.body),
            "{} differs: {here:?} / {all:?}",
            d.name
        );
    }
    Ok(all)
}

/// Each device writes once more, and every device reads all of it: none is stuck behind a
/// refused change.
fn still_syncing(sim: &mut Sim) -> Result<()> {
    let n = sim.devices.len();
    for d in 0..n {
        sim.devices[d]
            .journal_mut()
            .add(share(&format!("after the move, from {d}")))?;
    }
    sim.settle()?;
    none_refused(sim)?;
    for d in 0..n {
        let have = feelings(sim, d)?;
        for from in 0..n {
            let want = format!("after the move, from {from}");
            ensure!(
                have.contains(&want),
                "{} lacks what device {from} wrote after the move",
                sim.devices[d].name
            );
        }
    }
    Ok(())
}

fn body_of(records: &[Record], id: RecordId) -> Result<&Body> {
    records
        .iter()
        .find(|r| r.id == id)
        .map(|r| &r.body)
        .ok_or_else(|| anyhow!("record {id} is gone"))
}

fn boundary(text: &str) -> Body {
    Body::Boundary(Boundary {
        area: BoundaryArea::Space,
        text: text.into(),
        ..Default::default()
    })
}

#[test]
fn consents_and_rewordings_made_after_the_cut_are_accepted_everywhere() -> Result<()> {
    // Alex's phone (0) and tablet (1); Blake's phone (2).
    let mut sim = Sim::new(61, 2, 1, 1_000)?;
    heard_from(&mut sim)?;
    let blakes = sim.devices[2]
        .journal_mut()
        .add(boundary("Blake's words"))?;
    let alexs = sim.devices[0].journal_mut().add(boundary("Alex's words"))?;
    sim.settle()?;
    let (alex, blake) = (sim.devices[0].journal().me(), sim.devices[2].journal().me());

    // Blake asks to forget; before anyone moves, Alex agrees to Blake's boundary and rewords
    // his own, and Blake agrees to Alex's old words.
    sim.rotate(2, Reason::Forget, &[])?;
    sim.devices[0]
        .journal_mut()
        .consent(blakes, ConsentState::Agreed)?;
    let mut reworded = sim.devices[0].journal().get(alexs)?.body;
    if let Body::Boundary(b) = &mut reworded {
        b.text = "Alex's new words".into();
    }
    sim.devices[0].journal_mut().edit(alexs, reworded)?;
    sim.devices[2]
        .journal_mut()
        .consent(alexs, ConsentState::Revisit)?;
    for _ in 0..3 {
        sim.settle()?;
    }
    none_refused(&sim)?;
    let all = converged(&sim, 1)?;
    let Body::Boundary(b) = body_of(&all, blakes)? else {
        bail!("not a boundary");
    };
    ensure!(
        b.consents.get(&alex).map(|c| c.state) == Some(ConsentState::Agreed),
        "Alex's consent was lost: {b:?}"
    );
    let Body::Boundary(a) = body_of(&all, alexs)? else {
        bail!("not a boundary");
    };
    ensure!(
        a.text == "Alex's new words",
        "the rewording was lost: {a:?}"
    );
    ensure!(a.wordings.len() == 2, "the wording history was lost: {a:?}");
    let (Some(mine), Some(theirs)) = (a.consents.get(&alex), a.consents.get(&blake)) else {
        bail!("a consent was lost: {a:?}");
    };
    ensure!(mine.state == ConsentState::Agreed && mine.wording != theirs.wording);
    ensure!(theirs.state == ConsentState::Revisit, "{a:?}");
    still_syncing(&mut sim)
}

#[test]
fn ledgers_and_responses_written_after_the_cut_are_accepted_everywhere() -> Result<()> {
    // Alex's phone (0) and tablet (1); Blake's phone (2).
    let mut sim = Sim::new(62, 2, 1, 1_000)?;
    heard_from(&mut sim)?;
    let commitment = sim.devices[0]
        .journal_mut()
        .add(Body::Commitment(Commitment {
            text: "Alex's commitment".into(),
            ..Default::default()
        }))?;
    let need = sim.devices[2].journal_mut().add(Body::Need(Need {
        text: "Blake's need".into(),
        ..Default::default()
    }))?;
    sim.settle()?;
    let today = sim.devices[0].journal().today();

    // Blake asks to forget; before anyone moves, Alex claims the day and pauses the
    // commitment, Alex's tablet answers Blake's need, and Blake gives his view of the day.
    sim.rotate(2, Reason::Forget, &[])?;
    sim.devices[0]
        .journal_mut()
        .claim(commitment, today, ClaimStatus::Done, "done")?;
    let mut paused = sim.devices[0].journal().get(commitment)?.body;
    if let Body::Commitment(c) = &mut paused {
        c.status = CommitmentStatus::Paused;
    }
    sim.devices[0].journal_mut().edit(commitment, paused)?;
    sim.devices[1]
        .journal_mut()
        .respond_to_need(need, NeedResponseKind::Receptive, "yes")?;
    sim.devices[2]
        .journal_mut()
        .confirm(commitment, today, PartnerView::Confirmed, "seen")?;
    for _ in 0..3 {
        sim.settle()?;
    }
    none_refused(&sim)?;
    let all = converged(&sim, 1)?;
    let Body::Commitment(c) = body_of(&all, commitment)? else {
        bail!("not a commitment");
    };
    ensure!(
        c.status == CommitmentStatus::Paused,
        "the pause was lost: {c:?}"
    );
    ensure!(
        c.status_changes
            .values()
            .any(|s| *s == CommitmentStatus::Paused),
        "the dated pause was lost: {c:?}"
    );
    ensure!(
        c.claims.get(&today).map(|x| x.status) == Some(ClaimStatus::Done),
        "the claim was lost: {c:?}"
    );
    ensure!(
        c.views.get(&today).map(|x| x.view) == Some(PartnerView::Confirmed),
        "the view was lost: {c:?}"
    );
    let Body::Need(n) = body_of(&all, need)? else {
        bail!("not a need");
    };
    ensure!(
        n.response.as_ref().map(|r| r.kind) == Some(NeedResponseKind::Receptive),
        "the response was lost: {n:?}"
    );
    still_syncing(&mut sim)
}

/// Blake asks to forget, then, in the old epoch, agrees to a boundary Alex made after the
/// cut: Alex's phone writes that boundary again in the new epoch without Blake's entry, so
/// nothing Alex writes afterwards is refused.
#[test]
fn a_partner_cannot_get_a_replay_refused_by_consenting_after_the_cut() -> Result<()> {
    // Alex's phone (0); Blake's phone (1) and tablet (2).
    let mut sim = Sim::new(63, 1, 2, 1_000)?;
    heard_from(&mut sim)?;
    sim.rotate(1, Reason::Forget, &[])?;
    let late = sim.devices[0]
        .journal_mut()
        .add(boundary("made after the cut"))?;
    // The announcement is not at the relay yet: Alex's boundary reaches the old space, Blake's
    // tablet agrees to it there, and Alex's phone receives that before it moves.
    sim.round_of(0)?;
    sim.round_of(2)?;
    ensure!(
        sim.devices[2].journal().epoch()? == 0,
        "the tablet moved early"
    );
    sim.devices[2]
        .journal_mut()
        .consent(late, ConsentState::Agreed)?;
    sim.round_of(2)?;
    sim.round_of(0)?;
    ensure!(
        sim.devices[0].journal().epoch()? == 0,
        "Alex's phone moved early"
    );
    let blake = sim.devices[1].journal().me();
    let Body::Boundary(b) = sim.devices[0].journal().get(late)?.body else {
        bail!("not a boundary");
    };
    ensure!(
        b.consents.contains_key(&blake),
        "Blake's consent did not arrive"
    );
    for _ in 0..3 {
        sim.settle()?;
    }
    none_refused(&sim)?;
    let all = converged(&sim, 1)?;
    let Body::Boundary(b) = body_of(&all, late)? else {
        bail!("not a boundary");
    };
    ensure!(b.text == "made after the cut", "{b:?}");
    ensure!(
        b.consents.contains_key(&sim.devices[0].journal().me()),
        "Alex's own consent was lost: {b:?}"
    );
    still_syncing(&mut sim)
}

/// Blake's phone makes a boundary after a forget's cut, and Blake's tablet rewords it before
/// either moves. Only the phone, which made it, makes it again in the new epoch: two devices
/// making it again would put two records under one id, a conflict whose settling would write
/// the other partner's entries again and be refused.
#[test]
fn a_record_made_after_the_cut_is_made_again_once() -> Result<()> {
    // Alex's phone (0); Blake's phone (1) and tablet (2).
    let mut sim = Sim::new(64, 1, 2, 1_000)?;
    heard_from(&mut sim)?;
    sim.rotate(0, Reason::Forget, &[])?;
    let late = sim.devices[1]
        .journal_mut()
        .add(boundary("made after the cut"))?;
    sim.round_of(1)?;
    sim.round_of(2)?;
    let Body::Boundary(mut b) = sim.devices[2].journal().get(late)?.body else {
        bail!("not a boundary");
    };
    b.text = "reworded on the tablet".into();
    sim.devices[2].journal_mut().edit(late, Body::Boundary(b))?;
    sim.round_of(2)?;
    sim.round_of(1)?;
    for d in [1, 2] {
        ensure!(
            sim.devices[d].journal().epoch()? == 0,
            "{} moved early",
            sim.devices[d].name
        );
    }
    for _ in 0..3 {
        sim.settle()?;
    }
    none_refused(&sim)?;
    converged(&sim, 1)?;
    for d in &sim.devices {
        let record = d.journal().get(late)?;
        ensure!(
            record.conflicts.is_empty(),
            "{}: the record was made twice: {:?}",
            d.name,
            record.conflicts
        );
        ensure!(
            matches!(&record.body, Body::Boundary(b) if b.text == "reworded on the tablet"),
            "{}: {:?}",
            d.name,
            record.body
        );
    }
    still_syncing(&mut sim)
}

/// Blake's boundary, reworded by Blake while away; meanwhile Alex's phone (0) removes the lost
/// tablet (1) and moves. Blake's phone is 2.
fn rotated_while_blake_was_away(seed: u64) -> Result<(Sim, RecordId)> {
    let mut sim = Sim::new(seed, 2, 1, 1_000)?;
    heard_from(&mut sim)?;
    let blakes = sim.devices[2]
        .journal_mut()
        .add(boundary("Blake's words"))?;
    sim.settle()?;
    sim.devices[2].offline = true;
    reword(&mut sim, 2, blakes, "Blake's new words")?;
    sim.rotate(0, Reason::RemoveDevices, &[1])?;
    for _ in 0..4 {
        sim.round_of(0)?;
    }
    Ok((sim, blakes))
}

fn reword(sim: &mut Sim, d: usize, id: RecordId, text: &str) -> Result<()> {
    let mut body = sim.devices[d].journal().get(id)?.body;
    if let Body::Boundary(b) = &mut body {
        b.text = text.into();
    }
    sim.devices[d].journal_mut().edit(id, body)?;
    Ok(())
}

/// Blake comes back, reads the old space (what was written there since with it), and moves:
/// both partners read Blake's own words in the new epoch.
fn blake_moves_with_his_words(sim: &mut Sim, blakes: RecordId) -> Result<()> {
    sim.devices[2].offline = false;
    for _ in 0..4 {
        sim.round_of(2)?;
        sim.round_of(0)?;
    }
    ensure!(sim.devices[2].journal().epoch()? == 1, "Blake moved");
    for d in [0, 2] {
        let Body::Boundary(b) = sim.devices[d].journal().get(blakes)?.body else {
            bail!("not a boundary");
        };
        ensure!(
            b.text == "Blake's new words",
            "{} reads {:?} in the new epoch",
            sim.devices[d].name,
            b.text
        );
    }
    none_refused(sim)
}

#[test]
fn a_removed_device_cannot_speak_in_the_new_epoch_through_a_late_mover() -> Result<()> {
    let (mut sim, blakes) = rotated_while_blake_was_away(65)?;
    sim.round_of(1)?;
    ensure!(sim.devices[1].removed, "the tablet was not told");
    // Whoever holds the tablet writes over the boundary in the old epoch, often enough that
    // its words stand over Blake's there.
    for n in 0..3 {
        reword(&mut sim, 1, blakes, &format!("the tablet's words {n}"))?;
    }
    sim.round_of(1)?;
    blake_moves_with_his_words(&mut sim, blakes)
}

#[test]
fn a_key_certified_in_the_old_epoch_after_the_cut_cannot_speak_through_a_late_mover() -> Result<()>
{
    let (mut sim, blakes) = rotated_while_blake_was_away(66)?;
    // Whoever holds the tablet holds Alex's identity: it certifies a new key under a new id
    // in the old epoch, which no rotation removed, and writes over the boundary with it.
    let thief = sim.join_device(0)?;
    sim.round_of(thief)?;
    ensure!(sim.devices[thief].removed, "the new key found a box");
    for n in 0..3 {
        reword(&mut sim, thief, blakes, &format!("the new key's words {n}"))?;
    }
    sim.round_of(thief)?;
    blake_moves_with_his_words(&mut sim, blakes)
}
