//! Probes and metrics: `/healthz`, `/readyz`, `/metrics`.

use std::{fmt::Write as _, time::Duration};

use axum::{
    extract::State,
    http::{HeaderValue, header},
    response::{IntoResponse, Response},
};
use mend_protocol::ErrorCode;

use crate::{
    error::{ApiError, UNAVAILABLE_RETRY},
    state::AppState,
};

/// Liveness: the process answers.
pub(super) async fn healthz() -> &'static str {
    "ok\n"
}

/// How long readiness waits for storage before it answers 503.
const READY_TIMEOUT: Duration = Duration::from_secs(2);

/// Readiness: 503 once shutdown has begun, or while storage does not answer (a database that
/// is away), so load balancers send work elsewhere.
pub(super) async fn readyz(State(state): State<AppState>) -> Result<&'static str, ApiError> {
    if state.shutdown().is_cancelled() {
        return Err(ApiError::new(
            ErrorCode::Unavailable,
            "the relay is shutting down",
        ));
    }
    match tokio::time::timeout(READY_TIMEOUT, state.storage().ready()).await {
        Ok(Ok(())) => Ok("ready\n"),
        Ok(Err(error)) => {
            tracing::warn!(%error, "not ready");
            Err(
                ApiError::new(ErrorCode::Unavailable, "storage is not ready")
                    .retry_after(UNAVAILABLE_RETRY),
            )
        }
        Err(_) => Err(
            ApiError::new(ErrorCode::Unavailable, "storage did not answer in time")
                .retry_after(UNAVAILABLE_RETRY),
        ),
    }
}

/// Prometheus text exposition: the relay's figures, then the storage backend's.
pub(super) async fn metrics(State(state): State<AppState>) -> Response {
    let mut text = state.metrics().render();
    state.body_budget().render(&mut text);
    state.storage().render_metrics(&mut text);
    // What `--max-total-bytes` counts, read from storage (one row, or 64 with PostgreSQL), so
    // an operator sees the relay filling before it answers `relay_full`. Left out when storage
    // does not answer in time: the scrape still reports everything else.
    if let Ok(Ok(stored)) = tokio::time::timeout(READY_TIMEOUT, state.storage().total_bytes()).await
    {
        let _ = writeln!(
            text,
            "# HELP mend_stored_bytes Bytes the relay-wide limit counts: payloads, snapshots, kept rows and spaces.\n\
             # TYPE mend_stored_bytes gauge\nmend_stored_bytes {stored}"
        );
    }
    let _ = writeln!(
        text,
        "# HELP mend_stored_bytes_limit The relay-wide byte limit (--max-total-bytes).\n\
         # TYPE mend_stored_bytes_limit gauge\nmend_stored_bytes_limit {}",
        state.config().limits.max_total_bytes
    );
    let mut response = text.into_response();
    response.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("text/plain; version=0.0.4; charset=utf-8"),
    );
    response
}
