//! Operations with their own permission rule: consent, the follow-through ledger, a need's
//! response, a question's status, and sharing a private note.

use automerge::{ObjType, ReadDoc, transaction::Transactable};
use serde_json::Value;

use super::{Journal, write::wording_hash};
use crate::{
    date::LocalDate,
    doc::json::put_json,
    error::{Error, Result},
    ids::RecordId,
    model::{
        Body, ClaimStatus, ConsentState, Kind, NeedResponseKind, PartnerView, QuestionStatus,
        Record, Visibility, rules,
    },
    query::Life,
    store::Space,
};

impl Journal {
    /// Gives this partner's consent to a boundary's current wording.
    pub fn consent(&mut self, boundary: RecordId, state: ConsentState) -> Result<()> {
        self.step(|j| j.consent_step(boundary, state))
    }

    fn consent_step(&mut self, boundary: RecordId, state: ConsentState) -> Result<()> {
        let record = self.live(boundary, Kind::Boundary)?;
        let Body::Boundary(b) = &record.body else {
            return Err(Error::NotFound(boundary));
        };
        if state == ConsentState::Unknown {
            return Err(Error::Invalid(
                "consent must be proposed, agreed, declined or revisit".into(),
            ));
        }
        let wording = wording_hash(&b.text);
        let now = self.now();
        let me = self.me.to_string();
        self.write_nested(boundary, "consents", &me, |tx, obj| {
            tx.put(obj, "state", state.as_str())?;
            tx.put(obj, "wording", wording.as_str())?;
            tx.put(obj, "at", now)?;
            Ok(())
        })
    }

    /// The owner's claim for one occurrence of their commitment (the local date, or the week's
    /// Monday for a weekly one).
    pub fn claim(
        &mut self,
        commitment: RecordId,
        occurrence: LocalDate,
        status: ClaimStatus,
        note: &str,
    ) -> Result<()> {
        self.step(|j| j.claim_step(commitment, occurrence, status, note))
    }

    fn claim_step(
        &mut self,
        commitment: RecordId,
        occurrence: LocalDate,
        status: ClaimStatus,
        note: &str,
    ) -> Result<()> {
        let record = self.live(commitment, Kind::Commitment)?;
        let occurrence = self.due_occurrence(&record, occurrence)?;
        if record.author != self.me {
            return Err(Error::PermissionDenied(
                "only the commitment's owner can claim its follow-through".into(),
            ));
        }
        if status == ClaimStatus::Unknown {
            return Err(Error::Invalid(
                "a claim must be done, partial or missed".into(),
            ));
        }
        let now = self.now();
        let note = note.to_owned();
        self.write_nested(commitment, "claims", &occurrence.to_string(), |tx, obj| {
            tx.put(obj, "status", status.as_str())?;
            tx.put(obj, "note", note.as_str())?;
            tx.put(obj, "at", now)?;
            Ok(())
        })
    }

    /// The partner's view of one occurrence of the other's commitment.
    pub fn confirm(
        &mut self,
        commitment: RecordId,
        occurrence: LocalDate,
        view: PartnerView,
        note: &str,
    ) -> Result<()> {
        self.step(|j| j.confirm_step(commitment, occurrence, view, note))
    }

    fn confirm_step(
        &mut self,
        commitment: RecordId,
        occurrence: LocalDate,
        view: PartnerView,
        note: &str,
    ) -> Result<()> {
        let record = self.live(commitment, Kind::Commitment)?;
        let occurrence = self.due_occurrence(&record, occurrence)?;
        if record.author == self.me {
            return Err(Error::PermissionDenied(
                "the partner confirms follow-through, not the commitment's owner".into(),
            ));
        }
        if view == PartnerView::Unknown {
            return Err(Error::Invalid(
                "a view must be confirmed, did_not_notice or disagree".into(),
            ));
        }
        let now = self.now();
        let note = note.to_owned();
        self.write_nested(commitment, "views", &occurrence.to_string(), |tx, obj| {
            tx.put(obj, "view", view.as_str())?;
            tx.put(obj, "note", note.as_str())?;
            tx.put(obj, "at", now)?;
            Ok(())
        })
    }

    /// The partner's response to a need.
    pub fn respond_to_need(
        &mut self,
        need: RecordId,
        kind: NeedResponseKind,
        note: &str,
    ) -> Result<()> {
        self.step(|j| j.respond_to_need_step(need, kind, note))
    }

    fn respond_to_need_step(
        &mut self,
        need: RecordId,
        kind: NeedResponseKind,
        note: &str,
    ) -> Result<()> {
        let record = self.live(need, Kind::Need)?;
        if record.author == self.me {
            return Err(Error::PermissionDenied(
                "a need is answered by the partner, not its author".into(),
            ));
        }
        if kind == NeedResponseKind::Unknown {
            return Err(Error::Invalid(
                "a response must be receptive, reassured or lets_talk".into(),
            ));
        }
        let mut response = serde_json::Map::new();
        response.insert("kind".into(), kind.as_str().into());
        response.insert("note".into(), note.into());
        response.insert("at".into(), self.now().into());
        self.write_couple(need, |tx, obj| {
            put_json(tx, obj, "response", &Value::Object(response))
        })
    }

    /// Sets a question's status. The asker may reopen, withdraw or close it as answered; the
    /// partner may say "not now" or mark it answered.
    pub fn set_question_status(
        &mut self,
        question: RecordId,
        status: QuestionStatus,
    ) -> Result<()> {
        self.step(|j| j.set_question_status_step(question, status))
    }

    fn set_question_status_step(
        &mut self,
        question: RecordId,
        status: QuestionStatus,
    ) -> Result<()> {
        let record = self.live(question, Kind::Question)?;
        let asker = record.author == self.me;
        let allowed = match status {
            QuestionStatus::Open | QuestionStatus::Withdrawn => asker,
            QuestionStatus::NotNow => !asker,
            QuestionStatus::Answered => true,
            QuestionStatus::Unknown => {
                return Err(Error::Invalid("unknown question status".into()));
            }
        };
        if !allowed {
            return Err(Error::PermissionDenied(format!(
                "the {} cannot set a question to {status}",
                if asker { "asker" } else { "partner" }
            )));
        }
        self.write_couple(question, |tx, obj| {
            tx.put(obj, "status", status.as_str())?;
            Ok(())
        })
    }

    /// Shares a private record (a processing note) with the partner. Sharing cannot be undone.
    pub fn share(&mut self, id: RecordId) -> Result<()> {
        self.step(|j| j.share_step(id))
    }

    fn share_step(&mut self, id: RecordId) -> Result<()> {
        let parts = self.parts(id)?;
        let record = self.get(id)?;
        if record.author != self.me {
            return Err(Error::PermissionDenied(
                "only the author can share a record".into(),
            ));
        }
        if record.removed {
            return Err(Error::Removed(id));
        }
        if record.visibility == Visibility::Shared {
            return Ok(());
        }
        if !rules::may_be_private(record.kind()) || record.kind() == Kind::TriggerEvent {
            return Err(Error::Invalid(
                "change a trigger's sharing by editing it".into(),
            ));
        }
        let Some(fields) = parts.private else {
            return Err(Error::NotFound(id));
        };
        let now = self.now();
        let key = id.to_string();
        // Both documents before either changes, so a failed load cannot strand half a move.
        self.ready()?;
        let mut changes = Vec::new();
        let (_, bytes) = self.doc_mut(Space::Couple)?.transact(|tx, h| {
            let obj = tx.put_object(&h.records, key.as_str(), ObjType::Map)?;
            for (k, v) in &fields {
                put_json(tx, &obj, k, v)?;
            }
            tx.put(&obj, "visibility", "shared")?;
            tx.put(&obj, "updated_at", now)?;
            Ok(())
        })?;
        changes.extend(bytes.map(|b| (Space::Couple, b)));
        let (_, bytes) = self.doc_mut(Space::Personal)?.transact(|tx, h| {
            tx.delete(&h.records, key.as_str())?;
            Ok(())
        })?;
        changes.extend(bytes.map(|b| (Space::Personal, b)));
        self.persist(changes, &[id])?;
        Ok(())
    }

    /// A record of `kind` that exists in the couple's document and is not removed.
    fn live(&self, id: RecordId, kind: Kind) -> Result<Record> {
        let record = self.get_kind(id, kind)?;
        if record.removed {
            return Err(Error::Removed(id));
        }
        if !self.store.view_has(Space::Couple, &id.to_string())? {
            return Err(Error::Invalid(
                "this operation needs a shared record".into(),
            ));
        }
        Ok(record)
    }

    /// Writes into record `id` of the couple's document and commits.
    fn write_couple(
        &mut self,
        id: RecordId,
        f: impl FnOnce(&mut automerge::transaction::Transaction<'_>, &automerge::ObjId) -> Result<()>,
    ) -> Result<()> {
        let key = id.to_string();
        let now = self.now();
        let (_, bytes) = self.doc_mut(Space::Couple)?.transact(|tx, h| {
            let Some((_, obj)) = tx.get(&h.records, key.as_str())? else {
                return Err(Error::NotFound(id));
            };
            f(tx, &obj)?;
            tx.put(&obj, "updated_at", now)?;
            Ok(())
        })?;
        self.persist(
            bytes.map(|b| vec![(Space::Couple, b)]).unwrap_or_default(),
            &[id],
        )?;
        Ok(())
    }

    /// Replaces the map at `field.entry` of record `id` with a fresh one filled by `f`. The whole
    /// entry is one value: two concurrent claims of one occurrence conflict as a whole, never
    /// mix one's status with the other's note.
    fn write_nested(
        &mut self,
        id: RecordId,
        field: &str,
        entry: &str,
        f: impl FnOnce(&mut automerge::transaction::Transaction<'_>, &automerge::ObjId) -> Result<()>,
    ) -> Result<()> {
        self.write_couple(id, |tx, obj| {
            let map = match tx.get(obj, field)? {
                Some((automerge::Value::Object(ObjType::Map), m)) => m,
                _ => tx.put_object(obj, field, ObjType::Map)?,
            };
            let child = tx.put_object(&map, entry, ObjType::Map)?;
            f(tx, &child)
        })
    }
}

impl Journal {
    /// The ledger key of the occurrence `day` falls in, refused unless that occurrence was due:
    /// inside the commitment's life (from its start, while active) and no later than tomorrow.
    fn due_occurrence(&self, record: &Record, day: LocalDate) -> Result<LocalDate> {
        self.check_date("an occurrence", day)?;
        let life = Life::of(record, self.calendar()).ok_or(Error::WrongKind {
            id: record.id,
            expected: Kind::Commitment,
            actual: record.kind(),
        })?;
        let key = life.occurrence_of(day);
        if !life.is_due(key, self.date_bounds().1) {
            return Err(Error::Invalid(format!(
                "commitment {} was not due on {day}: it runs from {} and only while active",
                record.id, life.start
            )));
        }
        Ok(key)
    }
}
