//! `tether gateway`: flags and environment into a validated configuration,
//! then the gateway runs until SIGINT or SIGTERM.

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Args, ValueEnum};
use tether_gateway::{Config, IdentityCollision, LogFormat, RawConfig};

/// Exit status for a configuration that cannot run (EX_USAGE).
const EXIT_CONFIG: u8 = 64;
/// Exit status when the gateway failed while running.
const EXIT_FAILURE: u8 = 1;

/// Every flag also reads `TETHER_<FLAG>` from the environment and a key of
/// the TOML file given by `--config` (flag > environment > file > default).
#[derive(Debug, Args)]
pub(crate) struct GatewayArgs {
    /// TOML file with settings named like the flags, in snake case.
    #[arg(long, env = "TETHER_CONFIG", value_name = "FILE")]
    config: Option<PathBuf>,

    /// Address for HTTP: Prometheus scrapes, health [default: 0.0.0.0:9091].
    #[arg(long, env = "TETHER_HTTP_LISTEN", value_name = "ADDR")]
    http_listen: Option<String>,

    /// Address agents dial [default: 0.0.0.0:7001].
    #[arg(long, env = "TETHER_AGENT_LISTEN", value_name = "ADDR")]
    agent_listen: Option<String>,

    /// Log format [default: text].
    #[arg(long, env = "TETHER_LOG_FORMAT", value_enum)]
    log_format: Option<LogFormatArg>,

    /// Upper bound of a scrape's fan-out to agents [default: 10000].
    #[arg(long, env = "TETHER_SCRAPE_TIMEOUT_MS", value_name = "MS")]
    scrape_timeout_ms: Option<u64>,

    /// Time kept back from Prometheus' scrape timeout to merge and send [default: 250].
    #[arg(long, env = "TETHER_SCRAPE_MARGIN_MS", value_name = "MS")]
    scrape_margin_ms: Option<u64>,

    /// How long an exiting agent's final push stays served [default: 300].
    #[arg(long, env = "TETHER_FINAL_PUSH_TTL_SECS", value_name = "SECS")]
    final_push_ttl_secs: Option<u64>,

    /// A token agents must present (repeatable; comma-separated in the environment).
    #[arg(
        long,
        env = "TETHER_AGENT_TOKEN",
        value_name = "TOKEN",
        value_delimiter = ','
    )]
    agent_token: Option<Vec<String>>,

    /// File with one agent token per line.
    #[arg(long, env = "TETHER_AGENT_TOKENS_FILE", value_name = "FILE")]
    agent_tokens_file: Option<PathBuf>,

    /// PEM certificate chain: serve TLS on both listeners.
    #[arg(long, env = "TETHER_TLS_CERT", value_name = "FILE")]
    tls_cert: Option<PathBuf>,

    /// PEM private key of the certificate.
    #[arg(long, env = "TETHER_TLS_KEY", value_name = "FILE")]
    tls_key: Option<PathBuf>,

    /// PEM CA bundle: require client certificates it signed (mutual TLS).
    #[arg(long, env = "TETHER_TLS_CLIENT_CA", value_name = "FILE")]
    tls_client_ca: Option<PathBuf>,

    /// Time a TLS handshake may take on either listener [default: 5000].
    #[arg(long, env = "TETHER_TLS_HANDSHAKE_TIMEOUT_MS", value_name = "MS")]
    tls_handshake_timeout_ms: Option<u64>,

    /// Most agents connected at once [default: 10000].
    #[arg(long, env = "TETHER_MAX_AGENTS", value_name = "N")]
    max_agents: Option<usize>,

    /// Most HTTP connections at once [default: 1024].
    #[arg(long, env = "TETHER_MAX_HTTP_CONNECTIONS", value_name = "N")]
    max_http_connections: Option<usize>,

    /// Time an HTTP client has to send a request's headers; a silent or slow sender is closed [default: 5000].
    #[arg(long, env = "TETHER_HTTP_HEADER_TIMEOUT_MS", value_name = "MS")]
    http_header_timeout_ms: Option<u64>,

    /// Time an HTTP connection may stay idle between requests [default: 60000].
    #[arg(long, env = "TETHER_HTTP_IDLE_TIMEOUT_MS", value_name = "MS")]
    http_idle_timeout_ms: Option<u64>,

    /// Time a response may wait on a client that does not read it; then it is dropped [default: 10000].
    #[arg(long, env = "TETHER_HTTP_WRITE_TIMEOUT_MS", value_name = "MS")]
    http_write_timeout_ms: Option<u64>,

    /// Time an agent has to complete its handshake [default: 5000].
    #[arg(long, env = "TETHER_HANDSHAKE_TIMEOUT_MS", value_name = "MS")]
    handshake_timeout_ms: Option<u64>,

    /// Heartbeat interval; a peer silent for three is dead [default: 15000].
    #[arg(long, env = "TETHER_HEARTBEAT_INTERVAL_MS", value_name = "MS")]
    heartbeat_interval_ms: Option<u64>,

    /// Largest agent frame accepted [default: 16777216].
    #[arg(long, env = "TETHER_MAX_FRAME_BYTES", value_name = "BYTES")]
    max_frame_bytes: Option<usize>,

    /// Most families plus series in one agent answer or push; larger ones are refused undecoded [default: 500000].
    #[arg(long, env = "TETHER_MAX_SERIES_PER_ANSWER", value_name = "N")]
    max_series_per_answer: Option<usize>,

    /// Most final pushes held at once; the oldest goes first [default: 10000].
    #[arg(long, env = "TETHER_MAX_PUSHES", value_name = "N")]
    max_pushes: Option<usize>,

    /// Most bytes of final pushes held at once; the oldest go first [default: 268435456].
    #[arg(long, env = "TETHER_MAX_PUSH_BYTES", value_name = "BYTES")]
    max_push_bytes: Option<usize>,

    /// Most bytes of agent frames read or processed at once, across all agents; a frame past it waits unread [default: 268435456].
    #[arg(long, env = "TETHER_MAX_FRAME_BYTES_IN_FLIGHT", value_name = "BYTES")]
    max_frame_bytes_in_flight: Option<usize>,

    /// Most agent connections in their handshake (TLS, Hello); past it the longest waiting is closed [default: 1024].
    #[arg(long, env = "TETHER_MAX_HANDSHAKES", value_name = "N")]
    max_handshakes: Option<usize>,

    /// Who keeps an identity two agents claim: the connected agent, if it answers a ping, or the newcomer [default: keep-connected].
    #[arg(long, env = "TETHER_IDENTITY_COLLISION", value_enum)]
    identity_collision: Option<IdentityCollisionArg>,

    /// Most exposition bodies held at once (shared by scrapes of one round); past it a scrape waits, then gets 503 [default: 8].
    #[arg(long, env = "TETHER_MAX_SCRAPE_BODIES", value_name = "N")]
    max_scrape_bodies: Option<usize>,

    /// Most concurrent HTTP/2 streams per connection [default: 8].
    #[arg(long, env = "TETHER_HTTP2_MAX_STREAMS", value_name = "N")]
    http2_max_streams: Option<u32>,

    /// Time shutdown waits for connections to finish [default: 10000].
    #[arg(long, env = "TETHER_SHUTDOWN_TIMEOUT_MS", value_name = "MS")]
    shutdown_timeout_ms: Option<u64>,

    /// A metric event stream to read (metrics-exporter-tcp or tether's exporter; repeatable).
    #[arg(
        long,
        env = "TETHER_STREAM_SOURCE",
        value_name = "HOST:PORT",
        value_delimiter = ','
    )]
    stream_source: Option<Vec<String>>,

    /// Time a stream source may send nothing before it is reported down and redialed [default: 300000].
    #[arg(long, env = "TETHER_STREAM_STALL_TIMEOUT_MS", value_name = "MS")]
    stream_stall_timeout_ms: Option<u64>,

    /// Most series one stream source may hold [default: 100000].
    #[arg(long, env = "TETHER_STREAM_MAX_SERIES", value_name = "N")]
    stream_max_series: Option<usize>,

    /// Most bytes of names, labels and help one stream source may hold [default: 67108864].
    #[arg(long, env = "TETHER_STREAM_MAX_BYTES", value_name = "BYTES")]
    stream_max_bytes: Option<usize>,

    /// Directory of the durable push store [default: ./tether-data].
    #[arg(long, env = "TETHER_DATA_DIR", value_name = "DIR")]
    data_dir: Option<PathBuf>,

    /// Keep pushed groups in memory only: a restart forgets them.
    #[arg(long, env = "TETHER_NO_PERSISTENCE")]
    no_persistence: bool,

    /// Time a pushed group stays served after its last push; 0 = until deleted [default: 0].
    /// A push may set its own with the header X-Tether-TTL-Seconds.
    #[arg(long, env = "TETHER_PUSH_TTL_SECS", value_name = "SECS")]
    push_ttl_secs: Option<u64>,

    /// Serve PUT /api/v1/admin/wipe, which deletes every push group.
    #[arg(long, env = "TETHER_ENABLE_ADMIN_API")]
    enable_admin_api: bool,

    /// Largest push body as sent; past it, 413 [default: 16777216].
    #[arg(long, env = "TETHER_PUSH_MAX_BODY_BYTES", value_name = "BYTES")]
    push_max_body_bytes: Option<usize>,

    /// Largest push body once decompressed; past it, 413 [default: 33554432].
    #[arg(long, env = "TETHER_PUSH_MAX_DECOMPRESSED_BYTES", value_name = "BYTES")]
    push_max_decompressed_bytes: Option<usize>,

    /// Most series in one push; past it, 413 [default: 200000].
    #[arg(long, env = "TETHER_PUSH_MAX_SERIES_PER_PUSH", value_name = "N")]
    push_max_series_per_push: Option<usize>,

    /// Most push groups; a push creating one more gets 429 [default: 10000].
    #[arg(long, env = "TETHER_PUSH_MAX_GROUPS", value_name = "N")]
    push_max_groups: Option<usize>,

    /// Most series in all push groups; a push passing it gets 429 [default: 2000000].
    #[arg(long, env = "TETHER_PUSH_MAX_SERIES", value_name = "N")]
    push_max_series: Option<usize>,

    /// Most bytes of pushed metrics held in all groups (estimated); a push passing it gets 429 [default: 1073741824].
    #[arg(long, env = "TETHER_PUSH_MAX_HELD_BYTES", value_name = "BYTES")]
    push_max_held_bytes: Option<usize>,

    /// Longest metric or label name in a push; past it, 413 [default: 1024].
    #[arg(long, env = "TETHER_PUSH_MAX_NAME_BYTES", value_name = "BYTES")]
    push_max_name_bytes: Option<usize>,

    /// Longest label value or help text in a push; past it, 413 [default: 16384].
    #[arg(long, env = "TETHER_PUSH_MAX_LABEL_VALUE_BYTES", value_name = "BYTES")]
    push_max_label_value_bytes: Option<usize>,

    /// Time a push body may take to arrive; past it, 408 [default: 30000].
    #[arg(long, env = "TETHER_PUSH_BODY_TIMEOUT_MS", value_name = "MS")]
    push_body_timeout_ms: Option<u64>,

    /// Most bytes of push bodies read and checked at once; more wait [default: 268435456].
    #[arg(long, env = "TETHER_PUSH_MAX_BYTES_IN_FLIGHT", value_name = "BYTES")]
    push_max_bytes_in_flight: Option<usize>,

    /// A bearer token pushes must present (repeatable; comma-separated in the environment).
    #[arg(
        long,
        env = "TETHER_PUSH_TOKEN",
        value_name = "TOKEN",
        value_delimiter = ','
    )]
    push_token: Option<Vec<String>>,

    /// A basic-auth user for pushes, USER:PASSWORD or USER:BCRYPT-HASH (repeatable).
    #[arg(
        long,
        env = "TETHER_PUSH_BASIC_AUTH",
        value_name = "USER:PASSWORD",
        value_delimiter = ','
    )]
    push_basic_auth: Option<Vec<String>>,

    /// A job whose pushes always add into the stored group (counters and histograms sum up; repeatable).
    #[arg(
        long,
        env = "TETHER_PUSH_AGGREGATE_JOB",
        value_name = "JOB",
        value_delimiter = ','
    )]
    push_aggregate_job: Option<Vec<String>>,

    /// Password of the Heroku drain at /drain (user `drain`), plain or a bcrypt hash; enables it. Also read from PASSWORD_DRAIN.
    #[arg(
        long,
        env = "TETHER_DRAIN_PASSWORD",
        value_name = "PASSWORD",
        hide_env_values = true
    )]
    drain_password: Option<String>,

    /// Prefix of instance-metric lines in drains [default: crates-io-heroku-metrics:ingest].
    #[arg(long, env = "TETHER_DRAIN_PREFIX", value_name = "PREFIX")]
    drain_prefix: Option<String>,

    /// Time a drain series stays served without an update; 0 = forever [default: 900].
    #[arg(long, env = "TETHER_DRAIN_SERIES_TTL_SECS", value_name = "SECS")]
    drain_series_ttl_secs: Option<u64>,

    /// Most series one drain holds; lines creating more are refused and counted [default: 100000].
    #[arg(long, env = "TETHER_DRAIN_MAX_SERIES", value_name = "N")]
    drain_max_series: Option<usize>,

    /// Most bytes one drain's series take (estimated) [default: 67108864].
    #[arg(long, env = "TETHER_DRAIN_MAX_HELD_BYTES", value_name = "BYTES")]
    drain_max_held_bytes: Option<usize>,

    /// Largest drain body; past it, 413 [default: 4194304].
    #[arg(long, env = "TETHER_DRAIN_MAX_BODY_BYTES", value_name = "BYTES")]
    drain_max_body_bytes: Option<usize>,

    /// Longest drain line; a longer one is refused and counted [default: 65536].
    #[arg(long, env = "TETHER_DRAIN_MAX_LINE_BYTES", value_name = "BYTES")]
    drain_max_line_bytes: Option<usize>,

    /// Time a drain body may take to arrive; past it, 408 [default: 30000].
    #[arg(long, env = "TETHER_DRAIN_BODY_TIMEOUT_MS", value_name = "MS")]
    drain_body_timeout_ms: Option<u64>,

    /// Password /metrics requires (user `metrics`), plain or a bcrypt hash. Also read from PASSWORD_METRICS.
    #[arg(
        long,
        env = "TETHER_METRICS_PASSWORD",
        value_name = "PASSWORD",
        hide_env_values = true
    )]
    metrics_password: Option<String>,
}

/// The environment variable the drain password is also read from, as the
/// log-drain container tether replaces named it.
const PASSWORD_DRAIN_ENV: &str = "PASSWORD_DRAIN";
/// The environment variable the expositions' password is also read from.
const PASSWORD_METRICS_ENV: &str = "PASSWORD_METRICS";

/// A variable of the environment, if set and not empty.
fn env_value(name: &str) -> Option<String> {
    std::env::var(name).ok().filter(|v| !v.is_empty())
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
enum IdentityCollisionArg {
    KeepConnected,
    NewestWins,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
enum LogFormatArg {
    Text,
    Json,
}

impl GatewayArgs {
    /// The settings given on the command line and in the environment.
    fn raw(&self) -> RawConfig {
        RawConfig {
            http_listen: self.http_listen.clone(),
            agent_listen: self.agent_listen.clone(),
            log_format: self.log_format.map(|f| match f {
                LogFormatArg::Text => LogFormat::Text,
                LogFormatArg::Json => LogFormat::Json,
            }),
            scrape_timeout_ms: self.scrape_timeout_ms,
            scrape_margin_ms: self.scrape_margin_ms,
            final_push_ttl_secs: self.final_push_ttl_secs,
            agent_token: self.agent_token.clone(),
            agent_tokens_file: self.agent_tokens_file.clone(),
            tls_cert: self.tls_cert.clone(),
            tls_key: self.tls_key.clone(),
            tls_client_ca: self.tls_client_ca.clone(),
            max_agents: self.max_agents,
            max_http_connections: self.max_http_connections,
            handshake_timeout_ms: self.handshake_timeout_ms,
            heartbeat_interval_ms: self.heartbeat_interval_ms,
            max_frame_bytes: self.max_frame_bytes,
            shutdown_timeout_ms: self.shutdown_timeout_ms,
            stream_source: self.stream_source.clone(),
            tls_handshake_timeout_ms: self.tls_handshake_timeout_ms,
            http_header_timeout_ms: self.http_header_timeout_ms,
            http_idle_timeout_ms: self.http_idle_timeout_ms,
            http_write_timeout_ms: self.http_write_timeout_ms,
            stream_stall_timeout_ms: self.stream_stall_timeout_ms,
            stream_max_series: self.stream_max_series,
            stream_max_bytes: self.stream_max_bytes,
            max_series_per_answer: self.max_series_per_answer,
            max_pushes: self.max_pushes,
            max_push_bytes: self.max_push_bytes,
            max_frame_bytes_in_flight: self.max_frame_bytes_in_flight,
            max_handshakes: self.max_handshakes,
            identity_collision: self.identity_collision.map(|policy| match policy {
                IdentityCollisionArg::KeepConnected => IdentityCollision::KeepConnected,
                IdentityCollisionArg::NewestWins => IdentityCollision::NewestWins,
            }),
            max_scrape_bodies: self.max_scrape_bodies,
            http2_max_streams: self.http2_max_streams,
            data_dir: self.data_dir.clone(),
            no_persistence: self.no_persistence.then_some(true),
            push_ttl_secs: self.push_ttl_secs,
            enable_admin_api: self.enable_admin_api.then_some(true),
            push_max_body_bytes: self.push_max_body_bytes,
            push_max_decompressed_bytes: self.push_max_decompressed_bytes,
            push_max_series_per_push: self.push_max_series_per_push,
            push_max_groups: self.push_max_groups,
            push_max_series: self.push_max_series,
            push_max_held_bytes: self.push_max_held_bytes,
            push_max_name_bytes: self.push_max_name_bytes,
            push_max_label_value_bytes: self.push_max_label_value_bytes,
            push_body_timeout_ms: self.push_body_timeout_ms,
            push_max_bytes_in_flight: self.push_max_bytes_in_flight,
            push_token: self.push_token.clone(),
            push_basic_auth: self.push_basic_auth.clone(),
            push_aggregate_job: self.push_aggregate_job.clone(),
            drain_password: self
                .drain_password
                .clone()
                .or_else(|| env_value(PASSWORD_DRAIN_ENV)),
            drain_prefix: self.drain_prefix.clone(),
            drain_series_ttl_secs: self.drain_series_ttl_secs,
            drain_max_series: self.drain_max_series,
            drain_max_held_bytes: self.drain_max_held_bytes,
            drain_max_body_bytes: self.drain_max_body_bytes,
            drain_max_line_bytes: self.drain_max_line_bytes,
            drain_body_timeout_ms: self.drain_body_timeout_ms,
            drain: None,
            metrics_password: self
                .metrics_password
                .clone()
                .or_else(|| env_value(PASSWORD_METRICS_ENV)),
        }
    }

    /// The validated configuration: flags and environment over the file
    /// over the defaults.
    pub(crate) fn config(&self) -> anyhow::Result<Config> {
        let file = match &self.config {
            None => RawConfig::default(),
            Some(path) => {
                let text = std::fs::read_to_string(path)
                    .map_err(|e| anyhow::anyhow!("cannot read {}: {e}", path.display()))?;
                RawConfig::from_toml(&text)
                    .map_err(|e| anyhow::anyhow!("{}: {e}", path.display()))?
            }
        };
        Ok(Config::from_raw(&self.raw().or(file))?)
    }
}

pub(crate) fn run(args: &GatewayArgs) -> ExitCode {
    // Nothing binds and no runtime starts before the configuration is valid.
    let config = match args.config() {
        Ok(config) => config,
        Err(error) => {
            crate::setup::report_error(&format!(
                "tether gateway: invalid configuration: {error:#}"
            ));
            return ExitCode::from(EXIT_CONFIG);
        }
    };
    crate::setup::init_logging(config.log_format());
    let recorder = crate::setup::install_recorder();
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(runtime) => runtime,
        Err(error) => {
            tracing::error!(%error, "cannot start the async runtime");
            return ExitCode::from(EXIT_FAILURE);
        }
    };
    let result = runtime.block_on(async move {
        let shutdown = tokio_util::sync::CancellationToken::new();
        let gateway = tether_gateway::Gateway::bind(config, recorder).await?;
        let signal = shutdown.clone();
        tokio::spawn(async move {
            crate::setup::wait_for_signal().await;
            signal.cancel();
        });
        gateway.run(shutdown).await
    });
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(error) => {
            tracing::error!(error = %error, "gateway stopped");
            ExitCode::from(EXIT_FAILURE)
        }
    }
}
