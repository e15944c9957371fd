//! Gateway configuration: the raw layer read from flags, environment and
//! TOML, and the validated [`Config`] the gateway runs with.
//!
//! Every source fills a [`RawConfig`] whose fields are all optional; sources
//! are merged by precedence (flag > environment > file > default) and the
//! result is validated once into a [`Config`], before anything binds.

use std::net::SocketAddr;
use std::path::PathBuf;
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
/// Default largest agent frame accepted, in bytes.
pub const DEFAULT_MAX_FRAME_BYTES: usize = 16 << 20;
/// Default time shutdown waits for connections to finish, in milliseconds.
pub const DEFAULT_SHUTDOWN_TIMEOUT_MS: u64 = 10_000;

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

/// Configuration as read from one source: every field optional.
///
/// The TOML file uses the flags' names in snake case (`http_listen`,
/// `scrape_timeout_ms`); unknown keys are an error, so a typo never goes
/// unnoticed.
#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawConfig {
    /// Address of the HTTP server (scrapes, status, health).
    pub http_listen: Option<String>,
    /// Address of the agent listener.
    pub agent_listen: Option<String>,
    /// Log format.
    pub log_format: Option<LogFormat>,
    /// Upper bound of a scrape's fan-out, in milliseconds.
    pub scrape_timeout_ms: Option<u64>,
    /// Time kept back from the scraper's timeout, in milliseconds.
    pub scrape_margin_ms: Option<u64>,
    /// How long a final push stays served, in seconds.
    pub final_push_ttl_secs: Option<u64>,
    /// Tokens agents may present; empty means no authentication.
    pub agent_token: Option<Vec<String>>,
    /// A file with one agent token per line (`#` starts a comment).
    pub agent_tokens_file: Option<PathBuf>,
    /// PEM certificate chain for TLS on both listeners.
    pub tls_cert: Option<PathBuf>,
    /// PEM private key for TLS.
    pub tls_key: Option<PathBuf>,
    /// PEM CA bundle; when set, clients must present a certificate it signed.
    pub tls_client_ca: Option<PathBuf>,
    /// Cap on agent connections.
    pub max_agents: Option<usize>,
    /// Cap on concurrent HTTP connections.
    pub max_http_connections: Option<usize>,
    /// Time an agent has to complete its handshake, in milliseconds.
    pub handshake_timeout_ms: Option<u64>,
    /// Heartbeat interval, in milliseconds.
    pub heartbeat_interval_ms: Option<u64>,
    /// Largest agent frame accepted, in bytes.
    pub max_frame_bytes: Option<usize>,
    /// Time shutdown waits for connections, in milliseconds.
    pub shutdown_timeout_ms: Option<u64>,
    /// Metric event streams to read (`host:port` of a metrics-exporter-tcp
    /// or tether exporter stream).
    pub stream_source: Option<Vec<String>>,
}

impl RawConfig {
    /// Reads a TOML configuration file.
    pub fn from_toml(text: &str) -> Result<RawConfig, ConfigError> {
        toml::from_str(text).map_err(|e| ConfigError::Toml(e.to_string()))
    }

    /// Fills every field unset in `self` from `lower` (`self` wins).
    pub fn or(self, lower: RawConfig) -> RawConfig {
        RawConfig {
            http_listen: self.http_listen.or(lower.http_listen),
            agent_listen: self.agent_listen.or(lower.agent_listen),
            log_format: self.log_format.or(lower.log_format),
            scrape_timeout_ms: self.scrape_timeout_ms.or(lower.scrape_timeout_ms),
            scrape_margin_ms: self.scrape_margin_ms.or(lower.scrape_margin_ms),
            final_push_ttl_secs: self.final_push_ttl_secs.or(lower.final_push_ttl_secs),
            agent_token: self.agent_token.or(lower.agent_token),
            agent_tokens_file: self.agent_tokens_file.or(lower.agent_tokens_file),
            tls_cert: self.tls_cert.or(lower.tls_cert),
            tls_key: self.tls_key.or(lower.tls_key),
            tls_client_ca: self.tls_client_ca.or(lower.tls_client_ca),
            max_agents: self.max_agents.or(lower.max_agents),
            max_http_connections: self.max_http_connections.or(lower.max_http_connections),
            handshake_timeout_ms: self.handshake_timeout_ms.or(lower.handshake_timeout_ms),
            heartbeat_interval_ms: self.heartbeat_interval_ms.or(lower.heartbeat_interval_ms),
            max_frame_bytes: self.max_frame_bytes.or(lower.max_frame_bytes),
            shutdown_timeout_ms: self.shutdown_timeout_ms.or(lower.shutdown_timeout_ms),
            stream_source: self.stream_source.or(lower.stream_source),
        }
    }
}

/// TLS material, loaded and checked.
#[derive(Debug, Clone)]
pub struct TlsFiles {
    /// Certificate chain file.
    pub cert: PathBuf,
    /// Private key file.
    pub key: PathBuf,
    /// Client CA bundle, for mutual TLS.
    pub client_ca: Option<PathBuf>,
}

/// The validated configuration the gateway runs with.
#[derive(Debug, Clone)]
pub struct Config {
    /// Address of the HTTP server.
    pub http_listen: SocketAddr,
    /// Address of the agent listener.
    pub agent_listen: SocketAddr,
    /// Log format.
    pub log_format: LogFormat,
    /// Upper bound of a scrape's fan-out.
    pub scrape_timeout: Duration,
    /// Time kept back from the scraper's timeout.
    pub scrape_margin: Duration,
    /// How long a final push stays served.
    pub final_push_ttl: Duration,
    /// Accepted agent tokens; empty means agents need none.
    pub agent_tokens: Vec<String>,
    /// TLS for both listeners, when configured.
    pub tls: Option<TlsFiles>,
    /// Cap on agent connections.
    pub max_agents: usize,
    /// Cap on concurrent HTTP connections.
    pub max_http_connections: usize,
    /// Time an agent has to complete its handshake.
    pub handshake_timeout: Duration,
    /// Heartbeat interval.
    pub heartbeat_interval: Duration,
    /// Largest agent frame accepted, in bytes.
    pub max_frame_bytes: usize,
    /// Time shutdown waits for connections.
    pub shutdown_timeout: Duration,
    /// Metric event streams to read, as `host:port`.
    pub stream_sources: Vec<String>,
}

impl Default for Config {
    fn default() -> Config {
        // The defaults are constants checked by a unit test, so validation
        // of an empty raw configuration cannot fail.
        Config::from_raw(RawConfig::default())
            .unwrap_or_else(|e| unreachable!("defaults are valid: {e}"))
    }
}

impl Config {
    /// Validates a merged raw configuration; reads the tokens file.
    pub fn from_raw(raw: RawConfig) -> Result<Config, ConfigError> {
        let http_listen = parse_addr(
            "http_listen",
            raw.http_listen.as_deref().unwrap_or(DEFAULT_HTTP_LISTEN),
        )?;
        let agent_listen = parse_addr(
            "agent_listen",
            raw.agent_listen.as_deref().unwrap_or(DEFAULT_AGENT_LISTEN),
        )?;
        if http_listen == agent_listen && http_listen.port() != 0 {
            return Err(ConfigError::Invalid {
                key: "agent_listen",
                message: format!(
                    "{agent_listen} is also the HTTP address: give the two listeners different ports"
                ),
            });
        }
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
        let mut agent_tokens = raw.agent_token.unwrap_or_default();
        if let Some(path) = &raw.agent_tokens_file {
            let text = std::fs::read_to_string(path).map_err(|e| ConfigError::Invalid {
                key: "agent_tokens_file",
                message: format!("cannot read {}: {e}", path.display()),
            })?;
            agent_tokens.extend(
                text.lines()
                    .map(str::trim)
                    .filter(|line| !line.is_empty() && !line.starts_with('#'))
                    .map(str::to_owned),
            );
            if agent_tokens.is_empty() {
                return Err(ConfigError::Invalid {
                    key: "agent_tokens_file",
                    message: format!("{} holds no token: add one per line", path.display()),
                });
            }
        }
        if let Some(empty) = agent_tokens.iter().position(String::is_empty) {
            return Err(ConfigError::Invalid {
                key: "agent_token",
                message: format!(
                    "token number {} is empty: an empty token would admit anyone",
                    empty + 1
                ),
            });
        }
        let tls = match (raw.tls_cert, raw.tls_key, raw.tls_client_ca) {
            (None, None, None) => None,
            (Some(cert), Some(key), client_ca) => Some(TlsFiles {
                cert,
                key,
                client_ca,
            }),
            (None, _, _) | (_, None, _) => {
                return Err(ConfigError::Invalid {
                    key: "tls_cert",
                    message:
                        "TLS needs both tls_cert and tls_key (and tls_client_ca only with them)"
                            .to_owned(),
                });
            }
        };
        let max_frame_bytes = raw.max_frame_bytes.unwrap_or(DEFAULT_MAX_FRAME_BYTES);
        if !(1024..=(1 << 30)).contains(&max_frame_bytes) {
            return Err(ConfigError::Invalid {
                key: "max_frame_bytes",
                message: format!("{max_frame_bytes} is outside 1024 to 1073741824 bytes"),
            });
        }
        let stream_sources = raw.stream_source.unwrap_or_default();
        for source in &stream_sources {
            let valid = source.rsplit_once(':').is_some_and(|(host, port)| {
                !host.is_empty() && port.parse::<u16>().is_ok_and(|p| p != 0)
            });
            if !valid {
                return Err(ConfigError::Invalid {
                    key: "stream_source",
                    message: format!("\"{source}\" is not HOST:PORT, such as 127.0.0.1:5000"),
                });
            }
        }
        Ok(Config {
            stream_sources,
            http_listen,
            agent_listen,
            log_format: raw.log_format.unwrap_or_default(),
            scrape_timeout: Duration::from_millis(scrape_timeout_ms),
            scrape_margin: Duration::from_millis(scrape_margin_ms),
            final_push_ttl: Duration::from_secs(
                raw.final_push_ttl_secs
                    .unwrap_or(DEFAULT_FINAL_PUSH_TTL_SECS),
            ),
            agent_tokens,
            tls,
            max_agents: positive_usize("max_agents", raw.max_agents.unwrap_or(DEFAULT_MAX_AGENTS))?,
            max_http_connections: positive_usize(
                "max_http_connections",
                raw.max_http_connections
                    .unwrap_or(DEFAULT_MAX_HTTP_CONNECTIONS),
            )?,
            handshake_timeout: Duration::from_millis(positive(
                "handshake_timeout_ms",
                raw.handshake_timeout_ms
                    .unwrap_or(DEFAULT_HANDSHAKE_TIMEOUT_MS),
            )?),
            heartbeat_interval: Duration::from_millis(positive(
                "heartbeat_interval_ms",
                raw.heartbeat_interval_ms
                    .unwrap_or(DEFAULT_HEARTBEAT_INTERVAL_MS),
            )?),
            max_frame_bytes,
            shutdown_timeout: Duration::from_millis(
                raw.shutdown_timeout_ms
                    .unwrap_or(DEFAULT_SHUTDOWN_TIMEOUT_MS),
            ),
        })
    }

    /// A configuration for tests and embedding: both listeners on
    /// `127.0.0.1:0`, so the system picks free ports.
    pub fn loopback() -> Config {
        Config {
            http_listen: SocketAddr::from(([127, 0, 0, 1], 0)),
            agent_listen: SocketAddr::from(([127, 0, 0, 1], 0)),
            ..Config::default()
        }
    }

    /// Whether a listener is reachable beyond this host.
    pub fn listens_beyond_loopback(&self) -> bool {
        !self.http_listen.ip().is_loopback() || !self.agent_listen.ip().is_loopback()
    }
}

fn parse_addr(key: &'static str, text: &str) -> Result<SocketAddr, ConfigError> {
    text.parse().map_err(|_| ConfigError::Invalid {
        key,
        message: format!(
            "\"{text}\" is not an address: write IP:PORT, such as 0.0.0.0:9091 or [::1]:7001"
        ),
    })
}

fn positive(key: &'static str, value: u64) -> Result<u64, ConfigError> {
    if value == 0 {
        return Err(ConfigError::Invalid {
            key,
            message: "must be greater than 0".to_owned(),
        });
    }
    Ok(value)
}

fn positive_usize(key: &'static str, value: usize) -> Result<usize, ConfigError> {
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
        let config = Config::from_raw(RawConfig::default()).expect("defaults are valid");
        assert_eq!(config.http_listen.port(), 9091);
        assert_eq!(config.agent_listen.port(), 7001);
        assert_eq!(config.final_push_ttl, Duration::from_secs(300));
        assert!(config.agent_tokens.is_empty());
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
            let error = Config::from_raw(raw).expect_err(key);
            assert!(error.to_string().starts_with(key), "{key}: {error}");
        }
    }

    #[test]
    fn tokens_file_adds_tokens_and_skips_comments() {
        let dir = std::env::temp_dir().join(format!("tether-config-{}", std::process::id()));
        std::fs::create_dir_all(&dir).expect("temp dir");
        let path = dir.join("tokens");
        std::fs::write(&path, "# agents\nalpha\n\n  beta  \n").expect("write tokens");
        let config = Config::from_raw(RawConfig {
            agent_token: Some(vec!["gamma".into()]),
            agent_tokens_file: Some(path),
            ..RawConfig::default()
        })
        .expect("valid");
        assert_eq!(config.agent_tokens, ["gamma", "alpha", "beta"]);
        std::fs::remove_dir_all(&dir).expect("cleanup");
    }
}
