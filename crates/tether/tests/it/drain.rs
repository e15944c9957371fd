//! The Heroku drain of `tether gateway`, run as a user runs it: logplex
//! batches built from the formats Heroku writes (Postgres lines of either
//! `source=`, dyno runtime samples, router lines, instance metrics of every
//! Vector kind), a Private Space batch without the two optional headers, a
//! retried batch, bad input of every kind, credentials from the original's
//! environment variables and from the configuration file, and the limits.

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use base64::Engine as _;
use serde_json::json;

use crate::support::{DEADLINE, Gateway, Response, parse_response, request};

const PASSWORD: &str = "s3cret";
const PREFIX: &str = "crates-io-heroku-metrics:ingest";

/// One logplex frame of `message`, its length counting the newline.
fn frame(message: &str) -> String {
    format!("{} {message}\n", message.len() + 1)
}

/// A syslog line as logplex writes it.
fn line(app: &str, procid: &str, msg: &str) -> String {
    format!("<134>1 2026-12-02T10:00:00.000000+00:00 host {app} {procid} - {msg}")
}

/// An instance-metric line carrying `metrics` (a JSON array).
fn metrics_line(procid: &str, metrics: &serde_json::Value) -> String {
    let payload = base64::engine::general_purpose::STANDARD.encode(metrics.to_string());
    line("app", procid, &format!("{PREFIX} {payload}"))
}

fn basic(user: &str, password: &str) -> String {
    let encoded = base64::engine::general_purpose::STANDARD.encode(format!("{user}:{password}"));
    format!("Basic {encoded}")
}

/// POSTs `messages` as one batch to `path`, with `Logplex-Frame-Id` and
/// `Logplex-Drain-Token` when a frame id is given (a Private Space drain
/// sends neither).
fn post(
    addr: SocketAddr,
    path: &str,
    auth: &str,
    messages: &[String],
    frame_id: Option<&str>,
) -> Response {
    let body: String = messages.iter().map(|m| frame(m)).collect();
    let count = messages.len().to_string();
    let mut headers = vec![
        ("Content-Type", "application/logplex-1"),
        ("Logplex-Msg-Count", count.as_str()),
        ("Authorization", auth),
        ("User-Agent", "Logplex/v123"),
    ];
    if let Some(id) = frame_id {
        headers.push(("Logplex-Frame-Id", id));
        headers.push((
            "Logplex-Drain-Token",
            "d.01234567-89ab-cdef-0123-456789abcdef",
        ));
    }
    request(addr, "POST", path, &headers, body.as_bytes()).expect("the drain answers")
}

/// The exposition, read with `auth` if given.
fn scrape(addr: SocketAddr, auth: Option<&str>) -> Response {
    let headers: Vec<(&str, &str)> = auth.map(|a| ("Authorization", a)).into_iter().collect();
    request(addr, "GET", "/metrics", &headers, b"").expect("the gateway answers")
}

/// The value of the series written exactly `series` (name and labels as
/// rendered), if present.
fn value(exposition: &str, series: &str) -> Option<f64> {
    exposition.lines().find_map(|line| {
        let rest = line.strip_prefix(series)?;
        rest.strip_prefix(' ')?.trim().parse().ok()
    })
}

fn rejected(exposition: &str, reason: &str) -> f64 {
    value(
        exposition,
        &format!("tether_drain_rejected_lines_total{{drain=\"/drain\",reason=\"{reason}\"}}"),
    )
    .unwrap_or(0.0)
}

fn assert_promtool_accepts(body: &[u8]) {
    let mut promtool = Command::new("promtool")
        .args(["check", "metrics"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("promtool must be installed (Debian package `prometheus`)");
    promtool
        .stdin
        .take()
        .expect("piped")
        .write_all(body)
        .expect("write to promtool");
    let output = promtool.wait_with_output().expect("promtool runs");
    assert!(
        matches!(output.status.code(), Some(0 | 3)),
        "promtool rejected the exposition: {}{}\n{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr),
        String::from_utf8_lossy(body)
    );
}

fn postgres_lines() -> Vec<String> {
    vec![
        line(
            "app",
            "heroku-postgres",
            "source=DATABASE addon=postgresql-opaque-12345 sample#current_transaction=1873 sample#db_size=147391814791bytes sample#tables=12 sample#active-connections=41 sample#waiting-connections=0 sample#index-cache-hit-rate=0.99625 sample#table-cache-hit-rate=0.99889 sample#load-avg-1m=0.3575 sample#load-avg-5m=0.405 sample#load-avg-15m=0.4125 sample#read-iops=302.48 sample#write-iops=12.35 sample#tmp-disk-used=543633408 sample#tmp-disk-available=72435159040 sample#memory-total=31328356kB sample#memory-free=3786332.0kB sample#memory-cached=24589220kB sample#memory-postgres=1015432kB sample#wal-percentage-used=0.07720331520217211",
        ),
        line(
            "app",
            "heroku-postgres",
            "source=HEROKU_POSTGRESQL_RED addon=postgresql-shaped-67890 sample#db_size=8945836.0bytes sample#active-connections=3 sample#memory-total=15.5MB",
        ),
    ]
}

fn router_lines() -> Vec<String> {
    vec![
        line(
            "heroku",
            "router",
            "at=info method=GET path=\"/api/v1/crates?page=1\" host=crates.io request_id=1f4a4c5e-0d4e-4b6f-9d0e-7c1c2f1c9a11 fwd=\"203.0.113.9\" dyno=web.1 connect=0ms service=18ms status=200 bytes=2345 protocol=https",
        ),
        line(
            "heroku",
            "router",
            "at=info method=POST path=\"/api/v1/crates/new\" host=crates.io request_id=2f4a4c5e-0d4e-4b6f-9d0e-7c1c2f1c9a12 fwd=\"203.0.113.9\" dyno=web.2 connect=1ms service=740ms status=201 bytes=120 protocol=https",
        ),
        line(
            "heroku",
            "router",
            "at=error code=H12 desc=\"Request timeout\" method=GET path=\"/\" host=myapp.herokuapp.com request_id=8601b555-6a83-4c12-8a9d-2d7b0e0e1f00 fwd=\"204.204.204.204\" dyno=web.1 connect=0ms service=30000ms status=503 bytes=0 protocol=https",
        ),
        line(
            "heroku",
            "router",
            "at=error code=H10 desc=\"App crashed\" method=GET path=\"/favicon.ico\" host=myapp.herokuapp.com fwd=17.17.17.17 dyno= connect= service= status=503 bytes= protocol=https",
        ),
    ]
}

fn dyno_lines() -> Vec<String> {
    vec![
        line(
            "heroku",
            "web.1",
            "source=web.1 dyno=heroku.2808254.d97d0ea7-cf3d-411b-b453-d2943a50b456 sample#memory_total=154.85MB sample#memory_rss=150.19MB sample#memory_cache=4.66MB sample#memory_swap=0.00MB sample#memory_pgpgin=50196pages sample#memory_pgpgout=11611pages sample#memory_quota=512.00MB",
        ),
        line(
            "heroku",
            "web.1",
            "source=web.1 dyno=heroku.2808254.d97d0ea7-cf3d-411b-b453-d2943a50b456 sample#load_avg_1m=0.25 sample#load_avg_5m=0.10 sample#load_avg_15m=0.01",
        ),
    ]
}

/// One metric of every Vector kind, with tags of every shape.
fn every_vector_kind() -> serde_json::Value {
    json!([
        {"metric": {"name": "jobs_enqueued", "namespace": "cratesio", "kind": "incremental",
            "counter": {"value": 3.0}, "tags": {"queue": "default"}}},
        {"metric": {"name": "sample_gauge", "kind": "absolute", "gauge": {"value": 0.0}, "tags": {}}},
        {"metric": {"name": "pool_in_use", "kind": "absolute", "gauge": {"value": 7.0},
            "tags": {"pool": ["primary", "replica"], "bare": null, "empty": [null]}}},
        {"metric": {"name": "unique_users", "kind": "incremental", "set": {"values": ["a", "b", "c"]}}},
        {"metric": {"name": "render_seconds", "kind": "incremental",
            "distribution": {"samples": [{"value": 0.003, "rate": 2}, {"value": 0.3, "rate": 1}], "statistic": "histogram"}}},
        {"metric": {"name": "payload_bytes", "kind": "absolute",
            "distribution": {"samples": [{"value": 10.0, "rate": 1}, {"value": 20.0, "rate": 1}, {"value": 30.0, "rate": 2}], "statistic": "summary"}}},
        {"metric": {"name": "response_time_seconds", "kind": "absolute", "tags": {"endpoint": "search"},
            "aggregated_histogram": {"buckets": [{"upper_limit": 0.1, "count": 5}, {"upper_limit": 0.5, "count": 3}, {"upper_limit": 1.0, "count": 1}], "count": 10, "sum": 2.5}}},
        {"metric": {"name": "db_query_seconds", "kind": "absolute",
            "aggregated_summary": {"quantiles": [{"quantile": 0.5, "value": 0.01}, {"quantile": 0.99, "value": 0.2}], "count": 100, "sum": 1.5}}}
    ])
}

#[test]
fn every_line_kind_becomes_metrics_that_promtool_accepts() {
    let gateway = Gateway::on_loopback(&["--drain-password", PASSWORD]);
    let auth = basic("drain", PASSWORD);
    let mut messages = postgres_lines();
    messages.extend(router_lines());
    messages.extend(dyno_lines());
    messages.push(metrics_line("web.1", &every_vector_kind()));
    messages.push(line("app", "web.1", "Started GET \"/\" for 203.0.113.9"));
    let answer = post(gateway.http, "/drain", &auth, &messages, Some("frame-1"));
    assert_eq!(answer.status, 200, "{}", answer.text());

    let exposition = scrape(gateway.http, None);
    assert_eq!(exposition.status, 200);
    let text = exposition.text();
    let pg = r#"addon="postgresql-opaque-12345",source="DATABASE""#;
    assert_eq!(
        value(&text, &format!("heroku_postgres_db_size{{{pg}}}")),
        Some(147_391_814_791.0)
    );
    assert_eq!(
        value(
            &text,
            &format!("heroku_postgres_active_connections{{{pg}}}")
        ),
        Some(41.0)
    );
    assert_eq!(
        value(&text, &format!("heroku_postgres_memory_free{{{pg}}}")),
        Some(3_786_332.0 * 1024.0)
    );
    assert_eq!(
        value(
            &text,
            &format!("heroku_postgres_wal_percentage_used{{{pg}}}")
        ),
        Some(0.077_203_315_202_172_11)
    );
    let red = r#"addon="postgresql-shaped-67890",source="HEROKU_POSTGRESQL_RED""#;
    assert_eq!(
        value(&text, &format!("heroku_postgres_db_size{{{red}}}")),
        Some(8_945_836.0)
    );
    assert_eq!(
        value(&text, &format!("heroku_postgres_memory_total{{{red}}}")),
        Some(15.5 * 1_048_576.0)
    );
    assert_eq!(
        value(&text, r#"heroku_dyno_memory_total{source="web.1"}"#),
        Some(154.85 * 1_048_576.0)
    );
    assert_eq!(
        value(&text, r#"heroku_dyno_memory_pgpgin{source="web.1"}"#),
        Some(50196.0)
    );
    assert_eq!(
        value(&text, r#"heroku_dyno_load_avg_15m{source="web.1"}"#),
        Some(0.01)
    );
    assert_eq!(
        value(&text, r#"heroku_router_requests_total{status="2xx"}"#),
        Some(2.0)
    );
    assert_eq!(
        value(&text, r#"heroku_router_requests_total{status="5xx"}"#),
        Some(2.0)
    );
    assert_eq!(
        value(&text, r#"heroku_router_errors_total{code="H12"}"#),
        Some(1.0)
    );
    assert_eq!(
        value(&text, r#"heroku_router_errors_total{code="H10"}"#),
        Some(1.0)
    );
    assert_eq!(
        value(&text, "heroku_router_service_seconds_count"),
        Some(3.0)
    );
    assert_eq!(
        value(&text, r#"heroku_router_service_seconds_bucket{le="0.025"}"#),
        Some(1.0)
    );
    assert_eq!(
        value(&text, r#"heroku_router_service_seconds_bucket{le="1"}"#),
        Some(2.0)
    );
    assert_eq!(
        value(&text, r#"heroku_router_service_seconds_bucket{le="30"}"#),
        Some(3.0)
    );
    assert_eq!(
        value(&text, "heroku_router_service_seconds_sum"),
        Some(30.758)
    );

    let tags = r#"app="app",process="web.1""#;
    assert_eq!(
        value(
            &text,
            &format!("cratesio_jobs_enqueued{{{tags},queue=\"default\"}}")
        ),
        Some(3.0)
    );
    assert_eq!(value(&text, &format!("sample_gauge{{{tags}}}")), Some(0.0));
    assert_eq!(
        value(
            &text,
            r#"pool_in_use{app="app",pool="replica",process="web.1"}"#
        ),
        Some(7.0),
        "an array tag keeps its last value, a bare tag is left out:\n{text}"
    );
    assert_eq!(value(&text, &format!("unique_users{{{tags}}}")), Some(3.0));
    assert_eq!(
        value(
            &text,
            &format!("render_seconds_bucket{{{tags},le=\"0.005\"}}")
        ),
        Some(2.0)
    );
    assert_eq!(
        value(
            &text,
            &format!("render_seconds_bucket{{{tags},le=\"0.5\"}}")
        ),
        Some(3.0)
    );
    assert_eq!(
        value(&text, &format!("render_seconds_count{{{tags}}}")),
        Some(3.0)
    );
    assert_eq!(
        value(&text, &format!("payload_bytes{{{tags},quantile=\"0.5\"}}")),
        Some(20.0)
    );
    assert_eq!(
        value(&text, &format!("payload_bytes_count{{{tags}}}")),
        Some(4.0)
    );
    assert_eq!(
        value(&text, &format!("payload_bytes_sum{{{tags}}}")),
        Some(90.0)
    );
    // Labels are written sorted by name.
    let search = r#"app="app",endpoint="search",process="web.1""#;
    assert_eq!(
        value(
            &text,
            &format!("response_time_seconds_bucket{{{search},le=\"0.1\"}}")
        ),
        Some(5.0)
    );
    assert_eq!(
        value(
            &text,
            &format!("response_time_seconds_bucket{{{search},le=\"0.5\"}}")
        ),
        Some(8.0),
        "per-bucket counts are made cumulative:\n{text}"
    );
    assert_eq!(
        value(
            &text,
            &format!("response_time_seconds_bucket{{{search},le=\"1\"}}")
        ),
        Some(9.0)
    );
    assert_eq!(
        value(
            &text,
            &format!("response_time_seconds_bucket{{{search},le=\"+Inf\"}}")
        ),
        Some(10.0)
    );
    assert_eq!(
        value(
            &text,
            &format!("db_query_seconds{{{tags},quantile=\"0.99\"}}")
        ),
        Some(0.2)
    );
    assert_eq!(
        value(&text, &format!("db_query_seconds_count{{{tags}}}")),
        Some(100.0)
    );
    let lines = |kind: &str| {
        value(
            &text,
            &format!("tether_drain_lines_total{{drain=\"/drain\",kind=\"{kind}\"}}"),
        )
    };
    assert_eq!(lines("addon"), Some(2.0));
    assert_eq!(lines("router"), Some(4.0));
    assert_eq!(lines("dyno"), Some(2.0));
    assert_eq!(lines("metrics"), Some(1.0));
    assert_eq!(lines("other"), Some(1.0));
    assert_eq!(rejected(&text, "bad_sample_value"), 0.0);
    assert!(text.contains("# HELP heroku_router_requests_total Heroku router requests"));
    assert!(text.contains("# HELP heroku_postgres_db_size A Heroku add-on's sample"));
    assert!(
        !text.contains("# HELP sample_gauge"),
        "instance metrics carry no help"
    );
    assert_promtool_accepts(&exposition.body);
}

#[test]
fn a_retried_batch_is_answered_and_counted_once_and_a_private_space_batch_is_taken() {
    let gateway = Gateway::on_loopback(&["--drain-password", PASSWORD]);
    let auth = basic("drain", PASSWORD);
    let batch = router_lines();
    for _ in 0..3 {
        let answer = post(
            gateway.http,
            "/drain",
            &auth,
            &batch,
            Some("3a5e1b2c-retried"),
        );
        assert_eq!(answer.status, 200, "a retry is still answered 2xx");
    }
    let text = scrape(gateway.http, None).text();
    assert_eq!(
        value(&text, r#"heroku_router_requests_total{status="2xx"}"#),
        Some(2.0)
    );
    assert_eq!(
        value(
            &text,
            r#"tether_drain_requests_total{drain="/drain",outcome="duplicate"}"#
        ),
        Some(2.0)
    );
    // Private Space drains send neither Logplex-Frame-Id nor
    // Logplex-Drain-Token: every batch is taken.
    for _ in 0..2 {
        let answer = post(gateway.http, "/drain", &auth, &batch, None);
        assert_eq!(answer.status, 200);
    }
    let text = scrape(gateway.http, None).text();
    assert_eq!(
        value(&text, r#"heroku_router_requests_total{status="2xx"}"#),
        Some(6.0)
    );
    // A new id is a new batch.
    post(gateway.http, "/drain", &auth, &batch, Some("another"));
    let text = scrape(gateway.http, None).text();
    assert_eq!(
        value(&text, r#"heroku_router_requests_total{status="2xx"}"#),
        Some(8.0)
    );
}

#[test]
fn bad_input_is_counted_by_reason_and_never_stops_the_batch() {
    let gateway = Gateway::on_loopback(&[
        "--drain-password",
        PASSWORD,
        "--drain-max-line-bytes",
        "2048",
        "--drain-max-body-bytes",
        "65536",
    ]);
    let auth = basic("drain", PASSWORD);
    let good = line(
        "app",
        "heroku-postgres",
        "source=DATABASE addon=pg-1 sample#tables=12",
    );
    let messages = [
        metrics_line(
            "web.1",
            &json!([{"metric": {"name": "good", "kind": "absolute", "gauge": {"value": 1.0}}}]),
        ),
        line("app", "web.1", &format!("{PREFIX} !!!not-base64!!!")),
        line(
            "app",
            "web.1",
            &format!(
                "{PREFIX} {}",
                base64::engine::general_purpose::STANDARD.encode("{not json")
            ),
        ),
        metrics_line(
            "web.1",
            &json!([
                {"metric": {"name": "sketchy", "kind": "absolute", "sketch": {"sketch": {}}}},
                {"metric": {"name": "also_good", "kind": "incremental", "counter": {"value": 2.0}}}
            ]),
        ),
        line(
            "app",
            "heroku-postgres",
            "source=DATABASE addon=pg-1 sample#db_size=lots",
        ),
        line("app", "web.1", &"x".repeat(4096)),
        "not a syslog line at all".to_owned(),
        good,
    ];
    let mut body: String = messages.iter().map(|m| frame(m)).collect();
    // A frame whose length is not a number, then one that runs past the end.
    body.insert_str(0, "abc <134>1 garbage\n");
    body.push_str("999 <134>1 2026-12-02T10:00:00+00:00 host app web.1 - cut short");
    let answer = request(
        gateway.http,
        "POST",
        "/drain",
        &[
            ("Content-Type", "application/logplex-1"),
            ("Logplex-Msg-Count", "99"),
            ("Authorization", &auth),
        ],
        body.as_bytes(),
    )
    .expect("the drain answers");
    assert_eq!(
        answer.status,
        200,
        "bad lines never refuse the batch: {}",
        answer.text()
    );
    let text = scrape(gateway.http, None).text();
    assert_eq!(
        value(&text, r#"good{app="app",process="web.1"}"#),
        Some(1.0)
    );
    assert_eq!(
        value(&text, r#"also_good{app="app",process="web.1"}"#),
        Some(2.0)
    );
    assert_eq!(
        value(
            &text,
            r#"heroku_postgres_tables{addon="pg-1",source="DATABASE"}"#
        ),
        Some(12.0)
    );
    for reason in [
        "base64",
        "json",
        "unknown_kind",
        "bad_sample_value",
        "frame_too_long",
        "syslog",
        "bad_frame_length",
        "truncated_frame",
    ] {
        assert!(
            rejected(&text, reason) >= 1.0,
            "{reason} not counted:\n{text}"
        );
    }
    assert_eq!(
        value(
            &text,
            r#"tether_drain_msg_count_mismatches_total{drain="/drain"}"#
        ),
        Some(1.0)
    );
    // A body past the limit is refused whole, and nothing of it applied.
    let huge: String =
        std::iter::repeat_n(frame(&line("heroku", "router", "at=info status=200")), 4000).collect();
    let answer = request(
        gateway.http,
        "POST",
        "/drain",
        &[("Authorization", &auth)],
        huge.as_bytes(),
    )
    .expect("the drain answers");
    assert_eq!(answer.status, 413, "{}", answer.text());
    assert!(answer.text().contains("--drain-max-body-bytes"));
    let text = scrape(gateway.http, None).text();
    assert_eq!(
        value(&text, r#"heroku_router_requests_total{status="2xx"}"#),
        None
    );
}

#[test]
fn credentials_are_checked_and_a_brute_force_is_throttled_per_address() {
    let gateway = Gateway::on_loopback(&["--drain-password", PASSWORD]);
    let batch = router_lines();
    let answer = post(gateway.http, "/drain", "", &batch, None);
    assert_eq!(answer.status, 401);
    let answer = post(
        gateway.http,
        "/drain",
        &basic("drain", "wrong"),
        &batch,
        None,
    );
    assert_eq!(answer.status, 401);
    let answer = post(
        gateway.http,
        "/drain",
        &basic("metrics", PASSWORD),
        &batch,
        None,
    );
    assert_eq!(answer.status, 401, "the user is part of the credentials");
    let mut throttled = false;
    for _ in 0..50 {
        if post(
            gateway.http,
            "/drain",
            &basic("drain", "guess"),
            &batch,
            None,
        )
        .status
            == 429
        {
            throttled = true;
            break;
        }
    }
    assert!(throttled, "a brute force from one address is throttled");
    // The legitimate drain, from another address, is not slowed.
    let from_other = post_from(
        [127, 0, 0, 2],
        gateway.http,
        &basic("drain", PASSWORD),
        &batch,
    );
    assert_eq!(from_other.status, 200);
    let text = scrape(gateway.http, None).text();
    assert_eq!(
        value(&text, r#"heroku_router_requests_total{status="2xx"}"#),
        Some(2.0)
    );
    assert!(
        value(
            &text,
            r#"tether_drain_requests_total{drain="/drain",outcome="unauthorized"}"#
        )
        .is_some_and(|n| n >= 3.0)
    );
}

/// POSTs a batch to `/drain` from the local address `from` (any
/// 127.0.0.0/8 address is local on Linux).
fn post_from(from: [u8; 4], to: SocketAddr, auth: &str, messages: &[String]) -> Response {
    let local = SocketAddr::from((from, 0));
    let stream = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("a runtime")
        .block_on(async {
            let socket = tokio::net::TcpSocket::new_v4().expect("a socket");
            socket.bind(local).expect("bind the local address");
            socket.connect(to).await.expect("connect")
        });
    let mut stream: TcpStream = stream.into_std().expect("a std stream");
    stream.set_nonblocking(false).expect("blocking");
    stream.set_read_timeout(Some(DEADLINE)).expect("timeout");
    let body: String = messages.iter().map(|m| frame(m)).collect();
    write!(
        stream,
        "POST /drain HTTP/1.1\r\nHost: tether\r\nConnection: close\r\nAuthorization: {auth}\r\nContent-Length: {}\r\n\r\n{body}",
        body.len()
    )
    .expect("sent");
    let mut raw = Vec::new();
    stream.read_to_end(&mut raw).expect("read");
    parse_response(&raw).expect("a response")
}

/// Starts a gateway with `env` set and `args` added, on loopback ports.
fn gateway_with_env(env: &[(&str, &str)], args: &[&str]) -> (crate::support::Killed, SocketAddr) {
    let mut command = Command::new(crate::support::tether_binary());
    command
        .args([
            "gateway",
            "--http-listen",
            "127.0.0.1:0",
            "--agent-listen",
            "127.0.0.1:0",
        ])
        .args(["--no-persistence"])
        .args(args)
        .env("RUST_LOG", "info")
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped());
    for (name, value) in env {
        command.env(name, value);
    }
    let mut child = crate::support::Killed(command.spawn().expect("start tether gateway"));
    let stderr = child.0.stderr.take().expect("piped");
    let mut lines = std::io::BufRead::lines(std::io::BufReader::new(stderr));
    let http = loop {
        let line = lines
            .next()
            .expect("the gateway logs that it listens")
            .expect("a log line");
        if line.contains("gateway listening") {
            break crate::support::logged_addr(&line, "http=").expect("the HTTP address");
        }
    };
    std::thread::spawn(move || lines.for_each(drop));
    (child, http)
}

#[test]
fn the_original_environment_variables_protect_the_drain_and_the_metrics() {
    let (_child, http) = gateway_with_env(
        &[
            ("PASSWORD_DRAIN", "drain-pw"),
            ("PASSWORD_METRICS", "metrics-pw"),
        ],
        &[],
    );
    let batch = router_lines();
    assert_eq!(
        post(
            http,
            "/drain",
            &basic("drain", "drain-pw"),
            &batch,
            Some("1")
        )
        .status,
        200
    );
    let refused = scrape(http, None);
    assert_eq!(refused.status, 401, "PASSWORD_METRICS protects /metrics");
    assert_eq!(scrape(http, Some(&basic("metrics", "wrong"))).status, 401);
    assert_eq!(
        scrape(http, Some(&basic("drain", "metrics-pw"))).status,
        401
    );
    let scraped = scrape(http, Some(&basic("metrics", "metrics-pw")));
    assert_eq!(scraped.status, 200);
    assert_eq!(
        value(
            &scraped.text(),
            r#"heroku_router_requests_total{status="2xx"}"#
        ),
        Some(2.0)
    );
}

#[test]
fn drains_of_the_configuration_file_have_their_own_path_credentials_and_prefix() {
    let dir = std::env::temp_dir().join(format!("tether-drain-config-{}", std::process::id()));
    std::fs::create_dir_all(&dir).expect("a temporary directory");
    let hash = bcrypt::hash("app2-pw", 4).expect("a bcrypt hash");
    let config = dir.join("tether.toml");
    std::fs::write(
        &config,
        format!(
            "drain_password = \"{PASSWORD}\"\n\n[[drain]]\npath = \"/drain/app2\"\nuser = \"heroku\"\npassword = \"{hash}\"\nprefix = \"app2:metrics\"\n"
        ),
    )
    .expect("the configuration file");
    let config_arg = config.display().to_string();
    let (_child, http) = gateway_with_env(&[], &["--config", &config_arg]);
    let gauge = |name: &str| json!([{"metric": {"name": name, "kind": "absolute", "gauge": {"value": 5.0}}}]);
    let payload =
        |name: &str| base64::engine::general_purpose::STANDARD.encode(gauge(name).to_string());
    let app2_line = line(
        "app",
        "web.1",
        &format!("app2:metrics {}", payload("from_app2")),
    );
    let default_prefix_line = line("app", "web.1", &format!("{PREFIX} {}", payload("not_app2")));
    let messages = [app2_line, default_prefix_line];
    assert_eq!(
        post(
            http,
            "/drain/app2",
            &basic("drain", "app2-pw"),
            &messages,
            None
        )
        .status,
        401
    );
    assert_eq!(
        post(
            http,
            "/drain/app2",
            &basic("heroku", PASSWORD),
            &messages,
            None
        )
        .status,
        401
    );
    assert_eq!(
        post(
            http,
            "/drain/app2",
            &basic("heroku", "app2-pw"),
            &messages,
            None
        )
        .status,
        200
    );
    assert_eq!(
        post(
            http,
            "/drain",
            &basic("drain", PASSWORD),
            &router_lines(),
            None
        )
        .status,
        200
    );
    let text = scrape(http, None).text();
    assert_eq!(
        value(&text, r#"from_app2{app="app",process="web.1"}"#),
        Some(5.0)
    );
    assert!(
        !text.contains("not_app2"),
        "the other prefix is not this drain's:\n{text}"
    );
    assert_eq!(
        value(&text, r#"heroku_router_requests_total{status="2xx"}"#),
        Some(2.0)
    );
    assert_eq!(
        value(
            &text,
            r#"tether_drain_lines_total{drain="/drain/app2",kind="other"}"#
        ),
        Some(1.0)
    );
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn series_expire_after_their_ttl_and_a_cardinality_burst_stops_at_the_cap() {
    let gateway = Gateway::on_loopback(&[
        "--drain-password",
        PASSWORD,
        "--drain-series-ttl-secs",
        "1",
        "--drain-max-series",
        "10",
    ]);
    let auth = basic("drain", PASSWORD);
    let burst: Vec<serde_json::Value> = (0..50)
        .map(|i| json!({"metric": {"name": "per_user", "kind": "absolute", "gauge": {"value": 1.0}, "tags": {"user": format!("u{i}")}}}))
        .collect();
    let answer = post(
        gateway.http,
        "/drain",
        &auth,
        &[metrics_line("web.1", &serde_json::Value::Array(burst))],
        None,
    );
    assert_eq!(answer.status, 200);
    let text = scrape(gateway.http, None).text();
    let held = text.lines().filter(|l| l.starts_with("per_user{")).count();
    assert_eq!(held, 10, "the cap holds:\n{text}");
    assert_eq!(rejected(&text, "series_limit"), 40.0);
    // Not updated for a second: gone.
    let started = Instant::now();
    loop {
        let text = scrape(gateway.http, None).text();
        if !text.contains("per_user{") {
            assert!(
                value(
                    &text,
                    r#"tether_drain_series_expired_total{drain="/drain"}"#
                )
                .is_some_and(|n| n >= 10.0)
            );
            break;
        }
        assert!(started.elapsed() < DEADLINE, "the series never expired");
        // The next look, not a synchronization: the condition is read again.
        std::thread::sleep(Duration::from_millis(100));
    }
    // Room again for new series.
    let answer = post(
        gateway.http,
        "/drain",
        &auth,
        &[metrics_line(
            "web.1",
            &json!([{"metric": {"name": "after", "kind": "absolute", "gauge": {"value": 2.0}}}]),
        )],
        None,
    );
    assert_eq!(answer.status, 200);
    let text = scrape(gateway.http, None).text();
    assert_eq!(
        value(&text, r#"after{app="app",process="web.1"}"#),
        Some(2.0)
    );
}

#[test]
fn a_batch_too_slow_to_arrive_gets_408_and_nothing_of_it_is_applied() {
    let gateway = Gateway::on_loopback(&[
        "--drain-password",
        PASSWORD,
        "--drain-body-timeout-ms",
        "300",
    ]);
    let body: String = router_lines().iter().map(|m| frame(m)).collect();
    let mut stream = TcpStream::connect(gateway.http).expect("connect");
    stream.set_read_timeout(Some(DEADLINE)).expect("timeout");
    // The whole head, then half the body, then nothing.
    write!(
        stream,
        "POST /drain HTTP/1.1\r\nHost: tether\r\nAuthorization: {}\r\nContent-Length: {}\r\n\r\n{}",
        basic("drain", PASSWORD),
        body.len(),
        &body[..body.len() / 2]
    )
    .expect("sent");
    let mut raw = Vec::new();
    let mut buf = [0u8; 4096];
    // Read until the answer's head and body are in (the server may keep
    // the connection open after it).
    let answer = loop {
        let n = stream.read(&mut buf).expect("the gateway answers");
        assert!(n > 0, "the connection closed without an answer");
        raw.extend_from_slice(&buf[..n]);
        if let Ok(answer) = parse_response(&raw)
            && answer.text().contains("--drain-body-timeout-ms")
        {
            break answer;
        }
    };
    assert_eq!(answer.status, 408, "{}", answer.text());
    let text = scrape(gateway.http, None).text();
    assert_eq!(
        value(&text, r#"heroku_router_requests_total{status="2xx"}"#),
        None
    );
    assert_eq!(
        value(
            &text,
            r#"tether_drain_requests_total{drain="/drain",outcome="timeout"}"#
        ),
        Some(1.0)
    );
}
