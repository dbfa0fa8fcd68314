//! The `mend-relay` binary: parse flags, open storage, serve until SIGTERM or Ctrl-C; with TLS,
//! re-read the certificate on SIGHUP.

use std::sync::Arc;

use anyhow::Context;
use clap::Parser;
use mend_relay::{
    AppState, Config,
    cli::{Args, Command},
    live::LocalHub,
    run, run_metrics, run_tls,
    storage::{
        Storage,
        postgres::{PostgresStorage, SCHEMA_VERSION as PG_SCHEMA_VERSION},
        sqlite::SqliteStorage,
    },
    telemetry,
    tls::{Tls, pin_of_file},
};
use tokio::net::TcpListener;

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    if let Some(Command::Pin { tls_cert }) = &args.command {
        println!("{}", pin_of_file(tls_cert)?);
        return Ok(());
    }
    telemetry::init(args.log_format, &args.log);
    let config = args.config();
    if let Some(Command::Check { repair }) = args.command {
        // 0: every counter matches (or was repaired); 1: some differ; 2: could not check.
        let checked = match config.validate() {
            Ok(()) => check(config, repair).await,
            Err(error) => Err(error.into()),
        };
        let code = match checked {
            Ok(true) => 0,
            Ok(false) => 1,
            Err(error) => {
                eprintln!("error: {error:#}");
                2
            }
        };
        std::process::exit(code);
    }
    config.validate()?;
    // Before storage opens: a bad certificate fails the start at once, naming the file.
    let tls = config
        .tls
        .as_ref()
        .map(Tls::load)
        .transpose()
        .context("loading the TLS certificate")?;
    // Installed before the relay listens, so a SIGHUP never finds the default (terminate).
    let reloads = reload_on_hangup(tls.clone())?;
    let listen = config.listen;
    let state = match config.database_url.clone() {
        Some(url) => AppState::open_postgres(config, &url.0)
            .await
            .context("opening the PostgreSQL database")?,
        None => AppState::open_sqlite(config).context("opening storage")?,
    };
    let listener = TcpListener::bind(listen)
        .await
        .with_context(|| format!("binding {listen}"))?;
    // The metrics address stops after the public side has drained (below).
    let metrics_stop = tokio_util::sync::CancellationToken::new();
    let metrics = match state.config().metrics_listen {
        Some(addr) => {
            let bound = TcpListener::bind(addr)
                .await
                .with_context(|| format!("binding the metrics address {addr}"))?;
            let stop = metrics_stop.clone();
            Some(tokio::spawn(run_metrics(
                bound,
                state.clone(),
                async move {
                    stop.cancelled().await;
                },
            )))
        }
        None => None,
    };
    match tls {
        Some(tls) => run_tls(listener, state, tls, shutdown_signal()).await?,
        None => run(listener, state, shutdown_signal()).await?,
    }
    reloads.abort();
    metrics_stop.cancel();
    if let Some(metrics) = metrics {
        let _ = metrics.await;
    }
    Ok(())
}

/// `mend-relay check`: recounts the counters and prints what it found; whether every counter
/// matches now. It checks only a database of this binary's own schema, so it never creates
/// one (a mistyped directory) nor migrates one that other instances still serve.
async fn check(config: Config, repair: bool) -> anyhow::Result<bool> {
    let hub = Arc::new(LocalHub::default());
    let storage: Arc<dyn Storage> = match &config.database_url {
        Some(url) => {
            let found = PostgresStorage::schema_version(&url.0)
                .await
                .context("reading the PostgreSQL database's schema version")?;
            anyhow::ensure!(
                found == PG_SCHEMA_VERSION,
                "the database's schema is version {found}, this relay's {PG_SCHEMA_VERSION}: \
                 check it with the relay version that serves it"
            );
            Arc::new(
                PostgresStorage::open(&url.0, config.postgres, hub)
                    .await
                    .context("opening the PostgreSQL database")?,
            )
        }
        None => {
            let dir = config.data_dir.display();
            let found = SqliteStorage::schema_version(&config.data_dir)
                .with_context(|| format!("reading the database in {dir}"))?
                .with_context(|| format!("no relay database in {dir} (see --data-dir)"))?;
            anyhow::ensure!(
                found == SqliteStorage::SCHEMA_VERSION,
                "the database's schema is version {found}, this relay's {}: check it with the \
                 relay version that serves it",
                SqliteStorage::SCHEMA_VERSION
            );
            Arc::new(
                SqliteStorage::open(&config.data_dir, hub, config.group_commit)
                    .context("opening storage")?,
            )
        }
    };
    let audit = storage.audit(repair).await;
    storage.close().await.context("closing storage")?;
    let audit = audit.context("recounting")?;
    println!(
        "checked {} spaces: {} with counters that differ from their rows",
        audit.spaces, audit.spaces_off
    );
    println!(
        "relay-wide total: {} bytes counted, {} recounted",
        audit.counted_total, audit.actual_total
    );
    if audit.repaired {
        println!("repaired: every counter now matches the rows");
    } else if !audit.clean() {
        println!("run `mend-relay check --repair` to set the counters to the recount");
        return Ok(false);
    }
    Ok(true)
}

/// On each SIGHUP, re-reads the certificate and key; a failed reload keeps serving the old
/// certificate. Live connections are untouched either way.
#[cfg(unix)]
fn reload_on_hangup(tls: Option<Tls>) -> anyhow::Result<tokio::task::JoinHandle<()>> {
    use tokio::signal::unix::{SignalKind, signal};
    let mut hangups = signal(SignalKind::hangup()).context("listening for SIGHUP")?;
    Ok(tokio::spawn(async move {
        while hangups.recv().await.is_some() {
            let Some(tls) = &tls else {
                tracing::info!("SIGHUP: no TLS certificate to reload");
                continue;
            };
            match tls.reload() {
                Ok(pin) => tracing::info!(%pin, "TLS certificate reloaded"),
                Err(error) => {
                    tracing::warn!(%error, "TLS reload failed; still serving the previous certificate");
                }
            }
        }
    }))
}

#[cfg(not(unix))]
fn reload_on_hangup(_tls: Option<Tls>) -> anyhow::Result<tokio::task::JoinHandle<()>> {
    Ok(tokio::spawn(async {}))
}

/// Resolves on SIGTERM or Ctrl-C (SIGINT).
async fn shutdown_signal() {
    let interrupt = tokio::signal::ctrl_c();
    #[cfg(unix)]
    {
        use tokio::signal::unix::{SignalKind, signal};
        match signal(SignalKind::terminate()) {
            Ok(mut terminate) => {
                tokio::select! {
                    _ = interrupt => {}
                    _ = terminate.recv() => {}
                }
            }
            Err(error) => {
                tracing::warn!(%error, "cannot listen for SIGTERM; Ctrl-C only");
                let _ = interrupt.await;
            }
        }
    }
    #[cfg(not(unix))]
    {
        let _ = interrupt.await;
    }
}
