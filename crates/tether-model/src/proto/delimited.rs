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

/// Every family of a delimited stream, converted and checked by [`convert::from_proto`].
///
/// # Errors
///
/// [`ProtoError::MessageTooLarge`] when a message declares a length above
/// `max_message_bytes`, checked before the message is read;
/// [`ProtoError::Truncated`] when the input ends inside a length or a message;
/// [`ProtoError::Decode`] for a length prefix longer than ten bytes or a
/// message that is not a `MetricFamily`; [`ProtoError::InvalidFamily`] for a
/// family that [`convert::from_proto`] rejects.
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
