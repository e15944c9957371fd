//! The cost of a drain batch below the gateway (W7): a 500-line logplex
//! batch of the mix a Heroku app sends (router lines, Postgres and dyno
//! samples, instance-metric lines, app logs) framed, its syslog headers
//! read and each message handed to its parser; and each parser alone.

use std::hint::black_box;
use std::time::Duration;

use base64::Engine as _;
use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use tether_drain::{
    LogplexLimits, VectorLimits, logplex_frames, parse_router, parse_samples, parse_syslog,
    parse_vector_line,
};

const PREFIX: &[u8] = b"crates-io-heroku-metrics:ingest ";
const ROUTER: &str = "at=info method=GET path=\"/api/v1/crates?page=1\" host=crates.io request_id=1f4a4c5e-0d4e-4b6f-9d0e-7c1c2f1c9a11 fwd=\"203.0.113.9\" dyno=web.1 connect=0ms service=18ms status=200 bytes=2345 protocol=https";
const ROUTER_ERROR: &str = "at=error code=H12 desc=\"Request timeout\" method=GET path=\"/\" host=myapp.herokuapp.com request_id=8601b555-6a83-4c12-8a9d-2d7b0e0e1f00 fwd=\"204.204.204.204\" dyno=web.1 connect=0ms service=30000ms status=503 bytes=0 protocol=https";
const POSTGRES: &str = "source=DATABASE addon=postgresql-opaque-12345 sample#current_transaction=1873 sample#db_size=147391814791bytes sample#tables=12 sample#active-connections=41 sample#waiting-connections=0 sample#index-cache-hit-rate=0.99625 sample#table-cache-hit-rate=0.99889 sample#load-avg-1m=0.3575 sample#load-avg-5m=0.405 sample#load-avg-15m=0.4125 sample#read-iops=302.48 sample#write-iops=12.35 sample#memory-total=31328356kB sample#memory-free=3786332.0kB sample#memory-cached=24589220kB sample#wal-percentage-used=0.0772";
const DYNO: &str = "source=web.1 dyno=heroku.2808254.d97d0ea7-cf3d-411b-b453-d2943a50b456 sample#memory_total=154.85MB sample#memory_rss=150.19MB sample#memory_cache=4.66MB sample#memory_swap=0.00MB sample#memory_pgpgin=50196pages sample#memory_pgpgout=11611pages sample#memory_quota=512.00MB";

/// Ten metrics of Vector's kinds, as base64 JSON.
fn instance_metrics() -> String {
    let json = r#"[{"metric":{"name":"http_requests","kind":"incremental","counter":{"value":3.0},"tags":{"endpoint":"search"}}},{"metric":{"name":"http_requests","kind":"incremental","counter":{"value":1.0},"tags":{"endpoint":"download"}}},{"metric":{"name":"in_flight_requests","kind":"absolute","gauge":{"value":4.0}}},{"metric":{"name":"db_pool_used","namespace":"cratesio","kind":"absolute","gauge":{"value":8.0},"tags":{"pool":"primary"}}},{"metric":{"name":"db_pool_used","namespace":"cratesio","kind":"absolute","gauge":{"value":2.0},"tags":{"pool":"replica"}}},{"metric":{"name":"background_jobs","kind":"absolute","gauge":{"value":12.0},"tags":{"queue":["default"]}}},{"metric":{"name":"response_time_seconds","kind":"absolute","tags":{"endpoint":"search"},"aggregated_histogram":{"buckets":[{"upper_limit":0.01,"count":5},{"upper_limit":0.1,"count":12},{"upper_limit":1.0,"count":2}],"count":20,"sum":0.7}}},{"metric":{"name":"render_seconds","kind":"incremental","distribution":{"samples":[{"value":0.004,"rate":2},{"value":0.2,"rate":1}],"statistic":"histogram"}}},{"metric":{"name":"query_seconds","kind":"absolute","aggregated_summary":{"quantiles":[{"quantile":0.5,"value":0.01},{"quantile":0.99,"value":0.2}],"count":100,"sum":1.5}}},{"metric":{"name":"active_users","kind":"incremental","set":{"values":["u1","u2"]}}}]"#;
    base64::engine::general_purpose::STANDARD.encode(json)
}

/// A batch of `n` lines: in every ten, five router info lines, one router
/// error, one Postgres line, one dyno line, one metric line, one app log.
fn batch(n: usize) -> Vec<u8> {
    let metrics = instance_metrics();
    let mut body = Vec::new();
    for i in 0..n {
        let (app, procid, msg) = match i % 10 {
            0..=4 => ("heroku", "router", ROUTER.to_owned()),
            5 => ("heroku", "router", ROUTER_ERROR.to_owned()),
            6 => ("app", "heroku-postgres", POSTGRES.to_owned()),
            7 => ("heroku", "web.1", DYNO.to_owned()),
            8 => (
                "app",
                "web.1",
                format!("crates-io-heroku-metrics:ingest {metrics}"),
            ),
            _ => (
                "app",
                "web.1",
                "Started GET \"/api/v1/crates\" for 203.0.113.9".to_owned(),
            ),
        };
        let message =
            format!("<158>1 2026-12-02T10:00:00.000000+00:00 host {app} {procid} - {msg}");
        body.extend_from_slice(format!("{} {message}\n", message.len() + 1).as_bytes());
    }
    body
}

/// Every line of `body` read as the gateway reads it; how many parsed.
fn read(body: &[u8]) -> usize {
    let mut parsed = 0;
    for frame in logplex_frames(body, LogplexLimits::default()) {
        let Ok(message) = frame else { continue };
        let Ok(syslog) = parse_syslog(message) else {
            continue;
        };
        let msg = syslog.msg;
        if let Some(payload) = msg.strip_prefix(PREFIX) {
            parsed += usize::from(parse_vector_line(payload, VectorLimits::default()).is_ok());
        } else if syslog.procid == "router" {
            parsed += usize::from(parse_router(msg).is_ok());
        } else if parse_samples(msg).is_some() {
            parsed += 1;
        }
    }
    parsed
}

fn lines(c: &mut Criterion) {
    let mut group = c.benchmark_group("drain");
    let body = batch(500);
    assert_eq!(read(&body), 450, "every line but the app logs parses");
    group.throughput(Throughput::Elements(500));
    group.bench_function("batch_500_mixed", |b| b.iter(|| read(black_box(&body))));
    group.throughput(Throughput::Elements(1));
    group.bench_function("router", |b| {
        b.iter(|| parse_router(black_box(ROUTER.as_bytes())));
    });
    group.bench_function("postgres_samples", |b| {
        b.iter(|| parse_samples(black_box(POSTGRES.as_bytes())));
    });
    let metrics = instance_metrics();
    group.bench_function("vector_line_10_metrics", |b| {
        b.iter(|| parse_vector_line(black_box(metrics.as_bytes()), VectorLimits::default()));
    });
    group.finish();
}

criterion_group! {
    name = benches;
    config = Criterion::default()
        .warm_up_time(Duration::from_secs(1))
        .measurement_time(Duration::from_secs(3));
    targets = lines
}
criterion_main!(benches);
