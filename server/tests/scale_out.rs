//! Several relay instances on one PostgreSQL database, driven by raw protocol clients: devices
//! on different instances sync live; both instances push to one space at once; an instance
//! killed with SIGKILL loses nothing it acknowledged; database connections cut under load are
//! recovered from; a slow or missing database answers 503 with `Retry-After`.
//!
//! Clients here behave like devices: on any failure they reconnect (to the other instance when
//! one is gone) and re-push what was not acknowledged; observers resume from their cursor.
//! Every loop is bounded by [`DEADLINE`].
#![allow(clippy::unwrap_used)]

mod common;

use std::{
    collections::BTreeMap,
    io::{BufRead, BufReader},
    net::SocketAddr,
    process::{Child, Command, Stdio},
    sync::{Arc, Mutex},
    time::{Duration, Instant},
};

use anyhow::{Context, bail};
use common::{Relay, WAIT, Ws, device, http, push, space, token};
use futures_util::{SinkExt, StreamExt};
use mend_protocol::{DeviceId, Limits, ServerMessage, SpaceId, paths};
use mend_relay::storage::test_db::TestDatabase;
use tokio_tungstenite::tungstenite::Message;

/// Upper bound for one scenario's client loops.
const DEADLINE: Duration = Duration::from_secs(90);
/// Pushes a client keeps in flight.
const WINDOW: usize = 32;

fn payload(dev: DeviceId, device_seq: u64) -> Vec<u8> {
    let mut bytes = Vec::with_capacity(64);
    bytes.extend_from_slice(&dev.0);
    bytes.extend_from_slice(&device_seq.to_le_bytes().repeat(6));
    bytes
}

async fn relays(db: &TestDatabase, n: usize) -> anyhow::Result<Vec<Relay>> {
    let mut relays = Vec::new();
    for _ in 0..n {
        relays.push(
            Relay::start_postgres(db.url(), |config| {
                config.limits.rate_per_space = 1_000_000;
                config.limits.rate_burst = 1_000_000;
                config.limits.space_quota_bytes = 1 << 30;
            })
            .await?,
        );
    }
    Ok(relays)
}

/// Pushes `device_seq` 1..=`count` of `dev` through whichever address answers, `WINDOW` at a
/// time, reconnecting after any failure and re-pushing what was not acknowledged. Returns
/// device_seq → relay_seq.
async fn push_all(
    addrs: &[SocketAddr],
    space: SpaceId,
    tok: &str,
    dev: DeviceId,
    count: u64,
) -> anyhow::Result<BTreeMap<u64, u64>> {
    let started = Instant::now();
    let mut acked = BTreeMap::new();
    let mut attempt = 0usize;
    while (acked.len() as u64) < count {
        anyhow::ensure!(
            started.elapsed() < DEADLINE,
            "pushes did not finish in time"
        );
        let addr = addrs[attempt % addrs.len()];
        attempt += 1;
        // `after` far ahead: this client only pushes, it needs no backlog.
        let path = format!(
            "{}?after={}&device={dev}",
            paths::live(&space),
            u64::MAX >> 1
        );
        let Ok(mut ws) = Ws::connect(addr, &path, Some(tok)).await else {
            tokio::time::sleep(Duration::from_millis(100)).await;
            continue;
        };
        if let Err(error) = push_window(&mut ws, dev, count, &mut acked).await {
            note(&format!("pusher reconnects: {error}"));
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
    Ok(acked)
}

/// Pushes the unacknowledged in windows on one connection until done or a failure.
async fn push_window(
    ws: &mut Ws,
    dev: DeviceId,
    count: u64,
    acked: &mut BTreeMap<u64, u64>,
) -> anyhow::Result<()> {
    loop {
        let todo: Vec<u64> = (1..=count)
            .filter(|seq| !acked.contains_key(seq))
            .take(WINDOW)
            .collect();
        if todo.is_empty() {
            ws.socket.close(None).await.ok();
            return Ok(());
        }
        for &seq in &todo {
            ws.send_push(&push(dev, seq, &payload(dev, seq))).await?;
        }
        let mut answered = 0;
        while answered < todo.len() {
            match ws.next().await? {
                ServerMessage::Ack(ack) => {
                    if let Some(previous) = acked.insert(ack.device_seq, ack.relay_seq) {
                        anyhow::ensure!(
                            previous == ack.relay_seq,
                            "push {} acknowledged as {previous} and as {}",
                            ack.device_seq,
                            ack.relay_seq
                        );
                    }
                    answered += 1;
                }
                ServerMessage::Nack(nack) => bail!("nack {:?}", nack.code),
                _ => {}
            }
        }
    }
}

fn note(message: &str) {
    eprintln!("{message}");
}

/// Reads the space live from `after` = 0 through whichever address answers, resuming from its
/// cursor after any failure, until it has seen `until` chunks. Fails on a gap or a duplicate.
async fn observe(
    addrs: Vec<SocketAddr>,
    space: SpaceId,
    tok: String,
    until: u64,
) -> anyhow::Result<Vec<(u64, DeviceId, u64)>> {
    let started = Instant::now();
    let mut seen = Vec::new();
    let mut cursor = 0;
    let mut attempt = 0;
    while cursor < until {
        anyhow::ensure!(
            started.elapsed() < DEADLINE,
            "observer stuck at {cursor} of {until}"
        );
        let addr = addrs[attempt % addrs.len()];
        attempt += 1;
        let path = format!("{}?after={cursor}", paths::live(&space));
        let Ok(mut ws) = Ws::connect(addr, &path, Some(&tok)).await else {
            tokio::time::sleep(Duration::from_millis(100)).await;
            continue;
        };
        while cursor < until {
            match ws.next().await {
                Ok(ServerMessage::Chunk(chunk)) => {
                    anyhow::ensure!(
                        chunk.relay_seq == cursor + 1,
                        "observer at {cursor} got {} (gap or duplicate)",
                        chunk.relay_seq
                    );
                    anyhow::ensure!(
                        chunk.payload == payload(chunk.device_id, chunk.device_seq),
                        "payload altered"
                    );
                    cursor = chunk.relay_seq;
                    seen.push((chunk.relay_seq, chunk.device_id, chunk.device_seq));
                }
                Ok(_) => {}
                Err(_) => break,
            }
        }
    }
    Ok(seen)
}

async fn create(addr: SocketAddr, space: &SpaceId, tok: &str) -> anyhow::Result<()> {
    let (status, _) = http(addr, "PUT", &paths::space(space), Some(tok), &[]).await?;
    anyhow::ensure!(status == 201 || status == 200, "create answered {status}");
    Ok(())
}

/// Checks that pushers' acknowledgements and observers' logs tell one story.
fn check_agreement(
    acks: &[(DeviceId, BTreeMap<u64, u64>)],
    logs: &[Vec<(u64, DeviceId, u64)>],
    total: u64,
) {
    let mut by_seq = BTreeMap::new();
    for (dev, acked) in acks {
        for (device_seq, relay_seq) in acked {
            assert!(
                by_seq.insert(*relay_seq, (*dev, *device_seq)).is_none(),
                "relay sequence {relay_seq} acknowledged twice"
            );
        }
    }
    assert!(
        by_seq.keys().copied().eq(1..=total),
        "acknowledged sequences are not 1..={total}"
    );
    for log in logs {
        assert_eq!(log.len() as u64, total);
        for (relay_seq, dev, device_seq) in log {
            assert_eq!(
                by_seq.get(relay_seq),
                Some(&(*dev, *device_seq)),
                "instances disagree at {relay_seq}"
            );
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn devices_on_two_instances_sync_live() -> anyhow::Result<()> {
    let db = TestDatabase::create().await?;
    let relays = relays(&db, 2).await?;
    let (one, two) = (&relays[0], &relays[1]);
    let (sp, tok) = (space(1), token(1));
    one.create(&sp, &tok).await?;
    let (a, b) = (device(1), device(2));
    let mut on_one = one
        .connect(&sp, &tok, &format!("after=0&device={a}"))
        .await?;
    let mut on_two = two
        .connect(&sp, &tok, &format!("after=0&device={b}"))
        .await?;
    on_one.expect_up_to_date().await?;
    on_two.expect_up_to_date().await?;
    for round in 1..=5u64 {
        on_one
            .send_push(&push(a, round, &payload(a, round)))
            .await?;
        let ack = on_one.expect_ack().await?;
        let chunk = on_two.expect_chunk().await?;
        assert_eq!((chunk.relay_seq, chunk.device_id), (ack.relay_seq, a));
        on_two
            .send_push(&push(b, round, &payload(b, round)))
            .await?;
        let ack = on_two.expect_ack().await?;
        let chunk = on_one.expect_chunk().await?;
        assert_eq!((chunk.relay_seq, chunk.device_id), (ack.relay_seq, b));
    }
    // A device joining instance two later gets the whole log from the table.
    let mut late = two.connect(&sp, &tok, "after=0").await?;
    for seq in 1..=10 {
        assert_eq!(late.expect_chunk().await?.relay_seq, seq);
    }
    assert_eq!(late.expect_up_to_date().await?, 10);
    for relay in relays {
        relay.stop().await?;
    }
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn both_instances_push_to_one_space_at_once() -> anyhow::Result<()> {
    const EACH: u64 = 300;
    let db = TestDatabase::create().await?;
    let relays = relays(&db, 2).await?;
    let addrs: Vec<SocketAddr> = relays.iter().map(|r| r.addr).collect();
    let (sp, tok) = (space(2), token(2));
    create(addrs[0], &sp, &tok).await?;
    let observers: Vec<_> = addrs
        .iter()
        .map(|addr| tokio::spawn(observe(vec![*addr], sp, tok.clone(), 2 * EACH)))
        .collect();
    let pushers: Vec<_> = [(addrs[0], device(1)), (addrs[1], device(2))]
        .into_iter()
        .map(|(addr, dev)| {
            let tok = tok.clone();
            tokio::spawn(async move {
                push_all(&[addr], sp, &tok, dev, EACH)
                    .await
                    .map(|acked| (dev, acked))
            })
        })
        .collect();
    let mut acks = Vec::new();
    for pusher in pushers {
        acks.push(pusher.await??);
    }
    let mut logs = Vec::new();
    for observer in observers {
        logs.push(observer.await??);
    }
    check_agreement(&acks, &logs, 2 * EACH);
    for relay in relays {
        relay.stop().await?;
    }
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn database_connections_cut_under_load_are_recovered() -> anyhow::Result<()> {
    const EACH: u64 = 400;
    let db = TestDatabase::create().await?;
    let relays = relays(&db, 2).await?;
    let addrs: Vec<SocketAddr> = relays.iter().map(|r| r.addr).collect();
    let (sp, tok) = (space(3), token(3));
    create(addrs[0], &sp, &tok).await?;
    let observers: Vec<_> = addrs
        .iter()
        .map(|addr| tokio::spawn(observe(vec![*addr], sp, tok.clone(), 2 * EACH)))
        .collect();
    let pushers: Vec<_> = [device(1), device(2)]
        .into_iter()
        .enumerate()
        .map(|(i, dev)| {
            let tok = tok.clone();
            let mine = vec![addrs[i], addrs[1 - i]];
            tokio::spawn(async move {
                push_all(&mine, sp, &tok, dev, EACH)
                    .await
                    .map(|acked| (dev, acked))
            })
        })
        .collect();
    // Cut every connection the relays hold to this database, a few times, while they work.
    let (admin, connection) = db
        .url()
        .parse::<tokio_postgres::Config>()?
        .connect(tokio_postgres::NoTls)
        .await?;
    let driver = tokio::spawn(connection);
    let mut cut = 0u64;
    for _ in 0..4 {
        tokio::time::sleep(Duration::from_millis(250)).await;
        let rows = admin
            .query(
                "SELECT pg_terminate_backend(pid) FROM pg_stat_activity
                 WHERE datname = current_database() AND pid <> pg_backend_pid()",
                &[],
            )
            .await?;
        cut += rows.len() as u64;
    }
    drop(admin);
    let _ = driver.await;
    assert!(cut > 0, "no connection was cut");
    let mut acks = Vec::new();
    for pusher in pushers {
        acks.push(pusher.await??);
    }
    let mut logs = Vec::new();
    for observer in observers {
        logs.push(observer.await??);
    }
    check_agreement(&acks, &logs, 2 * EACH);
    // Both listeners came back, and both instances are ready again.
    for relay in &relays {
        let started = Instant::now();
        loop {
            let (status, body) = http(relay.addr, "GET", paths::METRICS, None, &[]).await?;
            let text = String::from_utf8_lossy(&body).into_owned();
            let connects = metric(&text, "mend_db_listener_connects_total");
            let (ready, _) = http(relay.addr, "GET", paths::READYZ, None, &[]).await?;
            if status == 200 && connects >= 2 && ready == 200 {
                break;
            }
            anyhow::ensure!(
                started.elapsed() < WAIT,
                "instance not recovered: listener connects {connects}, readyz {ready}"
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }
    for relay in relays {
        relay.stop().await?;
    }
    Ok(())
}

fn metric(text: &str, name: &str) -> u64 {
    text.lines()
        .find_map(|line| line.strip_prefix(name)?.trim().parse().ok())
        .unwrap_or(0)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn slow_or_missing_database_answers_503_with_retry_after() -> anyhow::Result<()> {
    let db = TestDatabase::create().await?;
    let relay = Relay::start_postgres(db.url(), |config| {
        config.postgres.statement_timeout = Duration::from_millis(300);
        config.postgres.acquire_timeout = Duration::from_millis(500);
    })
    .await?;
    let (sp, tok) = (space(4), token(4));
    relay.create(&sp, &tok).await?;
    relay
        .push_http(&sp, &tok, &push(device(1), 1, b"before"))
        .await?;

    // Slow: another session holds the space's row; the push's statement times out.
    let (admin, connection) = db
        .url()
        .parse::<tokio_postgres::Config>()?
        .connect(tokio_postgres::NoTls)
        .await?;
    let driver = tokio::spawn(connection);
    admin
        .batch_execute("BEGIN; SELECT 1 FROM spaces FOR UPDATE;")
        .await?;
    let answer = raw_push(relay.addr, &sp, &tok, 2).await?;
    assert!(answer.starts_with("HTTP/1.1 503"), "{answer}");
    assert!(
        answer.to_ascii_lowercase().contains("retry-after: 1"),
        "{answer}"
    );
    admin.batch_execute("ROLLBACK").await?;
    drop(admin);
    let _ = driver.await;
    relay
        .push_http(&sp, &tok, &push(device(1), 2, b"after"))
        .await?;

    // Missing: the database goes away; pushes and readiness answer 503 promptly.
    drop(db);
    let answer = tokio::time::timeout(WAIT, raw_push(relay.addr, &sp, &tok, 3)).await??;
    assert!(answer.starts_with("HTTP/1.1 503"), "{answer}");
    assert!(
        answer.to_ascii_lowercase().contains("retry-after:"),
        "{answer}"
    );
    let (status, _) = http(relay.addr, "GET", paths::READYZ, None, &[]).await?;
    assert_eq!(status, 503);
    let (status, _) = http(relay.addr, "GET", paths::HEALTHZ, None, &[]).await?;
    assert_eq!(status, 200, "the process itself is alive");
    relay.stop().await.ok();
    Ok(())
}

/// A push over HTTP, answered as raw text (status line and headers included).
async fn raw_push(
    addr: SocketAddr,
    space: &SpaceId,
    tok: &str,
    device_seq: u64,
) -> anyhow::Result<String> {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let body = push(device(1), device_seq, b"x").to_bytes();
    let mut stream = tokio::net::TcpStream::connect(addr).await?;
    let head = format!(
        "POST {} HTTP/1.1\r\nhost: {addr}\r\nconnection: close\r\ncontent-length: {}\r\n\
         authorization: Bearer {tok}\r\n\r\n",
        paths::chunks(space),
        body.len()
    );
    stream.write_all(head.as_bytes()).await?;
    stream.write_all(&body).await?;
    let mut response = Vec::new();
    tokio::time::timeout(WAIT, stream.read_to_end(&mut response)).await??;
    Ok(String::from_utf8_lossy(&response).into_owned())
}

/// The relay binary as a child process on a database, killed if the test ends early.
struct RelayProcess {
    child: Child,
    addr: SocketAddr,
    log: Arc<Mutex<Vec<String>>>,
}

impl RelayProcess {
    fn start(url: &str) -> anyhow::Result<RelayProcess> {
        let mut child = Command::new(env!("CARGO_BIN_EXE_mend-relay"))
            .args(["--listen", "127.0.0.1:0", "--database-url", url])
            .args(["--rate-per-space", "1000000", "--rate-burst", "1000000"])
            .env("RUST_LOG", "mend_relay=debug,info")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()?;
        let stderr = child.stderr.take().context("no stderr")?;
        let mut lines = BufReader::new(stderr).lines();
        let log = Arc::new(Mutex::new(Vec::new()));
        let addr = loop {
            let Some(line) = lines.next() else {
                bail!("relay exited before listening: {:?}", log.lock().unwrap());
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
}

impl Drop for RelayProcess {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_instance_killed_mid_push_loses_nothing_acknowledged() -> anyhow::Result<()> {
    const TOTAL: u64 = 2000;
    const KILL_AFTER: usize = 300;
    let db = TestDatabase::create().await?;
    let mut one = RelayProcess::start(db.url())?;
    let two = RelayProcess::start(db.url())?;
    let (sp, tok) = (space(5), token(5));
    create(one.addr, &sp, &tok).await?;
    let dev = device(1);
    // A device on instance two watches throughout.
    let watcher = tokio::spawn(observe(vec![two.addr], sp, tok.clone(), TOTAL));

    // Stream pushes to instance one and kill it with pushes in flight.
    let path = format!("{}?after=0&device={dev}", paths::live(&sp));
    let ws = Ws::connect(one.addr, &path, Some(&tok)).await?;
    let (mut sink, mut stream) = ws.socket.split();
    let acked = Arc::new(Mutex::new(BTreeMap::<u64, u64>::new()));
    let reader = {
        let acked = acked.clone();
        tokio::spawn(async move {
            while let Some(Ok(message)) = stream.next().await {
                if let Message::Binary(bytes) = message
                    && let Ok(ServerMessage::Ack(ack)) =
                        ServerMessage::decode(&bytes, &Limits::DEFAULT)
                {
                    acked.lock().unwrap().insert(ack.device_seq, ack.relay_seq);
                }
            }
        })
    };
    let started = Instant::now();
    let mut sent = 0;
    while sent < TOTAL && acked.lock().unwrap().len() < KILL_AFTER {
        anyhow::ensure!(
            started.elapsed() < DEADLINE,
            "instance one never acknowledged"
        );
        sent += 1;
        let frame = push(dev, sent, &payload(dev, sent)).to_bytes();
        if sink.send(Message::Binary(frame.into())).await.is_err() {
            break;
        }
        if sent % 16 == 0 {
            tokio::time::sleep(Duration::from_millis(1)).await;
        }
    }
    one.kill()?;
    tokio::time::timeout(WAIT, reader).await??;
    let before_kill = acked.lock().unwrap().clone();
    assert!(before_kill.len() >= KILL_AFTER.min(sent as usize) / 2);

    // The device reconnects to instance two and pushes everything again.
    let after = push_all(&[two.addr], sp, &tok, dev, TOTAL).await?;
    for (device_seq, relay_seq) in &before_kill {
        assert_eq!(
            after.get(device_seq),
            Some(relay_seq),
            "acknowledged push {device_seq} lost or moved"
        );
    }
    let log = watcher.await??;
    check_agreement(&[(dev, after)], &[log], TOTAL);
    let lines = two.log.lock().unwrap().join("\n");
    assert!(!lines.contains(&tok), "token leaked into the log");
    // Every counter still matches the rows, checked beside the instance that serves on.
    let args = ["--database-url", db.url(), "check"].map(std::ffi::OsString::from);
    let (status, out) = common::relay_command(&args)?;
    assert!(status.success(), "{status}\n{out}");
    assert!(out.contains("checked 1 spaces: 0 with counters"), "{out}");
    Ok(())
}

/// `mend-relay check` checks only a database of its own schema: one of another version (here,
/// an empty one) is refused with exit status 2 and left as it was, never migrated under the
/// instances that serve it.
#[tokio::test]
async fn check_leaves_a_database_of_another_schema_alone() -> anyhow::Result<()> {
    use mend_relay::storage::postgres::PostgresStorage;

    let db = TestDatabase::create().await?;
    let args = ["--database-url", db.url(), "check", "--repair"].map(std::ffi::OsString::from);
    let (status, out) = common::relay_command(&args)?;
    assert_eq!(status.code(), Some(2), "{out}");
    assert!(out.contains("schema is version 0"), "{out}");
    assert_eq!(PostgresStorage::schema_version(db.url()).await?, 0);
    Ok(())
}
