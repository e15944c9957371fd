//! The push source: the Pushgateway's HTTP API on the gateway's HTTP port,
//! durable on disk.
//!
//! A request flows: credentials ([`auth`]), the grouping key from the path
//! ([`key`]), the body read within its bounds, decompressed, parsed and
//! checked ([`body`]), then handed to the committer ([`committer`]), which
//! applies it to the groups ([`store`]) in the order received and answers
//! once its batch is on disk ([`disk`]). Scrapes read the groups on disk
//! only; expired groups are never served and are deleted every second.

mod api;
mod body;
mod committer;
mod disk;
mod key;
mod refusal;
mod store;
mod telemetry;

use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use futures::future::BoxFuture;
use tokio_util::sync::CancellationToken;

use crate::config::{RawConfig, positive, positive_usize};
use crate::error::{ConfigError, Error};
use crate::sources::{
    FinalPushes, KeptFinal, Part, Scope, ScrapeRequest, Source, SourceStatus, StatusItem,
};
use crate::view::Families;

pub(crate) use body::BodyLimits;
use committer::Committer;
use store::{Change, Published, Store, StoreLimits};
use telemetry::PushTelemetry;

/// Default data directory of the push store.
pub const DEFAULT_DATA_DIR: &str = "./tether-data";
/// Default time a pushed group stays served, in seconds; 0 = until deleted.
pub const DEFAULT_PUSH_TTL_SECS: u64 = 0;
/// Default largest push body as sent, in bytes (16 MiB); past it, 413.
pub const DEFAULT_PUSH_MAX_BODY_BYTES: usize = 16 << 20;
/// Default largest push body once decompressed, in bytes (32 MiB); past it,
/// 413, having decompressed no more than that.
pub const DEFAULT_PUSH_MAX_DECOMPRESSED_BYTES: usize = 32 << 20;
/// Default most series in one push; past it, 413.
pub const DEFAULT_PUSH_MAX_SERIES_PER_PUSH: usize = 200_000;
/// Default most push groups; a push that would create one more gets 429.
pub const DEFAULT_PUSH_MAX_GROUPS: usize = 10_000;
/// Default most series in all push groups; a push that would pass it gets 429.
pub const DEFAULT_PUSH_MAX_SERIES: usize = 2_000_000;
/// Default most bytes of pushed families held in all groups (1 GiB, as
/// estimated by `Families::approx_bytes`); a push that would pass it gets 429.
pub const DEFAULT_PUSH_MAX_HELD_BYTES: usize = 1 << 30;
/// Default longest metric or label name in a push, in bytes; past it, 413.
pub const DEFAULT_PUSH_MAX_NAME_BYTES: usize = 1024;
/// Default longest label value or help text in a push, in bytes; past it, 413.
pub const DEFAULT_PUSH_MAX_LABEL_VALUE_BYTES: usize = 16 << 10;
/// Default time a push body may take to arrive, in milliseconds; past it, 408.
pub const DEFAULT_PUSH_BODY_TIMEOUT_MS: u64 = 30_000;
/// Default most bytes of push bodies being read and checked at once
/// (256 MiB); a push waits for room before its body is read.
pub const DEFAULT_PUSH_MAX_BYTES_IN_FLIGHT: usize = 256 << 20;

/// The push source's validated settings.
#[derive(Debug, Clone)]
pub(crate) struct PushSettings {
    /// Where the store lives; `None` with `--no-persistence`.
    pub(crate) data_dir: Option<PathBuf>,
    /// Expiry of pushed groups; `None` = never.
    pub(crate) ttl: Option<Duration>,
    pub(crate) admin_api: bool,
    pub(crate) max_body_bytes: usize,
    pub(crate) body_timeout: Duration,
    pub(crate) max_bytes_in_flight: usize,
    pub(crate) body: BodyLimits,
    pub(crate) store: StoreLimits,
    pub(crate) credentials: crate::credentials::Credentials,
    /// Jobs whose pushes always aggregate.
    pub(crate) aggregate_jobs: Vec<String>,
}

impl PushSettings {
    pub(crate) fn from_raw(raw: &RawConfig) -> Result<PushSettings, ConfigError> {
        let data_dir = if raw.no_persistence.unwrap_or(false) {
            None
        } else {
            Some(
                raw.data_dir
                    .clone()
                    .unwrap_or_else(|| PathBuf::from(DEFAULT_DATA_DIR)),
            )
        };
        let ttl_secs = raw.push_ttl_secs.unwrap_or(DEFAULT_PUSH_TTL_SECS);
        let max_decompressed_bytes = positive_usize(
            "push_max_decompressed_bytes",
            raw.push_max_decompressed_bytes
                .unwrap_or(DEFAULT_PUSH_MAX_DECOMPRESSED_BYTES),
        )?;
        let max_body_bytes = positive_usize(
            "push_max_body_bytes",
            raw.push_max_body_bytes
                .unwrap_or(DEFAULT_PUSH_MAX_BODY_BYTES),
        )?;
        let max_bytes_in_flight = positive_usize(
            "push_max_bytes_in_flight",
            raw.push_max_bytes_in_flight
                .unwrap_or(DEFAULT_PUSH_MAX_BYTES_IN_FLIGHT),
        )?;
        if max_bytes_in_flight < max_body_bytes {
            return Err(ConfigError::Invalid {
                key: "push_max_bytes_in_flight",
                message: format!(
                    "{max_bytes_in_flight} is less than push_max_body_bytes ({max_body_bytes}): a largest push could never be read; raise it"
                ),
            });
        }
        let credentials = crate::credentials::Credentials::new(
            raw.push_token.as_deref().unwrap_or(&[]),
            raw.push_basic_auth.as_deref().unwrap_or(&[]),
        )
        .map_err(|message| ConfigError::Invalid {
            key: "push_basic_auth",
            message,
        })?;
        Ok(PushSettings {
            data_dir,
            ttl: (ttl_secs > 0).then(|| Duration::from_secs(ttl_secs)),
            admin_api: raw.enable_admin_api.unwrap_or(false),
            max_body_bytes,
            body_timeout: Duration::from_millis(positive(
                "push_body_timeout_ms",
                raw.push_body_timeout_ms
                    .unwrap_or(DEFAULT_PUSH_BODY_TIMEOUT_MS),
            )?),
            max_bytes_in_flight,
            body: BodyLimits {
                max_decompressed_bytes,
                max_series: positive_usize(
                    "push_max_series_per_push",
                    raw.push_max_series_per_push
                        .unwrap_or(DEFAULT_PUSH_MAX_SERIES_PER_PUSH),
                )?,
                max_name_bytes: positive_usize(
                    "push_max_name_bytes",
                    raw.push_max_name_bytes
                        .unwrap_or(DEFAULT_PUSH_MAX_NAME_BYTES),
                )?,
                max_value_bytes: positive_usize(
                    "push_max_label_value_bytes",
                    raw.push_max_label_value_bytes
                        .unwrap_or(DEFAULT_PUSH_MAX_LABEL_VALUE_BYTES),
                )?,
                max_labels_per_series: tether_model::DEFAULT_MAX_LABELS_PER_SERIES,
            },
            store: StoreLimits {
                max_groups: positive_usize(
                    "push_max_groups",
                    raw.push_max_groups.unwrap_or(DEFAULT_PUSH_MAX_GROUPS),
                )?,
                max_series: positive_usize(
                    "push_max_series",
                    raw.push_max_series.unwrap_or(DEFAULT_PUSH_MAX_SERIES),
                )?,
                max_bytes: positive_usize(
                    "push_max_held_bytes",
                    raw.push_max_held_bytes
                        .unwrap_or(DEFAULT_PUSH_MAX_HELD_BYTES),
                )?,
            },
            credentials,
            aggregate_jobs: raw.push_aggregate_job.clone().unwrap_or_default(),
        })
    }
}

/// Unix time as the push source reads it: the system clock at start, moved
/// on by the runtime's clock, so that tests with paused time see groups
/// expire.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Clock {
    unix_at_start: Duration,
    started: tokio::time::Instant,
}

impl Clock {
    fn new() -> Clock {
        Clock {
            unix_at_start: SystemTime::now()
                .duration_since(UNIX_EPOCH)
                .unwrap_or_default(),
            started: tokio::time::Instant::now(),
        }
    }

    /// Unix milliseconds now.
    pub(crate) fn now_ms(&self) -> u64 {
        let now = self.unix_at_start + self.started.elapsed();
        u64::try_from(now.as_millis()).unwrap_or(u64::MAX)
    }
}

/// The push source.
#[derive(Debug)]
pub(crate) struct PushSource {
    settings: PushSettings,
    committer: Committer,
    published: Published,
    clock: Clock,
    telemetry: Arc<PushTelemetry>,
    auth: crate::credentials::Guard,
    /// Room for push bodies being read and checked, in KiB.
    in_flight: Arc<tokio::sync::Semaphore>,
    /// One body check per core at once: decompression and parsing are CPU.
    checks: Arc<tokio::sync::Semaphore>,
    /// The gateway's flags for `/api/v1/status`.
    flags: Vec<(String, String)>,
    started: SystemTime,
    /// Agents' final pushes loaded at start, until the agents take them.
    kept_finals: parking_lot::Mutex<Vec<disk::Final>>,
    /// Each group's turn, so requests on it apply in the order they came.
    turns: GroupTurns,
}

/// Turns on groups: a request takes its group's turn when its headers are
/// read and holds it until it is answered, so that a later request on the
/// group (a DELETE after a large PUT) cannot overtake it. An entry lives
/// while a request holds or waits for it.
#[derive(Debug, Default)]
pub(crate) struct GroupTurns {
    /// Short sections: a lookup, an insert or a removal.
    waiting: parking_lot::Mutex<
        std::collections::HashMap<key::GroupingKey, Arc<tokio::sync::Mutex<()>>>,
    >,
}

/// Entries of [`GroupTurns`] past which those nobody holds are swept.
const MAX_TURNS: usize = 4096;

/// A request's turn on its group; given up when dropped.
pub(crate) struct Turn<'a> {
    turns: &'a GroupTurns,
    key: key::GroupingKey,
    lock: Option<Arc<tokio::sync::Mutex<()>>>,
    guard: Option<tokio::sync::OwnedMutexGuard<()>>,
}

impl GroupTurns {
    /// Waits for `key`'s turn (first come, first served).
    pub(crate) async fn take(&self, key: &key::GroupingKey) -> Turn<'_> {
        let lock = {
            let mut waiting = self.waiting.lock();
            if waiting.len() >= MAX_TURNS {
                // Entries of requests cancelled while they waited may be
                // left; those nobody holds go.
                waiting.retain(|_, lock| Arc::strong_count(lock) > 1);
            }
            Arc::clone(waiting.entry(key.clone()).or_default())
        };
        // Made before the wait, so that a request cancelled while waiting
        // still removes the entry it may leave behind.
        let mut turn = Turn {
            turns: self,
            key: key.clone(),
            lock: Some(Arc::clone(&lock)),
            guard: None,
        };
        turn.guard = Some(lock.lock_owned().await);
        turn
    }
}

impl Drop for Turn<'_> {
    fn drop(&mut self) {
        drop(self.guard.take());
        drop(self.lock.take());
        let mut waiting = self.turns.waiting.lock();
        if waiting
            .get(&self.key)
            .is_some_and(|lock| Arc::strong_count(lock) == 1)
        {
            waiting.remove(&self.key);
        }
    }
}

impl PushSource {
    /// Opens the store (moving an unreadable one aside) and starts the
    /// committer.
    pub(crate) fn open(
        settings: PushSettings,
        recorder: &dyn metrics::Recorder,
        flags: Vec<(String, String)>,
    ) -> Result<PushSource, Error> {
        let telemetry = Arc::new(PushTelemetry::new(recorder));
        let clock = Clock::new();
        let now_ms = clock.now_ms();
        let (groups, finals, disk) = match &settings.data_dir {
            Some(dir) => {
                let opened = disk::Disk::open(dir).map_err(Error::Serve)?;
                telemetry.opened(opened.skipped_rows, opened.moved_aside.is_some());
                if let Some((aside, why)) = &opened.moved_aside {
                    tracing::error!(
                        moved_to = %aside.display(),
                        reason = %why,
                        "the push store was unreadable; it was moved aside and a new one started: inspect or delete the old file"
                    );
                }
                if opened.skipped_rows > 0 {
                    tracing::error!(
                        rows = opened.skipped_rows,
                        "push store rows that did not decode were skipped"
                    );
                }
                tracing::info!(
                    path = %dir.join(disk::STORE_FILE).display(),
                    groups = opened.groups.len(),
                    "push store opened"
                );
                (opened.groups, opened.finals, Some(opened.disk))
            }
            None => (Vec::new(), Vec::new(), None),
        };
        // Every row's id, expired ones too: the first expiry tick deletes
        // those; the agents are given the others.
        let final_ids = finals
            .iter()
            .map(|f| {
                let (id, _) = disk::encode_final(&f.identity, &[], f.expires_at_ms);
                (id, f.expires_at_ms)
            })
            .collect();
        let store = Store::with_finals(groups, final_ids, settings.store);
        let published = store.published();
        let committer = Committer::start(store, disk, Arc::clone(&telemetry))
            .map_err(|e| Error::Serve(format!("cannot start the push store: {e}")))?;
        let cores = std::thread::available_parallelism().map_or(1, usize::from);
        Ok(PushSource {
            auth: crate::credentials::Guard::new("push", settings.credentials.clone()),
            in_flight: Arc::new(tokio::sync::Semaphore::new(kib(
                settings.max_bytes_in_flight
            ))),
            checks: Arc::new(tokio::sync::Semaphore::new(cores)),
            settings,
            committer,
            published,
            clock,
            telemetry,
            flags,
            started: SystemTime::now(),
            turns: GroupTurns::default(),
            kept_finals: parking_lot::Mutex::new(
                finals
                    .into_iter()
                    .filter(|f| f.expires_at_ms > now_ms)
                    .collect(),
            ),
        })
    }

    /// Every group not expired, in key order.
    fn groups(&self) -> Vec<Arc<store::Group>> {
        let now_ms = self.clock.now_ms();
        self.published
            .lock()
            .values()
            .filter(|g| !g.expired(now_ms))
            .cloned()
            .collect()
    }
}

impl FinalPushes for PushSource {
    fn keep(
        &self,
        identity: &[tether_model::Label],
        families: &Families,
        ttl: Duration,
    ) -> BoxFuture<'_, Result<(), String>> {
        let now_ms = self.clock.now_ms();
        let expires_at_ms =
            now_ms.saturating_add(u64::try_from(ttl.as_millis()).unwrap_or(u64::MAX));
        let (id, row) = disk::encode_final(identity, families.as_slice(), expires_at_ms);
        Box::pin(async move {
            self.committer
                .submit(
                    Change::KeepFinal {
                        id,
                        row,
                        expires_at_ms,
                    },
                    now_ms,
                )
                .await
                .map_err(|refusal| refusal.message)
        })
    }

    fn take_kept(&self) -> Vec<KeptFinal> {
        let now_ms = self.clock.now_ms();
        std::mem::take(&mut *self.kept_finals.lock())
            .into_iter()
            .filter(|f| f.expires_at_ms > now_ms)
            .map(|f| KeptFinal {
                identity: f.identity,
                families: f.families,
                ttl_left: Duration::from_millis(f.expires_at_ms - now_ms),
            })
            .collect()
    }
}

/// A push request checked as the push route checks it, without a store:
/// the grouping key from `path` (after `/metrics/`), the body decompressed,
/// parsed and prepared within small limits. `Ok(Ok(n))`: accepted, with `n`
/// series; `Ok(Err(line))`: refused, with its one line; `Err`: a rule of
/// the checks themselves broken (a limit passed, a key label kept, a
/// refusal without a message). For the fuzz target and its replay.
pub(crate) fn check_request(
    path: &str,
    content_type: Option<&str>,
    content_encoding: Option<&str>,
    raw: &[u8],
) -> Result<Result<usize, String>, String> {
    /// Small enough for fuzz inputs to reach.
    const FUZZ_LIMITS: BodyLimits = BodyLimits {
        max_decompressed_bytes: 1 << 20,
        max_series: 10_000,
        max_name_bytes: 256,
        max_value_bytes: 1024,
        max_labels_per_series: 32,
    };
    let refused = |line: String| -> Result<Result<usize, String>, String> {
        if line.trim().is_empty() || line.trim_end_matches('\n').contains('\n') {
            Err(format!("a refusal is not one line: {line:?}"))
        } else {
            Ok(Err(line))
        }
    };
    let key = match key::GroupingKey::from_path(path) {
        Ok(key) => key,
        Err(error) => return refused(error.to_string()),
    };
    let checked = body::Encoding::from_header(content_encoding).and_then(|encoding| {
        let format = body::BodyFormat::from_header(content_type);
        let decompressed = body::decompress(
            bytes::Bytes::copy_from_slice(raw),
            encoding,
            FUZZ_LIMITS.max_decompressed_bytes,
        )?;
        let families = body::parse(&decompressed, format, &FUZZ_LIMITS)?;
        body::prepare(families, &key, &FUZZ_LIMITS)
    });
    let prepared = match checked {
        Ok(prepared) => prepared,
        Err(refusal) => return refused(refusal.body()),
    };
    let n_series = prepared.families.n_series();
    if n_series > FUZZ_LIMITS.max_series {
        return Err(format!("{n_series} series accepted past the limit"));
    }
    for family in prepared.families.as_slice() {
        for series in &family.series {
            if let Some(label) = series.labels.iter().find(|l| key.get(&l.name).is_some()) {
                return Err(format!(
                    "{} kept the key's label {}",
                    family.name, label.name
                ));
            }
        }
    }
    Ok(Ok(n_series))
}

/// `bytes` in KiB, rounded up, as semaphore permits.
fn kib(bytes: usize) -> usize {
    bytes
        .div_ceil(1024)
        .min(tokio::sync::Semaphore::MAX_PERMITS)
}

/// How often expired groups are deleted from the store.
const EXPIRY_INTERVAL: Duration = Duration::from_secs(1);

impl Source for PushSource {
    fn kind(&self) -> &'static str {
        "push"
    }

    fn run(self: Arc<Self>, shutdown: CancellationToken) -> BoxFuture<'static, ()> {
        Box::pin(async move {
            let mut interval = tokio::time::interval(EXPIRY_INTERVAL);
            interval.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            loop {
                tokio::select! {
                    () = shutdown.cancelled() => break,
                    _ = interval.tick() => {
                        let _ = self.committer.submit(Change::Expire, self.clock.now_ms()).await;
                    }
                }
            }
            self.committer.close().await;
        })
    }

    fn routes(self: Arc<Self>) -> Option<axum::Router> {
        Some(api::router(self))
    }

    fn collect(&self, request: ScrapeRequest) -> BoxFuture<'_, Vec<Part>> {
        let parts = if request.scope == Scope::All {
            self.groups()
                .into_iter()
                .flat_map(|group| {
                    [
                        Part {
                            families: Arc::clone(&group.body),
                            target: Some(Arc::clone(&group.target)),
                        },
                        Part {
                            families: Arc::clone(&group.times),
                            target: Some(Arc::clone(&group.target)),
                        },
                    ]
                })
                .collect()
        } else {
            Vec::new()
        };
        Box::pin(async move { parts })
    }

    fn status(&self) -> SourceStatus {
        let now_ms = self.clock.now_ms();
        SourceStatus {
            kind: "push",
            items: self
                .groups()
                .iter()
                .map(|group| {
                    let mut details = vec![
                        ("series", group.body.n_series().to_string()),
                        ("last_push_unix", format!("{:.3}", group.push_time)),
                    ];
                    if group.failure_time > 0.0 {
                        details.push(("last_failure_unix", format!("{:.3}", group.failure_time)));
                    }
                    if group.expires_at_ms > 0 {
                        details.push((
                            "expires_in_seconds",
                            format!(
                                "{:.0}",
                                group.expires_at_ms.saturating_sub(now_ms) as f64 / 1000.0
                            ),
                        ));
                    }
                    StatusItem {
                        id: group.key.display(),
                        state: if group.last_push_successful() {
                            "pushed"
                        } else {
                            "last push failed"
                        },
                        details,
                    }
                })
                .collect(),
        }
    }
}

#[cfg(test)]
mod tests;
