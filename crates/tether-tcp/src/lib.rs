//! An instrumented TCP accept loop: socket and byte metrics, one tracing
//! span per connection, a connection cap and graceful shutdown; and
//! [`FramedConn`], a connection read and written as the varint
//! length-delimited frames of `tether_proto`.
//!
//! A service hands [`Server::run`] a bound `TcpListener` and a
//! `CancellationToken`. Each accepted socket becomes a task that runs the
//! service's [`Handler`] on a [`MeteredStream`] (which counts bytes read and
//! written) inside a `conn` span carrying the connection id, peer and local
//! address, file descriptor and listener name. The listener's metrics
//! ([`ListenerMetrics`]) are registered once, on a recorder the caller
//! chooses; this crate never installs a global recorder or subscriber.
//!
//! ```no_run
//! use tether_tcp::{Connection, ListenerMetrics, MeteredStream, Server, ServerConfig};
//! use tokio::io::AsyncWriteExt;
//! use tokio::net::TcpListener;
//! use tokio_util::sync::CancellationToken;
//!
//! # async fn example() -> Result<(), Box<dyn std::error::Error>> {
//! let listener = TcpListener::bind("127.0.0.1:0").await?;
//! let handler = |mut stream: MeteredStream, _conn: Connection| async move {
//!     stream.write_all(b"hello\n").await
//! };
//! let server = Server::new(ListenerMetrics::global("hello"), ServerConfig::default(), handler)?;
//! let shutdown = CancellationToken::new();
//! let drain = server.run(listener, shutdown).await;
//! assert!(drain.complete);
//! # Ok(())
//! # }
//! ```
//!
//! A handler that speaks frames wraps its stream in a [`FramedConn`]:
//! [`FramedConn::read_frame`] returns each body (bounded by the caller's
//! `max_frame_bytes`, cancel safe, no buffer held between frames) and
//! [`FramedConn::send`] writes a message as one frame.

mod echo;
mod error;
mod framed;
mod server;
mod stream;
mod telemetry;

pub use echo::{DEFAULT_ECHO_QUEUE_BYTES, DEFAULT_ECHO_READ_CHUNK_BYTES, Echo, EchoConfig};
pub use error::{Error, FramedError};
pub use framed::{FrameBudget, FramedConn};
pub use server::{
    Connection, ConnectionInfo, DEFAULT_ACCEPT_BACKOFF_MAX, DEFAULT_MAX_CONNECTIONS,
    DEFAULT_SHUTDOWN_TIMEOUT, Drain, Handler, Server, ServerConfig, serve, spawn_in_current_span,
};
pub use stream::MeteredStream;
pub use telemetry::{
    ACCEPT_ERRORS_TOTAL, BYTES_READ_TOTAL, BYTES_WRITTEN_TOTAL, CONNECTION_DURATION_SECONDS,
    ListenerMetrics, SOCKETS_ACTIVE, SOCKETS_CLOSED_TOTAL, SOCKETS_OPENED_TOTAL, describe,
};
