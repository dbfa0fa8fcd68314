//! The relay's HTTP routes, as the engine's requests, over a small HTTP/1.1 client.
//!
//! The device sends a few plain HTTP/1.1 requests per round (docs/protocol.md §4), so this
//! client replaces hyper and hyper-util, which made up ~290 KB of the app's library
//! (docs/benchmarks.md, "Mobile bindings"). `httparse` (already here for the WebSocket
//! handshake) reads the answers: `Content-Length`, chunked and read-to-close bodies. It runs
//! over TLS or, to this machine, clear text ([`crate::transport`]), and everything it reads is
//! bounded: the head, each chunk-size line, the body (per request kind) and the time, which
//! grows with the bytes moved, never without end.

use std::{
    io::Write as _,
    sync::{Arc, Mutex},
    time::{Duration, Instant},
};

use http::{Method, StatusCode};
use httparse::Status;
use mend_protocol::{
    AUTH_SCHEME, Ack, DeviceList, ErrorCode, Limits, MAX_PAGE_LIMIT, Page, Sizes, Snapshot,
    SpaceId, Successor, paths,
};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use zeroize::Zeroizing;

use mend_core::{
    error::{Error, Result},
    sync::{Failure, Request, Response, SpaceLink},
};

use crate::transport::{RelayOptions, Scheme, Stream, Target};

/// Time every exchange gets before its bytes count: connecting is bounded on its own.
const BASE_TIME: Duration = Duration::from_secs(10);

/// How long sending `bytes` may take: [`BASE_TIME`] plus the bytes at [`MIN_RATE`]. A relay
/// that stops reading (or a link that stalls) costs this much, never the minutes TCP takes to
/// give up.
pub(crate) fn send_time(bytes: usize) -> Duration {
    let bytes = u64::try_from(bytes).unwrap_or(u64::MAX);
    BASE_TIME.saturating_add(Duration::from_millis(bytes.saturating_mul(1000) / MIN_RATE))
}

/// The slowest transfer rate waited for, in bytes per second: an exchange may take
/// `BASE_TIME` plus its bytes (sent, and received so far) at this rate. A relay that drips
/// slower, or announces more than it sends, is cut off; a large snapshot on a slow link still
/// arrives.
const MIN_RATE: u64 = 16 * 1024;
/// Idle connections kept for the next requests (a round runs a few at once).
const MAX_IDLE: usize = 4;
/// An idle connection older than this is dropped: the relay closes quiet ones after 15 s.
const IDLE_FOR: Duration = Duration::from_secs(10);
/// Largest response head (and trailer section).
const MAX_HEAD: usize = 16 * 1024;
/// Largest chunk-size line, extensions included.
const MAX_CHUNK_LINE: usize = 1024;
/// Room for framing, JSON error bodies and headers around a payload.
const SLACK: usize = 64 * 1024;
/// Largest body of an answer that carries no payload (an ack, an error).
const SMALL_BODY: usize = SLACK;

/// Largest body of a pulled page: the relay's page cap plus each chunk's framing.
fn page_body(limits: &Limits) -> usize {
    limits
        .max_page_bytes
        .max(limits.max_chunk_bytes)
        .saturating_add(MAX_PAGE_LIMIT.saturating_mul(128))
        .saturating_add(SLACK)
}

/// A kept-alive connection and when it went idle.
#[derive(Debug)]
struct Idle {
    stream: Stream,
    since: Instant,
}

/// A status, the `Retry-After` header in milliseconds and the body.
type Answer = (StatusCode, Option<u64>, Vec<u8>);

/// How an exchange failed.
#[derive(Debug, PartialEq, Eq)]
enum Trip {
    /// Not a byte came back: on a reused connection the relay may have closed it before
    /// reading the request, or read it and been cut off before answering.
    Silent,
    /// Anything else.
    Failed,
}

/// Whether a request may be sent again after a kept-alive connection closed without a word
/// (docs/protocol.md §4 and §11 say which requests the relay takes twice as once).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Replay {
    /// Taking it twice is taking it once: reads, `PUT`s and `DELETE`s, pushes (the relay
    /// answers a repeat as a duplicate by device and sequence), rollups (by their range).
    Safe,
    /// Taking it twice does it twice: opening, claiming or posting to a pairing mailbox,
    /// which the relay does not deduplicate. Sent on a fresh connection and never again.
    Never,
}

/// The largest error body whose code is read: the relay's are a few dozen bytes, and a
/// relay that sends more (up to a snapshot's limit) is not given that much parsing.
const MAX_ERROR_BODY: usize = 4 * 1024;

/// HTTP/1.1 connections to one relay, kept alive between requests.
#[derive(Clone, Debug)]
pub struct RelayHttp {
    base: String,
    scheme: Scheme,
    /// `None` when the URL has no usable host or port: every request then fails as
    /// unreachable, as it did when the HTTP library refused the URL.
    target: Option<Arc<Target>>,
    idle: Arc<Mutex<Vec<Idle>>>,
    /// The last refusal the user must act on (a certificate, a pin, clear text).
    problem: Arc<Mutex<Option<String>>>,
}

impl RelayHttp {
    /// A client for the relay at `url` (`https://host[:port]`, or `http://` to this machine
    /// or with [`RelayOptions::allow_insecure_cleartext`]).
    pub fn new(url: &str, options: &RelayOptions) -> Result<Self> {
        let base = url.trim().trim_end_matches('/').to_owned();
        let Some((scheme, rest)) = Scheme::split(&base).filter(|(_, rest)| !rest.is_empty()) else {
            return Err(Error::Invalid(format!(
                "a relay URL looks like https://host[:port], not {:?}",
                mend_core::ids::truncate(url)
            )));
        };
        let target = Target::parse(scheme, rest, options)?.map(Arc::new);
        Ok(Self {
            base,
            scheme,
            target,
            idle: Arc::default(),
            problem: Arc::default(),
        })
    }

    /// Refuses now what every connection would refuse (clear text off this machine without
    /// the opt-in), for callers setting a relay up.
    pub fn check(&self) -> Result<()> {
        match self.target.as_deref().and_then(Target::refusal) {
            Some(why) => Err(Error::UntrustedRelay(why.to_owned())),
            None => Ok(()),
        }
    }

    /// The relay's base URL.
    pub fn base(&self) -> &str {
        &self.base
    }

    /// The last refusal the user must act on since the previous call (a certificate that
    /// failed verification or the pin, clear text off this machine), taken.
    pub fn take_problem(&self) -> Option<String> {
        self.problem.lock().ok().and_then(|mut p| p.take())
    }

    /// The WebSocket URL for a path.
    pub(crate) fn ws_url(&self, path: &str) -> String {
        let rest = Scheme::split(&self.base).map_or("", |(_, rest)| rest);
        format!("{}{rest}{path}", self.scheme.ws())
    }

    /// Connects to the relay, TLS included (the live socket uses it too).
    pub(crate) async fn connect(&self) -> std::result::Result<Stream, Failure> {
        let target = self.target.as_deref().ok_or(Failure::Unreachable)?;
        target.connect(&self.problem).await
    }

    async fn call(
        &self,
        method: Method,
        path: &str,
        token: &str,
        body: Option<Vec<u8>>,
        max_body: usize,
        replay: Replay,
    ) -> std::result::Result<Answer, Failure> {
        let target = self.target.as_deref().ok_or(Failure::Unreachable)?;
        let body = body.unwrap_or_default();
        // The token is in this buffer: sized up front so it never reallocates (which would
        // leave a copy behind), and wiped when dropped.
        let mut request = Zeroizing::new(Vec::with_capacity(
            256 + target.prefix.len()
                + path.len()
                + target.authority.len()
                + token.len()
                + body.len(),
        ));
        let head = write!(
            request,
            "{method} {}{path} HTTP/1.1\r\nhost: {}\r\n",
            target.prefix, target.authority
        )
        .and_then(|()| {
            // A pairing claim goes without one: the guest has no token yet.
            if !token.is_empty() {
                write!(request, "authorization: {AUTH_SCHEME} {token}\r\n")?;
            }
            if !body.is_empty() {
                write!(request, "content-type: {}\r\n", paths::FRAME_CONTENT_TYPE)?;
            }
            if !body.is_empty() || method != Method::GET {
                write!(request, "content-length: {}\r\n", body.len())?;
            }
            request.extend_from_slice(b"\r\n");
            Ok(())
        });
        head.map_err(|_| Failure::Unreachable)?;
        request.extend_from_slice(&body);
        let started = Instant::now();
        let answer = self.exchange(&request, max_body, replay).await;
        // The method, status and sizes only: paths name the space, headers carry its token.
        let ms = u64::try_from(started.elapsed().as_millis()).unwrap_or(u64::MAX);
        match &answer {
            Ok((status, _, got)) => tracing::debug!(
                %method,
                status = status.as_u16(),
                sent = body.len(),
                received = got.len(),
                ms,
                "relay answered"
            ),
            Err(_) => tracing::debug!(%method, ms, "relay did not answer"),
        }
        answer
    }

    /// Sends `request` on an idle connection or a new one and reads the answer.
    async fn exchange(
        &self,
        request: &[u8],
        max_body: usize,
        replay: Replay,
    ) -> std::result::Result<Answer, Failure> {
        // An idle connection the relay closed meanwhile looks like one cut after the request
        // was read: only a request that may go twice risks it.
        let idle = match replay {
            Replay::Safe => self.take_idle(),
            Replay::Never => None,
        };
        if let Some(stream) = idle {
            match round_trip(stream, request, max_body).await {
                Ok((answer, reusable)) => return Ok(self.keep(answer, reusable)),
                // Closed with nothing read back: most likely closed before the request came.
                Err(Trip::Silent) => {}
                Err(Trip::Failed) => return Err(Failure::Unreachable),
            }
        }
        tracing::trace!("connecting to the relay");
        let stream = self.connect().await?;
        let (answer, reusable) = round_trip(stream, request, max_body)
            .await
            .map_err(|_| Failure::Unreachable)?;
        Ok(self.keep(answer, reusable))
    }

    fn take_idle(&self) -> Option<Stream> {
        let mut idle = self.idle.lock().ok()?;
        idle.retain(|c| c.since.elapsed() < IDLE_FOR);
        idle.pop().map(|c| c.stream)
    }

    /// Returns the connection to the pool if it may carry another request.
    fn keep(&self, answer: Answer, reusable: Option<Stream>) -> Answer {
        if let (Some(stream), Ok(mut idle)) = (reusable, self.idle.lock())
            && idle.len() < MAX_IDLE
        {
            idle.push(Idle {
                stream,
                since: Instant::now(),
            });
        }
        answer
    }

    /// One request on the relay's pairing mailbox (docs/protocol.md §11): `token` is the
    /// ticket's token in hex, empty for a claim. Answers the status and body of whatever the
    /// relay said; `Unreachable` when it said nothing, and the refusal of a certificate or pin
    /// as such.
    pub(crate) async fn pairing(
        &self,
        method: Method,
        path: &str,
        token: &str,
        body: Option<Vec<u8>>,
    ) -> Result<(StatusCode, Vec<u8>)> {
        // Reads and closes of a mailbox may go twice; a second open, claim or message would
        // be taken as another one (a message twice reads as tampered on the other side).
        let replay = if method == Method::POST {
            Replay::Never
        } else {
            Replay::Safe
        };
        match self
            .call(method, path, token, body, SMALL_BODY, replay)
            .await
        {
            Ok((status, _, body)) => Ok((status, body)),
            Err(_) => Err(self
                .take_problem()
                .map_or(Error::Unreachable, Error::UntrustedRelay)),
        }
    }

    /// Erases a space at the relay (a partner leaving, a separation). Idempotent: a space that
    /// is already gone counts as erased.
    pub async fn erase(&self, link: &SpaceLink) -> Result<()> {
        self.delete(link, &paths::space(&SpaceId(link.keys.space_id)))
            .await
    }

    /// Retires a space a new epoch replaced: deleted like [`RelayHttp::erase`], its tombstone
    /// telling a device still on it that the journal moved on without it.
    pub async fn retire(&self, link: &SpaceLink) -> Result<()> {
        self.delete(link, &paths::retire(&SpaceId(link.keys.space_id)))
            .await
    }

    async fn delete(&self, link: &SpaceLink, path: &str) -> Result<()> {
        let (status, retry, body) = self
            .call(
                Method::DELETE,
                path,
                link.keys.token.expose(),
                None,
                SMALL_BODY,
                Replay::Safe,
            )
            .await
            .map_err(|_| Error::Unreachable)?;
        match ok(status, retry, &body) {
            Ok(())
            | Err(
                Failure::SpaceGone
                | Failure::Refused {
                    code: ErrorCode::SpaceErased | ErrorCode::SpaceRetired,
                    ..
                },
            ) => Ok(()),
            Err(Failure::Unauthorized) => {
                Err(Error::Invalid("the relay refused this device's key".into()))
            }
            Err(_) => Err(Error::Unreachable),
        }
    }

    /// When the relay last served each device of a space ([`DeviceList`]).
    pub async fn devices(&self, link: &SpaceLink) -> Result<DeviceList> {
        let id = SpaceId(link.keys.space_id);
        let (status, retry, body) = self
            .call(
                Method::GET,
                &paths::devices(&id),
                link.keys.token.expose(),
                None,
                SMALL_BODY,
                Replay::Safe,
            )
            .await
            .map_err(|_| Error::Unreachable)?;
        ok(status, retry, &body).map_err(|_| Error::Unreachable)?;
        DeviceList::decode(&body, &Limits::DEFAULT).map_err(|_| Error::Unreachable)
    }

    /// Offers `id` as the announcement that ends the space's epoch and answers the one the
    /// relay keeps (the first offered): [`Successor`].
    pub async fn claim_successor(&self, link: &SpaceLink, id: [u8; 32]) -> Result<[u8; 32]> {
        let space = SpaceId(link.keys.space_id);
        let (status, retry, body) = self
            .call(
                Method::PUT,
                &paths::successor(&space),
                link.keys.token.expose(),
                Some(Successor { id }.to_bytes()),
                SMALL_BODY,
                // The relay keeps the first offered and answers it to every offer.
                Replay::Safe,
            )
            .await
            .map_err(|_| Error::Unreachable)?;
        ok(status, retry, &body).map_err(|_| Error::Unreachable)?;
        Successor::decode(&body, &Limits::DEFAULT)
            .map(|s| s.id)
            .map_err(|_| Error::Unreachable)
    }

    /// Carries one request; every outcome becomes a [`Response`].
    pub async fn execute(
        &self,
        link: &SpaceLink,
        device: &[u8; 16],
        request: &Request,
    ) -> Response {
        let space = link.space;
        match self.try_execute(link, device, request).await {
            Ok(r) => r,
            Err(failure) => Response::Failed { space, failure },
        }
    }

    /// [`RelayHttp::execute`] cut at `deadline`: connecting, the TLS handshake, writing and
    /// reading each get at most the time left, and a cut request fails as unreachable (its
    /// connection is dropped, never kept for another request).
    pub async fn execute_until(
        &self,
        link: &SpaceLink,
        device: &[u8; 16],
        request: &Request,
        deadline: tokio::time::Instant,
    ) -> Response {
        match tokio::time::timeout_at(deadline, self.execute(link, device, request)).await {
            Ok(response) => response,
            Err(_) => Response::Failed {
                space: link.space,
                failure: Failure::Unreachable,
            },
        }
    }

    async fn try_execute(
        &self,
        link: &SpaceLink,
        device: &[u8; 16],
        request: &Request,
    ) -> std::result::Result<Response, Failure> {
        let space = link.space;
        let id = SpaceId(link.keys.space_id);
        let token = link.keys.token.expose();
        let limits = Limits::DEFAULT;
        let malformed = |_| Failure::Unreachable;
        match request {
            Request::Create { .. } => {
                let (status, retry, body) = self
                    .call(
                        Method::PUT,
                        &paths::space(&id),
                        token,
                        None,
                        SMALL_BODY,
                        Replay::Safe,
                    )
                    .await?;
                ok(status, retry, &body)?;
                let new = status == StatusCode::CREATED;
                Ok(Response::Created { space, new })
            }
            Request::Push { push, .. } => {
                let (status, retry, body) = self
                    .call(
                        Method::POST,
                        &paths::chunks(&id),
                        token,
                        Some(push.to_bytes()),
                        SMALL_BODY,
                        Replay::Safe,
                    )
                    .await?;
                ok(status, retry, &body)?;
                let ack = Ack::decode(&body, &limits).map_err(malformed)?;
                Ok(Response::Acked { space, ack })
            }
            Request::Pull { after, .. } | Request::Subscribe { after, .. } => {
                // The answer carries the pull's id back (a subscription over HTTP has none).
                let (pull, rollups, pruned) = match request {
                    Request::Pull {
                        id,
                        rollups,
                        pruned,
                        ..
                    } => (*id, *rollups, *pruned),
                    Request::Subscribe { rollups, .. } => (0, *rollups, false),
                    _ => (0, false, false),
                };
                let device = mend_protocol::DeviceId(*device);
                let mut path = paths::pull(&id, *after, Some(MAX_PAGE_LIMIT), Some(&device));
                if rollups {
                    path.push_str(&format!("&{}=true", paths::QUERY_ROLLUPS));
                }
                if pruned {
                    path.push_str(&format!("&{}=true", paths::QUERY_PRUNED));
                }
                let (status, retry, body) = self
                    .call(
                        Method::GET,
                        &path,
                        token,
                        None,
                        page_body(&limits),
                        Replay::Safe,
                    )
                    .await?;
                ok(status, retry, &body)?;
                let page = Page::decode(&body, &limits).map_err(malformed)?;
                let after = *after;
                Ok(Response::Page {
                    space,
                    after,
                    id: pull,
                    page,
                })
            }
            Request::PushRollup { rollup, .. } => {
                let (status, retry, body) = self
                    .call(
                        Method::POST,
                        &paths::rollups(&id),
                        token,
                        Some(rollup.to_bytes()),
                        SMALL_BODY,
                        Replay::Safe,
                    )
                    .await?;
                ok(status, retry, &body)?;
                Ok(Response::RollupStored {
                    space,
                    last_seq: rollup.last_seq,
                })
            }
            Request::Sizes { after, .. } => {
                let device = mend_protocol::DeviceId(*device);
                let path = paths::sizes_after(&id, *after, Some(&device));
                let (status, retry, body) = self
                    .call(Method::GET, &path, token, None, SMALL_BODY, Replay::Safe)
                    .await?;
                ok(status, retry, &body)?;
                let sizes = Sizes::decode(&body, &limits).map_err(malformed)?;
                Ok(Response::Sizes { space, sizes })
            }
            Request::GetSnapshot { .. } => {
                let (status, retry, body) = self
                    .call(
                        Method::GET,
                        &paths::snapshot(&id),
                        token,
                        None,
                        limits.max_snapshot_bytes.saturating_add(SLACK),
                        Replay::Safe,
                    )
                    .await?;
                if status == StatusCode::NOT_FOUND
                    && error_code(&body) == Some(ErrorCode::NoSnapshot)
                {
                    return Ok(Response::Snapshot {
                        space,
                        snapshot: None,
                    });
                }
                ok(status, retry, &body)?;
                // A body that is not a snapshot is a bad snapshot, not a relay out of reach: an
                // empty one fails its checks in the engine, which reports it as such.
                let snapshot = Snapshot::decode(&body, &limits).unwrap_or(Snapshot {
                    covers: 0,
                    payload: Vec::new(),
                });
                Ok(Response::Snapshot {
                    space,
                    snapshot: Some(snapshot),
                })
            }
            Request::PutSnapshot { snapshot, .. } => {
                let (status, retry, body) = self
                    .call(
                        Method::PUT,
                        &paths::snapshot(&id),
                        token,
                        Some(snapshot.to_bytes()),
                        SMALL_BODY,
                        // The same snapshot again replaces itself.
                        Replay::Safe,
                    )
                    .await?;
                ok(status, retry, &body)?;
                Ok(Response::SnapshotStored {
                    space,
                    covers: snapshot.covers,
                })
            }
        }
    }
}

/// The clock of one exchange: `BASE_TIME` plus the bytes moved at `MIN_RATE`,
/// never more than `BASE_TIME` plus the largest exchange allowed.
struct Clock {
    started: tokio::time::Instant,
    sent: u64,
    cap: u64,
}

impl Clock {
    fn new(sent: usize, max_body: usize) -> Self {
        let sent = u64::try_from(sent).unwrap_or(u64::MAX);
        let max = u64::try_from(max_body).unwrap_or(u64::MAX);
        Self {
            started: tokio::time::Instant::now(),
            sent,
            cap: sent.saturating_add(max).saturating_add(MAX_HEAD as u64),
        }
    }

    /// When the exchange must be over, once `bytes` are in.
    fn deadline(&self, bytes: usize) -> tokio::time::Instant {
        let bytes = u64::try_from(bytes)
            .unwrap_or(u64::MAX)
            .saturating_add(self.sent)
            .min(self.cap);
        self.started + BASE_TIME + Duration::from_millis(bytes.saturating_mul(1000) / MIN_RATE)
    }
}

/// Writes `request` and reads the answer, its body at most `max_body` bytes; the connection
/// comes back when it may be reused.
async fn round_trip<S: AsyncRead + AsyncWrite + Unpin>(
    mut stream: S,
    request: &[u8],
    max_body: usize,
) -> std::result::Result<(Answer, Option<S>), Trip> {
    let clock = Clock::new(request.len(), max_body);
    let write = async {
        stream.write_all(request).await?;
        stream.flush().await
    };
    match tokio::time::timeout_at(clock.deadline(0), write).await {
        Ok(Ok(())) => {}
        Ok(Err(_)) => return Err(Trip::Silent),
        Err(_) => return Err(Trip::Failed),
    }
    let mut reader = Reader {
        stream,
        clock,
        received: 0,
    };
    let mut buf = Vec::with_capacity(8 * 1024);
    let head = loop {
        if let Some(head) = parse_head(&buf)? {
            // An interim answer (100 Continue, 103 Early Hints): the real one follows.
            if head.status.is_informational() {
                buf.drain(..head.len);
                continue;
            }
            break head;
        }
        if buf.len() > MAX_HEAD {
            return Err(Trip::Failed);
        }
        match reader.more(&mut buf).await {
            Ok(n) if n > 0 => {}
            // Closed or reset before a byte came back; after any byte (an interim `100
            // Continue` included) the relay has read the request.
            Ok(_) | Err(Trip::Silent) if reader.received == 0 => return Err(Trip::Silent),
            _ => return Err(Trip::Failed),
        }
    };
    buf.drain(..head.len);
    let (body, clean) = match head.framing {
        Framing::Empty => (Vec::new(), buf.is_empty()),
        Framing::Length(len) => {
            if len > max_body {
                return Err(Trip::Failed);
            }
            while buf.len() < len {
                reader.fill(&mut buf).await?;
            }
            let clean = buf.len() == len;
            buf.truncate(len);
            (buf, clean)
        }
        Framing::Chunked => {
            let (body, rest) = read_chunked(&mut reader, buf, max_body).await?;
            (body, rest == 0)
        }
        Framing::Close => {
            while reader.more(&mut buf).await.map_err(|_| Trip::Failed)? > 0 {
                if buf.len() > max_body {
                    return Err(Trip::Failed);
                }
            }
            (buf, false)
        }
    };
    let reusable = (head.keep_alive && clean).then_some(reader.stream);
    Ok(((head.status, head.retry_after_ms, body), reusable))
}

/// Reads an answer under its clock.
struct Reader<S> {
    stream: S,
    clock: Clock,
    /// Bytes read so far: only bytes that came extend the deadline, so a relay that
    /// announces a large body and then sends nothing (or drips) is cut at the pace it sends,
    /// not given the time of everything it announced.
    received: usize,
}

impl<S: AsyncRead + Unpin> Reader<S> {
    /// Reads more of the answer into `buf`; 0 at the end of the stream. A reset is `Silent`
    /// (on a reused connection before any answer, the request may go again), the deadline
    /// `Failed`.
    async fn more(&mut self, buf: &mut Vec<u8>) -> std::result::Result<usize, Trip> {
        buf.reserve(8 * 1024);
        let deadline = self.clock.deadline(self.received);
        match tokio::time::timeout_at(deadline, self.stream.read_buf(buf)).await {
            Ok(Ok(n)) => {
                self.received = self.received.saturating_add(n);
                Ok(n)
            }
            Ok(Err(_)) => Err(Trip::Silent),
            Err(_) => Err(Trip::Failed),
        }
    }

    /// Reads more once part of the answer is in: the end of the stream, a reset or the
    /// deadline all fail the exchange.
    async fn fill(&mut self, buf: &mut Vec<u8>) -> std::result::Result<(), Trip> {
        match self.more(buf).await {
            Ok(n) if n > 0 => Ok(()),
            _ => Err(Trip::Failed),
        }
    }
}

/// How a response body ends (RFC 9112 §6.3).
#[derive(Debug)]
enum Framing {
    Empty,
    Length(usize),
    Chunked,
    Close,
}

/// What a response head says.
#[derive(Debug)]
struct Head {
    status: StatusCode,
    retry_after_ms: Option<u64>,
    /// The connection may carry another request.
    keep_alive: bool,
    framing: Framing,
    /// Bytes of the head.
    len: usize,
}

/// The head at the start of `buf`; `None` while it is incomplete.
fn parse_head(buf: &[u8]) -> std::result::Result<Option<Head>, Trip> {
    let mut headers = [httparse::EMPTY_HEADER; 64];
    let mut response = httparse::Response::new(&mut headers);
    let head_len = match response.parse(buf) {
        Ok(Status::Complete(len)) => len,
        Ok(Status::Partial) => return Ok(None),
        Err(_) => return Err(Trip::Failed),
    };
    let code = response.code.ok_or(Trip::Failed)?;
    let status = StatusCode::from_u16(code).map_err(|_| Trip::Failed)?;
    let mut keep_alive = response.version == Some(1);
    let (mut retry_after_ms, mut length, mut encoded, mut chunked) = (None, None, false, false);
    for header in response.headers.iter() {
        let value = std::str::from_utf8(header.value).map_err(|_| Trip::Failed)?;
        let name = header.name;
        if name.eq_ignore_ascii_case("content-length") {
            let len: usize = value.trim().parse().map_err(|_| Trip::Failed)?;
            if length.is_some_and(|l| l != len) {
                return Err(Trip::Failed);
            }
            length = Some(len);
        } else if name.eq_ignore_ascii_case("transfer-encoding") {
            encoded = true;
            chunked = value
                .rsplit(',')
                .next()
                .is_some_and(|last| last.trim().eq_ignore_ascii_case("chunked"));
        } else if name.eq_ignore_ascii_case("connection") {
            if value
                .split(',')
                .any(|v| v.trim().eq_ignore_ascii_case("close"))
            {
                keep_alive = false;
            }
        } else if name.eq_ignore_ascii_case("retry-after") {
            retry_after_ms = parse_retry_after(value);
        }
    }
    let framing = if matches!(code, 100..=199 | 204 | 304) {
        Framing::Empty
    } else if chunked {
        Framing::Chunked
    } else if let (Some(len), false) = (length, encoded) {
        Framing::Length(len)
    } else {
        keep_alive = false;
        Framing::Close
    };
    Ok(Some(Head {
        status,
        retry_after_ms,
        keep_alive,
        framing,
        len: head_len,
    }))
}

/// Decodes a chunked body that starts at `buf[0]`, reading more as needed. Returns the body
/// and how many bytes followed it. Parsing moves an offset through `buf` rather than draining
/// it per chunk (a body of tiny chunks stays linear), and a chunk-size line that does not end
/// within `MAX_CHUNK_LINE` bytes fails instead of being re-parsed as it grows.
async fn read_chunked<S: AsyncRead + Unpin>(
    reader: &mut Reader<S>,
    mut buf: Vec<u8>,
    max_body: usize,
) -> std::result::Result<(Vec<u8>, usize), Trip> {
    let mut body = Vec::new();
    let mut at = 0;
    loop {
        if at > 64 * 1024 && at * 2 > buf.len() {
            buf.drain(..at);
            at = 0;
        }
        let (used, size) = match httparse::parse_chunk_size(&buf[at..]) {
            Ok(Status::Complete(found)) => found,
            Ok(Status::Partial) if buf.len() - at <= MAX_CHUNK_LINE => {
                reader.fill(&mut buf).await?;
                continue;
            }
            _ => return Err(Trip::Failed),
        };
        if size == 0 {
            at += used;
            break;
        }
        let size = usize::try_from(size)
            .ok()
            .filter(|s| body.len().saturating_add(*s) <= max_body)
            .ok_or(Trip::Failed)?;
        let start = at + used;
        let end = start + size + 2;
        while buf.len() < end {
            reader.fill(&mut buf).await?;
        }
        if &buf[start + size..end] != b"\r\n" {
            return Err(Trip::Failed);
        }
        body.extend_from_slice(&buf[start..start + size]);
        at = end;
    }
    // Trailer fields, if any, up to the empty line.
    loop {
        let mut headers = [httparse::EMPTY_HEADER; 16];
        match httparse::parse_headers(&buf[at..], &mut headers) {
            Ok(Status::Complete((len, _))) => return Ok((body, buf.len() - at - len)),
            Ok(Status::Partial) if buf.len() - at <= MAX_HEAD => {
                reader.fill(&mut buf).await?;
            }
            _ => return Err(Trip::Failed),
        }
    }
}

/// The code in an error body `{"error": "<name>", …}`; `None` for a body over
/// [`MAX_ERROR_BODY`], which is not parsed (a large body of small JSON values would take many
/// times its size in memory).
pub(crate) fn error_code(body: &[u8]) -> Option<ErrorCode> {
    if body.len() > MAX_ERROR_BODY {
        return None;
    }
    // An object only: anything else is refused at its first byte.
    let fields: serde_json::Map<String, serde_json::Value> = serde_json::from_slice(body).ok()?;
    ErrorCode::from_name(fields.get("error")?.as_str()?)
}

/// A `Retry-After` in seconds, as milliseconds.
pub(crate) fn parse_retry_after(value: &str) -> Option<u64> {
    value
        .trim()
        .parse::<u64>()
        .ok()
        .map(|s| s.saturating_mul(1000))
}

/// Success, or the failure the status and error body describe. The one mapping from relay
/// answers to failures: the WebSocket upgrade uses it too.
pub(crate) fn ok(
    status: StatusCode,
    retry_after_ms: Option<u64>,
    body: &[u8],
) -> std::result::Result<(), Failure> {
    if status.is_success() {
        return Ok(());
    }
    let code = error_code(body);
    Err(match (status.as_u16(), code) {
        // Gone for good (a tombstone), not a cursor below the snapshot.
        (_, Some(code @ (ErrorCode::SpaceErased | ErrorCode::SpaceRetired))) => Failure::Refused {
            code,
            retry_after_ms: 0,
        },
        (_, Some(ErrorCode::Pruned)) | (410, _) => Failure::Pruned,
        (_, Some(ErrorCode::Unauthorized | ErrorCode::SpaceExists)) | (401 | 403, _) => {
            Failure::Unauthorized
        }
        (_, Some(ErrorCode::SpaceNotFound)) => Failure::SpaceGone,
        // Shutting down, or a proxy with no relay behind it: try again.
        (502..=504, _) | (_, Some(ErrorCode::Unavailable)) => Failure::Unreachable,
        // The relay answered but failed (a full disk): not the same as not answering.
        (s, Some(ErrorCode::Internal)) | (s @ 500..=599, None) => Failure::RelayError { status: s },
        (_, Some(code)) => Failure::Refused {
            code,
            retry_after_ms: retry_after_ms.unwrap_or(0),
        },
        (s, None) => Failure::Refused {
            code: ErrorCode::Unknown(u8::try_from(s % 256).unwrap_or(0)),
            retry_after_ms: 0,
        },
    })
}

#[cfg(test)]
mod tests {
    use tokio::{
        io::{AsyncReadExt, AsyncWriteExt},
        net::{TcpListener, TcpStream},
    };

    use super::*;

    /// Reads one request head (these requests carry no body).
    async fn read_request(stream: &mut TcpStream) -> String {
        let mut buf = Vec::new();
        while !buf.ends_with(b"\r\n\r\n") {
            let mut byte = [0; 1];
            if stream.read(&mut byte).await.unwrap_or(0) == 0 {
                break;
            }
            buf.push(byte[0]);
        }
        String::from_utf8_lossy(&buf).into_owned()
    }

    /// A relay that answers each accepted connection's requests with `answers[connection]`,
    /// then closes it.
    async fn serve(answers: Vec<Vec<&'static str>>) -> (RelayHttp, tokio::task::JoinHandle<usize>) {
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let addr = listener.local_addr().expect("addr");
        let task = tokio::spawn(async move {
            let mut accepted = 0;
            for replies in answers {
                let Ok((mut stream, _)) = listener.accept().await else {
                    break;
                };
                accepted += 1;
                for reply in replies {
                    let request = read_request(&mut stream).await;
                    assert!(request.starts_with("GET /base/x HTTP/1.1\r\n"), "{request}");
                    assert!(request.contains("authorization: Bearer t\r\n"), "{request}");
                    stream.write_all(reply.as_bytes()).await.expect("write");
                }
            }
            accepted
        });
        let http =
            RelayHttp::new(&format!("http://{addr}/base/"), &RelayOptions::default()).expect("url");
        (http, task)
    }

    async fn get(http: &RelayHttp) -> std::result::Result<Answer, Failure> {
        http.call(Method::GET, "/x", "t", None, SMALL_BODY, Replay::Safe)
            .await
    }

    #[tokio::test]
    async fn reads_chunked_and_sized_bodies_on_one_kept_connection() {
        let (http, server) = serve(vec![vec![
            "HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\n\r\n3\r\nabc\r\n2;x=y\r\nde\r\n0\r\nt: v\r\n\r\n",
            "HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 429 Too Many\r\nretry-after: 2\r\ncontent-length: 2\r\n\r\n{}",
        ]])
        .await;
        let (status, retry, body) = get(&http).await.expect("first");
        assert_eq!(
            (status.as_u16(), retry, body.as_slice()),
            (200, None, &b"abcde"[..])
        );
        let (status, retry, body) = get(&http).await.expect("second");
        assert_eq!(
            (status.as_u16(), retry, body.as_slice()),
            (429, Some(2000), &b"{}"[..])
        );
        drop(http);
        assert_eq!(server.await.expect("server"), 1);
    }

    #[tokio::test]
    async fn retries_on_a_new_connection_when_the_kept_one_was_closed() {
        let (http, server) = serve(vec![
            vec!["HTTP/1.1 204 No Content\r\n\r\n"],
            vec!["HTTP/1.1 200 OK\r\nconnection: close\r\n\r\nto the end"],
        ])
        .await;
        assert_eq!(get(&http).await.expect("first").0, StatusCode::NO_CONTENT);
        let (status, _, body) = get(&http).await.expect("second");
        assert_eq!(
            (status, body.as_slice()),
            (StatusCode::OK, &b"to the end"[..])
        );
        assert_eq!(server.await.expect("server"), 2);
    }

    /// A relay whose link is cut after it reads a request: the first request (of the first
    /// connection) is answered `204` and the connection kept; the second is read in full,
    /// body included, and its connection closed without a word; later ones are answered
    /// `200`. Answers the request lines it read, with the connection (from 1) each came on.
    async fn cut_after_reading() -> (RelayHttp, Arc<Mutex<Vec<(usize, String)>>>) {
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let addr = listener.local_addr().expect("addr");
        let read = Arc::new(Mutex::new(Vec::new()));
        let log = Arc::clone(&read);
        tokio::spawn(async move {
            let mut connections = 0;
            while let Ok((mut stream, _)) = listener.accept().await {
                connections += 1;
                let (connection, log) = (connections, Arc::clone(&log));
                tokio::spawn(async move {
                    loop {
                        let head = read_request(&mut stream).await;
                        if head.is_empty() {
                            return;
                        }
                        let length = head
                            .to_ascii_lowercase()
                            .lines()
                            .find_map(|l| l.strip_prefix("content-length:"))
                            .and_then(|v| v.trim().parse().ok())
                            .unwrap_or(0);
                        let mut body = vec![0; length];
                        stream.read_exact(&mut body).await.expect("body");
                        let line = head.lines().next().unwrap_or_default().to_owned();
                        let count = {
                            let mut log = log.lock().expect("log");
                            log.push((connection, line));
                            log.len()
                        };
                        let answer: &[u8] = match count {
                            1 => b"HTTP/1.1 204 No Content\r\n\r\n",
                            2 => return,
                            _ => b"HTTP/1.1 200 OK\r\ncontent-length: 5\r\n\r\nagain",
                        };
                        stream.write_all(answer).await.expect("write");
                    }
                });
            }
        });
        let http =
            RelayHttp::new(&format!("http://{addr}"), &RelayOptions::default()).expect("url");
        (http, read)
    }

    #[tokio::test]
    async fn a_pairing_post_the_relay_may_have_read_is_never_sent_again() {
        let (http, read) = cut_after_reading().await;
        assert_eq!(get(&http).await.expect("first").0, StatusCode::NO_CONTENT);
        // A second copy of a sealed message would read as tampered on the other side.
        let posted = http
            .pairing(
                Method::POST,
                "/v1/pairings/42/messages",
                "ab",
                Some(vec![1; 80]),
            )
            .await;
        assert!(matches!(posted, Err(Error::Unreachable)), "{posted:?}");
        let read = read.lock().expect("log").clone();
        let posts = read.iter().filter(|(_, l)| l.starts_with("POST ")).count();
        assert_eq!(posts, 1, "{read:?}");
    }

    #[tokio::test]
    async fn a_read_cut_before_its_answer_goes_again_once() {
        let (http, read) = cut_after_reading().await;
        assert_eq!(get(&http).await.expect("first").0, StatusCode::NO_CONTENT);
        let (status, _, body) = get(&http).await.expect("second");
        assert_eq!((status, body.as_slice()), (StatusCode::OK, &b"again"[..]));
        let read = read.lock().expect("log").clone();
        let connections: Vec<usize> = read.iter().map(|(c, _)| *c).collect();
        assert_eq!(connections, [1, 1, 2], "{read:?}");
    }

    #[tokio::test]
    async fn nothing_goes_again_once_part_of_an_answer_came() {
        // The relay said `100 Continue`, so it read the request.
        let (http, server) = serve(vec![
            vec![
                "HTTP/1.1 204 No Content\r\n\r\n",
                "HTTP/1.1 100 Continue\r\n\r\n",
            ],
            vec!["HTTP/1.1 200 OK\r\ncontent-length: 0\r\n\r\n"],
        ])
        .await;
        assert_eq!(get(&http).await.expect("first").0, StatusCode::NO_CONTENT);
        let second = get(&http).await;
        assert!(matches!(second, Err(Failure::Unreachable)), "{second:?}");
        server.abort();
    }

    #[tokio::test]
    async fn a_truncated_or_garbled_answer_is_unreachable() {
        let (http, _server) = serve(vec![
            vec!["HTTP/1.1 200 OK\r\ncontent-length: 10\r\n\r\nshort"],
            vec!["HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\n\r\nzz\r\n"],
            vec!["not http\r\n\r\n"],
        ])
        .await;
        for _ in 0..3 {
            assert!(matches!(get(&http).await, Err(Failure::Unreachable)));
        }
    }

    #[test]
    fn a_relay_that_answers_with_an_error_is_not_unreachable() {
        // Before, a full disk (500) read as "cannot reach the relay".
        let failing = ok(StatusCode::INTERNAL_SERVER_ERROR, None, b"");
        assert_eq!(failing, Err(Failure::RelayError { status: 500 }));
        let insufficient = ok(StatusCode::INSUFFICIENT_STORAGE, None, b"");
        assert_eq!(insufficient, Err(Failure::RelayError { status: 507 }));
        // A proxy with no relay behind it, or a relay shutting down: try again.
        for status in [StatusCode::BAD_GATEWAY, StatusCode::SERVICE_UNAVAILABLE] {
            assert_eq!(ok(status, None, b""), Err(Failure::Unreachable));
        }
    }

    #[test]
    fn an_error_body_is_read_only_when_small() {
        // 16 MiB of `[0,0,…]`, as large as a snapshot's answer may be: parsed whole it would
        // take hundreds of MiB.
        let mut zeros = b"[0".to_vec();
        zeros.resize(16 << 20, b',');
        for i in (1..zeros.len() - 1).step_by(2) {
            zeros[i] = b'0';
        }
        *zeros.last_mut().expect("not empty") = b']';
        assert_eq!(error_code(&zeros), None);
        assert_eq!(
            ok(StatusCode::INTERNAL_SERVER_ERROR, None, &zeros),
            Err(Failure::RelayError { status: 500 })
        );
        // A code in a large body is not read either: the body is never parsed.
        let padded = format!(
            r#"{{"error": "quota_exceeded", "message": "{}"}}"#,
            "x".repeat(16 << 20)
        );
        assert_eq!(error_code(padded.as_bytes()), None);
        let just_over = format!(
            r#"{{"error": "quota_exceeded", "message": "{}"}}"#,
            "x".repeat(MAX_ERROR_BODY)
        );
        assert_eq!(error_code(just_over.as_bytes()), None);
        // The relay's own error bodies are a few dozen bytes, and keep their codes.
        let small = br#"{"error": "quota_exceeded", "message": "the space is full"}"#;
        assert_eq!(error_code(small), Some(ErrorCode::QuotaExceeded));
        assert_eq!(
            ok(StatusCode::INSUFFICIENT_STORAGE, Some(5000), small),
            Err(Failure::Refused {
                code: ErrorCode::QuotaExceeded,
                retry_after_ms: 5000
            })
        );
        let at_the_bound = format!(r#"{{"error": "no_snapshot", "message": "{}"}}"#, "x");
        let at_the_bound = format!("{at_the_bound:<MAX_ERROR_BODY$}");
        assert_eq!(at_the_bound.len(), MAX_ERROR_BODY);
        assert_eq!(
            error_code(at_the_bound.as_bytes()),
            Some(ErrorCode::NoSnapshot)
        );
    }

    #[test]
    fn parses_relay_urls() {
        let t = |url: &str| {
            RelayHttp::new(url, &RelayOptions::default())
                .ok()
                .and_then(|h| h.target)
                .map(|t| {
                    (
                        t.host.clone(),
                        t.port,
                        t.authority.clone(),
                        t.prefix.clone(),
                    )
                })
        };
        let own = |h: &str, p, a: &str, x: &str| Some((h.into(), p, a.into(), x.into()));
        assert_eq!(
            t("http://127.0.0.1:8080"),
            own("127.0.0.1", 8080, "127.0.0.1:8080", "")
        );
        assert_eq!(
            t("http://localhost/mend/"),
            own("localhost", 80, "localhost", "/mend")
        );
        assert_eq!(t("http://[::1]:9/"), own("::1", 9, "[::1]:9", ""));
        assert_eq!(t("https://relay/mend"), own("relay", 443, "relay", "/mend"));
        assert_eq!(
            t("https://relay:8443"),
            own("relay", 8443, "relay:8443", "")
        );
        assert_eq!(t("http://relay:x"), None);
        assert_eq!(t("http://user@relay"), None);
        assert!(RelayHttp::new("ftp://relay", &RelayOptions::default()).is_err());
    }

    #[test]
    fn clear_text_goes_only_to_this_machine_unless_opted_in() {
        let check = |url: &str, allow_insecure_cleartext: bool| {
            let options = RelayOptions {
                allow_insecure_cleartext,
                ..RelayOptions::default()
            };
            RelayHttp::new(url, &options).and_then(|h| h.check())
        };
        for local in [
            "http://127.0.0.1:1",
            "http://127.8.0.1",
            "http://[::1]:2",
            "http://LocalHost:3",
        ] {
            assert!(check(local, false).is_ok(), "{local}");
        }
        for remote in [
            "http://192.168.1.10:8787",
            "http://relay.example",
            "http://[::2]:1",
            "http://localhost.example",
        ] {
            let err = check(remote, false).expect_err(remote);
            assert!(
                matches!(&err, Error::UntrustedRelay(m) if m.contains("--insecure-cleartext-relay")),
                "{err}"
            );
            assert!(check(remote, true).is_ok(), "{remote}");
        }
        assert!(check("https://relay.example", false).is_ok());
    }

    /// A relay's answer, scripted: the bytes as they arrive, then the end of the stream, a
    /// repetition of the last piece (for a megabyte), or silence.
    struct Script {
        pieces: std::collections::VecDeque<Vec<u8>>,
        then: Then,
        read: usize,
    }

    #[derive(Clone, Copy, Debug)]
    enum Then {
        Close,
        Repeat,
        Hang,
    }

    impl AsyncRead for Script {
        fn poll_read(
            mut self: std::pin::Pin<&mut Self>,
            _cx: &mut std::task::Context<'_>,
            buf: &mut tokio::io::ReadBuf<'_>,
        ) -> std::task::Poll<std::io::Result<()>> {
            use std::task::Poll;
            let Some(mut piece) = self.pieces.pop_front() else {
                return match self.then {
                    // Never woken: only the exchange's own deadline ends this.
                    Then::Hang => Poll::Pending,
                    Then::Close | Then::Repeat => Poll::Ready(Ok(())),
                };
            };
            let n = piece.len().min(buf.remaining());
            buf.put_slice(&piece[..n]);
            self.read += n;
            // Repeats up to 1 MiB, then ends: enough to tell a bounded reader from an
            // unbounded one without a test that never ends.
            if matches!(self.then, Then::Repeat) && self.pieces.is_empty() && self.read < 1 << 20 {
                self.pieces.push_back(piece.clone());
            }
            if n < piece.len() {
                let rest = piece.split_off(n);
                self.pieces.push_front(rest);
            }
            Poll::Ready(Ok(()))
        }
    }

    impl AsyncWrite for Script {
        fn poll_write(
            self: std::pin::Pin<&mut Self>,
            _cx: &mut std::task::Context<'_>,
            buf: &[u8],
        ) -> std::task::Poll<std::io::Result<usize>> {
            std::task::Poll::Ready(Ok(buf.len()))
        }
        fn poll_flush(
            self: std::pin::Pin<&mut Self>,
            _cx: &mut std::task::Context<'_>,
        ) -> std::task::Poll<std::io::Result<()>> {
            std::task::Poll::Ready(Ok(()))
        }
        fn poll_shutdown(
            self: std::pin::Pin<&mut Self>,
            _cx: &mut std::task::Context<'_>,
        ) -> std::task::Poll<std::io::Result<()>> {
            std::task::Poll::Ready(Ok(()))
        }
    }

    const REQUEST: &[u8] = b"GET /x HTTP/1.1\r\nhost: r\r\n\r\n";

    /// Runs one exchange against `script` on a paused clock (time moves only when every task
    /// waits), returning the outcome, the virtual time it took and the bytes it read.
    fn run(
        pieces: Vec<Vec<u8>>,
        then: Then,
        max_body: usize,
    ) -> (std::result::Result<Answer, Trip>, Duration, usize) {
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_time()
            .start_paused(true)
            .build()
            .expect("runtime");
        runtime.block_on(async {
            let script = Script {
                pieces: pieces.into(),
                then,
                read: 0,
            };
            let started = tokio::time::Instant::now();
            let mut script = script;
            let outcome = round_trip(&mut script, REQUEST, max_body)
                .await
                .map(|(answer, _)| answer);
            (outcome, started.elapsed(), script.read)
        })
    }

    /// The longest any exchange may take: its base time plus its largest size at the slowest
    /// rate waited for.
    fn bound(max_body: usize) -> Duration {
        let bytes = (REQUEST.len() + max_body + MAX_HEAD) as u64;
        BASE_TIME + Duration::from_millis(bytes * 1000 / MIN_RATE) + Duration::from_millis(1)
    }

    #[test]
    fn an_endless_chunk_size_line_fails_after_a_bounded_read() {
        // A chunk-size line that never ends: a size, then an extension that each read makes
        // longer. Before the bound, the line was buffered and re-parsed until the deadline.
        let head = b"HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\n\r\n5;".to_vec();
        let (outcome, _, read) = run(vec![head, vec![b'a'; 512]], Then::Repeat, SMALL_BODY);
        assert_eq!(outcome.err(), Some(Trip::Failed));
        assert!(read < 4 * 1024 + MAX_CHUNK_LINE, "read {read} bytes");
    }

    #[test]
    fn a_silent_relay_is_cut_off_at_the_deadline() {
        let head = b"HTTP/1.1 200 OK\r\ncontent-length: 100\r\n\r\nabc".to_vec();
        let (outcome, took, _) = run(vec![head], Then::Hang, SMALL_BODY);
        assert_eq!(outcome.err(), Some(Trip::Failed));
        assert!(took <= bound(SMALL_BODY), "{took:?}");
    }

    #[test]
    fn a_large_body_announced_and_not_sent_is_cut_at_the_pace_it_came() {
        // 16 MiB announced, three bytes sent: the deadline grows with what came, not with
        // what was announced (which would have held the exchange for about 17 minutes).
        let max_body = 16 << 20;
        for head in [
            format!("HTTP/1.1 200 OK\r\ncontent-length: {max_body}\r\n\r\nabc"),
            format!(
                "HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\n\r\n{:x}\r\nabc",
                max_body - 64
            ),
        ] {
            let (outcome, took, _) = run(vec![head.into_bytes()], Then::Hang, max_body);
            assert_eq!(outcome.err(), Some(Trip::Failed));
            assert!(took <= BASE_TIME + Duration::from_secs(1), "{took:?}");
        }
    }

    #[test]
    fn a_body_of_tiny_chunks_is_read_whole() {
        let mut answer = b"HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\n\r\n".to_vec();
        for _ in 0..20_000 {
            answer.extend_from_slice(b"1\r\nx\r\n");
        }
        answer.extend_from_slice(b"0\r\n\r\n");
        let (outcome, _, _) = run(vec![answer], Then::Close, SMALL_BODY);
        let (status, _, body) = outcome.expect("answer");
        assert_eq!((status.as_u16(), body.len()), (200, 20_000));
    }

    mod garbage {
        use proptest::{prelude::*, test_runner::RngSeed};

        use super::*;

        /// Pieces of answers: real heads and headers, chunk lines of every shape, raw bytes.
        fn fragment() -> impl Strategy<Value = Vec<u8>> {
            prop_oneof![
                Just(b"HTTP/1.1 200 OK\r\n".to_vec()),
                Just(b"HTTP/1.1 100 Continue\r\n\r\n".to_vec()),
                Just(b"HTTP/1.0 503 x\r\nretry-after: 99999999999999999999\r\n".to_vec()),
                Just(b"transfer-encoding: chunked\r\n".to_vec()),
                Just(b"connection: close\r\n".to_vec()),
                Just(b"\r\n".to_vec()),
                (0u64..u64::MAX).prop_map(|n| format!("content-length: {n}\r\n").into_bytes()),
                (0usize..300).prop_map(|n| format!("content-length: {n}\r\n").into_bytes()),
                (0u64..u64::MAX).prop_map(|n| format!("{n:x}\r\n").into_bytes()),
                (0usize..64).prop_map(|n| format!("{n:x};ext=1\r\n").into_bytes()),
                (1usize..3000).prop_map(|n| vec![b'f'; n]),
                (1usize..3000).prop_map(|n| vec![b'a'; n]),
                prop::collection::vec(any::<u8>(), 0..200),
            ]
        }

        fn then() -> impl Strategy<Value = Then> {
            prop_oneof![Just(Then::Close), Just(Then::Repeat), Just(Then::Hang)]
        }

        proptest! {
            #![proptest_config(ProptestConfig {
                cases: 256,
                rng_seed: RngSeed::Fixed(0x6d65_6e64),
                failure_persistence: None,
                ..ProptestConfig::default()
            })]

            /// Whatever a hostile relay sends, split however it likes and ended however it
            /// likes: no panic, an end within the exchange's bound, and a body never larger
            /// than allowed.
            #[test]
            fn any_answer_ends_within_bounds(
                fragments in prop::collection::vec(fragment(), 0..24),
                cut in 1usize..64,
                then in then(),
                max_body in prop_oneof![Just(16usize), Just(4096usize), Just(SMALL_BODY)],
            ) {
                let bytes: Vec<u8> = fragments.concat();
                let pieces: Vec<Vec<u8>> = bytes.chunks(cut).map(<[u8]>::to_vec).collect();
                let (outcome, took, _) = run(pieces, then, max_body);
                prop_assert!(took <= bound(max_body), "took {:?}", took);
                if let Ok((_, _, body)) = outcome {
                    prop_assert!(body.len() <= max_body);
                }
            }
        }
    }
}
