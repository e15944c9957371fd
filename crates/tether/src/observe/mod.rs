//! `tether observe [ADDR]`: a terminal UI on a metric event stream (tether's
//! own exporter or any `metrics-exporter-tcp` app), or with `--once` one
//! snapshot of it as JSON or text, for scripts.
//!
//! `state.rs` folds events into series, `ui.rs` draws them and handles
//! keys, `client.rs` connects, decodes and reconnects. This file holds the
//! flags, the UI loop and the snapshot output.

mod client;
mod state;
#[cfg(test)]
mod test_events;
mod ui;

use std::io::{IsTerminal, Write};
use std::process::ExitCode;
use std::time::{Duration, Instant};

use anyhow::{Context, anyhow, bail};
use clap::{Args, ValueEnum};
use crossterm::event::{self, Event as TermEvent};
use ratatui::DefaultTerminal;
use serde_json::{Map, Value};
use tokio::sync::mpsc;
use tokio::sync::mpsc::error::TryRecvError;
use tokio_util::sync::CancellationToken;

use self::client::{SnapshotConfig, StreamConfig, Update};
use self::state::{Entry, Limits, Series, Store};
use self::ui::{Action, Status, View};

/// Where the stream is read from unless told otherwise: the default
/// address of `metrics-exporter-tcp` and of tether's exporter, on loopback.
const DEFAULT_ADDR: &str = "127.0.0.1:5000";

/// With `--once`: how long the stream must be quiet after the last event
/// before the replay counts as complete.
const DEFAULT_SETTLE_MS: u64 = 200;

/// With `--once`: the most time for connecting and reading.
const DEFAULT_TIMEOUT_MS: u64 = 5000;

/// How often rates, events/s and sparklines advance.
const TICK_INTERVAL: Duration = Duration::from_secs(1);

/// The longest time between two redraws while nothing is typed.
const FRAME_INTERVAL: Duration = Duration::from_millis(100);

/// Batches of events queued between the connection task and the UI; when
/// full, the connection task waits (and the server's per-client queue
/// takes the overflow, by its own counted policy).
const UPDATE_QUEUE_BATCHES: usize = 64;

/// The most batches taken from the queue before the next redraw, so that
/// a flood does not starve the keys.
const MAX_BATCHES_PER_FRAME: usize = UPDATE_QUEUE_BATCHES;

/// Exit status when the stream cannot be read (or the UI cannot start).
const EXIT_FAILURE: u8 = 1;
/// Exit status for flags that cannot work (EX_USAGE).
const EXIT_USAGE: u8 = 64;

#[derive(Debug, Args)]
pub(crate) struct ObserveArgs {
    /// The event stream server, as HOST:PORT.
    #[arg(value_name = "ADDR", default_value = DEFAULT_ADDR, value_parser = parse_addr)]
    addr: String,

    /// Print one snapshot of the current values and exit, instead of the UI:
    /// connect, read the server's replay (metadata and current values) until
    /// the stream is quiet for --settle-ms, print it. Exits 1 when it cannot
    /// connect or no event arrives within --timeout-ms.
    #[arg(long)]
    once: bool,

    /// The output format of --once: one line per series, or a JSON array.
    #[arg(long, value_enum, default_value_t = OutputFormat::Text, requires = "once")]
    format: OutputFormat,

    /// With --once: how long the stream must stay quiet after an event
    /// before the snapshot is printed.
    #[arg(long, env = "TETHER_SETTLE_MS", value_name = "MS", default_value_t = DEFAULT_SETTLE_MS)]
    settle_ms: u64,

    /// With --once: the most time for connecting and reading; when no
    /// event came by then, exit 1.
    #[arg(long, env = "TETHER_TIMEOUT_MS", value_name = "MS", default_value_t = DEFAULT_TIMEOUT_MS)]
    timeout_ms: u64,

    /// Most series tracked; events of further series are dropped and
    /// counted on the status line.
    #[arg(long, env = "TETHER_MAX_SERIES", value_name = "N", default_value_t = state::DEFAULT_MAX_SERIES)]
    max_series: usize,

    /// Samples kept per histogram for p50, p99 and max (the most recent);
    /// count and sum cover every sample.
    #[arg(
        long,
        env = "TETHER_HISTOGRAM_WINDOW_SAMPLES",
        value_name = "N",
        default_value_t = state::DEFAULT_HISTOGRAM_WINDOW_SAMPLES
    )]
    histogram_window_samples: usize,

    /// Longest event accepted; a longer frame ends the connection (the UI
    /// reconnects, --once exits 1).
    #[arg(
        long,
        env = "TETHER_MAX_FRAME_BYTES",
        value_name = "BYTES",
        default_value_t = client::DEFAULT_MAX_FRAME_BYTES
    )]
    max_frame_bytes: usize,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
enum OutputFormat {
    /// One line per series: `name{labels} kind values [unit=..] [# description]`.
    Text,
    /// A JSON array of objects, sorted by name then labels.
    Json,
}

/// Accepts `HOST:PORT` with a numeric port; the host is resolved on connect.
fn parse_addr(addr: &str) -> Result<String, String> {
    match addr.rsplit_once(':') {
        Some((host, port)) if !host.is_empty() && port.parse::<u16>().is_ok() => {
            Ok(addr.to_owned())
        }
        _ => Err(format!("expected HOST:PORT, such as {DEFAULT_ADDR}")),
    }
}

impl ObserveArgs {
    fn limits(&self) -> anyhow::Result<Limits> {
        if self.max_series == 0 {
            bail!("--max-series must be at least 1");
        }
        if self.histogram_window_samples == 0 {
            bail!("--histogram-window-samples must be at least 1");
        }
        if self.max_frame_bytes == 0 {
            bail!("--max-frame-bytes must be at least 1");
        }
        if self.timeout_ms == 0 {
            bail!("--timeout-ms must be at least 1");
        }
        Ok(Limits {
            max_series: self.max_series,
            histogram_window_samples: self.histogram_window_samples,
        })
    }
}

pub(crate) fn run(args: &ObserveArgs) -> ExitCode {
    let limits = match args.limits() {
        Ok(limits) => limits,
        Err(error) => {
            crate::setup::report_error(&format!("tether observe: {error:#}"));
            return ExitCode::from(EXIT_USAGE);
        }
    };
    // One worker: the connection task is all that runs on it.
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()
    {
        Ok(runtime) => runtime,
        Err(error) => {
            crate::setup::report_error(&format!(
                "tether observe: cannot start the async runtime: {error}"
            ));
            return ExitCode::from(EXIT_FAILURE);
        }
    };
    let result = if args.once {
        once(&runtime, args, limits)
    } else {
        interactive(&runtime, args, limits)
    };
    runtime.shutdown_timeout(Duration::from_millis(500));
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(error) => {
            crate::setup::report_error(&format!("tether observe: {error:#}"));
            ExitCode::from(EXIT_FAILURE)
        }
    }
}

/// `--once`: read the replay, print it, report drops on standard error.
fn once(
    runtime: &tokio::runtime::Runtime,
    args: &ObserveArgs,
    limits: Limits,
) -> anyhow::Result<()> {
    let config = SnapshotConfig {
        addr: args.addr.clone(),
        limits,
        max_frame_bytes: args.max_frame_bytes,
        settle: Duration::from_millis(args.settle_ms),
        timeout: Duration::from_millis(args.timeout_ms),
    };
    let store = runtime.block_on(client::read_snapshot(&config))?;
    let mut out = Vec::new();
    write_snapshot(&store, args.format, &mut out);
    // A closed pipe (`| head`) is not a failure of the observer.
    let _ = std::io::stdout().lock().write_all(&out);
    let dropped = store.dropped();
    if dropped.series() > 0 {
        let plus = if dropped.series_saturated { "+" } else { "" };
        crate::setup::report_error(&format!(
            "tether observe: {}{plus} series beyond --max-series {} were left out",
            dropped.series(),
            limits.max_series
        ));
    }
    if store.type_changes() > 0 {
        crate::setup::report_error(&format!(
            "tether observe: {} events that changed a metric's type were left out",
            store.type_changes()
        ));
    }
    Ok(())
}

/// Writes every series of `store`, sorted by name then labels.
fn write_snapshot(store: &Store, format: OutputFormat, out: &mut Vec<u8>) {
    match format {
        OutputFormat::Json => {
            // One object per line, its fields in a fixed order.
            out.push(b'[');
            for (i, entry) in store.series().enumerate() {
                out.extend_from_slice(if i == 0 { b"\n  " } else { b",\n  " });
                write_json_object(out, &series_json(&entry));
            }
            out.extend_from_slice(if store.n_series() == 0 {
                b"]\n"
            } else {
                b"\n]\n"
            });
        }
        OutputFormat::Text => {
            for entry in store.series() {
                out.extend_from_slice(series_text(&entry).as_bytes());
                out.push(b'\n');
            }
        }
    }
}

/// `{name, kind, labels, unit, description}` and the values of the kind:
/// `total`; `value`; or `count`, `sum`, `p50`, `p99`, `max`. Values that
/// are not finite (or quantiles without samples) are `null`.
fn series_json(entry: &Entry<'_>) -> Vec<(&'static str, Value)> {
    let Entry {
        key,
        series,
        metadata,
    } = entry;
    let labels: Map<String, Value> = key
        .labels()
        .iter()
        .map(|(name, value)| (name.clone(), Value::from(value.as_str())))
        .collect();
    let mut fields = vec![
        ("name", Value::from(key.name())),
        ("kind", Value::from(series.kind().as_str())),
        ("labels", Value::Object(labels)),
        (
            "unit",
            Value::from(metadata.and_then(|metadata| metadata.unit.as_deref())),
        ),
        (
            "description",
            Value::from(metadata.and_then(|metadata| metadata.help.as_deref())),
        ),
    ];
    match series {
        Series::Counter(counter) => fields.push(("total", Value::from(counter.total))),
        Series::Gauge(gauge) => fields.push(("value", Value::from(gauge.value))),
        Series::Histogram(histogram) => {
            let summary = histogram.summary();
            fields.extend([
                ("count", Value::from(summary.count)),
                ("sum", Value::from(summary.sum)),
                ("p50", Value::from(summary.p50)),
                ("p99", Value::from(summary.p99)),
                ("max", Value::from(summary.max)),
            ]);
        }
    }
    fields
}

/// Writes `fields` as one JSON object, in their order.
fn write_json_object(out: &mut Vec<u8>, fields: &[(&str, Value)]) {
    out.push(b'{');
    for (i, (name, value)) in fields.iter().enumerate() {
        if i > 0 {
            out.push(b',');
        }
        // Serializing a string or a `Value` into a `Vec` cannot fail: the
        // `Vec` grows, and a `Value`'s map keys are strings.
        let _ = serde_json::to_writer(&mut *out, name);
        out.push(b':');
        let _ = serde_json::to_writer(&mut *out, value);
    }
    out.push(b'}');
}

/// `name{labels} kind values [unit=U] [# description]`, on one line.
fn series_text(entry: &Entry<'_>) -> String {
    let Entry {
        key,
        series,
        metadata,
    } = entry;
    let mut line = format!("{key} {} ", series.kind().as_str());
    match series {
        Series::Counter(counter) => line.push_str(&format!("total={}", counter.total)),
        Series::Gauge(gauge) => line.push_str(&format!("value={}", exact_number(gauge.value))),
        Series::Histogram(histogram) => {
            let summary = histogram.summary();
            let show = |value: Option<f64>| value.map_or_else(|| "-".to_owned(), exact_number);
            line.push_str(&format!(
                "count={} sum={} p50={} p99={} max={}",
                summary.count,
                exact_number(summary.sum),
                show(summary.p50),
                show(summary.p99),
                show(summary.max)
            ));
        }
    }
    if let Some(metadata) = metadata {
        if let Some(unit) = &metadata.unit {
            line.push_str(&format!(" unit={unit}"));
        }
        if let Some(description) = &metadata.help {
            line.push_str(" # ");
            line.push_str(&description.replace('\\', "\\\\").replace('\n', "\\n"));
        }
    }
    escape_controls(&line)
}

/// `line` with every control character written as `\u{hex}`, so that
/// what a server sends cannot drive the terminal of whoever reads it.
fn escape_controls(line: &str) -> String {
    let mut out = String::with_capacity(line.len());
    for c in line.chars() {
        if c.is_control() {
            out.push_str(&format!("\\u{{{:x}}}", u32::from(c)));
        } else {
            out.push(c);
        }
    }
    out
}

/// The shortest text that reads back as the same `f64`, with Prometheus'
/// spelling of infinities.
fn exact_number(value: f64) -> String {
    if value.is_infinite() {
        return if value > 0.0 { "+Inf" } else { "-Inf" }.to_owned();
    }
    value.to_string()
}

/// The terminal UI until `q` or Ctrl-C.
fn interactive(
    runtime: &tokio::runtime::Runtime,
    args: &ObserveArgs,
    limits: Limits,
) -> anyhow::Result<()> {
    if !std::io::stdout().is_terminal() {
        bail!("standard output is not a terminal: for scripts, use --once --format json|text");
    }
    let (updates_tx, updates_rx) = mpsc::channel(UPDATE_QUEUE_BATCHES);
    let shutdown = CancellationToken::new();
    let config = StreamConfig {
        addr: args.addr.clone(),
        max_frame_bytes: args.max_frame_bytes,
        connect_timeout: client::CONNECT_TIMEOUT,
        initial_backoff: client::INITIAL_BACKOFF,
        max_backoff: client::MAX_BACKOFF,
    };
    runtime.spawn(client::stream_updates(config, updates_tx, shutdown.clone()));
    // `try_init` also installs a panic hook that restores the terminal.
    let result = match ratatui::try_init() {
        Ok(mut terminal) => ui_loop(&mut terminal, updates_rx, &args.addr, limits),
        Err(error) => Err(anyhow!(error).context("cannot set up the terminal")),
    };
    ratatui::restore();
    shutdown.cancel();
    result
}

fn ui_loop(
    terminal: &mut DefaultTerminal,
    mut updates: mpsc::Receiver<Update>,
    addr: &str,
    limits: Limits,
) -> anyhow::Result<()> {
    let mut store = Store::new(limits);
    let mut view = View::new(addr);
    let mut next_tick = Instant::now();
    loop {
        for _ in 0..MAX_BATCHES_PER_FRAME {
            match updates.try_recv() {
                Ok(update) => apply_update(&mut store, &mut view, update),
                Err(TryRecvError::Empty) => break,
                Err(TryRecvError::Disconnected) => bail!("the connection task stopped"),
            }
        }
        let now = Instant::now();
        if now >= next_tick {
            store.tick(now);
            next_tick = now + TICK_INTERVAL;
        }
        terminal
            .draw(|frame| ui::draw(frame, &store, &mut view))
            .context("cannot draw on the terminal")?;
        let wait = FRAME_INTERVAL.min(next_tick.saturating_duration_since(Instant::now()));
        if event::poll(wait).context("cannot read the keyboard")? {
            // Every key already typed, before the next redraw.
            loop {
                if let TermEvent::Key(key) = event::read().context("cannot read the keyboard")?
                    && view.on_key(key) == Action::Quit
                {
                    return Ok(());
                }
                if !event::poll(Duration::ZERO).context("cannot read the keyboard")? {
                    break;
                }
            }
        }
    }
}

/// Folds one message of the connection task into what is shown. A new
/// connection keeps what the last one showed: the server's replay of
/// metadata and current values is folded on top (see
/// `tether_proto::StreamFold::reconnected`).
fn apply_update(store: &mut Store, view: &mut View, update: Update) {
    match update {
        Update::Connecting => view.set_status(Status::Connecting),
        Update::Connected => {
            store.connected();
            view.set_status(Status::Connected);
        }
        Update::Events(events) => {
            for event in events {
                store.apply(event);
            }
        }
        Update::Disconnected { error, retry_in } => {
            view.set_status(Status::Reconnecting { retry_in, error });
        }
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;
    use tether_proto::{Event, EventMetadata, EventMetricType, Operation};

    use super::*;
    use crate::observe::test_events::metric;

    fn sample_store() -> Store {
        let mut store = Store::new(Limits::default());
        for event in [
            Event::from(EventMetadata {
                name: "requests_total".to_owned(),
                metric_type: EventMetricType::Counter as i32,
                unit: Some("count".to_owned()),
                description: Some("Requests\nserved.".to_owned()),
            }),
            metric(
                "requests_total",
                &[("method", "put")],
                Operation::SetCounter(2),
            ),
            metric(
                "requests_total",
                &[("method", "get")],
                Operation::IncrementCounter(7),
            ),
            metric("queue_depth", &[], Operation::SetGauge(2.5)),
            metric(
                "queue_depth",
                &[("q", "\"x\"")],
                Operation::SetGauge(f64::INFINITY),
            ),
            metric("latency_seconds", &[], Operation::RecordHistogram(1.0)),
            metric("latency_seconds", &[], Operation::RecordHistogram(3.0)),
        ] {
            store.apply(event);
        }
        store
    }

    #[test]
    fn json_snapshots_are_sorted_and_carry_each_kind_s_values() {
        let mut out = Vec::new();
        write_snapshot(&sample_store(), OutputFormat::Json, &mut out);
        let value: Value = serde_json::from_slice(&out).expect("valid JSON");
        let expected = json!([
            {"name": "latency_seconds", "kind": "histogram", "labels": {}, "unit": null,
             "description": null, "count": 2, "sum": 4.0, "p50": 1.0, "p99": 3.0, "max": 3.0},
            {"name": "queue_depth", "kind": "gauge", "labels": {}, "unit": null,
             "description": null, "value": 2.5},
            {"name": "queue_depth", "kind": "gauge", "labels": {"q": "\"x\""}, "unit": null,
             "description": null, "value": null},
            {"name": "requests_total", "kind": "counter", "labels": {"method": "get"},
             "unit": "count", "description": "Requests\nserved.", "total": 7},
            {"name": "requests_total", "kind": "counter", "labels": {"method": "put"},
             "unit": "count", "description": "Requests\nserved.", "total": 2},
        ]);
        assert_eq!(value, expected);
        // One series per line, fields in the documented order.
        let text = String::from_utf8(out).expect("UTF-8");
        let lines: Vec<&str> = text.lines().collect();
        assert_eq!(lines.len(), 7, "{text}");
        assert_eq!(
            lines[2],
            r#"  {"name":"queue_depth","kind":"gauge","labels":{},"unit":null,"description":null,"value":2.5},"#
        );
    }

    #[test]
    fn text_snapshots_are_one_line_per_series() {
        let mut out = Vec::new();
        write_snapshot(&sample_store(), OutputFormat::Text, &mut out);
        let text = String::from_utf8(out).expect("UTF-8");
        assert_eq!(
            text,
            "latency_seconds histogram count=2 sum=4 p50=1 p99=3 max=3\n\
             queue_depth gauge value=2.5\n\
             queue_depth{q=\"\\\"x\\\"\"} gauge value=+Inf\n\
             requests_total{method=\"get\"} counter total=7 unit=count # Requests\\nserved.\n\
             requests_total{method=\"put\"} counter total=2 unit=count # Requests\\nserved.\n"
        );
        let mut empty = Vec::new();
        write_snapshot(
            &Store::new(Limits::default()),
            OutputFormat::Json,
            &mut empty,
        );
        assert_eq!(empty, b"[]\n");
    }

    #[test]
    fn text_snapshots_escape_control_characters() {
        let mut store = Store::new(Limits::default());
        store.apply(metric(
            "a\u{1b}[2J",
            &[("l", "\t")],
            Operation::SetGauge(1.0),
        ));
        let mut out = Vec::new();
        write_snapshot(&store, OutputFormat::Text, &mut out);
        assert_eq!(out, b"a\\u{1b}[2J{l=\"\\u{9}\"} gauge value=1\n");
    }

    #[test]
    fn addresses_need_a_host_and_a_numeric_port() {
        for good in ["127.0.0.1:5000", "localhost:1", "[::1]:5000"] {
            assert_eq!(parse_addr(good), Ok(good.to_owned()));
        }
        for bad in ["127.0.0.1", ":5000", "host:port", "host:70000", ""] {
            assert!(parse_addr(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn a_new_connection_keeps_what_the_old_one_showed() {
        let mut store = Store::new(Limits::default());
        let mut view = View::new("a:1");
        apply_update(&mut store, &mut view, Update::Connected);
        apply_update(
            &mut store,
            &mut view,
            Update::Events(vec![metric("old", &[], Operation::IncrementCounter(1))]),
        );
        apply_update(
            &mut store,
            &mut view,
            Update::Disconnected {
                error: "the server closed the connection".to_owned(),
                retry_in: Duration::from_millis(100),
            },
        );
        // While disconnected, the last values stay on screen.
        assert_eq!(store.n_series(), 1);
        apply_update(&mut store, &mut view, Update::Connecting);
        apply_update(&mut store, &mut view, Update::Connected);
        assert_eq!(store.n_series(), 1);
        apply_update(
            &mut store,
            &mut view,
            Update::Events(vec![
                metric("new", &[], Operation::SetCounter(5)),
                metric("old", &[], Operation::IncrementCounter(2)),
            ]),
        );
        let shown: Vec<String> = store
            .series()
            .map(|entry| match entry.series {
                Series::Counter(counter) => format!("{} {}", entry.key, counter.total),
                other => panic!("{other:?}"),
            })
            .collect();
        // Increments continue from the kept total.
        assert_eq!(shown, ["new 5", "old 3"]);
    }
}
