//! `devices`: every device of both partners, with when the relay last served each; and the
//! name a new device goes by.

use std::time::Duration;

use anyhow::Result;
use serde_json::json;

use crate::{
    dates,
    failure::Failure,
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
        say!("{}", serde_json::to_string_pretty(&out)?);
        return Ok(());
    }
    if listed.is_empty() {
        say!("No devices are recorded yet: run `mend sync` first.");
        return Ok(());
    }
    let mut table = Table::new(&["WHOSE", "NAME", "ADDED", "LAST SEEN", ""]);
    for d in &listed {
        let whose = if d.info.mine {
            format!("{} (you)", d.info.partner_name)
        } else {
            d.info.partner_name.clone()
        };
        table.row(vec![
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
