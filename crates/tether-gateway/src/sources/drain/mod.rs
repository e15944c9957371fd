//! Drain sources: Heroku log drains (`POST /drain`, or a path of the
//! configuration file's own) whose lines become metrics.
//!
//! A batch flows: credentials (basic auth, [`crate::credentials`]), the
//! body read within its size and time bounds, its frames and lines read
//! into updates ([`lines`], a pure function of the body, on the blocking
//! pool when it is large), then, under the drain's lock, the batch's
//! `Logplex-Frame-Id` checked against those applied ([`frame_ids`]) and
//! the updates applied to the drain's series ([`store`]). A scrape serves
//! the series as families built when they last changed. Series not
//! updated for the series TTL are removed every second.

mod api;
mod frame_ids;
mod lines;
mod store;
mod telemetry;

use std::sync::Arc;
use std::time::Duration;

use futures::future::BoxFuture;
use parking_lot::Mutex;
use tether_drain::{LogplexLimits, VectorLimits};
use tokio_util::sync::CancellationToken;

use crate::config::{DrainTable, RawConfig, positive, positive_usize};
use crate::credentials::{Credentials, Guard};
use crate::error::ConfigError;
use crate::sources::{Part, Scope, ScrapeRequest, Source, SourceStatus, StatusItem};
use crate::view::Families;

use frame_ids::FrameIds;
use lines::BatchLimits;
use store::{Store, StoreLimits};
use telemetry::DrainTelemetry;

/// The path of the drain `--drain-password` enables.
pub const DEFAULT_DRAIN_PATH: &str = "/drain";
/// The basic-auth user of a drain, as in the drain URL
/// `https://drain:PASSWORD@host/drain`.
pub const DEFAULT_DRAIN_USER: &str = "drain";
/// The prefix of instance-metric lines.
pub const DEFAULT_DRAIN_PREFIX: &str = "crates-io-heroku-metrics:ingest";
/// Default time a drain series stays served without an update, in seconds
/// (0 = forever).
pub const DEFAULT_DRAIN_SERIES_TTL_SECS: u64 = 900;
/// Default most series one drain holds; updates creating more are refused
/// and counted.
pub const DEFAULT_DRAIN_MAX_SERIES: usize = 100_000;
/// Default most bytes one drain's series take (64 MiB, estimated).
pub const DEFAULT_DRAIN_MAX_HELD_BYTES: usize = 64 << 20;
/// Default largest drain body, in bytes (logplex batches are well under
/// 1 MiB); past it, 413.
pub const DEFAULT_DRAIN_MAX_BODY_BYTES: usize = 4 << 20;
/// Default longest drain line, in bytes; a longer line is refused and
/// counted, and the rest of the batch read.
pub const DEFAULT_DRAIN_MAX_LINE_BYTES: usize = 64 << 10;
/// Default time a drain body may take to arrive, in milliseconds; past it, 408.
pub const DEFAULT_DRAIN_BODY_TIMEOUT_MS: u64 = 30_000;
/// Bodies larger than this are read on the blocking pool.
const INLINE_BATCH_BYTES: usize = 64 << 10;
/// A drain's refusals are logged at warn at most this often.
const REJECT_LOG_INTERVAL: Duration = Duration::from_secs(10);

/// One drain's validated settings.
#[derive(Debug, Clone)]
pub(crate) struct DrainConfig {
    /// The route, `/drain` by default.
    pub(crate) path: String,
    pub(crate) credentials: Credentials,
    /// The prefix of instance-metric lines.
    pub(crate) prefix: String,
    /// Series not updated for this long are removed; `None` = never.
    pub(crate) ttl: Option<Duration>,
    pub(crate) store: StoreLimits,
    pub(crate) max_body_bytes: usize,
    pub(crate) body_timeout: Duration,
    pub(crate) limits: BatchLimits,
}

/// The drains' section of the configuration.
#[derive(Debug, Clone, Default)]
pub(crate) struct DrainSettings {
    pub(crate) drains: Vec<DrainConfig>,
}

impl DrainSettings {
    pub(crate) fn from_raw(raw: &RawConfig) -> Result<DrainSettings, ConfigError> {
        let ttl_secs = raw
            .drain_series_ttl_secs
            .unwrap_or(DEFAULT_DRAIN_SERIES_TTL_SECS);
        let max_series = positive_usize(
            "drain_max_series",
            raw.drain_max_series.unwrap_or(DEFAULT_DRAIN_MAX_SERIES),
        )?;
        let common = DrainConfig {
            path: DEFAULT_DRAIN_PATH.to_owned(),
            credentials: Credentials::default(),
            prefix: raw
                .drain_prefix
                .clone()
                .unwrap_or_else(|| DEFAULT_DRAIN_PREFIX.to_owned()),
            ttl: (ttl_secs > 0).then(|| Duration::from_secs(ttl_secs)),
            store: StoreLimits {
                max_series,
                max_bytes: positive_usize(
                    "drain_max_held_bytes",
                    raw.drain_max_held_bytes
                        .unwrap_or(DEFAULT_DRAIN_MAX_HELD_BYTES),
                )?,
            },
            max_body_bytes: positive_usize(
                "drain_max_body_bytes",
                raw.drain_max_body_bytes
                    .unwrap_or(DEFAULT_DRAIN_MAX_BODY_BYTES),
            )?,
            body_timeout: Duration::from_millis(positive(
                "drain_body_timeout_ms",
                raw.drain_body_timeout_ms
                    .unwrap_or(DEFAULT_DRAIN_BODY_TIMEOUT_MS),
            )?),
            limits: BatchLimits {
                logplex: LogplexLimits {
                    max_message_bytes: positive_usize(
                        "drain_max_line_bytes",
                        raw.drain_max_line_bytes
                            .unwrap_or(DEFAULT_DRAIN_MAX_LINE_BYTES),
                    )?,
                    max_messages: tether_drain::DEFAULT_MAX_LOGPLEX_MESSAGES,
                },
                vector: VectorLimits::default(),
            },
        };
        check_prefix("drain_prefix", &common.prefix)?;
        let mut drains = Vec::new();
        if let Some(password) = &raw.drain_password {
            let credentials =
                Credentials::user(DEFAULT_DRAIN_USER, password).map_err(|message| {
                    ConfigError::Invalid {
                        key: "drain_password",
                        message,
                    }
                })?;
            drains.push(DrainConfig {
                credentials,
                ..common.clone()
            });
        }
        for table in raw.drain.iter().flatten() {
            drains.push(from_table(table, &common)?);
        }
        for (i, drain) in drains.iter().enumerate() {
            if drains[..i].iter().any(|d| d.path == drain.path) {
                return Err(ConfigError::Invalid {
                    key: "drain",
                    message: format!(
                        "two drains are served at {}: give each its own path",
                        drain.path
                    ),
                });
            }
        }
        Ok(DrainSettings { drains })
    }
}

fn from_table(table: &DrainTable, common: &DrainConfig) -> Result<DrainConfig, ConfigError> {
    let invalid = |message: String| ConfigError::Invalid {
        key: "drain",
        message,
    };
    let path = table.path.clone();
    let reserved = ["/metrics", "/api", "/-/", "/agents"];
    if !path.starts_with('/')
        || path.len() < 2
        || path.ends_with('/')
        || !path
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"/-_.".contains(&b))
        || path.contains("//")
        || reserved.iter().any(|r| path.starts_with(r))
    {
        return Err(invalid(format!(
            "{path:?} is not a drain path: give one such as /drain/myapp (letters, digits, /, -, _ and ., not under /metrics, /api, /agents or /-/)"
        )));
    }
    let user = table.user.as_deref().unwrap_or(DEFAULT_DRAIN_USER);
    let credentials = Credentials::user(user, &table.password)
        .map_err(|message| invalid(format!("drain {path}: {message}")))?;
    let prefix = table
        .prefix
        .clone()
        .unwrap_or_else(|| common.prefix.clone());
    check_prefix("drain", &prefix)?;
    let ttl = match table.series_ttl_secs {
        Some(0) => None,
        Some(secs) => Some(Duration::from_secs(secs)),
        None => common.ttl,
    };
    let max_series = match table.max_series {
        Some(0) => {
            return Err(invalid(format!(
                "drain {path}: max_series 0 would hold nothing: give at least 1"
            )));
        }
        Some(n) => n,
        None => common.store.max_series,
    };
    Ok(DrainConfig {
        path,
        credentials,
        prefix,
        ttl,
        store: StoreLimits {
            max_series,
            ..common.store
        },
        ..common.clone()
    })
}

fn check_prefix(key: &'static str, prefix: &str) -> Result<(), ConfigError> {
    if prefix.is_empty() || prefix.bytes().any(|b| b == b' ' || !b.is_ascii_graphic()) {
        return Err(ConfigError::Invalid {
            key,
            message: format!(
                "{prefix:?} is not a metric-line prefix: give printable ASCII without spaces"
            ),
        });
    }
    Ok(())
}

/// What one drain holds and knows.
#[derive(Debug)]
struct DrainState {
    store: Store,
    ids: FrameIds,
    /// The families last built, and the store version they were built at.
    snapshot: Option<(u64, Arc<Families>)>,
    batches: u64,
    last_batch_ms: Option<u64>,
    /// When a refusal was last logged at warn, and how many were not since.
    last_log: Option<tokio::time::Instant>,
    unlogged: u64,
}

/// One drain.
#[derive(Debug)]
pub(crate) struct DrainSource {
    config: DrainConfig,
    guard: Guard,
    state: Arc<Mutex<DrainState>>,
    telemetry: DrainTelemetry,
    started: tokio::time::Instant,
}

impl DrainSource {
    pub(crate) fn new(
        config: DrainConfig,
        recorder: Arc<dyn metrics::Recorder + Send + Sync>,
    ) -> DrainSource {
        let telemetry = DrainTelemetry::new(recorder, &config.path);
        DrainSource {
            guard: Guard::new("drain", config.credentials.clone()),
            state: Arc::new(Mutex::new(DrainState {
                store: Store::new(config.store),
                ids: FrameIds::default(),
                snapshot: None,
                batches: 0,
                last_batch_ms: None,
                last_log: None,
                unlogged: 0,
            })),
            telemetry,
            started: tokio::time::Instant::now(),
            config,
        }
    }

    /// Milliseconds since the drain started, on the runtime's clock.
    fn now_ms(&self) -> u64 {
        u64::try_from(self.started.elapsed().as_millis()).unwrap_or(u64::MAX)
    }

    /// Removes the series past their TTL.
    fn expire(&self) {
        let Some(ttl) = self.config.ttl else {
            return;
        };
        let now = self.now_ms();
        let ttl_ms = u64::try_from(ttl.as_millis()).unwrap_or(u64::MAX);
        let Some(cutoff) = now.checked_sub(ttl_ms) else {
            return;
        };
        let (removed, held) = {
            let mut state = self.state.lock();
            let removed = state.store.expire(cutoff);
            (removed, state.store.n_series())
        };
        if removed > 0 {
            self.telemetry.expired(removed);
            self.telemetry.held(held);
        }
    }

    /// The families of the drain's series, built again if they changed.
    async fn families(&self, deadline: tokio::time::Instant) -> Arc<Families> {
        crate::sources::snapshot_families(&self.state, None, deadline).await
    }
}

impl crate::sources::Snapshotted for DrainState {
    fn version(&self) -> u64 {
        self.store.version()
    }

    fn raw_families(&self) -> Vec<tether_model::MetricFamily> {
        self.store.families()
    }

    fn snapshot(&mut self) -> &mut Option<(u64, Arc<Families>)> {
        &mut self.snapshot
    }
}

impl Source for DrainSource {
    fn kind(&self) -> &'static str {
        "drain"
    }

    fn run(self: Arc<Self>, shutdown: CancellationToken) -> BoxFuture<'static, ()> {
        Box::pin(async move {
            tracing::info!(path = %self.config.path, "drain listening");
            let mut tick = tokio::time::interval(Duration::from_secs(1));
            tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            loop {
                tokio::select! {
                    () = shutdown.cancelled() => return,
                    _ = tick.tick() => self.expire(),
                }
            }
        })
    }

    fn routes(self: Arc<Self>) -> Option<axum::Router> {
        Some(api::router(self))
    }

    fn collect(&self, request: ScrapeRequest) -> BoxFuture<'_, Vec<Part>> {
        Box::pin(async move {
            if request.scope != Scope::All {
                return Vec::new();
            }
            vec![Part {
                families: self.families(request.deadline).await,
                target: None,
            }]
        })
    }

    fn status(&self) -> SourceStatus {
        let state = self.state.lock();
        let now = self.now_ms();
        SourceStatus {
            kind: "drain",
            items: vec![StatusItem {
                id: self.config.path.clone(),
                state: "listening",
                details: vec![
                    ("series", state.store.n_series().to_string()),
                    ("bytes", state.store.bytes().to_string()),
                    ("batches", state.batches.to_string()),
                    ("frame_ids_remembered", state.ids.len().to_string()),
                    (
                        "last_batch_seconds_ago",
                        state.last_batch_ms.map_or_else(String::new, |at| {
                            format!("{:.1}", now.saturating_sub(at) as f64 / 1000.0)
                        }),
                    ),
                    ("prefix", self.config.prefix.clone()),
                    (
                        "series_ttl_secs",
                        self.config.ttl.map_or(0, |t| t.as_secs()).to_string(),
                    ),
                ],
            }],
        }
    }
}
