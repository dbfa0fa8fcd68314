//! Fuzzes every decoder: no input may panic, and any input a decoder accepts must re-encode
//! to exactly the same bytes (the encoding is canonical).
#![no_main]

use libfuzzer_sys::fuzz_target;
use mend_protocol::{AnyMessage, ClientMessage, Limits, ServerMessage};

const TINY: Limits = Limits {
    max_chunk_bytes: 4,
    max_snapshot_bytes: 4,
    max_page_chunks: 2,
    max_page_bytes: 4,
};

fuzz_target!(|data: &[u8]| {
    for limits in [Limits::DEFAULT, TINY] {
        if let Ok(message) = AnyMessage::decode(data, &limits) {
            assert_eq!(message.to_bytes(), data);
        }
        if let Ok(message) = ClientMessage::decode(data, &limits) {
            assert_eq!(message.to_bytes(), data);
        }
        if let Ok(message) = ServerMessage::decode(data, &limits) {
            assert_eq!(message.to_bytes(), data);
        }
    }
});
