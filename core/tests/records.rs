//! The journal's records as a story: Alex and Blake, each on their own phone, one kind of record
//! at a time, then the rules of who may write what.
//!
//! Every test builds a couple whose phones exchange the couple's document by hand (`sync`), the
//! way the relay would, and walks through what the app does. Time is pinned per test thread.

use std::cell::Cell;

use anyhow::{Context, Result, bail};
use automerge::{ReadDoc, transaction::Transactable};
use mend_core::{
    Body, Error, JoinSource, Journal, LocalDate, RecordId, Space, Visibility, model::*,
    query::BoundaryState,
};
use tempfile::TempDir;

/// 2026-11-23T08:00Z, a Monday morning.
const START_MS: i64 = 1_795_420_800_000;

thread_local! {
    static NOW: Cell<i64> = const { Cell::new(START_MS) };
}

/// The pinned clock: every reading is one second after the previous one, so records made in a
/// test have distinct, ordered timestamps. Each test runs on its own thread.
fn clock() -> i64 {
    NOW.with(|now| {
        let t = now.get();
        now.set(t + 1_000);
        t
    })
}

/// Two partners, each on their own device.
struct Couple {
    alex: Journal,
    blake: Journal,
    dir: TempDir,
}

impl Couple {
    /// Alex creates the journal; Blake joins from Alex's couple document; they sync once.
    fn new() -> Result<Self> {
        let dir = tempfile::tempdir()?;
        let mut alex = Journal::create(&dir.path().join("alex.db"), "Alex")?;
        let source = JoinSource {
            couple: alex.save_space(Space::Couple)?,
            personal: None,
            partner: None,
        };
        let mut blake = Journal::join(&dir.path().join("blake.db"), &source, "Blake")?;
        alex.set_clock(clock);
        blake.set_clock(clock);
        let mut couple = Self { alex, blake, dir };
        couple.sync()?;
        Ok(couple)
    }

    /// Both phones meet and exchange what the other lacks.
    fn sync(&mut self) -> Result<()> {
        sync(&mut self.alex, &mut self.blake)
    }

    /// Alex's second phone (a tablet), holding Alex's personal space as well.
    fn alex_second_device(&self) -> Result<Journal> {
        let source = JoinSource {
            couple: self.alex.save_space(Space::Couple)?,
            personal: Some(self.alex.save_space(Space::Personal)?),
            partner: Some(self.alex.me()),
        };
        let mut tablet = Journal::join(&self.dir.path().join("alex-tablet.db"), &source, "")?;
        tablet.set_clock(clock);
        Ok(tablet)
    }
}

/// Exchanges changes between two replicas, both ways. The couple's document travels between
/// any two devices; a personal space only between the same partner's devices.
fn sync(x: &mut Journal, y: &mut Journal) -> Result<()> {
    let spaces: &[Space] = if x.me() == y.me() {
        &Space::ALL
    } else {
        &[Space::Couple]
    };
    for &space in spaces {
        let to_y = x.changes_since(space, &y.heads(space)?)?;
        y.apply_changes(space, &to_y)?;
        let to_x = y.changes_since(space, &x.heads(space)?)?;
        x.apply_changes(space, &to_x)?;
    }
    Ok(())
}

/// Every operation the couple's document has ever held on this device, as debug text: what a
/// relay, a backup or the partner's phone could ever be given.
fn couple_history(j: &Journal) -> Result<String> {
    let doc = automerge::Automerge::load(&j.save_space(Space::Couple)?)?;
    Ok(doc
        .get_changes(&[])
        .iter()
        .map(|c| format!("{:?}\n", c.decode()))
        .collect())
}

/// Writes string values straight into a stored record, as a newer version of Mend on another
/// of this partner's devices would, and applies that change here.
fn write_as_newer_version(
    j: &mut Journal,
    space: Space,
    id: RecordId,
    fields: &[(&str, &str)],
) -> Result<()> {
    let mut fork = automerge::Automerge::load(&j.save_space(space)?)?;
    let old_heads = fork.get_heads();
    let mut tx = fork.transaction();
    let (_, records) = tx
        .get(automerge::ROOT, "records")?
        .context("no records map")?;
    let (_, record) = tx
        .get(&records, id.to_string())?
        .context("no such record")?;
    for (key, value) in fields {
        tx.put(&record, *key, *value)?;
    }
    tx.commit();
    j.apply_changes(space, &fork.save_after(&old_heads))?;
    Ok(())
}

fn date(s: &str) -> Result<LocalDate> {
    Ok(s.parse()?)
}

/// The body of a record as the expected kind, or a test failure.
macro_rules! body {
    ($record:expr, $kind:ident) => {
        match $record.body {
            Body::$kind(ref b) => b.clone(),
            ref other => bail!("expected a {}, got a {}", stringify!($kind), other.kind()),
        }
    };
}

/// Asserts that `$result` is the error `$pattern`.
macro_rules! assert_err {
    ($result:expr, $pattern:pat) => {
        match $result {
            Err($pattern) => {}
            other => panic!("expected {}, got {:?}", stringify!($pattern), other),
        }
    };
}

fn commitment(text: &str) -> Body {
    Body::Commitment(Commitment {
        text: text.into(),
        cadence: Cadence::Daily,
        status: CommitmentStatus::Active,
        ..Default::default()
    })
}

fn boundary(text: &str) -> Body {
    Body::Boundary(Boundary {
        area: BoundaryArea::Contact,
        text: text.into(),
        ..Default::default()
    })
}

fn check_in(day: &str, safety: u8) -> Result<Body> {
    Ok(Body::CheckIn(CheckIn {
        local_date: Some(date(day)?),
        safety: Some(safety),
        trust: Some(4),
        connection: Some(5),
        ..Default::default()
    }))
}

fn question(text: &str) -> Body {
    Body::Question(Question {
        category: "timeline".into(),
        text: text.into(),
        ..Default::default()
    })
}

fn share(feeling: &str) -> Body {
    Body::Share(Share {
        feeling: feeling.into(),
        tough_question: false,
    })
}

// ---------------------------------------------------------------------------------------------
// One story per kind of record.
// ---------------------------------------------------------------------------------------------

#[test]
fn accountability_note_names_what_happened_and_links_its_amends() -> Result<()> {
    let mut c = Couple::new()?;
    let amends = c
        .alex
        .add(commitment("My phone stays unlocked on the kitchen table"))?;
    let note = c.alex.add(Body::AccountabilityNote(AccountabilityNote {
        what_i_did: "I hid the messages for four months.".into(),
        impact: "You stopped trusting your own memory.".into(),
        amends: vec![amends],
    }))?;
    c.sync()?;

    let seen = c.blake.get(note)?;
    assert_eq!(seen.author, c.alex.me());
    assert_eq!(seen.visibility, Visibility::Shared);
    let mut body = body!(seen, AccountabilityNote);
    assert_eq!(body.what_i_did, "I hid the messages for four months.");
    assert_eq!(body.amends, vec![amends]);

    // Alex comes to understand the impact better and says so.
    body.impact = "You stopped trusting your own memory, and your friends' kindness.".into();
    c.alex.edit(note, Body::AccountabilityNote(body.clone()))?;
    c.sync()?;
    let seen = c.blake.get(note)?;
    assert_eq!(body!(seen, AccountabilityNote), body);
    assert!(
        seen.updated_at > seen.created_at,
        "an edit moves updated_at"
    );
    Ok(())
}

#[test]
fn question_from_the_hurt_partner_starts_open_whatever_the_app_passes() -> Result<()> {
    let mut c = Couple::new()?;
    let asked = c.blake.add(Body::Question(Question {
        category: "timeline".into(),
        text: "When did it start?".into(),
        status: QuestionStatus::Answered,
    }))?;
    c.sync()?;

    let seen = body!(c.alex.get(asked)?, Question);
    assert_eq!(
        seen.status,
        QuestionStatus::Open,
        "status is set by its own operation"
    );
    assert_eq!(seen.category, "timeline");
    assert_eq!(seen.text, "When did it start?");

    // The asker may reword it; the status stays open.
    let mut reworded = seen.clone();
    reworded.text = "When did it really start?".into();
    c.blake.edit(asked, Body::Question(reworded))?;
    c.sync()?;
    let seen = body!(c.alex.get(asked)?, Question);
    assert_eq!(seen.text, "When did it really start?");
    assert_eq!(seen.status, QuestionStatus::Open);
    Ok(())
}

#[test]
fn answer_is_add_only_and_marks_its_question_answered() -> Result<()> {
    let mut c = Couple::new()?;
    let asked = c
        .blake
        .add(question("Did you see them after you promised not to?"))?;
    c.sync()?;
    let answer = c.alex.add(Body::Answer(Answer {
        question: Some(asked),
        text: "Yes, once, in March. I am sorry I hid it.".into(),
    }))?;
    assert_eq!(
        body!(c.alex.get(asked)?, Question).status,
        QuestionStatus::Answered
    );
    c.sync()?;

    let seen = body!(c.blake.get(answer)?, Answer);
    assert_eq!(seen.question, Some(asked));
    assert_eq!(seen.text, "Yes, once, in March. I am sorry I hid it.");
    assert_eq!(
        body!(c.blake.get(asked)?, Question).status,
        QuestionStatus::Answered
    );

    // An answer given cannot be quietly rewritten later.
    let mut softer = seen.clone();
    softer.text = "Maybe once.".into();
    assert_err!(c.alex.edit(answer, Body::Answer(softer)), Error::Invalid(_));
    assert_eq!(body!(c.alex.get(answer)?, Answer).text, seen.text);
    Ok(())
}

#[test]
fn processing_note_is_private_until_its_author_shares_it() -> Result<()> {
    let mut c = Couple::new()?;
    let note = c.alex.add(Body::ProcessingNote(ProcessingNote {
        text: "I keep wanting to explain instead of listening.".into(),
    }))?;
    assert_eq!(c.alex.get(note)?.visibility, Visibility::Private);
    assert!(c.alex.raw_fields(Space::Couple, note)?.is_none());
    assert!(c.alex.raw_fields(Space::Personal, note)?.is_some());
    c.sync()?;
    assert_err!(c.blake.get(note), Error::NotFound(_));

    // Alex decides to share it: it moves to the couple's document.
    c.alex.share(note)?;
    let raw = c
        .alex
        .raw_fields(Space::Couple, note)?
        .context("shared note in couple doc")?;
    assert_eq!(
        raw["text"],
        "I keep wanting to explain instead of listening."
    );
    assert_eq!(raw["visibility"], "shared");
    assert!(
        c.alex.raw_fields(Space::Personal, note)?.is_none(),
        "no private copy is left"
    );
    c.sync()?;
    let seen = c.blake.get(note)?;
    assert_eq!(seen.visibility, Visibility::Shared);
    assert_eq!(
        body!(seen, ProcessingNote).text,
        "I keep wanting to explain instead of listening."
    );
    Ok(())
}

#[test]
fn boundary_is_agreed_once_both_agree_to_its_current_words() -> Result<()> {
    let mut c = Couple::new()?;
    let review = date("2027-01-15")?;
    let id = c.alex.add(Body::Boundary(Boundary {
        area: BoundaryArea::Contact,
        text: "No contact with them, in any form.".into(),
        review_date: Some(review),
        // An app cannot hand in a consent for the partner; add() starts from the proposer's.
        consents: [(
            c.blake.me(),
            Consent {
                state: ConsentState::Agreed,
                ..Default::default()
            },
        )]
        .into(),
        // Nor a wording history: the core keeps it.
        wordings: [("feed".to_owned(), "Other words".to_owned())].into(),
    }))?;
    c.sync()?;
    assert_eq!(
        body!(c.alex.get(id)?, Boundary)
            .wordings
            .values()
            .collect::<Vec<_>>(),
        ["No contact with them, in any form."]
    );

    let status = c.blake.boundary_status()?;
    assert_eq!(status.len(), 1);
    assert_eq!(status[0].state, BoundaryState::Pending);
    let b = body!(status[0].boundary, Boundary);
    assert_eq!(b.area, BoundaryArea::Contact);
    assert_eq!(b.review_date, Some(review));
    let proposer = &b.consents[&c.alex.me()];
    assert_eq!(proposer.state, ConsentState::Agreed);
    assert_eq!(
        proposer.wording,
        mend_core::wording_hash("No contact with them, in any form.")
    );
    assert!(!b.consents.contains_key(&c.blake.me()));

    c.blake.consent(id, ConsentState::Agreed)?;
    c.sync()?;
    for j in [&c.alex, &c.blake] {
        assert_eq!(j.boundary_status()?[0].state, BoundaryState::Agreed);
    }
    Ok(())
}

#[test]
fn disclosure_preference_is_the_hurt_partners_to_change() -> Result<()> {
    let mut c = Couple::new()?;
    let id = c
        .blake
        .add(Body::DisclosurePreference(DisclosurePreference {
            topic: "What happened at the hotel".into(),
            preference: DisclosureChoice::NotNow,
        }))?;
    c.sync()?;
    let mut seen = body!(c.alex.get(id)?, DisclosurePreference);
    assert_eq!(seen.preference, DisclosureChoice::NotNow);

    // Alex cannot decide what Blake is ready to hear.
    seen.preference = DisclosureChoice::No;
    assert_err!(
        c.alex.edit(id, Body::DisclosurePreference(seen.clone())),
        Error::PermissionDenied(_)
    );

    // Blake is ready now.
    seen.preference = DisclosureChoice::WantDetails;
    c.blake.edit(id, Body::DisclosurePreference(seen))?;
    c.sync()?;
    let seen = body!(c.alex.get(id)?, DisclosurePreference);
    assert_eq!(seen.preference, DisclosureChoice::WantDetails);
    assert_eq!(seen.topic, "What happened at the hotel");
    Ok(())
}

#[test]
fn need_gets_the_partners_response() -> Result<()> {
    let mut c = Couple::new()?;
    let id = c.blake.add(Body::Need(Need {
        kind: NeedKind::CheckInCadence,
        text: "A short check-in every evening, even on busy days.".into(),
        status: NeedStatus::Open,
        // Only the partner responds, through respond_to_need.
        response: Some(NeedResponse {
            kind: NeedResponseKind::Reassured,
            ..Default::default()
        }),
    }))?;
    assert_eq!(body!(c.blake.get(id)?, Need).response, None);
    c.sync()?;

    c.alex.respond_to_need(
        id,
        NeedResponseKind::Receptive,
        "Nine o'clock, phones away.",
    )?;
    c.sync()?;
    let needs = c.blake.needs()?;
    assert_eq!(needs.len(), 1);
    let need = body!(needs[0], Need);
    let response = need.response.clone().context("a response")?;
    assert_eq!(response.kind, NeedResponseKind::Receptive);
    assert_eq!(response.note, "Nine o'clock, phones away.");

    // Blake says it is met; the response stays.
    let mut met = need;
    met.status = NeedStatus::Met;
    c.blake.edit(id, Body::Need(met))?;
    c.sync()?;
    let seen = body!(c.alex.get(id)?, Need);
    assert_eq!(seen.status, NeedStatus::Met);
    assert_eq!(
        seen.response.map(|r| r.kind),
        Some(NeedResponseKind::Receptive)
    );
    Ok(())
}

#[test]
fn check_in_is_one_record_per_author_and_day() -> Result<()> {
    let mut c = Couple::new()?;
    let day = date("2026-11-24")?;
    let id = c.alex.add(Body::CheckIn(CheckIn {
        local_date: Some(day),
        safety: Some(6),
        trust: Some(4),
        connection: Some(7),
        mood_tags: vec!["tired".into(), "hopeful".into()],
        need_today: Some("A walk together".into()),
        note: Some("The therapy session helped.".into()),
        private_fields: vec![],
    }))?;
    assert_eq!(
        id,
        RecordId::derive_check_in(c.alex.me(), day),
        "keyed by (author, date)"
    );
    c.sync()?;

    let mut seen = body!(c.blake.get(id)?, CheckIn);
    assert_eq!(seen.local_date, Some(day));
    assert_eq!(
        (seen.safety, seen.trust, seen.connection),
        (Some(6), Some(4), Some(7))
    );
    assert_eq!(seen.mood_tags, ["tired", "hopeful"]);
    assert_eq!(seen.need_today.as_deref(), Some("A walk together"));

    // Later that day Alex changes the trust score on the same record.
    seen.trust = Some(5);
    c.alex.edit(id, Body::CheckIn(seen))?;
    c.sync()?;
    assert_eq!(body!(c.blake.get(id)?, CheckIn).trust, Some(5));
    Ok(())
}

#[test]
fn share_and_its_add_only_replies() -> Result<()> {
    let mut c = Couple::new()?;
    let feeling = c.blake.add(Body::Share(Share {
        feeling: "I felt invisible at dinner with your colleagues.".into(),
        tough_question: true,
    }))?;
    c.sync()?;
    assert!(body!(c.alex.get(feeling)?, Share).tough_question);

    let reply = c.alex.add(Body::Reply(Reply {
        share: Some(feeling),
        kind: ReplyKind::Validate,
        text: "That makes sense. I left you out of every conversation.".into(),
    }))?;
    c.sync()?;
    let seen = body!(c.blake.get(reply)?, Reply);
    assert_eq!(seen.share, Some(feeling));
    assert_eq!(
        seen.text,
        "That makes sense. I left you out of every conversation."
    );

    // A reply is add-only.
    let mut edited = seen;
    edited.text = "Sorry.".into();
    assert_err!(c.alex.edit(reply, Body::Reply(edited)), Error::Invalid(_));

    // Blake may reword the share itself (the author's own words).
    let mut reworded = body!(c.blake.get(feeling)?, Share);
    reworded.feeling = "I felt invisible, and then foolish for minding.".into();
    c.blake.edit(feeling, Body::Share(reworded))?;
    c.sync()?;
    assert_eq!(
        body!(c.alex.get(feeling)?, Share).feeling,
        "I felt invisible, and then foolish for minding."
    );
    Ok(())
}

#[test]
fn commitment_keeps_a_two_sided_follow_through_ledger() -> Result<()> {
    let mut c = Couple::new()?;
    let need = c.blake.add(Body::Need(Need {
        kind: NeedKind::HonestyOnTopic,
        text: "Tell me when they contact you.".into(),
        status: NeedStatus::Open,
        response: None,
    }))?;
    c.sync()?;
    let mon = date("2026-11-23")?;
    let tue = date("2026-11-24")?;
    let id = c.alex.add(Body::Commitment(Commitment {
        text: "Tell Blake the same day if they get in touch".into(),
        cadence: Cadence::Daily,
        link: Some(need),
        status: CommitmentStatus::Active,
        // A ledger cannot be handed in at creation.
        claims: [(
            mon,
            Claim {
                status: ClaimStatus::Done,
                ..Default::default()
            },
        )]
        .into(),
        views: Default::default(),
        starts_on: Some(mon),
        // Written by the core, whatever the app passes.
        status_changes: [(tue, CommitmentStatus::Paused)].into(),
    }))?;
    assert!(body!(c.alex.get(id)?, Commitment).claims.is_empty());
    assert_eq!(
        body!(c.alex.get(id)?, Commitment).status_changes,
        [(mon, CommitmentStatus::Active)].into()
    );

    c.alex.claim(id, mon, ClaimStatus::Done, "")?;
    c.alex
        .claim(id, tue, ClaimStatus::Partial, "Told you the next morning")?;
    c.sync()?;
    c.blake.confirm(id, mon, PartnerView::Confirmed, "")?;
    c.blake
        .confirm(id, tue, PartnerView::Disagree, "I found out from a friend")?;
    c.sync()?;

    let ledger = body!(c.alex.get(id)?, Commitment);
    assert_eq!(ledger.link, Some(need));
    assert_eq!(ledger.claims[&mon].status, ClaimStatus::Done);
    assert_eq!(ledger.claims[&tue].status, ClaimStatus::Partial);
    assert_eq!(ledger.claims[&tue].note, "Told you the next morning");
    assert_eq!(ledger.views[&mon].view, PartnerView::Confirmed);
    assert_eq!(ledger.views[&tue].view, PartnerView::Disagree);
    assert_eq!(ledger.views[&tue].note, "I found out from a friend");

    // The owner pauses it; the ledger is untouched.
    let mut paused = ledger.clone();
    paused.status = CommitmentStatus::Paused;
    c.alex.edit(id, Body::Commitment(paused))?;
    c.sync()?;
    let seen = body!(c.blake.get(id)?, Commitment);
    assert_eq!(seen.status, CommitmentStatus::Paused);
    assert_eq!((seen.claims, seen.views), (ledger.claims, ledger.views));
    Ok(())
}

#[test]
fn honesty_moment_is_noticed_and_never_edited() -> Result<()> {
    let mut c = Couple::new()?;
    let note = c.alex.add(Body::AccountabilityNote(AccountabilityNote {
        what_i_did: "I lied about where I was on Friday.".into(),
        ..Default::default()
    }))?;
    c.sync()?;
    let moment = c.blake.add(Body::HonestyMoment(HonestyMoment {
        kind: HonestyKind::VolunteeredTruth,
        text: "You told me about Friday before I asked.".into(),
        link: Some(note),
        timing: HonestyTiming::WeeklyTalk,
        noticed_on: None,
    }))?;
    c.sync()?;

    let seen = c.alex.get(moment)?;
    assert_eq!(seen.author, c.blake.me());
    let body = body!(seen, HonestyMoment);
    assert_eq!(body.link, Some(note));
    assert_eq!(body.timing, HonestyTiming::WeeklyTalk);
    assert_eq!(body.text, "You told me about Friday before I asked.");

    let mut edited = body;
    edited.timing = HonestyTiming::ShareNow;
    assert_err!(
        c.blake.edit(moment, Body::HonestyMoment(edited)),
        Error::Invalid(_)
    );
    Ok(())
}

#[test]
fn validation_attaches_to_a_shared_record() -> Result<()> {
    let mut c = Couple::new()?;
    let feeling = c.blake.add(share("I am scared this will happen again."))?;
    c.sync()?;
    let v = c.alex.add(Body::Validation(Validation {
        target: Some(feeling),
        text: "Of course you are. I gave you every reason to be.".into(),
    }))?;
    c.sync()?;
    let seen = body!(c.blake.get(v)?, Validation);
    assert_eq!(seen.target, Some(feeling));
    assert_eq!(
        seen.text,
        "Of course you are. I gave you every reason to be."
    );

    let mut edited = seen;
    edited.text = "I understand.".into();
    assert_err!(c.alex.edit(v, Body::Validation(edited)), Error::Invalid(_));
    Ok(())
}

#[test]
fn trigger_event_goes_from_private_to_a_signal_to_shared_in_full() -> Result<()> {
    let mut c = Couple::new()?;
    let trigger = TriggerEvent {
        cue: "Their name came up on the radio.".into(),
        intensity: 8,
        feelings: vec!["panic".into(), "anger".into()],
        what_helped: "Breathing, then a cold glass of water.".into(),
        wanted_response: WantedResponse::Reassure,
        sharing: TriggerSharing::Private,
    };
    let id = c.blake.add(Body::TriggerEvent(trigger.clone()))?;
    c.sync()?;
    assert_err!(c.alex.get(id), Error::NotFound(_));

    // Blake lets Alex know, without the details.
    let mut signal = trigger.clone();
    signal.sharing = TriggerSharing::Signal;
    c.blake.edit(id, Body::TriggerEvent(signal.clone()))?;
    c.sync()?;
    let seen = c.alex.get(id)?;
    assert_eq!(seen.visibility, Visibility::Shared);
    let body = body!(seen, TriggerEvent);
    assert_eq!(body.sharing, TriggerSharing::Signal);
    assert_eq!(body.wanted_response, WantedResponse::Reassure);
    assert_eq!(
        (body.cue.as_str(), body.intensity, body.feelings.len()),
        ("", 0, 0)
    );
    // Blake still reads the whole thing.
    assert_eq!(body!(c.blake.get(id)?, TriggerEvent), signal);

    // Later, Blake shares it in full.
    let mut full = signal;
    full.sharing = TriggerSharing::Full;
    c.blake.edit(id, Body::TriggerEvent(full.clone()))?;
    c.sync()?;
    assert_eq!(body!(c.alex.get(id)?, TriggerEvent), full);

    // What the partner has seen cannot be made private again.
    let mut back = full;
    back.sharing = TriggerSharing::Private;
    assert_err!(
        c.blake.edit(id, Body::TriggerEvent(back)),
        Error::Invalid(_)
    );
    Ok(())
}

#[test]
fn pre_assurance_plans_for_a_hard_date() -> Result<()> {
    let mut c = Couple::new()?;
    let day = date("2026-12-12")?;
    let id = c.alex.add(Body::PreAssurance(PreAssurance {
        occasion: "The conference in Lyon, where it started".into(),
        date: Some(day),
        plan: "I call you every evening and share my location all week.".into(),
    }))?;
    c.sync()?;
    let mut seen = body!(c.blake.get(id)?, PreAssurance);
    assert_eq!(seen.date, Some(day));
    assert_eq!(seen.occasion, "The conference in Lyon, where it started");

    seen.plan = "I skip the conference dinner and call you at eight.".into();
    c.alex.edit(id, Body::PreAssurance(seen.clone()))?;
    c.sync()?;
    assert_eq!(body!(c.blake.get(id)?, PreAssurance), seen);
    Ok(())
}

/// Need, reply and honesty moment each have their own `kind` field beside the record's `kind`.
/// All three must read back as written, on the author's device and on the partner's.
#[test]
fn a_body_field_named_kind_survives_a_round_trip() -> Result<()> {
    let mut c = Couple::new()?;
    let need = c.blake.add(Body::Need(Need {
        kind: NeedKind::Therapy,
        text: "Couples therapy, every week.".into(),
        status: NeedStatus::Open,
        response: None,
    }))?;
    let feeling = c.blake.add(share("I felt small today."))?;
    c.sync()?;
    let reply = c.alex.add(Body::Reply(Reply {
        share: Some(feeling),
        kind: ReplyKind::Apologise,
        text: "I am sorry for what I said.".into(),
    }))?;
    let moment = c.blake.add(Body::HonestyMoment(HonestyMoment {
        kind: HonestyKind::HardAnswer,
        text: "You answered the question about March.".into(),
        link: None,
        timing: HonestyTiming::ShareNow,
        noticed_on: None,
    }))?;
    c.sync()?;
    for j in [&c.alex, &c.blake] {
        assert_eq!(body!(j.get(need)?, Need).kind, NeedKind::Therapy);
        assert_eq!(body!(j.get(reply)?, Reply).kind, ReplyKind::Apologise);
        assert_eq!(
            body!(j.get(moment)?, HonestyMoment).kind,
            HonestyKind::HardAnswer
        );
    }
    Ok(())
}

// ---------------------------------------------------------------------------------------------
// Who may write what.
// ---------------------------------------------------------------------------------------------

#[test]
fn a_partner_cannot_edit_the_others_check_in_or_any_author_only_field() -> Result<()> {
    let mut c = Couple::new()?;
    let ci = c.alex.add(check_in("2026-11-24", 3)?)?;
    let plan = c.alex.add(Body::PreAssurance(PreAssurance {
        occasion: "Her birthday".into(),
        date: None,
        plan: "Dinner at home, phones off.".into(),
    }))?;
    c.sync()?;

    let mut forged = body!(c.blake.get(ci)?, CheckIn);
    forged.safety = Some(10);
    assert_err!(
        c.blake.edit(ci, Body::CheckIn(forged)),
        Error::PermissionDenied(_)
    );
    let mut forged = body!(c.blake.get(plan)?, PreAssurance);
    forged.plan = "Whatever you like.".into();
    assert_err!(
        c.blake.edit(plan, Body::PreAssurance(forged)),
        Error::PermissionDenied(_)
    );

    c.sync()?;
    assert_eq!(body!(c.alex.get(ci)?, CheckIn).safety, Some(3));
    assert_eq!(
        body!(c.alex.get(plan)?, PreAssurance).plan,
        "Dinner at home, phones off."
    );
    Ok(())
}

#[test]
fn only_the_owner_claims_and_only_the_partner_confirms() -> Result<()> {
    let mut c = Couple::new()?;
    let id = c
        .alex
        .add(commitment("In bed by eleven, phone in the kitchen"))?;
    c.sync()?;
    let day = date("2026-11-23")?;

    assert_err!(
        c.blake.claim(id, day, ClaimStatus::Missed, ""),
        Error::PermissionDenied(_)
    );
    assert_err!(
        c.alex.confirm(id, day, PartnerView::Confirmed, ""),
        Error::PermissionDenied(_)
    );

    // Nor through edit(): ledger fields are left alone there.
    let mut forged = body!(c.blake.get(id)?, Commitment);
    forged.claims.insert(
        day,
        Claim {
            status: ClaimStatus::Missed,
            ..Default::default()
        },
    );
    c.blake.edit(id, Body::Commitment(forged))?;
    let mut forged = body!(c.alex.get(id)?, Commitment);
    forged.views.insert(
        day,
        View {
            view: PartnerView::Confirmed,
            ..Default::default()
        },
    );
    c.alex.edit(id, Body::Commitment(forged))?;
    c.sync()?;

    let ledger = body!(c.alex.get(id)?, Commitment);
    assert!(ledger.claims.is_empty(), "{:?}", ledger.claims);
    assert!(ledger.views.is_empty(), "{:?}", ledger.views);
    Ok(())
}

#[test]
fn consent_always_writes_the_callers_own() -> Result<()> {
    let mut c = Couple::new()?;
    let id = c
        .alex
        .add(boundary("We tell each other before meeting an ex."))?;
    c.sync()?;

    // Blake declines; Alex's agreement is untouched.
    c.blake.consent(id, ConsentState::Declined)?;
    // Blake's app tries to write Alex's consent through edit(): it is ignored.
    let mut forged = body!(c.blake.get(id)?, Boundary);
    forged.consents.insert(
        c.alex.me(),
        Consent {
            state: ConsentState::Declined,
            ..forged.consents[&c.alex.me()].clone()
        },
    );
    c.blake.edit(id, Body::Boundary(forged))?;
    c.sync()?;

    let b = body!(c.alex.get(id)?, Boundary);
    assert_eq!(b.consents[&c.alex.me()].state, ConsentState::Agreed);
    assert_eq!(b.consents[&c.blake.me()].state, ConsentState::Declined);
    assert_eq!(c.alex.boundary_status()?[0].state, BoundaryState::Declined);
    Ok(())
}

#[test]
fn a_need_is_answered_by_the_partner_not_its_author() -> Result<()> {
    let mut c = Couple::new()?;
    let id = c.blake.add(Body::Need(Need {
        kind: NeedKind::AloneTime,
        text: "An evening a week to myself.".into(),
        status: NeedStatus::Open,
        response: None,
    }))?;
    c.sync()?;
    assert_err!(
        c.blake.respond_to_need(id, NeedResponseKind::Reassured, ""),
        Error::PermissionDenied(_)
    );
    assert_eq!(body!(c.blake.get(id)?, Need).response, None);
    Ok(())
}

#[test]
fn only_the_author_removes_a_record() -> Result<()> {
    let mut c = Couple::new()?;
    let id = c.alex.add(Body::AccountabilityNote(AccountabilityNote {
        what_i_did: "I blamed you for my choices.".into(),
        ..Default::default()
    }))?;
    c.sync()?;
    assert_err!(c.blake.remove(id), Error::PermissionDenied(_));
    c.sync()?;
    let seen = c.alex.get(id)?;
    assert!(!seen.removed);
    assert_eq!(
        body!(seen, AccountabilityNote).what_i_did,
        "I blamed you for my choices."
    );
    Ok(())
}

#[test]
fn question_status_follows_who_asked() -> Result<()> {
    let mut c = Couple::new()?;
    let q = c.blake.add(question("Who else knew?"))?;
    c.sync()?;

    // The partner may put it off or mark it answered, but not withdraw or reopen it.
    assert_err!(
        c.alex.set_question_status(q, QuestionStatus::Withdrawn),
        Error::PermissionDenied(_)
    );
    assert_err!(
        c.alex.set_question_status(q, QuestionStatus::Open),
        Error::PermissionDenied(_)
    );
    c.alex.set_question_status(q, QuestionStatus::NotNow)?;
    c.sync()?;
    assert_eq!(
        body!(c.blake.get(q)?, Question).status,
        QuestionStatus::NotNow
    );

    // The asker may reopen or withdraw it, but not say "not now" to their own question.
    assert_err!(
        c.blake.set_question_status(q, QuestionStatus::NotNow),
        Error::PermissionDenied(_)
    );
    c.blake.set_question_status(q, QuestionStatus::Open)?;
    c.blake.set_question_status(q, QuestionStatus::Answered)?;
    c.blake.set_question_status(q, QuestionStatus::Withdrawn)?;
    c.sync()?;
    assert_eq!(
        body!(c.alex.get(q)?, Question).status,
        QuestionStatus::Withdrawn
    );

    // edit() cannot set the status either (it is written by its own operation).
    let mut forged = body!(c.alex.get(q)?, Question);
    forged.status = QuestionStatus::Answered;
    c.alex.edit(q, Body::Question(forged))?;
    assert_eq!(
        body!(c.alex.get(q)?, Question).status,
        QuestionStatus::Withdrawn
    );
    Ok(())
}

#[test]
fn add_only_records_cannot_be_edited_even_by_their_author() -> Result<()> {
    let mut c = Couple::new()?;
    let q = c.blake.add(question("Why then?"))?;
    let feeling = c.blake.add(share("I'm tired."))?;
    c.sync()?;
    let answer = c.alex.add(Body::Answer(Answer {
        question: Some(q),
        text: "I was running away.".into(),
    }))?;
    let reply = c.alex.add(Body::Reply(Reply {
        share: Some(feeling),
        kind: ReplyKind::Reflect,
        text: "You carry a lot.".into(),
    }))?;
    let moment = c.blake.add(Body::HonestyMoment(HonestyMoment {
        kind: HonestyKind::FeelingShared,
        text: "You said you were ashamed.".into(),
        ..Default::default()
    }))?;
    c.sync()?;
    let validation = c.blake.add(Body::Validation(Validation {
        target: Some(answer),
        text: "Thank you for saying it plainly.".into(),
    }))?;
    c.sync()?;

    for (author, id) in [(0, answer), (0, reply), (1, moment), (1, validation)] {
        let j = if author == 0 {
            &mut c.alex
        } else {
            &mut c.blake
        };
        let before = j.get(id)?;
        let mut body = before.body.clone();
        match &mut body {
            Body::Answer(b) => b.text = "Edited later.".into(),
            Body::Reply(b) => b.text = "Edited later.".into(),
            Body::HonestyMoment(b) => b.text = "Edited later.".into(),
            Body::Validation(b) => b.text = "Edited later.".into(),
            other => bail!("unexpected {}", other.kind()),
        }
        assert_err!(j.edit(id, body), Error::Invalid(_));
        assert_eq!(j.get(id)?, before, "{} unchanged", before.kind());
    }
    Ok(())
}

#[test]
fn a_check_ins_date_is_fixed_once_written() -> Result<()> {
    let mut c = Couple::new()?;
    let id = c.alex.add(check_in("2026-11-24", 5)?)?;
    let mut moved = body!(c.alex.get(id)?, CheckIn);
    moved.local_date = Some(date("2026-11-25")?);
    assert_err!(c.alex.edit(id, Body::CheckIn(moved)), Error::Invalid(_));
    assert_eq!(
        body!(c.alex.get(id)?, CheckIn).local_date,
        Some(date("2026-11-24")?)
    );
    Ok(())
}

#[test]
fn rewording_a_boundary_voids_the_others_agreement() -> Result<()> {
    let mut c = Couple::new()?;
    let id = c.alex.add(boundary("No messages with them."))?;
    c.sync()?;
    c.blake.consent(id, ConsentState::Agreed)?;
    c.sync()?;
    assert_eq!(c.alex.boundary_status()?[0].state, BoundaryState::Agreed);

    // Blake (not the proposer) rewords it: a new proposal.
    let mut reworded = body!(c.blake.get(id)?, Boundary);
    reworded.text = "No messages or calls with them.".into();
    c.blake.edit(id, Body::Boundary(reworded))?;
    c.sync()?;

    let new_words = mend_core::wording_hash("No messages or calls with them.");
    for j in [&c.alex, &c.blake] {
        let status = &j.boundary_status()?[0];
        assert_eq!(
            status.state,
            BoundaryState::Pending,
            "an edit voids agreement by itself"
        );
        let alex = status
            .consents
            .iter()
            .find(|v| v.partner == c.alex.me())
            .context("alex")?;
        let blake = status
            .consents
            .iter()
            .find(|v| v.partner == c.blake.me())
            .context("blake")?;
        assert_eq!((alex.state, alex.current), (ConsentState::Agreed, false));
        assert_eq!((blake.state, blake.current), (ConsentState::Agreed, true));
        let b = body!(status.boundary, Boundary);
        assert_eq!(
            b.consents[&c.blake.me()].wording,
            new_words,
            "Blake's consent moved"
        );
        assert_ne!(
            b.consents[&c.alex.me()].wording,
            new_words,
            "Alex's stayed on the old words"
        );
    }

    c.alex.consent(id, ConsentState::Agreed)?;
    c.sync()?;
    assert_eq!(c.blake.boundary_status()?[0].state, BoundaryState::Agreed);
    Ok(())
}

#[test]
fn revisit_from_one_partner_beats_agreed_from_the_other() -> Result<()> {
    let mut c = Couple::new()?;
    let id = c.blake.add(boundary("Location sharing stays on."))?;
    c.sync()?;
    c.alex.consent(id, ConsentState::Agreed)?;
    c.sync()?;
    assert_eq!(c.blake.boundary_status()?[0].state, BoundaryState::Agreed);

    c.alex.consent(id, ConsentState::Revisit)?;
    c.sync()?;
    for j in [&c.alex, &c.blake] {
        assert_eq!(j.boundary_status()?[0].state, BoundaryState::Revisit);
    }
    Ok(())
}

#[test]
fn one_check_in_per_author_per_local_date() -> Result<()> {
    let mut c = Couple::new()?;
    // Wednesday: the 25th is today, the 24th yesterday.
    NOW.with(|now| now.set(START_MS + 2 * 86_400_000));
    let mine = c.alex.add(check_in("2026-11-24", 4)?)?;
    assert_err!(c.alex.add(check_in("2026-11-24", 9)?), Error::Invalid(_));
    assert_eq!(
        body!(c.alex.get(mine)?, CheckIn).safety,
        Some(4),
        "the first stays"
    );
    c.alex.add(check_in("2026-11-25", 6)?)?;
    c.sync()?;

    // Blake has their own check-in for the same day.
    let theirs = c.blake.add(check_in("2026-11-24", 7)?)?;
    assert_ne!(mine, theirs);
    c.sync()?;
    let on_the_24th: Vec<_> = c
        .alex
        .records()?
        .into_iter()
        .filter(
            |r| matches!(&r.body, Body::CheckIn(ci) if ci.local_date == date("2026-11-24").ok()),
        )
        .map(|r| r.author)
        .collect();
    assert_eq!(on_the_24th.len(), 2);
    assert!(on_the_24th.contains(&c.alex.me()) && on_the_24th.contains(&c.blake.me()));
    Ok(())
}

#[test]
fn a_private_processing_note_never_reaches_the_partner() -> Result<()> {
    let mut c = Couple::new()?;
    let secret = "Some days I miss them, and I hate that.";
    let id = c.alex.add(Body::ProcessingNote(ProcessingNote {
        text: secret.into(),
    }))?;
    c.sync()?;

    assert!(c.alex.raw_fields(Space::Couple, id)?.is_none());
    assert!(c.alex.shared_records()?.iter().all(|r| r.id != id));
    assert_err!(c.blake.get(id), Error::NotFound(_));
    assert!(c.blake.records()?.iter().all(|r| r.id != id));
    for j in [&c.alex, &c.blake] {
        assert!(
            !couple_history(j)?.contains(secret),
            "never in the couple's history"
        );
    }
    Ok(())
}

#[test]
fn a_trigger_is_private_by_default() -> Result<()> {
    let mut c = Couple::new()?;
    let cue = "Saw the same car in the car park.";
    let id = c.blake.add(Body::TriggerEvent(TriggerEvent {
        cue: cue.into(),
        intensity: 6,
        ..Default::default()
    }))?;
    assert_eq!(c.blake.get(id)?.visibility, Visibility::Private);
    c.sync()?;
    assert!(c.blake.raw_fields(Space::Couple, id)?.is_none());
    assert!(c.blake.shared_records()?.iter().all(|r| r.id != id));
    assert_err!(c.alex.get(id), Error::NotFound(_));
    assert!(!couple_history(&c.alex)?.contains(cue));
    Ok(())
}

#[test]
fn private_check_in_fields_stay_on_the_authors_devices() -> Result<()> {
    let mut c = Couple::new()?;
    let note = "I checked their profile again.";
    let id = c.alex.add(Body::CheckIn(CheckIn {
        local_date: Some(date("2026-11-24")?),
        safety: Some(6),
        trust: Some(2),
        connection: Some(5),
        note: Some(note.into()),
        private_fields: vec![CheckInField::Trust, CheckInField::Note],
        ..Default::default()
    }))?;

    // Alex reads the whole check-in.
    let mine = body!(c.alex.get(id)?, CheckIn);
    assert_eq!((mine.trust, mine.note.as_deref()), (Some(2), Some(note)));
    // The couple's document holds only the shared part.
    let raw = c
        .alex
        .raw_fields(Space::Couple, id)?
        .context("shared part")?;
    assert_eq!(raw["safety"], 6);
    assert!(
        !raw.contains_key("trust") && !raw.contains_key("note"),
        "{raw:?}"
    );
    let shared = c
        .alex
        .shared_records()?
        .into_iter()
        .find(|r| r.id == id)
        .context("shared")?;
    assert_eq!(body!(shared, CheckIn).note, None);

    c.sync()?;
    let seen = body!(c.blake.get(id)?, CheckIn);
    assert_eq!((seen.safety, seen.connection), (Some(6), Some(5)));
    assert_eq!((seen.trust, seen.note), (None, None));
    let history = couple_history(&c.blake)?;
    assert!(!history.contains(note));
    Ok(())
}

#[test]
fn a_trigger_shared_as_a_signal_carries_no_content() -> Result<()> {
    let mut c = Couple::new()?;
    let cue = "A message from an unknown number.";
    let helped = "Going for a run.";
    let id = c.blake.add(Body::TriggerEvent(TriggerEvent {
        cue: cue.into(),
        intensity: 9,
        feelings: vec!["dread".into()],
        what_helped: helped.into(),
        wanted_response: WantedResponse::TalkLater,
        sharing: TriggerSharing::Signal,
    }))?;
    let raw = c
        .blake
        .raw_fields(Space::Couple, id)?
        .context("signal in couple doc")?;
    for key in ["cue", "intensity", "feelings", "what_helped"] {
        assert!(
            !raw.contains_key(key),
            "{key} is not in the couple's document"
        );
    }
    assert_eq!(raw["sharing"], "signal");
    assert_eq!(raw["wanted_response"], "talk_later");

    c.sync()?;
    let seen = body!(c.alex.get(id)?, TriggerEvent);
    assert_eq!(seen.wanted_response, WantedResponse::TalkLater);
    assert_eq!((seen.cue.as_str(), seen.what_helped.as_str()), ("", ""));
    let history = couple_history(&c.alex)?;
    assert!(!history.contains(cue) && !history.contains(helped) && !history.contains("dread"));
    Ok(())
}

#[test]
fn a_personal_space_syncs_only_between_one_partners_devices() -> Result<()> {
    let mut c = Couple::new()?;
    let mut tablet = c.alex_second_device()?;
    let text = "Write down what I want to say before Thursday.";
    let id = c
        .alex
        .add(Body::ProcessingNote(ProcessingNote { text: text.into() }))?;
    sync(&mut c.alex, &mut tablet)?;
    sync(&mut tablet, &mut c.blake)?;

    assert_eq!(tablet.me(), c.alex.me());
    assert_eq!(body!(tablet.get(id)?, ProcessingNote).text, text);
    assert_err!(c.blake.get(id), Error::NotFound(_));
    assert!(!couple_history(&c.blake)?.contains(text));
    Ok(())
}

#[test]
fn a_removed_record_keeps_its_place_and_links_but_loses_its_words() -> Result<()> {
    let mut c = Couple::new()?;
    let q = c.blake.add(question("Did you love them?"))?;
    c.sync()?;
    let words = "I told myself I did.";
    let answer = c.alex.add(Body::Answer(Answer {
        question: Some(q),
        text: words.into(),
    }))?;
    c.sync()?;
    c.alex.remove(answer)?;
    c.sync()?;

    let placeholder = c.blake.get(answer)?;
    assert!(placeholder.removed);
    assert_eq!(placeholder.author, c.alex.me());
    let body = body!(placeholder, Answer);
    assert_eq!(body.question, Some(q), "the thread stays whole");
    assert_eq!(body.text, "");
    let raw = c
        .blake
        .raw_fields(Space::Couple, answer)?
        .context("placeholder")?;
    assert!(!raw.contains_key("text"));
    assert_eq!(raw["removed"], true);

    // A removed record cannot be edited any more.
    let mut note = AccountabilityNote {
        what_i_did: "I lied.".into(),
        ..Default::default()
    };
    let id = c.alex.add(Body::AccountabilityNote(note.clone()))?;
    c.alex.remove(id)?;
    note.what_i_did = "I lied, often.".into();
    assert_err!(
        c.alex.edit(id, Body::AccountabilityNote(note)),
        Error::Removed(_)
    );
    Ok(())
}

#[test]
fn validation_only_targets_shared_records() -> Result<()> {
    let mut c = Couple::new()?;
    let private = c.alex.add(Body::ProcessingNote(ProcessingNote {
        text: "Just for me.".into(),
    }))?;
    let validate = |target| {
        Body::Validation(Validation {
            target: Some(target),
            text: "I see you.".into(),
        })
    };
    assert_err!(c.alex.add(validate(private)), Error::Invalid(_));
    assert_err!(
        c.alex.add(validate(RecordId::generate())),
        Error::NotFound(_)
    );
    assert_err!(
        c.alex.add(Body::Validation(Validation {
            target: None,
            text: "?".into()
        })),
        Error::Invalid(_)
    );

    // Once shared, it can be validated.
    c.alex.share(private)?;
    c.sync()?;
    let v = c.blake.add(validate(private))?;
    assert_eq!(body!(c.blake.get(v)?, Validation).target, Some(private));
    Ok(())
}

#[test]
fn links_must_point_to_the_right_kind_of_record() -> Result<()> {
    let mut c = Couple::new()?;
    let q = c.blake.add(question("Why?"))?;
    let feeling = c.blake.add(share("I'm numb."))?;
    c.sync()?;

    assert_err!(
        c.alex.add(Body::Answer(Answer {
            question: Some(feeling),
            text: "Because.".into()
        })),
        Error::WrongKind { .. }
    );
    assert_err!(
        c.alex.add(Body::Answer(Answer {
            question: None,
            text: "Because.".into()
        })),
        Error::Invalid(_)
    );
    assert_err!(
        c.alex.add(Body::Reply(Reply {
            share: Some(q),
            kind: ReplyKind::Ask,
            text: "How so?".into()
        })),
        Error::WrongKind { .. }
    );
    assert_err!(
        c.alex.add(Body::Commitment(Commitment {
            text: "Weekly walk".into(),
            link: Some(q),
            ..Default::default()
        })),
        Error::WrongKind { .. }
    );
    assert_err!(
        c.alex.add(Body::AccountabilityNote(AccountabilityNote {
            what_i_did: "I lied.".into(),
            amends: vec![feeling],
            ..Default::default()
        })),
        Error::WrongKind { .. }
    );
    assert_err!(
        c.alex.add(Body::HonestyMoment(HonestyMoment {
            text: "Told the truth.".into(),
            link: Some(RecordId::generate()),
            ..Default::default()
        })),
        Error::NotFound(_)
    );
    // An answer to a removed question is refused too.
    c.blake.remove(q)?;
    c.sync()?;
    assert_err!(
        c.alex.add(Body::Answer(Answer {
            question: Some(q),
            text: "Because.".into()
        })),
        Error::Removed(_)
    );
    assert!(
        c.alex
            .records()?
            .iter()
            .all(|r| !matches!(r.body, Body::Answer(_)))
    );
    Ok(())
}

#[test]
fn bad_input_is_refused_before_anything_is_written() -> Result<()> {
    let mut c = Couple::new()?;
    assert_err!(c.alex.add(check_in("2026-11-24", 11)?), Error::Invalid(_));
    assert_err!(c.alex.add(question("   ")), Error::Invalid(_));
    assert_err!(c.alex.add(share("")), Error::Invalid(_));
    assert_err!(
        c.alex.add(Body::TriggerEvent(TriggerEvent {
            intensity: 11,
            ..Default::default()
        })),
        Error::Invalid(_)
    );
    assert_err!(
        c.alex.add(Body::CheckIn(CheckIn {
            local_date: None,
            ..Default::default()
        })),
        Error::Invalid(_)
    );
    assert_err!("2026-02-30".parse::<LocalDate>(), Error::Invalid(_));
    assert_err!("24/11/2026".parse::<LocalDate>(), Error::Invalid(_));
    assert_err!(
        c.alex.add_with(question("Why?"), Some(Visibility::Private)),
        Error::Invalid(_)
    );
    assert_err!(
        c.alex.add(Body::Question(Question {
            text: "x".repeat(20_001),
            ..Default::default()
        })),
        Error::Invalid(_)
    );

    // An edit is checked the same way, and leaves the record as it was.
    let id = c.alex.add(check_in("2026-11-24", 5)?)?;
    let mut bad = body!(c.alex.get(id)?, CheckIn);
    bad.connection = Some(11);
    assert_err!(c.alex.edit(id, Body::CheckIn(bad)), Error::Invalid(_));
    assert_eq!(body!(c.alex.get(id)?, CheckIn).connection, Some(5));
    assert_eq!(
        c.alex.records()?.len(),
        1,
        "only the valid check-in was written"
    );
    Ok(())
}

#[test]
fn fields_and_values_from_a_newer_version_survive_an_edit() -> Result<()> {
    let mut c = Couple::new()?;
    let id = c.alex.add(commitment("Call if I'm running late"))?;
    c.sync()?;
    // Alex's tablet runs a newer Mend: it adds a field and a cadence this version does not know.
    write_as_newer_version(
        &mut c.alex,
        Space::Couple,
        id,
        &[
            ("future_field", "from a newer Mend"),
            ("cadence", "fortnightly"),
        ],
    )?;
    let read = body!(c.alex.get(id)?, Commitment);
    assert_eq!(read.cadence, Cadence::Unknown);

    // This version edits another field of the record as it read it.
    let mut edited = read;
    edited.text = "Call or text if I'm running late".into();
    c.alex.edit(id, Body::Commitment(edited))?;
    c.sync()?;

    for j in [&c.alex, &c.blake] {
        let raw = j.raw_fields(Space::Couple, id)?.context("record")?;
        assert_eq!(raw["text"], "Call or text if I'm running late");
        assert_eq!(raw.get("future_field"), Some(&"from a newer Mend".into()));
        assert_eq!(
            raw["cadence"], "fortnightly",
            "an unknown value is not overwritten"
        );
    }
    Ok(())
}

#[test]
fn an_unknown_value_survives_a_change_of_trigger_sharing() -> Result<()> {
    let mut c = Couple::new()?;
    let id = c.blake.add(Body::TriggerEvent(TriggerEvent {
        cue: "The song from that summer.".into(),
        intensity: 5,
        wanted_response: WantedResponse::Reassure,
        sharing: TriggerSharing::Full,
        ..Default::default()
    }))?;
    write_as_newer_version(
        &mut c.blake,
        Space::Couple,
        id,
        &[("wanted_response", "hold_my_hand")],
    )?;

    // Blake narrows it to a signal on this (older) version.
    let mut signal = body!(c.blake.get(id)?, TriggerEvent);
    assert_eq!(signal.wanted_response, WantedResponse::Unknown);
    signal.sharing = TriggerSharing::Signal;
    c.blake.edit(id, Body::TriggerEvent(signal))?;

    let shared = c.blake.raw_fields(Space::Couple, id)?.context("signal")?;
    assert_eq!(shared["sharing"], "signal");
    assert!(!shared.contains_key("cue"));
    assert_eq!(shared["wanted_response"], "hold_my_hand");
    let private = c
        .blake
        .raw_fields(Space::Personal, id)?
        .context("private copy")?;
    assert_eq!(private["wanted_response"], "hold_my_hand");
    Ok(())
}

#[test]
fn concurrent_edits_by_two_devices_of_one_author_surface_a_conflict() -> Result<()> {
    let mut c = Couple::new()?;
    let id = c.alex.add(Body::AccountabilityNote(AccountabilityNote {
        what_i_did: "I broke my promise about the phone.".into(),
        impact: "First draft.".into(),
        ..Default::default()
    }))?;
    let mut tablet = c.alex_second_device()?;

    // Offline, Alex rewrites the impact on both devices.
    let mut on_phone = body!(c.alex.get(id)?, AccountabilityNote);
    on_phone.impact = "You felt foolish for believing me.".into();
    c.alex.edit(id, Body::AccountabilityNote(on_phone))?;
    let mut on_tablet = body!(tablet.get(id)?, AccountabilityNote);
    on_tablet.impact = "You stopped sleeping.".into();
    tablet.edit(id, Body::AccountabilityNote(on_tablet))?;
    assert!(c.alex.get(id)?.conflicts.is_empty());

    sync(&mut c.alex, &mut tablet)?;
    c.sync()?;
    for j in [&c.alex, &tablet, &c.blake] {
        let record = j.get(id)?;
        let conflict = record
            .conflicts
            .iter()
            .find(|x| x.field == "impact")
            .context("the impact conflict is surfaced")?;
        let values: Vec<_> = conflict.values.iter().filter_map(|v| v.as_str()).collect();
        assert_eq!(values.len(), 2);
        assert!(values.contains(&"You felt foolish for believing me."));
        assert!(values.contains(&"You stopped sleeping."));
        assert_eq!(
            values[0],
            body!(record, AccountabilityNote).impact,
            "first is the one shown"
        );
        assert!(
            record.conflicts.iter().all(|x| x.field != "updated_at"),
            "noise is not shown"
        );
    }

    // Settling it (writing one value) clears the conflict.
    let mut settled = body!(c.alex.get(id)?, AccountabilityNote);
    settled.impact = "You felt foolish for believing me, and stopped sleeping.".into();
    c.alex.edit(id, Body::AccountabilityNote(settled))?;
    assert!(c.alex.get(id)?.conflicts.is_empty());
    Ok(())
}

#[test]
fn two_devices_writing_the_same_days_check_in_surface_a_conflict() -> Result<()> {
    let mut c = Couple::new()?;
    let mut tablet = c.alex_second_device()?;
    let on_phone = c.alex.add(check_in("2026-11-24", 3)?)?;
    let on_tablet = tablet.add(check_in("2026-11-24", 8)?)?;
    assert_eq!(on_phone, on_tablet, "both address the same record");
    sync(&mut c.alex, &mut tablet)?;

    let record = c.alex.get(on_phone)?;
    let whole = record
        .conflicts
        .iter()
        .find(|x| x.field == "*")
        .context("record conflict")?;
    assert_eq!(whole.values.len(), 2);
    let safeties: Vec<_> = whole
        .values
        .iter()
        .filter_map(|v| v["safety"].as_u64())
        .collect();
    assert!(
        safeties.contains(&3) && safeties.contains(&8),
        "{safeties:?}"
    );
    let shown = body!(record, CheckIn).safety.map(u64::from);
    assert_eq!(Some(safeties[0]), shown, "the first value is the one shown");
    Ok(())
}

#[test]
fn local_writes_say_which_space_and_records_they_wrote() -> Result<()> {
    let dir = tempfile::tempdir()?;
    let mut j = Journal::create(&dir.path().join("j.db"), "Alex")?;
    let _ = j.add(Body::Share(Share {
        feeling: "before anyone listens".into(),
        tough_question: false,
    }))?;
    assert!(j.take_written().is_empty(), "nothing kept until asked");
    j.track_written();
    let shared = j.add(Body::Share(Share {
        feeling: "seen".into(),
        tough_question: false,
    }))?;
    let private = j.add(Body::ProcessingNote(ProcessingNote {
        text: "mine".into(),
    }))?;
    j.remove(shared)?;
    assert_eq!(
        j.take_written(),
        vec![
            (Space::Couple, vec![shared]),
            (Space::Personal, vec![private]),
            (Space::Couple, vec![shared]),
        ]
    );
    assert!(j.take_written().is_empty(), "taken once");
    // Sharing a private note moves it: both spaces were written.
    let note = j.add(Body::ProcessingNote(ProcessingNote {
        text: "now yours too".into(),
    }))?;
    let _ = j.take_written();
    j.share(note)?;
    assert_eq!(
        j.take_written(),
        vec![(Space::Couple, vec![note]), (Space::Personal, vec![note])]
    );
    Ok(())
}

#[test]
fn a_weekly_commitment_keys_claims_and_views_by_the_weeks_monday() -> Result<()> {
    let mut c = Couple::new()?;
    let id = c.alex.add(Body::Commitment(Commitment {
        text: "A long walk together".into(),
        cadence: Cadence::Weekly,
        ..Default::default()
    }))?;
    c.sync()?;
    // Saturday evening: both days of the week are past.
    NOW.with(|now| now.set(START_MS + 5 * 86_400_000 + 12 * 3_600_000));
    let thursday: LocalDate = "2026-11-26".parse()?;
    let saturday: LocalDate = "2026-11-28".parse()?;
    c.alex.claim(id, thursday, ClaimStatus::Done, "")?;
    c.blake.confirm(id, saturday, PartnerView::Confirmed, "")?;
    c.sync()?;
    let Body::Commitment(cm) = c.alex.get(id)?.body else {
        bail!("not a commitment")
    };
    let monday: LocalDate = "2026-11-23".parse()?;
    assert_eq!(cm.claims.keys().copied().collect::<Vec<_>>(), vec![monday]);
    assert_eq!(cm.views.keys().copied().collect::<Vec<_>>(), vec![monday]);
    Ok(())
}
