//! The packet as one self-contained HTML page: inline style, inline SVG, no scripts, nothing
//! fetched. It prints to PDF from a browser: the charts come right after the cover, lines
//! differ by dash and marker as well as colour (greyscale printers), and week labels are text
//! on the page rather than hover tooltips.

use std::fmt::Write;

use super::model::{Item, Packet, Table, short_date};
use crate::{
    query::{CheckInAverages, Progress},
    words::html_escape as esc,
};

const STYLE: &str = "body{font-family:system-ui,-apple-system,'Segoe UI',sans-serif;max-width:52rem;margin:2rem auto;padding:0 1rem;color:#111;line-height:1.4}\
h1{font-size:1.6rem;margin-bottom:.2rem}h2{margin-top:2rem;border-bottom:1px solid #999}h3{font-size:1rem;margin:1rem 0 .3rem}\
dl{display:grid;grid-template-columns:max-content 1fr;gap:.15rem 1rem;margin:0 0 .6rem}dt{font-weight:600}dd{margin:0;white-space:pre-wrap}\
table{border-collapse:collapse;margin:.4rem 0 1rem;font-size:.9rem}td,th{border:1px solid #888;padding:.2rem .45rem;text-align:left;vertical-align:top}\
td{white-space:pre-wrap}.thread{margin-left:1.2rem;border-left:3px solid #bbb;padding-left:.8rem}.item{break-inside:avoid}\
figure{margin:1rem 0}figcaption{font-weight:600;margin-bottom:.3rem}ul.legend{list-style:none;padding:0;display:flex;flex-wrap:wrap;gap:.3rem 1.2rem;font-size:.85rem}\
svg text{font-family:inherit}@media print{body{max-width:none;margin:0}h2{break-after:avoid}figure,table{break-inside:avoid}}";

pub(crate) fn render(p: &Packet) -> String {
    let mut out = String::new();
    let _ = write!(
        out,
        "<!DOCTYPE html>\n<html lang=\"en\"><head><meta charset=\"utf-8\">\
         <meta name=\"viewport\" content=\"width=device-width\"><title>Journal packet {} to {}</title>\
         <style>{STYLE}</style></head><body>\n<h1>Journal packet</h1>\n<p>{} to {}</p>\n",
        p.from, p.to, p.from, p.to
    );
    let names: Vec<String> = p.partners.iter().map(|(_, n)| esc(n)).collect();
    let _ = writeln!(out, "<p>Partners: {}</p>", names.join(" and "));
    out.push_str("<h2>Summary</h2>\n");
    for (practice, para) in &p.summary {
        let _ = writeln!(
            out,
            "<p><strong>{}.</strong> {}</p>",
            esc(practice),
            esc(para)
        );
    }
    out.push_str("<h2>Weekly progress</h2>\n");
    out.push_str(&charts(p));
    for (name, t) in &p.progress_tables {
        let _ = writeln!(out, "<h3>{}</h3>", esc(name));
        table(&mut out, t);
    }
    for s in &p.sections {
        let _ = writeln!(out, "<h2>{}</h2>", esc(&s.title));
        for item in &s.items {
            write_item(&mut out, item);
        }
    }
    if p.sections.is_empty() {
        out.push_str("<p><em>No records in this range.</em></p>\n");
    }
    if !p.check_ins.is_empty() {
        out.push_str("<h2>Check-ins</h2>\n");
        for (name, t) in &p.check_ins {
            let _ = writeln!(out, "<h3>{}</h3>", esc(name));
            if t.rows.is_empty() {
                out.push_str("<p><em>No check-ins in this range.</em></p>\n");
            } else {
                table(&mut out, t);
            }
        }
    }
    out.push_str("</body></html>\n");
    out
}

fn write_item(out: &mut String, item: &Item) {
    let _ = writeln!(
        out,
        "<div class=\"item\"><h3>{}</h3><dl>",
        esc(&item.heading)
    );
    for (label, value) in &item.fields {
        let _ = writeln!(out, "<dt>{}</dt><dd>{}</dd>", esc(label), esc(value));
    }
    out.push_str("</dl>");
    if let Some(t) = &item.table {
        table(out, t);
    }
    if !item.children.is_empty() {
        out.push_str("<div class=\"thread\">");
        for c in &item.children {
            write_item(out, c);
        }
        out.push_str("</div>");
    }
    out.push_str("</div>\n");
}

fn table(out: &mut String, t: &Table) {
    out.push_str("<table><thead><tr>");
    for h in &t.head {
        let _ = write!(out, "<th>{}</th>", esc(h));
    }
    out.push_str("</tr></thead><tbody>\n");
    for r in &t.rows {
        out.push_str("<tr>");
        for c in r {
            let _ = write!(out, "<td>{}</td>", esc(c));
        }
        out.push_str("</tr>\n");
    }
    out.push_str("</tbody></table>\n");
}

/// One line of a chart.
struct Series {
    label: String,
    colour: &'static str,
    dash: &'static str,
    marker: Marker,
    points: Vec<Option<f64>>,
}

#[derive(Clone, Copy)]
enum Marker {
    Circle,
    Square,
    Triangle,
}

const COLOURS: [&str; 3] = ["#1b6e3a", "#b3471b", "#3b3ba8"];
const DASHES: [&str; 2] = ["", "6 4"];

fn charts(p: &Packet) -> String {
    let mut scores = Vec::new();
    let mut kept = Vec::new();
    type Pick = fn(&CheckInAverages) -> Option<f64>;
    let picks: [(&str, Pick, Marker); 3] = [
        ("safety", |a| a.safety, Marker::Circle),
        ("trust", |a| a.trust, Marker::Square),
        ("connection", |a| a.connection, Marker::Triangle),
    ];
    for (k, (id, name)) in p.partners.iter().enumerate() {
        let dash = DASHES[k % DASHES.len()];
        for (j, (score, pick, marker)) in picks.iter().enumerate() {
            scores.push(Series {
                label: format!("{name}: {score}"),
                colour: COLOURS[j],
                dash,
                marker: *marker,
                points: p
                    .progress
                    .weeks
                    .iter()
                    .map(|w| w.by_partner.get(id).and_then(|x| pick(&x.check_ins)))
                    .collect(),
            });
        }
        kept.push(Series {
            label: format!("{name}: own commitments kept"),
            colour: COLOURS[k % COLOURS.len()],
            dash,
            marker: [Marker::Circle, Marker::Square][k % 2],
            points: p
                .progress
                .weeks
                .iter()
                .map(|w| {
                    w.by_partner
                        .get(id)
                        .and_then(|x| x.commitments.consistency)
                        .map(|v| v * 100.0)
                })
                .collect(),
        });
    }
    let mut out = String::new();
    out.push_str(&chart(
        "Check-in scores per week (average, 0 to 10)",
        "scores",
        &p.progress,
        &scores,
        10.0,
        &["0", "5", "10"],
    ));
    out.push_str(&chart(
        "Commitments kept per week (share of what was due, 0 to 100 %; a gap means nothing was due)",
        "kept",
        &p.progress,
        &kept,
        100.0,
        &["0 %", "50 %", "100 %"],
    ));
    out
}

fn chart(
    caption: &str,
    class: &str,
    progress: &Progress,
    series: &[Series],
    max: f64,
    ticks: &[&str; 3],
) -> String {
    const W: f64 = 680.0;
    const H: f64 = 230.0;
    const LEFT: f64 = 44.0;
    const RIGHT: f64 = 12.0;
    const TOP: f64 = 12.0;
    const BOTTOM: f64 = 40.0;
    let n = progress.weeks.len().max(1);
    let step = (W - LEFT - RIGHT) / n as f64;
    let x = |i: usize| LEFT + step * (i as f64 + 0.5);
    let y = |v: f64| TOP + (1.0 - v.clamp(0.0, max) / max) * (H - TOP - BOTTOM);
    let mut svg = String::new();
    let _ = writeln!(
        svg,
        "<figure class=\"chart {class}\"><figcaption>{}</figcaption>\
         <svg xmlns=\"http://www.w3.org/2000/svg\" viewBox=\"0 0 {W} {H}\" width=\"100%\" role=\"img\" aria-label=\"{}\">",
        esc(caption),
        esc(caption)
    );
    for (k, tick) in ticks.iter().enumerate() {
        let v = max * k as f64 / 2.0;
        let _ = writeln!(
            svg,
            "<line x1=\"{LEFT}\" x2=\"{:.1}\" y1=\"{y0:.1}\" y2=\"{y0:.1}\" stroke=\"#bbb\"/>\
             <text x=\"{:.1}\" y=\"{:.1}\" font-size=\"11\" text-anchor=\"end\">{tick}</text>",
            W - RIGHT,
            LEFT - 4.0,
            y(v) + 4.0,
            y0 = y(v),
        );
    }
    // Week labels, thinned so they never overlap, always including the first and last.
    let every = (n as f64 / 12.0).ceil().max(1.0) as usize;
    for (i, w) in progress.weeks.iter().enumerate() {
        if i % every == 0 || i + 1 == n {
            let _ = writeln!(
                svg,
                "<text class=\"week-label\" x=\"{:.1}\" y=\"{:.1}\" font-size=\"11\" text-anchor=\"middle\">{}</text>",
                x(i),
                H - BOTTOM + 16.0,
                esc(&short_date(w.week_start))
            );
        }
    }
    let _ = writeln!(
        svg,
        "<text x=\"{:.1}\" y=\"{:.1}\" font-size=\"11\" text-anchor=\"middle\">Week starting</text>",
        LEFT + (W - LEFT - RIGHT) / 2.0,
        H - 6.0
    );
    for s in series {
        // Lines break where a week has no value, rather than bridging the gap.
        let mut runs: Vec<Vec<(f64, f64)>> = vec![Vec::new()];
        for (i, v) in s.points.iter().enumerate() {
            match v {
                Some(v) => {
                    if let Some(run) = runs.last_mut() {
                        run.push((x(i), y(*v)));
                    }
                }
                None => runs.push(Vec::new()),
            }
        }
        for run in runs.iter().filter(|r| !r.is_empty()) {
            let pts: Vec<String> = run.iter().map(|(a, b)| format!("{a:.1},{b:.1}")).collect();
            let _ = writeln!(
                svg,
                "<polyline class=\"series\" fill=\"none\" stroke=\"{}\" stroke-width=\"2\" stroke-dasharray=\"{}\" points=\"{}\"/>",
                s.colour,
                s.dash,
                pts.join(" ")
            );
            for (a, b) in run {
                svg.push_str(&marker(s.marker, *a, *b, s.colour));
            }
        }
    }
    svg.push_str("</svg>\n<ul class=\"legend\">");
    for s in series {
        let _ = write!(
            svg,
            "<li><svg width=\"34\" height=\"12\" aria-hidden=\"true\"><line x1=\"1\" x2=\"33\" y1=\"6\" y2=\"6\" stroke=\"{}\" stroke-width=\"2\" stroke-dasharray=\"{}\"/>{}</svg> {}</li>",
            s.colour,
            s.dash,
            marker(s.marker, 17.0, 6.0, s.colour),
            esc(&s.label)
        );
    }
    svg.push_str("</ul></figure>\n");
    svg
}

fn marker(m: Marker, x: f64, y: f64, colour: &str) -> String {
    match m {
        Marker::Circle => {
            format!("<circle cx=\"{x:.1}\" cy=\"{y:.1}\" r=\"3.5\" fill=\"{colour}\"/>")
        }
        Marker::Square => format!(
            "<rect x=\"{:.1}\" y=\"{:.1}\" width=\"7\" height=\"7\" fill=\"{colour}\"/>",
            x - 3.5,
            y - 3.5
        ),
        Marker::Triangle => format!(
            "<polygon points=\"{x:.1},{:.1} {:.1},{:.1} {:.1},{:.1}\" fill=\"{colour}\"/>",
            y - 4.5,
            x - 4.0,
            y + 3.5,
            x + 4.0,
            y + 3.5
        ),
    }
}
