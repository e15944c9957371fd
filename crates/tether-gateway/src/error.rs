//! Errors of the gateway library.

/// A configuration that cannot run.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum ConfigError {
    /// One setting is invalid; `key` names it as the TOML file does.
    #[error("{key}: {message}")]
    Invalid {
        /// The setting, in TOML spelling.
        key: &'static str,
        /// What is wrong and what to do.
        message: String,
    },
    /// The configuration file is not valid TOML for the gateway.
    #[error("configuration file: {0}")]
    Toml(String),
    /// A TLS file is unusable.
    #[error("TLS file {path}: {message}")]
    Tls {
        /// The file.
        path: String,
        /// What is wrong and what to do.
        message: String,
    },
}

/// Why the gateway could not start or run.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// A listener could not bind.
    #[error("cannot listen on {addr} for {what}: {source}: pick a free port or stop what holds it")]
    Bind {
        /// The listener's purpose.
        what: &'static str,
        /// The address.
        addr: std::net::SocketAddr,
        /// The system's error.
        source: std::io::Error,
    },
    /// The configuration is invalid.
    #[error(transparent)]
    Config(#[from] ConfigError),
    /// A listener could not be set up.
    #[error("cannot serve: {0}")]
    Serve(String),
}
