//! [`Page`]: one page of a paged pull.

use super::{Chunk, Rollup, frame};
use crate::{DecodeError, Limits, MARK_LEN, Mark, codec::Reader, varint};

const MORE: u8 = 0x01;
const AFTER_MARK: u8 = 0x02;
const NEXT_MARK: u8 = 0x04;
const ROLLUPS: u8 = 0x08;

/// Chunks after a cursor, in relay order, as answered to `GET …/chunks`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Page {
    /// The space's highest relay sequence when the page was read.
    pub head: u64,
    /// The cursor for the next pull (`after=`). Chunks up to it were returned or withheld as
    /// the requesting device's own; it never passes a chunk that was not yet examined.
    pub next_after: u64,
    /// More chunks remain after `next_after`; pull again.
    pub more: bool,
    /// The [`Mark`] of the chunk at the pull's `after`, if the relay holds one there: a device
    /// that kept another mark for its cursor is reading a relay that went back and was filled
    /// up again.
    pub after_mark: Option<Mark>,
    /// The [`Mark`] of the chunk at `next_after`, if any: what the device keeps for its cursor.
    pub next_mark: Option<Mark>,
    /// The chunks, with strictly increasing `relay_seq`, none above `next_after`.
    pub chunks: Vec<Chunk>,
    /// Rollups served in place of the chunks they stand for (only to a pull that asked for
    /// them), with strictly increasing `relay_seq`, none above `next_after`.
    pub rollups: Vec<Rollup>,
}

impl Page {
    pub(crate) fn encode_body(&self, out: &mut Vec<u8>) {
        varint::write(out, self.head);
        varint::write(out, self.next_after);
        let flags = if self.more { MORE } else { 0 }
            | self.after_mark.map_or(0, |_| AFTER_MARK)
            | self.next_mark.map_or(0, |_| NEXT_MARK)
            | if self.rollups.is_empty() { 0 } else { ROLLUPS };
        out.push(flags);
        for mark in [self.after_mark, self.next_mark].into_iter().flatten() {
            out.extend_from_slice(&mark);
        }
        varint::write(out, self.chunks.len() as u64);
        for chunk in &self.chunks {
            chunk.encode_body(out);
        }
        if !self.rollups.is_empty() {
            varint::write(out, self.rollups.len() as u64);
            for rollup in &self.rollups {
                rollup.encode_body(out);
            }
        }
    }

    pub(crate) fn body_len(&self) -> usize {
        varint::len(self.head)
            + varint::len(self.next_after)
            + 1
            + MARK_LEN
                * (usize::from(self.after_mark.is_some()) + usize::from(self.next_mark.is_some()))
            + varint::len(self.chunks.len() as u64)
            + self.chunks.iter().map(Chunk::body_len).sum::<usize>()
            + if self.rollups.is_empty() {
                0
            } else {
                varint::len(self.rollups.len() as u64)
                    + self.rollups.iter().map(Rollup::body_len).sum::<usize>()
            }
    }

    pub(crate) fn decode_body(
        reader: &mut Reader<'_>,
        limits: &Limits,
    ) -> Result<Self, DecodeError> {
        let head = reader.varint()?;
        let next_after = reader.varint()?;
        if next_after > head {
            return Err(DecodeError::Invalid {
                field: "next_after",
                reason: "beyond head",
            });
        }
        let flags = reader.flags("page flags", MORE | AFTER_MARK | NEXT_MARK | ROLLUPS)?;
        let more = flags & MORE != 0;
        let after_mark = if flags & AFTER_MARK != 0 {
            Some(reader.array()?)
        } else {
            None
        };
        let next_mark = if flags & NEXT_MARK != 0 {
            Some(reader.array()?)
        } else {
            None
        };
        let count = reader.varint()?;
        let limit = limits
            .max_page_chunks
            .min(reader.remaining() / Chunk::MIN_BODY_LEN);
        if count > limit as u64 {
            return Err(DecodeError::TooLarge {
                field: "chunk count",
                len: count,
                limit,
            });
        }
        let mut chunks: Vec<Chunk> = Vec::with_capacity(count as usize);
        let mut total_bytes = 0usize;
        for _ in 0..count {
            let chunk = Chunk::decode_body(reader, limits)?;
            if chunks
                .last()
                .is_some_and(|last| last.relay_seq >= chunk.relay_seq)
            {
                return Err(DecodeError::Invalid {
                    field: "relay_seq",
                    reason: "not strictly increasing within the page",
                });
            }
            if chunk.relay_seq > next_after {
                return Err(DecodeError::Invalid {
                    field: "relay_seq",
                    reason: "beyond next_after",
                });
            }
            total_bytes += chunk.payload.len();
            if !chunks.is_empty() && total_bytes > limits.max_page_bytes {
                return Err(DecodeError::TooLarge {
                    field: "page payload",
                    len: total_bytes as u64,
                    limit: limits.max_page_bytes,
                });
            }
            chunks.push(chunk);
        }
        let mut rollups: Vec<Rollup> = Vec::new();
        if flags & ROLLUPS != 0 {
            let count = reader.varint()?;
            let limit = limits
                .max_page_chunks
                .min(reader.remaining() / Rollup::MIN_BODY_LEN);
            if count == 0 || count > limit as u64 {
                return Err(DecodeError::TooLarge {
                    field: "rollup count",
                    len: count,
                    limit,
                });
            }
            rollups.reserve(count as usize);
            for _ in 0..count {
                let rollup = Rollup::decode_body(reader, limits)?;
                if rollups
                    .last()
                    .is_some_and(|last| last.relay_seq >= rollup.relay_seq)
                {
                    return Err(DecodeError::Invalid {
                        field: "relay_seq",
                        reason: "rollups not strictly increasing within the page",
                    });
                }
                if rollup.last_relay_seq > next_after {
                    return Err(DecodeError::Invalid {
                        field: "last_relay_seq",
                        reason: "beyond next_after",
                    });
                }
                total_bytes += rollup.payload.len();
                if chunks.len() + rollups.len() >= limits.max_page_chunks {
                    return Err(DecodeError::TooLarge {
                        field: "page entries",
                        len: (chunks.len() + rollups.len()) as u64,
                        limit: limits.max_page_chunks,
                    });
                }
                if !(chunks.is_empty() && rollups.is_empty()) && total_bytes > limits.max_page_bytes
                {
                    return Err(DecodeError::TooLarge {
                        field: "page payload",
                        len: total_bytes as u64,
                        limit: limits.max_page_bytes,
                    });
                }
                rollups.push(rollup);
            }
        }
        Ok(Page {
            head,
            next_after,
            more,
            after_mark,
            next_mark,
            chunks,
            rollups,
        })
    }
}

frame!(Page, crate::Kind::Page);
