//! The secrets a device holds: the relay it syncs through and the two space secrets.
//!
//! The secrets never enter the database. The app keeps a [`Keyring`] in Keychain or Keystore
//! (or, for the CLI, a file only its user can read) and hands it back when it opens the
//! journal.

use base64::{Engine, engine::general_purpose::URL_SAFE_NO_PAD};
use zeroize::Zeroizing;

use crate::{
    crypto::{Invite, InviteKind, RelayPin, SpaceSecret},
    error::{Error, Result},
    ids::PartnerId,
    store::Space,
    sync::SpaceLink,
};

/// What a device must keep secret: the relay it syncs through and the two space secrets.
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

impl Keyring {
    /// New secrets for a new journal.
    pub fn generate(relay_url: &str) -> Result<Self> {
        Ok(Self {
            relay_url: normalize_relay_url(relay_url)?,
            relay_pin: None,
            couple: SpaceSecret::generate()?,
            personal: SpaceSecret::generate()?,
        })
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
    pub fn partner_invite(&self) -> Result<String> {
        Invite {
            relay_url: self.relay_url.clone(),
            couple: self.couple.clone(),
            kind: InviteKind::Partner,
            relay_pin: self.relay_pin,
        }
        .encode()
    }

    /// An invite for another device of this partner (both spaces).
    pub fn device_invite(&self, me: PartnerId) -> Result<String> {
        Invite {
            relay_url: self.relay_url.clone(),
            couple: self.couple.clone(),
            kind: InviteKind::Device {
                personal: self.personal.clone(),
                partner: me,
            },
            relay_pin: self.relay_pin,
        }
        .encode()
    }

    /// The secrets as one string, for storage the app trusts. Handle like a password: it is
    /// wiped from memory when dropped.
    pub fn to_secret_string(&self) -> Zeroizing<String> {
        let mut raw = Zeroizing::new(Vec::with_capacity(64 + 33 + self.relay_url.len()));
        raw.extend_from_slice(self.couple.expose());
        raw.extend_from_slice(self.personal.expose());
        let prefix = match &self.relay_pin {
            None => KEYRING_V1,
            Some(pin) => {
                raw.push(1);
                raw.extend_from_slice(pin.as_bytes());
                KEYRING_V2
            }
        };
        raw.extend_from_slice(self.relay_url.as_bytes());
        // Sized up front: a string that grew would leave its old buffer unwiped.
        let len = prefix.len() + base64::encoded_len(raw.len(), false).unwrap_or(0);
        let mut out = Zeroizing::new(String::with_capacity(len));
        out.push_str(prefix);
        URL_SAFE_NO_PAD.encode_string(raw.as_slice(), &mut out);
        out
    }

    /// Parses [`Keyring::to_secret_string`].
    pub fn from_secret_string(s: &str) -> Result<Self> {
        let bad = || Error::Invalid("not a Mend keyring".into());
        let s = s.trim();
        let (body, v2) = match (s.strip_prefix(KEYRING_V1), s.strip_prefix(KEYRING_V2)) {
            (Some(body), _) => (body, false),
            (_, Some(body)) => (body, true),
            _ => return Err(bad()),
        };
        let raw = Zeroizing::new(URL_SAFE_NO_PAD.decode(body).map_err(|_| bad())?);
        // (A decode that fails leaves nothing behind: the buffer is only handed out on success.)
        if raw.len() < 64 {
            return Err(bad());
        }
        let (relay_pin, url) = match (v2, &raw[64..]) {
            (false, url) => (None, url),
            (true, [0, url @ ..]) => (None, url),
            (true, [1, rest @ ..]) if rest.len() >= 32 => {
                let (pin, url) = rest.split_at(32);
                let pin: [u8; 32] = pin.try_into().map_err(|_| bad())?;
                (Some(RelayPin::from_bytes(pin)), url)
            }
            _ => return Err(bad()),
        };
        Ok(Self {
            couple: SpaceSecret::from_slice(&raw[..32])?,
            personal: SpaceSecret::from_slice(&raw[32..64])?,
            relay_url: String::from_utf8(url.to_vec()).map_err(|_| bad())?,
            relay_pin,
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

    #[test]
    fn keyrings_keep_their_pin_and_old_ones_still_read() -> Result<()> {
        let mut keyring = Keyring::generate("https://relay.example")?;
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
        for pin in [None, Some(RelayPin::of_spki(b"relay key"))] {
            keyring.relay_pin = pin;
            let secret = keyring.to_secret_string();
            // Exactly the capacity it was given: no reallocation left a copy behind.
            assert_eq!(secret.len(), secret.capacity());
            assert_eq!(Keyring::from_secret_string(&secret)?, keyring);
        }
        Ok(())
    }
}
