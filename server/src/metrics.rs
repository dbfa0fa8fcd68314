//! Counters and the ack-latency histogram, rendered in Prometheus text format at `/metrics`.
//!
//! Plain atomics instead of a metrics crate: the set is small and fixed, recording is a relaxed
//! add on the hot path, and nothing here can carry a label with user content (the only label
//! values are error code names).

use std::{
    fmt::Write,
    sync::atomic::{AtomicI64, AtomicU64, Ordering::Relaxed},
    time::Duration,
};

use mend_protocol::{ErrorCode, PairingState};

/// Upper bounds (seconds) of the ack-latency histogram buckets.
const LATENCY_BUCKETS: [f64; 12] = [
    0.0005, 0.001, 0.002, 0.005, 0.01, 0.02, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5,
];

/// A fixed-bucket histogram of durations.
#[derive(Debug, Default)]
pub struct Histogram {
    buckets: [AtomicU64; LATENCY_BUCKETS.len()],
    count: AtomicU64,
    sum_micros: AtomicU64,
}

impl Histogram {
    /// Records one observation.
    pub fn observe(&self, elapsed: Duration) {
        let seconds = elapsed.as_secs_f64();
        if let Some(index) = LATENCY_BUCKETS.iter().position(|&bound| seconds <= bound) {
            self.buckets[index].fetch_add(1, Relaxed);
        }
        self.count.fetch_add(1, Relaxed);
        self.sum_micros.fetch_add(
            elapsed.as_micros().min(u128::from(u64::MAX)) as u64,
            Relaxed,
        );
    }

    fn render(&self, out: &mut String, name: &str, help: &str) {
        let _ = writeln!(out, "# HELP {name} {help}\n# TYPE {name} histogram");
        let mut cumulative = 0;
        for (bound, bucket) in LATENCY_BUCKETS.iter().zip(&self.buckets) {
            cumulative += bucket.load(Relaxed);
            let _ = writeln!(out, "{name}_bucket{{le=\"{bound}\"}} {cumulative}");
        }
        let count = self.count.load(Relaxed);
        let _ = writeln!(out, "{name}_bucket{{le=\"+Inf\"}} {count}");
        let sum = self.sum_micros.load(Relaxed) as f64 / 1e6;
        let _ = writeln!(out, "{name}_sum {sum}\n{name}_count {count}");
    }
}

/// Everything `/metrics` reports.
#[derive(Debug, Default)]
pub struct Metrics {
    /// Open TCP connections.
    pub connections_open: AtomicI64,
    /// TCP connections accepted since start.
    pub connections_total: AtomicU64,
    /// TCP connections refused because the relay was at its connection cap.
    pub connections_refused: AtomicU64,
    /// Open live (WebSocket) connections.
    pub live_open: AtomicI64,
    /// Pushes stored (not counting duplicates).
    pub pushes_stored: AtomicU64,
    /// Pushes answered as duplicates.
    pub pushes_duplicate: AtomicU64,
    /// Payload bytes of stored pushes.
    pub push_bytes: AtomicU64,
    /// Chunks sent to devices (pulls and live).
    pub chunks_sent: AtomicU64,
    /// Payload bytes of chunks sent to devices.
    pub chunk_bytes_sent: AtomicU64,
    /// Rollups stored (not counting duplicates).
    pub rollups_stored: AtomicU64,
    /// Payload bytes of rollups sent to devices (pulls and live backlogs).
    pub rollup_bytes_sent: AtomicU64,
    /// Pruned chunks the sweep deleted.
    pub swept_chunks: AtomicU64,
    /// Payload bytes the sweep deleted.
    pub swept_bytes: AtomicU64,
    /// Pairing mailboxes opened.
    pub pairings_opened: AtomicU64,
    /// Pairing mailboxes claimed.
    pub pairings_claimed: AtomicU64,
    /// Pairing mailboxes closed.
    pub pairings_closed: AtomicU64,
    /// Pairing mailboxes burned.
    pub pairings_burned: AtomicU64,
    /// Pairing mailboxes that expired open or claimed (counted by the sweep).
    pub pairings_expired: AtomicU64,
    errors: [AtomicU64; ErrorCode::KNOWN.len()],
    /// Time from receiving a push to its acknowledgement being ready (after commit).
    pub ack_latency: Histogram,
}

impl Metrics {
    /// Counts an error answered to a client.
    pub fn error(&self, code: ErrorCode) {
        if let Some(index) = ErrorCode::KNOWN.iter().position(|&known| known == code) {
            self.errors[index].fetch_add(1, Relaxed);
        }
    }

    /// Counts a stored or duplicate push and its latency.
    pub fn pushed(&self, bytes: usize, duplicate: bool, latency: Duration) {
        if duplicate {
            self.pushes_duplicate.fetch_add(1, Relaxed);
        } else {
            self.pushes_stored.fetch_add(1, Relaxed);
            self.push_bytes.fetch_add(bytes as u64, Relaxed);
        }
        self.ack_latency.observe(latency);
    }

    /// Counts a rollup stored (duplicates are not counted).
    pub fn rollup_stored(&self, duplicate: bool) {
        if !duplicate {
            self.rollups_stored.fetch_add(1, Relaxed);
        }
    }

    /// Counts rollup payload bytes sent to a device.
    pub fn rollups_sent(&self, bytes: usize) {
        self.rollup_bytes_sent.fetch_add(bytes as u64, Relaxed);
    }

    /// Counts what one sweep deleted.
    pub fn swept(&self, swept: crate::storage::Swept) {
        self.swept_chunks.fetch_add(swept.chunks, Relaxed);
        self.swept_bytes.fetch_add(swept.bytes, Relaxed);
    }

    /// Counts a pairing mailbox moving to `state` (opened is [`PairingState::Open`]).
    pub fn pairing(&self, state: PairingState) {
        let counter = match state {
            PairingState::Open => &self.pairings_opened,
            PairingState::Claimed => &self.pairings_claimed,
            PairingState::Closed => &self.pairings_closed,
            PairingState::Burned => &self.pairings_burned,
            PairingState::Expired => &self.pairings_expired,
        };
        counter.fetch_add(1, Relaxed);
    }

    /// Counts mailboxes one sweep found expired.
    pub fn pairings_swept(&self, swept: crate::storage::PairingSwept) {
        self.pairings_expired.fetch_add(swept.expired, Relaxed);
    }

    /// Counts chunks sent to a device.
    pub fn sent(&self, chunks: usize, bytes: usize) {
        self.chunks_sent.fetch_add(chunks as u64, Relaxed);
        self.chunk_bytes_sent.fetch_add(bytes as u64, Relaxed);
    }

    /// The Prometheus text exposition.
    pub fn render(&self) -> String {
        let mut out = String::with_capacity(4096);
        let gauge = |out: &mut String, name: &str, help: &str, value: i64| {
            let _ = writeln!(
                out,
                "# HELP {name} {help}\n# TYPE {name} gauge\n{name} {value}"
            );
        };
        let counter = |out: &mut String, name: &str, help: &str, value: u64| {
            let _ = writeln!(
                out,
                "# HELP {name} {help}\n# TYPE {name} counter\n{name} {value}"
            );
        };
        gauge(
            &mut out,
            "mend_connections_open",
            "Open TCP connections.",
            self.connections_open.load(Relaxed),
        );
        counter(
            &mut out,
            "mend_connections_total",
            "TCP connections accepted.",
            self.connections_total.load(Relaxed),
        );
        counter(
            &mut out,
            "mend_connections_refused_total",
            "TCP connections refused at the connection cap.",
            self.connections_refused.load(Relaxed),
        );
        gauge(
            &mut out,
            "mend_live_connections_open",
            "Open live WebSocket connections.",
            self.live_open.load(Relaxed),
        );
        let _ = writeln!(
            out,
            "# HELP mend_pushes_total Pushes acknowledged, by outcome.\n# TYPE mend_pushes_total counter\n\
             mend_pushes_total{{outcome=\"stored\"}} {}\nmend_pushes_total{{outcome=\"duplicate\"}} {}",
            self.pushes_stored.load(Relaxed),
            self.pushes_duplicate.load(Relaxed)
        );
        let _ = writeln!(
            out,
            "# HELP mend_pairings_total Pairing mailboxes, by what happened to them.\n\
             # TYPE mend_pairings_total counter"
        );
        for (event, counter) in [
            ("opened", &self.pairings_opened),
            ("claimed", &self.pairings_claimed),
            ("closed", &self.pairings_closed),
            ("burned", &self.pairings_burned),
            ("expired", &self.pairings_expired),
        ] {
            let _ = writeln!(
                out,
                "mend_pairings_total{{event=\"{event}\"}} {}",
                counter.load(Relaxed)
            );
        }
        counter(
            &mut out,
            "mend_push_bytes_total",
            "Payload bytes of stored pushes.",
            self.push_bytes.load(Relaxed),
        );
        counter(
            &mut out,
            "mend_chunks_sent_total",
            "Chunks sent to devices.",
            self.chunks_sent.load(Relaxed),
        );
        counter(
            &mut out,
            "mend_chunk_bytes_sent_total",
            "Payload bytes of chunks sent to devices.",
            self.chunk_bytes_sent.load(Relaxed),
        );
        counter(
            &mut out,
            "mend_rollups_stored_total",
            "Rollups stored.",
            self.rollups_stored.load(Relaxed),
        );
        counter(
            &mut out,
            "mend_rollup_bytes_sent_total",
            "Payload bytes of rollups sent to devices.",
            self.rollup_bytes_sent.load(Relaxed),
        );
        counter(
            &mut out,
            "mend_swept_chunks_total",
            "Pruned chunks and rollups deleted after their grace.",
            self.swept_chunks.load(Relaxed),
        );
        counter(
            &mut out,
            "mend_swept_bytes_total",
            "Payload bytes of pruned chunks deleted after their grace.",
            self.swept_bytes.load(Relaxed),
        );
        let _ = writeln!(
            out,
            "# HELP mend_errors_total Errors answered to clients, by code.\n# TYPE mend_errors_total counter"
        );
        for (code, count) in ErrorCode::KNOWN.iter().zip(&self.errors) {
            let _ = writeln!(
                out,
                "mend_errors_total{{code=\"{}\"}} {}",
                code.name(),
                count.load(Relaxed)
            );
        }
        self.ack_latency.render(
            &mut out,
            "mend_ack_latency_seconds",
            "Time from receiving a push to its durable acknowledgement.",
        );
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn histogram_is_cumulative() {
        let metrics = Metrics::default();
        metrics.pushed(10, false, Duration::from_micros(300));
        metrics.pushed(10, true, Duration::from_millis(3));
        metrics.pushed(10, false, Duration::from_secs(10));
        metrics.error(ErrorCode::RateLimited);
        let text = metrics.render();
        assert!(
            text.contains("mend_ack_latency_seconds_bucket{le=\"0.0005\"} 1\n"),
            "{text}"
        );
        assert!(text.contains("mend_ack_latency_seconds_bucket{le=\"0.005\"} 2\n"));
        assert!(text.contains("mend_ack_latency_seconds_bucket{le=\"2.5\"} 2\n"));
        assert!(text.contains("mend_ack_latency_seconds_bucket{le=\"+Inf\"} 3\n"));
        assert!(text.contains("mend_pushes_total{outcome=\"stored\"} 2\n"));
        metrics.pairing(PairingState::Burned);
        assert!(
            metrics
                .render()
                .contains("mend_pairings_total{event=\"burned\"} 1\n")
        );
        assert!(text.contains("mend_push_bytes_total 20\n"));
        assert!(text.contains("mend_errors_total{code=\"rate_limited\"} 1\n"));
        metrics.rollup_stored(false);
        metrics.rollup_stored(true);
        metrics.rollups_sent(7);
        let text = metrics.render();
        assert!(text.contains("mend_rollups_stored_total 1\n"));
        assert!(text.contains("mend_rollup_bytes_sent_total 7\n"));
    }
}
