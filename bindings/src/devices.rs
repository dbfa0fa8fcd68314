//! The couple's devices: each partner's, named, with when the relay last served each.

use mend_client::SeenDevice;

use crate::{
    convert::PartnerId,
    error::Result,
    journal::{Journal, millis},
    runtime::run,
};

/// One device of either partner.
#[derive(Clone, Debug, PartialEq, Eq, uniffi::Record)]
pub struct DeviceInfo {
    /// The device's id.
    pub id: String,
    /// The partner it belongs to.
    pub partner_id: PartnerId,
    /// That partner's name.
    pub partner_name: String,
    /// The name the device chose (`JournalOptions.device_name`, `set_device_name`), if any.
    /// Another device wrote it: control characters are already replaced.
    pub name: Option<String>,
    /// Its signing key's fingerprint (16 hex digits), to compare between devices.
    pub fingerprint: String,
    /// When it was added (unix ms, that device's clock).
    pub added_at: i64,
    /// When the relay last served it (unix seconds, to the hour); null when the relay was not
    /// reached or has not seen it.
    pub last_seen: Option<i64>,
    /// Whether it is this device.
    pub this_device: bool,
    /// Whether it belongs to this device's partner.
    pub mine: bool,
}

impl From<SeenDevice> for DeviceInfo {
    fn from(d: SeenDevice) -> Self {
        let info = d.info;
        Self {
            id: info.id.to_string(),
            partner_id: info.partner.to_string().into(),
            partner_name: info.partner_name,
            name: info.name,
            fingerprint: info.fingerprint,
            added_at: info.added_at,
            last_seen: d.last_seen.map(|s| i64::try_from(s).unwrap_or(i64::MAX)),
            this_device: info.this_device,
            mine: info.mine,
        }
    }
}

#[uniffi::export]
impl Journal {
    /// Every device of both partners, this partner's first, with when the relay last served
    /// each (asked within `deadline_ms`; an unreachable relay leaves `last_seen` null and
    /// never fails the listing).
    #[uniffi::method(default(deadline_ms = 5000))]
    pub async fn devices(&self, deadline_ms: i32) -> Result<Vec<DeviceInfo>> {
        let device = self.device()?;
        let budget = millis(deadline_ms);
        run(async move {
            let listed = device.devices(budget).await?;
            Ok(listed.into_iter().map(Into::into).collect())
        })
        .await
    }

    /// Sets the name this device goes by (trimmed, at most 64 bytes, no control characters;
    /// `invalid` otherwise). Both partners see it in `devices()` once it has synced.
    pub async fn set_device_name(&self, name: String) -> Result<()> {
        self.write(move |j| j.set_device_name(&name)).await
    }
}
