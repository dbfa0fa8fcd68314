//! PADMÉ padding: hides a chunk's exact size with at most ~12 % overhead.
//!
//! The plaintext is framed as a 4-byte little-endian length, the bytes, then zeros up to the
//! PADMÉ length of the frame, so sizes leak only their order of magnitude.

use crate::error::{Error, Result};

/// The PADMÉ length for `len` bytes.
pub fn padded_len(len: usize) -> usize {
    if len < 2 {
        return len;
    }
    let e = usize::BITS - 1 - len.leading_zeros(); // floor(log2 len)
    let s = u32::BITS - e.leading_zeros(); // floor(log2 e) + 1
    let last_bits = e.saturating_sub(s);
    let mask = (1usize << last_bits) - 1;
    (len + mask) & !mask
}

/// Frames and pads `data`.
pub fn pad(data: &[u8]) -> Result<Vec<u8>> {
    let len = u32::try_from(data.len()).map_err(|_| Error::Invalid("chunk too large".into()))?;
    let total = padded_len(data.len() + 4);
    let mut out = Vec::with_capacity(total);
    out.extend_from_slice(&len.to_le_bytes());
    out.extend_from_slice(data);
    out.resize(total, 0);
    Ok(out)
}

/// Undoes [`pad`].
pub fn unpad(mut framed: Vec<u8>) -> Result<Vec<u8>> {
    let bad = || Error::Corrupt("bad padding".into());
    let head: [u8; 4] = framed
        .get(..4)
        .and_then(|h| h.try_into().ok())
        .ok_or_else(bad)?;
    let len = u32::from_le_bytes(head) as usize;
    if len > framed.len() - 4 {
        return Err(bad());
    }
    framed.drain(..4);
    framed.truncate(len);
    Ok(framed)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn padme_overhead_is_bounded_and_round_trips() -> Result<()> {
        for len in [0usize, 1, 5, 100, 181, 1000, 4096, 70_000, 1 << 20] {
            let data = vec![0xAB; len];
            let padded = pad(&data)?;
            assert!(padded.len() >= len + 4);
            assert!(
                (padded.len() as f64) <= (len + 4) as f64 * 1.12 + 1.0,
                "len {len}"
            );
            assert_eq!(unpad(padded)?, data);
        }
        assert_eq!(padded_len(181), 192);
        assert_eq!(padded_len(1000), 1024);
        assert!(unpad(vec![9, 0, 0, 0, 1]).is_err());
        Ok(())
    }
}
