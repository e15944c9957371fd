//! `tether observe --once` run as a script runs it: against tether's own
//! exporter, against a plain listener that writes hand-encoded events, and
//! against addresses that do not answer or send garbage.

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpListener};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::mpsc;
use std::thread;
use std::time::{Duration, Instant};

use bytes::BytesMut;
use metrics::{Key, KeyName, Label, Level, Metadata, Recorder, Unit};
use serde_json::{Value, json};
use tether_exporter::ExporterBuilder;
use tether_proto::{Event, EventMetadata, EventMetric, EventMetricType, Operation, encode_event};

/// How long any step may take before the test fails.
const DEADLINE: Duration = Duration::from_secs(30);

/// What a finished `tether observe` left.
#[derive(Debug)]
struct Output {
    status: ExitStatus,
    stdout: String,
    stderr: String,
}

/// Starts `tether observe` with `args`, its output piped.
fn spawn_observe(args: &[&str]) -> Child {
    Command::new(env!("CARGO_BIN_EXE_tether"))
        .arg("observe")
        .args(args)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("start tether observe")
}

/// Waits for `child` to exit, killing it after [`DEADLINE`].
fn finish(mut child: Child) -> Output {
    let mut stdout = child.stdout.take().expect("stdout was piped");
    let mut stderr = child.stderr.take().expect("stderr was piped");
    let stdout = thread::spawn(move || {
        let mut text = String::new();
        let _ = stdout.read_to_string(&mut text);
        text
    });
    let stderr = thread::spawn(move || {
        let mut text = String::new();
        let _ = stderr.read_to_string(&mut text);
        text
    });
    let start = Instant::now();
    let status = loop {
        if let Some(status) = child.try_wait().expect("wait for tether observe") {
            break status;
        }
        if start.elapsed() > DEADLINE {
            let _ = child.kill();
            let _ = child.wait();
            panic!("tether observe did not exit within {DEADLINE:?}");
        }
        thread::sleep(Duration::from_millis(10));
    };
    Output {
        status,
        stdout: stdout.join().expect("the stdout reader"),
        stderr: stderr.join().expect("the stderr reader"),
    }
}

fn run_observe(args: &[&str]) -> Output {
    finish(spawn_observe(args))
}

fn metric(name: &str, labels: &[(&str, &str)], operation: Operation) -> Event {
    Event::from(EventMetric {
        name: name.to_owned(),
        timestamp: None,
        labels: labels
            .iter()
            .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
            .collect(),
        operation: Some(operation),
    })
}

fn metadata(name: &str, kind: EventMetricType, unit: Option<&str>, description: &str) -> Event {
    Event::from(EventMetadata {
        name: name.to_owned(),
        metric_type: kind as i32,
        unit: unit.map(str::to_owned),
        description: Some(description.to_owned()),
    })
}

/// A stream as `metrics-exporter-tcp` writes it: metadata, then one event
/// per operation, with every operation kind, and one event of a kind this
/// schema does not know.
fn hand_encoded_stream() -> Vec<u8> {
    let events = [
        metadata(
            "jobs_total",
            EventMetricType::Counter,
            Some("count"),
            "Jobs done.",
        ),
        metadata(
            "latency_seconds",
            EventMetricType::Histogram,
            Some("seconds"),
            "Time to answer.",
        ),
        metadata("temperature_celsius", EventMetricType::Gauge, None, "Heat."),
        metadata("never_recorded", EventMetricType::Gauge, None, "Nothing."),
        metric(
            "jobs_total",
            &[("queue", "mail")],
            Operation::IncrementCounter(3),
        ),
        metric(
            "jobs_total",
            &[("queue", "mail")],
            Operation::IncrementCounter(4),
        ),
        metric("jobs_total", &[("queue", "sms")], Operation::SetCounter(10)),
        metric("temperature_celsius", &[], Operation::SetGauge(20.0)),
        metric("temperature_celsius", &[], Operation::IncrementGauge(1.5)),
        metric("temperature_celsius", &[], Operation::DecrementGauge(0.5)),
        metric("latency_seconds", &[], Operation::RecordHistogram(0.5)),
        metric("latency_seconds", &[], Operation::RecordHistogram(4.0)),
        metric("latency_seconds", &[], Operation::RecordHistogram(2.0)),
        metric("latency_seconds", &[], Operation::RecordHistogram(1.0)),
    ];
    let mut wire = BytesMut::new();
    for event in &events {
        encode_event(event, &mut wire);
    }
    // An `Event` with field 3, unknown to this schema: skipped.
    wire.extend_from_slice(&[0x02, 0x1a, 0x00]);
    wire.to_vec()
}

/// A listener on a free loopback port that, for its first connection,
/// writes `wire` and then, when `close_after_write`, closes; otherwise it
/// keeps the connection open until the test ends.
fn serve_once(wire: Vec<u8>, close_after_write: bool) -> (SocketAddr, mpsc::Sender<()>) {
    let listener = TcpListener::bind("127.0.0.1:0").expect("bind a loopback port");
    let addr = listener.local_addr().expect("local address");
    let (done_tx, done_rx) = mpsc::channel::<()>();
    thread::spawn(move || {
        let Ok((mut stream, _)) = listener.accept() else {
            return;
        };
        let _ = stream.write_all(&wire);
        if !close_after_write {
            let _ = done_rx.recv_timeout(DEADLINE);
        }
    });
    (addr, done_tx)
}

#[test]
fn once_json_reads_hand_encoded_events_from_a_plain_listener() {
    let (addr, done) = serve_once(hand_encoded_stream(), false);
    let addr = addr.to_string();
    let output = run_observe(&["--once", "--format", "json", &addr]);
    drop(done);
    assert!(output.status.success(), "{output:?}");
    let value: Value = serde_json::from_str(&output.stdout).expect("JSON on stdout");
    let expected = json!([
        {
            "name": "jobs_total", "kind": "counter", "labels": {"queue": "mail"},
            "unit": "count", "description": "Jobs done.", "total": 7
        },
        {
            "name": "jobs_total", "kind": "counter", "labels": {"queue": "sms"},
            "unit": "count", "description": "Jobs done.", "total": 10
        },
        {
            "name": "latency_seconds", "kind": "histogram", "labels": {},
            "unit": "seconds", "description": "Time to answer.",
            "count": 4, "sum": 7.5, "p50": 1.0, "p99": 4.0, "max": 4.0
        },
        {
            "name": "temperature_celsius", "kind": "gauge", "labels": {},
            "unit": null, "description": "Heat.", "value": 21.0
        },
    ]);
    assert_eq!(value, expected, "{}", output.stdout);
    assert_eq!(output.stderr, "");
}

#[test]
fn once_text_prints_one_line_per_series_when_the_server_closes_after_its_replay() {
    let (addr, _done) = serve_once(hand_encoded_stream(), true);
    let addr = addr.to_string();
    let output = run_observe(&["--once", "--format", "text", &addr]);
    assert!(output.status.success(), "{output:?}");
    assert_eq!(
        output.stdout,
        "jobs_total{queue=\"mail\"} counter total=7 unit=count # Jobs done.\n\
         jobs_total{queue=\"sms\"} counter total=10 unit=count # Jobs done.\n\
         latency_seconds histogram count=4 sum=7.5 p50=1 p99=4 max=4 unit=seconds # Time to answer.\n\
         temperature_celsius gauge value=21 # Heat.\n"
    );
}

#[test]
fn once_reports_series_beyond_the_cap_on_stderr() {
    let (addr, _done) = serve_once(hand_encoded_stream(), true);
    let addr = addr.to_string();
    let output = run_observe(&["--once", "--format", "text", "--max-series", "2", &addr]);
    assert!(output.status.success(), "{output:?}");
    assert_eq!(output.stdout.lines().count(), 2, "{}", output.stdout);
    assert!(
        output
            .stderr
            .contains("2 series beyond --max-series 2 were left out"),
        "{}",
        output.stderr
    );
}

#[test]
fn once_exits_1_when_it_cannot_connect() {
    // A loopback port that nothing listens on any more.
    let addr = {
        let listener = TcpListener::bind("127.0.0.1:0").expect("bind a loopback port");
        listener.local_addr().expect("local address")
    };
    let addr = addr.to_string();
    let output = run_observe(&["--once", "--format", "json", "--timeout-ms", "2000", &addr]);
    assert_eq!(output.status.code(), Some(1), "{output:?}");
    assert_eq!(output.stdout, "");
    assert!(
        output
            .stderr
            .starts_with(&format!("tether observe: cannot connect to {addr}")),
        "{}",
        output.stderr
    );
}

#[test]
fn once_exits_1_when_no_event_arrives_in_time() {
    let (addr, done) = serve_once(Vec::new(), false);
    let addr = addr.to_string();
    let output = run_observe(&["--once", "--timeout-ms", "300", &addr]);
    drop(done);
    assert_eq!(output.status.code(), Some(1), "{output:?}");
    assert!(
        output
            .stderr
            .contains(&format!("no event from {addr} within 300 ms")),
        "{}",
        output.stderr
    );
}

#[test]
fn once_exits_1_on_a_malformed_stream() {
    // A valid event, then a frame whose body is not an `Event`.
    let mut wire = hand_encoded_stream();
    wire.extend_from_slice(&[0x03, 0xff, 0xff, 0xff]);
    let (addr, done) = serve_once(wire, false);
    let addr = addr.to_string();
    let output = run_observe(&["--once", &addr]);
    drop(done);
    assert_eq!(output.status.code(), Some(1), "{output:?}");
    assert!(output.stderr.contains("is malformed"), "{}", output.stderr);
}

#[test]
fn bad_flags_are_usage_errors() {
    let output = run_observe(&["--once", "no-port-here"]);
    assert_eq!(output.status.code(), Some(2), "{output:?}");
    assert!(output.stderr.contains("HOST:PORT"), "{}", output.stderr);
    let output = run_observe(&["--once", "--max-series", "0", "127.0.0.1:1"]);
    assert_eq!(output.status.code(), Some(64), "{output:?}");
    assert!(output.stderr.contains("--max-series"), "{}", output.stderr);
}

#[test]
fn without_a_terminal_the_ui_points_to_once() {
    let output = run_observe(&["127.0.0.1:1"]);
    assert_eq!(output.status.code(), Some(1), "{output:?}");
    assert!(output.stderr.contains("--once"), "{}", output.stderr);
}

/// Waits until `condition` holds, failing after [`DEADLINE`].
async fn wait_until(what: &str, mut condition: impl FnMut() -> bool) {
    let start = Instant::now();
    while !condition() {
        assert!(start.elapsed() < DEADLINE, "timed out waiting until {what}");
        tokio::time::sleep(Duration::from_millis(2)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn once_json_reads_the_snapshot_and_live_samples_of_tethers_exporter() {
    let (recorder, server) = ExporterBuilder::new()
        .with_stream_listener(SocketAddr::from(([127, 0, 0, 1], 0)))
        .build()
        .expect("the exporter builds");
    let handle = recorder.handle();
    let server = tokio::spawn(server);
    let addr = handle.stream_local_addr().expect("a stream listener");

    let meta = Metadata::new(module_path!(), Level::INFO, Some(module_path!()));
    recorder.describe_counter(
        KeyName::from("requests_total"),
        Some(Unit::Count),
        "Requests served.".into(),
    );
    recorder.describe_gauge(
        KeyName::from("temperature_celsius"),
        None,
        "Temperature.".into(),
    );
    recorder.describe_histogram(
        KeyName::from("latency_seconds"),
        Some(Unit::Seconds),
        "Time to answer.".into(),
    );
    let counter = recorder.register_counter(
        &Key::from_parts("requests_total", vec![Label::new("method", "get")]),
        &meta,
    );
    let gauge = recorder.register_gauge(&Key::from_name("temperature_celsius"), &meta);
    let histogram = recorder.register_histogram(&Key::from_name("latency_seconds"), &meta);
    counter.increment(5);
    counter.increment(2);
    gauge.set(20.0);
    gauge.increment(1.5);

    // The settle time is long, so that the samples recorded after the
    // snapshot arrived are part of what the observer reads.
    let addr = addr.to_string();
    let child = spawn_observe(&[
        "--once",
        "--format",
        "json",
        "--settle-ms",
        "3000",
        "--timeout-ms",
        "20000",
        &addr,
    ]);
    // Histogram samples are not part of a snapshot: they stream to clients
    // attached when they are recorded. Three descriptions, the counter and
    // the gauge make the snapshot.
    wait_until("the observer has its snapshot", || {
        handle
            .stream_stats()
            .is_some_and(|stats| stats.events_written >= 5)
    })
    .await;
    for sample in [0.5, 4.0, 2.0, 1.0] {
        histogram.record(sample);
    }
    let output = tokio::task::spawn_blocking(move || finish(child))
        .await
        .expect("the observer finishes");
    assert!(output.status.success(), "{output:?}");
    let value: Value = serde_json::from_str(&output.stdout).expect("JSON on stdout");
    let expected = json!([
        {
            "name": "latency_seconds", "kind": "histogram", "labels": {},
            "unit": "seconds", "description": "Time to answer.",
            "count": 4, "sum": 7.5, "p50": 1.0, "p99": 4.0, "max": 4.0
        },
        {
            "name": "requests_total", "kind": "counter", "labels": {"method": "get"},
            "unit": "count", "description": "Requests served.", "total": 7
        },
        {
            "name": "temperature_celsius", "kind": "gauge", "labels": {},
            "unit": null, "description": "Temperature.", "value": 21.5
        },
    ]);
    assert_eq!(value, expected, "{}", output.stdout);

    handle.shutdown();
    tokio::time::timeout(DEADLINE, server)
        .await
        .expect("the stream server stops")
        .expect("the server task")
        .expect("the stream server ran");
}
