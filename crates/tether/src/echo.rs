//! `tether echo`: the example full-duplex TCP echo server, with its metrics
//! on a Prometheus endpoint and, optionally, a metric event stream.

use std::net::SocketAddr;
use std::process::ExitCode;
use std::time::Duration;

use anyhow::Context;
use axum::http::{StatusCode, header};
use axum::response::IntoResponse;
use axum::routing::get;
use clap::{Args, ValueEnum};
use hyper_util::rt::TokioIo;
use hyper_util::service::TowerToHyperService;
use tether_exporter::{ExporterBuilder, ExporterHandle, Format};
use tether_tcp::{
    Connection, DEFAULT_ECHO_QUEUE_BYTES, DEFAULT_ECHO_READ_CHUNK_BYTES, DEFAULT_MAX_CONNECTIONS,
    Echo, EchoConfig, ListenerMetrics, MeteredStream, Server, ServerConfig,
};
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;
use tracing::{error, info, warn};

/// Exit status for flags that cannot work (EX_USAGE).
const EXIT_USAGE: u8 = 64;
/// Exit status when the server failed while starting or running.
const EXIT_FAILURE: u8 = 1;
/// Most connections to the metrics endpoint at once; scrapers are few.
const MAX_METRICS_CONNECTIONS: usize = 64;
/// The content type of the Prometheus text format.
const TEXT_CONTENT_TYPE: &str = "text/plain; version=0.0.4; charset=utf-8";

#[derive(Debug, Args)]
pub(crate) struct EchoArgs {
    /// Address the echo server listens on (port 0: any free port, logged).
    #[arg(long, env = "TETHER_LISTEN", value_name = "ADDR")]
    listen: SocketAddr,

    /// Address serving the metrics as Prometheus text at `GET /metrics`.
    #[arg(long, env = "TETHER_METRICS_LISTEN", value_name = "ADDR")]
    metrics_listen: SocketAddr,

    /// Address serving the metric event stream that `tether observe` and
    /// `metrics-observer` read.
    #[arg(long, env = "TETHER_STREAM_LISTEN", value_name = "ADDR")]
    stream_listen: Option<SocketAddr>,

    /// Log format on standard error.
    #[arg(long, env = "TETHER_LOG_FORMAT", value_enum, default_value_t = LogFormat::Text)]
    log_format: LogFormat,

    /// Most echo connections at once; past it, new peers wait in the backlog.
    #[arg(
        long,
        env = "TETHER_MAX_CONNECTIONS",
        value_name = "N",
        default_value_t = DEFAULT_MAX_CONNECTIONS
    )]
    max_connections: usize,

    /// Most bytes read from one peer and not yet echoed; at the limit the
    /// server stops reading from that peer until it reads its echo.
    #[arg(
        long,
        env = "TETHER_QUEUE_BYTES",
        value_name = "BYTES",
        default_value_t = DEFAULT_ECHO_QUEUE_BYTES
    )]
    queue_bytes: usize,

    /// Time shutdown (SIGINT, SIGTERM) waits for open connections.
    #[arg(
        long,
        env = "TETHER_SHUTDOWN_TIMEOUT_MS",
        value_name = "MS",
        default_value_t = 10_000
    )]
    shutdown_timeout_ms: u64,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
enum LogFormat {
    /// Human-readable lines.
    Text,
    /// One JSON object per line.
    Json,
}

pub(crate) fn run(args: &EchoArgs) -> ExitCode {
    // Nothing binds and no runtime starts before the flags are valid.
    let servers = match Servers::from_args(args) {
        Ok(servers) => servers,
        Err(error) => {
            crate::setup::report_error(&format!("tether echo: {error:#}"));
            return ExitCode::from(EXIT_USAGE);
        }
    };
    crate::setup::init_logging(match args.log_format {
        LogFormat::Text => tether_gateway::LogFormat::Text,
        LogFormat::Json => tether_gateway::LogFormat::Json,
    });
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(runtime) => runtime,
        Err(error) => {
            error!(%error, "cannot start the async runtime");
            return ExitCode::from(EXIT_FAILURE);
        }
    };
    match runtime.block_on(serve(args, servers)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(error) => {
            error!(error = format!("{error:#}"), "tether echo stopped");
            ExitCode::from(EXIT_FAILURE)
        }
    }
}

/// The validated settings of both servers.
struct Servers {
    echo: Echo,
    echo_config: ServerConfig,
    metrics_config: ServerConfig,
}

impl Servers {
    fn from_args(args: &EchoArgs) -> anyhow::Result<Self> {
        let read_chunk_bytes = DEFAULT_ECHO_READ_CHUNK_BYTES.min(args.queue_bytes);
        let echo = Echo::new(EchoConfig {
            queue_bytes: args.queue_bytes,
            read_chunk_bytes,
        })
        .context("--queue-bytes")?;
        let shutdown_timeout = Duration::from_millis(args.shutdown_timeout_ms);
        let echo_config = ServerConfig {
            max_connections: args.max_connections,
            shutdown_timeout,
            ..ServerConfig::default()
        };
        let metrics_config = ServerConfig {
            max_connections: MAX_METRICS_CONNECTIONS,
            shutdown_timeout,
            ..ServerConfig::default()
        };
        echo_config.validate().context("--max-connections")?;
        Ok(Self {
            echo,
            echo_config,
            metrics_config,
        })
    }
}

async fn serve(args: &EchoArgs, servers: Servers) -> anyhow::Result<()> {
    let shutdown = CancellationToken::new();
    let mut exporter = ExporterBuilder::new().with_shutdown(shutdown.clone());
    if let Some(addr) = args.stream_listen {
        exporter = exporter.with_stream_listener(addr);
    }
    let (recorder, stream_server) = exporter
        .build()
        .context("cannot start the metrics exporter")?;
    let exporter = recorder.handle();
    metrics::set_global_recorder(recorder)
        .map_err(|_| anyhow::anyhow!("a global metrics recorder is already installed"))?;
    if let Some(addr) = exporter.stream_local_addr() {
        info!(listener = "stream", %addr, "serving the metric event stream");
    }

    let echo_listener = TcpListener::bind(args.listen)
        .await
        .with_context(|| format!("cannot listen on {} (--listen)", args.listen))?;
    let metrics_listener = TcpListener::bind(args.metrics_listen)
        .await
        .with_context(|| {
            format!(
                "cannot listen on {} (--metrics-listen)",
                args.metrics_listen
            )
        })?;
    let echo_server = Server::new(
        ListenerMetrics::global("echo"),
        servers.echo_config,
        servers.echo,
    )?;
    let router = metrics_router(exporter);
    let metrics_handler =
        move |stream: MeteredStream, conn: Connection| serve_http(stream, conn, router.clone());
    let metrics_server = Server::new(
        ListenerMetrics::global("metrics"),
        servers.metrics_config,
        metrics_handler,
    )?;

    tokio::spawn({
        let shutdown = shutdown.clone();
        async move {
            crate::setup::wait_for_signal().await;
            shutdown.cancel();
        }
    });
    let (echo_drain, metrics_drain, stream_result) = tokio::join!(
        echo_server.run(echo_listener, shutdown.clone()),
        metrics_server.run(metrics_listener, shutdown.clone()),
        stream_server,
    );
    stream_result.context("the metric event stream failed")?;
    if echo_drain.complete && metrics_drain.complete {
        info!("stopped");
    } else {
        warn!(
            echo_remaining = echo_drain.n_remaining,
            metrics_remaining = metrics_drain.n_remaining,
            "stopped with connections still open"
        );
    }
    Ok(())
}

/// `GET /metrics`: every metric as Prometheus text.
fn metrics_router(exporter: ExporterHandle) -> axum::Router {
    let render = move || {
        let body = exporter.render(Format::Text);
        async move { ([(header::CONTENT_TYPE, TEXT_CONTENT_TYPE)], body) }
    };
    axum::Router::new()
        .route("/metrics", get(render))
        .fallback(|| async {
            (StatusCode::NOT_FOUND, "not found: try GET /metrics\n").into_response()
        })
}

/// Serves `router` over HTTP/1.1 on one connection, finishing the request
/// in flight on shutdown.
async fn serve_http(
    stream: MeteredStream,
    conn: Connection,
    router: axum::Router,
) -> Result<(), hyper::Error> {
    let service = TowerToHyperService::new(router);
    let connection =
        hyper::server::conn::http1::Builder::new().serve_connection(TokioIo::new(stream), service);
    let mut connection = std::pin::pin!(connection);
    tokio::select! {
        result = connection.as_mut() => result,
        () = conn.shutdown_token().cancelled() => {
            connection.as_mut().graceful_shutdown();
            connection.await
        }
    }
}
