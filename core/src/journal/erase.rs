//! An erased journal: what a device knows once a partner erased the shared journal, from this
//! device or another.
//!
//! The erasing device writes a marker before it deletes the spaces at the relay: `erased_at`
//! (unix ms) on its partner's own entry (`partners/<me>`) in both documents, so the guard lets
//! only that partner's devices write it. A device that syncs in time merges the marker and is
//! erased from then on (the marker stays in its documents). One that syncs later finds the
//! spaces gone at the relay (`space_erased`): without a marker that is no proof of an erase (the
//! relay may have lost the space, or lie), so the space is reported gone and writes go on.
//!
//! Erased by this partner (from another device): every write is refused and sync stops. Erased
//! by the other partner: writes to the couple's space are refused; the personal space is this
//! partner's own and keeps syncing. Reading always works: the record is kept on the device.

use automerge::{ReadDoc, ScalarValue, Value, transaction::Transactable};
use serde::{Deserialize, Serialize};

use super::Journal;
use crate::{
    error::{Error, Result},
    ids::PartnerId,
    store::Space,
};

/// The field of a partner's entry that says they erased the shared journal (unix ms).
pub(crate) const ERASED_AT: &str = "erased_at";
/// Metadata: who erased (a partner id) and when (unix ms), once this device learned it.
const META_ERASED_BY: &str = "erased_by";
const META_ERASED_AT: &str = "erased_at";
/// Set ("1") from before this device writes its own erase marker until the relay deleted the
/// spaces: an erase cut off in between is finished by the next sync round.
const META_ERASE_PENDING: &str = "erase_pending";

/// The shared journal was erased: by whom and when.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Erasure {
    /// This partner erased it (from another of their devices, or this one).
    pub by_me: bool,
    /// The name of the partner who erased it.
    pub name: String,
    /// When (unix ms): the marker's time, or when this device found the space gone.
    pub at: i64,
    /// The day of `at` in the couple's time zone (`YYYY-MM-DD`).
    pub date: String,
}

impl Erasure {
    /// What a person is told, in plain words.
    pub fn words(&self) -> String {
        if self.by_me {
            format!(
                "this journal was erased from one of your devices on {}. Your copy stays on \
                 this device until you delete it.",
                self.date
            )
        } else {
            format!(
                "{} erased the shared journal on {}. Your copy stays on this device; nothing \
                 more can be shared.",
                self.name, self.date
            )
        }
    }

    /// Whether writes to `space` are refused.
    pub fn blocks(&self, space: Space) -> bool {
        self.by_me || space == Space::Couple
    }
}

impl Journal {
    /// The erasure of the shared journal, if this device knows of one: from its metadata (a
    /// space found erased at the relay) or a marker in the documents.
    pub fn erasure(&self) -> Result<Option<Erasure>> {
        let stored = self.store.meta(META_ERASED_BY)?.and_then(|by| {
            let at = self.store.meta(META_ERASED_AT).ok()??.parse().ok()?;
            Some((PartnerId::parse_canonical(&by)?, at))
        });
        let found = stored.or_else(|| self.erased_marker());
        Ok(found.map(|(by, at)| self.erasure_of(by, at)))
    }

    /// Writes this partner's erase marker into both documents, before the spaces are deleted
    /// at the relay. Afterwards this journal is erased on this device too.
    pub fn mark_erased(&mut self) -> Result<()> {
        self.step(|j| {
            j.ready()?;
            j.store.set_meta(&[(META_ERASE_PENDING, "1")])?;
            let me = j.me.to_string();
            let now = j.now();
            let mut changes = Vec::new();
            for space in Space::ALL {
                let (_, bytes) = j.doc_mut(space)?.transact(|tx, h| {
                    if let Some((_, entry)) = tx.get(&h.partners, me.as_str())? {
                        tx.put(&entry, ERASED_AT, now)?;
                    }
                    Ok(())
                })?;
                if let Some(b) = bytes {
                    changes.push((space, b));
                }
            }
            j.persist_unchecked(changes, &[])?;
            j.note_erased(j.me, now)
        })
    }

    /// Whether this device erased the journal and the relay may still hold its spaces (the
    /// erase was cut off after the marker): the next sync round deletes them.
    pub fn erase_pending(&self) -> Result<bool> {
        Ok(self.store.meta(META_ERASE_PENDING)?.as_deref() == Some("1")
            && self.erasure()?.is_some_and(|e| e.by_me))
    }

    /// The relay deleted the spaces this device's erase named.
    pub fn erase_done(&mut self) -> Result<()> {
        self.step(|j| j.store.set_meta(&[(META_ERASE_PENDING, "")]))
    }

    /// A space was found erased at the relay (`space_erased`): the words for the status when
    /// a partner's own erase marker confirms it, else `None` (the space is reported gone). The
    /// relay's word alone is no erase: a relay that lost the space, or lies, would otherwise
    /// stop every write here for good and tell the person to delete their only copy. The
    /// marker is a signed change the guard lets only a partner's own devices write; the
    /// personal space takes this partner's marker, the couple's either partner's.
    pub fn space_found_erased(&mut self, space: Space) -> Result<Option<String>> {
        self.step(|j| {
            let me = j.me;
            let markers: Vec<_> = j
                .erased_markers()
                .into_iter()
                .filter(|(by, _)| space == Space::Couple || *by == me)
                .collect();
            if !j.keep_marker(markers)? {
                return Ok(None);
            }
            Ok(j.erasure()?.map(|e| e.words()))
        })
    }

    /// Keeps an erase marker a merge brought into `space` in the store's metadata, where
    /// every connection reads it (the read connection does not load the documents).
    pub(super) fn keep_erase_marker(&mut self, space: Space) -> Result<()> {
        let markers = self.markers_in(space);
        self.keep_marker(markers).map(|_| ())
    }

    /// Keeps the first of `markers` (this partner's before the other's) unless what is kept
    /// already says as much (this partner's erase stands); whether there was one.
    fn keep_marker(&mut self, markers: Vec<(PartnerId, i64)>) -> Result<bool> {
        let me = self.me;
        let Some((by, at)) = markers.into_iter().min_by_key(|(by, at)| (*by != me, *at)) else {
            return Ok(false);
        };
        let kept = self.store.meta(META_ERASED_BY)?;
        if kept.is_none_or(|k| k != me.to_string() && by == me) {
            self.note_erased(by, at)?;
        }
        Ok(true)
    }

    /// Refuses a local write to `space` of an erased journal.
    pub(super) fn check_not_erased(&self, space: Space) -> Result<()> {
        match self.erasure()? {
            Some(erasure) if erasure.blocks(space) => Err(Error::Erased(erasure.words())),
            _ => Ok(()),
        }
    }

    fn note_erased(&mut self, by: PartnerId, at: i64) -> Result<()> {
        self.store.set_meta(&[
            (META_ERASED_BY, by.to_string().as_str()),
            (META_ERASED_AT, at.to_string().as_str()),
        ])
    }

    fn erasure_of(&self, by: PartnerId, at: i64) -> Erasure {
        let name = self
            .partners()
            .into_iter()
            .find(|p| p.id == by)
            .map_or_else(|| "your partner".to_owned(), |p| p.name);
        Erasure {
            by_me: by == self.me,
            name,
            at,
            date: self.calendar.date_of(at).to_string(),
        }
    }

    /// The earliest marker in the documents: this partner's in either, or the other
    /// partner's in the couple's (the guard keeps each partner's entry theirs).
    fn erased_marker(&self) -> Option<(PartnerId, i64)> {
        self.erased_markers().into_iter().min_by_key(|(_, at)| *at)
    }

    /// Every erase marker in the documents, with its time.
    fn erased_markers(&self) -> Vec<(PartnerId, i64)> {
        Space::ALL
            .into_iter()
            .flat_map(|space| self.markers_in(space))
            .collect()
    }

    /// The erase markers in one document: this partner's, or in the couple's also the other
    /// partner's.
    fn markers_in(&self, space: Space) -> Vec<(PartnerId, i64)> {
        let mut found = Vec::new();
        let Ok(doc) = self.lazy(space).get() else {
            return found;
        };
        let partners = doc.partners_obj();
        for key in doc.am().keys(partners) {
            let Some(id) = PartnerId::parse_canonical(&key) else {
                continue;
            };
            if space == Space::Personal && id != self.me {
                continue;
            }
            let Ok(Some((Value::Object(_), entry))) = doc.am().get(partners, key.as_str()) else {
                continue;
            };
            let at = match doc.am().get(&entry, ERASED_AT) {
                Ok(Some((Value::Scalar(s), _))) => match s.as_ref() {
                    ScalarValue::Int(n) => *n,
                    ScalarValue::Uint(n) => i64::try_from(*n).unwrap_or(i64::MAX),
                    _ => continue,
                },
                _ => continue,
            };
            found.push((id, at));
        }
        found
    }
}
