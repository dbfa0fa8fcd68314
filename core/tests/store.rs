//! The local store: migrations from every old version, refusal to touch what it cannot read,
//! and one writer at a time.

use mend_core::{
    Body, Error, Journal,
    model::Share,
    store::{
        Durability, LockMode, Space, Store,
        migrations::{LATEST, migrate_to},
    },
};
use rusqlite::Connection;

fn schema(conn: &Connection) -> anyhow::Result<Vec<String>> {
    let mut stmt = conn.prepare(
        "SELECT type || ' ' || name || ' ' || COALESCE(sql, '') FROM sqlite_master \
         WHERE name NOT LIKE 'sqlite_%' ORDER BY type, name",
    )?;
    let rows = stmt.query_map([], |r| r.get::<_, String>(0))?;
    Ok(rows.collect::<Result<_, _>>()?)
}

#[test]
fn every_old_version_migrates_to_the_fresh_schema() -> anyhow::Result<()> {
    let dir = tempfile::tempdir()?;
    let fresh_path = dir.path().join("fresh.db");
    drop(Store::open(
        &fresh_path,
        true,
        Durability::Full,
        LockMode::Exclusive,
    )?);
    let fresh = schema(&Connection::open(&fresh_path)?)?;
    assert!(
        fresh.iter().any(|s| s.contains("outbox")),
        "latest schema has the sync tables"
    );

    for version in 0..LATEST {
        let path = dir.path().join(format!("v{version}.db"));
        {
            let mut conn = Connection::open(&path)?;
            migrate_to(&mut conn, version)?;
            let v: u32 = conn.pragma_query_value(None, "user_version", |r| r.get(0))?;
            assert_eq!(v, version);
            if version >= 1 {
                // Data written by that version must survive the upgrade.
                conn.execute("INSERT INTO meta (key, value) VALUES ('probe', 'kept')", [])?;
                conn.execute(
                    "INSERT INTO doc_changes (space, bytes) VALUES ('couple', x'00')",
                    [],
                )?;
            }
        }
        let store = Store::open(&path, false, Durability::Full, LockMode::Exclusive)?;
        let v: u32 = store
            .conn()
            .pragma_query_value(None, "user_version", |r| r.get(0))?;
        assert_eq!(v, LATEST, "from version {version}");
        assert_eq!(
            schema(store.conn())?,
            fresh,
            "schema upgraded from version {version}"
        );
        if version >= 1 {
            assert_eq!(store.meta("probe")?.as_deref(), Some("kept"));
            assert_eq!(store.change_rows(Space::Couple)?, 1);
        }
    }
    Ok(())
}

#[test]
fn a_database_from_a_newer_version_is_refused_and_untouched() -> anyhow::Result<()> {
    let dir = tempfile::tempdir()?;
    let path = dir.path().join("newer.db");
    {
        let mut conn = Connection::open(&path)?;
        migrate_to(&mut conn, LATEST)?;
        conn.pragma_update(None, "user_version", LATEST + 1)?;
    }
    let before = std::fs::read(&path)?;
    match Store::open(&path, false, Durability::Full, LockMode::Exclusive) {
        Err(Error::TooNew { found, supported }) => {
            assert_eq!(found, LATEST + 1);
            assert_eq!(supported, LATEST);
        }
        other => anyhow::bail!("expected TooNew, got {other:?}"),
    }
    assert!(
        std::fs::read(&path)? == before,
        "the newer database was modified"
    );
    Ok(())
}

#[test]
fn a_file_that_is_not_a_journal_is_reported_and_never_deleted() -> anyhow::Result<()> {
    let dir = tempfile::tempdir()?;
    let path = dir.path().join("journal.db");
    let garbage = b"this is not a database, but it may be someone's only copy".repeat(100);
    std::fs::write(&path, &garbage)?;
    let err = Journal::open(&path)
        .err()
        .ok_or_else(|| anyhow::anyhow!("garbage opened"))?;
    assert!(matches!(err, Error::Open { .. }), "{err:?}");
    assert!(
        err.to_string().contains("journal.db"),
        "the message names the file: {err}"
    );
    assert!(std::fs::read(&path)? == garbage, "the file is untouched");

    // Creating over an existing file is refused too.
    assert!(matches!(
        Journal::create(&path, "Alex"),
        Err(Error::Invalid(_))
    ));
    assert!(std::fs::read(&path)? == garbage, "the file is untouched");

    // A missing file is an error, not a new empty journal.
    let missing = dir.path().join("missing.db");
    assert!(matches!(Journal::open(&missing), Err(Error::Open { .. })));
    assert!(!missing.exists());
    Ok(())
}

#[test]
fn a_second_opener_gets_a_clear_error_and_the_journal_is_intact() -> anyhow::Result<()> {
    let dir = tempfile::tempdir()?;
    let path = dir.path().join("journal.db");
    let mut first = Journal::create(&path, "Alex")?;
    let id = first.add(Body::Share(Share {
        feeling: "calmer today".into(),
        tough_question: false,
    }))?;
    match Journal::open(&path) {
        Err(e @ Error::Locked(_)) => assert!(e.to_string().contains("another process")),
        other => anyhow::bail!("expected Locked, got {other:?}"),
    }
    first.add(Body::Share(Share {
        feeling: "still here".into(),
        tough_question: false,
    }))?;
    drop(first);
    let reopened = Journal::open(&path)?;
    assert!(reopened.get(id).is_ok());
    assert_eq!(reopened.records()?.len(), 2);
    Ok(())
}

/// The database holds the journal's words in the clear: a directory others may read (a home
/// the person made themselves, a shared umask) must not make the files readable to them.
#[cfg(unix)]
#[test]
fn a_new_journal_is_readable_by_its_owner_only() -> anyhow::Result<()> {
    use std::os::unix::fs::PermissionsExt;
    let dir = tempfile::tempdir()?;
    std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o755))?;
    let path = dir.path().join("journal.db");
    let mut journal = Journal::create(&path, "Alex")?;
    journal.add(Body::Share(Share {
        feeling: "not for the neighbours".into(),
        tough_question: false,
    }))?;
    let mut seen = 0;
    for entry in std::fs::read_dir(dir.path())? {
        let entry = entry?;
        let mode = entry.metadata()?.permissions().mode();
        assert_eq!(
            mode & 0o077,
            0,
            "{} is mode {mode:o}",
            entry.file_name().to_string_lossy()
        );
        seen += 1;
    }
    // The database, its WAL and shared memory, and the lock file.
    assert!(seen >= 4, "{seen} files");
    Ok(())
}

#[test]
fn compaction_folds_rows_into_one_save_without_losing_anything() -> anyhow::Result<()> {
    let dir = tempfile::tempdir()?;
    let path = dir.path().join("journal.db");
    let mut j = Journal::create(&path, "Alex")?;
    for n in 0..30 {
        j.add(Body::Share(Share {
            feeling: format!("feeling {n}"),
            tough_question: n % 2 == 0,
        }))?;
    }
    assert!(j.store().change_rows(Space::Couple)? >= 30);
    let before = j.records()?;
    j.compact()?;
    assert_eq!(j.store().change_rows(Space::Couple)?, 0);
    drop(j);
    let reopened = Journal::open(&path)?;
    assert_eq!(reopened.records()?, before);
    Ok(())
}

fn shares(j: &mut Journal, n: usize) -> anyhow::Result<()> {
    for i in 0..n {
        j.add(Body::Share(Share {
            feeling: format!("entry {i}"),
            tough_question: false,
        }))?;
    }
    Ok(())
}

/// Creates a compacted journal of `n` shares at `path`, closes it, and returns its records.
fn written(path: &std::path::Path, n: usize) -> anyhow::Result<Vec<mend_core::Record>> {
    let mut j = Journal::create(path, "Alex")?;
    shares(&mut j, n)?;
    j.compact()?;
    Ok(j.records()?)
}

#[test]
fn a_journal_from_before_the_read_model_opens_with_every_record() -> anyhow::Result<()> {
    let dir = tempfile::tempdir()?;
    let path = dir.path().join("j.db");
    let before = written(&path, 5)?;
    // What version 2 left on disk: the same tables, minus the read model, the open sync
    // problems, the cursor's mark, what says which refused chunks are real, the signed
    // changes' tables and the rollups'.
    Connection::open(&path)?.execute_batch(
        "DROP TABLE record_views; DROP TABLE space_views; \
         DROP TABLE change_proofs; DROP TABLE known_devices; DROP TABLE held_changes; \
         DROP TABLE refused_changes; DROP TABLE proof_groups; DROP TABLE own_chunks; \
         ALTER TABLE sync_state DROP COLUMN problems; \
         ALTER TABLE sync_state DROP COLUMN cursor_mark; \
         ALTER TABLE sync_state DROP COLUMN mark_at; \
         ALTER TABLE sync_state DROP COLUMN heal_real; \
         ALTER TABLE peer_seqs DROP COLUMN authentic; PRAGMA user_version = 2;",
    )?;
    let mut j = Journal::open(&path)?;
    assert_eq!(j.records()?, before);
    assert_eq!(j.partners().len(), 1);
    j.verify_read_model()?;
    shares(&mut j, 1)?;
    j.verify_read_model()?;
    Ok(())
}

#[test]
fn a_document_that_cannot_load_still_reads_and_refuses_writes_clearly() -> anyhow::Result<()> {
    let dir = tempfile::tempdir()?;
    let path = dir.path().join("j.db");
    let before = written(&path, 3)?;
    Connection::open(&path)?.execute(
        "UPDATE doc_snapshots SET bytes = x'856f4a83deadbeef' WHERE space = 'couple'",
        [],
    )?;
    let mut j = Journal::open(&path)?;
    // The read model still serves every record, so nothing is lost to the reader …
    assert_eq!(j.records()?, before);
    // … and a write says why it cannot go ahead, every time, without touching the database.
    for _ in 0..2 {
        match shares(&mut j, 1).map_err(|e| e.downcast::<Error>()) {
            Err(Ok(Error::Corrupt(_))) => {}
            other => anyhow::bail!("expected a corrupt-document error, got {other:?}"),
        }
    }
    drop(j);
    assert_eq!(Journal::open(&path)?.records()?, before);
    Ok(())
}

#[test]
fn a_change_that_arrives_before_its_dependency_is_kept_and_shown() -> anyhow::Result<()> {
    let dir = tempfile::tempdir()?;
    let mut alex = Journal::create(&dir.path().join("a.db"), "Alex")?;
    let source = mend_core::JoinSource {
        couple: alex.save_space(Space::Couple)?,
        ..Default::default()
    };
    let b_path = dir.path().join("b.db");
    let mut blake = Journal::join(&b_path, &source, "Blake")?;
    let h0 = alex.heads(Space::Couple)?;
    shares(&mut alex, 1)?;
    let h1 = alex.heads(Space::Couple)?;
    shares(&mut alex, 1)?;
    let after_h0 = alex.changes_since(Space::Couple, &h0)?;
    let two = alex.changes_since(Space::Couple, &h1)?;
    let one = after_h0
        .strip_suffix(two.as_slice())
        .ok_or_else(|| anyhow::anyhow!("changes come in order"))?
        .to_vec();
    // The second arrives first: Automerge holds it back, nothing shows yet …
    assert!(blake.apply_changes(Space::Couple, &two)?.is_empty());
    // … then its dependency brings both in, and the read model shows both.
    assert_eq!(blake.apply_changes(Space::Couple, &one)?.len(), 2);
    let want: Vec<_> = alex.shared_records()?;
    assert_eq!(blake.shared_records()?.len(), want.len());
    blake.verify_read_model()?;
    drop(blake);
    let blake = Journal::open(&b_path)?;
    assert_eq!(blake.shared_records()?.len(), want.len());
    blake.verify_read_model()?;
    Ok(())
}

/// An epoch move commits the new documents in one transaction and builds the read model
/// after it. Cut off in between (the app killed), the journal must not open serving the old
/// epoch's rows: a forgetting's removed words, records the new epoch does not hold.
#[test]
fn a_move_cut_off_before_its_read_model_was_built_opens_on_the_new_documents() -> anyhow::Result<()>
{
    let dir = tempfile::tempdir()?;
    let path = dir.path().join("j.db");
    let mut journal = Journal::create(&path, "Alex")?;
    let left = journal.add(Body::ProcessingNote(mend_core::model::ProcessingNote {
        text: "left in the old epoch".into(),
    }))?;
    drop(journal);
    // An extension's handle, open beside the move.
    let mut extension = Journal::open_with(
        &path,
        mend_core::OpenOptions {
            lock: LockMode::Extension {
                wait: std::time::Duration::from_secs(5),
            },
            ..Default::default()
        },
    )?;
    // The new epoch's personal document: one that never held the note.
    let mut other = Journal::create(&dir.path().join("other.db"), "Alex")?;
    let kept = other.add(Body::ProcessingNote(mend_core::model::ProcessingNote {
        text: "carried into the new epoch".into(),
    }))?;
    let fresh = other.document(Space::Personal)?;
    drop(other);

    // What the move commits, and nothing after it.
    let mut store = Store::open(&path, false, Durability::Normal, LockMode::Exclusive)?;
    store.start_epoch(&[(Space::Personal, &fresh)], &[], &[], 0)?;
    drop(store);

    // The extension's next step finds the move and builds the read model itself.
    extension.add(Body::ProcessingNote(mend_core::model::ProcessingNote {
        text: "written in the new epoch".into(),
    }))?;
    ensure_gone(extension.get(left), "the extension")?;
    anyhow::ensure!(extension.get(kept).is_ok(), "the extension misses a record");
    extension.verify_read_model()?;
    drop(extension);

    // Opened again, with the read model the move left (none).
    let mut store = Store::open(&path, false, Durability::Normal, LockMode::Exclusive)?;
    store.start_epoch(&[(Space::Personal, &fresh)], &[], &[], 0)?;
    drop(store);
    let journal = Journal::open(&path)?;
    let reader = Journal::open_reader(&path)?;
    ensure_gone(journal.get(left), "the writer")?;
    ensure_gone(reader.get(left), "a reader")?;
    anyhow::ensure!(reader.get(kept).is_ok(), "a reader misses a record");
    journal.verify_read_model()?;
    Ok(())
}

fn ensure_gone(got: mend_core::Result<mend_core::Record>, who: &str) -> anyhow::Result<()> {
    anyhow::ensure!(
        matches!(got, Err(Error::NotFound(_))),
        "{who} still reads the old epoch's record: {:?}",
        got.map(|r| r.id)
    );
    Ok(())
}
