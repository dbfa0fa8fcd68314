//! Pushes in flight are bounded per space, over all of its sockets: with storage held back
//! (a gate in front of SQLite), a space at its cap gets `rate_limited` on a third socket's push
//! and over HTTP, another space is served, and once storage answers the space pushes again.
#![allow(clippy::unwrap_used)]

mod common;

use std::{
    sync::{
        Arc,
        atomic::{AtomicUsize, Ordering},
    },
    time::Duration,
};

use common::{WAIT, Ws, device, http, push, space, test_config, token};
use mend_protocol::{ErrorCode, Page, Push, ServerMessage, Snapshot, SpaceId, paths};
use mend_relay::{
    AppState,
    live::LocalHub,
    run,
    storage::{
        Created, PullRequest, Pushed, Storage, StorageFuture, Swept, TokenHash,
        sqlite::SqliteStorage,
    },
};
use tokio::{net::TcpListener, sync::Semaphore};

/// SQLite whose answers to pushes to space 1 wait until the gate opens (the chunk itself is
/// stored and delivered to the space's other sockets); counts the pushes that reached it.
struct Gate {
    inner: SqliteStorage,
    open: Arc<Semaphore>,
    entered: Arc<AtomicUsize>,
}

impl Storage for Gate {
    fn create_space(&self, space: SpaceId, token_hash: TokenHash) -> StorageFuture<Created> {
        self.inner.create_space(space, token_hash)
    }
    fn token_hash(&self, space: SpaceId) -> StorageFuture<Option<TokenHash>> {
        self.inner.token_hash(space)
    }
    fn push(&self, target: SpaceId, p: Push, quota: u64) -> StorageFuture<Pushed> {
        if target != space(1) {
            return self.inner.push(target, p, quota);
        }
        self.entered.fetch_add(1, Ordering::SeqCst);
        let (open, answer) = (self.open.clone(), self.inner.push(target, p, quota));
        Box::pin(async move {
            let _pass = open.acquire().await;
            answer.await
        })
    }
    fn pull(&self, space: SpaceId, request: PullRequest) -> StorageFuture<Page> {
        self.inner.pull(space, request)
    }
    fn push_rollup(
        &self,
        space: SpaceId,
        rollup: mend_protocol::RollupPush,
        quota: u64,
    ) -> StorageFuture<mend_relay::storage::RollupStored> {
        self.inner.push_rollup(space, rollup, quota)
    }
    fn sizes(
        &self,
        space: SpaceId,
        after: u64,
        exclude_device: Option<mend_protocol::DeviceId>,
    ) -> StorageFuture<mend_protocol::Sizes> {
        self.inner.sizes(space, after, exclude_device)
    }
    fn put_snapshot(
        &self,
        space: SpaceId,
        snapshot: Snapshot,
        quota: u64,
        grace: Duration,
    ) -> StorageFuture<()> {
        self.inner.put_snapshot(space, snapshot, quota, grace)
    }
    fn sweep_pruned(
        &self,
        grace: Duration,
        max_chunks: usize,
        max_bytes: u64,
    ) -> StorageFuture<Swept> {
        self.inner.sweep_pruned(grace, max_chunks, max_bytes)
    }
    fn set_total_quota(&self, bytes: u64) {
        self.inner.set_total_quota(bytes);
    }
    fn total_bytes(&self) -> StorageFuture<u64> {
        self.inner.total_bytes()
    }
    fn get_snapshot(&self, space: SpaceId) -> StorageFuture<Option<Snapshot>> {
        self.inner.get_snapshot(space)
    }
    fn erase(
        &self,
        space: SpaceId,
        reason: mend_relay::storage::EraseReason,
    ) -> StorageFuture<bool> {
        self.inner.erase(space, reason)
    }
    fn tombstone(&self, space: SpaceId) -> StorageFuture<Option<mend_relay::storage::Tombstone>> {
        self.inner.tombstone(space)
    }
    fn count_creation(&self, client: [u8; 32], start: u64, keep: u64) -> StorageFuture<u64> {
        self.inner.count_creation(client, start, keep)
    }
    fn open_pairing(&self, new: mend_relay::storage::NewPairing) -> StorageFuture<String> {
        self.inner.open_pairing(new)
    }
    fn claim_pairing(&self, mailbox: String, guest: TokenHash, now: u64) -> StorageFuture<u64> {
        self.inner.claim_pairing(mailbox, guest, now)
    }
    fn pairing(
        &self,
        mailbox: String,
        now: u64,
    ) -> StorageFuture<Option<mend_relay::storage::PairingRecord>> {
        self.inner.pairing(mailbox, now)
    }
    fn post_pairing(
        &self,
        mailbox: String,
        side: mend_relay::storage::PairingSide,
        body: Vec<u8>,
        now: u64,
    ) -> StorageFuture<u64> {
        self.inner.post_pairing(mailbox, side, body, now)
    }
    fn read_pairing(
        &self,
        mailbox: String,
        reader: mend_relay::storage::PairingSide,
        after: u64,
        now: u64,
    ) -> StorageFuture<mend_protocol::PairingInbox> {
        self.inner.read_pairing(mailbox, reader, after, now)
    }
    fn close_pairing(
        &self,
        mailbox: String,
        burn: bool,
        now: u64,
    ) -> StorageFuture<Option<mend_protocol::PairingState>> {
        self.inner.close_pairing(mailbox, burn, now)
    }
    fn sweep_pairings(
        &self,
        now: u64,
        linger: std::time::Duration,
    ) -> StorageFuture<mend_relay::storage::PairingSwept> {
        self.inner.sweep_pairings(now, linger)
    }
    fn ready(&self) -> StorageFuture<()> {
        self.inner.ready()
    }
    fn audit(&self, repair: bool) -> StorageFuture<mend_relay::storage::Audit> {
        self.inner.audit(repair)
    }
    fn close(&self) -> StorageFuture<()> {
        self.inner.close()
    }
}

/// The relay sequence of the next Ack, skipping chunks delivered live.
async fn ack_of(ws: &mut Ws) -> anyhow::Result<u64> {
    loop {
        match ws.next().await? {
            ServerMessage::Ack(ack) => return Ok(ack.relay_seq),
            ServerMessage::Chunk(_) => continue,
            other => anyhow::bail!("expected an Ack, got {other:?}"),
        }
    }
}

#[tokio::test]
async fn in_flight_pushes_are_bounded_per_space() -> anyhow::Result<()> {
    let dir = tempfile::tempdir()?;
    let mut config = test_config(dir.path());
    config.limits.max_inflight_pushes_per_space = 2;
    let hub = LocalHub::default();
    let open = Arc::new(Semaphore::new(0));
    let entered = Arc::new(AtomicUsize::new(0));
    let gate = Gate {
        inner: SqliteStorage::open(dir.path(), Arc::new(hub.clone()), config.group_commit)?,
        open: open.clone(),
        entered: entered.clone(),
    };
    let listener = TcpListener::bind(config.listen).await?;
    let addr = listener.local_addr()?;
    let state = AppState::new(config, Arc::new(gate), Arc::new(hub));
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let relay = tokio::spawn(run(listener, state, async move {
        let _ = stopped.await;
    }));

    let (s, t) = (space(1), token(1));
    let (status, _) = http(addr, "PUT", &paths::space(&s), Some(&t), &[]).await?;
    assert_eq!(status, 201);
    let live = |n: u8| {
        let path = format!("{}?after=0&device={}", paths::live(&s), device(n));
        let t = t.clone();
        async move { Ws::connect(addr, &path, Some(&t)).await }
    };
    let (mut a, mut b, mut c) = (live(1).await?, live(2).await?, live(3).await?);
    for ws in [&mut a, &mut b, &mut c] {
        ws.expect_up_to_date().await?;
    }
    a.send_push(&push(device(1), 1, b"held")).await?;
    b.send_push(&push(device(2), 1, b"held")).await?;
    // Both reached storage (bounded wait: the relay reads each socket at once).
    for _ in 0..500 {
        if entered.load(Ordering::SeqCst) == 2 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    assert_eq!(entered.load(Ordering::SeqCst), 2);

    // The space is at its cap: a third socket's push and an HTTP push are refused.
    c.send_push(&push(device(3), 1, b"third")).await?;
    let nack = loop {
        match c.next().await? {
            ServerMessage::Nack(nack) => break nack,
            ServerMessage::Chunk(_) => continue, // the held pushes, delivered live
            other => anyhow::bail!("expected a Nack, got {other:?}"),
        }
    };
    assert_eq!((nack.device_seq, nack.code), (1, ErrorCode::RateLimited));
    assert!(nack.retry_after_ms > 0);
    let (status, body) = http(
        addr,
        "POST",
        &paths::chunks(&s),
        Some(&t),
        &push(device(4), 1, b"http").to_bytes(),
    )
    .await?;
    assert_eq!(
        (status, common::error_code(&body).as_str()),
        (429, "rate_limited")
    );
    assert_eq!(
        entered.load(Ordering::SeqCst),
        2,
        "refused pushes never reached storage"
    );

    // Another space is served meanwhile.
    let (other, other_token) = (space(2), token(2));
    http(addr, "PUT", &paths::space(&other), Some(&other_token), &[]).await?;
    let (status, _) = http(
        addr,
        "POST",
        &paths::chunks(&other),
        Some(&other_token),
        &push(device(9), 1, b"elsewhere").to_bytes(),
    )
    .await?;
    assert_eq!(status, 200);

    // Storage answers: the held pushes are acknowledged and the space pushes again.
    open.add_permits(1_000);
    let mut acked = [ack_of(&mut a).await?, ack_of(&mut b).await?];
    acked.sort_unstable();
    assert_eq!(acked, [1, 2]);
    c.send_push(&push(device(3), 1, b"third")).await?;
    assert_eq!(ack_of(&mut c).await?, 3);

    for ws in [a, b, c] {
        ws.close().await;
    }
    let _ = stop.send(());
    tokio::time::timeout(WAIT, relay).await???;
    Ok(())
}

/// A request answered as raw text (status line, headers and body).
async fn raw(
    addr: std::net::SocketAddr,
    method: &str,
    path: &str,
    tok: &str,
    body: &[u8],
) -> anyhow::Result<String> {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut stream = tokio::net::TcpStream::connect(addr).await?;
    let head = format!(
        "{method} {path} HTTP/1.1\r\nhost: {addr}\r\nconnection: close\r\n\
         authorization: Bearer {tok}\r\ncontent-length: {}\r\n\r\n",
        body.len()
    );
    stream.write_all(head.as_bytes()).await?;
    stream.write_all(body).await?;
    let mut response = Vec::new();
    tokio::time::timeout(WAIT, stream.read_to_end(&mut response)).await??;
    Ok(String::from_utf8_lossy(&response).into_owned())
}

/// The relay-wide queue of writes waiting for storage is bounded: with storage held back and
/// the queue full, a push over HTTP gets `503 unavailable` with `Retry-After: 1` and one on a
/// live socket a Nack `unavailable` with a wait, without reaching storage; a well-behaved
/// client still reads meanwhile, and pushes as soon as storage answers.
#[tokio::test]
async fn a_full_write_queue_answers_503_and_reads_go_on() -> anyhow::Result<()> {
    let dir = tempfile::tempdir()?;
    let mut config = test_config(dir.path());
    config.limits.max_queued_writes = 2;
    let hub = LocalHub::default();
    let open = Arc::new(Semaphore::new(0));
    let entered = Arc::new(AtomicUsize::new(0));
    let gate = Gate {
        inner: SqliteStorage::open(dir.path(), Arc::new(hub.clone()), config.group_commit)?,
        open: open.clone(),
        entered: entered.clone(),
    };
    let listener = TcpListener::bind(config.listen).await?;
    let addr = listener.local_addr()?;
    let state = AppState::new(config, Arc::new(gate), Arc::new(hub));
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let relay = tokio::spawn(run(listener, state, async move {
        let _ = stopped.await;
    }));

    // The well-behaved client's space, with one chunk in it, made before the flood.
    let (calm, calm_token) = (space(2), token(2));
    let (status, _) = http(addr, "PUT", &paths::space(&calm), Some(&calm_token), &[]).await?;
    assert_eq!(status, 201);
    let (status, _) = http(
        addr,
        "POST",
        &paths::chunks(&calm),
        Some(&calm_token),
        &push(device(9), 1, b"before").to_bytes(),
    )
    .await?;
    assert_eq!(status, 200);

    // The flooding space: two pushes fill the queue and wait on storage.
    let (s, t) = (space(1), token(1));
    let (status, _) = http(addr, "PUT", &paths::space(&s), Some(&t), &[]).await?;
    assert_eq!(status, 201);
    let held: Vec<_> = (1..=2u64)
        .map(|n| {
            let (path, t) = (paths::chunks(&s), t.clone());
            tokio::spawn(async move {
                http(
                    addr,
                    "POST",
                    &path,
                    Some(&t),
                    &push(device(1), n, b"held").to_bytes(),
                )
                .await
            })
        })
        .collect();
    for _ in 0..500 {
        if entered.load(Ordering::SeqCst) == 2 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    assert_eq!(entered.load(Ordering::SeqCst), 2);

    // Full: a push over HTTP is refused at once with a wait …
    let answer = raw(
        addr,
        "POST",
        &paths::chunks(&s),
        &t,
        &push(device(1), 3, b"third").to_bytes(),
    )
    .await?;
    assert!(answer.starts_with("HTTP/1.1 503"), "{answer}");
    assert!(
        answer.to_ascii_lowercase().contains("retry-after: 1\r\n"),
        "{answer}"
    );
    assert!(answer.contains("\"unavailable\""), "{answer}");
    // … and so is one on a live socket, which stays open. (The held pushes are committed
    // before their answers are let through: the socket starts after them once they are.)
    for _ in 0..250 {
        let (_, body) = http(addr, "GET", &paths::pull(&s, 0, None, None), Some(&t), &[]).await?;
        if Page::decode(&body, &mend_protocol::Limits::DEFAULT)?.head == 2 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let path = format!("{}?after=2&device={}", paths::live(&s), device(3));
    let mut ws = Ws::connect(addr, &path, Some(&t)).await?;
    ws.expect_up_to_date().await?;
    ws.send_push(&push(device(3), 1, b"live")).await?;
    let nack = ws.expect_nack().await?;
    assert_eq!((nack.device_seq, nack.code), (1, ErrorCode::Unavailable));
    assert_eq!(nack.retry_after_ms, 1000);
    assert_eq!(
        entered.load(Ordering::SeqCst),
        2,
        "refused pushes never reached storage"
    );

    // The well-behaved client still reads.
    let (status, body) = http(
        addr,
        "GET",
        &format!("{}?after=0", paths::chunks(&calm)),
        Some(&calm_token),
        &[],
    )
    .await?;
    assert_eq!(status, 200);
    let page = Page::decode(&body, &mend_protocol::Limits::DEFAULT)?;
    assert_eq!(page.chunks.len(), 1);

    // Storage answers: the held pushes are acknowledged, and everyone pushes again.
    open.add_permits(1_000);
    for h in held {
        let (status, _) = h.await??;
        assert_eq!(status, 200);
    }
    let (status, _) = http(
        addr,
        "POST",
        &paths::chunks(&calm),
        Some(&calm_token),
        &push(device(9), 2, b"after").to_bytes(),
    )
    .await?;
    assert_eq!(status, 200);
    ws.send_push(&push(device(3), 1, b"live")).await?;
    assert_eq!(ack_of(&mut ws).await?, 3);

    ws.close().await;
    let _ = stop.send(());
    tokio::time::timeout(WAIT, relay).await???;
    Ok(())
}

/// A request from `client` (as a trusted proxy names it in `x-forwarded-for`), answered as its
/// status and raw text.
async fn from(
    addr: std::net::SocketAddr,
    client: &str,
    method: &str,
    path: &str,
    tok: &str,
    body: &[u8],
) -> anyhow::Result<(u16, String)> {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut stream = tokio::net::TcpStream::connect(addr).await?;
    let head = format!(
        "{method} {path} HTTP/1.1\r\nhost: {addr}\r\nconnection: close\r\n\
         x-forwarded-for: {client}\r\nauthorization: Bearer {tok}\r\n\
         content-length: {}\r\n\r\n",
        body.len()
    );
    stream.write_all(head.as_bytes()).await?;
    stream.write_all(body).await?;
    let mut response = Vec::new();
    tokio::time::timeout(WAIT, stream.read_to_end(&mut response)).await??;
    let (status, _) = common::parse_response(&response)?;
    Ok((status, String::from_utf8_lossy(&response).into_owned()))
}

/// A live socket from `client`, as a trusted proxy names it.
async fn live_from(
    addr: std::net::SocketAddr,
    client: &str,
    path: &str,
    tok: &str,
) -> anyhow::Result<Ws> {
    use tokio_tungstenite::tungstenite::{client::IntoClientRequest, http::HeaderValue};
    let mut request = format!("ws://{addr}{path}").into_client_request()?;
    let headers = request.headers_mut();
    headers.insert(
        "authorization",
        HeaderValue::from_str(&format!("Bearer {tok}"))?,
    );
    headers.insert("x-forwarded-for", HeaderValue::from_str(client)?);
    let (socket, _) =
        tokio::time::timeout(WAIT, tokio_tungstenite::connect_async(request)).await??;
    Ok(Ws { socket })
}

/// One address flooding the relay with pushes holds only its share of the write queue: with
/// storage held back, its pushes past the share are answered `503 unavailable` with
/// `Retry-After: 1` (a Nack `unavailable` on a live socket) in every one of its spaces, while
/// another address, whose writes the flood would otherwise have locked out of the queue,
/// pushes over HTTP and live. Once storage answers, the flooder pushes again.
#[tokio::test]
async fn one_address_holds_only_its_share_of_the_write_queue() -> anyhow::Result<()> {
    const FLOODER: &str = "192.0.2.1";
    const CALM: &str = "198.51.100.7";
    let dir = tempfile::tempdir()?;
    let mut config = test_config(dir.path());
    config.limits.max_queued_writes = 8;
    config.limits.max_queued_writes_per_address = 3;
    config.limits.client_ip_header = Some("x-forwarded-for".to_owned());
    let hub = LocalHub::default();
    let open = Arc::new(Semaphore::new(0));
    let entered = Arc::new(AtomicUsize::new(0));
    let gate = Gate {
        inner: SqliteStorage::open(dir.path(), Arc::new(hub.clone()), config.group_commit)?,
        open: open.clone(),
        entered: entered.clone(),
    };
    let listener = TcpListener::bind(config.listen).await?;
    let addr = listener.local_addr()?;
    let state = AppState::new(config, Arc::new(gate), Arc::new(hub));
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let relay = tokio::spawn(run(listener, state, async move {
        let _ = stopped.await;
    }));

    // The flooder's spaces: 1 (whose writes storage holds back) and 3; the calm client's: 2.
    let t = token(1);
    for (client, n) in [(FLOODER, 1), (FLOODER, 3), (CALM, 2)] {
        let (status, _) = from(addr, client, "PUT", &paths::space(&space(n)), &t, &[]).await?;
        assert_eq!(status, 201);
    }

    // The flood: ten pushes at once. Three take the address's share and wait on storage; the
    // other seven are refused at once.
    let flood: Vec<_> = (1..=10u64)
        .map(|n| {
            let (path, t) = (paths::chunks(&space(1)), t.clone());
            tokio::spawn(async move {
                from(
                    addr,
                    FLOODER,
                    "POST",
                    &path,
                    &t,
                    &push(device(1), n, b"flood").to_bytes(),
                )
                .await
            })
        })
        .collect();
    for _ in 0..500 {
        let refused = flood.iter().filter(|h| h.is_finished()).count();
        if entered.load(Ordering::SeqCst) == 3 && refused == 7 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    assert_eq!(entered.load(Ordering::SeqCst), 3);
    let (refused, held): (Vec<_>, Vec<_>) = flood.into_iter().partition(|h| h.is_finished());
    assert_eq!((refused.len(), held.len()), (7, 3));
    for h in refused {
        let (status, answer) = h.await??;
        assert_eq!(status, 503, "{answer}");
        assert!(answer.contains("\"unavailable\""), "{answer}");
        assert!(
            answer.to_ascii_lowercase().contains("retry-after: 1\r\n"),
            "{answer}"
        );
    }
    // The share is the address's, not the space's: its other space is refused too, over HTTP
    // and live.
    let (status, answer) = from(
        addr,
        FLOODER,
        "POST",
        &paths::chunks(&space(3)),
        &t,
        &push(device(3), 1, b"elsewhere").to_bytes(),
    )
    .await?;
    assert_eq!(status, 503, "{answer}");
    let path = format!("{}?after=0&device={}", paths::live(&space(3)), device(3));
    let mut flooder_live = live_from(addr, FLOODER, &path, &t).await?;
    flooder_live.expect_up_to_date().await?;
    flooder_live
        .send_push(&push(device(3), 1, b"elsewhere"))
        .await?;
    let nack = flooder_live.expect_nack().await?;
    assert_eq!(
        (nack.code, nack.retry_after_ms),
        (ErrorCode::Unavailable, 1000)
    );

    // The other address is served meanwhile, over HTTP and live.
    for n in 1..=3u64 {
        let (status, answer) = from(
            addr,
            CALM,
            "POST",
            &paths::chunks(&space(2)),
            &t,
            &push(device(2), n, b"calm").to_bytes(),
        )
        .await?;
        assert_eq!(status, 200, "{answer}");
    }
    let path = format!("{}?after=3&device={}", paths::live(&space(2)), device(2));
    let mut calm_live = live_from(addr, CALM, &path, &t).await?;
    calm_live.expect_up_to_date().await?;
    calm_live.send_push(&push(device(2), 4, b"live")).await?;
    assert_eq!(ack_of(&mut calm_live).await?, 4);
    assert_eq!(
        entered.load(Ordering::SeqCst),
        3,
        "refused pushes never reached storage"
    );

    // Storage answers: the held pushes are acknowledged, and the flooder pushes again.
    open.add_permits(1_000);
    for h in held {
        let (status, answer) = h.await??;
        assert_eq!(status, 200, "{answer}");
    }
    flooder_live
        .send_push(&push(device(3), 1, b"elsewhere"))
        .await?;
    assert_eq!(ack_of(&mut flooder_live).await?, 1);

    for ws in [flooder_live, calm_live] {
        ws.close().await;
    }
    let _ = stop.send(());
    tokio::time::timeout(WAIT, relay).await???;
    Ok(())
}

/// Pushes on live sockets count against the same byte budget as request bodies: with storage
/// held back, a space's pushes past its share are Nacked `unavailable` with a wait (an HTTP
/// push `503`) without reaching storage, another space pushes meanwhile, and once storage
/// answers every byte is given back and the space pushes again.
#[tokio::test]
async fn live_pushes_held_by_storage_count_against_the_body_budget() -> anyhow::Result<()> {
    let dir = tempfile::tempdir()?;
    let mut config = test_config(dir.path());
    // Room for two 4000-byte payloads of one space, and for the largest body.
    config.limits.max_body_bytes_per_space = 9000;
    let hub = LocalHub::default();
    let open = Arc::new(Semaphore::new(0));
    let entered = Arc::new(AtomicUsize::new(0));
    let gate = Gate {
        inner: SqliteStorage::open(dir.path(), Arc::new(hub.clone()), config.group_commit)?,
        open: open.clone(),
        entered: entered.clone(),
    };
    let listener = TcpListener::bind(config.listen).await?;
    let addr = listener.local_addr()?;
    let state = AppState::new(config, Arc::new(gate), Arc::new(hub));
    let budget_state = state.clone();
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let relay = tokio::spawn(run(listener, state, async move {
        let _ = stopped.await;
    }));

    let (s, t) = (space(1), token(1));
    let (status, _) = http(addr, "PUT", &paths::space(&s), Some(&t), &[]).await?;
    assert_eq!(status, 201);
    let path = format!("{}?after=0&device={}", paths::live(&s), device(1));
    let mut ws = Ws::connect(addr, &path, Some(&t)).await?;
    ws.expect_up_to_date().await?;
    for seq in 1..=2 {
        ws.send_push(&push(device(1), seq, &[seq as u8; 4000]))
            .await?;
    }
    for _ in 0..500 {
        if entered.load(Ordering::SeqCst) == 2 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    assert_eq!(entered.load(Ordering::SeqCst), 2);
    assert_eq!(budget_state.body_budget().reserved(), 8000);

    // Past the space's share: refused live (on a second socket: a socket answers in order, after
    // its held pushes) and over HTTP, before storage.
    let path = format!("{}?after=2&device={}", paths::live(&s), device(3));
    let mut second = Ws::connect(addr, &path, Some(&t)).await?;
    second.expect_up_to_date().await?;
    second.send_push(&push(device(3), 1, &[3; 4000])).await?;
    let nack = loop {
        match second.next().await? {
            ServerMessage::Nack(nack) => break nack,
            ServerMessage::Chunk(_) => continue,
            other => anyhow::bail!("expected a Nack, got {other:?}"),
        }
    };
    assert_eq!(
        (nack.device_seq, nack.code, nack.retry_after_ms),
        (1, ErrorCode::Unavailable, 1000)
    );
    let (status, body) = http(
        addr,
        "POST",
        &paths::chunks(&s),
        Some(&t),
        &push(device(2), 1, &[9; 4000]).to_bytes(),
    )
    .await?;
    assert_eq!(
        (status, common::error_code(&body).as_str()),
        (503, "unavailable")
    );
    assert_eq!(
        entered.load(Ordering::SeqCst),
        2,
        "refused pushes never reached storage"
    );

    // Another space is served meanwhile.
    let (other, other_token) = (space(2), token(2));
    http(addr, "PUT", &paths::space(&other), Some(&other_token), &[]).await?;
    let (status, _) = http(
        addr,
        "POST",
        &paths::chunks(&other),
        Some(&other_token),
        &push(device(9), 1, &[9; 4000]).to_bytes(),
    )
    .await?;
    assert_eq!(status, 200);

    // Storage answers: the bytes come back and the space pushes again.
    open.add_permits(1_000);
    let mut acked = Vec::new();
    while acked.len() < 2 {
        acked.push(ack_of(&mut ws).await?);
    }
    acked.sort_unstable();
    assert_eq!(acked, [1, 2]);
    assert_eq!(budget_state.body_budget().reserved(), 0);
    second.send_push(&push(device(3), 1, &[3; 4000])).await?;
    assert_eq!(ack_of(&mut second).await?, 3);

    for ws in [ws, second] {
        ws.close().await;
    }
    let _ = stop.send(());
    tokio::time::timeout(WAIT, relay).await???;
    Ok(())
}
