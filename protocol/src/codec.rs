//! Bounded reading and writing of frame fields.
//!
//! All decoding goes through [`Reader`], which never hands out more bytes than remain and checks
//! each claimed length against a caller-given limit first. Nothing is allocated from a length
//! until both checks pass.

use crate::{DecodeError, Kind, PROTOCOL_VERSION, varint};

/// Appends the version byte and the kind byte.
pub(crate) fn write_header(out: &mut Vec<u8>, kind: Kind) {
    out.push(PROTOCOL_VERSION);
    out.push(kind.to_u8());
}

/// Appends a length-prefixed byte string.
pub(crate) fn write_bytes(out: &mut Vec<u8>, bytes: &[u8]) {
    varint::write(out, bytes.len() as u64);
    out.extend_from_slice(bytes);
}

/// Encoded size of a length-prefixed byte string.
pub(crate) fn bytes_len(bytes: &[u8]) -> usize {
    varint::len(bytes.len() as u64) + bytes.len()
}

/// Checks the version byte and reads the kind byte, returning a reader over the body.
pub(crate) fn read_header(input: &[u8]) -> Result<(Kind, Reader<'_>), DecodeError> {
    let (&version, rest) = input.split_first().ok_or(DecodeError::Empty)?;
    if version != PROTOCOL_VERSION {
        return Err(DecodeError::UnsupportedVersion(version));
    }
    let (&kind, body) = rest.split_first().ok_or(DecodeError::Truncated)?;
    Ok((Kind::from_u8(kind)?, Reader { input: body }))
}

/// A cursor over untrusted bytes.
#[derive(Debug)]
pub(crate) struct Reader<'a> {
    input: &'a [u8],
}

impl<'a> Reader<'a> {
    /// Bytes not yet read.
    pub(crate) fn remaining(&self) -> usize {
        self.input.len()
    }

    fn take(&mut self, len: usize) -> Result<&'a [u8], DecodeError> {
        if len > self.input.len() {
            return Err(DecodeError::Truncated);
        }
        let (head, tail) = self.input.split_at(len);
        self.input = tail;
        Ok(head)
    }

    /// Reads one byte.
    pub(crate) fn u8(&mut self) -> Result<u8, DecodeError> {
        Ok(self.take(1)?[0])
    }

    /// Reads a flags byte, refusing bits outside `allowed`.
    pub(crate) fn flags(&mut self, field: &'static str, allowed: u8) -> Result<u8, DecodeError> {
        let flags = self.u8()?;
        if flags & !allowed != 0 {
            return Err(DecodeError::Invalid {
                field,
                reason: "unknown flag bits set",
            });
        }
        Ok(flags)
    }

    /// Reads a varint.
    pub(crate) fn varint(&mut self) -> Result<u64, DecodeError> {
        let (value, used) = varint::read(self.input)?;
        self.input = &self.input[used..];
        Ok(value)
    }

    /// Reads a varint that must not be zero (sequence numbers start at 1).
    pub(crate) fn seq(&mut self, field: &'static str) -> Result<u64, DecodeError> {
        match self.varint()? {
            0 => Err(DecodeError::Invalid {
                field,
                reason: "sequence numbers start at 1",
            }),
            value => Ok(value),
        }
    }

    /// Reads a fixed-size array.
    pub(crate) fn array<const N: usize>(&mut self) -> Result<[u8; N], DecodeError> {
        let mut out = [0u8; N];
        out.copy_from_slice(self.take(N)?);
        Ok(out)
    }

    /// Reads a length-prefixed byte string of at most `limit` bytes.
    pub(crate) fn bytes(
        &mut self,
        field: &'static str,
        limit: usize,
    ) -> Result<&'a [u8], DecodeError> {
        let len = self.varint()?;
        if len > limit as u64 {
            return Err(DecodeError::TooLarge { field, len, limit });
        }
        // `len <= limit`, which is a usize, so the conversion is lossless.
        self.take(len as usize)
    }

    /// Fails unless every byte has been read.
    pub(crate) fn finish(self) -> Result<(), DecodeError> {
        match self.input.len() {
            0 => Ok(()),
            extra => Err(DecodeError::TrailingBytes(extra)),
        }
    }
}
