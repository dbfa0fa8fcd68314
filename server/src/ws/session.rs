//! One live connection: backlog, `UpToDate`, then live chunks and pushes on the same socket.
//!
//! The session subscribes to the space before it reads the backlog, so nothing committed in
//! between is lost. It keeps a cursor: the highest relay sequence it has delivered or skipped
//! (the device's own chunks are withheld when the URL named its device). Live events that
//! continue the cursor are sent directly; a gap or a lagging channel sends the session back to
//! storage to catch up. Sends are awaited, so a slow reader slows only itself: its channel lags
//! and it catches up from storage later, while the relay's memory stays bounded. A send that
//! does not finish within the idle timeout ends the session.
//!
//! Pushes are kept in flight in order (up to a cap, beyond which the socket is not read), and
//! their answers, `Ack` or `Nack`, go out in push order. On shutdown the session stops reading,
//! sends the answers still in flight, then closes with 1001.

use std::{future::Future, pin::Pin, time::Duration};

use axum::extract::ws::{CloseFrame, Message, WebSocket};
use futures_util::{StreamExt, stream::FuturesOrdered};
use mend_protocol::{
    Ack, Chunk, ClientMessage, DecodeError, DeviceId, ErrorCode, Limits, Mark, Nack, Rollup,
    ServerMessage, SpaceId, UpToDate, close_code,
};
use tokio::{
    sync::broadcast::error::RecvError,
    time::{Instant, timeout},
};
use tokio_tungstenite::tungstenite;
use tokio_util::task::task_tracker::TaskTrackerToken;

use crate::{
    caps::{AddressConnectionGuard, SpaceConnectionGuard},
    error::UNAVAILABLE_LOG,
    live::LiveEvent,
    state::AppState,
    storage::{PullRequest, Pushed, StorageError},
    telemetry::Repeats,
};

/// Chunks per backlog page read from storage.
const BACKLOG_PAGE: usize = 256;
/// How long a closing session waits for the client's close reply.
const LINGER: Duration = Duration::from_secs(2);
/// How long a client should wait after an `unavailable` Nack.
const UNAVAILABLE_RETRY: Duration = Duration::from_secs(1);
/// Longest close reason WebSocket allows.
const MAX_REASON: usize = 123;
/// Retry hint for a push refused because its space has too many in flight.
const SPACE_PUSHES_RETRY: Duration = Duration::from_millis(100);

/// Why a session ends.
enum End {
    /// Storage is unavailable for a catch-up; a live session retries later instead of closing
    /// (after a database listener reconnects, every socket re-reads at once).
    Later,
    /// Close with this code and reason.
    Close(u16, String),
    /// The client started the closing handshake; its close reply is queued.
    ClientClosed,
    /// The client vanished; nothing more to send.
    Gone,
}

fn close(code: u16, reason: impl Into<String>) -> End {
    End::Close(code, reason.into())
}

/// The answer to one push, once it is known.
enum Answer {
    Stored {
        device_seq: u64,
        bytes: usize,
        started: Instant,
        result: Result<Pushed, StorageError>,
    },
    Refused(Nack),
}

type PendingAnswer = Pin<Box<dyn Future<Output = Answer> + Send>>;

enum Event {
    Shutdown,
    Answered(Answer),
    Live(Result<LiveEvent, RecvError>),
    Frame(Option<Result<Message, axum::Error>>),
    Retry,
    Idle,
}

/// The connection's slots under the per-space and per-address caps, freed when it ends.
pub(crate) type Slots = (SpaceConnectionGuard, Option<AddressConnectionGuard>);

/// A live connection to one space.
pub(crate) struct Session {
    state: AppState,
    space: SpaceId,
    device: Option<DeviceId>,
    cursor: u64,
    head: u64,
    /// The backlog serves rollups in place of the chunks they stand for.
    rollups: bool,
    _slots: Slots,
    /// The client's address key, for its share of the write queue.
    address: Option<[u8; 32]>,
    _task: TaskTrackerToken,
}

impl Session {
    pub(crate) fn new(
        state: AppState,
        space: SpaceId,
        device: Option<DeviceId>,
        after: u64,
        slots: Slots,
        address: Option<[u8; 32]>,
        task: TaskTrackerToken,
    ) -> Session {
        Session {
            state,
            space,
            device,
            cursor: after,
            head: 0,
            rollups: false,
            _slots: slots,
            address,
            _task: task,
        }
    }

    /// Serves rollups in the backlog (`rollups=true`); live chunks after it stay chunks.
    pub(crate) fn with_rollups(mut self, rollups: bool) -> Session {
        self.rollups = rollups;
        self
    }

    /// Serves the socket until it closes.
    pub(crate) async fn run(mut self, mut socket: WebSocket) {
        let metrics = self.state.metrics();
        metrics
            .live_open
            .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let end = match self.serve(&mut socket).await {
            Ok(()) => End::Gone,
            Err(end) => end,
        };
        if let End::ClientClosed = end {
            // Reading on flushes the queued close reply and sees the client hang up.
            let _ = timeout(LINGER, socket.recv()).await;
        }
        if let End::Close(code, mut reason) = end {
            tracing::debug!(code, "closing live connection");
            if reason.len() > MAX_REASON {
                let mut cut = MAX_REASON;
                while !reason.is_char_boundary(cut) {
                    cut -= 1;
                }
                reason.truncate(cut);
            }
            let frame = CloseFrame {
                code,
                reason: reason.into(),
            };
            let sent = timeout(LINGER, socket.send(Message::Close(Some(frame)))).await;
            if matches!(sent, Ok(Ok(()))) {
                // Read until the client's close reply so the close frame is not lost to a reset.
                let _ = timeout(LINGER, async {
                    while let Some(Ok(_)) = socket.recv().await {}
                })
                .await;
            }
        }
        self.state
            .metrics()
            .live_open
            .fetch_sub(1, std::sync::atomic::Ordering::Relaxed);
    }

    async fn serve(&mut self, socket: &mut WebSocket) -> Result<(), End> {
        let shutdown = self.state.shutdown().clone();
        if shutdown.is_cancelled() {
            return Err(close(close_code::GOING_AWAY, "relay shutting down"));
        }
        let mut subscription = self.state.live().subscribe(&self.space);
        let marks = self.catch_up(socket).await.map_err(|end| match end {
            End::Later => close(
                close_code::GOING_AWAY,
                "storage unavailable; reconnect later",
            ),
            other => other,
        })?;
        let (after_mark, head_mark) = marks;
        let up_to_date = UpToDate {
            head: self.head,
            after_mark,
            head_mark,
        };
        self.send(socket, up_to_date.to_bytes()).await?;

        let limits = self.state.config().limits.clone();
        let mut pending: FuturesOrdered<PendingAnswer> = FuturesOrdered::new();
        let idle = tokio::time::sleep(limits.idle_timeout);
        tokio::pin!(idle);
        let retry = tokio::time::sleep(Duration::ZERO);
        tokio::pin!(retry);
        let mut retrying = false;
        loop {
            let event = tokio::select! {
                biased;
                () = shutdown.cancelled() => Event::Shutdown,
                Some(answer) = pending.next(), if !pending.is_empty() => Event::Answered(answer),
                live = subscription.recv() => Event::Live(live),
                frame = socket.recv(), if pending.len() < limits.max_inflight_pushes => {
                    Event::Frame(frame)
                }
                () = &mut retry, if retrying => Event::Retry,
                () = &mut idle => Event::Idle,
            };
            match event {
                Event::Shutdown => {
                    let grace = self.state.config().shutdown_grace;
                    let _ = timeout(grace, async {
                        while let Some(answer) = pending.next().await {
                            self.answer(socket, answer).await?;
                        }
                        Ok::<(), End>(())
                    })
                    .await;
                    return Err(close(close_code::GOING_AWAY, "relay shutting down"));
                }
                Event::Answered(answer) => self.answer(socket, answer).await?,
                Event::Live(live) => match self.on_live(socket, live).await {
                    Err(End::Later) if !retrying => {
                        retrying = true;
                        retry.as_mut().reset(Instant::now() + self.retry_delay());
                    }
                    Err(End::Later) => {}
                    other => other?,
                },
                Event::Retry => match self.catch_up(socket).await.map(|_| ()) {
                    Err(End::Later) => retry.as_mut().reset(Instant::now() + self.retry_delay()),
                    other => {
                        retrying = false;
                        other?;
                    }
                },
                Event::Frame(frame) => {
                    idle.as_mut().reset(Instant::now() + limits.idle_timeout);
                    if let Some(answer) = self.on_frame(frame)? {
                        pending.push_back(answer);
                    }
                }
                Event::Idle => return Err(close(close_code::IDLE_TIMEOUT, "idle timeout")),
            }
        }
    }

    /// Sends every stored chunk after the cursor, page by page. Returns the marks of the chunks
    /// at the cursor it started from and at the head it ended on.
    async fn catch_up(
        &mut self,
        socket: &mut WebSocket,
    ) -> Result<(Option<Mark>, Option<Mark>), End> {
        let mut after_mark = None;
        let mut first = true;
        loop {
            let request = PullRequest {
                after: self.cursor,
                limit: BACKLOG_PAGE,
                max_bytes: self.state.config().limits.max_page_bytes,
                exclude_device: self.device,
                include_pruned: false,
                rollups: self.rollups,
            };
            let page = self
                .state
                .storage()
                .pull(self.space, request)
                .await
                .map_err(|error| match error {
                    StorageError::Pruned { snapshot_covers } => close(
                        close_code::PRUNED,
                        format!("pruned up to {snapshot_covers}; fetch the snapshot"),
                    ),
                    StorageError::SpaceNotFound => {
                        close(close_code::SPACE_NOT_FOUND, "space erased")
                    }
                    StorageError::Closed => close(close_code::GOING_AWAY, "relay shutting down"),
                    StorageError::Unavailable(error) => {
                        tracing::debug!(%error, "live catch-up: storage unavailable");
                        End::Later
                    }
                    other => {
                        tracing::error!(error = %other, "live catch-up failed");
                        close(close_code::INTERNAL, "internal error")
                    }
                })?;
            // Rollups sit at their relay sequence, among the chunks.
            let mut rollups = page.rollups.iter().peekable();
            for chunk in &page.chunks {
                while let Some(rollup) = rollups.next_if(|r| r.relay_seq < chunk.relay_seq) {
                    self.send_rollup(socket, rollup).await?;
                }
                self.send_chunk(socket, chunk).await?;
            }
            for rollup in rollups {
                self.send_rollup(socket, rollup).await?;
            }
            if std::mem::take(&mut first) {
                after_mark = page.after_mark;
            }
            self.cursor = page.next_after;
            self.head = page.head;
            if !page.more {
                return Ok((after_mark, page.next_mark));
            }
        }
    }

    /// One to two seconds, different per session, so sockets that failed together do not
    /// retry together.
    fn retry_delay(&self) -> Duration {
        let nanos = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.subsec_nanos());
        let spread = (nanos ^ u32::from(self.space.0[31])) % 1000;
        Duration::from_millis(1000 + u64::from(spread))
    }

    async fn send_chunk(&self, socket: &mut WebSocket, chunk: &Chunk) -> Result<(), End> {
        self.send(socket, chunk.to_bytes()).await?;
        self.state.metrics().sent(1, chunk.payload.len());
        Ok(())
    }

    async fn send_rollup(&self, socket: &mut WebSocket, rollup: &Rollup) -> Result<(), End> {
        self.send(socket, rollup.to_bytes()).await?;
        self.state.metrics().rollups_sent(rollup.payload.len());
        Ok(())
    }

    async fn on_live(
        &mut self,
        socket: &mut WebSocket,
        live: Result<LiveEvent, RecvError>,
    ) -> Result<(), End> {
        match live {
            Ok(LiveEvent::Chunk(chunk)) if chunk.relay_seq <= self.cursor => Ok(()),
            Ok(LiveEvent::Chunk(chunk)) if chunk.relay_seq == self.cursor + 1 => {
                self.cursor = chunk.relay_seq;
                if Some(chunk.device_id) != self.device {
                    self.send_chunk(socket, &chunk).await?;
                }
                Ok(())
            }
            Ok(LiveEvent::Head(head)) if head <= self.cursor => Ok(()),
            Ok(LiveEvent::Chunk(_) | LiveEvent::Head(_) | LiveEvent::Resync)
            | Err(RecvError::Lagged(_)) => self.catch_up(socket).await.map(|_| ()),
            Ok(LiveEvent::Erased) => Err(close(close_code::SPACE_NOT_FOUND, "space erased")),
            Err(RecvError::Closed) => Err(close(close_code::INTERNAL, "live feed closed")),
        }
    }

    /// Handles a client frame; a push becomes an answer to await.
    fn on_frame(
        &self,
        frame: Option<Result<Message, axum::Error>>,
    ) -> Result<Option<PendingAnswer>, End> {
        match frame {
            None => Err(End::Gone),
            Some(Ok(Message::Close(_))) => Err(End::ClientClosed),
            Some(Err(error)) => Err(classify(error)),
            Some(Ok(Message::Text(_))) => Err(close(
                close_code::TEXT_NOT_ACCEPTED,
                "text frames are not accepted; send binary frames",
            )),
            Some(Ok(Message::Ping(_) | Message::Pong(_))) => Ok(None),
            Some(Ok(Message::Binary(bytes))) => self.on_push(&bytes).map(Some),
        }
    }

    fn on_push(&self, bytes: &[u8]) -> Result<PendingAnswer, End> {
        let limits = &self.state.config().limits;
        // The socket's message limit already bounds the frame; decoding up to it lets an
        // oversized chunk be refused with a Nack rather than a closed connection.
        let decode_limits = Limits {
            max_chunk_bytes: limits.max_ws_message_bytes,
            ..Limits::DEFAULT
        };
        let push = match ClientMessage::decode(bytes, &decode_limits) {
            Ok(ClientMessage::Push(push)) => push,
            Err(DecodeError::UnsupportedVersion(version)) => {
                return Err(close(
                    close_code::UNSUPPORTED_VERSION,
                    format!("unsupported protocol version {version}"),
                ));
            }
            Err(error) => {
                return Err(close(
                    close_code::MALFORMED,
                    format!("malformed message: {error}"),
                ));
            }
        };
        let refuse = |code, retry: Duration, message: &str| -> PendingAnswer {
            let nack = Nack {
                device_seq: push.device_seq,
                code,
                retry_after_ms: retry.as_millis().min(u128::from(u64::MAX)) as u64,
                message: message.to_owned(),
            };
            Box::pin(std::future::ready(Answer::Refused(nack)))
        };
        if let Err(wait) = self.state.rate().check(&self.space) {
            return Ok(refuse(
                ErrorCode::RateLimited,
                wait,
                "too many requests for this space",
            ));
        }
        if push.payload.len() > limits.max_chunk_bytes {
            return Ok(refuse(
                ErrorCode::ChunkTooLarge,
                Duration::ZERO,
                "chunk exceeds the relay's chunk limit",
            ));
        }
        if push.payload.len() < limits.min_chunk_bytes {
            return Ok(refuse(
                ErrorCode::Malformed,
                Duration::ZERO,
                "a sealed payload is longer than this one",
            ));
        }
        // One space's sockets together hold a bounded share of the storage queue.
        let Some(slot) = self.state.space_pushes().try_acquire(&self.space) else {
            return Ok(refuse(
                ErrorCode::RateLimited,
                SPACE_PUSHES_RETRY,
                "too many pushes in flight for this space",
            ));
        };
        // And the address's share of the write queue, over all its sockets and requests.
        let Ok(share) = self.state.write_share(self.address) else {
            return Ok(refuse(
                ErrorCode::Unavailable,
                UNAVAILABLE_RETRY,
                "too many writes queued from this address",
            ));
        };
        // A live push's payload is held until storage answers, like a request body: it counts
        // against the same byte budgets.
        let Ok(reservation) = self.state.body_budget().try_reserve(
            self.space,
            self.address,
            push.payload.len() as u64,
        ) else {
            return Ok(refuse(
                ErrorCode::Unavailable,
                UNAVAILABLE_RETRY,
                "too many pushed bytes in flight; retry later",
            ));
        };
        let (device, device_seq) = (push.device_id, push.device_seq);
        let bytes = push.payload.len();
        let started = Instant::now();
        let stored = self
            .state
            .storage()
            .push(self.space, push, limits.space_quota_bytes);
        // Recorded on a task of its own, at most once an hour, for pushes let through only.
        drop(self.state.note_seen(self.space, device, self.address));
        // Held until the write is done, even if the socket closes first.
        let stored = self.state.write_to_end(stored, (slot, share, reservation));
        Ok(Box::pin(async move {
            let result = stored.await;
            Answer::Stored {
                device_seq,
                bytes,
                started,
                result,
            }
        }))
    }

    async fn answer(&self, socket: &mut WebSocket, answer: Answer) -> Result<(), End> {
        let metrics = self.state.metrics();
        let reply = match answer {
            Answer::Refused(nack) => ServerMessage::Nack(nack),
            Answer::Stored {
                device_seq,
                bytes,
                started,
                result,
            } => match result {
                Ok(pushed) => {
                    metrics.pushed(bytes, pushed.duplicate, started.elapsed());
                    ServerMessage::Ack(Ack {
                        device_seq,
                        relay_seq: pushed.relay_seq,
                        duplicate: pushed.duplicate,
                    })
                }
                Err(error @ StorageError::QuotaExceeded { .. }) => ServerMessage::Nack(Nack {
                    device_seq,
                    code: ErrorCode::QuotaExceeded,
                    retry_after_ms: 0,
                    message: error.to_string(),
                }),
                Err(error @ StorageError::RelayFull { .. }) => {
                    crate::error::note_relay_full(&error);
                    ServerMessage::Nack(Nack {
                        device_seq,
                        code: ErrorCode::RelayFull,
                        retry_after_ms: crate::error::RELAY_FULL_RETRY.as_millis() as u64,
                        message: crate::error::RELAY_FULL_MESSAGE.to_owned(),
                    })
                }
                Err(error @ StorageError::SeqConflict { .. }) => ServerMessage::Nack(Nack {
                    device_seq,
                    code: ErrorCode::SeqConflict,
                    retry_after_ms: 0,
                    message: error.to_string(),
                }),
                Err(StorageError::SpaceNotFound) => {
                    return Err(close(close_code::SPACE_NOT_FOUND, "space erased"));
                }
                Err(StorageError::Closed) => {
                    return Err(close(close_code::GOING_AWAY, "relay shutting down"));
                }
                Err(StorageError::Unavailable(error)) => {
                    if let Some(times) = Repeats::note_shared(&UNAVAILABLE_LOG) {
                        tracing::warn!(%error, times, "live push: storage unavailable");
                    }
                    ServerMessage::Nack(Nack {
                        device_seq,
                        code: ErrorCode::Unavailable,
                        retry_after_ms: UNAVAILABLE_RETRY.as_millis() as u64,
                        message: "storage unavailable; retry later".to_owned(),
                    })
                }
                Err(error) => {
                    tracing::error!(%error, "live push failed");
                    ServerMessage::Nack(Nack {
                        device_seq,
                        code: ErrorCode::Internal,
                        retry_after_ms: 1000,
                        message: "internal error; retry later".to_owned(),
                    })
                }
            },
        };
        if let ServerMessage::Nack(nack) = &reply {
            metrics.error(nack.code);
        }
        self.send(socket, reply.to_bytes()).await
    }

    /// Sends one frame, giving up after the idle timeout: a client that stops reading would
    /// otherwise hold the session (and what it is sending) for good, since the idle timer is
    /// not watched while a send is awaited. Either way the session ends without a close frame,
    /// which could not get through.
    async fn send(&self, socket: &mut WebSocket, frame: Vec<u8>) -> Result<(), End> {
        let within = self.state.config().limits.idle_timeout;
        match timeout(within, socket.send(Message::Binary(frame.into()))).await {
            Ok(Ok(())) => Ok(()),
            Ok(Err(_)) | Err(_) => Err(End::Gone),
        }
    }
}

/// Maps a WebSocket read error to the close the client should see.
fn classify(error: axum::Error) -> End {
    let error = error.into_inner();
    match error.downcast_ref::<tungstenite::Error>() {
        Some(tungstenite::Error::Capacity(_)) => close(
            close_code::MESSAGE_TOO_BIG,
            "message exceeds the relay's message limit",
        ),
        Some(tungstenite::Error::Protocol(_)) => {
            close(close_code::MALFORMED, "WebSocket protocol violation")
        }
        _ => End::Gone,
    }
}
