//! Size limits shared by both sides, and the defaults the relay ships with.
//!
//! A decoder never trusts a length it reads: it checks it against these limits and against the
//! bytes that remain before it allocates. The relay may be configured with other values; a
//! client that wants to be strict uses the values the relay documents.

/// Default largest chunk payload a relay accepts: 1 MiB.
pub const DEFAULT_MAX_CHUNK_BYTES: usize = 1 << 20;
/// Default largest snapshot payload a relay accepts: 16 MiB.
pub const DEFAULT_MAX_SNAPSHOT_BYTES: usize = 16 << 20;
/// Default number of chunks in a pulled page when the request names no limit.
pub const DEFAULT_PAGE_LIMIT: usize = 256;
/// Largest number of chunks in one pulled page; larger requested limits are clamped to it.
pub const MAX_PAGE_LIMIT: usize = 1024;
/// Default cap on the payload bytes of one page. A page always holds at least one chunk when
/// one is available, so a page holding a single chunk larger than the cap is allowed.
pub const DEFAULT_MAX_PAGE_BYTES: usize = 4 << 20;
/// Largest human-readable text in a frame (the message of a [`crate::Nack`]).
pub const MAX_TEXT_BYTES: usize = 256;
/// The most bytes a [`crate::Push`] frame adds around its payload: version, kind, device id,
/// two varints at their longest.
pub const MAX_PUSH_OVERHEAD: usize = 1 + 1 + 16 + 10 + 10;

/// The bounds a decoder enforces.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limits {
    /// Largest chunk payload (in [`crate::Push`] and [`crate::Chunk`]).
    pub max_chunk_bytes: usize,
    /// Largest snapshot payload.
    pub max_snapshot_bytes: usize,
    /// Largest number of chunks in a [`crate::Page`].
    pub max_page_chunks: usize,
    /// Largest total payload of a [`crate::Page`] of two or more chunks (a page of one chunk
    /// is bounded by `max_chunk_bytes` alone).
    pub max_page_bytes: usize,
}

impl Limits {
    /// The relay's default limits.
    pub const DEFAULT: Limits = Limits {
        max_chunk_bytes: DEFAULT_MAX_CHUNK_BYTES,
        max_snapshot_bytes: DEFAULT_MAX_SNAPSHOT_BYTES,
        max_page_chunks: MAX_PAGE_LIMIT,
        max_page_bytes: DEFAULT_MAX_PAGE_BYTES,
    };
}

impl Default for Limits {
    fn default() -> Self {
        Limits::DEFAULT
    }
}
