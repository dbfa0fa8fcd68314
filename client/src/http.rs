//! The relay's HTTP routes, as the engine's requests, over a small HTTP/1.1 client.
//!
//! The device sends a few plain HTTP/1.1 requests per round (docs/protocol.md §4), so this
//! client replaces hyper and hyper-util, which made up ~290 KB of the app's library
//! (docs/benchmarks.md, "Mobile bindings"). `httparse` (already here for the WebSocket
//! handshake) reads the answers: `Content-Length`, chunked and read-to-close bodies.

use std::{
    sync::{Arc, Mutex},
    time::{Duration, Instant},
};

use http::{Method, StatusCode};
use httparse::Status;
use mend_protocol::{AUTH_SCHEME, Ack, ErrorCode, Limits, Page, Snapshot, SpaceId, paths};
use tokio::{
    io::{AsyncReadExt, AsyncWriteExt},
    net::TcpStream,
};

use mend_core::{
    error::{Error, Result},
    sync::{Failure, Request, Response, SpaceLink},
};

/// How long one HTTP request may take, connecting included.
const TIMEOUT: Duration = Duration::from_secs(10);
/// How long connecting may take.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);
/// Idle connections kept for the next requests (a round runs a few at once).
const MAX_IDLE: usize = 4;
/// An idle connection older than this is dropped: the relay closes quiet ones after 15 s.
const IDLE_FOR: Duration = Duration::from_secs(10);
/// Largest response head.
const MAX_HEAD: usize = 16 * 1024;
/// Largest response body: a snapshot at the relay's limit plus its framing.
const MAX_BODY: usize = Limits::DEFAULT.max_snapshot_bytes + (1 << 20);

/// Where requests go: `host` and `port` to connect to, `authority` for the `Host` header and
/// `prefix` (the base URL's path) before every route.
#[derive(Debug)]
struct Target {
    host: String,
    port: u16,
    authority: String,
    prefix: String,
}

impl Target {
    /// `rest` is the base URL after `http://`; `None` if it has no usable host and port.
    fn parse(rest: &str) -> Option<Self> {
        let (authority, prefix) = match rest.find('/') {
            Some(i) => rest.split_at(i),
            None => (rest, ""),
        };
        if authority.contains(['@', '?', '#']) || prefix.contains(['?', '#']) {
            return None;
        }
        let (host, port) = if let Some(v6) = authority.strip_prefix('[') {
            let (host, after) = v6.split_once(']')?;
            (host, after)
        } else {
            match authority.rsplit_once(':') {
                Some((host, _)) => (host, authority.get(host.len()..)?),
                None => (authority, ""),
            }
        };
        let port = match port {
            "" => 80,
            p => p.strip_prefix(':')?.parse().ok()?,
        };
        if host.is_empty() {
            return None;
        }
        Some(Self {
            host: host.to_owned(),
            port,
            authority: authority.to_owned(),
            prefix: prefix.to_owned(),
        })
    }
}

/// A kept-alive connection and when it went idle.
#[derive(Debug)]
struct Idle {
    stream: TcpStream,
    since: Instant,
}

/// A status, the `Retry-After` header in milliseconds and the body.
type Answer = (StatusCode, Option<u64>, Vec<u8>);

/// How an exchange failed.
#[derive(Debug)]
enum Trip {
    /// Nothing came back: on a reused connection, the relay had closed it meanwhile.
    Silent,
    /// Anything else.
    Failed,
}

/// HTTP/1.1 connections to one relay, kept alive between requests.
#[derive(Clone, Debug)]
pub struct RelayHttp {
    base: String,
    /// `None` when the URL has no usable host or port: every request then fails as
    /// unreachable, as it did when the HTTP library refused the URL.
    target: Option<Arc<Target>>,
    idle: Arc<Mutex<Vec<Idle>>>,
}

impl RelayHttp {
    /// A client for the relay at `url` (`http://host:port`).
    pub fn new(url: &str) -> Result<Self> {
        let base = url.trim().trim_end_matches('/').to_owned();
        if base.starts_with("https://") {
            return Err(Error::Invalid(
                "https relays need a TLS-terminating proxy in this version; use the proxy's http address on the device's network".into(),
            ));
        }
        if !base.starts_with("http://") || base.len() <= "http://".len() {
            return Err(Error::Invalid(format!(
                "a relay URL looks like http://host:port, not {:?}",
                mend_core::ids::truncate(url)
            )));
        }
        let target = Target::parse(&base["http://".len()..]).map(Arc::new);
        Ok(Self {
            base,
            target,
            idle: Arc::default(),
        })
    }

    /// The relay's base URL.
    pub fn base(&self) -> &str {
        &self.base
    }

    /// The WebSocket URL for a path.
    pub(crate) fn ws_url(&self, path: &str) -> String {
        format!("ws://{}{path}", &self.base["http://".len()..])
    }

    async fn call(
        &self,
        method: Method,
        path: &str,
        token: &str,
        body: Option<Vec<u8>>,
    ) -> std::result::Result<Answer, Failure> {
        let target = self.target.as_deref().ok_or(Failure::Unreachable)?;
        let mut request = format!(
            "{method} {}{path} HTTP/1.1\r\nhost: {}\r\nauthorization: {AUTH_SCHEME} {token}\r\n",
            target.prefix, target.authority
        );
        if body.is_some() {
            request.push_str(&format!("content-type: {}\r\n", paths::FRAME_CONTENT_TYPE));
        }
        let body = body.unwrap_or_default();
        if !body.is_empty() || method != Method::GET {
            request.push_str(&format!("content-length: {}\r\n", body.len()));
        }
        request.push_str("\r\n");
        let mut request = request.into_bytes();
        request.extend_from_slice(&body);
        let started = Instant::now();
        let answer = tokio::time::timeout(TIMEOUT, self.exchange(target, &request))
            .await
            .map_err(|_| Failure::Unreachable)
            .and_then(|answer| answer);
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
        target: &Target,
        request: &[u8],
    ) -> std::result::Result<Answer, Failure> {
        if let Some(stream) = self.take_idle() {
            match round_trip(stream, request).await {
                Ok((answer, reusable)) => return Ok(self.keep(answer, reusable)),
                // The relay closed the idle connection before reading the request (it answers
                // every request it reads), so sending it again cannot repeat it.
                Err(Trip::Silent) => {}
                Err(Trip::Failed) => return Err(Failure::Unreachable),
            }
        }
        tracing::trace!("connecting to the relay");
        let stream = tokio::time::timeout(
            CONNECT_TIMEOUT,
            TcpStream::connect((target.host.as_str(), target.port)),
        )
        .await
        .map_err(|_| Failure::Unreachable)?
        .map_err(|_| Failure::Unreachable)?;
        let _ = stream.set_nodelay(true);
        let (answer, reusable) = round_trip(stream, request)
            .await
            .map_err(|_| Failure::Unreachable)?;
        Ok(self.keep(answer, reusable))
    }

    fn take_idle(&self) -> Option<TcpStream> {
        let mut idle = self.idle.lock().ok()?;
        idle.retain(|c| c.since.elapsed() < IDLE_FOR);
        idle.pop().map(|c| c.stream)
    }

    /// Returns the connection to the pool if it may carry another request.
    fn keep(&self, answer: Answer, reusable: Option<TcpStream>) -> Answer {
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

    /// Erases a space at the relay (a partner leaving, a separation). Idempotent: a space that
    /// is already gone counts as erased.
    pub async fn erase(&self, link: &SpaceLink) -> Result<()> {
        let id = SpaceId(link.keys.space_id);
        let (status, retry, body) = self
            .call(
                Method::DELETE,
                &paths::space(&id),
                link.keys.token.expose(),
                None,
            )
            .await
            .map_err(|_| Error::Unreachable)?;
        match ok(status, retry, &body) {
            Ok(()) | Err(Failure::SpaceGone) => Ok(()),
            Err(Failure::Unauthorized) => {
                Err(Error::Invalid("the relay refused this device's key".into()))
            }
            Err(_) => Err(Error::Unreachable),
        }
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
                    .call(Method::PUT, &paths::space(&id), token, None)
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
                    )
                    .await?;
                ok(status, retry, &body)?;
                let ack = Ack::decode(&body, &limits).map_err(malformed)?;
                Ok(Response::Acked { space, ack })
            }
            Request::Pull { after, .. } | Request::Subscribe { after, .. } => {
                let device = mend_protocol::DeviceId(*device);
                let path = paths::pull(
                    &id,
                    *after,
                    Some(mend_protocol::MAX_PAGE_LIMIT),
                    Some(&device),
                );
                let (status, retry, body) = self.call(Method::GET, &path, token, None).await?;
                ok(status, retry, &body)?;
                let page = Page::decode(&body, &limits).map_err(malformed)?;
                let after = *after;
                Ok(Response::Page { space, after, page })
            }
            Request::GetSnapshot { .. } => {
                let (status, retry, body) = self
                    .call(Method::GET, &paths::snapshot(&id), token, None)
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

/// Writes `request` and reads the answer; the connection comes back when it may be reused.
async fn round_trip(
    mut stream: TcpStream,
    request: &[u8],
) -> std::result::Result<(Answer, Option<TcpStream>), Trip> {
    if stream.write_all(request).await.is_err() {
        return Err(Trip::Silent);
    }
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
        match read_more(&mut stream, &mut buf).await {
            Ok(n) if n > 0 => {}
            // Closed or reset before a byte came back.
            _ if buf.is_empty() => return Err(Trip::Silent),
            _ => return Err(Trip::Failed),
        }
    };
    buf.drain(..head.len);
    let (body, clean) = match head.framing {
        Framing::Empty => (Vec::new(), buf.is_empty()),
        Framing::Length(len) => {
            if len > MAX_BODY {
                return Err(Trip::Failed);
            }
            while buf.len() < len {
                if read_more(&mut stream, &mut buf).await? == 0 {
                    return Err(Trip::Failed);
                }
            }
            let clean = buf.len() == len;
            buf.truncate(len);
            (buf, clean)
        }
        Framing::Chunked => (read_chunked(&mut stream, &mut buf).await?, buf.is_empty()),
        Framing::Close => {
            while read_more(&mut stream, &mut buf).await? > 0 {
                if buf.len() > MAX_BODY {
                    return Err(Trip::Failed);
                }
            }
            (buf, false)
        }
    };
    let reusable = (head.keep_alive && clean).then_some(stream);
    Ok(((head.status, head.retry_after_ms, body), reusable))
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

/// Reads more of the answer into `buf`; 0 at the end of the stream.
async fn read_more(stream: &mut TcpStream, buf: &mut Vec<u8>) -> std::result::Result<usize, Trip> {
    buf.reserve(8 * 1024);
    stream.read_buf(buf).await.map_err(|_| Trip::Failed)
}

/// Decodes a chunked body that starts at `buf[0]`, reading more as needed; leaves in `buf`
/// whatever followed the body.
async fn read_chunked(
    stream: &mut TcpStream,
    buf: &mut Vec<u8>,
) -> std::result::Result<Vec<u8>, Trip> {
    let mut body = Vec::new();
    loop {
        let (used, size) = match httparse::parse_chunk_size(buf) {
            Ok(Status::Complete(found)) => found,
            Ok(Status::Partial) => {
                if read_more(stream, buf).await? == 0 {
                    return Err(Trip::Failed);
                }
                continue;
            }
            Err(_) => return Err(Trip::Failed),
        };
        if size == 0 {
            buf.drain(..used);
            break;
        }
        let size = usize::try_from(size)
            .ok()
            .filter(|s| body.len().saturating_add(*s) <= MAX_BODY)
            .ok_or(Trip::Failed)?;
        let end = used + size + 2;
        while buf.len() < end {
            if read_more(stream, buf).await? == 0 {
                return Err(Trip::Failed);
            }
        }
        if &buf[used + size..end] != b"\r\n" {
            return Err(Trip::Failed);
        }
        body.extend_from_slice(&buf[used..used + size]);
        buf.drain(..end);
    }
    // Trailer fields, if any, up to the empty line.
    loop {
        let mut headers = [httparse::EMPTY_HEADER; 16];
        match httparse::parse_headers(buf, &mut headers) {
            Ok(Status::Complete((len, _))) => {
                buf.drain(..len);
                return Ok(body);
            }
            Ok(Status::Partial) if buf.len() <= MAX_HEAD => {
                if read_more(stream, buf).await? == 0 {
                    return Err(Trip::Failed);
                }
            }
            _ => return Err(Trip::Failed),
        }
    }
}

/// The code in an error body `{"error": "<name>", …}`.
fn error_code(body: &[u8]) -> Option<ErrorCode> {
    let value: serde_json::Value = serde_json::from_slice(body).ok()?;
    ErrorCode::from_name(value.get("error")?.as_str()?)
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
        let http = RelayHttp::new(&format!("http://{addr}/base/")).expect("url");
        (http, task)
    }

    async fn get(http: &RelayHttp) -> std::result::Result<Answer, Failure> {
        http.call(Method::GET, "/x", "t", None).await
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
    fn parses_relay_urls() {
        let t = |url: &str| {
            RelayHttp::new(url).ok().and_then(|h| h.target).map(|t| {
                (
                    t.host.clone(),
                    t.port,
                    t.authority.clone(),
                    t.prefix.clone(),
                )
            })
        };
        let own = |h: &str, p, a: &str, x: &str| Some((h.into(), p, a.into(), x.into()));
        assert_eq!(t("http://relay:8080"), own("relay", 8080, "relay:8080", ""));
        assert_eq!(t("http://relay/mend/"), own("relay", 80, "relay", "/mend"));
        assert_eq!(t("http://[::1]:9/"), own("::1", 9, "[::1]:9", ""));
        assert_eq!(t("http://relay:x"), None);
        assert_eq!(t("http://user@relay"), None);
    }
}
