//! `GET /v1/spaces/{space_id}/live`: the live WebSocket.
//!
//! The upgrade is refused with an ordinary HTTP error (401, 404, 429, 503) before any socket
//! exists, so refusals cost little. Accepted sockets get small buffers sized by
//! [`crate::config::WsBuffers`], a message limit, and their own [`session::Session`] task.

mod session;

use axum::{
    extract::{
        State,
        ws::{WebSocketUpgrade, rejection::WebSocketUpgradeRejection},
    },
    response::Response,
};
use mend_protocol::ErrorCode;

use crate::{
    error::ApiError,
    routes::{AuthorizedSpace, ClientAddress, CursorQuery},
    state::AppState,
};

/// Authenticates, checks the caps, and upgrades to a live session.
pub(crate) async fn upgrade(
    State(state): State<AppState>,
    AuthorizedSpace(space): AuthorizedSpace,
    query: CursorQuery,
    ClientAddress(address): ClientAddress,
    upgrade: Result<WebSocketUpgrade, WebSocketUpgradeRejection>,
) -> Result<Response, ApiError> {
    let upgrade = upgrade.map_err(|rejection| {
        ApiError::new(
            ErrorCode::Malformed,
            format!("expected a WebSocket upgrade: {rejection}"),
        )
    })?;
    if state.shutdown().is_cancelled() {
        return Err(ApiError::new(
            ErrorCode::Unavailable,
            "the relay is shutting down",
        ));
    }
    let slot = state
        .space_connections()
        .try_acquire(&space)
        .ok_or_else(|| {
            ApiError::new(
                ErrorCode::TooManyConnections,
                "too many live connections for this space",
            )
        })?;
    let address_slot = match address {
        Some(key) => Some(
            state
                .address_connections()
                .try_acquire(&key)
                .ok_or_else(|| {
                    ApiError::new(
                        ErrorCode::TooManyConnections,
                        "too many live connections from this address",
                    )
                })?,
        ),
        None => None,
    };
    if let Some(device) = query.device {
        drop(state.note_seen(space, device, address));
    }
    let task = state.tasks().token();
    let limits = &state.config().limits;
    let buffers = state.config().ws;
    let max_message = limits.max_ws_message_bytes;
    let session = session::Session::new(
        state.clone(),
        space,
        query.device,
        query.after,
        (slot, address_slot),
        address,
        task,
    )
    .with_rollups(query.rollups);
    Ok(upgrade
        .read_buffer_size(buffers.read_buffer_bytes)
        .write_buffer_size(buffers.write_buffer_bytes)
        .max_write_buffer_size(buffers.write_buffer_bytes + 2 * max_message)
        .max_message_size(max_message)
        .max_frame_size(max_message)
        .on_upgrade(move |socket| session.run(socket)))
}
