//! Rollups through the HTTP interface and the live socket: storing them, pages and backlogs
//! that serve them in place of their chunks, the sizes of a tail, the refusals, and a relay
//! restarted on the same database.
#![allow(clippy::unwrap_used)]

mod common;

use axum::{
    Router,
    body::{Body, to_bytes},
    http::{Request, StatusCode, header},
};
use common::{Relay, device, error_code, push, space, test_config, token};
use mend_protocol::{Limits, Page, Push, RollupPush, ServerMessage, Sizes, SpaceId, paths};
use mend_relay::{AppState, app};
use tower::ServiceExt;

fn rollup(device_id: mend_protocol::DeviceId, first: u64, last: u64, payload: &[u8]) -> RollupPush {
    RollupPush {
        device_id,
        first_seq: first,
        last_seq: last,
        payload: payload.to_vec(),
    }
}

struct Api {
    router: Router,
    state: AppState,
}

impl Api {
    fn open(
        dir: &std::path::Path,
        adjust: impl FnOnce(&mut mend_relay::Config),
    ) -> anyhow::Result<Api> {
        let mut config = test_config(dir);
        adjust(&mut config);
        let state = AppState::open_sqlite(config)?;
        Ok(Api {
            router: app(state.clone()),
            state,
        })
    }

    async fn call(
        &self,
        method: &str,
        uri: &str,
        token: Option<&str>,
        declared: Option<u64>,
        body: Vec<u8>,
    ) -> anyhow::Result<(StatusCode, header::HeaderMap, Vec<u8>)> {
        let mut request = Request::builder().method(method).uri(uri);
        if let Some(token) = token {
            request = request.header(header::AUTHORIZATION, format!("Bearer {token}"));
        }
        if let Some(declared) = declared {
            request = request.header(header::CONTENT_LENGTH, declared);
        }
        let response = self
            .router
            .clone()
            .oneshot(request.body(Body::from(body))?)
            .await?;
        let status = response.status();
        let headers = response.headers().clone();
        let body = to_bytes(response.into_body(), usize::MAX).await?;
        Ok((status, headers, body.to_vec()))
    }

    async fn ok(
        &self,
        method: &str,
        uri: &str,
        token: &str,
        body: Vec<u8>,
    ) -> anyhow::Result<Vec<u8>> {
        let (status, _, body) = self.call(method, uri, Some(token), None, body).await?;
        anyhow::ensure!(
            status.is_success(),
            "{method} {uri}: {status} {}",
            error_code(&body)
        );
        Ok(body)
    }

    async fn refused(
        &self,
        method: &str,
        uri: &str,
        token: Option<&str>,
        declared: Option<u64>,
        body: Vec<u8>,
        want: (StatusCode, &str),
    ) -> anyhow::Result<header::HeaderMap> {
        let (status, headers, body) = self.call(method, uri, token, declared, body).await?;
        anyhow::ensure!(
            (status, error_code(&body).as_str()) == want,
            "{method} {uri}: expected {want:?}, got {status} {}",
            String::from_utf8_lossy(&body)
        );
        Ok(headers)
    }

    async fn push(&self, s: &SpaceId, t: &str, p: &Push) -> anyhow::Result<()> {
        self.ok("POST", &paths::chunks(s), t, p.to_bytes())
            .await
            .map(drop)
    }

    async fn roll(&self, s: &SpaceId, t: &str, r: &RollupPush) -> anyhow::Result<StatusCode> {
        let (status, _, body) = self
            .call("POST", &paths::rollups(s), Some(t), None, r.to_bytes())
            .await?;
        anyhow::ensure!(
            status.is_success(),
            "rollup: {status} {}",
            error_code(&body)
        );
        Ok(status)
    }

    async fn page(&self, s: &SpaceId, t: &str, query: &str) -> anyhow::Result<Page> {
        let body = self
            .ok("GET", &format!("{}?{query}", paths::chunks(s)), t, vec![])
            .await?;
        Ok(Page::decode(&body, &Limits::DEFAULT)?)
    }

    async fn metrics(&self) -> anyhow::Result<String> {
        let (_, _, body) = self.call("GET", paths::METRICS, None, None, vec![]).await?;
        Ok(String::from_utf8(body)?)
    }
}

/// A: chunks at relay sequences 1 and 3; B: at 2.
async fn three_chunks(api: &Api, s: &SpaceId, t: &str) -> anyhow::Result<()> {
    api.ok("PUT", &paths::space(s), t, vec![]).await?;
    api.push(s, t, &push(device(1), 1, b"a1")).await?;
    api.push(s, t, &push(device(2), 1, b"b1")).await?;
    api.push(s, t, &push(device(1), 2, b"a2")).await
}

#[tokio::test]
async fn rollups_are_stored_and_served_in_place_of_their_chunks() -> anyhow::Result<()> {
    let dir = tempfile::tempdir()?;
    let api = Api::open(dir.path(), |_| {})?;
    let (s, t) = (space(1), token(1));
    three_chunks(&api, &s, &t).await?;
    let r = rollup(device(1), 1, 2, b"a1+a2");
    assert_eq!(api.roll(&s, &t, &r).await?, StatusCode::NO_CONTENT);
    // The same range again is answered alike, and the first payload stands.
    let again = rollup(device(1), 1, 2, b"other");
    assert_eq!(api.roll(&s, &t, &again).await?, StatusCode::NO_CONTENT);
    let page = api.page(&s, &t, "after=0&rollups=true").await?;
    assert_eq!(
        page.chunks.iter().map(|c| c.relay_seq).collect::<Vec<_>>(),
        [2]
    );
    assert_eq!(page.rollups.len(), 1);
    assert_eq!(
        (page.rollups[0].relay_seq, page.rollups[0].last_relay_seq),
        (1, 3)
    );
    assert_eq!(page.rollups[0].payload, b"a1+a2");
    // Without asking, and from inside the range, chunks come one by one.
    let page = api.page(&s, &t, "after=0").await?;
    assert_eq!((page.chunks.len(), page.rollups.len()), (3, 0));
    let page = api.page(&s, &t, "after=1&rollups=true").await?;
    assert_eq!((page.chunks.len(), page.rollups.len()), (2, 0));
    // Sizes: the rollup and B's chunk, or only B's for A itself.
    let body = api
        .ok("GET", &paths::sizes_after(&s, 0, None), &t, vec![])
        .await?;
    let sizes = Sizes::decode(&body, &Limits::DEFAULT)?;
    assert_eq!(
        sizes,
        Sizes {
            head: 3,
            snapshot: None,
            tail_bytes: 7,
            tail_entries: 2,
            tail_held: true,
        }
    );
    let body = api
        .ok(
            "GET",
            &paths::sizes_after(&s, 0, Some(&device(1))),
            &t,
            vec![],
        )
        .await?;
    assert_eq!(Sizes::decode(&body, &Limits::DEFAULT)?.tail_bytes, 2);
    let metrics = api.metrics().await?;
    assert!(
        metrics.contains("mend_rollups_stored_total 1\n"),
        "{metrics}"
    );
    assert!(
        metrics.contains("mend_rollup_bytes_sent_total 5\n"),
        "{metrics}"
    );
    Ok(())
}

#[tokio::test]
async fn rollup_routes_refuse_precisely() -> anyhow::Result<()> {
    let dir = tempfile::tempdir()?;
    let api = Api::open(dir.path(), |config| config.limits.space_quota_bytes = 4000)?;
    let (s, t) = (space(1), token(1));
    three_chunks(&api, &s, &t).await?;
    let path = paths::rollups(&s);
    let good = rollup(device(1), 1, 2, b"r").to_bytes();
    // Authentication first, on both routes.
    for (method, uri, body) in [
        ("POST", path.clone(), good.clone()),
        ("GET", paths::sizes_after(&s, 0, None), vec![]),
    ] {
        api.refused(
            method,
            &uri,
            None,
            None,
            body.clone(),
            (StatusCode::UNAUTHORIZED, "unauthorized"),
        )
        .await?;
        api.refused(
            method,
            &uri,
            Some(&token(2)),
            None,
            body,
            (StatusCode::UNAUTHORIZED, "unauthorized"),
        )
        .await?;
    }
    // A chunk it names is not stored, or belongs to a rollup already.
    let conflict = (StatusCode::CONFLICT, "rollup_mismatch");
    api.refused(
        "POST",
        &path,
        Some(&t),
        None,
        rollup(device(1), 1, 3, b"r").to_bytes(),
        conflict,
    )
    .await?;
    api.refused(
        "POST",
        &path,
        Some(&t),
        None,
        rollup(device(2), 1, 2, b"r").to_bytes(),
        conflict,
    )
    .await?;
    api.roll(&s, &t, &rollup(device(1), 1, 2, b"r")).await?;
    api.refused(
        "POST",
        &path,
        Some(&t),
        None,
        rollup(device(1), 2, 2, b"r").to_bytes(),
        conflict,
    )
    .await?;
    // Over the chunk limit (4096 in tests), by its payload or its declared length alone.
    let large = (StatusCode::PAYLOAD_TOO_LARGE, "chunk_too_large");
    api.refused(
        "POST",
        &path,
        Some(&t),
        None,
        rollup(device(2), 1, 1, &[0; 4097]).to_bytes(),
        large,
    )
    .await?;
    api.refused("POST", &path, Some(&t), Some(1 << 20), vec![], large)
        .await?;
    // Undecodable: garbage, a range that ends before it starts, another frame kind.
    let malformed = (StatusCode::BAD_REQUEST, "malformed");
    let mut backwards = rollup(device(2), 2, 2, b"r").to_bytes();
    backwards[2 + 16] = 3;
    for body in [
        vec![1, 3, 0],
        backwards,
        push(device(2), 1, b"r").to_bytes(),
    ] {
        api.refused("POST", &path, Some(&t), None, body, malformed)
            .await?;
    }
    // Over the space's quota.
    api.refused(
        "POST",
        &path,
        Some(&t),
        None,
        rollup(device(2), 1, 1, &[0; 4000]).to_bytes(),
        (StatusCode::INSUFFICIENT_STORAGE, "quota_exceeded"),
    )
    .await?;
    // Bad queries.
    for uri in [
        format!("{}?rollups=yes", paths::chunks(&s)),
        format!("{}?after=-1", paths::sizes(&s)),
        format!("{}?device=xyz", paths::sizes(&s)),
    ] {
        api.refused("GET", &uri, Some(&t), None, vec![], malformed)
            .await?;
    }
    let metrics = api.metrics().await?;
    assert!(
        metrics.contains("mend_errors_total{code=\"rollup_mismatch\"} 3\n"),
        "{metrics}"
    );
    Ok(())
}

#[tokio::test]
async fn rollups_spend_the_rate_budget_like_pushes() -> anyhow::Result<()> {
    let dir = tempfile::tempdir()?;
    let api = Api::open(dir.path(), |config| {
        config.limits.rate_per_space = 1;
        config.limits.rate_burst = 4;
    })?;
    let (s, t) = (space(1), token(1));
    three_chunks(&api, &s, &t).await?;
    api.roll(&s, &t, &rollup(device(1), 1, 2, b"r")).await?;
    let headers = api
        .refused(
            "POST",
            &paths::rollups(&s),
            Some(&t),
            None,
            rollup(device(1), 1, 2, b"r").to_bytes(),
            (StatusCode::TOO_MANY_REQUESTS, "rate_limited"),
        )
        .await?;
    assert_eq!(
        headers.get(header::RETRY_AFTER).map(|v| v.as_bytes()),
        Some(&b"1"[..])
    );
    Ok(())
}

/// Rollups are on disk: a relay reopened on the same database serves them.
#[tokio::test]
async fn rollups_survive_a_restart() -> anyhow::Result<()> {
    let dir = tempfile::tempdir()?;
    let (s, t) = (space(1), token(1));
    {
        let api = Api::open(dir.path(), |_| {})?;
        three_chunks(&api, &s, &t).await?;
        api.roll(&s, &t, &rollup(device(1), 1, 2, b"kept")).await?;
        api.state.storage().close().await?;
    }
    let api = Api::open(dir.path(), |_| {})?;
    let page = api.page(&s, &t, "after=0&rollups=true").await?;
    assert_eq!(page.rollups.len(), 1);
    assert_eq!(page.rollups[0].payload, b"kept");
    assert_eq!(page.chunks.len(), 1);
    assert_eq!(
        api.roll(&s, &t, &rollup(device(1), 1, 2, b"again")).await?,
        StatusCode::NO_CONTENT
    );
    api.state.storage().close().await?;
    Ok(())
}

/// The live backlog sends rollups among the chunks in relay order; live chunks after it stay
/// chunks.
#[tokio::test]
async fn live_backlog_serves_rollups_in_relay_order() -> anyhow::Result<()> {
    let relay = Relay::start().await?;
    let (s, t) = (space(1), token(1));
    relay.create(&s, &t).await?;
    // A at 1, 3; B at 2, 4.
    for seq in 1..=2 {
        relay.push_http(&s, &t, &push(device(1), seq, b"a")).await?;
        relay.push_http(&s, &t, &push(device(2), seq, b"b")).await?;
    }
    let (status, body) = common::http(
        relay.addr,
        "POST",
        &paths::rollups(&s),
        Some(&t),
        &rollup(device(1), 1, 2, b"a1+a2").to_bytes(),
    )
    .await?;
    anyhow::ensure!(status == 204, "rollup: {status} {}", error_code(&body));
    let mut ws = relay
        .connect(
            &s,
            &t,
            &format!("after=0&device={}&rollups=true", device(3)),
        )
        .await?;
    match ws.next().await? {
        ServerMessage::Rollup(r) => {
            assert_eq!(
                (r.relay_seq, r.last_relay_seq, r.device_id),
                (1, 3, device(1))
            );
            assert_eq!(r.payload, b"a1+a2");
        }
        other => anyhow::bail!("expected a rollup, got {other:?}"),
    }
    assert_eq!(ws.expect_chunk().await?.relay_seq, 2);
    assert_eq!(ws.expect_chunk().await?.relay_seq, 4);
    assert_eq!(ws.expect_up_to_date().await?, 4);
    relay.push_http(&s, &t, &push(device(1), 3, b"a3")).await?;
    assert_eq!(ws.expect_chunk().await?.relay_seq, 5);
    ws.close().await;
    // Without asking, the backlog is chunks.
    let mut ws = relay.connect(&s, &t, "after=0").await?;
    for seq in 1..=5 {
        assert_eq!(ws.expect_chunk().await?.relay_seq, seq);
    }
    assert_eq!(ws.expect_up_to_date().await?, 5);
    ws.close().await;
    // A bad flag refuses the upgrade.
    assert_eq!(
        common::upgrade_status(relay.connect(&s, &t, "after=0&rollups=maybe").await)?,
        400
    );
    relay.stop().await
}
