//! Process-wide setup that only a binary may do: the tracing subscriber,
//! the global metrics recorder, and signal handling.

use std::io::{IsTerminal, Write};
use std::sync::Arc;

use tether_gateway::{LogFormat, SelfMetrics};
use tracing_subscriber::EnvFilter;

/// Installs the tracing subscriber: human text (coloured on a terminal) or
/// one JSON object per line; `RUST_LOG` filters, `info` by default.
pub(crate) fn init_logging(format: LogFormat) {
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("info"));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr);
    // A second subscriber (tests running the command twice in-process)
    // is refused by `try_init`; the first one stays, which is fine.
    let _ = match format {
        LogFormat::Json => builder
            .json()
            .flatten_event(true)
            .with_current_span(true)
            .try_init(),
        LogFormat::Text => builder
            .with_ansi(std::io::stderr().is_terminal())
            .try_init(),
    };
}

/// Installs tether's recorder as the global `metrics` recorder and hands
/// the gateway the same registry for its own metrics.
pub(crate) fn install_recorder() -> SelfMetrics {
    let recorder = Arc::new(tether_exporter::ExporterBuilder::new().build_recorder());
    let handle = recorder.handle();
    if metrics::set_global_recorder(Arc::clone(&recorder)).is_err() {
        tracing::debug!("a global metrics recorder was already installed");
    }
    SelfMetrics {
        recorder,
        families: Arc::new(move || handle.families()),
    }
}

/// Resolves on SIGINT (Ctrl-C) or SIGTERM.
pub(crate) async fn wait_for_signal() {
    let interrupt = tokio::signal::ctrl_c();
    #[cfg(unix)]
    {
        let terminate = async {
            match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
                Ok(mut stream) => {
                    stream.recv().await;
                }
                Err(error) => {
                    tracing::warn!(%error, "cannot listen for SIGTERM; only Ctrl-C stops the gateway");
                    std::future::pending::<()>().await;
                }
            }
        };
        tokio::select! {
            _ = interrupt => {}
            () = terminate => {}
        }
    }
    #[cfg(not(unix))]
    {
        let _ = interrupt.await;
    }
    tracing::info!("shutdown requested");
}

/// Prints a message for the user on standard error, before logging exists.
pub(crate) fn report_error(message: &str) {
    let _ = writeln!(std::io::stderr().lock(), "{message}");
}
