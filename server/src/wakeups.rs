//! [`Wakeups`]: wakes pairing inbox reads waiting on this instance as soon as a message or a
//! close for their mailbox is stored here.
//!
//! Writes made through another instance sharing PostgreSQL are not seen here; waiting reads
//! also poll storage ([`POLL`]), so they learn of those within a fraction of a second.

use std::{
    collections::HashMap,
    sync::{Arc, Mutex, PoisonError, Weak},
    time::Duration,
};

use tokio::sync::Notify;

/// How often a waiting pairing read looks at storage again.
pub const POLL: Duration = Duration::from_millis(200);

/// Entries kept before the ones nobody waits on are dropped.
const PRUNE_AT: usize = 1024;

/// One [`Notify`] per mailbox that has waiting reads.
#[derive(Debug, Default)]
pub struct Wakeups {
    waiters: Mutex<HashMap<String, Weak<Notify>>>,
}

impl Wakeups {
    /// The notify of `mailbox`; hold it while waiting.
    pub fn subscribe(&self, mailbox: &str) -> Arc<Notify> {
        let mut waiters = self.waiters.lock().unwrap_or_else(PoisonError::into_inner);
        if let Some(notify) = waiters.get(mailbox).and_then(Weak::upgrade) {
            return notify;
        }
        if waiters.len() >= PRUNE_AT {
            waiters.retain(|_, notify| notify.strong_count() > 0);
        }
        let notify = Arc::new(Notify::new());
        waiters.insert(mailbox.to_owned(), Arc::downgrade(&notify));
        notify
    }

    /// Wakes every read waiting on `mailbox`.
    pub fn wake(&self, mailbox: &str) {
        let notify = self
            .waiters
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .get(mailbox)
            .and_then(Weak::upgrade);
        if let Some(notify) = notify {
            notify.notify_waiters();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn wakes_only_the_mailbox_named() {
        let wakeups = Wakeups::default();
        let a = wakeups.subscribe("1");
        let b = wakeups.subscribe("2");
        let (woken_a, woken_b) = (a.notified(), b.notified());
        tokio::pin!(woken_a, woken_b);
        woken_a.as_mut().enable();
        woken_b.as_mut().enable();
        wakeups.wake("1");
        assert!(futures_util::poll!(woken_a).is_ready());
        assert!(futures_util::poll!(woken_b).is_pending());
        assert!(Arc::ptr_eq(&a, &wakeups.subscribe("1")));
    }
}
