//! Conversions between the model and the `io.prometheus.client` messages, with
//! the validation that untrusted messages need.

use super::pb;
use crate::model::{is_valid_label_name, is_valid_metric_name};
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
    if !is_valid_metric_name(&name) {
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
    // -0.0 is in range but the integer field would lose its sign.
    if (0.0..U64_END).contains(&count) && count.fract() == 0.0 && count.is_sign_positive() {
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
    // The protobuf spec keeps nanos within 0..1e9; a peer may not. Carry
    // the excess into the seconds first, so that the value is the one
    // `seconds_to_timestamp` writes back.
    let seconds = timestamp
        .seconds
        .saturating_add(i64::from(timestamp.nanos.div_euclid(1_000_000_000)));
    let nanos = timestamp.nanos.rem_euclid(1_000_000_000);
    seconds as f64 + f64::from(nanos) / 1e9
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
        if !is_valid_label_name(&name) {
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

#[cfg(test)]
mod tests {
    use super::*;

    fn series(labels: &[(&str, &str)], value: Value) -> Series {
        Series {
            labels: labels
                .iter()
                .map(|(name, value)| Label::new(*name, *value))
                .collect(),
            value,
            timestamp_ms: None,
        }
    }

    fn family(name: &str, metric_type: MetricType, series: Vec<Series>) -> MetricFamily {
        MetricFamily {
            series,
            ..MetricFamily::new(name, metric_type)
        }
    }

    fn bucket(upper_bound: f64, count: f64) -> Bucket {
        Bucket {
            upper_bound,
            count,
            exemplar: None,
        }
    }

    fn exemplar(trace_id: &str, value: f64, timestamp: Option<f64>) -> Exemplar {
        Exemplar {
            labels: vec![Label::new("trace_id", trace_id)],
            value,
            timestamp,
        }
    }

    /// A one-metric family message of the given type.
    fn proto_family(name: &str, proto_type: Option<i32>, metric: pb::Metric) -> pb::MetricFamily {
        pb::MetricFamily {
            name: Some(name.to_owned()),
            r#type: proto_type,
            metric: vec![metric],
            ..pb::MetricFamily::default()
        }
    }

    fn gauge_metric(labels: &[(&str, &str)]) -> pb::Metric {
        pb::Metric {
            label: labels
                .iter()
                .map(|(name, value)| pb::LabelPair {
                    name: Some((*name).to_owned()),
                    value: Some((*value).to_owned()),
                })
                .collect(),
            gauge: Some(pb::Gauge { value: Some(1.0) }),
            ..pb::Metric::default()
        }
    }

    fn histogram_metric(histogram: pb::Histogram) -> pb::Metric {
        pb::Metric {
            histogram: Some(Box::new(histogram)),
            ..pb::Metric::default()
        }
    }

    /// The reason of an `InvalidFamily` error, or a panic naming what came instead.
    fn reason(result: Result<MetricFamily, ProtoError>) -> String {
        match result {
            Err(ProtoError::InvalidFamily { reason, .. }) => reason,
            other => panic!("expected InvalidFamily, got {other:?}"),
        }
    }

    fn round_trip_cases() -> Vec<(&'static str, MetricFamily)> {
        let mut counter = family(
            "http_requests_total",
            MetricType::Counter,
            vec![
                Series {
                    timestamp_ms: Some(1_700_000_000_000),
                    ..series(
                        &[("method", "GET"), ("code", "200")],
                        Value::Counter(Counter {
                            total: 1027.0,
                            created: Some(1_700_000_000.123),
                            exemplar: Some(exemplar("abc", 0.5, Some(1_700_000_100.5))),
                        }),
                    )
                },
                series(
                    &[("method", "POST")],
                    Value::Counter(Counter {
                        total: 3.5,
                        created: None,
                        exemplar: Some(exemplar("def", 1.0, None)),
                    }),
                ),
            ],
        );
        counter.help = Some("Requests served.\nBy method.".to_owned());

        let mut gauge = family(
            "room_temperature_celsius",
            MetricType::Gauge,
            vec![
                Series {
                    timestamp_ms: Some(-5),
                    ..series(&[("room", "kitchen")], Value::Single(-3.25))
                },
                series(&[("room", "")], Value::Single(f64::INFINITY)),
            ],
        );
        gauge.unit = Some("celsius".to_owned());

        let summary = family(
            "rpc_duration_seconds",
            MetricType::Summary,
            vec![
                series(
                    &[],
                    Value::Summary(Summary {
                        quantiles: vec![
                            Quantile {
                                quantile: 0.5,
                                value: 0.1,
                            },
                            Quantile {
                                quantile: 0.99,
                                value: 2.0,
                            },
                        ],
                        count: Some(10.0),
                        sum: Some(12.5),
                        created: Some(1_650_000_000.0),
                    }),
                ),
                series(
                    &[("service", "b")],
                    Value::Summary(Summary {
                        quantiles: vec![],
                        count: None,
                        sum: None,
                        created: None,
                    }),
                ),
            ],
        );

        let histogram = family(
            "request_seconds",
            MetricType::Histogram,
            vec![series(
                &[("path", "/")],
                Value::Histogram(Histogram {
                    buckets: vec![
                        bucket(0.1, 1.0),
                        Bucket {
                            exemplar: Some(exemplar("xyz", 0.7, Some(1_700_000_000.25))),
                            ..bucket(1.0, 5.0)
                        },
                        bucket(f64::INFINITY, 7.0),
                    ],
                    count: Some(7.0),
                    sum: Some(3.2),
                    created: Some(1_600_000_000.5),
                }),
            )],
        );

        let float_histogram = family(
            "weighted_seconds",
            MetricType::Histogram,
            vec![series(
                &[],
                Value::Histogram(Histogram {
                    buckets: vec![bucket(1.0, 0.5), bucket(f64::INFINITY, 2.75)],
                    count: Some(2.75),
                    sum: Some(1.0),
                    created: None,
                }),
            )],
        );

        let no_count_histogram = family(
            "bare_seconds",
            MetricType::Histogram,
            vec![series(
                &[],
                Value::Histogram(Histogram {
                    buckets: vec![bucket(f64::INFINITY, 0.0)],
                    count: None,
                    sum: None,
                    created: None,
                }),
            )],
        );

        let gauge_histogram = family(
            "queue_wait_seconds",
            MetricType::GaugeHistogram,
            vec![series(
                &[("queue", "a")],
                Value::Histogram(Histogram {
                    buckets: vec![
                        bucket(-10.0, 1.0),
                        bucket(10.0, 3.0),
                        bucket(f64::INFINITY, 4.0),
                    ],
                    count: Some(4.0),
                    sum: Some(-2.0),
                    created: None,
                }),
            )],
        );

        let mut empty = family("nothing_yet", MetricType::Gauge, vec![]);
        empty.help = Some(String::new());

        vec![
            ("counter with created and exemplars", counter),
            ("gauge with unit and timestamps", gauge),
            (
                "unknown",
                family(
                    "some_value",
                    MetricType::Unknown,
                    vec![series(&[("a", "1")], Value::Single(42.0))],
                ),
            ),
            ("summary", summary),
            ("histogram with bucket exemplar", histogram),
            ("histogram with float counts", float_histogram),
            ("histogram without count", no_count_histogram),
            ("gauge histogram", gauge_histogram),
            ("family without series", empty),
        ]
    }

    #[test]
    fn model_to_proto_to_model_is_identity() {
        for (case, original) in round_trip_cases() {
            let back = from_proto(to_proto(&original));
            assert_eq!(back.as_ref(), Ok(&original), "{case}");
        }
    }

    #[test]
    fn types_map_to_their_protobuf_types() {
        let cases = [
            (MetricType::Counter, pb::MetricType::Counter),
            (MetricType::Gauge, pb::MetricType::Gauge),
            (MetricType::Summary, pb::MetricType::Summary),
            (MetricType::Unknown, pb::MetricType::Untyped),
            (MetricType::Histogram, pb::MetricType::Histogram),
            (MetricType::GaugeHistogram, pb::MetricType::GaugeHistogram),
            (MetricType::Info, pb::MetricType::Gauge),
            (MetricType::StateSet, pb::MetricType::Gauge),
        ];
        for (model_type, proto_type) in cases {
            let proto = to_proto(&MetricFamily::new("x", model_type));
            assert_eq!(proto.r#type, Some(proto_type as i32), "{model_type:?}");
        }
    }

    #[test]
    fn single_values_go_in_the_field_of_the_family_type() {
        let value = || vec![series(&[], Value::Single(2.0))];
        let counter = to_proto(&family("c_total", MetricType::Counter, value()));
        let untyped = to_proto(&family("u", MetricType::Unknown, value()));
        let gauge = to_proto(&family("g", MetricType::Gauge, value()));
        assert_eq!(
            counter.metric[0].counter.as_ref().and_then(|c| c.value),
            Some(2.0)
        );
        assert_eq!(
            untyped.metric[0].untyped.as_ref().and_then(|u| u.value),
            Some(2.0)
        );
        assert_eq!(
            gauge.metric[0].gauge.as_ref().and_then(|g| g.value),
            Some(2.0)
        );
        // A plain value in a counter family reads back as a counter.
        assert_eq!(
            from_proto(counter).map(|family| family.series[0].value.clone()),
            Ok(Value::Counter(Counter {
                total: 2.0,
                created: None,
                exemplar: None
            }))
        );
    }

    #[test]
    fn info_becomes_a_gauge_named_after_its_sample() {
        let info = family(
            "build",
            MetricType::Info,
            vec![series(&[("version", "1.2.3")], Value::Single(1.0))],
        );
        let proto = to_proto(&info);
        assert_eq!(proto.name.as_deref(), Some("build_info"));
        let back = from_proto(proto).expect("an info family converts to a valid gauge");
        assert_eq!(
            back,
            family(
                "build_info",
                MetricType::Gauge,
                vec![series(&[("version", "1.2.3")], Value::Single(1.0))]
            )
        );
    }

    #[test]
    fn state_set_becomes_a_gauge_of_the_same_name() {
        let states = vec![
            series(&[("door", "open")], Value::Single(1.0)),
            series(&[("door", "closed")], Value::Single(0.0)),
        ];
        let state_set = family("door", MetricType::StateSet, states.clone());
        let back = from_proto(to_proto(&state_set)).expect("a state set converts to a valid gauge");
        assert_eq!(back, family("door", MetricType::Gauge, states));
    }

    #[test]
    fn counts_use_the_integer_field_when_it_holds_them_exactly() {
        let cases = [
            (0.0, Some(0), None),
            (7.0, Some(7), None),
            (2f64.powi(63), Some(1 << 63), None),
            (2.75, None, Some(2.75)),
            (-1.0, None, Some(-1.0)),
            (U64_END, None, Some(U64_END)),
            (f64::INFINITY, None, Some(f64::INFINITY)),
        ];
        for (count, integer, float) in cases {
            assert_eq!(count_to_proto(count), (integer, float), "{count}");
            let histogram = histogram_to_proto(&Histogram {
                buckets: vec![bucket(f64::INFINITY, count)],
                count: Some(count),
                sum: None,
                created: None,
            });
            assert_eq!(histogram.sample_count, integer, "{count}");
            assert_eq!(histogram.sample_count_float, float, "{count}");
            assert_eq!(histogram.bucket[0].cumulative_count, integer, "{count}");
            assert_eq!(histogram.bucket[0].cumulative_count_float, float, "{count}");
        }
        let (integer, float) = count_to_proto(f64::NAN);
        assert_eq!(integer, None);
        assert!(float.is_some_and(f64::is_nan));
    }

    #[test]
    fn float_counts_override_integer_counts_when_above_zero() {
        let cases = [
            (Some(3), Some(2.5), Some(2.5)),
            (Some(3), Some(0.5), Some(0.5)),
            (Some(3), Some(0.0), Some(3.0)),
            (Some(3), Some(-1.0), Some(3.0)),
            (Some(3), None, Some(3.0)),
            (None, Some(0.0), Some(0.0)),
            (None, Some(-1.0), Some(-1.0)),
            (None, None, None),
        ];
        for (integer, float, expected) in cases {
            assert_eq!(
                count_from_proto(integer, float),
                expected,
                "{integer:?} {float:?}"
            );
        }
    }

    #[test]
    fn summary_counts_are_rounded_to_integers() {
        let cases = [(2.6, 3), (2.4, 2), (-4.0, 0), (f64::NAN, 0)];
        for (count, expected) in cases {
            let proto = to_proto(&family(
                "s",
                MetricType::Summary,
                vec![series(
                    &[],
                    Value::Summary(Summary {
                        quantiles: vec![],
                        count: Some(count),
                        sum: None,
                        created: None,
                    }),
                )],
            ));
            let summary = proto.metric[0].summary.as_ref().expect("a summary metric");
            assert_eq!(summary.sample_count, Some(expected), "{count}");
        }
    }

    #[test]
    fn seconds_convert_to_timestamps_at_nanosecond_precision() {
        let cases = [
            (0.0, 0, 0),
            (1.5, 1, 500_000_000),
            (-1.5, -2, 500_000_000),
            (0.999_999_999_9, 1, 0),
            (1_700_000_000.25, 1_700_000_000, 250_000_000),
        ];
        for (seconds, whole, nanos) in cases {
            let timestamp = seconds_to_timestamp(seconds);
            assert_eq!(
                timestamp,
                Some(pb::Timestamp {
                    seconds: whole,
                    nanos
                }),
                "{seconds}"
            );
        }
        assert_eq!(seconds_to_timestamp(f64::NAN), None);
        assert_eq!(seconds_to_timestamp(f64::NEG_INFINITY), None);
        let timestamp = pb::Timestamp {
            seconds: -2,
            nanos: 500_000_000,
        };
        assert_eq!(timestamp_to_seconds(timestamp), -1.5);
    }

    #[test]
    fn absent_type_is_counter() {
        let metric = pb::Metric {
            counter: Some(Box::new(pb::Counter {
                value: Some(4.0),
                ..pb::Counter::default()
            })),
            ..pb::Metric::default()
        };
        let family = from_proto(proto_family("jobs_total", None, metric)).expect("a valid counter");
        assert_eq!(family.metric_type, MetricType::Counter);
        assert_eq!(
            family.series[0].value,
            Value::Counter(Counter {
                total: 4.0,
                created: None,
                exemplar: None
            })
        );
    }

    #[test]
    fn unknown_type_is_rejected() {
        let family = proto_family("x", Some(9), gauge_metric(&[]));
        let reason = reason(from_proto(family));
        assert!(
            reason.starts_with("unknown type 9: use COUNTER"),
            "{reason}"
        );
    }

    #[test]
    fn native_histogram_keeps_count_and_sum_in_one_infinite_bucket() {
        let native = pb::Histogram {
            sample_count: Some(7),
            sample_sum: Some(3.5),
            schema: Some(3),
            zero_threshold: Some(1e-128),
            zero_count: Some(1),
            positive_span: vec![pb::BucketSpan {
                offset: Some(0),
                length: Some(2),
            }],
            positive_delta: vec![4, -2],
            exemplars: vec![pb::Exemplar::default()],
            ..pb::Histogram::default()
        };
        let family = proto_family(
            "latency_seconds",
            Some(pb::MetricType::Histogram as i32),
            histogram_metric(native),
        );
        let family = from_proto(family).expect("a native histogram converts");
        assert_eq!(
            family.series[0].value,
            Value::Histogram(Histogram {
                buckets: vec![bucket(f64::INFINITY, 7.0)],
                count: Some(7.0),
                sum: Some(3.5),
                created: None,
            })
        );
    }

    #[test]
    fn classic_buckets_without_infinity_get_one_holding_the_count() {
        let buckets = vec![
            pb::Bucket {
                cumulative_count: Some(2),
                upper_bound: Some(1.0),
                ..pb::Bucket::default()
            },
            pb::Bucket {
                cumulative_count: Some(4),
                upper_bound: Some(5.0),
                ..pb::Bucket::default()
            },
        ];
        // With a count, the +Inf bucket holds it; without, the last bucket's count.
        let cases = [(Some(6), 6.0, Some(6.0)), (None, 4.0, None)];
        for (sample_count, infinite_count, count) in cases {
            let histogram = pb::Histogram {
                sample_count,
                bucket: buckets.clone(),
                ..pb::Histogram::default()
            };
            let family = proto_family(
                "h",
                Some(pb::MetricType::Histogram as i32),
                histogram_metric(histogram),
            );
            let family = from_proto(family).expect("a valid histogram");
            assert_eq!(
                family.series[0].value,
                Value::Histogram(Histogram {
                    buckets: vec![
                        bucket(1.0, 2.0),
                        bucket(5.0, 4.0),
                        bucket(f64::INFINITY, infinite_count)
                    ],
                    count,
                    sum: None,
                    created: None,
                }),
                "{sample_count:?}"
            );
        }
    }

    #[test]
    fn buckets_out_of_order_or_without_a_bound_are_rejected() {
        let cases: [(&[f64], &str); 4] = [
            (&[2.0, 1.0], "upper bound 1 follows 2"),
            (&[1.0, 1.0], "upper bound 1 follows 1"),
            (&[f64::INFINITY, 1.0], "upper bound 1 follows inf"),
            (&[1.0, f64::NAN], "NaN upper bound"),
        ];
        for (bounds, expected) in cases {
            let histogram = pb::Histogram {
                bucket: bounds
                    .iter()
                    .map(|bound| pb::Bucket {
                        upper_bound: Some(*bound),
                        ..pb::Bucket::default()
                    })
                    .collect(),
                ..pb::Histogram::default()
            };
            let family = proto_family(
                "h",
                Some(pb::MetricType::GaugeHistogram as i32),
                histogram_metric(histogram),
            );
            let reason = reason(from_proto(family));
            assert!(reason.contains(expected), "{bounds:?}: {reason}");
        }
    }

    #[test]
    fn metrics_need_the_value_field_of_their_family_type() {
        let counter = pb::Metric {
            counter: Some(Box::new(pb::Counter::default())),
            ..pb::Metric::default()
        };
        let summary = pb::Metric {
            summary: Some(Box::new(pb::Summary::default())),
            ..pb::Metric::default()
        };
        let cases = [
            (pb::MetricType::Gauge, counter.clone(), "\"gauge\""),
            (pb::MetricType::Counter, gauge_metric(&[]), "\"counter\""),
            (pb::MetricType::Untyped, gauge_metric(&[]), "\"untyped\""),
            (pb::MetricType::Summary, counter, "\"summary\""),
            (pb::MetricType::Histogram, summary, "\"histogram\""),
            (
                pb::MetricType::GaugeHistogram,
                pb::Metric::default(),
                "\"histogram\"",
            ),
        ];
        for (proto_type, metric, field) in cases {
            let family = proto_family("x", Some(proto_type as i32), metric);
            let reason = reason(from_proto(family));
            let expected = format!(
                "metric at index 0: no {field} field, which a {} family needs",
                proto_type.as_str_name()
            );
            assert!(reason.starts_with(&expected), "{reason}");
        }
    }

    #[test]
    fn errors_name_the_family_and_say_what_to_do() {
        let family = proto_family(
            "temperature",
            Some(pb::MetricType::Gauge as i32),
            pb::Metric::default(),
        );
        let error = from_proto(family).expect_err("a gauge metric without a gauge");
        assert_eq!(
            error.to_string(),
            "invalid metric family \"temperature\": metric at index 0: no \"gauge\" field, \
             which a GAUGE family needs: put each value in the field that matches the family type"
        );
    }

    #[test]
    fn family_names_must_match_the_metric_name_pattern() {
        let gauge = || Some(pb::MetricType::Gauge as i32);
        for bad in ["", "1abc", "a-b", "a b", "é", "a\u{0}"] {
            let reason = reason(from_proto(proto_family(bad, gauge(), gauge_metric(&[]))));
            assert!(
                reason.contains("[a-zA-Z_:][a-zA-Z0-9_:]*"),
                "{bad:?}: {reason}"
            );
        }
        for good in [":a", "_", "a:b_1", "Z9"] {
            let family = from_proto(proto_family(good, gauge(), gauge_metric(&[])));
            assert_eq!(family.map(|family| family.name), Ok(good.to_owned()));
        }
        let absent = pb::MetricFamily {
            name: None,
            ..proto_family("x", gauge(), gauge_metric(&[]))
        };
        assert!(matches!(
            from_proto(absent),
            Err(ProtoError::InvalidFamily { name, .. }) if name.is_empty()
        ));
    }

    #[test]
    fn invalid_names_in_errors_are_escaped_and_cut_short() {
        let hostile = format!("a\n\"b{}", "c".repeat(1000));
        let family = proto_family(&hostile, None, gauge_metric(&[]));
        let Err(ProtoError::InvalidFamily { name, .. }) = from_proto(family) else {
            panic!("a name with a newline is invalid");
        };
        assert!(name.starts_with("a\\n\\\"b"), "{name}");
        assert!(name.ends_with("..."), "{name}");
        assert!(name.len() < 100, "{}", name.len());
    }

    #[test]
    fn label_names_must_match_the_label_name_pattern() {
        for bad in ["", "1a", "a:b", "a-b", "é"] {
            let family = proto_family("x", Some(1), gauge_metric(&[("ok", "1"), (bad, "v")]));
            let reason = reason(from_proto(family));
            assert!(
                reason.starts_with("metric at index 0: invalid label name"),
                "{bad:?}: {reason}"
            );
        }
        let family = proto_family("x", Some(1), gauge_metric(&[("_a", "1"), ("B_9", "")]));
        assert!(from_proto(family).is_ok());
    }

    #[test]
    fn exemplar_labels_are_checked_like_metric_labels() {
        let with_exemplar_labels = |names: &[&str]| pb::Metric {
            counter: Some(Box::new(pb::Counter {
                value: Some(1.0),
                exemplar: Some(pb::Exemplar {
                    label: names
                        .iter()
                        .map(|name| pb::LabelPair {
                            name: Some((*name).to_owned()),
                            value: Some("v".to_owned()),
                        })
                        .collect(),
                    ..pb::Exemplar::default()
                }),
                ..pb::Counter::default()
            })),
            ..pb::Metric::default()
        };
        let cases = [
            (
                &["bad-name"][..],
                "invalid exemplar label name \"bad-name\"",
            ),
            (&["id", "id"][..], "exemplar label \"id\" appears twice"),
        ];
        for (names, expected) in cases {
            let family = proto_family("x_total", None, with_exemplar_labels(names));
            let reason = reason(from_proto(family));
            assert!(reason.contains(expected), "{reason}");
        }
    }

    #[test]
    fn duplicate_label_names_are_rejected() {
        let many: Vec<String> = (0..20).map(|index| format!("l{index}")).collect();
        let mut large: Vec<(&str, &str)> = many.iter().map(|name| (name.as_str(), "v")).collect();
        large.push(("l7", "again"));
        let cases = [
            vec![("job", "a"), ("job", "b")],
            vec![("a", "1"), ("job", "a"), ("b", "2"), ("job", "a")],
            large,
        ];
        for labels in cases {
            let family = proto_family("x", Some(1), gauge_metric(&labels));
            let reason = reason(from_proto(family));
            assert!(reason.contains("appears twice"), "{reason}");
        }
        // Both ways of looking agree on which name repeats.
        let labels: Vec<Label> = many.iter().map(|name| Label::new(name, "v")).collect();
        assert_eq!(duplicate_name(&labels), None);
        let mut repeated = labels.clone();
        repeated.push(Label::new("l3", "w"));
        assert_eq!(duplicate_name(&repeated), Some("l3"));
        assert_eq!(duplicate_name(&repeated[..3]), None);
        assert_eq!(
            duplicate_name(&[Label::new("a", "1"), Label::new("a", "2")]),
            Some("a")
        );
    }

    #[test]
    fn an_empty_unit_is_no_unit() {
        let family = pb::MetricFamily {
            unit: Some(String::new()),
            ..proto_family("x", Some(1), gauge_metric(&[]))
        };
        assert_eq!(from_proto(family).map(|family| family.unit), Ok(None));
    }
}
