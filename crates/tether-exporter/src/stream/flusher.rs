//! The flusher: turns what changed in the registry into events for clients.
//!
//! One task owns the stream's view of the registry. Every flush interval,
//! while a client is attached, it reads each counter and gauge and, for
//! those whose value differs from the last one it sent, encodes one
//! absolute `set_counter` or `set_gauge` event; it drains each histogram's
//! sample buffer into `record_histogram` events; and it hands the encoded
//! chunks to every client's queue. The recording path is never involved:
//! coalescing many increments into one absolute value is what keeps it at
//! a single `fetch_add`.
//!
//! Exactness. Every event carries an absolute value taken from the
//! flusher's own record of what it last sent (`FlushSeries::last`), and
//! every client receives the events of one flusher in order, so a client's
//! value of a series is always a value the series had, and the latest one
//! once its events arrive. A client that lost events (its queue was full)
//! is sent a snapshot again; a new client gets a snapshot of that same
//! record, after the round that brought it up to date.

use std::sync::Arc;
use std::sync::atomic::Ordering;

use bytes::BytesMut;
use tokio::time::MissedTickBehavior;
use tokio_util::sync::CancellationToken;

use crate::cells::StreamGate;
use crate::registry::{SeriesRef, SharedIndex};
use crate::stream::StreamShared;
use crate::stream::encode::{
    EncodedSeries, EncodedTimestamp, Op, put_metadata_event, put_metric_event,
};
use crate::stream::queue::{Chunk, ClientQueue, QueueLimits};

/// The most events in one chunk, so that a slow client loses updates in
/// small pieces rather than whole flushes.
const MAX_CHUNK_EVENTS: usize = 1024;
/// The most bytes in one chunk (an event larger than this gets a chunk of its own).
const MAX_CHUNK_BYTES: usize = 64 * 1024;

/// One series as the flusher tracks it.
#[derive(Debug)]
struct FlushSeries {
    series: SeriesRef,
    encoded: EncodedSeries,
    /// The value (gauge: its bits) last sent to clients; meaningful once `sent`.
    last: u64,
    sent: bool,
}

/// Where a client's snapshot has got to.
#[derive(Debug, Clone, Copy, Default)]
struct Cursor {
    description: usize,
    series: usize,
}

#[derive(Debug)]
struct FlushClient {
    queue: Arc<ClientQueue>,
    /// `Some` while the client still needs (part of) a snapshot.
    snapshot: Option<Cursor>,
}

/// Groups encoded events into chunks no larger than the limits.
#[derive(Debug)]
struct ChunkBuilder {
    buf: BytesMut,
    events: usize,
    max_events: usize,
    max_bytes: usize,
    chunks: Vec<Chunk>,
}

impl ChunkBuilder {
    fn new(limits: QueueLimits) -> ChunkBuilder {
        ChunkBuilder {
            buf: BytesMut::new(),
            events: 0,
            max_events: MAX_CHUNK_EVENTS.min(limits.max_events),
            max_bytes: MAX_CHUNK_BYTES.min(limits.max_bytes),
            chunks: Vec::new(),
        }
    }

    /// Makes room for an event of at most `max_len` bytes.
    fn reserve_event(&mut self, max_len: usize) -> &mut BytesMut {
        if self.events > 0
            && (self.events >= self.max_events || self.buf.len() + max_len > self.max_bytes)
        {
            self.cut();
        }
        &mut self.buf
    }

    fn cut(&mut self) {
        if self.events > 0 {
            self.chunks.push(Chunk {
                bytes: self.buf.split().freeze(),
                events: self.events,
            });
            self.events = 0;
        }
    }

    fn finish(mut self) -> Vec<Chunk> {
        self.cut();
        self.chunks
    }
}

/// The flusher's state; see the module documentation.
#[derive(Debug)]
pub(crate) struct Flusher {
    index: Arc<SharedIndex>,
    gate: Arc<StreamGate>,
    shared: Arc<StreamShared>,
    series: Vec<FlushSeries>,
    descriptions_seen: u64,
    clients: Vec<FlushClient>,
}

impl Flusher {
    pub(crate) fn new(
        index: Arc<SharedIndex>,
        gate: Arc<StreamGate>,
        shared: Arc<StreamShared>,
    ) -> Flusher {
        Flusher {
            index,
            gate,
            shared,
            series: Vec::new(),
            descriptions_seen: 0,
            clients: Vec::new(),
        }
    }

    /// Flushes every interval while clients are attached, and at once when
    /// one connects; on shutdown, flushes a last time and closes every queue.
    pub(crate) async fn run(mut self, shutdown: CancellationToken) {
        let mut interval = tokio::time::interval(self.shared.config.flush_interval);
        interval.set_missed_tick_behavior(MissedTickBehavior::Delay);
        loop {
            let idle = self.clients.is_empty();
            tokio::select! {
                biased;
                () = shutdown.cancelled() => break,
                () = self.shared.wake_flusher.notified() => {}
                _ = interval.tick(), if !idle => {}
            }
            self.round(&EncodedTimestamp::now());
        }
        // The last values go out before the queues close, so that a client
        // of a process that shuts down gracefully ends with exact totals.
        self.round(&EncodedTimestamp::now());
        for client in &self.clients {
            client.queue.close();
        }
        for queue in self.shared.close_new_clients() {
            queue.close();
        }
        self.gate.active.store(false, Ordering::Relaxed);
    }

    /// One flush: updates to attached clients, then snapshots to new or
    /// resyncing ones.
    pub(crate) fn round(&mut self, timestamp: &EncodedTimestamp) {
        let limits = self.shared.config.queue_limits();
        let mut updates = ChunkBuilder::new(limits);
        let broadcast = !self.clients.is_empty();
        self.collect_updates(&mut updates, timestamp, broadcast);
        let chunks = updates.finish();
        for chunk in &chunks {
            for client in &self.clients {
                client.queue.push(chunk.clone(), &self.shared.stats);
            }
        }

        for queue in self.shared.take_new_clients() {
            self.clients.push(FlushClient {
                queue,
                snapshot: Some(Cursor::default()),
            });
        }
        self.clients.retain(|client| !client.queue.is_writer_gone());
        for client in &mut self.clients {
            if client.queue.take_lost_events() {
                client.snapshot = Some(Cursor::default());
                self.shared.stats.resyncs.fetch_add(1, Ordering::Relaxed);
            }
        }
        // Sampling starts before any snapshot goes out, so that a sample
        // recorded after a client has seen its snapshot is streamed to it.
        let active = !self.clients.is_empty();
        if active && !self.gate.active.load(Ordering::Relaxed) {
            for series in &self.series {
                if let SeriesRef::Histogram(cell) = &series.series {
                    cell.ensure_sample_buffer();
                }
            }
        }
        self.gate.active.store(active, Ordering::Relaxed);
        for i in 0..self.clients.len() {
            self.send_snapshot(i, timestamp, limits);
        }
    }

    /// Brings the flusher's record up to date and, when `broadcast`,
    /// encodes what changed.
    fn collect_updates(
        &mut self,
        updates: &mut ChunkBuilder,
        timestamp: &EncodedTimestamp,
        broadcast: bool,
    ) {
        {
            let index = self.index.read();
            for series in index.series().get(self.series.len()..).unwrap_or_default() {
                let encoded = EncodedSeries::new(&series.info().key);
                self.series.push(FlushSeries {
                    series: series.clone(),
                    encoded,
                    last: 0,
                    sent: false,
                });
            }
            if index.description_version() > self.descriptions_seen {
                for description in index.descriptions() {
                    if description.version > self.descriptions_seen && broadcast {
                        // Metadata is small; the bound only has to be generous.
                        let buf = updates
                            .reserve_event(description.name.len() + description.help.len() + 64);
                        put_metadata_event(buf, description);
                        updates.events += 1;
                    }
                }
                self.descriptions_seen = index.description_version();
            }
        }

        let active = self.gate.active.load(Ordering::Relaxed);
        for series in &mut self.series {
            let op = match &series.series {
                SeriesRef::Counter(cell) => {
                    let value = cell.get();
                    if series.sent && value == series.last {
                        continue;
                    }
                    series.last = value;
                    Op::SetCounter(value)
                }
                SeriesRef::Gauge(cell) => {
                    let bits = cell.get_bits();
                    if series.sent && bits == series.last {
                        continue;
                    }
                    series.last = bits;
                    Op::SetGauge(f64::from_bits(bits))
                }
                SeriesRef::Histogram(cell) => {
                    if active {
                        cell.ensure_sample_buffer();
                    }
                    let max_len = series.encoded.max_event_len(timestamp);
                    cell.drain_samples(|sample| {
                        if broadcast {
                            let buf = updates.reserve_event(max_len);
                            put_metric_event(
                                buf,
                                &series.encoded,
                                timestamp,
                                Op::RecordHistogram(sample),
                            );
                            updates.events += 1;
                        }
                    });
                    continue;
                }
            };
            series.sent = true;
            if broadcast {
                let buf = updates.reserve_event(series.encoded.max_event_len(timestamp));
                put_metric_event(buf, &series.encoded, timestamp, op);
                updates.events += 1;
            }
        }
    }

    /// Queues as much of client `i`'s snapshot as fits in half its queue:
    /// every description, then every counter and gauge at the value last
    /// sent. A snapshot larger than that continues at the next flush.
    fn send_snapshot(&mut self, i: usize, timestamp: &EncodedTimestamp, limits: QueueLimits) {
        let Some(client) = self.clients.get_mut(i) else {
            return;
        };
        let Some(mut cursor) = client.snapshot else {
            return;
        };
        let (room_events, room_bytes) = client.queue.snapshot_room();
        let mut builder = ChunkBuilder::new(limits);
        let mut n_events = 0;
        let mut n_bytes = 0;
        // Whether one more event of `len` bytes fits; an event that could
        // never fit (longer than half the queue) is skipped and counted.
        let mut fits = |len: usize, stats: &crate::stream::stats::Stats| -> Fit {
            if len > limits.max_bytes / 2 {
                stats
                    .events_dropped_client_queue
                    .fetch_add(1, Ordering::Relaxed);
                return Fit::Skip;
            }
            if n_events + 1 > room_events || n_bytes + len > room_bytes {
                return Fit::Full;
            }
            n_events += 1;
            n_bytes += len;
            Fit::Yes
        };
        let mut full = false;
        {
            let index = self.index.read();
            let descriptions = index.descriptions();
            while let Some(description) = descriptions.get(cursor.description) {
                let buf =
                    builder.reserve_event(description.name.len() + description.help.len() + 64);
                let mark = buf.len();
                let len = put_metadata_event(buf, description);
                match fits(len, &self.shared.stats) {
                    Fit::Yes => builder.events += 1,
                    Fit::Skip => builder.buf.truncate(mark),
                    Fit::Full => {
                        builder.buf.truncate(mark);
                        full = true;
                        break;
                    }
                }
                cursor.description += 1;
            }
        }
        while !full {
            let Some(series) = self.series.get(cursor.series) else {
                break;
            };
            let op = match &series.series {
                SeriesRef::Counter(_) if series.sent => Some(Op::SetCounter(series.last)),
                SeriesRef::Gauge(_) if series.sent => {
                    Some(Op::SetGauge(f64::from_bits(series.last)))
                }
                _ => None,
            };
            if let Some(op) = op {
                let buf = builder.reserve_event(series.encoded.max_event_len(timestamp));
                let mark = buf.len();
                let len = put_metric_event(buf, &series.encoded, timestamp, op);
                match fits(len, &self.shared.stats) {
                    Fit::Yes => builder.events += 1,
                    Fit::Skip => builder.buf.truncate(mark),
                    Fit::Full => {
                        builder.buf.truncate(mark);
                        full = true;
                        break;
                    }
                }
            }
            cursor.series += 1;
        }
        for chunk in builder.finish() {
            client.queue.push(chunk, &self.shared.stats);
        }
        client.snapshot = full.then_some(cursor);
    }
}

enum Fit {
    Yes,
    Skip,
    Full,
}

#[cfg(test)]
mod tests {
    use std::collections::HashMap;
    use std::time::Duration;

    use bytes::BytesMut;
    use metrics::{CounterFn, GaugeFn, HistogramFn, Key, Unit};
    use metrics_util::registry::Storage;
    use tether_proto::{EventKind, FrameDecoder, Operation, decode_event};

    use super::*;
    use crate::registry::{BucketConfig, Index, Kind, TetherStorage};
    use crate::stream::queue::Popped;
    use crate::stream::{StreamConfig, StreamShared};

    struct Fixture {
        storage: TetherStorage,
        flusher: Flusher,
        shared: Arc<StreamShared>,
    }

    fn fixture(max_events: usize) -> Fixture {
        let index = Arc::new(SharedIndex::new(Index::new(&[])));
        let gate = Arc::new(StreamGate::new(16));
        let shared = Arc::new(StreamShared::new(StreamConfig {
            max_clients: 4,
            client_buffer_messages: max_events,
            client_buffer_bytes: 1 << 20,
            flush_interval: Duration::from_millis(20),
            client_write_timeout: Duration::from_secs(1),
            shutdown_timeout: Duration::from_secs(1),
        }));
        let storage = TetherStorage {
            index: Arc::clone(&index),
            buckets: BucketConfig {
                default: Arc::from([1.0]),
                overrides: Vec::new(),
            },
            gate: Arc::clone(&gate),
        };
        let flusher = Flusher::new(index, gate, Arc::clone(&shared));
        Fixture {
            storage,
            flusher,
            shared,
        }
    }

    impl Fixture {
        fn connect(&self) -> Arc<ClientQueue> {
            let queue = Arc::new(ClientQueue::new(self.shared.config.queue_limits()));
            assert!(self.shared.add_client(Arc::clone(&queue)));
            queue
        }

        fn round(&mut self) {
            self.flusher.round(&EncodedTimestamp::now());
        }
    }

    /// What a client would read: every queued event, in order.
    fn read_events(queue: &ClientQueue) -> Vec<EventKind> {
        let mut wire = BytesMut::new();
        while let Popped::Chunk(chunk) = queue.pop() {
            wire.extend_from_slice(&chunk.bytes);
        }
        let mut frames = FrameDecoder::default();
        let mut events = Vec::new();
        while let Some(body) = frames.decode(&mut wire).expect("valid frames") {
            let event = decode_event(body).expect("a valid event");
            events.push(event.kind.expect("a known event kind"));
        }
        assert!(wire.is_empty(), "chunks hold whole frames");
        events
    }

    /// `(name, operation)` of each metric event; metadata as its name only.
    fn summary(events: &[EventKind]) -> Vec<(String, Option<Operation>)> {
        events
            .iter()
            .map(|event| match event {
                EventKind::Metadata(metadata) => (format!("meta:{}", metadata.name), None),
                EventKind::Metric(metric) => (metric.name.clone(), metric.operation),
            })
            .collect()
    }

    #[test]
    fn a_new_client_gets_metadata_and_values_then_only_changes_coalesced() {
        let mut fx = fixture(1024);
        let counter = fx.storage.counter(&Key::from_name("requests"));
        let gauge = fx.storage.gauge(&Key::from_name("temperature"));
        let histogram = fx.storage.histogram(&Key::from_name("latency"));
        counter.increment(5);
        gauge.set(1.5);
        fx.storage.index.write().describe(
            Kind::Counter,
            "requests",
            Some(Unit::Count),
            "Requests.",
        );
        fx.round();
        let client = fx.connect();
        fx.round();
        assert_eq!(
            summary(&read_events(&client)),
            [
                ("meta:requests".to_owned(), None),
                ("requests".to_owned(), Some(Operation::SetCounter(5))),
                ("temperature".to_owned(), Some(Operation::SetGauge(1.5))),
            ]
        );

        for _ in 0..3 {
            counter.increment(1);
        }
        histogram.record(0.5);
        histogram.record(2.0);
        fx.round();
        assert_eq!(
            summary(&read_events(&client)),
            [
                ("requests".to_owned(), Some(Operation::SetCounter(8))),
                ("latency".to_owned(), Some(Operation::RecordHistogram(0.5))),
                ("latency".to_owned(), Some(Operation::RecordHistogram(2.0))),
            ]
        );

        fx.round();
        assert!(read_events(&client).is_empty(), "nothing changed");

        fx.storage
            .index
            .write()
            .describe(Kind::Gauge, "temperature", None, "Now.");
        gauge.set(2.0);
        fx.round();
        assert_eq!(
            summary(&read_events(&client)),
            [
                ("meta:temperature".to_owned(), None),
                ("temperature".to_owned(), Some(Operation::SetGauge(2.0))),
            ]
        );
    }

    #[test]
    fn a_client_that_lost_events_ends_with_exact_values() {
        // Four events per queue: snapshots go two at a time, and ten
        // changed counters overflow it.
        let mut fx = fixture(4);
        let counters: Vec<_> = (0..10)
            .map(|i| fx.storage.counter(&Key::from_name(format!("c{i}"))))
            .collect();
        let client = fx.connect();
        fx.round();
        assert_eq!(read_events(&client).len(), 2, "half the queue per slice");

        // The client stops reading while every counter changes.
        for (i, counter) in counters.iter().enumerate() {
            counter.increment(i as u64 + 1);
        }
        fx.round();
        fx.round();
        let stats = fx.shared.stats.snapshot(0);
        assert!(stats.events_dropped_client_queue > 0, "{stats:?}");
        assert!(stats.resyncs >= 1, "{stats:?}");

        // It reads again: within a few flushes it holds every exact total.
        let mut seen = HashMap::new();
        for _ in 0..20 {
            for event in read_events(&client) {
                if let EventKind::Metric(metric) = event
                    && let Some(Operation::SetCounter(value)) = metric.operation
                {
                    seen.insert(metric.name, value);
                }
            }
            fx.round();
        }
        let expected: HashMap<String, u64> =
            (0..10).map(|i| (format!("c{i}"), i as u64 + 1)).collect();
        assert_eq!(seen, expected);
    }

    #[test]
    fn the_last_client_leaving_stops_sampling_histograms() {
        let mut fx = fixture(1024);
        let histogram = fx.storage.histogram(&Key::from_name("latency"));
        let client = fx.connect();
        fx.round();
        assert!(fx.flusher.gate.active.load(Ordering::Relaxed));
        client.writer_gone();
        fx.round();
        assert!(!fx.flusher.gate.active.load(Ordering::Relaxed));
        histogram.record(1.0);
        let other = fx.connect();
        fx.round();
        assert!(
            read_events(&other).is_empty(),
            "a sample recorded with no client attached is not streamed"
        );
    }
}
