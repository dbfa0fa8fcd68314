//! [`Chunk`] and [`UpToDate`]: what a subscribed device receives.

use std::fmt;

use super::frame;
use crate::{
    DecodeError, DeviceId, Limits, MARK_LEN, Mark, chunk_mark,
    codec::{self, Reader},
    payload_sha256, varint,
};

/// A stored chunk as the relay hands it out: the push plus the relay sequence it got.
#[derive(Clone, PartialEq, Eq)]
pub struct Chunk {
    /// The relay's sequence number for this chunk in its space (from 1, strictly increasing).
    pub relay_seq: u64,
    /// The device that pushed it.
    pub device_id: DeviceId,
    /// That device's own sequence number for it.
    pub device_seq: u64,
    /// The opaque sealed bytes, exactly as pushed.
    pub payload: Vec<u8>,
}

impl Chunk {
    /// This chunk's [`Mark`] (hashes the payload).
    pub fn mark(&self) -> Mark {
        chunk_mark(
            self.relay_seq,
            &self.device_id,
            self.device_seq,
            &payload_sha256(&self.payload),
        )
    }

    /// The fewest bytes a chunk body can take (used to bound counts before allocating).
    pub(crate) const MIN_BODY_LEN: usize = 1 + DeviceId::LEN + 1 + 1;

    pub(crate) fn encode_body(&self, out: &mut Vec<u8>) {
        varint::write(out, self.relay_seq);
        out.extend_from_slice(self.device_id.as_bytes());
        varint::write(out, self.device_seq);
        codec::write_bytes(out, &self.payload);
    }

    pub(crate) fn body_len(&self) -> usize {
        varint::len(self.relay_seq)
            + DeviceId::LEN
            + varint::len(self.device_seq)
            + codec::bytes_len(&self.payload)
    }

    pub(crate) fn decode_body(
        reader: &mut Reader<'_>,
        limits: &Limits,
    ) -> Result<Self, DecodeError> {
        Ok(Chunk {
            relay_seq: reader.seq("relay_seq")?,
            device_id: DeviceId(reader.array()?),
            device_seq: reader.seq("device_seq")?,
            payload: reader.bytes("payload", limits.max_chunk_bytes)?.to_vec(),
        })
    }
}

frame!(Chunk, crate::Kind::Chunk);

impl fmt::Debug for Chunk {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Chunk")
            .field("relay_seq", &self.relay_seq)
            .field("device_id", &self.device_id)
            .field("device_seq", &self.device_seq)
            .field("payload_len", &self.payload.len())
            .finish()
    }
}

const AFTER_MARK: u8 = 0x01;
const HEAD_MARK: u8 = 0x02;

/// Sent once per live connection, after the backlog: every chunk up to `head` has been sent
/// (or withheld as the connection's own). Live chunks follow.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct UpToDate {
    /// The space's highest relay sequence when the backlog ended; a safe cursor.
    pub head: u64,
    /// The [`Mark`] of the chunk at the cursor the connection asked from (`after=`), if the
    /// relay holds one there.
    pub after_mark: Option<Mark>,
    /// The [`Mark`] of the chunk at `head`, if any.
    pub head_mark: Option<Mark>,
}

impl UpToDate {
    pub(crate) fn encode_body(&self, out: &mut Vec<u8>) {
        varint::write(out, self.head);
        let flags =
            self.after_mark.map_or(0, |_| AFTER_MARK) | self.head_mark.map_or(0, |_| HEAD_MARK);
        out.push(flags);
        for mark in [self.after_mark, self.head_mark].into_iter().flatten() {
            out.extend_from_slice(&mark);
        }
    }

    pub(crate) fn body_len(&self) -> usize {
        varint::len(self.head)
            + 1
            + MARK_LEN
                * (usize::from(self.after_mark.is_some()) + usize::from(self.head_mark.is_some()))
    }

    pub(crate) fn decode_body(reader: &mut Reader<'_>, _: &Limits) -> Result<Self, DecodeError> {
        let head = reader.varint()?;
        let flags = reader.flags("up_to_date flags", AFTER_MARK | HEAD_MARK)?;
        let after_mark = if flags & AFTER_MARK != 0 {
            Some(reader.array()?)
        } else {
            None
        };
        let head_mark = if flags & HEAD_MARK != 0 {
            Some(reader.array()?)
        } else {
            None
        };
        Ok(UpToDate {
            head,
            after_mark,
            head_mark,
        })
    }
}

frame!(UpToDate, crate::Kind::UpToDate);
