//! Reading the journal: `list` (the timeline as a table or JSON) and `show` (one record with
//! everything attached to it).

use anyhow::Result;
use mend_core::{
    Body, Journal, Kind, Record,
    query::{Thread, TimelineQuery, timeline},
};
use serde_json::{Value, json};

use super::reading;
use crate::{
    dates,
    failure::{Exit, Failure},
    home::Home,
    lookup::{self, short},
    render::{Context, state_name},
    say,
    term::{Table, clip, hang},
};

/// Records per timeline page (mend-core's largest).
const PAGE: usize = 500;

/// What `list` shows.
#[derive(Debug)]
pub struct ListFilter {
    /// Only these kinds.
    pub kinds: Vec<Kind>,
    /// Only this partner's.
    pub mine: bool,
    /// Only the other partner's.
    pub partner: bool,
    /// Include removed placeholders.
    pub removed: bool,
    /// Only the couple's document.
    pub shared: bool,
    /// At most this many.
    pub limit: Option<usize>,
}

/// `list`.
pub fn list(home: &crate::home::Home, filter: &ListFilter, json: bool) -> Result<()> {
    let device = home.open(None)?;
    reading(&device, |journal| -> Result<()> {
        let records = select(journal, filter)?;
        let context = Context::of(journal)?;
        if json {
            let views: Vec<_> = records.iter().map(|r| context.view(r)).collect();
            crate::term::say_json(&views)?;
            return Ok(());
        }
        if records.is_empty() {
            say!("No records yet.");
            return Ok(());
        }
        let mut table = Table::new(&["ID", "WHEN (UTC)", "KIND", "BY", "WHAT"]);
        for r in &records {
            table.row(context.row(r));
        }
        say!("{}", table.render().trim_end());
        Ok(())
    })
}

/// The records `filter` asks for, newest first, through mend-core's timeline query.
fn select(journal: &Journal, filter: &ListFilter) -> Result<Vec<Record>> {
    let author = match (filter.mine, filter.partner) {
        (true, _) => Some(journal.me()),
        (_, true) => match journal.partner() {
            Some(p) => Some(p.id),
            None => return Ok(Vec::new()),
        },
        _ => None,
    };
    let all = if filter.shared {
        journal.shared_records()?
    } else {
        journal.records()?
    };
    let mut query = TimelineQuery {
        kinds: filter.kinds.clone(),
        author,
        include_removed: filter.removed,
        limit: PAGE,
        ..Default::default()
    };
    let want = filter.limit.unwrap_or(usize::MAX);
    let mut out = Vec::new();
    loop {
        let page = timeline(&all, &query)?;
        out.extend(page.items);
        match page.next_cursor {
            Some(cursor) if out.len() < want => query.cursor = Some(cursor),
            _ => break,
        }
    }
    out.truncate(want);
    Ok(out)
}

/// `show ID`.
pub fn show(home: &Home, typed: &str, json: bool) -> Result<()> {
    let device = home.open(None)?;
    reading(&device, |journal| -> Result<()> {
        let id = lookup::resolve(journal, typed)?;
        let thread = journal.thread(id)?;
        let record = &thread.record;
        let context = Context::of(journal)?;
        let answers: Vec<&Record> = thread.answers.iter().collect();
        let replies: Vec<&Record> = thread.replies.iter().collect();
        let validations: Vec<&Record> = thread.validations.iter().collect();

        if json {
            let mut out = serde_json::to_value(context.view(record))?;
            if let (Value::Object(map), Some(status)) = (&mut out, &thread.boundary) {
                let consents: Vec<Value> = status
                    .consents
                    .iter()
                    .map(|c| {
                        json!({
                            "partner": c.partner,
                            "name": context.names.get(c.partner),
                            "state": c.state,
                            "current": c.current,
                        })
                    })
                    .collect();
                map.insert("consents_now".into(), Value::Array(consents));
            }
            if let Value::Object(map) = &mut out {
                for (key, list) in [
                    ("answers", &answers),
                    ("replies", &replies),
                    ("validations", &validations),
                ] {
                    let views: Vec<Value> = list
                        .iter()
                        .map(|r| serde_json::to_value(context.view(r)))
                        .collect::<Result<_, _>>()?;
                    map.insert(key.into(), Value::Array(views));
                }
            }
            crate::term::say_json(&out)?;
            return Ok(());
        }

        say!("{} {}", record.kind().label(), record.id);
        let mut meta = vec![
            format!("by {}", context.names.get(record.author)),
            format!(
                "added {}",
                dates::local_instant(journal.calendar(), record.created_at)
            ),
        ];
        if record.updated_at != record.created_at {
            meta.push(format!(
                "changed {}",
                dates::local_instant(journal.calendar(), record.updated_at)
            ));
        }
        meta.push(match record.visibility {
            mend_core::Visibility::Shared => "shared".into(),
            mend_core::Visibility::Private => "private (only you see it)".into(),
        });
        if record.removed {
            meta.push("removed".into());
        }
        say!("{}", meta.join(" · "));
        say!("");
        print_fields(record)?;
        print_managed(journal, &context, &thread);
        for (title, list) in [
            ("Answers", &answers),
            ("Replies", &replies),
            ("Validations", &validations),
        ] {
            if list.is_empty() {
                continue;
            }
            say!("");
            say!("{title}:");
            let mut table = Table::new(&["ID", "WHEN", "BY", "WHAT"]);
            for r in list {
                table.row(vec![
                    short(r.id),
                    dates::local_instant(journal.calendar(), r.created_at),
                    context.names.get(r.author),
                    context.summary(r),
                ]);
            }
            for line in table.render().lines() {
                say!("  {line}");
            }
        }
        let conflicts = journal.conflicts(record.id)?;
        if !conflicts.is_empty() {
            say!("");
            say!("Set differently on two devices at once (the first is shown):");
            for c in &conflicts {
                say!("  {} ({}):", c.label, c.field);
                for (i, choice) in c.choices.iter().enumerate() {
                    say!("    {}. {}", i + 1, choice.words);
                }
            }
            say!(
                "Keep one with `mend settle {} FIELD NUMBER`.",
                short(record.id)
            );
        }
        Ok(())
    })
}

/// The body's own fields, one per line.
fn print_fields(record: &Record) -> Result<()> {
    let Value::Object(fields) = serde_json::to_value(&record.body)? else {
        return Err(Failure::new(Exit::Local, "a record did not read as fields").into());
    };
    let managed = [
        "kind",
        "consents",
        "claims",
        "views",
        "response",
        "status_changes",
        "wordings",
    ];
    let kind = record.kind();
    let signal = matches!(&record.body, Body::TriggerEvent(t) if t.sharing == mend_core::model::TriggerSharing::Signal);
    for (key, value) in fields
        .iter()
        .filter(|(k, _)| !managed.contains(&k.as_str()))
    {
        // A content-free "I'm triggered" signal has no score to show.
        if signal && !matches!(key.as_str(), "sharing" | "wanted_response") {
            continue;
        }
        let shown = match value {
            Value::Null => "—".to_owned(),
            Value::String(s) if s.is_empty() => "—".to_owned(),
            Value::String(s) => {
                mend_core::words::value_label(kind, key, s).map_or_else(|| s.clone(), str::to_owned)
            }
            Value::Array(items) if items.is_empty() => "—".to_owned(),
            Value::Array(items) => items
                .iter()
                .map(|v| {
                    v.as_str().map_or_else(
                        || v.to_string(),
                        |s| {
                            mend_core::words::value_label(kind, key, s)
                                .map_or_else(|| s.to_owned(), str::to_owned)
                        },
                    )
                })
                .collect::<Vec<_>>()
                .join(", "),
            Value::Bool(b) => if *b { "yes" } else { "no" }.to_owned(),
            other => other.to_string(),
        };
        // Further lines of a field are indented under it, so words cannot pose as a label
        // or a table of their own.
        let shown = hang(&shown, 24);
        say!(
            "{:<24}{shown}",
            format!("{}:", mend_core::words::field_label(kind, key))
        );
    }
    Ok(())
}

/// What other operations wrote: consents, the ledger, a need's response.
fn print_managed(journal: &Journal, context: &Context, thread: &Thread) {
    let record = &thread.record;
    match &record.body {
        Body::Boundary(_) => {
            let Some(status) = &thread.boundary else {
                return;
            };
            say!("");
            say!("Status: {}", state_name(status.state));
            for c in &status.consents {
                let wording = if c.current {
                    "this wording"
                } else {
                    "an earlier wording"
                };
                let said = match c.state {
                    mend_core::model::ConsentState::Proposed => "has not said yet".to_owned(),
                    s => format!("{} ({wording})", s.label().to_lowercase()),
                };
                say!("  {:<14}{said}", context.names.get(c.partner));
            }
        }
        Body::Commitment(_) => {
            if thread.ledger.is_empty() {
                return;
            }
            say!("");
            say!("Follow-through:");
            let mut table = Table::new(&["OCCURRENCE", "CLAIM", "PARTNER'S VIEW"]);
            for entry in &thread.ledger {
                let claim = entry
                    .claim
                    .as_ref()
                    .map_or("—".to_owned(), |x| x.status.label().to_owned());
                let view = entry
                    .view
                    .as_ref()
                    .map_or("—".to_owned(), |x| x.view.label().to_owned());
                table.row(vec![entry.occurrence.to_string(), claim, view]);
            }
            for line in table.render().lines() {
                say!("  {line}");
            }
        }
        Body::Need(n) => {
            say!("");
            match &n.response {
                Some(r) => {
                    let by = journal
                        .partners()
                        .into_iter()
                        .find(|p| p.id != record.author);
                    let name = by.map_or_else(|| "Partner".to_owned(), |p| clip(&p.name, 80));
                    let note = if r.note.is_empty() {
                        String::new()
                    } else {
                        format!(": {}", hang(&r.note, 2))
                    };
                    say!(
                        "Response from {name}: {}{note}",
                        r.kind.label().to_lowercase()
                    );
                }
                None => say!("Response: none yet"),
            }
        }
        _ => {}
    }
}
