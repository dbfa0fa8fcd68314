//! Extractors the space routes share: the space a request names, an authorized space, and the
//! cursor query. One place decides how a space id is parsed, how the token is checked and when
//! the rate limit applies, for every route and for the WebSocket upgrade alike.

use axum::{
    extract::{FromRequestParts, Path, Query},
    http::request::Parts,
};
use mend_protocol::{DeviceId, ErrorCode, SpaceId};
use serde::Deserialize;

use crate::{
    auth::authorize,
    client::{client_ip, client_key},
    error::ApiError,
    state::AppState,
};

/// The `{space_id}` a request names, parsed but not yet authorized (creation registers the
/// token instead of checking it).
#[derive(Debug, Clone, Copy)]
pub(crate) struct SpaceParam(pub(crate) SpaceId);

impl<S: Send + Sync> FromRequestParts<S> for SpaceParam {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, ApiError> {
        let Path(raw) = Path::<String>::from_request_parts(parts, state)
            .await
            .map_err(|_| ApiError::new(ErrorCode::Malformed, "bad space id in the path"))?;
        let space = raw
            .parse()
            .map_err(|e| ApiError::new(ErrorCode::Malformed, format!("bad space id: {e}")))?;
        Ok(Self(space))
    }
}

/// A space whose token the request carries, with one request taken from the space's rate
/// budget: authentication first, so an unauthenticated request costs the relay as little as
/// possible and never touches another space's budget.
#[derive(Debug, Clone, Copy)]
pub(crate) struct AuthorizedSpace(pub(crate) SpaceId);

impl FromRequestParts<AppState> for AuthorizedSpace {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &AppState) -> Result<Self, ApiError> {
        let SpaceParam(space) = SpaceParam::from_request_parts(parts, state).await?;
        if state.storage().known_token(space).is_some() {
            // Held in memory: checking costs nothing, so nothing limits it.
            authorize(state, &space, &parts.headers).await?;
        } else {
            // Checking reads the database (a space this instance has not served yet, or none
            // at all): each address may fail a bounded number of such reads, taken up front so
            // that requests at once cannot all slip past, and given back only when the token
            // is right (an erased space's tombstone, or a database that does not answer, cost a
            // read all the same).
            let address = match ClientAddress::from_request_parts(parts, state).await {
                Ok(address) => address,
                Err(never) => match never {},
            };
            super::pairings::limit_address(
                state.failed_auths(),
                address,
                "too many requests with a wrong token from this address",
            )?;
            let checked = authorize(state, &space, &parts.headers).await;
            if checked.is_ok()
                && let ClientAddress(Some(address)) = &address
            {
                state.failed_auths().refund(address);
            }
            checked?;
        }
        state.rate().check(&space).map_err(|wait| {
            ApiError::new(ErrorCode::RateLimited, "too many requests for this space")
                .retry_after(wait)
        })?;
        Ok(Self(space))
    }
}

/// The key of the client's address (IPv6 by its /64), as the per-address limits count it;
/// `None` for a request that reached the router without a peer (in-process).
#[derive(Debug, Clone, Copy)]
pub(crate) struct ClientAddress(pub(crate) Option<[u8; 32]>);

impl FromRequestParts<AppState> for ClientAddress {
    type Rejection = std::convert::Infallible;

    async fn from_request_parts(
        parts: &mut Parts,
        state: &AppState,
    ) -> Result<Self, std::convert::Infallible> {
        let header = state.config().limits.client_ip_header.as_deref();
        Ok(Self(
            client_ip(header, &parts.headers, &parts.extensions).map(client_key),
        ))
    }
}

/// The `after`, `limit`, `device`, `pruned` and `rollups` query parameters
/// (`mend_protocol::paths`); unknown parameters are ignored.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub(crate) struct CursorQuery {
    pub(crate) after: u64,
    pub(crate) limit: Option<usize>,
    pub(crate) device: Option<DeviceId>,
    pub(crate) include_pruned: bool,
    pub(crate) rollups: bool,
}

/// The query as axum's `Query` reads it; names match `mend_protocol::paths::QUERY_*`.
#[derive(Debug, Deserialize)]
struct RawCursor {
    #[serde(default)]
    after: u64,
    limit: Option<usize>,
    device: Option<String>,
    #[serde(default)]
    pruned: bool,
    #[serde(default)]
    rollups: bool,
}

impl<S: Send + Sync> FromRequestParts<S> for CursorQuery {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, _state: &S) -> Result<Self, ApiError> {
        let Query(raw) = Query::<RawCursor>::try_from_uri(&parts.uri).map_err(|_| {
            ApiError::new(
                ErrorCode::Malformed,
                "bad query: after and limit are integers, device is 32 hex digits",
            )
        })?;
        let device =
            raw.device.map(|d| d.parse()).transpose().map_err(|_| {
                ApiError::new(ErrorCode::Malformed, "bad query: device must be 32 hex")
            })?;
        Ok(Self {
            after: raw.after,
            limit: raw.limit,
            device,
            include_pruned: raw.pruned,
            rollups: raw.rollups,
        })
    }
}

#[cfg(test)]
mod tests {
    use axum::http::Request;
    use mend_protocol::paths;

    use super::*;

    async fn parse(uri: &str) -> Result<CursorQuery, ApiError> {
        let (mut parts, ()) = Request::get(uri).body(()).expect("request").into_parts();
        CursorQuery::from_request_parts(&mut parts, &()).await
    }

    #[tokio::test]
    async fn parses_cursor_queries() {
        let device = DeviceId([0xab; 16]);
        let space = SpaceId([1; 32]);
        let uri = format!(
            "{}&other=x",
            paths::pull(&space, 12, Some(5), Some(&device))
        );
        assert_eq!(
            parse(&uri).await,
            Ok(CursorQuery {
                after: 12,
                limit: Some(5),
                device: Some(device),
                include_pruned: false,
                rollups: false,
            })
        );
        assert!(
            parse("/x?pruned=true")
                .await
                .is_ok_and(|q| q.include_pruned)
        );
        assert!(parse("/x?pruned=yes").await.is_err());
        assert!(
            parse("/x?rollups=true")
                .await
                .is_ok_and(|q| q.rollups && !q.include_pruned)
        );
        assert!(parse("/x?rollups=1").await.is_err());
        assert_eq!(parse("/x").await, Ok(CursorQuery::default()));
        assert!(parse("/x?after=-1").await.is_err());
        assert!(parse("/x?after=99999999999999999999999").await.is_err());
        assert!(parse("/x?device=xyz").await.is_err());
    }
}
