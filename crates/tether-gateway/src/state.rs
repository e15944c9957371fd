//! The state the gateway's tasks share: configuration, agents, the
//! scraper and the gateway's own metrics.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use tether_model::MetricFamily;

use crate::agents::Registry;
use crate::config::Config;
use crate::scrape::Scraper;
use crate::stream_source::StreamSource;
use crate::telemetry::Telemetry;

/// Produces the gateway's own families (its recorder's registry) on demand.
pub type SelfFamilies = Arc<dyn Fn() -> Vec<MetricFamily> + Send + Sync>;

/// Shared by the HTTP handlers and the agent connection tasks.
pub(crate) struct Shared {
    pub(crate) config: Config,
    pub(crate) registry: Arc<Registry>,
    pub(crate) scraper: Scraper,
    pub(crate) telemetry: Telemetry,
    pub(crate) stream_sources: Vec<Arc<StreamSource>>,
    self_families: SelfFamilies,
    /// True between start-up and the beginning of shutdown.
    ready: AtomicBool,
}

impl std::fmt::Debug for Shared {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Shared")
            .field("config", &self.config)
            .field("registry", &self.registry)
            .field("ready", &self.ready)
            .finish_non_exhaustive()
    }
}

impl Shared {
    pub(crate) fn new(config: Config, telemetry: Telemetry, self_families: SelfFamilies) -> Shared {
        let registry = Arc::new(Registry::default());
        let stream_sources = config
            .stream_sources
            .iter()
            .map(|a| Arc::new(StreamSource::new(a.clone())))
            .collect();
        Shared {
            stream_sources,
            config,
            scraper: Scraper::new(Arc::clone(&registry)),
            registry,
            telemetry,
            self_families,
            ready: AtomicBool::new(false),
        }
    }

    /// The gateway's own families, gauges brought up to date first.
    pub(crate) fn self_families(&self) -> Vec<MetricFamily> {
        self.telemetry
            .set_agents_connected(self.registry.n_agents());
        self.telemetry.set_pushes_held(self.registry.n_pushes());
        (self.self_families)()
    }

    pub(crate) fn ready(&self) -> bool {
        self.ready.load(Ordering::Relaxed)
    }

    pub(crate) fn set_ready(&self, ready: bool) {
        self.ready.store(ready, Ordering::Relaxed);
    }
}
