//! The `tether` command: argument parsing and wiring only.

mod check;

use std::process::ExitCode;

use clap::{Parser, Subcommand};

/// Tether gets metrics out of processes that Prometheus cannot scrape.
#[derive(Debug, Parser)]
#[command(name = "tether", version, about, long_about = None)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Validate a text exposition (Prometheus 0.0.4 or OpenMetrics 1.0).
    ///
    /// Prints one `line:col: message` per error on standard output and
    /// naming advice (as `promtool check metrics` gives) on standard error.
    /// Exits 0 when valid, 1 when invalid, 2 on a usage error.
    Check(check::CheckArgs),
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    match cli.command {
        Command::Check(args) => check::run(&args),
    }
}
