//! The crate's one error type.

use std::io;
use std::net::SocketAddr;

/// Errors from building, installing or running the exporter.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// A bucket list was empty.
    #[error("histogram buckets are empty; give at least one upper bound")]
    EmptyBuckets,

    /// A bucket list was not finite and strictly increasing.
    #[error(
        "histogram bucket {index} ({bound}) is not finite or not above the previous one; give finite bounds in increasing order"
    )]
    InvalidBucket {
        /// The position of the offending bound in the list given.
        index: usize,
        /// The offending bound.
        bound: f64,
    },

    /// A stream limit was set to a value that cannot work.
    #[error("stream setting {name} must be at least {min}, got {value}")]
    InvalidLimit {
        /// The builder method's name.
        name: &'static str,
        /// The smallest value accepted.
        min: u64,
        /// The value given.
        value: u64,
    },

    /// The stream listener could not be bound.
    #[error(
        "cannot listen for stream clients on {addr}: {source}; choose another address or free the port"
    )]
    BindStream {
        /// The address asked for.
        addr: SocketAddr,
        /// What the operating system said.
        source: io::Error,
    },

    /// The stream listener failed after it was bound.
    #[error("stream listener failed: {0}")]
    StreamListener(#[source] io::Error),

    /// No Tokio runtime could be created for the stream server.
    #[error("cannot start a runtime for the stream server: {0}")]
    Runtime(#[source] io::Error),

    /// A global `metrics` recorder was already installed.
    #[error(
        "a global metrics recorder is already installed; install only one, or use build() with metrics::with_local_recorder"
    )]
    RecorderAlreadyInstalled,
}
