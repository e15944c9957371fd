//! `tether check`: validates an exposition and reports each error by position.
//!
//! The input is read in pieces of [`READ_BYTES`] and checked as it comes
//! ([`CheckStream`]): memory holds what the checks must remember (each
//! family's metadata, a 128-bit hash per series, the line being read), not
//! the input. With `--format auto`, a regular file (or standard input
//! redirected from one) has its last line read first, so it is checked
//! once in the format that line gives; a pipe is checked in both formats
//! at once, each on a thread of its own, and reported in the format its
//! last line gives once read.

use std::fs::File;
use std::io::{self, Read, Seek, SeekFrom, Write};
use std::os::fd::AsFd;
use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;
use std::sync::mpsc::sync_channel;

use clap::{Args, ValueEnum};
use tether_model::{CheckReport, CheckStream, Format, Limits, lint_report, name_collisions};

/// Most errors reported for one input; past it, the rest is only read to
/// the end (its format and its UTF-8 still count), not checked.
const MAX_REPORTED_ERRORS: usize = 1000;

/// Bytes read from the input at a time.
const READ_BYTES: usize = 256 * 1024;

/// Bytes kept of the input's end to find its format: enough for
/// `\n# EOF\n` ([`Format::detect`] reads no more).
const TAIL_BYTES: usize = 8;

/// Pieces read but not yet checked, per format, when a pipe is checked in
/// both: the reader waits for the slower check past it.
const PIECES_IN_FLIGHT: usize = 4;

/// Exit status when the input is valid.
const EXIT_VALID: u8 = 0;
/// Exit status when the input has errors (or lint findings with `--strict`).
const EXIT_INVALID: u8 = 1;
/// Exit status when the command cannot run as asked (unreadable file).
const EXIT_USAGE: u8 = 2;

#[derive(Debug, Args)]
pub(crate) struct CheckArgs {
    /// The file to check; `-` or nothing reads standard input.
    #[arg(value_name = "FILE|-")]
    file: Option<PathBuf>,

    /// The format of the input; `auto` takes OpenMetrics when the last line is `# EOF`.
    #[arg(long, value_enum, default_value_t = FormatArg::Auto)]
    format: FormatArg,

    /// Treat naming advice (missing HELP, counter names, units) as errors.
    #[arg(long)]
    strict: bool,

    /// Longest line accepted, in bytes.
    #[arg(long, default_value_t = tether_model::DEFAULT_MAX_LINE_BYTES, value_name = "BYTES")]
    max_line_bytes: usize,

    /// Most labels accepted on one series.
    #[arg(long, default_value_t = tether_model::DEFAULT_MAX_LABELS_PER_SERIES, value_name = "N")]
    max_labels_per_series: usize,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
enum FormatArg {
    Auto,
    Text,
    Openmetrics,
}

pub(crate) fn run(args: &CheckArgs) -> ExitCode {
    let limits = Limits {
        max_line_bytes: args.max_line_bytes,
        max_labels_per_series: args.max_labels_per_series,
        ..Limits::default()
    };
    let checked = match check_input(args, limits) {
        Ok(checked) => checked,
        Err(message) => {
            let _ = writeln!(io::stderr().lock(), "tether check: {message}");
            return ExitCode::from(EXIT_USAGE);
        }
    };
    let (checked, source) = checked;
    let format = checked.format;
    let findings = lint_report(&checked);
    let mut merge_warnings = merge_refusals(&checked);
    merge_warnings.extend(reserved_names(&checked));

    let mut stdout = io::stdout().lock();
    let mut stderr = io::stderr().lock();
    // Write errors are ignored: a closed pipe (`| head`) is not a failure
    // of the check, and the exit status still tells the verdict.
    for error in &checked.errors {
        let _ = writeln!(stdout, "{error}");
    }
    for warning in &merge_warnings {
        let _ = writeln!(stderr, "{warning}");
    }
    for finding in &findings {
        let line = first_line(&checked, finding.family);
        let _ = writeln!(
            stderr,
            "{line}:1: warning: {} [{}]",
            finding.message, finding.rule
        );
    }
    let n_series: usize = checked.stats.iter().map(|stats| stats.n_series).sum();
    let format_name = match format {
        Format::Text => "text 0.0.4",
        Format::OpenMetrics => "OpenMetrics 1.0",
    };
    let n_errors = checked.errors.len();
    let n_warnings = findings.len() + merge_warnings.len();
    let invalid = n_errors > 0 || (args.strict && n_warnings > 0);
    let verdict = if n_errors == 0 { "valid" } else { "invalid" };
    let _ = writeln!(
        stderr,
        "{source}: {verdict} {format_name}: {} families, {n_series} series, {} errors, {} warnings{}",
        checked.families.len(),
        n_errors,
        n_warnings,
        if args.strict && n_warnings > 0 {
            " (--strict: warnings fail the check)"
        } else {
            ""
        },
    );
    ExitCode::from(if invalid { EXIT_INVALID } else { EXIT_VALID })
}

/// What a gateway merging this exposition with others refuses, though the
/// format alone allows it: families whose written names collide in one of
/// the two formats (a histogram `hh` beside a gauge `hh_count`, a counter
/// `x_total` beside a gauge `x`, which OpenMetrics writes as one name), and
/// labels that a family's type reserves or that start with `__`. One
/// warning each, at the line of the family refused.
fn merge_refusals(checked: &CheckReport) -> Vec<String> {
    let line_of = |family: usize| first_line(checked, family);
    let mut errors: Vec<(u32, String)> = name_collisions(&checked.families)
        .into_iter()
        .map(|collision| {
            let family = &checked.families[collision.family];
            let kept = &checked.families[collision.with];
            let what = if collision.type_conflict {
                "is the same family with another type"
            } else {
                "writes a sample name of"
            };
            (
                line_of(collision.family),
                format!(
                    "{}:1: warning: family \"{}\" ({}) {what} family \"{}\" ({}) of line {}: a gateway merging it drops it; rename one of them [merge-collision]",
                    line_of(collision.family),
                    family.name,
                    family.metric_type.openmetrics_name(),
                    kept.name,
                    kept.metric_type.openmetrics_name(),
                    line_of(collision.with),
                ),
            )
        })
        .collect();
    for (index, (family, stats)) in checked.families.iter().zip(&checked.stats).enumerate() {
        if let Some((label, why)) = &stats.reserved_label {
            errors.push((
                line_of(index),
                format!(
                    "{}:1: warning: family \"{}\" has a series with label \"{}\": {}; a gateway merging it drops the series [reserved-label]",
                    line_of(index),
                    family.name,
                    label,
                    why.explain()
                ),
            ));
        }
    }
    errors.sort_by_key(|(line, _)| *line);
    errors.into_iter().map(|(_, message)| message).collect()
}

/// Families named like the gateway's own metrics, which it refuses from
/// agents, pushes and streams.
fn reserved_names(checked: &CheckReport) -> Vec<String> {
    checked
        .families
        .iter()
        .enumerate()
        .filter(|(_, family)| family.name.starts_with("tether_"))
        .map(|(index, family)| {
            format!(
                "{}:1: warning: family \"{}\" is named like the gateway's own metrics (tether_*), which a gateway refuses from its sources: rename it [reserved-name]",
                first_line(checked, index),
                family.name
            )
        })
        .collect()
}

/// The line where family `index` first appears.
fn first_line(checked: &CheckReport, index: usize) -> u32 {
    checked.stats.get(index).map_or(1, |stats| stats.first_line)
}

/// Reads and checks the input; names its source for messages.
fn check_input(args: &CheckArgs, limits: Limits) -> Result<(CheckReport, String), String> {
    let (mut input, source) = match args.file.as_ref() {
        Some(path) if path.as_os_str() != "-" => {
            let file =
                File::open(path).map_err(|e| format!("cannot read {}: {e}", path.display()))?;
            (file, path.display().to_string())
        }
        _ => {
            // A file of its own over the same descriptor, so that standard
            // input redirected from a regular file can be read at its end.
            let fd = io::stdin()
                .as_fd()
                .try_clone_to_owned()
                .map_err(|e| format!("cannot read standard input: {e}"))?;
            (File::from(fd), "<stdin>".to_owned())
        }
    };
    let cannot_read = |e: io::Error| match args.file.as_ref() {
        Some(path) if path.as_os_str() != "-" => format!("cannot read {}: {e}", path.display()),
        _ => format!("cannot read standard input: {e}"),
    };
    let format = match args.format {
        FormatArg::Auto => last_line_format(&mut input).map_err(cannot_read)?,
        FormatArg::Text => Some(Format::Text),
        FormatArg::Openmetrics => Some(Format::OpenMetrics),
    };
    let report = match format {
        Some(format) => check_as(&mut input, format, limits),
        None => check_both(&mut input, limits),
    };
    Ok((report.map_err(cannot_read)?, source))
}

/// Reads `input` to its end, or until the report is settled, and checks it
/// as `format`.
fn check_as(input: &mut File, format: Format, limits: Limits) -> io::Result<CheckReport> {
    let mut stream = CheckStream::new(format, limits, MAX_REPORTED_ERRORS);
    let mut buffer = vec![0; READ_BYTES];
    loop {
        let n_read = read_some(input, &mut buffer)?;
        if n_read == 0 {
            break;
        }
        stream.feed(&buffer[..n_read]);
        if stream.is_settled() {
            break;
        }
    }
    Ok(stream.finish())
}

/// Reads `input` to its end and checks it in both formats at once, each on
/// a thread of its own; answers the report of the format its last line
/// gives.
fn check_both(input: &mut File, limits: Limits) -> io::Result<CheckReport> {
    std::thread::scope(|scope| {
        let mut senders = Vec::new();
        let mut checks = Vec::new();
        for format in [Format::Text, Format::OpenMetrics] {
            let (sender, pieces) = sync_channel::<Arc<[u8]>>(PIECES_IN_FLIGHT);
            senders.push(sender);
            checks.push(scope.spawn(move || {
                let mut stream = CheckStream::new(format, limits, MAX_REPORTED_ERRORS);
                for piece in pieces {
                    stream.feed(&piece);
                }
                stream.finish()
            }));
        }
        let mut buffer = vec![0; READ_BYTES];
        let mut tail = Vec::with_capacity(2 * TAIL_BYTES);
        let read = loop {
            let n_read = match read_some(input, &mut buffer) {
                Ok(0) => break Ok(()),
                Ok(n_read) => n_read,
                Err(e) => break Err(e),
            };
            let piece: Arc<[u8]> = Arc::from(&buffer[..n_read]);
            tail.extend_from_slice(&piece[n_read.saturating_sub(TAIL_BYTES)..]);
            tail.drain(..tail.len().saturating_sub(TAIL_BYTES));
            for sender in &senders {
                // A check does not end before its pieces do.
                let _ = sender.send(Arc::clone(&piece));
            }
        };
        // The checks end once their pieces do.
        drop(senders);
        let reports: Vec<CheckReport> = checks
            .into_iter()
            .map(|check| {
                check
                    .join()
                    .unwrap_or_else(|panic| std::panic::resume_unwind(panic))
            })
            .collect();
        read?;
        let format = Format::detect(&tail);
        let report = reports.into_iter().find(|report| report.format == format);
        // A check ran for each format.
        Ok(report.unwrap_or_else(|| unreachable!("no check in {format:?}")))
    })
}

/// One read, retried when interrupted; 0 at the end.
fn read_some(input: &mut File, buffer: &mut [u8]) -> io::Result<usize> {
    loop {
        match input.read(buffer) {
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            result => return result,
        }
    }
}

/// The format [`Format::detect`] gives `input` from its last line, read
/// first when `input` is a regular file (left where it was); `None` for a
/// pipe or another stream, whose end is known only once read.
fn last_line_format(input: &mut File) -> io::Result<Option<Format>> {
    let is_file = input.metadata().is_ok_and(|metadata| metadata.is_file());
    if !is_file {
        return Ok(None);
    }
    let tail_bytes = TAIL_BYTES as u64;
    let start = input.stream_position()?;
    let end = input.seek(SeekFrom::End(0))?;
    input.seek(SeekFrom::Start(end.saturating_sub(tail_bytes).max(start)))?;
    let mut tail = Vec::new();
    Read::by_ref(input)
        .take(tail_bytes)
        .read_to_end(&mut tail)?;
    input.seek(SeekFrom::Start(start))?;
    Ok(Some(Format::detect(&tail)))
}
