//! The engine's state machine.

use std::collections::{HashMap, HashSet};

use mend_protocol::{DeviceId as WireDevice, ErrorCode, Push, RollupPush, Snapshot};

use super::{
    backoff::Backoff,
    snapshot::{decode_snapshot, encode_snapshot},
    storage::SyncStore,
    types::{
        Action, Entry, Event, Failure, MAX_PROBLEMS, Problem, ProblemKind, Request, Response,
        SyncStatus,
    },
};
use crate::{
    crypto::{
        ChunkAad, GroupScope, RollupAad, SpaceKeys, open_chunk, open_rollup, open_snapshot,
        seal_chunk, seal_rollup, seal_snapshot,
    },
    doc::inflate,
    error::{Error, Result},
    store::{PulledChange, Space, SyncState},
};

/// How long the same kind of problem stays out of the log after it was logged (ms): a relay
/// that fails every request would otherwise fill it. The next line says how many were held.
const WARN_EVERY_MS: i64 = 60_000;

/// Whether `plain` fits in what is `left` of a batch's inflation budget, which it grows by
/// the payload's own allowance and spends; on a refusal `left` stays as it was.
fn fits(plain: &[u8], left: &mut u64) -> bool {
    let mut trial = left.saturating_add(inflate::allowance(plain.len()));
    let fits = inflate::within(plain, &mut trial);
    if fits {
        *left = trial;
    }
    fits
}

/// Whether an error is about the data a relay served (bytes a document refused, a malformed
/// snapshot), as against this device's storage failing.
fn is_data_error(e: &Error) -> bool {
    matches!(e, Error::Document(_) | Error::Corrupt(_))
}

/// Whether the relay's mark for a chunk differs from the one this device kept for it (both
/// known: a relay that keeps none, or a cursor reached without one, proves nothing).
fn differ(kept: Option<[u8; 16]>, relay: Option<[u8; 16]>) -> bool {
    matches!((kept, relay), (Some(a), Some(b)) if a != b)
}

/// How long a request may go unanswered before it counts as failed (ms).
pub const REQUEST_TIMEOUT_MS: i64 = 15_000;
/// The longest a relay's `Retry-After` can hold a space back (ms): a relay asking for more is
/// broken or hostile, and the device tries again after this.
pub const MAX_RETRY_AFTER_MS: i64 = 15 * 60 * 1000;
/// The longest wait between tries in a round with a deadline (ms).
pub const BOUNDED_RETRY_MS: i64 = 1_500;
/// Largest batch of local changes sealed into one chunk (bytes of plaintext).
pub const MAX_BATCH_BYTES: usize = 256 * 1024;
/// Upload a snapshot once this many relay chunks have piled up since the last one.
pub const SNAPSHOT_EVERY: u64 = 500;
/// Seal a run of this device's acknowledged chunks again as one rollup once this many wait.
pub const ROLLUP_EVERY: usize = 32;

/// The shortest wait between two moves to a new id that one engine follows (a rewind, a
/// sequence conflict); it doubles while the relay keeps asking, up to the longest.
const MIN_MOVE_GAP_MS: i64 = 10_000;

/// How long live sync must have stayed up to date before a failure counts as a new one and
/// retries start again from the shortest wait: a subscription cut soon after it came up
/// would otherwise be retried every second or two for ever.
const LIVE_HELD_MS: i64 = 60_000;
const MAX_MOVE_GAP_MS: i64 = 600_000;

/// One space the engine syncs, with its keys.
#[derive(Clone, Debug)]
pub struct SpaceLink {
    /// Which of the journal's spaces.
    pub space: Space,
    /// Its derived keys.
    pub keys: SpaceKeys,
}

/// How the engine reads from the relay.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Mode {
    /// Paged pulls; a round ends when everything is pulled and pushed (background windows).
    Once,
    /// A live subscription that stays open (foreground).
    Live,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Phase {
    /// Nothing asked yet.
    Idle,
    Creating,
    Pulling,
    /// Live: backlog arriving until the up-to-date marker.
    CatchingUp,
    FetchingSnapshot,
    Pushing(u64),
    /// A rollup ending at this device sequence is on its way.
    Rolling(u64),
    /// Asked what the snapshot and the tail would cost.
    Sizing,
    Uploading(u64),
    /// Everything pulled and pushed (live: subscribed and idle).
    Done,
    Waiting(i64),
    /// The relay refused this device for good (token, erased space).
    Stopped,
}

#[derive(Debug)]
struct Run {
    link: SpaceLink,
    phase: Phase,
    deadline: Option<i64>,
    created: bool,
    gaps_reported: HashSet<[u8; 16]>,
    /// The space's sync state as the last commit left it.
    state: SyncState,
    /// Each other device's last applied sequence number.
    peers: HashMap<[u8; 16], u64>,
    /// Devices whose chunks opened here (or that a snapshot vouched for).
    authentic: HashSet<[u8; 16]>,
    /// This round already pulled again so a due snapshot can cover this device's own pushes.
    repulled: bool,
    /// This round found the relay's snapshot unusable: read the chunk log instead, and push
    /// even if that is pruned.
    snapshot_failed: bool,
    /// The relay went back in time: numbers seen before are expected again (not replays),
    /// and a snapshot is uploaded as soon as this device has read everything.
    recovering: bool,
    /// A problem was reported in this space during the current round.
    troubled: bool,
    /// The cursor a live subscription asked from and the relay's mark kept for it then.
    subscribed: Option<(u64, [u8; 16])>,
    /// This round already followed an answer that moved the device to a new id (a rewind, a
    /// sequence conflict): a relay repeating it is not followed again until the next round.
    moved: bool,
    /// When this engine last followed such an answer, and how long it waits before following
    /// another: a relay that claims a rewind at every new socket, then behaves, would otherwise
    /// move a live device to a new id (and upload its whole document) every round.
    last_move: Option<i64>,
    move_gap: i64,
    /// The id of the last pull sent: only its answer says anything about the relay now.
    pull: u64,
    /// What the snapshot loaded in this round covers: a `410` that leads to the same one
    /// again is a late copy of an earlier `410`, or the relay repeating itself.
    loaded: Option<u64>,
    /// The relay served the snapshot this round loaded again after a `410`: one more `410` is
    /// not followed, and reported.
    pruned_again: bool,
    /// The snapshot fetch in flight answers a `410`.
    fetch_pruned: bool,
    /// Pulls ask for rollups only from this relay sequence on: one before it failed its checks
    /// and the chunks it stands for are read instead.
    no_rollups_until: u64,
    /// Per device, the last number a rollup brought: its chunks met later (a page cut inside
    /// the rollup's range, a socket reopened there) are known already, not replays.
    rolled: HashMap<[u8; 16], u64>,
    /// No rollup is made again this round (the relay failed or refused one).
    rollups_off: bool,
    /// Reading the tail below the relay's snapshot (it was found cheaper than the snapshot):
    /// pulls ask for pruned chunks; in live mode the socket opens once they are read.
    tail: bool,
    /// This round already chose the tail once: a further `410` fetches the snapshot.
    tail_tried: bool,
    /// A live rollup failed its checks at this relay sequence and a new socket reads from
    /// before it: what the old socket still delivers past it is dropped. The new socket's
    /// first entry lies at or below it (the rollup's first chunk is served there).
    hold_live: Option<u64>,
    /// This round fetched the relay's snapshot, before a snapshot of its own, to heal what it
    /// refused (once a round, so a relay serving a new refused chunk on every read cannot
    /// keep it fetching).
    heal_tried: bool,
}

impl Run {
    /// Reads the space's bookkeeping again from the journal (another engine moved it, or this
    /// one moved the device to a new id).
    fn reload<S: SyncStore + ?Sized>(&mut self, journal: &S) -> Result<()> {
        let space = self.link.space;
        self.state = journal.sync_state(space)?;
        self.peers = journal.peer_seqs(space)?.into_iter().collect();
        self.authentic = journal.authentic_peers(space)?.into_iter().collect();
        Ok(())
    }
}

/// The sans-IO sync engine of one device.
#[derive(Debug)]
pub struct SyncEngine {
    device: [u8; 16],
    mode: Mode,
    runs: Vec<Run>,
    backoff: Backoff,
    status: SyncStatus,
    reported: Option<SyncStatus>,
    snapshot_every: u64,
    rollup_every: usize,
    /// The store's sync revision when this engine last read or wrote it (`None`: never).
    revision: Option<u64>,
    /// Whether the pending count may have changed since it was last counted.
    recount: bool,
    /// The caller's deadline (unix ms): no retry is scheduled after it.
    deadline: Option<i64>,
    /// Per kind of problem: when it was last logged and how many were held back since.
    warned: HashMap<String, (i64, u64)>,
    /// Live sync: since when every space has been up to date (`None`: not all are).
    up_since: Option<i64>,
    /// Chunks read from the relay and applied (a rollup counts as the chunks it stands for),
    /// this engine's life long: what was refused, dropped or below the cursor is not counted.
    applied: u64,
}

impl SyncEngine {
    /// An engine for `device` syncing `links`. `seed` drives the retry jitter.
    pub fn new(device: [u8; 16], links: Vec<SpaceLink>, mode: Mode, seed: u64) -> Self {
        let runs = links
            .into_iter()
            .map(|link| Run {
                link,
                phase: Phase::Idle,
                deadline: None,
                created: false,
                gaps_reported: HashSet::new(),
                state: SyncState::default(),
                peers: HashMap::new(),
                authentic: HashSet::new(),
                repulled: false,
                snapshot_failed: false,
                recovering: false,
                troubled: false,
                subscribed: None,
                moved: false,
                last_move: None,
                move_gap: MIN_MOVE_GAP_MS,
                pull: 0,
                loaded: None,
                pruned_again: false,
                fetch_pruned: false,
                heal_tried: false,
                no_rollups_until: 0,
                rolled: HashMap::new(),
                rollups_off: false,
                tail: false,
                tail_tried: false,
                hold_live: None,
            })
            .collect();
        Self {
            device,
            mode,
            runs,
            backoff: Backoff::new(seed),
            status: SyncStatus::default(),
            reported: None,
            snapshot_every: SNAPSHOT_EVERY,
            rollup_every: ROLLUP_EVERY,
            revision: None,
            recount: true,
            deadline: None,
            warned: HashMap::new(),
            up_since: None,
            applied: 0,
        }
    }

    /// The caller gives up at `deadline` (unix ms): retries are spaced to fit before it instead
    /// of backing off past it. `None`: no deadline (live sync).
    pub fn set_deadline(&mut self, deadline: Option<i64>) {
        self.deadline = deadline;
    }

    /// This device's id as the engine pushes under it (it changes after a sequence conflict).
    pub fn device(&self) -> [u8; 16] {
        self.device
    }

    /// Uploads a snapshot after `n` relay chunks instead of [`SNAPSHOT_EVERY`] (tests use 1).
    pub fn set_snapshot_every(&mut self, n: u64) {
        self.snapshot_every = n.max(1);
    }

    /// Makes a rollup once `n` acknowledged chunks wait instead of [`ROLLUP_EVERY`] (tests use
    /// small numbers).
    pub fn set_rollup_every(&mut self, n: usize) {
        self.rollup_every = n.max(1);
    }

    /// True when every space has finished its round (or was stopped for good).
    pub fn is_settled(&self) -> bool {
        self.runs
            .iter()
            .all(|r| matches!(r.phase, Phase::Done | Phase::Stopped))
    }

    /// True when the relay refused every space for good (unauthorized, erased): nothing more
    /// can sync until the app acts.
    pub fn is_stopped(&self) -> bool {
        self.runs.iter().all(|r| r.phase == Phase::Stopped)
    }

    /// The earliest time the engine wants a [`Event::Tick`], if any.
    pub fn next_wake(&self) -> Option<i64> {
        self.runs
            .iter()
            .filter_map(|r| match r.phase {
                Phase::Waiting(at) => Some(at),
                _ => r.deadline,
            })
            .min()
    }

    /// Chunks read from the relay and applied so far, a rollup counting as the chunks it
    /// stands for; what was refused or already held is not counted.
    pub fn applied(&self) -> u64 {
        self.applied
    }

    /// The current status.
    pub fn status(&self) -> &SyncStatus {
        &self.status
    }

    /// Feeds one event at time `now` (unix ms) and returns what to do.
    pub fn handle<S: SyncStore + ?Sized>(
        &mut self,
        journal: &mut S,
        now: i64,
        event: Event,
    ) -> Result<Vec<Action>> {
        let mut out = Vec::new();
        self.reload_if_moved(journal)?;
        // Another process (an app extension) moved the journal to a new epoch since this
        // engine was made with the old one's keys.
        if let Some(space) = journal.epoch_space()
            && self
                .runs
                .iter()
                .any(|r| r.link.space == Space::Couple && r.link.keys.space_id != space)
        {
            return Err(Error::MovedElsewhere);
        }
        if !matches!(
            event,
            Event::Response(
                Response::Chunk { .. } | Response::Chunks { .. } | Response::Page { .. }
            )
        ) {
            self.recount = true;
        }
        match event {
            Event::Start => {
                for i in 0..self.runs.len() {
                    if matches!(
                        self.runs[i].phase,
                        Phase::Idle | Phase::Done | Phase::Waiting(_)
                    ) {
                        self.begin(i, journal, now, &mut out)?;
                    }
                }
            }
            Event::LocalEdit => {
                for i in 0..self.runs.len() {
                    if self.runs[i].phase == Phase::Done {
                        self.push_next(i, journal, now, &mut out)?;
                    }
                }
            }
            Event::Tick => {
                for i in 0..self.runs.len() {
                    let run = &self.runs[i];
                    match run.phase {
                        Phase::Waiting(at) if at <= now => self.begin(i, journal, now, &mut out)?,
                        _ if run.deadline.is_some_and(|d| d <= now) => self.retry_later(i, now),
                        _ => {}
                    }
                }
            }
            Event::Disconnected => {
                for i in 0..self.runs.len() {
                    if !matches!(
                        self.runs[i].phase,
                        Phase::Idle | Phase::Stopped | Phase::Waiting(_)
                    ) {
                        self.retry_later(i, now);
                    }
                }
            }
            Event::Response(response) => self.on_response(journal, now, response, &mut out)?,
        }
        self.revision = Some(journal.sync_revision());
        self.refresh_status(journal)?;
        if self.reported.as_ref() != Some(&self.status) {
            self.reported = Some(self.status.clone());
            out.push(Action::Status(self.status.clone()));
        }
        Ok(out)
    }

    /// Reloads every space's state and peer numbers when someone else changed them (or at
    /// first use); otherwise what this engine's own commits returned is current.
    fn reload_if_moved<S: SyncStore + ?Sized>(&mut self, journal: &S) -> Result<()> {
        if self.revision == Some(journal.sync_revision()) {
            return Ok(());
        }
        // Another engine may have moved the device to a new id, and pushed or made batches:
        // the pending count is stale too.
        self.device = journal.device();
        self.recount = true;
        for run in &mut self.runs {
            run.reload(journal)?;
        }
        self.revision = Some(journal.sync_revision());
        Ok(())
    }

    fn index(&self, space: Space) -> Option<usize> {
        self.runs.iter().position(|r| r.link.space == space)
    }

    fn send(&mut self, i: usize, now: i64, phase: Phase, request: Request, out: &mut Vec<Action>) {
        self.runs[i].phase = phase;
        self.runs[i].deadline = Some(now.saturating_add(REQUEST_TIMEOUT_MS));
        self.status.syncing = true;
        out.push(Action::Send(request));
    }

    /// Whether a space has something a snapshot should heal: a refused chunk not yet tried
    /// against the relay's snapshot, or changes waiting for one they build on (what a refused
    /// chunk of a real device held: its later edits show it was real).
    fn unhealed<S: SyncStore + ?Sized>(&self, i: usize, journal: &S) -> Result<bool> {
        let run = &self.runs[i];
        Ok(run.state.heal_after > 0 || journal.awaits_changes(run.link.space)?)
    }

    fn begin<S: SyncStore + ?Sized>(
        &mut self,
        i: usize,
        journal: &S,
        now: i64,
        out: &mut Vec<Action>,
    ) -> Result<()> {
        let space = self.runs[i].link.space;
        let run = &mut self.runs[i];
        run.repulled = false;
        run.snapshot_failed = false;
        run.troubled = false;
        run.moved = false;
        run.loaded = None;
        run.pruned_again = false;
        run.fetch_pruned = false;
        run.heal_tried = false;
        run.rollups_off = false;
        run.tail = false;
        run.tail_tried = false;
        run.hold_live = None;
        // A rollup refused in an earlier round is tried again (the relay chose where the
        // last one ended; it cannot turn rollups off for good).
        run.no_rollups_until = 0;
        // After a refused chunk, each round first merges the relay's snapshot: once a healthy
        // device has snapshotted past the hole, that heals it.
        if self.runs[i].created && self.unhealed(i, journal)? {
            self.send(
                i,
                now,
                Phase::FetchingSnapshot,
                Request::GetSnapshot { space },
                out,
            );
        } else if self.runs[i].created {
            self.read(i, now, out);
        } else {
            self.send(i, now, Phase::Creating, Request::Create { space }, out);
        }
        Ok(())
    }

    /// Whether a read from `after` may take rollups.
    fn rollups_from(&self, i: usize, after: u64) -> bool {
        after >= self.runs[i].no_rollups_until
    }

    /// Sends a pull from `after` under a new id.
    fn pull(&mut self, i: usize, now: i64, after: u64, out: &mut Vec<Action>) {
        let space = self.runs[i].link.space;
        let id = self.runs[i].pull.wrapping_add(1);
        self.runs[i].pull = id;
        let rollups = self.rollups_from(i, after);
        let pruned = self.runs[i].tail;
        self.send(
            i,
            now,
            Phase::Pulling,
            Request::Pull {
                space,
                after,
                id,
                rollups,
                pruned,
            },
            out,
        );
    }

    fn read(&mut self, i: usize, now: i64, out: &mut Vec<Action>) {
        let space = self.runs[i].link.space;
        let after = self.runs[i].state.cursor;
        match self.mode {
            // The tail below a snapshot is read by pulls, then the socket opens after it.
            Mode::Once => self.pull(i, now, after, out),
            Mode::Live if self.runs[i].tail => self.pull(i, now, after, out),
            Mode::Live => {
                if self.runs[i].hold_live.is_some_and(|hold| after >= hold) {
                    // Read past the refused rollup some other way: nothing to hold back.
                    self.runs[i].hold_live = None;
                }
                let state = &self.runs[i].state;
                self.runs[i].subscribed = state.cursor_mark.map(|mark| (after, mark));
                let rollups = self.rollups_from(i, after);
                self.send(
                    i,
                    now,
                    Phase::CatchingUp,
                    Request::Subscribe {
                        space,
                        after,
                        rollups,
                    },
                    out,
                );
            }
        }
    }

    /// Pushes the next batch, or uploads a snapshot when one is due, or finishes the round.
    fn push_next<S: SyncStore + ?Sized>(
        &mut self,
        i: usize,
        journal: &mut S,
        now: i64,
        out: &mut Vec<Action>,
    ) -> Result<()> {
        let link = self.runs[i].link.clone();
        if let Some((device_seq, plain)) = journal.next_batch(link.space, MAX_BATCH_BYTES)? {
            let aad = ChunkAad {
                space_id: link.keys.space_id,
                device: self.device,
                device_seq,
            };
            let payload = seal_chunk(&link.keys.content, &aad, &plain)?;
            let push = Push {
                device_id: WireDevice(self.device),
                device_seq,
                payload,
            };
            self.send(
                i,
                now,
                Phase::Pushing(device_seq),
                Request::Push {
                    space: link.space,
                    push,
                },
                out,
            );
            return Ok(());
        }
        if !self.runs[i].rollups_off
            && let Some((first_seq, last_seq, plain)) =
                journal.next_rollup(link.space, self.rollup_every)?
        {
            let aad = RollupAad {
                space_id: link.keys.space_id,
                device: self.device,
                first_seq,
                last_seq,
            };
            let payload = seal_rollup(&link.keys.content, &aad, &plain)?;
            let rollup = RollupPush {
                device_id: WireDevice(self.device),
                first_seq,
                last_seq,
                payload,
            };
            self.send(
                i,
                now,
                Phase::Rolling(last_seq),
                Request::PushRollup {
                    space: link.space,
                    rollup,
                },
                out,
            );
            return Ok(());
        }
        let run = &self.runs[i];
        let state = &run.state;
        let due = run.recovering
            || (state.cursor > 0
                && state.cursor >= state.snapshot_covers.saturating_add(self.snapshot_every));
        if due
            && state.heal_after > 0
            && !state.heal_real
            && !run.heal_tried
            && !journal.awaits_changes(link.space)?
        {
            // A chunk refused in this round: its one try at the relay's snapshot comes now, so
            // a relay that slips in a new one before every round cannot hold snapshots back.
            self.runs[i].heal_tried = true;
            let space = link.space;
            self.send(
                i,
                now,
                Phase::FetchingSnapshot,
                Request::GetSnapshot { space },
                out,
            );
            return Ok(());
        }
        // A device that refused a chunk must not snapshot before it has tried the relay's
        // snapshot once, nor while changes wait for one they build on: its document lacks
        // them, and the relay would prune the only copy it serves.
        let wanted = due && !self.unhealed(i, journal)?;
        if wanted && state.cursor < state.last_ack_relay && !run.repulled {
            // This round pushed past what it read: read once more (the relay skips this
            // device's own chunks), so a device that pushes in every round still snapshots.
            self.runs[i].repulled = true;
            self.read(i, now, out);
            return Ok(());
        }
        if wanted && state.cursor > 0 && state.cursor >= state.last_ack_relay {
            let (doc, peers) = journal.snapshot_material(link.space)?;
            let plain = encode_snapshot(&peers, &doc);
            let covers = state.cursor;
            let payload = seal_snapshot(&link.keys.content, &link.keys.space_id, covers, &plain)?;
            let request = Request::PutSnapshot {
                space: link.space,
                snapshot: Snapshot { covers, payload },
            };
            self.send(i, now, Phase::Uploading(covers), request, out);
            return Ok(());
        }
        self.finish(i, journal, now)
    }

    fn finish<S: SyncStore + ?Sized>(&mut self, i: usize, journal: &mut S, now: i64) -> Result<()> {
        let waiting = journal.awaits_changes(self.runs[i].link.space)?;
        let run = &mut self.runs[i];
        run.phase = Phase::Done;
        run.deadline = None;
        run.state = journal.mark_synced(run.link.space, now)?;
        if !run.troubled && run.state.heal_after == 0 && !waiting {
            // A clean round with nothing left to heal: what was reported is over.
            journal.clear_problems(run.link.space)?;
        }
        self.reached();
        if self
            .runs
            .iter()
            .all(|r| matches!(r.phase, Phase::Done | Phase::Stopped))
        {
            self.status.syncing = false;
            self.status.last_synced = Some(now);
            if self.mode == Mode::Live {
                // Up to date is not yet success: the backoff starts over once it has held
                // ([`LIVE_HELD_MS`], in `retry_later`).
                self.up_since = self.up_since.or(Some(now));
            } else {
                self.backoff.reset();
            }
        }
        Ok(())
    }

    /// Whether this space may follow an answer that moves the device to a new id: once per
    /// round, and no sooner than `move_gap` after the last move. A relay that repeats it (each
    /// time the whole document would go out again) is reported, and the space waits with the
    /// backoff before its next round.
    fn may_move<S: SyncStore + ?Sized>(
        &mut self,
        i: usize,
        journal: &mut S,
        now: i64,
        answer: &str,
    ) -> Result<bool> {
        let run = &mut self.runs[i];
        let since = run.last_move.map(|at| now.saturating_sub(at));
        let too_soon = since.is_some_and(|since| since < run.move_gap);
        if !run.moved && !too_soon {
            run.moved = true;
            // Moves that keep coming soon after one another wait longer each time; after a
            // quiet spell the wait starts small again.
            run.move_gap = match since {
                Some(since) if since < run.move_gap.saturating_mul(2) => {
                    run.move_gap.saturating_mul(2).min(MAX_MOVE_GAP_MS)
                }
                _ => MIN_MOVE_GAP_MS,
            };
            run.last_move = Some(now);
            return Ok(true);
        }
        self.loop_seen(i, journal, now, answer)?;
        Ok(false)
    }

    /// The relay repeated, within a round, an answer that would send this device round again:
    /// report it and wait (backing off, within the caller's deadline).
    fn loop_seen<S: SyncStore + ?Sized>(
        &mut self,
        i: usize,
        journal: &mut S,
        now: i64,
        answer: &str,
    ) -> Result<()> {
        let space = self.runs[i].link.space;
        let kind = ProblemKind::RelayLoop {
            answer: answer.to_owned(),
        };
        self.problem(journal, space, kind, now)?;
        self.retry_later(i, now);
        // It answered: not out of reach.
        self.reached();
        Ok(())
    }

    /// The relay answered over a connection this device trusts.
    fn reached(&mut self) {
        self.status.online = true;
        self.status.untrusted_relay = None;
    }

    fn retry_later(&mut self, i: usize, now: i64) {
        if let Some(since) = self.up_since.take()
            && now.saturating_sub(since) >= LIVE_HELD_MS
        {
            self.backoff.reset();
        }
        let mut delay = i64::try_from(self.backoff.next_delay()).unwrap_or(MAX_RETRY_AFTER_MS);
        if let Some(deadline) = self.deadline {
            // Never back off past the caller's deadline: halve what is left instead, so the
            // last tries come closer together as it nears; and in a bounded round someone is
            // waiting, so a relay that comes back is found within a second and a half.
            let left = deadline.saturating_sub(now);
            delay = delay.min((left / 2).max(1)).min(BOUNDED_RETRY_MS);
        }
        let run = &mut self.runs[i];
        run.phase = Phase::Waiting(now.saturating_add(delay));
        run.deadline = None;
        // A new subscription or pull starts after the retry; creation need not be repeated.
        self.status.online = false;
    }

    fn problem<S: SyncStore + ?Sized>(
        &mut self,
        journal: &mut S,
        space: Space,
        kind: ProblemKind,
        now: i64,
    ) -> Result<()> {
        let key = format!("{}:{:?}", space.as_str(), kind.outcome());
        let (last, held) = self.warned.entry(key).or_insert((i64::MIN, 0));
        if now.saturating_sub(*last) >= WARN_EVERY_MS {
            tracing::warn!(space = space.as_str(), problem = ?kind.without_words(), held_back = *held, "sync problem");
            *last = now;
            *held = 0;
        } else {
            *held = held.saturating_add(1);
        }
        // A relay failing or refusing a request is over when a round completes; what it
        // served wrong, or refused for good, stays shown until a clean round or a heal.
        let lasting = !matches!(
            kind,
            ProblemKind::RelayError { .. }
                | ProblemKind::Refused { .. }
                | ProblemKind::RelayLoop { .. }
        );
        let problem = Problem {
            space: space.as_str().into(),
            kind,
            at: now,
        };
        if lasting {
            if let Some(i) = self.index(space) {
                self.runs[i].troubled = true;
            }
            journal.record_problem(space, &problem)?;
        }
        self.status.problems.push(problem);
        if self.status.problems.len() > MAX_PROBLEMS {
            let excess = self.status.problems.len() - MAX_PROBLEMS;
            self.status.problems.drain(..excess);
        }
        Ok(())
    }

    fn on_response<S: SyncStore + ?Sized>(
        &mut self,
        journal: &mut S,
        now: i64,
        response: Response,
        out: &mut Vec<Action>,
    ) -> Result<()> {
        let space = response.space();
        let Some(i) = self.index(space) else {
            return Ok(());
        };
        let phase = self.runs[i].phase;
        if !matches!(response, Response::Failed { .. }) {
            self.reached();
        }
        match response {
            Response::Created { new, .. } => {
                self.runs[i].created = true;
                let state = &self.runs[i].state;
                if new && phase == Phase::Creating && (state.cursor > 0 || state.last_ack_relay > 0)
                {
                    // The relay made anew a space this device had synced: it lost everything.
                    let cursor = state.cursor;
                    if !self.may_move(i, journal, now, "rewind")? {
                        return Ok(());
                    }
                    self.rewound(i, journal, now, cursor, 0)?;
                }
                if phase == Phase::Creating {
                    if self.unhealed(i, journal)? {
                        // Whichever engine runs the round, a refused chunk is healed first.
                        self.send(
                            i,
                            now,
                            Phase::FetchingSnapshot,
                            Request::GetSnapshot { space },
                            out,
                        );
                    } else {
                        self.read(i, now, out);
                    }
                }
            }
            Response::Page {
                page, after, id, ..
            } => {
                let cursor = self.runs[i].state.cursor;
                // Only the answer to the pull in flight, from where this device stands, says
                // anything about the relay now (a late or copied answer to an earlier pull,
                // from before this device's last push, can show a head below it).
                let current = phase == Phase::Pulling && id == self.runs[i].pull && after == cursor;
                // The relay's head can never be below what this device read, nor below where
                // it stored this device's last chunk.
                let acked = self.runs[i].state.last_ack_relay;
                // Nor can another device's chunk sit where this device's last one was stored
                // (a relay restored, then filled up past the head it had). Only while that
                // chunk is under the current id: after a move to a new id the old one's chunks
                // are another device's.
                let mine = self.runs[i].state.acked_seq > 0;
                let taken = page.chunks.iter().any(|c| {
                    mine && acked > 0 && c.relay_seq == acked && c.device_id.0 != self.device
                });
                // Nor can another chunk sit where this device's cursor is than the one that was
                // there when it got there (a relay restored, then filled up past the cursor).
                let moved = differ(self.runs[i].state.cursor_mark, page.after_mark);
                let below = page.head < cursor.max(acked);
                if current && (page.next_after > page.head || below || taken || moved) {
                    if !self.may_move(i, journal, now, "rewind")? {
                        return Ok(());
                    }
                    self.rewound(i, journal, now, cursor, page.head)?;
                    self.read(i, now, out);
                    return Ok(());
                }
                // Data is applied whenever it comes (it is idempotent); the round moves on only
                // if this answers the pull in flight. A page from past the cursor (asked for
                // before a rewind reset it) would skip what lies between.
                if page.next_after > page.head {
                    // A page past the relay's own head is forged: nothing in it is taken.
                    return Ok(());
                }
                if !page.rollups.is_empty() && !self.rollups_from(i, after) {
                    // Rollups this pull did not ask for (they failed their checks before): the
                    // relay is not serving the chunks; try again later rather than at once.
                    if phase == Phase::Pulling && id == self.runs[i].pull {
                        let kind = ProblemKind::RelayLoop {
                            answer: "rollups".into(),
                        };
                        self.problem(journal, space, kind, now)?;
                        self.retry_later(i, now);
                    }
                    return Ok(());
                }
                let mut refused_rollup = false;
                if after <= cursor {
                    let entries = Entry::of_page(&page);
                    let applied =
                        self.apply_chunks(i, journal, now, &entries, page.next_after, out)?;
                    refused_rollup = applied.is_some();
                    if let Some(mark) = page.next_mark.filter(|_| !refused_rollup) {
                        self.keep_mark(i, journal, page.next_after, mark)?;
                    }
                }
                if phase == Phase::Pulling && id == self.runs[i].pull {
                    if page.more && !refused_rollup && page.next_after <= after {
                        // "More" that does not move past what was asked would be asked again
                        // at once, for ever: report it and try again later.
                        let kind = ProblemKind::RelayLoop {
                            answer: "page".into(),
                        };
                        self.problem(journal, space, kind, now)?;
                        self.retry_later(i, now);
                    } else if page.more || refused_rollup {
                        // A refused rollup: the chunks it stands for are read instead.
                        let after = self.runs[i].state.cursor;
                        self.pull(i, now, after, out);
                    } else if self.mode == Mode::Live && self.runs[i].tail {
                        // The tail is read: the socket opens after it.
                        self.runs[i].tail = false;
                        self.read(i, now, out);
                    } else {
                        self.push_next(i, journal, now, out)?;
                    }
                }
            }
            Response::Chunk { chunk, .. } => {
                self.live_chunks(i, journal, now, phase, &[Entry::Chunk(chunk)], out)?;
            }
            Response::Rollup { rollup, .. } => {
                self.live_chunks(i, journal, now, phase, &[Entry::Rollup(rollup)], out)?;
            }
            Response::Chunks { entries, .. } => {
                self.live_chunks(i, journal, now, phase, &entries, out)?;
            }
            Response::RollupStored { last_seq, .. } => {
                if phase == Phase::Rolling(last_seq) {
                    journal.rollup_done(space, last_seq, true)?;
                    self.push_next(i, journal, now, out)?;
                }
            }
            Response::Sizes { sizes, .. } => {
                if phase == Phase::Sizing {
                    // The tail, if the relay still holds all of it and it is the smaller.
                    let cheaper = match sizes.snapshot {
                        Some((_, snapshot_bytes)) => {
                            sizes.tail_held && sizes.tail_bytes < snapshot_bytes
                        }
                        None => sizes.tail_held,
                    };
                    if cheaper {
                        let run = &mut self.runs[i];
                        run.tail = true;
                        run.tail_tried = true;
                        self.read(i, now, out);
                    } else {
                        self.fetch_pruned_snapshot(i, now, out);
                    }
                }
            }
            Response::UpToDate {
                head,
                after_mark,
                head_mark,
                ..
            } => {
                if self.runs[i].hold_live.is_some() {
                    // The end of the socket given up for a refused rollup.
                    return Ok(());
                }
                let cursor = self.runs[i].state.cursor;
                let moved = self.runs[i]
                    .subscribed
                    .is_some_and(|(_, mark)| differ(Some(mark), after_mark));
                if phase == Phase::CatchingUp && (head < cursor || moved) {
                    if !self.may_move(i, journal, now, "rewind")? {
                        return Ok(());
                    }
                    self.rewound(i, journal, now, cursor, head)?;
                    self.read(i, now, out);
                    return Ok(());
                }
                if let Some(mark) = head_mark.filter(|_| phase == Phase::CatchingUp) {
                    self.keep_mark(i, journal, head, mark)?;
                }
                if phase == Phase::CatchingUp {
                    self.push_next(i, journal, now, out)?;
                }
            }
            Response::Acked { ack, .. } => {
                // Only the answer to the push in flight: a late one may be for a push made
                // under this device's previous id, whose number an outbox batch now carries
                // under the new one. (A late answer ignored costs a duplicate push, no more.)
                if phase == Phase::Pushing(ack.device_seq) {
                    // A chunk stored anew goes after everything stored before: one stored at
                    // or below where this device's last chunk went means the relay went back.
                    // Only for a number past this device's last acknowledged one: another
                    // engine on the same journal (live sync beside `sync_now`, an app and its
                    // extension) may have pushed the same batch and the next meanwhile, so a
                    // fresh answer for an older number is late, not a relay gone back.
                    let acked = self.runs[i].state.last_ack_relay;
                    let back = !ack.duplicate
                        && ack.relay_seq <= acked
                        && ack.device_seq > self.runs[i].state.acked_seq;
                    self.runs[i].state =
                        journal.acknowledge(space, ack.device_seq, ack.relay_seq)?;
                    if back {
                        if !self.may_move(i, journal, now, "rewind")? {
                            return Ok(());
                        }
                        let cursor = self.runs[i].state.cursor;
                        self.rewound(i, journal, now, cursor, ack.relay_seq)?;
                        self.read(i, now, out);
                        return Ok(());
                    }
                    self.push_next(i, journal, now, out)?;
                }
            }
            Response::Snapshot { snapshot, .. } => {
                if phase == Phase::FetchingSnapshot {
                    let covers = snapshot.as_ref().map(|s| s.covers);
                    let pruned = std::mem::take(&mut self.runs[i].fetch_pruned);
                    if let (true, Some(had), Some(covers)) = (pruned, self.runs[i].loaded, covers)
                        && covers <= had
                    {
                        // A `410` for a read from past the snapshot this round loaded, and that
                        // snapshot again: read once more as after a bad snapshot (a late copy
                        // of an earlier `410` is then answered), and never fetch it again.
                        let run = &mut self.runs[i];
                        run.snapshot_failed = true;
                        run.pruned_again = true;
                        self.read(i, now, out);
                        return Ok(());
                    }
                    let healing = self.unhealed(i, journal)?;
                    let loaded = match &snapshot {
                        Some(s) => self.apply_snapshot(i, journal, now, s, out)?,
                        None => Loaded::Unusable,
                    };
                    if loaded != Loaded::Unusable {
                        self.runs[i].loaded = covers;
                    }
                    if let (Loaded::LacksMine { cursor }, Some(s)) = (loaded, &snapshot) {
                        // What it holds is merged; what the relay lost of this device's goes
                        // out again with the whole document.
                        if !self.may_move(i, journal, now, "rewind")? {
                            return Ok(());
                        }
                        self.rewound(i, journal, now, cursor, s.covers)?;
                        self.read(i, now, out);
                        return Ok(());
                    }
                    let usable = loaded != Loaded::Unusable;
                    let unhealed = self.runs[i].state.heal_after;
                    let real = self.runs[i].state.heal_real;
                    if unhealed > 0 && !real && !journal.awaits_changes(space)? {
                        // The one try at healing what was refused from ids never seen here:
                        // garbage no device accepts is never healed, and must not stop every
                        // device from snapshotting. (A real device's refused chunk, or its later
                        // edits waiting for it, keep this device fetching and not snapshotting
                        // until a snapshot heals it.)
                        self.problem(
                            journal,
                            space,
                            ProblemKind::Unhealed { up_to: unhealed },
                            now,
                        )?;
                        self.runs[i].state = journal.give_up_healing(space)?;
                    }
                    if usable {
                        if self.runs[i].state.heal_after == 0 {
                            self.runs[i].gaps_reported.clear();
                        }
                    } else if !healing {
                        // Pruned, and the snapshot that should replace the log is bad or
                        // missing: say so, then read what log is left and push anyway.
                        if snapshot.is_none() {
                            self.problem(
                                journal,
                                space,
                                ProblemKind::BadSnapshot { covers: 0 },
                                now,
                            )?;
                        }
                        self.runs[i].snapshot_failed = true;
                    }
                    self.read(i, now, out);
                }
            }
            Response::SnapshotStored { covers, .. } => {
                self.runs[i].state = journal.snapshot_uploaded(space, covers)?;
                self.runs[i].recovering = false;
                if phase == Phase::Uploading(covers) {
                    self.finish(i, journal, now)?;
                }
            }
            Response::Failed { failure, .. } => self.on_failure(i, journal, now, failure, out)?,
        }
        Ok(())
    }

    /// Keeps the relay's mark for the chunk at `at` if that is where the cursor now stands.
    fn keep_mark<S: SyncStore + ?Sized>(
        &mut self,
        i: usize,
        journal: &mut S,
        at: u64,
        mark: [u8; 16],
    ) -> Result<()> {
        let state = &self.runs[i].state;
        if at > 0 && state.cursor == at && state.cursor_mark != Some(mark) {
            self.runs[i].state = journal.keep_cursor_mark(self.runs[i].link.space, at, mark)?;
        }
        Ok(())
    }

    /// The relay went back in time or lied about its head: report it, push this device's whole
    /// document again under new numbers, and read everything from the start.
    fn rewound<S: SyncStore + ?Sized>(
        &mut self,
        i: usize,
        journal: &mut S,
        now: i64,
        cursor: u64,
        head: u64,
    ) -> Result<()> {
        let space = self.runs[i].link.space;
        self.problem(
            journal,
            space,
            ProblemKind::RelayRewound { cursor, head },
            now,
        )?;
        journal.relay_rewound(space)?;
        // The relay went back as a whole: whatever of this device's it acknowledged in its
        // other spaces may be gone too, and once this device moves to a new id nothing would
        // tell (its checks are for the current id's chunks). Push those documents again too.
        for j in 0..self.runs.len() {
            let other = self.runs[j].link.space;
            if j != i && journal.sync_state(other)?.last_ack_relay > 0 {
                journal.relay_rewound(other)?;
            }
        }
        // Under a new device id the document goes out as number 1 and up: a device that never
        // saw the numbers the relay lost finds no hole in them (and waits for no snapshot).
        self.change_device(journal, now)
    }

    /// Whether a snapshot covering where the relay stored this device's last chunk lacks that
    /// chunk (its devices' numbers stop short of it): the relay lost it, then took a snapshot
    /// made without it. A chunk under a snapshot is never served, so only this tells.
    fn lacks_mine(&self, i: usize, covers: u64, peers: &[([u8; 16], u64)]) -> bool {
        let state = &self.runs[i].state;
        state.acked_seq > 0
            && state.last_ack_relay > 0
            && covers >= state.last_ack_relay
            && !peers
                .iter()
                .any(|&(d, seq)| d == self.device && seq >= state.acked_seq)
    }

    /// Moves to a new device id (and actor), with the outbox numbered again from 1. Every
    /// space reads from the start: the old id's chunks, now another device's, bring back what
    /// this one lost. A push still in flight was made under the old id: its space starts over.
    fn change_device<S: SyncStore + ?Sized>(&mut self, journal: &mut S, now: i64) -> Result<()> {
        self.device = journal.change_device()?;
        for run in &mut self.runs {
            run.reload(journal)?;
            run.recovering = true;
            if matches!(run.phase, Phase::Pushing(_)) {
                run.phase = Phase::Waiting(now);
                run.deadline = None;
            }
        }
        self.recount = true;
        Ok(())
    }

    /// Fetches the snapshot after a `410`.
    fn fetch_pruned_snapshot(&mut self, i: usize, now: i64, out: &mut Vec<Action>) {
        let space = self.runs[i].link.space;
        self.runs[i].fetch_pruned = true;
        self.send(
            i,
            now,
            Phase::FetchingSnapshot,
            Request::GetSnapshot { space },
            out,
        );
    }

    fn on_failure<S: SyncStore + ?Sized>(
        &mut self,
        i: usize,
        journal: &mut S,
        now: i64,
        failure: Failure,
        out: &mut Vec<Action>,
    ) -> Result<()> {
        let space = self.runs[i].link.space;
        let phase = self.runs[i].phase;
        if let Phase::Rolling(last_seq) = phase {
            // A rollup only saves bytes: whatever the relay answers (one without rollups, a
            // range it does not hold), the round goes on without, and the chunks stay chunks.
            if matches!(failure, Failure::Refused { .. }) {
                journal.rollup_done(space, last_seq, false)?;
            }
            self.runs[i].rollups_off = true;
            if !matches!(failure, Failure::Unreachable | Failure::Untrusted { .. }) {
                self.reached();
            }
            return self.push_next(i, journal, now, out);
        }
        if phase == Phase::Sizing && failure != Failure::Unreachable {
            // A relay that cannot tell the sizes: the snapshot, as before.
            self.fetch_pruned_snapshot(i, now, out);
            return Ok(());
        }
        match failure {
            Failure::Pruned if self.runs[i].snapshot_failed => {
                // The log is pruned and its snapshot unusable (reported), or the relay keeps
                // answering `410` from past the snapshot it serves: a pull failure never holds
                // back this device's own edits.
                if std::mem::take(&mut self.runs[i].pruned_again) {
                    let kind = ProblemKind::RelayLoop {
                        answer: "pruned".into(),
                    };
                    self.problem(journal, space, kind, now)?;
                }
                self.push_next(i, journal, now, out)?;
            }
            Failure::Pruned if !self.runs[i].tail_tried => {
                // Far behind: the snapshot, or the tail if that is smaller.
                self.runs[i].tail_tried = true;
                let after = self.runs[i].state.cursor;
                self.send(i, now, Phase::Sizing, Request::Sizes { space, after }, out);
            }
            Failure::Pruned => {
                self.runs[i].tail = false;
                self.fetch_pruned_snapshot(i, now, out);
            }
            Failure::Unauthorized
            | Failure::SpaceGone
            | Failure::Refused {
                code: ErrorCode::SpaceErased | ErrorCode::SpaceRetired,
                ..
            } => {
                let kind = match &failure {
                    Failure::Unauthorized => ProblemKind::Unauthorized,
                    // Erased, when a partner's marker confirms it: the person is told who
                    // erased it, never that the relay is unreachable. On the relay's word
                    // alone the space is gone (a relay can lose or refuse a space, not make a
                    // journal erased).
                    Failure::Refused {
                        code: ErrorCode::SpaceErased,
                        ..
                    } => match journal.space_erased(space)? {
                        Some(words) => {
                            // The store's latest words stand for every space: the couple's
                            // space gone first reads as the partner's erase until this
                            // partner's personal space is found gone too.
                            for problem in &mut self.status.problems {
                                if let ProblemKind::Erased { words: earlier } = &mut problem.kind {
                                    earlier.clone_from(&words);
                                }
                            }
                            ProblemKind::Erased { words }
                        }
                        None => ProblemKind::SpaceGone,
                    },
                    Failure::Refused {
                        code: ErrorCode::SpaceRetired,
                        ..
                    } => ProblemKind::Retired,
                    _ => ProblemKind::SpaceGone,
                };
                if matches!(failure, Failure::Refused { .. }) {
                    // The relay answered: a space gone there is not one out of reach.
                    self.reached();
                }
                self.problem(journal, space, kind, now)?;
                let run = &mut self.runs[i];
                run.phase = Phase::Stopped;
                run.deadline = None;
                if self.is_settled() {
                    self.status.syncing = false;
                }
            }
            Failure::Refused {
                code: ErrorCode::SeqConflict,
                ..
            } if matches!(phase, Phase::Pushing(_)) => {
                let Phase::Pushing(device_seq) = phase else {
                    return Ok(());
                };
                // This device's database went back in time; the relay keeps the other payload.
                // Under a new device id (and actor) nothing it sends can collide again; the
                // outbox keeps every batch and pushes it under the new numbers.
                if !self.may_move(i, journal, now, "seq_conflict")? {
                    return Ok(());
                }
                self.problem(journal, space, ProblemKind::SeqConflict { device_seq }, now)?;
                self.change_device(journal, now)?;
                self.push_next(i, journal, now, out)?;
            }
            Failure::Refused {
                code: ErrorCode::RollupMismatch,
                ..
            } => {
                // A late answer to a rollup (the one in flight is handled above): it only
                // saved bytes, and the chunks stay chunks.
            }
            Failure::Refused {
                code: ErrorCode::SnapshotStale,
                ..
            } => {
                // Another device stored a snapshot covering more while this one sealed its
                // own, or this is a copy of an upload already stored: nothing is wrong, and
                // that snapshot serves everyone. Only the answer to the upload in flight ends
                // the round.
                if matches!(phase, Phase::Uploading(_)) {
                    return self.finish(i, journal, now);
                }
            }
            Failure::Refused {
                code,
                retry_after_ms,
            } => {
                self.problem(
                    journal,
                    space,
                    ProblemKind::Refused {
                        code: code.name().to_owned(),
                    },
                    now,
                )?;
                if let Phase::Uploading(_) = phase {
                    // A refused snapshot (stale, too large) is not worth retrying: finish the round.
                    return self.finish(i, journal, now);
                }
                self.retry_later(i, now);
                // It answered (a full relay, a space over its quota): not out of reach.
                self.status.online = true;
                if retry_after_ms > 0 {
                    // The relay chooses this number: honoured up to a bound, never trusted to fit.
                    let wait = retry_after_ms.min(MAX_RETRY_AFTER_MS.unsigned_abs());
                    let at = now.saturating_add(i64::try_from(wait).unwrap_or(MAX_RETRY_AFTER_MS));
                    if let Phase::Waiting(w) = self.runs[i].phase {
                        self.runs[i].phase = Phase::Waiting(w.max(at));
                    }
                }
            }
            Failure::RelayError { status } => {
                self.problem(journal, space, ProblemKind::RelayError { status }, now)?;
                self.retry_later(i, now);
                // It answered: failing is not being out of reach.
                self.reached();
            }
            Failure::Unreachable => self.retry_later(i, now),
            Failure::Untrusted { reason } => {
                self.retry_later(i, now);
                // Not "offline": someone must act (sign in to a portal, a new pin).
                self.status.untrusted_relay = Some(reason);
            }
        }
        Ok(())
    }
}

/// What came of a snapshot the relay served.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Loaded {
    /// Failed its checks or could not be read (reported).
    Unusable,
    /// Merged.
    Merged,
    /// Merged, but it covers where the relay stored this device's last chunk and lacks it
    /// (the cursor the device pulled from before).
    LacksMine { cursor: u64 },
}

/// (device, its number, relay sequence, plaintext or `None` when refused)
/// A chunk (or rollup) opened: (device, first number, last number, relay sequence, plaintext
/// or `None` when refused).
type Opened = ([u8; 16], u64, u64, u64, Option<Vec<u8>>);

fn pulled(opened: &[Opened]) -> Vec<PulledChange<'_>> {
    opened
        .iter()
        .map(|(device, first_seq, device_seq, _, bytes)| PulledChange {
            device: *device,
            first_seq: *first_seq,
            device_seq: *device_seq,
            bytes: bytes.as_deref(),
        })
        .collect()
}

impl SyncEngine {
    /// Chunks (and rollups) from the live subscription, in increasing relay order: applied
    /// together, the cursor moved to the last.
    fn live_chunks<S: SyncStore + ?Sized>(
        &mut self,
        i: usize,
        journal: &mut S,
        now: i64,
        phase: Phase,
        entries: &[Entry],
        out: &mut Vec<Action>,
    ) -> Result<()> {
        // Each run of entries that follow one another is applied as one; an entry below the
        // one before it starts a new run, so the batch means what the entries would one by
        // one (a run wholly below the cursor is dropped).
        let cursor_before = self.runs[i].state.cursor;
        let mut rest = entries;
        if let Some(hold) = self.runs[i].hold_live {
            match rest.iter().position(|e| e.relay_seq() <= hold) {
                Some(at) => {
                    self.runs[i].hold_live = None;
                    rest = &rest[at..];
                }
                None => return Ok(()),
            }
        }
        while !rest.is_empty() {
            let end = rest
                .windows(2)
                .position(|w| w[1].relay_seq() <= w[0].relay_seq())
                .map_or(rest.len(), |at| at.saturating_add(1));
            let (run, after) = rest.split_at(end);
            rest = after;
            let Some(last) = run.last() else {
                break;
            };
            let seq = last.relay_seq();
            if self.apply_chunks(i, journal, now, run, seq, out)?.is_some() {
                // The batch ended early (a rollup failed its checks, or a payload must be read
                // apart from what came before it): what follows on this socket is dropped, and
                // a new socket reads from the first entry not applied (without rollups, after
                // a refused one).
                let cursor = self.runs[i].state.cursor;
                let at = run
                    .iter()
                    .map(Entry::relay_seq)
                    .find(|s| *s > cursor)
                    .unwrap_or(cursor.saturating_add(1));
                self.runs[i].hold_live = Some(at);
                self.read(i, now, out);
                return Ok(());
            }
            // The backlog ends with the head's mark; a live chunk's is worked out here (live
            // chunks are few: one per edit elsewhere).
            if phase != Phase::CatchingUp
                && let Entry::Chunk(chunk) = last
            {
                self.keep_mark(i, journal, seq, chunk.mark())?;
            }
        }
        // Catching up has its time renewed only by progress: a relay that sends chunks the
        // device already holds, and never the up-to-date marker, is cut at the deadline
        // instead of keeping the device "online" with its own edits never going out.
        if phase == Phase::CatchingUp && self.runs[i].state.cursor > cursor_before {
            self.runs[i].deadline = Some(now.saturating_add(REQUEST_TIMEOUT_MS));
        }
        Ok(())
    }

    /// Opens and applies chunks and rollups after the cursor, then commits them with
    /// `new_cursor`. A rollup that fails its checks ends the batch before it (the cursor stops
    /// short of it, reads from there take no rollups up to its end, and it is reported):
    /// `Some` with the relay sequence of its last chunk. So does a payload that fits its own
    /// inflation budget but not what is left of the batch's: `Some` with its relay sequence,
    /// and it is read first in the next batch.
    fn apply_chunks<S: SyncStore + ?Sized>(
        &mut self,
        i: usize,
        journal: &mut S,
        now: i64,
        entries: &[Entry],
        new_cursor: u64,
        out: &mut Vec<Action>,
    ) -> Result<Option<u64>> {
        let link = self.runs[i].link.clone();
        let space = link.space;
        let cursor = self.runs[i].state.cursor;
        let mut new_cursor = new_cursor;
        if new_cursor <= cursor {
            return Ok(None);
        }
        let recovering = self.runs[i].recovering;
        let mut opened: Vec<Opened> = Vec::new();
        let mut last_seen: Vec<([u8; 16], u64)> = Vec::new();
        let mut rolled_now: Vec<([u8; 16], u64)> = Vec::new();
        let mut refused_rollup = None;
        // What Automerge may inflate from what is read here: it reads the changes together.
        // It grows with each payload read (not with those passed over, which a relay could
        // pad a page with).
        let mut inflation = inflate::budget(0);
        for entry in entries
            .iter()
            .filter(|e| e.relay_seq() > cursor && e.relay_seq() <= new_cursor)
        {
            let (device, first_seq, device_seq, relay_seq) = match entry {
                Entry::Chunk(c) => (c.device_id.0, c.device_seq, c.device_seq, c.relay_seq),
                Entry::Rollup(r) => (r.device_id.0, r.first_seq, r.last_seq, r.relay_seq),
            };
            if device == self.device {
                continue; // our own, echoed
            }
            let last = match last_seen.iter().find(|(d, _)| *d == device) {
                Some((_, s)) => *s,
                None => self.runs[i].peers.get(&device).copied().unwrap_or(0),
            };
            let hex = hex::encode(device);
            if device_seq <= last {
                // A rollup's chunks met again (a read that began inside its range), or what
                // came before: known already. After a rewind, reading from the start meets
                // what was applied before.
                let rolled = self.runs[i].rolled.get(&device).copied().unwrap_or(0);
                let known = matches!(entry, Entry::Rollup(_))
                    || rolled_now
                        .iter()
                        .any(|(d, s)| *d == device && *s >= device_seq)
                    || rolled >= device_seq;
                if !recovering && !known {
                    let kind = ProblemKind::Replay {
                        device: hex,
                        device_seq,
                    };
                    self.problem(journal, space, kind, now)?;
                }
                continue;
            }
            if first_seq > last.saturating_add(1) && !recovering {
                // Something from this device was withheld; nothing after the hole is applied.
                // (After a rewind the hole is what the relay lost, and the whole documents
                // pushed again fill it: those are applied.)
                if self.runs[i].gaps_reported.insert(device) {
                    let kind = ProblemKind::Gap {
                        device: hex,
                        expected: last.saturating_add(1),
                        got: first_seq,
                    };
                    self.problem(journal, space, kind, now)?;
                }
                // A hole after chunks of this device that were merged: a real edit withheld.
                let real = self.runs[i].authentic.contains(&device);
                self.runs[i].state = journal.mark_refused(space, relay_seq, real)?;
                continue;
            }
            let plain = match entry {
                Entry::Chunk(c) => {
                    let aad = ChunkAad {
                        space_id: link.keys.space_id,
                        device,
                        device_seq: c.device_seq,
                    };
                    match open_chunk(&link.keys.content, &aad, &c.payload) {
                        Ok(p) if fits(&p, &mut inflation) => Some(p),
                        Ok(p) if inflate::within(&p, &mut inflate::budget(p.len())) => {
                            // It fits alone: read it after what came before it here, in a
                            // batch of its own, so where the relay's pages break never
                            // decides whether it is read.
                            new_cursor = relay_seq.saturating_sub(1);
                            refused_rollup = Some(relay_seq);
                            break;
                        }
                        Ok(_) => {
                            // It would inflate past what a phone can hold: never read.
                            let kind = ProblemKind::Unmergeable {
                                device: hex,
                                device_seq: c.device_seq,
                                relay_seq,
                            };
                            self.problem(journal, space, kind, now)?;
                            let real = self.runs[i].authentic.contains(&device);
                            self.runs[i].state = journal.mark_refused(space, relay_seq, real)?;
                            None
                        }
                        Err(Error::Tampered) => {
                            let kind = ProblemKind::Tampered {
                                relay_seq,
                                device: hex,
                            };
                            self.problem(journal, space, kind, now)?;
                            // From a device whose chunks were merged here before, it is a real
                            // edit the relay altered; from an id never seen, it may be garbage.
                            let real = self.runs[i].authentic.contains(&device);
                            self.runs[i].state = journal.mark_refused(space, relay_seq, real)?;
                            None
                        }
                        Err(e) => return Err(e),
                    }
                }
                Entry::Rollup(r) => {
                    let aad = RollupAad {
                        space_id: link.keys.space_id,
                        device,
                        first_seq: r.first_seq,
                        last_seq: r.last_seq,
                    };
                    let plain = match open_rollup(&link.keys.content, &aad, &r.payload) {
                        Ok(p) if fits(&p, &mut inflation) => Some(p),
                        Ok(p) if inflate::within(&p, &mut inflate::budget(p.len())) => {
                            // As for a chunk: in a batch of its own.
                            new_cursor = relay_seq.saturating_sub(1);
                            refused_rollup = Some(relay_seq);
                            break;
                        }
                        Ok(_) => None,
                        Err(Error::Tampered) => None,
                        Err(e) => return Err(e),
                    };
                    let earlier: Vec<&[u8]> =
                        opened.iter().filter_map(|o| o.4.as_deref()).collect();
                    let scope = GroupScope {
                        device,
                        first_seq: r.first_seq,
                        last_seq: r.last_seq,
                    };
                    match plain.filter(|p| journal.rollup_holds(space, &scope, p, &earlier)) {
                        Some(p) => {
                            rolled_now.push((device, r.last_seq));
                            Some(p)
                        }
                        None => {
                            // Altered, cut, or not what it claims: its chunks are read instead.
                            let kind = ProblemKind::Tampered {
                                relay_seq,
                                device: hex,
                            };
                            self.problem(journal, space, kind, now)?;
                            let run = &mut self.runs[i];
                            run.no_rollups_until = run.no_rollups_until.max(r.last_relay_seq);
                            refused_rollup = Some(r.last_relay_seq);
                            new_cursor = relay_seq.saturating_sub(1);
                            break;
                        }
                    }
                }
            };
            opened.push((device, first_seq, device_seq, relay_seq, plain));
            match last_seen.iter_mut().find(|(d, _)| *d == device) {
                Some(entry) => entry.1 = device_seq,
                None => last_seen.push((device, device_seq)),
            }
        }
        if new_cursor <= cursor && opened.is_empty() {
            return Ok(refused_rollup);
        }
        let new_cursor = new_cursor.max(cursor);
        let mut merged = match journal.apply_pulled(space, &pulled(&opened), new_cursor) {
            Ok(merged) => merged,
            Err(e) if is_data_error(&e) => {
                // One change the document refuses must not hold back the rest: merge chunk by
                // chunk, and treat one that still fails like a tampered chunk.
                let mut records = Vec::new();
                let mut forged = Vec::new();
                for one in &mut opened {
                    let single = std::slice::from_mut(one);
                    match journal.apply_pulled(space, &pulled(single), cursor) {
                        Ok(m) => {
                            records.extend(m.records);
                            forged.extend(m.forged);
                        }
                        Err(e) if is_data_error(&e) => {
                            let (device, _, device_seq, relay_seq, bytes) = &mut single[0];
                            *bytes = None;
                            let kind = ProblemKind::Unmergeable {
                                device: hex::encode(*device),
                                device_seq: *device_seq,
                                relay_seq: *relay_seq,
                            };
                            let relay_seq = *relay_seq;
                            self.problem(journal, space, kind, now)?;
                            let real = self.runs[i].authentic.contains(device);
                            journal.mark_refused(space, relay_seq, real)?;
                            // Its number is consumed, so the device's later chunks line up.
                            journal.apply_pulled(space, &pulled(single), cursor)?;
                        }
                        Err(e) => return Err(e),
                    }
                }
                let mut merged = journal.apply_pulled(space, &[], new_cursor)?;
                records.extend(merged.records);
                records.sort();
                records.dedup();
                merged.records = records;
                merged.forged.extend(forged);
                merged
            }
            Err(e) => return Err(e),
        };
        for kind in std::mem::take(&mut merged.forged) {
            self.problem(journal, space, kind, now)?;
        }
        let run = &mut self.runs[i];
        run.state = merged.state;
        for (device, seq) in last_seen {
            let known = run.peers.entry(device).or_default();
            *known = (*known).max(seq);
        }
        for (device, first_seq, device_seq, _, bytes) in &opened {
            if bytes.is_some() {
                run.authentic.insert(*device);
                let chunks = device_seq.saturating_sub(*first_seq).saturating_add(1);
                self.applied = self.applied.saturating_add(chunks);
            }
        }
        for (device, seq) in rolled_now {
            let rolled = run.rolled.entry(device).or_default();
            *rolled = (*rolled).max(seq);
        }
        if !merged.records.is_empty() {
            out.push(Action::Changed {
                space,
                records: merged.records,
            });
        }
        Ok(refused_rollup)
    }

    /// Opens and merges a snapshot; `Unusable` if it failed its checks or could not be read
    /// (reported).
    fn apply_snapshot<S: SyncStore + ?Sized>(
        &mut self,
        i: usize,
        journal: &mut S,
        now: i64,
        snapshot: &Snapshot,
        out: &mut Vec<Action>,
    ) -> Result<Loaded> {
        let link = self.runs[i].link.clone();
        let covers = snapshot.covers;
        let bad = ProblemKind::BadSnapshot { covers };
        let plain = match open_snapshot(
            &link.keys.content,
            &link.keys.space_id,
            covers,
            &snapshot.payload,
        ) {
            Ok(p) if inflate::within(&p, &mut inflate::budget(p.len())) => p,
            Ok(_) => {
                // It would inflate past what a phone can hold: never read.
                self.problem(journal, link.space, bad, now)?;
                return Ok(Loaded::Unusable);
            }
            Err(Error::Tampered) => {
                self.problem(journal, link.space, bad, now)?;
                return Ok(Loaded::Unusable);
            }
            Err(e) => return Err(e),
        };
        let cursor = self.runs[i].state.cursor;
        let mut lacks = false;
        let decoded = decode_snapshot(&plain).and_then(|(peers, doc)| {
            lacks = self.lacks_mine(i, covers, &peers);
            let merged = journal.apply_snapshot(link.space, doc, &peers, covers)?;
            Ok((peers, merged))
        });
        let (peers, mut merged) = match decoded {
            Ok(done) => done,
            Err(e) if is_data_error(&e) => {
                self.problem(journal, link.space, bad, now)?;
                return Ok(Loaded::Unusable);
            }
            Err(e) => return Err(e),
        };
        for kind in std::mem::take(&mut merged.forged) {
            self.problem(journal, link.space, kind, now)?;
        }
        if merged.unusable {
            // It carried a change every honest device refuses: the chunks are read instead.
            self.runs[i].state = merged.state;
            self.problem(journal, link.space, bad, now)?;
            return Ok(Loaded::Unusable);
        }
        let run = &mut self.runs[i];
        run.state = merged.state;
        for &(device, seq) in &peers {
            let known = run.peers.entry(device).or_default();
            *known = (*known).max(seq);
            run.authentic.insert(device);
        }
        if !merged.records.is_empty() {
            out.push(Action::Changed {
                space: link.space,
                records: merged.records,
            });
        }
        Ok(if lacks {
            Loaded::LacksMine { cursor }
        } else {
            Loaded::Merged
        })
    }

    fn refresh_status<S: SyncStore + ?Sized>(&mut self, journal: &S) -> Result<()> {
        if !std::mem::take(&mut self.recount) {
            return Ok(());
        }
        let mut pending = 0;
        for run in &self.runs {
            pending += journal.pending_changes(run.link.space)?;
        }
        self.status.pending = pending;
        Ok(())
    }
}
