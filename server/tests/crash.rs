//! Crash safety of the real binary: a relay killed with SIGKILL in the middle of a stream of
//! pushes, restarted on the same data directory, still has every chunk it acknowledged, exactly
//! once and under the same relay sequence; replaying every push afterwards stores nothing twice.
#![allow(clippy::unwrap_used)]

mod common;

use std::{
    collections::{BTreeMap, HashSet},
    io::{BufRead, BufReader},
    net::SocketAddr,
    path::Path,
    process::{Child, Command, Stdio},
    sync::{Arc, Mutex},
};

use anyhow::{Context, bail};
use common::{WAIT, Ws, device, http, push, space, token};
use futures_util::{SinkExt, StreamExt};
use mend_protocol::{Limits, Page, ServerMessage, paths};
use tokio_tungstenite::tungstenite::Message;

/// Pushes sent before giving up waiting for the kill point (bounds the test).
const MAX_PUSHES: u64 = 20_000;
/// Acknowledgements to see before the relay is killed.
const KILL_AFTER_ACKS: usize = 500;

/// The relay binary as a child process, killed if the test ends early.
struct RelayProcess {
    child: Child,
    addr: SocketAddr,
    /// Every line the relay logged, to check that no token or payload leaks into logs.
    log: Arc<Mutex<Vec<String>>>,
}

impl RelayProcess {
    fn start(data_dir: &Path) -> anyhow::Result<RelayProcess> {
        RelayProcess::start_with(data_dir, &[])
    }

    fn start_with(data_dir: &Path, extra: &[&str]) -> anyhow::Result<RelayProcess> {
        let mut child = Command::new(env!("CARGO_BIN_EXE_mend-relay"))
            .args(["--listen", "127.0.0.1:0", "--data-dir"])
            .arg(data_dir)
            .args(extra)
            .args(["--rate-per-space", "1000000", "--rate-burst", "1000000"])
            .env("RUST_LOG", "mend_relay=debug,info")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()?;
        let stderr = child.stderr.take().context("no stderr")?;
        let mut lines = BufReader::new(stderr).lines();
        // The relay logs its bound address once it listens; it logs little before that.
        let log = Arc::new(Mutex::new(Vec::new()));
        let addr = loop {
            let Some(line) = lines.next() else {
                bail!("relay exited before listening");
            };
            let line = line?;
            log.lock().unwrap().push(line.clone());
            if let Some(rest) = line.split("addr=").nth(1) {
                break rest
                    .split_whitespace()
                    .next()
                    .context("no address")?
                    .parse()?;
            }
        };
        // Keep draining stderr so the child never blocks on a full pipe.
        let sink = log.clone();
        std::thread::spawn(move || {
            for line in lines.map_while(Result::ok) {
                sink.lock().unwrap().push(line);
            }
        });
        Ok(RelayProcess { child, addr, log })
    }

    fn kill(&mut self) -> anyhow::Result<()> {
        self.child.kill()?; // SIGKILL on Unix
        self.child.wait()?;
        Ok(())
    }

    fn terminate(&mut self) -> anyhow::Result<std::process::ExitStatus> {
        let status = Command::new("kill")
            .args(["-TERM", &self.child.id().to_string()])
            .status()?;
        anyhow::ensure!(status.success(), "kill -TERM failed");
        Ok(self.child.wait()?)
    }
}

impl Drop for RelayProcess {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Every stored chunk as device_seq → relay_seq, failing on any device_seq stored twice.
async fn stored(addr: SocketAddr, tok: &str) -> anyhow::Result<BTreeMap<u64, u64>> {
    let mut after = 0;
    let mut seen = BTreeMap::new();
    let mut expected_seq = 1;
    for _ in 0..1000 {
        let path = paths::pull(&space(1), after, Some(1000), None);
        let (status, body) = http(addr, "GET", &path, Some(tok), &[]).await?;
        anyhow::ensure!(status == 200, "pull answered {status}");
        let page = Page::decode(&body, &Limits::DEFAULT)?;
        for chunk in &page.chunks {
            anyhow::ensure!(
                chunk.relay_seq == expected_seq,
                "gap or reorder at {}",
                chunk.relay_seq
            );
            expected_seq += 1;
            anyhow::ensure!(
                seen.insert(chunk.device_seq, chunk.relay_seq).is_none(),
                "device_seq {} stored twice",
                chunk.device_seq
            );
            anyhow::ensure!(
                chunk.payload == payload(chunk.device_seq),
                "payload altered"
            );
        }
        after = page.next_after;
        if !page.more {
            return Ok(seen);
        }
    }
    bail!("too many pages")
}

fn payload(device_seq: u64) -> Vec<u8> {
    let mut bytes = device_seq.to_le_bytes().repeat(32);
    bytes.truncate(256);
    bytes
}

#[tokio::test]
async fn acknowledged_pushes_survive_sigkill_exactly_once() -> anyhow::Result<()> {
    let dir = tempfile::tempdir()?;
    let tok = token(1);
    let dev = device(1);
    let mut relay = RelayProcess::start(dir.path())?;
    relay_create(relay.addr, &tok).await?;

    let live = format!("{}?after=0&device={dev}", paths::live(&space(1)));
    let ws = Ws::connect(relay.addr, &live, Some(&tok)).await?;
    let (mut sink, mut stream) = ws.socket.split();
    let acked = Arc::new(Mutex::new(Vec::<(u64, u64)>::new()));
    let reader = {
        let acked = acked.clone();
        tokio::spawn(async move {
            while let Some(Ok(message)) = stream.next().await {
                if let Message::Binary(bytes) = message
                    && let Ok(ServerMessage::Ack(ack)) =
                        ServerMessage::decode(&bytes, &Limits::DEFAULT)
                {
                    acked.lock().unwrap().push((ack.device_seq, ack.relay_seq));
                }
            }
        })
    };
    let mut sent = 0;
    for device_seq in 1..=MAX_PUSHES {
        if sink
            .send(Message::Binary(
                push(dev, device_seq, &payload(device_seq))
                    .to_bytes()
                    .into(),
            ))
            .await
            .is_err()
        {
            break;
        }
        sent = device_seq;
        if acked.lock().unwrap().len() >= KILL_AFTER_ACKS {
            relay.kill()?;
            break;
        }
        if device_seq % 64 == 0 {
            tokio::task::yield_now().await;
        }
    }
    if acked.lock().unwrap().len() < KILL_AFTER_ACKS {
        // All pushes are sent; wait for enough acknowledgements, then kill.
        for _ in 0..1000 {
            if acked.lock().unwrap().len() >= KILL_AFTER_ACKS {
                break;
            }
            tokio::time::sleep(std::time::Duration::from_millis(10)).await;
        }
        relay.kill()?;
    }
    tokio::time::timeout(WAIT, reader).await??;
    let acked = acked.lock().unwrap().clone();
    anyhow::ensure!(acked.len() >= KILL_AFTER_ACKS, "only {} acks", acked.len());
    anyhow::ensure!(
        sent as usize > acked.len() || sent == MAX_PUSHES,
        "killed with nothing in flight"
    );

    // The counters were committed with the rows they count: the kill left them matching.
    let (status, out) = relay_command(dir.path(), &["check"])?;
    assert!(status.success(), "check after the kill: {status}\n{out}");
    assert!(out.contains("0 with counters that differ"), "{out}");

    // Restart on the same data directory.
    let mut relay = RelayProcess::start(dir.path())?;
    // While it runs, no second relay (nor a check) opens the directory beside it.
    for args in [&["--listen", "127.0.0.1:0"][..], &["check", "--repair"]] {
        let (status, out) = relay_command(dir.path(), args)?;
        assert!(!status.success(), "{args:?} ran beside the relay:\n{out}");
        assert!(out.contains("in use by another relay process"), "{out}");
        if args[0] == "check" {
            assert_eq!(status.code(), Some(2), "could not check: {out}");
        }
    }
    let after_crash = stored(relay.addr, &tok).await?;
    for (device_seq, relay_seq) in &acked {
        assert_eq!(
            after_crash.get(device_seq),
            Some(relay_seq),
            "acknowledged push {device_seq} lost or moved"
        );
    }

    // Replaying every push sent stores nothing twice and keeps the original sequences.
    let ws = Ws::connect(relay.addr, &live, Some(&tok)).await?;
    let (mut sink, mut stream) = ws.socket.split();
    let mut answers = HashSet::new();
    for chunk in (1..=sent).collect::<Vec<_>>().chunks(32) {
        for &device_seq in chunk {
            let frame = push(dev, device_seq, &payload(device_seq)).to_bytes();
            sink.send(Message::Binary(frame.into())).await?;
        }
        while answers.len() < *chunk.last().unwrap_or(&0) as usize {
            let message = tokio::time::timeout(WAIT, stream.next())
                .await?
                .context("closed")??;
            if let Message::Binary(bytes) = message
                && let ServerMessage::Ack(ack) = ServerMessage::decode(&bytes, &Limits::DEFAULT)?
            {
                if let Some(original) = after_crash.get(&ack.device_seq) {
                    assert!(
                        ack.duplicate,
                        "stored push {} not seen as a replay",
                        ack.device_seq
                    );
                    assert_eq!(ack.relay_seq, *original);
                }
                answers.insert(ack.device_seq);
            }
        }
    }
    let after_replay = stored(relay.addr, &tok).await?;
    assert_eq!(after_replay.len() as u64, sent, "every push exactly once");
    assert!(after_replay.keys().copied().eq(1..=sent));

    // SIGTERM shuts down cleanly.
    let status = relay.terminate()?;
    assert!(status.success(), "relay exited with {status} on SIGTERM");

    // The logs name events, never the token or a payload.
    std::thread::sleep(std::time::Duration::from_millis(100));
    let log = relay.log.lock().unwrap().join("\n");
    assert!(
        log.contains("request"),
        "debug request lines expected:\n{log}"
    );
    assert!(log.contains("stopped"), "clean stop expected:\n{log}");
    assert!(!log.contains(&tok), "token leaked into the log");
    assert!(!log.contains("[1, 0, 0, 0"), "payload bytes in the log");

    // Counters set wrong by hand: `check` says so and fails, `--repair` sets them right.
    let db = rusqlite::Connection::open(dir.path().join(mend_relay::storage::sqlite::DB_FILE))?;
    db.execute_batch(
        "UPDATE spaces SET rows = rows + 5; UPDATE relay_usage SET bytes_used = bytes_used + 1;",
    )?;
    drop(db);
    let (status, out) = relay_command(dir.path(), &["check"])?;
    assert_eq!(status.code(), Some(1), "{out}");
    assert!(out.contains("1 with counters that differ"), "{out}");
    assert!(out.contains("mend-relay check --repair"), "{out}");
    let (status, out) = relay_command(dir.path(), &["check", "--repair"])?;
    assert!(
        status.success() && out.contains("repaired"),
        "{status}\n{out}"
    );
    let (status, out) = relay_command(dir.path(), &["check"])?;
    assert!(status.success(), "{status}\n{out}");

    // A directory with no relay database is not made one by checking it.
    let missing = dir.path().join("not-a-relay");
    let (status, out) = relay_command(&missing, &["check", "--repair"])?;
    assert_eq!(status.code(), Some(2), "{out}");
    assert!(out.contains("no relay database"), "{out}");
    assert!(!missing.exists(), "check created {}", missing.display());
    // Nor is a setting it cannot take read as counters that differ.
    let (status, out) = relay_command(dir.path(), &["--header-timeout-secs", "0", "check"])?;
    assert_eq!(status.code(), Some(2), "{out}");
    assert!(out.contains("header timeout"), "{out}");
    Ok(())
}

/// Runs `mend-relay <args> --data-dir <data_dir>` to its end; its exit status and output.
fn relay_command(
    data_dir: &Path,
    args: &[&str],
) -> anyhow::Result<(std::process::ExitStatus, String)> {
    let mut all: Vec<std::ffi::OsString> = args.iter().map(Into::into).collect();
    all.push("--data-dir".into());
    all.push(data_dir.into());
    common::relay_command(&all)
}

/// With `--metrics-listen`, `/metrics` is served on that address alone: the public one, which
/// anyone reaches, answers it 404 (its figures show the relay's activity), while the probes
/// stay on both.
#[tokio::test]
async fn metrics_move_to_their_own_address() -> anyhow::Result<()> {
    let dir = tempfile::tempdir()?;
    let relay = RelayProcess::start_with(
        dir.path(),
        &[
            "--metrics-listen",
            "127.0.0.1:0",
            "--header-timeout-secs",
            "1",
        ],
    )?;
    let mut metrics: Option<SocketAddr> = None;
    for _ in 0..500 {
        let log = relay.log.lock().unwrap().join("\n");
        if let Some(rest) = log.split("metrics=").nth(1) {
            metrics = Some(
                rest.split_whitespace()
                    .next()
                    .context("no address")?
                    .parse()?,
            );
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
    let metrics = metrics.context("the metrics address was never logged")?;
    assert_ne!(metrics, relay.addr);

    let (status, _) = http(relay.addr, "GET", paths::METRICS, None, &[]).await?;
    assert_eq!(status, 404, "the public address still serves /metrics");
    let (status, body) = http(metrics, "GET", paths::METRICS, None, &[]).await?;
    assert_eq!(status, 200);
    let body = String::from_utf8(body)?;
    assert!(body.contains("\nmend_stored_bytes "), "{body}");
    for addr in [relay.addr, metrics] {
        for probe in [paths::HEALTHZ, paths::READYZ] {
            let (status, _) = http(addr, "GET", probe, None, &[]).await?;
            assert_eq!(status, 200, "{probe} on {addr}");
        }
    }
    // Devices are served as before on the public address.
    relay_create(relay.addr, &token(1)).await?;

    // Connections that send nothing are dropped after the header timeout, so a few of them
    // hold the address only that long: a scrape behind them is still answered.
    let mut silent = Vec::new();
    for _ in 0..12 {
        silent.push(tokio::net::TcpStream::connect(metrics).await?);
    }
    let (status, _) = tokio::time::timeout(WAIT, http(metrics, "GET", paths::METRICS, None, &[]))
        .await
        .context("a scrape behind silent connections was never answered")??;
    assert_eq!(status, 200);
    let mut closed = 0;
    for mut stream in silent {
        let mut byte = [0u8; 1];
        let read =
            tokio::time::timeout(WAIT, tokio::io::AsyncReadExt::read(&mut stream, &mut byte))
                .await
                .context("a silent connection was held past the header timeout")?;
        if matches!(read, Ok(0) | Err(_)) {
            closed += 1;
        }
    }
    assert_eq!(closed, 12, "every silent connection was closed");
    Ok(())
}

async fn relay_create(addr: SocketAddr, tok: &str) -> anyhow::Result<()> {
    let (status, _) = http(addr, "PUT", &paths::space(&space(1)), Some(tok), &[]).await?;
    anyhow::ensure!(status == 201, "create answered {status}");
    Ok(())
}
