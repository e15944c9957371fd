//! The `metrics::Recorder` over the aggregated registry.

use std::net::SocketAddr;
use std::sync::Arc;

use metrics::{Counter, Gauge, Histogram, Key, KeyName, Metadata, Recorder, SharedString, Unit};
use metrics_util::registry::Registry;
use tokio_util::sync::CancellationToken;

use crate::cells::StreamGate;
use crate::handle::ExporterHandle;
use crate::registry::{Kind, SharedIndex, TetherStorage};
use crate::stream::StreamShared;

/// The state a recorder and its handles share.
#[derive(Debug)]
pub(crate) struct Inner {
    pub(crate) registry: Registry<Key, TetherStorage>,
    pub(crate) index: Arc<SharedIndex>,
    pub(crate) gate: Arc<StreamGate>,
    /// Present when a stream listener was configured and bound.
    pub(crate) stream: Option<StreamParts>,
    /// Stops the stream server; cancelled by `ExporterHandle::shutdown`.
    pub(crate) shutdown: CancellationToken,
}

/// The stream server's shared state and where it listens.
#[derive(Debug)]
pub(crate) struct StreamParts {
    pub(crate) shared: Arc<StreamShared>,
    pub(crate) local_addr: SocketAddr,
}

/// A `metrics` recorder that aggregates into a registry and, when built
/// with a stream listener, streams changes to TCP clients.
///
/// Install it globally with [`ExporterBuilder::install`](crate::ExporterBuilder::install),
/// or use it locally with `metrics::with_local_recorder` (tests, several
/// registries in one process). Clones share one registry.
#[derive(Debug, Clone)]
pub struct TetherRecorder {
    inner: Arc<Inner>,
}

impl TetherRecorder {
    pub(crate) fn new(inner: Arc<Inner>) -> TetherRecorder {
        TetherRecorder { inner }
    }

    /// A handle to read this recorder's metrics and control its stream.
    pub fn handle(&self) -> ExporterHandle {
        ExporterHandle::new(Arc::clone(&self.inner))
    }
}

impl Recorder for TetherRecorder {
    fn describe_counter(&self, key: KeyName, unit: Option<Unit>, description: SharedString) {
        self.inner
            .index
            .write()
            .describe(Kind::Counter, key.as_str(), unit, &description);
    }

    fn describe_gauge(&self, key: KeyName, unit: Option<Unit>, description: SharedString) {
        self.inner
            .index
            .write()
            .describe(Kind::Gauge, key.as_str(), unit, &description);
    }

    fn describe_histogram(&self, key: KeyName, unit: Option<Unit>, description: SharedString) {
        self.inner
            .index
            .write()
            .describe(Kind::Histogram, key.as_str(), unit, &description);
    }

    fn register_counter(&self, key: &Key, _metadata: &Metadata<'_>) -> Counter {
        Counter::from_arc(self.inner.registry.get_or_create_counter(key, Arc::clone))
    }

    fn register_gauge(&self, key: &Key, _metadata: &Metadata<'_>) -> Gauge {
        Gauge::from_arc(self.inner.registry.get_or_create_gauge(key, Arc::clone))
    }

    fn register_histogram(&self, key: &Key, _metadata: &Metadata<'_>) -> Histogram {
        Histogram::from_arc(self.inner.registry.get_or_create_histogram(key, Arc::clone))
    }
}
