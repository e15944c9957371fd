//! Deterministic benchmark inputs shared by the benchmarks: a realistic text
//! exposition (W4) and the series of one large counter family (W3).
//!
//! Everything is derived from a fixed seed through a small xorshift
//! generator, so every run and every parser sees the same bytes.

// Each benchmark binary compiles this module whole and uses part of it.
#![allow(
    dead_code,
    reason = "each benchmark binary uses a part of the shared generators"
)]

use std::fmt::Write as _;

/// The size of the W4 exposition in a real benchmark run, in MB (10^6 bytes).
pub(crate) const DEFAULT_EXPOSITION_MB: usize = 64;

/// The size of the W4 exposition when the binary runs as a test
/// (`cargo test --benches`), in MB: enough to exercise every code path.
const TEST_EXPOSITION_MB: usize = 1;

/// Whether this binary was started by `cargo bench` to measure, rather than
/// by `cargo test --benches` (criterion's test mode) or to list benchmarks.
pub(crate) fn is_measuring() -> bool {
    let args: Vec<String> = std::env::args().collect();
    let has = |flag: &str| args.iter().any(|arg| arg == flag);
    has("--bench") && !has("--test") && !has("--list")
}

/// The W4 exposition size in bytes: `TETHER_BENCH_MB` if set, else 64 MB
/// when measuring and 1 MB in test mode.
pub(crate) fn exposition_bytes() -> usize {
    let default_mb = if is_measuring() {
        DEFAULT_EXPOSITION_MB
    } else {
        TEST_EXPOSITION_MB
    };
    let mb = std::env::var("TETHER_BENCH_MB")
        .ok()
        .and_then(|value| value.parse::<usize>().ok())
        .filter(|&mb| mb > 0)
        .unwrap_or(default_mb);
    mb * 1_000_000
}

/// xorshift64*: fast, deterministic and good enough to vary test data.
#[derive(Debug, Clone)]
pub(crate) struct Rng(u64);

impl Rng {
    pub(crate) fn new(seed: u64) -> Rng {
        // Zero is xorshift's one fixed point.
        Rng(seed | 1)
    }

    pub(crate) fn next_u64(&mut self) -> u64 {
        let mut x = self.0;
        x ^= x >> 12;
        x ^= x << 25;
        x ^= x >> 27;
        self.0 = x;
        x.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }

    /// A number in `0..n`; `n` is small, so the modulo bias does not matter.
    pub(crate) fn below(&mut self, n: usize) -> usize {
        let n = u64::try_from(n).expect("usize fits in u64 on supported targets");
        usize::try_from(self.next_u64() % n).expect("below n, which came from a usize")
    }

    /// A float in `[0, 1)`.
    pub(crate) fn unit(&mut self) -> f64 {
        #[allow(clippy::cast_precision_loss, reason = "53 random bits convert exactly")]
        let mantissa = (self.next_u64() >> 11) as f64;
        mantissa / (1u64 << 53) as f64
    }

    /// True with probability `percent` / 100.
    pub(crate) fn percent(&mut self, percent: usize) -> bool {
        self.below(100) < percent
    }

    pub(crate) fn pick<'a>(&mut self, items: &[&'a str]) -> &'a str {
        items[self.below(items.len())]
    }
}

const SERVICES: [&str; 12] = [
    "api",
    "auth",
    "billing",
    "search",
    "checkout",
    "catalog",
    "ingest",
    "notify",
    "payments",
    "profile",
    "gateway",
    "scheduler",
];
const NAMESPACES: [&str; 4] = ["prod", "staging", "batch", "kube-system"];
const CONTAINERS: [&str; 4] = ["app", "envoy", "istio-proxy", "log-shipper"];
const REASONS: [&str; 4] = ["Running", "Running", "Completed", "OOMKilled"];
const METHODS: [&str; 5] = ["GET", "GET", "POST", "PUT", "DELETE"];
const CODES: [&str; 9] = [
    "200", "200", "200", "201", "204", "304", "404", "429", "500",
];
const HANDLERS: [&str; 12] = [
    "/",
    "/healthz",
    "/metrics",
    "/api/v1/users",
    "/api/v1/users/{id}",
    "/api/v1/users/{id}/orders",
    "/api/v1/orders/{order_id}/items/{item_id}",
    "/api/v2/search",
    "/api/v2/catalog/products",
    "/static/*filepath",
    "/graphql",
    "/login",
];

/// Label values, as they are after unescaping, that need escaping in text:
/// quotes, backslashes and newlines, with commas and braces for good measure.
pub(crate) const ESCAPED_VALUES: [&str; 5] = [
    "/search?q=\"rust lang\"&page=2",
    "C:\\Program Files\\tether\\bin",
    "first line\nsecond line",
    "{\"user\": \"a,b\", \"ok\": true}",
    "say \\\"hi\\\" twice",
];

/// Counter and gauge families; each entry is a base name and its help text.
const COUNTERS: [(&str, &str); 4] = [
    (
        "http_requests_total",
        "Total HTTP requests served, by method, handler and status code.",
    ),
    (
        "http_request_errors_total",
        "HTTP requests that failed.\nIncludes timeouts; see C:\\docs\\errors.",
    ),
    (
        "grpc_server_handled_total",
        "Total RPCs completed on the server, regardless of success or failure.",
    ),
    ("cache_lookups_total", "Cache lookups by result."),
];
const GAUGES: [(&str, &str); 3] = [
    (
        "container_memory_working_set_bytes",
        "Current working set of the container in bytes.",
    ),
    ("process_open_fds", "Number of open file descriptors."),
    (
        "queue_oldest_message_age_seconds",
        "Age of the oldest message waiting, in seconds.\nNaN when empty.",
    ),
];
const HISTOGRAMS: [(&str, &str); 2] = [
    (
        "http_request_duration_seconds",
        "Time spent serving HTTP requests.",
    ),
    (
        "db_query_duration_seconds",
        "Time spent in database queries, queueing included.",
    ),
];
const SUMMARIES: [(&str, &str); 1] = [("gc_pause_seconds", "Garbage collection pause times.")];

/// Upper bounds of the histogram buckets, `+Inf` last.
const BUCKETS: [&str; 10] = [
    "0.005", "0.01", "0.025", "0.05", "0.1", "0.25", "0.5", "1", "2.5", "+Inf",
];
const QUANTILES: [&str; 3] = ["0.5", "0.9", "0.99"];

/// Series per family by type: a few hundred families in 64 MB, as in a
/// federated or kube-state-metrics scrape.
const COUNTER_SERIES: usize = 2000;
const GAUGE_SERIES: usize = 2000;
const HISTOGRAM_SERIES: usize = 200;
const SUMMARY_SERIES: usize = 400;

/// Percent of counter and gauge series with a label value that needs escaping.
const ESCAPED_PERCENT: usize = 5;

/// A generated exposition and what it holds, for checking parsers.
#[derive(Debug)]
pub(crate) struct Exposition {
    /// The text format 0.0.4 exposition.
    pub(crate) text: String,
    /// Families (one `# TYPE` line each).
    pub(crate) n_families: usize,
    /// Series; a histogram or summary series counts once.
    pub(crate) n_series: usize,
    /// Sample lines.
    pub(crate) n_samples: usize,
    /// Counter and gauge series (one sample line each) whose labels include
    /// one of [`ESCAPED_VALUES`].
    pub(crate) n_escaped_series: usize,
}

/// A realistic text exposition of at least `target_bytes`: counters, gauges,
/// histograms (10 buckets) and summaries, each family with HELP and TYPE,
/// label values that need escaping in a few percent of series.
pub(crate) fn exposition(target_bytes: usize) -> Exposition {
    let mut rng = Rng::new(0x7e7e_2026_1122_0001);
    let mut out = Exposition {
        text: String::with_capacity(target_bytes + (1 << 20)),
        n_families: 0,
        n_series: 0,
        n_samples: 0,
        n_escaped_series: 0,
    };
    let mut family_index = 0;
    while out.text.len() < target_bytes {
        let service = SERVICES[family_index % SERVICES.len()];
        // The prefix keeps names unique once the services have all been used.
        let prefix = format!("{service}{}", family_index / SERVICES.len());
        // Ten families in a cycle: 4 counters, 3 gauges, 2 histograms, 1 summary.
        match family_index % 10 {
            slot @ 0..=3 => {
                write_counter_family(&mut out, &mut rng, &prefix, service, COUNTERS[slot]);
            }
            slot @ 4..=6 => {
                write_gauge_family(&mut out, &mut rng, &prefix, service, GAUGES[slot - 4]);
            }
            slot @ 7..=8 => {
                write_histogram_family(&mut out, &mut rng, &prefix, service, HISTOGRAMS[slot - 7]);
            }
            _ => write_summary_family(&mut out, &mut rng, &prefix, service, SUMMARIES[0]),
        }
        out.n_families += 1;
        family_index += 1;
    }
    out
}

fn write_metadata(text: &mut String, name: &str, help: &str, metric_type: &str) {
    text.push_str("# HELP ");
    text.push_str(name);
    text.push(' ');
    for c in help.chars() {
        match c {
            '\\' => text.push_str("\\\\"),
            '\n' => text.push_str("\\n"),
            c => text.push(c),
        }
    }
    text.push_str("\n# TYPE ");
    text.push_str(name);
    text.push(' ');
    text.push_str(metric_type);
    text.push('\n');
}

fn push_label(text: &mut String, first: bool, name: &str, value: &str) {
    if !first {
        text.push(',');
    }
    text.push_str(name);
    text.push_str("=\"");
    for c in value.chars() {
        match c {
            '\\' => text.push_str("\\\\"),
            '"' => text.push_str("\\\""),
            '\n' => text.push_str("\\n"),
            c => text.push(c),
        }
    }
    text.push('"');
}

/// A pod name unique within its family: `api-7d9f8c6b5-00042`.
fn pod_name(rng: &mut Rng, service: &str, index: usize) -> String {
    format!("{service}-{:09x}-{index:05}", rng.next_u64() >> 28)
}

fn write_counter_family(
    out: &mut Exposition,
    rng: &mut Rng,
    prefix: &str,
    service: &str,
    base: (&str, &str),
) {
    let name = format!("{prefix}_{}", base.0);
    write_metadata(&mut out.text, &name, base.1, "counter");
    for index in 0..COUNTER_SERIES {
        let escaped = rng.percent(ESCAPED_PERCENT);
        let handler = if escaped {
            rng.pick(&ESCAPED_VALUES)
        } else {
            rng.pick(&HANDLERS)
        };
        let pod = pod_name(rng, service, index);
        let text = &mut out.text;
        text.push_str(&name);
        text.push('{');
        push_label(text, true, "method", rng.pick(&METHODS));
        push_label(text, false, "handler", handler);
        push_label(text, false, "code", rng.pick(&CODES));
        push_label(text, false, "pod", &pod);
        push_label(text, false, "namespace", rng.pick(&NAMESPACES));
        text.push_str("} ");
        let value = rng.next_u64() % 50_000_000;
        write!(text, "{value}").expect("writing to a String does not fail");
        text.push('\n');
        out.n_series += 1;
        out.n_samples += 1;
        out.n_escaped_series += usize::from(escaped);
    }
}

fn write_gauge_family(
    out: &mut Exposition,
    rng: &mut Rng,
    prefix: &str,
    service: &str,
    base: (&str, &str),
) {
    let name = format!("{prefix}_{}", base.0);
    write_metadata(&mut out.text, &name, base.1, "gauge");
    for index in 0..GAUGE_SERIES {
        let escaped = rng.percent(ESCAPED_PERCENT);
        let pod = pod_name(rng, service, index);
        let text = &mut out.text;
        text.push_str(&name);
        text.push('{');
        push_label(text, true, "namespace", rng.pick(&NAMESPACES));
        push_label(text, false, "pod", &pod);
        push_label(text, false, "container", rng.pick(&CONTAINERS));
        let reason = if escaped {
            rng.pick(&ESCAPED_VALUES)
        } else {
            rng.pick(&REASONS)
        };
        push_label(text, false, "reason", reason);
        text.push_str("} ");
        // Values in the shapes exporters write: integers, plain and
        // exponent floats, the odd NaN.
        match rng.below(100) {
            0 => text.push_str("NaN"),
            1..=30 => {
                write!(text, "{}", rng.next_u64() >> 30)
                    .expect("writing to a String does not fail");
            }
            31..=60 => {
                write!(text, "{:e}", rng.unit() * 1e-3).expect("writing to a String does not fail");
            }
            _ => write!(text, "{}", rng.unit() * 1e4).expect("writing to a String does not fail"),
        }
        text.push('\n');
        out.n_series += 1;
        out.n_samples += 1;
        out.n_escaped_series += usize::from(escaped);
    }
}

fn write_histogram_family(
    out: &mut Exposition,
    rng: &mut Rng,
    prefix: &str,
    service: &str,
    base: (&str, &str),
) {
    let name = format!("{prefix}_{}", base.0);
    write_metadata(&mut out.text, &name, base.1, "histogram");
    let mut labels = String::new();
    for index in 0..HISTOGRAM_SERIES {
        let pod = pod_name(rng, service, index);
        labels.clear();
        push_label(&mut labels, true, "handler", rng.pick(&HANDLERS));
        push_label(&mut labels, false, "method", rng.pick(&METHODS));
        push_label(&mut labels, false, "pod", &pod);
        let text = &mut out.text;
        let mut count = 0u64;
        for bound in BUCKETS {
            count += rng.next_u64() % 5000;
            writeln!(text, "{name}_bucket{{{labels},le=\"{bound}\"}} {count}")
                .expect("writing to a String does not fail");
        }
        #[allow(
            clippy::cast_precision_loss,
            reason = "a plausible sum, not an exact one"
        )]
        let sum = count as f64 * rng.unit() * 0.3;
        writeln!(text, "{name}_sum{{{labels}}} {sum}").expect("writing to a String does not fail");
        writeln!(text, "{name}_count{{{labels}}} {count}")
            .expect("writing to a String does not fail");
        out.n_series += 1;
        out.n_samples += BUCKETS.len() + 2;
    }
}

fn write_summary_family(
    out: &mut Exposition,
    rng: &mut Rng,
    prefix: &str,
    service: &str,
    base: (&str, &str),
) {
    let name = format!("{prefix}_{}", base.0);
    write_metadata(&mut out.text, &name, base.1, "summary");
    for index in 0..SUMMARY_SERIES {
        let pod = pod_name(rng, service, index);
        let text = &mut out.text;
        let mut value = rng.unit() * 1e-3;
        for quantile in QUANTILES {
            value *= 1.0 + rng.unit() * 4.0;
            writeln!(
                text,
                "{name}{{pod=\"{pod}\",quantile=\"{quantile}\"}} {value}"
            )
            .expect("writing to a String does not fail");
        }
        let count = rng.next_u64() % 1_000_000;
        #[allow(
            clippy::cast_precision_loss,
            reason = "a plausible sum, not an exact one"
        )]
        let sum = count as f64 * value * 0.5;
        writeln!(text, "{name}_sum{{pod=\"{pod}\"}} {sum}")
            .expect("writing to a String does not fail");
        writeln!(text, "{name}_count{{pod=\"{pod}\"}} {count}")
            .expect("writing to a String does not fail");
        out.n_series += 1;
        out.n_samples += QUANTILES.len() + 2;
    }
}

/// One series of the W3 family `http_requests_total`: label pairs and value.
#[derive(Debug, Clone)]
pub(crate) struct RequestSeries {
    pub(crate) labels: [(&'static str, String); 4],
    pub(crate) value: u64,
}

/// `n` distinct series of a `http_requests_total` counter with method,
/// handler, code and instance labels, as a large fleet would report them.
pub(crate) fn request_series(n: usize) -> Vec<RequestSeries> {
    let mut rng = Rng::new(0x7e7e_2026_1122_0003);
    (0..n)
        .map(|index| {
            // The instance address is unique per series: 10.a.b.c.
            let instance = format!(
                "10.{}.{}.{}:8080",
                (index >> 16) & 255,
                (index >> 8) & 255,
                index & 255
            );
            RequestSeries {
                labels: [
                    ("method", rng.pick(&METHODS).to_owned()),
                    ("handler", rng.pick(&HANDLERS).to_owned()),
                    ("code", rng.pick(&CODES).to_owned()),
                    ("instance", instance),
                ],
                value: rng.next_u64() % 50_000_000,
            }
        })
        .collect()
}
