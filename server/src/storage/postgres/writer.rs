//! Push batching: group commit for PostgreSQL.
//!
//! A writer takes the first queued push, then everything else already queued (up to a batch
//! limit), and runs the batch as one call of the `mend_push` SQL function: one round trip and
//! one commit for the lot, on a connection the writer keeps between batches. It answers each
//! caller, and announces the new chunks on this instance's hub, only after that commit. A batch
//! whose connection was lost runs again on another; one that fails otherwise answers every
//! caller with the error. Either way a push that did commit before is then answered as a
//! duplicate with its original sequence.

use std::{
    collections::HashMap,
    sync::{Arc, atomic::Ordering::Relaxed},
    time::{Duration, Instant},
};

use mend_protocol::{Chunk, DeviceId, Push, SpaceId};
use tokio::sync::{mpsc, oneshot};

use super::{ANSWER_SLACK, CHANNEL, PgError, Shared, from_db, listener, nonneg, to_db};
use crate::{
    config::Postgres,
    live::LiveEvent,
    storage::{Pushed, ROW_BYTES, StorageError},
};

/// Times a batch runs again after a deadlock, a serialisation failure or a lost connection.
const RETRIES: usize = 3;

/// One queued push.
pub(crate) struct Job {
    pub(crate) space: SpaceId,
    pub(crate) push: Push,
    pub(crate) quota: u64,
    pub(crate) reply: oneshot::Sender<Result<Pushed, StorageError>>,
    /// When it was queued: a push that waited longer than the acquire timeout behind a slow
    /// batch is answered 503 instead of waiting for its own turn too.
    pub(crate) queued: Instant,
}

/// One row `mend_push` answers per push.
struct Outcome {
    status: i16,
    relay_seq: i64,
    used: i64,
}

pub(crate) struct Writer {
    shared: Arc<Shared>,
    jobs: mpsc::UnboundedReceiver<Job>,
    settings: Postgres,
    /// The pool connection this writer keeps between batches: one backend process runs all of
    /// its batches and notifications with warm caches, instead of each batch waking another.
    /// Let go after any error ([`Writer::drop_client`]).
    client: Option<deadpool_postgres::Client>,
    /// Senders whose push was answered 503 for waiting too long, and when: a push of theirs
    /// queued before that answer is answered 503 too ([`split_stale`]).
    stale: HashMap<(SpaceId, DeviceId), Instant>,
}

impl Writer {
    pub(crate) fn new(
        shared: Arc<Shared>,
        jobs: mpsc::UnboundedReceiver<Job>,
        settings: Postgres,
    ) -> Writer {
        Writer {
            shared,
            jobs,
            settings,
            client: None,
            stale: HashMap::new(),
        }
    }

    /// Runs until every sender is gone and the queue is empty.
    pub(crate) async fn run(mut self) {
        while let Some(first) = self.jobs.recv().await {
            let mut bytes = first.push.payload.len();
            let mut batch = vec![first];
            while batch.len() < self.settings.max_batch && bytes < self.settings.max_batch_bytes {
                match self.jobs.try_recv() {
                    Ok(job) => {
                        bytes = bytes.saturating_add(job.push.payload.len());
                        batch.push(job);
                    }
                    Err(_) => break,
                }
            }
            self.commit(batch).await;
        }
    }

    async fn commit(&mut self, batch: Vec<Job>) {
        let (batch, stale) = split_stale(batch, self.settings.acquire_timeout, &mut self.stale);
        if !stale.is_empty() {
            self.fail(stale, PgError::Slow);
        }
        if batch.is_empty() {
            return;
        }
        let mut attempt = 0;
        let total = self.shared.total_quota.load(Relaxed);
        let outcomes = loop {
            let result = self.execute(&batch, total).await;
            if let Err(error) = &result {
                self.drop_client(error);
            }
            match result {
                // A lost connection runs the batch again on another: pushes are idempotent, so
                // one that had committed is answered as the duplicate of itself.
                Err(error)
                    if (error.is_retryable() || error.is_connection_lost())
                        && attempt < RETRIES =>
                {
                    attempt += 1;
                    self.shared.metrics.batch_retries.fetch_add(1, Relaxed);
                }
                other => break other,
            }
        };
        let outcomes = match outcomes {
            Ok(outcomes) if outcomes.len() == batch.len() => outcomes,
            Ok(_) => {
                return self.fail(
                    batch,
                    PgError::Corrupt("mend_push answered a wrong row count"),
                );
            }
            Err(error) => return self.fail(batch, error),
        };
        // Other instances hear of it before anyone is answered, so an acknowledged chunk is
        // always announced. Duplicates are announced too: a push retried here after an instance
        // died between its commit and its notification announces that chunk now.
        let mut heads: HashMap<SpaceId, i64> = HashMap::new();
        for (job, outcome) in batch.iter().zip(&outcomes) {
            if outcome.status <= 1 {
                let head = heads.entry(job.space).or_insert(0);
                *head = (*head).max(outcome.relay_seq);
            }
        }
        let announced = self.notify(&heads).await;
        if let Err(error) = &announced {
            self.drop_client(error);
        }
        self.shared.metrics.batches.fetch_add(1, Relaxed);
        self.shared
            .metrics
            .batched_pushes
            .fetch_add(batch.len() as u64, Relaxed);
        let mut answers = Vec::with_capacity(batch.len());
        for (job, outcome) in batch.into_iter().zip(outcomes) {
            let adding = job.push.payload.len() as u64;
            let result = match outcome.status {
                0 => {
                    let relay_seq = from_db(outcome.relay_seq);
                    let chunk = Chunk {
                        relay_seq,
                        device_id: job.push.device_id,
                        device_seq: job.push.device_seq,
                        payload: job.push.payload,
                    };
                    self.shared
                        .publisher
                        .publish(&job.space, LiveEvent::Chunk(Arc::new(chunk)));
                    Ok(Pushed {
                        relay_seq,
                        duplicate: false,
                    })
                }
                1 => Ok(Pushed {
                    relay_seq: from_db(outcome.relay_seq),
                    duplicate: true,
                }),
                2 => Err(StorageError::SpaceNotFound),
                3 => Err(StorageError::QuotaExceeded {
                    used: nonneg(outcome.used),
                    adding,
                    quota: job.quota,
                }),
                4 => Err(StorageError::SeqConflict {
                    relay_seq: from_db(outcome.relay_seq),
                }),
                // The relay counts the row too, as `mend_push` does.
                5 => Err(StorageError::RelayFull {
                    used: nonneg(outcome.used),
                    adding: adding.saturating_add(ROW_BYTES),
                    limit: total,
                }),
                _ => Err(StorageError::Backend(
                    "mend_push answered an unknown status".into(),
                )),
            };
            answers.push((job.reply, result));
        }
        if let Err(error) = announced {
            // Committed but not announced: answer 503. The client retries, the retry is a
            // duplicate, and its batch announces the chunk.
            tracing::warn!(%error, "could not notify other instances of a batch");
            self.shared
                .metrics
                .unavailable
                .fetch_add(answers.len() as u64, Relaxed);
            let reason = error.to_string();
            for (reply, _) in answers {
                let _ = reply.send(Err(StorageError::Unavailable(reason.clone().into())));
            }
            return;
        }
        for (reply, result) in answers {
            // A dropped receiver means the caller went away; the write stands regardless.
            let _ = reply.send(result);
        }
    }

    fn fail(&mut self, batch: Vec<Job>, error: PgError) {
        tracing::warn!(%error, size = batch.len(), "push batch failed");
        let unavailable = error.is_unavailable();
        let reason = error.to_string();
        let now = Instant::now();
        for job in batch {
            if unavailable {
                self.stale.insert((job.space, job.push.device_id), now);
            }
            let error = if unavailable {
                self.shared.metrics.unavailable.fetch_add(1, Relaxed);
                StorageError::Unavailable(reason.clone().into())
            } else {
                StorageError::Backend(reason.clone().into())
            };
            let _ = job.reply.send(Err(error));
        }
    }

    /// Announces the new heads on the notification channel, in one prepared statement that
    /// runs as its own transaction. That transaction only notifies, so `set_config(…, true)`
    /// lets its commit skip waiting for the disk (a hint, not data): that keeps the
    /// database-wide notify lock short. The setting ends with the transaction.
    async fn notify(&mut self, heads: &HashMap<SpaceId, i64>) -> Result<(), PgError> {
        if heads.is_empty() {
            return Ok(());
        }
        let messages: Vec<String> = heads
            .iter()
            .map(|(space, head)| listener::committed_message(space, from_db(*head)))
            .collect();
        let limit = self.answer_limit();
        let client = self.client().await?;
        let statement = answered(
            limit,
            client.prepare_cached(
                "SELECT set_config('synchronous_commit', 'off', true), pg_notify($1, m) \
                 FROM unnest($2::text[]) AS m",
            ),
        )
        .await?;
        answered(limit, client.execute(&statement, &[&CHANNEL, &messages])).await?;
        Ok(())
    }

    /// Lets go of the kept connection after `error`: back to the pool after an error of a
    /// statement, or closed if the connection was lost or stopped answering (a query may still
    /// be in flight on it, and whoever got it next would wait behind that; the pool's own check
    /// sees only a connection that is closed already).
    fn drop_client(&mut self, error: &PgError) {
        if let Some(client) = self.client.take()
            && (matches!(error, PgError::Lost) || error.is_connection_lost())
        {
            drop(deadpool_postgres::Object::take(client));
        }
    }

    /// How long a round trip on the kept connection may take: the server cancels a statement
    /// itself at the statement timeout, so no answer by then and [`ANSWER_SLACK`] means the
    /// socket is gone.
    fn answer_limit(&self) -> Duration {
        self.settings.statement_timeout.saturating_add(ANSWER_SLACK)
    }

    /// This writer's connection, taken from the pool when it has none or the one it kept was
    /// closed while idle (the server restarted, or ended idle sessions).
    async fn client(&mut self) -> Result<&deadpool_postgres::Client, PgError> {
        if self
            .client
            .as_ref()
            .is_some_and(|client| client.is_closed())
        {
            self.client = None;
        }
        if self.client.is_none() {
            self.client = Some(self.shared.client().await?);
        }
        self.client.as_ref().ok_or(PgError::Lost)
    }

    async fn execute(&mut self, batch: &[Job], total: u64) -> Result<Vec<Outcome>, PgError> {
        let limit = self.answer_limit();
        let client = self.client().await?;
        let statement = answered(
            limit,
            client.prepare_cached(
                "SELECT status, relay_seq, used FROM mend_push($1, $2, $3, $4, $5, $6)",
            ),
        )
        .await?;
        let spaces: Vec<&[u8]> = batch.iter().map(|job| &job.space.0[..]).collect();
        let devices: Vec<&[u8]> = batch.iter().map(|job| &job.push.device_id.0[..]).collect();
        let device_seqs: Vec<i64> = batch.iter().map(|job| to_db(job.push.device_seq)).collect();
        let payloads: Vec<&[u8]> = batch.iter().map(|job| &job.push.payload[..]).collect();
        let quotas: Vec<i64> = batch
            .iter()
            .map(|job| i64::try_from(job.quota).unwrap_or(i64::MAX))
            .collect();
        let total_db = i64::try_from(total).unwrap_or(i64::MAX);
        let rows = answered(
            limit,
            client.query(
                &statement,
                &[
                    &spaces,
                    &devices,
                    &device_seqs,
                    &payloads,
                    &quotas,
                    &total_db,
                ],
            ),
        )
        .await?;
        rows.iter()
            .map(|row| {
                Ok(Outcome {
                    status: row.try_get(0)?,
                    relay_seq: row.try_get(1)?,
                    used: row.try_get(2)?,
                })
            })
            .collect()
    }
}

/// Splits off the pushes that waited longer than `limit`, and with each of them every later
/// push of the same device to the same space queued before it was answered (in this batch or
/// a later one): a device that sends several pushes at once does not see a later one stored
/// while an earlier one is answered 503 for the wait. `answered` remembers those senders (and
/// those of a batch answered 503 as a whole, [`Writer::fail`]); entries older than `limit` are
/// dropped, since any push queued before them is stale anyway.
fn split_stale(
    batch: Vec<Job>,
    limit: Duration,
    answered: &mut HashMap<(SpaceId, DeviceId), Instant>,
) -> (Vec<Job>, Vec<Job>) {
    let now = Instant::now();
    answered.retain(|_, at| now.saturating_duration_since(*at) <= limit);
    let (mut fresh, mut stale) = (Vec::with_capacity(batch.len()), Vec::new());
    for job in batch {
        let sender = (job.space, job.push.device_id);
        let behind = answered.get(&sender).is_some_and(|at| job.queued <= *at);
        let waited = now.saturating_duration_since(job.queued) > limit;
        if waited {
            // Answered now: what the device sent before hearing so waits with it. A push held
            // only for being behind keeps the first answer's time, so a retry sent after that
            // answer is not held for an older push answered later.
            answered.insert(sender, now);
        }
        if behind || waited {
            stale.push(job);
        } else {
            fresh.push(job);
        }
    }
    (fresh, stale)
}

/// Awaits `request` on a kept connection at most `limit`: past it the connection is taken for
/// lost.
async fn answered<T>(
    limit: Duration,
    request: impl std::future::Future<Output = Result<T, tokio_postgres::Error>>,
) -> Result<T, PgError> {
    match tokio::time::timeout(limit, request).await {
        Ok(answer) => Ok(answer?),
        Err(_) => Err(PgError::Lost),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn job(space: u8, device: u8, seq: u64, waited: Duration) -> Job {
        let (reply, _) = oneshot::channel();
        Job {
            space: SpaceId([space; 32]),
            push: Push {
                device_id: DeviceId([device; 16]),
                device_seq: seq,
                payload: vec![seq as u8],
            },
            quota: u64::MAX,
            reply,
            queued: Instant::now()
                .checked_sub(waited)
                .unwrap_or_else(Instant::now),
        }
    }

    fn seqs(jobs: &[Job]) -> Vec<(u8, u8, u64)> {
        jobs.iter()
            .map(|j| (j.space.0[0], j.push.device_id.0[0], j.push.device_seq))
            .collect()
    }

    #[test]
    fn a_push_after_a_stale_one_of_its_device_waits_with_it() {
        let (long, short) = (Duration::from_secs(60), Duration::ZERO);
        let limit = Duration::from_secs(5);
        let batch = vec![
            job(1, 1, 1, long),
            job(1, 2, 1, short),
            job(1, 1, 2, short),
            // The same device in another space is another sender.
            job(2, 1, 1, short),
            job(1, 1, 3, short),
        ];
        let mut answered = HashMap::new();
        let (fresh, stale) = split_stale(batch, limit, &mut answered);
        assert_eq!(seqs(&fresh), [(1, 2, 1), (2, 1, 1)]);
        assert_eq!(seqs(&stale), [(1, 1, 1), (1, 1, 2), (1, 1, 3)]);
        // The next batch: a push the device sent before hearing of the 503 waits with it, one
        // it sent after goes ahead.
        let at = answered[&(SpaceId([1; 32]), DeviceId([1; 16]))];
        let mut sent_before = job(1, 1, 4, Duration::ZERO);
        sent_before.queued = at.checked_sub(Duration::from_millis(1)).unwrap_or(at);
        let mut sent_after = job(1, 1, 1, Duration::ZERO);
        sent_after.queued = at + Duration::from_millis(1);
        let (fresh, stale) = split_stale(vec![sent_before, sent_after], limit, &mut answered);
        assert_eq!(seqs(&fresh), [(1, 1, 1)]);
        assert_eq!(seqs(&stale), [(1, 1, 4)]);
    }
}
