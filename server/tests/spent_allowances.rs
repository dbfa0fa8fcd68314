//! What a client address costs storage once it has spent an allowance: space creations
//! (`PUT /v1/spaces/{id}`) and failed pairing tokens are refused from memory, before the
//! database is asked, and `PUT`s from one address are rate limited however many there are.
//! Every call the router makes to storage is counted.
#![allow(clippy::unwrap_used)]

mod common;

use std::{
    collections::BTreeMap,
    sync::{Arc, Mutex},
    time::Duration,
};

use axum::{
    Router,
    body::{Body, to_bytes},
    http::{Request, StatusCode, header},
};
use common::{error_code, space, test_config, token};
use mend_protocol::{
    DeviceId, DeviceList, Limits, Page, PairingInbox, PairingOpen, PairingState, PairingTicket,
    Push, RollupPush, Sizes, Snapshot, SpaceId, paths,
};
use mend_relay::{
    AppState, app,
    live::LocalHub,
    storage::{
        Audit, Created, EraseReason, NewPairing, PairingRecord, PairingSide, PairingSwept,
        PullRequest, Pushed, RollupStored, Storage, StorageFuture, Swept, TokenHash, Tombstone,
        sqlite::SqliteStorage,
    },
};
use tower::ServiceExt;

/// SQLite, counting every call by the name of the method called.
struct Counting {
    inner: SqliteStorage,
    calls: Arc<Mutex<BTreeMap<&'static str, u64>>>,
}

impl Counting {
    fn note(&self, method: &'static str) {
        *self.calls.lock().unwrap().entry(method).or_default() += 1;
    }
}

impl Storage for Counting {
    fn create_space(&self, space: SpaceId, token_hash: TokenHash) -> StorageFuture<Created> {
        self.note("create_space");
        self.inner.create_space(space, token_hash)
    }
    fn token_hash(&self, space: SpaceId) -> StorageFuture<Option<TokenHash>> {
        self.note("token_hash");
        self.inner.token_hash(space)
    }
    fn known_token(&self, space: SpaceId) -> Option<TokenHash> {
        // Held in memory: not a call to the database.
        self.inner.known_token(space)
    }
    fn push(&self, space: SpaceId, push: Push, quota: u64) -> StorageFuture<Pushed> {
        self.note("push");
        self.inner.push(space, push, quota)
    }
    fn pull(&self, space: SpaceId, request: PullRequest) -> StorageFuture<Page> {
        self.note("pull");
        self.inner.pull(space, request)
    }
    fn push_rollup(
        &self,
        space: SpaceId,
        rollup: RollupPush,
        quota: u64,
    ) -> StorageFuture<RollupStored> {
        self.note("push_rollup");
        self.inner.push_rollup(space, rollup, quota)
    }
    fn sizes(
        &self,
        space: SpaceId,
        after: u64,
        exclude_device: Option<DeviceId>,
    ) -> StorageFuture<Sizes> {
        self.note("sizes");
        self.inner.sizes(space, after, exclude_device)
    }
    fn put_snapshot(
        &self,
        space: SpaceId,
        snapshot: Snapshot,
        quota: u64,
        grace: Duration,
    ) -> StorageFuture<()> {
        self.note("put_snapshot");
        self.inner.put_snapshot(space, snapshot, quota, grace)
    }
    fn sweep_pruned(
        &self,
        grace: Duration,
        max_chunks: usize,
        max_bytes: u64,
    ) -> StorageFuture<Swept> {
        self.note("sweep_pruned");
        self.inner.sweep_pruned(grace, max_chunks, max_bytes)
    }
    fn set_total_quota(&self, bytes: u64) {
        self.inner.set_total_quota(bytes);
    }
    fn total_bytes(&self) -> StorageFuture<u64> {
        self.note("total_bytes");
        self.inner.total_bytes()
    }
    fn get_snapshot(&self, space: SpaceId) -> StorageFuture<Option<Snapshot>> {
        self.note("get_snapshot");
        self.inner.get_snapshot(space)
    }
    fn erase(&self, space: SpaceId, reason: EraseReason) -> StorageFuture<bool> {
        self.note("erase");
        self.inner.erase(space, reason)
    }
    fn tombstone(&self, space: SpaceId) -> StorageFuture<Option<Tombstone>> {
        self.note("tombstone");
        self.inner.tombstone(space)
    }
    fn claim_successor(&self, space: SpaceId, id: [u8; 32]) -> StorageFuture<[u8; 32]> {
        self.note("claim_successor");
        self.inner.claim_successor(space, id)
    }
    fn touch_device(&self, space: SpaceId, device: DeviceId, at: u64) -> StorageFuture<()> {
        self.note("touch_device");
        self.inner.touch_device(space, device, at)
    }
    fn devices(&self, space: SpaceId) -> StorageFuture<DeviceList> {
        self.note("devices");
        self.inner.devices(space)
    }
    fn count_creation(
        &self,
        client: [u8; 32],
        window_start: u64,
        keep_after: u64,
    ) -> StorageFuture<u64> {
        self.note("count_creation");
        self.inner.count_creation(client, window_start, keep_after)
    }
    fn open_pairing(&self, new: NewPairing) -> StorageFuture<String> {
        self.note("open_pairing");
        self.inner.open_pairing(new)
    }
    fn claim_pairing(&self, mailbox: String, guest: TokenHash, now: u64) -> StorageFuture<u64> {
        self.note("claim_pairing");
        self.inner.claim_pairing(mailbox, guest, now)
    }
    fn pairing(&self, mailbox: String, now: u64) -> StorageFuture<Option<PairingRecord>> {
        self.note("pairing");
        self.inner.pairing(mailbox, now)
    }
    fn post_pairing(
        &self,
        mailbox: String,
        side: PairingSide,
        body: Vec<u8>,
        now: u64,
    ) -> StorageFuture<u64> {
        self.note("post_pairing");
        self.inner.post_pairing(mailbox, side, body, now)
    }
    fn read_pairing(
        &self,
        mailbox: String,
        reader: PairingSide,
        after: u64,
        now: u64,
    ) -> StorageFuture<PairingInbox> {
        self.note("read_pairing");
        self.inner.read_pairing(mailbox, reader, after, now)
    }
    fn close_pairing(
        &self,
        mailbox: String,
        burn: bool,
        now: u64,
    ) -> StorageFuture<Option<PairingState>> {
        self.note("close_pairing");
        self.inner.close_pairing(mailbox, burn, now)
    }
    fn sweep_pairings(&self, now: u64, linger: Duration) -> StorageFuture<PairingSwept> {
        self.note("sweep_pairings");
        self.inner.sweep_pairings(now, linger)
    }
    fn ready(&self) -> StorageFuture<()> {
        self.note("ready");
        self.inner.ready()
    }
    fn audit(&self, repair: bool) -> StorageFuture<Audit> {
        self.note("audit");
        self.inner.audit(repair)
    }
    fn render_metrics(&self, out: &mut String) {
        self.inner.render_metrics(out);
    }
    fn close(&self) -> StorageFuture<()> {
        self.inner.close()
    }
}

/// The router over counted SQLite, taking the client's address from `x-forwarded-for`.
struct Api {
    router: Router,
    state: AppState,
    calls: Arc<Mutex<BTreeMap<&'static str, u64>>>,
    _dir: tempfile::TempDir,
}

/// One answer: status, error code (empty on success), body.
type Answer = (StatusCode, String, Vec<u8>);

impl Api {
    fn with(adjust: impl FnOnce(&mut mend_relay::Config)) -> anyhow::Result<Api> {
        let dir = tempfile::tempdir()?;
        let mut config = test_config(dir.path());
        config.limits.client_ip_header = Some("x-forwarded-for".to_owned());
        adjust(&mut config);
        config.validate()?;
        let hub = LocalHub::default();
        let inner =
            SqliteStorage::open(&config.data_dir, Arc::new(hub.clone()), config.group_commit)?;
        let calls = Arc::new(Mutex::new(BTreeMap::new()));
        let storage = Counting {
            inner,
            calls: calls.clone(),
        };
        let state = AppState::new(config, Arc::new(storage), Arc::new(hub));
        Ok(Api {
            router: app(state.clone()),
            state,
            calls,
            _dir: dir,
        })
    }

    /// Every storage call so far, by method.
    fn calls(&self) -> BTreeMap<&'static str, u64> {
        self.calls.lock().unwrap().clone()
    }

    async fn call(
        &self,
        method: &str,
        uri: &str,
        bearer: Option<&str>,
        from: &str,
        body: Vec<u8>,
    ) -> anyhow::Result<Answer> {
        let mut request = Request::builder()
            .method(method)
            .uri(uri)
            .header("x-forwarded-for", from);
        if let Some(bearer) = bearer {
            request = request.header(header::AUTHORIZATION, format!("Bearer {bearer}"));
        }
        let response = self
            .router
            .clone()
            .oneshot(request.body(Body::from(body))?)
            .await?;
        let status = response.status();
        let body = to_bytes(response.into_body(), usize::MAX).await?.to_vec();
        Ok((status, error_code(&body), body))
    }

    async fn put_space(&self, s: &SpaceId, t: &str, from: &str) -> anyhow::Result<Answer> {
        self.call("PUT", &paths::space(s), Some(t), from, vec![])
            .await
    }

    /// Runs `request` and returns its answer with the storage calls it made.
    async fn counted<F: Future<Output = anyhow::Result<Answer>>>(
        &self,
        request: F,
    ) -> anyhow::Result<(Answer, BTreeMap<&'static str, u64>)> {
        let before = self.calls();
        let answer = request.await?;
        let mut made = self.calls();
        made.retain(|method, count| {
            *count -= before.get(method).copied().unwrap_or(0);
            *count > 0
        });
        Ok((answer, made))
    }
}

/// 2,000 `PUT`s of one space from one address with another token than the space's (each
/// takes storage work): the first ones are answered as usual, then the address is rate
/// limited, and a refused `PUT` costs storage nothing. The space's own device on that address
/// is still served, from memory, and so is another address.
#[tokio::test]
async fn puts_from_one_address_are_rate_limited_before_storage() -> anyhow::Result<()> {
    let api = Api::with(|_| {})?;
    let (s, t) = (space(1), token(1));
    let flooder = "192.0.2.10";
    assert_eq!(api.put_space(&s, &t, flooder).await?.0, StatusCode::CREATED);
    // PUTs that take storage work: another token for the space (answered 409).
    let wrong = token(2);
    let mut served = 0u32;
    let mut limited = 0u32;
    for _ in 0..2_000 {
        let ((status, code, _), made) = api.counted(api.put_space(&s, &wrong, flooder)).await?;
        match (status, code.as_str()) {
            (StatusCode::CONFLICT, _) => served += 1,
            (StatusCode::TOO_MANY_REQUESTS, "rate_limited") => {
                limited += 1;
                assert!(made.is_empty(), "a refused PUT reached storage: {made:?}");
            }
            other => panic!("unexpected answer {other:?}"),
        }
    }
    assert!(served > 0, "PUTs within the rate are answered");
    assert!(
        limited > 0,
        "2,000 PUTs from one address were never rate limited"
    );
    // The space's own device on the same address (a neighbour spent the budget) is still
    // served, from memory: its token is known, so its PUT costs nothing.
    let ((status, _, _), made) = api.counted(api.put_space(&s, &t, flooder)).await?;
    assert_eq!(status, StatusCode::OK, "the space's own PUT was refused");
    assert!(
        made.is_empty(),
        "a PUT with a known token reached storage: {made:?}"
    );
    let (status, _, _) = api.put_space(&s, &t, "192.0.2.11").await?;
    assert_eq!(status, StatusCode::OK, "another address is not limited");
    api.state.storage().close().await?;
    Ok(())
}

/// Once an address has created as many spaces as it may, a `PUT` of a new space from it is
/// refused without the queries that count a creation (the tombstone, the relay's total, the
/// creation counter): at most the token is looked up, which SQLite answers from memory and
/// PostgreSQL reads only for a space it has not cached, so that re-sending `PUT` for an
/// existing space is still served.
#[tokio::test]
async fn a_spent_creation_allowance_is_refused_without_storage_work() -> anyhow::Result<()> {
    let api = Api::with(|config| config.limits.creations_per_address = 2)?;
    let from = "192.0.2.20";
    for n in 1..=2 {
        let (status, _, _) = api.put_space(&space(n), &token(n), from).await?;
        assert_eq!(status, StatusCode::CREATED);
    }
    let (status, code, _) = api.put_space(&space(3), &token(3), from).await?;
    assert_eq!(
        (status, code.as_str()),
        (StatusCode::TOO_MANY_REQUESTS, "rate_limited")
    );
    for n in 4..=20 {
        let ((status, code, _), made) = api
            .counted(api.put_space(&space(n), &token(n), from))
            .await?;
        assert_eq!(
            (status, code.as_str()),
            (StatusCode::TOO_MANY_REQUESTS, "rate_limited")
        );
        let other_than_token: Vec<_> = made.keys().filter(|m| **m != "token_hash").collect();
        assert!(
            other_than_token.is_empty() && made.get("token_hash").copied().unwrap_or(0) <= 1,
            "a creation refused from memory reached storage: {made:?}"
        );
    }
    // Existing spaces are not creations: still served from the spent address.
    let (status, _, _) = api.put_space(&space(1), &token(1), from).await?;
    assert_eq!(status, StatusCode::OK);
    // And another address still creates.
    let (status, _, _) = api.put_space(&space(25), &token(25), "192.0.2.21").await?;
    assert_eq!(status, StatusCode::CREATED);
    api.state.storage().close().await?;
    Ok(())
}

/// Once an address has failed as many pairing tokens as it may, its further guesses are
/// answered 429 before the mailbox is read. A side whose token this relay handed out is still
/// served from the same address: it is not guessing.
#[tokio::test]
async fn a_spent_pairing_allowance_is_refused_without_a_read() -> anyhow::Result<()> {
    let api = Api::with(|config| config.limits.pairing_claims_per_minute = 3)?;
    let from = "192.0.2.30";
    let (status, _, body) = api
        .call(
            "POST",
            &paths::pairings(),
            None,
            from,
            PairingOpen { short: true }.to_bytes(),
        )
        .await?;
    assert_eq!(status, StatusCode::CREATED);
    let host = PairingTicket::decode(&body, &Limits::DEFAULT)?;
    let host_token = hex::encode(host.token);
    let wrong = "09".repeat(32);
    let inbox = paths::pairing_inbox(&host.mailbox, 0, 0);
    for _ in 0..3 {
        let (status, code, _) = api.call("GET", &inbox, Some(&wrong), from, vec![]).await?;
        assert_eq!(
            (status, code.as_str()),
            (StatusCode::UNAUTHORIZED, "unauthorized")
        );
    }
    for _ in 0..5 {
        let ((status, code, _), made) = api
            .counted(api.call("GET", &inbox, Some(&wrong), from, vec![]))
            .await?;
        assert_eq!(
            (status, code.as_str()),
            (StatusCode::TOO_MANY_REQUESTS, "rate_limited")
        );
        assert!(
            made.is_empty(),
            "a spent address's guess reached storage: {made:?}"
        );
    }
    let (status, _, body) = api
        .call("GET", &inbox, Some(&host_token), from, vec![])
        .await?;
    assert_eq!(status, StatusCode::OK, "{}", error_code(&body));
    assert_eq!(
        PairingInbox::decode(&body, &Limits::DEFAULT)?.state,
        PairingState::Open
    );
    // The host's own token counts for its own mailbox only: presented for other mailbox
    // numbers (a guesser who opened a mailbox to get a token), it is refused before a read.
    for other in ["1", "2", "3"] {
        if other == host.mailbox {
            continue;
        }
        let elsewhere = paths::pairing_inbox(&other.to_owned(), 0, 0);
        let ((status, code, _), made) = api
            .counted(api.call("GET", &elsewhere, Some(&host_token), from, vec![]))
            .await?;
        assert_eq!(
            (status, code.as_str()),
            (StatusCode::TOO_MANY_REQUESTS, "rate_limited")
        );
        assert!(
            made.is_empty(),
            "a token of another mailbox took a guess past the limit: {made:?}"
        );
    }
    api.state.storage().close().await?;
    Ok(())
}
