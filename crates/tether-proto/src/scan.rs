//! A look at an agent's frame without decoding it: which message it is,
//! the scrape or push id, and how many families and series it carries.
//!
//! Decoding allocates per repeated entry: an empty `MetricFamily` is two
//! bytes on the wire and a few hundred in memory, so a 16 MiB frame of them
//! decodes into more than a gigabyte. The gateway scans first, in one pass
//! over the bytes with no allocation, and decodes only what it asked for
//! and what fits its limits.

use crate::error::FrameError;

/// `ClientMessage.scrape_response`'s field number.
pub const SCRAPE_RESPONSE_FIELD: u32 = 4;
/// `ClientMessage.push`'s field number.
pub const PUSH_FIELD: u32 = 5;

/// What a `ClientMessage` frame carries, counted without decoding.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Shape {
    /// The field number of the message's `oneof kind` (the last one set,
    /// as decoding keeps the last).
    pub kind: Option<u32>,
    /// The `id` of a scrape response or push.
    pub id: u64,
    /// The families of a scrape response or push.
    pub n_families: usize,
    /// The series (`Metric` entries) of all of its families.
    pub n_series: usize,
}

/// Scans a `ClientMessage` frame body.
///
/// # Errors
///
/// A body that is not well-formed protobuf (a truncated varint or field,
/// a wire type protobuf does not have).
pub fn scan_client_message(body: &[u8]) -> Result<Shape, FrameError> {
    let mut shape = Shape::default();
    let mut reader = Reader { bytes: body };
    while let Some((field, wire)) = reader.key()? {
        match (field, wire) {
            (SCRAPE_RESPONSE_FIELD | PUSH_FIELD, WIRE_LEN) => {
                let inner = reader.len_delimited()?;
                // A later kind replaces an earlier one, as in decoding.
                shape = Shape {
                    kind: Some(field),
                    ..scan_families_message(inner)?
                };
            }
            (_, _) => {
                if wire == WIRE_LEN {
                    reader.len_delimited()?;
                    shape.kind = Some(field);
                } else {
                    reader.skip(wire)?;
                }
            }
        }
    }
    Ok(shape)
}

/// `ScrapeResponse` and `Push` share their layout: `uint64 id = 1`,
/// `repeated MetricFamily families = 2`.
fn scan_families_message(bytes: &[u8]) -> Result<Shape, FrameError> {
    let mut shape = Shape::default();
    let mut reader = Reader { bytes };
    while let Some((field, wire)) = reader.key()? {
        match (field, wire) {
            (1, WIRE_VARINT) => shape.id = reader.varint()?,
            (2, WIRE_LEN) => {
                let family = reader.len_delimited()?;
                shape.n_families += 1;
                shape.n_series += count_metrics(family)?;
            }
            _ => reader.skip(wire)?,
        }
    }
    Ok(shape)
}

/// `MetricFamily.metric` is `repeated Metric metric = 4`.
fn count_metrics(bytes: &[u8]) -> Result<usize, FrameError> {
    let mut n = 0;
    let mut reader = Reader { bytes };
    while let Some((field, wire)) = reader.key()? {
        if field == 4 && wire == WIRE_LEN {
            reader.len_delimited()?;
            n += 1;
        } else {
            reader.skip(wire)?;
        }
    }
    Ok(n)
}

const WIRE_VARINT: u8 = 0;
const WIRE_I64: u8 = 1;
const WIRE_LEN: u8 = 2;
const WIRE_I32: u8 = 5;

struct Reader<'a> {
    bytes: &'a [u8],
}

fn malformed(reason: &'static str) -> FrameError {
    FrameError::Malformed {
        message: "ClientMessage",
        reason,
    }
}

impl<'a> Reader<'a> {
    fn varint(&mut self) -> Result<u64, FrameError> {
        let mut value: u64 = 0;
        for (i, &byte) in self.bytes.iter().enumerate().take(10) {
            value |= u64::from(byte & 0x7f) << (7 * i);
            if byte & 0x80 == 0 {
                self.bytes = &self.bytes[i + 1..];
                return Ok(value);
            }
        }
        Err(malformed("a varint is truncated or longer than 10 bytes"))
    }

    /// The next field's number and wire type, `None` at the end.
    fn key(&mut self) -> Result<Option<(u32, u8)>, FrameError> {
        if self.bytes.is_empty() {
            return Ok(None);
        }
        let key = self.varint()?;
        let wire = u8::try_from(key & 7).unwrap_or(u8::MAX);
        let field =
            u32::try_from(key >> 3).map_err(|_| malformed("a field number is too large"))?;
        if field == 0 {
            return Err(malformed("field number 0"));
        }
        Ok(Some((field, wire)))
    }

    fn take(&mut self, n: usize) -> Result<&'a [u8], FrameError> {
        if n > self.bytes.len() {
            return Err(malformed("a field is longer than the message"));
        }
        let (taken, rest) = self.bytes.split_at(n);
        self.bytes = rest;
        Ok(taken)
    }

    fn len_delimited(&mut self) -> Result<&'a [u8], FrameError> {
        let len = usize::try_from(self.varint()?).unwrap_or(usize::MAX);
        self.take(len)
    }

    fn skip(&mut self, wire: u8) -> Result<(), FrameError> {
        match wire {
            WIRE_VARINT => self.varint().map(|_| ()),
            WIRE_I64 => self.take(8).map(|_| ()),
            WIRE_LEN => self.len_delimited().map(|_| ()),
            WIRE_I32 => self.take(4).map(|_| ()),
            _ => Err(malformed("a wire type protobuf does not have")),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{ClientMessage, Push, ScrapeResponse};
    use prost::Message;
    use tether_model::pb;

    fn family(n_metrics: usize) -> pb::MetricFamily {
        pb::MetricFamily {
            name: Some("f".to_owned()),
            metric: (0..n_metrics).map(|_| pb::Metric::default()).collect(),
            ..pb::MetricFamily::default()
        }
    }

    #[test]
    fn shapes_match_what_decoding_finds() {
        let cases: Vec<(ClientMessage, Shape)> = vec![
            (
                ScrapeResponse {
                    id: 7,
                    families: vec![family(3), family(0), family(2)],
                    error: String::new(),
                }
                .into(),
                Shape {
                    kind: Some(SCRAPE_RESPONSE_FIELD),
                    id: 7,
                    n_families: 3,
                    n_series: 5,
                },
            ),
            (
                Push {
                    id: 1 << 40,
                    families: vec![family(1)],
                    r#final: true,
                }
                .into(),
                Shape {
                    kind: Some(PUSH_FIELD),
                    id: 1 << 40,
                    n_families: 1,
                    n_series: 1,
                },
            ),
            (
                crate::Ping { nonce: 3 }.into(),
                Shape {
                    kind: Some(8),
                    ..Shape::default()
                },
            ),
        ];
        for (message, expected) in cases {
            let body = message.encode_to_vec();
            assert_eq!(scan_client_message(&body).expect("well-formed"), expected);
        }
    }

    #[test]
    fn malformed_bodies_are_errors_never_panics() {
        let cases: [&[u8]; 5] = [
            &[0x22, 0x05, 0x08],             // a field longer than the message
            &[0x22, 0xff, 0xff, 0xff, 0xff], // a truncated length
            &[0x23],                         // wire type 3 (a group)
            &[0x00],                         // field number 0
            &[0x22; 1],                      // a key and nothing else
        ];
        for body in cases {
            assert!(scan_client_message(body).is_err(), "{body:?}");
        }
        assert_eq!(scan_client_message(&[]).expect("empty"), Shape::default());
    }
}
