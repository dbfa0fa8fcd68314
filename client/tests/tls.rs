//! The device's TLS to the relay, told as stories: a real relay on 127.0.0.1 behind a small
//! TLS terminator made at test time (a private CA, a self-signed certificate, an expired one,
//! a man in the middle), and devices that must sync through it, or refuse it and say why (in
//! live status too).

use std::{
    net::SocketAddr,
    path::Path,
    sync::{
        Arc,
        atomic::{AtomicUsize, Ordering},
    },
    time::Duration,
};

use anyhow::{Context, Result, bail, ensure};
use mend_client::{Device, RelayOptions, SyncObserver};
use mend_core::{
    Body, Error, Keyring, OpenOptions, RecordId, Space, crypto::RelayPin, model::ProcessingNote,
    store::Durability, sync::SyncStatus,
};
use mend_relay::{AppState, Config};
use mend_testkit::{Ca, Leaf, self_signed};
use rustls::ServerConfig;
use tokio::{
    io::AsyncReadExt,
    net::{TcpListener, TcpStream},
    sync::oneshot,
    task::JoinHandle,
};
use tokio_rustls::TlsAcceptor;

const ROUND: Duration = Duration::from_secs(20);

fn opts() -> OpenOptions {
    OpenOptions {
        durability: Durability::Normal,
        ..OpenOptions::default()
    }
}

/// A relay on loopback, in clear text, until dropped.
struct Relay {
    addr: SocketAddr,
    _stop: oneshot::Sender<()>,
    _task: JoinHandle<()>,
}

impl Relay {
    async fn start(dir: &Path) -> Result<Self> {
        let mut config = Config::new(dir.join("relay-data"));
        config.listen = SocketAddr::from(([127, 0, 0, 1], 0));
        let state = AppState::open_sqlite(config).context("open relay storage")?;
        let listener = TcpListener::bind("127.0.0.1:0").await?;
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
            _stop: stop,
            _task: task,
        })
    }
}

/// The pin of a test certificate, from rcgen's own SubjectPublicKeyInfo (not the device's
/// parser).
fn pin(leaf: &Leaf) -> RelayPin {
    RelayPin::of_spki(&leaf.spki())
}

/// A TLS terminator on 127.0.0.1 in front of `relay`, presenting `identity`; counts the bytes
/// that reached it decrypted (what a man in the middle would read).
struct Terminator {
    addr: SocketAddr,
    decrypted: Arc<AtomicUsize>,
    task: JoinHandle<()>,
}

impl Drop for Terminator {
    fn drop(&mut self) {
        self.task.abort();
    }
}

impl Terminator {
    /// Forwards to `relay`, or, with `None`, keeps what it decrypts (a man in the middle
    /// with nothing behind it).
    async fn start(identity: &Leaf, relay: Option<SocketAddr>) -> Result<Self> {
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let config = ServerConfig::builder_with_provider(provider)
            .with_protocol_versions(&[&rustls::version::TLS13])?
            .with_no_client_auth()
            .with_single_cert(vec![identity.der().clone()], identity.key_der())?;
        let acceptor = TlsAcceptor::from(Arc::new(config));
        let listener = TcpListener::bind("127.0.0.1:0").await?;
        let addr = listener.local_addr()?;
        let decrypted = Arc::new(AtomicUsize::new(0));
        let counted = Arc::clone(&decrypted);
        let task = tokio::spawn(async move {
            while let Ok((tcp, _)) = listener.accept().await {
                let acceptor = acceptor.clone();
                let counted = Arc::clone(&counted);
                tokio::spawn(async move {
                    let Ok(mut tls) = acceptor.accept(tcp).await else {
                        return;
                    };
                    match relay {
                        Some(relay) => {
                            let Ok(mut upstream) = TcpStream::connect(relay).await else {
                                return;
                            };
                            if let Ok((up, _)) =
                                tokio::io::copy_bidirectional(&mut tls, &mut upstream).await
                            {
                                counted.fetch_add(
                                    usize::try_from(up).unwrap_or(usize::MAX),
                                    Ordering::Relaxed,
                                );
                            }
                        }
                        None => {
                            let mut buf = [0u8; 4096];
                            while let Ok(n) = tls.read(&mut buf).await {
                                if n == 0 {
                                    break;
                                }
                                counted.fetch_add(n, Ordering::Relaxed);
                            }
                        }
                    }
                });
            }
        });
        Ok(Self {
            addr,
            decrypted,
            task,
        })
    }

    fn url(&self) -> String {
        format!("https://127.0.0.1:{}", self.addr.port())
    }
}

fn note(text: &str) -> Body {
    Body::ProcessingNote(ProcessingNote { text: text.into() })
}

fn share(text: &str) -> Body {
    Body::Share(mend_core::model::Share {
        feeling: text.into(),
        tough_question: false,
    })
}

/// Alex creates a journal through `url`, Blake joins with her invite and the same options
/// (minus the pin, which the invite carries); both sync over it.
async fn couple(dir: &Path, url: &str, relay: RelayOptions) -> Result<(Device, Device)> {
    let alex = Device::create(
        &dir.join("alex.db"),
        "Alex",
        url,
        opts(),
        relay.clone(),
        None,
    )?;
    alex.sync_now(ROUND).await?;
    let invite = alex.partner_invite()?;
    let blake = Device::join(
        &dir.join("blake.db"),
        &invite,
        "Blake",
        opts(),
        RelayOptions { pin: None, ..relay },
        None,
    )?;
    blake.sync_now(ROUND).await?;
    Ok((alex, blake))
}

/// Whether `device` holds record `id`.
fn holds(device: &Device, id: RecordId) -> bool {
    device.read(|j| j.get(id)).is_ok()
}

/// Alex's device on `url`, pinned to a key that relay does not hold.
fn pinned_to_another_key(
    dir: &Path,
    url: &str,
    observer: Option<Arc<dyn SyncObserver>>,
) -> Result<Device> {
    let relay = RelayOptions {
        pin: Some(pin(&self_signed()?)),
        ..RelayOptions::default()
    };
    Ok(Device::create(
        &dir.join("alex.db"),
        "Alex",
        url,
        opts(),
        relay,
        observer,
    )?)
}

/// What syncing `device` fails with: the device must refuse the relay, not retry it.
async fn refusal(device: &Device) -> Result<String> {
    match device.sync_now(ROUND).await {
        Err(Error::UntrustedRelay(why)) => Ok(why),
        other => bail!("the relay was not refused: {other:?}"),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_relay_signed_by_a_private_ca_syncs_over_tls_in_rounds_and_live() -> Result<()> {
    let dir = tempfile::tempdir()?;
    let relay = Relay::start(dir.path()).await?;
    let ca = Ca::new("Mend test CA")?;
    let tls = Terminator::start(&ca.leaf()?, Some(relay.addr)).await?;
    let trust = RelayOptions {
        extra_roots: vec![ca.der().to_vec()],
        ..RelayOptions::default()
    };
    let (alex, blake) = couple(dir.path(), &tls.url(), trust).await?;

    // A round each way.
    let first = alex.write(|j| j.add(share("over tls")))?;
    alex.sync_now(ROUND).await?;
    blake.sync_now(ROUND).await?;
    ensure!(holds(&blake, first), "Blake did not receive Alex's share");

    // Live: a write on Alex's device reaches Blake's over the WebSocket, same TLS.
    alex.start_live()?;
    blake.start_live()?;
    let second = alex.write(|j| j.add(share("live over tls")))?;
    let mut arrived = false;
    for _ in 0..400 {
        if holds(&blake, second) {
            arrived = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
    ensure!(arrived, "the live share never reached Blake");
    ensure!(alex.is_live() && blake.is_live());
    alex.stop_live().await;
    blake.stop_live().await;
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_pinned_self_signed_relay_works_and_its_pin_travels_in_the_invite() -> Result<()> {
    let dir = tempfile::tempdir()?;
    let relay = Relay::start(dir.path()).await?;
    let identity = self_signed()?;
    let tls = Terminator::start(&identity, Some(relay.addr)).await?;
    let pinned = RelayOptions {
        pin: Some(pin(&identity)),
        ..RelayOptions::default()
    };
    let alex = Device::create(
        &dir.path().join("alex.db"),
        "Alex",
        &tls.url(),
        opts(),
        pinned,
        None,
    )?;
    ensure!(alex.keyring().relay_pin == Some(pin(&identity)));
    let invite = alex.partner_invite()?;
    ensure!(
        invite.starts_with("MEND2-"),
        "a pinned relay's invite is MEND2"
    );
    let id = alex.write(|j| j.add(share("self-hosted")))?;
    alex.sync_now(ROUND).await?;

    // Blake's device is given nothing but the invite.
    let blake = Device::join(
        &dir.path().join("blake.db"),
        &invite,
        "Blake",
        opts(),
        RelayOptions::default(),
        None,
    )?;
    blake.sync_now(ROUND).await?;
    ensure!(holds(&blake, id), "Blake did not receive Alex's share");
    // The pin is kept with the relay URL, so a reopened device still trusts the relay.
    let kept = Keyring::from_secret_string(&blake.keyring().to_secret_string())?;
    ensure!(kept.relay_pin == Some(pin(&identity)));

    // Without the pin, the same certificate is not trusted.
    blake.close().await?;
    let stranger = Device::open(
        &dir.path().join("blake.db"),
        Keyring {
            relay_pin: None,
            ..kept
        },
        opts(),
        RelayOptions::default(),
        None,
    )?;
    let why = refusal(&stranger).await?;
    ensure!(why.contains("not signed by a trusted authority"), "{why}");
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_wrong_pin_is_refused_with_a_clear_error_and_no_secret() -> Result<()> {
    let dir = tempfile::tempdir()?;
    let relay = Relay::start(dir.path()).await?;
    let tls = Terminator::start(&self_signed()?, Some(relay.addr)).await?;
    let device = pinned_to_another_key(dir.path(), &tls.url(), None)?;
    device.write(|j| j.add(note("private words")))?;
    let why = refusal(&device).await?;
    ensure!(
        why.contains("the relay's certificate does not match the pinned key"),
        "{why}"
    );
    for link in device.keyring().links() {
        ensure!(!why.contains(link.keys.token.expose()), "the token leaked");
    }
    ensure!(!why.contains("private words"));
    ensure!(tls.decrypted.load(Ordering::Relaxed) == 0);
    // The edit waits on the device; the journal is untouched.
    ensure!(device.read(|j| j.records())?.len() == 1);
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_expired_certificate_is_refused() -> Result<()> {
    let dir = tempfile::tempdir()?;
    let relay = Relay::start(dir.path()).await?;
    let ca = Ca::new("Mend test CA")?;
    let tls = Terminator::start(&ca.expired_leaf()?, Some(relay.addr)).await?;
    let device = Device::create(
        &dir.path().join("alex.db"),
        "Alex",
        &tls.url(),
        opts(),
        RelayOptions {
            extra_roots: vec![ca.der().to_vec()],
            ..RelayOptions::default()
        },
        None,
    )?;
    let why = refusal(&device).await?;
    ensure!(why.contains("expired"), "{why}");
    ensure!(tls.decrypted.load(Ordering::Relaxed) == 0);
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_man_in_the_middle_with_another_certificate_for_the_name_reads_nothing() -> Result<()> {
    let dir = tempfile::tempdir()?;
    let relay = Relay::start(dir.path()).await?;
    let ca = Ca::new("Mend test CA")?;
    let genuine = ca.leaf()?;
    let real = Terminator::start(&genuine, Some(relay.addr)).await?;
    // The attacker's certificate names the same host, signed by a CA of their own that even
    // copies the genuine CA's name.
    let mallory = Ca::new("Mend test CA")?;
    let mitm = Terminator::start(&mallory.leaf()?, None).await?;

    // A device trusting the CA, pointed at the attacker (as a poisoned DNS answer would).
    let trusting = Device::create(
        &dir.path().join("a.db"),
        "Alex",
        &mitm.url(),
        opts(),
        RelayOptions {
            extra_roots: vec![ca.der().to_vec()],
            ..RelayOptions::default()
        },
        None,
    )?;
    let why = refusal(&trusting).await?;
    ensure!(why.contains("not signed by a trusted authority"), "{why}");

    // A device pinning the genuine key, pointed at the attacker.
    let pinning = Device::create(
        &dir.path().join("b.db"),
        "Blake",
        &mitm.url(),
        opts(),
        RelayOptions {
            pin: Some(pin(&genuine)),
            ..RelayOptions::default()
        },
        None,
    )?;
    let why = refusal(&pinning).await?;
    ensure!(why.contains("does not match the pinned key"), "{why}");
    ensure!(
        mitm.decrypted.load(Ordering::Relaxed) == 0,
        "the man in the middle read the device's request"
    );

    // The same pin works against the genuine relay.
    let genuine_device = Device::create(
        &dir.path().join("c.db"),
        "Casey",
        &real.url(),
        opts(),
        RelayOptions {
            pin: Some(pin(&genuine)),
            ..RelayOptions::default()
        },
        None,
    )?;
    genuine_device.sync_now(ROUND).await?;
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn clear_text_to_another_machine_needs_the_opt_in() -> Result<()> {
    let dir = tempfile::tempdir()?;
    // 192.0.2.0/24 is reserved for documentation: nothing answers there, and nothing is sent.
    let remote = "http://192.0.2.1:8787";
    let refused = Device::create(
        &dir.path().join("a.db"),
        "Alex",
        remote,
        opts(),
        RelayOptions::default(),
        None,
    );
    match refused {
        Err(Error::UntrustedRelay(why)) => {
            ensure!(why.contains("--insecure-cleartext-relay"), "{why}")
        }
        other => bail!("clear text to another machine was accepted: {other:?}"),
    }
    ensure!(!dir.path().join("a.db").exists());
    let allowed = Device::create(
        &dir.path().join("a.db"),
        "Alex",
        remote,
        opts(),
        RelayOptions {
            allow_insecure_cleartext: true,
            ..RelayOptions::default()
        },
        None,
    )?;
    let keyring = allowed.keyring().clone();
    allowed.close().await?;
    // Reopened without the opt-in, the journal still opens for local work, and a sync is
    // refused at once instead of sending the token in clear.
    let reopened = Device::open(
        &dir.path().join("a.db"),
        keyring,
        opts(),
        RelayOptions::default(),
        None,
    )?;
    reopened.write(|j| j.add(note("offline is fine")))?;
    let why = refusal(&reopened).await?;
    ensure!(why.contains("clear-text"), "{why}");
    Ok(())
}

/// The statuses a device reported, newest last.
#[derive(Default)]
struct Statuses(std::sync::Mutex<Vec<SyncStatus>>);

impl SyncObserver for Statuses {
    fn records_changed(&self, _space: Space, _records: Vec<RecordId>) {}

    fn status_changed(&self, status: SyncStatus) {
        if let Ok(mut seen) = self.0.lock() {
            seen.push(status);
        }
    }
}

impl Statuses {
    fn refused(&self) -> Option<SyncStatus> {
        let seen = self.0.lock().ok()?;
        seen.iter()
            .rev()
            .find(|s| s.untrusted_relay.is_some())
            .cloned()
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_relay_refused_during_live_sync_shows_as_untrusted_not_offline() -> Result<()> {
    let dir = tempfile::tempdir()?;
    let relay = Relay::start(dir.path()).await?;
    // Another key than the pinned one: the operator's renewal went wrong, or someone is in
    // the middle.
    let tls = Terminator::start(&self_signed()?, Some(relay.addr)).await?;
    let statuses = Arc::new(Statuses::default());
    let observer: Arc<dyn SyncObserver> = statuses.clone();
    let device = pinned_to_another_key(dir.path(), &tls.url(), Some(observer))?;
    device.write(|j| j.add(note("waits on the phone")))?;
    device.start_live()?;
    let mut refused = None;
    for _ in 0..800 {
        refused = statuses.refused();
        if refused.is_some() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
    device.stop_live().await;
    let status = refused.context("live status never showed the refusal")?;
    let why = status.untrusted_relay.clone().unwrap_or_default();
    ensure!(why.contains("does not match the pinned key"), "{why}");
    ensure!(!status.online, "{status:?}");
    ensure!(status.pending > 0, "the edit is not waiting: {status:?}");
    for link in device.keyring().links() {
        ensure!(!why.contains(link.keys.token.expose()), "the token leaked");
    }
    ensure!(tls.decrypted.load(Ordering::Relaxed) == 0);
    Ok(())
}
