//! The one error type of mend-core.
//!
//! Messages name what went wrong and which record, never what anyone wrote: an error can end up
//! in a log or a crash report, and journal text must not.

use crate::{ids::RecordId, model::Kind};

/// Everything that can go wrong in mend-core.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// The acting partner may not make this change (for example editing the other's check-in).
    #[error("not allowed: {0}")]
    PermissionDenied(String),

    /// No record with this id exists in any space this device can read.
    #[error("no record with id {0}")]
    NotFound(RecordId),

    /// The record exists but is not of the kind the operation needs.
    #[error("record {id} is a {actual}, not a {expected}")]
    WrongKind {
        /// The record.
        id: RecordId,
        /// What the operation needed.
        expected: Kind,
        /// What the record is.
        actual: Kind,
    },

    /// The input breaks a rule of the journal (a score out of range, an empty text, …).
    #[error("invalid input: {0}")]
    Invalid(String),

    /// The record was removed by its author and can no longer change.
    #[error("record {0} was removed")]
    Removed(RecordId),

    /// Another process holds this journal open.
    #[error("the journal at {0} is open in another process")]
    Locked(String),

    /// The database could not be opened or read. The file is left untouched.
    #[error("cannot open the journal database at {path}: {reason}")]
    Open {
        /// Where the database is.
        path: String,
        /// What SQLite said.
        reason: String,
    },

    /// The database could not be opened for a reason of the device, not of the file: its
    /// folder cannot be written, the disk is full, the file is protected while the phone is
    /// locked, the lock could not be taken. The file is left untouched; later may work.
    #[error("cannot open the journal database at {path}: {reason}")]
    Unavailable {
        /// Where the database is.
        path: String,
        /// What went wrong.
        reason: String,
    },

    /// The journal's making (a create, join or restore) was cut off, by a crash or a kill,
    /// before it was whole: it holds nothing yet, and making it again replaces it.
    #[error(
        "the journal at {path} was cut off while it was being made and holds nothing yet: \
         create, join or restore it again"
    )]
    Unfinished {
        /// Where the database is.
        path: String,
    },

    /// The database was written by a newer version of Mend.
    #[error(
        "the journal database has schema version {found}; this version of Mend reads up to {supported}"
    )]
    TooNew {
        /// Version found in the file.
        found: u32,
        /// Newest version this build knows.
        supported: u32,
    },

    /// A SQLite error while reading or writing.
    #[error("storage error: {0}")]
    Storage(#[from] rusqlite::Error),

    /// Automerge refused an operation or some change bytes.
    #[error("document error: {0}")]
    Document(#[from] automerge::AutomergeError),

    /// A stored document or record could not be decoded.
    #[error("corrupt data: {0}")]
    Corrupt(String),

    /// A chunk or snapshot failed authentication: altered, or bound to another space, device or
    /// sequence number. It is never applied.
    #[error("a chunk failed authentication and was not applied")]
    Tampered,

    /// Key generation or sealing failed.
    #[error("crypto error: {0}")]
    Crypto(String),

    /// An invite code could not be used.
    #[error("{0}")]
    Invite(String),

    /// This device was left out of a new epoch (removed from the journal): it can no longer
    /// sync. The message says when.
    #[error("{0}")]
    DeviceRemoved(String),

    /// Pairing a device stopped: a wrong or used code, an expired invite, a declined join.
    #[error("{0}")]
    Pairing(crate::crypto::PairingFailure),

    /// Another process (an app extension) moved this journal to new secrets while this one
    /// held the old ones: nothing was sent. The device takes the new secrets and syncs again.
    #[error("the journal moved to new secrets in another process; sync again")]
    MovedElsewhere,

    /// The relay could not be reached or did not answer in time.
    #[error("the relay could not be reached; try again later")]
    Unreachable,

    /// The device will not talk to the relay as configured: its certificate failed
    /// verification or does not match the pin, or a clear-text URL names a host off this
    /// machine without the opt-in. Retrying does not help; the user (or the relay's operator)
    /// must act. The message names the problem, never a secret.
    #[error("{0}")]
    UntrustedRelay(String),

    /// The shared journal was erased (by this partner from another device, or by the other
    /// partner): the write is refused for good. The message says who and when, in plain words.
    #[error("{0}")]
    Erased(String),

    /// A failure inside the engine (a bug, or a panic in a call that then left the journal's
    /// state unusable in this process): nothing on disk is damaged; close the journal and open
    /// it again.
    #[error("internal error: {0}; close the journal and open it again")]
    Internal(String),

    /// A file system error.
    #[error("i/o error: {0}")]
    Io(#[from] std::io::Error),
}

/// Result alias for mend-core.
pub type Result<T, E = Error> = std::result::Result<T, E>;

impl Error {
    /// Whether the journal database itself cannot be read (not a database, corrupt pages or
    /// records): the app should offer recovery from another device, never delete it.
    pub fn is_damaged_journal(&self) -> bool {
        match self {
            Error::Open { .. } | Error::Corrupt(_) => true,
            Error::Storage(e) => damaged_database(e),
            _ => false,
        }
    }
}

/// Whether SQLite says the file itself is damaged (not a database, corrupt pages), rather than
/// that it cannot be read now.
pub(crate) fn damaged_database(e: &rusqlite::Error) -> bool {
    matches!(
        e.sqlite_error_code(),
        Some(rusqlite::ErrorCode::NotADatabase | rusqlite::ErrorCode::DatabaseCorrupt)
    )
}
