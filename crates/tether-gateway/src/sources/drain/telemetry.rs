//! A drain's own metrics, each labelled with the drain's path.

use std::sync::Arc;

use metrics::{Counter, Gauge, Histogram, Key, Label, Level, Metadata, Recorder, Unit};

use super::lines::{Batch, LineKind};

static METADATA: Metadata<'static> =
    Metadata::new(module_path!(), Level::INFO, Some(module_path!()));

/// How a drain request ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Outcome {
    Accepted,
    Duplicate,
    Unauthorized,
    Throttled,
    TooLarge,
    Timeout,
    BadRequest,
}

impl Outcome {
    const ALL: [Outcome; 7] = [
        Outcome::Accepted,
        Outcome::Duplicate,
        Outcome::Unauthorized,
        Outcome::Throttled,
        Outcome::TooLarge,
        Outcome::Timeout,
        Outcome::BadRequest,
    ];

    fn as_str(self) -> &'static str {
        match self {
            Outcome::Accepted => "accepted",
            Outcome::Duplicate => "duplicate",
            Outcome::Unauthorized => "unauthorized",
            Outcome::Throttled => "throttled",
            Outcome::TooLarge => "too_large",
            Outcome::Timeout => "timeout",
            Outcome::BadRequest => "bad_request",
        }
    }
}

/// Handles of one drain's metrics.
pub(crate) struct DrainTelemetry {
    recorder: Arc<dyn Recorder + Send + Sync>,
    drain: String,
    requests: Vec<(Outcome, Counter)>,
    lines: Vec<(LineKind, Counter)>,
    mismatches: Counter,
    series: Gauge,
    expired: Counter,
    batch_duration: Histogram,
}

impl std::fmt::Debug for DrainTelemetry {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("DrainTelemetry")
            .field("drain", &self.drain)
            .finish_non_exhaustive()
    }
}

impl DrainTelemetry {
    /// Describes and registers the metrics of the drain at `path`.
    pub(crate) fn new(recorder: Arc<dyn Recorder + Send + Sync>, path: &str) -> DrainTelemetry {
        let describe = |name: &'static str, unit: Unit, help: &'static str, kind: u8| {
            crate::telemetry::describe_on(recorder.as_ref(), name, unit, help, kind);
        };
        describe(
            "tether_drain_requests_total",
            Unit::Count,
            "Drain requests, by how they ended (a duplicate is a batch logplex sent again, answered 2xx and not applied).",
            0,
        );
        describe(
            "tether_drain_lines_total",
            Unit::Count,
            "Drain messages read, by kind (metrics, addon, dyno, router, other).",
            0,
        );
        describe(
            "tether_drain_rejected_lines_total",
            Unit::Count,
            "Drain lines, or metrics of a line, refused, by reason; the rest of the batch is read on.",
            0,
        );
        describe(
            "tether_drain_msg_count_mismatches_total",
            Unit::Count,
            "Drain batches whose Logplex-Msg-Count differs from the frames read.",
            0,
        );
        describe(
            "tether_drain_series",
            Unit::Count,
            "Series held from a drain's lines.",
            1,
        );
        describe(
            "tether_drain_series_expired_total",
            Unit::Count,
            "Drain series removed for not being updated within the series TTL.",
            0,
        );
        describe(
            "tether_drain_batch_duration_seconds",
            Unit::Seconds,
            "Time to read and apply one drain batch, once its body has arrived.",
            2,
        );
        let key = |name: &'static str, extra: Option<(&'static str, &'static str)>| {
            let mut labels = vec![Label::new("drain", path.to_owned())];
            if let Some((name, value)) = extra {
                labels.push(Label::new(name, value));
            }
            Key::from_parts(name, labels)
        };
        DrainTelemetry {
            requests: Outcome::ALL
                .iter()
                .map(|&o| {
                    let key = key("tether_drain_requests_total", Some(("outcome", o.as_str())));
                    (o, recorder.register_counter(&key, &METADATA))
                })
                .collect(),
            lines: LineKind::ALL
                .iter()
                .map(|&kind| {
                    let key = key("tether_drain_lines_total", Some(("kind", kind.as_str())));
                    (kind, recorder.register_counter(&key, &METADATA))
                })
                .collect(),
            mismatches: recorder.register_counter(
                &key("tether_drain_msg_count_mismatches_total", None),
                &METADATA,
            ),
            series: recorder.register_gauge(&key("tether_drain_series", None), &METADATA),
            expired: recorder
                .register_counter(&key("tether_drain_series_expired_total", None), &METADATA),
            batch_duration: recorder
                .register_histogram(&key("tether_drain_batch_duration_seconds", None), &METADATA),
            drain: path.to_owned(),
            recorder,
        }
    }

    pub(crate) fn request(&self, outcome: Outcome) {
        if let Some((_, counter)) = self.requests.iter().find(|(o, _)| *o == outcome) {
            counter.increment(1);
        }
    }

    /// Counts what a batch held.
    pub(crate) fn batch(&self, batch: &Batch, seconds: f64) {
        for (kind, counter) in &self.lines {
            let n = batch.lines(*kind);
            if n > 0 {
                counter.increment(n);
            }
        }
        for &(reason, n) in &batch.rejected {
            self.rejected(reason, n);
        }
        self.batch_duration.record(seconds);
    }

    /// Counts `n` lines refused for `reason`.
    pub(crate) fn rejected(&self, reason: &'static str, n: u64) {
        let key = Key::from_parts(
            "tether_drain_rejected_lines_total",
            vec![
                Label::new("drain", self.drain.clone()),
                Label::new("reason", reason),
            ],
        );
        self.recorder.register_counter(&key, &METADATA).increment(n);
    }

    pub(crate) fn mismatch(&self) {
        self.mismatches.increment(1);
    }

    #[allow(clippy::cast_precision_loss, reason = "counts far below 2^53")]
    pub(crate) fn held(&self, n_series: usize) {
        self.series.set(n_series as f64);
    }

    pub(crate) fn expired(&self, n: usize) {
        self.expired.increment(n as u64);
    }
}
