//! Rendering metric families as text 0.0.4 or OpenMetrics 1.0.
//!
//! Output is deterministic: families and series in the order given, labels
//! in the order given, one HELP and one TYPE line per family. The renderer
//! writes into a caller's buffer and allocates nothing else, so a scrape
//! can reuse one buffer.

use std::ops::Range;

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

/// About how many bytes [`render_series`] writes for `family` with
/// `target`, never much less: what to reserve before rendering a large
/// exposition, so that its buffer is allocated (and its pages touched) once
/// rather than grown by doubling and copied.
pub fn estimated_series_bytes(family: &MetricFamily, target: Option<&TargetLabels>) -> usize {
    // A sample suffix, `{`, `}`, a space, a value, a newline; and `le` or
    // `quantile` with its value on bucket and quantile lines.
    const LINE: usize = 16 + 4 + 24 + 1;
    const POINT_LABEL: usize = 16;
    let per_line = family.name.len() + LINE + target.map_or(0, |t| t.rendered.len() + 1);
    family
        .series
        .iter()
        .map(|series| {
            let labels: usize = series
                .labels
                .iter()
                .map(|l| l.name.len() + l.value.len() + 4)
                .sum();
            let (lines, points) = match &series.value {
                Value::Histogram(h) => (h.buckets.len() + 3, h.buckets.len()),
                Value::Summary(s) => (s.quantiles.len() + 3, s.quantiles.len()),
                Value::Counter(_) => (2, 0),
                _ => (1, 0),
            };
            lines * (per_line + labels) + points * POINT_LABEL
        })
        .sum()
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
    let om = format == Format::OpenMetrics;
    let mut out = LineBuf::new(out);
    let out = &mut out;
    for series in &family.series {
        let mut lines = SeriesLines {
            name: name.as_bytes(),
            format,
            timestamp_ms: series.timestamp_ms,
            target,
            labels: &series.labels,
            written: None,
        };
        match &series.value {
            Value::Single(value) => {
                let suffix = if om && family.metric_type == MetricType::Info {
                    "_info"
                } else {
                    ""
                };
                lines.write(out, suffix, None, *value);
            }
            Value::Counter(counter) => {
                let suffix = if om { "_total" } else { "" };
                lines.write(out, suffix, None, counter.total);
                if om {
                    if let Some(exemplar) = &counter.exemplar {
                        out.exemplar(exemplar);
                    }
                    if let Some(created) = counter.created {
                        lines.write(out, "_created", None, created);
                    }
                }
            }
            Value::Histogram(histogram) => {
                // Gauge histograms are histograms in 0.0.4; in OpenMetrics
                // they count with `_gcount`/`_gsum` and have no creation time.
                let gauge = om && family.metric_type == MetricType::GaugeHistogram;
                for bucket in &histogram.buckets {
                    lines.write(
                        out,
                        "_bucket",
                        Some(("le", bucket.upper_bound)),
                        bucket.count,
                    );
                    if let Some(exemplar) = bucket.exemplar.as_ref().filter(|_| om) {
                        out.exemplar(exemplar);
                    }
                }
                let (count_suffix, sum_suffix) = if gauge {
                    ("_gcount", "_gsum")
                } else {
                    ("_count", "_sum")
                };
                if let Some(count) = histogram.count {
                    lines.write(out, count_suffix, None, count);
                }
                if let Some(sum) = histogram.sum {
                    lines.write(out, sum_suffix, None, sum);
                }
                if let Some(created) = histogram.created.filter(|_| om && !gauge) {
                    lines.write(out, "_created", None, created);
                }
            }
            Value::Summary(summary) => {
                for quantile in &summary.quantiles {
                    lines.write(
                        out,
                        "",
                        Some(("quantile", quantile.quantile)),
                        quantile.value,
                    );
                }
                if let Some(count) = summary.count {
                    lines.write(out, "_count", None, count);
                }
                if let Some(sum) = summary.sum {
                    lines.write(out, "_sum", None, sum);
                }
                if let Some(created) = summary.created.filter(|_| om) {
                    lines.write(out, "_created", None, created);
                }
            }
        }
    }
}

/// The lines of one series: what they share, and where in the output the
/// first of them wrote the labels.
///
/// The first line renders the labels straight into the output; the others
/// (histogram buckets, `_sum`, `_count`, …) copy those bytes from there, so
/// a series' labels are escaped once and need no scratch buffer.
struct SeriesLines<'a> {
    name: &'a [u8],
    format: Format,
    timestamp_ms: Option<i64>,
    target: Option<&'a TargetLabels>,
    labels: &'a [Label],
    /// The labels as rendered by the first line, as a range of the output.
    written: Option<Range<usize>>,
}

impl SeriesLines<'_> {
    /// Writes `name+suffix{labels,extra} value[ ts]\n`.
    fn write(
        &mut self,
        out: &mut LineBuf<'_>,
        suffix: &str,
        extra: Option<(&str, f64)>,
        value: f64,
    ) {
        out.put2(self.name, suffix.as_bytes());
        let has_labels = match &self.written {
            Some(range) => {
                let has_labels = !range.is_empty();
                if has_labels || extra.is_some() {
                    out.put(b"{");
                    out.copy_from_earlier(range.clone());
                }
                has_labels
            }
            None if self.labels.is_empty() && self.target.is_none_or(|t| t.labels.is_empty()) => {
                if extra.is_some() {
                    out.put(b"{");
                }
                self.written = Some(out.end..out.end);
                false
            }
            None => {
                out.put(b"{");
                let start = out.end;
                out.series_labels(self.target, self.labels);
                self.written = Some(start..out.end);
                true
            }
        };
        if let Some((label, bound)) = extra {
            if has_labels {
                out.put(b",");
            }
            out.put(label.as_bytes());
            out.put(b"=\"");
            out.float(bound);
            out.put(b"\"");
        }
        let close = if has_labels || extra.is_some() {
            &b"} "[..]
        } else {
            b" "
        };
        let mut integer = itoa::Buffer::new();
        let mut float = ryu::Buffer::new();
        out.put2(close, format_float(value, &mut integer, &mut float));
        if let Some(ts) = self.timestamp_ms {
            out.put(b" ");
            match self.format {
                Format::Text => out.put(itoa::Buffer::new().format(ts).as_bytes()),
                Format::OpenMetrics => out.seconds_from_ms(ts),
            }
        }
        out.put(b"\n");
    }
}

/// Bytes that a label value escapes: `\`, `"` and newline.
const LABEL_VALUE_ESCAPES: [bool; 256] = {
    let mut table = [false; 256];
    table[b'\\' as usize] = true;
    table[b'"' as usize] = true;
    table[b'\n' as usize] = true;
    table
};

/// Pieces up to this length (names, label values, numbers) are copied, and
/// label values checked for escapes, a machine word at a time; longer ones
/// go to `memcpy` and `memchr`, whose set-up costs more than it saves on a
/// few bytes.
const SHORT_BYTES: usize = 32;

/// How much room the output zeroes ahead at a time, within its capacity,
/// in bytes.
const GROW_BYTES: usize = 8 * 1024;

/// `0x01` in every byte of a word.
const ONES: u64 = u64::from_ne_bytes([0x01; 8]);
/// `0x80` in every byte of a word.
const HIGHS: u64 = u64::from_ne_bytes([0x80; 8]);

/// Nonzero when any byte of `word` is `\`, `"` or newline: the classic test
/// for a zero byte, applied to `word` XOR each of the three.
fn label_escape_bits(word: u64) -> u64 {
    let zero_byte = |x: u64| x.wrapping_sub(ONES) & !x & HIGHS;
    let backslash = zero_byte(word ^ (ONES * u64::from(b'\\')));
    let quote = zero_byte(word ^ (ONES * u64::from(b'"')));
    let newline = zero_byte(word ^ (ONES * u64::from(b'\n')));
    backslash | quote | newline
}

fn load8(bytes: &[u8], at: usize) -> u64 {
    let mut word = [0; 8];
    word.copy_from_slice(&bytes[at..at + 8]);
    u64::from_ne_bytes(word)
}

fn load4(bytes: &[u8], at: usize) -> u32 {
    let mut word = [0; 4];
    word.copy_from_slice(&bytes[at..at + 4]);
    u32::from_ne_bytes(word)
}

/// Copies `src` (at most [`SHORT_BYTES`]) to the start of `dst` in
/// fixed-size pieces, the last one overlapping the one before, so that no
/// byte outside either slice is touched and no `memcpy` is called. When
/// `scan` is set, also says whether a copied byte is one a label value
/// escapes.
#[inline(always)]
fn copy_short(dst: &mut [u8], src: &[u8], scan: bool) -> bool {
    let len = src.len();
    let mut escapes = 0;
    if len >= 8 {
        let mut at = 0;
        while at + 8 < len {
            let word = load8(src, at);
            if scan {
                escapes |= label_escape_bits(word);
            }
            dst[at..at + 8].copy_from_slice(&word.to_ne_bytes());
            at += 8;
        }
        let word = load8(src, len - 8);
        if scan {
            escapes |= label_escape_bits(word);
        }
        dst[len - 8..len].copy_from_slice(&word.to_ne_bytes());
    } else if len >= 4 {
        let head = load4(src, 0);
        let tail = load4(src, len - 4);
        if scan {
            escapes = label_escape_bits(u64::from(head) | u64::from(tail) << 32);
        }
        dst[..4].copy_from_slice(&head.to_ne_bytes());
        dst[len - 4..len].copy_from_slice(&tail.to_ne_bytes());
    } else if len > 0 {
        // One to three bytes: the first, middle and last cover them all.
        let (first, middle, last) = (src[0], src[len / 2], src[len - 1]);
        if scan {
            let escaped = |b: u8| u64::from(LABEL_VALUE_ESCAPES[usize::from(b)]);
            escapes = escaped(first) | escaped(middle) | escaped(last);
        }
        dst[0] = first;
        dst[len / 2] = middle;
        dst[len - 1] = last;
    }
    escapes != 0
}

/// The output while series render: the caller's vector, grown ahead of
/// what is written and cut back when done (on drop).
///
/// Each piece of a line checks for room once and is copied into the
/// vector's initialized bytes, instead of a capacity check, a `memcpy` call
/// and a length update per piece; a line takes about twenty pieces. The
/// vector is moved out of the caller's reference for the duration, so that
/// its length stays in a register rather than being reloaded after every
/// byte stored.
struct LineBuf<'a> {
    out: &'a mut Vec<u8>,
    buf: Vec<u8>,
    /// The end of what was written; `buf[end..]` is room to write in.
    end: usize,
}

impl Drop for LineBuf<'_> {
    fn drop(&mut self) {
        self.buf.truncate(self.end);
        *self.out = std::mem::take(&mut self.buf);
    }
}

impl<'a> LineBuf<'a> {
    fn new(out: &'a mut Vec<u8>) -> LineBuf<'a> {
        let buf = std::mem::take(out);
        let end = buf.len();
        LineBuf { out, buf, end }
    }

    /// The room for the next `len` bytes.
    #[inline(always)]
    fn room(&mut self, len: usize) -> &mut [u8] {
        if self.buf.len() - self.end < len {
            self.grow(len);
        }
        &mut self.buf[self.end..self.end + len]
    }

    #[cold]
    #[inline(never)]
    fn grow(&mut self, len: usize) {
        // Within the capacity, room is zeroed a step at a time rather than
        // piece by piece; past it, only what is needed, and `resize` grows
        // the capacity geometrically, so that a small output stays small.
        // The zeroes are written over before anyone sees them.
        let ahead = (self.buf.len() + GROW_BYTES).min(self.buf.capacity());
        self.buf.resize((self.end + len).max(ahead), 0);
    }

    #[inline(always)]
    fn put(&mut self, bytes: &[u8]) {
        let len = bytes.len();
        let room = self.room(len);
        if len <= SHORT_BYTES {
            copy_short(room, bytes, false);
        } else {
            room.copy_from_slice(bytes);
        }
        self.end += len;
    }

    /// Copies bytes written earlier (a series' labels) to the end.
    fn copy_from_earlier(&mut self, range: Range<usize>) {
        self.room(range.len());
        self.buf.copy_within(range.clone(), self.end);
        self.end += range.len();
    }

    /// `a="x",b="y"`.
    fn labels(&mut self, labels: &[Label]) {
        for (i, label) in labels.iter().enumerate() {
            self.label(i > 0, label.name.as_bytes(), &label.value);
        }
    }

    /// `name="value"` (after a comma if `comma`), the value escaped.
    ///
    /// A short label goes into room checked once for all its pieces.
    #[inline(always)]
    fn label(&mut self, comma: bool, name: &[u8], value: &str) {
        let value = value.as_bytes();
        if name.len() > SHORT_BYTES || value.len() > SHORT_BYTES {
            self.label_in_pieces(comma, name, value);
            return;
        }
        let comma = usize::from(comma);
        let value_at = comma + name.len() + 2;
        let len = value_at + value.len() + 1;
        let room = self.room(len);
        if comma == 1 {
            room[0] = b',';
        }
        copy_short(&mut room[comma..], name, false);
        room[value_at - 2] = b'=';
        room[value_at - 1] = b'"';
        let escapes = copy_short(&mut room[value_at..], value, true);
        room[len - 1] = b'"';
        if escapes {
            // Rare: write the value again, escaped.
            self.end += value_at;
            self.escape_label_value(value);
            self.put(b"\"");
        } else {
            self.end += len;
        }
    }

    /// [`LineBuf::label`] for long names or values.
    #[inline(never)]
    fn label_in_pieces(&mut self, comma: bool, name: &[u8], value: &[u8]) {
        if comma {
            self.put(b",");
        }
        self.put(name);
        self.put(b"=\"");
        self.escape_label_value(value);
        self.put(b"\"");
    }

    /// A series' labels, after the target's.
    fn series_labels(&mut self, target: Option<&TargetLabels>, labels: &[Label]) {
        let Some(target) = target else {
            self.labels(labels);
            return;
        };
        self.put(&target.rendered);
        let mut comma = !target.rendered.is_empty();
        for label in labels {
            let clashes = |name: &str| target.labels.iter().any(|t| t.name == name);
            if clashes(&label.name) {
                // Rare: find the first `exported_…` name free in both sets.
                let mut name = format!("exported_{}", label.name);
                while clashes(&name) || labels.iter().any(|l| l.name == name) {
                    name.insert_str(0, "exported_");
                }
                self.label(comma, name.as_bytes(), &label.value);
            } else {
                self.label(comma, label.name.as_bytes(), &label.value);
            }
            comma = true;
        }
    }

    /// A label value with `\`, `"` and newline escaped.
    #[inline(always)]
    fn label_value(&mut self, value: &str) {
        let bytes = value.as_bytes();
        let len = bytes.len();
        // Short values are checked as they are copied; the copy counts only
        // when nothing needed escaping. Others take the general path.
        if len <= SHORT_BYTES && !copy_short(self.room(len), bytes, true) {
            self.end += len;
        } else {
            self.escape_label_value(bytes);
        }
    }

    /// The general case of [`LineBuf::label_value`].
    #[inline(never)]
    fn escape_label_value(&mut self, bytes: &[u8]) {
        let mut start = 0;
        while let Some(i) = memchr3(b'\\', b'"', b'\n', &bytes[start..]) {
            let at = start + i;
            self.put(&bytes[start..at]);
            self.put(match bytes[at] {
                b'\\' => b"\\\\",
                b'"' => b"\\\"",
                _ => b"\\n",
            });
            start = at + 1;
        }
        self.put(&bytes[start..]);
    }

    /// A float as [`format_float`] writes it.
    fn float(&mut self, value: f64) {
        let mut integer = itoa::Buffer::new();
        let mut float = ryu::Buffer::new();
        self.put(format_float(value, &mut integer, &mut float));
    }

    /// Two short pieces, in room checked once.
    #[inline(always)]
    fn put2(&mut self, first: &[u8], second: &[u8]) {
        if first.len() > SHORT_BYTES || second.len() > SHORT_BYTES {
            self.put(first);
            self.put(second);
            return;
        }
        let len = first.len() + second.len();
        let room = self.room(len);
        copy_short(room, first, false);
        copy_short(&mut room[first.len()..], second, false);
        self.end += len;
    }

    /// Milliseconds as OpenMetrics seconds: `1700000000.123`.
    fn seconds_from_ms(&mut self, ms: i64) {
        let abs = ms.unsigned_abs();
        if ms < 0 {
            self.put(b"-");
        }
        self.put(itoa::Buffer::new().format(abs / 1000).as_bytes());
        let fraction = abs % 1000;
        if fraction != 0 {
            let digits = [
                b'.',
                b'0' + u8::try_from(fraction / 100).unwrap_or(0),
                b'0' + u8::try_from(fraction / 10 % 10).unwrap_or(0),
                b'0' + u8::try_from(fraction % 10).unwrap_or(0),
            ];
            self.put(&digits);
        }
    }

    /// Appends ` # {labels} value[ timestamp]` to the line just written.
    fn exemplar(&mut self, exemplar: &Exemplar) {
        // The line ends with a newline; put it back last.
        self.end -= 1;
        self.put(b" # {");
        self.labels(&exemplar.labels);
        self.put(b"} ");
        self.float(exemplar.value);
        if let Some(ts) = exemplar.timestamp {
            self.put(b" ");
            self.float(ts);
        }
        self.put(b"\n");
    }
}

/// A float so that Go's `ParseFloat` (and Prometheus) reads back the same
/// value: integers without a fraction, others in shortest form. Formatted
/// in the caller's buffers, so that the digits are copied once, into the
/// output.
#[inline(always)]
fn format_float<'b>(
    value: f64,
    integer_buf: &'b mut itoa::Buffer,
    float_buf: &'b mut ryu::Buffer,
) -> &'b [u8] {
    // The comparison is false for NaN and for magnitudes beyond i64.
    if value.abs() < 9.2e18 {
        // Truncates toward zero; the value is integral when the integer
        // converts back to it. This avoids `f64::trunc`, a libm call on
        // baseline x86-64.
        #[allow(
            clippy::cast_possible_truncation,
            reason = "within i64 by the check above; the fraction is meant to go"
        )]
        let integer = value as i64;
        #[allow(
            clippy::cast_precision_loss,
            reason = "the integer came from a double, so it converts back exactly"
        )]
        let is_integral = integer as f64 == value;
        if is_integral {
            if integer == 0 && value.is_sign_negative() {
                return b"-0";
            }
            return integer_buf.format(integer).as_bytes();
        }
    }
    format_non_integer(value, float_buf)
}

#[inline(never)]
fn format_non_integer(value: f64, float_buf: &mut ryu::Buffer) -> &[u8] {
    if value.is_nan() {
        b"NaN"
    } else if value.is_infinite() {
        if value > 0.0 { b"+Inf" } else { b"-Inf" }
    } else {
        float_buf.format_finite(value).as_bytes()
    }
}

fn write_labels(out: &mut Vec<u8>, labels: &[Label]) {
    LineBuf::new(out).labels(labels);
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
    LineBuf::new(out).label_value(help);
}

#[cfg(test)]
fn write_float(out: &mut Vec<u8>, value: f64) {
    LineBuf::new(out).float(value);
}

#[cfg(test)]
fn write_seconds_from_ms(out: &mut Vec<u8>, ms: i64) {
    LineBuf::new(out).seconds_from_ms(ms);
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
    fn the_size_estimate_is_never_below_what_renders() {
        let text = "# TYPE c counter\nc_total{a=\"1\"} 1\nc_created{a=\"1\"} 1700000000.5\n\
                    # TYPE h histogram\nh_bucket{le=\"0.1\",x=\"y\"} 1\nh_bucket{le=\"+Inf\",x=\"y\"} 2\nh_sum{x=\"y\"} 0.3\nh_count{x=\"y\"} 2\n\
                    # TYPE s summary\ns{quantile=\"0.99\"} 0.5\ns_sum 1e10\ns_count 12345678\n\
                    # TYPE g gauge\ng{long=\"a value of some length\",b=\"\"} -1.25e-7\n# EOF\n";
        let families =
            crate::parse(text.as_bytes(), Format::OpenMetrics).expect("a valid exposition");
        let target = TargetLabels::new(vec![
            Label::new("job", "a-job"),
            Label::new("instance", "host:9100"),
        ]);
        for format in [Format::Text, Format::OpenMetrics] {
            for target in [None, Some(&target)] {
                for family in &families {
                    let mut out = Vec::new();
                    render_series(family, format, target, &mut out);
                    let estimate = estimated_series_bytes(family, target);
                    assert!(
                        estimate >= out.len(),
                        "{}: {estimate} < {} in {format:?}",
                        family.name,
                        out.len()
                    );
                }
            }
        }
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

    /// The escaping rule written plainly, to check the word-at-a-time one.
    fn escaped_plainly(value: &str) -> String {
        value
            .replace('\\', "\\\\")
            .replace('"', "\\\"")
            .replace('\n', "\\n")
    }

    #[test]
    fn label_values_escape_at_every_length_and_position() {
        // Every length around the word and short-value boundaries, with
        // each byte that needs escaping at each position, after some output.
        for len in 0..=80 {
            let plain: String = (0..len)
                .map(|i| char::from(b'a' + (i % 26) as u8))
                .collect();
            let mut values = vec![plain.clone()];
            for at in 0..len {
                for special in ['\\', '"', '\n'] {
                    let mut value = plain.clone();
                    value.replace_range(at..=at, &special.to_string());
                    values.push(value);
                }
            }
            for value in values {
                let mut out = b"prefix".to_vec();
                LineBuf::new(&mut out).label_value(&value);
                let expected = format!("prefix{}", escaped_plainly(&value));
                assert_eq!(String::from_utf8_lossy(&out), expected, "{value:?}");
                // The same value in a label set, after a short and a long name.
                let long_name = "n".repeat(40);
                let labels = [
                    Label::new("a", value.as_str()),
                    Label::new(&long_name, value.as_str()),
                ];
                let mut out = b"prefix".to_vec();
                write_labels(&mut out, &labels);
                let escaped = escaped_plainly(&value);
                let expected = format!("prefixa=\"{escaped}\",{long_name}=\"{escaped}\"");
                assert_eq!(String::from_utf8_lossy(&out), expected, "{value:?}");
            }
        }
    }

    #[test]
    fn a_small_output_stays_small() {
        let mut out = Vec::new();
        write_labels(&mut out, &[Label::new("a", "b")]);
        assert_eq!(out, b"a=\"b\"");
        assert!(out.capacity() < 64, "capacity {}", out.capacity());
    }

    #[test]
    fn short_copies_cover_every_length() {
        for len in 0..=SHORT_BYTES {
            let bytes: Vec<u8> = (0..len).map(|i| i as u8 + 1).collect();
            let mut out = vec![0xff];
            LineBuf::new(&mut out).put(&bytes);
            assert_eq!(out[0], 0xff);
            assert_eq!(&out[1..], &bytes[..], "len {len}");
        }
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
