//! The pairing mailbox: `POST /v1/pairings` opens one, `POST …/{mailbox}/claim` claims it,
//! `POST`/`GET …/{mailbox}/messages` exchange messages, `DELETE …/{mailbox}` closes it.
//!
//! Opening and claiming take no token: they hand one out, a fresh 32 random bytes per side, of
//! which storage keeps only the SHA-256. They are rate-limited per client address instead, so
//! short mailbox numbers cannot be found by trying them all. Every other route takes
//! `Authorization: Bearer <64 hex digits>`, and the token says which side is asking; a wrong
//! token and a mailbox that does not exist are answered alike, and spend the same per-address
//! allowance, after which a token this instance does not know as a side's is refused before
//! the mailbox is read ([`crate::pairing_tokens`]). Neither tokens, nor bodies, nor mailbox
//! ids are logged.

use std::time::Duration;

use axum::{
    body::{Body, Bytes},
    extract::{FromRequestParts, Path, Query, State},
    http::{HeaderMap, StatusCode, header, request::Parts},
    response::{IntoResponse, Response},
};
use mend_protocol::{
    DecodeError, ErrorCode, Limits, MAX_PAIRING_MESSAGE, PAIRING_TOKEN_LEN, PairingOpen,
    PairingPost, PairingState, PairingTicket,
    paths::{MAX_PAIRING_WAIT_SECS, is_mailbox_id},
};
use serde::Deserialize;
use sha2::{Digest, Sha256};
use subtle::{Choice, ConstantTimeEq};

use super::{ClientAddress, frame, write_share};
use crate::{
    auth::bearer,
    error::ApiError,
    rate::RateLimiter,
    state::AppState,
    storage::{
        PairingRecord, PairingSide, StorageError, TokenHash, pairing::MailboxChoice, unix_now,
    },
    wakeups::POLL,
};

/// Largest `PairingOpen` or `PairingPost` request body: version, kind, a two-byte length and
/// the largest message.
const MAX_POST_FRAME: usize = 2 + 2 + MAX_PAIRING_MESSAGE;
/// Tries at a fresh long mailbox id when a random one is taken (never, in practice).
const LONG_ID_TRIES: usize = 3;

/// A pairing token: 32 random bytes.
type PairingToken = [u8; PAIRING_TOKEN_LEN];

/// The `{mailbox}` a request names, checked against the forms the relay hands out.
#[derive(Debug, Clone)]
pub(super) struct MailboxParam(String);

impl<S: Send + Sync> FromRequestParts<S> for MailboxParam {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, ApiError> {
        let malformed = || {
            ApiError::new(
                ErrorCode::Malformed,
                "bad mailbox id: 1 to 6 digits without a leading zero, or 32 lowercase hex",
            )
        };
        let Path(raw) = Path::<String>::from_request_parts(parts, state)
            .await
            .map_err(|_| malformed())?;
        if !is_mailbox_id(&raw) {
            return Err(malformed());
        }
        Ok(Self(raw))
    }
}

/// The `after` and `wait` query of an inbox read.
#[derive(Debug, Default, Deserialize)]
pub(super) struct InboxQuery {
    #[serde(default)]
    after: u64,
    #[serde(default)]
    wait: u64,
}

/// The `burn` query of a close.
#[derive(Debug, Default, Deserialize)]
pub(super) struct CloseQuery {
    #[serde(default)]
    burn: bool,
}

fn generate_bytes<const N: usize>() -> Result<[u8; N], ApiError> {
    let mut bytes = [0u8; N];
    getrandom::fill(&mut bytes).map_err(|e| ApiError::internal(&e))?;
    Ok(bytes)
}

fn generate_token() -> Result<PairingToken, ApiError> {
    generate_bytes()
}

fn token_hash(token: &PairingToken) -> TokenHash {
    Sha256::digest(token).into()
}

/// Which side `presented` (a token's hash) belongs to. Both hashes are always compared, in
/// constant time, so timing says nothing about either.
fn side_of(record: &PairingRecord, presented: &TokenHash) -> Option<PairingSide> {
    let host = record.host_hash.ct_eq(presented);
    let guest = record
        .guest_hash
        .map_or(Choice::from(0), |guest| guest.ct_eq(presented));
    if bool::from(host) {
        Some(PairingSide::Host)
    } else if bool::from(guest) {
        Some(PairingSide::Guest)
    } else {
        None
    }
}

/// What a request naming no existing mailbox is checked against, so it takes the same steps,
/// and gets the same answer, as a wrong token: otherwise which short numbers are open could be
/// read off the answers without spending the claim limit. No token hashes to all zeros.
const NO_MAILBOX: PairingRecord = PairingRecord {
    host_hash: [0; 32],
    guest_hash: Some([0; 32]),
    state: PairingState::Expired,
    expires_at: 0,
};

/// What a request refused for its address's failed pairing tokens is told.
const TOO_MANY_FAILURES: &str = "too many failed pairing attempts from this address";

/// The side whose token the request carries, and the mailbox's record. A wrong token and an
/// unknown mailbox are answered alike, and each failure takes one of the address's claim
/// tokens: guessing by either route costs the same. Once they are spent, a token this instance
/// does not know as a side's is refused before the mailbox is read.
async fn authenticate(
    state: &AppState,
    mailbox: &str,
    headers: &HeaderMap,
    address: ClientAddress,
) -> Result<(PairingSide, PairingRecord), ApiError> {
    let token = bearer(headers)?;
    let mut raw = [0u8; PAIRING_TOKEN_LEN];
    hex::decode_to_slice(token.expose(), &mut raw)
        .map_err(|_| ApiError::new(ErrorCode::Unauthorized, "a pairing token is 64 hex digits"))?;
    let presented = token_hash(&raw);
    let now = unix_now();
    if !state.pairing_tokens().knows(mailbox, &presented, now) {
        refuse_if_spent(state.pairing_claims(), address, TOO_MANY_FAILURES)?;
    }
    let record = state.storage().pairing(mailbox.to_owned(), now).await?;
    let side = side_of(record.as_ref().unwrap_or(&NO_MAILBOX), &presented);
    match (side, record) {
        (Some(side), Some(record)) => {
            // Known from now on, so this side is served on this instance whatever its
            // address's failures (it may have been handed out by another one).
            state
                .pairing_tokens()
                .remember(mailbox, presented, record.expires_at, now);
            Ok((side, record))
        }
        _ => {
            limit_address(state.pairing_claims(), address, TOO_MANY_FAILURES)?;
            Err(ApiError::new(
                ErrorCode::Unauthorized,
                "wrong token for this pairing mailbox",
            ))
        }
    }
}

/// Takes one request from `address`'s bucket in `limiter` (none without an address: a request
/// that reached the router in-process).
pub(super) fn limit_address(
    limiter: &RateLimiter<[u8; 32]>,
    ClientAddress(address): ClientAddress,
    what: &'static str,
) -> Result<(), ApiError> {
    let Some(address) = address else {
        return Ok(());
    };
    limiter
        .check(&address)
        .map_err(|wait| rate_limited(what, wait))
}

/// Refuses the request if `address`'s bucket in `limiter` is empty, without taking from it:
/// checked before a read whose outcome decides whether to charge the address.
fn refuse_if_spent(
    limiter: &RateLimiter<[u8; 32]>,
    ClientAddress(address): ClientAddress,
    what: &'static str,
) -> Result<(), ApiError> {
    match address.and_then(|address| limiter.spent(&address)) {
        Some(wait) => Err(rate_limited(what, wait)),
        None => Ok(()),
    }
}

fn rate_limited(what: &'static str, wait: Duration) -> ApiError {
    ApiError::new(ErrorCode::RateLimited, what).retry_after(wait.max(Duration::from_secs(1)))
}

/// Reads a small frame body of at most `limit` bytes within the body timeout.
pub(super) async fn read_small_body(
    state: &AppState,
    headers: &HeaderMap,
    body: Body,
    limit: usize,
) -> Result<Bytes, ApiError> {
    let too_large = || {
        ApiError::too_large(
            ErrorCode::Malformed,
            format!("request body exceeds {limit} bytes"),
        )
    };
    let declared = headers
        .get(header::CONTENT_LENGTH)
        .and_then(|value| value.to_str().ok())
        .and_then(|value| value.parse::<u64>().ok());
    if declared.is_some_and(|len| len > limit as u64) {
        return Err(too_large());
    }
    match tokio::time::timeout(
        state.config().limits.body_timeout,
        axum::body::to_bytes(body, limit),
    )
    .await
    {
        Err(_) => Err(ApiError::body_timeout()),
        Ok(Err(_)) => Err(too_large()),
        Ok(Ok(bytes)) => Ok(bytes),
    }
}

fn ticket(mailbox: String, token: PairingToken, expires_at: u64) -> Response {
    frame(
        PairingTicket {
            mailbox,
            token,
            expires_at,
        }
        .to_bytes(),
    )
}

/// Opens a mailbox: `201` and the host's ticket.
pub(super) async fn open(
    State(state): State<AppState>,
    address: ClientAddress,
    headers: HeaderMap,
    body: Body,
) -> Result<Response, ApiError> {
    limit_address(
        state.pairing_opens(),
        address,
        "too many pairing mailboxes opened from this address",
    )?;
    let bytes = read_small_body(&state, &headers, body, MAX_POST_FRAME).await?;
    let open = PairingOpen::decode(&bytes, &Limits::DEFAULT)
        .map_err(|e| ApiError::from_decode(e, ErrorCode::Malformed))?;
    let _share = write_share(&state, address)?;
    let limits = &state.config().limits;
    let token = generate_token()?;
    let now = unix_now();
    let expires_at = now.saturating_add(limits.pairing_ttl.as_secs());
    let mut tries = 0;
    let mailbox = loop {
        let choice = if open.short {
            MailboxChoice::Short {
                pick: u64::from_le_bytes(generate_bytes()?),
            }
        } else {
            MailboxChoice::Long(hex::encode(generate_bytes::<16>()?))
        };
        let new = crate::storage::NewPairing {
            choice,
            host_hash: token_hash(&token),
            now,
            expires_at,
            max_live: limits.max_live_pairings,
        };
        match state.storage().open_pairing(new).await {
            Err(StorageError::PairingUsed) if tries + 1 < LONG_ID_TRIES => tries += 1,
            other => break other?,
        }
    };
    state
        .pairing_tokens()
        .remember(&mailbox, token_hash(&token), expires_at, now);
    state.metrics().pairing(PairingState::Open);
    tracing::info!(short = open.short, "pairing mailbox opened");
    Ok((StatusCode::CREATED, ticket(mailbox, token, expires_at)).into_response())
}

/// Claims a mailbox: `200` and the guest's ticket, for the first claim only.
pub(super) async fn claim(
    State(state): State<AppState>,
    MailboxParam(mailbox): MailboxParam,
    address: ClientAddress,
) -> Result<Response, ApiError> {
    limit_address(
        state.pairing_claims(),
        address,
        "too many pairing claims from this address",
    )?;
    let _share = write_share(&state, address)?;
    let token = generate_token()?;
    let now = unix_now();
    let expires_at = state
        .storage()
        .claim_pairing(mailbox.clone(), token_hash(&token), now)
        .await?;
    state
        .pairing_tokens()
        .remember(&mailbox, token_hash(&token), expires_at, now);
    state.metrics().pairing(PairingState::Claimed);
    state.pairing_wakeups().wake(&mailbox);
    tracing::info!("pairing mailbox claimed");
    Ok(ticket(mailbox, token, expires_at))
}

/// Leaves a message for the other side: `204`.
pub(super) async fn post(
    State(state): State<AppState>,
    MailboxParam(mailbox): MailboxParam,
    address: ClientAddress,
    headers: HeaderMap,
    body: Body,
) -> Result<StatusCode, ApiError> {
    let (side, _) = authenticate(&state, &mailbox, &headers, address).await?;
    let bytes = read_small_body(&state, &headers, body, MAX_POST_FRAME).await?;
    let post = PairingPost::decode(&bytes, &Limits::DEFAULT).map_err(|e| match e {
        DecodeError::TooLarge { field: "body", .. } => ApiError::too_large(
            ErrorCode::Malformed,
            format!("a pairing message holds at most {MAX_PAIRING_MESSAGE} bytes"),
        ),
        other => ApiError::from_decode(other, ErrorCode::Malformed),
    })?;
    let _share = write_share(&state, address)?;
    state
        .storage()
        .post_pairing(mailbox.clone(), side, post.body, unix_now())
        .await?;
    state.pairing_wakeups().wake(&mailbox);
    Ok(StatusCode::NO_CONTENT)
}

/// Reads the other side's messages after `after`, waiting up to `wait` seconds (at most
/// [`MAX_PAIRING_WAIT_SECS`]) while there are none and the mailbox is open or claimed. The
/// wait polls storage, so a message posted through another instance is seen too; one posted
/// here wakes it at once.
pub(super) async fn read(
    State(state): State<AppState>,
    MailboxParam(mailbox): MailboxParam,
    address: ClientAddress,
    headers: HeaderMap,
    query: Result<Query<InboxQuery>, axum::extract::rejection::QueryRejection>,
) -> Result<Response, ApiError> {
    let Query(query) = query.map_err(|_| {
        ApiError::new(
            ErrorCode::Malformed,
            "bad query: after and wait are non-negative integers",
        )
    })?;
    let (side, _) = authenticate(&state, &mailbox, &headers, address).await?;
    let wait = Duration::from_secs(query.wait.min(MAX_PAIRING_WAIT_SECS));
    let deadline = tokio::time::Instant::now() + wait;
    let notify = state.pairing_wakeups().subscribe(&mailbox);
    loop {
        // Registered before the read, so a post between the read and the wait is not missed.
        let woken = notify.notified();
        tokio::pin!(woken);
        woken.as_mut().enable();
        let inbox = state
            .storage()
            .read_pairing(mailbox.clone(), side, query.after, unix_now())
            .await?;
        let now = tokio::time::Instant::now();
        if !inbox.messages.is_empty() || !inbox.state.is_live() || now >= deadline {
            return Ok(frame(inbox.to_bytes()));
        }
        tokio::select! {
            () = &mut woken => {}
            () = tokio::time::sleep_until((now + POLL).min(deadline)) => {}
            () = state.shutdown().cancelled() => return Ok(frame(inbox.to_bytes())),
        }
    }
}

/// Closes (or burns) the mailbox and deletes every message: `204`, again and again. Closing
/// again is answered from the read alone, without a write: a closed or burned mailbox holds no
/// messages. Any other close is a write like the rest, within the write queue and the address's
/// share of it.
pub(super) async fn close(
    State(state): State<AppState>,
    MailboxParam(mailbox): MailboxParam,
    address: ClientAddress,
    headers: HeaderMap,
    query: Result<Query<CloseQuery>, axum::extract::rejection::QueryRejection>,
) -> Result<StatusCode, ApiError> {
    let Query(query) = query
        .map_err(|_| ApiError::new(ErrorCode::Malformed, "bad query: burn is true or false"))?;
    let (_, record) = authenticate(&state, &mailbox, &headers, address).await?;
    let unchanged = match record.state {
        PairingState::Burned => true,
        PairingState::Closed => !query.burn,
        PairingState::Open | PairingState::Claimed | PairingState::Expired => false,
    };
    if unchanged {
        return Ok(StatusCode::NO_CONTENT);
    }
    let _share = write_share(&state, address)?;
    let moved = state
        .storage()
        .close_pairing(mailbox.clone(), query.burn, unix_now())
        .await?;
    if let Some(to) = moved {
        state.metrics().pairing(to);
        tracing::info!(burned = query.burn, "pairing mailbox closed");
    }
    state.pairing_wakeups().wake(&mailbox);
    Ok(StatusCode::NO_CONTENT)
}
