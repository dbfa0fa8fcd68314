//! Test harness: a relay on 127.0.0.1:0 with small limits, a minimal HTTP client, and a
//! WebSocket client that speaks the protocol.
#![allow(dead_code, clippy::unwrap_used)]

use std::{net::SocketAddr, path::Path, time::Duration};

use anyhow::{Context, bail};
use futures_util::{SinkExt, StreamExt};
use mend_protocol::{Ack, DeviceId, Limits, Nack, Push, ServerMessage, SpaceId, paths};
use mend_relay::{AppState, Config, run, storage::StorageError};
use tokio::{
    io::{AsyncReadExt, AsyncWriteExt},
    net::{TcpListener, TcpStream},
    sync::oneshot,
    task::JoinHandle,
};
use tokio_tungstenite::{
    MaybeTlsStream, WebSocketStream,
    tungstenite::{Message, client::IntoClientRequest, http::HeaderValue, protocol::CloseFrame},
};

/// Upper bound for any single wait in a test; a hang fails instead of blocking CI.
pub const WAIT: Duration = Duration::from_secs(10);

/// Tokens are 43 base64url characters, like the ones devices derive.
pub fn token(n: u8) -> String {
    format!(
        "{}{}",
        char::from(b'a' + n),
        "t0ken-for-tests_0123456789abcdefghijklmnop"
    )
}

pub fn space(n: u8) -> SpaceId {
    SpaceId([n; 32])
}

pub fn device(n: u8) -> DeviceId {
    DeviceId([n; 16])
}

pub fn push(device_id: DeviceId, device_seq: u64, payload: &[u8]) -> Push {
    Push {
        device_id,
        device_seq,
        payload: payload.to_vec(),
    }
}

/// Small limits so every refusal is quick to provoke.
pub fn test_config(dir: &Path) -> Config {
    let mut config = Config::new(dir);
    config.listen = SocketAddr::from(([127, 0, 0, 1], 0));
    config.limits.max_chunk_bytes = 4096;
    config.limits.max_ws_message_bytes = 4096 + 1024;
    config.limits.max_snapshot_bytes = 8192;
    config.limits.space_quota_bytes = 64 * 1024;
    config.limits.idle_timeout = Duration::from_secs(5);
    config.limits.header_timeout = Duration::from_secs(5);
    config.limits.max_connections_per_space = 4;
    // Tests push short made-up payloads; `min_chunk_bytes_are_refused` checks the floor.
    config.limits.min_chunk_bytes = 1;
    config.shutdown_grace = Duration::from_secs(5);
    config
}

/// A relay serving on an ephemeral loopback port.
pub struct Relay {
    pub addr: SocketAddr,
    pub state: AppState,
    stop: Option<oneshot::Sender<()>>,
    handle: JoinHandle<Result<(), StorageError>>,
    pub dir: tempfile::TempDir,
}

impl Relay {
    pub async fn start() -> anyhow::Result<Relay> {
        Relay::start_with(|_| {}).await
    }

    pub async fn start_with(adjust: impl FnOnce(&mut Config)) -> anyhow::Result<Relay> {
        let dir = tempfile::tempdir()?;
        let mut config = test_config(dir.path());
        adjust(&mut config);
        config.validate()?;
        let listener = TcpListener::bind(config.listen).await?;
        let addr = listener.local_addr()?;
        let state = AppState::open_sqlite(config)?;
        let (stop, stopped) = oneshot::channel::<()>();
        let handle = tokio::spawn(run(listener, state.clone(), async move {
            let _ = stopped.await;
        }));
        Ok(Relay {
            addr,
            state,
            stop: Some(stop),
            handle,
            dir,
        })
    }

    /// A relay on the PostgreSQL database at `url`, as one of several instances.
    pub async fn start_postgres(
        url: &str,
        adjust: impl FnOnce(&mut Config),
    ) -> anyhow::Result<Relay> {
        let dir = tempfile::tempdir()?;
        let mut config = test_config(dir.path());
        // Tests run side by side on one server: keep each instance's share of its connections small.
        config.postgres.pool_size = 8;
        adjust(&mut config);
        config.validate()?;
        let listener = TcpListener::bind(config.listen).await?;
        let addr = listener.local_addr()?;
        let state = AppState::open_postgres(config, url).await?;
        let (stop, stopped) = oneshot::channel::<()>();
        let handle = tokio::spawn(run(listener, state.clone(), async move {
            let _ = stopped.await;
        }));
        Ok(Relay {
            addr,
            state,
            stop: Some(stop),
            handle,
            dir,
        })
    }

    /// Triggers shutdown without waiting for it.
    pub fn begin_stop(&mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
    }

    /// Shuts down and waits for the relay to finish.
    pub async fn stop(mut self) -> anyhow::Result<()> {
        self.begin_stop();
        tokio::time::timeout(WAIT, self.handle).await???;
        Ok(())
    }

    pub async fn create(&self, space: &SpaceId, token: &str) -> anyhow::Result<()> {
        let (status, _) = http(self.addr, "PUT", &paths::space(space), Some(token), &[]).await?;
        anyhow::ensure!(status == 201 || status == 200, "create answered {status}");
        Ok(())
    }

    pub async fn connect(&self, space: &SpaceId, token: &str, query: &str) -> anyhow::Result<Ws> {
        let path = format!("{}?{query}", paths::live(space));
        Ws::connect(self.addr, &path, Some(token)).await
    }

    /// Pushes over HTTP and decodes the Ack.
    pub async fn push_http(&self, space: &SpaceId, token: &str, p: &Push) -> anyhow::Result<Ack> {
        let (status, body) = http(
            self.addr,
            "POST",
            &paths::chunks(space),
            Some(token),
            &p.to_bytes(),
        )
        .await?;
        anyhow::ensure!(
            status == 200,
            "push answered {status}: {}",
            String::from_utf8_lossy(&body)
        );
        Ok(Ack::decode(&body, &Limits::DEFAULT)?)
    }

    /// A well-behaved device on its own space: create, push over HTTP and WebSocket, get
    /// acknowledgements, and read its chunks back. Used after each hostile input to show
    /// that everyone else is still served.
    pub async fn assert_others_served(&self, round: u8) -> anyhow::Result<()> {
        let good = space(200);
        let tok = token(20);
        self.create(&good, &tok).await?;
        let dev = device(200 + round);
        let ack = self.push_http(&good, &tok, &push(dev, 1, b"http")).await?;
        anyhow::ensure!(!ack.duplicate, "well-behaved push was a duplicate");
        let query = format!("after={}&device={dev}", ack.relay_seq);
        let mut ws = self.connect(&good, &tok, &query).await?;
        ws.expect_up_to_date().await?;
        ws.send_push(&push(dev, 2, b"live")).await?;
        let ack2 = ws.expect_ack().await?;
        anyhow::ensure!(
            ack2.relay_seq == ack.relay_seq + 1,
            "unexpected sequence {ack2:?}"
        );
        ws.close().await;
        Ok(())
    }
}

/// One HTTP/1.1 request on a fresh connection; returns the status and body.
pub async fn http(
    addr: SocketAddr,
    method: &str,
    path: &str,
    token: Option<&str>,
    body: &[u8],
) -> anyhow::Result<(u16, Vec<u8>)> {
    let mut stream = TcpStream::connect(addr).await?;
    let mut request = format!(
        "{method} {path} HTTP/1.1\r\nhost: {addr}\r\nconnection: close\r\ncontent-length: {}\r\n",
        body.len()
    );
    if let Some(token) = token {
        request.push_str(&format!("authorization: Bearer {token}\r\n"));
    }
    request.push_str("\r\n");
    stream.write_all(request.as_bytes()).await?;
    stream.write_all(body).await?;
    let mut response = Vec::new();
    tokio::time::timeout(WAIT, stream.read_to_end(&mut response)).await??;
    parse_response(&response)
}

pub fn parse_response(response: &[u8]) -> anyhow::Result<(u16, Vec<u8>)> {
    let split = response
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .context("no end of headers")?;
    let head = String::from_utf8_lossy(&response[..split]);
    let status = head
        .split(' ')
        .nth(1)
        .context("no status")?
        .parse()
        .context("bad status")?;
    Ok((status, response[split + 4..].to_vec()))
}

/// The `error` field of a JSON error body.
pub fn error_code(body: &[u8]) -> String {
    serde_json::from_slice::<serde_json::Value>(body)
        .ok()
        .and_then(|v| v["error"].as_str().map(str::to_owned))
        .unwrap_or_else(|| format!("<not a JSON error: {}>", String::from_utf8_lossy(body)))
}

/// A protocol-speaking WebSocket client.
pub struct Ws {
    pub socket: WebSocketStream<MaybeTlsStream<TcpStream>>,
}

impl Ws {
    /// Connects; a refused upgrade is returned as `Err` carrying the HTTP status.
    pub async fn connect(addr: SocketAddr, path: &str, token: Option<&str>) -> anyhow::Result<Ws> {
        let mut request = format!("ws://{addr}{path}").into_client_request()?;
        if let Some(token) = token {
            request.headers_mut().insert(
                "authorization",
                HeaderValue::from_str(&format!("Bearer {token}"))?,
            );
        }
        let (socket, _) =
            tokio::time::timeout(WAIT, tokio_tungstenite::connect_async(request)).await??;
        Ok(Ws { socket })
    }

    pub async fn send_push(&mut self, p: &Push) -> anyhow::Result<()> {
        self.send_raw(p.to_bytes()).await
    }

    pub async fn send_raw(&mut self, bytes: Vec<u8>) -> anyhow::Result<()> {
        self.socket.send(Message::Binary(bytes.into())).await?;
        Ok(())
    }

    /// The next protocol message (pings and pongs skipped).
    pub async fn next(&mut self) -> anyhow::Result<ServerMessage> {
        loop {
            let message = tokio::time::timeout(WAIT, self.socket.next())
                .await
                .context("timed out waiting for a message")?
                .context("connection ended")??;
            match message {
                Message::Binary(bytes) => {
                    return Ok(ServerMessage::decode(&bytes, &Limits::DEFAULT)?);
                }
                Message::Ping(_) | Message::Pong(_) => continue,
                other => bail!("unexpected {other:?}"),
            }
        }
    }

    pub async fn expect_up_to_date(&mut self) -> anyhow::Result<u64> {
        match self.next().await? {
            ServerMessage::UpToDate(u) => Ok(u.head),
            other => bail!("expected UpToDate, got {other:?}"),
        }
    }

    pub async fn expect_ack(&mut self) -> anyhow::Result<Ack> {
        match self.next().await? {
            ServerMessage::Ack(ack) => Ok(ack),
            other => bail!("expected Ack, got {other:?}"),
        }
    }

    pub async fn expect_nack(&mut self) -> anyhow::Result<Nack> {
        match self.next().await? {
            ServerMessage::Nack(nack) => Ok(nack),
            other => bail!("expected Nack, got {other:?}"),
        }
    }

    pub async fn expect_chunk(&mut self) -> anyhow::Result<mend_protocol::Chunk> {
        match self.next().await? {
            ServerMessage::Chunk(chunk) => Ok(chunk),
            other => bail!("expected Chunk, got {other:?}"),
        }
    }

    /// Reads until the relay closes; returns its close code and reason.
    pub async fn expect_close(&mut self) -> anyhow::Result<(u16, String)> {
        loop {
            let message = tokio::time::timeout(WAIT, self.socket.next())
                .await
                .context("timed out waiting for close")?;
            match message {
                Some(Ok(Message::Close(Some(CloseFrame { code, reason })))) => {
                    // Complete the closing handshake: reading on sends the queued close reply
                    // and sees the relay end the connection.
                    let _ = tokio::time::timeout(WAIT, self.socket.next()).await;
                    return Ok((code.into(), reason.to_string()));
                }
                Some(Ok(Message::Close(None))) => bail!("closed without a code"),
                Some(Ok(_)) => continue,
                Some(Err(error)) => bail!("connection failed before a close frame: {error}"),
                None => bail!("connection ended without a close frame"),
            }
        }
    }

    pub async fn close(mut self) {
        let _ = self.socket.close(None).await;
    }
}

/// The HTTP status of a refused WebSocket upgrade.
pub fn upgrade_status(result: anyhow::Result<Ws>) -> anyhow::Result<u16> {
    match result {
        Ok(_) => bail!("upgrade unexpectedly accepted"),
        Err(error) => match error.downcast_ref::<tokio_tungstenite::tungstenite::Error>() {
            Some(tokio_tungstenite::tungstenite::Error::Http(response)) => {
                Ok(response.status().as_u16())
            }
            _ => bail!("upgrade failed without an HTTP status: {error}"),
        },
    }
}

/// Runs the `mend-relay` binary with `args` to its end (killed after [`WAIT`]): its exit
/// status and everything it printed, standard output first.
pub fn relay_command(
    args: &[std::ffi::OsString],
) -> anyhow::Result<(std::process::ExitStatus, String)> {
    use std::process::{Command, Stdio};
    let mut child = Command::new(env!("CARGO_BIN_EXE_mend-relay"))
        .args(args)
        // Only what `args` says: a database named in the environment is not this test's.
        .env_remove("MEND_DATABASE_URL")
        .env_remove("MEND_DATA_DIR")
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()?;
    // Read while it runs, so a long output never fills a pipe and stalls it.
    let drain = |pipe: Option<Box<dyn std::io::Read + Send>>| {
        std::thread::spawn(move || {
            let mut text = String::new();
            if let Some(mut pipe) = pipe {
                let _ = pipe.read_to_string(&mut text);
            }
            text
        })
    };
    let stdout = drain(child.stdout.take().map(|p| Box::new(p) as _));
    let stderr = drain(child.stderr.take().map(|p| Box::new(p) as _));
    let deadline = std::time::Instant::now() + WAIT;
    let status = loop {
        if let Some(status) = child.try_wait()? {
            break status;
        }
        if std::time::Instant::now() > deadline {
            child.kill()?;
            child.wait()?;
            bail!("mend-relay {args:?} did not end");
        }
        std::thread::sleep(Duration::from_millis(20));
    };
    let out = stdout.join().unwrap() + &stderr.join().unwrap();
    Ok((status, out))
}
