//! The messages, one file per family, and the enums that group them by direction.
//!
//! Over the live WebSocket a device sends [`ClientMessage`]s and the relay sends
//! [`ServerMessage`]s. Over HTTP the bodies are single frames: a [`Push`] up and an [`Ack`] down,
//! a [`Page`] for a pull, a [`Snapshot`] either way. The pairing mailbox frames and the
//! [`DeviceList`] and [`Successor`] travel over HTTP only, so they are in neither enum.

mod ack;
mod chunk;
mod devices;
mod page;
mod pairing;
mod push;
mod rollup;
mod snapshot;
mod successor;

pub use ack::{Ack, Nack};
pub use chunk::{Chunk, UpToDate};
pub use devices::{DeviceList, DeviceSeen, LAST_SEEN_GRAIN_SECS, MAX_LISTED_DEVICES};
pub use page::Page;
pub use pairing::{
    MAX_MAILBOX_LEN, MAX_PAIRING_MESSAGE, MAX_PAIRING_MESSAGES, PAIRING_TOKEN_LEN, PairingInbox,
    PairingMessage, PairingOpen, PairingPost, PairingState, PairingTicket,
};
pub use push::Push;
pub use rollup::{Rollup, RollupPush, Sizes};
pub use snapshot::Snapshot;
pub use successor::Successor;

use crate::{DecodeError, Kind, Limits, codec};

/// Implements the whole-frame methods (`KIND`, `encode`, `to_bytes`, `decode`) on a message that
/// has `encode_body`, `body_len` and `decode_body`.
macro_rules! frame {
    ($ty:ident, $kind:expr) => {
        impl $ty {
            /// The kind byte of this message.
            pub const KIND: $crate::Kind = $kind;

            /// Appends the whole frame (version, kind, body) to `out`.
            pub fn encode(&self, out: &mut Vec<u8>) {
                $crate::codec::write_header(out, Self::KIND);
                self.encode_body(out);
            }

            /// The whole frame as a new vector of exactly its encoded size.
            pub fn to_bytes(&self) -> Vec<u8> {
                let mut out = Vec::with_capacity(2 + self.body_len());
                self.encode(&mut out);
                out
            }

            /// Decodes a whole frame of this kind, enforcing `limits`.
            pub fn decode(
                input: &[u8],
                limits: &$crate::Limits,
            ) -> Result<Self, $crate::DecodeError> {
                let (kind, mut reader) = $crate::codec::read_header(input)?;
                if kind != Self::KIND {
                    return Err($crate::DecodeError::UnexpectedKind {
                        expected: stringify!($ty),
                        found: kind,
                    });
                }
                let message = Self::decode_body(&mut reader, limits)?;
                reader.finish()?;
                Ok(message)
            }
        }
    };
}
pub(crate) use frame;

/// What a device sends over the live WebSocket.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ClientMessage {
    /// Store a chunk; the relay answers with an [`Ack`] or a [`Nack`].
    Push(Push),
}

impl ClientMessage {
    /// The whole frame as bytes.
    pub fn to_bytes(&self) -> Vec<u8> {
        match self {
            ClientMessage::Push(push) => push.to_bytes(),
        }
    }

    /// Decodes a frame a device may send, enforcing `limits`.
    pub fn decode(input: &[u8], limits: &Limits) -> Result<Self, DecodeError> {
        let (kind, mut reader) = codec::read_header(input)?;
        let message = match kind {
            Kind::Push => ClientMessage::Push(Push::decode_body(&mut reader, limits)?),
            found => {
                return Err(DecodeError::UnexpectedKind {
                    expected: "a client message",
                    found,
                });
            }
        };
        reader.finish()?;
        Ok(message)
    }
}

/// What the relay sends over the live WebSocket.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ServerMessage {
    /// A push is durable.
    Ack(Ack),
    /// A push was refused; the connection stays open.
    Nack(Nack),
    /// A stored chunk, from the backlog or live.
    Chunk(Chunk),
    /// The backlog has been sent; live chunks follow.
    UpToDate(UpToDate),
    /// A rollup in place of the chunks it stands for (backlog only, to a connection that
    /// asked for rollups).
    Rollup(Rollup),
}

impl ServerMessage {
    /// The whole frame as bytes.
    pub fn to_bytes(&self) -> Vec<u8> {
        match self {
            ServerMessage::Ack(m) => m.to_bytes(),
            ServerMessage::Nack(m) => m.to_bytes(),
            ServerMessage::Chunk(m) => m.to_bytes(),
            ServerMessage::UpToDate(m) => m.to_bytes(),
            ServerMessage::Rollup(m) => m.to_bytes(),
        }
    }

    /// Decodes a frame the relay may send over the WebSocket, enforcing `limits`.
    pub fn decode(input: &[u8], limits: &Limits) -> Result<Self, DecodeError> {
        let (kind, mut reader) = codec::read_header(input)?;
        let message = match kind {
            Kind::Ack => ServerMessage::Ack(Ack::decode_body(&mut reader, limits)?),
            Kind::Nack => ServerMessage::Nack(Nack::decode_body(&mut reader, limits)?),
            Kind::Chunk => ServerMessage::Chunk(Chunk::decode_body(&mut reader, limits)?),
            Kind::UpToDate => ServerMessage::UpToDate(UpToDate::decode_body(&mut reader, limits)?),
            Kind::Rollup => ServerMessage::Rollup(Rollup::decode_body(&mut reader, limits)?),
            found => {
                return Err(DecodeError::UnexpectedKind {
                    expected: "a server message",
                    found,
                });
            }
        };
        reader.finish()?;
        Ok(message)
    }
}
