//! `PUT /v1/spaces/{space_id}` creates a space; `DELETE` erases it.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use axum::{
    body::Body,
    extract::{Query, State, rejection::QueryRejection},
    http::{HeaderMap, StatusCode},
    response::Response,
};
use mend_protocol::{ErrorCode, Limits, SpaceId, Successor, paths};
use serde::Deserialize;
use subtle::ConstantTimeEq;

use super::{
    AuthorizedSpace, ClientAddress, SpaceParam, frame,
    pairings::{limit_address, read_small_body},
    write_share,
};
use crate::{
    auth::{bearer, token_hash},
    error::ApiError,
    state::AppState,
    storage::{Created, EraseReason, SPACE_BYTES, StorageError},
};

/// Creates the space and registers the SHA-256 of the presented token. 201 when created, 200
/// when it already existed with the same token, 409 when it exists with another.
pub(super) async fn create(
    State(state): State<AppState>,
    SpaceParam(space): SpaceParam,
    address: ClientAddress,
    headers: HeaderMap,
) -> Result<StatusCode, ApiError> {
    let hash = token_hash(&bearer(&headers)?);
    // A space this instance holds in memory with this token exists (an erase forgets it):
    // answered at once, with no storage work, so it costs nothing from the address's budget
    // and a neighbour on the same address who spends that budget cannot stop its sync.
    if state
        .storage()
        .known_token(space)
        .is_some_and(|known| bool::from(known.ct_eq(&hash)))
    {
        return Ok(StatusCode::OK);
    }
    // Otherwise no token is checked before storage (creation registers it), so the address's
    // budget is what bounds the storage work its PUTs cost.
    limit_address(
        state.space_puts(),
        address,
        "too many space requests from this address",
    )?;
    let _share = write_share(&state, address)?;
    limit_creations(&state, &space, address).await?;
    match state.storage().create_space(space, hash).await? {
        Created::New => {
            tracing::info!("space created");
            Ok(StatusCode::CREATED)
        }
        Created::Existing => Ok(StatusCode::OK),
    }
}

/// The query of a `DELETE`: `reason=retired` for a space a key rotation replaced.
#[derive(Debug, Deserialize)]
pub(super) struct EraseQuery {
    reason: Option<String>,
}

/// Erases the space: chunks, snapshot and token hash, leaving a tombstone that answers every
/// later request on it `410`. Live connections to it are closed.
pub(super) async fn erase(
    State(state): State<AppState>,
    AuthorizedSpace(space): AuthorizedSpace,
    query: Result<Query<EraseQuery>, QueryRejection>,
) -> Result<StatusCode, ApiError> {
    let reason = match query.ok().map(|Query(q)| q.reason) {
        Some(None) => EraseReason::Erased,
        Some(Some(reason)) if reason == paths::REASON_RETIRED => EraseReason::Retired,
        Some(Some(reason)) if reason == "erased" => EraseReason::Erased,
        _ => {
            return Err(ApiError::new(
                ErrorCode::Malformed,
                "bad query: reason is erased or retired",
            ));
        }
    };
    state.storage().erase(space, reason).await?;
    tracing::info!(?reason, "space erased");
    Ok(StatusCode::NO_CONTENT)
}

/// A [`Successor`] frame: version, kind and 32 bytes.
const SUCCESSOR_FRAME: usize = 2 + 32;

/// Offers the announcement that ends the space's epoch and answers the one the relay keeps:
/// the first offered, for good ([`Successor`]).
pub(super) async fn successor(
    State(state): State<AppState>,
    AuthorizedSpace(space): AuthorizedSpace,
    address: ClientAddress,
    headers: HeaderMap,
    body: Body,
) -> Result<Response, ApiError> {
    let bytes = read_small_body(&state, &headers, body, SUCCESSOR_FRAME).await?;
    let offered = Successor::decode(&bytes, &Limits::DEFAULT)
        .map_err(|e| ApiError::from_decode(e, ErrorCode::Malformed))?;
    let _share = write_share(&state, address)?;
    let kept = state.storage().claim_successor(space, offered.id).await?;
    Ok(frame(Successor { id: kept }.to_bytes()))
}

/// Counts a creation against the client address's budget. Devices re-send `PUT` for spaces that
/// exist on every sync round; those are not creations and are not counted.
async fn limit_creations(
    state: &AppState,
    space: &SpaceId,
    ClientAddress(address): ClientAddress,
) -> Result<(), ApiError> {
    let limits = &state.config().limits;
    let Some(address) = address else {
        return Ok(());
    };
    // From memory, except on PostgreSQL for a space this instance has not served yet: without
    // this one read, an address that spent its creations could not re-send PUT for its spaces.
    if state.storage().token_hash(*space).await?.is_some() {
        return Ok(());
    }
    // Spent by an earlier answer of the creation counter: refused before the queries below,
    // the counter's write among them. An erased space's device is told it is gone once the
    // window is over.
    if let Some(wait) = state.creations_spent().wait(&address) {
        return Err(too_many_creations(wait));
    }
    // A device that still holds an erased space's secret asks again every round: it is told
    // the space is gone, and that costs nothing from the address's budget.
    if let Some(tombstone) = state.storage().tombstone(*space).await? {
        return Err(ApiError::gone(tombstone.reason));
    }
    // A full relay refuses a new space before the address's budget is spent: devices retry
    // their creations every round, and a refusal must not leave them rate-limited for the rest
    // of the window once the relay has room again. Storage checks again as it creates.
    let used = state.storage().total_bytes().await?;
    if used.saturating_add(SPACE_BYTES) > limits.max_total_bytes {
        return Err(StorageError::RelayFull {
            used,
            adding: SPACE_BYTES,
            limit: limits.max_total_bytes,
        }
        .into());
    }
    let window = limits.creation_window.as_secs().max(1);
    let now = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs());
    let start = now - now % window;
    let count = state
        .storage()
        .count_creation(address, start, start.saturating_sub(window))
        .await?;
    let allowed = u64::from(limits.creations_per_address);
    let wait = Duration::from_secs(start.saturating_add(window).saturating_sub(now).max(1));
    if count >= allowed {
        state.creations_spent().mark(&address, wait);
    }
    if count > allowed {
        return Err(too_many_creations(wait));
    }
    Ok(())
}

fn too_many_creations(wait: Duration) -> ApiError {
    ApiError::new(
        ErrorCode::RateLimited,
        "too many spaces created from this address",
    )
    .retry_after(wait)
}
