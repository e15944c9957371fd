//! Tests of the agent protocol: negotiation, the example frames, round trips
//! of every kind, and what a broken or hostile peer can send.

use bytes::BytesMut;
use proptest::prelude::*;
use tether_model::pb::{Gauge, Metric};

use super::*;
use crate::examples::{self, Example, label};
use crate::{FrameDecoder, decode_event, encode, encode_to_vec};

#[test]
fn negotiation_picks_the_highest_common_version() {
    // ((min, max) offered by the Hello, version agreed)
    let cases = [
        ((1, 1), Some(1)),
        ((1, 5), Some(1)),
        ((0, 1), Some(1)),
        ((0, u32::MAX), Some(PROTOCOL_VERSION)),
        // A Hello that leaves both fields out offers version 0 only.
        ((0, 0), None),
        ((2, 5), None),
        ((3, 2), None),
        ((u32::MAX, u32::MAX), None),
    ];
    for ((min, max), expected) in cases {
        assert_eq!(negotiate(min, max), expected, "{min}..={max}");
    }
    assert_eq!(
        negotiate(MIN_SUPPORTED_VERSION, PROTOCOL_VERSION),
        Some(PROTOCOL_VERSION)
    );
    assert_eq!(Hello::new("", [("job", "j")]).max_version, PROTOCOL_VERSION);
}

/// The first frame body of `frame`, which must hold a complete frame.
fn body_of(frame: &[u8]) -> Bytes {
    let mut buf = BytesMut::from(frame);
    let body = FrameDecoder::default().decode(&mut buf);
    assert!(buf.is_empty(), "one frame, nothing after it");
    body.expect("a valid header").expect("a complete frame")
}

fn encode_example(example: &Example) -> BytesMut {
    let mut out = BytesMut::new();
    match example {
        Example::Client(message) => encode(message, &mut out),
        Example::Server(message) => encode(message, &mut out),
        Example::Event(event) => encode(event, &mut out),
    }
    out
}

fn decode_like(example: &Example, body: Bytes) -> Result<Example, FrameError> {
    Ok(match example {
        Example::Client(_) => Example::Client(decode_client_message(body)?),
        Example::Server(_) => Example::Server(decode_server_message(body)?),
        Example::Event(_) => Example::Event(decode_event(body)?),
    })
}

#[test]
fn examples_encode_to_their_hand_derived_bytes() {
    for (name, frame, example) in examples::examples() {
        assert_eq!(encode_example(&example), frame, "{name}");
    }
}

#[test]
fn hand_derived_bytes_decode_to_the_examples() {
    for (name, frame, example) in examples::examples() {
        let decoded = decode_like(&example, body_of(&frame));
        assert_eq!(decoded, Ok(example), "{name}");
    }
}

/// One message of every kind in each direction, fields set to values other
/// than their defaults, and some of every kind at their defaults.
fn messages() -> Vec<Example> {
    let family = MetricFamily {
        name: Some("up".to_owned()),
        r#type: Some(1),
        metric: vec![Metric {
            label: vec![label("a", "b")],
            gauge: Some(Gauge { value: Some(1.0) }),
            ..Metric::default()
        }],
        ..MetricFamily::default()
    };
    let client: Vec<ClientMessage> = vec![
        examples::hello().into(),
        Hello::default().into(),
        ScrapeResponse {
            id: u64::MAX,
            families: vec![family.clone(), family.clone()],
            error: String::new(),
        }
        .into(),
        ScrapeResponse {
            id: 2,
            families: vec![],
            error: "collector failed: disk gone".to_owned(),
        }
        .into(),
        Push {
            id: 3,
            families: vec![family],
            r#final: false,
        }
        .into(),
        Push::default().into(),
        Ping { nonce: 1 << 40 }.into(),
        Ping::default().into(),
        Pong { nonce: 9 }.into(),
        Goodbye {
            reason: "shutting down: SIGTERM".to_owned(),
        }
        .into(),
        Goodbye::default().into(),
    ];
    let server: Vec<ServerMessage> = vec![
        Welcome {
            version: 1,
            heartbeat_interval_ms: 0,
            max_frame_bytes: u32::MAX,
            gateway_version: "9.9.9".to_owned(),
        }
        .into(),
        Welcome::default().into(),
        ScrapeRequest {
            id: 12,
            timeout_ms: 1,
        }
        .into(),
        PushAck {
            id: 3,
            error: "invalid family \"up\"".to_owned(),
        }
        .into(),
        Ping { nonce: 0 }.into(),
        Pong { nonce: u64::MAX }.into(),
        Reject::new(RejectReason::ShuttingDown, "gateway stopping").into(),
        Reject::new(RejectReason::Unspecified, "").into(),
    ];
    client
        .into_iter()
        .map(Example::Client)
        .chain(server.into_iter().map(Example::Server))
        .collect()
}

#[test]
fn every_kind_round_trips_through_frames() {
    let messages = messages();
    let mut stream = BytesMut::new();
    for message in &messages {
        stream.extend_from_slice(&encode_example(message));
    }
    // The whole stream read three bytes at a time.
    let mut decoder = FrameDecoder::default();
    let mut buf = BytesMut::new();
    let mut decoded = Vec::new();
    for chunk in stream.chunks(3) {
        buf.extend_from_slice(chunk);
        while let Some(body) = decoder.decode(&mut buf).expect("valid frames") {
            let like = &messages[decoded.len()];
            decoded.push(decode_like(like, body).expect("a valid message"));
        }
    }
    assert_eq!(decoded, messages);
}

#[test]
fn a_kind_at_its_defaults_is_still_that_kind() {
    // An empty `Ping` is the key and a zero length: the oneof member is
    // present although every field in it is at its default.
    let frame = encode_to_vec(&ClientMessage::from(Ping::default()));
    assert_eq!(frame, [0x02, 0x42, 0x00]);
    let message = decode_client_message(Bytes::from_static(&[0x42, 0x00]));
    assert_eq!(
        message.map(|message| message.kind),
        Ok(Some(ClientKind::Ping(Ping { nonce: 0 })))
    );
}

#[test]
fn every_cut_of_an_example_body_is_an_error() {
    // Each body is one field of the outer message that spans it all, so a
    // cut anywhere leaves a length that runs past the end, or nothing.
    for (name, frame, example) in examples::examples() {
        if matches!(example, Example::Event(_)) {
            continue;
        }
        let body = body_of(&frame);
        for cut in 0..body.len() {
            let decoded = decode_like(&example, body.slice(..cut));
            let expected_error = if cut == 0 {
                matches!(decoded, Err(FrameError::UnknownKind { .. }))
            } else {
                matches!(decoded, Err(FrameError::Decode { .. }))
            };
            assert!(expected_error, "{name} cut at {cut}: {decoded:?}");
        }
    }
}

#[test]
fn garbage_bodies_are_errors() {
    // (body, what decode_client_message reports)
    let unknown = Err("unknown kind");
    let invalid = Err("invalid");
    let cases: [(&[u8], Result<(), &str>); 9] = [
        (&[], unknown),
        // Field 2 is no kind of ClientMessage: skipped as unknown, so none is set.
        (&[0x12, 0x00], unknown),
        // Field 1 with wire type 7, which does not exist.
        (&[0x0f], invalid),
        // Field 1 (hello) as a varint, not a message.
        (&[0x08, 0x01], invalid),
        // Hello 3 token that is not UTF-8.
        (&[0x0a, 0x03, 0x1a, 0x01, 0xff], invalid),
        // A key that never ends.
        (
            &[
                0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff,
            ],
            invalid,
        ),
        // An HTTP request sent to the agent port, after its first byte went as the header.
        (b"ET / HTTP/1.1\r\nHost: gateway\r\n\r\n", invalid),
        // A TLS ClientHello sent to a plaintext port, after its first byte.
        (
            &[0x03, 0x01, 0x02, 0x00, 0x01, 0x00, 0x01, 0xfc, 0x03, 0x03],
            invalid,
        ),
        // Groups nested past prost's recursion limit.
        (&deeply_nested(), invalid),
    ];
    for (body, expected) in cases {
        let outcome = match decode_client_message(Bytes::copy_from_slice(body)) {
            Ok(_) => Ok(()),
            Err(FrameError::UnknownKind { message }) => {
                assert_eq!(message, "ClientMessage");
                Err("unknown kind")
            }
            Err(FrameError::Decode { message, .. }) => {
                assert_eq!(message, "ClientMessage");
                Err("invalid")
            }
            Err(other) => panic!("{body:02x?}: a message decoder reported {other:?}"),
        };
        assert_eq!(outcome, expected, "{body:02x?}");
    }
}

/// 10,000 nested groups of an unknown field 15, then their ends. prost skips
/// an unknown group by recursing into it, and stops at its depth limit of
/// 100 instead of overflowing the stack.
fn deeply_nested() -> Vec<u8> {
    let depth = 10_000;
    let start_group = 15 << 3 | 3;
    let end_group = 15 << 3 | 4;
    let mut body = vec![start_group; depth];
    body.extend(std::iter::repeat_n(end_group, depth));
    body
}

#[test]
fn a_body_from_the_other_direction_is_an_error() {
    let hello = body_of(&examples::examples()[0].1);
    assert!(matches!(
        decode_server_message(hello),
        Err(FrameError::Decode {
            message: "ServerMessage",
            ..
        })
    ));
    let welcome = body_of(&examples::examples()[1].1);
    assert!(matches!(
        decode_client_message(welcome),
        Err(FrameError::Decode {
            message: "ClientMessage",
            ..
        })
    ));
}

#[test]
fn kind_names_are_the_field_names() {
    let client: Vec<&str> = messages()
        .iter()
        .filter_map(|message| match message {
            Example::Client(message) => Some(message.kind_name()),
            _ => None,
        })
        .collect();
    assert_eq!(
        client,
        [
            "hello",
            "hello",
            "scrape_response",
            "scrape_response",
            "push",
            "push",
            "ping",
            "ping",
            "pong",
            "goodbye",
            "goodbye"
        ]
    );
    let server: Vec<&str> = messages()
        .iter()
        .filter_map(|message| match message {
            Example::Server(message) => Some(message.kind_name()),
            _ => None,
        })
        .collect();
    assert_eq!(
        server,
        [
            "welcome",
            "welcome",
            "scrape_request",
            "push_ack",
            "ping",
            "pong",
            "reject",
            "reject"
        ]
    );
    assert_eq!(ClientMessage::default().kind_name(), "none");
    assert_eq!(ServerMessage::default().kind_name(), "none");
}

#[test]
fn hello_debug_hides_the_token() {
    let hello = examples::hello();
    for text in [
        format!("{hello:?}"),
        format!("{:?}", ClientMessage::from(hello)),
    ] {
        assert!(!text.contains("s3cret"), "{text}");
        assert!(text.contains("token: \"<redacted>\""), "{text}");
        assert!(text.contains("tether-exporter"), "{text}");
    }
    let without = format!("{:?}", Hello::default());
    assert!(without.contains("token: \"\""), "{without}");
}

#[test]
fn identity_labels_are_found_and_checked() {
    let hello = examples::hello();
    assert_eq!(hello.label("job"), Some("batch"));
    assert_eq!(hello.label("instance"), Some("host-1"));
    assert_eq!(hello.label("zone"), None);
    assert_eq!(hello.missing_identity(), None);

    let cases: [(Vec<LabelPair>, Option<&str>); 5] = [
        (vec![], Some("job")),
        (vec![label("job", "j")], Some("instance")),
        (
            vec![label("job", "j"), label("instance", "")],
            Some("instance"),
        ),
        (
            vec![
                label("instance", "i"),
                LabelPair {
                    name: Some("job".to_owned()),
                    value: None,
                },
            ],
            Some("job"),
        ),
        (
            vec![
                LabelPair::default(),
                label("instance", "i"),
                label("job", "j"),
            ],
            None,
        ),
    ];
    for (identity, missing) in cases {
        let hello = Hello {
            identity,
            ..Hello::default()
        };
        assert_eq!(hello.missing_identity(), missing, "{:?}", hello.identity);
    }
}

#[test]
fn reject_reasons_have_their_proto_names_and_kinds() {
    let names: Vec<&str> = (0..10)
        .map(|number| {
            RejectReason::try_from(number)
                .expect("0 to 9 are defined")
                .as_str_name()
        })
        .collect();
    assert_eq!(
        names,
        [
            "REJECT_REASON_UNSPECIFIED",
            "REJECT_REASON_BAD_TOKEN",
            "REJECT_REASON_UNSUPPORTED_VERSION",
            "REJECT_REASON_FRAME_TOO_LARGE",
            "REJECT_REASON_MALFORMED_FRAME",
            "REJECT_REASON_HANDSHAKE_TIMEOUT",
            "REJECT_REASON_TOO_MANY_CONNECTIONS",
            "REJECT_REASON_MISSING_IDENTITY",
            "REJECT_REASON_SHUTTING_DOWN",
            "REJECT_REASON_PROTOCOL_VIOLATION",
        ]
    );
    let permanent: Vec<RejectReason> = (0..10)
        .filter_map(|number| RejectReason::try_from(number).ok())
        .filter(|reason| reason.is_permanent())
        .collect();
    assert_eq!(
        permanent,
        [
            RejectReason::BadToken,
            RejectReason::UnsupportedVersion,
            RejectReason::MissingIdentity
        ]
    );
    // A number from a newer gateway is kept, and read as unspecified.
    let reject = decode_server_message(Bytes::from_static(&[0x62, 0x02, 0x08, 0x2a]));
    let reject = match reject.map(|message| message.kind) {
        Ok(Some(ServerKind::Reject(reject))) => reject,
        other => panic!("not a reject: {other:?}"),
    };
    assert_eq!(reject.reason, 42);
    assert_eq!(reject.reason(), RejectReason::Unspecified);
}

#[test]
fn frame_errors_map_to_reject_reasons() {
    let cases = [
        (FrameError::InvalidHeader, RejectReason::MalformedFrame),
        (
            FrameError::TooLarge {
                len: 2,
                max_frame_bytes: 1,
            },
            RejectReason::FrameTooLarge,
        ),
        (
            FrameError::Truncated { buffered: 1 },
            RejectReason::MalformedFrame,
        ),
        (
            FrameError::UnknownKind {
                message: "ClientMessage",
            },
            RejectReason::ProtocolViolation,
        ),
    ];
    for (error, reason) in cases {
        assert_eq!(error.reject_reason(), reason, "{error}");
    }
    let decode = decode_client_message(Bytes::from_static(&[0x0f]));
    assert_eq!(
        decode.map_err(|error| error.reject_reason()),
        Err(RejectReason::MalformedFrame)
    );
}

#[test]
fn a_hello_over_the_handshake_limit_is_refused_by_its_header() {
    let hello = Hello::new("t".repeat(MAX_HELLO_FRAME_BYTES), [("job", "j")]);
    let frame = encode_to_vec(&ClientMessage::from(hello));
    // Four header bytes are enough to see the body is too long.
    let mut head = BytesMut::from(&frame[..4]);
    let refused = FrameDecoder::new(MAX_HELLO_FRAME_BYTES).decode(&mut head);
    assert!(
        matches!(
            refused,
            Err(FrameError::TooLarge {
                max_frame_bytes: MAX_HELLO_FRAME_BYTES,
                ..
            })
        ),
        "{refused:?}"
    );
    assert_eq!(
        refused.map_err(|error| error.reject_reason()),
        Err(RejectReason::FrameTooLarge)
    );
}

// Generated messages and hostile bytes.

fn family() -> impl Strategy<Value = MetricFamily> {
    (
        "[a-z_]{1,12}",
        prop::option::of(".{0,8}"),
        prop::option::of(0i32..8),
        prop::collection::vec(any::<f64>(), 0..3),
    )
        .prop_map(|(name, help, metric_type, values)| MetricFamily {
            name: Some(name),
            help,
            r#type: metric_type,
            metric: values
                .into_iter()
                .map(|value| Metric {
                    gauge: Some(Gauge { value: Some(value) }),
                    ..Metric::default()
                })
                .collect(),
            unit: None,
        })
}

fn families() -> impl Strategy<Value = Vec<MetricFamily>> {
    prop::collection::vec(family(), 0..3)
}

fn client_message() -> impl Strategy<Value = ClientMessage> {
    let identity = prop::collection::vec(("[a-z]{0,6}", ".{0,6}"), 0..3);
    prop_oneof![
        (any::<(u32, u32)>(), ".{0,8}", identity, ".{0,8}", ".{0,8}").prop_map(
            |((min_version, max_version), token, identity, client_name, client_version)| {
                ClientMessage::from(Hello {
                    min_version,
                    max_version,
                    token,
                    identity: identity
                        .iter()
                        .map(|(name, value)| label(name, value))
                        .collect(),
                    client_name,
                    client_version,
                })
            }
        ),
        (any::<u64>(), families(), ".{0,8}").prop_map(|(id, families, error)| {
            ScrapeResponse {
                id,
                families,
                error,
            }
            .into()
        }),
        (any::<u64>(), families(), any::<bool>()).prop_map(|(id, families, r#final)| {
            Push {
                id,
                families,
                r#final,
            }
            .into()
        }),
        any::<u64>().prop_map(|nonce| Ping { nonce }.into()),
        any::<u64>().prop_map(|nonce| Pong { nonce }.into()),
        ".{0,16}".prop_map(|reason| Goodbye { reason }.into()),
    ]
}

fn server_message() -> impl Strategy<Value = ServerMessage> {
    prop_oneof![
        (any::<(u32, u32, u32)>(), ".{0,8}").prop_map(
            |((version, heartbeat_interval_ms, max_frame_bytes), gateway_version)| {
                Welcome {
                    version,
                    heartbeat_interval_ms,
                    max_frame_bytes,
                    gateway_version,
                }
                .into()
            }
        ),
        (any::<u64>(), any::<u32>())
            .prop_map(|(id, timeout_ms)| ScrapeRequest { id, timeout_ms }.into()),
        (any::<u64>(), ".{0,8}").prop_map(|(id, error)| PushAck { id, error }.into()),
        any::<u64>().prop_map(|nonce| Ping { nonce }.into()),
        any::<u64>().prop_map(|nonce| Pong { nonce }.into()),
        (any::<i32>(), ".{0,8}").prop_map(|(reason, message)| Reject { reason, message }.into()),
    ]
}

/// A body decoded as a `ClientMessage`, a `ServerMessage` and an `Event`,
/// each success re-encoded so that outcomes compare even with NaNs inside.
type AllWays = [Result<Vec<u8>, FrameError>; 3];

/// Decodes `body` in every way a peer might.
fn decode_all_ways(body: &Bytes) -> AllWays {
    [
        decode_client_message(body.clone()).map(|message| message.encode_to_vec()),
        decode_server_message(body.clone()).map(|message| message.encode_to_vec()),
        decode_event(body.clone()).map(|event| event.encode_to_vec()),
    ]
}

proptest! {
    #[test]
    fn generated_client_messages_round_trip(message in client_message()) {
        let frame = encode_to_vec(&message);
        let decoded = decode_client_message(body_of(&frame));
        // Compared as bytes, since a NaN gauge is not equal to itself.
        prop_assert_eq!(decoded.map(|decoded| encode_to_vec(&decoded)), Ok(frame));
    }

    #[test]
    fn generated_server_messages_round_trip(message in server_message()) {
        let frame = encode_to_vec(&message);
        let decoded = decode_server_message(body_of(&frame));
        prop_assert_eq!(decoded.map(|decoded| encode_to_vec(&decoded)), Ok(frame));
    }

    #[test]
    fn arbitrary_bytes_never_panic_and_decode_alike_in_any_chunks(
        stream in prop::collection::vec(any::<u8>(), 0..512),
        chunk_len in 1usize..64,
    ) {
        // Whole, then in chunks: the same frames and the same errors.
        let whole = decode_stream([&stream[..]]);
        let chunked = decode_stream(stream.chunks(chunk_len));
        prop_assert_eq!(whole, chunked);
    }

    #[test]
    fn mutated_examples_never_panic_and_re_encode_stably(
        which in any::<prop::sample::Index>(),
        edits in prop::collection::vec((any::<prop::sample::Index>(), any::<u8>()), 1..4),
    ) {
        let mut all = examples::examples();
        let (_, mut frame, _) = all.swap_remove(which.index(all.len()));
        for (index, byte) in edits {
            let at = index.index(frame.len());
            frame[at] = byte;
        }
        let frames = decode_stream([&frame[..]]);
        for outcome in frames.into_iter().flatten() {
            // What decoded once decodes again to the same bytes.
            for encoded in outcome.into_iter().flatten() {
                let again = decode_all_ways(&Bytes::from(encoded.clone()));
                prop_assert!(
                    again.iter().any(|decoded| decoded.as_ref() == Ok(&encoded)),
                    "{:02x?} does not decode back to itself", encoded
                );
            }
        }
    }
}

/// Frames `chunks` with a small limit and decodes each body every way.
/// The outcome of the framing comes last: `Ok` at a clean end.
fn decode_stream<'a>(
    chunks: impl IntoIterator<Item = &'a [u8]>,
) -> Vec<Result<AllWays, FrameError>> {
    let mut decoder = FrameDecoder::new(256);
    let mut buf = BytesMut::new();
    let mut outcomes = Vec::new();
    for chunk in chunks {
        buf.extend_from_slice(chunk);
        loop {
            match decoder.decode(&mut buf) {
                Ok(Some(body)) => outcomes.push(Ok(decode_all_ways(&body))),
                Ok(None) => break,
                Err(error) => {
                    outcomes.push(Err(error));
                    return outcomes;
                }
            }
        }
    }
    match decoder.decode_eof(&mut buf) {
        Ok(Some(body)) => outcomes.push(Ok(decode_all_ways(&body))),
        Ok(None) => {}
        Err(error) => outcomes.push(Err(error)),
    }
    outcomes
}
