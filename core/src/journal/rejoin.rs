//! Asking before a rejoin (docs/security.md, "A partner who lost every device rejoins").
//!
//! A rejoin replaces every device of one partner on the other partner's word alone, so it is
//! asked first, in the open: a device of the other partner writes an ask into the couple's
//! document (`rejoin_ask:<partner>`: who asked, when), every device of the partner it names
//! shows it, and any of them can cancel it. The asking partner's device lets a new device in
//! as that partner only once the ask has stood uncancelled for [`Journal::rejoin_wait`] since
//! this device saw it reach the relay ([`Journal::note_rejoin_asks`]): an ask made offline
//! waits from when the other partner's devices could first see it
//! ([`Journal::rotate_for_rejoin`]). Receivers refuse a rejoin announcement with no standing
//! ask in its past (`guard.rs`); the wait itself is the asking app's, kept by its clock. The
//! new epoch is built without the ask: it is spent.

use std::time::Duration;

use automerge::{
    ChangeHash, ObjType, ROOT, ReadDoc, ScalarValue, Value, transaction::Transactable,
};

use super::Journal;
use crate::{
    doc::SpaceDoc,
    error::{Error, Result},
    ids::PartnerId,
    store::Space,
};

/// Root keys of asks: `rejoin_ask:<partner id>`, the partner a rejoin would replace.
pub(crate) const ASK_KEY: &str = "rejoin_ask:";

/// When this device first saw its partner's standing ask at the relay: `<ask, hex>:<unix ms>`.
pub(crate) const META_ASK_SENT: &str = "rejoin_ask_sent";
/// When this device was first shown the other partner's ask naming this partner (after a
/// sync round or a live merge, by its own clock): `<ask, hex>:<unix ms>`.
pub(crate) const META_ASK_SEEN: &str = "rejoin_ask_seen";

/// The latest time an ask or a cancel may carry (9999-12-31, in unix ms): dates past it are
/// refused, so that nothing built from them overflows.
pub(crate) const LATEST_MS: i64 = 253_402_300_799_999;

/// How long an ask stands before the rejoin may go ahead, unless the app chose another wait:
/// long enough for a partner who still has a device (in a drawer, switched off for a weekend)
/// to see it and cancel.
pub const REJOIN_WAIT: Duration = Duration::from_secs(72 * 60 * 60);

/// An ask to let a new device in as `partner`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct RejoinAsk {
    /// The partner whose devices the rejoin would replace.
    pub partner: PartnerId,
    /// The partner who asked (the other one).
    pub asked_by: PartnerId,
    /// When (unix ms, the asking device's clock).
    pub at: i64,
    /// When a device of `partner` cancelled it (unix ms, that device's clock).
    pub cancelled_at: Option<i64>,
    /// For this partner's own ask: when this device first saw it at the relay (unix ms, this
    /// device's clock). The wait counts from then.
    pub sent_at: Option<i64>,
    /// For an ask naming this partner: when this device was first shown it (unix ms, this
    /// device's clock, after a round or as live sync brought it).
    pub shown_at: Option<i64>,
    /// Which ask this is (a hash of the Automerge object made for it): notes about an ask
    /// follow the ask itself, not its writer-chosen time.
    pub(crate) made: u64,
}

impl RejoinAsk {
    /// When the rejoin may go ahead, with `wait`: unknown until the ask reached the relay.
    pub fn ready_at(&self, wait: Duration) -> Option<i64> {
        let wait = i64::try_from(wait.as_millis()).unwrap_or(i64::MAX);
        self.sent_at.map(|sent| sent.saturating_add(wait))
    }

    /// Whether it stands (not cancelled) and has waited `wait` at the relay by `now`.
    pub fn is_ready(&self, now: i64, wait: Duration) -> bool {
        self.cancelled_at.is_none() && self.ready_at(wait).is_some_and(|ready| now >= ready)
    }
}

/// The ask naming `partner`, as the couple's document holds it (at `heads`, when given).
pub(crate) fn read_ask(
    doc: &SpaceDoc,
    partner: PartnerId,
    heads: Option<&[ChangeHash]>,
) -> Option<RejoinAsk> {
    let am = doc.am();
    let key = format!("{ASK_KEY}{partner}");
    let found = match heads {
        Some(h) => am.get_at(ROOT, key.as_str(), h),
        None => am.get(ROOT, key.as_str()),
    };
    let Ok(Some((Value::Object(ObjType::Map), obj))) = found else {
        return None;
    };
    let made = {
        use sha2::Digest;
        let digest = sha2::Sha256::digest(obj.to_string().as_bytes());
        let mut first = [0u8; 8];
        first.copy_from_slice(&digest[..8]);
        u64::from_be_bytes(first)
    };
    let scalar = |name: &str| {
        let value = match heads {
            Some(h) => am.get_at(&obj, name, h),
            None => am.get(&obj, name),
        };
        match value {
            Ok(Some((Value::Scalar(s), _))) => Some(s.into_owned()),
            _ => None,
        }
    };
    let asked_by = match scalar("by") {
        Some(ScalarValue::Str(s)) => s.parse().ok()?,
        _ => return None,
    };
    let at = match scalar("at") {
        Some(ScalarValue::Int(at)) if (0..=LATEST_MS).contains(&at) => at,
        _ => return None,
    };
    let cancelled_at = match scalar("cancelled") {
        Some(ScalarValue::Int(at)) => Some(at.clamp(0, LATEST_MS)),
        _ => None,
    };
    Some(RejoinAsk {
        partner,
        asked_by,
        at,
        cancelled_at,
        sent_at: None,
        shown_at: None,
        made,
    })
}

impl Journal {
    /// Asks to let a new device in as the other partner, who lost every device: every device
    /// of theirs will show the ask and can cancel it ([`Journal::cancel_rejoin`]). An ask
    /// already standing is answered as it is (its time is kept); one that was cancelled is
    /// asked again.
    pub fn ask_rejoin(&mut self) -> Result<RejoinAsk> {
        self.ready()?;
        let me = self.me;
        let Some(partner) = self.partner().map(|p| p.id) else {
            return Err(Error::Invalid(
                "your partner has not joined this journal yet".into(),
            ));
        };
        if let Some(ask) = self.rejoin_ask(partner)?
            && ask.asked_by == me
            && ask.cancelled_at.is_none()
        {
            return Ok(ask);
        }
        let now = self.now();
        let key = format!("{ASK_KEY}{partner}");
        let (_, bytes) = self.doc_mut(Space::Couple)?.transact(|tx, _| {
            let obj = tx.put_object(ROOT, key.as_str(), ObjType::Map)?;
            tx.put(&obj, "by", me.to_string())?;
            tx.put(&obj, "at", now)?;
            Ok(())
        })?;
        let changes = bytes.map(|b| vec![(Space::Couple, b)]).unwrap_or_default();
        self.persist(changes, &[])?;
        self.rejoin_ask(partner)?
            .ok_or_else(|| Error::Corrupt("an ask just written cannot be read back".into()))
    }

    /// Notes, after a sync round, when this partner's standing ask reached the relay (once
    /// nothing of the couple's waits to be pushed here: the wait counts from then; an ask
    /// another device of this partner made reached this one through the relay), and when this
    /// device was first shown an ask naming this partner (to tell, should a rejoin come, whether
    /// it came before this device had been shown the ask for the wait).
    pub fn note_rejoin_asks(&mut self) -> Result<()> {
        let me = self.me;
        if let Some(ask) = self.rejoin_ask(me)?
            && ask.cancelled_at.is_none()
            && self.ask_seen_at(&ask)?.is_none()
        {
            let noted = format!("{:016x}:{}", ask.made, self.now());
            self.store.set_meta(&[(META_ASK_SEEN, &noted)])?;
        }
        let Some(other) = self.partner().map(|p| p.id) else {
            return Ok(());
        };
        let Some(ask) = self.rejoin_ask(other)? else {
            return Ok(());
        };
        if ask.asked_by != me
            || ask.cancelled_at.is_some()
            || ask.sent_at.is_some()
            || self.store.pending_changes(Space::Couple)? > 0
        {
            return Ok(());
        }
        let noted = format!("{:016x}:{}", ask.made, self.now());
        self.store.set_meta(&[(META_ASK_SENT, &noted)])
    }

    /// When this device first saw `ask` (its own partner's) at the relay.
    fn ask_sent_at(&self, ask: &RejoinAsk) -> Result<Option<i64>> {
        Ok(noted_for(self.store.meta(META_ASK_SENT)?, ask.made))
    }

    /// When this device was first shown `ask` (naming this partner).
    pub(crate) fn ask_seen_at(&self, ask: &RejoinAsk) -> Result<Option<i64>> {
        Ok(noted_for(self.store.meta(META_ASK_SEEN)?, ask.made))
    }

    /// Cancels the standing ask to let a new device in as this partner: the other partner's
    /// devices will not go ahead with it (they may ask again, which every device of this
    /// partner shows again).
    pub fn cancel_rejoin(&mut self) -> Result<RejoinAsk> {
        self.ready()?;
        if self.replaced_here()? {
            return Err(Error::Invalid(
                "a new device already came in as you: this device has nothing left to cancel"
                    .into(),
            ));
        }
        let me = self.me;
        let nobody = || Error::Invalid("nobody asked to let a new device in as you".into());
        let Some(mut ask) =
            read_ask(self.doc(Space::Couple)?, me, None).filter(|ask| ask.cancelled_at.is_none())
        else {
            return Err(nobody());
        };
        let now = self.now();
        let key = format!("{ASK_KEY}{me}");
        let (_, bytes) =
            self.doc_mut(Space::Couple)?
                .transact(|tx, _| match tx.get(ROOT, key.as_str())? {
                    Some((Value::Object(ObjType::Map), obj)) => {
                        tx.put(&obj, "cancelled", now)?;
                        Ok(())
                    }
                    _ => Err(nobody()),
                })?;
        let changes = bytes.map(|b| vec![(Space::Couple, b)]).unwrap_or_default();
        self.persist(changes, &[])?;
        ask.cancelled_at = Some(now);
        Ok(ask)
    }

    /// The ask naming `partner`, if one was made in this epoch (cancelled or not).
    pub fn rejoin_ask(&self, partner: PartnerId) -> Result<Option<RejoinAsk>> {
        let Some(mut ask) = read_ask(self.doc(Space::Couple)?, partner, None) else {
            return Ok(None);
        };
        if ask.asked_by == self.me {
            ask.sent_at = self.ask_sent_at(&ask)?;
        }
        if ask.partner == self.me {
            ask.shown_at = self.ask_seen_at(&ask)?;
        }
        Ok(Some(ask))
    }

    /// How long an ask stands before this device lets the rejoin go ahead
    /// ([`REJOIN_WAIT`] unless set).
    pub fn rejoin_wait(&self) -> Duration {
        self.rejoin_wait
    }

    /// Sets that wait. The app decides it (a shorter one leaves a partner who still has a
    /// device less time to cancel); tests shorten it.
    pub fn set_rejoin_wait(&mut self, wait: Duration) {
        self.rejoin_wait = wait;
    }

    /// Why a rejoin of `partner` through this device may not go ahead now, in words, if it may
    /// not: no ask of this partner's, an ask cancelled, or one that has not stood the wait.
    pub fn rejoin_refusal(&self, partner: PartnerId) -> Result<Option<String>> {
        let ask = self.rejoin_ask(partner)?;
        Ok(match ask {
            Some(ask) if ask.asked_by != self.me => {
                Some("the standing ask to rejoin was not made by you: ask first".into())
            }
            None => {
                Some("ask first: your partner's devices are shown the ask and can cancel it".into())
            }
            Some(RejoinAsk {
                cancelled_at: Some(_),
                ..
            }) => Some(
                "a device of your partner's cancelled the ask to rejoin: they still have one"
                    .into(),
            ),
            Some(RejoinAsk { sent_at: None, .. }) => Some(
                "the ask to rejoin has not reached the relay yet: sync, and the wait counts from \
                 then"
                    .into(),
            ),
            Some(ask) if !ask.is_ready(self.now(), self.rejoin_wait) => Some(format!(
                "the ask to rejoin stands for {} before the rejoin can go ahead, so that a \
                 device of your partner's can still cancel it",
                describe(self.rejoin_wait)
            )),
            Some(_) => None,
        })
    }
}

/// The time noted for the ask `made`, from a `<made, hex>:<ms>` meta value.
fn noted_for(noted: Option<String>, made: u64) -> Option<i64> {
    let (asked, when) = noted.as_deref()?.split_once(':')?;
    (u64::from_str_radix(asked, 16).ok()? == made)
        .then(|| when.parse::<i64>().ok())
        .flatten()
}

/// A wait in words ("72 hours", "5 minutes", "30 seconds").
pub fn describe(wait: Duration) -> String {
    let secs = wait.as_secs();
    let (n, unit) = if secs >= 3600 && secs.is_multiple_of(3600) {
        (secs / 3600, "hour")
    } else if secs >= 60 && secs.is_multiple_of(60) {
        (secs / 60, "minute")
    } else {
        (secs, "second")
    };
    format!("{n} {unit}{}", if n == 1 { "" } else { "s" })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn waits_read_in_the_largest_whole_unit() {
        assert_eq!(describe(REJOIN_WAIT), "72 hours");
        assert_eq!(describe(Duration::from_secs(3600)), "1 hour");
        assert_eq!(describe(Duration::from_secs(300)), "5 minutes");
        assert_eq!(describe(Duration::from_secs(90)), "90 seconds");
        assert_eq!(describe(Duration::ZERO), "0 seconds");
    }

    #[test]
    fn an_ask_is_ready_once_it_stood_the_wait_uncancelled() {
        let ask = RejoinAsk {
            partner: PartnerId::generate(),
            asked_by: PartnerId::generate(),
            at: 1_000,
            cancelled_at: None,
            sent_at: None,
            shown_at: None,
            made: 1,
        };
        let wait = Duration::from_secs(10);
        // Never seen at the relay: never ready.
        assert!(!ask.is_ready(i64::MAX, wait));
        let ask = RejoinAsk {
            sent_at: Some(1_000),
            ..ask
        };
        assert!(!ask.is_ready(10_999, wait));
        assert!(ask.is_ready(11_000, wait));
        let cancelled = RejoinAsk {
            cancelled_at: Some(2_000),
            ..ask
        };
        assert!(!cancelled.is_ready(i64::MAX, wait));
        // A wait too long for the clock saturates rather than wrapping into the past.
        assert!(!ask.is_ready(i64::MAX - 1, Duration::MAX));
    }
}
