//! Probes and metrics: `/healthz`, `/readyz`, `/metrics`.

use axum::{
    extract::State,
    http::{HeaderValue, header},
    response::{IntoResponse, Response},
};
use mend_protocol::ErrorCode;

use crate::{error::ApiError, state::AppState};

/// Liveness: the process answers.
pub(super) async fn healthz() -> &'static str {
    "ok\n"
}

/// Readiness: 503 once shutdown has begun, so load balancers stop sending work.
pub(super) async fn readyz(State(state): State<AppState>) -> Result<&'static str, ApiError> {
    if state.shutdown().is_cancelled() {
        return Err(ApiError::new(
            ErrorCode::Unavailable,
            "the relay is shutting down",
        ));
    }
    Ok("ready\n")
}

/// Prometheus text exposition.
pub(super) async fn metrics(State(state): State<AppState>) -> Response {
    let mut response = state.metrics().render().into_response();
    response.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("text/plain; version=0.0.4; charset=utf-8"),
    );
    response
}
