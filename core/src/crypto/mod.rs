//! Keys and sealing for end-to-end encryption.
//!
//! One 32-byte secret per space; everything else is derived from it with HKDF-SHA256 and a
//! distinct label: the public space id the relay files chunks under, the bearer token the relay
//! checks (it stores only a hash), and the content key that seals chunks. The relay learns the
//! first two and never the third.
//!
//! Separately, signing keys say who made each change: see [`identity`].

mod epoch;
mod identity;
mod invite;
mod keys;
mod padme;
mod pairing;
mod pin;
mod seal;
pub(crate) mod text;
mod wordlist;

pub use epoch::{open_from_device, seal_to_device};
pub use identity::{
    CERTIFICATE_LEN, ChangeProof, DeviceCertificate, DeviceKey, DevicePublicKey, GroupScope,
    INTRO_LEN, IdentityKey, Intro, KeyId, PartnerIdentity, Signer, sign_change, sign_group,
    verify_change, verify_group,
};
pub use invite::{Invite, InviteKind};
pub use keys::{ContentKey, RelayToken, SpaceKeys, SpaceSecret};
pub use padme::{pad, padded_len, unpad};
pub use pairing::{
    Channel, CodeExchange, Ephemeral, MAX_PAIRING_NAME, PairingFailure, PairingInvite, PairingKind,
    PairingMessage, PairingSecret, Role, SHORT_CODE_WORDS, ShortCode, commitment, transcript,
};
pub use pin::RelayPin;
pub use seal::{
    ChunkAad, RollupAad, open_chunk, open_rollup, open_snapshot, seal_chunk, seal_rollup,
    seal_snapshot,
};

use crate::error::{Error, Result};

/// Fills `buf` from the operating system's random source.
pub(crate) fn random(buf: &mut [u8]) -> Result<()> {
    getrandom::fill(buf).map_err(|_| Error::Crypto("the system random source failed".into()))
}
