//! [`Ack`] and [`Nack`]: the relay's answer to a push.

use super::frame;
use crate::{
    DecodeError, ErrorCode, Limits, MAX_TEXT_BYTES,
    codec::{self, Reader},
    varint,
};

const DUPLICATE: u8 = 0x01;

/// A push is durable: it was committed before this was sent.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Ack {
    /// The `device_seq` of the push this answers.
    pub device_seq: u64,
    /// The relay sequence the chunk was stored under.
    pub relay_seq: u64,
    /// The chunk had been stored before (a replay); nothing new was stored and `relay_seq` is
    /// the original one.
    pub duplicate: bool,
}

impl Ack {
    pub(crate) fn encode_body(&self, out: &mut Vec<u8>) {
        varint::write(out, self.device_seq);
        varint::write(out, self.relay_seq);
        out.push(if self.duplicate { DUPLICATE } else { 0 });
    }

    pub(crate) fn body_len(&self) -> usize {
        varint::len(self.device_seq) + varint::len(self.relay_seq) + 1
    }

    pub(crate) fn decode_body(reader: &mut Reader<'_>, _: &Limits) -> Result<Self, DecodeError> {
        Ok(Ack {
            device_seq: reader.seq("device_seq")?,
            relay_seq: reader.seq("relay_seq")?,
            duplicate: reader.flags("ack flags", DUPLICATE)? == DUPLICATE,
        })
    }
}

frame!(Ack, crate::Kind::Ack);

/// A push was refused. Over the WebSocket the connection stays open; the device may retry
/// after `retry_after_ms` (when non-zero) or give up, depending on `code`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Nack {
    /// The `device_seq` of the push this answers.
    pub device_seq: u64,
    /// Why the push was refused.
    pub code: ErrorCode,
    /// How long to wait before retrying, in milliseconds; 0 when not applicable.
    pub retry_after_ms: u64,
    /// A short human-readable explanation (at most [`MAX_TEXT_BYTES`]); never holds payload.
    pub message: String,
}

impl Nack {
    pub(crate) fn encode_body(&self, out: &mut Vec<u8>) {
        varint::write(out, self.device_seq);
        out.push(self.code.to_u8());
        varint::write(out, self.retry_after_ms);
        codec::write_bytes(out, self.message.as_bytes());
    }

    pub(crate) fn body_len(&self) -> usize {
        varint::len(self.device_seq)
            + 1
            + varint::len(self.retry_after_ms)
            + codec::bytes_len(self.message.as_bytes())
    }

    pub(crate) fn decode_body(reader: &mut Reader<'_>, _: &Limits) -> Result<Self, DecodeError> {
        let device_seq = reader.seq("device_seq")?;
        let code = ErrorCode::from_u8(reader.u8()?);
        let retry_after_ms = reader.varint()?;
        let text = reader.bytes("message", MAX_TEXT_BYTES)?;
        let message = std::str::from_utf8(text)
            .map_err(|_| DecodeError::Invalid {
                field: "message",
                reason: "not UTF-8",
            })?
            .to_owned();
        Ok(Nack {
            device_seq,
            code,
            retry_after_ms,
            message,
        })
    }
}

frame!(Nack, crate::Kind::Nack);
