//! The packet as Markdown. Every piece of partner text goes through
//! [`markdown_inline`](crate::words::markdown_inline), so it can never become a heading, a
//! table row, a link or raw HTML.

use std::fmt::Write;

use super::model::{Item, Packet, Table};
use crate::words::markdown_inline as md;

pub(crate) fn render(p: &Packet) -> String {
    let mut out = String::new();
    let _ = writeln!(out, "# Journal packet, {} to {}\n", p.from, p.to);
    let names: Vec<String> = p.partners.iter().map(|(_, n)| md(n)).collect();
    let _ = writeln!(out, "Partners: {}\n", names.join(" and "));
    let _ = writeln!(out, "## Summary\n");
    for (practice, para) in &p.summary {
        let _ = writeln!(out, "**{}.** {}\n", md(practice), md(para));
    }
    let _ = writeln!(out, "## Weekly progress\n");
    for (name, t) in &p.progress_tables {
        let _ = writeln!(out, "### {}\n", md(name));
        table(&mut out, t);
    }
    for s in &p.sections {
        let _ = writeln!(out, "## {}\n", md(&s.title));
        for item in &s.items {
            write_item(&mut out, item, 0);
        }
    }
    if p.sections.is_empty() {
        out.push_str("_No records in this range._\n\n");
    }
    if !p.check_ins.is_empty() {
        let _ = writeln!(out, "## Check-ins\n");
        for (name, t) in &p.check_ins {
            let _ = writeln!(out, "### {}\n", md(name));
            if t.rows.is_empty() {
                out.push_str("_No check-ins in this range._\n\n");
            } else {
                table(&mut out, t);
            }
        }
    }
    out
}

fn write_item(out: &mut String, item: &Item, depth: usize) {
    let indent = "  ".repeat(depth);
    if depth == 0 {
        let _ = writeln!(out, "### {}\n", md(&item.heading));
    } else {
        let _ = writeln!(out, "{indent}- **{}**", md(&item.heading));
    }
    let inner = if depth == 0 {
        String::new()
    } else {
        format!("{indent}  ")
    };
    for (label, value) in &item.fields {
        let _ = writeln!(out, "{inner}- **{}:** {}", md(label), md(value));
    }
    if depth == 0 {
        out.push('\n');
        if let Some(t) = &item.table {
            table(out, t);
        }
    }
    for child in &item.children {
        write_item(out, child, depth + 1);
    }
    if depth == 0 && !item.children.is_empty() {
        out.push('\n');
    }
}

fn table(out: &mut String, t: &Table) {
    let row = |cells: &[String]| {
        format!(
            "| {} |",
            cells.iter().map(|c| md(c)).collect::<Vec<_>>().join(" | ")
        )
    };
    let _ = writeln!(out, "{}", row(&t.head));
    let _ = writeln!(out, "|{}", "---|".repeat(t.head.len()));
    for r in &t.rows {
        let _ = writeln!(out, "{}", row(r));
    }
    out.push('\n');
}
