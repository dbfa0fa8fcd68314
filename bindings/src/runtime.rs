//! The tokio runtime the bindings own.
//!
//! The core's transport (HTTP, WebSockets, timers) runs on tokio, and live sync must keep
//! running after `start_live` returns, so the bindings keep one small runtime for the life of
//! the process. Async exports spawn their work here and await its `JoinHandle`, which any
//! executor can poll: Kotlin coroutines, Swift tasks and Python's asyncio drive the handle,
//! tokio drives the work. Storage work (SQLite, Automerge) goes to the runtime's blocking pool,
//! never to the two workers that serve the sockets. (uniffi's own `tokio` feature would wrap
//! each future in async-compat, which starts a second runtime thread for nothing.)

use std::{any::Any, future::Future, pin::Pin, sync::LazyLock};

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

/// What a spawned task hands back, before [`run`] and [`blocking`] restore its type.
type Output = Box<dyn Any + Send>;

/// Runs `future` on the runtime and waits for it without blocking the caller's thread.
/// Cancelling the wait leaves the work running to its end.
pub(crate) async fn run<F, T>(future: F) -> Result<T>
where
    F: Future<Output = Result<T>> + Send + 'static,
    T: Send + 'static,
{
    let out = run_boxed(Box::pin(async move { Box::new(future.await) as Output })).await?;
    unbox(out)
}

/// Runs storage work on the runtime's blocking pool and waits for it without blocking the
/// caller's thread. Cancelling the wait does not stop the work: a write runs to its commit.
pub(crate) async fn blocking<F, T>(work: F) -> Result<T>
where
    F: FnOnce() -> Result<T> + Send + 'static,
    T: Send + 'static,
{
    let out = blocking_boxed(Box::new(move || Box::new(work()) as Output)).await?;
    unbox(out)
}

// Every call spawns through these two non-generic functions: tokio builds a task's machinery
// (poll, drop, wake, join) once per future or closure type it spawns, which for some fifty
// async exports cost ~180 KB of the app's library (docs/benchmarks.md, "Mobile bindings").

async fn run_boxed(future: Pin<Box<dyn Future<Output = Output> + Send>>) -> Result<Output> {
    runtime()?
        .spawn(future)
        .await
        .map_err(|e| MendError::Internal(format!("a sync task failed: {e}")))
}

async fn blocking_boxed(work: Box<dyn FnOnce() -> Output + Send>) -> Result<Output> {
    runtime()?
        .spawn_blocking(work)
        .await
        .map_err(|e| MendError::Internal(format!("a storage task failed: {e}")))
}

/// The task's own result, with the type its caller spawned it with.
fn unbox<T: 'static>(out: Output) -> Result<T> {
    match out.downcast::<Result<T>>() {
        Ok(result) => *result,
        Err(_) => Err(MendError::Internal(
            "a task returned another type than it was spawned with".into(),
        )),
    }
}
