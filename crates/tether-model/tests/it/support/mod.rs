//! Shared helpers of the integration tests: model generators and comparison.

use proptest::collection::vec;
use proptest::prelude::*;
use tether_model::{
    Bucket, Counter, Exemplar, Format, Histogram, Label, MetricFamily, MetricType, Quantile,
    Series, Summary, Value,
};

/// Compares two results by their debug text, so that NaN equals NaN and
/// -0.0 differs from 0.0, as a byte-level round trip requires.
pub(crate) fn same<T: std::fmt::Debug>(a: &T, b: &T) -> bool {
    format!("{a:?}") == format!("{b:?}")
}

/// Any float, special values included.
fn any_value() -> impl Strategy<Value = f64> {
    prop_oneof![
        4 => any::<f64>(),
        2 => (-1_000_000i64..1_000_000).prop_map(|v| v as f64),
        1 => Just(f64::NAN),
        1 => Just(f64::INFINITY),
        1 => Just(f64::NEG_INFINITY),
        1 => Just(-0.0),
        1 => 0.0f64..1.0,
    ]
}

/// A count: a non-negative integer or fraction, never NaN.
fn count_value() -> impl Strategy<Value = f64> {
    prop_oneof![
        3 => (0u64..1_000_000_000).prop_map(|v| v as f64),
        1 => 0.0f64..1e12,
    ]
}

fn label_name() -> impl Strategy<Value = String> {
    "[a-zA-Z_][a-zA-Z0-9_]{0,8}".prop_filter("reserved or special label name", |name| {
        !matches!(name.as_str(), "__name__" | "le" | "quantile")
    })
}

/// Any label value: escapes, quotes, newlines, non-ASCII.
fn label_value() -> impl Strategy<Value = String> {
    prop_oneof![
        3 => "[a-zA-Z0-9_./:-]{0,12}",
        1 => "[\\\\\"\n a-z]{0,8}",
        1 => ".{0,8}",
    ]
}

/// A label set with unique names; `index` makes it unique within a family.
fn labels(index: usize) -> impl Strategy<Value = Vec<Label>> {
    vec((label_name(), label_value()), 0..4).prop_map(move |pairs| {
        let mut labels: Vec<Label> = Vec::new();
        for (name, value) in pairs {
            if name != "i" && !labels.iter().any(|l| l.name == name) {
                labels.push(Label::new(name, value));
            }
        }
        labels.push(Label::new("i", index.to_string()));
        labels
    })
}

fn exemplar() -> impl Strategy<Value = Option<Exemplar>> {
    proptest::option::of(
        (
            vec(("[a-z_]{1,6}", "[a-z0-9]{0,10}"), 0..3),
            any_value(),
            proptest::option::of((0i64..2_000_000_000).prop_map(|s| s as f64 + 0.5)),
        )
            .prop_map(|(pairs, value, timestamp)| {
                let mut labels: Vec<Label> = Vec::new();
                for (name, value) in pairs {
                    if !labels.iter().any(|l| l.name == name) {
                        labels.push(Label::new(name, value));
                    }
                }
                Exemplar {
                    labels,
                    value,
                    timestamp,
                }
            }),
    )
}

/// Sorted, unique bucket bounds ending in +Inf (+Inf is required in
/// OpenMetrics and usual in text).
fn bounds() -> impl Strategy<Value = Vec<f64>> {
    vec(-1e6f64..1e6, 0..6).prop_map(|mut bounds| {
        bounds.sort_by(f64::total_cmp);
        bounds.dedup();
        bounds.retain(|b| *b != 0.0 || b.is_sign_positive());
        bounds.push(f64::INFINITY);
        bounds
    })
}

fn histogram(om: bool) -> impl Strategy<Value = Histogram> {
    (
        bounds(),
        vec(count_value(), 8),
        proptest::option::of(any_value()),
        proptest::option::of(count_value()),
        vec(exemplar(), 8),
    )
        .prop_map(move |(bounds, increments, sum, created, exemplars)| {
            let mut running = 0.0;
            let buckets: Vec<Bucket> = bounds
                .iter()
                .zip(&increments)
                .zip(exemplars)
                .scan(
                    f64::NEG_INFINITY,
                    |lower_bound, ((&upper_bound, &increment), exemplar)| {
                        running += increment.floor();
                        // An exemplar's value falls inside its bucket.
                        let inside = if upper_bound.is_finite() {
                            upper_bound
                        } else if lower_bound.is_finite() {
                            *lower_bound + 1.0
                        } else {
                            0.0
                        };
                        *lower_bound = upper_bound;
                        Some(Bucket {
                            upper_bound,
                            count: running,
                            exemplar: exemplar
                                .filter(|_| om)
                                .map(|e| Exemplar { value: inside, ..e }),
                        })
                    },
                )
                .collect();
            let total = buckets.last().map_or(0.0, |b| b.count);
            Histogram {
                buckets,
                // OpenMetrics wants `_sum` and `_count` together and the
                // count equal to the +Inf bucket.
                count: sum.map(|_| total),
                sum,
                created: if om { created } else { None },
            }
        })
}

fn summary(om: bool) -> impl Strategy<Value = Summary> {
    (
        vec(0.0f64..=1.0, 0..4),
        vec(any_value(), 4),
        proptest::option::of(count_value()),
        any_value(),
        proptest::option::of(count_value()),
    )
        .prop_map(move |(mut quantiles, values, count, sum, created)| {
            quantiles.sort_by(f64::total_cmp);
            quantiles.dedup();
            Summary {
                quantiles: quantiles
                    .into_iter()
                    .zip(values)
                    .map(|(quantile, value)| Quantile { quantile, value })
                    .collect(),
                count,
                // Keep at least one line per series.
                sum: Some(sum),
                created: if om { created } else { None },
            }
        })
}

fn value_for(metric_type: MetricType, om: bool) -> BoxedStrategy<Value> {
    match metric_type {
        MetricType::Counter => (
            if om {
                count_value().boxed()
            } else {
                any_value().boxed()
            },
            proptest::option::of(count_value()),
            exemplar(),
        )
            .prop_map(move |(total, created, exemplar)| {
                Value::Counter(Counter {
                    total,
                    created: if om { created } else { None },
                    exemplar: if om { exemplar } else { None },
                })
            })
            .boxed(),
        MetricType::Histogram => histogram(om).prop_map(Value::Histogram).boxed(),
        MetricType::GaugeHistogram => histogram(om)
            .prop_map(|h| Value::Histogram(Histogram { created: None, ..h }))
            .boxed(),
        MetricType::Summary => summary(om).prop_map(Value::Summary).boxed(),
        MetricType::Info => Just(Value::Single(1.0)).boxed(),
        MetricType::StateSet => prop_oneof![Just(0.0), Just(1.0)]
            .prop_map(Value::Single)
            .boxed(),
        MetricType::Gauge | MetricType::Unknown => any_value().prop_map(Value::Single).boxed(),
    }
}

fn timestamp() -> impl Strategy<Value = Option<i64>> {
    proptest::option::of(prop_oneof![
        any::<i64>().prop_map(|t| t / 1000),
        0i64..2_000_000_000_000,
    ])
}

fn help(om: bool) -> impl Strategy<Value = Option<String>> {
    // The text format cannot carry leading blanks in help: they separate
    // the name from the text.
    proptest::option::of(".{0,20}").prop_map(move |help| {
        help.map(|h| {
            if om {
                h
            } else {
                h.trim_start_matches([' ', '\t']).to_owned()
            }
        })
    })
}

fn metric_type(format: Format) -> impl Strategy<Value = MetricType> {
    let common = vec![
        MetricType::Counter,
        MetricType::Gauge,
        MetricType::Histogram,
        MetricType::Summary,
        MetricType::Unknown,
    ];
    let mut all = common.clone();
    all.extend([
        MetricType::GaugeHistogram,
        MetricType::Info,
        MetricType::StateSet,
    ]);
    proptest::sample::select(match format {
        Format::Text => common,
        Format::OpenMetrics => all,
    })
}

/// One family valid in `format`, named uniquely by `index`, that parses
/// back to itself after rendering.
pub(crate) fn family(format: Format, index: usize) -> impl Strategy<Value = MetricFamily> {
    let om = format == Format::OpenMetrics;
    (
        "[a-z][a-z_:]{0,8}",
        metric_type(format),
        help(om),
        proptest::option::of(proptest::sample::select(vec![
            "seconds", "bytes", "ratio", "celsius",
        ])),
        0usize..5,
    )
        .prop_flat_map(move |(stem, metric_type, help, unit, n_series)| {
            // `_f<index>` ends every name, so no family's name is another's
            // name plus a suffix such as `_count`.
            // Info and state set families take no unit.
            let takes_unit = om && !matches!(metric_type, MetricType::Info | MetricType::StateSet);
            let unit = if takes_unit { unit } else { None };
            // A state set's family name is also a label name: no colons.
            let stem = if metric_type == MetricType::StateSet {
                stem.replace(':', "_")
            } else {
                stem
            };
            let mut name = format!("{stem}_f{index}");
            if let Some(unit) = unit {
                name = format!("{name}_{unit}");
            }
            if metric_type == MetricType::Counter && om {
                name.push_str("_total");
            }
            let series: Vec<_> = (0..n_series)
                .map(|i| {
                    let state_label = name.clone();
                    (labels(i), value_for(metric_type, om), timestamp()).prop_map(
                        move |(mut labels, value, timestamp_ms)| {
                            if metric_type == MetricType::StateSet {
                                labels.push(Label::new(state_label.clone(), "state"));
                            }
                            Series {
                                labels,
                                value,
                                timestamp_ms,
                            }
                        },
                    )
                })
                .collect();
            let name = name.clone();
            let help = help.clone();
            series.prop_map(move |series| MetricFamily {
                name: name.clone(),
                metric_type,
                help: help.clone(),
                unit: unit.map(str::to_owned),
                series,
            })
        })
}

/// A whole exposition: up to `max` families with unique names.
pub(crate) fn families(format: Format, max: usize) -> impl Strategy<Value = Vec<MetricFamily>> {
    (0..=max).prop_flat_map(move |n| (0..n).map(|i| family(format, i)).collect::<Vec<_>>())
}
