//! Field flags onto record bodies: the translation behind `add` and `edit`.
//!
//! Every flag of every kind lives in one [`Fields`]; each kind takes the flags it has and a flag
//! left over is refused by name, so `--area` on a check-in is an error rather than silently
//! ignored. The rules about who may write what stay in mend-core: this only fills the body.

use std::fmt::Display;

use mend_core::{
    Body, Journal, Kind, LocalDate, RecordId, Visibility,
    model::{
        AccountabilityNote, Answer, Boundary, Cadence, CheckIn, Commitment, CommitmentStatus,
        DisclosurePreference, HonestyKind, HonestyMoment, HonestyTiming, Need, NeedKind,
        NeedStatus, PreAssurance, ProcessingNote, Question, Reply, ReplyKind, Share, TriggerEvent,
        TriggerSharing, Validation,
    },
};

use crate::{
    choice::{Choice, kebab},
    cli::{Fields, parse_private_fields},
    dates,
    failure::Failure,
    lookup,
};

/// What else an `add` or `edit` needs besides the body.
#[derive(Debug, Default)]
pub struct Placement {
    /// The visibility asked for (`add` only; mend-core refuses it where a kind cannot have it).
    pub visibility: Option<Visibility>,
    /// Share a private processing note after the edit.
    pub share: bool,
}

/// A new body of `kind` with the CLI's defaults (listed in `mend add --help`).
pub fn fresh(kind: Kind) -> Body {
    match kind {
        Kind::AccountabilityNote => Body::AccountabilityNote(AccountabilityNote::default()),
        Kind::Question => Body::Question(Question::default()),
        Kind::Answer => Body::Answer(Answer::default()),
        Kind::ProcessingNote => Body::ProcessingNote(ProcessingNote::default()),
        Kind::Boundary => Body::Boundary(Boundary::default()),
        Kind::DisclosurePreference => Body::DisclosurePreference(DisclosurePreference::default()),
        Kind::Need => Body::Need(Need {
            kind: NeedKind::Other,
            status: NeedStatus::Open,
            ..Default::default()
        }),
        Kind::CheckIn => Body::CheckIn(CheckIn::default()),
        Kind::Share => Body::Share(Share::default()),
        Kind::Reply => Body::Reply(Reply {
            kind: ReplyKind::Reflect,
            ..Default::default()
        }),
        Kind::Commitment => Body::Commitment(Commitment {
            cadence: Cadence::Daily,
            status: CommitmentStatus::Active,
            ..Default::default()
        }),
        Kind::HonestyMoment => Body::HonestyMoment(HonestyMoment {
            kind: HonestyKind::VolunteeredTruth,
            timing: HonestyTiming::ShareNow,
            ..Default::default()
        }),
        Kind::Validation => Body::Validation(Validation::default()),
        Kind::TriggerEvent => Body::TriggerEvent(TriggerEvent {
            sharing: TriggerSharing::Private,
            ..Default::default()
        }),
        Kind::PreAssurance => Body::PreAssurance(PreAssurance::default()),
    }
}

/// Fills a new body of `kind` from the command line.
pub fn for_add(
    journal: &Journal,
    kind: Kind,
    text: Option<String>,
    fields: Fields,
) -> Result<(Body, Placement), Failure> {
    let mut body = fresh(kind);
    let placement = apply(journal, &mut body, text, fields, true)?;
    match &mut body {
        Body::CheckIn(c) if c.local_date.is_none() => c.local_date = Some(journal.today()),
        Body::Boundary(b) if b.area == mend_core::model::BoundaryArea::Unknown => {
            return Err(Failure::input(
                "a boundary needs --area (communication, transparency, space, contact or disclosure)",
            ));
        }
        Body::DisclosurePreference(d)
            if d.preference == mend_core::model::DisclosureChoice::Unknown =>
        {
            return Err(Failure::input(
                "a disclosure preference needs --preference (want-details, not-now or no)",
            ));
        }
        _ => {}
    }
    Ok((body, placement))
}

/// Changes `body` (a record read from the journal) as the command line says.
pub fn for_edit(
    journal: &Journal,
    body: &mut Body,
    text: Option<String>,
    fields: Fields,
) -> Result<Placement, Failure> {
    apply(journal, body, text, fields, false)
}

fn apply(
    journal: &Journal,
    body: &mut Body,
    text: Option<String>,
    mut f: Fields,
    adding: bool,
) -> Result<Placement, Failure> {
    let link = |s: &str| -> Result<Option<RecordId>, Failure> {
        if s.trim().eq_ignore_ascii_case("none") {
            Ok(None)
        } else {
            lookup::resolve(journal, s).map(Some)
        }
    };
    let mut placement = Placement::default();
    let label = body.kind().label().to_lowercase();
    match body {
        Body::AccountabilityNote(b) => {
            set(&mut b.what_i_did, text);
            set(&mut b.impact, f.impact.take());
            if !f.amends.is_empty() {
                let ids = std::mem::take(&mut f.amends);
                b.amends = ids
                    .iter()
                    .filter_map(|s| link(s).transpose())
                    .collect::<Result<_, _>>()?;
            }
        }
        Body::Question(b) => {
            set(&mut b.text, text);
            set(&mut b.category, f.category.take());
        }
        Body::Answer(b) => {
            set(&mut b.text, text);
            if let Some(q) = f.question.take() {
                b.question = link(&q)?;
            }
        }
        Body::ProcessingNote(b) => {
            set(&mut b.text, text);
            match f.private.take() {
                Some(Some(_)) => {
                    return Err(Failure::input(
                        "--private takes no value for a processing note",
                    ));
                }
                Some(None) if f.shared => {
                    return Err(Failure::input("choose --private or --shared, not both"));
                }
                Some(None) => placement.visibility = Some(Visibility::Private),
                None => {}
            }
            if std::mem::take(&mut f.shared) {
                placement.visibility = Some(Visibility::Shared);
                placement.share = !adding;
            }
        }
        Body::Boundary(b) => {
            set(&mut b.text, text);
            set_some(&mut b.area, f.area.take());
            if let Some(d) = f.review_date.take() {
                b.review_date = optional_date(&d)?;
            }
        }
        Body::DisclosurePreference(b) => {
            set(&mut b.topic, text);
            set_some(&mut b.preference, f.preference.take());
        }
        Body::Need(b) => {
            set(&mut b.text, text);
            if let Some(k) = f.kind.take() {
                b.kind = pick("--kind", NeedKind::ALL, &k, &label)?;
            }
            if let Some(s) = f.status.take() {
                b.status = pick("--status", NeedStatus::ALL, &s, &label)?;
            }
        }
        Body::CheckIn(b) => {
            if text.is_some() && f.note.is_some() {
                return Err(Failure::input(
                    "give the check-in's note as TEXT or --note, not both",
                ));
            }
            if let Some(note) = text.or(f.note.take()) {
                b.note = non_empty(note);
            }
            if let Some(d) = f.date.take() {
                b.local_date = Some(dates::parse(&d)?);
            }
            set_some(&mut b.safety, f.safety.take().map(Some));
            set_some(&mut b.trust, f.trust.take().map(Some));
            set_some(&mut b.connection, f.connection.take().map(Some));
            if !f.mood.is_empty() {
                b.mood_tags = list(std::mem::take(&mut f.mood));
            }
            if let Some(need) = f.need_today.take() {
                b.need_today = non_empty(need);
            }
            match f.private.take() {
                Some(Some(names)) => {
                    b.private_fields = parse_private_fields(&names).map_err(Failure::input)?;
                }
                Some(None) => {
                    return Err(Failure::input(
                        "name the check-in fields to keep private, e.g. --private note,trust (or none)",
                    ));
                }
                None => {}
            }
        }
        Body::Share(b) => {
            set(&mut b.feeling, text);
            set_some(&mut b.tough_question, f.tough_question.take());
        }
        Body::Reply(b) => {
            set(&mut b.text, text);
            if let Some(s) = f.share.take() {
                b.share = link(&s)?;
            }
            if let Some(k) = f.kind.take() {
                b.kind = pick("--kind", ReplyKind::ALL, &k, &label)?;
            }
        }
        Body::Commitment(b) => {
            set(&mut b.text, text);
            set_some(&mut b.cadence, f.cadence.take());
            if let Some(l) = f.link.take() {
                b.link = link(&l)?;
            }
            if let Some(s) = f.status.take() {
                b.status = pick("--status", CommitmentStatus::ALL, &s, &label)?;
            }
            if let Some(d) = f.date.take() {
                b.starts_on = Some(dates::parse(&d)?);
            }
        }
        Body::HonestyMoment(b) => {
            set(&mut b.text, text);
            if let Some(k) = f.kind.take() {
                b.kind = pick("--kind", HonestyKind::ALL, &k, &label)?;
            }
            if let Some(l) = f.link.take() {
                b.link = link(&l)?;
            }
            set_some(&mut b.timing, f.timing.take());
            if let Some(d) = f.date.take() {
                b.noticed_on = Some(dates::parse(&d)?);
            }
        }
        Body::Validation(b) => {
            set(&mut b.text, text);
            if let Some(t) = f.target.take() {
                b.target = link(&t)?;
            }
        }
        Body::TriggerEvent(b) => {
            set(&mut b.cue, text);
            set_some(&mut b.intensity, f.intensity.take());
            if !f.feeling.is_empty() {
                b.feelings = list(std::mem::take(&mut f.feeling));
            }
            set(&mut b.what_helped, f.what_helped.take());
            set_some(&mut b.wanted_response, f.wants.take());
            if f.sharing.is_some() && f.private.is_some() {
                return Err(Failure::input("choose --sharing or --private, not both"));
            }
            if let Some(None) = f.private.take() {
                b.sharing = TriggerSharing::Private;
            }
            set_some(&mut b.sharing, f.sharing.take());
        }
        Body::PreAssurance(b) => {
            set(&mut b.plan, text);
            set(&mut b.occasion, f.occasion.take());
            if let Some(d) = f.date.take() {
                b.date = optional_date(&d)?;
            }
        }
    }
    if adding && let Some(None) = f.private {
        // Kinds that are shared by nature: mend-core refuses, in its own words.
        f.private = None;
        placement.visibility = Some(Visibility::Private);
    }
    match leftover(&f) {
        Some(flag) => Err(Failure::input(format!(
            "{flag} does not apply to a {label}"
        ))),
        None => Ok(placement),
    }
}

/// The first flag a kind did not take.
fn leftover(f: &Fields) -> Option<&'static str> {
    let set = [
        ("--kind", f.kind.is_some()),
        ("--status", f.status.is_some()),
        ("--area", f.area.is_some()),
        ("--review-date", f.review_date.is_some()),
        ("--preference", f.preference.is_some()),
        ("--impact", f.impact.is_some()),
        ("--amends", !f.amends.is_empty()),
        ("--category", f.category.is_some()),
        ("--question", f.question.is_some()),
        ("--share", f.share.is_some()),
        ("--target", f.target.is_some()),
        ("--link", f.link.is_some()),
        ("--cadence", f.cadence.is_some()),
        ("--timing", f.timing.is_some()),
        ("--date", f.date.is_some()),
        ("--safety", f.safety.is_some()),
        ("--trust", f.trust.is_some()),
        ("--connection", f.connection.is_some()),
        ("--mood", !f.mood.is_empty()),
        ("--need-today", f.need_today.is_some()),
        ("--note", f.note.is_some()),
        ("--private", f.private.is_some()),
        ("--shared", f.shared),
        ("--tough-question", f.tough_question.is_some()),
        ("--intensity", f.intensity.is_some()),
        ("--feeling", !f.feeling.is_empty()),
        ("--what-helped", f.what_helped.is_some()),
        ("--wants", f.wants.is_some()),
        ("--sharing", f.sharing.is_some()),
        ("--occasion", f.occasion.is_some()),
    ];
    set.into_iter().find(|(_, on)| *on).map(|(flag, _)| flag)
}

fn set(field: &mut String, value: Option<String>) {
    if let Some(v) = value {
        *field = v;
    }
}

fn set_some<T>(field: &mut T, value: Option<T>) {
    if let Some(v) = value {
        *field = v;
    }
}

fn non_empty(s: String) -> Option<String> {
    (!s.is_empty()).then_some(s)
}

/// A list flag; `none` alone clears the list.
fn list(values: Vec<String>) -> Vec<String> {
    if values.len() == 1 && values[0].trim().eq_ignore_ascii_case("none") {
        return Vec::new();
    }
    values
        .into_iter()
        .map(|v| v.trim().to_owned())
        .filter(|v| !v.is_empty())
        .collect()
}

fn optional_date(s: &str) -> Result<Option<LocalDate>, Failure> {
    if s.trim().eq_ignore_ascii_case("none") {
        return Ok(None);
    }
    dates::parse(s).map(Some)
}

fn pick<T: Copy + Display + Send + Sync + 'static>(
    flag: &str,
    all: &'static [T],
    s: &str,
    label: &str,
) -> Result<T, Failure> {
    Choice::new(all).parse_str(s).map_err(|_| {
        let names: Vec<String> = all.iter().map(|v| kebab(*v)).collect();
        Failure::input(format!(
            "{flag} for a {label} is one of: {}",
            names.join(", ")
        ))
    })
}
