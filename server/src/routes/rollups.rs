//! `POST /v1/spaces/{space_id}/rollups` stores a rollup; `GET …/sizes` answers what catching up
//! from a cursor costs.

use std::time::Duration;

use axum::{
    body::Body,
    extract::State,
    http::{HeaderMap, StatusCode},
    response::Response,
};
use mend_protocol::{ErrorCode, Limits, MAX_PUSH_OVERHEAD, RollupPush};

use super::{AuthorizedSpace, ClientAddress, CursorQuery, frame, read_body, write_share};
use crate::{error::ApiError, state::AppState};

/// Framing a rollup carries beyond a push's: its second device sequence (a varint).
const ROLLUP_EXTRA_OVERHEAD: usize = 10;

/// Stores a rollup once every chunk it stands for is checked; `204` for a duplicate too.
/// Admitted exactly like a push: the space's in-flight cap, the address's write share, then the
/// body budgets, with the chunk limit on its payload.
pub(super) async fn push(
    State(state): State<AppState>,
    AuthorizedSpace(space): AuthorizedSpace,
    address: ClientAddress,
    headers: HeaderMap,
    body: Body,
) -> Result<StatusCode, ApiError> {
    let limits = &state.config().limits;
    let Some(slot) = state.space_pushes().try_acquire(&space) else {
        return Err(ApiError::new(
            ErrorCode::RateLimited,
            "too many pushes in flight for this space",
        )
        .retry_after(Duration::from_millis(100)));
    };
    let share = write_share(&state, address)?;
    let (body, reservation) = read_body(
        &state,
        space,
        address,
        &headers,
        body,
        limits.max_chunk_bytes + MAX_PUSH_OVERHEAD + ROLLUP_EXTRA_OVERHEAD,
        ErrorCode::ChunkTooLarge,
    )
    .await?;
    let decode_limits = Limits {
        max_chunk_bytes: limits.max_chunk_bytes,
        ..Limits::DEFAULT
    };
    let rollup = RollupPush::decode(&body, &decode_limits)
        .map_err(|e| ApiError::from_decode(e, ErrorCode::ChunkTooLarge))?;
    if rollup.payload.len() < limits.min_chunk_bytes {
        return Err(super::chunks::too_small(limits.min_chunk_bytes));
    }
    let write = state
        .storage()
        .push_rollup(space, rollup, limits.space_quota_bytes);
    let stored = state
        .write_to_end(write, (slot, share, reservation))
        .await?;
    state.metrics().rollup_stored(stored.duplicate);
    Ok(StatusCode::NO_CONTENT)
}

/// Answers a [`mend_protocol::Sizes`] for catching up from `after` (withholding `device`).
pub(super) async fn sizes(
    State(state): State<AppState>,
    AuthorizedSpace(space): AuthorizedSpace,
    query: CursorQuery,
) -> Result<Response, ApiError> {
    let sizes = state
        .storage()
        .sizes(space, query.after, query.device)
        .await?;
    Ok(frame(sizes.to_bytes()))
}
