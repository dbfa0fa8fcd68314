//! The one error type the app sees.
//!
//! A flat uniffi error on purpose: each variant carries only the core's message, so it reads
//! well where apps look first — `e.message` in Kotlin, `str(e)` in Python, and, with the
//! shipped `MendError+LocalizedError.swift`, `localizedDescription` in Swift. (A uniffi error
//! with fields shows `field=value` pairs in Kotlin instead of a message.) The variants are the
//! categories an app acts on, each with a stable [`MendError::code`]; the message never holds
//! journal text, keys or tokens (the core's errors name records by id only).

use mend_core::Error as CoreError;

/// Why a call failed. Match the variant (or its stable `code`) to decide what to do; show the
/// message to a developer, not to the partner.
#[derive(Debug, thiserror::Error, uniffi::Error)]
#[uniffi(flat_error)]
pub enum MendError {
    /// `permission_denied`: this partner may not make this change (editing the other's
    /// check-in, claiming the other's follow-through, consenting on the other's behalf, …).
    #[error("{0}")]
    PermissionDenied(String),
    /// `not_found`: no record with this id is visible on this device.
    #[error("{0}")]
    NotFound(String),
    /// `invalid`: the input breaks a rule of the journal: an empty text, a score out of
    /// range, a bad id or date, a record of the wrong kind, …  Nothing was written.
    #[error("{0}")]
    Invalid(String),
    /// `removed`: the record was removed by its author and can no longer change.
    #[error("{0}")]
    Removed(String),
    /// `invite`: the invite code could not be used (mistyped, truncated, from a newer version).
    #[error("{0}")]
    Invite(String),
    /// `pairing`: a pairing stopped: the code was used already or ran out (ten minutes), a
    /// short code was read wrong (it then no longer works, on both sides), or the inviting
    /// partner declined. The message says which; open a new invitation to try again.
    #[error("{0}")]
    Pairing(String),
    /// `device_removed`: this device was removed from the journal (a new epoch began without
    /// it): it no longer syncs. Tell the user; offer to delete the local copy.
    #[error("{0}")]
    DeviceRemoved(String),
    /// `locked`: another process holds this journal open (an app extension, a second app
    /// instance).
    #[error("{0}")]
    Locked(String),
    /// `too_new`: the database was written by a newer version of Mend: update the app.
    #[error("{0}")]
    TooNew(String),
    /// `missing`: there is no journal database at this path (after a reinstall, for example):
    /// `restore` it from the keyring.
    #[error("{0}")]
    Missing(String),
    /// `corrupt`: the database is damaged (not a database, corrupt pages or records). It was
    /// left untouched; never delete it in response: offer recovery from another device.
    #[error("{0}")]
    Corrupt(String),
    /// `io`: the database could not be read or written (disk full, permissions, the file
    /// protected while the phone is locked). Retry later; never delete it in response.
    #[error("{0}")]
    Io(String),
    /// `tampered`: something received from the relay failed authentication and was not
    /// applied.
    #[error("{0}")]
    Tampered(String),
    /// `unreachable`: the relay could not be reached or did not answer in time: try again
    /// later.
    #[error("{0}")]
    Unreachable(String),
    /// `untrusted_relay`: the device refuses the relay: its certificate failed verification or
    /// does not match the pin, or its URL is clear-text `http://` to another machine without
    /// `allow_insecure_cleartext`. Retrying does not help: show the message (on a public Wi-Fi,
    /// a captive portal that intercepts the connection ends here too).
    #[error("{0}")]
    UntrustedRelay(String),
    /// `closed`: the journal was closed with `close()`; open it again.
    #[error("{0}")]
    Closed(String),
    /// `internal`: a failure inside the engine that the app cannot fix (a bug: please report
    /// it).
    #[error("{0}")]
    Internal(String),
    /// `erased`: the shared journal was erased, from another of this partner's devices or by
    /// the other partner; the message says who and when, in plain words. The write was
    /// refused; reading still works. Show the message; never retry.
    #[error("{0}")]
    Erased(String),
}

impl From<CoreError> for MendError {
    fn from(e: CoreError) -> Self {
        let message = e.to_string();
        if e.is_damaged_journal() {
            return Self::Corrupt(message);
        }
        match e {
            CoreError::PermissionDenied(_) => Self::PermissionDenied(message),
            CoreError::NotFound(_) => Self::NotFound(message),
            CoreError::Invalid(_) | CoreError::WrongKind { .. } => Self::Invalid(message),
            CoreError::Removed(_) => Self::Removed(message),
            CoreError::Invite(_) => Self::Invite(message),
            CoreError::Pairing(_) => Self::Pairing(message),
            CoreError::DeviceRemoved(_) => Self::DeviceRemoved(message),
            CoreError::Locked(_) => Self::Locked(message),
            CoreError::TooNew { .. } => Self::TooNew(message),
            // Nothing is there yet: the app makes it again, as for a missing database.
            CoreError::Unfinished { .. } => Self::Missing(message),
            CoreError::Storage(_)
            | CoreError::Document(_)
            | CoreError::Io(_)
            | CoreError::Unavailable { .. } => Self::Io(message),
            CoreError::Tampered => Self::Tampered(message),
            CoreError::Unreachable => Self::Unreachable(message),
            CoreError::UntrustedRelay(_) => Self::UntrustedRelay(message),
            CoreError::Erased(_) => Self::Erased(message),
            _ => Self::Internal(message),
        }
    }
}

impl MendError {
    /// Every stable code, in declaration order. `bindings/swift/` and `bindings/kotlin/`
    /// ship the same table for apps; a test keeps them equal.
    pub const CODES: [&'static str; 18] = [
        "permission_denied",
        "not_found",
        "invalid",
        "removed",
        "invite",
        "pairing",
        "device_removed",
        "locked",
        "too_new",
        "missing",
        "corrupt",
        "io",
        "tampered",
        "unreachable",
        "untrusted_relay",
        "closed",
        "internal",
        "erased",
    ];

    /// The stable code an app translates or reports by; it never changes for a kind of error.
    pub fn code(&self) -> &'static str {
        match self {
            Self::PermissionDenied(_) => "permission_denied",
            Self::NotFound(_) => "not_found",
            Self::Invalid(_) => "invalid",
            Self::Removed(_) => "removed",
            Self::Invite(_) => "invite",
            Self::Pairing(_) => "pairing",
            Self::DeviceRemoved(_) => "device_removed",
            Self::Locked(_) => "locked",
            Self::TooNew(_) => "too_new",
            Self::Missing(_) => "missing",
            Self::Corrupt(_) => "corrupt",
            Self::Io(_) => "io",
            Self::Tampered(_) => "tampered",
            Self::Unreachable(_) => "unreachable",
            Self::UntrustedRelay(_) => "untrusted_relay",
            Self::Closed(_) => "closed",
            Self::Internal(_) => "internal",
            Self::Erased(_) => "erased",
        }
    }

    /// A bad argument caught while translating it (an id or a date that does not parse).
    pub(crate) fn invalid(message: impl Into<String>) -> Self {
        Self::Invalid(message.into())
    }
}

/// Result alias for the bindings.
pub type Result<T, E = MendError> = std::result::Result<T, E>;
