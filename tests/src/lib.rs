//! Harness for end-to-end tests: a real mend-relay on 127.0.0.1:0 in this process, serving TLS
//! with a CA made at test time, and devices that trust it and sync with it through the real
//! transport.

use std::{
    net::SocketAddr,
    path::{Path, PathBuf},
    sync::{Arc, Mutex},
    time::Duration,
};

use anyhow::{Context, Result};
use mend_client::{Device, Keyring, RelayOptions, SyncObserver};
use mend_core::{
    Journal, RecordId, Space,
    crypto::{PairingKind, RelayPin},
    journal::OpenOptions,
    store::Durability,
    sync::SyncStatus,
};
pub use mend_relay::Config as RelayConfig;
use mend_relay::{
    AppState, Config,
    tls::{Tls, TlsFiles},
};
use tokio::{sync::oneshot, task::JoinHandle};

/// Longest a sync round may take in a test before it counts as stuck.
pub const ROUND: Duration = Duration::from_secs(20);

/// A relay serving on loopback until dropped: HTTPS and WSS with a certificate signed by a CA
/// made at test time, or, for the one test of the plain loopback path and the benchmark beside
/// it, clear text.
#[derive(Debug)]
pub struct Relay {
    pub addr: SocketAddr,
    pub data_dir: PathBuf,
    trust: Option<Trust>,
    state: AppState,
    stop: Option<oneshot::Sender<()>>,
    task: Option<JoinHandle<()>>,
}

/// What a device is given to trust a TLS relay.
#[derive(Clone, Debug)]
struct Trust {
    ca: Vec<u8>,
    pin: RelayPin,
}

impl Relay {
    /// Starts a TLS relay with default limits on a fresh data directory inside `dir`.
    pub async fn start(dir: &Path) -> Result<Self> {
        Self::start_at(&dir.join("relay-data")).await
    }

    /// Starts a clear-text relay on a fresh data directory inside `dir` (loopback needs no
    /// opt-in on the device).
    pub async fn start_plain(dir: &Path) -> Result<Self> {
        let addr = SocketAddr::from(([127, 0, 0, 1], 0));
        Self::serve(&dir.join("relay-data"), addr, false, |_| {}).await
    }

    /// Starts a TLS relay on a fresh data directory inside `dir` with its configuration
    /// adjusted (lower limits, for example).
    pub async fn start_with(dir: &Path, adjust: impl FnOnce(&mut Config)) -> Result<Self> {
        let addr = SocketAddr::from(([127, 0, 0, 1], 0));
        Self::serve(&dir.join("relay-data"), addr, true, adjust).await
    }

    /// Starts a TLS relay on an existing data directory (a restart) on any free port.
    pub async fn start_at(data_dir: &Path) -> Result<Self> {
        Self::start_on(data_dir, SocketAddr::from(([127, 0, 0, 1], 0))).await
    }

    /// Starts a TLS relay on `data_dir` listening on `addr`. A restart on the same data
    /// directory keeps its certificate, as a real relay's files would.
    pub async fn start_on(data_dir: &Path, addr: SocketAddr) -> Result<Self> {
        Self::serve(data_dir, addr, true, |_| {}).await
    }

    async fn serve(
        data_dir: &Path,
        addr: SocketAddr,
        tls: bool,
        adjust: impl FnOnce(&mut Config),
    ) -> Result<Self> {
        let mut config = Config::new(data_dir);
        config.listen = addr;
        adjust(&mut config);
        let tls = if tls {
            Some(certificate(data_dir)?)
        } else {
            None
        };
        let state = AppState::open_sqlite(config).context("open relay storage")?;
        let listener = tokio::net::TcpListener::bind(addr).await?;
        let addr = listener.local_addr()?;
        let (stop, stopped) = oneshot::channel::<()>();
        let trust = tls.as_ref().map(|(_, trust)| trust.clone());
        let kept = state.clone();
        let task = tokio::spawn(async move {
            let shutdown = async {
                let _ = stopped.await;
            };
            let _ = match tls {
                Some((tls, _)) => mend_relay::run_tls(listener, state, tls, shutdown).await,
                None => mend_relay::run(listener, state, shutdown).await,
            };
        });
        Ok(Self {
            addr,
            data_dir: data_dir.to_owned(),
            trust,
            state: kept,
            stop: Some(stop),
            task: Some(task),
        })
    }

    /// The relay's URL: `https://127.0.0.1:…`, or `http://` for a clear-text relay.
    pub fn url(&self) -> String {
        let scheme = if self.trust.is_some() {
            "https"
        } else {
            "http"
        };
        format!("{scheme}://{}", self.addr)
    }

    /// How a device trusts this relay: the test CA among its roots (nothing for clear text).
    pub fn trust(&self) -> RelayOptions {
        RelayOptions {
            extra_roots: self.trust.iter().map(|t| t.ca.clone()).collect(),
            ..RelayOptions::default()
        }
    }

    /// The pin of this relay's key, for what is given a pin (the CLI's `--relay-pin`).
    pub fn pin(&self) -> Option<RelayPin> {
        self.trust.as_ref().map(|t| t.pin)
    }

    /// Chunks and their payload bytes the relay has sent to devices (pages, live, snapshots).
    pub fn sent(&self) -> (u64, u64) {
        let m = self.state.metrics();
        (
            m.chunks_sent.load(std::sync::atomic::Ordering::Relaxed),
            m.chunk_bytes_sent
                .load(std::sync::atomic::Ordering::Relaxed),
        )
    }

    /// Rollups stored, and rollup payload bytes sent to devices.
    pub fn rollups(&self) -> (u64, u64) {
        let m = self.state.metrics();
        (
            m.rollups_stored.load(std::sync::atomic::Ordering::Relaxed),
            m.rollup_bytes_sent
                .load(std::sync::atomic::Ordering::Relaxed),
        )
    }

    /// Stops the relay and waits for it.
    pub async fn stop(mut self) -> Result<()> {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        if let Some(task) = self.task.take() {
            tokio::time::timeout(Duration::from_secs(15), task)
                .await
                .context("relay did not stop")??;
        }
        Ok(())
    }
}

/// The relay's certificate for `data_dir`, kept beside it (`<data_dir>-tls/`, outside the
/// relay's storage): made by a new test CA the first time, read back on a restart.
fn certificate(data_dir: &Path) -> Result<(Tls, Trust)> {
    let mut dir = data_dir.as_os_str().to_owned();
    dir.push("-tls");
    let dir = PathBuf::from(dir);
    let ca_file = dir.join("ca.der");
    if !ca_file.exists() {
        std::fs::create_dir_all(&dir)?;
        let ca = mend_testkit::Ca::new("Mend e2e test CA")?;
        ca.leaf()?.write(&dir)?;
        std::fs::write(&ca_file, ca.der())?;
    }
    let files = TlsFiles {
        cert: dir.join("relay.crt"),
        key: dir.join("relay.key"),
    };
    let tls = Tls::load(&files)?;
    let pin = RelayPin::parse(&tls.pin())?;
    let ca = std::fs::read(&ca_file)?;
    Ok((tls, Trust { ca, pin }))
}

/// Collects what the observer is told.
#[derive(Debug, Default)]
pub struct Recorder {
    pub changed: Mutex<Vec<RecordId>>,
    /// How many times the observer was told of changes (once per merge that changed records).
    pub notices: std::sync::atomic::AtomicUsize,
    pub statuses: Mutex<Vec<SyncStatus>>,
    /// How many times the observer was asked to store the keyring again.
    pub keyrings: std::sync::atomic::AtomicUsize,
}

impl SyncObserver for Recorder {
    fn records_changed(&self, _space: Space, records: Vec<RecordId>) {
        self.notices
            .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        if let Ok(mut c) = self.changed.lock() {
            c.extend(records);
        }
    }

    fn status_changed(&self, status: SyncStatus) {
        if let Ok(mut s) = self.statuses.lock() {
            s.push(status);
        }
    }

    fn keyring_changed(&self) {
        self.keyrings
            .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    }
}

impl Recorder {
    pub fn saw(&self, id: RecordId) -> bool {
        self.changed
            .lock()
            .map(|c| c.contains(&id))
            .unwrap_or(false)
    }
}

/// Options tests use: normal durability keeps them fast; crash safety is tested elsewhere.
pub fn opts() -> OpenOptions {
    OpenOptions {
        durability: Durability::Normal,
        ..OpenOptions::default()
    }
}

/// A device with its recorder.
#[derive(Debug)]
pub struct Phone {
    pub device: Device,
    pub recorder: Arc<Recorder>,
    pub path: PathBuf,
}

impl Phone {
    /// Creates a journal on `relay`, trusting it as [`Relay::trust`] says.
    pub fn create(dir: &Path, file: &str, name: &str, relay: &Relay) -> Result<Self> {
        let recorder = Arc::new(Recorder::default());
        let path = dir.join(file);
        let observer: Arc<dyn SyncObserver> = recorder.clone();
        let device = Device::create(
            &path,
            name,
            &relay.url(),
            opts(),
            relay.trust(),
            Some(observer),
        )?;
        Ok(Self {
            device,
            recorder,
            path,
        })
    }

    /// Joins with `invite`, trusting `relay` (whose URL the invite carries).
    pub fn join(dir: &Path, file: &str, invite: &str, name: &str, relay: &Relay) -> Result<Self> {
        let recorder = Arc::new(Recorder::default());
        let path = dir.join(file);
        let observer: Arc<dyn SyncObserver> = recorder.clone();
        let device = Device::join(&path, invite, name, opts(), relay.trust(), Some(observer))?;
        Ok(Self {
            device,
            recorder,
            path,
        })
    }

    /// Joins with a pairing `code` (an invite, or a short code on `relay`) as `name`; the
    /// journal's own error when the pairing stops.
    pub async fn join_code(
        dir: &Path,
        file: &str,
        code: &str,
        name: &str,
        relay: &Relay,
    ) -> mend_core::Result<Self> {
        let recorder = Arc::new(Recorder::default());
        let path = dir.join(file);
        let observer: Arc<dyn SyncObserver> = recorder.clone();
        let (device, _) = Device::join_with_code(
            &path,
            code,
            name,
            Some(&relay.url()),
            opts(),
            relay.trust(),
            Some(observer),
            ROUND,
        )
        .await?;
        Ok(Self {
            device,
            recorder,
            path,
        })
    }

    /// Pairs a new device at `file` with `host`, as the host's user accepting whoever joins:
    /// the other partner named `name`, or (for [`PairingKind::Device`]) another of the host
    /// partner's devices; by invite, or by short code when `short`.
    pub async fn pair(
        dir: &Path,
        file: &str,
        host: &Phone,
        kind: PairingKind,
        short: bool,
        name: &str,
        relay: &Relay,
    ) -> Result<Self> {
        let mut invitation = host.device.invite(kind, short).await?;
        let code = invitation.code().to_owned();
        let hosting = async move {
            let joiner = invitation.wait_for_joiner(ROUND).await?;
            anyhow::ensure!(joiner.is_some(), "nobody joined");
            host.device.welcome(invitation, ROUND).await?;
            anyhow::Ok(())
        };
        let (hosted, joined) =
            tokio::join!(hosting, Phone::join_code(dir, file, &code, name, relay));
        hosted?;
        Ok(joined?)
    }

    pub fn reopen(path: &Path, keyring: Keyring, relay: &Relay) -> Result<Self> {
        let recorder = Arc::new(Recorder::default());
        let observer: Arc<dyn SyncObserver> = recorder.clone();
        let device = Device::open(path, keyring, opts(), relay.trust(), Some(observer))?;
        Ok(Self {
            device,
            recorder,
            path: path.to_owned(),
        })
    }

    /// The same device, closed and opened again to reach the relay at `url` (a proxy in
    /// front of `relay`).
    pub async fn through(self, url: &str, relay: &Relay) -> Result<Self> {
        let mut keyring = self.device.keyring();
        keyring.relay_url = url.to_owned();
        self.device.close().await?;
        Self::reopen(&self.path, keyring, relay)
    }

    /// Runs a write (or any call) on the journal through the device, as an app does.
    pub fn with<T>(&self, f: impl FnOnce(&mut Journal) -> mend_core::Result<T>) -> Result<T> {
        Ok(self.device.write(f)?)
    }

    /// Runs reads on the device's read-only connection, as an app does.
    pub fn read<T>(&self, f: impl FnOnce(&Journal) -> mend_core::Result<T>) -> Result<T> {
        Ok(self.device.read(f)?)
    }

    /// One sync round that must finish.
    pub async fn sync(&self) -> Result<SyncStatus> {
        let status = self.device.sync_now(ROUND).await?;
        anyhow::ensure!(!status.syncing, "the round did not finish: {status:?}");
        Ok(status)
    }
}

/// A couple on `relay`: Alex creates the journal, Blake joins with Alex's invite, and both have
/// synced, so each holds the other's registration.
pub async fn couple(dir: &Path, relay: &Relay) -> Result<(Phone, Phone)> {
    let a = Phone::create(dir, "a.db", "Alex", relay)?;
    a.sync().await?;
    let b = Phone::pair(dir, "b.db", &a, PairingKind::Partner, false, "Blake", relay).await?;
    b.sync().await?;
    a.sync().await?;
    Ok((a, b))
}

/// Every file under `dir`, in its subdirectories too (to search what a relay or a phone left
/// on disk).
pub fn files_under(dir: &Path, out: &mut Vec<PathBuf>) -> std::io::Result<()> {
    for entry in std::fs::read_dir(dir)? {
        let path = entry?.path();
        if path.is_dir() {
            files_under(&path, out)?;
        } else {
            out.push(path);
        }
    }
    Ok(())
}

/// An honesty moment saying `text`: the entry the epoch and rejoin stories write.
pub fn honest(text: &str) -> mend_core::Body {
    mend_core::Body::HonestyMoment(mend_core::model::HonestyMoment {
        text: text.into(),
        ..Default::default()
    })
}

/// The words of every honesty moment `device` reads (removed ones left out), sorted.
pub fn honest_texts(device: &Device) -> Result<Vec<String>> {
    let mut out: Vec<String> = device
        .read(|j| j.records())?
        .into_iter()
        .filter(|r| !r.removed)
        .filter_map(|r| match r.body {
            mend_core::Body::HonestyMoment(h) => Some(h.text),
            _ => None,
        })
        .collect();
    out.sort();
    Ok(out)
}

/// Waits, a bounded number of short steps (30 s in all), for `done` to hold.
pub async fn eventually(what: &str, mut done: impl FnMut() -> Result<bool>) -> Result<()> {
    for _ in 0..300 {
        if done()? {
            return Ok(());
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    anyhow::bail!("{what}: not within 30 s")
}

/// A two-worker runtime standing in for an app's own executor.
pub fn runtime() -> Result<tokio::runtime::Runtime> {
    Ok(tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()?)
}

/// A TCP proxy on loopback in front of a clear-text relay: it forwards both ways until the
/// device sends bytes holding `stall` (a method and path, say), then forwards nothing more on
/// that connection, in either direction, and holds it open: a relay that takes a request and
/// never answers it. [`StallingProxy::dropping`] cuts such a connection instead.
#[derive(Debug)]
pub struct StallingProxy {
    pub addr: SocketAddr,
    task: JoinHandle<()>,
}

impl StallingProxy {
    /// Listens on 127.0.0.1 and forwards to `relay`, holding what matches `stall`.
    pub async fn start(relay: SocketAddr, stall: &'static [u8]) -> Result<Self> {
        Self::listen(relay, stall, true).await
    }

    /// Listens on 127.0.0.1 and forwards to `relay`, cutting the connection of a request
    /// that matches `stall` before it reaches the relay.
    pub async fn dropping(relay: SocketAddr, stall: &'static [u8]) -> Result<Self> {
        Self::listen(relay, stall, false).await
    }

    async fn listen(relay: SocketAddr, stall: &'static [u8], hold: bool) -> Result<Self> {
        let listener = tokio::net::TcpListener::bind(("127.0.0.1", 0)).await?;
        let addr = listener.local_addr()?;
        let task = tokio::spawn(async move {
            while let Ok((client, _)) = listener.accept().await {
                tokio::spawn(Self::forward(client, relay, stall, hold));
            }
        });
        Ok(Self { addr, task })
    }

    /// The URL devices use to reach the relay through the proxy.
    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    async fn forward(
        client: tokio::net::TcpStream,
        relay: SocketAddr,
        stall: &'static [u8],
        hold: bool,
    ) {
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        let Ok(upstream) = tokio::net::TcpStream::connect(relay).await else {
            return;
        };
        let (mut client_read, mut client_write) = client.into_split();
        let (mut relay_read, mut relay_write) = upstream.into_split();
        let (stalled_tx, mut stalled_rx) = tokio::sync::watch::channel(false);
        let down = tokio::spawn(async move {
            let mut buf = vec![0u8; 16 * 1024];
            loop {
                tokio::select! {
                    read = relay_read.read(&mut buf) => match read {
                        Ok(n) if n > 0 => {
                            if client_write.write_all(&buf[..n]).await.is_err() {
                                return;
                            }
                        }
                        _ => return,
                    },
                    _ = stalled_rx.changed() => {
                        // Held open, silent, until the device gives up.
                        std::future::pending::<()>().await;
                    }
                }
            }
        });
        let mut buf = vec![0u8; 16 * 1024];
        loop {
            match client_read.read(&mut buf).await {
                Ok(n) if n > 0 => {
                    if buf[..n].windows(stall.len()).any(|w| w == stall) {
                        if !hold {
                            break;
                        }
                        let _ = stalled_tx.send(true);
                        // Reads nothing more, answers nothing.
                        std::future::pending::<()>().await;
                    }
                    if relay_write.write_all(&buf[..n]).await.is_err() {
                        break;
                    }
                }
                _ => break,
            }
        }
        down.abort();
    }
}

impl Drop for StallingProxy {
    fn drop(&mut self) {
        self.task.abort();
    }
}
