//! The properties the fuzz targets check, written once for both the fuzzer
//! and the corpus replay test.
//!
//! `fuzz/fuzz_targets/*.rs` include this file by path, and `fuzz_corpus.rs`
//! includes it as a module, so it uses nothing but `std` and `tether_model`.
//! Each property returns `Err` with a description when it does not hold; a
//! panic inside the library propagates, since that is a finding too.

use tether_model::{
    CheckReport, CheckStream, DEFAULT_MAX_MESSAGE_BYTES, Format, Limits, MetricFamily, Parser,
    check, decode_delimited, decode_delimited_frame, encode_delimited, from_proto, parse,
    parse_with_limits, render, reserved_label,
};

/// Limits small enough for fuzz inputs of a few kilobytes to reach each one.
pub(crate) const SMALL_LIMITS: Limits = Limits {
    max_line_bytes: 512,
    max_labels_per_series: 8,
    max_series: 64,
    max_families: 16,
};

/// How many errors `check` collects; enough to see several kinds at once.
const MAX_ERRORS: usize = 16;

/// A message limit small enough for fuzz inputs to exceed.
pub(crate) const SMALL_MAX_MESSAGE_BYTES: usize = 4096;

/// The exposition parser's property, in both formats.
///
/// For each format: the streaming [`Parser`] runs to its end; `check` and
/// `parse_with_limits` agree on whether the input is valid and on its
/// families; the streamed check, fed in pieces of any size, reports what
/// `check` does; what passes the small limits parses the same without them; and
/// the parsed families render to an exposition that parses back to the same
/// families and renders to the same bytes again.
pub(crate) fn exposition(input: &[u8]) -> Result<(), String> {
    for format in [Format::Text, Format::OpenMetrics] {
        exposition_in(input, format).map_err(|violation| format!("{format:?}: {violation}"))?;
    }
    Ok(())
}

fn exposition_in(input: &[u8], format: Format) -> Result<(), String> {
    stream_to_end(input, format)?;
    stream_agrees(input, format, SMALL_LIMITS, MAX_ERRORS)?;

    let checked = check(input, format, SMALL_LIMITS, MAX_ERRORS);
    let parsed = parse_with_limits(input, format, SMALL_LIMITS);
    let families = match parsed {
        Ok(families) => families,
        Err(error) => {
            if checked.errors.is_empty() {
                return Err(format!(
                    "parse fails with \"{error}\" but check finds no error"
                ));
            }
            return Ok(());
        }
    };
    if let Some(error) = checked.errors.first() {
        return Err(format!("parse succeeds but check finds \"{error}\""));
    }
    if debug(&checked.families) != debug(&families) {
        return Err(format!(
            "check and parse read different families:\n check: {:?}\n parse: {families:?}",
            checked.families
        ));
    }

    // The limits only refuse input: what fits them parses the same without.
    let unlimited = parse(input, format).map_err(|error| {
        format!("parse succeeds with small limits but fails with the defaults: {error}")
    })?;
    if debug(&unlimited) != debug(&families) {
        return Err(format!(
            "small and default limits read different families:\n small:   {families:?}\n default: {unlimited:?}"
        ));
    }

    // Rendering may lengthen a line (`.5` becomes `0.5`), so the output is
    // parsed with the default limits.
    let mut rendered = Vec::new();
    render(&families, format, &mut rendered);
    let reparsed = parse(&rendered, format).map_err(|error| {
        format!(
            "the rendered families do not parse: {error}\n rendered: \"{}\"",
            rendered.escape_ascii()
        )
    })?;
    if debug(&reparsed) != debug(&families) {
        return Err(format!(
            "the rendered families parse to different ones:\n parsed:   {families:?}\n reparsed: {reparsed:?}\n rendered: \"{}\"",
            rendered.escape_ascii()
        ));
    }
    let mut rendered_again = Vec::new();
    render(&reparsed, format, &mut rendered_again);
    if rendered_again != rendered {
        return Err(format!(
            "rendering is not stable:\n first:  \"{}\"\n second: \"{}\"",
            rendered.escape_ascii(),
            rendered_again.escape_ascii()
        ));
    }
    Ok(())
}

/// Feeds `input` to `stream` in pieces of `piece_bytes`.
pub(crate) fn streamed(mut stream: CheckStream, input: &[u8], piece_bytes: usize) -> CheckReport {
    for piece in input.chunks(piece_bytes.clamp(1, input.len().max(1))) {
        stream.feed(piece);
    }
    stream.finish()
}

/// The streamed check of `input` in `format`, fed whole, byte by byte and
/// in pieces of a few bytes, reports what `check` does.
pub(crate) fn stream_agrees(
    input: &[u8],
    format: Format,
    limits: Limits,
    max_errors: usize,
) -> Result<(), String> {
    let expected = check(input, format, limits, max_errors);
    for piece_bytes in [usize::MAX, 1, 5, 64] {
        let report = streamed(
            CheckStream::new(format, limits, max_errors),
            input,
            piece_bytes,
        );
        same_report(&report, &expected, format)
            .map_err(|violation| format!("streamed in pieces of {piece_bytes}: {violation}"))?;
    }
    Ok(())
}

/// Whether a streamed check's report says what `check` found in `format`.
pub(crate) fn same_report(
    report: &CheckReport,
    checked: &tether_model::Checked,
    format: Format,
) -> Result<(), String> {
    if report.format != format {
        return Err(format!("format {:?}, expected {format:?}", report.format));
    }
    if report.errors != checked.errors {
        return Err(format!(
            "errors differ:\n streamed: {:?}\n check:    {:?}",
            report.errors, checked.errors
        ));
    }
    let metadata: Vec<MetricFamily> = checked
        .families
        .iter()
        .map(|family| MetricFamily {
            series: Vec::new(),
            ..family.clone()
        })
        .collect();
    if report.families != metadata {
        return Err(format!(
            "families differ:\n streamed: {:?}\n check:    {metadata:?}",
            report.families
        ));
    }
    for (i, (family, stats)) in checked.families.iter().zip(&report.stats).enumerate() {
        let mut label_names: Vec<String> = family
            .series
            .iter()
            .flat_map(|series| series.labels.iter().map(|label| label.name.clone()))
            .collect();
        label_names.sort();
        label_names.dedup();
        let reserved = family.series.iter().find_map(|series| {
            series.labels.iter().find_map(|label| {
                reserved_label(family.metric_type, &label.name).map(|why| (label.name.clone(), why))
            })
        });
        let line = checked.family_lines.get(i).copied();
        if Some(stats.first_line) != line
            || stats.n_series != family.series.len()
            || stats.label_names != label_names
            || stats.reserved_label != reserved
        {
            return Err(format!(
                "family {} differs: streamed {stats:?}; check: line {line:?}, {} series, labels {label_names:?}, reserved {reserved:?}",
                family.name,
                family.series.len()
            ));
        }
    }
    if report.stats.len() != checked.families.len() {
        return Err(format!(
            "{} family stats for {} families",
            report.stats.len(),
            checked.families.len()
        ));
    }
    Ok(())
}

/// Drives the streaming parser to its end, which must come after at most
/// one entry per line plus one error for a missing end.
fn stream_to_end(input: &[u8], format: Format) -> Result<(), String> {
    let parser = match Parser::new(input, format, SMALL_LIMITS) {
        Ok(parser) => parser,
        Err(error) => {
            if std::str::from_utf8(input).is_ok() {
                return Err(format!("the streaming parser refuses UTF-8 input: {error}"));
            }
            return Ok(());
        }
    };
    if std::str::from_utf8(input).is_err() {
        return Err("the streaming parser accepts input that is not UTF-8".to_owned());
    }
    let n_lines = input.iter().filter(|&&byte| byte == b'\n').count() + 1;
    let mut n_entries = 0;
    for entry in parser {
        // Reading the position and the error exercises their Display.
        if let Err(error) = entry {
            let _ = error.to_string();
        }
        n_entries += 1;
        if n_entries > n_lines + 1 {
            return Err(format!(
                "the streaming parser yields more than {} entries for {n_lines} lines",
                n_lines + 1
            ));
        }
    }
    Ok(())
}

/// The protobuf delimited decoder's property.
///
/// Decoding the whole stream and decoding it frame by frame agree; a frame
/// cut short by one byte is incomplete (`Ok(None)`), not an error; and the
/// decoded families encode to a stream that decodes to the same families and
/// encodes to the same bytes again.
pub(crate) fn delimited(input: &[u8]) -> Result<(), String> {
    let whole = decode_delimited(input, SMALL_MAX_MESSAGE_BYTES);
    let framed = decode_frame_by_frame(input)?;
    match (&whole, &framed) {
        (Ok(families), Ok(framed)) if debug(families) != debug(framed) => {
            return Err(format!(
                "whole and frame-by-frame decoding read different families:\n whole:  {families:?}\n framed: {framed:?}"
            ));
        }
        (Ok(_), Err(error)) => {
            return Err(format!(
                "decode_delimited succeeds but frame by frame fails: {error}"
            ));
        }
        (Err(error), Ok(_)) => {
            return Err(format!(
                "decode_delimited fails with \"{error}\" but frame by frame succeeds"
            ));
        }
        _ => {}
    }
    let Ok(families) = whole else {
        return Ok(());
    };

    // Encoding may write fields the input left out, so the result is read
    // with the default limit.
    let mut encoded = Vec::new();
    encode_delimited(&families, &mut encoded);
    let decoded = decode_delimited(&encoded, DEFAULT_MAX_MESSAGE_BYTES).map_err(|error| {
        format!(
            "the encoded families do not decode: {error}\n encoded: \"{}\"",
            encoded.escape_ascii()
        )
    })?;
    if debug(&decoded) != debug(&families) {
        return Err(format!(
            "the encoded families decode to different ones:\n decoded:   {families:?}\n redecoded: {decoded:?}"
        ));
    }
    let mut encoded_again = Vec::new();
    encode_delimited(&decoded, &mut encoded_again);
    if encoded_again != encoded {
        return Err(format!(
            "encoding is not stable:\n first:  \"{}\"\n second: \"{}\"",
            encoded.escape_ascii(),
            encoded_again.escape_ascii()
        ));
    }
    Ok(())
}

/// Decodes `input` one frame at a time, as a streaming reader would; the
/// outer `Err` is a violated property, the inner one a refused input.
fn decode_frame_by_frame(input: &[u8]) -> Result<Result<Vec<MetricFamily>, String>, String> {
    let mut families = Vec::new();
    let mut offset = 0;
    while offset < input.len() {
        let rest = &input[offset..];
        let (message, frame_len) = match decode_delimited_frame(rest, SMALL_MAX_MESSAGE_BYTES) {
            Ok(Some(frame)) => frame,
            Ok(None) => return Ok(Err(format!("incomplete frame at byte {offset}"))),
            Err(error) => return Ok(Err(error.to_string())),
        };
        if frame_len == 0 || frame_len > rest.len() {
            return Err(format!(
                "a frame at byte {offset} claims {frame_len} of the {} bytes left",
                rest.len()
            ));
        }
        match decode_delimited_frame(&rest[..frame_len - 1], SMALL_MAX_MESSAGE_BYTES) {
            Ok(None) => {}
            other => {
                return Err(format!(
                    "the frame at byte {offset} cut short by one byte is not incomplete: {other:?}"
                ));
            }
        }
        match from_proto(message) {
            Ok(family) => families.push(family),
            Err(error) => return Ok(Err(error.to_string())),
        }
        offset += frame_len;
    }
    Ok(Ok(families))
}

/// The `Debug` text of a value: it compares NaN equal to NaN and tells
/// `-0.0` from `0.0`, as a round trip should.
fn debug<T: std::fmt::Debug>(value: &T) -> String {
    format!("{value:?}")
}
