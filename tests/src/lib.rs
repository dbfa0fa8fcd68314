//! Harness for end-to-end tests: a real mend-relay on 127.0.0.1:0 in this process, and devices
//! that sync with it through the real transport.

use std::{
    net::SocketAddr,
    path::{Path, PathBuf},
    sync::{Arc, Mutex},
    time::Duration,
};

use anyhow::{Context, Result};
use mend_client::{Device, Keyring, RelayOptions, SyncObserver};
use mend_core::{
    Journal, RecordId, Space, journal::OpenOptions, store::Durability, sync::SyncStatus,
};
pub use mend_relay::Config as RelayConfig;
use mend_relay::{AppState, Config};
use tokio::{sync::oneshot, task::JoinHandle};

/// Longest a sync round may take in a test before it counts as stuck.
pub const ROUND: Duration = Duration::from_secs(20);

/// A relay serving on loopback until dropped.
#[derive(Debug)]
pub struct Relay {
    pub addr: SocketAddr,
    pub data_dir: PathBuf,
    stop: Option<oneshot::Sender<()>>,
    task: Option<JoinHandle<()>>,
}

impl Relay {
    /// Starts a relay with default limits on a fresh data directory inside `dir`.
    pub async fn start(dir: &Path) -> Result<Self> {
        let data_dir = dir.join("relay-data");
        Self::start_at(&data_dir).await
    }

    /// Starts a relay on a fresh data directory inside `dir` with its configuration adjusted
    /// (lower limits, for example).
    pub async fn start_with(dir: &Path, adjust: impl FnOnce(&mut Config)) -> Result<Self> {
        Self::start_configured(
            &dir.join("relay-data"),
            SocketAddr::from(([127, 0, 0, 1], 0)),
            adjust,
        )
        .await
    }

    /// Starts a relay on an existing data directory (a restart) on any free port.
    pub async fn start_at(data_dir: &Path) -> Result<Self> {
        Self::start_on(data_dir, SocketAddr::from(([127, 0, 0, 1], 0))).await
    }

    /// Starts a relay on `data_dir` listening on `addr` (a restart at the same address).
    pub async fn start_on(data_dir: &Path, addr: SocketAddr) -> Result<Self> {
        Self::start_configured(data_dir, addr, |_| {}).await
    }

    async fn start_configured(
        data_dir: &Path,
        addr: SocketAddr,
        adjust: impl FnOnce(&mut Config),
    ) -> Result<Self> {
        let mut config = Config::new(data_dir);
        config.listen = addr;
        adjust(&mut config);
        let state = AppState::open_sqlite(config).context("open relay storage")?;
        let listener = tokio::net::TcpListener::bind(addr).await?;
        let addr = listener.local_addr()?;
        let (stop, stopped) = oneshot::channel::<()>();
        let task = tokio::spawn(async move {
            let _ = mend_relay::run(listener, state, async {
                let _ = stopped.await;
            })
            .await;
        });
        Ok(Self {
            addr,
            data_dir: data_dir.to_owned(),
            stop: Some(stop),
            task: Some(task),
        })
    }

    /// The relay's URL.
    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
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

/// Collects what the observer is told.
#[derive(Debug, Default)]
pub struct Recorder {
    pub changed: Mutex<Vec<RecordId>>,
    pub statuses: Mutex<Vec<SyncStatus>>,
}

impl SyncObserver for Recorder {
    fn records_changed(&self, _space: Space, records: Vec<RecordId>) {
        if let Ok(mut c) = self.changed.lock() {
            c.extend(records);
        }
    }

    fn status_changed(&self, status: SyncStatus) {
        if let Ok(mut s) = self.statuses.lock() {
            s.push(status);
        }
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
    pub fn create(dir: &Path, file: &str, name: &str, relay: &str) -> Result<Self> {
        let recorder = Arc::new(Recorder::default());
        let path = dir.join(file);
        let observer: Arc<dyn SyncObserver> = recorder.clone();
        let device = Device::create(
            &path,
            name,
            relay,
            opts(),
            RelayOptions::default(),
            Some(observer),
        )?;
        Ok(Self {
            device,
            recorder,
            path,
        })
    }

    pub fn join(dir: &Path, file: &str, invite: &str, name: &str) -> Result<Self> {
        let recorder = Arc::new(Recorder::default());
        let path = dir.join(file);
        let observer: Arc<dyn SyncObserver> = recorder.clone();
        let device = Device::join(
            &path,
            invite,
            name,
            opts(),
            RelayOptions::default(),
            Some(observer),
        )?;
        Ok(Self {
            device,
            recorder,
            path,
        })
    }

    pub fn reopen(path: &Path, keyring: Keyring) -> Result<Self> {
        let recorder = Arc::new(Recorder::default());
        let observer: Arc<dyn SyncObserver> = recorder.clone();
        let device = Device::open(
            path,
            keyring,
            opts(),
            RelayOptions::default(),
            Some(observer),
        )?;
        Ok(Self {
            device,
            recorder,
            path: path.to_owned(),
        })
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
    let a = Phone::create(dir, "a.db", "Alex", &relay.url())?;
    a.sync().await?;
    let b = Phone::join(dir, "b.db", &a.device.partner_invite()?, "Blake")?;
    b.sync().await?;
    a.sync().await?;
    Ok((a, b))
}
