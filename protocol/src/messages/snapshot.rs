//! [`Snapshot`]: the one sealed snapshot a space may hold.

use std::fmt;

use super::frame;
use crate::{
    DecodeError, Limits,
    codec::{self, Reader},
    varint,
};

/// A sealed snapshot of the space's document that makes every chunk up to `covers` redundant.
#[derive(Clone, PartialEq, Eq)]
pub struct Snapshot {
    /// The highest relay sequence the snapshot includes. The relay prunes chunks at or below it.
    pub covers: u64,
    /// Opaque sealed bytes.
    pub payload: Vec<u8>,
}

impl Snapshot {
    pub(crate) fn encode_body(&self, out: &mut Vec<u8>) {
        varint::write(out, self.covers);
        codec::write_bytes(out, &self.payload);
    }

    pub(crate) fn body_len(&self) -> usize {
        varint::len(self.covers) + codec::bytes_len(&self.payload)
    }

    pub(crate) fn decode_body(
        reader: &mut Reader<'_>,
        limits: &Limits,
    ) -> Result<Self, DecodeError> {
        Ok(Snapshot {
            covers: reader.varint()?,
            payload: reader.bytes("payload", limits.max_snapshot_bytes)?.to_vec(),
        })
    }
}

frame!(Snapshot, crate::Kind::Snapshot);

impl fmt::Debug for Snapshot {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Snapshot")
            .field("covers", &self.covers)
            .field("payload_len", &self.payload.len())
            .finish()
    }
}
