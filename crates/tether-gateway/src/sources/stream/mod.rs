//! Stream sources: the gateway dials a metric event stream (tether's
//! exporter or an unmodified metrics-exporter-tcp app), folds its events
//! with the one fold of `tether_proto::StreamFold` and serves the folded
//! series with `instance` set to the source address.
//!
//! One task per source reads frames and applies them to the fold under a
//! short lock. A scrape takes the families the fold last produced when
//! nothing changed since; otherwise it builds them on a blocking thread
//! (linear in the series held), within the scrape's deadline, and serves
//! the previous snapshot if that is not ready in time.
//!
//! While a source is disconnected only its own metrics are served
//! (`tether_stream_up{instance} 0`, failures by reason). Its fold is kept,
//! so counters of a source that sends increments continue where they were
//! when it comes back. A source that sends nothing for
//! `stream_stall_timeout_ms` is taken as stalled: reported down and
//! redialed. Failures are counted by reason and logged at warn at most
//! once per [`FAILURE_LOG_INTERVAL`] per source, at debug otherwise.

use std::collections::hash_map::RandomState;
use std::hash::BuildHasher;
use std::sync::Arc;
use std::time::{Duration, Instant};

use futures::future::BoxFuture;
use parking_lot::Mutex;
use tether_model::{Counter, Label, MetricFamily, MetricType, Series, TargetLabels, Value};
use tether_proto::{FoldLimits, StreamFold, decode_event};
use tether_tcp::{FramedConn, FramedError};
use tokio::net::TcpStream;
use tokio_util::sync::CancellationToken;

use crate::config::{
    DEFAULT_STREAM_MAX_BYTES, DEFAULT_STREAM_MAX_SERIES, DEFAULT_STREAM_STALL_TIMEOUT_MS,
    RawConfig, millis, positive_usize,
};
use crate::error::ConfigError;
use crate::sources::{Part, Scope, ScrapeRequest, Source, SourceStatus, StatusItem};
use crate::view::{Drops, Families, Origin};

/// Largest event frame accepted; events are a few hundred bytes at most.
const MAX_EVENT_FRAME_BYTES: usize = 1 << 20;
/// Metadata entries one source may hold (help and unit per name).
const MAX_METADATA_PER_SOURCE: usize = 10_000;
/// First reconnection delay, doubled per failed attempt up to
/// [`MAX_BACKOFF`], with up to a fifth more at random so that sources
/// restarted together do not redial together.
const FIRST_BACKOFF: Duration = Duration::from_millis(200);
/// Longest reconnection delay.
const MAX_BACKOFF: Duration = Duration::from_secs(30);
/// A source's failures are logged at warn at most this often; the others
/// at debug, and all are counted.
pub(crate) const FAILURE_LOG_INTERVAL: Duration = Duration::from_secs(60);

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

/// Why a connection to a source ended; each is a `reason` of
/// `tether_stream_failures_total`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Failure {
    /// The source could not be dialed.
    Connect,
    /// Reading failed.
    Read,
    /// The source closed the stream.
    Closed,
    /// A frame was malformed or too large.
    InvalidFrame,
    /// A frame was not an event.
    InvalidEvent,
    /// Nothing arrived for the stall timeout.
    Stalled,
}

impl Failure {
    const ALL: [Failure; 6] = [
        Failure::Connect,
        Failure::Read,
        Failure::Closed,
        Failure::InvalidFrame,
        Failure::InvalidEvent,
        Failure::Stalled,
    ];

    fn as_str(self) -> &'static str {
        match self {
            Failure::Connect => "connect",
            Failure::Read => "read",
            Failure::Closed => "closed",
            Failure::InvalidFrame => "invalid_frame",
            Failure::InvalidEvent => "invalid_event",
            Failure::Stalled => "stalled",
        }
    }
}

impl crate::sources::Snapshotted for State {
    fn version(&self) -> u64 {
        self.fold.version()
    }

    fn raw_families(&self) -> Vec<MetricFamily> {
        self.fold.families()
    }

    fn snapshot(&mut self) -> &mut Option<(u64, Arc<Families>)> {
        &mut self.snapshot
    }
}

/// What one source holds, behind its lock.
#[derive(Debug)]
struct State {
    fold: StreamFold,
    connected: bool,
    failures: [u64; Failure::ALL.len()],
    /// The families last built, with the fold version they were built at.
    snapshot: Option<(u64, Arc<Families>)>,
    /// When a failure was last logged at warn, and how many were not since.
    last_warned: Option<Instant>,
    suppressed: u64,
}

/// One configured stream source.
#[derive(Debug)]
pub(crate) struct StreamSource {
    address: String,
    target: Arc<TargetLabels>,
    stall_timeout: Duration,
    /// Guarded by a mutex: the reader applies a batch of events, a scrape
    /// copies counters or builds families; no section awaits.
    state: Arc<Mutex<State>>,
}

impl StreamSource {
    pub(crate) fn new(address: String, settings: &StreamSettings) -> StreamSource {
        let limits = FoldLimits {
            max_series: settings.max_series,
            max_metadata: MAX_METADATA_PER_SOURCE,
            max_bytes: settings.max_bytes,
        };
        StreamSource {
            target: Arc::new(TargetLabels::new(vec![Label::new(
                "instance",
                address.clone(),
            )])),
            address,
            stall_timeout: settings.stall_timeout,
            state: Arc::new(Mutex::new(State {
                fold: StreamFold::new(limits),
                connected: false,
                failures: [0; Failure::ALL.len()],
                snapshot: None,
                last_warned: None,
                suppressed: 0,
            })),
        }
    }

    /// Connects, reads and reconnects until `shutdown`.
    async fn read_until(self: Arc<Self>, shutdown: CancellationToken) {
        let mut attempt: u32 = 0;
        let jitter = RandomState::new();
        loop {
            let failure = tokio::select! {
                failure = self.session(&mut attempt) => failure,
                () = shutdown.cancelled() => return,
            };
            self.failed(failure);
            attempt = attempt.saturating_add(1);
            let delay = FIRST_BACKOFF
                .saturating_mul(1 << attempt.min(10).saturating_sub(1))
                .min(MAX_BACKOFF);
            let fifth = u64::try_from(delay.as_millis() / 5).unwrap_or(0).max(1);
            let delay = delay + Duration::from_millis(jitter.hash_one(attempt) % fifth);
            tokio::select! {
                () = tokio::time::sleep(delay) => {}
                () = shutdown.cancelled() => return,
            }
        }
    }

    /// Counts a failure and logs it, at warn at most once per interval.
    fn failed(&self, (failure, detail): (Failure, String)) {
        let mut state = self.state.lock();
        state.connected = false;
        if let Some(count) = state.failures.get_mut(failure as usize) {
            *count += 1;
        }
        let now = Instant::now();
        let warn = state
            .last_warned
            .is_none_or(|at| now.duration_since(at) >= FAILURE_LOG_INTERVAL);
        if warn {
            let suppressed = std::mem::take(&mut state.suppressed);
            state.last_warned = Some(now);
            drop(state);
            tracing::warn!(source = %self.address, reason = failure.as_str(), %detail, suppressed, "stream source failed; redialing");
        } else {
            state.suppressed += 1;
            drop(state);
            tracing::debug!(source = %self.address, reason = failure.as_str(), %detail, "stream source failed; redialing");
        }
    }

    /// One connection; returns why it ended.
    async fn session(&self, attempt: &mut u32) -> (Failure, String) {
        let stream = match TcpStream::connect(self.address.as_str()).await {
            Ok(stream) => stream,
            Err(error) => return (Failure::Connect, error.to_string()),
        };
        {
            let mut state = self.state.lock();
            state.connected = true;
            state.fold.reconnected();
        }
        *attempt = 0;
        tracing::info!(source = %self.address, "stream source connected");
        let mut conn = FramedConn::new(stream);
        loop {
            let frame =
                tokio::time::timeout(self.stall_timeout, conn.read_frame(MAX_EVENT_FRAME_BYTES))
                    .await;
            let body = match frame {
                Err(_) => {
                    return (
                        Failure::Stalled,
                        format!("nothing for {} ms", self.stall_timeout.as_millis()),
                    );
                }
                Ok(Ok(Some(body))) => body,
                Ok(Ok(None)) => {
                    return (Failure::Closed, "the source closed the stream".to_owned());
                }
                Ok(Err(FramedError::Io(error))) => return (Failure::Read, error.to_string()),
                Ok(Err(FramedError::Frame(error))) => {
                    return (Failure::InvalidFrame, error.to_string());
                }
            };
            match decode_event(body) {
                Ok(event) => {
                    if let Some(kind) = event.kind {
                        self.state.lock().fold.apply(kind);
                    }
                }
                Err(error) => return (Failure::InvalidEvent, error.to_string()),
            }
        }
    }

    /// The source's families for a scrape due by `deadline`: the last
    /// snapshot when the fold has not changed since, else a new one built
    /// off the runtime, or the last one if the new one is late.
    async fn families(&self, deadline: tokio::time::Instant) -> Arc<Families> {
        crate::sources::snapshot_families(&self.state, Some(Arc::clone(&self.target)), deadline)
            .await
    }

    /// The source's own metrics: up, failures, events dropped, bytes held.
    fn own_families(&self) -> Vec<MetricFamily> {
        let state = self.state.lock();
        let instance = vec![Label::new("instance", self.address.clone())];
        let with = |extra: (&'static str, &'static str)| {
            let mut labels = instance.clone();
            labels.push(Label::new(extra.0, extra.1));
            labels
        };
        #[allow(clippy::cast_precision_loss, reason = "counts far below 2^53")]
        let counter = |labels: Vec<Label>, n: u64| Series {
            labels,
            value: Value::Counter(Counter {
                total: n as f64,
                created: None,
                exemplar: None,
            }),
            timestamp_ms: None,
        };
        let mut up = MetricFamily::new("tether_stream_up", MetricType::Gauge);
        up.help = Some(
            "Whether the gateway is connected to the metric event stream and hearing from it (1) or not (0).".to_owned(),
        );
        up.series.push(Series {
            labels: instance.clone(),
            value: Value::Single(if state.connected { 1.0 } else { 0.0 }),
            timestamp_ms: None,
        });
        let mut failures = MetricFamily::new("tether_stream_failures_total", MetricType::Counter);
        failures.help = Some(
            "Connections to the stream that ended, by reason: connect, read, closed, invalid_frame, invalid_event, stalled.".to_owned(),
        );
        for (failure, n) in Failure::ALL.iter().zip(state.failures) {
            failures
                .series
                .push(counter(with(("reason", failure.as_str())), n));
        }
        let dropped_counts = state.fold.dropped();
        let mut dropped =
            MetricFamily::new("tether_stream_dropped_events_total", MetricType::Counter);
        dropped.help = Some(
            "Events of the stream left out, by reason: series_cap, metadata_cap and bytes_cap (the source's limits), type_change, unknown_operation.".to_owned(),
        );
        for (reason, n) in [
            ("series_cap", dropped_counts.series_cap),
            ("metadata_cap", dropped_counts.metadata_cap),
            ("bytes_cap", dropped_counts.bytes_cap),
            ("type_change", dropped_counts.type_change),
            ("unknown_operation", dropped_counts.unknown_operation),
        ] {
            dropped.series.push(counter(with(("reason", reason)), n));
        }
        let mut bytes = MetricFamily::new("tether_stream_held_bytes", MetricType::Gauge);
        bytes.help = Some(
            "Bytes of names, labels and help texts the stream source holds (capped by --stream-max-bytes).".to_owned(),
        );
        #[allow(clippy::cast_precision_loss, reason = "sizes far below 2^53")]
        bytes.series.push(Series {
            labels: instance,
            value: Value::Single(state.fold.bytes() as f64),
            timestamp_ms: None,
        });
        vec![up, failures, dropped, bytes]
    }
}

impl Source for StreamSource {
    fn kind(&self) -> &'static str {
        "stream"
    }

    fn run(self: Arc<Self>, shutdown: CancellationToken) -> BoxFuture<'static, ()> {
        Box::pin(self.read_until(shutdown))
    }

    fn collect(&self, request: ScrapeRequest) -> BoxFuture<'_, Vec<Part>> {
        Box::pin(async move {
            if request.scope != Scope::All {
                return Vec::new();
            }
            let connected = self.state.lock().connected;
            let mut parts = Vec::with_capacity(2);
            if connected {
                parts.push(Part {
                    families: self.families(request.deadline).await,
                    target: Some(Arc::clone(&self.target)),
                });
            }
            let mut drops = Drops::default();
            let own = Families::normalize(self.own_families(), None, Origin::Gateway, &mut drops);
            parts.push(Part {
                families: Arc::new(own),
                target: None,
            });
            parts
        })
    }

    fn status(&self) -> SourceStatus {
        let state = self.state.lock();
        SourceStatus {
            kind: "stream",
            items: vec![StatusItem {
                id: self.address.clone(),
                state: if state.connected { "connected" } else { "down" },
                details: vec![
                    ("series", state.fold.series().len().to_string()),
                    ("bytes", state.fold.bytes().to_string()),
                    ("dropped_events", state.fold.dropped().events().to_string()),
                ],
            }],
        }
    }
}
