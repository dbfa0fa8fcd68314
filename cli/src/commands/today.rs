//! `today`: what waits on you today, in the couple's time zone. The same list an app turns into
//! local notifications.

use anyhow::Result;
use mend_core::{Journal, RecordId};

use super::reading;
use crate::{home::Home, lookup::short, say};

/// `today`.
pub fn today(home: &Home, json: bool) -> Result<()> {
    let device = home.open(None)?;
    reading(&device, |journal| -> Result<()> {
        let today = journal.waiting_today()?;
        if json {
            crate::term::say_json(&today)?;
            return Ok(());
        }
        let date = journal.today();
        if today.is_empty() {
            say!("Nothing waits on you today ({date}).");
            return Ok(());
        }
        say!("Waiting on you today ({date}):");
        if today.check_in_due {
            say!("  - your check-in for today");
        }
        for o in &today.claims_due {
            say!(
                "  - claim {} for {}: {}",
                short(o.commitment),
                o.occurrence,
                about(journal, o.commitment)
            );
        }
        for o in &today.claims_to_confirm {
            say!(
                "  - confirm {} for {}: {}",
                short(o.commitment),
                o.occurrence,
                about(journal, o.commitment)
            );
        }
        let lists: [(&str, &Vec<RecordId>); 4] = [
            ("answer question", &today.questions_to_answer),
            ("respond to need", &today.needs_to_respond),
            ("consent to boundary", &today.boundaries_to_consent),
            ("review boundary", &today.boundaries_to_review),
        ];
        for (what, ids) in lists {
            for id in ids {
                say!("  - {what} {}: {}", short(*id), about(journal, *id));
            }
        }
        Ok(())
    })
}

fn about(journal: &Journal, id: RecordId) -> String {
    journal.get(id).map_or_else(
        |_| "(unreadable)".to_owned(),
        |r| {
            let context = crate::render::Context::of(journal);
            context.map_or_else(|_| String::new(), |c| c.summary(&r))
        },
    )
}
