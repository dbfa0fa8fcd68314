//! A device whose relay went back in time pushes its whole document again. A document larger
//! than a chunk must go as several chunks: one chunk past the relay's limit is refused for ever
//! and every later edit waits behind it.

use anyhow::{Context, Result, ensure};
use mend_core::{
    Body, Journal, Space,
    journal::OpenOptions,
    model::Share,
    sync::{MAX_BATCH_BYTES, SyncStore},
};

/// Text that compresses poorly, so the document outgrows a chunk with few records.
fn feeling(n: usize) -> String {
    let mut state = n as u64 ^ 0x9e37_79b9_7f4a_7c15;
    (0..1_200)
        .map(|_| {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            char::from(b'a' + (state % 26) as u8)
        })
        .collect()
}

#[test]
fn a_document_pushed_again_after_a_rewind_goes_in_chunks_within_the_limit() -> Result<()> {
    let dir = tempfile::tempdir()?;
    let mut journal =
        Journal::create_with(&dir.path().join("j.db"), "Alex", OpenOptions::default())?;
    for n in 0..400 {
        journal.add(Body::Share(Share {
            feeling: feeling(n),
            tough_question: false,
        }))?;
    }
    let whole = journal.save_space(Space::Couple)?;
    ensure!(
        whole.len() > MAX_BATCH_BYTES,
        "the document is too small to show anything: {} B",
        whole.len()
    );
    // Everything so far was acknowledged; then the relay lost it.
    let mut seq = 0;
    while let Some((device_seq, _)) = journal.next_batch(Space::Couple, MAX_BATCH_BYTES)? {
        seq += 1;
        journal.acknowledge(Space::Couple, device_seq, seq)?;
    }
    journal.relay_rewound(Space::Couple)?;

    let mut again = automerge::Automerge::new();
    let mut batches = 0;
    while let Some((device_seq, batch)) = journal.next_batch(Space::Couple, MAX_BATCH_BYTES)? {
        ensure!(
            batch.len() <= MAX_BATCH_BYTES,
            "batch {batches} is {} B, over the {MAX_BATCH_BYTES} B a batch may be",
            batch.len()
        );
        again.load_incremental(&batch)?;
        batches += 1;
        seq += 1;
        journal.acknowledge(Space::Couple, device_seq, seq)?;
        ensure!(batches < 1_000, "the batches never end");
    }
    ensure!(batches > 1, "the document went as {batches} batch");
    let mut heads: Vec<String> = again.get_heads().iter().map(|h| h.to_string()).collect();
    heads.sort();
    let mut expected = journal.heads(Space::Couple)?;
    expected.sort();
    ensure!(
        heads == expected,
        "the batches do not rebuild the document: {heads:?} vs {expected:?}"
    );
    let _ = whole.first().context("empty document")?;
    Ok(())
}
