//! One live WebSocket per space: the backlog after a cursor, an up-to-date marker, then chunks
//! as other devices push them; pushes go up the same socket and are acknowledged on it.

use futures_util::{SinkExt, StreamExt, stream::SplitSink};
use mend_protocol::{
    AUTH_SCHEME, ClientMessage, DeviceId as WireDevice, Limits, Push, ServerMessage, SpaceId,
    close_code, paths,
};
use std::{sync::Arc, time::Duration};

use tokio::sync::{OwnedSemaphorePermit, Semaphore, mpsc};
use tokio_tungstenite::{
    WebSocketStream,
    tungstenite::{
        Message, client::IntoClientRequest, http::HeaderValue, protocol::WebSocketConfig,
    },
};
use zeroize::Zeroizing;

use mend_core::{
    store::Space,
    sync::{Failure, Response, SpaceLink},
};

use crate::{
    RelayHttp,
    http::{ok, parse_retry_after, send_time},
    transport::Stream,
};

type Socket = WebSocketStream<Stream>;

/// Room around a chunk's payload in one relay message (its frame header, ids, sequence
/// numbers and the sealing), generous.
const MESSAGE_OVERHEAD: usize = 64 * 1024;

/// The largest message a live socket takes.
pub(crate) fn max_message(limits: &Limits) -> usize {
    limits.max_chunk_bytes.saturating_add(MESSAGE_OVERHEAD)
}

/// The socket's bounds: one message is at most one chunk and its framing (tungstenite's
/// default would buffer 64 MiB from whoever is at the other end).
fn socket_config(limits: &Limits) -> WebSocketConfig {
    let max = max_message(limits);
    WebSocketConfig::default()
        .max_message_size(Some(max))
        .max_frame_size(Some(max))
}

/// How long a live socket may stay silent before the device takes it for dead. The live loop
/// pings every 30 s and the relay answers each ping, so a path that died without a word (a
/// NAT that forgot the connection, a Wi-Fi handoff) is noticed within this, not when TCP
/// gives up many minutes later, while the app went on showing "online".
pub(crate) const SILENCE: Duration = Duration::from_secs(75);

/// Payload bytes the sockets' readers may have waiting for the live loop, all sockets
/// together: a relay that streams large chunks while the loop merges cannot make the device
/// hold more; beyond it the readers stop reading, and the relay waits.
pub(crate) const WAITING_BYTES: usize = 32 << 20;

/// [`WAITING_BYTES`] in the units of [`Feed::waiting`]'s permits (KiB).
const WAITING_PERMITS: u32 = (WAITING_BYTES >> 10) as u32;

/// Where a socket's reader sends what comes in, and how long it trusts a quiet socket.
#[derive(Debug)]
pub(crate) struct Feed {
    /// The connection's generation, so a replaced socket's last words are ignored.
    pub(crate) generation: u64,
    pub(crate) tx: mpsc::Sender<Incoming>,
    /// [`SILENCE`], shorter in tests.
    pub(crate) silence: Duration,
    /// Room for what waits in `tx`, one permit per KiB of payload, shared by every socket of
    /// one live sync.
    pub(crate) waiting: Arc<Semaphore>,
}

impl Feed {
    pub(crate) fn new(generation: u64, tx: mpsc::Sender<Incoming>) -> Self {
        Self {
            generation,
            tx,
            silence: SILENCE,
            waiting: Feed::room(),
        }
    }

    /// Room for [`WAITING_BYTES`].
    pub(crate) fn room() -> Arc<Semaphore> {
        Arc::new(Semaphore::new(WAITING_PERMITS as usize))
    }
}

/// The payload bytes a live message carries.
pub(crate) fn payload_len(response: &Response) -> usize {
    match response {
        Response::Chunk { chunk, .. } => chunk.payload.len(),
        Response::Rollup { rollup, .. } => rollup.payload.len(),
        _ => 0,
    }
}

/// The permits a message with `bytes` of payload takes: one per KiB begun, at least one.
fn permits(bytes: usize) -> u32 {
    u32::try_from(bytes.div_ceil(1024))
        .unwrap_or(u32::MAX)
        .clamp(1, WAITING_PERMITS)
}

/// What a socket's reader sends to the live loop, tagged with the connection's generation so a
/// replaced socket's last words are ignored.
#[derive(Debug)]
pub(crate) struct Incoming {
    pub(crate) space: Space,
    pub(crate) generation: u64,
    pub(crate) response: Response,
    /// Its room in [`Feed::waiting`], given back when the live loop takes it.
    pub(crate) _room: Option<OwnedSemaphorePermit>,
}

/// The sending half of a live socket. Dropping it ends its reader too, so a relay that
/// stops answering cannot keep the socket alive behind a live sync that let it go.
pub(crate) struct LiveSocket {
    pub(crate) generation: u64,
    sink: SplitSink<Socket, Message>,
    reader: tokio::task::AbortHandle,
}

impl Drop for LiveSocket {
    fn drop(&mut self) {
        self.reader.abort();
    }
}

impl std::fmt::Debug for LiveSocket {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LiveSocket")
            .field("generation", &self.generation)
            .finish()
    }
}

impl LiveSocket {
    /// Sends a push; false if the socket is gone, or the relay did not take it in time.
    pub(crate) async fn push(&mut self, push: Push) -> bool {
        let bytes = ClientMessage::Push(push).to_bytes();
        self.send(Message::Binary(bytes.into())).await
    }

    /// Keeps the relay's idle timer from closing a quiet connection.
    pub(crate) async fn ping(&mut self) -> bool {
        self.send(Message::Ping(Vec::new().into())).await
    }

    /// Closes the socket politely, within the time a small message gets.
    pub(crate) async fn close(mut self) {
        let _ = self.send(Message::Close(None)).await;
    }

    /// Sends one message within the time its bytes get ([`send_time`]): a relay that stops
    /// reading, or a stalled uplink, would otherwise hold the live loop (and whoever stops
    /// it) until TCP gives up, many minutes later.
    async fn send(&mut self, message: Message) -> bool {
        let allowed = send_time(message.len());
        matches!(
            tokio::time::timeout(allowed, self.sink.send(message)).await,
            Ok(Ok(()))
        )
    }
}

/// Opens the live socket for `link` after `after`; its reader forwards to `tx`.
pub(crate) async fn connect(
    http: &RelayHttp,
    link: &SpaceLink,
    device: &[u8; 16],
    after: u64,
    rollups: bool,
    feed: Feed,
) -> Result<LiveSocket, Failure> {
    let Feed {
        generation,
        tx,
        silence,
        waiting,
    } = feed;
    let id = SpaceId(link.keys.space_id);
    let mut url = format!(
        "{}?{}={after}&{}={}",
        http.ws_url(&paths::live(&id)),
        paths::QUERY_AFTER,
        paths::QUERY_DEVICE,
        WireDevice(*device)
    );
    if rollups {
        url.push_str(&format!("&{}=true", paths::QUERY_ROLLUPS));
    }
    let mut request = url
        .into_client_request()
        .map_err(|_| Failure::Unreachable)?;
    let header = Zeroizing::new(format!("{AUTH_SCHEME} {}", link.keys.token.expose()));
    let mut auth = HeaderValue::from_str(&header).map_err(|_| Failure::Unauthorized)?;
    auth.set_sensitive(true);
    request.headers_mut().insert("authorization", auth);
    // The same connection as the HTTP client's: TLS verified (or the pin), clear text only
    // where allowed.
    let stream = http.connect().await?;
    let connect = tokio_tungstenite::client_async_with_config(
        request,
        stream,
        Some(socket_config(&Limits::DEFAULT)),
    );
    let (socket, _) = match tokio::time::timeout(std::time::Duration::from_secs(10), connect).await
    {
        Ok(Ok(pair)) => pair,
        Ok(Err(tokio_tungstenite::tungstenite::Error::Http(response))) => {
            let retry = response
                .headers()
                .get("retry-after")
                .and_then(|v| v.to_str().ok())
                .and_then(parse_retry_after);
            let body = response.body().as_deref().unwrap_or_default();
            return Err(match ok(response.status(), retry, body) {
                Ok(()) => Failure::Unreachable, // an upgrade refused with a success status
                // The relay's JSON body comes only if it arrived with the headers; without it,
                // a 404 on the live route is what the relay answers for an erased space.
                Err(Failure::Refused { .. }) if body.is_empty() && response.status() == 404 => {
                    Failure::SpaceGone
                }
                Err(failure) => failure,
            });
        }
        _ => return Err(Failure::Unreachable),
    };
    let (sink, mut stream) = socket.split();
    let space = link.space;
    let reader = tokio::spawn(async move {
        let send = |response: Response| {
            let tx = tx.clone();
            let waiting = Arc::clone(&waiting);
            async move {
                let room = waiting.acquire_many_owned(permits(payload_len(&response)));
                let Ok(room) = room.await else {
                    return false;
                };
                tx.send(Incoming {
                    space,
                    generation,
                    response,
                    _room: Some(room),
                })
                .await
                .is_ok()
            }
        };
        let limits = Limits::DEFAULT;
        loop {
            let message = match tokio::time::timeout(silence, stream.next()).await {
                Ok(Some(message)) => message,
                Ok(None) => break,
                Err(_) => {
                    tracing::info!("a live socket went silent; connecting again");
                    break;
                }
            };
            let response = match message {
                Ok(Message::Binary(bytes)) => match ServerMessage::decode(&bytes, &limits) {
                    Ok(ServerMessage::Chunk(chunk)) => Response::Chunk { space, chunk },
                    Ok(ServerMessage::UpToDate(u)) => Response::UpToDate {
                        space,
                        head: u.head,
                        after_mark: u.after_mark,
                        head_mark: u.head_mark,
                    },
                    Ok(ServerMessage::Ack(ack)) => Response::Acked { space, ack },
                    Ok(ServerMessage::Rollup(rollup)) => Response::Rollup { space, rollup },
                    Ok(ServerMessage::Nack(nack)) => Response::Failed {
                        space,
                        failure: Failure::Refused {
                            code: nack.code,
                            retry_after_ms: nack.retry_after_ms,
                        },
                    },
                    Err(_) => Response::Failed {
                        space,
                        failure: Failure::Unreachable,
                    },
                },
                Ok(Message::Close(frame)) => {
                    let failure = match frame.map(|f| u16::from(f.code)) {
                        Some(close_code::PRUNED) => Failure::Pruned,
                        Some(close_code::SPACE_NOT_FOUND) => Failure::SpaceGone,
                        _ => Failure::Unreachable,
                    };
                    let _ = send(Response::Failed { space, failure }).await;
                    return;
                }
                Ok(_) => continue,
                Err(_) => break,
            };
            if !send(response).await {
                return;
            }
        }
        let _ = send(Response::Failed {
            space,
            failure: Failure::Unreachable,
        })
        .await;
    });
    Ok(LiveSocket {
        generation,
        sink,
        reader: reader.abort_handle(),
    })
}

#[cfg(test)]
mod tests {
    use mend_core::{crypto::SpaceSecret, store::Space, sync::Request};
    use mend_protocol::ErrorCode;
    use tokio::{
        io::{AsyncReadExt, AsyncWriteExt},
        net::TcpListener,
    };

    use super::*;

    /// A relay that answers every request, HTTP or WebSocket upgrade, with `answer`.
    async fn relay_answering(answer: &'static str) -> (RelayHttp, tokio::task::JoinHandle<()>) {
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let addr = listener.local_addr().expect("addr");
        let task = tokio::spawn(async move {
            for _ in 0..2 {
                let Ok((mut stream, _)) = listener.accept().await else {
                    return;
                };
                let mut buf = Vec::new();
                while !buf.ends_with(b"\r\n\r\n") {
                    let mut byte = [0; 1];
                    if stream.read(&mut byte).await.unwrap_or(0) == 0 {
                        break;
                    }
                    buf.push(byte[0]);
                }
                let _ = stream.write_all(answer.as_bytes()).await;
                let _ = stream.shutdown().await;
            }
        });
        let http = RelayHttp::new(&format!("http://{addr}"), &Default::default()).expect("url");
        (http, task)
    }

    /// The failure a pull over HTTP and a live subscription each make of one answer.
    async fn both_paths(answer: &'static str) -> (Failure, Failure) {
        let (http, server) = relay_answering(answer).await;
        let link = SpaceLink {
            space: Space::Couple,
            keys: SpaceSecret::generate().expect("secret").derive_keys(),
        };
        let device = [7; 16];
        let pulled = http
            .execute(
                &link,
                &device,
                &Request::Pull {
                    space: Space::Couple,
                    after: 0,
                    id: 1,
                    rollups: false,
                    pruned: false,
                },
            )
            .await;
        let Response::Failed {
            failure: over_http, ..
        } = pulled
        else {
            panic!("the pull did not fail: {pulled:?}");
        };
        let (tx, _rx) = mpsc::channel(1);
        let over_ws = connect(&http, &link, &device, 0, false, Feed::new(1, tx))
            .await
            .expect_err("the upgrade did not fail");
        server.abort();
        (over_http, over_ws)
    }

    #[tokio::test]
    async fn http_and_websocket_read_a_rate_limit_alike() {
        let (over_http, over_ws) = both_paths(
            "HTTP/1.1 429 Too Many Requests\r\nretry-after: 3\r\ncontent-type: application/json\r\ncontent-length: 24\r\nconnection: close\r\n\r\n{\"error\":\"rate_limited\"}",
        )
        .await;
        let expected = Failure::Refused {
            code: ErrorCode::RateLimited,
            retry_after_ms: 3000,
        };
        assert_eq!(over_http, expected);
        assert_eq!(over_ws, expected);
    }

    #[tokio::test]
    async fn http_and_websocket_read_a_missing_space_alike() {
        let (over_http, over_ws) = both_paths(
            "HTTP/1.1 404 Not Found\r\ncontent-type: application/json\r\ncontent-length: 27\r\nconnection: close\r\n\r\n{\"error\":\"space_not_found\"}",
        )
        .await;
        assert_eq!(over_http, Failure::SpaceGone);
        assert_eq!(over_ws, Failure::SpaceGone);
        // A 404 whose body is not the relay's (a wrong path behind a proxy) is no erased space.
        let (over_http, over_ws) = both_paths(
            "HTTP/1.1 404 Not Found\r\ncontent-type: text/html\r\ncontent-length: 9\r\nconnection: close\r\n\r\nnot found",
        )
        .await;
        assert_eq!(over_http, over_ws);
        assert_ne!(over_ws, Failure::SpaceGone);
    }

    #[tokio::test]
    async fn a_relay_announcing_a_message_larger_than_a_chunk_is_dropped_before_it_sends_it() {
        // The relay upgrades, then announces an 8 MiB binary frame and sends none of it.
        // Under tungstenite's defaults (16 MiB frames, 64 MiB messages) the device would wait
        // to buffer all of it; with the socket's bound it gives up on the header.
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let addr = listener.local_addr().expect("addr");
        let relay = tokio::spawn(async move {
            let (tcp, _) = listener.accept().await.expect("accept");
            let mut ws = tokio_tungstenite::accept_async(tcp).await.expect("upgrade");
            let len: u64 = 8 << 20;
            let mut header = vec![0x82, 127];
            header.extend_from_slice(&len.to_be_bytes());
            ws.get_mut().write_all(&header).await.expect("header");
            ws.get_mut().flush().await.expect("flush");
            // Hold the connection open without sending the payload.
            let mut rest = [0u8; 64];
            while ws.get_mut().read(&mut rest).await.unwrap_or(0) > 0 {}
        });
        let http = RelayHttp::new(&format!("http://{addr}"), &Default::default()).expect("url");
        let link = SpaceLink {
            space: Space::Couple,
            keys: SpaceSecret::generate().expect("secret").derive_keys(),
        };
        let (tx, mut rx) = mpsc::channel(4);
        let socket = connect(&http, &link, &[7; 16], 0, false, Feed::new(1, tx))
            .await
            .expect("connected");
        let heard = tokio::time::timeout(std::time::Duration::from_secs(10), rx.recv())
            .await
            .expect("the device kept waiting for the oversized message")
            .expect("a message");
        assert!(matches!(
            heard.response,
            Response::Failed {
                failure: Failure::Unreachable,
                ..
            }
        ));
        drop(socket);
        relay.abort();
    }

    /// Accepts one connection and answers its WebSocket upgrade, as a relay would.
    async fn accept_upgrade(listener: &TcpListener) -> Option<tokio::net::TcpStream> {
        let (mut stream, _) = listener.accept().await.ok()?;
        let mut head = Vec::new();
        while !head.ends_with(b"\r\n\r\n") {
            let mut byte = [0; 1];
            if stream.read(&mut byte).await.unwrap_or(0) == 0 {
                return None;
            }
            head.push(byte[0]);
        }
        let text = String::from_utf8_lossy(&head).to_string();
        let key = text
            .lines()
            .find_map(|l| {
                let (name, value) = l.split_once(':')?;
                name.eq_ignore_ascii_case("sec-websocket-key")
                    .then(|| value.trim().to_owned())
            })
            .unwrap_or_default();
        let accept = tokio_tungstenite::tungstenite::handshake::derive_accept_key(key.as_bytes());
        let answer = format!(
            "HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\n\
             Connection: Upgrade\r\nSec-WebSocket-Accept: {accept}\r\n\r\n"
        );
        stream.write_all(answer.as_bytes()).await.ok()?;
        Some(stream)
    }

    /// A relay that takes the WebSocket upgrade, sends nothing, and tells `closed` when the
    /// device's end of the connection is gone.
    async fn relay_that_watches_for_close(
        closed: tokio::sync::oneshot::Sender<()>,
    ) -> (RelayHttp, tokio::task::JoinHandle<()>) {
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let addr = listener.local_addr().expect("addr");
        let task = tokio::spawn(async move {
            let Some(mut stream) = accept_upgrade(&listener).await else {
                return;
            };
            let mut buf = [0; 1024];
            while stream.read(&mut buf).await.unwrap_or(0) > 0 {}
            let _ = closed.send(());
        });
        let http = RelayHttp::new(&format!("http://{addr}"), &Default::default()).expect("url");
        (http, task)
    }

    /// A socket the live loop lets go (replaced, or stopped without a close it could send)
    /// takes its reader with it: the connection closes instead of waiting on a silent relay.
    #[tokio::test]
    async fn a_socket_let_go_closes_its_connection() {
        let (closed_tx, closed) = tokio::sync::oneshot::channel();
        let (http, relay) = relay_that_watches_for_close(closed_tx).await;
        let link = SpaceLink {
            space: Space::Couple,
            keys: SpaceSecret::generate().expect("secret").derive_keys(),
        };
        let (tx, _rx) = mpsc::channel(8);
        let socket = connect(&http, &link, &[7; 16], 0, false, Feed::new(1, tx))
            .await
            .expect("connected");
        drop(socket);
        tokio::time::timeout(std::time::Duration::from_secs(10), closed)
            .await
            .expect("the connection stayed open")
            .expect("the relay ended");
        relay.abort();
    }

    /// A relay that takes the WebSocket upgrade and then never reads another byte: what a
    /// hostile relay (a zero TCP window) or a stalled uplink looks like to the device.
    async fn relay_that_stops_reading() -> (RelayHttp, tokio::task::JoinHandle<()>) {
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let addr = listener.local_addr().expect("addr");
        let task = tokio::spawn(async move {
            let Some(_stream) = accept_upgrade(&listener).await else {
                return;
            };
            // Holds the connection open, reading nothing.
            std::future::pending::<()>().await;
        });
        let http = RelayHttp::new(&format!("http://{addr}"), &Default::default()).expect("url");
        (http, task)
    }

    #[tokio::test(start_paused = true)]
    async fn a_push_to_a_relay_that_stops_reading_gives_up_in_bounded_time() {
        let (http, relay) = relay_that_stops_reading().await;
        let link = SpaceLink {
            space: Space::Couple,
            keys: SpaceSecret::generate().expect("secret").derive_keys(),
        };
        let (tx, _rx) = mpsc::channel(8);
        let mut socket = connect(&http, &link, &[7; 16], 0, false, Feed::new(1, tx))
            .await
            .expect("connected");
        let push = |n: u64| Push {
            device_id: WireDevice([7; 16]),
            device_seq: n,
            payload: vec![0; 256 * 1024],
        };
        // Pushes fill the socket's buffers, then one waits on a relay that never reads: it
        // gives up within the time its bytes get (the clock is paused, so a wait that had no
        // bound would hang here instead).
        let pushes = async {
            let mut pushed = 0;
            while socket.push(push(pushed + 1)).await {
                pushed += 1;
                assert!(
                    pushed < 4096,
                    "the relay took {pushed} pushes without reading"
                );
            }
        };
        tokio::time::timeout(send_time(300 * 1024) * 4, pushes)
            .await
            .expect("a push waited on the relay without bound");
        relay.abort();
    }

    /// A relay that takes the upgrade, pings the device every 100 ms for `lively`, then goes
    /// silent with the connection open: a path that died without a word.
    async fn relay_that_falls_silent(
        lively: std::time::Duration,
    ) -> (RelayHttp, tokio::task::JoinHandle<()>) {
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let addr = listener.local_addr().expect("addr");
        let task = tokio::spawn(async move {
            let Some(stream) = accept_upgrade(&listener).await else {
                return;
            };
            let mut ws = tokio_tungstenite::WebSocketStream::from_raw_socket(
                stream,
                tokio_tungstenite::tungstenite::protocol::Role::Server,
                None,
            )
            .await;
            let until = tokio::time::Instant::now() + lively;
            while tokio::time::Instant::now() < until {
                if ws.send(Message::Ping(Vec::new().into())).await.is_err() {
                    return;
                }
                tokio::time::sleep(std::time::Duration::from_millis(100)).await;
            }
            // Silent from here on, reading nothing.
            std::future::pending::<()>().await;
        });
        let http = RelayHttp::new(&format!("http://{addr}"), &Default::default()).expect("url");
        (http, task)
    }

    /// A socket that stays quiet longer than its silence is taken for dead (the live loop
    /// then shows offline and connects again); one that hears anything, a ping included, is
    /// not.
    #[tokio::test]
    async fn a_socket_that_falls_silent_is_taken_for_dead() {
        let lively = std::time::Duration::from_secs(4);
        let (http, relay) = relay_that_falls_silent(lively).await;
        let link = SpaceLink {
            space: Space::Couple,
            keys: SpaceSecret::generate().expect("secret").derive_keys(),
        };
        let (tx, mut rx) = mpsc::channel(8);
        let feed = Feed {
            generation: 1,
            tx,
            silence: std::time::Duration::from_secs(5),
            waiting: Feed::room(),
        };
        let began = tokio::time::Instant::now();
        let socket = connect(&http, &link, &[7; 16], 0, false, feed)
            .await
            .expect("connected");
        let heard = tokio::time::timeout(std::time::Duration::from_secs(30), rx.recv())
            .await
            .expect("a socket silent for far longer than its silence was kept")
            .expect("a message");
        assert!(
            matches!(
                heard.response,
                Response::Failed {
                    failure: Failure::Unreachable,
                    ..
                }
            ),
            "{heard:?}"
        );
        assert!(
            began.elapsed() >= lively,
            "a socket the relay kept pinging was taken for dead after {:?}",
            began.elapsed()
        );
        drop(socket);
        relay.abort();
    }

    #[tokio::test(start_paused = true)]
    async fn stopping_live_sync_ends_even_when_its_task_is_stuck() {
        let (stop, _) = tokio::sync::watch::channel(false);
        let live =
            crate::sync::LiveSync::stuck_for_test(stop, tokio::spawn(std::future::pending::<()>()));
        tokio::time::timeout(std::time::Duration::from_secs(60), live.stop())
            .await
            .expect("stop waited for a task that never ends");
    }
}
