//! The plaintext of a snapshot: every device's last sequence number, then the document.
//!
//! `version (1) | count (u32 LE) | count × (device (16) | seq (u64 LE)) | full save`

use crate::{
    error::{Error, Result},
    store::PeerSeqs,
};

const VERSION: u8 = 1;

/// Encodes a snapshot's plaintext.
pub fn encode_snapshot(peers: &[([u8; 16], u64)], doc: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(5 + peers.len() * 24 + doc.len());
    out.push(VERSION);
    out.extend_from_slice(&(peers.len() as u32).to_le_bytes());
    for (device, seq) in peers {
        out.extend_from_slice(device);
        out.extend_from_slice(&seq.to_le_bytes());
    }
    out.extend_from_slice(doc);
    out
}

/// Decodes a snapshot's plaintext into (peers, document).
pub fn decode_snapshot(bytes: &[u8]) -> Result<(PeerSeqs, &[u8])> {
    let bad = || Error::Corrupt("malformed snapshot".into());
    let (&version, rest) = bytes.split_first().ok_or_else(bad)?;
    if version != VERSION {
        return Err(Error::Corrupt(
            "snapshot from a newer version of Mend".into(),
        ));
    }
    let count = u32::from_le_bytes(
        rest.get(..4)
            .and_then(|c| c.try_into().ok())
            .ok_or_else(bad)?,
    ) as usize;
    let rest = &rest[4..];
    let table = count
        .checked_mul(24)
        .filter(|n| *n <= rest.len())
        .ok_or_else(bad)?;
    let mut peers = Vec::with_capacity(count);
    for entry in rest[..table].chunks_exact(24) {
        let device: [u8; 16] = entry[..16].try_into().map_err(|_| bad())?;
        let seq = u64::from_le_bytes(entry[16..].try_into().map_err(|_| bad())?);
        peers.push((device, seq));
    }
    Ok((peers, &rest[table..]))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trips_and_refuses_truncation() -> Result<()> {
        let peers = vec![([1u8; 16], 7), ([2u8; 16], 9)];
        let enc = encode_snapshot(&peers, b"doc");
        let (p, d) = decode_snapshot(&enc)?;
        assert_eq!(p, peers);
        assert_eq!(d, b"doc");
        assert!(decode_snapshot(&enc[..20]).is_err());
        assert!(decode_snapshot(&[]).is_err());
        Ok(())
    }
}
