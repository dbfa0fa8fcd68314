//! The drivers: one bounded round over HTTP, or a live loop over WebSockets.

use std::{
    collections::{HashMap, VecDeque},
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
        Action, Event, Failure, Mode, Request, Response, SNAPSHOT_EVERY, SpaceLink, SyncEngine,
        SyncStatus,
    },
};

use crate::{
    RelayHttp, RelayOptions,
    live::{self, Incoming, LiveSocket},
    now_ms,
};

/// How often a quiet live socket is pinged (the relay closes idle ones after 90 s).
const PING_EVERY: Duration = Duration::from_secs(30);

/// Told what changed. Called from the sync task: keep it quick and hand work to the UI thread.
pub trait SyncObserver: Send + Sync {
    /// Records in `space` changed because of what another device wrote.
    fn records_changed(&self, space: Space, records: Vec<RecordId>);
    /// The sync status changed.
    fn status_changed(&self, status: SyncStatus);
}

/// A journal's connection to its relay.
pub struct SyncClient {
    journal: Arc<Mutex<Journal>>,
    device: [u8; 16],
    links: Vec<SpaceLink>,
    http: RelayHttp,
    observer: Option<Arc<dyn SyncObserver>>,
    snapshot_every: AtomicU64,
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
        .map_err(|_| Error::Corrupt("an earlier call failed inside the journal".into()))
}

/// Runs SQLite and Automerge work on tokio's blocking pool, never on an async worker: a merge
/// can take a few hundred milliseconds, and the sockets must keep being served meanwhile.
pub(crate) async fn blocking<T: Send + 'static>(
    work: impl FnOnce() -> Result<T> + Send + 'static,
) -> Result<T> {
    tokio::task::spawn_blocking(work)
        .await
        .map_err(|e| Error::Corrupt(format!("a storage task failed: {e}")))?
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
            links,
            http: RelayHttp::new(relay_url, relay)?,
            observer,
            snapshot_every: AtomicU64::new(SNAPSHOT_EVERY),
        })
    }

    /// Uploads a snapshot after this many relay chunks (default 500).
    pub fn set_snapshot_every(&self, chunks: u64) {
        self.snapshot_every.store(chunks.max(1), Ordering::Relaxed);
    }

    fn engine(&self, mode: Mode) -> SyncEngine {
        let mut engine = SyncEngine::new(self.device, self.links.clone(), mode, seed());
        engine.set_snapshot_every(self.snapshot_every.load(Ordering::Relaxed));
        engine
    }

    fn link(&self, space: Space) -> Option<&SpaceLink> {
        self.links.iter().find(|l| l.space == space)
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
    /// batch, and returns the engine with the actions in order.
    async fn feed(
        &self,
        mut engine: SyncEngine,
        events: Vec<Event>,
    ) -> Result<(SyncEngine, Vec<Action>)> {
        let journal = Arc::clone(&self.journal);
        blocking(move || {
            let mut actions = Vec::new();
            {
                let mut journal = lock(&journal)?;
                // One step: in extension mode the file lock is held for this batch (never
                // across a request), and what another process committed is reloaded first.
                journal.step(|journal| {
                    for event in events {
                        actions.extend(engine.handle(journal, now_ms(), event)?);
                    }
                    Ok(())
                })?;
            }
            Ok((engine, actions))
        })
        .await
    }

    fn report(&self, action: &Action, last: &mut SyncStatus) {
        match action {
            Action::Changed { space, records } => {
                if let Some(o) = &self.observer {
                    o.records_changed(*space, records.clone());
                }
            }
            Action::Status(s) => {
                *last = s.clone();
                if let Some(o) = &self.observer {
                    o.status_changed(s.clone());
                }
            }
            Action::Send(_) => {}
        }
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
        let deadline = tokio::time::Instant::now() + budget;
        self.loaded().await?;
        // A refusal from an earlier round (or live sync) is not this round's.
        let _ = self.http.take_problem();
        let mut engine = self.engine(Mode::Once);
        // Retries are spaced to fit in the budget, never backed off past it.
        let budget_ms = i64::try_from(budget.as_millis()).unwrap_or(i64::MAX);
        engine.set_deadline(Some(now_ms().saturating_add(budget_ms)));
        let mut status = SyncStatus::default();
        let mut inbox = VecDeque::from([Event::Start]);
        loop {
            let mut requests = Vec::new();
            if !inbox.is_empty() {
                let (fed, actions) = self.feed(engine, inbox.drain(..).collect()).await?;
                engine = fed;
                for action in actions {
                    if let Action::Send(request) = action {
                        requests.push(request);
                    } else {
                        self.report(&action, &mut status);
                    }
                }
            }
            if !requests.is_empty() {
                // The engine's id: it changes if the relay reports a sequence conflict.
                let device = engine.device();
                let calls = requests.iter().filter_map(|r| {
                    let link = self.link(r.space())?;
                    Some(self.http.execute(link, &device, r))
                });
                inbox.extend(join_all(calls).await.into_iter().map(Event::Response));
                if let Some(problem) = self.http.take_problem() {
                    return Err(Error::UntrustedRelay(problem));
                }
                continue;
            }
            if engine.is_settled() || tokio::time::Instant::now() >= deadline {
                break;
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
        status = engine.status().clone();
        Ok(status)
    }

    /// Starts live sync on the current tokio runtime. Call [`LiveSync::local_edit`] after each
    /// edit so it is pushed at once, and [`LiveSync::stop`] when the app leaves the foreground.
    pub fn start_live(self: &Arc<Self>) -> LiveSync {
        let (stop_tx, stop_rx) = watch::channel(false);
        let edits = Arc::new(Notify::new());
        let client = Arc::clone(self);
        let notify = Arc::clone(&edits);
        let task = tokio::spawn(async move {
            if let Err(e) = client.live_loop(stop_rx, notify).await {
                tracing::error!(error = %e, "live sync stopped");
            }
        });
        LiveSync {
            stop: stop_tx,
            edits,
            task: Some(task),
        }
    }

    async fn live_loop(&self, mut stop: watch::Receiver<bool>, edits: Arc<Notify>) -> Result<()> {
        self.loaded().await?;
        let mut engine = self.engine(Mode::Live);
        let (tx, mut rx) = mpsc::channel::<Incoming>(1024);
        let (http_tx, mut http_rx) = mpsc::channel::<Response>(64);
        let mut sockets: HashMap<Space, LiveSocket> = HashMap::new();
        let mut generation = 0u64;
        let mut status = SyncStatus::default();
        let mut inbox = VecDeque::from([Event::Start]);
        let mut ping = tokio::time::interval(PING_EVERY);
        loop {
            while !inbox.is_empty() {
                let (fed, actions) = self.feed(engine, inbox.drain(..).collect()).await?;
                engine = fed;
                let device = engine.device();
                for action in actions {
                    let Action::Send(request) = action else {
                        self.report(&action, &mut status);
                        continue;
                    };
                    let space = request.space();
                    let Some(link) = self.link(space).cloned() else {
                        continue;
                    };
                    match request {
                        Request::Subscribe { after, .. } => {
                            if let Some(old) = sockets.remove(&space) {
                                old.close().await;
                            }
                            generation += 1;
                            match live::connect(
                                &self.http,
                                &link,
                                &device,
                                after,
                                generation,
                                tx.clone(),
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
                            tokio::spawn(async move {
                                let response = http.execute(&link, &device, &other).await;
                                let _ = reply.send(response).await;
                            });
                        }
                    }
                }
            }
            let wake = engine.next_wake().map(|w| {
                tokio::time::Instant::now()
                    + Duration::from_millis(u64::try_from(w.saturating_sub(now_ms())).unwrap_or(0))
            });
            tokio::select! {
                Some(incoming) = rx.recv() => {
                    let current = sockets.get(&incoming.space).map(|s| s.generation);
                    if current == Some(incoming.generation) {
                        if matches!(incoming.response, Response::Failed { .. }) {
                            sockets.remove(&incoming.space);
                        }
                        inbox.push_back(Event::Response(incoming.response));
                    }
                }
                Some(response) = http_rx.recv() => inbox.push_back(Event::Response(response)),
                _ = edits.notified() => inbox.push_back(Event::LocalEdit),
                _ = sleep_until_opt(wake) => inbox.push_back(Event::Tick),
                _ = ping.tick() => {
                    for socket in sockets.values_mut() {
                        let _ = socket.ping().await;
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

async fn sleep_until_opt(at: Option<tokio::time::Instant>) {
    match at {
        Some(at) => tokio::time::sleep_until(at).await,
        None => std::future::pending().await,
    }
}

/// A running live sync.
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

    /// Whether the live task has ended (stopped, or failed and logged).
    pub fn is_finished(&self) -> bool {
        self.task.as_ref().is_none_or(JoinHandle::is_finished)
    }

    /// Stops live sync and waits for the sockets to close.
    pub async fn stop(mut self) {
        let _ = self.stop.send(true);
        if let Some(task) = self.task.take() {
            let _ = task.await;
        }
    }
}

impl Drop for LiveSync {
    fn drop(&mut self) {
        let _ = self.stop.send(true);
    }
}
