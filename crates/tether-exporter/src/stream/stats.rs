//! The stream server's own metrics: clients, refusals, drops, bytes.
//!
//! They are plain atomics rather than `metrics` handles, so that they work
//! without a global recorder and never feed back into the stream they
//! describe; [`Stats::families`] exports them with every scrape.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use tether_model::{Counter, Label, MetricFamily, MetricType, Series, Value};

use crate::registry::Kind;

/// A snapshot of the stream server's counters, from
/// [`ExporterHandle::stream_stats`](crate::ExporterHandle::stream_stats).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
#[non_exhaustive]
pub struct StreamStats {
    /// Clients connected now.
    pub clients: u64,
    /// Clients accepted since start.
    pub clients_accepted: u64,
    /// Clients refused because `max_stream_clients` were connected.
    pub clients_refused: u64,
    /// Clients disconnected because a write made no progress in time.
    pub clients_timed_out: u64,
    /// Events dropped from a slow client's full queue (oldest first).
    pub events_dropped_client_queue: u64,
    /// Histogram samples dropped because a histogram's sample buffer was
    /// full when recorded (newest dropped).
    pub samples_dropped: u64,
    /// Times a client was sent every current value again after it lost events.
    pub resyncs: u64,
    /// Events written to clients' sockets.
    pub events_written: u64,
    /// Bytes written to clients' sockets.
    pub bytes_written: u64,
    /// Failed `accept` calls other than a peer's reset.
    pub accept_errors: u64,
}

/// The live counters behind [`StreamStats`].
#[derive(Debug, Default)]
pub(crate) struct Stats {
    pub(crate) clients: AtomicU64,
    pub(crate) clients_accepted: AtomicU64,
    pub(crate) clients_refused: AtomicU64,
    pub(crate) clients_timed_out: AtomicU64,
    pub(crate) events_dropped_client_queue: AtomicU64,
    pub(crate) resyncs: AtomicU64,
    pub(crate) events_written: AtomicU64,
    pub(crate) bytes_written: AtomicU64,
    /// Shared with the listener's recorder, which counts failed accepts
    /// into it (`server.rs`).
    pub(crate) accept_errors: Arc<AtomicU64>,
}

pub(crate) const CLIENTS: &str = "tether_exporter_stream_clients";
pub(crate) const CLIENTS_ACCEPTED: &str = "tether_exporter_stream_clients_accepted_total";
pub(crate) const CLIENTS_REFUSED: &str = "tether_exporter_stream_clients_refused_total";
pub(crate) const CLIENTS_TIMED_OUT: &str = "tether_exporter_stream_client_write_timeouts_total";
pub(crate) const EVENTS_DROPPED: &str = "tether_exporter_stream_events_dropped_total";
pub(crate) const RESYNCS: &str = "tether_exporter_stream_resyncs_total";
pub(crate) const EVENTS_WRITTEN: &str = "tether_exporter_stream_events_written_total";
pub(crate) const BYTES_WRITTEN: &str = "tether_exporter_stream_written_bytes_total";
pub(crate) const ACCEPT_ERRORS: &str = "tether_exporter_stream_accept_errors_total";

/// The names and kinds of the families [`Stats::families`] writes, which
/// no application metric may take.
pub(crate) const RESERVED: [(&str, Kind); 9] = [
    (CLIENTS, Kind::Gauge),
    (CLIENTS_ACCEPTED, Kind::Counter),
    (CLIENTS_REFUSED, Kind::Counter),
    (CLIENTS_TIMED_OUT, Kind::Counter),
    (EVENTS_DROPPED, Kind::Counter),
    (RESYNCS, Kind::Counter),
    (EVENTS_WRITTEN, Kind::Counter),
    (BYTES_WRITTEN, Kind::Counter),
    (ACCEPT_ERRORS, Kind::Counter),
];

impl Stats {
    pub(crate) fn snapshot(&self, samples_dropped: u64) -> StreamStats {
        let load = |counter: &AtomicU64| counter.load(Ordering::Relaxed);
        StreamStats {
            clients: load(&self.clients),
            clients_accepted: load(&self.clients_accepted),
            clients_refused: load(&self.clients_refused),
            clients_timed_out: load(&self.clients_timed_out),
            events_dropped_client_queue: load(&self.events_dropped_client_queue),
            samples_dropped,
            resyncs: load(&self.resyncs),
            events_written: load(&self.events_written),
            bytes_written: load(&self.bytes_written),
            accept_errors: load(&self.accept_errors),
        }
    }

    /// Appends the families of `stats` to `out`.
    pub(crate) fn families_into(stats: &StreamStats, out: &mut Vec<MetricFamily>) {
        let counter = |name: &str, help: &str, value: u64| {
            family(
                name,
                MetricType::Counter,
                help,
                vec![counter_series(&[], value)],
            )
        };
        out.push(family(
            CLIENTS,
            MetricType::Gauge,
            "Stream clients connected now.",
            vec![Series {
                labels: Vec::new(),
                value: Value::Single(stats.clients as f64),
                timestamp_ms: None,
            }],
        ));
        out.push(counter(
            ACCEPT_ERRORS,
            "Failed accepts on the stream listener, other than a peer's reset.",
            stats.accept_errors,
        ));
        out.push(counter(
            CLIENTS_ACCEPTED,
            "Stream clients accepted.",
            stats.clients_accepted,
        ));
        out.push(counter(
            CLIENTS_REFUSED,
            "Stream clients refused because the client limit was reached.",
            stats.clients_refused,
        ));
        out.push(counter(
            CLIENTS_TIMED_OUT,
            "Stream clients disconnected because a write made no progress in time.",
            stats.clients_timed_out,
        ));
        out.push(family(
            EVENTS_DROPPED,
            MetricType::Counter,
            "Stream events dropped, by reason: a slow client's full queue (oldest dropped) or a full histogram sample buffer (newest dropped).",
            vec![
                counter_series(
                    &[("reason", "client_queue_full")],
                    stats.events_dropped_client_queue,
                ),
                counter_series(&[("reason", "histogram_buffer_full")], stats.samples_dropped),
            ],
        ));
        out.push(counter(
            EVENTS_WRITTEN,
            "Stream events written to clients.",
            stats.events_written,
        ));
        out.push(counter(
            RESYNCS,
            "Times a stream client that lost events was sent every current value again.",
            stats.resyncs,
        ));
        out.push(counter(
            BYTES_WRITTEN,
            "Bytes written to stream clients.",
            stats.bytes_written,
        ));
    }
}

fn family(name: &str, metric_type: MetricType, help: &str, series: Vec<Series>) -> MetricFamily {
    MetricFamily {
        name: name.to_owned(),
        metric_type,
        help: Some(help.to_owned()),
        unit: None,
        series,
    }
}

fn counter_series(labels: &[(&str, &str)], value: u64) -> Series {
    Series {
        labels: labels
            .iter()
            .map(|(name, value)| Label::new(*name, *value))
            .collect(),
        value: Value::Counter(Counter {
            total: value as f64,
            created: None,
            exemplar: None,
        }),
        timestamp_ms: None,
    }
}
