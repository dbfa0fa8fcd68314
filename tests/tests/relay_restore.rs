//! End to end over a real mend-relay: the relay's data directory is restored from an older copy
//! while both partners keep editing, and one partner fills the relay up past where the other
//! stands before that one reads again. Both notice, and both end complete and identical.

use std::path::Path;

use anyhow::{Result, ensure};
use mend_core::{
    Body, RecordId, Space,
    model::Share,
    sync::{ProblemKind, SyncStore},
};
use mend_e2e::{Phone, Relay};

fn share(text: &str) -> Body {
    Body::Share(Share {
        feeling: text.into(),
        tough_question: false,
    })
}

/// Copies the files of a (stopped) relay's data directory, as an operator's backup does.
fn copy_files(from: &Path, to: &Path) -> Result<()> {
    std::fs::create_dir_all(to)?;
    for entry in std::fs::read_dir(from)? {
        let entry = entry?;
        if entry.file_type()?.is_file() {
            std::fs::copy(entry.path(), to.join(entry.file_name()))?;
        }
    }
    Ok(())
}

/// Whether the phone's observer was ever told the relay went back in the couple's space.
fn saw_rewind(phone: &Phone) -> bool {
    phone.recorder.statuses.lock().is_ok_and(|statuses| {
        statuses.iter().any(|s| {
            s.problems.iter().any(|p| {
                p.space == Space::Couple.as_str()
                    && matches!(p.kind, ProblemKind::RelayRewound { .. })
            })
        })
    })
}

fn add(phone: &Phone, ids: &mut Vec<RecordId>, text: &str) -> Result<()> {
    ids.push(phone.with(|j| j.add(share(text)))?);
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_relay_restored_from_an_older_copy_while_both_edit_leaves_both_complete() -> Result<()> {
    let dir = tempfile::tempdir()?;
    let relay = Relay::start(dir.path()).await?;
    let addr = relay.addr;
    let data = relay.data_dir.clone();
    let (a, b) = mend_e2e::couple(dir.path(), &relay).await?;
    let mut ids = Vec::new();
    add(&a, &mut ids, "before the backup")?;
    a.sync().await?;
    b.sync().await?;

    // The operator's backup: the relay stopped, its directory copied, started again.
    relay.stop().await?;
    let backup = dir.path().join("relay-backup");
    copy_files(&data, &backup)?;
    let relay = Relay::start_on(&data, addr).await?;

    // What the restore will lose: both edit and sync, round after round.
    for n in 0..3 {
        add(&a, &mut ids, &format!("lost by the relay, A {n}"))?;
        a.sync().await?;
        add(&b, &mut ids, &format!("lost by the relay, B {n}"))?;
        b.sync().await?;
    }
    a.sync().await?;
    let a_cursor = a.with(|j| j.sync_state(Space::Couple))?.cursor;

    // The relay's disk is lost and the backup put back.
    relay.stop().await?;
    std::fs::remove_dir_all(&data)?;
    copy_files(&backup, &data)?;
    let relay = Relay::start_on(&data, addr).await?;

    // Both keep editing. B syncs first, round after round, until the relay holds more than A
    // has read: A then finds a head past its cursor, as from an honest relay.
    for n in 0.. {
        ensure!(n < 20, "B never filled the relay up past A's cursor");
        add(&b, &mut ids, &format!("after the restore, B {n}"))?;
        b.sync().await?;
        if b.with(|j| j.sync_state(Space::Couple))?.last_ack_relay > a_cursor {
            break;
        }
    }
    add(&a, &mut ids, "after the restore, A")?;
    for _ in 0..2 {
        a.sync().await?;
        b.sync().await?;
    }

    for (name, phone) in [("A", &a), ("B", &b)] {
        ensure!(saw_rewind(phone), "{name} did not notice the restore");
        for id in &ids {
            ensure!(phone.with(|j| j.get(*id)).is_ok(), "{name} lacks {id}");
        }
        ensure!(
            phone.with(|j| j.pending_changes(Space::Couple))? == 0,
            "{name} still has changes pending"
        );
    }
    let mut heads = [
        a.with(|j| j.heads(Space::Couple))?,
        b.with(|j| j.heads(Space::Couple))?,
    ];
    for h in &mut heads {
        h.sort();
    }
    ensure!(heads[0] == heads[1], "the partners' documents differ");
    ensure!(
        a.with(|j| j.shared_records())? == b.with(|j| j.shared_records())?,
        "the partners see different records"
    );

    relay.stop().await?;
    Ok(())
}
