//! One clear line and a deliberate exit code for everything that can go wrong.
//!
//! Scripts branch on the exit code (listed in `mend --help`), people read the line. mend-core's
//! messages never carry journal text, and neither do the ones made here: they name ids, paths
//! and the relay, never what anyone wrote.

use std::{fmt, process::ExitCode};

use mend_core::Error;

/// Why mend stopped, as an exit code.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Exit {
    /// Storage, file system, or anything unexpected on this device.
    Local = 1,
    /// The command line itself (clap uses 2 for its own errors too).
    Usage = 2,
    /// The journal refused the input.
    Input = 3,
    /// The record or operation belongs to the partner.
    NotAllowed = 4,
    /// No journal in the home, one already there, or it is open elsewhere.
    Home = 5,
    /// The relay did not answer.
    Unreachable = 6,
    /// The relay answered with an error or refused this device (key, erased, a full disk).
    Relay = 7,
    /// `journal.db` cannot be read as a journal; it is left untouched.
    Damaged = 8,
    /// Something the relay served failed its checks and was not applied.
    Tampered = 9,
    /// The relay withheld or lost changes (a gap, a rewind, a reused number).
    Gap = 10,
    /// The relay served a change twice; the copy was ignored.
    Replay = 11,
    /// The device refuses the relay: a certificate or pin that failed, or clear text to
    /// another machine. Retrying does not help; the user or the relay's operator must act.
    Untrusted = 12,
    /// A pairing stopped: the invite was used or expired, the join declined, a short code
    /// wrong (and burned).
    Pairing = 13,
    /// The shared journal was erased (by this partner from another device, or by the other
    /// partner): writes to it are refused for good; reading still works.
    Erased = 14,
    /// This device was removed from the journal (a new epoch began without it).
    Removed = 15,
}

impl Exit {
    /// The exit code for a sync problem's outcome.
    pub fn of(outcome: mend_core::sync::Outcome) -> Self {
        use mend_core::sync::Outcome;
        match outcome {
            Outcome::RelayError => Self::Relay,
            Outcome::Tampered => Self::Tampered,
            Outcome::Gap => Self::Gap,
            Outcome::Replay => Self::Replay,
        }
    }
}

impl From<Exit> for ExitCode {
    fn from(e: Exit) -> Self {
        ExitCode::from(e as u8)
    }
}

/// A failure with its message and exit code.
#[derive(Debug)]
pub struct Failure {
    /// The exit code.
    pub exit: Exit,
    /// The line shown after `mend: `.
    pub message: String,
}

impl fmt::Display for Failure {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.message)
    }
}

impl std::error::Error for Failure {}

impl Failure {
    /// A failure with exit code `exit`.
    pub fn new(exit: Exit, message: impl Into<String>) -> Self {
        Self {
            exit,
            message: message.into(),
        }
    }

    /// Bad input.
    pub fn input(message: impl Into<String>) -> Self {
        Self::new(Exit::Input, message)
    }

    /// The relay at `relay` did not answer.
    pub fn unreachable(relay: &str) -> Self {
        Self::new(
            Exit::Unreachable,
            format!("cannot reach the relay at {relay}; your edits are kept and will sync later"),
        )
    }
}

impl From<Error> for Failure {
    fn from(e: Error) -> Self {
        Self::new(exit_for(&e), e.to_string())
    }
}

/// The exit code for an error from mend-core.
pub fn exit_for(error: &Error) -> Exit {
    match error {
        Error::PermissionDenied(_) => Exit::NotAllowed,
        Error::NotFound(_)
        | Error::WrongKind { .. }
        | Error::Invalid(_)
        | Error::Removed(_)
        | Error::Invite(_) => Exit::Input,
        Error::Locked(_)
        | Error::Open { .. }
        | Error::Unavailable { .. }
        | Error::TooNew { .. }
        | Error::Unfinished { .. } => Exit::Home,
        Error::Unreachable => Exit::Unreachable,
        Error::UntrustedRelay(_) => Exit::Untrusted,
        Error::Tampered => Exit::Tampered,
        Error::Pairing(_) => Exit::Pairing,
        Error::DeviceRemoved(_) => Exit::Removed,
        Error::Erased(_) => Exit::Erased,
        _ => Exit::Local,
    }
}

/// Turns whatever a command returned into the line to print and the exit code.
pub fn report(error: &anyhow::Error) -> (String, Exit) {
    if let Some(f) = error.downcast_ref::<Failure>() {
        return (f.message.clone(), f.exit);
    }
    if let Some(e) = error.downcast_ref::<Error>() {
        return (e.to_string(), exit_for(e));
    }
    // Context added with anyhow names a file or a step, never journal text.
    (format!("{error:#}"), Exit::Local)
}
