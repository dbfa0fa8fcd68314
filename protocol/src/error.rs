//! Why a frame failed to decode.
//!
//! The variants name the problem without echoing input bytes, so a decode error can be logged or
//! sent back to a peer without leaking any payload.

use crate::Kind;

/// A frame that could not be decoded.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum DecodeError {
    /// The frame has no bytes at all.
    #[error("empty frame")]
    Empty,
    /// The frame's version byte is not [`crate::PROTOCOL_VERSION`].
    #[error("unsupported protocol version {0}")]
    UnsupportedVersion(u8),
    /// The kind byte names no known message.
    #[error("unknown message kind {0:#04x}")]
    UnknownKind(u8),
    /// The frame is a valid kind, but not one this decoder accepts here.
    #[error("unexpected message kind {found:?}, expected {expected}")]
    UnexpectedKind {
        /// What the caller asked for.
        expected: &'static str,
        /// What the frame holds.
        found: Kind,
    },
    /// The frame ends in the middle of a field.
    #[error("frame ends early")]
    Truncated,
    /// Bytes remain after the last field.
    #[error("{0} unexpected bytes after the message")]
    TrailingBytes(usize),
    /// A varint is longer than ten bytes, overflows 64 bits, or is not minimally encoded.
    #[error("malformed varint")]
    BadVarint,
    /// A length exceeds the limit the decoder was given.
    #[error("{field} is {len} bytes or items, above the limit of {limit}")]
    TooLarge {
        /// Which field.
        field: &'static str,
        /// The length the frame claims.
        len: u64,
        /// The limit in force.
        limit: usize,
    },
    /// A field holds a value the protocol forbids (for example a sequence number of zero).
    #[error("invalid {field}: {reason}")]
    Invalid {
        /// Which field.
        field: &'static str,
        /// What is wrong with it.
        reason: &'static str,
    },
}
