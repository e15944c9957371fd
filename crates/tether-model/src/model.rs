//! The metric data model: families of series, independent of any wire format.
//!
//! A [`MetricFamily`] is what one `# TYPE` line introduces: a name, a type,
//! optional help and unit, and its series. Each [`Series`] is one label set
//! with one [`Value`]; a histogram or summary is one series here, not the
//! several sample lines it takes in text.
//!
//! Naming follows the Prometheus protobuf format, which is what agents send:
//! a counter family is named after its sample (`http_requests_total`), every
//! other family after its text family name (`request_seconds` for a histogram
//! whose lines are `request_seconds_bucket`, `_sum`, `_count`).

/// The type of a metric family, with every type of OpenMetrics 1.0.
///
/// The text format 0.0.4 knows only counter, gauge, histogram, summary and
/// untyped; the others render as their nearest 0.0.4 equivalent.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum MetricType {
    /// A monotonic total, with an optional creation time and exemplar.
    Counter,
    /// A value that goes up and down.
    Gauge,
    /// Cumulative buckets of observations, with sum and count.
    Histogram,
    /// A histogram whose buckets may go down (OpenMetrics only).
    GaugeHistogram,
    /// Quantiles of observations, with sum and count.
    Summary,
    /// Constant labels describing a target; the value is always 1 (OpenMetrics only).
    Info,
    /// A set of boolean states, one series per state (OpenMetrics only).
    StateSet,
    /// No type given: `untyped` in text 0.0.4, `unknown` in OpenMetrics.
    Unknown,
}

impl MetricType {
    /// The word for this type on a text 0.0.4 `# TYPE` line.
    ///
    /// Types that 0.0.4 lacks map to the closest one that Prometheus reads
    /// the same way: gauge histograms to histograms, info and state sets to gauges.
    pub fn text_name(self) -> &'static str {
        match self {
            MetricType::Counter => "counter",
            MetricType::Gauge | MetricType::Info | MetricType::StateSet => "gauge",
            MetricType::Histogram | MetricType::GaugeHistogram => "histogram",
            MetricType::Summary => "summary",
            MetricType::Unknown => "untyped",
        }
    }

    /// The word for this type on an OpenMetrics `# TYPE` line.
    pub fn openmetrics_name(self) -> &'static str {
        match self {
            MetricType::Counter => "counter",
            MetricType::Gauge => "gauge",
            MetricType::Histogram => "histogram",
            MetricType::GaugeHistogram => "gaugehistogram",
            MetricType::Summary => "summary",
            MetricType::Info => "info",
            MetricType::StateSet => "stateset",
            MetricType::Unknown => "unknown",
        }
    }
}

impl MetricFamily {
    /// Whether any series carries a creation time, written as a
    /// `<name>_created` sample in OpenMetrics.
    pub fn writes_created(&self) -> bool {
        self.series.iter().any(|series| match &series.value {
            Value::Counter(c) => c.created.is_some(),
            Value::Histogram(h) => h.created.is_some(),
            Value::Summary(s) => s.created.is_some(),
            _ => false,
        })
    }
}

/// Whether `name` matches `[a-zA-Z_:][a-zA-Z0-9_:]*`.
pub fn is_valid_metric_name(name: &str) -> bool {
    let mut bytes = name.bytes();
    bytes
        .next()
        .is_some_and(|first| first.is_ascii_alphabetic() || first == b'_' || first == b':')
        && bytes.all(|byte| byte.is_ascii_alphanumeric() || byte == b'_' || byte == b':')
}

/// Whether `name` matches `[a-zA-Z_][a-zA-Z0-9_]*`.
pub fn is_valid_label_name(name: &str) -> bool {
    let mut bytes = name.bytes();
    bytes
        .next()
        .is_some_and(|first| first.is_ascii_alphabetic() || first == b'_')
        && bytes.all(|byte| byte.is_ascii_alphanumeric() || byte == b'_')
}

/// One label: a name and its value, both unescaped.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Label {
    /// The label name, matching `[a-zA-Z_][a-zA-Z0-9_]*`.
    pub name: String,
    /// The label value: any UTF-8 text.
    pub value: String,
}

impl Label {
    /// A label from anything that converts into strings.
    pub fn new(name: impl Into<String>, value: impl Into<String>) -> Label {
        Label {
            name: name.into(),
            value: value.into(),
        }
    }
}

/// A metric family: every series under one name, type, help and unit.
#[derive(Debug, Clone, PartialEq)]
pub struct MetricFamily {
    /// The family name (see the module documentation for counters).
    pub name: String,
    /// The family's type; every series' [`Value`] has the matching shape.
    pub metric_type: MetricType,
    /// The unescaped help text, if any.
    pub help: Option<String>,
    /// The unit (OpenMetrics `# UNIT`), if any; the name ends in `_<unit>`.
    pub unit: Option<String>,
    /// The series, in the order they were given.
    pub series: Vec<Series>,
}

impl MetricFamily {
    /// An empty family of the given name and type.
    pub fn new(name: impl Into<String>, metric_type: MetricType) -> MetricFamily {
        MetricFamily {
            name: name.into(),
            metric_type,
            help: None,
            unit: None,
            series: Vec::new(),
        }
    }
}

/// One series of a family: a label set, its value and an optional timestamp.
#[derive(Debug, Clone, PartialEq)]
pub struct Series {
    /// The labels in the order they were given; names are unique.
    pub labels: Vec<Label>,
    /// The value, shaped by the family's type.
    pub value: Value,
    /// Milliseconds since the Unix epoch, when the exposition gave one.
    pub timestamp_ms: Option<i64>,
}

/// The value of one series.
#[derive(Debug, Clone, PartialEq)]
pub enum Value {
    /// One sample: a gauge, an unknown (untyped) metric, an info metric
    /// (always 1) or one state of a state set (0 or 1).
    Single(f64),
    /// A counter.
    Counter(Counter),
    /// A histogram or a gauge histogram.
    Histogram(Histogram),
    /// A summary.
    Summary(Summary),
}

/// The value of a counter series.
#[derive(Debug, Clone, PartialEq)]
pub struct Counter {
    /// The running total.
    pub total: f64,
    /// When the counter was created, in seconds since the Unix epoch.
    pub created: Option<f64>,
    /// An example observation that contributed to the total.
    pub exemplar: Option<Exemplar>,
}

/// The value of a histogram or gauge histogram series.
#[derive(Debug, Clone, PartialEq)]
pub struct Histogram {
    /// Buckets in increasing order of upper bound, with cumulative counts.
    pub buckets: Vec<Bucket>,
    /// The count of observations (`_count`, or `_gcount` for a gauge histogram).
    pub count: Option<f64>,
    /// The sum of observations (`_sum`, or `_gsum` for a gauge histogram).
    pub sum: Option<f64>,
    /// When the histogram was created, in seconds since the Unix epoch.
    pub created: Option<f64>,
}

/// One histogram bucket.
#[derive(Debug, Clone, PartialEq)]
pub struct Bucket {
    /// The inclusive upper bound (the `le` label); `+Inf` for the last bucket.
    pub upper_bound: f64,
    /// The cumulative count of observations at or below the bound.
    pub count: f64,
    /// An example observation that fell into this bucket.
    pub exemplar: Option<Exemplar>,
}

/// The value of a summary series.
#[derive(Debug, Clone, PartialEq)]
pub struct Summary {
    /// The quantiles, in the order they were given.
    pub quantiles: Vec<Quantile>,
    /// The count of observations.
    pub count: Option<f64>,
    /// The sum of observations.
    pub sum: Option<f64>,
    /// When the summary was created, in seconds since the Unix epoch.
    pub created: Option<f64>,
}

/// One quantile of a summary.
#[derive(Debug, Clone, PartialEq)]
pub struct Quantile {
    /// The quantile, between 0 and 1 (the `quantile` label).
    pub quantile: f64,
    /// The observed value at that quantile.
    pub value: f64,
}

/// An OpenMetrics exemplar: one observation with its own labels (a trace id).
#[derive(Debug, Clone, PartialEq)]
pub struct Exemplar {
    /// The exemplar's labels.
    pub labels: Vec<Label>,
    /// The observed value.
    pub value: f64,
    /// When it was observed, in seconds since the Unix epoch.
    pub timestamp: Option<f64>,
}
