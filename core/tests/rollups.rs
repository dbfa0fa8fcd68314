//! Rollups under the simulation: a device back from a weekend reads a few rollups instead of
//! every chunk, and a rollup the relay cut short, or one that claims what its signer did not
//! make, is refused and the chunks it stands for are read instead.

mod sim;

use anyhow::{Context, Result, ensure};
use mend_core::{
    Body, Space,
    crypto::{GroupScope, RollupAad, open_rollup, seal_rollup, sign_group},
    model::Share,
    sync::{ProblemKind, Request, SyncStore},
};
use sim::{Faults, Sim};

fn share(text: &str) -> Body {
    Body::Share(Share {
        feeling: text.into(),
        tough_question: false,
    })
}

/// Device `d` writes `n` shares, each pushed in a round of its own (as a phone does).
fn edits(sim: &mut Sim, d: usize, n: usize, tag: &str) -> Result<()> {
    for k in 0..n {
        sim.devices[d]
            .journal_mut()
            .add(share(&format!("{tag} {k}")))?;
        sim.round_of(d)?;
    }
    Ok(())
}

fn same_couple_doc(sim: &Sim, a: usize, b: usize) -> Result<bool> {
    let mut x = sim.devices[a].journal().heads(Space::Couple)?;
    let mut y = sim.devices[b].journal().heads(Space::Couple)?;
    x.sort();
    y.sort();
    Ok(x == y
        && sim.devices[a].journal().shared_records()?
            == sim.devices[b].journal().shared_records()?)
}

fn tampered(sim: &Sim, d: usize) -> usize {
    sim.devices[d]
        .problems
        .iter()
        .filter(|p| matches!(p.kind, ProblemKind::Tampered { .. }))
        .count()
}

#[test]
fn a_device_back_from_a_weekend_reads_a_few_rollups_not_every_chunk() -> Result<()> {
    let mut sim = Sim::new(11, 1, 1, 1_000)?;
    sim.set_rollup_every(8);
    sim.settle()?;
    let space = sim.couple_keys.space_id;
    sim.devices[1].offline = true;
    edits(&mut sim, 0, 40, "while you were away")?;
    // A's first rollup also stands for the chunks it pushed before B went away.
    ensure!(
        sim.relay.rollup_count(&space) == 5,
        "A made {} rollups, not 5",
        sim.relay.rollup_count(&space)
    );
    sim.devices[1].offline = false;
    let before = sim.relay.space_mut(space).clone();
    sim.round_of(1)?;
    let after = sim.relay.space_mut(space).clone();
    ensure!(same_couple_doc(&sim, 0, 1)?, "B did not catch up");
    let rollups = after.served_rollups - before.served_rollups;
    let chunks = after.served_chunks - before.served_chunks;
    // The rollup that began before B left is read as its chunks; the others whole.
    ensure!(
        rollups == 4 && chunks <= 8,
        "B read {rollups} rollups and {chunks} chunks"
    );
    ensure!(
        sim.devices[1].problems.is_empty(),
        "an honest relay's rollups caused {:?}",
        sim.devices[1].problems
    );
    // The same edits as chunks: the rollups (of 8 chunks here) are less than half the bytes.
    let mut plain = Sim::new(11, 1, 1, 1_000)?;
    plain.set_rollup_every(1_000);
    plain.settle()?;
    let plain_space = plain.couple_keys.space_id;
    plain.devices[1].offline = true;
    edits(&mut plain, 0, 40, "while you were away")?;
    plain.devices[1].offline = false;
    let start = plain.relay.space_mut(plain_space).served_bytes;
    plain.round_of(1)?;
    let chunk_bytes = plain.relay.space_mut(plain_space).served_bytes - start;
    let rollup_bytes = after.served_bytes - before.served_bytes;
    ensure!(
        rollup_bytes * 2 < chunk_bytes,
        "rollups took {rollup_bytes} bytes, chunks {chunk_bytes}"
    );
    // A device that joins later loads A's snapshot, whose group proofs it checks.
    let late = sim.join_device(1)?;
    sim.settle()?;
    ensure!(
        same_couple_doc(&sim, 0, late)?,
        "the new device lacks edits"
    );
    ensure!(
        sim.devices.iter().all(|d| d.problems.is_empty()),
        "problems: {:?}",
        sim.devices.iter().map(|d| &d.problems).collect::<Vec<_>>()
    );
    Ok(())
}

#[test]
fn a_rollup_the_relay_cut_short_is_refused_and_the_chunks_are_read_instead() -> Result<()> {
    let mut sim = Sim::new(12, 1, 1, 1_000)?;
    sim.set_rollup_every(4);
    sim.settle()?;
    let space = sim.couple_keys.space_id;
    sim.devices[1].offline = true;
    edits(&mut sim, 0, 12, "cut")?;
    // The last rollup (one B reads whole) loses its second half on the relay's disk.
    let last = sim
        .relay
        .space_mut(space)
        .rollups
        .last_mut()
        .context("a rollup")?;
    let half = last.payload.len() / 2;
    last.payload.truncate(half);
    sim.devices[1].offline = false;
    sim.round_of(1)?;
    ensure!(
        same_couple_doc(&sim, 0, 1)?,
        "B lacks what the cut rollup stood for"
    );
    ensure!(
        tampered(&sim, 1) == 1,
        "problems: {:?}",
        sim.devices[1].problems
    );
    // Nothing was lost or doubled: every share once.
    let shares = sim.devices[1].journal().shared_records()?;
    ensure!(shares.len() == 12, "B holds {} shares", shares.len());
    Ok(())
}

/// The plaintext parts of a couple's rollup: (intros and signer up to the signature, the
/// signature, the Automerge bundle).
fn parts(plain: &[u8]) -> Result<(usize, &[u8])> {
    let intros = usize::from(u16::from_be_bytes([plain[1], plain[2]]));
    let signer_at = 3 + intros * mend_core::crypto::INTRO_LEN;
    Ok((signer_at, &plain[signer_at + 16 + 64..]))
}

/// A's second rollup, re-sealed by B (who holds the couple's key) after `bend` changed its
/// plaintext, is read by B: refused, and A's chunks read instead.
fn forged_rollup(
    seed: u64,
    bend: impl Fn(&Sim, GroupScope, &mut Vec<u8>) -> Result<()>,
) -> Result<()> {
    let mut sim = Sim::new(seed, 1, 1, 1_000)?;
    sim.set_rollup_every(4);
    sim.settle()?;
    let space = sim.couple_keys.space_id;
    let content = sim.couple_keys.content.clone();
    sim.devices[1].offline = true;
    edits(&mut sim, 0, 8, "mine")?;
    ensure!(sim.relay.rollup_count(&space) == 2, "two rollups expected");
    // The second: the first also stands for chunks B read before it went away.
    let r = sim.relay.space_mut(space).rollups[1].clone();
    let aad = RollupAad {
        space_id: space,
        device: r.device_id.0,
        first_seq: r.first_seq,
        last_seq: r.last_seq,
    };
    let mut plain = open_rollup(&content, &aad, &r.payload)?;
    let scope = GroupScope {
        device: r.device_id.0,
        first_seq: r.first_seq,
        last_seq: r.last_seq,
    };
    bend(&sim, scope, &mut plain)?;
    sim.relay.space_mut(space).rollups[1].payload = seal_rollup(&content, &aad, &plain)?;
    sim.devices[1].offline = false;
    sim.round_of(1)?;
    ensure!(same_couple_doc(&sim, 0, 1)?, "B lacks A's edits");
    ensure!(
        tampered(&sim, 1) == 1,
        "problems: {:?}",
        sim.devices[1].problems
    );
    let shares = sim.devices[1].journal().shared_records()?;
    ensure!(shares.len() == 8, "B holds {} shares", shares.len());
    // Every change B merged under A's actors is A's own, signed by A: none came from the
    // forged rollup under B's name.
    let doc = automerge::Automerge::load(&sim.devices[1].journal().save_space(Space::Couple)?)?;
    let a_key = sim.devices[0].key.public().key_id().0;
    let b_key = sim.devices[1].key.public().key_id().0;
    for change in doc.get_changes(&[]) {
        let actor = change.actor_id().to_bytes();
        ensure!(
            actor.len() != 24 || actor[..16] == a_key || actor[..16] == b_key,
            "a change under an unknown actor"
        );
    }
    Ok(())
}

#[test]
fn a_rollup_signed_by_a_device_that_did_not_make_its_changes_is_refused() -> Result<()> {
    forged_rollup(13, |sim, scope, plain| {
        // B signs A's changes as its own.
        let b_key = sim.devices[1].key.clone();
        let space = sim.couple_keys.space_id;
        let (signer_at, bundle) = parts(plain)?;
        let changes = automerge::Bundle::try_from(bundle)
            .ok()
            .context("bundle")?
            .to_changes()?;
        let mut hashes: Vec<[u8; 32]> = changes.iter().map(|c| c.hash().0).collect();
        hashes.sort();
        let sig = sign_group(&b_key, &space, &scope, &hashes);
        plain[signer_at..signer_at + 16].copy_from_slice(&b_key.public().key_id().0);
        plain[signer_at + 16..signer_at + 80].copy_from_slice(&sig.0);
        Ok(())
    })
}

#[test]
fn a_rollup_whose_signature_was_bent_is_refused() -> Result<()> {
    forged_rollup(16, |_, _, plain| {
        let (signer_at, _) = parts(plain)?;
        plain[signer_at + 20] ^= 1;
        Ok(())
    })
}

#[test]
fn a_rollup_with_a_change_taken_out_is_refused() -> Result<()> {
    forged_rollup(17, |sim, _, plain| {
        // The bundle of all but the last change, under A's real signature over all of them.
        let (signer_at, bundle) = parts(plain)?;
        let changes = automerge::Bundle::try_from(bundle)
            .ok()
            .context("bundle")?
            .to_changes()?;
        let doc = automerge::Automerge::load(&sim.devices[0].journal().save_space(Space::Couple)?)?;
        let fewer = doc.bundle(changes[..changes.len() - 1].iter().map(|c| c.hash()))?;
        let mut bent = plain[..signer_at + 80].to_vec();
        bent.extend_from_slice(fewer.bytes());
        *plain = bent;
        Ok(())
    })
}

#[test]
fn a_device_that_read_part_of_a_run_reads_the_rest_as_chunks() -> Result<()> {
    let mut sim = Sim::new(14, 1, 1, 1_000)?;
    sim.set_rollup_every(8);
    sim.settle()?;
    let space = sim.couple_keys.space_id;
    edits(&mut sim, 0, 5, "before")?;
    // B reads five chunks, then goes away while A's first rollup stands for them and three
    // more.
    sim.round_of(1)?;
    sim.devices[1].offline = true;
    edits(&mut sim, 0, 11, "after")?;
    ensure!(sim.relay.rollup_count(&space) == 2, "two rollups expected");
    sim.devices[1].offline = false;
    let before = sim.relay.space_mut(space).clone();
    sim.round_of(1)?;
    let after = sim.relay.space_mut(space).clone();
    ensure!(same_couple_doc(&sim, 0, 1)?, "B did not catch up");
    ensure!(
        after.served_chunks - before.served_chunks == 3
            && after.served_rollups - before.served_rollups == 1,
        "B read {} chunks and {} rollups",
        after.served_chunks - before.served_chunks,
        after.served_rollups - before.served_rollups
    );
    ensure!(
        sim.devices[1].problems.is_empty(),
        "problems: {:?}",
        sim.devices[1].problems
    );
    Ok(())
}

#[test]
fn rollups_survive_relay_restarts_and_lost_answers() -> Result<()> {
    let mut sim = Sim::new(15, 2, 1, 6)?;
    sim.set_rollup_every(3);
    sim.settle()?;
    for round in 0..4 {
        sim.devices[2].offline = true;
        edits(&mut sim, 0, 4, &format!("phone {round}"))?;
        // Answers lost and copied while the tablet pushes and rolls up, then a restart.
        sim.faults = Faults {
            drop: 20,
            duplicate: 20,
            max_delay_ms: 2_000,
        };
        edits(&mut sim, 1, 3, &format!("tablet {round}"))?;
        sim.faults = Faults::default();
        sim.restart_relay();
        sim.devices[2].offline = false;
        sim.round_of(2)?;
    }
    sim.settle()?;
    for d in 1..sim.devices.len() {
        ensure!(
            same_couple_doc(&sim, 0, d)?,
            "{} differs",
            sim.devices[d].name
        );
    }
    ensure!(
        sim.devices.iter().all(|d| d.problems.is_empty()),
        "problems: {:?}",
        sim.devices.iter().map(|d| &d.problems).collect::<Vec<_>>()
    );
    Ok(())
}

/// Requests of device `d` sent since `from` that fetched the relay's snapshot.
fn snapshot_fetches(sim: &Sim, d: usize, from: usize) -> usize {
    sim.devices[d].sent[from..]
        .iter()
        .filter(|(_, _, r)| matches!(r, Request::GetSnapshot { .. }))
        .count()
}

#[test]
fn a_device_far_behind_reads_the_smaller_of_the_tail_and_the_snapshot() -> Result<()> {
    let mut sim = Sim::new(18, 1, 2, 30)?;
    sim.set_rollup_every(8);
    let space = sim.couple_keys.space_id;
    sim.relay.space_mut(space).keep_pruned = true;
    sim.settle()?;
    // A long shared past: the snapshot is large.
    edits(&mut sim, 0, 200, "our past")?;
    sim.settle()?;
    // B's phone is away while A writes a little more, and A snapshots past B's cursor.
    sim.devices[1].offline = true;
    sim.devices[2].offline = true;
    edits(&mut sim, 0, 40, "this week")?;
    let covers = sim
        .relay
        .space_mut(space)
        .snapshot
        .as_ref()
        .map_or(0, |x| x.covers);
    let cursor = sim.devices[1].journal().sync_state(Space::Couple)?.cursor;
    ensure!(
        covers > cursor,
        "A's snapshot ({covers}) is not past B's cursor ({cursor})"
    );
    sim.devices[1].offline = false;
    let sent = sim.devices[1].sent.len();
    let before = sim.relay.space_mut(space).served_rollups;
    sim.round_of(1)?;
    ensure!(same_couple_doc(&sim, 0, 1)?, "B did not catch up");
    ensure!(
        snapshot_fetches(&sim, 1, sent) == 0,
        "B fetched the snapshot though the tail was smaller"
    );
    ensure!(
        sim.relay.space_mut(space).served_rollups > before,
        "B read the tail without its rollups"
    );
    // Once the pruned chunks are deleted, B's tablet can only take the snapshot.
    sim.relay.sweep(space);
    sim.devices[2].offline = false;
    let sent = sim.devices[2].sent.len();
    sim.round_of(2)?;
    ensure!(same_couple_doc(&sim, 0, 2)?, "B's tablet did not catch up");
    ensure!(
        snapshot_fetches(&sim, 2, sent) == 1,
        "B's tablet did not take the snapshot"
    );
    ensure!(
        sim.devices.iter().all(|d| d.problems.is_empty()),
        "problems: {:?}",
        sim.devices.iter().map(|d| &d.problems).collect::<Vec<_>>()
    );
    Ok(())
}

/// A rollup plaintext as a device of the couple makes one: no introductions, the signer, its
/// group signature, the Automerge bundle.
fn rollup_plain(signer: [u8; 16], sig: [u8; 64], bundle: &[u8]) -> Vec<u8> {
    let mut plain = vec![3, 0, 0];
    plain.extend_from_slice(&signer);
    plain.extend_from_slice(&sig);
    plain.extend_from_slice(bundle);
    plain
}

#[test]
fn a_partners_rollup_under_the_other_partners_device_id_hides_nothing() -> Result<()> {
    let mut sim = Sim::new(19, 2, 1, 1_000)?;
    sim.set_rollup_every(1_000);
    sim.settle()?;
    let space = sim.couple_keys.space_id;
    let content = sim.couple_keys.content.clone();
    // A's tablet is away while A's phone writes; then B writes too.
    sim.devices[1].offline = true;
    edits(&mut sim, 0, 3, "A's words")?;
    edits(&mut sim, 2, 1, "B's words")?;
    // B (holding the couple's key) files a rollup of its own change under A's phone's id,
    // for the number of A's last chunk, signed by B's own device for that very range.
    let a_chunk = sim
        .relay
        .space_mut(space)
        .log
        .iter()
        .rev()
        .find(|c| c.device_id.0 == *sim.devices[0].journal().device().as_bytes())
        .cloned()
        .context("A's chunk")?;
    let doc = automerge::Automerge::load(&sim.devices[2].journal().save_space(Space::Couple)?)?;
    let b_key = sim.devices[2].key.clone();
    let b_id = b_key.public().key_id().0;
    let b_change = doc
        .get_changes(&[])
        .into_iter()
        .rfind(|c| c.actor_id().to_bytes().starts_with(&b_id))
        .context("B's change")?;
    let bundle = doc.bundle([b_change.hash()])?;
    let scope = GroupScope {
        device: a_chunk.device_id.0,
        first_seq: a_chunk.device_seq,
        last_seq: a_chunk.device_seq,
    };
    let sig = sign_group(&b_key, &space, &scope, &[b_change.hash().0]);
    let plain = rollup_plain(b_key.public().key_id().0, sig.0, bundle.bytes());
    let aad = RollupAad {
        space_id: space,
        device: scope.device,
        first_seq: scope.first_seq,
        last_seq: scope.last_seq,
    };
    let payload = seal_rollup(&content, &aad, &plain)?;
    let stored = sim.relay.push_rollup_from(
        space,
        mend_protocol::RollupPush {
            device_id: a_chunk.device_id,
            first_seq: scope.first_seq,
            last_seq: scope.last_seq,
            payload,
        },
    );
    ensure!(
        matches!(stored, mend_core::sync::Response::RollupStored { .. }),
        "the relay did not store it: {stored:?}"
    );
    // A's tablet reads: B's rollup is refused, A's chunk is read in its place.
    sim.devices[1].offline = false;
    sim.round_of(1)?;
    ensure!(
        same_couple_doc(&sim, 2, 1)?,
        "A's tablet lacks A's own words"
    );
    ensure!(
        tampered(&sim, 1) == 1,
        "problems: {:?}",
        sim.devices[1].problems
    );
    Ok(())
}

#[test]
fn a_genuine_rollup_moved_to_another_range_is_refused() -> Result<()> {
    let mut sim = Sim::new(20, 1, 1, 1_000)?;
    sim.set_rollup_every(4);
    sim.settle()?;
    let space = sim.couple_keys.space_id;
    let content = sim.couple_keys.content.clone();
    sim.devices[1].offline = true;
    edits(&mut sim, 0, 12, "mine")?;
    ensure!(
        sim.relay.rollup_count(&space) == 3,
        "three rollups expected"
    );
    // The relay (or B) serves A's second rollup, whole and genuine, in place of A's third.
    let rollups = sim.relay.space_mut(space).rollups.clone();
    let (second, third) = (&rollups[1], &rollups[2]);
    let plain = open_rollup(
        &content,
        &RollupAad {
            space_id: space,
            device: second.device_id.0,
            first_seq: second.first_seq,
            last_seq: second.last_seq,
        },
        &second.payload,
    )?;
    let moved = seal_rollup(
        &content,
        &RollupAad {
            space_id: space,
            device: third.device_id.0,
            first_seq: third.first_seq,
            last_seq: third.last_seq,
        },
        &plain,
    )?;
    sim.relay.space_mut(space).rollups[2].payload = moved;
    sim.devices[1].offline = false;
    sim.round_of(1)?;
    ensure!(same_couple_doc(&sim, 0, 1)?, "B lacks A's edits");
    ensure!(
        tampered(&sim, 1) == 1,
        "problems: {:?}",
        sim.devices[1].problems
    );
    Ok(())
}
