//! A home's life: `init` a journal, `invite` a partner or device, `join` with an invite, and
//! `erase` it all.

use std::{sync::Arc, time::Duration};

use anyhow::Result;
use mend_client::{Device, SyncObserver};
use mend_core::{
    crypto::{Invite, InviteKind},
    journal::OpenOptions,
};
use qrcode::{QrCode, render::unicode::Dense1x2};

use super::{
    reading,
    sync::{Tracker, round},
};
use crate::{
    failure::{Exit, Failure},
    home::Home,
    say,
    term::plural,
};

/// `init`: a new journal and its keys; no network needed.
pub fn init(home: &Home, relay: &str, name: &str) -> Result<()> {
    home.ensure_empty()?;
    let device = Device::create(
        &home.journal_path(),
        name,
        relay,
        OpenOptions::default(),
        home.relay(),
        None,
    )
    .inspect_err(|_| home.discard_new())?;
    if let Err(e) = home.save_keyring(device.keyring()) {
        drop(device);
        home.discard_new();
        return Err(e);
    }
    say!(
        "Created a journal for {} in {}.",
        name.trim(),
        home.dir().display()
    );
    say!("Next: `mend invite` shows the code your partner joins with.");
    Ok(())
}

/// `invite`: the code as text, and as a QR code unless `--plain`.
pub fn invite(home: &Home, plain: bool, for_device: bool) -> Result<()> {
    let device = home.open(None)?;
    let code = if for_device {
        device.device_invite()?
    } else {
        device.partner_invite()?
    };
    if plain {
        say!("{code}");
        return Ok(());
    }
    let who = if for_device {
        "your other device"
    } else {
        "your partner"
    };
    say!("Invite for {who} (it opens your journal: share it only with them):");
    say!("");
    say!("{code}");
    say!("");
    let qr = QrCode::new(code.as_bytes())
        .map_err(|e| Failure::new(Exit::Local, format!("cannot draw the QR code: {e}")))?;
    let drawn = qr
        .render::<Dense1x2>()
        .dark_color(Dense1x2::Light)
        .light_color(Dense1x2::Dark)
        .quiet_zone(true)
        .build();
    say!("{drawn}");
    say!("");
    say!("They run: mend join <code> --name <their name>");
    Ok(())
}

/// `join`: a replica from an invite, filled by a first sync.
pub async fn join(home: &Home, code: &str, name: Option<&str>, timeout: u64) -> Result<()> {
    let invite = Invite::decode(code)?;
    let partner_invite = matches!(invite.kind, InviteKind::Partner);
    let name = match (partner_invite, name) {
        (true, Some(n)) => n,
        (true, None) => {
            return Err(Failure::new(Exit::Usage, "joining as a partner needs --name NAME").into());
        }
        // A second device belongs to a partner who already has a name.
        (false, _) => "",
    };
    home.ensure_empty()?;
    let tracker = Tracker::new();
    let observer: Arc<dyn SyncObserver> = tracker.clone();
    let device = Device::join(
        &home.journal_path(),
        code,
        name,
        OpenOptions::default(),
        home.relay(),
        Some(observer),
    )
    .inspect_err(|_| home.discard_new())?;
    if let Err(e) = home.save_keyring(device.keyring()) {
        drop(device);
        home.discard_new();
        return Err(e);
    }
    let problem = match round(&device, &tracker, Duration::from_secs(timeout.max(1))).await {
        Ok(done) => done.problem,
        Err(e) => {
            let (message, exit) = crate::failure::report(&e);
            return Err(Failure::new(
                exit,
                format!("joined, but the journal could not be fetched yet: {message}; run `mend sync` to finish"),
            )
            .into());
        }
    };
    reading(&device, |journal| -> Result<()> {
        let records = plural(journal.records()?.len(), "record");
        let me = journal
            .partners()
            .into_iter()
            .find(|p| p.id == journal.me());
        let my_name = me.map_or_else(String::new, |p| p.name);
        match (partner_invite, journal.partner()) {
            (true, Some(other)) => say!("Joined {}'s journal as {my_name}: {records}.", other.name),
            (true, None) => say!(
                "Joined as {my_name}. Your partner's entries arrive once their device has synced; \
                 run `mend sync` then."
            ),
            (false, _) => say!("This device now holds {my_name}'s journal: {records}."),
        }
        Ok(())
    })?;
    match problem {
        Some(problem) => Err(problem.into()),
        None => Ok(()),
    }
}

/// `erase --yes`: the relay's copy first (both spaces), then this device's files.
pub async fn erase(home: &Home, yes: bool) -> Result<()> {
    if !yes {
        return Err(Failure::new(
            Exit::Usage,
            "erase deletes this journal at the relay, for both partners, and this device's copy; \
             nothing can bring it back. Run `mend erase --yes` to do it",
        )
        .into());
    }
    let device = home.open(None)?;
    let relay = device.keyring().relay_url.clone();
    device.erase_remote().await.map_err(|e| match e {
        mend_core::Error::Unreachable => Failure::new(
            Exit::Unreachable,
            format!("cannot reach the relay at {relay}; nothing was erased"),
        )
        .into(),
        other => anyhow::Error::from(other),
    })?;
    drop(device);
    home.erase_local()?;
    say!("Erased the journal at the relay and on this device.");
    say!("Your partner's device keeps its own copy until they erase it there.");
    Ok(())
}
