//! [`BodyBudget`]: a cap, in bytes, on request bodies being read or held, per space, per client
//! address and for the whole relay.
//!
//! A body is buffered in memory before it is decoded and stored. Counting requests is not
//! enough: a few hundred slow bodies on one token, each declaring the chunk limit, would hold
//! gigabytes. So each body reserves its declared length (its size limit when it declares none)
//! before a byte of it is read, and keeps the reservation until its request is answered. A
//! reservation that does not fit is refused at once, never queued, so a refused client costs
//! nothing further. A push on a live socket reserves its payload the same way, from when it is
//! read until storage answers it.

use std::{
    collections::HashMap,
    fmt::Write as _,
    sync::{Arc, Mutex, PoisonError},
};

use mend_protocol::SpaceId;

/// Bytes of bodies reserved per space, per address and in all, with their limits.
#[derive(Debug)]
pub struct BodyBudget {
    per_space: u64,
    per_address: u64,
    total: u64,
    reserved: Arc<Mutex<Reserved>>,
}

#[derive(Debug, Default)]
struct Reserved {
    total: u64,
    peak: u64,
    spaces: HashMap<SpaceId, u64>,
    addresses: HashMap<[u8; 32], u64>,
}

/// Which budget a body did not fit in.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum OverBudget {
    /// The space's own bodies hold its share.
    Space,
    /// The client address's bodies hold its share.
    Address,
    /// Bodies of all spaces hold the relay's.
    Relay,
}

/// Bytes reserved for one body; dropping it gives them back.
#[derive(Debug)]
pub struct BodyReservation {
    space: SpaceId,
    address: Option<[u8; 32]>,
    bytes: u64,
    reserved: Arc<Mutex<Reserved>>,
}

impl BodyBudget {
    /// At most `per_space` bytes of bodies per space, `per_address` per client address and
    /// `total` in all.
    pub fn new(per_space: u64, per_address: u64, total: u64) -> BodyBudget {
        BodyBudget {
            per_space,
            per_address,
            total,
            reserved: Arc::default(),
        }
    }

    /// Reserves `bytes` for a body of `space` sent from `address` (none for a request that
    /// reached the router in-process), or says which budget it does not fit.
    pub fn try_reserve(
        &self,
        space: SpaceId,
        address: Option<[u8; 32]>,
        bytes: u64,
    ) -> Result<BodyReservation, OverBudget> {
        let mut reserved = self.lock();
        let held = reserved.spaces.get(&space).copied().unwrap_or(0);
        if held.saturating_add(bytes) > self.per_space {
            return Err(OverBudget::Space);
        }
        let from_address = address.map(|key| reserved.addresses.get(&key).copied().unwrap_or(0));
        if from_address.is_some_and(|from| from.saturating_add(bytes) > self.per_address) {
            return Err(OverBudget::Address);
        }
        let total = reserved.total.saturating_add(bytes);
        if total > self.total {
            return Err(OverBudget::Relay);
        }
        reserved.total = total;
        reserved.peak = reserved.peak.max(total);
        reserved.spaces.insert(space, held.saturating_add(bytes));
        if let (Some(key), Some(from)) = (address, from_address) {
            reserved.addresses.insert(key, from.saturating_add(bytes));
        }
        Ok(BodyReservation {
            space,
            address,
            bytes,
            reserved: self.reserved.clone(),
        })
    }

    /// Bytes reserved now, in all.
    pub fn reserved(&self) -> u64 {
        self.lock().total
    }

    /// The most bytes ever reserved at once, in all.
    pub fn peak(&self) -> u64 {
        self.lock().peak
    }

    /// Appends the budget's figures to the Prometheus text of `/metrics`.
    pub fn render(&self, out: &mut String) {
        let (now, peak) = {
            let reserved = self.lock();
            (reserved.total, reserved.peak)
        };
        let _ = writeln!(
            out,
            "# HELP mend_body_bytes_reserved Bytes of request bodies being read or held.\n\
             # TYPE mend_body_bytes_reserved gauge\nmend_body_bytes_reserved {now}\n\
             # HELP mend_body_bytes_peak Most bytes of request bodies reserved at once.\n\
             # TYPE mend_body_bytes_peak gauge\nmend_body_bytes_peak {peak}"
        );
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Reserved> {
        self.reserved.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

impl Drop for BodyReservation {
    fn drop(&mut self) {
        let mut reserved = self.reserved.lock().unwrap_or_else(PoisonError::into_inner);
        reserved.total = reserved.total.saturating_sub(self.bytes);
        give_back(&mut reserved.spaces, &self.space, self.bytes);
        if let Some(key) = self.address {
            give_back(&mut reserved.addresses, &key, self.bytes);
        }
    }
}

/// Takes `bytes` off `key`'s count, forgetting a key that holds nothing (the maps stay as small
/// as what is in flight).
fn give_back<K: std::hash::Hash + Eq>(counts: &mut HashMap<K, u64>, key: &K, bytes: u64) {
    if let Some(held) = counts.get_mut(key) {
        *held = held.saturating_sub(bytes);
        if *held == 0 {
            counts.remove(key);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reserves_per_space_and_in_all_and_gives_back_on_drop() {
        let budget = BodyBudget::new(100, 1000, 150);
        let (a, b) = (SpaceId([1; 32]), SpaceId([2; 32]));
        let first = budget.try_reserve(a, None, 60);
        assert!(first.is_ok());
        assert_eq!(
            budget.try_reserve(a, None, 41).err(),
            Some(OverBudget::Space)
        );
        let second = budget.try_reserve(b, None, 90);
        assert!(second.is_ok());
        assert_eq!(
            budget.try_reserve(b, None, 1).err(),
            Some(OverBudget::Relay)
        );
        assert_eq!((budget.reserved(), budget.peak()), (150, 150));
        drop(first);
        assert_eq!(budget.reserved(), 90);
        assert!(budget.try_reserve(a, None, 60).is_ok());
        assert_eq!((budget.reserved(), budget.peak()), (90, 150));
    }

    /// One address spreading bodies over many spaces stops at its own share; another address
    /// still reserves, and the share comes back when the bodies are done.
    #[test]
    fn one_address_holds_at_most_its_share_over_all_spaces() {
        let budget = BodyBudget::new(100, 150, 1000);
        let (flooder, calm) = (Some([7; 32]), Some([8; 32]));
        let held: Vec<_> = (1..=3)
            .map(|n| budget.try_reserve(SpaceId([n; 32]), flooder, 50))
            .collect();
        assert!(held.iter().all(Result::is_ok));
        assert_eq!(
            budget.try_reserve(SpaceId([4; 32]), flooder, 1).err(),
            Some(OverBudget::Address)
        );
        assert!(budget.try_reserve(SpaceId([4; 32]), calm, 100).is_ok());
        drop(held);
        assert!(budget.try_reserve(SpaceId([4; 32]), flooder, 100).is_ok());
        assert_eq!(budget.reserved(), 0);
    }
}
