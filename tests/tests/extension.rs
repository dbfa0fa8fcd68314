//! An app and its extension (a widget, a share or notification extension) as two processes on
//! one journal in extension locking mode: each keeps the journal open, they take turns
//! writing and syncing, and nothing is lost, numbered twice or refused by the relay.

use std::{
    io::{BufRead, BufReader, Write},
    path::Path,
    process::{Child, ChildStdin, ChildStdout, Command, Stdio},
    sync::Arc,
};

use anyhow::{Context, Result, bail, ensure};
use mend_client::{Device, SyncObserver};
use mend_core::{
    Body, LockMode, RecordId, crypto::PairingKind, journal::OpenOptions, model::Share,
    sync::ProblemKind,
};
use mend_e2e::{Phone, ROUND, Recorder, Relay, couple, eventually, honest, opts};

/// A `mend-ext-writer` process with the journal open.
struct Writer {
    child: Child,
    stdin: ChildStdin,
    stdout: BufReader<ChildStdout>,
}

impl Writer {
    fn spawn(path: &Path, secret: &str, pin: &str) -> Result<Self> {
        let mut child = Command::new(env!("CARGO_BIN_EXE_mend-ext-writer"))
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .spawn()?;
        let mut stdin = child.stdin.take().context("no stdin")?;
        let stdout = BufReader::new(child.stdout.take().context("no stdout")?);
        writeln!(stdin, "{}", path.display())?;
        writeln!(stdin, "{secret}")?;
        writeln!(stdin, "{pin}")?;
        Ok(Self {
            child,
            stdin,
            stdout,
        })
    }

    fn send(&mut self, line: &str) -> Result<()> {
        writeln!(self.stdin, "{line}")?;
        Ok(self.stdin.flush()?)
    }

    /// The next answer (blocking: the caller is on a thread that may block).
    fn answer(&mut self) -> Result<String> {
        let mut line = String::new();
        tokio::task::block_in_place(|| self.stdout.read_line(&mut line))?;
        ensure!(!line.is_empty(), "the writer exited");
        let line = line.trim_end().to_owned();
        if line.starts_with("error") {
            bail!("the writer failed: {line}");
        }
        Ok(line)
    }

    fn add(&mut self, feeling: &str) -> Result<RecordId> {
        self.send(&format!("add {feeling}"))?;
        let answer = self.answer()?;
        let id = answer.strip_prefix("added ").context("not an id")?;
        Ok(id.parse()?)
    }

    fn synced(&mut self) -> Result<()> {
        let answer = self.answer()?;
        ensure!(
            answer == "synced pending=0 problems=0 syncing=false",
            "{answer}"
        );
        Ok(())
    }

    fn sync(&mut self) -> Result<()> {
        self.send("sync")?;
        self.synced()
    }

    fn has(&mut self, id: RecordId) -> Result<bool> {
        self.send(&format!("has {id}"))?;
        Ok(self.answer()? == "has yes")
    }

    fn quit(mut self) -> Result<()> {
        self.send("quit")?;
        let status = tokio::task::block_in_place(|| self.child.wait())?;
        ensure!(status.success(), "the writer ended with {status}");
        Ok(())
    }
}

impl Drop for Writer {
    fn drop(&mut self) {
        // A test that failed midway must not leave its process behind.
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_app_and_its_extension_write_and_sync_from_two_processes() -> Result<()> {
    let dir = tempfile::tempdir()?;
    let relay = Relay::start(dir.path()).await?;
    let (alex, blake) = couple(dir.path(), &relay).await?;
    let path = blake.path.clone();
    let secret = blake.device.keyring().to_secret_string();
    let pin = relay.pin().context("the relay serves no TLS")?.to_string();
    blake.device.close().await?;

    // Blake's app and its extension, both open for the whole test.
    let mut app = Writer::spawn(&path, &secret, &pin)?;
    let mut ext = Writer::spawn(&path, &secret, &pin)?;
    let mut ids = Vec::new();
    for n in 0..4 {
        ids.push(app.add(&format!("app {n}"))?);
        ids.push(ext.add(&format!("extension {n}"))?);
        if n == 1 {
            // The extension syncs what both wrote while the app stays open.
            ext.sync()?;
        }
        if n == 2 {
            app.sync()?;
        }
    }

    // A write waits for the other process's step rather than failing.
    app.send("hold")?;
    ensure!(app.answer()? == "holding");
    ext.send("add while the app holds the lock")?;
    app.send("release")?;
    ensure!(app.answer()? == "released");
    let answer = ext.answer()?;
    ids.push(
        answer
            .strip_prefix("added ")
            .context(answer.clone())?
            .parse()?,
    );

    // Both sync at once: their steps interleave around each other's requests.
    ids.push(app.add("last from the app")?);
    app.send("sync")?;
    ext.send("sync")?;
    app.synced()?;
    ext.synced()?;

    // The partner converges on every write of both processes.
    alex.sync().await?;
    for id in &ids {
        ensure!(alex.read(|j| j.get(*id)).is_ok(), "the partner lacks {id}");
    }
    // And what the partner writes reaches both processes through either one's sync.
    let from_alex = alex.with(|j| {
        j.add(Body::Share(Share {
            feeling: "from Alex".into(),
            tough_question: false,
        }))
    })?;
    alex.sync().await?;
    ext.sync()?;
    ensure!(app.has(from_alex)? && ext.has(from_alex)?);
    for id in &ids {
        ensure!(app.has(*id)? && ext.has(*id)?, "a process lacks {id}");
    }
    app.quit()?;
    ext.quit()?;
    relay.stop().await
}

/// Options of an app and its extension sharing one journal.
fn shared() -> OpenOptions {
    OpenOptions {
        lock: LockMode::Extension {
            wait: LockMode::EXTENSION_WAIT,
        },
        ..opts()
    }
}

/// Alex's app and its extension (two openings in this process stand in for two processes:
/// the lock is per open file), Blake's phone, all synced.
async fn app_and_extension(dir: &Path, relay: &Relay) -> Result<(Phone, Phone, Phone)> {
    let recorder = Arc::new(Recorder::default());
    let path = dir.join("a.db");
    let observer: Arc<dyn SyncObserver> = recorder.clone();
    let device = Device::create(
        &path,
        "Alex",
        &relay.url(),
        shared(),
        relay.trust(),
        Some(observer),
    )?;
    let app = Phone {
        device,
        recorder,
        path: path.clone(),
    };
    app.sync().await?;
    let blake = Phone::pair(
        dir,
        "b.db",
        &app,
        PairingKind::Partner,
        false,
        "Blake",
        relay,
    )
    .await?;
    blake.sync().await?;
    app.sync().await?;
    let recorder = Arc::new(Recorder::default());
    let observer: Arc<dyn SyncObserver> = recorder.clone();
    let device = Device::open(
        &path,
        app.device.keyring(),
        shared(),
        relay.trust(),
        Some(observer),
    )?;
    let ext = Phone {
        device,
        recorder,
        path,
    };
    Ok((app, ext, blake))
}

/// The app closed and opened again with the keyring it kept: a fresh opening, whose certificate
/// is not yet checked.
async fn opened_again(app: Phone, relay: &Relay) -> Result<Device> {
    let kept = app.device.keyring();
    app.device.close().await?;
    Ok(Device::open(
        &app.path,
        kept,
        shared(),
        relay.trust(),
        None,
    )?)
}

/// A new device's introduction travels once, in its first chunk. The extension pulled it; the
/// app then pulls that device's next chunk: before, the app's own list of devices never heard
/// of it and refused the change as forged.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_device_the_extension_admitted_is_known_to_the_app() -> Result<()> {
    let dir = tempfile::tempdir()?;
    let relay = Relay::start(dir.path()).await?;
    let (app, ext, blake) = app_and_extension(dir.path(), &relay).await?;
    let tablet = Phone::pair(
        dir.path(),
        "tablet.db",
        &blake,
        PairingKind::Device,
        false,
        "Blake",
        &relay,
    )
    .await?;
    tablet.sync().await?;
    let first = tablet.with(|j| j.add(honest("from the new tablet")))?;
    tablet.sync().await?;
    ext.sync().await?;
    let second = tablet.with(|j| j.add(honest("and again")))?;
    tablet.sync().await?;
    let status = app.sync().await?;
    ensure!(
        !status
            .problems
            .iter()
            .any(|p| matches!(p.kind, ProblemKind::Forged { .. })),
        "the app refused the tablet's change: {:?}",
        status.problems
    );
    for id in [first, second] {
        ensure!(app.read(|j| j.get(id)).is_ok(), "the app lacks {id}");
    }
    relay.stop().await
}

/// The extension follows a new epoch (Blake started the journal over); the app, open all the
/// while, writes and syncs: before, it signed for the old epoch and pushed the new epoch's
/// change to the old space under the old keys, where Blake never saw it (and a removed device
/// could still read it).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_app_follows_a_move_its_extension_made() -> Result<()> {
    let dir = tempfile::tempdir()?;
    let relay = Relay::start(dir.path()).await?;
    let (app, ext, blake) = app_and_extension(dir.path(), &relay).await?;
    let old = app.device.keyring().couple.derive_space_id();
    let report = blake.device.forget(ROUND).await?;
    ensure!(report.finished, "{report:?}");
    let moved = ext.device.sync_round(ROUND).await?;
    ensure!(
        moved.keyring_changed,
        "the extension did not move: {moved:?}"
    );

    let id = app.with(|j| j.add(honest("written by the app after the move")))?;
    let report = app.device.sync_round(ROUND).await?;
    ensure!(report.finished && report.status.pending == 0, "{report:?}");
    ensure!(
        report.keyring_changed,
        "the app was not told to store its keyring"
    );
    ensure!(
        app.recorder
            .keyrings
            .load(std::sync::atomic::Ordering::Relaxed)
            > 0
    );
    let new = app.device.keyring().couple.derive_space_id();
    ensure!(new != old && new == ext.device.keyring().couple.derive_space_id());
    blake.sync().await?;
    ensure!(
        blake.read(|j| j.get(id)).is_ok(),
        "Blake never got the app's write"
    );
    relay.stop().await
}

/// The app opens (its certificate not yet checked this opening), the extension moves the
/// journal, then the app's `ready` certifies with the keys it opened with: before, that wrote
/// the old epoch's space back into the journal, and the app's next write went to the old space
/// under the old keys.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_app_opened_before_the_move_certifies_nothing_old() -> Result<()> {
    let dir = tempfile::tempdir()?;
    let relay = Relay::start(dir.path()).await?;
    let (app, ext, blake) = app_and_extension(dir.path(), &relay).await?;
    let fresh = opened_again(app, &relay).await?;
    blake.device.forget(ROUND).await?;
    let moved = ext.device.sync_round(ROUND).await?;
    ensure!(
        moved.keyring_changed,
        "the extension did not move: {moved:?}"
    );
    fresh.ready().await?;
    let id = fresh.write(|j| j.add(honest("written after the extension moved")))?;
    let report = fresh.sync_round(ROUND).await?;
    ensure!(report.finished && report.status.pending == 0, "{report:?}");
    blake.sync().await?;
    ensure!(
        blake.read(|j| j.get(id)).is_ok(),
        "Blake never got the write"
    );
    relay.stop().await
}

/// The app syncs live only (foreground) while its extension's round follows a new epoch: the
/// app ends up live on the new spaces, with the new keys, and what it writes reaches Blake.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn live_sync_ends_up_on_the_epoch_its_extension_moved_to() -> Result<()> {
    let dir = tempfile::tempdir()?;
    let relay = Relay::start(dir.path()).await?;
    let (app, ext, blake) = app_and_extension(dir.path(), &relay).await?;
    let live = Arc::new(opened_again(app, &relay).await?);
    live.start_live_following(ROUND)?;
    eventually("live sync up", || Ok(live.is_live())).await?;
    blake.device.forget(ROUND).await?;
    // Whichever moves first (the extension's round, or the app's live sync hearing the news),
    // both end in the new epoch.
    ext.device.sync_round(ROUND).await?;
    let new = ext.device.keyring().couple.derive_space_id();
    eventually("the app on the new keys, live", || {
        Ok(live.keyring().couple.derive_space_id() == new && live.is_live())
    })
    .await?;
    let id = live.write(|j| j.add(honest("written live after the move")))?;
    let mut reached = false;
    for _ in 0..40 {
        blake.sync().await?;
        if blake.read(|j| j.get(id)).is_ok() {
            reached = true;
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
    ensure!(reached, "Blake never got the live write");
    live.stop_live().await;
    relay.stop().await
}

/// The extension holds the journal longer than a step of the app's live sync waits (a long
/// write, or a process stopped while it held the lock): the step fails `locked`. Live sync
/// is then paused, not ended: the app is shown offline, and once the journal is free it starts
/// again and brings what Blake wrote meanwhile, then what he writes after. Before, live sync
/// ended with a line in the log, the status still said online, and nothing more came.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn live_sync_outlasts_a_journal_another_process_holds() -> Result<()> {
    let dir = tempfile::tempdir()?;
    let relay = Relay::start(dir.path()).await?;
    let (app, ext, blake) = app_and_extension(dir.path(), &relay).await?;
    drop(ext);
    app.device.start_live()?;
    eventually("the app goes live", || {
        Ok(app
            .recorder
            .statuses
            .lock()
            .map(|s| s.last().is_some_and(|s| s.online))
            .unwrap_or(false))
    })
    .await?;
    let told_before = app.recorder.statuses.lock().map(|s| s.len()).unwrap_or(0);

    // Another opening of the lock file (another process, as far as the lock goes) holds it.
    let mut lock_name = app.path.clone().into_os_string();
    lock_name.push(".lock");
    let held = std::fs::OpenOptions::new().write(true).open(&lock_name)?;
    held.lock()?;
    let first = blake.with(|j| j.add(honest("while the journal was held")))?;
    blake.sync().await?;
    eventually("the app is shown offline", || {
        Ok(app
            .recorder
            .statuses
            .lock()
            .map(|s| s.iter().skip(told_before).any(|s| !s.online))
            .unwrap_or(false))
    })
    .await?;
    held.unlock()?;
    drop(held);

    eventually("the app gets what Blake wrote while it was held", || {
        Ok(app.recorder.saw(first))
    })
    .await?;
    let second = blake.with(|j| j.add(honest("once it was free")))?;
    blake.sync().await?;
    eventually("the app gets what Blake writes next, live", || {
        Ok(app.recorder.saw(second))
    })
    .await?;
    ensure!(app.device.is_live(), "live sync is not running");
    relay.stop().await
}
