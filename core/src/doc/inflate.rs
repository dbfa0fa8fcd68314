//! A bound on what Automerge inflates from bytes a peer sent.
//!
//! Automerge inflates a compressed change chunk, and the DEFLATE-compressed columns of a
//! document or a bundle, whole and with no limit of its own, before anything can be checked:
//! a payload of 1 MiB sealed by a device holding the space's key could ask a phone for
//! gigabytes, and the phone would be killed at every sync that reads it. Automerge offers no
//! option for this, so [`within`] walks the bytes first: at every place Automerge could begin
//! to read a chunk (its four magic bytes, wherever they are: the wrappers around Automerge's
//! bytes differ from payload to payload, and every chunk Automerge reads starts there), it
//! reads the chunk's header and column table as Automerge does, and inflates each compressed
//! part through a reader that stops at the budget, keeping nothing. The budget counts the work
//! too (every byte a chunk spans, which bounds what is read of it), so chunks nested inside
//! each other's data cannot make the walk itself quadratic.

use std::io::Read;

/// Automerge's chunk magic.
const MAGIC: [u8; 4] = [0x85, 0x6f, 0x4a, 0x83];
/// Chunk types (Automerge's storage format).
const DOCUMENT: u8 = 0;
const CHANGE: u8 = 1;
const COMPRESSED_CHANGE: u8 = 2;
const BUNDLE: u8 = 3;
/// The bit of a column's specification that says its data is DEFLATE-compressed.
const DEFLATE: u32 = 0b1000;

/// What payloads of `len` bytes in all, read together, may inflate to: 16 MiB, plus 16 times
/// their size (Automerge's compressed columns of the app's records, text included, stay well
/// below that ratio). One budget is spent by everything read together (a page, a snapshot):
/// Automerge holds what it inflated from all of it at once.
pub(crate) fn budget(len: usize) -> u64 {
    (16u64 << 20).saturating_add(allowance(len))
}

/// What one more payload of `len` bytes adds to a budget.
pub(crate) fn allowance(len: usize) -> u64 {
    u64::try_from(len).unwrap_or(u64::MAX).saturating_mul(16)
}

/// What the walk spends on `bytes`, up to `cap` (past it: `cap + 1`). Held changes count
/// this, not their compressed size.
pub(crate) fn cost(bytes: &[u8], cap: u64) -> u64 {
    let mut left = cap;
    if within(bytes, &mut left) {
        cap.saturating_sub(left)
    } else {
        cap.saturating_add(1)
    }
}

/// Whether everything Automerge would inflate from `bytes`, with the bytes each chunk spans,
/// fits in what is `left`, which it spends. A chunk of a kind
/// Automerge reads that runs past the end of `bytes` is refused too: Automerge may read it
/// joined with what follows (a personal space's payloads are loaded together).
pub(crate) fn within(bytes: &[u8], left: &mut u64) -> bool {
    let mut at = 0usize;
    while let Some(found) = find_magic(bytes.get(at..).unwrap_or_default()) {
        let start = at.saturating_add(found);
        if !chunk_within(bytes.get(start..).unwrap_or_default(), left) {
            return false;
        }
        at = start.saturating_add(1);
    }
    true
}

/// Whether `bytes` are exactly one Automerge chunk: a change that is one piece of a bundle must
/// be read alone, not joined with the next piece into something the walk did not see.
pub(crate) fn is_one_chunk(bytes: &[u8]) -> bool {
    let mut r = Reader::new(bytes);
    r.take(4).is_some_and(|m| m == MAGIC)
        && r.take(5).is_some()
        && r.len()
            .and_then(|len| r.take(len))
            .is_some_and(|_| r.at == bytes.len())
}

fn find_magic(bytes: &[u8]) -> Option<usize> {
    bytes.windows(MAGIC.len()).position(|w| w == MAGIC)
}

/// Takes `n` from `left`; false if it does not hold that much.
fn spend(left: &mut u64, n: usize) -> bool {
    let n = u64::try_from(n).unwrap_or(u64::MAX);
    match left.checked_sub(n) {
        Some(rest) => {
            *left = rest;
            true
        }
        None => false,
    }
}

/// Spends what the chunk at the start of `bytes` costs; false once `left` runs out. Bytes
/// that do not make a chunk header cost what was read of them.
fn chunk_within(bytes: &[u8], left: &mut u64) -> bool {
    let mut r = Reader::new(bytes);
    let Some((kind, len)) = r.take(8).and_then(|_| Some((r.byte()?, r.uleb()?))) else {
        return spend(left, r.at);
    };
    let read = matches!(kind, DOCUMENT | CHANGE | COMPRESSED_CHANGE | BUNDLE);
    // Past the end, or a length this platform's `usize` cannot hold (Automerge would cut it
    // short on a 32-bit phone and read something the walk did not).
    let Some(data) = usize::try_from(len).ok().and_then(|len| r.take(len)) else {
        return !read && spend(left, r.at);
    };
    if !spend(left, r.at) {
        return false;
    }
    match kind {
        COMPRESSED_CHANGE => inflate(data, left),
        DOCUMENT => columns_within(data, false, left),
        BUNDLE => columns_within(data, true, left),
        _ => true,
    }
}

/// A document (actors, heads, change columns, op columns, their data) or a bundle (deps,
/// actors, change columns and data, op columns and data).
fn columns_within(data: &[u8], bundle: bool, left: &mut u64) -> bool {
    let mut r = Reader::new(data);
    let columns = if bundle {
        r.hashes().and_then(|()| {
            r.actors()?;
            let changes = r.table()?;
            let mut columns = r.data(&changes)?;
            let ops = r.table()?;
            columns.extend(r.data(&ops)?);
            Some(columns)
        })
    } else {
        r.actors().and_then(|()| {
            r.hashes()?;
            let changes = r.table()?;
            let ops = r.table()?;
            let mut columns = r.data(&changes)?;
            columns.extend(r.data(&ops)?);
            Some(columns)
        })
    };
    // What was read here lies within the chunk's span, spent already.
    if r.overflow {
        return false;
    }
    let Some(columns) = columns else {
        return true;
    };
    columns
        .into_iter()
        .filter(|(spec, _)| spec & DEFLATE != 0)
        .all(|(_, column)| inflate(column, left))
}

/// Inflates `compressed` (raw DEFLATE, as Automerge writes it) without keeping it, spending
/// what comes out (what is read lies within a chunk's span, spent already); false once that
/// passes `left`. Bytes that are not DEFLATE cost what they inflate to before the error, as in
/// Automerge.
fn inflate(compressed: &[u8], left: &mut u64) -> bool {
    let mut decoder = flate2::bufread::DeflateDecoder::new(compressed);
    let mut sink = [0u8; 8192];
    let mut out = 0u64;
    loop {
        if out > *left {
            return false;
        }
        match decoder.read(&mut sink) {
            Ok(0) | Err(_) => break,
            Ok(n) => out = out.saturating_add(u64::try_from(n).unwrap_or(u64::MAX)),
        }
    }
    match left.checked_sub(out) {
        Some(rest) => {
            *left = rest;
            true
        }
        None => false,
    }
}

struct Reader<'a> {
    bytes: &'a [u8],
    at: usize,
    /// A length did not fit `usize` (see [`chunk_within`]).
    overflow: bool,
}

impl<'a> Reader<'a> {
    fn new(bytes: &'a [u8]) -> Self {
        Self {
            bytes,
            at: 0,
            overflow: false,
        }
    }

    fn take(&mut self, n: usize) -> Option<&'a [u8]> {
        let end = self.at.checked_add(n)?;
        let out = self.bytes.get(self.at..end)?;
        self.at = end;
        Some(out)
    }

    fn byte(&mut self) -> Option<u8> {
        self.take(1).map(|b| b[0])
    }

    /// An unsigned LEB128 of at most 64 bits.
    fn uleb(&mut self) -> Option<u64> {
        let mut value = 0u64;
        for shift in (0..64).step_by(7) {
            let b = self.byte()?;
            value |= u64::from(b & 0x7f).checked_shl(shift)?;
            if b & 0x80 == 0 {
                return Some(value);
            }
        }
        None
    }

    fn len(&mut self) -> Option<usize> {
        let len = usize::try_from(self.uleb()?).ok();
        self.overflow |= len.is_none();
        len
    }

    /// A count of 32-byte hashes, and the hashes.
    fn hashes(&mut self) -> Option<()> {
        let n = self.len()?;
        self.take(n.checked_mul(32)?).map(|_| ())
    }

    /// A count of actor ids, each its length and bytes.
    fn actors(&mut self) -> Option<()> {
        let n = self.uleb()?;
        for _ in 0..n {
            let len = self.len()?;
            self.take(len)?;
        }
        Some(())
    }

    /// A column table: a count, then each column's specification and data length.
    fn table(&mut self) -> Option<Vec<(u32, usize)>> {
        let n = self.uleb()?;
        let mut out = Vec::new();
        for _ in 0..n {
            let spec = u32::try_from(self.uleb()?).ok()?;
            out.push((spec, self.len()?));
        }
        Some(out)
    }

    /// The data of the columns of `table`, one after another.
    fn data(&mut self, table: &[(u32, usize)]) -> Option<Vec<(u32, &'a [u8])>> {
        table
            .iter()
            .map(|&(spec, len)| Some((spec, self.take(len)?)))
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use automerge::{ROOT, transaction::Transactable};
    use std::io::Write;

    fn deflate(plain: &[u8]) -> Vec<u8> {
        let mut e = flate2::write::DeflateEncoder::new(Vec::new(), flate2::Compression::best());
        let _ = e.write_all(plain);
        e.finish().unwrap_or_default()
    }

    fn uleb(mut v: u64, out: &mut Vec<u8>) {
        loop {
            let b = (v & 0x7f) as u8;
            v >>= 7;
            if v == 0 {
                out.push(b);
                return;
            }
            out.push(b | 0x80);
        }
    }

    fn chunk(kind: u8, data: &[u8]) -> Vec<u8> {
        let mut out = MAGIC.to_vec();
        out.extend_from_slice(&[0; 4]);
        out.push(kind);
        uleb(data.len() as u64, &mut out);
        out.extend_from_slice(data);
        out
    }

    fn fits(bytes: &[u8], budget: u64) -> bool {
        let mut left = budget;
        within(bytes, &mut left)
    }

    #[test]
    fn honest_saves_and_changes_pass() {
        let mut doc = automerge::AutoCommit::new();
        for n in 0..2_000 {
            let _ = doc.put(ROOT, format!("key {n}"), "the same words, again and again");
        }
        let save = doc.save();
        assert!(fits(&save, budget(save.len())));
        let changes: Vec<u8> = doc
            .get_changes(&[])
            .iter()
            .flat_map(|c| c.raw_bytes().to_vec())
            .collect();
        assert!(fits(&changes, budget(changes.len())));
        // The walk reads Automerge's own formats: with nothing to spend, the compressed parts
        // of a real save, bundle and compressed change are each found.
        assert!(!fits(&save, save.len() as u64));
        let hashes: Vec<_> = doc.get_changes(&[]).iter().map(|c| c.hash()).collect();
        let bundle = doc.bundle(hashes).map(|b| b.bytes().to_vec());
        assert!(
            bundle
                .as_ref()
                .is_ok_and(|b| fits(b, budget(b.len())) && !fits(b, b.len() as u64))
        );
        let mut one = automerge::AutoCommit::new();
        let _ = one.put(ROOT, "words", "the same words ".repeat(100));
        let mut change = one.get_changes(&[]).first().map(|c| (*c).clone());
        let compressed = change
            .as_mut()
            .map(|c| c.bytes().to_vec())
            .unwrap_or_default();
        assert_eq!(compressed.get(8), Some(&COMPRESSED_CHANGE));
        assert!(fits(&compressed, budget(compressed.len())));
        assert!(!fits(&compressed, compressed.len() as u64));
        // What a held change costs is what it inflates to.
        assert!(cost(&compressed, 1 << 20) > 1_500);
    }

    #[test]
    fn a_compressed_change_that_inflates_past_the_budget_is_refused() {
        let bomb = chunk(COMPRESSED_CHANGE, &deflate(&vec![0u8; 4 << 20]));
        assert!(bomb.len() < 16 << 10, "{}", bomb.len());
        assert!(!fits(&bomb, 1 << 20));
        assert!(fits(&bomb, 8 << 20));
        // Hidden behind other bytes, as inside a sealed bundle.
        let mut wrapped = vec![7u8; 100];
        wrapped.extend_from_slice(&bomb);
        assert!(!fits(&wrapped, 1 << 20));
        // Several read together spend one budget.
        let mut left = 10 << 20;
        assert!(within(&bomb, &mut left));
        assert!(within(&bomb, &mut left));
        assert!(!within(&bomb, &mut left));
    }

    #[test]
    fn compressed_columns_of_a_document_or_bundle_count() {
        let column = deflate(&vec![1u8; 4 << 20]);
        let mut table = Vec::new();
        uleb(1, &mut table);
        uleb(u64::from(0x10 | DEFLATE), &mut table);
        uleb(column.len() as u64, &mut table);
        let mut empty = Vec::new();
        uleb(0, &mut empty);
        // A document: no actors, no heads, one compressed change column, no op columns.
        let mut doc = Vec::new();
        doc.extend_from_slice(&empty);
        doc.extend_from_slice(&empty);
        doc.extend_from_slice(&table);
        doc.extend_from_slice(&empty);
        doc.extend_from_slice(&column);
        assert!(!fits(&chunk(DOCUMENT, &doc), 1 << 20));
        assert!(fits(&chunk(DOCUMENT, &doc), 8 << 20));
        // A bundle: no deps, no actors, the column, no op columns.
        let mut bundle = Vec::new();
        bundle.extend_from_slice(&empty);
        bundle.extend_from_slice(&empty);
        bundle.extend_from_slice(&table);
        bundle.extend_from_slice(&column);
        bundle.extend_from_slice(&empty);
        assert!(!fits(&chunk(BUNDLE, &bundle), 1 << 20));
    }

    #[test]
    fn chunks_nested_in_each_others_data_spend_the_budget() {
        // Each chunk's data is the next chunk: the walk meets every one of them, and each
        // spans nearly all that follows it.
        let mut nested = Vec::new();
        for _ in 0..20_000 {
            nested = chunk(7, &nested);
        }
        assert!(nested.len() < 1 << 20, "{}", nested.len());
        assert!(!fits(&nested, budget(nested.len())));
        // Empty stored DEFLATE blocks read much and put out nothing.
        let mut empty = Vec::new();
        for _ in 0..100_000 {
            empty.extend_from_slice(&[0, 0, 0, 0xff, 0xff]);
        }
        let mut chunks = Vec::new();
        for _ in 0..10 {
            chunks.extend_from_slice(&chunk(COMPRESSED_CHANGE, &empty));
        }
        // Their spans are what they cost.
        assert!(!fits(&chunks, 4 << 20));
        assert!(fits(&chunks, 8 << 20));
    }

    #[test]
    fn a_chunk_cut_off_at_the_end_is_refused() {
        let change = chunk(COMPRESSED_CHANGE, &deflate(&[0u8; 1024]));
        assert!(fits(&change, 1 << 20));
        // Its rest would come in the next payload, read joined with this one.
        assert!(!fits(&change[..change.len() - 1], 1 << 20));
        // Bytes of no kind Automerge reads are passed over.
        let other = chunk(9, &[0; 16]);
        assert!(fits(&other[..other.len() - 1], 1 << 20));
    }

    #[test]
    fn one_chunk_is_one_chunk() {
        let change = chunk(COMPRESSED_CHANGE, &deflate(&[0u8; 1024]));
        assert!(is_one_chunk(&change));
        assert!(!is_one_chunk(&change[..change.len() - 1]));
        let mut two = change.clone();
        two.extend_from_slice(&change);
        assert!(!is_one_chunk(&two));
        assert!(!is_one_chunk(&[0; 12]));
    }

    #[test]
    fn cut_or_garbled_bytes_do_not_panic() {
        let bomb = chunk(COMPRESSED_CHANGE, &deflate(&vec![0u8; 1 << 16]));
        for cut in 0..bomb.len() {
            let _ = fits(&bomb[..cut], 1 << 20);
        }
        let mut garbled = MAGIC.to_vec();
        garbled.extend_from_slice(&[0xff; 64]);
        assert!(fits(&garbled, 1 << 20));
    }
}
