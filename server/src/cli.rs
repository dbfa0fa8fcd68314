//! Command-line flags, each with an environment variable fallback, mapped onto [`Config`].

use std::{net::SocketAddr, path::PathBuf, time::Duration};

use clap::{Parser, Subcommand, ValueEnum};

use crate::{
    config::{Config, DatabaseUrl, GroupCommit, Limits, Postgres, WsBuffers},
    tls::TlsFiles,
};

/// Log output format.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum LogFormat {
    /// Human-readable lines.
    Text,
    /// One JSON object per line.
    Json,
}

/// mend-relay: the blind store-and-forward relay for Mend spaces.
#[derive(Debug, Parser)]
#[command(name = "mend-relay", version, about)]
pub struct Args {
    /// Something other than serving.
    #[command(subcommand)]
    pub command: Option<Command>,
    /// Address to listen on.
    #[arg(long, env = "MEND_LISTEN", default_value = "127.0.0.1:8787")]
    pub listen: SocketAddr,
    /// Serve /metrics on this address, in plain HTTP, and no longer on --listen (/healthz and
    /// /readyz are served on both): for a private network or 127.0.0.1 the scraper reaches.
    #[arg(long, env = "MEND_METRICS_LISTEN")]
    pub metrics_listen: Option<SocketAddr>,
    /// Directory of the SQLite database (created if missing).
    #[arg(
        long,
        env = "MEND_DATA_DIR",
        default_value = "./mend-data",
        global = true
    )]
    pub data_dir: PathBuf,
    /// Use PostgreSQL (`postgres://user@host/db`) instead of SQLite; several relays may share it.
    #[arg(long, env = "MEND_DATABASE_URL", hide_env_values = true, global = true)]
    pub database_url: Option<String>,
    /// Most pooled PostgreSQL connections per relay instance.
    #[arg(long, env = "MEND_DB_POOL_SIZE", default_value_t = Postgres::default().pool_size)]
    pub db_pool_size: usize,
    /// Milliseconds a request waits for a PostgreSQL connection before answering 503.
    #[arg(long, env = "MEND_DB_ACQUIRE_TIMEOUT_MS", default_value_t = Postgres::default().acquire_timeout.as_millis() as u64)]
    pub db_acquire_timeout_ms: u64,
    /// Milliseconds a PostgreSQL statement may run before it is cancelled (503).
    #[arg(long, env = "MEND_DB_STATEMENT_TIMEOUT_MS", default_value_t = Postgres::default().statement_timeout.as_millis() as u64, global = true)]
    pub db_statement_timeout_ms: u64,
    /// PostgreSQL push batches in flight at once.
    #[arg(long, env = "MEND_DB_WRITERS", default_value_t = Postgres::default().writers)]
    pub db_writers: usize,
    /// Most pushes in one PostgreSQL batch.
    #[arg(long, env = "MEND_DB_BATCH_MAX", default_value_t = Postgres::default().max_batch)]
    pub db_batch_max: usize,
    /// Serve HTTPS and WSS with this PEM certificate chain (needs --tls-key); re-read on
    /// SIGHUP. Without it the relay serves plain HTTP, for a TLS-terminating proxy in front.
    #[arg(long, env = "MEND_TLS_CERT", requires = "tls_key")]
    pub tls_cert: Option<PathBuf>,
    /// The PEM private key of --tls-cert; re-read on SIGHUP.
    #[arg(long, env = "MEND_TLS_KEY", requires = "tls_cert")]
    pub tls_key: Option<PathBuf>,
    /// Log format.
    #[arg(long, env = "MEND_LOG_FORMAT", value_enum, default_value = "text")]
    pub log_format: LogFormat,
    /// Log filter (tracing `EnvFilter` syntax); `RUST_LOG` wins if set.
    #[arg(long, env = "MEND_LOG", default_value = "info")]
    pub log: String,

    /// Largest chunk payload in bytes (HTTP 413, WebSocket Nack).
    #[arg(long, env = "MEND_MAX_CHUNK_BYTES", default_value_t = Limits::default().max_chunk_bytes)]
    pub max_chunk_bytes: usize,
    /// Largest snapshot payload in bytes (HTTP 413).
    #[arg(long, env = "MEND_MAX_SNAPSHOT_BYTES", default_value_t = Limits::default().max_snapshot_bytes)]
    pub max_snapshot_bytes: usize,
    /// Bytes a space may hold, chunks plus snapshot (HTTP 507).
    #[arg(long, env = "MEND_SPACE_QUOTA_BYTES", default_value_t = Limits::default().space_quota_bytes)]
    pub space_quota_bytes: u64,
    /// Bytes all spaces together may hold, with 150 for each chunk row or tombstone kept and
    /// 9750 for each space (HTTP 507 `relay_full`). Keep it below the free disk, leaving room for the WAL,
    /// indexes and pruned chunks in their grace.
    #[arg(long, env = "MEND_MAX_TOTAL_BYTES", default_value_t = Limits::default().max_total_bytes)]
    pub max_total_bytes: u64,
    /// Largest WebSocket message in bytes (close 1009). Defaults to the chunk limit + 1 KiB.
    #[arg(long, env = "MEND_MAX_WS_MESSAGE_BYTES")]
    pub max_ws_message_bytes: Option<usize>,
    /// Sustained requests per second per space (HTTP 429, WebSocket Nack).
    #[arg(long, env = "MEND_RATE_PER_SPACE", default_value_t = Limits::default().rate_per_space)]
    pub rate_per_space: u32,
    /// Burst of requests per space above the sustained rate.
    #[arg(long, env = "MEND_RATE_BURST", default_value_t = Limits::default().rate_burst)]
    pub rate_burst: u32,
    /// Open TCP connections for the whole relay (HTTP 503 beyond).
    #[arg(long, env = "MEND_MAX_CONNECTIONS", default_value_t = Limits::default().max_connections)]
    pub max_connections: usize,
    /// Open live connections per space (HTTP 429 beyond).
    #[arg(long, env = "MEND_MAX_CONNECTIONS_PER_SPACE", default_value_t = Limits::default().max_connections_per_space)]
    pub max_connections_per_space: usize,
    /// Seconds a live connection may stay silent (no message, no ping) before close 4008.
    #[arg(long, env = "MEND_IDLE_TIMEOUT_SECS", default_value_t = Limits::default().idle_timeout.as_secs())]
    pub idle_timeout_secs: u64,
    /// Seconds a connection has to send a request's headers.
    #[arg(long, env = "MEND_HEADER_TIMEOUT_SECS", default_value_t = Limits::default().header_timeout.as_secs())]
    pub header_timeout_secs: u64,
    /// Seconds a request body may take, plus one per 64 KiB it declares (408 beyond).
    #[arg(long, env = "MEND_BODY_TIMEOUT_SECS", default_value_t = Limits::default().body_timeout.as_secs())]
    pub body_timeout_secs: u64,
    /// Seconds a write to a client may make no progress (the client reads nothing) before the
    /// connection is dropped, with what it holds in memory.
    #[arg(long, env = "MEND_WRITE_TIMEOUT_SECS", default_value_t = Limits::default().write_timeout.as_secs())]
    pub write_timeout_secs: u64,
    /// Writes waiting for storage across the relay (HTTP 503 + Retry-After beyond).
    #[arg(long, env = "MEND_MAX_QUEUED_WRITES", default_value_t = Limits::default().max_queued_writes)]
    pub max_queued_writes: usize,
    /// Writes one client address may have queued for storage, over all its spaces and
    /// connections (HTTP 503 + Retry-After / Nack unavailable beyond).
    #[arg(long, env = "MEND_MAX_QUEUED_WRITES_PER_ADDRESS", default_value_t = Limits::default().max_queued_writes_per_address)]
    pub max_queued_writes_per_address: usize,
    /// Pushes a space may have awaiting durability over all its connections (429 / Nack
    /// rate_limited beyond).
    #[arg(long, env = "MEND_MAX_INFLIGHT_PUSHES_PER_SPACE", default_value_t = Limits::default().max_inflight_pushes_per_space)]
    pub max_inflight_pushes_per_space: usize,
    /// Pushes a live connection may have awaiting durability.
    #[arg(long, env = "MEND_MAX_INFLIGHT_PUSHES", default_value_t = Limits::default().max_inflight_pushes)]
    pub max_inflight_pushes: usize,
    /// Seconds chunks pruned by a snapshot are still kept and served before deletion.
    #[arg(long, env = "MEND_PRUNE_GRACE_SECS", default_value_t = Limits::default().prune_grace.as_secs())]
    pub prune_grace_secs: u64,
    /// Seconds between sweeps that delete pruned chunks whose grace is over.
    #[arg(long, env = "MEND_SWEEP_INTERVAL_SECS", default_value_t = Limits::default().sweep_interval.as_secs())]
    pub sweep_interval_secs: u64,
    /// Most pruned chunks one sweep batch deletes.
    #[arg(long, env = "MEND_SWEEP_BATCH", default_value_t = Limits::default().sweep_batch)]
    pub sweep_batch: usize,
    /// Bytes of request bodies one space may have in flight, by declared length (503 beyond).
    #[arg(long, env = "MEND_MAX_BODY_BYTES_PER_SPACE", default_value_t = Limits::default().max_body_bytes_per_space)]
    pub max_body_bytes_per_space: u64,
    /// Bytes of request bodies one client address may have in flight, by declared length
    /// (503 beyond).
    #[arg(long, env = "MEND_MAX_BODY_BYTES_PER_ADDRESS", default_value_t = Limits::default().max_body_bytes_per_address)]
    pub max_body_bytes_per_address: u64,
    /// Bytes of request bodies the relay may have in flight, by declared length (503 beyond).
    #[arg(long, env = "MEND_MAX_BODY_BYTES", default_value_t = Limits::default().max_body_bytes)]
    pub max_body_bytes: u64,
    /// Payload bytes in a pulled page.
    #[arg(long, env = "MEND_MAX_PAGE_BYTES", default_value_t = Limits::default().max_page_bytes)]
    pub max_page_bytes: usize,
    /// Spaces one client address may create per creation window (429 beyond); shared by all
    /// instances with PostgreSQL.
    #[arg(long, env = "MEND_CREATIONS_PER_ADDRESS", default_value_t = Limits::default().creations_per_address)]
    pub creations_per_address: u32,
    /// Seconds of the creation window.
    #[arg(long, env = "MEND_CREATION_WINDOW_SECS", default_value_t = Limits::default().creation_window.as_secs())]
    pub creation_window_secs: u64,
    /// Open live connections per client address on this instance (429 beyond).
    #[arg(long, env = "MEND_MAX_CONNECTIONS_PER_ADDRESS", default_value_t = Limits::default().max_connections_per_address)]
    pub max_connections_per_address: usize,
    /// Header holding the client address, set by a trusted proxy (its last entry is used),
    /// for example `x-forwarded-for`. Without it, the TCP peer is the client.
    #[arg(long, env = "MEND_CLIENT_IP_HEADER")]
    pub client_ip_header: Option<String>,
    /// Seconds a pairing mailbox lives after it is opened.
    #[arg(long, env = "MEND_PAIRING_TTL_SECS", default_value_t = Limits::default().pairing_ttl.as_secs())]
    pub pairing_ttl_secs: u64,
    /// Pairing mailboxes one client address may open per minute on this instance (429 beyond).
    #[arg(long, env = "MEND_PAIRING_OPENS_PER_MINUTE", default_value_t = Limits::default().pairing_opens_per_minute)]
    pub pairing_opens_per_minute: u32,
    /// Pairing claims one client address may make per minute on this instance (429 beyond).
    #[arg(long, env = "MEND_PAIRING_CLAIMS_PER_MINUTE", default_value_t = Limits::default().pairing_claims_per_minute)]
    pub pairing_claims_per_minute: u32,
    /// Pairing mailboxes open or claimed at once across the relay (503 beyond).
    #[arg(long, env = "MEND_MAX_LIVE_PAIRINGS", default_value_t = Limits::default().max_live_pairings)]
    pub max_live_pairings: u64,
    /// Failed token checks that had to read the database, per client address and minute on
    /// this instance (429 beyond, without a read; tokens held in memory are never refused).
    #[arg(long, env = "MEND_FAILED_AUTHS_PER_MINUTE", default_value_t = Limits::default().failed_auths_per_minute)]
    pub failed_auths_per_minute: u32,
    /// `PUT /v1/spaces/{id}` requests per client address and minute on this instance, new
    /// spaces or not (429 beyond, before anything is read).
    #[arg(long, env = "MEND_SPACE_PUTS_PER_MINUTE", default_value_t = Limits::default().space_puts_per_minute)]
    pub space_puts_per_minute: u32,

    /// WebSocket read buffer per connection, in bytes.
    #[arg(long, env = "MEND_WS_READ_BUFFER_BYTES", default_value_t = WsBuffers::default().read_buffer_bytes)]
    pub ws_read_buffer_bytes: usize,
    /// WebSocket write buffering per connection, in bytes (0 writes each message at once).
    #[arg(long, env = "MEND_WS_WRITE_BUFFER_BYTES", default_value_t = WsBuffers::default().write_buffer_bytes)]
    pub ws_write_buffer_bytes: usize,
    /// Most writes the SQLite writer commits in one transaction.
    #[arg(long, env = "MEND_GROUP_COMMIT_MAX", default_value_t = GroupCommit::default().max_batch)]
    pub group_commit_max: usize,
    /// Milliseconds between background WAL checkpoints.
    #[arg(long, env = "MEND_CHECKPOINT_INTERVAL_MS", default_value_t = GroupCommit::default().checkpoint_interval.as_millis() as u64)]
    pub checkpoint_interval_ms: u64,
    /// WAL pages after which the writer checkpoints itself (letting the WAL restart).
    #[arg(long, env = "MEND_AUTOCHECKPOINT_PAGES", default_value_t = GroupCommit::default().autocheckpoint_pages)]
    pub autocheckpoint_pages: u32,
    /// Seconds a shutdown waits for in-flight work.
    #[arg(long, env = "MEND_SHUTDOWN_GRACE_SECS", default_value_t = 10)]
    pub shutdown_grace_secs: u64,
}

/// Subcommands.
#[derive(Debug, Subcommand)]
pub enum Command {
    /// Print the pin of a certificate (`sha256/` + base64 of the SHA-256 of its
    /// SubjectPublicKeyInfo), the value devices are given for a self-hosted relay.
    Pin {
        /// PEM certificate; the first certificate of the file is pinned.
        #[arg(long, env = "MEND_TLS_CERT")]
        tls_cert: PathBuf,
    },
    /// Recount every space's stored bytes and rows, and the relay-wide total, from the rows
    /// themselves, and report any counter that differs. Exit status 0: all match; 1: some
    /// differ; 2: could not check (no database, another schema version, in use). Reads every
    /// row. With SQLite, run it while the relay is stopped (the data directory is locked);
    /// with PostgreSQL, instances may keep serving.
    Check {
        /// Set every counter that differs to the recount (exit status 0 once repaired). With
        /// PostgreSQL, writes to the spaces set right wait while they are recounted (500 at a
        /// time), then every write waits while the total is summed from the spaces.
        #[arg(long)]
        repair: bool,
    },
}

impl Args {
    /// The configuration these flags describe.
    pub fn config(&self) -> Config {
        let mut config = Config::new(self.data_dir.clone());
        config.listen = self.listen;
        config.metrics_listen = self.metrics_listen;
        config.limits = Limits {
            max_chunk_bytes: self.max_chunk_bytes,
            max_snapshot_bytes: self.max_snapshot_bytes,
            space_quota_bytes: self.space_quota_bytes,
            max_total_bytes: self.max_total_bytes,
            max_ws_message_bytes: self
                .max_ws_message_bytes
                .unwrap_or(self.max_chunk_bytes + 1024),
            rate_per_space: self.rate_per_space,
            rate_burst: self.rate_burst,
            max_connections: self.max_connections,
            max_connections_per_space: self.max_connections_per_space,
            idle_timeout: Duration::from_secs(self.idle_timeout_secs),
            header_timeout: Duration::from_secs(self.header_timeout_secs),
            body_timeout: Duration::from_secs(self.body_timeout_secs),
            write_timeout: Duration::from_secs(self.write_timeout_secs),
            min_body_rate: Limits::default().min_body_rate,
            max_queued_writes: self.max_queued_writes,
            max_queued_writes_per_address: self.max_queued_writes_per_address,
            max_inflight_pushes_per_space: self.max_inflight_pushes_per_space,
            max_inflight_pushes: self.max_inflight_pushes,
            prune_grace: Duration::from_secs(self.prune_grace_secs),
            sweep_interval: Duration::from_secs(self.sweep_interval_secs),
            sweep_batch: self.sweep_batch,
            max_body_bytes_per_space: self.max_body_bytes_per_space,
            max_body_bytes_per_address: self.max_body_bytes_per_address,
            max_body_bytes: self.max_body_bytes,
            default_page_chunks: Limits::default().default_page_chunks,
            max_page_bytes: self.max_page_bytes,
            creations_per_address: self.creations_per_address,
            creation_window: Duration::from_secs(self.creation_window_secs),
            max_connections_per_address: self.max_connections_per_address,
            client_ip_header: self.client_ip_header.clone(),
            pairing_ttl: Duration::from_secs(self.pairing_ttl_secs),
            pairing_opens_per_minute: self.pairing_opens_per_minute,
            pairing_claims_per_minute: self.pairing_claims_per_minute,
            max_live_pairings: self.max_live_pairings,
            failed_auths_per_minute: self.failed_auths_per_minute,
            space_puts_per_minute: self.space_puts_per_minute,
            min_chunk_bytes: Limits::default().min_chunk_bytes,
        };
        config.database_url = self.database_url.clone().map(DatabaseUrl);
        config.postgres = Postgres {
            pool_size: self.db_pool_size,
            acquire_timeout: Duration::from_millis(self.db_acquire_timeout_ms),
            statement_timeout: Duration::from_millis(self.db_statement_timeout_ms),
            writers: self.db_writers,
            max_batch: self.db_batch_max,
            ..Postgres::default()
        };
        config.ws = WsBuffers {
            read_buffer_bytes: self.ws_read_buffer_bytes,
            write_buffer_bytes: self.ws_write_buffer_bytes,
        };
        config.group_commit.max_batch = self.group_commit_max;
        config.group_commit.checkpoint_interval =
            Duration::from_millis(self.checkpoint_interval_ms);
        config.group_commit.autocheckpoint_pages = self.autocheckpoint_pages;
        config.shutdown_grace = Duration::from_secs(self.shutdown_grace_secs);
        config.tls = match (&self.tls_cert, &self.tls_key) {
            (Some(cert), Some(key)) => Some(TlsFiles {
                cert: cert.clone(),
                key: key.clone(),
            }),
            _ => None,
        };
        config
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_are_valid_and_flags_apply() {
        let args = Args::parse_from(["mend-relay"]);
        let config = args.config();
        assert_eq!(config.listen, SocketAddr::from(([127, 0, 0, 1], 8787)));
        assert_eq!(config.data_dir, PathBuf::from("./mend-data"));
        assert!(config.validate().is_ok());
        let args = Args::parse_from([
            "mend-relay",
            "--max-chunk-bytes",
            "2048",
            "--idle-timeout-secs",
            "5",
            "--write-timeout-secs",
            "7",
            "--log-format",
            "json",
        ]);
        let config = args.config();
        assert_eq!(config.limits.max_chunk_bytes, 2048);
        assert_eq!(config.limits.max_ws_message_bytes, 3072);
        assert_eq!(config.limits.idle_timeout, Duration::from_secs(5));
        assert_eq!(config.limits.write_timeout, Duration::from_secs(7));
        assert_eq!(args.log_format, LogFormat::Json);
        assert!(config.database_url.is_none(), "SQLite is the default");
        let pg = Args::parse_from([
            "mend-relay",
            "--database-url",
            "postgres://u:secret@db/mend",
        ])
        .config();
        let shown = format!("{pg:?}");
        assert!(
            pg.database_url.is_some() && !shown.contains("secret"),
            "{shown}"
        );
        let tls = Args::parse_from(["mend-relay", "--tls-cert", "c.pem", "--tls-key", "k.pem"]);
        assert_eq!(
            tls.config().tls,
            Some(TlsFiles {
                cert: "c.pem".into(),
                key: "k.pem".into()
            })
        );
        for half in [["--tls-cert", "c.pem"], ["--tls-key", "k.pem"]] {
            let parsed = Args::try_parse_from(["mend-relay", half[0], half[1]]);
            assert!(parsed.is_err(), "{half:?} alone must be refused");
        }
        let pin = Args::parse_from(["mend-relay", "pin", "--tls-cert", "c.pem"]);
        assert!(matches!(pin.command, Some(Command::Pin { .. })));
        let bad = Args::parse_from(["mend-relay", "--max-ws-message-bytes", "10"]);
        assert!(bad.config().validate().is_err());
        let budgets = Args::parse_from([
            "mend-relay",
            "--max-body-bytes-per-space",
            "40000000",
            "--max-body-bytes",
            "90000000",
            "--sweep-interval-secs",
            "30",
            "--sweep-batch",
            "50",
        ])
        .config();
        assert!(budgets.validate().is_ok());
        assert_eq!(
            (
                budgets.limits.max_body_bytes_per_space,
                budgets.limits.max_body_bytes,
                budgets.limits.sweep_interval,
                budgets.limits.sweep_batch
            ),
            (40_000_000, 90_000_000, Duration::from_secs(30), 50)
        );
        for small in [
            ["--max-body-bytes-per-space", "1000"],
            ["--max-body-bytes", "1000"],
            ["--max-body-bytes-per-address", "1000"],
            ["--sweep-interval-secs", "0"],
            ["--write-timeout-secs", "0"],
            ["--max-queued-writes-per-address", "0"],
            ["--space-puts-per-minute", "0"],
        ] {
            let parsed = Args::parse_from(["mend-relay", small[0], small[1]]);
            assert!(parsed.config().validate().is_err(), "{small:?}");
        }
        // Each push writer keeps a connection: the pool must have one left for everything else.
        for (pool, writers, fits) in [("1", "1", false), ("2", "2", false), ("2", "1", true)] {
            let parsed = Args::parse_from([
                "mend-relay",
                "--db-pool-size",
                pool,
                "--db-writers",
                writers,
            ]);
            let verdict = parsed.config().validate();
            assert_eq!(verdict.is_ok(), fits, "{pool} / {writers}: {verdict:?}");
        }
    }
}
