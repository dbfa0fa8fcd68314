//! Replays the committed fuzz corpus (`tests/fuzz-corpus/`) through the decoders on every
//! `cargo test`, so inputs the fuzzer found, and hand-made nasty ones, stay handled.
//!
//! Files named `ok-*` must decode; files named `bad-*` must be refused; any other file (a
//! fuzzer finding added later) must simply not panic. Whatever decodes must re-encode to the
//! same bytes: this is the same check the cargo-fuzz target in `fuzz/` makes.

use std::{fs, path::Path};

use mend_protocol::{AnyMessage, ClientMessage, Limits, ServerMessage};

const TINY: Limits = Limits {
    max_chunk_bytes: 4,
    max_snapshot_bytes: 4,
    max_page_chunks: 2,
    max_page_bytes: 4,
};

fn check_canonical(bytes: &[u8], limits: &Limits) -> bool {
    let any = AnyMessage::decode(bytes, limits);
    if let Ok(message) = &any {
        assert_eq!(
            message.to_bytes(),
            bytes,
            "decoded frame re-encodes differently"
        );
    }
    if let Ok(message) = ClientMessage::decode(bytes, limits) {
        assert_eq!(message.to_bytes(), bytes);
    }
    if let Ok(message) = ServerMessage::decode(bytes, limits) {
        assert_eq!(message.to_bytes(), bytes);
    }
    any.is_ok()
}

#[test]
fn corpus_replays_as_expected() {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fuzz-corpus");
    let mut seen = 0;
    let mut entries: Vec<_> = fs::read_dir(&dir)
        .unwrap_or_else(|e| panic!("read {}: {e}", dir.display()))
        .filter_map(Result::ok)
        .collect();
    entries.sort_by_key(|entry| entry.file_name());
    for entry in entries {
        let name = entry.file_name().to_string_lossy().into_owned();
        if name.starts_with('.') || name.ends_with(".md") {
            continue;
        }
        let bytes = fs::read(entry.path()).unwrap_or_else(|e| panic!("read {name}: {e}"));
        let decoded = check_canonical(&bytes, &Limits::DEFAULT);
        check_canonical(&bytes, &TINY);
        if name.starts_with("ok-") {
            assert!(decoded, "{name} should decode");
        } else if name.starts_with("bad-") {
            assert!(!decoded, "{name} should be refused");
        }
        seen += 1;
    }
    assert!(seen >= 40, "corpus went missing: only {seen} files");
}
