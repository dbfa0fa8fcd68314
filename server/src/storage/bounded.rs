//! [`BoundedWrites`]: a cap on the writes waiting for a backend, whichever backend it is.
//!
//! Each backend queues writes for its writer (a thread for SQLite, batch tasks for
//! PostgreSQL). Unbounded, a flood of pushes faster than the disk would grow that queue, and the
//! relay's memory, without limit. Past the cap a write is refused at once with
//! [`StorageError::Unavailable`] (HTTP `503` with `Retry-After`, a Nack `unavailable` on a live
//! socket), and reads are never held back.

use std::{sync::Arc, time::Duration};

use mend_protocol::{
    DeviceId, DeviceList, Page, PairingInbox, PairingState, Push, RollupPush, Sizes, Snapshot,
    SpaceId,
};
use tokio::sync::Semaphore;

use super::{
    Created, EraseReason, NewPairing, PairingRecord, PairingSide, PairingSwept, PullRequest,
    Pushed, RollupStored, Storage, StorageError, StorageFuture, Swept, TokenHash, Tombstone,
};

/// A backend whose queued writes are capped.
pub struct BoundedWrites {
    inner: Arc<dyn Storage>,
    queued: Arc<Semaphore>,
    max: usize,
}

impl std::fmt::Debug for BoundedWrites {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("BoundedWrites")
            .field("free", &self.queued.available_permits())
            .finish_non_exhaustive()
    }
}

impl BoundedWrites {
    /// At most `max_queued` writes of `inner` waiting at once (at least 1).
    pub fn new(inner: Arc<dyn Storage>, max_queued: usize) -> BoundedWrites {
        let max = max_queued.max(1);
        BoundedWrites {
            inner,
            queued: Arc::new(Semaphore::new(max)),
            max,
        }
    }

    /// Runs `write` if the queue has room; its slot is held until the write is answered (or
    /// dropped), counted from the call, since backends queue the write when it is called.
    fn write<T: Send + 'static>(
        &self,
        write: impl FnOnce(&dyn Storage) -> StorageFuture<T>,
    ) -> StorageFuture<T> {
        let Ok(slot) = self.queued.clone().try_acquire_owned() else {
            return Box::pin(async { Err(StorageError::Unavailable("write queue full".into())) });
        };
        let answer = write(self.inner.as_ref());
        Box::pin(async move {
            let result = answer.await;
            drop(slot);
            result
        })
    }
}

impl BoundedWrites {
    /// [`BoundedWrites::write`] for a write that may be dropped: refused unless more than half
    /// the queue is free, so it never takes the slots of writes that may not.
    fn spare_write<T: Send + 'static>(
        &self,
        write: impl FnOnce(&dyn Storage) -> StorageFuture<T>,
    ) -> StorageFuture<T> {
        if self.queued.available_permits() <= self.max / 2 {
            return Box::pin(async { Err(StorageError::Unavailable("write queue busy".into())) });
        }
        self.write(write)
    }
}

impl Storage for BoundedWrites {
    fn create_space(&self, space: SpaceId, token_hash: TokenHash) -> StorageFuture<Created> {
        self.write(|inner| inner.create_space(space, token_hash))
    }

    fn token_hash(&self, space: SpaceId) -> StorageFuture<Option<TokenHash>> {
        self.inner.token_hash(space)
    }

    fn known_token(&self, space: SpaceId) -> Option<TokenHash> {
        self.inner.known_token(space)
    }

    fn push(&self, space: SpaceId, push: Push, quota: u64) -> StorageFuture<Pushed> {
        self.write(|inner| inner.push(space, push, quota))
    }

    fn pull(&self, space: SpaceId, request: PullRequest) -> StorageFuture<Page> {
        self.inner.pull(space, request)
    }

    fn push_rollup(
        &self,
        space: SpaceId,
        rollup: RollupPush,
        quota: u64,
    ) -> StorageFuture<RollupStored> {
        self.write(|inner| inner.push_rollup(space, rollup, quota))
    }

    fn sizes(
        &self,
        space: SpaceId,
        after: u64,
        exclude_device: Option<DeviceId>,
    ) -> StorageFuture<Sizes> {
        self.inner.sizes(space, after, exclude_device)
    }

    fn put_snapshot(
        &self,
        space: SpaceId,
        snapshot: Snapshot,
        quota: u64,
        grace: Duration,
    ) -> StorageFuture<()> {
        self.write(|inner| inner.put_snapshot(space, snapshot, quota, grace))
    }

    fn sweep_pruned(
        &self,
        grace: Duration,
        max_chunks: usize,
        max_bytes: u64,
    ) -> StorageFuture<Swept> {
        // Sweeping gives bytes back, and its work is bounded per call: never refused for load.
        self.inner.sweep_pruned(grace, max_chunks, max_bytes)
    }

    fn set_total_quota(&self, bytes: u64) {
        self.inner.set_total_quota(bytes);
    }

    fn total_bytes(&self) -> StorageFuture<u64> {
        self.inner.total_bytes()
    }

    fn get_snapshot(&self, space: SpaceId) -> StorageFuture<Option<Snapshot>> {
        self.inner.get_snapshot(space)
    }

    fn erase(&self, space: SpaceId, reason: EraseReason) -> StorageFuture<bool> {
        // Erasing is how a space gives its bytes back: never refused for load.
        self.inner.erase(space, reason)
    }

    fn tombstone(&self, space: SpaceId) -> StorageFuture<Option<Tombstone>> {
        self.inner.tombstone(space)
    }

    fn claim_successor(&self, space: SpaceId, id: [u8; 32]) -> StorageFuture<[u8; 32]> {
        // Once per rotation and space: never refused for load.
        self.inner.claim_successor(space, id)
    }

    fn touch_device(&self, space: SpaceId, device: DeviceId, at: u64) -> StorageFuture<()> {
        // The device ids are the client's choice: a touch is bounded like any write, and being
        // only a last-seen note it is refused (and dropped) once half the queue is taken.
        self.spare_write(|inner| inner.touch_device(space, device, at))
    }

    fn devices(&self, space: SpaceId) -> StorageFuture<DeviceList> {
        self.inner.devices(space)
    }

    fn count_creation(
        &self,
        client: [u8; 32],
        window_start: u64,
        keep_after: u64,
    ) -> StorageFuture<u64> {
        self.write(|inner| inner.count_creation(client, window_start, keep_after))
    }

    fn open_pairing(&self, new: NewPairing) -> StorageFuture<String> {
        self.write(|inner| inner.open_pairing(new))
    }

    fn claim_pairing(
        &self,
        mailbox: String,
        guest_hash: TokenHash,
        now: u64,
    ) -> StorageFuture<u64> {
        self.write(|inner| inner.claim_pairing(mailbox, guest_hash, now))
    }

    fn pairing(&self, mailbox: String, now: u64) -> StorageFuture<Option<PairingRecord>> {
        self.inner.pairing(mailbox, now)
    }

    fn post_pairing(
        &self,
        mailbox: String,
        side: PairingSide,
        body: Vec<u8>,
        now: u64,
    ) -> StorageFuture<u64> {
        self.write(|inner| inner.post_pairing(mailbox, side, body, now))
    }

    fn read_pairing(
        &self,
        mailbox: String,
        reader: PairingSide,
        after: u64,
        now: u64,
    ) -> StorageFuture<PairingInbox> {
        self.inner.read_pairing(mailbox, reader, after, now)
    }

    fn close_pairing(
        &self,
        mailbox: String,
        burn: bool,
        now: u64,
    ) -> StorageFuture<Option<PairingState>> {
        // A write like any other; closing again is answered without one (`routes::pairings`).
        self.write(|inner| inner.close_pairing(mailbox, burn, now))
    }

    fn sweep_pairings(&self, now: u64, linger: Duration) -> StorageFuture<PairingSwept> {
        self.inner.sweep_pairings(now, linger)
    }

    fn ready(&self) -> StorageFuture<()> {
        self.inner.ready()
    }

    fn audit(&self, repair: bool) -> StorageFuture<super::Audit> {
        self.inner.audit(repair)
    }

    fn render_metrics(&self, out: &mut String) {
        self.inner.render_metrics(out);
    }

    fn close(&self) -> StorageFuture<()> {
        self.inner.close()
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use mend_protocol::DeviceId;

    use super::*;
    use crate::{config::GroupCommit, live::LocalHub, storage::sqlite::SqliteStorage};

    fn push(seq: u64) -> Push {
        Push {
            device_id: DeviceId([1; 16]),
            device_seq: seq,
            payload: vec![seq as u8; 8],
        }
    }

    #[tokio::test]
    async fn writes_past_the_cap_are_refused_at_once_and_reads_go_on() {
        let dir = tempfile::tempdir().unwrap();
        let sqlite = SqliteStorage::open(
            dir.path(),
            Arc::new(LocalHub::default()),
            GroupCommit::default(),
        )
        .unwrap();
        let storage = BoundedWrites::new(Arc::new(sqlite), 2);
        let space = SpaceId([3; 32]);
        storage.create_space(space, [4; 32]).await.unwrap();
        // Two writes queued (not yet answered) fill the queue.
        let first = storage.push(space, push(1), u64::MAX);
        let second = storage.push(space, push(2), u64::MAX);
        assert!(matches!(
            storage.push(space, push(3), u64::MAX).await,
            Err(StorageError::Unavailable(_))
        ));
        let snapshot = Snapshot {
            covers: 0,
            payload: vec![],
        };
        assert!(matches!(
            storage
                .put_snapshot(space, snapshot, u64::MAX, Duration::ZERO)
                .await,
            Err(StorageError::Unavailable(_))
        ));
        let request = PullRequest {
            after: 0,
            limit: 10,
            max_bytes: usize::MAX,
            exclude_device: None,
            include_pruned: false,
            rollups: false,
        };
        assert!(storage.pull(space, request).await.is_ok(), "reads go on");
        // Answered writes free their slots.
        assert_eq!(first.await.unwrap().relay_seq, 1);
        assert_eq!(second.await.unwrap().relay_seq, 2);
        assert_eq!(
            storage
                .push(space, push(3), u64::MAX)
                .await
                .unwrap()
                .relay_seq,
            3
        );
        storage.close().await.unwrap();
    }

    #[tokio::test]
    async fn touches_are_dropped_not_queued_once_half_the_queue_is_taken() {
        let dir = tempfile::tempdir().unwrap();
        let sqlite = SqliteStorage::open(
            dir.path(),
            Arc::new(LocalHub::default()),
            GroupCommit::default(),
        )
        .unwrap();
        let storage = BoundedWrites::new(Arc::new(sqlite), 2);
        let space = SpaceId([3; 32]);
        storage.create_space(space, [4; 32]).await.unwrap();
        let stranger = DeviceId([9; 16]);
        // Half the queue taken already refuses a touch: it never takes a push's slot.
        let first = storage.push(space, push(1), u64::MAX);
        assert!(matches!(
            storage.touch_device(space, stranger, 1_780_000_000).await,
            Err(StorageError::Unavailable(_))
        ));
        let second = storage.push(space, push(2), u64::MAX);
        assert!(matches!(
            storage.touch_device(space, stranger, 1_780_000_000).await,
            Err(StorageError::Unavailable(_))
        ));
        first.await.unwrap();
        second.await.unwrap();
        let devices = storage.devices(space).await.unwrap();
        assert!(
            devices.devices.iter().all(|d| d.device_id != stranger),
            "the refused touch was not written later"
        );
        // With room again, a touch is written.
        storage
            .touch_device(space, stranger, 1_780_000_000)
            .await
            .unwrap();
        let devices = storage.devices(space).await.unwrap();
        assert!(devices.devices.iter().any(|d| d.device_id == stranger));
        storage.close().await.unwrap();
    }
}
