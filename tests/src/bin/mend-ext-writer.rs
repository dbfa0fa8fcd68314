//! One process of the `extension` end-to-end test: opens a journal in extension locking mode
//! and runs commands from stdin, one per line, answering each on stdout. The first three lines
//! are the database path, the keyring secret (on stdin, never on the command line) and the
//! relay's TLS pin.
//!
//! `add <feeling>` → `added <id>`; `sync` → `synced pending=<n> problems=<n> syncing=<bool>`;
//! `has <id>` → `has yes|no`; `hold` → `holding`, then the lock stays held until the next line
//! (`release` → `released`); `quit` closes the journal. A failure answers `error <message>`.

use std::{
    io::{BufRead, Write},
    path::PathBuf,
    time::Duration,
};

use anyhow::{Context, Result};
use mend_client::{Device, Keyring, RelayOptions};
use mend_core::{
    Body, LockMode, RecordId, crypto::RelayPin, journal::OpenOptions, model::Share,
    store::Durability,
};
use mend_e2e::ROUND;

fn main() -> Result<()> {
    let stdin = std::io::stdin();
    let mut lines = stdin.lock().lines();
    let mut next =
        || -> Result<String> { lines.next().context("stdin closed")?.map_err(Into::into) };
    let path = PathBuf::from(next()?);
    let keyring = Keyring::from_secret_string(&next()?)?;
    let relay = RelayOptions {
        pin: Some(RelayPin::parse(&next()?)?),
        ..RelayOptions::default()
    };
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()?;
    let options = OpenOptions {
        durability: Durability::Normal,
        // Generous: the other process's step may be slowed by a loaded machine.
        lock: LockMode::Extension {
            wait: Duration::from_secs(30),
        },
        ..OpenOptions::default()
    };
    let device = Device::open(&path, keyring, options, relay, None)?;
    let mut out = std::io::stdout();
    loop {
        let line = next()?;
        let (command, arg) = line.split_once(' ').unwrap_or((line.as_str(), ""));
        let answer = match command {
            "add" => device
                .write(|j| {
                    j.add(Body::Share(Share {
                        feeling: arg.to_owned(),
                        tough_question: false,
                    }))
                })
                .map(|id| format!("added {id}")),
            "sync" => runtime.block_on(device.sync_now(ROUND)).map(|s| {
                format!(
                    "synced pending={} problems={} syncing={}",
                    s.pending,
                    s.problems.len(),
                    s.syncing
                )
            }),
            "has" => {
                let id: RecordId = arg.parse()?;
                let found = device.read(|j| Ok(j.get(id).is_ok()))?;
                Ok(format!("has {}", if found { "yes" } else { "no" }))
            }
            "hold" => device.write(|_| {
                // Inside a write: the lock is held until the test says so.
                println!("holding");
                let _ = std::io::stdout().flush();
                let release = next().map_err(|e| mend_core::Error::Invalid(e.to_string()))?;
                Ok(format!("{release}d"))
            }),
            "quit" => break,
            other => Ok(format!("error unknown command {other}")),
        };
        match answer {
            Ok(text) => writeln!(out, "{text}")?,
            Err(e) => writeln!(out, "error {e}")?,
        }
        out.flush()?;
    }
    runtime.block_on(device.close())?;
    Ok(())
}
