//! `tether gateway` attacked on loopback as an unauthenticated peer would
//! attack it: unfinished frames, unsolicited answers, final pushes, silent
//! sockets and scrapers that do not read. Each attack is bounded in count
//! and time; each test holds the gateway's peak memory (`VmHWM`, read from
//! `/proc`) under the ceiling ARCHITECTURE.md states for the limits in
//! effect, and checks that `/-/healthy` and a real agent's scrape are
//! still answered while the attack goes on.

#![allow(
    clippy::print_stderr,
    reason = "the tests report the latencies they measure"
)]

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use bytes::Bytes;
use tether_exporter::{Agent, AgentBuilder, ExporterBuilder};
use tether_model::{Format, MetricFamily, MetricType, Series, Value, parse, pb, to_proto};
use tether_proto::{
    ClientMessage, Hello, Push, RejectReason, ScrapeResponse, ServerKind, ServerMessage,
    decode_server_message,
};
use tether_tcp::FramedConn;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

use crate::support;

/// How long any step may take before the test fails.
const PATIENCE: Duration = Duration::from_secs(60);
const MIB: u64 = 1 << 20;

/// A gateway under attack: the child process, read from `/proc`.
struct Gateway {
    inner: support::Gateway,
    http: SocketAddr,
    agents: SocketAddr,
}

impl Gateway {
    /// Starts the gateway on loopback ports with `args` added.
    fn start(args: &[&str]) -> Gateway {
        let inner = support::Gateway::on_loopback(args);
        Gateway {
            http: inner.http,
            agents: inner.agents,
            inner,
        }
    }

    /// A value of `/proc/<pid>/status`, in bytes.
    fn status_bytes(&self, field: &str) -> u64 {
        let status = std::fs::read_to_string(format!("/proc/{}/status", self.inner.pid()))
            .expect("read the gateway's status");
        let kib: u64 = status
            .lines()
            .find_map(|line| line.strip_prefix(field))
            .and_then(|rest| rest.trim().trim_end_matches("kB").trim().parse().ok())
            .expect("the field is in the status");
        kib * 1024
    }

    /// Memory in use now.
    fn rss(&self) -> u64 {
        self.status_bytes("VmRSS:")
    }

    /// The most memory the gateway has used.
    fn peak_rss(&self) -> u64 {
        self.status_bytes("VmHWM:")
    }

    /// A self metric's value, 0 when absent.
    async fn metric(&self, name: &str, labels: &[(&str, &str)]) -> f64 {
        let families = parse(&get(self.http, "/metrics/proxy", &[]).await.1, Format::Text)
            .expect("valid output");
        value_of(&families, name, labels).unwrap_or(0.0)
    }

    /// Waits until the self metric `name` reaches `at_least`.
    async fn wait_for(&self, name: &str, labels: &[(&str, &str)], at_least: f64) {
        let deadline = Instant::now() + PATIENCE;
        loop {
            let value = self.metric(name, labels).await;
            if value >= at_least {
                return;
            }
            assert!(
                Instant::now() < deadline,
                "{name}{labels:?} stayed at {value}, below {at_least}"
            );
            tokio::task::yield_now().await;
        }
    }

    /// Checks that `/-/healthy` answers, a few times over; the slowest.
    async fn healthy(&self) -> Duration {
        let mut slowest = Duration::ZERO;
        for _ in 0..10 {
            let started = Instant::now();
            let (status, body) = get(self.http, "/-/healthy", &[]).await;
            assert_eq!((status, body.as_slice()), (200, &b"OK\n"[..]));
            slowest = slowest.max(started.elapsed());
        }
        slowest
    }

    /// Checks that a real agent connects and its scrape succeeds within
    /// Prometheus' deadline, then closes it.
    async fn real_agent_is_scraped(&self) {
        let recorder = ExporterBuilder::new().build_recorder();
        let gauge = metrics::Recorder::register_gauge(
            &recorder,
            &metrics::Key::from_name("real_app_gauge"),
            &metrics::Metadata::new(module_path!(), metrics::Level::INFO, None),
        );
        gauge.set(42.0);
        let agent: Agent = AgentBuilder::new(self.agents.to_string(), "real", "r-1")
            .registry(recorder.handle())
            .spawn()
            .expect("agent starts");
        agent
            .wait_connected(PATIENCE)
            .await
            .expect("the real agent connects");
        let (status, body) = get(
            self.http,
            "/metrics/connected",
            &[("X-Prometheus-Scrape-Timeout-Seconds", "10")],
        )
        .await;
        assert_eq!(status, 200);
        let families = parse(&body, Format::Text).expect("valid output");
        assert_eq!(
            value_of(&families, "real_app_gauge", &[("instance", "r-1")]),
            Some(42.0)
        );
        assert_eq!(
            value_of(&families, "tether_agent_up", &[("instance", "r-1")]),
            Some(1.0)
        );
        agent.close().await;
    }
}

/// `GET path` over HTTP/1.1: the status and the body.
async fn get(addr: SocketAddr, path: &str, headers: &[(&str, &str)]) -> (u16, Vec<u8>) {
    let exchange = async {
        let mut stream = TcpStream::connect(addr).await.expect("connect");
        let mut request = format!("GET {path} HTTP/1.1\r\nHost: tether\r\nConnection: close\r\n");
        for (name, value) in headers {
            request.push_str(&format!("{name}: {value}\r\n"));
        }
        request.push_str("\r\n");
        stream
            .write_all(request.as_bytes())
            .await
            .expect("send the request");
        let mut response = Vec::new();
        stream
            .read_to_end(&mut response)
            .await
            .expect("read the response");
        response
    };
    let response = tokio::time::timeout(PATIENCE, exchange)
        .await
        .expect("answered in time");
    let split = response
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .expect("a complete head");
    let head = String::from_utf8_lossy(&response[..split]).into_owned();
    let status = head
        .split_whitespace()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .expect("a status");
    let mut body = response[split + 4..].to_vec();
    if head
        .to_ascii_lowercase()
        .contains("transfer-encoding: chunked")
    {
        body = dechunk(&body);
    }
    (status, body)
}

fn dechunk(mut chunked: &[u8]) -> Vec<u8> {
    let mut body = Vec::new();
    loop {
        let line_end = chunked
            .windows(2)
            .position(|w| w == b"\r\n")
            .expect("a chunk size line");
        let size = usize::from_str_radix(
            std::str::from_utf8(&chunked[..line_end])
                .expect("ASCII")
                .trim(),
            16,
        )
        .expect("a hex size");
        if size == 0 {
            return body;
        }
        let start = line_end + 2;
        body.extend_from_slice(&chunked[start..start + size]);
        chunked = &chunked[start + size + 2..];
    }
}

/// The value of the series of `name` that has all of `labels`.
fn value_of(families: &[MetricFamily], name: &str, labels: &[(&str, &str)]) -> Option<f64> {
    families
        .iter()
        .filter(|family| family.name == name)
        .flat_map(|family| family.series.iter())
        .find(|series| {
            labels.iter().all(|(n, v)| {
                series
                    .labels
                    .iter()
                    .any(|label| label.name == *n && label.value == *v)
            })
        })
        .and_then(|series| match &series.value {
            Value::Single(value) => Some(*value),
            Value::Counter(counter) => Some(counter.total),
            _ => None,
        })
}

/// An agent speaking the protocol by hand.
struct RawAgent {
    conn: FramedConn<TcpStream>,
}

impl RawAgent {
    /// Connects and says Hello as `job`/`instance`; expects a Welcome.
    async fn hello(gateway: SocketAddr, job: &str, instance: &str) -> RawAgent {
        let stream = TcpStream::connect(gateway).await.expect("connect");
        let mut agent = RawAgent {
            conn: FramedConn::new(stream),
        };
        agent
            .send(&ClientMessage::from(Hello::new(
                "",
                [("job", job), ("instance", instance)],
            )))
            .await;
        match agent.recv().await.and_then(|m| m.kind) {
            Some(ServerKind::Welcome(_)) => agent,
            other => panic!("expected Welcome, got {other:?}"),
        }
    }

    async fn send(&mut self, message: &ClientMessage) {
        self.conn.send(message).await.expect("send to the gateway");
    }

    /// The next message, `None` once the gateway closed.
    async fn recv(&mut self) -> Option<ServerMessage> {
        let frame = tokio::time::timeout(PATIENCE, self.conn.read_frame(64 << 20))
            .await
            .expect("the gateway answers in time");
        frame
            .ok()
            .flatten()
            .map(|body| decode_server_message(body).expect("a valid message"))
    }
}

/// A gauge family of `n_series` series with labels long enough that each
/// series takes about 100 bytes on the wire.
fn wide_family(name: &str, n_series: usize) -> pb::MetricFamily {
    let mut family = MetricFamily::new(name, MetricType::Gauge);
    family.help = Some("A wide family.".to_owned());
    family.series = (0..n_series)
        .map(|i| Series {
            labels: vec![
                tether_model::Label::new("series", format!("{i:012}")),
                tether_model::Label::new("padding", "p".repeat(60)),
            ],
            value: Value::Single(1.0),
            timestamp_ms: None,
        })
        .collect();
    to_proto(&family)
}

/// Peak memory over what the gateway used before the attack.
fn growth(gateway: &Gateway, baseline: u64) -> u64 {
    gateway.peak_rss().saturating_sub(baseline)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unfinished_frames_wait_unallocated_past_the_frame_budget() {
    // The defaults: 16 MiB frames, 256 MiB of frames in flight.
    let gateway = Gateway::start(&[]);
    let baseline = gateway.rss();
    let n_attackers: usize = 100;
    let frame_len: usize = (16 << 20) - 1;
    let chunk = Bytes::from(vec![0x55u8; 1 << 20]);
    let mut attackers = Vec::new();
    for i in 0..n_attackers {
        let mut agent = RawAgent::hello(gateway.agents, "attack", &format!("a-{i}")).await;
        let chunk = chunk.clone();
        attackers.push(tokio::spawn(async move {
            let mut header = Vec::new();
            prost::encode_length_delimiter(frame_len, &mut header).expect("a header");
            let stream = agent.conn.get_mut();
            if stream.write_all(&header).await.is_err() {
                return;
            }
            // All of the body but its last byte, for as long as the
            // gateway reads; then hold the connection.
            let mut left = frame_len - 1;
            while left > 0 {
                let n = left.min(chunk.len());
                if stream.write_all(&chunk[..n]).await.is_err() {
                    return;
                }
                left -= n;
            }
            std::future::pending::<()>().await;
        }));
    }
    // 16 frames fit the budget; every other one waits for it.
    let waiting = (n_attackers - 256 / 16) as f64;
    gateway
        .wait_for("tether_agent_frame_budget_waits_total", &[], waiting)
        .await;
    let slowest = gateway.healthy().await;
    gateway.real_agent_is_scraped().await;
    let grown = growth(&gateway, baseline);
    eprintln!(
        "unfinished frames: peak growth {} MiB, slowest /-/healthy {slowest:?}",
        grown / MIB
    );
    // The ceiling: the budget, and a read chunk per connection.
    assert!(
        grown < 256 * MIB + 64 * MIB,
        "the gateway grew by {} MiB",
        grown / MIB
    );
    for attacker in attackers {
        attacker.abort();
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unsolicited_answers_are_dropped_undecoded() {
    let gateway = Gateway::start(&[]);
    let baseline = gateway.rss();
    let mut agent = RawAgent::hello(gateway.agents, "attack", "unsolicited").await;
    // An answer to no scrape: nearly 16 MiB of empty families, which would
    // decode into millions of structures.
    let n_empty = (16 << 20) / 2 - 64;
    let mut response = Vec::with_capacity(16 << 20);
    prost::encoding::encode_key(1, prost::encoding::WireType::Varint, &mut response);
    prost::encoding::encode_varint(999_999, &mut response);
    for _ in 0..n_empty {
        response.extend_from_slice(&[0x12, 0x00]);
    }
    let mut message = Vec::with_capacity(response.len() + 16);
    prost::encoding::encode_key(
        tether_proto::SCRAPE_RESPONSE_FIELD,
        prost::encoding::WireType::LengthDelimited,
        &mut message,
    );
    prost::encoding::encode_varint(response.len() as u64, &mut message);
    message.extend_from_slice(&response);
    let mut frame = Vec::with_capacity(message.len() + 10);
    prost::encode_length_delimiter(message.len(), &mut frame).expect("a header");
    frame.extend_from_slice(&message);
    let n_frames = 10;
    let sender = tokio::spawn(async move {
        for _ in 0..n_frames {
            agent
                .conn
                .get_mut()
                .write_all(&frame)
                .await
                .expect("the gateway reads on");
        }
        agent
    });
    let slowest = gateway.healthy().await;
    gateway
        .wait_for(
            "tether_agent_frames_refused_total",
            &[("reason", "unsolicited")],
            f64::from(n_frames),
        )
        .await;
    let mut agent = sender.await.expect("the sender finished");
    // The connection goes on: a ping is answered.
    agent
        .send(&ClientMessage::from(tether_proto::Ping { nonce: 7 }))
        .await;
    loop {
        match agent.recv().await.and_then(|m| m.kind) {
            Some(ServerKind::Pong(pong)) => {
                assert_eq!(pong.nonce, 7);
                break;
            }
            // The gateway's own heartbeat.
            Some(ServerKind::Ping(_)) => {}
            other => panic!("expected a Pong, got {other:?}"),
        }
    }
    gateway.real_agent_is_scraped().await;
    let grown = growth(&gateway, baseline);
    eprintln!(
        "unsolicited answers: peak growth {} MiB, slowest /-/healthy {slowest:?}",
        grown / MIB
    );
    // A frame at a time, never decoded.
    assert!(
        grown < 2 * 16 * MIB + 32 * MIB,
        "the gateway grew by {} MiB",
        grown / MIB
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn final_pushes_stay_within_their_byte_bound() {
    let max_push_mib: u64 = 64;
    let gateway = Gateway::start(&["--max-push-bytes", &(max_push_mib * MIB).to_string()]);
    let baseline = gateway.rss();
    // 40 identities pushing about 4 MB each, then leaving.
    let push = ClientMessage::from(Push {
        id: 1,
        families: vec![wide_family("pushed_gauge", 40_000)],
        r#final: true,
    });
    let n_pushers: usize = 40;
    for i in 0..n_pushers {
        let mut agent = RawAgent::hello(gateway.agents, "batch", &format!("b-{i}")).await;
        agent.send(&push).await;
        match agent.recv().await.and_then(|m| m.kind) {
            Some(ServerKind::PushAck(ack)) => assert_eq!(ack.error, ""),
            other => panic!("expected a PushAck, got {other:?}"),
        }
    }
    let held = gateway.metric("tether_pushes_held_bytes", &[]).await;
    assert!(held <= (max_push_mib * MIB) as f64, "{held} bytes held");
    let evicted = gateway
        .metric("tether_pushes_dropped_total", &[("reason", "evicted")])
        .await;
    assert!(evicted > 0.0, "the oldest pushes were dropped");
    // A scrape serves what is held.
    let (status, body) = get(gateway.http, "/metrics", &[]).await;
    assert_eq!(status, 200);
    let families = parse(&body, Format::Text).expect("valid output");
    let last = format!("b-{}", n_pushers - 1);
    assert!(
        value_of(&families, "pushed_gauge", &[("instance", &last)]).is_some(),
        "the newest push is served"
    );
    assert!(
        value_of(&families, "pushed_gauge", &[("instance", "b-0")]).is_none(),
        "the oldest push was dropped"
    );
    drop(families);
    let slowest = gateway.healthy().await;
    gateway.real_agent_is_scraped().await;
    let grown = growth(&gateway, baseline);
    eprintln!(
        "final pushes: {held} bytes held, peak growth {} MiB, slowest /-/healthy {slowest:?}",
        grown / MIB
    );
    // The ceiling: the pushes held, the frame being decoded, and one
    // rendered body of the pushes.
    assert!(
        grown < 3 * max_push_mib * MIB + 64 * MIB,
        "the gateway grew by {} MiB",
        grown / MIB
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn silent_sockets_never_stand_between_an_agent_and_its_handshake() {
    // Silent sockets would hold their slots for a minute.
    let gateway = Gateway::start(&[
        "--max-handshakes",
        "256",
        "--max-agents",
        "100",
        "--handshake-timeout-ms",
        "60000",
    ]);
    let baseline = gateway.rss();
    let mut silent = Vec::new();
    for _ in 0..1_000 {
        silent.push(
            TcpStream::connect(gateway.agents)
                .await
                .expect("connect a silent socket"),
        );
    }
    // All but the pool's 256 are evicted, told why.
    gateway
        .wait_for(
            "tether_agent_rejects_total",
            &[("reason", "handshake_evicted")],
            f64::from(1_000 - 256),
        )
        .await;
    let started = Instant::now();
    let agent = RawAgent::hello(gateway.agents, "real", "raw").await;
    let handshake = started.elapsed();
    drop(agent);
    let slowest = gateway.healthy().await;
    gateway.real_agent_is_scraped().await;
    let grown = growth(&gateway, baseline);
    eprintln!(
        "silent sockets: handshake {handshake:?}, peak growth {} MiB, slowest /-/healthy {slowest:?}",
        grown / MIB
    );
    assert!(grown < 64 * MIB, "the gateway grew by {} MiB", grown / MIB);
    // The evicted sockets were closed with a Reject.
    let mut evicted = 0;
    for mut socket in silent.into_iter().take(100) {
        let mut conn = FramedConn::new(&mut socket);
        if let Ok(Ok(Some(body))) = tokio::time::timeout(PATIENCE, conn.read_frame(1 << 20)).await
            && let Ok(message) = decode_server_message(body)
            && let Some(ServerKind::Reject(reject)) = message.kind
        {
            assert_eq!(reject.reason(), RejectReason::TooManyConnections);
            evicted += 1;
        }
    }
    assert_eq!(evicted, 100, "the oldest sockets were the ones evicted");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn scrapers_that_do_not_read_share_a_bounded_number_of_bodies() {
    let gateway = Gateway::start(&[]);
    // An agent whose answer renders to about 10 MB.
    let mut agent = RawAgent::hello(gateway.agents, "big", "b").await;
    let families = vec![wide_family("wide_gauge", 100_000)];
    let serving = tokio::spawn(async move {
        while let Some(message) = agent.recv().await {
            match message.kind {
                Some(ServerKind::ScrapeRequest(request)) => {
                    agent
                        .send(&ClientMessage::from(ScrapeResponse {
                            id: request.id,
                            families: families.clone(),
                            error: String::new(),
                        }))
                        .await;
                }
                Some(ServerKind::Ping(ping)) => {
                    agent
                        .send(&ClientMessage::from(tether_proto::Pong {
                            nonce: ping.nonce,
                        }))
                        .await;
                }
                _ => {}
            }
        }
    });
    // One scrape read in full: the size of a body, and the memory of a
    // gateway that has served one.
    let (status, body) = get(gateway.http, "/metrics", &[]).await;
    assert_eq!(status, 200);
    let body_len = body.len() as u64;
    drop(body);
    let baseline = gateway.rss();
    // 50 HTTP/1.1 scrapers and one HTTP/2 connection with as many streams
    // as it may open, none of which reads its response.
    let mut stalled = Vec::new();
    for _ in 0..50 {
        let mut stream = TcpStream::connect(gateway.http).await.expect("connect");
        stream
            .write_all(b"GET /metrics HTTP/1.1\r\nHost: tether\r\n\r\n")
            .await
            .expect("send");
        stalled.push(stream);
    }
    let h2_stream = TcpStream::connect(gateway.http).await.expect("connect");
    let (h2, connection) = h2::client::handshake(h2_stream).await.expect("HTTP/2");
    let h2_task = tokio::spawn(connection);
    let request = || {
        http::Request::get(format!("http://{}/metrics", gateway.http))
            .body(())
            .expect("a request")
    };
    let mut sender = h2.ready().await.expect("a stream");
    let (first, _) = sender.send_request(request(), true).expect("sent");
    let mut h2_responses = vec![first.await.expect("response headers")];
    // The server's settings have arrived with its first response.
    let max_streams = sender.current_max_send_streams();
    assert_eq!(max_streams, 8, "HTTP/2 streams per connection are capped");
    for _ in 1..max_streams {
        sender = sender.ready().await.expect("a stream");
        let (response, _) = sender.send_request(request(), true).expect("sent");
        h2_responses.push(response.await.expect("response headers"));
    }
    // Every HTTP/1.1 response has started to arrive (and stalls).
    for stream in &stalled {
        let mut first_byte = [0u8; 1];
        let peeked = tokio::time::timeout(PATIENCE, stream.peek(&mut first_byte))
            .await
            .expect("the response starts in time");
        assert_eq!(peeked.expect("peek"), 1);
    }
    let held = gateway.metric("tether_scrape_bodies_held", &[]).await;
    let slowest = gateway.healthy().await;
    gateway.real_agent_is_scraped().await;
    let grown = growth(&gateway, baseline);
    eprintln!(
        "stalled scrapers: bodies of {} MiB, {held} held, peak growth {} MiB, slowest /-/healthy {slowest:?}",
        body_len / MIB,
        grown / MIB
    );
    // Eight on /metrics, and the one of /metrics/proxy that served the gauge.
    assert!(held <= 8.0 + 1.0, "{held} bodies held");
    // The ceiling: eight bodies, each with the answer and the view it was
    // rendered from.
    assert!(
        grown < 8 * 3 * body_len + 64 * MIB,
        "the gateway grew by {} MiB for bodies of {} MiB",
        grown / MIB,
        body_len / MIB
    );
    drop(h2_responses);
    h2_task.abort();
    serving.abort();
}
