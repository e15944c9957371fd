//! The gateway's lifecycle: bind the listeners, run every source and the
//! HTTP server until shutdown, drain with a deadline.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use tether_tcp::{Connection, ListenerMetrics, MeteredStream, Server, ServerConfig};
use tokio::net::TcpListener;
use tokio_rustls::TlsAcceptor;
use tokio_util::sync::CancellationToken;

use crate::config::Config;
use crate::error::Error;
use crate::http_conn::{Admitted, ConnLimits, Connections};
use crate::sources::Sources;
use crate::state::{SelfFamilies, Shared};
use crate::telemetry::{CloseReason, Telemetry};

/// Where the gateway's own metrics go, and how to read them back.
///
/// The binary passes the recorder it installed globally; tests and
/// embedders pass a private one. The gateway never installs a recorder.
#[derive(Clone)]
pub struct SelfMetrics {
    /// Receives the gateway's and its listeners' metrics.
    pub recorder: Arc<dyn metrics::Recorder + Send + Sync>,
    /// Reads the recorder's families for `/metrics/proxy`.
    pub families: SelfFamilies,
}

impl std::fmt::Debug for SelfMetrics {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("SelfMetrics")
    }
}

/// A gateway with its listeners bound, ready to run.
pub struct Gateway {
    shared: Arc<Shared>,
    http: TcpListener,
    http_addr: SocketAddr,
    self_metrics: SelfMetrics,
}

impl std::fmt::Debug for Gateway {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Gateway")
            .field("http", &self.http_addr)
            .field("sources", &self.shared.sources)
            .finish_non_exhaustive()
    }
}

impl Gateway {
    /// Binds the listeners and sets up every source; nothing is served
    /// yet. The configuration was validated (TLS files included) when it
    /// was made, so only binding can fail here.
    pub async fn bind(config: Config, self_metrics: SelfMetrics) -> Result<Gateway, Error> {
        let http = bind_listener(config.http.listen).map_err(|source| Error::Bind {
            what: "HTTP",
            addr: config.http.listen,
            source,
        })?;
        let http_addr = http.local_addr().unwrap_or(config.http.listen);
        let telemetry = Arc::new(Telemetry::new(self_metrics.recorder.as_ref()));
        let sources = Sources::build(&config, &telemetry, &self_metrics).await?;
        Ok(Gateway {
            shared: Arc::new(Shared::new(config, sources, telemetry)),
            http,
            http_addr,
            self_metrics,
        })
    }

    /// The bound HTTP address (with the port the system chose for port 0).
    pub fn http_addr(&self) -> SocketAddr {
        self.http_addr
    }

    /// The bound agent address.
    pub fn agent_addr(&self) -> SocketAddr {
        self.shared.sources.agents.local_addr()
    }

    /// Serves until `shutdown` is cancelled, then drains every listener
    /// within the configured shutdown timeout.
    pub async fn run(self, shutdown: CancellationToken) -> Result<(), Error> {
        let Gateway {
            shared,
            http,
            http_addr,
            self_metrics,
        } = self;
        let config = &shared.config;
        if config.listens_beyond_loopback() && !config.authenticates_agents() {
            tracing::warn!(
                http = %config.http.listen,
                agents = %config.sources.agents.listen,
                "listening beyond loopback with no authentication: set --agent-token or --tls-client-ca"
            );
        }
        tracing::info!(
            http = %http_addr,
            agents = %shared.sources.agents.local_addr(),
            tls = config.tls.is_some(),
            "gateway listening"
        );
        let http_server = {
            let router = crate::http::router(&shared);
            let tls = config.tls.as_ref().map(|tls| {
                (
                    TlsAcceptor::from(Arc::clone(&tls.http)),
                    tls.handshake_timeout,
                )
            });
            let deadlines = ConnLimits {
                header: config.http.header_timeout,
                idle: config.http.idle_timeout,
                write: config.http.write_timeout,
                http2_max_streams: config.http.http2_max_streams,
            };
            let telemetry = Arc::clone(&shared.telemetry);
            let connections = Connections::new(config.http.max_connections);
            let handler = move |stream: MeteredStream, conn: Connection| {
                let router = router.clone();
                let tls = tls.clone();
                let telemetry = Arc::clone(&telemetry);
                let admitted = connections.admit();
                async move {
                    serve_http(stream, conn, router, tls, deadlines, admitted, telemetry).await
                }
            };
            Server::new(
                ListenerMetrics::new("http", self_metrics.recorder.as_ref()),
                ServerConfig {
                    // Room above the cap, so that accept goes on while the
                    // connections evicted to make room close.
                    max_connections: config
                        .http
                        .max_connections
                        .saturating_add(HTTP_ACCEPT_HEADROOM),
                    shutdown_timeout: config.shutdown_timeout,
                    ..ServerConfig::default()
                },
                handler,
            )
            .map_err(|e| Error::Serve(e.to_string()))?
        };
        let sources = tokio_util::task::TaskTracker::new();
        for source in shared.sources.iter() {
            sources.spawn(Arc::clone(source).run(shutdown.clone()));
        }
        sources.close();
        shared.set_ready(true);
        let not_ready = {
            let shared = Arc::clone(&shared);
            let shutdown = shutdown.clone();
            async move {
                shutdown.cancelled().await;
                shared.set_ready(false);
            }
        };
        let (http_drain, (), ()) = tokio::join!(
            http_server.run(http, shutdown.clone()),
            not_ready,
            sources.wait()
        );
        if !http_drain.complete {
            tracing::warn!(
                remaining = http_drain.n_remaining,
                "shutdown timeout reached with HTTP connections still open"
            );
        }
        tracing::info!("gateway stopped");
        Ok(())
    }
}

/// Connections the kernel holds completed for each listener until they are
/// accepted. A burst of connections past the backlog is not refused but
/// held back by the kernel for seconds (the handshake is retried with
/// backoff), so it is large: a thousand agents reconnecting at once, or a
/// flood of idle sockets beside a real scrape, queue instead of stalling.
/// The system's `net.core.somaxconn` caps it.
pub(crate) const LISTEN_BACKLOG: u32 = 4096;

/// Binds `addr` with [`LISTEN_BACKLOG`] and address reuse (a restart binds
/// while old connections linger in TIME_WAIT).
pub(crate) fn bind_listener(addr: SocketAddr) -> std::io::Result<TcpListener> {
    let socket = if addr.is_ipv4() {
        tokio::net::TcpSocket::new_v4()?
    } else {
        tokio::net::TcpSocket::new_v6()?
    };
    socket.set_reuseaddr(true)?;
    socket.bind(addr)?;
    socket.listen(LISTEN_BACKLOG)
}

/// HTTP connections accepted beyond `--max-http-connections` while the
/// ones evicted to make room close.
const HTTP_ACCEPT_HEADROOM: usize = 64;

/// Serves one HTTP connection, TLS first when configured.
async fn serve_http(
    stream: MeteredStream,
    conn: Connection,
    router: axum::Router,
    tls: Option<(TlsAcceptor, Duration)>,
    deadlines: ConnLimits,
    admitted: Admitted,
    telemetry: Arc<Telemetry>,
) -> Result<(), String> {
    let shutdown = conn.shutdown_token().clone();
    let peer = conn.info().peer;
    match tls {
        None => {
            crate::http_conn::serve(
                stream, peer, router, deadlines, &admitted, shutdown, telemetry,
            )
            .await
        }
        Some((acceptor, timeout)) => {
            let accepted = tokio::select! {
                accepted = tokio::time::timeout(timeout, acceptor.accept(stream)) => accepted,
                () = admitted.evicted().cancelled() => {
                    telemetry.http_connection_closed(CloseReason::Evicted);
                    return Err("closed during its TLS handshake to make room".to_owned());
                }
            };
            let stream = match accepted {
                Ok(Ok(stream)) => stream,
                Ok(Err(error)) => return Err(format!("TLS handshake: {error}")),
                Err(_) => return Err("TLS handshake timed out".to_owned()),
            };
            crate::http_conn::serve(
                stream, peer, router, deadlines, &admitted, shutdown, telemetry,
            )
            .await
        }
    }
}
