//! Echo throughput and connections per second on loopback: the instrumented
//! server (`Server` with its metrics on tether-exporter's recorder and a span
//! per connection under a fmt subscriber) against the same echo handler
//! behind a bare accept loop, in one run.
//!
//! The servers run on a runtime of their own (threads named
//! `echo-server`), the clients on another, so that the servers' CPU time
//! can be read apart from the clients'. Two measurements of the same
//! workloads:
//! - criterion groups `echo_throughput` and `echo_connections`, one variant
//!   after the other: absolute wall-clock figures, exposed to the shared
//!   machine's drift between the two variants' turns;
//! - `echo_paired`: the variants alternate batch by batch (taking turns at
//!   going first), and the totals of each are printed: wall-clock time and
//!   the CPU time of the server threads (from `/proc/self/task/*/schedstat`).
//!   The CPU-time ratio is the overhead figure: other tenants of the machine
//!   slow both variants' wall clock, not the CPU work each one does.

use std::fs;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use tether_exporter::{ExporterBuilder, Format};
use tether_tcp::{Echo, EchoConfig, ListenerMetrics, Server, ServerConfig};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::runtime::Runtime;
use tokio_util::sync::CancellationToken;

/// Connections that echo at once in the throughput benchmark.
const N_STREAMS: usize = 8;
/// Bytes each of them sends (and reads back) per round.
const BLOCK_BYTES: usize = 256 * 1024;
/// Clients connecting at once in the connection-rate benchmark.
const N_CONNECTING_CLIENTS: usize = 4;
/// Bytes echoed on each connection of the connection-rate benchmark.
const HELLO: &[u8] = b"hello, echo\n";
/// Pairs of batches in the paired comparison.
const N_PAIRS: usize = 60;
/// Rounds of the throughput workload per batch (20 MiB echoed).
const THROUGHPUT_ROUNDS_PER_BATCH: u64 = 10;
/// Connections per batch of the connection-rate workload.
const CONNECTIONS_PER_BATCH: u64 = 200;
/// The name of the server runtime's threads, whose CPU time is read.
const SERVER_THREAD_NAME: &str = "echo-server";

/// Both servers, running on the server runtime until dropped.
struct Servers {
    plain: SocketAddr,
    instrumented: SocketAddr,
    shutdown: CancellationToken,
}

impl Drop for Servers {
    fn drop(&mut self) {
        self.shutdown.cancel();
    }
}

fn start_servers(runtime: &Runtime, metrics: ListenerMetrics) -> Servers {
    runtime.block_on(async {
        let shutdown = CancellationToken::new();
        let echo = Echo::new(EchoConfig::default()).expect("default echo config is valid");

        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let plain = listener.local_addr().expect("bound address");
        tokio::spawn(plain_accept_loop(
            listener,
            Arc::new(echo.clone()),
            shutdown.clone(),
        ));

        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let instrumented = listener.local_addr().expect("bound address");
        let server = Server::new(metrics, ServerConfig::default(), echo).expect("valid config");
        tokio::spawn(server.run(listener, shutdown.clone()));

        Servers {
            plain,
            instrumented,
            shutdown,
        }
    })
}

/// The same echo without instrumentation: accept, spawn, echo on the raw
/// socket halves; no cap, no task tracking, no span, no metrics.
async fn plain_accept_loop(listener: TcpListener, echo: Arc<Echo>, shutdown: CancellationToken) {
    loop {
        let accepted = tokio::select! {
            () = shutdown.cancelled() => break,
            accepted = listener.accept() => accepted,
        };
        let Ok((socket, _peer)) = accepted else {
            continue;
        };
        let _ = socket.set_nodelay(true);
        let echo = Arc::clone(&echo);
        let shutdown = shutdown.clone();
        tokio::spawn(async move {
            let (reader, writer) = socket.into_split();
            let _ = echo.run(reader, writer, &shutdown).await;
        });
    }
}

/// `N_STREAMS` open connections to one server.
struct Streams {
    streams: Vec<TcpStream>,
    block: Arc<Vec<u8>>,
}

impl Streams {
    async fn connect(addr: SocketAddr) -> Self {
        let mut streams = Vec::with_capacity(N_STREAMS);
        for _ in 0..N_STREAMS {
            let stream = TcpStream::connect(addr).await.expect("connect");
            stream.set_nodelay(true).expect("TCP_NODELAY");
            streams.push(stream);
        }
        let block = (0..BLOCK_BYTES).map(|i| (i % 251) as u8).collect();
        Self {
            streams,
            block: Arc::new(block),
        }
    }

    /// Every stream sends `BLOCK_BYTES` and reads the echo at the same
    /// time, `rounds` times; returns how long that took.
    async fn echo(&mut self, rounds: u64) -> Duration {
        let start = Instant::now();
        let tasks: Vec<_> = self
            .streams
            .drain(..)
            .map(|stream| tokio::spawn(echo_rounds(stream, Arc::clone(&self.block), rounds)))
            .collect();
        for task in tasks {
            self.streams.push(task.await.expect("client task"));
        }
        start.elapsed()
    }
}

async fn echo_rounds(mut stream: TcpStream, block: Arc<Vec<u8>>, rounds: u64) -> TcpStream {
    let mut echoed = vec![0_u8; block.len()];
    for _ in 0..rounds {
        let (mut reader, mut writer) = stream.split();
        let (sent, received) =
            tokio::join!(writer.write_all(&block), reader.read_exact(&mut echoed));
        sent.expect("send");
        received.expect("receive");
    }
    stream
}

/// `n_connections` short connections, `N_CONNECTING_CLIENTS` at a time:
/// connect, echo a greeting, close, see the server close. Returns how long
/// they took.
async fn connections(addr: SocketAddr, n_connections: u64) -> Duration {
    let start = Instant::now();
    let n_clients = N_CONNECTING_CLIENTS as u64;
    let clients: Vec<_> = (0..n_clients)
        .map(|client| {
            // Spread the connections evenly over the clients.
            let share = n_connections / n_clients + u64::from(client < n_connections % n_clients);
            tokio::spawn(async move {
                for _ in 0..share {
                    one_connection(addr).await;
                }
            })
        })
        .collect();
    for client in clients {
        client.await.expect("client task");
    }
    start.elapsed()
}

async fn one_connection(addr: SocketAddr) {
    let mut stream = TcpStream::connect(addr).await.expect("connect");
    stream.write_all(HELLO).await.expect("send");
    stream.shutdown().await.expect("half-close");
    let mut echoed = Vec::with_capacity(HELLO.len());
    stream.read_to_end(&mut echoed).await.expect("receive");
    assert_eq!(echoed, HELLO);
}

fn throughput(c: &mut Criterion, runtime: &Runtime, servers: &Servers) {
    let mut group = c.benchmark_group("echo_throughput");
    group.throughput(Throughput::Bytes((N_STREAMS * BLOCK_BYTES) as u64));
    for (variant, addr) in [
        ("plain", servers.plain),
        ("instrumented", servers.instrumented),
    ] {
        let mut streams = runtime.block_on(Streams::connect(addr));
        group.bench_function(variant, |b| {
            b.iter_custom(|rounds| runtime.block_on(streams.echo(rounds)));
        });
    }
    group.finish();
}

fn connection_rate(c: &mut Criterion, runtime: &Runtime, servers: &Servers) {
    let mut group = c.benchmark_group("echo_connections");
    group.throughput(Throughput::Elements(1));
    for (variant, addr) in [
        ("plain", servers.plain),
        ("instrumented", servers.instrumented),
    ] {
        group.bench_function(variant, |b| {
            b.iter_custom(|n_connections| runtime.block_on(connections(addr, n_connections)));
        });
    }
    group.finish();
}

/// The CPU time used so far by the server runtime's threads, from the
/// scheduler's own accounting (nanoseconds on CPU); zero where `/proc` has
/// none.
fn server_cpu_time() -> Duration {
    let Ok(tasks) = fs::read_dir("/proc/self/task") else {
        return Duration::ZERO;
    };
    let mut total_ns: u64 = 0;
    for task in tasks.flatten() {
        let path = task.path();
        let is_server = fs::read_to_string(path.join("comm"))
            .is_ok_and(|comm| comm.trim_end() == SERVER_THREAD_NAME);
        if !is_server {
            continue;
        }
        let on_cpu_ns = fs::read_to_string(path.join("schedstat"))
            .ok()
            .and_then(|text| text.split_whitespace().next()?.parse::<u64>().ok());
        total_ns += on_cpu_ns.unwrap_or(0);
    }
    Duration::from_nanos(total_ns)
}

/// Wall-clock and server CPU time of each variant over `N_PAIRS`
/// alternating batches.
#[derive(Default)]
struct Paired {
    plain: Cost,
    instrumented: Cost,
}

#[derive(Default)]
struct Cost {
    wall: Duration,
    server_cpu: Duration,
}

impl Paired {
    /// Runs `batch` for one variant, adding what it cost.
    async fn measure(&mut self, instrumented: bool, batch: impl Future<Output = ()>) {
        let cpu_before = server_cpu_time();
        let start = Instant::now();
        batch.await;
        let wall = start.elapsed();
        let server_cpu = server_cpu_time().saturating_sub(cpu_before);
        let cost = if instrumented {
            &mut self.instrumented
        } else {
            &mut self.plain
        };
        cost.wall += wall;
        cost.server_cpu += server_cpu;
    }

    /// Which variant goes first in pair `pair`: they take turns.
    fn order(pair: usize) -> [bool; 2] {
        let instrumented_first = pair.is_multiple_of(2);
        [instrumented_first, !instrumented_first]
    }

    fn wall_ratio(&self) -> f64 {
        self.instrumented.wall.as_secs_f64() / self.plain.wall.as_secs_f64()
    }

    fn cpu_ratio(&self) -> f64 {
        self.instrumented.server_cpu.as_secs_f64() / self.plain.server_cpu.as_secs_f64()
    }
}

async fn paired_throughput(servers: &Servers) -> Paired {
    let mut plain = Streams::connect(servers.plain).await;
    let mut instrumented = Streams::connect(servers.instrumented).await;
    plain.echo(THROUGHPUT_ROUNDS_PER_BATCH).await;
    instrumented.echo(THROUGHPUT_ROUNDS_PER_BATCH).await;
    let mut totals = Paired::default();
    for pair in 0..N_PAIRS {
        for is_instrumented in Paired::order(pair) {
            let streams = if is_instrumented {
                &mut instrumented
            } else {
                &mut plain
            };
            let batch = async {
                streams.echo(THROUGHPUT_ROUNDS_PER_BATCH).await;
            };
            totals.measure(is_instrumented, batch).await;
        }
    }
    totals
}

async fn paired_connections(servers: &Servers) -> Paired {
    connections(servers.plain, CONNECTIONS_PER_BATCH).await;
    connections(servers.instrumented, CONNECTIONS_PER_BATCH).await;
    let mut totals = Paired::default();
    for pair in 0..N_PAIRS {
        for is_instrumented in Paired::order(pair) {
            let addr = if is_instrumented {
                servers.instrumented
            } else {
                servers.plain
            };
            let batch = async {
                connections(addr, CONNECTIONS_PER_BATCH).await;
            };
            totals.measure(is_instrumented, batch).await;
        }
    }
    totals
}

#[expect(
    clippy::print_stderr,
    reason = "the paired figures are this benchmark's own report, beside criterion's"
)]
fn paired(clients: &Runtime, servers: &Servers) {
    let throughput = clients.block_on(paired_throughput(servers));
    let mib = (N_PAIRS as u64 * THROUGHPUT_ROUNDS_PER_BATCH * (N_STREAMS * BLOCK_BYTES) as u64)
        as f64
        / (1024.0 * 1024.0);
    let per_mib_us = |cost: &Cost| cost.server_cpu.as_secs_f64() * 1e6 / mib;
    eprintln!(
        "echo_paired/throughput: wall {:.0} vs {:.0} MiB/s (instrumented/plain time {:.3}); \
         server CPU {:.1} vs {:.1} us/MiB (instrumented/plain {:.3})",
        mib / throughput.plain.wall.as_secs_f64(),
        mib / throughput.instrumented.wall.as_secs_f64(),
        throughput.wall_ratio(),
        per_mib_us(&throughput.plain),
        per_mib_us(&throughput.instrumented),
        throughput.cpu_ratio(),
    );
    let rate = clients.block_on(paired_connections(servers));
    let n_connections = (N_PAIRS as u64 * CONNECTIONS_PER_BATCH) as f64;
    let per_connection_us = |cost: &Cost| cost.server_cpu.as_secs_f64() * 1e6 / n_connections;
    eprintln!(
        "echo_paired/connections: wall {:.0} vs {:.0} per s (instrumented/plain time {:.3}); \
         server CPU {:.1} vs {:.1} us per connection (instrumented/plain {:.3})",
        n_connections / rate.plain.wall.as_secs_f64(),
        n_connections / rate.instrumented.wall.as_secs_f64(),
        rate.wall_ratio(),
        per_connection_us(&rate.plain),
        per_connection_us(&rate.instrumented),
        rate.cpu_ratio(),
    );
}

fn benches(c: &mut Criterion) {
    // Spans cost what they cost in production only when a subscriber
    // records them: a fmt subscriber at info, writing nowhere.
    let subscriber = tracing_subscriber::fmt()
        .with_writer(std::io::sink)
        .with_max_level(tracing::Level::INFO)
        .finish();
    tracing::subscriber::set_global_default(subscriber).expect("first subscriber of the process");
    let server_runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .thread_name(SERVER_THREAD_NAME)
        .enable_all()
        .build()
        .expect("server runtime");
    let client_runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .thread_name("echo-client")
        .enable_all()
        .build()
        .expect("client runtime");
    let recorder = ExporterBuilder::new().build_recorder();
    let exporter = recorder.handle();
    let servers = start_servers(&server_runtime, ListenerMetrics::new("bench", &recorder));

    throughput(c, &client_runtime, &servers);
    connection_rate(c, &client_runtime, &servers);
    paired(&client_runtime, &servers);

    // The instrumented server did record.
    let text = String::from_utf8(exporter.render(Format::Text)).expect("utf-8 exposition");
    assert!(
        text.contains("tether_tcp_bytes_read_total{listener=\"bench\"}"),
        "{text}"
    );
    drop(servers);
    client_runtime.shutdown_timeout(Duration::from_secs(5));
    server_runtime.shutdown_timeout(Duration::from_secs(5));
}

criterion_group! {
    name = echo;
    config = Criterion::default()
        .sample_size(20)
        .warm_up_time(Duration::from_secs(1))
        .measurement_time(Duration::from_secs(5));
    targets = benches
}
criterion_main!(echo);
