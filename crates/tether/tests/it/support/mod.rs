//! What the tests of the binary share: children killed on drop, a plain
//! HTTP GET, and a gateway started on loopback ports.

use std::io::{BufRead, BufReader, Lines, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::process::{Child, ChildStderr, Command, Stdio};
use std::time::{Duration, Instant};

/// How long any step may take before the test fails.
pub(crate) const DEADLINE: Duration = Duration::from_secs(30);

/// Kills the child when dropped, so a failing test leaves nothing behind.
pub(crate) struct Killed(pub(crate) Child);

impl Drop for Killed {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// `GET path` over HTTP/1.1; the status line and body.
pub(crate) fn get(addr: SocketAddr, path: &str) -> std::io::Result<String> {
    let mut stream = TcpStream::connect(addr)?;
    stream.set_read_timeout(Some(DEADLINE))?;
    write!(
        stream,
        "GET {path} HTTP/1.1\r\nHost: tether\r\nConnection: close\r\n\r\n"
    )?;
    let mut response = String::new();
    stream.read_to_string(&mut response)?;
    Ok(response)
}

/// The address logged after `key` on `line`.
pub(crate) fn logged_addr(line: &str, key: &str) -> Option<SocketAddr> {
    line.split_whitespace()
        .find_map(|word| word.strip_prefix(key))
        .and_then(|addr| addr.parse().ok())
}

/// A `tether gateway` child and the addresses it listens on.
pub(crate) struct Gateway {
    /// Held so that the gateway is killed when this is dropped.
    child: Killed,
    pub(crate) http: SocketAddr,
    pub(crate) agents: SocketAddr,
}

/// The `tether` binary the tests run: this build's, or the one
/// `TETHER_TEST_BINARY` names (a release build, to measure the attacks;
/// see BENCHMARKS.md).
pub(crate) fn tether_binary() -> std::ffi::OsString {
    std::env::var_os("TETHER_TEST_BINARY").unwrap_or_else(|| env!("CARGO_BIN_EXE_tether").into())
}

/// Starts `tether gateway` with `args` and waits until it logs the
/// addresses it listens on; its log's further lines are returned unread.
pub(crate) fn spawn_gateway(
    args: &[&str],
) -> (
    Killed,
    SocketAddr,
    SocketAddr,
    Lines<BufReader<ChildStderr>>,
) {
    let child = Command::new(tether_binary())
        .arg("gateway")
        .args(args)
        .env("RUST_LOG", "info")
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .expect("start tether gateway");
    let mut child = Killed(child);
    let stderr = child.0.stderr.take().expect("stderr was piped");
    let mut lines = BufReader::new(stderr).lines();
    loop {
        let line = lines
            .next()
            .expect("the gateway logs that it listens")
            .expect("a log line");
        if line.contains("gateway listening") {
            let http = logged_addr(&line, "http=").expect("the HTTP address");
            let agents = logged_addr(&line, "agents=").expect("the agent address");
            return (child, http, agents, lines);
        }
    }
}

impl Gateway {
    /// Starts a gateway on `http` and `agents` (port 0 for any) and waits
    /// until it logs that it listens; its log is drained by a thread.
    pub(crate) fn start(http: &str, agents: &str) -> Gateway {
        Gateway::start_with(&["--http-listen", http, "--agent-listen", agents])
    }

    /// Starts a gateway on loopback ports the system picks, with `args`
    /// added.
    pub(crate) fn on_loopback(args: &[&str]) -> Gateway {
        let mut all = vec![
            "--http-listen",
            "127.0.0.1:0",
            "--agent-listen",
            "127.0.0.1:0",
        ];
        all.extend_from_slice(args);
        Gateway::start_with(&all)
    }

    fn start_with(args: &[&str]) -> Gateway {
        let (child, http, agents, lines) = spawn_gateway(args);
        // Read on, so that the gateway never blocks on its log.
        std::thread::spawn(move || lines.for_each(drop));
        Gateway {
            child,
            http,
            agents,
        }
    }

    /// The gateway's process id.
    pub(crate) fn pid(&self) -> u32 {
        self.child.0.id()
    }

    /// The value of the gauge `name` in the gateway's exposition
    /// (`/metrics`), if it answers.
    pub(crate) fn gauge(&self, name: &str) -> Option<f64> {
        let metrics = get(self.http, "/metrics").ok()?;
        metrics.lines().find_map(|line| {
            let rest = line.strip_prefix(name)?;
            // `name value` or `name{labels} value`.
            let value = match rest.strip_prefix('{') {
                Some(labelled) => labelled.split_once("} ")?.1,
                None => rest.strip_prefix(' ')?,
            };
            value.trim().parse().ok()
        })
    }

    /// Polls the gauge `name` until it is `value`; fails past [`DEADLINE`].
    pub(crate) fn wait_for_gauge(&self, name: &str, value: f64) {
        let started = Instant::now();
        loop {
            let now = self.gauge(name);
            if now == Some(value) {
                return;
            }
            assert!(
                started.elapsed() < DEADLINE,
                "{name} is {now:?}, not {value}, after {DEADLINE:?}"
            );
            // The next look, not a synchronization: the condition is read again.
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}
