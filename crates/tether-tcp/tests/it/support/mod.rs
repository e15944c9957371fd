//! Test support: a local recorder whose values tests read back, a server
//! started on a free loopback port, and waiting on a condition with a
//! deadline.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use metrics::{
    Counter, Gauge, Histogram, HistogramFn, Key, KeyName, Label, Metadata, Recorder, SharedString,
    Unit,
};
use tether_tcp::{Drain, Handler, ListenerMetrics, Server, ServerConfig};
use tokio::net::TcpListener;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

/// How long `wait_for` polls before it fails the test.
pub(crate) const WAIT_DEADLINE: Duration = Duration::from_secs(20);
/// The pause between two polls of `wait_for`.
const POLL_INTERVAL: Duration = Duration::from_millis(2);

/// A recorder local to one test: counters and gauges are atomics that the
/// test reads, histograms keep every sample.
#[derive(Clone, Default)]
pub(crate) struct TestRecorder {
    store: Arc<Mutex<Store>>,
}

#[derive(Default)]
struct Store {
    counters: HashMap<Key, Arc<AtomicU64>>,
    gauges: HashMap<Key, Arc<AtomicU64>>,
    histograms: HashMap<Key, Arc<Samples>>,
    descriptions: HashMap<String, (Option<Unit>, String)>,
}

#[derive(Default)]
struct Samples(Mutex<Vec<f64>>);

impl HistogramFn for Samples {
    fn record(&self, value: f64) {
        self.0
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .push(value);
    }
}

impl TestRecorder {
    fn store(&self) -> std::sync::MutexGuard<'_, Store> {
        // A test that panicked while holding the lock fails anyway; the
        // values are still readable.
        self.store.lock().unwrap_or_else(PoisonError::into_inner)
    }

    fn describe(&self, key: &KeyName, unit: Option<Unit>, description: &SharedString) {
        self.store()
            .descriptions
            .insert(key.as_str().to_owned(), (unit, description.to_string()));
    }

    /// A counter's value; 0 if it was never registered.
    pub(crate) fn counter(&self, name: &'static str, labels: &[(&'static str, &str)]) -> u64 {
        self.store()
            .counters
            .get(&key(name, labels))
            .map_or(0, |value| value.load(Ordering::SeqCst))
    }

    /// A gauge's value; 0 if it was never registered.
    pub(crate) fn gauge(&self, name: &'static str, labels: &[(&'static str, &str)]) -> f64 {
        self.store()
            .gauges
            .get(&key(name, labels))
            .map_or(0.0, |value| f64::from_bits(value.load(Ordering::SeqCst)))
    }

    /// A histogram's samples.
    pub(crate) fn samples(&self, name: &'static str, labels: &[(&'static str, &str)]) -> Vec<f64> {
        self.store()
            .histograms
            .get(&key(name, labels))
            .map(|samples| {
                samples
                    .0
                    .lock()
                    .unwrap_or_else(PoisonError::into_inner)
                    .clone()
            })
            .unwrap_or_default()
    }

    /// A metric's description, with its unit.
    pub(crate) fn description(&self, name: &str) -> Option<(Option<Unit>, String)> {
        self.store().descriptions.get(name).cloned()
    }
}

fn key(name: &'static str, labels: &[(&'static str, &str)]) -> Key {
    let labels: Vec<Label> = labels
        .iter()
        .map(|&(label, value)| Label::new(label, value.to_owned()))
        .collect();
    Key::from_parts(name, labels)
}

impl Recorder for TestRecorder {
    fn describe_counter(&self, key: KeyName, unit: Option<Unit>, description: SharedString) {
        self.describe(&key, unit, &description);
    }

    fn describe_gauge(&self, key: KeyName, unit: Option<Unit>, description: SharedString) {
        self.describe(&key, unit, &description);
    }

    fn describe_histogram(&self, key: KeyName, unit: Option<Unit>, description: SharedString) {
        self.describe(&key, unit, &description);
    }

    fn register_counter(&self, key: &Key, _metadata: &Metadata<'_>) -> Counter {
        Counter::from_arc(Arc::clone(
            self.store().counters.entry(key.clone()).or_default(),
        ))
    }

    fn register_gauge(&self, key: &Key, _metadata: &Metadata<'_>) -> Gauge {
        Gauge::from_arc(Arc::clone(
            self.store().gauges.entry(key.clone()).or_default(),
        ))
    }

    fn register_histogram(&self, key: &Key, _metadata: &Metadata<'_>) -> Histogram {
        Histogram::from_arc(Arc::clone(
            self.store().histograms.entry(key.clone()).or_default(),
        ))
    }
}

/// Polls `condition` until it holds; fails the test with `what` if it does
/// not within [`WAIT_DEADLINE`].
pub(crate) async fn wait_for(what: &str, mut condition: impl FnMut() -> bool) {
    let deadline = tokio::time::Instant::now() + WAIT_DEADLINE;
    while !condition() {
        assert!(
            tokio::time::Instant::now() < deadline,
            "timed out waiting for {what}"
        );
        tokio::time::sleep(POLL_INTERVAL).await;
    }
}

/// A server running on a free loopback port, recording into its own
/// recorder.
pub(crate) struct TestServer {
    pub(crate) addr: SocketAddr,
    pub(crate) name: &'static str,
    pub(crate) recorder: TestRecorder,
    pub(crate) shutdown: CancellationToken,
    task: JoinHandle<Drain>,
}

impl TestServer {
    /// Binds `127.0.0.1:0` and runs `handler` there as listener `name`.
    pub(crate) async fn start<H: Handler>(
        name: &'static str,
        config: ServerConfig,
        handler: H,
    ) -> Self {
        let recorder = TestRecorder::default();
        let metrics = ListenerMetrics::new(name, &recorder);
        let server = Server::new(metrics, config, handler).expect("valid server config");
        let listener = TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind loopback");
        let addr = listener.local_addr().expect("bound address");
        let shutdown = CancellationToken::new();
        let task = tokio::spawn(server.run(listener, shutdown.clone()));
        Self {
            addr,
            name,
            recorder,
            shutdown,
            task,
        }
    }

    /// A counter of this listener.
    pub(crate) fn counter(&self, name: &'static str) -> u64 {
        self.recorder.counter(name, &[("listener", self.name)])
    }

    /// A gauge of this listener.
    pub(crate) fn gauge(&self, name: &'static str) -> f64 {
        self.recorder.gauge(name, &[("listener", self.name)])
    }

    /// Waits until counter `name` equals `expected`.
    pub(crate) async fn wait_counter(&self, name: &'static str, expected: u64) {
        wait_for(&format!("{name} == {expected}"), || {
            self.counter(name) == expected
        })
        .await;
    }

    /// Waits until gauge `name` equals `expected`.
    pub(crate) async fn wait_gauge(&self, name: &'static str, expected: f64) {
        // Gauges here hold small integers, exact in f64.
        wait_for(&format!("{name} == {expected}"), || {
            self.gauge(name) == expected
        })
        .await;
    }

    /// Cancels the server and returns how its shutdown went.
    pub(crate) async fn stop(self) -> Drain {
        self.shutdown.cancel();
        self.task.await.expect("server task ran to its end")
    }
}
