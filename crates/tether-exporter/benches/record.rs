//! W1: recording through a cached `metrics` handle (counter increment, gauge
//! set, histogram sample) from 1 and 2 threads, for tether with no stream
//! client and with one attached, beside `metrics-exporter-prometheus` and
//! `metrics-exporter-tcp` with one client attached.
//!
//! Every recorder is used through the `metrics::Recorder` trait and never
//! installed: each benchmark registers its handle once and times only the
//! operation. With 2 threads both use the same handle, so the figure is the
//! wall-clock time for each thread to do one operation while the other
//! does the same (criterion's throughput counts both operations).
//! Stream clients run on threads of their own and read everything.

mod support;

use std::hint::black_box;
use std::sync::Barrier;
use std::time::{Duration, Instant};

use criterion::{BenchmarkId, Criterion, Throughput, criterion_group, criterion_main};
use metrics::{Counter, Gauge, Histogram, Key, Level, Metadata, Recorder};
use metrics_exporter_prometheus::{PrometheusBuilder, PrometheusHandle};
use metrics_exporter_tcp::TcpBuilder;
use tether_exporter::ExporterBuilder;

use support::{Client, TetherStream, free_port, wait_until};

static METADATA: Metadata<'static> = Metadata::new(module_path!(), Level::INFO, None);

/// One operation on one handle; `i` varies the value so that every flush
/// has something to send.
#[derive(Clone)]
enum Handle {
    Counter(Counter),
    Gauge(Gauge),
    Histogram(Histogram),
}

impl Handle {
    #[inline]
    fn record(&self, i: u64) {
        match self {
            Handle::Counter(counter) => counter.increment(black_box(1)),
            Handle::Gauge(gauge) => gauge.set(black_box((i & 1023) as f64)),
            Handle::Histogram(histogram) => {
                histogram.record(black_box((i & 1023) as f64 * 0.001));
            }
        }
    }
}

#[derive(Clone, Copy)]
enum Op {
    Counter,
    Gauge,
    Histogram,
}

impl Op {
    fn name(self) -> &'static str {
        match self {
            Op::Counter => "counter_increment",
            Op::Gauge => "gauge_set",
            Op::Histogram => "histogram_record",
        }
    }

    fn register(self, recorder: &dyn Recorder, name: &'static str) -> Handle {
        let key = Key::from_static_name(name);
        match self {
            Op::Counter => Handle::Counter(recorder.register_counter(&key, &METADATA)),
            Op::Gauge => Handle::Gauge(recorder.register_gauge(&key, &METADATA)),
            Op::Histogram => Handle::Histogram(recorder.register_histogram(&key, &METADATA)),
        }
    }
}

/// Times `iters` operations per thread on `threads` threads sharing `handle`.
fn time(handle: &Handle, threads: usize, iters: u64) -> Duration {
    if threads == 1 {
        let started = Instant::now();
        for i in 0..iters {
            handle.record(i);
        }
        return started.elapsed();
    }
    let barrier = Barrier::new(threads + 1);
    std::thread::scope(|scope| {
        for _ in 0..threads {
            scope.spawn(|| {
                barrier.wait();
                for i in 0..iters {
                    handle.record(i);
                }
            });
        }
        barrier.wait();
        Instant::now()
    })
    .elapsed()
}

/// The contenders, each set up once for every operation.
struct Contenders {
    tether: tether_exporter::TetherRecorder,
    tether_streamed: TetherStream,
    prometheus: metrics_exporter_prometheus::PrometheusRecorder,
    prometheus_handle: PrometheusHandle,
    tcp: metrics_exporter_tcp::TcpRecorder,
    clients: Vec<Client>,
}

fn contenders() -> Contenders {
    let tether = ExporterBuilder::new().build_recorder();

    let tether_streamed = TetherStream::start();
    let tether_client = Client::connect(tether_streamed.addr(), None);
    let probe = Op::Counter.register(&tether_streamed.recorder, "attach_probe");
    probe.record(0);
    // The snapshot arrives once the flusher has attached the client, after
    // which histogram samples are streamed too.
    wait_until("the tether client is attached", || {
        tether_client
            .received
            .bytes
            .load(std::sync::atomic::Ordering::Relaxed)
            > 0
    });

    let prometheus = PrometheusBuilder::new().build_recorder();
    let prometheus_handle = prometheus.handle();

    let tcp_addr = free_port();
    let tcp = TcpBuilder::new()
        .listen_address(tcp_addr)
        .build()
        .expect("metrics-exporter-tcp starts");
    let tcp_client = Client::connect(tcp_addr, None);
    let probe = Op::Counter.register(&tcp, "attach_probe");
    // Its events flow only once the client is accepted; keep poking.
    wait_until("the metrics-exporter-tcp client is attached", || {
        probe.record(0);
        tcp_client
            .received
            .bytes
            .load(std::sync::atomic::Ordering::Relaxed)
            > 0
    });

    Contenders {
        tether,
        tether_streamed,
        prometheus,
        prometheus_handle,
        tcp,
        clients: vec![tether_client, tcp_client],
    }
}

fn w1(c: &mut Criterion) {
    let contenders = contenders();
    for op in [Op::Counter, Op::Gauge, Op::Histogram] {
        let mut group = c.benchmark_group(format!("W1/{}", op.name()));
        group
            .sample_size(20)
            .warm_up_time(Duration::from_millis(500))
            .measurement_time(Duration::from_secs(2));
        let handles = [
            ("tether", op.register(&contenders.tether, "w1")),
            (
                "tether+client",
                op.register(&contenders.tether_streamed.recorder, "w1"),
            ),
            ("prometheus", op.register(&contenders.prometheus, "w1")),
            ("tcp+client", op.register(&contenders.tcp, "w1")),
        ];
        for threads in [1_usize, 2] {
            group.throughput(Throughput::Elements(threads as u64));
            for (name, handle) in &handles {
                let id = BenchmarkId::new(*name, format!("{threads}_threads"));
                group.bench_with_input(id, handle, |b, handle| {
                    b.iter_custom(|iters| {
                        let elapsed = time(handle, threads, iters);
                        // Outside the timing: the peer keeps every sample
                        // until upkeep, which a real exporter runs on scrape.
                        if *name == "prometheus" {
                            contenders.prometheus_handle.run_upkeep();
                        }
                        elapsed
                    });
                });
            }
        }
        group.finish();
    }
    contenders.tether_streamed.shutdown();
    // metrics-exporter-tcp never stops its thread, so its client never
    // ends: the clients are left to the end of the process.
    std::mem::forget(contenders.clients);
}

criterion_group!(benches, w1);
criterion_main!(benches);
