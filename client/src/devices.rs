//! The couple's devices as a partner sees them: what the journal records of each (partner,
//! name, key, when it was added) and when the relay last served it.

use std::time::Duration;

use mend_core::{DeviceInfo, Result, Space};

use crate::Device;

/// One device of either partner, with when the relay last served it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SeenDevice {
    /// What the journal records of it.
    pub info: DeviceInfo,
    /// When the relay last served it (unix seconds, rounded down to the hour); `None` when
    /// the relay was not reached or has no record of it.
    pub last_seen: Option<u64>,
}

impl Device {
    /// Every device of both partners ([`mend_core::Journal::devices`]), with when the relay
    /// last served each, asked within `budget`. An unreachable relay leaves `last_seen` empty
    /// and never fails the listing.
    pub async fn devices(&self, budget: Duration) -> Result<Vec<SeenDevice>> {
        let listed = self.read(|journal| Ok(journal.devices()))?;
        let couple = self
            .keyring()
            .links()
            .into_iter()
            .find(|link| link.space == Space::Couple);
        let seen = match couple {
            Some(link) => {
                match tokio::time::timeout(budget, self.client().relay().devices(&link)).await {
                    Ok(Ok(list)) => list.devices,
                    Ok(Err(e)) => {
                        tracing::debug!(error = %e, "the relay's last-seen times were not read");
                        Vec::new()
                    }
                    Err(_) => Vec::new(),
                }
            }
            None => Vec::new(),
        };
        Ok(listed
            .into_iter()
            .map(|info| SeenDevice {
                last_seen: seen
                    .iter()
                    .find(|s| s.device_id.0 == *info.id.as_bytes())
                    .map(|s| s.last_seen),
                info,
            })
            .collect())
    }
}
