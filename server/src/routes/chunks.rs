//! `POST /v1/spaces/{space_id}/chunks` pushes one chunk; `GET` pulls a page. `GET .../devices`
//! answers when each device was last served.

use std::time::{Duration, Instant};

use axum::{body::Body, extract::State, http::HeaderMap, response::Response};
use mend_protocol::{Ack, ErrorCode, Limits, MAX_PAGE_LIMIT, MAX_PUSH_OVERHEAD, Push};

use super::{AuthorizedSpace, ClientAddress, CursorQuery, frame, read_body, write_share};
use crate::{error::ApiError, state::AppState, storage::PullRequest};

/// Stores one chunk and answers its [`Ack`] once the chunk is durable.
pub(super) async fn push(
    State(state): State<AppState>,
    AuthorizedSpace(space): AuthorizedSpace,
    address: ClientAddress,
    headers: HeaderMap,
    body: Body,
) -> Result<Response, ApiError> {
    let limits = &state.config().limits;
    // The in-flight slot first: a space at its cap costs the relay no body buffer.
    let Some(slot) = state.space_pushes().try_acquire(&space) else {
        return Err(ApiError::new(
            ErrorCode::RateLimited,
            "too many pushes in flight for this space",
        )
        .retry_after(Duration::from_millis(100)));
    };
    // Then the address's share of the write queue: one address cannot hold all of it.
    let share = write_share(&state, address)?;
    let (body, reservation) = read_body(
        &state,
        space,
        address,
        &headers,
        body,
        limits.max_chunk_bytes + MAX_PUSH_OVERHEAD,
        ErrorCode::ChunkTooLarge,
    )
    .await?;
    let decode_limits = Limits {
        max_chunk_bytes: limits.max_chunk_bytes,
        ..Limits::DEFAULT
    };
    let push = Push::decode(&body, &decode_limits)
        .map_err(|e| ApiError::from_decode(e, ErrorCode::ChunkTooLarge))?;
    if push.payload.len() < limits.min_chunk_bytes {
        return Err(too_small(limits.min_chunk_bytes));
    }
    let (device, device_seq, bytes) = (push.device_id, push.device_seq, push.payload.len());
    let started = Instant::now();
    // The slot, share and reservation go with the queued write, not with the request.
    let write = state.storage().push(space, push, limits.space_quota_bytes);
    // Queued after the push (sharing its commit, never taking its slot), once an hour at most.
    let seen = state.note_seen(space, device, address.0);
    let pushed = state.write_to_end(write, (slot, share, reservation)).await;
    if let Some(seen) = seen {
        // Its failure is logged by the task; the push stands either way.
        let _ = seen.await;
    }
    let pushed = pushed?;
    state
        .metrics()
        .pushed(bytes, pushed.duplicate, started.elapsed());
    let ack = Ack {
        device_seq,
        relay_seq: pushed.relay_seq,
        duplicate: pushed.duplicate,
    };
    Ok(frame(ack.to_bytes()))
}

/// Answers when the relay last served each device of the space
/// ([`mend_protocol::DeviceList`]).
pub(super) async fn devices(
    State(state): State<AppState>,
    AuthorizedSpace(space): AuthorizedSpace,
) -> Result<Response, ApiError> {
    let list = state.storage().devices(space).await?;
    Ok(frame(list.to_bytes()))
}

/// Answers a [`mend_protocol::Page`] of chunks after `after`.
pub(super) async fn pull(
    State(state): State<AppState>,
    AuthorizedSpace(space): AuthorizedSpace,
    ClientAddress(address): ClientAddress,
    query: CursorQuery,
) -> Result<Response, ApiError> {
    let limits = &state.config().limits;
    let request = PullRequest {
        after: query.after,
        limit: query
            .limit
            .unwrap_or(limits.default_page_chunks)
            .clamp(1, MAX_PAGE_LIMIT),
        max_bytes: limits.max_page_bytes,
        exclude_device: query.device,
        include_pruned: query.include_pruned,
        rollups: query.rollups,
    };
    let seen = query
        .device
        .and_then(|device| state.note_seen(space, device, address));
    let page = state.storage().pull(space, request).await;
    if let Some(seen) = seen {
        let _ = seen.await;
    }
    let page = page?;
    let bytes = page.chunks.iter().map(|c| c.payload.len()).sum();
    state.metrics().sent(page.chunks.len(), bytes);
    state
        .metrics()
        .rollups_sent(page.rollups.iter().map(|r| r.payload.len()).sum());
    Ok(frame(page.to_bytes()))
}

/// A payload below the smallest sealed one: refused, since rows cost the database more than
/// the quota counts for them.
pub(super) fn too_small(min: usize) -> ApiError {
    ApiError::new(
        ErrorCode::Malformed,
        format!("a sealed payload is at least {min} bytes"),
    )
}
