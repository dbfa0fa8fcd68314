//! The one thread the app's callbacks run on, and the journal's subscriptions.
//!
//! Every listener and logger call is queued to `mend-callbacks`, a thread the bindings own:
//! never the caller's thread (so a slow listener cannot stall `add`; it may run before the
//! caller resumes with the new id) and never a sync worker (so a slow listener cannot stall
//! live sync).
//! A listener that throws (or panics) is logged and skipped; what was committed stays
//! committed.
//!
//! The journal holds its listeners weakly: the [`JournalSubscription`] the app keeps holds the
//! only strong reference, so dropping or cancelling it unsubscribes and nothing in Rust keeps
//! the app's listener (or the journal) alive.

use std::{
    collections::BTreeMap,
    panic::{AssertUnwindSafe, catch_unwind},
    sync::{
        Arc, LazyLock, Mutex, OnceLock, PoisonError, Weak,
        atomic::{AtomicU64, Ordering},
        mpsc,
    },
};

use mend_client::{Device, SyncObserver};
use mend_core::{Error as CoreError, RecordId, Space, sync as core_sync};

use crate::{enums::RecordKind, sync::SyncStatus};

type Job = Box<dyn FnOnce() + Send>;

/// The callback thread's queue, started on first use. `None` when the thread could not start;
/// callbacks are then dropped (and logged), never run on the caller's thread.
static QUEUE: LazyLock<Option<Mutex<mpsc::Sender<Job>>>> = LazyLock::new(|| {
    let (tx, rx) = mpsc::channel::<Job>();
    std::thread::Builder::new()
        .name(CALLBACK_THREAD.into())
        .spawn(move || {
            for job in rx {
                // A panic in one callback must not end the thread for every later one.
                let _ = catch_unwind(AssertUnwindSafe(job));
            }
        })
        .ok()
        .map(|_| Mutex::new(tx))
});

/// The name of the thread every callback runs on.
pub const CALLBACK_THREAD: &str = "mend-callbacks";

/// Queues `job` for the callback thread.
pub(crate) fn post(job: impl FnOnce() + Send + 'static) {
    let sent = QUEUE.as_ref().is_some_and(|q| {
        q.lock()
            .unwrap_or_else(PoisonError::into_inner)
            .send(Box::new(job))
            .is_ok()
    });
    if !sent {
        tracing::error!("the callback thread is not running; a callback was dropped");
    }
}

/// Why a listener call failed: what a Kotlin, Swift or Python listener threw.
#[derive(Debug, thiserror::Error, uniffi::Error)]
#[uniffi(flat_error)]
pub enum ListenerError {
    /// The listener threw.
    #[error("{0}")]
    Failed(String),
}

impl From<uniffi::UnexpectedUniFFICallbackError> for ListenerError {
    fn from(e: uniffi::UnexpectedUniFFICallbackError) -> Self {
        Self::Failed(e.reason)
    }
}

/// Runs one listener call, catching what it throws or panics with, and logs a failure by the
/// listener's kind only (its message may hold anything the app put in it).
pub(crate) fn guarded(what: &'static str, call: impl FnOnce() -> Result<(), ListenerError>) {
    match catch_unwind(AssertUnwindSafe(call)) {
        Ok(Ok(())) => {}
        Ok(Err(_)) => tracing::warn!(listener = what, "a listener threw; it was skipped"),
        Err(_) => tracing::warn!(listener = what, "a listener panicked; it was skipped"),
    }
}

/// One record a change touched.
#[derive(Clone, Debug, PartialEq, Eq, uniffi::Record)]
pub struct ChangedRecord {
    /// Its id.
    pub id: crate::convert::RecordId,
    /// Its kind; null when this device can no longer see it.
    pub kind: Option<RecordKind>,
    /// Removed by its author, or no longer visible here: drop it from the screen.
    pub removed: bool,
}

/// What changed: by a write on this device or by what sync brought.
#[derive(Clone, Debug, PartialEq, Eq, uniffi::Record)]
pub struct JournalChange {
    /// The records, in the order they were written.
    pub records: Vec<ChangedRecord>,
}

/// Told which records changed. Implemented by the app; runs on `mend-callbacks`.
///
/// Keep it a small object that holds your model weakly (`[weak self]`, a `WeakReference`):
/// the subscription keeps the listener alive, and the listener should not keep the journal.
#[uniffi::export(with_foreign)]
pub trait JournalListener: Send + Sync {
    /// Records changed. Reading the journal from here is safe; return quickly and hop to the
    /// UI yourself. What this throws is logged and skipped.
    fn on_change(&self, change: JournalChange) -> Result<(), ListenerError>;
}

/// Told how sync is going. Implemented by the app; runs on `mend-callbacks`.
#[uniffi::export(with_foreign)]
pub trait SyncStatusListener: Send + Sync {
    /// The sync status changed. What this throws is logged and skipped.
    fn on_status(&self, status: SyncStatus) -> Result<(), ListenerError>;
    /// The journal moved to new secrets while syncing (a device was removed, a partner
    /// forgot, a rejoin was let in): store `keyringSecret()` again now. The secret stored
    /// before cannot open or restore this journal's new spaces. What this throws is logged
    /// and skipped.
    fn on_keyring_changed(&self) -> Result<(), ListenerError>;
}

enum Listener {
    Change(Weak<dyn JournalListener>),
    Status(Weak<dyn SyncStatusListener>),
}

enum Keep {
    Change(#[allow(dead_code)] Arc<dyn JournalListener>),
    Status(#[allow(dead_code)] Arc<dyn SyncStatusListener>),
}

/// A journal's listeners: the core's observer for it, fanning out on the callback thread.
#[derive(Default)]
pub(crate) struct Hub {
    device: OnceLock<Weak<Device>>,
    listeners: Mutex<BTreeMap<u64, Listener>>,
    next: AtomicU64,
}

impl std::fmt::Debug for Hub {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Hub").finish_non_exhaustive()
    }
}

impl Hub {
    /// Called once, after the device opened: where changed records are read back from.
    pub(crate) fn attach(&self, device: &Arc<Device>) {
        let _ = self.device.set(Arc::downgrade(device));
    }

    fn add(self: &Arc<Self>, listener: Listener, keep: Keep) -> Arc<JournalSubscription> {
        let id = self.next.fetch_add(1, Ordering::Relaxed);
        self.listeners
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .insert(id, listener);
        Arc::new(JournalSubscription {
            hub: Arc::downgrade(self),
            id,
            keep: Mutex::new(Some(keep)),
        })
    }

    pub(crate) fn subscribe(
        self: &Arc<Self>,
        listener: Arc<dyn JournalListener>,
    ) -> Arc<JournalSubscription> {
        let weak = Arc::downgrade(&listener);
        self.add(Listener::Change(weak), Keep::Change(listener))
    }

    pub(crate) fn subscribe_status(
        self: &Arc<Self>,
        listener: Arc<dyn SyncStatusListener>,
    ) -> Arc<JournalSubscription> {
        let weak = Arc::downgrade(&listener);
        self.add(Listener::Status(weak), Keep::Status(listener))
    }

    fn remove(&self, id: u64) {
        self.listeners
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .remove(&id);
    }

    fn change_listeners(&self) -> Vec<Weak<dyn JournalListener>> {
        let mut listeners = self
            .listeners
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        listeners.retain(|_, l| match l {
            Listener::Change(w) => w.strong_count() > 0,
            Listener::Status(w) => w.strong_count() > 0,
        });
        listeners
            .values()
            .filter_map(|l| match l {
                Listener::Change(w) => Some(w.clone()),
                Listener::Status(_) => None,
            })
            .collect()
    }

    fn status_listeners(&self) -> Vec<Weak<dyn SyncStatusListener>> {
        self.listeners
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .values()
            .filter_map(|l| match l {
                Listener::Status(w) => Some(w.clone()),
                Listener::Change(_) => None,
            })
            .collect()
    }
}

/// Reads what the app needs to know about `ids` (kind, removed) on the reader connection.
fn describe(device: Option<&Weak<Device>>, ids: &[RecordId]) -> Vec<ChangedRecord> {
    let device = device.and_then(Weak::upgrade);
    let looked_up = device.and_then(|d| {
        d.read(|j| {
            Ok(ids
                .iter()
                .map(|id| match j.get(*id) {
                    Ok(r) => Ok((Some(r.kind().into()), r.removed)),
                    Err(CoreError::NotFound(_)) => Ok((None, true)),
                    Err(e) => Err(e),
                })
                .collect::<Vec<_>>())
        })
        .ok()
    });
    ids.iter()
        .enumerate()
        .map(|(i, id)| {
            let (kind, removed) = looked_up
                .as_ref()
                .and_then(|l| l.get(i))
                .and_then(|r| r.as_ref().ok().copied())
                .unwrap_or((None, false));
            ChangedRecord {
                id: id.to_string().into(),
                kind,
                removed,
            }
        })
        .collect()
}

impl SyncObserver for Hub {
    fn records_changed(&self, _space: Space, records: Vec<RecordId>) {
        let listeners = self.change_listeners();
        if listeners.is_empty() || records.is_empty() {
            return;
        }
        // Described now, while the journal is surely open: the callback thread may be behind,
        // and the journal closed by the time it delivers.
        let change = JournalChange {
            records: describe(self.device.get(), &records),
        };
        post(move || {
            for listener in listeners {
                // Upgraded at delivery: a subscription cancelled meanwhile hears nothing.
                if let Some(l) = listener.upgrade() {
                    let change = change.clone();
                    guarded("journal", move || l.on_change(change));
                }
            }
        });
    }

    fn keyring_changed(&self) {
        let listeners = self.status_listeners();
        if listeners.is_empty() {
            // Nothing can tell the app: the next `syncNow` report says so too
            // (`keyringChanged`).
            tracing::warn!("the journal's secrets changed and no status listener hears it");
            return;
        }
        post(move || {
            for listener in listeners {
                if let Some(l) = listener.upgrade() {
                    guarded("keyring", move || l.on_keyring_changed());
                }
            }
        });
    }

    fn status_changed(&self, status: core_sync::SyncStatus) {
        let listeners = self.status_listeners();
        if listeners.is_empty() {
            return;
        }
        let status = SyncStatus::from(status);
        post(move || {
            for listener in listeners {
                if let Some(l) = listener.upgrade() {
                    let status = status.clone();
                    guarded("status", move || l.on_status(status));
                }
            }
        });
    }
}

/// A listener's registration. Dropping it (Kotlin `close()`/`use {}`, Swift releasing it,
/// Python `del`) or calling `cancel()` unsubscribes; no callback starts after that.
#[derive(uniffi::Object)]
pub struct JournalSubscription {
    hub: Weak<Hub>,
    id: u64,
    keep: Mutex<Option<Keep>>,
}

impl std::fmt::Debug for JournalSubscription {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("JournalSubscription")
            .field("id", &self.id)
            .finish_non_exhaustive()
    }
}

#[uniffi::export]
impl JournalSubscription {
    /// Stops the callbacks. Calling it again does nothing.
    pub fn cancel(&self) {
        if let Some(hub) = self.hub.upgrade() {
            hub.remove(self.id);
        }
        // The listener is released off the lock: the app's object may run code when freed.
        let kept = self
            .keep
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .take();
        drop(kept);
    }

    /// Whether callbacks still arrive (false once cancelled or the journal is gone).
    pub fn is_active(&self) -> bool {
        self.hub.strong_count() > 0
            && self
                .keep
                .lock()
                .unwrap_or_else(PoisonError::into_inner)
                .is_some()
    }
}

impl Drop for JournalSubscription {
    fn drop(&mut self) {
        self.cancel();
    }
}
