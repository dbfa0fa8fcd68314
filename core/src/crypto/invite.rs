//! Invite codes: the relay URL, its pin if it has one, and the secrets a joining device needs,
//! as one string fit for a QR code.
//!
//! Format: a prefix followed by base64url (no padding) of
//! `kind (1 byte) | url length (1 byte) | url | couple secret (32) | [personal secret (32) |
//! partner id (16)] | [pin] | checksum (4)`, where the checksum is the first 4 bytes of SHA-256
//! over everything before it. `MEND1-` codes have no pin part; `MEND2-` codes have
//! `pin flag (1 byte: 0 none, 1 present) | [relay pin (32)]`. `MEND3-` codes have
//! `flags (1 byte: 1 pin, 2 identity) | [relay pin (32)] | [partner identity (32)]`, and are
//! written for a device invite that carries the partner's identity secret. Each code is
//! written in the oldest version that holds it, so older apps still read what they can. A mistyped or truncated code fails the
//! checksum and is refused with a clear message instead of joining the wrong space.

use std::fmt;

use sha2::{Digest, Sha256};
use zeroize::Zeroizing;

use super::{PartnerIdentity, RelayPin, SpaceSecret};
use crate::{
    error::{Error, Result},
    ids::PartnerId,
};

const PREFIX_V1: &str = "MEND1-";
const PREFIX_V2: &str = "MEND2-";
const PREFIX_V3: &str = "MEND3-";
/// `MEND5-` codes (a handover inside a pairing, never shown to anyone) add, after the v3
/// parts, `epoch (4, big-endian) | the epoch's first change hash (32)`, with the flags byte
/// present for both kinds; written only for a journal past its first epoch.
const PREFIX_V5: &str = "MEND5-";
const FLAG_PIN: u8 = 1;
const FLAG_IDENTITY: u8 = 2;
const KIND_PARTNER: u8 = 1;
const KIND_DEVICE: u8 = 2;
/// A partner who lost every device, rejoining: `partner id (16)` after the couple secret;
/// written only as `MEND5-` (a rejoin always follows a new epoch).
const KIND_REJOIN: u8 = 3;
const MAX_URL: usize = 200;

/// Who the invite is for. (`Debug` shows the kind only: the secret inside redacts itself.)
// One invite exists at a time, briefly: its size does not matter.
#[allow(clippy::large_enum_variant)]
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum InviteKind {
    /// The other partner: joins the couple's space and gets a personal space of their own.
    Partner,
    /// Another device of the same partner: also joins that partner's personal space.
    Device {
        /// The partner's personal-space secret.
        personal: SpaceSecret,
        /// The partner the device belongs to.
        partner: PartnerId,
        /// The partner's identity secret; `None` from an app that had none yet, in which case
        /// the device derives it from the personal secret as that app will.
        identity: Option<PartnerIdentity>,
    },
    /// A partner who lost every device, on a new one: joins the couple's space as the partner
    /// they were, with the identity the other partner vouched for, and a new personal space.
    Rejoin {
        /// The partner rejoining.
        partner: PartnerId,
    },
}

/// A decoded invite.
#[derive(Clone, PartialEq, Eq)]
pub struct Invite {
    /// The relay, e.g. `http://127.0.0.1:8787`.
    pub relay_url: String,
    /// The couple's space secret.
    pub couple: SpaceSecret,
    /// Partner or device invite.
    pub kind: InviteKind,
    /// The relay's pin, for a relay whose certificate no public CA signed.
    pub relay_pin: Option<RelayPin>,
    /// The journal's epoch and the hash of its first change in the couple's space, once it
    /// has been rotated: the joining device starts there.
    pub epoch: Option<(u32, [u8; 32])>,
}

impl fmt::Debug for Invite {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let kind = match self.kind {
            InviteKind::Partner => "partner",
            InviteKind::Device { .. } => "device",
            InviteKind::Rejoin { .. } => "rejoin",
        };
        f.debug_struct("Invite")
            .field("relay_url", &self.relay_url)
            .field("kind", &kind)
            .field("relay_pin", &self.relay_pin)
            .finish()
    }
}

fn damaged() -> Error {
    Error::Invite("this invite code is damaged or mistyped; ask your partner for a new one".into())
}

impl Invite {
    /// The invite as a string (keep it secret: it grants access to the journal).
    pub fn encode(&self) -> Result<Zeroizing<String>> {
        let url = self.relay_url.as_bytes();
        if url.is_empty() || url.len() > MAX_URL {
            return Err(Error::Invalid(format!(
                "a relay URL is 1 to {MAX_URL} bytes"
            )));
        }
        let mut raw = Zeroizing::new(Vec::with_capacity(2 + url.len() + 84 + 33 + 4));
        match &self.kind {
            InviteKind::Partner => raw.push(KIND_PARTNER),
            InviteKind::Device { .. } => raw.push(KIND_DEVICE),
            InviteKind::Rejoin { .. } => {
                if self.epoch.is_none() {
                    return Err(Error::Invalid("a rejoin follows a new epoch".into()));
                }
                raw.push(KIND_REJOIN);
            }
        }
        raw.push(url.len() as u8);
        raw.extend_from_slice(url);
        raw.extend_from_slice(self.couple.expose());
        let mut identity = None;
        if let InviteKind::Device {
            personal,
            partner,
            identity: carried,
        } = &self.kind
        {
            raw.extend_from_slice(personal.expose());
            raw.extend_from_slice(partner.as_bytes());
            identity = carried.as_ref();
        }
        if let InviteKind::Rejoin { partner } = &self.kind {
            raw.extend_from_slice(partner.as_bytes());
        }
        let prefix = match (&self.relay_pin, identity) {
            _ if self.epoch.is_some() => {
                let flags = if self.relay_pin.is_some() {
                    FLAG_PIN
                } else {
                    0
                } | if identity.is_some() { FLAG_IDENTITY } else { 0 };
                raw.push(flags);
                if let Some(pin) = &self.relay_pin {
                    raw.extend_from_slice(pin.as_bytes());
                }
                if let Some(identity) = identity {
                    raw.extend_from_slice(identity.expose());
                }
                if let Some((epoch, base)) = &self.epoch {
                    raw.extend_from_slice(&epoch.to_be_bytes());
                    raw.extend_from_slice(base);
                }
                PREFIX_V5
            }
            (None, None) => PREFIX_V1,
            (Some(pin), None) => {
                raw.push(1);
                raw.extend_from_slice(pin.as_bytes());
                PREFIX_V2
            }
            (pin, Some(identity)) => {
                raw.push(FLAG_IDENTITY | if pin.is_some() { FLAG_PIN } else { 0 });
                if let Some(pin) = pin {
                    raw.extend_from_slice(pin.as_bytes());
                }
                raw.extend_from_slice(identity.expose());
                PREFIX_V3
            }
        };
        let sum = Sha256::digest(raw.as_slice());
        raw.extend_from_slice(&sum[..4]);
        Ok(super::text::encode(prefix, raw.as_slice()))
    }

    /// Parses an invite, refusing anything damaged with a message fit for the user.
    pub fn decode(code: &str) -> Result<Self> {
        let code = super::text::compact(code);
        let (body, version) = if let Some(body) = code.strip_prefix(PREFIX_V1) {
            (body, 1)
        } else if let Some(body) = code.strip_prefix(PREFIX_V2) {
            (body, 2)
        } else if let Some(body) = code.strip_prefix(PREFIX_V3) {
            (body, 3)
        } else if let Some(body) = code.strip_prefix(PREFIX_V5) {
            (body, 5)
        } else if code.starts_with("MEND") && code.get(5..6) == Some("-") {
            return Err(newer());
        } else {
            return Err(Error::Invite(
                "this is not a Mend invite code (it should start with MEND and a version)".into(),
            ));
        };
        let raw = super::text::decode(body).ok_or_else(damaged)?;
        if raw.len() < 2 + 32 + 4 {
            return Err(damaged());
        }
        let (data, sum) = raw.split_at(raw.len() - 4);
        if Sha256::digest(data)[..4] != *sum {
            return Err(damaged());
        }
        let kind = data[0];
        let url_len = usize::from(data[1]);
        if !(kind == KIND_PARTNER || kind == KIND_DEVICE || (kind == KIND_REJOIN && version == 5)) {
            return Err(newer());
        }
        let secrets = 32
            + match kind {
                KIND_DEVICE => 48,
                KIND_REJOIN => 16,
                _ => 0,
            };
        let rest = &data[2..];
        let fixed = url_len.saturating_add(secrets);
        let mut epoch = None;
        let (rest, pin, identity) = match version {
            1 => (rest, None, None),
            5 => {
                let Some([flags, tail @ ..]) = rest.get(fixed..) else {
                    return Err(damaged());
                };
                if flags & !(FLAG_PIN | FLAG_IDENTITY) != 0
                    || (flags & FLAG_IDENTITY != 0 && kind != KIND_DEVICE)
                {
                    return Err(newer());
                }
                let mut tail = tail;
                let pin = if flags & FLAG_PIN != 0 {
                    let (pin, after) = tail.split_at_checked(32).ok_or_else(damaged)?;
                    tail = after;
                    let pin: [u8; 32] = pin.try_into().map_err(|_| damaged())?;
                    Some(RelayPin::from_bytes(pin))
                } else {
                    None
                };
                let identity = if flags & FLAG_IDENTITY != 0 {
                    let (identity, after) = tail.split_at_checked(32).ok_or_else(damaged)?;
                    tail = after;
                    Some(PartnerIdentity::from_slice(identity)?)
                } else {
                    None
                };
                let [e0, e1, e2, e3, base @ ..] = tail else {
                    return Err(damaged());
                };
                let base: [u8; 32] = base.try_into().map_err(|_| damaged())?;
                epoch = Some((u32::from_be_bytes([*e0, *e1, *e2, *e3]), base));
                (&rest[..fixed], pin, identity)
            }
            2 => match rest.get(fixed..) {
                Some([0]) => (&rest[..fixed], None, None),
                Some([1, pin @ ..]) => {
                    let pin: [u8; 32] = pin.try_into().map_err(|_| newer())?;
                    (&rest[..fixed], Some(RelayPin::from_bytes(pin)), None)
                }
                _ => return Err(newer()),
            },
            _ => match rest.get(fixed..) {
                // An identity belongs to a device invite only.
                Some([flags, tail @ ..])
                    if kind == KIND_DEVICE && flags & !FLAG_PIN == FLAG_IDENTITY =>
                {
                    let (pin, identity) = match (flags & FLAG_PIN != 0, tail.len()) {
                        (false, 32) => (None, tail),
                        (true, 64) => {
                            let (pin, identity) = tail.split_at(32);
                            let pin: [u8; 32] = pin.try_into().map_err(|_| newer())?;
                            (Some(RelayPin::from_bytes(pin)), identity)
                        }
                        _ => return Err(newer()),
                    };
                    (
                        &rest[..fixed],
                        pin,
                        Some(PartnerIdentity::from_slice(identity)?),
                    )
                }
                _ => return Err(newer()),
            },
        };
        if rest.len() != url_len + secrets {
            return Err(newer());
        }
        let relay_url = std::str::from_utf8(&rest[..url_len])
            .map_err(|_| damaged())?
            .to_owned();
        let couple = SpaceSecret::from_slice(&rest[url_len..url_len + 32])?;
        let kind = if kind == KIND_DEVICE {
            let personal = SpaceSecret::from_slice(&rest[url_len + 32..url_len + 64])?;
            let id: [u8; 16] = rest[url_len + 64..].try_into().map_err(|_| damaged())?;
            InviteKind::Device {
                personal,
                partner: PartnerId::from_uuid(uuid::Uuid::from_bytes(id)),
                identity,
            }
        } else if kind == KIND_REJOIN {
            let id: [u8; 16] = rest[url_len + 32..].try_into().map_err(|_| damaged())?;
            InviteKind::Rejoin {
                partner: PartnerId::from_uuid(uuid::Uuid::from_bytes(id)),
            }
        } else {
            InviteKind::Partner
        };
        Ok(Self {
            relay_url,
            couple,
            kind,
            relay_pin: pin,
            epoch,
        })
    }
}

fn newer() -> Error {
    Error::Invite("this invite code comes from a newer version of Mend; update the app".into())
}

#[cfg(test)]
mod tests {
    use super::*;
    use base64::{Engine, engine::general_purpose::URL_SAFE_NO_PAD};

    #[test]
    fn invites_round_trip_and_refuse_damage() -> Result<()> {
        let partner = Invite {
            relay_url: "http://127.0.0.1:8787".into(),
            couple: SpaceSecret::generate()?,
            kind: InviteKind::Partner,
            relay_pin: None,
            epoch: None,
        };
        let code = partner.encode()?;
        assert!(code.starts_with("MEND1-"));
        assert_eq!(Invite::decode(&code)?, partner);
        assert!(!format!("{partner:?}").contains(&code[6..20]));

        let device = Invite {
            kind: InviteKind::Device {
                personal: SpaceSecret::generate()?,
                partner: PartnerId::generate(),
                identity: None,
            },
            ..partner.clone()
        };
        assert_eq!(Invite::decode(&device.encode()?)?, device);

        // A pinned relay's invite is MEND2 and keeps its pin; a MEND1 code has none.
        let pinned = Invite {
            relay_pin: Some(RelayPin::of_spki(b"relay key")),
            relay_url: "https://relay.example:8443".into(),
            ..device.clone()
        };
        let pinned_code = pinned.encode()?;
        assert!(pinned_code.starts_with("MEND2-"));
        assert_eq!(Invite::decode(&pinned_code)?, pinned);
        let unpinned = Invite {
            relay_pin: None,
            ..pinned
        };
        assert!(unpinned.encode()?.starts_with("MEND1-"));
        assert_eq!(Invite::decode(&unpinned.encode()?)?.relay_pin, None);
        // A code from a version after this one is named as such, not as a stranger's text.
        let err = Invite::decode("MEND4-AAAA").err();
        assert!(
            matches!(&err, Some(Error::Invite(m)) if m.contains("newer")),
            "{err:?}"
        );

        // One changed character, a truncation, and a stranger's text are all refused.
        let mut chars: Vec<char> = code.chars().collect();
        let i = chars.len() / 2;
        chars[i] = if chars[i] == 'A' { 'B' } else { 'A' };
        let typo: String = chars.into_iter().collect();
        for bad in [typo.as_str(), &code[..code.len() - 3], "hello", "MEND1-!!!"] {
            let err = Invite::decode(bad)
                .err()
                .ok_or_else(|| Error::Invalid("accepted".into()))?;
            assert!(matches!(err, Error::Invite(_)), "{bad}: {err}");
        }
        Ok(())
    }

    #[test]
    fn a_handover_past_the_first_epoch_says_where_to_start() -> Result<()> {
        for kind in [
            InviteKind::Partner,
            InviteKind::Device {
                personal: SpaceSecret::generate()?,
                partner: PartnerId::generate(),
                identity: Some(PartnerIdentity::generate()?),
            },
            InviteKind::Rejoin {
                partner: PartnerId::generate(),
            },
        ] {
            for pin in [None, Some(RelayPin::of_spki(b"relay key"))] {
                let invite = Invite {
                    relay_url: "https://relay.example".into(),
                    couple: SpaceSecret::generate()?,
                    kind: kind.clone(),
                    relay_pin: pin,
                    epoch: Some((3, [9; 32])),
                };
                let code = invite.encode()?;
                assert!(code.starts_with("MEND5-"));
                assert_eq!(Invite::decode(&code)?, invite);
                assert!(Invite::decode(&code[..code.len() - 2]).is_err());
            }
        }
        Ok(())
    }

    #[test]
    fn a_device_invite_carries_the_partner_identity() -> Result<()> {
        let identity = PartnerIdentity::generate()?;
        let mut invite = Invite {
            relay_url: "http://127.0.0.1:8787".into(),
            couple: SpaceSecret::generate()?,
            kind: InviteKind::Device {
                personal: SpaceSecret::generate()?,
                partner: PartnerId::generate(),
                identity: Some(identity.clone()),
            },
            relay_pin: None,
            epoch: None,
        };
        for pin in [None, Some(RelayPin::of_spki(b"relay key"))] {
            invite.relay_pin = pin;
            let code = invite.encode()?;
            assert!(code.starts_with("MEND3-"));
            assert_eq!(Invite::decode(&code)?, invite);
            assert!(!format!("{invite:?}").contains(&hex::encode(identity.expose())[..16]));
        }
        // A partner invite never carries one: the flag on a partner kind is refused.
        let partner = Invite {
            kind: InviteKind::Partner,
            relay_pin: None,
            ..invite.clone()
        };
        let mut raw = URL_SAFE_NO_PAD
            .decode(&partner.encode()?[6..])
            .map_err(|_| Error::Invalid("base64".into()))?;
        raw.truncate(raw.len() - 4);
        raw.push(FLAG_IDENTITY);
        raw.extend_from_slice(identity.expose());
        let sum = Sha256::digest(&raw);
        raw.extend_from_slice(&sum[..4]);
        let forged = format!("MEND3-{}", URL_SAFE_NO_PAD.encode(&raw));
        assert!(Invite::decode(&forged).is_err());
        Ok(())
    }

    #[test]
    fn a_rejoin_is_only_written_past_the_first_epoch() -> Result<()> {
        let invite = Invite {
            relay_url: "http://127.0.0.1:8787".into(),
            couple: SpaceSecret::generate()?,
            kind: InviteKind::Rejoin {
                partner: PartnerId::generate(),
            },
            relay_pin: None,
            epoch: None,
        };
        assert!(invite.encode().is_err());
        Ok(())
    }
}
