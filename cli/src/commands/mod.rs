//! One function per command: open the home, call mend-core, print. No journal rules live here.

mod devices;
mod export;
mod pairing;
mod progress;
mod records;
mod sync;
mod today;
mod view;

use anyhow::Result;
use mend_client::Device;
use mend_core::{Journal, crypto::PairingKind};

use crate::{
    cli::{Cli, Command},
    failure::{Exit, Failure},
    home::Home,
};

/// Runs the parsed command line.
pub fn run(cli: Cli) -> Result<()> {
    let relay = mend_client::RelayOptions {
        pin: cli.relay_pin,
        allow_insecure_cleartext: cli.insecure_cleartext_relay,
        extra_roots: Vec::new(),
    };
    let home = Home::resolve(cli.home, relay)?;
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(|e| Failure::new(Exit::Local, format!("cannot start: {e}")))?;
    runtime.block_on(dispatch(&home, cli.command))
}

async fn dispatch(home: &Home, command: Command) -> Result<()> {
    match command {
        Command::Init {
            relay,
            name,
            device_name,
        } => pairing::init(home, &relay, &name, device_name.as_deref()),
        Command::Invite {
            plain,
            code,
            device,
            rejoin,
            yes,
        } => {
            let kind = match (device, rejoin) {
                (true, _) => PairingKind::Device,
                (_, true) => PairingKind::Rejoin,
                _ => PairingKind::Partner,
            };
            pairing::invite(home, plain, code, kind, yes).await
        }
        Command::Join {
            code,
            name,
            relay,
            timeout,
            device_name,
        } => {
            let device_name = device_name.as_deref();
            let (name, relay) = (name.as_deref(), relay.as_deref());
            pairing::join(home, &code, name, relay, timeout, device_name).await
        }
        Command::Devices {
            action: None,
            timeout,
            json,
        } => devices::devices(home, timeout, json).await,
        Command::Devices {
            action: Some(crate::cli::DevicesAction::Remove { device, yes }),
            timeout,
            ..
        } => devices::remove(home, &device, yes, timeout).await,
        Command::Rejoin { action: None } => pairing::rejoin_status(home),
        Command::Rejoin {
            action: Some(crate::cli::RejoinAction::Ask { timeout }),
        } => pairing::rejoin_ask(home, timeout).await,
        Command::Rejoin {
            action: Some(crate::cli::RejoinAction::Cancel { timeout }),
        } => pairing::rejoin_cancel(home, timeout).await,
        Command::Erase { yes } => pairing::erase(home, yes).await,
        Command::Forget { yes, timeout } => pairing::forget(home, yes, timeout).await,
        Command::Add {
            record_kind,
            text,
            fields,
        } => records::add(home, record_kind, words(text)?, fields),
        Command::Edit { id, text, fields } => records::edit(home, &id, words(text)?, fields),
        Command::Reply { share, text, kind } => records::reply(home, &share, words(text)?, kind),
        Command::Validate { target, text } => records::validate(home, &target, words(text)?),
        Command::Answer { question, text } => {
            let text = words(Some(text))?.unwrap_or_default();
            records::answer(home, &question, text)
        }
        Command::Consent { boundary, choice } => records::consent(home, &boundary, choice),
        Command::Claim {
            commitment,
            status,
            date,
            note,
        } => {
            let note = words(Some(note))?.unwrap_or_default();
            records::claim(home, &commitment, status, date.as_deref(), &note)
        }
        Command::Confirm {
            commitment,
            view,
            date,
            note,
        } => {
            let note = words(Some(note))?.unwrap_or_default();
            records::confirm(home, &commitment, view, date.as_deref(), &note)
        }
        Command::Respond {
            need,
            response,
            note,
        } => {
            let note = words(Some(note))?.unwrap_or_default();
            records::respond(home, &need, response, &note)
        }
        Command::QuestionStatus { question, status } => {
            records::question_status(home, &question, status)
        }
        Command::ShareNote { id } => records::share_note(home, &id),
        Command::Remove { id } => records::remove(home, &id),
        Command::List {
            kind,
            mine,
            partner,
            removed,
            shared,
            limit,
            json,
        } => {
            let filter = view::ListFilter {
                kinds: kind,
                mine,
                partner,
                removed,
                shared,
                limit,
            };
            view::list(home, &filter, json)
        }
        Command::Show { id, json } => view::show(home, &id, json),
        Command::Today { json } => today::today(home, json),
        Command::Settle { id, field, choice } => records::settle(home, &id, &field, choice),
        Command::Progress { weeks, json } => progress::progress(home, weeks, json),
        Command::Sync { timeout } => sync::sync(home, timeout).await,
        Command::Watch { duration } => sync::watch(home, duration).await,
        Command::Status {
            check,
            timeout,
            json,
        } => sync::status(home, check, timeout, json).await,
        Command::Export {
            format,
            out,
            from,
            to,
            kind,
            force,
        } => {
            let range = export::Range {
                from,
                to,
                kinds: kind,
            };
            export::export(home, format, &out, &range, force)
        }
    }
}

/// Runs a command's reads, which may fail with the CLI's own errors, on the device's read-only
/// connection (writes go through `Device::write`).
fn reading<T, E: Into<anyhow::Error>>(
    device: &Device,
    f: impl FnOnce(&Journal) -> std::result::Result<T, E>,
) -> Result<T> {
    device.read(|j| Ok(f(j)))?.map_err(Into::into)
}

/// Most a command reads from standard input for its words (well over the longest field).
const MAX_STDIN: u64 = 1 << 20;

/// Words given as `-` are read from standard input: a journal entry typed on the command line
/// would stay in the shell's history and show in the process list while it runs.
fn words(text: Option<String>) -> Result<Option<String>> {
    use std::io::Read;
    if text.as_deref() != Some("-") {
        return Ok(text);
    }
    let mut read = String::new();
    std::io::stdin()
        .take(MAX_STDIN.saturating_add(1))
        .read_to_string(&mut read)
        .map_err(|e| {
            Failure::new(
                Exit::Input,
                format!("cannot read the words from standard input: {e}"),
            )
        })?;
    if read.len() as u64 > MAX_STDIN {
        return Err(Failure::new(
            Exit::Input,
            "more than 1 MiB on standard input; a journal entry is prose, not a file",
        )
        .into());
    }
    let trimmed = read.strip_suffix('\n').unwrap_or(&read);
    let trimmed = trimmed.strip_suffix('\r').unwrap_or(trimmed);
    Ok(Some(trimmed.to_owned()))
}
