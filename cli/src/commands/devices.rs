//! `devices`: every device of both partners, with when the relay last served each; removing one
//! of your own (a new epoch without it); and the name a new device goes by.

use std::time::Duration;

use anyhow::Result;
use serde_json::json;

use crate::{
    dates,
    failure::{Exit, Failure},
    home::Home,
    say,
    term::{Table, clip},
};

/// What a device is called when `--device-name` is not given: "mend on <short hostname>".
pub fn default_name() -> String {
    let host = ["/proc/sys/kernel/hostname", "/etc/hostname"]
        .iter()
        .find_map(|path| std::fs::read_to_string(path).ok())
        .or_else(|| std::env::var("HOSTNAME").ok())
        .unwrap_or_default();
    let short: String = host
        .trim()
        .split('.')
        .next()
        .unwrap_or_default()
        .chars()
        .filter(|c| !c.is_control())
        .take(40)
        .collect();
    if short.is_empty() {
        "mend".into()
    } else {
        format!("mend on {short}")
    }
}

/// The name a new device records: `given` (checked) or [`default_name`].
pub fn device_name(given: Option<&str>) -> Result<String, Failure> {
    let name = given.map_or_else(default_name, str::to_owned);
    mend_core::journal::clean_device_name(&name).map_err(|e| Failure::input(e.to_string()))
}

/// A last-seen time as the table shows it: the hour, in UTC.
fn hour(unix_secs: u64) -> String {
    let ms = i64::try_from(unix_secs)
        .unwrap_or(i64::MAX)
        .saturating_mul(1000);
    dates::instant(ms)
}

/// `devices [--json]`: the journal's devices, asking the relay for last-seen times within
/// `timeout` seconds (unreachable: shown as unknown).
pub async fn devices(home: &Home, timeout: u64, json: bool) -> Result<()> {
    let device = home.open(None)?;
    let listed = device.devices(Duration::from_secs(timeout.max(1))).await?;
    if json {
        let out: Vec<_> = listed
            .iter()
            .map(|d| {
                json!({
                    "partner": d.info.partner,
                    "partner_name": d.info.partner_name,
                    "id": d.info.id,
                    "name": d.info.name,
                    "fingerprint": d.info.fingerprint,
                    "added_at": d.info.added_at,
                    "last_seen": d.last_seen,
                    "this_device": d.info.this_device,
                    "mine": d.info.mine,
                })
            })
            .collect();
        crate::term::say_json(&out)?;
        return Ok(());
    }
    if listed.is_empty() {
        say!("No devices are recorded yet: run `mend sync` first.");
        return Ok(());
    }
    let mut table = Table::new(&["ID", "WHOSE", "NAME", "ADDED", "LAST SEEN", ""]);
    for d in &listed {
        let whose = if d.info.mine {
            format!("{} (you)", d.info.partner_name)
        } else {
            d.info.partner_name.clone()
        };
        let id = d.info.id.to_string();
        table.row(vec![
            id[id.len().saturating_sub(8)..].to_owned(),
            clip(&whose, 30),
            clip(d.info.name.as_deref().unwrap_or("(no name)"), 40),
            dates::instant(d.info.added_at),
            d.last_seen.map_or_else(|| "unknown".into(), hour),
            if d.info.this_device {
                "this device".into()
            } else {
                String::new()
            },
        ]);
    }
    say!("{}", table.render().trim_end());
    Ok(())
}

/// `devices remove DEVICE --yes`: a new epoch without that device.
pub async fn remove(home: &Home, which: &str, yes: bool, timeout: u64) -> Result<()> {
    let device = home.open(None)?;
    let budget = Duration::from_secs(timeout.clamp(1, 24 * 3600));
    let listed = device.devices(budget).await?;
    let which = which.trim();
    let matches: Vec<_> = listed
        .iter()
        .filter(|d| {
            let id = d.info.id.to_string();
            (which.len() >= 8 && id.ends_with(which)) || d.info.name.as_deref() == Some(which)
        })
        .collect();
    let found = match matches.as_slice() {
        [one] => *one,
        [] => {
            return Err(Failure::new(
                Exit::Input,
                format!("no device {which:?}: `mend devices` lists them"),
            )
            .into());
        }
        _ => {
            return Err(Failure::new(
                Exit::Input,
                format!("more than one device answers to {which:?}: give its id"),
            )
            .into());
        }
    };
    if found.info.this_device {
        return Err(Failure::new(
            Exit::Input,
            "this is the device you are using: remove it from another of your devices",
        )
        .into());
    }
    if !found.info.mine {
        return Err(Failure::new(
            Exit::NotAllowed,
            "not allowed: only your own devices can be removed",
        )
        .into());
    }
    let name = found
        .info
        .name
        .clone()
        .unwrap_or_else(|| "the device".into());
    if !yes {
        return Err(Failure::new(
            Exit::Usage,
            format!(
                "removing {name} gives your journal new keys it will never receive; run `mend \
                 devices remove {which} --yes` to do it"
            ),
        )
        .into());
    }
    let done = device.remove_device(found.info.id, budget).await;
    home.keep_keyring(&device)?;
    let done = done?;
    let gone = found.info.id;
    let still = device.read(|j| Ok(j.epoch_members()?.contains(&gone)))?;
    if done.keyring_changed && still {
        // Another device's rotation won at the relay and still sealed a box to it.
        say!(
            "Another device started new keys at the same moment, and {name} still has them: this              device removes it again when it next syncs (run `mend sync`)."
        );
    } else if done.keyring_changed {
        say!("Removed {name}: it reads nothing written from now on.");
        say!("Your other devices and your partner's move to the new keys when they next sync.");
    } else {
        say!(
            "{name} will be removed once this device reaches the relay (run `mend sync`); until \
             then it still reads what is written."
        );
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_device_gets_a_name_unless_it_is_not_one() {
        assert!(default_name().starts_with("mend"));
        assert!(device_name(None).is_ok());
        assert_eq!(
            device_name(Some(" Work laptop ")).ok().as_deref(),
            Some("Work laptop")
        );
        assert!(device_name(Some(&"x".repeat(65))).is_err());
    }
}
