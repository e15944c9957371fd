//! Instance-metric lines: `<prefix> <base64 of a JSON array>`, each element
//! `{"metric": {...}}` in Vector's metric model. This module reads what
//! follows the prefix and its space.

use std::fmt;

/// Bounds of one line's payload.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct VectorLimits {
    /// Most metrics in one line; past it the line is refused.
    pub max_metrics: usize,
    /// Most tags on one metric; past it the metric is refused.
    pub max_tags: usize,
    /// Most values in one metric (set members, distribution samples,
    /// buckets, quantiles); past it the metric is refused.
    pub max_values: usize,
}

impl Default for VectorLimits {
    fn default() -> VectorLimits {
        VectorLimits {
            max_metrics: 10_000,
            max_tags: 64,
            max_values: 4096,
        }
    }
}

/// Whether a metric replaces what is held (`absolute`) or adds to it
/// (`incremental`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum VectorKind {
    Absolute,
    Incremental,
}

/// How a distribution is to be summarised.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Statistic {
    Histogram,
    Summary,
}

/// A metric's value, one of Vector's value kinds.
#[derive(Debug, Clone, PartialEq)]
pub enum VectorValue {
    Counter(f64),
    Gauge(f64),
    /// The members of a set.
    Set(Vec<String>),
    /// Samples as `(value, rate)`: `rate` is how many times the value was
    /// seen.
    Distribution {
        samples: Vec<(f64, u32)>,
        statistic: Statistic,
    },
    /// Buckets as `(upper_limit, count)`, counts per bucket as sent (not
    /// cumulative), in the order sent.
    AggregatedHistogram {
        buckets: Vec<(f64, f64)>,
        count: f64,
        sum: f64,
    },
    /// Quantiles as `(quantile, value)`.
    AggregatedSummary {
        quantiles: Vec<(f64, f64)>,
        count: f64,
        sum: f64,
    },
}

/// One metric of a line.
#[derive(Debug, Clone, PartialEq)]
pub struct VectorMetric {
    pub name: String,
    /// Vector's namespace, when one was given and is not empty.
    pub namespace: Option<String>,
    /// Tags with one value each, in the order sent: of an array the last
    /// string, a null (a bare tag) or an array of nulls left out.
    pub tags: Vec<(String, String)>,
    pub kind: VectorKind,
    pub value: VectorValue,
}

/// What one line held: the metrics read, and why each other element was
/// refused (the rest of the line is still read).
#[derive(Debug, Clone, Default, PartialEq)]
pub struct VectorLine {
    pub metrics: Vec<VectorMetric>,
    pub rejected: Vec<VectorError>,
}

/// Why a line, or one metric of it, was refused.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum VectorError {
    /// The payload is not standard base64.
    Base64,
    /// The decoded payload is not a JSON array of objects; the parser's
    /// message.
    Json(String),
    /// The line holds more metrics than allowed.
    TooManyMetrics(usize),
    /// An element has no value of a known kind; the kinds it had.
    UnknownKind(String),
    /// An element is not a valid metric (a missing name, a kind other than
    /// absolute or incremental, a value of the wrong type, more than one
    /// value kind, too many tags or values); what was wrong.
    Invalid(String),
}

impl VectorError {
    /// A short label value naming the reason: `base64`, `json`,
    /// `too_many_metrics`, `unknown_kind`, `invalid_metric`.
    pub fn reason(&self) -> &'static str {
        match self {
            VectorError::Base64 => "base64",
            VectorError::Json(_) => "json",
            VectorError::TooManyMetrics(_) => "too_many_metrics",
            VectorError::UnknownKind(_) => "unknown_kind",
            VectorError::Invalid(_) => "invalid_metric",
        }
    }
}

impl fmt::Display for VectorError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            VectorError::Base64 => write!(f, "the metrics payload is not standard base64"),
            VectorError::Json(message) => {
                write!(
                    f,
                    "the metrics payload is not a JSON array of metrics: {message}"
                )
            }
            VectorError::TooManyMetrics(max) => {
                write!(f, "the line holds more than {max} metrics: split it")
            }
            VectorError::UnknownKind(kinds) => write!(
                f,
                "no value of a known kind (counter, gauge, set, distribution, aggregated_histogram, aggregated_summary): {kinds}"
            ),
            VectorError::Invalid(message) => write!(f, "not a valid metric: {message}"),
        }
    }
}

impl std::error::Error for VectorError {}

/// Reads one line's payload (what follows the prefix and its space;
/// surrounding ASCII whitespace is ignored).
pub fn parse_vector_line(payload: &[u8], limits: VectorLimits) -> Result<VectorLine, VectorError> {
    let _ = (payload, limits);
    Err(VectorError::Base64)
}
