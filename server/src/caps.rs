//! Caps on open live connections, per space and per client address.
//!
//! A couple has a handful of devices; a space with dozens of sockets open is a bug or an abuse,
//! and capping it per space keeps one space from eating the relay's connection budget. The cap
//! per address keeps one host from holding all of an instance's sockets. Both count on this
//! instance only: sockets are an instance's own resource, and a load balancer spreads them.

use std::{
    collections::HashMap,
    hash::Hash,
    sync::{Arc, Mutex, PoisonError},
};

use mend_protocol::SpaceId;

/// Counts open connections per key (live sockets, or TCP connections per address).
#[derive(Debug)]
pub struct Connections<K: Hash + Eq + Copy> {
    max: usize,
    open: Arc<Mutex<HashMap<K, usize>>>,
}

/// Live connections per space.
pub type SpaceConnections = Connections<SpaceId>;
/// Connections per client address, keyed as [`crate::client::client_key`] counts it (IPv6 by
/// its /64, so rotating addresses inside one's own prefix gains nothing).
pub type AddressConnections = Connections<[u8; 32]>;
/// A slot of [`AddressConnections`].
pub type AddressConnectionGuard = ConnectionGuard<[u8; 32]>;

/// One open live connection; dropping it frees the slot.
#[derive(Debug)]
pub struct ConnectionGuard<K: Hash + Eq + Copy> {
    space: K,
    open: Arc<Mutex<HashMap<K, usize>>>,
}

/// A slot of [`SpaceConnections`].
pub type SpaceConnectionGuard = ConnectionGuard<SpaceId>;

impl<K: Hash + Eq + Copy> Connections<K> {
    /// At most `max` connections per key.
    pub fn new(max: usize) -> Connections<K> {
        Connections {
            max,
            open: Arc::default(),
        }
    }

    /// Takes a slot for `space`, or `None` if it is at its cap.
    pub fn try_acquire(&self, space: &K) -> Option<ConnectionGuard<K>> {
        self.acquire_below(space, self.max)
    }

    /// Takes a slot for `key` only while it holds less than half its cap: for work that may be
    /// dropped (a last-seen note), so it never takes the slots work that may not needs.
    pub fn try_acquire_spare(&self, key: &K) -> Option<ConnectionGuard<K>> {
        self.acquire_below(key, self.max / 2)
    }

    fn acquire_below(&self, key: &K, limit: usize) -> Option<ConnectionGuard<K>> {
        let mut open = self.open.lock().unwrap_or_else(PoisonError::into_inner);
        let count = open.get(key).copied().unwrap_or(0);
        if count >= limit {
            return None;
        }
        open.insert(*key, count.saturating_add(1));
        Some(ConnectionGuard {
            space: *key,
            open: self.open.clone(),
        })
    }
}

impl<K: Hash + Eq + Copy> Drop for ConnectionGuard<K> {
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

    #[test]
    fn spare_slots_leave_half_the_cap_to_others() {
        let caps = SpaceConnections::new(4);
        let a = SpaceId([1; 32]);
        let first = caps.try_acquire_spare(&a);
        let second = caps.try_acquire_spare(&a);
        assert!(first.is_some() && second.is_some());
        assert!(caps.try_acquire_spare(&a).is_none());
        assert!(caps.try_acquire(&a).is_some() && caps.try_acquire(&a).is_some());
        assert!(SpaceConnections::new(1).try_acquire_spare(&a).is_none());
    }
}
