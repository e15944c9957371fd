//! W3: rendering one counter family of 1k, 100k and 1M series as text,
//! tether's `render_family` beside `metrics-exporter-prometheus`.
//!
//! Both render the same series (`support::request_series`). Tether writes
//! into one reused buffer; the peer's `PrometheusHandle::render` takes a
//! snapshot of its registry and returns a new `String`, which is how a
//! scrape handler calls it. Throughput is in series, so criterion reports
//! the time per series.

mod support;

use std::hint::black_box;
use std::time::Duration;

use criterion::{
    BenchmarkId, Criterion, SamplingMode, Throughput, criterion_group, criterion_main,
};
use metrics::Recorder as _;
use metrics_exporter_prometheus::{PrometheusBuilder, PrometheusHandle, PrometheusRecorder};
use tether_model::{
    Counter, Format, Label, MetricFamily, MetricType, Series, Value, render_family,
};

use support::RequestSeries;

const FAMILY: &str = "http_requests_total";

fn tether_family(series: &[RequestSeries]) -> MetricFamily {
    let mut family = MetricFamily::new(FAMILY, MetricType::Counter);
    family.help =
        Some("Total HTTP requests served, by method, handler and status code.".to_owned());
    family.series = series
        .iter()
        .map(|one| Series {
            labels: one
                .labels
                .iter()
                .map(|(name, value)| Label::new(*name, value.as_str()))
                .collect(),
            #[allow(clippy::cast_precision_loss, reason = "values are below 2^53")]
            value: Value::Counter(Counter {
                total: one.value as f64,
                created: None,
                exemplar: None,
            }),
            timestamp_ms: None,
        })
        .collect();
    family
}

/// A recorder holding the same series, installed nowhere: only its handle
/// renders.
fn peer_recorder(series: &[RequestSeries]) -> (PrometheusRecorder, PrometheusHandle) {
    let recorder = PrometheusBuilder::new().build_recorder();
    recorder.describe_counter(
        FAMILY.into(),
        None,
        "Total HTTP requests served, by method, handler and status code.".into(),
    );
    let metadata =
        metrics::Metadata::new(module_path!(), metrics::Level::INFO, Some(module_path!()));
    for one in series {
        let labels: Vec<metrics::Label> = one
            .labels
            .iter()
            .map(|(name, value)| metrics::Label::new(*name, value.clone()))
            .collect();
        let key = metrics::Key::from_parts(FAMILY, labels);
        recorder
            .register_counter(&key, &metadata)
            .increment(one.value);
    }
    let handle = recorder.handle();
    (recorder, handle)
}

fn count_series_lines(text: &[u8]) -> usize {
    text.split(|&b| b == b'\n')
        .filter(|line| line.starts_with(FAMILY.as_bytes()))
        .count()
}

#[allow(
    clippy::print_stdout,
    reason = "output sizes are part of the benchmark output"
)]
fn bench_render(c: &mut Criterion) {
    let sizes: &[usize] = if support::is_measuring() {
        &[1_000, 100_000, 1_000_000]
    } else {
        &[1_000]
    };
    let mut group = c.benchmark_group("W3_render");
    group
        .sample_size(10)
        .warm_up_time(Duration::from_secs(1))
        .measurement_time(Duration::from_secs(5))
        .sampling_mode(SamplingMode::Flat);
    for &n in sizes {
        let series = support::request_series(n);
        group.throughput(Throughput::Elements(
            u64::try_from(n).expect("usize fits in u64"),
        ));

        // One side at a time, so the larger sizes do not hold both copies.
        {
            let family = tether_family(&series);
            let mut out = Vec::new();
            render_family(&family, Format::Text, &mut out);
            assert_eq!(
                count_series_lines(&out),
                n,
                "tether rendered a wrong number of series"
            );
            println!(
                "W3 {n} series: tether writes {} bytes ({} per series)",
                out.len(),
                out.len() / n
            );
            group.bench_with_input(BenchmarkId::new("tether", n), &family, |b, family| {
                b.iter(|| {
                    out.clear();
                    render_family(family, Format::Text, &mut out);
                    out.len()
                });
            });
        }
        {
            let (_recorder, handle) = peer_recorder(&series);
            let rendered = handle.render();
            assert_eq!(
                count_series_lines(rendered.as_bytes()),
                n,
                "metrics-exporter-prometheus rendered a wrong number of series"
            );
            println!(
                "W3 {n} series: metrics-exporter-prometheus writes {} bytes ({} per series)",
                rendered.len(),
                rendered.len() / n
            );
            drop(rendered);
            group.bench_with_input(
                BenchmarkId::new("metrics_exporter_prometheus", n),
                &handle,
                |b, handle| {
                    b.iter(|| black_box(handle.render()));
                },
            );
        }
    }
    group.finish();
}

criterion_group!(benches, bench_render);
criterion_main!(benches);
