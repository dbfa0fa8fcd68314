//! Per-write latency percentiles on a large journal (criterion reports means, the targets are
//! p50 and p99), plus open time.
//!
//! Usage: `cargo run --release -p mend-bench --bin journal-latency -- [records] [writes]`

use std::time::Instant;

use anyhow::Result;
use mend_bench::journal::{Keys, build_signed, prose, sign_with, signing};
use mend_core::crypto::{DeviceKey, PartnerIdentity};
use mend_core::{Body, Durability, Journal, OpenOptions, model::Share, query::TimelineQuery};

fn main() -> Result<()> {
    let mut args = std::env::args().skip(1);
    let records: usize = mend_bench::arg(&mut args, 10_000)?;
    let writes: usize = mend_bench::arg(&mut args, 5_000)?;
    let dir = tempfile::tempdir()?;
    let path = dir.path().join("journal.db");
    // Signing as a device does: changes carry the device key's id, and are signed when pushed.
    let keys: Keys = (
        [7u8; 32],
        PartnerIdentity::generate()?,
        DeviceKey::generate()?,
    );
    eprintln!("building a {records}-record journal…");
    let journal = build_signed(&path, records, Some(&keys))?;
    drop(journal);

    // Open returns once reads are served (the read model); Automerge loads in the background.
    // Also measured: open + the first timeline page (what a launch shows), and open + the
    // first write (which waits for whatever is left of the background load).
    let (mut opens, mut first_page, mut first_write) = (Vec::new(), Vec::new(), Vec::new());
    for round in 0..20 {
        let t = Instant::now();
        let mut j = Journal::open_with(&path, signing(&keys))?;
        sign_with(&mut j, &keys)?;
        opens.push(t.elapsed().as_secs_f64() * 1e3);
        let page = j.timeline(&TimelineQuery::default())?;
        first_page.push(t.elapsed().as_secs_f64() * 1e3);
        anyhow::ensure!(!page.items.is_empty(), "the timeline is empty");
        j.add(Body::Share(Share {
            feeling: format!("after open {round}"),
            tough_question: false,
        }))?;
        first_write.push(t.elapsed().as_secs_f64() * 1e3);
        drop(j);
    }
    // The product default is Normal; MEND_DURABILITY=full adds the per-commit fsync.
    let durability = match std::env::var("MEND_DURABILITY").as_deref() {
        Ok("full") => Durability::Full,
        _ => Durability::Normal,
    };
    let mut journal = Journal::open_with(
        &path,
        OpenOptions {
            durability,
            ..signing(&keys)
        },
    )?;
    sign_with(&mut journal, &keys)?;
    let mut lat = Vec::with_capacity(writes);
    for n in 0..writes {
        let body = Body::Share(Share {
            feeling: prose(n),
            tough_question: false,
        });
        let t = Instant::now();
        journal.add(body)?;
        lat.push(t.elapsed().as_secs_f64() * 1e3);
    }
    let pct = |v: &mut Vec<f64>, p: f64| {
        v.sort_by(f64::total_cmp);
        v[((v.len() as f64 - 1.0) * p).round() as usize]
    };
    println!("records={records} writes={writes} durability={durability:?}");
    println!(
        "write latency ms: p50={:.3} p99={:.3} max={:.3}",
        pct(&mut lat, 0.50),
        pct(&mut lat, 0.99),
        pct(&mut lat, 1.0)
    );
    for (what, v) in [
        ("open", &mut opens),
        ("open + first timeline page", &mut first_page),
        ("open + first write", &mut first_write),
    ] {
        println!("{what} ms: p50={:.1} max={:.1}", pct(v, 0.5), pct(v, 1.0));
    }
    Ok(())
}
