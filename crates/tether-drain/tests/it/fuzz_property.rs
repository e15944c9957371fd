//! The properties the drain's fuzz targets check, written once for a fuzzer
//! and for the tests.
//!
//! A `fuzz/fuzz_targets/*.rs` target can include this file by path; it uses
//! nothing but `std` and `tether_drain`. A property returns `Err` with a
//! description when it does not hold; a panic inside the library
//! propagates, since that is a finding too.

use tether_drain::{
    LogplexLimits, RouterError, VectorError, VectorLimits, VectorLine, VectorMetric, VectorValue,
    key_values, logplex_frames, parse_router, parse_sample_value, parse_samples, parse_syslog,
    parse_vector_line,
};

/// The property of the logplex framer and the syslog header parser.
///
/// The first byte of `input` picks the longest message allowed, the rest is
/// a drain body. No frame read is longer than the limit, no more frames are
/// read than allowed, every frame's header parses or fails without a
/// panic, and the frames read, written again with their lengths, read back
/// as the same frames.
pub(crate) fn logplex(input: &[u8]) -> Result<(), String> {
    let Some((&first, body)) = input.split_first() else {
        return Ok(());
    };
    let limits = LogplexLimits {
        max_message_bytes: usize::from(first) + 1,
        max_messages: 64,
    };
    let mut read: Vec<&[u8]> = Vec::new();
    let mut items = 0;
    for frame in logplex_frames(body, limits) {
        items += 1;
        if let Ok(message) = frame {
            if message.len() > limits.max_message_bytes {
                return Err(format!(
                    "a frame of {} bytes passed the limit of {}",
                    message.len(),
                    limits.max_message_bytes
                ));
            }
            let _ = parse_syslog(message);
            read.push(message);
        }
    }
    if items > limits.max_messages + 1 {
        return Err(format!(
            "{items} items read, past {} frames",
            limits.max_messages
        ));
    }
    let mut again = Vec::new();
    for message in &read {
        again.extend_from_slice(format!("{} ", message.len() + 1).as_bytes());
        again.extend_from_slice(message);
        again.push(b'\n');
    }
    let limits = LogplexLimits {
        max_message_bytes: limits.max_message_bytes + 1,
        max_messages: limits.max_messages + 1,
    };
    let reread: Result<Vec<&[u8]>, _> = logplex_frames(&again, limits).collect();
    match reread {
        Ok(reread) if reread == read => Ok(()),
        other => Err(format!(
            "the frames {read:?} written again read as {other:?}"
        )),
    }
}

/// The property of the instance-metric line parser.
///
/// The first byte picks how the rest is read: with its low bit clear the
/// rest is a line's payload as it comes; with it set the rest is JSON,
/// encoded here as base64, so a fuzzer's mutations reach the JSON reader.
/// Its other bits pick the limits: the defaults, or small ones from the
/// second byte, small enough for inputs to reach them.
///
/// A line read keeps within its limits: no more elements than
/// `max_metrics`, no metric with an empty name, an empty namespace, more
/// tags than `max_tags` or a tag twice, more values than `max_values`, a
/// non-finite number, a negative count or a quantile outside 0 to 1. A
/// payload of JSON is never refused as base64 and reads the same padded,
/// unpadded and with whitespace around it. The metrics read, written again
/// as JSON, read back as the same metrics with nothing refused.
pub(crate) fn vector(input: &[u8]) -> Result<(), String> {
    let Some((&first, rest)) = input.split_first() else {
        return Ok(());
    };
    let (limits, rest) = match (first >> 1, rest.split_first()) {
        (0, _) | (_, None) => (VectorLimits::default(), rest),
        (_, Some((&shape, rest))) => (
            VectorLimits {
                max_metrics: usize::from(shape & 0x0f) + 1,
                max_tags: usize::from((shape >> 4) & 0x03),
                max_values: usize::from(shape >> 6) + 1,
            },
            rest,
        ),
    };
    let read = if first & 1 == 0 {
        parse_vector_line(rest, limits)
    } else {
        let padded = parse_vector_line(base64(rest, true).as_bytes(), limits);
        if padded == Err(VectorError::Base64) {
            return Err(format!(
                "the base64 of {:?} was refused as base64",
                String::from_utf8_lossy(rest)
            ));
        }
        let unpadded = parse_vector_line(base64(rest, false).as_bytes(), limits);
        let spaced = format!(" \t{}\r\n", base64(rest, true));
        let spaced = parse_vector_line(spaced.as_bytes(), limits);
        if unpadded != padded || spaced != padded {
            return Err(format!(
                "padding or whitespace changed what was read: {padded:?}, unpadded {unpadded:?}, with whitespace {spaced:?}"
            ));
        }
        padded
    };
    let line = match read {
        Ok(line) => line,
        Err(VectorError::TooManyMetrics(max)) if max == limits.max_metrics => return Ok(()),
        Err(VectorError::Base64 | VectorError::Json(_)) => return Ok(()),
        Err(other) => return Err(format!("a line refused with {other:?} under {limits:?}")),
    };
    check_line(&line, limits)?;
    let again = metrics_json(&line.metrics);
    let reread = parse_vector_line(base64(again.as_bytes(), true).as_bytes(), limits)
        .map_err(|error| format!("the metrics written again as {again} were refused: {error}"))?;
    if !reread.rejected.is_empty() || !same_metrics(&reread.metrics, &line.metrics) {
        return Err(format!(
            "the metrics {:?} written again as {again} read as {reread:?}",
            line.metrics
        ));
    }
    Ok(())
}

fn check_line(line: &VectorLine, limits: VectorLimits) -> Result<(), String> {
    let n_elements = line.metrics.len() + line.rejected.len();
    if n_elements > limits.max_metrics {
        return Err(format!(
            "{n_elements} elements read past the limit of {}",
            limits.max_metrics
        ));
    }
    for rejected in &line.rejected {
        match rejected {
            VectorError::Invalid(message) | VectorError::UnknownKind(message)
                if !message.is_empty() => {}
            other => return Err(format!("an element refused with {other:?}")),
        }
    }
    for metric in &line.metrics {
        check_metric(metric, limits).map_err(|violation| format!("{violation} in {metric:?}"))?;
    }
    Ok(())
}

fn check_metric(metric: &VectorMetric, limits: VectorLimits) -> Result<(), String> {
    if metric.name.is_empty() {
        return Err("an empty name".to_owned());
    }
    if metric.namespace.as_deref() == Some("") {
        return Err("an empty namespace".to_owned());
    }
    if metric.tags.len() > limits.max_tags {
        return Err(format!("more than {} tags", limits.max_tags));
    }
    for (index, (key, _)) in metric.tags.iter().enumerate() {
        if metric.tags[..index].iter().any(|(held, _)| held == key) {
            return Err(format!("the tag {key:?} twice"));
        }
    }
    let finite = |what: &str, value: f64| {
        if value.is_finite() {
            Ok(())
        } else {
            Err(format!("{what} {value}"))
        }
    };
    let count = |what: &str, value: f64| {
        if value.is_finite() && value >= 0.0 {
            Ok(())
        } else {
            Err(format!("{what} {value}"))
        }
    };
    let n_values = |n: usize| {
        if n <= limits.max_values {
            Ok(())
        } else {
            Err(format!(
                "{n} values past the limit of {}",
                limits.max_values
            ))
        }
    };
    match &metric.value {
        VectorValue::Counter(value) | VectorValue::Gauge(value) => finite("a value", *value),
        VectorValue::Set(members) => n_values(members.len()),
        VectorValue::Distribution { samples, .. } => {
            n_values(samples.len())?;
            samples
                .iter()
                .try_for_each(|&(value, _)| finite("a sample", value))
        }
        VectorValue::AggregatedHistogram {
            buckets,
            count: total,
            sum,
        } => {
            n_values(buckets.len())?;
            for &(upper_limit, n) in buckets {
                finite("an upper limit", upper_limit)?;
                count("a bucket count", n)?;
            }
            count("a count", *total)?;
            finite("a sum", *sum)
        }
        VectorValue::AggregatedSummary {
            quantiles,
            count: total,
            sum,
        } => {
            n_values(quantiles.len())?;
            for &(quantile, value) in quantiles {
                if !(0.0..=1.0).contains(&quantile) {
                    return Err(format!("a quantile {quantile}"));
                }
                finite("a quantile's value", value)?;
            }
            count("a count", *total)?;
            finite("a sum", *sum)
        }
    }
}

/// Whether two reads of the same metrics agree, numbers within what two
/// decimal round trips may move them (serde_json's default float reading
/// is not always correctly rounded).
pub(crate) fn same_metrics(a: &[VectorMetric], b: &[VectorMetric]) -> bool {
    fn close(a: f64, b: f64) -> bool {
        a == b
            || (a - b).abs() <= (4.0 * f64::EPSILON * a.abs().max(b.abs())).max(f64::MIN_POSITIVE)
    }
    fn pairs(a: &[(f64, f64)], b: &[(f64, f64)]) -> bool {
        a.len() == b.len()
            && a.iter()
                .zip(b)
                .all(|(x, y)| close(x.0, y.0) && close(x.1, y.1))
    }
    a.len() == b.len()
        && a.iter().zip(b).all(|(a, b)| {
            let values = match (&a.value, &b.value) {
                (VectorValue::Counter(x), VectorValue::Counter(y))
                | (VectorValue::Gauge(x), VectorValue::Gauge(y)) => close(*x, *y),
                (VectorValue::Set(x), VectorValue::Set(y)) => x == y,
                (
                    VectorValue::Distribution {
                        samples: x,
                        statistic: s,
                    },
                    VectorValue::Distribution {
                        samples: y,
                        statistic: t,
                    },
                ) => {
                    s == t
                        && x.len() == y.len()
                        && x.iter().zip(y).all(|(x, y)| close(x.0, y.0) && x.1 == y.1)
                }
                (
                    VectorValue::AggregatedHistogram {
                        buckets: x,
                        count: c,
                        sum: s,
                    },
                    VectorValue::AggregatedHistogram {
                        buckets: y,
                        count: d,
                        sum: t,
                    },
                )
                | (
                    VectorValue::AggregatedSummary {
                        quantiles: x,
                        count: c,
                        sum: s,
                    },
                    VectorValue::AggregatedSummary {
                        quantiles: y,
                        count: d,
                        sum: t,
                    },
                ) => pairs(x, y) && close(*c, *d) && close(*s, *t),
                _ => false,
            };
            values
                && a.name == b.name
                && a.namespace == b.namespace
                && a.tags == b.tags
                && a.kind == b.kind
        })
}

/// The metrics as a line's JSON, in Vector's native form.
fn metrics_json(metrics: &[VectorMetric]) -> String {
    use std::fmt::Write as _;

    fn string(out: &mut String, text: &str) {
        out.push('"');
        for c in text.chars() {
            match c {
                '"' => out.push_str("\\\""),
                '\\' => out.push_str("\\\\"),
                c if u32::from(c) < 0x20 => {
                    let _ = write!(out, "\\u{:04x}", u32::from(c));
                }
                c => out.push(c),
            }
        }
        out.push('"');
    }
    fn pairs(out: &mut String, list: &str, names: [&str; 2], pairs: &[(f64, f64)]) {
        let _ = write!(out, "\"{list}\":[");
        for (index, (a, b)) in pairs.iter().enumerate() {
            let comma = if index > 0 { "," } else { "" };
            let _ = write!(
                out,
                "{comma}{{\"{}\":{a:?},\"{}\":{b:?}}}",
                names[0], names[1]
            );
        }
        out.push(']');
    }

    let mut out = String::from("[");
    for (index, metric) in metrics.iter().enumerate() {
        if index > 0 {
            out.push(',');
        }
        out.push_str("{\"metric\":{\"name\":");
        string(&mut out, &metric.name);
        if let Some(namespace) = &metric.namespace {
            out.push_str(",\"namespace\":");
            string(&mut out, namespace);
        }
        out.push_str(",\"tags\":{");
        for (index, (key, value)) in metric.tags.iter().enumerate() {
            if index > 0 {
                out.push(',');
            }
            string(&mut out, key);
            out.push(':');
            string(&mut out, value);
        }
        let kind = match metric.kind {
            tether_drain::VectorKind::Absolute => "absolute",
            tether_drain::VectorKind::Incremental => "incremental",
        };
        let _ = write!(out, "}},\"kind\":\"{kind}\",");
        match &metric.value {
            VectorValue::Counter(value) => {
                let _ = write!(out, "\"counter\":{{\"value\":{value:?}}}");
            }
            VectorValue::Gauge(value) => {
                let _ = write!(out, "\"gauge\":{{\"value\":{value:?}}}");
            }
            VectorValue::Set(members) => {
                out.push_str("\"set\":{\"values\":[");
                for (index, member) in members.iter().enumerate() {
                    if index > 0 {
                        out.push(',');
                    }
                    string(&mut out, member);
                }
                out.push_str("]}");
            }
            VectorValue::Distribution { samples, statistic } => {
                out.push_str("\"distribution\":{\"samples\":[");
                for (index, (value, rate)) in samples.iter().enumerate() {
                    let comma = if index > 0 { "," } else { "" };
                    let _ = write!(out, "{comma}{{\"value\":{value:?},\"rate\":{rate}}}");
                }
                let statistic = match statistic {
                    tether_drain::Statistic::Histogram => "histogram",
                    tether_drain::Statistic::Summary => "summary",
                };
                let _ = write!(out, "],\"statistic\":\"{statistic}\"}}");
            }
            VectorValue::AggregatedHistogram {
                buckets,
                count,
                sum,
            } => {
                out.push_str("\"aggregated_histogram\":{");
                pairs(&mut out, "buckets", ["upper_limit", "count"], buckets);
                let _ = write!(out, ",\"count\":{count:?},\"sum\":{sum:?}}}");
            }
            VectorValue::AggregatedSummary {
                quantiles,
                count,
                sum,
            } => {
                out.push_str("\"aggregated_summary\":{");
                pairs(&mut out, "quantiles", ["quantile", "value"], quantiles);
                let _ = write!(out, ",\"count\":{count:?},\"sum\":{sum:?}}}");
            }
        }
        out.push_str("}}");
    }
    out.push(']');
    out
}

/// Standard base64 of `bytes`, with its padding or without.
pub(crate) fn base64(bytes: &[u8], padded: bool) -> String {
    const ALPHABET: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let mut out = String::with_capacity(bytes.len().div_ceil(3) * 4);
    for chunk in bytes.chunks(3) {
        let n = chunk
            .iter()
            .enumerate()
            .fold(0u32, |n, (at, &b)| n | u32::from(b) << (16 - 8 * at));
        for at in 0..=chunk.len() {
            out.push(char::from(ALPHABET[(n >> (18 - 6 * at) & 0x3f) as usize]));
        }
        if padded {
            for _ in chunk.len()..3 {
                out.push('=');
            }
        }
    }
    out
}

/// The property of the parsers of Heroku's `key=value` lines, on `input`
/// as a message.
///
/// Every pair is two slices of the message, in order and apart: a key that
/// starts a token, is not empty and holds no `=` or space, then its `=`;
/// a value that is quoted (after `="`, holding no unescaped quote, ending at
/// its closing quote or at the end) or plain (no space, not starting with a
/// quote, ending at a space or at the end). A message without quotes splits
/// as its space-separated tokens that have a key. A sample value read is
/// finite and, for plain decimals, what Rust's parser reads, times its
/// unit. Samples are read exactly for messages with a `sample#` key, each
/// such key counted once; a router line is refused as not a request exactly
/// when it has no `at=`, and one read has a status from 100 to 999 and
/// durations that are finite and not negative.
pub(crate) fn heroku(input: &[u8]) -> Result<(), String> {
    check_key_values(input)?;
    check_sample_value(input)?;
    let pairs: Vec<(&[u8], &[u8])> = key_values(input).collect();
    for (_, value) in &pairs {
        check_sample_value(value)?;
    }
    let n_sample_keys = pairs
        .iter()
        .filter(|(key, _)| key.starts_with(b"sample#"))
        .count();
    match parse_samples(input) {
        None if n_sample_keys == 0 => {}
        None => return Err(format!("{n_sample_keys} sample keys but no samples read")),
        Some(samples) => {
            if samples.samples.len() + samples.rejected.len() != n_sample_keys {
                return Err(format!("{n_sample_keys} sample keys read as {samples:?}"));
            }
            if let Some((key, value)) = samples
                .samples
                .iter()
                .find(|(key, value)| key.is_empty() || !value.is_finite())
            {
                return Err(format!("a sample {key:?} = {value}"));
            }
        }
    }
    let has_at = pairs.iter().any(|(key, _)| *key == b"at");
    match parse_router(input) {
        Ok(line) => {
            if !has_at {
                return Err(format!("a router line without at= read as {line:?}"));
            }
            if line
                .status
                .is_some_and(|status| !(100..=999).contains(&status))
            {
                return Err(format!("a status out of range in {line:?}"));
            }
            let bad = |seconds: Option<f64>| seconds.is_some_and(|s| !s.is_finite() || s < 0.0);
            if bad(line.service_seconds) || bad(line.connect_seconds) {
                return Err(format!("a duration out of range in {line:?}"));
            }
        }
        Err(RouterError::NotARequest) if !has_at => {}
        Err(RouterError::BadValue("status" | "service" | "connect")) if has_at => {}
        Err(other) => return Err(format!("a router line refused with {other:?}")),
    }
    Ok(())
}

fn check_key_values(input: &[u8]) -> Result<(), String> {
    let mut line = input;
    while let [rest @ .., b'\r' | b'\n'] = line {
        line = rest;
    }
    let base = line.as_ptr() as usize;
    let offset_in = |slice: &[u8]| -> Result<(usize, usize), String> {
        let start = (slice.as_ptr() as usize).wrapping_sub(base);
        if start
            .checked_add(slice.len())
            .is_some_and(|end| end <= line.len())
        {
            Ok((start, start + slice.len()))
        } else {
            Err(format!("a slice {slice:?} outside the message"))
        }
    };
    let mut previous_end = 0;
    let mut read = Vec::new();
    for (key, value) in key_values(input) {
        let describe = || {
            format!(
                "the pair {:?} = {:?}",
                String::from_utf8_lossy(key),
                String::from_utf8_lossy(value)
            )
        };
        let (key_start, key_end) = offset_in(key)?;
        let (value_start, value_end) = offset_in(value)?;
        if key_start < previous_end {
            return Err(format!("{} overlaps the pair before it", describe()));
        }
        if key.is_empty() || key.contains(&b'=') || key.contains(&b' ') {
            return Err(format!("{} has a bad key", describe()));
        }
        if key_start > 0 && !matches!(line[key_start - 1], b' ' | b'"') {
            return Err(format!("{} does not start a token", describe()));
        }
        if line.get(key_end) != Some(&b'=') {
            return Err(format!("{} has no `=` after its key", describe()));
        }
        let quoted = line.get(key_end + 1) == Some(&b'"');
        if quoted {
            if value_start != key_end + 2 {
                return Err(format!("{} does not start after its quote", describe()));
            }
            if unescaped_quote(value) {
                return Err(format!("{} holds an unescaped quote", describe()));
            }
            if value_end != line.len() && line[value_end] != b'"' {
                return Err(format!("{} does not end at its quote", describe()));
            }
        } else {
            if value_start != key_end + 1 {
                return Err(format!("{} does not start after its `=`", describe()));
            }
            if value.contains(&b' ') {
                return Err(format!("{} holds a space", describe()));
            }
            if value_end != line.len() && line[value_end] != b' ' {
                return Err(format!("{} does not end at a space", describe()));
            }
        }
        previous_end = value_end;
        read.push((key, value));
    }
    if !line.contains(&b'"') {
        let tokens: Vec<(&[u8], &[u8])> = line
            .split(|&b| b == b' ')
            .filter_map(|token| {
                let eq = token.iter().position(|&b| b == b'=')?;
                (eq > 0).then(|| (&token[..eq], &token[eq + 1..]))
            })
            .collect();
        if tokens != read {
            return Err(format!(
                "{:?} split as {read:?}, its tokens are {tokens:?}",
                String::from_utf8_lossy(line)
            ));
        }
    }
    Ok(())
}

/// Whether `text` holds a `"` not escaped by an odd number of backslashes.
fn unescaped_quote(text: &[u8]) -> bool {
    let mut escaped = false;
    for &b in text {
        match b {
            b'\\' => escaped = !escaped,
            b'"' if !escaped => return true,
            _ => escaped = false,
        }
    }
    false
}

fn check_sample_value(value: &[u8]) -> Result<(), String> {
    let read = parse_sample_value(value);
    if let Some(number) = read.filter(|number| !number.is_finite()) {
        return Err(format!("the sample value {value:?} read as {number}"));
    }
    // A plain decimal reads as Rust's parser reads it, times its unit.
    let units: [(&[u8], f64); 6] = [
        (b"bytes", 1.0),
        (b"pages", 1.0),
        (b"kB", 1024.0),
        (b"MB", 1048576.0),
        (b"GB", 1073741824.0),
        (b"", 1.0),
    ];
    for (unit, scale) in units {
        let Some(number) = value.strip_suffix(unit) else {
            continue;
        };
        if !number
            .iter()
            .all(|b| b.is_ascii_digit() || matches!(b, b'.' | b'e' | b'E' | b'+' | b'-'))
        {
            continue;
        }
        let expected = std::str::from_utf8(number)
            .ok()
            .and_then(|number| number.parse::<f64>().ok())
            .map(|number| number * scale)
            .filter(|number| number.is_finite());
        if read != expected {
            return Err(format!(
                "the sample value {:?} read as {read:?}, not {expected:?}",
                String::from_utf8_lossy(value)
            ));
        }
        break;
    }
    Ok(())
}
