//! A key holder's chunk that would inflate far past its size is refused before Automerge reads
//! it: the phone reading it never holds what it would inflate to, and sync goes on.

// Only to watch allocations: a global allocator is an unsafe trait, each call passed on to
// the system's unchanged.
#![allow(unsafe_code)]

mod sim;

use std::{
    alloc::{GlobalAlloc, Layout, System},
    cell::Cell,
    collections::BTreeSet,
    io::Write,
};

use anyhow::{Result, ensure};
use mend_core::{
    Body, Journal, Space,
    crypto::{ChunkAad, SpaceSecret, seal_chunk},
    model::Share,
    sync::{
        Action, Entry, Event, Mode, ProblemKind, Request, Response, SpaceLink, SyncEngine,
        SyncStore,
    },
};
use sim::Sim;

/// Counts the bytes this thread holds, and the most it held: the simulation runs every device
/// on the test's own thread.
struct Counting;

thread_local! {
    static HELD: Cell<usize> = const { Cell::new(0) };
    static PEAK: Cell<usize> = const { Cell::new(0) };
}

// SAFETY: every call goes to the system allocator unchanged; the counters only watch.
unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        let _ = HELD.try_with(|h| {
            let now = h.get().saturating_add(layout.size());
            h.set(now);
            let _ = PEAK.try_with(|p| p.set(p.get().max(now)));
        });
        // SAFETY: the caller's layout, passed on.
        unsafe { System.alloc(layout) }
    }

    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        let _ = HELD.try_with(|h| h.set(h.get().saturating_sub(layout.size())));
        // SAFETY: allocated above with this layout.
        unsafe { System.dealloc(ptr, layout) }
    }
}

#[global_allocator]
static COUNTING: Counting = Counting;

const INFLATED: usize = 256 << 20;

/// Automerge's compressed change chunk whose body inflates to `INFLATED` zero bytes.
fn bomb() -> Result<Vec<u8>> {
    bomb_of(INFLATED)
}

/// Automerge's compressed change chunk whose body inflates to `inflated` zero bytes.
fn bomb_of(inflated: usize) -> Result<Vec<u8>> {
    let mut e = flate2::write::DeflateEncoder::new(Vec::new(), flate2::Compression::best());
    let zeros = vec![0u8; 1 << 20];
    for _ in 0..inflated >> 20 {
        e.write_all(&zeros)?;
    }
    let body = e.finish()?;
    let mut out = vec![0x85, 0x6f, 0x4a, 0x83, 0, 0, 0, 0, 2];
    let mut len = body.len() as u64;
    loop {
        let b = (len & 0x7f) as u8;
        len >>= 7;
        if len == 0 {
            out.push(b);
            break;
        }
        out.push(b | 0x80);
    }
    out.extend_from_slice(&body);
    Ok(out)
}

/// Seals `change` as the couple's chunk `seq` of a device nobody introduced, under a signer
/// and signature nobody made, and puts it in the relay's log.
fn inject(sim: &mut Sim, change: &[u8], seq: u64) -> Result<()> {
    let mut plain = vec![1u8, 0, 0];
    plain.extend_from_slice(&1u32.to_be_bytes());
    plain.extend_from_slice(&[9; 16]);
    plain.extend_from_slice(&[9; 64]);
    plain.extend_from_slice(&(change.len() as u32).to_be_bytes());
    plain.extend_from_slice(change);
    let device = [7u8; 16];
    let aad = ChunkAad {
        space_id: sim.couple_keys.space_id,
        device,
        device_seq: seq,
    };
    let payload = seal_chunk(&sim.couple_keys.content, &aad, &plain)?;
    sim.relay
        .inject(sim.couple_keys.space_id, device, seq, payload);
    Ok(())
}

fn unmergeable(sim: &Sim, d: usize, seq: u64) -> bool {
    sim.devices[d]
        .problems
        .iter()
        .any(|p| matches!(p.kind, ProblemKind::Unmergeable { device_seq, .. } if device_seq == seq))
}

#[test]
fn chunks_read_together_share_one_budget() -> Result<()> {
    // Alex's phone (0); Blake's phone (1).
    let mut sim = Sim::new(91, 1, 1, 1_000)?;
    sim.settle()?;
    // Each alone well within what one payload may inflate to; together, past it: each is read
    // in a batch of its own (and none refused for where the page broke).
    let change = bomb_of(12 << 20)?;
    for seq in 1..=3 {
        inject(&mut sim, &change, seq)?;
    }
    let before = sim.devices[0].sent.len();
    sim.round_of(0)?;
    let pulls: BTreeSet<u64> = sim.devices[0].sent[before..]
        .iter()
        .filter_map(|(_, _, r)| match r {
            Request::Pull {
                space: Space::Couple,
                after,
                ..
            } => Some(*after),
            _ => None,
        })
        .collect();
    ensure!(pulls.len() >= 3, "read in {} batches", pulls.len());
    for seq in 1..=3 {
        ensure!(!unmergeable(&sim, 0, seq), "chunk {seq} was refused unread");
    }
    Ok(())
}

#[test]
fn a_chunk_that_would_inflate_past_its_budget_is_refused_unread() -> Result<()> {
    // Alex's phone (0); Blake's phone (1).
    let mut sim = Sim::new(90, 1, 1, 1_000)?;
    sim.settle()?;
    let change = bomb()?;
    ensure!(change.len() < 1 << 20, "{} bytes", change.len());
    inject(&mut sim, &change, 1)?;

    let before = HELD.with(Cell::get);
    PEAK.with(|p| p.set(before));
    sim.round_of(0)?;
    let grew = PEAK.with(Cell::get).saturating_sub(before);
    ensure!(
        grew < INFLATED / 4,
        "reading the chunk held {} MiB",
        grew >> 20
    );
    ensure!(
        unmergeable(&sim, 0, 1),
        "not reported: {:?}",
        sim.devices[0].problems
    );

    // Sync goes on past it.
    sim.devices[1].journal_mut().add(Body::Share(Share {
        feeling: "after it".into(),
        tough_question: false,
    }))?;
    sim.settle()?;
    let read = sim.devices[0]
        .journal()
        .records()?
        .into_iter()
        .any(|r| matches!(r.body, Body::Share(s) if s.feeling == "after it"));
    ensure!(read, "what came after the chunk did not arrive");
    Ok(())
}

/// The requests among `actions`, taken out of them.
fn sent(actions: &mut Vec<Action>) -> Vec<Request> {
    actions
        .drain(..)
        .filter_map(|a| match a {
            Action::Send(request) => Some(request),
            _ => None,
        })
        .collect()
}

/// A live socket delivers two payloads that together pass the budget: the batch ends before the
/// second, whatever the old socket still delivers is dropped, and a new socket reads from the
/// second on. (Automerge passes over what these payloads hold: nothing is reported.)
#[test]
fn a_live_batch_ended_for_its_budget_goes_on_from_the_first_entry_not_applied() -> Result<()> {
    let dir = tempfile::tempdir()?;
    let mut journal = Journal::create(&dir.path().join("j.db"), "Alex")?;
    let keys = SpaceSecret::generate()?.derive_keys();
    let link = SpaceLink {
        space: Space::Couple,
        keys: keys.clone(),
    };
    let mut engine = SyncEngine::new(*journal.device().as_bytes(), vec![link], Mode::Live, 7);
    let now = 1_800_000_000_000;
    let mut actions = engine.handle(&mut journal, now, Event::Start)?;
    // Answers creations; the cursors of the subscriptions asked for.
    let answer = |engine: &mut SyncEngine,
                  journal: &mut Journal,
                  actions: &mut Vec<Action>|
     -> Result<Vec<u64>> {
        let mut subscribed = Vec::new();
        for _ in 0..10 {
            for request in sent(actions) {
                match request {
                    Request::Create { space } => actions.extend(engine.handle(
                        journal,
                        now,
                        Event::Response(Response::Created { space, new: false }),
                    )?),
                    Request::Subscribe { after, .. } => subscribed.push(after),
                    _ => {}
                }
            }
        }
        Ok(subscribed)
    };
    ensure!(answer(&mut engine, &mut journal, &mut actions)? == [0]);
    // Each from a device of its own, so no number is missing.
    let chunk = |seq: u64, plain: &[u8]| -> Result<Entry> {
        let device = [u8::try_from(seq)?; 16];
        let aad = ChunkAad {
            space_id: keys.space_id,
            device,
            device_seq: 1,
        };
        Ok(Entry::Chunk(mend_protocol::Chunk {
            relay_seq: seq,
            device_id: mend_protocol::DeviceId(device),
            device_seq: 1,
            payload: seal_chunk(&keys.content, &aad, plain)?,
        }))
    };
    let bomb = bomb_of(12 << 20)?;
    let mut deliver = |entries: Vec<Entry>| -> Result<Vec<Action>> {
        Ok(engine.handle(
            &mut journal,
            now,
            Event::Response(Response::Chunks {
                space: Space::Couple,
                entries,
            }),
        )?)
    };
    let mut actions = deliver(vec![chunk(1, &bomb)?, chunk(2, &bomb)?, chunk(3, b"x")?])?;
    // The old socket goes on with what follows.
    actions.extend(deliver(vec![chunk(4, b"x")?])?);
    // The new one reads from after the first.
    actions.extend(deliver(vec![
        chunk(2, &bomb)?,
        chunk(3, b"x")?,
        chunk(4, b"x")?,
    ])?);
    // Each of the four was read once: none skipped, none read twice.
    ensure!(engine.applied() == 4, "{} read", engine.applied());
    ensure!(journal.sync_state(Space::Couple)?.cursor == 4);
    let subscribed: Vec<u64> = sent(&mut actions)
        .into_iter()
        .filter_map(|r| match r {
            Request::Subscribe { after, .. } => Some(after),
            _ => None,
        })
        .collect();
    ensure!(subscribed == [1], "subscribed after {subscribed:?}");
    Ok(())
}
