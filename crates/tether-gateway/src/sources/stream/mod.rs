//! Stream sources: the gateway dials a metric event stream (tether's
//! exporter or an unmodified metrics-exporter-tcp app), folds its events
//! into series and serves them with `instance` set to the source address.
//!
//! One task per source reads frames and updates the source's state under a
//! short lock; scrapes read the state under the same lock. While a source
//! is disconnected only `tether_stream_up{instance} 0` is served; its state
//! is kept, so counters of a source that sends increments continue where
//! they were when it comes back.

use std::collections::BTreeMap;
use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use bytes::BytesMut;
use parking_lot::Mutex;
use tether_model::{
    Bucket, Counter, Histogram, Label, MetricFamily, MetricType, Series, TargetLabels, Value,
};
use tether_proto::{EventKind, EventMetricType, FrameDecoder, Operation, decode_event};
use tokio::io::AsyncReadExt;
use tokio::net::TcpStream;
use tokio_util::sync::CancellationToken;

use crate::config::{
    DEFAULT_STREAM_MAX_BYTES, DEFAULT_STREAM_MAX_SERIES, DEFAULT_STREAM_STALL_TIMEOUT_MS,
    RawConfig, millis, positive_usize,
};
use crate::error::ConfigError;
use crate::sources::{Part, ScrapeRequest, Scope, Source, SourceStatus, StatusItem};
use crate::view::{Drops, Families, Origin};

/// The stream sources' section of the configuration.
#[derive(Debug, Clone)]
pub(crate) struct StreamSettings {
    /// The streams to read, as `host:port`, each once.
    pub(crate) addresses: Vec<String>,
    /// Time a source may send nothing before it is reported down.
    pub(crate) stall_timeout: Duration,
    /// Most series one source may hold.
    pub(crate) max_series: usize,
    /// Most bytes one source may hold.
    pub(crate) max_bytes: usize,
}

impl StreamSettings {
    /// Validates the stream settings of `raw`.
    pub(crate) fn from_raw(raw: &RawConfig) -> Result<StreamSettings, ConfigError> {
        let mut addresses: Vec<String> = Vec::new();
        for source in raw.stream_source.iter().flatten() {
            let valid = source.rsplit_once(':').is_some_and(|(host, port)| {
                !host.is_empty() && port.parse::<u16>().is_ok_and(|p| p != 0)
            });
            if !valid {
                return Err(ConfigError::Invalid {
                    key: "stream_source",
                    message: format!("\"{source}\" is not HOST:PORT, such as 127.0.0.1:5000"),
                });
            }
            // One reader per address: two would serve the same series twice.
            if !addresses.contains(source) {
                addresses.push(source.clone());
            }
        }
        Ok(StreamSettings {
            addresses,
            stall_timeout: millis(
                "stream_stall_timeout_ms",
                raw.stream_stall_timeout_ms,
                DEFAULT_STREAM_STALL_TIMEOUT_MS,
            )?,
            max_series: positive_usize(
                "stream_max_series",
                raw.stream_max_series.unwrap_or(DEFAULT_STREAM_MAX_SERIES),
            )?,
            max_bytes: positive_usize(
                "stream_max_bytes",
                raw.stream_max_bytes.unwrap_or(DEFAULT_STREAM_MAX_BYTES),
            )?,
        })
    }
}

/// Largest event frame accepted; events are a few hundred bytes at most.
const MAX_EVENT_FRAME_BYTES: usize = 1 << 20;
/// Most series one source may create; events for new series past it are
/// dropped and counted, so a source cannot grow the gateway's memory
/// without bound.
pub(crate) const MAX_SERIES_PER_SOURCE: usize = 100_000;
/// First reconnection delay, doubled up to [`MAX_BACKOFF`].
const FIRST_BACKOFF: Duration = Duration::from_millis(200);
/// Longest reconnection delay.
const MAX_BACKOFF: Duration = Duration::from_secs(30);
/// Buckets for histograms folded from raw samples: Prometheus' defaults.
const BUCKETS: [f64; 11] = [
    0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0,
];

#[derive(Debug, Clone, Default)]
struct Meta {
    kind: Option<MetricType>,
    unit: Option<String>,
    help: Option<String>,
}

#[derive(Debug, Clone)]
enum Folded {
    Counter(u64),
    Gauge(f64),
    Histogram {
        buckets: [u64; BUCKETS.len()],
        count: u64,
        sum: f64,
    },
}

/// What one source has sent, folded.
#[derive(Debug, Default)]
struct SourceState {
    connected: bool,
    meta: HashMap<String, Meta>,
    series: BTreeMap<(String, Vec<(String, String)>), Folded>,
    dropped_events: u64,
}

impl SourceState {
    fn apply(&mut self, kind: EventKind) {
        match kind {
            EventKind::Metadata(metadata) => {
                let kind = match EventMetricType::try_from(metadata.metric_type) {
                    Ok(EventMetricType::Counter) => Some(MetricType::Counter),
                    Ok(EventMetricType::Gauge) => Some(MetricType::Gauge),
                    Ok(EventMetricType::Histogram) => Some(MetricType::Histogram),
                    Err(_) => None,
                };
                let meta = self.meta.entry(metadata.name).or_default();
                meta.kind = kind.or(meta.kind);
                meta.unit = metadata.unit.filter(|u| !u.is_empty());
                meta.help = metadata.description.filter(|d| !d.is_empty());
            }
            EventKind::Metric(metric) => {
                let Some(operation) = metric.operation else {
                    return;
                };
                let key = (metric.name, metric.labels.into_iter().collect::<Vec<_>>());
                let n_series = self.series.len();
                let entry = match self.series.get_mut(&key) {
                    Some(entry) => entry,
                    None if n_series >= MAX_SERIES_PER_SOURCE => {
                        self.dropped_events += 1;
                        return;
                    }
                    None => {
                        let initial = match operation {
                            Operation::IncrementCounter(_) | Operation::SetCounter(_) => {
                                Folded::Counter(0)
                            }
                            Operation::RecordHistogram(_) => Folded::Histogram {
                                buckets: [0; BUCKETS.len()],
                                count: 0,
                                sum: 0.0,
                            },
                            _ => Folded::Gauge(0.0),
                        };
                        self.series.entry(key).or_insert(initial)
                    }
                };
                match (entry, operation) {
                    (Folded::Counter(total), Operation::IncrementCounter(n)) => {
                        *total = total.saturating_add(n);
                    }
                    (Folded::Counter(total), Operation::SetCounter(n)) => *total = n,
                    (Folded::Gauge(value), Operation::IncrementGauge(d)) => *value += d,
                    (Folded::Gauge(value), Operation::DecrementGauge(d)) => *value -= d,
                    (Folded::Gauge(value), Operation::SetGauge(v)) => *value = v,
                    (
                        Folded::Histogram {
                            buckets,
                            count,
                            sum,
                        },
                        Operation::RecordHistogram(v),
                    ) => {
                        for (bound, bucket) in BUCKETS.iter().zip(buckets.iter_mut()) {
                            if v <= *bound {
                                *bucket += 1;
                            }
                        }
                        *count += 1;
                        *sum += v;
                    }
                    // An operation of another kind than the series holds:
                    // the source changed a metric's type; ignore it.
                    _ => self.dropped_events += 1,
                }
            }
        }
    }

    /// The folded series as families, names sanitized for Prometheus.
    fn families(&self) -> Vec<MetricFamily> {
        let mut families: BTreeMap<String, MetricFamily> = BTreeMap::new();
        for ((name, labels), folded) in &self.series {
            let metric_type = match folded {
                Folded::Counter(_) => MetricType::Counter,
                Folded::Gauge(_) => MetricType::Gauge,
                Folded::Histogram { .. } => MetricType::Histogram,
            };
            let family_name = sanitize_metric_name(name);
            let family = families.entry(family_name.clone()).or_insert_with(|| {
                let meta = self.meta.get(name).cloned().unwrap_or_default();
                MetricFamily {
                    name: family_name,
                    metric_type,
                    help: meta.help,
                    unit: meta.unit,
                    series: Vec::new(),
                }
            });
            if family.metric_type != metric_type {
                continue;
            }
            let mut series_labels: Vec<Label> = Vec::with_capacity(labels.len());
            for (label_name, value) in labels {
                let label_name = sanitize_label_name(label_name);
                if !series_labels.iter().any(|l| l.name == label_name) {
                    series_labels.push(Label::new(label_name, value.clone()));
                }
            }
            #[allow(
                clippy::cast_precision_loss,
                reason = "counts beyond 2^53 lose precision, as in any Prometheus exposition"
            )]
            let value = match folded {
                Folded::Counter(total) => Value::Counter(Counter {
                    total: *total as f64,
                    created: None,
                    exemplar: None,
                }),
                Folded::Gauge(value) => Value::Single(*value),
                Folded::Histogram {
                    buckets,
                    count,
                    sum,
                } => Value::Histogram(Histogram {
                    buckets: BUCKETS
                        .iter()
                        .zip(buckets)
                        .map(|(bound, n)| Bucket {
                            upper_bound: *bound,
                            count: *n as f64,
                            exemplar: None,
                        })
                        .chain(std::iter::once(Bucket {
                            upper_bound: f64::INFINITY,
                            count: *count as f64,
                            exemplar: None,
                        }))
                        .collect(),
                    count: Some(*count as f64),
                    sum: Some(*sum),
                    created: None,
                }),
            };
            // Two raw names may sanitize to one series; keep the first.
            if !family.series.iter().any(|s| s.labels == series_labels) {
                family.series.push(Series {
                    labels: series_labels,
                    value,
                    timestamp_ms: None,
                });
            }
        }
        families.into_values().collect()
    }
}

/// `[a-zA-Z_:][a-zA-Z0-9_:]*`: other characters (the `.` of metrics-rs
/// names) become `_`.
fn sanitize_metric_name(name: &str) -> String {
    let mut out: String = name
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || c == '_' || c == ':' {
                c
            } else {
                '_'
            }
        })
        .collect();
    if out.is_empty() || out.starts_with(|c: char| c.is_ascii_digit()) {
        out.insert(0, '_');
    }
    out
}

/// `[a-zA-Z_][a-zA-Z0-9_]*`, never `__`-prefixed (reserved).
fn sanitize_label_name(name: &str) -> String {
    let mut out: String = name
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || c == '_' {
                c
            } else {
                '_'
            }
        })
        .collect();
    if out.is_empty() || out.starts_with(|c: char| c.is_ascii_digit()) {
        out.insert(0, '_');
    }
    while out.starts_with("__") {
        out.remove(0);
    }
    out
}

/// One configured stream source and what it has sent.
#[derive(Debug)]
pub(crate) struct StreamSource {
    address: String,
    target: Arc<TargetLabels>,
    state: Mutex<SourceState>,
}

impl StreamSource {
    pub(crate) fn new(address: String, _settings: &StreamSettings) -> StreamSource {
        StreamSource {
            target: Arc::new(TargetLabels::new(vec![Label::new(
                "instance",
                address.clone(),
            )])),
            address,
            state: Mutex::new(SourceState::default()),
        }
    }

    /// Whether the source is connected, and its families (empty while it
    /// is not).
    pub(crate) fn snapshot(&self) -> (bool, Vec<MetricFamily>) {
        let state = self.state.lock();
        if state.connected {
            (true, state.families())
        } else {
            (false, Vec::new())
        }
    }

    /// Events dropped so far (series cap, type changes).
    pub(crate) fn dropped_events(&self) -> u64 {
        self.state.lock().dropped_events
    }

    /// Connects, reads and reconnects until `shutdown`.
    pub(crate) async fn run(self: Arc<Self>, shutdown: CancellationToken) {
        let mut attempt: u32 = 0;
        loop {
            let session = self.session(&mut attempt);
            let reason = tokio::select! {
                reason = session => reason,
                () = shutdown.cancelled() => return,
            };
            self.state.lock().connected = false;
            attempt = attempt.saturating_add(1);
            let delay = FIRST_BACKOFF
                .saturating_mul(1 << attempt.min(10).saturating_sub(1))
                .min(MAX_BACKOFF);
            tracing::debug!(source = %self.address, %reason, ?delay, "stream source disconnected");
            tokio::select! {
                () = tokio::time::sleep(delay) => {}
                () = shutdown.cancelled() => return,
            }
        }
    }

    /// One connection; returns why it ended.
    async fn session(&self, attempt: &mut u32) -> String {
        let mut stream = match TcpStream::connect(self.address.as_str()).await {
            Ok(stream) => stream,
            Err(error) => return format!("connect: {error}"),
        };
        self.state.lock().connected = true;
        *attempt = 0;
        tracing::info!(source = %self.address, "stream source connected");
        let mut buf = BytesMut::with_capacity(16 * 1024);
        let mut decoder = FrameDecoder::new(MAX_EVENT_FRAME_BYTES);
        loop {
            // Decode everything buffered, then take the lock once for it.
            let mut events = Vec::new();
            loop {
                match decoder.decode(&mut buf) {
                    Ok(Some(body)) => match decode_event(body) {
                        Ok(event) => events.extend(event.kind),
                        Err(error) => return format!("invalid event: {error}"),
                    },
                    Ok(None) => break,
                    Err(error) => return format!("invalid frame: {error}"),
                }
            }
            if !events.is_empty() {
                let mut state = self.state.lock();
                for event in events {
                    state.apply(event);
                }
            }
            match stream.read_buf(&mut buf).await {
                Ok(0) => return "the source closed the stream".to_owned(),
                Ok(_) => {}
                Err(error) => return format!("read: {error}"),
            }
        }
    }
}

impl Source for StreamSource {
    fn kind(&self) -> &'static str {
        "stream"
    }

    fn run(self: Arc<Self>, shutdown: CancellationToken) -> futures::future::BoxFuture<'static, ()> {
        Box::pin(StreamSource::run(self, shutdown))
    }

    fn collect(&self, request: ScrapeRequest) -> futures::future::BoxFuture<'_, Vec<Part>> {
        Box::pin(async move {
            if request.scope != Scope::All {
                return Vec::new();
            }
            let (connected, families) = self.snapshot();
            let mut drops = Drops::default();
            let own = Families::normalize(
                source_families(&[(connected, self)]).into(),
                None,
                Origin::Gateway,
                &mut drops,
            );
            let families = Families::normalize(families, Some(&self.target), Origin::Peer, &mut drops);
            vec![
                Part {
                    families: Arc::new(families),
                    target: Some(Arc::clone(&self.target)),
                },
                Part {
                    families: Arc::new(own),
                    target: None,
                },
            ]
        })
    }

    fn status(&self) -> SourceStatus {
        let state = self.state.lock();
        SourceStatus {
            kind: "stream",
            items: vec![StatusItem {
                id: self.address.clone(),
                state: if state.connected { "connected" } else { "down" },
                details: vec![("series", state.series.len().to_string())],
            }],
        }
    }
}

/// `tether_stream_up{instance}` and
/// `tether_stream_dropped_events_total{instance}` for every source.
pub(crate) fn source_families(sources: &[(bool, &StreamSource)]) -> [MetricFamily; 2] {
    let mut up = MetricFamily::new("tether_stream_up", MetricType::Gauge);
    up.help = Some(
        "Whether the gateway is connected to the metric event stream (1) or not (0).".to_owned(),
    );
    let mut dropped = MetricFamily::new("tether_stream_dropped_events_total", MetricType::Counter);
    dropped.help = Some(format!(
        "Events of the stream left out: series past the cap of {MAX_SERIES_PER_SOURCE} per source, or operations that changed a metric's type."
    ));
    for (connected, source) in sources {
        let labels = vec![Label::new("instance", source.address.clone())];
        up.series.push(Series {
            labels: labels.clone(),
            value: Value::Single(if *connected { 1.0 } else { 0.0 }),
            timestamp_ms: None,
        });
        #[allow(clippy::cast_precision_loss, reason = "event counts far below 2^53")]
        dropped.series.push(Series {
            labels,
            value: Value::Counter(Counter {
                total: source.dropped_events() as f64,
                created: None,
                exemplar: None,
            }),
            timestamp_ms: None,
        });
    }
    [up, dropped]
}

#[cfg(test)]
mod tests {
    use super::*;
    use tether_proto::{EventMetadata, EventMetric};

    fn metric(name: &str, labels: &[(&str, &str)], operation: Operation) -> EventKind {
        EventKind::Metric(EventMetric {
            name: name.to_owned(),
            timestamp: None,
            labels: labels
                .iter()
                .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
                .collect(),
            operation: Some(operation),
        })
    }

    #[test]
    fn events_fold_into_series_with_metadata() {
        let mut state = SourceState::default();
        state.apply(EventKind::Metadata(EventMetadata {
            name: "http.requests".into(),
            metric_type: EventMetricType::Counter.into(),
            unit: Some("count".into()),
            description: Some("Requests.".into()),
        }));
        state.apply(metric(
            "http.requests",
            &[("code", "200")],
            Operation::IncrementCounter(3),
        ));
        state.apply(metric(
            "http.requests",
            &[("code", "200")],
            Operation::IncrementCounter(4),
        ));
        state.apply(metric("queue", &[], Operation::SetGauge(5.0)));
        state.apply(metric("queue", &[], Operation::DecrementGauge(2.0)));
        state.apply(metric("latency", &[], Operation::RecordHistogram(0.3)));
        state.apply(metric("latency", &[], Operation::RecordHistogram(20.0)));
        // A type change is ignored and counted.
        state.apply(metric("queue", &[], Operation::IncrementCounter(1)));
        assert_eq!(state.dropped_events, 1);
        let families = state.families();
        let names: Vec<&str> = families.iter().map(|f| f.name.as_str()).collect();
        assert_eq!(names, ["http_requests", "latency", "queue"]);
        assert_eq!(families[0].help.as_deref(), Some("Requests."));
        assert_eq!(
            families[0].series[0].value,
            Value::Counter(Counter {
                total: 7.0,
                created: None,
                exemplar: None
            })
        );
        assert_eq!(families[2].series[0].value, Value::Single(3.0));
        let Value::Histogram(histogram) = &families[1].series[0].value else {
            panic!("latency is a histogram");
        };
        assert_eq!(histogram.count, Some(2.0));
        assert_eq!(
            histogram
                .buckets
                .iter()
                .find(|b| b.upper_bound == 0.5)
                .map(|b| b.count),
            Some(1.0)
        );
        assert_eq!(histogram.buckets.last().map(|b| b.count), Some(2.0));
        // The folded output is a valid exposition.
        let mut out = Vec::new();
        tether_model::render(&families, tether_model::Format::Text, &mut out);
        tether_model::parse(&out, tether_model::Format::Text).expect("valid");
    }

    #[test]
    fn set_counter_replaces_and_the_series_cap_holds() {
        let mut state = SourceState::default();
        state.apply(metric("c", &[], Operation::IncrementCounter(10)));
        state.apply(metric("c", &[], Operation::SetCounter(4)));
        assert_eq!(
            state.families()[0].series[0].value,
            Value::Counter(Counter {
                total: 4.0,
                created: None,
                exemplar: None
            })
        );
        for i in 0..MAX_SERIES_PER_SOURCE + 10 {
            state.apply(metric(
                "g",
                &[("i", &i.to_string())],
                Operation::SetGauge(1.0),
            ));
        }
        assert_eq!(state.series.len(), MAX_SERIES_PER_SOURCE);
        assert_eq!(state.dropped_events, 11);
    }

    #[test]
    fn names_are_sanitized() {
        assert_eq!(
            sanitize_metric_name("http.server-requests"),
            "http_server_requests"
        );
        assert_eq!(sanitize_metric_name("9lives"), "_9lives");
        assert_eq!(sanitize_label_name("__reserved"), "_reserved");
        assert_eq!(sanitize_label_name("a.b"), "a_b");
    }
}
