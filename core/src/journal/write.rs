//! Adding, editing and removing records.

use automerge::{ObjType, transaction::Transactable};
use serde_json::{Map, Value};

use super::{Journal, read::to_record, validate};
use crate::{
    doc::{ENVELOPE_KEYS, json::put_json},
    error::{Error, Result},
    ids::RecordId,
    model::{
        Body, CommitmentStatus, Consent, ConsentState, Kind, QuestionStatus, TriggerSharing,
        Visibility,
        rules::{self, Writer},
    },
    store::Space,
};

/// A body's fields as stored (without the `kind` tag).
pub(super) fn body_fields(body: &Body) -> Result<Map<String, Value>> {
    match serde_json::to_value(body) {
        Ok(Value::Object(mut map)) => {
            map.remove("kind");
            Ok(map)
        }
        _ => Err(Error::Corrupt(
            "a record body did not serialise to a map".into(),
        )),
    }
}

/// SHA-256 of a boundary's wording: consents are tied to exactly these words.
pub fn wording_hash(text: &str) -> String {
    use sha2::Digest;
    hex::encode(sha2::Sha256::digest(text.as_bytes()))
}

/// The visibility a record really gets: triggers follow their `sharing`, kinds that cannot be
/// private are always shared.
fn effective_visibility(body: &Body, requested: Option<Visibility>) -> Result<Visibility> {
    let kind = body.kind();
    if let Body::TriggerEvent(t) = body {
        return Ok(match t.sharing {
            TriggerSharing::Private | TriggerSharing::Unknown => Visibility::Private,
            _ => Visibility::Shared,
        });
    }
    match requested.unwrap_or_else(|| rules::default_visibility(kind)) {
        Visibility::Private if !rules::may_be_private(kind) => Err(Error::Invalid(format!(
            "{} is shared by nature and cannot be private",
            crate::words::with_article(kind)
        ))),
        v => Ok(v),
    }
}

fn visibility_str(v: Visibility) -> &'static str {
    match v {
        Visibility::Shared => "shared",
        Visibility::Private => "private",
    }
}

impl Journal {
    /// Adds a record authored by this partner, with its kind's default visibility. Returns its id
    /// once it is committed.
    pub fn add(&mut self, body: Body) -> Result<RecordId> {
        self.add_with(body, None)
    }

    /// Adds a record with a chosen visibility (only processing notes and triggers may be private).
    pub fn add_with(&mut self, body: Body, visibility: Option<Visibility>) -> Result<RecordId> {
        self.step(|j| j.add_with_step(body, visibility))
    }

    fn add_with_step(
        &mut self,
        mut body: Body,
        visibility: Option<Visibility>,
    ) -> Result<RecordId> {
        validate::body(&body)?;
        self.check_links(&body)?;
        self.check_roles(&body)?;
        let visibility = effective_visibility(&body, visibility)?;
        let kind = body.kind();
        let now = self.now();
        let today = self.today();
        match &mut body {
            Body::CheckIn(c) => {
                if let Some(d) = c.local_date {
                    self.check_date("a check-in's date", d)?;
                }
            }
            Body::HonestyMoment(h) => {
                let day = *h.noticed_on.get_or_insert(today);
                self.check_date("the day an honesty moment happened", day)?;
            }
            Body::Commitment(c) => {
                // A commitment made without a status is made to be kept.
                if c.status == CommitmentStatus::Unknown {
                    c.status = CommitmentStatus::Active;
                }
                let start = *c.starts_on.get_or_insert(today);
                self.check_date("a commitment's start", start)?;
            }
            _ => {}
        }
        let id = match &body {
            Body::CheckIn(c) => {
                let date = c
                    .local_date
                    .ok_or_else(|| Error::Invalid("a check-in needs its local_date".into()))?;
                let id = RecordId::derive_check_in(self.me, date);
                if self.get(id).is_ok_and(|r| !r.removed) {
                    return Err(Error::Invalid(format!(
                        "there is already a check-in for {date}; edit it instead"
                    )));
                }
                id
            }
            _ => RecordId::generate_for(self.me),
        };
        // Fields written through their own operations start empty, whatever the caller passed.
        match &mut body {
            Body::Boundary(b) => {
                b.wordings.clear();
                b.wordings.insert(wording_hash(&b.text), b.text.clone());
                b.consents.clear();
                b.consents.insert(
                    self.me,
                    Consent {
                        state: ConsentState::Agreed,
                        wording: wording_hash(&b.text),
                        at: now,
                    },
                );
            }
            Body::Need(n) => n.response = None,
            Body::Commitment(c) => {
                c.claims.clear();
                c.views.clear();
                c.status_changes.clear();
                if let Some(start) = c.starts_on {
                    c.status_changes.insert(start, c.status);
                }
            }
            Body::Question(q) => q.status = QuestionStatus::Open,
            _ => {}
        }
        let fields = body_fields(&body)?;
        let (shared, private) = rules::split(kind, visibility, &fields);
        let mut envelope = Map::new();
        envelope.insert("kind".into(), kind.as_str().into());
        envelope.insert("author".into(), self.me.to_string().into());
        envelope.insert("created_at".into(), now.into());
        envelope.insert("updated_at".into(), now.into());
        envelope.insert("visibility".into(), visibility_str(visibility).into());
        envelope.insert("removed".into(), false.into());

        let answered = match &body {
            Body::Answer(a) => a.question,
            _ => None,
        };
        let key = id.to_string();
        // Both documents before either changes, so a failed load cannot strand half an edit.
        self.ready()?;
        let mut changes = Vec::new();
        for (space, part) in [(Space::Couple, shared), (Space::Personal, private)] {
            let Some(part) = part else { continue };
            let (_, bytes) = self.doc_mut(space)?.transact(|tx, h| {
                let obj = tx.put_object(&h.records, key.as_str(), ObjType::Map)?;
                for (k, v) in envelope.iter().chain(part.iter()) {
                    put_json(tx, &obj, k, v)?;
                }
                if let (Space::Couple, Some(q)) = (space, answered) {
                    // An answer moves an open (or put off) question to "answered" in the same
                    // change; a withdrawn question stays withdrawn.
                    if let Some((_, qobj)) = automerge::ReadDoc::get(tx, &h.records, q.to_string())?
                    {
                        let status = match automerge::ReadDoc::get(tx, &qobj, "status")? {
                            Some((automerge::Value::Scalar(s), _)) => s.as_str().map(str::to_owned),
                            _ => None,
                        };
                        if matches!(status.as_deref(), None | Some("open") | Some("not_now")) {
                            tx.put(&qobj, "status", QuestionStatus::Answered.as_str())?;
                        }
                    }
                }
                Ok(())
            })?;
            changes.extend(bytes.map(|b| (space, b)));
        }
        let ids: Vec<RecordId> = answered.into_iter().chain([id]).collect();
        self.persist(changes, &ids)?;
        Ok(id)
    }

    /// Edits a record: `body` is the record's body as the app wants it now (typically a record
    /// read earlier, changed). Only fields that differ are written, each checked against who may
    /// write it; fields written through their own operations (consents, ledger, response,
    /// question status) are left alone here.
    pub fn edit(&mut self, id: RecordId, body: Body) -> Result<()> {
        self.step(|j| j.edit_step(id, body))
    }

    fn edit_step(&mut self, id: RecordId, body: Body) -> Result<()> {
        let parts = self.parts(id)?;
        if !parts.exists() {
            return Err(Error::NotFound(id));
        }
        let current = to_record(id, parts.merged(), Vec::new())?;
        let kind = current.kind();
        if body.kind() != kind {
            return Err(Error::WrongKind {
                id,
                expected: kind,
                actual: body.kind(),
            });
        }
        if current.removed {
            return Err(Error::Removed(id));
        }
        if rules::is_add_only(kind) {
            return Err(Error::Invalid(format!(
                "{} are add-only: they can be removed by their author, not edited",
                kind.plural_label().to_lowercase()
            )));
        }
        validate::body(&body)?;
        self.check_links(&body)?;
        if let (Body::Commitment(new), Body::Commitment(old)) = (&body, &current.body)
            && new.starts_on != old.starts_on
            && let Some(start) = new.starts_on
        {
            self.check_date("a commitment's start", start)?;
        }

        // Compare with the current record as this version reads it, so values this version does
        // not know (an enum value from a newer app) are never rewritten unless the app changed them.
        let before = body_fields(&current.body)?;
        let after = body_fields(&body)?;
        let mut changed = Vec::new();
        for (k, v) in &after {
            if before.get(k) == Some(v) {
                continue;
            }
            match rules::writer(kind, k) {
                Writer::Managed => continue,
                Writer::Fixed => {
                    return Err(Error::Invalid(format!(
                        "{} cannot be changed after creation",
                        crate::words::field_label(kind, k).to_lowercase()
                    )));
                }
                Writer::Author if current.author != self.me => {
                    return Err(Error::PermissionDenied(format!(
                        "only the author of this {} can change it",
                        kind.label().to_lowercase()
                    )));
                }
                Writer::Author | Writer::Either => changed.push(k.clone()),
            }
        }
        if changed.is_empty() {
            return Ok(());
        }

        let old_vis = effective_visibility(&current.body, Some(current.visibility))?;
        let new_vis = effective_visibility(&body, Some(current.visibility))?;
        if old_vis == Visibility::Shared && new_vis == Visibility::Private {
            return Err(Error::Invalid(
                "a record the partner has seen cannot be made private again; remove it instead"
                    .into(),
            ));
        }
        // What is stored, with only the changed keys replaced: values this version cannot read
        // (an unknown field, an enum value from a newer app) move with their record untouched.
        let mut full: Map<String, Value> = parts
            .merged()
            .into_iter()
            .filter(|(k, _)| !ENVELOPE_KEYS.contains(&k.as_str()))
            .collect();
        for k in &changed {
            if let Some(v) = after.get(k) {
                full.insert(k.clone(), v.clone());
            }
        }
        // Moving fields between spaces (check-in privacy, trigger sharing) touches every field.
        let placement_changed = changed
            .iter()
            .any(|k| k == "private_fields" || k == "sharing");
        let keys: Vec<String> = if placement_changed {
            full.keys().cloned().collect()
        } else {
            changed
        };

        let (shared, private) = rules::split(kind, new_vis, &full);
        // Both documents before either changes, so a failed load cannot strand half an edit.
        self.ready()?;
        let now = self.now();
        let key = id.to_string();
        let mut changes = Vec::new();
        for (space, desired, stored) in [
            (Space::Couple, shared, &parts.shared),
            (Space::Personal, private, &parts.private),
        ] {
            let creating = desired.is_some() && stored.is_none();
            let mut ops: Vec<(String, Option<Value>)> = Vec::new();
            for k in &keys {
                let want = desired.as_ref().and_then(|d| d.get(k));
                let have = stored.as_ref().and_then(|s| s.get(k));
                if want != have || (creating && want.is_some()) {
                    ops.push((k.clone(), want.cloned()));
                }
            }
            if ops.is_empty() {
                continue;
            }
            let mut envelope = Map::new();
            if creating {
                envelope.insert("kind".into(), kind.as_str().into());
                envelope.insert("author".into(), current.author.to_string().into());
                envelope.insert("created_at".into(), current.created_at.into());
                envelope.insert("visibility".into(), visibility_str(new_vis).into());
                envelope.insert("removed".into(), false.into());
                if let Some(d) = &desired {
                    for (k, v) in d {
                        if !ops.iter().any(|(o, _)| o == k) {
                            ops.push((k.clone(), Some(v.clone())));
                        }
                    }
                }
            } else if space == Space::Couple && new_vis != old_vis {
                envelope.insert("visibility".into(), visibility_str(new_vis).into());
            }
            envelope.insert("updated_at".into(), now.into());
            // A commitment's life: each status change is dated, so progress knows which days
            // were due (a pause is not a miss).
            let status_change = match (&body, space) {
                (Body::Commitment(c), Space::Couple) if ops.iter().any(|(k, _)| k == "status") => {
                    let mut dated = vec![(self.today().to_string(), c.status.as_str())];
                    // A commitment from before changes were dated gets its life so far first.
                    if let Body::Commitment(old) = &current.body
                        && old.status_changes.is_empty()
                    {
                        let start = old
                            .starts_on
                            .unwrap_or_else(|| self.calendar().date_of(current.created_at));
                        if start < self.today() {
                            dated.insert(0, (start.to_string(), old.status.as_str()));
                        }
                    }
                    Some(dated)
                }
                _ => None,
            };
            let reworded = match (&body, space) {
                (Body::Boundary(b), Space::Couple) if ops.iter().any(|(k, _)| k == "text") => {
                    // A boundary from before wordings were kept records its old words too.
                    let old = match &current.body {
                        Body::Boundary(old) if old.wordings.is_empty() => {
                            Some((wording_hash(&old.text), old.text.clone()))
                        }
                        _ => None,
                    };
                    Some((wording_hash(&b.text), b.text.clone(), old))
                }
                _ => None,
            };
            let me = self.me.to_string();
            let (_, bytes) = self.doc_mut(space)?.transact(|tx, h| {
                let obj = match automerge::ReadDoc::get(tx, &h.records, key.as_str())? {
                    Some((automerge::Value::Object(ObjType::Map), obj)) if !creating => obj,
                    _ => tx.put_object(&h.records, key.as_str(), ObjType::Map)?,
                };
                for (k, v) in &envelope {
                    put_json(tx, &obj, k, v)?;
                }
                for (k, v) in &ops {
                    match v {
                        Some(v) => put_json(tx, &obj, k, v)?,
                        None => tx.delete(&obj, k.as_str())?,
                    }
                }
                if let Some(dated) = &status_change {
                    let changes = match automerge::ReadDoc::get(tx, &obj, "status_changes")? {
                        Some((automerge::Value::Object(ObjType::Map), c)) => c,
                        _ => tx.put_object(&obj, "status_changes", ObjType::Map)?,
                    };
                    for (day, status) in dated {
                        tx.put(&changes, day.as_str(), *status)?;
                    }
                }
                if let Some((hash, words, old)) = &reworded {
                    // The wording history: a consent on earlier words can show those words.
                    let wordings = match automerge::ReadDoc::get(tx, &obj, "wordings")? {
                        Some((automerge::Value::Object(ObjType::Map), w)) => w,
                        _ => tx.put_object(&obj, "wordings", ObjType::Map)?,
                    };
                    tx.put(&wordings, hash.as_str(), words.as_str())?;
                    if let Some((old_hash, old_words)) = old {
                        tx.put(&wordings, old_hash.as_str(), old_words.as_str())?;
                    }
                    // Whoever rewords a boundary proposes the new words: their consent moves to
                    // them. The other partner's consent stays tied to the old words, so the
                    // boundary is no longer agreed until they agree again.
                    let consents = match automerge::ReadDoc::get(tx, &obj, "consents")? {
                        Some((automerge::Value::Object(ObjType::Map), c)) => c,
                        _ => tx.put_object(&obj, "consents", ObjType::Map)?,
                    };
                    let c = tx.put_object(&consents, me.as_str(), ObjType::Map)?;
                    tx.put(&c, "state", ConsentState::Agreed.as_str())?;
                    tx.put(&c, "wording", hash.as_str())?;
                    tx.put(&c, "at", now)?;
                }
                Ok(())
            })?;
            changes.extend(bytes.map(|b| (space, b)));
        }
        self.persist(changes, &[id])?;
        Ok(())
    }

    /// Removes a record: only its author may. A placeholder stays (envelope and links) so
    /// threads stay whole; the body's words are deleted from the current state.
    pub fn remove(&mut self, id: RecordId) -> Result<()> {
        self.step(|j| j.remove_step(id))
    }

    fn remove_step(&mut self, id: RecordId) -> Result<()> {
        let parts = self.parts(id)?;
        if !parts.exists() {
            return Err(Error::NotFound(id));
        }
        let current = to_record(id, parts.merged(), Vec::new())?;
        if current.author != self.me {
            return Err(Error::PermissionDenied(format!(
                "only the author of this {} can remove it",
                current.kind().label().to_lowercase()
            )));
        }
        if current.removed {
            return Ok(());
        }
        let kind = current.kind();
        let keep = rules::link_fields(kind);
        let now = self.now();
        let key = id.to_string();
        self.ready()?;
        let mut changes = Vec::new();
        for (space, stored) in [
            (Space::Couple, &parts.shared),
            (Space::Personal, &parts.private),
        ] {
            let Some(stored) = stored else { continue };
            let drop: Vec<String> = stored
                .keys()
                .filter(|k| !ENVELOPE_KEYS.contains(&k.as_str()) && !keep.contains(&k.as_str()))
                .cloned()
                .collect();
            let (_, bytes) = self.doc_mut(space)?.transact(|tx, h| {
                if let Some((_, obj)) = automerge::ReadDoc::get(tx, &h.records, key.as_str())? {
                    tx.put(&obj, "removed", true)?;
                    tx.put(&obj, "updated_at", now)?;
                    for k in &drop {
                        tx.delete(&obj, k.as_str())?;
                    }
                }
                Ok(())
            })?;
            changes.extend(bytes.map(|b| (space, b)));
        }
        self.persist(changes, &[id])?;
        Ok(())
    }

    /// Roles the journal holds to: an answer comes from the partner who was asked, and a
    /// validation is given to the partner's words, not one's own.
    fn check_roles(&self, body: &Body) -> Result<()> {
        let (target, rule) = match body {
            Body::Answer(a) => (
                a.question,
                "a question is answered by the partner, not its asker",
            ),
            Body::Validation(v) => (
                v.target,
                "a validation is for the partner's record, not one's own",
            ),
            _ => return Ok(()),
        };
        match target.map(|id| self.get(id)).transpose()? {
            Some(r) if r.author == self.me => Err(Error::PermissionDenied(rule.into())),
            _ => Ok(()),
        }
    }

    /// Checks that a body's links point at records of the right kind.
    fn check_links(&self, body: &Body) -> Result<()> {
        let must = |id: Option<RecordId>, kinds: &[Kind], what: &str| -> Result<()> {
            let id = id.ok_or_else(|| Error::Invalid(format!("{what} is required")))?;
            let record = self.get(id)?;
            if !kinds.contains(&record.kind()) {
                return Err(Error::WrongKind {
                    id,
                    expected: kinds[0],
                    actual: record.kind(),
                });
            }
            if record.removed {
                return Err(Error::Removed(id));
            }
            Ok(())
        };
        match body {
            Body::Answer(a) => must(a.question, &[Kind::Question], "question"),
            Body::Reply(r) => must(r.share, &[Kind::Share], "share"),
            Body::Validation(v) => {
                let id = v
                    .target
                    .ok_or_else(|| Error::Invalid("target is required".into()))?;
                if !self.store.view_has(Space::Couple, &id.to_string())? {
                    return Err(if self.store.view_has(Space::Personal, &id.to_string())? {
                        Error::Invalid("only shared records can be validated".into())
                    } else {
                        Error::NotFound(id)
                    });
                }
                Ok(())
            }
            Body::Commitment(c) if c.link.is_some() => {
                must(c.link, &[Kind::Boundary, Kind::Need], "link")
            }
            Body::HonestyMoment(h) => match h.link {
                Some(link) => self.get(link).map(|_| ()),
                None => Ok(()),
            },
            Body::AccountabilityNote(a) => a
                .amends
                .iter()
                .try_for_each(|c| must(Some(*c), &[Kind::Commitment], "amends")),
            _ => Ok(()),
        }
    }
}
