//! Sealing chunks and snapshots with XChaCha20-Poly1305.
//!
//! Sealed bytes are a 24-byte nonce followed by the ciphertext and tag. A snapshot's nonce is
//! random. A chunk's is derived from the key, its associated data and its plaintext, so the
//! same batch pushed again (after a lost acknowledgement) is the same bytes, and the relay can
//! tell a retry from a different payload under a reused number. The associated
//! data binds a chunk to its space, its device and that device's own sequence number, so a relay
//! that moves a chunk to another space, relabels its sender, or replays it under another number
//! is caught when the chunk is opened.

use chacha20poly1305::{
    KeyInit, XChaCha20Poly1305, XNonce,
    aead::{Aead, Payload},
};

use hkdf::Hkdf;
use sha2::{Digest, Sha256};

use super::{ContentKey, padme};
use crate::error::{Error, Result};

const NONCE: usize = 24;

/// What a chunk is bound to.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ChunkAad {
    /// The space id.
    pub space_id: [u8; 32],
    /// The sending device.
    pub device: [u8; 16],
    /// The sender's own sequence number for this chunk.
    pub device_seq: u64,
}

impl ChunkAad {
    fn bytes(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(13 + 32 + 16 + 8);
        out.extend_from_slice(b"mend-chunk-v1");
        out.extend_from_slice(&self.space_id);
        out.extend_from_slice(&self.device);
        out.extend_from_slice(&self.device_seq.to_be_bytes());
        out
    }
}

/// What a rollup is bound to: the space, the device whose chunks it stands for, and their
/// numbers. A relay cannot serve it for another range, device or space.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct RollupAad {
    /// The space id.
    pub space_id: [u8; 32],
    /// The device whose chunks it stands for.
    pub device: [u8; 16],
    /// The first of their numbers.
    pub first_seq: u64,
    /// The last of their numbers.
    pub last_seq: u64,
}

impl RollupAad {
    fn bytes(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(14 + 32 + 16 + 16);
        out.extend_from_slice(b"mend-rollup-v1");
        out.extend_from_slice(&self.space_id);
        out.extend_from_slice(&self.device);
        out.extend_from_slice(&self.first_seq.to_be_bytes());
        out.extend_from_slice(&self.last_seq.to_be_bytes());
        out
    }
}

fn snapshot_aad(space_id: &[u8; 32], covers: u64) -> Vec<u8> {
    let mut out = Vec::with_capacity(16 + 32 + 8);
    out.extend_from_slice(b"mend-snapshot-v1");
    out.extend_from_slice(space_id);
    out.extend_from_slice(&covers.to_be_bytes());
    out
}

/// A chunk's nonce: HKDF-SHA256 of the key, over the associated data and a hash of the
/// plaintext (a synthetic nonce, as in SIV). Equal nonces only ever seal equal bytes under equal
/// associated data, which reveals only that a chunk was sent twice.
fn chunk_nonce(key: &ContentKey, aad: &[u8], plaintext: &[u8]) -> Result<[u8; NONCE]> {
    let digest = Sha256::digest(plaintext);
    let hk = Hkdf::<Sha256>::new(Some(b"mend-chunk-nonce-v1"), &key.0);
    let mut nonce = [0u8; NONCE];
    hk.expand_multi_info(&[aad, digest.as_slice()], &mut nonce)
        .map_err(|_| Error::Crypto("nonce derivation failed".into()))?;
    Ok(nonce)
}

fn seal(key: &ContentKey, aad: &[u8], plaintext: &[u8]) -> Result<Vec<u8>> {
    let mut nonce = [0u8; NONCE];
    super::random(&mut nonce)?;
    seal_with(key, nonce, aad, plaintext)
}

fn seal_with(
    key: &ContentKey,
    nonce: [u8; NONCE],
    aad: &[u8],
    plaintext: &[u8],
) -> Result<Vec<u8>> {
    let cipher = XChaCha20Poly1305::new((&key.0).into());
    let padded = padme::pad(plaintext)?;
    let ct = cipher
        .encrypt(&XNonce::from(nonce), Payload { msg: &padded, aad })
        .map_err(|_| Error::Crypto("sealing failed".into()))?;
    let mut out = Vec::with_capacity(NONCE + ct.len());
    out.extend_from_slice(&nonce);
    out.extend_from_slice(&ct);
    Ok(out)
}

fn open(key: &ContentKey, aad: &[u8], sealed: &[u8]) -> Result<Vec<u8>> {
    if sealed.len() < NONCE + 16 {
        return Err(Error::Tampered);
    }
    let (nonce, ct) = sealed.split_at(NONCE);
    let nonce: [u8; NONCE] = nonce.try_into().map_err(|_| Error::Tampered)?;
    let cipher = XChaCha20Poly1305::new((&key.0).into());
    let padded = cipher
        .decrypt(&XNonce::from(nonce), Payload { msg: ct, aad })
        .map_err(|_| Error::Tampered)?;
    padme::unpad(padded).map_err(|_| Error::Tampered)
}

/// Seals a batch of change bytes for the relay.
pub fn seal_chunk(key: &ContentKey, aad: &ChunkAad, plaintext: &[u8]) -> Result<Vec<u8>> {
    let aad = aad.bytes();
    let nonce = chunk_nonce(key, &aad, plaintext)?;
    seal_with(key, nonce, &aad, plaintext)
}

/// Opens a chunk; [`Error::Tampered`] if it was altered or is bound to something else.
pub fn open_chunk(key: &ContentKey, aad: &ChunkAad, sealed: &[u8]) -> Result<Vec<u8>> {
    open(key, &aad.bytes(), sealed)
}

/// Seals a rollup (its nonce derived like a chunk's: the same rollup sealed again after a
/// crash is the same bytes).
pub fn seal_rollup(key: &ContentKey, aad: &RollupAad, plaintext: &[u8]) -> Result<Vec<u8>> {
    let aad = aad.bytes();
    let nonce = chunk_nonce(key, &aad, plaintext)?;
    seal_with(key, nonce, &aad, plaintext)
}

/// Opens a rollup; [`Error::Tampered`] if it was altered, cut, or is bound to something else.
pub fn open_rollup(key: &ContentKey, aad: &RollupAad, sealed: &[u8]) -> Result<Vec<u8>> {
    open(key, &aad.bytes(), sealed)
}

/// Seals a snapshot covering the relay log up to `covers`.
pub fn seal_snapshot(
    key: &ContentKey,
    space_id: &[u8; 32],
    covers: u64,
    plaintext: &[u8],
) -> Result<Vec<u8>> {
    seal(key, &snapshot_aad(space_id, covers), plaintext)
}

/// Opens a snapshot.
pub fn open_snapshot(
    key: &ContentKey,
    space_id: &[u8; 32],
    covers: u64,
    sealed: &[u8],
) -> Result<Vec<u8>> {
    open(key, &snapshot_aad(space_id, covers), sealed)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::crypto::SpaceSecret;

    /// A cipher keyed with a content key, and the hash states HKDF keys with a space secret,
    /// wipe themselves when dropped (the crates' "zeroize" features; without them this does
    /// not compile).
    #[test]
    fn ciphers_and_hash_states_wipe_themselves() {
        fn wiped<T: zeroize::ZeroizeOnDrop>() {}
        wiped::<XChaCha20Poly1305>();
        wiped::<sha2::Sha256>();
    }

    #[test]
    fn a_chunk_opens_only_where_it_was_sealed() -> Result<()> {
        let key = SpaceSecret::from_bytes([1; 32]).derive_content_key();
        let aad = ChunkAad {
            space_id: [2; 32],
            device: [3; 16],
            device_seq: 4,
        };
        let sealed = seal_chunk(&key, &aad, b"changes")?;
        assert_eq!(open_chunk(&key, &aad, &sealed)?, b"changes");
        // The same batch sealed again is the same bytes (a retry is not a new payload); other
        // bytes under the same number are not.
        assert_eq!(seal_chunk(&key, &aad, b"changes")?, sealed);
        let other = seal_chunk(&key, &aad, b"changed")?;
        assert_ne!(other[..NONCE], sealed[..NONCE]);
        // Snapshots keep a random nonce.
        let s1 = seal_snapshot(&key, &[2; 32], 7, b"doc")?;
        assert_ne!(seal_snapshot(&key, &[2; 32], 7, b"doc")?, s1);
        for other in [
            ChunkAad {
                device_seq: 5,
                ..aad
            },
            ChunkAad {
                device: [9; 16],
                ..aad
            },
            ChunkAad {
                space_id: [9; 32],
                ..aad
            },
        ] {
            assert!(matches!(
                open_chunk(&key, &other, &sealed),
                Err(Error::Tampered)
            ));
        }
        let mut flipped = sealed.clone();
        let last = flipped.len() - 1;
        flipped[last] ^= 1;
        assert!(matches!(
            open_chunk(&key, &aad, &flipped),
            Err(Error::Tampered)
        ));
        assert!(matches!(
            open_chunk(&key, &aad, &sealed[..10]),
            Err(Error::Tampered)
        ));
        let wrong = SpaceSecret::from_bytes([8; 32]).derive_content_key();
        assert!(matches!(
            open_chunk(&wrong, &aad, &sealed),
            Err(Error::Tampered)
        ));
        Ok(())
    }

    #[test]
    fn a_rollup_opens_only_for_its_range() -> Result<()> {
        let key = SpaceSecret::from_bytes([1; 32]).derive_content_key();
        let aad = RollupAad {
            space_id: [2; 32],
            device: [3; 16],
            first_seq: 4,
            last_seq: 9,
        };
        let sealed = seal_rollup(&key, &aad, b"changes")?;
        assert_eq!(open_rollup(&key, &aad, &sealed)?, b"changes");
        assert_eq!(seal_rollup(&key, &aad, b"changes")?, sealed);
        for other in [
            RollupAad {
                first_seq: 5,
                ..aad
            },
            RollupAad { last_seq: 8, ..aad },
            RollupAad {
                device: [9; 16],
                ..aad
            },
        ] {
            assert!(matches!(
                open_rollup(&key, &other, &sealed),
                Err(Error::Tampered)
            ));
        }
        // A chunk's seal does not open as a rollup, nor a rollup's as a chunk.
        let chunk = ChunkAad {
            space_id: [2; 32],
            device: [3; 16],
            device_seq: 4,
        };
        assert!(open_chunk(&key, &chunk, &sealed).is_err());
        let sealed_chunk = seal_chunk(&key, &chunk, b"changes")?;
        assert!(open_rollup(&key, &aad, &sealed_chunk).is_err());
        Ok(())
    }

    #[test]
    fn snapshots_are_bound_to_what_they_cover() -> Result<()> {
        let key = SpaceSecret::from_bytes([1; 32]).derive_content_key();
        let sealed = seal_snapshot(&key, &[2; 32], 10, b"doc")?;
        assert_eq!(open_snapshot(&key, &[2; 32], 10, &sealed)?, b"doc");
        assert!(open_snapshot(&key, &[2; 32], 11, &sealed).is_err());
        Ok(())
    }
}
