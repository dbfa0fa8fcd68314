//! Hand-written hostile frames: each must be refused with the precise error, without allocating
//! from the claimed length.

use mend_protocol::{
    AnyMessage, ClientMessage, DecodeError, DeviceId, Kind, Limits, PROTOCOL_VERSION, Page, Push,
    ServerMessage, Snapshot, UpToDate,
};

const LIMITS: Limits = Limits::DEFAULT;

fn push_frame(payload_len: usize) -> Vec<u8> {
    Push {
        device_id: DeviceId([7; 16]),
        device_seq: 1,
        payload: vec![0xaa; payload_len],
    }
    .to_bytes()
}

#[test]
fn empty_and_header_errors() {
    assert_eq!(AnyMessage::decode(&[], &LIMITS), Err(DecodeError::Empty));
    assert_eq!(
        AnyMessage::decode(&[PROTOCOL_VERSION], &LIMITS),
        Err(DecodeError::Truncated)
    );
    assert_eq!(
        AnyMessage::decode(&[2, Kind::Push.to_u8()], &LIMITS),
        Err(DecodeError::UnsupportedVersion(2))
    );
    assert_eq!(
        AnyMessage::decode(&[0, 0], &LIMITS),
        Err(DecodeError::UnsupportedVersion(0))
    );
    assert_eq!(
        AnyMessage::decode(&[PROTOCOL_VERSION, 0x7f], &LIMITS),
        Err(DecodeError::UnknownKind(0x7f))
    );
}

#[test]
fn wrong_direction_is_refused() {
    let up_to_date = UpToDate {
        head: 3,
        after_mark: None,
        head_mark: None,
    }
    .to_bytes();
    assert_eq!(
        ClientMessage::decode(&up_to_date, &LIMITS),
        Err(DecodeError::UnexpectedKind {
            expected: "a client message",
            found: Kind::UpToDate
        })
    );
    assert!(matches!(
        ServerMessage::decode(&push_frame(1), &LIMITS),
        Err(DecodeError::UnexpectedKind { .. })
    ));
    assert!(matches!(
        Snapshot::decode(&push_frame(1), &LIMITS),
        Err(DecodeError::UnexpectedKind { .. })
    ));
}

#[test]
fn oversized_payload_is_refused_by_its_claimed_length() {
    let small = Limits {
        max_chunk_bytes: 8,
        ..LIMITS
    };
    assert!(Push::decode(&push_frame(8), &small).is_ok());
    assert_eq!(
        Push::decode(&push_frame(9), &small),
        Err(DecodeError::TooLarge {
            field: "payload",
            len: 9,
            limit: 8
        })
    );
    // A claimed length of u64::MAX with no bytes behind it: refused before any allocation.
    let mut frame = vec![PROTOCOL_VERSION, Kind::Push.to_u8()];
    frame.extend_from_slice(&[7; 16]);
    frame.push(1);
    frame.extend_from_slice(&[0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0x01]);
    assert!(matches!(
        Push::decode(&frame, &LIMITS),
        Err(DecodeError::TooLarge { len: u64::MAX, .. })
    ));
    // A length within the limit but beyond the input.
    let mut frame = push_frame(0);
    frame.pop();
    frame.push(100);
    assert_eq!(Push::decode(&frame, &LIMITS), Err(DecodeError::Truncated));
}

#[test]
fn page_count_is_bounded_by_the_input_left() {
    let mut frame = vec![PROTOCOL_VERSION, Kind::Page.to_u8(), 5, 5, 0];
    frame.extend_from_slice(&[0x80, 0x08]); // 1024 chunks claimed, no bytes behind them
    assert_eq!(
        Page::decode(&frame, &LIMITS),
        Err(DecodeError::TooLarge {
            field: "chunk count",
            len: 1024,
            limit: 0
        })
    );
}

#[test]
fn zero_sequences_and_unknown_flags_are_refused() {
    let mut frame = push_frame(0);
    frame[18] = 0; // device_seq
    assert!(matches!(
        Push::decode(&frame, &LIMITS),
        Err(DecodeError::Invalid {
            field: "device_seq",
            ..
        })
    ));
    let ack = [PROTOCOL_VERSION, Kind::Ack.to_u8(), 1, 1, 2];
    assert!(matches!(
        AnyMessage::decode(&ack, &LIMITS),
        Err(DecodeError::Invalid { .. })
    ));
}

#[test]
fn debug_output_hides_payloads() {
    let push = Push {
        device_id: DeviceId([1; 16]),
        device_seq: 9,
        payload: b"secret journal words".to_vec(),
    };
    let text = format!("{push:?}");
    assert!(text.contains("payload_len: 20"), "{text}");
    assert!(!text.contains("secret"), "{text}");
    assert!(!format!("{:?}", ClientMessage::Push(push)).contains("115, 101"));
}

#[test]
fn hostile_pairing_frames_are_refused() {
    use mend_protocol::{
        MAX_PAIRING_MESSAGE, PairingInbox, PairingOpen, PairingPost, PairingTicket,
    };
    let open = [PROTOCOL_VERSION, Kind::PairingOpen.to_u8(), 0x02];
    assert!(matches!(
        PairingOpen::decode(&open, &LIMITS),
        Err(DecodeError::Invalid { .. })
    ));
    let mut post = vec![PROTOCOL_VERSION, Kind::PairingPost.to_u8()];
    mend_protocol::varint::write(&mut post, MAX_PAIRING_MESSAGE as u64 + 1);
    assert!(matches!(
        PairingPost::decode(&post, &LIMITS),
        Err(DecodeError::TooLarge { field: "body", .. })
    ));
    // A mailbox longer than 32 bytes.
    let mut ticket = vec![PROTOCOL_VERSION, Kind::PairingTicket.to_u8(), 33];
    ticket.extend([b'1'; 33]);
    ticket.extend([0; 33]);
    assert!(matches!(
        PairingTicket::decode(&ticket, &LIMITS),
        Err(DecodeError::TooLarge {
            field: "mailbox",
            ..
        })
    ));
    // An unknown state, a huge count, a zero seq, seqs out of order.
    for (inbox, field) in [
        (vec![5, 0], "pairing state"),
        (vec![0, 0x80, 0x01, 1, 0], "message count"),
        (vec![1, 1, 0, 0], "seq"),
        (vec![1, 2, 2, 0, 2, 0], "seq"),
        (
            vec![1, 9, 1, 0, 2, 0, 3, 0, 4, 0, 5, 0, 6, 0, 7, 0, 8, 0, 9, 0],
            "message count",
        ),
    ] {
        let mut frame = vec![PROTOCOL_VERSION, Kind::PairingInbox.to_u8()];
        frame.extend(inbox);
        let error = PairingInbox::decode(&frame, &LIMITS);
        assert!(
            matches!(
                error,
                Err(DecodeError::Invalid { field: f, .. } | DecodeError::TooLarge { field: f, .. })
                    if f == field
            ),
            "{field}: {error:?}"
        );
    }
}

#[test]
fn pairing_debug_output_hides_tokens_and_bodies() {
    use mend_protocol::{PairingInbox, PairingMessage, PairingPost, PairingState, PairingTicket};
    let ticket = PairingTicket {
        mailbox: "42".into(),
        token: [0xab; 32],
        expires_at: 9,
    };
    let text = format!("{ticket:?}");
    assert!(!text.contains("171"), "{text}");
    assert!(ticket.authorization().ends_with(&"ab".repeat(32)));
    let post = PairingPost {
        body: b"secret".to_vec(),
    };
    let inbox = PairingInbox {
        state: PairingState::Claimed,
        messages: vec![PairingMessage {
            seq: 1,
            body: b"secret".to_vec(),
        }],
    };
    let text = format!("{post:?}{inbox:?}");
    assert!(!text.contains("115, 101"), "{text}");
}

#[test]
fn hostile_device_lists_are_refused() {
    use mend_protocol::{DeviceList, MAX_LISTED_DEVICES};
    let id = |b: u8| [b; 16];
    // A count beyond the bound or the input, ids out of order or repeated.
    let mut huge = vec![MAX_LISTED_DEVICES as u8 + 1];
    for i in 0..=MAX_LISTED_DEVICES as u8 {
        huge.extend(id(i));
        huge.push(0);
    }
    let mut unsorted = vec![2];
    unsorted.extend(id(2));
    unsorted.push(0);
    unsorted.extend(id(1));
    unsorted.push(0);
    let mut repeated = vec![2];
    repeated.extend(id(1));
    repeated.push(0);
    repeated.extend(id(1));
    repeated.push(0);
    for (body, field) in [
        (huge, "device count"),
        (vec![0x80, 0x01], "device count"),
        (unsorted, "device id"),
        (repeated, "device id"),
    ] {
        let mut frame = vec![PROTOCOL_VERSION, Kind::DeviceList.to_u8()];
        frame.extend(body);
        let error = DeviceList::decode(&frame, &LIMITS);
        assert!(
            matches!(
                error,
                Err(DecodeError::Invalid { field: f, .. } | DecodeError::TooLarge { field: f, .. })
                    if f == field
            ),
            "{field}: {error:?}"
        );
    }
}
