//! Bearer-token authentication against the stored SHA-256 of a space's token.
//!
//! The relay never keeps a token, only its hash, and compares hashes in constant time. Errors
//! say what is wrong with the header, never what it contained.

use axum::http::{HeaderMap, header};
use mend_protocol::{ErrorCode, SpaceId, Token};
use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;

use crate::{error::ApiError, state::AppState, storage::TokenHash};

/// SHA-256 of the token, as stored.
pub fn token_hash(token: &Token) -> TokenHash {
    Sha256::digest(token.expose().as_bytes()).into()
}

/// The bearer token of a request.
pub fn bearer(headers: &HeaderMap) -> Result<Token, ApiError> {
    let value = headers
        .get(header::AUTHORIZATION)
        .ok_or_else(|| ApiError::new(ErrorCode::Unauthorized, "missing Authorization header"))?;
    let value = value
        .to_str()
        .map_err(|_| ApiError::new(ErrorCode::Unauthorized, "Authorization header is not ASCII"))?;
    Token::from_authorization(value)
        .map_err(|error| ApiError::new(ErrorCode::Unauthorized, error.to_string()))
}

/// Checks that the request carries the token of `space`.
pub async fn authorize(
    state: &AppState,
    space: &SpaceId,
    headers: &HeaderMap,
) -> Result<(), ApiError> {
    let presented = token_hash(&bearer(headers)?);
    let Some(stored) = state.storage().token_hash(*space).await? else {
        // The token hash went with the space, so an erased space is answered to anyone who
        // names it: its id says nothing without the secret it came from.
        return Err(match state.storage().tombstone(*space).await? {
            Some(tombstone) => ApiError::gone(tombstone.reason),
            None => ApiError::new(ErrorCode::SpaceNotFound, "no such space"),
        });
    };
    if bool::from(stored.ct_eq(&presented)) {
        Ok(())
    } else {
        Err(ApiError::new(
            ErrorCode::Unauthorized,
            "wrong token for this space",
        ))
    }
}
