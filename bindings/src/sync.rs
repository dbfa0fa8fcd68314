//! Sync status, the app's observer, and the bridge from the core's observer to it.
//!
//! The core takes its observer when the journal is opened, while an app picks
//! its observer later (and may swap it when a screen changes). So the bindings hand the core an
//! [`ObserverSlot`] at open and fill the slot when the app calls `set_observer` or
//! `start_live`.

use std::sync::{Arc, RwLock};

use mend_client::SyncObserver;
use mend_core::{RecordId, Space, sync as core_sync};

/// Something the app should show: sync goes on, but this was not applied or not possible.
#[derive(Clone, Debug, PartialEq, Eq, uniffi::Enum)]
pub enum SyncProblemKind {
    /// A chunk failed authentication (altered, or moved from another space or device).
    Tampered {
        /// Its relay sequence number.
        relay_seq: u64,
    },
    /// A device's chunks skipped a number: something in between was withheld.
    Gap {
        /// The device (hex).
        device: String,
        /// The number expected.
        expected: u64,
        /// The number that came.
        got: u64,
    },
    /// A device's chunk came again under a number already seen.
    Replay {
        /// The device (hex).
        device: String,
        /// The repeated number.
        device_seq: u64,
    },
    /// An authentic chunk the document refused to merge; a later snapshot heals it.
    Unmergeable {
        /// The device (hex).
        device: String,
        /// Its number.
        device_seq: u64,
        /// Its relay sequence number.
        relay_seq: u64,
    },
    /// The relay went back to an earlier state; this device pushed its document again.
    RelayRewound {
        /// Where this device had read to.
        cursor: u64,
        /// What the relay claimed.
        head: u64,
    },
    /// The relay's snapshot failed its checks, or it had none where it needed one.
    BadSnapshot {
        /// What it claimed to cover (0: none).
        covers: u64,
    },
    /// This device's database went back in time; it moved to a new device id.
    SeqConflict {
        /// The number in conflict.
        device_seq: u64,
    },
    /// The relay answered with an error of its own (a full disk).
    RelayError {
        /// The HTTP status.
        status: u16,
    },
    /// The relay refused this device's key.
    Unauthorized,
    /// The space was erased at the relay.
    SpaceGone,
    /// The relay refused a request (for example, over quota).
    Refused {
        /// The relay's error code name.
        code: String,
    },
}

impl From<core_sync::ProblemKind> for SyncProblemKind {
    fn from(k: core_sync::ProblemKind) -> Self {
        use core_sync::ProblemKind as P;
        match k {
            P::Tampered { relay_seq } => Self::Tampered { relay_seq },
            P::Gap {
                device,
                expected,
                got,
            } => Self::Gap {
                device,
                expected,
                got,
            },
            P::Replay { device, device_seq } => Self::Replay { device, device_seq },
            P::Unmergeable {
                device,
                device_seq,
                relay_seq,
            } => Self::Unmergeable {
                device,
                device_seq,
                relay_seq,
            },
            P::RelayRewound { cursor, head } => Self::RelayRewound { cursor, head },
            P::BadSnapshot { covers } => Self::BadSnapshot { covers },
            P::SeqConflict { device_seq } => Self::SeqConflict { device_seq },
            P::RelayError { status } => Self::RelayError { status },
            P::Unauthorized => Self::Unauthorized,
            P::SpaceGone => Self::SpaceGone,
            P::Refused { code } => Self::Refused { code },
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
    pub pending: u64,
    /// When a round last completed (unix ms).
    pub last_synced: Option<i64>,
    /// Recent problems, newest last.
    pub problems: Vec<SyncProblem>,
}

impl From<core_sync::SyncStatus> for SyncStatus {
    fn from(s: core_sync::SyncStatus) -> Self {
        Self {
            online: s.online,
            syncing: s.syncing,
            pending: s.pending,
            last_synced: s.last_synced,
            problems: s
                .problems
                .into_iter()
                .map(|p| SyncProblem {
                    space: p.space,
                    kind: p.kind.into(),
                    at: p.at,
                })
                .collect(),
        }
    }
}

/// Told which records changed and how sync is going. Implemented by the app.
///
/// Called on the thread that made a local write (after the write, with the journal unlocked)
/// or on a sync thread. Reading the journal from a callback is safe. Return quickly, hop to the
/// UI yourself (`Dispatchers.Main`, `MainActor`), and do not throw from these methods.
#[uniffi::export(with_foreign)]
pub trait JournalObserver: Send + Sync {
    /// Records changed, by a write on this device or by what another device wrote: re-read
    /// them with `get` (from another thread).
    fn records_changed(&self, ids: Vec<String>);
    /// The sync status changed.
    fn status_changed(&self, status: SyncStatus);
}

/// The core's observer for one journal, forwarding to whatever the app last set.
#[derive(Default)]
pub(crate) struct ObserverSlot {
    target: RwLock<Option<Arc<dyn JournalObserver>>>,
}

impl std::fmt::Debug for ObserverSlot {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ObserverSlot").finish_non_exhaustive()
    }
}

impl ObserverSlot {
    pub(crate) fn set(&self, observer: Option<Arc<dyn JournalObserver>>) {
        if let Ok(mut target) = self.target.write() {
            *target = observer;
        }
    }

    fn target(&self) -> Option<Arc<dyn JournalObserver>> {
        self.target.read().ok().and_then(|t| t.clone())
    }
}

impl SyncObserver for ObserverSlot {
    fn records_changed(&self, _space: Space, records: Vec<RecordId>) {
        if let Some(o) = self.target() {
            o.records_changed(records.iter().map(ToString::to_string).collect());
        }
    }

    fn status_changed(&self, status: core_sync::SyncStatus) {
        if let Some(o) = self.target() {
            o.status_changed(status.into());
        }
    }
}
