//! The packet as one self-contained HTML page (inline style, inline SVG, no scripts).

use std::fmt::Write;

use super::{Packet, record_date, render};
use crate::{
    model::Kind,
    query::{Progress, boundary_status},
};

/// Escapes text for HTML element content and attribute values.
pub(crate) fn escape(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&#39;"),
            c => out.push(c),
        }
    }
    out
}

const STYLE: &str = "body{font-family:system-ui,sans-serif;max-width:48rem;margin:2rem auto;padding:0 1rem;color:#222}\
h1{font-size:1.6rem}h2{margin-top:2rem;border-bottom:1px solid #ddd}h3{font-size:1rem;margin-bottom:.3rem}\
dl{display:grid;grid-template-columns:max-content 1fr;gap:.2rem 1rem;margin:0 0 1rem}dt{font-weight:600}\
dd{margin:0;white-space:pre-wrap}table{border-collapse:collapse}td,th{border:1px solid #ccc;padding:.2rem .5rem;text-align:right}";

pub(crate) fn render(p: &Packet) -> String {
    let o = &p.options;
    let mut out = String::new();
    let _ = write!(
        out,
        "<!DOCTYPE html>\n<html lang=\"en\"><head><meta charset=\"utf-8\"><title>Journal packet {} to {}</title>\
         <style>{STYLE}</style></head><body>\n<h1>Journal packet, {} to {}</h1>\n",
        o.from, o.to, o.from, o.to
    );
    let names: Vec<String> = p.names.iter().map(|(_, n)| escape(n)).collect();
    let _ = writeln!(out, "<p>Partners: {}</p>", names.join(" and "));
    let _ = writeln!(out, "<h2>Weekly progress</h2>");
    out.push_str(&chart(&p.progress));
    out.push_str(
        "<table><tr><th>Week of</th><th>Commitments kept</th><th>Confirmed</th><th>Check-ins</th>\
         <th>Honesty moments</th></tr>\n",
    );
    for w in &p.progress.weeks {
        let _ = writeln!(
            out,
            "<tr><td>{}</td><td>{:.0}%</td><td>{:.0}%</td><td>{}</td><td>{}</td></tr>",
            w.week_start,
            w.commitments.consistency * 100.0,
            w.commitments.confirmation * 100.0,
            w.check_ins.count,
            w.honesty_moments
        );
    }
    out.push_str("</table>\n");

    let partners: Vec<_> = p.names.iter().map(|(id, _)| *id).collect();
    let statuses = boundary_status(&p.records, &partners);
    let mut current: Option<Kind> = None;
    for r in &p.records {
        if current != Some(r.kind()) {
            current = Some(r.kind());
            let _ = writeln!(out, "<h2>{}</h2>", escape(&r.kind().plural_label()));
        }
        let _ = writeln!(
            out,
            "<h3>{} · {}</h3><dl>",
            record_date(r, o.offset_minutes),
            escape(p.name_of(r.author))
        );
        let status = statuses.iter().find(|s| s.boundary.id == r.id);
        for (label, value) in render::fields(r, status) {
            let _ = writeln!(
                out,
                "<dt>{}</dt><dd>{}</dd>",
                escape(&label),
                escape(&value)
            );
        }
        out.push_str("</dl>\n");
    }
    if p.records.is_empty() {
        out.push_str("<p><em>No records in this range.</em></p>\n");
    }
    out.push_str("</body></html>\n");
    out
}

/// Weekly check-in averages as lines (0–10) over commitment consistency as bars (0–100 %).
fn chart(progress: &Progress) -> String {
    const W: f64 = 640.0;
    const H: f64 = 240.0;
    const PAD: f64 = 32.0;
    let n = progress.weeks.len().max(1) as f64;
    let step = (W - 2.0 * PAD) / n;
    let x = |i: usize| PAD + step * (i as f64 + 0.5);
    let y = |v: f64| H - PAD - (v.clamp(0.0, 10.0) / 10.0) * (H - 2.0 * PAD);
    let mut svg = String::new();
    let _ = write!(
        svg,
        "<svg xmlns=\"http://www.w3.org/2000/svg\" viewBox=\"0 0 {W} {H}\" width=\"100%\" role=\"img\" \
         aria-label=\"Weekly progress chart\">\n<rect width=\"{W}\" height=\"{H}\" fill=\"#fafafa\"/>\n"
    );
    for tick in [0.0, 5.0, 10.0] {
        let _ = writeln!(
            svg,
            "<line x1=\"{PAD}\" x2=\"{}\" y1=\"{y0:.1}\" y2=\"{y0:.1}\" stroke=\"#ddd\"/>\
             <text x=\"4\" y=\"{:.1}\" font-size=\"10\">{tick}</text>",
            W - PAD,
            y(tick) + 3.0,
            y0 = y(tick),
        );
    }
    for (i, w) in progress.weeks.iter().enumerate() {
        let v = w.commitments.consistency * 10.0;
        let top = y(v);
        let _ = writeln!(
            svg,
            "<rect class=\"consistency\" x=\"{:.1}\" y=\"{top:.1}\" width=\"{:.1}\" height=\"{:.1}\" fill=\"#cfe3f7\">\
             <title>{}: {:.0}% of commitments kept</title></rect>",
            x(i) - step * 0.35,
            step * 0.7,
            (H - PAD) - top,
            w.week_start,
            w.commitments.consistency * 100.0
        );
    }
    type Pick = fn(&crate::query::CheckInAverages) -> Option<f64>;
    let series: [(&str, &str, Pick); 3] = [
        ("Safety", "#2a7", |a| a.safety),
        ("Trust", "#d73", |a| a.trust),
        ("Connection", "#66c", |a| a.connection),
    ];
    for (k, (name, colour, pick)) in series.iter().enumerate() {
        let points: Vec<String> = progress
            .weeks
            .iter()
            .enumerate()
            .filter_map(|(i, w)| pick(&w.check_ins).map(|v| format!("{:.1},{:.1}", x(i), y(v))))
            .collect();
        if !points.is_empty() {
            let _ = writeln!(
                svg,
                "<polyline class=\"series\" fill=\"none\" stroke=\"{colour}\" stroke-width=\"2\" points=\"{}\"/>",
                points.join(" ")
            );
        }
        let lx = PAD + 110.0 * k as f64;
        let _ = writeln!(
            svg,
            "<rect x=\"{lx}\" y=\"6\" width=\"10\" height=\"10\" fill=\"{colour}\"/>\
             <text x=\"{}\" y=\"15\" font-size=\"11\">{name}</text>",
            lx + 14.0
        );
    }
    let _ = writeln!(
        svg,
        "<rect x=\"{}\" y=\"6\" width=\"10\" height=\"10\" fill=\"#cfe3f7\"/>\
         <text x=\"{}\" y=\"15\" font-size=\"11\">Commitments kept</text>\n</svg>",
        PAD + 330.0,
        PAD + 344.0
    );
    svg
}
