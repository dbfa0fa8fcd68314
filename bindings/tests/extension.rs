//! A journal shared with an app extension: the app and the extension each open it with
//! `extension_mode` and keep it open; each sees what the other wrote. (Two processes, syncing,
//! are tested in `mend-e2e`'s `extension` test.)

use std::future::Future;

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

#[test]
fn an_app_and_its_extension_keep_one_journal_open_in_extension_mode() {
    let dir = tempfile::tempdir().expect("dir");
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
