//! The pairing tokens this instance handed out, or saw a mailbox accept, until their mailbox
//! expires, kept by mailbox and hash: a token counts only for its own mailbox, so one a guesser
//! got by opening a mailbox of their own does not let them past the check on any other.
//!
//! A request that carries one comes from a side of a pairing, not from someone guessing, so it
//! is read even when its address has spent its allowance of failed pairing tokens (which a
//! guesser on the same network, or a mistyped code, may have spent); any other token from such
//! an address is refused before the mailbox is read. Knowing a token proves nothing: it is still
//! checked against the mailbox's record.

use std::sync::{Mutex, PoisonError};

use crate::{rate::SweptMap, storage::TokenHash};

/// (Mailbox, token hash) with the unix second the mailbox expires.
#[derive(Debug)]
pub struct PairingTokens {
    expiries: Mutex<SweptMap<(String, TokenHash), u64>>,
}

impl Default for PairingTokens {
    fn default() -> Self {
        PairingTokens {
            expiries: Mutex::new(SweptMap::new()),
        }
    }
}

impl PairingTokens {
    /// Keeps `hash` until `expires_at`. Only tokens of real mailboxes are kept (handed out, or
    /// accepted by one), so the map holds at most two per mailbox opened within its lifetime,
    /// and forgets the expired ones as it grows.
    pub fn remember(&self, mailbox: &str, hash: TokenHash, expires_at: u64, now: u64) {
        let mut expiries = self.expiries.lock().unwrap_or_else(PoisonError::into_inner);
        let kept = expiries.get_or_insert_with(
            (mailbox.to_owned(), hash),
            |_, expiry| *expiry < now,
            || expires_at,
        );
        *kept = expires_at.max(*kept);
    }

    /// Whether `hash` is a token kept for `mailbox` and the mailbox not yet expired at `now`.
    pub fn knows(&self, mailbox: &str, hash: &TokenHash, now: u64) -> bool {
        self.expiries
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .get_mut(&(mailbox.to_owned(), *hash))
            .is_some_and(|expiry| *expiry >= now)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn knows_a_token_until_its_mailbox_expires() {
        let tokens = PairingTokens::default();
        tokens.remember("m", [1; 32], 100, 10);
        assert!(tokens.knows("m", &[1; 32], 100));
        assert!(!tokens.knows("m", &[1; 32], 101), "expired");
        assert!(!tokens.knows("m", &[2; 32], 10), "never kept");
        assert!(!tokens.knows("n", &[1; 32], 10), "kept for another mailbox");
    }
}
