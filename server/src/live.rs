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
//!
//! A chunk in a space's channel stays in memory until every subscriber has received it, so one
//! that reads just fast enough to stay connected could pin the channel's every slot, each with
//! a payload of up to the chunk limit. The hub bounds the payload bytes a space's channel may
//! hold, and those of all channels together: a chunk that would go past either is announced by
//! its sequence alone ([`LiveEvent::Head`]), and subscribers read it from storage, in order,
//! as they do after a gap.

use std::{
    collections::HashMap,
    fmt,
    sync::{
        Arc, Mutex, Weak,
        atomic::{AtomicUsize, Ordering},
    },
};

use mend_protocol::{Chunk, SpaceId};
use tokio::sync::broadcast;

/// Something that happened to a space.
#[derive(Clone)]
pub enum LiveEvent {
    /// A chunk was committed.
    Chunk(Arc<Chunk>),
    /// Chunks up to this relay sequence were committed (by another instance, or by this one
    /// when the channels held all the payload bytes they may); read them from storage.
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

/// Payload bytes a space's channel may hold at once by default: four chunks of the default
/// limit. A subscriber that keeps up frees them as it receives them.
pub const RING_BUDGET: usize = 4 << 20;
/// Payload bytes all channels together may hold at once by default.
pub const HUB_BUDGET: usize = 256 << 20;

/// Payload bytes held, per channel or in all.
type Held = Arc<AtomicUsize>;

/// A chunk in a channel, counted in its channel's and the hub's bytes while the channel holds
/// it: it is dropped once every subscriber has received it, or its slot is overwritten.
#[derive(Debug)]
struct Pinned {
    chunk: Arc<Chunk>,
    counted: [Held; 2],
}

impl Drop for Pinned {
    fn drop(&mut self) {
        let bytes = self.chunk.payload.len();
        for held in &self.counted {
            held.fetch_sub(bytes, Ordering::Relaxed);
        }
    }
}

/// What a channel holds: a counted chunk, or any other (small) event.
#[derive(Debug, Clone)]
enum Slot {
    Chunk(Arc<Pinned>),
    Other(LiveEvent),
}

/// A subscription to one space's events.
#[derive(Debug)]
pub struct Subscription {
    receiver: Option<broadcast::Receiver<Slot>>,
    space: SpaceId,
    hub: Weak<HubInner>,
}

impl Subscription {
    /// The next event. [`broadcast::error::RecvError::Lagged`] means events were missed: re-read
    /// from storage. Cancel-safe.
    pub async fn recv(&mut self) -> Result<LiveEvent, broadcast::error::RecvError> {
        match self.receiver.as_mut() {
            // The chunk goes on without its count: what the channel holds is bounded, not what
            // a subscriber holds while it sends the one chunk it received.
            Some(receiver) => receiver.recv().await.map(|slot| match slot {
                Slot::Chunk(pinned) => LiveEvent::Chunk(Arc::clone(&pinned.chunk)),
                Slot::Other(event) => event,
            }),
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

/// One space's channel and the payload bytes it holds.
#[derive(Debug)]
struct Channel {
    sender: broadcast::Sender<Slot>,
    held: Held,
}

#[derive(Debug)]
struct HubInner {
    channels: Mutex<HashMap<SpaceId, Channel>>,
    capacity: usize,
    /// Payload bytes one channel may hold.
    ring_budget: usize,
    /// Payload bytes all channels may hold together, and what they hold.
    hub_budget: usize,
    held: Held,
}

impl HubInner {
    fn channels(&self) -> std::sync::MutexGuard<'_, HashMap<SpaceId, Channel>> {
        // A panic while holding this lock leaves the map consistent (single inserts/removes).
        self.channels
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    fn forget_if_unused(&self, space: &SpaceId) {
        let mut channels = self.channels();
        if channels
            .get(space)
            .is_some_and(|channel| channel.sender.receiver_count() == 0)
        {
            channels.remove(space);
        }
    }

    /// What `channel` sends for `event`: a chunk counted in its bytes if they and the hub's
    /// have room for it, its sequence alone if not. Called under the channels lock, so counts
    /// only fall between the check and the count.
    fn slot(&self, channel: &Channel, event: LiveEvent) -> Slot {
        let LiveEvent::Chunk(chunk) = event else {
            return Slot::Other(event);
        };
        let bytes = chunk.payload.len();
        let fits = |held: &Held, budget: usize| {
            held.load(Ordering::Relaxed).saturating_add(bytes) <= budget
        };
        if !(fits(&channel.held, self.ring_budget) && fits(&self.held, self.hub_budget)) {
            return Slot::Other(LiveEvent::Head(chunk.relay_seq));
        }
        let counted = [Arc::clone(&channel.held), Arc::clone(&self.held)];
        for held in &counted {
            held.fetch_add(bytes, Ordering::Relaxed);
        }
        Slot::Chunk(Arc::new(Pinned { chunk, counted }))
    }
}

impl LocalHub {
    /// A hub whose per-space channels hold `capacity` events before slow subscribers lag, and
    /// the default payload budgets ([`RING_BUDGET`], [`HUB_BUDGET`]).
    pub fn new(capacity: usize) -> LocalHub {
        LocalHub::with_budgets(capacity, RING_BUDGET, HUB_BUDGET)
    }

    /// A hub whose per-space channels hold `capacity` events and at most `ring_budget` payload
    /// bytes each, and at most `hub_budget` together.
    pub fn with_budgets(capacity: usize, ring_budget: usize, hub_budget: usize) -> LocalHub {
        LocalHub {
            inner: Arc::new(HubInner {
                channels: Mutex::new(HashMap::new()),
                capacity: capacity.max(1),
                ring_budget,
                hub_budget,
                held: Held::default(),
            }),
        }
    }

    /// Payload bytes the channels hold, all together.
    pub fn held_bytes(&self) -> usize {
        self.inner.held.load(Ordering::Relaxed)
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
        if let Some(channel) = channels.get(space) {
            // An error only means nobody listens any more (and drops the slot, uncounting it).
            let _ = channel.sender.send(self.inner.slot(channel, event));
        }
        if erased {
            channels.remove(space);
        }
    }

    fn resync(&self) {
        for channel in self.inner.channels().values() {
            let _ = channel.sender.send(Slot::Other(LiveEvent::Resync));
        }
    }
}

impl LiveFeed for LocalHub {
    fn subscribe(&self, space: &SpaceId) -> Subscription {
        let mut channels = self.inner.channels();
        let channel = channels.entry(*space).or_insert_with(|| Channel {
            sender: broadcast::channel(self.inner.capacity).0,
            held: Held::default(),
        });
        Subscription {
            receiver: Some(channel.sender.subscribe()),
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

    fn sized(relay_seq: u64, bytes: usize) -> Arc<Chunk> {
        Arc::new(Chunk {
            relay_seq,
            device_id: DeviceId([1; 16]),
            device_seq: relay_seq,
            payload: vec![relay_seq as u8; bytes],
        })
    }

    /// What a subscription receives next, as a chunk's or a head's sequence.
    async fn next_seq(sub: &mut Subscription) -> Result<u64, LiveEvent> {
        match sub.recv().await {
            Ok(LiveEvent::Chunk(chunk)) => Ok(chunk.relay_seq),
            Ok(LiveEvent::Head(head)) => Err(LiveEvent::Head(head)),
            other => panic!("unexpected {other:?}"),
        }
    }

    /// A subscriber that receives nothing while 64 chunks of 1 MiB are published (the whole
    /// ring) pins at most the ring's budget of them; the rest reach it as heads to read from
    /// storage, in the order they were published. Once it has received them, nothing is held.
    #[tokio::test]
    async fn a_stalled_subscriber_pins_at_most_the_ring_budget() {
        let hub = LocalHub::default();
        let space = SpaceId([3; 32]);
        let mut sub = hub.subscribe(&space);
        let mut published = Vec::new();
        for seq in 1..=64 {
            let chunk = sized(seq, 1 << 20);
            published.push(Arc::downgrade(&chunk));
            hub.publish(&space, LiveEvent::Chunk(chunk));
        }
        let pinned: usize = published
            .iter()
            .filter_map(Weak::upgrade)
            .map(|chunk| chunk.payload.len())
            .sum();
        assert!(pinned <= RING_BUDGET, "{} MiB pinned", pinned >> 20);
        assert_eq!(hub.held_bytes(), pinned);
        for seq in 1..=64 {
            match next_seq(&mut sub).await {
                Ok(chunk) => assert!(chunk == seq && seq <= 4, "chunk {chunk} at {seq}"),
                Err(LiveEvent::Head(head)) => assert!(head == seq && seq > 4, "head {head}"),
                Err(other) => panic!("unexpected {other:?}"),
            }
        }
        assert!(published.iter().all(|chunk| chunk.strong_count() == 0));
        assert_eq!(hub.held_bytes(), 0);
        // Received, the budget is free again: the next chunk travels whole.
        hub.publish(&space, LiveEvent::Chunk(sized(65, 1 << 20)));
        assert_eq!(next_seq(&mut sub).await.ok(), Some(65));
    }

    /// A chunk is held while any subscriber has not received it, and given back when the
    /// last one does or goes away; the hub's budget bounds all spaces together.
    #[tokio::test]
    async fn payloads_are_held_until_the_last_subscriber_and_within_the_hub_budget() {
        let hub = LocalHub::with_budgets(8, 300, 400);
        let (a, b) = (SpaceId([1; 32]), SpaceId([2; 32]));
        let mut fast = hub.subscribe(&a);
        let stalled = hub.subscribe(&a);
        let mut other = hub.subscribe(&b);
        for seq in 1..=3 {
            hub.publish(&a, LiveEvent::Chunk(sized(seq, 100)));
        }
        for seq in 1..=3 {
            assert_eq!(next_seq(&mut fast).await.ok(), Some(seq));
        }
        assert_eq!(
            hub.held_bytes(),
            300,
            "the stalled subscriber still holds them"
        );
        // Space b has room of its own but the hub has only 100 bytes left.
        hub.publish(&b, LiveEvent::Chunk(sized(1, 100)));
        hub.publish(&b, LiveEvent::Chunk(sized(2, 100)));
        assert_eq!(next_seq(&mut other).await.ok(), Some(1));
        assert!(matches!(
            next_seq(&mut other).await,
            Err(LiveEvent::Head(2))
        ));
        drop(stalled);
        assert_eq!(hub.held_bytes(), 0);
        hub.publish(&b, LiveEvent::Chunk(sized(3, 100)));
        assert_eq!(next_seq(&mut other).await.ok(), Some(3));
        // One chunk larger than a ring's budget is never held.
        hub.publish(&a, LiveEvent::Chunk(sized(4, 301)));
        assert!(matches!(next_seq(&mut fast).await, Err(LiveEvent::Head(4))));
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
