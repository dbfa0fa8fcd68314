//! Rollups: one sealed batch standing for a run of a device's own chunks, and what a device far
//! behind asks before it chooses between the snapshot and the tail.
//!
//! A device re-seals a run of its acknowledged chunks (device sequences `first_seq..=last_seq`)
//! as one payload ([`RollupPush`]); the relay checks that it holds exactly those chunks and
//! serves the rollup in their place ([`Rollup`]) to a device whose cursor is before the first of
//! them. The relay never opens it: the device binds the space, the device and the range into the
//! payload's associated data.

use std::fmt;

use super::frame;
use crate::{
    DecodeError, DeviceId, Limits,
    codec::{self, Reader},
    varint,
};

/// Device → relay (`POST …/rollups`): a run of this device's stored chunks, sealed again as one.
#[derive(Clone, PartialEq, Eq)]
pub struct RollupPush {
    /// The device whose chunks it stands for (the pushing device).
    pub device_id: DeviceId,
    /// The first device sequence it stands for.
    pub first_seq: u64,
    /// The last device sequence it stands for (`≥ first_seq`).
    pub last_seq: u64,
    /// Opaque sealed bytes, at most the relay's chunk limit.
    pub payload: Vec<u8>,
}

impl RollupPush {
    pub(crate) fn encode_body(&self, out: &mut Vec<u8>) {
        out.extend_from_slice(self.device_id.as_bytes());
        varint::write(out, self.first_seq);
        varint::write(out, self.last_seq);
        codec::write_bytes(out, &self.payload);
    }

    pub(crate) fn body_len(&self) -> usize {
        DeviceId::LEN
            + varint::len(self.first_seq)
            + varint::len(self.last_seq)
            + codec::bytes_len(&self.payload)
    }

    pub(crate) fn decode_body(
        reader: &mut Reader<'_>,
        limits: &Limits,
    ) -> Result<Self, DecodeError> {
        let device_id = DeviceId(reader.array()?);
        let first_seq = reader.seq("first_seq")?;
        let last_seq = reader.seq("last_seq")?;
        if last_seq < first_seq {
            return Err(DecodeError::Invalid {
                field: "last_seq",
                reason: "below first_seq",
            });
        }
        Ok(RollupPush {
            device_id,
            first_seq,
            last_seq,
            payload: reader.bytes("payload", limits.max_chunk_bytes)?.to_vec(),
        })
    }
}

frame!(RollupPush, crate::Kind::RollupPush);

impl fmt::Debug for RollupPush {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RollupPush")
            .field("device_id", &self.device_id)
            .field("first_seq", &self.first_seq)
            .field("last_seq", &self.last_seq)
            .field("payload_len", &self.payload.len())
            .finish()
    }
}

/// Relay → device (in a [`crate::Page`], or live): a rollup served in place of the chunks it
/// stands for. It takes the place of the first of them in the log: chunks of other devices
/// stored between `relay_seq` and `last_relay_seq` follow it.
#[derive(Clone, PartialEq, Eq)]
pub struct Rollup {
    /// The relay sequence of the first chunk it stands for: its place in the log.
    pub relay_seq: u64,
    /// The relay sequence of the last chunk it stands for (`≥ relay_seq`).
    pub last_relay_seq: u64,
    /// The device whose chunks it stands for.
    pub device_id: DeviceId,
    /// The first device sequence it stands for.
    pub first_seq: u64,
    /// The last device sequence it stands for.
    pub last_seq: u64,
    /// The sealed bytes, exactly as pushed.
    pub payload: Vec<u8>,
}

impl Rollup {
    /// The fewest bytes a rollup body can take (used to bound counts before allocating).
    pub(crate) const MIN_BODY_LEN: usize = 1 + 1 + DeviceId::LEN + 1 + 1 + 1;

    pub(crate) fn encode_body(&self, out: &mut Vec<u8>) {
        varint::write(out, self.relay_seq);
        varint::write(out, self.last_relay_seq);
        out.extend_from_slice(self.device_id.as_bytes());
        varint::write(out, self.first_seq);
        varint::write(out, self.last_seq);
        codec::write_bytes(out, &self.payload);
    }

    pub(crate) fn body_len(&self) -> usize {
        varint::len(self.relay_seq)
            + varint::len(self.last_relay_seq)
            + DeviceId::LEN
            + varint::len(self.first_seq)
            + varint::len(self.last_seq)
            + codec::bytes_len(&self.payload)
    }

    pub(crate) fn decode_body(
        reader: &mut Reader<'_>,
        limits: &Limits,
    ) -> Result<Self, DecodeError> {
        let relay_seq = reader.seq("relay_seq")?;
        let last_relay_seq = reader.seq("last_relay_seq")?;
        let device_id = DeviceId(reader.array()?);
        let first_seq = reader.seq("first_seq")?;
        let last_seq = reader.seq("last_seq")?;
        if last_relay_seq < relay_seq {
            return Err(DecodeError::Invalid {
                field: "last_relay_seq",
                reason: "below relay_seq",
            });
        }
        if last_seq < first_seq {
            return Err(DecodeError::Invalid {
                field: "last_seq",
                reason: "below first_seq",
            });
        }
        Ok(Rollup {
            relay_seq,
            last_relay_seq,
            device_id,
            first_seq,
            last_seq,
            payload: reader.bytes("payload", limits.max_chunk_bytes)?.to_vec(),
        })
    }
}

frame!(Rollup, crate::Kind::Rollup);

impl fmt::Debug for Rollup {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Rollup")
            .field("relay_seq", &self.relay_seq)
            .field("last_relay_seq", &self.last_relay_seq)
            .field("device_id", &self.device_id)
            .field("first_seq", &self.first_seq)
            .field("last_seq", &self.last_seq)
            .field("payload_len", &self.payload.len())
            .finish()
    }
}

const SNAPSHOT: u8 = 0x01;
const TAIL_HELD: u8 = 0x02;

/// Relay → device (`GET …/sizes`): what catching up from a cursor would cost each way, so a
/// device far behind fetches the smaller of the snapshot and the tail.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Sizes {
    /// The space's highest relay sequence.
    pub head: u64,
    /// What the snapshot covers and its payload bytes, if the space has one.
    pub snapshot: Option<(u64, u64)>,
    /// Payload bytes of everything a pull from the cursor would serve (rollups in place of the
    /// chunks they stand for, the asking device's own withheld).
    pub tail_bytes: u64,
    /// How many chunks and rollups that is.
    pub tail_entries: u64,
    /// The whole tail is still held (nothing below the snapshot was deleted yet): a pull with
    /// `pruned=true` can serve it.
    pub tail_held: bool,
}

impl Sizes {
    pub(crate) fn encode_body(&self, out: &mut Vec<u8>) {
        varint::write(out, self.head);
        let flags =
            self.snapshot.map_or(0, |_| SNAPSHOT) | if self.tail_held { TAIL_HELD } else { 0 };
        out.push(flags);
        if let Some((covers, bytes)) = self.snapshot {
            varint::write(out, covers);
            varint::write(out, bytes);
        }
        varint::write(out, self.tail_bytes);
        varint::write(out, self.tail_entries);
    }

    pub(crate) fn body_len(&self) -> usize {
        varint::len(self.head)
            + 1
            + self
                .snapshot
                .map_or(0, |(c, b)| varint::len(c) + varint::len(b))
            + varint::len(self.tail_bytes)
            + varint::len(self.tail_entries)
    }

    pub(crate) fn decode_body(reader: &mut Reader<'_>, _: &Limits) -> Result<Self, DecodeError> {
        let head = reader.varint()?;
        let flags = reader.flags("sizes flags", SNAPSHOT | TAIL_HELD)?;
        let snapshot = if flags & SNAPSHOT != 0 {
            Some((reader.varint()?, reader.varint()?))
        } else {
            None
        };
        Ok(Sizes {
            head,
            snapshot,
            tail_bytes: reader.varint()?,
            tail_entries: reader.varint()?,
            tail_held: flags & TAIL_HELD != 0,
        })
    }
}

frame!(Sizes, crate::Kind::Sizes);
