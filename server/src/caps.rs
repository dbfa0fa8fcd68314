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
        let mut open = self.open.lock().unwrap_or_else(PoisonError::into_inner);
        let count = open.entry(*space).or_insert(0);
        if *count >= self.max {
            return None;
        }
        *count += 1;
        Some(ConnectionGuard {
            space: *space,
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
}
