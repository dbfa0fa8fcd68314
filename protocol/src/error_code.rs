//! The error vocabulary shared by HTTP answers, `Nack` frames and WebSocket close codes.
//!
//! One list of codes means a client handles "quota exceeded" the same way whether it pushed over
//! HTTP or over the live socket. Each code has a stable snake_case name (the `error` field of an
//! HTTP error body), a stable byte (in a [`crate::Nack`]), an HTTP status, and, where the error
//! ends a live connection, a WebSocket close code.

/// An error the relay reports to a device.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ErrorCode {
    /// The request is malformed (bad id, bad query, undecodable frame).
    Malformed,
    /// The frame's protocol version is not supported.
    UnsupportedVersion,
    /// No valid bearer token, or not the space's token.
    Unauthorized,
    /// The space does not exist (never created, or erased before tombstones were kept).
    SpaceNotFound,
    /// The space exists with a different token.
    SpaceExists,
    /// A chunk payload exceeds the relay's chunk limit.
    ChunkTooLarge,
    /// A snapshot payload exceeds the relay's snapshot limit.
    SnapshotTooLarge,
    /// Storing this would take the space over its quota.
    QuotaExceeded,
    /// Too many requests for this space; retry after the indicated delay.
    RateLimited,
    /// Too many connections (for this space, or for the whole relay).
    TooManyConnections,
    /// The cursor is below the snapshot: those chunks were pruned. Fetch the snapshot first.
    Pruned,
    /// The space has no snapshot.
    NoSnapshot,
    /// The uploaded snapshot covers less than the stored one.
    SnapshotStale,
    /// The uploaded snapshot claims to cover chunks the relay has not assigned yet.
    SnapshotBeyondHead,
    /// The relay is shutting down; reconnect later.
    Unavailable,
    /// The relay failed internally; retry later.
    Internal,
    /// The push reuses a (device, device sequence) already stored with a different payload:
    /// the device was rolled back or copied. It must move to a new device id and push again.
    SeqConflict,
    /// Storing this would take the whole relay over its byte limit: the relay is full, not the
    /// space. Reads, erasing and snapshots that free bytes still work; retry later.
    RelayFull,
    /// A rollup names device sequences the relay does not hold for that device in this space,
    /// or that another rollup already stands for; nothing was stored.
    RollupMismatch,
    /// No pairing mailbox has this id (never allocated, or forgotten an hour after expiry).
    PairingUnknown,
    /// The pairing mailbox was already claimed (or closed): only the first claim succeeds.
    PairingUsed,
    /// The pairing mailbox is past its expiry.
    PairingExpired,
    /// The pairing mailbox was closed or burned.
    PairingClosed,
    /// This side already posted the most messages a mailbox holds per side.
    PairingFull,
    /// The space was erased by one of its devices. It stays erased: nothing on it is served
    /// or stored again, and it cannot be created again.
    SpaceErased,
    /// The space was retired: a key rotation replaced it. Like [`ErrorCode::SpaceErased`], for
    /// good; the journal carries on in its successor.
    SpaceRetired,
    /// A code this version of the protocol does not know (sent by a newer relay). Treat it as
    /// an unspecified failure.
    Unknown(u8),
}

impl ErrorCode {
    /// Every known code, in wire order.
    pub const KNOWN: [ErrorCode; 26] = [
        ErrorCode::Malformed,
        ErrorCode::UnsupportedVersion,
        ErrorCode::Unauthorized,
        ErrorCode::SpaceNotFound,
        ErrorCode::SpaceExists,
        ErrorCode::ChunkTooLarge,
        ErrorCode::SnapshotTooLarge,
        ErrorCode::QuotaExceeded,
        ErrorCode::RateLimited,
        ErrorCode::TooManyConnections,
        ErrorCode::Pruned,
        ErrorCode::NoSnapshot,
        ErrorCode::SnapshotStale,
        ErrorCode::SnapshotBeyondHead,
        ErrorCode::Unavailable,
        ErrorCode::Internal,
        ErrorCode::SeqConflict,
        ErrorCode::RelayFull,
        ErrorCode::RollupMismatch,
        ErrorCode::PairingUnknown,
        ErrorCode::PairingUsed,
        ErrorCode::PairingExpired,
        ErrorCode::PairingClosed,
        ErrorCode::PairingFull,
        ErrorCode::SpaceErased,
        ErrorCode::SpaceRetired,
    ];

    /// The byte that stands for this code in a [`crate::Nack`].
    pub fn to_u8(self) -> u8 {
        match self {
            ErrorCode::Malformed => 1,
            ErrorCode::UnsupportedVersion => 2,
            ErrorCode::Unauthorized => 3,
            ErrorCode::SpaceNotFound => 4,
            ErrorCode::SpaceExists => 5,
            ErrorCode::ChunkTooLarge => 6,
            ErrorCode::SnapshotTooLarge => 7,
            ErrorCode::QuotaExceeded => 8,
            ErrorCode::RateLimited => 9,
            ErrorCode::TooManyConnections => 10,
            ErrorCode::Pruned => 11,
            ErrorCode::NoSnapshot => 12,
            ErrorCode::SnapshotStale => 13,
            ErrorCode::SnapshotBeyondHead => 14,
            ErrorCode::Unavailable => 15,
            ErrorCode::Internal => 16,
            ErrorCode::SeqConflict => 17,
            ErrorCode::RelayFull => 18,
            ErrorCode::RollupMismatch => 19,
            ErrorCode::PairingUnknown => 20,
            ErrorCode::PairingUsed => 21,
            ErrorCode::PairingExpired => 22,
            ErrorCode::PairingClosed => 23,
            ErrorCode::PairingFull => 24,
            ErrorCode::SpaceErased => 25,
            ErrorCode::SpaceRetired => 26,
            ErrorCode::Unknown(byte) => byte,
        }
    }

    /// The code for a byte; bytes no known code uses become [`ErrorCode::Unknown`].
    pub fn from_u8(byte: u8) -> ErrorCode {
        ErrorCode::KNOWN
            .into_iter()
            .find(|code| code.to_u8() == byte)
            .unwrap_or(ErrorCode::Unknown(byte))
    }

    /// The stable name used as the `error` field of an HTTP error body.
    pub fn name(self) -> &'static str {
        match self {
            ErrorCode::Malformed => "malformed",
            ErrorCode::UnsupportedVersion => "unsupported_version",
            ErrorCode::Unauthorized => "unauthorized",
            ErrorCode::SpaceNotFound => "space_not_found",
            ErrorCode::SpaceExists => "space_exists",
            ErrorCode::ChunkTooLarge => "chunk_too_large",
            ErrorCode::SnapshotTooLarge => "snapshot_too_large",
            ErrorCode::QuotaExceeded => "quota_exceeded",
            ErrorCode::RateLimited => "rate_limited",
            ErrorCode::TooManyConnections => "too_many_connections",
            ErrorCode::Pruned => "pruned",
            ErrorCode::NoSnapshot => "no_snapshot",
            ErrorCode::SnapshotStale => "snapshot_stale",
            ErrorCode::SnapshotBeyondHead => "snapshot_beyond_head",
            ErrorCode::Unavailable => "unavailable",
            ErrorCode::Internal => "internal",
            ErrorCode::SeqConflict => "seq_conflict",
            ErrorCode::RelayFull => "relay_full",
            ErrorCode::RollupMismatch => "rollup_mismatch",
            ErrorCode::PairingUnknown => "pairing_unknown",
            ErrorCode::PairingUsed => "pairing_used",
            ErrorCode::PairingExpired => "pairing_expired",
            ErrorCode::PairingClosed => "pairing_closed",
            ErrorCode::PairingFull => "pairing_full",
            ErrorCode::SpaceErased => "space_erased",
            ErrorCode::SpaceRetired => "space_retired",
            ErrorCode::Unknown(_) => "unknown",
        }
    }

    /// The code with this name, if it is a known one.
    pub fn from_name(name: &str) -> Option<ErrorCode> {
        ErrorCode::KNOWN
            .into_iter()
            .find(|code| code.name() == name)
    }

    /// The HTTP status the relay answers with.
    pub fn http_status(self) -> u16 {
        match self {
            ErrorCode::Malformed | ErrorCode::UnsupportedVersion => 400,
            ErrorCode::Unauthorized => 401,
            ErrorCode::SpaceNotFound | ErrorCode::NoSnapshot | ErrorCode::PairingUnknown => 404,
            ErrorCode::SpaceExists
            | ErrorCode::PairingUsed
            | ErrorCode::PairingClosed
            | ErrorCode::PairingFull
            | ErrorCode::SnapshotStale
            | ErrorCode::SnapshotBeyondHead
            | ErrorCode::SeqConflict
            | ErrorCode::RollupMismatch => 409,
            ErrorCode::Pruned
            | ErrorCode::PairingExpired
            | ErrorCode::SpaceErased
            | ErrorCode::SpaceRetired => 410,
            ErrorCode::ChunkTooLarge | ErrorCode::SnapshotTooLarge => 413,
            ErrorCode::RateLimited | ErrorCode::TooManyConnections => 429,
            ErrorCode::Internal | ErrorCode::Unknown(_) => 500,
            ErrorCode::Unavailable => 503,
            ErrorCode::QuotaExceeded | ErrorCode::RelayFull => 507,
        }
    }
}

/// WebSocket close codes the relay uses when it ends a live connection.
///
/// Standard codes (RFC 6455 §7.4.1) where one fits; the 4000–4999 private range otherwise.
pub mod close_code {
    /// The client closed, or the relay finished a normal close.
    pub const NORMAL: u16 = 1000;
    /// The relay is shutting down; reconnect (elsewhere or later).
    pub const GOING_AWAY: u16 = 1001;
    /// A binary frame did not decode as a client message.
    pub const MALFORMED: u16 = 1002;
    /// A text frame arrived; the protocol is binary only.
    pub const TEXT_NOT_ACCEPTED: u16 = 1003;
    /// A message exceeded the relay's WebSocket message limit.
    pub const MESSAGE_TOO_BIG: u16 = 1009;
    /// The relay failed internally.
    pub const INTERNAL: u16 = 1011;
    /// The frame's protocol version is not supported.
    pub const UNSUPPORTED_VERSION: u16 = 4001;
    /// The space does not exist any more (erased while connected).
    pub const SPACE_NOT_FOUND: u16 = 4004;
    /// Nothing arrived from the client within the idle timeout.
    pub const IDLE_TIMEOUT: u16 = 4008;
    /// The cursor is below the snapshot; fetch the snapshot, then reconnect after its `covers`.
    pub const PRUNED: u16 = 4010;
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bytes_and_names_are_unique_and_round_trip() {
        for code in ErrorCode::KNOWN {
            assert_eq!(ErrorCode::from_u8(code.to_u8()), code);
            assert_eq!(ErrorCode::from_name(code.name()), Some(code));
        }
        let mut bytes: Vec<u8> = ErrorCode::KNOWN.iter().map(|c| c.to_u8()).collect();
        bytes.sort_unstable();
        bytes.dedup();
        assert_eq!(bytes.len(), ErrorCode::KNOWN.len());
        assert_eq!(ErrorCode::from_u8(200), ErrorCode::Unknown(200));
        assert_eq!(ErrorCode::from_u8(0), ErrorCode::Unknown(0));
    }
}
