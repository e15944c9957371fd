//! `tether loadgen`: load generators for tests and benchmarks of the
//! gateway, each bounded in count and time and loopback only unless asked
//! otherwise. This file holds `tether loadgen agents`, many simulated
//! agents in one process; `loadgen/push.rs` holds `tether loadgen push`,
//! groups pushed through the Pushgateway API; `loadgen/drain.rs` holds
//! `tether loadgen drain`, logplex batches POSTed to a drain.
//!
//! Each simulated agent speaks the agent protocol directly and keeps its
//! answer pre-encoded: only the scrape id is written per request, so the
//! load generator spends its CPU on sockets, not on encoding, and the
//! gateway's cost is what gets measured. Values change every
//! `--update-interval-ms`, when each agent re-encodes its families.
//!
//! An agent whose gateway goes away (connection refused, closed or reset,
//! or a `Reject`) dials again after a delay that doubles from
//! `--reconnect-initial-ms` up to `--reconnect-max-ms`, each one drawn
//! between half and all of it (jitter), for as long as the run lasts. The
//! summary counts disconnects and reconnects and tells how long agents took
//! to come back: each agent's time from losing its connection to its next
//! `Welcome`, and the recovery of the whole fleet, from the first agent
//! lost to every agent connected again. The run ends at `--duration-secs`
//! or on SIGINT or SIGTERM, with the summary either way.

use std::hash::BuildHasher;
use std::io::{IsTerminal, Write};
use std::net::{SocketAddr, ToSocketAddrs};
use std::process::ExitCode;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant};

use bytes::{BufMut, Bytes, BytesMut};
use clap::{Args, Subcommand};
use tether_model::{Counter, Label, MetricFamily, MetricType, Series, Value, to_proto};
use tether_proto::{ClientMessage, FrameDecoder, Goodbye, Hello, Pong, ScrapeResponse, ServerKind};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio_util::sync::CancellationToken;

mod drain;
mod http;
mod push;

/// Most agents one run may simulate.
const MAX_AGENTS: usize = 100_000;
/// Most series one agent may serve.
const MAX_SERIES_PER_AGENT: usize = 1_000_000;
/// Longest run.
const MAX_DURATION_SECS: u64 = 24 * 3600;
/// Series per simulated family.
const SERIES_PER_FAMILY: usize = 100;
/// Default first delay before an agent dials again, in milliseconds.
const DEFAULT_RECONNECT_INITIAL_MS: u64 = 100;
/// Default longest delay between an agent's dials, in milliseconds.
const DEFAULT_RECONNECT_MAX_MS: u64 = 5000;
/// Longest delay between dials that may be asked for: a minute.
const MAX_RECONNECT_MS: u64 = 60_000;
/// Reconnect latencies kept for the summary's quantiles; past it, the
/// newest are dropped (and counted in the summary).
const MAX_LATENCY_SAMPLES: usize = 1_000_000;

#[derive(Debug, Args)]
pub(crate) struct LoadgenArgs {
    #[command(subcommand)]
    workload: Workload,
}

#[derive(Debug, Subcommand)]
enum Workload {
    /// Simulated agents that dial the gateway and answer its scrapes.
    Agents(AgentsArgs),
    /// Groups pushed through the Pushgateway HTTP API (to tether or a
    /// Pushgateway), then the whole store scraped, plain and gzip.
    Push(push::PushArgs),
    /// Logplex batches of mixed Heroku lines POSTed to a drain for a
    /// bounded time, with lines per second and POST latency.
    Drain(drain::DrainArgs),
}

#[derive(Debug, Args)]
struct AgentsArgs {
    /// The gateway's agent listener.
    #[arg(long, value_name = "HOST:PORT", default_value = "127.0.0.1:7001")]
    gateway: String,
    /// How many agents.
    #[arg(long, default_value_t = 100)]
    agents: usize,
    /// Series each agent serves (in counter families of 100 series).
    #[arg(long, default_value_t = 100)]
    series: usize,
    /// How long the run lasts.
    #[arg(long, default_value_t = 60)]
    duration_secs: u64,
    /// Token the gateway requires.
    #[arg(long, env = "TETHER_AGENT_TOKEN")]
    token: Option<String>,
    /// How often each agent's values change.
    #[arg(long, default_value_t = 5000, value_name = "MS")]
    update_interval_ms: u64,
    /// Also scrape this URL (http://HOST:PORT/path) every interval and report its latency.
    #[arg(long, value_name = "URL")]
    scrape_url: Option<String>,
    /// Interval between the load generator's own scrapes.
    #[arg(long, default_value_t = 2000, value_name = "MS")]
    scrape_interval_ms: u64,
    /// Allow a gateway that is not on this machine's loopback.
    #[arg(long)]
    allow_remote: bool,
    /// Print the summary as JSON.
    #[arg(long)]
    json: bool,
    /// First delay before an agent whose connection was lost dials again;
    /// it doubles on each failed dial.
    #[arg(long, default_value_t = DEFAULT_RECONNECT_INITIAL_MS, value_name = "MS")]
    reconnect_initial_ms: u64,
    /// Longest delay between an agent's dials.
    #[arg(long, default_value_t = DEFAULT_RECONNECT_MAX_MS, value_name = "MS")]
    reconnect_max_ms: u64,
}

pub(crate) fn run(args: &LoadgenArgs) -> ExitCode {
    match &args.workload {
        Workload::Agents(args) => run_agents(args),
        Workload::Push(args) => push::run(args),
        Workload::Drain(args) => drain::run(args),
    }
}

/// Runs `work` on a multi-threaded runtime, with a token that SIGINT or
/// SIGTERM cancels, so that a workload stopped early still gives its
/// summary. `None`, reported under `command`, if the runtime cannot start.
pub(crate) fn until_signal<F: Future>(
    command: &str,
    work: impl FnOnce(CancellationToken) -> F,
) -> Option<F::Output> {
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(runtime) => runtime,
        Err(error) => {
            crate::setup::report_error(&format!("{command}: cannot start the runtime: {error}"));
            return None;
        }
    };
    let stop = CancellationToken::new();
    Some(runtime.block_on(async {
        let on_signal = stop.clone();
        tokio::spawn(async move {
            crate::setup::wait_for_signal().await;
            on_signal.cancel();
        });
        work(stop).await
    }))
}

fn run_agents(args: &AgentsArgs) -> ExitCode {
    if let Err(message) = validate(args) {
        crate::setup::report_error(&format!("tether loadgen: {message}"));
        return ExitCode::from(2);
    }
    let Some(summary) = until_signal("tether loadgen", |stop| agents(args, stop)) else {
        return ExitCode::FAILURE;
    };
    let mut stdout = std::io::stdout().lock();
    let _ = if args.json {
        writeln!(stdout, "{}", summary.json())
    } else {
        writeln!(stdout, "{}", summary.text())
    };
    if summary.connected_at_end == 0 {
        ExitCode::FAILURE
    } else {
        ExitCode::SUCCESS
    }
}

fn validate(args: &AgentsArgs) -> Result<(), String> {
    if args.agents == 0 || args.agents > MAX_AGENTS {
        return Err(format!("--agents must be between 1 and {MAX_AGENTS}"));
    }
    if args.series > MAX_SERIES_PER_AGENT {
        return Err(format!("--series must be at most {MAX_SERIES_PER_AGENT}"));
    }
    if args.duration_secs == 0 || args.duration_secs > MAX_DURATION_SECS {
        return Err(format!(
            "--duration-secs must be between 1 and {MAX_DURATION_SECS}"
        ));
    }
    if args.reconnect_initial_ms == 0
        || args.reconnect_initial_ms > args.reconnect_max_ms
        || args.reconnect_max_ms > MAX_RECONNECT_MS
    {
        return Err(format!(
            "--reconnect-initial-ms must be at least 1 and at most --reconnect-max-ms, itself at most {MAX_RECONNECT_MS}"
        ));
    }
    let mut targets = vec![args.gateway.clone()];
    if let Some(url) = &args.scrape_url {
        targets.push(
            url_authority(url)
                .ok_or_else(|| format!("{url} is not http://HOST:PORT/path"))?
                .to_owned(),
        );
    }
    for target in targets {
        let addrs: Vec<SocketAddr> = target
            .to_socket_addrs()
            .map_err(|e| format!("cannot resolve {target}: {e}"))?
            .collect();
        if !args.allow_remote && addrs.iter().any(|a| !a.ip().is_loopback()) {
            return Err(format!(
                "{target} is not a loopback address: pass --allow-remote to load another machine"
            ));
        }
    }
    Ok(())
}

/// Counters shared by every simulated agent.
#[derive(Debug, Default)]
struct Tally {
    /// `Reject` frames received.
    rejected: AtomicUsize,
    /// Dials that got no `Welcome`: refused, closed or rejected first.
    failed_dials: AtomicUsize,
    /// Agents connected when the run ended.
    connected_at_end: AtomicUsize,
    scrapes_answered: AtomicU64,
    bytes_sent: AtomicU64,
    /// Connections, losses and recoveries, in the order they happened.
    fleet: Mutex<Fleet>,
}

/// Who is connected, and how the fleet came back after losing agents.
///
/// A mutex is enough: agents take it only when they connect or lose a
/// connection, for a few instructions, never across an `.await`.
#[derive(Debug, Default)]
struct Fleet {
    /// Agents connected now.
    connected: usize,
    /// Connections that ended before the run did.
    disconnects: u64,
    /// `Welcome`s after a lost connection.
    reconnects: u64,
    /// Each reconnect's time from the loss to the `Welcome`, in seconds.
    latencies: Vec<f64>,
    /// Latencies not kept, past [`MAX_LATENCY_SAMPLES`].
    latencies_dropped: u64,
    /// When the fleet started missing an agent that had been connected,
    /// while it still misses one.
    outage_started: Option<Instant>,
    /// Outages that ended with every agent connected again.
    recoveries: u64,
    /// The longest and the last of those, in seconds.
    longest_recovery: f64,
    last_recovery: f64,
}

impl Tally {
    /// The fleet's state, locked.
    fn fleet(&self) -> std::sync::MutexGuard<'_, Fleet> {
        // The counters stay meaningful if an agent task panicked.
        self.fleet.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// An agent got its `Welcome`; `lost` is when it lost its previous
    /// connection, if it had one.
    fn connected(&self, n_agents: usize, lost: Option<Instant>) {
        let mut fleet = self.fleet();
        fleet.connected += 1;
        if let Some(lost) = lost {
            fleet.reconnects += 1;
            if fleet.latencies.len() < MAX_LATENCY_SAMPLES {
                fleet.latencies.push(lost.elapsed().as_secs_f64());
            } else {
                fleet.latencies_dropped += 1;
            }
        }
        if fleet.connected == n_agents
            && let Some(started) = fleet.outage_started.take()
        {
            let seconds = started.elapsed().as_secs_f64();
            fleet.recoveries += 1;
            fleet.last_recovery = seconds;
            fleet.longest_recovery = fleet.longest_recovery.max(seconds);
        }
    }

    /// An agent lost its connection before the run ended.
    fn disconnected(&self) {
        let mut fleet = self.fleet();
        fleet.connected = fleet.connected.saturating_sub(1);
        fleet.disconnects += 1;
        fleet.outage_started.get_or_insert_with(Instant::now);
    }
}

/// Exponential backoff with jitter: each delay is drawn between half and
/// all of a bound that doubles on each failed dial, from `initial` up to
/// `max`; a `Welcome` starts it again from `initial`.
#[derive(Debug)]
struct Backoff {
    /// The first bound.
    initial: Duration,
    /// The largest bound.
    max: Duration,
    /// The bound of the next delay.
    bound: Duration,
    /// xorshift64* state, seeded per agent.
    rng: u64,
}

impl Backoff {
    /// Delays from `initial` up to `max`, drawn from `seed`.
    fn new(initial: Duration, max: Duration, seed: u64) -> Backoff {
        Backoff {
            initial,
            max,
            bound: initial,
            // Zero is xorshift's one fixed point.
            rng: seed.max(1),
        }
    }

    /// Starts again from `initial`, after a `Welcome`.
    fn reset(&mut self) {
        self.bound = self.initial;
    }

    /// The delay before the next dial.
    fn next_delay(&mut self) -> Duration {
        self.rng ^= self.rng >> 12;
        self.rng ^= self.rng << 25;
        self.rng ^= self.rng >> 27;
        let random = self.rng.wrapping_mul(0x2545_F491_4F6C_DD1D);
        let half = self.bound / 2;
        #[allow(
            clippy::cast_precision_loss,
            reason = "a fraction of a random word is precise enough for jitter"
        )]
        let fraction = (random >> 11) as f64 / (1u64 << 53) as f64;
        let delay = half + (self.bound - half).mul_f64(fraction);
        self.bound = (self.bound * 2).min(self.max);
        delay
    }
}

/// One agent's families, encoded as the `families` fields of a
/// ScrapeResponse, so an answer is a header, the id and these bytes.
fn encode_families(agent: usize, n_series: usize, round: u64) -> Bytes {
    let n_families = n_series.div_ceil(SERIES_PER_FAMILY);
    let mut families = Vec::with_capacity(n_families);
    for f in 0..n_families {
        let mut family =
            MetricFamily::new(format!("loadgen_requests_{f}_total"), MetricType::Counter);
        family.help = Some("Requests of a simulated agent.".to_owned());
        let in_family = SERIES_PER_FAMILY.min(n_series - f * SERIES_PER_FAMILY);
        for s in 0..in_family {
            #[allow(clippy::cast_precision_loss, reason = "simulated values")]
            let total = (round * 7 + (agent * 31 + s) as u64 % 1000) as f64;
            family.series.push(Series {
                labels: vec![
                    Label::new("route", format!("/api/v1/items/{s}")),
                    Label::new("method", if s % 3 == 0 { "POST" } else { "GET" }),
                    Label::new("code", if s % 10 == 0 { "500" } else { "200" }),
                ],
                value: Value::Counter(Counter {
                    total,
                    created: None,
                    exemplar: None,
                }),
                timestamp_ms: None,
            });
        }
        families.push(to_proto(&family));
    }
    // With id 0 (the default, not written) the encoding is exactly the
    // repeated `families` field.
    let encoded = prost::Message::encode_to_vec(&ScrapeResponse {
        id: 0,
        families,
        error: String::new(),
    });
    Bytes::from(encoded)
}

/// A frame holding `ClientMessage{scrape_response: ScrapeResponse{id, families}}`.
fn answer_frame(id: u64, families: &[u8], out: &mut BytesMut) {
    out.clear();
    let id_len = 1 + prost::encoding::encoded_len_varint(id);
    let response_len = id_len + families.len();
    // Field 4 (scrape_response), wire type 2.
    let message_len = 1 + prost::encoding::encoded_len_varint(response_len as u64) + response_len;
    prost::encoding::encode_varint(message_len as u64, out);
    out.put_u8(0x22);
    prost::encoding::encode_varint(response_len as u64, out);
    // Field 1 (id), wire type 0.
    out.put_u8(0x08);
    prost::encoding::encode_varint(id, out);
    out.put_slice(families);
}

async fn agents(args: &AgentsArgs, stop: CancellationToken) -> Summary {
    let tally = Arc::new(Tally::default());
    let deadline = Instant::now() + Duration::from_secs(args.duration_secs);
    let started = Instant::now();
    {
        // The run ends at the deadline, or sooner on a signal.
        let stop = stop.clone();
        tokio::spawn(async move {
            tokio::time::sleep_until(deadline.into()).await;
            stop.cancel();
        });
    }
    let seeds = std::collections::hash_map::RandomState::new();
    let mut tasks = tokio::task::JoinSet::new();
    for agent in 0..args.agents {
        let gateway = args.gateway.clone();
        let token = args.token.clone().unwrap_or_default();
        let tally = Arc::clone(&tally);
        let sim = Simulated {
            agent,
            n_agents: args.agents,
            n_series: args.series,
            update: Duration::from_millis(args.update_interval_ms.max(100)),
            backoff: Backoff::new(
                Duration::from_millis(args.reconnect_initial_ms),
                Duration::from_millis(args.reconnect_max_ms),
                seeds.hash_one(agent),
            ),
        };
        let stop = stop.clone();
        tasks.spawn(async move { simulate(sim, &gateway, &token, &stop, &tally).await });
        // Spread connection attempts so that the accept queue is not flooded.
        if agent % 200 == 199 {
            tokio::task::yield_now().await;
        }
    }
    let scraper = args.scrape_url.clone().map(|url| {
        let interval = Duration::from_millis(args.scrape_interval_ms.max(100));
        tokio::spawn(scrape_loop(url, interval, deadline, stop.clone()))
    });
    let progress = std::io::stderr().is_terminal();
    let mut ticker = tokio::time::interval(Duration::from_millis(500));
    while !tasks.is_empty() {
        tokio::select! {
            _ = tasks.join_next() => {}
            _ = ticker.tick(), if progress => {
                let elapsed = started.elapsed().as_secs();
                let _ = write!(
                    std::io::stderr().lock(),
                    "\r{elapsed:>5}/{}s  agents {:>6} connected  {:>9} scrapes answered  {:>8} MB sent ",
                    args.duration_secs,
                    tally.fleet().connected,
                    tally.scrapes_answered.load(Ordering::Relaxed),
                    tally.bytes_sent.load(Ordering::Relaxed) >> 20,
                );
            }
        }
    }
    if progress {
        let _ = writeln!(std::io::stderr().lock());
    }
    let scrapes = match scraper {
        Some(task) => task.await.unwrap_or_default(),
        None => Vec::new(),
    };
    Summary::new(args, &tally, started.elapsed(), scrapes)
}

/// One simulated agent's settings and dialing state.
#[derive(Debug)]
struct Simulated {
    /// Its number, in its `instance` label (`agent-N`).
    agent: usize,
    /// How many agents the run has.
    n_agents: usize,
    /// Series it serves.
    n_series: usize,
    /// How often its values change.
    update: Duration,
    /// The delays between its dials.
    backoff: Backoff,
}

/// Runs one agent until `stop`: connects, answers scrapes, and dials again
/// with backoff whenever the connection is refused, lost or rejected.
async fn simulate(
    mut sim: Simulated,
    gateway: &str,
    token: &str,
    stop: &CancellationToken,
    tally: &Tally,
) {
    let mut answer = Answer {
        families: encode_families(sim.agent, sim.n_series, 0),
        round: 0,
    };
    let mut lost: Option<Instant> = None;
    loop {
        let mut welcomed = false;
        let ended = serve(
            &mut sim,
            gateway,
            token,
            stop,
            tally,
            &mut answer,
            &mut lost,
            &mut welcomed,
        )
        .await;
        let Err(why) = ended else {
            // The run is over.
            return;
        };
        tracing::debug!(agent = sim.agent, %why, "simulated agent lost its connection");
        if welcomed {
            tally.disconnected();
            lost = Some(Instant::now());
        } else {
            tally.failed_dials.fetch_add(1, Ordering::Relaxed);
        }
        let delay = sim.backoff.next_delay();
        tokio::select! {
            () = stop.cancelled() => return,
            () = tokio::time::sleep(delay) => {}
        }
    }
}

/// How long an agent's Goodbye may take at the end of the run.
const GOODBYE_TIMEOUT: Duration = Duration::from_secs(1);

/// Writes `bytes`, unless the run ends first (`Ok(false)`): a gateway that
/// stops reading cannot hold an agent past the end of the run.
async fn write_until(
    stream: &mut TcpStream,
    bytes: &[u8],
    stop: &CancellationToken,
) -> Result<bool, String> {
    tokio::select! {
        () = stop.cancelled() => Ok(false),
        written = stream.write_all(bytes) => written.map(|()| true).map_err(|e| format!("write: {e}")),
    }
}

/// The run ended while the agent was connected (if `welcomed`): counted.
fn ended(welcomed: bool, tally: &Tally) {
    if welcomed {
        tally.connected_at_end.fetch_add(1, Ordering::Relaxed);
    }
}

/// An agent's encoded answer, kept across connections.
#[derive(Debug)]
struct Answer {
    /// The families, encoded (see [`encode_families`]).
    families: Bytes,
    /// How many times the values changed.
    round: u64,
}

/// One connection: dials, says hello and answers until `stop` (`Ok`) or
/// until the connection is refused, lost or rejected (`Err`, why).
/// `welcomed` is set once the gateway welcomed the agent; `lost` (when the
/// previous connection was lost) is taken then.
#[allow(
    clippy::too_many_arguments,
    reason = "the agent's state lives across connections"
)]
async fn serve(
    sim: &mut Simulated,
    gateway: &str,
    token: &str,
    stop: &CancellationToken,
    tally: &Tally,
    answer: &mut Answer,
    lost: &mut Option<Instant>,
    welcomed: &mut bool,
) -> Result<(), String> {
    let connect = tokio::select! {
        () = stop.cancelled() => return Ok(()),
        connect = TcpStream::connect(gateway) => connect,
    };
    let mut stream = connect.map_err(|e| format!("connect: {e}"))?;
    let _ = stream.set_nodelay(true);
    let instance = format!("agent-{}", sim.agent);
    let hello = Hello::new(token, [("job", "loadgen"), ("instance", instance.as_str())]);
    stream
        .write_all(&tether_proto::encode_to_vec(&ClientMessage::from(hello)))
        .await
        .map_err(|e| format!("hello: {e}"))?;
    let mut buf = BytesMut::with_capacity(4096);
    let mut decoder = FrameDecoder::new(1 << 20);
    let mut next_update = Instant::now() + sim.update;
    let mut frame = BytesMut::new();
    loop {
        let body = loop {
            if let Some(body) = decoder
                .decode(&mut buf)
                .map_err(|error| format!("frame: {error}"))?
            {
                break Some(body);
            }
            let read = tokio::select! {
                () = stop.cancelled() => break None,
                read = stream.read_buf(&mut buf) => read,
            };
            match read {
                Ok(0) => return Err("the gateway closed the connection".to_owned()),
                Ok(_) => {}
                Err(error) => return Err(format!("read: {error}")),
            }
        };
        let Some(body) = body else {
            // The run is over.
            if *welcomed {
                tally.connected_at_end.fetch_add(1, Ordering::Relaxed);
            }
            let goodbye = tether_proto::encode_to_vec(&ClientMessage::from(Goodbye {
                reason: "load test over".to_owned(),
            }));
            // Best effort: a gateway that stopped reading does not hold the
            // summary.
            let _ = tokio::time::timeout(GOODBYE_TIMEOUT, stream.write_all(&goodbye)).await;
            return Ok(());
        };
        let message = tether_proto::decode_server_message(body).map_err(|e| e.to_string())?;
        match message.kind {
            Some(ServerKind::Welcome(_)) => {
                *welcomed = true;
                tally.connected(sim.n_agents, lost.take());
                sim.backoff.reset();
            }
            Some(ServerKind::Reject(reject)) => {
                tally.rejected.fetch_add(1, Ordering::Relaxed);
                return Err(format!("rejected: {}", reject.message));
            }
            Some(ServerKind::ScrapeRequest(request)) => {
                if Instant::now() >= next_update {
                    answer.round += 1;
                    answer.families = encode_families(sim.agent, sim.n_series, answer.round);
                    next_update = Instant::now() + sim.update;
                }
                answer_frame(request.id, &answer.families, &mut frame);
                if !write_until(&mut stream, &frame, stop).await? {
                    ended(*welcomed, tally);
                    return Ok(());
                }
                tally.scrapes_answered.fetch_add(1, Ordering::Relaxed);
                tally
                    .bytes_sent
                    .fetch_add(frame.len() as u64, Ordering::Relaxed);
            }
            Some(ServerKind::Ping(ping)) => {
                let pong =
                    tether_proto::encode_to_vec(&ClientMessage::from(Pong { nonce: ping.nonce }));
                if !write_until(&mut stream, &pong, stop).await? {
                    ended(*welcomed, tally);
                    return Ok(());
                }
            }
            _ => {}
        }
    }
}

/// One scrape by the load generator.
#[derive(Debug, Clone, Copy, Default)]
struct ScrapeSample {
    seconds: f64,
    bytes: usize,
    series: usize,
}

async fn scrape_loop(
    url: String,
    interval: Duration,
    deadline: Instant,
    stop: CancellationToken,
) -> Vec<ScrapeSample> {
    let mut samples = Vec::new();
    let Some(authority) = url_authority(&url).map(str::to_owned) else {
        return samples;
    };
    let path = url
        .strip_prefix("http://")
        .and_then(|rest| rest.find('/').map(|i| rest[i..].to_owned()))
        .unwrap_or_else(|| "/metrics".to_owned());
    let mut ticks = tokio::time::interval(interval);
    loop {
        tokio::select! {
            () = stop.cancelled() => return samples,
            _ = ticks.tick() => {}
        }
        if Instant::now() + interval >= deadline {
            return samples;
        }
        let started = Instant::now();
        if let Ok(body) = http_get(&authority, &path).await {
            let series = body
                .split(|&b| b == b'\n')
                .filter(|line| !line.is_empty() && line[0] != b'#')
                .count();
            samples.push(ScrapeSample {
                seconds: started.elapsed().as_secs_f64(),
                bytes: body.len(),
                series,
            });
        }
    }
}

fn url_authority(url: &str) -> Option<&str> {
    let rest = url.strip_prefix("http://")?;
    Some(rest.split('/').next().unwrap_or(rest)).filter(|a| !a.is_empty())
}

/// A plain HTTP/1.1 GET with `Connection: close`, as Prometheus would send
/// it (with its scrape timeout header), returning the body.
async fn http_get(authority: &str, path: &str) -> Result<Vec<u8>, String> {
    let mut stream = TcpStream::connect(authority)
        .await
        .map_err(|e| e.to_string())?;
    let request = format!(
        "GET {path} HTTP/1.1\r\nHost: {authority}\r\nAccept: text/plain;version=0.0.4\r\nX-Prometheus-Scrape-Timeout-Seconds: 10\r\nConnection: close\r\n\r\n"
    );
    stream
        .write_all(request.as_bytes())
        .await
        .map_err(|e| e.to_string())?;
    let mut raw = Vec::new();
    stream
        .read_to_end(&mut raw)
        .await
        .map_err(|e| e.to_string())?;
    let split = raw
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .ok_or("no header block")?;
    Ok(raw.split_off(split + 4))
}

/// What a run did.
#[derive(Debug)]
struct Summary {
    agents: usize,
    series_per_agent: usize,
    /// Agents connected when the run ended.
    connected_at_end: usize,
    /// `Reject` frames received.
    rejected: usize,
    /// Dials that got no `Welcome`.
    failed_dials: usize,
    /// Connections lost before the run ended.
    disconnects: u64,
    /// `Welcome`s after a lost connection.
    reconnects: u64,
    /// Each reconnect's time from the loss to the `Welcome`, sorted.
    reconnect_seconds: Vec<f64>,
    /// Outages (the fleet missing an agent it had) that ended with every
    /// agent back; the longest and the last one's length.
    recoveries: u64,
    longest_recovery_seconds: f64,
    last_recovery_seconds: f64,
    /// Whether an outage was still going on when the run ended.
    recovering_at_end: bool,
    scrapes_answered: u64,
    bytes_sent: u64,
    seconds: f64,
    scrapes: Vec<ScrapeSample>,
}

impl Summary {
    fn new(
        args: &AgentsArgs,
        tally: &Tally,
        elapsed: Duration,
        scrapes: Vec<ScrapeSample>,
    ) -> Summary {
        let fleet = tally.fleet();
        let mut reconnect_seconds = fleet.latencies.clone();
        reconnect_seconds.sort_by(f64::total_cmp);
        Summary {
            agents: args.agents,
            series_per_agent: args.series,
            connected_at_end: tally.connected_at_end.load(Ordering::Relaxed),
            rejected: tally.rejected.load(Ordering::Relaxed),
            failed_dials: tally.failed_dials.load(Ordering::Relaxed),
            disconnects: fleet.disconnects,
            reconnects: fleet.reconnects,
            reconnect_seconds,
            recoveries: fleet.recoveries,
            longest_recovery_seconds: fleet.longest_recovery,
            last_recovery_seconds: fleet.last_recovery,
            recovering_at_end: fleet.outage_started.is_some(),
            scrapes_answered: tally.scrapes_answered.load(Ordering::Relaxed),
            bytes_sent: tally.bytes_sent.load(Ordering::Relaxed),
            seconds: elapsed.as_secs_f64(),
            scrapes,
        }
    }

    /// The `q` quantile of sorted `values`; NaN when there are none.
    fn quantile_of(values: &[f64], q: f64) -> f64 {
        if values.is_empty() {
            return f64::NAN;
        }
        #[allow(
            clippy::cast_possible_truncation,
            clippy::cast_sign_loss,
            clippy::cast_precision_loss,
            reason = "an index into a list"
        )]
        let index = ((values.len() - 1) as f64 * q).round() as usize;
        values[index]
    }

    /// The `q` quantile of reconnect latencies.
    fn reconnect_quantile(&self, q: f64) -> f64 {
        Summary::quantile_of(&self.reconnect_seconds, q)
    }

    /// The `q` quantile of scrape latencies.
    fn quantile(&self, q: f64) -> f64 {
        let mut seconds: Vec<f64> = self.scrapes.iter().map(|s| s.seconds).collect();
        seconds.sort_by(f64::total_cmp);
        Summary::quantile_of(&seconds, q)
    }

    /// The summary as lines of text.
    fn text(&self) -> String {
        let mut out = format!(
            "agents {} x {} series: {} connected at the end, {} rejected, {} failed dials; {} scrapes answered, {} MB sent in {:.1} s",
            self.agents,
            self.series_per_agent,
            self.connected_at_end,
            self.rejected,
            self.failed_dials,
            self.scrapes_answered,
            self.bytes_sent >> 20,
            self.seconds
        );
        out.push_str(&format!(
            "\nreconnects: {} disconnects, {} reconnects",
            self.disconnects, self.reconnects
        ));
        if self.reconnects > 0 {
            out.push_str(&format!(
                ", each back in p50 {:.3} s, p99 {:.3} s, max {:.3} s",
                self.reconnect_quantile(0.5),
                self.reconnect_quantile(0.99),
                self.reconnect_quantile(1.0)
            ));
        }
        if self.recoveries > 0 {
            out.push_str(&format!(
                "; all agents back {} times, last in {:.3} s, longest {:.3} s",
                self.recoveries, self.last_recovery_seconds, self.longest_recovery_seconds
            ));
        }
        if self.recovering_at_end {
            out.push_str("; not all agents were back at the end");
        }
        if let Some(last) = self.scrapes.last() {
            out.push_str(&format!(
                "\nscrapes: {} taken, p50 {:.3} s, p99 {:.3} s, max {:.3} s; last: {} series, {} MB",
                self.scrapes.len(),
                self.quantile(0.5),
                self.quantile(0.99),
                self.quantile(1.0),
                last.series,
                last.bytes >> 20
            ));
        }
        out
    }

    /// The summary as one JSON object.
    fn json(&self) -> String {
        let last = self.scrapes.last().copied().unwrap_or_default();
        let recovery = |seconds: f64| {
            if self.recoveries > 0 {
                json_number(seconds)
            } else {
                "null".to_owned()
            }
        };
        format!(
            "{{\"agents\":{},\"series_per_agent\":{},\"connected_at_end\":{},\"rejected\":{},\"failed_dials\":{},\"disconnects\":{},\"reconnects\":{},\"reconnect_p50_seconds\":{},\"reconnect_p99_seconds\":{},\"reconnect_max_seconds\":{},\"recoveries\":{},\"last_recovery_seconds\":{},\"longest_recovery_seconds\":{},\"recovering_at_end\":{},\"scrapes_answered\":{},\"bytes_sent\":{},\"seconds\":{:.3},\"scrapes\":{},\"scrape_p50_seconds\":{},\"scrape_p99_seconds\":{},\"scrape_max_seconds\":{},\"last_scrape_series\":{},\"last_scrape_bytes\":{}}}",
            self.agents,
            self.series_per_agent,
            self.connected_at_end,
            self.rejected,
            self.failed_dials,
            self.disconnects,
            self.reconnects,
            json_number(self.reconnect_quantile(0.5)),
            json_number(self.reconnect_quantile(0.99)),
            json_number(self.reconnect_quantile(1.0)),
            self.recoveries,
            recovery(self.last_recovery_seconds),
            recovery(self.longest_recovery_seconds),
            self.recovering_at_end,
            self.scrapes_answered,
            self.bytes_sent,
            self.seconds,
            self.scrapes.len(),
            json_number(self.quantile(0.5)),
            json_number(self.quantile(0.99)),
            json_number(self.quantile(1.0)),
            last.series,
            last.bytes
        )
    }
}

/// `value` in JSON: `null` unless finite.
fn json_number(value: f64) -> String {
    if value.is_finite() {
        format!("{value:.6}")
    } else {
        "null".to_owned()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_hand_built_answer_decodes_as_a_scrape_response() {
        let families = encode_families(3, 250, 1);
        let mut frame = BytesMut::new();
        answer_frame(987_654, &families, &mut frame);
        let body = FrameDecoder::new(1 << 24)
            .decode(&mut frame)
            .expect("valid frame")
            .expect("complete frame");
        let message = tether_proto::decode_client_message(body).expect("valid message");
        let Some(tether_proto::ClientKind::ScrapeResponse(response)) = message.kind else {
            panic!("a scrape response");
        };
        assert_eq!(response.id, 987_654);
        assert_eq!(response.families.len(), 3);
        let series: usize = response
            .families
            .into_iter()
            .map(|f| {
                tether_model::from_proto(f)
                    .expect("valid family")
                    .series
                    .len()
            })
            .sum();
        assert_eq!(series, 250);
    }

    #[test]
    fn backoff_doubles_with_jitter_up_to_its_bound_and_starts_again() {
        let initial = Duration::from_millis(100);
        let max = Duration::from_millis(1000);
        let mut backoff = Backoff::new(initial, max, 42);
        let mut bound = initial;
        for _ in 0..10 {
            let delay = backoff.next_delay();
            assert!(
                delay >= bound / 2 && delay <= bound,
                "{delay:?} for {bound:?}"
            );
            bound = (bound * 2).min(max);
        }
        backoff.reset();
        let delay = backoff.next_delay();
        assert!(
            delay >= initial / 2 && delay <= initial,
            "{delay:?} after a reset"
        );
        // Agents seeded differently do not dial in step.
        let mut other = Backoff::new(initial, max, 43);
        let mut same = Backoff::new(initial, max, 42);
        let delays: Vec<Duration> = (0..5).map(|_| same.next_delay()).collect();
        let others: Vec<Duration> = (0..5).map(|_| other.next_delay()).collect();
        assert_ne!(delays, others);
    }

    #[test]
    fn the_fleet_recovers_when_every_agent_is_back() {
        let tally = Tally::default();
        for _ in 0..3 {
            tally.connected(3, None);
        }
        tally.disconnected();
        tally.disconnected();
        let lost = Instant::now();
        tally.connected(3, Some(lost));
        assert_eq!(tally.fleet().recoveries, 0, "one agent is still away");
        tally.connected(3, Some(lost));
        let fleet = tally.fleet();
        assert_eq!(
            (
                fleet.connected,
                fleet.disconnects,
                fleet.reconnects,
                fleet.recoveries
            ),
            (3, 2, 2, 1)
        );
        assert!(fleet.outage_started.is_none());
        assert_eq!(fleet.latencies.len(), 2);
    }

    #[test]
    fn only_loopback_targets_without_allow_remote() {
        let args = |gateway: &str, allow_remote| AgentsArgs {
            gateway: gateway.to_owned(),
            agents: 1,
            series: 1,
            duration_secs: 1,
            token: None,
            update_interval_ms: 1000,
            scrape_url: None,
            scrape_interval_ms: 1000,
            allow_remote,
            json: false,
            reconnect_initial_ms: DEFAULT_RECONNECT_INITIAL_MS,
            reconnect_max_ms: DEFAULT_RECONNECT_MAX_MS,
        };
        assert!(validate(&args("127.0.0.1:7001", false)).is_ok());
        assert!(validate(&args("[::1]:7001", false)).is_ok());
        assert!(validate(&args("192.0.2.1:7001", false)).is_err());
        assert!(validate(&args("192.0.2.1:7001", true)).is_ok());
        let mut too_many = args("127.0.0.1:7001", false);
        too_many.agents = MAX_AGENTS + 1;
        assert!(validate(&too_many).is_err());
        let mut backwards = args("127.0.0.1:7001", false);
        backwards.reconnect_initial_ms = backwards.reconnect_max_ms + 1;
        assert!(validate(&backwards).is_err());
    }
}
