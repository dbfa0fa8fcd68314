//! The command line, as clap types: what each command and flag means lives here, next to the
//! help text a user reads, so the two cannot drift apart.

use std::path::PathBuf;

use clap::{Args, Parser, Subcommand, ValueEnum};
use mend_core::model::{
    BoundaryArea, Cadence, CheckInField, ClaimStatus, DisclosureChoice, HonestyTiming,
    NeedResponseKind, PartnerView, QuestionStatus, TriggerSharing, WantedResponse,
};

use crate::choice::Choice;

const EXIT_CODES: &str = "\
Exit codes:
  0  done
  1  something failed on this device (storage, file system)
  2  the command line was not understood (or `erase` without --yes)
  3  the journal refused the input: unknown id, bad value, damaged invite
  4  not allowed: the record is your partner's, or the operation is theirs to make
  5  no journal in the home (or one already there, or open in another mend)
  6  the relay could not be reached; edits are kept and sync later
  7  the relay answered with an error: key refused, space gone, relay failing (disk full)
  8  journal.db is damaged; it is left as it was (see the message for how to recover)
  9  something from the relay failed its checks and was not applied (sync heals it later)
 10  the relay withheld or lost changes (a gap, a relay restored from a backup)
 11  the relay sent a change twice; the copy was ignored
 12  the relay is not trusted: its certificate failed checks or does not match the pin, or
     its URL is clear-text http:// to another machine (act on the message; retrying won't help)
 13  the pairing stopped: the invite was used or expired, the join was declined, or a short
     code was read wrong (it no longer works: make a new one)
 14  the shared journal was erased (from another of your devices, or by your partner, whose
     erase marker reached this device): the message says who and when; reading works, writes
     to it are refused
 15  this device was removed from the journal: it no longer syncs

Relays: https:// (verified against the public roots, or the --relay-pin an invite carries).
Clear-text http:// is for a relay on this machine only; --insecure-cleartext-relay allows it
elsewhere, for development: anyone on the network can then take the relay token and erase,
prune or fill the journal's spaces at the relay.

Dates are YYYY-MM-DD. \"Today\" and weeks follow the time zone in MEND_TZ (an IANA name such
as Australia/Sydney), else this machine's; weeks start on Monday unless MEND_WEEK_START names
another day.
Ids: the full id `mend add` prints, or its last 8 characters as `mend list` shows them.";

/// mend: a shared journal for couples rebuilding trust, in the terminal.
///
/// Each home (--home) holds one device's replica and keys: two homes on one machine are two
/// partners' phones.
#[derive(Debug, Parser)]
#[command(name = "mend", version, after_help = EXIT_CODES, max_term_width = 100)]
pub struct Cli {
    /// The directory holding this device's journal and keys.
    #[arg(long, env = "MEND_HOME", global = true, value_name = "DIR")]
    pub home: Option<PathBuf>,

    /// The relay's pin, sha256/<base64 of the SHA-256 of its certificate's public key>, for a
    /// self-hosted relay no public CA signed. Kept in the keyring (and passed on in invites).
    #[arg(long, env = "MEND_RELAY_PIN", global = true, value_name = "PIN", value_parser = parse_pin)]
    pub relay_pin: Option<mend_core::crypto::RelayPin>,

    /// INSECURE, for development: allow clear-text http:// to a relay that is not on this
    /// machine. Anyone on the network can then take the relay token and erase the journal's
    /// copy at the relay or stop it from syncing.
    #[arg(long, global = true)]
    pub insecure_cleartext_relay: bool,

    /// Log to stderr (-v info, -vv debug, -vvv trace). Journal text is never logged.
    #[arg(short, long, action = clap::ArgAction::Count, global = true)]
    pub verbose: u8,

    /// What to do.
    #[command(subcommand)]
    pub command: Command,
}

/// What `devices` can do besides listing.
#[derive(Debug, Subcommand)]
pub enum DevicesAction {
    /// Shut one of your own devices (a lost phone) out of the journal: it reads nothing written
    /// from then on, and what it writes reaches nobody. Your other devices and your partner's
    /// move to new keys as they next sync.
    Remove {
        /// The device: its id as `mend devices` shows it (the last 8 characters will do) or
        /// its name.
        device: String,
        /// Yes, remove it.
        #[arg(long)]
        yes: bool,
    },
}

/// What `rejoin` does; without one, it shows the asks.
#[derive(Debug, Subcommand)]
pub enum RejoinAction {
    /// Ask to let a new device in as your partner, who lost every device. Their devices show
    /// the ask and can cancel it; `mend invite --rejoin` works once it has stood for the wait
    /// (72 hours; `MEND_REJOIN_WAIT` sets it in seconds) uncancelled.
    Ask {
        /// Longest time to wait for the relay, in seconds.
        #[arg(long, default_value_t = 30, value_name = "SECONDS")]
        timeout: u64,
    },
    /// Cancel your partner's ask to let a new device in as you: you still have this one.
    Cancel {
        /// Longest time to wait for the relay, in seconds.
        #[arg(long, default_value_t = 30, value_name = "SECONDS")]
        timeout: u64,
    },
}

/// Every command.
#[derive(Debug, Subcommand)]
pub enum Command {
    /// Create a new journal in the home, syncing through the relay at URL.
    Init {
        /// The relay, e.g. https://relay.example (or http://127.0.0.1:8787 on this machine).
        #[arg(long, value_name = "URL")]
        relay: String,
        /// Your name, as your partner will see it.
        #[arg(long)]
        name: String,
        /// What this device is called in `mend devices` (both partners see it; at most 64
        /// bytes). Default: "mend on <this machine's short hostname>".
        #[arg(long, value_name = "NAME")]
        device_name: Option<String>,
    },
    /// Invite your partner (or another device of yours): show an invite, with a QR code to
    /// scan, or a short code to read out on a call, then wait for them to join and ask you
    /// to accept them. An invite works once, for 10 minutes, and carries no key.
    Invite {
        /// Print the invite alone on the first line (for scripts), no QR code.
        #[arg(long)]
        plain: bool,
        /// A short code to read out (a number and two words) instead of an invite.
        #[arg(long)]
        code: bool,
        /// An invite for another device of yours instead of your partner.
        #[arg(long, conflicts_with = "rejoin")]
        device: bool,
        /// An invite for your partner who lost every device, to rejoin on a new one: all
        /// their old devices are shut out, and the journal moves to new secrets first. Works
        /// once `mend rejoin ask` has stood for the wait uncancelled. Always asks before
        /// letting anyone in.
        #[arg(long, conflicts_with = "yes")]
        rejoin: bool,
        /// Accept whoever joins without asking (for scripts: then anyone who sees the invite
        /// first gets in).
        #[arg(long)]
        yes: bool,
    },
    /// Join a journal with the invite or short code your partner shows, and fetch it.
    Join {
        /// The invite (starts with MEND4-) or the short code (as in 42-olive-harbor); `-`
        /// reads it from standard input, so it stays out of the process list and shell history.
        code: String,
        /// Your name, as your partner will see it (ignored when joining as another device).
        #[arg(long)]
        name: Option<String>,
        /// The relay, for a short code (an invite names its own), e.g. https://relay.example.
        #[arg(long, env = "MEND_RELAY", value_name = "URL")]
        relay: Option<String>,
        /// Longest time to wait for the inviting device and then the first sync, in seconds.
        #[arg(long, default_value_t = 120, value_name = "SECONDS")]
        timeout: u64,
        /// What this device is called in `mend devices` (both partners see it; at most 64
        /// bytes). Default: "mend on <this machine's short hostname>".
        #[arg(long, value_name = "NAME")]
        device_name: Option<String>,
    },
    /// Every device of both partners, with when the relay last served each.
    ///
    /// Whose it is, its name, when it was added, and when the relay last served it (to the
    /// hour; "unknown" when the relay cannot be reached); this device is marked.
    Devices {
        /// Remove one of your devices instead of listing them.
        #[command(subcommand)]
        action: Option<DevicesAction>,
        /// Longest time to ask the relay, in seconds.
        #[arg(long, default_value_t = 10, value_name = "SECONDS")]
        timeout: u64,
        /// JSON for scripts.
        #[arg(long)]
        json: bool,
    },
    /// Add a record and print its id.
    #[command(after_help = ADD_HELP)]
    Add {
        /// The kind of record, e.g. honesty-moment, boundary, check-in.
        #[arg(value_name = "KIND", value_parser = parse_kind)]
        record_kind: mend_core::Kind,
        /// The record's main text (see below for which field that is); `-` reads it from
        /// standard input, out of the shell's history.
        text: Option<String>,
        #[command(flatten)]
        fields: Fields,
    },
    /// Change fields of a record (yours, or a boundary of either partner).
    #[command(after_help = ADD_HELP)]
    Edit {
        /// The record.
        id: String,
        /// New main text (`-`: from standard input).
        text: Option<String>,
        #[command(flatten)]
        fields: Fields,
    },
    /// Reply to a share.
    Reply {
        /// The share.
        share: String,
        /// The reply (`-`: from standard input).
        text: Option<String>,
        /// How you reply: reflect, validate, ask, apologise or pause.
        #[arg(long, default_value = "reflect", value_parser = Choice::new(mend_core::model::ReplyKind::ALL))]
        kind: mend_core::model::ReplyKind,
    },
    /// Validate a shared record: tell your partner it makes sense.
    Validate {
        /// The record.
        target: String,
        /// Your words (`-`: from standard input).
        text: Option<String>,
    },
    /// Answer a question.
    Answer {
        /// The question.
        question: String,
        /// The answer (`-`: from standard input).
        text: String,
    },
    /// Give your consent to a boundary's current wording.
    Consent {
        /// The boundary.
        boundary: String,
        /// agree, decline or revisit.
        #[arg(value_enum)]
        choice: ConsentChoice,
    },
    /// Claim your follow-through on a commitment for a day (or week).
    Claim {
        /// The commitment.
        commitment: String,
        /// How it went: done, partial or missed.
        #[arg(value_parser = Choice::new(ClaimStatus::ALL))]
        status: ClaimStatus,
        /// The day (a weekly commitment counts the week of that day). Default: today.
        #[arg(long, value_name = "DATE")]
        date: Option<String>,
        /// A word about it (`-`: from standard input).
        #[arg(long, default_value = "")]
        note: String,
    },
    /// Say how you saw your partner's follow-through on their commitment.
    Confirm {
        /// The commitment.
        commitment: String,
        /// What you saw: confirmed, did-not-notice or disagree.
        #[arg(value_parser = Choice::new(PartnerView::ALL))]
        view: PartnerView,
        /// The day (a weekly commitment counts the week of that day). Default: today.
        #[arg(long, value_name = "DATE")]
        date: Option<String>,
        /// A word about it (`-`: from standard input).
        #[arg(long, default_value = "")]
        note: String,
    },
    /// Respond to your partner's need.
    Respond {
        /// The need.
        need: String,
        /// How you receive it: receptive, reassured or lets-talk.
        #[arg(value_parser = Choice::new(NeedResponseKind::ALL))]
        response: NeedResponseKind,
        /// A word with it (`-`: from standard input).
        #[arg(long, default_value = "")]
        note: String,
    },
    /// Set a question's status (asker: open, withdrawn; partner: not-now; either: answered).
    QuestionStatus {
        /// The question.
        question: String,
        /// Its new status: open, answered, not-now or withdrawn.
        #[arg(value_parser = Choice::new(QuestionStatus::ALL))]
        status: QuestionStatus,
    },
    /// Share one of your private processing notes with your partner (cannot be undone).
    ShareNote {
        /// The note.
        id: String,
    },
    /// Remove one of your records (a placeholder keeps threads whole).
    Remove {
        /// The record.
        id: String,
    },
    /// List records, newest first.
    List {
        /// Only these kinds (repeat, or separate with commas).
        #[arg(long, value_parser = parse_kind, value_delimiter = ',')]
        kind: Vec<mend_core::Kind>,
        /// Only yours.
        #[arg(long, conflicts_with = "partner")]
        mine: bool,
        /// Only your partner's.
        #[arg(long)]
        partner: bool,
        /// Include removed placeholders.
        #[arg(long)]
        removed: bool,
        /// Only what is in the couple's shared journal (leaves out your private records).
        #[arg(long)]
        shared: bool,
        /// At most this many records (default: all).
        #[arg(long)]
        limit: Option<usize>,
        /// JSON for scripts.
        #[arg(long)]
        json: bool,
    },
    /// Show one record with everything attached to it.
    Show {
        /// The record.
        id: String,
        /// JSON for scripts.
        #[arg(long)]
        json: bool,
    },
    /// Weekly progress: commitment consistency, check-in averages, honesty moments.
    Progress {
        /// How many whole weeks, ending with this one (1 to 520).
        #[arg(long, default_value_t = 8, value_parser = clap::value_parser!(u32).range(1..=520))]
        weeks: u32,
        /// JSON for scripts.
        #[arg(long)]
        json: bool,
    },
    /// Sync with the relay once: send your changes, fetch your partner's.
    Sync {
        /// Longest time to try, in seconds.
        #[arg(long, default_value_t = 30, value_name = "SECONDS")]
        timeout: u64,
    },
    /// Stay connected and print your partner's changes as they arrive (Ctrl-C to stop).
    Watch {
        /// Stop by itself after this many seconds.
        #[arg(long = "for", value_name = "SECONDS")]
        duration: Option<u64>,
    },
    /// Write the therapist packet: records and weekly progress of a date range.
    Export {
        /// md (Markdown) or html (one self-contained page).
        #[arg(long, value_enum)]
        format: ExportFormat,
        /// The file to write.
        #[arg(long, value_name = "FILE")]
        out: PathBuf,
        /// First day included. Default: the day of the oldest record.
        #[arg(long, value_name = "DATE")]
        from: Option<String>,
        /// Last day included. Default: today.
        #[arg(long, value_name = "DATE")]
        to: Option<String>,
        /// Only these kinds (repeat, or separate with commas).
        #[arg(long, value_parser = parse_kind, value_delimiter = ',')]
        kind: Vec<mend_core::Kind>,
        /// Replace FILE if it exists.
        #[arg(long)]
        force: bool,
    },
    /// What waits on you today: your check-in, claims due, your partner's claims to confirm,
    /// questions and needs to answer, boundaries to consent to or review.
    Today {
        /// JSON for scripts.
        #[arg(long)]
        json: bool,
    },
    /// Settle a field set differently on two devices, keeping one of the values `show` lists.
    Settle {
        /// The record.
        id: String,
        /// The field, as `show` names it.
        field: String,
        /// The number of the value to keep, as `show` lists them (1 is the one shown).
        choice: usize,
    },
    /// Sync status from this device's records: pending changes, last sync, problems.
    Status {
        /// Also try a sync now to see whether the relay answers.
        #[arg(long)]
        check: bool,
        /// Longest time --check tries, in seconds.
        #[arg(long, default_value_t = 30, value_name = "SECONDS")]
        timeout: u64,
        /// JSON for scripts.
        #[arg(long)]
        json: bool,
    },
    /// Asks to rejoin: your partner lost every device and wants in on a new one, or they asked
    /// to let a new device in as you. Without an action, shows what stands.
    Rejoin {
        #[command(subcommand)]
        action: Option<RejoinAction>,
    },
    /// Start the journal over without its history: removed records keep their place and lose
    /// their words on every device (each moves when it next syncs).
    Forget {
        /// Yes, forget. The words cannot be brought back.
        #[arg(long)]
        yes: bool,
        /// Longest time to wait for the relay, in seconds.
        #[arg(long, default_value_t = 30, value_name = "SECONDS")]
        timeout: u64,
    },
    /// Erase the journal at the relay (for both partners) and this device's copy.
    Erase {
        /// Yes, erase it. Nothing can bring it back.
        #[arg(long)]
        yes: bool,
    },
}

/// A consent as the user says it.
#[derive(Clone, Copy, Debug, ValueEnum)]
pub enum ConsentChoice {
    /// Agree to the current wording.
    #[value(alias = "agreed")]
    Agree,
    /// Decline it.
    #[value(alias = "declined")]
    Decline,
    /// Ask to talk about it again (beats your partner's agreement).
    Revisit,
}

/// Export formats.
#[derive(Clone, Copy, Debug, ValueEnum)]
pub enum ExportFormat {
    /// Markdown.
    #[value(alias = "markdown")]
    Md,
    /// One HTML page.
    Html,
}

const ADD_HELP: &str = "\
The main text and the flags each kind takes:
  accountability-note  TEXT = what I did   --impact TEXT  --amends ID (a commitment; repeat)
  question             TEXT = question     --category TEXT
  answer               TEXT = answer       --question ID
  processing-note      TEXT = note         --private (default) | --shared
  boundary             TEXT = wording      --area communication|transparency|space|contact|disclosure
                                           --review-date DATE
  disclosure-preference TEXT = topic       --preference want-details|not-now|no
  need                 TEXT = need         --kind check-in-cadence|therapy|honesty-on-topic|alone-time|other
                                           --status open|met|withdrawn
  check-in             TEXT = note         --date DATE (default today)  --safety --trust --connection 0-10
                                           --mood TAG,…  --need-today TEXT  --note TEXT
                                           --private FIELD,… (safety,trust,connection,mood-tags,need-today,note; none)
  share                TEXT = feeling      --tough-question
  reply                TEXT = reply        --share ID  --kind reflect|validate|ask|apologise|pause
  commitment           TEXT = commitment   --cadence daily|weekly  --link ID (a boundary or need)
                                           --status active|paused|done|retired  --date DATE (first day due)
  honesty-moment       TEXT = what happened --kind volunteered-truth|promise-kept|feeling-shared|hard-answer
                                           --link ID  --timing share-now|weekly-talk  --date DATE (when)
  validation           TEXT = words        --target ID
  trigger-event        TEXT = cue          --intensity 0-10  --feeling TEXT,…  --what-helped TEXT
                                           --wants space|reassure|talk-later  --sharing private|signal|full
  pre-assurance        TEXT = plan         --occasion TEXT  --date DATE

Defaults when adding: need --kind other; reply --kind reflect; commitment --cadence daily;
honesty-moment --kind volunteered-truth --timing share-now; trigger-event --sharing private.
A boundary needs --area, a disclosure preference --preference. Values may be written
kebab-case or snake_case. On edit, `none` clears a date or link and an empty string clears an
optional text.";

/// Every field flag of every kind; `add` and `edit` reject the ones a kind does not have.
#[derive(Args, Clone, Debug, Default)]
pub struct Fields {
    /// Kind-specific type (need, reply, honesty moment).
    #[arg(long, help_heading = "Fields")]
    pub kind: Option<String>,
    /// Status (need, commitment).
    #[arg(long, help_heading = "Fields")]
    pub status: Option<String>,
    /// A boundary's area.
    #[arg(long, help_heading = "Fields", value_parser = Choice::new(BoundaryArea::ALL))]
    pub area: Option<BoundaryArea>,
    /// A boundary's review date.
    #[arg(long, help_heading = "Fields", value_name = "DATE")]
    pub review_date: Option<String>,
    /// A disclosure preference.
    #[arg(long, help_heading = "Fields", value_parser = Choice::new(DisclosureChoice::ALL))]
    pub preference: Option<DisclosureChoice>,
    /// An accountability note's impact.
    #[arg(long, help_heading = "Fields")]
    pub impact: Option<String>,
    /// Commitments an accountability note makes amends with (repeat, or commas).
    #[arg(
        long,
        help_heading = "Fields",
        value_name = "ID",
        value_delimiter = ','
    )]
    pub amends: Vec<String>,
    /// A question's category.
    #[arg(long, help_heading = "Fields")]
    pub category: Option<String>,
    /// The question an answer answers.
    #[arg(long, help_heading = "Fields", value_name = "ID")]
    pub question: Option<String>,
    /// The share a reply replies to.
    #[arg(long, help_heading = "Fields", value_name = "ID")]
    pub share: Option<String>,
    /// The record a validation validates.
    #[arg(long, help_heading = "Fields", value_name = "ID")]
    pub target: Option<String>,
    /// A related record (commitment: a boundary or need; honesty moment: any).
    #[arg(long, help_heading = "Fields", value_name = "ID")]
    pub link: Option<String>,
    /// A commitment's cadence.
    #[arg(long, help_heading = "Fields", value_parser = Choice::new(Cadence::ALL))]
    pub cadence: Option<Cadence>,
    /// When an honesty moment is meant to be seen.
    #[arg(long, help_heading = "Fields", value_parser = Choice::new(HonestyTiming::ALL))]
    pub timing: Option<HonestyTiming>,
    /// A check-in's date, a commitment's first day, the day an honesty moment happened, or a
    /// pre-assurance's date.
    #[arg(long, help_heading = "Fields", value_name = "DATE")]
    pub date: Option<String>,
    /// Check-in: feeling safe, 0–10.
    #[arg(long, help_heading = "Fields")]
    pub safety: Option<u8>,
    /// Check-in: trust, 0–10.
    #[arg(long, help_heading = "Fields")]
    pub trust: Option<u8>,
    /// Check-in: connection, 0–10.
    #[arg(long, help_heading = "Fields")]
    pub connection: Option<u8>,
    /// Check-in: mood tags (repeat, or commas).
    #[arg(
        long,
        help_heading = "Fields",
        value_name = "TAG",
        value_delimiter = ','
    )]
    pub mood: Vec<String>,
    /// Check-in: today's need.
    #[arg(long, help_heading = "Fields")]
    pub need_today: Option<String>,
    /// Check-in: a note.
    #[arg(long, help_heading = "Fields")]
    pub note: Option<String>,
    /// Keep private: check-in fields (comma-separated, or `none`); alone for a processing note.
    #[arg(long, help_heading = "Fields", num_args = 0..=1, value_name = "FIELDS")]
    pub private: Option<Option<String>>,
    /// Share a processing note with your partner.
    #[arg(long, help_heading = "Fields")]
    pub shared: bool,
    /// A share: flags a tough question.
    #[arg(long, help_heading = "Fields", num_args = 0..=1, default_missing_value = "true")]
    pub tough_question: Option<bool>,
    /// A trigger's intensity, 0–10.
    #[arg(long, help_heading = "Fields")]
    pub intensity: Option<u8>,
    /// A trigger's feelings (repeat, or commas).
    #[arg(long, help_heading = "Fields", value_delimiter = ',')]
    pub feeling: Vec<String>,
    /// What helped with a trigger.
    #[arg(long, help_heading = "Fields")]
    pub what_helped: Option<String>,
    /// The response a triggered partner would like.
    #[arg(long, help_heading = "Fields", value_parser = Choice::new(WantedResponse::ALL))]
    pub wants: Option<WantedResponse>,
    /// How much of a trigger your partner sees.
    #[arg(long, help_heading = "Fields", value_parser = Choice::new(TriggerSharing::ALL))]
    pub sharing: Option<TriggerSharing>,
    /// A pre-assurance's occasion.
    #[arg(long, help_heading = "Fields")]
    pub occasion: Option<String>,
}

/// Check-in fields as written after `--private`.
pub fn parse_private_fields(s: &str) -> Result<Vec<CheckInField>, String> {
    if s.trim().eq_ignore_ascii_case("none") {
        return Ok(Vec::new());
    }
    s.split(',')
        .filter(|p| !p.trim().is_empty())
        .map(|p| Choice::new(CheckInField::ALL).parse_str(p))
        .collect()
}

fn parse_pin(s: &str) -> Result<mend_core::crypto::RelayPin, String> {
    mend_core::crypto::RelayPin::parse(s).map_err(|e| e.to_string())
}

fn parse_kind(s: &str) -> Result<mend_core::Kind, String> {
    s.parse().map_err(|_| {
        let kinds: Vec<String> = mend_core::Kind::ALL
            .iter()
            .map(|k| k.as_str().replace('_', "-"))
            .collect();
        format!("unknown record kind; one of: {}", kinds.join(", "))
    })
}

#[cfg(test)]
mod tests {
    use clap::CommandFactory;

    use super::*;

    #[test]
    fn the_command_line_is_well_formed() {
        Cli::command().debug_assert();
    }

    #[test]
    fn private_check_in_fields_read_in_either_case() {
        assert_eq!(
            parse_private_fields("note,need-today,mood_tags"),
            Ok(vec![
                CheckInField::Note,
                CheckInField::NeedToday,
                CheckInField::MoodTags
            ])
        );
        assert_eq!(parse_private_fields("none"), Ok(Vec::new()));
        assert!(parse_private_fields("note,feelings").is_err());
    }
}
