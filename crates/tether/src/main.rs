//! The `tether` command: argument parsing and wiring only.

mod check;
mod echo;
mod gateway;
mod loadgen;
mod observe;
mod setup;

use std::process::ExitCode;

use clap::{Parser, Subcommand};

/// The gateway's scrape path decodes and frees millions of small objects per
/// scrape; mimalloc does that at about half the cost of the system
/// allocator and returns memory to the system more readily.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

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

    /// Load a gateway with simulated agents or pushes (loopback only by default).
    ///
    /// `agents`: agents that dial in and answer scrapes, with `--scrape-url`
    /// the latency of scrapes taken meanwhile. `push`: groups pushed through
    /// the Pushgateway API (to tether or a Pushgateway), then scraped.
    /// Bounded in count and time; each prints a summary.
    Loadgen(loadgen::LoadgenArgs),

    /// Watch a metric event stream in a terminal UI (default 127.0.0.1:5000).
    ///
    /// Reads the stream of tether's exporter or of any metrics-exporter-tcp
    /// app: counters with rates, gauges with sparklines, histograms with
    /// p50/p99/max. `/` filters by name, Esc clears, arrows and
    /// PageUp/PageDown scroll, q quits. With `--once` it prints one snapshot
    /// (text or JSON) and exits instead.
    Observe(observe::ObserveArgs),
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    match cli.command {
        Command::Check(args) => check::run(&args),
        Command::Gateway(args) => gateway::run(&args),
        Command::Loadgen(args) => loadgen::run(&args),
        Command::Echo(args) => echo::run(&args),
        Command::Observe(args) => observe::run(&args),
    }
}
