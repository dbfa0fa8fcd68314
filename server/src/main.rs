//! The `mend-relay` binary: parse flags, open storage, serve until SIGTERM or Ctrl-C.

use anyhow::Context;
use clap::Parser;
use mend_relay::{AppState, cli::Args, run, telemetry};
use tokio::net::TcpListener;

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    telemetry::init(args.log_format, &args.log);
    let config = args.config();
    config.validate()?;
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
    run(listener, state, shutdown_signal()).await?;
    Ok(())
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
