//! The example frames of `PROTOCOL.md`, derived by hand from the protobuf
//! wire format, with the messages they encode. Tests only.
//!
//! A key is `field << 3 | wire type`, with wire type 0 a varint, 1 eight
//! little-endian bytes and 2 a varint length and that many bytes (LEN).
//! Proto3 leaves a field at its default value out; a oneof member and a
//! proto2 optional field are written whenever they are set.
//!
//! Three tests keep the three in step: the messages encode to these bytes,
//! these bytes decode to the messages, and `PROTOCOL.md` shows these bytes.

use tether_model::pb::{Counter, Gauge, LabelPair, Metric, MetricFamily, Timestamp};

use crate::{
    ClientMessage, Event, EventMetadata, EventMetric, EventMetricType, Goodbye, Hello, Operation,
    Ping, Pong, Push, PushAck, Reject, RejectReason, ScrapeRequest, ScrapeResponse, ServerMessage,
    Welcome,
};

/// The message an example frame holds.
#[derive(Debug, Clone, PartialEq)]
pub(crate) enum Example {
    /// Agent to gateway.
    Client(ClientMessage),
    /// Gateway to agent.
    Server(ServerMessage),
    /// One event of the metrics-exporter-tcp stream.
    Event(Event),
}

/// Every example: its name in `PROTOCOL.md`, its frame, its message.
pub(crate) fn examples() -> Vec<(&'static str, Vec<u8>, Example)> {
    vec![
        ("hello", hello_frame(), Example::Client(hello().into())),
        (
            "welcome",
            welcome_frame(),
            Example::Server(welcome().into()),
        ),
        (
            "scrape_request",
            scrape_request_frame(),
            Example::Server(scrape_request().into()),
        ),
        (
            "scrape_response",
            scrape_response_frame(),
            Example::Client(scrape_response().into()),
        ),
        (
            "ping",
            ping_frame(),
            Example::Server(Ping { nonce: 7 }.into()),
        ),
        (
            "pong",
            pong_frame(),
            Example::Client(Pong { nonce: 7 }.into()),
        ),
        (
            "push_final",
            push_final_frame(),
            Example::Client(push_final().into()),
        ),
        (
            "push_ack",
            push_ack_frame(),
            Example::Server(push_ack().into()),
        ),
        (
            "goodbye",
            goodbye_frame(),
            Example::Client(goodbye().into()),
        ),
        ("reject", reject_frame(), Example::Server(reject().into())),
        (
            "event_metadata",
            event_metadata_frame(),
            Example::Event(event_metadata()),
        ),
        (
            "event_metric",
            event_metric_frame(),
            Example::Event(event_metric()),
        ),
    ]
}

fn concat(parts: &[&[u8]]) -> Vec<u8> {
    parts.concat()
}

pub(crate) fn hello() -> Hello {
    Hello {
        client_name: "tether-exporter".to_owned(),
        client_version: "0.1.0".to_owned(),
        ..Hello::new("s3cret", [("job", "batch"), ("instance", "host-1")])
    }
}

#[rustfmt::skip]
fn hello_frame() -> Vec<u8> {
    concat(&[
        &[0x48],                         // frame header: body of 72 bytes
        &[0x0a, 0x46],                   // ClientMessage 1 hello, 70 bytes
        &[0x08, 0x01],                   //   Hello 1 min_version: 1
        &[0x10, 0x01],                   //   Hello 2 max_version: 1
        &[0x1a, 0x06], b"s3cret",        //   Hello 3 token
        &[0x22, 0x0c],                   //   Hello 4 identity, 12 bytes
        &[0x0a, 0x03], b"job",           //     LabelPair 1 name
        &[0x12, 0x05], b"batch",         //     LabelPair 2 value
        &[0x22, 0x12],                   //   Hello 4 identity, 18 bytes
        &[0x0a, 0x08], b"instance",      //     LabelPair 1 name
        &[0x12, 0x06], b"host-1",        //     LabelPair 2 value
        &[0x2a, 0x0f], b"tether-exporter", // Hello 5 client_name
        &[0x32, 0x05], b"0.1.0",         //   Hello 6 client_version
    ])
}

pub(crate) fn welcome() -> Welcome {
    Welcome {
        version: 1,
        heartbeat_interval_ms: 15_000,
        max_frame_bytes: 16 << 20,
        gateway_version: "0.1.0".to_owned(),
    }
}

#[rustfmt::skip]
fn welcome_frame() -> Vec<u8> {
    concat(&[
        &[0x13],                         // frame header: body of 19 bytes
        &[0x0a, 0x11],                   // ServerMessage 1 welcome, 17 bytes
        &[0x08, 0x01],                   //   Welcome 1 version: 1
        // 15000 = 0x18 + (0x75 << 7).
        &[0x10, 0x98, 0x75],             //   Welcome 2 heartbeat_interval_ms: 15000
        // 16777216 = 8 << 21.
        &[0x18, 0x80, 0x80, 0x80, 0x08], //   Welcome 3 max_frame_bytes: 16777216
        &[0x22, 0x05], b"0.1.0",         //   Welcome 4 gateway_version
    ])
}

pub(crate) fn scrape_request() -> ScrapeRequest {
    ScrapeRequest {
        id: 1,
        timeout_ms: 9_750,
    }
}

#[rustfmt::skip]
fn scrape_request_frame() -> Vec<u8> {
    concat(&[
        &[0x07],                         // frame header: body of 7 bytes
        &[0x22, 0x05],                   // ServerMessage 4 scrape_request, 5 bytes
        &[0x08, 0x01],                   //   ScrapeRequest 1 id: 1
        // 9750 = 0x16 + (0x4c << 7).
        &[0x10, 0x96, 0x4c],             //   ScrapeRequest 2 timeout_ms: 9750
    ])
}

pub(crate) fn scrape_response() -> ScrapeResponse {
    ScrapeResponse {
        id: 1,
        families: vec![MetricFamily {
            name: Some("jobs_done_total".to_owned()),
            help: Some("Jobs done.".to_owned()),
            r#type: Some(0),
            metric: vec![Metric {
                counter: Some(Box::new(Counter {
                    value: Some(3.0),
                    ..Counter::default()
                })),
                ..Metric::default()
            }],
            unit: None,
        }],
        error: String::new(),
    }
}

#[rustfmt::skip]
fn scrape_response_frame() -> Vec<u8> {
    concat(&[
        &[0x32],                         // frame header: body of 50 bytes
        &[0x22, 0x30],                   // ClientMessage 4 scrape_response, 48 bytes
        &[0x08, 0x01],                   //   ScrapeResponse 1 id: 1
        &[0x12, 0x2c],                   //   ScrapeResponse 2 families, 44 bytes
        &[0x0a, 0x0f], b"jobs_done_total", // MetricFamily 1 name
        &[0x12, 0x0a], b"Jobs done.",    //     MetricFamily 2 help
        &[0x18, 0x00],                   //     MetricFamily 3 type: COUNTER
        &[0x22, 0x0b],                   //     MetricFamily 4 metric, 11 bytes
        &[0x1a, 0x09],                   //       Metric 3 counter, 9 bytes
        &[0x09, 0, 0, 0, 0, 0, 0, 0x08, 0x40], // Counter 1 value: 3.0
    ])
}

#[rustfmt::skip]
fn ping_frame() -> Vec<u8> {
    concat(&[
        &[0x04],                         // frame header: body of 4 bytes
        &[0x42, 0x02],                   // ServerMessage 8 ping, 2 bytes
        &[0x08, 0x07],                   //   Ping 1 nonce: 7
    ])
}

#[rustfmt::skip]
fn pong_frame() -> Vec<u8> {
    concat(&[
        &[0x04],                         // frame header: body of 4 bytes
        &[0x4a, 0x02],                   // ClientMessage 9 pong, 2 bytes
        &[0x08, 0x07],                   //   Pong 1 nonce: 7
    ])
}

pub(crate) fn push_final() -> Push {
    Push {
        id: 1,
        families: vec![MetricFamily {
            name: Some("job_duration_seconds".to_owned()),
            help: None,
            r#type: Some(1),
            metric: vec![Metric {
                gauge: Some(Gauge { value: Some(2.5) }),
                ..Metric::default()
            }],
            unit: None,
        }],
        r#final: true,
    }
}

#[rustfmt::skip]
fn push_final_frame() -> Vec<u8> {
    concat(&[
        &[0x2d],                         // frame header: body of 45 bytes
        &[0x2a, 0x2b],                   // ClientMessage 5 push, 43 bytes
        &[0x08, 0x01],                   //   Push 1 id: 1
        &[0x12, 0x25],                   //   Push 2 families, 37 bytes
        &[0x0a, 0x14], b"job_duration_seconds", // MetricFamily 1 name
        &[0x18, 0x01],                   //     MetricFamily 3 type: GAUGE
        &[0x22, 0x0b],                   //     MetricFamily 4 metric, 11 bytes
        &[0x12, 0x09],                   //       Metric 2 gauge, 9 bytes
        &[0x09, 0, 0, 0, 0, 0, 0, 0x04, 0x40], // Gauge 1 value: 2.5
        &[0x18, 0x01],                   //   Push 3 final: true
    ])
}

fn push_ack() -> PushAck {
    PushAck {
        id: 1,
        error: String::new(),
    }
}

#[rustfmt::skip]
fn push_ack_frame() -> Vec<u8> {
    concat(&[
        &[0x04],                         // frame header: body of 4 bytes
        &[0x2a, 0x02],                   // ServerMessage 5 push_ack, 2 bytes
        &[0x08, 0x01],                   //   PushAck 1 id: 1
    ])
}

pub(crate) fn goodbye() -> Goodbye {
    Goodbye {
        reason: "exiting".to_owned(),
    }
}

#[rustfmt::skip]
fn goodbye_frame() -> Vec<u8> {
    concat(&[
        &[0x0b],                         // frame header: body of 11 bytes
        &[0x62, 0x09],                   // ClientMessage 12 goodbye, 9 bytes
        &[0x0a, 0x07], b"exiting",       //   Goodbye 1 reason
    ])
}

pub(crate) fn reject() -> Reject {
    Reject::new(RejectReason::BadToken, "token not accepted")
}

#[rustfmt::skip]
fn reject_frame() -> Vec<u8> {
    concat(&[
        &[0x18],                         // frame header: body of 24 bytes
        &[0x62, 0x16],                   // ServerMessage 12 reject, 22 bytes
        &[0x08, 0x01],                   //   Reject 1 reason: BAD_TOKEN
        &[0x12, 0x12], b"token not accepted", // Reject 2 message
    ])
}

pub(crate) fn event_metadata() -> Event {
    EventMetadata {
        name: "x".to_owned(),
        metric_type: EventMetricType::Histogram.into(),
        unit: Some("seconds".to_owned()),
        description: Some("d".to_owned()),
    }
    .into()
}

#[rustfmt::skip]
pub(crate) fn event_metadata_frame() -> Vec<u8> {
    concat(&[
        &[0x13],                         // frame header: body of 19 bytes
        &[0x0a, 0x11],                   // Event 1 metadata, 17 bytes
        &[0x0a, 0x01], b"x",             //   Metadata 1 name
        &[0x10, 0x02],                   //   Metadata 2 metric_type: HISTOGRAM
        &[0x1a, 0x07], b"seconds",       //   Metadata 3 unit_value
        &[0x22, 0x01], b"d",             //   Metadata 4 description_value
    ])
}

pub(crate) fn event_metric() -> Event {
    // Inserted out of order: the map sorts them.
    let labels = [("b", "2"), ("a", "1")]
        .map(|(key, value)| (key.to_owned(), value.to_owned()))
        .into();
    EventMetric {
        name: "r".to_owned(),
        timestamp: Some(Timestamp {
            seconds: 1,
            nanos: 2,
        }),
        labels,
        operation: Some(Operation::IncrementCounter(3)),
    }
    .into()
}

#[rustfmt::skip]
pub(crate) fn event_metric_frame() -> Vec<u8> {
    concat(&[
        &[0x1d],                         // frame header: body of 29 bytes
        &[0x12, 0x1b],                   // Event 2 metric, 27 bytes
        &[0x0a, 0x01], b"r",             //   Metric 1 name
        &[0x12, 0x04],                   //   Metric 2 timestamp, 4 bytes
        &[0x08, 0x01],                   //     Timestamp 1 seconds: 1
        &[0x10, 0x02],                   //     Timestamp 2 nanos: 2
        &[0x1a, 0x06],                   //   Metric 3 labels entry, 6 bytes
        &[0x0a, 0x01], b"a",             //     key
        &[0x12, 0x01], b"1",             //     value
        &[0x1a, 0x06],                   //   Metric 3 labels entry, 6 bytes
        &[0x0a, 0x01], b"b",             //     key
        &[0x12, 0x01], b"2",             //     value
        &[0x20, 0x03],                   //   Metric 4 increment_counter: 3
    ])
}

/// A label pair, for tests that build identities by hand.
pub(crate) fn label(name: &str, value: &str) -> LabelPair {
    LabelPair {
        name: Some(name.to_owned()),
        value: Some(value.to_owned()),
    }
}

/// `PROTOCOL.md` checked against the code: its example blocks byte for
/// byte, its schemas by field number, wire type and name.
mod protocol_doc {
    use std::collections::{BTreeMap, BTreeSet};

    use prost::Message;

    use super::*;
    use crate::{ClientKind, EventKind, ServerKind};

    const PROTOCOL_MD: &str = include_str!("../../../PROTOCOL.md");

    /// The example blocks of the document: name and bytes.
    ///
    /// A block starts at a line `# example: <name> ...` and ends at the
    /// closing fence; on every other line, what comes before `#` is bytes
    /// as two-digit hex, separated by spaces.
    fn doc_examples() -> Vec<(String, Vec<u8>)> {
        let mut examples = Vec::new();
        let mut current: Option<(String, Vec<u8>)> = None;
        for (index, line) in PROTOCOL_MD.lines().enumerate() {
            let line_number = index + 1;
            if let Some(rest) = line.strip_prefix("# example: ") {
                assert!(
                    current.is_none(),
                    "line {line_number}: example inside example"
                );
                let name = rest.split_whitespace().next().unwrap_or_default();
                current = Some((name.to_owned(), Vec::new()));
                continue;
            }
            if line.starts_with("```") {
                examples.extend(current.take());
                continue;
            }
            if let Some((_, bytes)) = &mut current {
                let hex = line.split('#').next().unwrap_or_default();
                for token in hex.split_whitespace() {
                    let byte = (token.len() == 2)
                        .then(|| u8::from_str_radix(token, 16).ok())
                        .flatten();
                    let Some(byte) = byte else {
                        panic!("line {line_number}: \"{token}\" is not a hex byte");
                    };
                    bytes.push(byte);
                }
            }
        }
        assert!(current.is_none(), "an example block does not end");
        examples
    }

    #[test]
    fn the_document_shows_every_example_with_its_bytes() {
        let in_doc = doc_examples();
        let in_code: Vec<(String, Vec<u8>)> = examples()
            .into_iter()
            .map(|(name, frame, _)| (name.to_owned(), frame))
            .collect();
        let doc_names: Vec<&str> = in_doc.iter().map(|(name, _)| name.as_str()).collect();
        let code_names: Vec<&str> = in_code.iter().map(|(name, _)| name.as_str()).collect();
        assert_eq!(doc_names, code_names, "the same examples in the same order");
        for ((name, doc_bytes), (_, code_bytes)) in in_doc.iter().zip(&in_code) {
            assert_eq!(
                hex(doc_bytes),
                hex(code_bytes),
                "example {name}: PROTOCOL.md differs from the code"
            );
        }
    }

    #[test]
    fn the_document_header_table_encodes_and_decodes_as_shown() {
        let mut rows = PROTOCOL_MD
            .lines()
            .skip_while(|line| !line.starts_with("| body length | header bytes |"))
            .skip(2)
            .take_while(|line| line.starts_with('|'))
            .peekable();
        assert!(rows.peek().is_some(), "the header table is in the document");
        for row in rows {
            let cells: Vec<&str> = row.split('|').map(str::trim).collect();
            let body_len: usize = cells[1]
                .split_whitespace()
                .next()
                .and_then(|number| number.parse().ok())
                .expect("a length in the first column");
            let shown = cells[2].trim_matches('`');
            let mut header = Vec::new();
            prost::encode_length_delimiter(body_len, &mut header).expect("a Vec grows");
            assert_eq!(hex(&header).trim_end(), shown, "{row}");
            if body_len > 0 {
                let checked = crate::check(&header, usize::MAX);
                assert_eq!(checked, Ok(None), "{row}: a header alone is incomplete");
            }
            let mut frame = header.clone();
            frame.resize(header.len() + body_len, 0);
            assert_eq!(
                crate::check(&frame, usize::MAX).map(|len| len.map(|len| len.body_len)),
                Ok(Some(body_len)),
                "{row}"
            );
        }
    }

    fn hex(bytes: &[u8]) -> String {
        bytes.iter().map(|byte| format!("{byte:02x} ")).collect()
    }

    /// A field of a message in a schema of the document.
    #[derive(Debug)]
    struct Field {
        name: String,
        type_name: String,
        number: u32,
        in_oneof: bool,
    }

    /// The messages and enums of the document's `proto` blocks, by package.
    #[derive(Debug, Default)]
    struct Schema {
        /// Message name to its package and fields.
        messages: BTreeMap<String, (String, Vec<Field>)>,
        /// Enum name to its values.
        enums: BTreeMap<String, Vec<(String, i32)>>,
    }

    enum Scope {
        Message(String),
        Oneof,
        Enum(String),
    }

    /// Reads the subset of proto3 the document uses: one declaration per
    /// line, `//` comments, nested enums and oneofs.
    fn doc_schema() -> Schema {
        let mut schema = Schema::default();
        let mut in_block = false;
        let mut package = String::new();
        let mut scopes: Vec<Scope> = Vec::new();
        for line in PROTOCOL_MD.lines() {
            if line == "```proto" {
                in_block = true;
                continue;
            }
            if !in_block {
                continue;
            }
            if line == "```" {
                assert!(scopes.is_empty(), "unbalanced braces in a proto block");
                in_block = false;
                continue;
            }
            let code = line.split("//").next().unwrap_or_default().trim();
            if code.is_empty() || code.starts_with("syntax ") || code.starts_with("import ") {
                continue;
            }
            if let Some(name) = code.strip_prefix("package ") {
                package = name.trim_end_matches(';').to_owned();
            } else if let Some(name) = code.strip_prefix("message ") {
                let name = name.trim_end_matches('{').trim().to_owned();
                schema
                    .messages
                    .insert(name.clone(), (package.clone(), Vec::new()));
                scopes.push(Scope::Message(name));
            } else if code.starts_with("oneof ") {
                scopes.push(Scope::Oneof);
            } else if let Some(name) = code.strip_prefix("enum ") {
                let name = name.trim_end_matches('{').trim().to_owned();
                schema.enums.insert(name.clone(), Vec::new());
                scopes.push(Scope::Enum(name));
            } else if code == "}" {
                scopes.pop();
            } else {
                let declaration = code.trim_end_matches(';');
                let Some((left, number)) = declaration.split_once(" = ") else {
                    panic!("not a declaration: {line}");
                };
                let number: i32 = number.parse().expect("a field or value number");
                let in_oneof = matches!(scopes.last(), Some(Scope::Oneof));
                if let Some(Scope::Enum(name)) = scopes.last() {
                    let values = schema.enums.get_mut(name).expect("declared above");
                    values.push((left.to_owned(), number));
                    continue;
                }
                let message = scopes
                    .iter()
                    .rev()
                    .find_map(|scope| match scope {
                        Scope::Message(name) => Some(name.clone()),
                        _ => None,
                    })
                    .expect("a field inside a message");
                let (type_name, name) = left.rsplit_once(' ').expect("a type and a name");
                let type_name = type_name.trim_start_matches("repeated ").to_owned();
                let fields = &mut schema.messages.get_mut(&message).expect("declared above").1;
                fields.push(Field {
                    name: name.to_owned(),
                    type_name,
                    number: u32::try_from(number).expect("a positive field number"),
                    in_oneof,
                });
            }
        }
        schema
    }

    /// The wire type a field of `type_name` is written with.
    fn wire_type(type_name: &str, schema: &Schema) -> u8 {
        match type_name {
            "uint32" | "uint64" | "int32" | "int64" | "bool" => 0,
            "double" => 1,
            enum_name if schema.enums.contains_key(enum_name) => 0,
            // Strings, messages and maps.
            _ => 2,
        }
    }

    /// The (field number, wire type) of each top-level field of `body`.
    fn top_level_keys(body: &[u8]) -> Vec<(u32, u8)> {
        fn varint(body: &[u8], at: &mut usize) -> u64 {
            let mut value = 0;
            for shift in (0..64).step_by(7) {
                let byte = body[*at];
                *at += 1;
                value |= u64::from(byte & 0x7f) << shift;
                if byte & 0x80 == 0 {
                    break;
                }
            }
            value
        }
        let mut keys = Vec::new();
        let mut at = 0;
        while at < body.len() {
            let key = varint(body, &mut at);
            let wire_type = u8::try_from(key & 7).expect("three bits");
            keys.push((u32::try_from(key >> 3).expect("a field number"), wire_type));
            match wire_type {
                0 => {
                    varint(body, &mut at);
                }
                1 => at += 8,
                2 => {
                    let len = varint(body, &mut at);
                    at += usize::try_from(len).expect("a short field");
                }
                other => panic!("wire type {other} in our own encoding"),
            }
        }
        keys
    }

    fn sample<M: Message + std::fmt::Debug>(message: &M) -> (Vec<u8>, String) {
        (message.encode_to_vec(), format!("{message:?}"))
    }

    /// Messages of each name in the document with every field set, so
    /// that their encodings show every field number.
    fn samples() -> BTreeMap<&'static str, Vec<(Vec<u8>, String)>> {
        let scrape_response = ScrapeResponse {
            error: "e".to_owned(),
            ..scrape_response()
        };
        let push_ack = PushAck {
            id: 1,
            error: "e".to_owned(),
        };
        let client_kinds = [
            ClientKind::Hello(hello()),
            ClientKind::ScrapeResponse(scrape_response.clone()),
            ClientKind::Push(push_final()),
            ClientKind::Ping(Ping { nonce: 1 }),
            ClientKind::Pong(Pong { nonce: 1 }),
            ClientKind::Goodbye(goodbye()),
        ];
        let server_kinds = [
            ServerKind::Welcome(welcome()),
            ServerKind::ScrapeRequest(scrape_request()),
            ServerKind::PushAck(push_ack.clone()),
            ServerKind::Ping(Ping { nonce: 1 }),
            ServerKind::Pong(Pong { nonce: 1 }),
            ServerKind::Reject(reject()),
        ];
        let Some(EventKind::Metadata(metadata)) = event_metadata().kind else {
            panic!("the metadata example holds metadata");
        };
        let Some(EventKind::Metric(metric)) = event_metric().kind else {
            panic!("the metric example holds a metric");
        };
        let operations = [
            Operation::IncrementCounter(1),
            Operation::SetCounter(1),
            Operation::IncrementGauge(1.0),
            Operation::DecrementGauge(1.0),
            Operation::SetGauge(1.0),
            Operation::RecordHistogram(1.0),
        ];
        BTreeMap::from([
            (
                "ClientMessage",
                client_kinds
                    .map(|kind| sample(&ClientMessage::from(kind)))
                    .to_vec(),
            ),
            (
                "ServerMessage",
                server_kinds
                    .map(|kind| sample(&ServerMessage::from(kind)))
                    .to_vec(),
            ),
            ("Hello", vec![sample(&hello())]),
            ("Welcome", vec![sample(&welcome())]),
            ("Reject", vec![sample(&reject())]),
            ("ScrapeRequest", vec![sample(&scrape_request())]),
            ("ScrapeResponse", vec![sample(&scrape_response)]),
            ("Push", vec![sample(&push_final())]),
            ("PushAck", vec![sample(&push_ack)]),
            ("Ping", vec![sample(&Ping { nonce: 1 })]),
            ("Pong", vec![sample(&Pong { nonce: 1 })]),
            ("Goodbye", vec![sample(&goodbye())]),
            (
                "Event",
                vec![sample(&event_metadata()), sample(&event_metric())],
            ),
            ("Metadata", vec![sample(&metadata)]),
            (
                "Metric",
                operations
                    .map(|operation| {
                        sample(&EventMetric {
                            operation: Some(operation),
                            ..metric.clone()
                        })
                    })
                    .to_vec(),
            ),
        ])
    }

    #[test]
    fn the_document_schemas_have_the_field_numbers_and_wire_types_of_the_code() {
        let schema = doc_schema();
        let samples = samples();
        let doc_messages: BTreeSet<&str> = schema.messages.keys().map(String::as_str).collect();
        let code_messages: BTreeSet<&str> = samples.keys().copied().collect();
        assert_eq!(doc_messages, code_messages);
        for (message, (_, fields)) in &schema.messages {
            let in_doc: BTreeSet<(u32, u8)> = fields
                .iter()
                .map(|field| (field.number, wire_type(&field.type_name, &schema)))
                .collect();
            let in_code: BTreeSet<(u32, u8)> = samples[message.as_str()]
                .iter()
                .flat_map(|(body, _)| top_level_keys(body))
                .collect();
            assert_eq!(
                in_doc, in_code,
                "message {message}: (field number, wire type)"
            );
        }
    }

    #[test]
    fn the_agent_schema_has_the_field_names_of_the_code() {
        let schema = doc_schema();
        let samples = samples();
        for (message, (package, fields)) in &schema.messages {
            // The event stream's Rust names differ on purpose (`unit` for
            // `unit_value`); its numbers are checked above.
            if package != "tether.agent.v1" {
                continue;
            }
            let debug: String = samples[message.as_str()]
                .iter()
                .map(|(_, debug)| debug.as_str())
                .collect();
            for field in fields {
                let shown = if field.in_oneof {
                    // A oneof member shows as its variant, in CamelCase.
                    let camel: String = field
                        .name
                        .split('_')
                        .map(|word| {
                            let mut chars = word.chars();
                            chars
                                .next()
                                .map(|first| first.to_uppercase().chain(chars).collect())
                                .unwrap_or_default()
                        })
                        .collect::<Vec<String>>()
                        .concat();
                    format!("{camel}(")
                } else if field.name == "final" {
                    "r#final: ".to_owned()
                } else {
                    format!("{}: ", field.name)
                };
                assert!(
                    debug.contains(&shown),
                    "{message}.{}: no \"{shown}\" in {debug}",
                    field.name
                );
            }
        }
    }

    #[test]
    fn the_document_enums_have_the_names_and_numbers_of_the_code() {
        let schema = doc_schema();
        let reasons = &schema.enums["RejectReason"];
        assert_eq!(reasons.len(), 11);
        assert!(
            RejectReason::try_from(11).is_err(),
            "a reason missing from the doc"
        );
        for (name, number) in reasons {
            let reason = RejectReason::try_from(*number).map(RejectReason::as_str_name);
            assert_eq!(reason, Ok(name.as_str()));
        }
        let types = &schema.enums["MetricType"];
        assert_eq!(types.len(), 3);
        assert!(
            EventMetricType::try_from(3).is_err(),
            "a type missing from the doc"
        );
        for (name, number) in types {
            let metric_type = EventMetricType::try_from(*number).map(EventMetricType::as_str_name);
            assert_eq!(metric_type, Ok(name.as_str()));
        }
    }
}
