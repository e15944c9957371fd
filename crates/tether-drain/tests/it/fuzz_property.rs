//! The properties the drain's fuzz targets check, written once for a fuzzer
//! and for the tests.
//!
//! A `fuzz/fuzz_targets/*.rs` target can include this file by path; it uses
//! nothing but `std` and `tether_drain`. A property returns `Err` with a
//! description when it does not hold; a panic inside the library
//! propagates, since that is a finding too.

use tether_drain::{LogplexLimits, logplex_frames, parse_syslog};

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
