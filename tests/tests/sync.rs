//! End to end over a real mend-relay on 127.0.0.1: two partners edit every kind of record while
//! apart and converge; live sync tells the observer; a device killed mid-sync resumes without
//! loss; a new device starts from a snapshot; an altered chunk is refused and reported; a live
//! backlog is merged in batches.

use std::time::Duration;

use anyhow::{Result, ensure};
use mend_core::{
    Body, LocalDate, Space, Visibility,
    model::*,
    query::BoundaryState,
    sync::{ProblemKind, SyncStore},
};
use mend_e2e::{Phone, Relay};

/// Today in UTC (the journals' calendar), plus `n` days: dates must lie near the journal's life.
fn day(n: i32) -> LocalDate {
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| i64::try_from(d.as_millis()).unwrap_or(i64::MAX));
    LocalDate::from_unix_ms(now, 0).add_days(n)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn partners_edit_every_kind_apart_and_converge() -> Result<()> {
    let dir = tempfile::tempdir()?;
    let relay = Relay::start(dir.path()).await?;
    let addr = relay.addr;
    let a = Phone::create(dir.path(), "a.db", "Alex", &relay)?;
    a.sync().await?;
    let invite = a.device.partner_invite()?;
    let b = Phone::join(dir.path(), "b.db", &invite, "Blake", &relay)?;
    b.sync().await?;
    ensure!(
        b.with(|j| Ok(j.partners().len()))? == 2,
        "B does not see both partners"
    );

    // Shared ground before they go apart.
    let question = a.with(|j| {
        j.add(Body::Question(Question {
            category: "timeline".into(),
            text: "When did it start?".into(),
            ..Default::default()
        }))
    })?;
    let share = a.with(|j| {
        j.add(Body::Share(Share {
            feeling: "I felt shut out".into(),
            tough_question: true,
        }))
    })?;
    let boundary = a.with(|j| {
        j.add(Body::Boundary(Boundary {
            area: BoundaryArea::Contact,
            text: "No contact with them".into(),
            ..Default::default()
        }))
    })?;
    let commitment = b.with(|j| {
        j.add(Body::Commitment(Commitment {
            text: "Phone at the door at 9".into(),
            cadence: Cadence::Daily,
            ..Default::default()
        }))
    })?;
    let need = a.with(|j| {
        j.add(Body::Need(Need {
            kind: NeedKind::AloneTime,
            text: "An hour alone on Sundays".into(),
            ..Default::default()
        }))
    })?;
    a.sync().await?;
    b.sync().await?;
    a.sync().await?;
    b.with(|j| j.consent(boundary, ConsentState::Agreed))?;
    b.sync().await?;
    a.sync().await?;

    // Apart: the relay is down while both write.
    relay.stop().await?;
    let offline = a.device.sync_now(Duration::from_secs(2)).await?;
    ensure!(
        !offline.online && offline.syncing,
        "a sync with the relay down claimed success: {offline:?}"
    );

    let mut ids = Vec::new();
    ids.push(a.with(|j| {
        j.add(Body::AccountabilityNote(AccountabilityNote {
            what_i_did: "I lied about the trips".into(),
            impact: "You stopped trusting plans".into(),
            amends: vec![],
        }))
    })?);
    ids.push(a.with(|j| {
        j.add(Body::DisclosurePreference(DisclosurePreference {
            topic: "the trips".into(),
            preference: DisclosureChoice::WantDetails,
        }))
    })?);
    ids.push(a.with(|j| {
        j.add(Body::CheckIn(CheckIn {
            local_date: Some(day(0)),
            safety: Some(4),
            trust: Some(3),
            connection: Some(5),
            note: Some("hard day".into()),
            ..Default::default()
        }))
    })?);
    ids.push(a.with(|j| {
        j.add(Body::HonestyMoment(HonestyMoment {
            kind: HonestyKind::VolunteeredTruth,
            text: "Told me about the message".into(),
            ..Default::default()
        }))
    })?);
    ids.push(a.with(|j| {
        j.add(Body::TriggerEvent(TriggerEvent {
            cue: "the song".into(),
            intensity: 7,
            sharing: TriggerSharing::Signal,
            wanted_response: WantedResponse::Reassure,
            ..Default::default()
        }))
    })?);
    ids.push(a.with(|j| {
        j.add(Body::PreAssurance(PreAssurance {
            occasion: "the conference".into(),
            date: Some(day(30)),
            plan: "Call every evening".into(),
        }))
    })?);
    let private_note = a.with(|j| {
        j.add(Body::ProcessingNote(ProcessingNote {
            text: "only for me".into(),
        }))
    })?;
    // A rewords the boundary B had agreed to: B's agreement no longer counts.
    a.with(|j| {
        let r = j.get(boundary)?;
        let Body::Boundary(mut bd) = r.body else {
            unreachable!("a boundary")
        };
        bd.text = "No contact with them, at all".into();
        j.edit(boundary, Body::Boundary(bd))
    })?;
    a.with(|j| j.confirm(commitment, day(0), PartnerView::Confirmed, "saw it"))?;

    ids.push(b.with(|j| {
        j.add(Body::Answer(Answer {
            question: Some(question),
            text: "In March".into(),
        }))
    })?);
    ids.push(b.with(|j| {
        j.add(Body::Reply(Reply {
            share: Some(share),
            kind: ReplyKind::Validate,
            text: "That makes sense".into(),
        }))
    })?);
    ids.push(b.with(|j| {
        j.add(Body::Validation(Validation {
            target: Some(share),
            text: "You were right to say it".into(),
        }))
    })?);
    ids.push(b.with(|j| {
        j.add(Body::CheckIn(CheckIn {
            local_date: Some(day(0)),
            safety: Some(7),
            private_fields: vec![CheckInField::Note],
            note: Some("b's private note".into()),
            ..Default::default()
        }))
    })?);
    b.with(|j| j.claim(commitment, day(0), ClaimStatus::Done, ""))?;
    b.with(|j| j.respond_to_need(need, NeedResponseKind::Receptive, "of course"))?;
    let pending = b.with(|j| j.pending_changes(Space::Couple))?;
    ensure!(pending > 0, "B's offline edits are not pending");

    // Back together.
    let relay = Relay::start_on(&dir.path().join("relay-data"), addr).await?;
    for _ in 0..2 {
        a.sync().await?;
        b.sync().await?;
    }
    let (a_shared, b_shared) = (
        a.with(|j| j.shared_records())?,
        b.with(|j| j.shared_records())?,
    );
    ensure!(
        a_shared == b_shared,
        "the partners' journals differ after sync"
    );
    for id in &ids {
        ensure!(a.with(|j| j.get(*id))?.id == *id, "A lacks {id}");
        ensure!(b.with(|j| j.get(*id))?.id == *id, "B lacks {id}");
    }
    ensure!(
        b.with(|j| Ok(j.get(private_note).is_err()))?,
        "B sees A's private note"
    );
    let status = b.with(|j| j.boundary_status())?;
    let s = status
        .iter()
        .find(|s| s.boundary.id == boundary)
        .ok_or_else(|| anyhow::anyhow!("no boundary"))?;
    ensure!(
        s.state == BoundaryState::Pending,
        "a reworded boundary still shows {:?}",
        s.state
    );
    let trigger = b.with(|j| j.get(ids[4]))?;
    let Body::TriggerEvent(t) = &trigger.body else {
        anyhow::bail!("not a trigger")
    };
    ensure!(
        t.cue.is_empty() && t.sharing == TriggerSharing::Signal,
        "B sees more than the signal"
    );
    let ci = a.with(|j| j.get(ids[9]))?;
    let Body::CheckIn(c) = &ci.body else {
        anyhow::bail!("not a check-in")
    };
    ensure!(
        c.note.is_none() && c.safety == Some(7),
        "A sees B's private check-in note"
    );
    ensure!(
        ci.visibility == Visibility::Shared,
        "a split check-in reads as shared"
    );
    ensure!(
        a.recorder.saw(ids[6]),
        "A's observer was not told about B's answer"
    );
    ensure!(
        b.with(|j| j.pending_changes(Space::Couple))? == 0,
        "B still has pending changes"
    );
    relay.stop().await?;
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn live_sync_reaches_the_partners_observer() -> Result<()> {
    let dir = tempfile::tempdir()?;
    let relay = Relay::start(dir.path()).await?;
    let (a, b) = mend_e2e::couple(dir.path(), &relay).await?;
    // Writes made through the device wake live sync by themselves: nothing here pokes it.
    a.device.start_live()?;
    b.device.start_live()?;
    ensure!(a.device.is_live() && b.device.is_live());
    let mut sent = Vec::new();
    for n in 0..5 {
        let id = a.with(|j| {
            j.add(Body::HonestyMoment(HonestyMoment {
                text: format!("moment {n}"),
                ..Default::default()
            }))
        })?;
        sent.push(id);
    }
    // Bounded wait for B's observer.
    let mut waited = 0;
    while !sent.iter().all(|id| b.recorder.saw(*id)) {
        ensure!(
            waited < 200,
            "B's observer did not hear of A's edits within 10 s"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
        waited += 1;
    }
    let reply = b.with(|j| {
        j.add(Body::HonestyMoment(HonestyMoment {
            text: "back to you".into(),
            ..Default::default()
        }))
    })?;
    let mut waited = 0;
    while !a.recorder.saw(reply) {
        ensure!(
            waited < 200,
            "A's observer did not hear of B's edit within 10 s"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
        waited += 1;
    }
    a.device.stop_live().await;
    b.device.stop_live().await;
    ensure!(!a.device.is_live(), "stopped live sync still says it runs");
    let statuses = a
        .recorder
        .statuses
        .lock()
        .map(|s| s.clone())
        .unwrap_or_default();
    ensure!(
        statuses.iter().any(|s| s.online),
        "A's status never showed online"
    );
    relay.stop().await?;
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_live_backlog_is_merged_in_batches_not_chunk_by_chunk() -> Result<()> {
    let dir = tempfile::tempdir()?;
    let relay = Relay::start(dir.path()).await?;
    let (a, b) = mend_e2e::couple(dir.path(), &relay).await?;
    // B is away while A writes, each edit pushed on its own (fewer than a snapshot's worth, so
    // B's catch-up is the chunks themselves).
    const N: usize = 200;
    let mut sent = Vec::new();
    for n in 0..N {
        sent.push(a.with(|j| {
            j.add(Body::HonestyMoment(HonestyMoment {
                text: format!("moment {n} while you were away"),
                ..Default::default()
            }))
        })?);
        a.sync().await?;
    }
    let before = b
        .recorder
        .notices
        .load(std::sync::atomic::Ordering::Relaxed);
    b.device.start_live()?;
    let mut waited = 0;
    while !sent.iter().all(|id| b.recorder.saw(*id)) {
        ensure!(
            waited < 600,
            "B's live catch-up did not bring A's edits within 30 s"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
        waited += 1;
    }
    b.device.stop_live().await;
    // One merge and commit (one notice) per chunk would be N; the backlog arrives faster than
    // it is applied, so batches hold many chunks each.
    let notices = b
        .recorder
        .notices
        .load(std::sync::atomic::Ordering::Relaxed)
        - before;
    ensure!(
        notices <= N / 4,
        "{notices} merges for a backlog of {N} chunks: applied chunk by chunk"
    );
    relay.stop().await?;
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_device_killed_mid_sync_resumes_without_loss() -> Result<()> {
    let dir = tempfile::tempdir()?;
    let relay = Relay::start(dir.path()).await?;
    let (mut a, b) = mend_e2e::couple(dir.path(), &relay).await?;
    let keyring = a.device.keyring().clone();
    let path = a.path.clone();
    let mut written = Vec::new();
    for round in 0..6u64 {
        for n in 0..40 {
            written.push(a.with(|j| {
                j.add(Body::Share(Share {
                    feeling: format!("round {round} entry {n}"),
                    tough_question: false,
                }))
            })?);
            // Small batches so a round has many pushes to cut through.
            if n % 5 == 4 {
                let client = a.device.client().clone();
                let cut = Duration::from_micros(200 + round * 700);
                let _ = tokio::time::timeout(cut, client.sync_now(Duration::from_secs(5))).await;
            }
        }
        // The device goes away with whatever was cut short (the step in flight finishes); reopen
        // from disk. A SIGKILL at any point is core/tests/crash.rs.
        a.device.close().await?;
        a = Phone::reopen(&path, keyring.clone(), &relay)?;
    }
    a.sync().await?;
    b.sync().await?;
    for id in &written {
        ensure!(
            b.with(|j| j.get(*id))?.id == *id,
            "B lacks {id} after A's crashes"
        );
    }
    let b_records = b.with(|j| j.records())?;
    let mut ids: Vec<_> = b_records.iter().map(|r| r.id).collect();
    ids.dedup();
    ensure!(
        ids.len() == b_records.len(),
        "duplicates after resumed pushes"
    );
    ensure!(
        a.with(|j| j.pending_changes(Space::Couple))? == 0,
        "A still has pending changes"
    );
    relay.stop().await?;
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_new_device_bootstraps_from_a_snapshot() -> Result<()> {
    let dir = tempfile::tempdir()?;
    let relay = Relay::start(dir.path()).await?;
    let a = Phone::create(dir.path(), "a.db", "Alex", &relay)?;
    a.device.client().set_snapshot_every(4);
    let mut ids = Vec::new();
    for n in 0..12 {
        ids.push(a.with(|j| {
            j.add(Body::Share(Share {
                feeling: format!("entry {n}"),
                tough_question: false,
            }))
        })?);
        a.sync().await?;
    }
    a.sync().await?;
    let covered = a.with(|j| Ok(j.sync_state(Space::Couple)?.snapshot_covers))?;
    ensure!(
        covered >= 4,
        "A never uploaded a snapshot (covers {covered})"
    );
    // A's second device joins with a device invite: both spaces, starting from the snapshot.
    let tablet = Phone::join(dir.path(), "a2.db", &a.device.device_invite()?, "", &relay)?;
    tablet.sync().await?;
    let state = tablet.with(|j| j.sync_state(Space::Couple))?;
    ensure!(
        state.snapshot_covers >= 4,
        "the tablet did not start from the snapshot: {state:?}"
    );
    for id in &ids {
        ensure!(
            tablet.with(|j| j.get(*id))?.id == *id,
            "the tablet lacks {id}"
        );
    }
    ensure!(
        tablet.with(|j| Ok(j.me()))? == a.with(|j| Ok(j.me()))?,
        "the tablet is not Alex's"
    );
    relay.stop().await?;
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_altered_chunk_is_refused_and_reported_and_the_rest_syncs() -> Result<()> {
    let dir = tempfile::tempdir()?;
    let relay = Relay::start(dir.path()).await?;
    let (a, b) = mend_e2e::couple(dir.path(), &relay).await?;
    let bad = a.with(|j| {
        j.add(Body::Share(Share {
            feeling: "to be altered".into(),
            tough_question: false,
        }))
    })?;
    a.sync().await?;
    // Flip a byte of the newest chunk in the relay's own storage.
    {
        let conn = rusqlite::Connection::open(relay.data_dir.join("relay.sqlite3"))?;
        conn.busy_timeout(Duration::from_secs(5))?;
        let (id, mut payload): (i64, Vec<u8>) = conn.query_row(
            "SELECT id, payload FROM chunks WHERE payload IS NOT NULL ORDER BY id DESC LIMIT 1",
            [],
            |r| Ok((r.get(0)?, r.get(1)?)),
        )?;
        let last = payload.len() - 1;
        payload[last] ^= 0x01;
        conn.execute(
            "UPDATE chunks SET payload = ?1 WHERE id = ?2",
            rusqlite::params![payload, id],
        )?;
    }
    let status = b.sync().await?;
    ensure!(
        b.with(|j| Ok(j.get(bad).is_err()))?,
        "B applied an altered chunk"
    );
    ensure!(
        status
            .problems
            .iter()
            .any(|p| matches!(p.kind, ProblemKind::Tampered { .. })),
        "the altered chunk was not reported: {:?}",
        status.problems
    );
    // Sync goes on: B's own edits still reach A.
    let from_b = b.with(|j| {
        j.add(Body::Share(Share {
            feeling: "still syncing".into(),
            tough_question: false,
        }))
    })?;
    b.sync().await?;
    a.sync().await?;
    ensure!(
        a.with(|j| j.get(from_b))?.id == from_b,
        "A did not get B's edit after the tampering"
    );
    relay.stop().await?;
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_space_deleted_at_the_relay_stops_syncing_and_cannot_be_brought_back() -> Result<()> {
    let dir = tempfile::tempdir()?;
    let relay = Relay::start(dir.path()).await?;
    let (a, b) = mend_e2e::couple(dir.path(), &relay).await?;
    b.with(|j| {
        j.add(Body::Share(Share {
            feeling: "before the end".into(),
            tough_question: false,
        }))
    })?;
    a.device.erase_remote().await?;
    let status = b.device.sync_now(Duration::from_secs(10)).await?;
    ensure!(
        status
            .problems
            .iter()
            .any(|p| matches!(p.kind, ProblemKind::SpaceGone)),
        "B was not told the space is gone: {status:?}"
    );
    ensure!(!status.syncing, "B keeps retrying a space that is gone");
    // No erase marker came: the relay's word makes nothing erased here.
    ensure!(b.read(|j| j.erasure())?.is_none(), "B's journal is erased");
    // The couple's space did not come back (only B's own personal space remains).
    let couple_id = a.device.keyring().couple.derive_space_id();
    let conn = rusqlite::Connection::open(relay.data_dir.join("relay.sqlite3"))?;
    let back: i64 = conn.query_row(
        "SELECT COUNT(*) FROM spaces WHERE space_id = ?1",
        [&couple_id[..]],
        |r| r.get(0),
    )?;
    ensure!(back == 0, "the erased couple's space is back at the relay");
    relay.stop().await?;
    Ok(())
}

/// The one story left in clear text: every other test here talks TLS. A relay on this machine
/// over `http://` needs no opt-in on the device, for rounds and live sync alike.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn plain_http_on_loopback_still_syncs_without_an_opt_in() -> Result<()> {
    let dir = tempfile::tempdir()?;
    let relay = Relay::start_plain(dir.path()).await?;
    ensure!(relay.url().starts_with("http://127.0.0.1:"));
    let (a, b) = mend_e2e::couple(dir.path(), &relay).await?;
    let first = a.with(|j| {
        j.add(Body::Share(Share {
            feeling: "in clear, on this machine".into(),
            tough_question: false,
        }))
    })?;
    a.sync().await?;
    b.sync().await?;
    ensure!(b.with(|j| j.get(first))?.id == first, "B lacks A's share");

    a.device.start_live()?;
    b.device.start_live()?;
    let second = a.with(|j| {
        j.add(Body::Share(Share {
            feeling: "live, in clear".into(),
            tough_question: false,
        }))
    })?;
    let mut waited = 0;
    while !b.recorder.saw(second) {
        ensure!(waited < 400, "B did not hear of A's live edit within 20 s");
        tokio::time::sleep(Duration::from_millis(50)).await;
        waited += 1;
    }
    a.device.stop_live().await;
    b.device.stop_live().await;
    relay.stop().await
}

/// An app that drops its journal without closing it, again and again (a screen that opens
/// its own): nothing it started keeps running. Before, each left a task waiting for epoch
/// news for the life of the process.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_device_dropped_without_closing_leaves_no_task_behind() -> Result<()> {
    let dir = tempfile::tempdir()?;
    let runtime = tokio::runtime::Handle::current();
    let before = runtime.metrics().num_alive_tasks();
    let path = dir.path().join("j.db");
    for round in 0..5 {
        let device = if round == 0 {
            mend_client::Device::create(
                &path,
                "Alex",
                "http://127.0.0.1:9",
                mend_e2e::opts(),
                mend_client::RelayOptions::default(),
                None,
            )?
        } else {
            let keyring = mend_core::Keyring::from_secret_string(&std::fs::read_to_string(
                dir.path().join("keyring"),
            )?)?;
            mend_client::Device::open(
                &path,
                keyring,
                mend_e2e::opts(),
                mend_client::RelayOptions::default(),
                None,
            )?
        };
        std::fs::write(
            dir.path().join("keyring"),
            device.keyring().to_secret_string().as_str(),
        )?;
        let device = std::sync::Arc::new(device);
        device.start_live_following(Duration::from_secs(1))?;
        drop(device);
        // What the device started ends on its own: waited for, bounded.
        let mut waited = 0;
        while waited < 200 && runtime.metrics().num_alive_tasks() > before {
            tokio::time::sleep(Duration::from_millis(25)).await;
            waited += 1;
        }
    }
    ensure!(
        runtime.metrics().num_alive_tasks() <= before,
        "{} tasks left running",
        runtime.metrics().num_alive_tasks().saturating_sub(before)
    );
    Ok(())
}

/// A journal of Alex's alone, its relay never reached.
fn lone_device(dir: &std::path::Path) -> Result<mend_client::Device> {
    Ok(mend_client::Device::create(
        &dir.join("j.db"),
        "Alex",
        "http://127.0.0.1:9",
        mend_e2e::opts(),
        mend_client::RelayOptions::default(),
        None,
    )?)
}

/// A packet of everything the journal holds.
fn whole_range(device: &mend_client::Device) -> Result<mend_core::export::PacketOptions> {
    let (from, to) = device.read(|j| j.default_packet_range())?;
    Ok(mend_core::export::PacketOptions {
        from,
        to,
        kinds: vec![],
    })
}

/// The packet is made on the connection apart (which reads the read model, and holds no
/// document) with a boundary and a share in it, as an app's and the CLI's export make it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_packet_with_a_boundary_is_made_on_the_connection_apart() -> Result<()> {
    let dir = tempfile::tempdir()?;
    let device = lone_device(dir.path())?;
    device.write(|j| {
        j.add(mend_core::Body::Boundary(mend_core::model::Boundary {
            text: "No contact with them".into(),
            ..Default::default()
        }))
    })?;
    device.write(|j| {
        j.add(mend_core::Body::Share(mend_core::model::Share {
            feeling: "in the packet".into(),
            tough_question: false,
        }))
    })?;
    let options = whole_range(&device)?;
    for format in [
        mend_core::export::Format::Markdown,
        mend_core::export::Format::Html,
    ] {
        let packet = device.read_apart(|j| j.export_packet(&options, format))?;
        ensure!(
            packet.contains("No contact with them") && packet.contains("in the packet"),
            "{packet}"
        );
    }
    device.close().await?;
    Ok(())
}

/// The packet (seconds of reading on a large journal) is read on a connection of its own:
/// it never waits for the quick reads' shared connection, nor they for it. Here the shared
/// connection is held while the packet is made.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_packet_is_read_apart_from_the_quick_reads() -> Result<()> {
    let dir = tempfile::tempdir()?;
    let device = std::sync::Arc::new(lone_device(dir.path())?);
    device.write(|j| {
        j.add(mend_core::Body::Share(mend_core::model::Share {
            feeling: "in the packet".into(),
            tough_question: false,
        }))
    })?;
    let options = whole_range(&device)?;
    let (tx, rx) = std::sync::mpsc::channel();
    let apart = std::sync::Arc::clone(&device);
    let made = device.read(|_| {
        std::thread::spawn(move || {
            let packet = apart
                .read_apart(|j| j.export_packet(&options, mend_core::export::Format::Markdown));
            let _ = tx.send(packet.map(|p| p.len()));
        });
        Ok(rx.recv_timeout(Duration::from_secs(10)))
    })?;
    ensure!(
        matches!(made, Ok(Ok(len)) if len > 0),
        "the packet waited for the shared reader: {made:?}"
    );
    Ok(())
}
