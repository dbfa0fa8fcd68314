//! The relay's HTTP paths and query parameters, so clients build URLs the way the relay
//! routes them.
//!
//! Every space route takes `Authorization: Bearer <token>`. Request and response bodies of
//! chunk and snapshot routes are single binary frames; error bodies are small JSON objects
//! `{"error": "<ErrorCode name>", "message": "<text>"}`.

use crate::{DeviceId, SpaceId};

/// Prefix of every versioned route.
pub const API_PREFIX: &str = "/v1";
/// Liveness probe: 200 while the process runs.
pub const HEALTHZ: &str = "/healthz";
/// Readiness probe: 200 while the relay accepts work, 503 while it shuts down.
pub const READYZ: &str = "/readyz";
/// Prometheus metrics in text format.
pub const METRICS: &str = "/metrics";

/// Query parameter: the cursor (pull and live). Chunks with a greater relay sequence follow.
pub const QUERY_AFTER: &str = "after";
/// Query parameter: the most chunks in a page (pull only; clamped to
/// [`crate::MAX_PAGE_LIMIT`]).
pub const QUERY_LIMIT: &str = "limit";
/// Query parameter: the requesting device's id (pull and live); the relay withholds that
/// device's own chunks.
pub const QUERY_DEVICE: &str = "device";
/// Query parameter of a pull: `pruned=true` serves chunks below the snapshot while the relay
/// still holds them (within its prune grace) instead of answering `410 pruned`.
pub const QUERY_PRUNED: &str = "pruned";

/// Query parameter of a pull and a live connection: `rollups=true` lets the relay serve
/// rollups in place of the chunks they stand for.
pub const QUERY_ROLLUPS: &str = "rollups";

/// Content type of binary frame bodies.
pub const FRAME_CONTENT_TYPE: &str = "application/vnd.mend.frame";

/// What a router declares in place of the space id: `space(&SPACE_ID_PARAM)` is the route
/// pattern of the space, and so on for each path below (they take a `SpaceId` or this).
pub const SPACE_ID_PARAM: &str = "{space_id}";

/// `PUT` creates the space, `DELETE` erases it.
pub fn space(space: &impl std::fmt::Display) -> String {
    format!("{API_PREFIX}/spaces/{space}")
}

/// `POST` pushes a chunk, `GET` pulls a page.
pub fn chunks(space: &impl std::fmt::Display) -> String {
    format!("{API_PREFIX}/spaces/{space}/chunks")
}

/// `GET` (with the WebSocket upgrade) opens the live connection.
pub fn live(space: &impl std::fmt::Display) -> String {
    format!("{API_PREFIX}/spaces/{space}/live")
}

/// `PUT` stores the snapshot, `GET` fetches it.
pub fn snapshot(space: &impl std::fmt::Display) -> String {
    format!("{API_PREFIX}/spaces/{space}/snapshot")
}

/// `POST` stores a rollup of the pushing device's chunks.
pub fn rollups(space: &impl std::fmt::Display) -> String {
    format!("{API_PREFIX}/spaces/{space}/rollups")
}

/// `GET` answers what catching up from a cursor costs ([`crate::Sizes`]).
pub fn sizes(space: &impl std::fmt::Display) -> String {
    format!("{API_PREFIX}/spaces/{space}/sizes")
}

/// The path and query of a pull.
pub fn pull(
    space: &SpaceId,
    after: u64,
    limit: Option<usize>,
    device: Option<&DeviceId>,
) -> String {
    let mut url = format!("{}?{QUERY_AFTER}={after}", chunks(space));
    if let Some(limit) = limit {
        url.push_str(&format!("&{QUERY_LIMIT}={limit}"));
    }
    if let Some(device) = device {
        url.push_str(&format!("&{QUERY_DEVICE}={device}"));
    }
    url
}

/// The path and query of a sizes request.
pub fn sizes_after(space: &SpaceId, after: u64, device: Option<&DeviceId>) -> String {
    let mut url = format!("{}?{QUERY_AFTER}={after}", sizes(space));
    if let Some(device) = device {
        url.push_str(&format!("&{QUERY_DEVICE}={device}"));
    }
    url
}

/// The path and query of a live connection.
pub fn live_after(space: &SpaceId, after: u64, device: Option<&DeviceId>) -> String {
    let mut url = format!("{}?{QUERY_AFTER}={after}", live(space));
    if let Some(device) = device {
        url.push_str(&format!("&{QUERY_DEVICE}={device}"));
    }
    url
}
