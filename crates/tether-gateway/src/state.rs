//! The state the HTTP handlers share: configuration, sources and the
//! gateway's own metrics.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use tether_model::MetricFamily;

use crate::config::Config;
use crate::exposition::Expositions;
use crate::sources::Sources;
use crate::telemetry::Telemetry;

/// Produces the gateway's own families (its recorder's registry) on demand.
pub type SelfFamilies = Arc<dyn Fn() -> Vec<MetricFamily> + Send + Sync>;

/// Shared by the HTTP handlers.
#[derive(Debug)]
pub(crate) struct Shared {
    pub(crate) config: Config,
    pub(crate) sources: Sources,
    pub(crate) telemetry: Arc<Telemetry>,
    /// Renders in flight and the bound on bodies held.
    pub(crate) expositions: Expositions,
    /// The check of the expositions' credentials.
    pub(crate) metrics_guard: crate::credentials::Guard,
    /// True between start-up and the beginning of shutdown.
    ready: AtomicBool,
}

impl Shared {
    pub(crate) fn new(config: Config, sources: Sources, telemetry: Arc<Telemetry>) -> Shared {
        Shared {
            expositions: Expositions::new(config.http.max_bodies, Arc::clone(&telemetry)),
            metrics_guard: crate::credentials::Guard::new(
                "metrics",
                config.http.metrics_credentials.clone(),
            ),
            config,
            sources,
            telemetry,
            ready: AtomicBool::new(false),
        }
    }

    pub(crate) fn ready(&self) -> bool {
        self.ready.load(Ordering::Relaxed)
    }

    pub(crate) fn set_ready(&self, ready: bool) {
        self.ready.store(ready, Ordering::Relaxed);
    }
}
