//! The background checkpointer: copies committed WAL frames into the database file off the
//! writer thread.
//!
//! SQLite's automatic checkpoint runs inside the commit that crosses the WAL size threshold,
//! which would stall every acknowledgement waiting on that commit. A passive checkpoint from
//! this thread does the copying ahead of time without blocking the writer, so when the writer's
//! own automatic checkpoint comes due there is little left to copy, and the WAL can restart.

use std::{
    path::PathBuf,
    sync::mpsc::{self, RecvTimeoutError},
    thread::JoinHandle,
    time::{Duration, Instant},
};

use super::schema;
use crate::telemetry::Repeats;

/// At most one line per this interval while checkpoints keep failing.
const FAILURE_LOG_INTERVAL: Duration = Duration::from_secs(60);

/// A running checkpointer; stops when dropped or stopped.
#[derive(Debug)]
pub(crate) struct Checkpointer {
    stop: Option<mpsc::Sender<()>>,
    thread: Option<JoinHandle<()>>,
}

impl Checkpointer {
    /// Starts checkpointing the database at `path` every `interval`.
    pub(crate) fn start(path: PathBuf, interval: Duration) -> std::io::Result<Checkpointer> {
        let (stop, stopped) = mpsc::channel::<()>();
        let thread = std::thread::Builder::new()
            .name("mend-sqlite-checkpoint".into())
            .spawn(move || {
                let conn = match schema::open_checkpointer(&path) {
                    Ok(conn) => conn,
                    Err(error) => {
                        tracing::error!(%error, "cannot open the checkpointer connection");
                        return;
                    }
                };
                // A full disk fails every checkpoint: one line per minute, with the count.
                let mut failures = Repeats::new(FAILURE_LOG_INTERVAL);
                // Runs until told to stop (a message or the sender dropped).
                while let Err(RecvTimeoutError::Timeout) = stopped.recv_timeout(interval) {
                    match conn.query_row("PRAGMA wal_checkpoint(PASSIVE)", [], |_| Ok(())) {
                        Ok(()) => failures.clear(),
                        Err(error) => {
                            if let Some(times) = failures.note(Instant::now()) {
                                tracing::warn!(%error, times, "checkpoint failed (times: since the last line)");
                            }
                        }
                    }
                }
            })?;
        Ok(Checkpointer {
            stop: Some(stop),
            thread: Some(thread),
        })
    }

    /// Stops the thread and waits for it.
    pub(crate) fn stop(&mut self) {
        drop(self.stop.take());
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

impl Drop for Checkpointer {
    fn drop(&mut self) {
        self.stop();
    }
}
