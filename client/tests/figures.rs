//! What a round reports it did, against a relay that serves what no one can apply.

use std::time::Duration;

use anyhow::{Result, ensure};
use mend_client::{Device, RelayOptions};
use mend_core::OpenOptions;
use mend_protocol::{Ack, Chunk, DeviceId, Page, Push, Rollup};
use tokio::{
    io::{AsyncReadExt, AsyncWriteExt},
    net::{TcpListener, TcpStream},
};

/// Reads one HTTP request (head and body); `None` once the connection closes.
async fn request(conn: &mut TcpStream) -> Option<(String, Vec<u8>)> {
    let mut head = Vec::new();
    while !head.ends_with(b"\r\n\r\n") {
        let mut byte = [0; 1];
        if conn.read(&mut byte).await.ok()? == 0 {
            return None;
        }
        head.push(byte[0]);
    }
    let head = String::from_utf8_lossy(&head).to_string();
    let length = head
        .lines()
        .find_map(|l| {
            let (name, value) = l.split_once(':')?;
            name.eq_ignore_ascii_case("content-length")
                .then(|| value.trim().parse::<usize>().ok())?
        })
        .unwrap_or(0);
    let mut body = vec![0; length];
    conn.read_exact(&mut body).await.ok()?;
    Some((head.lines().next().unwrap_or_default().to_owned(), body))
}

/// A relay that takes the device's pushes, and answers every pull with a page that holds a
/// chunk no one can open and a rollup that claims every number a device could have: nothing
/// in it can be applied.
async fn relay_serving_nothing_usable(listener: TcpListener) {
    while let Ok((mut conn, _)) = listener.accept().await {
        tokio::spawn(async move {
            while let Some((line, body)) = request(&mut conn).await {
                let (status, answer) = if line.starts_with("PUT /v1/spaces/") {
                    ("200 OK", Vec::new())
                } else if line.starts_with("POST") && line.contains("/chunks") {
                    let seq = Push::decode(&body, &mend_protocol::Limits::DEFAULT)
                        .map(|p| p.device_seq)
                        .unwrap_or(1);
                    let ack = Ack {
                        device_seq: seq,
                        relay_seq: 100 + seq,
                        duplicate: false,
                    };
                    ("200 OK", ack.to_bytes())
                } else if line.starts_with("GET") && line.contains("/chunks") {
                    let page = Page {
                        head: 200,
                        next_after: 200,
                        more: false,
                        after_mark: None,
                        next_mark: None,
                        chunks: vec![Chunk {
                            relay_seq: 200,
                            device_id: DeviceId([9; 16]),
                            device_seq: 1,
                            payload: vec![0; 64],
                        }],
                        rollups: vec![Rollup {
                            relay_seq: 1,
                            last_relay_seq: 2,
                            device_id: DeviceId([8; 16]),
                            first_seq: 1,
                            last_seq: u64::MAX,
                            payload: vec![0; 64],
                        }],
                    };
                    ("200 OK", page.to_bytes())
                } else {
                    ("503 Service Unavailable", Vec::new())
                };
                let head = format!(
                    "HTTP/1.1 {status}\r\ncontent-type: application/octet-stream\r\n\
                     content-length: {}\r\n\r\n",
                    answer.len()
                );
                if conn.write_all(head.as_bytes()).await.is_err()
                    || conn.write_all(&answer).await.is_err()
                {
                    return;
                }
            }
        });
    }
}

/// The round reports as pulled the chunks it read and applied, not what the pages claimed:
/// here none. Before, it counted the page's chunk and every number the rollup claimed.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_round_counts_as_pulled_only_what_it_applied() -> Result<()> {
    let dir = tempfile::tempdir()?;
    let listener = TcpListener::bind("127.0.0.1:0").await?;
    let url = format!("http://{}", listener.local_addr()?);
    let relay = tokio::spawn(relay_serving_nothing_usable(listener));
    let device = Device::create(
        &dir.path().join("j.db"),
        "Alex",
        &url,
        OpenOptions::default(),
        RelayOptions::default(),
        None,
    )?;
    let report = device.sync_round(Duration::from_secs(3)).await?;
    ensure!(
        report.pulled == 0,
        "{} chunks reported pulled: {report:?}",
        report.pulled
    );
    relay.abort();
    device.close().await?;
    Ok(())
}
