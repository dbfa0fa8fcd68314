//! The packet as Markdown.

use std::fmt::Write;

use super::{Packet, record_date, render};
use crate::{model::Kind, query::boundary_status};

pub(crate) fn render(p: &Packet) -> String {
    let mut out = String::new();
    let o = &p.options;
    let _ = writeln!(out, "# Journal packet, {} to {}\n", o.from, o.to);
    let names: Vec<&str> = p.names.iter().map(|(_, n)| n.as_str()).collect();
    let _ = writeln!(out, "Partners: {}\n", names.join(" and "));

    let _ = writeln!(out, "## Weekly progress\n");
    let _ = writeln!(
        out,
        "| Week of | Commitments kept | Confirmed | Check-ins | Safety | Trust | Connection | Honesty moments |"
    );
    let _ = writeln!(out, "|---|---|---|---|---|---|---|---|");
    let avg = |v: Option<f64>| v.map_or_else(|| "–".to_owned(), |v| format!("{v:.1}"));
    for w in &p.progress.weeks {
        let _ = writeln!(
            out,
            "| {} | {:.0}% | {:.0}% | {} | {} | {} | {} | {} |",
            w.week_start,
            w.commitments.consistency * 100.0,
            w.commitments.confirmation * 100.0,
            w.check_ins.count,
            avg(w.check_ins.safety),
            avg(w.check_ins.trust),
            avg(w.check_ins.connection),
            w.honesty_moments
        );
    }
    out.push('\n');

    let partners: Vec<_> = p.names.iter().map(|(id, _)| *id).collect();
    let statuses = boundary_status(&p.records, &partners);
    let mut current: Option<Kind> = None;
    for r in &p.records {
        if current != Some(r.kind()) {
            current = Some(r.kind());
            let _ = writeln!(out, "## {}\n", r.kind().plural_label());
        }
        let _ = writeln!(
            out,
            "### {} · {}\n",
            record_date(r, o.offset_minutes),
            p.name_of(r.author)
        );
        let status = statuses.iter().find(|s| s.boundary.id == r.id);
        for (label, value) in render::fields(r, status) {
            let _ = writeln!(out, "- **{label}:** {}", value.replace('\n', "\n  "));
        }
        out.push('\n');
    }
    if p.records.is_empty() {
        out.push_str("_No records in this range._\n");
    }
    out
}
