//! Property tests: every message survives encode → decode unchanged, decoding is canonical
//! (re-encoding gives the same bytes), and every strict prefix of a frame is refused.

use mend_protocol::{
    Ack, AnyMessage, Chunk, ClientMessage, DeviceId, DeviceList, DeviceSeen, ErrorCode, Limits,
    MAX_LISTED_DEVICES, MAX_MAILBOX_LEN, MAX_PAIRING_MESSAGE, MAX_PAIRING_MESSAGES, MAX_TEXT_BYTES,
    Mark, Nack, Page, PairingInbox, PairingMessage, PairingOpen, PairingPost, PairingState,
    PairingTicket, Push, Rollup, RollupPush, ServerMessage, Sizes, Snapshot, Successor, UpToDate,
};
use proptest::prelude::*;

fn seq() -> impl Strategy<Value = u64> {
    prop_oneof![1..200u64, 1..=u64::MAX]
}

fn payload() -> impl Strategy<Value = Vec<u8>> {
    prop::collection::vec(any::<u8>(), 0..600)
}

fn device_id() -> impl Strategy<Value = DeviceId> {
    any::<[u8; 16]>().prop_map(DeviceId)
}

fn push() -> impl Strategy<Value = Push> {
    (device_id(), seq(), payload()).prop_map(|(device_id, device_seq, payload)| Push {
        device_id,
        device_seq,
        payload,
    })
}

fn chunk() -> impl Strategy<Value = Chunk> {
    (seq(), device_id(), seq(), payload()).prop_map(
        |(relay_seq, device_id, device_seq, payload)| Chunk {
            relay_seq,
            device_id,
            device_seq,
            payload,
        },
    )
}

fn rollup_push() -> impl Strategy<Value = RollupPush> {
    (device_id(), seq(), 0..50u64, payload()).prop_map(|(device_id, first_seq, span, payload)| {
        RollupPush {
            device_id,
            first_seq,
            last_seq: first_seq.saturating_add(span),
            payload,
        }
    })
}

fn rollup() -> impl Strategy<Value = Rollup> {
    (seq(), 0..50u64, rollup_push()).prop_map(|(relay_seq, span, push)| Rollup {
        relay_seq,
        last_relay_seq: relay_seq.saturating_add(span),
        device_id: push.device_id,
        first_seq: push.first_seq,
        last_seq: push.last_seq,
        payload: push.payload,
    })
}

fn sizes() -> impl Strategy<Value = Sizes> {
    (
        any::<u64>(),
        proptest::option::of((any::<u64>(), any::<u64>())),
        any::<u64>(),
        any::<u64>(),
        any::<bool>(),
    )
        .prop_map(
            |(head, snapshot, tail_bytes, tail_entries, tail_held)| Sizes {
                head,
                snapshot,
                tail_bytes,
                tail_entries,
                tail_held,
            },
        )
}

fn ack() -> impl Strategy<Value = Ack> {
    (seq(), seq(), any::<bool>()).prop_map(|(device_seq, relay_seq, duplicate)| Ack {
        device_seq,
        relay_seq,
        duplicate,
    })
}

fn error_code() -> impl Strategy<Value = ErrorCode> {
    any::<u8>().prop_map(ErrorCode::from_u8)
}

fn nack() -> impl Strategy<Value = Nack> {
    (seq(), error_code(), any::<u64>(), ".{0,40}")
        .prop_filter("text within limit", |(.., text)| {
            text.len() <= MAX_TEXT_BYTES
        })
        .prop_map(|(device_seq, code, retry_after_ms, message)| Nack {
            device_seq,
            code,
            retry_after_ms,
            message,
        })
}

fn snapshot() -> impl Strategy<Value = Snapshot> {
    (any::<u64>(), payload()).prop_map(|(covers, payload)| Snapshot { covers, payload })
}

/// A page as the relay builds it: increasing sequences, none above `next_after <= head`.
fn page() -> impl Strategy<Value = Page> {
    (
        prop::collection::vec((1..5u64, device_id(), seq(), payload()), 0..8),
        prop::collection::vec((1..5u64, 0..4u64, device_id(), seq(), payload()), 0..3),
        0..3u64,
        0..3u64,
        any::<bool>(),
        mark(),
        mark(),
    )
        .prop_map(
            |(parts, rollup_parts, gap_after, gap_head, more, after_mark, next_mark)| {
                let mut relay_seq = 0;
                let chunks: Vec<Chunk> = parts
                    .into_iter()
                    .map(|(step, device_id, device_seq, payload)| {
                        relay_seq += step;
                        Chunk {
                            relay_seq,
                            device_id,
                            device_seq,
                            payload,
                        }
                    })
                    .collect();
                // Rollups take places of their own between the chunks' and after them.
                let mut place = 0;
                let rollups: Vec<Rollup> = rollup_parts
                    .into_iter()
                    .map(|(step, span, device_id, first_seq, payload)| {
                        place += step;
                        Rollup {
                            relay_seq: place,
                            last_relay_seq: place + span,
                            device_id,
                            first_seq,
                            last_seq: first_seq.saturating_add(span),
                            payload,
                        }
                    })
                    .collect();
                let top = rollups.iter().map(|r| r.last_relay_seq).max().unwrap_or(0);
                let next_after = relay_seq.max(top) + gap_after;
                Page {
                    head: next_after + gap_head,
                    next_after,
                    more,
                    after_mark,
                    next_mark,
                    chunks,
                    rollups,
                }
            },
        )
}

fn pairing_body() -> impl Strategy<Value = Vec<u8>> {
    prop_oneof![
        prop::collection::vec(any::<u8>(), 0..64),
        prop::collection::vec(any::<u8>(), MAX_PAIRING_MESSAGE..=MAX_PAIRING_MESSAGE),
    ]
}

fn pairing_ticket() -> impl Strategy<Value = PairingTicket> {
    (
        prop::string::string_regex(&format!("[0-9a-zé]{{0,{}}}", MAX_MAILBOX_LEN / 2))
            .unwrap_or_else(|e| panic!("{e}")),
        any::<[u8; 32]>(),
        any::<u64>(),
    )
        .prop_map(|(mailbox, token, expires_at)| PairingTicket {
            mailbox,
            token,
            expires_at,
        })
}

fn pairing_inbox() -> impl Strategy<Value = PairingInbox> {
    (
        prop::sample::select(PairingState::ALL.to_vec()),
        prop::collection::vec((1..4u64, pairing_body()), 0..=MAX_PAIRING_MESSAGES),
    )
        .prop_map(|(state, steps)| {
            let mut seq = 0u64;
            let messages = steps
                .into_iter()
                .map(|(step, body)| {
                    seq += step;
                    PairingMessage { seq, body }
                })
                .collect();
            PairingInbox { state, messages }
        })
}

fn device_list() -> impl Strategy<Value = DeviceList> {
    prop::collection::btree_map(any::<[u8; 16]>(), any::<u64>(), 0..=MAX_LISTED_DEVICES).prop_map(
        |seen| DeviceList {
            devices: seen
                .into_iter()
                .map(|(id, last_seen)| DeviceSeen {
                    device_id: DeviceId(id),
                    last_seen,
                })
                .collect(),
        },
    )
}

fn mark() -> impl Strategy<Value = Option<Mark>> {
    proptest::option::of(any::<[u8; 16]>())
}

fn any_message() -> impl Strategy<Value = AnyMessage> {
    prop_oneof![
        push().prop_map(AnyMessage::Push),
        snapshot().prop_map(AnyMessage::Snapshot),
        ack().prop_map(AnyMessage::Ack),
        nack().prop_map(AnyMessage::Nack),
        chunk().prop_map(AnyMessage::Chunk),
        (any::<u64>(), mark(), mark()).prop_map(|(head, after_mark, head_mark)| {
            AnyMessage::UpToDate(UpToDate {
                head,
                after_mark,
                head_mark,
            })
        }),
        page().prop_map(AnyMessage::Page),
        rollup_push().prop_map(AnyMessage::RollupPush),
        rollup().prop_map(AnyMessage::Rollup),
        sizes().prop_map(AnyMessage::Sizes),
        any::<bool>().prop_map(|short| AnyMessage::PairingOpen(PairingOpen { short })),
        pairing_body().prop_map(|body| AnyMessage::PairingPost(PairingPost { body })),
        pairing_ticket().prop_map(AnyMessage::PairingTicket),
        pairing_inbox().prop_map(AnyMessage::PairingInbox),
        device_list().prop_map(AnyMessage::DeviceList),
        any::<[u8; 32]>().prop_map(|id| AnyMessage::Successor(Successor { id })),
    ]
}

const LIMITS: Limits = Limits::DEFAULT;

proptest! {
    #[test]
    fn any_message_round_trips(message in any_message()) {
        let bytes = message.to_bytes();
        let decoded = AnyMessage::decode(&bytes, &LIMITS);
        prop_assert_eq!(decoded.as_ref(), Ok(&message));
        prop_assert_eq!(decoded.map(|m| m.to_bytes()), Ok(bytes));
        prop_assert_eq!(message.kind().to_u8(), message.to_bytes()[1]);
    }

    #[test]
    fn typed_decoders_round_trip(
        p in push(), c in chunk(), a in ack(), n in nack(), s in snapshot(), pg in page(),
        r in rollup(),
    ) {
        prop_assert_eq!(Push::decode(&p.to_bytes(), &LIMITS), Ok(p.clone()));
        prop_assert_eq!(Chunk::decode(&c.to_bytes(), &LIMITS), Ok(c.clone()));
        prop_assert_eq!(Ack::decode(&a.to_bytes(), &LIMITS), Ok(a));
        prop_assert_eq!(Nack::decode(&n.to_bytes(), &LIMITS), Ok(n.clone()));
        prop_assert_eq!(Snapshot::decode(&s.to_bytes(), &LIMITS), Ok(s.clone()));
        prop_assert_eq!(Page::decode(&pg.to_bytes(), &LIMITS), Ok(pg));
        prop_assert_eq!(
            ClientMessage::decode(&p.to_bytes(), &LIMITS),
            Ok(ClientMessage::Push(p))
        );
        for message in [
            ServerMessage::Ack(a),
            ServerMessage::Nack(n),
            ServerMessage::Chunk(c),
            ServerMessage::UpToDate(UpToDate {
                head: 7,
                after_mark: Some([3; 16]),
                head_mark: None,
            }),
            ServerMessage::Rollup(r),
        ] {
            prop_assert_eq!(ServerMessage::decode(&message.to_bytes(), &LIMITS), Ok(message));
        }
    }

    #[test]
    fn pairing_frames_round_trip_and_stay_off_the_websocket(
        t in pairing_ticket(), i in pairing_inbox(), body in pairing_body(), short in any::<bool>(),
    ) {
        let open = PairingOpen { short };
        let post = PairingPost { body };
        prop_assert_eq!(PairingOpen::decode(&open.to_bytes(), &LIMITS), Ok(open));
        prop_assert_eq!(PairingPost::decode(&post.to_bytes(), &LIMITS), Ok(post.clone()));
        prop_assert_eq!(PairingTicket::decode(&t.to_bytes(), &LIMITS), Ok(t.clone()));
        prop_assert_eq!(PairingInbox::decode(&i.to_bytes(), &LIMITS), Ok(i.clone()));
        prop_assert!(ClientMessage::decode(&post.to_bytes(), &LIMITS).is_err());
        prop_assert!(ServerMessage::decode(&i.to_bytes(), &LIMITS).is_err());
        let shown = format!("{t:?}{post:?}{i:?}");
        prop_assert!(!shown.contains("token: ["));
    }

    #[test]
    fn device_lists_round_trip_and_stay_off_the_websocket(list in device_list()) {
        prop_assert_eq!(DeviceList::decode(&list.to_bytes(), &LIMITS), Ok(list.clone()));
        prop_assert!(ServerMessage::decode(&list.to_bytes(), &LIMITS).is_err());
    }

    #[test]
    fn every_strict_prefix_is_refused(message in any_message()) {
        let bytes = message.to_bytes();
        for end in 0..bytes.len() {
            prop_assert!(AnyMessage::decode(&bytes[..end], &LIMITS).is_err(), "prefix {end}");
        }
    }

    #[test]
    fn trailing_bytes_are_refused(message in any_message(), extra in 1..4usize) {
        let mut bytes = message.to_bytes();
        bytes.extend(std::iter::repeat_n(0u8, extra));
        prop_assert!(AnyMessage::decode(&bytes, &LIMITS).is_err());
    }

    #[test]
    fn arbitrary_bytes_never_panic_and_stay_canonical(bytes in prop::collection::vec(any::<u8>(), 0..256)) {
        if let Ok(message) = AnyMessage::decode(&bytes, &LIMITS) {
            prop_assert_eq!(message.to_bytes(), bytes);
        }
    }
}
