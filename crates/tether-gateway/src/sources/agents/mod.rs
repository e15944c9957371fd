//! The agents source: apps that dial out to the agent listener, pulled on
//! every scrape, and what they pushed before leaving.
//!
//! `conn.rs` serves one connection, `registry.rs` holds who is connected
//! and what was pushed, `scrape.rs` runs the fan-out shared by concurrent
//! scrapes. This file holds the source's settings, its listener and its
//! answer to a scrape, in which it decides, per agent, whether the live
//! answer or the push is served.

mod admission;

mod conn;
pub(crate) mod registry;
pub(crate) mod scrape;

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use futures::future::BoxFuture;
use parking_lot::Mutex;
use tether_tcp::{Connection, FrameBudget, ListenerMetrics, MeteredStream, Server, ServerConfig};
use tokio::net::TcpListener;
use tokio_rustls::TlsAcceptor;
use tokio_util::sync::CancellationToken;

use crate::config::{
    DEFAULT_AGENT_LISTEN, DEFAULT_FINAL_PUSH_TTL_SECS, DEFAULT_HANDSHAKE_TIMEOUT_MS,
    DEFAULT_HEARTBEAT_INTERVAL_MS, DEFAULT_MAX_AGENTS, DEFAULT_MAX_FRAME_BYTES,
    DEFAULT_MAX_FRAME_BYTES_IN_FLIGHT, DEFAULT_MAX_HANDSHAKES, DEFAULT_MAX_PUSH_BYTES,
    DEFAULT_MAX_PUSHES, DEFAULT_MAX_SERIES_PER_ANSWER, IdentityCollision, RawConfig, millis,
    parse_addr, positive_usize,
};
use crate::error::{ConfigError, Error};
use crate::sources::{Part, Scope, ScrapeRequest, Source, SourceStatus, StatusItem};
use crate::telemetry::Telemetry;
use crate::view::{Drops, Families, Origin};
use registry::{HeldPush, Identity, Registry};
use scrape::{Round, Scraper};

/// The agents' section of the configuration.
#[derive(Debug, Clone)]
pub(crate) struct AgentSettings {
    /// Address of the agent listener.
    pub(crate) listen: SocketAddr,
    /// Accepted agent tokens; empty means agents need none.
    pub(crate) tokens: Vec<String>,
    /// Cap on agent connections.
    pub(crate) max_agents: usize,
    /// Time an agent has to complete its handshake.
    pub(crate) handshake_timeout: Duration,
    /// Heartbeat interval.
    pub(crate) heartbeat_interval: Duration,
    /// Largest agent frame accepted, in bytes.
    pub(crate) max_frame_bytes: usize,
    /// How long a final push stays served.
    pub(crate) final_push_ttl: Duration,
    /// Most families plus series one answer or push may hold.
    pub(crate) max_series_per_answer: usize,
    /// How much pushed data is held at most.
    pub(crate) push_limits: registry::PushLimits,
    /// Bytes of frames in flight across all agent connections.
    pub(crate) max_frame_bytes_in_flight: usize,
    /// Most connections still in their handshake.
    pub(crate) max_handshakes: usize,
    /// Who keeps an identity two agents claim.
    pub(crate) identity_collision: IdentityCollision,
}

impl AgentSettings {
    /// Validates the agents' settings of `raw`; reads the tokens file.
    pub(crate) fn from_raw(raw: &RawConfig) -> Result<AgentSettings, ConfigError> {
        let listen = parse_addr(
            "agent_listen",
            raw.agent_listen.as_deref().unwrap_or(DEFAULT_AGENT_LISTEN),
        )?;
        let mut tokens = raw.agent_token.clone().unwrap_or_default();
        if let Some(path) = &raw.agent_tokens_file {
            let text = std::fs::read_to_string(path).map_err(|e| ConfigError::Invalid {
                key: "agent_tokens_file",
                message: format!("cannot read {}: {e}", path.display()),
            })?;
            tokens.extend(
                text.lines()
                    .map(str::trim)
                    .filter(|line| !line.is_empty() && !line.starts_with('#'))
                    .map(str::to_owned),
            );
            if tokens.is_empty() {
                return Err(ConfigError::Invalid {
                    key: "agent_tokens_file",
                    message: format!("{} holds no token: add one per line", path.display()),
                });
            }
        }
        if let Some(empty) = tokens.iter().position(String::is_empty) {
            return Err(ConfigError::Invalid {
                key: "agent_token",
                message: format!(
                    "token number {} is empty: an empty token would admit anyone",
                    empty + 1
                ),
            });
        }
        let max_frame_bytes = raw.max_frame_bytes.unwrap_or(DEFAULT_MAX_FRAME_BYTES);
        if !(1024..=(1 << 30)).contains(&max_frame_bytes) {
            return Err(ConfigError::Invalid {
                key: "max_frame_bytes",
                message: format!("{max_frame_bytes} is outside 1024 to 1073741824 bytes"),
            });
        }
        let max_frame_bytes_in_flight = raw
            .max_frame_bytes_in_flight
            .unwrap_or(DEFAULT_MAX_FRAME_BYTES_IN_FLIGHT);
        if max_frame_bytes_in_flight < max_frame_bytes {
            return Err(ConfigError::Invalid {
                key: "max_frame_bytes_in_flight",
                message: format!(
                    "{max_frame_bytes_in_flight} is below max_frame_bytes ({max_frame_bytes}): one frame of the largest size must fit"
                ),
            });
        }
        Ok(AgentSettings {
            max_frame_bytes_in_flight,
            max_handshakes: positive_usize(
                "max_handshakes",
                raw.max_handshakes.unwrap_or(DEFAULT_MAX_HANDSHAKES),
            )?,
            identity_collision: raw.identity_collision.unwrap_or_default(),
            listen,
            tokens,
            max_agents: positive_usize("max_agents", raw.max_agents.unwrap_or(DEFAULT_MAX_AGENTS))?,
            handshake_timeout: millis(
                "handshake_timeout_ms",
                raw.handshake_timeout_ms,
                DEFAULT_HANDSHAKE_TIMEOUT_MS,
            )?,
            heartbeat_interval: millis(
                "heartbeat_interval_ms",
                raw.heartbeat_interval_ms,
                DEFAULT_HEARTBEAT_INTERVAL_MS,
            )?,
            max_frame_bytes,
            final_push_ttl: Duration::from_secs(
                raw.final_push_ttl_secs
                    .unwrap_or(DEFAULT_FINAL_PUSH_TTL_SECS),
            ),
            push_limits: registry::PushLimits {
                max_pushes: positive_usize(
                    "max_pushes",
                    raw.max_pushes.unwrap_or(DEFAULT_MAX_PUSHES),
                )?,
                max_bytes: positive_usize(
                    "max_push_bytes",
                    raw.max_push_bytes.unwrap_or(DEFAULT_MAX_PUSH_BYTES),
                )?,
            },
            max_series_per_answer: positive_usize(
                "max_series_per_answer",
                raw.max_series_per_answer
                    .unwrap_or(DEFAULT_MAX_SERIES_PER_ANSWER),
            )?,
        })
    }
}

/// The bound agent listener, until the source runs it.
struct Listener {
    socket: TcpListener,
    tls: Option<(TlsAcceptor, Duration)>,
    metrics: ListenerMetrics,
    shutdown_timeout: Duration,
}

/// Connected agents and their pushes.
pub(crate) struct AgentsSource {
    pub(crate) settings: AgentSettings,
    /// Where final pushes are kept durably before they are acknowledged.
    pub(crate) finals: Arc<dyn crate::sources::FinalPushes>,
    pub(crate) registry: Arc<Registry>,
    scraper: Scraper,
    pub(crate) telemetry: Arc<Telemetry>,
    /// Bad tokens throttled per peer address.
    pub(crate) auth: crate::auth_throttle::AuthThrottle,
    /// Bytes of frames in flight across every agent connection.
    pub(crate) budget: FrameBudget,
    /// Connections still in their handshake.
    handshakes: Arc<admission::Handshakes>,
    /// When each identity collision was last logged.
    pub(crate) collisions: admission::CollisionLog,
    /// Frames scanned or decoded on blocking threads at once.
    decoders: Arc<tokio::sync::Semaphore>,
    /// The listener, taken once by [`Source::run`]; a mutex only because
    /// `run` gets `Arc<Self>`, and it is locked once.
    listener: Mutex<Option<Listener>>,
    local_addr: SocketAddr,
}

impl std::fmt::Debug for AgentsSource {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AgentsSource")
            .field("listen", &self.local_addr)
            .field("registry", &self.registry)
            .finish_non_exhaustive()
    }
}

impl AgentsSource {
    /// Binds the agent listener; nothing is served before [`Source::run`].
    pub(crate) async fn bind(
        settings: AgentSettings,
        finals: Arc<dyn crate::sources::FinalPushes>,
        tls: Option<(Arc<rustls::ServerConfig>, Duration)>,
        shutdown_timeout: Duration,
        telemetry: Arc<Telemetry>,
        recorder: &dyn metrics::Recorder,
    ) -> Result<Arc<AgentsSource>, Error> {
        let socket =
            crate::server::bind_listener(settings.listen).map_err(|source| Error::Bind {
                what: "agents",
                addr: settings.listen,
                source,
            })?;
        let local_addr = socket.local_addr().unwrap_or(settings.listen);
        let registry = Arc::new(Registry::with_push_limits(settings.push_limits));
        let kept = finals.take_kept();
        if !kept.is_empty() {
            tracing::info!(
                pushes = kept.len(),
                "final pushes of agents restored from the store"
            );
        }
        for kept in kept {
            let identity = Arc::new(Identity::new(kept.identity));
            let target = Arc::new(identity.target_labels());
            let families = Families::normalize(
                kept.families,
                Some(&target),
                Origin::Peer,
                &mut Drops::default(),
            );
            let _ = registry.store_push(&identity, &target, families, kept.ttl_left);
        }
        Ok(Arc::new(AgentsSource {
            finals,
            scraper: Scraper::new(Arc::clone(&registry)),
            registry,
            telemetry,
            auth: crate::auth_throttle::AuthThrottle::default(),
            budget: FrameBudget::new(settings.max_frame_bytes_in_flight),
            handshakes: admission::Handshakes::new(settings.max_handshakes),
            collisions: admission::CollisionLog::default(),
            decoders: Arc::new(tokio::sync::Semaphore::new(decoder_threads())),
            listener: Mutex::new(Some(Listener {
                socket,
                tls: tls.map(|(config, timeout)| (TlsAcceptor::from(config), timeout)),
                metrics: ListenerMetrics::new("agents", recorder),
                shutdown_timeout,
            })),
            local_addr,
            settings,
        }))
    }

    /// Runs `work` (a frame's scan or decode) on a blocking thread, at most
    /// one per core at a time; the others wait without holding a thread.
    ///
    /// Unbounded, a scrape of a thousand agents would decode on hundreds
    /// of blocking threads at once, and each thread's allocator keeps its
    /// own pages: that tripled the gateway's peak memory.
    pub(crate) async fn off_runtime<T, F>(&self, work: F) -> Result<T, tokio::task::JoinError>
    where
        F: FnOnce() -> T + Send + 'static,
        T: Send + 'static,
    {
        // The semaphore is never closed. The permit goes with the work, so
        // that it is held until the work ends even if the caller goes away.
        let permit = Arc::clone(&self.decoders).acquire_owned().await;
        tokio::task::spawn_blocking(move || {
            let _permit = permit;
            work()
        })
        .await
    }

    /// The bound address (with the port the system chose for port 0).
    pub(crate) fn local_addr(&self) -> SocketAddr {
        self.local_addr
    }

    async fn serve(self: Arc<Self>, listener: Listener, shutdown: CancellationToken) {
        let Listener {
            socket,
            tls,
            metrics,
            shutdown_timeout,
        } = listener;
        let max_agents = self.settings.max_agents;
        let max_handshakes = self.settings.max_handshakes;
        let source = Arc::clone(&self);
        let handler = move |stream: MeteredStream, conn: Connection| {
            let source = Arc::clone(&source);
            let tls = tls.clone();
            async move { serve_agent(stream, conn, source, tls).await }
        };
        let server = Server::new(
            metrics,
            ServerConfig {
                // Room for every agent and every handshake, and a little
                // more, so that accept never stops while the handshake pool
                // can make room by evicting: a newcomer is accepted, joins
                // the pool and is told why if it is turned away.
                max_connections: max_agents
                    .saturating_add(max_handshakes)
                    .saturating_add(ACCEPT_HEADROOM),
                shutdown_timeout,
                ..ServerConfig::default()
            },
            handler,
        );
        match server {
            Ok(server) => {
                let drain = server.run(socket, shutdown).await;
                if !drain.complete {
                    tracing::warn!(
                        remaining = drain.n_remaining,
                        "shutdown timeout reached with agent connections still open"
                    );
                }
            }
            Err(error) => tracing::error!(%error, "cannot serve agents"),
        }
    }
}

/// Blocking threads that scan and decode agent frames at once: one per core.
fn decoder_threads() -> usize {
    std::thread::available_parallelism().map_or(2, std::num::NonZeroUsize::get)
}

/// Connections the agent listener accepts beyond its agents and its
/// handshakes, while evicted handshakes close.
const ACCEPT_HEADROOM: usize = 64;

/// Serves one agent connection, TLS first when configured. The connection
/// joins the handshake pool at once, so that the TLS handshake too counts
/// against it.
async fn serve_agent(
    stream: MeteredStream,
    conn: Connection,
    source: Arc<AgentsSource>,
    tls: Option<(TlsAcceptor, Duration)>,
) -> Result<(), String> {
    let peer = conn.info().peer;
    let shutdown = conn.shutdown_token().clone();
    let handshake = source.handshakes.admit();
    let result = match tls {
        None => conn::serve(stream, peer, source, shutdown, handshake).await,
        Some((acceptor, timeout)) => {
            let accepted = tokio::select! {
                accepted = tokio::time::timeout(timeout, acceptor.accept(stream)) => accepted,
                () = handshake.evicted().cancelled() => {
                    source.telemetry.reject(crate::telemetry::RejectKind::HandshakeEvicted);
                    return Err("closed during its TLS handshake to make room for newer connections".to_owned());
                }
            };
            match accepted {
                Ok(Ok(stream)) => conn::serve(stream, peer, source, shutdown, handshake).await,
                Ok(Err(error)) => return Err(format!("TLS handshake: {error}")),
                Err(_) => return Err("TLS handshake timed out".to_owned()),
            }
        }
    };
    result.map_err(|e| e.to_string())
}

/// Decides, per agent, what a scrape serves: the live answer of this
/// `round`, or the push it holds, never both.
///
/// A push newer than the agent's answer wins (an agent that answered, then
/// pushed its final metrics and left while the round waited for slower
/// agents, is served once, with its final metrics). A push is also served
/// when its agent is not connected, or pushed during this round; a
/// connected agent that did not answer and pushed nothing since the round
/// began is served by nothing but its `tether_agent_up 0`.
pub(crate) fn choose_parts(round: &Round, pushes: Vec<HeldPush>) -> Vec<Part> {
    let mut parts = Vec::with_capacity(round.results.len() + pushes.len());
    let mut pushes = pushes;
    for result in &round.results {
        let Ok(answer) = &result.outcome else {
            continue;
        };
        let newer_push = pushes
            .iter()
            .any(|held| held.identity == result.agent.identity && held.pushed.seq > answer.seq);
        if newer_push {
            continue;
        }
        // This answer is served; an older push of the agent is not.
        pushes.retain(|held| held.identity != result.agent.identity);
        parts.push(Part {
            families: Arc::clone(&answer.families),
            target: Some(Arc::clone(&result.agent.target)),
        });
    }
    for held in pushes {
        if held.connected && held.pushed.seq < round.started_seq {
            continue;
        }
        parts.push(Part {
            families: held.pushed.families,
            target: Some(held.pushed.target),
        });
    }
    parts
}

impl Source for AgentsSource {
    fn kind(&self) -> &'static str {
        "agents"
    }

    fn run(self: Arc<Self>, shutdown: CancellationToken) -> BoxFuture<'static, ()> {
        let listener = self.listener.lock().take();
        Box::pin(async move {
            match listener {
                Some(listener) => self.serve(listener, shutdown).await,
                None => tracing::error!("the agent listener was already running"),
            }
        })
    }

    fn collect(&self, request: ScrapeRequest) -> BoxFuture<'_, Vec<Part>> {
        Box::pin(async move {
            self.telemetry
                .set_agents_connected(self.registry.n_agents());
            self.telemetry
                .set_agent_admission(self.handshakes.len(), &self.budget);
            if request.scope == Scope::Gateway {
                self.telemetry.set_pushes_held(self.registry.n_pushes());
                self.telemetry.set_push_bytes(self.registry.push_bytes());
                return Vec::new();
            }
            let timeout = request
                .deadline
                .saturating_duration_since(tokio::time::Instant::now());
            let round = self.scraper.scrape(timeout).await;
            let pushes = match request.scope {
                Scope::All => self.registry.pushes(Instant::now()),
                Scope::Connected | Scope::Gateway => Vec::new(),
            };
            self.telemetry.record_round(&round);
            self.telemetry
                .set_agents_connected(self.registry.n_agents());
            self.telemetry.set_pushes_held(self.registry.n_pushes());
            self.telemetry.set_push_bytes(self.registry.push_bytes());
            let mut parts = choose_parts(&round, pushes);
            let mut drops = Drops::default();
            let synthetic = Families::normalize(
                vec![round.up_family(), round.duration_family()],
                None,
                Origin::Gateway,
                &mut drops,
            );
            parts.push(Part {
                families: Arc::new(synthetic),
                target: None,
            });
            parts
        })
    }

    fn status(&self) -> SourceStatus {
        let items = self
            .registry
            .agents()
            .into_iter()
            .map(|agent| StatusItem {
                id: render_identity(agent.target.labels()),
                state: "connected",
                details: Vec::new(),
            })
            .chain(
                self.registry
                    .pushes(Instant::now())
                    .into_iter()
                    .filter(|held| !held.connected)
                    .map(|held| StatusItem {
                        id: render_identity(held.pushed.target.labels()),
                        state: "final push held",
                        details: vec![("series", held.pushed.families.n_series().to_string())],
                    }),
            )
            .collect();
        SourceStatus {
            kind: self.kind(),
            items,
        }
    }
}

/// `job="app",instance="a:1"`.
fn render_identity(labels: &[tether_model::Label]) -> String {
    labels
        .iter()
        .map(|l| format!("{}={:?}", l.name, l.value))
        .collect::<Vec<_>>()
        .join(",")
}

#[cfg(test)]
mod tests;
