//! `progress`: the weekly view as a chart of plain characters. Consistency, not streaks: each
//! week stands on its own, the owner's claims beside the partner's confirmations.

use anyhow::Result;
use mend_core::query::{CheckInAverages, WeekProgress};

use super::lock;
use crate::{dates, home::Home, say, term::Table};

/// Width of a consistency bar, in characters.
const BAR: usize = 20;

/// `progress`.
pub fn progress(home: &Home, weeks: u16, json: bool) -> Result<()> {
    let device = home.open(None)?;
    let journal = lock(&device)?;
    let to = dates::today();
    let from = to.add_days(-7 * (i32::from(weeks.max(1)) - 1));
    let progress = journal.progress(from, to, 0)?;
    if json {
        say!("{}", serde_json::to_string_pretty(&progress)?);
        return Ok(());
    }
    let mut table = Table::new(&[
        "WEEK OF",
        "COMMITMENTS KEPT (CLAIMED)",
        "CONFIRMED",
        "CHECK-INS",
        "SAFETY",
        "TRUST",
        "CONNECTION",
        "HONESTY",
    ]);
    for week in &progress.weeks {
        table.row(row(week));
    }
    say!("{}", table.render().trim_end());
    let t = &progress.trend;
    say!(
        "Trend per week: safety {}, trust {}, connection {}",
        signed(t.safety),
        signed(t.trust),
        signed(t.connection)
    );
    Ok(())
}

fn row(week: &WeekProgress) -> Vec<String> {
    let c = &week.commitments;
    let (kept, confirmed) = if c.expected == 0 {
        (
            format!("[{}]  nothing due", " ".repeat(BAR)),
            "—".to_owned(),
        )
    } else {
        (
            format!("{} {:>3.0}%", bar(c.consistency), c.consistency * 100.0),
            format!("{:.0}%", c.confirmation * 100.0),
        )
    };
    let CheckInAverages {
        count,
        safety,
        trust,
        connection,
    } = &week.check_ins;
    vec![
        week.week_start.to_string(),
        kept,
        confirmed,
        count.to_string(),
        mean(*safety),
        mean(*trust),
        mean(*connection),
        week.honesty_moments.to_string(),
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
