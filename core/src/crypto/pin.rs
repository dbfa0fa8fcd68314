//! A relay pin: the SHA-256 of the relay certificate's SubjectPublicKeyInfo, written
//! `sha256/<base64>` (standard base64 with padding, as `openssl` prints it and as HPKP wrote
//! it). A device with a pin trusts the relay that proves it holds that key, whoever signed the
//! certificate: how a self-hosted relay with its own CA or a self-signed certificate is used.
//! The pin is public (a hash of a public key); it travels in invites and the keyring.

use std::fmt;

use base64::{Engine, engine::general_purpose::STANDARD};
use sha2::{Digest, Sha256};

use crate::error::{Error, Result};

const PIN_PREFIX: &str = "sha256/";

/// The SHA-256 of a relay certificate's SubjectPublicKeyInfo.
#[derive(Clone, Copy, PartialEq, Eq, Hash)]
pub struct RelayPin([u8; 32]);

impl RelayPin {
    /// The pin of a DER-encoded SubjectPublicKeyInfo.
    pub fn of_spki(spki_der: &[u8]) -> Self {
        Self(Sha256::digest(spki_der).into())
    }

    /// A pin from its 32 bytes.
    pub fn from_bytes(bytes: [u8; 32]) -> Self {
        Self(bytes)
    }

    /// The hash.
    pub fn as_bytes(&self) -> &[u8; 32] {
        &self.0
    }

    /// Parses `sha256/<base64>`.
    pub fn parse(text: &str) -> Result<Self> {
        let bad = || {
            Error::Invalid(
                "a relay pin looks like sha256/<base64 of the SHA-256 of the certificate's public key>".into(),
            )
        };
        let body = text.trim().strip_prefix(PIN_PREFIX).ok_or_else(bad)?;
        let bytes = STANDARD.decode(body).map_err(|_| bad())?;
        let bytes: [u8; 32] = bytes.try_into().map_err(|_| bad())?;
        Ok(Self(bytes))
    }
}

impl fmt::Display for RelayPin {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{PIN_PREFIX}{}", STANDARD.encode(self.0))
    }
}

impl fmt::Debug for RelayPin {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "RelayPin({self})")
    }
}

impl std::str::FromStr for RelayPin {
    type Err = Error;

    fn from_str(s: &str) -> Result<Self> {
        Self::parse(s)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pins_print_and_parse_as_sha256_base64() -> Result<()> {
        let pin = RelayPin::of_spki(b"not really a key");
        let text = pin.to_string();
        assert!(
            text.starts_with("sha256/") && text.len() == 7 + 44,
            "{text}"
        );
        assert_eq!(RelayPin::parse(&format!(" {text}\n"))?, pin);
        for bad in [
            "",
            "sha256/",
            "sha1/AAAA",
            "sha256/AAAA",
            &text[7..],
            "sha256/!!",
        ] {
            assert!(RelayPin::parse(bad).is_err(), "{bad}");
        }
        Ok(())
    }
}
