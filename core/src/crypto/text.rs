//! Text forms of secrets (keyrings, invites), made and read without leaving copies behind.
//!
//! Hand-written over `base64`'s slice calls because its convenient ones do leave copies:
//! `encode_string` encodes through a stack buffer it never wipes, `decode` drops its buffer
//! unwiped when the input is bad, and collecting into a `String` reallocates as it grows,
//! freeing each old buffer as it was.

use base64::{Engine, engine::general_purpose::URL_SAFE_NO_PAD};
use zeroize::{Zeroize, Zeroizing};

/// `code` without whitespace (codes are read off paper or split across lines), in a buffer
/// sized once.
pub(crate) fn compact(code: &str) -> Zeroizing<String> {
    let mut out = Zeroizing::new(String::with_capacity(code.len()));
    out.extend(code.chars().filter(|c| !c.is_whitespace()));
    out
}

/// `prefix` followed by `raw` in unpadded base64url, in a buffer of exactly its length.
pub(crate) fn encode(prefix: &str, raw: &[u8]) -> Zeroizing<String> {
    let Some(body) = base64::encoded_len(raw.len(), false) else {
        return Zeroizing::new(String::new());
    };
    let mut buf = Zeroizing::new(vec![0u8; prefix.len().saturating_add(body)]);
    buf[..prefix.len()].copy_from_slice(prefix.as_bytes());
    let written = URL_SAFE_NO_PAD
        .encode_slice(raw, &mut buf[prefix.len()..])
        .unwrap_or(0);
    buf.truncate(prefix.len().saturating_add(written));
    match String::from_utf8(std::mem::take(&mut *buf)) {
        Ok(text) => Zeroizing::new(text),
        // Unreachable (the prefix is a `str`, base64 is ASCII); wiped all the same.
        Err(e) => {
            e.into_bytes().zeroize();
            Zeroizing::new(String::new())
        }
    }
}

/// The bytes of unpadded base64url `body`, or `None` if it is not that; the buffer is wiped
/// on drop whatever happens.
pub(crate) fn decode(body: &str) -> Option<Zeroizing<Vec<u8>>> {
    let mut buf = Zeroizing::new(vec![0u8; base64::decoded_len_estimate(body.len())]);
    let len = URL_SAFE_NO_PAD.decode_slice(body, &mut buf[..]).ok()?;
    buf.truncate(len);
    Some(buf)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn secrets_in_text_round_trip_in_buffers_that_never_grew() {
        for n in [0, 1, 2, 3, 31, 32, 33, 200] {
            let raw: Vec<u8> = (0..n).map(|i| (i * 7) as u8).collect();
            let text = encode("MEND9-", &raw);
            assert_eq!(text.len(), text.capacity(), "{n} bytes");
            assert_eq!(*text, format!("MEND9-{}", URL_SAFE_NO_PAD.encode(&raw)));
            let spaced: String = text.chars().flat_map(|c| [c, ' ']).collect();
            let compacted = compact(&spaced);
            assert_eq!(*compacted, *text);
            // One allocation, never grown.
            assert_eq!(compacted.capacity(), spaced.len());
            assert_eq!(
                decode(&text[6..]).as_deref().map(|v| &v[..]),
                Some(&raw[..])
            );
        }
        assert!(decode("not base64!").is_none());
        assert!(decode("A").is_none());
    }
}
