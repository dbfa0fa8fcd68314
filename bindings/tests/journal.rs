//! The journal object as an app drives it, from Rust: async calls awaited on a foreign
//! executor, subscriptions on the callback thread, close and reopen, errors by code, the
//! logger. No relay: nothing here syncs (the stories in bindings/kotlin and bindings/python
//! cover sync and restore against a real relay).

use std::{
    future::Future,
    sync::{
        Arc, Mutex,
        mpsc::{self, Receiver, Sender},
    },
    time::Duration,
};

use mend_ffi_api::{
    CALLBACK_THREAD, ChangedRecord, Journal, JournalChange, JournalListener, JournalOptions,
    ListenerError, LogLevel, LogRecord, LogSink, MendError, ProcessingNote, RecordBody, RecordId,
    RecordKind, Share, SyncStatus, SyncStatusListener, set_logger,
};

const RELAY: &str = "http://127.0.0.1:9";
/// How long a test waits for a callback before it counts as never delivered.
const DELIVERY: Duration = Duration::from_secs(10);

/// An executor that is not the bindings' runtime, as Kotlin's or Swift's is.
fn wait<F: Future>(call: F) -> F::Output {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .build()
        .expect("a current-thread runtime");
    runtime.block_on(call)
}

fn share(feeling: &str) -> RecordBody {
    RecordBody::Share {
        value: Share {
            feeling: feeling.into(),
            tough_question: false,
        },
    }
}

/// A new journal at `j.db` in `dir`.
fn created(dir: &tempfile::TempDir) -> Arc<Journal> {
    let path = dir.path().join("j.db").display().to_string();
    wait(Journal::create(
        path,
        "Alex".into(),
        RELAY.into(),
        JournalOptions::default(),
    ))
    .expect("create")
}

/// Sends each change, with the thread it arrived on, to the test.
struct Heard(Mutex<Sender<(String, JournalChange)>>);

impl Heard {
    fn new() -> (Arc<Self>, Receiver<(String, JournalChange)>) {
        let (tx, rx) = mpsc::channel();
        (Arc::new(Self(Mutex::new(tx))), rx)
    }
}

impl JournalListener for Heard {
    fn on_change(&self, change: JournalChange) -> Result<(), ListenerError> {
        let thread = std::thread::current().name().unwrap_or("").to_owned();
        let _ = self.0.lock().expect("sender").send((thread, change));
        Ok(())
    }
}

/// A listener that always throws, as a Kotlin or Swift listener may.
struct Throws;

impl JournalListener for Throws {
    fn on_change(&self, _change: JournalChange) -> Result<(), ListenerError> {
        Err(ListenerError::Failed("boom".into()))
    }
}

/// A listener that panics.
struct Panics;

impl JournalListener for Panics {
    fn on_change(&self, _change: JournalChange) -> Result<(), ListenerError> {
        panic!("a listener bug");
    }
}

struct Statuses(Mutex<Sender<SyncStatus>>);

impl SyncStatusListener for Statuses {
    fn on_status(&self, status: SyncStatus) -> Result<(), ListenerError> {
        let _ = self.0.lock().expect("sender").send(status);
        Ok(())
    }

    fn on_keyring_changed(&self) -> Result<(), ListenerError> {
        Ok(())
    }
}

/// Holds the callback thread in its first call until the test lets it go.
struct Holds {
    entered: Mutex<Option<Sender<()>>>,
    release: Mutex<Receiver<()>>,
}

impl JournalListener for Holds {
    fn on_change(&self, _change: JournalChange) -> Result<(), ListenerError> {
        if let Some(entered) = self.entered.lock().expect("entered").take() {
            let _ = entered.send(());
            let _ = self.release.lock().expect("release").recv_timeout(DELIVERY);
        }
        Ok(())
    }
}

/// A change delivered after the journal closed (the callback thread was behind) still says
/// what the record is: before, it came with no kind and `removed` false, which apps read as
/// "no longer visible, but keep it".
#[test]
fn a_change_delivered_after_shutdown_still_says_its_kind() {
    let dir = tempfile::tempdir().expect("dir");
    let journal = created(&dir);
    let (entered, held) = mpsc::channel();
    let (release, released) = mpsc::channel();
    let holds = Arc::new(Holds {
        entered: Mutex::new(Some(entered)),
        release: Mutex::new(released),
    });
    let (heard, changes) = Heard::new();
    let _holding = journal.subscribe(holds);
    let _hearing = journal.subscribe(heard);
    wait(journal.add(share("first"), None)).expect("add");
    held.recv_timeout(DELIVERY)
        .expect("the callback thread is held");
    let second = wait(journal.add(share("second"), None)).expect("add");
    wait(journal.shutdown()).expect("shutdown");
    release.send(()).expect("release");
    let mut seen = None;
    while let Ok((_, change)) = changes.recv_timeout(DELIVERY) {
        if let Some(record) = change.records.iter().find(|r| r.id == second) {
            seen = Some(record.clone());
            break;
        }
    }
    let record = seen.expect("the second change was delivered");
    assert_eq!(record.kind, Some(RecordKind::Share), "{record:?}");
    assert!(!record.removed);
}

/// The coroutine or Task awaiting `create` is cancelled (the person left the screen): the
/// journal made meanwhile is removed, so a second try works (before: "a journal already
/// exists", with keys nobody ever received).
#[test]
fn a_cancelled_create_leaves_no_journal_behind() {
    let dir = tempfile::tempdir().expect("dir");
    let path = dir.path().join("j.db").display().to_string();
    let create = || {
        Journal::create(
            path.clone(),
            "Alex".into(),
            RELAY.into(),
            JournalOptions::default(),
        )
    };
    // Polled once (the work starts), then dropped, as uniffi drops a cancelled call's future.
    let timers = tokio::runtime::Builder::new_current_thread()
        .enable_time()
        .build()
        .expect("a runtime with timers");
    let cut = timers.block_on(async { tokio::time::timeout(Duration::ZERO, create()).await });
    assert!(cut.is_err(), "the create ended before it was cut");
    // The cut create runs on to its end, then removes what it made: its lock file stays (the
    // sign that it ran), its database goes.
    let db = dir.path().join("j.db");
    let lock = dir.path().join("j.db.lock");
    let mut gone = false;
    for _ in 0..400 {
        if lock.exists() && !db.exists() {
            gone = true;
            break;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    assert!(gone, "the cancelled create left its journal (or never ran)");
    let mut again = None;
    for _ in 0..200 {
        match wait(create()) {
            Ok(journal) => {
                again = Some(journal);
                break;
            }
            // The removal still holds the lock for a moment.
            Err(MendError::Locked(_)) => std::thread::sleep(Duration::from_millis(50)),
            Err(e) => panic!("{e:?}"),
        }
    }
    let journal = again.expect("a journal from the cancelled create is still in the way");
    wait(journal.shutdown()).expect("shutdown");
}

fn ids(change: &JournalChange) -> Vec<RecordId> {
    change.records.iter().map(|r| r.id.clone()).collect()
}

#[test]
fn subscriptions_hear_changes_on_the_callback_thread_until_dropped() {
    let dir = tempfile::tempdir().expect("dir");
    let journal = created(&dir);
    wait(journal.ready()).expect("ready");

    let (first, first_rx) = Heard::new();
    let (second, second_rx) = Heard::new();
    let (dropped, dropped_rx) = Heard::new();
    let _first = journal.subscribe(first);
    let second_sub = journal.subscribe(second);
    let dropped_sub = journal.subscribe(dropped);
    // Listeners that throw or panic never turn a committed write into an error.
    let _throws = journal.subscribe(Arc::new(Throws));
    let _panics = journal.subscribe(Arc::new(Panics));
    drop(dropped_sub);

    let id = wait(journal.add(share("heard"), None)).expect("a committed write succeeds");
    for rx in [&first_rx, &second_rx] {
        let (thread, change) = rx.recv_timeout(DELIVERY).expect("delivered");
        assert_eq!(thread, CALLBACK_THREAD, "not on the callback thread");
        assert_eq!(
            change.records,
            vec![ChangedRecord {
                id: id.clone(),
                kind: Some(RecordKind::Share),
                removed: false,
            }]
        );
    }

    // Once cancelled, a subscription hears nothing more; the others go on.
    second_sub.cancel();
    assert!(!second_sub.is_active());
    wait(journal.remove(id.clone())).expect("remove");
    let (_, change) = first_rx.recv_timeout(DELIVERY).expect("delivered");
    assert_eq!(ids(&change), vec![id.clone()]);
    assert!(change.records[0].removed, "{change:?}");
    // The first subscription heard the removal, so anything queued for the others before it
    // has been delivered too: they heard nothing.
    assert!(
        second_rx.try_recv().is_err(),
        "a cancelled subscription heard a change"
    );
    assert!(
        dropped_rx.try_recv().is_err(),
        "a dropped subscription heard a change"
    );

    // The write went in once.
    let record = wait(journal.get(id)).expect("get");
    assert!(record.removed);
    let page = wait(journal.timeline(mend_ffi_api::TimelineQuery {
        kinds: vec![],
        author: None,
        from_ms: None,
        to_ms: None,
        include_removed: true,
        limit: 0,
        cursor: None,
    }))
    .expect("timeline");
    assert_eq!(page.items.len(), 1);
}

#[test]
fn a_private_note_shared_reads_as_one_change_per_space() {
    let dir = tempfile::tempdir().expect("dir");
    let journal = created(&dir);
    let (heard, rx) = Heard::new();
    let _sub = journal.subscribe(heard);
    let note = wait(journal.add(
        RecordBody::ProcessingNote {
            value: ProcessingNote {
                text: "mine".into(),
            },
        },
        None,
    ))
    .expect("add");
    let (_, change) = rx.recv_timeout(DELIVERY).expect("delivered");
    assert_eq!(change.records[0].kind, Some(RecordKind::ProcessingNote));
    wait(journal.share(note.clone())).expect("share");
    let (_, change) = rx.recv_timeout(DELIVERY).expect("delivered");
    assert_eq!(ids(&change), vec![note]);
}

#[test]
fn shutdown_releases_the_journal_and_it_reopens_in_the_same_process() {
    let dir = tempfile::tempdir().expect("dir");
    let path = dir.path().join("j.db").display().to_string();
    let journal = wait(Journal::create(
        path.clone(),
        "Alex".into(),
        RELAY.into(),
        JournalOptions {
            time_zone: Some("Australia/Sydney".into()),
            week_starts: Some("sunday".into()),
            ..JournalOptions::default()
        },
    ))
    .expect("create");
    let secret = journal.keyring_secret().expect("secret");
    let id = wait(journal.add(share("kept"), None)).expect("add");

    // While it is open, a second open is refused with `locked`.
    let second = wait(Journal::open(
        path.clone(),
        secret.clone(),
        JournalOptions::default(),
    ));
    assert!(
        matches!(&second, Err(e) if e.code() == "locked"),
        "{second:?}"
    );

    journal.start_live().expect("live");
    wait(journal.shutdown()).expect("shutdown");
    assert!(!journal.is_live());
    let after = wait(journal.get(id.clone()));
    assert!(
        matches!(&after, Err(e) if e.code() == "closed"),
        "{after:?}"
    );
    wait(journal.shutdown()).expect("closing again does nothing");

    let reopened = wait(Journal::open(path, secret, JournalOptions::default())).expect("reopen");
    assert_eq!(wait(reopened.get(id)).expect("get").id.len(), 36);
}

#[test]
fn errors_say_missing_corrupt_and_invalid_with_stable_codes() {
    let dir = tempfile::tempdir().expect("dir");
    let secret = {
        let path = dir.path().join("a.db").display().to_string();
        let journal = wait(Journal::create(
            path,
            "Alex".into(),
            RELAY.into(),
            JournalOptions::default(),
        ))
        .expect("create");
        journal.keyring_secret().expect("secret")
    };

    let missing = dir.path().join("gone.db").display().to_string();
    let e = wait(Journal::open(
        missing.clone(),
        secret.clone(),
        JournalOptions::default(),
    ))
    .expect_err("missing");
    assert!(matches!(e, MendError::Missing(_)), "{e:?}");
    assert_eq!(e.code(), "missing");
    assert!(
        !std::path::Path::new(&missing).exists(),
        "open created a file"
    );

    let garbage = dir.path().join("garbage.db");
    std::fs::write(&garbage, vec![0x5a; 8192]).expect("write");
    let e = wait(Journal::open(
        garbage.display().to_string(),
        secret.clone(),
        JournalOptions::default(),
    ))
    .expect_err("corrupt");
    assert_eq!(e.code(), "corrupt", "{e:?}");
    // The damaged file is left as it was.
    assert_eq!(std::fs::read(&garbage).expect("read"), vec![0x5a; 8192]);

    // A sound journal the device cannot open now (here its lock cannot be made; on a phone,
    // a full disk or a file protected while locked) is `io`, not `corrupt`: nothing to
    // recover, try again later.
    let sound = dir.path().join("sound.db");
    std::fs::copy(dir.path().join("a.db"), &sound).expect("copy");
    std::fs::create_dir(dir.path().join("sound.db.lock")).expect("dir");
    let e = wait(Journal::open(
        sound.display().to_string(),
        secret.clone(),
        JournalOptions::default(),
    ))
    .expect_err("io");
    assert_eq!(e.code(), "io", "{e:?}");

    let bad_zone = dir.path().join("z.db").display().to_string();
    let e = wait(Journal::create(
        bad_zone.clone(),
        "Alex".into(),
        RELAY.into(),
        JournalOptions {
            time_zone: Some("Mars/Olympus".into()),
            week_starts: None,
            ..JournalOptions::default()
        },
    ))
    .expect_err("bad zone");
    assert_eq!(e.code(), "invalid", "{e:?}");
    assert!(
        !std::path::Path::new(&bad_zone).exists(),
        "a bad option created a file"
    );
}

#[test]
fn every_error_has_a_distinct_code_and_the_shipped_tables_list_them_all() {
    let codes = MendError::CODES;
    let mut unique = codes.to_vec();
    unique.sort_unstable();
    unique.dedup();
    assert_eq!(unique.len(), codes.len());
    let root = env!("CARGO_MANIFEST_DIR");
    for file in [
        "swift/MendError+LocalizedError.swift",
        "kotlin/MendErrors.kt",
    ] {
        let text = std::fs::read_to_string(format!("{root}/{file}")).expect(file);
        for code in codes {
            assert!(text.contains(&format!("\"{code}\"")), "{file} lacks {code}");
        }
        assert_eq!(
            text.matches("-> \"").count() + text.matches("return \"").count(),
            codes.len(),
            "{file} lists a code the library does not have"
        );
    }
}

struct Lines(Mutex<Sender<LogRecord>>);

impl LogSink for Lines {
    fn log(&self, record: LogRecord) -> Result<(), ListenerError> {
        let _ = self.0.lock().expect("sender").send(record);
        Ok(())
    }
}

#[test]
fn the_logger_hears_a_throwing_listener_by_kind_without_its_message() {
    let (tx, rx) = mpsc::channel();
    set_logger(LogLevel::Warn, Some(Arc::new(Lines(Mutex::new(tx))))).expect("logger");
    assert!(!mend_ffi_api::version().is_empty());
    let dir = tempfile::tempdir().expect("dir");
    let journal = created(&dir);
    let _throws = journal.subscribe(Arc::new(Throws));
    let (statuses, _status_rx) = mpsc::channel();
    let _status = journal.subscribe_status(Arc::new(Statuses(Mutex::new(statuses))));
    wait(journal.add(share("a feeling nobody logs"), None)).expect("add");
    let line = loop {
        let line = rx.recv_timeout(DELIVERY).expect("logged");
        if line.message.contains("listener") {
            break line;
        }
    };
    assert_eq!(line.level, LogLevel::Warn);
    assert!(line.message.contains("journal"), "{line:?}");
    assert!(
        !line.message.contains("boom"),
        "the listener's message was logged"
    );
    assert!(!line.message.contains("feeling"), "journal text was logged");
    set_logger(LogLevel::Error, None).expect("stop forwarding");
}

/// A journal at `path`, made with `options`, holding one record, shut down with its couple
/// document damaged (its read model is not, so it still opens): its keyring secret and the
/// record's id.
fn damaged(path: &str, options: JournalOptions) -> (String, RecordId) {
    let journal = wait(Journal::create(
        path.to_owned(),
        "Alex".into(),
        RELAY.into(),
        options,
    ))
    .expect("create");
    let secret = journal.keyring_secret().expect("secret");
    let id = wait(journal.add(share("kept"), None)).expect("add");
    wait(journal.shutdown()).expect("shutdown");
    let db = rusqlite::Connection::open(path).expect("sqlite");
    db.execute(
        "UPDATE doc_snapshots SET bytes = x'00ff00ff' WHERE space = 'couple'",
        [],
    )
    .expect("damage");
    (secret, id)
}

#[test]
fn a_damaged_document_still_reads_and_ready_says_corrupt() {
    let dir = tempfile::tempdir().expect("dir");
    let path = dir.path().join("j.db").display().to_string();
    let (secret, id) = damaged(&path, JournalOptions::default());
    let journal = wait(Journal::open(path, secret, JournalOptions::default())).expect("open");
    assert_eq!(
        wait(journal.get(id.clone())).expect("reads still work").id,
        id
    );
    let ready = wait(journal.ready());
    assert!(
        matches!(&ready, Err(e) if e.code() == "corrupt"),
        "{ready:?}"
    );
}

/// An app passes its device name at every launch. On a damaged document the journal still
/// opens and reads with it (before, the name made `open` wait for the documents and fail
/// `corrupt`); a new name is kept for when it can be written.
#[test]
fn a_device_name_does_not_make_a_damaged_journal_unopenable() {
    let dir = tempfile::tempdir().expect("dir");
    let path = dir.path().join("j.db").display().to_string();
    let named = |name: &str| JournalOptions {
        device_name: Some(name.into()),
        ..JournalOptions::default()
    };
    let (secret, id) = damaged(&path, named("Alex's phone"));
    for name in ["Alex's phone", "Alex's new phone"] {
        let journal = wait(Journal::open(path.clone(), secret.clone(), named(name)))
            .unwrap_or_else(|e| panic!("open as {name:?}: {e:?}"));
        assert_eq!(
            wait(journal.get(id.clone())).expect("reads still work").id,
            id
        );
        let ready = wait(journal.ready());
        assert!(
            matches!(&ready, Err(e) if e.code() == "corrupt"),
            "{ready:?}"
        );
        wait(journal.shutdown()).expect("shutdown");
    }
}
