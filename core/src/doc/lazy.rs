//! A document that may still be loading on a background thread.
//!
//! Opening a journal reads records from the store's read model; Automerge is only needed to
//! write or merge, so its load (the bulk of opening a large journal) starts in the background
//! and the first write waits for whatever is left of it.

use std::{
    cell::{Cell, OnceCell, RefCell},
    sync::{Arc, Condvar, Mutex},
    thread::JoinHandle,
    time::{Duration, Instant},
};

use super::SpaceDoc;
use crate::error::{Error, Result};

/// A [`SpaceDoc`] that is ready, loading, or failed to load.
#[derive(Debug)]
pub(crate) struct LazyDoc {
    ready: OnceCell<SpaceDoc>,
    state: RefCell<State>,
    /// The heads the read model says the document has, checked when the load finishes.
    expect: Option<String>,
    /// Set when the loaded document's heads differ from `expect`.
    stale: Cell<bool>,
    /// Turns true when the load has finished, however it ended.
    done: Loaded,
}

/// Waits for a background load without holding the journal: clone it out, wait on any thread.
#[derive(Clone, Debug)]
pub struct Loaded(Arc<(Mutex<bool>, Condvar)>);

impl Loaded {
    fn new(done: bool) -> Self {
        Self(Arc::new((Mutex::new(done), Condvar::new())))
    }

    fn finish(&self) {
        let (flag, cv) = &*self.0;
        if let Ok(mut done) = flag.lock() {
            *done = true;
        }
        cv.notify_all();
    }

    /// Blocks until the load has finished, or `limit` has passed; true if it finished.
    pub fn wait(&self, limit: Duration) -> bool {
        let (flag, cv) = &*self.0;
        let until = Instant::now() + limit;
        let Ok(mut done) = flag.lock() else {
            return true; // a panicked loader has finished too
        };
        while !*done {
            let left = until.saturating_duration_since(Instant::now());
            if left.is_zero() {
                return false;
            }
            match cv.wait_timeout(done, left) {
                Ok((guard, _)) => done = guard,
                Err(_) => return true,
            }
        }
        true
    }
}

/// Marks the load finished however the loader leaves (a panic included).
struct FinishOnDrop(Loaded);

impl Drop for FinishOnDrop {
    fn drop(&mut self) {
        self.0.finish();
    }
}

#[derive(Debug)]
enum State {
    Ready,
    Loading(JoinHandle<Result<SpaceDoc>>),
    Failed(String),
    /// A read-only handle: reads come from the read model, and there is nothing to load.
    Absent,
}

impl LazyDoc {
    /// A document already in memory.
    pub(crate) fn ready(doc: SpaceDoc) -> Self {
        Self {
            ready: OnceCell::from(doc),
            state: RefCell::new(State::Ready),
            expect: None,
            stale: Cell::new(false),
            done: Loaded::new(true),
        }
    }

    /// No document at all, for a read-only journal handle: every write fails clearly.
    pub(crate) fn absent() -> Self {
        Self {
            ready: OnceCell::new(),
            state: RefCell::new(State::Absent),
            expect: None,
            stale: Cell::new(false),
            done: Loaded::new(true),
        }
    }

    /// A document `load` builds on a background thread, expected to have heads `expect` (as the
    /// read model writes them).
    pub(crate) fn spawn(
        load: impl FnOnce() -> Result<SpaceDoc> + Send + 'static,
        expect: String,
    ) -> Result<Self> {
        let done = Loaded::new(false);
        let finish = FinishOnDrop(done.clone());
        let handle = std::thread::Builder::new()
            .name("mend-doc-load".into())
            .spawn(move || {
                let _finish = finish;
                load()
            })
            .map_err(|e| Error::Corrupt(format!("cannot start loading the document: {e}")))?;
        Ok(Self {
            ready: OnceCell::new(),
            state: RefCell::new(State::Loading(handle)),
            expect: Some(expect),
            stale: Cell::new(false),
            done,
        })
    }

    /// Finished once the load has (at once for a document already in memory).
    pub(crate) fn finished(&self) -> Loaded {
        self.done.clone()
    }

    /// Whether the loaded document turned out to differ from what the read model expected;
    /// true once, then cleared.
    pub(crate) fn take_stale(&self) -> bool {
        self.stale.replace(false)
    }

    /// The document, waiting for its load if needed. A failed load fails every call, with the
    /// reason it failed.
    pub(crate) fn get(&self) -> Result<&SpaceDoc> {
        if let Some(doc) = self.ready.get() {
            return Ok(doc);
        }
        let mut state = self.state.borrow_mut();
        match std::mem::replace(&mut *state, State::Ready) {
            State::Loading(handle) => {
                let loaded = handle
                    .join()
                    .map_err(|_| Error::Corrupt("loading the document panicked".into()))
                    .and_then(|r| r);
                match loaded {
                    Ok(doc) => {
                        if self.expect.as_ref().is_some_and(|e| *e != doc.heads_text()) {
                            self.stale.set(true);
                        }
                        Ok(self.ready.get_or_init(|| doc))
                    }
                    Err(e) => {
                        let reason = match e {
                            Error::Corrupt(reason) => reason,
                            other => other.to_string(),
                        };
                        *state = State::Failed(reason.clone());
                        Err(Error::Corrupt(reason))
                    }
                }
            }
            State::Failed(reason) => {
                *state = State::Failed(reason.clone());
                Err(Error::Corrupt(reason))
            }
            State::Absent => {
                *state = State::Absent;
                Err(Error::Invalid(
                    "this journal handle only reads; write through the device".into(),
                ))
            }
            State::Ready => Err(Error::Corrupt("the document was never loaded".into())),
        }
    }

    /// The document for writing, waiting for its load if needed.
    pub(crate) fn get_mut(&mut self) -> Result<&mut SpaceDoc> {
        self.get()?;
        self.ready
            .get_mut()
            .ok_or_else(|| Error::Corrupt("the document was never loaded".into()))
    }

    /// Replaces the document (after a failed commit, with what the store holds).
    pub(crate) fn set(&mut self, doc: SpaceDoc) {
        self.ready = OnceCell::from(doc);
        *self.state.get_mut() = State::Ready;
        self.done = Loaded::new(true);
    }
}

#[cfg(test)]
mod tests {
    use automerge::ActorId;

    use super::*;

    #[test]
    fn finished_resolves_when_the_background_load_ends() -> Result<()> {
        let (go, wait) = std::sync::mpsc::channel::<()>();
        let lazy = LazyDoc::spawn(
            move || {
                let _ = wait.recv();
                SpaceDoc::genesis(ActorId::random())
            },
            "heads the read model expected".into(),
        )?;
        let finished = lazy.finished();
        // Held back until the load ends …
        assert!(
            !finished.wait(Duration::from_millis(50)),
            "finished before the load ended"
        );
        let _ = go.send(());
        // … then it finishes, and the document is there without waiting.
        assert!(finished.wait(Duration::from_secs(10)), "never finished");
        lazy.get()?;
        // Its heads differ from what the read model expected: reported once.
        assert!(lazy.take_stale());
        assert!(!lazy.take_stale());
        Ok(())
    }

    #[test]
    fn a_document_in_memory_is_finished_at_once() -> Result<()> {
        let lazy = LazyDoc::ready(SpaceDoc::genesis(ActorId::random())?);
        assert!(lazy.finished().wait(Duration::ZERO));
        assert!(!lazy.take_stale());
        Ok(())
    }
}
