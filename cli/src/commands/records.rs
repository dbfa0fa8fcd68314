//! Writing to the journal: add, edit, remove, and the operations with their own rule (consent,
//! the follow-through ledger, responses, question status, sharing a note).

use anyhow::Result;
use mend_core::{
    Body, Journal, Kind, LocalDate, RecordId,
    model::{
        Answer, ClaimStatus, ConsentState, NeedResponseKind, PartnerView, QuestionStatus, Reply,
        ReplyKind, Validation,
    },
};

use super::reading;
use crate::{
    cli::{ConsentChoice, Fields},
    dates,
    failure::Failure,
    fields,
    home::Home,
    lookup::{self, short},
    render::{Context, state_name},
    say,
};

/// `add`: prints the new record's full id alone, so scripts can keep it.
pub fn add(home: &Home, kind: Kind, text: Option<String>, f: Fields) -> Result<()> {
    let device = home.open(None)?;
    let (body, placement) = reading(&device, |j| fields::for_add(j, kind, text, f))?;
    let id = device.write(|j| j.add_with(body, placement.visibility))?;
    say!("{id}");
    Ok(())
}

/// `edit`: reads the record, changes the fields given, and lets mend-core decide who may.
pub fn edit(home: &Home, typed: &str, text: Option<String>, f: Fields) -> Result<()> {
    let device = home.open(None)?;
    let (id, record, body, placement) = reading(&device, |j| {
        let id = lookup::resolve(j, typed)?;
        let record = j.get(id)?;
        let mut body = record.body.clone();
        let placement = fields::for_edit(j, &mut body, text, f)?;
        anyhow::Ok((id, record, body, placement))
    })?;
    device.write(|j| j.edit(id, body))?;
    if placement.share {
        device.write(|j| j.share(id))?;
    }
    say!(
        "Edited {} {}.",
        record.kind().label().to_lowercase(),
        short(id)
    );
    if record.kind() == Kind::Boundary {
        reading(&device, |j| boundary_line(j, id))?;
    }
    Ok(())
}

/// `reply SHARE TEXT`.
pub fn reply(home: &Home, share: &str, text: Option<String>, kind: ReplyKind) -> Result<()> {
    add_linked(home, share, |share| {
        Body::Reply(Reply {
            share: Some(share),
            kind,
            text: text.unwrap_or_default(),
        })
    })
}

/// `validate TARGET [TEXT]`.
pub fn validate(home: &Home, target: &str, text: Option<String>) -> Result<()> {
    add_linked(home, target, |target| {
        Body::Validation(Validation {
            target: Some(target),
            text: text.unwrap_or_default(),
        })
    })
}

/// `answer QUESTION TEXT`.
pub fn answer(home: &Home, question: &str, text: String) -> Result<()> {
    add_linked(home, question, |question| {
        Body::Answer(Answer {
            question: Some(question),
            text,
        })
    })
}

fn add_linked(home: &Home, typed: &str, body: impl FnOnce(RecordId) -> Body) -> Result<()> {
    let device = home.open(None)?;
    let target = reading(&device, |j| lookup::resolve(j, typed))?;
    let id = device.write(|j| j.add(body(target)))?;
    say!("{id}");
    Ok(())
}

/// `consent BOUNDARY agree|decline|revisit`.
pub fn consent(home: &Home, typed: &str, choice: ConsentChoice) -> Result<()> {
    let device = home.open(None)?;
    let id = reading(&device, |j| lookup::resolve(j, typed))?;
    let state = match choice {
        ConsentChoice::Agree => ConsentState::Agreed,
        ConsentChoice::Decline => ConsentState::Declined,
        ConsentChoice::Revisit => ConsentState::Revisit,
    };
    device.write(|j| j.consent(id, state))?;
    say!(
        "Your consent to boundary {} is now: {}.",
        short(id),
        state.label().to_lowercase()
    );
    reading(&device, |j| boundary_line(j, id))?;
    Ok(())
}

fn boundary_line(journal: &Journal, id: RecordId) -> Result<()> {
    let context = Context::of(journal)?;
    let Some(status) = context.boundaries.iter().find(|b| b.boundary.id == id) else {
        return Ok(());
    };
    let waiting: Vec<String> = status
        .consents
        .iter()
        .filter(|c| !(c.current && c.state == ConsentState::Agreed))
        .map(|c| context.names.get(c.partner))
        .collect();
    match status.state {
        mend_core::query::BoundaryState::Pending if !waiting.is_empty() => say!(
            "The boundary is waiting for {} to agree to this wording.",
            waiting.join(" and ")
        ),
        state => say!("The boundary is {}.", state_name(state)),
    }
    Ok(())
}

/// The day a claim or view is about (mend-core finds its occurrence and checks it was due).
fn occurrence(journal: &Journal, date: Option<&str>) -> Result<LocalDate> {
    Ok(dates::or_today(date, journal.today())?)
}

/// `claim COMMITMENT done|partial|missed`.
pub fn claim(
    home: &Home,
    typed: &str,
    status: ClaimStatus,
    date: Option<&str>,
    note: &str,
) -> Result<()> {
    let device = home.open(None)?;
    let (id, at) = reading(&device, |j| {
        anyhow::Ok((lookup::resolve(j, typed)?, occurrence(j, date)?))
    })?;
    device.write(|j| j.claim(id, at, status, note))?;
    say!(
        "Claimed \"{}\" for {at} on commitment {}.",
        status.label().to_lowercase(),
        short(id)
    );
    Ok(())
}

/// `confirm COMMITMENT confirmed|did-not-notice|disagree`.
pub fn confirm(
    home: &Home,
    typed: &str,
    view: PartnerView,
    date: Option<&str>,
    note: &str,
) -> Result<()> {
    let device = home.open(None)?;
    let (id, at) = reading(&device, |j| {
        anyhow::Ok((lookup::resolve(j, typed)?, occurrence(j, date)?))
    })?;
    device.write(|j| j.confirm(id, at, view, note))?;
    say!(
        "Recorded \"{}\" for {at} on commitment {}.",
        view.label().to_lowercase(),
        short(id)
    );
    Ok(())
}

/// `respond NEED receptive|reassured|lets-talk`.
pub fn respond(home: &Home, typed: &str, kind: NeedResponseKind, note: &str) -> Result<()> {
    let device = home.open(None)?;
    let id = reading(&device, |j| lookup::resolve(j, typed))?;
    device.write(|j| j.respond_to_need(id, kind, note))?;
    say!(
        "Responded \"{}\" to need {}.",
        kind.label().to_lowercase(),
        short(id)
    );
    Ok(())
}

/// `question-status QUESTION STATUS`.
pub fn question_status(home: &Home, typed: &str, status: QuestionStatus) -> Result<()> {
    let device = home.open(None)?;
    let id = reading(&device, |j| lookup::resolve(j, typed))?;
    device.write(|j| j.set_question_status(id, status))?;
    say!(
        "Question {} is now: {}.",
        short(id),
        status.label().to_lowercase()
    );
    Ok(())
}

/// `share-note ID`.
pub fn share_note(home: &Home, typed: &str) -> Result<()> {
    let device = home.open(None)?;
    let id = reading(&device, |j| lookup::resolve(j, typed))?;
    device.write(|j| j.share(id))?;
    say!("Shared {} with your partner.", short(id));
    Ok(())
}

/// `remove ID`.
pub fn remove(home: &Home, typed: &str) -> Result<()> {
    let device = home.open(None)?;
    let id = reading(&device, |j| lookup::resolve(j, typed))?;
    device.write(|j| j.remove(id))?;
    say!(
        "Removed {}. A placeholder keeps replies and links in place.",
        short(id)
    );
    Ok(())
}

/// `settle ID FIELD N`: keeps the Nth value of a conflict.
pub fn settle(home: &Home, typed: &str, field: &str, choice: usize) -> Result<()> {
    let device = home.open(None)?;
    let (id, conflicts) = reading(&device, |j| {
        let id = lookup::resolve(j, typed)?;
        anyhow::Ok((id, j.conflicts(id)?))
    })?;
    let Some(conflict) = conflicts.iter().find(|c| c.field == field) else {
        return Err(
            Failure::input(format!("record {} has no conflict on {field}", short(id))).into(),
        );
    };
    let Some(chosen) = choice.checked_sub(1).and_then(|i| conflict.choices.get(i)) else {
        return Err(Failure::input(format!(
            "choose a value from 1 to {}",
            conflict.choices.len()
        ))
        .into());
    };
    device.write(|j| j.settle(id, field, &chosen.value))?;
    say!(
        "Settled {} of {}: {}.",
        conflict.label.to_lowercase(),
        short(id),
        chosen.words
    );
    Ok(())
}
