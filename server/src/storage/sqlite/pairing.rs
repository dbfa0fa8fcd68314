//! Pairing mailboxes in SQLite: writes run on the writer thread inside its group commit, reads
//! on the read pool.

use mend_protocol::{PairingInbox, PairingMessage, PairingState};
use rusqlite::{Connection, OptionalExtension, Transaction, params};

use crate::storage::{
    StorageError, TokenHash,
    pairing::{
        MAX_MESSAGES_PER_SIDE, MailboxChoice, NewPairing, PairingRecord, PairingSide, PairingSwept,
        SHORT_TIERS, pick_free, state_at,
    },
};

/// A pairing write for the writer thread.
#[derive(Debug)]
pub(crate) enum PairingOp {
    Open(NewPairing),
    Claim {
        mailbox: String,
        guest_hash: TokenHash,
        now: u64,
    },
    Post {
        mailbox: String,
        side: PairingSide,
        body: Vec<u8>,
        now: u64,
    },
    Close {
        mailbox: String,
        burn: bool,
        now: u64,
    },
    Sweep {
        now: u64,
        linger: std::time::Duration,
    },
}

impl PairingOp {
    pub(crate) fn payload_len(&self) -> usize {
        match self {
            PairingOp::Post { body, .. } => body.len(),
            _ => 0,
        }
    }
}

/// What a pairing write answers.
#[derive(Debug)]
pub(crate) enum PairingDone {
    Opened(String),
    Claimed(u64),
    Posted(u64),
    Closed(Option<PairingState>),
    Swept(PairingSwept),
}

type Outcome = rusqlite::Result<Result<PairingDone, StorageError>>;

/// Unix seconds as stored (bit for bit in a signed column; the relay's times fit).
fn db(value: u64) -> i64 {
    i64::try_from(value).unwrap_or(i64::MAX)
}

fn hash(bytes: Vec<u8>) -> rusqlite::Result<TokenHash> {
    TokenHash::try_from(bytes).map_err(|_| {
        rusqlite::Error::FromSqlConversionFailure(
            32,
            rusqlite::types::Type::Blob,
            "token hash length".into(),
        )
    })
}

/// The stored (state byte, expiry) of a mailbox.
fn stored(conn: &Connection, mailbox: &str) -> rusqlite::Result<Option<(i64, u64)>> {
    conn.prepare_cached("SELECT state, expires_at FROM pairings WHERE mailbox = ?1")?
        .query_row([mailbox], |row| {
            Ok((
                row.get(0)?,
                u64::try_from(row.get::<_, i64>(1)?).unwrap_or(0),
            ))
        })
        .optional()
}

fn state_of(stored: i64, expires_at: u64, now: u64) -> rusqlite::Result<PairingState> {
    state_at(stored, expires_at, now).ok_or_else(|| {
        rusqlite::Error::FromSqlConversionFailure(
            1,
            rusqlite::types::Type::Integer,
            "unknown pairing state".into(),
        )
    })
}

/// Applies one pairing write inside the writer's transaction. Every refusal is decided before
/// anything is written, so it leaves the batch untouched.
pub(crate) fn apply(tx: &Transaction<'_>, op: PairingOp) -> Outcome {
    match op {
        PairingOp::Open(new) => open(tx, new),
        PairingOp::Claim {
            mailbox,
            guest_hash,
            now,
        } => claim(tx, &mailbox, guest_hash, now),
        PairingOp::Post {
            mailbox,
            side,
            body,
            now,
        } => post(tx, &mailbox, side, &body, now),
        PairingOp::Close { mailbox, burn, now } => close(tx, &mailbox, burn, now),
        PairingOp::Sweep { now, linger } => sweep(tx, now, linger),
    }
}

fn open(tx: &Transaction<'_>, new: NewPairing) -> Outcome {
    let live: i64 = tx
        .prepare_cached("SELECT count(*) FROM pairings WHERE state < 2 AND expires_at > ?1")?
        .query_row([db(new.now)], |row| row.get(0))?;
    let live = u64::try_from(live).unwrap_or(0);
    if live >= new.max_live {
        return Ok(Err(StorageError::PairingsFull { live }));
    }
    let (mailbox, number) = match new.choice {
        MailboxChoice::Long(id) => (id, None),
        MailboxChoice::Short { pick } => {
            let mut found = None;
            for (lo, hi) in SHORT_TIERS {
                let taken = tx
                    .prepare_cached(
                        "SELECT number FROM pairings WHERE number BETWEEN ?1 AND ?2 ORDER BY number",
                    )?
                    .query_map([db(lo), db(hi)], |row| row.get::<_, i64>(0))?
                    .map(|n| n.map(|n| u64::try_from(n).unwrap_or(0)))
                    .collect::<rusqlite::Result<Vec<u64>>>()?;
                if let Some(number) = pick_free(lo, hi, &taken, pick) {
                    found = Some(number);
                    break;
                }
            }
            let Some(number) = found else {
                return Ok(Err(StorageError::PairingsFull { live }));
            };
            (number.to_string(), Some(db(number)))
        }
    };
    let inserted = tx
        .prepare_cached(
            "INSERT INTO pairings (mailbox, number, host_hash, guest_hash, state, expires_at, created_at)
             VALUES (?1, ?2, ?3, NULL, 0, ?4, ?5) ON CONFLICT DO NOTHING",
        )?
        .execute(params![
            mailbox,
            number,
            &new.host_hash[..],
            db(new.expires_at),
            db(new.now)
        ])?;
    if inserted == 0 {
        return Ok(Err(StorageError::PairingUsed));
    }
    Ok(Ok(PairingDone::Opened(mailbox)))
}

fn claim(tx: &Transaction<'_>, mailbox: &str, guest_hash: TokenHash, now: u64) -> Outcome {
    let Some((state, expires_at)) = stored(tx, mailbox)? else {
        return Ok(Err(StorageError::PairingUnknown));
    };
    match state_of(state, expires_at, now)? {
        PairingState::Open => {}
        PairingState::Expired if state == 0 || state == 4 => {
            return Ok(Err(StorageError::PairingExpired));
        }
        _ => return Ok(Err(StorageError::PairingUsed)),
    }
    tx.prepare_cached("UPDATE pairings SET state = 1, guest_hash = ?2 WHERE mailbox = ?1")?
        .execute(params![mailbox, &guest_hash[..]])?;
    Ok(Ok(PairingDone::Claimed(expires_at)))
}

fn post(tx: &Transaction<'_>, mailbox: &str, side: PairingSide, body: &[u8], now: u64) -> Outcome {
    let Some((state, expires_at)) = stored(tx, mailbox)? else {
        return Ok(Err(StorageError::PairingUnknown));
    };
    match state_of(state, expires_at, now)? {
        PairingState::Open | PairingState::Claimed => {}
        PairingState::Expired => return Ok(Err(StorageError::PairingExpired)),
        PairingState::Closed | PairingState::Burned => {
            return Ok(Err(StorageError::PairingClosed));
        }
    }
    let count: i64 = tx
        .prepare_cached("SELECT count(*) FROM pairing_messages WHERE mailbox = ?1 AND side = ?2")?
        .query_row(params![mailbox, side.to_db()], |row| row.get(0))?;
    let count = u64::try_from(count).unwrap_or(0);
    if count >= MAX_MESSAGES_PER_SIDE {
        return Ok(Err(StorageError::PairingFull {
            max: MAX_MESSAGES_PER_SIDE,
        }));
    }
    let seq = count.saturating_add(1);
    tx.prepare_cached(
        "INSERT INTO pairing_messages (mailbox, side, seq, body) VALUES (?1, ?2, ?3, ?4)",
    )?
    .execute(params![mailbox, side.to_db(), db(seq), body])?;
    Ok(Ok(PairingDone::Posted(seq)))
}

fn close(tx: &Transaction<'_>, mailbox: &str, burn: bool, now: u64) -> Outcome {
    let Some((state, expires_at)) = stored(tx, mailbox)? else {
        return Ok(Err(StorageError::PairingUnknown));
    };
    let target = match (state_of(state, expires_at, now)?, burn) {
        (PairingState::Burned | PairingState::Expired, _) | (PairingState::Closed, false) => None,
        (_, true) => Some(PairingState::Burned),
        (_, false) => Some(PairingState::Closed),
    };
    if let Some(target) = target {
        tx.prepare_cached("UPDATE pairings SET state = ?2 WHERE mailbox = ?1")?
            .execute(params![mailbox, i64::from(target.to_u8())])?;
    }
    tx.prepare_cached("DELETE FROM pairing_messages WHERE mailbox = ?1")?
        .execute([mailbox])?;
    Ok(Ok(PairingDone::Closed(target)))
}

fn sweep(tx: &Transaction<'_>, now: u64, linger: std::time::Duration) -> Outcome {
    let now = db(now);
    tx.prepare_cached(
        "DELETE FROM pairing_messages WHERE mailbox IN
             (SELECT mailbox FROM pairings WHERE expires_at <= ?1)",
    )?
    .execute([now])?;
    let expired = tx
        .prepare_cached("UPDATE pairings SET state = 4 WHERE state < 2 AND expires_at <= ?1")?
        .execute([now])?;
    let forgotten = tx
        .prepare_cached("DELETE FROM pairings WHERE expires_at <= ?1")?
        .execute([now.saturating_sub(db(linger.as_secs()))])?;
    Ok(Ok(PairingDone::Swept(PairingSwept {
        expired: expired as u64,
        forgotten: forgotten as u64,
    })))
}

/// The mailbox's record at `now`.
pub(crate) fn record(
    conn: &mut Connection,
    mailbox: &str,
    now: u64,
) -> rusqlite::Result<Result<Option<PairingRecord>, StorageError>> {
    let row = conn
        .prepare_cached(
            "SELECT host_hash, guest_hash, state, expires_at FROM pairings WHERE mailbox = ?1",
        )?
        .query_row([mailbox], |row| {
            Ok((
                row.get::<_, Vec<u8>>(0)?,
                row.get::<_, Option<Vec<u8>>>(1)?,
                row.get::<_, i64>(2)?,
                u64::try_from(row.get::<_, i64>(3)?).unwrap_or(0),
            ))
        })
        .optional()?;
    let Some((host, guest, state, expires_at)) = row else {
        return Ok(Ok(None));
    };
    Ok(Ok(Some(PairingRecord {
        host_hash: hash(host)?,
        guest_hash: guest.map(hash).transpose()?,
        state: state_of(state, expires_at, now)?,
        expires_at,
    })))
}

/// The other side's messages after `after`, and the state, read in one transaction.
pub(crate) fn inbox(
    conn: &mut Connection,
    mailbox: &str,
    reader: PairingSide,
    after: u64,
    now: u64,
) -> rusqlite::Result<Result<PairingInbox, StorageError>> {
    let tx = conn.transaction()?;
    let Some((state, expires_at)) = stored(&tx, mailbox)? else {
        return Ok(Err(StorageError::PairingUnknown));
    };
    let state = state_of(state, expires_at, now)?;
    let mut messages = Vec::new();
    if state.is_live() {
        let mut statement = tx.prepare_cached(
            "SELECT seq, body FROM pairing_messages WHERE mailbox = ?1 AND side = ?2 AND seq > ?3
             ORDER BY seq LIMIT ?4",
        )?;
        let rows = statement.query_map(
            params![
                mailbox,
                reader.other().to_db(),
                db(after),
                db(MAX_MESSAGES_PER_SIDE)
            ],
            |row| {
                Ok(PairingMessage {
                    seq: u64::try_from(row.get::<_, i64>(0)?).unwrap_or(0),
                    body: row.get(1)?,
                })
            },
        )?;
        for message in rows {
            messages.push(message?);
        }
    }
    Ok(Ok(PairingInbox { state, messages }))
}
