//! A push's body: decompressed within a bound, parsed (text 0.0.4 or
//! delimited protobuf), checked against the Pushgateway's rules and the
//! limits, and given its grouping key's labels: a [`Prepared`] push, or
//! a [`Refusal`] that says what is wrong.

use std::io::Read;
use std::sync::Arc;

use tether_model::{Format, Label, Limits, MetricFamily, TargetLabels};

use super::key::GroupingKey;
use super::refusal::{Reason, Refusal};
use crate::view::{DropReason, Drops, Families, Origin};

/// The names the gateway writes into every group; a body may not hold them.
pub(crate) const PUSH_TIME: &str = "push_time_seconds";
/// See [`PUSH_TIME`].
pub(crate) const PUSH_FAILURE_TIME: &str = "push_failure_time_seconds";

/// What one push may hold.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct BodyLimits {
    /// Most bytes after decompression.
    pub(crate) max_decompressed_bytes: usize,
    /// Most series.
    pub(crate) max_series: usize,
    /// Longest metric or label name, in bytes.
    pub(crate) max_name_bytes: usize,
    /// Longest label value (and help text), in bytes.
    pub(crate) max_value_bytes: usize,
    /// Most labels on one series.
    pub(crate) max_labels_per_series: usize,
}

/// How the body is encoded on the wire.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Encoding {
    Identity,
    Gzip,
    /// Snappy's framing format.
    Snappy,
}

impl Encoding {
    /// From a `Content-Encoding` header.
    pub(crate) fn from_header(value: Option<&str>) -> Result<Encoding, Refusal> {
        match value.map(|v| v.trim().to_ascii_lowercase()).as_deref() {
            None | Some("" | "identity") => Ok(Encoding::Identity),
            Some("gzip" | "x-gzip") => Ok(Encoding::Gzip),
            Some("snappy") => Ok(Encoding::Snappy),
            Some(other) => Err(Refusal::new(
                Reason::UnsupportedEncoding,
                format!(
                    "unsupported Content-Encoding {other:?}: send the body plain, gzip or snappy (framed)"
                ),
            )),
        }
    }
}

/// The two body formats of the Pushgateway.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum BodyFormat {
    Text,
    Protobuf,
}

impl BodyFormat {
    /// From a `Content-Type` header: delimited protobuf when it says so,
    /// text otherwise (as the Pushgateway reads it).
    pub(crate) fn from_header(value: Option<&str>) -> BodyFormat {
        let Some(value) = value else {
            return BodyFormat::Text;
        };
        let mut parts = value.split(';').map(str::trim);
        let media = parts.next().unwrap_or("").to_ascii_lowercase();
        // Parameter names are case-insensitive and values may be quoted;
        // the values themselves are compared exactly, as the Pushgateway
        // compares them.
        let (mut proto, mut delimited) = (false, false);
        for parameter in parts {
            let Some((name, value)) = parameter.split_once('=') else {
                continue;
            };
            let value = value.trim().trim_matches('"');
            match name.trim().to_ascii_lowercase().as_str() {
                "proto" => proto = value == "io.prometheus.client.MetricFamily",
                "encoding" => delimited = value == "delimited",
                _ => {}
            }
        }
        if media == "application/vnd.google.protobuf" && proto && delimited {
            BodyFormat::Protobuf
        } else {
            BodyFormat::Text
        }
    }
}

/// Decompresses `raw`; more than `max_bytes` out is refused, having
/// produced at most `max_bytes + 1` of them (a decompression bomb costs
/// its bound, not its size).
pub(crate) fn decompress(
    raw: bytes::Bytes,
    encoding: Encoding,
    max_bytes: usize,
) -> Result<bytes::Bytes, Refusal> {
    let reader: Box<dyn Read + '_> = match encoding {
        Encoding::Identity => {
            if raw.len() > max_bytes {
                return Err(too_large(max_bytes));
            }
            return Ok(raw);
        }
        Encoding::Gzip => Box::new(flate2::read::MultiGzDecoder::new(&raw[..])),
        Encoding::Snappy => Box::new(snap::read::FrameDecoder::new(&raw[..])),
    };
    let mut out = Vec::with_capacity(raw.len().saturating_mul(4).min(max_bytes));
    let limit = u64::try_from(max_bytes)
        .unwrap_or(u64::MAX)
        .saturating_add(1);
    reader.take(limit).read_to_end(&mut out).map_err(|e| {
        Refusal::new(
            Reason::Malformed,
            format!("the body does not decompress: {e}"),
        )
    })?;
    if out.len() > max_bytes {
        return Err(too_large(max_bytes));
    }
    Ok(out.into())
}

fn too_large(max_bytes: usize) -> Refusal {
    Refusal::new(
        Reason::DecompressedTooLarge,
        format!(
            "the body is larger than {max_bytes} bytes decompressed: push less, or raise --push-max-decompressed-bytes"
        ),
    )
}

/// Parses a decompressed body.
pub(crate) fn parse(
    body: &[u8],
    format: BodyFormat,
    limits: &BodyLimits,
) -> Result<Vec<MetricFamily>, Refusal> {
    let families = match format {
        BodyFormat::Text => {
            let parse_limits = Limits {
                max_labels_per_series: limits.max_labels_per_series,
                max_series: limits.max_series,
                ..Limits::default()
            };
            tether_model::parse_with_limits(body, Format::Text, parse_limits).map_err(|e| {
                let reason = match e.kind {
                    tether_model::ErrorKind::TooManySeries { .. } => Reason::TooManySeriesInPush,
                    tether_model::ErrorKind::DuplicateSeries(_) => Reason::Duplicate,
                    _ => Reason::Malformed,
                };
                Refusal::new(reason, format!("text format parsing error: {e}"))
            })?
        }
        BodyFormat::Protobuf => tether_model::decode_delimited(body, limits.max_decompressed_bytes)
            .map_err(|e| Refusal::new(Reason::Malformed, format!("protobuf parsing error: {e}")))?,
    };
    let n_series: usize = families.iter().map(|f| f.series.len()).sum();
    if n_series > limits.max_series {
        return Err(Refusal::new(
            Reason::TooManySeriesInPush,
            format!(
                "the push holds {n_series} series, more than {}: split it, or raise --push-max-series-per-push",
                limits.max_series
            ),
        ));
    }
    Ok(families)
}

/// A push checked and ready for the store.
#[derive(Debug, Clone)]
pub(crate) struct Prepared {
    /// The families, normalized with `target`.
    pub(crate) families: Families,
    /// The name of each family, sorted.
    pub(crate) names: Vec<String>,
    /// The labels every series is served with (see [`target_of`]).
    pub(crate) target: Arc<TargetLabels>,
}

/// The target labels of a group: its grouping key, and `instance=""` when
/// the key has no `instance` and `instance_in_target` (no series of the
/// group has its own), so that the empty value is held once per group, not
/// once per series.
pub(crate) fn target_of(key: &GroupingKey, instance_in_target: bool) -> Arc<TargetLabels> {
    let mut labels = key.labels().to_vec();
    if instance_in_target && key.get("instance").is_none() {
        labels.push(Label::new("instance", ""));
        labels.sort_by(|a, b| a.name.cmp(&b.name));
    }
    Arc::new(TargetLabels::new(labels))
}

/// Whether a group of `families` (without the key's labels) serves its
/// `instance` from its target labels: the key has one, or no series does.
pub(crate) fn instance_in_target(key: &GroupingKey, families: &[MetricFamily]) -> bool {
    key.get("instance").is_some()
        || !families
            .iter()
            .flat_map(|f| &f.series)
            .any(|s| s.labels.iter().any(|l| l.name == "instance"))
}

/// Adds `instance=""` to every series without an `instance` label.
pub(crate) fn add_empty_instance(families: &mut [MetricFamily]) {
    for series in families.iter_mut().flat_map(|f| f.series.iter_mut()) {
        if !series.labels.iter().any(|l| l.name == "instance") {
            series.labels.push(Label::new("instance", ""));
        }
    }
}

/// Checks `families` against the Pushgateway's rules and the limits, and
/// gives them the grouping key's semantics: the key's labels win over the
/// body's (they are dropped from the series, and served as target labels),
/// and a series with no `instance` anywhere gets `instance=""`.
pub(crate) fn prepare(
    mut families: Vec<MetricFamily>,
    key: &GroupingKey,
    limits: &BodyLimits,
) -> Result<Prepared, Refusal> {
    // The gateway writes these two itself; a body's are dropped, as the
    // Pushgateway drops them. A family without series (a TYPE line alone)
    // is dropped, as the Pushgateway drops it.
    families.retain(|f| f.name != PUSH_TIME && f.name != PUSH_FAILURE_TIME && !f.series.is_empty());
    for family in &mut families {
        if family.name.len() > limits.max_name_bytes {
            return Err(name_too_long(&family.name, limits.max_name_bytes));
        }
        if family
            .help
            .as_ref()
            .is_some_and(|h| h.len() > limits.max_value_bytes)
        {
            return Err(value_too_long(
                &family.name,
                "its help",
                limits.max_value_bytes,
            ));
        }
        for series in &mut family.series {
            if series.timestamp_ms.is_some() {
                return Err(Refusal::new(
                    Reason::Timestamp,
                    format!(
                        "pushed metrics must not have timestamps: {} has one",
                        family.name
                    ),
                ));
            }
            for label in &series.labels {
                if label.name.len() > limits.max_name_bytes {
                    return Err(name_too_long(&label.name, limits.max_name_bytes));
                }
                if label.value.len() > limits.max_value_bytes {
                    return Err(value_too_long(
                        &family.name,
                        &format!("label {}", label.name),
                        limits.max_value_bytes,
                    ));
                }
            }
            series.labels.retain(|l| key.get(&l.name).is_none());
        }
    }
    let in_target = instance_in_target(key, &families);
    if !in_target {
        add_empty_instance(&mut families);
    }
    let target = target_of(key, in_target);
    let mut drops = Drops::default();
    let families = Families::normalize(families, Some(&target), Origin::Peer, &mut drops);
    if !drops.is_empty() {
        let (reason, message) = if drops.get(DropReason::Duplicate) > 0 {
            (
                Reason::Duplicate,
                "the push holds a series twice (the same name and labels, once the grouping key's labels are applied)",
            )
        } else if drops.get(DropReason::ReservedName) > 0 {
            (
                Reason::ReservedName,
                "names starting with tether_ are the gateway's own: rename the metric",
            )
        } else if drops.get(DropReason::ReservedLabel) > 0 {
            (
                Reason::Malformed,
                "a series holds a label reserved by its type (le on a histogram, quantile on a summary) or starting with __",
            )
        } else {
            (
                Reason::TypeConflict,
                "the push writes one name twice with two types (a histogram h beside a gauge h_count, a counter c beside a gauge c_total)",
            )
        };
        return Err(Refusal::new(reason, message.to_owned()));
    }
    let mut names: Vec<String> = families.as_slice().iter().map(|f| f.name.clone()).collect();
    names.sort_unstable();
    Ok(Prepared {
        families,
        names,
        target,
    })
}

fn name_too_long(name: &str, max: usize) -> Refusal {
    let shown: String = name.chars().take(64).collect();
    Refusal::new(
        Reason::NameTooLong,
        format!(
            "the name {shown:?}… is longer than {max} bytes: shorten it, or raise --push-max-name-bytes"
        ),
    )
}

fn value_too_long(family: &str, what: &str, max: usize) -> Refusal {
    Refusal::new(
        Reason::ValueTooLong,
        format!(
            "{family}: {what} is longer than {max} bytes: shorten it, or raise --push-max-label-value-bytes"
        ),
    )
}

#[cfg(test)]
mod tests {
    use std::io::Write;

    use super::*;

    const LIMITS: BodyLimits = BodyLimits {
        max_decompressed_bytes: 1 << 20,
        max_series: 100,
        max_name_bytes: 64,
        max_value_bytes: 128,
        max_labels_per_series: 16,
    };

    fn prepared(body: &str, path: &str) -> Result<Prepared, Refusal> {
        let key = GroupingKey::from_path(path).expect("as the test set it up");
        let families = parse(body.as_bytes(), BodyFormat::Text, &LIMITS)?;
        prepare(families, &key, &LIMITS)
    }

    fn reason(result: Result<Prepared, Refusal>) -> Reason {
        result.expect_err("refused").reason
    }

    #[test]
    fn the_pushgateway_rules_refuse_with_their_reason() {
        let cases = [
            ("x 1 1234\n", Reason::Timestamp),
            ("dup 1\ndup 2\n", Reason::Duplicate),
            ("a 1\nb 1\na 2\n", Reason::Duplicate),
            ("this is not { valid\n", Reason::Malformed),
            ("tether_up 1\n", Reason::ReservedName),
        ];
        for (body, expected) in cases {
            assert_eq!(reason(prepared(body, "job/j")), expected, "{body}");
        }
        let long = format!("x{{y=\"{}\"}} 1\n", "a".repeat(129));
        assert_eq!(reason(prepared(&long, "job/j")), Reason::ValueTooLong);
        // After the key's labels replace the body's, two series are one.
        assert_eq!(
            reason(prepared("x{a=\"1\"} 1\nx{a=\"2\"} 2\n", "job/j/a/k")),
            Reason::Duplicate
        );
        let many: String = (0..101).map(|i| format!("m{{i=\"{i}\"}} 1\n")).collect();
        assert_eq!(
            reason(prepared(&many, "job/j")),
            Reason::TooManySeriesInPush
        );
    }

    #[test]
    fn the_key_wins_and_instance_defaults_to_empty() {
        let push = prepared(
            "x{job=\"body\",a=\"1\"} 1\ny{instance=\"mine\"} 2\n",
            "job/j",
        )
        .expect("as the test set it up");
        let families = push.families.as_slice();
        let labels = |family: usize| -> Vec<(String, String)> {
            families[family].series[0]
                .labels
                .iter()
                .map(|l| (l.name.clone(), l.value.clone()))
                .collect()
        };
        assert_eq!(
            labels(0),
            [
                ("a".to_owned(), "1".to_owned()),
                ("instance".to_owned(), String::new())
            ]
        );
        assert_eq!(labels(1), [("instance".to_owned(), "mine".to_owned())]);
        assert_eq!(push.names, ["x", "y"]);
        let own = prepared("push_time_seconds 5\nx 1\n", "job/j").expect("as the test set it up");
        assert_eq!(own.names, ["x"]);
        // No series has an instance: the empty one is the group's, once.
        assert!(own.families.as_slice()[0].series[0].labels.is_empty());
        let target: Vec<&str> = own
            .target
            .labels()
            .iter()
            .map(|l| l.name.as_str())
            .collect();
        assert_eq!(target, ["instance", "job"]);
        let with_instance = prepared("x{instance=\"body\"} 1\n", "job/j/instance/i")
            .expect("as the test set it up");
        assert!(
            with_instance.families.as_slice()[0].series[0]
                .labels
                .is_empty()
        );
    }

    #[test]
    fn bombs_cost_their_bound_and_every_encoding_decodes() {
        let mut gzip = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::best());
        gzip.write_all(&vec![0u8; 8 << 20])
            .expect("as the test set it up");
        let bomb = gzip.finish().expect("as the test set it up");
        let refused = decompress(bomb.into(), Encoding::Gzip, 1 << 20).expect_err("refused");
        assert_eq!(refused.reason, Reason::DecompressedTooLarge);
        let text = b"x 1\n".repeat(10);
        let mut gzip = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
        gzip.write_all(&text).expect("as the test set it up");
        let gz = gzip.finish().expect("as the test set it up");
        assert_eq!(
            &decompress(gz.into(), Encoding::Gzip, 1 << 20).expect("as the test set it up")[..],
            &text[..]
        );
        let mut snappy = snap::write::FrameEncoder::new(Vec::new());
        snappy.write_all(&text).expect("as the test set it up");
        let sz = snappy.into_inner().expect("as the test set it up");
        assert_eq!(
            &decompress(sz.into(), Encoding::Snappy, 1 << 20).expect("as the test set it up")[..],
            &text[..]
        );
        let garbage = decompress(bytes::Bytes::from_static(b"nope"), Encoding::Gzip, 1 << 20);
        assert_eq!(garbage.expect_err("refused").reason, Reason::Malformed);
        assert!(Encoding::from_header(Some("br")).is_err());
        assert_eq!(
            BodyFormat::from_header(Some(
                "application/vnd.google.protobuf; proto=io.prometheus.client.MetricFamily; encoding=delimited"
            )),
            BodyFormat::Protobuf
        );
        assert_eq!(
            BodyFormat::from_header(Some("text/plain")),
            BodyFormat::Text
        );
        for text in [
            "application/vnd.google.protobuf; encoding=delimited",
            "application/vnd.google.protobuf; proto=io.prometheus.client.MetricFamily; encoding=DELIMITED",
        ] {
            assert_eq!(
                BodyFormat::from_header(Some(text)),
                BodyFormat::Text,
                "{text}"
            );
        }
        assert_eq!(
            BodyFormat::from_header(Some(
                "Application/Vnd.Google.Protobuf; Encoding=\"delimited\"; PROTO=io.prometheus.client.MetricFamily"
            )),
            BodyFormat::Protobuf
        );
    }
}
