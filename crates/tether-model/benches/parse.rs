//! W4: parsing a realistic 64 MB text exposition, tether beside its peers.
//!
//! Every parser gets the same bytes from `support::exposition`. Before
//! timing, each one's output is checked against what the generator wrote,
//! so a fast figure for a parser that mangles escaped label values is
//! reported as such.
//!
//! `W4_check` times the check path beside it: `check` (the whole input in
//! memory, into families) and the streamed check (`CheckStream`, fed in
//! pieces of 256 KiB, as `tether check` reads), on the same bytes and on
//! one gauge family of `TETHER_BENCH_SERIES` series (default 1,000,000;
//! 1,000 under `cargo test --benches`).
//!
//! `TETHER_BENCH_MB=8` shrinks the input for a quick run;
//! `TETHER_BENCH_DUMP=/tmp/w4.prom` also writes it to a file (for
//! `promtool check metrics`).

mod support;

use std::hint::black_box;
use std::time::Duration;

use criterion::{Criterion, SamplingMode, Throughput, criterion_group, criterion_main};
use tether_model::{CheckStream, Entry, Format, Limits, Parser};

use support::{ESCAPED_VALUES, Exposition};

fn is_escaped_value(value: &str) -> bool {
    ESCAPED_VALUES.contains(&value)
}

/// Walks every entry with the zero-copy parser and reads every label.
fn tether_stream(input: &[u8]) -> usize {
    let mut parser =
        Parser::new(input, Format::Text, Limits::default()).expect("the exposition is UTF-8");
    let mut touched = 0usize;
    while let Some(entry) = parser.next_entry() {
        let (entry, _) = entry.expect("the generated exposition is valid");
        if let Entry::Sample(sample) = entry {
            for label in sample.labels.iter() {
                touched += label.name.len() + label.value.len();
            }
            touched ^= usize::from(sample.value.is_nan());
        }
    }
    touched
}

/// The pieces `tether check` reads its input in.
const CHECK_PIECE_BYTES: usize = 256 * 1024;

/// Errors kept by the check benchmarks, as `tether check` keeps them.
const CHECK_MAX_ERRORS: usize = 1000;

/// The streamed check of `input`, fed in pieces; answers its series count.
fn tether_check_stream(input: &[u8]) -> usize {
    let mut stream = CheckStream::new(Format::Text, Limits::default(), CHECK_MAX_ERRORS);
    for piece in input.chunks(CHECK_PIECE_BYTES) {
        stream.feed(piece);
    }
    let report = stream.finish();
    assert!(report.errors.is_empty(), "{:?}", report.errors.first());
    report.stats.iter().map(|stats| stats.n_series).sum()
}

/// `check` of the whole input; answers its series count.
fn tether_check(input: &[u8]) -> usize {
    let checked = tether_model::check(input, Format::Text, Limits::default(), CHECK_MAX_ERRORS);
    assert!(checked.errors.is_empty(), "{:?}", checked.errors.first());
    checked
        .families
        .iter()
        .map(|family| family.series.len())
        .sum()
}

/// One gauge family of `n_series` series, each with an `instance` label
/// of its own: the shape whose series a weak hash confused.
fn one_family(n_series: usize) -> String {
    use std::fmt::Write as _;
    let mut text =
        String::from("# HELP big_gauge One gauge, many series.\n# TYPE big_gauge gauge\n");
    for i in 0..n_series {
        // Writing into a `String` cannot fail.
        let _ = writeln!(text, "big_gauge{{instance=\"host-{i}\",job=\"api\"}} {i}");
    }
    text
}

fn bench_check(c: &mut Criterion, exposition: &[u8]) {
    let n_series: usize = std::env::var("TETHER_BENCH_SERIES")
        .ok()
        .and_then(|n| n.parse().ok())
        .unwrap_or(if support::is_measuring() {
            1_000_000
        } else {
            1_000
        });
    let family = one_family(n_series);
    let mut group = c.benchmark_group("W4_check");
    group
        .sample_size(10)
        .warm_up_time(Duration::from_secs(1))
        .measurement_time(Duration::from_secs(10))
        .sampling_mode(SamplingMode::Flat);
    for (name, input) in [
        ("exposition", exposition),
        ("one_family", family.as_bytes()),
    ] {
        group.throughput(Throughput::BytesDecimal(
            u64::try_from(input.len()).expect("usize fits in u64"),
        ));
        group.bench_function(format!("check/{name}"), |b| {
            b.iter(|| tether_check(black_box(input)));
        });
        group.bench_function(format!("check_stream/{name}"), |b| {
            b.iter(|| tether_check_stream(black_box(input)));
        });
    }
    group.finish();
}

fn tether_families(input: &[u8]) -> Vec<tether_model::MetricFamily> {
    tether_model::parse(input, Format::Text).expect("the generated exposition is valid")
}

/// prometheus-parse reads owned lines, which is how its callers feed it.
fn prometheus_parse(text: &str) -> prometheus_parse::Scrape {
    prometheus_parse::Scrape::parse(text.lines().map(|line| Ok(line.to_owned())))
        .expect("in-memory lines cannot fail to read")
}

fn openmetrics_parser(
    text: &str,
) -> Result<
    openmetrics_parser::MetricsExposition<
        openmetrics_parser::PrometheusType,
        openmetrics_parser::PrometheusValue,
    >,
    openmetrics_parser::ParseError,
> {
    openmetrics_parser::prometheus::parse_prometheus(text)
}

/// Parses once with each parser and prints what each got right; returns
/// whether openmetrics-parser accepted the input (it is benchmarked only then).
#[allow(
    clippy::print_stdout,
    reason = "the correctness report is part of the benchmark output"
)]
fn report_correctness(exposition: &Exposition) -> bool {
    let text = exposition.text.as_str();
    println!(
        "W4 input: {} bytes, {} families, {} series, {} sample lines, {} counter/gauge series with escaped label values",
        text.len(),
        exposition.n_families,
        exposition.n_series,
        exposition.n_samples,
        exposition.n_escaped_series
    );

    let stream_samples = {
        let mut parser = Parser::new(text.as_bytes(), Format::Text, Limits::default())
            .expect("the exposition is UTF-8");
        let mut n = 0;
        while let Some(entry) = parser.next_entry() {
            if let (Entry::Sample(_), _) = entry.expect("the generated exposition is valid") {
                n += 1;
            }
        }
        n
    };
    let families = tether_families(text.as_bytes());
    let tether_series: usize = families.iter().map(|family| family.series.len()).sum();
    let tether_escaped = families
        .iter()
        .flat_map(|family| &family.series)
        .filter(|series| {
            series
                .labels
                .iter()
                .any(|label| is_escaped_value(&label.value))
        })
        .count();
    println!(
        "  tether: {} families, {} series, {stream_samples} sample lines streamed; escaped values decoded: {tether_escaped} of {}",
        families.len(),
        tether_series,
        exposition.n_escaped_series
    );
    assert_eq!(
        tether_series, exposition.n_series,
        "tether lost or split series"
    );
    assert_eq!(
        stream_samples, exposition.n_samples,
        "tether's stream lost sample lines"
    );
    assert_eq!(
        tether_escaped, exposition.n_escaped_series,
        "tether decoded escaped label values wrongly"
    );
    drop(families);

    let scrape = prometheus_parse(text);
    let peer_escaped = scrape
        .samples
        .iter()
        .filter(|sample| sample.labels.values().any(|value| is_escaped_value(value)))
        .count();
    println!(
        "  prometheus-parse: {} samples (histograms and summaries folded); escaped values decoded: {peer_escaped} of {}",
        scrape.samples.len(),
        exposition.n_escaped_series
    );
    drop(scrape);

    match openmetrics_parser(text) {
        Ok(parsed) => {
            let mut n_samples = 0;
            let mut escaped = 0;
            for family in parsed.families.values() {
                for sample in family.iter_samples() {
                    n_samples += 1;
                    let labels = sample
                        .get_labelset()
                        .expect("samples of a parsed family have label names");
                    escaped +=
                        usize::from(labels.iter_values().any(|value| is_escaped_value(value)));
                }
            }
            println!(
                "  openmetrics-parser: {} families, {n_samples} series; escaped values decoded: {escaped} of {}",
                parsed.families.len(),
                exposition.n_escaped_series
            );
            true
        }
        Err(error) => {
            println!("  openmetrics-parser: rejected the input ({error:?}); not benchmarked");
            false
        }
    }
}

fn bench_parse(c: &mut Criterion) {
    let exposition = support::exposition(support::exposition_bytes());
    if let Ok(path) = std::env::var("TETHER_BENCH_DUMP") {
        std::fs::write(&path, &exposition.text).expect("TETHER_BENCH_DUMP names a writable file");
    }
    let openmetrics_ok = report_correctness(&exposition);
    let text = exposition.text.as_str();
    let bytes = text.as_bytes();

    let mut group = c.benchmark_group("W4_parse");
    group
        .throughput(Throughput::BytesDecimal(
            u64::try_from(bytes.len()).expect("usize fits in u64"),
        ))
        .sample_size(10)
        .warm_up_time(Duration::from_secs(1))
        .measurement_time(Duration::from_secs(10))
        .sampling_mode(SamplingMode::Flat);
    group.bench_function("tether_stream", |b| {
        b.iter(|| tether_stream(black_box(bytes)));
    });
    group.bench_function("tether_families", |b| {
        b.iter(|| tether_families(black_box(bytes)));
    });
    group.bench_function("prometheus_parse", |b| {
        b.iter(|| prometheus_parse(black_box(text)));
    });
    if openmetrics_ok {
        group.bench_function("openmetrics_parser", |b| {
            b.iter(|| openmetrics_parser(black_box(text)));
        });
    }
    group.finish();
    bench_check(c, bytes);
}

criterion_group!(benches, bench_parse);
criterion_main!(benches);
