//! The couple's registry of identities and devices.
//!
//! Each partner's entry in the couple's document (`partners/<partner id>`) holds, beside the
//! name, flat keys that no two honest writers ever write with different values, so a merge
//! never hides one behind another:
//!
//! - `identity:<hex public key>` = the claim's time (Unix ms, the writer's clock): a claim that
//!   this key is the partner's identity. The identity in force is the claim with the earliest
//!   time, ties broken by the smaller key, so every replica that holds the same claims picks
//!   the same one whatever order they arrived in. Every device of a partner derives the same
//!   key from the personal-space secret, so honest claims never differ; a device writes one
//!   only when its partner has none.
//! - `device:<device id>` = the device's certificate ([`DeviceCertificate::to_bytes`]). It
//!   counts only if it names this partner and that device, and verifies under the identity in
//!   force for the couple's space id; a partner has at most [`MAX_DEVICES`] devices, the
//!   earliest issued (ties: smaller device id) first.
//! - `device_name:<device id>` = the name the device goes by ([`super::names`]): a string of
//!   at most [`super::names::MAX_DEVICE_NAME`] bytes, shown only beside a certificate that
//!   counts.
//!
//! Nothing here stops a holder of the couple's secret from writing a false claim; receivers
//! that refuse such changes are what makes the registry binding (see docs/security.md).

use std::{
    collections::{BTreeMap, HashMap},
    sync::Mutex,
};

use automerge::{
    ObjId, ObjType, ReadDoc, ScalarValue, ScalarValueRef, Value, ValueRef,
    transaction::Transactable,
};

use super::{
    Journal, PartnerDevice,
    names::{self, DEVICE_NAME},
};
use crate::{
    crypto::{CERTIFICATE_LEN, DeviceCertificate, DeviceKey, IdentityKey, PartnerIdentity},
    doc::SpaceDoc,
    error::{Error, Result},
    ids::{DeviceId, PartnerId},
    store::Space,
};

/// The most devices a partner can have.
pub const MAX_DEVICES: usize = 8;

pub(super) const IDENTITY: &str = "identity:";
pub(super) const DEVICE: &str = "device:";
/// Where the couple's space id is kept in the database's metadata: the device learns it from
/// its keyring when it certifies itself, and reads need it to check certificates.
pub(super) const META_COUPLE_SPACE: &str = "couple_space";

/// What [`Journal::certify_device`] found.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Certified {
    /// It wrote what was missing (the identity claim, the certificate or both).
    Written,
    /// The document already held both: nothing to do on later opens.
    Present,
    /// The couple's document has no entry for this partner yet (a second device before its
    /// first sync): call again after syncing.
    Pending,
}

/// Answers remembered before the table is cleared: far more than two partners' devices.
const REMEMBERED: usize = 256;

/// Checks certificates and remembers the answers: the partners' list is rebuilt on every write,
/// and one signature check costs about as much as the rest of a write.
#[derive(Debug, Default)]
pub(super) struct CertChecker {
    seen: Mutex<HashMap<[u8; 32 + CERTIFICATE_LEN], bool>>,
}

impl CertChecker {
    /// Whether `identity` issued `cert` for `space_id`.
    fn verify(
        &self,
        cert: &DeviceCertificate,
        identity: &IdentityKey,
        space_id: &[u8; 32],
    ) -> bool {
        if cert.space_id != *space_id {
            return false;
        }
        let mut key = [0u8; 32 + CERTIFICATE_LEN];
        key[..32].copy_from_slice(&identity.to_bytes());
        key[32..].copy_from_slice(&cert.to_bytes());
        if let Some(ok) = self
            .seen
            .lock()
            .ok()
            .and_then(|seen| seen.get(&key).copied())
        {
            return ok;
        }
        let ok = cert.verify(identity, space_id).is_ok();
        if let Ok(mut seen) = self.seen.lock() {
            if seen.len() >= REMEMBERED {
                seen.clear();
            }
            seen.insert(key, ok);
        }
        ok
    }
}

/// One partner's registry as a replica reads it.
#[derive(Debug, Default)]
pub(super) struct Registry {
    /// The identity in force.
    pub(super) identity: Option<IdentityKey>,
    /// The certificates that count, in order.
    pub(super) devices: Vec<DeviceCertificate>,
    /// The names devices recorded, by device id (shown only for devices that count).
    pub(super) names: BTreeMap<DeviceId, String>,
}

impl Registry {
    /// Reads `partner`'s entry `entry`; certificates are checked only when the couple's
    /// `space_id` is known (otherwise none count).
    pub(super) fn read(
        doc: &SpaceDoc,
        entry: &ObjId,
        partner: PartnerId,
        space_id: Option<&[u8; 32]>,
        checker: &CertChecker,
    ) -> Self {
        let am = doc.am();
        let mut claims: Vec<(i64, [u8; 32])> = Vec::new();
        let mut certs = Vec::new();
        let mut names = BTreeMap::new();
        for item in am.map_range(entry, ..) {
            let ValueRef::Scalar(value) = &item.value else {
                continue;
            };
            if let Some(hex_key) = item.key.strip_prefix(IDENTITY) {
                let (ScalarValueRef::Int(at), Some(key)) = (value, parse_key(hex_key)) else {
                    continue;
                };
                claims.push((*at, key));
            } else if let Some(device) = item.key.strip_prefix(DEVICE) {
                let ScalarValueRef::Bytes(bytes) = value else {
                    continue;
                };
                if let Ok(cert) = DeviceCertificate::from_bytes(bytes)
                    && cert.partner == partner
                    && device.parse().ok() == Some(cert.device)
                {
                    certs.push(cert);
                }
            } else if let Some(device) = item.key.strip_prefix(DEVICE_NAME)
                && let (ScalarValueRef::Str(name), Ok(device)) = (value, device.parse())
                && let Some(name) = names::shown(name)
            {
                names.insert(device, name);
            }
        }
        claims.sort();
        let identity = claims
            .iter()
            .find_map(|(_, key)| IdentityKey::from_bytes(key).ok());
        let mut devices = match (identity, space_id) {
            (Some(identity), Some(space_id)) => certs
                .into_iter()
                .filter(|c| checker.verify(c, &identity, space_id))
                .collect(),
            _ => Vec::new(),
        };
        devices.sort_by_key(|c| (c.issued_at, c.device));
        devices.truncate(MAX_DEVICES);
        Self {
            identity,
            devices,
            names,
        }
    }

    /// What the partners' list shows of each device.
    pub(super) fn device_views(&self) -> Vec<PartnerDevice> {
        self.devices
            .iter()
            .map(|c| PartnerDevice {
                id: c.device,
                fingerprint: c.device_key.fingerprint(),
                added_at: c.issued_at,
                name: self.names.get(&c.device).cloned(),
            })
            .collect()
    }
}

fn parse_key(hex_key: &str) -> Option<[u8; 32]> {
    let mut key = [0u8; 32];
    hex::decode_to_slice(hex_key, &mut key).ok()?;
    Some(key)
}

/// The entry of `partner` in the couple's document, if it has one.
pub(super) fn entry(doc: &SpaceDoc, partner: PartnerId) -> Option<ObjId> {
    match doc.am().get(doc.partners_obj(), partner.to_string()) {
        Ok(Some((Value::Object(ObjType::Map), id))) => Some(id),
        _ => None,
    }
}

impl Journal {
    /// The identity key in force for `partner` in the couple's document (after a rejoin, the
    /// one the other partner vouched for).
    pub fn identity_in_force(&self, partner: PartnerId) -> Result<Option<IdentityKey>> {
        let doc = self.doc(Space::Couple)?;
        Ok(entry(doc, partner)
            .and_then(|e| Registry::read(doc, &e, partner, None, &self.cert_checker).identity))
    }

    /// Learns the couple's space id (kept in the database's metadata). Once known it changes
    /// only with a move to a new epoch ([`Journal::move_to_epoch`]): keys for another space
    /// are stale (another process moved the journal, or this one did while the caller held
    /// the old keyring), and taking them would send the new epoch's changes to the old space.
    pub(super) fn set_couple_space(&mut self, space_id: &[u8; 32]) -> Result<()> {
        match self.couple_space {
            Some(known) if known == *space_id => Ok(()),
            Some(_) => Err(Error::MovedElsewhere),
            None => self.store_couple_space(*space_id),
        }
    }

    fn store_couple_space(&mut self, space_id: [u8; 32]) -> Result<()> {
        self.store
            .set_meta(&[(META_COUPLE_SPACE, &hex::encode(space_id))])?;
        self.couple_space = Some(space_id);
        // Certificates that could not be checked before now can.
        self.rebuild_view(Space::Couple)
    }

    /// At open, once past the first epoch: the couple's space is the one the box this device
    /// moved with opens to (what the keyring is set from), whatever id is stored beside it (an
    /// older build's move cut between its steps, or a stale keyring's certificate, could leave
    /// another). Nothing to settle before the first move, or without a box for `device_key`.
    pub fn settle_couple_space(&mut self, device_key: &DeviceKey) -> Result<()> {
        if self.epoch()? == 0 {
            return Ok(());
        }
        let Some(secrets) = self.epoch_secrets(device_key)? else {
            return Ok(());
        };
        let space = secrets.couple.derive_space_id();
        if self.couple_space == Some(space) {
            return Ok(());
        }
        tracing::warn!("the couple's space stored beside the journal was not its epoch's");
        self.store_couple_space(space)
    }

    /// Makes sure the couple's document records this partner's identity and this device's
    /// certificate, writing what is missing (once: later calls write nothing). `space_id` is
    /// the couple's, from the keyring.
    ///
    /// Does nothing while the couple's document has no entry for this partner yet
    /// ([`Certified::Pending`]). Refuses, writing nothing, when
    /// another identity is in force for this partner, when the document holds another key's
    /// certificate for this device, or when the partner already has [`MAX_DEVICES`] devices.
    pub fn certify_device(
        &mut self,
        space_id: &[u8; 32],
        identity: &PartnerIdentity,
        device_key: &DeviceKey,
    ) -> Result<Certified> {
        self.ready()?;
        self.set_couple_space(space_id)?;
        let (me, device, now) = (self.me, self.device, self.now());
        let doc = self.doc(Space::Couple)?;
        let Some(entry) = entry(doc, me) else {
            return Ok(Certified::Pending);
        };
        let registry = Registry::read(doc, &entry, me, Some(space_id), &self.cert_checker);
        let public = identity.public();
        let claim = match registry.identity {
            Some(key) if key == public => false,
            Some(_) => {
                return Err(Error::PermissionDenied(
                    "the journal records another identity key for this partner".into(),
                ));
            }
            None => true,
        };
        let device_prop = format!("{DEVICE}{device}");
        let certify = match doc.am().get(&entry, device_prop.as_str())? {
            None => true,
            Some((Value::Scalar(s), _)) => match s.as_ref() {
                ScalarValue::Bytes(b)
                    if DeviceCertificate::from_bytes(b)
                        .is_ok_and(|c| c.device_key == device_key.public()) =>
                {
                    false
                }
                _ => {
                    return Err(Error::PermissionDenied(
                        "the journal holds another key's certificate for this device".into(),
                    ));
                }
            },
            Some(_) => {
                return Err(Error::PermissionDenied(
                    "the journal holds another key's certificate for this device".into(),
                ));
            }
        };
        if certify && registry.devices.len() >= MAX_DEVICES {
            return Err(Error::PermissionDenied(format!(
                "a partner has at most {MAX_DEVICES} devices; remove one first"
            )));
        }
        if !claim && !certify {
            self.write_device_name()?;
            return Ok(Certified::Present);
        }
        let cert = identity.certify(space_id, me, device, &device_key.public(), now);
        let identity_prop = format!("{IDENTITY}{}", hex::encode(public.to_bytes()));
        let (_, bytes) = self.doc_mut(Space::Couple)?.transact(|tx, _| {
            if claim {
                tx.put(&entry, identity_prop.as_str(), now)?;
            }
            if certify {
                tx.put(
                    &entry,
                    device_prop.as_str(),
                    ScalarValue::Bytes(cert.to_bytes().to_vec()),
                )?;
            }
            Ok(())
        })?;
        let changes = bytes.map(|b| vec![(Space::Couple, b)]).unwrap_or_default();
        self.persist(changes, &[])?;
        // A name chosen before the certificate could be written goes in after it.
        self.write_device_name()?;
        Ok(Certified::Written)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn remembered_answers_are_the_answers() -> Result<()> {
        let checker = CertChecker::default();
        let identity = PartnerIdentity::generate()?;
        let stranger = PartnerIdentity::generate()?;
        let space = [4u8; 32];
        let cert = identity.certify(
            &space,
            PartnerId::generate(),
            DeviceId::generate(),
            &DeviceKey::generate()?.public(),
            1,
        );
        for _ in 0..2 {
            assert!(checker.verify(&cert, &identity.public(), &space));
            assert!(!checker.verify(&cert, &stranger.public(), &space));
            assert!(!checker.verify(&cert, &identity.public(), &[5u8; 32]));
        }
        // Full, the table starts over rather than growing.
        for i in 0..REMEMBERED + 1 {
            let other = identity.certify(
                &space,
                PartnerId::generate(),
                DeviceId::generate(),
                &DeviceKey::generate()?.public(),
                i as i64,
            );
            assert!(checker.verify(&other, &identity.public(), &space));
        }
        let remembered = checker.seen.lock().map(|s| s.len()).unwrap_or(usize::MAX);
        assert!(remembered <= REMEMBERED, "{remembered}");
        Ok(())
    }
}
