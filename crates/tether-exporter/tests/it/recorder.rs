//! The recorder and its registry, read through `ExporterHandle`, without a global recorder.

use std::sync::Arc;
use std::sync::Barrier;
use std::thread;

use metrics::{Key, Recorder, Unit};
use tether_exporter::{ExporterBuilder, Format, Matcher};
use tether_model::{MetricFamily, MetricType, Value, parse};

const THREADS: u64 = 4;
const PER_THREAD: u64 = 100_000;

fn find<'a>(families: &'a [MetricFamily], name: &str) -> &'a MetricFamily {
    families
        .iter()
        .find(|family| family.name == name)
        .unwrap_or_else(|| panic!("no family {name} in {families:?}"))
}

fn counter_total(family: &MetricFamily, series: usize) -> f64 {
    match &family.series[series].value {
        Value::Counter(counter) => counter.total,
        other => panic!("not a counter: {other:?}"),
    }
}

#[test]
fn concurrent_increments_sum_exactly() {
    let recorder = ExporterBuilder::new().build_recorder();
    let handle = recorder.handle();
    let barrier = Arc::new(Barrier::new(THREADS as usize));
    let threads: Vec<_> = (0..THREADS)
        .map(|i| {
            let recorder = recorder.clone();
            let barrier = Arc::clone(&barrier);
            thread::spawn(move || {
                // Each thread registers the shared series itself (the
                // registry must hand out one cell) and one of its own.
                let (shared, own) = metrics::with_local_recorder(&recorder, || {
                    (
                        metrics::counter!("work.done"),
                        metrics::counter!("work.by_thread", "thread" => i.to_string()),
                    )
                });
                barrier.wait();
                for _ in 0..PER_THREAD {
                    shared.increment(1);
                    own.increment(2);
                }
                metrics::with_local_recorder(&recorder, || {
                    metrics::gauge!("threads.finished").increment(1.0);
                });
            })
        })
        .collect();
    for thread in threads {
        thread.join().expect("a recording thread");
    }
    let families = handle.families();
    let done = find(&families, "work_done");
    assert_eq!(done.metric_type, MetricType::Counter);
    assert_eq!(counter_total(done, 0), (THREADS * PER_THREAD) as f64);
    let by_thread = find(&families, "work_by_thread");
    assert_eq!(by_thread.series.len(), THREADS as usize);
    for i in 0..by_thread.series.len() {
        assert_eq!(counter_total(by_thread, i), (2 * PER_THREAD) as f64);
    }
    let finished = find(&families, "threads_finished");
    assert_eq!(finished.series[0].value, Value::Single(THREADS as f64));
}

#[test]
fn the_exposition_is_valid_with_sanitized_names_sorted_labels_and_descriptions() {
    let recorder = ExporterBuilder::new()
        .set_buckets(&[0.1, 1.0])
        .expect("valid buckets")
        .set_buckets_for_metric(Matcher::Suffix(".bytes".into()), &[1024.0])
        .expect("valid buckets")
        .build_recorder();
    let handle = recorder.handle();
    metrics::with_local_recorder(&recorder, || {
        metrics::describe_counter!("http.requests", Unit::Count, "HTTP requests.\nBy code.");
        metrics::describe_histogram!("rpc.latency", Unit::Seconds, "RPC latency.");
        metrics::describe_histogram!("payload.bytes", Unit::Bytes, "Payload sizes.");
        metrics::counter!("http.requests", "code" => "200", "path" => "/a\"b\\c\nd").increment(3);
        metrics::counter!("http.requests", "path" => "/", "code" => "500").increment(1);
        metrics::counter!("1st-try", "le-gacy" => "x").increment(1);
        metrics::gauge!("queue depth").set(-2.5);
        metrics::histogram!("rpc.latency", "le" => "mine").record(0.05);
        metrics::histogram!("rpc.latency", "le" => "mine").record(5.0);
        metrics::histogram!("payload.bytes").record(100.0);
        metrics::histogram!("payload.bytes").record(4096.0);
        // Clashes with `http.requests` once sanitized: left out.
        metrics::gauge!("http_requests").set(1.0);
    });

    let text = String::from_utf8(handle.render(Format::Text)).expect("UTF-8");
    let expected = "\
# TYPE _st_try counter
_st_try{le_gacy=\"x\"} 1
# HELP http_requests HTTP requests.\\nBy code.
# TYPE http_requests counter
http_requests{code=\"200\",path=\"/a\\\"b\\\\c\\nd\"} 3
http_requests{code=\"500\",path=\"/\"} 1
# HELP payload_bytes Payload sizes.
# TYPE payload_bytes histogram
payload_bytes_bucket{le=\"1024\"} 1
payload_bytes_bucket{le=\"+Inf\"} 2
payload_bytes_sum 4196
payload_bytes_count 2
# TYPE queue_depth gauge
queue_depth -2.5
# HELP rpc_latency RPC latency.
# TYPE rpc_latency histogram
rpc_latency_bucket{exported_le=\"mine\",le=\"0.1\"} 1
rpc_latency_bucket{exported_le=\"mine\",le=\"1\"} 1
rpc_latency_bucket{exported_le=\"mine\",le=\"+Inf\"} 2
rpc_latency_sum{exported_le=\"mine\"} 5.05
rpc_latency_count{exported_le=\"mine\"} 2
";
    // Line order within a family is the renderer's business; compare sets,
    // and the families' order through their TYPE lines.
    let sorted = |text: &str| {
        let mut lines: Vec<String> = text.lines().map(str::to_owned).collect();
        lines.sort();
        lines
    };
    assert_eq!(sorted(&text), sorted(expected));
    let types = |text: &str| -> Vec<String> {
        text.lines()
            .filter(|line| line.starts_with("# TYPE"))
            .map(str::to_owned)
            .collect()
    };
    assert_eq!(types(&text), types(expected));
    let parsed = parse(text.as_bytes(), Format::Text).expect("our own parser accepts it");
    // Text 0.0.4 has no units; everything else reads back the same.
    let mut families = handle.families();
    for family in &mut families {
        family.unit = None;
    }
    assert_eq!(parsed, families);

    let openmetrics = handle.render(Format::OpenMetrics);
    let parsed = parse(&openmetrics, Format::OpenMetrics).expect("valid OpenMetrics");
    // A unit is written where the name ends with it, as OpenMetrics requires.
    assert_eq!(
        find(&parsed, "payload_bytes").unit.as_deref(),
        Some("bytes")
    );
    assert_eq!(find(&parsed, "rpc_latency").unit, None);
    assert!(
        String::from_utf8_lossy(&openmetrics)
            .contains("http_requests_total{code=\"500\",path=\"/\"} 1\n"),
        "OpenMetrics names counter samples with _total"
    );
}

#[test]
fn families_into_reuses_a_vector_across_scrapes() {
    let recorder = ExporterBuilder::new().build_recorder();
    let handle = recorder.handle();
    let key = |name: &str| Key::from_parts(name.to_owned(), vec![metrics::Label::new("k", "v")]);
    let metadata = metrics::Metadata::new("t", metrics::Level::INFO, None);
    let a = recorder.register_counter(&key("a"), &metadata);
    let histogram = recorder.register_histogram(&key("h"), &metadata);
    a.increment(1);
    histogram.record(0.3);

    let mut scrape = Vec::new();
    handle.families_into(&mut scrape);
    assert_eq!(scrape, handle.families());

    // A new family sorts first, so every element is overwritten by another.
    recorder.register_gauge(&key("0"), &metadata).set(9.0);
    a.increment(1);
    histogram.record(7.0);
    handle.families_into(&mut scrape);
    assert_eq!(scrape, handle.families());
    assert_eq!(scrape.len(), 3);
    assert_eq!(counter_total(find(&scrape, "a"), 0), 2.0);

    // A longer vector from elsewhere is cut to size.
    let mut longer = handle.families();
    longer.extend(handle.families());
    handle.families_into(&mut longer);
    assert_eq!(longer, handle.families());
}

#[test]
fn recorders_are_independent() {
    let first = ExporterBuilder::new().build_recorder();
    let second = ExporterBuilder::new().build_recorder();
    metrics::with_local_recorder(&first, || metrics::counter!("only_first").increment(1));
    metrics::with_local_recorder(&second, || metrics::counter!("only_second").increment(1));
    let names = |families: Vec<MetricFamily>| -> Vec<String> {
        families.into_iter().map(|family| family.name).collect()
    };
    assert_eq!(names(first.handle().families()), ["only_first"]);
    assert_eq!(names(second.handle().families()), ["only_second"]);
}
