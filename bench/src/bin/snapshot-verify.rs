//! How long a new device takes to check and load a large journal from a snapshot: every
//! change's signature and rules, then the merge and the commit. Beside it, the same load with
//! nothing checked (a journal without a signer), so the checks' own cost shows.
//!
//! Usage: `cargo run --release -p mend-bench --bin snapshot-verify -- [records] [runs]`

use std::time::Instant;

use anyhow::{Result, ensure};
use mend_bench::journal::{Keys, build_signed, sign_with, signing};
use mend_core::{
    JoinSource, Journal, Space,
    crypto::{DeviceKey, PartnerIdentity},
    sync::SyncStore,
};

fn main() -> Result<()> {
    let mut args = std::env::args().skip(1);
    let records: usize = mend_bench::arg(&mut args, 10_000)?;
    let runs: usize = mend_bench::arg(&mut args, 5)?;
    let dir = tempfile::tempdir()?;
    let space_id = [9u8; 32];
    let alex: Keys = (
        space_id,
        PartnerIdentity::generate()?,
        DeviceKey::generate()?,
    );
    eprintln!("building a {records}-record journal…");
    let mut a = build_signed(&dir.path().join("a.db"), records, Some(&alex))?;
    a.ready()?;
    let (doc, peers) = a.snapshot_material(Space::Couple)?;
    let shared = a.shared_records()?.len();
    eprintln!("shared records: {shared}");
    eprintln!("snapshot: {} bytes", doc.len());
    let mut checked = Vec::new();
    let mut unchecked = Vec::new();
    for run in 0..runs {
        for check in [true, false] {
            let blake: Keys = (
                space_id,
                PartnerIdentity::generate()?,
                DeviceKey::generate()?,
            );
            let path = dir.path().join(format!("b{run}-{check}.db"));
            let source = JoinSource::default();
            let mut b = Journal::join_with(&path, &source, "Blake", signing(&blake))?;
            if check {
                sign_with(&mut b, &blake)?;
            }
            let t = Instant::now();
            let merged = b.apply_snapshot(Space::Couple, &doc, &peers, 1)?;
            let ms = t.elapsed().as_secs_f64() * 1e3;
            ensure!(
                !merged.unusable,
                "the snapshot was refused: {:?}",
                merged.forged
            );
            ensure!(
                b.shared_records()?.len() == shared,
                "the snapshot did not load ({} records, checked: {check}, {:?})",
                b.shared_records()?.len(),
                merged.forged
            );
            if check { &mut checked } else { &mut unchecked }.push(ms);
        }
    }
    let pct = |v: &mut Vec<f64>, p: f64| {
        v.sort_by(f64::total_cmp);
        v[((v.len() as f64 - 1.0) * p).round() as usize]
    };
    println!("records={records} runs={runs}");
    println!(
        "verify and load: p50={:.0} ms max={:.0} ms",
        pct(&mut checked, 0.5),
        pct(&mut checked, 1.0)
    );
    println!(
        "load, nothing checked: p50={:.0} ms max={:.0} ms",
        pct(&mut unchecked, 0.5),
        pct(&mut unchecked, 1.0)
    );
    Ok(())
}
