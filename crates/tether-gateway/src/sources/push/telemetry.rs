//! The push source's own metrics.

use std::time::Duration;

use metrics::{Counter, Gauge, Histogram, Key, Label, Level, Metadata, Recorder, Unit};

use super::refusal::Reason;

static METADATA: Metadata<'static> =
    Metadata::new(module_path!(), Level::INFO, Some(module_path!()));

/// Handles of every push metric.
#[derive(Debug)]
pub(crate) struct PushTelemetry {
    accepted: Counter,
    refused: Vec<(Reason, Counter)>,
    groups: Gauge,
    series: Gauge,
    commits: Counter,
    commit_failures: Counter,
    commit_duration: Histogram,
    batch_size: Histogram,
    rows_skipped: Counter,
    stores_moved_aside: Counter,
}

impl PushTelemetry {
    /// Describes and registers every metric on `recorder`.
    pub(crate) fn new(recorder: &dyn Recorder) -> PushTelemetry {
        let describe = |name: &'static str, unit: Unit, help: &'static str, kind: u8| {
            crate::telemetry::describe_on(recorder, name, unit, help, kind);
        };
        describe(
            "tether_pushes_accepted_total",
            Unit::Count,
            "Pushgateway-API requests (PUT, POST, DELETE, wipe) applied and on disk.",
            0,
        );
        describe(
            "tether_push_refused_total",
            Unit::Count,
            "Pushgateway-API requests refused, by reason.",
            0,
        );
        describe("tether_push_groups", Unit::Count, "Push groups held.", 1);
        describe(
            "tether_push_series",
            Unit::Count,
            "Series held in push groups.",
            1,
        );
        describe(
            "tether_push_commits_total",
            Unit::Count,
            "Transactions of the push store (each a batch of requests, fsync'd).",
            0,
        );
        describe(
            "tether_push_commit_failures_total",
            Unit::Count,
            "Transactions of the push store that failed (disk full, I/O error); their requests got 503.",
            0,
        );
        describe(
            "tether_push_commit_duration_seconds",
            Unit::Seconds,
            "Time to write and fsync one batch of the push store.",
            2,
        );
        describe(
            "tether_push_commit_batch_requests",
            Unit::Count,
            "Requests per push store transaction.",
            2,
        );
        describe(
            "tether_push_store_rows_skipped_total",
            Unit::Count,
            "Rows of the push store that did not decode when it was opened.",
            0,
        );
        describe(
            "tether_push_store_moved_aside_total",
            Unit::Count,
            "Unreadable push store files moved aside at start.",
            0,
        );
        let key = |name: &'static str, labels: Vec<Label>| Key::from_parts(name, labels);
        let counter = |name: &'static str| recorder.register_counter(&key(name, vec![]), &METADATA);
        let gauge = |name: &'static str| recorder.register_gauge(&key(name, vec![]), &METADATA);
        let histogram =
            |name: &'static str| recorder.register_histogram(&key(name, vec![]), &METADATA);
        PushTelemetry {
            accepted: counter("tether_pushes_accepted_total"),
            refused: Reason::ALL
                .iter()
                .map(|&reason| {
                    (
                        reason,
                        recorder.register_counter(
                            &key(
                                "tether_push_refused_total",
                                vec![Label::new("reason", reason.as_str())],
                            ),
                            &METADATA,
                        ),
                    )
                })
                .collect(),
            groups: gauge("tether_push_groups"),
            series: gauge("tether_push_series"),
            commits: counter("tether_push_commits_total"),
            commit_failures: counter("tether_push_commit_failures_total"),
            commit_duration: histogram("tether_push_commit_duration_seconds"),
            batch_size: histogram("tether_push_commit_batch_requests"),
            rows_skipped: counter("tether_push_store_rows_skipped_total"),
            stores_moved_aside: counter("tether_push_store_moved_aside_total"),
        }
    }

    pub(crate) fn accepted(&self) {
        self.accepted.increment(1);
    }

    pub(crate) fn refused(&self, reason: Reason) {
        if let Some((_, counter)) = self.refused.iter().find(|(r, _)| *r == reason) {
            counter.increment(1);
        }
    }

    pub(crate) fn set_held(&self, n_groups: usize, n_series: usize) {
        self.groups.set(n_groups as f64);
        self.series.set(n_series as f64);
    }

    pub(crate) fn commit(&self, elapsed: Duration, n_requests: usize, ok: bool) {
        if ok {
            self.commits.increment(1);
        } else {
            self.commit_failures.increment(1);
        }
        self.commit_duration.record(elapsed.as_secs_f64());
        self.batch_size.record(n_requests as f64);
    }

    pub(crate) fn opened(&self, rows_skipped: usize, moved_aside: bool) {
        self.rows_skipped.increment(rows_skipped as u64);
        if moved_aside {
            self.stores_moved_aside.increment(1);
        }
    }
}
