//! What a write holds (its body bytes, its address's share, its space's slot and its place in
//! the write queue) is held until storage has answered it, even when the client that sent it
//! has gone: the backend queued the write when it was called and will still carry it out.
#![allow(clippy::unwrap_used)]

mod common;

use std::{
    sync::{
        Arc,
        atomic::{AtomicUsize, Ordering::Relaxed},
    },
    time::Duration,
};

use common::{WAIT, device, error_code, http, push, space, test_config, token};
use mend_protocol::{Page, Push, Snapshot, SpaceId, paths};
use mend_relay::{
    AppState,
    live::LocalHub,
    run,
    storage::{
        Created, PullRequest, Pushed, Storage, StorageFuture, Swept, TokenHash,
        sqlite::SqliteStorage,
    },
};
use tokio::{
    io::AsyncWriteExt,
    net::{TcpListener, TcpStream},
    sync::{Semaphore, oneshot},
};

/// SQLite whose pushes and snapshots are taken when called (as every backend queues them) but
/// carried out only once the gate opens: a disk that has fallen behind.
struct SlowDisk {
    inner: Arc<SqliteStorage>,
    gate: Arc<Semaphore>,
    writes: Arc<AtomicUsize>,
}

impl SlowDisk {
    fn gated<T: Send + 'static>(&self, write: StorageFuture<T>) -> StorageFuture<T> {
        self.writes.fetch_add(1, Relaxed);
        let gate = self.gate.clone();
        Box::pin(async move {
            let _open = gate.acquire().await;
            write.await
        })
    }
}

impl Storage for SlowDisk {
    fn create_space(&self, space: SpaceId, token_hash: TokenHash) -> StorageFuture<Created> {
        self.inner.create_space(space, token_hash)
    }
    fn token_hash(&self, space: SpaceId) -> StorageFuture<Option<TokenHash>> {
        self.inner.token_hash(space)
    }
    fn push(&self, space: SpaceId, push: Push, quota: u64) -> StorageFuture<Pushed> {
        let inner = self.inner.clone();
        self.gated(Box::pin(
            async move { inner.push(space, push, quota).await },
        ))
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
        let inner = self.inner.clone();
        self.gated(Box::pin(async move {
            inner.put_snapshot(space, snapshot, quota, grace).await
        }))
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
    fn count_creation(
        &self,
        client: [u8; 32],
        window_start: u64,
        keep_after: u64,
    ) -> StorageFuture<u64> {
        self.inner.count_creation(client, window_start, keep_after)
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

/// Waits (boundedly) until `done` holds.
async fn until(what: &str, mut done: impl FnMut() -> bool) {
    for _ in 0..(WAIT.as_millis() / 10) {
        if done() {
            return;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    panic!("never: {what}");
}

/// A client sends whole pushes and a snapshot to a relay whose disk has fallen behind, and
/// hangs up on each as soon as the relay has handed it to storage. The bodies stay reserved
/// until they are written, so the relay's body budget (here room for exactly those bodies)
/// still bounds what is queued: one more push is refused 503, and once the disk catches up
/// everything is given back and the writes are all there.
#[tokio::test]
async fn writes_of_clients_that_hang_up_hold_their_budget_until_written() -> anyhow::Result<()> {
    let dir = tempfile::tempdir()?;
    let (s, t) = (space(1), token(1));
    let pushes: Vec<Vec<u8>> = (1..=3)
        .map(|seq| push(device(1), seq, &[seq as u8; 4000]).to_bytes())
        .collect();
    let snapshot = Snapshot {
        covers: 0,
        payload: vec![7; 8000],
    }
    .to_bytes();
    let held: u64 = pushes.iter().map(|p| p.len() as u64).sum::<u64>() + snapshot.len() as u64;
    let mut config = test_config(dir.path());
    config.limits.max_body_bytes = held;
    config.limits.max_body_bytes_per_space = held;
    config.validate()?;
    let hub = LocalHub::default();
    let sqlite = SqliteStorage::open(&config.data_dir, Arc::new(hub.clone()), config.group_commit)?;
    let gate = Arc::new(Semaphore::new(0));
    let writes = Arc::new(AtomicUsize::new(0));
    let disk = SlowDisk {
        inner: Arc::new(sqlite),
        gate: gate.clone(),
        writes: writes.clone(),
    };
    let state = AppState::new(config, Arc::new(disk), Arc::new(hub));
    let listener = TcpListener::bind("127.0.0.1:0").await?;
    let addr = listener.local_addr()?;
    let (stop, stopped) = oneshot::channel::<()>();
    let relay = tokio::spawn(run(listener, state.clone(), async move {
        let _ = stopped.await;
    }));
    let (status, _) = http(addr, "PUT", &paths::space(&s), Some(&t), &[]).await?;
    assert_eq!(status, 201);

    let sends = pushes
        .iter()
        .map(|body| (paths::chunks(&s), body))
        .chain([(paths::snapshot(&s), &snapshot)]);
    for (n, (path, body)) in sends.enumerate() {
        let method = if path.ends_with("snapshot") {
            "PUT"
        } else {
            "POST"
        };
        let mut stream = TcpStream::connect(addr).await?;
        let head = format!(
            "{method} {path} HTTP/1.1\r\nhost: {addr}\r\nauthorization: Bearer {t}\r\n\
             content-length: {}\r\n\r\n",
            body.len()
        );
        stream.write_all(head.as_bytes()).await?;
        stream.write_all(body).await?;
        until("the write reaches storage", || {
            writes.load(Relaxed) == n + 1
        })
        .await;
        stream.shutdown().await?;
        drop(stream);
    }
    until("every hung-up connection is closed", || {
        state.metrics().connections_open.load(Relaxed) == 0
    })
    .await;
    assert_eq!(
        state.body_budget().reserved(),
        held,
        "bodies queued for the disk are still reserved"
    );
    let (status, body) = http(
        addr,
        "POST",
        &paths::chunks(&s),
        Some(&t),
        &push(device(1), 4, b"more").to_bytes(),
    )
    .await?;
    assert_eq!(
        (status, error_code(&body).as_str()),
        (503, "unavailable"),
        "the queue is bounded by the budget"
    );

    gate.add_permits(1_000);
    until("the disk catches up and gives everything back", || {
        state.body_budget().reserved() == 0
    })
    .await;
    let (status, body) = http(
        addr,
        "POST",
        &paths::chunks(&s),
        Some(&t),
        &push(device(1), 4, b"more").to_bytes(),
    )
    .await?;
    assert_eq!(status, 200, "{}", error_code(&body));
    let (status, body) = http(addr, "GET", &paths::pull(&s, 0, None, None), Some(&t), &[]).await?;
    assert_eq!(status, 200);
    let page = Page::decode(&body, &mend_protocol::Limits::DEFAULT)?;
    assert_eq!(
        page.head, 4,
        "the writes of the clients that hung up were made"
    );
    let _ = stop.send(());
    tokio::time::timeout(WAIT, relay).await???;
    Ok(())
}
