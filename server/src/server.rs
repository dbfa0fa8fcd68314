//! The accept loop: [`run`] serves the router on a listener until a shutdown signal.
//!
//! Owning the loop (instead of `axum::serve`) gives the relay the knobs it needs: TCP_NODELAY on
//! every socket, a relay-wide connection cap that also counts upgraded WebSockets, a timeout for
//! request headers (so a client that connects and sends nothing is dropped), a small bound on
//! the buffered request head, a deadline on writes the client does not read (so an answer built
//! in memory is not held for good), and a shutdown that finishes in-flight requests and
//! acknowledgements before storage closes. With [`run_tls`] the
//! same loop serves HTTPS and WSS: the handshake runs in the connection's task, under the header
//! timeout, so a slow handshake holds neither the loop nor more than its own connection slot.

use std::{
    future::Future,
    io,
    pin::Pin,
    sync::{Arc, atomic::Ordering::Relaxed},
    task::{Context, Poll},
    time::Duration,
};

use hyper::{
    body::Incoming,
    server::conn::http1,
    service::{HttpService, service_fn},
};
use hyper_util::rt::{TokioIo, TokioTimer};
use tokio::{
    io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt, ReadBuf},
    net::{TcpListener, TcpStream},
    sync::{OwnedSemaphorePermit, Semaphore},
};

use tokio_util::sync::CancellationToken;
use tower::ServiceExt;

use crate::{
    caps::AddressConnectionGuard,
    client::{PeerAddr, client_key},
    routes::{app, metrics_app},
    state::AppState,
    storage::StorageError,
    telemetry::Repeats,
    tls::Tls,
};

/// Answer to a connection over the relay-wide cap.
const OVER_CAPACITY: &[u8] =
    b"HTTP/1.1 503 Service Unavailable\r\ncontent-type: application/json\r\n\
content-length: 70\r\nconnection: close\r\n\r\n\
{\"error\":\"too_many_connections\",\"message\":\"the relay is at capacity\"}\n";

/// Largest request head, and the most bytes hyper buffers to read one: far above any head a
/// device or a proxy sends (a bearer token and a few short headers), far below hyper's ~400 KiB
/// default, which every connection could otherwise pin. Larger heads are answered 431. Hyper
/// refuses a buffer bound under 8 KiB.
const MAX_HEAD_BYTES: usize = 32 * 1024;

/// Connections over the cap being answered at once; beyond this they are dropped unanswered.
const MAX_PENDING_REFUSALS: usize = 64;
/// How long answering a refused connection may take.
const REFUSAL_TIMEOUT: Duration = Duration::from_secs(1);

/// Answers 503 on a connection over the cap (after a TLS handshake when the relay serves TLS),
/// then drains what the client sent so closing does not reset the connection before the answer
/// is read.
/// A connection over a cap: counted, and answered 503 while few refusals are pending (the rest
/// are dropped outright, so a flood cannot make the relay spend on answering it).
fn turn_away(stream: TcpStream, state: &AppState, refusals: &Arc<Semaphore>, tls: &Option<Tls>) {
    state.metrics().connections_refused.fetch_add(1, Relaxed);
    if let Ok(slot) = refusals.clone().try_acquire_owned() {
        let tls = tls.clone();
        tokio::spawn(async move {
            refuse(stream, tls).await;
            drop(slot);
        });
    }
}

async fn refuse(stream: TcpStream, tls: Option<Tls>) {
    let _ = tokio::time::timeout(REFUSAL_TIMEOUT, async {
        match tls {
            Some(tls) => answer_refusal(tls.acceptor().accept(stream).await?).await,
            None => answer_refusal(stream).await,
        }
    })
    .await;
}

async fn answer_refusal(mut stream: impl AsyncRead + AsyncWrite + Unpin) -> io::Result<()> {
    {
        stream.write_all(OVER_CAPACITY).await?;
        stream.shutdown().await?;
        let mut sink = [0u8; 1024];
        while stream.read(&mut sink).await? > 0 {}
        Ok(())
    }
}

/// Serves `state` on `listener` until `shutdown` resolves, then stops accepting, lets open
/// requests and live sessions finish their in-flight acknowledgements (up to the configured
/// grace), and closes storage.
pub async fn run(
    listener: TcpListener,
    state: AppState,
    shutdown: impl Future<Output = ()> + Send,
) -> Result<(), StorageError> {
    serve(listener, state, None, shutdown).await
}

/// [`run`], serving HTTPS and WSS with `tls`'s certificate (swapped in place by
/// [`Tls::reload`]).
pub async fn run_tls(
    listener: TcpListener,
    state: AppState,
    tls: Tls,
    shutdown: impl Future<Output = ()> + Send,
) -> Result<(), StorageError> {
    serve(listener, state, Some(tls), shutdown).await
}

/// Connections the metrics address serves at once; more wait in the listen backlog. A scraper
/// and a probe or two need a handful.
const MAX_METRICS_CONNECTIONS: usize = 8;

/// Serves `/metrics`, `/healthz` and `/readyz` in plain HTTP on `listener` (the
/// `--metrics-listen` address) until `shutdown`, which the binary fires once the public side
/// has drained, so a relay finishing its work can still be watched. One request per
/// connection, a few connections at once, under the header timeout: nothing on that address
/// can hold more of the relay than that.
pub async fn run_metrics(
    listener: TcpListener,
    state: AppState,
    shutdown: impl Future<Output = ()> + Send,
) {
    if let Ok(addr) = listener.local_addr() {
        tracing::info!(metrics = %addr, "serving metrics");
    }
    let router = metrics_app(state.clone());
    let slots = Arc::new(Semaphore::new(MAX_METRICS_CONNECTIONS));
    let mut http = http1::Builder::new();
    http.timer(TokioTimer::new())
        .header_read_timeout(state.config().limits.header_timeout)
        .max_buf_size(MAX_HEAD_BYTES)
        .keep_alive(false);
    let timeout = state.config().limits.header_timeout;
    tokio::pin!(shutdown);
    loop {
        let slot = tokio::select! {
            () = &mut shutdown => return,
            slot = slots.clone().acquire_owned() => match slot {
                Ok(slot) => slot,
                Err(_) => return,
            },
        };
        let stream = tokio::select! {
            () = &mut shutdown => return,
            accepted = listener.accept() => match accepted {
                Ok((stream, _)) => stream,
                Err(error) => {
                    tracing::debug!(%error, "metrics accept failed");
                    tokio::time::sleep(Duration::from_millis(20)).await;
                    continue;
                }
            },
        };
        let router = router.clone();
        let http = http.clone();
        tokio::spawn(async move {
            let service = service_fn(move |request| router.clone().oneshot(request));
            // The whole exchange is bounded: a reader that stops reading is dropped too.
            let _ = tokio::time::timeout(
                timeout.saturating_mul(2),
                http.serve_connection(TokioIo::new(stream), service),
            )
            .await;
            drop(slot);
        });
    }
}

async fn serve(
    listener: TcpListener,
    state: AppState,
    tls: Option<Tls>,
    shutdown: impl Future<Output = ()> + Send,
) -> Result<(), StorageError> {
    let router = app(state.clone());
    let permits = Arc::new(Semaphore::new(state.config().limits.max_connections));
    let refusals = Arc::new(Semaphore::new(MAX_PENDING_REFUSALS));
    let mut http = http1::Builder::new();
    http.timer(TokioTimer::new())
        .header_read_timeout(state.config().limits.header_timeout)
        .max_header_size(MAX_HEAD_BYTES)
        .max_buf_size(MAX_HEAD_BYTES)
        .keep_alive(true);
    if let Ok(addr) = listener.local_addr() {
        match &tls {
            Some(tls) => tracing::info!(%addr, pin = %tls.pin(), "listening with TLS"),
            None => tracing::info!(%addr, "listening"),
        }
    }
    // Pruned chunks past their grace are deleted on a timer; the shutdown waits for the sweep
    // in hand before storage closes.
    state.tasks().spawn(crate::sweeper::run(state.clone()));
    let mut accept_failures = Repeats::new(Duration::from_secs(10));
    tokio::pin!(shutdown);
    loop {
        let (stream, peer) = tokio::select! {
            () = &mut shutdown => break,
            accepted = listener.accept() => match accepted {
                Ok(accepted) => {
                    accept_failures.clear();
                    accepted
                }
                Err(error) => {
                    // Out of file descriptors, usually: back off instead of spinning, and log
                    // one line per interval rather than one per attempt.
                    if let Some(times) = accept_failures.note(std::time::Instant::now()) {
                        tracing::warn!(%error, times, "accept failed (times: since the last line)");
                    }
                    tokio::time::sleep(Duration::from_millis(20)).await;
                    continue;
                }
            },
        };
        let _ = stream.set_nodelay(true);
        // One address may hold only its share of the connections. Behind a proxy every
        // connection comes from the proxy, so the cap is then taken per request, at the
        // WebSocket upgrade, from the proxy's header.
        let address = match state.config().limits.client_ip_header {
            Some(_) => None,
            None => match state.tcp_connections().try_acquire(&client_key(peer.ip())) {
                Some(slot) => Some(slot),
                None => {
                    turn_away(stream, &state, &refusals, &tls);
                    continue;
                }
            },
        };
        let Ok(permit) = permits.clone().try_acquire_owned() else {
            turn_away(stream, &state, &refusals, &tls);
            continue;
        };
        state.metrics().connections_total.fetch_add(1, Relaxed);
        state.metrics().connections_open.fetch_add(1, Relaxed);
        let counted = CountedStream {
            stream,
            _permit: permit,
            _address: address,
            state: state.clone(),
            stall: WriteStall::new(state.config().limits.write_timeout),
        };
        let router = router.clone();
        // Each request carries its peer, for the limits per client address.
        let service = service_fn(move |mut request: hyper::Request<Incoming>| {
            request.extensions_mut().insert(PeerAddr(peer));
            router.clone().oneshot(request)
        });
        let http = http.clone();
        let cancelled = state.shutdown().clone();
        let handshake_timeout = state.config().limits.header_timeout;
        let tls = tls.clone();
        state.tasks().spawn(async move {
            let Some(tls) = tls else {
                drive(&http, counted, service, &cancelled).await;
                return;
            };
            // The handshake counts against the header timeout: a client that opens a
            // connection and stalls is dropped as it would be in the clear.
            let accepted = tokio::select! {
                accepted = tokio::time::timeout(handshake_timeout, tls.acceptor().accept(counted)) => accepted,
                () = cancelled.cancelled() => return,
            };
            let stream = match accepted {
                Ok(Ok(stream)) => stream,
                Ok(Err(error)) => {
                    tracing::debug!(%error, "TLS handshake failed");
                    return;
                }
                Err(_) => {
                    tracing::debug!("TLS handshake timed out");
                    return;
                }
            };
            drive(&http, stream, service, &cancelled).await;
        });
    }

    tracing::info!("shutting down: finishing in-flight work");
    state.shutdown().cancel();
    drop(listener);
    state.tasks().close();
    let grace = state.config().shutdown_grace;
    if tokio::time::timeout(grace, state.tasks().wait())
        .await
        .is_err()
    {
        tracing::warn!(
            ?grace,
            "some connections did not finish within the grace period"
        );
    }
    state.storage().close().await?;
    tracing::info!("stopped");
    Ok(())
}

/// Serves one connection until it ends, or until shutdown, when it finishes the request in
/// hand first.
async fn drive<I, S>(http: &http1::Builder, io: I, service: S, cancelled: &CancellationToken)
where
    I: AsyncRead + AsyncWrite + Unpin + Send + 'static,
    S: HttpService<Incoming>,
    S::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
    S::ResBody: 'static,
    <S::ResBody as hyper::body::Body>::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
{
    let connection = http
        .serve_connection(TokioIo::new(io), service)
        .with_upgrades();
    tokio::pin!(connection);
    tokio::select! {
        _ = connection.as_mut() => {}
        () = cancelled.cancelled() => {
            connection.as_mut().graceful_shutdown();
            let _ = connection.await;
        }
    }
}

/// A TCP stream that holds a slot of the relay-wide connection cap until it is dropped, which
/// for an upgraded WebSocket is when the WebSocket closes. Its writes fail once one has made
/// no progress for [`crate::config::Limits::write_timeout`].
struct CountedStream {
    stream: TcpStream,
    _permit: OwnedSemaphorePermit,
    _address: Option<AddressConnectionGuard>,
    state: AppState,
    stall: WriteStall,
}

/// The deadline of a write that cannot make progress. A client that stops reading would
/// otherwise hold its connection slot, and the answer built in memory for it (a snapshot, a
/// page), for as long as it keeps the connection open; failing the write makes hyper (or the
/// WebSocket) drop the connection and everything it holds.
struct WriteStall {
    limit: Duration,
    /// Allocated at the first stall and reused, so connections that never stall pay nothing.
    timer: Option<Pin<Box<tokio::time::Sleep>>>,
    armed: bool,
}

impl WriteStall {
    fn new(limit: Duration) -> WriteStall {
        WriteStall {
            limit,
            timer: None,
            armed: false,
        }
    }

    /// Passes on a write's outcome: progress (or an error) disarms the deadline, a stall arms
    /// it (from the first stall on) and, once it has passed, becomes an error.
    fn check<T>(
        &mut self,
        cx: &mut Context<'_>,
        polled: Poll<io::Result<T>>,
    ) -> Poll<io::Result<T>> {
        if polled.is_ready() {
            self.armed = false;
            return polled;
        }
        // A limit too far off to count (from an absurd flag) is no limit.
        let Some(due) = tokio::time::Instant::now().checked_add(self.limit) else {
            return polled;
        };
        let timer = self
            .timer
            .get_or_insert_with(|| Box::pin(tokio::time::sleep_until(due)));
        if !self.armed {
            timer.as_mut().reset(due);
            self.armed = true;
        }
        match timer.as_mut().poll(cx) {
            Poll::Ready(()) => Poll::Ready(Err(io::Error::new(
                io::ErrorKind::TimedOut,
                "the client stopped reading",
            ))),
            Poll::Pending => Poll::Pending,
        }
    }
}

impl Drop for CountedStream {
    fn drop(&mut self) {
        self.state.metrics().connections_open.fetch_sub(1, Relaxed);
    }
}

impl AsyncRead for CountedStream {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().stream).poll_read(cx, buf)
    }
}

impl AsyncWrite for CountedStream {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        let this = self.get_mut();
        let polled = Pin::new(&mut this.stream).poll_write(cx, buf);
        this.stall.check(cx, polled)
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        let this = self.get_mut();
        let polled = Pin::new(&mut this.stream).poll_write_vectored(cx, bufs);
        this.stall.check(cx, polled)
    }

    fn is_write_vectored(&self) -> bool {
        self.stream.is_write_vectored()
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        let polled = Pin::new(&mut this.stream).poll_flush(cx);
        this.stall.check(cx, polled)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().stream).poll_shutdown(cx)
    }
}

#[cfg(test)]
mod tests {
    use super::OVER_CAPACITY;

    #[test]
    fn over_capacity_answer_declares_its_length() {
        let text = String::from_utf8_lossy(OVER_CAPACITY);
        let (head, body) = text.split_once("\r\n\r\n").unwrap_or_default();
        assert!(
            head.contains(&format!("content-length: {}", body.len())),
            "{text}"
        );
    }
}
