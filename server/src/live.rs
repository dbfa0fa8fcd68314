//! Live fan-out: how a committed chunk reaches the other devices' open sockets.
//!
//! Two small traits keep fan-out separate from storage. A backend announces what it committed
//! through [`Publisher`]; live sockets listen through [`LiveFeed`]. With SQLite both are the
//! in-process [`LocalHub`]. With PostgreSQL and several relays, each relay keeps a `LocalHub`
//! for its own sockets and a listener task turns NOTIFY messages into `publish` calls carrying
//! only the new head ([`LiveEvent::Head`]); sockets read the chunks from the table.
//!
//! Events are hints, not the source of truth: a socket that sees a gap in sequence numbers, or
//! falls behind the bounded channel, re-reads the log from storage. So an event may carry the
//! chunk (cheap path) or be lost (slow path) without breaking delivery.

use std::{
    collections::HashMap,
    fmt,
    sync::{Arc, Mutex, Weak},
};

use mend_protocol::{Chunk, SpaceId};
use tokio::sync::broadcast;

/// Something that happened to a space.
#[derive(Clone)]
pub enum LiveEvent {
    /// A chunk was committed.
    Chunk(Arc<Chunk>),
    /// Chunks up to this relay sequence were committed (by another instance); read them from
    /// storage.
    Head(u64),
    /// Events may have been missed (a lost database listener): re-read from storage.
    Resync,
    /// The space was erased.
    Erased,
}

impl fmt::Debug for LiveEvent {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            LiveEvent::Chunk(chunk) => f.debug_tuple("Chunk").field(chunk).finish(),
            LiveEvent::Head(head) => f.debug_tuple("Head").field(head).finish(),
            LiveEvent::Resync => f.write_str("Resync"),
            LiveEvent::Erased => f.write_str("Erased"),
        }
    }
}

/// Where storage announces committed changes, in commit order per space.
pub trait Publisher: Send + Sync + 'static {
    /// Announces an event to every subscriber of `space` (on this relay).
    fn publish(&self, space: &SpaceId, event: LiveEvent);

    /// Tells every subscriber, of every space, that events may have been lost.
    fn resync(&self);
}

/// Where live connections subscribe to a space.
pub trait LiveFeed: Send + Sync + 'static {
    /// Subscribes to `space`. Subscribe before reading the backlog, so nothing committed in
    /// between is missed.
    fn subscribe(&self, space: &SpaceId) -> Subscription;
}

/// A subscription to one space's events.
#[derive(Debug)]
pub struct Subscription {
    receiver: Option<broadcast::Receiver<LiveEvent>>,
    space: SpaceId,
    hub: Weak<HubInner>,
}

impl Subscription {
    /// The next event. [`broadcast::error::RecvError::Lagged`] means events were missed: re-read
    /// from storage. Cancel-safe.
    pub async fn recv(&mut self) -> Result<LiveEvent, broadcast::error::RecvError> {
        match self.receiver.as_mut() {
            Some(receiver) => receiver.recv().await,
            None => Err(broadcast::error::RecvError::Closed),
        }
    }
}

impl Drop for Subscription {
    fn drop(&mut self) {
        drop(self.receiver.take());
        if let Some(hub) = self.hub.upgrade() {
            hub.forget_if_unused(&self.space);
        }
    }
}

/// The in-process hub: one bounded broadcast channel per space that has subscribers.
#[derive(Debug, Clone)]
pub struct LocalHub {
    inner: Arc<HubInner>,
}

#[derive(Debug)]
struct HubInner {
    channels: Mutex<HashMap<SpaceId, broadcast::Sender<LiveEvent>>>,
    capacity: usize,
}

impl HubInner {
    fn channels(
        &self,
    ) -> std::sync::MutexGuard<'_, HashMap<SpaceId, broadcast::Sender<LiveEvent>>> {
        // A panic while holding this lock leaves the map consistent (single inserts/removes).
        self.channels
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    fn forget_if_unused(&self, space: &SpaceId) {
        let mut channels = self.channels();
        if channels
            .get(space)
            .is_some_and(|tx| tx.receiver_count() == 0)
        {
            channels.remove(space);
        }
    }
}

impl LocalHub {
    /// A hub whose per-space channels hold `capacity` events before slow subscribers lag.
    pub fn new(capacity: usize) -> LocalHub {
        LocalHub {
            inner: Arc::new(HubInner {
                channels: Mutex::new(HashMap::new()),
                capacity: capacity.max(1),
            }),
        }
    }

    /// Spaces with at least one subscriber.
    pub fn active_spaces(&self) -> usize {
        self.inner.channels().len()
    }
}

impl Default for LocalHub {
    fn default() -> Self {
        LocalHub::new(64)
    }
}

impl Publisher for LocalHub {
    fn publish(&self, space: &SpaceId, event: LiveEvent) {
        let mut channels = self.inner.channels();
        let erased = matches!(event, LiveEvent::Erased);
        if let Some(sender) = channels.get(space) {
            // An error only means nobody listens any more.
            let _ = sender.send(event);
        }
        if erased {
            channels.remove(space);
        }
    }

    fn resync(&self) {
        for sender in self.inner.channels().values() {
            let _ = sender.send(LiveEvent::Resync);
        }
    }
}

impl LiveFeed for LocalHub {
    fn subscribe(&self, space: &SpaceId) -> Subscription {
        let mut channels = self.inner.channels();
        let sender = channels
            .entry(*space)
            .or_insert_with(|| broadcast::channel(self.inner.capacity).0);
        Subscription {
            receiver: Some(sender.subscribe()),
            space: *space,
            hub: Arc::downgrade(&self.inner),
        }
    }
}

#[cfg(test)]
mod tests {
    use mend_protocol::DeviceId;

    use super::*;

    fn chunk(relay_seq: u64) -> LiveEvent {
        LiveEvent::Chunk(Arc::new(Chunk {
            relay_seq,
            device_id: DeviceId([1; 16]),
            device_seq: relay_seq,
            payload: vec![],
        }))
    }

    #[tokio::test]
    async fn delivers_to_subscribers_and_forgets_unused_spaces() {
        let hub = LocalHub::new(8);
        let space = SpaceId([3; 32]);
        let mut sub = hub.subscribe(&space);
        hub.publish(&space, chunk(1));
        hub.publish(&SpaceId([4; 32]), chunk(9));
        match sub.recv().await {
            Ok(LiveEvent::Chunk(c)) => assert_eq!(c.relay_seq, 1),
            other => panic!("unexpected {other:?}"),
        }
        assert_eq!(hub.active_spaces(), 1);
        hub.resync();
        assert!(matches!(sub.recv().await, Ok(LiveEvent::Resync)));
        drop(sub);
        assert_eq!(hub.active_spaces(), 0);
    }

    #[tokio::test]
    async fn slow_subscribers_lag_instead_of_growing() {
        let hub = LocalHub::new(2);
        let space = SpaceId([3; 32]);
        let mut sub = hub.subscribe(&space);
        for seq in 1..=5 {
            hub.publish(&space, chunk(seq));
        }
        assert!(matches!(
            sub.recv().await,
            Err(broadcast::error::RecvError::Lagged(_))
        ));
    }
}
