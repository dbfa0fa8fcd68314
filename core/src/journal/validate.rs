//! Input checks: a clear error for bad input before anything is written.

use crate::{
    error::{Error, Result},
    model::Body,
};

/// Longest text field accepted (characters). A journal entry is prose, not a file.
pub(super) const MAX_TEXT: usize = 20_000;
const MAX_SHORT: usize = 200;
const MAX_TAGS: usize = 32;

pub(super) fn name(name: &str) -> Result<String> {
    let name = name.trim();
    if name.is_empty() {
        return Err(Error::Invalid("a name cannot be empty".into()));
    }
    short("name", name)?;
    Ok(name.to_owned())
}

fn required(field: &str, text: &str) -> Result<()> {
    if text.trim().is_empty() {
        return Err(Error::Invalid(format!("{field} cannot be empty")));
    }
    long(field, text)
}

fn long(field: &str, text: &str) -> Result<()> {
    if text.chars().count() > MAX_TEXT {
        return Err(Error::Invalid(format!(
            "{field} is longer than {MAX_TEXT} characters"
        )));
    }
    Ok(())
}

fn short(field: &str, text: &str) -> Result<()> {
    if text.chars().count() > MAX_SHORT {
        return Err(Error::Invalid(format!(
            "{field} is longer than {MAX_SHORT} characters"
        )));
    }
    Ok(())
}

fn score(field: &str, value: Option<u8>) -> Result<()> {
    match value {
        Some(v) if v > 10 => Err(Error::Invalid(format!("{field} must be between 0 and 10"))),
        _ => Ok(()),
    }
}

fn tags(field: &str, tags: &[String]) -> Result<()> {
    if tags.len() > MAX_TAGS {
        return Err(Error::Invalid(format!(
            "{field} has more than {MAX_TAGS} entries"
        )));
    }
    tags.iter().try_for_each(|t| short(field, t))
}

/// Checks a body's own fields (links are checked against the document by the caller).
pub(super) fn body(body: &Body) -> Result<()> {
    match body {
        Body::AccountabilityNote(b) => {
            required("what_i_did", &b.what_i_did)?;
            long("impact", &b.impact)
        }
        Body::Question(b) => {
            required("text", &b.text)?;
            short("category", &b.category)
        }
        Body::Answer(b) => required("text", &b.text),
        Body::ProcessingNote(b) => required("text", &b.text),
        Body::Boundary(b) => required("text", &b.text),
        Body::DisclosurePreference(b) => {
            required("topic", &b.topic).and_then(|_| short("topic", &b.topic))
        }
        Body::Need(b) => required("text", &b.text),
        Body::CheckIn(b) => {
            if b.local_date.is_none() {
                return Err(Error::Invalid("a check-in needs its local_date".into()));
            }
            score("safety", b.safety)?;
            score("trust", b.trust)?;
            score("connection", b.connection)?;
            tags("mood_tags", &b.mood_tags)?;
            long("need_today", b.need_today.as_deref().unwrap_or_default())?;
            long("note", b.note.as_deref().unwrap_or_default())
        }
        Body::Share(b) => required("feeling", &b.feeling),
        Body::Reply(b) => long("text", &b.text),
        Body::Commitment(b) => required("text", &b.text),
        Body::HonestyMoment(b) => required("text", &b.text),
        Body::Validation(b) => long("text", &b.text),
        Body::TriggerEvent(b) => {
            score("intensity", Some(b.intensity))?;
            long("cue", &b.cue)?;
            long("what_helped", &b.what_helped)?;
            tags("feelings", &b.feelings)
        }
        Body::PreAssurance(b) => {
            required("plan", &b.plan)?;
            long("occasion", &b.occasion)
        }
    }
}
