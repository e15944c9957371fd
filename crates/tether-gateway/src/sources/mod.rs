//! Sources: everything the gateway serves comes from one of them.
//!
//! A source owns its state, its background task (if any), its HTTP routes
//! (if any), its section of the configuration and its answer to a scrape:
//! pulled now within the deadline (agents) or a snapshot of what it holds
//! (stream sources, the gateway's own metrics). A scrape asks every source
//! at once for its [`Part`]s and hands them to the merged view
//! (`crate::view`); no source knows another, and the view knows none.
//!
//! The list of sources is this file: [`Sections`] (each source's validated
//! settings) and [`Sources::build`]. Adding a source is a folder here, a
//! line in each of those, its settings in `RawConfig` and the binary's
//! flags; nothing else changes.

pub(crate) mod agents;
pub(crate) mod drain;
pub(crate) mod gateway;
pub(crate) mod push;
pub(crate) mod stream;

use std::sync::Arc;

use std::net::SocketAddr;

use futures::future::{BoxFuture, join_all};
use tether_model::TargetLabels;
use tokio_util::sync::CancellationToken;

use crate::config::{Config, RawConfig};
use crate::error::{ConfigError, Error};
use crate::server::SelfMetrics;
use crate::telemetry::Telemetry;
use crate::view::Families;

/// Every source's section of the validated configuration.
#[derive(Debug, Clone)]
pub(crate) struct Sections {
    pub(crate) agents: agents::AgentSettings,
    pub(crate) streams: stream::StreamSettings,
    pub(crate) push: push::PushSettings,
    pub(crate) drains: drain::DrainSettings,
}

impl Sections {
    /// Validates every source's settings of `raw`.
    pub(crate) fn from_raw(raw: &RawConfig) -> Result<Sections, ConfigError> {
        Ok(Sections {
            agents: agents::AgentSettings::from_raw(raw)?,
            streams: stream::StreamSettings::from_raw(raw)?,
            push: push::PushSettings::from_raw(raw)?,
            drains: drain::DrainSettings::from_raw(raw)?,
        })
    }

    /// The addresses sources listen on, with the setting that names each.
    pub(crate) fn listens(&self) -> Vec<(&'static str, SocketAddr)> {
        vec![("agent_listen", self.agents.listen)]
    }
}

/// Which exposition a scrape asks for.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub(crate) enum Scope {
    /// `/metrics`: everything.
    All,
    /// `/metrics/connected`: connected agents only.
    Connected,
    /// `/metrics/proxy`: the gateway's own metrics only.
    Gateway,
}

/// What a scrape asks of every source.
#[derive(Debug, Clone, Copy)]
pub(crate) struct ScrapeRequest {
    /// Which exposition.
    pub(crate) scope: Scope,
    /// When every contribution must be ready.
    pub(crate) deadline: tokio::time::Instant,
}

/// One piece of a scrape: normalized families and the labels that tell
/// where they came from.
#[derive(Debug, Clone)]
pub(crate) struct Part {
    /// The families, normalized when they arrived (see [`Families`]).
    pub(crate) families: Arc<Families>,
    /// Labels added to every series (`job`, `instance`), if any.
    pub(crate) target: Option<Arc<TargetLabels>>,
}

/// One row of a source's status: something it holds or talks to.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct StatusItem {
    /// What identifies it (`job="app",instance="a:1"`, an address).
    pub(crate) id: String,
    /// Its state in a word (`connected`, `down`, `held`).
    pub(crate) state: &'static str,
    /// Further facts, by name.
    pub(crate) details: Vec<(&'static str, String)>,
}

/// What a source reports about itself for the status page.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct SourceStatus {
    /// The kind of source.
    pub(crate) kind: &'static str,
    /// What it holds or talks to.
    pub(crate) items: Vec<StatusItem>,
}

/// An agent's final push kept across a restart, as the durable store
/// gives it back.
#[derive(Debug)]
pub(crate) struct KeptFinal {
    /// The agent's identity labels.
    pub(crate) identity: Vec<tether_model::Label>,
    /// What it pushed.
    pub(crate) families: Vec<tether_model::MetricFamily>,
    /// How long it is still served.
    pub(crate) ttl_left: std::time::Duration,
}

/// Durable keeping of agents' final pushes ("push and close"), offered by
/// the push store to the agents, so that a batch job's last metrics
/// survive a gateway restart as pushed groups do.
pub(crate) trait FinalPushes: Send + Sync + std::fmt::Debug {
    /// Keeps the final push of the agent `identity` for `ttl`; `Ok` once it
    /// is on disk.
    fn keep(
        &self,
        identity: &[tether_model::Label],
        families: &Families,
        ttl: std::time::Duration,
    ) -> BoxFuture<'_, Result<(), String>>;

    /// The final pushes kept before this start and not expired; given once.
    fn take_kept(&self) -> Vec<KeptFinal>;
}

/// A source of metrics. Implementations live in this module's folders.
pub(crate) trait Source: Send + Sync + std::fmt::Debug {
    /// The kind of source, as logs and the status page name it.
    fn kind(&self) -> &'static str;

    /// Runs the source's background work (a listener, a reader) until
    /// `shutdown`; the default has none.
    fn run(self: Arc<Self>, shutdown: CancellationToken) -> BoxFuture<'static, ()> {
        let _ = shutdown;
        Box::pin(async {})
    }

    /// Routes the source serves on the HTTP listener, if any.
    fn routes(self: Arc<Self>) -> Option<axum::Router> {
        None
    }

    /// The source's contribution to a scrape, ready by `request.deadline`.
    fn collect(&self, request: ScrapeRequest) -> BoxFuture<'_, Vec<Part>>;

    /// The source's status.
    fn status(&self) -> SourceStatus;
}

/// The state of a source that holds what it serves (a folded stream, a
/// drain's series) and builds families from it only when it changed.
pub(crate) trait Snapshotted: Send + 'static {
    /// Moves on with every change of what is held.
    fn version(&self) -> u64;
    /// What is held, as families not yet normalized.
    fn raw_families(&self) -> Vec<tether_model::MetricFamily>;
    /// The families last built, with the version they were built at.
    fn snapshot(&mut self) -> &mut Option<(u64, Arc<Families>)>;
}

/// The families of `state` for a scrape due by `deadline`: those last
/// built when nothing changed since, else built again (linear in what is
/// held, so on a blocking thread, outside the lock but for the copy) and
/// kept; the previous ones if the build is not ready in time.
pub(crate) async fn snapshot_families<S: Snapshotted>(
    state: &Arc<parking_lot::Mutex<S>>,
    target: Option<Arc<TargetLabels>>,
    deadline: tokio::time::Instant,
) -> Arc<Families> {
    let (version, previous) = {
        let mut state = state.lock();
        (state.version(), state.snapshot().clone())
    };
    if let Some((built_at, families)) = &previous
        && *built_at == version
    {
        return Arc::clone(families);
    }
    let state = Arc::clone(state);
    let build = tokio::task::spawn_blocking(move || {
        let (version, raw) = {
            let state = state.lock();
            (state.version(), state.raw_families())
        };
        let mut drops = crate::view::Drops::default();
        let families = Arc::new(Families::normalize(
            raw,
            target.as_deref(),
            crate::view::Origin::Peer,
            &mut drops,
        ));
        *state.lock().snapshot() = Some((version, Arc::clone(&families)));
        families
    });
    match tokio::time::timeout_at(deadline, build).await {
        Ok(Ok(families)) => families,
        _ => previous.map_or_else(|| Arc::new(Families::default()), |(_, f)| f),
    }
}

/// Every source of one gateway, in the order their parts are merged (the
/// first contributor of a family fixes its type and help).
#[derive(Debug, Clone)]
pub(crate) struct Sources {
    /// The agents; held by type too, for the agent listener.
    pub(crate) agents: Arc<agents::AgentsSource>,
    all: Vec<Arc<dyn Source>>,
}

impl Sources {
    /// The source list: every source the configuration asks for, with its
    /// listener bound; nothing is served before [`Source::run`].
    pub(crate) async fn build(
        config: &Config,
        telemetry: &Arc<Telemetry>,
        self_metrics: &SelfMetrics,
    ) -> Result<Sources, Error> {
        let sections = &config.sources;
        let push = Arc::new(push::PushSource::open(
            sections.push.clone(),
            self_metrics.recorder.as_ref(),
            config.flags(),
        )?);
        let agents = agents::AgentsSource::bind(
            sections.agents.clone(),
            Arc::clone(&push) as Arc<dyn FinalPushes>,
            config
                .tls
                .as_ref()
                .map(|tls| (Arc::clone(&tls.agents), tls.handshake_timeout)),
            config.shutdown_timeout,
            Arc::clone(telemetry),
            self_metrics.recorder.as_ref(),
        )
        .await?;
        let streams = sections.streams.addresses.iter().map(|address| {
            Arc::new(stream::StreamSource::new(
                address.clone(),
                &sections.streams,
            )) as Arc<dyn Source>
        });
        let drains = sections.drains.drains.iter().map(|drain| {
            Arc::new(drain::DrainSource::new(
                drain.clone(),
                Arc::clone(&self_metrics.recorder),
            )) as Arc<dyn Source>
        });
        let gateway = Arc::new(gateway::GatewaySource::new(Arc::clone(
            &self_metrics.families,
        )));
        let mut all: Vec<Arc<dyn Source>> = vec![Arc::clone(&agents) as Arc<dyn Source>];
        all.push(push);
        all.extend(streams);
        all.extend(drains);
        // The gateway's own families last: they never conflict with a
        // peer's (`tether_*` is reserved to them).
        all.push(gateway);
        Ok(Sources { agents, all })
    }

    /// Every source.
    pub(crate) fn iter(&self) -> impl Iterator<Item = &Arc<dyn Source>> {
        self.all.iter()
    }

    /// Every source's parts for `request`, in source order; sources are
    /// asked at once.
    pub(crate) async fn collect(&self, request: ScrapeRequest) -> Vec<Part> {
        let (gateway, peers) = self
            .all
            .split_last()
            .map_or((None, &[][..]), |(g, p)| (Some(g), p));
        let contributions = join_all(peers.iter().map(|s| s.collect(request))).await;
        let mut parts: Vec<Part> = contributions.into_iter().flatten().collect();
        // The gateway's own metrics last, once the others have updated
        // their gauges for this scrape.
        if let Some(gateway) = gateway {
            parts.extend(gateway.collect(request).await);
        }
        parts
    }

    /// Every source's status.
    pub(crate) fn status(&self) -> Vec<SourceStatus> {
        self.all.iter().map(|s| s.status()).collect()
    }
}
