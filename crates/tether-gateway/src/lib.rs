//! The tether gateway as a library: configuration, listeners, sources
//! (dial-out agents pulled on every scrape, Pushgateway-style pushes,
//! Heroku log drains, stream sources, the gateway's own metrics), the
//! merged view and its HTTP routes.
//!
//! The `tether` binary parses arguments and calls into this crate; nothing
//! here installs a global recorder or tracing subscriber.

mod auth_throttle;
mod config;
mod credentials;
mod error;
mod exposition;
mod http;
mod http_conn;
mod server;
mod sources;
mod state;
mod telemetry;
mod tls;
mod view;

pub use config::{
    Config, DEFAULT_AGENT_LISTEN, DEFAULT_FINAL_PUSH_TTL_SECS, DEFAULT_HANDSHAKE_TIMEOUT_MS,
    DEFAULT_HEARTBEAT_INTERVAL_MS, DEFAULT_HTTP_HEADER_TIMEOUT_MS, DEFAULT_HTTP_IDLE_TIMEOUT_MS,
    DEFAULT_HTTP_LISTEN, DEFAULT_HTTP_WRITE_TIMEOUT_MS, DEFAULT_HTTP2_MAX_STREAMS,
    DEFAULT_MAX_AGENTS, DEFAULT_MAX_FRAME_BYTES, DEFAULT_MAX_FRAME_BYTES_IN_FLIGHT,
    DEFAULT_MAX_HANDSHAKES, DEFAULT_MAX_HTTP_CONNECTIONS, DEFAULT_MAX_PUSH_BYTES,
    DEFAULT_MAX_PUSHES, DEFAULT_MAX_SCRAPE_BODIES, DEFAULT_MAX_SERIES_PER_ANSWER,
    DEFAULT_SCRAPE_MARGIN_MS, DEFAULT_SCRAPE_TIMEOUT_MS, DEFAULT_SHUTDOWN_TIMEOUT_MS,
    DEFAULT_STREAM_MAX_BYTES, DEFAULT_STREAM_MAX_SERIES, DEFAULT_STREAM_STALL_TIMEOUT_MS,
    DEFAULT_TLS_HANDSHAKE_TIMEOUT_MS, DrainTable, IdentityCollision, LogFormat, METRICS_USER,
    RawConfig, TlsFiles,
};
pub use error::{ConfigError, Error};
pub use server::{Gateway, SelfMetrics};
pub use sources::drain::{
    DEFAULT_DRAIN_BODY_TIMEOUT_MS, DEFAULT_DRAIN_MAX_BODY_BYTES, DEFAULT_DRAIN_MAX_HELD_BYTES,
    DEFAULT_DRAIN_MAX_LINE_BYTES, DEFAULT_DRAIN_MAX_SERIES, DEFAULT_DRAIN_PATH,
    DEFAULT_DRAIN_PREFIX, DEFAULT_DRAIN_SERIES_TTL_SECS, DEFAULT_DRAIN_USER,
};
pub use sources::push::{
    DEFAULT_DATA_DIR, DEFAULT_PUSH_BODY_TIMEOUT_MS, DEFAULT_PUSH_MAX_BODY_BYTES,
    DEFAULT_PUSH_MAX_BYTES_IN_FLIGHT, DEFAULT_PUSH_MAX_DECOMPRESSED_BYTES, DEFAULT_PUSH_MAX_GROUPS,
    DEFAULT_PUSH_MAX_HELD_BYTES, DEFAULT_PUSH_MAX_LABEL_VALUE_BYTES, DEFAULT_PUSH_MAX_NAME_BYTES,
    DEFAULT_PUSH_MAX_SERIES, DEFAULT_PUSH_MAX_SERIES_PER_PUSH, DEFAULT_PUSH_TTL_SECS,
};
pub use state::SelfFamilies;

/// Entry points for the fuzz targets of `fuzz/` and their replay in the
/// tests: not an API, and not kept stable.
#[doc(hidden)]
pub mod fuzz {
    /// A push request checked as `PUT /metrics/<path>` checks it, without
    /// a store: `Ok(Ok(series kept))`, `Ok(Err(the refusal's line))`, or
    /// `Err` when the checks broke a rule of their own.
    pub fn push_request(
        path: &str,
        content_type: Option<&str>,
        content_encoding: Option<&str>,
        body: &[u8],
    ) -> Result<Result<usize, String>, String> {
        crate::sources::push::check_request(path, content_type, content_encoding, body)
    }
}
