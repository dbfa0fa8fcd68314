//! The HTTP interface: [`app`] builds the router, one file per resource.
//!
//! Every space route authenticates first, then applies the space's rate limit, then reads the
//! body with an explicit size limit, so an unauthenticated or oversized request costs the relay
//! as little as possible and never touches another space.

mod chunks;
mod health;
mod snapshot;
mod spaces;

use std::time::Instant;

use axum::{
    Router,
    body::{Body, Bytes},
    extract::{DefaultBodyLimit, MatchedPath, Request, State},
    http::{HeaderMap, HeaderValue, header},
    middleware::{self, Next},
    response::{IntoResponse, Response},
    routing::{get, post, put},
};
use mend_protocol::{DeviceId, ErrorCode, SpaceId, paths};

use crate::{error::ApiError, state::AppState, ws};

/// Route of a space (`PUT` create, `DELETE` erase).
pub const ROUTE_SPACE: &str = "/v1/spaces/{space_id}";
/// Route of a space's chunks (`POST` push, `GET` pull).
pub const ROUTE_CHUNKS: &str = "/v1/spaces/{space_id}/chunks";
/// Route of a space's snapshot (`PUT`, `GET`).
pub const ROUTE_SNAPSHOT: &str = "/v1/spaces/{space_id}/snapshot";
/// Route of a space's live WebSocket.
pub const ROUTE_LIVE: &str = "/v1/spaces/{space_id}/live";

/// The relay's router.
pub fn app(state: AppState) -> Router {
    Router::new()
        .route(paths::HEALTHZ, get(health::healthz))
        .route(paths::READYZ, get(health::readyz))
        .route(paths::METRICS, get(health::metrics))
        .route(ROUTE_SPACE, put(spaces::create).delete(spaces::erase))
        .route(ROUTE_CHUNKS, post(chunks::push).get(chunks::pull))
        .route(ROUTE_SNAPSHOT, put(snapshot::put).get(snapshot::get))
        .route(ROUTE_LIVE, get(ws::upgrade))
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

/// Parses the `{space_id}` path segment.
pub(crate) fn space_id(raw: &str) -> Result<SpaceId, ApiError> {
    raw.parse()
        .map_err(|e| ApiError::new(ErrorCode::Malformed, format!("bad space id: {e}")))
}

/// Takes one request from the space's rate budget.
pub(crate) fn rate_limit(state: &AppState, space: &SpaceId) -> Result<(), ApiError> {
    state.rate().check(space).map_err(|wait| {
        ApiError::new(ErrorCode::RateLimited, "too many requests for this space").retry_after(wait)
    })
}

/// Reads a body of at most `limit` bytes; larger ones are refused with `too_large` (413).
pub(crate) async fn read_body(
    headers: &HeaderMap,
    body: Body,
    limit: usize,
    too_large: ErrorCode,
) -> Result<Bytes, ApiError> {
    let refuse = || ApiError::new(too_large, format!("request body exceeds {limit} bytes"));
    let declared = headers
        .get(header::CONTENT_LENGTH)
        .and_then(|value| value.to_str().ok())
        .and_then(|value| value.parse::<u64>().ok());
    if declared.is_some_and(|len| len > limit as u64) {
        return Err(refuse());
    }
    // Past the declared length check, the only way to fail is a body longer than it claimed
    // (or a broken connection, where the answer is never read).
    axum::body::to_bytes(body, limit)
        .await
        .map_err(|_| refuse())
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

/// The `after`, `limit` and `device` query parameters.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub(crate) struct CursorQuery {
    pub(crate) after: u64,
    pub(crate) limit: Option<usize>,
    pub(crate) device: Option<DeviceId>,
}

impl CursorQuery {
    /// Parses a raw query string; unknown parameters are ignored.
    pub(crate) fn parse(raw: Option<&str>) -> Result<CursorQuery, ApiError> {
        let bad = |what: &str| ApiError::new(ErrorCode::Malformed, format!("bad query: {what}"));
        let mut query = CursorQuery::default();
        for pair in raw.unwrap_or("").split('&').filter(|pair| !pair.is_empty()) {
            let (key, value) = pair.split_once('=').unwrap_or((pair, ""));
            match key {
                paths::QUERY_AFTER => {
                    query.after = value.parse().map_err(|_| bad("after must be an integer"))?;
                }
                paths::QUERY_LIMIT => {
                    query.limit = Some(value.parse().map_err(|_| bad("limit must be an integer"))?);
                }
                paths::QUERY_DEVICE => {
                    query.device = Some(value.parse().map_err(|_| bad("device must be 32 hex"))?);
                }
                _ => {}
            }
        }
        Ok(query)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_cursor_queries() {
        let device = DeviceId([0xab; 16]);
        let raw = format!("after=12&limit=5&device={device}&other=x");
        assert_eq!(
            CursorQuery::parse(Some(&raw)),
            Ok(CursorQuery {
                after: 12,
                limit: Some(5),
                device: Some(device)
            })
        );
        assert_eq!(CursorQuery::parse(None), Ok(CursorQuery::default()));
        assert!(CursorQuery::parse(Some("after=-1")).is_err());
        assert!(CursorQuery::parse(Some("after=99999999999999999999999")).is_err());
        assert!(CursorQuery::parse(Some("device=xyz")).is_err());
    }
}
