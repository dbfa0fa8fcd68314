//! [`Successor`]: which announcement of a new epoch a space's devices follow.

use super::frame;
use crate::{DecodeError, Limits, codec::Reader};

/// Either direction over HTTP (`PUT /v1/spaces/{id}/successor`): the id of the announcement
/// that ends a space's epoch. The device offers one; the relay keeps the first it is offered
/// for the space and answers with that one ever after, so every device follows the same
/// announcement even when two devices rotated at once. Opaque to the relay.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Successor {
    /// The announcement's id (random, chosen by the device that wrote it).
    pub id: [u8; 32],
}

impl Successor {
    pub(crate) fn encode_body(&self, out: &mut Vec<u8>) {
        out.extend_from_slice(&self.id);
    }

    pub(crate) fn body_len(&self) -> usize {
        32
    }

    pub(crate) fn decode_body(reader: &mut Reader<'_>, _: &Limits) -> Result<Self, DecodeError> {
        Ok(Successor {
            id: reader.array()?,
        })
    }
}

frame!(Successor, crate::Kind::Successor);
