//! Varint length-delimited frames: a body's length as a protobuf varint (the
//! header), then the body. Both the agent protocol and the event stream use them.

use bytes::{Buf, Bytes, BytesMut};
use prost::Message;

use crate::FrameError;

/// The default limit on the length of one frame body, 16 MiB.
///
/// A reader refuses a frame whose header declares a longer body with
/// [`FrameError::TooLarge`] as soon as the header is complete, before any of
/// the body is buffered, and closes the connection: the stream cannot be
/// resynchronised. On the agent protocol the gateway first sends `Reject`
/// with `FRAME_TOO_LARGE`. A body of exactly the limit is accepted.
///
/// The limit bounds the bytes a peer can make a reader buffer, not the
/// memory a decoded message takes: protobuf decoding expands a body built of
/// many empty nested messages (such as empty `Metric`s) by up to about 100
/// times. A gateway that accepts untrusted agents sets a limit with that in
/// mind.
pub const DEFAULT_MAX_FRAME_BYTES: usize = 16 << 20;

/// The longest varint: ten groups of seven bits hold 64.
const MAX_HEADER_BYTES: usize = 10;

/// Where a frame's parts end: its header, then its body.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct FrameLen {
    /// The length of the varint header, from 1 to 10 bytes.
    pub header_len: usize,
    /// The length of the body the header declares.
    pub body_len: usize,
}

impl FrameLen {
    /// The length of the whole frame, header and body.
    pub fn total_len(self) -> usize {
        self.header_len + self.body_len
    }
}

/// Whether `buf` starts with a complete frame, and its lengths if so.
///
/// This is the cheap step: it reads at most the 10 bytes of the header and
/// copies nothing. `Ok(None)` means the header or the body is incomplete:
/// read more and call again with the longer buffer.
///
/// # Errors
///
/// [`FrameError::InvalidHeader`] when the header is not a varint of at most
/// 10 bytes holding a 64-bit value; [`FrameError::TooLarge`] when it declares
/// a body longer than `max_frame_bytes`. Both are decided as soon as the
/// header is complete, before any of the body has arrived.
pub fn check(buf: &[u8], max_frame_bytes: usize) -> Result<Option<FrameLen>, FrameError> {
    let Some(frame_len) = read_header(buf, max_frame_bytes)? else {
        return Ok(None);
    };
    if buf.len() < frame_len.total_len() {
        return Ok(None);
    }
    Ok(Some(frame_len))
}

/// The lengths of the frame at the start of `buf` once its header is
/// complete, whether or not its body is.
fn read_header(buf: &[u8], max_frame_bytes: usize) -> Result<Option<FrameLen>, FrameError> {
    let mut body_len: u64 = 0;
    for (index, &byte) in buf.iter().take(MAX_HEADER_BYTES).enumerate() {
        // The tenth byte holds only bit 63: anything above it, a
        // continuation bit included, overflows 64 bits or runs past 10 bytes.
        if index == MAX_HEADER_BYTES - 1 && byte > 1 {
            return Err(FrameError::InvalidHeader);
        }
        body_len |= u64::from(byte & 0x7f) << (7 * index);
        if byte & 0x80 == 0 {
            return match usize::try_from(body_len) {
                Ok(body_len) if body_len <= max_frame_bytes => Ok(Some(FrameLen {
                    header_len: index + 1,
                    body_len,
                })),
                _ => Err(FrameError::TooLarge {
                    len: body_len,
                    max_frame_bytes,
                }),
            };
        }
    }
    Ok(None)
}

/// Splits complete frame bodies off the front of a read buffer.
///
/// The shape is that of `tokio_util::codec::Decoder`, so an adapter is a
/// few lines:
///
/// ```text
/// impl Decoder for AgentCodec {
///     type Item = Bytes;
///     type Error = std::io::Error; // From<FrameError> is implemented
///     fn decode(&mut self, src: &mut BytesMut) -> io::Result<Option<Bytes>> {
///         Ok(self.frames.decode(src)?)
///     }
///     fn decode_eof(&mut self, src: &mut BytesMut) -> io::Result<Option<Bytes>> {
///         Ok(self.frames.decode_eof(src)?)
///     }
/// }
/// ```
///
/// The decoder does not reserve room for a body it was promised: the buffer
/// grows with the bytes that actually arrive, so a peer that declares a
/// large frame and sends nothing costs nothing.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FrameDecoder {
    /// The longest body accepted, in bytes; see [`DEFAULT_MAX_FRAME_BYTES`]
    /// for what happens at the limit.
    pub max_frame_bytes: usize,
}

impl Default for FrameDecoder {
    /// A decoder with the limit [`DEFAULT_MAX_FRAME_BYTES`].
    fn default() -> Self {
        Self::new(DEFAULT_MAX_FRAME_BYTES)
    }
}

impl FrameDecoder {
    /// A decoder that accepts bodies of up to `max_frame_bytes`.
    pub const fn new(max_frame_bytes: usize) -> Self {
        Self { max_frame_bytes }
    }

    /// The body of the first frame of `buf`, split off without copying, or
    /// `Ok(None)` when `buf` does not yet hold a complete frame.
    ///
    /// On success the frame, header and body, is removed from `buf`; on
    /// `Ok(None)` and on an error `buf` is left as it was.
    ///
    /// # Errors
    ///
    /// As [`check`]: [`FrameError::InvalidHeader`] or [`FrameError::TooLarge`].
    pub fn decode(&mut self, buf: &mut BytesMut) -> Result<Option<Bytes>, FrameError> {
        let Some(frame_len) = check(buf, self.max_frame_bytes)? else {
            return Ok(None);
        };
        buf.advance(frame_len.header_len);
        Ok(Some(buf.split_to(frame_len.body_len).freeze()))
    }

    /// As [`decode`](Self::decode), for when the stream has ended: what is
    /// left in `buf` must be whole frames.
    ///
    /// # Errors
    ///
    /// As [`decode`](Self::decode), and [`FrameError::Truncated`] when `buf`
    /// ends inside a frame.
    pub fn decode_eof(&mut self, buf: &mut BytesMut) -> Result<Option<Bytes>, FrameError> {
        match self.decode(buf)? {
            Some(body) => Ok(Some(body)),
            None if buf.is_empty() => Ok(None),
            None => Err(FrameError::Truncated {
                buffered: buf.len(),
            }),
        }
    }
}

/// Appends `message` to `out` as one frame: its length as a varint, then its bytes.
///
/// The sender checks the receiver's limit itself, or calls
/// [`encode_limited`]: a frame over the limit makes the receiver close the
/// connection.
pub fn encode(message: &impl Message, out: &mut BytesMut) {
    // Encoding fails only when the buffer cannot grow to fit. A `BytesMut`
    // reports room for `usize::MAX` bytes minus its length, more than it
    // can ever allocate, so a message it cannot take could not have existed
    // in memory to be encoded.
    message
        .encode_length_delimited(out)
        .expect("a BytesMut grows to fit any message that fits in memory");
}

/// `message` as one frame in a new `Vec`: its length as a varint, then its bytes.
pub fn encode_to_vec(message: &impl Message) -> Vec<u8> {
    message.encode_length_delimited_to_vec()
}

/// As [`encode`], unless the body would be longer than `max_frame_bytes`,
/// the limit of the peer that reads it (the `max_frame_bytes` of the
/// gateway's `Welcome`, for an agent).
///
/// # Errors
///
/// [`FrameError::TooLarge`] when the body is over the limit; `out` is left
/// as it was. An agent answers a scrape that failed so with a
/// `ScrapeResponse` that carries the error instead of the families.
pub fn encode_limited(
    message: &impl Message,
    max_frame_bytes: usize,
    out: &mut BytesMut,
) -> Result<(), FrameError> {
    let body_len = message.encoded_len();
    if body_len > max_frame_bytes {
        return Err(FrameError::TooLarge {
            len: u64::try_from(body_len).unwrap_or(u64::MAX),
            max_frame_bytes,
        });
    }
    encode(message, out);
    Ok(())
}

#[cfg(test)]
mod tests {
    use tether_model::pb::LabelPair;

    use super::*;

    /// Frames of lengths around the one-byte header's limit of 127.
    fn bodies() -> Vec<Vec<u8>> {
        vec![
            vec![],
            b"a".to_vec(),
            (0..=126).collect(),
            (0..=127).collect(),
            (0..200).map(|n: u8| n.wrapping_mul(7)).collect(),
            vec![],
        ]
    }

    fn stream_of(bodies: &[Vec<u8>]) -> Vec<u8> {
        let mut stream = Vec::new();
        for body in bodies {
            stream.extend_from_slice(&encode_to_vec(&RawBody(body.clone())));
        }
        stream
    }

    /// A message that encodes as the bytes it holds, to build frames of any body.
    #[derive(Debug, Clone, PartialEq, Default)]
    struct RawBody(Vec<u8>);

    impl Message for RawBody {
        fn encode_raw(&self, buf: &mut impl bytes::BufMut) {
            buf.put_slice(&self.0);
        }
        fn merge_field(
            &mut self,
            tag: u32,
            wire_type: prost::encoding::WireType,
            buf: &mut impl Buf,
            ctx: prost::encoding::DecodeContext,
        ) -> Result<(), prost::DecodeError> {
            // Tests only encode raw bodies; decoding one keeps nothing.
            prost::encoding::skip_field(wire_type, tag, buf, ctx)
        }
        fn encoded_len(&self) -> usize {
            self.0.len()
        }
        fn clear(&mut self) {
            self.0.clear();
        }
    }

    /// Feeds `chunks` to a decoder one at a time and collects the bodies.
    fn decode_chunks<'a>(
        chunks: impl IntoIterator<Item = &'a [u8]>,
        max_frame_bytes: usize,
    ) -> Result<Vec<Vec<u8>>, FrameError> {
        let mut decoder = FrameDecoder::new(max_frame_bytes);
        let mut buf = BytesMut::new();
        let mut bodies = Vec::new();
        for chunk in chunks {
            buf.extend_from_slice(chunk);
            while let Some(body) = decoder.decode(&mut buf)? {
                bodies.push(body.to_vec());
            }
        }
        if let Some(body) = decoder.decode_eof(&mut buf)? {
            bodies.push(body.to_vec());
        }
        Ok(bodies)
    }

    #[test]
    fn headers_decoded_by_hand() {
        // (input, limit, expected): a varint holds 7 bits a byte, least
        // significant group first, and a set top bit means "more follows".
        let ok = |header_len, body_len| {
            Ok(Some(FrameLen {
                header_len,
                body_len,
            }))
        };
        let ten_ff_01: &[u8] = &[0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0x01];
        type Checked = Result<Option<FrameLen>, FrameError>;
        let cases: Vec<(&[u8], usize, Checked)> = vec![
            (&[], 100, Ok(None)),
            (&[0x00], 100, ok(1, 0)),
            (&[0x01, b'x'], 100, ok(1, 1)),
            (&[0x01], 100, Ok(None)),
            (&[0x7f], 1000, Ok(None)),
            (&[0x80], 1000, Ok(None)),
            (&[0x80, 0x01], 1000, Ok(None)),
            // 0x96 0x01 is 0x16 + (1 << 7) = 150.
            (&[0x96, 0x01], 1000, Ok(None)),
            (&[0x96, 0x01], 149, Err(too_large(150, 149))),
            // A non-canonical zero with a padding byte is still zero.
            (&[0x80, 0x00], 100, ok(2, 0)),
            // 16384 = 1 << 14 needs three bytes.
            (&[0x80, 0x80, 0x01], 16384, Ok(None)),
            (&[0x80, 0x80, 0x01], 16383, Err(too_large(16384, 16383))),
            (&[0x80; 9], usize::MAX, Ok(None)),
            (ten_ff_01, 1 << 20, Err(too_large(u64::MAX, 1 << 20))),
        ];
        for (input, limit, expected) in cases {
            assert_eq!(
                check(input, limit),
                expected,
                "{input:02x?} with limit {limit}"
            );
        }
    }

    fn too_large(len: u64, max_frame_bytes: usize) -> FrameError {
        FrameError::TooLarge {
            len,
            max_frame_bytes,
        }
    }

    #[test]
    fn a_header_over_ten_bytes_or_64_bits_is_invalid() {
        let cases: [&[u8]; 5] = [
            // Eleven bytes: the tenth still says "more follows".
            &[
                0x80, 0x80, 0x80, 0x80, 0x80, 0x80, 0x80, 0x80, 0x80, 0x80, 0x00,
            ],
            &[0xff; 11],
            // Ten bytes, so the error needs no eleventh.
            &[0xff; 10],
            // Ten bytes whose last sets bit 64.
            &[0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0x02],
            &[0x80, 0x80, 0x80, 0x80, 0x80, 0x80, 0x80, 0x80, 0x80, 0x7f],
        ];
        for input in cases {
            assert_eq!(
                check(input, usize::MAX),
                Err(FrameError::InvalidHeader),
                "{input:02x?}"
            );
            let mut buf = BytesMut::from(input);
            assert_eq!(
                FrameDecoder::new(usize::MAX).decode(&mut buf),
                Err(FrameError::InvalidHeader)
            );
            assert_eq!(buf, input, "an error leaves the buffer as it was");
        }
    }

    #[test]
    fn an_oversized_frame_is_refused_before_its_body_arrives() {
        let limit = 1024;
        // Only headers are present: waiting for the body would be
        // `Ok(None)`, so an error shows the length was checked first.
        let cases: [(&[u8], u64); 3] = [
            (&[0x81, 0x08], 1025),
            (&[0x80, 0x80, 0x80, 0x80, 0x80, 0x80, 0x01], 1 << 42),
            (&[0xff, 0xff, 0xff, 0xff, 0x0f], u64::from(u32::MAX)),
        ];
        for (input, len) in cases {
            let mut buf = BytesMut::from(input);
            assert_eq!(
                FrameDecoder::new(limit).decode(&mut buf),
                Err(too_large(len, limit)),
                "{input:02x?}"
            );
        }
    }

    #[test]
    fn a_body_of_exactly_the_limit_is_accepted() {
        let stream = stream_of(&[vec![7; 300]]);
        assert_eq!(decode_chunks([&stream[..]], 300), Ok(vec![vec![7; 300]]));
        assert_eq!(decode_chunks([&stream[..]], 299), Err(too_large(300, 299)));
        // The header alone is enough to refuse it.
        assert_eq!(check(&stream[..2], 299), Err(too_large(300, 299)));
        assert_eq!(check(&stream[..2], 300), Ok(None));
    }

    #[test]
    fn every_split_point_of_several_frames_decodes_the_same() {
        let bodies = bodies();
        let stream = stream_of(&bodies);
        for split in 0..=stream.len() {
            let (first, second) = stream.split_at(split);
            assert_eq!(
                decode_chunks([first, second], DEFAULT_MAX_FRAME_BYTES),
                Ok(bodies.clone()),
                "split at {split}"
            );
        }
        let one_byte_at_a_time = stream.chunks(1);
        assert_eq!(
            decode_chunks(one_byte_at_a_time, DEFAULT_MAX_FRAME_BYTES),
            Ok(bodies)
        );
    }

    #[test]
    fn check_sees_the_first_frame_exactly_when_it_is_complete() {
        let bodies = bodies();
        let stream = stream_of(&bodies[2..]);
        // Body 2 has 127 bytes behind a one-byte header.
        let first = FrameLen {
            header_len: 1,
            body_len: 127,
        };
        for cut in 0..=stream.len() {
            let expected = if cut < first.total_len() {
                None
            } else {
                Some(first)
            };
            assert_eq!(
                check(&stream[..cut], DEFAULT_MAX_FRAME_BYTES),
                Ok(expected),
                "cut at {cut}"
            );
        }
        // Body 3 has 128 bytes and needs a two-byte header.
        let second = check(&stream[first.total_len()..], DEFAULT_MAX_FRAME_BYTES);
        assert_eq!(
            second,
            Ok(Some(FrameLen {
                header_len: 2,
                body_len: 128
            }))
        );
    }

    #[test]
    fn an_empty_frame_is_an_empty_body() {
        let mut buf = BytesMut::from(&[0x00, 0x00, 0x01][..]);
        let mut decoder = FrameDecoder::default();
        assert_eq!(decoder.decode(&mut buf), Ok(Some(Bytes::new())));
        assert_eq!(decoder.decode(&mut buf), Ok(Some(Bytes::new())));
        assert_eq!(decoder.decode(&mut buf), Ok(None));
        assert_eq!(buf, [0x01][..], "an incomplete frame stays buffered");
    }

    #[test]
    fn the_end_of_a_stream_inside_a_frame_is_truncated() {
        let stream = stream_of(&[b"abc".to_vec()]);
        for cut in 1..stream.len() {
            let mut buf = BytesMut::from(&stream[..cut]);
            assert_eq!(
                FrameDecoder::default().decode_eof(&mut buf),
                Err(FrameError::Truncated { buffered: cut }),
                "cut at {cut}"
            );
        }
        let mut empty = BytesMut::new();
        assert_eq!(FrameDecoder::default().decode_eof(&mut empty), Ok(None));
    }

    #[test]
    fn decoded_bodies_share_the_read_buffer() {
        let stream = stream_of(&[b"abc".to_vec(), b"defg".to_vec()]);
        let mut buf = BytesMut::from(&stream[..]);
        let start = buf.as_ptr();
        let mut decoder = FrameDecoder::default();
        let first = decoder.decode(&mut buf).ok().flatten();
        let second = decoder.decode(&mut buf).ok().flatten();
        assert_eq!(first.as_deref(), Some(&b"abc"[..]));
        assert_eq!(second.as_deref(), Some(&b"defg"[..]));
        // Zero-copy: each body points into the buffer the stream was read into.
        assert_eq!(first.map(|body| body.as_ptr()), Some(start.wrapping_add(1)));
        assert_eq!(
            second.map(|body| body.as_ptr()),
            Some(start.wrapping_add(5))
        );
    }

    #[test]
    fn garbage_decodes_to_frames_or_errors_without_panicking() {
        let cases: [(&[u8], usize); 4] = [
            (b"GET /metrics HTTP/1.1\r\n\r\n", 1024),
            // A TLS ClientHello on a plaintext port: 0x16 reads as a length of 22.
            (
                &[
                    0x16, 0x03, 0x01, 0x02, 0x00, 0x01, 0x00, 0x01, 0xfc, 0x03, 0x03,
                ],
                1024,
            ),
            (&[0xff; 64], usize::MAX),
            (&[0xe8, 0x07], 999),
        ];
        for (input, limit) in cases {
            // Whatever the outcome, no frame is longer than the input.
            match decode_chunks(input.chunks(3), limit) {
                Ok(bodies) => assert!(bodies.iter().all(|body| body.len() < input.len())),
                Err(
                    FrameError::InvalidHeader
                    | FrameError::TooLarge { .. }
                    | FrameError::Truncated { .. },
                ) => {}
                Err(other) => panic!("{input:02x?}: a frame decoder reported {other:?}"),
            }
        }
    }

    #[test]
    fn encodes_a_message_as_header_and_body() {
        let label = LabelPair {
            name: Some("a".to_owned()),
            value: Some("b".to_owned()),
        };
        // 6 body bytes: field 1 (0x0a = 1 << 3 | 2, length-delimited) "a",
        // field 2 (0x12 = 2 << 3 | 2) "b".
        let expected = [0x06, 0x0a, 0x01, b'a', 0x12, 0x01, b'b'];
        assert_eq!(encode_to_vec(&label), expected);
        let mut out = BytesMut::from(&b"x"[..]);
        encode(&label, &mut out);
        assert_eq!(out[1..], expected, "encode appends");
        assert_eq!(encode_limited(&label, 5, &mut out), Err(too_large(6, 5)));
        assert_eq!(
            out.len(),
            1 + expected.len(),
            "a refused frame writes nothing"
        );
        assert_eq!(encode_limited(&label, 6, &mut out), Ok(()));
        assert_eq!(out[1 + expected.len()..], expected);
    }

    #[test]
    fn two_byte_headers_encode_as_varints() {
        let stream = stream_of(&[vec![0; 300]]);
        // 300 = 0b10_0101100: low seven bits 0x2c with the "more" bit, then 0x02.
        assert_eq!(stream[..2], [0xac, 0x02]);
        assert_eq!(stream.len(), 302);
    }
}
