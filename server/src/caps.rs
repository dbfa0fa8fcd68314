//! Per-space caps on open live connections.
//!
//! A couple has a handful of devices; a space with dozens of sockets open is a bug or an abuse,
//! and capping it per space keeps one space from eating the relay's connection budget.

use std::{
    collections::HashMap,
    sync::{Arc, Mutex, PoisonError},
};

use mend_protocol::SpaceId;

/// Counts open live connections per space.
#[derive(Debug)]
pub struct SpaceConnections {
    max: usize,
    open: Arc<Mutex<HashMap<SpaceId, usize>>>,
}

/// One open live connection; dropping it frees the slot.
#[derive(Debug)]
pub struct SpaceConnectionGuard {
    space: SpaceId,
    open: Arc<Mutex<HashMap<SpaceId, usize>>>,
}

impl SpaceConnections {
    /// At most `max` connections per space.
    pub fn new(max: usize) -> SpaceConnections {
        SpaceConnections {
            max,
            open: Arc::default(),
        }
    }

    /// Takes a slot for `space`, or `None` if the space is at its cap.
    pub fn try_acquire(&self, space: &SpaceId) -> Option<SpaceConnectionGuard> {
        let mut open = self.open.lock().unwrap_or_else(PoisonError::into_inner);
        let count = open.entry(*space).or_insert(0);
        if *count >= self.max {
            return None;
        }
        *count += 1;
        Some(SpaceConnectionGuard {
            space: *space,
            open: self.open.clone(),
        })
    }
}

impl Drop for SpaceConnectionGuard {
    fn drop(&mut self) {
        let mut open = self.open.lock().unwrap_or_else(PoisonError::into_inner);
        if let Some(count) = open.get_mut(&self.space) {
            *count -= 1;
            if *count == 0 {
                open.remove(&self.space);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn caps_per_space_and_frees_on_drop() {
        let caps = SpaceConnections::new(2);
        let (a, b) = (SpaceId([1; 32]), SpaceId([2; 32]));
        let first = caps.try_acquire(&a);
        let second = caps.try_acquire(&a);
        assert!(first.is_some() && second.is_some());
        assert!(caps.try_acquire(&a).is_none());
        assert!(caps.try_acquire(&b).is_some());
        drop(first);
        assert!(caps.try_acquire(&a).is_some());
    }
}
