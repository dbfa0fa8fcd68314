//! The cost of one record write from Rust, for comparison with the same write through the
//! Kotlin bindings (bindings/kotlin/WriteBench.kt; both run by scripts/bench-bindings.sh).
//!
//! Two Rust paths: straight into mend-core, and through mend-ffi-api's Rust API (the translation
//! the bindings add, without crossing a foreign boundary). The same honesty moment is written
//! into a fresh journal each time; then the last one is read back as many times (`get`: no
//! disk), and the bare cost of a call (`is_live`). Percentiles are in microseconds.
//!
//! Usage: `cargo run --profile release-mobile -p mend-ffi-api --example write_cost -- [writes]`

use std::time::Instant;

use mend_core::{Body, Journal as CoreJournal, model};
use mend_ffi_api::{
    HonestyKind, HonestyMoment, HonestyTiming, Journal, JournalOptions, RecordBody,
};

/// Warm-up calls before each measurement (as many as the Kotlin side, which needs them for its
/// JIT), so both journals hold the same number of records.
const WARMUP: usize = 2000;

fn text(n: usize) -> String {
    format!("Told me about the message before I asked, without being prompted ({n})")
}

/// p50, p99 and mean of `micros`.
fn summary(micros: &mut [f64]) -> (f64, f64, f64) {
    micros.sort_by(f64::total_cmp);
    let at = |q: f64| micros[((micros.len() - 1) as f64 * q).round() as usize];
    (
        at(0.50),
        at(0.99),
        micros.iter().sum::<f64>() / micros.len() as f64,
    )
}

fn measure(
    writes: usize,
    mut write: impl FnMut(usize) -> Result<(), String>,
) -> Result<Vec<f64>, String> {
    let mut micros = Vec::with_capacity(writes);
    for n in 0..WARMUP + writes {
        let start = Instant::now();
        write(n)?;
        if n >= WARMUP {
            micros.push(start.elapsed().as_secs_f64() * 1e6);
        }
    }
    Ok(micros)
}

/// Awaits one async call of the bindings from this thread, as a foreign executor would.
fn wait<F: std::future::Future>(runtime: &tokio::runtime::Runtime, call: F) -> F::Output {
    runtime.block_on(call)
}

fn main() -> Result<(), String> {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .build()
        .map_err(|e| e.to_string())?;
    let writes: usize = match std::env::args().nth(1) {
        Some(a) => a
            .parse()
            .map_err(|_| format!("not a number of writes: {a}"))?,
        None => 2000,
    };
    let dir = tempfile::tempdir().map_err(|e| e.to_string())?;

    let mut core =
        CoreJournal::create(&dir.path().join("core.db"), "Alex").map_err(|e| e.to_string())?;
    let mut last = None;
    let mut core_micros = measure(writes, |n| {
        let body = Body::HonestyMoment(model::HonestyMoment {
            kind: model::HonestyKind::VolunteeredTruth,
            text: text(n),
            timing: model::HonestyTiming::ShareNow,
            ..Default::default()
        });
        last = Some(core.add(body).map_err(|e| e.to_string())?);
        Ok(())
    })?;
    let last = last.ok_or("nothing was written")?;
    let mut core_reads = measure(writes, |_| {
        core.get(last).map(drop).map_err(|e| e.to_string())
    })?;

    // The relay URL is never contacted: nothing here syncs.
    let path = dir.path().join("ffi.db").display().to_string();
    let ffi = wait(
        &runtime,
        Journal::create(
            path,
            "Alex".into(),
            "http://127.0.0.1:9".into(),
            JournalOptions::default(),
        ),
    )
    .map_err(|e| e.to_string())?;
    let mut last = mend_ffi_api::RecordId::default();
    let mut ffi_micros = measure(writes, |n| {
        let body = RecordBody::HonestyMoment {
            value: HonestyMoment {
                kind: HonestyKind::VolunteeredTruth,
                text: text(n),
                link: None,
                timing: HonestyTiming::ShareNow,
                noticed_on: None,
            },
        };
        last = wait(&runtime, ffi.add(body, None)).map_err(|e| e.to_string())?;
        Ok(())
    })?;
    let mut ffi_reads = measure(writes, |_| {
        wait(&runtime, ffi.get(last.clone()))
            .map(drop)
            .map_err(|e| e.to_string())
    })?;
    let mut ffi_calls = measure(writes, |_| {
        std::hint::black_box(ffi.is_live());
        Ok(())
    })?;

    for (name, what, micros) in [
        ("rust: mend-core", "add", &mut core_micros),
        ("rust: mend-ffi API", "add", &mut ffi_micros),
        ("rust: mend-core", "get", &mut core_reads),
        ("rust: mend-ffi API", "get", &mut ffi_reads),
        ("rust: mend-ffi API", "is_live", &mut ffi_calls),
    ] {
        let (p50, p99, mean) = summary(micros);
        println!("{name:<20} {what} n={writes} p50={p50:.1}us p99={p99:.1}us mean={mean:.1}us");
    }
    Ok(())
}
