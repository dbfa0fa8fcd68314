//! Identifiers: records, partners and devices.
//!
//! Records use UUIDv7 so ids sort by creation time and never collide between offline devices.
//! A check-in's id is derived from (author, local date) instead, so two devices of one partner
//! that both write today's check-in address the same record.

use std::{fmt, str::FromStr};

use serde::{Deserialize, Serialize};
use uuid::Uuid;

use crate::{date::LocalDate, error::Error};

/// Namespace for derived ids (fixed forever: changing it would split check-ins).
const DERIVED_NS: Uuid = Uuid::from_u128(0x6d65_6e64_2d63_6865_636b_2d69_6e00_0001);

macro_rules! uuid_id {
    ($(#[$doc:meta])* $name:ident) => {
        $(#[$doc])*
        #[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
        #[serde(transparent)]
        pub struct $name(Uuid);

        impl $name {
            /// The raw UUID.
            pub fn as_uuid(&self) -> Uuid {
                self.0
            }
            /// Wraps a raw UUID.
            pub fn from_uuid(u: Uuid) -> Self {
                Self(u)
            }
            /// The 16 bytes of the id.
            pub fn as_bytes(&self) -> &[u8; 16] {
                self.0.as_bytes()
            }
        }

        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                self.0.hyphenated().fmt(f)
            }
        }

        impl fmt::Debug for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                write!(f, "{}({})", stringify!($name), self.0.hyphenated())
            }
        }

        impl FromStr for $name {
            type Err = Error;
            fn from_str(s: &str) -> Result<Self, Error> {
                Uuid::parse_str(s.trim())
                    .map(Self)
                    .map_err(|_| Error::Invalid(format!("not a valid id: {:?}", truncate(s))))
            }
        }
    };
}

uuid_id!(
    /// A record's id.
    RecordId
);
uuid_id!(
    /// A partner's id, the same on all of that partner's devices.
    PartnerId
);
uuid_id!(
    /// One device (one replica).
    DeviceId
);

impl RecordId {
    /// A new time-ordered id.
    pub fn generate() -> Self {
        Self(Uuid::now_v7())
    }

    /// The id of `author`'s check-in for `date`: the same on every device.
    pub fn derive_check_in(author: PartnerId, date: LocalDate) -> Self {
        let name = format!("check-in/{}/{}", author, date);
        Self(Uuid::new_v5(&DERIVED_NS, name.as_bytes()))
    }
}

impl PartnerId {
    /// A new random partner id.
    pub fn generate() -> Self {
        Self(Uuid::new_v4())
    }
}

impl DeviceId {
    /// A new random device id.
    pub fn generate() -> Self {
        Self(Uuid::new_v4())
    }
}

/// Shortens untrusted input before it is echoed in an error.
pub fn truncate(s: &str) -> String {
    s.chars().take(40).collect()
}
