//! `tether check`: validates an exposition and reports each error by position.

use std::fs;
use std::io::{self, Read, Write};
use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Args, ValueEnum};
use tether_model::{Format, Limits, check, lint};

/// Most errors reported for one input; past it, the rest are not read.
const MAX_REPORTED_ERRORS: usize = 1000;

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
    let (input, source) = match read_input(args.file.as_ref()) {
        Ok(read) => read,
        Err(message) => {
            let _ = writeln!(io::stderr().lock(), "tether check: {message}");
            return ExitCode::from(EXIT_USAGE);
        }
    };
    let format = match args.format {
        FormatArg::Auto => Format::detect(&input),
        FormatArg::Text => Format::Text,
        FormatArg::Openmetrics => Format::OpenMetrics,
    };
    let limits = Limits {
        max_line_bytes: args.max_line_bytes,
        max_labels_per_series: args.max_labels_per_series,
        ..Limits::default()
    };
    let checked = check(&input, format, limits, MAX_REPORTED_ERRORS);
    let findings = lint(&checked.families);

    let mut stdout = io::stdout().lock();
    let mut stderr = io::stderr().lock();
    // Write errors are ignored: a closed pipe (`| head`) is not a failure
    // of the check, and the exit status still tells the verdict.
    for error in &checked.errors {
        let _ = writeln!(stdout, "{error}");
    }
    for finding in &findings {
        let line = checked
            .family_lines
            .get(finding.family)
            .copied()
            .unwrap_or(1);
        let _ = writeln!(
            stderr,
            "{line}:1: warning: {} [{}]",
            finding.message, finding.rule
        );
    }
    let n_series: usize = checked.families.iter().map(|f| f.series.len()).sum();
    let format_name = match format {
        Format::Text => "text 0.0.4",
        Format::OpenMetrics => "OpenMetrics 1.0",
    };
    let invalid = !checked.errors.is_empty() || (args.strict && !findings.is_empty());
    let verdict = if checked.errors.is_empty() {
        "valid"
    } else {
        "invalid"
    };
    let _ = writeln!(
        stderr,
        "{source}: {verdict} {format_name}: {} families, {n_series} series, {} errors, {} warnings{}",
        checked.families.len(),
        checked.errors.len(),
        findings.len(),
        if args.strict && !findings.is_empty() {
            " (--strict: warnings fail the check)"
        } else {
            ""
        },
    );
    ExitCode::from(if invalid { EXIT_INVALID } else { EXIT_VALID })
}

/// Reads the whole input and names its source for messages.
fn read_input(file: Option<&PathBuf>) -> Result<(Vec<u8>, String), String> {
    match file {
        Some(path) if path.as_os_str() != "-" => fs::read(path)
            .map(|bytes| (bytes, path.display().to_string()))
            .map_err(|e| format!("cannot read {}: {e}", path.display())),
        _ => {
            let mut bytes = Vec::new();
            io::stdin()
                .read_to_end(&mut bytes)
                .map_err(|e| format!("cannot read standard input: {e}"))?;
            Ok((bytes, "<stdin>".to_owned()))
        }
    }
}
