//! `mend`, the reference terminal client: how a newcomer tries Mend, and a second client that
//! keeps mend-core's API honest. It parses, calls mend-core and prints; the journal's rules
//! live in mend-core alone (architecture invariant).
//!
//! Every failure ends as one line on stderr (`mend: …`) and an exit code listed in
//! `mend --help`; nothing secret or personal is logged.

mod choice;
mod cli;
mod commands;
mod dates;
mod failure;
mod fields;
mod home;
mod lookup;
mod render;
mod term;

use std::{io::IsTerminal, process::ExitCode};

use clap::Parser;
use tracing_subscriber::EnvFilter;

fn main() -> ExitCode {
    // A bug must not print a backtrace or a panic message, which could quote journal text.
    std::panic::set_hook(Box::new(|info| {
        let at = info
            .location()
            .map(|l| format!(" at {}:{}", l.file(), l.line()))
            .unwrap_or_default();
        eprintln!("mend: internal error{at}; please report it");
    }));
    let cli = cli::Cli::parse();
    init_logging(cli.verbose);
    match commands::run(cli) {
        Ok(()) => ExitCode::SUCCESS,
        Err(error) => {
            let (message, exit) = failure::report(&error);
            tell!("mend: {message}");
            exit.into()
        }
    }
}

/// tungstenite logs the whole handshake request, relay token included, at TRACE.
const WEBSOCKET_REDACTIONS: &str = "tungstenite=debug,tokio_tungstenite=debug";

/// Logs to stderr only when asked. Automerge logs journal text at TRACE, so its targets are
/// always held back by mend-core's redactions, whatever the level.
fn init_logging(verbose: u8) {
    let level = match verbose {
        0 => return,
        1 => "info",
        2 => "debug",
        _ => "trace",
    };
    let filter = EnvFilter::new(format!(
        "{level},{},{WEBSOCKET_REDACTIONS}",
        mend_client::LOG_REDACTIONS
    ));
    let _ = tracing_subscriber::fmt()
        .with_writer(std::io::stderr)
        .with_ansi(std::io::stderr().is_terminal())
        .with_env_filter(filter)
        .try_init();
}
