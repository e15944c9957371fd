//! Shared set-up of the W1 and W2 benchmarks: recorders with and without a
//! stream client attached, and clients that read what the servers send.

#![allow(
    dead_code,
    unreachable_pub,
    reason = "each benchmark binary uses a part of this module"
)]

use std::io::Read;
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::thread::{self, JoinHandle};
use std::time::{Duration, Instant};

use bytes::BytesMut;
use tether_exporter::{ExporterBuilder, ExporterHandle, TetherRecorder};
use tether_proto::{EventKind, FrameDecoder, Operation, decode_event};
use tokio::runtime::Runtime;

/// How long a set-up step may take before the benchmark gives up.
pub const SETUP_DEADLINE: Duration = Duration::from_secs(30);

/// Waits until `condition` holds; panics after [`SETUP_DEADLINE`].
pub fn wait_until(what: &str, mut condition: impl FnMut() -> bool) {
    let started = Instant::now();
    while !condition() {
        assert!(
            started.elapsed() < SETUP_DEADLINE,
            "timed out waiting until {what}"
        );
        thread::sleep(Duration::from_millis(1));
    }
}

/// A free loopback port, for servers that cannot report the one they bound.
pub fn free_port() -> SocketAddr {
    let listener = TcpListener::bind("127.0.0.1:0").expect("a free port");
    listener.local_addr().expect("a bound address")
}

/// What a stream client has seen.
#[derive(Debug, Default)]
pub struct Received {
    pub bytes: AtomicU64,
    /// The total of the counter named `counter_name`, folded as
    /// `metrics-observer` folds it (`set_counter` sets, `increment_counter` adds).
    pub counter_total: AtomicU64,
    pub events: AtomicU64,
}

/// A stream client on its own thread. With `counter_name` it decodes
/// every event; without, it only reads (the cheapest client possible).
#[derive(Debug)]
pub struct Client {
    pub received: Arc<Received>,
    thread: Option<JoinHandle<()>>,
}

impl Client {
    pub fn connect(addr: SocketAddr, counter_name: Option<&'static str>) -> Client {
        let mut stream = TcpStream::connect(addr).expect("the stream server accepts");
        let received = Arc::new(Received::default());
        let seen = Arc::clone(&received);
        let thread = thread::spawn(move || {
            let mut buf = BytesMut::with_capacity(1 << 16);
            let mut read_buf = vec![0_u8; 1 << 16];
            let mut frames = FrameDecoder::default();
            loop {
                let n = match stream.read(&mut read_buf) {
                    Ok(0) | Err(_) => return,
                    Ok(n) => n,
                };
                seen.bytes.fetch_add(n as u64, Ordering::Relaxed);
                let Some(name) = counter_name else {
                    continue;
                };
                buf.extend_from_slice(&read_buf[..n]);
                while let Ok(Some(body)) = frames.decode(&mut buf) {
                    seen.events.fetch_add(1, Ordering::Relaxed);
                    let Ok(event) = decode_event(body) else {
                        continue;
                    };
                    let Some(EventKind::Metric(metric)) = event.kind else {
                        continue;
                    };
                    if metric.name != name {
                        continue;
                    }
                    match metric.operation {
                        Some(Operation::SetCounter(total)) => {
                            seen.counter_total.store(total, Ordering::Relaxed);
                        }
                        Some(Operation::IncrementCounter(delta)) => {
                            seen.counter_total.fetch_add(delta, Ordering::Relaxed);
                        }
                        _ => {}
                    }
                }
            }
        });
        Client {
            received,
            thread: Some(thread),
        }
    }

    /// Waits for the reader thread, which ends when the server closes.
    pub fn join(mut self) {
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

/// A tether recorder whose stream server runs on a runtime of its own (one
/// worker thread), as an application's would.
#[derive(Debug)]
pub struct TetherStream {
    pub recorder: TetherRecorder,
    pub handle: ExporterHandle,
    runtime: Runtime,
}

impl TetherStream {
    pub fn start() -> TetherStream {
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .enable_all()
            .build()
            .expect("a runtime");
        let (recorder, future) = ExporterBuilder::new()
            .with_stream_listener(([127, 0, 0, 1], 0))
            .build()
            .expect("the exporter builds");
        runtime.spawn(future);
        let handle = recorder.handle();
        TetherStream {
            recorder,
            handle,
            runtime,
        }
    }

    pub fn addr(&self) -> SocketAddr {
        self.handle.stream_local_addr().expect("a stream listener")
    }

    /// Stops the server; its clients see the end of the stream.
    pub fn shutdown(self) {
        self.handle.shutdown();
        self.runtime.shutdown_timeout(Duration::from_secs(5));
    }
}
