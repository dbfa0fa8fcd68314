//! A forging client: one of Blake's devices running a modified app. It holds Blake's real
//! keys but bypasses the API, and pushes, one at a time, each change the app would never
//! make (consenting for Alex, confirming Blake's own follow-through, rewriting Alex's
//! check-in, signing under another device's name, a snapshot carrying a forged change…).
//! Every honest device refuses each one, reports it naming the device, and the honest
//! devices end identical.

mod sim;

use anyhow::{Context, Result, ensure};
use automerge::{
    ActorId, AutoCommit, ObjType, ROOT, ReadDoc, ScalarValue, Value, transaction::Transactable,
};
use mend_core::{
    Body, DeviceId, LocalDate, PartnerId, RecordId, Space,
    crypto::{
        ChunkAad, DeviceKey, INTRO_LEN, Intro, PartnerIdentity, seal_chunk, seal_snapshot,
        sign_change,
    },
    journal::Reason,
    model::{
        Boundary, BoundaryArea, Cadence, CheckIn, Commitment, CommitmentStatus, ConsentState,
        HonestyKind, HonestyMoment, Need, NeedKind, NeedResponseKind, Question,
    },
    sync::{ProblemKind, SyncStore, encode_snapshot},
};
use mend_protocol::Snapshot;
use sim::{Sim, T0};

/// A device of one partner that writes whatever it likes, signed with real keys.
struct Forger {
    key: DeviceKey,
    intro: Intro,
    /// The id it pushes under at the relay (any id works there).
    device: [u8; 16],
    next_seq: u64,
    introduced: bool,
}

impl Forger {
    /// A new device of `partner` (whose identity it holds), certified as the app would.
    fn new(sim: &Sim, partner: usize, id: PartnerId) -> Result<Self> {
        Self::named(sim, partner, id, DeviceId::generate())
    }

    /// A new device of `partner` certified under the device id `device`, whoever uses it.
    fn named(sim: &Sim, partner: usize, id: PartnerId, device: DeviceId) -> Result<Self> {
        let key = DeviceKey::generate()?;
        let identity: &PartnerIdentity = &sim.identities[partner];
        let cert = identity.certify(&sim.couple_keys.space_id, id, device, &key.public(), T0);
        Ok(Self {
            intro: Intro {
                identity: identity.public(),
                cert,
            },
            key,
            device: *device.as_bytes(),
            next_seq: 1,
            introduced: false,
        })
    }

    /// An actor of this device: its key id, then 8 bytes.
    fn actor(&self, n: u8) -> ActorId {
        let mut actor = self.key.public().key_id().0.to_vec();
        actor.extend_from_slice(&[n; 8]);
        ActorId::from(actor)
    }

    /// One change made by `f` on a copy of an honest device's couple document, under `actor`.
    fn change(
        sim: &Sim,
        actor: ActorId,
        f: impl FnOnce(&mut AutoCommit) -> Result<()>,
    ) -> Result<Vec<u8>> {
        let base = sim.devices[0].journal().document(Space::Couple)?;
        let mut doc = AutoCommit::load(&base)?.with_actor(actor);
        f(&mut doc)?;
        doc.commit();
        let change = doc
            .get_last_local_change()
            .context("the forged change was empty")?;
        Ok(change.raw_bytes().to_vec())
    }

    /// A signed bundle of `changes`, each signed with this device's key.
    fn bundle(&mut self, sim: &Sim, changes: &[Vec<u8>]) -> Result<Vec<u8>> {
        let signed: Vec<([u8; 16], [u8; 64], &[u8])> = changes
            .iter()
            .map(|bytes| {
                let change = automerge::Change::from_bytes(bytes.clone())?;
                let proof = sign_change(&self.key, &sim.couple_keys.space_id, &change.hash().0);
                Ok((self.key.public().key_id().0, proof.0, bytes.as_slice()))
            })
            .collect::<Result<_>>()?;
        let intros: Vec<Intro> = if self.introduced {
            Vec::new()
        } else {
            self.introduced = true;
            vec![self.intro]
        };
        Ok(encode_bundle(&intros, &signed))
    }

    /// Pushes `plain` as this device's next chunk.
    fn push(&mut self, sim: &mut Sim, plain: &[u8]) -> Result<()> {
        self.push_as(sim, self.device, self.next_seq, plain)?;
        self.next_seq += 1;
        Ok(())
    }

    /// Pushes `plain` at the relay as device `device`'s chunk number `seq`.
    fn push_as(&self, sim: &mut Sim, device: [u8; 16], seq: u64, plain: &[u8]) -> Result<()> {
        let aad = ChunkAad {
            space_id: sim.couple_keys.space_id,
            device,
            device_seq: seq,
        };
        let payload = seal_chunk(&sim.couple_keys.content, &aad, plain)?;
        let push = mend_protocol::Push {
            device_id: mend_protocol::DeviceId(device),
            device_seq: seq,
            payload,
        };
        sim.relay.push_from(sim.couple_keys.space_id, push);
        Ok(())
    }
}

/// `version | intros (u16) | intro… | changes (u32) | (signer | signature | length | change)…`
fn encode_bundle(intros: &[Intro], changes: &[([u8; 16], [u8; 64], &[u8])]) -> Vec<u8> {
    let mut out = vec![1u8];
    out.extend_from_slice(&(intros.len() as u16).to_be_bytes());
    for intro in intros {
        out.extend_from_slice(&intro.to_bytes());
    }
    out.extend_from_slice(&(changes.len() as u32).to_be_bytes());
    for (signer, sig, bytes) in changes {
        out.extend_from_slice(signer);
        out.extend_from_slice(sig);
        out.extend_from_slice(&(bytes.len() as u32).to_be_bytes());
        out.extend_from_slice(bytes);
    }
    out
}

/// The map of record `id` in a forged document.
fn record(doc: &AutoCommit, id: RecordId) -> Result<automerge::ObjId> {
    let (_, records) = doc.get(ROOT, "records")?.context("no records map")?;
    let (_, rec) = doc
        .get(&records, id.to_string())?
        .context("no such record")?;
    Ok(rec)
}

/// A new record map at `id` in a forged document, of `kind` and by `author`.
fn new_record(
    doc: &mut AutoCommit,
    id: &str,
    kind: &str,
    author: &str,
) -> Result<automerge::ObjId> {
    let (_, records) = doc.get(ROOT, "records")?.context("records")?;
    let rec = doc.put_object(&records, id, ObjType::Map)?;
    doc.put(&rec, "kind", kind)?;
    doc.put(&rec, "author", author)?;
    Ok(rec)
}

/// The map at `key` of `obj`, made if missing.
fn map_at(doc: &mut AutoCommit, obj: &automerge::ObjId, key: &str) -> Result<automerge::ObjId> {
    Ok(match doc.get(obj, key)? {
        Some((Value::Object(ObjType::Map), m)) => m,
        _ => doc.put_object(obj, key, ObjType::Map)?,
    })
}

/// The couple as the story needs it: Alex (two devices) and Blake (one honest device), with
/// Alex's boundary, commitment and check-in, and Blake's commitment, need and honesty moment.
struct Story {
    sim: Sim,
    alex: PartnerId,
    blake: PartnerId,
    boundary: RecordId,
    alex_commitment: RecordId,
    blake_commitment: RecordId,
    blake_need: RecordId,
    alex_check_in: RecordId,
    blake_moment: RecordId,
    alex_question: RecordId,
    today: LocalDate,
    /// The couple's document before any record was written.
    early: Vec<u8>,
}

fn story(seed: u64) -> Result<Story> {
    let mut sim = Sim::new(seed, 2, 1, 4)?;
    sim.settle()?;
    let alex = sim.devices[0].journal().me();
    let blake = sim.devices[2].journal().me();
    let today = sim.devices[0].journal().today();
    let early = sim.devices[0].journal().document(Space::Couple)?;
    let a = sim.devices[0].journal_mut();
    let boundary = a.add(Body::Boundary(Boundary {
        area: BoundaryArea::Contact,
        text: "No contact with them".into(),
        ..Default::default()
    }))?;
    let alex_commitment = a.add(Body::Commitment(Commitment {
        text: "Phone home at six".into(),
        cadence: Cadence::Daily,
        status: CommitmentStatus::Active,
        ..Default::default()
    }))?;
    let alex_check_in = a.add(Body::CheckIn(CheckIn {
        local_date: Some(today),
        safety: Some(3),
        trust: Some(3),
        connection: Some(3),
        ..Default::default()
    }))?;
    let alex_question = a.add(Body::Question(Question {
        text: "What did you feel then?".into(),
        ..Default::default()
    }))?;
    let b = sim.devices[2].journal_mut();
    let blake_commitment = b.add(Body::Commitment(Commitment {
        text: "Share my location".into(),
        cadence: Cadence::Daily,
        status: CommitmentStatus::Active,
        ..Default::default()
    }))?;
    let blake_need = b.add(Body::Need(Need {
        kind: NeedKind::AloneTime,
        text: "Tell me when you are late".into(),
        ..Default::default()
    }))?;
    let blake_moment = b.add(Body::HonestyMoment(HonestyMoment {
        kind: HonestyKind::VolunteeredTruth,
        text: "I told you before you asked".into(),
        ..Default::default()
    }))?;
    sim.settle()?;
    Ok(Story {
        sim,
        alex,
        blake,
        boundary,
        alex_commitment,
        blake_commitment,
        blake_need,
        alex_check_in,
        blake_moment,
        alex_question,
        today,
        early,
    })
}

/// Every honest device reported a refusal with `breach`, named Blake's device, and shows no
/// journal text in it; all of them hold the same document and answer every query alike.
fn refused_everywhere(sim: &Sim, breach: &str, before: &[usize]) -> Result<()> {
    for (i, d) in sim.devices.iter().enumerate() {
        let count = d
            .problems
            .iter()
            .filter(|p| matches!(&p.kind, ProblemKind::Forged { breach: b, .. } if b == breach))
            .count();
        ensure!(
            count > before[i],
            "{} did not report the {breach} forgery: {:?}",
            d.name,
            d.problems
        );
        let words = d
            .problems
            .iter()
            .rev()
            .find_map(|p| match &p.kind {
                ProblemKind::Forged {
                    breach: b, words, ..
                } if b == breach => Some(words.clone()),
                _ => None,
            })
            .unwrap_or_default();
        // Blake's own devices hear of it as theirs.
        let from = if d.partner == 1 {
            "a change from your device "
        } else {
            "a change from Blake's device "
        };
        ensure!(
            words.starts_with(from) && words.ends_with(" was refused"),
            "{}: {words}",
            d.name
        );
        ensure!(
            !words.contains("No contact") && !words.contains("Phone home"),
            "{words}"
        );
    }
    identical(sim)
}

fn identical(sim: &Sim) -> Result<()> {
    let first = sim.devices[0].journal();
    let mut heads = first.heads(Space::Couple)?;
    heads.sort();
    for d in &sim.devices[1..] {
        let j = d.journal();
        let mut h = j.heads(Space::Couple)?;
        h.sort();
        ensure!(
            h == heads,
            "{} holds another couple's document ({} records, {} records on {}; problems {:?}; status {:?})",
            d.name,
            j.shared_records()?.len(),
            first.shared_records()?.len(),
            sim.devices[0].name,
            d.problems,
            j.sync_state(Space::Couple)?
        );
        ensure!(
            j.shared_records()? == first.shared_records()?,
            "{} shows other records",
            d.name
        );
        ensure!(
            j.partners() == first.partners(),
            "{} lists other partners",
            d.name
        );
        ensure!(
            j.boundary_status()? == first.boundary_status()?,
            "{} tells boundaries apart differently",
            d.name
        );
        // What a partner sees of their own private records differs between partners: the
        // timeline and progress are compared between devices of one partner.
        let same = sim
            .devices
            .iter()
            .find(|o| o.partner == d.partner)
            .map(|o| o.journal())
            .unwrap_or(first);
        let q = mend_core::query::TimelineQuery::default();
        ensure!(
            format!("{:?}", j.timeline(&q)?) == format!("{:?}", same.timeline(&q)?),
            "{} shows another timeline",
            d.name
        );
        ensure!(
            format!("{:?}", j.open_questions()?) == format!("{:?}", first.open_questions()?),
            "{} lists other open questions",
            d.name
        );
        ensure!(j.needs()? == first.needs()?, "{} lists other needs", d.name);
        let from = j.today().add_days(-30);
        ensure!(
            format!("{:?}", j.progress(from, j.today())?)
                == format!("{:?}", same.progress(from, same.today())?),
            "{} counts progress differently",
            d.name
        );
        j.verify_read_model()?;
    }
    Ok(())
}

fn forged_counts(sim: &Sim, breach: &str) -> Vec<usize> {
    sim.devices
        .iter()
        .map(|d| {
            d.problems
                .iter()
                .filter(|p| matches!(&p.kind, ProblemKind::Forged { breach: b, .. } if b == breach))
                .count()
        })
        .collect()
}

/// Pushes one forged change (made by `f` under a fresh actor of the forger), settles, and
/// checks that every honest device refused it as `breach`.
fn forge(
    s: &mut Story,
    forger: &mut Forger,
    n: u8,
    breach: &str,
    f: impl FnOnce(&mut AutoCommit, &Story) -> Result<()>,
) -> Result<()> {
    let before = forged_counts(&s.sim, breach);
    let change = Forger::change(&s.sim, forger.actor(n), |doc| f(doc, s))?;
    let plain = forger.bundle(&s.sim, &[change])?;
    forger.push(&mut s.sim, &plain)?;
    s.sim.settle()?;
    refused_everywhere(&s.sim, breach, &before).with_context(|| format!("forgery #{n}"))
}

#[test]
fn every_forbidden_operation_is_refused_by_every_honest_device() -> Result<()> {
    let mut s = story(71)?;
    let mut forger = Forger::new(&s.sim, 1, s.blake)?;
    let (alex, blake) = (s.alex.to_string(), s.blake.to_string());
    // A day Alex has no check-in for yet.
    let day = s.today.add_days(-1).to_string();

    // Consenting for Alex on Alex's boundary.
    forge(&mut s, &mut forger, 1, "consent", |doc, s| {
        let rec = record(doc, s.boundary)?;
        let consents = map_at(doc, &rec, "consents")?;
        let c = doc.put_object(&consents, s.alex.to_string(), ObjType::Map)?;
        doc.put(&c, "state", "declined")?;
        Ok(())
    })?;
    // Claiming follow-through on Alex's commitment.
    forge(&mut s, &mut forger, 2, "claim", |doc, s| {
        let rec = record(doc, s.alex_commitment)?;
        let claims = map_at(doc, &rec, "claims")?;
        let c = doc.put_object(&claims, s.today.to_string(), ObjType::Map)?;
        doc.put(&c, "status", "missed")?;
        Ok(())
    })?;
    // Confirming Blake's own follow-through.
    forge(&mut s, &mut forger, 3, "view", |doc, s| {
        let rec = record(doc, s.blake_commitment)?;
        let views = map_at(doc, &rec, "views")?;
        let v = doc.put_object(&views, s.today.to_string(), ObjType::Map)?;
        doc.put(&v, "view", "confirmed")?;
        Ok(())
    })?;
    // Answering Blake's own need.
    forge(&mut s, &mut forger, 4, "response", |doc, s| {
        let rec = record(doc, s.blake_need)?;
        let r = doc.put_object(&rec, "response", ObjType::Map)?;
        doc.put(&r, "kind", NeedResponseKind::Reassured.as_str())?;
        Ok(())
    })?;
    // Rewriting Alex's check-in.
    forge(&mut s, &mut forger, 5, "author_only", |doc, s| {
        let rec = record(doc, s.alex_check_in)?;
        doc.put(&rec, "safety", 1)?;
        Ok(())
    })?;
    // Editing an add-only record (Blake's own honesty moment).
    forge(&mut s, &mut forger, 6, "add_only", |doc, s| {
        let rec = record(doc, s.blake_moment)?;
        doc.put(&rec, "text", "something else")?;
        Ok(())
    })?;
    // Removing Alex's record.
    forge(&mut s, &mut forger, 7, "removal", |doc, s| {
        let rec = record(doc, s.alex_commitment)?;
        doc.put(&rec, "removed", true)?;
        Ok(())
    })?;
    // A check-in filed under Alex's id for the day (check-in ids come from author and date).
    forge(&mut s, &mut forger, 8, "check_in_id", |doc, _| {
        let (_, records) = doc.get(ROOT, "records")?.context("records")?;
        let id = RecordId::derive_check_in(s_alex(&alex)?, day.parse::<LocalDate>()?);
        let rec = doc.put_object(&records, id.to_string(), ObjType::Map)?;
        doc.put(&rec, "kind", "check_in")?;
        doc.put(&rec, "author", blake.as_str())?;
        doc.put(&rec, "local_date", day.as_str())?;
        Ok(())
    })?;
    // A record written as Alex.
    forge(&mut s, &mut forger, 9, "impersonation", |doc, _| {
        let rec = new_record(
            doc,
            &RecordId::generate().to_string(),
            "share",
            alex.as_str(),
        )?;
        doc.put(&rec, "feeling", "I give up")?;
        Ok(())
    })?;
    // Setting Alex's question to "withdrawn" (only its asker may).
    forge(&mut s, &mut forger, 10, "question_status", |doc, s| {
        let rec = record(doc, s.alex_question)?;
        doc.put(&rec, "status", "withdrawn")?;
        Ok(())
    })?;
    // Renaming Alex in the partners list.
    forge(&mut s, &mut forger, 11, "other_partner", |doc, s| {
        let (_, partners) = doc.get(ROOT, "partners")?.context("partners")?;
        let (_, entry) = doc.get(&partners, s.alex.to_string())?.context("entry")?;
        doc.put(&entry, "name", "Nobody")?;
        Ok(())
    })?;
    // A device certificate for Alex, filed under Alex's entry.
    let stranger = PartnerIdentity::generate()?;
    let cert = stranger.certify(
        &s.sim.couple_keys.space_id,
        s.alex,
        DeviceId::generate(),
        &DeviceKey::generate()?.public(),
        T0,
    );
    // (The same cause as the renaming: reported once, so checked by its effect.)
    let change = Forger::change(&s.sim, forger.actor(12), |doc| {
        let (_, partners) = doc.get(ROOT, "partners")?.context("partners")?;
        let (_, entry) = doc.get(&partners, s.alex.to_string())?.context("entry")?;
        doc.put(
            &entry,
            format!("device:{}", cert.device),
            ScalarValue::Bytes(cert.to_bytes().to_vec()),
        )?;
        Ok(())
    })?;
    let plain = forger.bundle(&s.sim, &[change])?;
    forger.push(&mut s.sim, &plain)?;
    s.sim.settle()?;
    identical(&s.sim)?;
    let couple = s.sim.devices[0].journal().document(Space::Couple)?;
    let doc = AutoCommit::load(&couple)?;
    let (_, partners) = doc.get(ROOT, "partners")?.context("partners")?;
    let (_, entry) = doc.get(&partners, s.alex.to_string())?.context("entry")?;
    ensure!(
        doc.get(&entry, format!("device:{}", cert.device))?
            .is_none(),
        "the certificate for Alex got in"
    );
    // The same certificate (naming Alex) filed under Blake's own entry.
    forge(&mut s, &mut forger, 13, "certificate", |doc, s| {
        let (_, partners) = doc.get(ROOT, "partners")?.context("partners")?;
        let (_, entry) = doc.get(&partners, s.blake.to_string())?.context("entry")?;
        doc.put(
            &entry,
            format!("device:{}", cert.device),
            ScalarValue::Bytes(cert.to_bytes().to_vec()),
        )?;
        Ok(())
    })?;
    // Replacing the whole consent map of Alex's boundary (hiding every consent).
    forge(&mut s, &mut forger, 14, "wipe", |doc, s| {
        let rec = record(doc, s.boundary)?;
        doc.put_object(&rec, "consents", ObjType::Map)?;
        Ok(())
    })?;

    // Through all of it, the app's own operations still work and still converge.
    let fine = s.sim.devices[2].journal_mut();
    fine.consent(s.boundary, ConsentState::Agreed)?;
    s.sim.settle()?;
    identical(&s.sim)?;
    for d in &s.sim.devices {
        let j = d.journal();
        let b = j.get(s.boundary)?;
        let Body::Boundary(b) = b.body else {
            anyhow::bail!("not a boundary");
        };
        ensure!(b.consents.get(&s.alex).map(|c| c.state) == Some(ConsentState::Agreed));
        ensure!(b.consents.get(&s.blake).map(|c| c.state) == Some(ConsentState::Agreed));
        let c = j.get(s.alex_commitment)?;
        ensure!(!c.removed, "{}: the commitment was removed", d.name);
        ensure!(j.partners().iter().all(|p| p.name != "Nobody"));
        ensure!(j.partners().len() == 2);
    }
    Ok(())
}

fn s_alex(text: &str) -> Result<PartnerId> {
    Ok(text.parse()?)
}

/// The entry of `partner` in the partners list of `doc`.
fn partner_entry(doc: &AutoCommit, partner: PartnerId) -> Result<automerge::ObjId> {
    let (_, partners) = doc.get(ROOT, "partners")?.context("partners")?;
    let (_, entry) = doc
        .get(&partners, partner.to_string())?
        .context("no entry")?;
    Ok(entry)
}

#[test]
fn device_names_are_written_by_their_partner_alone_and_stay_short() -> Result<()> {
    let mut s = story(77)?;
    let mut forger = Forger::new(&s.sim, 1, s.blake)?;
    let alex_device = s.sim.devices[0].journal().device();
    let blake_device = s.sim.devices[2].journal().device();
    // Naming Alex's device from Blake's.
    forge(&mut s, &mut forger, 1, "other_partner", |doc, s| {
        let entry = partner_entry(doc, s.alex)?;
        doc.put(
            &entry,
            format!("device_name:{alex_device}"),
            "Blake was here",
        )?;
        Ok(())
    })?;
    // A name longer than any device may record, on Blake's own device.
    forge(&mut s, &mut forger, 2, "device_name", |doc, s| {
        let entry = partner_entry(doc, s.blake)?;
        let name = "x".repeat(mend_core::MAX_DEVICE_NAME + 1);
        doc.put(&entry, format!("device_name:{blake_device}"), name)?;
        Ok(())
    })?;
    // A name that is not a string, and one under no device id (each from another forging
    // device: a device's repeated refusal of one kind is reported once).
    let mut forger = Forger::new(&s.sim, 1, s.blake)?;
    forge(&mut s, &mut forger, 3, "device_name", |doc, s| {
        let entry = partner_entry(doc, s.blake)?;
        doc.put(&entry, format!("device_name:{blake_device}"), 7)?;
        Ok(())
    })?;
    let mut forger = Forger::new(&s.sim, 1, s.blake)?;
    forge(&mut s, &mut forger, 4, "device_name", |doc, s| {
        let entry = partner_entry(doc, s.blake)?;
        doc.put(&entry, "device_name:phone", "Phone")?;
        Ok(())
    })?;
    // Nothing forged is shown.
    for d in &s.sim.devices {
        let names: Vec<_> = d
            .journal()
            .devices()
            .into_iter()
            .filter_map(|d| d.name)
            .collect();
        ensure!(names.is_empty(), "{names:?}");
    }
    // An honest name, beside the device's certificate, passes every device's checks.
    let (space, identity) = (s.sim.couple_keys.space_id, s.sim.identities[0].clone());
    let key = s.sim.devices[0].key.clone();
    let a0 = s.sim.devices[0].journal_mut();
    a0.set_device_name("Alex's phone")?;
    a0.certify_device(&space, &identity, &key)?;
    s.sim.settle()?;
    for d in &s.sim.devices {
        let name = d
            .journal()
            .devices()
            .into_iter()
            .find(|d| d.id == alex_device)
            .and_then(|d| d.name);
        ensure!(
            name.as_deref() == Some("Alex's phone"),
            "{}: {name:?}",
            d.name
        );
    }
    identical(&s.sim)
}

#[test]
fn a_change_under_another_devices_name_is_refused() -> Result<()> {
    let mut s = story(72)?;
    let mut forger = Forger::new(&s.sim, 1, s.blake)?;
    let before = forged_counts(&s.sim, "other_actor");
    // Made under Alex's device's actor, signed by the forger.
    let mut alex_actor = s.sim.devices[0].journal().actor().to_vec();
    alex_actor[20] ^= 0x55;
    let change = Forger::change(&s.sim, ActorId::from(alex_actor), |doc| {
        new_record(
            doc,
            &RecordId::generate().to_string(),
            "share",
            &s.blake.to_string(),
        )?;
        Ok(())
    })?;
    let plain = forger.bundle(&s.sim, &[change])?;
    forger.push(&mut s.sim, &plain)?;
    s.sim.settle()?;
    refused_everywhere(&s.sim, "other_actor", &before)
}

#[test]
fn a_signature_that_does_not_verify_and_an_unknown_device_are_refused() -> Result<()> {
    let mut s = story(73)?;
    let mut forger = Forger::new(&s.sim, 1, s.blake)?;
    let before = forged_counts(&s.sim, "bad_signature");
    let change = Forger::change(&s.sim, forger.actor(1), |doc| {
        new_record(
            doc,
            &RecordId::generate().to_string(),
            "share",
            &s.blake.to_string(),
        )?;
        Ok(())
    })?;
    let mut plain = forger.bundle(&s.sim, &[change])?;
    // The signature's last byte, bent: version, one intro, the count, the signer, then it.
    let sig_at = 1 + 2 + INTRO_LEN + 4 + 16;
    plain[sig_at + 63] ^= 1;
    forger.push(&mut s.sim, &plain)?;
    s.sim.settle()?;
    refused_everywhere(&s.sim, "bad_signature", &before)?;
    // A device of Blake's that never introduced itself: its changes cannot be told apart
    // from anyone's.
    let mut silent = Forger::new(&s.sim, 1, s.blake)?;
    silent.introduced = true;
    let change = Forger::change(&s.sim, silent.actor(2), |doc| {
        new_record(
            doc,
            &RecordId::generate().to_string(),
            "share",
            &s.blake.to_string(),
        )?;
        Ok(())
    })?;
    let before = forged_counts(&s.sim, "unknown_device");
    let plain = silent.bundle(&s.sim, &[change])?;
    silent.push(&mut s.sim, &plain)?;
    s.sim.settle()?;
    for (i, d) in s.sim.devices.iter().enumerate() {
        ensure!(
            forged_counts(&s.sim, "unknown_device")[i] > before[i],
            "{}: {:?}",
            d.name,
            d.problems
        );
    }
    identical(&s.sim)
}

#[test]
fn what_builds_on_a_refused_change_is_refused_with_it() -> Result<()> {
    refused_with_what_builds_on_it(74, None, |doc, s| {
        let rec = record(doc, s.boundary)?;
        let consents = map_at(doc, &rec, "consents")?;
        let c = doc.put_object(&consents, s.alex.to_string(), ObjType::Map)?;
        doc.put(&c, "state", "declined")?;
        Ok(())
    })
}

/// A change under an epoch's actor is refused for good before its dependencies are even
/// looked at, so what builds on it in the same chunk is refused with it rather than held,
/// waiting for a change no device will ever take.
#[test]
fn what_builds_on_a_change_under_an_epochs_actor_is_refused_with_it() -> Result<()> {
    refused_with_what_builds_on_it(75, Some(epoch_actor(4)), |doc, _| {
        doc.put(automerge::ROOT, "epoch", 4_i64)?;
        Ok(())
    })
}

/// The actor an epoch's first change is made under.
fn epoch_actor(epoch: u32) -> ActorId {
    let mut actor = [0u8; 16];
    actor[..10].copy_from_slice(b"mend-epoch");
    actor[12..].copy_from_slice(&epoch.to_be_bytes());
    ActorId::from(actor)
}

/// Blake's device signs and pushes a change `bad` makes (under `bad_actor`, else its own),
/// then an innocent-looking change of its own made after it: every device refuses both, the
/// second as depending on a refused change.
fn refused_with_what_builds_on_it(
    seed: u64,
    bad_actor: Option<ActorId>,
    bad: impl FnOnce(&mut AutoCommit, &Story) -> Result<()>,
) -> Result<()> {
    let mut s = story(seed)?;
    let mut forger = Forger::new(&s.sim, 1, s.blake)?;
    let base = s.sim.devices[0].journal().document(Space::Couple)?;
    let own = bad_actor.is_none();
    let mut doc = AutoCommit::load(&base)?.with_actor(bad_actor.unwrap_or_else(|| forger.actor(1)));
    bad(&mut doc, &s)?;
    doc.commit();
    let bad = doc
        .get_last_local_change()
        .context("bad")?
        .raw_bytes()
        .to_vec();
    if !own {
        doc.set_actor(forger.actor(1));
    }
    let rec = new_record(
        &mut doc,
        &RecordId::generate().to_string(),
        "share",
        &s.blake.to_string(),
    )?;
    doc.put(&rec, "feeling", "fine")?;
    doc.commit();
    let after = doc
        .get_last_local_change()
        .context("after")?
        .raw_bytes()
        .to_vec();
    let before = forged_counts(&s.sim, "depends_on_refused");
    let records = s.sim.devices[0].journal().shared_records()?.len();
    let plain = forger.bundle(&s.sim, &[bad, after])?;
    forger.push(&mut s.sim, &plain)?;
    s.sim.settle()?;
    refused_everywhere(&s.sim, "depends_on_refused", &before)?;
    for d in &s.sim.devices {
        ensure!(
            d.journal().shared_records()?.len() == records,
            "{} took the dependent record",
            d.name
        );
    }
    Ok(())
}

/// The same from a device no one introduced: refused, but not kept on disk as refused for
/// good (anyone who can push could otherwise grow that list without end).
#[test]
fn a_change_under_an_epochs_actor_from_a_stranger_is_not_kept() -> Result<()> {
    let mut s = story(76)?;
    let mut silent = Forger::new(&s.sim, 1, s.blake)?;
    silent.introduced = true;
    let base = s.sim.devices[0].journal().document(Space::Couple)?;
    let mut doc = AutoCommit::load(&base)?.with_actor(epoch_actor(6));
    doc.put(automerge::ROOT, "epoch", 6_i64)?;
    doc.commit();
    let under_epoch = doc
        .get_last_local_change()
        .context("under the epoch's actor")?
        .raw_bytes()
        .to_vec();
    let kept = |s: &Story| -> Result<Vec<i64>> {
        s.sim
            .devices
            .iter()
            .map(|d| {
                let db = rusqlite::Connection::open(d.journal().store().path())?;
                Ok(db.query_row("SELECT COUNT(*) FROM refused_changes", [], |r| r.get(0))?)
            })
            .collect()
    };
    let before = kept(&s)?;
    let plain = silent.bundle(&s.sim, &[under_epoch])?;
    silent.push(&mut s.sim, &plain)?;
    s.sim.settle()?;
    ensure!(kept(&s)? == before, "{:?} -> {:?}", before, kept(&s)?);
    identical(&s.sim)
}

#[test]
fn a_replayed_signed_chunk_changes_nothing() -> Result<()> {
    let mut s = story(75)?;
    let mut forger = Forger::new(&s.sim, 1, s.blake)?;
    // An honest change of Blake's forger device (allowed), then the same chunk again under a
    // new number and again under the old one.
    let change = Forger::change(&s.sim, forger.actor(1), |doc| {
        let rec = new_record(
            doc,
            &RecordId::generate().to_string(),
            "share",
            &s.blake.to_string(),
        )?;
        doc.put(&rec, "feeling", "once")?;
        doc.put(&rec, "created_at", T0)?;
        Ok(())
    })?;
    let plain = forger.bundle(&s.sim, std::slice::from_ref(&change))?;
    forger.push(&mut s.sim, &plain)?;
    s.sim.settle()?;
    let records = s.sim.devices[0].journal().shared_records()?.len();
    forger.push(&mut s.sim, &plain)?;
    forger.push_as(&mut s.sim, forger.device, 1, &plain)?;
    s.sim.settle()?;
    for d in &s.sim.devices {
        ensure!(d.journal().shared_records()?.len() == records, "{}", d.name);
    }
    identical(&s.sim)
}

#[test]
fn numbers_pushed_under_another_devices_id_do_not_cost_it_its_edits() -> Result<()> {
    let mut s = story(76)?;
    let mut forger = Forger::new(&s.sim, 1, s.blake)?;
    // The forger takes Alex's device's next numbers at the relay first.
    let alex_device = *s.sim.devices[0].journal().device().as_bytes();
    let next = s.sim.devices[0]
        .journal()
        .sync_state(Space::Couple)?
        .next_seq;
    let change = Forger::change(&s.sim, forger.actor(1), |doc| {
        new_record(
            doc,
            &RecordId::generate().to_string(),
            "share",
            &s.blake.to_string(),
        )?;
        Ok(())
    })?;
    let plain = forger.bundle(&s.sim, &[change])?;
    for seq in next..next + 3 {
        forger.push_as(&mut s.sim, alex_device, seq, &plain)?;
    }
    let edit = s.sim.devices[0]
        .journal_mut()
        .add(Body::Boundary(Boundary {
            area: BoundaryArea::Contact,
            text: "Tell me first".into(),
            ..Default::default()
        }))?;
    s.sim.settle()?;
    for d in &s.sim.devices {
        ensure!(
            d.journal().get(edit).is_ok(),
            "{} lost Alex's edit to the forger's numbers",
            d.name
        );
    }
    identical(&s.sim)
}

#[test]
fn a_third_identity_never_joins_the_couple() -> Result<()> {
    let mut s = story(77)?;
    // Someone holding the couple's secret, with an identity of their own.
    let stranger = PartnerIdentity::generate()?;
    let key = DeviceKey::generate()?;
    let id = stranger.public().partner_id();
    let device = DeviceId::generate();
    let cert = stranger.certify(&s.sim.couple_keys.space_id, id, device, &key.public(), T0);
    let mut third = Forger {
        key,
        intro: Intro {
            identity: stranger.public(),
            cert,
        },
        device: *device.as_bytes(),
        next_seq: 1,
        introduced: false,
    };
    let before = forged_counts(&s.sim, "third_partner");
    let change = Forger::change(&s.sim, third.actor(1), |doc| {
        let (_, partners) = doc.get(ROOT, "partners")?.context("partners")?;
        let p = doc.put_object(&partners, id.to_string(), ObjType::Map)?;
        doc.put(&p, "name", "Casey")?;
        doc.put(&p, "joined_at", T0)?;
        Ok(())
    })?;
    let plain = third.bundle(&s.sim, &[change])?;
    third.push(&mut s.sim, &plain)?;
    s.sim.settle()?;
    for (i, d) in s.sim.devices.iter().enumerate() {
        ensure!(
            forged_counts(&s.sim, "third_partner")[i] > before[i],
            "{}: {:?}",
            d.name,
            d.problems
        );
        ensure!(
            d.journal().partners().len() == 2,
            "{} lists a third partner",
            d.name
        );
    }
    identical(&s.sim)
}

#[test]
fn a_snapshot_carrying_a_forged_change_is_refused() -> Result<()> {
    let mut s = story(78)?;
    let forger = Forger::new(&s.sim, 1, s.blake)?;
    // The forger's snapshot: the whole document plus a consent for Alex, with proofs that
    // verify for the forged change (signed by the forger's real key).
    let base = s.sim.devices[0].journal().document(Space::Couple)?;
    let mut doc = AutoCommit::load(&base)?.with_actor(forger.actor(1));
    let rec = record(&doc, s.boundary)?;
    let consents = map_at(&mut doc, &rec, "consents")?;
    let c = doc.put_object(&consents, s.alex.to_string(), ObjType::Map)?;
    doc.put(&c, "state", "declined")?;
    doc.commit();
    let change = doc.get_last_local_change().context("forged")?;
    let hash = change.hash().0;
    let proof = sign_change(&forger.key, &s.sim.couple_keys.space_id, &hash);
    // An honest device's snapshot gives every other change its proof; the forger adds its
    // introduction and the forged change's proof, and swaps in its document.
    let (honest, _) = s.sim.devices[0]
        .journal_mut()
        .snapshot_material(Space::Couple)?;
    let intros = usize::from(u16::from_be_bytes([honest[1], honest[2]]));
    let at = 3 + intros * INTRO_LEN;
    let proofs = u32::from_be_bytes(honest[at..at + 4].try_into()?) as usize;
    let end = at + 4 + proofs * 112;
    let mut part = vec![2u8];
    part.extend_from_slice(&u16::try_from(intros + 1)?.to_be_bytes());
    part.extend_from_slice(&honest[3..at]);
    part.extend_from_slice(&forger.intro.to_bytes());
    part.extend_from_slice(&u32::try_from(proofs + 1)?.to_be_bytes());
    part.extend_from_slice(&honest[at + 4..end]);
    part.extend_from_slice(&hash);
    part.extend_from_slice(&forger.key.public().key_id().0);
    part.extend_from_slice(&proof.0);
    part.extend_from_slice(&doc.save());
    let space = s.sim.couple_keys.space_id;
    let covers = s.sim.relay.space_mut(space).head;
    let plain = encode_snapshot(&[], &part);
    let payload = seal_snapshot(&s.sim.couple_keys.content, &space, covers, &plain)?;
    s.sim.relay.space_mut(space).snapshot = Some(Snapshot { covers, payload });
    // A new device of Alex's joins when the relay has pruned everything the snapshot covers.
    let late = s.sim.join_device(0)?;
    s.sim.relay.prune_early(space);
    s.sim.settle()?;
    let d = &s.sim.devices[late];
    ensure!(
        d.problems
            .iter()
            .any(|p| matches!(&p.kind, ProblemKind::Forged { breach, .. } if breach == "consent")),
        "the new device did not report the forged snapshot: {:?}",
        d.problems
    );
    ensure!(
        d.problems
            .iter()
            .any(|p| matches!(p.kind, ProblemKind::BadSnapshot { .. })),
        "{:?}",
        d.problems
    );
    // The relay pruned what honest snapshots covered: the next honest snapshot brings it the
    // journal without the forgery.
    s.sim.relay.behave();
    for n in 0..6 {
        s.sim.devices[n % 3]
            .journal_mut()
            .add(Body::Share(mend_core::model::Share {
                feeling: format!("more {n}"),
                tough_question: false,
            }))?;
        s.sim.settle()?;
    }
    identical(&s.sim)?;
    let b = s.sim.devices[late].journal().get(s.boundary)?;
    let Body::Boundary(b) = b.body else {
        anyhow::bail!("not a boundary");
    };
    ensure!(
        b.consents.get(&s.alex).map(|c| c.state) == Some(ConsentState::Agreed),
        "the forged consent got in: {:?}",
        b.consents
    );
    Ok(())
}

/// One step of a schedule with a forging device among honest ones.
#[derive(Clone, Debug)]
enum Step {
    /// An honest edit through the API (the forging device's own are forgeries instead).
    Add(usize, u8),
    /// An honest boundary, or an honest consent to one.
    Consent(usize, u8),
    Sync(usize),
    Deliver(u8),
    Advance(u16),
    RestartDevice(usize),
    /// The forging device pushes forbidden change `kind`.
    Forge(u8, u8),
}

fn step() -> impl Strategy<Value = Step> {
    let d = 0..4usize;
    prop_oneof![
        5 => (d.clone(), any::<u8>()).prop_map(|(d, x)| Step::Add(d, x)),
        2 => (d.clone(), any::<u8>()).prop_map(|(d, x)| Step::Consent(d, x)),
        4 => d.clone().prop_map(Step::Sync),
        6 => (1..20u8).prop_map(Step::Deliver),
        2 => (0..30_000u16).prop_map(Step::Advance),
        1 => d.prop_map(Step::RestartDevice),
        4 => (0..8u8, any::<u8>()).prop_map(|(k, x)| Step::Forge(k, x)),
    ]
}

/// A forbidden change of kind `kind` by device `f` (partner `p`), built on what `f` holds.
fn forged_change(sim: &Sim, f: usize, kind: u8, x: u8) -> Result<Option<Vec<u8>>> {
    let j = sim.devices[f].journal();
    let me = j.me();
    let other = j.partners().iter().map(|p| p.id).find(|p| *p != me);
    let theirs: Vec<_> = j
        .shared_records()?
        .into_iter()
        .filter(|r| Some(r.author) == other)
        .collect();
    let pick = |n: usize| usize::from(x) % n.max(1);
    let mut key_actor = sim.devices[f].key.public().key_id().0.to_vec();
    key_actor.extend_from_slice(&[x, kind, 0xF0, 1, 2, 3, 4, 5]);
    let mut actor = ActorId::from(key_actor);
    let base = j.document(Space::Couple)?;
    let mut doc = AutoCommit::load(&base)?;
    let (_, records) = doc.get(ROOT, "records")?.context("records")?;
    match kind {
        // Consenting for the other partner.
        0 => {
            let Some(other) = other else { return Ok(None) };
            let Some(b) = j
                .shared_records()?
                .into_iter()
                .filter(|r| matches!(r.body, Body::Boundary(_)))
                .nth(pick(4))
            else {
                return Ok(None);
            };
            doc.set_actor(actor);
            let rec = record(&doc, b.id)?;
            let consents = map_at(&mut doc, &rec, "consents")?;
            let c = doc.put_object(&consents, other.to_string(), ObjType::Map)?;
            doc.put(&c, "state", "declined")?;
        }
        // A record in the other partner's name.
        1 => {
            let Some(other) = other else { return Ok(None) };
            doc.set_actor(actor);
            let rec = doc.put_object(&records, RecordId::generate().to_string(), ObjType::Map)?;
            doc.put(&rec, "kind", "share")?;
            doc.put(&rec, "author", other.to_string())?;
            doc.put(&rec, "feeling", "FORGED")?;
        }
        // Rewriting or removing the other partner's record.
        2 | 3 => {
            let Some(r) = theirs.get(pick(theirs.len())) else {
                return Ok(None);
            };
            doc.set_actor(actor);
            let rec = record(&doc, r.id)?;
            if kind == 2 {
                doc.put(&rec, "feeling", "FORGED")?;
            } else {
                doc.put(&rec, "removed", true)?;
            }
        }
        // Its own record under another device's actor.
        4 => {
            let victim = (f + 1 + pick(sim.devices.len() - 1)) % sim.devices.len();
            let mut theirs = sim.devices[victim].journal().actor().to_vec();
            if theirs.len() > 16 {
                theirs[16..].copy_from_slice(&[x, 0xF1, 0, 0, 0, 0, 0, 1]);
            }
            actor = ActorId::from(theirs);
            doc.set_actor(actor);
            let rec = doc.put_object(&records, RecordId::generate().to_string(), ObjType::Map)?;
            doc.put(&rec, "kind", "share")?;
            doc.put(&rec, "author", me.to_string())?;
            doc.put(&rec, "feeling", "FORGED")?;
        }
        // A check-in under an id that is not its own for the day.
        5 => {
            doc.set_actor(actor);
            let rec = doc.put_object(&records, RecordId::generate().to_string(), ObjType::Map)?;
            doc.put(&rec, "kind", "check_in")?;
            doc.put(&rec, "author", me.to_string())?;
            doc.put(&rec, "local_date", j.today().to_string())?;
        }
        // A third partner's entry.
        6 => {
            doc.set_actor(actor);
            let (_, partners) = doc.get(ROOT, "partners")?.context("partners")?;
            let p = doc.put_object(&partners, PartnerId::generate().to_string(), ObjType::Map)?;
            doc.put(&p, "name", "FORGED")?;
        }
        // Wiping a consent map.
        _ => {
            let Some(b) = j
                .shared_records()?
                .into_iter()
                .filter(|r| matches!(r.body, Body::Boundary(_)))
                .nth(pick(4))
            else {
                return Ok(None);
            };
            doc.set_actor(actor);
            let rec = record(&doc, b.id)?;
            doc.put_object(&rec, "consents", ObjType::Map)?;
        }
    }
    doc.commit();
    Ok(doc.get_last_local_change().map(|c| c.raw_bytes().to_vec()))
}

fn run_with_forger(seed: u64, a: usize, b: usize, f: usize, steps: Vec<Step>) -> Result<()> {
    let mut sim = Sim::new(seed, a, b, 3)?;
    let n = sim.devices.len();
    let f = f % n;
    let partner = sim.devices[f].partner;
    let intro = sim
        .signer(partner, sim.devices[f].journal(), &sim.devices[f].key)
        .intro;
    let relay_id = [0xF0; 16];
    let mut next_seq = 1;
    let mut forged: Vec<automerge::ChangeHash> = Vec::new();
    let mut acked: Vec<(usize, RecordId)> = Vec::new();
    for s in steps {
        match s {
            Step::Add(d, x) | Step::Consent(d, x) if d % n == f => {
                // The forging device writes through the API too.
                let _ = x;
            }
            Step::Add(d, x) => {
                let d = d % n;
                let body = Body::Share(mend_core::model::Share {
                    feeling: format!("honest {x}"),
                    tough_question: false,
                });
                if let Ok(id) = sim.devices[d].journal_mut().add(body) {
                    acked.push((d, id));
                }
                sim.event(d, mend_core::sync::Event::LocalEdit)?;
            }
            Step::Consent(d, x) => {
                let d = d % n;
                if let Some(id) = sim.boundary_or_consent(d, x)? {
                    acked.push((d, id));
                }
            }
            Step::Sync(d) => sim.event(d % n, mend_core::sync::Event::Start)?,
            Step::Deliver(k) => {
                for _ in 0..k {
                    if !sim.deliver_one()? {
                        break;
                    }
                }
            }
            Step::Advance(ms) => sim.advance(i64::from(ms))?,
            Step::RestartDevice(d) => sim.restart_device(d % n)?,
            Step::Forge(kind, x) => {
                let Some(change) = forged_change(&sim, f, kind, x)? else {
                    continue;
                };
                let parsed = automerge::Change::from_bytes(change.clone())?;
                forged.push(parsed.hash());
                let key = &sim.devices[f].key;
                let proof = sign_change(key, &sim.couple_keys.space_id, &parsed.hash().0);
                let plain = encode_bundle(
                    &[intro],
                    &[(key.public().key_id().0, proof.0, change.as_slice())],
                );
                let aad = ChunkAad {
                    space_id: sim.couple_keys.space_id,
                    device: relay_id,
                    device_seq: next_seq,
                };
                let payload = seal_chunk(&sim.couple_keys.content, &aad, &plain)?;
                sim.relay.push_from(
                    sim.couple_keys.space_id,
                    mend_protocol::Push {
                        device_id: mend_protocol::DeviceId(relay_id),
                        device_seq: next_seq,
                        payload,
                    },
                );
                next_seq += 1;
            }
        }
    }
    sim.settle()?;
    identical(&sim)?;
    for d in &sim.devices {
        let j = d.journal();
        // Every honest edit whose call returned is everywhere.
        for (_, id) in &acked {
            ensure!(
                j.get(*id).is_ok() || j.records()?.iter().all(|r| r.id != *id),
                "{} lacks {id}",
                d.name
            );
        }
        // No forged operation anywhere: not one of their changes is in any document.
        let doc = AutoCommit::load(&j.document(Space::Couple)?)?;
        for h in &forged {
            ensure!(
                doc.get_change_by_hash(h).is_none(),
                "{} merged a forged change",
                d.name
            );
        }
        ensure!(j.partners().len() <= 2, "{} lists a third partner", d.name);
        for r in j.shared_records()? {
            ensure!(
                !format!("{:?}", r.body).contains("FORGED"),
                "{} shows forged words",
                d.name
            );
        }
        // Only forgeries were reported: the relay was honest.
        for p in &d.problems {
            ensure!(
                matches!(p.kind, ProblemKind::Forged { .. }),
                "{} reported {:?}",
                d.name,
                p
            );
        }
    }
    Ok(())
}

use proptest::{prelude::*, test_runner::RngSeed};

proptest! {
    // A fixed seed: CI runs the same schedules every time.
    #![proptest_config(ProptestConfig {
        cases: 256,
        rng_seed: RngSeed::Fixed(0x666f_7267),
        ..ProptestConfig::default()
    })]

    #[test]
    fn honest_devices_converge_around_a_forging_one(
        seed in any::<u64>(),
        a in 1..=2usize,
        b in 1..=2usize,
        f in 0..4usize,
        steps in prop::collection::vec(step(), 0..40),
    ) {
        if let Err(e) = run_with_forger(seed, a, b, f, steps) {
            prop_assert!(false, "{e:#}");
        }
    }
}

#[test]
fn journals_from_before_signing_upgrade_without_losing_an_edit() -> Result<()> {
    // Alex and Blake on a version from before signing.
    let mut sim = Sim::new_legacy(79, 1, 1, 1_000)?;
    sim.settle()?;
    let boundary = sim.devices[0].journal_mut().add(Body::Boundary(Boundary {
        area: BoundaryArea::Contact,
        text: "Before the update".into(),
        ..Default::default()
    }))?;
    sim.settle()?;
    let blake_boundary = sim.devices[0].journal().get(boundary)?;
    ensure!(blake_boundary.id == boundary);
    sim.devices[1]
        .journal_mut()
        .consent(boundary, ConsentState::Agreed)?;
    sim.settle()?;
    // Blake's phone is away; Alex writes twice more, and both reach the relay unsigned.
    sim.devices[1].offline = true;
    let mut edits = Vec::new();
    for n in 0..2 {
        edits.push(
            sim.devices[0]
                .journal_mut()
                .add(Body::Share(mend_core::model::Share {
                    feeling: format!("unsigned {n}"),
                    tough_question: false,
                }))?,
        );
        sim.event(0, mend_core::sync::Event::Start)?;
        while sim.deliver_one()? {}
    }
    // Alex's app updates first and writes again, signed.
    sim.upgrade(0)?;
    edits.push(
        sim.devices[0]
            .journal_mut()
            .add(Body::Share(mend_core::model::Share {
                feeling: "signed".into(),
                tough_question: false,
            }))?,
    );
    sim.event(0, mend_core::sync::Event::Start)?;
    while sim.deliver_one()? {}
    // Blake's app updates while away, then comes back: it refuses the unsigned chunks and
    // takes the same edits from Alex's signed copies.
    sim.upgrade(1)?;
    sim.settle()?;
    identical(&sim)?;
    for d in &sim.devices {
        for id in &edits {
            ensure!(d.journal().get(*id).is_ok(), "{} lacks {id}", d.name);
        }
        let b = d.journal().get(boundary)?;
        let Body::Boundary(b) = b.body else {
            anyhow::bail!("not a boundary");
        };
        ensure!(b.consents.len() == 2, "{}: {:?}", d.name, b.consents);
    }
    // A new device of Blake's, signing from the start, gets the whole journal.
    let late = sim.join_device(1)?;
    sim.settle()?;
    identical(&sim)?;
    for id in &edits {
        ensure!(sim.devices[late].journal().get(*id).is_ok());
    }
    Ok(())
}

/// Every operation of the app, by both partners, passes every other device's checks: the
/// guard refuses no honest write (a refused honest write would be an edit lost in silence).
#[test]
fn every_honest_operation_passes_every_devices_checks() -> Result<()> {
    use mend_core::model::{
        ClaimStatus, PartnerView, ProcessingNote, QuestionStatus, Share, Validation,
    };
    let mut s = story(80)?;
    let today = s.today;
    // Blake rewords Alex's boundary, then consents; Alex consents again.
    {
        let b = s.sim.devices[2].journal_mut();
        let mut rec = b.get(s.boundary)?;
        if let Body::Boundary(bd) = &mut rec.body {
            bd.text = "No contact with them, at all".into();
        }
        b.edit(s.boundary, rec.body)?;
        b.consent(s.boundary, ConsentState::Agreed)?;
    }
    s.sim.settle()?;
    s.sim.devices[0]
        .journal_mut()
        .consent(s.boundary, ConsentState::Agreed)?;
    // The ledger: each partner on their own side.
    s.sim.devices[0]
        .journal_mut()
        .claim(s.alex_commitment, today, ClaimStatus::Done, "did it")?;
    s.sim.settle()?;
    s.sim.devices[2].journal_mut().confirm(
        s.alex_commitment,
        today,
        PartnerView::Confirmed,
        "seen",
    )?;
    s.sim.devices[0].journal_mut().respond_to_need(
        s.blake_need,
        NeedResponseKind::Reassured,
        "of course",
    )?;
    // A question answered by the partner, put off, and closed by its asker.
    let answer = s.sim.devices[2]
        .journal_mut()
        .add(Body::Answer(mend_core::model::Answer {
            question: Some(s.alex_question),
            text: "Scared".into(),
        }))?;
    s.sim.settle()?;
    s.sim.devices[0]
        .journal_mut()
        .set_question_status(s.alex_question, QuestionStatus::Open)?;
    s.sim.settle()?;
    s.sim.devices[2]
        .journal_mut()
        .set_question_status(s.alex_question, QuestionStatus::NotNow)?;
    s.sim.devices[2]
        .journal_mut()
        .add(Body::Validation(Validation {
            target: Some(s.alex_check_in),
            ..Default::default()
        }))?;
    // A private note shared later; a check-in with a private field.
    let note = s.sim.devices[2]
        .journal_mut()
        .add(Body::ProcessingNote(ProcessingNote {
            text: "thinking".into(),
        }))?;
    s.sim.devices[2].journal_mut().share(note)?;
    s.sim.devices[2].journal_mut().add(Body::CheckIn(CheckIn {
        local_date: Some(today),
        safety: Some(2),
        trust: Some(3),
        private_fields: vec![mend_core::model::CheckInField::Trust],
        ..Default::default()
    }))?;
    s.sim.settle()?;
    // Removals of every kind with a ledger, consents or a response, by their authors.
    for (d, id) in [
        (2, s.blake_need),
        (2, s.blake_commitment),
        (0, s.boundary),
        (0, s.alex_commitment),
        (2, answer),
        (2, s.blake_moment),
    ] {
        s.sim.devices[d].journal_mut().remove(id)?;
    }
    // And life goes on after them.
    let after = s.sim.devices[0].journal_mut().add(Body::Share(Share {
        feeling: "still here".into(),
        tough_question: false,
    }))?;
    s.sim.settle()?;
    identical(&s.sim)?;
    for d in &s.sim.devices {
        ensure!(d.problems.is_empty(), "{}: {:?}", d.name, d.problems);
        ensure!(d.journal().get(after).is_ok());
        ensure!(d.journal().get(s.boundary)?.removed);
    }
    Ok(())
}

/// A record of Alex's taken over from a past of Blake's choosing (before it existed), with a
/// higher operation counter to win the map key; and Alex's future check-in id squatted.
#[test]
fn a_partner_cannot_take_over_or_squat_the_others_record_ids() -> Result<()> {
    let mut s = story(81)?;
    let mut forger = Forger::new(&s.sim, 1, s.blake)?;
    let before = forged_counts(&s.sim, "record_id");
    let mut doc = AutoCommit::load(&s.early)?.with_actor(forger.actor(1));
    let (_, records) = doc.get(ROOT, "records")?.context("records")?;
    for n in 0..300 {
        doc.put(ROOT, "schema_version", 1 + (n % 2))?;
    }
    let rec = doc.put_object(&records, s.boundary.to_string(), ObjType::Map)?;
    doc.put(&rec, "kind", "boundary")?;
    doc.put(&rec, "author", s.blake.to_string())?;
    doc.put(&rec, "text", "hijacked")?;
    doc.commit();
    let change = doc
        .get_last_local_change()
        .context("forged")?
        .raw_bytes()
        .to_vec();
    let plain = forger.bundle(&s.sim, &[change])?;
    forger.push(&mut s.sim, &plain)?;
    s.sim.settle()?;
    refused_everywhere(&s.sim, "record_id", &before)?;
    for d in &s.sim.devices {
        ensure!(d.journal().get(s.boundary)?.author == s.alex, "{}", d.name);
    }
    // Alex's check-in id for tomorrow, filled first by Blake with a removed share.
    let tomorrow = s.today.add_days(1);
    let squat = RecordId::derive_check_in(s.alex, tomorrow);
    let change = Forger::change(&s.sim, forger.actor(2), |doc| {
        let rec = new_record(doc, &squat.to_string(), "share", &s.blake.to_string())?;
        doc.put(&rec, "removed", true)?;
        Ok(())
    })?;
    let plain = forger.bundle(&s.sim, &[change])?;
    forger.push(&mut s.sim, &plain)?;
    s.sim.settle()?;
    let check_in = s.sim.devices[0].journal_mut().add(Body::CheckIn(CheckIn {
        local_date: Some(tomorrow),
        safety: Some(4),
        ..Default::default()
    }))?;
    ensure!(check_in == squat);
    s.sim.settle()?;
    identical(&s.sim)?;
    for d in &s.sim.devices {
        let c = d.journal().get(check_in)?;
        ensure!(c.author == s.alex && !c.removed, "{}: {c:?}", d.name);
        // Alex's own devices were never blamed for a forgery.
        ensure!(
            d.problems.iter().all(|p| !matches!(
                &p.kind,
                ProblemKind::Forged { partner, .. } if *partner == s.alex.to_string()
            )),
            "{}: {:?}",
            d.name,
            d.problems
        );
    }
    Ok(())
}

/// Blake's own question answered by Blake, the answer first in its chunk; and a link spelt
/// another way (upper case, braces) to slip past the check.
#[test]
fn links_are_judged_on_the_changes_own_past_and_spelt_one_way() -> Result<()> {
    let mut s = story(82)?;
    let mut forger = Forger::new(&s.sim, 1, s.blake)?;
    let base = s.sim.devices[0].journal().document(Space::Couple)?;
    let mut doc = AutoCommit::load(&base)?.with_actor(forger.actor(1));
    let (_, records) = doc.get(ROOT, "records")?.context("records")?;
    let q = RecordId::generate();
    let rec = doc.put_object(&records, q.to_string(), ObjType::Map)?;
    doc.put(&rec, "kind", "question")?;
    doc.put(&rec, "author", s.blake.to_string())?;
    doc.commit();
    let question = doc
        .get_last_local_change()
        .context("q")?
        .raw_bytes()
        .to_vec();
    // The answer, made on the same past as the question (it does not depend on it).
    let mut doc2 = AutoCommit::load(&base)?.with_actor(forger.actor(2));
    let (_, records2) = doc2.get(ROOT, "records")?.context("records")?;
    let rec = doc2.put_object(&records2, RecordId::generate().to_string(), ObjType::Map)?;
    doc2.put(&rec, "kind", "answer")?;
    doc2.put(&rec, "author", s.blake.to_string())?;
    doc2.put(&rec, "question", q.to_string())?;
    doc2.commit();
    let answer = doc2
        .get_last_local_change()
        .context("a")?
        .raw_bytes()
        .to_vec();
    let plain = forger.bundle(&s.sim, &[answer, question])?;
    let records_before = s.sim.devices[0].journal().shared_records()?.len();
    forger.push(&mut s.sim, &plain)?;
    s.sim.settle()?;
    // Blake's answer to Blake's own question, spelt in capitals.
    let own = s.sim.devices[2]
        .journal_mut()
        .add(Body::Question(Question {
            text: "Mine".into(),
            ..Default::default()
        }))?;
    s.sim.settle()?;
    let change = Forger::change(&s.sim, forger.actor(3), |doc| {
        let rec = new_record(
            doc,
            &RecordId::generate().to_string(),
            "answer",
            &s.blake.to_string(),
        )?;
        doc.put(
            &rec,
            "question",
            format!("{{{}}}", own.to_string().to_uppercase()),
        )?;
        Ok(())
    })?;
    let plain = forger.bundle(&s.sim, &[change])?;
    forger.push(&mut s.sim, &plain)?;
    s.sim.settle()?;
    identical(&s.sim)?;
    for d in &s.sim.devices {
        let j = d.journal();
        ensure!(
            j.shared_records()?.len() <= records_before + 2,
            "{} took a forged answer",
            d.name
        );
        ensure!(
            j.shared_records()?
                .iter()
                .all(|r| !matches!(r.body, Body::Answer(_))),
            "{} shows a self-answer",
            d.name
        );
    }
    Ok(())
}

/// Two signed changes under one actor and sequence number, and a bundle no device can read,
/// from Blake's known device: refused, and snapshots go on.
#[test]
fn a_change_automerge_refuses_is_refused_and_snapshots_go_on() -> Result<()> {
    let mut s = story(83)?;
    let mut forger = Forger::new(&s.sim, 1, s.blake)?;
    // First an honest change of the device's own, so its chunks count as real ones.
    let fine = Forger::change(&s.sim, forger.actor(9), |doc| {
        new_record(
            doc,
            &RecordId::generate_for(s.blake).to_string(),
            "share",
            &s.blake.to_string(),
        )?;
        Ok(())
    })?;
    let plain = forger.bundle(&s.sim, &[fine])?;
    forger.push(&mut s.sim, &plain)?;
    s.sim.settle()?;
    let make = |text: &str| {
        Forger::change(&s.sim, forger.actor(1), |doc| {
            let rec = new_record(
                doc,
                &RecordId::generate_for(s.blake).to_string(),
                "share",
                &s.blake.to_string(),
            )?;
            doc.put(&rec, "feeling", text)?;
            Ok(())
        })
    };
    let (one, two) = (make("one")?, make("two")?);
    let plain = forger.bundle(&s.sim, &[one])?;
    forger.push(&mut s.sim, &plain)?;
    let plain = forger.bundle(&s.sim, &[two])?;
    forger.push(&mut s.sim, &plain)?;
    forger.push(&mut s.sim, &[1, 0, 0, 0, 0, 0, 9])?;
    s.sim.settle()?;
    let space = s.sim.couple_keys.space_id;
    let covers_before = s
        .sim
        .relay
        .space_mut(space)
        .snapshot
        .as_ref()
        .map_or(0, |x| x.covers);
    for n in 0..8 {
        s.sim.devices[n % 3]
            .journal_mut()
            .add(Body::Share(mend_core::model::Share {
                feeling: format!("later {n}"),
                tough_question: false,
            }))?;
        s.sim.settle()?;
    }
    identical(&s.sim)?;
    let covers = s
        .sim
        .relay
        .space_mut(space)
        .snapshot
        .as_ref()
        .map_or(0, |x| x.covers);
    ensure!(covers > covers_before + 4, "snapshots stopped at {covers}");
    for d in &s.sim.devices {
        ensure!(
            d.journal().sync_state(Space::Couple)?.heal_after == 0,
            "{} waits to heal",
            d.name
        );
    }
    Ok(())
}

/// Blake's own commitment and need, removed, their partner's view and response deleted, and
/// un-removed, all in one change: the partner's words wiped from a live record.
#[test]
fn removing_and_taking_the_removal_back_cannot_wipe_the_partners_words() -> Result<()> {
    use mend_core::model::PartnerView;
    let mut s = story(84)?;
    let mut forger = Forger::new(&s.sim, 1, s.blake)?;
    let today = s.today;
    s.sim.devices[0].journal_mut().confirm(
        s.blake_commitment,
        today,
        PartnerView::Disagree,
        "not seen",
    )?;
    s.sim.devices[0].journal_mut().respond_to_need(
        s.blake_need,
        NeedResponseKind::LetsTalk,
        "later",
    )?;
    s.sim.settle()?;
    let before = forged_counts(&s.sim, "wipe");
    let change = Forger::change(&s.sim, forger.actor(1), |doc| {
        for (id, field) in [(s.blake_commitment, "views"), (s.blake_need, "response")] {
            let rec = record(doc, id)?;
            doc.put(&rec, "removed", true)?;
            doc.delete(&rec, field)?;
            doc.put(&rec, "removed", false)?;
        }
        Ok(())
    })?;
    let plain = forger.bundle(&s.sim, &[change])?;
    forger.push(&mut s.sim, &plain)?;
    s.sim.settle()?;
    refused_everywhere(&s.sim, "wipe", &before)?;
    for d in &s.sim.devices {
        let c = d.journal().get(s.blake_commitment)?;
        let Body::Commitment(c) = c.body else {
            anyhow::bail!("not a commitment");
        };
        ensure!(c.views.len() == 1, "{}: the view was wiped", d.name);
        let n = d.journal().get(s.blake_need)?;
        let Body::Need(n) = n.body else {
            anyhow::bail!("not a need");
        };
        ensure!(n.response.is_some(), "{}: the response was wiped", d.name);
    }
    Ok(())
}

/// An operation of the wrong shape (a list position in a map), then a write into what it
/// made: Automerge would take the first and corrupt its document, then panic on the second.
#[test]
fn an_operation_of_the_wrong_shape_is_refused_without_a_crash() -> Result<()> {
    let mut s = story(85)?;
    let mut forger = Forger::new(&s.sim, 1, s.blake)?;
    let before = forged_counts(&s.sim, "structure");
    let base = s.sim.devices[0].journal().document(Space::Couple)?;
    let mut doc = AutoCommit::load(&base)?.with_actor(forger.actor(1));
    let rec = record(&doc, s.blake_moment)?;
    // A list position in a map: a plain Automerge transaction refuses it, so the change is
    // put together from a list in a scratch document and renamed into the record.
    let list = doc.put_object(&rec, "tags", ObjType::List)?;
    let child = doc.insert_object(&list, 0, ObjType::Map)?;
    doc.put(&child, "x", 1)?;
    doc.commit();
    let mut change = doc.get_last_local_change().context("change")?.decode();
    // The map's insert now names the record map itself as where it goes, at a list position.
    let record_obj = change.operations[0].obj.clone();
    change.operations[1].obj = record_obj;
    change.hash = None;
    let bent = automerge::Change::from(change);
    let plain = forger.bundle(&s.sim, &[bent.raw_bytes().to_vec()])?;
    forger.push(&mut s.sim, &plain)?;
    s.sim.settle()?;
    refused_everywhere(&s.sim, "structure", &before)
}

/// One change that makes two record maps at one id, the second replacing nothing (its
/// predecessor left out), so both stand side by side as a conflict: only the one that wins
/// was checked before, and the other, filed under Alex's name, showed as a version of the
/// record by Alex with Blake's words.
#[test]
fn two_records_made_at_one_id_in_one_change_are_refused() -> Result<()> {
    let mut s = story(86)?;
    let mut forger = Forger::new(&s.sim, 1, s.blake)?;
    let before = forged_counts(&s.sim, "structure");
    let base = s.sim.devices[0].journal().document(Space::Couple)?;
    let mut doc = AutoCommit::load(&base)?.with_actor(forger.actor(1));
    let id = RecordId::generate_for(s.blake).to_string();
    let forged = new_record(&mut doc, &id, "share", &s.alex.to_string())?;
    // Nothing written into it but its kind and author: it would pass as Alex's empty share.
    let _ = forged;
    let own = new_record(&mut doc, &id, "share", &s.blake.to_string())?;
    doc.put(&own, "feeling", "mine")?;
    doc.put(&own, "tough_question", false)?;
    doc.commit();
    let mut change = doc.get_last_local_change().context("change")?.decode();
    let second = change
        .operations
        .iter()
        .rposition(|op| op.obj_type() == Some(ObjType::Map))
        .context("no second map")?;
    change.operations[second].pred = automerge::legacy::SortedVec::new();
    change.hash = None;
    let bent = automerge::Change::from(change);
    let plain = forger.bundle(&s.sim, &[bent.raw_bytes().to_vec()])?;
    forger.push(&mut s.sim, &plain)?;
    s.sim.settle()?;
    refused_everywhere(&s.sim, "structure", &before)
}

/// A couple from before signing, both partners updated, many writes since, and a snapshot:
/// a new device fills up from it (every change in it, the old ones too, has its proof).
#[test]
fn a_new_device_of_a_couple_from_before_signing_loads_its_snapshot() -> Result<()> {
    let mut sim = Sim::new_legacy(95, 1, 1, 4)?;
    sim.settle()?;
    for n in 0..6 {
        sim.devices[n % 2]
            .journal_mut()
            .add(Body::Share(mend_core::model::Share {
                feeling: format!("before {n}"),
                tough_question: false,
            }))?;
        sim.settle()?;
    }
    sim.upgrade(0)?;
    sim.upgrade(1)?;
    sim.settle()?;
    for n in 0..10 {
        sim.devices[n % 2]
            .journal_mut()
            .add(Body::Share(mend_core::model::Share {
                feeling: format!("after {n}"),
                tough_question: false,
            }))?;
        sim.settle()?;
    }
    let space = sim.couple_keys.space_id;
    ensure!(
        sim.relay.space_mut(space).snapshot.is_some(),
        "no snapshot yet"
    );
    let late = sim.join_device(0)?;
    sim.relay.prune_early(space);
    sim.settle()?;
    sim.relay.behave();
    sim.settle()?;
    identical(&sim)?;
    let n = sim.devices[late].journal().shared_records()?.len();
    ensure!(
        n == 16,
        "the new device has {n} of 16: {:?}",
        sim.devices[late].problems
    );
    for d in &sim.devices {
        ensure!(
            d.problems
                .iter()
                .all(|p| !matches!(p.kind, ProblemKind::Forged { .. })),
            "{}: {:?}",
            d.name,
            d.problems
        );
    }
    Ok(())
}

/// A snapshot whose proofs for changes every device already holds are garbage: loading it
/// must not replace the good proofs a device keeps, or that device's own snapshots would be
/// refused by every new device.
#[test]
fn a_snapshot_cannot_poison_the_proofs_a_device_keeps() -> Result<()> {
    let mut s = story(86)?;
    let space = s.sim.couple_keys.space_id;
    // What Blake's device holds now: the proofs the forged snapshot will bend.
    let held = AutoCommit::load(&s.sim.devices[2].journal().document(Space::Couple)?)?
        .get_changes(&[])
        .iter()
        .map(|c| c.hash().0)
        .collect::<std::collections::HashSet<_>>();
    // Alex writes once more and it reaches the relay, not yet Blake.
    s.sim.devices[0]
        .journal_mut()
        .add(Body::Share(mend_core::model::Share {
            feeling: "new".into(),
            tough_question: false,
        }))?;
    s.sim.event(0, mend_core::sync::Event::Start)?;
    while s.sim.deliver_one()? {}
    let (honest, _) = s.sim.devices[0]
        .journal_mut()
        .snapshot_material(Space::Couple)?;
    let intros = usize::from(u16::from_be_bytes([honest[1], honest[2]]));
    let at = 3 + intros * INTRO_LEN;
    let proofs = u32::from_be_bytes(honest[at..at + 4].try_into()?) as usize;
    let mut bent = honest.clone();
    for i in 0..proofs {
        let entry = at + 4 + i * 112;
        let hash: [u8; 32] = honest[entry..entry + 32].try_into()?;
        if held.contains(&hash) {
            // The signature of a change Blake's device holds already, bent.
            bent[entry + 48] ^= 0x01;
        }
    }
    let covers = s.sim.relay.space_mut(space).head;
    let plain = encode_snapshot(&[], &bent);
    let payload = seal_snapshot(&s.sim.couple_keys.content, &space, covers, &plain)?;
    s.sim.relay.space_mut(space).snapshot = Some(Snapshot { covers, payload });
    // Blake's device is sent to it (the relay claims it pruned the log) and takes it: the one
    // change it lacks is Alex's, with a good proof.
    s.sim.relay.prune_early(space);
    s.sim.settle()?;
    s.sim.relay.behave();
    ensure!(
        s.sim.devices[2]
            .journal()
            .sync_state(Space::Couple)?
            .snapshot_covers
            >= covers,
        "Blake's device did not load the snapshot"
    );
    // Blake's device now makes the snapshots; a new device loads one.
    s.sim.devices[0].offline = true;
    s.sim.devices[1].offline = true;
    for n in 0..6 {
        s.sim.devices[2]
            .journal_mut()
            .add(Body::Share(mend_core::model::Share {
                feeling: format!("after {n}"),
                tough_question: false,
            }))?;
        s.sim.event(2, mend_core::sync::Event::Start)?;
        while s.sim.deliver_one()? {}
    }
    let late = s.sim.join_device(1)?;
    s.sim.relay.prune_early(space);
    s.sim.devices[0].offline = true;
    s.sim.devices[1].offline = true;
    for _ in 0..3 {
        s.sim.event(late, mend_core::sync::Event::Start)?;
        while s.sim.deliver_one()? {}
    }
    ensure!(
        s.sim.devices[late].problems.iter().all(|p| !matches!(
            p.kind,
            ProblemKind::BadSnapshot { .. } | ProblemKind::Forged { .. }
        )),
        "{:?}",
        s.sim.devices[late].problems
    );
    s.sim.relay.behave();
    s.sim.settle()?;
    identical(&s.sim)
}

/// The erase marker sits on a partner's own entry: Blake's device cannot say Alex erased the
/// journal (which would stop Alex's devices), nor write a marker that is not a time.
#[test]
fn only_a_partners_own_devices_write_their_erase_marker() -> Result<()> {
    let mut s = story(83)?;
    let mut forger = Forger::new(&s.sim, 1, s.blake)?;
    let (alex, blake) = (s.alex.to_string(), s.blake.to_string());
    forge(&mut s, &mut forger, 1, "other_partner", |doc, _| {
        let (_, partners) = doc.get(ROOT, "partners")?.context("partners")?;
        let (_, entry) = doc.get(&partners, alex.as_str())?.context("alex")?;
        doc.put(&entry, "erased_at", T0)?;
        Ok(())
    })?;
    forge(&mut s, &mut forger, 2, "structure", |doc, _| {
        let (_, partners) = doc.get(ROOT, "partners")?.context("partners")?;
        let (_, entry) = doc.get(&partners, blake.as_str())?.context("blake")?;
        doc.put(&entry, "erased_at", "yesterday")?;
        Ok(())
    })?;
    for d in &s.sim.devices {
        ensure!(
            d.journal().erasure()?.is_none(),
            "{} believes the journal was erased",
            d.name
        );
        ensure!(
            !d.problems
                .iter()
                .any(|p| matches!(p.kind, ProblemKind::Erased { .. })),
            "{}",
            d.name
        );
    }
    Ok(())
}

#[test]
fn an_announcement_of_a_new_epoch_in_the_other_partners_name_is_refused() -> Result<()> {
    let mut s = story(73)?;
    let mut forger = Forger::new(&s.sim, 1, s.blake)?;
    let alex = s.alex.to_string();
    // Blake's device announcing an epoch as Alex (whose personal space Alex's devices would
    // then move to secrets Blake chose).
    forge(&mut s, &mut forger, 1, "other_partner", |doc, _| {
        let a = doc.put_object(automerge::ROOT, "epoch:1", ObjType::Map)?;
        doc.put(&a, "by", alex.as_str())?;
        Ok(())
    })?;
    // Not an epoch number.
    forge(&mut s, &mut forger, 2, "structure", |doc, _| {
        doc.put_object(automerge::ROOT, "epoch:01", ObjType::Map)?;
        Ok(())
    })?;
    Ok(())
}

/// Introduces `forger` (with its certificate written in `partner`'s entry, as the app writes
/// it), pushing at the relay under an id of its own, and settles.
fn introduce(sim: &mut Sim, forger: &mut Forger, partner: PartnerId) -> Result<()> {
    let (cert, device) = (forger.intro.cert.to_bytes(), forger.intro.cert.device);
    let change = Forger::change(sim, forger.actor(1), |doc| {
        let entry = partner_entry(doc, partner)?;
        doc.put(
            &entry,
            format!("device:{device}"),
            ScalarValue::Bytes(cert.to_vec()),
        )?;
        Ok(())
    })?;
    let plain = forger.bundle(sim, &[change])?;
    forger.push_as(sim, *DeviceId::generate().as_bytes(), 1, &plain)?;
    sim.settle()
}

/// Alex's phone (0) and tablet (1), each of which has written; Blake's phone (2).
fn three_devices(seed: u64) -> Result<Sim> {
    let mut sim = Sim::new(seed, 2, 1, 1_000)?;
    for d in 0..3 {
        sim.devices[d]
            .journal_mut()
            .add(Body::HonestyMoment(HonestyMoment {
                text: "here".into(),
                ..Default::default()
            }))?;
    }
    sim.settle()?;
    Ok(sim)
}

/// After a move, every device but the `removed` ones is in epoch 1 and reads what Blake's
/// phone writes there; the removed ones were told and read none of it.
fn moved_without(sim: &mut Sim, removed: &[usize]) -> Result<()> {
    for _ in 0..4 {
        sim.settle()?;
    }
    for (i, d) in sim.devices.iter().enumerate() {
        if removed.contains(&i) {
            ensure!(d.removed, "{} was not shut out", d.name);
        } else {
            ensure!(!d.removed, "{} was shut out", d.name);
            ensure!(d.journal().epoch()? == 1, "{} did not move", d.name);
        }
    }
    let id = sim.devices[2]
        .journal_mut()
        .add(Body::HonestyMoment(HonestyMoment {
            text: "after the move".into(),
            ..Default::default()
        }))?;
    sim.settle()?;
    for (i, d) in sim.devices.iter().enumerate() {
        let reads = d.journal().get(id).is_ok();
        ensure!(reads != removed.contains(&i), "{} reads: {reads}", d.name);
    }
    Ok(())
}

/// Blake's modified app certifies a device of Blake's under the id of Alex's tablet, so that
/// the id stands for a device of each partner. Both are listed, and Alex can still remove the
/// lost tablet: the other partner cannot keep a device of Alex's in the journal by naming one
/// of theirs after it.
#[test]
fn a_device_id_the_other_partner_certified_again_can_still_be_removed() -> Result<()> {
    let mut sim = three_devices(76)?;
    let tablet = sim.devices[1].journal().device();
    let blake = sim.devices[2].journal().me();
    let mut forger = Forger::named(&sim, 1, blake, tablet)?;
    introduce(&mut sim, &mut forger, blake)?;
    let listed = sim.devices[0].journal().devices();
    let claims: Vec<bool> = listed
        .iter()
        .filter(|d| d.id == tablet)
        .map(|d| d.mine)
        .collect();
    ensure!(
        claims.contains(&true) && claims.contains(&false),
        "the id is not listed for both partners: {listed:?}"
    );
    sim.rotate(0, Reason::RemoveDevices, &[1])?;
    moved_without(&mut sim, &[1])?;
    let sealed_to = sim.devices[0].journal().epoch_members()?;
    ensure!(!sealed_to.contains(&tablet), "{sealed_to:?}");
    Ok(())
}

/// Whoever holds Alex's lost tablet holds Alex's identity key, and certifies a key of its own
/// as Alex's under the id of Blake's phone. When Alex removes the tablet, the new epoch's box
/// for that id goes to Blake's phone, whose id was made for its key, not to the thief's key
/// (which would open the couple's new secrets and Alex's new personal secret).
#[test]
fn a_lost_phone_cannot_take_another_devices_box_under_its_id() -> Result<()> {
    let mut sim = three_devices(78)?;
    let blake_phone = sim.devices[2].journal().device();
    let alex = sim.devices[0].journal().me();
    let mut thief = Forger::named(&sim, 0, alex, blake_phone)?;
    introduce(&mut sim, &mut thief, alex)?;
    let listed = sim.devices[0].journal().devices();
    ensure!(
        listed.iter().filter(|d| d.id == blake_phone).count() == 2,
        "the thief's key is not listed: {listed:?}"
    );
    sim.rotate(0, Reason::RemoveDevices, &[1])?;
    moved_without(&mut sim, &[1])
}

/// Whoever holds Alex's lost tablet certifies a new key of its own as a device of Alex's and
/// introduces it without writing it in the partners list. It would get a box in the rotation
/// that removes the tablet: it is listed among Alex's devices, so Alex removes it too, and the
/// new epoch's secrets are sealed to neither.
#[test]
fn a_device_introduced_without_its_entry_is_listed_and_shut_out() -> Result<()> {
    let mut sim = three_devices(79)?;
    let alex = sim.devices[0].journal().me();
    let key = DeviceKey::generate()?;
    let hidden = DeviceId::generate_for_key(&key.public().key_id().0);
    let mut thief = Forger::named(&sim, 0, alex, hidden)?;
    thief.key = key;
    thief.intro.cert = sim.identities[0].certify(
        &sim.couple_keys.space_id,
        alex,
        hidden,
        &thief.key.public(),
        T0,
    );
    // Introduced with a change that writes nothing in the partners list.
    let change = Forger::change(&sim, thief.actor(1), |doc| {
        new_record(doc, "hidden-1", "honesty_moment", &alex.to_string())?;
        Ok(())
    })?;
    let plain = thief.bundle(&sim, &[change])?;
    thief.push_as(&mut sim, *DeviceId::generate().as_bytes(), 1, &plain)?;
    sim.settle()?;
    for d in [0, 1] {
        let listed = sim.devices[d].journal().devices();
        ensure!(
            listed.iter().any(|i| i.id == hidden && i.mine),
            "{} does not list the hidden device: {listed:?}",
            sim.devices[d].name
        );
    }
    let tablet = sim.devices[1].journal().device();
    sim.devices[0]
        .journal_mut()
        .rotate(Reason::RemoveDevices, &[tablet, hidden])?;
    moved_without(&mut sim, &[1])?;
    let sealed_to = sim.devices[0].journal().epoch_members()?;
    ensure!(
        !sealed_to.contains(&hidden) && !sealed_to.contains(&tablet),
        "a box went to a removed device: {sealed_to:?}"
    );
    Ok(())
}

#[test]
fn an_announcement_no_device_can_follow_does_not_stop_sync() -> Result<()> {
    let mut s = story(74)?;
    let mut forger = Forger::new(&s.sim, 1, s.blake)?;
    let blake = s.blake.to_string();
    // Well formed enough for the guard, but naming no cut and holding no box.
    let change = Forger::change(&s.sim, forger.actor(1), |doc| {
        let a = doc.put_object(automerge::ROOT, "epoch:1", ObjType::Map)?;
        doc.put(&a, "by", blake.as_str())?;
        Ok(())
    })?;
    let plain = forger.bundle(&s.sim, &[change])?;
    forger.push(&mut s.sim, &plain)?;
    s.sim.settle()?;
    let note = s.sim.devices[0]
        .journal_mut()
        .add(Body::HonestyMoment(HonestyMoment {
            text: "still syncing".into(),
            ..Default::default()
        }))?;
    s.sim.settle()?;
    for d in &s.sim.devices {
        ensure!(d.journal().get(note).is_ok(), "{} stopped syncing", d.name);
        ensure!(d.journal().epoch()? == 0, "{} moved", d.name);
    }
    Ok(())
}

/// One of Blake's devices, running a modified app, announces a new epoch that "rejoins" Blake
/// under an identity key of its own choosing (as if Blake had lost every device). Only the
/// other partner may vouch for a partner's new identity: every honest device refuses it, none
/// is taken for removed, Blake's identity stays as it was, and Blake's honest phone goes on
/// writing.
#[test]
fn a_device_cannot_vouch_for_its_own_partners_new_identity() -> Result<()> {
    forge_own_rejoin(91, &|id| id.to_string())?;
    // The partner's id spelled another way (upper case, no hyphens) is refused alike.
    forge_own_rejoin(92, &|id| id.to_string().to_uppercase())?;
    forge_own_rejoin(93, &|id| id.to_string().replace('-', ""))
}

fn forge_own_rejoin(seed: u64, spelled: &dyn Fn(&PartnerId) -> String) -> Result<()> {
    let mut s = story(seed)?;
    let mut forger = Forger::new(&s.sim, 1, s.blake)?;
    // Even with an ask naming Blake in the document (which no honest device could write).
    let blake = s.blake;
    let ask = Forger::change(&s.sim, forger.actor(2), |doc| {
        let obj = doc.put_object(ROOT, format!("rejoin_ask:{blake}"), ObjType::Map)?;
        doc.put(&obj, "by", blake.to_string())?;
        doc.put(&obj, "at", T0)?;
        Ok(())
    })?;
    let plain = forger.bundle(&s.sim, &[ask])?;
    forger.push(&mut s.sim, &plain)?;
    s.sim.settle()?;
    let spelled_blake = spelled(&s.blake);
    forge_rejoin(&mut s, &mut forger, &spelled_blake, "other_identity")
}

/// Pushes, from `forger` (a device of Blake's), an announcement of epoch 1 that lets a new
/// key in as the partner spelled `named`, with a box every honest device can open; checks
/// that every honest device refused it as `breach` and still reaches the others.
fn forge_rejoin(s: &mut Story, forger: &mut Forger, named: &str, breach: &str) -> Result<()> {
    let before = forged_counts(&s.sim, breach);
    let taken = PartnerIdentity::generate()?.public();
    let space_id = s.sim.couple_keys.space_id;
    let secret = mend_core::crypto::SpaceSecret::generate()?;
    // A box every honest device can open, as `Journal::rotate` seals it.
    let mut boxes = Vec::new();
    for d in &s.sim.devices {
        let device = d.journal().device();
        let mut context = b"mend/v1/epoch\0".to_vec();
        context.extend_from_slice(&space_id);
        context.extend_from_slice(&1u32.to_be_bytes());
        context.extend_from_slice(device.as_bytes());
        let mut plain = vec![1u8];
        plain.extend_from_slice(&1u32.to_be_bytes());
        plain.extend_from_slice(secret.expose());
        plain.push(0);
        let sealed = mend_core::crypto::seal_to_device(&d.key.public(), &context, &plain)?;
        boxes.push((device.to_string(), sealed));
    }
    let heads = s.sim.devices[0].journal().heads(Space::Couple)?;
    let (blake, device) = (
        s.blake,
        DeviceId::from_uuid(uuid::Uuid::from_bytes(forger.device)),
    );
    let change = Forger::change(&s.sim, forger.actor(1), |doc| {
        let obj = doc.put_object(ROOT, "epoch:1", ObjType::Map)?;
        doc.put(&obj, "by", blake.to_string())?;
        doc.put(&obj, "device", device.to_string())?;
        doc.put(&obj, "at", T0)?;
        // A rejoin names its cut under `cut` (`heads` stays empty, for older builds).
        for name in ["heads", "cut", "removed"] {
            let list = doc.put_object(&obj, name, ObjType::List)?;
            if name == "cut" {
                for (i, head) in heads.iter().enumerate() {
                    doc.insert(&list, i, head.as_str())?;
                }
            }
        }
        let b = doc.put_object(&obj, "boxes", ObjType::Map)?;
        for (device, sealed) in &boxes {
            doc.put(&b, device.as_str(), ScalarValue::Bytes(sealed.clone()))?;
        }
        doc.put(&obj, "rejoin", named)?;
        doc.put(
            &obj,
            "rejoin_key",
            ScalarValue::Bytes(taken.to_bytes().to_vec()),
        )?;
        Ok(())
    })?;
    let plain = forger.bundle(&s.sim, &[change])?;
    forger.push(&mut s.sim, &plain)?;
    s.sim.settle()?;
    for d in &s.sim.devices {
        ensure!(!d.removed, "{} was shut out", d.name);
        for partner in [s.alex, s.blake] {
            ensure!(
                d.journal().identity_in_force(partner)? != Some(taken),
                "{} took the forger's key as a partner's identity",
                d.name
            );
        }
    }
    let id = s.sim.devices[2]
        .journal_mut()
        .add(Body::HonestyMoment(HonestyMoment {
            kind: HonestyKind::VolunteeredTruth,
            text: "still me".into(),
            ..Default::default()
        }))?;
    s.sim.settle()?;
    ensure!(
        s.sim.devices[0]
            .journal()
            .records()?
            .iter()
            .any(|r| r.id == id),
        "Blake's honest phone no longer reaches Alex"
    );
    refused_everywhere(&s.sim, breach, &before)
}

#[test]
fn a_rejoin_needs_a_standing_ask_that_no_device_of_the_partner_cancelled() -> Result<()> {
    // Never asked: Blake's device lets a new key in as Alex out of the blue.
    let mut s = story(94)?;
    let mut forger = Forger::new(&s.sim, 1, s.blake)?;
    let alex = s.alex.to_string();
    forge_rejoin(&mut s, &mut forger, &alex, "rejoin_unasked")?;

    // Asked by Blake's honest phone, cancelled by Alex's phone, announced anyway.
    let mut s = story(95)?;
    let asked = s.sim.devices[2].journal_mut().ask_rejoin()?;
    ensure!(asked.partner == s.alex && asked.asked_by == s.blake);
    s.sim.settle()?;
    for d in &s.sim.devices {
        let seen = d.journal().rejoin_ask(s.alex)?;
        ensure!(
            seen.is_some_and(|a| a.cancelled_at.is_none()),
            "{} does not see the ask",
            d.name
        );
    }
    s.sim.devices[0].journal_mut().cancel_rejoin()?;
    s.sim.settle()?;
    // Blake's honest phone will not go ahead, whatever its wait.
    let blake_phone = s.sim.devices[2].journal_mut();
    blake_phone.set_rejoin_wait(std::time::Duration::ZERO);
    let key = PartnerIdentity::generate()?.public();
    let refused = blake_phone.rotate_for_rejoin(s.alex, key);
    ensure!(
        matches!(&refused, Err(mend_core::Error::Invalid(m)) if m.contains("cancelled")),
        "{refused:?}"
    );
    let mut forger = Forger::new(&s.sim, 1, s.blake)?;
    let alex = s.alex.to_string();
    forge_rejoin(&mut s, &mut forger, &alex, "rejoin_unasked")?;

    // Asked again, it stands again, and once it has stood the wait Blake's phone goes ahead.
    let again = s.sim.devices[2].journal_mut().ask_rejoin()?;
    ensure!(again.cancelled_at.is_none());
    s.sim.settle()?;
    s.sim.devices[2].journal_mut().note_rejoin_asks()?;
    ensure!(
        s.sim.devices[0]
            .journal()
            .rejoin_ask(s.alex)?
            .is_some_and(|a| a.cancelled_at.is_none()),
        "Alex's phone does not see the new ask"
    );
    let blake_phone = s.sim.devices[2].journal_mut();
    let waiting = blake_phone.rotate_for_rejoin(s.alex, key);
    ensure!(waiting.is_ok(), "{waiting:?}");
    Ok(())
}

#[test]
fn only_the_other_partner_asks_and_only_the_named_partner_cancels() -> Result<()> {
    let mut s = story(96)?;
    // A device of Alex's asking to let a new device in as Alex.
    let before = forged_counts(&s.sim, "rejoin_ask");
    let mut alex_forger = Forger::new(&s.sim, 0, s.alex)?;
    let alex = s.alex;
    let change = Forger::change(&s.sim, alex_forger.actor(1), |doc| {
        let obj = doc.put_object(ROOT, format!("rejoin_ask:{alex}"), ObjType::Map)?;
        doc.put(&obj, "by", alex.to_string())?;
        doc.put(&obj, "at", T0)?;
        Ok(())
    })?;
    let plain = alex_forger.bundle(&s.sim, &[change])?;
    alex_forger.push(&mut s.sim, &plain)?;
    s.sim.settle()?;
    let after = forged_counts(&s.sim, "rejoin_ask");
    ensure!(
        after.iter().zip(&before).all(|(a, b)| a > b),
        "Alex's own ask was not refused everywhere: {before:?} -> {after:?}"
    );
    // A device of Blake's asking in Alex's name.
    let mut blake_forger = Forger::new(&s.sim, 1, s.blake)?;
    forge(&mut s, &mut blake_forger, 2, "rejoin_ask", |doc, s| {
        let obj = doc.put_object(ROOT, format!("rejoin_ask:{}", s.alex), ObjType::Map)?;
        doc.put(&obj, "by", s.alex.to_string())?;
        doc.put(&obj, "at", T0)?;
        Ok(())
    })?;
    // Blake asks honestly; a device of Blake's then cancels it for Alex.
    blake_asks(&mut s)?;
    // (A device's refusals of one kind are reported once: another forging device.)
    let mut blake_forger = Forger::new(&s.sim, 1, s.blake)?;
    forge(&mut s, &mut blake_forger, 3, "rejoin_ask", |doc, s| {
        let Some((Value::Object(ObjType::Map), ask)) =
            doc.get(ROOT, format!("rejoin_ask:{}", s.alex))?
        else {
            anyhow::bail!("no ask");
        };
        doc.put(&ask, "cancelled", T0)?;
        Ok(())
    })?;
    // An ask dated past the year 9999 (which no date code can show).
    let mut blake_forger = Forger::new(&s.sim, 1, s.blake)?;
    forge(&mut s, &mut blake_forger, 5, "structure", |doc, s| {
        let obj = doc.put_object(ROOT, format!("rejoin_ask:{}", s.alex), ObjType::Map)?;
        doc.put(&obj, "by", s.blake.to_string())?;
        doc.put(&obj, "at", i64::MAX)?;
        Ok(())
    })?;
    // An ask under a partner id spelled another way.
    let mut blake_forger = Forger::new(&s.sim, 1, s.blake)?;
    forge(&mut s, &mut blake_forger, 4, "structure", |doc, s| {
        let spelled = s.alex.to_string().to_uppercase();
        let obj = doc.put_object(ROOT, format!("rejoin_ask:{spelled}"), ObjType::Map)?;
        doc.put(&obj, "by", s.blake.to_string())?;
        doc.put(&obj, "at", T0)?;
        Ok(())
    })?;
    for d in &s.sim.devices {
        ensure!(
            d.journal()
                .rejoin_ask(s.alex)?
                .is_some_and(|a| a.cancelled_at.is_none() && a.asked_by == s.blake),
            "{} lost Blake's ask",
            d.name
        );
        ensure!(
            d.journal().rejoin_ask(s.blake)?.is_none(),
            "an ask named Blake"
        );
    }
    Ok(())
}

/// A clock a test moves by hand.
static NOW: std::sync::atomic::AtomicI64 = std::sync::atomic::AtomicI64::new(T0);

fn moved_clock() -> i64 {
    NOW.load(std::sync::atomic::Ordering::Relaxed)
}

#[test]
fn an_ask_made_offline_waits_from_when_it_reached_the_relay() -> Result<()> {
    const HOUR: i64 = 3_600_000;
    let mut s = story(97)?;
    let wait = std::time::Duration::from_secs(72 * 3600);
    let key = PartnerIdentity::generate()?.public();
    let blake_phone = s.sim.devices[2].journal_mut();
    blake_phone.set_clock(moved_clock);
    blake_phone.set_rejoin_wait(wait);
    // Asked while offline: not yet at the relay, so the wait has not begun.
    blake_phone.ask_rejoin()?;
    blake_phone.note_rejoin_asks()?;
    NOW.store(T0 + 73 * HOUR, std::sync::atomic::Ordering::Relaxed);
    let refused = blake_phone.rotate_for_rejoin(s.alex, key);
    ensure!(
        matches!(&refused, Err(mend_core::Error::Invalid(m)) if m.contains("not reached the relay")),
        "an ask nobody could see yet let a rejoin go ahead: {refused:?}"
    );
    // Three days later it reaches the relay: Alex's devices see it now, and the wait starts.
    s.sim.settle()?;
    let blake_phone = s.sim.devices[2].journal_mut();
    blake_phone.note_rejoin_asks()?;
    let ask = blake_phone
        .rejoin_ask(s.alex)?
        .ok_or_else(|| anyhow::anyhow!("no ask"))?;
    ensure!(
        ask.sent_at == Some(T0 + 73 * HOUR) && ask.ready_at(wait) == Some(T0 + 145 * HOUR),
        "{ask:?}"
    );
    NOW.store(T0 + 144 * HOUR, std::sync::atomic::Ordering::Relaxed);
    let refused = blake_phone.rotate_for_rejoin(s.alex, key);
    ensure!(
        matches!(&refused, Err(mend_core::Error::Invalid(m)) if m.contains("72 hours")),
        "the rejoin went ahead before the ask stood at the relay for the wait: {refused:?}"
    );
    NOW.store(T0 + 145 * HOUR, std::sync::atomic::Ordering::Relaxed);
    let moved = blake_phone.rotate_for_rejoin(s.alex, key);
    ensure!(moved.is_ok(), "{moved:?}");
    Ok(())
}

#[test]
fn a_rejoin_that_crossed_a_cancel_says_so_on_the_replaced_devices() -> Result<()> {
    let mut s = story(98)?;
    blake_asks(&mut s)?;
    // Alex's phone cancels while Blake's phone, not having heard, lets a new key in as Alex.
    let cancelled = s.sim.devices[0].journal_mut().cancel_rejoin()?;
    blake_rejoins_alex_now(&mut s)?;
    s.sim.settle()?;
    let phone = &s.sim.devices[0];
    ensure!(phone.removed, "Alex's phone was not replaced");
    ensure!(
        phone.despite_cancel == cancelled.cancelled_at,
        "Alex's phone is not told its cancel was crossed: {:?}",
        phone.despite_cancel
    );
    // Alex's other device, which never cancelled, is told the same: the cancel was Alex's.
    ensure!(
        s.sim.devices[1].removed,
        "Alex's second device was not replaced"
    );
    ensure!(s.sim.devices[1].despite_cancel == cancelled.cancelled_at);
    Ok(())
}

#[test]
fn a_rejoin_before_the_wait_says_so_on_the_replaced_devices() -> Result<()> {
    let mut s = story(99)?;
    blake_asks(&mut s)?;
    // Alex's phone notes the ask as shown; Alex's tablet never does (it was off).
    s.sim.devices[0].journal_mut().note_rejoin_asks()?;
    // Blake's phone does not wait (a modified app, or a clock set forward).
    blake_rejoins_alex_now(&mut s)?;
    s.sim.settle()?;
    for d in [0, 1] {
        let device = &s.sim.devices[d];
        ensure!(device.removed, "{} was not replaced", device.name);
        ensure!(
            device.early && device.despite_cancel.is_none(),
            "{} is not told the rejoin came before the wait",
            device.name
        );
    }

    // The same with an ask Alex's phone was shown long enough (its own wait shortened): the
    // ordinary words, nothing early.
    let mut s = story(100)?;
    blake_asks(&mut s)?;
    let alex_phone = s.sim.devices[0].journal_mut();
    alex_phone.note_rejoin_asks()?;
    alex_phone.set_rejoin_wait(std::time::Duration::ZERO);
    blake_rejoins_alex_now(&mut s)?;
    s.sim.settle()?;
    let phone = &s.sim.devices[0];
    ensure!(
        phone.removed && !phone.early,
        "an ask shown for the wait was called early"
    );
    Ok(())
}

/// A clock for the honest-rejoin test alone (tests run at once, each with its own clock).
static HONEST_NOW: std::sync::atomic::AtomicI64 = std::sync::atomic::AtomicI64::new(T0);

fn honest_clock() -> i64 {
    HONEST_NOW.load(std::sync::atomic::Ordering::Relaxed)
}

#[test]
fn an_honest_rejoin_as_soon_as_the_wait_is_over_does_not_look_early() -> Result<()> {
    const HOUR: i64 = 3_600_000;
    let mut s = story(102)?;
    let wait = std::time::Duration::from_secs(72 * 3600);
    for d in [0, 2] {
        let journal = s.sim.devices[d].journal_mut();
        journal.set_clock(honest_clock);
        journal.set_rejoin_wait(wait);
    }
    blake_asks(&mut s)?;
    s.sim.devices[2].journal_mut().note_rejoin_asks()?;
    // Alex's phone is shown the ask an hour after it reached the relay.
    HONEST_NOW.store(T0 + HOUR, std::sync::atomic::Ordering::Relaxed);
    let alex_phone = s.sim.devices[0].journal_mut();
    alex_phone.note_rejoin_asks()?;
    let shown = alex_phone.rejoin_ask(s.alex)?.and_then(|a| a.shown_at);
    ensure!(shown == Some(T0 + HOUR), "{shown:?}");
    // Blake's phone goes ahead the moment the wait is over.
    HONEST_NOW.store(T0 + 72 * HOUR, std::sync::atomic::Ordering::Relaxed);
    let blake_phone = s.sim.devices[2].journal_mut();
    ensure!(
        blake_phone.rejoin_refusal(s.alex)?.is_none(),
        "not ready at the wait"
    );
    blake_phone.rotate_for_rejoin(s.alex, PartnerIdentity::generate()?.public())?;
    s.sim.settle()?;
    let phone = &s.sim.devices[0];
    ensure!(phone.removed, "Alex's phone was not replaced");
    ensure!(!phone.early, "an honest rejoin looked early");
    // Alex's tablet, never shown the ask, says the rejoin came before it was.
    ensure!(s.sim.devices[1].early, "the tablet was not told");
    Ok(())
}

#[test]
fn notes_about_asks_do_not_outlive_a_move() -> Result<()> {
    let mut s = story(103)?;
    blake_asks(&mut s)?;
    s.sim.devices[2].journal_mut().note_rejoin_asks()?;
    s.sim.devices[0].journal_mut().note_rejoin_asks()?;
    for (d, key) in [(2, "rejoin_ask_sent"), (0, "rejoin_ask_seen")] {
        let noted = s.sim.devices[d].journal().store().meta(key)?;
        ensure!(noted.is_some_and(|n| !n.is_empty()), "{key} was not noted");
    }
    // A forget moves every device to a document that numbers its objects afresh: an ask made
    // there could take the old one's id, so nothing noted about the old one may carry over.
    s.sim.devices[2]
        .journal_mut()
        .rotate(mend_core::journal::Reason::Forget, &[])?;
    s.sim.settle()?;
    for (d, key) in [(2, "rejoin_ask_sent"), (0, "rejoin_ask_seen")] {
        let journal = s.sim.devices[d].journal();
        ensure!(
            journal.epoch()? == 1,
            "{} did not move",
            s.sim.devices[d].name
        );
        let noted = journal.store().meta(key)?;
        ensure!(
            noted.as_deref().is_none_or(|n| n.is_empty()),
            "{key} outlived the move: {noted:?}"
        );
    }
    Ok(())
}

/// Alex's phone (0) and tablet (1), Blake's phone (2) and tablet (3); whoever holds Alex's
/// lost tablet certifies a key of its own as Alex's under the id of Blake's device `named`;
/// then Blake's phone asks to let a new device in as Alex and goes ahead at once.
fn rejoin_past_a_forged_id(seed: u64, named: usize) -> Result<(Sim, mend_core::Result<[u8; 32]>)> {
    let mut sim = Sim::new(seed, 2, 2, 1_000)?;
    for d in 0..4 {
        sim.devices[d]
            .journal_mut()
            .add(Body::HonestyMoment(HonestyMoment {
                text: "here".into(),
                ..Default::default()
            }))?;
    }
    sim.settle()?;
    let alex = sim.devices[0].journal().me();
    let id = sim.devices[named].journal().device();
    let mut thief = Forger::named(&sim, 0, alex, id)?;
    introduce(&mut sim, &mut thief, alex)?;
    sim.devices[2].journal_mut().ask_rejoin()?;
    sim.settle()?;
    let blake_phone = sim.devices[2].journal_mut();
    blake_phone.note_rejoin_asks()?;
    blake_phone.set_rejoin_wait(std::time::Duration::ZERO);
    let rejoin = blake_phone.rotate_for_rejoin(alex, PartnerIdentity::generate()?.public());
    Ok((sim, rejoin))
}

/// The thief names Blake's tablet: the rejoin removes Alex's devices, not the tablet, whose
/// box goes to its own key.
#[test]
fn a_lost_phone_cannot_have_a_rejoin_shut_out_the_other_partners_device() -> Result<()> {
    let (mut sim, rejoin) = rejoin_past_a_forged_id(104, 3)?;
    rejoin?;
    moved_without(&mut sim, &[0, 1])
}

/// The thief names Blake's phone, the one that rejoins Alex: the rejoin is not refused as
/// removing the rejoining device.
#[test]
fn a_lost_phone_cannot_refuse_a_rejoin_by_naming_the_rejoining_device() -> Result<()> {
    let (mut sim, rejoin) = rejoin_past_a_forged_id(105, 2)?;
    rejoin?;
    moved_without(&mut sim, &[0, 1])
}

/// Blake's phone asks to let a new device in as Alex, and every device syncs.
fn blake_asks(s: &mut Story) -> Result<()> {
    s.sim.devices[2].journal_mut().ask_rejoin()?;
    s.sim.settle()
}

/// Blake's phone, its ask at the relay, lets a new key in as Alex without waiting (a
/// modified app, or a wait the test shortened).
fn blake_rejoins_alex_now(s: &mut Story) -> Result<()> {
    let alex = s.alex;
    let blake_phone = s.sim.devices[2].journal_mut();
    blake_phone.note_rejoin_asks()?;
    blake_phone.set_rejoin_wait(std::time::Duration::ZERO);
    blake_phone.rotate_for_rejoin(alex, PartnerIdentity::generate()?.public())?;
    Ok(())
}

/// A chain of `levels` nested maps under `text` of record `id`, made in one change by the
/// forger's actor `n`: a few bytes a level. (Put together from its first two levels, as an
/// Automerge transaction takes seconds a thousand levels in a debug build.)
fn deep_chain(s: &Story, forger: &Forger, n: u8, id: RecordId, levels: u64) -> Result<Vec<u8>> {
    use automerge::legacy::{ObjectId, OpId};
    let base = s.sim.devices[0].journal().document(Space::Couple)?;
    let mut doc = AutoCommit::load(&base)?.with_actor(forger.actor(n));
    let rec = record(&doc, id)?;
    let obj = doc.put_object(&rec, "text", ObjType::Map)?;
    doc.put_object(&obj, "x", ObjType::Map)?;
    doc.commit();
    let mut change = doc.get_last_local_change().context("change")?.decode();
    let level = change.operations.pop().context("no second level")?;
    let start = change.start_op.get();
    for i in 1..levels {
        let mut op = level.clone();
        op.obj = ObjectId::Id(OpId(start + i - 1, change.actor_id.clone()));
        change.operations.push(op);
    }
    change.hash = None;
    Ok(automerge::Change::from(change).raw_bytes().to_vec())
}

/// One signed change nesting thousands of maps (in a field its author may write) would cost a
/// copy of its path per level to check, and a stack frame per level to read: every honest
/// device refuses it at once, and goes on starting and syncing.
#[test]
fn a_deep_chain_of_maps_in_one_change_is_refused_at_once() -> Result<()> {
    let mut s = story(97)?;
    for (n, levels) in [(1u8, 5_000u64), (2, 40_000)] {
        // A device of its own for each, as a refusal is reported once a device.
        let mut forger = Forger::new(&s.sim, 1, s.blake)?;
        let before = forged_counts(&s.sim, "structure");
        let change = deep_chain(&s, &forger, n, s.blake_need, levels)?;
        let plain = forger.bundle(&s.sim, &[change])?;
        let started = std::time::Instant::now();
        forger.push(&mut s.sim, &plain)?;
        s.sim.settle()?;
        refused_everywhere(&s.sim, "structure", &before)
            .with_context(|| format!("{levels} levels"))?;
        // Generous for a loaded machine: checking every level's whole path took minutes.
        ensure!(
            started.elapsed() < std::time::Duration::from_secs(60),
            "{levels} levels took {:?} to refuse",
            started.elapsed()
        );
    }
    for d in 0..s.sim.devices.len() {
        s.sim.restart_device(d)?;
    }
    s.sim.settle()?;
    identical(&s.sim)?;
    for d in &s.sim.devices {
        let need = d.journal().get(s.blake_need)?;
        ensure!(
            matches!(&need.body, Body::Need(n) if n.text == "Tell me when you are late"),
            "{}: the need changed",
            d.name
        );
    }
    Ok(())
}

/// The same chain built one level a change, in a field only its author writes (so no rule of
/// the field's own refuses it): the change that goes deeper than the app ever writes is
/// refused, and with it what builds on it.
#[test]
fn a_deep_chain_built_a_level_at_a_time_in_an_own_field_is_refused() -> Result<()> {
    let mut s = story(98)?;
    let mut forger = Forger::new(&s.sim, 1, s.blake)?;
    let before = forged_counts(&s.sim, "structure");
    let base = s.sim.devices[0].journal().document(Space::Couple)?;
    let mut doc = AutoCommit::load(&base)?.with_actor(forger.actor(1));
    let rec = record(&doc, s.blake_need)?;
    let mut obj = doc.put_object(&rec, "text", ObjType::Map)?;
    doc.commit();
    let mut changes = vec![
        doc.get_last_local_change()
            .context("change")?
            .raw_bytes()
            .to_vec(),
    ];
    for _ in 0..40 {
        obj = doc.put_object(&obj, "x", ObjType::Map)?;
        doc.commit();
        changes.push(
            doc.get_last_local_change()
                .context("change")?
                .raw_bytes()
                .to_vec(),
        );
    }
    // One change a chunk, as a device syncing over days would send them.
    for change in changes {
        let plain = forger.bundle(&s.sim, &[change])?;
        forger.push(&mut s.sim, &plain)?;
    }
    s.sim.settle()?;
    refused_everywhere(&s.sim, "structure", &before)?;
    for d in &s.sim.devices {
        let couple = d.journal().document(Space::Couple)?;
        let doc = AutoCommit::load(&couple)?;
        let mut obj = record(&doc, s.blake_need)?;
        let mut depth = 2;
        for key in ["text"].into_iter().chain(std::iter::repeat("x")) {
            match doc.get(&obj, key)? {
                Some((Value::Object(_), child)) => {
                    obj = child;
                    depth += 1;
                }
                _ => break,
            }
        }
        ensure!(depth <= 8, "{}: a chain {depth} maps deep got in", d.name);
    }
    Ok(())
}

/// Alex agreed to a boundary's words; Blake rewords it (as the app lets either partner), then
/// records other words under the hash of the ones Alex agreed to, so that Alex's consent would
/// read as given to them. Every device refuses that, and the packet shows what Alex agreed to.
#[test]
fn the_words_a_consent_was_given_to_cannot_be_changed() -> Result<()> {
    use mend_core::export::{Format, PacketOptions};
    let mut s = story(99)?;
    let agreed = "No contact with them";
    let b = s.sim.devices[2].journal_mut();
    let Body::Boundary(mut boundary) = b.get(s.boundary)?.body else {
        anyhow::bail!("not a boundary");
    };
    boundary.text = "Contact when we both know".into();
    b.edit(s.boundary, Body::Boundary(boundary))?;
    s.sim.settle()?;
    let mut forger = Forger::new(&s.sim, 1, s.blake)?;
    forge(&mut s, &mut forger, 1, "wording", |doc, s| {
        let rec = record(doc, s.boundary)?;
        let wordings = map_at(doc, &rec, "wordings")?;
        doc.put(
            &wordings,
            mend_core::wording_hash(agreed),
            "Contact whenever you like",
        )?;
        Ok(())
    })?;
    for d in &s.sim.devices {
        let j = d.journal();
        let (from, to) = j.default_packet_range()?;
        let options = PacketOptions {
            from,
            to,
            kinds: Vec::new(),
        };
        let packet = j.export_packet(&options, Format::Markdown)?;
        ensure!(
            packet.contains(&format!("An earlier wording: {agreed}")),
            "{}: {packet}",
            d.name
        );
        ensure!(!packet.contains("whenever"), "{}: {packet}", d.name);
    }
    Ok(())
}

/// A forged write into a copy of the couple's document.
type Attack = dyn Fn(&mut AutoCommit, &Story) -> Result<()>;

/// Values of a shape the app never writes, in fields the partner may write into the other's
/// records: each would leave the record unreadable, gone from every list and figure and the
/// packet, and no longer editable by its author. Every device refuses each one.
#[test]
fn values_of_the_wrong_shape_cannot_make_the_partners_records_vanish() -> Result<()> {
    let mut s = story(100)?;
    let alex_need = s.sim.devices[0].journal_mut().add(Body::Need(Need {
        kind: NeedKind::Therapy,
        text: "Come with me on Thursdays".into(),
        ..Default::default()
    }))?;
    s.sim.settle()?;
    let attacks: Vec<(&str, RecordId, Box<Attack>)> = vec![
        (
            "a consent that is a number",
            s.boundary,
            Box::new(|doc, s| {
                let rec = record(doc, s.boundary)?;
                let consents = map_at(doc, &rec, "consents")?;
                doc.put(&consents, s.blake.to_string(), 5)?;
                Ok(())
            }),
        ),
        (
            "a view under no date",
            s.alex_commitment,
            Box::new(|doc, s| {
                let rec = record(doc, s.alex_commitment)?;
                let views = map_at(doc, &rec, "views")?;
                let v = doc.put_object(&views, "x", ObjType::Map)?;
                doc.put(&v, "view", "confirmed")?;
                Ok(())
            }),
        ),
        (
            "a response that is a string",
            alex_need,
            Box::new(move |doc, _| {
                let rec = record(doc, alex_need)?;
                doc.put(&rec, "response", "x")?;
                Ok(())
            }),
        ),
        (
            "a boundary's words that are a number",
            s.boundary,
            Box::new(|doc, s| {
                let rec = record(doc, s.boundary)?;
                doc.put(&rec, "text", 5)?;
                Ok(())
            }),
        ),
    ];
    for (n, (what, victim, attack)) in attacks.into_iter().enumerate() {
        // A device of its own for each, as a refusal is reported once a device.
        let mut forger = Forger::new(&s.sim, 1, s.blake)?;
        forge(&mut s, &mut forger, n as u8 + 1, "shape", |doc, s| {
            attack(doc, s)
        })
        .with_context(|| what.to_owned())?;
        for d in &s.sim.devices {
            let listed = d.journal().records()?.iter().any(|r| r.id == victim);
            ensure!(listed, "{}: {what} made the record vanish", d.name);
        }
    }
    // Alex can still edit each of them.
    let a = s.sim.devices[0].journal_mut();
    for id in [s.boundary, s.alex_commitment, alex_need] {
        let mut body = a.get(id)?.body;
        match &mut body {
            Body::Boundary(b) => b.text = "No contact, and I will tell you".into(),
            Body::Commitment(c) => c.text = "Phone home at seven".into(),
            Body::Need(n) => n.text = "Come with me on Fridays".into(),
            _ => anyhow::bail!("an unexpected kind"),
        }
        a.edit(id, body)?;
    }
    s.sim.settle()?;
    identical(&s.sim)
}

/// Blake's modified app consents to a boundary Alex made after a forget's cut, under an actor
/// of the old unsigned length spelled as Alex's phone's key id (key ids are public in the
/// certificates). Alex's phone must not take that change for its own when it moves: it would
/// write Blake's consent again as Alex's, the new epoch would refuse the boundary, and it
/// would be lost from every replica.
#[test]
fn a_partner_cannot_pass_a_change_off_as_the_moving_devices_own() -> Result<()> {
    // Alex's phone (0); Blake's phone (1) and tablet (2).
    let mut sim = Sim::new(106, 1, 2, 1_000)?;
    for d in 0..3 {
        sim.devices[d]
            .journal_mut()
            .add(Body::HonestyMoment(HonestyMoment {
                text: "here".into(),
                ..Default::default()
            }))?;
    }
    sim.settle()?;
    let blake = sim.devices[1].journal().me();
    let mut forger = Forger::new(&sim, 1, blake)?;
    introduce(&mut sim, &mut forger, blake)?;
    sim.rotate(1, Reason::Forget, &[])?;
    let text = "made after the cut";
    let late = sim.devices[0].journal_mut().add(Body::Boundary(Boundary {
        area: BoundaryArea::Contact,
        text: text.into(),
        ..Default::default()
    }))?;
    sim.round_of(0)?;
    let alex_phone = ActorId::from(sim.devices[0].key.public().key_id().0.to_vec());
    let change = Forger::change(&sim, alex_phone, |doc| {
        let rec = record(doc, late)?;
        let consents = map_at(doc, &rec, "consents")?;
        let c = doc.put_object(&consents, blake.to_string(), ObjType::Map)?;
        doc.put(&c, "state", "agreed")?;
        doc.put(&c, "wording", mend_core::wording_hash(text))?;
        doc.put(&c, "at", T0)?;
        Ok(())
    })?;
    let plain = forger.bundle(&sim, &[change])?;
    forger.push(&mut sim, &plain)?;
    sim.round_of(0)?;
    ensure!(
        sim.devices[0].journal().epoch()? == 0,
        "Alex's phone moved early"
    );
    let Body::Boundary(b) = sim.devices[0].journal().get(late)?.body else {
        anyhow::bail!("not a boundary");
    };
    ensure!(
        b.consents.contains_key(&blake),
        "the forged consent did not arrive"
    );
    for _ in 0..4 {
        sim.settle()?;
    }
    for d in &sim.devices {
        let j = d.journal();
        ensure!(j.epoch()? == 1, "{} did not move", d.name);
        let kept = j.get(late).ok().map(|r| r.body);
        ensure!(
            matches!(&kept, Some(Body::Boundary(b)) if b.text == text),
            "{} lost Alex's boundary: {kept:?}",
            d.name
        );
    }
    Ok(())
}

/// A newer version adds keys the app here does not know: a note beside a consent, a field of
/// a boundary either partner edits. Readers ignore them, so receivers take them: refusing them
/// would cut the newer version's devices off for good.
#[test]
fn keys_a_newer_version_adds_are_taken() -> Result<()> {
    let mut s = story(107)?;
    s.sim.devices[2]
        .journal_mut()
        .consent(s.boundary, ConsentState::Agreed)?;
    s.sim.settle()?;
    let mut newer = Forger::new(&s.sim, 1, s.blake)?;
    introduce(&mut s.sim, &mut newer, s.blake)?;
    let change = Forger::change(&s.sim, newer.actor(2), |doc| {
        let rec = record(doc, s.boundary)?;
        let consents = map_at(doc, &rec, "consents")?;
        let mine = map_at(doc, &consents, &s.blake.to_string())?;
        doc.put(&mine, "note", "with a note")?;
        doc.put(&rec, "reminder", "weekly")?;
        Ok(())
    })?;
    let plain = newer.bundle(&s.sim, &[change])?;
    newer.push(&mut s.sim, &plain)?;
    s.sim.settle()?;
    for d in &s.sim.devices {
        let refused: Vec<_> = d
            .problems
            .iter()
            .filter(|p| matches!(p.kind, ProblemKind::Forged { .. }))
            .collect();
        ensure!(refused.is_empty(), "{} refused: {refused:?}", d.name);
        let Body::Boundary(b) = d.journal().get(s.boundary)?.body else {
            anyhow::bail!("not a boundary");
        };
        ensure!(
            b.consents.get(&s.blake).map(|c| c.state) == Some(ConsentState::Agreed),
            "{}: {b:?}",
            d.name
        );
    }
    Ok(())
}

/// Blake writes two replies in one change, each to the other: a thread with no start. The
/// guard lets a reply whose share it has not seen stand (an epoch move replays such replies),
/// so every device takes them, and every device still makes its packet. A reply to itself,
/// and one to what is not a share, are refused everywhere.
#[test]
fn replies_that_loop_or_chain_cannot_break_a_thread() -> Result<()> {
    use mend_core::export::{Format, PacketOptions};
    let mut s = story(131)?;
    let mut forger = Forger::new(&s.sim, 1, s.blake)?;
    let (first, second) = (
        RecordId::generate_for(s.blake),
        RecordId::generate_for(s.blake),
    );
    let change = Forger::change(&s.sim, forger.actor(1), |doc| {
        for (id, other, at) in [(first, second, T0), (second, first, 0)] {
            let rec = new_record(doc, &id.to_string(), "reply", &s.blake.to_string())?;
            doc.put(&rec, "share", other.to_string())?;
            doc.put(&rec, "visibility", "shared")?;
            doc.put(&rec, "created_at", at)?;
            doc.put(&rec, "text", "round and round")?;
        }
        Ok(())
    })?;
    let plain = forger.bundle(&s.sim, &[change])?;
    forger.push(&mut s.sim, &plain)?;
    s.sim.settle()?;
    identical(&s.sim)?;
    for d in &s.sim.devices {
        let j = d.journal();
        let (from, to) = j.default_packet_range()?;
        let options = PacketOptions {
            from,
            to,
            kinds: Vec::new(),
        };
        for format in [Format::Markdown, Format::Html] {
            let packet = j.export_packet(&options, format)?;
            ensure!(
                packet.matches("round and round").count() <= 2,
                "{}: a reply laid out more than once",
                d.name
            );
        }
    }
    // A reply to itself, and one to what is not a share (here Alex's question), which would
    // let replies chain.
    let own = RecordId::generate_for(s.blake);
    let stray = RecordId::generate_for(s.blake);
    let question = s.alex_question;
    for (n, (reply, to)) in [(1, (own, own)), (2, (stray, question))] {
        let mut forger = Forger::new(&s.sim, 1, s.blake)?;
        forge(&mut s, &mut forger, n, "link", |doc, s| {
            let rec = new_record(doc, &reply.to_string(), "reply", &s.blake.to_string())?;
            doc.put(&rec, "share", to.to_string())?;
            doc.put(&rec, "visibility", "shared")?;
            doc.put(&rec, "created_at", T0)?;
            Ok(())
        })?;
    }
    for d in &s.sim.devices {
        let j = d.journal();
        ensure!(
            j.get(own).is_err() && j.get(stray).is_err(),
            "{} took a reply",
            d.name
        );
    }
    Ok(())
}
