//! The secrets a device holds: the relay it syncs through, the two space secrets, and the
//! partner's identity and the device's signing key.
//!
//! The secrets never enter the database. The app keeps a [`Keyring`] in Keychain or Keystore
//! (or, for the CLI, a file only its user can read) and hands it back when it opens the
//! journal.

use sha2::{Digest, Sha256};
use zeroize::Zeroizing;

use crate::{
    crypto::{DeviceKey, Invite, InviteKind, PartnerIdentity, RelayPin, SpaceSecret},
    error::{Error, Result},
    ids::PartnerId,
    store::Space,
    sync::SpaceLink,
};

/// What a device must keep secret: the relay it syncs through, the two space secrets and the
/// signing keys.
#[derive(Clone, PartialEq, Eq)]
pub struct Keyring {
    /// The relay URL.
    pub relay_url: String,
    /// The relay's pin (`sha256/…` of its certificate's public key), for a relay whose
    /// certificate no public CA signed; `None` verifies it against the public roots.
    pub relay_pin: Option<RelayPin>,
    /// The couple's space.
    pub couple: SpaceSecret,
    /// This partner's personal space.
    pub personal: SpaceSecret,
    /// This partner's identity, the same on all of the partner's devices. `None` in a keyring
    /// from before identities existed: [`Keyring::ensure_signing_keys`] fills it in.
    pub identity: Option<PartnerIdentity>,
    /// This device's signing key, its own. `None` until [`Keyring::ensure_signing_keys`].
    pub device_key: Option<DeviceKey>,
    /// The epoch `couple` is the secret of. A restore starts there instead of working it out
    /// from what the relay holds, where anyone with the couple's secret can push a made-up one.
    pub epoch: KeyringEpoch,
}

/// Which of the couple's epochs a keyring's couple secret belongs to.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum KeyringEpoch {
    /// A keyring kept before keyrings named their epoch: a device fills it in when it opens
    /// the journal, and a restore works it out from what the relay holds.
    #[default]
    Unknown,
    /// `None` for the journal's first epoch, else the epoch's number and the hash of its first
    /// change in the couple's space.
    Known(Option<(u32, [u8; 32])>),
}

impl std::fmt::Debug for Keyring {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Keyring")
            .field("relay_url", &self.relay_url)
            .field("relay_pin", &self.relay_pin)
            .finish_non_exhaustive()
    }
}

/// `couple (32) | personal (32) | url`.
const KEYRING_V1: &str = "mend-keyring-v1:";
/// `couple (32) | personal (32) | pin flag (1: 0 none, 1 present) | [pin (32)] | url`; written
/// only for a pinned relay, so a keyring without a pin still reads in older versions.
const KEYRING_V2: &str = "mend-keyring-v2:";
/// `couple (32) | personal (32) | flags (1) | [pin (32)] | [identity (32)] | [device key (32)]
/// | url`, each optional part present when its flag is set; written once a keyring holds a
/// signing key.
const KEYRING_V3: &str = "mend-keyring-v3:";
/// v3's layout followed by the first 4 bytes of its SHA-256, written since: a keyring cut short
/// or damaged in storage is refused, not read with part of its relay's address (the URL is its
/// tail, and `relay.example.co` is someone else's).
const KEYRING_V4: &str = "mend-keyring-v4:";
/// v4 with one more optional part after the device key, `epoch (4, big-endian) | [first
/// change (32), past epoch 0]`; written once a keyring knows its epoch. Its own prefix, so
/// that the versions stay told apart (an older build cannot read it).
const KEYRING_V5: &str = "mend-keyring-v5:";
const SUM_LEN: usize = 4;
const FLAG_PIN: u8 = 1;
const FLAG_IDENTITY: u8 = 2;
const FLAG_DEVICE_KEY: u8 = 4;
const FLAG_EPOCH: u8 = 8;

impl Keyring {
    /// New secrets for a new journal.
    pub fn generate(relay_url: &str) -> Result<Self> {
        let mut keyring = Self {
            relay_url: normalize_relay_url(relay_url)?,
            relay_pin: None,
            couple: SpaceSecret::generate()?,
            personal: SpaceSecret::generate()?,
            identity: None,
            device_key: None,
            epoch: KeyringEpoch::Known(None),
        };
        keyring.ensure_signing_keys()?;
        Ok(keyring)
    }

    /// Gives a keyring from before identities its signing keys: the partner's identity
    /// derived from the personal-space secret (so each of the partner's devices arrives at the
    /// same one on its own), and a new key for this device. Returns whether anything was
    /// added, in which case the app must store the keyring again.
    pub fn ensure_signing_keys(&mut self) -> Result<bool> {
        let mut added = false;
        if self.identity.is_none() {
            self.identity = Some(PartnerIdentity::derive_from(&self.personal));
            added = true;
        }
        if self.device_key.is_none() {
            self.device_key = Some(DeviceKey::generate()?);
            added = true;
        }
        Ok(added)
    }

    /// Fills in `options` what a journal opened with this keyring needs: this device's public
    /// key (its changes carry the key's id) and the partner's identity (a new partner's id is
    /// derived from it). Call [`Keyring::ensure_signing_keys`] first.
    pub fn open_options(&self, options: crate::OpenOptions) -> crate::OpenOptions {
        crate::OpenOptions {
            device_key: self.device_key.as_ref().map(DeviceKey::public),
            identity: self.identity.as_ref().map(PartnerIdentity::public),
            ..options
        }
    }

    /// What this device signs the couple's changes with, as `partner`'s device `device`,
    /// certified at `now`. `None` without signing keys.
    pub fn signer(
        &self,
        partner: crate::PartnerId,
        device: crate::DeviceId,
        now: i64,
    ) -> Option<crate::crypto::Signer> {
        let (identity, key) = (self.identity.as_ref()?, self.device_key.clone()?);
        Some(crate::crypto::Signer::new(
            self.couple.derive_space_id(),
            identity,
            partner,
            device,
            key,
            now,
        ))
    }

    /// What the engine needs to sync both spaces.
    pub fn links(&self) -> Vec<SpaceLink> {
        vec![
            SpaceLink {
                space: Space::Couple,
                keys: self.couple.derive_keys(),
            },
            SpaceLink {
                space: Space::Personal,
                keys: self.personal.derive_keys(),
            },
        ]
    }

    /// An invite for the other partner (couple's space only).
    pub fn partner_invite(&self) -> Result<Zeroizing<String>> {
        self.partner_invite_at(None)
    }

    /// [`Keyring::partner_invite`] for a journal in epoch `epoch` (its number and first
    /// change), when past the first.
    pub fn partner_invite_at(&self, epoch: Option<(u32, [u8; 32])>) -> Result<Zeroizing<String>> {
        Invite {
            relay_url: self.relay_url.clone(),
            couple: self.couple.clone(),
            kind: InviteKind::Partner,
            relay_pin: self.relay_pin,
            epoch,
        }
        .encode()
    }

    /// An invite for another device of this partner (both spaces).
    pub fn device_invite(&self, me: PartnerId) -> Result<Zeroizing<String>> {
        self.device_invite_at(me, None)
    }

    /// [`Keyring::device_invite`] for a journal in epoch `epoch`, when past the first.
    pub fn device_invite_at(
        &self,
        me: PartnerId,
        epoch: Option<(u32, [u8; 32])>,
    ) -> Result<Zeroizing<String>> {
        Invite {
            relay_url: self.relay_url.clone(),
            couple: self.couple.clone(),
            kind: InviteKind::Device {
                personal: self.personal.clone(),
                partner: me,
                identity: self.identity.clone(),
            },
            relay_pin: self.relay_pin,
            epoch,
        }
        .encode()
    }

    /// The secrets as one string, for storage the app trusts. Handle like a password: it is
    /// wiped from memory when dropped.
    pub fn to_secret_string(&self) -> Zeroizing<String> {
        let mut raw = Zeroizing::new(Vec::with_capacity(
            64 + 1 + 96 + 36 + self.relay_url.len() + SUM_LEN,
        ));
        raw.extend_from_slice(self.couple.expose());
        raw.extend_from_slice(self.personal.expose());
        let epoch = match self.epoch {
            KeyringEpoch::Known(epoch) => Some(epoch),
            KeyringEpoch::Unknown => None,
        };
        let prefix = if self.identity.is_none() && self.device_key.is_none() && epoch.is_none() {
            match &self.relay_pin {
                None => KEYRING_V1,
                Some(pin) => {
                    raw.push(1);
                    raw.extend_from_slice(pin.as_bytes());
                    KEYRING_V2
                }
            }
        } else {
            let flag = |set: bool, flag: u8| if set { flag } else { 0 };
            raw.push(
                flag(self.relay_pin.is_some(), FLAG_PIN)
                    | flag(self.identity.is_some(), FLAG_IDENTITY)
                    | flag(self.device_key.is_some(), FLAG_DEVICE_KEY)
                    | flag(epoch.is_some(), FLAG_EPOCH),
            );
            if let Some(pin) = &self.relay_pin {
                raw.extend_from_slice(pin.as_bytes());
            }
            if let Some(identity) = &self.identity {
                raw.extend_from_slice(identity.expose());
            }
            if let Some(key) = &self.device_key {
                raw.extend_from_slice(key.expose());
            }
            match epoch {
                None => KEYRING_V4,
                // Epoch 0 has no first change to name.
                Some(None | Some((0, _))) => {
                    raw.extend_from_slice(&0u32.to_be_bytes());
                    KEYRING_V5
                }
                Some(Some((number, base))) => {
                    raw.extend_from_slice(&number.to_be_bytes());
                    raw.extend_from_slice(&base);
                    KEYRING_V5
                }
            }
        };
        raw.extend_from_slice(self.relay_url.as_bytes());
        if prefix != KEYRING_V1 && prefix != KEYRING_V2 {
            let sum = Sha256::digest(raw.as_slice());
            raw.extend_from_slice(&sum[..SUM_LEN]);
        }
        // Sized up front: a string that grew would leave its old buffer unwiped.
        crate::crypto::text::encode(prefix, raw.as_slice())
    }

    /// Parses [`Keyring::to_secret_string`], and every earlier version of it (those have no
    /// signing keys: see [`Keyring::ensure_signing_keys`]).
    pub fn from_secret_string(s: &str) -> Result<Self> {
        let bad = || Error::Invalid("not a Mend keyring".into());
        let s = s.trim();
        let (body, version) = if let Some(body) = s.strip_prefix(KEYRING_V1) {
            (body, 1)
        } else if let Some(body) = s.strip_prefix(KEYRING_V2) {
            (body, 2)
        } else if let Some(body) = s.strip_prefix(KEYRING_V3) {
            (body, 3)
        } else if let Some(body) = s.strip_prefix(KEYRING_V4) {
            (body, 4)
        } else if let Some(body) = s.strip_prefix(KEYRING_V5) {
            (body, 5)
        } else {
            return Err(bad());
        };
        let decoded = crate::crypto::text::decode(body).ok_or_else(bad)?;
        let raw = if version >= 4 {
            let (data, sum) = decoded
                .split_at_checked(decoded.len().saturating_sub(SUM_LEN))
                .ok_or_else(bad)?;
            if Sha256::digest(data)[..SUM_LEN] != *sum {
                return Err(bad());
            }
            data
        } else {
            &decoded[..]
        };
        if raw.len() < 64 {
            return Err(bad());
        }
        let rest = &raw[64..];
        let (flags, mut rest) = match (version, rest) {
            (1, url) => (0, url),
            (2, [0, url @ ..]) => (0, url),
            (2, [1, url @ ..]) => (FLAG_PIN, url),
            (3 | 4, [flags, url @ ..])
                if *flags & !(FLAG_PIN | FLAG_IDENTITY | FLAG_DEVICE_KEY) == 0 =>
            {
                (*flags, url)
            }
            (5, [flags, url @ ..])
                if *flags & !(FLAG_PIN | FLAG_IDENTITY | FLAG_DEVICE_KEY | FLAG_EPOCH) == 0 =>
            {
                (*flags, url)
            }
            _ => return Err(bad()),
        };
        let mut take_len = |flag: u8, len: usize| -> Result<Option<&[u8]>> {
            if flags & flag == 0 {
                return Ok(None);
            }
            let (part, tail) = rest.split_at_checked(len).ok_or_else(bad)?;
            rest = tail;
            Ok(Some(part))
        };
        let mut take = |flag: u8| take_len(flag, 32);
        let relay_pin = match take(FLAG_PIN)? {
            Some(pin) => Some(RelayPin::from_bytes(pin.try_into().map_err(|_| bad())?)),
            None => None,
        };
        let identity = take(FLAG_IDENTITY)?
            .map(PartnerIdentity::from_slice)
            .transpose()?;
        let device_key = take(FLAG_DEVICE_KEY)?
            .map(DeviceKey::from_slice)
            .transpose()?;
        let epoch = match take_len(FLAG_EPOCH, 4)? {
            None => KeyringEpoch::Unknown,
            Some(number) => match u32::from_be_bytes(number.try_into().map_err(|_| bad())?) {
                0 => KeyringEpoch::Known(None),
                number => {
                    let base = take_len(FLAG_EPOCH, 32)?.ok_or_else(bad)?;
                    KeyringEpoch::Known(Some((number, base.try_into().map_err(|_| bad())?)))
                }
            },
        };
        Ok(Self {
            couple: SpaceSecret::from_slice(&raw[..32])?,
            personal: SpaceSecret::from_slice(&raw[32..64])?,
            relay_url: String::from_utf8(rest.to_vec()).map_err(|_| bad())?,
            relay_pin,
            identity,
            device_key,
            epoch,
        })
    }
}

/// A relay URL as the keyring keeps it: trimmed, no trailing slash, `http://` or `https://`
/// with something after it. Whether the device may use it (TLS, loopback) is the transport's
/// decision when it connects.
pub fn normalize_relay_url(url: &str) -> Result<String> {
    let base = url.trim().trim_end_matches('/');
    let rest = base
        .strip_prefix("http://")
        .or_else(|| base.strip_prefix("https://"));
    match rest {
        Some(rest) if !rest.is_empty() => Ok(base.to_owned()),
        _ => Err(Error::Invalid(format!(
            "a relay URL looks like http://host:port, not {:?}",
            crate::ids::truncate(url)
        ))),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use base64::{Engine, engine::general_purpose::URL_SAFE_NO_PAD};

    #[test]
    fn keyrings_keep_their_pin_and_old_ones_still_read() -> Result<()> {
        // A keyring from before signing keys writes what it always wrote.
        let mut keyring = Keyring {
            identity: None,
            device_key: None,
            epoch: KeyringEpoch::Unknown,
            ..Keyring::generate("https://relay.example")?
        };
        let plain = keyring.to_secret_string();
        assert!(plain.starts_with(KEYRING_V1));
        assert_eq!(Keyring::from_secret_string(&plain)?, keyring);
        keyring.relay_pin = Some(RelayPin::of_spki(b"relay key"));
        let pinned = keyring.to_secret_string();
        assert!(pinned.starts_with(KEYRING_V2));
        assert_eq!(Keyring::from_secret_string(&pinned)?, keyring);
        for bad in [
            &pinned[..pinned.len() - 50],
            "mend-keyring-v2:AAAA",
            "nothing",
        ] {
            assert!(Keyring::from_secret_string(bad).is_err(), "{bad}");
        }
        Ok(())
    }

    #[test]
    fn the_secret_string_round_trips_in_a_wiped_buffer_that_never_grew() -> Result<()> {
        let mut keyring = Keyring::generate("http://127.0.0.1:8080")?;
        let keys = [
            (None, None),
            (keyring.identity.clone(), keyring.device_key.clone()),
        ];
        let epochs = [
            KeyringEpoch::Unknown,
            KeyringEpoch::Known(None),
            KeyringEpoch::Known(Some((7, [3; 32]))),
        ];
        for (((identity, device_key), pin), epoch) in keys
            .into_iter()
            .flat_map(|k| {
                [
                    (k.clone(), None),
                    (k, Some(RelayPin::of_spki(b"relay key"))),
                ]
            })
            .flat_map(|k| epochs.map(|e| (k.clone(), e)))
        {
            keyring.relay_pin = pin;
            keyring.identity = identity;
            keyring.device_key = device_key;
            keyring.epoch = epoch;
            let secret = keyring.to_secret_string();
            // Exactly the capacity it was given: no reallocation left a copy behind.
            assert_eq!(secret.len(), secret.capacity());
            assert_eq!(Keyring::from_secret_string(&secret)?, keyring);
        }
        Ok(())
    }

    #[test]
    fn an_old_keyring_gets_its_signing_keys_on_first_open() -> Result<()> {
        let new = Keyring::generate("https://relay.example")?;
        let old = Keyring {
            identity: None,
            device_key: None,
            epoch: KeyringEpoch::Unknown,
            ..new.clone()
        };
        let mut opened = Keyring::from_secret_string(&old.to_secret_string())?;
        assert_eq!(opened.identity, None);
        assert!(opened.ensure_signing_keys()?);
        assert!(!opened.ensure_signing_keys()?, "keys are added once");
        // The identity is the one every device of this partner derives; the device key is
        // this device's own.
        assert_eq!(opened.identity, new.identity);
        assert!(opened.device_key.is_some());
        assert_ne!(opened.device_key, new.device_key);
        let stored = opened.to_secret_string();
        assert!(stored.starts_with(KEYRING_V4));
        assert_eq!(Keyring::from_secret_string(&stored)?, opened);
        // Nor does a secret reach Debug.
        let identity = opened.identity.as_ref().map(|i| hex::encode(i.expose()));
        assert!(!format!("{opened:?}").contains(&identity.unwrap_or_default()[..16]));
        Ok(())
    }

    #[test]
    fn damaged_v3_keyrings_are_refused() -> Result<()> {
        let keyring = Keyring {
            epoch: KeyringEpoch::Unknown,
            ..Keyring::generate("https://relay.example")?
        };
        assert!(keyring.to_secret_string().starts_with(KEYRING_V4));
        let mut raw = URL_SAFE_NO_PAD
            .decode(&keyring.to_secret_string()[KEYRING_V4.len()..])
            .map_err(|_| Error::Invalid("base64".into()))?;
        // v3 is v4 without its sum.
        raw.truncate(raw.len() - SUM_LEN);
        let encode = |raw: &[u8]| format!("{KEYRING_V3}{}", URL_SAFE_NO_PAD.encode(raw));
        assert_eq!(Keyring::from_secret_string(&encode(&raw))?, keyring);
        let mut unknown_flag = raw.clone();
        unknown_flag[64] |= 8;
        // Flags that promise more keys than there are bytes.
        let mut short = raw[..64 + 1 + 40].to_vec();
        short[64] = FLAG_PIN | FLAG_IDENTITY | FLAG_DEVICE_KEY;
        for bad in [encode(&unknown_flag), encode(&short), encode(&raw[..64])] {
            assert!(Keyring::from_secret_string(&bad).is_err(), "{bad}");
        }
        Ok(())
    }

    /// A keyring cut short keeps a valid prefix of its relay's address: v3 read it as another
    /// relay; v4's sum refuses it, and any changed character.
    #[test]
    fn a_keyring_cut_short_or_changed_is_refused() -> Result<()> {
        let keyring = Keyring::generate("https://relay.example.com")?;
        let stored = keyring.to_secret_string();
        assert!(stored.starts_with(KEYRING_V5));
        for cut in 1..=8 {
            let short = &stored[..stored.len() - cut];
            assert!(Keyring::from_secret_string(short).is_err(), "cut {cut}");
        }
        let body = KEYRING_V4.len()..stored.len();
        for at in body.step_by(7) {
            let mut changed = stored.as_bytes().to_vec();
            changed[at] = if changed[at] == b'A' { b'B' } else { b'A' };
            let changed = String::from_utf8(changed).map_err(|_| Error::Invalid("utf8".into()))?;
            assert!(Keyring::from_secret_string(&changed).is_err(), "at {at}");
        }
        Ok(())
    }

    /// A keyring names its epoch; one from before that reads as not knowing it, and a v5
    /// keyring whose epoch part is cut or malformed is refused.
    #[test]
    fn a_keyring_names_its_epoch() -> Result<()> {
        let mut keyring = Keyring::generate("https://relay.example")?;
        assert_eq!(keyring.epoch, KeyringEpoch::Known(None));
        keyring.epoch = KeyringEpoch::Known(Some((2, [5; 32])));
        let stored = keyring.to_secret_string();
        assert!(stored.starts_with(KEYRING_V5));
        assert_eq!(Keyring::from_secret_string(&stored)?.epoch, keyring.epoch);
        let old = Keyring {
            epoch: KeyringEpoch::Unknown,
            ..keyring.clone()
        };
        let stored = old.to_secret_string();
        assert!(stored.starts_with(KEYRING_V4));
        assert_eq!(
            Keyring::from_secret_string(&stored)?.epoch,
            KeyringEpoch::Unknown
        );

        let url = keyring.relay_url.len();
        let raw = |epoch: &[u8]| {
            let mut raw = keyring.couple.expose().to_vec();
            raw.extend_from_slice(keyring.personal.expose());
            raw.push(FLAG_EPOCH);
            raw.extend_from_slice(epoch);
            raw.extend_from_slice(keyring.relay_url.as_bytes());
            let sum = Sha256::digest(&raw);
            raw.extend_from_slice(&sum[..SUM_LEN]);
            format!("{KEYRING_V5}{}", URL_SAFE_NO_PAD.encode(raw))
        };
        let first = Keyring::from_secret_string(&raw(&[0, 0, 0, 0]))?;
        assert_eq!(first.epoch, KeyringEpoch::Known(None));
        assert_eq!(first.relay_url, keyring.relay_url);
        // Epoch 3 without its first change: the URL's bytes are too few to stand in for it.
        assert!(url < 32);
        assert!(Keyring::from_secret_string(&raw(&[0, 0, 0, 3])).is_err());
        // The flag in a v4 keyring is not one it knows.
        let v4 = raw(&[0, 0, 0, 0]).replacen(KEYRING_V5, KEYRING_V4, 1);
        assert!(Keyring::from_secret_string(&v4).is_err());
        // Nor is a flag past the epoch's in a v5 one.
        let stored = keyring.to_secret_string();
        let mut bytes = URL_SAFE_NO_PAD
            .decode(&stored[KEYRING_V5.len()..])
            .map_err(|_| Error::Invalid("base64".into()))?;
        bytes[64] |= 16;
        let len = bytes.len() - SUM_LEN;
        let sum = Sha256::digest(&bytes[..len]);
        bytes[len..].copy_from_slice(&sum[..SUM_LEN]);
        let unknown = format!("{KEYRING_V5}{}", URL_SAFE_NO_PAD.encode(&bytes));
        assert!(Keyring::from_secret_string(&unknown).is_err());
        // Epoch 0 names no first change: one given is not written (it would be read as the
        // start of the relay's address).
        keyring.epoch = KeyringEpoch::Known(Some((0, [5; 32])));
        let read = Keyring::from_secret_string(&keyring.to_secret_string())?;
        assert_eq!(read.epoch, KeyringEpoch::Known(None));
        assert_eq!(read.relay_url, keyring.relay_url);
        Ok(())
    }
}
