//! LEB128 varints for `u64`, the integer encoding of every frame.
//!
//! Sequence numbers and lengths are usually small, so a varint keeps per-chunk framing to a few
//! bytes. Decoding is strict: at most ten bytes, no bits beyond 64, and no redundant trailing
//! zero groups, so each value has exactly one encoding (frames are canonical).

use crate::DecodeError;

/// The longest encoding of a `u64`.
pub const MAX_LEN: usize = 10;

/// Appends the varint encoding of `value` to `out`.
pub fn write(out: &mut Vec<u8>, mut value: u64) {
    while value >= 0x80 {
        out.push((value as u8) | 0x80);
        value >>= 7;
    }
    out.push(value as u8);
}

/// The number of bytes [`write`] produces for `value`.
pub fn len(value: u64) -> usize {
    let bits = 64 - (value | 1).leading_zeros() as usize;
    bits.div_ceil(7)
}

/// Reads one varint from the front of `input`, returning the value and the bytes consumed.
pub fn read(input: &[u8]) -> Result<(u64, usize), DecodeError> {
    let mut value: u64 = 0;
    for (i, &byte) in input.iter().enumerate().take(MAX_LEN) {
        let group = u64::from(byte & 0x7f);
        if i == MAX_LEN - 1 && byte > 0x01 {
            return Err(DecodeError::BadVarint);
        }
        value |= group << (7 * i);
        if byte & 0x80 == 0 {
            if i > 0 && byte == 0 {
                return Err(DecodeError::BadVarint);
            }
            return Ok((value, i + 1));
        }
    }
    if input.len() >= MAX_LEN {
        Err(DecodeError::BadVarint)
    } else {
        Err(DecodeError::Truncated)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn encode(value: u64) -> Vec<u8> {
        let mut out = Vec::new();
        write(&mut out, value);
        out
    }

    #[test]
    fn known_encodings() {
        assert_eq!(encode(0), [0x00]);
        assert_eq!(encode(127), [0x7f]);
        assert_eq!(encode(128), [0x80, 0x01]);
        assert_eq!(encode(300), [0xac, 0x02]);
        assert_eq!(encode(u64::MAX).len(), MAX_LEN);
    }

    #[test]
    fn len_matches_write() {
        for value in [0, 1, 127, 128, 16_383, 16_384, u64::MAX / 2, u64::MAX] {
            assert_eq!(len(value), encode(value).len(), "{value}");
            assert_eq!(read(&encode(value)), Ok((value, len(value))));
        }
    }

    #[test]
    fn rejects_non_canonical_and_overflow() {
        assert_eq!(read(&[0x80, 0x00]), Err(DecodeError::BadVarint));
        assert_eq!(read(&[0xff; 10]), Err(DecodeError::BadVarint));
        let mut too_big = vec![0xff; 9];
        too_big.push(0x02);
        assert_eq!(read(&too_big), Err(DecodeError::BadVarint));
        assert_eq!(read(&[0x80, 0x80]), Err(DecodeError::Truncated));
        assert_eq!(read(&[]), Err(DecodeError::Truncated));
    }
}
