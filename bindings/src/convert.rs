//! Small translations shared by every module: ids and dates travel as strings, scores as
//! `i32` (`Int` in Kotlin, where unsigned types are awkward to write), and a string that does not parse is `Invalid`.

use std::ops::Deref;

use mend_core::LocalDate;

use crate::error::{MendError, Result};

/// Declares an id type that crosses the FFI as a string: `RecordId` and `PartnerId` are type
/// aliases of `String` in Kotlin and Swift and `str` in Python, so signatures say which id a
/// call wants while apps keep passing plain strings.
macro_rules! string_id {
    ($(#[$doc:meta])* $name:ident) => {
        $(#[$doc])*
        #[derive(Clone, Debug, Default, PartialEq, Eq, Hash, PartialOrd, Ord)]
        pub struct $name(pub String);

        uniffi::custom_newtype!($name, String);

        impl Deref for $name {
            type Target = str;
            fn deref(&self) -> &str {
                &self.0
            }
        }

        impl From<String> for $name {
            fn from(s: String) -> Self {
                Self(s)
            }
        }

        impl From<&str> for $name {
            fn from(s: &str) -> Self {
                Self(s.to_owned())
            }
        }

        impl std::fmt::Display for $name {
            fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str(&self.0)
            }
        }
    };
}

string_id!(
    /// A record's id (a UUID).
    RecordId
);
string_id!(
    /// A partner's id (a UUID), the same on all their devices.
    PartnerId
);

pub(crate) fn record_id(s: &str) -> Result<mend_core::RecordId> {
    Ok(s.parse()?)
}

pub(crate) fn opt_record_id(s: Option<&str>) -> Result<Option<mend_core::RecordId>> {
    s.map(record_id).transpose()
}

pub(crate) fn record_ids<S: Deref<Target = str>>(ids: &[S]) -> Result<Vec<mend_core::RecordId>> {
    ids.iter().map(|s| record_id(s)).collect()
}

pub(crate) fn partner_id(s: &str) -> Result<mend_core::PartnerId> {
    Ok(s.parse()?)
}

/// A `YYYY-MM-DD` date.
pub(crate) fn date(s: &str) -> Result<LocalDate> {
    Ok(s.parse()?)
}

pub(crate) fn opt_date(s: Option<&str>) -> Result<Option<LocalDate>> {
    s.map(date).transpose()
}

pub(crate) fn strings<T: ToString, O: From<String>>(items: &[T]) -> Vec<O> {
    items.iter().map(|i| O::from(i.to_string())).collect()
}

/// A 0–10 score; the core checks the range, this only refuses what does not fit a byte.
pub(crate) fn score(v: i32) -> Result<u8> {
    u8::try_from(v).map_err(|_| MendError::invalid(format!("a score must be 0 to 10, not {v}")))
}

pub(crate) fn opt_score(v: Option<i32>) -> Result<Option<u8>> {
    v.map(score).transpose()
}
