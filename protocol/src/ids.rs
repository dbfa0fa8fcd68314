//! Space and device identifiers, fixed-size on the wire and lowercase hex in URLs.
//!
//! A space id is derived from the space's secret on the device (HKDF); the relay only ever sees
//! the id. A device id is random per installation. Neither is secret, but both are fixed-size so
//! they cost no length prefix on the wire.

use std::{fmt, str::FromStr};

/// Why a hex id failed to parse.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum IdParseError {
    /// The string is not exactly twice the id's byte length.
    #[error("expected {expected} hex characters, got {got}")]
    Length {
        /// Required number of characters.
        expected: usize,
        /// Number given.
        got: usize,
    },
    /// A character is not a lowercase hex digit.
    #[error("ids are lowercase hexadecimal")]
    NotLowercaseHex,
}

fn parse_hex<const N: usize>(text: &str) -> Result<[u8; N], IdParseError> {
    let bytes = text.as_bytes();
    if bytes.len() != 2 * N {
        return Err(IdParseError::Length {
            expected: 2 * N,
            got: bytes.len(),
        });
    }
    let nibble = |c: u8| match c {
        b'0'..=b'9' => Ok(c - b'0'),
        b'a'..=b'f' => Ok(c - b'a' + 10),
        _ => Err(IdParseError::NotLowercaseHex),
    };
    let mut out = [0u8; N];
    for (slot, pair) in out.iter_mut().zip(bytes.chunks_exact(2)) {
        *slot = (nibble(pair[0])? << 4) | nibble(pair[1])?;
    }
    Ok(out)
}

fn write_hex(bytes: &[u8], f: &mut fmt::Formatter<'_>) -> fmt::Result {
    bytes.iter().try_for_each(|b| write!(f, "{b:02x}"))
}

macro_rules! hex_id {
    ($(#[$doc:meta])* $name:ident, $len:expr) => {
        $(#[$doc])*
        #[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
        pub struct $name(pub [u8; $len]);

        impl $name {
            /// Length of the id in bytes.
            pub const LEN: usize = $len;

            /// The raw bytes.
            pub fn as_bytes(&self) -> &[u8; $len] {
                &self.0
            }

            /// The lowercase hex form used in URLs.
            pub fn to_hex(&self) -> String {
                self.to_string()
            }
        }

        impl FromStr for $name {
            type Err = IdParseError;

            fn from_str(text: &str) -> Result<Self, Self::Err> {
                parse_hex::<$len>(text).map($name)
            }
        }

        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                write_hex(&self.0, f)
            }
        }

        impl fmt::Debug for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                write!(f, "{}(", stringify!($name))?;
                write_hex(&self.0, f)?;
                write!(f, ")")
            }
        }
    };
}

hex_id!(
    /// A space's public identifier: 32 bytes, 64 lowercase hex characters in URLs.
    SpaceId,
    32
);
hex_id!(
    /// A device's identifier: 16 bytes, 32 lowercase hex characters in URLs.
    DeviceId,
    16
);

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hex_round_trip() {
        let id = SpaceId([0xab; 32]);
        let text = id.to_hex();
        assert_eq!(text.len(), 64);
        assert_eq!(text.parse::<SpaceId>(), Ok(id));
        assert_eq!(
            format!("{:?}", DeviceId([1; 16])),
            format!("DeviceId({})", "01".repeat(16))
        );
    }

    #[test]
    fn rejects_bad_hex() {
        assert_eq!(
            "ab".parse::<DeviceId>(),
            Err(IdParseError::Length {
                expected: 32,
                got: 2
            })
        );
        assert_eq!(
            "AB".repeat(16).parse::<DeviceId>(),
            Err(IdParseError::NotLowercaseHex)
        );
        assert_eq!(
            "zz".repeat(16).parse::<DeviceId>(),
            Err(IdParseError::NotLowercaseHex)
        );
        // A multi-byte character must not be split or accepted.
        assert!("é".repeat(16).parse::<DeviceId>().is_err());
    }
}
