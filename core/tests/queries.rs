//! The views the app shows, computed on each phone: the timeline, open questions, boundary
//! status, needs, weekly progress, and the therapist packet.
//!
//! Time is pinned per test thread, so every number below is computed by hand.

use std::cell::Cell;

use anyhow::{Context, Result, bail};
use mend_core::{
    Body, Error, JoinSource, Journal, Kind, LocalDate, RecordId, Space,
    export::{Format, PacketOptions},
    model::*,
    query::{BoundaryState, TimelineQuery},
};
use tempfile::TempDir;

const DAY_MS: i64 = 86_400_000;

thread_local! {
    static NOW: Cell<i64> = const { Cell::new(0) };
}

/// The pinned clock: every reading is one second after the previous one.
fn clock() -> i64 {
    NOW.with(|now| {
        let t = now.get();
        now.set(t + 1_000);
        t
    })
}

/// Moves the pinned clock to `hour`:00 UTC on `day`.
fn at(day: &str, hour: i64) -> Result<()> {
    let ms = i64::from(date(day)?.days()) * DAY_MS + hour * 3_600_000;
    NOW.with(|now| now.set(ms));
    Ok(())
}

fn date(s: &str) -> Result<LocalDate> {
    Ok(s.parse()?)
}

/// Two partners, each on their own device.
struct Couple {
    alex: Journal,
    blake: Journal,
    _dir: TempDir,
}

impl Couple {
    fn new() -> Result<Self> {
        at("2026-11-20", 8)?;
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
        let mut couple = Self {
            alex,
            blake,
            _dir: dir,
        };
        couple.sync()?;
        Ok(couple)
    }

    /// Both phones exchange the couple's document.
    fn sync(&mut self) -> Result<()> {
        let (x, y) = (&mut self.alex, &mut self.blake);
        let to_y = x.changes_since(Space::Couple, &y.heads(Space::Couple)?)?;
        y.apply_changes(Space::Couple, &to_y)?;
        let to_x = y.changes_since(Space::Couple, &x.heads(Space::Couple)?)?;
        x.apply_changes(Space::Couple, &to_x)?;
        Ok(())
    }
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

fn question(text: &str) -> Body {
    Body::Question(Question {
        category: "why".into(),
        text: text.into(),
        ..Default::default()
    })
}

fn answer(q: RecordId, text: &str) -> Body {
    Body::Answer(Answer {
        question: Some(q),
        text: text.into(),
    })
}

fn boundary(text: &str) -> Body {
    Body::Boundary(Boundary {
        area: BoundaryArea::Communication,
        text: text.into(),
        ..Default::default()
    })
}

fn check_in(day: &str, safety: u8, trust: u8, connection: u8) -> Result<Body> {
    Ok(Body::CheckIn(CheckIn {
        local_date: Some(date(day)?),
        safety: Some(safety),
        trust: Some(trust),
        connection: Some(connection),
        ..Default::default()
    }))
}

fn honesty(text: &str) -> Body {
    Body::HonestyMoment(HonestyMoment {
        kind: HonestyKind::PromiseKept,
        text: text.into(),
        link: None,
        timing: HonestyTiming::ShareNow,
        noticed_on: None,
    })
}

fn ids(records: &[Record]) -> Vec<RecordId> {
    records.iter().map(|r| r.id).collect()
}

// ---------------------------------------------------------------------------------------------
// Timeline
// ---------------------------------------------------------------------------------------------

/// Seven shared records a minute apart, oldest first, plus a private one of Alex's.
struct Story {
    shared: Vec<RecordId>,
    private: RecordId,
    reply: RecordId,
    question: RecordId,
    answer: RecordId,
}

fn seven_shared_records(c: &mut Couple) -> Result<Story> {
    at("2026-11-23", 9)?;
    let note = c.alex.add(Body::AccountabilityNote(AccountabilityNote {
        what_i_did: "I kept a second phone.".into(),
        ..Default::default()
    }))?;
    c.sync()?;
    let question = c.blake.add(question("Where is it now?"))?;
    let feeling = c.blake.add(Body::Share(Share {
        feeling: "I keep checking your pockets.".into(),
        tough_question: false,
    }))?;
    c.sync()?;
    let answer = c
        .alex
        .add(answer(question, "I gave it to you; it is in the drawer."))?;
    let reply = c.alex.add(Body::Reply(Reply {
        share: Some(feeling),
        kind: ReplyKind::Reflect,
        text: "You don't feel safe yet.".into(),
    }))?;
    let plan = c.alex.add(Body::PreAssurance(PreAssurance {
        occasion: "Your sister's wedding".into(),
        date: None,
        plan: "I stay by your side.".into(),
    }))?;
    c.sync()?;
    let moment = c.blake.add(honesty("You handed over the phone."))?;
    let private = c.alex.add(Body::ProcessingNote(ProcessingNote {
        text: "I felt relief giving it up.".into(),
    }))?;
    c.sync()?;
    Ok(Story {
        shared: vec![note, question, feeling, answer, reply, plan, moment],
        private,
        reply,
        question,
        answer,
    })
}

#[test]
fn timeline_pages_newest_first_with_a_cursor() -> Result<()> {
    let mut c = Couple::new()?;
    let story = seven_shared_records(&mut c)?;
    let mut newest_first = story.shared.clone();
    newest_first.reverse();

    let mut seen = Vec::new();
    let mut query = TimelineQuery {
        limit: 3,
        ..Default::default()
    };
    let mut sizes = Vec::new();
    loop {
        let page = c.blake.timeline(&query)?;
        sizes.push(page.items.len());
        seen.extend(ids(&page.items));
        match page.next_cursor {
            Some(cursor) => query.cursor = Some(cursor),
            None => break,
        }
    }
    assert_eq!(sizes, [3, 3, 1]);
    assert_eq!(seen, newest_first, "every record once, newest first");

    // Alex's own timeline holds the private note too; Blake's never does.
    let alex_all = c.alex.timeline(&TimelineQuery::default())?;
    assert_eq!(alex_all.items.len(), 8);
    assert_eq!(alex_all.items[0].id, story.private);
    assert_eq!(alex_all.next_cursor, None);

    assert!(matches!(
        c.blake.timeline(&TimelineQuery {
            cursor: Some("yesterday".into()),
            ..Default::default()
        }),
        Err(Error::Invalid(_))
    ));
    Ok(())
}

#[test]
fn timeline_filters_by_kind_author_and_time() -> Result<()> {
    let mut c = Couple::new()?;
    let story = seven_shared_records(&mut c)?;
    let [note, question, feeling, answer, reply, plan, moment] = story.shared[..] else {
        bail!("seven records");
    };

    let by_kind = c.blake.timeline(&TimelineQuery {
        kinds: vec![Kind::Question, Kind::Answer],
        ..Default::default()
    })?;
    assert_eq!(ids(&by_kind.items), [answer, question]);

    let by_blake = c.alex.timeline(&TimelineQuery {
        author: Some(c.blake.me()),
        ..Default::default()
    })?;
    assert_eq!(ids(&by_blake.items), [moment, feeling, question]);

    // From the answer (inclusive) to the plan (exclusive).
    let from = c.blake.get(answer)?.created_at;
    let to = c.blake.get(plan)?.created_at;
    let window = c.blake.timeline(&TimelineQuery {
        from_ms: Some(from),
        to_ms: Some(to),
        ..Default::default()
    })?;
    assert_eq!(ids(&window.items), [reply, answer]);

    let combined = c.blake.timeline(&TimelineQuery {
        kinds: vec![Kind::AccountabilityNote, Kind::HonestyMoment],
        author: Some(c.alex.me()),
        ..Default::default()
    })?;
    assert_eq!(ids(&combined.items), [note]);
    Ok(())
}

#[test]
fn timeline_leaves_removed_records_out_unless_asked() -> Result<()> {
    let mut c = Couple::new()?;
    let story = seven_shared_records(&mut c)?;
    c.alex.remove(story.reply)?;
    c.sync()?;

    let default = c.blake.timeline(&TimelineQuery::default())?;
    assert_eq!(default.items.len(), 6);
    assert!(default.items.iter().all(|r| r.id != story.reply));

    let all = c.blake.timeline(&TimelineQuery {
        include_removed: true,
        ..Default::default()
    })?;
    assert_eq!(all.items.len(), 7);
    let placeholder = all
        .items
        .iter()
        .find(|r| r.id == story.reply)
        .context("placeholder")?;
    assert!(placeholder.removed);
    assert_eq!(body!(placeholder, Reply).text, "");
    Ok(())
}

// ---------------------------------------------------------------------------------------------
// Open questions, boundaries, needs
// ---------------------------------------------------------------------------------------------

#[test]
fn open_questions_carry_their_answers_and_leave_once_answered() -> Result<()> {
    let mut c = Couple::new()?;
    let story = seven_shared_records(&mut c)?;
    // The timeline story answered its question; Blake asks three more.
    let when = c.blake.add(question("When did you last speak?"))?;
    let who = c.blake.add(question("Who else knew?"))?;
    let why = c.blake.add(question("Why did you stay?"))?;
    c.sync()?;
    let open: Vec<_> = c
        .alex
        .open_questions()?
        .iter()
        .map(|t| t.question.id)
        .collect();
    assert_eq!(
        open,
        [when, who, why],
        "oldest first; the answered one is not open"
    );

    // Alex answers one, puts one off.
    c.alex.add(answer(when, "Two weeks ago, to end it."))?;
    c.alex.set_question_status(who, QuestionStatus::NotNow)?;
    c.sync()?;
    let threads = c.blake.open_questions()?;
    assert_eq!(
        threads.iter().map(|t| t.question.id).collect::<Vec<_>>(),
        [who, why]
    );
    assert_eq!(
        body!(threads[0].question, Question).status,
        QuestionStatus::NotNow
    );
    assert!(threads.iter().all(|t| t.answers.is_empty()));

    // Blake reopens the first story question: it comes back with its answer attached.
    c.blake
        .set_question_status(story.question, QuestionStatus::Open)?;
    c.sync()?;
    let threads = c.alex.open_questions()?;
    let reopened = threads
        .iter()
        .find(|t| t.question.id == story.question)
        .context("reopened question")?;
    assert_eq!(ids(&reopened.answers), [story.answer]);
    assert_eq!(threads.len(), 3);

    // A withdrawn question leaves the list.
    c.blake
        .set_question_status(why, QuestionStatus::Withdrawn)?;
    assert!(
        c.blake
            .open_questions()?
            .iter()
            .all(|t| t.question.id != why)
    );
    Ok(())
}

#[test]
fn boundary_status_tells_agreed_pending_declined_and_revisit_apart() -> Result<()> {
    let mut c = Couple::new()?;
    let agreed = c.alex.add(boundary("We answer each other's calls."))?;
    let pending = c.alex.add(boundary("No phones at dinner."))?;
    let declined = c.blake.add(boundary("Separate bedrooms for now."))?;
    let revisit = c.blake.add(boundary("Weekly money check."))?;
    let removed = c.blake.add(boundary("No alcohol."))?;
    c.blake.remove(removed)?;
    c.sync()?;
    c.blake.consent(agreed, ConsentState::Agreed)?;
    c.alex.consent(declined, ConsentState::Declined)?;
    c.alex.consent(revisit, ConsentState::Agreed)?;
    c.sync()?;
    c.blake.consent(revisit, ConsentState::Revisit)?;
    c.sync()?;

    for j in [&c.alex, &c.blake] {
        let status = j.boundary_status()?;
        let states: Vec<_> = status.iter().map(|s| (s.boundary.id, s.state)).collect();
        assert_eq!(
            states,
            [
                (agreed, BoundaryState::Agreed),
                (pending, BoundaryState::Pending),
                (declined, BoundaryState::Declined),
                (revisit, BoundaryState::Revisit),
            ]
        );
        let pending_view = &status[1].consents;
        assert_eq!(pending_view.len(), 2, "one view per partner");
        let blake = pending_view
            .iter()
            .find(|v| v.partner == c.blake.me())
            .context("blake")?;
        assert_eq!(
            (blake.state, blake.current),
            (ConsentState::Proposed, false)
        );
    }
    Ok(())
}

#[test]
fn needs_come_with_the_partners_response() -> Result<()> {
    let mut c = Couple::new()?;
    let evening = c.blake.add(Body::Need(Need {
        kind: NeedKind::CheckInCadence,
        text: "Ten minutes every evening.".into(),
        status: NeedStatus::Open,
        response: None,
    }))?;
    let therapy = c.blake.add(Body::Need(Need {
        kind: NeedKind::Therapy,
        text: "Couples therapy.".into(),
        status: NeedStatus::Open,
        response: None,
    }))?;
    let gone = c.blake.add(Body::Need(Need {
        kind: NeedKind::Other,
        text: "Never mind.".into(),
        status: NeedStatus::Open,
        response: None,
    }))?;
    c.blake.remove(gone)?;
    c.sync()?;
    c.alex.respond_to_need(
        therapy,
        NeedResponseKind::LetsTalk,
        "Can we talk about cost?",
    )?;
    c.sync()?;

    let needs = c.blake.needs()?;
    assert_eq!(ids(&needs), [evening, therapy]);
    assert_eq!(body!(needs[0], Need).response, None);
    let response = body!(needs[1], Need).response.context("a response")?;
    assert_eq!(response.kind, NeedResponseKind::LetsTalk);
    assert_eq!(response.note, "Can we talk about cost?");
    assert_eq!(c.alex.needs()?, needs, "both phones agree");
    Ok(())
}

// ---------------------------------------------------------------------------------------------
// Progress
// ---------------------------------------------------------------------------------------------

/// Two weeks (Mon 2026-11-23 to Sun 2026-12-06) of one daily commitment, check-ins from both
/// partners and honesty moments, with every number known in advance.
fn two_weeks(c: &mut Couple) -> Result<RecordId> {
    at("2026-11-23", 7)?;
    let id = c.alex.add(Body::Commitment(Commitment {
        text: "Phone stays in the hall at night".into(),
        cadence: Cadence::Daily,
        status: CommitmentStatus::Active,
        ..Default::default()
    }))?;
    // The ledger is written at the end of the fortnight (a claim cannot be ahead of today).
    at("2026-12-06", 20)?;
    // Week 1 claims: done, done, partial, missed, done, partial, (Sunday: nothing) = 4.0.
    for (day, status) in [
        ("2026-11-23", ClaimStatus::Done),
        ("2026-11-24", ClaimStatus::Done),
        ("2026-11-25", ClaimStatus::Partial),
        ("2026-11-26", ClaimStatus::Missed),
        ("2026-11-27", ClaimStatus::Done),
        ("2026-11-28", ClaimStatus::Partial),
        // Week 2: done, done = 2.0.
        ("2026-11-30", ClaimStatus::Done),
        ("2026-12-01", ClaimStatus::Done),
    ] {
        c.alex.claim(id, date(day)?, status, "")?;
    }
    c.sync()?;
    // Week 1 confirmations: 3 confirmed (one disagree, one didn't notice); week 2: 1.
    for (day, view) in [
        ("2026-11-23", PartnerView::Confirmed),
        ("2026-11-24", PartnerView::Confirmed),
        ("2026-11-25", PartnerView::Disagree),
        ("2026-11-27", PartnerView::Confirmed),
        ("2026-11-28", PartnerView::DidNotNotice),
        ("2026-11-30", PartnerView::Confirmed),
    ] {
        c.blake.confirm(id, date(day)?, view, "")?;
    }

    // Check-ins. Week 1: Alex (4,3,5) and (6,5,7), Blake (5,2,6).
    // Week 2: Alex (8,6,8), Blake (8,7,9).
    c.alex.add(check_in("2026-11-23", 4, 3, 5)?)?;
    c.alex.add(check_in("2026-11-25", 6, 5, 7)?)?;
    c.alex.add(check_in("2026-11-30", 8, 6, 8)?)?;
    c.blake.add(check_in("2026-11-24", 5, 2, 6)?)?;
    c.blake.add(check_in("2026-12-01", 8, 7, 9)?)?;

    // Honesty moments: two in week 1 (a third is removed), one in week 2.
    at("2026-11-24", 20)?;
    c.blake
        .add(honesty("You showed me the message right away."))?;
    at("2026-11-26", 20)?;
    c.blake.add(honesty("You came home when you said."))?;
    let retracted = c.blake.add(honesty("Posted by mistake."))?;
    c.blake.remove(retracted)?;
    at("2026-12-02", 20)?;
    c.blake.add(honesty("You told me about the email."))?;
    c.sync()?;
    Ok(id)
}

#[test]
fn progress_counts_a_week_of_claims_and_confirmations_exactly() -> Result<()> {
    let mut c = Couple::new()?;
    two_weeks(&mut c)?;
    let p = c.alex.progress(date("2026-11-23")?, date("2026-12-06")?)?;
    assert_eq!(p.weeks.len(), 2);
    let (w1, w2) = (&p.weeks[0], &p.weeks[1]);
    assert_eq!(w1.week_start, date("2026-11-23")?);
    assert_eq!(w2.week_start, date("2026-11-30")?);

    assert_eq!(w1.commitments.expected, 7);
    assert_eq!(w1.commitments.claimed, 4.0);
    assert_eq!(w1.commitments.confirmed, 3);
    assert_eq!(w1.commitments.consistency, Some(4.0 / 7.0));
    assert_eq!(w1.commitments.confirmation, Some(3.0 / 7.0));

    assert_eq!(w2.commitments.expected, 7);
    assert_eq!(w2.commitments.claimed, 2.0);
    assert_eq!(w2.commitments.confirmed, 1);
    assert_eq!(w2.commitments.consistency, Some(2.0 / 7.0));
    assert_eq!(w2.commitments.confirmation, Some(1.0 / 7.0));
    // The commitment is Alex's: Blake has nothing due, which is not 0 %.
    let blake_w1 = &w1.by_partner[&c.blake.me()].commitments;
    assert_eq!((blake_w1.expected, blake_w1.consistency), (0, None));
    assert_eq!(w1.by_partner[&c.alex.me()].commitments, w1.commitments);
    assert_eq!(w1.by_partner[&c.blake.me()].honesty_noticed, 2);

    assert_eq!((w1.honesty_moments, w2.honesty_moments), (2, 1));

    // Both phones see the same records, so they compute the same progress.
    assert_eq!(
        c.blake.progress(date("2026-11-23")?, date("2026-12-06")?)?,
        p
    );
    Ok(())
}

#[test]
fn progress_averages_check_ins_and_shows_the_trend() -> Result<()> {
    let mut c = Couple::new()?;
    two_weeks(&mut c)?;
    let p = c.blake.progress(date("2026-11-23")?, date("2026-12-06")?)?;
    let (w1, w2) = (&p.weeks[0].check_ins, &p.weeks[1].check_ins);

    assert_eq!(w1.count, 3);
    assert_eq!(w1.safety, Some(5.0));
    assert_eq!(w1.trust, Some(10.0 / 3.0));
    assert_eq!(w1.connection, Some(6.0));
    assert_eq!(w2.count, 2);
    assert_eq!(
        (w2.safety, w2.trust, w2.connection),
        (Some(8.0), Some(6.5), Some(8.5))
    );

    let by_partner = &p.weeks[0].by_partner;
    let alex = &by_partner[&c.alex.me()].check_ins;
    let blake = &by_partner[&c.blake.me()].check_ins;
    assert_eq!(
        (alex.count, alex.safety, alex.trust),
        (2, Some(5.0), Some(4.0))
    );
    assert_eq!(
        (blake.count, blake.safety, blake.trust),
        (1, Some(5.0), Some(2.0))
    );

    // Two weeks: the slope is the difference between them.
    assert_eq!(p.trend.safety, Some(3.0));
    assert_eq!(p.trend.connection, Some(2.5));
    let trust = p.trend.trust.context("a trust trend")?;
    assert!(
        trust > 0.0 && (trust - (6.5 - 10.0 / 3.0)).abs() < 1e-9,
        "{trust}"
    );

    // One week of data is no trend.
    let one = c.blake.progress(date("2026-11-23")?, date("2026-11-29")?)?;
    assert_eq!(one.trend.safety, None);
    Ok(())
}

#[test]
fn progress_trend_falls_when_scores_fall() -> Result<()> {
    let mut c = Couple::new()?;
    at("2026-12-08", 12)?;
    c.alex.add(check_in("2026-11-23", 7, 7, 7)?)?;
    c.alex.add(check_in("2026-11-30", 5, 6, 7)?)?;
    c.alex.add(check_in("2026-12-07", 3, 5, 7)?)?;
    let p = c.alex.progress(date("2026-11-23")?, date("2026-12-13")?)?;
    assert_eq!(p.trend.safety, Some(-2.0));
    assert_eq!(p.trend.trust, Some(-1.0));
    assert_eq!(p.trend.connection, Some(0.0));
    Ok(())
}

#[test]
fn progress_counts_whole_weeks_whatever_the_range() -> Result<()> {
    let mut c = Couple::new()?;
    two_weeks(&mut c)?;
    // Wednesday to Sunday of week 1 asks for that week: it is counted whole (Monday's and
    // Tuesday's claims too), exactly as in a two-week range.
    let part = c.alex.progress(date("2026-11-25")?, date("2026-11-29")?)?;
    let whole = c.alex.progress(date("2026-11-23")?, date("2026-12-06")?)?;
    assert_eq!(part.weeks.len(), 1);
    assert_eq!(part.weeks[0], whole.weeks[0]);
    let w = &part.weeks[0].commitments;
    assert_eq!((w.expected, w.claimed), (7, 4.0));
    // Days after the range's end are not yet due.
    let midweek = c.alex.progress(date("2026-11-23")?, date("2026-11-25")?)?;
    let w = &midweek.weeks[0].commitments;
    assert_eq!((w.expected, w.claimed), (3, 2.5));
    Ok(())
}

#[test]
fn progress_refuses_a_backwards_range() -> Result<()> {
    let c = Couple::new()?;
    assert!(matches!(
        c.alex.progress(date("2026-12-01")?, date("2026-11-01")?),
        Err(Error::Invalid(_))
    ));
    Ok(())
}

// ---------------------------------------------------------------------------------------------
// The therapist packet
// ---------------------------------------------------------------------------------------------

fn week_packet() -> Result<PacketOptions> {
    Ok(PacketOptions {
        from: date("2026-11-23")?,
        to: date("2026-11-29")?,
        kinds: vec![],
    })
}

#[test]
fn markdown_packet_holds_the_weeks_records_and_numbers() -> Result<()> {
    let mut c = Couple::new()?;
    two_weeks(&mut c)?;
    at("2026-11-25", 12)?;
    c.alex.add(Body::ProcessingNote(ProcessingNote {
        text: "Only for me to read.".into(),
    }))?;
    at("2026-12-03", 12)?;
    c.alex.add(Body::PreAssurance(PreAssurance {
        occasion: "Christmas at my parents'".into(),
        date: None,
        plan: "Arrive together, leave together.".into(),
    }))?;

    let md = c.alex.export_packet(&week_packet()?, Format::Markdown)?;
    assert!(
        md.starts_with("# Journal packet, 2026-11-23 to 2026-11-29"),
        "{md}"
    );
    assert!(md.contains("Partners: Alex and Blake") || md.contains("Partners: Blake and Alex"));
    assert!(md.contains("Phone stays in the hall at night"));
    assert!(md.contains("You came home when you said."));
    // One progress table per partner: Alex owns the commitment and wrote two check-ins, Blake
    // confirmed, wrote one check-in and noticed both honesty moments.
    assert!(
        md.contains("| 23 Nov – 29 Nov | 57 % | 43 % | 2 | 5.0 | 4.0 | 6.0 | 0 |"),
        "{md}"
    );
    assert!(
        md.contains("| 23 Nov – 29 Nov | nothing due | nothing due | 1 | 5.0 | 2.0 | 6.0 | 2 |"),
        "{md}"
    );
    assert!(
        !md.contains("Posted by mistake."),
        "removed records stay out"
    );
    assert!(
        !md.contains("Only for me to read."),
        "private records are never in a packet"
    );
    assert!(
        !md.contains("Arrive together"),
        "records after the range stay out"
    );

    let mut only_honesty = week_packet()?;
    only_honesty.kinds = vec![Kind::HonestyMoment];
    let md = c.alex.export_packet(&only_honesty, Format::Markdown)?;
    assert!(md.contains("You came home when you said."));
    assert!(!md.contains("Phone stays in the hall at night"));
    Ok(())
}

#[test]
fn html_packet_is_one_self_contained_escaped_page_with_a_chart() -> Result<()> {
    let mut c = Couple::new()?;
    two_weeks(&mut c)?;
    at("2026-11-26", 12)?;
    c.blake.add(Body::Share(Share {
        feeling: "<script>alert('gotcha')</script> & <img onerror=alert(1)>".into(),
        tough_question: false,
    }))?;
    c.sync()?;

    let html = c.alex.export_packet(&week_packet()?, Format::Html)?;
    assert!(html.starts_with("<!DOCTYPE html>"));
    assert_eq!(html.matches("<html").count(), 1);
    assert!(html.trim_end().ends_with("</html>"));
    assert!(html.contains("Phone stays in the hall at night"));
    assert!(html.contains("&lt;script&gt;alert(&#39;gotcha&#39;)&lt;/script&gt; &amp; &lt;img"));
    let lower = html.to_lowercase();
    assert!(!lower.contains("<script"), "no script, and no injected one");
    assert!(!lower.contains("<img"));
    assert!(!lower.contains("src="), "nothing loaded from elsewhere");
    assert!(!lower.contains("href=\"http") && !lower.contains("href=http"));
    assert!(!lower.contains("<link") && !lower.contains("url("));
    assert!(html.contains("<svg"));
    assert!(html.contains("<polyline"), "check-ins are drawn as lines");
    Ok(())
}

#[test]
fn html_packet_without_check_ins_draws_no_lines() -> Result<()> {
    let mut c = Couple::new()?;
    at("2026-11-24", 12)?;
    c.alex.add(Body::HonestyMoment(HonestyMoment {
        kind: HonestyKind::VolunteeredTruth,
        text: "Told you about the call.".into(),
        link: None,
        timing: HonestyTiming::ShareNow,
        noticed_on: None,
    }))?;
    let html = c.alex.export_packet(&week_packet()?, Format::Html)?;
    assert!(html.contains("Told you about the call."));
    assert!(html.contains("<svg"));
    assert!(!html.contains("<polyline"));
    Ok(())
}

#[test]
fn a_packet_without_private_records_leaves_out_private_check_in_fields_and_trigger_details()
-> Result<()> {
    let mut c = Couple::new()?;
    at("2026-11-24", 12)?;
    let note = "I looked at their photos again.";
    let cue = "Same perfume on the train.";
    c.alex.add(Body::CheckIn(CheckIn {
        local_date: Some(date("2026-11-24")?),
        safety: Some(6),
        trust: Some(1),
        connection: Some(5),
        note: Some(note.into()),
        private_fields: vec![CheckInField::Note, CheckInField::Trust],
        ..Default::default()
    }))?;
    at("2026-11-25", 9)?;
    c.alex.add(Body::TriggerEvent(TriggerEvent {
        cue: cue.into(),
        intensity: 7,
        wanted_response: WantedResponse::Space,
        sharing: TriggerSharing::Signal,
        ..Default::default()
    }))?;

    for format in [Format::Markdown, Format::Html] {
        let packet = c.alex.export_packet(&week_packet()?, format)?;
        assert!(
            !packet.contains(note),
            "{format:?}: a private check-in note"
        );
        assert!(
            !packet.contains(cue),
            "{format:?}: a signal-only trigger's cue"
        );
    }
    let p = c.alex.export_packet(&week_packet()?, Format::Markdown)?;
    assert!(
        p.contains("| 23 Nov – 29 Nov | nothing due | nothing due | 1 | 6.0 | – | 5.0 | 0 |"),
        "{p}"
    );
    Ok(())
}

#[test]
fn a_packet_refuses_a_backwards_range() -> Result<()> {
    let c = Couple::new()?;
    let mut options = week_packet()?;
    std::mem::swap(&mut options.from, &mut options.to);
    assert!(matches!(
        c.alex.export_packet(&options, Format::Html),
        Err(Error::Invalid(_))
    ));
    Ok(())
}
