//! The tether gateway as a library: configuration, listeners, dial-out
//! agents pulled on every scrape, the merged exposition and its HTTP routes.
//!
//! The `tether` binary parses arguments and calls into this crate; nothing
//! here installs a global recorder or tracing subscriber.

mod agent_conn;
mod agents;
mod config;
mod error;
mod http;
mod merge;
mod scrape;
mod server;
mod state;
mod stream_source;
mod telemetry;
mod tls;

pub use config::{
    Config, DEFAULT_AGENT_LISTEN, DEFAULT_FINAL_PUSH_TTL_SECS, DEFAULT_HANDSHAKE_TIMEOUT_MS,
    DEFAULT_HEARTBEAT_INTERVAL_MS, DEFAULT_HTTP_LISTEN, DEFAULT_MAX_AGENTS,
    DEFAULT_MAX_FRAME_BYTES, DEFAULT_MAX_HTTP_CONNECTIONS, DEFAULT_SCRAPE_MARGIN_MS,
    DEFAULT_SCRAPE_TIMEOUT_MS, DEFAULT_SHUTDOWN_TIMEOUT_MS, LogFormat, RawConfig, TlsFiles,
};
pub use error::{ConfigError, Error};
pub use server::{Gateway, SelfMetrics};
pub use state::SelfFamilies;
