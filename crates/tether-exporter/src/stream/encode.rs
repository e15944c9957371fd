//! Encoding stream events from per-series bytes computed once.
//!
//! The flusher sends many events for few series, so each series' name and
//! labels are encoded once, when the flusher first sees it, and every event
//! is then a few `memcpy`s and a varint. The bytes are exactly those that
//! prost writes for `tether_proto::Event` (the unit tests compare them), in
//! field order: name, timestamp, labels in sorted key order, operation.
//! Metadata events are rare and go through `tether_proto` itself.

use std::collections::BTreeMap;
use std::time::{SystemTime, UNIX_EPOCH};

use bytes::{BufMut, BytesMut};
use metrics::Key;
use prost::encoding::{encode_varint, encoded_len_varint};
use tether_proto::{Event, EventMetadata, EventMetricType, encode_event};

use crate::registry::{Description, Kind};

/// Field keys (`field << 3 | wire type`) of the messages written here.
const EVENT_METRIC: u8 = 2 << 3 | 2;
const METRIC_NAME: u8 = 1 << 3 | 2;
const METRIC_TIMESTAMP: u8 = 2 << 3 | 2;
const METRIC_LABEL: u8 = 3 << 3 | 2;
const MAP_KEY: u8 = 1 << 3 | 2;
const MAP_VALUE: u8 = 2 << 3 | 2;
const TIMESTAMP_SECONDS: u8 = 1 << 3;
const TIMESTAMP_NANOS: u8 = 2 << 3;
const OP_SET_COUNTER: u8 = 5 << 3;
const OP_SET_GAUGE: u8 = 8 << 3 | 1;
const OP_RECORD_HISTOGRAM: u8 = 9 << 3 | 1;

/// The largest operation field: a key and a ten-byte varint.
const MAX_OPERATION_BYTES: usize = 11;

/// One series' name and labels, as `Metric` fields 1 and 3.
#[derive(Debug)]
pub(crate) struct EncodedSeries {
    /// Field 1 then field 3; the timestamp goes between them.
    bytes: Box<[u8]>,
    name_len: usize,
}

impl EncodedSeries {
    /// Encodes `key`'s name and labels. Labels go in sorted key order and
    /// one per key, the last given winning, as a protobuf map keeps them.
    pub(crate) fn new(key: &Key) -> EncodedSeries {
        let mut bytes = Vec::new();
        put_string_field(&mut bytes, METRIC_NAME, key.name());
        let name_len = bytes.len();
        let labels: BTreeMap<&str, &str> = key.labels().map(|l| (l.key(), l.value())).collect();
        for (label_key, label_value) in labels {
            // As prost does, an entry leaves out an empty key or value.
            let entry_len = string_field_len(label_key) + string_field_len(label_value);
            bytes.push(METRIC_LABEL);
            encode_varint(entry_len as u64, &mut bytes);
            put_string_field(&mut bytes, MAP_KEY, label_key);
            put_string_field(&mut bytes, MAP_VALUE, label_value);
        }
        EncodedSeries {
            bytes: bytes.into_boxed_slice(),
            name_len,
        }
    }

    /// An upper bound of the frame bytes one event of this series takes.
    pub(crate) fn max_event_len(&self, timestamp: &EncodedTimestamp) -> usize {
        let metric_len = self.bytes.len() + timestamp.bytes.len() + MAX_OPERATION_BYTES;
        let event_len = 1 + encoded_len_varint(metric_len as u64) + metric_len;
        encoded_len_varint(event_len as u64) + event_len
    }
}

/// A `Metric.timestamp` field, encoded once per flush.
#[derive(Debug)]
pub(crate) struct EncodedTimestamp {
    bytes: Vec<u8>,
}

impl EncodedTimestamp {
    pub(crate) fn now() -> EncodedTimestamp {
        EncodedTimestamp::at(SystemTime::now())
    }

    pub(crate) fn at(time: SystemTime) -> EncodedTimestamp {
        // A clock before 1970 is written as the epoch rather than failing.
        let since_epoch = time.duration_since(UNIX_EPOCH).unwrap_or_default();
        let seconds = since_epoch.as_secs();
        let nanos = since_epoch.subsec_nanos();
        let mut inner = Vec::with_capacity(16);
        // Proto3 leaves zero fields out.
        if seconds != 0 {
            inner.push(TIMESTAMP_SECONDS);
            encode_varint(seconds, &mut inner);
        }
        if nanos != 0 {
            inner.push(TIMESTAMP_NANOS);
            encode_varint(u64::from(nanos), &mut inner);
        }
        let mut bytes = Vec::with_capacity(inner.len() + 2);
        bytes.push(METRIC_TIMESTAMP);
        encode_varint(inner.len() as u64, &mut bytes);
        bytes.extend_from_slice(&inner);
        EncodedTimestamp { bytes }
    }
}

/// The operations the flusher sends: absolute values, and samples.
#[derive(Debug, Clone, Copy, PartialEq)]
pub(crate) enum Op {
    SetCounter(u64),
    SetGauge(f64),
    RecordHistogram(f64),
}

/// Appends one `Metric` event frame and returns its length in bytes.
pub(crate) fn put_metric_event(
    out: &mut BytesMut,
    series: &EncodedSeries,
    timestamp: &EncodedTimestamp,
    op: Op,
) -> usize {
    let mut operation = [0_u8; MAX_OPERATION_BYTES];
    let operation_len = match op {
        Op::SetCounter(value) => {
            operation[0] = OP_SET_COUNTER;
            let mut rest = &mut operation[1..];
            encode_varint(value, &mut rest);
            1 + encoded_len_varint(value)
        }
        Op::SetGauge(value) | Op::RecordHistogram(value) => {
            operation[0] = if matches!(op, Op::SetGauge(_)) {
                OP_SET_GAUGE
            } else {
                OP_RECORD_HISTOGRAM
            };
            operation[1..9].copy_from_slice(&value.to_le_bytes());
            9
        }
    };
    let metric_len = series.bytes.len() + timestamp.bytes.len() + operation_len;
    let event_len = 1 + encoded_len_varint(metric_len as u64) + metric_len;
    let frame_len = encoded_len_varint(event_len as u64) + event_len;
    out.reserve(frame_len);
    encode_varint(event_len as u64, out);
    out.put_u8(EVENT_METRIC);
    encode_varint(metric_len as u64, out);
    let (name, labels) = series.bytes.split_at(series.name_len);
    out.put_slice(name);
    out.put_slice(&timestamp.bytes);
    out.put_slice(labels);
    out.put_slice(&operation[..operation_len]);
    frame_len
}

/// Appends one `Metadata` event frame and returns its length in bytes.
///
/// The description always goes out, empty or not, as the original sends it.
pub(crate) fn put_metadata_event(out: &mut BytesMut, description: &Description) -> usize {
    let metric_type = match description.kind {
        Kind::Counter => EventMetricType::Counter,
        Kind::Gauge => EventMetricType::Gauge,
        Kind::Histogram => EventMetricType::Histogram,
    };
    let event = Event::from(EventMetadata {
        name: description.name.clone(),
        metric_type: metric_type.into(),
        unit: description.unit.map(|unit| unit.as_str().to_owned()),
        description: Some(description.help.clone()),
    });
    let before = out.len();
    encode_event(&event, out);
    out.len() - before
}

fn string_field_len(value: &str) -> usize {
    if value.is_empty() {
        0
    } else {
        1 + encoded_len_varint(value.len() as u64) + value.len()
    }
}

/// Writes a proto3 string field, or nothing for the empty string.
fn put_string_field(out: &mut Vec<u8>, key: u8, value: &str) {
    if value.is_empty() {
        return;
    }
    out.push(key);
    encode_varint(value.len() as u64, out);
    out.extend_from_slice(value.as_bytes());
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use metrics::Unit;
    use tether_model::pb::Timestamp;
    use tether_proto::{EventMetric, Operation};

    use super::*;

    fn key(name: &str, labels: &[(&str, &str)]) -> Key {
        Key::from_parts(
            name.to_owned(),
            labels
                .iter()
                .map(|(k, v)| metrics::Label::new(k.to_string(), v.to_string()))
                .collect::<Vec<_>>(),
        )
    }

    fn prost_frame(key: &Key, time: SystemTime, operation: Operation) -> Vec<u8> {
        let since_epoch = time.duration_since(UNIX_EPOCH).unwrap_or_default();
        let event = Event::from(EventMetric {
            name: key.name().to_owned(),
            timestamp: Some(Timestamp {
                seconds: i64::try_from(since_epoch.as_secs()).unwrap_or(i64::MAX),
                nanos: i32::try_from(since_epoch.subsec_nanos()).unwrap_or(0),
            }),
            labels: key
                .labels()
                .map(|l| (l.key().to_owned(), l.value().to_owned()))
                .collect(),
            operation: Some(operation),
        });
        let mut out = BytesMut::new();
        encode_event(&event, &mut out);
        out.to_vec()
    }

    #[test]
    fn metric_events_are_the_bytes_prost_writes() {
        let keys = [
            key("requests", &[]),
            key("http.requests", &[("z", "1"), ("a", "x\"y"), ("m", "")]),
            key("", &[("", "v"), ("dup", "first"), ("dup", "last")]),
            key(&"long_name_".repeat(30), &[("k", &"v".repeat(200))]),
        ];
        let times = [
            UNIX_EPOCH,
            UNIX_EPOCH + Duration::from_secs(1_700_000_000),
            UNIX_EPOCH + Duration::new(1_763_800_000, 123_456_789),
        ];
        let ops = [
            (Op::SetCounter(0), Operation::SetCounter(0)),
            (Op::SetCounter(u64::MAX), Operation::SetCounter(u64::MAX)),
            (Op::SetGauge(-1.5), Operation::SetGauge(-1.5)),
            (Op::SetGauge(0.0), Operation::SetGauge(0.0)),
            (Op::RecordHistogram(0.25), Operation::RecordHistogram(0.25)),
        ];
        for key in &keys {
            let series = EncodedSeries::new(key);
            for time in times {
                let timestamp = EncodedTimestamp::at(time);
                for (op, operation) in ops {
                    let mut ours = BytesMut::new();
                    let len = put_metric_event(&mut ours, &series, &timestamp, op);
                    let theirs = prost_frame(key, time, operation);
                    assert_eq!(&ours[..], &theirs[..], "{key:?} {time:?} {op:?}");
                    assert_eq!(len, theirs.len());
                    assert!(len <= series.max_event_len(&timestamp));
                }
            }
        }
    }

    #[test]
    fn metadata_events_carry_name_type_unit_and_description() {
        let description = Description {
            kind: Kind::Histogram,
            name: "x".to_owned(),
            unit: Some(Unit::Seconds),
            help: "d".to_owned(),
            version: 1,
        };
        let mut out = BytesMut::new();
        let len = put_metadata_event(&mut out, &description);
        // The frame tether-proto's own tests derive by hand.
        let expected: &[u8] = &[
            0x13, 0x0a, 0x11, 0x0a, 0x01, b'x', 0x10, 0x02, 0x1a, 0x07, b's', b'e', b'c', b'o',
            b'n', b'd', b's', 0x22, 0x01, b'd',
        ];
        assert_eq!(&out[..], expected);
        assert_eq!(len, expected.len());
    }
}
