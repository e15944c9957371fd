//! The `tether` command: argument parsing and wiring only.

mod check;
mod echo;
mod gateway;
mod setup;

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

    /// Run the example full-duplex TCP echo server, with its metrics.
    ///
    /// Serves sockets, bytes and connection metrics as Prometheus text at
    /// `GET /metrics` on `--metrics-listen`, and as a metric event stream on
    /// `--stream-listen`. Stops on SIGINT or SIGTERM.
    Echo(echo::EchoArgs),

    /// Run the gateway: agents dial in, Prometheus scrapes everything.
    ///
    /// Works with no flags: HTTP on 0.0.0.0:9091, agents on 0.0.0.0:7001.
    Gateway(Box<gateway::GatewayArgs>),
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    match cli.command {
        Command::Check(args) => check::run(&args),
        Command::Gateway(args) => gateway::run(&args),
        Command::Echo(args) => echo::run(&args),
    }
}
