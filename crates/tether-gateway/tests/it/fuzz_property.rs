//! The property the `push` fuzz target checks, written once for a fuzzer
//! and for the tests.
//!
//! A `fuzz/fuzz_targets/*.rs` target includes this file by path; it uses
//! nothing but `std` and `tether_gateway::fuzz`. The property returns `Err`
//! with a description when it does not hold; a panic inside the library
//! propagates, since that is a finding too.

/// The property of a push request's checks.
///
/// The first byte of `input` picks the `Content-Type` and
/// `Content-Encoding`; what follows up to the first newline is the path
/// after `/metrics/`, the rest the body. Checking never panics, gives the
/// same answer twice, keeps no more series than its limit and no key label
/// on a series, and refuses in one line.
pub(crate) fn push(input: &[u8]) -> Result<(), String> {
    let Some((&selector, rest)) = input.split_first() else {
        return Ok(());
    };
    let content_type = match selector & 3 {
        0 => None,
        1 => Some("text/plain; version=0.0.4"),
        2 => Some(
            "application/vnd.google.protobuf; proto=io.prometheus.client.MetricFamily; encoding=delimited",
        ),
        _ => Some("application/vnd.google.protobuf; encoding=delimited"),
    };
    let content_encoding = match (selector >> 2) & 3 {
        0 => None,
        1 => Some("gzip"),
        2 => Some("snappy"),
        _ => Some("br"),
    };
    let split = rest.iter().position(|&b| b == b'\n').unwrap_or(rest.len());
    let path = String::from_utf8_lossy(&rest[..split]);
    let body = rest.get(split + 1..).unwrap_or(&[]);
    let first = tether_gateway::fuzz::push_request(&path, content_type, content_encoding, body)?;
    let second = tether_gateway::fuzz::push_request(&path, content_type, content_encoding, body)?;
    if first != second {
        return Err(format!("checked twice, {first:?} then {second:?}"));
    }
    Ok(())
}
