//! [`ApiError`]: every refusal the HTTP interface answers, as one type.
//!
//! Client mistakes get a precise code and message; internal failures are logged here and answered
//! with a generic message, so no database detail reaches a client. Messages never include tokens
//! or payloads.

use std::{borrow::Cow, fmt, time::Duration};

use axum::{
    Json,
    http::{HeaderValue, StatusCode, header},
    response::{IntoResponse, Response},
};
use mend_protocol::{DecodeError, ErrorCode};

use crate::{
    storage::{EraseReason, StorageError},
    telemetry::Repeats,
};

/// Folds the "storage unavailable" warnings of HTTP requests and live pushes.
pub(crate) static UNAVAILABLE_LOG: std::sync::Mutex<Repeats> =
    std::sync::Mutex::new(Repeats::new(Duration::from_secs(10)));

/// Folds the operator's warnings that writes hit the relay-wide byte limit.
static RELAY_FULL_LOG: std::sync::Mutex<Repeats> =
    std::sync::Mutex::new(Repeats::new(Duration::from_secs(10)));

/// What a client of any space is told when the relay is full. The relay-wide figures are the
/// operator's: they go to the log (and `/metrics`), never to a client.
pub(crate) const RELAY_FULL_MESSAGE: &str = "the relay's storage is full; retry later";

/// Logs a write refused for the relay-wide byte limit, with its figures, one line per interval.
pub(crate) fn note_relay_full(error: &StorageError) {
    if let Some(times) = Repeats::note_shared(&RELAY_FULL_LOG) {
        tracing::warn!(%error, times, "write refused: relay byte limit reached");
    }
}

/// How long a client should wait after a 503 caused by slow or absent storage.
pub const UNAVAILABLE_RETRY: Duration = Duration::from_secs(1);
/// The retry hint with `relay_full`: bytes come back only when spaces are erased or pruned, or
/// the operator raises the limit, so a device need not ask often.
pub const RELAY_FULL_RETRY: Duration = Duration::from_secs(60);

/// The retry hint when the relay holds its most pairing mailboxes: they expire within minutes.
pub const PAIRINGS_FULL_RETRY: Duration = Duration::from_secs(30);

/// An error answered to a client: `{"error": "<code>", "message": "<text>"}`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ApiError {
    code: ErrorCode,
    message: Cow<'static, str>,
    retry_after: Option<Duration>,
    status: Option<StatusCode>,
    close: bool,
}

impl ApiError {
    /// An error with a message for the client.
    pub fn new(code: ErrorCode, message: impl Into<Cow<'static, str>>) -> ApiError {
        ApiError {
            code,
            message: message.into(),
            retry_after: None,
            status: None,
            close: false,
        }
    }

    /// A request whose body did not arrive in time: `408`, and the connection is closed (what
    /// is left of the body would otherwise be read as the next request).
    pub fn body_timeout() -> ApiError {
        ApiError {
            status: Some(StatusCode::REQUEST_TIMEOUT),
            close: true,
            ..ApiError::new(ErrorCode::Malformed, "request body not received in time")
        }
    }

    /// A body over its size limit: `413`, with `code` for the client to act on.
    pub fn too_large(code: ErrorCode, message: impl Into<Cow<'static, str>>) -> ApiError {
        ApiError {
            status: Some(StatusCode::PAYLOAD_TOO_LARGE),
            ..ApiError::new(code, message)
        }
    }

    /// Logs an internal failure and returns the generic answer for it.
    pub fn internal(error: &dyn fmt::Display) -> ApiError {
        tracing::error!(%error, "internal error");
        ApiError::new(ErrorCode::Internal, "internal error; retry later")
    }

    /// The answer for every request on a space that has a tombstone: `410`, for good.
    pub fn gone(reason: EraseReason) -> ApiError {
        match reason {
            EraseReason::Erased => ApiError::new(
                ErrorCode::SpaceErased,
                "this space was erased; it cannot be used or created again",
            ),
            EraseReason::Retired => ApiError::new(
                ErrorCode::SpaceRetired,
                "this space was retired by a key rotation; it cannot be used or created again",
            ),
        }
    }

    /// Adds a `Retry-After` hint.
    pub fn retry_after(mut self, delay: Duration) -> ApiError {
        self.retry_after = Some(delay);
        self
    }

    /// The error code.
    pub fn code(&self) -> ErrorCode {
        self.code
    }

    /// The human-readable message.
    pub fn message(&self) -> &str {
        &self.message
    }
}

impl fmt::Display for ApiError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {}", self.code.name(), self.message)
    }
}

impl From<StorageError> for ApiError {
    fn from(error: StorageError) -> ApiError {
        match error {
            StorageError::SpaceNotFound => ApiError::new(ErrorCode::SpaceNotFound, "no such space"),
            StorageError::SpaceErased(reason) => ApiError::gone(reason),
            StorageError::SpaceExists => ApiError::new(
                ErrorCode::SpaceExists,
                "the space exists with a different token",
            ),
            e @ StorageError::QuotaExceeded { .. } => {
                ApiError::new(ErrorCode::QuotaExceeded, e.to_string())
            }
            e @ StorageError::RelayFull { .. } => {
                note_relay_full(&e);
                ApiError::new(ErrorCode::RelayFull, RELAY_FULL_MESSAGE)
                    .retry_after(RELAY_FULL_RETRY)
            }
            e @ StorageError::SeqConflict { .. } => {
                ApiError::new(ErrorCode::SeqConflict, e.to_string())
            }
            e @ StorageError::RollupMismatch { .. } => {
                ApiError::new(ErrorCode::RollupMismatch, e.to_string())
            }
            e @ StorageError::Pruned { .. } => ApiError::new(ErrorCode::Pruned, e.to_string()),
            e @ StorageError::SnapshotStale { .. } => {
                ApiError::new(ErrorCode::SnapshotStale, e.to_string())
            }
            e @ StorageError::SnapshotBeyondHead { .. } => {
                ApiError::new(ErrorCode::SnapshotBeyondHead, e.to_string())
            }
            e @ StorageError::PairingUnknown => {
                ApiError::new(ErrorCode::PairingUnknown, e.to_string())
            }
            e @ StorageError::PairingUsed => ApiError::new(ErrorCode::PairingUsed, e.to_string()),
            e @ StorageError::PairingExpired => {
                ApiError::new(ErrorCode::PairingExpired, e.to_string())
            }
            e @ StorageError::PairingClosed => {
                ApiError::new(ErrorCode::PairingClosed, e.to_string())
            }
            e @ StorageError::PairingFull { .. } => {
                ApiError::new(ErrorCode::PairingFull, e.to_string())
            }
            StorageError::PairingsFull { .. } => ApiError::new(
                ErrorCode::Unavailable,
                "too many pairing mailboxes open on this relay; retry later",
            )
            .retry_after(PAIRINGS_FULL_RETRY),
            StorageError::Closed => {
                ApiError::new(ErrorCode::Unavailable, "the relay is shutting down")
            }
            e @ StorageError::InUse(_) => ApiError::internal(&e),
            StorageError::Unavailable(error) => {
                // Under overload this fires for every request: one line per interval.
                if let Some(times) = Repeats::note_shared(&UNAVAILABLE_LOG) {
                    tracing::warn!(%error, times, "storage unavailable");
                }
                ApiError::new(
                    ErrorCode::Unavailable,
                    "storage is unavailable; retry later",
                )
                .retry_after(UNAVAILABLE_RETRY)
            }
            e @ StorageError::Backend(_) => ApiError::internal(&e),
        }
    }
}

impl ApiError {
    /// Maps a frame that failed to decode. `too_large` is the code for an oversized payload.
    pub fn from_decode(error: DecodeError, too_large: ErrorCode) -> ApiError {
        match error {
            DecodeError::UnsupportedVersion(_) => {
                ApiError::new(ErrorCode::UnsupportedVersion, error.to_string())
            }
            DecodeError::TooLarge {
                field: "payload", ..
            } => ApiError::new(too_large, error.to_string()),
            other => ApiError::new(ErrorCode::Malformed, format!("malformed frame: {other}")),
        }
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let status = self.status.unwrap_or_else(|| {
            StatusCode::from_u16(self.code.http_status())
                .unwrap_or(StatusCode::INTERNAL_SERVER_ERROR)
        });
        let body = serde_json::json!({ "error": self.code.name(), "message": self.message });
        let mut response = (status, Json(body)).into_response();
        if let Some(delay) = self.retry_after {
            let seconds = delay.as_secs() + u64::from(delay.subsec_nanos() > 0);
            if let Ok(value) = HeaderValue::from_str(&seconds.max(1).to_string()) {
                response.headers_mut().insert(header::RETRY_AFTER, value);
            }
        }
        if self.close {
            response
                .headers_mut()
                .insert(header::CONNECTION, HeaderValue::from_static("close"));
        }
        response.extensions_mut().insert(self.code);
        response
    }
}
