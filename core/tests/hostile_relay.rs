//! Numbers the relay chooses reach the engine as they are: it must not trust them. (More of the
//! hostile relay lives in the simulation, `sync_sim.rs`.)

use anyhow::{Result, ensure};
use mend_core::{
    Journal, Space,
    crypto::SpaceSecret,
    sync::{
        Action, Event, Failure, Mode, ProblemKind, Request, Response, SpaceLink, SyncEngine,
        SyncStore,
    },
};
use mend_protocol::ErrorCode;

const NOW: i64 = 1_800_000_000_000;

fn engine(journal: &Journal) -> Result<SyncEngine> {
    engine_for(journal, Space::Couple)
}

fn engine_for(journal: &Journal, space: Space) -> Result<SyncEngine> {
    let link = SpaceLink {
        space,
        keys: SpaceSecret::generate()?.derive_keys(),
    };
    Ok(SyncEngine::new(
        *journal.device().as_bytes(),
        vec![link],
        Mode::Once,
        7,
    ))
}

#[test]
fn a_retry_after_near_the_largest_number_waits_a_bounded_time_and_never_panics() -> Result<()> {
    let dir = tempfile::tempdir()?;
    let mut journal = Journal::create(&dir.path().join("j.db"), "Alex")?;
    for retry_after_ms in [u64::MAX, i64::MAX as u64, i64::MAX as u64 - 1] {
        let mut engine = engine(&journal)?;
        let actions = engine.handle(&mut journal, NOW, Event::Start)?;
        ensure!(
            actions
                .iter()
                .any(|a| matches!(a, Action::Send(Request::Create { .. }))),
            "the round did not start: {actions:?}"
        );
        let refused = Response::Failed {
            space: Space::Couple,
            failure: Failure::Refused {
                code: ErrorCode::RateLimited,
                retry_after_ms,
            },
        };
        engine.handle(&mut journal, NOW, Event::Response(refused))?;
        let wake = engine.next_wake().unwrap_or(i64::MAX);
        ensure!(
            wake > NOW && wake <= NOW + 60 * 60 * 1000,
            "retry at {wake} for a relay that asked for {retry_after_ms} ms"
        );
        // Time passes to the wake-up: the next round starts, nothing overflows.
        engine.handle(&mut journal, wake, Event::Tick)?;
    }
    ensure!(
        journal.pending_changes(Space::Couple)? > 0,
        "nothing was lost"
    );
    Ok(())
}

/// A full relay (`relay_full`, 507) answered: the device is online, shows the refusal by its
/// code, waits the relay's hint before asking again, and keeps its edit for later.
#[test]
fn a_full_relay_is_an_answer_the_device_waits_out_with_its_edits_kept() -> Result<()> {
    let dir = tempfile::tempdir()?;
    let mut journal = Journal::create(&dir.path().join("j.db"), "Alex")?;
    let mut engine = engine(&journal)?;
    engine.handle(&mut journal, NOW, Event::Start)?;
    let full = Response::Failed {
        space: Space::Couple,
        failure: Failure::Refused {
            code: ErrorCode::RelayFull,
            retry_after_ms: 60_000,
        },
    };
    engine.handle(&mut journal, NOW, Event::Response(full))?;
    let status = engine.status();
    ensure!(status.online, "an answering relay is not out of reach");
    ensure!(
        status
            .problems
            .iter()
            .any(|p| matches!(&p.kind, mend_core::sync::ProblemKind::Refused { code } if code == "relay_full")),
        "no relay_full problem: {:?}",
        status.problems
    );
    let wake = engine.next_wake().unwrap_or(i64::MAX);
    ensure!(
        wake >= NOW + 60_000,
        "asked again at {wake}, before the relay's hint"
    );
    ensure!(
        journal.pending_changes(Space::Couple)? > 0,
        "the edit was dropped"
    );
    Ok(())
}

/// A relay that answers `space_erased` with no erase marker of a partner's in the documents
/// (it lost the space, or lies) stops that space's sync, but does not make the journal erased:
/// writes go on, they are kept, and nothing says a partner erased it, after a reopen too.
#[test]
fn a_relay_cannot_erase_a_journal_by_saying_so() -> Result<()> {
    let dir = tempfile::tempdir()?;
    let path = dir.path().join("j.db");
    let mut journal = Journal::create(&path, "Alex")?;
    for space in [Space::Personal, Space::Couple] {
        let mut engine = engine_for(&journal, space)?;
        engine.handle(&mut journal, NOW, Event::Start)?;
        let erased = Response::Failed {
            space,
            failure: Failure::Refused {
                code: ErrorCode::SpaceErased,
                retry_after_ms: 0,
            },
        };
        engine.handle(&mut journal, NOW, Event::Response(erased))?;
        let kinds: Vec<_> = engine.status().problems.iter().map(|p| &p.kind).collect();
        ensure!(
            kinds.iter().any(|k| matches!(k, ProblemKind::SpaceGone))
                && !kinds
                    .iter()
                    .any(|k| matches!(k, ProblemKind::Erased { .. })),
            "{kinds:?}"
        );
        ensure!(
            journal.erasure()?.is_none(),
            "the journal took the relay's word"
        );
    }
    drop(journal);
    let mut journal = Journal::open(&path)?;
    ensure!(journal.erasure()?.is_none(), "erased after a reopen");
    let before =
        journal.pending_changes(Space::Personal)? + journal.pending_changes(Space::Couple)?;
    journal.add(mend_core::Body::ProcessingNote(
        mend_core::model::ProcessingNote {
            text: "still writing".into(),
        },
    ))?;
    let after =
        journal.pending_changes(Space::Personal)? + journal.pending_changes(Space::Couple)?;
    ensure!(
        after > before,
        "the write was not kept to push: {before} then {after}"
    );
    Ok(())
}
