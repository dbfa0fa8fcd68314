//! The relay's HTTP paths and query parameters, so clients build URLs the way the relay
//! routes them.
//!
//! Every space route takes `Authorization: Bearer <token>`; pairing mailbox routes take the
//! hex of a side's pairing token the same way, except opening and claiming, which take none. Request and response bodies of
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

/// Query parameter of a space `DELETE`: `reason=retired` for a space a key rotation replaced;
/// without it the space is erased. The reason is what the tombstone answers from then on.
pub const QUERY_REASON: &str = "reason";
/// The value of [`QUERY_REASON`] that retires a space.
pub const REASON_RETIRED: &str = "retired";

/// Content type of binary frame bodies.
pub const FRAME_CONTENT_TYPE: &str = "application/vnd.mend.frame";

/// What a router declares in place of the space id: `space(&SPACE_ID_PARAM)` is the route
/// pattern of the space, and so on for each path below (they take a `SpaceId` or this).
pub const SPACE_ID_PARAM: &str = "{space_id}";

/// `PUT` creates the space, `DELETE` erases it.
pub fn space(space: &impl std::fmt::Display) -> String {
    format!("{API_PREFIX}/spaces/{space}")
}

/// The path and query of a `DELETE` that retires the space instead of erasing it.
pub fn retire(space: &impl std::fmt::Display) -> String {
    format!("{}?{QUERY_REASON}={REASON_RETIRED}", self::space(space))
}

/// `PUT` offers the announcement that ends the space's epoch and answers the one the relay
/// kept ([`crate::Successor`]).
pub fn successor(space: &impl std::fmt::Display) -> String {
    format!("{API_PREFIX}/spaces/{space}/successor")
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

/// `GET` answers when the relay last served each device of the space
/// ([`crate::DeviceList`]).
pub fn devices(space: &impl std::fmt::Display) -> String {
    format!("{API_PREFIX}/spaces/{space}/devices")
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

/// Query parameter of a pairing inbox read: wait up to this many seconds (at most
/// [`MAX_PAIRING_WAIT_SECS`]) for a message when none is there yet.
pub const QUERY_WAIT: &str = "wait";
/// Query parameter of a pairing close: `burn=true` marks the mailbox burned (compromised)
/// instead of closed.
pub const QUERY_BURN: &str = "burn";
/// The longest a pairing inbox read waits, in seconds; longer `wait=` values are clamped.
pub const MAX_PAIRING_WAIT_SECS: u64 = 25;

/// What a router declares in place of the mailbox id: `pairing(&PAIRING_ID_PARAM)` is the
/// route pattern of a mailbox, and so on for each pairing path.
pub const PAIRING_ID_PARAM: &str = "{mailbox}";

/// `POST` (a [`crate::PairingOpen`]) allocates a pairing mailbox and answers the host's
/// [`crate::PairingTicket`]. No authentication.
pub fn pairings() -> String {
    format!("{API_PREFIX}/pairings")
}

/// `POST` (no body, no authentication) claims the mailbox and answers the guest's
/// [`crate::PairingTicket`]; only the first claim succeeds.
pub fn pairing_claim(mailbox: &impl std::fmt::Display) -> String {
    format!("{API_PREFIX}/pairings/{mailbox}/claim")
}

/// `POST` (a [`crate::PairingPost`]) leaves a message for the other side; `GET` reads the
/// other side's messages ([`crate::PairingInbox`]). Both take either side's token.
pub fn pairing_messages(mailbox: &impl std::fmt::Display) -> String {
    format!("{API_PREFIX}/pairings/{mailbox}/messages")
}

/// `DELETE` closes (or with `burn=true` burns) the mailbox and deletes every message.
pub fn pairing(mailbox: &impl std::fmt::Display) -> String {
    format!("{API_PREFIX}/pairings/{mailbox}")
}

/// The path and query of a pairing inbox read: messages after `after`, waiting up to `wait`
/// seconds for one.
pub fn pairing_inbox(mailbox: &impl std::fmt::Display, after: u64, wait: u64) -> String {
    format!(
        "{}?{QUERY_AFTER}={after}&{QUERY_WAIT}={wait}",
        pairing_messages(mailbox)
    )
}

/// The path and query of a pairing close.
pub fn pairing_close(mailbox: &impl std::fmt::Display, burn: bool) -> String {
    format!("{}?{QUERY_BURN}={burn}", pairing(mailbox))
}

/// Whether `mailbox` is a mailbox id the relay hands out: 1 to 6 decimal digits without a
/// leading zero, or 32 lowercase hex digits.
pub fn is_mailbox_id(mailbox: &str) -> bool {
    let bytes = mailbox.as_bytes();
    let short =
        (1..=6).contains(&bytes.len()) && bytes[0] != b'0' && bytes.iter().all(u8::is_ascii_digit);
    let long = bytes.len() == 32
        && bytes
            .iter()
            .all(|c| c.is_ascii_digit() || (b'a'..=b'f').contains(c));
    short || long
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn mailbox_ids_are_short_numbers_or_long_hex() {
        for good in ["1", "42", "999999", "0123456789abcdef0123456789abcdef"] {
            assert!(is_mailbox_id(good), "{good}");
        }
        for bad in [
            "",
            "0",
            "012",
            "1000000",
            "12a",
            "0123456789ABCDEF0123456789ABCDEF",
            "0123456789abcdef0123456789abcde",
            "-1",
        ] {
            assert!(!is_mailbox_id(bad), "{bad}");
        }
        assert_eq!(
            pairing_inbox(&"42", 3, 25),
            "/v1/pairings/42/messages?after=3&wait=25"
        );
        assert_eq!(pairing_close(&"42", true), "/v1/pairings/42?burn=true");
        assert_eq!(pairing_claim(&"42"), "/v1/pairings/42/claim");
    }
}
