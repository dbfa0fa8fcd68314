//! The tokio runtime the bindings own.
//!
//! The core's transport (HTTP, WebSockets, timers) runs on tokio, and live sync must keep
//! running after `start_live` returns, so the bindings keep one small runtime for the life of
//! the process. Async exports spawn their work here and await its `JoinHandle`, which any
//! executor can poll: Kotlin coroutines, Swift tasks and Python's asyncio drive the handle,
//! tokio drives the work. Storage work (SQLite, Automerge) goes to the runtime's blocking pool,
//! never to the two workers that serve the sockets. (uniffi's own `tokio` feature would wrap
//! each future in async-compat, which starts a second runtime thread for nothing.)

use std::{future::Future, sync::LazyLock};

use tokio::runtime::{Builder, Runtime};

use crate::error::{MendError, Result};

/// Two workers: enough for two live sockets and a background round on a phone.
const WORKERS: usize = 2;
/// Blocking threads for storage calls; calls beyond this queue rather than start threads.
const BLOCKING: usize = 8;

static RUNTIME: LazyLock<std::io::Result<Runtime>> = LazyLock::new(|| {
    Builder::new_multi_thread()
        .worker_threads(WORKERS)
        .max_blocking_threads(BLOCKING)
        .thread_name("mend-sync")
        .enable_all()
        .build()
});

/// The runtime, started on first use.
pub(crate) fn runtime() -> Result<&'static Runtime> {
    RUNTIME
        .as_ref()
        .map_err(|e| MendError::Internal(format!("cannot start the sync runtime: {e}")))
}

/// Runs `future` on the runtime and waits for it without blocking the caller's thread.
pub(crate) async fn run<F, T>(future: F) -> Result<T>
where
    F: Future<Output = Result<T>> + Send + 'static,
    T: Send + 'static,
{
    runtime()?
        .spawn(future)
        .await
        .map_err(|e| MendError::Internal(format!("a sync task failed: {e}")))?
}

/// Runs storage work on the runtime's blocking pool and waits for it without blocking the
/// caller's thread. Cancelling the wait does not stop the work: a write runs to its commit.
pub(crate) async fn blocking<F, T>(work: F) -> Result<T>
where
    F: FnOnce() -> Result<T> + Send + 'static,
    T: Send + 'static,
{
    runtime()?
        .spawn_blocking(work)
        .await
        .map_err(|e| MendError::Internal(format!("a storage task failed: {e}")))?
}
