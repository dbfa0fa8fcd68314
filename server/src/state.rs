//! [`AppState`]: what every handler and connection shares.

use std::sync::Arc;

use mend_protocol::{DeviceId, SpaceId};

use tokio_util::{sync::CancellationToken, task::TaskTracker};

use crate::{
    budget::BodyBudget,
    caps::{AddressConnectionGuard, AddressConnections, SpaceConnections},
    config::Config,
    live::{LiveFeed, LocalHub},
    metrics::Metrics,
    pairing_tokens::PairingTokens,
    rate::{RateLimiter, SpentUntil},
    seen::LastSeen,
    storage::{
        Storage, StorageError, StorageFuture,
        bounded::BoundedWrites,
        postgres::{PgError, PostgresStorage},
        sqlite::SqliteStorage,
    },
    wakeups::Wakeups,
};

/// A client address already holds its whole share of the write queue.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct OverShare;

/// Shared relay state. Cheap to clone.
#[derive(Clone)]
pub struct AppState {
    inner: Arc<Inner>,
}

struct Inner {
    config: Config,
    storage: Arc<dyn Storage>,
    live: Arc<dyn LiveFeed>,
    metrics: Metrics,
    rate: RateLimiter,
    pairing_opens: RateLimiter<[u8; 32]>,
    pairing_claims: RateLimiter<[u8; 32]>,
    failed_auths: RateLimiter<[u8; 32]>,
    space_puts: RateLimiter<[u8; 32]>,
    creations_spent: SpentUntil<[u8; 32]>,
    pairing_tokens: PairingTokens,
    pairing_wakeups: Wakeups,
    space_connections: SpaceConnections,
    space_pushes: SpaceConnections,
    address_connections: AddressConnections,
    tcp_connections: AddressConnections,
    address_writes: AddressConnections,
    body_budget: BodyBudget,
    last_seen: LastSeen,
    shutdown: CancellationToken,
    tasks: TaskTracker,
}

impl std::fmt::Debug for AppState {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AppState")
            .field("config", &self.inner.config)
            .finish_non_exhaustive()
    }
}

impl AppState {
    /// State over a given storage backend and live feed.
    pub fn new(config: Config, storage: Arc<dyn Storage>, live: Arc<dyn LiveFeed>) -> AppState {
        let limits = &config.limits;
        storage.set_total_quota(limits.max_total_bytes);
        let storage: Arc<dyn Storage> =
            Arc::new(BoundedWrites::new(storage, limits.max_queued_writes));
        AppState {
            inner: Arc::new(Inner {
                rate: RateLimiter::new(limits.rate_per_space, limits.rate_burst),
                pairing_opens: RateLimiter::per_minute(limits.pairing_opens_per_minute),
                pairing_claims: RateLimiter::per_minute(limits.pairing_claims_per_minute),
                failed_auths: RateLimiter::per_minute(limits.failed_auths_per_minute),
                space_puts: RateLimiter::per_minute(limits.space_puts_per_minute),
                creations_spent: SpentUntil::new(),
                pairing_tokens: PairingTokens::default(),
                pairing_wakeups: Wakeups::default(),
                space_connections: SpaceConnections::new(limits.max_connections_per_space),
                space_pushes: SpaceConnections::new(limits.max_inflight_pushes_per_space),
                address_connections: AddressConnections::new(limits.max_connections_per_address),
                tcp_connections: AddressConnections::new(limits.max_connections_per_address),
                address_writes: AddressConnections::new(limits.max_queued_writes_per_address),
                body_budget: BodyBudget::new(
                    limits.max_body_bytes_per_space,
                    limits.max_body_bytes_per_address,
                    limits.max_body_bytes,
                ),
                config,
                storage,
                live,
                metrics: Metrics::default(),
                last_seen: LastSeen::default(),
                shutdown: CancellationToken::new(),
                tasks: TaskTracker::new(),
            }),
        }
    }

    /// State over the embedded SQLite backend in `config.data_dir`, with an in-process hub.
    pub fn open_sqlite(config: Config) -> Result<AppState, StorageError> {
        let hub = LocalHub::default();
        let storage =
            SqliteStorage::open(&config.data_dir, Arc::new(hub.clone()), config.group_commit)?;
        Ok(AppState::new(config, Arc::new(storage), Arc::new(hub)))
    }

    /// State over the PostgreSQL database at `url`, with an in-process hub fed by this
    /// instance's commits and by the database's notifications of every other instance's.
    pub async fn open_postgres(config: Config, url: &str) -> Result<AppState, PgError> {
        let hub = LocalHub::default();
        let storage = PostgresStorage::open(url, config.postgres, Arc::new(hub.clone())).await?;
        Ok(AppState::new(config, Arc::new(storage), Arc::new(hub)))
    }

    /// Notes that the relay serves `device` in `space` now, for the client at `address`: the
    /// first time in each hour, starts writing it on a task of its own and returns the task
    /// (awaiting it is optional; a failure is logged and tried again next hour). The write takes
    /// a slot of the address's share of the write queue and of the queue itself, like any other
    /// write, but only while more than half of each is free: it is only a last-seen note, so
    /// it is dropped rather than queued, and never takes a slot a push needs.
    pub fn note_seen(
        &self,
        space: SpaceId,
        device: DeviceId,
        address: Option<[u8; 32]>,
    ) -> Option<tokio::task::JoinHandle<()>> {
        let now = crate::storage::unix_now();
        // The share first: a note refused for load is tried again at the next request, not
        // an hour later.
        let share = match address {
            Some(key) => Some(self.inner.address_writes.try_acquire_spare(&key)?),
            None => None,
        };
        if !self.inner.last_seen.due(space, device, now) {
            return None;
        }
        let write = self.inner.storage.touch_device(space, device, now);
        Some(tokio::spawn(async move {
            let result = write.await;
            drop(share);
            if let Err(error) = result {
                tracing::debug!(%error, "a device's last-seen hour was not recorded");
            }
        }))
    }

    /// The configuration.
    pub fn config(&self) -> &Config {
        &self.inner.config
    }

    /// The storage backend.
    pub fn storage(&self) -> &Arc<dyn Storage> {
        &self.inner.storage
    }

    /// The live feed.
    pub fn live(&self) -> &dyn LiveFeed {
        self.inner.live.as_ref()
    }

    /// The metrics.
    pub fn metrics(&self) -> &Metrics {
        &self.inner.metrics
    }

    /// Per-space rate limits.
    pub fn rate(&self) -> &RateLimiter {
        &self.inner.rate
    }

    /// Pairing mailboxes opened per client address.
    pub fn pairing_opens(&self) -> &RateLimiter<[u8; 32]> {
        &self.inner.pairing_opens
    }

    /// Pairing claims per client address.
    pub fn pairing_claims(&self) -> &RateLimiter<[u8; 32]> {
        &self.inner.pairing_claims
    }

    /// Space requests per client address whose token was wrong or named no space.
    pub fn failed_auths(&self) -> &RateLimiter<[u8; 32]> {
        &self.inner.failed_auths
    }

    /// `PUT /v1/spaces/{id}` requests per client address.
    pub fn space_puts(&self) -> &RateLimiter<[u8; 32]> {
        &self.inner.space_puts
    }

    /// Client addresses storage said have created all the spaces they may for now.
    pub fn creations_spent(&self) -> &SpentUntil<[u8; 32]> {
        &self.inner.creations_spent
    }

    /// Pairing tokens this instance handed out or accepted, by hash.
    pub fn pairing_tokens(&self) -> &PairingTokens {
        &self.inner.pairing_tokens
    }

    /// Pairing reads waiting on this instance.
    pub fn pairing_wakeups(&self) -> &Wakeups {
        &self.inner.pairing_wakeups
    }

    /// Per-space live connection caps.
    pub fn space_connections(&self) -> &SpaceConnections {
        &self.inner.space_connections
    }

    /// Pushes awaiting durability per space, over every socket and HTTP request.
    pub fn space_pushes(&self) -> &SpaceConnections {
        &self.inner.space_pushes
    }

    /// Per-address live connection caps.
    pub fn address_connections(&self) -> &AddressConnections {
        &self.inner.address_connections
    }

    /// Open TCP connections per client address, counted at accept (not behind a proxy).
    pub fn tcp_connections(&self) -> &AddressConnections {
        &self.inner.tcp_connections
    }

    /// Takes a slot of `address`'s share of the write queue, held until its write is answered.
    /// `Ok(None)` without an address (a request that reached the router in-process); `Err`
    /// when the address holds its whole share.
    pub fn write_share(
        &self,
        address: Option<[u8; 32]>,
    ) -> Result<Option<AddressConnectionGuard>, OverShare> {
        match address {
            None => Ok(None),
            Some(key) => self
                .inner
                .address_writes
                .try_acquire(&key)
                .map(Some)
                .ok_or(OverShare),
        }
    }

    /// Runs `write` to its answer on a task of its own, holding `held` (the request's slots
    /// and reserved bytes) until then. Backends queue a write when it is called, so a client
    /// that goes away does not stop it: what it holds must be given back when the write is
    /// done, never when the request is dropped.
    pub fn write_to_end<T: Send + 'static, H: Send + 'static>(
        &self,
        write: StorageFuture<T>,
        held: H,
    ) -> StorageFuture<T> {
        let task = tokio::spawn(async move {
            let result = write.await;
            drop(held);
            result
        });
        Box::pin(async move {
            task.await
                .unwrap_or_else(|e| Err(StorageError::Backend(Box::new(e))))
        })
    }

    /// Bytes of request bodies being read or held, per space and in all.
    pub fn body_budget(&self) -> &BodyBudget {
        &self.inner.body_budget
    }

    /// Cancelled when the relay starts shutting down.
    pub fn shutdown(&self) -> &CancellationToken {
        &self.inner.shutdown
    }

    /// Connections and live sessions the shutdown waits for.
    pub fn tasks(&self) -> &TaskTracker {
        &self.inner.tasks
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use super::*;

    /// A last-seen note takes a slot of the address's write share like any write, and only
    /// from its free half: past that it is dropped, with no task and nothing queued.
    #[tokio::test]
    async fn a_last_seen_note_is_dropped_once_half_the_address_share_is_taken() {
        let dir = tempfile::tempdir().unwrap();
        let mut config = Config::new(dir.path());
        config.limits.max_queued_writes_per_address = 4;
        let state = AppState::open_sqlite(config).unwrap();
        let (space, address) = (SpaceId([1; 32]), Some([7; 32]));
        let held = [state.write_share(address), state.write_share(address)];
        assert!(state.note_seen(space, DeviceId([1; 16]), address).is_none());
        drop(held);
        // The note refused for load is written at the device's next request, not an hour on.
        let note = state.note_seen(space, DeviceId([1; 16]), address).unwrap();
        note.await.unwrap();
        state.storage().close().await.unwrap();
    }
}
