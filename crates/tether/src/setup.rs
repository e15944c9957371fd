//! Process-wide setup that only a binary may do: the tracing subscriber,
//! the global metrics recorder, and signal handling.

use std::io::{IsTerminal, Write};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::mpsc::{Receiver, SyncSender, TrySendError};
use std::sync::{Arc, OnceLock};

use tether_gateway::{LogFormat, SelfMetrics};
use tracing_subscriber::EnvFilter;

/// Log lines waiting for the writer thread; past it, new lines are dropped
/// (and counted) rather than blocking the thread that logs.
pub(crate) const LOG_QUEUE_LINES: usize = 4096;

/// Lines dropped because the queue was full or standard error refused
/// them (a closed or broken pipe), since the process started.
static DROPPED_LINES: AtomicU64 = AtomicU64::new(0);
/// `tether_log_dropped_lines_total`, once a recorder is installed.
static DROPPED_COUNTER: OnceLock<metrics::Counter> = OnceLock::new();

fn count_dropped_line() {
    DROPPED_LINES.fetch_add(1, Ordering::Relaxed);
    if let Some(counter) = DROPPED_COUNTER.get() {
        counter.increment(1);
    }
}

/// Writes log lines to standard error from a thread of its own, so that a
/// full pipe (a stalled log shipper) never blocks a runtime worker and a
/// closed one (the reader exited) never takes the process down: lines that
/// cannot be written are dropped and counted.
#[derive(Clone)]
struct LogQueue {
    lines: SyncSender<Vec<u8>>,
}

impl LogQueue {
    fn start() -> LogQueue {
        let (lines, receiver) = std::sync::mpsc::sync_channel(LOG_QUEUE_LINES);
        let spawned = std::thread::Builder::new()
            .name("tether-log".to_owned())
            .spawn(move || write_lines(&receiver));
        if spawned.is_err() {
            // No writer thread: every line counts as dropped, which the
            // metric shows; the process keeps running.
            count_dropped_line();
        }
        LogQueue { lines }
    }
}

fn write_lines(receiver: &Receiver<Vec<u8>>) {
    let mut stderr = std::io::stderr();
    for line in receiver {
        if stderr.write_all(&line).is_err() {
            count_dropped_line();
        }
    }
}

/// One event's writer: tracing formats an event and writes it in one call.
struct LogLine<'a>(&'a LogQueue);

impl Write for LogLine<'_> {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        match self.0.lines.try_send(buf.to_vec()) {
            Ok(()) => {}
            Err(TrySendError::Full(_) | TrySendError::Disconnected(_)) => count_dropped_line(),
        }
        Ok(buf.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

impl<'a> tracing_subscriber::fmt::MakeWriter<'a> for LogQueue {
    type Writer = LogLine<'a>;

    fn make_writer(&'a self) -> Self::Writer {
        LogLine(self)
    }
}

/// Installs the tracing subscriber: human text (coloured on a terminal) or
/// one JSON object per line; `RUST_LOG` filters, `info` by default. Lines
/// go to standard error through [`LogQueue`].
pub(crate) fn init_logging(format: LogFormat) {
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("info"));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(LogQueue::start());
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
    metrics::describe_counter!(
        "tether_log_dropped_lines_total",
        metrics::Unit::Count,
        "Log lines dropped because standard error was full or closed."
    );
    let counter = metrics::counter!("tether_log_dropped_lines_total");
    counter.increment(DROPPED_LINES.load(Ordering::Relaxed));
    let _ = DROPPED_COUNTER.set(counter);
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
