//! A home's life: `init` a journal, `invite` a partner or device, `join` with an invite, and
//! `erase` it all.

use std::{sync::Arc, time::Duration};

use anyhow::Result;
use mend_client::{Device, RejoinAsks, SyncObserver};
use mend_core::{
    crypto::{PairingInvite, PairingKind, ShortCode},
    journal::OpenOptions,
};
use qrcode::{QrCode, render::unicode::Dense1x2};
use zeroize::Zeroizing;

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
pub fn init(home: &Home, relay: &str, name: &str, device_name: Option<&str>) -> Result<()> {
    let device_name = super::devices::device_name(device_name)?;
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
    if let Err(e) = home.save_keyring(&device.keyring()) {
        drop(device);
        home.discard_new();
        return Err(e);
    }
    // Written beside this device's certificate on its first sync.
    device.set_device_name(&device_name)?;
    say!(
        "Created a journal for {} in {}.",
        name.trim(),
        home.dir().display()
    );
    say!("Next: `mend invite` shows the code your partner joins with.");
    Ok(())
}

/// `invite`: opens a pairing at the relay, shows the invite (with a QR code unless `--plain`)
/// or a short code, waits for the joiner and asks whether to let them in.
pub async fn invite(
    home: &Home,
    plain: bool,
    short: bool,
    kind: PairingKind,
    yes: bool,
) -> Result<()> {
    let device = home.open(None)?;
    let mut invitation = device.invite(kind, short).await?;
    let minutes = invitation
        .expires_at()
        .saturating_sub(mend_client::unix_now())
        .div_ceil(60);
    if plain {
        say!("{}", invitation.code());
    } else {
        let who = match kind {
            PairingKind::Device => "your other device",
            PairingKind::Partner => "your partner",
            PairingKind::Rejoin => "your partner's new device",
        };
        if invitation.is_short() {
            say!("Read this code to {who} (it works once, for {minutes} minutes):");
            say!("");
            say!("    {}", invitation.code());
            say!("");
            say!(
                "They run: mend join {} --relay {} --name <their name>",
                invitation.code(),
                device.keyring().relay_url
            );
        } else {
            say!("Invite for {who} (it works once, for {minutes} minutes, and holds no key):");
            say!("");
            say!("{}", invitation.code());
            say!("");
            let qr = QrCode::new(invitation.code().as_bytes())
                .map_err(|e| Failure::new(Exit::Local, format!("cannot draw the QR code: {e}")))?;
            let drawn = qr
                .render::<Dense1x2>()
                .dark_color(Dense1x2::Light)
                .light_color(Dense1x2::Dark)
                .quiet_zone(true)
                .build();
            say!("{drawn}");
            say!("");
            say!("They run: mend join <invite> --name <their name>");
        }
        say!("Waiting for them to join…");
    }
    let budget = Duration::from_secs(
        invitation
            .expires_at()
            .saturating_sub(mend_client::unix_now())
            .saturating_add(5),
    );
    let Some(joiner) = invitation.wait_for_joiner(budget).await? else {
        invitation.cancel().await;
        return Err(mend_core::Error::Pairing(mend_core::crypto::PairingFailure::Expired).into());
    };
    let who = match joiner.kind {
        PairingKind::Partner => format!("{} wants to join as your partner", joiner.name),
        PairingKind::Device => "Your other device wants to join".to_owned(),
        PairingKind::Rejoin => "Your partner wants to rejoin on a new device (every old \
                                device of theirs will be shut out)"
            .to_owned(),
    };
    say!("{who}. Their screen should show: {}", joiner.confirmation);
    let accepted = yes || ask("Same words on their screen? Let them in? [y/N] ");
    if accepted {
        if joiner.kind == PairingKind::Rejoin {
            say!("Moving the journal to new secrets first…");
        }
        let moved = device.welcome(invitation, budget).await;
        if joiner.kind == PairingKind::Rejoin {
            // The journal may have moved even if the handover then failed: keep its secrets.
            home.save_keyring(&device.keyring())?;
        }
        moved?;
        match joiner.kind {
            PairingKind::Partner => say!(
                "{} joined. Run `mend sync` to share your entries.",
                joiner.name
            ),
            PairingKind::Device => say!("Your other device joined."),
            PairingKind::Rejoin => say!(
                "Your partner rejoined on their new device; their old devices can no longer \
                 read or write."
            ),
        }
        Ok(())
    } else {
        invitation.decline().await?;
        Err(Failure::new(
            Exit::Pairing,
            format!("{who}: declined; nothing was shared"),
        )
        .into())
    }
}

/// The first line of standard input, for `join -`, in a buffer sized once and wiped on drop.
/// Read byte by byte from the descriptor (on Unix), not through `stdin()`'s reader, whose
/// buffer lives for the whole process and is never wiped.
fn read_code() -> Result<Zeroizing<String>> {
    use std::io::Read;
    // Longer than any invite (a 255-byte relay address included); more is not a code.
    const MOST: usize = 2048;
    #[cfg(unix)]
    let mut input = {
        use std::os::fd::AsFd;
        // A second handle on the inherited descriptor (not /dev/stdin opened again, which a
        // pipe from another user or a socket refuses).
        std::io::stdin()
            .as_fd()
            .try_clone_to_owned()
            .map(std::fs::File::from)
            .map_err(|e| Failure::new(Exit::Input, format!("cannot read the code: {}", e.kind())))?
    };
    #[cfg(not(unix))]
    let mut input = std::io::stdin();
    let mut line = Zeroizing::new(Vec::with_capacity(MOST));
    let mut byte = Zeroizing::new([0u8; 1]);
    while line.len() < MOST {
        match input.read(&mut byte[..]) {
            Ok(0) => break,
            Ok(_) if byte[0] == b'\n' => break,
            Ok(_) => line.push(byte[0]),
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
            Err(e) => {
                return Err(Failure::new(
                    Exit::Input,
                    format!("cannot read the code: {}", e.kind()),
                )
                .into());
            }
        }
    }
    let code = std::str::from_utf8(&line)
        .map_err(|_| Failure::new(Exit::Input, "the code on standard input is not text"))?
        .trim();
    if code.is_empty() {
        return Err(Failure::new(Exit::Input, "no code on standard input").into());
    }
    let mut out = Zeroizing::new(String::with_capacity(code.len()));
    out.push_str(code);
    Ok(out)
}

/// Asks a yes-or-no question on the terminal; anything but yes (or no terminal) is no.
fn ask(question: &str) -> bool {
    use std::io::{BufRead, Write};
    let mut out = std::io::stdout().lock();
    let _ = write!(out, "{}", mend_core::words::terminal_safe(question));
    let _ = out.flush();
    drop(out);
    let mut line = String::new();
    match std::io::stdin().lock().read_line(&mut line) {
        Ok(n) if n > 0 => matches!(line.trim().to_ascii_lowercase().as_str(), "y" | "yes"),
        _ => {
            say!("");
            false
        }
    }
}

/// `join`: pairs with the inviting device, then fills the replica by a first sync.
pub async fn join(
    home: &Home,
    code: &str,
    name: Option<&str>,
    relay: Option<&str>,
    timeout: u64,
    device_name: Option<&str>,
) -> Result<()> {
    let device_name = super::devices::device_name(device_name)?;
    // `-`: the code comes on standard input, out of the process list and the shell's history.
    let typed = if code == "-" {
        Some(read_code()?)
    } else {
        None
    };
    let code = typed.as_deref().map_or(code, String::as_str);
    let short = ShortCode::looks_like(code);
    // A partner invite needs a name before the single-use mailbox is claimed; a short code
    // says what it is for only once claimed, so it always asks for one.
    let needs_name = short
        || PairingInvite::decode(code)
            .map(|i| i.kind == PairingKind::Partner)
            .unwrap_or(false);
    let name = match (needs_name, name) {
        (_, Some(n)) => n,
        (true, None) => {
            return Err(Failure::new(Exit::Usage, "joining as a partner needs --name NAME").into());
        }
        (false, None) => "",
    };
    if short && relay.is_none() {
        return Err(Failure::new(
            Exit::Usage,
            "a short code names no relay: add --relay URL (the one your partner's journal uses)",
        )
        .into());
    }
    home.ensure_empty()?;
    let tracker = Tracker::new();
    let observer: Arc<dyn SyncObserver> = tracker.clone();
    let budget = Duration::from_secs(timeout.clamp(1, 24 * 3600));
    let joining = Device::start_join(code, name, relay, &home.relay(), budget).await?;
    let kind = joining.kind();
    match kind {
        PairingKind::Partner => say!("Joining {}'s journal.", joining.inviter()),
        PairingKind::Device => say!(
            "Joining {}'s journal as another of their devices.",
            joining.inviter()
        ),
        PairingKind::Rejoin => say!(
            "Rejoining the journal you share with {}, on this new device.",
            joining.inviter()
        ),
    }
    say!(
        "Tell them the words on this screen: {} (waiting for them to let you in…)",
        joining.confirmation()
    );
    let device = joining
        .finish(
            &home.journal_path(),
            OpenOptions::default(),
            home.relay(),
            Some(observer),
        )
        .await
        .inspect_err(|_| home.discard_new())?;
    if let Err(e) = home.save_keyring(&device.keyring()) {
        drop(device);
        home.discard_new();
        return Err(e);
    }
    device.set_device_name(&device_name)?;
    let problem = match round(&device, &tracker, budget).await {
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
        match (kind != PairingKind::Device, journal.partner()) {
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

/// `forget --yes`: a new epoch whose journal has no history.
pub async fn forget(home: &Home, yes: bool, timeout: u64) -> Result<()> {
    if !yes {
        return Err(Failure::new(
            Exit::Usage,
            "forget starts the journal over without its history: the words of removed records \
             leave every device as it next syncs, and cannot come back. Run `mend forget --yes` \
             to do it",
        )
        .into());
    }
    let device = home.open(None)?;
    let done = device
        .forget(Duration::from_secs(timeout.clamp(1, 24 * 3600)))
        .await;
    home.keep_keyring(&device)?;
    let done = done?;
    if done.keyring_changed {
        say!("The journal started over without its history on this device.");
        say!("Your partner's devices follow when they next sync.");
    } else {
        say!(
            "Asked for a journal without history; it starts once this device reaches the relay (run `mend sync`)."
        );
    }
    Ok(())
}

/// `rejoin`: what stands of the asks to rejoin.
pub fn rejoin_status(home: &Home) -> Result<()> {
    let device = home.open(None)?;
    let asks = device.rejoin_asks()?;
    let (mine, about_me) = (
        asks.mine,
        asks.about_me.filter(|a| a.cancelled_at.is_none()),
    );
    match mine {
        None => say!("You have not asked to let a new device in as your partner."),
        Some(ask) => say!("{}", own_ask_words(&device, &ask, asks.wait, asks.ready)),
    }
    if about_me.is_none() {
        say!("Nobody asked to let a new device in as you.");
    }
    rejoin_notice(&device, &asks)?;
    Ok(())
}

/// Runs `write` on the device, then a round so that it reaches the relay; if the round fails,
/// says that what was written waits on this device (`waits`, then `then`).
async fn write_and_send<T>(
    home: &Home,
    timeout: u64,
    write: impl FnOnce(&Device) -> mend_core::Result<T>,
    waits: &str,
    then: &str,
) -> Result<(Device, T)> {
    let tracker = Tracker::new();
    let observer: Arc<dyn SyncObserver> = tracker.clone();
    let device = home.open(Some(observer))?;
    let written = write(&device)?;
    let budget = Duration::from_secs(timeout.clamp(1, 24 * 3600));
    round(&device, &tracker, budget).await.map_err(|e| {
        let (message, exit) = crate::failure::report(&e);
        Failure::new(
            exit,
            format!("{waits} on this device, but has not reached the relay yet: {message}; {then}"),
        )
    })?;
    home.keep_keyring(&device)?;
    Ok((device, written))
}

/// `rejoin ask`: asks, then syncs so that the partner's devices see it.
pub async fn rejoin_ask(home: &Home, timeout: u64) -> Result<()> {
    let (device, _) = write_and_send(
        home,
        timeout,
        Device::ask_rejoin,
        "the ask was made",
        "run `mend sync` (the wait counts from when it reaches the relay)",
    )
    .await?;
    let asks = device.rejoin_asks()?;
    let from = asks
        .mine
        .and_then(|ask| ask.ready_at(asks.wait))
        .map_or_else(
            || "once it reaches the relay".to_owned(),
            |at| format!("from {}", crate::dates::instant(at)),
        );
    say!(
        "Asked. Your partner's devices show the ask when they next sync, and any of them can \
         cancel it. Once it has stood for {} uncancelled ({from}), run `mend invite --rejoin` \
         with your partner beside you or on a call.",
        mend_core::journal::describe_wait(asks.wait),
    );
    Ok(())
}

/// `rejoin cancel`: cancels the ask naming this partner, then syncs so the asker's devices
/// see it.
pub async fn rejoin_cancel(home: &Home, timeout: u64) -> Result<()> {
    write_and_send(
        home,
        timeout,
        Device::cancel_rejoin,
        "the cancel was made",
        "run `mend sync` soon",
    )
    .await?;
    say!("Cancelled: no new device comes in as you through this ask.");
    Ok(())
}

/// Says, loudly, that the other partner asked to let a new device in as this partner, if
/// `asks` (this device's) hold such an ask.
pub(super) fn rejoin_notice(device: &Device, asks: &RejoinAsks) -> Result<()> {
    let Some(ask) = asks.about_me.filter(|a| a.cancelled_at.is_none()) else {
        return Ok(());
    };
    let by = device
        .read(|j| Ok(j.partner()))?
        .map_or_else(|| "Your partner".to_owned(), |p| p.name);
    say!(
        "{by} asked on {} to let a new device in as you, for when all your devices are lost. \
         It would shut this device out, and whoever holds that new device would write as you. \
         If you did not ask for this, run `mend rejoin cancel` now.",
        crate::dates::instant(ask.at),
    );
    Ok(())
}

fn own_ask_words(
    device: &Device,
    ask: &mend_core::journal::RejoinAsk,
    wait: Duration,
    ready: bool,
) -> String {
    let partner = device
        .read(|j| Ok(j.partner()))
        .ok()
        .flatten()
        .map_or_else(|| "your partner".to_owned(), |p| p.name);
    match (ask.cancelled_at, ask.ready_at(wait)) {
        (Some(at), _) => format!(
            "A device of {partner}'s cancelled your ask on {}: they still have one. \
             `mend rejoin ask` asks again.",
            crate::dates::instant(at)
        ),
        (None, _) if ready => format!(
            "Your ask to let a new device in as {partner} stood uncancelled: run \
             `mend invite --rejoin`."
        ),
        (None, Some(from)) => format!(
            "You asked on {} to let a new device in as {partner}; `mend invite --rejoin` works \
             from {}, unless a device of theirs cancels.",
            crate::dates::instant(ask.at),
            crate::dates::instant(from),
        ),
        (None, None) => format!(
            "You asked on {} to let a new device in as {partner}, but the ask has not reached \
             the relay yet: run `mend sync` (the wait counts from then).",
            crate::dates::instant(ask.at),
        ),
    }
}

/// How long `erase` waits for the relay, for each of its two rounds.
const ERASE_BUDGET_SECS: u64 = 20;

/// `erase --yes`: a marker pushed to the other devices, the relay's copy (both spaces), then
/// this device's files.
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
    let finished =
        device.read(|j| Ok(j.erasure()?.is_some_and(|e| e.by_me) && !j.erase_pending()?))?;
    if finished {
        // Erased from another of this partner's devices: the relay keeps only tombstones, so
        // there is nothing left to reach. (An erase of this device's that was cut off before
        // the relay deleted the spaces is finished below.)
        drop(device);
        home.erase_local()?;
        say!("The journal was already erased at the relay from another of your devices.");
        say!("This device's copy is deleted.");
        return Ok(());
    }
    let relay = device.keyring().relay_url.clone();
    let erased = device.erase(Duration::from_secs(ERASE_BUDGET_SECS)).await;
    let report = erased.map_err(|e| match e {
        mend_core::Error::Unreachable => Failure::new(
            Exit::Unreachable,
            format!(
                "cannot reach the relay at {relay}; nothing was erased, and this device's copy \
                 is kept"
            ),
        )
        .into(),
        other => anyhow::Error::from(other),
    })?;
    // The marker is written, so the erase stands; this device's copy is kept until the relay
    // has deleted the spaces, or nothing would finish it.
    if !report.finished {
        return Err(Failure::new(
            Exit::Unreachable,
            format!(
                "the erase is recorded here, but the relay at {relay} did not delete the \
                 spaces yet; run `mend erase --yes` again to finish it (a sync finishes it too)"
            ),
        )
        .into());
    }
    drop(device);
    home.erase_local()?;
    say!("Erased the shared journal and your personal space at the relay: it keeps only a");
    say!("tombstone, so no device can bring them back. This device's copy is deleted.");
    if report.marker_pushed {
        say!("Your other devices and your partner's were told, and are told again when they");
        say!("next sync: they keep their copies to read, and can no longer share.");
    } else {
        say!("Your other devices and your partner's are told when they next sync: they keep");
        say!("their copies to read, and can no longer share.");
    }
    Ok(())
}
