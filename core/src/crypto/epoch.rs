//! Sealing a new epoch's secrets to each device that stays, and to no other.
//!
//! A rotation (a device removed, a partner asking to forget) makes new space secrets. They
//! travel inside the old couple's document, one box per remaining device: X25519 between a
//! fresh ephemeral key and the device's key-agreement key, HKDF-SHA256 over both public keys and
//! the box's context, then XChaCha20-Poly1305. A device's key-agreement key is its Ed25519
//! signing key in Montgomery form (`SigningKey::to_scalar_bytes`, `VerifyingKey::to_montgomery`),
//! so the key its certificate already vouches for is the one a box is sealed to, and no second
//! key has to be certified, stored or rotated. Using one key for both is sound for Ed25519 and
//! X25519 with distinct hashing of each use (the signatures never sign a DH output, and the DH
//! output only ever feeds this HKDF), as libsodium's `crypto_sign_ed25519_sk_to_curve25519`
//! relies on too.

use chacha20poly1305::{
    KeyInit, XChaCha20Poly1305, XNonce,
    aead::{Aead, Payload},
};
use hkdf::Hkdf;
use sha2::Sha256;
use x25519_dalek::{PublicKey, StaticSecret};
use zeroize::Zeroizing;

use super::{DeviceKey, DevicePublicKey};
use crate::error::{Error, Result};

const LABEL_BOX: &[u8] = b"mend/v1/epoch-box";
/// Ephemeral public key, then the sealed bytes (the nonce is fixed: each key seals one box).
const EPHEMERAL: usize = 32;
/// The most a box may hold: two secrets and what names the epoch.
const MAX_BOX: usize = 512;

fn box_key(
    shared: &[u8; 32],
    ephemeral: &[u8; 32],
    recipient: &[u8; 32],
    context: &[u8],
) -> Zeroizing<[u8; 32]> {
    let hk = Hkdf::<Sha256>::new(Some(LABEL_BOX), shared);
    let mut key = Zeroizing::new([0u8; 32]);
    // 32 bytes is far below HKDF-SHA256's limit, so expand cannot fail.
    let _ = hk.expand_multi_info(&[ephemeral, recipient, context], key.as_mut());
    key
}

/// Seals `payload` so that only the holder of `recipient`'s device key opens it, bound to
/// `context` (the journal, the epoch and the device: a box moved elsewhere fails).
pub fn seal_to_device(
    recipient: &DevicePublicKey,
    context: &[u8],
    payload: &[u8],
) -> Result<Vec<u8>> {
    if payload.len() > MAX_BOX {
        return Err(Error::Invalid(
            "an epoch box holds at most 512 bytes".into(),
        ));
    }
    let mut seed = Zeroizing::new([0u8; 32]);
    super::random(seed.as_mut())?;
    let ephemeral = StaticSecret::from(*seed);
    let ephemeral_public = PublicKey::from(&ephemeral).to_bytes();
    let recipient = recipient.agreement_public();
    let shared = Zeroizing::new(
        ephemeral
            .diffie_hellman(&PublicKey::from(recipient))
            .to_bytes(),
    );
    if shared.iter().all(|b| *b == 0) {
        return Err(Error::Crypto("a device key of low order".into()));
    }
    let key = box_key(&shared, &ephemeral_public, &recipient, context);
    let sealed = XChaCha20Poly1305::new((&*key).into())
        .encrypt(
            &XNonce::default(),
            Payload {
                msg: payload,
                aad: context,
            },
        )
        .map_err(|_| Error::Crypto("sealing failed".into()))?;
    let mut out = Vec::with_capacity(EPHEMERAL + sealed.len());
    out.extend_from_slice(&ephemeral_public);
    out.extend_from_slice(&sealed);
    Ok(out)
}

/// Opens a box sealed to this device with [`seal_to_device`] under the same `context`.
pub fn open_from_device(
    key: &DeviceKey,
    context: &[u8],
    sealed: &[u8],
) -> Result<Zeroizing<Vec<u8>>> {
    let (ephemeral, body) = sealed.split_at_checked(EPHEMERAL).ok_or(Error::Tampered)?;
    let ephemeral: [u8; 32] = ephemeral.try_into().map_err(|_| Error::Tampered)?;
    let secret = StaticSecret::from(*key.agreement_secret());
    let recipient = PublicKey::from(&secret).to_bytes();
    let shared = Zeroizing::new(
        secret
            .diffie_hellman(&PublicKey::from(ephemeral))
            .to_bytes(),
    );
    if shared.iter().all(|b| *b == 0) {
        return Err(Error::Tampered);
    }
    let box_key = box_key(&shared, &ephemeral, &recipient, context);
    let plain = XChaCha20Poly1305::new((&*box_key).into())
        .decrypt(
            &XNonce::default(),
            Payload {
                msg: body,
                aad: context,
            },
        )
        .map_err(|_| Error::Tampered)?;
    Ok(Zeroizing::new(plain))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_box_opens_for_its_device_and_context_only() -> Result<()> {
        let alex = DeviceKey::generate()?;
        let lost = DeviceKey::generate()?;
        let sealed = seal_to_device(&alex.public(), b"journal/epoch 2/alex", b"new secrets")?;
        assert_eq!(
            open_from_device(&alex, b"journal/epoch 2/alex", &sealed)?.as_slice(),
            b"new secrets"
        );
        // Another device, another context, a bent byte: nothing.
        assert!(open_from_device(&lost, b"journal/epoch 2/alex", &sealed).is_err());
        assert!(open_from_device(&alex, b"journal/epoch 3/alex", &sealed).is_err());
        let mut bent = sealed.clone();
        bent[40] ^= 1;
        assert!(open_from_device(&alex, b"journal/epoch 2/alex", &bent).is_err());
        assert!(open_from_device(&alex, b"journal/epoch 2/alex", &sealed[..20]).is_err());
        // Two boxes of the same secrets look unrelated.
        let again = seal_to_device(&alex.public(), b"journal/epoch 2/alex", b"new secrets")?;
        assert_ne!(sealed, again);
        Ok(())
    }
}
