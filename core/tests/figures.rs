//! The figures people measure trust by: weeks that add up whatever the window, claims only
//! inside a commitment's life, dates in the couple's zone and within sane bounds, and text from
//! the partner that can never act as markup.

use std::{cell::Cell, collections::BTreeMap};

use anyhow::Result;
use mend_core::{
    Body, Calendar, Error, JoinSource, Journal, Kind, LocalDate, OpenOptions, PartnerId, Record,
    RecordId, Space, Visibility, Weekday,
    export::{Format, PacketOptions},
    model::*,
    query,
};
use proptest::prelude::*;
use tempfile::TempDir;

const DAY_MS: i64 = 86_400_000;

thread_local! {
    static NOW: Cell<i64> = const { Cell::new(0) };
}

fn clock() -> i64 {
    NOW.with(|now| {
        let t = now.get();
        now.set(t + 1_000);
        t
    })
}

fn date(s: &str) -> Result<LocalDate> {
    Ok(s.parse()?)
}

/// Moves the pinned clock to `minute` minutes past midnight UTC on `day`.
fn at(day: &str, minute: i64) -> Result<()> {
    let ms = i64::from(date(day)?.days()) * DAY_MS + minute * 60_000;
    NOW.with(|now| now.set(ms));
    Ok(())
}

struct Couple {
    alex: Journal,
    blake: Journal,
    _dir: TempDir,
}

impl Couple {
    fn new() -> Result<Self> {
        at("2026-11-02", 8 * 60)?;
        let dir = tempfile::tempdir()?;
        // Created on the test's clock, so when each partner joined is 2026-11-02 whatever the
        // day the test runs (the journal's date bounds follow it).
        let options = OpenOptions {
            clock: Some(clock),
            ..OpenOptions::default()
        };
        let mut alex = Journal::create_with(&dir.path().join("alex.db"), "Alex", options)?;
        let source = JoinSource {
            couple: alex.save_space(Space::Couple)?,
            personal: None,
            partner: None,
        };
        let mut blake =
            Journal::join_with(&dir.path().join("blake.db"), &source, "Blake", options)?;
        alex.set_clock(clock);
        blake.set_clock(clock);
        let mut c = Self {
            alex,
            blake,
            _dir: dir,
        };
        c.sync()?;
        Ok(c)
    }

    fn sync(&mut self) -> Result<()> {
        let (x, y) = (&mut self.alex, &mut self.blake);
        let to_y = x.changes_since(Space::Couple, &y.heads(Space::Couple)?)?;
        y.apply_changes(Space::Couple, &to_y)?;
        let to_x = y.changes_since(Space::Couple, &x.heads(Space::Couple)?)?;
        x.apply_changes(Space::Couple, &to_x)?;
        Ok(())
    }
}

fn daily(text: &str) -> Body {
    Body::Commitment(Commitment {
        text: text.into(),
        cadence: Cadence::Daily,
        status: CommitmentStatus::Active,
        ..Default::default()
    })
}

fn check_in(day: &str, safety: u8) -> Result<Body> {
    Ok(Body::CheckIn(CheckIn {
        local_date: Some(date(day)?),
        safety: Some(safety),
        ..Default::default()
    }))
}

#[test]
fn the_same_week_reads_the_same_in_any_window() -> Result<()> {
    let mut c = Couple::new()?;
    // Six check-ins in the week of 2026-11-23, read on Friday 11-27.
    at("2026-11-27", 20 * 60)?;
    for (day, s) in [
        ("2026-11-23", 6),
        ("2026-11-24", 7),
        ("2026-11-25", 5),
        ("2026-11-26", 7),
        ("2026-11-27", 6),
    ] {
        c.alex.add(check_in(day, s)?)?;
    }
    let eight = c.alex.recent_progress(8)?;
    let three = c.alex.recent_progress(3)?;
    let one = c.alex.recent_progress(1)?;
    let this_week = |p: &query::Progress| p.weeks.last().cloned();
    assert_eq!(this_week(&eight), this_week(&three));
    assert_eq!(this_week(&eight), this_week(&one));
    let week = this_week(&one).ok_or_else(|| anyhow::anyhow!("a week"))?;
    assert_eq!(week.week_start, date("2026-11-23")?);
    assert_eq!(week.check_ins.count, 5);
    assert_eq!(eight.weeks.len(), 8);
    assert!(matches!(c.alex.recent_progress(0), Err(Error::Invalid(_))));
    Ok(())
}

#[test]
fn a_kept_week_is_the_same_share_whatever_the_window() -> Result<()> {
    let mut c = Couple::new()?;
    at("2026-11-23", 7 * 60)?;
    let id = c.alex.add(daily("Phone in the hall"))?;
    at("2026-11-25", 21 * 60)?;
    for day in ["2026-11-23", "2026-11-24", "2026-11-25"] {
        c.alex.claim(id, date(day)?, ClaimStatus::Done, "")?;
    }
    let one = c.alex.recent_progress(1)?;
    let eight = c.alex.recent_progress(8)?;
    let (a, b) = (&one.weeks[0].commitments, &eight.weeks[7].commitments);
    assert_eq!(a, b);
    assert_eq!((a.expected, a.claimed, a.consistency), (3, 3.0, Some(1.0)));
    // The weeks before the commitment existed have nothing due: not 0 %.
    assert_eq!(eight.weeks[0].commitments.consistency, None);
    Ok(())
}

#[test]
fn claims_outside_a_commitments_life_are_refused() -> Result<()> {
    let mut c = Couple::new()?;
    at("2026-11-25", 9 * 60)?;
    let id = c.alex.add(daily("Home by seven"))?;
    let before = c.alex.claim(id, date("2026-11-20")?, ClaimStatus::Done, "");
    assert!(
        matches!(before, Err(Error::Invalid(ref m)) if m.contains("not due")),
        "{before:?}"
    );
    let ahead = c.alex.claim(id, date("2026-11-28")?, ClaimStatus::Done, "");
    assert!(matches!(ahead, Err(Error::Invalid(_))), "{ahead:?}");
    c.alex
        .claim(id, date("2026-11-25")?, ClaimStatus::Done, "")?;

    // Paused from the 26th: that day is not due, nor claimable, and not expected.
    at("2026-11-26", 9 * 60)?;
    let Body::Commitment(mut body) = c.alex.get(id)?.body else {
        anyhow::bail!("a commitment");
    };
    body.status = CommitmentStatus::Paused;
    c.alex.edit(id, Body::Commitment(body))?;
    let paused = c.alex.claim(id, date("2026-11-26")?, ClaimStatus::Done, "");
    assert!(matches!(paused, Err(Error::Invalid(_))), "{paused:?}");
    let p = c.alex.progress(date("2026-11-23")?, date("2026-11-26")?)?;
    let w = &p.weeks[0].commitments;
    assert_eq!((w.expected, w.claimed, w.consistency), (1, 1.0, Some(1.0)));

    // A backdated start makes the earlier days due, and claimable.
    at("2026-11-27", 9 * 60)?;
    let backdated = c.alex.add(Body::Commitment(Commitment {
        text: "Share my location".into(),
        cadence: Cadence::Daily,
        status: CommitmentStatus::Active,
        starts_on: Some(date("2026-11-23")?),
        ..Default::default()
    }))?;
    c.alex
        .claim(backdated, date("2026-11-23")?, ClaimStatus::Done, "")?;
    c.sync()?;
    let late = c
        .blake
        .confirm(backdated, date("2026-11-01")?, PartnerView::Confirmed, "");
    assert!(matches!(late, Err(Error::Invalid(_))), "{late:?}");
    Ok(())
}

#[test]
fn dates_outside_the_journals_life_are_refused() -> Result<()> {
    let mut c = Couple::new()?;
    at("2026-11-25", 9 * 60)?;
    for day in ["1900-01-01", "2099-01-01", "2026-11-27"] {
        let r = c.alex.add(check_in(day, 5)?);
        assert!(
            matches!(r, Err(Error::Invalid(ref m)) if m.contains("outside")),
            "{day}: {r:?}"
        );
    }
    c.alex.add(check_in("2026-11-26", 5)?)?; // tomorrow, for a zone ahead of this one
    c.alex.add(check_in("2025-12-01", 5)?)?; // within a year before the journal began
    let (from, to) = c.alex.default_packet_range()?;
    assert_eq!((from, to), (date("2025-12-01")?, date("2026-11-25")?));
    c.alex.export_packet(
        &PacketOptions {
            from,
            to,
            kinds: vec![],
        },
        Format::Markdown,
    )?;
    Ok(())
}

#[test]
fn a_removed_check_in_no_longer_stretches_the_default_range() -> Result<()> {
    let mut c = Couple::new()?;
    at("2026-11-25", 9 * 60)?;
    let old = c.alex.add(check_in("2025-12-01", 5)?)?;
    c.alex.add(check_in("2026-11-24", 5)?)?;
    c.alex.remove(old)?;
    assert_eq!(c.alex.default_packet_range()?.0, date("2026-11-24")?);
    Ok(())
}

#[test]
fn today_follows_the_couples_time_zone() -> Result<()> {
    let mut c = Couple::new()?;
    // 23:30 in Sydney on 2026-11-25 is 12:30 UTC the same day; 00:30 on the 26th is 13:30 UTC
    // on the 25th: still the 25th in UTC, already the 26th in Sydney.
    at("2026-11-25", 13 * 60 + 30)?;
    assert_eq!(c.alex.today(), date("2026-11-25")?);
    c.alex
        .set_calendar(Calendar::new("Australia/Sydney", Weekday::Monday)?);
    assert_eq!(c.alex.today(), date("2026-11-26")?);
    // A week starting on Sunday puts Sunday the 29th with the following days.
    c.alex
        .set_calendar(Calendar::new("Australia/Sydney", Weekday::Sunday)?);
    c.alex.add(check_in("2026-11-26", 4)?)?;
    let p = c.alex.progress(date("2026-11-26")?, date("2026-11-26")?)?;
    assert_eq!(p.weeks[0].week_start, date("2026-11-22")?);
    assert_eq!(p.weeks[0].check_ins.count, 1);
    Ok(())
}

#[test]
fn honesty_moments_can_be_backdated_and_count_in_their_week() -> Result<()> {
    let mut c = Couple::new()?;
    at("2026-11-25", 9 * 60)?;
    c.blake.add(Body::HonestyMoment(HonestyMoment {
        kind: HonestyKind::HardAnswer,
        text: "Answered the question about June.".into(),
        noticed_on: Some(date("2026-11-18")?),
        ..Default::default()
    }))?;
    let p = c.blake.progress(date("2026-11-16")?, date("2026-11-25")?)?;
    assert_eq!(p.weeks[0].honesty_moments, 1);
    assert_eq!(p.weeks[0].by_partner[&c.blake.me()].honesty_noticed, 1);
    assert_eq!(p.weeks[1].honesty_moments, 0);
    Ok(())
}

#[test]
fn roles_hold_for_answers_and_validations() -> Result<()> {
    let mut c = Couple::new()?;
    at("2026-11-25", 9 * 60)?;
    let q = c.blake.add(Body::Question(Question {
        text: "Where were you?".into(),
        ..Default::default()
    }))?;
    let own = c.blake.add(Body::Answer(Answer {
        question: Some(q),
        text: "Answering myself".into(),
    }));
    assert!(matches!(own, Err(Error::PermissionDenied(_))), "{own:?}");
    let v = c.blake.add(Body::Validation(Validation {
        target: Some(q),
        text: "Good question".into(),
    }));
    assert!(matches!(v, Err(Error::PermissionDenied(_))), "{v:?}");
    c.sync()?;
    let a = c.alex.add(Body::Answer(Answer {
        question: Some(q),
        text: "At work".into(),
    }))?;
    let Body::Answer(body) = c.alex.get(a)?.body else {
        anyhow::bail!("an answer");
    };
    let edit = c.alex.edit(a, Body::Answer(body));
    let msg = edit.err().map(|e| e.to_string()).unwrap_or_default();
    assert!(msg.contains("answers are add-only"), "{msg}");
    Ok(())
}

#[test]
fn partner_text_cannot_become_markup_in_the_packet() -> Result<()> {
    let mut c = Couple::new()?;
    at("2026-11-25", 9 * 60)?;
    let share = c.blake.add(Body::Share(Share {
        feeling: "<script>x()</script> | cell\n# Heading\n- [link](http://x)".into(),
        tough_question: false,
    }))?;
    c.sync()?;
    c.alex.add(Body::Reply(Reply {
        share: Some(share),
        kind: ReplyKind::Reflect,
        text: "I hear you".into(),
    }))?;
    let options = PacketOptions {
        from: date("2026-11-23")?,
        to: date("2026-11-29")?,
        kinds: vec![],
    };
    let md = c.alex.export_packet(&options, Format::Markdown)?;
    assert!(!md.contains("<script>"), "{md}");
    assert!(md.contains("&lt;script&gt;"));
    assert!(
        md.contains("\\| cell<br>\\# Heading<br>- \\[link\\](http\\://x)"),
        "{md}"
    );
    assert!(!md.lines().any(|l| l.starts_with("# Heading")));
    // The reply sits under its share, in words.
    let share_at = md.find("cell").unwrap_or(usize::MAX);
    let reply_at = md.find("I hear you").unwrap_or(0);
    assert!(share_at < reply_at, "{md}");
    assert!(md.contains("Reflecting back"), "{md}");
    assert!(!md.contains("reflect |") && !md.contains("reply_kind"));
    let html = c.alex.export_packet(&options, Format::Html)?;
    assert!(html.contains("class=\"week-label\""));
    assert!(
        html.contains(">23 Nov</text>"),
        "week labels are text on the page"
    );
    Ok(())
}

// ---------------------------------------------------------------------------------------------
// Property: any week's figures are the same whatever the window, and equal a direct count.
// ---------------------------------------------------------------------------------------------

const BASE: i32 = 20_000; // 2024-10-04, a Friday

fn partner(n: u8) -> PartnerId {
    PartnerId::from_uuid(uuid::Uuid::from_u128(u128::from(n) + 1))
}

fn day(n: i32) -> LocalDate {
    LocalDate::from_unix_ms(i64::from(BASE + n) * DAY_MS, 0)
}

fn record(n: u32, author: u8, created_day: i32, body: Body) -> Record {
    Record {
        id: RecordId::from_uuid(uuid::Uuid::from_u128(u128::from(n) + 1)),
        author: partner(author),
        created_at: i64::from(BASE + created_day) * DAY_MS + 3_600_000,
        updated_at: 0,
        visibility: Visibility::Shared,
        removed: false,
        body,
        conflicts: Vec::new(),
    }
}

#[derive(Debug, Clone)]
struct Plan {
    weekly: bool,
    author: u8,
    created: i32,
    changes: Vec<(i32, u8)>,
    claims: Vec<(i32, u8)>,
    views: Vec<i32>,
}

fn status(n: u8) -> CommitmentStatus {
    [
        CommitmentStatus::Active,
        CommitmentStatus::Paused,
        CommitmentStatus::Done,
    ][usize::from(n % 3)]
}

fn plan() -> impl Strategy<Value = Plan> {
    (
        any::<bool>(),
        0u8..2,
        0i32..40,
        prop::collection::vec((0i32..60, 0u8..3), 0..4),
        prop::collection::vec((0i32..60, 0u8..3), 0..20),
        prop::collection::vec(0i32..60, 0..10),
    )
        .prop_map(|(weekly, author, created, changes, claims, views)| Plan {
            weekly,
            author,
            created,
            changes,
            claims,
            views,
        })
}

fn commitment_record(n: u32, p: &Plan) -> Record {
    let start = day(p.created);
    let mut status_changes: BTreeMap<LocalDate, CommitmentStatus> =
        [(start, CommitmentStatus::Active)].into();
    for (d, s) in &p.changes {
        status_changes.insert(day(p.created + d.rem_euclid(30)), status(*s));
    }
    let key = |d: i32| {
        let d = day(d);
        if p.weekly { d.week_start() } else { d }
    };
    let body = Commitment {
        text: "c".into(),
        cadence: if p.weekly {
            Cadence::Weekly
        } else {
            Cadence::Daily
        },
        status: status_changes.values().last().copied().unwrap_or_default(),
        starts_on: Some(start),
        status_changes: status_changes.clone(),
        claims: p
            .claims
            .iter()
            .map(|(d, s)| {
                let status = [ClaimStatus::Done, ClaimStatus::Partial, ClaimStatus::Missed]
                    [usize::from(*s % 3)];
                (
                    key(*d),
                    Claim {
                        status,
                        ..Default::default()
                    },
                )
            })
            .collect(),
        views: p
            .views
            .iter()
            .map(|d| {
                (
                    key(*d),
                    View {
                        view: PartnerView::Confirmed,
                        ..Default::default()
                    },
                )
            })
            .collect(),
        ..Default::default()
    };
    record(n, p.author, p.created, Body::Commitment(body))
}

/// The brute-force count: day by day, with nothing shared with the query's code.
fn direct(plans: &[Plan], week: LocalDate, as_of: LocalDate) -> (u32, f64, u32) {
    let mut expected = 0;
    let mut claimed = 0.0;
    let mut confirmed = 0;
    for (n, p) in plans.iter().enumerate() {
        let r = commitment_record(n as u32, p);
        let Body::Commitment(c) = &r.body else {
            continue;
        };
        let active = |d: LocalDate| {
            let start = c.starts_on.unwrap_or(d);
            let mut s = CommitmentStatus::Active;
            for (at, st) in &c.status_changes {
                if *at <= d {
                    s = *st;
                }
            }
            d >= start && s == CommitmentStatus::Active
        };
        let mut count = |key: LocalDate| {
            expected += 1;
            claimed += match c.claims.get(&key).map(|x| x.status) {
                Some(ClaimStatus::Done) => 1.0,
                Some(ClaimStatus::Partial) => 0.5,
                _ => 0.0,
            };
            if c.views.contains_key(&key) {
                confirmed += 1;
            }
        };
        if p.weekly {
            // Monday-start weeks in this test: the week's key is its first day.
            if (0..7)
                .map(|i| week.add_days(i))
                .any(|d| d <= as_of && active(d))
            {
                count(week);
            }
        } else {
            for d in (0..7).map(|i| week.add_days(i)).filter(|d| *d <= as_of) {
                if active(d) {
                    count(d);
                }
            }
        }
    }
    (expected, claimed, confirmed)
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 128, rng_seed: proptest::test_runner::RngSeed::Fixed(16), ..ProptestConfig::default() })]

    #[test]
    fn any_weeks_figures_are_window_free_and_a_direct_count(
        plans in prop::collection::vec(plan(), 1..4),
        check_ins in prop::collection::vec((0u8..2, 0i32..70, 0u8..11), 0..15),
        target in 0i32..60,
        as_of in 0i32..70,
        before in 0i32..30,
        after in 0i32..30,
    ) {
        let calendar = Calendar::utc();
        let mut records: Vec<Record> =
            plans.iter().enumerate().map(|(n, p)| commitment_record(n as u32, p)).collect();
        let mut seen = std::collections::BTreeSet::new();
        for (i, (author, d, s)) in check_ins.iter().enumerate() {
            if seen.insert((*author, *d)) {
                records.push(record(1000 + i as u32, *author, *d, Body::CheckIn(CheckIn {
                    local_date: Some(day(*d)),
                    safety: Some(*s),
                    ..Default::default()
                })));
            }
        }
        let partners = [partner(0), partner(1)];
        let as_of = day(as_of.max(target));
        let week = day(target).week_start();
        let narrow = query::progress(&records, &partners, day(target), as_of, &calendar)
            .map_err(|e| TestCaseError::fail(e.to_string()))?;
        let wide = query::progress(&records, &partners, day(target - before), as_of, &calendar)
            .map_err(|e| TestCaseError::fail(e.to_string()))?;
        let find = |p: &query::Progress| p.weeks.iter().find(|w| w.week_start == week).cloned();
        let (a, b) = (find(&narrow), find(&wide));
        prop_assert!(a.is_some());
        prop_assert_eq!(&a, &b);
        // A later as-of date does not change a week that had already ended.
        let later = query::progress(&records, &partners, day(target), as_of.add_days(after), &calendar)
            .map_err(|e| TestCaseError::fail(e.to_string()))?;
        if week.add_days(6) <= as_of {
            prop_assert_eq!(&a, &find(&later));
        }
        let w = a.ok_or_else(|| TestCaseError::fail("no week"))?;
        let (expected, claimed, confirmed) = direct(&plans, week, as_of);
        prop_assert_eq!(w.commitments.expected, expected);
        prop_assert!((w.commitments.claimed - claimed).abs() < 1e-9);
        prop_assert_eq!(w.commitments.confirmed, confirmed);
        prop_assert_eq!(w.commitments.consistency.is_none(), expected == 0);
        let count = check_ins.iter().filter(|(_, d, _)| day(*d) >= week && day(*d) <= week.add_days(6) && day(*d) <= as_of)
            .map(|(a, d, _)| (*a, *d)).collect::<std::collections::BTreeSet<_>>().len();
        prop_assert_eq!(w.check_ins.count as usize, count);
    }
}

#[test]
fn a_conflict_reads_in_words_and_settles_even_on_the_value_shown() -> Result<()> {
    let mut c = Couple::new()?;
    at("2026-11-25", 9 * 60)?;
    let id = c.alex.add(Body::Boundary(Boundary {
        area: BoundaryArea::Contact,
        text: "No contact with them".into(),
        ..Default::default()
    }))?;
    c.sync()?;
    // Both reword it apart: two proposals.
    for (j, words) in [
        (&mut c.alex, "No contact, and tell me if they write"),
        (&mut c.blake, "No contact at all"),
    ] {
        let Body::Boundary(mut b) = j.get(id)?.body else {
            anyhow::bail!("a boundary");
        };
        b.text = words.into();
        j.edit(id, Body::Boundary(b))?;
    }
    c.sync()?;
    let open = c.alex.conflicts(id)?;
    let text = open
        .iter()
        .find(|o| o.field == "text")
        .ok_or_else(|| anyhow::anyhow!("a text conflict: {open:?}"))?;
    assert_eq!(text.label, "Boundary");
    let mut words: Vec<&str> = text.choices.iter().map(|x| x.words.as_str()).collect();
    words.sort_unstable();
    assert_eq!(
        words,
        ["No contact at all", "No contact, and tell me if they write"]
    );
    // Keeping the value already shown is a real choice, not a no-op.
    let shown = text.choices[0].value.clone();
    let bad = c
        .alex
        .settle(id, "text", &serde_json::json!("something else"));
    assert!(matches!(bad, Err(Error::Invalid(_))), "{bad:?}");
    c.alex.settle(id, "text", &shown)?;
    assert!(c.alex.conflicts(id)?.iter().all(|o| o.field != "text"));
    c.sync()?;
    assert!(c.blake.conflicts(id)?.iter().all(|o| o.field != "text"));
    assert_eq!(c.blake.get(id)?.body, c.alex.get(id)?.body);
    Ok(())
}

#[test]
fn today_lists_what_waits_on_each_partner() -> Result<()> {
    let mut c = Couple::new()?;
    at("2026-11-25", 9 * 60)?;
    let walk = c.alex.add(daily("Evening walk"))?;
    let q = c.blake.add(Body::Question(Question {
        text: "What happened in June?".into(),
        ..Default::default()
    }))?;
    let b = c.blake.add(Body::Boundary(Boundary {
        area: BoundaryArea::Space,
        text: "A quiet hour after work".into(),
        ..Default::default()
    }))?;
    c.sync()?;
    let alex = c.alex.waiting_today()?;
    assert!(alex.check_in_due);
    assert_eq!(alex.claims_due.len(), 1);
    assert_eq!(alex.claims_due[0].commitment, walk);
    assert_eq!(alex.questions_to_answer, vec![q]);
    assert_eq!(alex.boundaries_to_consent, vec![b]);
    c.alex
        .claim(walk, date("2026-11-25")?, ClaimStatus::Done, "")?;
    c.alex.add(check_in("2026-11-25", 6)?)?;
    let alex = c.alex.waiting_today()?;
    assert!(!alex.check_in_due && alex.claims_due.is_empty());
    c.sync()?;
    let blake = c.blake.waiting_today()?;
    assert_eq!(blake.claims_to_confirm.len(), 1);
    assert!(blake.questions_to_answer.is_empty(), "their own question");
    assert!(blake.boundaries_to_consent.is_empty(), "they proposed it");
    Ok(())
}

#[test]
fn the_packet_reads_as_a_document_for_a_reader() -> Result<()> {
    let mut c = Couple::new()?;
    at("2026-11-27", 20 * 60)?;
    // Entered out of order: the packet lists them by date.
    for (day, s) in [("2026-11-26", 7), ("2026-11-23", 4), ("2026-11-25", 6)] {
        c.alex.add(check_in(day, s)?)?;
    }
    c.blake.add(check_in("2026-11-24", 3)?)?;
    c.sync()?;
    let options = PacketOptions {
        from: date("2026-11-23")?,
        to: date("2026-11-29")?,
        kinds: vec![],
    };
    let md = c.alex.export_packet(&options, Format::Markdown)?;
    let rows: Vec<&str> = md
        .lines()
        .filter(|l| l.starts_with("| 2026-11-2"))
        .collect();
    assert_eq!(rows.len(), 4, "{md}");
    // One table per partner (in partner order), each by date.
    let at = |day: &str| {
        rows.iter()
            .position(|r| r.starts_with(&format!("| {day} |")))
    };
    let (a23, a25, a26, b24) = (
        at("2026-11-23"),
        at("2026-11-25"),
        at("2026-11-26"),
        at("2026-11-24"),
    );
    assert!(a23 < a25 && a25 < a26, "{rows:?}");
    assert!(
        b24 < a23 || b24 > a26,
        "Blake's check-in sits in Blake's table: {rows:?}"
    );
    let alex_table = md.find("### Alex\n\n| Date").unwrap_or(usize::MAX);
    let blake_table = md.find("### Blake\n\n| Date").unwrap_or(usize::MAX);
    assert!(alex_table < md.len() && blake_table < md.len(), "{md}");
    assert!(!md.contains("· Check-in"), "no block per check-in: {md}");
    let html = c.alex.export_packet(&options, Format::Html)?;
    assert!(
        html.contains("Alex: safety") && html.contains("Blake: safety"),
        "one line per partner"
    );
    assert!(
        html.contains("Check-in scores per week") && html.contains("Commitments kept per week")
    );
    assert!(
        html.contains(">100 %</text>"),
        "consistency has its own 0–100 % axis"
    );
    Ok(())
}

#[test]
fn a_boundary_keeps_the_words_each_consent_was_given_to() -> Result<()> {
    let mut c = Couple::new()?;
    at("2026-11-25", 9 * 60)?;
    let id = c.blake.add(Body::Boundary(Boundary {
        area: BoundaryArea::Contact,
        text: "No contact".into(),
        ..Default::default()
    }))?;
    c.sync()?;
    c.alex.consent(id, ConsentState::Agreed)?;
    c.sync()?;
    let Body::Boundary(mut b) = c.blake.get(id)?.body else {
        anyhow::bail!("a boundary");
    };
    b.text = "No contact, and tell me if they write".into();
    c.blake.edit(id, Body::Boundary(b))?;
    c.sync()?;
    let Body::Boundary(b) = c.alex.get(id)?.body else {
        anyhow::bail!("a boundary");
    };
    assert_eq!(b.wordings.len(), 2);
    let options = PacketOptions {
        from: date("2026-11-23")?,
        to: date("2026-11-29")?,
        kinds: vec![Kind::Boundary],
    };
    let md = c.alex.export_packet(&options, Format::Markdown)?;
    assert!(
        md.contains("| Alex | Agreed | An earlier wording: No contact |"),
        "{md}"
    );
    assert!(
        md.contains("| Blake | Agreed | The current wording |"),
        "{md}"
    );
    Ok(())
}

/// The packet heads a boundary with its proposer; when the other partner rewords it, the
/// packet says the words changed after the proposer proposed them, on both sides.
#[test]
fn a_boundary_reworded_by_the_other_partner_is_not_given_as_the_proposers_words() -> Result<()> {
    let mut c = Couple::new()?;
    at("2026-11-25", 9 * 60)?;
    let id = c.blake.add(Body::Boundary(Boundary {
        area: BoundaryArea::Contact,
        text: "No contact".into(),
        ..Default::default()
    }))?;
    c.sync()?;
    let options = PacketOptions {
        from: date("2026-11-23")?,
        to: date("2026-11-29")?,
        kinds: vec![Kind::Boundary],
    };
    let before = c.alex.export_packet(&options, Format::Markdown)?;
    assert!(!before.contains("Reworded since"), "{before}");
    let Body::Boundary(mut b) = c.alex.get(id)?.body else {
        anyhow::bail!("a boundary");
    };
    b.text = "Contact only about the children".into();
    c.alex.edit(id, Body::Boundary(b))?;
    c.sync()?;
    for side in [&c.alex, &c.blake] {
        let md = side.export_packet(&options, Format::Markdown)?;
        assert!(md.contains("Blake · Boundary"), "{md}");
        assert!(md.contains("Contact only about the children"), "{md}");
        assert!(
            md.contains("Reworded since Blake's last stance on it"),
            "{md}"
        );
    }
    Ok(())
}
