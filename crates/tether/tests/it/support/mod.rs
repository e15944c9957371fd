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
    // Pushes in memory unless the test names a store: gateways of parallel
    // tests must not share one data directory.
    let memory_only = !args
        .iter()
        .any(|a| a.starts_with("--data-dir") || a.starts_with("--no-persistence"));
    let child = Command::new(tether_binary())
        .arg("gateway")
        .args(args)
        .args(memory_only.then_some("--no-persistence"))
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

/// An HTTP response as [`request`] reads it.
pub(crate) struct Response {
    pub(crate) status: u16,
    /// The body, de-chunked when it came chunked.
    pub(crate) body: Vec<u8>,
}

impl Response {
    /// The body as text, invalid UTF-8 replaced.
    pub(crate) fn text(&self) -> String {
        String::from_utf8_lossy(&self.body).into_owned()
    }
}

/// `method path` over HTTP/1.1 with `headers` and `body` (sent with its
/// `Content-Length`) on a connection of its own; the whole response.
pub(crate) fn request(
    addr: SocketAddr,
    method: &str,
    path: &str,
    headers: &[(&str, &str)],
    body: &[u8],
) -> std::io::Result<Response> {
    let mut stream = TcpStream::connect(addr)?;
    stream.set_read_timeout(Some(DEADLINE))?;
    stream.set_write_timeout(Some(DEADLINE))?;
    let mut head = format!(
        "{method} {path} HTTP/1.1\r\nHost: tether\r\nConnection: close\r\nContent-Length: {}\r\n",
        body.len()
    );
    for (name, value) in headers {
        head.push_str(&format!("{name}: {value}\r\n"));
    }
    head.push_str("\r\n");
    let mut message = head.into_bytes();
    message.extend_from_slice(body);
    stream.write_all(&message)?;
    let mut raw = Vec::new();
    stream.read_to_end(&mut raw)?;
    parse_response(&raw)
}

/// A whole HTTP/1.1 response read from `raw`.
pub(crate) fn parse_response(raw: &[u8]) -> std::io::Result<Response> {
    let invalid =
        |what: &str| std::io::Error::new(std::io::ErrorKind::InvalidData, what.to_owned());
    let split = raw
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .ok_or_else(|| invalid("no end of the response head"))?;
    let head = std::str::from_utf8(&raw[..split]).map_err(|_| invalid("a head not UTF-8"))?;
    let mut lines = head.split("\r\n");
    let status = lines
        .next()
        .and_then(|line| line.split_whitespace().nth(1))
        .and_then(|code| code.parse().ok())
        .ok_or_else(|| invalid("no status line"))?;
    let headers: Vec<(String, String)> = lines
        .filter_map(|line| line.split_once(':'))
        .map(|(n, v)| (n.trim().to_ascii_lowercase(), v.trim().to_owned()))
        .collect();
    let rest = &raw[split + 4..];
    let chunked = headers
        .iter()
        .any(|(n, v)| n == "transfer-encoding" && v.eq_ignore_ascii_case("chunked"));
    let body = if chunked {
        dechunk(rest).ok_or_else(|| invalid("a broken chunked body"))?
    } else {
        rest.to_vec()
    };
    Ok(Response { status, body })
}

/// The payload of a chunked body; `None` when it is cut short or malformed.
fn dechunk(mut chunked: &[u8]) -> Option<Vec<u8>> {
    let mut body = Vec::new();
    loop {
        let line_end = chunked.windows(2).position(|w| w == b"\r\n")?;
        let size_field = std::str::from_utf8(&chunked[..line_end]).ok()?;
        let size_hex = size_field.split(';').next()?.trim();
        let size = usize::from_str_radix(size_hex, 16).ok()?;
        chunked = &chunked[line_end + 2..];
        if size == 0 {
            return Some(body);
        }
        body.extend_from_slice(chunked.get(..size)?);
        chunked = chunked.get(size + 2..)?;
    }
}
