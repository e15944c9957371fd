//! W2: 1,000,000 counter increments at full speed from one thread with a
//! stream client attached, for tether and for `metrics-exporter-tcp`.
//!
//! Criterion times the increments (throughput in updates); then, when run
//! by `cargo bench`, one more run of exactly 1,000,000 increments per
//! exporter goes to a fresh client that decodes every event as
//! `metrics-observer` does, and the report says how much of the total each
//! client ended with once its stream went quiet.

mod support;

use std::hint::black_box;
use std::sync::atomic::Ordering;
use std::thread;
use std::time::{Duration, Instant};

use criterion::{Criterion, Throughput};
use metrics::{Counter, Key, Level, Metadata, Recorder};
use metrics_exporter_tcp::TcpBuilder;

use support::{Client, TetherStream, free_port, wait_until};

const UPDATES: u64 = 1_000_000;
const COUNTER: &str = "w2_updates";
/// A client's stream counts as quiet once nothing arrived for this long.
const QUIET: Duration = Duration::from_millis(500);

static METADATA: Metadata<'static> = Metadata::new(module_path!(), Level::INFO, None);

fn register(recorder: &dyn Recorder) -> Counter {
    recorder.register_counter(&Key::from_static_name(COUNTER), &METADATA)
}

fn increments(counter: &Counter, n: u64) -> Duration {
    let started = Instant::now();
    for _ in 0..n {
        counter.increment(black_box(1));
    }
    started.elapsed()
}

/// Waits until `client` stops receiving, or holds `expected`.
fn settle(client: &Client, expected: u64) {
    let mut last_bytes = u64::MAX;
    let mut quiet_since = Instant::now();
    let started = Instant::now();
    loop {
        if client.received.counter_total.load(Ordering::Relaxed) == expected {
            return;
        }
        let bytes = client.received.bytes.load(Ordering::Relaxed);
        if bytes != last_bytes {
            last_bytes = bytes;
            quiet_since = Instant::now();
        } else if quiet_since.elapsed() >= QUIET || started.elapsed() > support::SETUP_DEADLINE {
            return;
        }
        thread::sleep(Duration::from_millis(5));
    }
}

fn w2_rate(c: &mut Criterion) {
    let mut group = c.benchmark_group("W2/1M_counter_increments_with_client");
    group
        .sample_size(10)
        .warm_up_time(Duration::from_millis(500))
        .measurement_time(Duration::from_secs(5))
        .throughput(Throughput::Elements(UPDATES));

    let tether = TetherStream::start();
    let tether_client = Client::connect(tether.addr(), Some(COUNTER));
    let counter = register(&tether.recorder);
    counter.increment(1);
    wait_until("the tether client is attached", || {
        tether_client.received.counter_total.load(Ordering::Relaxed) == 1
    });
    group.bench_function("tether", |b| {
        b.iter_custom(|iters| (0..iters).map(|_| increments(&counter, UPDATES)).sum());
    });

    let tcp_addr = free_port();
    let tcp = TcpBuilder::new()
        .listen_address(tcp_addr)
        .build()
        .expect("metrics-exporter-tcp starts");
    let tcp_client = Client::connect(tcp_addr, Some(COUNTER));
    let tcp_counter = register(&tcp);
    wait_until("the metrics-exporter-tcp client is attached", || {
        tcp_counter.increment(1);
        tcp_client.received.counter_total.load(Ordering::Relaxed) > 0
    });
    group.bench_function("tcp", |b| {
        b.iter_custom(|iters| {
            (0..iters)
                .map(|_| {
                    let elapsed = increments(&tcp_counter, UPDATES);
                    // Let its queue drain outside the timing, so that each
                    // run starts alike.
                    settle(&tcp_client, u64::MAX);
                    elapsed
                })
                .sum()
        });
    });
    group.finish();
    tether.shutdown();
    tether_client.join();
}

/// One line of the exactness report.
fn report(name: &str, elapsed: Duration, app_total: u64, client_total: u64) {
    let rate = UPDATES as f64 / elapsed.as_secs_f64();
    #[allow(clippy::print_stdout, reason = "the benchmark's report")]
    {
        println!(
            "W2 exactness: {name}: {UPDATES} increments in {:.2} ms ({:.1} M updates/s); app total {app_total}, client total {client_total} ({:.2}% received){}",
            elapsed.as_secs_f64() * 1e3,
            rate / 1e6,
            client_total as f64 / app_total as f64 * 100.0,
            if client_total == app_total {
                ", exact"
            } else {
                ""
            },
        );
    }
}

/// Fresh exporters and clients, exactly 1,000,000 increments each.
fn exactness() {
    let tether = TetherStream::start();
    let client = Client::connect(tether.addr(), Some(COUNTER));
    let counter = register(&tether.recorder);
    wait_until("the tether client is attached", || {
        tether.handle.stream_stats().is_some_and(|s| s.clients == 1)
            && client.received.bytes.load(Ordering::Relaxed) > 0
    });
    let elapsed = increments(&counter, UPDATES);
    settle(&client, UPDATES);
    report(
        "tether",
        elapsed,
        UPDATES,
        client.received.counter_total.load(Ordering::Relaxed),
    );
    tether.shutdown();
    client.join();

    let tcp_addr = free_port();
    let tcp = TcpBuilder::new()
        .listen_address(tcp_addr)
        .build()
        .expect("metrics-exporter-tcp starts");
    let client = Client::connect(tcp_addr, Some(COUNTER));
    let counter = register(&tcp);
    // Attach with one increment, then count from there.
    wait_until("the metrics-exporter-tcp client is attached", || {
        counter.increment(1);
        client.received.counter_total.load(Ordering::Relaxed) > 0
    });
    settle(&client, u64::MAX);
    let before = client.received.counter_total.load(Ordering::Relaxed);
    let elapsed = increments(&counter, UPDATES);
    settle(&client, before + UPDATES);
    let received = client.received.counter_total.load(Ordering::Relaxed) - before;
    report("metrics-exporter-tcp", elapsed, UPDATES, received);
}

fn main() {
    // The rate under criterion; `cargo test --benches` runs it in test mode.
    let mut criterion = Criterion::default().configure_from_args();
    w2_rate(&mut criterion);
    criterion.final_summary();
    if std::env::args().any(|arg| arg == "--bench") {
        exactness();
    }
}
