//! Signing identities: who made a change, provably.
//!
//! Each partner has an Ed25519 identity key; each device its own signing key, which the
//! partner's identity certifies for one couple's space ([`DeviceCertificate`]). A device signs
//! each change it makes ([`sign_change`]); a receiver checks the signature against a certified
//! device key ([`verify_change`]). One device can later be revoked without the others, because
//! the identity never signs changes itself.
//!
//! Every signed message starts with its own label, so a signature made for one purpose is
//! never valid for another. Verification is strict (RFC 8032 with small-order keys and
//! non-canonical signatures refused) and one signature at a time: every replica must accept
//! exactly the same changes, and batch verification accepts a slightly different set.

use std::fmt;

use ed25519_dalek::{Signature, Signer as _, SigningKey, VerifyingKey};
use sha2::{Digest, Sha256};
use zeroize::Zeroizing;

use super::SpaceSecret;
use crate::{
    error::{Error, Result},
    ids::{DeviceId, PartnerId},
};

const LABEL_CERTIFICATE: &[u8] = b"mend/v1/device-certificate\0";
const LABEL_CHANGE: &[u8] = b"mend/v1/change-proof\0";
const LABEL_GROUP: &[u8] = b"mend/v1/change-group\0";
const LABEL_IDENTITY_SEED: &[u8] = b"mend/v1/partner-identity";
const LABEL_KEY_ID: &[u8] = b"mend/v1/key-id\0";
const LABEL_PARTNER_ID: &[u8] = b"mend/v1/partner-id\0";

/// The encoded length of a [`DeviceCertificate`].
pub const CERTIFICATE_LEN: usize = 1 + 32 + 16 + 16 + 32 + 8 + 64;
const CERTIFICATE_VERSION: u8 = 1;

fn generate_signing_key() -> Result<SigningKey> {
    let mut seed = Zeroizing::new([0u8; 32]);
    super::random(seed.as_mut())?;
    Ok(SigningKey::from_bytes(&seed))
}

fn signing_key_from_slice(bytes: &[u8], what: &str) -> Result<SigningKey> {
    let seed: Zeroizing<[u8; 32]> = Zeroizing::new(
        bytes
            .try_into()
            .map_err(|_| Error::Invalid(format!("a {what} is 32 bytes")))?,
    );
    Ok(SigningKey::from_bytes(&seed))
}

/// A short, stable name for a public key that a person can compare: the first 8 bytes of its
/// SHA-256, in hex.
fn fingerprint(key: &[u8; 32]) -> String {
    hex::encode(&Sha256::digest(key)[..8])
}

/// A partner's identity key pair. Certifies that partner's devices; kept in the keyring, never
/// in the database. (Wiped when dropped; `Debug` shows only the public fingerprint.)
#[derive(Clone)]
pub struct PartnerIdentity(SigningKey);

impl PartnerIdentity {
    /// A new random identity.
    pub fn generate() -> Result<Self> {
        generate_signing_key().map(Self)
    }

    /// The identity a partner's personal-space secret determines. Journals from before
    /// identities existed get theirs this way on first open, so every device of one partner
    /// arrives at the same key without talking to the others.
    pub fn derive_from(personal: &SpaceSecret) -> Self {
        let mut seed = Zeroizing::new([0u8; 32]);
        personal.derive(LABEL_IDENTITY_SEED, seed.as_mut());
        Self(SigningKey::from_bytes(&seed))
    }

    /// Reads the 32 secret bytes [`PartnerIdentity::expose`] gave.
    pub fn from_slice(bytes: &[u8]) -> Result<Self> {
        signing_key_from_slice(bytes, "partner identity").map(Self)
    }

    /// The secret bytes, for the keyring and the device invite only.
    pub fn expose(&self) -> &[u8; 32] {
        self.0.as_bytes()
    }

    /// The public half, which the couple's document holds.
    pub fn public(&self) -> IdentityKey {
        IdentityKey(self.0.verifying_key())
    }

    /// Certifies `device` (holding `device_key`) as one of `partner`'s devices in the couple's
    /// space `space_id`.
    pub fn certify(
        &self,
        space_id: &[u8; 32],
        partner: PartnerId,
        device: DeviceId,
        device_key: &DevicePublicKey,
        issued_at: i64,
    ) -> DeviceCertificate {
        let mut cert = DeviceCertificate {
            space_id: *space_id,
            partner,
            device,
            device_key: *device_key,
            issued_at,
            signature: [0u8; 64],
        };
        cert.signature = self.0.sign(&cert.signed_message()).to_bytes();
        cert
    }
}

impl PartialEq for PartnerIdentity {
    fn eq(&self, other: &Self) -> bool {
        // The public key is a function of the secret: comparing it compares the secrets
        // without touching them.
        self.public() == other.public()
    }
}

impl Eq for PartnerIdentity {}

impl fmt::Debug for PartnerIdentity {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "PartnerIdentity({}, …)", self.public().fingerprint())
    }
}

/// A device's signing key pair: signs every change the device makes. Kept in the keyring,
/// never in the database. (Wiped when dropped; `Debug` shows only the public fingerprint.)
#[derive(Clone)]
pub struct DeviceKey(SigningKey);

impl DeviceKey {
    /// A new random device key.
    pub fn generate() -> Result<Self> {
        generate_signing_key().map(Self)
    }

    /// Reads the 32 secret bytes [`DeviceKey::expose`] gave.
    pub fn from_slice(bytes: &[u8]) -> Result<Self> {
        signing_key_from_slice(bytes, "device key").map(Self)
    }

    /// The secret bytes, for the keyring only.
    pub fn expose(&self) -> &[u8; 32] {
        self.0.as_bytes()
    }

    /// The public half, which the device's certificate carries.
    pub fn public(&self) -> DevicePublicKey {
        DevicePublicKey(self.0.verifying_key())
    }

    /// The X25519 secret that goes with [`DevicePublicKey::agreement_public`] (see
    /// `crypto/epoch.rs` for why one key serves both).
    pub(crate) fn agreement_secret(&self) -> Zeroizing<[u8; 32]> {
        Zeroizing::new(self.0.to_scalar_bytes())
    }
}

impl PartialEq for DeviceKey {
    fn eq(&self, other: &Self) -> bool {
        self.public() == other.public()
    }
}

impl Eq for DeviceKey {}

impl fmt::Debug for DeviceKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "DeviceKey({}, …)", self.public().fingerprint())
    }
}

macro_rules! public_key {
    ($(#[$doc:meta])* $name:ident, $what:literal) => {
        $(#[$doc])*
        #[derive(Clone, Copy, PartialEq, Eq, Hash)]
        pub struct $name(VerifyingKey);

        impl $name {
            /// Parses 32 bytes, refusing points that are not on the curve and small-order keys
            /// (any signature would verify under those).
            pub fn from_bytes(bytes: &[u8; 32]) -> Result<Self> {
                let key = VerifyingKey::from_bytes(bytes)
                    .map_err(|_| Error::Invalid(concat!("not a valid ", $what).into()))?;
                if key.is_weak() {
                    return Err(Error::Invalid(concat!("not a valid ", $what).into()));
                }
                Ok(Self(key))
            }

            /// The 32 public bytes.
            pub fn to_bytes(&self) -> [u8; 32] {
                self.0.to_bytes()
            }

            /// See [`fingerprint`](self): 16 hex digits.
            pub fn fingerprint(&self) -> String {
                fingerprint(self.0.as_bytes())
            }
        }

        impl fmt::Debug for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                write!(f, "{}({})", stringify!($name), self.fingerprint())
            }
        }
    };
}

public_key!(
    /// A partner's public identity key, as the couple's document records it.
    IdentityKey,
    "partner identity key"
);
public_key!(
    /// A device's public signing key, as its certificate carries it.
    DevicePublicKey,
    "device key"
);

/// The short name of a device key that every change the device makes carries in its
/// Automerge actor (the first 16 bytes), so a receiver knows which key must have signed it.
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct KeyId(pub [u8; 16]);

impl fmt::Debug for KeyId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "KeyId({})", hex::encode(&self.0[..4]))
    }
}

impl KeyId {
    /// What people see of it: 8 hex digits.
    pub fn short(&self) -> String {
        hex::encode(&self.0[..4])
    }
}

impl DevicePublicKey {
    /// This key in Montgomery form: the X25519 key a new epoch's secrets are sealed to.
    pub(crate) fn agreement_public(&self) -> [u8; 32] {
        self.0.to_montgomery().to_bytes()
    }

    /// This key's [`KeyId`].
    pub fn key_id(&self) -> KeyId {
        let digest = Sha256::new()
            .chain_update(LABEL_KEY_ID)
            .chain_update(self.0.as_bytes())
            .finalize();
        let mut id = [0u8; 16];
        id.copy_from_slice(&digest[..16]);
        KeyId(id)
    }
}

impl IdentityKey {
    /// The partner id this identity key stands for. A partner who joined with an identity has
    /// this id, so the key proves the id without anything else (older journals' partners
    /// have random ids, tied to their keys on first use: see docs/security.md).
    pub fn partner_id(&self) -> PartnerId {
        let digest = Sha256::new()
            .chain_update(LABEL_PARTNER_ID)
            .chain_update(self.0.as_bytes())
            .finalize();
        let mut id = [0u8; 16];
        id.copy_from_slice(&digest[..16]);
        // Marked as a version 8 (custom) UUID, so it reads as what it is.
        PartnerId::from_uuid(uuid::Builder::from_custom_bytes(id).into_uuid())
    }
}

/// How a device introduces itself to the couple's other devices: its partner's identity key
/// and that identity's certificate for the device's key. Verifiable on its own.
#[derive(Clone, Copy, PartialEq, Eq)]
pub struct Intro {
    /// The partner's identity key.
    pub identity: IdentityKey,
    /// The certificate the identity issued for the device.
    pub cert: DeviceCertificate,
}

impl fmt::Debug for Intro {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Intro")
            .field("partner", &self.cert.partner)
            .field("key", &self.cert.device_key.key_id())
            .finish()
    }
}

/// The encoded length of an [`Intro`].
pub const INTRO_LEN: usize = 32 + CERTIFICATE_LEN;

impl Intro {
    /// `identity key (32) | certificate`.
    pub fn to_bytes(&self) -> [u8; INTRO_LEN] {
        let mut out = [0u8; INTRO_LEN];
        out[..32].copy_from_slice(&self.identity.to_bytes());
        out[32..].copy_from_slice(&self.cert.to_bytes());
        out
    }

    /// Parses [`Intro::to_bytes`]; checks nothing: see [`Intro::verify`].
    pub fn from_bytes(bytes: &[u8]) -> Result<Self> {
        let bad = || Error::Invalid("not a device introduction".into());
        if bytes.len() != INTRO_LEN {
            return Err(bad());
        }
        let key: [u8; 32] = bytes[..32].try_into().map_err(|_| bad())?;
        Ok(Self {
            identity: IdentityKey::from_bytes(&key)?,
            cert: DeviceCertificate::from_bytes(&bytes[32..])?,
        })
    }

    /// Checks that the identity issued the certificate for `space_id`.
    pub fn verify(&self, space_id: &[u8; 32]) -> Result<()> {
        self.cert.verify(&self.identity, space_id)
    }

    /// Whether the identity key proves the partner id by itself (see
    /// [`IdentityKey::partner_id`]).
    pub fn self_certifying(&self) -> bool {
        self.identity.partner_id() == self.cert.partner
    }
}

/// What a device signs its changes with: its key and its introduction.
#[derive(Clone)]
pub struct Signer {
    /// The couple's space id.
    pub space_id: [u8; 32],
    /// The device's key.
    pub key: DeviceKey,
    /// Its introduction.
    pub intro: Intro,
}

impl fmt::Debug for Signer {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Signer")
            .field("intro", &self.intro)
            .finish_non_exhaustive()
    }
}

impl Signer {
    /// The signer of `partner`'s device `device` in the couple's space `space_id`, certified
    /// now by `identity`.
    pub fn new(
        space_id: [u8; 32],
        identity: &PartnerIdentity,
        partner: PartnerId,
        device: DeviceId,
        key: DeviceKey,
        now: i64,
    ) -> Self {
        let cert = identity.certify(&space_id, partner, device, &key.public(), now);
        Self {
            space_id,
            intro: Intro {
                identity: identity.public(),
                cert,
            },
            key,
        }
    }

    /// This device's key id.
    pub fn key_id(&self) -> KeyId {
        self.intro.cert.device_key.key_id()
    }
}

/// A partner identity's statement that a device key belongs to one of its devices in one
/// couple's space, from a moment on.
#[derive(Clone, Copy, PartialEq, Eq)]
pub struct DeviceCertificate {
    /// The couple's space id: a certificate never carries over to another couple or epoch.
    pub space_id: [u8; 32],
    /// The partner whose device it is.
    pub partner: PartnerId,
    /// The device.
    pub device: DeviceId,
    /// The device's signing key.
    pub device_key: DevicePublicKey,
    /// When the identity issued it (Unix milliseconds, the issuer's clock).
    pub issued_at: i64,
    /// The identity's signature over everything above.
    pub signature: [u8; 64],
}

impl fmt::Debug for DeviceCertificate {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("DeviceCertificate")
            .field("partner", &self.partner)
            .field("device", &self.device)
            .field("device_key", &self.device_key)
            .field("issued_at", &self.issued_at)
            .finish_non_exhaustive()
    }
}

impl DeviceCertificate {
    /// `label | space id (32) | partner (16) | device (16) | device key (32) | issued_at (8,
    /// big-endian)`: fixed widths, so no two certificates share an encoding.
    fn signed_message(&self) -> Vec<u8> {
        let mut m = Vec::with_capacity(LABEL_CERTIFICATE.len() + CERTIFICATE_LEN);
        m.extend_from_slice(LABEL_CERTIFICATE);
        m.extend_from_slice(&self.space_id);
        m.extend_from_slice(self.partner.as_bytes());
        m.extend_from_slice(self.device.as_bytes());
        m.extend_from_slice(&self.device_key.to_bytes());
        m.extend_from_slice(&self.issued_at.to_be_bytes());
        m
    }

    /// Checks that `identity` issued this certificate for `space_id`.
    pub fn verify(&self, identity: &IdentityKey, space_id: &[u8; 32]) -> Result<()> {
        let refused = || Error::Invalid("a device certificate does not verify".into());
        if self.space_id != *space_id {
            return Err(refused());
        }
        identity
            .0
            .verify_strict(
                &self.signed_message(),
                &Signature::from_bytes(&self.signature),
            )
            .map_err(|_| refused())
    }

    /// `version (1) | space id | partner | device | device key | issued_at | signature`.
    pub fn to_bytes(&self) -> [u8; CERTIFICATE_LEN] {
        let mut out = [0u8; CERTIFICATE_LEN];
        out[0] = CERTIFICATE_VERSION;
        // The signed message after its label is exactly the middle of the encoding.
        let body = &self.signed_message()[LABEL_CERTIFICATE.len()..];
        out[1..1 + body.len()].copy_from_slice(body);
        out[1 + body.len()..].copy_from_slice(&self.signature);
        out
    }

    /// Parses [`DeviceCertificate::to_bytes`]. Says nothing about who signed it: call
    /// [`DeviceCertificate::verify`].
    pub fn from_bytes(bytes: &[u8]) -> Result<Self> {
        let bad = || Error::Invalid("not a device certificate".into());
        let bytes: &[u8; CERTIFICATE_LEN] = bytes.try_into().map_err(|_| bad())?;
        if bytes[0] != CERTIFICATE_VERSION {
            return Err(bad());
        }
        let (space_id, rest) = bytes[1..].split_at(32);
        let (partner, rest) = rest.split_at(16);
        let (device, rest) = rest.split_at(16);
        let (key, rest) = rest.split_at(32);
        let (issued_at, signature) = rest.split_at(8);
        let array = |s: &[u8]| -> Result<[u8; 32]> { s.try_into().map_err(|_| bad()) };
        let id = |s: &[u8]| -> Result<uuid::Uuid> {
            Ok(uuid::Uuid::from_bytes(s.try_into().map_err(|_| bad())?))
        };
        Ok(Self {
            space_id: array(space_id)?,
            partner: PartnerId::from_uuid(id(partner)?),
            device: DeviceId::from_uuid(id(device)?),
            device_key: DevicePublicKey::from_bytes(&array(key)?)?,
            issued_at: i64::from_be_bytes(issued_at.try_into().map_err(|_| bad())?),
            signature: signature.try_into().map_err(|_| bad())?,
        })
    }
}

/// A device's signature over one change of one space.
#[derive(Clone, Copy, PartialEq, Eq)]
pub struct ChangeProof(pub [u8; 64]);

impl fmt::Debug for ChangeProof {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("ChangeProof(…)")
    }
}

/// `label | space id (32) | change hash (32)`.
fn change_message(space_id: &[u8; 32], change_hash: &[u8; 32]) -> [u8; 85] {
    let mut m = [0u8; 85];
    m[..21].copy_from_slice(LABEL_CHANGE);
    m[21..53].copy_from_slice(space_id);
    m[53..].copy_from_slice(change_hash);
    m
}

/// The device's proof that it made the change with hash `change_hash` in space `space_id`.
/// The hash covers the change's bytes, actor and dependencies, so the proof covers them too.
pub fn sign_change(
    device_key: &DeviceKey,
    space_id: &[u8; 32],
    change_hash: &[u8; 32],
) -> ChangeProof {
    ChangeProof(
        device_key
            .0
            .sign(&change_message(space_id, change_hash))
            .to_bytes(),
    )
}

/// Checks a [`sign_change`] proof.
pub fn verify_change(
    device_key: &DevicePublicKey,
    space_id: &[u8; 32],
    change_hash: &[u8; 32],
    proof: &ChangeProof,
) -> Result<()> {
    device_key
        .0
        .verify_strict(
            &change_message(space_id, change_hash),
            &Signature::from_bytes(&proof.0),
        )
        .map_err(|_| Error::Tampered)
}

/// What a group proof is for: the relay device id whose chunks it stands for and their numbers.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct GroupScope {
    /// The relay device id the chunks were pushed under.
    pub device: [u8; 16],
    /// The first of their numbers.
    pub first_seq: u64,
    /// The last of their numbers.
    pub last_seq: u64,
}

/// `label | space id (32) | device (16) | first (u64) | last (u64) | count (u32) | hashes (32
/// each, in increasing order)`, big-endian.
fn group_message(space_id: &[u8; 32], scope: &GroupScope, sorted_hashes: &[[u8; 32]]) -> Vec<u8> {
    let mut m = Vec::with_capacity(LABEL_GROUP.len() + 68 + sorted_hashes.len() * 32);
    m.extend_from_slice(LABEL_GROUP);
    m.extend_from_slice(space_id);
    m.extend_from_slice(&scope.device);
    m.extend_from_slice(&scope.first_seq.to_be_bytes());
    m.extend_from_slice(&scope.last_seq.to_be_bytes());
    m.extend_from_slice(
        &u32::try_from(sorted_hashes.len())
            .unwrap_or(u32::MAX)
            .to_be_bytes(),
    );
    for hash in sorted_hashes {
        m.extend_from_slice(hash);
    }
    m
}

/// The device's proof that it made every change of a group at once (a rollup of its own
/// chunks `scope`): one signature over their hashes, which must be in increasing order.
pub fn sign_group(
    device_key: &DeviceKey,
    space_id: &[u8; 32],
    scope: &GroupScope,
    sorted_hashes: &[[u8; 32]],
) -> ChangeProof {
    ChangeProof(
        device_key
            .0
            .sign(&group_message(space_id, scope, sorted_hashes))
            .to_bytes(),
    )
}

/// Checks a [`sign_group`] proof.
pub fn verify_group(
    device_key: &DevicePublicKey,
    space_id: &[u8; 32],
    scope: &GroupScope,
    sorted_hashes: &[[u8; 32]],
    proof: &ChangeProof,
) -> Result<()> {
    device_key
        .0
        .verify_strict(
            &group_message(space_id, scope, sorted_hashes),
            &Signature::from_bytes(&proof.0),
        )
        .map_err(|_| Error::Tampered)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn fixture() -> Result<(PartnerIdentity, DeviceKey, [u8; 32], DeviceCertificate)> {
        let identity = PartnerIdentity::generate()?;
        let device = DeviceKey::generate()?;
        let space = SpaceSecret::generate()?.derive_space_id();
        let cert = identity.certify(
            &space,
            PartnerId::generate(),
            DeviceId::generate(),
            &device.public(),
            1_700_000_000_000,
        );
        Ok((identity, device, space, cert))
    }

    #[test]
    fn a_certificate_verifies_only_under_its_identity_and_space() -> Result<()> {
        let (identity, _, space, cert) = fixture()?;
        cert.verify(&identity.public(), &space)?;
        let stranger = PartnerIdentity::generate()?;
        assert!(cert.verify(&stranger.public(), &space).is_err());
        let other_space = SpaceSecret::generate()?.derive_space_id();
        assert!(cert.verify(&identity.public(), &other_space).is_err());
        // Re-labelled for the other space, the signature still names the first.
        let moved = DeviceCertificate {
            space_id: other_space,
            ..cert
        };
        assert!(moved.verify(&identity.public(), &other_space).is_err());
        Ok(())
    }

    #[test]
    fn every_tampered_field_breaks_the_certificate() -> Result<()> {
        let (identity, _, space, cert) = fixture()?;
        let key = identity.public();
        let tampered = [
            DeviceCertificate {
                partner: PartnerId::generate(),
                ..cert
            },
            DeviceCertificate {
                device: DeviceId::generate(),
                ..cert
            },
            DeviceCertificate {
                device_key: DeviceKey::generate()?.public(),
                ..cert
            },
            DeviceCertificate {
                issued_at: cert.issued_at + 1,
                ..cert
            },
            DeviceCertificate {
                signature: {
                    let mut s = cert.signature;
                    s[5] ^= 1;
                    s
                },
                ..cert
            },
        ];
        for t in tampered {
            assert!(t.verify(&key, &space).is_err(), "{t:?}");
        }
        // Every bit of the encoding matters: a flipped byte either fails to parse or to verify.
        let bytes = cert.to_bytes();
        for i in 0..bytes.len() {
            let mut b = bytes;
            b[i] ^= 0x40;
            let ok = DeviceCertificate::from_bytes(&b).and_then(|c| c.verify(&key, &space));
            assert!(ok.is_err(), "byte {i}");
        }
        Ok(())
    }

    #[test]
    fn certificates_round_trip_and_refuse_bad_encodings() -> Result<()> {
        let (identity, _, space, cert) = fixture()?;
        let again = DeviceCertificate::from_bytes(&cert.to_bytes())?;
        assert_eq!(again, cert);
        again.verify(&identity.public(), &space)?;
        let bytes = cert.to_bytes();
        assert!(DeviceCertificate::from_bytes(&bytes[..CERTIFICATE_LEN - 1]).is_err());
        assert!(DeviceCertificate::from_bytes(&[]).is_err());
        let mut newer = bytes;
        newer[0] = 2;
        assert!(DeviceCertificate::from_bytes(&newer).is_err());
        Ok(())
    }

    #[test]
    fn a_change_proof_binds_device_space_and_change() -> Result<()> {
        let (_, device, space, _) = fixture()?;
        let hash = [9u8; 32];
        let proof = sign_change(&device, &space, &hash);
        verify_change(&device.public(), &space, &hash, &proof)?;
        let other = DeviceKey::generate()?;
        assert!(verify_change(&other.public(), &space, &hash, &proof).is_err());
        assert!(verify_change(&device.public(), &[1u8; 32], &hash, &proof).is_err());
        assert!(verify_change(&device.public(), &space, &[8u8; 32], &proof).is_err());
        let mut bent = proof;
        bent.0[63] ^= 1;
        assert!(verify_change(&device.public(), &space, &hash, &bent).is_err());
        Ok(())
    }

    #[test]
    fn a_group_proof_binds_every_hash_and_no_single_change() -> Result<()> {
        let (_, device, space, _) = fixture()?;
        let hashes = [[1u8; 32], [2u8; 32], [3u8; 32]];
        let scope = GroupScope {
            device: [4; 16],
            first_seq: 5,
            last_seq: 9,
        };
        let key = device.public();
        let proof = sign_group(&device, &space, &scope, &hashes);
        verify_group(&key, &space, &scope, &hashes, &proof)?;
        // One fewer, one more, one other, another space, device or range: refused.
        assert!(verify_group(&key, &space, &scope, &hashes[..2], &proof).is_err());
        assert!(verify_group(&key, &space, &scope, &[[0; 32], [1; 32]], &proof).is_err());
        let mut other = hashes;
        other[1][0] ^= 1;
        assert!(verify_group(&key, &space, &scope, &other, &proof).is_err());
        assert!(verify_group(&key, &[7u8; 32], &scope, &hashes, &proof).is_err());
        for bent in [
            GroupScope {
                device: [5; 16],
                ..scope
            },
            GroupScope {
                first_seq: 6,
                ..scope
            },
            GroupScope {
                last_seq: 10,
                ..scope
            },
        ] {
            assert!(verify_group(&key, &space, &bent, &hashes, &proof).is_err());
        }
        // A group of one is not a proof of that change, nor the other way round.
        let single = sign_group(&device, &space, &scope, &hashes[..1]);
        assert!(verify_change(&key, &space, &hashes[0], &single).is_err());
        let change = sign_change(&device, &space, &hashes[0]);
        assert!(verify_group(&key, &space, &scope, &hashes[..1], &change).is_err());
        Ok(())
    }

    #[test]
    fn signatures_do_not_cross_purposes() -> Result<()> {
        // A device key certified by itself: its certificate's signature is no change proof,
        // and no change proof passes as a certificate.
        let identity = PartnerIdentity::generate()?;
        let as_device = DeviceKey::from_slice(identity.expose())?;
        let space = [3u8; 32];
        let cert = identity.certify(
            &space,
            PartnerId::generate(),
            DeviceId::generate(),
            &as_device.public(),
            0,
        );
        let proof = ChangeProof(cert.signature);
        let mut hash = [0u8; 32];
        hash.copy_from_slice(&cert.to_bytes()[1..33]);
        assert!(verify_change(&as_device.public(), &space, &hash, &proof).is_err());
        Ok(())
    }

    #[test]
    fn secrets_stay_out_of_debug_and_derivation_is_stable() -> Result<()> {
        let personal = SpaceSecret::from_bytes([5u8; 32]);
        let a = PartnerIdentity::derive_from(&personal);
        let b = PartnerIdentity::derive_from(&personal);
        assert_eq!(a, b);
        assert_ne!(
            a,
            PartnerIdentity::derive_from(&SpaceSecret::from_bytes([6u8; 32]))
        );
        // Not the space's other derivations.
        assert_ne!(a.public().to_bytes(), personal.derive_space_id());
        let device = DeviceKey::generate()?;
        for (text, secret) in [
            (format!("{a:?}"), hex::encode(a.expose())),
            (format!("{device:?}"), hex::encode(device.expose())),
        ] {
            assert!(!text.contains(&secret[..16]), "{text}");
        }
        assert_eq!(
            PartnerIdentity::from_slice(a.expose())?.public(),
            a.public()
        );
        assert!(PartnerIdentity::from_slice(&[0u8; 31]).is_err());
        Ok(())
    }

    #[test]
    fn weak_public_keys_are_refused() {
        // The identity point: every signature verifies under it without strict checks.
        let mut identity_point = [0u8; 32];
        identity_point[0] = 1;
        assert!(IdentityKey::from_bytes(&identity_point).is_err());
        assert!(DevicePublicKey::from_bytes(&identity_point).is_err());
    }
}
