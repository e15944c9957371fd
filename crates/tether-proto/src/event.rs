//! The metrics-exporter-tcp event stream: the proto3 messages of package
//! `event.proto`, bit-compatible with `metrics-exporter-tcp` 0.11 and
//! `metrics-observer` 0.5, one `Event` per varint length-delimited frame.
//!
//! The Rust names carry an `Event` prefix where the `.proto` names would
//! clash with the metric model (`Metadata` is [`EventMetadata`], `Metric` is
//! [`EventMetric`], `MetricType` is [`EventMetricType`]); names do not reach
//! the wire.

use std::collections::BTreeMap;

use bytes::{Bytes, BytesMut};
use prost::Message;
use tether_model::pb::Timestamp;

use crate::{FrameError, frame};

/// `event.proto.Event`: one metadata or metric update.
#[derive(Clone, PartialEq, prost::Message)]
pub struct Event {
    /// The `oneof event`: `metadata = 1`, `metric = 2`. `None` after
    /// decoding means a kind this schema does not know, from a newer
    /// sender: skip the event.
    #[prost(oneof = "EventKind", tags = "1, 2")]
    pub kind: Option<EventKind>,
}

/// What an [`Event`] carries: its `oneof event`.
#[derive(Clone, PartialEq, prost::Oneof)]
pub enum EventKind {
    /// `Metadata metadata = 1`.
    #[prost(message, tag = "1")]
    Metadata(EventMetadata),
    /// `Metric metric = 2`.
    #[prost(message, tag = "2")]
    Metric(EventMetric),
}

/// `event.proto.Metadata`: the type, unit and description of a metric name.
#[derive(Clone, PartialEq, Eq, Hash, prost::Message)]
pub struct EventMetadata {
    /// `string name = 1`: the metric name.
    #[prost(string, tag = "1")]
    pub name: String,
    /// `MetricType metric_type = 2`, an [`EventMetricType`] number; read it
    /// with [`metric_type()`](Self::metric_type), which maps unknown numbers
    /// to `COUNTER`.
    #[prost(enumeration = "EventMetricType", tag = "2")]
    pub metric_type: i32,
    /// `oneof unit { string unit_value = 3; }`: a `metrics::Unit::as_str()`
    /// string such as `seconds` or `bytes`. A oneof of one field encodes
    /// exactly as an optional field: present (even when empty) or absent.
    #[prost(string, optional, tag = "3")]
    pub unit: Option<String>,
    /// `oneof description { string description_value = 4; }`: the help text.
    #[prost(string, optional, tag = "4")]
    pub description: Option<String>,
}

/// `event.proto.Metadata.MetricType`, the kind of a metric name.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, prost::Enumeration)]
#[repr(i32)]
pub enum EventMetricType {
    /// `COUNTER = 0`.
    Counter = 0,
    /// `GAUGE = 1`.
    Gauge = 1,
    /// `HISTOGRAM = 2`.
    Histogram = 2,
}

impl EventMetricType {
    /// The name of the value in the `.proto` file, such as `HISTOGRAM`.
    pub fn as_str_name(self) -> &'static str {
        match self {
            EventMetricType::Counter => "COUNTER",
            EventMetricType::Gauge => "GAUGE",
            EventMetricType::Histogram => "HISTOGRAM",
        }
    }
}

/// `event.proto.Metric`: one operation on one series.
#[derive(Clone, PartialEq, prost::Message)]
pub struct EventMetric {
    /// `string name = 1`: the metric name.
    #[prost(string, tag = "1")]
    pub name: String,
    /// `google.protobuf.Timestamp timestamp = 2`: when the operation happened.
    #[prost(message, optional, tag = "2")]
    pub timestamp: Option<Timestamp>,
    /// `map<string, string> labels = 3`. A `BTreeMap`, so that entries
    /// encode in sorted key order as the original's do. As prost does, an
    /// entry leaves out an empty key or value; decoding accepts both forms.
    #[prost(btree_map = "string, string", tag = "3")]
    pub labels: BTreeMap<String, String>,
    /// The `oneof operation`, fields 4 to 9. `None` after decoding means an
    /// operation this schema does not know: skip the event.
    #[prost(oneof = "Operation", tags = "4, 5, 6, 7, 8, 9")]
    pub operation: Option<Operation>,
}

/// What an [`EventMetric`] does: its `oneof operation`.
#[derive(Clone, Copy, PartialEq, prost::Oneof)]
pub enum Operation {
    /// `uint64 increment_counter = 4`: add to a counter.
    #[prost(uint64, tag = "4")]
    IncrementCounter(u64),
    /// `uint64 set_counter = 5`: set a counter to an absolute value.
    #[prost(uint64, tag = "5")]
    SetCounter(u64),
    /// `double increment_gauge = 6`: add to a gauge.
    #[prost(double, tag = "6")]
    IncrementGauge(f64),
    /// `double decrement_gauge = 7`: subtract from a gauge.
    #[prost(double, tag = "7")]
    DecrementGauge(f64),
    /// `double set_gauge = 8`: set a gauge.
    #[prost(double, tag = "8")]
    SetGauge(f64),
    /// `double record_histogram = 9`: record one observation.
    #[prost(double, tag = "9")]
    RecordHistogram(f64),
}

impl From<EventMetadata> for Event {
    fn from(metadata: EventMetadata) -> Self {
        Event {
            kind: Some(EventKind::Metadata(metadata)),
        }
    }
}

impl From<EventMetric> for Event {
    fn from(metric: EventMetric) -> Self {
        Event {
            kind: Some(EventKind::Metric(metric)),
        }
    }
}

/// Appends `event` to `out` as one frame of the stream.
pub fn encode_event(event: &Event, out: &mut BytesMut) {
    frame::encode(event, out);
}

/// The [`Event`] in one frame body, as [`FrameDecoder`](crate::FrameDecoder) returns it.
///
/// An event of a kind or an operation this schema does not know decodes
/// with `kind` or `operation` set to `None`: the stream has no version, so
/// a reader skips what it does not know.
///
/// # Errors
///
/// [`FrameError::Decode`] when the body is not an `Event`.
pub fn decode_event(body: Bytes) -> Result<Event, FrameError> {
    Event::decode(body).map_err(|reason| FrameError::Decode {
        message: "Event",
        reason,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::examples;

    // The expected bytes below are derived by hand from the protobuf wire
    // format: a key is `field << 3 | wire type`, with wire type 0 a varint,
    // 1 eight little-endian bytes and 2 a varint length and that many bytes.
    // Proto3 leaves a field at its default value out, except inside a oneof
    // or an optional field, whose presence is the point. The two example
    // events are in `crate::examples`, which `PROTOCOL.md` shows.

    #[test]
    fn encodes_the_events_derived_by_hand() {
        for (event, frame) in [
            (examples::event_metadata(), examples::event_metadata_frame()),
            (examples::event_metric(), examples::event_metric_frame()),
        ] {
            let mut out = BytesMut::new();
            encode_event(&event, &mut out);
            assert_eq!(out, frame);
            // Both frames have a one-byte header.
            let body = Bytes::copy_from_slice(&frame[1..]);
            assert_eq!(decode_event(body), Ok(event));
        }
    }

    #[test]
    fn operations_encode_even_at_their_default_value() {
        // (operation, the Metric body it encodes to, nothing else set)
        #[rustfmt::skip]
        let cases: [(Operation, &[u8]); 8] = [
            (Operation::IncrementCounter(0), &[0x20, 0x00]),
            (Operation::IncrementCounter(1), &[0x20, 0x01]),
            // 300 = 0x2c + (2 << 7).
            (Operation::SetCounter(300), &[0x28, 0xac, 0x02]),
            (Operation::IncrementGauge(1.0), &[0x31, 0, 0, 0, 0, 0, 0, 0xf0, 0x3f]),
            (Operation::DecrementGauge(-2.0), &[0x39, 0, 0, 0, 0, 0, 0, 0, 0xc0]),
            (Operation::SetGauge(0.0), &[0x41, 0, 0, 0, 0, 0, 0, 0, 0]),
            (Operation::SetGauge(1.5), &[0x41, 0, 0, 0, 0, 0, 0, 0xf8, 0x3f]),
            (Operation::RecordHistogram(0.5), &[0x49, 0, 0, 0, 0, 0, 0, 0xe0, 0x3f]),
        ];
        for (operation, body) in cases {
            let metric = EventMetric {
                operation: Some(operation),
                ..EventMetric::default()
            };
            assert_eq!(metric.encode_to_vec(), body, "{operation:?}");
            assert_eq!(
                EventMetric::decode(body),
                Ok(metric),
                "{operation:?} decodes back"
            );
        }
    }

    #[test]
    fn unit_and_description_encode_when_present_even_if_empty() {
        let cases: [(Option<&str>, Option<&str>, &[u8]); 4] = [
            (None, None, &[]),
            (Some(""), None, &[0x1a, 0x00]),
            (None, Some(""), &[0x22, 0x00]),
            (
                Some("bytes"),
                None,
                &[0x1a, 0x05, b'b', b'y', b't', b'e', b's'],
            ),
        ];
        for (unit, description, body) in cases {
            let metadata = EventMetadata {
                unit: unit.map(str::to_owned),
                description: description.map(str::to_owned),
                ..EventMetadata::default()
            };
            assert_eq!(metadata.encode_to_vec(), body, "{unit:?} {description:?}");
            assert_eq!(EventMetadata::decode(body), Ok(metadata));
        }
    }

    #[test]
    fn label_entries_leave_out_empty_keys_and_values_and_decode_either_form() {
        let labels: BTreeMap<String, String> = [("k".to_owned(), String::new())].into();
        let metric = EventMetric {
            labels,
            ..EventMetric::default()
        };
        // As prost encodes it: the entry holds the key only.
        let short: &[u8] = &[0x1a, 0x03, 0x0a, 0x01, b'k'];
        // As protobuf-C++ encodes it: both fields, the value empty.
        let full: &[u8] = &[0x1a, 0x05, 0x0a, 0x01, b'k', 0x12, 0x00];
        assert_eq!(metric.encode_to_vec(), short);
        assert_eq!(EventMetric::decode(short), Ok(metric.clone()));
        assert_eq!(EventMetric::decode(full), Ok(metric));
    }

    #[test]
    fn decoding_accepts_any_field_order_and_skips_unknown_fields() {
        #[rustfmt::skip]
        let body: &[u8] = &[
            0x12, 0x1d,                               // Event field 2 (metric), 29 bytes
                0x20, 0x03,                           //   4 increment_counter: 3
                0x1a, 0x06, 0x0a, 0x01, b'b', 0x12, 0x01, b'2', // 3 labels: b=2
                0x78, 0x2a,                           //   15, unknown: a varint 42
                0x12, 0x04, 0x08, 0x01, 0x10, 0x02,   //   2 timestamp
                0x1a, 0x06, 0x0a, 0x01, b'a', 0x12, 0x01, b'1', // 3 labels: a=1
                0x0a, 0x01, b'r',                     //   1 name: "r"
        ];
        assert_eq!(
            decode_event(Bytes::from_static(body)),
            Ok(examples::event_metric())
        );
    }

    #[test]
    fn unknown_kinds_and_operations_decode_as_none() {
        // Event field 3 and Metric field 10 do not exist in this schema.
        let event = decode_event(Bytes::from_static(&[0x1a, 0x00]));
        assert_eq!(event, Ok(Event { kind: None }));
        let metric = decode_event(Bytes::from_static(&[0x12, 0x02, 0x50, 0x01]));
        assert_eq!(metric, Ok(EventMetric::default().into()));
        assert_eq!(decode_event(Bytes::new()), Ok(Event { kind: None }));
    }

    #[test]
    fn garbage_is_a_decode_error() {
        let cases: [&[u8]; 5] = [
            &[0x0f],                         // field 1 with wire type 7, which does not exist
            &[0x0a, 0x05, 0x0a],             // metadata longer than the body
            &[0x0a, 0x03, 0x0a, 0x01, 0xff], // a name that is not UTF-8
            &[0xff, 0xff, 0xff],             // a key that never ends
            &[0x12, 0x02, 0x31, 0x00],       // a double cut short
        ];
        for body in cases {
            let error = decode_event(Bytes::from_static(body));
            assert!(
                matches!(
                    error,
                    Err(FrameError::Decode {
                        message: "Event",
                        ..
                    })
                ),
                "{body:02x?}: {error:?}"
            );
        }
    }

    #[test]
    fn metric_type_names_match_the_proto_file() {
        let names = [0, 1, 2]
            .map(|number| EventMetricType::try_from(number).map(EventMetricType::as_str_name));
        assert_eq!(names, [Ok("COUNTER"), Ok("GAUGE"), Ok("HISTOGRAM")]);
        // An unknown number is kept as sent and read as the default.
        let metadata = EventMetadata::decode(&[0x10, 0x07][..]);
        assert_eq!(
            metadata.as_ref().map(EventMetadata::metric_type),
            Ok(EventMetricType::Counter)
        );
        assert_eq!(metadata.map(|metadata| metadata.metric_type), Ok(7));
    }
}
