//! When the relay last served each device: noted on a push, a pull or a live connection that
//! names the device, written to storage at most once an hour per device (the grain storage
//! keeps), so the push path does not pay for it.

use std::{
    collections::HashMap,
    sync::{Mutex, PoisonError},
};

use mend_protocol::{DeviceId, SpaceId};

use crate::storage::last_seen_hour;

/// Devices remembered before the table starts over (a write per device, at worst, follows).
const REMEMBERED: usize = 1 << 16;

/// The hour each device was last written for, in memory.
#[derive(Debug, Default)]
pub struct LastSeen {
    written: Mutex<HashMap<(SpaceId, DeviceId), u64>>,
}

impl LastSeen {
    /// Whether `device` of `space`, served at `now` (unix seconds), needs a write: the first
    /// time in each hour. Remembers that it was asked.
    pub fn due(&self, space: SpaceId, device: DeviceId, now: u64) -> bool {
        let hour = last_seen_hour(now);
        let mut written = self.written.lock().unwrap_or_else(PoisonError::into_inner);
        if written.get(&(space, device)) == Some(&hour) {
            return false;
        }
        if written.len() >= REMEMBERED {
            written.clear();
        }
        written.insert((space, device), hour);
        true
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_device_is_due_once_an_hour() {
        let seen = LastSeen::default();
        let (space, a, b) = (SpaceId([1; 32]), DeviceId([1; 16]), DeviceId([2; 16]));
        let hour = 1_780_000_000 / 3600 * 3600;
        assert!(seen.due(space, a, hour + 5));
        assert!(!seen.due(space, a, hour + 3599));
        assert!(seen.due(space, b, hour + 10));
        assert!(seen.due(SpaceId([2; 32]), a, hour + 10));
        assert!(seen.due(space, a, hour + 3600));
    }
}
