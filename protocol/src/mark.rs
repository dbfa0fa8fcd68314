//! Chunk marks: a short fingerprint of the chunk stored at a relay sequence.
//!
//! A relay restored from an older copy and then filled up again past a device's cursor holds
//! other chunks at the numbers the device already read; its head alone cannot show that. A page
//! and an `UpToDate` therefore carry the mark of the chunk at the cursor the device asked from,
//! and the device compares it with the mark it kept when it got there. The mark binds where the
//! chunk sits and what it is, so a different chunk at the same number has another mark.
//!
//! It is not a defence against a hostile relay (which can send whatever marks it likes), only
//! a way to notice an honest relay that lost data.

use sha2::{Digest, Sha256};

use crate::DeviceId;

/// The mark of a chunk: the first 16 bytes of a SHA-256 over its relay sequence, sender,
/// device sequence and the SHA-256 of its payload.
pub type Mark = [u8; 16];

/// Bytes of a [`Mark`] on the wire.
pub const MARK_LEN: usize = 16;

/// The mark of the chunk at `relay_seq`, from the SHA-256 of its payload (what the relay keeps
/// after pruning).
pub fn chunk_mark(
    relay_seq: u64,
    device_id: &DeviceId,
    device_seq: u64,
    payload_sha256: &[u8; 32],
) -> Mark {
    let mut hash = Sha256::new();
    hash.update(b"mend-chunk-mark-v1");
    hash.update(relay_seq.to_be_bytes());
    hash.update(device_id.0);
    hash.update(device_seq.to_be_bytes());
    hash.update(payload_sha256);
    let digest = hash.finalize();
    let mut mark = [0u8; MARK_LEN];
    mark.copy_from_slice(&digest[..MARK_LEN]);
    mark
}

/// SHA-256 of a payload, as [`chunk_mark`] takes it.
pub fn payload_sha256(payload: &[u8]) -> [u8; 32] {
    Sha256::digest(payload).into()
}
