//! Pairing mailboxes in PostgreSQL. Each write locks the mailbox's row (`FOR UPDATE`) before it
//! checks anything, and allocation takes one advisory lock, so instances sharing the database
//! never hand out one number twice, claim a mailbox twice or number two messages alike.

use std::{sync::Arc, time::Duration};

use mend_protocol::{PairingInbox, PairingMessage, PairingState};
use tokio_postgres::Transaction;

use super::{PgError, Shared, hash32, nonneg, to_db};
use crate::storage::{
    StorageError, TokenHash,
    pairing::{
        MAX_MESSAGES_PER_SIDE, MailboxChoice, NewPairing, PairingRecord, PairingSide, PairingSwept,
        SHORT_TIERS, pick_free, state_at,
    },
};

/// Key of the advisory lock that serialises mailbox allocation ("mend_pai").
const ALLOCATION_LOCK: i64 = 0x6d65_6e64_5f70_6169;

type Outcome<T> = Result<Result<T, StorageError>, PgError>;

fn state_of(stored: i16, expires_at: i64, now: u64) -> Result<PairingState, PgError> {
    state_at(i64::from(stored), nonneg(expires_at), now)
        .ok_or(PgError::Corrupt("unknown pairing state"))
}

/// The stored (state, expiry) of a mailbox, its row locked until the transaction ends.
async fn lock(tx: &Transaction<'_>, mailbox: &str) -> Result<Option<(i16, i64)>, PgError> {
    let row = tx
        .query_opt(
            "SELECT state, expires_at FROM pairings WHERE mailbox = $1 FOR UPDATE",
            &[&mailbox],
        )
        .await?;
    Ok(match row {
        Some(row) => Some((row.try_get(0)?, row.try_get(1)?)),
        None => None,
    })
}

pub(super) async fn open(shared: Arc<Shared>, new: NewPairing) -> Outcome<String> {
    let mut client = shared.client().await?;
    let tx = client.transaction().await?;
    tx.execute("SELECT pg_advisory_xact_lock($1)", &[&ALLOCATION_LOCK])
        .await?;
    let live: i64 = tx
        .query_one(
            "SELECT count(*) FROM pairings WHERE state < 2 AND expires_at > $1",
            &[&to_db(new.now)],
        )
        .await?
        .try_get(0)?;
    let live = nonneg(live);
    if live >= new.max_live {
        return Ok(Err(StorageError::PairingsFull { live }));
    }
    let (mailbox, number) = match new.choice {
        MailboxChoice::Long(id) => (id, None),
        MailboxChoice::Short { pick } => {
            let mut found = None;
            for (lo, hi) in SHORT_TIERS {
                let taken = tx
                    .query(
                        "SELECT number FROM pairings WHERE number BETWEEN $1 AND $2 ORDER BY number",
                        &[&to_db(lo), &to_db(hi)],
                    )
                    .await?
                    .iter()
                    .map(|row| row.try_get::<_, i64>(0).map(nonneg))
                    .collect::<Result<Vec<u64>, _>>()?;
                if let Some(number) = pick_free(lo, hi, &taken, pick) {
                    found = Some(number);
                    break;
                }
            }
            let Some(number) = found else {
                return Ok(Err(StorageError::PairingsFull { live }));
            };
            (number.to_string(), Some(to_db(number)))
        }
    };
    let inserted = tx
        .execute(
            "INSERT INTO pairings (mailbox, number, host_hash, guest_hash, state, expires_at, created_at)
             VALUES ($1, $2, $3, NULL, 0, $4, $5) ON CONFLICT DO NOTHING",
            &[
                &mailbox,
                &number,
                &&new.host_hash[..],
                &to_db(new.expires_at),
                &to_db(new.now),
            ],
        )
        .await?;
    if inserted == 0 {
        return Ok(Err(StorageError::PairingUsed));
    }
    tx.commit().await?;
    Ok(Ok(mailbox))
}

pub(super) async fn claim(
    shared: Arc<Shared>,
    mailbox: String,
    guest_hash: TokenHash,
    now: u64,
) -> Outcome<u64> {
    let mut client = shared.client().await?;
    let tx = client.transaction().await?;
    let Some((state, expires_at)) = lock(&tx, &mailbox).await? else {
        return Ok(Err(StorageError::PairingUnknown));
    };
    match state_of(state, expires_at, now)? {
        PairingState::Open => {}
        PairingState::Expired if state == 0 || state == 4 => {
            return Ok(Err(StorageError::PairingExpired));
        }
        _ => return Ok(Err(StorageError::PairingUsed)),
    }
    tx.execute(
        "UPDATE pairings SET state = 1, guest_hash = $2 WHERE mailbox = $1",
        &[&mailbox, &&guest_hash[..]],
    )
    .await?;
    tx.commit().await?;
    Ok(Ok(nonneg(expires_at)))
}

pub(super) async fn record(
    shared: Arc<Shared>,
    mailbox: String,
    now: u64,
) -> Outcome<Option<PairingRecord>> {
    let client = shared.client().await?;
    let statement = client
        .prepare_cached(
            "SELECT host_hash, guest_hash, state, expires_at FROM pairings WHERE mailbox = $1",
        )
        .await?;
    let Some(row) = client.query_opt(&statement, &[&mailbox]).await? else {
        return Ok(Ok(None));
    };
    let guest: Option<&[u8]> = row.try_get(1)?;
    Ok(Ok(Some(PairingRecord {
        host_hash: hash32(row.try_get(0)?, "pairing token hash length")?,
        guest_hash: guest
            .map(|g| hash32(g, "pairing token hash length"))
            .transpose()?,
        state: state_of(row.try_get(2)?, row.try_get(3)?, now)?,
        expires_at: nonneg(row.try_get(3)?),
    })))
}

pub(super) async fn post(
    shared: Arc<Shared>,
    mailbox: String,
    side: PairingSide,
    body: Vec<u8>,
    now: u64,
) -> Outcome<u64> {
    let mut client = shared.client().await?;
    let tx = client.transaction().await?;
    let Some((state, expires_at)) = lock(&tx, &mailbox).await? else {
        return Ok(Err(StorageError::PairingUnknown));
    };
    match state_of(state, expires_at, now)? {
        PairingState::Open | PairingState::Claimed => {}
        PairingState::Expired => return Ok(Err(StorageError::PairingExpired)),
        PairingState::Closed | PairingState::Burned => {
            return Ok(Err(StorageError::PairingClosed));
        }
    }
    let side_db = i16::from(side == PairingSide::Guest);
    let count: i64 = tx
        .query_one(
            "SELECT count(*) FROM pairing_messages WHERE mailbox = $1 AND side = $2",
            &[&mailbox, &side_db],
        )
        .await?
        .try_get(0)?;
    let count = nonneg(count);
    if count >= MAX_MESSAGES_PER_SIDE {
        return Ok(Err(StorageError::PairingFull {
            max: MAX_MESSAGES_PER_SIDE,
        }));
    }
    let seq = count.saturating_add(1);
    tx.execute(
        "INSERT INTO pairing_messages (mailbox, side, seq, body) VALUES ($1, $2, $3, $4)",
        &[&mailbox, &side_db, &to_db(seq), &body],
    )
    .await?;
    tx.commit().await?;
    Ok(Ok(seq))
}

pub(super) async fn inbox(
    shared: Arc<Shared>,
    mailbox: String,
    reader: PairingSide,
    after: u64,
    now: u64,
) -> Outcome<PairingInbox> {
    let mut client = shared.client().await?;
    // One snapshot for the state and the messages.
    let tx = client
        .build_transaction()
        .isolation_level(tokio_postgres::IsolationLevel::RepeatableRead)
        .read_only(true)
        .start()
        .await?;
    let Some(row) = tx
        .query_opt(
            "SELECT state, expires_at FROM pairings WHERE mailbox = $1",
            &[&mailbox],
        )
        .await?
    else {
        return Ok(Err(StorageError::PairingUnknown));
    };
    let state = state_of(row.try_get(0)?, row.try_get(1)?, now)?;
    let mut messages = Vec::new();
    if state.is_live() {
        let side = i16::from(reader.other() == PairingSide::Guest);
        let after = i64::try_from(after).unwrap_or(i64::MAX);
        for row in tx
            .query(
                "SELECT seq, body FROM pairing_messages WHERE mailbox = $1 AND side = $2 AND seq > $3
                 ORDER BY seq LIMIT $4",
                &[&mailbox, &side, &after, &to_db(MAX_MESSAGES_PER_SIDE)],
            )
            .await?
        {
            messages.push(PairingMessage {
                seq: nonneg(row.try_get(0)?),
                body: row.try_get(1)?,
            });
        }
    }
    tx.commit().await?;
    Ok(Ok(PairingInbox { state, messages }))
}

pub(super) async fn close(
    shared: Arc<Shared>,
    mailbox: String,
    burn: bool,
    now: u64,
) -> Outcome<Option<PairingState>> {
    let mut client = shared.client().await?;
    let tx = client.transaction().await?;
    let Some((state, expires_at)) = lock(&tx, &mailbox).await? else {
        return Ok(Err(StorageError::PairingUnknown));
    };
    let target = match (state_of(state, expires_at, now)?, burn) {
        (PairingState::Burned | PairingState::Expired, _) | (PairingState::Closed, false) => None,
        (_, true) => Some(PairingState::Burned),
        (_, false) => Some(PairingState::Closed),
    };
    if let Some(target) = target {
        tx.execute(
            "UPDATE pairings SET state = $2 WHERE mailbox = $1",
            &[&mailbox, &i16::from(target.to_u8())],
        )
        .await?;
    }
    tx.execute(
        "DELETE FROM pairing_messages WHERE mailbox = $1",
        &[&mailbox],
    )
    .await?;
    tx.commit().await?;
    Ok(Ok(target))
}

pub(super) async fn sweep(
    shared: Arc<Shared>,
    now: u64,
    linger: Duration,
) -> Outcome<PairingSwept> {
    let mut client = shared.client().await?;
    let tx = client.transaction().await?;
    let now = to_db(now);
    tx.execute(
        "DELETE FROM pairing_messages WHERE mailbox IN
             (SELECT mailbox FROM pairings WHERE expires_at <= $1)",
        &[&now],
    )
    .await?;
    let expired = tx
        .execute(
            "UPDATE pairings SET state = 4 WHERE state < 2 AND expires_at <= $1",
            &[&now],
        )
        .await?;
    let forgotten = tx
        .execute(
            "DELETE FROM pairings WHERE expires_at <= $1",
            &[&now.saturating_sub(i64::try_from(linger.as_secs()).unwrap_or(i64::MAX))],
        )
        .await?;
    tx.commit().await?;
    Ok(Ok(PairingSwept { expired, forgotten }))
}
