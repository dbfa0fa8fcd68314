//! [`AnyMessage`]: decode a frame without knowing its kind in advance.
//!
//! Useful to tools that inspect traffic, and to the fuzz target, which checks that every frame
//! any decoder accepts re-encodes to exactly the same bytes.

use crate::{
    Ack, Chunk, DecodeError, DeviceList, Kind, Limits, Nack, Page, PairingInbox, PairingOpen,
    PairingPost, PairingTicket, Push, Rollup, RollupPush, Sizes, Snapshot, Successor, UpToDate,
    codec,
};

/// A frame of any kind.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum AnyMessage {
    /// See [`Push`].
    Push(Push),
    /// See [`Snapshot`].
    Snapshot(Snapshot),
    /// See [`Ack`].
    Ack(Ack),
    /// See [`Nack`].
    Nack(Nack),
    /// See [`Chunk`].
    Chunk(Chunk),
    /// See [`UpToDate`].
    UpToDate(UpToDate),
    /// See [`Page`].
    Page(Page),
    /// See [`RollupPush`].
    RollupPush(RollupPush),
    /// See [`Rollup`].
    Rollup(Rollup),
    /// See [`Sizes`].
    Sizes(Sizes),
    /// See [`PairingOpen`].
    PairingOpen(PairingOpen),
    /// See [`PairingPost`].
    PairingPost(PairingPost),
    /// See [`PairingTicket`].
    PairingTicket(PairingTicket),
    /// See [`PairingInbox`].
    PairingInbox(PairingInbox),
    /// See [`DeviceList`].
    DeviceList(DeviceList),
    /// See [`Successor`].
    Successor(Successor),
}

impl AnyMessage {
    /// Decodes a frame of any kind, enforcing `limits`.
    pub fn decode(input: &[u8], limits: &Limits) -> Result<Self, DecodeError> {
        let (kind, mut reader) = codec::read_header(input)?;
        let r = &mut reader;
        let message = match kind {
            Kind::Push => AnyMessage::Push(Push::decode_body(r, limits)?),
            Kind::Snapshot => AnyMessage::Snapshot(Snapshot::decode_body(r, limits)?),
            Kind::Ack => AnyMessage::Ack(Ack::decode_body(r, limits)?),
            Kind::Nack => AnyMessage::Nack(Nack::decode_body(r, limits)?),
            Kind::Chunk => AnyMessage::Chunk(Chunk::decode_body(r, limits)?),
            Kind::UpToDate => AnyMessage::UpToDate(UpToDate::decode_body(r, limits)?),
            Kind::Page => AnyMessage::Page(Page::decode_body(r, limits)?),
            Kind::RollupPush => AnyMessage::RollupPush(RollupPush::decode_body(r, limits)?),
            Kind::Rollup => AnyMessage::Rollup(Rollup::decode_body(r, limits)?),
            Kind::Sizes => AnyMessage::Sizes(Sizes::decode_body(r, limits)?),
            Kind::PairingOpen => AnyMessage::PairingOpen(PairingOpen::decode_body(r, limits)?),
            Kind::PairingPost => AnyMessage::PairingPost(PairingPost::decode_body(r, limits)?),
            Kind::PairingTicket => {
                AnyMessage::PairingTicket(PairingTicket::decode_body(r, limits)?)
            }
            Kind::PairingInbox => AnyMessage::PairingInbox(PairingInbox::decode_body(r, limits)?),
            Kind::DeviceList => AnyMessage::DeviceList(DeviceList::decode_body(r, limits)?),
            Kind::Successor => AnyMessage::Successor(Successor::decode_body(r, limits)?),
        };
        reader.finish()?;
        Ok(message)
    }

    /// The frame's kind.
    pub fn kind(&self) -> Kind {
        match self {
            AnyMessage::Push(_) => Kind::Push,
            AnyMessage::Snapshot(_) => Kind::Snapshot,
            AnyMessage::Ack(_) => Kind::Ack,
            AnyMessage::Nack(_) => Kind::Nack,
            AnyMessage::Chunk(_) => Kind::Chunk,
            AnyMessage::UpToDate(_) => Kind::UpToDate,
            AnyMessage::Page(_) => Kind::Page,
            AnyMessage::RollupPush(_) => Kind::RollupPush,
            AnyMessage::Rollup(_) => Kind::Rollup,
            AnyMessage::Sizes(_) => Kind::Sizes,
            AnyMessage::PairingOpen(_) => Kind::PairingOpen,
            AnyMessage::PairingPost(_) => Kind::PairingPost,
            AnyMessage::PairingTicket(_) => Kind::PairingTicket,
            AnyMessage::PairingInbox(_) => Kind::PairingInbox,
            AnyMessage::DeviceList(_) => Kind::DeviceList,
            AnyMessage::Successor(_) => Kind::Successor,
        }
    }

    /// The whole frame as bytes.
    pub fn to_bytes(&self) -> Vec<u8> {
        match self {
            AnyMessage::Push(m) => m.to_bytes(),
            AnyMessage::Snapshot(m) => m.to_bytes(),
            AnyMessage::Ack(m) => m.to_bytes(),
            AnyMessage::Nack(m) => m.to_bytes(),
            AnyMessage::Chunk(m) => m.to_bytes(),
            AnyMessage::UpToDate(m) => m.to_bytes(),
            AnyMessage::Page(m) => m.to_bytes(),
            AnyMessage::RollupPush(m) => m.to_bytes(),
            AnyMessage::Rollup(m) => m.to_bytes(),
            AnyMessage::Sizes(m) => m.to_bytes(),
            AnyMessage::PairingOpen(m) => m.to_bytes(),
            AnyMessage::PairingPost(m) => m.to_bytes(),
            AnyMessage::PairingTicket(m) => m.to_bytes(),
            AnyMessage::PairingInbox(m) => m.to_bytes(),
            AnyMessage::DeviceList(m) => m.to_bytes(),
            AnyMessage::Successor(m) => m.to_bytes(),
        }
    }
}
