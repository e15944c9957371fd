//! A whole agent session between two in-memory peers, each written as an
//! implementer would: frames in a read buffer, messages decoded from them.

use bytes::{Bytes, BytesMut};
use tether_model::{Format, from_proto, parse, to_proto};
use tether_proto::{
    ClientKind, ClientMessage, DEFAULT_MAX_FRAME_BYTES, FrameDecoder, FrameError, Hello,
    MAX_HELLO_FRAME_BYTES, PROTOCOL_VERSION, Push, PushAck, Reject, RejectReason, ScrapeRequest,
    ScrapeResponse, ServerKind, ServerMessage, Welcome, decode_client_message,
    decode_server_message, encode, encode_limited, negotiate,
};

/// One direction of a connection: what one peer wrote and the other has
/// not read yet, and the reader's decoder.
struct Pipe {
    wire: BytesMut,
    frames: FrameDecoder,
}

impl Pipe {
    fn new(max_frame_bytes: usize) -> Self {
        Pipe {
            wire: BytesMut::new(),
            frames: FrameDecoder::new(max_frame_bytes),
        }
    }

    /// The next complete body, delivering the bytes one at a time as a slow
    /// network would.
    fn next_body(&mut self) -> Result<Option<Bytes>, FrameError> {
        let mut read_buf = BytesMut::new();
        while !self.wire.is_empty() {
            read_buf.extend_from_slice(&self.wire.split_to(1));
            if let Some(body) = self.frames.decode(&mut read_buf)? {
                // Put back what the reader has not consumed.
                read_buf.unsplit(self.wire.split());
                self.wire = read_buf;
                return Ok(Some(body));
            }
        }
        self.wire = read_buf;
        Ok(None)
    }
}

/// The gateway's side of the handshake, as the protocol describes it.
fn gateway_handshake(to_gateway: &mut Pipe, expected_token: &str) -> Result<Welcome, Reject> {
    let body = match to_gateway.next_body() {
        Ok(Some(body)) => body,
        Ok(None) => return Err(Reject::new(RejectReason::HandshakeTimeout, "no hello")),
        Err(error) => return Err(Reject::new(error.reject_reason(), error.to_string())),
    };
    let message = decode_client_message(body)
        .map_err(|error| Reject::new(error.reject_reason(), error.to_string()))?;
    let Some(ClientKind::Hello(hello)) = message.kind else {
        return Err(Reject::new(
            RejectReason::ProtocolViolation,
            format!("expected hello, got {}", message.kind_name()),
        ));
    };
    let Some(version) = negotiate(hello.min_version, hello.max_version) else {
        return Err(Reject::new(RejectReason::UnsupportedVersion, "speak 1"));
    };
    if hello.token != expected_token {
        return Err(Reject::new(RejectReason::BadToken, "token not accepted"));
    }
    if let Some(label) = hello.missing_identity() {
        return Err(Reject::new(
            RejectReason::MissingIdentity,
            format!("set {label}"),
        ));
    }
    Ok(Welcome {
        version,
        heartbeat_interval_ms: 15_000,
        max_frame_bytes: 4096,
        gateway_version: "test".to_owned(),
    })
}

fn send(pipe: &mut Pipe, message: &impl prost::Message) {
    encode(message, &mut pipe.wire);
}

fn next_server_kind(pipe: &mut Pipe) -> ServerKind {
    let body = pipe.next_body().expect("a valid frame").expect("a frame");
    decode_server_message(body)
        .expect("a valid message")
        .kind
        .expect("a kind, or decoding failed")
}

fn next_client_kind(pipe: &mut Pipe) -> ClientKind {
    let body = pipe.next_body().expect("a valid frame").expect("a frame");
    decode_client_message(body)
        .expect("a valid message")
        .kind
        .expect("a kind, or decoding failed")
}

#[test]
fn a_session_from_hello_to_push_and_close() {
    let mut to_gateway = Pipe::new(MAX_HELLO_FRAME_BYTES);
    let mut to_agent = Pipe::new(DEFAULT_MAX_FRAME_BYTES);

    // Handshake.
    let hello = Hello {
        client_name: "it".to_owned(),
        ..Hello::new("secret", [("job", "batch"), ("instance", "a")])
    };
    send(&mut to_gateway, &ClientMessage::from(hello));
    let welcome = gateway_handshake(&mut to_gateway, "secret").expect("accepted");
    send(&mut to_agent, &ServerMessage::from(welcome));
    let ServerKind::Welcome(welcome) = next_server_kind(&mut to_agent) else {
        panic!("expected welcome");
    };
    assert_eq!(welcome.version, PROTOCOL_VERSION);
    // After the handshake the gateway reads with its full limit.
    let gateway_limit = usize::try_from(welcome.max_frame_bytes).expect("fits");
    to_gateway.frames = FrameDecoder::new(gateway_limit);

    // A scrape: the agent's exposition travels as protobuf families.
    send(
        &mut to_agent,
        &ServerMessage::from(ScrapeRequest {
            id: 1,
            timeout_ms: 500,
        }),
    );
    let ServerKind::ScrapeRequest(request) = next_server_kind(&mut to_agent) else {
        panic!("expected a scrape request");
    };
    let text = b"# TYPE jobs_done_total counter\njobs_done_total 3\n";
    let families = parse(text, Format::Text).expect("valid exposition");
    let response = ScrapeResponse {
        id: request.id,
        families: families.iter().map(to_proto).collect(),
        error: String::new(),
    };
    encode_limited(
        &ClientMessage::from(response),
        gateway_limit,
        &mut to_gateway.wire,
    )
    .expect("within the gateway's limit");
    let ClientKind::ScrapeResponse(response) = next_client_kind(&mut to_gateway) else {
        panic!("expected a scrape response");
    };
    assert_eq!(response.id, 1);
    let received: Vec<_> = response
        .families
        .into_iter()
        .map(|family| from_proto(family).expect("a valid family"))
        .collect();
    assert_eq!(received, families);

    // An answer over the gateway's limit is refused before it is sent.
    let huge = ScrapeResponse {
        id: 2,
        families: vec![to_proto(&families[0]); 200],
        error: String::new(),
    };
    let refused = encode_limited(
        &ClientMessage::from(huge),
        gateway_limit,
        &mut to_gateway.wire,
    );
    assert!(
        matches!(refused, Err(FrameError::TooLarge { .. })),
        "{refused:?}"
    );
    assert!(to_gateway.wire.is_empty(), "nothing was sent");

    // Push and close.
    let push = Push {
        id: 7,
        families: families.iter().map(to_proto).collect(),
        r#final: true,
    };
    send(&mut to_gateway, &ClientMessage::from(push));
    let ClientKind::Push(push) = next_client_kind(&mut to_gateway) else {
        panic!("expected a push");
    };
    assert!(push.r#final);
    send(
        &mut to_agent,
        &ServerMessage::from(PushAck {
            id: push.id,
            error: String::new(),
        }),
    );
    assert_eq!(
        next_server_kind(&mut to_agent),
        ServerKind::PushAck(PushAck {
            id: 7,
            error: String::new()
        })
    );
}

#[test]
fn handshakes_that_fail_get_the_reason() {
    let identity = [("job", "j"), ("instance", "i")];
    let oversized = Hello::new("t".repeat(MAX_HELLO_FRAME_BYTES), identity);
    let cases: [(ClientMessage, RejectReason); 5] = [
        (Hello::new("wrong", identity).into(), RejectReason::BadToken),
        (
            Hello {
                min_version: 2,
                max_version: 3,
                ..Hello::new("secret", identity)
            }
            .into(),
            RejectReason::UnsupportedVersion,
        ),
        (
            Hello::new("secret", [("job", "j")]).into(),
            RejectReason::MissingIdentity,
        ),
        (
            ScrapeResponse::default().into(),
            RejectReason::ProtocolViolation,
        ),
        (oversized.into(), RejectReason::FrameTooLarge),
    ];
    for (first, reason) in cases {
        let mut to_gateway = Pipe::new(MAX_HELLO_FRAME_BYTES);
        send(&mut to_gateway, &first);
        let rejected = gateway_handshake(&mut to_gateway, "secret");
        assert_eq!(
            rejected.map_err(|reject| reject.reason()),
            Err(reason),
            "{}",
            first.kind_name()
        );
    }
}
