//! The streamed check (`CheckStream`) against `check`: on generated
//! expositions with lines repeated, dropped and moved, and on the cases
//! where feeding in pieces matters (lines over the limit, characters and
//! lines cut between pieces, duplicates far apart, timestamps).

use proptest::prelude::*;
use tether_model::{CheckStream, ErrorKind, Format, Limits, check, render};

use crate::fuzz_corpus::property::{same_report, stream_agrees, streamed};
use crate::support::families;

/// Errors kept per check in these tests.
const MAX_ERRORS: usize = 50;

/// Lines of a rendered exposition, edited: `(from, to)` copies line
/// `from` before line `to` (both modulo the count), a repeat or a move
/// that makes duplicates, interleavings and misplaced metadata.
fn edited(
    model: &[tether_model::MetricFamily],
    format: Format,
    edits: &[(usize, usize, bool)],
) -> Vec<u8> {
    let mut rendered = Vec::new();
    render(model, format, &mut rendered);
    let text = String::from_utf8(rendered).expect("the renderer writes UTF-8");
    let mut lines: Vec<String> = text.lines().map(str::to_owned).collect();
    for &(from, to, moved) in edits {
        if lines.is_empty() {
            break;
        }
        let from = from % lines.len();
        let line = if moved {
            lines.remove(from)
        } else {
            lines[from].clone()
        };
        let to = to % (lines.len() + 1);
        lines.insert(to, line);
    }
    let mut out = lines.join("\n").into_bytes();
    out.push(b'\n');
    out
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 256, failure_persistence: None, ..ProptestConfig::default() })]

    #[test]
    fn streamed_text_reports_what_check_does(
        model in families(Format::Text, 5),
        edits in proptest::collection::vec((0usize..200, 0usize..200, any::<bool>()), 0..6),
    ) {
        let input = edited(&model, Format::Text, &edits);
        for format in [Format::Text, Format::OpenMetrics] {
            stream_agrees(&input, format, Limits::default(), MAX_ERRORS).map_err(TestCaseError::fail)?;
        }
    }

    #[test]
    fn streamed_openmetrics_reports_what_check_does(
        model in families(Format::OpenMetrics, 5),
        edits in proptest::collection::vec((0usize..200, 0usize..200, any::<bool>()), 0..6),
    ) {
        let input = edited(&model, Format::OpenMetrics, &edits);
        for format in [Format::Text, Format::OpenMetrics] {
            stream_agrees(&input, format, Limits::default(), MAX_ERRORS).map_err(TestCaseError::fail)?;
        }
    }
}

#[test]
fn a_duplicate_far_from_its_first_line_is_found() {
    let n_series = 100_000;
    let mut input = String::from("# TYPE big gauge\n");
    for i in 0..n_series {
        input.push_str(&format!("big{{instance=\"host-{i}\",job=\"api\"}} {i}\n"));
    }
    // The first series again, labels in another order, at the very end.
    input.push_str("big{job=\"api\",instance=\"host-0\"} 1\n");
    let expected = check(
        input.as_bytes(),
        Format::Text,
        Limits::default(),
        MAX_ERRORS,
    );
    assert_eq!(expected.errors.len(), 1);
    for piece_bytes in [4096, 65_536] {
        let report = streamed(
            CheckStream::new(Format::Text, Limits::default(), MAX_ERRORS),
            input.as_bytes(),
            piece_bytes,
        );
        same_report(&report, &expected, Format::Text).expect("the stream reports what check does");
        let error = &report.errors[0];
        assert_eq!((error.line, error.column), (n_series + 2, 1));
        assert!(
            matches!(&error.kind, ErrorKind::DuplicateSeries(series) if series.contains("host-0")),
            "{error}"
        );
        assert_eq!(report.stats[0].n_series, n_series as usize);
    }
}

#[test]
fn buckets_of_one_series_far_apart_are_checked_together() {
    // Text allows a series' buckets anywhere; the `le="1"` repeated last
    // is a duplicate found at the end, at the series' last line.
    let mut input = String::from("# TYPE h histogram\n");
    for le in ["1", "2", "+Inf"] {
        for i in 0..1000 {
            input.push_str(&format!("h_bucket{{i=\"{i}\",le=\"{le}\"}} 1\n"));
        }
    }
    input.push_str("h_bucket{i=\"7\",le=\"1.0\"} 1\n");
    let expected = check(
        input.as_bytes(),
        Format::Text,
        Limits::default(),
        MAX_ERRORS,
    );
    assert_eq!(expected.errors.len(), 1, "{:?}", expected.errors);
    assert!(
        expected.errors[0]
            .to_string()
            .contains("two buckets with the same le")
    );
    stream_agrees(
        input.as_bytes(),
        Format::Text,
        Limits::default(),
        MAX_ERRORS,
    )
    .expect("the stream reports what check does");
}

#[test]
fn lines_over_the_limit_are_cut_where_check_cuts_them() {
    let limits = Limits {
        max_line_bytes: 40,
        ..Limits::default()
    };
    let long_value = "é".repeat(100);
    let cases = [
        // Over the limit, then a valid line.
        format!("m{{a=\"{long_value}\"}} 1\nok 1\n"),
        // The last line over the limit, with no newline.
        format!("ok 1\nm{{a=\"{long_value}\"}} 1"),
        // A byte that is not UTF-8 past the limit, and another line.
        format!("ok 1\nm{{a=\"{long_value}\u{0}\"}} 1\n").replace('\u{0}', "\u{7f}"),
        // OpenMetrics' end after a long line.
        format!("m{{a=\"{long_value}\"}} 1\n# EOF\n"),
        // Exactly at the limit, and one byte over.
        format!(
            "{}\n{}\n",
            "m ".to_owned() + &"1".repeat(38),
            "m ".to_owned() + &"1".repeat(39)
        ),
    ];
    for input in &cases {
        for format in [Format::Text, Format::OpenMetrics] {
            stream_agrees(input.as_bytes(), format, limits, MAX_ERRORS)
                .unwrap_or_else(|violation| panic!("{input:?} as {format:?}: {violation}"));
        }
    }
}

#[test]
fn bytes_that_are_not_utf8_are_found_wherever_pieces_end() {
    let limits = Limits {
        max_line_bytes: 16,
        ..Limits::default()
    };
    let mut inputs: Vec<Vec<u8>> = vec![
        b"ok 1\nbad\xff 1\n".to_vec(),
        b"ok 1\nm{a=\"\xc3\"} 1\n".to_vec(),
        // A character cut short by the end of the input.
        b"ok 1\nm \xe2\x82".to_vec(),
        // Past the limit: a valid character, then a cut one.
        b"m{a=\"0123456789abcdef\xc3\xa9\xc3\"} 1\n".to_vec(),
        b"m{a=\"0123456789abcdef\xe2\x82\xac\"} 1\n\xff".to_vec(),
    ];
    // A valid input with multi-byte characters cut by every piece size.
    inputs.push("# HELP m Ünïcödé €€€.\nm{a=\"€\"} 1\n".as_bytes().to_vec());
    for input in &inputs {
        for format in [Format::Text, Format::OpenMetrics] {
            stream_agrees(input, format, limits, MAX_ERRORS).unwrap_or_else(|violation| {
                panic!(
                    "{:?} as {format:?}: {violation}",
                    input.escape_ascii().to_string()
                )
            });
        }
    }
}

#[test]
fn errors_found_at_the_end_are_capped_and_ordered() {
    // 5,000 OpenMetrics histograms without a +Inf bucket: one error each,
    // found at the end; the first `MAX_ERRORS` by line are kept.
    let mut input = String::from("# TYPE h histogram\n");
    for i in 0..5000 {
        input.push_str(&format!("h_bucket{{i=\"{i}\",le=\"1\"}} 1\n"));
    }
    input.push_str("# EOF\n");
    let expected = check(
        input.as_bytes(),
        Format::OpenMetrics,
        Limits::default(),
        MAX_ERRORS,
    );
    assert_eq!(expected.errors.len(), MAX_ERRORS);
    stream_agrees(
        input.as_bytes(),
        Format::OpenMetrics,
        Limits::default(),
        MAX_ERRORS,
    )
    .expect("the stream reports what check does");
}

#[test]
fn repeated_series_with_timestamps_are_told_apart_as_check_tells_them() {
    // A series takes the first timestamp it is given, even on a refused
    // line: the third line is then a second point, not a duplicate.
    let inputs: [&[u8]; 4] = [
        b"g 1\ng 2 1000\ng 3 2000\n",
        b"g 1 1000\ng 2 1000\ng 3 2000\n",
        b"# TYPE c counter\nc_total 1 1\nc_total 2 2\nc_created 1 1\nc_total 3\n# EOF\n",
        b"# TYPE h histogram\nh_bucket{le=\"1\"} 1\nh_bucket{le=\"1\"} 1 5\nh_bucket{le=\"1\"} 1 6\nh_bucket{le=\"+Inf\"} 1\n# EOF\n",
    ];
    for input in inputs {
        for format in [Format::Text, Format::OpenMetrics] {
            stream_agrees(input, format, Limits::default(), MAX_ERRORS).unwrap_or_else(
                |violation| {
                    panic!(
                        "{:?} as {format:?}: {violation}",
                        input.escape_ascii().to_string()
                    )
                },
            );
        }
    }
    let checked = check(inputs[0], Format::Text, Limits::default(), MAX_ERRORS);
    assert!(
        matches!(checked.errors[1].kind, ErrorKind::SeveralPoints(_)),
        "{:?}",
        checked.errors
    );
}
