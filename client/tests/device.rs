//! The device object without a relay: writes tell the observer, reads use their own connection
//! and see whole commits.

use std::{
    sync::{
        Arc, Mutex,
        atomic::{AtomicBool, AtomicUsize, Ordering},
    },
    time::Duration,
};

use anyhow::{Result, ensure};
use mend_client::{Device, RelayOptions, SyncObserver};
use mend_core::{
    Body, OpenOptions, RecordId, Space,
    model::{ProcessingNote, Share},
    sync::SyncStatus,
};

/// No relay listens here; nothing in these tests syncs.
const RELAY: &str = "http://127.0.0.1:9";

/// Alex's new journal at `path`, with no observer.
fn alex(path: &std::path::Path) -> mend_core::Result<Device> {
    Device::create(
        path,
        "Alex",
        RELAY,
        OpenOptions::default(),
        RelayOptions::default(),
        None,
    )
}

#[derive(Default)]
struct Heard(Mutex<Vec<(Space, Vec<RecordId>)>>);

impl SyncObserver for Heard {
    fn records_changed(&self, space: Space, records: Vec<RecordId>) {
        if let Ok(mut heard) = self.0.lock() {
            heard.push((space, records));
        }
    }
    fn status_changed(&self, _status: SyncStatus) {}
}

#[test]
fn every_write_through_the_device_tells_the_observer_what_it_wrote() -> Result<()> {
    let dir = tempfile::tempdir()?;
    let heard = Arc::new(Heard::default());
    let observer: Arc<dyn SyncObserver> = heard.clone();
    let device = Device::create(
        &dir.path().join("j.db"),
        "Alex",
        RELAY,
        OpenOptions::default(),
        RelayOptions::default(),
        Some(observer),
    )?;
    let shared = device.write(|j| {
        j.add(Body::Share(Share {
            feeling: "heard".into(),
            tough_question: false,
        }))
    })?;
    let note = device.write(|j| {
        j.add(Body::ProcessingNote(ProcessingNote {
            text: "mine".into(),
        }))
    })?;
    device.write(|j| j.share(note))?;
    // A refused write tells nobody.
    let refused = device.write(|j| j.remove(RecordId::generate()));
    ensure!(refused.is_err());
    let heard = heard
        .0
        .lock()
        .map_err(|_| anyhow::anyhow!("poisoned"))?
        .clone();
    ensure!(
        heard
            == vec![
                (Space::Couple, vec![shared]),
                (Space::Personal, vec![note]),
                (Space::Couple, vec![note]),
                (Space::Personal, vec![note]),
            ],
        "{heard:?}"
    );
    // What was written is there to read, on the reader's own connection.
    ensure!(device.read(|j| j.get(shared))?.id == shared);
    Ok(())
}

/// A panic inside a call (a bug) leaves the journal's memory in doubt in this process, not its
/// file: later calls say so (`Internal`: open it again), where they said the database was
/// damaged and the app offered recovery from another device.
#[test]
fn after_a_panic_inside_a_call_the_journal_asks_to_be_opened_again() -> Result<()> {
    let dir = tempfile::tempdir()?;
    let path = dir.path().join("j.db");
    let device = alex(&path)?;
    let keyring = device.keyring();
    let journal = Arc::clone(device.journal());
    let panicked = std::thread::spawn(move || {
        let _held = journal.lock();
        panic!("a bug inside a step");
    })
    .join();
    ensure!(panicked.is_err());
    let refused = device.write(|j| {
        j.add(Body::Share(Share {
            feeling: "after the bug".into(),
            tough_question: false,
        }))
    });
    match refused {
        Err(e @ mend_core::Error::Internal(_)) => ensure!(!e.is_damaged_journal()),
        other => anyhow::bail!("expected Internal, got {other:?}"),
    }
    drop(device);
    let again = Device::open(
        &path,
        keyring,
        OpenOptions::default(),
        RelayOptions::default(),
        None,
    )?;
    again.write(|j| {
        j.add(Body::Share(Share {
            feeling: "opened again".into(),
            tough_question: false,
        }))
    })?;
    Ok(())
}

#[test]
fn reads_never_see_half_of_a_write_to_both_spaces() -> Result<()> {
    let dir = tempfile::tempdir()?;
    let device = Arc::new(alex(&dir.path().join("j.db"))?);
    // Records committed so far. A note lives in the personal space until it is shared; sharing
    // moves it to the couple's space in one transaction, so a read between the two halves
    // would count it nowhere.
    let committed = Arc::new(AtomicUsize::new(0));
    let done = Arc::new(AtomicBool::new(false));
    let reader = {
        let (device, committed, done) = (device.clone(), committed.clone(), done.clone());
        std::thread::spawn(move || -> Result<usize> {
            let mut reads = 0;
            while !done.load(Ordering::Acquire) {
                let before = committed.load(Ordering::Acquire);
                let seen = device.read(|j| j.records())?.len();
                ensure!(
                    seen >= before,
                    "a read saw {seen} records after {before} were committed"
                );
                reads += 1;
            }
            Ok(reads)
        })
    };
    for n in 0..300 {
        let id = device.write(|j| {
            j.add(Body::ProcessingNote(ProcessingNote {
                text: format!("note {n}"),
            }))
        })?;
        committed.fetch_add(1, Ordering::Release);
        device.write(|j| j.share(id))?;
        if n % 50 == 0 {
            std::thread::sleep(Duration::from_millis(1));
        }
    }
    done.store(true, Ordering::Release);
    let reads = reader
        .join()
        .map_err(|_| anyhow::anyhow!("reader panicked"))??;
    ensure!(reads > 0, "the reader never read");
    Ok(())
}

#[test]
fn reads_see_a_partner_who_joined_after_the_reader_opened() -> Result<()> {
    let dir = tempfile::tempdir()?;
    let device = alex(&dir.path().join("a.db"))?;
    ensure!(device.read(|j| Ok(j.partners().len()))? == 1);
    // Blake joins from a copy of the couple's document; his registration comes back as changes.
    let (save, heads) =
        device.write(|j| Ok((j.save_space(Space::Couple)?, j.heads(Space::Couple)?)))?;
    let source = mend_core::JoinSource {
        couple: save,
        personal: None,
        partner: None,
    };
    let blake = mend_core::Journal::join(&dir.path().join("b.db"), &source, "Blake")?;
    let joined = blake.changes_since(Space::Couple, &heads)?;
    device.write(|j| j.apply_changes(Space::Couple, &joined))?;
    let names: Vec<String> =
        device.read(|j| Ok(j.partners().into_iter().map(|p| p.name).collect()))?;
    ensure!(
        names.len() == 2 && names.contains(&"Blake".to_owned()),
        "{names:?}"
    );
    Ok(())
}

/// A keyring from before signing keys gets them when its journal opens, and once the journal is
/// ready the device's certificate is in the couple's document, once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_old_keyring_gets_keys_and_the_ready_device_records_its_certificate() -> Result<()> {
    let dir = tempfile::tempdir()?;
    let path = dir.path().join("a.db");
    // A journal and keyring as an app before identities left them.
    mend_core::Journal::create(&path, "Alex")?;
    let old = mend_core::Keyring {
        identity: None,
        device_key: None,
        epoch: mend_core::KeyringEpoch::Unknown,
        ..mend_core::Keyring::generate(RELAY)?
    };
    let device = Device::open(
        &path,
        old.clone(),
        OpenOptions::default(),
        RelayOptions::default(),
        None,
    )?;
    let keyring = device.keyring().clone();
    ensure!(keyring != old, "the app has a new keyring to store");
    // It names the epoch its couple secret is of, for a restore.
    ensure!(keyring.epoch == mend_core::KeyringEpoch::Known(None));
    let key = keyring
        .device_key
        .as_ref()
        .map(|k| k.public().fingerprint());
    device.ready().await?;
    let alex = device.read(|j| Ok(j.partners()))?;
    let fingerprints: Vec<_> = alex
        .iter()
        .flat_map(|p| p.devices.iter().map(|d| Some(d.fingerprint.clone())))
        .collect();
    ensure!(fingerprints == vec![key], "{alex:?}");
    ensure!(device.certify().await? == mend_core::Certified::Present);
    device.close().await?;

    // Opened again with the stored keyring, nothing more is written.
    let device = Device::open(
        &path,
        keyring.clone(),
        OpenOptions::default(),
        RelayOptions::default(),
        None,
    )?;
    ensure!(device.keyring() == keyring);
    let heads = device.write(|j| j.heads(Space::Couple))?;
    device.ready().await?;
    ensure!(device.write(|j| j.heads(Space::Couple))? == heads);
    device.close().await?;
    Ok(())
}

/// A relay that takes every connection and never answers. When live sync stops, the requests
/// it holds are cut at once, not left to run on (with their buffers) until their own timeouts.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stopping_live_sync_cuts_the_requests_a_silent_relay_holds() -> Result<()> {
    use tokio::io::AsyncReadExt;
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let url = format!("http://{}", listener.local_addr()?);
    let closed = Arc::new(AtomicUsize::new(0));
    let accepted = Arc::new(AtomicUsize::new(0));
    let (counted, ended) = (Arc::clone(&accepted), Arc::clone(&closed));
    let silent = tokio::spawn(async move {
        while let Ok((mut stream, _)) = listener.accept().await {
            counted.fetch_add(1, Ordering::SeqCst);
            let ended = Arc::clone(&ended);
            tokio::spawn(async move {
                let mut buf = [0u8; 4096];
                // Reads what the device sends and answers nothing, until it hangs up.
                while matches!(stream.read(&mut buf).await, Ok(n) if n > 0) {}
                ended.fetch_add(1, Ordering::SeqCst);
            });
        }
    });
    let dir = tempfile::tempdir()?;
    let device = Device::create(
        &dir.path().join("j.db"),
        "Alex",
        &url,
        OpenOptions::default(),
        RelayOptions::default(),
        None,
    )?;
    device.start_live()?;
    for _ in 0..200 {
        if accepted.load(Ordering::SeqCst) > 0 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    ensure!(
        accepted.load(Ordering::SeqCst) > 0,
        "live sync asked nothing"
    );
    device.stop_live().await;
    // Well inside the request's own limits (seconds), but time enough on a loaded machine.
    for _ in 0..150 {
        if closed.load(Ordering::SeqCst) >= accepted.load(Ordering::SeqCst) {
            break;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    let (open, ended) = (
        accepted.load(Ordering::SeqCst),
        closed.load(Ordering::SeqCst),
    );
    silent.abort();
    ensure!(
        ended >= open,
        "{} of {open} requests still held after live sync stopped",
        open.saturating_sub(ended)
    );
    Ok(())
}
