//! Our stream, decoded by an independent decoder: `protoc --decode` with
//! the schema in `tests/data/event.proto`, written from the published
//! description and sharing no code with tether. What `protoc` reads,
//! `metrics-observer` (prost code generated from the same schema) reads.
//!
//! Needs `protoc` and the well-known types (Debian `protobuf-compiler` and
//! `libprotobuf-dev`), which the test script installs.

use std::io::Write;
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{SystemTime, UNIX_EPOCH};

use metrics::Unit;
use tether_exporter::ExporterBuilder;

use crate::support::{StreamClient, key, start, within};

/// Splits a stream into frame bodies by its varint length prefixes,
/// written here rather than taken from tether-proto.
fn split_frames(mut wire: &[u8]) -> Vec<&[u8]> {
    let mut bodies = Vec::new();
    while !wire.is_empty() {
        let mut len = 0_usize;
        let mut shift = 0;
        loop {
            let (&byte, rest) = wire.split_first().expect("a whole length prefix");
            wire = rest;
            len |= usize::from(byte & 0x7f) << shift;
            shift += 7;
            if byte & 0x80 == 0 {
                break;
            }
            assert!(shift < 64, "a length prefix of at most ten bytes");
        }
        let (body, rest) = wire.split_at(len);
        bodies.push(body);
        wire = rest;
    }
    bodies
}

/// `protoc`'s text rendering of one `event.proto.Event`.
fn protoc_decode(body: &[u8]) -> String {
    let data = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/data");
    let mut child = Command::new("protoc")
        .arg("--decode=event.proto.Event")
        .arg(format!("--proto_path={}", data.display()))
        .arg("--proto_path=/usr/include")
        .arg("event.proto")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("protoc runs (Debian packages protobuf-compiler and libprotobuf-dev)");
    child
        .stdin
        .take()
        .expect("a stdin pipe")
        .write_all(body)
        .expect("protoc reads the event");
    let output = child.wait_with_output().expect("protoc finishes");
    assert!(
        output.status.success(),
        "protoc rejected {body:02x?}: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    String::from_utf8(output.stdout).expect("UTF-8 text")
}

/// Takes the `timestamp { ... }` block out of protoc's text and returns
/// its seconds.
fn strip_timestamp(text: &str) -> (String, Option<u64>) {
    let mut kept = String::new();
    let mut seconds = None;
    let mut in_timestamp = false;
    for line in text.lines() {
        match line.trim() {
            "timestamp {" => in_timestamp = true,
            "}" if in_timestamp => in_timestamp = false,
            inner if in_timestamp => {
                if let Some(value) = inner.strip_prefix("seconds: ") {
                    seconds = value.parse().ok();
                }
            }
            _ => {
                kept.push_str(line);
                kept.push('\n');
            }
        }
    }
    (kept, seconds)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn protoc_decodes_our_stream_with_the_event_proto_schema() {
    let started = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .expect("a clock after 1970")
        .as_secs();
    let (recorder, handle, server) = start(ExporterBuilder::new());
    metrics::with_local_recorder(&recorder, || {
        metrics::describe_counter!("http.requests", Unit::Count, "Requests \"served\".");
        metrics::describe_gauge!("temp", "Temperature.");
        metrics::counter!("http.requests", "z" => "last", "a" => "first").increment(5);
        metrics::gauge!("temp").set(-1.25);
    });
    let addr = handle.stream_local_addr().expect("a stream listener");
    let mut client = StreamClient::connect(addr).await;
    client
        .read_until("the snapshot arrives", |client| {
            client.counters.len() == 1 && client.gauges.len() == 1
        })
        .await;
    metrics::with_local_recorder(&recorder, || {
        metrics::histogram!("rpc.seconds").record(0.25);
        metrics::counter!("http.requests", "z" => "last", "a" => "first").increment(1);
    });
    client
        .read_until("the updates arrive", |client| {
            client.samples.len() == 1
                && client.counter(&key("http.requests", &[("a", "first"), ("z", "last")]))
                    == Some(6)
        })
        .await;
    handle.shutdown();
    client.read_to_eof().await;
    within("the server stops", server)
        .await
        .expect("the server task");

    let finished = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .expect("a clock after 1970")
        .as_secs();
    let mut decoded = Vec::new();
    for body in split_frames(&client.wire) {
        let (text, seconds) = strip_timestamp(&protoc_decode(body));
        if text.starts_with("metric {") {
            let seconds = seconds.expect("every metric event has a timestamp");
            assert!((started..=finished).contains(&seconds), "{seconds}");
        }
        if text.contains("name: \"http.requests\"") && text.starts_with("metric {") {
            // Labels in sorted key order on the wire, not only in protoc's output.
            let first = body.windows(5).position(|w| w == b"first");
            let last = body.windows(4).position(|w| w == b"last");
            assert!(first < last, "labels in sorted key order: {body:02x?}");
        }
        decoded.push(text);
    }
    let expected = [
        "metadata {\n  name: \"http.requests\"\n  unit_value: \"count\"\n  description_value: \"Requests \\\"served\\\".\"\n}\n",
        "metadata {\n  name: \"temp\"\n  metric_type: GAUGE\n  description_value: \"Temperature.\"\n}\n",
        "metric {\n  name: \"http.requests\"\n  labels {\n    key: \"a\"\n    value: \"first\"\n  }\n  labels {\n    key: \"z\"\n    value: \"last\"\n  }\n  set_counter: 5\n}\n",
        "metric {\n  name: \"temp\"\n  set_gauge: -1.25\n}\n",
        "metric {\n  name: \"http.requests\"\n  labels {\n    key: \"a\"\n    value: \"first\"\n  }\n  labels {\n    key: \"z\"\n    value: \"last\"\n  }\n  set_counter: 6\n}\n",
        "metric {\n  name: \"rpc.seconds\"\n  record_histogram: 0.25\n}\n",
    ];
    assert_eq!(decoded, expected);
}
