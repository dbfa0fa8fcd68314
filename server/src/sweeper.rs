//! The periodic sweep of pruned chunks whose grace is over.
//!
//! Pruned chunks stay on disk, and in both byte counters, until their grace ends. Deleting them
//! only when the same space uploads its next snapshot would let a space that never does so (or
//! a client that repeats "push, then a garbage snapshot") keep them forever, so the relay sweeps
//! every space on a timer, a bounded batch per tick so one tick never holds the writer long.
//! Each tick also expires pairing mailboxes and forgets old ones (a handful of rows: mailboxes
//! are few and short-lived).

use std::time::Duration;

use crate::{
    state::AppState,
    storage::{PairingSwept, StorageError, Swept, pairing::PAIRING_LINGER, unix_now},
    telemetry::Repeats,
};

/// Payload bytes one sweep batch deletes (past its first chunk), whatever its chunk count: a
/// batch of large chunks stays a short transaction that does not hold its spaces for long.
pub const SWEEP_BATCH_BYTES: u64 = 64 << 20;

/// How much one sweep batch may take.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Batch {
    chunks: usize,
    bytes: u64,
}

impl Batch {
    fn full(state: &AppState) -> Batch {
        Batch {
            chunks: state.config().limits.sweep_batch.max(1),
            bytes: SWEEP_BATCH_BYTES,
        }
    }

    /// After a failure, half as much (down to one chunk): a batch too large to finish within
    /// the database's statement timeout would otherwise fail the same way on every tick.
    fn shrunk(self) -> Batch {
        Batch {
            chunks: (self.chunks / 2).max(1),
            bytes: (self.bytes / 2).max(1),
        }
    }

    /// After a success, twice as much, up to `full`.
    fn grown(self, full: Batch) -> Batch {
        Batch {
            chunks: self.chunks.saturating_mul(2).min(full.chunks),
            bytes: self.bytes.saturating_mul(2).min(full.bytes),
        }
    }

    /// Whether `swept` stopped at this batch's bound, so more may be due.
    fn filled_by(self, swept: Swept) -> bool {
        usize::try_from(swept.chunks).unwrap_or(usize::MAX) >= self.chunks
            || swept.bytes >= self.bytes
    }
}

/// Deletes one full batch of expired pruned chunks and counts it in the metrics.
pub async fn sweep_once(state: &AppState) -> Result<Swept, StorageError> {
    sweep_batch(state, Batch::full(state)).await
}

async fn sweep_batch(state: &AppState, batch: Batch) -> Result<Swept, StorageError> {
    let swept = state
        .storage()
        .sweep_pruned(state.config().limits.prune_grace, batch.chunks, batch.bytes)
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

/// Marks pairing mailboxes past their expiry expired, deleting their messages, and forgets
/// them [`PAIRING_LINGER`] later; counts the expired ones in the metrics.
pub async fn sweep_pairings_once(state: &AppState) -> Result<PairingSwept, StorageError> {
    let swept = state
        .storage()
        .sweep_pairings(unix_now(), PAIRING_LINGER)
        .await?;
    state.metrics().pairings_swept(swept);
    if swept.expired > 0 || swept.forgotten > 0 {
        tracing::debug!(
            expired = swept.expired,
            forgotten = swept.forgotten,
            "pairing mailboxes swept"
        );
    }
    Ok(swept)
}

/// Sweeps every [`crate::config::Limits::sweep_interval`] until the relay shuts down. A full
/// batch is followed by the next one at once (after yielding), up to a few per tick, so a
/// backlog drains faster than one batch per interval without starving other writes. A batch
/// that fails makes the next one smaller, and batches grow back as they succeed.
pub(crate) async fn run(state: AppState) {
    /// Batches one tick may run back to back.
    const MAX_BATCHES_PER_TICK: usize = 8;
    let interval = state
        .config()
        .limits
        .sweep_interval
        .max(Duration::from_millis(1));
    let full = Batch::full(&state);
    let mut batch = full;
    let mut failures = Repeats::new(Duration::from_secs(60));
    loop {
        tokio::select! {
            () = state.shutdown().cancelled() => return,
            () = tokio::time::sleep(interval) => {}
        }
        if let Err(error) = sweep_pairings_once(&state).await
            && let Some(times) = failures.note(std::time::Instant::now())
        {
            tracing::warn!(%error, times, "sweeping pairing mailboxes failed");
        }
        for _ in 0..MAX_BATCHES_PER_TICK {
            match sweep_batch(&state, batch).await {
                Ok(swept) => {
                    let filled = batch.filled_by(swept);
                    batch = batch.grown(full);
                    if !filled {
                        break;
                    }
                    tokio::task::yield_now().await;
                }
                Err(error) => {
                    batch = batch.shrunk();
                    if let Some(times) = failures.note(std::time::Instant::now()) {
                        tracing::warn!(%error, times, "sweeping pruned chunks failed");
                    }
                    break;
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A batch that keeps failing halves until it is one chunk, then grows back to the full
    /// batch as it succeeds; a batch counts as full by either of its bounds.
    #[test]
    fn failing_batches_shrink_and_succeeding_ones_grow_back() {
        let full = Batch {
            chunks: 1000,
            bytes: 64 << 20,
        };
        let mut batch = full;
        let mut sizes = Vec::new();
        for _ in 0..12 {
            batch = batch.shrunk();
            sizes.push(batch.chunks);
        }
        assert_eq!(sizes, [500, 250, 125, 62, 31, 15, 7, 3, 1, 1, 1, 1]);
        assert_eq!(batch.bytes, (64 << 20) >> 12);
        for _ in 0..12 {
            batch = batch.grown(full);
        }
        assert_eq!(batch, full);
        assert!(full.filled_by(Swept {
            chunks: 1000,
            bytes: 1
        }));
        assert!(full.filled_by(Swept {
            chunks: 3,
            bytes: 64 << 20
        }));
        assert!(!full.filled_by(Swept {
            chunks: 999,
            bytes: 1 << 20
        }));
    }
}
