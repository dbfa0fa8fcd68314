//! The kind byte that follows the version byte in every frame.

use crate::DecodeError;

/// What a frame holds. The numeric values are part of the wire format.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[repr(u8)]
pub enum Kind {
    /// Device → relay: one chunk to store ([`crate::Push`]).
    Push = 0x01,
    /// Either direction over HTTP: the space's snapshot ([`crate::Snapshot`]).
    Snapshot = 0x02,
    /// Device → relay: a run of its chunks sealed again as one ([`crate::RollupPush`]).
    RollupPush = 0x03,
    /// Device → relay over HTTP: allocate a pairing mailbox ([`crate::PairingOpen`]).
    PairingOpen = 0x04,
    /// Device → relay over HTTP: a message into a pairing mailbox ([`crate::PairingPost`]).
    PairingPost = 0x05,
    /// Relay → device: a push is durable ([`crate::Ack`]).
    Ack = 0x10,
    /// Relay → device: a push was refused ([`crate::Nack`]).
    Nack = 0x11,
    /// Relay → device: a stored chunk ([`crate::Chunk`]).
    Chunk = 0x12,
    /// Relay → device: the backlog has been sent ([`crate::UpToDate`]).
    UpToDate = 0x13,
    /// Relay → device over HTTP: a page of chunks ([`crate::Page`]).
    Page = 0x14,
    /// Relay → device: a rollup in place of the chunks it stands for ([`crate::Rollup`]).
    Rollup = 0x15,
    /// Relay → device over HTTP: what catching up would cost ([`crate::Sizes`]).
    Sizes = 0x16,
    /// Relay → device over HTTP: a pairing mailbox and a side's token
    /// ([`crate::PairingTicket`]).
    PairingTicket = 0x17,
    /// Relay → device over HTTP: the other side's pairing messages ([`crate::PairingInbox`]).
    PairingInbox = 0x18,
    /// Relay → device over HTTP: when the relay last served each device of a space
    /// ([`crate::DeviceList`]).
    DeviceList = 0x19,
    /// Either direction over HTTP: the announcement a space's devices follow into the next
    /// epoch ([`crate::Successor`]).
    Successor = 0x1A,
}

impl Kind {
    /// Every kind, in wire order.
    pub const ALL: [Kind; 16] = [
        Kind::Push,
        Kind::Snapshot,
        Kind::RollupPush,
        Kind::PairingOpen,
        Kind::PairingPost,
        Kind::Ack,
        Kind::Nack,
        Kind::Chunk,
        Kind::UpToDate,
        Kind::Page,
        Kind::Rollup,
        Kind::Sizes,
        Kind::PairingTicket,
        Kind::PairingInbox,
        Kind::DeviceList,
        Kind::Successor,
    ];

    /// The kind's wire byte.
    pub fn to_u8(self) -> u8 {
        self as u8
    }

    /// Parses a wire byte.
    pub fn from_u8(byte: u8) -> Result<Kind, DecodeError> {
        Kind::ALL
            .into_iter()
            .find(|kind| kind.to_u8() == byte)
            .ok_or(DecodeError::UnknownKind(byte))
    }
}
