//! A minimal relay client for load generation: space set-up over raw HTTP/1.1 and live
//! sockets with small buffers.

use std::{
    net::SocketAddr,
    time::{SystemTime, UNIX_EPOCH},
};

use anyhow::{Context, bail};
use mend_protocol::{DeviceId, Limits, ServerMessage, SpaceId, paths};
use tokio::{
    io::{AsyncReadExt, AsyncWriteExt},
    net::TcpStream,
};
use tokio_tungstenite::{
    MaybeTlsStream, WebSocketStream,
    tungstenite::{client::IntoClientRequest, http::HeaderValue, protocol::WebSocketConfig},
};

/// A live socket.
pub type Socket = WebSocketStream<MaybeTlsStream<TcpStream>>;

/// A space created for this run, with its token.
#[derive(Debug, Clone)]
pub struct BenchSpace {
    pub id: SpaceId,
    pub token: String,
}

/// A run-unique seed so repeated runs against one relay never collide.
pub fn run_seed() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_nanos() as u64)
}

/// The `index`-th space of a run.
pub fn bench_space(seed: u64, index: u64) -> BenchSpace {
    let mut id = [0u8; 32];
    id[..8].copy_from_slice(&seed.to_le_bytes());
    id[8..16].copy_from_slice(&index.to_le_bytes());
    id[16..].copy_from_slice(b"relay-load-space");
    BenchSpace {
        id: SpaceId(id),
        token: format!("bench-{seed:016x}-{index:08x}-token"),
    }
}

/// The `index`-th device id.
pub fn bench_device(index: u64) -> DeviceId {
    let mut id = [0u8; 16];
    id[..8].copy_from_slice(&index.to_le_bytes());
    id[8..].copy_from_slice(b"benchdev");
    DeviceId(id)
}

/// `PUT` the space (creating it).
pub async fn create_space(relay: SocketAddr, space: &BenchSpace) -> anyhow::Result<()> {
    let mut stream = TcpStream::connect(relay).await?;
    let request = format!(
        "PUT {} HTTP/1.1\r\nhost: {relay}\r\nauthorization: Bearer {}\r\n\
         content-length: 0\r\nconnection: close\r\n\r\n",
        paths::space(&space.id),
        space.token
    );
    stream.write_all(request.as_bytes()).await?;
    let mut response = Vec::new();
    stream.read_to_end(&mut response).await?;
    let head = String::from_utf8_lossy(&response);
    match head.split(' ').nth(1) {
        Some("201" | "200") => Ok(()),
        _ => bail!(
            "creating a space failed: {}",
            head.lines().next().unwrap_or("")
        ),
    }
}

/// Creates `count` spaces, `parallel` at a time.
pub async fn create_spaces(
    relay: SocketAddr,
    seed: u64,
    count: u64,
    parallel: usize,
) -> anyhow::Result<Vec<BenchSpace>> {
    let spaces: Vec<BenchSpace> = (0..count).map(|i| bench_space(seed, i)).collect();
    for batch in spaces.chunks(parallel.max(1)) {
        let tasks: Vec<_> = batch
            .iter()
            .cloned()
            .map(|space| tokio::spawn(async move { create_space(relay, &space).await }))
            .collect();
        for task in tasks {
            task.await??;
        }
    }
    Ok(spaces)
}

/// Opens a live socket after `after`, naming `device` so its own chunks are withheld.
pub async fn connect(
    relay: SocketAddr,
    space: &BenchSpace,
    after: u64,
    device: Option<DeviceId>,
) -> anyhow::Result<Socket> {
    let path = paths::live_after(&space.id, after, device.as_ref());
    let mut request = format!("ws://{relay}{path}").into_client_request()?;
    request.headers_mut().insert(
        "authorization",
        HeaderValue::from_str(&format!("Bearer {}", space.token))?,
    );
    let config = WebSocketConfig::default()
        .read_buffer_size(4096)
        .write_buffer_size(0);
    let stream = TcpStream::connect(relay).await?;
    stream.set_nodelay(true)?;
    let (socket, _) = tokio_tungstenite::client_async_with_config(
        request,
        MaybeTlsStream::Plain(stream),
        Some(config),
    )
    .await
    .context("WebSocket handshake")?;
    Ok(socket)
}

/// Decodes a binary frame from the relay.
pub fn decode(bytes: &[u8]) -> anyhow::Result<ServerMessage> {
    Ok(ServerMessage::decode(bytes, &Limits::DEFAULT)?)
}

/// Resident set size of a process in bytes, from `/proc/<pid>/status`.
pub fn rss_bytes(pid: u32) -> anyhow::Result<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status"))?;
    let line = status
        .lines()
        .find(|line| line.starts_with("VmRSS:"))
        .context("no VmRSS")?;
    let kib: u64 = line
        .split_whitespace()
        .nth(1)
        .context("no VmRSS value")?
        .parse()?;
    Ok(kib * 1024)
}
