//! Talking to the relay: `sync` (one bounded round), `watch` (live until stopped) and `status`.
//!
//! mend-core's `sync_now` retries an unreachable relay with backoff until its budget runs out,
//! which suits a phone's background slot. A person at a terminal wants to know sooner, so a
//! round that has not heard from the relay after [`CONNECT_GRACE`] stops there and says so;
//! nothing is lost, because every edit waits in the journal until the relay acknowledges it.

use std::{
    collections::BTreeSet,
    sync::{
        Arc, Mutex,
        atomic::{AtomicBool, Ordering},
    },
    time::Duration,
};

use anyhow::Result;
use mend_client::{Device, SyncObserver};
use mend_core::{
    Journal, RecordId, Space, SyncSummary,
    sync::{Outcome, Problem, ProblemKind, SyncStatus},
};
use serde_json::json;
use tokio::sync::mpsc;

use crate::{
    choice::kebab,
    dates,
    failure::{Exit, Failure},
    home::Home,
    lookup::short,
    render::Context,
    say, tell,
    term::{ProgressLine, plural},
};

/// How long a round waits for a first answer from the relay before calling it unreachable.
const CONNECT_GRACE: Duration = Duration::from_secs(5);

/// Follows one round: what arrived, whether the relay answered, and a progress line.
#[derive(Debug)]
pub(super) struct Tracker {
    online: AtomicBool,
    received: Mutex<BTreeSet<RecordId>>,
    progress: ProgressLine,
}

impl Tracker {
    pub(super) fn new() -> Arc<Self> {
        Arc::new(Self {
            online: AtomicBool::new(false),
            received: Mutex::new(BTreeSet::new()),
            progress: ProgressLine::new(),
        })
    }

    fn received(&self) -> usize {
        self.received.lock().map(|r| r.len()).unwrap_or(0)
    }
}

impl SyncObserver for Tracker {
    fn records_changed(&self, _space: Space, records: Vec<RecordId>) {
        let count = match self.received.lock() {
            Ok(mut r) => {
                r.extend(records);
                r.len()
            }
            Err(_) => return,
        };
        self.progress
            .show(&format!("Syncing… {count} records received"));
    }

    fn status_changed(&self, status: SyncStatus) {
        if status.online {
            self.online.store(true, Ordering::Relaxed);
        }
        if status.syncing {
            self.progress.show(&format!(
                "Syncing… {} records received, {} changes to send",
                self.received(),
                status.pending
            ));
        }
    }
}

/// What a finished round did.
pub(super) struct Round {
    /// The status at its end.
    pub(super) status: SyncStatus,
    /// Records that changed because of what arrived.
    pub(super) received: usize,
    /// The worst problem still open (this round's, or an earlier one not healed yet), as the
    /// failure to end with once the round's own output is printed.
    pub(super) problem: Option<Failure>,
}

/// This round's problems, then those still open from earlier rounds (one of each kind).
fn open_problems(device: &Device, status: &SyncStatus) -> Result<Vec<Problem>> {
    let mut all = status.problems.clone();
    for p in device.read(|j| j.sync_summary())?.problems {
        if !all.iter().any(|q| q.kind == p.kind) {
            all.push(p);
        }
    }
    Ok(all)
}

/// The failure that stands for `problems`: the worst outcome's exit code, the newest of its
/// kind in words.
fn worst(problems: &[Problem]) -> Option<Failure> {
    // A relay error the round got past (it finished) does not fail it.
    let outcome = problems
        .iter()
        .map(|p| p.kind.outcome())
        .filter(|o| *o != Outcome::RelayError)
        .min()?;
    let newest = problems
        .iter()
        .rev()
        .find(|p| p.kind.outcome() == outcome)?;
    Some(Failure::new(Exit::of(outcome), describe(&newest.kind)))
}

/// One bounded round; an unreachable relay or an unfinished round is a [`Failure`].
pub(super) async fn round(device: &Device, tracker: &Tracker, budget: Duration) -> Result<Round> {
    let relay = device.keyring().relay_url.clone();
    let sync = device.sync_now(budget);
    tokio::pin!(sync);
    let status = tokio::select! {
        r = &mut sync => r?,
        () = tokio::time::sleep(CONNECT_GRACE.min(budget)) => {
            if !tracker.online.load(Ordering::Relaxed) {
                tracker.progress.clear();
                return Err(Failure::unreachable(&relay).into());
            }
            sync.await?
        }
    };
    tracker.progress.clear();
    let problems = open_problems(device, &status)?;
    // An erased journal is said first, in plain words: it is not the relay failing.
    let fatal = problems
        .iter()
        .find(|p| matches!(p.kind, ProblemKind::Erased { .. }))
        .or_else(|| problems.iter().find(|p| p.kind.is_fatal()));
    if let Some(problem) = fatal {
        if let ProblemKind::Erased { .. } = problem.kind {
            // The journal's own account: it knows the most of who erased it.
            let words = device.read(|j| j.erasure())?.map(|e| e.words());
            let words = words.unwrap_or_else(|| describe(&problem.kind));
            return Err(Failure::new(Exit::Erased, words).into());
        }
        return Err(Failure::new(Exit::Relay, describe(&problem.kind)).into());
    }
    let failing = status.problems.iter().rev().find(|p| {
        matches!(
            p.kind,
            ProblemKind::RelayError { .. }
                | ProblemKind::Refused { .. }
                | ProblemKind::RelayLoop { .. }
        )
    });
    if status.syncing || (!status.online && status.last_synced.is_none()) {
        // The relay answering with errors is not the relay out of reach.
        if let Some(p) = failing {
            return Err(Failure::new(
                Exit::Relay,
                format!(
                    "{}; your edits are kept and will sync later",
                    describe(&p.kind)
                ),
            )
            .into());
        }
        if !status.online && status.last_synced.is_none() {
            return Err(Failure::unreachable(&relay).into());
        }
        return Err(Failure::new(
            Exit::Unreachable,
            format!(
                "the sync did not finish in {} s; what arrived is kept, run `mend sync` again",
                budget.as_secs()
            ),
        )
        .into());
    }
    for p in &problems {
        tell!("mend: warning: {}", describe(&p.kind));
    }
    let received = tracker.received();
    Ok(Round {
        status,
        received,
        problem: worst(&problems),
    })
}

/// A sync problem in words.
fn describe(kind: &ProblemKind) -> String {
    match kind {
        ProblemKind::Forged { words, .. } => words.clone(),
        ProblemKind::Tampered { relay_seq, .. } => {
            format!("a change (relay #{relay_seq}) failed its integrity check and was not applied")
        }
        ProblemKind::Gap { expected, got, .. } => {
            format!("the relay skipped changes from a device (expected #{expected}, got #{got})")
        }
        ProblemKind::Replay { device_seq, .. } => {
            format!("the relay sent a device's change #{device_seq} twice; the copy was ignored")
        }
        ProblemKind::Unmergeable {
            device_seq,
            relay_seq,
            ..
        } => format!(
            "a device's change #{device_seq} (relay #{relay_seq}) could not be merged and was \
             set aside until a snapshot heals it"
        ),
        ProblemKind::RelayRewound { cursor, head } => format!(
            "the relay went back to an earlier state (at #{head}, this device had read to \
             #{cursor}); this device sent its whole journal again"
        ),
        ProblemKind::Unhealed { up_to } => format!(
            "changes the relay served up to #{up_to} were refused and its snapshot did not \
             heal them; they are left out and snapshots go on"
        ),
        ProblemKind::RelayLoop { answer } => {
            format!("the relay kept answering `{answer}`; this device waits before asking again")
        }
        ProblemKind::BadSnapshot { covers: 0 } => {
            "the relay had no snapshot where it needed one; what it still holds was read".to_owned()
        }
        ProblemKind::BadSnapshot { covers } => {
            format!("the relay's snapshot (up to #{covers}) failed its checks and was not applied")
        }
        ProblemKind::SeqConflict { device_seq } => format!(
            "the relay already held another change #{device_seq} from this device (its \
             database went back in time); it now syncs under a new device id"
        ),
        ProblemKind::RelayError { status } => {
            format!("the relay answered with an error (HTTP {status})")
        }
        ProblemKind::Unauthorized => "the relay refused this device's key".to_owned(),
        ProblemKind::SpaceGone => "the relay no longer holds this journal's space: it says it \
                                   was erased, but no erase marker of a partner's reached this \
                                   device, so nothing here is taken as erased (the relay may \
                                   have lost it); edits are kept"
            .to_owned(),
        ProblemKind::Retired => "this journal moved to new secrets without this device (it was \
                                 removed, or away too long): pair it again"
            .to_owned(),
        ProblemKind::Erased { words } => words.clone(),
        ProblemKind::Refused { code } if code == "relay_full" => {
            "the relay is full (its operator's storage limit is reached)".to_owned()
        }
        ProblemKind::Refused { code } if code == "quota_exceeded" => {
            "this journal reached its storage quota on the relay".to_owned()
        }
        ProblemKind::Refused { code } => format!("the relay refused a request ({code})"),
    }
}

fn pending(device: &Device) -> Result<u64> {
    Ok(device.read(|j| j.sync_summary())?.pending)
}

/// `sync`.
pub async fn sync(home: &Home, timeout: u64) -> Result<()> {
    let tracker = Tracker::new();
    let observer: Arc<dyn SyncObserver> = tracker.clone();
    let device = home.open(Some(observer))?;
    let before = pending(&device)?;
    let done = round(&device, &tracker, Duration::from_secs(timeout.max(1))).await;
    // A round may have moved the journal to a new epoch, whatever else it did.
    home.keep_keyring(&device)?;
    let mut done = done?;
    let sent = before.saturating_sub(done.status.pending);
    let waiting = match done.status.pending {
        0 => "nothing waiting".to_owned(),
        n => format!("{n} still waiting"),
    };
    say!(
        "Synced with {}: {} changed here, {} sent, {waiting}.",
        device.keyring().relay_url,
        plural(done.received, "record"),
        plural(usize::try_from(sent).unwrap_or(usize::MAX), "change"),
    );
    super::pairing::rejoin_notice(&device, &device.rejoin_asks()?)?;
    match done.problem.take() {
        Some(problem) => Err(problem.into()),
        None => Ok(()),
    }
}

/// What the live observer hands to the printing loop.
enum Seen {
    Changed(Vec<RecordId>),
    Status(SyncStatus),
    /// The journal moved to a new epoch: the keyring to keep changed.
    Keyring,
}

struct Forward(mpsc::UnboundedSender<Seen>);

impl SyncObserver for Forward {
    fn records_changed(&self, _space: Space, records: Vec<RecordId>) {
        let _ = self.0.send(Seen::Changed(records));
    }

    fn status_changed(&self, status: SyncStatus) {
        let _ = self.0.send(Seen::Status(status));
    }

    fn keyring_changed(&self) {
        let _ = self.0.send(Seen::Keyring);
    }
}

/// The most a round that follows a new epoch during `watch` takes.
const FOLLOW_BUDGET: Duration = Duration::from_secs(20);

/// `watch`: live sync, printing each change that arrives until Ctrl-C or `--for` seconds.
pub async fn watch(home: &Home, duration: Option<u64>) -> Result<()> {
    let (tx, mut rx) = mpsc::unbounded_channel();
    let observer: Arc<dyn SyncObserver> = Arc::new(Forward(tx));
    let device = Arc::new(home.open(Some(observer))?);
    let relay = device.keyring().relay_url.clone();
    device.start_live_following(FOLLOW_BUDGET)?;
    let until = duration.map(|s| tokio::time::Instant::now() + Duration::from_secs(s));
    let grace = tokio::time::sleep(CONNECT_GRACE);
    tokio::pin!(grace);
    let mut online = false;
    let mut warned = false;
    let mut problems = 0;
    tell!("Watching {relay} for changes (Ctrl-C to stop).");
    loop {
        tokio::select! {
            seen = rx.recv() => match seen {
                Some(Seen::Changed(ids)) => print_changes(&device, &ids)?,
                Some(Seen::Keyring) => {
                    home.save_keyring(&device.keyring())?;
                    tell!("The journal moved to new keys; watching them now.");
                }
                Some(Seen::Status(status)) => {
                    if status.online != online {
                        online = status.online;
                        if online {
                            tell!("Connected to the relay.");
                        } else {
                            tell!("Lost the relay; retrying.");
                        }
                    }
                    for p in status.problems.iter().skip(problems) {
                        tell!("mend: warning: {}", describe(&p.kind));
                    }
                    problems = status.problems.len();
                }
                None => break,
            },
            () = &mut grace, if !warned => {
                warned = true;
                if !online {
                    tell!("mend: cannot reach the relay at {relay} yet; still trying.");
                }
            }
            _ = tokio::signal::ctrl_c() => break,
            () = sleep_until(until) => break,
        }
    }
    device.stop_live().await;
    Ok(())
}

async fn sleep_until(at: Option<tokio::time::Instant>) {
    match at {
        Some(at) => tokio::time::sleep_until(at).await,
        None => std::future::pending().await,
    }
}

fn print_changes(device: &Device, ids: &[RecordId]) -> Result<()> {
    device.read(|journal| Ok(print_records(journal, ids)))?
}

fn print_records(journal: &Journal, ids: &[RecordId]) -> Result<()> {
    let context = Context::of(journal)?;
    for id in ids {
        let Ok(record) = journal.get(*id) else {
            continue;
        };
        let what = if record.removed {
            "removed"
        } else if record.updated_at == record.created_at {
            "added"
        } else {
            "changed"
        };
        say!(
            "{}  {} {} ({}'s) {what}: {}",
            dates::instant(record.updated_at),
            kebab(record.kind()),
            short(record.id),
            context.names.get(record.author),
            context.summary(&record)
        );
    }
    Ok(())
}

/// `status`: what this device knows without the network; `--check` also tries a round.
pub async fn status(home: &Home, check: bool, timeout: u64, json: bool) -> Result<()> {
    let tracker = Tracker::new();
    let observer: Arc<dyn SyncObserver> = tracker.clone();
    let device = home.open(Some(observer))?;
    let reach = if check {
        let reach = round(&device, &tracker, Duration::from_secs(timeout.max(1))).await;
        home.keep_keyring(&device)?;
        Some(reach)
    } else {
        None
    };
    let (summary, me, partners, to_settle) = device.read(|j| {
        let to_settle = j
            .records()?
            .iter()
            .filter(|r| !r.conflicts.is_empty())
            .count();
        Ok((j.sync_summary()?, j.me(), j.partners(), to_settle))
    })?;
    let erased = device.read(|j| j.erasure())?.map(|e| e.words());
    let SyncSummary {
        pending: waiting,
        healing,
        last_synced,
        problems: open,
    } = summary;
    let relay = device.keyring().relay_url;
    let online = reach.as_ref().map(Result::is_ok);
    // Problems stay here until a clean round or a healing snapshot ends them.
    let mut problems: Vec<String> = open
        .iter()
        .filter(|p| erased.is_none() || !matches!(p.kind, ProblemKind::Erased { .. }))
        .map(|p| describe(&p.kind))
        .collect();
    if healing {
        problems
            .push("a change from the relay was refused and waits for a snapshot to heal".into());
    }
    if json {
        let out = json!({
            "relay": relay,
            "partners": partners.iter().map(|p| json!({"id": p.id, "name": p.name, "me": p.id == me})).collect::<Vec<_>>(),
            "pending": waiting,
            "last_synced": last_synced,
            "online": online,
            "problems": problems,
            "conflicts_to_settle": to_settle,
            "erased": erased,
        });
        crate::term::say_json(&out)?;
    } else {
        let names: Vec<String> = partners
            .iter()
            .map(|p| {
                if p.id == me {
                    format!("{} (you)", p.name)
                } else {
                    p.name.clone()
                }
            })
            .collect();
        let reachable = match online {
            // Erased is not unreachable: the relay answered that the journal is gone.
            _ if erased.is_some() => "",
            Some(true) => " (online)",
            Some(false) => " (unreachable)",
            None => "",
        };
        say!("Relay:        {relay}{reachable}");
        if let Some(words) = &erased {
            say!("Erased:       {words}");
        }
        say!("Partners:     {}", names.join(", "));
        let waiting = plural(usize::try_from(waiting).unwrap_or(usize::MAX), "change");
        say!("Pending:      {waiting} not yet sent");
        say!(
            "Last synced:  {}",
            last_synced.map_or("never".to_owned(), |t| format!("{} UTC", dates::instant(t)))
        );
        if to_settle > 0 {
            say!(
                "To settle:    {} with values from two devices (`mend list` marks them)",
                plural(to_settle, "record")
            );
        }
        for p in &problems {
            say!("Problem:      {p}");
        }
    }
    match reach {
        Some(Err(e)) => Err(e),
        Some(Ok(Round {
            problem: Some(problem),
            ..
        })) => Err(problem.into()),
        _ => Ok(()),
    }
}
