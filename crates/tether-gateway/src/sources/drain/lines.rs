//! One batch's lines into updates of the drain's series: each message's
//! syslog header read, then the message handed to the parser its kind
//! calls for (instance metrics, an add-on's or a dyno's samples, a router
//! request) and its result turned into [`Update`]s. Everything here is a
//! pure function of the body; a bad line is counted by reason and the
//! rest of the batch read on.

use std::borrow::Cow;

use tether_drain::{
    LogplexLimits, Statistic, SyslogMessage, VectorKind, VectorLimits, VectorMetric, VectorValue,
    logplex_frames, parse_router, parse_samples, parse_syslog, parse_vector_line,
};
use tether_model::{Label, sanitize_label_name, sanitize_metric_name};

use super::store::{Op, SAMPLE_BUCKETS};

/// Buckets of the router's service time histogram, in seconds: up to the
/// 30 s after which the router gives up (H12).
pub(crate) const SERVICE_BUCKETS: &[f64] = &[
    0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0,
];
/// Router requests by status class.
pub(crate) const ROUTER_REQUESTS: &str = "heroku_router_requests_total";
/// Router errors by code.
pub(crate) const ROUTER_ERRORS: &str = "heroku_router_errors_total";
/// Router service time.
pub(crate) const ROUTER_SERVICE: &str = "heroku_router_service_seconds";
/// Prefix of dyno runtime measurements.
pub(crate) const DYNO_PREFIX: &str = "heroku_dyno_";

/// What a line was.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum LineKind {
    /// Instance metrics (`<prefix> <base64 JSON>`).
    Metrics,
    /// An add-on's samples (`heroku-postgres`, `heroku-redis`).
    Addon,
    /// A dyno's runtime samples.
    Dyno,
    /// A router request.
    Router,
    /// Any other line: an app's own log, read no further.
    Other,
}

impl LineKind {
    pub(crate) const ALL: [LineKind; 5] = [
        LineKind::Metrics,
        LineKind::Addon,
        LineKind::Dyno,
        LineKind::Router,
        LineKind::Other,
    ];

    pub(crate) fn as_str(self) -> &'static str {
        match self {
            LineKind::Metrics => "metrics",
            LineKind::Addon => "addon",
            LineKind::Dyno => "dyno",
            LineKind::Router => "router",
            LineKind::Other => "other",
        }
    }

    fn index(self) -> usize {
        self as usize
    }
}

/// One update of one series.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct Update {
    pub(crate) name: Cow<'static, str>,
    /// The family's help, for the families of Heroku's own lines.
    pub(crate) help: Option<&'static str>,
    /// Sorted by name, each name once.
    pub(crate) labels: Vec<Label>,
    pub(crate) op: Op,
}

/// The bounds a batch is read within.
#[derive(Debug, Clone, Copy)]
pub(crate) struct BatchLimits {
    pub(crate) logplex: LogplexLimits,
    pub(crate) vector: VectorLimits,
}

/// What one batch held.
#[derive(Debug, Default)]
pub(crate) struct Batch {
    pub(crate) updates: Vec<Update>,
    /// Messages read, by [`LineKind`].
    pub(crate) lines: [u64; 5],
    /// Lines (or parts of lines) refused, by reason.
    pub(crate) rejected: Vec<(&'static str, u64)>,
    /// The first refusal's description, for the log.
    pub(crate) first_error: Option<String>,
    /// Frames read, good or bad.
    pub(crate) frames: u64,
}

impl Batch {
    pub(crate) fn lines(&self, kind: LineKind) -> u64 {
        self.lines[kind.index()]
    }

    /// Counts a refusal of `reason`, described by `describe` if it is the
    /// first.
    pub(crate) fn reject(&mut self, reason: &'static str, describe: impl FnOnce() -> String) {
        if self.first_error.is_none() {
            self.first_error = Some(describe());
        }
        match self.rejected.iter_mut().find(|(r, _)| *r == reason) {
            Some((_, n)) => *n += 1,
            None => self.rejected.push((reason, 1)),
        }
    }

    fn line(&mut self, kind: LineKind) {
        self.lines[kind.index()] += 1;
    }
}

/// Reads a drain body: every frame, every line.
pub(crate) fn read_batch(body: &[u8], prefix: &str, limits: &BatchLimits) -> Batch {
    let mut batch = Batch::default();
    let finder = memchr::memmem::Finder::new(prefix.as_bytes());
    for frame in logplex_frames(body, limits.logplex) {
        batch.frames += 1;
        let message = match frame {
            Ok(message) => message,
            Err(error) => {
                batch.reject(error.reason(), || error.to_string());
                continue;
            }
        };
        let syslog = match parse_syslog(message) {
            Ok(syslog) => syslog,
            Err(error) => {
                batch.reject("syslog", || error.to_string());
                continue;
            }
        };
        read_line(&syslog, &finder, prefix.len(), limits, &mut batch);
    }
    batch
}

fn read_line(
    syslog: &SyslogMessage<'_>,
    prefix: &memchr::memmem::Finder<'_>,
    prefix_len: usize,
    limits: &BatchLimits,
    batch: &mut Batch,
) {
    let msg = syslog.msg;
    if let Some(payload) = metrics_payload(msg, prefix, prefix_len) {
        batch.line(LineKind::Metrics);
        metrics_line(syslog, payload, limits.vector, batch);
        return;
    }
    if syslog.procid == "router" {
        batch.line(LineKind::Router);
        router_line(msg, batch);
        return;
    }
    let addon = syslog.procid.starts_with("heroku-");
    let Some(samples) = memchr::memmem::find(msg, b"sample#").and_then(|_| parse_samples(msg))
    else {
        batch.line(LineKind::Other);
        return;
    };
    let (kind, namespace) = if addon {
        // `heroku-postgres` into `heroku_postgres_`.
        (
            LineKind::Addon,
            format!(
                "{}_",
                sanitize_metric_name(&syslog.procid.replace('-', "_"))
            ),
        )
    } else if samples.dyno.is_some() {
        (LineKind::Dyno, DYNO_PREFIX.to_owned())
    } else {
        batch.line(LineKind::Other);
        return;
    };
    batch.line(kind);
    let mut labels = Vec::with_capacity(2);
    if let Some(addon) = samples.addon.filter(|_| kind == LineKind::Addon) {
        labels.push(Label::new("addon", addon));
    }
    if let Some(source) = samples.source {
        labels.push(Label::new("source", source));
    }
    for (key, error) in &samples.rejected {
        batch.reject(error.reason(), || format!("sample#{key}: {error}"));
    }
    for &(key, value) in &samples.samples {
        let name = format!("{namespace}{}", key.replace('-', "_"));
        batch.updates.push(Update {
            name: Cow::Owned(sanitize_metric_name(&name).into_owned()),
            help: Some(if kind == LineKind::Dyno {
                "A Heroku dyno's runtime sample (log-runtime-metrics), from the drain."
            } else {
                "A Heroku add-on's sample, from the drain."
            }),
            labels: labels.clone(),
            op: Op::Gauge { value, add: false },
        });
    }
}

/// What follows `<prefix><SP>` in `msg`, when the prefix starts the
/// message or follows a space (an app's logger may put a time or level
/// first).
fn metrics_payload<'a>(
    msg: &'a [u8],
    prefix: &memchr::memmem::Finder<'_>,
    prefix_len: usize,
) -> Option<&'a [u8]> {
    let mut from = 0;
    while let Some(found) = prefix.find(&msg[from..]) {
        let at = from + found;
        let after = at + prefix_len;
        if (at == 0 || msg[at - 1] == b' ') && msg.get(after) == Some(&b' ') {
            return Some(&msg[after + 1..]);
        }
        from = at + 1;
    }
    None
}

fn router_line(msg: &[u8], batch: &mut Batch) {
    let line = match parse_router(msg) {
        Ok(line) => line,
        Err(error) => {
            batch.reject(error.reason(), || error.to_string());
            return;
        }
    };
    // `parse_router` gives a status of 100 to 999.
    let class = line.status.map_or("unknown", |status| {
        [
            "1xx", "2xx", "3xx", "4xx", "5xx", "6xx", "7xx", "8xx", "9xx",
        ]
        .get(usize::from(status / 100).wrapping_sub(1))
        .copied()
        .unwrap_or("unknown")
    });
    batch.updates.push(Update {
        name: Cow::Borrowed(ROUTER_REQUESTS),
        help: Some("Heroku router requests, by status class, from the drain."),
        labels: vec![Label::new("status", class)],
        op: Op::Counter {
            value: 1.0,
            add: true,
        },
    });
    if line.error || line.code.is_some() {
        batch.updates.push(Update {
            name: Cow::Borrowed(ROUTER_ERRORS),
            help: Some("Heroku router errors, by error code (H12, H13, ...), from the drain."),
            labels: vec![Label::new("code", line.code.unwrap_or("unknown"))],
            op: Op::Counter {
                value: 1.0,
                add: true,
            },
        });
    }
    if let Some(seconds) = line.service_seconds {
        batch.updates.push(Update {
            name: Cow::Borrowed(ROUTER_SERVICE),
            help: Some("Heroku router service time of a request, from the drain."),
            labels: Vec::new(),
            op: Op::Observe {
                samples: vec![(seconds, 1)],
                buckets: SERVICE_BUCKETS,
                add: true,
            },
        });
    }
}

fn metrics_line(
    syslog: &SyslogMessage<'_>,
    payload: &[u8],
    limits: VectorLimits,
    batch: &mut Batch,
) {
    let line = match parse_vector_line(payload, limits) {
        Ok(line) => line,
        Err(error) => {
            batch.reject(error.reason(), || error.to_string());
            return;
        }
    };
    for error in &line.rejected {
        batch.reject(error.reason(), || error.to_string());
    }
    for metric in line.metrics {
        match vector_update(syslog, metric) {
            Ok(update) => batch.updates.push(update),
            Err((reason, message)) => batch.reject(reason, || message),
        }
    }
}

/// One Vector metric as an update: its name with the namespace, its tags
/// as labels with `app` and `process` from the syslog header (which win
/// over tags of those names).
fn vector_update(
    syslog: &SyslogMessage<'_>,
    metric: VectorMetric,
) -> Result<Update, (&'static str, String)> {
    let full = match &metric.namespace {
        Some(namespace) => format!("{namespace}_{}", metric.name),
        None => metric.name,
    };
    let name = sanitize_metric_name(&full).into_owned();
    if name.is_empty() {
        return Err((
            "invalid_name",
            format!("{full:?} is not a usable metric name"),
        ));
    }
    let mut labels: Vec<Label> = Vec::with_capacity(metric.tags.len() + 2);
    for (key, value) in metric.tags {
        let key = sanitize_label_name(&key).into_owned();
        if key.is_empty() || key == "app" || key == "process" {
            continue;
        }
        labels.push(Label::new(key, value));
    }
    labels.push(Label::new("app", syslog.app_name));
    labels.push(Label::new("process", syslog.procid));
    labels.sort_by(|a, b| a.name.cmp(&b.name));
    // Two tags sanitized to one name: the last kept.
    labels.dedup_by(|later, earlier| {
        if later.name == earlier.name {
            std::mem::swap(later, earlier);
            true
        } else {
            false
        }
    });
    let add = metric.kind == VectorKind::Incremental;
    let op = match metric.value {
        VectorValue::Counter(value) => Op::Counter { value, add },
        VectorValue::Gauge(value) => Op::Gauge { value, add },
        VectorValue::Set(members) => Op::Set { members, add },
        VectorValue::Distribution {
            samples,
            statistic: Statistic::Histogram,
        } => Op::Observe {
            samples,
            buckets: SAMPLE_BUCKETS,
            add,
        },
        VectorValue::Distribution {
            samples,
            statistic: Statistic::Summary,
        } => Op::SampleSummary { samples, add },
        VectorValue::AggregatedHistogram {
            buckets,
            count,
            sum,
        } => Op::Histogram {
            buckets,
            count,
            sum,
            add,
        },
        VectorValue::AggregatedSummary {
            quantiles,
            count,
            sum,
        } => Op::Summary {
            quantiles,
            count,
            sum,
            add,
        },
    };
    Ok(Update {
        name: Cow::Owned(name),
        help: None,
        labels,
        op,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn frame(message: &str) -> String {
        format!("{} {message}\n", message.len() + 1)
    }

    fn limits() -> BatchLimits {
        BatchLimits {
            logplex: LogplexLimits::default(),
            vector: VectorLimits::default(),
        }
    }

    #[test]
    fn prefix_is_found_at_the_start_or_after_a_space() {
        let finder = memchr::memmem::Finder::new("p:ingest");
        let find = |msg: &'static str| metrics_payload(msg.as_bytes(), &finder, 8);
        assert_eq!(find("p:ingest abc"), Some(&b"abc"[..]));
        assert_eq!(find("INFO p:ingest abc"), Some(&b"abc"[..]));
        assert_eq!(find("xp:ingest abc"), None);
        assert_eq!(find("p:ingestabc"), None);
        assert_eq!(find("p:ingest"), None);
        assert_eq!(find("xp:ingest p:ingest z"), Some(&b"z"[..]));
    }

    #[test]
    fn router_lines_count_requests_errors_and_service_time() {
        let body = [
            frame("<158>1 2024-01-01T00:00:00+00:00 host heroku router - at=info method=GET path=\"/\" host=a.herokuapp.com fwd=\"1.2.3.4\" dyno=web.1 connect=0ms service=18ms status=200 bytes=2 protocol=https"),
            frame("<158>1 2024-01-01T00:00:00+00:00 host heroku router - at=error code=H12 desc=\"Request timeout\" method=GET path=\"/\" host=a.herokuapp.com dyno=web.1 connect=0ms service=30000ms status=503 bytes=0 protocol=https"),
        ]
        .concat();
        let batch = read_batch(body.as_bytes(), "p:ingest", &limits());
        assert_eq!(batch.lines(LineKind::Router), 2);
        assert!(batch.rejected.is_empty(), "{:?}", batch.rejected);
        let names: Vec<(&str, &str)> = batch
            .updates
            .iter()
            .map(|u| {
                (
                    u.name.as_ref(),
                    u.labels.first().map_or("", |l| l.value.as_str()),
                )
            })
            .collect();
        assert_eq!(
            names,
            vec![
                (ROUTER_REQUESTS, "2xx"),
                (ROUTER_SERVICE, ""),
                (ROUTER_REQUESTS, "5xx"),
                (ROUTER_ERRORS, "H12"),
                (ROUTER_SERVICE, ""),
            ]
        );
    }

    #[test]
    fn addon_and_dyno_samples_become_gauges() {
        let body = [
            frame("<134>1 2024-01-01T00:00:00+00:00 host app heroku-postgres - source=DATABASE addon=postgresql-opaque-12345 sample#db_size=147391814791bytes sample#memory-free=3786332.0kB sample#read-iops=oops"),
            frame("<45>1 2024-01-01T00:00:00+00:00 host heroku web.1 - source=web.1 dyno=heroku.1.abc sample#memory_total=154.85MB"),
            frame("<13>1 2024-01-01T00:00:00+00:00 host app web.1 - Started GET \"/\" sample#not=measured"),
        ]
        .concat();
        let batch = read_batch(body.as_bytes(), "p:ingest", &limits());
        assert_eq!(batch.lines(LineKind::Addon), 1);
        assert_eq!(batch.lines(LineKind::Dyno), 1);
        assert_eq!(batch.lines(LineKind::Other), 1);
        assert_eq!(batch.rejected, vec![("bad_sample_value", 1)]);
        let got: Vec<(String, Vec<Label>, Op)> = batch
            .updates
            .into_iter()
            .map(|u| (u.name.into_owned(), u.labels, u.op))
            .collect();
        let pg = vec![
            Label::new("addon", "postgresql-opaque-12345"),
            Label::new("source", "DATABASE"),
        ];
        assert_eq!(
            got,
            vec![
                (
                    "heroku_postgres_db_size".to_owned(),
                    pg.clone(),
                    Op::Gauge {
                        value: 147_391_814_791.0,
                        add: false
                    }
                ),
                (
                    "heroku_postgres_memory_free".to_owned(),
                    pg,
                    Op::Gauge {
                        value: 3_786_332.0 * 1024.0,
                        add: false
                    }
                ),
                (
                    "heroku_dyno_memory_total".to_owned(),
                    vec![Label::new("source", "web.1")],
                    Op::Gauge {
                        value: 154.85 * 1_048_576.0,
                        add: false
                    }
                ),
            ]
        );
    }

    #[test]
    fn bad_frames_and_headers_are_counted_and_the_rest_read() {
        let body = format!(
            "{}12 <13>1 short\n{}",
            frame("not syslog at all"),
            frame("<13>1 2024-01-01T00:00:00+00:00 host app web.1 - hello")
        );
        let batch = read_batch(body.as_bytes(), "p:ingest", &limits());
        assert_eq!(batch.lines(LineKind::Other), 1);
        let rejected: u64 = batch.rejected.iter().map(|(_, n)| n).sum();
        assert_eq!(rejected, 2, "{:?}", batch.rejected);
        assert!(batch.first_error.is_some());
    }
}
