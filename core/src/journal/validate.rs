//! Input checks: a clear error for bad input before anything is written.

use crate::{
    error::{Error, Result},
    model::{Body, Kind},
};

/// A field's name as people read it, lower case to sit in a sentence ("what I did").
fn label(kind: Kind, field: &str) -> String {
    let l = crate::words::field_label(kind, field);
    let mut chars = l.chars();
    match chars.next() {
        Some(c) => c.to_lowercase().chain(chars).collect(),
        None => l,
    }
}

/// Longest text field accepted (characters). A journal entry is prose, not a file.
pub(super) const MAX_TEXT: usize = 20_000;
const MAX_SHORT: usize = 200;
const MAX_TAGS: usize = 32;

pub(super) fn name(name: &str) -> Result<String> {
    let name = name.trim();
    if name.is_empty() {
        return Err(Error::Invalid("a name cannot be empty".into()));
    }
    // One line of text, as pairing takes it from the other side.
    if name.chars().any(char::is_control) {
        return Err(Error::Invalid(
            "a name cannot hold control characters".into(),
        ));
    }
    short(None, "name", name)?;
    Ok(name.to_owned())
}

fn required(kind: Kind, field: &str, text: &str) -> Result<()> {
    if text.trim().is_empty() {
        return Err(Error::Invalid(format!(
            "{} cannot be empty",
            label(kind, field)
        )));
    }
    long(kind, field, text)
}

fn long(kind: Kind, field: &str, text: &str) -> Result<()> {
    if text.chars().count() > MAX_TEXT {
        return Err(Error::Invalid(format!(
            "{} is longer than {MAX_TEXT} characters",
            label(kind, field)
        )));
    }
    Ok(())
}

fn short(kind: Option<Kind>, field: &str, text: &str) -> Result<()> {
    if text.chars().count() > MAX_SHORT {
        let name = kind.map_or_else(|| field.to_owned(), |k| label(k, field));
        return Err(Error::Invalid(format!(
            "{name} is longer than {MAX_SHORT} characters"
        )));
    }
    Ok(())
}

fn score(kind: Kind, field: &str, value: Option<u8>) -> Result<()> {
    match value {
        Some(v) if v > 10 => Err(Error::Invalid(format!(
            "{} must be between 0 and 10",
            label(kind, field)
        ))),
        _ => Ok(()),
    }
}

fn tags(kind: Kind, field: &str, tags: &[String]) -> Result<()> {
    if tags.len() > MAX_TAGS {
        return Err(Error::Invalid(format!(
            "{} has more than {MAX_TAGS} entries",
            label(kind, field)
        )));
    }
    tags.iter().try_for_each(|t| short(Some(kind), field, t))
}

/// Checks a body's own fields (links are checked against the document by the caller).
pub(super) fn body(body: &Body) -> Result<()> {
    let k = body.kind();
    match body {
        Body::AccountabilityNote(b) => {
            required(k, "what_i_did", &b.what_i_did)?;
            long(k, "impact", &b.impact)
        }
        Body::Question(b) => {
            required(k, "text", &b.text)?;
            short(Some(k), "category", &b.category)
        }
        Body::Answer(b) => required(k, "text", &b.text),
        Body::ProcessingNote(b) => required(k, "text", &b.text),
        Body::Boundary(b) => required(k, "text", &b.text),
        Body::DisclosurePreference(b) => {
            required(k, "topic", &b.topic).and_then(|_| short(Some(k), "topic", &b.topic))
        }
        Body::Need(b) => required(k, "text", &b.text),
        Body::CheckIn(b) => {
            if b.local_date.is_none() {
                return Err(Error::Invalid("a check-in needs its local_date".into()));
            }
            score(k, "safety", b.safety)?;
            score(k, "trust", b.trust)?;
            score(k, "connection", b.connection)?;
            tags(k, "mood_tags", &b.mood_tags)?;
            long(k, "need_today", b.need_today.as_deref().unwrap_or_default())?;
            long(k, "note", b.note.as_deref().unwrap_or_default())
        }
        Body::Share(b) => required(k, "feeling", &b.feeling),
        Body::Reply(b) => long(k, "text", &b.text),
        Body::Commitment(b) => required(k, "text", &b.text),
        Body::HonestyMoment(b) => required(k, "text", &b.text),
        Body::Validation(b) => long(k, "text", &b.text),
        Body::TriggerEvent(b) => {
            score(k, "intensity", Some(b.intensity))?;
            long(k, "cue", &b.cue)?;
            long(k, "what_helped", &b.what_helped)?;
            tags(k, "feelings", &b.feelings)
        }
        Body::PreAssurance(b) => {
            required(k, "plan", &b.plan)?;
            long(k, "occasion", &b.occasion)
        }
    }
}
