//! The pairing mailbox frames: [`PairingOpen`] and [`PairingPost`] up, [`PairingTicket`] and
//! [`PairingInbox`] down.
//!
//! Two devices meet in a short-lived mailbox on the relay to pair. The relay sees only opaque
//! bodies and their sizes, so every body here is bytes the devices sealed themselves.

use std::fmt::{self, Write as _};

use super::frame;
use crate::{
    DecodeError, Limits,
    codec::{self, Reader},
    varint,
};

/// Largest body of one pairing message.
pub const MAX_PAIRING_MESSAGE: usize = 4096;
/// Most messages one side of a mailbox may post.
pub const MAX_PAIRING_MESSAGES: usize = 8;
/// Longest mailbox id in a [`PairingTicket`].
pub const MAX_MAILBOX_LEN: usize = 32;
/// Length of a pairing token.
pub const PAIRING_TOKEN_LEN: usize = 32;

const SHORT: u8 = 0x01;

/// Device → relay (`POST /v1/pairings`): allocate a mailbox.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct PairingOpen {
    /// Ask for a short decimal mailbox number a person can type (flag bit 0) instead of 32
    /// hex characters.
    pub short: bool,
}

impl PairingOpen {
    pub(crate) fn encode_body(&self, out: &mut Vec<u8>) {
        out.push(if self.short { SHORT } else { 0 });
    }

    pub(crate) fn body_len(&self) -> usize {
        1
    }

    pub(crate) fn decode_body(reader: &mut Reader<'_>, _: &Limits) -> Result<Self, DecodeError> {
        Ok(PairingOpen {
            short: reader.flags("pairing flags", SHORT)? == SHORT,
        })
    }
}

frame!(PairingOpen, crate::Kind::PairingOpen);

/// Device → relay (`POST /v1/pairings/{mailbox}/messages`): one opaque message for the other
/// side.
#[derive(Clone, PartialEq, Eq)]
pub struct PairingPost {
    /// Opaque sealed bytes, at most [`MAX_PAIRING_MESSAGE`].
    pub body: Vec<u8>,
}

impl PairingPost {
    pub(crate) fn encode_body(&self, out: &mut Vec<u8>) {
        codec::write_bytes(out, &self.body);
    }

    pub(crate) fn body_len(&self) -> usize {
        codec::bytes_len(&self.body)
    }

    pub(crate) fn decode_body(reader: &mut Reader<'_>, _: &Limits) -> Result<Self, DecodeError> {
        Ok(PairingPost {
            body: reader.bytes("body", MAX_PAIRING_MESSAGE)?.to_vec(),
        })
    }
}

frame!(PairingPost, crate::Kind::PairingPost);

impl fmt::Debug for PairingPost {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("PairingPost")
            .field("body_len", &self.body.len())
            .finish()
    }
}

/// Relay → device: a mailbox and this side's token for it (the host's from an open, the
/// guest's from a claim).
#[derive(Clone, PartialEq, Eq)]
pub struct PairingTicket {
    /// The mailbox id: a decimal number without leading zeros, or 32 lowercase hex
    /// characters. At most [`MAX_MAILBOX_LEN`] bytes.
    pub mailbox: String,
    /// The bearer secret of this side, sent as `Authorization: Bearer <64 hex digits>`.
    pub token: [u8; PAIRING_TOKEN_LEN],
    /// When the mailbox expires, in unix seconds.
    pub expires_at: u64,
}

impl PairingTicket {
    /// The `Authorization` header value for this ticket's token.
    pub fn authorization(&self) -> String {
        let mut value = String::with_capacity(7 + 2 * PAIRING_TOKEN_LEN);
        value.push_str(crate::AUTH_SCHEME);
        value.push(' ');
        for byte in self.token {
            let _ = write!(value, "{byte:02x}");
        }
        value
    }

    pub(crate) fn encode_body(&self, out: &mut Vec<u8>) {
        codec::write_bytes(out, self.mailbox.as_bytes());
        out.extend_from_slice(&self.token);
        varint::write(out, self.expires_at);
    }

    pub(crate) fn body_len(&self) -> usize {
        codec::bytes_len(self.mailbox.as_bytes()) + PAIRING_TOKEN_LEN + varint::len(self.expires_at)
    }

    pub(crate) fn decode_body(reader: &mut Reader<'_>, _: &Limits) -> Result<Self, DecodeError> {
        let mailbox = reader.bytes("mailbox", MAX_MAILBOX_LEN)?;
        let mailbox = std::str::from_utf8(mailbox)
            .map_err(|_| DecodeError::Invalid {
                field: "mailbox",
                reason: "not UTF-8",
            })?
            .to_owned();
        Ok(PairingTicket {
            mailbox,
            token: reader.array()?,
            expires_at: reader.varint()?,
        })
    }
}

frame!(PairingTicket, crate::Kind::PairingTicket);

impl fmt::Debug for PairingTicket {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("PairingTicket")
            .field("mailbox", &self.mailbox)
            .field("token", &"<redacted>")
            .field("expires_at", &self.expires_at)
            .finish()
    }
}

/// Where a mailbox is in its short life. The numeric values are part of the wire format.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[repr(u8)]
pub enum PairingState {
    /// Allocated; no guest has claimed it yet.
    Open = 0,
    /// A guest claimed it; both sides may post.
    Claimed = 1,
    /// One side closed it; every body is gone.
    Closed = 2,
    /// One side closed it as compromised; every body is gone.
    Burned = 3,
    /// Past its expiry; every body is gone.
    Expired = 4,
}

impl PairingState {
    /// Every state, in wire order.
    pub const ALL: [PairingState; 5] = [
        PairingState::Open,
        PairingState::Claimed,
        PairingState::Closed,
        PairingState::Burned,
        PairingState::Expired,
    ];

    /// The state's wire byte.
    pub fn to_u8(self) -> u8 {
        self as u8
    }

    /// Parses a wire byte.
    pub fn from_u8(byte: u8) -> Option<PairingState> {
        PairingState::ALL
            .into_iter()
            .find(|state| state.to_u8() == byte)
    }

    /// Whether messages may still arrive (open or claimed).
    pub fn is_live(self) -> bool {
        matches!(self, PairingState::Open | PairingState::Claimed)
    }
}

/// One message in a [`PairingInbox`].
#[derive(Clone, PartialEq, Eq)]
pub struct PairingMessage {
    /// Its number among its sender's messages, from 1.
    pub seq: u64,
    /// Opaque sealed bytes, at most [`MAX_PAIRING_MESSAGE`].
    pub body: Vec<u8>,
}

impl fmt::Debug for PairingMessage {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("PairingMessage")
            .field("seq", &self.seq)
            .field("body_len", &self.body.len())
            .finish()
    }
}

/// Relay → device (`GET /v1/pairings/{mailbox}/messages`): the other side's messages after
/// the cursor, and the mailbox's state.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PairingInbox {
    /// The mailbox's state when it was read.
    pub state: PairingState,
    /// The other side's messages, with strictly increasing `seq`; at most
    /// [`MAX_PAIRING_MESSAGES`].
    pub messages: Vec<PairingMessage>,
}

impl PairingInbox {
    pub(crate) fn encode_body(&self, out: &mut Vec<u8>) {
        out.push(self.state.to_u8());
        varint::write(out, self.messages.len() as u64);
        for message in &self.messages {
            varint::write(out, message.seq);
            codec::write_bytes(out, &message.body);
        }
    }

    pub(crate) fn body_len(&self) -> usize {
        1 + varint::len(self.messages.len() as u64)
            + self
                .messages
                .iter()
                .map(|m| varint::len(m.seq) + codec::bytes_len(&m.body))
                .sum::<usize>()
    }

    pub(crate) fn decode_body(reader: &mut Reader<'_>, _: &Limits) -> Result<Self, DecodeError> {
        let state = PairingState::from_u8(reader.u8()?).ok_or(DecodeError::Invalid {
            field: "pairing state",
            reason: "unknown state",
        })?;
        let count = reader.varint()?;
        // Each message takes at least two bytes (a seq and an empty body's length).
        let limit = MAX_PAIRING_MESSAGES.min(reader.remaining() / 2);
        if count > limit as u64 {
            return Err(DecodeError::TooLarge {
                field: "message count",
                len: count,
                limit,
            });
        }
        let mut messages: Vec<PairingMessage> = Vec::with_capacity(limit.min(count as usize));
        for _ in 0..count {
            let seq = reader.seq("seq")?;
            if messages.last().is_some_and(|last| last.seq >= seq) {
                return Err(DecodeError::Invalid {
                    field: "seq",
                    reason: "not strictly increasing within the inbox",
                });
            }
            let body = reader.bytes("body", MAX_PAIRING_MESSAGE)?.to_vec();
            messages.push(PairingMessage { seq, body });
        }
        Ok(PairingInbox { state, messages })
    }
}

frame!(PairingInbox, crate::Kind::PairingInbox);
