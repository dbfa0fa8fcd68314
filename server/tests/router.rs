//! The HTTP interface through `app(state)` with `tower::ServiceExt::oneshot`: every route,
//! and a matrix of bad inputs, each checked for its exact status and error code and followed
//! by a well-behaved client that must still be served.
#![allow(clippy::unwrap_used)]

mod common;

use axum::{
    Router,
    body::{Body, to_bytes},
    http::{Request, StatusCode, header},
};
use common::{device, error_code, push, space, test_config, token};
use mend_protocol::{
    Ack, Limits, PROTOCOL_VERSION, Page, Push, Snapshot, SpaceId, Successor, paths,
};
use mend_relay::{
    AppState, app,
    client::client_key,
    storage::{ROW_BYTES, SPACE_BYTES, Swept, TOMBSTONE_BYTES},
};
use tower::ServiceExt;

struct Api {
    router: Router,
    state: AppState,
    _dir: tempfile::TempDir,
}

impl Api {
    fn new() -> anyhow::Result<Api> {
        Api::with(|_| {})
    }

    fn with(adjust: impl FnOnce(&mut mend_relay::Config)) -> anyhow::Result<Api> {
        let dir = tempfile::tempdir()?;
        let mut config = test_config(dir.path());
        adjust(&mut config);
        let state = AppState::open_sqlite(config)?;
        Ok(Api {
            router: app(state.clone()),
            state,
            _dir: dir,
        })
    }

    async fn call(
        &self,
        method: &str,
        uri: &str,
        token: Option<&str>,
        body: Vec<u8>,
    ) -> anyhow::Result<(StatusCode, Vec<u8>)> {
        let (status, _, body) = self
            .call_declaring(method, uri, token, None, None, body)
            .await?;
        Ok((status, body))
    }

    /// A request whose `content-length` is `declared` when given (whatever the body is), from
    /// the client a trusted proxy names in `x-forwarded-for` when given, and the answer's
    /// headers.
    async fn call_declaring(
        &self,
        method: &str,
        uri: &str,
        token: Option<&str>,
        declared: Option<u64>,
        from: Option<&str>,
        body: Vec<u8>,
    ) -> anyhow::Result<(StatusCode, header::HeaderMap, Vec<u8>)> {
        let mut request = Request::builder().method(method).uri(uri);
        if let Some(client) = from {
            request = request.header("x-forwarded-for", client);
        }
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

    async fn create(&self, space: &SpaceId, token: &str) -> anyhow::Result<StatusCode> {
        Ok(self
            .call("PUT", &paths::space(space), Some(token), vec![])
            .await?
            .0)
    }

    async fn push(&self, space: &SpaceId, token: &str, p: &Push) -> anyhow::Result<Ack> {
        let (status, body) = self
            .call("POST", &paths::chunks(space), Some(token), p.to_bytes())
            .await?;
        anyhow::ensure!(
            status == StatusCode::OK,
            "push: {status} {}",
            error_code(&body)
        );
        Ok(Ack::decode(&body, &Limits::DEFAULT)?)
    }

    async fn pull(&self, space: &SpaceId, token: &str, after: u64) -> anyhow::Result<Page> {
        let (status, body) = self
            .call(
                "GET",
                &paths::pull(space, after, None, None),
                Some(token),
                vec![],
            )
            .await?;
        anyhow::ensure!(
            status == StatusCode::OK,
            "pull: {status} {}",
            error_code(&body)
        );
        Ok(Page::decode(&body, &Limits::DEFAULT)?)
    }

    /// Expects an error answer with this status and code.
    async fn refused(
        &self,
        method: &str,
        uri: &str,
        token: Option<&str>,
        body: Vec<u8>,
        status: StatusCode,
        code: &str,
    ) -> anyhow::Result<()> {
        let (got, body) = self.call(method, uri, token, body).await?;
        anyhow::ensure!(
            (got, error_code(&body).as_str()) == (status, code),
            "{method} {uri}: expected {status} {code}, got {got} {}",
            String::from_utf8_lossy(&body)
        );
        if let Some(token) = token {
            anyhow::ensure!(
                !String::from_utf8_lossy(&body).contains(token),
                "token echoed"
            );
        }
        Ok(())
    }

    /// A well-behaved device on its own space is still served.
    async fn others_served(&self, round: u64) -> anyhow::Result<()> {
        let good = space(201);
        let tok = token(21);
        self.create(&good, &tok).await?;
        let ack = self
            .push(&good, &tok, &push(device(201), round, b"fine"))
            .await?;
        anyhow::ensure!(!ack.duplicate, "fresh push was a duplicate");
        let page = self.pull(&good, &tok, ack.relay_seq - 1).await?;
        anyhow::ensure!(page.chunks.len() == 1 && page.chunks[0].payload == b"fine");
        Ok(())
    }
}

#[tokio::test]
async fn probes_and_metrics() -> anyhow::Result<()> {
    let api = Api::new()?;
    assert_eq!(
        api.call("GET", paths::HEALTHZ, None, vec![]).await?.0,
        StatusCode::OK
    );
    assert_eq!(
        api.call("GET", paths::READYZ, None, vec![]).await?.0,
        StatusCode::OK
    );
    api.refused(
        "GET",
        &paths::chunks(&space(1)),
        None,
        vec![],
        StatusCode::UNAUTHORIZED,
        "unauthorized",
    )
    .await?;
    api.others_served(1).await?;
    let (status, body) = api.call("GET", paths::METRICS, None, vec![]).await?;
    let text = String::from_utf8(body)?;
    assert_eq!(status, StatusCode::OK);
    for expected in [
        "mend_connections_open ",
        "mend_pushes_total{outcome=\"stored\"} 1\n",
        "mend_push_bytes_total 4\n",
        "mend_errors_total{code=\"unauthorized\"} 1\n",
        "mend_ack_latency_seconds_count 1\n",
    ] {
        assert!(text.contains(expected), "missing {expected:?} in\n{text}");
    }
    Ok(())
}

#[tokio::test]
async fn create_is_idempotent_per_token() -> anyhow::Result<()> {
    let api = Api::new()?;
    let s = space(1);
    assert_eq!(api.create(&s, &token(1)).await?, StatusCode::CREATED);
    assert_eq!(api.create(&s, &token(1)).await?, StatusCode::OK);
    api.refused(
        "PUT",
        &paths::space(&s),
        Some(&token(2)),
        vec![],
        StatusCode::CONFLICT,
        "space_exists",
    )
    .await?;
    api.refused(
        "PUT",
        &paths::space(&s),
        None,
        vec![],
        StatusCode::UNAUTHORIZED,
        "unauthorized",
    )
    .await?;
    api.refused(
        "PUT",
        "/v1/spaces/not-hex",
        Some(&token(1)),
        vec![],
        StatusCode::BAD_REQUEST,
        "malformed",
    )
    .await?;
    api.refused(
        "PUT",
        &format!("/v1/spaces/{}", "AB".repeat(32)),
        Some(&token(1)),
        vec![],
        StatusCode::BAD_REQUEST,
        "malformed",
    )
    .await?;
    // The first token still works.
    api.push(&s, &token(1), &push(device(1), 1, b"x")).await?;
    api.others_served(1).await
}

#[tokio::test]
async fn push_pull_and_replay() -> anyhow::Result<()> {
    let api = Api::new()?;
    let (s, t) = (space(1), token(1));
    api.create(&s, &t).await?;
    let first = api.push(&s, &t, &push(device(1), 1, b"one")).await?;
    assert_eq!(
        (first.device_seq, first.relay_seq, first.duplicate),
        (1, 1, false)
    );
    let second = api.push(&s, &t, &push(device(2), 1, b"two")).await?;
    assert_eq!(second.relay_seq, 2);
    let replay = api.push(&s, &t, &push(device(1), 1, b"one")).await?;
    assert_eq!((replay.relay_seq, replay.duplicate), (1, true));
    // The same (device, sequence) with another payload: a device rolled back or copied.
    api.refused(
        "POST",
        &paths::chunks(&s),
        Some(&t),
        push(device(1), 1, b"one, rolled back").to_bytes(),
        StatusCode::CONFLICT,
        "seq_conflict",
    )
    .await?;
    let page = api.pull(&s, &t, 0).await?;
    assert_eq!((page.head, page.next_after, page.more), (2, 2, false));
    let payloads: Vec<&[u8]> = page.chunks.iter().map(|c| c.payload.as_slice()).collect();
    assert_eq!(
        payloads,
        [&b"one"[..], &b"two"[..]],
        "the replay stored nothing"
    );

    // Paging and withholding the device's own chunks.
    for seq in 2..=5 {
        api.push(&s, &t, &push(device(1), seq, b"more")).await?;
    }
    let (_, body) = api
        .call("GET", &paths::pull(&s, 0, Some(2), None), Some(&t), vec![])
        .await?;
    let page = Page::decode(&body, &Limits::DEFAULT)?;
    assert_eq!(
        (page.chunks.len(), page.more, page.next_after),
        (2, true, 2)
    );
    let (_, body) = api
        .call(
            "GET",
            &paths::pull(&s, 0, None, Some(&device(1))),
            Some(&t),
            vec![],
        )
        .await?;
    let page = Page::decode(&body, &Limits::DEFAULT)?;
    assert_eq!(page.chunks.len(), 1);
    assert_eq!((page.chunks[0].device_id, page.next_after), (device(2), 6));
    api.refused(
        "GET",
        &format!("{}?after=minus-one", paths::chunks(&s)),
        Some(&t),
        vec![],
        StatusCode::BAD_REQUEST,
        "malformed",
    )
    .await?;
    api.others_served(1).await
}

#[tokio::test]
async fn bad_frames_are_refused_precisely() -> anyhow::Result<()> {
    let api = Api::with(|config| {
        config.limits.max_body_bytes_per_space = 20_000;
        config.limits.max_body_bytes = 30_000;
        config.limits.max_queued_writes_per_address = 2;
        config.limits.client_ip_header = Some("x-forwarded-for".to_owned());
    })?;
    let (s, t) = (space(1), token(1));
    api.create(&s, &t).await?;
    let uri = paths::chunks(&s);
    let valid = push(device(1), 1, b"payload").to_bytes();
    let mut wrong_version = valid.clone();
    wrong_version[0] = PROTOCOL_VERSION + 1;
    let snapshot_frame = Snapshot {
        covers: 0,
        payload: vec![1],
    }
    .to_bytes();
    let cases: Vec<(&str, Vec<u8>, StatusCode, &str)> = vec![
        (
            "garbage",
            b"\xde\xad\xbe\xef garbage".to_vec(),
            StatusCode::BAD_REQUEST,
            "unsupported_version",
        ),
        ("empty", vec![], StatusCode::BAD_REQUEST, "malformed"),
        (
            "truncated",
            valid[..valid.len() - 3].to_vec(),
            StatusCode::BAD_REQUEST,
            "malformed",
        ),
        (
            "unknown kind",
            vec![PROTOCOL_VERSION, 0x7f],
            StatusCode::BAD_REQUEST,
            "malformed",
        ),
        (
            "wrong kind",
            snapshot_frame,
            StatusCode::BAD_REQUEST,
            "malformed",
        ),
        (
            "unknown version",
            wrong_version,
            StatusCode::BAD_REQUEST,
            "unsupported_version",
        ),
        (
            "oversized chunk",
            push(device(1), 1, &[0; 4097]).to_bytes(),
            StatusCode::PAYLOAD_TOO_LARGE,
            "chunk_too_large",
        ),
        (
            "oversized body",
            vec![PROTOCOL_VERSION; 64 * 1024],
            StatusCode::PAYLOAD_TOO_LARGE,
            "chunk_too_large",
        ),
    ];
    for (round, (name, body, status, code)) in cases.into_iter().enumerate() {
        api.refused("POST", &uri, Some(&t), body, status, code)
            .await
            .map_err(|e| anyhow::anyhow!("{name}: {e}"))?;
        api.others_served(round as u64 + 1).await?;
    }
    // The body limits, refused from the declared length before a byte is read: over the size
    // limit 413; over the space's or the relay's body budget (held here as bodies in flight
    // would hold it) 503 with a retry hint. Every case is followed by a well-behaved client.
    let snapshot_uri = paths::snapshot(&s);
    let budget = api.state.body_budget();
    let limits = &api.state.config().limits;
    let space_share = limits.max_body_bytes_per_space;
    let relay_share = limits.max_body_bytes;
    let chunk_frame = push(device(1), 1, b"payload").to_bytes();
    let (others, more) = (space(150), space(151));
    type Case<'a> = (
        &'a str,
        &'a str,
        &'a str,
        Option<u64>,
        Vec<(SpaceId, u64)>,
        StatusCode,
        &'a str,
    );
    let budget_cases: Vec<Case<'_>> = vec![
        (
            "push declaring past the chunk limit",
            "POST",
            &uri,
            Some(1 << 20),
            vec![],
            StatusCode::PAYLOAD_TOO_LARGE,
            "chunk_too_large",
        ),
        (
            "snapshot declaring past the snapshot limit",
            "PUT",
            &snapshot_uri,
            Some(1 << 20),
            vec![],
            StatusCode::PAYLOAD_TOO_LARGE,
            "snapshot_too_large",
        ),
        (
            "push past the space's body budget",
            "POST",
            &uri,
            None,
            vec![(s, space_share - 10)],
            StatusCode::SERVICE_UNAVAILABLE,
            "unavailable",
        ),
        (
            "snapshot past the space's body budget",
            "PUT",
            &snapshot_uri,
            None,
            vec![(s, space_share - 10)],
            StatusCode::SERVICE_UNAVAILABLE,
            "unavailable",
        ),
        (
            "push past the relay's body budget",
            "POST",
            &uri,
            None,
            vec![
                (others, space_share),
                (more, relay_share - space_share - 10),
            ],
            StatusCode::SERVICE_UNAVAILABLE,
            "unavailable",
        ),
    ];
    for (round, (name, method, path, declared, held, status, code)) in
        budget_cases.into_iter().enumerate()
    {
        let holding = held
            .into_iter()
            .map(|(space, bytes)| budget.try_reserve(space, None, bytes))
            .collect::<Result<Vec<_>, _>>()
            .map_err(|over| anyhow::anyhow!("{name}: holding the budget: {over:?}"))?;
        let (got, headers, body) = api
            .call_declaring(method, path, Some(&t), declared, None, chunk_frame.clone())
            .await?;
        assert_eq!(
            (got, error_code(&body).as_str()),
            (status, code),
            "{name}: {}",
            String::from_utf8_lossy(&body)
        );
        assert_eq!(
            headers.contains_key(header::RETRY_AFTER),
            status == StatusCode::SERVICE_UNAVAILABLE,
            "{name}: a retry hint with 503 only"
        );
        drop(holding);
        assert_eq!(budget.reserved(), 0, "{name}: every reservation given back");
        api.others_served(round as u64 + 100).await?;
    }
    // An address holding its whole share of the write queue (held here as its queued writes
    // would hold it): its push, snapshot and creation are refused 503 with a retry hint before
    // anything is read or stored; another address creates and pushes.
    let flooder = "192.0.2.1";
    let flooder_key = client_key(flooder.parse()?);
    let shares = (0..limits.max_queued_writes_per_address)
        .map(|_| api.state.write_share(Some(flooder_key)))
        .collect::<Result<Vec<_>, _>>()
        .map_err(|over| anyhow::anyhow!("holding the write share: {over:?}"))?;
    let fresh = paths::space(&space(152));
    for (name, method, path, body) in [
        ("push", "POST", &uri, chunk_frame.clone()),
        ("snapshot", "PUT", &snapshot_uri, chunk_frame.clone()),
        ("creation", "PUT", &fresh, vec![]),
    ] {
        let (got, headers, body) = api
            .call_declaring(method, path, Some(&t), None, Some(flooder), body)
            .await?;
        assert_eq!(
            (got, error_code(&body).as_str()),
            (StatusCode::SERVICE_UNAVAILABLE, "unavailable"),
            "{name} past the address's write share"
        );
        assert!(headers.contains_key(header::RETRY_AFTER), "{name}");
    }
    let calm = Some("198.51.100.7");
    let (created, _, _) = api
        .call_declaring("PUT", &fresh, Some(&t), None, calm, vec![])
        .await?;
    assert_eq!(created, StatusCode::CREATED);
    let frame = push(device(152), 1, b"calm").to_bytes();
    let (pushed, _, body) = api
        .call_declaring(
            "POST",
            &paths::chunks(&space(152)),
            Some(&t),
            None,
            calm,
            frame,
        )
        .await?;
    assert_eq!(pushed, StatusCode::OK, "{}", error_code(&body));
    drop(shares);
    api.others_served(200).await?;
    // Nothing of it was stored; the space still works.
    assert_eq!(api.pull(&s, &t, 0).await?.head, 0);
    assert_eq!(
        api.push(&s, &t, &push(device(1), 1, b"ok"))
            .await?
            .relay_seq,
        1
    );
    Ok(())
}

#[tokio::test]
async fn tokens_and_space_ids_are_checked() -> anyhow::Result<()> {
    let api = Api::new()?;
    let (alice, bob) = (space(1), space(2));
    api.create(&alice, &token(1)).await?;
    api.create(&bob, &token(2)).await?;
    api.push(&bob, &token(2), &push(device(2), 1, b"bob's"))
        .await?;
    let body = push(device(1), 1, b"x").to_bytes();
    let chunks = paths::chunks(&alice);
    api.refused(
        "POST",
        &chunks,
        None,
        body.clone(),
        StatusCode::UNAUTHORIZED,
        "unauthorized",
    )
    .await?;
    api.refused(
        "POST",
        &chunks,
        Some("short"),
        body.clone(),
        StatusCode::UNAUTHORIZED,
        "unauthorized",
    )
    .await?;
    api.refused(
        "POST",
        &chunks,
        Some(&token(9)),
        body.clone(),
        StatusCode::UNAUTHORIZED,
        "unauthorized",
    )
    .await?;
    // Alice's token on Bob's space: no access to it, and nothing of it leaks.
    let bobs = paths::chunks(&bob);
    api.refused(
        "GET",
        &bobs,
        Some(&token(1)),
        vec![],
        StatusCode::UNAUTHORIZED,
        "unauthorized",
    )
    .await?;
    api.refused(
        "POST",
        &bobs,
        Some(&token(1)),
        body.clone(),
        StatusCode::UNAUTHORIZED,
        "unauthorized",
    )
    .await?;
    api.refused(
        "DELETE",
        &paths::space(&bob),
        Some(&token(1)),
        vec![],
        StatusCode::UNAUTHORIZED,
        "unauthorized",
    )
    .await?;
    api.refused(
        "GET",
        &paths::snapshot(&bob),
        Some(&token(1)),
        vec![],
        StatusCode::UNAUTHORIZED,
        "unauthorized",
    )
    .await?;
    api.refused(
        "POST",
        &paths::chunks(&space(3)),
        Some(&token(1)),
        body,
        StatusCode::NOT_FOUND,
        "space_not_found",
    )
    .await?;
    // Non-ASCII header value.
    let request = Request::builder()
        .method("GET")
        .uri(paths::chunks(&alice))
        .header(header::AUTHORIZATION, &b"Bearer \xff\xfe"[..])
        .body(Body::empty())?;
    let response = api.router.clone().oneshot(request).await?;
    assert_eq!(response.status(), StatusCode::UNAUTHORIZED);
    assert_eq!(api.pull(&bob, &token(2), 0).await?.chunks.len(), 1);
    api.others_served(1).await
}

#[tokio::test]
async fn snapshot_store_fetch_and_prune() -> anyhow::Result<()> {
    let api = Api::new()?;
    let (s, t) = (space(1), token(1));
    api.create(&s, &t).await?;
    let uri = paths::snapshot(&s);
    api.refused(
        "GET",
        &uri,
        Some(&t),
        vec![],
        StatusCode::NOT_FOUND,
        "no_snapshot",
    )
    .await?;
    for seq in 1..=4 {
        api.push(&s, &t, &push(device(1), seq, b"chunk")).await?;
    }
    let snapshot = Snapshot {
        covers: 3,
        payload: b"sealed snapshot".to_vec(),
    };
    let (status, _) = api.call("PUT", &uri, Some(&t), snapshot.to_bytes()).await?;
    assert_eq!(status, StatusCode::NO_CONTENT);
    let (status, body) = api.call("GET", &uri, Some(&t), vec![]).await?;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(Snapshot::decode(&body, &Limits::DEFAULT)?, snapshot);
    api.refused(
        "GET",
        &paths::pull(&s, 1, None, None),
        Some(&t),
        vec![],
        StatusCode::GONE,
        "pruned",
    )
    .await?;
    let tail = api.pull(&s, &t, 3).await?;
    assert_eq!(
        tail.chunks.iter().map(|c| c.relay_seq).collect::<Vec<_>>(),
        [4]
    );
    let stale = Snapshot {
        covers: 2,
        payload: vec![1],
    };
    api.refused(
        "PUT",
        &uri,
        Some(&t),
        stale.to_bytes(),
        StatusCode::CONFLICT,
        "snapshot_stale",
    )
    .await?;
    let ahead = Snapshot {
        covers: 9,
        payload: vec![1],
    };
    api.refused(
        "PUT",
        &uri,
        Some(&t),
        ahead.to_bytes(),
        StatusCode::CONFLICT,
        "snapshot_beyond_head",
    )
    .await?;
    let big = Snapshot {
        covers: 4,
        payload: vec![0; 8193],
    };
    api.refused(
        "PUT",
        &uri,
        Some(&t),
        big.to_bytes(),
        StatusCode::PAYLOAD_TOO_LARGE,
        "snapshot_too_large",
    )
    .await?;
    api.refused(
        "PUT",
        &uri,
        Some(&t),
        b"junk".to_vec(),
        StatusCode::BAD_REQUEST,
        "unsupported_version",
    )
    .await?;
    api.others_served(1).await
}

/// Every route of a space, with a body each accepts in shape.
fn space_routes(s: &SpaceId) -> Vec<(&'static str, String, Vec<u8>)> {
    let snapshot = Snapshot {
        covers: 0,
        payload: b"back".to_vec(),
    };
    vec![
        (
            "POST",
            paths::chunks(s),
            push(device(1), 2, b"again").to_bytes(),
        ),
        ("GET", paths::pull(s, 0, None, None), vec![]),
        ("GET", paths::live(s), vec![]),
        ("PUT", paths::snapshot(s), snapshot.to_bytes()),
        ("GET", paths::snapshot(s), vec![]),
        ("POST", paths::rollups(s), vec![]),
        ("GET", paths::sizes_after(s, 0, None), vec![]),
        ("DELETE", paths::space(s), vec![]),
        ("PUT", paths::space(s), vec![]),
        (
            "PUT",
            paths::successor(s),
            Successor { id: [7; 32] }.to_bytes(),
        ),
    ]
}

#[tokio::test]
async fn erase_removes_the_space() -> anyhow::Result<()> {
    let api = Api::with(|config| {
        config.limits.creations_per_address = 3;
        config.limits.client_ip_header = Some("x-forwarded-for".to_owned());
    })?;
    let (s, t) = (space(1), token(1));
    api.create(&s, &t).await?;
    api.push(&s, &t, &push(device(1), 1, b"gone")).await?;
    let (status, _) = api
        .call("DELETE", &paths::space(&s), Some(&t), vec![])
        .await?;
    assert_eq!(status, StatusCode::NO_CONTENT);
    // Erased stays erased, and says so on every route: the other partner's phone, still
    // holding the secret, is told the space is gone for good and cannot bring it back.
    for t in [token(1), token(2)] {
        for (method, uri, body) in space_routes(&s) {
            api.refused(
                method,
                &uri,
                Some(&t),
                body,
                StatusCode::GONE,
                "space_erased",
            )
            .await?;
        }
    }
    // Asked again and again, creation never counts against the address's budget.
    for _ in 0..6 {
        let (status, _, body) = api
            .call_declaring(
                "PUT",
                &paths::space(&s),
                Some(&t),
                None,
                Some("192.0.2.7"),
                vec![],
            )
            .await?;
        assert_eq!(
            (status, error_code(&body).as_str()),
            (StatusCode::GONE, "space_erased")
        );
    }
    // A space never created is still simply not found.
    api.refused(
        "GET",
        &paths::chunks(&space(2)),
        Some(&t),
        vec![],
        StatusCode::NOT_FOUND,
        "space_not_found",
    )
    .await?;
    api.others_served(1).await
}

#[tokio::test]
async fn a_retired_space_answers_space_retired() -> anyhow::Result<()> {
    let api = Api::new()?;
    let (s, t) = (space(1), token(1));
    api.create(&s, &t).await?;
    api.refused(
        "DELETE",
        &format!("{}?reason=forgotten", paths::space(&s)),
        Some(&t),
        vec![],
        StatusCode::BAD_REQUEST,
        "malformed",
    )
    .await?;
    let (status, _) = api
        .call("DELETE", &paths::retire(&s), Some(&t), vec![])
        .await?;
    assert_eq!(status, StatusCode::NO_CONTENT);
    for (method, uri, body) in space_routes(&s) {
        api.refused(
            method,
            &uri,
            Some(&t),
            body,
            StatusCode::GONE,
            "space_retired",
        )
        .await?;
    }
    api.others_served(1).await
}

#[tokio::test]
async fn tombstones_survive_a_restart() -> anyhow::Result<()> {
    let dir = tempfile::tempdir()?;
    let (s, t) = (space(1), token(1));
    let state = AppState::open_sqlite(test_config(dir.path()))?;
    let router = app(state.clone());
    let call = |router: Router, method: &str, uri: String| {
        let request = Request::builder()
            .method(method)
            .uri(uri)
            .header(header::AUTHORIZATION, format!("Bearer {t}"))
            .body(Body::empty());
        async move {
            let response = router.oneshot(request?).await?;
            let status = response.status();
            let body = to_bytes(response.into_body(), usize::MAX).await?;
            anyhow::Ok((status, error_code(&body)))
        }
    };
    assert_eq!(
        call(router.clone(), "PUT", paths::space(&s)).await?.0,
        StatusCode::CREATED
    );
    assert_eq!(
        call(router.clone(), "DELETE", paths::space(&s)).await?.0,
        StatusCode::NO_CONTENT
    );
    state.storage().close().await?;
    drop((router, state));

    let state = AppState::open_sqlite(test_config(dir.path()))?;
    let router = app(state.clone());
    for (method, uri) in [
        ("PUT", paths::space(&s)),
        ("GET", paths::pull(&s, 0, None, None)),
    ] {
        assert_eq!(
            call(router.clone(), method, uri).await?,
            (StatusCode::GONE, "space_erased".to_owned())
        );
    }
    state.storage().close().await?;
    Ok(())
}

#[tokio::test]
async fn rate_limit_affects_only_the_offending_space() -> anyhow::Result<()> {
    let api = Api::with(|config| {
        config.limits.rate_per_space = 1;
        config.limits.rate_burst = 3;
    })?;
    let (s, t) = (space(1), token(1));
    api.create(&s, &t).await?;
    for seq in 1..=3 {
        api.push(&s, &t, &push(device(1), seq, b"x")).await?;
    }
    let request = Request::builder()
        .method("POST")
        .uri(paths::chunks(&s))
        .header(header::AUTHORIZATION, format!("Bearer {t}"))
        .body(Body::from(push(device(1), 4, b"x").to_bytes()))?;
    let response = api.router.clone().oneshot(request).await?;
    assert_eq!(response.status(), StatusCode::TOO_MANY_REQUESTS);
    assert_eq!(
        response
            .headers()
            .get(header::RETRY_AFTER)
            .map(|v| v.as_bytes()),
        Some(&b"1"[..])
    );
    // Unauthenticated requests do not spend the space's budget: they are refused earlier.
    api.refused(
        "GET",
        &paths::chunks(&s),
        Some(&token(7)),
        vec![],
        StatusCode::UNAUTHORIZED,
        "unauthorized",
    )
    .await?;
    api.others_served(1).await
}

#[tokio::test]
async fn quota_is_enforced_with_507() -> anyhow::Result<()> {
    let api = Api::with(|config| config.limits.space_quota_bytes = 10_000)?;
    let (s, t) = (space(1), token(1));
    api.create(&s, &t).await?;
    for seq in 1..=2 {
        api.push(&s, &t, &push(device(1), seq, &[0; 4000])).await?;
    }
    api.refused(
        "POST",
        &paths::chunks(&s),
        Some(&t),
        push(device(1), 3, &[0; 4000]).to_bytes(),
        StatusCode::INSUFFICIENT_STORAGE,
        "quota_exceeded",
    )
    .await?;
    assert!(
        api.push(&s, &t, &push(device(1), 2, &[0; 4000]))
            .await?
            .duplicate
    );
    api.others_served(1).await
}

/// One client filling the relay with many spaces: past the relay-wide limit its new bytes are
/// refused `507 relay_full` with a retry hint, never a 500. A partner already on the relay still
/// reads and replays, a snapshot that would grow the total is refused alike, and erasing one of
/// the offender's spaces gives its bytes back.
#[tokio::test]
async fn relay_full_refuses_only_new_bytes_with_507() -> anyhow::Result<()> {
    // Room for the four spaces below, and 10,000 bytes.
    let api = Api::with(|config| config.limits.max_total_bytes = 10_000 + 4 * SPACE_BYTES)?;
    let (good, good_token) = (space(200), token(20));
    api.create(&good, &good_token).await?;
    let fine = api
        .push(&good, &good_token, &push(device(200), 1, b"fine"))
        .await?;
    // The flood: a new space per push, each well under its own quota.
    let hog = token(1);
    for n in 1..=2 {
        api.create(&space(n), &hog).await?;
        api.push(&space(n), &hog, &push(device(1), 1, &[n; 4000]))
            .await?;
    }
    api.create(&space(3), &hog).await?;
    let (status, body) = api
        .call(
            "POST",
            &paths::chunks(&space(3)),
            Some(&hog),
            push(device(1), 1, &[3; 4000]).to_bytes(),
        )
        .await?;
    assert_eq!(
        (status, error_code(&body).as_str()),
        (StatusCode::INSUFFICIENT_STORAGE, "relay_full"),
        "{}",
        String::from_utf8_lossy(&body)
    );
    // The relay-wide figures are the operator's, not any space's client's.
    let text = String::from_utf8_lossy(&body);
    assert!(!text.chars().any(|c| c.is_ascii_digit()), "{text}");
    let retry = api
        .router
        .clone()
        .oneshot(
            Request::post(paths::chunks(&space(3)))
                .header(header::AUTHORIZATION, format!("Bearer {hog}"))
                .body(Body::from(push(device(1), 1, &[3; 4000]).to_bytes()))?,
        )
        .await?;
    assert_eq!(retry.status(), StatusCode::INSUFFICIENT_STORAGE);
    assert!(retry.headers().contains_key(header::RETRY_AFTER));
    // A snapshot larger than what it prunes would grow the total too.
    api.refused(
        "PUT",
        &paths::snapshot(&space(1)),
        Some(&hog),
        Snapshot {
            covers: 1,
            payload: vec![0; 6000],
        }
        .to_bytes(),
        StatusCode::INSUFFICIENT_STORAGE,
        "relay_full",
    )
    .await?;
    // The partner already on the relay is unaffected: it reads, and its replay is answered.
    let page = api.pull(&good, &good_token, 0).await?;
    assert_eq!(page.chunks.len(), 1);
    assert_eq!(page.chunks[0].payload, b"fine");
    let replay = api
        .push(&good, &good_token, &push(device(200), 1, b"fine"))
        .await?;
    assert!(replay.duplicate && replay.relay_seq == fine.relay_seq);
    // Erasing one of the offender's spaces frees its bytes for everyone.
    let (status, _) = api
        .call("DELETE", &paths::space(&space(1)), Some(&hog), vec![])
        .await?;
    assert_eq!(status, StatusCode::NO_CONTENT);
    api.push(&space(3), &hog, &push(device(1), 1, &[3; 4000]))
        .await?;
    api.push(&good, &good_token, &push(device(200), 2, b"more"))
        .await?;
    Ok(())
}

/// A full relay refuses a new space before the address's creation budget is spent: a device
/// retrying its creation every round against a full relay is not rate-limited for the rest of
/// the hour once there is room again.
#[tokio::test]
async fn a_creation_refused_by_a_full_relay_is_not_counted() -> anyhow::Result<()> {
    let api = Api::with(|config| {
        config.limits.creations_per_address = 2;
        config.limits.client_ip_header = Some("x-forwarded-for".to_owned());
        // Room for one space, and the tombstone it leaves when erased.
        config.limits.max_total_bytes = SPACE_BYTES + TOMBSTONE_BYTES;
    })?;
    let create = |n: u8| {
        let api = &api;
        async move {
            let (status, _, body) = api
                .call_declaring(
                    "PUT",
                    &paths::space(&space(n)),
                    Some(&token(n)),
                    None,
                    Some("192.0.2.9"),
                    vec![],
                )
                .await?;
            anyhow::Ok((status, error_code(&body)))
        }
    };
    assert_eq!(create(1).await?.0, StatusCode::CREATED);
    for _ in 0..6 {
        assert_eq!(
            create(2).await?,
            (StatusCode::INSUFFICIENT_STORAGE, "relay_full".to_owned())
        );
    }
    // Room again: the address has made one creation, not seven.
    let (status, _) = api
        .call("DELETE", &paths::space(&space(1)), Some(&token(1)), vec![])
        .await?;
    assert_eq!(status, StatusCode::NO_CONTENT);
    assert_eq!(create(2).await?.0, StatusCode::CREATED);
    Ok(())
}

/// A client repeating "push, then a garbage snapshot that prunes it": pruned chunks stay on
/// disk for the grace, so they keep counting, and the relay is full at exactly its configured
/// bytes (`507 relay_full`) instead of filling the disk. A sweep within the grace frees nothing;
/// once the grace is over the sweep deletes them and the space pushes again.
#[tokio::test]
async fn pushing_and_pruning_in_a_loop_fills_the_relay_only_to_its_limit() -> anyhow::Result<()> {
    let api = Api::with(|config| {
        // Room for two spaces (this one and the one `others_served` uses) and 10,000 bytes.
        config.limits.max_total_bytes = 10_000 + 2 * SPACE_BYTES;
        config.limits.prune_grace = std::time::Duration::from_secs(3600);
    })?;
    let (s, t) = (space(1), token(1));
    api.create(&s, &t).await?;
    // The other couple's space exists before the relay fills: a full relay takes no new space.
    assert_eq!(
        api.create(&space(201), &token(21)).await?,
        StatusCode::CREATED
    );
    let garbage = |covers: u64| Snapshot {
        covers,
        payload: vec![0xee; 10],
    };
    let mut seq = 0;
    let mut refused_at = None;
    for round in 1..=10u64 {
        seq += 1;
        let frame = push(device(1), seq, &[round as u8; 3000]).to_bytes();
        let (status, body) = api
            .call("POST", &paths::chunks(&s), Some(&t), frame)
            .await?;
        if status != StatusCode::OK {
            assert_eq!(
                (status, error_code(&body).as_str()),
                (StatusCode::INSUFFICIENT_STORAGE, "relay_full"),
                "round {round}"
            );
            refused_at = Some(round);
            break;
        }
        let ack = Ack::decode(&body, &Limits::DEFAULT)?;
        let (status, body) = api
            .call(
                "PUT",
                &paths::snapshot(&s),
                Some(&t),
                garbage(ack.relay_seq).to_bytes(),
            )
            .await?;
        assert_eq!(status, StatusCode::NO_CONTENT, "{}", error_code(&body));
    }
    // Three rounds held 3 × 3000 chunk bytes, their rows and a 10-byte snapshot; the fourth
    // did not fit.
    assert_eq!(refused_at, Some(4));
    assert_eq!(
        api.state.storage().total_bytes().await?,
        9010 + 3 * ROW_BYTES + 2 * SPACE_BYTES
    );
    // What is left fits to the byte, and not one byte more.
    let left = (10_000 - 9010 - 4 * ROW_BYTES) as usize;
    api.push(&s, &t, &push(device(1), seq, &vec![4; left]))
        .await?;
    assert_eq!(
        api.state.storage().total_bytes().await?,
        10_000 + 2 * SPACE_BYTES
    );
    api.refused(
        "POST",
        &paths::chunks(&s),
        Some(&t),
        push(device(1), seq + 1, &[5; 1]).to_bytes(),
        StatusCode::INSUFFICIENT_STORAGE,
        "relay_full",
    )
    .await?;
    // The periodic sweep within the grace deletes nothing.
    assert_eq!(
        mend_relay::sweeper::sweep_once(&api.state).await?,
        Swept::default()
    );
    // Once the grace is over (a sweep with none left), the pruned chunks go and free their bytes.
    let swept = api
        .state
        .storage()
        .sweep_pruned(std::time::Duration::ZERO, 1000, u64::MAX)
        .await?;
    assert_eq!(
        swept,
        Swept {
            chunks: 3,
            bytes: 9000
        }
    );
    assert_eq!(
        api.state.storage().total_bytes().await?,
        1000 + 2 * SPACE_BYTES
    );
    api.push(&s, &t, &push(device(1), seq + 1, &[5; 3000]))
        .await?;
    api.others_served(1).await
}

#[tokio::test]
async fn live_route_requires_an_upgrade() -> anyhow::Result<()> {
    let api = Api::new()?;
    let (s, t) = (space(1), token(1));
    api.create(&s, &t).await?;
    api.refused(
        "GET",
        &paths::live(&s),
        Some(&t),
        vec![],
        StatusCode::BAD_REQUEST,
        "malformed",
    )
    .await?;
    api.refused(
        "GET",
        &paths::live(&s),
        None,
        vec![],
        StatusCode::UNAUTHORIZED,
        "unauthorized",
    )
    .await?;
    api.others_served(1).await
}

/// Within the prune grace, a garbage snapshot covering the whole log destroys nothing: a
/// device that was behind, or a new one, that cannot use the snapshot still pulls every chunk.
#[tokio::test]
async fn a_garbage_snapshot_leaves_the_log_readable_within_the_grace() -> anyhow::Result<()> {
    let api = Api::with(|config| config.limits.prune_grace = std::time::Duration::from_secs(3600))?;
    let (s, t) = (space(1), token(1));
    api.create(&s, &t).await?;
    for seq in 1..=4 {
        api.push(&s, &t, &push(device(1), seq, &[seq as u8; 16]))
            .await?;
    }
    let garbage = Snapshot {
        covers: 4,
        payload: b"not a snapshot at all".to_vec(),
    };
    let (status, _) = api
        .call("PUT", &paths::snapshot(&s), Some(&t), garbage.to_bytes())
        .await?;
    assert_eq!(status, StatusCode::NO_CONTENT);
    // A plain pull below the snapshot points to it; one that asks for pruned chunks gets them.
    api.refused(
        "GET",
        &paths::pull(&s, 0, None, None),
        Some(&t),
        vec![],
        StatusCode::GONE,
        "pruned",
    )
    .await?;
    for after in [0u64, 2] {
        let uri = format!(
            "{}&{}=true",
            paths::pull(&s, after, None, None),
            paths::QUERY_PRUNED
        );
        let (status, body) = api.call("GET", &uri, Some(&t), vec![]).await?;
        assert_eq!(status, StatusCode::OK, "{}", error_code(&body));
        let page = Page::decode(&body, &Limits::DEFAULT)?;
        let payloads: Vec<Vec<u8>> = page.chunks.iter().map(|c| c.payload.clone()).collect();
        assert_eq!(
            payloads,
            (after + 1..=4)
                .map(|i| vec![i as u8; 16])
                .collect::<Vec<_>>()
        );
        assert_eq!((page.head, page.more), (4, false));
    }
    api.others_served(1).await
}

/// A request whose body sends `first` and then nothing more, declaring `declared` bytes, from
/// the client the proxy names `from`.
fn stalled(
    method: &str,
    uri: &str,
    token: &str,
    declared: u64,
    from: &str,
    first: &'static [u8],
) -> anyhow::Result<Request<Body>> {
    use futures_util::StreamExt as _;
    let frames = futures_util::stream::once(async move {
        Ok::<_, std::io::Error>(axum::body::Bytes::from_static(first))
    })
    .chain(futures_util::stream::pending());
    Ok(Request::builder()
        .method(method)
        .uri(uri)
        .header("x-forwarded-for", from)
        .header(header::AUTHORIZATION, format!("Bearer {token}"))
        .header(header::CONTENT_LENGTH, declared)
        .body(Body::from_stream(frames))?)
}

/// One address opens the largest snapshots it may on two of its spaces and sends nothing: it
/// holds its own share of the body budget, not the relay's. Its next push, on a third space,
/// is refused 503 with a retry hint; another address pushes to that space meanwhile, and the
/// share comes back when the stalled requests end.
#[tokio::test]
async fn one_address_holds_at_most_its_share_of_the_body_budget() -> anyhow::Result<()> {
    let largest = (8192 + 22) as u64;
    let api = Api::with(|config| {
        config.limits.client_ip_header = Some("x-forwarded-for".to_owned());
        config.limits.max_body_bytes_per_address = 2 * largest;
    })?;
    let flooder = "192.0.2.1";
    let (spaces, t) = ([space(1), space(2), space(3)], token(1));
    for s in &spaces {
        assert_eq!(api.create(s, &t).await?, StatusCode::CREATED);
    }
    let held: Vec<_> = spaces[..2]
        .iter()
        .map(|s| {
            let request = stalled("PUT", &paths::snapshot(s), &t, largest, flooder, b"");
            let router = api.router.clone();
            tokio::spawn(async move { router.oneshot(request?).await.map_err(anyhow::Error::from) })
        })
        .collect();
    let budget = api.state.body_budget();
    for _ in 0..1000 {
        if budget.reserved() == 2 * largest {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(10)).await;
    }
    assert_eq!(
        budget.reserved(),
        2 * largest,
        "both stalled bodies reserved"
    );
    let frame = push(device(3), 1, b"one more").to_bytes();
    let chunks = paths::chunks(&spaces[2]);
    let (status, headers, body) = api
        .call_declaring(
            "POST",
            &chunks,
            Some(&t),
            None,
            Some(flooder),
            frame.clone(),
        )
        .await?;
    assert_eq!(
        (status, error_code(&body).as_str()),
        (StatusCode::SERVICE_UNAVAILABLE, "unavailable"),
        "past the address's share"
    );
    assert!(headers.contains_key(header::RETRY_AFTER));
    let (status, _, body) = api
        .call_declaring("POST", &chunks, Some(&t), None, Some("198.51.100.7"), frame)
        .await?;
    assert_eq!(status, StatusCode::OK, "{}", error_code(&body));
    for request in held {
        request.abort();
        let _ = request.await;
    }
    assert_eq!(
        budget.reserved(),
        0,
        "the stalled bodies gave their bytes back"
    );
    api.others_served(1).await
}

/// A body that declares the largest snapshot, sends a few bytes and stalls is cut (408) once
/// it falls behind the minimum rate after the grace, not at the deadline its declared length
/// would get, and gives its reserved bytes back.
#[tokio::test]
async fn a_stalled_body_is_cut_after_the_grace_not_at_its_declared_deadline() -> anyhow::Result<()>
{
    let api = Api::with(|config| {
        config.limits.body_timeout = std::time::Duration::from_millis(200);
        // The declared 8 KiB would get 80 s at this rate; ten bytes buy 100 ms.
        config.limits.min_body_rate = 100;
    })?;
    let (s, t) = (space(1), token(1));
    api.create(&s, &t).await?;
    let request = stalled(
        "PUT",
        &paths::snapshot(&s),
        &t,
        8192,
        "192.0.2.1",
        b"0123456789",
    )?;
    let response = tokio::time::timeout(common::WAIT, api.router.clone().oneshot(request))
        .await
        .map_err(|_| anyhow::anyhow!("the stalled body was still being waited for"))??;
    assert_eq!(response.status(), StatusCode::REQUEST_TIMEOUT);
    assert_eq!(api.state.body_budget().reserved(), 0);
    api.others_served(1).await
}

#[tokio::test]
async fn devices_list_when_each_device_was_last_served_by_the_hour() -> anyhow::Result<()> {
    use mend_protocol::DeviceList;
    let api = Api::new()?;
    let (s, t) = (space(1), token(1));
    let (other, other_token) = (space(2), token(2));
    api.create(&s, &t).await?;
    api.create(&other, &other_token).await?;
    let before = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)?
        .as_secs();
    api.push(&s, &t, &push(device(1), 1, b"one")).await?;
    api.push(&s, &t, &push(device(1), 2, b"two")).await?;
    let pull = paths::pull(&s, 0, None, Some(&device(2)));
    let (status, _) = api.call("GET", &pull, Some(&t), vec![]).await?;
    assert_eq!(status, StatusCode::OK);
    let after = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)?
        .as_secs();
    let list = |space: SpaceId, token: String| {
        let api = &api;
        async move {
            let (status, body) = api
                .call("GET", &paths::devices(&space), Some(&token), vec![])
                .await?;
            anyhow::ensure!(status == StatusCode::OK, "devices: {status}");
            Ok::<_, anyhow::Error>(DeviceList::decode(&body, &Limits::DEFAULT)?)
        }
    };
    let seen = list(s, t.clone()).await?;
    let ids: Vec<_> = seen.devices.iter().map(|d| d.device_id).collect();
    assert_eq!(ids, [device(1), device(2)]);
    for d in &seen.devices {
        // The hour only: no finer timing is kept.
        assert_eq!(d.last_seen % 3600, 0, "{d:?}");
        assert!(d.last_seen >= before - before % 3600 && d.last_seen <= after);
    }
    // Each space lists its own devices only.
    assert!(list(other, other_token).await?.devices.is_empty());
    // A space the relay does not hold is not found; a missing token is refused.
    api.refused(
        "GET",
        &paths::devices(&space(9)),
        Some(&token(9)),
        vec![],
        StatusCode::NOT_FOUND,
        "space_not_found",
    )
    .await?;
    let (status, _) = api.call("GET", &paths::devices(&s), None, vec![]).await?;
    assert_eq!(status, StatusCode::UNAUTHORIZED);
    api.others_served(1).await
}

#[tokio::test]
async fn the_first_successor_offered_is_the_answer_for_good() -> anyhow::Result<()> {
    let api = Api::new()?;
    let (s, t) = (space(1), token(1));
    api.create(&s, &t).await?;
    for (offered, kept) in [([1; 32], [1; 32]), ([2; 32], [1; 32])] {
        let (status, body) = api
            .call(
                "PUT",
                &paths::successor(&s),
                Some(&t),
                Successor { id: offered }.to_bytes(),
            )
            .await?;
        assert_eq!(status, StatusCode::OK);
        assert_eq!(Successor::decode(&body, &Limits::DEFAULT)?.id, kept);
    }
    api.refused(
        "PUT",
        &paths::successor(&s),
        Some(&t),
        vec![PROTOCOL_VERSION, 0x1A, 1, 2],
        StatusCode::BAD_REQUEST,
        "malformed",
    )
    .await?;
    api.refused(
        "PUT",
        &paths::successor(&s),
        Some(&token(2)),
        Successor { id: [3; 32] }.to_bytes(),
        StatusCode::UNAUTHORIZED,
        "unauthorized",
    )
    .await?;
    api.others_served(1).await
}
