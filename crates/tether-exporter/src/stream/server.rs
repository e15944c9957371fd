//! The stream's accept loop and its per-client writer tasks.
//!
//! `run(listener, ..., shutdown)` accepts clients up to the cap, gives each
//! a queue and a writer task, and runs the flusher beside them. A client
//! over the cap is accepted and closed at once, and counted: a stream
//! client left waiting in the kernel's backlog would look connected and
//! receive nothing, which is worse than a refusal it can see. The server
//! only writes; it reads from a client only to notice that it has gone.
//!
//! Shutdown: stop accepting, let the flusher send the last values and
//! close the queues, let writers send what is queued, and after
//! `shutdown_timeout` close whatever is left (with a warning).

use std::io;
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{OwnedSemaphorePermit, Semaphore};
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use tracing::{debug, warn};

use crate::cells::StreamGate;
use crate::registry::SharedIndex;
use crate::stream::queue::Popped;
use crate::stream::{ClientQueue, Flusher, StreamShared};

/// The first pause after an `accept` error that is not a peer's reset
/// (such as running out of file descriptors); it doubles up to the maximum.
const ACCEPT_BACKOFF_INITIAL: Duration = Duration::from_millis(10);
const ACCEPT_BACKOFF_MAX: Duration = Duration::from_secs(1);

/// Serves the stream on `listener` until `shutdown` is cancelled.
pub(crate) async fn run(
    listener: TcpListener,
    index: Arc<SharedIndex>,
    gate: Arc<StreamGate>,
    shared: Arc<StreamShared>,
    shutdown: CancellationToken,
) {
    let tracker = TaskTracker::new();
    // Cancelled when the shutdown deadline passes: writers stop at once.
    let abort = CancellationToken::new();
    tracker.spawn(Flusher::new(index, gate, Arc::clone(&shared)).run(shutdown.clone()));
    let permits = Arc::new(Semaphore::new(shared.config.max_clients));
    let mut backoff = ACCEPT_BACKOFF_INITIAL;
    loop {
        let accepted = tokio::select! {
            biased;
            () = shutdown.cancelled() => break,
            accepted = listener.accept() => accepted,
        };
        let (stream, peer) = match accepted {
            Ok(accepted) => {
                backoff = ACCEPT_BACKOFF_INITIAL;
                accepted
            }
            Err(error) if is_peer_error(&error) => continue,
            Err(error) => {
                shared.stats.accept_errors.fetch_add(1, Ordering::Relaxed);
                warn!(error = %error, backoff_ms = backoff.as_millis(), "stream accept failed; backing off");
                tokio::select! {
                    () = shutdown.cancelled() => break,
                    () = tokio::time::sleep(backoff) => {}
                }
                backoff = (backoff * 2).min(ACCEPT_BACKOFF_MAX);
                continue;
            }
        };
        let Ok(permit) = Arc::clone(&permits).try_acquire_owned() else {
            shared.stats.clients_refused.fetch_add(1, Ordering::Relaxed);
            warn!(peer = %peer, max_clients = shared.config.max_clients, "stream client refused: too many clients");
            drop(stream);
            continue;
        };
        let queue = Arc::new(ClientQueue::new(shared.config.queue_limits()));
        if !shared.add_client(Arc::clone(&queue)) {
            break;
        }
        shared
            .stats
            .clients_accepted
            .fetch_add(1, Ordering::Relaxed);
        shared.stats.clients.fetch_add(1, Ordering::Relaxed);
        debug!(peer = %peer, "stream client connected");
        let client = Client {
            stream,
            peer,
            queue,
            shared: Arc::clone(&shared),
            _permit: permit,
        };
        tracker.spawn(client.serve(abort.clone()));
    }
    drop(listener);
    tracker.close();
    let timeout = shared.config.shutdown_timeout;
    if tokio::time::timeout(timeout, tracker.wait()).await.is_err() {
        warn!(
            timeout_ms = timeout.as_millis(),
            "stream clients still had events queued at the shutdown deadline; closing them"
        );
        abort.cancel();
        tracker.wait().await;
    }
}

/// Errors of one connection attempt, not of the listener: skip and go on.
fn is_peer_error(error: &io::Error) -> bool {
    matches!(
        error.kind(),
        io::ErrorKind::ConnectionRefused
            | io::ErrorKind::ConnectionAborted
            | io::ErrorKind::ConnectionReset
    )
}

/// One connected client and what its writer task needs.
#[derive(Debug)]
struct Client {
    stream: TcpStream,
    peer: SocketAddr,
    queue: Arc<ClientQueue>,
    shared: Arc<StreamShared>,
    /// Held for the life of the connection: the client cap.
    _permit: OwnedSemaphorePermit,
}

/// Counts a client's end exactly once, whatever path the writer leaves by,
/// and tells the flusher to forget it.
#[derive(Debug)]
struct ClientGuard {
    queue: Arc<ClientQueue>,
    shared: Arc<StreamShared>,
}

impl Drop for ClientGuard {
    fn drop(&mut self) {
        self.queue.writer_gone();
        self.shared.stats.clients.fetch_sub(1, Ordering::Relaxed);
        self.shared.wake_flusher.notify_one();
    }
}

impl Client {
    async fn serve(self, abort: CancellationToken) {
        let Client {
            stream,
            peer,
            queue,
            shared,
            _permit,
        } = self;
        let _guard = ClientGuard {
            queue: Arc::clone(&queue),
            shared: Arc::clone(&shared),
        };
        // Events are flushed in batches already; Nagle would only delay them.
        if let Err(error) = stream.set_nodelay(true) {
            debug!(peer = %peer, error = %error, "cannot set TCP_NODELAY on a stream client");
        }
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
                                debug!(peer = %peer, "stream client disconnected");
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
                    debug!(peer = %peer, error = %error, "stream client write failed; disconnecting");
                    return;
                }
                Err(_) => {
                    shared
                        .stats
                        .clients_timed_out
                        .fetch_add(1, Ordering::Relaxed);
                    warn!(peer = %peer, timeout_ms = write_timeout.as_millis(), "stream client made no progress; disconnecting");
                    return;
                }
            }
        }
    }
}
