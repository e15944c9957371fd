//! Gateway configuration: the raw layer read from flags, environment and
//! TOML, and the validated [`Config`] the gateway runs with.
//!
//! Every source fills a [`RawConfig`] whose fields are all optional; sources
//! are merged by precedence (flag > environment > file > default) and the
//! result is validated once into a [`Config`], before anything binds.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use serde::Deserialize;

use crate::error::ConfigError;

/// Default HTTP address: the Pushgateway's port, so existing scrape
/// configurations work unchanged.
pub const DEFAULT_HTTP_LISTEN: &str = "0.0.0.0:9091";
/// Default address of the agent listener.
pub const DEFAULT_AGENT_LISTEN: &str = "0.0.0.0:7001";
/// Default upper bound of one scrape's fan-out, in milliseconds. Prometheus'
/// own `X-Prometheus-Scrape-Timeout-Seconds` lowers it per scrape.
pub const DEFAULT_SCRAPE_TIMEOUT_MS: u64 = 10_000;
/// Default time kept back from the scraper's timeout, in milliseconds, to
/// merge, render and send before Prometheus gives up.
pub const DEFAULT_SCRAPE_MARGIN_MS: u64 = 250;
/// Default time a final push stays served, in seconds: long enough for both
/// members of an HA Prometheus pair to scrape it.
pub const DEFAULT_FINAL_PUSH_TTL_SECS: u64 = 300;
/// Default cap on agent connections; connections past it get a Reject.
pub const DEFAULT_MAX_AGENTS: usize = 10_000;
/// Default cap on concurrent HTTP connections; past it, accept waits.
pub const DEFAULT_MAX_HTTP_CONNECTIONS: usize = 1_024;
/// Default time an agent has, after connecting, to complete its Hello.
pub const DEFAULT_HANDSHAKE_TIMEOUT_MS: u64 = 5_000;
/// Default heartbeat interval; a peer silent for three intervals is dead.
pub const DEFAULT_HEARTBEAT_INTERVAL_MS: u64 = 15_000;
/// Default most families plus series in one agent answer or push. A frame
/// over it is refused before it is decoded (a scrape's answer counts as a
/// failure of that agent, a push gets an error in its PushAck): decoding
/// allocates per entry, and an empty entry is two bytes on the wire.
pub const DEFAULT_MAX_SERIES_PER_ANSWER: usize = 500_000;
/// Default most final pushes held at once (one per agent identity); past it
/// the oldest is dropped to make room.
pub const DEFAULT_MAX_PUSHES: usize = 10_000;
/// Default most bytes of pushed families held at once (an estimate of the
/// memory they take): 256 MiB. Past it the oldest pushes are dropped to
/// make room; a push larger than this on its own is refused.
pub const DEFAULT_MAX_PUSH_BYTES: usize = 256 << 20;
/// Default largest agent frame accepted, in bytes.
pub const DEFAULT_MAX_FRAME_BYTES: usize = 16 << 20;
/// Default most bytes of agent frames being read or processed at once,
/// across all agent connections: 256 MiB. A frame that would pass it waits,
/// unread and unallocated, until others are done.
pub const DEFAULT_MAX_FRAME_BYTES_IN_FLIGHT: usize = 256 << 20;
/// Default most agent connections that have not completed their handshake
/// (TLS and Hello); past it the one that has waited longest is closed.
pub const DEFAULT_MAX_HANDSHAKES: usize = 1_024;
/// Default most exposition bodies held at once, each shared by the scrapes
/// that joined its render; a scrape past it waits, then gets 503.
pub const DEFAULT_MAX_SCRAPE_BODIES: usize = 8;
/// Default most concurrent HTTP/2 streams per connection.
pub const DEFAULT_HTTP2_MAX_STREAMS: u32 = 8;
/// The basic-auth user of the expositions when `metrics_password` is set.
pub const METRICS_USER: &str = "metrics";
/// Default time shutdown waits for connections to finish, in milliseconds.
pub const DEFAULT_SHUTDOWN_TIMEOUT_MS: u64 = 10_000;

/// Default time a client has to send a request's headers (and, on a new
/// connection, its first byte), in milliseconds. Past it the connection is
/// closed: a slow or silent sender cannot hold a connection slot.
pub const DEFAULT_HTTP_HEADER_TIMEOUT_MS: u64 = 5_000;
/// Default time an HTTP connection may stay open with no request in flight
/// and no byte moving, in milliseconds.
pub const DEFAULT_HTTP_IDLE_TIMEOUT_MS: u64 = 60_000;
/// Default time a response write may stay blocked on a client that does
/// not read, in milliseconds; past it the response is dropped and the
/// connection closed.
pub const DEFAULT_HTTP_WRITE_TIMEOUT_MS: u64 = 10_000;
/// Default time a TLS handshake may take on either listener, in milliseconds.
pub const DEFAULT_TLS_HANDSHAKE_TIMEOUT_MS: u64 = 5_000;
/// Default time a stream source may send nothing before it is reported
/// down (`tether_stream_up` 0) and reconnected, in milliseconds. An app
/// whose metrics do not change sends nothing, so this is long.
pub const DEFAULT_STREAM_STALL_TIMEOUT_MS: u64 = 300_000;
/// Default most series one stream source may hold; events for new series
/// past it are dropped and counted.
pub const DEFAULT_STREAM_MAX_SERIES: usize = 100_000;
/// Default most bytes (names, label texts, help texts) one stream source
/// may hold: 64 MiB.
pub const DEFAULT_STREAM_MAX_BYTES: usize = 64 << 20;

/// What happens when an agent says Hello with the identity of a connected
/// one.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Default)]
#[serde(rename_all = "kebab-case")]
pub enum IdentityCollision {
    /// The connected agent keeps its identity (once it has shown it is
    /// alive); the newcomer gets a Reject `IDENTITY_IN_USE`.
    #[default]
    KeepConnected,
    /// The newcomer takes the identity; the older connection gets a Reject
    /// `IDENTITY_IN_USE` and is closed.
    NewestWins,
}

impl IdentityCollision {
    /// The name used in flags and files.
    pub fn as_str(self) -> &'static str {
        match self {
            IdentityCollision::KeepConnected => "keep-connected",
            IdentityCollision::NewestWins => "newest-wins",
        }
    }
}

/// Log output format.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Default)]
#[serde(rename_all = "lowercase")]
pub enum LogFormat {
    /// Human-readable text.
    #[default]
    Text,
    /// One JSON object per line.
    Json,
}

/// Declares [`RawConfig`] once: its fields, their documentation, and the
/// merge of two layers, so that a new setting is one line here.
macro_rules! raw_config {
    ($( $(#[$doc:meta])* $field:ident : $ty:ty ),* $(,)?) => {
        /// Configuration as read from one source: every field optional.
        ///
        /// The TOML file uses the flags' names in snake case (`http_listen`,
        /// `scrape_timeout_ms`); unknown keys are an error, so a typo never goes
        /// unnoticed.
        #[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize)]
        #[serde(deny_unknown_fields)]
        pub struct RawConfig {
            $( $(#[$doc])* pub $field: Option<$ty>, )*
        }

        impl RawConfig {
            /// Fills every field unset in `self` from `lower` (`self` wins).
            pub fn or(self, lower: RawConfig) -> RawConfig {
                RawConfig { $( $field: self.$field.or(lower.$field), )* }
            }
        }
    };
}

raw_config! {
    /// Address of the HTTP server (scrapes, status, health).
    http_listen: String,
    /// Address of the agent listener.
    agent_listen: String,
    /// Log format.
    log_format: LogFormat,
    /// Upper bound of a scrape's fan-out, in milliseconds.
    scrape_timeout_ms: u64,
    /// Time kept back from the scraper's timeout, in milliseconds.
    scrape_margin_ms: u64,
    /// How long a final push stays served, in seconds.
    final_push_ttl_secs: u64,
    /// Tokens agents may present; empty means no authentication.
    agent_token: Vec<String>,
    /// A file with one agent token per line (`#` starts a comment).
    agent_tokens_file: PathBuf,
    /// PEM certificate chain for TLS on both listeners.
    tls_cert: PathBuf,
    /// PEM private key for TLS.
    tls_key: PathBuf,
    /// PEM CA bundle; when set, clients must present a certificate it signed.
    tls_client_ca: PathBuf,
    /// Time a TLS handshake may take, in milliseconds.
    tls_handshake_timeout_ms: u64,
    /// Cap on agent connections.
    max_agents: usize,
    /// Cap on concurrent HTTP connections.
    max_http_connections: usize,
    /// Time a client has to send a request's headers, in milliseconds.
    http_header_timeout_ms: u64,
    /// Time an HTTP connection may stay idle, in milliseconds.
    http_idle_timeout_ms: u64,
    /// Time a response write may stay blocked on a non-reading client, in milliseconds.
    http_write_timeout_ms: u64,
    /// Most exposition bodies held at once.
    max_scrape_bodies: usize,
    /// Most concurrent HTTP/2 streams per connection.
    http2_max_streams: u32,
    /// Time an agent has to complete its handshake, in milliseconds.
    handshake_timeout_ms: u64,
    /// Heartbeat interval, in milliseconds.
    heartbeat_interval_ms: u64,
    /// Largest agent frame accepted, in bytes.
    max_frame_bytes: usize,
    /// Most bytes of agent frames in flight across all agent connections.
    max_frame_bytes_in_flight: usize,
    /// Most agent connections still in their handshake.
    max_handshakes: usize,
    /// What happens when an agent says Hello with a connected one's identity.
    identity_collision: IdentityCollision,
    /// Most families plus series in one agent answer or push.
    max_series_per_answer: usize,
    /// Most final pushes held at once.
    max_pushes: usize,
    /// Most bytes of pushed families held at once.
    max_push_bytes: usize,
    /// Time shutdown waits for connections, in milliseconds.
    shutdown_timeout_ms: u64,
    /// Metric event streams to read (`host:port` of a metrics-exporter-tcp
    /// or tether exporter stream).
    stream_source: Vec<String>,
    /// Time a stream source may send nothing before it is reported down, in milliseconds.
    stream_stall_timeout_ms: u64,
    /// Most series one stream source may hold.
    stream_max_series: usize,
    /// Most bytes one stream source may hold.
    stream_max_bytes: usize,
    /// Directory of the durable push store.
    data_dir: PathBuf,
    /// Keep pushed groups in memory only.
    no_persistence: bool,
    /// Time a pushed group stays served, in seconds (0 = until deleted).
    push_ttl_secs: u64,
    /// Serve `PUT /api/v1/admin/wipe`.
    enable_admin_api: bool,
    /// Largest push body as sent, in bytes.
    push_max_body_bytes: usize,
    /// Largest push body once decompressed, in bytes.
    push_max_decompressed_bytes: usize,
    /// Most series in one push.
    push_max_series_per_push: usize,
    /// Most push groups.
    push_max_groups: usize,
    /// Most series in all push groups.
    push_max_series: usize,
    /// Most bytes of pushed families held in all groups.
    push_max_held_bytes: usize,
    /// Longest metric or label name in a push, in bytes.
    push_max_name_bytes: usize,
    /// Longest label value or help text in a push, in bytes.
    push_max_label_value_bytes: usize,
    /// Time a push body may take to arrive, in milliseconds.
    push_body_timeout_ms: u64,
    /// Most bytes of push bodies being read and checked at once.
    push_max_bytes_in_flight: usize,
    /// Bearer tokens pushes may present; with basic auth users, pushes need one of them.
    push_token: Vec<String>,
    /// Basic auth users for pushes, `USER:PASSWORD` or `USER:BCRYPT-HASH`.
    push_basic_auth: Vec<String>,
    /// Jobs whose pushes always add into their group (aggregation).
    push_aggregate_job: Vec<String>,
    /// Password of the drain at `/drain` (user `drain`), plain or a bcrypt
    /// hash; setting it enables the drain.
    drain_password: String,
    /// Prefix of instance-metric lines in drains.
    drain_prefix: String,
    /// Time a drain series stays served without an update, in seconds (0 = forever).
    drain_series_ttl_secs: u64,
    /// Most series one drain holds.
    drain_max_series: usize,
    /// Most bytes one drain's series take (estimated).
    drain_max_held_bytes: usize,
    /// Largest drain body, in bytes.
    drain_max_body_bytes: usize,
    /// Longest drain line, in bytes.
    drain_max_line_bytes: usize,
    /// Time a drain body may take to arrive, in milliseconds.
    drain_body_timeout_ms: u64,
    /// More drains, each with its own path, credentials and prefix
    /// (`[[drain]]` tables of the file).
    drain: Vec<DrainTable>,
    /// Password the expositions (`/metrics`, `/metrics/connected`,
    /// `/metrics/proxy`) require (user `metrics`), plain or a bcrypt hash.
    metrics_password: String,
}

/// One drain of the configuration file (`[[drain]]`).
#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DrainTable {
    /// The route, such as `/drain/myapp`.
    pub path: String,
    /// The basic-auth user (`drain` when not given).
    pub user: Option<String>,
    /// Its password, plain or a bcrypt hash.
    pub password: String,
    /// The prefix of instance-metric lines (`drain_prefix` when not given).
    pub prefix: Option<String>,
    /// Series TTL in seconds (`drain_series_ttl_secs` when not given; 0 = forever).
    pub series_ttl_secs: Option<u64>,
    /// Most series held (`drain_max_series` when not given).
    pub max_series: Option<usize>,
}

impl RawConfig {
    /// Reads a TOML configuration file.
    pub fn from_toml(text: &str) -> Result<RawConfig, ConfigError> {
        toml::from_str(text).map_err(|e| ConfigError::Toml(e.to_string()))
    }

    /// Both listeners on `127.0.0.1:0`, so the system picks free ports,
    /// and pushes in memory only: the start of a configuration for tests
    /// and embedding.
    pub fn loopback() -> RawConfig {
        RawConfig {
            http_listen: Some("127.0.0.1:0".to_owned()),
            agent_listen: Some("127.0.0.1:0".to_owned()),
            no_persistence: Some(true),
            ..RawConfig::default()
        }
    }
}

/// The TLS files configured, as named (their contents are loaded into the
/// listeners' TLS configurations during validation).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TlsFiles {
    /// Certificate chain file.
    pub cert: PathBuf,
    /// Private key file.
    pub key: PathBuf,
    /// Client CA bundle, for mutual TLS.
    pub client_ca: Option<PathBuf>,
}

/// TLS loaded and checked: one server configuration per listener (HTTP
/// offers h2 and http/1.1 by ALPN, the agent listener nothing).
#[derive(Clone)]
pub(crate) struct Tls {
    pub(crate) files: TlsFiles,
    pub(crate) http: Arc<rustls::ServerConfig>,
    pub(crate) agents: Arc<rustls::ServerConfig>,
    pub(crate) handshake_timeout: Duration,
}

impl std::fmt::Debug for Tls {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Tls")
            .field("files", &self.files)
            .field("handshake_timeout", &self.handshake_timeout)
            .finish_non_exhaustive()
    }
}

/// The HTTP listener's settings.
#[derive(Debug, Clone)]
pub(crate) struct HttpSettings {
    pub(crate) listen: SocketAddr,
    pub(crate) max_connections: usize,
    pub(crate) header_timeout: Duration,
    pub(crate) idle_timeout: Duration,
    pub(crate) write_timeout: Duration,
    /// Most exposition bodies held at once.
    pub(crate) max_bodies: usize,
    /// Most concurrent HTTP/2 streams per connection.
    pub(crate) http2_max_streams: u32,
    /// Upper bound of a scrape's fan-out.
    pub(crate) scrape_timeout: Duration,
    /// Time kept back from the scraper's timeout.
    pub(crate) scrape_margin: Duration,
    /// Who may read the expositions; no one needs to be named when empty.
    pub(crate) metrics_credentials: crate::credentials::Credentials,
}

/// The validated configuration the gateway runs with.
///
/// It cannot hold an invalid value: the only ways to make one are
/// [`Config::from_raw`] (and [`Config::default`] / [`Config::loopback`],
/// which go through it), and every file it names (tokens, TLS) has been
/// read and checked by then, so every configuration error surfaces before
/// anything binds.
///
/// A value that would break the gateway at run time (a zero heartbeat
/// interval, which would panic the first agent connection) cannot be
/// written into one:
///
/// ```compile_fail
/// let config = tether_gateway::Config {
///     heartbeat_interval: std::time::Duration::ZERO,
///     ..tether_gateway::Config::loopback()
/// };
/// ```
///
/// and is refused, naming the setting, on the way in:
///
/// ```
/// use tether_gateway::{Config, RawConfig};
/// let error = Config::from_raw(&RawConfig {
///     heartbeat_interval_ms: Some(0),
///     ..RawConfig::loopback()
/// })
/// .unwrap_err();
/// assert!(error.to_string().starts_with("heartbeat_interval_ms"));
/// ```
#[derive(Debug, Clone)]
pub struct Config {
    pub(crate) log_format: LogFormat,
    pub(crate) http: HttpSettings,
    /// Each source's own section (`crate::sources::Sections`).
    pub(crate) sources: crate::sources::Sections,
    pub(crate) tls: Option<Tls>,
    pub(crate) shutdown_timeout: Duration,
}

impl Default for Config {
    fn default() -> Config {
        // The defaults are constants checked by a unit test, and name no
        // file, so validation of an empty raw configuration cannot fail.
        Config::from_raw(&RawConfig::default())
            .unwrap_or_else(|e| unreachable!("defaults are valid: {e}"))
    }
}

impl Config {
    /// Validates a merged raw configuration; reads the tokens file and
    /// loads the TLS files.
    pub fn from_raw(raw: &RawConfig) -> Result<Config, ConfigError> {
        let http_listen = parse_addr(
            "http_listen",
            raw.http_listen.as_deref().unwrap_or(DEFAULT_HTTP_LISTEN),
        )?;
        let scrape_timeout_ms = positive(
            "scrape_timeout_ms",
            raw.scrape_timeout_ms.unwrap_or(DEFAULT_SCRAPE_TIMEOUT_MS),
        )?;
        let scrape_margin_ms = raw.scrape_margin_ms.unwrap_or(DEFAULT_SCRAPE_MARGIN_MS);
        if scrape_margin_ms >= scrape_timeout_ms {
            return Err(ConfigError::Invalid {
                key: "scrape_margin_ms",
                message: format!(
                    "{scrape_margin_ms} ms leaves no time for a scrape of at most {scrape_timeout_ms} ms: make it smaller"
                ),
            });
        }
        let http = HttpSettings {
            listen: http_listen,
            max_connections: positive_usize(
                "max_http_connections",
                raw.max_http_connections
                    .unwrap_or(DEFAULT_MAX_HTTP_CONNECTIONS),
            )?,
            header_timeout: millis(
                "http_header_timeout_ms",
                raw.http_header_timeout_ms,
                DEFAULT_HTTP_HEADER_TIMEOUT_MS,
            )?,
            idle_timeout: millis(
                "http_idle_timeout_ms",
                raw.http_idle_timeout_ms,
                DEFAULT_HTTP_IDLE_TIMEOUT_MS,
            )?,
            write_timeout: millis(
                "http_write_timeout_ms",
                raw.http_write_timeout_ms,
                DEFAULT_HTTP_WRITE_TIMEOUT_MS,
            )?,
            max_bodies: positive_usize(
                "max_scrape_bodies",
                raw.max_scrape_bodies.unwrap_or(DEFAULT_MAX_SCRAPE_BODIES),
            )?,
            http2_max_streams: match raw.http2_max_streams.unwrap_or(DEFAULT_HTTP2_MAX_STREAMS) {
                0 => {
                    return Err(ConfigError::Invalid {
                        key: "http2_max_streams",
                        message: "0 would refuse every HTTP/2 request: give at least 1".to_owned(),
                    });
                }
                n => n,
            },
            scrape_timeout: Duration::from_millis(scrape_timeout_ms),
            scrape_margin: Duration::from_millis(scrape_margin_ms),
            metrics_credentials: match &raw.metrics_password {
                None => crate::credentials::Credentials::default(),
                Some(password) => crate::credentials::Credentials::user(METRICS_USER, password)
                    .map_err(|message| ConfigError::Invalid {
                        key: "metrics_password",
                        message,
                    })?,
            },
        };
        let sources = crate::sources::Sections::from_raw(raw)?;
        if let Some(clash) = sources
            .listens()
            .into_iter()
            .find(|(_, addr)| *addr == http.listen && addr.port() != 0)
        {
            return Err(ConfigError::Invalid {
                key: clash.0,
                message: format!(
                    "{} is also the HTTP address: give the two listeners different ports",
                    clash.1
                ),
            });
        }
        let tls = load_tls(raw)?;
        Ok(Config {
            log_format: raw.log_format.unwrap_or_default(),
            http,
            sources,
            tls,
            shutdown_timeout: Duration::from_millis(
                raw.shutdown_timeout_ms
                    .unwrap_or(DEFAULT_SHUTDOWN_TIMEOUT_MS),
            ),
        })
    }

    /// A configuration for tests and embedding: both listeners on
    /// `127.0.0.1:0`, so the system picks free ports.
    pub fn loopback() -> Config {
        Config::from_raw(&RawConfig::loopback())
            .unwrap_or_else(|e| unreachable!("loopback defaults are valid: {e}"))
    }

    /// The settings `/api/v1/status` reports, by flag name; every value a
    /// string as the Pushgateway gives them, secrets never included.
    pub(crate) fn flags(&self) -> Vec<(String, String)> {
        let push = &self.sources.push;
        let flag = |name: &str, value: String| (name.to_owned(), value);
        vec![
            flag("http-listen", self.http.listen.to_string()),
            flag("agent-listen", self.sources.agents.listen.to_string()),
            flag(
                "data-dir",
                push.data_dir
                    .as_ref()
                    .map_or_else(String::new, |d| d.display().to_string()),
            ),
            flag("no-persistence", push.data_dir.is_none().to_string()),
            flag(
                "push-ttl-secs",
                push.ttl.map_or(0, |t| t.as_secs()).to_string(),
            ),
            flag("enable-admin-api", push.admin_api.to_string()),
            flag("push-max-body-bytes", push.max_body_bytes.to_string()),
            flag(
                "push-max-decompressed-bytes",
                push.body.max_decompressed_bytes.to_string(),
            ),
            flag("push-max-series-per-push", push.body.max_series.to_string()),
            flag("push-max-groups", push.store.max_groups.to_string()),
            flag("push-max-series", push.store.max_series.to_string()),
            flag(
                "push-auth",
                if push.credentials.required() {
                    "on"
                } else {
                    "off"
                }
                .to_owned(),
            ),
            flag(
                "scrape-timeout-ms",
                self.http.scrape_timeout.as_millis().to_string(),
            ),
            flag("tls", self.tls.is_some().to_string()),
            flag(
                "drains",
                self.sources
                    .drains
                    .drains
                    .iter()
                    .map(|d| d.path.as_str())
                    .collect::<Vec<_>>()
                    .join(","),
            ),
            flag(
                "metrics-auth",
                if self.http.metrics_credentials.required() {
                    "on"
                } else {
                    "off"
                }
                .to_owned(),
            ),
        ]
    }

    /// The directory of the durable push store; `None` with `--no-persistence`.
    pub fn data_dir(&self) -> Option<&std::path::Path> {
        self.sources.push.data_dir.as_deref()
    }

    /// The address the HTTP server binds.
    pub fn http_listen(&self) -> SocketAddr {
        self.http.listen
    }

    /// The address the agent listener binds.
    pub fn agent_listen(&self) -> SocketAddr {
        self.sources.agents.listen
    }

    /// The log format.
    pub fn log_format(&self) -> LogFormat {
        self.log_format
    }

    /// The TLS files in use, if any.
    pub fn tls_files(&self) -> Option<&TlsFiles> {
        self.tls.as_ref().map(|tls| &tls.files)
    }

    /// Whether a listener is reachable beyond this host.
    pub fn listens_beyond_loopback(&self) -> bool {
        !self.http.listen.ip().is_loopback()
            || self
                .sources
                .listens()
                .iter()
                .any(|(_, addr)| !addr.ip().is_loopback())
    }

    /// Whether agents must prove who they are (a token or a client
    /// certificate).
    pub fn authenticates_agents(&self) -> bool {
        !self.sources.agents.tokens.is_empty()
            || self
                .tls
                .as_ref()
                .is_some_and(|tls| tls.files.client_ca.is_some())
    }
}

fn load_tls(raw: &RawConfig) -> Result<Option<Tls>, ConfigError> {
    let files = match (&raw.tls_cert, &raw.tls_key, &raw.tls_client_ca) {
        (None, None, None) => return Ok(None),
        (Some(cert), Some(key), client_ca) => TlsFiles {
            cert: cert.clone(),
            key: key.clone(),
            client_ca: client_ca.clone(),
        },
        (None, _, _) | (_, None, _) => {
            return Err(ConfigError::Invalid {
                key: "tls_cert",
                message: "TLS needs both tls_cert and tls_key (and tls_client_ca only with them)"
                    .to_owned(),
            });
        }
    };
    let handshake_timeout = millis(
        "tls_handshake_timeout_ms",
        raw.tls_handshake_timeout_ms,
        DEFAULT_TLS_HANDSHAKE_TIMEOUT_MS,
    )?;
    Ok(Some(Tls {
        http: crate::tls::server_config(&files, &[b"h2", b"http/1.1"])?,
        agents: crate::tls::server_config(&files, &[])?,
        files,
        handshake_timeout,
    }))
}

/// A duration in milliseconds that must be positive.
pub(crate) fn millis(
    key: &'static str,
    value: Option<u64>,
    default: u64,
) -> Result<Duration, ConfigError> {
    Ok(Duration::from_millis(positive(
        key,
        value.unwrap_or(default),
    )?))
}

pub(crate) fn parse_addr(key: &'static str, text: &str) -> Result<SocketAddr, ConfigError> {
    text.parse().map_err(|_| ConfigError::Invalid {
        key,
        message: format!(
            "\"{text}\" is not an address: write IP:PORT, such as 0.0.0.0:9091 or [::1]:7001"
        ),
    })
}

pub(crate) fn positive(key: &'static str, value: u64) -> Result<u64, ConfigError> {
    if value == 0 {
        return Err(ConfigError::Invalid {
            key,
            message: "must be greater than 0".to_owned(),
        });
    }
    Ok(value)
}

pub(crate) fn positive_usize(key: &'static str, value: usize) -> Result<usize, ConfigError> {
    if value == 0 {
        return Err(ConfigError::Invalid {
            key,
            message: "must be greater than 0".to_owned(),
        });
    }
    Ok(value)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_validate() {
        let config = Config::from_raw(&RawConfig::default()).expect("defaults are valid");
        assert_eq!(config.http_listen().port(), 9091);
        assert_eq!(config.agent_listen().port(), 7001);
        assert_eq!(
            config.sources.agents.final_push_ttl,
            Duration::from_secs(300)
        );
        assert!(config.sources.agents.tokens.is_empty());
        assert!(config.listens_beyond_loopback());
        assert!(!Config::loopback().listens_beyond_loopback());
    }

    #[test]
    fn higher_source_wins_and_gaps_fill_from_lower() {
        let flags = RawConfig {
            scrape_timeout_ms: Some(5000),
            ..RawConfig::default()
        };
        let file =
            RawConfig::from_toml("scrape_timeout_ms = 9000\nhttp_listen = \"127.0.0.1:9999\"\n")
                .expect("valid toml");
        let merged = flags.or(file);
        assert_eq!(merged.scrape_timeout_ms, Some(5000));
        assert_eq!(merged.http_listen.as_deref(), Some("127.0.0.1:9999"));
    }

    #[test]
    fn unknown_keys_are_rejected_with_their_name() {
        let error = RawConfig::from_toml("scrape_timeout = 5\n").expect_err("unknown key");
        assert!(error.to_string().contains("scrape_timeout"), "{error}");
    }

    #[test]
    fn invalid_values_name_their_key() {
        let cases = [
            (
                RawConfig {
                    http_listen: Some("localhost".into()),
                    ..RawConfig::default()
                },
                "http_listen",
            ),
            (
                RawConfig {
                    scrape_timeout_ms: Some(0),
                    ..RawConfig::default()
                },
                "scrape_timeout_ms",
            ),
            (
                RawConfig {
                    scrape_margin_ms: Some(20_000),
                    ..RawConfig::default()
                },
                "scrape_margin_ms",
            ),
            (
                RawConfig {
                    tls_key: Some("k.pem".into()),
                    ..RawConfig::default()
                },
                "tls_cert",
            ),
            (
                RawConfig {
                    agent_token: Some(vec![String::new()]),
                    ..RawConfig::default()
                },
                "agent_token",
            ),
            (
                RawConfig {
                    max_frame_bytes: Some(10),
                    ..RawConfig::default()
                },
                "max_frame_bytes",
            ),
            (
                RawConfig {
                    stream_source: Some(vec!["localhost".into()]),
                    ..RawConfig::default()
                },
                "stream_source",
            ),
            (
                RawConfig {
                    agent_tokens_file: Some("/nonexistent/tokens".into()),
                    ..RawConfig::default()
                },
                "agent_tokens_file",
            ),
            (
                RawConfig {
                    http_listen: Some("127.0.0.1:7001".into()),
                    agent_listen: Some("127.0.0.1:7001".into()),
                    ..RawConfig::default()
                },
                "agent_listen",
            ),
        ];
        for (raw, key) in cases {
            let error = Config::from_raw(&raw).expect_err(key);
            assert!(error.to_string().starts_with(key), "{key}: {error}");
        }
    }

    #[test]
    fn tokens_file_adds_tokens_and_skips_comments() {
        let dir = std::env::temp_dir().join(format!("tether-config-{}", std::process::id()));
        std::fs::create_dir_all(&dir).expect("temp dir");
        let path = dir.join("tokens");
        std::fs::write(&path, "# agents\nalpha\n\n  beta  \n").expect("write tokens");
        let config = Config::from_raw(&RawConfig {
            agent_token: Some(vec!["gamma".into()]),
            agent_tokens_file: Some(path),
            ..RawConfig::default()
        })
        .expect("valid");
        assert_eq!(config.sources.agents.tokens, ["gamma", "alpha", "beta"]);
        std::fs::remove_dir_all(&dir).expect("cleanup");
    }
}
