//! The property a fuzz target of the frame and message decoders checks,
//! written once for a fuzzer and for the tests.
//!
//! A `fuzz/fuzz_targets/*.rs` target can include this file by path; it uses
//! nothing but `std`, `bytes` and `tether_proto`. The property returns `Err`
//! with a description when it does not hold; a panic inside the library
//! propagates, since that is a finding too.

use bytes::{Bytes, BytesMut};
use tether_proto::{
    ClientKind, FrameDecoder, FrameError, check, decode_client_message, decode_event,
    decode_server_message, encode_to_vec, scan_client_message,
};

/// A frame limit small enough for fuzz inputs to exceed.
pub(crate) const SMALL_MAX_FRAME_BYTES: usize = 1024;

/// What one frame body decodes to, each way a peer might read it: a
/// success as its re-encoded frame (NaNs compare equal as bytes), a failure
/// as its message.
type Outcome = [Result<Vec<u8>, String>; 3];

/// The property of the frame decoder and the three message decoders.
///
/// The first byte of `input` picks a chunk length, the rest is a stream.
/// Read whole and read in chunks, the stream yields the same bodies and the
/// same error; no body is longer than the limit; every body that decodes as
/// a message re-encodes to a frame that decodes to the same message again;
/// every error has a message.
pub(crate) fn frames(input: &[u8]) -> Result<(), String> {
    let Some((&first, stream)) = input.split_first() else {
        return Ok(());
    };
    let chunk_len = usize::from(first % 64) + 1;
    let whole = decode_stream([stream])?;
    let chunked = decode_stream(stream.chunks(chunk_len))?;
    if whole != chunked {
        return Err(format!(
            "read whole the stream gives {whole:?}, in chunks of {chunk_len} {chunked:?}"
        ));
    }
    Ok(())
}

fn decode_stream<'a>(
    chunks: impl IntoIterator<Item = &'a [u8]>,
) -> Result<(Vec<Outcome>, Option<String>), String> {
    let mut decoder = FrameDecoder::new(SMALL_MAX_FRAME_BYTES);
    let mut buf = BytesMut::new();
    let mut outcomes = Vec::new();
    for chunk in chunks {
        buf.extend_from_slice(chunk);
        loop {
            match decoder.decode(&mut buf) {
                Ok(Some(body)) => outcomes.push(decode_body(&body)?),
                Ok(None) => break,
                Err(error) => return Ok((outcomes, Some(described(&error)?))),
            }
        }
    }
    match decoder.decode_eof(&mut buf) {
        Ok(Some(body)) => outcomes.push(decode_body(&body)?),
        Ok(None) => {}
        Err(error) => return Ok((outcomes, Some(described(&error)?))),
    }
    Ok((outcomes, None))
}

fn described(error: &FrameError) -> Result<String, String> {
    let text = error.to_string();
    if !text.starts_with(char::is_lowercase) || text.ends_with('.') {
        return Err(format!("error message \"{text}\" breaks the house style"));
    }
    Ok(text)
}

fn decode_body(body: &Bytes) -> Result<Outcome, String> {
    if body.len() > SMALL_MAX_FRAME_BYTES {
        return Err(format!("a body of {} bytes passed the limit", body.len()));
    }
    scan_agrees(body)?;
    Ok([
        stable(body, |body| {
            decode_client_message(body).map(|message| encode_to_vec(&message))
        })?,
        stable(body, |body| {
            decode_server_message(body).map(|message| encode_to_vec(&message))
        })?,
        stable(body, |body| {
            decode_event(body).map(|event| encode_to_vec(&event))
        })?,
    ])
}

/// A body that decodes as a `ClientMessage` scans without error, and the
/// scan counts what decoding found.
fn scan_agrees(body: &Bytes) -> Result<(), String> {
    let scanned = scan_client_message(body);
    let Ok(message) = decode_client_message(body.clone()) else {
        return Ok(());
    };
    let shape = scanned.map_err(|e| format!("decodes, but the scan fails: {e}"))?;
    let found = match &message.kind {
        Some(ClientKind::ScrapeResponse(r)) => Some((r.id, &r.families)),
        Some(ClientKind::Push(p)) => Some((p.id, &p.families)),
        _ => None,
    };
    if let Some((id, families)) = found {
        let n_series: usize = families.iter().map(|f| f.metric.len()).sum();
        if (shape.id, shape.n_families, shape.n_series) != (id, families.len(), n_series) {
            return Err(format!(
                "scan {shape:?} disagrees with decoding: id {id}, {} families, {n_series} series",
                families.len()
            ));
        }
    }
    Ok(())
}

/// Decodes `body` with `decode`; on success checks that the re-encoded
/// frame is whole and decodes to the same frame again.
fn stable(
    body: &Bytes,
    decode: impl Fn(Bytes) -> Result<Vec<u8>, FrameError>,
) -> Result<Result<Vec<u8>, String>, String> {
    let frame = match decode(body.clone()) {
        Ok(frame) => frame,
        Err(error) => return Ok(Err(described(&error)?)),
    };
    let checked = check(&frame, usize::MAX).map_err(|error| error.to_string())?;
    let Some(frame_len) = checked.filter(|frame_len| frame_len.total_len() == frame.len()) else {
        return Err(format!(
            "re-encoded frame {frame:02x?} is not one whole frame"
        ));
    };
    let again = decode(Bytes::copy_from_slice(&frame[frame_len.header_len..]));
    if again.as_ref() != Ok(&frame) {
        return Err(format!(
            "{frame:02x?} decodes and re-encodes to {again:02x?}"
        ));
    }
    Ok(Ok(frame))
}
