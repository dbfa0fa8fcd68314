//! How long erasing a large space holds up pushes to other spaces on the SQLite relay: one
//! space filled with `chunks` chunks of 1 KiB, then erased while another space takes one push
//! after another; prints the erase's own time and the pushes' latencies meanwhile.
//!
//! Usage: `cargo run --release -p mend-bench --bin erase-stall -- [chunks] [runs]`

use std::{
    sync::{
        Arc,
        atomic::{AtomicBool, Ordering},
    },
    time::{Duration, Instant},
};

use anyhow::{Context, Result};
use mend_protocol::{DeviceId, Push, SpaceId};
use mend_relay::{
    config::GroupCommit,
    live::LocalHub,
    storage::{EraseReason, Storage, sqlite::SqliteStorage},
};

fn main() -> Result<()> {
    let mut args = std::env::args().skip(1);
    let chunks: u64 = mend_bench::arg(&mut args, 200_000)?;
    let runs: usize = mend_bench::arg(&mut args, 3)?;
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()?;
    for run in 0..runs {
        runtime.block_on(once(chunks, run))?;
    }
    Ok(())
}

async fn once(chunks: u64, run: usize) -> Result<()> {
    let dir = tempfile::tempdir()?;
    let storage = Arc::new(SqliteStorage::open(
        dir.path(),
        Arc::new(LocalHub::default()),
        GroupCommit::default(),
    )?);
    let (big, other) = (SpaceId([5; 32]), SpaceId([6; 32]));
    storage.create_space(big, [5; 32]).await?;
    storage.create_space(other, [6; 32]).await?;
    // Filled straight into the file: pushing them one by one would take minutes.
    {
        let db = rusqlite::Connection::open(dir.path().join(mend_relay::storage::sqlite::DB_FILE))?;
        db.busy_timeout(Duration::from_secs(10))?;
        db.execute(
            "WITH RECURSIVE g(n) AS (SELECT 1 UNION ALL SELECT n + 1 FROM g WHERE n < ?2)
             INSERT INTO chunks (space, seq, device_id, device_seq, payload)
             SELECT s.id, n, x'02020202020202020202020202020202', n, randomblob(1024)
             FROM spaces s, g WHERE s.space_id = ?1",
            rusqlite::params![&big.0[..], i64::try_from(chunks)?],
        )?;
    }
    let erasing = Arc::new(AtomicBool::new(true));
    let pusher = tokio::spawn({
        let (storage, erasing) = (Arc::clone(&storage), Arc::clone(&erasing));
        async move {
            let mut latencies = Vec::new();
            let mut seq = 0u64;
            while erasing.load(Ordering::Relaxed) {
                seq += 1;
                let push = Push {
                    device_id: DeviceId([1; 16]),
                    device_seq: seq,
                    payload: vec![7; 1024],
                };
                let started = Instant::now();
                storage.push(other, push, u64::MAX).await?;
                latencies.push(started.elapsed());
            }
            anyhow::Ok(latencies)
        }
    });
    tokio::time::sleep(Duration::from_millis(200)).await;
    let started = Instant::now();
    storage.erase(big, EraseReason::Erased).await?;
    let erase = started.elapsed();
    erasing.store(false, Ordering::Relaxed);
    let mut latencies = pusher.await.context("pusher")??;
    latencies.sort();
    let at = |q: f64| {
        let i = ((latencies.len() as f64 - 1.0) * q).round() as usize;
        latencies.get(i).copied().unwrap_or_default()
    };
    println!(
        "run {run}: {chunks} chunks erased in {:.0} ms; pushes to another space meanwhile: {} \
         (p50 {:.1} ms, p99 {:.1} ms, max {:.1} ms)",
        erase.as_secs_f64() * 1e3,
        latencies.len(),
        at(0.5).as_secs_f64() * 1e3,
        at(0.99).as_secs_f64() * 1e3,
        latencies.last().copied().unwrap_or_default().as_secs_f64() * 1e3,
    );
    Arc::try_unwrap(storage)
        .map_err(|_| anyhow::anyhow!("storage still shared"))?
        .close()
        .await?;
    Ok(())
}
