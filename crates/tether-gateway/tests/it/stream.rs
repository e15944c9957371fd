//! The gateway reads an unmodified metrics-exporter-tcp app's event stream
//! and serves its metrics with `instance` set to the stream's address.

use std::net::TcpListener;
use std::time::{Duration, Instant};

use metrics::{Key, Label, Level, Metadata, Recorder};
use tether_gateway::RawConfig;

use crate::support::config;
use tether_model::{Format, Value, parse};

use crate::support::{TestGateway, get, value_of};

static METADATA: Metadata<'static> = Metadata::new(module_path!(), Level::INFO, None);

/// Scrapes until `check` accepts the families or the deadline passes.
async fn scrape_until(
    gateway: &TestGateway,
    what: &str,
    check: impl Fn(&[tether_model::MetricFamily]) -> bool,
) -> Vec<tether_model::MetricFamily> {
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let families = parse(&get(gateway.http, "/metrics", &[]).await.body, Format::Text)
            .expect("valid output");
        if check(&families) {
            return families;
        }
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        // The stream arrives asynchronously; ask again shortly.
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_unmodified_metrics_exporter_tcp_app_is_ingested() {
    // A loopback address of its own: metrics-exporter-tcp binds the port
    // after the probe lets it go, and on 127.0.0.1 a client socket of a
    // concurrent test could take it as its ephemeral port in between.
    let port = TcpListener::bind("127.0.0.7:0")
        .and_then(|l| l.local_addr())
        .expect("free port")
        .port();
    let source = format!("127.0.0.7:{port}");
    let recorder = metrics_exporter_tcp::TcpBuilder::new()
        .listen_address(([127, 0, 0, 7], port))
        .build()
        .expect("metrics-exporter-tcp starts");
    // Apps describe their metrics at start-up; metrics-exporter-tcp keeps
    // descriptions and replays them to each client that connects.
    recorder.describe_counter("app.requests".into(), None, "Requests served.".into());
    let config = config(RawConfig {
        stream_source: Some(vec![source.clone()]),
        ..RawConfig::loopback()
    });
    let gateway = TestGateway::start(config).await;
    // metrics-exporter-tcp sends no values on connect: wait until the
    // gateway is connected before recording.
    scrape_until(&gateway, "the stream to connect", |f| {
        value_of(f, "tether_stream_up", &[("instance", &source)]) == Some(1.0)
    })
    .await;
    let counter = recorder.register_counter(
        &Key::from_parts("app.requests", vec![Label::new("code", "200")]),
        &METADATA,
    );
    let gauge = recorder.register_gauge(&Key::from_name("app.queue_depth"), &METADATA);
    let histogram = recorder.register_histogram(&Key::from_name("app.latency"), &METADATA);
    for _ in 0..5 {
        counter.increment(2);
    }
    gauge.set(12.0);
    gauge.decrement(2.0);
    histogram.record(0.2);
    histogram.record(3.0);
    let families = scrape_until(&gateway, "the recorded values", |f| {
        value_of(f, "app_requests", &[("code", "200")]) == Some(10.0)
            && value_of(f, "app_queue_depth", &[]) == Some(10.0)
            && f.iter().any(|family| family.name == "app_latency")
    })
    .await;
    assert_eq!(
        value_of(&families, "app_requests", &[("instance", &source)]),
        Some(10.0)
    );
    let help = families
        .iter()
        .find(|f| f.name == "app_requests")
        .and_then(|f| f.help.clone());
    assert_eq!(help.as_deref(), Some("Requests served."));
    let latency = families
        .iter()
        .find(|f| f.name == "app_latency")
        .expect("histogram family");
    let Value::Histogram(h) = &latency.series[0].value else {
        panic!("app_latency is a histogram");
    };
    assert_eq!((h.count, h.sum), (Some(2.0), Some(3.2)));
    gateway.stop().await;
}

#[tokio::test]
async fn an_unreachable_stream_is_marked_down() {
    let port = TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("free port")
        .port();
    // Nothing listens on the port once the probe listener is dropped.
    let source = format!("127.0.0.1:{port}");
    let config = config(RawConfig {
        stream_source: Some(vec![source.clone()]),
        ..RawConfig::loopback()
    });
    let gateway = TestGateway::start(config).await;
    let families =
        parse(&get(gateway.http, "/metrics", &[]).await.body, Format::Text).expect("valid output");
    assert_eq!(
        value_of(&families, "tether_stream_up", &[("instance", &source)]),
        Some(0.0)
    );
    gateway.stop().await;
}

/// A peer on a loopback port that the gateway dials: accepts one
/// connection and hands it to `behave`.
async fn fake_stream_peer<F, Fut>(behave: F) -> String
where
    F: FnOnce(tokio::net::TcpStream) -> Fut + Send + 'static,
    Fut: Future<Output = ()> + Send,
{
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind a peer");
    let address = listener.local_addr().expect("address").to_string();
    tokio::spawn(async move {
        let accepted = listener.accept().await;
        // Later dials are refused: the listener is gone.
        drop(listener);
        if let Ok((stream, _)) = accepted {
            behave(stream).await;
        }
    });
    address
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_peer_sending_endless_new_names_stays_within_the_caps() {
    use tokio::io::AsyncWriteExt;
    const MAX_SERIES: usize = 500;
    const N_NAMES: usize = 20_000;
    let source = fake_stream_peer(|mut stream| async move {
        let mut out = bytes::BytesMut::new();
        for i in 0..N_NAMES {
            let name = format!("endless.metric.{i:06}.{}", "x".repeat(100));
            let metadata = tether_proto::Event::from(tether_proto::EventMetadata {
                name: name.clone(),
                metric_type: tether_proto::EventMetricType::Gauge.into(),
                unit: None,
                description: Some("h".repeat(200)),
            });
            tether_proto::encode_event(&metadata, &mut out);
            let metric = tether_proto::Event::from(tether_proto::EventMetric {
                name,
                timestamp: None,
                labels: std::collections::BTreeMap::new(),
                operation: Some(tether_proto::Operation::SetGauge(1.0)),
            });
            tether_proto::encode_event(&metric, &mut out);
        }
        let _ = stream.write_all(&out).await;
        // Keep the connection open until the test ends.
        std::future::pending::<()>().await;
    })
    .await;
    let config = config(RawConfig {
        stream_source: Some(vec![source.clone()]),
        stream_max_series: Some(MAX_SERIES),
        stream_max_bytes: Some(1 << 20),
        ..RawConfig::loopback()
    });
    let gateway = TestGateway::start(config).await;
    let families = scrape_until(&gateway, "every event to be folded or refused", |f| {
        let dropped: f64 = ["series_cap", "metadata_cap", "bytes_cap"]
            .iter()
            .filter_map(|reason| {
                value_of(
                    f,
                    "tether_stream_dropped_events_total",
                    &[("instance", &source), ("reason", reason)],
                )
            })
            .sum();
        let held = f
            .iter()
            .filter(|family| family.name.starts_with("endless_metric"))
            .count();
        // Every name sent is either held or refused.
        held as f64 + dropped >= N_NAMES as f64
    })
    .await;
    let held = families
        .iter()
        .filter(|family| family.name.starts_with("endless_metric"))
        .count();
    assert!(held <= MAX_SERIES, "{held} series held");
    let bytes = value_of(
        &families,
        "tether_stream_held_bytes",
        &[("instance", &source)],
    )
    .expect("bytes held are reported");
    assert!(bytes <= f64::from(1u32 << 20), "{bytes} bytes held");
    gateway.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stalled_peer_is_reported_down_and_counted() {
    let source = fake_stream_peer(|stream| async move {
        // Connected, and silent.
        let _held = stream;
        std::future::pending::<()>().await;
    })
    .await;
    let config = config(RawConfig {
        stream_source: Some(vec![source.clone()]),
        stream_stall_timeout_ms: Some(200),
        ..RawConfig::loopback()
    });
    let gateway = TestGateway::start(config).await;
    let families = scrape_until(&gateway, "the stall to be noticed", |f| {
        value_of(
            f,
            "tether_stream_failures_total",
            &[("instance", &source), ("reason", "stalled")],
        ) >= Some(1.0)
    })
    .await;
    assert_eq!(
        value_of(&families, "tether_stream_up", &[("instance", &source)]),
        Some(0.0)
    );
    gateway.stop().await;
}
