//! Logging set-up: text or JSON lines through `tracing`.
//!
//! Log lines carry event names, codes, sizes and timings. They never carry tokens, payloads or
//! request paths with ids: handlers log route templates, and token and payload types redact
//! themselves in `Debug`.

use std::time::{Duration, Instant};

use tracing_subscriber::EnvFilter;

use crate::cli::LogFormat;

/// Installs the global subscriber. `RUST_LOG`, if set, overrides `default_filter`.
pub fn init(format: LogFormat, default_filter: &str) {
    let filter = EnvFilter::try_from_default_env()
        .or_else(|_| EnvFilter::try_new(default_filter))
        .unwrap_or_else(|_| EnvFilter::new("info"));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .with_writer(std::io::stderr);
    // `try_init` fails only if a subscriber is already installed, which is fine.
    let _ = match format {
        LogFormat::Text => builder.try_init(),
        LogFormat::Json => builder.json().flatten_event(true).try_init(),
    };
}

/// Folds a warning that repeats (a full disk fails every checkpoint, every 50 ms) into one log
/// line per interval carrying how many times it happened, so the log stays readable and the
/// disk is not filled further by the log itself.
#[derive(Debug)]
pub struct Repeats {
    interval: Duration,
    last_logged: Option<Instant>,
    unlogged: u64,
}

impl Repeats {
    /// At most one line per `interval`.
    pub const fn new(interval: Duration) -> Repeats {
        Repeats {
            interval,
            last_logged: None,
            unlogged: 0,
        }
    }

    /// Counts one occurrence at `now`; `Some(n)` when a line is due, `n` being the occurrences
    /// it stands for (this one included). The first occurrence is always logged.
    pub fn note(&mut self, now: Instant) -> Option<u64> {
        self.unlogged = self.unlogged.saturating_add(1);
        let due = self
            .last_logged
            .is_none_or(|last| now.saturating_duration_since(last) >= self.interval);
        if !due {
            return None;
        }
        self.last_logged = Some(now);
        Some(std::mem::take(&mut self.unlogged))
    }

    /// [`Repeats::note`] on a shared instance; `Some(n)` when a line is due.
    pub fn note_shared(shared: &std::sync::Mutex<Repeats>) -> Option<u64> {
        shared
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .note(Instant::now())
    }

    /// Forgets past occurrences once the condition is over, so the next one is logged at once.
    pub fn clear(&mut self) {
        self.last_logged = None;
        self.unlogged = 0;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn repeated_warnings_become_one_line_per_interval_with_a_count() {
        let start = Instant::now();
        let mut repeats = Repeats::new(Duration::from_secs(60));
        let at = |ms: u64| start + Duration::from_millis(ms);
        // 65 s of failures every 50 ms: 1,301 occurrences.
        let lines: Vec<(u64, u64)> = (0..=1300u64)
            .filter_map(|i| repeats.note(at(i * 50)).map(|n| (i * 50, n)))
            .collect();
        assert_eq!(lines, [(0, 1), (60_000, 1200)]);
        repeats.clear();
        assert_eq!(
            repeats.note(at(65_050)),
            Some(1),
            "a new episode is logged at once"
        );
    }
}
