//! Reads while sync works: p50/p99 of `get` and of a first timeline page on a 10k-record
//! journal while another thread merges rounds of 1k concurrent edits and live sync runs (the
//! partner pushing an edit every few milliseconds, merged as it lands).
//!
//! Usage: `cargo run --release -p mend-bench --bin read-bench -- [records] [merge rounds]`

use std::{
    sync::{
        Arc,
        atomic::{AtomicBool, Ordering},
    },
    time::{Duration, Instant},
};

use anyhow::{Result, ensure};
use mend_bench::journal::{build, prose};
use mend_client::{Device, Keyring};
use mend_core::{
    Body, JoinSource, Journal, RecordId, Space,
    model::{HonestyMoment, Share},
    query::TimelineQuery,
};
use mend_e2e::{Relay, opts};

fn pct(v: &mut [f64], p: f64) -> f64 {
    v.sort_by(f64::total_cmp);
    v[((v.len() as f64 - 1.0) * p).round() as usize]
}

/// Rounds of 1k edits, made by another device of the couple, as change bytes to merge.
fn edit_rounds(source: &JoinSource, dir: &std::path::Path, rounds: usize) -> Result<Vec<Vec<u8>>> {
    let mut c = Journal::join_with(&dir.join("c.db"), source, "Casey", opts())?;
    let mut heads = c.heads(Space::Couple)?;
    let mut out = Vec::with_capacity(rounds);
    for r in 0..rounds {
        for i in 0..1_000 {
            c.add(Body::Share(Share {
                feeling: prose(r * 1_000 + i),
                tough_question: false,
            }))?;
        }
        out.push(c.changes_since(Space::Couple, &heads)?);
        heads = c.heads(Space::Couple)?;
    }
    Ok(out)
}

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() -> Result<()> {
    let mut args = std::env::args().skip(1);
    let records: usize = mend_bench::arg(&mut args, 10_000)?;
    let rounds: usize = mend_bench::arg(&mut args, 30)?;
    let dir = tempfile::tempdir()?;
    let relay = Relay::start(dir.path()).await?;
    eprintln!("building a {records}-record journal…");
    let path = dir.path().join("a.db");
    let built = build(&path, records)?;
    let ids: Vec<RecordId> = built.records()?.iter().map(|r| r.id).collect();
    let source = JoinSource {
        couple: built.save_space(Space::Couple)?,
        personal: None,
        partner: None,
    };
    drop(built);
    eprintln!("preparing {rounds} rounds of 1k concurrent edits…");
    let merges = edit_rounds(&source, dir.path(), rounds)?;

    let a = Device::open(
        &path,
        Keyring::generate(&relay.url())?,
        opts(),
        relay.trust(),
        None,
    )?;
    a.sync_now(Duration::from_secs(60)).await?;
    let b = Device::join(
        &dir.path().join("b.db"),
        &a.partner_invite()?,
        "Blake",
        opts(),
        relay.trust(),
        None,
    )?;
    b.sync_now(Duration::from_secs(60)).await?;
    a.sync_now(Duration::from_secs(60)).await?;
    a.ready().await?;
    b.ready().await?;
    a.start_live()?;
    b.start_live()?;
    let a = Arc::new(a);
    let b = Arc::new(b);

    // Live sync: the partner writes every 5 ms; A merges each as it lands.
    let busy = Arc::new(AtomicBool::new(true));
    let partner = {
        let (b, busy) = (Arc::clone(&b), Arc::clone(&busy));
        tokio::spawn(async move {
            let mut n = 0usize;
            while busy.load(Ordering::Relaxed) {
                n += 1;
                let body = Body::HonestyMoment(HonestyMoment {
                    text: format!("moment {n}"),
                    ..Default::default()
                });
                let b2 = Arc::clone(&b);
                let _ = tokio::task::spawn_blocking(move || b2.write(|j| j.add(body))).await;
                tokio::time::sleep(Duration::from_millis(5)).await;
            }
            n
        })
    };
    // The merge thread: rounds of 1k edits, back to back.
    let merger = {
        let (a, busy) = (Arc::clone(&a), Arc::clone(&busy));
        std::thread::spawn(move || -> Result<Duration> {
            let t = Instant::now();
            for bytes in merges {
                a.write(|j| j.apply_changes(Space::Couple, &bytes))?;
            }
            busy.store(false, Ordering::Relaxed);
            Ok(t.elapsed())
        })
    };
    // The reader: what a UI thread does while all that runs.
    let reader = {
        let (a, busy) = (Arc::clone(&a), Arc::clone(&busy));
        std::thread::spawn(move || -> Result<(Vec<f64>, Vec<f64>)> {
            let (mut gets, mut pages) = (Vec::new(), Vec::new());
            let mut i = 0usize;
            while busy.load(Ordering::Relaxed) {
                i += 1;
                let id = ids[(i * 7919) % ids.len()];
                let t = Instant::now();
                let record = a.read(|j| j.get(id))?;
                gets.push(t.elapsed().as_secs_f64() * 1e3);
                ensure!(record.id == id, "wrong record");
                let t = Instant::now();
                let page = a.read(|j| j.timeline(&TimelineQuery::default()))?;
                pages.push(t.elapsed().as_secs_f64() * 1e3);
                ensure!(!page.items.is_empty(), "empty timeline");
                std::thread::sleep(Duration::from_micros(200));
            }
            Ok((gets, pages))
        })
    };
    let merged_in = tokio::task::spawn_blocking(move || merger.join())
        .await?
        .map_err(|_| anyhow::anyhow!("merge thread panicked"))??;
    let (mut gets, mut pages) = tokio::task::spawn_blocking(move || reader.join())
        .await?
        .map_err(|_| anyhow::anyhow!("reader panicked"))??;
    let partner_edits = partner.await?;
    a.stop_live().await;
    b.stop_live().await;
    ensure!(!gets.is_empty(), "no reads measured");
    println!(
        "reads on a {records}-record journal during {rounds} merges of 1k edits ({:.0} ms) and live sync ({partner_edits} partner edits)",
        merged_in.as_secs_f64() * 1e3
    );
    for (what, v) in [("get", &mut gets), ("first timeline page", &mut pages)] {
        println!(
            "  {what:<20} n={:<6} p50={:.3} ms p99={:.3} ms max={:.3} ms",
            v.len(),
            pct(v, 0.5),
            pct(v, 0.99),
            pct(v, 1.0)
        );
    }
    relay.stop().await
}
