//! The words people read: one place that names every kind, field and value for display, and
//! makes partner text safe to show.
//!
//! English for now. Every label has a stable key (`kind.<kind>`, `field.<kind>.<field>`,
//! `value.<type>.<value>`) so an app can translate it; enum values carry their own `label()`
//! and `label_key()`. Stored names (`not_now`, `check_in_cadence`) never reach a reader.

use crate::model::Kind;

/// `NeedKind` → `need_kind`.
pub fn snake(camel: &str) -> String {
    let mut out = String::with_capacity(camel.len() + 4);
    for (i, c) in camel.chars().enumerate() {
        if c.is_ascii_uppercase() {
            if i > 0 {
                out.push('_');
            }
            out.push(c.to_ascii_lowercase());
        } else {
            out.push(c);
        }
    }
    out
}

/// The key an app translates a kind's label by.
pub fn kind_key(kind: Kind) -> String {
    format!("kind.{}", kind.as_str())
}

/// "a check-in", "an accountability note": a kind's name in a sentence.
pub fn with_article(kind: Kind) -> String {
    let label = kind.label().to_lowercase();
    let article = match label.chars().next() {
        Some('a' | 'e' | 'i' | 'o' | 'u') => "an",
        _ => "a",
    };
    format!("{article} {label}")
}

/// The key an app translates a field's label by.
pub fn field_key(kind: Kind, field: &str) -> String {
    format!("field.{}.{field}", kind.as_str())
}

/// A field's label ("What I did", "Wanted response"); unknown fields are spelled out.
pub fn field_label(kind: Kind, field: &str) -> String {
    let known = match (kind, field) {
        (Kind::AccountabilityNote, "what_i_did") => "What I did",
        (Kind::AccountabilityNote, "impact") => "Its impact, as I understand it",
        (Kind::AccountabilityNote, "amends") => "Amends",
        (Kind::Question, "category") => "About",
        (Kind::Question, "text") => "Question",
        (Kind::Question | Kind::Need | Kind::Commitment, "status") => "Status",
        (Kind::Answer, "question") => "Answers",
        (Kind::Answer | Kind::ProcessingNote | Kind::Reply, "text") => "Words",
        (Kind::Boundary, "area") => "Area",
        (Kind::Boundary, "text") => "Boundary",
        (Kind::Boundary, "review_date") => "Review on",
        (Kind::Boundary, "consents") => "Consents",
        (Kind::Boundary, "wordings") => "Wordings it has had",
        (Kind::DisclosurePreference, "topic") => "Topic",
        (Kind::DisclosurePreference, "preference") => "Wish",
        (Kind::Need, "need_kind") => "Kind of need",
        (Kind::Need, "text") => "Need",
        (Kind::Need, "response") => "Response",
        (Kind::CheckIn, "local_date") => "Day",
        (Kind::CheckIn, "safety") => "Safety",
        (Kind::CheckIn, "trust") => "Trust",
        (Kind::CheckIn, "connection") => "Connection",
        (Kind::CheckIn, "mood_tags") => "Mood",
        (Kind::CheckIn, "need_today") => "Today's need",
        (Kind::CheckIn, "note") => "Note",
        (Kind::CheckIn, "private_fields") => "Kept private",
        (Kind::Share, "feeling") => "Feeling",
        (Kind::Share, "tough_question") => "A tough question",
        (Kind::Reply, "share") => "Replies to",
        (Kind::Reply, "reply_kind") => "Kind of reply",
        (Kind::Commitment, "text") => "Commitment",
        (Kind::Commitment, "cadence") => "How often",
        (Kind::Commitment, "link") => "Serves",
        (Kind::Commitment, "starts_on") => "Starts on",
        (Kind::Commitment, "status_changes") => "Status history",
        (Kind::Commitment, "claims") => "Claims",
        (Kind::Commitment, "views") => "Partner's view",
        (Kind::HonestyMoment, "honesty_kind") => "Kind of honesty",
        (Kind::HonestyMoment, "text") => "What happened",
        (Kind::HonestyMoment, "link") => "About",
        (Kind::HonestyMoment, "timing") => "When to talk about it",
        (Kind::HonestyMoment, "noticed_on") => "Happened on",
        (Kind::Validation, "target") => "Validates",
        (Kind::Validation, "text") => "Words",
        (Kind::TriggerEvent, "cue") => "What set it off",
        (Kind::TriggerEvent, "intensity") => "Intensity (0–10)",
        (Kind::TriggerEvent, "feelings") => "Feelings",
        (Kind::TriggerEvent, "what_helped") => "What helped",
        (Kind::TriggerEvent, "wanted_response") => "Would like",
        (Kind::TriggerEvent, "sharing") => "Shared",
        (Kind::PreAssurance, "occasion") => "Occasion",
        (Kind::PreAssurance, "date") => "Date",
        (Kind::PreAssurance, "plan") => "Plan",
        _ => "",
    };
    if !known.is_empty() {
        return known.to_owned();
    }
    let spaced = field.replace('_', " ");
    let mut chars = spaced.chars();
    match chars.next() {
        Some(first) => first.to_uppercase().chain(chars).collect(),
        None => String::new(),
    }
}

/// The words for a stored enum value of `kind`'s `field` (`None` when the field holds text).
pub fn value_label(kind: Kind, field: &str, stored: &str) -> Option<&'static str> {
    value_word(kind, field, stored).map(|(label, _)| label)
}

/// The words for a stored enum value and the key to translate them by.
pub fn value_word(kind: Kind, field: &str, stored: &str) -> Option<(&'static str, String)> {
    use crate::model::*;
    macro_rules! read {
        ($t:ty) => {
            stored
                .parse::<$t>()
                .ok()
                .map(|v| (v.label(), v.label_key()))
        };
    }
    match (kind, field) {
        (Kind::Question, "status") => read!(QuestionStatus),
        (Kind::Boundary, "area") => read!(BoundaryArea),
        (Kind::DisclosurePreference, "preference") => read!(DisclosureChoice),
        (Kind::Need, "need_kind") => read!(NeedKind),
        (Kind::Need, "status") => read!(NeedStatus),
        (Kind::Reply, "reply_kind") => read!(ReplyKind),
        (Kind::Commitment, "cadence") => read!(Cadence),
        (Kind::Commitment, "status") => read!(CommitmentStatus),
        (Kind::HonestyMoment, "honesty_kind") => read!(HonestyKind),
        (Kind::HonestyMoment, "timing") => read!(HonestyTiming),
        (Kind::TriggerEvent, "wanted_response") => read!(WantedResponse),
        (Kind::TriggerEvent, "sharing") => read!(TriggerSharing),
        (Kind::CheckIn, "private_fields") => read!(CheckInField),
        _ => None,
    }
}

/// Partner text made inert for a terminal: control characters and escape sequences are shown
/// as visible `\u{…}` marks instead of being obeyed, so a share cannot retitle, clear or
/// recolour the other partner's terminal. Newlines and tabs stay.
pub fn terminal_safe(text: &str) -> String {
    inert(text, |c, out| {
        out.push_str(&format!("\\u{{{:x}}}", u32::from(c)))
    })
}

/// JSON text (as serde_json writes it) made as inert as [`terminal_safe`] makes text, and
/// still JSON: what a terminal would obey becomes a `\uXXXX` escape. Such characters only
/// stand inside strings there; the newlines between tokens stay.
pub fn json_safe(json: &str) -> String {
    inert(json, |c, out| {
        let mut units = [0u16; 2];
        for unit in c.encode_utf16(&mut units) {
            out.push_str(&format!("\\u{unit:04x}"));
        }
    })
}

/// `text` with every control character (but newline and tab) and invisible format control
/// written by `escape` instead of as itself. Tag characters (U+E0000–E007F, invisible, and
/// able to spell out a hidden message) stay only where they spell a flag: after the black
/// flag, ending in the cancel tag.
fn inert(text: &str, escape: impl Fn(char, &mut String)) -> String {
    let mut out = String::with_capacity(text.len());
    let mut chars = text.char_indices();
    while let Some((at, c)) = chars.next() {
        match c {
            '\n' | '\t' => out.push(c),
            BLACK_FLAG => {
                out.push(c);
                let flag = flag_tags(&text[at + c.len_utf8()..]);
                for _ in 0..flag {
                    if let Some((_, tag)) = chars.next() {
                        out.push(tag);
                    }
                }
            }
            c if c.is_control() || is_format_control(c) || is_tag(c) => escape(c, &mut out),
            c => out.push(c),
        }
    }
    out
}

const BLACK_FLAG: char = '\u{1f3f4}';
const CANCEL_TAG: char = '\u{e007f}';
/// The longest run of tag letters a flag is spelt with: a region code and a subdivision.
const FLAG_TAGS: usize = 7;

fn is_tag(c: char) -> bool {
    matches!(u32::from(c), 0xE0000..=0xE007F)
}

/// How many characters at the start of `rest` spell a flag's tags (lower-case letters and
/// digits, then the cancel tag), or 0.
fn flag_tags(rest: &str) -> usize {
    for (n, c) in rest.chars().enumerate() {
        if c == CANCEL_TAG {
            return if n == 0 { 0 } else { n + 1 };
        }
        if n == FLAG_TAGS || !matches!(u32::from(c), 0xE0030..=0xE0039 | 0xE0061..=0xE007A) {
            return 0;
        }
    }
    0
}

/// Invisible characters that reorder, hide or break what a reader sees: bidirectional marks,
/// overrides and isolates, zero-width spaces, line and paragraph separators, invisible
/// operators, fillers that draw nothing. Joiners and variation selectors are left alone:
/// emoji and several scripts are spelt with them.
fn is_format_control(c: char) -> bool {
    matches!(
        u32::from(c),
        0x061C
            | 0x115F..=0x1160
            | 0x180E
            | 0x200B
            | 0x200E..=0x200F
            | 0x2028..=0x202E
            | 0x2060..=0x2064
            | 0x2066..=0x206F
            | 0x3164
            | 0xFEFF
            | 0xFFA0
            | 0xFFF9..=0xFFFB
    )
}

/// Escapes text for HTML content and attribute values.
pub fn html_escape(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for c in terminal_safe(text).chars() {
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

/// Partner text as one inline Markdown run: every character Markdown gives meaning to is
/// backslash-escaped, `<` and `>` become entities (no raw HTML), and newlines become `<br>`
/// so a line break in a share cannot start a heading, a list or a table row.
pub fn markdown_inline(text: &str) -> String {
    let safe = terminal_safe(text);
    let mut out = String::with_capacity(safe.len() + 8);
    for (at, c) in safe.char_indices() {
        match c {
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '&' => out.push_str("&amp;"),
            '\n' => out.push_str("<br>"),
            '\r' => {}
            // Text never starts a line here (it follows a label, a bullet or a cell border),
            // so the characters that only matter at a line's start need no escape.
            '\\' | '`' | '*' | '_' | '[' | ']' | '#' | '|' | '~' => {
                out.push('\\');
                out.push(c);
            }
            // GitHub-flavoured Markdown turns bare `scheme://` addresses, `www.` names and
            // e-mail addresses into live links; a packet links to nothing.
            '@' => out.push_str("\\@"),
            ':' if safe[at..].starts_with("://") => out.push_str("\\:"),
            '.' if out
                .as_bytes()
                .get(out.len().saturating_sub(3)..)
                .is_some_and(|tail| tail.eq_ignore_ascii_case(b"www")) =>
            {
                out.push_str("\\.");
            }
            c => out.push(c),
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::{NeedKind, QuestionStatus, WantedResponse};

    #[test]
    fn stored_names_have_words() {
        assert_eq!(QuestionStatus::NotNow.label(), "Not now");
        assert_eq!(NeedKind::CheckInCadence.label(), "How often we check in");
        assert_eq!(WantedResponse::Reassure.label(), "Reassurance");
        assert_eq!(
            NeedKind::CheckInCadence.label_key(),
            "value.need_kind.check_in_cadence"
        );
        assert_eq!(
            field_label(Kind::AccountabilityNote, "what_i_did"),
            "What I did"
        );
        assert_eq!(
            with_article(Kind::AccountabilityNote),
            "an accountability note"
        );
        assert_eq!(with_article(Kind::Share), "a share");
        assert_eq!(kind_key(Kind::CheckIn), "kind.check_in");
    }

    #[test]
    fn escape_sequences_are_shown_not_obeyed() {
        let hostile = "hi\u{1b}]0;owned\u{7}\u{1b}[2J\u{9b}31m\u{202e}there\nok";
        let safe = terminal_safe(hostile);
        assert!(
            !safe.chars().any(|c| c.is_control() && c != '\n'),
            "{safe:?}"
        );
        assert!(safe.contains("\\u{1b}]0;owned\\u{7}"));
        assert!(safe.contains("\\u{202e}"));
        assert!(safe.ends_with("\nok"));
        // Invisible characters a name could hide behind show too.
        for c in ['\u{61c}', '\u{200b}', '\u{2028}', '\u{2060}', '\u{feff}'] {
            let safe = terminal_safe(&format!("Bla{c}ke"));
            assert!(!safe.contains(c), "{c:?} stayed: {safe:?}");
        }
        // Tag characters spell an invisible message outside a flag.
        let hidden = "Blake\u{e0061}\u{e0062}\u{e007f} \u{1f3f4}\u{e0041}\u{e007f}";
        let safe = terminal_safe(hidden);
        assert!(!safe.chars().any(is_tag), "{safe:?}");
        assert!(safe.contains("\\u{e0061}") && safe.contains("\\u{e0041}"));
        // What emoji and scripts are spelt with stays, flags of a region among them.
        for text in [
            "\u{1f3f4}\u{e0067}\u{e0062}\u{e0077}\u{e006c}\u{e0073}\u{e007f} Wales",
            "I \u{2764}\u{fe0f} you",
            "\u{1f469}\u{200d}\u{1f469}",
            "\u{645}\u{200c}\u{6cc}",
        ] {
            assert_eq!(terminal_safe(text), text);
        }
    }

    #[test]
    fn json_stays_json_and_inert() {
        let text = "a\u{1b}[2J\u{9b}b\u{202e}c";
        let json =
            serde_json::to_string_pretty(&serde_json::json!({ "t": text })).unwrap_or_default();
        let safe = json_safe(&json);
        assert!(
            !safe
                .chars()
                .any(|c| (c.is_control() && c != '\n') || c == '\u{202e}'),
            "{safe:?}"
        );
        let back: serde_json::Value = serde_json::from_str(&safe).unwrap_or_default();
        assert_eq!(back["t"], text);
    }

    #[test]
    fn markdown_makes_no_links() {
        let md = markdown_inline("see https://example.com or www.example.com, mail a@b.example");
        assert!(
            !md.contains("https://") && !md.contains("www.") && !md.contains("a@b"),
            "{md}"
        );
        assert!(
            md.contains("https\\://") && md.contains("www\\.") && md.contains("a\\@b"),
            "{md}"
        );
    }

    #[test]
    fn markdown_and_html_get_no_live_markup() {
        let text = "<script>alert(1)</script> | # head\n- item **b**";
        let md = markdown_inline(text);
        assert!(!md.contains("<script>") && !md.contains('\n'));
        assert!(md.contains("\\|") && md.contains("\\#") && md.contains("\\*\\*"));
        let html = html_escape(text);
        assert!(html.starts_with("&lt;script&gt;"));
    }
}
