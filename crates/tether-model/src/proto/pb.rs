//! The prost messages of the proto2 package `io.prometheus.client`, written by hand.
//!
//! These mirror `io/prometheus/client/metrics.proto` of `prometheus/client_model`
//! field for field, so that the build needs no `protoc`. Proto2 `optional`
//! scalars are `Option`s, so a reader can tell an absent field from a zero.
//! Repeated scalars carry `packed = "false"` because proto2 does not pack by
//! default; decoding accepts both the packed and the unpacked encoding.

/// A label: a name and a value.
#[derive(Clone, PartialEq, Eq, Hash, prost::Message)]
pub struct LabelPair {
    /// The label name.
    #[prost(string, optional, tag = "1")]
    pub name: Option<String>,
    /// The label value.
    #[prost(string, optional, tag = "2")]
    pub value: Option<String>,
}

/// The type of a metric family, which names the [`Metric`] field that holds each value.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, prost::Enumeration)]
#[repr(i32)]
pub enum MetricType {
    /// `COUNTER`: values are in [`Metric::counter`].
    Counter = 0,
    /// `GAUGE`: values are in [`Metric::gauge`].
    Gauge = 1,
    /// `SUMMARY`: values are in [`Metric::summary`].
    Summary = 2,
    /// `UNTYPED`: values are in [`Metric::untyped`].
    Untyped = 3,
    /// `HISTOGRAM`: values are in [`Metric::histogram`].
    Histogram = 4,
    /// `GAUGE_HISTOGRAM`: values are in [`Metric::histogram`].
    GaugeHistogram = 5,
}

impl MetricType {
    /// The name of the value in the `.proto` file, such as `GAUGE_HISTOGRAM`.
    pub fn as_str_name(self) -> &'static str {
        match self {
            MetricType::Counter => "COUNTER",
            MetricType::Gauge => "GAUGE",
            MetricType::Summary => "SUMMARY",
            MetricType::Untyped => "UNTYPED",
            MetricType::Histogram => "HISTOGRAM",
            MetricType::GaugeHistogram => "GAUGE_HISTOGRAM",
        }
    }
}

/// A point in time, wire-compatible with `google.protobuf.Timestamp`.
///
/// `google.protobuf.Timestamp` is proto3, so its fields are plain values
/// that are left out of the encoding when zero.
#[derive(Clone, Copy, PartialEq, Eq, Hash, prost::Message)]
pub struct Timestamp {
    /// Whole seconds since the Unix epoch.
    #[prost(int64, tag = "1")]
    pub seconds: i64,
    /// Nanoseconds after `seconds`, from 0 to 999,999,999.
    #[prost(int32, tag = "2")]
    pub nanos: i32,
}

/// The value of a gauge.
#[derive(Clone, PartialEq, prost::Message)]
pub struct Gauge {
    /// The value.
    #[prost(double, optional, tag = "1")]
    pub value: Option<f64>,
}

/// The value of a counter.
#[derive(Clone, PartialEq, prost::Message)]
pub struct Counter {
    /// The running total.
    #[prost(double, optional, tag = "1")]
    pub value: Option<f64>,
    /// An example observation that contributed to the total.
    #[prost(message, optional, tag = "2")]
    pub exemplar: Option<Exemplar>,
    /// When the counter was created.
    #[prost(message, optional, tag = "3")]
    pub created_timestamp: Option<Timestamp>,
}

/// One quantile of a summary.
#[derive(Clone, PartialEq, prost::Message)]
pub struct Quantile {
    /// The quantile, between 0 and 1.
    #[prost(double, optional, tag = "1")]
    pub quantile: Option<f64>,
    /// The observed value at that quantile.
    #[prost(double, optional, tag = "2")]
    pub value: Option<f64>,
}

/// The value of a summary.
#[derive(Clone, PartialEq, prost::Message)]
pub struct Summary {
    /// The count of observations.
    #[prost(uint64, optional, tag = "1")]
    pub sample_count: Option<u64>,
    /// The sum of observations.
    #[prost(double, optional, tag = "2")]
    pub sample_sum: Option<f64>,
    /// The quantiles.
    #[prost(message, repeated, tag = "3")]
    pub quantile: Vec<Quantile>,
    /// When the summary was created.
    #[prost(message, optional, tag = "4")]
    pub created_timestamp: Option<Timestamp>,
}

/// The value of an untyped metric.
#[derive(Clone, PartialEq, prost::Message)]
pub struct Untyped {
    /// The value.
    #[prost(double, optional, tag = "1")]
    pub value: Option<f64>,
}

/// The value of a histogram or gauge histogram, classic or native.
///
/// Fields 5 to 14 and 16 describe a native (sparse) histogram.
#[derive(Clone, PartialEq, prost::Message)]
pub struct Histogram {
    /// The count of observations, as an integer.
    #[prost(uint64, optional, tag = "1")]
    pub sample_count: Option<u64>,
    /// The count of observations as a float; overrides `sample_count` when above 0.
    #[prost(double, optional, tag = "4")]
    pub sample_count_float: Option<f64>,
    /// The sum of observations.
    #[prost(double, optional, tag = "2")]
    pub sample_sum: Option<f64>,
    /// The classic buckets, in increasing order of upper bound; `+Inf` is optional.
    #[prost(message, repeated, tag = "3")]
    pub bucket: Vec<Bucket>,
    /// When the histogram was created.
    #[prost(message, optional, tag = "15")]
    pub created_timestamp: Option<Timestamp>,
    /// The native bucket schema: each power of two splits into `2^schema` buckets.
    #[prost(sint32, optional, tag = "5")]
    pub schema: Option<i32>,
    /// The width of the native zero bucket.
    #[prost(double, optional, tag = "6")]
    pub zero_threshold: Option<f64>,
    /// The count in the native zero bucket, as an integer.
    #[prost(uint64, optional, tag = "7")]
    pub zero_count: Option<u64>,
    /// The count in the native zero bucket as a float; overrides `zero_count` when above 0.
    #[prost(double, optional, tag = "8")]
    pub zero_count_float: Option<f64>,
    /// The spans of the native negative buckets.
    #[prost(message, repeated, tag = "9")]
    pub negative_span: Vec<BucketSpan>,
    /// The native negative bucket counts, each as a delta to the previous one.
    #[prost(sint64, repeated, packed = "false", tag = "10")]
    pub negative_delta: Vec<i64>,
    /// The native negative bucket counts as absolute floats.
    #[prost(double, repeated, packed = "false", tag = "11")]
    pub negative_count: Vec<f64>,
    /// The spans of the native positive buckets.
    #[prost(message, repeated, tag = "12")]
    pub positive_span: Vec<BucketSpan>,
    /// The native positive bucket counts, each as a delta to the previous one.
    #[prost(sint64, repeated, packed = "false", tag = "13")]
    pub positive_delta: Vec<i64>,
    /// The native positive bucket counts as absolute floats.
    #[prost(double, repeated, packed = "false", tag = "14")]
    pub positive_count: Vec<f64>,
    /// Exemplars of a native histogram.
    #[prost(message, repeated, tag = "16")]
    pub exemplars: Vec<Exemplar>,
}

/// One classic histogram bucket.
#[derive(Clone, PartialEq, prost::Message)]
pub struct Bucket {
    /// The cumulative count, as an integer.
    #[prost(uint64, optional, tag = "1")]
    pub cumulative_count: Option<u64>,
    /// The cumulative count as a float; overrides `cumulative_count` when above 0.
    #[prost(double, optional, tag = "4")]
    pub cumulative_count_float: Option<f64>,
    /// The inclusive upper bound.
    #[prost(double, optional, tag = "2")]
    pub upper_bound: Option<f64>,
    /// An example observation that fell into this bucket.
    #[prost(message, optional, tag = "3")]
    pub exemplar: Option<Exemplar>,
}

/// A run of consecutive native histogram buckets.
#[derive(Clone, Copy, PartialEq, Eq, Hash, prost::Message)]
pub struct BucketSpan {
    /// The gap to the previous span, or the index of the first bucket for the first span.
    #[prost(sint32, optional, tag = "1")]
    pub offset: Option<i32>,
    /// The number of consecutive buckets.
    #[prost(uint32, optional, tag = "2")]
    pub length: Option<u32>,
}

/// An example observation with its own labels, such as a trace id.
#[derive(Clone, PartialEq, prost::Message)]
pub struct Exemplar {
    /// The exemplar's labels.
    #[prost(message, repeated, tag = "1")]
    pub label: Vec<LabelPair>,
    /// The observed value.
    #[prost(double, optional, tag = "2")]
    pub value: Option<f64>,
    /// When it was observed.
    #[prost(message, optional, tag = "3")]
    pub timestamp: Option<Timestamp>,
}

/// One series: a label set and a value in the field that the family's type names.
///
/// The counter, summary and histogram values are boxed, unlike what
/// `prost-build` generates: a histogram takes over 300 bytes inline, so an
/// empty two-byte `Metric` would otherwise decode to some 600 bytes, and a
/// hostile message could make the decoder allocate hundreds of times its size.
#[derive(Clone, PartialEq, prost::Message)]
pub struct Metric {
    /// The labels.
    #[prost(message, repeated, tag = "1")]
    pub label: Vec<LabelPair>,
    /// The value of a `GAUGE` metric.
    #[prost(message, optional, tag = "2")]
    pub gauge: Option<Gauge>,
    /// The value of a `COUNTER` metric.
    #[prost(message, optional, boxed, tag = "3")]
    pub counter: Option<Box<Counter>>,
    /// The value of a `SUMMARY` metric.
    #[prost(message, optional, boxed, tag = "4")]
    pub summary: Option<Box<Summary>>,
    /// The value of an `UNTYPED` metric.
    #[prost(message, optional, tag = "5")]
    pub untyped: Option<Untyped>,
    /// The value of a `HISTOGRAM` or `GAUGE_HISTOGRAM` metric.
    #[prost(message, optional, boxed, tag = "7")]
    pub histogram: Option<Box<Histogram>>,
    /// Milliseconds since the Unix epoch.
    #[prost(int64, optional, tag = "6")]
    pub timestamp_ms: Option<i64>,
}

/// A metric family: a name, help, type, unit and its metrics.
#[derive(Clone, PartialEq, prost::Message)]
pub struct MetricFamily {
    /// The family name; a counter's includes its `_total` suffix.
    #[prost(string, optional, tag = "1")]
    pub name: Option<String>,
    /// The help text.
    #[prost(string, optional, tag = "2")]
    pub help: Option<String>,
    /// The type; absent means `COUNTER`, the first value, as proto2 defines.
    #[prost(enumeration = "MetricType", optional, tag = "3")]
    pub r#type: Option<i32>,
    /// The metrics.
    #[prost(message, repeated, tag = "4")]
    pub metric: Vec<Metric>,
    /// The unit, such as `seconds`.
    #[prost(string, optional, tag = "5")]
    pub unit: Option<String>,
}

#[cfg(test)]
mod tests {
    use prost::Message;

    use super::*;

    #[test]
    fn repeated_scalars_encode_unpacked_as_proto2_does() {
        let histogram = Histogram {
            positive_delta: vec![1, -1],
            ..Histogram::default()
        };
        // Field 13, wire type 0, once per element; sint64 zigzags 1 to 2 and -1 to 1.
        assert_eq!(histogram.encode_to_vec(), [0x68, 0x02, 0x68, 0x01]);
    }

    #[test]
    fn repeated_scalars_decode_packed_and_unpacked() {
        let packed: &[u8] = &[
            0x6a, 0x02, 0x02, 0x01, // field 13 packed: deltas 1, -1
            0x5a, 0x08, 0, 0, 0, 0, 0, 0, 0xf0, 0x3f, // field 11 packed: count 1.0
        ];
        let unpacked: &[u8] = &[
            0x68, 0x02, 0x68, 0x01, // field 13 unpacked: deltas 1, -1
            0x59, 0, 0, 0, 0, 0, 0, 0xf0, 0x3f, // field 11 unpacked: count 1.0
        ];
        for bytes in [packed, unpacked] {
            let histogram = Histogram::decode(bytes).expect("valid histogram bytes");
            assert_eq!(histogram.positive_delta, [1, -1]);
            assert_eq!(histogram.negative_count, [1.0]);
        }
    }

    #[test]
    fn timestamp_is_wire_compatible_with_google_protobuf_timestamp() {
        let timestamp = Timestamp {
            seconds: 1,
            nanos: 2,
        };
        assert_eq!(timestamp.encode_to_vec(), [0x08, 0x01, 0x10, 0x02]);
        // Proto3 leaves zero fields out.
        assert_eq!(Timestamp::default().encode_to_vec(), [] as [u8; 0]);
    }

    #[test]
    fn unknown_type_numbers_are_kept_for_the_converter_to_reject() {
        let family = MetricFamily::decode(&[0x18, 0x09][..]).expect("valid family bytes");
        assert_eq!(family.r#type, Some(9));
    }

    #[test]
    fn absent_optional_scalars_differ_from_zero() {
        let absent = Gauge::decode(&[][..]).expect("empty message");
        let zero = Gauge::decode(&[0x09, 0, 0, 0, 0, 0, 0, 0, 0][..]).expect("valid gauge bytes");
        assert_eq!(absent.value, None);
        assert_eq!(zero.value, Some(0.0));
    }

    #[test]
    fn metric_stays_small_so_empty_messages_cannot_amplify_memory() {
        // See the doc on `Metric`: the boxed value fields keep it near 100
        // bytes, where an inline histogram would make it 600.
        assert!(size_of::<Metric>() <= 128, "{}", size_of::<Metric>());
    }

    #[test]
    fn type_names_match_the_proto_file() {
        let names: Vec<&str> = (0..6)
            .map(|number| {
                MetricType::try_from(number)
                    .expect("0 to 5 are defined")
                    .as_str_name()
            })
            .collect();
        assert_eq!(
            names,
            [
                "COUNTER",
                "GAUGE",
                "SUMMARY",
                "UNTYPED",
                "HISTOGRAM",
                "GAUGE_HISTOGRAM"
            ]
        );
    }
}
