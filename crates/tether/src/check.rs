//! `tether check`: validates an exposition and reports each error by position.

use std::fs;
use std::io::{self, Read, Write};
use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Args, ValueEnum};
use tether_model::{Format, Limits, check, lint, name_collisions, reserved_label};

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
fn merge_refusals(checked: &tether_model::Checked) -> Vec<String> {
    let line_of = |family: usize| checked.family_lines.get(family).copied().unwrap_or(1);
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
    for (index, family) in checked.families.iter().enumerate() {
        let reserved = family.series.iter().find_map(|series| {
            series.labels.iter().find_map(|label| {
                reserved_label(family.metric_type, &label.name).map(|why| (label, why))
            })
        });
        if let Some((label, why)) = reserved {
            errors.push((
                line_of(index),
                format!(
                    "{}:1: warning: family \"{}\" has a series with label \"{}\": {}; a gateway merging it drops the series [reserved-label]",
                    line_of(index),
                    family.name,
                    label.name,
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
fn reserved_names(checked: &tether_model::Checked) -> Vec<String> {
    checked
        .families
        .iter()
        .enumerate()
        .filter(|(_, family)| family.name.starts_with("tether_"))
        .map(|(index, family)| {
            format!(
                "{}:1: warning: family \"{}\" is named like the gateway's own metrics (tether_*), which a gateway refuses from its sources: rename it [reserved-name]",
                checked.family_lines.get(index).copied().unwrap_or(1),
                family.name
            )
        })
        .collect()
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
