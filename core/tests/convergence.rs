//! Property test: replicas that edit apart and merge in any order end identical.
//!
//! Two partners (A on one or two devices, B on one) make random edits of every record kind
//! while apart, with random merges between any two replicas in between, repeated merges
//! included. After a final round of merges every replica must hold the same couple's document
//! and give the same answer to every query; A's devices must also agree on A's personal space.

use std::sync::atomic::{AtomicI64, Ordering};

use mend_core::{
    Body, Durability, JoinSource, Journal, LocalDate, OpenOptions, Record, Space,
    model::*,
    query::{self, TimelineQuery},
};
use proptest::prelude::*;

static NOW: AtomicI64 = AtomicI64::new(1_795_000_000_000);

fn tick() -> i64 {
    NOW.fetch_add(60_000, Ordering::Relaxed)
}

#[derive(Clone, Debug)]
enum Op {
    Add(usize, Body, bool),
    Edit(usize, usize, String),
    Remove(usize, usize),
    Consent(usize, usize, ConsentState),
    Claim(usize, usize, u8, ClaimStatus),
    Confirm(usize, usize, u8, PartnerView),
    Respond(usize, usize, NeedResponseKind),
    Status(usize, usize, QuestionStatus),
    Share(usize, usize),
    Merge(usize, usize),
}

fn text() -> impl Strategy<Value = String> {
    prop::sample::select(vec![
        "one",
        "two",
        "three",
        "a longer sentence",
        "ünïcödé ✓",
    ])
    .prop_map(str::to_owned)
}

fn date() -> impl Strategy<Value = LocalDate> {
    (0..10i32).prop_map(|d| LocalDate::from_unix_ms(1_795_000_000_000, 0).add_days(d))
}

fn pick<T: Copy + std::fmt::Debug + 'static>(all: &'static [T]) -> impl Strategy<Value = T> {
    prop::sample::select(all)
}

fn body() -> impl Strategy<Value = Body> {
    prop_oneof![
        (text(), text()).prop_map(|(a, b)| Body::AccountabilityNote(AccountabilityNote {
            what_i_did: a,
            impact: b,
            amends: vec![]
        })),
        (text(), text()).prop_map(|(c, t)| Body::Question(Question {
            category: c,
            text: t,
            ..Default::default()
        })),
        text().prop_map(|t| Body::ProcessingNote(ProcessingNote { text: t })),
        (pick(BoundaryArea::ALL), text(), prop::option::of(date())).prop_map(
            |(area, t, review_date)| {
                Body::Boundary(Boundary {
                    area,
                    text: t,
                    review_date,
                    ..Default::default()
                })
            }
        ),
        (text(), pick(DisclosureChoice::ALL)).prop_map(|(topic, preference)| {
            Body::DisclosurePreference(DisclosurePreference { topic, preference })
        }),
        (pick(NeedKind::ALL), text()).prop_map(|(kind, t)| Body::Need(Need {
            kind,
            text: t,
            ..Default::default()
        })),
        (
            date(),
            0..=10u8,
            0..=10u8,
            0..=10u8,
            prop::collection::vec(text(), 0..3),
            prop::option::of(text()),
            any::<bool>()
        )
            .prop_map(|(d, s, t, c, tags, note, private)| Body::CheckIn(CheckIn {
                local_date: Some(d),
                safety: Some(s),
                trust: Some(t),
                connection: Some(c),
                mood_tags: tags,
                need_today: None,
                note,
                private_fields: if private {
                    vec![CheckInField::Trust, CheckInField::Note]
                } else {
                    vec![]
                },
            })),
        (text(), any::<bool>()).prop_map(|(f, t)| Body::Share(Share {
            feeling: f,
            tough_question: t
        })),
        (text(), pick(Cadence::ALL)).prop_map(|(t, cadence)| Body::Commitment(Commitment {
            text: t,
            cadence,
            ..Default::default()
        })),
        (pick(HonestyKind::ALL), text(), pick(HonestyTiming::ALL)).prop_map(|(kind, t, timing)| {
            Body::HonestyMoment(HonestyMoment {
                kind,
                text: t,
                link: None,
                timing,
                noticed_on: None,
            })
        }),
        (
            text(),
            0..=10u8,
            pick(WantedResponse::ALL),
            pick(TriggerSharing::ALL)
        )
            .prop_map(
                |(cue, intensity, wanted_response, sharing)| Body::TriggerEvent(TriggerEvent {
                    cue,
                    intensity,
                    feelings: vec!["tight".into()],
                    what_helped: String::new(),
                    wanted_response,
                    sharing
                })
            ),
        (text(), text()).prop_map(|(o, p)| Body::PreAssurance(PreAssurance {
            occasion: o,
            date: None,
            plan: p
        })),
        // Children: their parent is chosen from existing records when the op runs.
        text().prop_map(|t| Body::Answer(Answer {
            question: None,
            text: t
        })),
        (pick(ReplyKind::ALL), text()).prop_map(|(kind, t)| Body::Reply(Reply {
            share: None,
            kind,
            text: t
        })),
        text().prop_map(|t| Body::Validation(Validation {
            target: None,
            text: t
        })),
    ]
}

fn op(replicas: usize) -> impl Strategy<Value = Op> {
    let r = 0..replicas;
    let i = any::<usize>();
    prop_oneof![
        6 => (r.clone(), body(), any::<bool>()).prop_map(|(r, b, p)| Op::Add(r, b, p)),
        2 => (r.clone(), i, text()).prop_map(|(r, i, t)| Op::Edit(r, i, t)),
        1 => (r.clone(), i).prop_map(|(r, i)| Op::Remove(r, i)),
        1 => (r.clone(), i, pick(ConsentState::ALL)).prop_map(|(r, i, s)| Op::Consent(r, i, s)),
        1 => (r.clone(), i, 0..10u8, pick(ClaimStatus::ALL)).prop_map(|(r, i, d, s)| Op::Claim(r, i, d, s)),
        1 => (r.clone(), i, 0..10u8, pick(PartnerView::ALL)).prop_map(|(r, i, d, v)| Op::Confirm(r, i, d, v)),
        1 => (r.clone(), i, pick(NeedResponseKind::ALL)).prop_map(|(r, i, k)| Op::Respond(r, i, k)),
        1 => (r.clone(), i, pick(QuestionStatus::ALL)).prop_map(|(r, i, s)| Op::Status(r, i, s)),
        1 => (r.clone(), i).prop_map(|(r, i)| Op::Share(r, i)),
        3 => (r.clone(), r).prop_map(|(a, b)| Op::Merge(a, b)),
    ]
}

struct Replica {
    journal: Journal,
    partner: usize,
}

/// Moves what `to` lacks from `from`, for every space the two share.
fn merge(reps: &mut [Replica], from: usize, to: usize) -> anyhow::Result<()> {
    if from == to {
        return Ok(());
    }
    let mut spaces = vec![Space::Couple];
    if reps[from].partner == reps[to].partner {
        spaces.push(Space::Personal);
    }
    for space in spaces {
        let heads = reps[to].journal.heads(space)?;
        let bytes = reps[from].journal.changes_since(space, &heads)?;
        reps[to].journal.apply_changes(space, &bytes)?;
    }
    Ok(())
}

fn nth(j: &Journal, i: usize, want: impl Fn(&Record) -> bool) -> anyhow::Result<Option<Record>> {
    let all: Vec<Record> = j.records()?.into_iter().filter(|r| want(r)).collect();
    if all.is_empty() {
        Ok(None)
    } else {
        Ok(Some(all[i % all.len()].clone()))
    }
}

fn is<K: Fn(&Body) -> bool>(k: K) -> impl Fn(&Record) -> bool {
    move |r: &Record| k(&r.body)
}

/// Runs one op; refusals (permission, removed, …) are expected and ignored, storage or
/// document errors are not.
fn run(reps: &mut [Replica], op: &Op) -> anyhow::Result<()> {
    let d0 = LocalDate::from_unix_ms(1_795_000_000_000, 0);
    let result = match op.clone() {
        Op::Merge(a, b) => return merge(reps, a, b),
        Op::Add(r, mut body, parent_pick) => {
            let j = &mut reps[r].journal;
            let parent = |want: &dyn Fn(&Body) -> bool| {
                nth(j, usize::from(parent_pick), |r| want(&r.body)).map(|r| r.map(|r| r.id))
            };
            match &mut body {
                Body::Answer(a) => a.question = parent(&|b| matches!(b, Body::Question(_)))?,
                Body::Reply(x) => x.share = parent(&|b| matches!(b, Body::Share(_)))?,
                Body::Validation(v) => v.target = j.shared_records()?.first().map(|r| r.id),
                Body::Commitment(c) if parent_pick => {
                    c.link = parent(&|b| matches!(b, Body::Boundary(_) | Body::Need(_)))?
                }
                _ => {}
            }
            j.add(body).map(|_| ())
        }
        Op::Edit(r, i, t) => {
            let j = &mut reps[r].journal;
            let Some(rec) = nth(j, i, |r| !r.removed)? else {
                return Ok(());
            };
            let mut body = rec.body.clone();
            match &mut body {
                Body::AccountabilityNote(x) => x.impact = t,
                Body::Question(x) => x.text = t,
                Body::ProcessingNote(x) => x.text = t,
                Body::Boundary(x) => x.text = t,
                Body::DisclosurePreference(x) => x.topic = t,
                Body::Need(x) => x.text = t,
                Body::CheckIn(x) => {
                    x.note = Some(t);
                    x.safety = x.safety.map(|s| (s + 1) % 11);
                    if x.private_fields.is_empty() {
                        x.private_fields.push(CheckInField::Safety);
                    } else {
                        x.private_fields.clear();
                    }
                }
                Body::Share(x) => x.feeling = t,
                Body::Commitment(x) => x.text = t,
                Body::TriggerEvent(x) => {
                    x.cue = t;
                    x.sharing = TriggerSharing::Full;
                }
                Body::PreAssurance(x) => x.plan = t,
                Body::Answer(x) => x.text = t,
                Body::Reply(x) => x.text = t,
                Body::HonestyMoment(x) => x.text = t,
                Body::Validation(x) => x.text = t,
            }
            j.edit(rec.id, body)
        }
        Op::Remove(r, i) => {
            let j = &mut reps[r].journal;
            let Some(rec) = nth(j, i, |_| true)? else {
                return Ok(());
            };
            j.remove(rec.id)
        }
        Op::Consent(r, i, s) => {
            let j = &mut reps[r].journal;
            let Some(rec) = nth(j, i, is(|b| matches!(b, Body::Boundary(_))))? else {
                return Ok(());
            };
            j.consent(rec.id, s)
        }
        Op::Claim(r, i, d, s) => {
            let j = &mut reps[r].journal;
            let Some(rec) = nth(j, i, is(|b| matches!(b, Body::Commitment(_))))? else {
                return Ok(());
            };
            j.claim(rec.id, d0.add_days(i32::from(d)), s, "")
        }
        Op::Confirm(r, i, d, v) => {
            let j = &mut reps[r].journal;
            let Some(rec) = nth(j, i, is(|b| matches!(b, Body::Commitment(_))))? else {
                return Ok(());
            };
            j.confirm(rec.id, d0.add_days(i32::from(d)), v, "seen")
        }
        Op::Respond(r, i, k) => {
            let j = &mut reps[r].journal;
            let Some(rec) = nth(j, i, is(|b| matches!(b, Body::Need(_))))? else {
                return Ok(());
            };
            j.respond_to_need(rec.id, k, "")
        }
        Op::Status(r, i, s) => {
            let j = &mut reps[r].journal;
            let Some(rec) = nth(j, i, is(|b| matches!(b, Body::Question(_))))? else {
                return Ok(());
            };
            j.set_question_status(rec.id, s)
        }
        Op::Share(r, i) => {
            let j = &mut reps[r].journal;
            let Some(rec) = nth(j, i, is(|b| matches!(b, Body::ProcessingNote(_))))? else {
                return Ok(());
            };
            j.share(rec.id)
        }
    };
    match result {
        Ok(())
        | Err(
            mend_core::Error::PermissionDenied(_)
            | mend_core::Error::Invalid(_)
            | mend_core::Error::Removed(_)
            | mend_core::Error::NotFound(_)
            | mend_core::Error::WrongKind { .. },
        ) => Ok(()),
        Err(e) => Err(e.into()),
    }
}

/// Everything a replica shows that must agree across replicas seeing the same records.
fn views(records: &[Record], partners: &[mend_core::PartnerId]) -> anyhow::Result<String> {
    let d0 = LocalDate::from_unix_ms(1_795_000_000_000, 0);
    let page = query::timeline(
        records,
        &TimelineQuery {
            include_removed: true,
            limit: 500,
            ..Default::default()
        },
    )?;
    let out = (
        page,
        query::open_questions(records),
        query::boundary_status(records, partners),
        query::needs(records),
        query::progress(
            records,
            partners,
            d0.add_days(-7),
            d0.add_days(14),
            &mend_core::Calendar::utc(),
        )?,
    );
    Ok(serde_json::to_string(&out)?)
}

/// The journal's own timeline (picked from the read model) pages exactly like the pure
/// function over all records, filters and cursors included.
fn timeline_matches(j: &Journal) -> anyhow::Result<()> {
    let all = j.records()?;
    let queries = [
        TimelineQuery::default(),
        TimelineQuery {
            include_removed: true,
            limit: 3,
            ..Default::default()
        },
        TimelineQuery {
            kinds: vec![Kind::CheckIn, Kind::Boundary, Kind::Share],
            author: Some(j.me()),
            limit: 2,
            ..Default::default()
        },
    ];
    for mut q in queries {
        for _ in 0..100 {
            let mine = j.timeline(&q)?;
            prop_assert_eq_any(
                mine == query::timeline(&all, &q)?,
                "the journal's timeline differs from the pure one",
            )?;
            match mine.next_cursor {
                Some(c) => q.cursor = Some(c),
                None => break,
            }
        }
    }
    Ok(())
}

/// Alex's first device and Blake's, and with `three` Alex's second, each on its own database
/// in `dir` and on the shared test clock.
fn replicas(dir: &std::path::Path, three: bool) -> anyhow::Result<Vec<Replica>> {
    let opts = OpenOptions {
        durability: Durability::Normal,
        ..OpenOptions::default()
    };
    let mut a1 = Journal::create_with(&dir.join("a1.db"), "Alex", opts)?;
    a1.set_clock(tick);
    let couple = a1.save_space(Space::Couple)?;
    let mut b1 = Journal::join_with(
        &dir.join("b1.db"),
        &JoinSource {
            couple: couple.clone(),
            personal: None,
            partner: None,
        },
        "Blake",
        opts,
    )?;
    b1.set_clock(tick);
    let mut reps = vec![
        Replica {
            journal: a1,
            partner: 0,
        },
        Replica {
            journal: b1,
            partner: 1,
        },
    ];
    if three {
        let mut a2 = Journal::join_with(
            &dir.join("a2.db"),
            &JoinSource {
                couple,
                personal: Some(reps[0].journal.save_space(Space::Personal)?),
                partner: Some(reps[0].journal.me()),
            },
            "",
            opts,
        )?;
        a2.set_clock(tick);
        reps.push(Replica {
            journal: a2,
            partner: 0,
        });
    }
    Ok(reps)
}

fn check(three: bool, ops: Vec<Op>) -> anyhow::Result<()> {
    let dir = tempfile::tempdir()?;
    let mut reps = replicas(dir.path(), three)?;
    let n = reps.len();
    for op in &ops {
        let op = match op.clone() {
            Op::Merge(a, b) => Op::Merge(a % n, b % n),
            other => other,
        };
        let r = match &op {
            Op::Add(r, ..)
            | Op::Edit(r, ..)
            | Op::Remove(r, _)
            | Op::Consent(r, ..)
            | Op::Claim(r, ..)
            | Op::Confirm(r, ..)
            | Op::Respond(r, ..)
            | Op::Status(r, ..)
            | Op::Share(r, _) => *r,
            Op::Merge(..) => 0,
        };
        if r >= n {
            continue;
        }
        run(&mut reps, &op)?;
    }
    // Quiescence: every pair, twice, so changes relayed through a third replica arrive too.
    for _ in 0..2 {
        for from in 0..n {
            for to in 0..n {
                merge(&mut reps, from, to)?;
            }
        }
    }

    let partners: Vec<_> = reps[0]
        .journal
        .partners()
        .into_iter()
        .map(|p| p.id)
        .collect();
    // Every replica's read model (what reads are served from) says what its documents say.
    for r in reps.iter() {
        r.journal.verify_read_model()?;
        timeline_matches(&r.journal)?;
    }
    let first = &reps[0].journal;
    let shared0 = first.shared_records()?;
    let shared_views0 = views(&shared0, &partners)?;
    for r in &reps[1..] {
        let j = &r.journal;
        let mut h0 = first.heads(Space::Couple)?;
        let mut h1 = j.heads(Space::Couple)?;
        h0.sort();
        h1.sort();
        prop_assert_eq_any(h0 == h1, "couple heads differ")?;
        prop_assert_eq_any(j.shared_records()? == shared0, "couple documents differ")?;
        prop_assert_eq_any(
            views(&j.shared_records()?, &partners)? == shared_views0,
            "shared views differ",
        )?;
    }
    // A's devices also agree on everything A sees, private records included.
    if three {
        let a1 = &reps[0].journal;
        let a2 = &reps[2].journal;
        prop_assert_eq_any(
            a1.records()? == a2.records()?,
            "A's devices see different records",
        )?;
        prop_assert_eq_any(
            views(&a1.records()?, &partners)? == views(&a2.records()?, &partners)?,
            "A's devices give different views",
        )?;
    }
    // B never sees A's private records, and vice versa.
    let b = &reps[1].journal;
    for rec in b.records()? {
        prop_assert_eq_any(
            rec.author == b.me() || rec.visibility == Visibility::Shared,
            "a partner sees the other's private record",
        )?;
    }
    // Reopening from disk gives the same document as memory held.
    let a_path = dir.path().join("a1.db");
    let before = reps[0].journal.records()?;
    drop(reps);
    let reopened = Journal::open(&a_path)?;
    prop_assert_eq_any(reopened.records()? == before, "reopened journal differs")?;
    reopened.verify_read_model()?;
    Ok(())
}

fn prop_assert_eq_any(ok: bool, what: &str) -> anyhow::Result<()> {
    if ok {
        Ok(())
    } else {
        Err(anyhow::anyhow!("{what}"))
    }
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 256, ..ProptestConfig::default() })]

    #[test]
    fn replicas_converge(three in any::<bool>(), ops in prop::collection::vec(op(3), 1..40)) {
        if let Err(e) = check(three, ops) {
            prop_assert!(false, "{e:#}");
        }
    }
}

/// One partner's two devices write a check-in with private fields for the same day at once:
/// the record's two halves (shared and private) each keep a creation time, and Automerge may
/// pick another device's in each. The timeline places the record where `get` says it was
/// created, the shared half's time, not the private half's.
#[test]
fn a_check_in_made_twice_at_once_keeps_its_place_in_the_timeline() -> anyhow::Result<()> {
    let dir = tempfile::tempdir()?;
    let mut reps = replicas(dir.path(), true)?;
    for (from, to) in [(0, 1), (1, 0), (0, 2), (2, 0), (1, 2), (2, 1)] {
        merge(&mut reps, from, to)?;
    }
    // Device 1 of Alex writes more into the shared space, device 2 more into the private
    // one: each device's later operations win in the space it wrote more to.
    for _ in 0..3 {
        reps[0].journal.add(Body::Share(Share {
            feeling: "shared".into(),
            tough_question: false,
        }))?;
        reps[2].journal.add_with(
            Body::ProcessingNote(ProcessingNote {
                text: "private".into(),
            }),
            Some(Visibility::Private),
        )?;
    }
    let day = LocalDate::from_unix_ms(NOW.load(Ordering::Relaxed), 0);
    let check_in = || {
        Body::CheckIn(CheckIn {
            local_date: Some(day),
            trust: Some(4),
            note: Some("between us".into()),
            private_fields: vec![CheckInField::Trust, CheckInField::Note],
            ..Default::default()
        })
    };
    reps[0].journal.add(check_in())?;
    reps[1].journal.add(Body::Share(Share {
        feeling: "in between".into(),
        tough_question: false,
    }))?;
    reps[2].journal.add(check_in())?;
    for _ in 0..2 {
        for (from, to) in [(0, 1), (1, 0), (0, 2), (2, 0), (1, 2), (2, 1)] {
            merge(&mut reps, from, to)?;
        }
    }
    for r in &reps {
        timeline_matches(&r.journal)?;
    }
    Ok(())
}
