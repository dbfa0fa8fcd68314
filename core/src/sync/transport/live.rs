//! One live WebSocket per space: the backlog after a cursor, an up-to-date marker, then chunks
//! as other devices push them; pushes go up the same socket and are acknowledged on it.

use futures_util::{SinkExt, StreamExt, stream::SplitSink};
use mend_protocol::{
    AUTH_SCHEME, ClientMessage, DeviceId as WireDevice, Limits, Push, ServerMessage, SpaceId,
    close_code, paths,
};
use tokio::{net::TcpStream, sync::mpsc};
use tokio_tungstenite::{
    MaybeTlsStream, WebSocketStream,
    tungstenite::{Message, client::IntoClientRequest, http::HeaderValue},
};

use super::RelayHttp;
use crate::{
    store::Space,
    sync::{Failure, Response, SpaceLink},
};

type Socket = WebSocketStream<MaybeTlsStream<TcpStream>>;

/// What a socket's reader sends to the live loop, tagged with the connection's generation so a
/// replaced socket's last words are ignored.
#[derive(Debug)]
pub(crate) struct Incoming {
    pub(crate) space: Space,
    pub(crate) generation: u64,
    pub(crate) response: Response,
}

/// The sending half of a live socket.
pub(crate) struct LiveSocket {
    pub(crate) generation: u64,
    sink: SplitSink<Socket, Message>,
}

impl std::fmt::Debug for LiveSocket {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LiveSocket")
            .field("generation", &self.generation)
            .finish()
    }
}

impl LiveSocket {
    /// Sends a push; false if the socket is gone.
    pub(crate) async fn push(&mut self, push: Push) -> bool {
        let bytes = ClientMessage::Push(push).to_bytes();
        self.sink.send(Message::Binary(bytes.into())).await.is_ok()
    }

    /// Keeps the relay's idle timer from closing a quiet connection.
    pub(crate) async fn ping(&mut self) -> bool {
        self.sink
            .send(Message::Ping(Vec::new().into()))
            .await
            .is_ok()
    }

    /// Closes the socket politely.
    pub(crate) async fn close(mut self) {
        let _ = self.sink.send(Message::Close(None)).await;
    }
}

/// Opens the live socket for `link` after `after`; its reader forwards to `tx`.
pub(crate) async fn connect(
    http: &RelayHttp,
    link: &SpaceLink,
    device: &[u8; 16],
    after: u64,
    generation: u64,
    tx: mpsc::Sender<Incoming>,
) -> Result<LiveSocket, Failure> {
    let id = SpaceId(link.keys.space_id);
    let url = format!(
        "{}?{}={after}&{}={}",
        http.ws_url(&paths::live(&id)),
        paths::QUERY_AFTER,
        paths::QUERY_DEVICE,
        WireDevice(*device)
    );
    let mut request = url
        .into_client_request()
        .map_err(|_| Failure::Unreachable)?;
    let auth = HeaderValue::from_str(&format!("{AUTH_SCHEME} {}", link.keys.token.expose()))
        .map_err(|_| Failure::Unauthorized)?;
    request.headers_mut().insert("authorization", auth);
    let connect = tokio_tungstenite::connect_async(request);
    let (socket, _) = match tokio::time::timeout(std::time::Duration::from_secs(10), connect).await
    {
        Ok(Ok(pair)) => pair,
        Ok(Err(tokio_tungstenite::tungstenite::Error::Http(response))) => {
            return Err(match response.status().as_u16() {
                401 | 403 | 409 => Failure::Unauthorized,
                404 => Failure::SpaceGone,
                410 => Failure::Pruned,
                _ => Failure::Unreachable,
            });
        }
        _ => return Err(Failure::Unreachable),
    };
    if let MaybeTlsStream::Plain(tcp) = socket.get_ref() {
        let _ = tcp.set_nodelay(true);
    }
    let (sink, mut stream) = socket.split();
    let space = link.space;
    tokio::spawn(async move {
        let send = |response| {
            let tx = tx.clone();
            async move {
                tx.send(Incoming {
                    space,
                    generation,
                    response,
                })
                .await
                .is_ok()
            }
        };
        let limits = Limits::DEFAULT;
        while let Some(message) = stream.next().await {
            let response = match message {
                Ok(Message::Binary(bytes)) => match ServerMessage::decode(&bytes, &limits) {
                    Ok(ServerMessage::Chunk(chunk)) => Response::Chunk { space, chunk },
                    Ok(ServerMessage::UpToDate(u)) => Response::UpToDate {
                        space,
                        head: u.head,
                    },
                    Ok(ServerMessage::Ack(ack)) => Response::Acked { space, ack },
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
    Ok(LiveSocket { generation, sink })
}
