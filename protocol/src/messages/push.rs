//! [`Push`]: a device hands the relay one sealed chunk.

use std::fmt;

use super::frame;
use crate::{
    DecodeError, DeviceId, Limits,
    codec::{self, Reader},
    varint,
};

/// One chunk pushed by a device. The relay stores it once per `(device_id, device_seq)`.
#[derive(Clone, PartialEq, Eq)]
pub struct Push {
    /// The pushing device.
    pub device_id: DeviceId,
    /// The device's own counter for its chunks, starting at 1.
    pub device_seq: u64,
    /// Opaque sealed bytes (nonce and ciphertext); the relay never looks inside.
    pub payload: Vec<u8>,
}

impl Push {
    pub(crate) fn encode_body(&self, out: &mut Vec<u8>) {
        out.extend_from_slice(self.device_id.as_bytes());
        varint::write(out, self.device_seq);
        codec::write_bytes(out, &self.payload);
    }

    pub(crate) fn body_len(&self) -> usize {
        DeviceId::LEN + varint::len(self.device_seq) + codec::bytes_len(&self.payload)
    }

    pub(crate) fn decode_body(
        reader: &mut Reader<'_>,
        limits: &Limits,
    ) -> Result<Self, DecodeError> {
        Ok(Push {
            device_id: DeviceId(reader.array()?),
            device_seq: reader.seq("device_seq")?,
            payload: reader.bytes("payload", limits.max_chunk_bytes)?.to_vec(),
        })
    }
}

frame!(Push, crate::Kind::Push);

impl fmt::Debug for Push {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Push")
            .field("device_id", &self.device_id)
            .field("device_seq", &self.device_seq)
            .field("payload_len", &self.payload.len())
            .finish()
    }
}
