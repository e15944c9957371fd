//! The fuzz properties run without a fuzzer: on generated input and on
//! input shaped like real drain bodies.

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD;
use proptest::prelude::*;
use tether_drain::{
    Statistic, VectorKind, VectorLimits, VectorMetric, VectorValue, parse_samples,
    parse_vector_line,
};

use crate::fuzz_property::{heroku, logplex, same_metrics, vector};

proptest! {
    #[test]
    fn arbitrary_drain_bodies_hold_the_logplex_property(input in prop::collection::vec(any::<u8>(), 0..2048)) {
        if let Err(violation) = logplex(&input) {
            prop_assert!(false, "{}", violation);
        }
    }

    #[test]
    fn drain_bodies_of_frames_hold_the_logplex_property(
        limit in any::<u8>(),
        messages in prop::collection::vec("<[0-9]{1,3}>1 [ -~]{0,12} [a-z]{1,4} [a-z.0-9]{1,6} - [ -~\r]{0,30}", 0..8),
        drop_last_newline in any::<bool>(),
    ) {
        // Arbitrary bytes rarely form frames; these always do.
        let mut input = vec![limit];
        for message in &messages {
            input.extend_from_slice(format!("{} {message}\n", message.len() + 1).as_bytes());
        }
        if drop_last_newline {
            input.pop();
        }
        if let Err(violation) = logplex(&input) {
            prop_assert!(false, "{}", violation);
        }
    }

    #[test]
    fn arbitrary_bytes_hold_the_vector_property(input in prop::collection::vec(any::<u8>(), 0..1024)) {
        if let Err(violation) = vector(&input) {
            prop_assert!(false, "{}", violation);
        }
    }

    #[test]
    fn arbitrary_base64_holds_the_vector_property(
        shape in any::<u8>(),
        payload in "[A-Za-z0-9+/]{0,64}={0,2}",
    ) {
        let mut input = vec![2, shape];
        input.extend_from_slice(payload.as_bytes());
        if let Err(violation) = vector(&input) {
            prop_assert!(false, "{}", violation);
        }
    }

    #[test]
    fn json_of_metrics_holds_the_vector_property(
        elements in prop::collection::vec(element(), 0..6),
        shape in any::<u8>(),
        cut in any::<prop::sample::Index>(),
    ) {
        let json = array(&elements);
        // Read as they are, under the default limits and small ones, and
        // cut short anywhere.
        for input in [
            [&[1u8][..], json.as_bytes()].concat(),
            [&[3u8, shape][..], json.as_bytes()].concat(),
            [&[1u8][..], &json.as_bytes()[..cut.index(json.len() + 1)]].concat(),
        ] {
            if let Err(violation) = vector(&input) {
                prop_assert!(false, "{}", violation);
            }
        }
        let base64 = [&[0u8][..], STANDARD.encode(&json).as_bytes()].concat();
        if let Err(violation) = vector(&base64) {
            prop_assert!(false, "{}", violation);
        }
    }

    #[test]
    fn json_of_metrics_reads_as_generated(elements in prop::collection::vec(element(), 0..6)) {
        let json = array(&elements);
        let line = parse_vector_line(STANDARD.encode(&json).as_bytes(), VectorLimits::default())
            .map_err(|error| TestCaseError::fail(format!("{json}: {error}")))?;
        let expected: Vec<VectorMetric> = elements.iter().filter_map(|(_, metric)| metric.clone()).collect();
        prop_assert!(same_metrics(&line.metrics, &expected), "{} read as {:?}", json, line);
        prop_assert_eq!(line.rejected.len(), elements.len() - expected.len(), "{}", json);
    }

    #[test]
    fn arbitrary_messages_hold_the_heroku_property(input in prop::collection::vec(any::<u8>(), 0..512)) {
        if let Err(violation) = heroku(&input) {
            prop_assert!(false, "{}", violation);
        }
    }

    #[test]
    fn key_value_lines_hold_the_heroku_property(
        tokens in prop::collection::vec(token(), 0..12),
        separators in prop::collection::vec(" {1,3}", 12),
        ending in prop::sample::select(vec!["", "\n", "\r\n", " ", "\""]),
    ) {
        let mut line = String::new();
        for (token, separator) in tokens.iter().zip(&separators) {
            line.push_str(token);
            line.push_str(separator);
        }
        line.push_str(ending);
        if let Err(violation) = heroku(line.as_bytes()) {
            prop_assert!(false, "{}", violation);
        }
    }

    #[test]
    fn sample_lines_read_as_generated(
        samples in prop::collection::vec((-1e12f64..1e12, prop::sample::select(UNITS.to_vec())), 1..8),
        source in "[A-Z_]{1,12}",
    ) {
        let mut line = format!("source={source}");
        for (index, (number, (unit, _))) in samples.iter().enumerate() {
            line.push_str(&format!(" sample#key-{index}={number}{unit}"));
        }
        let read = parse_samples(line.as_bytes()).ok_or_else(|| TestCaseError::fail(line.clone()))?;
        prop_assert_eq!(read.source, Some(source.as_str()));
        prop_assert_eq!(read.rejected, []);
        let expected: Vec<f64> = samples.iter().map(|(number, (_, scale))| number * scale).collect();
        let values: Vec<f64> = read.samples.iter().map(|&(_, value)| value).collect();
        prop_assert_eq!(values, expected, "{}", line);
    }
}

/// The units of Heroku's samples and what they multiply by.
const UNITS: [(&str, f64); 6] = [
    ("", 1.0),
    ("bytes", 1.0),
    ("pages", 1.0),
    ("kB", 1024.0),
    ("MB", 1048576.0),
    ("GB", 1073741824.0),
];

/// A token of a Heroku line: a pair with a plain, quoted or numeric value,
/// a `sample#`, router or source key, or a word without `=`.
fn token() -> impl Strategy<Value = String> {
    let key = prop_oneof![
        "[a-z_#-]{0,8}",
        "sample#[a-z_.-]{0,8}",
        prop::sample::select(vec![
            "at", "status", "service", "connect", "code", "method", "source", "addon", "dyno",
        ])
        .prop_map(str::to_owned),
    ];
    let value = prop_oneof![
        "[ -~]{0,10}".prop_map(|text| text.replace(' ', "")),
        "[ -~]{0,10}".prop_map(|text| format!("\"{text}\"")),
        "\"[a-z \\\\\"]{0,10}",
        (any::<f64>(), prop::sample::select(UNITS.to_vec()))
            .prop_map(|(number, (unit, _))| format!("{number}{unit}")),
        (
            "[+-]?[0-9]{0,4}[.]?[0-9]{0,3}([eE][+-]?[0-9]{0,3})?",
            "(ms|kB|MB|bytes|x)?"
        )
            .prop_map(|(number, unit)| format!("{number}{unit}")),
    ];
    prop_oneof![
        4 => (key, value).prop_map(|(key, value)| format!("{key}={value}")),
        1 => "[ -~]{0,8}".prop_map(|word| word.replace(['=', ' '], "")),
    ]
}

/// A JSON array of the elements' texts.
fn array(elements: &[(String, Option<VectorMetric>)]) -> String {
    let texts: Vec<&str> = elements.iter().map(|(text, _)| text.as_str()).collect();
    format!("[{}]", texts.join(","))
}

/// An element of a line as JSON text, and the metric it must read as
/// (`None` for one that must be refused).
fn element() -> impl Strategy<Value = (String, Option<VectorMetric>)> {
    prop_oneof![
        4 => good_element().prop_map(|(text, metric)| (text, Some(metric))),
        1 => prop::sample::select(vec![
            r#"{"metric":{"kind":"absolute","gauge":{"value":1}}}"#,
            r#"{"metric":{"name":"","kind":"absolute","gauge":{"value":1}}}"#,
            r#"{"metric":{"name":"n","kind":"relative","gauge":{"value":1}}}"#,
            r#"{"metric":{"name":"n","kind":"absolute","gauge":{"value":1},"counter":{"value":1}}}"#,
            r#"{"metric":{"name":"n","kind":"absolute","sketch":{"AgentDDSketch":{}}}}"#,
            r#"{"metric":{"name":"n","kind":"absolute","counter":{"value":"1"}}}"#,
            r#"{"metric":{"name":"n","kind":"absolute","distribution":{"samples":[{"value":1,"rate":-1}],"statistic":"summary"}}}"#,
            r#"{"metric":{"name":"n","kind":"absolute","aggregated_summary":{"quantiles":[{"quantile":2,"value":1}],"count":1,"sum":1}}}"#,
            r#"{"log":{"message":"hello"}}"#,
            r#"[]"#,
            r#"null"#,
        ])
        .prop_map(|text| (text.to_owned(), None)),
    ]
}

/// A finite number, from the whole range of f64 and from small integers.
fn number() -> impl Strategy<Value = f64> {
    prop_oneof![
        prop::num::f64::NORMAL | prop::num::f64::ZERO | prop::num::f64::SUBNORMAL,
        (-1000i32..1000).prop_map(f64::from),
    ]
}

/// A count: not negative.
fn count() -> impl Strategy<Value = f64> {
    prop_oneof![
        prop::num::f64::POSITIVE | prop::num::f64::ZERO,
        (0u32..1000).prop_map(f64::from),
    ]
    .prop_filter("finite", |count| count.is_finite())
}

fn json_string(text: &str) -> String {
    serde_json::to_string(text).expect("a string serializes")
}

fn json_number(number: f64) -> String {
    serde_json::to_string(&number).expect("a finite number serializes")
}

fn pairs_json(names: [&str; 2], pairs: &[(f64, f64)]) -> String {
    let pairs: Vec<String> = pairs
        .iter()
        .map(|&(a, b)| {
            format!(
                r#"{{"{}":{},"{}":{}}}"#,
                names[0],
                json_number(a),
                names[1],
                json_number(b)
            )
        })
        .collect();
    pairs.join(",")
}

/// A tag's value as JSON, and what it reads as.
fn tag_value() -> impl Strategy<Value = (String, Option<String>)> {
    prop_oneof![
        "[ -~é\n]{0,6}".prop_map(|value| (json_string(&value), Some(value))),
        Just(("null".to_owned(), None)),
        prop::collection::vec(prop::option::of("[a-z]{0,4}"), 0..4).prop_map(|values| {
            let texts: Vec<String> = values
                .iter()
                .map(|value| value.as_deref().map_or("null".to_owned(), json_string))
                .collect();
            let last = values.iter().rev().find_map(Clone::clone);
            (format!("[{}]", texts.join(",")), last)
        }),
    ]
}

/// A valid metric as JSON, and what it reads as.
fn good_element() -> impl Strategy<Value = (String, VectorMetric)> {
    let value = prop_oneof![
        number().prop_map(|value| (
            format!(r#""counter":{{"value":{}}}"#, json_number(value)),
            VectorValue::Counter(value)
        )),
        number().prop_map(|value| (
            format!(r#""gauge":{{"value":{}}}"#, json_number(value)),
            VectorValue::Gauge(value)
        )),
        prop::collection::vec("[a-z\"\\\\]{0,4}", 0..4).prop_map(|members| {
            let texts: Vec<String> = members.iter().map(|member| json_string(member)).collect();
            (
                format!(r#""set":{{"values":[{}]}}"#, texts.join(",")),
                VectorValue::Set(members),
            )
        }),
        (
            prop::collection::vec((number(), any::<u32>()), 0..4),
            any::<bool>()
        )
            .prop_map(|(samples, histogram)| {
                let texts: Vec<String> = samples
                    .iter()
                    .map(|&(value, rate)| {
                        format!(r#"{{"value":{},"rate":{rate}}}"#, json_number(value))
                    })
                    .collect();
                let (name, statistic) = if histogram {
                    ("histogram", Statistic::Histogram)
                } else {
                    ("summary", Statistic::Summary)
                };
                (
                    format!(
                        r#""distribution":{{"samples":[{}],"statistic":"{name}"}}"#,
                        texts.join(",")
                    ),
                    VectorValue::Distribution { samples, statistic },
                )
            }),
        (
            prop::collection::vec((number(), count()), 0..4),
            count(),
            number()
        )
            .prop_map(|(buckets, count, sum)| (
                format!(
                    r#""aggregated_histogram":{{"buckets":[{}],"count":{},"sum":{}}}"#,
                    pairs_json(["upper_limit", "count"], &buckets),
                    json_number(count),
                    json_number(sum)
                ),
                VectorValue::AggregatedHistogram {
                    buckets,
                    count,
                    sum
                }
            )),
        (
            prop::collection::vec((0.0f64..=1.0, number()), 0..4),
            count(),
            number()
        )
            .prop_map(|(quantiles, count, sum)| (
                format!(
                    r#""aggregated_summary":{{"quantiles":[{}],"count":{},"sum":{}}}"#,
                    pairs_json(["quantile", "value"], &quantiles),
                    json_number(count),
                    json_number(sum)
                ),
                VectorValue::AggregatedSummary {
                    quantiles,
                    count,
                    sum
                }
            )),
    ];
    (
        "[a-z_.\"é]{1,8}",
        prop::option::of("[a-z]{0,3}"),
        prop::collection::btree_map("[a-z]{1,3}", tag_value(), 0..4),
        any::<bool>(),
        value,
    )
        .prop_map(|(name, namespace, tags, absolute, (value_json, value))| {
            let tag_texts: Vec<String> = tags
                .iter()
                .map(|(key, (json, _))| format!("{}:{json}", json_string(key)))
                .collect();
            let kind = if absolute { "absolute" } else { "incremental" };
            let namespace_json = namespace.as_deref().map_or("null".to_owned(), json_string);
            let text = format!(
                r#"{{"metric":{{"name":{},"namespace":{namespace_json},"tags":{{{}}},"timestamp":"2024-01-01T00:00:00Z","kind":"{kind}",{value_json}}}}}"#,
                json_string(&name),
                tag_texts.join(",")
            );
            let metric = VectorMetric {
                name,
                namespace: namespace.filter(|namespace| !namespace.is_empty()),
                tags: tags
                    .into_iter()
                    .filter_map(|(key, (_, value))| Some((key, value?)))
                    .collect(),
                kind: if absolute {
                    VectorKind::Absolute
                } else {
                    VectorKind::Incremental
                },
                value,
            };
            (text, metric)
        })
}
