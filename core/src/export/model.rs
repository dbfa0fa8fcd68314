//! The packet as a reader meets it, independent of format: plain text everywhere (the
//! renderers escape it), stored names already turned into words.

use std::collections::{BTreeMap, HashSet};

use serde_json::Value;

use super::{PacketOptions, record_date};
use crate::{
    calendar::Calendar,
    date::LocalDate,
    ids::{PartnerId, RecordId},
    model::{Body, Kind, Record, TriggerSharing},
    query::{BoundaryState, Progress, boundary_status},
    words,
};

/// A small table.
#[derive(Debug, Default)]
pub(crate) struct Table {
    pub(crate) head: Vec<String>,
    pub(crate) rows: Vec<Vec<String>>,
}

/// One record, with what hangs off it.
#[derive(Debug)]
pub(crate) struct Item {
    /// "2026-11-24 · Alex · Question".
    pub(crate) heading: String,
    pub(crate) fields: Vec<(String, String)>,
    pub(crate) table: Option<Table>,
    pub(crate) children: Vec<Item>,
}

/// One practice's records.
#[derive(Debug)]
pub(crate) struct Section {
    pub(crate) title: String,
    pub(crate) items: Vec<Item>,
}

/// Everything a renderer needs.
#[derive(Debug)]
pub(crate) struct Packet {
    pub(crate) from: LocalDate,
    pub(crate) to: LocalDate,
    pub(crate) partners: Vec<(PartnerId, String)>,
    /// (practice, one paragraph).
    pub(crate) summary: Vec<(String, String)>,
    pub(crate) progress: Progress,
    /// One progress table per partner.
    pub(crate) progress_tables: Vec<(String, Table)>,
    pub(crate) sections: Vec<Section>,
    /// One check-in table per partner, by date.
    pub(crate) check_ins: Vec<(String, Table)>,
}

fn name_in(names: &[(PartnerId, String)], id: PartnerId) -> String {
    names
        .iter()
        .find(|(p, _)| *p == id)
        .map_or_else(|| "A former partner".to_owned(), |(_, n)| n.clone())
}

/// "23 Nov".
pub(crate) fn short_date(d: LocalDate) -> String {
    const MONTHS: [&str; 12] = [
        "Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec",
    ];
    let (_, m, day) = d.ymd();
    format!("{day} {}", MONTHS[(m as usize).saturating_sub(1).min(11)])
}

fn percent(v: Option<f64>) -> String {
    v.map_or_else(
        || "nothing due".to_owned(),
        |v| format!("{:.0} %", v * 100.0),
    )
}

fn mean(v: Option<f64>) -> String {
    v.map_or_else(|| "–".to_owned(), |v| format!("{v:.1}"))
}

fn score(v: Option<u8>) -> String {
    v.map_or_else(|| "–".to_owned(), |v| v.to_string())
}

/// Fields never shown as such: envelope, links (shown as threads), ledgers (shown as tables).
const HIDDEN: [&str; 14] = [
    "kind",
    "consents",
    "wordings",
    "claims",
    "views",
    "private_fields",
    "status_changes",
    "question",
    "share",
    "target",
    "link",
    "amends",
    "local_date",
    "response",
];

/// A record's fields as (label, words), in the body's order.
fn fields(r: &Record) -> Vec<(String, String)> {
    let kind = r.kind();
    let mut out = Vec::new();
    let Ok(Value::Object(map)) = serde_json::to_value(&r.body) else {
        return out;
    };
    let signal = matches!(&r.body, Body::TriggerEvent(t) if t.sharing == TriggerSharing::Signal);
    for (key, value) in map {
        if HIDDEN.contains(&key.as_str()) {
            continue;
        }
        // A content-free "I'm triggered" carries no score, and shows none.
        if signal && !matches!(key.as_str(), "sharing" | "wanted_response") {
            continue;
        }
        let text = match value {
            Value::Null => continue,
            Value::String(s) if s.is_empty() => continue,
            Value::String(s) => words::value_label(kind, &key, &s).map_or(s, str::to_owned),
            Value::Bool(true) => "Yes".into(),
            Value::Bool(false) => continue,
            Value::Number(n) if key == "intensity" => format!("{n} of 10"),
            Value::Number(n) => n.to_string(),
            Value::Array(items) if items.is_empty() => continue,
            Value::Array(items) => items
                .iter()
                .map(|v| v.as_str().map_or_else(|| v.to_string(), str::to_owned))
                .collect::<Vec<_>>()
                .join(", "),
            Value::Object(_) => continue,
        };
        out.push((words::field_label(kind, &key), text));
    }
    if let Body::Need(n) = &r.body
        && let Some(resp) = &n.response
    {
        let mut t = resp.kind.label().to_owned();
        if !resp.note.is_empty() {
            t = format!("{t}: {}", resp.note);
        }
        out.push(("Partner's response".into(), t));
    }
    out
}

/// How deep threads nest in the packet; deeper records follow flat under the last level.
const MAX_NESTING: usize = 8;

struct Builder<'a> {
    names: &'a [(PartnerId, String)],
    calendar: &'a Calendar,
    all: &'a [Record],
    used: HashSet<RecordId>,
}

impl Builder<'_> {
    fn item(&mut self, r: &Record) -> Item {
        self.item_at(r, 0)
    }

    /// `r` alone, marked as laid out.
    fn leaf(&mut self, r: &Record) -> Item {
        self.used.insert(r.id);
        let heading = format!(
            "{} · {} · {}",
            record_date(r, self.calendar),
            name_in(self.names, r.author),
            r.kind().label()
        );
        Item {
            heading,
            fields: fields(r),
            table: None,
            children: Vec::new(),
        }
    }

    fn item_at(&mut self, r: &Record, depth: usize) -> Item {
        let mut item = self.leaf(r);
        // Threads: what answers, replies to or validates this record, in the order written.
        // A record already laid out is not laid out again: replies written for each other
        // before receivers checked their order would otherwise nest for ever. Below
        // `MAX_NESTING` a thread goes on flat, so a long chain cannot exhaust the stack.
        if depth >= MAX_NESTING {
            let mut queue: std::collections::VecDeque<RecordId> = [r.id].into();
            while let Some(id) = queue.pop_front() {
                for c in crate::query::attached_to(self.all, id) {
                    if c.removed || self.used.contains(&c.id) {
                        continue;
                    }
                    queue.push_back(c.id);
                    let child = self.leaf(c);
                    item.children.push(child);
                }
            }
            return item;
        }
        let kids = crate::query::attached_to(self.all, r.id);
        for c in kids.into_iter().filter(|c| !c.removed) {
            if self.used.contains(&c.id) {
                continue;
            }
            let child = self.item_at(c, depth.saturating_add(1));
            item.children.push(child);
        }
        item
    }
}

/// Longest name a packet shows (characters): a name is its partner's to choose, and a
/// replica may hold any length.
const MAX_NAME: usize = 80;

/// The names the packet shows: cut to [`MAX_NAME`], and, when the two would read alike (one
/// partner took the other's name, or one that looks the same), each followed by
/// "(partner 1)" or "(partner 2)" in the couple's order, so no entry reads as the other's.
fn distinct_names(partners: Vec<(PartnerId, String)>) -> Vec<(PartnerId, String)> {
    let mut partners: Vec<(PartnerId, String)> = partners
        .into_iter()
        .map(|(p, n)| {
            let n = n.trim();
            if n.chars().count() > MAX_NAME {
                let mut cut: String = n.chars().take(MAX_NAME - 1).collect();
                cut.push('…');
                (p, cut)
            } else {
                (p, n.to_owned())
            }
        })
        .collect();
    let skeletons: Vec<String> = partners.iter().map(|(_, n)| skeleton(n)).collect();
    let alike = skeletons
        .iter()
        .enumerate()
        .any(|(i, a)| skeletons.iter().skip(i + 1).any(|b| a == b));
    if alike {
        for (k, (_, name)) in partners.iter_mut().enumerate() {
            name.push_str(&format!(" (partner {})", k + 1));
        }
    }
    partners
}

/// A name as it reads at a glance: letters and digits only, lower case, with the Cyrillic,
/// Greek and full-width letters that look like Latin ones (and 0, 1, i) folded onto them.
/// Hand-written: a confusables table from a crate would cost the app's library far more than
/// the few dozen letters that make a name pass for another.
fn skeleton(name: &str) -> String {
    name.chars()
        .flat_map(char::to_lowercase)
        .filter(|c| c.is_alphanumeric())
        .map(|c| match c {
            'а' | 'α' => 'a',
            'в' | 'β' | 'ь' => 'b',
            'с' | 'ϲ' => 'c',
            'ԁ' => 'd',
            'е' | 'ё' | 'ε' => 'e',
            'ɡ' => 'g',
            'н' | 'һ' | 'η' => 'h',
            'і' | 'ι' | 'ı' | 'ӏ' | '1' | 'i' | 'l' => 'l',
            'ј' => 'j',
            'к' | 'κ' => 'k',
            'м' | 'μ' => 'm',
            'п' => 'n',
            'о' | 'ο' | 'σ' | '0' => 'o',
            'р' | 'ρ' => 'p',
            'ԛ' => 'q',
            'г' => 'r',
            'ѕ' | '5' => 's',
            'т' | 'τ' => 't',
            'υ' => 'u',
            'ν' => 'v',
            'ԝ' | 'ω' => 'w',
            'х' | 'χ' => 'x',
            'у' | 'γ' => 'y',
            'ζ' => 'z',
            c @ '\u{FF41}'..='\u{FF5A}' => {
                char::from_u32(u32::from(c) - 0xFF41 + u32::from('a')).unwrap_or(c)
            }
            c => c,
        })
        .collect()
}

/// Lays the packet out.
pub(crate) fn build(
    options: &PacketOptions,
    partners: Vec<(PartnerId, String)>,
    shared: &[Record],
    progress: Progress,
    calendar: &Calendar,
) -> Packet {
    let partners = distinct_names(partners);
    let live: Vec<Record> = shared.iter().filter(|r| !r.removed).cloned().collect();
    let wanted = |r: &Record| {
        let d = record_date(r, calendar);
        d >= options.from
            && d <= options.to
            && (options.kinds.is_empty() || options.kinds.contains(&r.kind()))
    };
    let mut in_range: Vec<&Record> = live.iter().filter(|r| wanted(r)).collect();
    in_range.sort_by_key(|r| (record_date(r, calendar), r.created_at, r.id));
    let ids: Vec<PartnerId> = partners.iter().map(|(p, _)| *p).collect();
    let statuses = boundary_status(&live, &ids);

    let mut b = Builder {
        names: &partners,
        calendar,
        all: &live,
        used: HashSet::new(),
    };
    let practices: [(&str, &[Kind]); 7] = [
        (
            "Owning actions",
            &[
                Kind::AccountabilityNote,
                Kind::Question,
                Kind::ProcessingNote,
                Kind::Answer,
            ],
        ),
        ("Boundaries", &[Kind::Boundary, Kind::DisclosurePreference]),
        ("Needs", &[Kind::Need]),
        ("A safe space", &[Kind::Share, Kind::Reply]),
        ("Starting slow: commitments", &[Kind::Commitment]),
        ("Honesty noticed", &[Kind::HonestyMoment]),
        (
            "Empathy",
            &[Kind::TriggerEvent, Kind::PreAssurance, Kind::Validation],
        ),
    ];
    let mut sections = Vec::new();
    let mut summary = Vec::new();
    for (title, kinds) in practices {
        let mut items = Vec::new();
        let mut counts: BTreeMap<Kind, usize> = BTreeMap::new();
        for r in in_range.iter().filter(|r| kinds.contains(&r.kind())) {
            *counts.entry(r.kind()).or_default() += 1;
            if b.used.contains(&r.id) {
                continue;
            }
            // Answers, replies and validations sit under their record when it is in the packet.
            let parent = match &r.body {
                Body::Answer(a) => a.question,
                Body::Reply(x) => x.share,
                Body::Validation(v) => v.target,
                _ => None,
            };
            // Check-ins are laid out as tables, not items: what validates one stands alone.
            let parent = parent.map(|p| in_range.iter().find(|x| x.id == p));
            if let Some(Some(p)) = parent
                && p.kind() != Kind::CheckIn
            {
                continue;
            }
            let mut item = b.item(r);
            let note = match parent {
                Some(Some(p)) => Some(format!(
                    "about {}'s check-in of {}",
                    name_in(&partners, p.author),
                    record_date(p, calendar)
                )),
                Some(None) => Some("about a record outside this packet's range".to_owned()),
                None => None,
            };
            if let Some(note) = note {
                item.fields.insert(0, ("Note".into(), note));
            }
            match &r.body {
                Body::Boundary(bd) => {
                    if let Some(s) = statuses.iter().find(|s| s.boundary.id == r.id) {
                        item.fields
                            .push(("Status".into(), state_words(s.state).into()));
                    }
                    // Either partner may reword a boundary, and the heading names who proposed
                    // it: the words shown may be the other's. The proposer's own consent tells:
                    // made with the boundary on its first words, moved by each rewording of
                    // theirs, and only theirs to write. On other words than these, the text
                    // changed since. The wording history would not do: either partner may add
                    // to it. Who reworded is not claimed.
                    let current = crate::wording_hash(&bd.text);
                    if bd
                        .consents
                        .get(&r.author)
                        .is_some_and(|c| c.wording != current)
                    {
                        item.fields.push((
                            "Wording".into(),
                            format!(
                                "Reworded since {}'s last stance on it; the table shows who \
                                 agreed to which words",
                                name_in(&partners, r.author)
                            ),
                        ));
                    }
                    let mut t = Table {
                        head: vec![
                            "Partner".into(),
                            "Stance".into(),
                            "On which words".into(),
                            "Since".into(),
                        ],
                        rows: Vec::new(),
                    };
                    for (p, c) in &bd.consents {
                        t.rows.push(vec![
                            name_in(&partners, *p),
                            c.state.label().into(),
                            if c.wording == current {
                                "The current wording".to_owned()
                            } else {
                                // Only words that are what the consent was given to:
                                // a replica may hold others under that hash from before
                                // receivers checked.
                                bd.wordings
                                    .get(&c.wording)
                                    .filter(|w| crate::wording_hash(w) == c.wording)
                                    .map_or_else(
                                        || "An earlier wording".to_owned(),
                                        |w| format!("An earlier wording: {w}"),
                                    )
                            },
                            calendar.date_of(c.at).to_string(),
                        ]);
                    }
                    item.table = Some(t);
                }
                Body::Commitment(c) => {
                    let mut t = Table {
                        head: vec![
                            "Occurrence".into(),
                            "Owner's claim".into(),
                            "Note".into(),
                            "Partner's view".into(),
                            "Note".into(),
                        ],
                        rows: Vec::new(),
                    };
                    let keys: std::collections::BTreeSet<LocalDate> =
                        c.claims.keys().chain(c.views.keys()).copied().collect();
                    for k in keys
                        .into_iter()
                        .filter(|k| *k >= options.from && *k <= options.to)
                    {
                        let claim = c.claims.get(&k);
                        let view = c.views.get(&k);
                        t.rows.push(vec![
                            k.to_string(),
                            claim.map_or("–".into(), |x| x.status.label().into()),
                            claim.map_or(String::new(), |x| x.note.clone()),
                            view.map_or("–".into(), |x| x.view.label().into()),
                            view.map_or(String::new(), |x| x.note.clone()),
                        ]);
                    }
                    if !t.rows.is_empty() {
                        item.table = Some(t);
                    }
                }
                _ => {}
            }
            items.push(item);
        }
        let said: Vec<String> = counts
            .iter()
            .map(|(k, n)| {
                format!(
                    "{n} {}",
                    if *n == 1 {
                        k.label().to_lowercase()
                    } else {
                        k.plural_label().to_lowercase()
                    }
                )
            })
            .collect();
        let mut para = if said.is_empty() {
            "Nothing written in this range.".to_owned()
        } else {
            format!("{}.", said.join(", "))
        };
        if title.starts_with("Starting") {
            let weeks: Vec<&crate::query::WeekProgress> = progress
                .weeks
                .iter()
                .filter(|w| w.commitments.expected > 0)
                .collect();
            let expected: u32 = weeks.iter().map(|w| w.commitments.expected).sum();
            let claimed: f64 = weeks.iter().map(|w| w.commitments.claimed).sum();
            if expected > 0 {
                para.push_str(&format!(
                    " Over the range, {:.0} % of what was due was claimed as kept.",
                    claimed / f64::from(expected) * 100.0
                ));
            }
        }
        if title == "Boundaries" {
            let agreed = statuses
                .iter()
                .filter(|s| s.state == BoundaryState::Agreed)
                .count();
            if !statuses.is_empty() {
                para.push_str(&format!(
                    " {agreed} of {} boundaries are agreed by both.",
                    statuses.len()
                ));
            }
        }
        summary.push((title.to_owned(), para));
        if !items.is_empty() {
            sections.push(Section {
                title: title.to_owned(),
                items,
            });
        }
    }

    let mut check_ins = Vec::new();
    let mut progress_tables = Vec::new();
    for (p, name) in &partners {
        let mut t = Table {
            head: [
                "Date",
                "Safety",
                "Trust",
                "Connection",
                "Mood",
                "Today's need",
                "Note",
            ]
            .map(str::to_owned)
            .to_vec(),
            rows: Vec::new(),
        };
        for r in in_range.iter().filter(|r| r.author == *p) {
            if let Body::CheckIn(c) = &r.body {
                t.rows.push(vec![
                    c.local_date.map_or_else(String::new, |d| d.to_string()),
                    score(c.safety),
                    score(c.trust),
                    score(c.connection),
                    c.mood_tags.join(", "),
                    c.need_today.clone().unwrap_or_default(),
                    c.note.clone().unwrap_or_default(),
                ]);
            }
        }
        if options.kinds.is_empty() || options.kinds.contains(&Kind::CheckIn) {
            check_ins.push((name.clone(), t));
        }
        let mut pt = Table {
            head: [
                "Week",
                "Own commitments kept",
                "Confirmed by partner",
                "Check-ins",
                "Safety",
                "Trust",
                "Connection",
                "Honesty noticed",
            ]
            .map(str::to_owned)
            .to_vec(),
            rows: Vec::new(),
        };
        for w in &progress.weeks {
            let mine = w.by_partner.get(p).cloned().unwrap_or_default();
            pt.rows.push(vec![
                format!("{} – {}", short_date(w.week_start), short_date(w.week_end)),
                percent(mine.commitments.consistency),
                percent(mine.commitments.confirmation),
                mine.check_ins.count.to_string(),
                mean(mine.check_ins.safety),
                mean(mine.check_ins.trust),
                mean(mine.check_ins.connection),
                mine.honesty_noticed.to_string(),
            ]);
        }
        progress_tables.push((name.clone(), pt));
    }
    Packet {
        from: options.from,
        to: options.to,
        partners,
        summary,
        progress,
        progress_tables,
        sections,
        check_ins,
    }
}

fn state_words(s: BoundaryState) -> &'static str {
    match s {
        BoundaryState::Agreed => "Agreed by both on the current wording",
        BoundaryState::Pending => "Waiting for agreement on the current wording",
        BoundaryState::Declined => "Declined",
        BoundaryState::Revisit => "One partner wants to revisit it",
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{
        error::Result,
        model::{Boundary, CheckIn, Consent, ConsentState, Reply, Share, Validation, Visibility},
        query,
    };

    /// The packet's line for a consent given to `agreed`, after the boundary was reworded,
    /// when its wording history holds `held` under the hash of `agreed`.
    fn consent_line(agreed: &str, held: &str) -> Result<String> {
        const T: i64 = 1_795_000_000_000;
        let calendar = Calendar::utc();
        let (alex, blake) = (PartnerId::generate(), PartnerId::generate());
        let mut b = Boundary {
            text: "Contact is fine".into(),
            ..Default::default()
        };
        b.wordings
            .insert(crate::wording_hash(agreed), held.to_owned());
        b.consents.insert(
            alex,
            Consent {
                state: ConsentState::Agreed,
                wording: crate::wording_hash(agreed),
                at: T,
            },
        );
        let shared = vec![Record {
            id: RecordId::generate_for(alex),
            author: alex,
            created_at: T,
            updated_at: T,
            visibility: Visibility::Shared,
            removed: false,
            body: Body::Boundary(b),
            conflicts: Vec::new(),
        }];
        let day = calendar.date_of(T);
        let options = PacketOptions {
            from: day,
            to: day,
            kinds: Vec::new(),
        };
        let progress = query::progress(&shared, &[alex, blake], day, day, &calendar)?;
        let names = vec![(alex, "Alex".to_owned()), (blake, "Blake".to_owned())];
        let packet = build(&options, names, &shared, progress, &calendar);
        let md = super::super::markdown::render(&packet);
        Ok(md
            .lines()
            .find(|l| l.contains("An earlier wording"))
            .unwrap_or_default()
            .to_owned())
    }

    const T: i64 = 1_795_000_000_000;

    /// A boundary's heading names who proposed it, and either partner may reword it: once its
    /// words are not those the proposer's own consent was given to, the packet says so, so the
    /// words shown are not read as the proposer's. What the other partner can write (the
    /// wording history) does not make it say so.
    #[test]
    fn a_reworded_boundary_is_not_shown_as_its_proposers_words() -> Result<()> {
        let (alex, blake) = (PartnerId::generate(), PartnerId::generate());
        // Alex's boundary with `text`, Alex's consent given to `agreed`, and `history`.
        let boundary = |text: &str, agreed: Option<&str>, history: &[&str]| {
            let mut b = Boundary {
                text: text.into(),
                ..Default::default()
            };
            for words in history {
                b.wordings
                    .insert(crate::wording_hash(words), (*words).to_owned());
            }
            if let Some(agreed) = agreed {
                b.consents.insert(
                    alex,
                    Consent {
                        state: ConsentState::Agreed,
                        wording: crate::wording_hash(agreed),
                        at: T,
                    },
                );
            }
            shared(alex, T, Body::Boundary(b))
        };
        let first = "No contact with them";
        let other = "Contact only about work";
        let as_proposed = packet_of(alex, blake, &[boundary(first, Some(first), &[first])])?;
        assert!(as_proposed.contains("Alex · Boundary"), "{as_proposed}");
        assert!(!as_proposed.contains("Reworded since"), "{as_proposed}");
        let reworded = packet_of(
            alex,
            blake,
            &[boundary(other, Some(first), &[first, other])],
        )?;
        assert!(
            reworded.contains("Reworded since Alex's last stance on it"),
            "{reworded}"
        );
        // Words added to the history by the other partner change nothing.
        let padded = packet_of(
            alex,
            blake,
            &[boundary(first, Some(first), &[first, other])],
        )?;
        assert!(!padded.contains("Reworded since"), "{padded}");
        // Without a consent of the proposer's (a journal from before consents), nothing is said.
        let unknown = packet_of(alex, blake, &[boundary(other, None, &[first, other])])?;
        assert!(!unknown.contains("Reworded since"), "{unknown}");
        Ok(())
    }

    fn shared(author: PartnerId, at: i64, body: Body) -> Record {
        Record {
            id: RecordId::generate_for(author),
            author,
            created_at: at,
            updated_at: at,
            visibility: Visibility::Shared,
            removed: false,
            body,
            conflicts: Vec::new(),
        }
    }

    /// The Markdown packet of `records` over the day of `T`.
    fn packet_of(alex: PartnerId, blake: PartnerId, records: &[Record]) -> Result<String> {
        let calendar = Calendar::utc();
        let day = calendar.date_of(T);
        let options = PacketOptions {
            from: day,
            to: day,
            kinds: Vec::new(),
        };
        let progress = query::progress(records, &[alex, blake], day, day, &calendar)?;
        let names = vec![(alex, "Alex".to_owned()), (blake, "Blake".to_owned())];
        let packet = build(&options, names, records, progress, &calendar);
        Ok(super::super::markdown::render(&packet))
    }

    fn reply(author: PartnerId, at: i64, share: Option<RecordId>, text: &str) -> Record {
        shared(
            author,
            at,
            Body::Reply(Reply {
                share,
                text: text.into(),
                ..Default::default()
            }),
        )
    }

    /// Replies written for each other (a journal from before receivers checked) and a chain
    /// of thousands: the packet is made, every reply in it once.
    #[test]
    fn threads_that_loop_or_run_deep_are_laid_out_once() -> Result<()> {
        let (alex, blake) = (PartnerId::generate(), PartnerId::generate());
        let mut first = reply(blake, T, None, "first of the loop");
        let mut second = reply(blake, T - 86_400_000, None, "second of the loop");
        if let Body::Reply(r) = &mut first.body {
            r.share = Some(second.id);
        }
        if let Body::Reply(r) = &mut second.body {
            r.share = Some(first.id);
        }
        let mut records = vec![first, second];
        let share = shared(
            alex,
            T,
            Body::Share(Share {
                feeling: "root".into(),
                ..Default::default()
            }),
        );
        let mut parent = share.id;
        records.push(share);
        for n in 0..5000 {
            let r = reply(blake, T + n, Some(parent), &format!("deep {n} end"));
            parent = r.id;
            records.push(r);
        }
        let md = packet_of(alex, blake, &records)?;
        assert_eq!(md.matches("first of the loop").count(), 1);
        for n in [0, 7, 8, 9, 4999] {
            assert_eq!(md.matches(&format!("deep {n} end")).count(), 1, "deep {n}");
        }
        Ok(())
    }

    /// A partner who takes the other's name, or one that looks the same, cannot pass their
    /// entries off as the other's: alike names are told apart, others are left alone.
    #[test]
    fn names_that_read_alike_are_told_apart() {
        let (alex, blake) = (PartnerId::generate(), PartnerId::generate());
        for taken in [
            "Blake",
            "BLAKE",
            "Bl\u{430}ke",
            "Bla\u{200b}ke",
            " Blake ",
            "B1ake",
            "ＢＬＡＫＥ",
        ] {
            let names = distinct_names(vec![(alex, taken.to_owned()), (blake, "Blake".to_owned())]);
            assert_eq!(
                names[0].1,
                format!("{} (partner 1)", taken.trim()),
                "{taken:?}"
            );
            assert_eq!(names[1].1, "Blake (partner 2)", "{taken:?}");
        }
        let names = distinct_names(vec![(alex, "Alex".to_owned()), (blake, "Blake".to_owned())]);
        assert_eq!(names[0].1, "Alex");
        assert_eq!(names[1].1, "Blake");
        let long = distinct_names(vec![(alex, "x".repeat(5000)), (blake, "Blake".to_owned())]);
        assert_eq!(long[0].1.chars().count(), MAX_NAME);
    }

    /// What validates a check-in is in the packet, though check-ins are tables.
    #[test]
    fn a_validation_of_a_check_in_is_in_the_packet() -> Result<()> {
        let (alex, blake) = (PartnerId::generate(), PartnerId::generate());
        let check_in = shared(
            alex,
            T,
            Body::CheckIn(CheckIn {
                local_date: Some(Calendar::utc().date_of(T)),
                safety: Some(2),
                ..Default::default()
            }),
        );
        let validation = shared(
            blake,
            T + 1,
            Body::Validation(Validation {
                target: Some(check_in.id),
                text: "I hear you".into(),
            }),
        );
        let md = packet_of(alex, blake, &[check_in, validation])?;
        assert!(md.contains("I hear you"), "{md}");
        assert!(md.contains("about Alex's check-in of"), "{md}");
        Ok(())
    }

    #[test]
    fn a_consent_shows_only_the_words_it_was_given_to() -> Result<()> {
        let agreed = "No contact with them";
        let line = consent_line(agreed, agreed)?;
        assert!(
            line.contains("An earlier wording: No contact with them"),
            "{line}"
        );
        // Other words under that hash are not what was agreed to.
        let line = consent_line(agreed, "Contact whenever you like")?;
        assert!(line.contains("An earlier wording"), "{line}");
        assert!(!line.contains("whenever"), "{line}");
        Ok(())
    }
}
