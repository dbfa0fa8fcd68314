//! The HTTP interface: [`app`] builds the router, one file per resource.
//!
//! Every space route authenticates first, then applies the space's rate limit, then reads the
//! body with an explicit size limit, so an unauthenticated or oversized request costs the relay
//! as little as possible and never touches another space.

mod chunks;
mod extract;
mod health;
mod snapshot;
mod spaces;

use std::time::{Duration, Instant};

use axum::{
    Router,
    body::{Body, Bytes},
    extract::{DefaultBodyLimit, MatchedPath, Request, State},
    http::{HeaderMap, HeaderValue, header},
    middleware::{self, Next},
    response::{IntoResponse, Response},
    routing::{get, post, put},
};
use mend_protocol::{
    ErrorCode,
    paths::{self, SPACE_ID_PARAM},
};

pub(crate) use self::extract::{AuthorizedSpace, CursorQuery, SpaceParam};
use crate::{config::Limits, error::ApiError, state::AppState, ws};

/// The relay's router. Routes are the paths devices build (`mend_protocol::paths`).
pub fn app(state: AppState) -> Router {
    Router::new()
        .route(paths::HEALTHZ, get(health::healthz))
        .route(paths::READYZ, get(health::readyz))
        .route(paths::METRICS, get(health::metrics))
        .route(
            &paths::space(&SPACE_ID_PARAM),
            put(spaces::create).delete(spaces::erase),
        )
        .route(
            &paths::chunks(&SPACE_ID_PARAM),
            post(chunks::push).get(chunks::pull),
        )
        .route(
            &paths::snapshot(&SPACE_ID_PARAM),
            put(snapshot::put).get(snapshot::get),
        )
        .route(&paths::live(&SPACE_ID_PARAM), get(ws::upgrade))
        // Bodies are read by the handlers with their own explicit limits.
        .layer(DefaultBodyLimit::disable())
        .layer(middleware::from_fn_with_state(state.clone(), observe))
        .with_state(state)
}

/// Counts error answers by code and logs each request without its path parameters.
async fn observe(State(state): State<AppState>, request: Request, next: Next) -> Response {
    let started = Instant::now();
    let method = request.method().clone();
    let route = request
        .extensions()
        .get::<MatchedPath>()
        .map_or_else(|| "unmatched".to_owned(), |path| path.as_str().to_owned());
    let response = next.run(request).await;
    if let Some(code) = response.extensions().get::<ErrorCode>() {
        state.metrics().error(*code);
    }
    tracing::debug!(
        %method,
        route,
        status = response.status().as_u16(),
        micros = started.elapsed().as_micros() as u64,
        "request"
    );
    response
}

/// Reads a body of at most `limit` bytes; larger ones are refused with `too_large` (413). A body
/// that does not arrive within the body timeout plus its expected length at the slowest rate
/// the relay waits for ([`crate::config::Limits::min_body_rate`]) is answered 408 and its
/// connection closed, so slow bodies cannot hold connections and buffers.
pub(crate) async fn read_body(
    headers: &HeaderMap,
    body: Body,
    limit: usize,
    too_large: ErrorCode,
    limits: &Limits,
) -> Result<Bytes, ApiError> {
    let refuse = || ApiError::new(too_large, format!("request body exceeds {limit} bytes"));
    let declared = headers
        .get(header::CONTENT_LENGTH)
        .and_then(|value| value.to_str().ok())
        .and_then(|value| value.parse::<u64>().ok());
    if declared.is_some_and(|len| len > limit as u64) {
        return Err(refuse());
    }
    let expected = declared.unwrap_or(limit as u64);
    let deadline = limits.body_timeout.saturating_add(Duration::from_millis(
        expected.saturating_mul(1000) / limits.min_body_rate.max(1),
    ));
    // Past the declared length check, the only way to fail is a body longer than it claimed
    // (or a broken connection, where the answer is never read).
    match tokio::time::timeout(deadline, axum::body::to_bytes(body, limit)).await {
        Ok(read) => read.map_err(|_| refuse()),
        Err(_) => Err(ApiError::body_timeout()),
    }
}

/// A binary frame as a response body.
pub(crate) fn frame(bytes: Vec<u8>) -> Response {
    let mut response = bytes.into_response();
    response.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static(paths::FRAME_CONTENT_TYPE),
    );
    response
}
