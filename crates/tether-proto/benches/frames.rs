//! The cost of an agent's frame at the gateway, per byte: the scan that
//! looks at a frame before anything is decoded (its kind, id and counts),
//! the decode, and the conversion into the model, for a realistic answer
//! and for the frame that decoding amplifies most (empty families, two
//! bytes each on the wire).
//!
//! The gateway scans every frame and decodes only what a scrape waits for,
//! within `--max-series-per-answer`, so an unsolicited or oversized frame
//! costs its scan alone.

use std::hint::black_box;
use std::time::Duration;

use bytes::Bytes;
use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use tether_model::{Label, MetricFamily, MetricType, Series, Value, from_proto, pb, to_proto};
use tether_proto::{
    ClientKind, ClientMessage, ScrapeResponse, decode_client_message, scan_client_message,
};

/// An answer of one gauge family of `n_series` series with three labels,
/// as an app's registry sends it.
fn realistic(n_series: usize) -> Bytes {
    let mut family = MetricFamily::new("http_requests_in_flight", MetricType::Gauge);
    family.help = Some("Requests being served.".to_owned());
    family.series = (0..n_series)
        .map(|i| Series {
            labels: vec![
                Label::new("method", ["GET", "POST", "PUT"][i % 3]),
                Label::new("route", format!("/api/v1/items/{}", i / 3)),
                Label::new("status", ["200", "404", "500"][i % 3]),
            ],
            value: Value::Single(i as f64),
            timestamp_ms: None,
        })
        .collect();
    body(vec![to_proto(&family)])
}

/// An answer of `n_families` empty families.
fn empty_families(n_families: usize) -> Bytes {
    body(vec![pb::MetricFamily::default(); n_families])
}

fn body(families: Vec<pb::MetricFamily>) -> Bytes {
    let message = ClientMessage::from(ScrapeResponse {
        id: 1,
        families,
        error: String::new(),
    });
    Bytes::from(prost::Message::encode_to_vec(&message))
}

/// Decodes `body` and converts every family into the model, as the
/// gateway does with an answer it waits for.
fn decode_and_convert(body: Bytes) -> usize {
    let message = decode_client_message(body).expect("the answer decodes");
    let Some(ClientKind::ScrapeResponse(response)) = message.kind else {
        unreachable!("the bench encodes a ScrapeResponse");
    };
    response
        .families
        .into_iter()
        .filter_map(|family| from_proto(family).ok())
        .map(|family| family.series.len())
        .sum()
}

fn frames(c: &mut Criterion) {
    let inputs = [
        ("realistic_10k_series", realistic(10_000)),
        ("empty_families_1m", empty_families(1_000_000)),
    ];
    let mut group = c.benchmark_group("agent_frame");
    group.measurement_time(Duration::from_secs(5));
    for (name, body) in &inputs {
        group.throughput(Throughput::Bytes(body.len() as u64));
        group.bench_function(format!("scan/{name}"), |b| {
            b.iter(|| scan_client_message(black_box(body)).expect("the answer scans"));
        });
        group.bench_function(format!("decode/{name}"), |b| {
            b.iter(|| decode_client_message(black_box(body.clone())).expect("the answer decodes"));
        });
        group.bench_function(format!("decode_and_convert/{name}"), |b| {
            b.iter(|| decode_and_convert(black_box(body.clone())));
        });
    }
    group.finish();
}

criterion_group!(benches, frames);
criterion_main!(benches);
