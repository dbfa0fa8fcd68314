//! The periodic sweep of pruned chunks whose grace is over.
//!
//! Pruned chunks stay on disk, and in both byte counters, until their grace ends. Deleting them
//! only when the same space uploads its next snapshot would let a space that never does so (or
//! a client that repeats "push, then a garbage snapshot") keep them forever, so the relay sweeps
//! every space on a timer, a bounded batch per tick so one tick never holds the writer long.

use std::time::Duration;

use crate::{
    state::AppState,
    storage::{StorageError, Swept},
    telemetry::Repeats,
};

/// Deletes one batch of expired pruned chunks and counts it in the metrics.
pub async fn sweep_once(state: &AppState) -> Result<Swept, StorageError> {
    let limits = &state.config().limits;
    let swept = state
        .storage()
        .sweep_pruned(limits.prune_grace, limits.sweep_batch)
        .await?;
    state.metrics().swept(swept);
    if swept.chunks > 0 {
        tracing::debug!(
            chunks = swept.chunks,
            bytes = swept.bytes,
            "pruned chunks swept"
        );
    }
    Ok(swept)
}

/// Sweeps every [`crate::config::Limits::sweep_interval`] until the relay shuts down. A full
/// batch is followed by the next one at once (after yielding), up to a few per tick, so a
/// backlog drains faster than one batch per interval without starving other writes.
pub(crate) async fn run(state: AppState) {
    /// Batches one tick may run back to back.
    const MAX_BATCHES_PER_TICK: usize = 8;
    let interval = state
        .config()
        .limits
        .sweep_interval
        .max(Duration::from_millis(1));
    let mut failures = Repeats::new(Duration::from_secs(60));
    loop {
        tokio::select! {
            () = state.shutdown().cancelled() => return,
            () = tokio::time::sleep(interval) => {}
        }
        for _ in 0..MAX_BATCHES_PER_TICK {
            match sweep_once(&state).await {
                Ok(swept)
                    if usize::try_from(swept.chunks).unwrap_or(usize::MAX)
                        >= state.config().limits.sweep_batch =>
                {
                    tokio::task::yield_now().await;
                }
                Ok(_) => break,
                Err(error) => {
                    if let Some(times) = failures.note(std::time::Instant::now()) {
                        tracing::warn!(%error, times, "sweeping pruned chunks failed");
                    }
                    break;
                }
            }
        }
    }
}
