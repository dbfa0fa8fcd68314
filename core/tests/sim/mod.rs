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
    crypto::{SpaceKeys, SpaceSecret},
    store::Durability,
    sync::{Action, Event, Failure, Mode, Request, Response, SpaceLink, SyncEngine, SyncStatus},
};
use mend_protocol::{Ack, Chunk, ErrorCode, Page, Snapshot};

pub const T0: i64 = 1_795_000_000_000;
const PAGE_LIMIT: usize = 4;

/// The relay model: the same contract as mend-relay, in memory. Its state survives a restart
/// (it is durable); messages in flight do not.
#[derive(Default)]
pub struct SimRelay {
    spaces: HashMap<[u8; 32], RelaySpace>,
}

#[derive(Default)]
struct RelaySpace {
    head: u64,
    log: Vec<Chunk>,
    seen: HashMap<([u8; 16], u64), u64>,
    snapshot: Option<Snapshot>,
    /// When set, the next chunk stored is corrupted in storage (a tampering relay).
    corrupt_next: bool,
}

impl SimRelay {
    fn handle(&mut self, space_id: [u8; 32], device: [u8; 16], req: &Request) -> Response {
        let space = req.space();
        let s = self.spaces.entry(space_id).or_default();
        match req {
            Request::Create { .. } => Response::Created { space },
            Request::Push { push, .. } => {
                if let Some(seq) = s.seen.get(&(push.device_id.0, push.device_seq)) {
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
                s.log.push(Chunk {
                    relay_seq: s.head,
                    device_id: push.device_id,
                    device_seq: push.device_seq,
                    payload,
                });
                s.seen.insert((push.device_id.0, push.device_seq), s.head);
                Response::Acked {
                    space,
                    ack: Ack {
                        device_seq: push.device_seq,
                        relay_seq: s.head,
                        duplicate: false,
                    },
                }
            }
            Request::Pull { after, .. } | Request::Subscribe { after, .. } => {
                let covers = s.snapshot.as_ref().map_or(0, |x| x.covers);
                if *after < covers {
                    return Response::Failed {
                        space,
                        failure: Failure::Pruned,
                    };
                }
                let mut chunks = Vec::new();
                let mut next_after = *after;
                let mut more = false;
                for c in s.log.iter().filter(|c| c.relay_seq > *after) {
                    if chunks.len() == PAGE_LIMIT {
                        more = true;
                        break;
                    }
                    next_after = c.relay_seq;
                    if c.device_id.0 != device {
                        chunks.push(c.clone());
                    }
                }
                if !more {
                    next_after = s.head;
                }
                Response::Page {
                    space,
                    page: Page {
                        head: s.head,
                        next_after,
                        more,
                        chunks,
                    },
                }
            }
            Request::GetSnapshot { .. } => Response::Snapshot {
                space,
                snapshot: s.snapshot.clone(),
            },
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
                s.log.retain(|c| c.relay_seq > snapshot.covers);
                Response::SnapshotStored {
                    space,
                    covers: snapshot.covers,
                }
            }
        }
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
    pub devices: Vec<Device>,
    pub faults: Faults,
    flight: Vec<InFlight>,
    rng: u64,
    order: u64,
    dir: tempfile::TempDir,
    pub couple_keys: SpaceKeys,
    pub personal_keys: Vec<SpaceKeys>,
    snapshot_every: u64,
}

impl Sim {
    /// Two partners; partner 0 has `a_devices` devices, partner 1 `b_devices`.
    pub fn new(seed: u64, a_devices: usize, b_devices: usize, snapshot_every: u64) -> Result<Self> {
        let dir = tempfile::tempdir()?;
        let couple = SpaceSecret::generate()?;
        let personal = [SpaceSecret::generate()?, SpaceSecret::generate()?];
        let mut sim = Self {
            now: T0,
            relay: SimRelay::default(),
            devices: Vec::new(),
            faults: Faults::default(),
            flight: Vec::new(),
            rng: seed | 1,
            order: 0,
            dir,
            couple_keys: couple.derive_keys(),
            personal_keys: vec![personal[0].derive_keys(), personal[1].derive_keys()],
            snapshot_every,
        };
        let opts = OpenOptions {
            durability: Durability::Normal,
        };
        let a_path = sim.dir.path().join("a0.db");
        let first = Journal::create_with(&a_path, "Alex", opts)?;
        let a_id = first.me();
        sim.add_device("a0", 0, a_path, first);
        for n in 1..a_devices {
            let path = sim.dir.path().join(format!("a{n}.db"));
            let source = JoinSource {
                couple: Vec::new(),
                personal: Some(Vec::new()),
                partner: Some(a_id),
            };
            let j = Journal::join_with(&path, &source, "", opts)?;
            sim.add_device(&format!("a{n}"), 0, path, j);
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
            let j = Journal::join_with(&path, &source, "Blake", opts)?;
            b_id = Some(j.me());
            sim.add_device(&format!("b{n}"), 1, path, j);
        }
        Ok(sim)
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
        let j = Journal::join_with(
            &path,
            &source,
            "",
            OpenOptions {
                durability: Durability::Normal,
            },
        )?;
        self.add_device(&format!("late{n}"), partner, path, j);
        Ok(n)
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

    fn add_device(&mut self, name: &str, partner: usize, path: PathBuf, mut journal: Journal) {
        journal.set_clock(|| T0);
        let links = self.links(partner);
        let seed = self.next_random();
        let mut engine = SyncEngine::new(
            *journal.device().as_bytes(),
            links.clone(),
            Mode::Once,
            seed,
        );
        engine.set_snapshot_every(self.snapshot_every);
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
        });
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

    fn space_id(&self, device: usize, space: Space) -> [u8; 32] {
        match space {
            Space::Couple => self.couple_keys.space_id,
            Space::Personal => self.personal_keys[self.devices[device].partner].space_id,
        }
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
        let actions = d.engine.handle(journal, now, event)?;
        for action in actions {
            match action {
                Action::Send(req) => self.enqueue(device, Payload::ToRelay(req)),
                Action::Changed { records, .. } => self.devices[device].changed.extend(records),
                Action::Status(s) => {
                    let d = &mut self.devices[device];
                    for p in &s.problems {
                        if !d.problems.contains(p) {
                            d.problems.push(p.clone());
                        }
                    }
                    d.status = s;
                }
            }
        }
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

    /// The relay restarts: everything in flight is lost; what it acknowledged is kept.
    pub fn restart_relay(&mut self) {
        self.flight.clear();
    }

    /// A device's app is killed and reopened: in-memory state is gone, the database stays.
    pub fn restart_device(&mut self, device: usize) -> Result<()> {
        let partner = self.devices[device].partner;
        let path = self.devices[device].path.clone();
        // Drop the old journal first so its lock is released.
        drop(self.devices[device].journal.take());
        let mut journal = Journal::open_with(
            &path,
            OpenOptions {
                durability: Durability::Normal,
            },
        )?;
        journal.set_clock(|| T0);
        let seed = self.next_random();
        let mut engine = SyncEngine::new(
            *journal.device().as_bytes(),
            self.links(partner),
            Mode::Once,
            seed,
        );
        engine.set_snapshot_every(self.snapshot_every);
        let d = &mut self.devices[device];
        d.journal = Some(journal);
        d.engine = engine;
        Ok(())
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
