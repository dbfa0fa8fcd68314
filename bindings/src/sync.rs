//! Sync status as the app shows it. Counts are signed (`Long` in Kotlin, `Int64` in Swift)
//! and saturate: they come from the relay and the engine, never from the app.

use mend_core::sync as core_sync;

fn signed(v: u64) -> i64 {
    i64::try_from(v).unwrap_or(i64::MAX)
}

/// Something the app should show: sync goes on, but this was not applied or not possible.
#[derive(Clone, Debug, PartialEq, Eq, uniffi::Enum)]
pub enum SyncProblemKind {
    /// A chunk failed authentication (altered, or moved from another space or device).
    Tampered {
        /// Its relay sequence number.
        relay_seq: i64,
        /// The device it claims to come from (hex; empty if not known).
        device: String,
    },
    /// A device's chunks skipped a number: something in between was withheld.
    Gap {
        /// The device (hex).
        device: String,
        /// The number expected.
        expected: i64,
        /// The number that came.
        got: i64,
    },
    /// A device's chunk came again under a number already seen.
    Replay {
        /// The device (hex).
        device: String,
        /// The repeated number.
        device_seq: i64,
    },
    /// An authentic chunk the document refused to merge; a later snapshot heals it.
    Unmergeable {
        /// The device (hex).
        device: String,
        /// Its number.
        device_seq: i64,
        /// Its relay sequence number.
        relay_seq: i64,
    },
    /// The relay went back to an earlier state; this device pushed its document again.
    RelayRewound {
        /// Where this device had read to.
        cursor: i64,
        /// What the relay claimed.
        head: i64,
    },
    /// Chunks refused up to this relay sequence were not healed by the relay's snapshot: they
    /// count as consumed, and snapshots go on.
    Unhealed {
        /// The last refused chunk's relay sequence number.
        up_to: i64,
    },
    /// The relay repeated, within a round, an answer that would move this device to a new id
    /// or fetch the snapshot again (`rewind`, `seq_conflict`, `pruned`); the device waits.
    RelayLoop {
        /// Which answer.
        answer: String,
    },
    /// The relay's snapshot failed its checks, or it had none where it needed one.
    BadSnapshot {
        /// What it claimed to cover (0: none).
        covers: i64,
    },
    /// This device's database went back in time; it moved to a new device id.
    SeqConflict {
        /// The number in conflict.
        device_seq: i64,
    },
    /// The relay answered with an error of its own (a full disk).
    RelayError {
        /// The HTTP status.
        status: i32,
    },
    /// The relay refused this device's key.
    Unauthorized,
    /// The relay no longer holds the space (it says erased, but no partner's erase marker
    /// confirms it): sync of it stops; the journal is not erased and writes are kept.
    SpaceGone,
    /// The journal moved to new secrets without this device (removed, or away longer than
    /// an old epoch is kept): pair it again.
    Retired,
    /// The shared journal was erased by a partner: `words` says who and when, in plain words.
    /// Writes to it are refused; reading still works.
    Erased {
        /// What to show.
        words: String,
    },
    /// The relay refused a request (for example, over quota).
    Refused {
        /// The relay's error code name.
        code: String,
    },
    /// A change a partner's device could not have made through the app (signed by another
    /// device, consenting for the other partner, editing what is not theirs): refused by
    /// every device. `words` says so naming the device, with no journal text.
    Forged {
        /// The partner whose device signed it (empty when unknown).
        partner: String,
        /// The device's key, short.
        device: String,
        /// What it tried, as a stable code (`consent`, `view`, `impersonation`, …).
        breach: String,
        /// The same in words.
        words: String,
    },
}

impl From<core_sync::ProblemKind> for SyncProblemKind {
    fn from(k: core_sync::ProblemKind) -> Self {
        use core_sync::ProblemKind as P;
        match k {
            P::Tampered { relay_seq, device } => Self::Tampered {
                relay_seq: signed(relay_seq),
                device,
            },
            P::Unhealed { up_to } => Self::Unhealed {
                up_to: signed(up_to),
            },
            P::RelayLoop { answer } => Self::RelayLoop { answer },
            P::Gap {
                device,
                expected,
                got,
            } => Self::Gap {
                device,
                expected: signed(expected),
                got: signed(got),
            },
            P::Replay { device, device_seq } => Self::Replay {
                device,
                device_seq: signed(device_seq),
            },
            P::Unmergeable {
                device,
                device_seq,
                relay_seq,
            } => Self::Unmergeable {
                device,
                device_seq: signed(device_seq),
                relay_seq: signed(relay_seq),
            },
            P::RelayRewound { cursor, head } => Self::RelayRewound {
                cursor: signed(cursor),
                head: signed(head),
            },
            P::BadSnapshot { covers } => Self::BadSnapshot {
                covers: signed(covers),
            },
            P::SeqConflict { device_seq } => Self::SeqConflict {
                device_seq: signed(device_seq),
            },
            P::RelayError { status } => Self::RelayError {
                status: i32::from(status),
            },
            P::Unauthorized => Self::Unauthorized,
            P::SpaceGone => Self::SpaceGone,
            P::Retired => Self::Retired,
            P::Erased { words } => Self::Erased { words },
            P::Refused { code } => Self::Refused { code },
            P::Forged {
                partner,
                device,
                breach,
                words,
            } => Self::Forged {
                partner,
                device,
                breach,
                words,
            },
        }
    }
}

/// One problem, with where and when.
#[derive(Clone, Debug, PartialEq, Eq, uniffi::Record)]
pub struct SyncProblem {
    /// The space: `couple` or `personal`.
    pub space: String,
    /// What happened.
    pub kind: SyncProblemKind,
    /// When it was noticed (unix ms).
    pub at: i64,
}

/// The sync status the app shows.
#[derive(Clone, Debug, PartialEq, Eq, uniffi::Record)]
pub struct SyncStatus {
    /// The relay answered the last request.
    pub online: bool,
    /// A round is under way (after `sync_now`: it ran out of time before finishing).
    pub syncing: bool,
    /// Local changes the relay has not acknowledged yet.
    pub pending: i64,
    /// When a round last completed (unix ms).
    pub last_synced: Option<i64>,
    /// Recent problems, newest last.
    pub problems: Vec<SyncProblem>,
    /// Why the device refuses the relay (wrong pin, expired or unknown certificate, a captive
    /// portal), while it does; `None` once a trusted answer arrives. Never holds a secret.
    pub untrusted_relay: Option<String>,
}

impl From<core_sync::SyncStatus> for SyncStatus {
    fn from(s: core_sync::SyncStatus) -> Self {
        Self {
            online: s.online,
            syncing: s.syncing,
            pending: signed(s.pending),
            last_synced: s.last_synced,
            problems: s.problems.into_iter().map(Into::into).collect(),
            untrusted_relay: s.untrusted_relay,
        }
    }
}

impl From<core_sync::Problem> for SyncProblem {
    fn from(p: core_sync::Problem) -> Self {
        Self {
            space: p.space,
            kind: p.kind.into(),
            at: p.at,
        }
    }
}

/// What an `erase` did once its marker was written.
#[derive(Clone, Debug, PartialEq, Eq, uniffi::Record)]
pub struct EraseReport {
    /// The erase marker reached the relay before the spaces were deleted.
    pub marker_pushed: bool,
    /// The relay deleted both spaces. False: the erase is recorded here, not finished; keep
    /// the files and call `erase` again (a `syncNow` finishes it too).
    pub finished: bool,
}

/// What one `sync_now` round did.
#[derive(Clone, Debug, PartialEq, Eq, uniffi::Record)]
pub struct SyncReport {
    /// Everything was pushed and pulled before the deadline. False: the deadline came first,
    /// and the next round carries on where this one stopped.
    pub finished: bool,
    /// Batches of this device's changes the relay acknowledged.
    pub pushed: i64,
    /// Chunks of other devices' changes read and applied.
    pub pulled: i64,
    /// Records that changed here because of what the round brought.
    pub changed: i64,
    /// Local changes the relay has not acknowledged yet.
    pub pending: i64,
    /// Problems noticed during this round.
    pub problems: Vec<SyncProblem>,
    /// The sync status at the end.
    pub status: SyncStatus,
    /// The journal moved to a new epoch (a device removed, a partner asking to forget): store
    /// `keyring_secret()` again now.
    pub keyring_changed: bool,
}

impl From<mend_client::RoundReport> for SyncReport {
    fn from(r: mend_client::RoundReport) -> Self {
        Self {
            finished: r.finished,
            pushed: signed(r.pushed),
            pulled: signed(r.pulled),
            changed: signed(r.changed),
            pending: signed(r.status.pending),
            problems: r.problems.into_iter().map(Into::into).collect(),
            status: r.status.into(),
            keyring_changed: r.keyring_changed,
        }
    }
}
