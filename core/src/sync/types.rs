//! What goes in and out of the engine.

use mend_protocol::{Ack, Chunk, ErrorCode, Page, Push, Rollup, RollupPush, Sizes, Snapshot};
use serde::{Deserialize, Serialize};

use crate::{ids::RecordId, store::Space};

/// A request for the transport to carry to the relay.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Request {
    /// Create the space (idempotent with the same token).
    Create {
        /// Which space.
        space: Space,
    },
    /// Push one batch.
    Push {
        /// Which space.
        space: Space,
        /// The sealed batch.
        push: Push,
    },
    /// Pull a page after a cursor.
    Pull {
        /// Which space.
        space: Space,
        /// The cursor.
        after: u64,
        /// Which pull this is (never sent to the relay): the transport hands it back with the
        /// answer, so a late or copied answer to an earlier pull is told apart.
        id: u64,
        /// Rollups may stand in for the chunks they cover (`rollups=true`).
        rollups: bool,
        /// Chunks below the relay's snapshot are wanted while it holds them (`pruned=true`):
        /// the tail was found cheaper than the snapshot.
        pruned: bool,
    },
    /// Open (or reopen) the live subscription after a cursor.
    Subscribe {
        /// Which space.
        space: Space,
        /// The cursor.
        after: u64,
        /// Rollups may stand in for the chunks they cover in the backlog.
        rollups: bool,
    },
    /// Store a rollup of this device's chunks (over HTTP, live or not).
    PushRollup {
        /// Which space.
        space: Space,
        /// The sealed rollup.
        rollup: RollupPush,
    },
    /// Ask what catching up from a cursor would cost: the snapshot or the tail.
    Sizes {
        /// Which space.
        space: Space,
        /// The cursor.
        after: u64,
    },
    /// Fetch the relay's snapshot.
    GetSnapshot {
        /// Which space.
        space: Space,
    },
    /// Store a snapshot.
    PutSnapshot {
        /// Which space.
        space: Space,
        /// The sealed snapshot.
        snapshot: Snapshot,
    },
}

impl Request {
    /// The space the request is about.
    pub fn space(&self) -> Space {
        match self {
            Request::Create { space }
            | Request::Push { space, .. }
            | Request::Pull { space, .. }
            | Request::Subscribe { space, .. }
            | Request::PushRollup { space, .. }
            | Request::Sizes { space, .. }
            | Request::GetSnapshot { space }
            | Request::PutSnapshot { space, .. } => *space,
        }
    }
}

/// Why a request did not succeed.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Failure {
    /// The relay could not be reached or timed out; try again later.
    Unreachable,
    /// The relay answered but failed (a `5xx`: disk full, an internal error); try again later.
    RelayError {
        /// The HTTP status.
        status: u16,
    },
    /// The cursor is below the relay's snapshot: fetch it first.
    Pruned,
    /// The relay refused the token.
    Unauthorized,
    /// The space no longer exists at the relay (erased).
    SpaceGone,
    /// The relay refused the request (a limit, bad input); `retry_after_ms` > 0 means try again.
    Refused {
        /// The relay's code.
        code: ErrorCode,
        /// When to retry, if at all.
        retry_after_ms: u64,
    },
    /// The device refused the relay before sending anything: its certificate failed the
    /// checks or does not match the pin, or its URL is clear text to another machine.
    /// Retried later all the same: a captive portal's sign-in or the operator's fix ends it.
    Untrusted {
        /// Why, for the person to act on (never a secret).
        reason: String,
    },
}

/// The relay's answer to a request, or a live message.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Response {
    /// The space exists.
    Created {
        /// Which space.
        space: Space,
        /// The relay made it just now (`201`); for a space this device already synced, the
        /// relay lost it.
        new: bool,
    },
    /// A push is durable.
    Acked {
        /// Which space.
        space: Space,
        /// The acknowledgement.
        ack: Ack,
    },
    /// A page of a pull.
    Page {
        /// Which space.
        space: Space,
        /// The cursor the pull asked from.
        after: u64,
        /// The `id` of the pull it answers.
        id: u64,
        /// The page.
        page: Page,
    },
    /// One chunk on the live subscription (backlog or new).
    Chunk {
        /// Which space.
        space: Space,
        /// The chunk.
        chunk: Chunk,
    },
    /// One rollup in the live backlog.
    Rollup {
        /// Which space.
        space: Space,
        /// The rollup.
        rollup: Rollup,
    },
    /// Chunks (and rollups) the live subscription delivered back to back (a backlog, or a
    /// burst), in increasing relay order: applied in one merge and one commit, as a page is.
    Chunks {
        /// Which space.
        space: Space,
        /// The chunks and rollups, each after the one before it.
        entries: Vec<Entry>,
    },
    /// A rollup was stored (or had been).
    RollupStored {
        /// Which space.
        space: Space,
        /// The last device sequence it stands for.
        last_seq: u64,
    },
    /// What catching up would cost.
    Sizes {
        /// Which space.
        space: Space,
        /// The relay's answer.
        sizes: Sizes,
    },
    /// The live backlog has been sent.
    UpToDate {
        /// Which space.
        space: Space,
        /// The relay's head.
        head: u64,
        /// The relay's mark for the chunk at the cursor the subscription asked from.
        after_mark: Option<[u8; 16]>,
        /// The relay's mark for the chunk at `head`.
        head_mark: Option<[u8; 16]>,
    },
    /// The relay's snapshot, if it has one.
    Snapshot {
        /// Which space.
        space: Space,
        /// The snapshot.
        snapshot: Option<Snapshot>,
    },
    /// A snapshot was stored.
    SnapshotStored {
        /// Which space.
        space: Space,
        /// What it covers.
        covers: u64,
    },
    /// A request failed.
    Failed {
        /// Which space.
        space: Space,
        /// Why.
        failure: Failure,
    },
}

impl Response {
    /// The space the answer is about.
    pub fn space(&self) -> Space {
        match self {
            Response::Created { space, .. }
            | Response::Acked { space, .. }
            | Response::Page { space, .. }
            | Response::Chunk { space, .. }
            | Response::Rollup { space, .. }
            | Response::Chunks { space, .. }
            | Response::RollupStored { space, .. }
            | Response::Sizes { space, .. }
            | Response::UpToDate { space, .. }
            | Response::Snapshot { space, .. }
            | Response::SnapshotStored { space, .. }
            | Response::Failed { space, .. } => *space,
        }
    }
}

/// What the relay serves after a cursor: a chunk, or a rollup in place of chunks.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Entry {
    /// One chunk.
    Chunk(Chunk),
    /// A rollup of one device's chunks.
    Rollup(Rollup),
}

impl Entry {
    /// Its place in the relay's log.
    pub fn relay_seq(&self) -> u64 {
        match self {
            Entry::Chunk(c) => c.relay_seq,
            Entry::Rollup(r) => r.relay_seq,
        }
    }

    /// Its payload's size.
    pub fn payload_len(&self) -> usize {
        match self {
            Entry::Chunk(c) => c.payload.len(),
            Entry::Rollup(r) => r.payload.len(),
        }
    }

    /// A page's chunks and rollups in relay order.
    pub fn of_page(page: &Page) -> Vec<Entry> {
        let mut entries: Vec<Entry> = page
            .chunks
            .iter()
            .cloned()
            .map(Entry::Chunk)
            .chain(page.rollups.iter().cloned().map(Entry::Rollup))
            .collect();
        entries.sort_by_key(Entry::relay_seq);
        entries
    }
}

/// What drives the engine.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Event {
    /// Start a round now (sync now, the app came to the foreground, the socket connected).
    Start,
    /// A local edit left new changes to push.
    LocalEdit,
    /// Time passed; the engine checks timeouts and retry times.
    Tick,
    /// The live connection dropped.
    Disconnected,
    /// The relay answered.
    Response(Response),
}

/// What the engine asks its driver to do.
#[derive(Clone, Debug, PartialEq)]
pub enum Action {
    /// Carry this request to the relay.
    Send(Request),
    /// These records changed because of what was pulled.
    Changed {
        /// Which space.
        space: Space,
        /// The records.
        records: Vec<RecordId>,
    },
    /// The status changed.
    Status(SyncStatus),
}

/// Something the app should show: sync goes on, but this was not applied or not possible.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case", tag = "kind")]
pub enum ProblemKind {
    /// A chunk failed authentication (altered, or moved from another space or device).
    Tampered {
        /// Its relay sequence.
        relay_seq: u64,
        /// The device it claims to come from (hex; empty in problems kept by older versions).
        #[serde(default)]
        device: String,
    },
    /// A device's chunks skipped a number: something in between was withheld.
    Gap {
        /// The device (hex).
        device: String,
        /// The number expected.
        expected: u64,
        /// The number that came.
        got: u64,
    },
    /// A device's chunk came again under a number already seen.
    Replay {
        /// The device (hex).
        device: String,
        /// The repeated number.
        device_seq: u64,
    },
    /// An authentic chunk that the document refused to merge (malformed, or reusing another
    /// change's identity). Its number is consumed; a later snapshot heals what it held.
    Unmergeable {
        /// The device (hex).
        device: String,
        /// Its number.
        device_seq: u64,
        /// Its relay sequence.
        relay_seq: u64,
    },
    /// The relay went back to an earlier state (restored from a backup, lost data) or lied
    /// about its head. This device pushes its whole document again and reads from the start.
    RelayRewound {
        /// Where this device had read to.
        cursor: u64,
        /// What the relay claimed.
        head: u64,
    },
    /// Chunks refused up to this relay sequence were not healed by the relay's snapshot,
    /// fetched once since: they count as consumed and this device snapshots again. (A real
    /// chunk's author still holds what it carried; garbage no device accepts would otherwise
    /// stop every device from snapshotting for good.)
    Unhealed {
        /// The last refused chunk's relay sequence.
        up_to: u64,
    },
    /// The relay gave again, in the same round, an answer that moves this device to a new id
    /// or makes it fetch the snapshot again (`rewind`, `seq_conflict`, `pruned`): it was not
    /// followed; the device waits, longer each time, and asks again.
    RelayLoop {
        /// Which answer.
        answer: String,
    },
    /// The relay's snapshot failed its checks or could not be read, or the relay had none
    /// where it needed one.
    BadSnapshot {
        /// What it claimed to cover (0 when there was none).
        covers: u64,
    },
    /// The relay holds another payload under one of this device's numbers: this device's
    /// database went back in time (a power cut, a restored backup, a copy). It moved to a
    /// new device id and pushes again.
    SeqConflict {
        /// The number in conflict.
        device_seq: u64,
    },
    /// The relay answered with an error of its own (a `5xx`, such as a full disk).
    RelayError {
        /// The HTTP status.
        status: u16,
    },
    /// The relay refused this device's token.
    Unauthorized,
    /// The relay no longer holds the space (it says it was erased, but no partner's erase
    /// marker confirms it here: a relay that lost it, or lies). Sync of the space stops;
    /// writes stay allowed and are kept.
    SpaceGone,
    /// The relay retired the space: the journal moved to new secrets without this device (it
    /// was removed, or stayed away longer than an old epoch is kept). Sync of the space stops;
    /// the device is paired again to come back.
    Retired,
    /// The shared journal was erased by a partner (the relay keeps a tombstone): `words` says
    /// who and when, in plain words. Sync of the space stops for good; reading still works.
    Erased {
        /// What to tell the person.
        words: String,
    },
    /// The relay refused a request (for example, over quota).
    Refused {
        /// The relay's error code name.
        code: String,
    },
    /// A change (or a snapshot holding one) that a partner's device could not have made
    /// through the app: signed by another device, consenting for the other partner, editing
    /// what is not theirs. Refused by every device, with what depends on it.
    Forged {
        /// The partner whose device signed it (empty when unknown).
        partner: String,
        /// The device's key, short (8 hex digits).
        device: String,
        /// What it tried ([`crate::Breach::code`]).
        breach: String,
        /// The same in words, naming the device ("a change from Blake's device 3f2a9c1e
        /// tried to consent for you and was refused"); never any journal text.
        words: String,
    },
}

impl ProblemKind {
    /// The problem as a log line may carry it: without the words a person is told, which can
    /// name a partner (a name is the partner's to choose).
    pub fn without_words(&self) -> ProblemKind {
        match self {
            Self::Erased { .. } => Self::Erased {
                words: String::new(),
            },
            Self::Forged {
                partner,
                device,
                breach,
                ..
            } => Self::Forged {
                partner: partner.clone(),
                device: device.clone(),
                breach: breach.clone(),
                words: String::new(),
            },
            other => other.clone(),
        }
    }

    /// Whether this device cannot sync this space at all until someone acts (a revoked key,
    /// an erased space), as against a problem sync works around.
    pub fn is_fatal(&self) -> bool {
        matches!(
            self,
            Self::Unauthorized | Self::SpaceGone | Self::Retired | Self::Erased { .. }
        )
    }

    /// The outcome a person or script acts on, one per cause.
    pub fn outcome(&self) -> Outcome {
        match self {
            Self::Tampered { .. }
            | Self::Unmergeable { .. }
            | Self::BadSnapshot { .. }
            | Self::Unhealed { .. }
            | Self::Forged { .. } => Outcome::Tampered,
            Self::Gap { .. } | Self::RelayRewound { .. } | Self::SeqConflict { .. } => Outcome::Gap,
            Self::Replay { .. } => Outcome::Replay,
            Self::Unauthorized
            | Self::SpaceGone
            | Self::Retired
            | Self::Erased { .. }
            | Self::Refused { .. }
            | Self::RelayError { .. }
            | Self::RelayLoop { .. } => Outcome::RelayError,
        }
    }
}

/// What a problem means for whoever reads it, from the worst down: each has its own exit code
/// in the CLI.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Outcome {
    /// The relay answered with an error or refused this device.
    RelayError,
    /// Something the relay served failed its checks and was not applied.
    Tampered,
    /// Something was withheld or lost by the relay (a gap, a rewind, a number reused).
    Gap,
    /// The relay served something twice; the copy was ignored.
    Replay,
}

/// One problem, with where and when.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Problem {
    /// The space.
    pub space: String,
    /// What happened.
    pub kind: ProblemKind,
    /// When it was noticed (unix ms).
    pub at: i64,
}

/// The sync status the app shows.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct SyncStatus {
    /// The relay answered the last request.
    pub online: bool,
    /// A round is under way.
    pub syncing: bool,
    /// Local changes the relay has not acknowledged yet.
    pub pending: u64,
    /// When a round last completed (unix ms).
    pub last_synced: Option<i64>,
    /// Recent problems, newest last (at most [`MAX_PROBLEMS`]).
    pub problems: Vec<Problem>,
    /// Why the device refuses the relay, while it does (a certificate that fails its checks,
    /// a pin that does not match, clear text to another machine): a failure to show and act
    /// on, not "offline". Cleared once the relay is reached and trusted.
    #[serde(default)]
    pub untrusted_relay: Option<String>,
}

/// How many problems the status keeps.
pub const MAX_PROBLEMS: usize = 20;
