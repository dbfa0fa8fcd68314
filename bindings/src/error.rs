//! The one error type the app sees.
//!
//! A flat uniffi error on purpose: each variant carries only the core's message, so it reads
//! well where apps look first — `e.message` in Kotlin, `str(e)` in Python, and the `message`
//! of the matched case in Swift. (A uniffi error with fields shows `field=value` pairs in
//! Kotlin instead of a message.) The variants are the categories an app acts on; the message
//! never holds journal text, keys or tokens (the core's errors name records by id only).

use mend_core::Error as CoreError;

/// Why a call failed. Match the variant to decide what to do; show the message to a developer,
/// not to the partner.
#[derive(Debug, thiserror::Error, uniffi::Error)]
#[uniffi(flat_error)]
pub enum MendError {
    /// This partner may not make this change (editing the other's check-in, claiming the
    /// other's follow-through, consenting on the other's behalf, …).
    #[error("{0}")]
    PermissionDenied(String),
    /// No record with this id is visible on this device.
    #[error("{0}")]
    NotFound(String),
    /// The input breaks a rule of the journal: an empty text, a score out of range, a bad id
    /// or date, a record of the wrong kind, …  Nothing was written.
    #[error("{0}")]
    Invalid(String),
    /// The record was removed by its author and can no longer change.
    #[error("{0}")]
    Removed(String),
    /// The invite code could not be used (mistyped, truncated, from a newer version).
    #[error("{0}")]
    Invite(String),
    /// Another process holds this journal open (an app extension, a second app instance).
    #[error("{0}")]
    Locked(String),
    /// The database was written by a newer version of Mend: update the app.
    #[error("{0}")]
    TooNew(String),
    /// The database could not be opened, read or written. It was left untouched; never
    /// delete it in response (a journal cannot always be re-synced).
    #[error("{0}")]
    Storage(String),
    /// Something received from the relay failed authentication and was not applied.
    #[error("{0}")]
    Tampered(String),
    /// The relay could not be reached or did not answer in time: try again later.
    #[error("{0}")]
    Unreachable(String),
    /// The device refuses the relay: its certificate failed verification or does not match
    /// the pin, or its URL is clear-text `http://` to another machine without
    /// `allow_insecure_cleartext`. Retrying does not help: show the message (on a public
    /// Wi-Fi, a captive portal that intercepts the connection ends here too).
    #[error("{0}")]
    UntrustedRelay(String),
    /// A failure inside the engine that the app cannot fix (a bug: please report it).
    #[error("{0}")]
    Internal(String),
}

impl From<CoreError> for MendError {
    fn from(e: CoreError) -> Self {
        let message = e.to_string();
        match e {
            CoreError::PermissionDenied(_) => Self::PermissionDenied(message),
            CoreError::NotFound(_) => Self::NotFound(message),
            CoreError::Invalid(_) | CoreError::WrongKind { .. } => Self::Invalid(message),
            CoreError::Removed(_) => Self::Removed(message),
            CoreError::Invite(_) => Self::Invite(message),
            CoreError::Locked(_) => Self::Locked(message),
            CoreError::TooNew { .. } => Self::TooNew(message),
            CoreError::Open { .. }
            | CoreError::Storage(_)
            | CoreError::Document(_)
            | CoreError::Corrupt(_)
            | CoreError::Io(_) => Self::Storage(message),
            CoreError::Tampered => Self::Tampered(message),
            CoreError::Unreachable => Self::Unreachable(message),
            CoreError::UntrustedRelay(_) => Self::UntrustedRelay(message),
            _ => Self::Internal(message),
        }
    }
}

impl MendError {
    /// A bad argument caught while translating it (an id or a date that does not parse).
    pub(crate) fn invalid(message: impl Into<String>) -> Self {
        Self::Invalid(message.into())
    }
}

/// Result alias for the bindings.
pub type Result<T, E = MendError> = std::result::Result<T, E>;
