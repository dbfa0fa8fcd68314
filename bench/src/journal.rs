//! Builders for journal benchmarks: a realistic journal of a given size.

use std::path::Path;

use anyhow::Result;
use mend_core::{
    Body, Durability, JoinSource, Journal, LocalDate, OpenOptions, Space,
    crypto::{DeviceKey, PartnerIdentity, Signer},
    model::{Boundary, BoundaryArea, CheckIn, Commitment, HonestyMoment, Question, Share},
};

/// About 500 bytes of prose, like a real entry.
pub fn prose(n: usize) -> String {
    let base =
        "Today I noticed how much lighter it felt to say the hard thing early, before it grew. ";
    let mut s = format!("Entry {n}. ");
    while s.len() < 480 {
        s.push_str(base);
    }
    s
}

const DAY_MS: i64 = 86_400_000;

fn now_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| i64::try_from(d.as_millis()).unwrap_or(i64::MAX))
}

/// The clock of a benchmark journal: ten years ahead, because a large journal has more
/// check-in days than the year before it began allows, and a date may not be after tomorrow.
pub fn ahead() -> i64 {
    now_ms() + 3650 * DAY_MS
}

/// The i-th record of a mixed journal.
pub fn body(i: usize) -> Body {
    // Each check-in (one record in six) on its own day, from a year before the journal began.
    let day = LocalDate::from_unix_ms(now_ms(), 0).add_days(-365 + (i / 6) as i32);
    match i % 6 {
        0 => Body::Share(Share {
            feeling: prose(i),
            tough_question: i.is_multiple_of(12),
        }),
        1 => Body::HonestyMoment(HonestyMoment {
            text: prose(i),
            ..Default::default()
        }),
        2 => Body::Question(Question {
            category: "timeline".into(),
            text: prose(i),
            ..Default::default()
        }),
        3 => Body::Boundary(Boundary {
            area: BoundaryArea::Contact,
            text: prose(i),
            ..Default::default()
        }),
        4 => Body::Commitment(Commitment {
            text: prose(i),
            ..Default::default()
        }),
        _ => Body::CheckIn(CheckIn {
            local_date: Some(day),
            safety: Some((i % 11) as u8),
            trust: Some(((i + 3) % 11) as u8),
            connection: Some(((i + 7) % 11) as u8),
            note: Some(prose(i)),
            ..Default::default()
        }),
    }
}

/// Creates a compacted journal with `records` records at `path` and returns it reopened with
/// the durability the product uses.
pub fn build(path: &Path, records: usize) -> Result<Journal> {
    build_signed(path, records, None)
}

/// A partner's keys for a journal that signs: the couple's space id, the partner's identity
/// and this device's key.
pub type Keys = ([u8; 32], PartnerIdentity, DeviceKey);

/// The options and signer a device with `keys` opens its journal with.
pub fn signing(keys: &Keys) -> OpenOptions {
    OpenOptions {
        durability: Durability::Normal,
        device_key: Some(keys.2.public()),
        identity: Some(keys.1.public()),
        ..OpenOptions::default()
    }
}

/// Gives `journal` the signer of `keys`, as a device does on every open.
pub fn sign_with(journal: &mut Journal, keys: &Keys) -> Result<()> {
    let signer = Signer::new(
        keys.0,
        &keys.1,
        journal.me(),
        journal.device(),
        keys.2.clone(),
        ahead(),
    );
    journal.set_signer(signer)?;
    Ok(())
}

/// [`build`], signing as a device does when `keys` are given.
pub fn build_signed(path: &Path, records: usize, keys: Option<&Keys>) -> Result<Journal> {
    let options = keys.map_or(
        OpenOptions {
            durability: Durability::Normal,
            ..OpenOptions::default()
        },
        signing,
    );
    let mut j = Journal::create_with(path, "Alex", options)?;
    if let Some(keys) = keys {
        sign_with(&mut j, keys)?;
    }
    j.set_clock(ahead);
    for i in 0..records {
        j.add(body(i))?;
    }
    j.compact()?;
    drop(j);
    let mut j = Journal::open_with(path, options)?;
    if let Some(keys) = keys {
        sign_with(&mut j, keys)?;
    }
    Ok(j)
}

/// Two partners on a shared base of `base` records, each then making `edits` offline edits.
/// Returns (a, b) before they merge.
pub fn diverged(dir: &Path, base: usize, edits: usize) -> Result<(Journal, Journal)> {
    let opts = OpenOptions {
        durability: Durability::Normal,
        ..OpenOptions::default()
    };
    let mut a = Journal::create_with(&dir.join("a.db"), "Alex", opts)?;
    a.set_clock(ahead);
    for i in 0..base {
        a.add(body(i))?;
    }
    let source = JoinSource {
        couple: a.save_space(Space::Couple)?,
        personal: None,
        partner: None,
    };
    let mut b = Journal::join_with(&dir.join("b.db"), &source, "Blake", opts)?;
    b.set_clock(ahead);
    for i in 0..edits {
        a.add(Body::Share(Share {
            feeling: prose(i),
            tough_question: false,
        }))?;
        b.add(Body::HonestyMoment(HonestyMoment {
            text: prose(i),
            ..Default::default()
        }))?;
    }
    Ok((a, b))
}
