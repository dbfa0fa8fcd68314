//! [`DeviceList`]: when the relay last served each device of a space.

use super::frame;
use crate::{DecodeError, DeviceId, Limits, codec::Reader, varint};

/// Most devices a relay lists for one space (and keeps a time for).
pub const MAX_LISTED_DEVICES: usize = 64;
/// The grain of a last-seen time, in seconds: the relay keeps no finer timing.
pub const LAST_SEEN_GRAIN_SECS: u64 = 3600;

/// One device in a [`DeviceList`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct DeviceSeen {
    /// The device id it pushed or pulled under.
    pub device_id: DeviceId,
    /// When the relay last served it (unix seconds, rounded down to
    /// [`LAST_SEEN_GRAIN_SECS`]).
    pub last_seen: u64,
}

/// Relay → device over HTTP (`GET /v1/spaces/{id}/devices`): when the relay last served
/// each device of the space, device ids strictly increasing, at most [`MAX_LISTED_DEVICES`].
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct DeviceList {
    /// The devices, in increasing id order.
    pub devices: Vec<DeviceSeen>,
}

impl DeviceList {
    pub(crate) fn encode_body(&self, out: &mut Vec<u8>) {
        varint::write(out, self.devices.len() as u64);
        for d in &self.devices {
            out.extend_from_slice(d.device_id.as_bytes());
            varint::write(out, d.last_seen);
        }
    }

    pub(crate) fn body_len(&self) -> usize {
        varint::len(self.devices.len() as u64)
            + self
                .devices
                .iter()
                .map(|d| 16 + varint::len(d.last_seen))
                .sum::<usize>()
    }

    pub(crate) fn decode_body(reader: &mut Reader<'_>, _: &Limits) -> Result<Self, DecodeError> {
        let count = reader.varint()?;
        // Each device takes at least 17 bytes (its id and a one-byte time).
        let limit = MAX_LISTED_DEVICES.min(reader.remaining() / 17);
        if count > limit as u64 {
            return Err(DecodeError::TooLarge {
                field: "device count",
                len: count,
                limit,
            });
        }
        let mut devices: Vec<DeviceSeen> = Vec::with_capacity(limit.min(count as usize));
        for _ in 0..count {
            let device_id = DeviceId(reader.array()?);
            if devices
                .last()
                .is_some_and(|last| last.device_id >= device_id)
            {
                return Err(DecodeError::Invalid {
                    field: "device id",
                    reason: "not strictly increasing within the list",
                });
            }
            let last_seen = reader.varint()?;
            devices.push(DeviceSeen {
                device_id,
                last_seen,
            });
        }
        Ok(DeviceList { devices })
    }
}

frame!(DeviceList, crate::Kind::DeviceList);
