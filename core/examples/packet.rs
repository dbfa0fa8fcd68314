//! Writes a therapist packet from a seeded, deterministic journal: six weeks of a couple's
//! entries (check-ins, a commitment with its ledger, a question and its answer, shares with
//! replies, a boundary). `scripts/test-packet-browser.sh` opens it in a real browser.
//!
//! Usage: `cargo run -p mend-core --example packet -- OUT.html [OUT.md]`

use std::{cell::Cell, path::PathBuf};

use anyhow::{Context, Result};
use mend_core::{
    Body, JoinSource, Journal, LocalDate, Space,
    export::{Format, PacketOptions},
    model::*,
};

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

fn at(day: LocalDate, hour: i64) {
    NOW.with(|now| now.set(i64::from(day.days()) * DAY_MS + hour * 3_600_000));
}

/// A small deterministic generator (xorshift), so every run draws the same journal.
struct Seeded(u64);

impl Seeded {
    fn below(&mut self, n: u64) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0 % n
    }
}

fn sync(x: &mut Journal, y: &mut Journal) -> Result<()> {
    let to_y = x.changes_since(Space::Couple, &y.heads(Space::Couple)?)?;
    y.apply_changes(Space::Couple, &to_y)?;
    let to_x = y.changes_since(Space::Couple, &x.heads(Space::Couple)?)?;
    x.apply_changes(Space::Couple, &to_x)?;
    Ok(())
}

fn main() -> Result<()> {
    let mut args = std::env::args().skip(1);
    let html_out = PathBuf::from(args.next().context("usage: packet OUT.html [OUT.md]")?);
    let md_out = args.next().map(PathBuf::from);
    let dir = tempfile::tempdir()?;
    let first: LocalDate = "2026-10-12".parse()?;
    at(first, 8);
    let mut alex = Journal::create(&dir.path().join("a.db"), "Alex")?;
    let source = JoinSource {
        couple: alex.save_space(Space::Couple)?,
        personal: None,
        partner: None,
    };
    let mut blake = Journal::join(&dir.path().join("b.db"), &source, "Blake")?;
    alex.set_clock(clock);
    blake.set_clock(clock);
    let phone = alex.add(Body::Commitment(Commitment {
        text: "Phone stays in the hall at night".into(),
        cadence: Cadence::Daily,
        status: CommitmentStatus::Active,
        ..Default::default()
    }))?;
    let boundary = blake.add(Body::Boundary(Boundary {
        area: BoundaryArea::Contact,
        text: "No contact with them, and tell me if they write".into(),
        ..Default::default()
    }))?;
    let question = blake.add(Body::Question(Question {
        category: "timeline".into(),
        text: "When did it start?".into(),
        ..Default::default()
    }))?;
    sync(&mut alex, &mut blake)?;
    alex.consent(boundary, ConsentState::Agreed)?;
    alex.add(Body::Answer(Answer {
        question: Some(question),
        text: "In March. I should have told you then.".into(),
    }))?;
    let mut rng = Seeded(0x5eed_1234_abcd);
    for n in 0..42u64 {
        let day = first.add_days(n as i32);
        at(day, 21);
        for (base, j) in [(5, &mut alex), (3, &mut blake)] {
            if rng.below(10) < 8 {
                let level = base + n / 10;
                j.add(Body::CheckIn(CheckIn {
                    local_date: Some(day),
                    safety: Some((level + rng.below(3)).min(10) as u8),
                    trust: Some((level.saturating_sub(1) + rng.below(3)).min(10) as u8),
                    connection: Some((level + rng.below(2)).min(10) as u8),
                    note: (rng.below(4) == 0).then(|| "A quieter day | # not a heading".into()),
                    ..Default::default()
                }))?;
            }
        }
        let status = [
            ClaimStatus::Done,
            ClaimStatus::Done,
            ClaimStatus::Partial,
            ClaimStatus::Missed,
        ][rng.below(4) as usize];
        alex.claim(phone, day, status, "")?;
        if n % 5 == 0 {
            let share = blake.add(Body::Share(Share {
                feeling: format!("Week {} felt <heavier> than I said", n / 7 + 1),
                tough_question: false,
            }))?;
            sync(&mut alex, &mut blake)?;
            alex.add(Body::Reply(Reply {
                share: Some(share),
                kind: ReplyKind::Reflect,
                text: "I hear that it was heavier.".into(),
            }))?;
        }
        sync(&mut alex, &mut blake)?;
        if rng.below(3) > 0 {
            blake.confirm(phone, day, PartnerView::Confirmed, "")?;
        }
        if n % 4 == 0 {
            blake.add(Body::HonestyMoment(HonestyMoment {
                kind: HonestyKind::VolunteeredTruth,
                text: "Told me about the message before I asked.".into(),
                ..Default::default()
            }))?;
        }
    }
    sync(&mut alex, &mut blake)?;
    let options = PacketOptions {
        from: first,
        to: first.add_days(41),
        kinds: vec![],
    };
    std::fs::write(&html_out, alex.export_packet(&options, Format::Html)?)?;
    if let Some(md) = md_out {
        std::fs::write(md, alex.export_packet(&options, Format::Markdown)?)?;
    }
    Ok(())
}
