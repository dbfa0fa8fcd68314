//! A journal shared with an app extension: the app and the extension each open it with
//! `extension_mode` and keep it open; each sees what the other wrote. (Two processes, syncing,
//! are tested in `mend-e2e`'s `extension` test.)

use std::{future::Future, sync::Arc};

use mend_ffi_api::{Journal, JournalOptions, RecordBody, Share};

const RELAY: &str = "http://127.0.0.1:9";

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

/// A journal made by the app and opened beside it by its extension, both in extension mode.
fn app_and_extension(dir: &tempfile::TempDir) -> (Arc<Journal>, Arc<Journal>) {
    let path = dir.path().join("j.db").display().to_string();
    let options = JournalOptions {
        extension_mode: true,
        ..JournalOptions::default()
    };
    let app = wait(Journal::create(
        path.clone(),
        "Alex".into(),
        RELAY.into(),
        options.clone(),
    ))
    .expect("create");
    let secret = app.keyring_secret().expect("secret");
    let extension = wait(Journal::open(path, secret, options)).expect("open beside the app");
    (app, extension)
}

#[test]
fn an_app_and_its_extension_keep_one_journal_open_in_extension_mode() {
    let dir = tempfile::tempdir().expect("dir");
    let (app, extension) = app_and_extension(&dir);

    let from_app = wait(app.add(share("from the app"), None)).expect("the app writes");
    let from_extension =
        wait(extension.add(share("from the extension"), None)).expect("the extension writes");
    let again = wait(app.add(share("the app again"), None)).expect("the app writes again");
    for id in [&from_app, &from_extension, &again] {
        wait(app.get(id.clone())).expect("the app reads every write");
        wait(extension.get(id.clone())).expect("the extension reads every write");
    }
    wait(extension.shutdown()).expect("the extension closes");
    wait(app.shutdown()).expect("the app closes");
}

/// Sends the ids of each change to the test.
struct Heard(std::sync::Mutex<std::sync::mpsc::Sender<Vec<String>>>);

impl mend_ffi_api::JournalListener for Heard {
    fn on_change(
        &self,
        change: mend_ffi_api::JournalChange,
    ) -> Result<(), mend_ffi_api::ListenerError> {
        let ids = change.records.iter().map(|r| r.id.to_string()).collect();
        if let Ok(tx) = self.0.lock() {
            let _ = tx.send(ids);
        }
        Ok(())
    }
}

/// The extension writes a check-in while the app is open: the app's listeners hear of it at
/// the app's next step, not only of what the app wrote itself.
#[test]
fn the_apps_listeners_hear_of_what_its_extension_wrote() {
    let dir = tempfile::tempdir().expect("dir");
    let (app, extension) = app_and_extension(&dir);
    let (tx, rx) = std::sync::mpsc::channel();
    let _subscription = app.subscribe(std::sync::Arc::new(Heard(std::sync::Mutex::new(tx))));

    let from_extension =
        wait(extension.add(share("from the extension"), None)).expect("the extension writes");
    let from_app = wait(app.add(share("from the app"), None)).expect("the app writes");
    let mut heard = Vec::new();
    while !heard.contains(&from_app.to_string()) {
        let ids = rx
            .recv_timeout(std::time::Duration::from_secs(10))
            .expect("delivered");
        heard.extend(ids);
    }
    assert!(
        heard.contains(&from_extension.to_string()),
        "the app's listener never heard of the extension's write: {heard:?}"
    );

    // And when the app's next step is a sync round's (here against no relay at all).
    let again = wait(extension.add(share("the extension again"), None)).expect("writes");
    let _ = wait(app.sync_now(300));
    let ids = rx
        .recv_timeout(std::time::Duration::from_secs(10))
        .expect("the app's listener never heard of the extension's second write");
    assert!(ids.contains(&again.to_string()), "{ids:?}");
    wait(extension.shutdown()).expect("the extension closes");
    wait(app.shutdown()).expect("the app closes");
}
