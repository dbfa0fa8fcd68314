//! The space secret and what is derived from it.

use std::fmt;

use hkdf::Hkdf;
use sha2::Sha256;
use zeroize::{Zeroize, ZeroizeOnDrop};

use crate::error::{Error, Result};

const LABEL_SPACE_ID: &[u8] = b"mend/v1/space-id";
const LABEL_TOKEN: &[u8] = b"mend/v1/relay-token";
const LABEL_CONTENT: &[u8] = b"mend/v1/content-key";

/// The 32 random bytes that are a space. Whoever holds them can read and write the space.
#[derive(Clone, PartialEq, Eq, Zeroize, ZeroizeOnDrop)]
pub struct SpaceSecret([u8; 32]);

impl fmt::Debug for SpaceSecret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("SpaceSecret(…)")
    }
}

impl SpaceSecret {
    /// A new random secret.
    pub fn generate() -> Result<Self> {
        let mut bytes = [0u8; 32];
        super::random(&mut bytes)?;
        Ok(Self(bytes))
    }

    /// Wraps secret bytes the app kept (Keychain, Keystore).
    pub fn from_bytes(bytes: [u8; 32]) -> Self {
        Self(bytes)
    }

    /// Parses the secret from a slice, which must be 32 bytes.
    pub fn from_slice(bytes: &[u8]) -> Result<Self> {
        let arr: [u8; 32] = bytes
            .try_into()
            .map_err(|_| Error::Invalid("a space secret is 32 bytes".into()))?;
        Ok(Self(arr))
    }

    /// The raw bytes, for the app to store in Keychain or Keystore. Handle with care.
    pub fn expose(&self) -> &[u8; 32] {
        &self.0
    }

    pub(super) fn derive(&self, label: &[u8], out: &mut [u8]) {
        let hk = Hkdf::<Sha256>::new(None, &self.0);
        // 32 bytes is far below HKDF-SHA256's 8160-byte limit, so expand cannot fail.
        let _ = hk.expand(label, out);
    }

    /// The public id the relay knows the space by.
    pub fn derive_space_id(&self) -> [u8; 32] {
        let mut id = [0u8; 32];
        self.derive(LABEL_SPACE_ID, &mut id);
        id
    }

    /// The relay bearer token (43 characters of base64url).
    pub fn derive_token(&self) -> RelayToken {
        use base64::Engine;
        let mut raw = [0u8; 32];
        self.derive(LABEL_TOKEN, &mut raw);
        let token = base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(raw);
        raw.zeroize();
        RelayToken(token)
    }

    /// The key that seals chunks and snapshots.
    pub fn derive_content_key(&self) -> ContentKey {
        let mut key = [0u8; 32];
        self.derive(LABEL_CONTENT, &mut key);
        ContentKey(key)
    }

    /// Everything a device needs to sync this space.
    pub fn derive_keys(&self) -> SpaceKeys {
        SpaceKeys {
            space_id: self.derive_space_id(),
            token: self.derive_token(),
            content: self.derive_content_key(),
        }
    }
}

/// The bearer token sent to the relay. Never logged.
#[derive(Clone, PartialEq, Eq, Zeroize, ZeroizeOnDrop)]
pub struct RelayToken(String);

impl RelayToken {
    /// The token text, for the Authorization header.
    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for RelayToken {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("RelayToken(…)")
    }
}

/// The symmetric key for XChaCha20-Poly1305.
#[derive(Clone, Zeroize, ZeroizeOnDrop)]
pub struct ContentKey(pub(super) [u8; 32]);

impl fmt::Debug for ContentKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("ContentKey(…)")
    }
}

/// The derived keys of one space.
#[derive(Clone, Debug)]
pub struct SpaceKeys {
    /// The public space id.
    pub space_id: [u8; 32],
    /// The relay token.
    pub token: RelayToken,
    /// The content key.
    pub content: ContentKey,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn derivations_are_distinct_and_stable() -> Result<()> {
        let s = SpaceSecret::from_bytes([7u8; 32]);
        let again = SpaceSecret::from_bytes([7u8; 32]);
        assert_eq!(s.derive_space_id(), again.derive_space_id());
        assert_eq!(s.derive_token(), again.derive_token());
        assert_eq!(s.derive_token().expose().len(), 43);
        assert_ne!(s.derive_space_id(), s.derive_content_key().0);
        let other = SpaceSecret::generate()?;
        assert_ne!(other.derive_space_id(), s.derive_space_id());
        assert_eq!(format!("{s:?}"), "SpaceSecret(…)");
        assert!(!format!("{:?}", s.derive_keys()).contains(s.derive_token().expose()));
        Ok(())
    }
}
