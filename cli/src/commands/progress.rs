//! `progress`: the weekly view per partner as a chart of plain characters. Consistency, not
//! streaks: each whole week stands on its own, the owner's claims beside the partner's
//! confirmations, and a week with nothing due says so instead of showing 0 %.

use anyhow::Result;
use mend_core::query::{CheckInAverages, PartnerWeek, WeekProgress};

use super::reading;
use crate::{home::Home, say, term::Table};

/// Width of a consistency bar, in characters.
const BAR: usize = 20;

/// `progress`.
pub fn progress(home: &Home, weeks: u32, json: bool) -> Result<()> {
    let device = home.open(None)?;
    reading(&device, |journal| -> Result<()> {
        let progress = journal.recent_progress(weeks)?;
        if json {
            crate::term::say_json(&progress)?;
            return Ok(());
        }
        let mut first = true;
        for partner in journal.partners() {
            if !first {
                say!("");
            }
            first = false;
            say!("{}", partner.name);
            let mut table = Table::new(&[
                "WEEK",
                "OWN COMMITMENTS KEPT (CLAIMED)",
                "CONFIRMED",
                "CHECK-INS",
                "SAFETY",
                "TRUST",
                "CONNECTION",
                "HONESTY NOTICED",
            ]);
            for week in &progress.weeks {
                let mine = week
                    .by_partner
                    .get(&partner.id)
                    .cloned()
                    .unwrap_or_default();
                table.row(row(week, &mine));
            }
            say!("{}", table.render().trim_end());
            if let Some(t) = progress.trend_by_partner.get(&partner.id) {
                say!(
                    "Trend per week: safety {}, trust {}, connection {}",
                    signed(t.safety),
                    signed(t.trust),
                    signed(t.connection)
                );
            }
        }
        say!("");
        say!(
            "Weeks start on {:?} in {}; figures as of {}.",
            journal.calendar().week_starts(),
            journal.calendar().zone_name(),
            progress.as_of
        );
        Ok(())
    })
}

fn row(week: &WeekProgress, mine: &PartnerWeek) -> Vec<String> {
    let c = &mine.commitments;
    let (kept, confirmed) = match (c.consistency, c.confirmation) {
        (Some(kept), Some(confirmed)) => (
            format!("{} {:>3.0}%", bar(kept), kept * 100.0),
            format!("{:.0}%", confirmed * 100.0),
        ),
        _ => (
            format!("[{}]  nothing due", " ".repeat(BAR)),
            "—".to_owned(),
        ),
    };
    let CheckInAverages {
        count,
        safety,
        trust,
        connection,
    } = &mine.check_ins;
    vec![
        format!("{} – {}", week.week_start, week.week_end),
        kept,
        confirmed,
        count.to_string(),
        mean(*safety),
        mean(*trust),
        mean(*connection),
        mine.honesty_noticed.to_string(),
    ]
}

/// `[########............]` for a share between 0 and 1.
fn bar(share: f64) -> String {
    let filled = ((share.clamp(0.0, 1.0) * BAR as f64).round() as usize).min(BAR);
    format!("[{}{}]", "#".repeat(filled), ".".repeat(BAR - filled))
}

fn mean(v: Option<f64>) -> String {
    v.map_or("—".to_owned(), |v| format!("{v:.1}"))
}

fn signed(v: Option<f64>) -> String {
    v.map_or("n/a".to_owned(), |v| format!("{v:+.2}"))
}
