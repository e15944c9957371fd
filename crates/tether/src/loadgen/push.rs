//! `tether loadgen push`: groups pushed through the Pushgateway HTTP API,
//! to tether's gateway or to a Pushgateway, then the whole store scraped.
//! Bounded in count and time, loopback only unless asked otherwise.
//!
//! Every group's request (head and body, gzip-encoded with `--gzip`) is
//! rendered before the clock starts, so the load generator only writes
//! bytes and reads answers while the server is measured. `--clients`
//! keep-alive connections each take the next group not yet pushed, one
//! request in flight each, until every group is pushed or the push phase
//! reaches `--duration-secs`: a server too slow to take them all still
//! gets a rate out of a bounded run. Then `GET /metrics` is taken
//! `--scrapes` times plain and as many times with `Accept-Encoding: gzip`,
//! each on a new connection, timed to its last byte. SIGINT or SIGTERM
//! stops the run, with the summary of what was done.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::io::{IsTerminal, Read, Write};
use std::process::ExitCode;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use bytes::Bytes;
use clap::{Args, ValueEnum};
use serde_json::{Value as Json, json};
use tokio_util::sync::CancellationToken;

use super::Summary as AgentsSummary;
use super::http::{Connection, Failure, Response, Target, check_loopback, parse_url};

/// Most groups one run may push.
const MAX_GROUPS: usize = 1_000_000;
/// Most series one group may hold.
const MAX_SERIES_PER_GROUP: usize = 1_000_000;
/// Most series of a run, all groups together: every group's request is
/// rendered and kept in memory before the pushes start, about 40 bytes a
/// series without `--gzip`.
const MAX_TOTAL_SERIES: usize = 10_000_000;
/// Most concurrent connections.
const MAX_CLIENTS: usize = 1024;
/// Longest push phase that may be asked for.
const MAX_DURATION_SECS: u64 = 24 * 3600;
/// Default longest push phase: enough for a Pushgateway to take 1,000
/// groups of 1,000 series.
const DEFAULT_DURATION_SECS: u64 = 900;
/// Most scrapes of each kind (plain, gzip).
const MAX_SCRAPES: usize = 100;
/// Default wait for one push's response; past it the push counts as a
/// transport error and its connection is closed.
const DEFAULT_PUSH_TIMEOUT_SECS: u64 = 120;
/// Default wait for one scrape's last byte; past it the scrape fails.
const DEFAULT_SCRAPE_TIMEOUT_SECS: u64 = 120;
/// Longest wait for one push or scrape that may be asked for.
const MAX_TIMEOUT_SECS: u64 = 3600;
/// Longest body of a push's response read (an error's text); a longer one
/// counts as a transport error.
const MAX_PUSH_RESPONSE_BYTES: usize = 1 << 20;
/// Longest scrape body read, and longest decoded from gzip; a longer one
/// fails the scrape.
const MAX_SCRAPE_BYTES: usize = 2 << 30;
/// Longest error text quoted in the summary, in characters.
const MAX_QUOTED_CHARS: usize = 300;
/// The job every group is pushed under.
const JOB: &str = "loadgen";

#[derive(Debug, Args)]
pub(super) struct PushArgs {
    /// The Pushgateway API's base URL: tether's HTTP listener or a
    /// Pushgateway (with its route prefix, if it has one).
    #[arg(long, value_name = "URL", default_value = "http://127.0.0.1:9091")]
    url: String,
    /// Groups pushed, group N to /metrics/job/loadgen/instance/N.
    #[arg(long, default_value_t = 1000)]
    groups: usize,
    /// Gauge series in each group.
    #[arg(long, default_value_t = 1000)]
    series: usize,
    /// Metric families a group's series are spread over (`loadgen_value`,
    /// or `loadgen_value_0` and on).
    #[arg(long, default_value_t = 1)]
    families: usize,
    /// Concurrent HTTP/1.1 keep-alive connections; each pushes the next
    /// group not yet taken, one request at a time.
    #[arg(long, default_value_t = 8)]
    clients: usize,
    /// PUT replaces a whole group, POST the families it sends.
    #[arg(long, value_enum, default_value_t = Method::Put)]
    method: Method,
    /// Send the bodies gzip-encoded (`Content-Encoding: gzip`).
    #[arg(long)]
    gzip: bool,
    /// Longest push phase; groups not pushed by then are reported as not
    /// sent, pushes in flight as abandoned.
    #[arg(long, default_value_t = DEFAULT_DURATION_SECS, value_name = "SECS")]
    duration_secs: u64,
    /// Longest wait for one push's response.
    #[arg(long, default_value_t = DEFAULT_PUSH_TIMEOUT_SECS, value_name = "SECS")]
    push_timeout_secs: u64,
    /// Scrapes of GET /metrics after the pushes, each taken plain and then
    /// with `Accept-Encoding: gzip`.
    #[arg(long, default_value_t = 3)]
    scrapes: usize,
    /// Longest wait for one scrape's last byte.
    #[arg(long, default_value_t = DEFAULT_SCRAPE_TIMEOUT_SECS, value_name = "SECS")]
    scrape_timeout_secs: u64,
    /// Push only, no scrapes.
    #[arg(long, conflicts_with = "scrape_only")]
    no_scrape: bool,
    /// Scrape only (what an earlier run pushed), no pushes.
    #[arg(long)]
    scrape_only: bool,
    /// Allow a server that is not on this machine's loopback.
    #[arg(long)]
    allow_remote: bool,
    /// Print the summary as one JSON object.
    #[arg(long)]
    json: bool,
}

/// The push request's method.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
enum Method {
    Put,
    Post,
}

impl Method {
    fn as_str(self) -> &'static str {
        match self {
            Method::Put => "PUT",
            Method::Post => "POST",
        }
    }
}

pub(super) fn run(args: &PushArgs) -> ExitCode {
    let target = match validate(args) {
        Ok(target) => target,
        Err(message) => {
            crate::setup::report_error(&format!("tether loadgen push: {message}"));
            return ExitCode::from(2);
        }
    };
    let rendered = if args.scrape_only {
        Rendered::default()
    } else {
        match render_requests(args, &target) {
            Ok(rendered) => rendered,
            Err(message) => {
                crate::setup::report_error(&format!("tether loadgen push: {message}"));
                return ExitCode::FAILURE;
            }
        }
    };
    let summary = super::until_signal("tether loadgen push", |interrupted| async move {
        push_and_scrape(args, &target, rendered, &interrupted).await
    });
    let Some(summary) = summary else {
        return ExitCode::FAILURE;
    };
    let mut stdout = std::io::stdout().lock();
    let _ = if args.json {
        writeln!(stdout, "{}", summary.json())
    } else {
        writeln!(stdout, "{}", summary.text())
    };
    if summary.succeeded() {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    }
}

fn validate(args: &PushArgs) -> Result<Target, String> {
    if args.groups == 0 || args.groups > MAX_GROUPS {
        return Err(format!("--groups must be between 1 and {MAX_GROUPS}"));
    }
    if args.series > MAX_SERIES_PER_GROUP {
        return Err(format!("--series must be at most {MAX_SERIES_PER_GROUP}"));
    }
    if args.groups.saturating_mul(args.series) > MAX_TOTAL_SERIES {
        return Err(format!(
            "--groups times --series must be at most {MAX_TOTAL_SERIES}: every body is kept in memory"
        ));
    }
    if args.families == 0 || args.families > args.series.max(1) {
        return Err("--families must be between 1 and --series".to_owned());
    }
    if args.clients == 0 || args.clients > MAX_CLIENTS {
        return Err(format!("--clients must be between 1 and {MAX_CLIENTS}"));
    }
    if args.duration_secs == 0 || args.duration_secs > MAX_DURATION_SECS {
        return Err(format!(
            "--duration-secs must be between 1 and {MAX_DURATION_SECS}"
        ));
    }
    for (flag, secs) in [
        ("--push-timeout-secs", args.push_timeout_secs),
        ("--scrape-timeout-secs", args.scrape_timeout_secs),
    ] {
        if secs == 0 || secs > MAX_TIMEOUT_SECS {
            return Err(format!("{flag} must be between 1 and {MAX_TIMEOUT_SECS}"));
        }
    }
    if args.scrapes > MAX_SCRAPES {
        return Err(format!("--scrapes must be at most {MAX_SCRAPES}"));
    }
    let target = parse_url(&args.url)?;
    check_loopback(&target, args.allow_remote)?;
    Ok(target)
}

/// A family's name: `loadgen_value` when there is one, else
/// `loadgen_value_<family>`.
fn family_name(family: usize, n_families: usize) -> String {
    if n_families == 1 {
        "loadgen_value".to_owned()
    } else {
        format!("loadgen_value_{family}")
    }
}

/// One group's body in the text format 0.0.4: `n_series` gauges
/// `loadgen_value{series="<i>"}`, in `n_families` families of about equal
/// size (series numbered across them), each with HELP and TYPE. Values
/// differ between groups and series.
fn render_body(group: usize, n_series: usize, n_families: usize) -> String {
    let per_family = n_series.div_ceil(n_families.max(1));
    let mut body = String::with_capacity(n_series * 40 + n_families * 80);
    for family in 0..n_families {
        let first = family * per_family;
        let end = (first + per_family).min(n_series);
        if first >= end {
            break;
        }
        let name = family_name(family, n_families);
        // Writing to a String cannot fail.
        let _ = writeln!(body, "# HELP {name} A gauge pushed by tether loadgen.");
        let _ = writeln!(body, "# TYPE {name} gauge");
        for series in first..end {
            let value = group
                .wrapping_mul(7919)
                .wrapping_add(series.wrapping_mul(31))
                % 100_000;
            let _ = writeln!(body, "{name}{{series=\"{series}\"}} {value}");
        }
    }
    body
}

/// The path group `group` is pushed to, under the URL's base path.
fn group_path(target: &Target, group: usize) -> String {
    format!("{}/metrics/job/{JOB}/instance/{group}", target.base_path)
}

/// A whole push request: head and `body` as given (already gzip-encoded
/// when `gzip`).
fn render_request(method: Method, target: &Target, group: usize, body: &[u8], gzip: bool) -> Bytes {
    let mut request = format!(
        "{} {} HTTP/1.1\r\nHost: {}\r\nUser-Agent: tether-loadgen\r\nContent-Type: text/plain; version=0.0.4; charset=utf-8\r\nContent-Length: {}\r\n",
        method.as_str(),
        group_path(target, group),
        target.authority,
        body.len()
    )
    .into_bytes();
    if gzip {
        request.extend_from_slice(b"Content-Encoding: gzip\r\n");
    }
    request.extend_from_slice(b"\r\n");
    request.extend_from_slice(body);
    Bytes::from(request)
}

fn gzip(bytes: &[u8]) -> std::io::Result<Vec<u8>> {
    let mut encoder = flate2::write::GzEncoder::new(
        Vec::with_capacity(bytes.len() / 4),
        flate2::Compression::default(),
    );
    encoder.write_all(bytes)?;
    encoder.finish()
}

/// Every group's request, ready to write.
#[derive(Debug, Default)]
struct Rendered {
    /// Group N's request at N.
    requests: Vec<Bytes>,
    /// Bytes of every body together, as sent.
    body_bytes: u64,
}

/// Every group's request, rendered (and compressed) on all cores.
fn render_requests(args: &PushArgs, target: &Target) -> Result<Rendered, String> {
    let n_threads = std::thread::available_parallelism()
        .map_or(1, std::num::NonZero::get)
        .min(args.groups);
    let per_thread = args.groups.div_ceil(n_threads);
    let render = |groups: std::ops::Range<usize>| -> Result<Rendered, String> {
        let mut part = Rendered::default();
        for group in groups {
            let body = render_body(group, args.series, args.families);
            let body = if args.gzip {
                gzip(body.as_bytes()).map_err(|e| format!("cannot gzip a body: {e}"))?
            } else {
                body.into_bytes()
            };
            part.body_bytes += body.len() as u64;
            part.requests
                .push(render_request(args.method, target, group, &body, args.gzip));
        }
        Ok(part)
    };
    std::thread::scope(|scope| {
        let parts: Vec<_> = (0..n_threads)
            .map(|thread| {
                let first = thread * per_thread;
                let end = (first + per_thread).min(args.groups);
                scope.spawn(move || render(first..end))
            })
            .collect();
        let mut rendered = Rendered {
            requests: Vec::with_capacity(args.groups),
            body_bytes: 0,
        };
        for part in parts {
            let part = part
                .join()
                .map_err(|_| "a rendering thread panicked".to_owned())??;
            rendered.requests.extend(part.requests);
            rendered.body_bytes += part.body_bytes;
        }
        Ok(rendered)
    })
}

/// Non-2xx answers of one status.
#[derive(Debug, Clone)]
struct Rejection {
    count: u64,
    /// The first such answer's body, cut to [`MAX_QUOTED_CHARS`].
    first_body: String,
}

/// What one client, or all of them merged, did.
#[derive(Debug, Default)]
struct PushTally {
    /// Each answered push's time from its first byte written to its
    /// response's last byte read, in seconds.
    latencies: Vec<f64>,
    /// 2xx answers.
    pushed: u64,
    /// Non-2xx answers, by status.
    rejected: BTreeMap<u16, Rejection>,
    /// Pushes without an answer: connection refused, lost, or timed out.
    transport_errors: u64,
    first_transport_error: Option<String>,
    /// Pushes in flight when the push phase stopped.
    abandoned: u64,
    /// Connections opened.
    connections: u64,
}

impl PushTally {
    fn merge(&mut self, other: PushTally) {
        self.latencies.extend(other.latencies);
        self.pushed += other.pushed;
        for (status, rejection) in other.rejected {
            self.rejected
                .entry(status)
                .and_modify(|r| r.count += rejection.count)
                .or_insert(rejection);
        }
        self.transport_errors += other.transport_errors;
        if self.first_transport_error.is_none() {
            self.first_transport_error = other.first_transport_error;
        }
        self.abandoned += other.abandoned;
        self.connections += other.connections;
    }

    fn rejected_count(&self) -> u64 {
        self.rejected.values().map(|r| r.count).sum()
    }

    fn transport_error(&mut self, why: &str) {
        self.transport_errors += 1;
        self.first_transport_error
            .get_or_insert_with(|| quote(why.as_bytes()));
    }
}

/// `bytes` as text for the summary: lossy UTF-8, trimmed, cut to
/// [`MAX_QUOTED_CHARS`].
fn quote(bytes: &[u8]) -> String {
    let text = String::from_utf8_lossy(bytes);
    let text = text.trim();
    match text.char_indices().nth(MAX_QUOTED_CHARS) {
        Some((cut, _)) => format!("{}...", &text[..cut]),
        None => text.to_owned(),
    }
}

/// What is shared by the clients of one push phase.
#[derive(Debug)]
struct PushWork {
    authority: String,
    requests: Vec<Bytes>,
    /// The next group to take.
    next: AtomicUsize,
    /// Groups answered with a 2xx so far, for the progress line.
    pushed: AtomicU64,
    timeout: Duration,
}

/// One client: pushes the next group not yet taken until none is left or
/// `stop`.
async fn push_client(work: Arc<PushWork>, stop: CancellationToken) -> PushTally {
    let mut tally = PushTally::default();
    let mut connection: Option<Connection> = None;
    while !stop.is_cancelled() {
        let group = work.next.fetch_add(1, Ordering::Relaxed);
        let Some(request) = work.requests.get(group) else {
            break;
        };
        let started = Instant::now();
        let exchange = push_one(&mut connection, &work.authority, request, &mut tally);
        let answer = tokio::select! {
            () = stop.cancelled() => None,
            answer = tokio::time::timeout(work.timeout, exchange) => Some(answer),
        };
        let Some(answer) = answer else {
            tally.abandoned += 1;
            break;
        };
        match answer {
            Ok(Ok(response)) => {
                tally.latencies.push(started.elapsed().as_secs_f64());
                let status = response.head.status;
                if (200..300).contains(&status) {
                    tally.pushed += 1;
                    work.pushed.fetch_add(1, Ordering::Relaxed);
                } else {
                    tally
                        .rejected
                        .entry(status)
                        .and_modify(|r| r.count += 1)
                        .or_insert_with(|| Rejection {
                            count: 1,
                            first_body: quote(&response.body),
                        });
                }
            }
            Ok(Err(failure)) => tally.transport_error(&failure.to_string()),
            // The connection went with the unfinished exchange.
            Err(_) => tally.transport_error(&format!("no response within {:?}", work.timeout)),
        }
    }
    tally
}

/// One push on the client's connection, dialed when there is none. A
/// reused connection that the server closed before answering (its idle
/// timeout) is dialed again once, and the push sent again.
async fn push_one(
    connection: &mut Option<Connection>,
    authority: &str,
    request: &[u8],
    tally: &mut PushTally,
) -> Result<Response, Failure> {
    let mut sent_again = false;
    loop {
        let mut open = match connection.take() {
            Some(open) => open,
            None => {
                tally.connections += 1;
                Connection::connect(authority).await?
            }
        };
        match open.exchange(request, MAX_PUSH_RESPONSE_BYTES).await {
            Ok(response) => {
                if !response.head.close {
                    *connection = Some(open);
                }
                return Ok(response);
            }
            Err(Failure::ClosedBeforeResponse) if open.reused && !sent_again => {
                sent_again = true;
            }
            Err(failure) => return Err(failure),
        }
    }
}

/// How the push phase ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Stop {
    /// Every group was sent and answered (or failed).
    Completed,
    /// At `--duration-secs`, groups left.
    Duration,
    /// On SIGINT or SIGTERM.
    Signal,
}

impl Stop {
    fn as_str(self) -> &'static str {
        match self {
            Stop::Completed => "completed",
            Stop::Duration => "duration",
            Stop::Signal => "signal",
        }
    }
}

/// What the push phase did.
#[derive(Debug)]
struct PushPhase {
    tally: PushTally,
    /// From the first push to the last answer (or the stop), in seconds.
    seconds: f64,
    stop: Stop,
    /// Bytes of every group's request body, as sent.
    body_bytes: u64,
}

async fn push_phase(
    args: &PushArgs,
    target: &Target,
    rendered: Rendered,
    interrupted: &CancellationToken,
) -> PushPhase {
    let work = Arc::new(PushWork {
        authority: target.authority.clone(),
        requests: rendered.requests,
        next: AtomicUsize::new(0),
        pushed: AtomicU64::new(0),
        timeout: Duration::from_secs(args.push_timeout_secs),
    });
    let stop = interrupted.child_token();
    let started = Instant::now();
    let deadline = started + Duration::from_secs(args.duration_secs);
    {
        let stop = stop.clone();
        tokio::spawn(async move {
            tokio::time::sleep_until(deadline.into()).await;
            stop.cancel();
        });
    }
    let mut clients = tokio::task::JoinSet::new();
    for _ in 0..args.clients {
        clients.spawn(push_client(Arc::clone(&work), stop.clone()));
    }
    let progress = std::io::stderr().is_terminal();
    let mut ticker = tokio::time::interval(Duration::from_millis(500));
    let mut tally = PushTally::default();
    while !clients.is_empty() {
        tokio::select! {
            joined = clients.join_next() => {
                if let Some(Ok(client)) = joined {
                    tally.merge(client);
                }
            }
            _ = ticker.tick(), if progress => {
                let _ = write!(
                    std::io::stderr().lock(),
                    "\r{:>5}/{}s  pushed {:>7}/{} groups ",
                    started.elapsed().as_secs(),
                    args.duration_secs,
                    work.pushed.load(Ordering::Relaxed),
                    args.groups,
                );
            }
        }
    }
    let seconds = started.elapsed().as_secs_f64();
    if progress {
        let _ = writeln!(std::io::stderr().lock());
    }
    // Also stops the deadline's task.
    stop.cancel();
    let answered = tally.pushed + tally.rejected_count() + tally.transport_errors;
    let ended = if interrupted.is_cancelled() {
        Stop::Signal
    } else if answered >= args.groups as u64 {
        Stop::Completed
    } else {
        Stop::Duration
    };
    tally.latencies.sort_by(f64::total_cmp);
    PushPhase {
        tally,
        seconds,
        stop: ended,
        body_bytes: rendered.body_bytes,
    }
}

/// One scrape's result.
#[derive(Debug, Clone)]
struct ScrapeSample {
    status: u16,
    /// From the dial to the last byte, in seconds.
    seconds: f64,
    /// From the dial to the response's first byte, in seconds.
    first_byte_seconds: f64,
    /// Body bytes as sent.
    bytes: usize,
    /// Whether the server gzipped the body.
    gzipped: bool,
    /// Body bytes after gzip decoding (`bytes` when not gzipped).
    decoded_bytes: usize,
    /// Sample lines in the body.
    series: usize,
}

/// A scrape, or why it failed.
type Scrape = Result<ScrapeSample, String>;

/// `GET /metrics` on a new connection, plain or asking for gzip.
async fn scrape_once(target: &Target, ask_gzip: bool, timeout: Duration) -> Scrape {
    let request = format!(
        "GET {}/metrics HTTP/1.1\r\nHost: {}\r\nUser-Agent: tether-loadgen\r\nAccept: text/plain;version=0.0.4\r\n{}Connection: close\r\n\r\n",
        target.base_path,
        target.authority,
        if ask_gzip {
            "Accept-Encoding: gzip\r\n"
        } else {
            ""
        }
    );
    let started = Instant::now();
    let exchange = async {
        let mut connection = Connection::connect(&target.authority).await?;
        connection
            .exchange(request.as_bytes(), MAX_SCRAPE_BYTES)
            .await
    };
    let response = tokio::time::timeout(timeout, exchange)
        .await
        .map_err(|_| format!("no complete response within {timeout:?}"))?
        .map_err(|failure| failure.to_string())?;
    let seconds = started.elapsed().as_secs_f64();
    let first_byte_seconds = response.first_byte.duration_since(started).as_secs_f64();
    let bytes = response.body.len();
    let gzipped = response.head.gzip;
    let decoded = if gzipped {
        // Decoded after the clock stopped: counting series is not the
        // server's cost.
        let mut decoded = Vec::new();
        flate2::read::MultiGzDecoder::new(&response.body[..])
            .take(MAX_SCRAPE_BYTES as u64 + 1)
            .read_to_end(&mut decoded)
            .map_err(|e| format!("the gzip body does not decode: {e}"))?;
        if decoded.len() > MAX_SCRAPE_BYTES {
            return Err(format!(
                "the gzip body decodes to more than {MAX_SCRAPE_BYTES} bytes"
            ));
        }
        decoded
    } else {
        response.body
    };
    let status = response.head.status;
    // An error's text has no series.
    let series = if (200..300).contains(&status) {
        decoded
            .split(|&b| b == b'\n')
            .filter(|line| !line.is_empty() && line[0] != b'#')
            .count()
    } else {
        0
    };
    Ok(ScrapeSample {
        status,
        seconds,
        first_byte_seconds,
        bytes,
        gzipped,
        decoded_bytes: decoded.len(),
        series,
    })
}

async fn push_and_scrape(
    args: &PushArgs,
    target: &Target,
    rendered: Rendered,
    interrupted: &CancellationToken,
) -> RunSummary {
    let push = if args.scrape_only {
        None
    } else {
        Some(push_phase(args, target, rendered, interrupted).await)
    };
    let mut plain = Vec::new();
    let mut gzipped = Vec::new();
    if !args.no_scrape {
        let timeout = Duration::from_secs(args.scrape_timeout_secs);
        'scrapes: for _ in 0..args.scrapes {
            for ask_gzip in [false, true] {
                let scrape = tokio::select! {
                    () = interrupted.cancelled() => break 'scrapes,
                    scrape = scrape_once(target, ask_gzip, timeout) => scrape,
                };
                if ask_gzip {
                    gzipped.push(scrape);
                } else {
                    plain.push(scrape);
                }
            }
        }
    }
    RunSummary {
        url: args.url.clone(),
        method: args.method,
        gzip_bodies: args.gzip,
        groups: args.groups,
        series_per_group: args.series,
        families: args.families,
        clients: args.clients,
        duration_secs: args.duration_secs,
        push,
        plain,
        gzipped,
        interrupted: interrupted.is_cancelled(),
    }
}

/// What a run did.
#[derive(Debug)]
struct RunSummary {
    url: String,
    method: Method,
    gzip_bodies: bool,
    groups: usize,
    series_per_group: usize,
    families: usize,
    clients: usize,
    duration_secs: u64,
    /// None with `--scrape-only`.
    push: Option<PushPhase>,
    plain: Vec<Scrape>,
    gzipped: Vec<Scrape>,
    interrupted: bool,
}

/// The `q` quantile of the successful scrapes' latencies.
fn scrape_quantile(scrapes: &[Scrape], q: f64) -> f64 {
    let mut seconds: Vec<f64> = scrapes
        .iter()
        .filter_map(|s| s.as_ref().ok())
        .map(|s| s.seconds)
        .collect();
    seconds.sort_by(f64::total_cmp);
    AgentsSummary::quantile_of(&seconds, q)
}

/// `value` in JSON: `null` unless finite.
fn number(value: f64) -> Json {
    if value.is_finite() {
        json!((value * 1e6).round() / 1e6)
    } else {
        Json::Null
    }
}

fn megabytes(bytes: u64) -> f64 {
    #[allow(clippy::cast_precision_loss, reason = "a size for people to read")]
    let bytes = bytes as f64;
    bytes / 1e6
}

impl RunSummary {
    /// Whether nothing failed: every push answered 2xx (a run bounded by
    /// `--duration-secs` may leave groups unsent), at least one pushed,
    /// every scrape answered 2xx.
    fn succeeded(&self) -> bool {
        let pushes_ok = self.push.as_ref().is_none_or(|push| {
            push.tally.pushed > 0
                && push.tally.rejected.is_empty()
                && push.tally.transport_errors == 0
        });
        let scrapes_ok = self
            .plain
            .iter()
            .chain(&self.gzipped)
            .all(|s| s.as_ref().is_ok_and(|s| (200..300).contains(&s.status)));
        pushes_ok && scrapes_ok
    }

    fn text(&self) -> String {
        let mut out = String::new();
        // Writing to a String cannot fail.
        if let Some(push) = &self.push {
            let tally = &push.tally;
            let pushed_series = tally.pushed * self.series_per_group as u64;
            #[allow(clippy::cast_precision_loss, reason = "a rate")]
            let (per_second, series_per_second) = (
                tally.pushed as f64 / push.seconds,
                pushed_series as f64 / push.seconds,
            );
            let _ = write!(
                out,
                "push: {} groups x {} series ({} {}, {} {} bodies, {:.1} MB in all, {} clients) to {}\n  {} pushed ({} series) in {:.3} s: {:.1} pushes/s, {:.0} series/s",
                self.groups,
                self.series_per_group,
                self.families,
                if self.families == 1 {
                    "family"
                } else {
                    "families"
                },
                self.method.as_str(),
                if self.gzip_bodies { "gzip" } else { "plain" },
                megabytes(push.body_bytes),
                self.clients,
                self.url,
                tally.pushed,
                pushed_series,
                push.seconds,
                per_second,
                series_per_second,
            );
            if !tally.latencies.is_empty() {
                let _ = write!(
                    out,
                    "; latency p50 {:.3} s, p99 {:.3} s, max {:.3} s",
                    AgentsSummary::quantile_of(&tally.latencies, 0.5),
                    AgentsSummary::quantile_of(&tally.latencies, 0.99),
                    AgentsSummary::quantile_of(&tally.latencies, 1.0),
                );
            }
            let _ = write!(out, "; {} connections", tally.connections);
            match push.stop {
                Stop::Completed => {}
                Stop::Duration | Stop::Signal => {
                    let _ = write!(
                        out,
                        "\n  stopped by {}: {} groups not sent, {} in flight abandoned",
                        if push.stop == Stop::Signal {
                            "a signal".to_owned()
                        } else {
                            format!("--duration-secs {}", self.duration_secs)
                        },
                        self.not_sent(push),
                        tally.abandoned
                    );
                }
            }
            for (status, rejection) in &tally.rejected {
                let _ = write!(
                    out,
                    "\n  status {status}: {} pushes, the first answered {:?}",
                    rejection.count, rejection.first_body
                );
            }
            if let Some(first) = &tally.first_transport_error {
                let _ = write!(
                    out,
                    "\n  transport errors: {}, the first: {first}",
                    tally.transport_errors
                );
            }
        }
        for (kind, scrapes) in [("plain", &self.plain), ("gzip", &self.gzipped)] {
            for (i, scrape) in scrapes.iter().enumerate() {
                if !out.is_empty() {
                    out.push('\n');
                }
                let _ = write!(out, "scrape {kind} {}/{}: ", i + 1, scrapes.len());
                match scrape {
                    Ok(s) => {
                        let _ = write!(
                            out,
                            "status {} in {:.3} s (first byte {:.3} s), {:.1} MB{}, {} series",
                            s.status,
                            s.seconds,
                            s.first_byte_seconds,
                            megabytes(s.bytes as u64),
                            if s.gzipped {
                                format!(
                                    " gzip ({:.1} MB decoded)",
                                    megabytes(s.decoded_bytes as u64)
                                )
                            } else {
                                String::new()
                            },
                            s.series
                        );
                    }
                    Err(why) => {
                        let _ = write!(out, "failed: {why}");
                    }
                }
            }
        }
        if self.interrupted {
            out.push_str("\ninterrupted by a signal");
        }
        out
    }

    /// Groups never sent: not taken by any client before the stop.
    fn not_sent(&self, push: &PushPhase) -> u64 {
        let tally = &push.tally;
        (self.groups as u64).saturating_sub(
            tally.pushed + tally.rejected_count() + tally.transport_errors + tally.abandoned,
        )
    }

    fn json(&self) -> Json {
        let mut object = json!({
            "url": self.url,
            "method": self.method.as_str(),
            "gzip_bodies": self.gzip_bodies,
            "groups": self.groups,
            "series_per_group": self.series_per_group,
            "families": self.families,
            "clients": self.clients,
            "interrupted": self.interrupted,
        });
        let push_fields = match &self.push {
            Some(push) => {
                let tally = &push.tally;
                let pushed_series = tally.pushed * self.series_per_group as u64;
                #[allow(clippy::cast_precision_loss, reason = "a rate")]
                let (per_second, series_per_second) = (
                    tally.pushed as f64 / push.seconds,
                    pushed_series as f64 / push.seconds,
                );
                let non_2xx: serde_json::Map<String, Json> = tally
                    .rejected
                    .iter()
                    .map(|(status, r)| {
                        (
                            status.to_string(),
                            json!({"count": r.count, "first_body": r.first_body}),
                        )
                    })
                    .collect();
                json!({
                    "stopped_by": push.stop.as_str(),
                    "request_body_bytes": push.body_bytes,
                    "groups_pushed": tally.pushed,
                    "series_pushed": pushed_series,
                    "groups_rejected": tally.rejected_count(),
                    "groups_failed": tally.transport_errors,
                    "groups_abandoned": tally.abandoned,
                    "groups_not_sent": self.not_sent(push),
                    "push_seconds": number(push.seconds),
                    "pushes_per_second": number(per_second),
                    "series_per_second": number(series_per_second),
                    "push_latency_p50_seconds": number(AgentsSummary::quantile_of(&tally.latencies, 0.5)),
                    "push_latency_p99_seconds": number(AgentsSummary::quantile_of(&tally.latencies, 0.99)),
                    "push_latency_max_seconds": number(AgentsSummary::quantile_of(&tally.latencies, 1.0)),
                    "non_2xx": non_2xx,
                    "transport_errors": tally.transport_errors,
                    "first_transport_error": tally.first_transport_error,
                    "connections": tally.connections,
                })
            }
            None => json!({ "stopped_by": null, "groups_pushed": null, "series_pushed": null }),
        };
        let scrape_fields = |kind: &str, scrapes: &[Scrape]| {
            let list: Vec<Json> = scrapes
                .iter()
                .map(|scrape| match scrape {
                    Ok(s) => json!({
                        "status": s.status,
                        "seconds": number(s.seconds),
                        "first_byte_seconds": number(s.first_byte_seconds),
                        "bytes": s.bytes,
                        "gzipped": s.gzipped,
                        "decoded_bytes": s.decoded_bytes,
                        "series": s.series,
                    }),
                    Err(why) => json!({ "error": why }),
                })
                .collect();
            let last = scrapes.iter().rev().find_map(|s| s.as_ref().ok());
            json!({
                format!("scrapes_{kind}"): list,
                format!("scrape_{kind}_p50_seconds"): number(scrape_quantile(scrapes, 0.5)),
                format!("scrape_{kind}_max_seconds"): number(scrape_quantile(scrapes, 1.0)),
                format!("scrape_{kind}_bytes"): last.map(|s| s.bytes),
                format!("scrape_{kind}_decoded_bytes"): last.map(|s| s.decoded_bytes),
                format!("scrape_{kind}_series"): last.map(|s| s.series),
            })
        };
        for fields in [
            push_fields,
            scrape_fields("plain", &self.plain),
            scrape_fields("gzip", &self.gzipped),
        ] {
            if let (Json::Object(object), Json::Object(fields)) = (&mut object, fields) {
                object.extend(fields);
            }
        }
        object
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_body_is_valid_text_with_every_series_once() {
        for (n_series, n_families) in [(1000, 1), (1000, 3), (7, 7), (1, 1), (0, 1)] {
            let body = render_body(42, n_series, n_families);
            let families = tether_model::parse(body.as_bytes(), tether_model::Format::Text)
                .unwrap_or_else(|e| panic!("{n_series} x {n_families}: {e:?}\n{body}"));
            assert_eq!(
                families.len(),
                n_families.min(n_series),
                "{n_series} x {n_families}"
            );
            let mut seen: Vec<usize> = families
                .iter()
                .flat_map(|family| {
                    assert_eq!(family.metric_type, tether_model::MetricType::Gauge);
                    assert!(family.help.is_some());
                    family.series.iter().map(|series| {
                        let label = &series.labels[0];
                        assert_eq!(label.name, "series");
                        label.value.parse::<usize>().expect("a number")
                    })
                })
                .collect();
            seen.sort_unstable();
            assert_eq!(seen, (0..n_series).collect::<Vec<_>>());
        }
        assert!(render_body(1, 2, 1).starts_with(
            "# HELP loadgen_value A gauge pushed by tether loadgen.\n# TYPE loadgen_value gauge\nloadgen_value{series=\"0\"} "
        ));
        assert_ne!(
            render_body(1, 10, 1),
            render_body(2, 10, 1),
            "values differ by group"
        );
    }

    #[test]
    fn a_request_is_a_complete_http_1_1_push() {
        let target = parse_url("http://127.0.0.1:9091/prefix/").expect("a valid URL");
        let request = render_request(Method::Put, &target, 17, b"x 1\n", false);
        assert_eq!(
            &request[..],
            b"PUT /prefix/metrics/job/loadgen/instance/17 HTTP/1.1\r\nHost: 127.0.0.1:9091\r\nUser-Agent: tether-loadgen\r\nContent-Type: text/plain; version=0.0.4; charset=utf-8\r\nContent-Length: 4\r\n\r\nx 1\n"
        );
        let body = render_body(3, 50, 2);
        let compressed = gzip(body.as_bytes()).expect("gzip to memory");
        let request = render_request(Method::Post, &target, 3, &compressed, true);
        let text = String::from_utf8_lossy(&request);
        assert!(text.starts_with("POST /prefix/metrics/job/loadgen/instance/3 HTTP/1.1\r\n"));
        assert!(text.contains(&format!("Content-Length: {}\r\n", compressed.len())));
        assert!(text.contains("Content-Encoding: gzip\r\n\r\n"));
        assert!(request.ends_with(&compressed));
        let mut decoded = String::new();
        flate2::read::GzDecoder::new(&compressed[..])
            .read_to_string(&mut decoded)
            .expect("valid gzip");
        assert_eq!(decoded, body);
    }

    fn args(url: &str) -> PushArgs {
        PushArgs {
            url: url.to_owned(),
            groups: 10,
            series: 10,
            families: 1,
            clients: 2,
            method: Method::Put,
            gzip: false,
            duration_secs: 10,
            push_timeout_secs: 10,
            scrapes: 1,
            scrape_timeout_secs: 10,
            no_scrape: false,
            scrape_only: false,
            allow_remote: false,
            json: false,
        }
    }

    #[test]
    fn only_loopback_targets_and_bounded_loads() {
        assert!(validate(&args("http://127.0.0.1:9091")).is_ok());
        assert!(validate(&args("http://[::1]:9091")).is_ok());
        assert!(validate(&args("http://192.0.2.1:9091")).is_err());
        let mut remote = args("http://192.0.2.1:9091");
        remote.allow_remote = true;
        assert!(validate(&remote).is_ok());
        let loopback = "http://127.0.0.1:9091";
        let mut too_much = args(loopback);
        too_much.groups = MAX_GROUPS;
        too_much.series = MAX_SERIES_PER_GROUP;
        assert!(validate(&too_much).is_err());
        let mut no_clients = args(loopback);
        no_clients.clients = 0;
        assert!(validate(&no_clients).is_err());
        let mut families = args(loopback);
        families.families = 11;
        assert!(validate(&families).is_err());
        assert!(validate(&args("https://127.0.0.1:9091")).is_err());
    }

    #[test]
    fn rendering_keeps_every_group_in_order() {
        let mut gzipped = args("http://127.0.0.1:9091");
        gzipped.groups = 37;
        gzipped.gzip = true;
        let target = validate(&gzipped).expect("valid");
        let rendered = render_requests(&gzipped, &target).expect("rendered");
        assert_eq!(rendered.requests.len(), 37);
        let mut body_bytes = 0;
        for (group, request) in rendered.requests.iter().enumerate() {
            let line = format!("PUT /metrics/job/loadgen/instance/{group} HTTP/1.1\r\n");
            assert!(request.starts_with(line.as_bytes()), "group {group}");
            let head_len = request
                .windows(4)
                .position(|w| w == b"\r\n\r\n")
                .expect("a head")
                + 4;
            body_bytes += (request.len() - head_len) as u64;
        }
        assert_eq!(rendered.body_bytes, body_bytes);
    }

    #[test]
    fn error_bodies_are_quoted_short() {
        assert_eq!(quote(b"  bad line\n"), "bad line");
        let long = "é".repeat(MAX_QUOTED_CHARS + 5);
        let quoted = quote(long.as_bytes());
        assert_eq!(quoted.chars().count(), MAX_QUOTED_CHARS + 3);
        assert!(quoted.ends_with("..."));
    }
}
