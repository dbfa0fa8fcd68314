//! A deterministic simulation of devices, a relay and the network between them, driving the
//! sans-IO sync engine. The network can drop, duplicate, reorder and delay messages, partition
//! a device, and restart the relay or a device; everything is decided by a seed.

#![allow(dead_code)]

use std::{
    collections::{BTreeMap, HashMap},
    path::PathBuf,
};

use anyhow::{Result, bail};
use mend_core::{
    JoinSource, Journal, OpenOptions, RecordId, Space,
    crypto::{DeviceKey, PartnerIdentity, Signer, SpaceKeys, SpaceSecret},
    journal::OldSpace,
    store::Durability,
    sync::{Action, Event, Failure, Mode, Request, Response, SpaceLink, SyncEngine, SyncStatus},
};
use mend_protocol::{Ack, Chunk, ErrorCode, Page, Rollup, Sizes, Snapshot};

pub const T0: i64 = 1_795_000_000_000;
const PAGE_LIMIT: usize = 4;

/// The relay model: the same contract as mend-relay, in memory. Its state survives a restart
/// (it is durable); messages in flight do not.
#[derive(Default)]
pub struct SimRelay {
    spaces: HashMap<[u8; 32], RelaySpace>,
    /// Spaces an old epoch left, deleted: every request on them answers `410 space_retired`.
    pub retired: std::collections::HashSet<[u8; 32]>,
    /// The announcement each space's epoch ends with: the first one offered.
    pub successors: HashMap<[u8; 32], [u8; 32]>,
    /// A copy of every space taken by [`SimRelay::backup`], for [`SimRelay::restore`].
    backup: Option<HashMap<[u8; 32], RelaySpace>>,
}

#[derive(Clone, Default)]
pub struct RelaySpace {
    pub head: u64,
    pub log: Vec<Chunk>,
    /// (device, device sequence) → (relay sequence, the payload stored under it).
    seen: HashMap<([u8; 16], u64), (u64, Vec<u8>)>,
    pub snapshot: Option<Snapshot>,
    /// When set, the next chunk stored is corrupted in storage (a tampering relay).
    corrupt_next: bool,
    /// When set, the next page claims a head of 0 (a lying relay).
    lie_next_page: bool,
    /// When set, snapshots are served altered.
    lie_snapshots: bool,
    /// A device created it (so a later create answers `200`).
    created: bool,
    /// The mark of every chunk ever stored, by relay sequence (kept after pruning).
    marks: HashMap<u64, [u8; 16]>,
    /// Pulls from below this answer `410 pruned` (a relay pruning what no snapshot covers).
    pruned_below: u64,
    /// Every page claims a head of 0 (a relay that answers "rewound" for ever).
    lie_every_page: bool,
    /// Every push is answered `seq_conflict`.
    conflict_every_push: bool,
    /// Every pull answers `410 pruned`, however recent its cursor.
    prune_every_pull: bool,
    /// Every page is empty, says there is more, and does not move past what was asked.
    stuck_every_page: bool,
    /// Rollups stored, each in place of the chunks it stands for.
    pub rollups: Vec<Rollup>,
    /// A snapshot leaves the chunks (and rollups) it covers in place, served to pulls that ask
    /// for pruned ones, until [`SimRelay::sweep`] (a relay within its prune grace).
    pub keep_pruned: bool,
    /// Pulls from below this are never served pruned chunks: [`SimRelay::sweep`] deleted them.
    swept_below: u64,
    /// What pulls served: chunks, rollups, and their payload bytes.
    pub served_chunks: u64,
    pub served_rollups: u64,
    pub served_bytes: u64,
}

impl RelaySpace {
    /// Appends a chunk at the next relay sequence, keeping its mark.
    fn append(&mut self, chunk: Chunk) {
        self.marks.insert(chunk.relay_seq, chunk.mark());
        self.log.push(chunk);
    }

    /// The rollup served in place of this chunk to a read from `after`, if any.
    fn rolled_for(&self, c: &Chunk, after: u64) -> Option<&Rollup> {
        self.rollups.iter().find(|r| {
            r.device_id == c.device_id
                && r.first_seq <= c.device_seq
                && c.device_seq <= r.last_seq
                && r.relay_seq > after
        })
    }

    /// Chunks and rollups a read from `after` serves (to `device`), in relay order.
    fn entries(
        &self,
        after: u64,
        device: [u8; 16],
        rollups: bool,
    ) -> Vec<(u64, Option<Rollup>, Option<Chunk>)> {
        let mut out: Vec<(u64, Option<Rollup>, Option<Chunk>)> = Vec::new();
        for c in self.log.iter().filter(|c| c.relay_seq > after) {
            if rollups && let Some(r) = self.rolled_for(c, after) {
                // Served once, at its first chunk's place; the others are passed over.
                let here = r.relay_seq == c.relay_seq && r.device_id.0 != device;
                out.push((c.relay_seq, here.then(|| r.clone()), None));
                continue;
            }
            let mine = c.device_id.0 == device;
            out.push((c.relay_seq, None, (!mine).then(|| c.clone())));
        }
        out
    }
}

impl SimRelay {
    /// `PUT …/successor`: keeps the first announcement offered and answers it. `None` for a
    /// space that is retired.
    pub fn claim_successor(&mut self, space_id: [u8; 32], id: [u8; 32]) -> Option<[u8; 32]> {
        if self.retired.contains(&space_id) {
            return None;
        }
        Some(*self.successors.entry(space_id).or_insert(id))
    }

    fn handle(&mut self, space_id: [u8; 32], device: [u8; 16], req: &Request) -> Response {
        let space = req.space();
        if self.retired.contains(&space_id) {
            return Response::Failed {
                space,
                failure: Failure::Refused {
                    code: ErrorCode::SpaceRetired,
                    retry_after_ms: 0,
                },
            };
        }
        let s = self.spaces.entry(space_id).or_default();
        match req {
            Request::Create { .. } => {
                let new = !s.created;
                s.created = true;
                Response::Created { space, new }
            }
            Request::Push { push, .. } => {
                if s.conflict_every_push {
                    return Response::Failed {
                        space,
                        failure: Failure::Refused {
                            code: ErrorCode::SeqConflict,
                            retry_after_ms: 0,
                        },
                    };
                }
                if let Some((seq, payload)) = s.seen.get(&(push.device_id.0, push.device_seq)) {
                    if *payload != push.payload {
                        // Like mend-relay: a number reused with another payload.
                        return Response::Failed {
                            space,
                            failure: Failure::Refused {
                                code: ErrorCode::SeqConflict,
                                retry_after_ms: 0,
                            },
                        };
                    }
                    let ack = Ack {
                        device_seq: push.device_seq,
                        relay_seq: *seq,
                        duplicate: true,
                    };
                    return Response::Acked { space, ack };
                }
                s.head += 1;
                let mut payload = push.payload.clone();
                if s.corrupt_next {
                    s.corrupt_next = false;
                    if let Some(b) = payload.last_mut() {
                        *b ^= 0x40;
                    }
                }
                s.append(Chunk {
                    relay_seq: s.head,
                    device_id: push.device_id,
                    device_seq: push.device_seq,
                    payload,
                });
                s.seen.insert(
                    (push.device_id.0, push.device_seq),
                    (s.head, push.payload.clone()),
                );
                Response::Acked {
                    space,
                    ack: Ack {
                        device_seq: push.device_seq,
                        relay_seq: s.head,
                        duplicate: false,
                    },
                }
            }
            Request::PushRollup { rollup, .. } => {
                let refuse = Response::Failed {
                    space,
                    failure: Failure::Refused {
                        code: ErrorCode::RollupMismatch,
                        retry_after_ms: 0,
                    },
                };
                if s.rollups.iter().any(|r| {
                    r.device_id == rollup.device_id
                        && r.first_seq == rollup.first_seq
                        && r.last_seq == rollup.last_seq
                }) {
                    return Response::RollupStored {
                        space,
                        last_seq: rollup.last_seq,
                    };
                }
                let held = |seq: u64| {
                    s.log
                        .iter()
                        .find(|c| c.device_id == rollup.device_id && c.device_seq == seq)
                        .map(|c| c.relay_seq)
                };
                let overlaps = s.rollups.iter().any(|r| {
                    r.device_id == rollup.device_id
                        && r.first_seq <= rollup.last_seq
                        && rollup.first_seq <= r.last_seq
                });
                let seqs: Option<Vec<u64>> =
                    (rollup.first_seq..=rollup.last_seq).map(held).collect();
                let (Some(seqs), false) = (seqs, overlaps) else {
                    return refuse;
                };
                let (Some(&first), Some(&last)) = (seqs.first(), seqs.last()) else {
                    return refuse;
                };
                let payload = rollup.payload.clone();
                s.rollups.push(Rollup {
                    relay_seq: first,
                    last_relay_seq: last,
                    device_id: rollup.device_id,
                    first_seq: rollup.first_seq,
                    last_seq: rollup.last_seq,
                    payload,
                });
                Response::RollupStored {
                    space,
                    last_seq: rollup.last_seq,
                }
            }
            Request::Sizes { after, .. } => {
                let entries = s.entries(*after, device, true);
                let bytes = entries
                    .iter()
                    .map(|(_, r, c)| {
                        r.as_ref().map_or(0, |r| r.payload.len())
                            + c.as_ref().map_or(0, |c| c.payload.len())
                    })
                    .sum::<usize>();
                let covers = s.snapshot.as_ref().map_or(0, |x| x.covers);
                Response::Sizes {
                    space,
                    sizes: Sizes {
                        head: s.head,
                        snapshot: s
                            .snapshot
                            .as_ref()
                            .map(|x| (x.covers, x.payload.len() as u64)),
                        tail_bytes: bytes as u64,
                        tail_entries: entries
                            .iter()
                            .filter(|(_, r, c)| r.is_some() || c.is_some())
                            .count() as u64,
                        // Without `keep_pruned` this relay deletes what a snapshot covers at once.
                        tail_held: *after >= s.pruned_below
                            && (*after >= covers || (s.keep_pruned && *after >= s.swept_below)),
                    },
                }
            }
            Request::Pull { after, .. } | Request::Subscribe { after, .. } => {
                let (id, rollups, pruned) = match req {
                    Request::Pull {
                        id,
                        rollups,
                        pruned,
                        ..
                    } => (*id, *rollups, *pruned),
                    Request::Subscribe { rollups, .. } => (0, *rollups, false),
                    _ => (0, false, false),
                };
                let covers = s.snapshot.as_ref().map_or(0, |x| x.covers);
                let held = pruned && s.keep_pruned && *after >= s.pruned_below.max(s.swept_below);
                if (*after < covers.max(s.pruned_below) && !held) || s.prune_every_pull {
                    return Response::Failed {
                        space,
                        failure: Failure::Pruned,
                    };
                }
                let mut chunks = Vec::new();
                let mut served = Vec::new();
                let mut next_after = *after;
                let mut more = false;
                // A page ends after PAGE_LIMIT entries, but never inside a rollup's range.
                let mut reach = 0;
                let mut taken = 0;
                for (seq, rollup, chunk) in s.entries(*after, device, rollups) {
                    if taken >= PAGE_LIMIT && seq > reach {
                        more = true;
                        break;
                    }
                    next_after = seq;
                    if let Some(r) = rollup {
                        reach = reach.max(r.last_relay_seq);
                        served.push(r);
                        taken += 1;
                    }
                    if let Some(c) = chunk {
                        chunks.push(c);
                        taken += 1;
                    }
                }
                if !more {
                    next_after = s.head;
                }
                s.served_chunks += chunks.len() as u64;
                s.served_rollups += served.len() as u64;
                s.served_bytes += chunks.iter().map(|c| c.payload.len() as u64).sum::<u64>()
                    + served.iter().map(|r| r.payload.len() as u64).sum::<u64>();
                if s.stuck_every_page {
                    return Response::Page {
                        space,
                        after: *after,
                        id,
                        page: Page {
                            head: s.head,
                            next_after: *after,
                            more: true,
                            after_mark: None,
                            next_mark: None,
                            chunks: Vec::new(),
                            rollups: Vec::new(),
                        },
                    };
                }
                if std::mem::take(&mut s.lie_next_page) || s.lie_every_page {
                    return Response::Page {
                        space,
                        after: *after,
                        id,
                        page: Page {
                            head: 0,
                            next_after,
                            more: false,
                            after_mark: None,
                            next_mark: None,
                            chunks: Vec::new(),
                            rollups: Vec::new(),
                        },
                    };
                }
                Response::Page {
                    space,
                    after: *after,
                    id,
                    page: Page {
                        head: s.head,
                        next_after,
                        more,
                        after_mark: s.marks.get(after).copied(),
                        next_mark: s.marks.get(&next_after).copied(),
                        chunks,
                        rollups: served,
                    },
                }
            }
            Request::GetSnapshot { .. } => {
                let mut snapshot = s.snapshot.clone();
                if let Some(b) = snapshot
                    .as_mut()
                    .and_then(|x| x.payload.last_mut())
                    .filter(|_| s.lie_snapshots)
                {
                    *b ^= 0x01;
                }
                Response::Snapshot { space, snapshot }
            }
            Request::PutSnapshot { snapshot, .. } => {
                let old = s.snapshot.as_ref().map_or(0, |x| x.covers);
                if snapshot.covers > s.head {
                    return Response::Failed {
                        space,
                        failure: Failure::Refused {
                            code: ErrorCode::SnapshotBeyondHead,
                            retry_after_ms: 0,
                        },
                    };
                }
                if snapshot.covers < old {
                    return Response::Failed {
                        space,
                        failure: Failure::Refused {
                            code: ErrorCode::SnapshotStale,
                            retry_after_ms: 0,
                        },
                    };
                }
                s.snapshot = Some(snapshot.clone());
                if !s.keep_pruned {
                    s.log.retain(|c| c.relay_seq > snapshot.covers);
                    s.rollups.retain(|r| r.relay_seq > snapshot.covers);
                }
                Response::SnapshotStored {
                    space,
                    covers: snapshot.covers,
                }
            }
        }
    }

    /// Keeps a copy of everything the relay holds (its backup).
    pub fn backup(&mut self) {
        self.backup = Some(self.spaces.clone());
    }

    /// Goes back to the last backup (a restore after losing its disk); false without one.
    pub fn restore(&mut self) -> bool {
        match self.backup.clone() {
            Some(b) => {
                self.spaces = b;
                true
            }
            None => false,
        }
    }

    /// A space as the relay holds it, to forge or inspect.
    pub fn space_mut(&mut self, space_id: [u8; 32]) -> &mut RelaySpace {
        self.spaces.entry(space_id).or_default()
    }

    /// Appends a chunk of the relay's own making (forged, replayed, or sealed by a key holder
    /// who made it unmergeable) as the next in the log.
    pub fn inject(
        &mut self,
        space_id: [u8; 32],
        device: [u8; 16],
        device_seq: u64,
        payload: Vec<u8>,
    ) {
        let s = self.space_mut(space_id);
        s.head += 1;
        let relay_seq = s.head;
        s.append(Chunk {
            relay_seq,
            device_id: mend_protocol::DeviceId(device),
            device_seq,
            payload,
        });
    }

    /// A push from a client outside the simulation (a forging one), handled as any push:
    /// a number already taken under that device id with another payload is refused.
    pub fn push_from(&mut self, space_id: [u8; 32], push: mend_protocol::Push) -> Response {
        let req = Request::Push {
            space: Space::Couple,
            push,
        };
        self.handle(space_id, [0; 16], &req)
    }

    /// A rollup from a client outside the simulation (a partner's modified app), handled as
    /// any rollup.
    pub fn push_rollup_from(
        &mut self,
        space_id: [u8; 32],
        rollup: mend_protocol::RollupPush,
    ) -> Response {
        let req = Request::PushRollup {
            space: Space::Couple,
            rollup,
        };
        self.handle(space_id, [0; 16], &req)
    }

    /// Pulls of `space_id` from below its head answer `410 pruned` until the relay behaves.
    pub fn prune_early(&mut self, space_id: [u8; 32]) {
        let s = self.space_mut(space_id);
        s.pruned_below = s.head;
    }

    /// Every page of `space_id` claims a head of 0, every push is answered `seq_conflict`, or
    /// every pull `410 pruned`, until the relay behaves.
    pub fn loop_forever(&mut self, space_id: [u8; 32], rewind: bool, conflict: bool, prune: bool) {
        let s = self.space_mut(space_id);
        s.lie_every_page = rewind;
        s.conflict_every_push = conflict;
        s.prune_every_pull = prune;
    }

    /// Every page of `space_id` is empty, says there is more, and stays where it was asked.
    pub fn stick(&mut self, space_id: [u8; 32]) {
        self.space_mut(space_id).stuck_every_page = true;
    }

    /// The next page of `space_id` claims a head of 0.
    pub fn lie_next_page(&mut self, space_id: [u8; 32]) {
        self.space_mut(space_id).lie_next_page = true;
    }

    /// Snapshots of every space are served altered (or honestly again).
    pub fn lie_snapshots(&mut self, lie: bool) {
        for s in self.spaces.values_mut() {
            s.lie_snapshots = lie;
        }
    }

    /// Stores a copy of chunk `pick` (mod the log) again as the next one: a replay.
    pub fn replay(&mut self, space_id: [u8; 32], pick: usize) {
        let s = self.space_mut(space_id);
        if s.log.is_empty() {
            return;
        }
        let mut c = s.log[pick % s.log.len()].clone();
        s.head += 1;
        c.relay_seq = s.head;
        s.append(c);
    }

    /// Behaves again: no lie pending.
    pub fn behave(&mut self) {
        for s in self.spaces.values_mut() {
            s.lie_next_page = false;
            s.lie_snapshots = false;
            s.corrupt_next = false;
            s.pruned_below = 0;
            s.lie_every_page = false;
            s.conflict_every_push = false;
            s.prune_every_pull = false;
            s.stuck_every_page = false;
        }
    }

    /// Deletes what the snapshot of `space_id` covers (the prune grace is over).
    pub fn sweep(&mut self, space_id: [u8; 32]) {
        let s = self.space_mut(space_id);
        let covers = s.snapshot.as_ref().map_or(0, |x| x.covers);
        s.log.retain(|c| c.relay_seq > covers);
        s.rollups.retain(|r| r.relay_seq > covers);
        s.swept_below = covers;
    }

    /// How many rollups the relay holds for a space.
    pub fn rollup_count(&self, space_id: &[u8; 32]) -> usize {
        self.spaces.get(space_id).map_or(0, |s| s.rollups.len())
    }

    /// Makes the relay corrupt the next chunk it stores in `space_id`.
    pub fn corrupt_next(&mut self, space_id: [u8; 32]) {
        self.spaces.entry(space_id).or_default().corrupt_next = true;
    }

    /// How many chunks the relay holds for a space (after pruning).
    pub fn log_len(&self, space_id: &[u8; 32]) -> usize {
        self.spaces.get(space_id).map_or(0, |s| s.log.len())
    }
}

/// Network faults, as probabilities in percent.
#[derive(Clone, Copy, Debug, Default)]
pub struct Faults {
    pub drop: u64,
    pub duplicate: u64,
    pub max_delay_ms: u64,
}

enum Payload {
    ToRelay(Request),
    ToDevice(Response),
}

struct InFlight {
    at: i64,
    order: u64,
    device: usize,
    payload: Payload,
}

pub struct Device {
    pub name: String,
    pub partner: usize,
    pub path: PathBuf,
    journal: Option<Journal>,
    pub engine: SyncEngine,
    links: Vec<SpaceLink>,
    pub changed: Vec<RecordId>,
    pub status: SyncStatus,
    /// Every problem any engine of this device ever reported.
    pub problems: Vec<mend_core::sync::Problem>,
    pub offline: bool,
    /// Every request its engines sent: (when, which round of this device, what).
    pub sent: Vec<(i64, u64, Request)>,
    /// Counts the rounds: a start or a timer that made the engine send.
    rounds: u64,
    /// Its signing key (every device signs and checks the couple's changes).
    pub key: DeviceKey,
    /// Runs a version of Mend from before signing: it neither signs nor checks.
    pub legacy: bool,
    /// A new epoch began without it: it learned it was removed (and keeps only the old one).
    pub removed: bool,
    /// For a rejoin that replaced it: when a device of its partner had cancelled the ask.
    pub despite_cancel: Option<i64>,
    /// For a rejoin that replaced it: it came before this device had been shown the ask for
    /// the wait.
    pub early: bool,
    /// The secrets of the spaces it syncs (couple, personal).
    secrets: (SpaceSecret, SpaceSecret),
    /// The relay answered that its couple's space was retired: the journal moved on without
    /// it (only a removed device may ever see this; it counts as removed).
    pub retired_out: bool,
}

impl Device {
    pub fn journal(&self) -> &Journal {
        self.journal
            .as_ref()
            .expect("a device always has its journal between steps")
    }

    pub fn journal_mut(&mut self) -> &mut Journal {
        self.journal
            .as_mut()
            .expect("a device always has its journal between steps")
    }
}

pub struct Sim {
    pub now: i64,
    pub relay: SimRelay,
    /// The relay answers nothing before this time (it is down).
    pub relay_down_until: i64,
    /// The devices refuse the relay before this time (a captive portal presenting its own
    /// certificate).
    pub refused_until: i64,
    pub devices: Vec<Device>,
    pub faults: Faults,
    flight: Vec<InFlight>,
    rng: u64,
    order: u64,
    dir: tempfile::TempDir,
    pub couple_keys: SpaceKeys,
    pub personal_keys: Vec<SpaceKeys>,
    /// The secrets those keys derive from (a new epoch's spaces are retired by secret).
    couple_secret: SpaceSecret,
    personal_secrets: Vec<SpaceSecret>,
    /// Each partner's identity.
    pub identities: Vec<PartnerIdentity>,
    snapshot_every: u64,
    /// Engines make a rollup once this many acknowledged chunks wait.
    rollup_every: usize,
    /// Devices made now run a version from before signing.
    legacy: bool,
}

impl Sim {
    /// Two partners; partner 0 has `a_devices` devices, partner 1 `b_devices`.
    pub fn new(seed: u64, a_devices: usize, b_devices: usize, snapshot_every: u64) -> Result<Self> {
        Self::build(seed, a_devices, b_devices, snapshot_every, false)
    }

    /// [`Sim::new`] with every device on a version of Mend from before signing (see
    /// [`Sim::upgrade`]).
    pub fn new_legacy(
        seed: u64,
        a_devices: usize,
        b_devices: usize,
        snapshot_every: u64,
    ) -> Result<Self> {
        Self::build(seed, a_devices, b_devices, snapshot_every, true)
    }

    fn build(
        seed: u64,
        a_devices: usize,
        b_devices: usize,
        snapshot_every: u64,
        legacy: bool,
    ) -> Result<Self> {
        // In memory where the platform has it: the engine is under test, not the disk, and
        // the fsync each batch makes would otherwise take most of the time.
        let shm = std::path::Path::new("/dev/shm");
        let dir = if shm.is_dir() {
            tempfile::tempdir_in(shm)?
        } else {
            tempfile::tempdir()?
        };
        let couple = SpaceSecret::generate()?;
        let personal = [SpaceSecret::generate()?, SpaceSecret::generate()?];
        let mut sim = Self {
            now: T0,
            relay: SimRelay::default(),
            relay_down_until: 0,
            refused_until: 0,
            devices: Vec::new(),
            faults: Faults::default(),
            flight: Vec::new(),
            rng: seed | 1,
            order: 0,
            dir,
            couple_keys: couple.derive_keys(),
            personal_keys: vec![personal[0].derive_keys(), personal[1].derive_keys()],
            couple_secret: couple.clone(),
            personal_secrets: personal.to_vec(),
            identities: vec![PartnerIdentity::generate()?, PartnerIdentity::generate()?],
            snapshot_every,
            rollup_every: mend_core::sync::ROLLUP_EVERY,
            legacy,
        };
        let a_path = sim.dir.path().join("a0.db");
        let key = DeviceKey::generate()?;
        let first = Journal::create_with(&a_path, "Alex", sim.options(0, &key))?;
        let a_id = first.me();
        sim.add_device("a0", 0, a_path, first, key)?;
        for n in 1..a_devices {
            let path = sim.dir.path().join(format!("a{n}.db"));
            let source = JoinSource {
                couple: Vec::new(),
                personal: Some(Vec::new()),
                partner: Some(a_id),
            };
            let key = DeviceKey::generate()?;
            let j = Journal::join_with(&path, &source, "", sim.options(0, &key))?;
            sim.add_device(&format!("a{n}"), 0, path, j, key)?;
        }
        let mut b_id = None;
        for n in 0..b_devices {
            let path = sim.dir.path().join(format!("b{n}.db"));
            let source = JoinSource {
                couple: Vec::new(),
                personal: Some(Vec::new()),
                partner: b_id,
            };
            let source = if b_id.is_none() {
                JoinSource {
                    personal: None,
                    ..source
                }
            } else {
                source
            };
            let key = DeviceKey::generate()?;
            let j = Journal::join_with(&path, &source, "Blake", sim.options(1, &key))?;
            b_id = Some(j.me());
            sim.add_device(&format!("b{n}"), 1, path, j, key)?;
        }
        Ok(sim)
    }

    /// Every engine (and every engine made later) makes a rollup once `n` acknowledged chunks
    /// wait.
    pub fn set_rollup_every(&mut self, n: usize) {
        self.rollup_every = n;
        for d in &mut self.devices {
            d.engine.set_rollup_every(n);
        }
    }

    /// Adds another device for `partner` (joining through their personal space); returns it.
    pub fn join_device(&mut self, partner: usize) -> Result<usize> {
        let Some(owner) = self.devices.iter().find(|d| d.partner == partner) else {
            bail!("partner {partner} has no device yet");
        };
        let id = owner.journal().me();
        let n = self.devices.len();
        let path = self.dir.path().join(format!("late{n}.db"));
        let source = JoinSource {
            couple: Vec::new(),
            personal: Some(Vec::new()),
            partner: Some(id),
        };
        let key = DeviceKey::generate()?;
        let j = Journal::join_with(&path, &source, "", self.options(partner, &key))?;
        self.add_device(&format!("late{n}"), partner, path, j, key)?;
        Ok(n)
    }

    /// How a device of `partner` with `key` opens its journal.
    pub fn options(&self, partner: usize, key: &DeviceKey) -> OpenOptions {
        if self.legacy {
            return OpenOptions {
                durability: Durability::Normal,
                ..OpenOptions::default()
            };
        }
        OpenOptions {
            durability: Durability::Normal,
            device_key: Some(key.public()),
            identity: Some(self.identities[partner].public()),
            ..OpenOptions::default()
        }
    }

    /// What a device of `partner` with `key` signs with.
    pub fn signer(&self, partner: usize, journal: &Journal, key: &DeviceKey) -> Signer {
        Signer::new(
            self.couple_keys.space_id,
            &self.identities[partner],
            journal.me(),
            journal.device(),
            key.clone(),
            T0,
        )
    }

    /// A device's one-shot engine with this simulation's snapshot and rollup cadence.
    fn engine(&mut self, device: [u8; 16], links: Vec<SpaceLink>) -> SyncEngine {
        let seed = self.next_random();
        let mut engine = SyncEngine::new(device, links, Mode::Once, seed);
        engine.set_snapshot_every(self.snapshot_every);
        engine.set_rollup_every(self.rollup_every);
        engine
    }

    fn links(&self, partner: usize) -> Vec<SpaceLink> {
        vec![
            SpaceLink {
                space: Space::Couple,
                keys: self.couple_keys.clone(),
            },
            SpaceLink {
                space: Space::Personal,
                keys: self.personal_keys[partner].clone(),
            },
        ]
    }

    fn add_device(
        &mut self,
        name: &str,
        partner: usize,
        path: PathBuf,
        mut journal: Journal,
        key: DeviceKey,
    ) -> Result<()> {
        journal.set_clock(|| T0);
        if !self.legacy {
            journal.set_signer(self.signer(partner, &journal, &key))?;
        }
        let links = self.links(partner);
        let engine = self.engine(*journal.device().as_bytes(), links.clone());
        self.devices.push(Device {
            name: name.into(),
            partner,
            path,
            journal: Some(journal),
            engine,
            links,
            changed: Vec::new(),
            status: SyncStatus::default(),
            problems: Vec::new(),
            offline: false,
            sent: Vec::new(),
            rounds: 0,
            key,
            legacy: self.legacy,
            removed: false,
            despite_cancel: None,
            early: false,
            secrets: (
                self.couple_secret.clone(),
                self.personal_secrets[partner].clone(),
            ),
            retired_out: false,
        });
        Ok(())
    }

    pub fn next_random(&mut self) -> u64 {
        self.rng ^= self.rng << 13;
        self.rng ^= self.rng >> 7;
        self.rng ^= self.rng << 17;
        self.rng
    }

    fn chance(&mut self, percent: u64) -> bool {
        percent > 0 && self.next_random() % 100 < percent
    }

    /// The relay space a device's requests for `space` go to: its own link's, which a new
    /// epoch changes.
    fn space_id(&self, device: usize, space: Space) -> [u8; 32] {
        self.devices[device]
            .links
            .iter()
            .find(|l| l.space == space)
            .map_or([0u8; 32], |l| l.keys.space_id)
    }

    /// Starts a new epoch on device `d` (see `Journal::rotate`): the device moves once the
    /// relay holds the announcement, the others as they read it.
    pub fn rotate(
        &mut self,
        d: usize,
        reason: mend_core::journal::Reason,
        remove: &[usize],
    ) -> Result<()> {
        let gone: Vec<_> = remove
            .iter()
            .map(|&r| self.devices[r].journal().device())
            .collect();
        self.devices[d].journal_mut().rotate(reason, &gone)?;
        Ok(())
    }

    /// Moves device `d` into a new epoch if its journal holds one for it; marks it removed if
    /// one began without it.
    fn follow_epoch(&mut self, device: usize) -> Result<()> {
        let d = &self.devices[device];
        if d.legacy || d.removed || d.journal.is_none() {
            return Ok(());
        }
        // Out of reach, a device cannot learn which announcement the relay kept: it waits.
        if d.offline || self.now < self.relay_down_until {
            return Ok(());
        }
        let Some(offer) = d.journal().epoch_offer()? else {
            return Ok(());
        };
        let space_id = self.space_id(device, Space::Couple);
        let Some(kept) = self.relay.claim_successor(space_id, offer) else {
            return Ok(());
        };
        let d = &self.devices[device];
        let news = d.journal().epoch_news(&d.key, &kept)?;
        let step = match news {
            mend_core::journal::EpochNews::Current => return Ok(()),
            mend_core::journal::EpochNews::Removed {
                despite_cancel,
                early,
                ..
            } => {
                self.devices[device].removed = true;
                self.devices[device].despite_cancel = despite_cancel;
                self.devices[device].early = early;
                return Ok(());
            }
            mend_core::journal::EpochNews::Move(step) => *step,
        };
        let secrets = step.secrets.clone();
        let partner = d.partner;
        let key = d.key.clone();
        let identity = self.identities[partner].clone();
        let (old_couple, old_personal) = self.devices[device].secrets.clone();
        let mut old = vec![OldSpace {
            space: Space::Couple,
            secret: old_couple,
        }];
        if let Some(personal) = &secrets.personal {
            old.push(OldSpace {
                space: Space::Personal,
                secret: old_personal,
            });
            self.devices[device].secrets.1 = personal.clone();
        }
        self.devices[device].secrets.0 = secrets.couple.clone();
        let journal = self.devices[device].journal_mut();
        journal.move_to_epoch(step, &identity, &key, old)?;
        // Another device's rotation won and kept a device this one removed: again (as
        // `Device::finish_removal` does after every round).
        let again = journal.unfinished_removal()?;
        if !again.is_empty() {
            journal.rotate(mend_core::journal::Reason::RemoveDevices, &again)?;
        }
        let mut links = self.devices[device].links.clone();
        for link in &mut links {
            match (link.space, &secrets.personal) {
                (Space::Couple, _) => link.keys = secrets.couple.derive_keys(),
                (Space::Personal, Some(personal)) => link.keys = personal.derive_keys(),
                (Space::Personal, None) => {}
            }
        }
        // The old epoch's answers on their way to it are for spaces it left.
        self.flight.retain(|m| m.device != device);
        let id = *self.devices[device].journal().device().as_bytes();
        let engine = self.engine(id, links.clone());
        let d = &mut self.devices[device];
        d.links = links;
        d.engine = engine;
        Ok(())
    }

    fn enqueue(&mut self, device: usize, payload: Payload) {
        if self.devices[device].offline || self.chance(self.faults.drop) {
            return;
        }
        let copies = if self.chance(self.faults.duplicate) {
            2
        } else {
            1
        };
        for _ in 0..copies {
            let delay = if self.faults.max_delay_ms == 0 {
                0
            } else {
                (self.next_random() % self.faults.max_delay_ms) as i64
            };
            self.order += 1;
            let payload = match &payload {
                Payload::ToRelay(r) => Payload::ToRelay(r.clone()),
                Payload::ToDevice(r) => Payload::ToDevice(r.clone()),
            };
            self.flight.push(InFlight {
                at: self.now + delay,
                order: self.order,
                device,
                payload,
            });
        }
    }

    /// Feeds an event to a device's engine and carries out its actions.
    pub fn event(&mut self, device: usize, event: Event) -> Result<()> {
        let now = self.now;
        let d = &mut self.devices[device];
        let Some(journal) = d.journal.as_mut() else {
            bail!("device without a journal")
        };
        let opens = matches!(event, Event::Start | Event::Tick);
        let actions = d.engine.handle(journal, now, event)?;
        if opens && actions.iter().any(|a| matches!(a, Action::Send(_))) {
            d.rounds += 1;
        }
        for action in actions {
            match action {
                Action::Send(req) => {
                    let d = &mut self.devices[device];
                    d.sent.push((now, d.rounds, req.clone()));
                    self.enqueue(device, Payload::ToRelay(req));
                }
                Action::Changed { records, .. } => self.devices[device].changed.extend(records),
                Action::Status(s) => {
                    let d = &mut self.devices[device];
                    if s.problems.iter().any(|p| {
                        p.space == Space::Couple.as_str()
                            && matches!(p.kind, mend_core::sync::ProblemKind::Retired)
                    }) {
                        d.retired_out = true;
                        d.removed = true;
                    }
                    for p in &s.problems {
                        if !d.problems.contains(p) {
                            d.problems.push(p.clone());
                        }
                    }
                    d.status = s;
                }
            }
        }
        let epoch = self.devices[device].journal().epoch()?;
        self.follow_epoch(device)?;
        if self.devices[device].journal().epoch()? != epoch {
            // A device that just moved starts syncing its new spaces at once.
            self.event(device, Event::Start)?;
        }
        self.retire_old_epochs(device)
    }

    /// What a device does after a round at the relay (see `Device::retire_old_epochs`): the
    /// spaces it left are deleted once every device that moved is in the new epoch.
    fn retire_old_epochs(&mut self, device: usize) -> Result<()> {
        let d = &mut self.devices[device];
        if d.legacy || d.removed || d.offline || d.journal.is_none() {
            return Ok(());
        }
        let key = d.key.clone();
        let old = d.journal_mut().retirement(&key)?;
        if old.is_empty() {
            return Ok(());
        }
        // Every device the epoch's announcement sealed a box to has moved: none of them still
        // syncs the spaces about to go.
        let members = self.devices[device].journal().epoch_members()?;
        for o in &old {
            let id = o.secret.derive_keys().space_id;
            for (i, other) in self.devices.iter().enumerate() {
                if other.journal.is_some()
                    && members.contains(&other.journal().device())
                    && self.space_id(i, o.space) == id
                {
                    bail!(
                        "{} retired a space {} still syncs",
                        self.devices[device].name,
                        other.name
                    );
                }
            }
        }
        for o in &old {
            let id = o.secret.derive_keys().space_id;
            self.relay.spaces.remove(&id);
            self.relay.retired.insert(id);
        }
        self.devices[device]
            .journal_mut()
            .old_spaces_retired(&key, &old)?;
        Ok(())
    }

    /// Delivers the earliest message in flight; false when none is.
    pub fn deliver_one(&mut self) -> Result<bool> {
        let Some(pos) = self
            .flight
            .iter()
            .enumerate()
            .min_by_key(|(_, m)| (m.at, m.order))
            .map(|(i, _)| i)
        else {
            return Ok(false);
        };
        let msg = self.flight.swap_remove(pos);
        self.now = self.now.max(msg.at);
        if self.devices[msg.device].offline {
            return Ok(true);
        }
        match msg.payload {
            Payload::ToRelay(req) if self.now < self.refused_until => {
                let failed = Response::Failed {
                    space: req.space(),
                    failure: Failure::Untrusted {
                        reason: "the relay's certificate is for another host name".into(),
                    },
                };
                self.enqueue(msg.device, Payload::ToDevice(failed));
            }
            Payload::ToRelay(req) if self.now < self.relay_down_until => {
                let failed = Response::Failed {
                    space: req.space(),
                    failure: Failure::Unreachable,
                };
                self.enqueue(msg.device, Payload::ToDevice(failed));
            }
            Payload::ToRelay(req) => {
                let space_id = self.space_id(msg.device, req.space());
                let device = *self.devices[msg.device].journal().device().as_bytes();
                let resp = self.relay.handle(space_id, device, &req);
                self.enqueue(msg.device, Payload::ToDevice(resp));
            }
            Payload::ToDevice(resp) => self.event(msg.device, Event::Response(resp))?,
        }
        Ok(true)
    }

    /// Advances time by `ms` and ticks every engine that is due.
    pub fn advance(&mut self, ms: i64) -> Result<()> {
        self.now += ms;
        for d in 0..self.devices.len() {
            if self.devices[d]
                .engine
                .next_wake()
                .is_some_and(|w| w <= self.now)
            {
                self.event(d, Event::Tick)?;
            }
        }
        Ok(())
    }

    /// Carries messages and fires the engines' timers for `ms` of simulated time, rounds that
    /// end or not: bounded.
    pub fn run_for(&mut self, ms: i64) -> Result<()> {
        let end = self.now.saturating_add(ms);
        for _ in 0..20_000 {
            if self.flight.iter().any(|m| m.at <= end) {
                self.deliver_one()?;
                continue;
            }
            let wake = self
                .devices
                .iter()
                .filter_map(|d| d.engine.next_wake())
                .min();
            match wake {
                Some(w) if w <= end => self.advance((w - self.now).max(1))?,
                _ => {
                    self.now = end;
                    return Ok(());
                }
            }
        }
        bail!("the engines kept sending without a pause")
    }

    /// The relay restarts: everything in flight is lost; what it acknowledged is kept.
    pub fn restart_relay(&mut self) {
        self.flight.clear();
    }

    /// A device's app is killed and reopened: in-memory state is gone, the database stays.
    /// Answers on their way to it are lost with its connections (what it sent may still
    /// reach the relay).
    pub fn restart_device(&mut self, device: usize) -> Result<()> {
        self.flight
            .retain(|m| m.device != device || matches!(m.payload, Payload::ToRelay(_)));
        let partner = self.devices[device].partner;
        let path = self.devices[device].path.clone();
        // Drop the old journal first so its lock is released.
        drop(self.devices[device].journal.take());
        let key = self.devices[device].key.clone();
        let legacy = self.devices[device].legacy;
        let options = if legacy {
            OpenOptions {
                durability: Durability::Normal,
                ..OpenOptions::default()
            }
        } else {
            OpenOptions {
                durability: Durability::Normal,
                device_key: Some(key.public()),
                identity: Some(self.identities[partner].public()),
                ..OpenOptions::default()
            }
        };
        let mut journal = Journal::open_with(&path, options)?;
        journal.set_clock(|| T0);
        let links = self.devices[device].links.clone();
        if !legacy {
            let space_id = self.space_id(device, Space::Couple);
            journal.set_signer(Signer::new(
                space_id,
                &self.identities[partner],
                journal.me(),
                journal.device(),
                key.clone(),
                T0,
            ))?;
        }
        let engine = self.engine(*journal.device().as_bytes(), links);
        let d = &mut self.devices[device];
        d.journal = Some(journal);
        d.engine = engine;
        Ok(())
    }

    /// A step of the random schedules: device `d` adds a boundary (one time in three, `x`
    /// chooses) or agrees to one it holds. Returns the boundary it added.
    pub fn boundary_or_consent(&mut self, d: usize, x: u8) -> Result<Option<RecordId>> {
        use mend_core::{
            Body,
            model::{Boundary, BoundaryArea, ConsentState},
        };
        let j = self.devices[d].journal_mut();
        if x.is_multiple_of(3) {
            let b = Boundary {
                area: BoundaryArea::Space,
                text: format!("boundary {x}"),
                ..Default::default()
            };
            return Ok(j.add(Body::Boundary(b)).ok());
        }
        let bs: Vec<_> = j
            .records()?
            .into_iter()
            .filter(|r| matches!(r.body, Body::Boundary(_)))
            .collect();
        if let Some(r) = bs.get(usize::from(x) % bs.len().max(1)) {
            // Refused when the boundary is gone here: a step of a random schedule.
            let _ = j.consent(r.id, ConsentState::Agreed);
        }
        Ok(None)
    }

    /// The device's app is updated to a version that signs: it reopens with its keys.
    /// Devices made from now on sign too.
    pub fn upgrade(&mut self, device: usize) -> Result<()> {
        self.legacy = false;
        self.devices[device].legacy = false;
        self.restart_device(device)
    }

    fn files(path: &std::path::Path) -> [PathBuf; 3] {
        let with = |suffix: &str| {
            let mut p = path.as_os_str().to_owned();
            p.push(suffix);
            PathBuf::from(p)
        };
        [path.to_owned(), with("-wal"), with("-shm")]
    }

    /// Copies a device's database aside (closed for the copy, then reopened): the state a
    /// power cut, a restored backup or a copied phone may later bring back.
    pub fn keep_copy(&mut self, device: usize) -> Result<()> {
        drop(self.devices[device].journal.take());
        for f in Self::files(&self.devices[device].path) {
            let mut copy = f.as_os_str().to_owned();
            copy.push(".copy");
            if f.exists() {
                std::fs::copy(&f, PathBuf::from(copy))?;
            } else {
                let _ = std::fs::remove_file(PathBuf::from(copy));
            }
        }
        self.restart_device(device)
    }

    /// Puts back the copy [`Sim::keep_copy`] made: everything since is gone from this device.
    /// False when there is none.
    pub fn roll_back(&mut self, device: usize) -> Result<bool> {
        let path = self.devices[device].path.clone();
        let mut main_copy = path.as_os_str().to_owned();
        main_copy.push(".copy");
        if !PathBuf::from(main_copy).exists() {
            return Ok(false);
        }
        drop(self.devices[device].journal.take());
        for f in Self::files(&path) {
            let mut copy = f.as_os_str().to_owned();
            copy.push(".copy");
            let copy = PathBuf::from(copy);
            if copy.exists() {
                std::fs::copy(&copy, &f)?;
            } else {
                let _ = std::fs::remove_file(&f);
            }
        }
        self.restart_device(device)?;
        Ok(true)
    }

    /// One round for every device, each with a fresh engine, as `mend sync` runs it in a new
    /// process every time: bounded.
    pub fn fresh_round(&mut self) -> Result<()> {
        for d in 0..self.devices.len() {
            self.restart_device(d)?;
        }
        self.round()
    }

    /// One round for every device with the engines they have: bounded.
    pub fn round(&mut self) -> Result<()> {
        for d in 0..self.devices.len() {
            self.event(d, Event::Start)?;
        }
        let mut steps = 0;
        loop {
            steps += 1;
            if steps > 100_000 {
                bail!("the round did not end");
            }
            if self.deliver_one()? {
                continue;
            }
            if self.devices.iter().all(|d| d.engine.is_settled()) {
                return Ok(());
            }
            let wake = self
                .devices
                .iter()
                .filter_map(|d| d.engine.next_wake())
                .min();
            match wake {
                Some(w) => {
                    let ms = (w - self.now).max(1);
                    self.advance(ms)?;
                }
                None => bail!("a device is stuck with nothing scheduled"),
            }
        }
    }

    /// One round of one device alone (the others do nothing meanwhile): bounded.
    pub fn round_of(&mut self, device: usize) -> Result<()> {
        self.event(device, Event::Start)?;
        for _ in 0..100_000 {
            if self.deliver_one()? {
                continue;
            }
            if self.devices[device].engine.is_settled() {
                return Ok(());
            }
            match self.devices[device].engine.next_wake() {
                Some(w) => self.advance((w - self.now).max(1))?,
                None => bail!("{} is stuck", self.devices[device].name),
            }
        }
        bail!("the round of {} did not end", self.devices[device].name)
    }

    /// Heals the network and runs rounds until every device has everything: bounded.
    pub fn settle(&mut self) -> Result<()> {
        self.faults = Faults::default();
        for d in &mut self.devices {
            d.offline = false;
        }
        // Three full rounds for every device, so what one device pushed last reaches the others.
        for _ in 0..3 {
            for d in 0..self.devices.len() {
                self.event(d, Event::Start)?;
            }
            let mut steps = 0;
            loop {
                steps += 1;
                if steps > 100_000 {
                    bail!("the simulation did not settle");
                }
                if self.deliver_one()? {
                    continue;
                }
                if self.devices.iter().all(|d| d.engine.is_settled()) {
                    break;
                }
                // Nothing in flight: jump to the next retry or timeout.
                let wake = self
                    .devices
                    .iter()
                    .filter_map(|d| d.engine.next_wake())
                    .min();
                match wake {
                    Some(w) => {
                        let ms = (w - self.now).max(1);
                        self.advance(ms)?;
                    }
                    None => {
                        // Unsettled but nothing scheduled: start a round.
                        for d in 0..self.devices.len() {
                            if !self.devices[d].engine.is_settled() {
                                self.event(d, Event::Start)?;
                            }
                        }
                    }
                }
            }
        }
        Ok(())
    }

    pub fn space_ids(&self) -> BTreeMap<&str, [u8; 32]> {
        BTreeMap::from([("couple", self.couple_keys.space_id)])
    }
}
