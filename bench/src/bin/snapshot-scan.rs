//! What a snapshot of a long-lived space costs the SQLite relay's one writer: one space holding
//! `rows` chunk rows, then `snapshots` rounds of one push and one snapshot covering it; prints
//! the snapshots' latencies. Every write waits behind a snapshot in the writer. The rows are
//! `swept` (pruned long ago, payloads gone, as a space that has taken many pushes keeps them)
//! or `held` (pruned now, 40-byte payloads kept for the grace, as after a client pushed many
//! small chunks and snapshotted them away).
//!
//! Usage: `cargo run --release -p mend-bench --bin snapshot-scan -- [rows] [snapshots] [swept|held]`

use std::{
    sync::Arc,
    time::{Duration, Instant},
};

use anyhow::Result;
use mend_protocol::{DeviceId, Push, Snapshot, SpaceId};
use mend_relay::{
    config::GroupCommit,
    live::LocalHub,
    storage::{Storage, sqlite::SqliteStorage},
};

fn main() -> Result<()> {
    let mut args = std::env::args().skip(1);
    let rows: u64 = mend_bench::arg(&mut args, 1_500_000)?;
    let snapshots: u64 = mend_bench::arg(&mut args, 50)?;
    let held = match args.next().as_deref() {
        None | Some("swept") => false,
        Some("held") => true,
        Some(other) => anyhow::bail!("rows are `swept` or `held`, not {other:?}"),
    };
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()?;
    runtime.block_on(run(rows, snapshots, held))
}

async fn run(rows: u64, snapshots: u64, held: bool) -> Result<()> {
    let dir = tempfile::tempdir()?;
    let storage = SqliteStorage::open(
        dir.path(),
        Arc::new(LocalHub::default()),
        GroupCommit::default(),
    )?;
    let space = SpaceId([5; 32]);
    storage.create_space(space, [5; 32]).await?;
    // Filled straight into the file, before the writer reads the space: pushing, snapshotting
    // and sweeping them one by one would take hours.
    {
        let db = rusqlite::Connection::open(dir.path().join(mend_relay::storage::sqlite::DB_FILE))?;
        db.busy_timeout(Duration::from_secs(10))?;
        let rows = i64::try_from(rows)?;
        let now = i64::try_from(
            std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)?
                .as_secs(),
        )?;
        let (payload, pruned_at) = if held { (40, now) } else { (0, 1000) };
        db.execute(
            "WITH RECURSIVE g(n) AS (SELECT 1 UNION ALL SELECT n + 1 FROM g WHERE n < ?2)
             INSERT INTO chunks (space, seq, device_id, device_seq, payload, payload_hash, pruned_at)
             SELECT s.id, n, x'02020202020202020202020202020202', n,
                    CASE WHEN ?3 > 0 THEN zeroblob(?3) END, randomblob(32), ?4
             FROM spaces s, g WHERE s.space_id = ?1",
            rusqlite::params![&space.0[..], rows, payload, pruned_at],
        )?;
        db.execute(
            "UPDATE spaces SET next_seq = ?2 + 1, covers = ?2, bytes_used = ?2 * ?3
             WHERE space_id = ?1",
            rusqlite::params![&space.0[..], rows, payload],
        )?;
        // The counter of pruned bytes, where the schema has one.
        let _ = db.execute(
            "UPDATE spaces SET pruned_bytes = ?2 * ?3 WHERE space_id = ?1",
            rusqlite::params![&space.0[..], rows, payload],
        );
    }
    let mut latencies = Vec::new();
    for i in 1..=snapshots {
        let seq = rows + i;
        let push = Push {
            device_id: DeviceId([2; 16]),
            device_seq: seq,
            payload: vec![7; 64],
        };
        storage.push(space, push, u64::MAX).await?;
        let snapshot = Snapshot {
            covers: seq,
            payload: vec![9; 64],
        };
        let started = Instant::now();
        storage
            .put_snapshot(
                space,
                snapshot,
                u64::MAX,
                Duration::from_secs(3 * 24 * 3600),
            )
            .await?;
        latencies.push(started.elapsed());
    }
    latencies.sort();
    let at = |q: f64| {
        let i = ((latencies.len() as f64 - 1.0) * q).round() as usize;
        latencies.get(i).copied().unwrap_or_default().as_secs_f64() * 1e3
    };
    println!(
        "{rows} {} rows: {snapshots} snapshots, p50 {:.2} ms, p99 {:.2} ms, max {:.2} ms",
        if held { "held" } else { "swept" },
        at(0.5),
        at(0.99),
        latencies.last().copied().unwrap_or_default().as_secs_f64() * 1e3,
    );
    storage.close().await?;
    Ok(())
}
