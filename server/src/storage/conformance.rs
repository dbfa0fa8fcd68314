//! The storage conformance suite: one set of behaviours every backend must show.
//!
//! A backend's test file opens a fresh store per test and instantiates the suite:
//!
//! ```text
//! async fn open(hub: LocalHub) -> Backend { /* open a fresh store publishing to `hub` */ }
//! mend_relay::storage_conformance_tests!(open);
//! ```
//!
//! The checks are ordinary async functions (so they read as stories and show up in backtraces);
//! the macro only stamps out one `#[tokio::test]` per check. They panic on failure, like any
//! test assertion. After each check, [`counters_agree`] recounts the store: whatever a check
//! did, every space's counters and the relay-wide total must match the rows.

use std::{any::Any, collections::HashSet, sync::Arc, time::Duration};

use mend_protocol::{
    DeviceId, Limits, MAX_LISTED_DEVICES, Page, PairingInbox, PairingMessage, PairingState, Push,
    RollupPush, Snapshot, SpaceId, chunk_mark, payload_sha256,
};

use super::{
    Created, EraseReason, MAX_ROLLUP_CHUNKS, NewPairing, PairingRecord, PairingSide, PairingSwept,
    PullRequest, Pushed, ROW_BYTES, RollupStored, SPACE_BYTES, Storage, StorageError, Swept,
    TOMBSTONE_BYTES,
    pairing::{MAX_MESSAGES_PER_SIDE, MailboxChoice},
};
use crate::live::{LiveEvent, LiveFeed, LocalHub};

/// What the relay-wide total counts for a kept row beside its payload, for a space itself and
/// for an erased space's tombstone, short for the sums below.
const R: u64 = ROW_BYTES;
const S: u64 = SPACE_BYTES;
const T: u64 = TOMBSTONE_BYTES;

/// A store under test, the hub it publishes to, and whatever must live as long as it
/// (a temporary directory, a database handle).
pub struct Backend {
    /// The store.
    pub storage: Arc<dyn Storage>,
    /// The hub the store announces commits to.
    pub hub: LocalHub,
    _keep: Box<dyn Any + Send>,
}

impl Backend {
    /// Wraps a freshly opened store.
    pub fn new(storage: Arc<dyn Storage>, hub: LocalHub, keep: impl Any + Send) -> Backend {
        Backend {
            storage,
            hub,
            _keep: Box::new(keep),
        }
    }
}

/// Every space's counters and the relay-wide total match what the rows hold
/// ([`Storage::audit`]); a closed store has nothing left to check.
pub async fn counters_agree(backend: &Backend) {
    match backend.storage.audit(false).await {
        Ok(audit) => assert!(audit.clean(), "counters differ from the rows: {audit:?}"),
        Err(StorageError::Closed) => {}
        Err(error) => panic!("audit: {error}"),
    }
}

impl std::fmt::Debug for Backend {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Backend")
    }
}

/// Instantiates every conformance check as a `#[tokio::test]` for a backend opener
/// `async fn(LocalHub) -> Backend`.
#[macro_export]
macro_rules! storage_conformance_tests {
    ($open:path) => {
        $crate::storage_conformance_tests!(@each $open;
            create_is_idempotent_for_the_same_token,
            unknown_spaces_are_not_found,
            pushes_get_contiguous_sequences_and_read_back_exactly,
            replayed_push_is_a_duplicate_and_stores_nothing,
            reused_sequence_with_another_payload_is_a_conflict,
            concurrent_pushes_are_each_stored_once,
            pages_respect_limit_and_byte_cap,
            pull_can_withhold_a_device,
            pages_carry_the_marks_of_the_chunks_at_their_cursors,
            quota_is_enforced_and_duplicates_still_answered,
            snapshot_prunes_and_never_goes_backwards,
            snapshot_frees_quota,
            total_quota_spans_spaces_and_erase_frees_it,
            snapshot_that_frees_bytes_passes_a_full_relay,
            pruned_chunks_are_served_until_their_grace_ends,
            pruned_bytes_count_until_swept,
            a_full_space_can_compact_but_not_grow_until_swept,
            kept_rows_count_against_the_relay_not_the_space,
            spaces_count_in_the_relay_total_until_erased,
            erase_removes_everything,
            counters_follow_any_mix_of_writes,
            tombstones_keep_the_reason_and_only_erased_spaces_have_one,
            the_first_successor_offered_is_kept_for_good,
            rollups_are_checked_against_the_log,
            rollups_count_against_both_quotas_until_erased,
            pulls_serve_rollups_in_place_of_their_chunks,
            rollup_pages_never_end_inside_a_rollup,
            rollup_pages_respect_the_byte_cap,
            pruned_rollups_are_served_until_swept,
            a_rollup_stored_under_the_snapshot_is_swept_with_its_chunks,
            sizes_sum_what_a_pull_would_serve,
            commits_are_published_in_order,
            creations_are_counted_per_client_and_window,
            pairings_get_short_numbers_or_long_ids,
            a_pairing_is_claimed_once,
            pairing_messages_flow_both_ways_up_to_the_cap,
            closing_a_pairing_deletes_bodies_and_burning_sticks,
            pairings_expire_and_are_swept,
            live_pairings_are_capped,
            devices_are_seen_by_the_hour_and_bounded,
            ready_until_closed,
            close_refuses_new_work,
        );
    };
    (@each $open:path; $($check:ident),* $(,)?) => {
        $(
            #[tokio::test]
            async fn $check() {
                let backend = $open($crate::live::LocalHub::default()).await;
                $crate::storage::conformance::$check(&backend).await;
                $crate::storage::conformance::counters_agree(&backend).await;
            }
        )*
    };
}

const HASH_A: [u8; 32] = [0xa1; 32];
const HASH_B: [u8; 32] = [0xb2; 32];
const DEVICE_A: DeviceId = DeviceId([0x0a; 16]);
const DEVICE_B: DeviceId = DeviceId([0x0b; 16]);
const QUOTA: u64 = 1 << 30;
/// Pruned payloads deleted at once, as before the grace existed.
const NO_GRACE: Duration = Duration::ZERO;
/// A grace no test outlives.
const DAY: Duration = Duration::from_secs(24 * 3600);

fn space(n: u8) -> SpaceId {
    SpaceId([n; 32])
}

fn push(device_id: DeviceId, device_seq: u64, payload: &[u8]) -> Push {
    Push {
        device_id,
        device_seq,
        payload: payload.to_vec(),
    }
}

fn all(after: u64) -> PullRequest {
    PullRequest {
        after,
        limit: 10_000,
        max_bytes: usize::MAX,
        exclude_device: None,
        include_pruned: false,
        rollups: false,
    }
}

fn with_pruned(after: u64) -> PullRequest {
    PullRequest {
        include_pruned: true,
        ..all(after)
    }
}

fn ok<T>(result: Result<T, StorageError>, what: &str) -> T {
    result.unwrap_or_else(|error| panic!("{what}: {error}"))
}

async fn created(b: &Backend, space: SpaceId) {
    assert_eq!(
        ok(b.storage.create_space(space, HASH_A).await, "create"),
        Created::New
    );
}

async fn pushed(b: &Backend, space: SpaceId, p: Push) -> Pushed {
    ok(b.storage.push(space, p, QUOTA).await, "push")
}

/// Creating twice with one token is fine; with another token it fails and changes nothing.
pub async fn create_is_idempotent_for_the_same_token(b: &Backend) {
    created(b, space(1)).await;
    assert_eq!(
        ok(b.storage.create_space(space(1), HASH_A).await, "again"),
        Created::Existing
    );
    assert!(matches!(
        b.storage.create_space(space(1), HASH_B).await,
        Err(StorageError::SpaceExists)
    ));
    assert_eq!(
        ok(b.storage.token_hash(space(1)).await, "hash"),
        Some(HASH_A)
    );
    assert_eq!(ok(b.storage.token_hash(space(2)).await, "hash"), None);
}

/// Every operation on a space that was never created says so.
pub async fn unknown_spaces_are_not_found(b: &Backend) {
    assert!(matches!(
        b.storage
            .push(space(9), push(DEVICE_A, 1, b"x"), QUOTA)
            .await,
        Err(StorageError::SpaceNotFound)
    ));
    assert!(matches!(
        b.storage.pull(space(9), all(0)).await,
        Err(StorageError::SpaceNotFound)
    ));
    let snapshot = Snapshot {
        covers: 0,
        payload: vec![1],
    };
    assert!(matches!(
        b.storage
            .put_snapshot(space(9), snapshot, QUOTA, NO_GRACE)
            .await,
        Err(StorageError::SpaceNotFound)
    ));
    assert!(ok(b.storage.get_snapshot(space(9)).await, "snapshot").is_none());
    assert!(!ok(
        b.storage.erase(space(9), EraseReason::Erased).await,
        "erase"
    ));
}

/// Sequences start at 1 per space, increase by one, and chunks come back byte for byte.
pub async fn pushes_get_contiguous_sequences_and_read_back_exactly(b: &Backend) {
    created(b, space(1)).await;
    created(b, space(2)).await;
    let mut sent = Vec::new();
    for i in 1..=6u64 {
        let device = if i % 2 == 0 { DEVICE_A } else { DEVICE_B };
        let p = push(device, i, &vec![i as u8; i as usize * 10]);
        let answer = pushed(b, space(1), p.clone()).await;
        assert_eq!(
            answer,
            Pushed {
                relay_seq: i,
                duplicate: false
            }
        );
        sent.push(p);
    }
    assert_eq!(
        pushed(b, space(2), push(DEVICE_A, 1, b"other"))
            .await
            .relay_seq,
        1
    );
    let page = ok(b.storage.pull(space(1), all(0)).await, "pull");
    assert_eq!((page.head, page.next_after, page.more), (6, 6, false));
    assert_eq!(page.chunks.len(), 6);
    for (i, (chunk, p)) in page.chunks.iter().zip(&sent).enumerate() {
        assert_eq!(chunk.relay_seq, i as u64 + 1);
        assert_eq!(
            (chunk.device_id, chunk.device_seq, &chunk.payload),
            (p.device_id, p.device_seq, &p.payload)
        );
    }
    let tail = ok(b.storage.pull(space(1), all(4)).await, "tail");
    let seqs: Vec<u64> = tail.chunks.iter().map(|c| c.relay_seq).collect();
    assert_eq!(seqs, [5, 6]);
}

/// A replay of (device, device_seq) with the same payload returns the original sequence and
/// stores nothing; with a different payload it is a conflict and stores nothing either.
pub async fn replayed_push_is_a_duplicate_and_stores_nothing(b: &Backend) {
    created(b, space(1)).await;
    pushed(b, space(1), push(DEVICE_A, 1, b"first")).await;
    pushed(b, space(1), push(DEVICE_B, 1, b"other device")).await;
    let replay = pushed(b, space(1), push(DEVICE_A, 1, b"first")).await;
    assert_eq!(
        replay,
        Pushed {
            relay_seq: 1,
            duplicate: true
        }
    );
    assert!(matches!(
        b.storage
            .push(space(1), push(DEVICE_A, 1, b"rolled back"), QUOTA)
            .await,
        Err(StorageError::SeqConflict { relay_seq: 1 })
    ));
    let page = ok(b.storage.pull(space(1), all(0)).await, "pull");
    assert_eq!(page.chunks.len(), 2);
    assert_eq!(page.chunks[0].payload, b"first");
    assert_eq!(
        pushed(b, space(1), push(DEVICE_A, 2, b"next"))
            .await
            .relay_seq,
        3
    );
}

/// A reused (device, device_seq) with another payload is a conflict however the relay holds
/// the first chunk: pruned, at the quota, or pushed in the same instant.
pub async fn reused_sequence_with_another_payload_is_a_conflict(b: &Backend) {
    created(b, space(1)).await;
    let quota = 100;
    for seq in 1..=3 {
        ok(
            b.storage
                .push(space(1), push(DEVICE_A, seq, &[seq as u8; 30]), quota)
                .await,
            "fill",
        );
    }
    // At the quota: a replay is answered, a conflict is named, nothing new fits.
    let at_quota = |seq: u64, byte: u8| {
        b.storage
            .push(space(1), push(DEVICE_A, seq, &[byte; 30]), quota)
    };
    assert_eq!(
        ok(at_quota(3, 3).await, "replay at quota"),
        Pushed {
            relay_seq: 3,
            duplicate: true
        }
    );
    assert!(matches!(
        at_quota(3, 9).await,
        Err(StorageError::SeqConflict { relay_seq: 3 })
    ));
    // Pruned: the payload is gone but its hash stays.
    let snapshot = Snapshot {
        covers: 2,
        payload: vec![0; 10],
    };
    ok(
        b.storage
            .put_snapshot(space(1), snapshot, QUOTA, NO_GRACE)
            .await,
        "snapshot",
    );
    assert!(ok(at_quota(1, 1).await, "pruned replay").duplicate);
    assert!(matches!(
        at_quota(1, 7).await,
        Err(StorageError::SeqConflict { relay_seq: 1 })
    ));
    // Two different payloads for one sequence at once: one is stored, the other conflicts.
    let first = b.storage.push(space(1), push(DEVICE_B, 1, b"one"), QUOTA);
    let second = b.storage.push(space(1), push(DEVICE_B, 1, b"two"), QUOTA);
    let (first, second) = tokio::join!(first, second);
    let stored = match (&first, &second) {
        (Ok(p), Err(StorageError::SeqConflict { relay_seq }))
        | (Err(StorageError::SeqConflict { relay_seq }), Ok(p)) => {
            assert_eq!((p.relay_seq, p.duplicate), (*relay_seq, false));
            *relay_seq
        }
        other => panic!("expected one stored and one conflict: {other:?}"),
    };
    let page = ok(b.storage.pull(space(1), all(2)).await, "pull");
    let seqs: Vec<u64> = page.chunks.iter().map(|c| c.relay_seq).collect();
    assert_eq!(seqs, [3, stored], "the conflict stored nothing");
}

/// Many pushes at once (with replays among them) each land exactly once.
pub async fn concurrent_pushes_are_each_stored_once(b: &Backend) {
    created(b, space(1)).await;
    let mut tasks = Vec::new();
    for i in 0..200u64 {
        let storage = b.storage.clone();
        let device = DeviceId([(i % 4) as u8; 16]);
        // Every push is sent twice, concurrently.
        for _ in 0..2 {
            let storage = storage.clone();
            tasks.push(tokio::spawn(async move {
                storage
                    .push(space(1), push(device, i / 4 + 1, &i.to_le_bytes()), QUOTA)
                    .await
            }));
        }
    }
    let mut fresh = HashSet::new();
    let mut duplicates = 0;
    for task in tasks {
        let answer = ok(task.await.unwrap_or_else(|e| panic!("task: {e}")), "push");
        if answer.duplicate {
            duplicates += 1;
        } else {
            assert!(fresh.insert(answer.relay_seq), "sequence reused");
        }
    }
    assert_eq!((fresh.len(), duplicates), (200, 200));
    let page = ok(b.storage.pull(space(1), all(0)).await, "pull");
    let seqs: Vec<u64> = page.chunks.iter().map(|c| c.relay_seq).collect();
    assert_eq!(seqs, (1..=200).collect::<Vec<_>>());
}

/// Pages stop at the chunk limit or before the byte cap, but always hold one chunk.
pub async fn pages_respect_limit_and_byte_cap(b: &Backend) {
    created(b, space(1)).await;
    for i in 1..=10 {
        pushed(b, space(1), push(DEVICE_A, i, &[0; 100])).await;
    }
    let request = |after, limit, max_bytes| PullRequest {
        after,
        limit,
        max_bytes,
        exclude_device: None,
        include_pruned: false,
        rollups: false,
    };
    let page = ok(
        b.storage.pull(space(1), request(0, 3, usize::MAX)).await,
        "limit",
    );
    assert_eq!(
        (page.chunks.len(), page.more, page.next_after, page.head),
        (3, true, 3, 10)
    );
    let page = ok(
        b.storage.pull(space(1), request(3, 100, 250)).await,
        "bytes",
    );
    assert_eq!(
        (page.chunks.len(), page.more, page.next_after),
        (2, true, 5)
    );
    let page = ok(
        b.storage.pull(space(1), request(5, 100, 10)).await,
        "tiny cap",
    );
    assert_eq!(
        (page.chunks.len(), page.more, page.next_after),
        (1, true, 6)
    );
    let page = ok(
        b.storage.pull(space(1), request(6, 4, usize::MAX)).await,
        "exact",
    );
    assert_eq!(
        (page.chunks.len(), page.more, page.next_after),
        (4, false, 10)
    );
    let page = ok(
        b.storage.pull(space(1), request(10, 4, usize::MAX)).await,
        "at head",
    );
    assert_eq!(
        (page.chunks.len(), page.more, page.next_after),
        (0, false, 10)
    );
}

/// A device can ask not to get its own chunks back; the cursor still passes them.
pub async fn pull_can_withhold_a_device(b: &Backend) {
    created(b, space(1)).await;
    for i in 1..=3 {
        pushed(b, space(1), push(DEVICE_A, i, b"mine")).await;
        pushed(b, space(1), push(DEVICE_B, i, b"theirs")).await;
    }
    pushed(b, space(1), push(DEVICE_A, 4, b"mine")).await;
    let request = PullRequest {
        after: 0,
        limit: 100,
        max_bytes: usize::MAX,
        exclude_device: Some(DEVICE_A),
        include_pruned: false,
        rollups: false,
    };
    let page = ok(b.storage.pull(space(1), request).await, "pull");
    let seqs: Vec<u64> = page.chunks.iter().map(|c| c.relay_seq).collect();
    assert_eq!(seqs, [2, 4, 6]);
    assert!(page.chunks.iter().all(|c| c.device_id == DEVICE_B));
    assert_eq!((page.next_after, page.more), (7, false));
    let limited = ok(
        b.storage
            .pull(
                space(1),
                PullRequest {
                    limit: 2,
                    ..request
                },
            )
            .await,
        "limited",
    );
    assert_eq!((limited.next_after, limited.more), (4, true));
}

/// A page names the chunks at the cursor it was asked from and at the one it hands back by
/// their marks; they stay the same after pruning, and a relay filled up again after losing
/// chunks holds other marks at those numbers.
pub async fn pages_carry_the_marks_of_the_chunks_at_their_cursors(b: &Backend) {
    let mark = |seq: u64, device: DeviceId, device_seq: u64, payload: &[u8]| {
        Some(chunk_mark(
            seq,
            &device,
            device_seq,
            &payload_sha256(payload),
        ))
    };
    created(b, space(1)).await;
    let empty = ok(b.storage.pull(space(1), all(0)).await, "empty");
    assert_eq!((empty.after_mark, empty.next_mark), (None, None));
    pushed(b, space(1), push(DEVICE_A, 1, b"one")).await;
    pushed(b, space(1), push(DEVICE_B, 1, b"two")).await;
    pushed(b, space(1), push(DEVICE_A, 2, b"three")).await;
    let page = ok(b.storage.pull(space(1), all(0)).await, "from 0");
    assert_eq!(page.after_mark, None, "nothing sits at 0");
    assert_eq!(page.next_mark, mark(3, DEVICE_A, 2, b"three"));
    assert_eq!(
        page.chunks[2].mark(),
        mark(3, DEVICE_A, 2, b"three").unwrap_or_default()
    );
    // The head is withheld as the device's own: its mark still comes.
    let mine = PullRequest {
        exclude_device: Some(DEVICE_A),
        ..all(1)
    };
    let page = ok(b.storage.pull(space(1), mine).await, "withheld");
    assert_eq!(page.after_mark, mark(1, DEVICE_A, 1, b"one"));
    assert_eq!(page.next_mark, mark(3, DEVICE_A, 2, b"three"));
    // A page cut short names its last chunk.
    let short = PullRequest { limit: 1, ..all(1) };
    let page = ok(b.storage.pull(space(1), short).await, "short");
    assert_eq!((page.next_after, page.more), (2, true));
    assert_eq!(page.next_mark, mark(2, DEVICE_B, 1, b"two"));
    // Pruned (and deleted): the marks are kept with the dedup keys.
    let snapshot = Snapshot {
        covers: 2,
        payload: b"snapshot".to_vec(),
    };
    ok(
        b.storage
            .put_snapshot(space(1), snapshot.clone(), QUOTA, NO_GRACE)
            .await,
        "snapshot",
    );
    ok(
        b.storage
            .put_snapshot(space(1), snapshot, QUOTA, NO_GRACE)
            .await,
        "snapshot again, deleting",
    );
    let page = ok(b.storage.pull(space(1), all(2)).await, "after the snapshot");
    assert_eq!(page.after_mark, mark(2, DEVICE_B, 1, b"two"));
    // Another space filled the same way but with other chunks marks them apart.
    created(b, space(2)).await;
    pushed(b, space(2), push(DEVICE_A, 1, b"one")).await;
    pushed(b, space(2), push(DEVICE_A, 2, b"other")).await;
    let page = ok(b.storage.pull(space(2), all(2)).await, "refilled");
    assert_ne!(page.after_mark, mark(2, DEVICE_B, 1, b"two"));
}

/// A push that would exceed the quota is refused; a replay of a stored chunk is still answered.
pub async fn quota_is_enforced_and_duplicates_still_answered(b: &Backend) {
    created(b, space(1)).await;
    let quota = 1000;
    let first = ok(
        b.storage
            .push(space(1), push(DEVICE_A, 1, &[1; 600]), quota)
            .await,
        "first",
    );
    assert_eq!(first.relay_seq, 1);
    assert!(matches!(
        b.storage
            .push(space(1), push(DEVICE_A, 2, &[2; 600]), quota)
            .await,
        Err(StorageError::QuotaExceeded {
            used: 600,
            adding: 600,
            quota: 1000
        })
    ));
    let replay = ok(
        b.storage
            .push(space(1), push(DEVICE_A, 1, &[1; 600]), quota)
            .await,
        "replay",
    );
    assert!(replay.duplicate);
    let fits = ok(
        b.storage
            .push(space(1), push(DEVICE_A, 2, &[2; 400]), quota)
            .await,
        "fits",
    );
    assert_eq!(
        fits.relay_seq, 2,
        "a refused push must not consume a sequence"
    );
}

/// A snapshot prunes what it covers, is never replaced by an older one, and sequences are
/// never reused after pruning.
pub async fn snapshot_prunes_and_never_goes_backwards(b: &Backend) {
    created(b, space(1)).await;
    for i in 1..=5 {
        pushed(b, space(1), push(DEVICE_A, i, &[i as u8; 10])).await;
    }
    let snap = |covers: u64| Snapshot {
        covers,
        payload: vec![covers as u8; 20],
    };
    ok(
        b.storage
            .put_snapshot(space(1), snap(3), QUOTA, NO_GRACE)
            .await,
        "snapshot",
    );
    assert!(matches!(
        b.storage.pull(space(1), all(0)).await,
        Err(StorageError::Pruned { snapshot_covers: 3 })
    ));
    assert!(matches!(
        b.storage.pull(space(1), all(2)).await,
        Err(StorageError::Pruned { snapshot_covers: 3 })
    ));
    let tail = ok(b.storage.pull(space(1), all(3)).await, "tail");
    let seqs: Vec<u64> = tail.chunks.iter().map(|c| c.relay_seq).collect();
    assert_eq!(seqs, [4, 5]);
    assert!(matches!(
        b.storage
            .put_snapshot(space(1), snap(2), QUOTA, NO_GRACE)
            .await,
        Err(StorageError::SnapshotStale { current: 3 })
    ));
    assert!(matches!(
        b.storage
            .put_snapshot(space(1), snap(6), QUOTA, NO_GRACE)
            .await,
        Err(StorageError::SnapshotBeyondHead { head: 5 })
    ));
    let stored = ok(b.storage.get_snapshot(space(1)).await, "get");
    assert_eq!(stored, Some(snap(3)));
    // The same coverage again replaces it.
    let same = Snapshot {
        covers: 3,
        payload: b"rewritten".to_vec(),
    };
    ok(
        b.storage
            .put_snapshot(space(1), same.clone(), QUOTA, NO_GRACE)
            .await,
        "same covers",
    );
    assert_eq!(
        ok(b.storage.get_snapshot(space(1)).await, "get"),
        Some(same)
    );
    let replay = pushed(b, space(1), push(DEVICE_A, 2, &[2; 10])).await;
    assert_eq!(
        replay,
        Pushed {
            relay_seq: 2,
            duplicate: true
        },
        "a pruned chunk's replay still gets its original sequence"
    );
    assert_eq!(
        pushed(b, space(1), push(DEVICE_A, 6, b"new"))
            .await
            .relay_seq,
        6
    );
}

/// Within the grace, a snapshot (a garbage one, say) prunes nothing a device cannot still pull
/// when it asks for pruned chunks (plain pulls below it answer `Pruned`, pointing devices to
/// the snapshot); the pruned payloads still count against the quota while they are held; a
/// sweep past the grace deletes them, and then even pulls that include pruned chunks answer
/// `Pruned`.
pub async fn pruned_chunks_are_served_until_their_grace_ends(b: &Backend) {
    created(b, space(1)).await;
    let quota = 100;
    for i in 1..=4 {
        ok(
            b.storage
                .push(space(1), push(DEVICE_A, i, &[i as u8; 20]), quota)
                .await,
            "push",
        );
    }
    let garbage = Snapshot {
        covers: 3,
        payload: b"garbage".to_vec(),
    };
    ok(
        b.storage.put_snapshot(space(1), garbage, quota, DAY).await,
        "snapshot",
    );
    assert!(matches!(
        b.storage.pull(space(1), all(0)).await,
        Err(StorageError::Pruned { snapshot_covers: 3 })
    ));
    let page = ok(
        b.storage.pull(space(1), with_pruned(0)).await,
        "pull below the snapshot",
    );
    let payloads: Vec<Vec<u8>> = page.chunks.iter().map(|c| c.payload.clone()).collect();
    assert_eq!(
        payloads,
        (1..=4u8).map(|i| vec![i; 20]).collect::<Vec<_>>(),
        "every chunk still served"
    );
    // 80 chunk bytes (60 of them pruned, still held) + 7 snapshot bytes: 13 left.
    assert!(matches!(
        b.storage
            .push(space(1), push(DEVICE_A, 5, &[5; 20]), quota)
            .await,
        Err(StorageError::QuotaExceeded { used: 87, .. })
    ));
    // A sweep within the grace deletes nothing; one past it deletes the pruned payloads.
    assert_eq!(
        ok(
            b.storage.sweep_pruned(DAY, 100, u64::MAX).await,
            "early sweep"
        ),
        Swept::default()
    );
    assert_eq!(
        ok(
            b.storage.sweep_pruned(NO_GRACE, 100, u64::MAX).await,
            "sweep"
        ),
        Swept {
            chunks: 3,
            bytes: 60
        }
    );
    for i in 5..=7 {
        ok(
            b.storage
                .push(space(1), push(DEVICE_A, i, &[i as u8; 20]), quota)
                .await,
            "the swept payloads no longer count",
        );
    }
    assert!(
        ok(
            b.storage
                .push(space(1), push(DEVICE_A, 1, &[1; 20]), quota)
                .await,
            "replay"
        )
        .duplicate
    );
    for after in [0, 2] {
        assert!(matches!(
            b.storage.pull(space(1), with_pruned(after)).await,
            Err(StorageError::Pruned { snapshot_covers: 3 })
        ));
    }
    let tail = ok(b.storage.pull(space(1), with_pruned(3)).await, "tail");
    let seqs: Vec<u64> = tail.chunks.iter().map(|c| c.relay_seq).collect();
    assert_eq!(seqs, [4, 5, 6, 7]);
}

/// Pruned chunks stay in the relay-wide total until deleted, so a client repeating "push, then
/// a garbage snapshot" reaches the relay's limit at its configured bytes; the sweep deletes at
/// most the batch asked for (in chunks and in bytes), oldest first, across spaces, and gives
/// the bytes back to both counters; a snapshot past the grace still deletes its own space's
/// expired chunks.
pub async fn pruned_bytes_count_until_swept(b: &Backend) {
    // 1000 payload bytes, the five chunk rows pushed below and the two spaces.
    let limit = 1000 + 5 * R + 2 * S;
    b.storage.set_total_quota(limit);
    created(b, space(1)).await;
    created(b, space(2)).await;
    let garbage = |covers: u64| Snapshot {
        covers,
        payload: vec![0; 10],
    };
    // Each round: 190 bytes pushed, then a 10-byte garbage snapshot covering them (replacing
    // the last one). Pruned bytes still count: 200, 400, 590, 780, 970, beside the rows.
    let mut seq = 0;
    for round in 1..=5u64 {
        seq += 1;
        let target = space(if round % 2 == 0 { 2 } else { 1 });
        let head = pushed(b, target, push(DEVICE_A, seq, &[round as u8; 190]))
            .await
            .relay_seq;
        ok(
            b.storage
                .put_snapshot(target, garbage(head), QUOTA, DAY)
                .await,
            "garbage snapshot",
        );
    }
    assert_eq!(
        ok(b.storage.total_bytes().await, "total"),
        970 + 5 * R + 2 * S
    );
    assert!(matches!(
        b.storage
            .push(space(1), push(DEVICE_A, 99, &[9; 31]), QUOTA)
            .await,
        Err(StorageError::RelayFull {
            used,
            adding,
            limit: l
        }) if used == 970 + 5 * R + 2 * S && adding == 31 + R && l == limit
    ));
    // A snapshot that would grow what is held is refused alike.
    assert!(matches!(
        b.storage
            .put_snapshot(
                space(1),
                Snapshot {
                    covers: 3,
                    payload: vec![0; 41]
                },
                QUOTA,
                DAY
            )
            .await,
        Err(StorageError::RelayFull { adding: 31, .. })
    ));
    // Within the grace nothing is swept; past it, two at a time, oldest first.
    assert_eq!(
        ok(b.storage.sweep_pruned(DAY, 2, u64::MAX).await, "early"),
        Swept::default()
    );
    assert_eq!(
        ok(
            b.storage.sweep_pruned(NO_GRACE, 2, u64::MAX).await,
            "first batch"
        ),
        Swept {
            chunks: 2,
            bytes: 380
        }
    );
    assert_eq!(
        ok(b.storage.total_bytes().await, "total"),
        590 + 5 * R + 2 * S
    );
    // A batch stops once its payloads reach its byte bound, its first chunk always taken.
    assert_eq!(
        ok(b.storage.sweep_pruned(NO_GRACE, 100, 1).await, "by bytes"),
        Swept {
            chunks: 1,
            bytes: 190
        }
    );
    assert_eq!(
        ok(
            b.storage.sweep_pruned(NO_GRACE, 100, 200).await,
            "to the bound"
        ),
        Swept {
            chunks: 2,
            bytes: 380
        }
    );
    assert_eq!(
        ok(b.storage.total_bytes().await, "total"),
        20 + 5 * R + 2 * S
    );
    assert_eq!(
        ok(
            b.storage.sweep_pruned(NO_GRACE, 100, u64::MAX).await,
            "the rest"
        ),
        Swept::default()
    );
    assert_eq!(
        ok(
            b.storage.sweep_pruned(NO_GRACE, 100, u64::MAX).await,
            "nothing left"
        ),
        Swept::default()
    );
    // Two snapshots of 10 bytes and the rows are all that is left; both counters agree.
    assert_eq!(
        ok(b.storage.total_bytes().await, "total"),
        20 + 5 * R + 2 * S
    );
    let fits = ok(
        b.storage
            .push(
                space(1),
                push(DEVICE_A, 99, &vec![9; 980 - R as usize]),
                990,
            )
            .await,
        "fits after the sweep",
    );
    assert!(!fits.duplicate);
    assert!(matches!(
        b.storage
            .push(space(2), push(DEVICE_B, 1, &[1; 1]), QUOTA)
            .await,
        Err(StorageError::RelayFull { used, .. }) if used == limit
    ));
    // A snapshot with no grace deletes what it prunes at once, and so frees it.
    ok(
        b.storage
            .put_snapshot(space(1), garbage(fits.relay_seq), QUOTA, NO_GRACE)
            .await,
        "snapshot without grace",
    );
    assert_eq!(
        ok(b.storage.total_bytes().await, "total"),
        20 + 6 * R + 2 * S
    );
}

/// A space at its quota can still upload a snapshot that compacts its log (the quota bounds
/// what stays live), again and again at the same coverage, but cannot push again until the
/// pruned chunks are swept; once they are, they no longer count as held.
pub async fn a_full_space_can_compact_but_not_grow_until_swept(b: &Backend) {
    created(b, space(1)).await;
    let quota = 1000;
    for i in 1..=4 {
        ok(
            b.storage
                .push(space(1), push(DEVICE_A, i, &[0; 250]), quota)
                .await,
            "push",
        );
    }
    // Snapshots covering the four chunks, of `len` bytes.
    let snapshot = |len: usize| {
        let snapshot = Snapshot {
            covers: 4,
            payload: vec![0; len],
        };
        b.storage.put_snapshot(space(1), snapshot, quota, DAY)
    };
    ok(snapshot(300).await, "a full space compacts");
    assert!(matches!(
        b.storage
            .push(space(1), push(DEVICE_A, 5, &[0; 1]), quota)
            .await,
        Err(StorageError::QuotaExceeded { used: 1300, .. })
    ));
    // A snapshot whose live part would not fit is still refused.
    assert!(matches!(
        snapshot(1001).await,
        Err(StorageError::QuotaExceeded { .. })
    ));
    // Again at the same coverage: the pruned bytes still count as held, not live, so one that
    // fits the quota on its own is taken.
    ok(snapshot(1000).await, "the same coverage again");
    assert_eq!(
        ok(
            b.storage.sweep_pruned(NO_GRACE, 10, u64::MAX).await,
            "sweep"
        )
        .bytes,
        1000
    );
    // Swept, they are held no more: the snapshot is all that is left, and what would pass the
    // quota is refused.
    assert!(matches!(
        snapshot(1001).await,
        Err(StorageError::QuotaExceeded { used: 1000, .. })
    ));
    ok(snapshot(300).await, "a smaller snapshot");
    ok(
        b.storage
            .push(space(1), push(DEVICE_A, 5, &[0; 700]), quota)
            .await,
        "fits after the sweep",
    );
}

/// Rows outlive their payloads (their hashes answer replays), so the relay counts them for as
/// long as they are kept: a client repeating "push small chunks, snapshot them away" reaches
/// the relay's limit instead of growing the store without bound while its payload bytes stay
/// flat. Its space's quota counts payloads alone, so the space is never full for good: it
/// goes on once the relay has room again.
pub async fn kept_rows_count_against_the_relay_not_the_space(b: &Backend) {
    // The space itself and room for ten small chunks with their rows.
    let limit = S + 10 * (40 + R);
    b.storage.set_total_quota(limit);
    created(b, space(1)).await;
    // Room for five small chunks at a time in the space.
    let quota = 200;
    let mut stored = 0u64;
    let mut full = false;
    for round in 0..50u8 {
        // Small chunks until a limit refuses one (a refused push consumes no sequence)...
        loop {
            match b
                .storage
                .push(space(1), push(DEVICE_A, stored + 1, &[round; 40]), quota)
                .await
            {
                Ok(pushed) => {
                    assert_eq!(pushed.relay_seq, stored + 1);
                    stored += 1;
                }
                Err(StorageError::QuotaExceeded { .. }) => break,
                Err(StorageError::RelayFull { .. }) => {
                    full = true;
                    break;
                }
                Err(error) => panic!("push: {error}"),
            }
            assert!(
                stored * R <= limit - S,
                "{stored} rows stored under a limit of {limit}"
            );
        }
        if full {
            break;
        }
        // ...then a snapshot that deletes their payloads at once.
        let snapshot = Snapshot {
            covers: stored,
            payload: vec![round; 40],
        };
        ok(
            b.storage
                .put_snapshot(space(1), snapshot, quota, NO_GRACE)
                .await,
            "a snapshot always compacts",
        );
    }
    assert!(full, "{stored} rows and still room after 50 rounds");
    let total = ok(b.storage.total_bytes().await, "total");
    assert!(total >= S + stored * R && total <= limit, "{total}");
    // The space itself is not full: with room at the relay again, it takes chunks.
    b.storage.set_total_quota(QUOTA);
    let more = ok(
        b.storage
            .push(space(1), push(DEVICE_A, stored + 1, &[0; 40]), quota)
            .await,
        "the space goes on",
    );
    assert_eq!(more.relay_seq, stored + 1);
}

/// A space counts in the relay-wide total from its creation (its row and the devices it may
/// list as seen), so empty spaces from many addresses cannot grow the store past the limit: a
/// full relay creates none, re-creating an existing one costs nothing, and erasing one gives
/// its bytes back.
pub async fn spaces_count_in_the_relay_total_until_erased(b: &Backend) {
    // Room for two spaces and a tombstone.
    let limit = 2 * S + T;
    b.storage.set_total_quota(limit);
    created(b, space(1)).await;
    created(b, space(2)).await;
    assert_eq!(ok(b.storage.total_bytes().await, "total"), 2 * S);
    assert!(matches!(
        b.storage.create_space(space(3), HASH_A).await,
        Err(StorageError::RelayFull { used, adding, limit })
            if used == 2 * S && adding == S && limit == 2 * S + T
    ));
    assert_eq!(
        ok(b.storage.create_space(space(1), HASH_A).await, "again"),
        Created::Existing
    );
    assert!(ok(
        b.storage.erase(space(1), EraseReason::Erased).await,
        "erase"
    ));
    // The erased space's tombstone stays counted: it is kept for good.
    assert_eq!(ok(b.storage.total_bytes().await, "total"), S + T);
    created(b, space(3)).await;
    assert_eq!(ok(b.storage.total_bytes().await, "total"), limit);
}

/// Pruned payloads deleted at once (no grace) stop counting against the quota; the snapshot
/// counts instead.
pub async fn snapshot_frees_quota(b: &Backend) {
    created(b, space(1)).await;
    let quota = 1000;
    for i in 1..=4 {
        ok(
            b.storage
                .push(space(1), push(DEVICE_A, i, &[0; 200]), quota)
                .await,
            "push",
        );
    }
    assert!(matches!(
        b.storage
            .push(space(1), push(DEVICE_A, 5, &[0; 300]), quota)
            .await,
        Err(StorageError::QuotaExceeded { .. })
    ));
    assert!(matches!(
        b.storage
            .put_snapshot(
                space(1),
                Snapshot {
                    covers: 1,
                    payload: vec![0; 500]
                },
                quota,
                NO_GRACE
            )
            .await,
        Err(StorageError::QuotaExceeded { .. })
    ));
    let small = Snapshot {
        covers: 4,
        payload: vec![0; 100],
    };
    ok(
        b.storage
            .put_snapshot(space(1), small, quota, NO_GRACE)
            .await,
        "snapshot",
    );
    ok(
        b.storage
            .push(space(1), push(DEVICE_A, 5, &[0; 800]), quota)
            .await,
        "fits after pruning",
    );
    assert!(matches!(
        b.storage
            .push(space(1), push(DEVICE_A, 6, &[0; 101]), quota)
            .await,
        Err(StorageError::QuotaExceeded { used: 900, .. })
    ));
}

/// The relay-wide quota counts every space's bytes: one space cannot take what another holds,
/// a refused push stores nothing and consumes no sequence, replays and reads still work at the
/// limit, and erasing a space gives its bytes back.
pub async fn total_quota_spans_spaces_and_erase_frees_it(b: &Backend) {
    // 1000 payload bytes, two rows and the two spaces.
    let limit = 1000 + 2 * R + 2 * S;
    b.storage.set_total_quota(limit);
    created(b, space(1)).await;
    created(b, space(2)).await;
    pushed(b, space(1), push(DEVICE_A, 1, &[1; 600])).await;
    assert!(matches!(
        b.storage
            .push(space(2), push(DEVICE_B, 1, &[2; 500]), QUOTA)
            .await,
        Err(StorageError::RelayFull {
            used,
            adding,
            limit: l
        }) if used == 600 + R + 2 * S && adding == 500 + R && l == limit
    ));
    let fits = pushed(b, space(2), push(DEVICE_B, 1, &[2; 400])).await;
    assert_eq!(
        fits.relay_seq, 1,
        "a refused push must not consume a sequence"
    );
    assert_eq!(ok(b.storage.total_bytes().await, "total"), limit);
    // Full: a new byte is refused, a replay is answered, a conflict still named, reads go on.
    assert!(matches!(
        b.storage
            .push(space(2), push(DEVICE_B, 2, &[3; 1]), QUOTA)
            .await,
        Err(StorageError::RelayFull { used, .. }) if used == limit
    ));
    assert!(
        pushed(b, space(1), push(DEVICE_A, 1, &[1; 600]))
            .await
            .duplicate
    );
    assert!(matches!(
        b.storage
            .push(space(1), push(DEVICE_A, 1, &[9; 600]), QUOTA)
            .await,
        Err(StorageError::SeqConflict { relay_seq: 1 })
    ));
    let page = ok(b.storage.pull(space(2), all(0)).await, "pull at the limit");
    assert_eq!(page.chunks.len(), 1);
    // Erasing gives the bytes back.
    assert!(ok(
        b.storage.erase(space(1), EraseReason::Erased).await,
        "erase"
    ));
    assert_eq!(
        ok(b.storage.total_bytes().await, "total after erase"),
        400 + R + S + T
    );
    let after = pushed(b, space(2), push(DEVICE_B, 2, &[3; 600])).await;
    assert_eq!(after.relay_seq, 2);
    // Full of payloads again, one space fewer and its tombstone more.
    assert_eq!(ok(b.storage.total_bytes().await, "total"), limit - S + T);
}

/// At the relay's limit a snapshot that frees bytes is still accepted, and its pruning gives
/// bytes back once they are deleted (at once without a grace); a snapshot that would grow the
/// total is refused.
pub async fn snapshot_that_frees_bytes_passes_a_full_relay(b: &Backend) {
    // 1000 payload bytes, four rows and the space.
    let limit = 1000 + 4 * R + S;
    b.storage.set_total_quota(limit);
    created(b, space(1)).await;
    for i in 1..=4 {
        pushed(b, space(1), push(DEVICE_A, i, &[i as u8; 250])).await;
    }
    assert_eq!(ok(b.storage.total_bytes().await, "total"), limit);
    let growing = Snapshot {
        covers: 1,
        payload: vec![0; 251],
    };
    assert!(matches!(
        b.storage
            .put_snapshot(space(1), growing, QUOTA, NO_GRACE)
            .await,
        Err(StorageError::RelayFull {
            used,
            adding: 1,
            limit: l
        }) if used == limit && l == limit
    ));
    let freeing = Snapshot {
        covers: 4,
        payload: vec![0; 100],
    };
    ok(
        b.storage
            .put_snapshot(space(1), freeing, QUOTA, NO_GRACE)
            .await,
        "snapshot at the limit",
    );
    assert_eq!(
        ok(b.storage.total_bytes().await, "total after pruning"),
        100 + 4 * R + S
    );
    pushed(b, space(1), push(DEVICE_A, 5, &vec![5; 900 - R as usize])).await;
    assert!(matches!(
        b.storage
            .push(space(1), push(DEVICE_A, 6, &[6; 1]), QUOTA)
            .await,
        Err(StorageError::RelayFull { used, .. }) if used == limit
    ));
}

/// A seeded, repeatable stream of numbers (SplitMix64): the mixes below are the same on every
/// run and every backend.
struct Seeded(u64);

impl Seeded {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }

    /// A number in `0..n`.
    fn below(&mut self, n: u64) -> u64 {
        self.next() % n.max(1)
    }
}

/// Pushes, replays, conflicts, rollups (under the snapshot too), snapshots with and without a
/// grace, sweeps, erases and tight quotas, mixed at random over a few spaces: after every
/// write the counters still match the rows ([`counters_agree`]).
pub async fn counters_follow_any_mix_of_writes(b: &Backend) {
    /// One space of the mix: its id, each device's next sequence, and its head.
    struct Mixed {
        id: SpaceId,
        next: [u64; 2],
        head: u64,
        covers: u64,
    }
    let devices = [DEVICE_A, DEVICE_B];
    // Counts of writes that took effect, so the mix is known to reach every path.
    let (mut stored, mut rolled_up, mut snapshots, mut swept, mut erased) = (0, 0, 0, 0, 0);
    for seed in 1..=3u64 {
        let mut rng = Seeded(seed);
        let mut made = 0u8;
        let mut spaces = Vec::new();
        b.storage.set_total_quota(u64::MAX);
        for _ in 0..3 {
            made += 1;
            let id = SpaceId([seed as u8 * 40 + made; 32]);
            created(b, id).await;
            spaces.push(Mixed {
                id,
                next: [1, 1],
                head: 0,
                covers: 0,
            });
        }
        for _ in 0..150 {
            let k = rng.below(spaces.len() as u64) as usize;
            let d = rng.below(2) as usize;
            let quota = if rng.below(8) == 0 { 300 } else { QUOTA };
            match rng.below(40) {
                0..=18 => {
                    let len = 1 + rng.below(64) as usize;
                    let seq = spaces[k].next[d];
                    let fill = rng.next() as u8;
                    let result = b
                        .storage
                        .push(spaces[k].id, push(devices[d], seq, &vec![fill; len]), quota)
                        .await;
                    if let Ok(pushed) = result {
                        stored += 1;
                        spaces[k].next[d] += 1;
                        spaces[k].head = spaces[k].head.max(pushed.relay_seq);
                    }
                }
                19 | 20 => {
                    // A replay (the same bytes) or a reused sequence (others): neither stores.
                    let seq = 1 + rng.below(spaces[k].next[d]);
                    let len = 1 + rng.below(64) as usize;
                    let _ = b
                        .storage
                        .push(spaces[k].id, push(devices[d], seq, &vec![1; len]), quota)
                        .await;
                }
                21..=26 => {
                    // Mostly runs the device has pushed (two to four chunks), some not.
                    let next = spaces[k].next[d];
                    let first = 1 + rng.below(next.saturating_sub(2).max(1));
                    let last =
                        (first + 1 + rng.below(3)).min(next.saturating_sub(1).max(first + 1));
                    let len = 1 + rng.below(80) as usize;
                    let r = rollup(devices[d], first, last, &vec![2; len]);
                    if b.storage.push_rollup(spaces[k].id, r, quota).await.is_ok() {
                        rolled_up += 1;
                    }
                }
                27..=32 => {
                    let mixed = &spaces[k];
                    let covers = mixed.covers + rng.below(mixed.head - mixed.covers + 1);
                    let grace = if rng.below(2) == 0 { NO_GRACE } else { DAY };
                    let len = 1 + rng.below(40) as usize;
                    let snapshot = Snapshot {
                        covers,
                        payload: vec![3; len],
                    };
                    if b.storage
                        .put_snapshot(mixed.id, snapshot, quota, grace)
                        .await
                        .is_ok()
                    {
                        snapshots += 1;
                        spaces[k].covers = covers;
                    }
                }
                33..=36 => {
                    let max = 1 + rng.below(5) as usize;
                    if let Ok(done) = b.storage.sweep_pruned(NO_GRACE, max, u64::MAX).await {
                        swept += done.chunks;
                    }
                }
                37 => {
                    // The relay-wide limit somewhere near what is stored: some writes refused.
                    let total = ok(b.storage.total_bytes().await, "total");
                    b.storage
                        .set_total_quota(total.saturating_add(rng.below(400)));
                }
                38 => b.storage.set_total_quota(u64::MAX),
                _ => {
                    if ok(
                        b.storage.erase(spaces[k].id, EraseReason::Erased).await,
                        "erase",
                    ) {
                        erased += 1;
                    }
                    made += 1;
                    let id = SpaceId([seed as u8 * 40 + made; 32]);
                    b.storage.set_total_quota(u64::MAX);
                    created(b, id).await;
                    spaces[k] = Mixed {
                        id,
                        next: [1, 1],
                        head: 0,
                        covers: 0,
                    };
                }
            }
            counters_agree(b).await;
        }
    }
    assert!(
        stored > 100 && rolled_up > 5 && snapshots > 10 && swept > 5 && erased > 2,
        "the mix reached every kind of write: {stored} pushes, {rolled_up} rollups, \
         {snapshots} snapshots, {swept} swept, {erased} erases"
    );
}

/// Erasing removes chunks, snapshot and token; the id can then be created afresh.
pub async fn erase_removes_everything(b: &Backend) {
    created(b, space(1)).await;
    created(b, space(2)).await;
    pushed(b, space(1), push(DEVICE_A, 1, b"gone")).await;
    pushed(b, space(2), push(DEVICE_A, 1, b"kept")).await;
    let snapshot = Snapshot {
        covers: 1,
        payload: b"gone too".to_vec(),
    };
    ok(
        b.storage
            .put_snapshot(space(1), snapshot, QUOTA, NO_GRACE)
            .await,
        "snapshot",
    );
    assert!(ok(
        b.storage.erase(space(1), EraseReason::Erased).await,
        "erase"
    ));
    assert_eq!(ok(b.storage.token_hash(space(1)).await, "hash"), None);
    assert!(matches!(
        b.storage.pull(space(1), all(0)).await,
        Err(StorageError::SpaceNotFound)
    ));
    assert!(ok(b.storage.get_snapshot(space(1)).await, "get").is_none());
    // An erased space stays erased, whatever token tries to bring it back.
    for hash in [HASH_A, HASH_B] {
        assert!(matches!(
            b.storage.create_space(space(1), hash).await,
            Err(StorageError::SpaceErased(EraseReason::Erased))
        ));
    }
    let tombstone = ok(b.storage.tombstone(space(1)).await, "tombstone");
    assert_eq!(tombstone.map(|t| t.reason), Some(EraseReason::Erased));
    assert!(tombstone.is_some_and(|t| t.erased_at > 0));
    assert!(matches!(
        b.storage
            .push(space(1), push(DEVICE_A, 1, b"new life"), QUOTA)
            .await,
        Err(StorageError::SpaceNotFound)
    ));
    let other = ok(b.storage.pull(space(2), all(0)).await, "other space");
    assert_eq!(other.chunks.len(), 1);
}

const DEVICE_C: DeviceId = DeviceId([0x0c; 16]);

/// The (device, last seen) pairs `space` lists.
async fn seen(b: &Backend, space: SpaceId) -> Vec<(DeviceId, u64)> {
    ok(b.storage.devices(space).await, "devices")
        .devices
        .into_iter()
        .map(|d| (d.device_id, d.last_seen))
        .collect()
}

pub async fn devices_are_seen_by_the_hour_and_bounded(b: &Backend) {
    let hour = 1_780_000_000 / 3600 * 3600;
    created(b, space(1)).await;
    created(b, space(2)).await;
    let touch = |space, device, at| b.storage.touch_device(space, device, at);
    ok(touch(space(1), DEVICE_B, hour + 3600 + 5).await, "touch");
    ok(touch(space(1), DEVICE_A, hour + 1799).await, "touch");
    // Kept at the hour only, per device, in id order, and never moved back.
    assert_eq!(
        seen(b, space(1)).await,
        [(DEVICE_A, hour), (DEVICE_B, hour + 3600)]
    );
    ok(touch(space(1), DEVICE_B, hour + 10).await, "touch");
    ok(touch(space(1), DEVICE_A, hour + 7300).await, "touch");
    assert_eq!(
        seen(b, space(1)).await,
        [(DEVICE_A, hour + 7200), (DEVICE_B, hour + 3600)]
    );
    // Another space, and one the relay does not hold, list nothing.
    assert!(seen(b, space(2)).await.is_empty());
    ok(touch(space(9), DEVICE_A, hour).await, "touch unknown");
    assert!(seen(b, space(9)).await.is_empty());
    // A space keeps its most recently seen devices up to the bound.
    let extra = 3u8;
    for i in 0..(MAX_LISTED_DEVICES as u8 + extra) {
        let at = hour + u64::from(i) * 3600;
        ok(touch(space(2), DeviceId([i; 16]), at).await, "touch many");
    }
    let listed = seen(b, space(2)).await;
    assert_eq!(listed.len(), MAX_LISTED_DEVICES);
    assert_eq!(listed.first().map(|d| d.0), Some(DeviceId([extra; 16])));
    // Erasing a space forgets its devices.
    assert!(ok(
        b.storage.erase(space(1), EraseReason::Erased).await,
        "erase"
    ));
    assert!(seen(b, space(1)).await.is_empty());
}

fn rollup(device_id: DeviceId, first_seq: u64, last_seq: u64, payload: &[u8]) -> RollupPush {
    RollupPush {
        device_id,
        first_seq,
        last_seq,
        payload: payload.to_vec(),
    }
}

fn with_rollups(after: u64) -> PullRequest {
    PullRequest {
        rollups: true,
        ..all(after)
    }
}

/// The relay sequences of a page's chunks and rollups (each rollup as its first and last), its
/// cursor and whether more follows. The page must also pass the protocol's decoder.
fn shape(page: &Page) -> (Vec<u64>, Vec<(u64, u64)>, u64, bool) {
    let decoded = Page::decode(&page.to_bytes(), &Limits::DEFAULT);
    assert_eq!(decoded.as_ref().ok(), Some(page), "the page must decode");
    (
        page.chunks.iter().map(|c| c.relay_seq).collect(),
        page.rollups
            .iter()
            .map(|r| (r.relay_seq, r.last_relay_seq))
            .collect(),
        page.next_after,
        page.more,
    )
}

/// Interleaves three chunks of A with three of B: A at relay sequences 1, 3, 5 and B at 2, 4,
/// 6, each payload 10 bytes.
async fn interleaved(b: &Backend, target: SpaceId) {
    created(b, target).await;
    for seq in 1..=3u64 {
        pushed(b, target, push(DEVICE_A, seq, &[seq as u8; 10])).await;
        pushed(b, target, push(DEVICE_B, seq, &[0xb0 | seq as u8; 10])).await;
    }
}

async fn rolled(b: &Backend, target: SpaceId, r: RollupPush) -> RollupStored {
    ok(b.storage.push_rollup(target, r, QUOTA).await, "rollup")
}

fn mismatch(result: Result<RollupStored, StorageError>) -> bool {
    matches!(result, Err(StorageError::RollupMismatch { .. }))
}

/// A rollup is stored only for a run of the device's own chunks that the space holds, none of
/// them stood for by another rollup, and a range of bounded length; the same range again is a
/// duplicate and the first payload stands.
pub async fn rollups_are_checked_against_the_log(b: &Backend) {
    assert!(matches!(
        b.storage
            .push_rollup(space(9), rollup(DEVICE_A, 1, 1, b"r"), QUOTA)
            .await,
        Err(StorageError::SpaceNotFound)
    ));
    interleaved(b, space(1)).await;
    // A chunk of the range was never pushed (A has 1..=3), or was pushed by another device.
    for r in [
        rollup(DEVICE_A, 2, 4, b"r"),
        rollup(DEVICE_C, 1, 1, b"r"),
        rollup(DEVICE_A, 3, 2, b"r"),
        rollup(DEVICE_A, 1, MAX_ROLLUP_CHUNKS, b"r"),
        rollup(DEVICE_A, u64::MAX - 1, u64::MAX, b"r"),
    ] {
        assert!(mismatch(b.storage.push_rollup(space(1), r, QUOTA).await));
    }
    assert_eq!(
        rolled(b, space(1), rollup(DEVICE_A, 1, 2, b"first")).await,
        RollupStored {
            relay_seq: 1,
            last_relay_seq: 3,
            duplicate: false
        }
    );
    assert_eq!(
        rolled(b, space(1), rollup(DEVICE_A, 1, 2, b"second")).await,
        RollupStored {
            relay_seq: 1,
            last_relay_seq: 3,
            duplicate: true
        }
    );
    // Overlapping the stored one, from either side.
    for r in [
        rollup(DEVICE_A, 2, 3, b"r"),
        rollup(DEVICE_A, 1, 3, b"r"),
        rollup(DEVICE_A, 2, 2, b"r"),
    ] {
        assert!(mismatch(b.storage.push_rollup(space(1), r, QUOTA).await));
    }
    // Next to it is fine, and so is another device's run over the same relay sequences.
    assert_eq!(
        rolled(b, space(1), rollup(DEVICE_A, 3, 3, b"third")).await,
        RollupStored {
            relay_seq: 5,
            last_relay_seq: 5,
            duplicate: false
        }
    );
    assert_eq!(
        rolled(b, space(1), rollup(DEVICE_B, 1, 3, b"bees")).await,
        RollupStored {
            relay_seq: 2,
            last_relay_seq: 6,
            duplicate: false
        }
    );
    let page = ok(b.storage.pull(space(1), with_rollups(0)).await, "pull");
    assert_eq!(page.rollups.len(), 3);
    assert_eq!(page.rollups[0].payload, b"first");
    assert!(page.chunks.is_empty());
    // The longest range accepted.
    created(b, space(2)).await;
    // Pushed concurrently, so the backends commit them in groups.
    for start in (1..=MAX_ROLLUP_CHUNKS).step_by(512) {
        let pushes = (start..start + 512)
            .map(|seq| b.storage.push(space(2), push(DEVICE_A, seq, b"x"), QUOTA));
        for result in futures_util::future::join_all(pushes).await {
            ok(result, "push");
        }
    }
    assert!(mismatch(
        b.storage
            .push_rollup(
                space(2),
                rollup(DEVICE_A, 1, MAX_ROLLUP_CHUNKS + 1, b"r"),
                QUOTA
            )
            .await
    ));
    assert_eq!(
        rolled(b, space(2), rollup(DEVICE_A, 1, MAX_ROLLUP_CHUNKS, b"all")).await,
        RollupStored {
            relay_seq: 1,
            last_relay_seq: MAX_ROLLUP_CHUNKS,
            duplicate: false
        }
    );
}

/// The first announcement offered to end a space's epoch is the one every later offer is
/// answered with; each space keeps its own; an unknown or erased space keeps none.
pub async fn the_first_successor_offered_is_kept_for_good(b: &Backend) {
    assert!(matches!(
        b.storage.claim_successor(space(1), [1; 32]).await,
        Err(StorageError::SpaceNotFound)
    ));
    ok(b.storage.create_space(space(1), HASH_A).await, "create");
    ok(b.storage.create_space(space(2), HASH_A).await, "create");
    let (first, second) = tokio::join!(
        b.storage.claim_successor(space(1), [1; 32]),
        b.storage.claim_successor(space(1), [2; 32]),
    );
    let (first, second) = (ok(first, "first"), ok(second, "second"));
    assert_eq!(first, second, "two offers at once were both kept");
    assert!(first == [1; 32] || first == [2; 32]);
    assert_eq!(
        ok(b.storage.claim_successor(space(1), [3; 32]).await, "later"),
        first
    );
    assert_eq!(
        ok(b.storage.claim_successor(space(2), [4; 32]).await, "other"),
        [4; 32]
    );
    // Pushes and snapshots leave it as it was.
    ok(
        b.storage
            .push(space(1), push(DEVICE_B, 1, b"after"), QUOTA)
            .await,
        "push",
    );
    assert_eq!(
        ok(b.storage.claim_successor(space(1), [5; 32]).await, "kept"),
        first
    );
    assert!(ok(
        b.storage.erase(space(1), EraseReason::Retired).await,
        "retire"
    ));
    assert!(b.storage.claim_successor(space(1), [6; 32]).await.is_err());
}

/// A retired space's tombstone says so; a space never erased, or still live, has none.
pub async fn tombstones_keep_the_reason_and_only_erased_spaces_have_one(b: &Backend) {
    assert_eq!(ok(b.storage.tombstone(space(1)).await, "none yet"), None);
    ok(b.storage.create_space(space(1), HASH_A).await, "create");
    ok(b.storage.create_space(space(2), HASH_A).await, "create");
    assert_eq!(ok(b.storage.tombstone(space(1)).await, "live"), None);
    assert!(ok(
        b.storage.erase(space(1), EraseReason::Retired).await,
        "retire"
    ));
    let tombstone = ok(b.storage.tombstone(space(1)).await, "retired");
    assert_eq!(tombstone.map(|t| t.reason), Some(EraseReason::Retired));
    assert!(matches!(
        b.storage.create_space(space(1), HASH_A).await,
        Err(StorageError::SpaceErased(EraseReason::Retired))
    ));
    // Erasing again finds nothing to erase and leaves the tombstone as it was.
    assert!(!ok(
        b.storage.erase(space(1), EraseReason::Erased).await,
        "again"
    ));
    let again = ok(b.storage.tombstone(space(1)).await, "still retired");
    assert_eq!(again, tombstone);
    assert_eq!(ok(b.storage.tombstone(space(2)).await, "other"), None);
}

/// A rollup's payload counts against the space's quota and the relay's total like a chunk's;
/// erasing the space gives it back.
pub async fn rollups_count_against_both_quotas_until_erased(b: &Backend) {
    interleaved(b, space(1)).await;
    // Six chunks of 10 bytes; the relay counts each one's row and the space too.
    assert_eq!(ok(b.storage.total_bytes().await, "total"), 60 + 6 * R + S);
    assert!(matches!(
        b.storage
            .push_rollup(space(1), rollup(DEVICE_A, 1, 3, &[0; 41]), 100)
            .await,
        Err(StorageError::QuotaExceeded {
            used: 60,
            adding: 41,
            quota: 100
        })
    ));
    // 100 payload bytes, seven rows and the space.
    let limit = 100 + 7 * R + S;
    b.storage.set_total_quota(limit);
    assert!(matches!(
        b.storage
            .push_rollup(space(1), rollup(DEVICE_A, 1, 3, &[0; 41]), QUOTA)
            .await,
        Err(StorageError::RelayFull {
            used,
            adding,
            limit: l
        }) if used == 60 + 6 * R + S && adding == 41 + R && l == limit
    ));
    let stored = ok(
        b.storage
            .push_rollup(space(1), rollup(DEVICE_A, 1, 3, &[0; 40]), 100)
            .await,
        "fits",
    );
    assert!(!stored.duplicate);
    assert_eq!(ok(b.storage.total_bytes().await, "total"), limit);
    // A duplicate adds nothing, even at the limits.
    assert!(
        ok(
            b.storage
                .push_rollup(space(1), rollup(DEVICE_A, 1, 3, &[0; 40]), 100)
                .await,
            "duplicate"
        )
        .duplicate
    );
    assert!(matches!(
        b.storage
            .push(space(1), push(DEVICE_A, 4, b"x"), QUOTA)
            .await,
        Err(StorageError::RelayFull { used, .. }) if used == limit
    ));
    assert!(ok(
        b.storage.erase(space(1), EraseReason::Erased).await,
        "erase"
    ));
    // All but the tombstone, which stays.
    assert_eq!(ok(b.storage.total_bytes().await, "total"), T);
}

/// With rollups asked for, a rollup above the cursor replaces its chunks and sits at its first
/// chunk's place; at or below the cursor its chunks are served one by one; never to its own
/// device, nor to a pull that did not ask.
pub async fn pulls_serve_rollups_in_place_of_their_chunks(b: &Backend) {
    interleaved(b, space(1)).await;
    rolled(b, space(1), rollup(DEVICE_A, 1, 3, b"rolled")).await;
    let plain = ok(b.storage.pull(space(1), all(0)).await, "plain");
    assert_eq!(shape(&plain), (vec![1, 2, 3, 4, 5, 6], vec![], 6, false));
    let page = ok(b.storage.pull(space(1), with_rollups(0)).await, "rollups");
    assert_eq!(shape(&page), (vec![2, 4, 6], vec![(1, 5)], 6, false));
    let r = &page.rollups[0];
    assert_eq!(
        (r.device_id, r.first_seq, r.last_seq, r.payload.as_slice()),
        (DEVICE_A, 1, 3, &b"rolled"[..])
    );
    assert_eq!(page.after_mark, None);
    assert_eq!(page.next_mark, plain.next_mark);
    // The cursor is past its first chunk: the device may hold part of the range.
    let page = ok(b.storage.pull(space(1), with_rollups(1)).await, "after 1");
    assert_eq!(shape(&page), (vec![2, 3, 4, 5, 6], vec![], 6, false));
    // Its own device gets neither the rollup nor the chunks.
    let mine = PullRequest {
        exclude_device: Some(DEVICE_A),
        ..with_rollups(0)
    };
    let page = ok(b.storage.pull(space(1), mine).await, "own");
    assert_eq!(shape(&page), (vec![2, 4, 6], vec![], 6, false));
    let theirs = PullRequest {
        exclude_device: Some(DEVICE_B),
        ..with_rollups(0)
    };
    let page = ok(b.storage.pull(space(1), theirs).await, "other");
    assert_eq!(shape(&page), (vec![], vec![(1, 5)], 6, false));
}

/// A page holding a rollup never ends inside its range: it ends before the rollup, or takes
/// everything up to its last chunk; a first rollup that cannot fit that way is passed over and
/// its chunks served one by one.
pub async fn rollup_pages_never_end_inside_a_rollup(b: &Backend) {
    created(b, space(1)).await;
    // B at 1, then A at 2, 4 and B at 3, 5.
    pushed(b, space(1), push(DEVICE_B, 1, b"b1")).await;
    for seq in 1..=2u64 {
        pushed(b, space(1), push(DEVICE_A, seq, b"a")).await;
        pushed(b, space(1), push(DEVICE_B, seq + 1, b"b")).await;
    }
    rolled(b, space(1), rollup(DEVICE_A, 1, 2, b"rolled")).await;
    let limited = |after, limit| PullRequest {
        limit,
        ..with_rollups(after)
    };
    // Two entries cannot hold the rollup and the chunk inside its range: end before it.
    let page = ok(b.storage.pull(space(1), limited(0, 2)).await, "before");
    assert_eq!(shape(&page), (vec![1], vec![], 1, true));
    // From there the rollup comes first and two entries finish it: the cursor is its last chunk.
    let page = ok(b.storage.pull(space(1), limited(1, 2)).await, "whole");
    assert_eq!(shape(&page), (vec![3], vec![(2, 4)], 4, true));
    let page = ok(b.storage.pull(space(1), limited(4, 2)).await, "after it");
    assert_eq!(shape(&page), (vec![5], vec![], 5, false));
    // One entry cannot finish it even first: passed over, its chunks served one by one.
    let page = ok(b.storage.pull(space(1), limited(1, 1)).await, "passed over");
    assert_eq!(shape(&page), (vec![2], vec![], 2, true));
    let page = ok(b.storage.pull(space(1), limited(2, 1)).await, "inside");
    assert_eq!(shape(&page), (vec![3], vec![], 3, true));
    // Pulled from the start, every chunk arrives once, by itself or in the rollup.
    for (limit, want_chunks, want_rollups) in [(2, vec![1, 3, 5], 1), (1, vec![1, 2, 3, 4, 5], 0)] {
        let (mut after, mut chunks, mut rollups) = (0, Vec::new(), 0);
        loop {
            let page = ok(
                b.storage.pull(space(1), limited(after, limit)).await,
                "walk",
            );
            chunks.extend(page.chunks.iter().map(|c| c.relay_seq));
            rollups += page.rollups.len();
            after = page.next_after;
            if !page.more {
                break;
            }
        }
        assert_eq!(
            (chunks, rollups),
            (want_chunks, want_rollups),
            "limit {limit}"
        );
    }
}

/// Rollups count against the page's byte cap with the chunks; a rollup alone always fits.
pub async fn rollup_pages_respect_the_byte_cap(b: &Backend) {
    interleaved(b, space(1)).await;
    rolled(b, space(1), rollup(DEVICE_A, 1, 3, &[7; 50])).await;
    let capped = |after, max_bytes| PullRequest {
        max_bytes,
        ..with_rollups(after)
    };
    // 50 + 10 + 10 cannot finish it within 69 bytes: passed over.
    let page = ok(b.storage.pull(space(1), capped(0, 69)).await, "passed over");
    assert_eq!(shape(&page).0, vec![1, 2, 3, 4, 5, 6]);
    assert!(page.rollups.is_empty());
    let page = ok(b.storage.pull(space(1), capped(0, 70)).await, "fits");
    assert_eq!(shape(&page), (vec![2, 4], vec![(1, 5)], 5, true));
    // Alone, a rollup larger than the cap is served.
    created(b, space(2)).await;
    pushed(b, space(2), push(DEVICE_A, 1, b"a")).await;
    pushed(b, space(2), push(DEVICE_B, 1, b"b")).await;
    rolled(b, space(2), rollup(DEVICE_A, 1, 1, &[7; 50])).await;
    let page = ok(b.storage.pull(space(2), capped(0, 5)).await, "alone");
    assert_eq!(shape(&page), (vec![], vec![(1, 1)], 1, true));
}

/// A snapshot prunes the rollups at or below its coverage like chunks: served with
/// `include_pruned` until swept, counted until then; once a rollup is deleted its chunks are
/// served one by one again, if still held.
/// A rollup stored after a snapshot covered its first chunk (a device that was offline rolls
/// up late) is pruned as it is stored: the sweep deletes it, and its bytes come back.
pub async fn a_rollup_stored_under_the_snapshot_is_swept_with_its_chunks(b: &Backend) {
    interleaved(b, space(1)).await;
    let snapshot = Snapshot {
        covers: 2,
        payload: vec![0; 5],
    };
    ok(
        b.storage.put_snapshot(space(1), snapshot, QUOTA, DAY).await,
        "snapshot",
    );
    let before = ok(b.storage.total_bytes().await, "total");
    rolled(b, space(1), rollup(DEVICE_A, 1, 2, &[7; 30])).await;
    assert_eq!(ok(b.storage.total_bytes().await, "total"), before + 30 + R);
    let swept = ok(
        b.storage.sweep_pruned(NO_GRACE, 100, u64::MAX).await,
        "sweep",
    );
    // The two pruned chunks (10 bytes each) and the rollup.
    assert_eq!(
        swept,
        Swept {
            chunks: 3,
            bytes: 50
        }
    );
    // The payloads go; the rollup's row stays, and counts.
    assert_eq!(ok(b.storage.total_bytes().await, "total"), before + R - 20);
}

pub async fn pruned_rollups_are_served_until_swept(b: &Backend) {
    interleaved(b, space(1)).await;
    rolled(b, space(1), rollup(DEVICE_A, 1, 2, &[7; 30])).await;
    let snapshot = Snapshot {
        covers: 2,
        payload: vec![0; 5],
    };
    ok(
        b.storage.put_snapshot(space(1), snapshot, QUOTA, DAY).await,
        "snapshot",
    );
    assert_eq!(ok(b.storage.total_bytes().await, "total"), 95 + 7 * R + S);
    assert!(matches!(
        b.storage.pull(space(1), with_rollups(0)).await,
        Err(StorageError::Pruned { snapshot_covers: 2 })
    ));
    let held = PullRequest {
        include_pruned: true,
        ..with_rollups(0)
    };
    let page = ok(b.storage.pull(space(1), held).await, "held");
    assert_eq!(shape(&page), (vec![2, 4, 5, 6], vec![(1, 3)], 6, false));
    // Past the grace, the pruned chunks (1, 2) and the rollup (at 1) are deleted.
    assert_eq!(
        ok(
            b.storage.sweep_pruned(NO_GRACE, 100, u64::MAX).await,
            "sweep"
        ),
        Swept {
            chunks: 3,
            bytes: 50
        }
    );
    assert_eq!(ok(b.storage.total_bytes().await, "total"), 45 + 7 * R + S);
    // Its chunks are served again: the first is gone, so a pull from 0 is answered pruned...
    assert!(matches!(
        b.storage.pull(space(1), held).await,
        Err(StorageError::Pruned { snapshot_covers: 2 })
    ));
    // ...and one from the snapshot gets A's second chunk itself.
    let page = ok(b.storage.pull(space(1), with_rollups(2)).await, "after");
    assert_eq!(shape(&page), (vec![3, 4, 5, 6], vec![], 6, false));
    // A deleted chunk cannot be rolled up; the deleted rollup's range stays taken.
    assert!(mismatch(
        b.storage
            .push_rollup(space(1), rollup(DEVICE_B, 1, 2, b"r"), QUOTA)
            .await
    ));
    assert!(mismatch(
        b.storage
            .push_rollup(space(1), rollup(DEVICE_A, 2, 3, b"r"), QUOTA)
            .await
    ));
    assert!(
        ok(
            b.storage
                .push_rollup(space(1), rollup(DEVICE_A, 1, 2, b"again"), QUOTA)
                .await,
            "replay"
        )
        .duplicate
    );
    // A snapshot without grace deletes a rollup it prunes at once.
    rolled(b, space(1), rollup(DEVICE_B, 3, 3, &[1; 4])).await;
    let snapshot = Snapshot {
        covers: 6,
        payload: vec![0; 5],
    };
    ok(
        b.storage
            .put_snapshot(space(1), snapshot, QUOTA, NO_GRACE)
            .await,
        "snapshot without grace",
    );
    // The snapshot, the eight rows kept and the space.
    assert_eq!(ok(b.storage.total_bytes().await, "total"), 5 + 8 * R + S);
}

/// The sizes of a tail are what an unlimited pull with rollups and pruned chunks would serve.
pub async fn sizes_sum_what_a_pull_would_serve(b: &Backend) {
    assert!(matches!(
        b.storage.sizes(space(9), 0, None).await,
        Err(StorageError::SpaceNotFound)
    ));
    interleaved(b, space(1)).await;
    rolled(b, space(1), rollup(DEVICE_A, 1, 3, &[7; 25])).await;
    let check = |after: u64, exclude: Option<DeviceId>| async move {
        let sizes = ok(b.storage.sizes(space(1), after, exclude).await, "sizes");
        let request = PullRequest {
            exclude_device: exclude,
            include_pruned: true,
            ..with_rollups(after)
        };
        let page = ok(b.storage.pull(space(1), request).await, "pull");
        let bytes: usize = page.chunks.iter().map(|c| c.payload.len()).sum::<usize>()
            + page.rollups.iter().map(|r| r.payload.len()).sum::<usize>();
        assert_eq!(sizes.head, 6);
        assert_eq!(sizes.tail_bytes, bytes as u64, "after {after}");
        assert_eq!(
            sizes.tail_entries,
            (page.chunks.len() + page.rollups.len()) as u64
        );
        sizes
    };
    let sizes = check(0, None).await;
    assert_eq!(
        (
            sizes.snapshot,
            sizes.tail_bytes,
            sizes.tail_entries,
            sizes.tail_held
        ),
        (None, 55, 4, true)
    );
    assert_eq!(check(1, None).await.tail_bytes, 50);
    assert_eq!(check(0, Some(DEVICE_A)).await.tail_bytes, 30);
    assert_eq!(check(0, Some(DEVICE_B)).await.tail_bytes, 25);
    assert_eq!(check(6, None).await.tail_entries, 0);
    let snapshot = Snapshot {
        covers: 2,
        payload: vec![0; 5],
    };
    ok(
        b.storage.put_snapshot(space(1), snapshot, QUOTA, DAY).await,
        "snapshot",
    );
    let sizes = check(0, None).await;
    assert_eq!((sizes.snapshot, sizes.tail_held), (Some((2, 5)), true));
    ok(
        b.storage.sweep_pruned(NO_GRACE, 100, u64::MAX).await,
        "sweep",
    );
    // The rollup and chunks 1 and 2 are gone: the tail from 0 needs chunk 1.
    let sizes = ok(b.storage.sizes(space(1), 0, None).await, "sizes");
    assert!(!sizes.tail_held);
    assert_eq!(sizes.tail_entries, 6);
    assert!(check(2, None).await.tail_held);
}

/// Subscribers hear each committed chunk in order, not replays, and hear an erase. Hints
/// (a head, a resync) may come in between: they only send a socket back to storage.
pub async fn commits_are_published_in_order(b: &Backend) {
    created(b, space(1)).await;
    let mut subscription = b.hub.subscribe(&space(1));
    for i in 1..=3 {
        pushed(b, space(1), push(DEVICE_A, i, &[i as u8])).await;
    }
    pushed(b, space(1), push(DEVICE_A, 1, &[1])).await;
    assert!(ok(
        b.storage.erase(space(1), EraseReason::Erased).await,
        "erase"
    ));
    let mut expected = 1u64;
    loop {
        let event = tokio::time::timeout(std::time::Duration::from_secs(10), subscription.recv())
            .await
            .unwrap_or_else(|_| panic!("no event after chunk {}", expected - 1));
        match event {
            Ok(LiveEvent::Chunk(chunk)) => {
                assert_eq!(
                    (chunk.relay_seq, chunk.payload.as_slice()),
                    (expected, &[expected as u8][..])
                );
                expected += 1;
            }
            Ok(LiveEvent::Head(head)) => assert!(head <= 3, "head {head} beyond the log"),
            Ok(LiveEvent::Resync) => {}
            Ok(LiveEvent::Erased) => break,
            Err(error) => panic!("subscription failed: {error}"),
        }
    }
    assert_eq!(expected, 4, "every chunk before the erase");
}

/// Creations are counted per client and per window.
pub async fn creations_are_counted_per_client_and_window(b: &Backend) {
    let (a, other) = ([1; 32], [2; 32]);
    for expected in 1..=3 {
        assert_eq!(
            ok(b.storage.count_creation(a, 3600, 0).await, "count"),
            expected
        );
    }
    assert_eq!(
        ok(b.storage.count_creation(other, 3600, 0).await, "other"),
        1
    );
    assert_eq!(
        ok(b.storage.count_creation(a, 7200, 3600).await, "next window"),
        1
    );
    assert_eq!(
        ok(b.storage.count_creation(a, 3600, 3600).await, "same window"),
        4
    );
}

/// A working backend is ready; a closed one is not.
pub async fn ready_until_closed(b: &Backend) {
    ok(b.storage.ready().await, "ready");
    ok(b.storage.close().await, "close");
    assert!(b.storage.ready().await.is_err());
}

/// After `close`, writes fail with `Closed` and nothing hangs.
pub async fn close_refuses_new_work(b: &Backend) {
    created(b, space(1)).await;
    pushed(b, space(1), push(DEVICE_A, 1, b"before")).await;
    ok(b.storage.close().await, "close");
    assert!(matches!(
        b.storage
            .push(space(1), push(DEVICE_A, 2, b"after"), QUOTA)
            .await,
        Err(StorageError::Closed)
    ));
}

/// A fixed clock for pairing checks: times are passed in, never read.
const T0: u64 = 1_800_000_000;
const TTL: u64 = 600;
const LINGER: Duration = Duration::from_secs(3600);

fn new_pairing(choice: MailboxChoice, max_live: u64) -> NewPairing {
    NewPairing {
        choice,
        host_hash: HASH_A,
        now: T0,
        expires_at: T0 + TTL,
        max_live,
    }
}

async fn open_short(b: &Backend, pick: u64) -> String {
    b.storage
        .open_pairing(new_pairing(MailboxChoice::Short { pick }, 10_000))
        .await
        .unwrap_or_else(|e| panic!("open: {e}"))
}

async fn inbox(
    b: &Backend,
    mailbox: &str,
    reader: PairingSide,
    after: u64,
    now: u64,
) -> PairingInbox {
    b.storage
        .read_pairing(mailbox.to_owned(), reader, after, now)
        .await
        .unwrap_or_else(|e| panic!("read: {e}"))
}

async fn post(
    b: &Backend,
    mailbox: &str,
    side: PairingSide,
    body: &[u8],
) -> Result<u64, StorageError> {
    b.storage
        .post_pairing(mailbox.to_owned(), side, body.to_vec(), T0 + 1)
        .await
}

/// Short numbers fill the two-digit range first, at random among the free ones; long ids are
/// taken as given, once.
pub async fn pairings_get_short_numbers_or_long_ids(b: &Backend) {
    let mut numbers = HashSet::new();
    for pick in 0..99u64 {
        let mailbox = open_short(b, pick.wrapping_mul(7_919)).await;
        let number: u64 = mailbox.parse().unwrap_or_else(|e| panic!("{mailbox}: {e}"));
        assert!((1..=99).contains(&number), "{mailbox}");
        assert!(numbers.insert(number), "{mailbox} handed out twice");
    }
    let third = open_short(b, 5).await;
    assert_eq!(third.len(), 3, "the two-digit range is full: {third}");
    assert!(!third.starts_with('0'));
    let long = "0123456789abcdef0123456789abcdef".to_owned();
    let opened = b
        .storage
        .open_pairing(new_pairing(MailboxChoice::Long(long.clone()), 10_000))
        .await;
    assert_eq!(opened.ok(), Some(long.clone()));
    assert!(matches!(
        b.storage
            .open_pairing(new_pairing(MailboxChoice::Long(long.clone()), 10_000))
            .await,
        Err(StorageError::PairingUsed)
    ));
    let record = b
        .storage
        .pairing(long, T0)
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(
        record,
        Some(PairingRecord {
            host_hash: HASH_A,
            guest_hash: None,
            state: PairingState::Open,
            expires_at: T0 + TTL,
        })
    );
    assert!(matches!(
        b.storage.pairing("123456".into(), T0).await,
        Ok(None)
    ));
}

/// Only the first claim succeeds; unknown and expired mailboxes are told apart.
pub async fn a_pairing_is_claimed_once(b: &Backend) {
    let mailbox = open_short(b, 1).await;
    let expires = b
        .storage
        .claim_pairing(mailbox.clone(), HASH_B, T0 + 1)
        .await;
    assert_eq!(expires.ok(), Some(T0 + TTL));
    let record = b
        .storage
        .pairing(mailbox.clone(), T0 + 1)
        .await
        .ok()
        .flatten();
    assert_eq!(
        record.map(|r| (r.guest_hash, r.state)),
        Some((Some(HASH_B), PairingState::Claimed))
    );
    assert!(matches!(
        b.storage
            .claim_pairing(mailbox.clone(), [0xcc; 32], T0 + 2)
            .await,
        Err(StorageError::PairingUsed)
    ));
    assert!(matches!(
        b.storage.claim_pairing("654321".into(), HASH_B, T0).await,
        Err(StorageError::PairingUnknown)
    ));
    let late = open_short(b, 2).await;
    assert!(matches!(
        b.storage
            .claim_pairing(late.clone(), HASH_B, T0 + TTL)
            .await,
        Err(StorageError::PairingExpired)
    ));
    // A closed mailbox is used up too.
    let closed = open_short(b, 3).await;
    assert!(
        b.storage
            .close_pairing(closed.clone(), false, T0)
            .await
            .is_ok()
    );
    assert!(matches!(
        b.storage.claim_pairing(closed, HASH_B, T0 + 1).await,
        Err(StorageError::PairingUsed)
    ));
}

/// Each side reads the other's messages, numbered from 1 per side, after its cursor; a side
/// may post at most the cap.
pub async fn pairing_messages_flow_both_ways_up_to_the_cap(b: &Backend) {
    let mailbox = open_short(b, 9).await;
    assert_eq!(
        post(b, &mailbox, PairingSide::Host, b"hello").await.ok(),
        Some(1)
    );
    assert!(
        b.storage
            .claim_pairing(mailbox.clone(), HASH_B, T0 + 1)
            .await
            .is_ok()
    );
    assert_eq!(
        post(b, &mailbox, PairingSide::Guest, b"hi").await.ok(),
        Some(1)
    );
    assert_eq!(
        post(b, &mailbox, PairingSide::Host, b"second").await.ok(),
        Some(2)
    );
    let guest_view = inbox(b, &mailbox, PairingSide::Guest, 0, T0 + 2).await;
    assert_eq!(
        guest_view,
        PairingInbox {
            state: PairingState::Claimed,
            messages: vec![
                PairingMessage {
                    seq: 1,
                    body: b"hello".to_vec()
                },
                PairingMessage {
                    seq: 2,
                    body: b"second".to_vec()
                },
            ],
        }
    );
    let after_one = inbox(b, &mailbox, PairingSide::Guest, 1, T0 + 2).await;
    assert_eq!(
        after_one.messages.iter().map(|m| m.seq).collect::<Vec<_>>(),
        [2]
    );
    let host_view = inbox(b, &mailbox, PairingSide::Host, 0, T0 + 2).await;
    assert_eq!(
        host_view.messages,
        vec![PairingMessage {
            seq: 1,
            body: b"hi".to_vec()
        }]
    );
    for seq in 3..=MAX_MESSAGES_PER_SIDE {
        assert_eq!(
            post(b, &mailbox, PairingSide::Host, &[seq as u8])
                .await
                .ok(),
            Some(seq)
        );
    }
    assert!(matches!(
        post(b, &mailbox, PairingSide::Host, b"one too many").await,
        Err(StorageError::PairingFull { .. })
    ));
    assert_eq!(
        post(b, &mailbox, PairingSide::Guest, b"still room")
            .await
            .ok(),
        Some(2)
    );
    let all = inbox(b, &mailbox, PairingSide::Guest, 0, T0 + 2).await;
    assert_eq!(all.messages.len() as u64, MAX_MESSAGES_PER_SIDE);
    assert!(matches!(
        post(b, "777777", PairingSide::Host, b"x").await,
        Err(StorageError::PairingUnknown)
    ));
}

/// Closing deletes every body at once and refuses later posts; closing again changes nothing;
/// a burned mailbox stays burned.
pub async fn closing_a_pairing_deletes_bodies_and_burning_sticks(b: &Backend) {
    let mailbox = open_short(b, 4).await;
    assert!(
        post(b, &mailbox, PairingSide::Host, b"secret")
            .await
            .is_ok()
    );
    let closed = b
        .storage
        .close_pairing(mailbox.clone(), false, T0 + 2)
        .await;
    assert_eq!(closed.ok(), Some(Some(PairingState::Closed)));
    let view = inbox(b, &mailbox, PairingSide::Guest, 0, T0 + 2).await;
    assert_eq!(
        view,
        PairingInbox {
            state: PairingState::Closed,
            messages: vec![]
        }
    );
    assert!(matches!(
        post(b, &mailbox, PairingSide::Host, b"late").await,
        Err(StorageError::PairingClosed)
    ));
    assert_eq!(
        b.storage
            .close_pairing(mailbox.clone(), false, T0 + 3)
            .await
            .ok(),
        Some(None)
    );
    assert_eq!(
        b.storage
            .close_pairing(mailbox.clone(), true, T0 + 3)
            .await
            .ok(),
        Some(Some(PairingState::Burned))
    );
    assert_eq!(
        b.storage
            .close_pairing(mailbox.clone(), false, T0 + 4)
            .await
            .ok(),
        Some(None)
    );
    assert_eq!(
        b.storage
            .close_pairing(mailbox.clone(), true, T0 + 4)
            .await
            .ok(),
        Some(None)
    );
    let view = inbox(b, &mailbox, PairingSide::Host, 0, T0 + 4).await;
    assert_eq!(view.state, PairingState::Burned);
    // Past its expiry it still says burned, until it is forgotten.
    let view = inbox(b, &mailbox, PairingSide::Host, 0, T0 + TTL + 5).await;
    assert_eq!(view.state, PairingState::Burned);
    assert!(matches!(
        b.storage.close_pairing("888888".into(), true, T0).await,
        Err(StorageError::PairingUnknown)
    ));
}

/// Past its expiry a mailbox reads expired and refuses posts; the sweep marks it expired and
/// deletes its bodies, and forgets it an hour after expiry.
pub async fn pairings_expire_and_are_swept(b: &Backend) {
    let mailbox = open_short(b, 6).await;
    assert!(
        post(b, &mailbox, PairingSide::Host, b"soon gone")
            .await
            .is_ok()
    );
    let view = inbox(b, &mailbox, PairingSide::Guest, 0, T0 + TTL).await;
    assert_eq!(
        view,
        PairingInbox {
            state: PairingState::Expired,
            messages: vec![]
        }
    );
    assert!(matches!(
        b.storage
            .post_pairing(mailbox.clone(), PairingSide::Host, b"x".to_vec(), T0 + TTL)
            .await,
        Err(StorageError::PairingExpired)
    ));
    let untouched = b.storage.sweep_pairings(T0 + TTL - 1, LINGER).await;
    assert_eq!(untouched.ok(), Some(PairingSwept::default()));
    let swept = b.storage.sweep_pairings(T0 + TTL, LINGER).await;
    assert_eq!(
        swept.ok(),
        Some(PairingSwept {
            expired: 1,
            forgotten: 0
        })
    );
    // Expired once: a second sweep counts nothing.
    let again = b.storage.sweep_pairings(T0 + TTL + 1, LINGER).await;
    assert_eq!(again.ok(), Some(PairingSwept::default()));
    // Bodies are gone even to a clock that reads before the expiry.
    let view = inbox(b, &mailbox, PairingSide::Guest, 0, T0 + 1).await;
    assert_eq!(
        view,
        PairingInbox {
            state: PairingState::Expired,
            messages: vec![]
        }
    );
    let forgotten = b
        .storage
        .sweep_pairings(T0 + TTL + LINGER.as_secs(), LINGER)
        .await;
    assert_eq!(
        forgotten.ok(),
        Some(PairingSwept {
            expired: 0,
            forgotten: 1
        })
    );
    assert!(matches!(
        b.storage
            .read_pairing(mailbox.clone(), PairingSide::Host, 0, T0)
            .await,
        Err(StorageError::PairingUnknown)
    ));
    assert!(matches!(b.storage.pairing(mailbox, T0).await, Ok(None)));
}

/// Mailboxes open or claimed and not expired count against the cap; closed and expired ones
/// do not.
pub async fn live_pairings_are_capped(b: &Backend) {
    let first = b
        .storage
        .open_pairing(new_pairing(MailboxChoice::Short { pick: 0 }, 2))
        .await;
    let first = first.unwrap_or_else(|e| panic!("{e}"));
    assert!(
        b.storage
            .open_pairing(new_pairing(MailboxChoice::Short { pick: 1 }, 2))
            .await
            .is_ok()
    );
    assert!(matches!(
        b.storage
            .open_pairing(new_pairing(MailboxChoice::Short { pick: 2 }, 2))
            .await,
        Err(StorageError::PairingsFull { live: 2 })
    ));
    assert!(b.storage.close_pairing(first, false, T0).await.is_ok());
    assert!(
        b.storage
            .open_pairing(new_pairing(MailboxChoice::Short { pick: 3 }, 2))
            .await
            .is_ok()
    );
    let later = NewPairing {
        now: T0 + TTL,
        expires_at: T0 + 2 * TTL,
        ..new_pairing(MailboxChoice::Short { pick: 4 }, 2)
    };
    assert!(
        b.storage.open_pairing(later).await.is_ok(),
        "expired ones do not count"
    );
}
