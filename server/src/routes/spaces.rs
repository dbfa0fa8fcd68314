//! `PUT /v1/spaces/{space_id}` creates a space; `DELETE` erases it.

use axum::{
    extract::State,
    http::{HeaderMap, StatusCode},
};

use super::{AuthorizedSpace, SpaceParam};
use crate::{
    auth::{bearer, token_hash},
    error::ApiError,
    state::AppState,
    storage::Created,
};

/// Creates the space and registers the SHA-256 of the presented token. 201 when created, 200
/// when it already existed with the same token, 409 when it exists with another.
pub(super) async fn create(
    State(state): State<AppState>,
    SpaceParam(space): SpaceParam,
    headers: HeaderMap,
) -> Result<StatusCode, ApiError> {
    let hash = token_hash(&bearer(&headers)?);
    match state.storage().create_space(space, hash).await? {
        Created::New => {
            tracing::info!("space created");
            Ok(StatusCode::CREATED)
        }
        Created::Existing => Ok(StatusCode::OK),
    }
}

/// Erases the space: chunks, snapshot and token hash. Live connections to it are closed.
pub(super) async fn erase(
    State(state): State<AppState>,
    AuthorizedSpace(space): AuthorizedSpace,
) -> Result<StatusCode, ApiError> {
    state.storage().erase(space).await?;
    tracing::info!("space erased");
    Ok(StatusCode::NO_CONTENT)
}
