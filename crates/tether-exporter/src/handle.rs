//! `ExporterHandle`: reading the registry as Prometheus families, and
//! controlling the stream server.

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::Ordering;

use tether_model::{Format, MetricFamily};

use crate::recorder::Inner;
use crate::stream::{Stats, StreamStats};

/// A cheap, cloneable handle on a recorder's registry and stream server.
#[derive(Debug, Clone)]
pub struct ExporterHandle {
    inner: Arc<Inner>,
}

impl ExporterHandle {
    pub(crate) fn new(inner: Arc<Inner>) -> ExporterHandle {
        ExporterHandle { inner }
    }

    /// Every metric as Prometheus families: families in name order, each
    /// series' labels sorted by name, followed by the stream server's own
    /// families when it is configured.
    ///
    /// Names are sanitized (see the crate documentation); counters keep the
    /// name they were given, with or without `_total`. A metric whose
    /// sanitized name clashes with a family of another type, or whose
    /// sanitized name and labels equal another series', is left out (and
    /// logged when registered), so the result is always a valid exposition.
    pub fn families(&self) -> Vec<MetricFamily> {
        let mut families = Vec::new();
        self.families_into(&mut families);
        families
    }

    /// As [`families`](Self::families), replacing the content of `out` and
    /// reusing its allocations: a caller that keeps one `Vec` across
    /// scrapes allocates only for what is new since the last one.
    pub fn families_into(&self, out: &mut Vec<MetricFamily>) {
        let n_families = self.inner.index.read().families_into(out);
        out.truncate(n_families);
        if let Some(stats) = self.stream_stats() {
            Stats::families_into(&stats, out);
        }
    }

    /// Every metric rendered in `format`, as [`families`](Self::families) gives them.
    pub fn render(&self, format: Format) -> Vec<u8> {
        let mut out = Vec::new();
        self.render_into(format, &mut out);
        out
    }

    /// As [`render`](Self::render), appending to `out`.
    pub fn render_into(&self, format: Format, out: &mut Vec<u8>) {
        let families = self.families();
        tether_model::render(&families, format, out);
    }

    /// The address the stream server is bound to, when it is configured:
    /// the actual port when the builder was given port 0.
    pub fn stream_local_addr(&self) -> Option<SocketAddr> {
        self.inner.stream.as_ref().map(|stream| stream.local_addr)
    }

    /// The stream server's counters, when it is configured.
    pub fn stream_stats(&self) -> Option<StreamStats> {
        let stream = self.inner.stream.as_ref()?;
        let samples_dropped = self.inner.gate.samples_dropped.load(Ordering::Relaxed);
        Some(stream.shared.stats.snapshot(samples_dropped))
    }

    /// Stops the stream server gracefully: it stops accepting, sends every
    /// client the last values and what is queued (within the shutdown
    /// timeout), and closes the connections; the exporter future then
    /// completes. Recording goes on working.
    pub fn shutdown(&self) {
        self.inner.shutdown.cancel();
    }
}
