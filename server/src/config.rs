//! The relay's configuration: where it listens, where it keeps data, and every limit.
//!
//! Limits live in one struct so the router, the live socket and the accept loop enforce the same
//! numbers, and so tests can shrink them (a 300 ms idle timeout, a 1 KiB chunk limit) to exercise
//! each refusal quickly.

use std::{net::SocketAddr, path::PathBuf, time::Duration};

use crate::tls::TlsFiles;
use mend_protocol::{
    DEFAULT_MAX_CHUNK_BYTES, DEFAULT_MAX_PAGE_BYTES, DEFAULT_MAX_SNAPSHOT_BYTES, MAX_PUSH_OVERHEAD,
};

/// The smallest sealed payload a device makes: a 24-byte nonce and a 16-byte tag.
pub const MIN_SEALED_BYTES: usize = 40;

/// Everything the relay needs to start.
#[derive(Debug, Clone)]
pub struct Config {
    /// Address to listen on.
    pub listen: SocketAddr,
    /// A second, plain-HTTP address for `/metrics` (with `/healthz` and `/readyz`), kept off
    /// the public side; when set, the public address no longer answers `/metrics`.
    pub metrics_listen: Option<SocketAddr>,
    /// Directory holding the SQLite database (unused with PostgreSQL).
    pub data_dir: PathBuf,
    /// PostgreSQL instead of SQLite, shared by every relay instance that names it.
    pub database_url: Option<DatabaseUrl>,
    /// Pool and batching of the PostgreSQL backend.
    pub postgres: Postgres,
    /// Limits on what clients may do.
    pub limits: Limits,
    /// Per-connection WebSocket buffer sizes.
    pub ws: WsBuffers,
    /// Group-commit batching of the SQLite writer.
    pub group_commit: GroupCommit,
    /// How long a shutdown waits for in-flight work before it gives up on it.
    pub shutdown_grace: Duration,
    /// Serve TLS with these files; `None` serves plain HTTP (behind a TLS proxy).
    pub tls: Option<TlsFiles>,
}

impl Config {
    /// Defaults with the given data directory, listening on 127.0.0.1:8787.
    pub fn new(data_dir: impl Into<PathBuf>) -> Config {
        Config {
            listen: SocketAddr::from(([127, 0, 0, 1], 8787)),
            metrics_listen: None,
            data_dir: data_dir.into(),
            database_url: None,
            postgres: Postgres::default(),
            limits: Limits::default(),
            ws: WsBuffers::default(),
            group_commit: GroupCommit::default(),
            shutdown_grace: Duration::from_secs(10),
            tls: None,
        }
    }

    /// Checks that the limits are consistent with each other.
    pub fn validate(&self) -> Result<(), ConfigError> {
        let l = &self.limits;
        if l.max_ws_message_bytes < l.max_chunk_bytes + MAX_PUSH_OVERHEAD {
            return Err(ConfigError(format!(
                "max WebSocket message ({}) must be at least the max chunk ({}) plus {MAX_PUSH_OVERHEAD}",
                l.max_ws_message_bytes, l.max_chunk_bytes
            )));
        }
        let largest_body =
            l.max_chunk_bytes
                .saturating_add(MAX_PUSH_OVERHEAD)
                .max(l.max_snapshot_bytes.saturating_add(SNAPSHOT_OVERHEAD)) as u64;
        if l.max_body_bytes_per_space < largest_body
            || l.max_body_bytes_per_address < largest_body
            || l.max_body_bytes < largest_body
        {
            return Err(ConfigError(format!(
                "body byte budgets ({} per space, {} per address, {} in all) must hold the \
                 largest body ({largest_body})",
                l.max_body_bytes_per_space, l.max_body_bytes_per_address, l.max_body_bytes
            )));
        }
        let positive = [
            ("max chunk bytes", l.max_chunk_bytes as u64),
            ("max connections", l.max_connections as u64),
            (
                "max connections per space",
                l.max_connections_per_space as u64,
            ),
            ("max in-flight pushes", l.max_inflight_pushes as u64),
            ("max queued writes", l.max_queued_writes as u64),
            (
                "max queued writes per address",
                l.max_queued_writes_per_address as u64,
            ),
            ("sweep batch", l.sweep_batch as u64),
            ("sweep interval", l.sweep_interval.as_millis() as u64),
            ("write timeout", l.write_timeout.as_millis() as u64),
            ("header timeout", l.header_timeout.as_millis() as u64),
            (
                "max in-flight pushes per space",
                l.max_inflight_pushes_per_space as u64,
            ),
            ("rate per space", u64::from(l.rate_per_space)),
            ("rate burst", u64::from(l.rate_burst)),
            ("group commit batch", self.group_commit.max_batch as u64),
            ("database pool size", self.postgres.pool_size as u64),
            ("database writers", self.postgres.writers as u64),
            ("database batch", self.postgres.max_batch as u64),
            (
                "space creations per address",
                u64::from(l.creations_per_address),
            ),
            (
                "live connections per address",
                l.max_connections_per_address as u64,
            ),
            ("pairing ttl", l.pairing_ttl.as_secs()),
            (
                "pairing opens per minute",
                u64::from(l.pairing_opens_per_minute),
            ),
            (
                "pairing claims per minute",
                u64::from(l.pairing_claims_per_minute),
            ),
            ("max live pairings", l.max_live_pairings),
            (
                "failed auths per minute",
                u64::from(l.failed_auths_per_minute),
            ),
            ("space puts per minute", u64::from(l.space_puts_per_minute)),
        ];
        if let Some((name, _)) = positive.iter().find(|(_, value)| *value == 0) {
            return Err(ConfigError(format!("{name} must be positive")));
        }
        // Each push writer keeps a pool connection for good; pulls, catch-ups, space creation
        // and `/readyz` need at least one more, or they wait out the acquire timeout forever.
        if self.postgres.pool_size <= self.postgres.writers {
            return Err(ConfigError(format!(
                "database pool size ({}) must be larger than the database writers ({}): each \
                 writer keeps one connection",
                self.postgres.pool_size, self.postgres.writers
            )));
        }
        Ok(())
    }
}

/// A configuration that cannot work.
#[derive(Debug, thiserror::Error)]
#[error("invalid configuration: {0}")]
pub struct ConfigError(String);

/// Largest bytes a snapshot frame adds around its payload (version, kind, two varints).
pub const SNAPSHOT_OVERHEAD: usize = 2 + 10 + 10;

/// Default of [`Limits::max_total_bytes`]: 16 GiB, half of a small 32 GB server disk, so pruned
/// chunks in their grace, indexes, the WAL and the OS fit beside the counted bytes.
pub const DEFAULT_MAX_TOTAL_BYTES: u64 = 16 << 30;

/// Default of [`Limits::max_body_bytes_per_space`]: two snapshots of the default limit, so a
/// space's devices can upload at once while it pushes chunks.
pub const DEFAULT_MAX_BODY_BYTES_PER_SPACE: u64 = 2 * (DEFAULT_MAX_SNAPSHOT_BYTES as u64 + 1024);
/// Default of [`Limits::max_body_bytes_per_address`]: two spaces' worth, so one host needs
/// many addresses to hold the relay's whole budget.
pub const DEFAULT_MAX_BODY_BYTES_PER_ADDRESS: u64 = 2 * DEFAULT_MAX_BODY_BYTES_PER_SPACE;
/// Default of [`Limits::max_body_bytes`]: 512 MiB of bodies being read across the relay.
pub const DEFAULT_MAX_BODY_BYTES: u64 = 512 << 20;

/// What one client, one space and the whole relay may use.
#[derive(Debug, Clone)]
pub struct Limits {
    /// Largest chunk payload (413 over HTTP, a `Nack` over WebSocket).
    pub max_chunk_bytes: usize,
    /// Largest snapshot payload (413).
    pub max_snapshot_bytes: usize,
    /// Bytes one space may hold: chunk and rollup payloads held plus its snapshot (507).
    pub space_quota_bytes: u64,
    /// Bytes all spaces together may hold, counted like [`Limits::space_quota_bytes`] plus
    /// [`crate::storage::ROW_BYTES`] for each chunk or rollup row kept,
    /// [`crate::storage::SPACE_BYTES`] for each space and [`crate::storage::TOMBSTONE_BYTES`]
    /// for each erased one; a write or a new space past it is refused `relay_full` (507), so
    /// many spaces, or many rows, cannot fill the disk.
    pub max_total_bytes: u64,
    /// Largest WebSocket message; a larger one closes the connection with 1009.
    pub max_ws_message_bytes: usize,
    /// Sustained requests per second per space (HTTP requests and WebSocket pushes).
    pub rate_per_space: u32,
    /// Requests a space may burst above the sustained rate.
    pub rate_burst: u32,
    /// Open TCP connections for the whole relay; more are answered 503 and closed.
    pub max_connections: usize,
    /// Open live connections per space (429).
    pub max_connections_per_space: usize,
    /// A live connection that sends nothing (not even a ping) for this long is closed (4008).
    pub idle_timeout: Duration,
    /// A connection must deliver a request's headers within this long, including the first
    /// request on a fresh connection and each later one on a kept-alive connection.
    pub header_timeout: Duration,
    /// A request body must arrive within this long plus its length at
    /// [`Limits::min_body_rate`] (408 and the connection closed). It is also the grace before
    /// that rate is enforced on what has arrived so far: a body that stalls is cut then, not
    /// at its overall deadline, so it cannot hold its reserved bytes for minutes.
    pub body_timeout: Duration,
    /// A write to a client that makes no progress for this long fails and the connection is
    /// dropped: a client that stops reading an answer (a snapshot, a page, live chunks) cannot
    /// hold it in memory, nor its connection slot. Only a stall counts, not a slow transfer.
    pub write_timeout: Duration,
    /// The slowest body, in bytes per second, the relay waits for past
    /// [`Limits::body_timeout`]: 64 KiB/s gives a 1 MiB chunk 16 s more.
    pub min_body_rate: u64,
    /// Writes (pushes, snapshots, creations) waiting for storage at once, across the relay;
    /// beyond it writes are answered `503` with `Retry-After` until the queue drains.
    pub max_queued_writes: usize,
    /// Writes (pushes, snapshots, creations) one client address (IPv6 by its /64) may have
    /// waiting for storage or having their bodies read, over all its spaces, sockets and
    /// requests: its share of [`Limits::max_queued_writes`], so one address cannot hold the
    /// whole queue. Beyond it its writes are answered `503` with `Retry-After`.
    pub max_queued_writes_per_address: usize,
    /// Pushes one space may have awaiting durability, over all its sockets and requests;
    /// beyond it a push is refused `rate_limited` with a short retry.
    pub max_inflight_pushes_per_space: usize,
    /// Pushes one live connection may have awaiting durability; beyond it the relay stops
    /// reading from that socket until acknowledgements go out.
    pub max_inflight_pushes: usize,
    /// How long chunks a snapshot pruned are kept (and still served) before their payloads
    /// are deleted, so a bad snapshot cannot destroy the only copy of a chunk. They still
    /// count against the space's quota and the relay's byte limit meanwhile: they are on disk.
    pub prune_grace: Duration,
    /// How often the relay deletes pruned chunks whose grace is over, in every space.
    pub sweep_interval: Duration,
    /// Most chunks one sweep deletes in one transaction (a tick runs a few such batches
    /// while they come back full).
    pub sweep_batch: usize,
    /// Bytes of request bodies one space may have being read or held at once, reserved from
    /// each body's declared length (or its size limit when it declares none) before reading it;
    /// beyond it a request is answered `503` with `Retry-After`.
    pub max_body_bytes_per_space: u64,
    /// Bytes of request bodies one client address (IPv6 by its /64) may have being read or
    /// held at once, over all its spaces, reserved like [`Limits::max_body_bytes_per_space`]:
    /// one address cannot hold the relay's whole budget.
    pub max_body_bytes_per_address: u64,
    /// Bytes of request bodies the whole relay may have being read or held at once, reserved
    /// like [`Limits::max_body_bytes_per_space`].
    pub max_body_bytes: u64,
    /// Chunks in a page when a pull names no limit.
    pub default_page_chunks: usize,
    /// Payload bytes in a page (one larger chunk is still sent alone).
    pub max_page_bytes: usize,
    /// Spaces one client address may create per [`Limits::creation_window`] (429). With
    /// PostgreSQL the count is shared by every instance.
    pub creations_per_address: u32,
    /// The window of [`Limits::creations_per_address`].
    pub creation_window: Duration,
    /// Open connections per client address (IPv6 by its /64) on one instance: TCP connections
    /// beyond it are answered 503 at accept, and live sockets beyond it 429 at the upgrade.
    /// Behind a proxy (`client_ip_header`) only live sockets are counted, by the header.
    pub max_connections_per_address: usize,
    /// Take the client address from this request header (set by a trusted proxy, for example
    /// `x-forwarded-for`, whose last entry is used) instead of the TCP peer.
    pub client_ip_header: Option<String>,
    /// How long a pairing mailbox lives after it is opened.
    pub pairing_ttl: Duration,
    /// Pairing mailboxes one client address (IPv6 by its /64) may open per minute on one
    /// instance (429 beyond).
    pub pairing_opens_per_minute: u32,
    /// Pairing claims one client address may make per minute on one instance (429 beyond), so
    /// short mailbox numbers cannot be guessed by trying them all.
    pub pairing_claims_per_minute: u32,
    /// Pairing mailboxes open or claimed at once across the relay (503 beyond).
    pub max_live_pairings: u64,
    /// Smallest chunk or rollup payload accepted (400 `malformed` below): a sealed payload is
    /// at least its nonce and tag (40 bytes), so anything smaller cannot be a real chunk.
    pub min_chunk_bytes: usize,
    /// Token checks that must read the database (a space this instance holds no token for in
    /// memory) and fail, per client address and minute on one instance; once spent, such
    /// requests from the address are answered 429 without a read until it refills. Tokens held
    /// in memory are never refused this way.
    pub failed_auths_per_minute: u32,
    /// `PUT /v1/spaces/{id}` requests (creations, and re-sent `PUT`s of existing spaces) per
    /// client address and minute on one instance, counted before anything is read; 429 beyond.
    /// Each may cost storage a transaction; devices send one per space and sync round.
    pub space_puts_per_minute: u32,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            max_chunk_bytes: DEFAULT_MAX_CHUNK_BYTES,
            max_snapshot_bytes: DEFAULT_MAX_SNAPSHOT_BYTES,
            space_quota_bytes: 256 << 20,
            max_total_bytes: DEFAULT_MAX_TOTAL_BYTES,
            max_ws_message_bytes: DEFAULT_MAX_CHUNK_BYTES + 1024,
            rate_per_space: 200,
            rate_burst: 1000,
            max_connections: 20_000,
            max_connections_per_space: 32,
            idle_timeout: Duration::from_secs(90),
            header_timeout: Duration::from_secs(15),
            body_timeout: Duration::from_secs(10),
            write_timeout: Duration::from_secs(30),
            min_body_rate: 64 * 1024,
            max_queued_writes: 16_384,
            max_queued_writes_per_address: 2048,
            max_inflight_pushes_per_space: 256,
            max_inflight_pushes: 64,
            prune_grace: Duration::from_secs(3 * 24 * 3600),
            sweep_interval: Duration::from_secs(10),
            sweep_batch: 1000,
            max_body_bytes_per_space: DEFAULT_MAX_BODY_BYTES_PER_SPACE,
            max_body_bytes_per_address: DEFAULT_MAX_BODY_BYTES_PER_ADDRESS,
            max_body_bytes: DEFAULT_MAX_BODY_BYTES,
            default_page_chunks: mend_protocol::DEFAULT_PAGE_LIMIT,
            max_page_bytes: DEFAULT_MAX_PAGE_BYTES,
            creations_per_address: 100,
            creation_window: Duration::from_secs(3600),
            max_connections_per_address: 256,
            client_ip_header: None,
            pairing_ttl: Duration::from_secs(600),
            pairing_opens_per_minute: 10,
            pairing_claims_per_minute: 10,
            max_live_pairings: 10_000,
            failed_auths_per_minute: 300,
            space_puts_per_minute: 300,
            min_chunk_bytes: MIN_SEALED_BYTES,
        }
    }
}

/// WebSocket buffer sizes per connection. Small defaults keep 10k idle connections cheap; the
/// buffers grow on demand for larger messages.
#[derive(Debug, Clone, Copy)]
pub struct WsBuffers {
    /// Read buffer allocated up front per connection.
    pub read_buffer_bytes: usize,
    /// Bytes buffered before a write reaches the socket (0: write each message at once).
    pub write_buffer_bytes: usize,
}

impl Default for WsBuffers {
    fn default() -> Self {
        WsBuffers {
            read_buffer_bytes: 4096,
            write_buffer_bytes: 0,
        }
    }
}

/// How the SQLite writer batches concurrent writes into one transaction (group commit), and
/// how the write-ahead log is checkpointed around it.
#[derive(Debug, Clone, Copy)]
pub struct GroupCommit {
    /// Most writes in one transaction.
    pub max_batch: usize,
    /// Most payload bytes in one transaction.
    pub max_batch_bytes: usize,
    /// How often the background checkpointer copies WAL frames into the database.
    pub checkpoint_interval: Duration,
    /// WAL pages after which the writer checkpoints itself so the WAL can restart.
    pub autocheckpoint_pages: u32,
}

impl Default for GroupCommit {
    fn default() -> Self {
        GroupCommit {
            max_batch: 2048,
            max_batch_bytes: 16 << 20,
            checkpoint_interval: Duration::from_millis(50),
            autocheckpoint_pages: 8192,
        }
    }
}

/// A PostgreSQL connection URL. Its `Debug` hides it: it may carry a password.
#[derive(Clone, PartialEq, Eq)]
pub struct DatabaseUrl(pub String);

impl std::fmt::Debug for DatabaseUrl {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("DatabaseUrl(..)")
    }
}

/// The PostgreSQL backend's pool, timeouts and batching.
#[derive(Debug, Clone, Copy)]
pub struct Postgres {
    /// Most connections in the pool (the listener's connection is one more).
    pub pool_size: usize,
    /// How long a request waits for a pooled connection, or for a new connection to open,
    /// before it is answered 503.
    pub acquire_timeout: Duration,
    /// Longest a statement may run on the server before it is cancelled (503).
    pub statement_timeout: Duration,
    /// Push batches in flight at once; each space always goes through the same one, so a
    /// device's pushes commit in the order they arrived.
    pub writers: usize,
    /// Most pushes in one batch (one statement, one transaction).
    pub max_batch: usize,
    /// Most payload bytes in one batch.
    pub max_batch_bytes: usize,
}

impl Default for Postgres {
    fn default() -> Self {
        Postgres {
            pool_size: 16,
            acquire_timeout: Duration::from_secs(2),
            statement_timeout: Duration::from_secs(5),
            writers: 1,
            max_batch: 1024,
            max_batch_bytes: 8 << 20,
        }
    }
}
