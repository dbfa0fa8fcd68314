//! The drivers: one bounded round over HTTP, or a live loop over WebSockets.

use std::{
    collections::{HashMap, VecDeque},
    future::Future,
    sync::{
        Arc, Mutex, MutexGuard,
        atomic::{AtomicU64, Ordering},
    },
    time::Duration,
};

use futures_util::future::join_all;
use tokio::{
    sync::{Notify, mpsc, watch},
    task::JoinHandle,
};

use mend_core::{
    Error, Journal, RecordId, Result,
    store::Space,
    sync::{
        Action, Entry, Event, Failure, Mode, Problem, ROLLUP_EVERY, Request, Response,
        SNAPSHOT_EVERY, SpaceLink, SyncEngine, SyncStatus,
    },
};

use crate::{
    RelayHttp, RelayOptions,
    live::{self, Incoming, LiveSocket},
    now_ms,
};

/// HTTP requests live sync keeps running for one space: the engine asks again after a
/// timeout while the earlier answer may still be on its way over a slow link.
const LIVE_REQUESTS_PER_SPACE: usize = 2;

/// How often a quiet live socket is pinged (the relay closes idle ones after 90 s).
const PING_EVERY: Duration = Duration::from_secs(30);

/// The first pause before live sync starts again after a step of its own failed for a reason
/// that passes (the journal busy in another process, the disk); it doubles up to
/// [`LIVE_RETRY_MAX`], and starts over once live sync ran that long without failing.
const LIVE_RETRY_FIRST: Duration = Duration::from_secs(1);

/// The longest pause between two starts of live sync after failed steps.
const LIVE_RETRY_MAX: Duration = Duration::from_secs(60);

/// Whether a failed live step may work later: live sync then starts again instead of ending.
/// A damaged database does not get better by itself: live sync ends, and the app offers
/// recovery.
fn passes(error: &Error) -> bool {
    !error.is_damaged_journal()
        && matches!(
            error,
            Error::Locked(_)
                | Error::Unavailable { .. }
                | Error::Storage(_)
                | Error::Io(_)
                | Error::Unreachable
        )
}

/// Told what changed. Called from sync's threads (after each storage step, from the blocking
/// thread that ran it): keep it quick and hand work to the UI thread.
pub trait SyncObserver: Send + Sync {
    /// Records in `space` changed because of what another device wrote.
    fn records_changed(&self, space: Space, records: Vec<RecordId>);
    /// The sync status changed.
    fn status_changed(&self, status: SyncStatus);
    /// The journal moved to a new epoch: the keyring holds new secrets, which the app must
    /// store again ([`crate::Device::keyring`]).
    fn keyring_changed(&self) {}
}

/// A journal's connection to its relay.
pub struct SyncClient {
    journal: Arc<Mutex<Journal>>,
    device: [u8; 16],
    /// The spaces and their keys: a new epoch replaces them ([`SyncClient::relink`]).
    links: Mutex<Vec<SpaceLink>>,
    http: RelayHttp,
    observer: Option<Arc<dyn SyncObserver>>,
    snapshot_every: AtomicU64,
    rollup_every: AtomicU64,
    /// Woken when live sync merges an announcement of the next epoch that this device can
    /// offer the relay: live sync alone never moves (a round does), so whoever holds the
    /// device runs one ([`crate::Device::start_live_following`]).
    epoch_news: Arc<Notify>,
}

impl std::fmt::Debug for SyncClient {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SyncClient")
            .field("relay", &self.http.base())
            .finish()
    }
}

pub(crate) fn lock(journal: &Mutex<Journal>) -> Result<MutexGuard<'_, Journal>> {
    journal
        .lock()
        // A panic inside a step left the journal's memory in doubt; its file is fine.
        .map_err(|_| Error::Internal("an earlier call failed inside the journal".into()))
}

/// Runs SQLite and Automerge work on tokio's blocking pool, never on an async worker: a merge
/// can take a few hundred milliseconds, and the sockets must keep being served meanwhile.
pub(crate) async fn blocking<T: Send + 'static>(
    work: impl FnOnce() -> Result<T> + Send + 'static,
) -> Result<T> {
    tokio::task::spawn_blocking(work)
        .await
        .map_err(|e| Error::Internal(format!("a storage task failed: {e}")))?
}

fn seed() -> u64 {
    let mut b = [0u8; 8];
    let _ = getrandom::fill(&mut b);
    u64::from_le_bytes(b)
}

impl SyncClient {
    /// A client syncing `links` of `journal` with the relay at `relay_url`.
    pub fn new(
        journal: Arc<Mutex<Journal>>,
        relay_url: &str,
        relay: &RelayOptions,
        links: Vec<SpaceLink>,
        observer: Option<Arc<dyn SyncObserver>>,
    ) -> Result<Self> {
        let device = *lock(&journal)?.device().as_bytes();
        Ok(Self {
            journal,
            device,
            links: Mutex::new(links),
            http: RelayHttp::new(relay_url, relay)?,
            observer,
            snapshot_every: AtomicU64::new(SNAPSHOT_EVERY),
            rollup_every: AtomicU64::new(ROLLUP_EVERY as u64),
            epoch_news: Arc::new(Notify::new()),
        })
    }

    /// Woken when live sync holds an announcement of the next epoch to follow.
    pub fn epoch_news(&self) -> Arc<Notify> {
        Arc::clone(&self.epoch_news)
    }

    /// Uploads a snapshot after this many relay chunks (default 500).
    pub fn set_snapshot_every(&self, chunks: u64) {
        self.snapshot_every.store(chunks.max(1), Ordering::Relaxed);
    }

    /// Seals this device's acknowledged chunks again as one rollup once this many wait
    /// (default 32).
    pub fn set_rollup_every(&self, chunks: usize) {
        let chunks = u64::try_from(chunks.max(1)).unwrap_or(u64::MAX);
        self.rollup_every.store(chunks, Ordering::Relaxed);
    }

    fn engine(&self, mode: Mode) -> SyncEngine {
        let mut engine = SyncEngine::new(self.device, self.links(), mode, seed());
        engine.set_snapshot_every(self.snapshot_every.load(Ordering::Relaxed));
        let rollup_every = self.rollup_every.load(Ordering::Relaxed);
        engine.set_rollup_every(usize::try_from(rollup_every).unwrap_or(usize::MAX));
        engine
    }

    fn links(&self) -> Vec<SpaceLink> {
        self.links.lock().map(|l| l.clone()).unwrap_or_default()
    }

    fn link(&self, space: Space) -> Option<SpaceLink> {
        self.links().into_iter().find(|l| l.space == space)
    }

    /// Syncs these spaces from the next round on (a new epoch's keys).
    pub(crate) fn relink(&self, links: Vec<SpaceLink>) {
        if let Ok(mut kept) = self.links.lock() {
            *kept = links;
        }
    }

    /// Waits for the journal's background load with the lock released, so writes made
    /// meanwhile do not queue behind a merge that waits for it.
    pub(crate) async fn loaded(&self) -> Result<()> {
        let journal = Arc::clone(&self.journal);
        blocking(move || {
            // Taking the lock may wait for a merge: on the blocking pool, like the merge.
            let loaded = lock(&journal)?.loaded();
            for doc in loaded {
                while !doc.wait(Duration::from_secs(60)) {}
            }
            Ok(())
        })
        .await
    }

    /// Feeds `events` to the engine on a blocking thread, holding the journal's lock for the
    /// batch, and returns the engine with the requests to send, in order. The observer hears
    /// of changes and status there, once the lock is released, rather than from the awaiting
    /// task: a step the deadline cut still commits, and its listeners still hear of it.
    async fn feed(
        &self,
        mut engine: SyncEngine,
        events: Vec<Event>,
        live: bool,
    ) -> Result<(SyncEngine, Vec<Request>, Fed)> {
        let journal = Arc::clone(&self.journal);
        let observer = self.observer.clone();
        blocking(move || {
            let mut actions = Vec::new();
            let mut epoch_offered = false;
            {
                let mut journal = lock(&journal)?;
                // One step: in extension mode the file lock is held for this batch (never
                // across a request), and what another process committed is reloaded first.
                journal.step(|journal| {
                    for event in events {
                        actions.extend(engine.handle(journal, now_ms(), event)?);
                    }
                    // Live sync hears of a new epoch here; a round follows it itself.
                    epoch_offered = live && journal.epoch_offer().ok().flatten().is_some();
                    // An ask to rejoin that live sync brought (or carried) is noted as a
                    // round would note it.
                    if live && let Err(e) = journal.note_rejoin_asks() {
                        tracing::warn!(error = %e, "could not note the asks to rejoin");
                    }
                    Ok(())
                })?;
                // In extension mode the step first took in what another process committed:
                // listeners here hear of those records too.
                for (space, records) in journal.take_written() {
                    actions.push(Action::Changed { space, records });
                }
            }
            let mut requests = Vec::new();
            let mut fed = Fed {
                epoch_offered,
                ..Fed::default()
            };
            for action in actions {
                match action {
                    Action::Send(request) => requests.push(request),
                    Action::Changed { space, records } => {
                        let n = u64::try_from(records.len()).unwrap_or(u64::MAX);
                        fed.changed = fed.changed.saturating_add(n);
                        if let Some(o) = &observer {
                            o.records_changed(space, records);
                        }
                    }
                    Action::Status(status) => {
                        if let Some(o) = &observer {
                            o.status_changed(status.clone());
                        }
                        fed.status = Some(status);
                    }
                }
            }
            Ok((engine, requests, fed))
        })
        .await
    }

    /// The relay connection.
    pub fn relay(&self) -> &RelayHttp {
        &self.http
    }

    /// One bounded round: pull and push every space over HTTP, retrying with backoff until
    /// everything is in or `budget` runs out. Returns the status at the end, or
    /// [`Error::UntrustedRelay`] at once when the device refuses the relay (its certificate,
    /// its pin, clear text off this machine): retrying would not help.
    pub async fn sync_now(&self, budget: Duration) -> Result<SyncStatus> {
        Ok(self.sync_round(budget).await?.status)
    }

    /// [`SyncClient::sync_now`], saying what the round did. `budget` is a hard deadline: no
    /// request starts after it, and whatever is in flight when it passes (connecting, the TLS
    /// handshake, writing, reading, the background load) is cut there. A cut storage step
    /// finishes on its blocking thread and commits whole; a push whose acknowledgement was cut
    /// stays in the outbox and the next round sends the same bytes again, which the relay
    /// takes as a repeat. Dropping the returned future stops the round the same way.
    pub async fn sync_round(&self, budget: Duration) -> Result<RoundReport> {
        self.sync_round_or(budget, std::future::pending()).await
    }

    /// [`SyncClient::sync_round`], also cut when `stop` completes (an app's expiration
    /// handler): the report then says what the round did until then.
    pub async fn sync_round_or(
        &self,
        budget: Duration,
        stop: impl Future<Output = ()>,
    ) -> Result<RoundReport> {
        let started = now_ms();
        let deadline = tokio::time::Instant::now() + budget;
        let mut round = Round::default();
        {
            let drive = tokio::time::timeout_at(deadline, self.drive(&mut round, deadline, budget));
            tokio::select! {
                cut = drive => {
                    if let Ok(result) = cut {
                        result?;
                    }
                }
                () = stop => {}
            }
        }
        let mut status = match &round.engine {
            Some(engine) => engine.status().clone(),
            None => round.last,
        };
        status.syncing = !round.finished;
        Ok(RoundReport {
            finished: round.finished,
            pushed: round.pushed,
            pulled: round.pulled,
            requests: round.requests,
            changed: round.changed,
            problems: status
                .problems
                .iter()
                .filter(|p| p.at >= started)
                .cloned()
                .collect(),
            status,
            keyring_changed: false,
        })
    }

    /// The round itself; [`SyncClient::sync_round`] cuts it at `deadline`, so what it did so
    /// far lives in `round`, not on this future's stack.
    async fn drive(
        &self,
        round: &mut Round,
        deadline: tokio::time::Instant,
        budget: Duration,
    ) -> Result<()> {
        self.loaded().await?;
        // A refusal from an earlier round (or live sync) is not this round's.
        let _ = self.http.take_problem();
        let mut engine = self.engine(Mode::Once);
        // Retries are spaced to fit in the budget, never backed off past it.
        let budget_ms = i64::try_from(budget.as_millis()).unwrap_or(i64::MAX);
        engine.set_deadline(Some(now_ms().saturating_add(budget_ms)));
        round.engine = Some(engine);
        let mut inbox = VecDeque::from([Event::Start]);
        loop {
            let mut requests = Vec::new();
            if !inbox.is_empty() {
                // Answers that came too late are dropped unapplied: the next round asks again.
                if tokio::time::Instant::now() >= deadline {
                    return Ok(());
                }
                let Some(engine) = round.engine.take() else {
                    return Ok(());
                };
                let events = coalesce(inbox.drain(..).collect());
                let pushed = events
                    .iter()
                    .filter(|e| matches!(e, Event::Response(Response::Acked { .. })))
                    .count();
                // What the engine took, not what the pages claimed: refused chunks, rollups that
                // fail their checks and chunks already held do not count.
                let applied = engine.applied();
                let (engine, sent, fed) = self.feed(engine, events, false).await?;
                let pulled = engine.applied().saturating_sub(applied);
                round.engine = Some(engine);
                round.pushed = round
                    .pushed
                    .saturating_add(u64::try_from(pushed).unwrap_or(u64::MAX));
                round.pulled = round.pulled.saturating_add(pulled);
                round.changed = round.changed.saturating_add(fed.changed);
                if let Some(status) = fed.status {
                    round.last = status;
                }
                requests = sent;
            }
            let Some(engine) = round.engine.as_ref() else {
                return Ok(());
            };
            if !requests.is_empty() {
                if tokio::time::Instant::now() >= deadline {
                    return Ok(());
                }
                // The engine's id: it changes if the relay reports a sequence conflict.
                let device = engine.device();
                round.requests = round
                    .requests
                    .saturating_add(u64::try_from(requests.len()).unwrap_or(u64::MAX));
                let links = self.links();
                let calls = requests.iter().filter_map(|r| {
                    let link = links.iter().find(|l| l.space == r.space())?;
                    Some(self.http.execute_until(link, &device, r, deadline))
                });
                inbox.extend(join_all(calls).await.into_iter().map(Event::Response));
                if let Some(problem) = self.http.take_problem() {
                    return Err(Error::UntrustedRelay(problem));
                }
                continue;
            }
            if engine.is_settled() {
                round.finished = true;
                return Ok(());
            }
            if tokio::time::Instant::now() >= deadline {
                return Ok(());
            }
            let wait = engine
                .next_wake()
                .map(|w| {
                    Duration::from_millis(u64::try_from(w.saturating_sub(now_ms())).unwrap_or(0))
                })
                .unwrap_or(Duration::from_millis(100));
            tokio::time::sleep_until((tokio::time::Instant::now() + wait).min(deadline)).await;
            inbox.push_back(Event::Tick);
        }
    }

    /// Starts live sync on the current tokio runtime. Call [`LiveSync::local_edit`] after each
    /// edit so it is pushed at once, and [`LiveSync::stop`] when the app leaves the foreground.
    pub fn start_live(self: &Arc<Self>) -> LiveSync {
        let (stop_tx, stop_rx) = watch::channel(false);
        let edits = Arc::new(Notify::new());
        let client = Arc::clone(self);
        let notify = Arc::clone(&edits);
        let task = tokio::spawn(async move {
            let mut pause = LIVE_RETRY_FIRST;
            loop {
                let began = tokio::time::Instant::now();
                let error = match client.live_loop(stop_rx.clone(), Arc::clone(&notify)).await {
                    Ok(()) => return,
                    Err(e) => e,
                };
                // Whatever comes next, the app must not go on showing "online" over sockets
                // that are gone.
                client.tell_offline().await;
                if !passes(&error) {
                    tracing::error!(error = %error, "live sync stopped");
                    return;
                }
                if began.elapsed() >= LIVE_RETRY_MAX {
                    pause = LIVE_RETRY_FIRST;
                }
                tracing::warn!(
                    error = %error,
                    pause_s = pause.as_secs(),
                    "live sync paused; it starts again"
                );
                let mut stop = stop_rx.clone();
                tokio::select! {
                    () = tokio::time::sleep(pause) => {}
                    _ = stop.changed() => return,
                }
                if *stop_rx.borrow() {
                    return;
                }
                pause = pause.saturating_mul(2).min(LIVE_RETRY_MAX);
            }
        });
        LiveSync {
            stop: stop_tx,
            edits,
            task: Some(task),
        }
    }

    /// Tells the observer the device is offline, with what the journal holds (read without
    /// a step: the step may be what failed).
    async fn tell_offline(&self) {
        let Some(observer) = self.observer.clone() else {
            return;
        };
        let journal = Arc::clone(&self.journal);
        let summary = blocking(move || lock(&journal)?.sync_summary()).await;
        let summary = match summary {
            Ok(summary) => summary,
            Err(e) => {
                tracing::warn!(error = %e, "could not read the sync summary");
                Default::default()
            }
        };
        observer.status_changed(SyncStatus {
            online: false,
            syncing: false,
            pending: summary.pending,
            last_synced: summary.last_synced,
            problems: summary.problems,
            untrusted_relay: None,
        });
    }

    async fn live_loop(&self, mut stop: watch::Receiver<bool>, edits: Arc<Notify>) -> Result<()> {
        self.loaded().await?;
        let mut engine = self.engine(Mode::Live);
        let (tx, mut rx) = mpsc::channel::<Incoming>(BATCH_CHUNKS);
        let waiting = live::Feed::room();
        let (http_tx, mut http_rx) = mpsc::channel::<Response>(64);
        let mut sockets: HashMap<Space, LiveSocket> = HashMap::new();
        let mut generation = 0u64;
        let mut inbox = VecDeque::from([Event::Start]);
        let mut in_flight: tokio::task::JoinSet<()> = tokio::task::JoinSet::new();
        let mut requests_of: HashMap<Space, VecDeque<tokio::task::AbortHandle>> = HashMap::new();
        let mut ping = tokio::time::interval(PING_EVERY);
        loop {
            while in_flight.try_join_next().is_some() {}
            while !inbox.is_empty() {
                let events = coalesce(inbox.drain(..).collect());
                let (fed, requests, told) = match self.feed(engine, events, true).await {
                    // Another process (an app extension) moved the journal to a new epoch:
                    // nothing goes out under the old keys. The epoch-following task takes the
                    // new ones and starts live sync again on them.
                    Err(Error::MovedElsewhere) => {
                        self.epoch_news.notify_one();
                        return Ok(());
                    }
                    other => other?,
                };
                engine = fed;
                if told.epoch_offered {
                    self.epoch_news.notify_one();
                }
                let device = engine.device();
                for request in requests {
                    let space = request.space();
                    let Some(link) = self.link(space) else {
                        continue;
                    };
                    match request {
                        Request::Subscribe { after, rollups, .. } => {
                            if let Some(old) = sockets.remove(&space) {
                                old.close().await;
                            }
                            generation += 1;
                            match live::connect(
                                &self.http,
                                &link,
                                &device,
                                after,
                                rollups,
                                live::Feed {
                                    waiting: Arc::clone(&waiting),
                                    ..live::Feed::new(generation, tx.clone())
                                },
                            )
                            .await
                            {
                                Ok(socket) => {
                                    sockets.insert(space, socket);
                                }
                                Err(failure) => {
                                    inbox.push_back(Event::Response(Response::Failed {
                                        space,
                                        failure,
                                    }))
                                }
                            }
                        }
                        Request::Push { push, .. } => {
                            let sent = match sockets.get_mut(&space) {
                                Some(socket) => socket.push(push).await,
                                None => false,
                            };
                            if !sent {
                                sockets.remove(&space);
                                let failure = Failure::Unreachable;
                                inbox.push_back(Event::Response(Response::Failed {
                                    space,
                                    failure,
                                }));
                            }
                        }
                        other => {
                            let http = self.http.clone();
                            let reply = http_tx.clone();
                            // A late answer still counts (the engine applies a page whenever
                            // it comes), so a slow link finishes what the engine asked again.
                            // But at most `LIVE_REQUESTS_PER_SPACE` run for a space, the oldest
                            // cut beyond, and all are cut when live sync ends (the set drops):
                            // a relay that holds or drips answers cannot pile requests, and
                            // their buffers, up.
                            let handle = in_flight.spawn(async move {
                                let response = http.execute(&link, &device, &other).await;
                                let _ = reply.send(response).await;
                            });
                            let running = requests_of.entry(space).or_default();
                            running.retain(|h| !h.is_finished());
                            running.push_back(handle);
                            while running.len() > LIVE_REQUESTS_PER_SPACE {
                                if let Some(oldest) = running.pop_front() {
                                    oldest.abort();
                                }
                            }
                        }
                    }
                }
            }
            // The relay refused every space for good (a key it does not know, a space erased):
            // the task ends, so the app sees live sync is off rather than a socket that never
            // comes back.
            if engine.is_stopped() {
                tracing::warn!("live sync stopped: the relay refused every space");
                break;
            }
            let wake = engine.next_wake().map(|w| {
                tokio::time::Instant::now()
                    + Duration::from_millis(u64::try_from(w.saturating_sub(now_ms())).unwrap_or(0))
            });
            tokio::select! {
                Some(incoming) = rx.recv() => {
                    // What the sockets delivered while the last events were applied comes in
                    // together, so a backlog is merged and committed in batches, not chunk by
                    // chunk (see `coalesce`).
                    let mut next = Some(incoming);
                    let mut taken = 0usize;
                    let mut bytes = 0usize;
                    while let Some(incoming) = next.take() {
                        bytes = bytes.saturating_add(live::payload_len(&incoming.response));
                        let current = sockets.get(&incoming.space).map(|s| s.generation);
                        if current == Some(incoming.generation) {
                            if matches!(incoming.response, Response::Failed { .. }) {
                                sockets.remove(&incoming.space);
                            }
                            inbox.push_back(Event::Response(incoming.response));
                        }
                        taken += 1;
                        if taken < BATCH_CHUNKS && bytes < BATCH_BYTES {
                            next = rx.try_recv().ok();
                        }
                    }
                }
                Some(response) = http_rx.recv() => inbox.push_back(Event::Response(response)),
                _ = edits.notified() => inbox.push_back(Event::LocalEdit),
                _ = sleep_until_opt(wake) => inbox.push_back(Event::Tick),
                _ = ping.tick() => {
                    // A socket the relay no longer takes a ping on is gone: the engine is told,
                    // so it shows offline and connects again.
                    let mut gone = Vec::new();
                    for (space, socket) in sockets.iter_mut() {
                        if !socket.ping().await {
                            gone.push(*space);
                        }
                    }
                    for space in gone {
                        sockets.remove(&space);
                        inbox.push_back(Event::Response(Response::Failed {
                            space,
                            failure: Failure::Unreachable,
                        }));
                    }
                }
                _ = stop.changed() => break,
            }
        }
        for (_, socket) in sockets.drain() {
            socket.close().await;
        }
        Ok(())
    }
}

/// At most this many live chunks are applied together: a pull's page.
const BATCH_CHUNKS: usize = 1024;

/// At most this many payload bytes of live chunks are applied together: a pull's page.
const BATCH_BYTES: usize = 4 << 20;

/// Joins runs of live chunks for one space, each after the one before it, into one
/// [`Response::Chunks`] (up to a page's worth), so the engine merges and commits them once.
/// Everything else keeps its place, so the up-to-date marker still follows the backlog it ends.
fn coalesce(events: Vec<Event>) -> Vec<Event> {
    let mut out: Vec<Event> = Vec::with_capacity(events.len());
    // Payload bytes of the batch at the end of `out` (none there: nothing may join).
    let mut bytes = usize::MAX;
    for event in events {
        let (space, entry) = match event {
            Event::Response(Response::Chunk { space, chunk }) => (space, Entry::Chunk(chunk)),
            Event::Response(Response::Rollup { space, rollup }) => (space, Entry::Rollup(rollup)),
            event => {
                bytes = usize::MAX;
                out.push(event);
                continue;
            }
        };
        let size = entry.payload_len();
        if let Some(Event::Response(Response::Chunks { space: s, entries })) = out.last_mut()
            && *s == space
            && entries.len() < BATCH_CHUNKS
            && bytes.saturating_add(size) <= BATCH_BYTES
            && entries
                .last()
                .is_some_and(|e| e.relay_seq() < entry.relay_seq())
        {
            bytes = bytes.saturating_add(size);
            entries.push(entry);
            continue;
        }
        bytes = size;
        out.push(Event::Response(Response::Chunks {
            space,
            entries: vec![entry],
        }));
    }
    out
}

async fn sleep_until_opt(at: Option<tokio::time::Instant>) {
    match at {
        Some(at) => tokio::time::sleep_until(at).await,
        None => std::future::pending().await,
    }
}

/// What one bounded round did ([`SyncClient::sync_round`]).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct RoundReport {
    /// Everything was pushed and pulled before the deadline.
    pub finished: bool,
    /// Batches of this device's changes the relay acknowledged (and this device recorded).
    pub pushed: u64,
    /// Chunks of other devices' changes read from the relay and applied (a rollup counts as
    /// the chunks it stands for).
    pub pulled: u64,
    /// Requests sent to the relay.
    pub requests: u64,
    /// Records that changed here because of what the round brought.
    pub changed: u64,
    /// Problems noticed during the round.
    pub problems: Vec<Problem>,
    /// The status at the end: `pending` counts the changes still to push.
    pub status: SyncStatus,
    /// The journal moved to a new epoch during the round: store the keyring again.
    pub keyring_changed: bool,
}

/// What one [`SyncClient::feed`] told the observer.
#[derive(Default)]
struct Fed {
    /// Records changed.
    changed: u64,
    /// The last status reported.
    status: Option<SyncStatus>,
    /// The journal holds an announcement of the next epoch to offer the relay.
    epoch_offered: bool,
}

/// A round's progress, kept outside the future the deadline may cut.
#[derive(Default)]
struct Round {
    /// `None` while a storage step has it (and after the deadline cut that step).
    engine: Option<SyncEngine>,
    /// The last status the engine reported.
    last: SyncStatus,
    finished: bool,
    pushed: u64,
    pulled: u64,
    requests: u64,
    changed: u64,
}

/// A running live sync.
/// How long [`LiveSync::stop`] waits for the live task to close its sockets.
const STOP_WAIT: Duration = Duration::from_secs(5);

#[derive(Debug)]
pub struct LiveSync {
    stop: watch::Sender<bool>,
    edits: Arc<Notify>,
    task: Option<JoinHandle<()>>,
}

impl LiveSync {
    /// A local edit was committed: push it now.
    pub fn local_edit(&self) {
        self.edits.notify_one();
    }

    /// A live sync around `task`, for tests of stopping it.
    #[cfg(test)]
    pub(crate) fn stuck_for_test(stop: watch::Sender<bool>, task: JoinHandle<()>) -> Self {
        Self {
            stop,
            edits: Arc::new(Notify::new()),
            task: Some(task),
        }
    }

    /// Whether the live task has ended (stopped, or failed and logged).
    pub fn is_finished(&self) -> bool {
        self.task.as_ref().is_none_or(JoinHandle::is_finished)
    }

    /// Stops live sync and waits for the sockets to close, at most [`STOP_WAIT`]: then the
    /// task is cut where it waits (a storage step it began still commits whole).
    pub async fn stop(mut self) {
        let _ = self.stop.send(true);
        if let Some(mut task) = self.task.take()
            && tokio::time::timeout(STOP_WAIT, &mut task).await.is_err()
        {
            tracing::warn!("live sync did not stop in time; cut");
            task.abort();
            let _ = task.await;
        }
    }
}

impl Drop for LiveSync {
    fn drop(&mut self) {
        let _ = self.stop.send(true);
    }
}

#[cfg(test)]
mod tests {
    use mend_protocol::{Chunk, DeviceId};

    /// Live sync starts again after what may pass, and ends on a damaged database.
    #[test]
    fn live_sync_waits_out_what_may_pass_and_ends_on_damage() {
        let busy = rusqlite::Error::SqliteFailure(
            rusqlite::ffi::Error::new(rusqlite::ffi::SQLITE_BUSY),
            None,
        );
        let corrupt = rusqlite::Error::SqliteFailure(
            rusqlite::ffi::Error::new(rusqlite::ffi::SQLITE_CORRUPT),
            None,
        );
        let not_a_database = rusqlite::Error::SqliteFailure(
            rusqlite::ffi::Error::new(rusqlite::ffi::SQLITE_NOTADB),
            None,
        );
        assert!(passes(&Error::Locked("j.db".into())));
        assert!(passes(&Error::Storage(busy)));
        assert!(!passes(&Error::Storage(corrupt)));
        assert!(!passes(&Error::Storage(not_a_database)));
        assert!(!passes(&Error::Corrupt("a document".into())));
    }

    /// What the live loop may hold from the sockets at once (the queue full, and a batch it
    /// took from it) stays within a phone's means, whatever the relay streams.
    #[test]
    fn live_messages_held_at_once_are_bounded() {
        let message = crate::live::max_message(&mend_protocol::Limits::DEFAULT);
        let held = crate::live::WAITING_BYTES
            .saturating_add(BATCH_BYTES)
            .saturating_add(message);
        assert!(held <= 64 << 20, "{held} bytes");
    }

    use super::*;

    fn chunk(space: Space, relay_seq: u64, size: usize) -> Event {
        Event::Response(Response::Chunk {
            space,
            chunk: Chunk {
                relay_seq,
                device_id: DeviceId([1; 16]),
                device_seq: relay_seq,
                payload: vec![0; size],
            },
        })
    }

    /// Each event as (space, relay sequences) for chunks, or its name.
    fn shape(events: &[Event]) -> Vec<String> {
        events
            .iter()
            .map(|e| match e {
                Event::Response(Response::Chunk { space, chunk }) => {
                    format!("{space:?}:{}", chunk.relay_seq)
                }
                Event::Response(Response::Chunks { space, entries }) => {
                    let seqs: Vec<String> = entries
                        .iter()
                        .map(|e| match e {
                            Entry::Chunk(c) => c.relay_seq.to_string(),
                            Entry::Rollup(r) => format!("r{}", r.relay_seq),
                        })
                        .collect();
                    format!("{space:?}:{}", seqs.join(","))
                }
                Event::Response(Response::UpToDate { .. }) => "up-to-date".into(),
                other => format!("{other:?}"),
            })
            .collect()
    }

    fn up_to_date(space: Space, head: u64) -> Event {
        Event::Response(Response::UpToDate {
            space,
            head,
            after_mark: None,
            head_mark: None,
        })
    }

    #[test]
    fn a_rollup_joins_the_batch_in_its_place() {
        let c = Space::Couple;
        let rollup = Event::Response(Response::Rollup {
            space: c,
            rollup: mend_protocol::Rollup {
                relay_seq: 2,
                last_relay_seq: 4,
                device_id: DeviceId([2; 16]),
                first_seq: 1,
                last_seq: 3,
                payload: vec![0; 10],
            },
        });
        let events = vec![chunk(c, 1, 10), rollup, chunk(c, 5, 10), up_to_date(c, 5)];
        assert_eq!(shape(&coalesce(events)), ["Couple:1,r2,5", "up-to-date"]);
    }

    #[test]
    fn a_backlog_becomes_one_batch_and_the_marker_stays_after_it() {
        let c = Space::Couple;
        let mut events: Vec<Event> = (1..=5).map(|s| chunk(c, s, 10)).collect();
        events.push(up_to_date(c, 5));
        events.push(chunk(c, 6, 10));
        assert_eq!(
            shape(&coalesce(events)),
            ["Couple:1,2,3,4,5", "up-to-date", "Couple:6"]
        );
    }

    #[test]
    fn spaces_order_and_size_each_end_a_batch() {
        let (c, p) = (Space::Couple, Space::Personal);
        let events = vec![
            chunk(c, 1, 10),
            chunk(c, 2, 10),
            chunk(p, 1, 10),
            chunk(c, 3, 10),
            // Not after the one before it (a hostile or confused relay): a batch of its own,
            // so the engine drops it exactly as it would one by one.
            chunk(c, 2, 10),
            chunk(c, 4, BATCH_BYTES),
            chunk(c, 5, 1),
        ];
        assert_eq!(
            shape(&coalesce(events)),
            [
                "Couple:1,2",
                "Personal:1",
                "Couple:3",
                "Couple:2",
                "Couple:4",
                "Couple:5"
            ]
        );
        let many: Vec<Event> = (1..=(BATCH_CHUNKS as u64 + 1))
            .map(|s| chunk(c, s, 1))
            .collect();
        let out = coalesce(many);
        assert_eq!(out.len(), 2);
        assert!(
            matches!(&out[0], Event::Response(Response::Chunks { entries, .. }) if entries.len() == BATCH_CHUNKS)
        );
    }
}
