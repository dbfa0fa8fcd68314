//! Pairing mailboxes in storage: the types both backends share and the rules they apply alike.
//!
//! A mailbox is one row (its id, the SHA-256 of each side's token, its state and expiry) and at
//! most [`MAX_PAIRING_MESSAGES`] opaque messages per side. It lives in the storage backend, not
//! in memory, so several relay instances sharing PostgreSQL serve one mailbox. Times are passed
//! in (unix seconds) rather than read from the clock, so expiry is tested without sleeping.

use std::time::Duration;

use mend_protocol::{MAX_PAIRING_MESSAGES, PairingState};

use super::TokenHash;

/// How long the state of a mailbox (never its messages) is kept after its expiry, so a late
/// caller learns it was closed, burned or expired instead of unknown.
pub const PAIRING_LINGER: Duration = Duration::from_secs(3600);

/// Most messages one side may post, as storage enforces it.
pub const MAX_MESSAGES_PER_SIDE: u64 = MAX_PAIRING_MESSAGES as u64;

/// The ranges short mailbox numbers are drawn from, fewest digits first.
pub(crate) const SHORT_TIERS: [(u64, u64); 5] = [
    (1, 99),
    (100, 999),
    (1000, 9999),
    (10_000, 99_999),
    (100_000, 999_999),
];

/// Which device of a mailbox: the one that opened it or the one that claimed it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum PairingSide {
    /// The inviting device, which opened the mailbox.
    Host,
    /// The joining device, which claimed it.
    Guest,
}

impl PairingSide {
    /// The other device.
    pub fn other(self) -> PairingSide {
        match self {
            PairingSide::Host => PairingSide::Guest,
            PairingSide::Guest => PairingSide::Host,
        }
    }

    /// As stored in the `side` column.
    pub(crate) fn to_db(self) -> i64 {
        match self {
            PairingSide::Host => 0,
            PairingSide::Guest => 1,
        }
    }
}

/// The id a new mailbox gets.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum MailboxChoice {
    /// A short number: the backend picks the `pick`-th (modulo) free number of the first
    /// range of [`SHORT_TIERS`] that has one, so numbers are random among the free ones and
    /// as short as they can be.
    Short {
        /// A random number from the caller.
        pick: u64,
    },
    /// This long id (32 random hex digits from the caller).
    Long(String),
}

/// A mailbox to allocate.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NewPairing {
    /// How its id is chosen.
    pub choice: MailboxChoice,
    /// SHA-256 of the host's token.
    pub host_hash: TokenHash,
    /// Now, in unix seconds.
    pub now: u64,
    /// When it expires, in unix seconds.
    pub expires_at: u64,
    /// Most mailboxes open or claimed and not expired at once, across the relay;
    /// [`super::StorageError::PairingsFull`] beyond it.
    pub max_live: u64,
}

/// What storage holds about a mailbox, for authentication and answers.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PairingRecord {
    /// SHA-256 of the host's token.
    pub host_hash: TokenHash,
    /// SHA-256 of the guest's token, once claimed.
    pub guest_hash: Option<TokenHash>,
    /// Its state at the time asked about (expired once past `expires_at`, unless closed).
    pub state: PairingState,
    /// When it expires, in unix seconds.
    pub expires_at: u64,
}

/// What one [`super::Storage::sweep_pairings`] did.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct PairingSwept {
    /// Open or claimed mailboxes found past their expiry and marked expired (their messages
    /// deleted).
    pub expired: u64,
    /// Mailboxes forgotten entirely, [`PAIRING_LINGER`] after their expiry.
    pub forgotten: u64,
}

/// A stored state byte seen at `now`: open or claimed turn expired past `expires_at`; closed,
/// burned and expired stay as they are. `None` for a byte no state uses.
pub(crate) fn state_at(stored: i64, expires_at: u64, now: u64) -> Option<PairingState> {
    let state = PairingState::from_u8(u8::try_from(stored).ok()?)?;
    Some(if state.is_live() && now >= expires_at {
        PairingState::Expired
    } else {
        state
    })
}

/// The `pick`-th (modulo the free count) number in `lo..=hi` not in `taken` (sorted, distinct,
/// all within the range); `None` when every number is taken.
pub(crate) fn pick_free(lo: u64, hi: u64, taken: &[u64], pick: u64) -> Option<u64> {
    let size = hi.checked_sub(lo)?.checked_add(1)?;
    let free = size.checked_sub(taken.len() as u64)?;
    if free == 0 {
        return None;
    }
    let mut candidate = lo.checked_add(pick % free)?;
    for &number in taken {
        if number <= candidate {
            candidate = candidate.checked_add(1)?;
        } else {
            break;
        }
    }
    (candidate <= hi).then_some(candidate)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn picks_walk_over_taken_numbers() {
        assert_eq!(pick_free(1, 5, &[], 0), Some(1));
        assert_eq!(pick_free(1, 5, &[1, 2], 0), Some(3));
        assert_eq!(pick_free(1, 5, &[1, 3], 1), Some(4));
        assert_eq!(pick_free(1, 5, &[1, 3], 2), Some(5));
        assert_eq!(pick_free(1, 5, &[1, 3], 3), Some(2));
        assert_eq!(pick_free(1, 3, &[1, 2, 3], 7), None);
        // Every free number is reachable, and nothing else.
        let taken = [2, 3, 7];
        let mut seen: Vec<u64> = (0..6).filter_map(|p| pick_free(1, 9, &taken, p)).collect();
        seen.sort_unstable();
        assert_eq!(seen, [1, 4, 5, 6, 8, 9]);
    }

    #[test]
    fn live_states_expire_and_ended_ones_stay() {
        assert_eq!(state_at(0, 10, 9), Some(PairingState::Open));
        assert_eq!(state_at(1, 10, 10), Some(PairingState::Expired));
        assert_eq!(state_at(2, 10, 99), Some(PairingState::Closed));
        assert_eq!(state_at(3, 10, 99), Some(PairingState::Burned));
        assert_eq!(state_at(7, 10, 0), None);
    }
}
