//! The conformance corpus: expositions kept as data files, each one valid or
//! invalid in one format, replayed through `parse`, `check` and `render`.
//!
//! # Layout
//!
//! ```text
//! tests/corpus/<format>/valid/<name>.prom
//! tests/corpus/<format>/invalid/<name>.prom
//! tests/corpus/<format>/invalid/<name>.err
//! tests/corpus/<format>/<valid|invalid>/<name>.limits   (optional)
//! ```
//!
//! `<format>` is `text` (Prometheus text 0.0.4) or `openmetrics`
//! (OpenMetrics 1.0). A `.prom` file holds the exposition byte for byte.
//!
//! A `.err` file holds one line, `LINE:COL: substring`: where `parse`
//! reports the first error (lines and columns from 1, columns in
//! characters) and a piece of its message. The expectations come from the
//! specifications, not from the parser's output.
//!
//! A `.limits` file makes the case use `parse_with_limits` (and `check`)
//! with those limits instead of the defaults: one `key = value` per line,
//! keys `max_line_bytes`, `max_labels_per_series`, `max_series` and
//! `max_families`; a key left out keeps its default. Blank lines and lines
//! starting with `#` are ignored.
//!
//! # What is checked
//!
//! A valid case must parse; `check` must find no error and the same
//! families; rendering in the same format must parse back to equal
//! families (NaN equal to NaN), and rendering that again must give the same
//! bytes. An invalid case must fail at exactly the expected line and column
//! with the substring in the message, and `check` must report that same
//! error first. The streamed check, fed the case in pieces, must report
//! what `check` does.
//!
//! Cases in [`KNOWN_FAILURES`] are parser bugs written down with their
//! correct expectation; the test requires them to keep failing, so that
//! the entry is removed once the bug is fixed.

use std::fs;
use std::panic::{AssertUnwindSafe, catch_unwind};
use std::path::{Path, PathBuf};

use tether_model::{Format, Limits, MetricFamily, check, parse, parse_with_limits, render};

use crate::fuzz_corpus::property::stream_agrees;

/// Cases that fail today because the parser departs from the specification,
/// as `format/kind/name`.
///
/// Each one is a bug to fix in the parser, not in the corpus; the test
/// fails once a listed case passes, so the fix removes its entry.
const KNOWN_FAILURES: &[&str] = &[];

/// The corpus must not silently shrink below this many cases.
const MIN_CASES: usize = 100;

/// How many errors `check` may collect per case; more than any case has.
const CHECK_MAX_ERRORS: usize = 100;

/// How much of an input a failure report quotes.
const REPORT_INPUT_CHARS: usize = 300;

/// One corpus case, loaded from its files.
#[derive(Debug)]
struct Case {
    /// `format/kind/name`, as listed in [`KNOWN_FAILURES`].
    id: String,
    format: Format,
    input: Vec<u8>,
    /// `None` for a valid case.
    expected: Option<ExpectedError>,
    limits: Limits,
}

/// The content of a `.err` file.
#[derive(Debug)]
struct ExpectedError {
    line: u32,
    column: u32,
    substring: String,
}

#[test]
fn corpus_conforms() {
    let mut failures = Vec::new();
    let cases = load_cases(&mut failures);

    let mut per_folder: Vec<(String, usize)> = Vec::new();
    for case in &cases {
        let folder = case.id.rsplit_once('/').map_or("", |(folder, _)| folder);
        match per_folder.iter_mut().find(|(name, _)| name == folder) {
            Some((_, count)) => *count += 1,
            None => per_folder.push((folder.to_owned(), 1)),
        }
    }
    for folder in [
        "text/valid",
        "text/invalid",
        "openmetrics/valid",
        "openmetrics/invalid",
    ] {
        if !per_folder.iter().any(|(name, _)| name == folder) {
            failures.push(format!("{folder}: no cases at all"));
        }
    }
    if cases.len() < MIN_CASES {
        failures.push(format!(
            "the corpus has {} cases, fewer than the {MIN_CASES} it must keep",
            cases.len()
        ));
    }

    for case in &cases {
        let known = KNOWN_FAILURES.contains(&case.id.as_str());
        let outcome = catch_unwind(AssertUnwindSafe(|| run_case(case)))
            .unwrap_or_else(|_| Err("the parser or renderer panicked".to_owned()));
        match (outcome, known) {
            (Ok(()), false) | (Err(_), true) => {}
            (Ok(()), true) => failures.push(format!(
                "{}: passes now; remove it from KNOWN_FAILURES",
                case.id
            )),
            (Err(why), false) => failures.push(format!(
                "{}: {why}\n    input: {}",
                case.id,
                quote(&case.input)
            )),
        }
    }
    for known in KNOWN_FAILURES {
        if !cases.iter().any(|case| case.id == *known) {
            failures.push(format!(
                "{known}: listed in KNOWN_FAILURES but no such case exists"
            ));
        }
    }

    let counts: Vec<String> = per_folder
        .iter()
        .map(|(name, count)| format!("{name}: {count}"))
        .collect();
    assert!(
        failures.is_empty(),
        "{} corpus failure(s) among {} cases ({}):\n\n{}\n",
        failures.len(),
        cases.len(),
        counts.join(", "),
        failures.join("\n\n")
    );
}

/// Runs one case; `Err` says how it departs from its expectation.
fn run_case(case: &Case) -> Result<(), String> {
    match &case.expected {
        None => run_valid(case),
        Some(expected) => run_invalid(case, expected),
    }
}

fn run_valid(case: &Case) -> Result<(), String> {
    let families = parse_with_limits(&case.input, case.format, case.limits)
        .map_err(|error| format!("expected valid, parse failed: {error}"))?;

    let checked = check(&case.input, case.format, case.limits, CHECK_MAX_ERRORS);
    stream_agrees(&case.input, case.format, case.limits, CHECK_MAX_ERRORS)?;
    if let Some(error) = checked.errors.first() {
        return Err(format!("parse succeeded but check reports: {error}"));
    }
    if !same(&checked.families, &families) {
        return Err(format!(
            "check read other families than parse\n    parse: {families:?}\n    check: {:?}",
            checked.families
        ));
    }

    let mut first = Vec::new();
    render(&families, case.format, &mut first);
    // The rendered text is the renderer's, not the case's: default limits.
    let reparsed = parse(&first, case.format).map_err(|error| {
        format!(
            "the rendered output does not parse: {error}\n    rendered: {}",
            quote(&first)
        )
    })?;
    if !same(&reparsed, &families) {
        return Err(format!(
            "the rendered output parses to other families\n    rendered: {}\n    parsed:   {families:?}\n    reparsed: {reparsed:?}",
            quote(&first)
        ));
    }
    let mut second = Vec::new();
    render(&reparsed, case.format, &mut second);
    if first != second {
        return Err(format!(
            "rendering is not stable\n    first:  {}\n    second: {}",
            quote(&first),
            quote(&second)
        ));
    }
    Ok(())
}

fn run_invalid(case: &Case, expected: &ExpectedError) -> Result<(), String> {
    let want = format!(
        "{}:{}: ...{}...",
        expected.line, expected.column, expected.substring
    );
    let error = match parse_with_limits(&case.input, case.format, case.limits) {
        Ok(families) => return Err(format!("expected {want}, but it parsed: {families:?}")),
        Err(error) => error,
    };
    let message = error.kind.to_string();
    if error.line != expected.line
        || error.column != expected.column
        || !message.contains(&expected.substring)
    {
        return Err(format!("expected {want}\n    got      {error}"));
    }
    let checked = check(&case.input, case.format, case.limits, CHECK_MAX_ERRORS);
    stream_agrees(&case.input, case.format, case.limits, CHECK_MAX_ERRORS)?;
    match checked.errors.first() {
        Some(first) if *first == error => Ok(()),
        Some(first) => Err(format!(
            "parse reports {error}\n    but check reports first {first}"
        )),
        None => Err(format!(
            "parse reports {error}\n    but check reports no error"
        )),
    }
}

/// Compares by debug text, so that NaN equals NaN and -0 differs from 0.
fn same(a: &[MetricFamily], b: &[MetricFamily]) -> bool {
    format!("{a:?}") == format!("{b:?}")
}

/// An input for a failure report: escaped, and cut if long.
fn quote(input: &[u8]) -> String {
    let text = String::from_utf8_lossy(input);
    let mut quoted: String = text.chars().take(REPORT_INPUT_CHARS).collect();
    if text.chars().count() > REPORT_INPUT_CHARS {
        quoted.push_str("...");
    }
    format!("{quoted:?}")
}

fn corpus_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests")
        .join("corpus")
}

/// Reads every case; malformed or orphaned files go to `failures`.
fn load_cases(failures: &mut Vec<String>) -> Vec<Case> {
    let mut cases = Vec::new();
    for (format_dir, format) in [("text", Format::Text), ("openmetrics", Format::OpenMetrics)] {
        for kind in ["valid", "invalid"] {
            let dir = corpus_root().join(format_dir).join(kind);
            let folder = format!("{format_dir}/{kind}");
            let mut files = match fs::read_dir(&dir) {
                Ok(entries) => entries
                    .filter_map(|entry| entry.ok().map(|entry| entry.path()))
                    .collect::<Vec<_>>(),
                Err(error) => {
                    failures.push(format!("{folder}: cannot read {}: {error}", dir.display()));
                    continue;
                }
            };
            files.sort();
            for path in &files {
                let Some(file_name) = path.file_name().and_then(|name| name.to_str()) else {
                    failures.push(format!(
                        "{folder}: a file name that is not UTF-8: {}",
                        path.display()
                    ));
                    continue;
                };
                let (stem, extension) = file_name.rsplit_once('.').unwrap_or((file_name, ""));
                let allowed = matches!(
                    (kind, extension),
                    (_, "prom" | "limits") | ("invalid", "err")
                );
                if !allowed {
                    failures.push(format!(
                        "{folder}/{file_name}: not a .prom, .err or .limits file of this folder"
                    ));
                    continue;
                }
                if extension != "prom" && !dir.join(format!("{stem}.prom")).is_file() {
                    failures.push(format!("{folder}/{file_name}: no {stem}.prom beside it"));
                }
                if extension == "prom" {
                    match load_case(&dir, &folder, stem, format) {
                        Ok(case) => cases.push(case),
                        Err(why) => failures.push(format!("{folder}/{stem}: {why}")),
                    }
                }
            }
        }
    }
    cases
}

fn load_case(dir: &Path, folder: &str, name: &str, format: Format) -> Result<Case, String> {
    let input = fs::read(dir.join(format!("{name}.prom")))
        .map_err(|error| format!("cannot read the .prom: {error}"))?;
    let err_path = dir.join(format!("{name}.err"));
    let expected = if folder.ends_with("/invalid") {
        let text = fs::read_to_string(&err_path)
            .map_err(|error| format!("cannot read the .err: {error}"))?;
        Some(parse_expected(&text)?)
    } else {
        None
    };
    let limits_path = dir.join(format!("{name}.limits"));
    let limits = if limits_path.is_file() {
        let text = fs::read_to_string(&limits_path)
            .map_err(|error| format!("cannot read the .limits: {error}"))?;
        parse_limits(&text)?
    } else {
        Limits::default()
    };
    Ok(Case {
        id: format!("{folder}/{name}"),
        format,
        input,
        expected,
        limits,
    })
}

/// Reads `LINE:COL: substring`.
fn parse_expected(text: &str) -> Result<ExpectedError, String> {
    let line_text = text.strip_suffix('\n').unwrap_or(text);
    if line_text.contains('\n') {
        return Err("the .err file must hold exactly one line".to_owned());
    }
    let malformed = || format!("the .err line {line_text:?} is not LINE:COL: substring");
    let (line, rest) = line_text.split_once(':').ok_or_else(malformed)?;
    let (column, rest) = rest.split_once(':').ok_or_else(malformed)?;
    let substring = rest.strip_prefix(' ').ok_or_else(malformed)?;
    if substring.is_empty() {
        return Err(malformed());
    }
    Ok(ExpectedError {
        line: line.parse().map_err(|_| malformed())?,
        column: column.parse().map_err(|_| malformed())?,
        substring: substring.to_owned(),
    })
}

/// Reads the `key = value` lines of a `.limits` file.
fn parse_limits(text: &str) -> Result<Limits, String> {
    let mut limits = Limits::default();
    for line in text.lines().map(str::trim) {
        if line.is_empty() || line.starts_with('#') {
            continue;
        }
        let (key, value) = line
            .split_once('=')
            .ok_or_else(|| format!("the .limits line {line:?} is not key = value"))?;
        let value: usize = value
            .trim()
            .parse()
            .map_err(|_| format!("the .limits line {line:?} has no whole number"))?;
        match key.trim() {
            "max_line_bytes" => limits.max_line_bytes = value,
            "max_labels_per_series" => limits.max_labels_per_series = value,
            "max_series" => limits.max_series = value,
            "max_families" => limits.max_families = value,
            other => return Err(format!("unknown limit {other:?} in the .limits file")),
        }
    }
    Ok(limits)
}

#[test]
fn expected_error_lines_parse() {
    let expected = parse_expected("3:14: invalid escape sequence\n").expect("a well-formed line");
    assert_eq!((expected.line, expected.column), (3, 14));
    assert_eq!(expected.substring, "invalid escape sequence");
    assert!(parse_expected("3:14 no colon\n").is_err());
    assert!(parse_expected("3:14: \n").is_err());
    assert!(parse_expected("a:1: x\n").is_err());

    let limits = parse_limits("# a comment\nmax_series = 2\n\nmax_line_bytes=9\n")
        .expect("well-formed limits");
    assert_eq!((limits.max_series, limits.max_line_bytes), (2, 9));
    assert_eq!(limits.max_families, Limits::default().max_families);
    assert!(parse_limits("max_frobs = 1\n").is_err());
}

#[test]
fn quote_cuts_long_inputs() {
    let long = vec![b'a'; REPORT_INPUT_CHARS + 10];
    let quoted = quote(&long);
    assert!(quoted.ends_with("...\""), "{quoted}");
    assert_eq!(quote(b"a\n"), "\"a\\n\"");
}
