//! What extension locking mode costs a write on a large journal: a write after the same
//! process's last (the lock file taken and released, `data_version` read), and a write after
//! the other process wrote (the document it changed reloaded first). Two handles in one
//! process stand in for the app and its extension (the lock is per open file).
//!
//! Usage: `cargo run --release -p mend-bench --bin extension-steps -- [records] [rounds]`

use std::time::Instant;

use anyhow::Result;
use mend_bench::journal::build;
use mend_core::{Body, Durability, Journal, LockMode, OpenOptions, model::Share};

fn share(n: usize) -> Body {
    Body::Share(Share {
        feeling: format!("step {n}"),
        tough_question: false,
    })
}

fn main() -> Result<()> {
    let mut args = std::env::args().skip(1);
    let records: usize = mend_bench::arg(&mut args, 10_000)?;
    let rounds: usize = mend_bench::arg(&mut args, 50)?;
    let dir = tempfile::tempdir()?;
    let path = dir.path().join("journal.db");
    eprintln!("building a {records}-record journal…");
    drop(build(&path, records)?);
    let options = OpenOptions {
        durability: Durability::Normal,
        lock: LockMode::EXTENSION,
        ..OpenOptions::default()
    };
    let mut app = Journal::open_with(&path, options)?;
    let mut ext = Journal::open_with(&path, options)?;
    app.ready()?;
    ext.ready()?;

    let (mut alone, mut after_other, mut exclusive) = (Vec::new(), Vec::new(), Vec::new());
    for n in 0..rounds {
        let t = Instant::now();
        app.add(share(n))?;
        alone.push(t.elapsed().as_secs_f64() * 1e3);
        ext.add(share(n))?;
        let t = Instant::now();
        app.add(share(n))?;
        after_other.push(t.elapsed().as_secs_f64() * 1e3);
    }
    drop(app);
    drop(ext);
    let mut only = Journal::open(&path)?;
    only.ready()?;
    for n in 0..rounds {
        let t = Instant::now();
        only.add(share(n))?;
        exclusive.push(t.elapsed().as_secs_f64() * 1e3);
    }
    let pct = |v: &mut Vec<f64>, p: f64| {
        v.sort_by(f64::total_cmp);
        v[((v.len() as f64 - 1.0) * p).round() as usize]
    };
    println!("records={records} rounds={rounds}");
    for (what, v) in [
        ("exclusive write", &mut exclusive),
        ("extension mode, after its own write", &mut alone),
        ("extension mode, after the other's write", &mut after_other),
    ] {
        println!("{what} ms: p50={:.3} max={:.3}", pct(v, 0.5), pct(v, 1.0));
    }
    Ok(())
}
