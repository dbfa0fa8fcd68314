//! Mend's wire protocol: the messages a device and the relay exchange, and their codec.
//!
//! The relay is a blind store-and-forward log, so everything here is deliberately ignorant of
//! Automerge, keys and plaintext: a chunk's payload is opaque bytes (nonce + ciphertext). Devices
//! and the relay share this crate so the two sides cannot drift apart, and so a client can be
//! written without pulling in a web framework.
//!
//! Every frame starts with a version byte ([`PROTOCOL_VERSION`]) and a kind byte, followed by a
//! compact body of LEB128 varints, fixed-size ids and length-prefixed byte strings. Decoders take
//! explicit [`Limits`] and check every untrusted length against both the limit and the remaining
//! input before allocating, so a hostile peer cannot make the other side allocate more than it
//! agreed to accept. The encoding is canonical: a frame that decodes re-encodes to the same bytes.
//!
//! `docs/protocol.md` in the repository is the normative description; this crate implements it.

mod any;
mod codec;
mod error;
mod error_code;
mod ids;
mod kind;
mod limits;
mod mark;
mod messages;
pub mod paths;
mod token;
pub mod varint;

pub use any::AnyMessage;
pub use error::DecodeError;
pub use error_code::{ErrorCode, close_code};
pub use ids::{DeviceId, IdParseError, SpaceId};
pub use kind::Kind;
pub use limits::{
    DEFAULT_MAX_CHUNK_BYTES, DEFAULT_MAX_PAGE_BYTES, DEFAULT_MAX_SNAPSHOT_BYTES,
    DEFAULT_PAGE_LIMIT, Limits, MAX_PAGE_LIMIT, MAX_PUSH_OVERHEAD, MAX_TEXT_BYTES,
};
pub use mark::{MARK_LEN, Mark, chunk_mark, payload_sha256};
pub use messages::{
    Ack, Chunk, ClientMessage, DeviceList, DeviceSeen, LAST_SEEN_GRAIN_SECS, MAX_LISTED_DEVICES,
    MAX_MAILBOX_LEN, MAX_PAIRING_MESSAGE, MAX_PAIRING_MESSAGES, Nack, PAIRING_TOKEN_LEN, Page,
    PairingInbox, PairingMessage, PairingOpen, PairingPost, PairingState, PairingTicket, Push,
    Rollup, RollupPush, ServerMessage, Sizes, Snapshot, Successor, UpToDate,
};
pub use token::{AUTH_SCHEME, MAX_TOKEN_LEN, MIN_TOKEN_LEN, Token, TokenError};

/// The protocol version this crate speaks. It is the first byte of every frame.
pub const PROTOCOL_VERSION: u8 = 1;
