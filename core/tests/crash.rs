//! Crash test: a child process writes records in a loop and is killed with SIGKILL at random
//! moments. After every kill the journal must open cleanly and hold every record whose write
//! call had returned (the child prints an id only after `add` returned).

use std::{
    io::{BufRead, BufReader, Write},
    path::Path,
    process::{Command, Stdio},
    sync::mpsc,
    time::{Duration, Instant},
};

use anyhow::{Context, Result, bail};
use mend_core::{Body, Journal, RecordId, Space, model::HonestyMoment};

const KILLS: usize = 24;

fn main() -> Result<()> {
    let args: Vec<String> = std::env::args().collect();
    if args.get(1).map(String::as_str) == Some("child") {
        let path = args.get(2).context("child needs a database path")?;
        return child(Path::new(path));
    }
    // `cargo test` passes harness flags (e.g. `--nocapture`, a filter); a filter that does not
    // match "crash" means this test was not asked for.
    if let Some(filter) = args.iter().skip(1).find(|a| !a.starts_with('-'))
        && !"crash".contains(filter.as_str())
    {
        return Ok(());
    }
    parent()
}

/// Writes records forever, printing each id once its write has returned.
fn child(path: &Path) -> Result<()> {
    let mut journal = if path.exists() {
        Journal::open(path)?
    } else {
        Journal::create(path, "Crash")?
    };
    let mut out = std::io::stdout().lock();
    writeln!(out, "ready")?;
    out.flush()?;
    for n in 0u64.. {
        let body = Body::HonestyMoment(HonestyMoment {
            text: format!("entry {n}"),
            ..Default::default()
        });
        let id = journal.add(body)?;
        writeln!(out, "{id}")?;
        out.flush()?;
        if n % 16 == 15 {
            // Exercise the compaction transaction under the same random kills.
            journal.compact()?;
        }
    }
    Ok(())
}

fn parent() -> Result<()> {
    let dir = tempfile::tempdir()?;
    let db = dir.path().join("journal.db");
    let exe = std::env::current_exe()?;
    let mut seed = u64::from(std::process::id()) ^ 0x9e37_79b9_7f4a_7c15;
    let mut acknowledged: Vec<RecordId> = Vec::new();
    for round in 0..KILLS {
        let mut child = Command::new(&exe)
            .arg("child")
            .arg(&db)
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()?;
        let stdout = child.stdout.take().context("no child stdout")?;
        let (tx, rx) = mpsc::channel::<String>();
        let reader = std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines().map_while(Result::ok) {
                if tx.send(line).is_err() {
                    break;
                }
            }
        });
        // Wait for the child to be writing, then let it run a random while (5–150 ms).
        let first = rx
            .recv_timeout(Duration::from_secs(30))
            .context("child never started")?;
        if first != "ready" {
            bail!("child said {first:?} instead of ready");
        }
        seed ^= seed << 13;
        seed ^= seed >> 7;
        seed ^= seed << 17;
        let run_for = Duration::from_micros(5_000 + seed % 145_000);
        let start = Instant::now();
        while start.elapsed() < run_for {
            std::thread::yield_now();
        }
        child.kill()?; // SIGKILL on Unix
        child.wait()?;
        let _ = reader.join();
        let printed: Vec<RecordId> = rx.try_iter().filter_map(|l| l.parse().ok()).collect();
        acknowledged.extend(&printed);

        let journal = Journal::open(&db).with_context(|| format!("reopen after kill {round}"))?;
        for id in &acknowledged {
            journal
                .get(*id)
                .with_context(|| format!("record {id} lost after kill {round}"))?;
        }
        let stored = journal.records()?.len();
        if stored < acknowledged.len() {
            bail!(
                "after kill {round}: {stored} records, {} acknowledged",
                acknowledged.len()
            );
        }
        // The documents load, and the read model says exactly what they say.
        if journal.heads(Space::Couple)?.is_empty() {
            bail!("after kill {round}: the couple's document is empty");
        }
        journal
            .verify_read_model()
            .with_context(|| format!("read model after kill {round}"))?;
        eprintln!(
            "crash round {round}: {} acknowledged in total, {stored} stored",
            acknowledged.len()
        );
    }
    if acknowledged.is_empty() {
        bail!("the child never acknowledged a write; the test proved nothing");
    }
    eprintln!(
        "crash: {KILLS} kills, {} acknowledged records all present",
        acknowledged.len()
    );
    Ok(())
}
