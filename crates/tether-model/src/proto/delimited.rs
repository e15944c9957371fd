//! The varint-delimited stream of `MetricFamily` messages (`encoding=delimited`):
//! each message is preceded by its length as a protobuf varint.

use prost::Message;

use super::{convert, pb};
use crate::{MetricFamily, ProtoError};

/// The default limit on the length of one delimited message, 16 MiB.
///
/// A message that declares a longer length is refused with
/// [`ProtoError::MessageTooLarge`] as soon as its length prefix is read,
/// before any of it is buffered or decoded. The limit bounds one family, not
/// a whole body. Decoding expands a message in memory: in the worst case,
/// made of empty nested messages, by about 100 times its size, so callers
/// that take bodies from untrusted peers bound the body size as well.
pub const DEFAULT_MAX_MESSAGE_BYTES: usize = 16 * 1024 * 1024;

/// The longest varint: ten groups of seven bits hold 64.
const MAX_VARINT_BYTES: usize = 10;

/// Appends each family to `out` as a varint length followed by its message.
pub fn encode_delimited(families: &[MetricFamily], out: &mut Vec<u8>) {
    for family in families {
        encode_delimited_frame(&convert::to_proto(family), out);
    }
}

/// Appends one message to `out` as a varint length followed by its bytes.
pub fn encode_delimited_frame(family: &pb::MetricFamily, out: &mut Vec<u8>) {
    // Encoding into a buffer fails only when the buffer cannot grow to fit.
    // A `Vec<u8>` reports room for `isize::MAX` bytes minus its length, the
    // most it can ever allocate, so a message it cannot take could not have
    // existed in memory to be encoded.
    family
        .encode_length_delimited(out)
        .expect("a Vec<u8> grows to fit any message that fits in memory");
}

/// Every family of a delimited stream, converted and checked by [`from_proto`](crate::from_proto).
///
/// # Errors
///
/// [`ProtoError::MessageTooLarge`] when a message declares a length above
/// `max_message_bytes`, checked before the message is read;
/// [`ProtoError::Truncated`] when the input ends inside a length or a message;
/// [`ProtoError::Decode`] for a length prefix longer than ten bytes or a
/// message that is not a `MetricFamily`; [`ProtoError::InvalidFamily`] for a
/// family that [`from_proto`](crate::from_proto) rejects.
pub fn decode_delimited(
    input: &[u8],
    max_message_bytes: usize,
) -> Result<Vec<MetricFamily>, ProtoError> {
    let mut families = Vec::new();
    let mut offset = 0;
    while offset < input.len() {
        let frame = decode_delimited_frame(&input[offset..], max_message_bytes).map_err(
            // A position turns "invalid protobuf" into something a person
            // can find with a hex dump.
            |error| match error {
                ProtoError::Decode(reason) => {
                    ProtoError::Decode(format!("message at byte {offset}: {reason}"))
                }
                other => other,
            },
        )?;
        let Some((family, frame_len)) = frame else {
            return Err(ProtoError::Truncated);
        };
        families.push(convert::from_proto(family)?);
        offset += frame_len;
    }
    Ok(families)
}

/// The first message of `buf` and the bytes it took with its length prefix,
/// for readers that receive a stream in pieces.
///
/// An incomplete length prefix or message is `Ok(None)`: read more and call
/// again with the longer buffer. The declared length is checked against
/// `max_message_bytes` as soon as the prefix is complete, so a reader never
/// buffers a message that is over the limit.
///
/// # Errors
///
/// [`ProtoError::MessageTooLarge`] when the declared length is above
/// `max_message_bytes`; [`ProtoError::Decode`] for a length prefix longer
/// than ten bytes or a message that is not a `MetricFamily`. The stream
/// cannot be resynchronised after either.
pub fn decode_delimited_frame(
    buf: &[u8],
    max_message_bytes: usize,
) -> Result<Option<(pb::MetricFamily, usize)>, ProtoError> {
    let Some((message_len, prefix_len)) = decode_varint(buf)? else {
        return Ok(None);
    };
    let limit = u64::try_from(max_message_bytes).unwrap_or(u64::MAX);
    if message_len > limit {
        return Err(ProtoError::MessageTooLarge {
            len: message_len,
            limit: max_message_bytes,
        });
    }
    // The length is at most `max_message_bytes`, a `usize`, so it fits.
    let message_len = usize::try_from(message_len).unwrap_or(usize::MAX);
    let Some(message) = buf[prefix_len..].get(..message_len) else {
        return Ok(None);
    };
    let family = pb::MetricFamily::decode(message).map_err(|error| {
        ProtoError::Decode(format!(
            "{error}: send varint-delimited io.prometheus.client.MetricFamily messages"
        ))
    })?;
    Ok(Some((family, prefix_len + message_len)))
}

/// The varint at the start of `buf` and its length in bytes, or `None` when
/// `buf` ends inside it.
fn decode_varint(buf: &[u8]) -> Result<Option<(u64, usize)>, ProtoError> {
    let mut value: u64 = 0;
    for (index, &byte) in buf.iter().take(MAX_VARINT_BYTES).enumerate() {
        let bits = u64::from(byte & 0x7f);
        // The tenth byte holds only bit 63; anything above it, including
        // a continuation bit, is not a 64-bit varint.
        if index == MAX_VARINT_BYTES - 1 && byte > 1 {
            return Err(ProtoError::Decode(
                "length prefix is longer than a 64-bit varint: the stream is not varint-delimited"
                    .to_owned(),
            ));
        }
        value |= bits << (7 * index);
        if byte & 0x80 == 0 {
            return Ok(Some((value, index + 1)));
        }
    }
    Ok(None)
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    use super::*;
    use crate::{
        Bucket, Counter, Exemplar, Histogram, Label, MetricType, Quantile, Series, Summary, Value,
    };

    /// Two families, derived by hand from the protobuf wire format: a key is
    /// `field << 3 | wire type`, with wire type 0 a varint, 1 eight bytes
    /// and 2 a varint length and that many bytes.
    #[rustfmt::skip]
    const TWO_FAMILIES: &[u8] = &[
        42,                                       // length of the first family
        0x0a, 7, b'a', b'_', b't', b'o', b't', b'a', b'l', // 1 name: "a_total"
        0x12, 1, b'h',                            // 2 help: "h"
        0x18, 0,                                  // 3 type: COUNTER
        0x22, 26,                                 // 4 metric, 26 bytes
            0x0a, 6,                              //   1 label, 6 bytes
                0x0a, 1, b'x',                    //     1 name: "x"
                0x12, 1, b'y',                    //     2 value: "y"
            0x1a, 13,                             //   3 counter, 13 bytes
                0x09, 0, 0, 0, 0, 0, 0, 0xf0, 0x3f, // 1 value: 1.0
                0x1a, 2,                          //     3 created_timestamp, 2 bytes
                    0x08, 1,                      //       1 seconds: 1
            0x30, 0xe8, 0x07,                     //   6 timestamp_ms: 1000
        18,                                       // length of the second family
        0x0a, 1, b'g',                            // 1 name: "g"
        0x18, 1,                                  // 3 type: GAUGE
        0x22, 11,                                 // 4 metric, 11 bytes
            0x12, 9,                              //   2 gauge, 9 bytes
                0x09, 0, 0, 0, 0, 0, 0, 0x04, 0x40, // 1 value: 2.5
    ];

    /// Where the second family of [`TWO_FAMILIES`] starts.
    const SECOND_FRAME_START: usize = 43;

    fn two_families() -> Vec<MetricFamily> {
        vec![
            MetricFamily {
                name: "a_total".to_owned(),
                metric_type: MetricType::Counter,
                help: Some("h".to_owned()),
                unit: None,
                series: vec![Series {
                    labels: vec![Label::new("x", "y")],
                    value: Value::Counter(Counter {
                        total: 1.0,
                        created: Some(1.0),
                        exemplar: None,
                    }),
                    timestamp_ms: Some(1000),
                }],
            },
            MetricFamily {
                series: vec![Series {
                    labels: vec![],
                    value: Value::Single(2.5),
                    timestamp_ms: None,
                }],
                ..MetricFamily::new("g", MetricType::Gauge)
            },
        ]
    }

    #[test]
    fn decodes_a_stream_built_by_hand() {
        let families = decode_delimited(TWO_FAMILIES, DEFAULT_MAX_MESSAGE_BYTES);
        assert_eq!(families, Ok(two_families()));
    }

    #[test]
    fn encodes_the_stream_built_by_hand() {
        let mut out = Vec::new();
        encode_delimited(&two_families(), &mut out);
        assert_eq!(out, TWO_FAMILIES);
    }

    #[test]
    fn encoding_appends() {
        let mut out = vec![0xaa];
        encode_delimited(&two_families()[..1], &mut out);
        encode_delimited(&two_families()[1..], &mut out);
        assert_eq!(out[0], 0xaa);
        assert_eq!(out[1..], *TWO_FAMILIES);
    }

    #[test]
    fn frames_decode_one_at_a_time() {
        let (first, first_len) = decode_delimited_frame(TWO_FAMILIES, DEFAULT_MAX_MESSAGE_BYTES)
            .expect("valid stream")
            .expect("a complete first frame");
        assert_eq!(first_len, SECOND_FRAME_START);
        assert_eq!(first.name.as_deref(), Some("a_total"));
        let rest = &TWO_FAMILIES[first_len..];
        let (second, second_len) = decode_delimited_frame(rest, DEFAULT_MAX_MESSAGE_BYTES)
            .expect("valid stream")
            .expect("a complete second frame");
        assert_eq!(second_len, rest.len());
        assert_eq!(second.name.as_deref(), Some("g"));
    }

    #[test]
    fn an_incomplete_frame_is_none_and_an_incomplete_stream_is_truncated() {
        for cut in 0..TWO_FAMILIES.len() {
            let prefix = &TWO_FAMILIES[..cut];
            let frame = decode_delimited_frame(prefix, DEFAULT_MAX_MESSAGE_BYTES);
            let stream = decode_delimited(prefix, DEFAULT_MAX_MESSAGE_BYTES);
            if cut < SECOND_FRAME_START {
                assert_eq!(frame, Ok(None), "cut at {cut}");
            } else {
                assert!(
                    matches!(frame, Ok(Some((_, SECOND_FRAME_START)))),
                    "cut at {cut}"
                );
            }
            if cut == 0 || cut == SECOND_FRAME_START {
                assert_eq!(
                    stream.map(|families| families.len()),
                    Ok(cut.min(1)),
                    "cut at {cut}"
                );
            } else {
                assert_eq!(stream, Err(ProtoError::Truncated), "cut at {cut}");
            }
        }
    }

    #[test]
    fn truncated_inputs() {
        let cases: [&[u8]; 4] = [
            &[0x80],             // a length prefix that promises another byte
            &[0xff, 0xff, 0xff], // the same, longer
            &[0x05, 0x0a, 0x01], // a message of 5 bytes with 2 present
            &[0x96, 0x01],       // a complete prefix of 150 and nothing after
        ];
        for input in cases {
            assert_eq!(
                decode_delimited_frame(input, DEFAULT_MAX_MESSAGE_BYTES),
                Ok(None),
                "{input:?}"
            );
            assert_eq!(
                decode_delimited(input, DEFAULT_MAX_MESSAGE_BYTES),
                Err(ProtoError::Truncated),
                "{input:?}"
            );
        }
    }

    #[test]
    fn a_declared_length_over_the_limit_is_refused_before_the_message_arrives() {
        let limit = 1024;
        // Only the prefixes are present: waiting for the message would be
        // `Ok(None)`, so an error shows the length was checked first.
        let cases: [(&[u8], u64); 3] = [
            (&[0x81, 0x08], 1025),
            (&[0x80, 0x80, 0x80, 0x80, 0x80, 0x80, 0x01], 1 << 42),
            (
                &[0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0x01],
                u64::MAX,
            ),
        ];
        for (input, len) in cases {
            let expected = ProtoError::MessageTooLarge { len, limit };
            assert_eq!(
                decode_delimited_frame(input, limit),
                Err(expected.clone()),
                "{input:?}"
            );
            assert_eq!(decode_delimited(input, limit), Err(expected), "{input:?}");
        }
    }

    #[test]
    fn a_message_of_exactly_the_limit_is_accepted() {
        let first = &TWO_FAMILIES[..SECOND_FRAME_START];
        let message_len = SECOND_FRAME_START - 1;
        assert_eq!(
            decode_delimited(first, message_len).map(|families| families.len()),
            Ok(1)
        );
        assert_eq!(
            decode_delimited(first, message_len - 1),
            Err(ProtoError::MessageTooLarge { len: 42, limit: 41 })
        );
    }

    #[test]
    fn a_length_prefix_longer_than_ten_bytes_is_invalid() {
        let cases: [&[u8]; 3] = [
            &[0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0x02],
            &[
                0x80, 0x80, 0x80, 0x80, 0x80, 0x80, 0x80, 0x80, 0x80, 0x80, 0x00,
            ],
            &[0xff; 11],
        ];
        for input in cases {
            let frame = decode_delimited_frame(input, usize::MAX);
            assert!(
                matches!(&frame, Err(ProtoError::Decode(reason)) if reason.contains("64-bit varint")),
                "{input:?}: {frame:?}"
            );
            assert!(matches!(
                decode_delimited(input, usize::MAX),
                Err(ProtoError::Decode(_))
            ));
        }
    }

    #[test]
    fn garbage_is_a_decode_error_with_its_position() {
        let cases: [&[u8]; 4] = [
            &[0x02, 0x0f, 0x00],       // field 1 with wire type 7, which does not exist
            &[0x03, 0xff, 0xff, 0xff], // a field key that never ends
            &[0x03, 0x0a, 0x01, 0xff], // a name that is not UTF-8
            &[0x02, 0x0a, 0x05],       // a name longer than its message
        ];
        for input in cases {
            assert!(
                matches!(
                    decode_delimited_frame(input, DEFAULT_MAX_MESSAGE_BYTES),
                    Err(ProtoError::Decode(_))
                ),
                "{input:?}"
            );
            let mut stream = TWO_FAMILIES.to_vec();
            stream.extend_from_slice(input);
            let error = decode_delimited(&stream, DEFAULT_MAX_MESSAGE_BYTES);
            assert!(
                matches!(&error, Err(ProtoError::Decode(reason)) if reason.starts_with(&format!("message at byte {}: ", TWO_FAMILIES.len()))),
                "{input:?}: {error:?}"
            );
        }
    }

    #[test]
    fn invalid_families_in_a_stream_are_rejected() {
        // An empty message is a family without a name.
        assert!(matches!(
            decode_delimited(&[0x00], DEFAULT_MAX_MESSAGE_BYTES),
            Err(ProtoError::InvalidFamily { name, .. }) if name.is_empty()
        ));
        // A GAUGE family whose metric is empty.
        let input = [0x07, 0x0a, 0x01, b'g', 0x18, 0x01, 0x22, 0x00];
        let error = decode_delimited(&input, DEFAULT_MAX_MESSAGE_BYTES);
        assert!(
            matches!(&error, Err(ProtoError::InvalidFamily { name, reason })
                if name == "g" && reason.contains("no \"gauge\" field")),
            "{error:?}"
        );
    }

    #[test]
    fn an_empty_stream_has_no_families() {
        assert_eq!(decode_delimited(&[], DEFAULT_MAX_MESSAGE_BYTES), Ok(vec![]));
        assert_eq!(
            decode_delimited_frame(&[], DEFAULT_MAX_MESSAGE_BYTES),
            Ok(None)
        );
    }

    // Generated families, shaped so that a round trip must reproduce them
    // exactly: no info or state set types, which read back as gauges;
    // counts that are not -0.0, which reads back as 0; integral summary
    // counts; times in the range of real clocks, where nanoseconds are finer
    // than an f64 can tell apart.

    fn metric_name() -> impl Strategy<Value = String> {
        "[a-zA-Z_:][a-zA-Z0-9_:]{0,12}"
    }

    fn labels() -> impl Strategy<Value = Vec<Label>> {
        prop::collection::btree_map("[a-zA-Z_][a-zA-Z0-9_]{0,8}", ".{0,8}", 0..4).prop_map(
            |labels| {
                labels
                    .into_iter()
                    .map(|(name, value)| Label { name, value })
                    .collect()
            },
        )
    }

    fn count() -> BoxedStrategy<f64> {
        prop_oneof![
            (0u64..1 << 53).prop_map(|count| count as f64),
            prop::num::f64::ANY.prop_filter("-0.0 reads back as 0", |count| {
                !(*count == 0.0 && count.is_sign_negative())
            }),
        ]
        .boxed()
    }

    fn seconds() -> impl Strategy<Value = f64> {
        (1_000_000_000i64..2_000_000_000, 0i64..1000)
            .prop_map(|(whole, millis)| whole as f64 + millis as f64 / 1000.0)
    }

    fn exemplar() -> impl Strategy<Value = Exemplar> {
        (labels(), prop::num::f64::ANY, prop::option::of(seconds())).prop_map(
            |(labels, value, timestamp)| Exemplar {
                labels,
                value,
                timestamp,
            },
        )
    }

    fn histogram() -> impl Strategy<Value = Histogram> {
        let bounds = prop::collection::btree_set(-1000i32..1000, 0..5);
        let buckets = bounds.prop_flat_map(|bounds| {
            let n_buckets = bounds.len() + 1;
            (
                Just(bounds),
                prop::collection::vec((count(), prop::option::of(exemplar())), n_buckets),
            )
        });
        (
            buckets,
            prop::option::of(count()),
            prop::option::of(prop::num::f64::ANY),
            prop::option::of(seconds()),
        )
            .prop_map(|((bounds, counts), count, sum, created)| Histogram {
                buckets: bounds
                    .into_iter()
                    .map(|bound| f64::from(bound) / 8.0)
                    .chain([f64::INFINITY])
                    .zip(counts)
                    .map(|(upper_bound, (count, exemplar))| Bucket {
                        upper_bound,
                        count,
                        exemplar,
                    })
                    .collect(),
                count,
                sum,
                created,
            })
    }

    fn value(metric_type: MetricType) -> BoxedStrategy<Value> {
        match metric_type {
            MetricType::Counter => (
                prop::num::f64::ANY,
                prop::option::of(seconds()),
                prop::option::of(exemplar()),
            )
                .prop_map(|(total, created, exemplar)| {
                    Value::Counter(Counter {
                        total,
                        created,
                        exemplar,
                    })
                })
                .boxed(),
            MetricType::Histogram | MetricType::GaugeHistogram => {
                histogram().prop_map(Value::Histogram).boxed()
            }
            MetricType::Summary => (
                prop::collection::vec((prop::num::f64::ANY, prop::num::f64::ANY), 0..4),
                prop::option::of((0u64..1 << 53).prop_map(|count| count as f64)),
                prop::option::of(prop::num::f64::ANY),
                prop::option::of(seconds()),
            )
                .prop_map(|(quantiles, count, sum, created)| {
                    Value::Summary(Summary {
                        quantiles: quantiles
                            .into_iter()
                            .map(|(quantile, value)| Quantile { quantile, value })
                            .collect(),
                        count,
                        sum,
                        created,
                    })
                })
                .boxed(),
            _ => prop::num::f64::ANY.prop_map(Value::Single).boxed(),
        }
    }

    fn family() -> impl Strategy<Value = MetricFamily> {
        let metric_type = prop_oneof![
            Just(MetricType::Counter),
            Just(MetricType::Gauge),
            Just(MetricType::Histogram),
            Just(MetricType::GaugeHistogram),
            Just(MetricType::Summary),
            Just(MetricType::Unknown),
        ];
        metric_type.prop_flat_map(|metric_type| {
            let series = (labels(), value(metric_type), prop::option::of(any::<i64>())).prop_map(
                |(labels, value, timestamp_ms)| Series {
                    labels,
                    value,
                    timestamp_ms,
                },
            );
            (
                metric_name(),
                prop::option::of(".{0,16}"),
                prop::option::of("[a-z]{1,8}"),
                prop::collection::vec(series, 0..4),
            )
                .prop_map(move |(name, help, unit, series)| MetricFamily {
                    name,
                    metric_type,
                    help,
                    unit,
                    series,
                })
        })
    }

    /// Families as text that compares equal exactly when the families do,
    /// NaN included: `Debug` prints every other f64 so that it reads back to
    /// the same bits.
    fn comparable(families: &[MetricFamily]) -> String {
        format!("{families:?}")
    }

    proptest! {
        #[test]
        fn generated_families_round_trip(families in prop::collection::vec(family(), 0..4)) {
            let mut stream = Vec::new();
            encode_delimited(&families, &mut stream);
            let back = decode_delimited(&stream, DEFAULT_MAX_MESSAGE_BYTES);
            prop_assert_eq!(
                back.as_deref().map(comparable),
                Ok(comparable(&families))
            );
        }

        #[test]
        fn frames_decode_the_same_whatever_the_chunks(
            families in prop::collection::vec(family(), 1..4),
            chunk_len in 1usize..64,
        ) {
            let mut stream = Vec::new();
            encode_delimited(&families, &mut stream);
            // A reader that receives the stream `chunk_len` bytes at a time.
            let mut buffer = Vec::new();
            let mut decoded = Vec::new();
            for chunk in stream.chunks(chunk_len) {
                buffer.extend_from_slice(chunk);
                while let Some((family, frame_len)) =
                    decode_delimited_frame(&buffer, DEFAULT_MAX_MESSAGE_BYTES)?
                {
                    decoded.push(convert::from_proto(family)?);
                    buffer.drain(..frame_len);
                }
            }
            prop_assert!(buffer.is_empty());
            prop_assert_eq!(comparable(&decoded), comparable(&families));
        }
    }
}
