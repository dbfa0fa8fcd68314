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
//! part through a reader that stops at the budget, keeping nothing.

use std::io::Read;

/// Automerge's chunk magic.
const MAGIC: [u8; 4] = [0x85, 0x6f, 0x4a, 0x83];
/// Chunk types (Automerge's storage format).
const DOCUMENT: u8 = 0;
const COMPRESSED_CHANGE: u8 = 2;
const BUNDLE: u8 = 3;
/// The bit of a column's specification that says its data is DEFLATE-compressed.
const DEFLATE: u32 = 0b1000;

/// What `bytes` may inflate to: 64 MiB, plus 16 times their own size (Automerge's compressed
/// columns of the app's records, text included, stay well below that ratio).
pub(crate) fn budget(bytes: &[u8]) -> u64 {
    (64u64 << 20).saturating_add(
        u64::try_from(bytes.len())
            .unwrap_or(u64::MAX)
            .saturating_mul(16),
    )
}

/// Whether everything Automerge would inflate from `bytes` comes to at most `budget` bytes.
pub(crate) fn within(bytes: &[u8], budget: u64) -> bool {
    let mut left = budget;
    let mut at = 0usize;
    while let Some(found) = find_magic(bytes.get(at..).unwrap_or_default()) {
        let start = at.saturating_add(found);
        if !chunk_within(bytes.get(start..).unwrap_or_default(), &mut left) {
            return false;
        }
        at = start.saturating_add(1);
    }
    true
}

fn find_magic(bytes: &[u8]) -> Option<usize> {
    bytes.windows(MAGIC.len()).position(|w| w == MAGIC)
}

/// Counts what the chunk at the start of `bytes` inflates to against `left`; false once it is
/// spent. A chunk Automerge could not read (a header cut short, a table that runs past the
/// end) inflates nothing: Automerge fails on it before inflating.
fn chunk_within(bytes: &[u8], left: &mut u64) -> bool {
    let mut r = Reader { bytes, at: 0 };
    let Some(data) = r.take(4).and_then(|_| r.take(4)).and_then(|_| {
        let kind = r.byte()?;
        let len = r.uleb()?;
        Some((kind, r.take(usize::try_from(len).ok()?)?))
    }) else {
        return true;
    };
    let (kind, data) = data;
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
    let mut r = Reader { bytes: data, at: 0 };
    let mut read = || -> Option<Vec<(u32, &[u8])>> {
        if bundle {
            r.hashes()?;
            r.actors()?;
            let changes = r.table()?;
            let mut columns = r.data(&changes)?;
            let ops = r.table()?;
            columns.extend(r.data(&ops)?);
            Some(columns)
        } else {
            r.actors()?;
            r.hashes()?;
            let changes = r.table()?;
            let ops = r.table()?;
            let mut columns = r.data(&changes)?;
            columns.extend(r.data(&ops)?);
            Some(columns)
        }
    };
    let Some(columns) = read() else {
        return true;
    };
    columns
        .into_iter()
        .filter(|(spec, _)| spec & DEFLATE != 0)
        .all(|(_, column)| inflate(column, left))
}

/// Inflates `compressed` (raw DEFLATE, as Automerge writes it) without keeping it, counting
/// against `left`; false once more than `left` comes out. Bytes that are not DEFLATE inflate
/// to what they inflate to before the error, as in Automerge.
fn inflate(compressed: &[u8], left: &mut u64) -> bool {
    let mut decoder = flate2::bufread::DeflateDecoder::new(compressed).take(left.saturating_add(1));
    let mut sink = [0u8; 8192];
    let mut out = 0u64;
    loop {
        match decoder.read(&mut sink) {
            Ok(0) | Err(_) => break,
            Ok(n) => out = out.saturating_add(u64::try_from(n).unwrap_or(u64::MAX)),
        }
    }
    if out > *left {
        return false;
    }
    *left = left.saturating_sub(out);
    true
}

struct Reader<'a> {
    bytes: &'a [u8],
    at: usize,
}

impl<'a> Reader<'a> {
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
        usize::try_from(self.uleb()?).ok()
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

    #[test]
    fn honest_saves_and_changes_pass() {
        let mut doc = automerge::AutoCommit::new();
        for n in 0..2_000 {
            let _ = doc.put(ROOT, format!("key {n}"), "the same words, again and again");
        }
        let save = doc.save();
        assert!(within(&save, budget(&save)));
        let changes: Vec<u8> = doc
            .get_changes(&[])
            .iter()
            .flat_map(|c| c.raw_bytes().to_vec())
            .collect();
        assert!(within(&changes, budget(&changes)));
        // The walk reads Automerge's own formats: with nothing to spend, the compressed parts
        // of a real save, bundle and compressed change are each found.
        assert!(!within(&save, 0));
        let hashes: Vec<_> = doc.get_changes(&[]).iter().map(|c| c.hash()).collect();
        let bundle = doc.bundle(hashes).map(|b| b.bytes().to_vec());
        assert!(
            bundle
                .as_ref()
                .is_ok_and(|b| within(b, budget(b)) && !within(b, 0))
        );
        let mut one = automerge::AutoCommit::new();
        let _ = one.put(ROOT, "words", "the same words ".repeat(100));
        let mut change = one.get_changes(&[]).first().map(|c| (*c).clone());
        let compressed = change
            .as_mut()
            .map(|c| c.bytes().to_vec())
            .unwrap_or_default();
        assert_eq!(compressed.get(8), Some(&COMPRESSED_CHANGE));
        assert!(within(&compressed, budget(&compressed)) && !within(&compressed, 0));
    }

    #[test]
    fn a_compressed_change_that_inflates_past_the_budget_is_refused() {
        let bomb = chunk(COMPRESSED_CHANGE, &deflate(&vec![0u8; 4 << 20]));
        assert!(bomb.len() < 16 << 10, "{}", bomb.len());
        assert!(!within(&bomb, 1 << 20));
        assert!(within(&bomb, 8 << 20));
        // Hidden behind other bytes, as inside a sealed bundle.
        let mut wrapped = vec![7u8; 100];
        wrapped.extend_from_slice(&bomb);
        assert!(!within(&wrapped, 1 << 20));
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
        assert!(!within(&chunk(DOCUMENT, &doc), 1 << 20));
        assert!(within(&chunk(DOCUMENT, &doc), 8 << 20));
        // A bundle: no deps, no actors, the column, no op columns.
        let mut bundle = Vec::new();
        bundle.extend_from_slice(&empty);
        bundle.extend_from_slice(&empty);
        bundle.extend_from_slice(&table);
        bundle.extend_from_slice(&column);
        bundle.extend_from_slice(&empty);
        assert!(!within(&chunk(BUNDLE, &bundle), 1 << 20));
    }

    #[test]
    fn cut_or_garbled_bytes_do_not_panic() {
        let bomb = chunk(COMPRESSED_CHANGE, &deflate(&vec![0u8; 1 << 16]));
        for cut in 0..bomb.len() {
            let _ = within(&bomb[..cut], 1 << 20);
        }
        let mut garbled = MAGIC.to_vec();
        garbled.extend_from_slice(&[0xff; 64]);
        assert!(within(&garbled, 1 << 20));
    }
}
