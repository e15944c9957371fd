//! Naming and documentation advice for metric families, in the manner of
//! `promtool check metrics`: findings that do not make an exposition
//! invalid but that Prometheus' conventions advise against.

use crate::model::{MetricFamily, MetricType};
use crate::parse::CheckReport;

/// One finding about one family.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Lint {
    /// Index of the family in the slice given to [`lint`].
    pub family: usize,
    /// A short stable identifier of the rule, e.g. `counter-suffix`.
    pub rule: &'static str,
    /// What is advised, naming the family.
    pub message: String,
}

/// Units that Prometheus wants written in their base form.
const NON_BASE_UNITS: [(&str, &str); 12] = [
    ("milliseconds", "seconds"),
    ("microseconds", "seconds"),
    ("nanoseconds", "seconds"),
    ("minutes", "seconds"),
    ("hours", "seconds"),
    ("days", "seconds"),
    ("kilobytes", "bytes"),
    ("megabytes", "bytes"),
    ("gigabytes", "bytes"),
    ("kibibytes", "bytes"),
    ("mebibytes", "bytes"),
    ("bits", "bytes"),
];

/// Abbreviations that should be spelled out in metric names.
const ABBREVIATIONS: [(&str, &str); 8] = [
    ("ms", "seconds"),
    ("us", "seconds"),
    ("ns", "seconds"),
    ("sec", "seconds"),
    ("secs", "seconds"),
    ("kb", "bytes"),
    ("mb", "bytes"),
    ("pct", "ratio"),
];

/// Checks every family against Prometheus' naming conventions.
pub fn lint(families: &[MetricFamily]) -> Vec<Lint> {
    let mut lints = Vec::new();
    for (index, family) in families.iter().enumerate() {
        let label_names = family
            .series
            .iter()
            .flat_map(|s| s.labels.iter())
            .map(|l| l.name.as_str());
        lint_family(index, family, label_names, &mut lints);
    }
    lints
}

/// [`lint`] for the families of a streamed check, which has their label
/// names but not their series.
pub fn lint_report(report: &CheckReport) -> Vec<Lint> {
    let mut lints = Vec::new();
    for (index, (family, stats)) in report.families.iter().zip(&report.stats).enumerate() {
        let label_names = stats.label_names.iter().map(String::as_str);
        lint_family(index, family, label_names, &mut lints);
    }
    lints
}

/// The findings about family `index`, whose series have `label_names`
/// (repeats allowed).
fn lint_family<'a>(
    index: usize,
    family: &MetricFamily,
    label_names: impl Iterator<Item = &'a str>,
    lints: &mut Vec<Lint>,
) {
    let mut add = |rule: &'static str, message: String| {
        lints.push(Lint {
            family: index,
            rule,
            message,
        });
    };
    let name = family.name.as_str();
    if family.help.as_deref().is_none_or(str::is_empty) {
        add(
            "help",
            format!("\"{name}\" has no help text: add a # HELP line"),
        );
    }
    let is_counter = family.metric_type == MetricType::Counter;
    if is_counter && !name.ends_with("_total") {
        add(
            "counter-suffix",
            format!("counter \"{name}\" should end in \"_total\""),
        );
    }
    if !is_counter && name.ends_with("_total") {
        add(
            "total-suffix",
            format!("\"{name}\" is not a counter and should not end in \"_total\""),
        );
    }
    let is_distribution = matches!(
        family.metric_type,
        MetricType::Histogram | MetricType::GaugeHistogram | MetricType::Summary
    );
    if !is_distribution {
        for suffix in ["_count", "_sum", "_bucket"] {
            if name.ends_with(suffix) {
                add(
                    "reserved-suffix",
                    format!(
                        "\"{name}\" is not a histogram or summary and should not end in \"{suffix}\""
                    ),
                );
            }
        }
    }
    if name.bytes().any(|b| b.is_ascii_uppercase()) {
        add(
            "snake-case",
            format!("\"{name}\" should be snake_case, not camelCase"),
        );
    }
    if name.contains(':') {
        add(
            "colon",
            format!("\"{name}\" contains \":\", which is reserved for recording rules"),
        );
    }
    let words: Vec<&str> = name.split(['_', ':']).collect();
    for (unit, base) in NON_BASE_UNITS {
        if words.contains(&unit) {
            add(
                "base-unit",
                format!("\"{name}\" should use the base unit \"{base}\" instead of \"{unit}\""),
            );
        }
    }
    for (abbreviation, unit) in ABBREVIATIONS {
        if words
            .iter()
            .skip(1)
            .any(|w| w.eq_ignore_ascii_case(abbreviation))
        {
            add(
                "unit-abbreviation",
                format!("\"{name}\" abbreviates a unit (\"{abbreviation}\"): spell out \"{unit}\""),
            );
        }
    }
    let mut camel_labels: Vec<&str> = label_names
        .filter(|n| n.bytes().any(|b| b.is_ascii_uppercase()))
        .collect();
    camel_labels.sort_unstable();
    camel_labels.dedup();
    for label in camel_labels {
        add(
            "label-snake-case",
            format!("label \"{label}\" of \"{name}\" should be snake_case, not camelCase"),
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::{Label, Series, Value};

    fn family(name: &str, metric_type: MetricType, help: Option<&str>) -> MetricFamily {
        MetricFamily {
            help: help.map(str::to_owned),
            ..MetricFamily::new(name, metric_type)
        }
    }

    fn rules(family: MetricFamily) -> Vec<&'static str> {
        lint(&[family]).into_iter().map(|l| l.rule).collect()
    }

    #[test]
    fn clean_families_have_no_findings() {
        assert!(
            rules(family(
                "http_requests_total",
                MetricType::Counter,
                Some("Requests.")
            ))
            .is_empty()
        );
        assert!(
            rules(family(
                "request_duration_seconds",
                MetricType::Histogram,
                Some("Latency.")
            ))
            .is_empty()
        );
        assert!(rules(family("memory_bytes", MetricType::Gauge, Some("Memory."))).is_empty());
    }

    #[test]
    fn each_rule_fires() {
        let cases: &[(&str, MetricType, Option<&str>, &str)] = &[
            ("requests_total", MetricType::Counter, None, "help"),
            ("requests_total", MetricType::Counter, Some(""), "help"),
            ("requests", MetricType::Counter, Some("h"), "counter-suffix"),
            ("queue_total", MetricType::Gauge, Some("h"), "total-suffix"),
            (
                "items_count",
                MetricType::Gauge,
                Some("h"),
                "reserved-suffix",
            ),
            (
                "items_bucket",
                MetricType::Unknown,
                Some("h"),
                "reserved-suffix",
            ),
            ("queueLength", MetricType::Gauge, Some("h"), "snake-case"),
            ("job:requests:rate5m", MetricType::Gauge, Some("h"), "colon"),
            (
                "latency_milliseconds",
                MetricType::Gauge,
                Some("h"),
                "base-unit",
            ),
            (
                "latency_ms",
                MetricType::Gauge,
                Some("h"),
                "unit-abbreviation",
            ),
        ];
        for &(name, metric_type, help, rule) in cases {
            let found = rules(family(name, metric_type, help));
            assert!(
                found.contains(&rule),
                "{name}: expected {rule}, found {found:?}"
            );
        }
    }

    #[test]
    fn camel_case_label_names_are_reported_once() {
        let mut f = family("x_total", MetricType::Counter, Some("h"));
        for i in 0..3 {
            f.series.push(Series {
                labels: vec![Label::new("statusCode", i.to_string())],
                value: Value::Single(1.0),
                timestamp_ms: None,
            });
        }
        assert_eq!(rules(f), vec!["label-snake-case"]);
    }
}
