//! `PUT /v1/spaces/{space_id}/snapshot` stores the snapshot; `GET` fetches it.

use axum::{
    body::Body,
    extract::State,
    http::{HeaderMap, StatusCode},
    response::Response,
};
use mend_protocol::{ErrorCode, Limits, Snapshot};

use super::{AuthorizedSpace, ClientAddress, frame, read_body, write_share};
use crate::{config::SNAPSHOT_OVERHEAD, error::ApiError, state::AppState};

/// Stores the snapshot (if it covers at least the stored one) and prunes what it covers.
pub(super) async fn put(
    State(state): State<AppState>,
    AuthorizedSpace(space): AuthorizedSpace,
    address: ClientAddress,
    headers: HeaderMap,
    body: Body,
) -> Result<StatusCode, ApiError> {
    let limits = &state.config().limits;
    let share = write_share(&state, address)?;
    let (body, reservation) = read_body(
        &state,
        space,
        address,
        &headers,
        body,
        limits.max_snapshot_bytes + SNAPSHOT_OVERHEAD,
        ErrorCode::SnapshotTooLarge,
    )
    .await?;
    let decode_limits = Limits {
        max_snapshot_bytes: limits.max_snapshot_bytes,
        ..Limits::DEFAULT
    };
    let snapshot = Snapshot::decode(&body, &decode_limits)
        .map_err(|e| ApiError::from_decode(e, ErrorCode::SnapshotTooLarge))?;
    let covers = snapshot.covers;
    // The share and reservation go with the queued write, not with the request.
    let write = state.storage().put_snapshot(
        space,
        snapshot,
        limits.space_quota_bytes,
        limits.prune_grace,
    );
    state.write_to_end(write, (share, reservation)).await?;
    tracing::debug!(covers, "snapshot stored");
    Ok(StatusCode::NO_CONTENT)
}

/// Answers the stored snapshot, or 404 `no_snapshot`.
pub(super) async fn get(
    State(state): State<AppState>,
    AuthorizedSpace(space): AuthorizedSpace,
) -> Result<Response, ApiError> {
    match state.storage().get_snapshot(space).await? {
        Some(snapshot) => {
            state.metrics().sent(0, snapshot.payload.len());
            Ok(frame(snapshot.to_bytes()))
        }
        None => Err(ApiError::new(
            ErrorCode::NoSnapshot,
            "this space has no snapshot",
        )),
    }
}
