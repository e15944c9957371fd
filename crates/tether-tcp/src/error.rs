//! The error type of tether-tcp.

/// What can go wrong when setting up a server or an echo handler.
///
/// Serving itself does not fail: accept errors are counted and backed off,
/// and a connection's error ends that connection only.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// A configuration value is out of its range.
    #[error("invalid {name}: {value}; {expected}")]
    InvalidConfig {
        /// The setting, as named in its config struct.
        name: &'static str,
        /// The value given.
        value: String,
        /// The accepted range, phrased as advice.
        expected: &'static str,
    },
}
