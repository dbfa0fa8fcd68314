//! The `mend-relay` binary: parse flags, open storage, serve until SIGTERM or Ctrl-C; with TLS,
//! re-read the certificate on SIGHUP.

use anyhow::Context;
use clap::Parser;
use std::sync::Arc;

use mend_relay::{
    AppState, Config,
    cli::{Args, Command},
    live::LocalHub,
    run, run_metrics, run_tls,
    storage::{Storage, postgres::PostgresStorage, sqlite::SqliteStorage},
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
    config.validate()?;
    if let Some(Command::Check { repair }) = args.command {
        return check(config, repair).await;
    }
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
    let metrics = match state.config().metrics_listen {
        Some(addr) => {
            let bound = TcpListener::bind(addr)
                .await
                .with_context(|| format!("binding the metrics address {addr}"))?;
            Some(tokio::spawn(run_metrics(bound, state.clone())))
        }
        None => None,
    };
    match tls {
        Some(tls) => run_tls(listener, state, tls, shutdown_signal()).await?,
        None => run(listener, state, shutdown_signal()).await?,
    }
    reloads.abort();
    if let Some(metrics) = metrics {
        // Shutdown has begun, so it is ending; one that does not is not waited for.
        let _ = tokio::time::timeout(std::time::Duration::from_secs(1), metrics).await;
    }
    Ok(())
}

/// `mend-relay check`: recounts the counters, prints what it found, and exits 1 if any
/// counter differs and was not repaired.
async fn check(config: Config, repair: bool) -> anyhow::Result<()> {
    let hub = Arc::new(LocalHub::default());
    let storage: Arc<dyn Storage> = match &config.database_url {
        Some(url) => Arc::new(
            PostgresStorage::open(&url.0, config.postgres, hub)
                .await
                .context("opening the PostgreSQL database")?,
        ),
        None => Arc::new(
            SqliteStorage::open(&config.data_dir, hub, config.group_commit)
                .context("opening storage")?,
        ),
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
        std::process::exit(1);
    }
    Ok(())
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
