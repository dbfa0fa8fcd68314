//! Device names and the listing of every device of the couple.
//!
//! A device records the name it goes by in its partner's registry entry
//! (`device_name:<device id>`, see [`super::registry`]), so both partners can tell their
//! devices apart. Only that partner's devices may write it (the entry is theirs), and receivers
//! refuse a name longer than [`MAX_DEVICE_NAME`] bytes. A name is text another device chose:
//! what is shown has control characters replaced, so it cannot move a terminal's cursor.
//!
//! The name this device wants is kept in the database's metadata until its certificate is in
//! the couple's document (a second device's copy is empty until its first sync), then written
//! next to it.

use automerge::{ReadDoc, ScalarValue, Value, transaction::Transactable};
use serde::{Deserialize, Serialize};

use super::{
    Journal,
    registry::{self, Registry},
};
use crate::{
    error::{Error, Result},
    ids::{DeviceId, PartnerId},
    store::Space,
};

/// The prefix of a device's name key in its partner's registry entry.
pub(crate) const DEVICE_NAME: &str = "device_name:";
/// The longest device name, in bytes (UTF-8).
pub const MAX_DEVICE_NAME: usize = 64;
/// Where the name this device wants is kept until it is written.
const META_DEVICE_NAME: &str = "device_name";

/// One device of either partner, as [`Journal::devices`] lists it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct DeviceInfo {
    /// The partner it belongs to.
    pub partner: PartnerId,
    /// That partner's name.
    pub partner_name: String,
    /// The device.
    pub id: DeviceId,
    /// The name it recorded, if any (control characters replaced).
    pub name: Option<String>,
    /// Its signing key's fingerprint (16 hex digits).
    pub fingerprint: String,
    /// When its partner's identity certified it (unix ms, that device's clock).
    pub added_at: i64,
    /// Whether it is the device this journal runs on.
    pub this_device: bool,
    /// Whether it belongs to this journal's partner.
    pub mine: bool,
}

/// `name` trimmed, or why it cannot be a device name: empty, longer than
/// [`MAX_DEVICE_NAME`] bytes, or holding control characters.
pub fn clean_device_name(name: &str) -> Result<String> {
    let name = name.trim();
    if name.is_empty() {
        return Err(Error::Invalid("a device name cannot be empty".into()));
    }
    if name.len() > MAX_DEVICE_NAME {
        return Err(Error::Invalid(format!(
            "a device name is at most {MAX_DEVICE_NAME} bytes"
        )));
    }
    if name.chars().any(char::is_control) {
        return Err(Error::Invalid(
            "a device name cannot hold control characters".into(),
        ));
    }
    Ok(name.to_owned())
}

/// What is shown of a name read from the document: `None` when too long (no honest device
/// writes one), control characters replaced.
pub(crate) fn shown(name: &str) -> Option<String> {
    if name.len() > MAX_DEVICE_NAME {
        return None;
    }
    let name: String = name
        .trim()
        .chars()
        .map(|c| if c.is_control() { '\u{fffd}' } else { c })
        .collect();
    (!name.is_empty()).then_some(name)
}

impl Journal {
    /// Sets the name this device goes by (trimmed; see [`clean_device_name`]). It is written
    /// into the couple's document beside this device's certificate, now if the certificate is
    /// there, otherwise when [`Journal::certify_device`] writes it. The name is kept first:
    /// when the document cannot take it yet (it failed to load), the error says so and the
    /// next certification writes it.
    pub fn set_device_name(&mut self, name: &str) -> Result<()> {
        let name = clean_device_name(name)?;
        self.step(|j| {
            j.store.set_meta(&[(META_DEVICE_NAME, &name)])?;
            j.ready()?;
            j.write_device_name()
        })
    }

    /// The name this device asked for ([`Journal::set_device_name`]), written or not.
    pub fn device_name(&self) -> Result<Option<String>> {
        self.store.meta(META_DEVICE_NAME)
    }

    /// Writes the name this device asked for, when its certificate counts in the couple's
    /// document and the document holds another name (or none) for it.
    pub(super) fn write_device_name(&mut self) -> Result<()> {
        let Some(name) = self.store.meta(META_DEVICE_NAME)? else {
            return Ok(());
        };
        let (me, device) = (self.me, self.device);
        let couple_space = self.couple_space;
        let doc = self.doc(Space::Couple)?;
        let Some(entry) = registry::entry(doc, me) else {
            return Ok(());
        };
        let reg = Registry::read(doc, &entry, me, couple_space.as_ref(), &self.cert_checker);
        if !reg.devices.iter().any(|c| c.device == device) {
            return Ok(());
        }
        let prop = format!("{DEVICE_NAME}{device}");
        let current = match doc.am().get(&entry, prop.as_str())? {
            Some((Value::Scalar(s), _)) => s.as_str().map(str::to_owned),
            _ => None,
        };
        if current.as_deref() == Some(name.as_str()) {
            return Ok(());
        }
        let (_, bytes) = self.doc_mut(Space::Couple)?.transact(|tx, _| {
            tx.put(
                &entry,
                prop.as_str(),
                ScalarValue::Str(name.as_str().into()),
            )?;
            Ok(())
        })?;
        let changes = bytes.map(|b| vec![(Space::Couple, b)]).unwrap_or_default();
        self.persist(changes, &[])
    }

    /// Every device whose certificate counts, of both partners: this partner's first, each
    /// partner's earliest added first. After a rotation, a device the new epoch's secrets were
    /// sealed to that has not moved yet is listed too (without a name, which stayed in the old
    /// epoch), so that it can still be removed; so is a device introduced here whose
    /// certificate is not in the partners list (the app writes it at once; a modified one, or
    /// a lost phone's thief certifying a key of its own, need not): a rotation seals it a box.
    pub fn devices(&self) -> Vec<DeviceInfo> {
        let mut partners = self.partners();
        partners.sort_by_key(|p| p.id != self.me);
        let mut listed: Vec<DeviceInfo> = partners
            .iter()
            .cloned()
            .flat_map(|p| {
                let mine = p.id == self.me;
                p.devices.into_iter().map(move |d| DeviceInfo {
                    partner: p.id,
                    partner_name: p.name.clone(),
                    this_device: mine && d.id == self.device,
                    id: d.id,
                    name: d.name,
                    fingerprint: d.fingerprint,
                    added_at: d.added_at,
                    mine,
                })
            })
            .collect();
        for intro in self.awaited().into_iter().chain(self.roster.intros()) {
            let cert = intro.cert;
            // By id and key: another key under a listed device's id is listed beside it, and
            // a listed key under another id too.
            let fingerprint = cert.device_key.fingerprint();
            if listed
                .iter()
                .any(|d| d.fingerprint == fingerprint && d.id == cert.device)
            {
                continue;
            }
            listed.push(DeviceInfo {
                partner: cert.partner,
                partner_name: partners
                    .iter()
                    .find(|p| p.id == cert.partner)
                    .map(|p| p.name.clone())
                    .unwrap_or_default(),
                id: cert.device,
                name: None,
                fingerprint,
                added_at: cert.issued_at,
                this_device: self
                    .signer
                    .as_ref()
                    .is_some_and(|s| s.key_id() == cert.device_key.key_id()),
                mine: cert.partner == self.me,
            });
        }
        listed.sort_by_key(|d| !d.mine);
        listed
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_are_trimmed_bounded_and_shown_safely() {
        assert_eq!(
            clean_device_name("  Alex's phone ").ok().as_deref(),
            Some("Alex's phone")
        );
        assert!(clean_device_name("   ").is_err());
        assert!(clean_device_name(&"x".repeat(MAX_DEVICE_NAME + 1)).is_err());
        assert!(clean_device_name(&"x".repeat(MAX_DEVICE_NAME)).is_ok());
        assert!(clean_device_name("a\u{1b}[2Jb").is_err());
        assert_eq!(shown("a\u{1b}[2Jb").as_deref(), Some("a\u{fffd}[2Jb"));
        assert_eq!(shown(&"x".repeat(MAX_DEVICE_NAME + 1)), None);
        assert_eq!(shown(" "), None);
    }
}
