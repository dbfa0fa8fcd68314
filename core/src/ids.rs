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

/// Label of the hash that ties a record id to its author.
const AUTHOR_BOUND: &[u8] = b"mend/v1/record-author\0";
/// Bytes of a record id that the binding fills. The first 12 stay a UUIDv7's: its time and
/// the 42-bit counter that keeps ids made in one millisecond apart. Four bytes bind well
/// enough: nothing in them is the forger's to choose (its partner id and the id's first bytes
/// are fixed), so there is nothing to grind.
const BOUND_TAIL: usize = 4;

fn author_tag(author: PartnerId, head: &[u8]) -> [u8; BOUND_TAIL] {
    use sha2::Digest;
    let digest = sha2::Sha256::new()
        .chain_update(AUTHOR_BOUND)
        .chain_update(author.as_bytes())
        .chain_update(head)
        .finalize();
    let mut tag = [0u8; BOUND_TAIL];
    tag.copy_from_slice(&digest[..BOUND_TAIL]);
    tag
}

impl RecordId {
    /// A new time-ordered id, not tied to an author (tests and imports).
    pub fn generate() -> Self {
        Self(Uuid::now_v7())
    }

    /// A new time-ordered id that only `author` can create a record under: its last 4 bytes
    /// are a hash of the author and the rest, so another partner's device cannot file a
    /// record of its own at this id (a receiver checks [`RecordId::bound_to`]).
    pub fn generate_for(author: PartnerId) -> Self {
        let mut bytes = *Uuid::now_v7().as_bytes();
        let split = 16 - BOUND_TAIL;
        let tag = author_tag(author, &bytes[..split]);
        bytes[split..].copy_from_slice(&tag);
        Self(Uuid::from_bytes(bytes))
    }

    /// Whether this id was made by [`RecordId::generate_for`] for `author`.
    pub fn bound_to(&self, author: PartnerId) -> bool {
        let bytes = self.0.as_bytes();
        let split = 16 - BOUND_TAIL;
        self.0.get_version_num() == 7 && author_tag(author, &bytes[..split]) == bytes[split..]
    }

    /// Parses only the form [`fmt::Display`] writes (lower-case, hyphenated): a receiver
    /// refuses other spellings of an id, which would name the same record twice.
    pub fn parse_canonical(s: &str) -> Option<Self> {
        let id = Uuid::parse_str(s).ok().map(Self)?;
        (id.to_string() == s).then_some(id)
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

    /// Parses only the form [`fmt::Display`] writes.
    pub fn parse_canonical(s: &str) -> Option<Self> {
        let id = Uuid::parse_str(s).ok().map(Self)?;
        (id.to_string() == s).then_some(id)
    }
}

/// Labels the hash that binds a device id to the key of the device it names.
const KEY_BOUND: &[u8] = b"mend/v1/relay-device\0";
/// Bytes of a device id that are that hash.
const KEY_TAIL: usize = 8;

fn key_tag(key: &[u8; 16], head: &[u8]) -> [u8; KEY_TAIL] {
    use sha2::Digest;
    let digest = sha2::Sha256::new()
        .chain_update(KEY_BOUND)
        .chain_update(key)
        .chain_update(head)
        .finalize();
    let mut tag = [0u8; KEY_TAIL];
    tag.copy_from_slice(&digest[..KEY_TAIL]);
    tag
}

impl DeviceId {
    /// A new random device id.
    pub fn generate() -> Self {
        Self(Uuid::new_v4())
    }

    /// A new device id bound to the device key with id `key`: its last 8 bytes are a hash of
    /// the key and the rest, so what a device seals under its id (a rollup standing for its
    /// chunks) can be checked against the key that signs it, and another partner's key cannot
    /// claim it (finding another key for an existing id takes 2^64 tries).
    pub fn generate_for_key(key: &[u8; 16]) -> Self {
        let mut bytes = *Uuid::new_v4().as_bytes();
        let split = 16 - KEY_TAIL;
        let tag = key_tag(key, &bytes[..split]);
        bytes[split..].copy_from_slice(&tag);
        Self(Uuid::from_bytes(bytes))
    }

    /// Whether this id was made for the key with id `key` ([`DeviceId::generate_for_key`]).
    pub fn is_bound_to(&self, key: &[u8; 16]) -> bool {
        let bytes = self.0.as_bytes();
        let split = 16 - KEY_TAIL;
        key_tag(key, &bytes[..split])[..] == bytes[split..]
    }
}

/// Shortens untrusted input before it is echoed in an error.
pub fn truncate(s: &str) -> String {
    s.chars().take(40).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_device_id_made_for_a_key_is_bound_to_it_alone() {
        let (mine, theirs) = ([1u8; 16], [2u8; 16]);
        let id = DeviceId::generate_for_key(&mine);
        assert!(id.is_bound_to(&mine));
        assert!(!id.is_bound_to(&theirs));
        assert!(!DeviceId::generate().is_bound_to(&mine));
        assert_ne!(DeviceId::generate_for_key(&mine), id);
    }

    #[test]
    fn ids_made_for_an_author_are_theirs_alone_and_never_repeat() {
        let (alex, blake) = (PartnerId::generate(), PartnerId::generate());
        // Many in one millisecond: the counter, not the clock, keeps them apart.
        let ids: Vec<RecordId> = (0..20_000).map(|_| RecordId::generate_for(alex)).collect();
        let unique: std::collections::HashSet<_> = ids.iter().collect();
        assert_eq!(unique.len(), ids.len());
        for id in &ids[..100] {
            assert!(id.bound_to(alex));
            assert!(!id.bound_to(blake));
            assert_eq!(id.as_uuid().get_version_num(), 7);
        }
        assert!(!RecordId::generate().bound_to(alex));
        let check_in = RecordId::derive_check_in(alex, LocalDate::from_unix_ms(0, 0));
        assert!(!check_in.bound_to(alex));
    }

    #[test]
    fn only_the_written_form_of_an_id_is_canonical() {
        let id = RecordId::generate();
        let text = id.to_string();
        assert_eq!(RecordId::parse_canonical(&text), Some(id));
        for other in [
            text.to_uppercase(),
            format!("{{{text}}}"),
            format!(" {text}"),
            text.replace('-', ""),
            format!("urn:uuid:{text}"),
        ] {
            assert_eq!(RecordId::parse_canonical(&other), None, "{other}");
        }
    }
}
