//! Conversions between the model and the `io.prometheus.client` messages, with
//! the validation that untrusted messages need.

use super::pb;
use crate::{
    Bucket, Counter, Exemplar, Histogram, Label, MetricFamily, MetricType, ProtoError, Quantile,
    Series, Summary, Value,
};

/// 2^64, the first integer that a `u64` cannot hold; every non-negative
/// integral `f64` below it converts to `u64` exactly.
const U64_END: f64 = 18_446_744_073_709_551_616.0;

/// The family's messages: the model family `family` as a `pb::MetricFamily`.
///
/// Types map one to one, except the two that protobuf lacks: an info family
/// becomes a `GAUGE` named `<name>_info`, the name of its sample, and a state
/// set becomes a `GAUGE` of the same name. Both read back as gauges.
///
/// Histogram counts go in `cumulative_count` and `sample_count` when they are
/// non-negative integers, which `u64` holds exactly, and in the `_float`
/// fields otherwise. Summaries have only an integer count, so a summary count
/// is rounded, and a negative or NaN one becomes 0. Created times and exemplar
/// times keep nanosecond precision; a non-finite one is left out.
///
/// A series whose [`Value`] does not fit the family's type is written in the
/// field of its own shape, and [`from_proto`] rejects the result.
pub fn to_proto(family: &MetricFamily) -> pb::MetricFamily {
    let proto_type = match family.metric_type {
        MetricType::Counter => pb::MetricType::Counter,
        MetricType::Gauge | MetricType::Info | MetricType::StateSet => pb::MetricType::Gauge,
        MetricType::Histogram => pb::MetricType::Histogram,
        MetricType::GaugeHistogram => pb::MetricType::GaugeHistogram,
        MetricType::Summary => pb::MetricType::Summary,
        MetricType::Unknown => pb::MetricType::Untyped,
    };
    // The model names an info family like its `# TYPE` line, while a protobuf
    // family is named after its sample, which carries the `_info` suffix.
    let name = if family.metric_type == MetricType::Info {
        format!("{}_info", family.name)
    } else {
        family.name.clone()
    };
    pb::MetricFamily {
        name: Some(name),
        help: family.help.clone(),
        r#type: Some(proto_type as i32),
        metric: family
            .series
            .iter()
            .map(|series| metric_to_proto(series, proto_type))
            .collect(),
        unit: family.unit.clone(),
    }
}

/// The model family of the message `family`, checked as untrusted input.
///
/// An absent type is `COUNTER`, the proto2 default. The family name must match
/// `[a-zA-Z_:][a-zA-Z0-9_:]*` and label names `[a-zA-Z_][a-zA-Z0-9_]*`, each
/// at most once per metric or exemplar, and every metric must have the value
/// field its family's type names (`gauge` for `GAUGE`); the other value fields
/// are ignored. `UNTYPED` reads as [`MetricType::Unknown`]. An empty unit
/// reads as no unit.
///
/// Histograms keep their classic buckets, count and sum. The native (sparse)
/// histogram fields have no place in the model and are ignored, along with
/// native exemplars. When the classic buckets do not end with a `+Inf` bucket,
/// which protobuf leaves optional and native-only histograms lack, one is
/// added holding the count, as Prometheus does, so the series stays valid.
/// Bucket upper bounds must increase strictly.
///
/// # Errors
///
/// [`ProtoError::InvalidFamily`] naming the family and saying what is wrong.
pub fn from_proto(family: pb::MetricFamily) -> Result<MetricFamily, ProtoError> {
    let name = family.name.unwrap_or_default();
    if !is_metric_name(&name) {
        return Err(ProtoError::InvalidFamily {
            name: printable_name(&name),
            reason: "the name must match [a-zA-Z_:][a-zA-Z0-9_:]*: rename the family".to_owned(),
        });
    }
    let invalid = |reason: String| ProtoError::InvalidFamily {
        name: name.clone(),
        reason,
    };
    let proto_type = match family.r#type {
        None => pb::MetricType::Counter,
        Some(number) => pb::MetricType::try_from(number).map_err(|_| {
            invalid(format!(
                "unknown type {number}: use COUNTER, GAUGE, SUMMARY, UNTYPED, HISTOGRAM or GAUGE_HISTOGRAM"
            ))
        })?,
    };
    let metric_type = match proto_type {
        pb::MetricType::Counter => MetricType::Counter,
        pb::MetricType::Gauge => MetricType::Gauge,
        pb::MetricType::Summary => MetricType::Summary,
        pb::MetricType::Untyped => MetricType::Unknown,
        pb::MetricType::Histogram => MetricType::Histogram,
        pb::MetricType::GaugeHistogram => MetricType::GaugeHistogram,
    };
    let mut series = Vec::with_capacity(family.metric.len());
    for (index, metric) in family.metric.into_iter().enumerate() {
        let one = series_from_proto(metric, proto_type)
            .map_err(|reason| invalid(format!("metric at index {index}: {reason}")))?;
        series.push(one);
    }
    Ok(MetricFamily {
        name,
        metric_type,
        help: family.help,
        unit: family.unit.filter(|unit| !unit.is_empty()),
        series,
    })
}

fn metric_to_proto(series: &Series, proto_type: pb::MetricType) -> pb::Metric {
    let mut metric = pb::Metric {
        label: labels_to_proto(&series.labels),
        timestamp_ms: series.timestamp_ms,
        ..pb::Metric::default()
    };
    match &series.value {
        Value::Single(value) => match proto_type {
            pb::MetricType::Counter => {
                metric.counter = Some(Box::new(pb::Counter {
                    value: Some(*value),
                    ..pb::Counter::default()
                }));
            }
            pb::MetricType::Untyped => {
                metric.untyped = Some(pb::Untyped {
                    value: Some(*value),
                });
            }
            _ => {
                metric.gauge = Some(pb::Gauge {
                    value: Some(*value),
                });
            }
        },
        Value::Counter(counter) => {
            metric.counter = Some(Box::new(pb::Counter {
                value: Some(counter.total),
                exemplar: counter.exemplar.as_ref().map(exemplar_to_proto),
                created_timestamp: counter.created.and_then(seconds_to_timestamp),
            }));
        }
        Value::Histogram(histogram) => {
            metric.histogram = Some(Box::new(histogram_to_proto(histogram)));
        }
        Value::Summary(summary) => {
            metric.summary = Some(Box::new(pb::Summary {
                // Rounding first keeps a count like 2.9999999 from float
                // arithmetic at 3; the cast saturates and maps NaN to 0.
                sample_count: summary.count.map(|count| count.round() as u64),
                sample_sum: summary.sum,
                quantile: summary
                    .quantiles
                    .iter()
                    .map(|quantile| pb::Quantile {
                        quantile: Some(quantile.quantile),
                        value: Some(quantile.value),
                    })
                    .collect(),
                created_timestamp: summary.created.and_then(seconds_to_timestamp),
            }));
        }
    }
    metric
}

fn histogram_to_proto(histogram: &Histogram) -> pb::Histogram {
    let (sample_count, sample_count_float) = match histogram.count {
        Some(count) => count_to_proto(count),
        None => (None, None),
    };
    pb::Histogram {
        sample_count,
        sample_count_float,
        sample_sum: histogram.sum,
        bucket: histogram
            .buckets
            .iter()
            .map(|bucket| {
                let (cumulative_count, cumulative_count_float) = count_to_proto(bucket.count);
                pb::Bucket {
                    cumulative_count,
                    cumulative_count_float,
                    upper_bound: Some(bucket.upper_bound),
                    exemplar: bucket.exemplar.as_ref().map(exemplar_to_proto),
                }
            })
            .collect(),
        created_timestamp: histogram.created.and_then(seconds_to_timestamp),
        ..pb::Histogram::default()
    }
}

fn labels_to_proto(labels: &[Label]) -> Vec<pb::LabelPair> {
    labels
        .iter()
        .map(|label| pb::LabelPair {
            name: Some(label.name.clone()),
            value: Some(label.value.clone()),
        })
        .collect()
}

fn exemplar_to_proto(exemplar: &Exemplar) -> pb::Exemplar {
    pb::Exemplar {
        label: labels_to_proto(&exemplar.labels),
        value: Some(exemplar.value),
        timestamp: exemplar.timestamp.and_then(seconds_to_timestamp),
    }
}

/// A count as the integer field when `u64` holds it exactly, else as the float field.
fn count_to_proto(count: f64) -> (Option<u64>, Option<f64>) {
    if (0.0..U64_END).contains(&count) && count.fract() == 0.0 {
        (Some(count as u64), None)
    } else {
        (None, Some(count))
    }
}

/// A count from its integer and float fields: the float overrides when above 0.
///
/// A float that is not above 0 still counts when the integer is absent, so
/// that a negative or NaN count written by [`count_to_proto`] reads back.
fn count_from_proto(integer: Option<u64>, float: Option<f64>) -> Option<f64> {
    match (integer, float) {
        (_, Some(float)) if float > 0.0 => Some(float),
        (Some(integer), _) => Some(integer as f64),
        (None, float) => float,
    }
}

/// Seconds since the epoch as a timestamp, rounded to the nanosecond.
fn seconds_to_timestamp(seconds: f64) -> Option<pb::Timestamp> {
    if !seconds.is_finite() {
        return None;
    }
    let whole = seconds.floor();
    // The difference is exact, and in [0, 1), so `nanos` lands in [0, 1e9].
    let nanos = ((seconds - whole) * 1e9).round();
    // The casts saturate beyond ±2^63 seconds, far outside any real clock.
    let (whole, nanos) = if nanos >= 1e9 {
        ((whole as i64).saturating_add(1), 0)
    } else {
        (whole as i64, nanos as i32)
    };
    Some(pb::Timestamp {
        seconds: whole,
        nanos,
    })
}

fn timestamp_to_seconds(timestamp: pb::Timestamp) -> f64 {
    timestamp.seconds as f64 + f64::from(timestamp.nanos) / 1e9
}

fn series_from_proto(metric: pb::Metric, proto_type: pb::MetricType) -> Result<Series, String> {
    let labels = labels_from_proto(metric.label, "label")?;
    let missing = |field: &str| {
        format!(
            "no \"{field}\" field, which a {} family needs: put each value in the field that matches the family type",
            proto_type.as_str_name()
        )
    };
    let value = match proto_type {
        pb::MetricType::Counter => {
            let counter = metric.counter.ok_or_else(|| missing("counter"))?;
            Value::Counter(Counter {
                total: counter.value.unwrap_or(0.0),
                created: counter.created_timestamp.map(timestamp_to_seconds),
                exemplar: counter.exemplar.map(exemplar_from_proto).transpose()?,
            })
        }
        pb::MetricType::Gauge => {
            let gauge = metric.gauge.ok_or_else(|| missing("gauge"))?;
            Value::Single(gauge.value.unwrap_or(0.0))
        }
        pb::MetricType::Untyped => {
            let untyped = metric.untyped.ok_or_else(|| missing("untyped"))?;
            Value::Single(untyped.value.unwrap_or(0.0))
        }
        pb::MetricType::Summary => {
            let summary = metric.summary.ok_or_else(|| missing("summary"))?;
            Value::Summary(summary_from_proto(*summary))
        }
        pb::MetricType::Histogram | pb::MetricType::GaugeHistogram => {
            let histogram = metric.histogram.ok_or_else(|| missing("histogram"))?;
            Value::Histogram(histogram_from_proto(*histogram)?)
        }
    };
    Ok(Series {
        labels,
        value,
        timestamp_ms: metric.timestamp_ms,
    })
}

fn summary_from_proto(summary: pb::Summary) -> Summary {
    Summary {
        quantiles: summary
            .quantile
            .into_iter()
            .map(|quantile| Quantile {
                quantile: quantile.quantile.unwrap_or(0.0),
                value: quantile.value.unwrap_or(0.0),
            })
            .collect(),
        count: summary.sample_count.map(|count| count as f64),
        sum: summary.sample_sum,
        created: summary.created_timestamp.map(timestamp_to_seconds),
    }
}

fn histogram_from_proto(histogram: pb::Histogram) -> Result<Histogram, String> {
    let count = count_from_proto(histogram.sample_count, histogram.sample_count_float);
    let mut buckets: Vec<Bucket> = Vec::with_capacity(histogram.bucket.len() + 1);
    for bucket in histogram.bucket {
        let upper_bound = bucket.upper_bound.unwrap_or(0.0);
        if upper_bound.is_nan() {
            return Err(
                "a histogram bucket has a NaN upper bound: give each bucket a number or +Inf"
                    .to_owned(),
            );
        }
        if let Some(previous) = buckets.last()
            && previous.upper_bound >= upper_bound
        {
            return Err(format!(
                "histogram bucket upper bound {upper_bound} follows {}: list buckets once each, in increasing order",
                previous.upper_bound
            ));
        }
        buckets.push(Bucket {
            upper_bound,
            count: count_from_proto(bucket.cumulative_count, bucket.cumulative_count_float)
                .unwrap_or(0.0),
            exemplar: bucket.exemplar.map(exemplar_from_proto).transpose()?,
        });
    }
    if buckets
        .last()
        .is_none_or(|bucket| bucket.upper_bound != f64::INFINITY)
    {
        // Without a count, the last bucket is the best guess at the total,
        // since every observation at or below its bound was counted there.
        let total = count
            .or_else(|| buckets.last().map(|bucket| bucket.count))
            .unwrap_or(0.0);
        buckets.push(Bucket {
            upper_bound: f64::INFINITY,
            count: total,
            exemplar: None,
        });
    }
    Ok(Histogram {
        buckets,
        count,
        sum: histogram.sample_sum,
        created: histogram.created_timestamp.map(timestamp_to_seconds),
    })
}

fn exemplar_from_proto(exemplar: pb::Exemplar) -> Result<Exemplar, String> {
    Ok(Exemplar {
        labels: labels_from_proto(exemplar.label, "exemplar label")?,
        value: exemplar.value.unwrap_or(0.0),
        timestamp: exemplar.timestamp.map(timestamp_to_seconds),
    })
}

/// The labels of `pairs`, with their names checked; `what` names them in errors.
fn labels_from_proto(pairs: Vec<pb::LabelPair>, what: &str) -> Result<Vec<Label>, String> {
    let mut labels = Vec::with_capacity(pairs.len());
    for pair in pairs {
        let name = pair.name.unwrap_or_default();
        if !is_label_name(&name) {
            return Err(format!(
                "invalid {what} name \"{}\": label names must match [a-zA-Z_][a-zA-Z0-9_]*",
                printable_name(&name)
            ));
        }
        labels.push(Label {
            name,
            value: pair.value.unwrap_or_default(),
        });
    }
    if let Some(name) = duplicate_name(&labels) {
        return Err(format!(
            "{what} \"{name}\" appears twice: give each {what} name once"
        ));
    }
    Ok(labels)
}

/// A label name that occurs more than once in `labels`, if any.
fn duplicate_name(labels: &[Label]) -> Option<&str> {
    // Most label sets are small, and comparing every pair of a small set is
    // cheaper than sorting a copy of it; larger sets are sorted so that a
    // hostile metric with many labels costs n log n, not n².
    if labels.len() <= 16 {
        labels.iter().enumerate().find_map(|(index, label)| {
            labels[index + 1..]
                .iter()
                .any(|other| other.name == label.name)
                .then_some(label.name.as_str())
        })
    } else {
        let mut names: Vec<&str> = labels.iter().map(|label| label.name.as_str()).collect();
        names.sort_unstable();
        names
            .windows(2)
            .find(|pair| pair[0] == pair[1])
            .map(|pair| pair[0])
    }
}

/// An invalid metric or label name as it may appear in an error: escaped and cut short.
///
/// The name came from a peer, so it may hold newlines or quotes that would
/// garble a log line, and it may be megabytes long.
fn printable_name(name: &str) -> String {
    const MAX_CHARS: usize = 64;
    let mut printable: String = name
        .chars()
        .take(MAX_CHARS)
        .flat_map(char::escape_debug)
        .collect();
    if name.chars().nth(MAX_CHARS).is_some() {
        printable.push_str("...");
    }
    printable
}

/// Whether `name` matches `[a-zA-Z_:][a-zA-Z0-9_:]*`.
fn is_metric_name(name: &str) -> bool {
    let mut bytes = name.bytes();
    bytes
        .next()
        .is_some_and(|first| first.is_ascii_alphabetic() || first == b'_' || first == b':')
        && bytes.all(|byte| byte.is_ascii_alphanumeric() || byte == b'_' || byte == b':')
}

/// Whether `name` matches `[a-zA-Z_][a-zA-Z0-9_]*`.
fn is_label_name(name: &str) -> bool {
    let mut bytes = name.bytes();
    bytes
        .next()
        .is_some_and(|first| first.is_ascii_alphabetic() || first == b'_')
        && bytes.all(|byte| byte.is_ascii_alphanumeric() || byte == b'_')
}
