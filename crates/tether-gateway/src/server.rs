//! The gateway's lifecycle: bind both listeners, serve until shutdown,
//! drain with a deadline.

use std::net::SocketAddr;
use std::sync::Arc;

use hyper_util::rt::{TokioExecutor, TokioIo};
use hyper_util::server::conn::auto;
use hyper_util::server::graceful::GracefulConnection;
use hyper_util::service::TowerToHyperService;
use tether_tcp::{Connection, ListenerMetrics, MeteredStream, Server, ServerConfig};
use tokio::net::TcpListener;
use tokio_rustls::TlsAcceptor;
use tokio_util::sync::CancellationToken;

use crate::config::Config;
use crate::error::Error;
use crate::state::{SelfFamilies, Shared};
use crate::telemetry::Telemetry;

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

/// A gateway with both listeners bound, ready to run.
pub struct Gateway {
    shared: Arc<Shared>,
    http: TcpListener,
    agents: TcpListener,
    self_metrics: SelfMetrics,
    http_tls: Option<TlsAcceptor>,
    agent_tls: Option<TlsAcceptor>,
}

impl std::fmt::Debug for Gateway {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Gateway")
            .field("http", &self.http)
            .field("agents", &self.agents)
            .field("tls", &self.http_tls.is_some())
            .finish_non_exhaustive()
    }
}

impl Gateway {
    /// Loads TLS material and binds both listeners; nothing is served yet.
    pub async fn bind(config: Config, self_metrics: SelfMetrics) -> Result<Gateway, Error> {
        let (http_tls, agent_tls) = match &config.tls {
            None => (None, None),
            Some(files) => (
                Some(TlsAcceptor::from(crate::tls::server_config(
                    files,
                    &[b"h2", b"http/1.1"],
                )?)),
                Some(TlsAcceptor::from(crate::tls::server_config(files, &[])?)),
            ),
        };
        let http = TcpListener::bind(config.http_listen)
            .await
            .map_err(|source| Error::Bind {
                what: "HTTP",
                addr: config.http_listen,
                source,
            })?;
        let agents = TcpListener::bind(config.agent_listen)
            .await
            .map_err(|source| Error::Bind {
                what: "agents",
                addr: config.agent_listen,
                source,
            })?;
        let telemetry = Telemetry::new(self_metrics.recorder.as_ref());
        let shared = Arc::new(Shared::new(
            config,
            telemetry,
            Arc::clone(&self_metrics.families),
        ));
        Ok(Gateway {
            shared,
            http,
            agents,
            self_metrics,
            http_tls,
            agent_tls,
        })
    }

    /// The bound HTTP address (with the port the system chose for port 0).
    pub fn http_addr(&self) -> SocketAddr {
        self.http
            .local_addr()
            .unwrap_or(self.shared.config.http_listen)
    }

    /// The bound agent address.
    pub fn agent_addr(&self) -> SocketAddr {
        self.agents
            .local_addr()
            .unwrap_or(self.shared.config.agent_listen)
    }

    /// Serves until `shutdown` is cancelled, then drains both listeners
    /// within the configured shutdown timeout.
    pub async fn run(self, shutdown: CancellationToken) -> Result<(), Error> {
        let Gateway {
            shared,
            http,
            agents,
            self_metrics,
            http_tls,
            agent_tls,
        } = self;
        let config = &shared.config;
        let unauthenticated = config.agent_tokens.is_empty()
            && config.tls.as_ref().is_none_or(|t| t.client_ca.is_none());
        if config.listens_beyond_loopback() && unauthenticated {
            tracing::warn!(
                http = %config.http_listen,
                agents = %config.agent_listen,
                "listening beyond loopback with no authentication: set --agent-token or --tls-client-ca"
            );
        }
        tracing::info!(
            http = %http.local_addr().map_or_else(|_| config.http_listen.to_string(), |a| a.to_string()),
            agents = %agents.local_addr().map_or_else(|_| config.agent_listen.to_string(), |a| a.to_string()),
            tls = config.tls.is_some(),
            "gateway listening"
        );
        let recorder = self_metrics.recorder.as_ref();
        let http_server = {
            let shared = Arc::clone(&shared);
            let router = crate::http::router(Arc::clone(&shared));
            let handler = move |stream: MeteredStream, conn: Connection| {
                let router = router.clone();
                let tls = http_tls.clone();
                async move { serve_http(stream, conn, router, tls).await }
            };
            Server::new(
                ListenerMetrics::new("http", recorder),
                ServerConfig {
                    max_connections: config.max_http_connections,
                    shutdown_timeout: config.shutdown_timeout,
                    ..ServerConfig::default()
                },
                handler,
            )
            .map_err(|e| Error::Serve(e.to_string()))?
        };
        let agent_server = {
            let shared = Arc::clone(&shared);
            let handler = move |stream: MeteredStream, conn: Connection| {
                let shared = Arc::clone(&shared);
                let tls = agent_tls.clone();
                async move { serve_agent(stream, conn, shared, tls).await }
            };
            Server::new(
                ListenerMetrics::new("agents", recorder),
                ServerConfig {
                    // Room above the agent cap, so that agents past it are
                    // accepted and told why they are turned away.
                    max_connections: config
                        .max_agents
                        .saturating_add(config.max_agents / 10 + 16),
                    shutdown_timeout: config.shutdown_timeout,
                    ..ServerConfig::default()
                },
                handler,
            )
            .map_err(|e| Error::Serve(e.to_string()))?
        };
        let sources = tokio_util::task::TaskTracker::new();
        for source in &shared.stream_sources {
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
        let (http_drain, agent_drain, (), ()) = tokio::join!(
            http_server.run(http, shutdown.clone()),
            agent_server.run(agents, shutdown.clone()),
            not_ready,
            sources.wait()
        );
        if !http_drain.complete || !agent_drain.complete {
            tracing::warn!(
                http_remaining = http_drain.n_remaining,
                agents_remaining = agent_drain.n_remaining,
                "shutdown timeout reached with connections still open"
            );
        }
        tracing::info!("gateway stopped");
        Ok(())
    }
}

/// Serves HTTP/1.1 and HTTP/2 on one connection, TLS first when configured.
async fn serve_http(
    stream: MeteredStream,
    conn: Connection,
    router: axum::Router,
    tls: Option<TlsAcceptor>,
) -> Result<(), String> {
    let service = TowerToHyperService::new(router);
    let shutdown = conn.shutdown_token().clone();
    let builder = auto::Builder::new(TokioExecutor::new());
    match tls {
        None => {
            let connection = builder.serve_connection_with_upgrades(TokioIo::new(stream), service);
            drive(connection, shutdown).await
        }
        Some(acceptor) => {
            let stream = acceptor
                .accept(stream)
                .await
                .map_err(|e| format!("TLS handshake: {e}"))?;
            let connection = builder.serve_connection_with_upgrades(TokioIo::new(stream), service);
            drive(connection, shutdown).await
        }
    }
}

/// Runs an HTTP connection until it ends, or asks it to finish its
/// current requests when shutdown begins.
async fn drive<C>(connection: C, shutdown: CancellationToken) -> Result<(), String>
where
    C: GracefulConnection,
    C::Error: std::fmt::Display,
{
    let mut connection = std::pin::pin!(connection);
    tokio::select! {
        result = connection.as_mut() => result.map_err(|e| e.to_string()),
        () = shutdown.cancelled() => {
            connection.as_mut().graceful_shutdown();
            connection.await.map_err(|e| e.to_string())
        }
    }
}

/// Serves one agent connection, TLS first when configured.
async fn serve_agent(
    stream: MeteredStream,
    conn: Connection,
    shared: Arc<Shared>,
    tls: Option<TlsAcceptor>,
) -> Result<(), String> {
    let peer = conn.info().peer;
    let shutdown = conn.shutdown_token().clone();
    let result = match tls {
        None => crate::agent_conn::serve(stream, peer, shared, shutdown).await,
        Some(acceptor) => {
            let handshake =
                tokio::time::timeout(shared.config.handshake_timeout, acceptor.accept(stream))
                    .await;
            match handshake {
                Ok(Ok(stream)) => crate::agent_conn::serve(stream, peer, shared, shutdown).await,
                Ok(Err(error)) => return Err(format!("TLS handshake: {error}")),
                Err(_) => return Err("TLS handshake timed out".to_owned()),
            }
        }
    };
    result.map_err(|e| e.to_string())
}
