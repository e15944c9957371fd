//! `tether echo` run as a user runs it: a child process on free loopback
//! ports, its echo checked through its own `/metrics`, its logs and its
//! exit on SIGTERM.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{Shutdown, SocketAddr, TcpStream};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::mpsc;
use std::sync::{Arc, Mutex, PoisonError};
use std::thread;
use std::time::{Duration, Instant};

use serde_json::Value;

/// How long any step may take before the test fails.
const DEADLINE: Duration = Duration::from_secs(30);

const POEM: [&str; 4] = [
    "Tyger Tyger, burning bright,\nIn the forests of the night;\n",
    "What immortal hand or eye,\nCould frame thy fearful symmetry?\n\n",
    "In what distant deeps or skies.\nBurnt the fire of thine eyes?\n",
    "On what wings dare he aspire?\nWhat the hand, dare seize the fire?\n",
];

/// A running `tether echo`, killed when dropped.
struct EchoProcess {
    child: Child,
    echo: SocketAddr,
    metrics: SocketAddr,
    stream: Option<SocketAddr>,
    logs: Arc<Mutex<Vec<Value>>>,
}

impl EchoProcess {
    /// Starts `tether echo` on port 0 everywhere, with JSON logs, and reads
    /// the bound addresses from its log.
    fn start(with_stream: bool) -> Self {
        let mut command = Command::new(env!("CARGO_BIN_EXE_tether"));
        command.args([
            "echo",
            "--listen",
            "127.0.0.1:0",
            "--metrics-listen",
            "127.0.0.1:0",
            "--log-format",
            "json",
        ]);
        if with_stream {
            command.args(["--stream-listen", "127.0.0.1:0"]);
        }
        let mut child = command
            .env("RUST_LOG", "info,tether_tcp=debug")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .expect("start tether echo");
        let stderr = child.stderr.take().expect("stderr was piped");
        let logs = Arc::new(Mutex::new(Vec::new()));
        let (addr_tx, addr_rx) = mpsc::channel();
        let log_sink = Arc::clone(&logs);
        thread::spawn(move || {
            for line in BufReader::new(stderr).lines() {
                let Ok(line) = line else { break };
                let Ok(event) = serde_json::from_str::<Value>(&line) else {
                    panic!("a log line that is not JSON: {line}");
                };
                if let (Some(listener), Some(addr)) =
                    (field(&event, "listener"), field(&event, "addr"))
                    && let (Some(listener), Some(addr)) = (listener.as_str(), addr.as_str())
                    && let Ok(addr) = addr.parse::<SocketAddr>()
                {
                    let _ = addr_tx.send((listener.to_owned(), addr));
                }
                log_sink
                    .lock()
                    .unwrap_or_else(PoisonError::into_inner)
                    .push(event);
            }
        });
        let mut process = EchoProcess {
            child,
            echo: SocketAddr::from(([0, 0, 0, 0], 0)),
            metrics: SocketAddr::from(([0, 0, 0, 0], 0)),
            stream: None,
            logs,
        };
        let n_listeners = if with_stream { 3 } else { 2 };
        let start = Instant::now();
        for _ in 0..n_listeners {
            let left = DEADLINE.saturating_sub(start.elapsed());
            let (listener, addr) = addr_rx.recv_timeout(left).unwrap_or_else(|_| {
                panic!("no listening address logged; logs: {:?}", process.logs())
            });
            match listener.as_str() {
                "echo" => process.echo = addr,
                "metrics" => process.metrics = addr,
                "stream" => process.stream = Some(addr),
                other => panic!("unexpected listener {other}"),
            }
        }
        process
    }

    fn logs(&self) -> Vec<Value> {
        self.logs
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .clone()
    }

    /// `GET /metrics`, as text.
    fn scrape(&self) -> String {
        let mut stream = connect(self.metrics);
        let request = "GET /metrics HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n";
        stream.write_all(request.as_bytes()).expect("send request");
        let mut response = String::new();
        stream.read_to_string(&mut response).expect("read response");
        let (head, body) = response.split_once("\r\n\r\n").expect("an HTTP response");
        assert!(head.starts_with("HTTP/1.1 200"), "{head}");
        assert!(
            head.to_ascii_lowercase()
                .contains("content-type: text/plain; version=0.0.4"),
            "{head}"
        );
        body.to_owned()
    }

    /// The value of `name{listener="echo"}`, or `None` while it is absent.
    fn metric(&self, name: &str) -> Option<f64> {
        let text = self.scrape();
        let prefix = format!("{name}{{");
        text.lines()
            .filter(|line| line.starts_with(&prefix) && line.contains("listener=\"echo\""))
            .find_map(|line| line.rsplit(' ').next()?.parse().ok())
    }

    /// Scrapes until `name{listener="echo"}` equals `expected`.
    fn wait_metric(&self, name: &str, expected: f64) {
        let start = Instant::now();
        loop {
            let value = self.metric(name);
            if value == Some(expected) {
                return;
            }
            assert!(
                start.elapsed() < DEADLINE,
                "{name} is {value:?}, not {expected}:\n{}",
                self.scrape()
            );
            thread::sleep(Duration::from_millis(10));
        }
    }

    /// Sends SIGTERM and waits for the process to exit.
    fn terminate(mut self) -> (ExitStatus, Vec<Value>) {
        let status = Command::new("kill")
            .args(["-TERM", &self.child.id().to_string()])
            .status()
            .expect("run kill");
        assert!(status.success(), "kill -TERM failed");
        let start = Instant::now();
        let exit = loop {
            if let Some(exit) = self.child.try_wait().expect("wait for tether echo") {
                break exit;
            }
            assert!(
                start.elapsed() < DEADLINE,
                "tether echo did not stop on SIGTERM"
            );
            thread::sleep(Duration::from_millis(10));
        };
        // The log reader ends with the process's standard error.
        let start = Instant::now();
        while !self
            .logs()
            .iter()
            .any(|event| field(event, "message").and_then(Value::as_str) == Some("stopped"))
            && start.elapsed() < DEADLINE
        {
            thread::sleep(Duration::from_millis(10));
        }
        (exit, self.logs())
    }
}

impl Drop for EchoProcess {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A field of a JSON log event, whether the events are flattened or not.
fn field<'a>(event: &'a Value, name: &str) -> Option<&'a Value> {
    event.get(name).or_else(|| event.get("fields")?.get(name))
}

fn connect(addr: SocketAddr) -> TcpStream {
    let stream = TcpStream::connect_timeout(&addr, DEADLINE).expect("connect");
    stream
        .set_read_timeout(Some(DEADLINE))
        .expect("read timeout");
    stream
        .set_write_timeout(Some(DEADLINE))
        .expect("write timeout");
    stream
}

#[test]
fn echo_counts_a_poem_in_its_metrics_and_stops_on_sigterm() {
    let process = EchoProcess::start(true);
    let poem = POEM.concat();

    // Send the poem in parts while reading its echo.
    let mut stream = connect(process.echo);
    let client_addr = stream.local_addr().expect("client address");
    let mut writer = stream.try_clone().expect("clone the socket");
    let sender = thread::spawn(move || {
        for part in POEM {
            writer.write_all(part.as_bytes()).expect("send a part");
            writer.flush().expect("flush");
        }
    });
    let mut echoed = vec![0_u8; poem.len()];
    stream.read_exact(&mut echoed).expect("read the echo");
    sender.join().expect("sender thread");
    assert_eq!(String::from_utf8(echoed).expect("utf-8"), poem);

    // The connection is still open.
    process.wait_metric("tether_tcp_bytes_read_total", poem.len() as f64);
    process.wait_metric("tether_tcp_bytes_written_total", poem.len() as f64);
    assert_eq!(process.metric("tether_tcp_sockets_opened_total"), Some(1.0));
    assert_eq!(process.metric("tether_tcp_sockets_closed_total"), Some(0.0));
    assert_eq!(process.metric("tether_tcp_sockets_active"), Some(1.0));

    // Closing our side ends the echo; the server closes its side.
    stream.shutdown(Shutdown::Write).expect("half-close");
    let mut rest = Vec::new();
    stream
        .read_to_end(&mut rest)
        .expect("read to the server's close");
    assert!(rest.is_empty());
    process.wait_metric("tether_tcp_sockets_closed_total", 1.0);
    process.wait_metric("tether_tcp_sockets_active", 0.0);
    assert_eq!(process.metric("tether_tcp_sockets_opened_total"), Some(1.0));
    let text = process.scrape();
    assert!(
        text.contains("# TYPE tether_tcp_connection_duration_seconds histogram"),
        "{text}"
    );
    assert!(
        text.contains("tether_tcp_connection_duration_seconds_count{listener=\"echo\"} 1"),
        "{text}"
    );

    // The event stream is served.
    let stream_addr = process.stream.expect("stream address logged");
    let mut events = connect(stream_addr);
    let mut first = [0_u8; 1];
    events
        .read_exact(&mut first)
        .expect("the stream sends the current state");

    let (exit, logs) = process.terminate();
    assert!(exit.success(), "{exit:?}");

    // The connection's log lines carry its span.
    let opened = logs
        .iter()
        .find(|event| {
            field(event, "message").and_then(Value::as_str) == Some("connection opened")
                && event["span"]["listener"] == "echo"
        })
        .unwrap_or_else(|| panic!("no 'connection opened' for the echo listener in {logs:?}"));
    let span = &opened["span"];
    assert_eq!(span["name"], "conn");
    assert_eq!(span["peer"], client_addr.to_string());
    assert_eq!(span["local"], process_addr_string(&logs, "echo"));
    assert!(span["conn_id"].as_u64().is_some_and(|id| id > 0), "{span}");
    assert!(span["fd"].as_i64().is_some_and(|fd| fd > 2), "{span}");
}

/// The address a listener logged when it started accepting.
fn process_addr_string(logs: &[Value], listener: &str) -> String {
    logs.iter()
        .find(|event| field(event, "listener").and_then(Value::as_str) == Some(listener))
        .and_then(|event| field(event, "addr")?.as_str())
        .unwrap_or_default()
        .to_owned()
}

#[test]
fn an_impossible_queue_is_a_usage_error() {
    let output = Command::new(env!("CARGO_BIN_EXE_tether"))
        .args([
            "echo",
            "--listen",
            "127.0.0.1:0",
            "--metrics-listen",
            "127.0.0.1:0",
            "--queue-bytes",
            "0",
        ])
        .stdin(Stdio::null())
        .output()
        .expect("run tether echo");
    assert_eq!(output.status.code(), Some(64));
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(stderr.contains("--queue-bytes"), "{stderr}");
    assert_eq!(stderr.lines().count(), 1, "{stderr}");
}
