//! LISTEN/NOTIFY: what other instances commit reaches this instance's live sockets.
//!
//! A notification carries a space id and its new head (`c <hex> <head>`), or an erase
//! (`e <hex>`); never a payload. It becomes a [`LiveEvent::Head`] hint on the local hub, and a
//! socket that is behind reads the chunks from the table. Notifications sent while the listener
//! is disconnected are lost, so after every (re)connect, once LISTEN is in place, every local
//! subscriber is told to re-read from its cursor ([`Publisher::resync`]): nothing committed
//! before that moment is missed, and nothing is sent twice because sockets keep cursors.

use std::{
    sync::{Arc, atomic::Ordering::Relaxed},
    time::Duration,
};

use futures_util::{StreamExt, stream};
use mend_protocol::SpaceId;
use tokio::sync::mpsc;
use tokio_postgres::{AsyncMessage, NoTls};
use tokio_util::sync::CancellationToken;

use super::{CHANNEL, PgError, Shared};
use crate::live::LiveEvent;

/// First wait before reconnecting; doubles up to [`MAX_BACKOFF`].
const MIN_BACKOFF: Duration = Duration::from_millis(100);
const MAX_BACKOFF: Duration = Duration::from_secs(5);
/// How often an idle listener checks that its connection still answers.
const PROBE_EVERY: Duration = Duration::from_secs(10);

/// The notification of chunks committed up to `head`.
pub(crate) fn committed_message(space: &SpaceId, head: u64) -> String {
    format!("c {space} {head}")
}

/// The notification of an erase.
pub(crate) fn erased_message(space: &SpaceId) -> String {
    format!("e {space}")
}

/// A notification, parsed.
#[derive(Debug, PartialEq, Eq)]
enum Note {
    Committed(SpaceId, u64),
    Erased(SpaceId),
}

fn parse(payload: &str) -> Option<Note> {
    let mut parts = payload.split(' ');
    let kind = parts.next()?;
    let space: SpaceId = parts.next()?.parse().ok()?;
    match kind {
        "c" => Some(Note::Committed(space, parts.next()?.parse().ok()?)),
        "e" => Some(Note::Erased(space)),
        _ => None,
    }
}

/// Keeps a listening connection open until `stop`, reconnecting with backoff.
pub(crate) async fn run(
    config: tokio_postgres::Config,
    shared: Arc<Shared>,
    stop: CancellationToken,
) {
    let mut backoff = MIN_BACKOFF;
    while !stop.is_cancelled() {
        match listen(&config, &shared, &stop, &mut backoff).await {
            Ok(()) => {}
            Err(error) => tracing::warn!(%error, "notification listener disconnected"),
        }
        shared.listening.send_replace(false);
        tokio::select! {
            () = stop.cancelled() => return,
            () = tokio::time::sleep(backoff) => {}
        }
        backoff = (backoff * 2).min(MAX_BACKOFF);
    }
}

async fn listen(
    config: &tokio_postgres::Config,
    shared: &Shared,
    stop: &CancellationToken,
    backoff: &mut Duration,
) -> Result<(), PgError> {
    let (client, mut connection) = config.connect(NoTls).await?;
    let (notes, mut received) = mpsc::unbounded_channel();
    let driver = tokio::spawn(async move {
        let mut messages = stream::poll_fn(move |cx| connection.poll_message(cx));
        while let Some(message) = messages.next().await {
            match message {
                Ok(AsyncMessage::Notification(note)) => {
                    if notes.send(note).is_err() {
                        return Ok(());
                    }
                }
                Ok(_) => {}
                Err(error) => return Err(error),
            }
        }
        Ok(())
    });
    let result = async {
        client.batch_execute(&format!("LISTEN {CHANNEL}")).await?;
        shared.listening.send_replace(true);
        shared.metrics.listener_connects.fetch_add(1, Relaxed);
        *backoff = MIN_BACKOFF;
        // Whatever happened while no one listened: erasures may have been missed, so cached
        // tokens are dropped, and every subscriber re-reads from its cursor.
        shared.forget_all_tokens();
        shared.publisher.resync();
        let mut probe = tokio::time::interval(PROBE_EVERY);
        probe.tick().await;
        loop {
            tokio::select! {
                () = stop.cancelled() => return Ok(()),
                note = received.recv() => match note {
                    Some(note) => handle(shared, note.payload()),
                    None => return Err(PgError::Lost),
                },
                _ = probe.tick() => {
                    tokio::time::timeout(PROBE_EVERY, client.simple_query("SELECT 1"))
                        .await
                        .map_err(|_| PgError::Lost)??;
                }
            }
        }
    }
    .await;
    drop(client);
    driver.abort();
    result
}

fn handle(shared: &Shared, payload: &str) {
    shared.metrics.notifications.fetch_add(1, Relaxed);
    match parse(payload) {
        Some(Note::Committed(space, head)) => {
            shared.publisher.publish(&space, LiveEvent::Head(head));
        }
        Some(Note::Erased(space)) => {
            shared.forget_token(&space);
            shared.publisher.publish(&space, LiveEvent::Erased);
        }
        None => tracing::warn!("ignored a malformed notification"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_what_the_database_sends() {
        let space = SpaceId([0xab; 32]);
        assert_eq!(
            parse(&committed_message(&space, 42)),
            Some(Note::Committed(space, 42))
        );
        assert_eq!(parse(&erased_message(&space)), Some(Note::Erased(space)));
        assert_eq!(parse("c nothex 1"), None);
        assert_eq!(parse(&format!("c {space} -1")), None);
        assert_eq!(parse(&format!("x {space}")), None);
        assert_eq!(parse(""), None);
    }
}
