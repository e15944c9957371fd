//! `Server`: the accept loop, the connection cap, one task and one span per
//! connection, and graceful shutdown with a deadline.

use std::fmt;
use std::future::Future;
use std::io;
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{OwnedSemaphorePermit, Semaphore};
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use tracing::{Instrument, Span, debug, error, info, warn};

use crate::telemetry::{Handles, accept_error_kind, accept_error_kind_name};
use crate::{Error, ListenerMetrics, MeteredStream};

/// Default of [`ServerConfig::max_connections`].
pub const DEFAULT_MAX_CONNECTIONS: usize = 10_000;
/// Default of [`ServerConfig::shutdown_timeout`].
pub const DEFAULT_SHUTDOWN_TIMEOUT: Duration = Duration::from_secs(10);
/// Default of [`ServerConfig::accept_backoff_max`].
pub const DEFAULT_ACCEPT_BACKOFF_MAX: Duration = Duration::from_secs(1);

/// The first pause after an accept error; each further error in a row
/// doubles it, up to [`ServerConfig::accept_backoff_max`].
const ACCEPT_BACKOFF_MIN: Duration = Duration::from_millis(5);
/// Reaching the connection cap is logged at most once per this interval, so
/// a server held at its cap does not log once per connection.
const CAP_WARNING_INTERVAL: Duration = Duration::from_secs(10);

/// Connection ids, unique in the process across all listeners, so that a
/// `conn_id` found in the logs names one connection.
static NEXT_CONNECTION_ID: AtomicU64 = AtomicU64::new(1);

/// The limits of one [`Server`].
#[derive(Clone, Debug)]
pub struct ServerConfig {
    /// Most connections open at once. At the cap the server stops calling
    /// `accept()`, so new peers wait in the kernel's backlog (and are
    /// refused by the kernel once it is full) until a connection closes.
    pub max_connections: usize,
    /// How long shutdown waits for open connections to finish after it
    /// stopped accepting. When it runs out, [`Server::run`] logs a warning
    /// and returns; the tasks left are dropped with the runtime.
    pub shutdown_timeout: Duration,
    /// Longest pause after a failed `accept()` (file descriptors or memory
    /// exhausted). Pauses start at 5 ms and double per error in a row.
    pub accept_backoff_max: Duration,
    /// Sets `TCP_NODELAY` on accepted sockets, as request/response
    /// protocols want.
    pub tcp_nodelay: bool,
}

impl Default for ServerConfig {
    fn default() -> Self {
        Self {
            max_connections: DEFAULT_MAX_CONNECTIONS,
            shutdown_timeout: DEFAULT_SHUTDOWN_TIMEOUT,
            accept_backoff_max: DEFAULT_ACCEPT_BACKOFF_MAX,
            tcp_nodelay: true,
        }
    }
}

impl ServerConfig {
    /// Checks the limits, as [`Server::new`] does; a binary calls it before
    /// it binds anything.
    pub fn validate(&self) -> Result<(), Error> {
        if self.max_connections == 0 || self.max_connections > Semaphore::MAX_PERMITS {
            return Err(Error::InvalidConfig {
                name: "max_connections",
                value: self.max_connections.to_string(),
                expected: "give at least 1",
            });
        }
        if self.accept_backoff_max < ACCEPT_BACKOFF_MIN {
            return Err(Error::InvalidConfig {
                name: "accept_backoff_max",
                value: format!("{:?}", self.accept_backoff_max),
                expected: "give at least 5 ms",
            });
        }
        Ok(())
    }
}

/// What one accepted connection is, as its span and logs show it.
#[derive(Clone, Debug)]
#[non_exhaustive]
pub struct ConnectionInfo {
    /// Unique among all connections of the process.
    pub id: u64,
    /// The listener's name, as in its metrics' `listener` label.
    pub listener: Arc<str>,
    /// The remote address.
    pub peer: SocketAddr,
    /// The local address the peer connected to.
    pub local: SocketAddr,
    /// The socket's file descriptor (`-1` where the platform has none).
    pub fd: i32,
}

/// What a [`Handler`] gets beside the stream: who the peer is, the shutdown
/// signal, and a way to spawn tasks that shutdown waits for.
#[derive(Debug)]
pub struct Connection {
    info: ConnectionInfo,
    shutdown: CancellationToken,
    tracker: TaskTracker,
}

impl Connection {
    /// The connection's id, addresses and descriptor.
    pub fn info(&self) -> &ConnectionInfo {
        &self.info
    }

    /// Cancelled when the server stops accepting: finish the exchange in
    /// flight, then return. The token is this connection's own (a child of
    /// the server's), so cancelling it stops nothing else.
    pub fn shutdown_token(&self) -> &CancellationToken {
        &self.shutdown
    }

    /// Spawns `task` in the span current here (the connection's, inside a
    /// handler), tracked so that shutdown waits for it as for the
    /// connection itself.
    pub fn spawn<F>(&self, task: F) -> JoinHandle<F::Output>
    where
        F: Future + Send + 'static,
        F::Output: Send + 'static,
    {
        self.tracker.spawn(task.instrument(Span::current()))
    }
}

/// Spawns `task` on the tokio runtime in the span current here, so that its
/// log lines carry the connection's fields when called inside a handler.
pub fn spawn_in_current_span<F>(task: F) -> JoinHandle<F::Output>
where
    F: Future + Send + 'static,
    F::Output: Send + 'static,
{
    tokio::spawn(task.instrument(Span::current()))
}

/// Serves one connection. Implemented by every
/// `Fn(MeteredStream, Connection) -> impl Future<Output = Result<(), E>>`.
///
/// The handler runs in its own task inside the connection's span; the socket
/// closes when the handler returns and drops the stream (or its halves).
pub trait Handler: Send + Sync + 'static {
    /// Why a connection ended early; logged at debug level with the span.
    type Error: fmt::Display + Send + 'static;

    /// Serves the connection on `stream` until the peer is done or
    /// `conn.shutdown_token()` is cancelled.
    fn handle(
        &self,
        stream: MeteredStream,
        conn: Connection,
    ) -> impl Future<Output = Result<(), Self::Error>> + Send;
}

impl<F, Fut, E> Handler for F
where
    F: Fn(MeteredStream, Connection) -> Fut + Send + Sync + 'static,
    Fut: Future<Output = Result<(), E>> + Send + 'static,
    E: fmt::Display + Send + 'static,
{
    type Error = E;

    fn handle(
        &self,
        stream: MeteredStream,
        conn: Connection,
    ) -> impl Future<Output = Result<(), E>> + Send {
        self(stream, conn)
    }
}

/// How shutdown ended, as [`Server::run`] returns it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Drain {
    /// Every connection task finished before the deadline.
    pub complete: bool,
    /// Connection tasks (handlers and what they spawned through
    /// [`Connection::spawn`]) still running at the deadline.
    pub n_remaining: usize,
}

/// An instrumented TCP server: the accept loop of one listener.
pub struct Server<H> {
    config: ServerConfig,
    metrics: ListenerMetrics,
    handler: Arc<H>,
}

impl<H> fmt::Debug for Server<H> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Server")
            .field("config", &self.config)
            .field("metrics", &self.metrics)
            .finish_non_exhaustive()
    }
}

impl<H: Handler> Server<H> {
    /// A server that records into `metrics` (whose name names the listener
    /// in metrics and spans) and runs `handler` per connection.
    pub fn new(metrics: ListenerMetrics, config: ServerConfig, handler: H) -> Result<Self, Error> {
        config.validate()?;
        Ok(Self {
            config,
            metrics,
            handler: Arc::new(handler),
        })
    }

    /// Accepts connections on `listener` until `shutdown` is cancelled, then
    /// stops accepting (closing the listening socket), lets the open
    /// connections finish within [`ServerConfig::shutdown_timeout`], and
    /// says how that went.
    ///
    /// A permit of the connection cap is taken before each `accept()`.
    /// Accept errors that only mean a peer gave up before being accepted
    /// (refused, aborted, reset) are skipped; any other error is counted in
    /// `tether_tcp_accept_errors_total{kind}` and the loop pauses before
    /// trying again, so a process out of file descriptors does not spin.
    pub async fn run(self, listener: TcpListener, shutdown: CancellationToken) -> Drain {
        let handles = Arc::clone(self.metrics.handles());
        let listener_name = Arc::clone(&handles.name);
        let listen_addr = listener.local_addr();
        let max_connections = self.config.max_connections;
        match &listen_addr {
            Ok(addr) => {
                info!(listener = %listener_name, %addr, max_connections, "accepting connections");
            }
            Err(error) => {
                info!(listener = %listener_name, %error, max_connections, "accepting connections");
            }
        }
        let acceptor = Acceptor {
            handler: self.handler,
            handles,
            tracker: TaskTracker::new(),
            shutdown,
            tcp_nodelay: self.config.tcp_nodelay,
            listen_addr: listen_addr.unwrap_or_else(|_| SocketAddr::from(([0, 0, 0, 0], 0))),
        };
        acceptor.accept_loop(&listener, &self.config).await;
        drop(listener);
        acceptor.drain(self.config.shutdown_timeout).await
    }
}

/// Runs a [`Server`] with the default [`ServerConfig`], recording as listener
/// `name` on the recorder in effect ([`ListenerMetrics::global`]).
///
/// It cannot fail because the default config is valid, which a unit test
/// holds it to.
pub async fn serve<H: Handler>(
    listener: TcpListener,
    shutdown: CancellationToken,
    name: &str,
    handler: H,
) -> Drain {
    let server = Server {
        config: ServerConfig::default(),
        metrics: ListenerMetrics::global(name),
        handler: Arc::new(handler),
    };
    server.run(listener, shutdown).await
}

/// The state of a running accept loop.
struct Acceptor<H> {
    handler: Arc<H>,
    handles: Arc<Handles>,
    tracker: TaskTracker,
    shutdown: CancellationToken,
    tcp_nodelay: bool,
    /// The listener's address: every socket's local address unless it is
    /// a wildcard (and the stand-in if `getsockname` fails).
    listen_addr: SocketAddr,
}

impl<H: Handler> Acceptor<H> {
    async fn accept_loop(&self, listener: &TcpListener, config: &ServerConfig) {
        let permits = Arc::new(Semaphore::new(config.max_connections));
        let mut backoff = ACCEPT_BACKOFF_MIN;
        let mut cap_warned_at: Option<tokio::time::Instant> = None;
        loop {
            let permit = match Arc::clone(&permits).try_acquire_owned() {
                Ok(permit) => permit,
                Err(_) => {
                    let now = tokio::time::Instant::now();
                    if cap_warned_at.is_none_or(|at| now.duration_since(at) >= CAP_WARNING_INTERVAL)
                    {
                        cap_warned_at = Some(now);
                        warn!(
                            listener = %self.handles.name,
                            max_connections = config.max_connections,
                            "connection cap reached; accepting again when a connection closes"
                        );
                    }
                    tokio::select! {
                        biased;
                        () = self.shutdown.cancelled() => break,
                        permit = Arc::clone(&permits).acquire_owned() => match permit {
                            Ok(permit) => permit,
                            // Acquiring fails only on a closed semaphore, and
                            // this one is never closed.
                            Err(_) => break,
                        },
                    }
                }
            };
            let accepted = tokio::select! {
                biased;
                () = self.shutdown.cancelled() => break,
                accepted = listener.accept() => accepted,
            };
            match accepted {
                Ok((socket, peer)) => {
                    backoff = ACCEPT_BACKOFF_MIN;
                    self.start_connection(socket, peer, permit);
                }
                Err(error) if peer_gave_up(&error) => {
                    debug!(
                        listener = %self.handles.name,
                        %error,
                        "peer left before its connection was accepted"
                    );
                }
                Err(error) => {
                    drop(permit);
                    let kind = accept_error_kind(&error);
                    if let Some(counter) = self.handles.accept_errors.get(kind) {
                        counter.increment(1);
                    }
                    warn!(
                        listener = %self.handles.name,
                        %error,
                        kind = accept_error_kind_name(kind),
                        backoff_ms = backoff.as_millis(),
                        "accept failed; pausing before the next accept"
                    );
                    tokio::select! {
                        biased;
                        () = self.shutdown.cancelled() => break,
                        () = tokio::time::sleep(backoff) => {}
                    }
                    backoff = (backoff * 2).min(config.accept_backoff_max);
                }
            }
        }
    }

    fn start_connection(&self, socket: TcpStream, peer: SocketAddr, permit: OwnedSemaphorePermit) {
        let id = NEXT_CONNECTION_ID.fetch_add(1, Ordering::Relaxed);
        // A listener bound to one address accepts only on that address, so
        // the `getsockname` call is needed only behind a wildcard.
        let local = if self.listen_addr.ip().is_unspecified() {
            socket.local_addr().unwrap_or(self.listen_addr)
        } else {
            self.listen_addr
        };
        let fd = raw_fd(&socket);
        let span = tracing::info_span!(
            "conn",
            listener = %self.handles.name,
            conn_id = id,
            %peer,
            %local,
            fd
        );
        if self.tcp_nodelay
            && let Err(error) = socket.set_nodelay(true)
        {
            debug!(parent: &span, %error, "could not set TCP_NODELAY");
        }
        self.handles.opened.increment(1);
        self.handles.active.increment(1.0);
        let guard = ConnectionGuard {
            handles: Arc::clone(&self.handles),
            opened_at: Instant::now(),
            _permit: permit,
        };
        let stream = MeteredStream::new_with_handles(socket, &self.handles);
        let conn = Connection {
            info: ConnectionInfo {
                id,
                listener: Arc::clone(&self.handles.name),
                peer,
                local,
                fd,
            },
            shutdown: self.shutdown.child_token(),
            tracker: self.tracker.clone(),
        };
        let handler = Arc::clone(&self.handler);
        let task = async move {
            let _guard = guard;
            debug!("connection opened");
            if let Err(error) = handler.handle(stream, conn).await {
                debug!(%error, "connection ended with an error");
            }
        };
        self.tracker.spawn(task.instrument(span));
    }

    async fn drain(self, shutdown_timeout: Duration) -> Drain {
        self.tracker.close();
        let listener = &self.handles.name;
        let timeout_ms = shutdown_timeout.as_millis();
        let n_open = self.tracker.len();
        info!(%listener, n_open, timeout_ms, "stopped accepting; waiting for open connections");
        if tokio::time::timeout(shutdown_timeout, self.tracker.wait())
            .await
            .is_ok()
        {
            info!(%listener, "all connections closed");
            return Drain {
                complete: true,
                n_remaining: 0,
            };
        }
        let n_remaining = self.tracker.len();
        warn!(
            %listener,
            n_remaining,
            timeout_ms,
            "shutdown deadline passed with connections still open"
        );
        Drain {
            complete: false,
            n_remaining,
        }
    }
}

/// Accept errors that concern one peer only, which the loop skips.
fn peer_gave_up(error: &io::Error) -> bool {
    matches!(
        error.kind(),
        io::ErrorKind::ConnectionRefused
            | io::ErrorKind::ConnectionAborted
            | io::ErrorKind::ConnectionReset
    )
}

#[cfg(unix)]
fn raw_fd(socket: &TcpStream) -> i32 {
    std::os::fd::AsRawFd::as_raw_fd(socket)
}

#[cfg(not(unix))]
fn raw_fd(_socket: &TcpStream) -> i32 {
    -1
}

/// Counts a connection closed however its task ends (returned, failed,
/// panicked, or dropped with the runtime), and gives back its permit.
struct ConnectionGuard {
    handles: Arc<Handles>,
    opened_at: Instant,
    _permit: OwnedSemaphorePermit,
}

impl Drop for ConnectionGuard {
    fn drop(&mut self) {
        let open_for = self.opened_at.elapsed();
        self.handles.closed.increment(1);
        self.handles.active.decrement(1.0);
        self.handles.duration.record(open_for.as_secs_f64());
        let duration_ms = open_for.as_millis();
        if std::thread::panicking() {
            error!(
                duration_ms,
                "connection handler panicked; connection closed"
            );
        } else {
            debug!(duration_ms, "connection closed");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn default_config_is_valid() {
        // `serve` relies on it.
        assert!(ServerConfig::default().validate().is_ok());
    }

    #[test]
    fn config_limits_are_checked() {
        let zero_cap = ServerConfig {
            max_connections: 0,
            ..ServerConfig::default()
        };
        assert!(zero_cap.validate().is_err());
        let short_backoff = ServerConfig {
            accept_backoff_max: Duration::from_millis(1),
            ..ServerConfig::default()
        };
        assert!(short_backoff.validate().is_err());
    }

    #[test]
    fn only_peer_errors_are_skipped() {
        assert!(peer_gave_up(&io::ErrorKind::ConnectionReset.into()));
        assert!(peer_gave_up(&io::ErrorKind::ConnectionAborted.into()));
        assert!(peer_gave_up(&io::ErrorKind::ConnectionRefused.into()));
        assert!(!peer_gave_up(&io::Error::from_raw_os_error(24)));
    }
}
