//! The stream's listener and its per-client writer tasks.
//!
//! `run(listener, ..., shutdown)` serves the listener with
//! `tether_tcp::Server` (a permit before each accept, accept errors handled
//! by kind, one task and one `conn` span per connection), runs the flusher
//! beside it, and gives each client a queue and a writer. A client over the
//! cap is accepted and closed at once, and counted: a stream client left
//! waiting in the kernel's backlog would look connected and receive
//! nothing, which is worse than a refusal it can see. So the listener's own
//! cap is the client cap plus a few connections being refused. The server
//! only writes; it reads from a client only to notice that it has gone.
//!
//! What a client is sent are chunks of frames the flusher encoded once for
//! every client (`encode.rs`), so they are written as they are: a
//! `tether_tcp::FramedConn` would encode each event again per client.
//!
//! Shutdown: stop accepting, let the flusher send the last values and
//! close the queues, let writers send what is queued, and after
//! `shutdown_timeout` close whatever is left (with a warning).

use std::convert::Infallible;
use std::future::Future;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use metrics::{Counter, Gauge, Histogram, Key, KeyName, Metadata, Recorder, SharedString, Unit};
use tether_tcp::{Connection, Handler, ListenerMetrics, MeteredStream, Server, ServerConfig};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpListener;
use tokio::sync::{OwnedSemaphorePermit, Semaphore};
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use tokio_util::task::task_tracker::TaskTrackerToken;
use tracing::{debug, error, warn};

use crate::cells::StreamGate;
use crate::registry::SharedIndex;
use crate::stream::queue::Popped;
use crate::stream::{ClientQueue, Flusher, StreamShared};

/// The listener's name in its `conn` spans and log lines.
const LISTENER_NAME: &str = "stream";

/// Connections the listener takes beyond the client cap, so that clients
/// over it are accepted and refused rather than left in the backlog. A
/// refusal lasts the start of one task, so more than this many at once
/// means a flood of connections, which then waits in the backlog instead of
/// taking file descriptors.
const REFUSALS_IN_FLIGHT: usize = 16;

/// Serves the stream on `listener` until `shutdown` is cancelled.
pub(crate) async fn run(
    listener: TcpListener,
    index: Arc<SharedIndex>,
    gate: Arc<StreamGate>,
    shared: Arc<StreamShared>,
    shutdown: CancellationToken,
) {
    // The flusher and every client's writer: what `run` waits for before it
    // returns, also after the listener's drain deadline has passed.
    let tracker = TaskTracker::new();
    // Cancelled when the shutdown deadline passes: writers stop at once.
    let abort = CancellationToken::new();
    let max_clients = shared.config.max_clients.min(Semaphore::MAX_PERMITS);
    let config = ServerConfig {
        max_connections: max_clients
            .saturating_add(REFUSALS_IN_FLIGHT)
            .min(Semaphore::MAX_PERMITS),
        shutdown_timeout: shared.config.shutdown_timeout,
        ..ServerConfig::default()
    };
    let recorder = ListenerRecorder {
        accept_errors: Arc::clone(&shared.stats.accept_errors),
    };
    let clients = Clients {
        shared: Arc::clone(&shared),
        permits: Arc::new(Semaphore::new(max_clients)),
        tracker: tracker.clone(),
        abort: abort.clone(),
    };
    // `Server::new` checks a cap of 1 to `Semaphore::MAX_PERMITS` (the
    // builder requires at least one client, and the cap is clamped above)
    // and the default backoff, so it does not fail; were it to, nothing
    // has been started yet.
    let server = match Server::new(
        ListenerMetrics::new(LISTENER_NAME, &recorder),
        config,
        clients,
    ) {
        Ok(server) => server,
        Err(error) => {
            error!(%error, "stream server not started");
            return;
        }
    };
    tracker.spawn(Flusher::new(index, gate, Arc::clone(&shared)).run(shutdown.clone()));
    let drain = server.run(listener, shutdown).await;
    tracker.close();
    if !drain.complete {
        warn!(
            timeout_ms = shared.config.shutdown_timeout.as_millis(),
            n_clients = drain.n_remaining,
            "stream clients still had events queued at the shutdown deadline; closing them"
        );
        abort.cancel();
    }
    tracker.wait().await;
}

/// The recorder of the listener's `tether_tcp_*` metrics: failed accepts
/// go to the stream's own `tether_exporter_stream_accept_errors_total`,
/// everything else to nothing, as with `metrics::NoopRecorder`.
///
/// Not the exporter's own recorder, nor the global one (often the same):
/// socket and byte counts of the stream recorded into the registry the
/// stream serves would feed back into it (each write changes a byte
/// counter, which the next flush sends, which is another write, so the
/// stream would never go quiet), and would add `tether_tcp_*` families to
/// the application's metrics. The stream's own counters (`stats.rs`) are
/// plain atomics for that reason, and already count clients and bytes;
/// only a failed accept is seen by the listener alone.
#[derive(Debug)]
struct ListenerRecorder {
    accept_errors: Arc<AtomicU64>,
}

impl Recorder for ListenerRecorder {
    fn describe_counter(&self, _key: KeyName, _unit: Option<Unit>, _description: SharedString) {}

    fn describe_gauge(&self, _key: KeyName, _unit: Option<Unit>, _description: SharedString) {}

    fn describe_histogram(&self, _key: KeyName, _unit: Option<Unit>, _description: SharedString) {}

    fn register_counter(&self, key: &Key, _metadata: &Metadata<'_>) -> Counter {
        // One counter per error kind is registered; the stream's counter
        // has no kinds, so they all add to it.
        if key.name() == tether_tcp::ACCEPT_ERRORS_TOTAL {
            Counter::from_arc(Arc::clone(&self.accept_errors))
        } else {
            Counter::noop()
        }
    }

    fn register_gauge(&self, _key: &Key, _metadata: &Metadata<'_>) -> Gauge {
        Gauge::noop()
    }

    fn register_histogram(&self, _key: &Key, _metadata: &Metadata<'_>) -> Histogram {
        Histogram::noop()
    }
}

/// The handler of every connection: admission to the client cap, then the
/// client's writer.
struct Clients {
    shared: Arc<StreamShared>,
    /// The client cap, `max_clients` permits.
    permits: Arc<Semaphore>,
    tracker: TaskTracker,
    abort: CancellationToken,
}

impl Handler for Clients {
    type Error = Infallible;

    // The connection's shutdown token is not watched: a client ends
    // gracefully when the flusher, which watches the server's, has sent the
    // last values and closed the client's queue.
    fn handle(
        &self,
        stream: MeteredStream,
        _conn: Connection,
    ) -> impl Future<Output = Result<(), Infallible>> + Send {
        let client = self.admit();
        async move {
            match client {
                Some(client) => client.serve(stream).await,
                // Closed at once: a refusal the client can see.
                None => drop(stream),
            }
            Ok(())
        }
    }
}

impl Clients {
    /// A client with its queue handed to the flusher, or `None` (counted)
    /// when the cap is reached or the flusher has stopped.
    fn admit(&self) -> Option<Client> {
        let shared = &self.shared;
        let Ok(permit) = Arc::clone(&self.permits).try_acquire_owned() else {
            shared.stats.clients_refused.fetch_add(1, Ordering::Relaxed);
            warn!(
                max_clients = shared.config.max_clients,
                "stream client refused: too many clients"
            );
            return None;
        };
        let queue = Arc::new(ClientQueue::new(shared.config.queue_limits()));
        if !shared.add_client(Arc::clone(&queue)) {
            debug!("stream client closed: the stream is shutting down");
            return None;
        }
        shared
            .stats
            .clients_accepted
            .fetch_add(1, Ordering::Relaxed);
        shared.stats.clients.fetch_add(1, Ordering::Relaxed);
        debug!("stream client connected");
        Some(Client {
            queue: Arc::clone(&queue),
            shared: Arc::clone(shared),
            abort: self.abort.clone(),
            _guard: ClientGuard {
                queue,
                shared: Arc::clone(shared),
                permit: Some(permit),
                _tracked: self.tracker.token(),
            },
        })
    }
}

/// One admitted client and what its writer needs.
#[derive(Debug)]
struct Client {
    queue: Arc<ClientQueue>,
    shared: Arc<StreamShared>,
    abort: CancellationToken,
    _guard: ClientGuard,
}

/// Counts a client's end exactly once, whatever path the writer leaves by,
/// tells the flusher to forget it, and gives its slot back.
#[derive(Debug)]
struct ClientGuard {
    queue: Arc<ClientQueue>,
    shared: Arc<StreamShared>,
    /// The client's slot under the cap; given back before `clients` goes
    /// down, so that a slot is free once the count says so.
    permit: Option<OwnedSemaphorePermit>,
    /// Keeps `run` waiting for this writer.
    _tracked: TaskTrackerToken,
}

impl Drop for ClientGuard {
    fn drop(&mut self) {
        drop(self.permit.take());
        self.queue.writer_gone();
        self.shared.stats.clients.fetch_sub(1, Ordering::Relaxed);
        self.shared.wake_flusher.notify_one();
    }
}

impl Client {
    async fn serve(self, stream: MeteredStream) {
        let Client {
            queue,
            shared,
            abort,
            _guard,
        } = self;
        let (mut reader, mut writer) = stream.into_split();
        let mut discard = [0_u8; 256];
        let write_timeout = shared.config.client_write_timeout;
        loop {
            let chunk = match queue.pop() {
                Popped::Chunk(chunk) => chunk,
                Popped::Closed => {
                    // Graceful end: everything queued was written.
                    let _ = writer.shutdown().await;
                    return;
                }
                Popped::Empty => {
                    tokio::select! {
                        biased;
                        () = abort.cancelled() => return,
                        () = queue.ready.notified() => continue,
                        read = reader.read(&mut discard) => match read {
                            Ok(0) | Err(_) => {
                                debug!("stream client disconnected");
                                return;
                            }
                            // Clients have nothing to say; what they send is ignored.
                            Ok(_) => continue,
                        },
                    }
                }
            };
            let written = tokio::select! {
                biased;
                () = abort.cancelled() => return,
                written = tokio::time::timeout(write_timeout, writer.write_all(&chunk.bytes)) => written,
            };
            match written {
                Ok(Ok(())) => {
                    let stats = &shared.stats;
                    stats
                        .events_written
                        .fetch_add(chunk.events as u64, Ordering::Relaxed);
                    stats
                        .bytes_written
                        .fetch_add(chunk.bytes.len() as u64, Ordering::Relaxed);
                }
                Ok(Err(error)) => {
                    debug!(%error, "stream client write failed; disconnecting");
                    return;
                }
                Err(_) => {
                    shared
                        .stats
                        .clients_timed_out
                        .fetch_add(1, Ordering::Relaxed);
                    warn!(
                        timeout_ms = write_timeout.as_millis(),
                        "stream client made no progress; disconnecting"
                    );
                    return;
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use metrics::Label;

    use super::*;

    static METADATA: Metadata<'static> = Metadata::new(module_path!(), metrics::Level::INFO, None);

    #[test]
    fn the_listener_recorder_keeps_only_failed_accepts() {
        let recorder = ListenerRecorder {
            accept_errors: Arc::new(AtomicU64::new(0)),
        };
        // (metric, labels, increment, accept errors counted after it)
        let cases = [
            (tether_tcp::ACCEPT_ERRORS_TOTAL, "emfile", 2, 2),
            (tether_tcp::ACCEPT_ERRORS_TOTAL, "other", 1, 3),
            (tether_tcp::BYTES_WRITTEN_TOTAL, "", 100, 3),
            (tether_tcp::SOCKETS_OPENED_TOTAL, "", 1, 3),
        ];
        for (name, kind, increment, expected) in cases {
            let mut labels = vec![Label::new("listener", LISTENER_NAME)];
            if !kind.is_empty() {
                labels.push(Label::new("kind", kind));
            }
            recorder
                .register_counter(&Key::from_parts(name, labels), &METADATA)
                .increment(increment);
            assert_eq!(
                recorder.accept_errors.load(Ordering::Relaxed),
                expected,
                "{name}{{kind={kind:?}}}"
            );
        }
    }
}
