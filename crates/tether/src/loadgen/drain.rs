//! `tether loadgen drain`: logplex batches POSTed to a Heroku drain, as
//! logplex sends them, for a bounded time; loopback only unless asked
//! otherwise.
//!
//! Every batch mixes what a Heroku app's drain carries: router lines
//! (most of them, with a few error codes), Heroku Postgres and dyno
//! runtime samples, instance-metric lines (base64 JSON of ten metrics in
//! Vector's model) and the app's own log lines. A set of distinct batch
//! bodies is rendered before the clock starts; each request gets its own
//! `Logplex-Frame-Id`, so none is taken for a retry. `--clients`
//! keep-alive connections each keep one batch in flight until
//! `--duration-secs`; then the summary: batches and lines sent, lines per
//! second, and the POST latency quantiles. SIGINT or SIGTERM stops the
//! run with the summary of what was done.

use std::collections::BTreeMap;
use std::io::Write;
use std::process::ExitCode;
use std::sync::Arc;
use std::time::{Duration, Instant};

use base64::Engine as _;
use clap::Args;
use serde_json::json;
use tokio_util::sync::CancellationToken;

use super::http::{Connection, Target, check_loopback, parse_url};

/// Most lines one batch may hold.
const MAX_LINES_PER_BATCH: usize = 100_000;
/// Most concurrent connections.
const MAX_CLIENTS: usize = 256;
/// Longest run that may be asked for.
const MAX_DURATION_SECS: u64 = 24 * 3600;
/// Distinct batch bodies rendered; requests cycle through them.
const DISTINCT_BATCHES: usize = 16;
/// Longest response body read.
const MAX_RESPONSE_BYTES: usize = 1 << 20;
/// Latencies kept for the quantiles; past it, the newest are dropped.
const MAX_LATENCY_SAMPLES: usize = 10_000_000;
/// The instance-metric prefix the gateway reads by default.
const PREFIX: &str = "crates-io-heroku-metrics:ingest";

#[derive(Debug, Args)]
pub(super) struct DrainArgs {
    /// The drain's URL: tether's HTTP listener, with the drain's path
    /// (`/drain` when none is given).
    #[arg(
        long,
        value_name = "URL",
        default_value = "http://127.0.0.1:9091/drain"
    )]
    gateway: String,
    /// The drain's password (user `drain`).
    #[arg(long, env = "TETHER_DRAIN_PASSWORD", hide_env_values = true)]
    password: Option<String>,
    /// Lines in each batch.
    #[arg(long, default_value_t = 500)]
    lines_per_batch: usize,
    /// Connections, each with one batch in flight.
    #[arg(long, default_value_t = 2)]
    clients: usize,
    /// How long the run lasts.
    #[arg(long, default_value_t = 10)]
    duration_secs: u64,
    /// Allow a drain that is not on this machine's loopback.
    #[arg(long)]
    allow_remote: bool,
    /// Print the summary as one JSON object.
    #[arg(long)]
    json: bool,
}

pub(super) fn run(args: &DrainArgs) -> ExitCode {
    let target = match validate(args) {
        Ok(target) => target,
        Err(message) => {
            crate::setup::report_error(&format!("tether loadgen drain: {message}"));
            return ExitCode::from(2);
        }
    };
    let bodies: Arc<Vec<Vec<u8>>> = Arc::new(
        (0..DISTINCT_BATCHES)
            .map(|batch| render_batch(batch, args.lines_per_batch))
            .collect(),
    );
    let auth = args.password.as_ref().map(|password| {
        format!(
            "Authorization: Basic {}\r\n",
            base64::engine::general_purpose::STANDARD.encode(format!("drain:{password}"))
        )
    });
    let summary = super::until_signal("tether loadgen drain", |stop| async move {
        drive(args, &target, bodies, auth.unwrap_or_default(), &stop).await
    });
    let Some(summary) = summary else {
        return ExitCode::FAILURE;
    };
    let mut stdout = std::io::stdout().lock();
    let _ = if args.json {
        writeln!(stdout, "{}", summary.json(args))
    } else {
        writeln!(stdout, "{}", summary.text(args))
    };
    if summary.failures.is_empty() && summary.batches > 0 {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    }
}

fn validate(args: &DrainArgs) -> Result<Target, String> {
    if args.lines_per_batch == 0 || args.lines_per_batch > MAX_LINES_PER_BATCH {
        return Err(format!(
            "--lines-per-batch must be between 1 and {MAX_LINES_PER_BATCH}"
        ));
    }
    if args.clients == 0 || args.clients > MAX_CLIENTS {
        return Err(format!("--clients must be between 1 and {MAX_CLIENTS}"));
    }
    if args.duration_secs == 0 || args.duration_secs > MAX_DURATION_SECS {
        return Err(format!(
            "--duration-secs must be between 1 and {MAX_DURATION_SECS}"
        ));
    }
    let mut target = parse_url(&args.gateway)?;
    if target.base_path.is_empty() {
        target.base_path = "/drain".to_owned();
    }
    check_loopback(&target, args.allow_remote)?;
    Ok(target)
}

/// One syslog message as logplex frames it: `<len> <message>\n`.
fn push_frame(body: &mut Vec<u8>, message: &str) {
    body.extend_from_slice(format!("{} {message}\n", message.len() + 1).as_bytes());
}

/// Batch `batch` of `n_lines` lines: in every ten, six router lines, one
/// Postgres line, one dyno line, one instance-metric line and one app log
/// line.
fn render_batch(batch: usize, n_lines: usize) -> Vec<u8> {
    let mut body = Vec::with_capacity(n_lines * 200);
    let time = "2026-12-02T10:00:00.000000+00:00";
    for i in 0..n_lines {
        let n = batch * n_lines + i;
        let message = match i % 10 {
            0..=5 => {
                let (at, status, code) = match n % 50 {
                    0 => ("error", 503, " code=H12 desc=\"Request timeout\""),
                    1 => (
                        "error",
                        503,
                        " code=H13 desc=\"Connection closed without response\"",
                    ),
                    2..=4 => ("info", 404, ""),
                    5 => ("info", 304, ""),
                    _ => ("info", 200, ""),
                };
                format!(
                    "<158>1 {time} host heroku router - at={at}{code} method=GET path=\"/api/v1/crates/c{n}\" host=crates.io request_id=9a1b{n:08x}-0d4e-4b6f-9d0e-7c1c2f1c9a11 fwd=\"203.0.113.{}\" dyno=web.{} connect=0ms service={}ms status={status} bytes={} protocol=https",
                    n % 250,
                    n % 4 + 1,
                    n % 900 + 1,
                    n % 9000 + 100
                )
            }
            6 => format!(
                "<134>1 {time} host app heroku-postgres - source=DATABASE addon=postgresql-opaque-12345 sample#current_transaction={n} sample#db_size={}bytes sample#tables=12 sample#active-connections={} sample#waiting-connections=0 sample#index-cache-hit-rate=0.99625 sample#table-cache-hit-rate=0.99889 sample#load-avg-1m=0.3575 sample#load-avg-5m=0.405 sample#load-avg-15m=0.4125 sample#read-iops=302.48 sample#write-iops=12.35 sample#memory-total=31328356kB sample#memory-free=3786332.0kB sample#memory-cached=24589220kB sample#wal-percentage-used=0.0772",
                147_391_814_791u64 + n as u64,
                n % 50
            ),
            7 => format!(
                "<45>1 {time} host heroku web.{} - source=web.{} dyno=heroku.2808254.d97d0ea7-cf3d-411b-b453-d2943a50b456 sample#memory_total={}.85MB sample#memory_rss=150.19MB sample#memory_cache=4.66MB sample#memory_swap=0.00MB sample#memory_pgpgin=50196pages sample#memory_pgpgout=11611pages sample#memory_quota=512.00MB",
                n % 4 + 1,
                n % 4 + 1,
                100 + n % 50
            ),
            8 => format!(
                "<190>1 {time} host app web.{} - {PREFIX} {}",
                n % 4 + 1,
                instance_metrics(n)
            ),
            _ => format!(
                "<190>1 {time} host app web.{} - Started GET \"/api/v1/crates/c{n}\" for 203.0.113.9 at 2026-12-02 10:00:00 +0000",
                n % 4 + 1
            ),
        };
        push_frame(&mut body, &message);
    }
    body
}

/// Ten metrics of the kinds an instance sends, as base64 JSON.
#[allow(clippy::cast_precision_loss, reason = "small counts")]
fn instance_metrics(n: usize) -> String {
    let v = n as f64;
    let metrics = json!([
        {"metric": {"name": "http_requests", "kind": "incremental", "counter": {"value": 3.0}, "tags": {"endpoint": "search"}}},
        {"metric": {"name": "http_requests", "kind": "incremental", "counter": {"value": 1.0}, "tags": {"endpoint": "download"}}},
        {"metric": {"name": "in_flight_requests", "kind": "absolute", "gauge": {"value": v % 17.0}}},
        {"metric": {"name": "db_pool_used", "namespace": "cratesio", "kind": "absolute", "gauge": {"value": v % 10.0}, "tags": {"pool": "primary"}}},
        {"metric": {"name": "db_pool_used", "namespace": "cratesio", "kind": "absolute", "gauge": {"value": v % 5.0}, "tags": {"pool": "replica"}}},
        {"metric": {"name": "background_jobs", "kind": "absolute", "gauge": {"value": v % 100.0}, "tags": {"queue": ["default"]}}},
        {"metric": {"name": "response_time_seconds", "kind": "absolute", "tags": {"endpoint": "search"},
            "aggregated_histogram": {"buckets": [{"upper_limit": 0.01, "count": 5}, {"upper_limit": 0.1, "count": 12}, {"upper_limit": 1.0, "count": 2}], "count": 20, "sum": v / 100.0}}},
        {"metric": {"name": "render_seconds", "kind": "incremental",
            "distribution": {"samples": [{"value": 0.004, "rate": 2}, {"value": 0.2, "rate": 1}], "statistic": "histogram"}}},
        {"metric": {"name": "query_seconds", "kind": "absolute",
            "aggregated_summary": {"quantiles": [{"quantile": 0.5, "value": 0.01}, {"quantile": 0.99, "value": 0.2}], "count": 100, "sum": 1.5}}},
        {"metric": {"name": "active_users", "kind": "incremental", "set": {"values": [format!("u{}", n % 20)]}}}
    ]);
    base64::engine::general_purpose::STANDARD.encode(metrics.to_string())
}

/// What a run did.
#[derive(Debug, Default)]
struct Summary {
    batches: u64,
    lines: u64,
    bytes: u64,
    elapsed: Duration,
    latencies: Vec<f64>,
    /// Answers other than 2xx, and transport errors, by what they were,
    /// with the first body.
    failures: BTreeMap<String, (u64, String)>,
    interrupted: bool,
}

impl Summary {
    fn merge(&mut self, other: Summary) {
        self.batches += other.batches;
        self.lines += other.lines;
        self.bytes += other.bytes;
        let room = MAX_LATENCY_SAMPLES.saturating_sub(self.latencies.len());
        self.latencies
            .extend(other.latencies.into_iter().take(room));
        for (what, (n, first)) in other.failures {
            let entry = self.failures.entry(what).or_insert((0, first));
            entry.0 += n;
        }
    }

    fn fail(&mut self, what: String, body: &str) {
        let entry = self
            .failures
            .entry(what)
            .or_insert_with(|| (0, body.chars().take(300).collect()));
        entry.0 += 1;
    }

    fn quantile(&self, q: f64) -> f64 {
        if self.latencies.is_empty() {
            return f64::NAN;
        }
        #[allow(
            clippy::cast_possible_truncation,
            clippy::cast_sign_loss,
            clippy::cast_precision_loss,
            reason = "an index within the sample count"
        )]
        let index = ((self.latencies.len() - 1) as f64 * q).round() as usize;
        self.latencies[index]
    }

    #[allow(clippy::cast_precision_loss, reason = "counts far below 2^53")]
    fn lines_per_sec(&self) -> f64 {
        self.lines as f64 / self.elapsed.as_secs_f64().max(1e-9)
    }

    fn text(&self, args: &DrainArgs) -> String {
        let mut out = format!(
            "drain {}: {} batches of {} lines ({} lines, {:.1} MB) in {:.2} s: {:.0} lines/s; POST p50 {:.2} ms, p90 {:.2} ms, p99 {:.2} ms, max {:.2} ms",
            args.gateway,
            self.batches,
            args.lines_per_batch,
            self.lines,
            self.bytes as f64 / 1e6,
            self.elapsed.as_secs_f64(),
            self.lines_per_sec(),
            self.quantile(0.5) * 1e3,
            self.quantile(0.9) * 1e3,
            self.quantile(0.99) * 1e3,
            self.latencies.last().copied().unwrap_or(f64::NAN) * 1e3,
        );
        if self.interrupted {
            out.push_str("; stopped by a signal");
        }
        for (what, (n, first)) in &self.failures {
            out.push_str(&format!("\n  {n} failed: {what}: {first}"));
        }
        out
    }

    fn json(&self, args: &DrainArgs) -> serde_json::Value {
        let ms = |s: f64| json!((s * 1e6).round() / 1e3);
        let failures: serde_json::Map<String, serde_json::Value> = self
            .failures
            .iter()
            .map(|(what, (n, first))| (what.clone(), json!({"count": n, "first_body": first})))
            .collect();
        json!({
            "gateway": args.gateway,
            "lines_per_batch": args.lines_per_batch,
            "clients": args.clients,
            "batches": self.batches,
            "lines": self.lines,
            "bytes": self.bytes,
            "seconds": self.elapsed.as_secs_f64(),
            "lines_per_sec": self.lines_per_sec().round(),
            "post_ms": {"p50": ms(self.quantile(0.5)), "p90": ms(self.quantile(0.9)),
                "p99": ms(self.quantile(0.99)), "max": ms(self.latencies.last().copied().unwrap_or(f64::NAN))},
            "failures": failures,
            "interrupted": self.interrupted,
        })
    }
}

async fn drive(
    args: &DrainArgs,
    target: &Target,
    bodies: Arc<Vec<Vec<u8>>>,
    auth: String,
    stop: &CancellationToken,
) -> Summary {
    let started = Instant::now();
    let deadline = tokio::time::Instant::now() + Duration::from_secs(args.duration_secs);
    let head = Arc::new(format!(
        "POST {} HTTP/1.1\r\nHost: {}\r\nContent-Type: application/logplex-1\r\nUser-Agent: Logplex/tether-loadgen\r\nLogplex-Msg-Count: {}\r\nLogplex-Drain-Token: d.5e7c1a52-0000-4000-8000-000000000001\r\n{auth}",
        target.base_path, target.authority, args.lines_per_batch
    ));
    let mut tasks = Vec::with_capacity(args.clients);
    for client in 0..args.clients {
        let bodies = Arc::clone(&bodies);
        let head = Arc::clone(&head);
        let authority = target.authority.clone();
        let stop = stop.clone();
        let lines = args.lines_per_batch as u64;
        tasks.push(tokio::spawn(async move {
            let mut summary = Summary::default();
            let mut connection: Option<Connection> = None;
            let mut n: u64 = 0;
            while tokio::time::Instant::now() < deadline && !stop.is_cancelled() {
                let body = &bodies[(client + n as usize) % bodies.len()];
                let mut request = format!(
                    "{head}Logplex-Frame-Id: {client:04x}-{n:016x}\r\nContent-Length: {}\r\n\r\n",
                    body.len()
                )
                .into_bytes();
                request.extend_from_slice(body);
                n += 1;
                let mut conn = match connection.take() {
                    Some(conn) => conn,
                    None => match Connection::connect(&authority).await {
                        Ok(conn) => conn,
                        Err(failure) => {
                            summary.fail("connect".to_owned(), &failure.to_string());
                            break;
                        }
                    },
                };
                let sent = Instant::now();
                let answer = tokio::select! {
                    () = stop.cancelled() => break,
                    answer = conn.exchange(&request, MAX_RESPONSE_BYTES) => answer,
                };
                match answer {
                    Ok(response) => {
                        let latency = sent.elapsed().as_secs_f64();
                        if (200..300).contains(&response.head.status) {
                            summary.batches += 1;
                            summary.lines += lines;
                            summary.bytes += body.len() as u64;
                            if summary.latencies.len() < MAX_LATENCY_SAMPLES {
                                summary.latencies.push(latency);
                            }
                        } else {
                            summary.fail(
                                format!("status {}", response.head.status),
                                &String::from_utf8_lossy(&response.body),
                            );
                        }
                        if !response.head.close {
                            connection = Some(conn);
                        }
                    }
                    Err(failure) => summary.fail("transport".to_owned(), &failure.to_string()),
                }
            }
            summary
        }));
    }
    let mut summary = Summary::default();
    for task in tasks {
        if let Ok(part) = task.await {
            summary.merge(part);
        }
    }
    summary.elapsed = started.elapsed();
    summary.interrupted = stop.is_cancelled();
    summary.latencies.sort_by(f64::total_cmp);
    summary
}
