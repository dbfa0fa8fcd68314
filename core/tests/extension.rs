//! Extension locking mode: two writers on one database (an app and its extension), each
//! holding the file lock only around a step. Two handles in one process stand in for two
//! processes here (the lock is per open file); `mend-e2e`'s `extension` test uses processes.

use std::time::Duration;

use anyhow::{Result, ensure};
use mend_core::{
    Body, Error, Journal, LockMode, RecordId, Space,
    crypto::SpaceSecret,
    journal::OpenOptions,
    model::Share,
    store::Durability,
    sync::{Action, Event, Mode, Request, Response, SpaceLink, SyncEngine},
};
use mend_protocol::{Ack, Page};

fn extension(wait: Duration) -> OpenOptions {
    OpenOptions {
        durability: Durability::Normal,
        lock: LockMode::Extension { wait },
        ..OpenOptions::default()
    }
}

fn share(feeling: &str) -> Body {
    Body::Share(Share {
        feeling: feeling.into(),
        tough_question: false,
    })
}

#[test]
fn two_writers_in_extension_mode_take_turns_and_lose_nothing() -> Result<()> {
    let dir = tempfile::tempdir()?;
    let path = dir.path().join("j.db");
    let opts = extension(LockMode::EXTENSION_WAIT);
    let mut app = Journal::create_with(&path, "Alex", opts)?;
    let mut ext = Journal::open_with(&path, opts)?;

    let mut ids: Vec<RecordId> = Vec::new();
    for n in 0..4 {
        ids.push(app.add(share(&format!("app {n}")))?);
        ids.push(ext.add(share(&format!("extension {n}")))?);
    }
    // The app removes what the extension wrote last: its document must hold it by now.
    let last = ids[ids.len() - 1];
    app.remove(last)?;
    ensure!(
        ext.get(last)?.removed,
        "the removal did not reach the record"
    );

    // Both documents hold every change, whoever made it.
    app.step(|_| Ok(()))?;
    ext.step(|_| Ok(()))?;
    for space in Space::ALL {
        ensure!(app.heads(space)? == ext.heads(space)?, "documents differ");
    }
    let heads = app.heads(Space::Couple)?;

    // Compacting from one process keeps the other's changes.
    ext.compact()?;
    drop(app);
    drop(ext);
    let reopened = Journal::open(&path)?;
    reopened.ready()?;
    ensure!(reopened.heads(Space::Couple)? == heads, "a change was lost");
    for id in &ids {
        reopened.get(*id)?;
    }
    ensure!(reopened.get(last)?.removed);
    Ok(())
}

#[test]
fn a_step_waits_for_the_other_writer_then_reports_locked() -> Result<()> {
    let dir = tempfile::tempdir()?;
    let path = dir.path().join("j.db");
    let mut app = Journal::create_with(&path, "Alex", extension(LockMode::EXTENSION_WAIT))?;
    let mut ext = Journal::open_with(&path, extension(Duration::from_millis(50)))?;

    let blocked = app.step(|_| Ok(ext.add(share("while the app writes"))))?;
    ensure!(matches!(blocked, Err(Error::Locked(_))), "{blocked:?}");
    // Once the app's step is over, the extension's write goes through.
    let id = ext.add(share("after"))?;
    ensure!(app.get(id)?.author == app.me());

    // An exclusive writer keeps the lock: an extension-mode writer beside it gets `Locked`.
    drop(app);
    let exclusive = Journal::open(&path)?;
    let refused = ext.add(share("beside an exclusive writer"));
    ensure!(matches!(refused, Err(Error::Locked(_))), "{refused:?}");
    drop(exclusive);
    ext.add(share("alone again"))?;
    Ok(())
}

/// One event into an engine, as the client feeds it: inside a step.
fn feed(journal: &mut Journal, engine: &mut SyncEngine, event: Event) -> Result<Vec<Action>> {
    Ok(journal.step(|j| engine.handle(j, NOW, event))?)
}

const NOW: i64 = 1_800_000_000_000;

fn page(after: u64, head: u64) -> Event {
    Event::Response(Response::Page {
        space: Space::Couple,
        after,
        // Each engine's first pull.
        id: 1,
        page: Page {
            head,
            next_after: head,
            more: false,
            after_mark: None,
            next_mark: None,
            chunks: Vec::new(),
            rollups: Vec::new(),
        },
    })
}

/// The app's and the extension's engines for one device's couple space, and the relay's
/// answer to their create.
fn two_engines(app: &Journal) -> Result<(SyncEngine, SyncEngine, Event)> {
    let link = SpaceLink {
        space: Space::Couple,
        keys: SpaceSecret::generate()?.derive_keys(),
    };
    let device = *app.device().as_bytes();
    let created = Event::Response(Response::Created {
        space: Space::Couple,
        new: true,
    });
    Ok((
        SyncEngine::new(device, vec![link.clone()], Mode::Once, 1),
        SyncEngine::new(device, vec![link], Mode::Once, 2),
        created,
    ))
}

#[test]
fn an_engine_counts_what_the_other_process_pushed_meanwhile() -> Result<()> {
    let dir = tempfile::tempdir()?;
    let path = dir.path().join("j.db");
    let opts = extension(LockMode::EXTENSION_WAIT);
    let mut app = Journal::create_with(&path, "Alex", opts)?;
    let mut ext = Journal::open_with(&path, opts)?;
    app.add(share("to push"))?;
    let (mut app_engine, mut ext_engine, created) = two_engines(&app)?;

    // The extension's round has started and pulls...
    feed(&mut ext, &mut ext_engine, Event::Start)?;
    feed(&mut ext, &mut ext_engine, created.clone())?;
    // ...while the app's round pushes everything and finishes.
    feed(&mut app, &mut app_engine, Event::Start)?;
    feed(&mut app, &mut app_engine, created)?;
    let sent = feed(&mut app, &mut app_engine, page(0, 0))?;
    ensure!(
        sent.iter()
            .any(|a| matches!(a, Action::Send(Request::Push { .. }))),
        "{sent:?}"
    );
    let acked = Event::Response(Response::Acked {
        space: Space::Couple,
        ack: Ack {
            device_seq: 1,
            relay_seq: 1,
            duplicate: false,
        },
    });
    feed(&mut app, &mut app_engine, acked)?;
    ensure!(app_engine.is_settled() && app_engine.status().pending == 0);

    // The extension's pull comes back (the relay withholds the device's own chunk): nothing is
    // left to push, and its status says so rather than what it counted at the start.
    feed(&mut ext, &mut ext_engine, page(0, 1))?;
    ensure!(ext_engine.is_settled(), "{:?}", ext_engine.status());
    ensure!(
        ext_engine.status().pending == 0,
        "pending {}",
        ext_engine.status().pending
    );
    ensure!(ext_engine.status().problems.is_empty());
    Ok(())
}

#[test]
fn a_late_fresh_answer_for_a_batch_the_other_process_moved_past_is_no_rewind() -> Result<()> {
    let dir = tempfile::tempdir()?;
    let path = dir.path().join("j.db");
    let opts = extension(LockMode::EXTENSION_WAIT);
    let mut app = Journal::create_with(&path, "Alex", opts)?;
    let mut ext = Journal::open_with(&path, opts)?;
    let (mut app_engine, mut ext_engine, created) = two_engines(&app)?;
    let acked = |device_seq, relay_seq, duplicate| {
        Event::Response(Response::Acked {
            space: Space::Couple,
            ack: Ack {
                device_seq,
                relay_seq,
                duplicate,
            },
        })
    };

    // The extension pushes batch 1...
    ext.add(share("one"))?;
    feed(&mut ext, &mut ext_engine, Event::Start)?;
    feed(&mut ext, &mut ext_engine, created.clone())?;
    feed(&mut ext, &mut ext_engine, page(0, 0))?;
    // ...and so does the app, which hears "duplicate" first, then pushes batch 2, stored next.
    app.add(share("two"))?;
    feed(&mut app, &mut app_engine, Event::Start)?;
    feed(&mut app, &mut app_engine, created)?;
    feed(&mut app, &mut app_engine, page(0, 0))?;
    feed(&mut app, &mut app_engine, acked(1, 1, true))?;
    feed(&mut app, &mut app_engine, acked(2, 2, false))?;
    ensure!(app_engine.is_settled() && app_engine.status().pending == 0);

    // The extension's own answer for batch 1 ("stored at 1", its push came first) lands only
    // now: below where batch 2 went, but for an older number. Late, not a relay gone back.
    feed(&mut ext, &mut ext_engine, acked(1, 1, false))?;
    ensure!(
        ext_engine.status().problems.is_empty(),
        "{:?}",
        ext_engine.status().problems
    );
    ensure!(
        ext_engine.status().pending == 0,
        "{:?}",
        ext_engine.status()
    );
    Ok(())
}
