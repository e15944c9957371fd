//! `tether loadgen agents`: many simulated agents in one process, for
//! load tests and benchmarks of the gateway. Bounded in count and time,
//! loopback only unless asked otherwise.
//!
//! Each simulated agent speaks the agent protocol directly and keeps its
//! answer pre-encoded: only the scrape id is written per request, so the
//! load generator spends its CPU on sockets, not on encoding, and the
//! gateway's cost is what gets measured. Values change every
//! `--update-interval-ms`, when each agent re-encodes its families.

use std::io::{IsTerminal, Write};
use std::net::{SocketAddr, ToSocketAddrs};
use std::process::ExitCode;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use bytes::{BufMut, Bytes, BytesMut};
use clap::{Args, Subcommand};
use tether_model::{Counter, Label, MetricFamily, MetricType, Series, Value, to_proto};
use tether_proto::{ClientMessage, FrameDecoder, Goodbye, Hello, Pong, ScrapeResponse, ServerKind};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

/// Most agents one run may simulate.
const MAX_AGENTS: usize = 100_000;
/// Most series one agent may serve.
const MAX_SERIES_PER_AGENT: usize = 1_000_000;
/// Longest run.
const MAX_DURATION_SECS: u64 = 24 * 3600;
/// Series per simulated family.
const SERIES_PER_FAMILY: usize = 100;

#[derive(Debug, Args)]
pub(crate) struct LoadgenArgs {
    #[command(subcommand)]
    workload: Workload,
}

#[derive(Debug, Subcommand)]
enum Workload {
    /// Simulated agents that dial the gateway and answer its scrapes.
    Agents(AgentsArgs),
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
}

pub(crate) fn run(args: &LoadgenArgs) -> ExitCode {
    let Workload::Agents(args) = &args.workload;
    if let Err(message) = validate(args) {
        crate::setup::report_error(&format!("tether loadgen: {message}"));
        return ExitCode::from(2);
    }
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(runtime) => runtime,
        Err(error) => {
            crate::setup::report_error(&format!(
                "tether loadgen: cannot start the runtime: {error}"
            ));
            return ExitCode::FAILURE;
        }
    };
    let summary = runtime.block_on(agents(args));
    let mut stdout = std::io::stdout().lock();
    let _ = if args.json {
        writeln!(stdout, "{}", summary.json())
    } else {
        writeln!(stdout, "{}", summary.text())
    };
    if summary.connected == 0 {
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
    connected: AtomicUsize,
    rejected: AtomicUsize,
    failed: AtomicUsize,
    scrapes_answered: AtomicU64,
    bytes_sent: AtomicU64,
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

async fn agents(args: &AgentsArgs) -> Summary {
    let tally = Arc::new(Tally::default());
    let deadline = Instant::now() + Duration::from_secs(args.duration_secs);
    let started = Instant::now();
    let mut tasks = tokio::task::JoinSet::new();
    for agent in 0..args.agents {
        let gateway = args.gateway.clone();
        let token = args.token.clone().unwrap_or_default();
        let tally = Arc::clone(&tally);
        let n_series = args.series;
        let update = Duration::from_millis(args.update_interval_ms.max(100));
        tasks.spawn(async move {
            if let Err(error) =
                simulate(agent, &gateway, &token, n_series, update, deadline, &tally).await
            {
                tally.failed.fetch_add(1, Ordering::Relaxed);
                tracing::debug!(agent, %error, "simulated agent failed");
            }
        });
        // Spread connection attempts so that the accept queue is not flooded.
        if agent % 200 == 199 {
            tokio::task::yield_now().await;
        }
    }
    let scraper = args.scrape_url.clone().map(|url| {
        let interval = Duration::from_millis(args.scrape_interval_ms.max(100));
        tokio::spawn(scrape_loop(url, interval, deadline))
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
                    tally.connected.load(Ordering::Relaxed),
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

async fn simulate(
    agent: usize,
    gateway: &str,
    token: &str,
    n_series: usize,
    update: Duration,
    deadline: Instant,
    tally: &Tally,
) -> Result<(), String> {
    let mut stream = TcpStream::connect(gateway)
        .await
        .map_err(|e| format!("connect: {e}"))?;
    let _ = stream.set_nodelay(true);
    let instance = format!("agent-{agent}");
    let hello = Hello::new(token, [("job", "loadgen"), ("instance", instance.as_str())]);
    stream
        .write_all(&tether_proto::encode_to_vec(&ClientMessage::from(hello)))
        .await
        .map_err(|e| format!("hello: {e}"))?;
    let mut buf = BytesMut::with_capacity(4096);
    let mut decoder = FrameDecoder::new(1 << 20);
    let mut families = encode_families(agent, n_series, 0);
    let mut round: u64 = 0;
    let mut next_update = Instant::now() + update;
    let mut frame = BytesMut::new();
    let mut connected = false;
    let result = loop {
        let remaining = deadline.saturating_duration_since(Instant::now());
        if remaining.is_zero() {
            let goodbye = tether_proto::encode_to_vec(&ClientMessage::from(Goodbye {
                reason: "load test over".to_owned(),
            }));
            let _ = stream.write_all(&goodbye).await;
            break Ok(());
        }
        let body = loop {
            match decoder.decode(&mut buf) {
                Ok(Some(body)) => break Some(body),
                Ok(None) => {}
                Err(error) => return Err(format!("frame: {error}")),
            }
            match tokio::time::timeout(remaining, stream.read_buf(&mut buf)).await {
                Err(_) => break None,
                Ok(Ok(0)) => return Err("the gateway closed the connection".to_owned()),
                Ok(Ok(_)) => {}
                Ok(Err(error)) => return Err(format!("read: {error}")),
            }
        };
        let Some(body) = body else { continue };
        let message = tether_proto::decode_server_message(body).map_err(|e| e.to_string())?;
        match message.kind {
            Some(ServerKind::Welcome(_)) => {
                connected = true;
                tally.connected.fetch_add(1, Ordering::Relaxed);
            }
            Some(ServerKind::Reject(reject)) => {
                tally.rejected.fetch_add(1, Ordering::Relaxed);
                break Err(format!("rejected: {}", reject.message));
            }
            Some(ServerKind::ScrapeRequest(request)) => {
                if Instant::now() >= next_update {
                    round += 1;
                    families = encode_families(agent, n_series, round);
                    next_update = Instant::now() + update;
                }
                answer_frame(request.id, &families, &mut frame);
                stream
                    .write_all(&frame)
                    .await
                    .map_err(|e| format!("write: {e}"))?;
                tally.scrapes_answered.fetch_add(1, Ordering::Relaxed);
                tally
                    .bytes_sent
                    .fetch_add(frame.len() as u64, Ordering::Relaxed);
            }
            Some(ServerKind::Ping(ping)) => {
                let pong =
                    tether_proto::encode_to_vec(&ClientMessage::from(Pong { nonce: ping.nonce }));
                stream
                    .write_all(&pong)
                    .await
                    .map_err(|e| format!("write: {e}"))?;
            }
            _ => {}
        }
    };
    if connected {
        tally.connected.fetch_sub(1, Ordering::Relaxed);
    }
    result
}

/// One scrape by the load generator.
#[derive(Debug, Clone, Copy, Default)]
struct ScrapeSample {
    seconds: f64,
    bytes: usize,
    series: usize,
}

async fn scrape_loop(url: String, interval: Duration, deadline: Instant) -> Vec<ScrapeSample> {
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
        ticks.tick().await;
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
    connected: usize,
    rejected: usize,
    failed: usize,
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
        Summary {
            agents: args.agents,
            series_per_agent: args.series,
            connected: args.agents - tally.failed.load(Ordering::Relaxed).min(args.agents),
            rejected: tally.rejected.load(Ordering::Relaxed),
            failed: tally.failed.load(Ordering::Relaxed),
            scrapes_answered: tally.scrapes_answered.load(Ordering::Relaxed),
            bytes_sent: tally.bytes_sent.load(Ordering::Relaxed),
            seconds: elapsed.as_secs_f64(),
            scrapes,
        }
    }

    fn quantile(&self, q: f64) -> f64 {
        let mut seconds: Vec<f64> = self.scrapes.iter().map(|s| s.seconds).collect();
        seconds.sort_by(f64::total_cmp);
        if seconds.is_empty() {
            return f64::NAN;
        }
        #[allow(
            clippy::cast_possible_truncation,
            clippy::cast_sign_loss,
            clippy::cast_precision_loss,
            reason = "an index into a short list"
        )]
        let index = ((seconds.len() - 1) as f64 * q).round() as usize;
        seconds[index]
    }

    fn text(&self) -> String {
        let mut out = format!(
            "agents {} x {} series: {} ran to the end, {} rejected, {} failed; {} scrapes answered, {} MB sent in {:.1} s",
            self.agents,
            self.series_per_agent,
            self.connected,
            self.rejected,
            self.failed,
            self.scrapes_answered,
            self.bytes_sent >> 20,
            self.seconds
        );
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

    fn json(&self) -> String {
        let last = self.scrapes.last().copied().unwrap_or_default();
        format!(
            "{{\"agents\":{},\"series_per_agent\":{},\"ran_to_end\":{},\"rejected\":{},\"failed\":{},\"scrapes_answered\":{},\"bytes_sent\":{},\"seconds\":{:.3},\"scrapes\":{},\"scrape_p50_seconds\":{},\"scrape_p99_seconds\":{},\"scrape_max_seconds\":{},\"last_scrape_series\":{},\"last_scrape_bytes\":{}}}",
            self.agents,
            self.series_per_agent,
            self.connected,
            self.rejected,
            self.failed,
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
        };
        assert!(validate(&args("127.0.0.1:7001", false)).is_ok());
        assert!(validate(&args("[::1]:7001", false)).is_ok());
        assert!(validate(&args("192.0.2.1:7001", false)).is_err());
        assert!(validate(&args("192.0.2.1:7001", true)).is_ok());
        let mut too_many = args("127.0.0.1:7001", false);
        too_many.agents = MAX_AGENTS + 1;
        assert!(validate(&too_many).is_err());
    }
}
