//! Test support: a stream client that folds events into values, and waiting on conditions.

use std::collections::{BTreeMap, HashMap};
use std::future::Future;
use std::net::SocketAddr;
use std::time::Duration;

use bytes::{Bytes, BytesMut};
use tether_exporter::{ExporterBuilder, ExporterHandle, TetherRecorder};
use tether_proto::{EventKind, EventMetadata, FrameDecoder, Operation, decode_event};
use tokio::io::AsyncReadExt;
use tokio::net::TcpStream;
use tokio::task::JoinHandle;

/// How long any condition may take before a test fails: generous, since
/// the machine is shared; a passing test never waits this long.
pub(crate) const DEADLINE: Duration = Duration::from_secs(20);

/// A series as the stream names it: its name and its sorted labels.
pub(crate) type SeriesKey = (String, Vec<(String, String)>);

pub(crate) fn key(name: &str, labels: &[(&str, &str)]) -> SeriesKey {
    let mut labels: Vec<(String, String)> = labels
        .iter()
        .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
        .collect();
    labels.sort();
    (name.to_owned(), labels)
}

/// A recorder with a stream server on a free loopback port, served on the
/// current runtime.
pub(crate) fn start(builder: ExporterBuilder) -> (TetherRecorder, ExporterHandle, JoinHandle<()>) {
    let (recorder, future) = builder
        .with_stream_listener(([127, 0, 0, 1], 0))
        .build()
        .expect("the exporter builds");
    let handle = recorder.handle();
    let server = tokio::spawn(async move {
        future.await.expect("the stream server runs until shutdown");
    });
    (recorder, handle, server)
}

/// Polls `condition` until it holds, failing the test after [`DEADLINE`].
pub(crate) async fn wait_until(what: &str, mut condition: impl FnMut() -> bool) {
    let started = tokio::time::Instant::now();
    while !condition() {
        assert!(
            started.elapsed() < DEADLINE,
            "timed out waiting until {what}"
        );
        tokio::time::sleep(Duration::from_millis(2)).await;
    }
}

/// Awaits `future`, failing the test after [`DEADLINE`].
pub(crate) async fn within<T>(what: &str, future: impl Future<Output = T>) -> T {
    match tokio::time::timeout(DEADLINE, future).await {
        Ok(value) => value,
        Err(_) => panic!("timed out waiting for {what}"),
    }
}

/// A stream client as `metrics-observer` is one: it reads frames, decodes
/// each `Event` and folds it into current values.
#[derive(Debug)]
pub(crate) struct StreamClient {
    stream: TcpStream,
    buf: BytesMut,
    frames: FrameDecoder,
    pub(crate) eof: bool,
    /// Every byte received, in order.
    pub(crate) wire: Vec<u8>,
    /// Every frame body received, in order.
    pub(crate) bodies: Vec<Bytes>,
    pub(crate) metadata: HashMap<String, EventMetadata>,
    pub(crate) counters: HashMap<SeriesKey, u64>,
    pub(crate) gauges: HashMap<SeriesKey, f64>,
    pub(crate) samples: HashMap<SeriesKey, Vec<f64>>,
    /// The kind of each event, in order: `'m'` metadata, `'c'` counter,
    /// `'g'` gauge, `'h'` histogram sample.
    pub(crate) kinds: String,
}

impl StreamClient {
    pub(crate) async fn connect(addr: SocketAddr) -> StreamClient {
        let stream = within("connecting", TcpStream::connect(addr))
            .await
            .expect("the stream server accepts");
        StreamClient {
            stream,
            buf: BytesMut::new(),
            frames: FrameDecoder::default(),
            eof: false,
            wire: Vec::new(),
            bodies: Vec::new(),
            metadata: HashMap::new(),
            counters: HashMap::new(),
            gauges: HashMap::new(),
            samples: HashMap::new(),
            kinds: String::new(),
        }
    }

    /// Reads and folds events until `condition` holds; fails after [`DEADLINE`].
    pub(crate) async fn read_until(
        &mut self,
        what: &str,
        condition: impl Fn(&StreamClient) -> bool,
    ) {
        let started = tokio::time::Instant::now();
        while !condition(self) {
            assert!(!self.eof, "the stream ended before {what}");
            let left = DEADLINE.saturating_sub(started.elapsed());
            match tokio::time::timeout(left, self.read_some()).await {
                Ok(()) => {}
                Err(_) => panic!("timed out reading until {what}; got {:?}", self.counters),
            }
        }
    }

    /// Reads until the server closes the connection.
    pub(crate) async fn read_to_eof(&mut self) {
        self.read_until("the end of the stream", |client| client.eof)
            .await;
    }

    /// Reads once from the socket and folds the complete frames.
    async fn read_some(&mut self) {
        let before = self.buf.len();
        let n = self
            .stream
            .read_buf(&mut self.buf)
            .await
            .unwrap_or_default();
        if n == 0 {
            self.eof = true;
        }
        self.wire.extend_from_slice(&self.buf[before..]);
        while let Some(body) = self.frames.decode(&mut self.buf).expect("valid frames") {
            self.bodies.push(body.clone());
            let event = decode_event(body).expect("a valid Event");
            self.fold(event.kind.expect("a known event kind"));
        }
        if self.eof {
            assert!(self.buf.is_empty(), "the stream ended inside a frame");
        }
    }

    fn fold(&mut self, event: EventKind) {
        match event {
            EventKind::Metadata(metadata) => {
                self.kinds.push('m');
                self.metadata.insert(metadata.name.clone(), metadata);
            }
            EventKind::Metric(metric) => {
                let labels: BTreeMap<String, String> = metric.labels;
                let key = (metric.name, labels.into_iter().collect());
                match metric.operation.expect("an operation") {
                    Operation::SetCounter(value) => {
                        self.kinds.push('c');
                        self.counters.insert(key, value);
                    }
                    Operation::IncrementCounter(value) => {
                        self.kinds.push('c');
                        *self.counters.entry(key).or_default() += value;
                    }
                    Operation::SetGauge(value) => {
                        self.kinds.push('g');
                        self.gauges.insert(key, value);
                    }
                    Operation::IncrementGauge(value) => {
                        self.kinds.push('g');
                        *self.gauges.entry(key).or_default() += value;
                    }
                    Operation::DecrementGauge(value) => {
                        self.kinds.push('g');
                        *self.gauges.entry(key).or_default() -= value;
                    }
                    Operation::RecordHistogram(value) => {
                        self.kinds.push('h');
                        self.samples.entry(key).or_default().push(value);
                    }
                }
            }
        }
    }

    pub(crate) fn counter(&self, key: &SeriesKey) -> Option<u64> {
        self.counters.get(key).copied()
    }
}
