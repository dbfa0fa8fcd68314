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

/// The requests among `actions`, taken out of them.
fn sent(actions: &mut Vec<Action>) -> Vec<Request> {
    actions
        .drain(..)
        .filter_map(|a| match a {
            Action::Send(request) => Some(request),
            _ => None,
        })
        .collect()
}

/// A live engine for `journal`'s couple space.
fn live_engine(journal: &Journal) -> Result<SyncEngine> {
    let link = SpaceLink {
        space: Space::Couple,
        keys: SpaceSecret::generate()?.derive_keys(),
    };
    Ok(SyncEngine::new(
        *journal.device().as_bytes(),
        vec![link],
        Mode::Live,
        7,
    ))
}

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

/// A relay (or someone resetting connections on the path) that lets every live subscription
/// come up to date and then cuts it a second later: the device waits longer and longer
/// between tries, as after any failure. Before, coming up to date counted as success and
/// reset the wait, so the device reconnected every second or two for as long as it went on.
#[test]
fn subscriptions_cut_soon_after_they_come_up_to_date_are_retried_ever_later() -> Result<()> {
    let dir = tempfile::tempdir()?;
    let mut journal = Journal::create(&dir.path().join("j.db"), "Alex")?;
    let mut engine = live_engine(&journal)?;
    let mut now = NOW;
    let mut head = 0u64;
    let mut actions = engine.handle(&mut journal, now, Event::Start)?;
    let mut waits = Vec::new();
    for _ in 0..10 {
        // The relay answers whatever is asked until the subscription is up to date and
        // nothing more goes out.
        let mut subscribed = false;
        for _ in 0..50 {
            let requests = sent(&mut actions);
            if requests.is_empty() {
                break;
            }
            for request in requests {
                let response = match request {
                    Request::Create { space } => Response::Created { space, new: false },
                    Request::Subscribe { space, .. } => {
                        subscribed = true;
                        Response::UpToDate {
                            space,
                            head,
                            after_mark: None,
                            head_mark: None,
                        }
                    }
                    Request::Push { space, push } => {
                        head += 1;
                        Response::Acked {
                            space,
                            ack: mend_protocol::Ack {
                                device_seq: push.device_seq,
                                relay_seq: head,
                                duplicate: false,
                            },
                        }
                    }
                    other => anyhow::bail!("not expected here: {other:?}"),
                };
                actions.extend(engine.handle(&mut journal, now, Event::Response(response))?);
            }
        }
        ensure!(subscribed, "the device never subscribed");
        ensure!(engine.status().online, "not online once up to date");
        // A second later the socket is cut.
        now += 1_000;
        let cut = Response::Failed {
            space: Space::Couple,
            failure: Failure::Unreachable,
        };
        actions = engine.handle(&mut journal, now, Event::Response(cut))?;
        let wake = engine.next_wake().unwrap_or(i64::MAX);
        waits.push(wake.saturating_sub(now));
        now = wake;
        actions.extend(engine.handle(&mut journal, now, Event::Tick)?);
    }
    let last = waits.last().copied().unwrap_or(0);
    ensure!(
        last >= 10_000,
        "after ten cuts the device still tries again within {last} ms: {waits:?}"
    );
    Ok(())
}

/// A relay that never says the live backlog is over and sends, again and again, a chunk the
/// device already has: catching up has its time renewed only by chunks that move the cursor,
/// so the subscription is cut at the deadline and the device shows offline. Before, each old
/// chunk renewed it, and the device stayed "online" with its own edits never going out.
#[test]
fn a_live_backlog_that_never_moves_is_cut_at_its_deadline() -> Result<()> {
    let dir = tempfile::tempdir()?;
    let mut journal = Journal::create(&dir.path().join("j.db"), "Alex")?;
    let mut engine = live_engine(&journal)?;
    let mut now = NOW;
    let mut actions = engine.handle(&mut journal, now, Event::Start)?;
    let mut subscribed = false;
    for _ in 0..10 {
        let requests = sent(&mut actions);
        for request in requests {
            match request {
                Request::Create { space } => actions.extend(engine.handle(
                    &mut journal,
                    now,
                    Event::Response(Response::Created { space, new: false }),
                )?),
                Request::Subscribe { .. } => subscribed = true,
                other => anyhow::bail!("not expected here: {other:?}"),
            }
        }
    }
    ensure!(subscribed, "the device never subscribed");
    // The same chunk (one the device cannot open: a stranger's) over and over, every 10 s.
    let old = || Response::Chunk {
        space: Space::Couple,
        chunk: mend_protocol::Chunk {
            relay_seq: 1,
            device_id: mend_protocol::DeviceId([9; 16]),
            device_seq: 1,
            payload: vec![0; 64],
        },
    };
    let mut resubscribed_at = None;
    for step in 0..12 {
        actions = engine.handle(&mut journal, now, Event::Response(old()))?;
        actions.extend(engine.handle(&mut journal, now, Event::Tick)?);
        if let Some(wake) = engine.next_wake()
            && wake <= now + 10_000
        {
            actions.extend(engine.handle(&mut journal, wake, Event::Tick)?);
        }
        if actions
            .iter()
            .any(|a| matches!(a, Action::Send(Request::Subscribe { .. })))
            || !engine.status().online
        {
            resubscribed_at = Some(step);
            break;
        }
        now += 10_000;
    }
    ensure!(
        resubscribed_at.is_some_and(|step| step <= 3),
        "the device kept catching up from a relay that sent nothing new: {resubscribed_at:?}"
    );
    Ok(())
}

/// A page whose rollup claims every number a device could have and fails its checks, beside a
/// chunk no one can open: nothing was applied, and the engine's count of chunks applied (what a
/// round reports as pulled) stays 0. Before, the round counted what the page claimed.
#[test]
fn chunks_and_rollups_refused_are_not_counted_as_pulled() -> Result<()> {
    let dir = tempfile::tempdir()?;
    let mut journal = Journal::create(&dir.path().join("j.db"), "Alex")?;
    let mut engine = engine(&journal)?;
    let mut actions = engine.handle(&mut journal, NOW, Event::Start)?;
    let mut served = 0;
    for _ in 0..20 {
        let requests = sent(&mut actions);
        if requests.is_empty() {
            break;
        }
        for request in requests {
            let response = match request {
                Request::Create { space } => Response::Created { space, new: false },
                Request::Push { space, push } => Response::Acked {
                    space,
                    ack: mend_protocol::Ack {
                        device_seq: push.device_seq,
                        relay_seq: 100 + push.device_seq,
                        duplicate: false,
                    },
                },
                Request::Pull {
                    space,
                    after,
                    id,
                    rollups,
                    ..
                } if served == 0 => {
                    served += 1;
                    let stranger = mend_protocol::DeviceId([9; 16]);
                    Response::Page {
                        space,
                        after,
                        id,
                        page: mend_protocol::Page {
                            head: 3,
                            next_after: 3,
                            more: false,
                            after_mark: None,
                            next_mark: None,
                            chunks: vec![mend_protocol::Chunk {
                                relay_seq: 3,
                                device_id: stranger,
                                device_seq: 1,
                                payload: vec![0; 64],
                            }],
                            rollups: if rollups {
                                vec![mend_protocol::Rollup {
                                    relay_seq: 1,
                                    last_relay_seq: 2,
                                    device_id: mend_protocol::DeviceId([8; 16]),
                                    first_seq: 1,
                                    last_seq: u64::MAX,
                                    payload: vec![0; 64],
                                }]
                            } else {
                                Vec::new()
                            },
                        },
                    }
                }
                Request::Pull { space, .. } => Response::Failed {
                    space,
                    failure: Failure::Unreachable,
                },
                other => Response::Failed {
                    space: other.space(),
                    failure: Failure::Unreachable,
                },
            };
            actions.extend(engine.handle(&mut journal, NOW, Event::Response(response))?);
        }
    }
    ensure!(served == 1, "the page was never asked for");
    ensure!(
        engine.applied() == 0,
        "{} chunks counted as applied; none was",
        engine.applied()
    );
    Ok(())
}
