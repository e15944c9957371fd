//! Rendering metric families as text 0.0.4 or OpenMetrics 1.0.
//!
//! Output is deterministic: families and series in the order given, labels
//! in the order given, one HELP and one TYPE line per family. The renderer
//! writes into a caller's buffer and allocates nothing else, so a scrape
//! can reuse one buffer.

use memchr::{memchr2, memchr3};

use crate::model::{Exemplar, Label, MetricFamily, MetricType, Value};
use crate::parse::Format;

/// Renders `families` in `format` into `out`, with OpenMetrics' `# EOF`.
///
/// Family names are assumed unique; the caller merges families first (the
/// parser's output always satisfies this).
pub fn render(families: &[MetricFamily], format: Format, out: &mut Vec<u8>) {
    for family in families {
        render_family(family, format, out);
    }
    render_end(format, out);
}

/// Writes what ends an exposition: `# EOF` for OpenMetrics, nothing for text.
pub fn render_end(format: Format, out: &mut Vec<u8>) {
    if format == Format::OpenMetrics {
        out.extend_from_slice(b"# EOF\n");
    }
}

/// Renders one family (metadata and series) in `format` into `out`.
pub fn render_family(family: &MetricFamily, format: Format, out: &mut Vec<u8>) {
    render_metadata(family, format, out);
    render_series(family, format, None, out);
}

/// Labels added to every series as it renders, as Prometheus adds a
/// target's labels: a series label of the same name is kept as
/// `exported_<name>` (again prefixed until it is unique).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct TargetLabels {
    labels: Vec<Label>,
    /// `labels` rendered once as `a="x",b="y"`.
    rendered: Vec<u8>,
}

impl TargetLabels {
    /// Target labels from name/value pairs; names are assumed unique.
    pub fn new(labels: Vec<Label>) -> TargetLabels {
        let mut rendered = Vec::new();
        write_labels(&mut rendered, &labels);
        // Kept for the life of an agent: drop the renderer's growth room.
        rendered.shrink_to_fit();
        TargetLabels { labels, rendered }
    }

    /// The labels.
    pub fn labels(&self) -> &[Label] {
        &self.labels
    }
}

/// The name a family's lines start with in `format`.
fn line_name(family: &MetricFamily, format: Format) -> std::borrow::Cow<'_, str> {
    match (format, family.metric_type) {
        // Info metrics are gauges named `<name>_info` in 0.0.4, as
        // Prometheus stores them.
        (Format::Text, MetricType::Info) => format!("{}_info", family.name).into(),
        // OpenMetrics names the counter family without `_total`.
        (Format::OpenMetrics, MetricType::Counter) => family
            .name
            .strip_suffix("_total")
            .unwrap_or(&family.name)
            .into(),
        _ => family.name.as_str().into(),
    }
}

/// Writes a family's `# HELP`, `# TYPE` (and OpenMetrics `# UNIT`) lines.
pub fn render_metadata(family: &MetricFamily, format: Format, out: &mut Vec<u8>) {
    let name = line_name(family, format);
    let om = format == Format::OpenMetrics;
    if let Some(help) = &family.help {
        out.extend_from_slice(b"# HELP ");
        out.extend_from_slice(name.as_bytes());
        out.push(b' ');
        write_escaped_help(out, help, om);
        out.push(b'\n');
    }
    out.extend_from_slice(b"# TYPE ");
    out.extend_from_slice(name.as_bytes());
    out.push(b' ');
    let type_name = if om {
        family.metric_type.openmetrics_name()
    } else {
        family.metric_type.text_name()
    };
    out.extend_from_slice(type_name.as_bytes());
    out.push(b'\n');
    if let Some(unit) = family.unit.as_deref().filter(|_| om) {
        // OpenMetrics requires the unit to end the family name; a unit that
        // does not is left out rather than written into an invalid output.
        let is_suffix = name
            .strip_suffix(unit)
            .is_some_and(|stem| stem.len() > 1 && stem.ends_with('_'));
        if is_suffix {
            out.extend_from_slice(b"# UNIT ");
            out.extend_from_slice(name.as_bytes());
            out.push(b' ');
            out.extend_from_slice(unit.as_bytes());
            out.push(b'\n');
        }
    }
}

/// Writes a family's sample lines, with `target` labels added to each.
pub fn render_series(
    family: &MetricFamily,
    format: Format,
    target: Option<&TargetLabels>,
    out: &mut Vec<u8>,
) {
    let name = line_name(family, format);
    let name = name.as_ref();
    let om = format == Format::OpenMetrics;
    let mut labels = Vec::new();
    for series in &family.series {
        let ts = series.timestamp_ms;
        render_series_labels(&mut labels, target, &series.labels);
        match &series.value {
            Value::Single(value) => {
                let suffix = if om && family.metric_type == MetricType::Info {
                    "_info"
                } else {
                    ""
                };
                write_line_prerendered(out, name, suffix, &labels, None, *value, ts, format);
            }
            Value::Counter(counter) => {
                let suffix = if om { "_total" } else { "" };
                write_line_prerendered(out, name, suffix, &labels, None, counter.total, ts, format);
                if om {
                    if let Some(exemplar) = &counter.exemplar {
                        write_exemplar(out, exemplar);
                    }
                    if let Some(created) = counter.created {
                        write_line_prerendered(
                            out, name, "_created", &labels, None, created, ts, format,
                        );
                    }
                }
            }
            Value::Histogram(histogram) => {
                // Gauge histograms are histograms in 0.0.4; in OpenMetrics
                // they count with `_gcount`/`_gsum` and have no creation time.
                let gauge = om && family.metric_type == MetricType::GaugeHistogram;
                for bucket in &histogram.buckets {
                    write_line_prerendered(
                        out,
                        name,
                        "_bucket",
                        &labels,
                        Some(("le", bucket.upper_bound)),
                        bucket.count,
                        ts,
                        format,
                    );
                    if let Some(exemplar) = bucket.exemplar.as_ref().filter(|_| om) {
                        write_exemplar(out, exemplar);
                    }
                }
                let (count_suffix, sum_suffix) = if gauge {
                    ("_gcount", "_gsum")
                } else {
                    ("_count", "_sum")
                };
                if let Some(count) = histogram.count {
                    write_line_prerendered(
                        out,
                        name,
                        count_suffix,
                        &labels,
                        None,
                        count,
                        ts,
                        format,
                    );
                }
                if let Some(sum) = histogram.sum {
                    write_line_prerendered(out, name, sum_suffix, &labels, None, sum, ts, format);
                }
                if let Some(created) = histogram.created.filter(|_| om && !gauge) {
                    write_line_prerendered(
                        out, name, "_created", &labels, None, created, ts, format,
                    );
                }
            }
            Value::Summary(summary) => {
                for quantile in &summary.quantiles {
                    write_line_prerendered(
                        out,
                        name,
                        "",
                        &labels,
                        Some(("quantile", quantile.quantile)),
                        quantile.value,
                        ts,
                        format,
                    );
                }
                if let Some(count) = summary.count {
                    write_line_prerendered(out, name, "_count", &labels, None, count, ts, format);
                }
                if let Some(sum) = summary.sum {
                    write_line_prerendered(out, name, "_sum", &labels, None, sum, ts, format);
                }
                if let Some(created) = summary.created.filter(|_| om) {
                    write_line_prerendered(
                        out, name, "_created", &labels, None, created, ts, format,
                    );
                }
            }
        }
    }
}

/// Renders a series' labels, after the target's, into `buf`.
fn render_series_labels(buf: &mut Vec<u8>, target: Option<&TargetLabels>, labels: &[Label]) {
    buf.clear();
    let Some(target) = target else {
        write_labels(buf, labels);
        return;
    };
    buf.extend_from_slice(&target.rendered);
    for label in labels {
        if !buf.is_empty() {
            buf.push(b',');
        }
        let clashes = |name: &str| target.labels.iter().any(|t| t.name == name);
        if clashes(&label.name) {
            // Rare: find the first `exported_…` name free in both sets.
            let mut name = format!("exported_{}", label.name);
            while clashes(&name) || labels.iter().any(|l| l.name == name) {
                name.insert_str(0, "exported_");
            }
            buf.extend_from_slice(name.as_bytes());
        } else {
            buf.extend_from_slice(label.name.as_bytes());
        }
        buf.extend_from_slice(b"=\"");
        write_escaped_label_value(buf, &label.value);
        buf.push(b'"');
    }
}

/// Writes `name+suffix{labels,extra} value[ ts]\n`, with the labels
/// already rendered (every line of a series shares them).
#[allow(
    clippy::too_many_arguments,
    reason = "one line's parts, kept flat for the hot path"
)]
fn write_line_prerendered(
    out: &mut Vec<u8>,
    name: &str,
    suffix: &str,
    labels: &[u8],
    extra: Option<(&str, f64)>,
    value: f64,
    timestamp_ms: Option<i64>,
    format: Format,
) {
    out.extend_from_slice(name.as_bytes());
    out.extend_from_slice(suffix.as_bytes());
    if !labels.is_empty() || extra.is_some() {
        out.push(b'{');
        out.extend_from_slice(labels);
        write_extra_label(out, !labels.is_empty(), extra);
        out.push(b'}');
    }
    finish_line(out, value, timestamp_ms, format);
}

fn write_extra_label(out: &mut Vec<u8>, comma: bool, extra: Option<(&str, f64)>) {
    if let Some((label, bound)) = extra {
        if comma {
            out.push(b',');
        }
        out.extend_from_slice(label.as_bytes());
        out.extend_from_slice(b"=\"");
        write_float(out, bound);
        out.push(b'"');
    }
}

fn finish_line(out: &mut Vec<u8>, value: f64, timestamp_ms: Option<i64>, format: Format) {
    out.push(b' ');
    write_float(out, value);
    if let Some(ts) = timestamp_ms {
        out.push(b' ');
        match format {
            Format::Text => {
                out.extend_from_slice(itoa::Buffer::new().format(ts).as_bytes());
            }
            Format::OpenMetrics => write_seconds_from_ms(out, ts),
        }
    }
    out.push(b'\n');
}

/// Appends ` # {labels} value[ timestamp]` to the line just written.
fn write_exemplar(out: &mut Vec<u8>, exemplar: &Exemplar) {
    // The line ends with the newline `finish_line` wrote; put it back last.
    out.pop();
    out.extend_from_slice(b" # {");
    write_labels(out, &exemplar.labels);
    out.extend_from_slice(b"} ");
    write_float(out, exemplar.value);
    if let Some(ts) = exemplar.timestamp {
        out.push(b' ');
        write_float(out, ts);
    }
    out.push(b'\n');
}

fn write_labels(out: &mut Vec<u8>, labels: &[Label]) {
    for (i, label) in labels.iter().enumerate() {
        if i > 0 {
            out.push(b',');
        }
        out.extend_from_slice(label.name.as_bytes());
        out.extend_from_slice(b"=\"");
        write_escaped_label_value(out, &label.value);
        out.push(b'"');
    }
}

/// Escapes `\`, `"` and newline in a label value.
fn write_escaped_label_value(out: &mut Vec<u8>, value: &str) {
    let bytes = value.as_bytes();
    let mut start = 0;
    while let Some(i) = memchr3(b'\\', b'"', b'\n', &bytes[start..]) {
        let at = start + i;
        out.extend_from_slice(&bytes[start..at]);
        out.extend_from_slice(match bytes[at] {
            b'\\' => b"\\\\",
            b'"' => b"\\\"",
            _ => b"\\n",
        });
        start = at + 1;
    }
    out.extend_from_slice(&bytes[start..]);
}

/// Escapes help text: `\` and newline, and `"` too in OpenMetrics.
fn write_escaped_help(out: &mut Vec<u8>, help: &str, escape_quote: bool) {
    if !escape_quote {
        let bytes = help.as_bytes();
        let mut start = 0;
        while let Some(i) = memchr2(b'\\', b'\n', &bytes[start..]) {
            let at = start + i;
            out.extend_from_slice(&bytes[start..at]);
            out.extend_from_slice(if bytes[at] == b'\\' { b"\\\\" } else { b"\\n" });
            start = at + 1;
        }
        out.extend_from_slice(&bytes[start..]);
        return;
    }
    write_escaped_label_value(out, help);
}

/// Writes a float so that Go's `ParseFloat` (and Prometheus) reads back the
/// same value: integers without a fraction, others in shortest form.
pub(crate) fn write_float(out: &mut Vec<u8>, value: f64) {
    if value.is_nan() {
        out.extend_from_slice(b"NaN");
    } else if value.is_infinite() {
        out.extend_from_slice(if value > 0.0 { b"+Inf" } else { b"-Inf" });
    } else if value == value.trunc() && value.abs() < 9.2e18 {
        if value == 0.0 && value.is_sign_negative() {
            out.extend_from_slice(b"-0");
        } else {
            #[allow(
                clippy::cast_possible_truncation,
                reason = "integral and within i64, so exact"
            )]
            let integer = value as i64;
            out.extend_from_slice(itoa::Buffer::new().format(integer).as_bytes());
        }
    } else {
        out.extend_from_slice(ryu::Buffer::new().format_finite(value).as_bytes());
    }
}

/// Writes milliseconds as OpenMetrics seconds: `1700000000.123`.
fn write_seconds_from_ms(out: &mut Vec<u8>, ms: i64) {
    let negative = ms < 0;
    let abs = ms.unsigned_abs();
    if negative {
        out.push(b'-');
    }
    out.extend_from_slice(itoa::Buffer::new().format(abs / 1000).as_bytes());
    let fraction = abs % 1000;
    if fraction != 0 {
        let digits = [
            b'.',
            b'0' + u8::try_from(fraction / 100).unwrap_or(0),
            b'0' + u8::try_from(fraction / 10 % 10).unwrap_or(0),
            b'0' + u8::try_from(fraction % 10).unwrap_or(0),
        ];
        out.extend_from_slice(&digits);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::{Counter, Series};

    fn rendered(family: &MetricFamily, format: Format, target: Option<&TargetLabels>) -> String {
        let mut out = Vec::new();
        render_metadata(family, format, &mut out);
        render_series(family, format, target, &mut out);
        String::from_utf8(out).expect("renderer writes UTF-8")
    }

    #[test]
    fn target_labels_come_first_and_clashing_ones_are_exported() {
        let mut family = MetricFamily::new("up", MetricType::Gauge);
        family.series.push(Series {
            labels: vec![
                Label::new("instance", "a"),
                Label::new("exported_instance", "b"),
                Label::new("x", "1"),
            ],
            value: Value::Single(1.0),
            timestamp_ms: None,
        });
        family.series.push(Series {
            labels: vec![],
            value: Value::Single(0.0),
            timestamp_ms: None,
        });
        let target =
            TargetLabels::new(vec![Label::new("job", "j"), Label::new("instance", "i\"q")]);
        assert_eq!(
            rendered(&family, Format::Text, Some(&target)),
            "# TYPE up gauge\n\
             up{job=\"j\",instance=\"i\\\"q\",exported_exported_instance=\"a\",exported_instance=\"b\",x=\"1\"} 1\n\
             up{job=\"j\",instance=\"i\\\"q\"} 0\n"
        );
    }

    #[test]
    fn counters_take_total_and_created_in_openmetrics_only() {
        let mut family = MetricFamily::new("requests_total", MetricType::Counter);
        family.help = Some("Requests \"served\".\nAll.".to_owned());
        family.series.push(Series {
            labels: vec![Label::new("code", "200")],
            value: Value::Counter(Counter {
                total: 3.0,
                created: Some(1_700_000_000.5),
                exemplar: None,
            }),
            timestamp_ms: Some(1_700_000_000_123),
        });
        assert_eq!(
            rendered(&family, Format::Text, None),
            "# HELP requests_total Requests \"served\".\\nAll.\n\
             # TYPE requests_total counter\n\
             requests_total{code=\"200\"} 3 1700000000123\n"
        );
        assert_eq!(
            rendered(&family, Format::OpenMetrics, None),
            "# HELP requests Requests \\\"served\\\".\\nAll.\n\
             # TYPE requests counter\n\
             requests_total{code=\"200\"} 3 1700000000.123\n\
             requests_created{code=\"200\"} 1700000000.5 1700000000.123\n"
        );
    }

    #[test]
    fn floats_render_as_go_reads_them() {
        let cases: &[(f64, &str)] = &[
            (0.0, "0"),
            (-0.0, "-0"),
            (1.0, "1"),
            (-42.0, "-42"),
            (0.1, "0.1"),
            (1e15, "1000000000000000"),
            (1e19, "1e19"),
            (123_456_789_012_345.0, "123456789012345"),
            (1.5e-7, "1.5e-7"),
            (f64::INFINITY, "+Inf"),
            (f64::NEG_INFINITY, "-Inf"),
            (f64::NAN, "NaN"),
        ];
        for &(value, expected) in cases {
            let mut out = Vec::new();
            write_float(&mut out, value);
            assert_eq!(String::from_utf8_lossy(&out), expected, "{value:?}");
        }
    }

    #[test]
    fn openmetrics_timestamps_are_seconds_with_milliseconds() {
        let cases: &[(i64, &str)] = &[
            (0, "0"),
            (1_500, "1.500"),
            (-1_500, "-1.500"),
            (-5, "-0.005"),
            (7_000, "7"),
        ];
        for &(ms, expected) in cases {
            let mut out = Vec::new();
            write_seconds_from_ms(&mut out, ms);
            assert_eq!(String::from_utf8_lossy(&out), expected, "{ms}");
        }
    }
}
