//! A document that may still be loading on a background thread.
//!
//! Opening a journal reads records from the store's read model; Automerge is only needed to
//! write or merge, so its load (the bulk of opening a large journal) starts in the background
//! and the first write waits for whatever is left of it.

use std::{
    cell::{Cell, OnceCell, RefCell},
    thread::JoinHandle,
};

use tokio::sync::watch;

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
    done: watch::Receiver<bool>,
}

#[derive(Debug)]
enum State {
    Ready,
    Loading(JoinHandle<Result<SpaceDoc>>),
    Failed(String),
}

impl LazyDoc {
    /// A document already in memory.
    pub(crate) fn ready(doc: SpaceDoc) -> Self {
        Self {
            ready: OnceCell::from(doc),
            state: RefCell::new(State::Ready),
            expect: None,
            stale: Cell::new(false),
            done: watch::channel(true).1,
        }
    }

    /// A document `load` builds on a background thread, expected to have heads `expect` (as the
    /// read model writes them).
    pub(crate) fn spawn(
        load: impl FnOnce() -> Result<SpaceDoc> + Send + 'static,
        expect: String,
    ) -> Result<Self> {
        let (done_tx, done) = watch::channel(false);
        let handle = std::thread::Builder::new()
            .name("mend-doc-load".into())
            .spawn(move || {
                let loaded = load();
                let _ = done_tx.send(true);
                loaded
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

    /// Resolves once the load has finished (at once for a document already in memory).
    pub(crate) fn finished(&self) -> impl Future<Output = ()> + Send + 'static {
        let mut done = self.done.clone();
        async move {
            // An error means the loader is gone, which also means it has finished.
            let _ = done.wait_for(|d| *d).await;
        }
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
        self.done = watch::channel(true).1;
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use automerge::ActorId;

    use super::*;

    #[tokio::test]
    async fn finished_resolves_when_the_background_load_ends() -> Result<()> {
        let (go, wait) = std::sync::mpsc::channel::<()>();
        let lazy = LazyDoc::spawn(
            move || {
                let _ = wait.recv();
                SpaceDoc::genesis(ActorId::random())
            },
            "heads the read model expected".into(),
        )?;
        let finished = lazy.finished();
        tokio::pin!(finished);
        // Held back until the load ends …
        let early = tokio::time::timeout(Duration::from_millis(50), &mut finished).await;
        assert!(early.is_err(), "resolved before the load ended");
        let _ = go.send(());
        // … then it resolves, and the document is there without waiting.
        let late = tokio::time::timeout(Duration::from_secs(10), finished).await;
        assert!(late.is_ok(), "never resolved");
        lazy.get()?;
        // Its heads differ from what the read model expected: reported once.
        assert!(lazy.take_stale());
        assert!(!lazy.take_stale());
        Ok(())
    }

    #[tokio::test]
    async fn a_document_in_memory_is_finished_at_once() -> Result<()> {
        let lazy = LazyDoc::ready(SpaceDoc::genesis(ActorId::random())?);
        let done = tokio::time::timeout(Duration::from_secs(10), lazy.finished()).await;
        assert!(done.is_ok());
        assert!(!lazy.take_stale());
        Ok(())
    }
}
