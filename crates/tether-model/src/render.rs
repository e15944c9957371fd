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
    match format {
        Format::Text => render_family_text(family, out),
        Format::OpenMetrics => render_family_openmetrics(family, out),
    }
}

fn render_family_text(family: &MetricFamily, out: &mut Vec<u8>) {
    // Info metrics are gauges named `<name>_info` in 0.0.4, as Prometheus
    // stores them.
    let info_name;
    let name = if family.metric_type == MetricType::Info {
        info_name = format!("{}_info", family.name);
        info_name.as_str()
    } else {
        family.name.as_str()
    };
    if let Some(help) = &family.help {
        out.extend_from_slice(b"# HELP ");
        out.extend_from_slice(name.as_bytes());
        out.push(b' ');
        write_escaped_help(out, help, false);
        out.push(b'\n');
    }
    out.extend_from_slice(b"# TYPE ");
    out.extend_from_slice(name.as_bytes());
    out.push(b' ');
    out.extend_from_slice(family.metric_type.text_name().as_bytes());
    out.push(b'\n');
    let mut labels_buf = Vec::new();
    for series in &family.series {
        let ts = series.timestamp_ms;
        match &series.value {
            Value::Single(value) => write_line(
                out,
                name,
                "",
                &series.labels,
                None,
                *value,
                ts,
                Format::Text,
            ),
            Value::Counter(counter) => {
                write_line(
                    out,
                    name,
                    "",
                    &series.labels,
                    None,
                    counter.total,
                    ts,
                    Format::Text,
                );
            }
            Value::Histogram(histogram) => {
                render_labels_into(&mut labels_buf, &series.labels);
                for bucket in &histogram.buckets {
                    write_line_prerendered(
                        out,
                        name,
                        "_bucket",
                        &labels_buf,
                        Some(("le", bucket.upper_bound)),
                        bucket.count,
                        ts,
                        Format::Text,
                    );
                }
                if let Some(sum) = histogram.sum {
                    write_line_prerendered(
                        out,
                        name,
                        "_sum",
                        &labels_buf,
                        None,
                        sum,
                        ts,
                        Format::Text,
                    );
                }
                if let Some(count) = histogram.count {
                    write_line_prerendered(
                        out,
                        name,
                        "_count",
                        &labels_buf,
                        None,
                        count,
                        ts,
                        Format::Text,
                    );
                }
            }
            Value::Summary(summary) => {
                render_labels_into(&mut labels_buf, &series.labels);
                for quantile in &summary.quantiles {
                    write_line_prerendered(
                        out,
                        name,
                        "",
                        &labels_buf,
                        Some(("quantile", quantile.quantile)),
                        quantile.value,
                        ts,
                        Format::Text,
                    );
                }
                if let Some(sum) = summary.sum {
                    write_line_prerendered(
                        out,
                        name,
                        "_sum",
                        &labels_buf,
                        None,
                        sum,
                        ts,
                        Format::Text,
                    );
                }
                if let Some(count) = summary.count {
                    write_line_prerendered(
                        out,
                        name,
                        "_count",
                        &labels_buf,
                        None,
                        count,
                        ts,
                        Format::Text,
                    );
                }
            }
        }
    }
}

fn render_family_openmetrics(family: &MetricFamily, out: &mut Vec<u8>) {
    let name = match family.metric_type {
        MetricType::Counter => family.name.strip_suffix("_total").unwrap_or(&family.name),
        _ => family.name.as_str(),
    };
    if let Some(help) = &family.help {
        out.extend_from_slice(b"# HELP ");
        out.extend_from_slice(name.as_bytes());
        out.push(b' ');
        write_escaped_help(out, help, true);
        out.push(b'\n');
    }
    out.extend_from_slice(b"# TYPE ");
    out.extend_from_slice(name.as_bytes());
    out.push(b' ');
    out.extend_from_slice(family.metric_type.openmetrics_name().as_bytes());
    out.push(b'\n');
    if let Some(unit) = &family.unit {
        // OpenMetrics requires the unit to end the family name; a unit that
        // does not is left out rather than written into an invalid output.
        let is_suffix = name
            .strip_suffix(unit.as_str())
            .is_some_and(|stem| stem.len() > 1 && stem.ends_with('_'));
        if is_suffix {
            out.extend_from_slice(b"# UNIT ");
            out.extend_from_slice(name.as_bytes());
            out.push(b' ');
            out.extend_from_slice(unit.as_bytes());
            out.push(b'\n');
        }
    }
    let mut labels_buf = Vec::new();
    let om = Format::OpenMetrics;
    for series in &family.series {
        let ts = series.timestamp_ms;
        match &series.value {
            Value::Single(value) => {
                let suffix = if family.metric_type == MetricType::Info {
                    "_info"
                } else {
                    ""
                };
                write_line(out, name, suffix, &series.labels, None, *value, ts, om);
            }
            Value::Counter(counter) => {
                render_labels_into(&mut labels_buf, &series.labels);
                write_line_prerendered(
                    out,
                    name,
                    "_total",
                    &labels_buf,
                    None,
                    counter.total,
                    ts,
                    om,
                );
                if let Some(exemplar) = &counter.exemplar {
                    write_exemplar(out, exemplar);
                }
                if let Some(created) = counter.created {
                    write_line_prerendered(
                        out,
                        name,
                        "_created",
                        &labels_buf,
                        None,
                        created,
                        ts,
                        om,
                    );
                }
            }
            Value::Histogram(histogram) => {
                let gauge = family.metric_type == MetricType::GaugeHistogram;
                render_labels_into(&mut labels_buf, &series.labels);
                for bucket in &histogram.buckets {
                    write_line_prerendered(
                        out,
                        name,
                        "_bucket",
                        &labels_buf,
                        Some(("le", bucket.upper_bound)),
                        bucket.count,
                        ts,
                        om,
                    );
                    if let Some(exemplar) = &bucket.exemplar {
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
                        &labels_buf,
                        None,
                        count,
                        ts,
                        om,
                    );
                }
                if let Some(sum) = histogram.sum {
                    write_line_prerendered(out, name, sum_suffix, &labels_buf, None, sum, ts, om);
                }
                // Gauge histograms have no creation time in OpenMetrics.
                if let Some(created) = histogram.created.filter(|_| !gauge) {
                    write_line_prerendered(
                        out,
                        name,
                        "_created",
                        &labels_buf,
                        None,
                        created,
                        ts,
                        om,
                    );
                }
            }
            Value::Summary(summary) => {
                render_labels_into(&mut labels_buf, &series.labels);
                for quantile in &summary.quantiles {
                    write_line_prerendered(
                        out,
                        name,
                        "",
                        &labels_buf,
                        Some(("quantile", quantile.quantile)),
                        quantile.value,
                        ts,
                        om,
                    );
                }
                if let Some(count) = summary.count {
                    write_line_prerendered(out, name, "_count", &labels_buf, None, count, ts, om);
                }
                if let Some(sum) = summary.sum {
                    write_line_prerendered(out, name, "_sum", &labels_buf, None, sum, ts, om);
                }
                if let Some(created) = summary.created {
                    write_line_prerendered(
                        out,
                        name,
                        "_created",
                        &labels_buf,
                        None,
                        created,
                        ts,
                        om,
                    );
                }
            }
        }
    }
}

/// Writes `name+suffix{labels} value[ ts]\n` for a series with its labels.
#[allow(
    clippy::too_many_arguments,
    reason = "one line's parts, kept flat for the hot path"
)]
fn write_line(
    out: &mut Vec<u8>,
    name: &str,
    suffix: &str,
    labels: &[Label],
    extra: Option<(&str, f64)>,
    value: f64,
    timestamp_ms: Option<i64>,
    format: Format,
) {
    out.extend_from_slice(name.as_bytes());
    out.extend_from_slice(suffix.as_bytes());
    if !labels.is_empty() || extra.is_some() {
        out.push(b'{');
        write_labels(out, labels);
        write_extra_label(out, !labels.is_empty(), extra);
        out.push(b'}');
    }
    finish_line(out, value, timestamp_ms, format);
}

/// Like [`write_line`], with the labels already rendered by
/// [`render_labels_into`] (histogram and summary lines share them).
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

/// Renders `a="x",b="y"` (no braces) into `buf`, replacing its content.
fn render_labels_into(buf: &mut Vec<u8>, labels: &[Label]) {
    buf.clear();
    write_labels(buf, labels);
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
    } else if value == value.trunc() && value.abs() < 1e15 {
        if value == 0.0 && value.is_sign_negative() {
            out.extend_from_slice(b"-0");
        } else {
            #[allow(
                clippy::cast_possible_truncation,
                reason = "integral and below 1e15, so exact"
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
