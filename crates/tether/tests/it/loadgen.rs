//! `tether loadgen agents` against a real gateway that goes away and comes
//! back on the same ports: the agents dial again, and the summary says so.

use std::io::Read;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use crate::support::{DEADLINE, Gateway, Killed, get};

/// Simulated agents in the test.
const N_AGENTS: usize = 4;

/// The gateway's gauge of connected agents.
const CONNECTED: &str = "tether_agents_connected";

/// Polls the gateway's exposition until `n` simulated agents answer its
/// scrapes. An agent reads its `Welcome` before any scrape request, so
/// one that answers has been welcomed (and counted so) by the load
/// generator too.
fn wait_for_answering_agents(gateway: &Gateway, n: usize) {
    let started = Instant::now();
    loop {
        let answering = get(gateway.http, "/metrics").map_or(0, |metrics| {
            metrics
                .lines()
                .filter(|line| {
                    line.starts_with("loadgen_requests_0_total{")
                        && line.contains("route=\"/api/v1/items/0\"")
                })
                .count()
        });
        if answering == n {
            return;
        }
        assert!(
            started.elapsed() < DEADLINE,
            "{answering} agents answer, not {n}, after {DEADLINE:?}"
        );
        // The next look, not a synchronization: the condition is read again.
        std::thread::sleep(Duration::from_millis(20));
    }
}

#[test]
fn agents_reconnect_when_the_gateway_restarts_on_the_same_port() {
    let first = Gateway::start("127.0.0.1:0", "127.0.0.1:0");
    let (http, agents) = (first.http, first.agents);
    let loadgen = Command::new(env!("CARGO_BIN_EXE_tether"))
        .args(["loadgen", "agents", "--gateway"])
        .arg(agents.to_string())
        .args(["--agents", &N_AGENTS.to_string(), "--series", "5"])
        // The bound of the run; the test ends it sooner, with a signal.
        .args(["--duration-secs", "300"])
        .args(["--reconnect-initial-ms", "20", "--reconnect-max-ms", "200"])
        .arg("--json")
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .expect("start tether loadgen");
    let mut loadgen = Killed(loadgen);
    first.wait_for_gauge(CONNECTED, N_AGENTS as f64);
    wait_for_answering_agents(&first, N_AGENTS);

    // The gateway dies without a word to its agents, and a new one takes
    // its ports.
    drop(first);
    let second = Gateway::start(&http.to_string(), &agents.to_string());
    assert_eq!((second.http, second.agents), (http, agents));
    second.wait_for_gauge(CONNECTED, N_AGENTS as f64);
    wait_for_answering_agents(&second, N_AGENTS);

    // SIGTERM ends the run early, with its summary.
    let pid = loadgen.0.id().to_string();
    let status = Command::new("sh")
        .args(["-c", "kill -TERM \"$1\"", "sh", &pid])
        .status()
        .expect("run kill");
    assert!(status.success());
    let mut stdout = String::new();
    loadgen
        .0
        .stdout
        .take()
        .expect("stdout was piped")
        .read_to_string(&mut stdout)
        .expect("read the summary");
    let exit = loadgen.0.wait().expect("wait for tether loadgen");
    assert!(exit.success(), "{exit:?}");
    let summary: serde_json::Value =
        serde_json::from_str(stdout.trim()).unwrap_or_else(|e| panic!("{e}: {stdout}"));
    let count = |key: &str| {
        summary[key]
            .as_u64()
            .unwrap_or_else(|| panic!("{key} in {summary}"))
    };
    let n_agents = N_AGENTS as u64;
    assert_eq!(count("connected_at_end"), n_agents, "{summary}");
    assert!(count("disconnects") >= n_agents, "{summary}");
    assert!(count("reconnects") >= n_agents, "{summary}");
    assert!(count("recoveries") >= 1, "{summary}");
    assert_eq!(summary["recovering_at_end"], false, "{summary}");
    for key in [
        "reconnect_p50_seconds",
        "reconnect_p99_seconds",
        "reconnect_max_seconds",
        "last_recovery_seconds",
        "longest_recovery_seconds",
    ] {
        assert!(summary[key].as_f64().is_some(), "{key} in {summary}");
    }
}
