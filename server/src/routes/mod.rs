//! The HTTP interface: [`app`] builds the router, one file per resource.
//!
//! Every space route authenticates first, then applies the space's rate limit, then reserves the
//! body's declared length from the body budgets and reads it with an explicit size limit, so an
//! unauthenticated, oversized or slow request costs the relay as little as possible and never
//! touches another space. Creating a space (`PUT`) has no token to check yet (it registers
//! one), so it is limited per client address before anything is read. Pairing mailbox routes
//! ([`pairings`]) belong to no space: they are limited per client address, and their bodies are
//! a few KiB at most.

mod chunks;
mod extract;
mod health;
mod pairings;
mod rollups;
mod snapshot;
mod spaces;

use std::time::{Duration, Instant};

use futures_util::StreamExt as _;

use axum::{
    Router,
    body::{Body, Bytes},
    extract::{DefaultBodyLimit, MatchedPath, Request, State},
    http::{HeaderMap, HeaderValue, header},
    middleware::{self, Next},
    response::{IntoResponse, Response},
    routing::{delete, get, post, put},
};
use mend_protocol::{
    ErrorCode, SpaceId,
    paths::{self, PAIRING_ID_PARAM, SPACE_ID_PARAM},
};

pub(crate) use self::extract::{AuthorizedSpace, ClientAddress, CursorQuery, SpaceParam};
use crate::{
    budget::{BodyReservation, OverBudget},
    caps::AddressConnectionGuard,
    config::Limits,
    error::{ApiError, UNAVAILABLE_RETRY},
    state::{AppState, OverShare},
    ws,
};

/// The router of the metrics address (`--metrics-listen`): the probes and `/metrics`.
pub fn metrics_app(state: AppState) -> Router {
    Router::new()
        .route(paths::HEALTHZ, get(health::healthz))
        .route(paths::READYZ, get(health::readyz))
        .route(paths::METRICS, get(health::metrics))
        .with_state(state)
}

/// The relay's router. Routes are the paths devices build (`mend_protocol::paths`).
/// `/metrics` is here only while no metrics address is configured.
pub fn app(state: AppState) -> Router {
    let mut router = Router::new()
        .route(paths::HEALTHZ, get(health::healthz))
        .route(paths::READYZ, get(health::readyz));
    if state.config().metrics_listen.is_none() {
        router = router.route(paths::METRICS, get(health::metrics));
    }
    router
        .route(
            &paths::space(&SPACE_ID_PARAM),
            put(spaces::create).delete(spaces::erase),
        )
        .route(&paths::successor(&SPACE_ID_PARAM), put(spaces::successor))
        .route(
            &paths::chunks(&SPACE_ID_PARAM),
            post(chunks::push).get(chunks::pull),
        )
        .route(&paths::rollups(&SPACE_ID_PARAM), post(rollups::push))
        .route(&paths::sizes(&SPACE_ID_PARAM), get(rollups::sizes))
        .route(&paths::devices(&SPACE_ID_PARAM), get(chunks::devices))
        .route(
            &paths::snapshot(&SPACE_ID_PARAM),
            put(snapshot::put).get(snapshot::get),
        )
        .route(&paths::live(&SPACE_ID_PARAM), get(ws::upgrade))
        .route(&paths::pairings(), post(pairings::open))
        .route(
            &paths::pairing_claim(&PAIRING_ID_PARAM),
            post(pairings::claim),
        )
        .route(
            &paths::pairing_messages(&PAIRING_ID_PARAM),
            post(pairings::post).get(pairings::read),
        )
        .route(&paths::pairing(&PAIRING_ID_PARAM), delete(pairings::close))
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

/// Reads a body of at most `limit` bytes for `space`; larger ones are refused with `too_large`
/// (413). Before a byte is read the body reserves its declared length (`limit` if it declares
/// none) from the space's, the client address's and the relay's body budgets
/// ([`crate::budget::BodyBudget`]); a body that does not fit is answered 503 `unavailable` with
/// `Retry-After`. The reservation is returned with the bytes and must be held until the write
/// is answered. A body that falls behind [`progress_deadline`], or does not arrive by
/// [`body_deadline`], is answered 408 and its connection closed, so slow or stalled bodies
/// cannot hold connections, buffers and reserved bytes.
pub(crate) async fn read_body(
    state: &AppState,
    space: SpaceId,
    ClientAddress(address): ClientAddress,
    headers: &HeaderMap,
    body: Body,
    limit: usize,
    too_large: ErrorCode,
) -> Result<(Bytes, BodyReservation), ApiError> {
    let refuse = || ApiError::new(too_large, format!("request body exceeds {limit} bytes"));
    let declared = headers
        .get(header::CONTENT_LENGTH)
        .and_then(|value| value.to_str().ok())
        .and_then(|value| value.parse::<u64>().ok());
    if declared.is_some_and(|len| len > limit as u64) {
        return Err(refuse());
    }
    let reserving = declared.unwrap_or(limit as u64);
    let reservation = state
        .body_budget()
        .try_reserve(space, address, reserving)
        .map_err(|over| {
            let whose = match over {
                OverBudget::Space => "this space",
                OverBudget::Address => "this address",
                OverBudget::Relay => "the relay",
            };
            ApiError::new(
                ErrorCode::Unavailable,
                format!("too many request bodies in flight for {whose}; retry later"),
            )
            // Bodies in flight are answered within their deadlines, usually far sooner.
            .retry_after(UNAVAILABLE_RETRY)
        })?;
    let limits = &state.config().limits;
    let started = tokio::time::Instant::now();
    let overall = started + body_deadline(declared, limit, limits);
    let mut frames = body.into_data_stream();
    let mut read = Vec::with_capacity(reserving.min(limit as u64) as usize);
    loop {
        let due = (started + progress_deadline(read.len() as u64, limits)).min(overall);
        match tokio::time::timeout_at(due, frames.next()).await {
            Err(_) => return Err(ApiError::body_timeout()),
            Ok(None) => return Ok((Bytes::from(read), reservation)),
            // Past the declared length check, the only ways to fail are a body longer than it
            // claimed and a broken connection, where the answer is never read.
            Ok(Some(Err(_))) => return Err(refuse()),
            Ok(Some(Ok(frame))) => {
                if read.len().saturating_add(frame.len()) > limit {
                    return Err(refuse());
                }
                read.extend_from_slice(&frame);
            }
        }
    }
}

/// By when, counted from the start of the body, a body that has delivered `received` bytes
/// must deliver more: the body timeout as a grace, then at least
/// [`crate::config::Limits::min_body_rate`] on average. A body that stalls is cut soon after
/// the grace, however large it declared itself.
pub(crate) fn progress_deadline(received: u64, limits: &Limits) -> Duration {
    limits.body_timeout.saturating_add(Duration::from_millis(
        received.saturating_mul(1000) / limits.min_body_rate.max(1),
    ))
}

/// How long a body may take: the body timeout plus its declared length (its size limit when it
/// declares none) at the slowest rate the relay waits for
/// ([`crate::config::Limits::min_body_rate`]). It grows with the body but never past what the
/// largest allowed body gets.
pub(crate) fn body_deadline(declared: Option<u64>, limit: usize, limits: &Limits) -> Duration {
    let expected = declared.unwrap_or(limit as u64).min(limit as u64);
    limits.body_timeout.saturating_add(Duration::from_millis(
        expected.saturating_mul(1000) / limits.min_body_rate.max(1),
    ))
}

/// Takes a slot of the client address's share of the write queue, held until the write is
/// answered; an address holding its whole share is answered 503 `unavailable` with
/// `Retry-After`, as a full queue is.
pub(crate) fn write_share(
    state: &AppState,
    ClientAddress(address): ClientAddress,
) -> Result<Option<AddressConnectionGuard>, ApiError> {
    state.write_share(address).map_err(|OverShare| {
        ApiError::new(
            ErrorCode::Unavailable,
            "too many writes queued from this address; retry later",
        )
        .retry_after(UNAVAILABLE_RETRY)
    })
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

#[cfg(test)]
mod tests {
    use super::*;

    /// A body's deadline grows with its declared length, and one that declares nothing, or more
    /// than the limit, gets no more than the largest allowed body.
    #[test]
    fn body_deadlines_scale_with_size_and_are_bounded() {
        let limits = Limits {
            body_timeout: Duration::from_secs(10),
            min_body_rate: 64 * 1024,
            ..Limits::default()
        };
        let limit = 16 << 20;
        let small = body_deadline(Some(1024), limit, &limits);
        let large = body_deadline(Some(8 << 20), limit, &limits);
        let ceiling = body_deadline(Some(limit as u64), limit, &limits);
        assert!(small < large && large < ceiling);
        assert_eq!(ceiling, Duration::from_secs(10 + 256));
        assert_eq!(body_deadline(None, limit, &limits), ceiling);
        assert_eq!(body_deadline(Some(u64::MAX), limit, &limits), ceiling);
    }

    /// Within its overall deadline a body must keep up: nothing sent, it is due when the grace
    /// ends, and each 64 KiB sent buys a second more.
    #[test]
    fn a_body_must_keep_up_with_the_minimum_rate_after_the_grace() {
        let limits = Limits {
            body_timeout: Duration::from_secs(10),
            min_body_rate: 64 * 1024,
            ..Limits::default()
        };
        assert_eq!(progress_deadline(0, &limits), Duration::from_secs(10));
        assert_eq!(
            progress_deadline(64 * 1024, &limits),
            Duration::from_secs(11)
        );
        assert_eq!(
            progress_deadline(u64::MAX, &limits),
            Duration::from_secs(10).saturating_add(Duration::from_millis(u64::MAX / (64 * 1024)))
        );
    }
}
