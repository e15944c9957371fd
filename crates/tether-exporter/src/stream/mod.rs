//! The live TCP event stream, readable by `metrics-observer`.
//!
//! Three parts: the accept loop and one writer task per client
//! (`server.rs`), the flusher that turns registry changes into encoded
//! events (`flusher.rs`), and each client's bounded queue between them
//! (`queue.rs`). The wire format is `metrics-exporter-tcp`'s: one varint
//! length-prefixed `event.proto.Event` after another (`encode.rs`).

mod encode;
mod flusher;
mod queue;
mod server;
mod stats;

use std::net::{Ipv4Addr, SocketAddr, SocketAddrV4};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::Duration;

use tokio::sync::Notify;

pub(crate) use self::flusher::Flusher;
pub(crate) use self::queue::{ClientQueue, QueueLimits};
pub(crate) use self::server::run;
pub use self::stats::StreamStats;
pub(crate) use self::stats::{RESERVED as RESERVED_NAMES, Stats};

/// Where the stream listens unless told otherwise: loopback only, unlike
/// `metrics-exporter-tcp`'s `0.0.0.0:5000`, since the stream has no
/// authentication.
pub const DEFAULT_STREAM_ADDR: SocketAddr =
    SocketAddr::V4(SocketAddrV4::new(Ipv4Addr::LOCALHOST, 5000));

/// Clients connected at once; the next one is accepted, counted in
/// `tether_exporter_stream_clients_refused_total` and closed at once.
pub const DEFAULT_MAX_STREAM_CLIENTS: usize = 64;

/// Events a client's queue holds; past it the oldest are dropped, counted
/// in `tether_exporter_stream_events_dropped_total{reason="client_queue_full"}`,
/// and the client is sent every current value again once it has room.
pub const DEFAULT_STREAM_CLIENT_BUFFER_MESSAGES: usize = 16_384;

/// Bytes a client's queue holds; the same policy as the message limit.
pub const DEFAULT_STREAM_CLIENT_BUFFER_BYTES: usize = 4 << 20;

/// How often changed values and histogram samples go out to clients.
/// Counter and gauge updates within one interval are sent as one absolute value.
pub const DEFAULT_STREAM_FLUSH_INTERVAL_MS: u64 = 20;

/// Histogram samples buffered per histogram between two flushes while a
/// client is attached; past it new samples are dropped (they still count
/// in the histogram's buckets), counted in
/// `tether_exporter_stream_events_dropped_total{reason="histogram_buffer_full"}`.
/// With the default interval this streams up to ~50k samples/s per histogram.
pub const DEFAULT_STREAM_HISTOGRAM_BUFFER_SAMPLES: usize = 1024;

/// How long one write to a client may make no progress before the client
/// is disconnected and counted in `tether_exporter_stream_client_write_timeouts_total`.
pub const DEFAULT_STREAM_CLIENT_WRITE_TIMEOUT_MS: u64 = 30_000;

/// How long a graceful shutdown waits for clients to receive what is
/// queued before it closes their connections anyway (and logs a warning).
pub const DEFAULT_STREAM_SHUTDOWN_TIMEOUT_MS: u64 = 2_000;

/// The smallest per-client byte limit accepted: room for a snapshot slice
/// of many events at once.
pub(crate) const MIN_STREAM_CLIENT_BUFFER_BYTES: usize = 64 * 1024;

/// The stream settings, validated by the builder.
#[derive(Debug, Clone)]
pub(crate) struct StreamConfig {
    pub(crate) max_clients: usize,
    pub(crate) client_buffer_messages: usize,
    pub(crate) client_buffer_bytes: usize,
    pub(crate) flush_interval: Duration,
    pub(crate) client_write_timeout: Duration,
    pub(crate) shutdown_timeout: Duration,
}

impl StreamConfig {
    pub(crate) fn queue_limits(&self) -> QueueLimits {
        QueueLimits {
            max_events: self.client_buffer_messages,
            max_bytes: self.client_buffer_bytes,
        }
    }
}

#[derive(Debug, Default)]
struct NewClients {
    queues: Vec<Arc<ClientQueue>>,
    /// The flusher has stopped: no queue would ever be served.
    closed: bool,
}

/// What the server, the flusher and the handles share.
#[derive(Debug)]
pub(crate) struct StreamShared {
    pub(crate) config: StreamConfig,
    pub(crate) stats: Stats,
    /// Clients accepted but not yet seen by the flusher. A `std` mutex:
    /// pushed once per connection, taken once per flush, never across an
    /// `.await`.
    new_clients: Mutex<NewClients>,
    /// Wakes the flusher early: a client connected or left.
    pub(crate) wake_flusher: Notify,
}

impl StreamShared {
    pub(crate) fn new(config: StreamConfig) -> StreamShared {
        StreamShared {
            config,
            stats: Stats::default(),
            new_clients: Mutex::new(NewClients::default()),
            wake_flusher: Notify::new(),
        }
    }

    fn new_clients(&self) -> MutexGuard<'_, NewClients> {
        self.new_clients
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
    }

    /// Hands a new client's queue to the flusher; false once it has stopped.
    pub(crate) fn add_client(&self, queue: Arc<ClientQueue>) -> bool {
        {
            let mut new_clients = self.new_clients();
            if new_clients.closed {
                return false;
            }
            new_clients.queues.push(queue);
        }
        self.wake_flusher.notify_one();
        true
    }

    fn take_new_clients(&self) -> Vec<Arc<ClientQueue>> {
        std::mem::take(&mut self.new_clients().queues)
    }

    fn close_new_clients(&self) -> Vec<Arc<ClientQueue>> {
        let mut new_clients = self.new_clients();
        new_clients.closed = true;
        std::mem::take(&mut new_clients.queues)
    }
}
