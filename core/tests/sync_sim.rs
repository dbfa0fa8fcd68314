//! The sync engine under a deterministic simulation: stories first, then random schedules with
//! dropped, duplicated, reordered and delayed messages, partitions and restarts.

mod sim;

use anyhow::{Context, Result, ensure};
use mend_core::{
    Body, LocalDate, RecordId, Space, Visibility,
    model::{Boundary, BoundaryArea, CheckIn, ConsentState, HonestyMoment, ProcessingNote, Share},
    sync::{Event, ProblemKind, SyncStore},
};
use proptest::prelude::*;
use sim::{Faults, Sim};

fn share(text: &str) -> Body {
    Body::Share(Share {
        feeling: text.into(),
        tough_question: false,
    })
}

/// Every replica holds the same couple's document; each partner's devices hold the same
/// personal space; every acknowledged edit is everywhere it should be; nothing is pending.
fn assert_converged(sim: &Sim, acked: &[(usize, RecordId)]) -> Result<()> {
    let first = sim.devices[0].journal();
    let mut heads0 = first.heads(Space::Couple)?;
    heads0.sort();
    for d in &sim.devices {
        let j = d.journal();
        j.verify_read_model()
            .with_context(|| format!("{}'s read model", d.name))?;
        let mut h = j.heads(Space::Couple)?;
        h.sort();
        ensure!(h == heads0, "{} has a different couple's document", d.name);
        ensure!(
            j.shared_records()? == first.shared_records()?,
            "{} shows different records",
            d.name
        );
        ensure!(
            j.pending_changes(Space::Couple)? == 0,
            "{} still has couple changes pending",
            d.name
        );
        ensure!(
            j.pending_changes(Space::Personal)? == 0,
            "{} still has personal changes pending",
            d.name
        );
        for other in sim.devices.iter().filter(|o| o.partner == d.partner) {
            let mut a = j.heads(Space::Personal)?;
            let mut b = other.journal().heads(Space::Personal)?;
            a.sort();
            b.sort();
            ensure!(
                a == b,
                "{} and {} differ in their personal space",
                d.name,
                other.name
            );
            ensure!(
                j.records()? == other.journal().records()?,
                "{} and {} see different records",
                d.name,
                other.name
            );
        }
    }
    for (author, id) in acked {
        let partner = sim.devices[*author].partner;
        let record = sim.devices[*author].journal().get(*id)?;
        for d in &sim.devices {
            let visible = d.partner == partner || record.visibility == Visibility::Shared;
            let found = d.journal().get(*id).is_ok();
            ensure!(
                found == visible,
                "record {id} on {}: found {found}, expected {visible}",
                d.name
            );
        }
    }
    Ok(())
}

#[test]
fn two_partners_edit_apart_and_converge() -> Result<()> {
    let mut sim = Sim::new(7, 2, 1, 1_000)?;
    let mut acked = Vec::new();
    // Everyone syncs once so the joiners have the couple's document.
    sim.settle()?;
    acked.push((
        0,
        sim.devices[0].journal_mut().add(share("from A's phone"))?,
    ));
    acked.push((
        1,
        sim.devices[1].journal_mut().add(share("from A's tablet"))?,
    ));
    acked.push((2, sim.devices[2].journal_mut().add(share("from B"))?));
    let note = Body::ProcessingNote(ProcessingNote {
        text: "only mine".into(),
    });
    acked.push((0, sim.devices[0].journal_mut().add(note)?));
    sim.settle()?;
    assert_converged(&sim, &acked)?;
    ensure!(
        sim.devices.iter().all(|d| d.problems.is_empty()),
        "an honest relay caused a problem report"
    );
    // B's observer heard about A's records.
    ensure!(
        sim.devices[2].changed.contains(&acked[0].1),
        "B's observer was not told"
    );
    ensure!(
        sim.devices[2].journal().get(acked[3].1).is_err(),
        "B sees A's private note"
    );
    ensure!(
        sim.devices[1].journal().get(acked[3].1).is_ok(),
        "A's tablet lacks A's private note"
    );
    Ok(())
}

#[test]
fn a_new_device_starts_from_a_snapshot_and_the_relay_prunes() -> Result<()> {
    // Snapshots after every 3 chunks.
    let mut sim = Sim::new(11, 1, 1, 3)?;
    sim.settle()?;
    let mut acked = Vec::new();
    for n in 0..10 {
        let who = n % 2;
        acked.push((
            who,
            sim.devices[who]
                .journal_mut()
                .add(share(&format!("entry {n}")))?,
        ));
        sim.settle()?;
    }
    let couple = sim.couple_keys.space_id;
    ensure!(
        sim.relay.log_len(&couple) < 10,
        "the relay pruned nothing: {}",
        sim.relay.log_len(&couple)
    );
    // B's second device joins now: the early chunks are gone, so it must use the snapshot.
    let late = sim.join_device(1)?;
    sim.settle()?;
    assert_converged(&sim, &acked)?;
    let state = sim.devices[late].journal().sync_state(Space::Couple)?;
    ensure!(
        state.snapshot_covers > 0,
        "the new device did not start from the snapshot"
    );
    ensure!(
        sim.devices.iter().all(|d| d.problems.is_empty()),
        "problems: {:?}",
        sim.devices[0].problems
    );
    Ok(())
}

#[test]
fn a_tampered_chunk_is_refused_and_reported_and_the_rest_syncs() -> Result<()> {
    let mut sim = Sim::new(5, 1, 1, 1_000)?;
    sim.settle()?;
    sim.relay.corrupt_next(sim.couple_keys.space_id);
    let bad = sim.devices[0]
        .journal_mut()
        .add(share("altered on the relay"))?;
    sim.settle()?;
    let from_b = sim.devices[1].journal_mut().add(share("from B"))?;
    sim.settle()?;
    let b = &sim.devices[1];
    ensure!(
        b.journal().get(bad).is_err(),
        "the tampered chunk was applied"
    );
    ensure!(
        b.problems
            .iter()
            .any(|p| matches!(p.kind, ProblemKind::Tampered { .. })),
        "the tampering was not reported: {:?}",
        b.problems
    );
    // Sync goes on: B's own edits still reach A.
    ensure!(
        sim.devices[0].journal().get(from_b).is_ok(),
        "A did not get B's record"
    );
    Ok(())
}

#[test]
fn a_refused_chunk_heals_from_a_later_snapshot() -> Result<()> {
    // Snapshots after every 2 chunks, so A soon uploads one that covers the altered chunk.
    let mut sim = Sim::new(9, 1, 1, 2)?;
    sim.settle()?;
    sim.relay.corrupt_next(sim.couple_keys.space_id);
    let bad = sim.devices[0]
        .journal_mut()
        .add(share("altered on the relay"))?;
    sim.settle()?;
    ensure!(
        sim.devices[1].journal().get(bad).is_err(),
        "the altered chunk was applied"
    );
    let later = sim.devices[0].journal_mut().add(share("later"))?;
    sim.settle()?;
    sim.devices[0].journal_mut().add(share("later still"))?;
    sim.settle()?;
    let b = sim.devices[1].journal();
    ensure!(
        b.get(bad).is_ok(),
        "B never healed the refused chunk from A's snapshot"
    );
    ensure!(b.get(later).is_ok(), "B lacks A's later record");
    ensure!(
        sim.devices[1]
            .problems
            .iter()
            .any(|p| matches!(p.kind, ProblemKind::Tampered { .. })),
        "the tampering was not reported"
    );
    assert_converged(&sim, &[(0, bad), (0, later)])
}

#[derive(Clone, Debug)]
enum Step {
    Add(usize, u8, u8),
    EditShare(usize, u8),
    Consent(usize, u8),
    Sync(usize),
    Deliver(u8),
    Advance(u16),
    Partition(usize),
    Heal(usize),
    RestartRelay,
    RestartDevice(usize),
    Faults(u8, u8, u16),
}

fn step() -> impl Strategy<Value = Step> {
    let d = 0..4usize;
    prop_oneof![
        6 => (d.clone(), 0..4u8, any::<u8>()).prop_map(|(d, k, x)| Step::Add(d, k, x)),
        2 => (d.clone(), any::<u8>()).prop_map(|(d, x)| Step::EditShare(d, x)),
        1 => (d.clone(), any::<u8>()).prop_map(|(d, x)| Step::Consent(d, x)),
        4 => d.clone().prop_map(Step::Sync),
        8 => (1..20u8).prop_map(Step::Deliver),
        3 => (0..30_000u16).prop_map(Step::Advance),
        1 => d.clone().prop_map(Step::Partition),
        1 => d.clone().prop_map(Step::Heal),
        1 => Just(Step::RestartRelay),
        1 => d.prop_map(Step::RestartDevice),
        1 => (0..30u8, 0..30u8, 0..5_000u16).prop_map(|(a, b, c)| Step::Faults(a, b, c)),
    ]
}

fn run(seed: u64, a: usize, b: usize, snapshot_every: u64, steps: Vec<Step>) -> Result<()> {
    let mut sim = Sim::new(seed, a, b, snapshot_every)?;
    let n = sim.devices.len();
    let mut acked: Vec<(usize, RecordId)> = Vec::new();
    let day = LocalDate::from_unix_ms(sim::T0, 0);
    for s in steps {
        match s {
            Step::Add(d, kind, x) => {
                let d = d % n;
                let body = match kind {
                    0 => share(&format!("share {x}")),
                    1 => Body::HonestyMoment(HonestyMoment {
                        text: format!("honest {x}"),
                        ..Default::default()
                    }),
                    2 => Body::ProcessingNote(ProcessingNote {
                        text: format!("private {x}"),
                    }),
                    _ => Body::CheckIn(CheckIn {
                        local_date: Some(day.add_days(i32::from(x % 4))),
                        safety: Some(x % 11),
                        ..Default::default()
                    }),
                };
                if let Ok(id) = sim.devices[d].journal_mut().add(body) {
                    acked.push((d, id));
                }
                sim.event(d, Event::LocalEdit)?;
            }
            Step::EditShare(d, x) => {
                let d = d % n;
                let j = sim.devices[d].journal_mut();
                let me = j.me();
                let mine: Vec<_> = j
                    .records()?
                    .into_iter()
                    .filter(|r| r.author == me && matches!(r.body, Body::Share(_)))
                    .collect();
                if let Some(r) = mine.get(usize::from(x) % mine.len().max(1)) {
                    let _ = j.edit(r.id, share(&format!("edited {x}")));
                }
            }
            Step::Consent(d, x) => {
                let d = d % n;
                let j = sim.devices[d].journal_mut();
                if x % 3 == 0 {
                    let b = Boundary {
                        area: BoundaryArea::Space,
                        text: format!("boundary {x}"),
                        ..Default::default()
                    };
                    if let Ok(id) = j.add(Body::Boundary(b)) {
                        acked.push((d, id));
                    }
                } else {
                    let bs: Vec<_> = j
                        .records()?
                        .into_iter()
                        .filter(|r| matches!(r.body, Body::Boundary(_)))
                        .collect();
                    if let Some(r) = bs.get(usize::from(x) % bs.len().max(1)) {
                        let _ = j.consent(r.id, ConsentState::Agreed);
                    }
                }
            }
            Step::Sync(d) => sim.event(d % n, Event::Start)?,
            Step::Deliver(k) => {
                for _ in 0..k {
                    if !sim.deliver_one()? {
                        break;
                    }
                }
            }
            Step::Advance(ms) => sim.advance(i64::from(ms))?,
            Step::Partition(d) => sim.devices[d % n].offline = true,
            Step::Heal(d) => sim.devices[d % n].offline = false,
            Step::RestartRelay => sim.restart_relay(),
            Step::RestartDevice(d) => sim.restart_device(d % n)?,
            Step::Faults(drop, dup, delay) => {
                sim.faults = Faults {
                    drop: u64::from(drop),
                    duplicate: u64::from(dup),
                    max_delay_ms: u64::from(delay),
                }
            }
        }
    }
    sim.settle()?;
    assert_converged(&sim, &acked)?;
    for d in &sim.devices {
        ensure!(
            d.problems.is_empty(),
            "{} reported {:?} against an honest relay",
            d.name,
            d.problems
        );
        // Every record appears once: nothing was applied twice in a way that duplicated it.
        let ids: Vec<_> = d.journal().records()?.into_iter().map(|r| r.id).collect();
        let mut unique = ids.clone();
        unique.dedup();
        ensure!(
            ids.len() == unique.len(),
            "{} has duplicate records",
            d.name
        );
    }
    Ok(())
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 256, ..ProptestConfig::default() })]

    #[test]
    fn random_schedules_converge(
        seed in any::<u64>(),
        a in 1..=2usize,
        b in 1..=2usize,
        snapshot_every in prop_oneof![Just(2u64), Just(5), Just(1_000)],
        steps in prop::collection::vec(step(), 0..60),
    ) {
        if let Err(e) = run(seed, a, b, snapshot_every, steps) {
            prop_assert!(false, "{e:#}");
        }
    }
}
