//! Test support: a gateway on loopback, hand-driven agents speaking raw
//! frames, and a minimal HTTP client.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use bytes::BytesMut;
use tether_gateway::{Config, Error, Gateway, RawConfig, SelfMetrics};
use tether_model::{Label, pb};
use tether_proto::{ClientMessage, FrameDecoder, Hello, ServerKind, ServerMessage, Welcome};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

/// Bound on every wait in these tests: a failure, never a measurement.
pub(crate) const PATIENCE: Duration = Duration::from_secs(20);

/// A validated configuration from `raw`, which tests build on
/// [`RawConfig::loopback`].
#[allow(
    clippy::needless_pass_by_value,
    reason = "tests write `config(RawConfig { .. })` with a temporary"
)]
pub(crate) fn config(raw: RawConfig) -> Config {
    Config::from_raw(&raw).expect("a valid test configuration")
}

/// A running gateway that stops when dropped.
pub(crate) struct TestGateway {
    pub(crate) http: SocketAddr,
    pub(crate) agents: SocketAddr,
    shutdown: CancellationToken,
    task: Option<JoinHandle<Result<(), Error>>>,
}

impl TestGateway {
    /// Starts a gateway with `config` (listeners forced onto loopback
    /// port 0) and a private recorder.
    pub(crate) async fn start(config: Config) -> TestGateway {
        assert!(
            config.http_listen().ip().is_loopback() && config.agent_listen().ip().is_loopback(),
            "tests listen on loopback only"
        );
        TestGateway::start_at(config).await
    }

    /// Starts a gateway on the addresses `config` names.
    pub(crate) async fn start_at(config: Config) -> TestGateway {
        let self_metrics = SelfMetrics {
            recorder: Arc::new(metrics::NoopRecorder),
            families: Arc::new(Vec::new),
        };
        TestGateway::start_bound(config, self_metrics).await
    }

    /// Starts a gateway on `raw` that records its own metrics, so tests
    /// can read its counters on `/metrics/proxy`.
    pub(crate) async fn start_observed(raw: RawConfig) -> TestGateway {
        let recorder = Arc::new(tether_exporter::ExporterBuilder::new().build_recorder());
        let handle = recorder.handle();
        let self_metrics = SelfMetrics {
            recorder,
            families: Arc::new(move || handle.families()),
        };
        TestGateway::start_bound(config(raw), self_metrics).await
    }

    async fn start_bound(config: Config, self_metrics: SelfMetrics) -> TestGateway {
        let gateway = Gateway::bind(config, self_metrics)
            .await
            .expect("gateway binds on loopback");
        let (http, agents) = (gateway.http_addr(), gateway.agent_addr());
        let shutdown = CancellationToken::new();
        let task = tokio::spawn(gateway.run(shutdown.clone()));
        TestGateway {
            http,
            agents,
            shutdown,
            task: Some(task),
        }
    }

    /// Stops the gateway and waits for it to finish.
    pub(crate) async fn stop(mut self) {
        self.shutdown.cancel();
        if let Some(task) = self.task.take() {
            tokio::time::timeout(PATIENCE, task)
                .await
                .expect("gateway stops in time")
                .expect("gateway task did not panic")
                .expect("gateway ran without error");
        }
    }
}

impl Drop for TestGateway {
    fn drop(&mut self) {
        self.shutdown.cancel();
    }
}

/// An agent driven frame by frame by the test.
pub(crate) struct RawAgent {
    stream: TcpStream,
    buf: BytesMut,
}

impl RawAgent {
    pub(crate) async fn connect(addr: SocketAddr) -> RawAgent {
        RawAgent {
            stream: TcpStream::connect(addr)
                .await
                .expect("connect to the agent listener"),
            buf: BytesMut::new(),
        }
    }

    /// Connects from the loopback address `local` (127.0.0.2, …), as an
    /// agent on another host would.
    pub(crate) async fn connect_from(local: std::net::IpAddr, addr: SocketAddr) -> RawAgent {
        let socket = tokio::net::TcpSocket::new_v4().expect("socket");
        socket
            .bind(SocketAddr::new(local, 0))
            .expect("bind a loopback address");
        RawAgent {
            stream: socket
                .connect(addr)
                .await
                .expect("connect to the agent listener"),
            buf: BytesMut::new(),
        }
    }

    /// Connects and completes a handshake as `job`/`instance`.
    pub(crate) async fn hello(
        addr: SocketAddr,
        job: &str,
        instance: &str,
        token: &str,
    ) -> (RawAgent, Welcome) {
        let mut agent = RawAgent::connect(addr).await;
        agent
            .send(Hello::new(token, [("job", job), ("instance", instance)]))
            .await;
        match agent.recv().await.and_then(|m| m.kind) {
            Some(ServerKind::Welcome(welcome)) => (agent, welcome),
            other => panic!("expected Welcome, got {other:?}"),
        }
    }

    pub(crate) async fn send(&mut self, message: impl Into<ClientMessage>) {
        let bytes = tether_proto::encode_to_vec(&message.into());
        self.write_raw(&bytes).await;
    }

    pub(crate) async fn write_raw(&mut self, bytes: &[u8]) {
        self.stream
            .write_all(bytes)
            .await
            .expect("write to the gateway");
    }

    /// The next message, or `None` when the gateway closed the connection.
    pub(crate) async fn recv(&mut self) -> Option<ServerMessage> {
        let mut decoder = FrameDecoder::new(64 << 20);
        tokio::time::timeout(PATIENCE, async {
            loop {
                if let Some(body) = decoder
                    .decode(&mut self.buf)
                    .expect("gateway sends valid frames")
                {
                    return Some(
                        tether_proto::decode_server_message(body)
                            .expect("gateway sends valid messages"),
                    );
                }
                match self.stream.read_buf(&mut self.buf).await {
                    Ok(0) | Err(_) => return None,
                    Ok(_) => {}
                }
            }
        })
        .await
        .expect("the gateway answers in time")
    }

    /// Whether the connection ends without a valid frame: true when the
    /// peer closes or sends bytes that are not a frame of this protocol.
    pub(crate) async fn recv_raw_closed(&mut self) -> bool {
        let mut decoder = FrameDecoder::new(64 << 20);
        tokio::time::timeout(PATIENCE, async {
            loop {
                match decoder.decode(&mut self.buf) {
                    Err(_) => return true,
                    Ok(Some(body)) => return tether_proto::decode_server_message(body).is_err(),
                    Ok(None) => {}
                }
                match self.stream.read_buf(&mut self.buf).await {
                    Ok(0) | Err(_) => return true,
                    Ok(_) => {}
                }
            }
        })
        .await
        .expect("the gateway closes in time")
    }

    /// Answers scrapes with `families` and pings with pongs until the
    /// gateway closes the connection.
    pub(crate) fn serve(mut self, families: Vec<pb::MetricFamily>) -> JoinHandle<()> {
        tokio::spawn(async move {
            while let Some(message) = self.recv().await {
                match message.kind {
                    Some(ServerKind::ScrapeRequest(request)) => {
                        self.send(tether_proto::ScrapeResponse {
                            id: request.id,
                            families: families.clone(),
                            error: String::new(),
                        })
                        .await;
                    }
                    Some(ServerKind::Ping(ping)) => {
                        self.send(tether_proto::Pong { nonce: ping.nonce }).await;
                    }
                    _ => {}
                }
            }
        })
    }
}

/// A gauge family with one series per `(label value, value)`.
pub(crate) fn gauge(name: &str, series: &[(&str, f64)]) -> pb::MetricFamily {
    let mut family = tether_model::MetricFamily::new(name, tether_model::MetricType::Gauge);
    family.help = Some(format!("Test gauge {name}."));
    family.series = series
        .iter()
        .map(|&(label, value)| tether_model::Series {
            labels: vec![Label::new("k", label)],
            value: tether_model::Value::Single(value),
            timestamp_ms: None,
        })
        .collect();
    tether_model::to_proto(&family)
}

/// A response of the minimal HTTP client.
pub(crate) struct Response {
    pub(crate) status: u16,
    pub(crate) headers: HashMap<String, String>,
    pub(crate) body: Vec<u8>,
}

impl Response {
    pub(crate) fn text(&self) -> String {
        String::from_utf8(self.body.clone()).expect("UTF-8 body")
    }
}

/// `GET path` over HTTP/1.1 with `headers`.
pub(crate) async fn get(addr: SocketAddr, path: &str, headers: &[(&str, &str)]) -> Response {
    try_get(addr, path, headers).await.expect("connect to HTTP")
}

/// As [`get`], `None` when nothing listens (yet).
pub(crate) async fn try_get(
    addr: SocketAddr,
    path: &str,
    headers: &[(&str, &str)],
) -> Option<Response> {
    tokio::time::timeout(PATIENCE, async {
        let mut stream = TcpStream::connect(addr).await.ok()?;
        let mut request = format!("GET {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n");
        for (name, value) in headers {
            request.push_str(&format!("{name}: {value}\r\n"));
        }
        request.push_str("\r\n");
        stream
            .write_all(request.as_bytes())
            .await
            .expect("send request");
        let mut raw = Vec::new();
        stream.read_to_end(&mut raw).await.expect("read response");
        let split = raw
            .windows(4)
            .position(|w| w == b"\r\n\r\n")
            .expect("response has a header block");
        let head = String::from_utf8_lossy(&raw[..split]).into_owned();
        let mut lines = head.lines();
        let status = lines
            .next()
            .and_then(|l| l.split(' ').nth(1))
            .and_then(|s| s.parse().ok())
            .expect("status line");
        let headers: HashMap<String, String> = lines
            .filter_map(|l| l.split_once(':'))
            .map(|(k, v)| (k.trim().to_ascii_lowercase(), v.trim().to_owned()))
            .collect();
        let mut body = raw[split + 4..].to_vec();
        if headers
            .get("transfer-encoding")
            .is_some_and(|v| v == "chunked")
        {
            body = dechunk(&body);
        }
        Some(Response {
            status,
            headers,
            body,
        })
    })
    .await
    .expect("HTTP answers in time")
}

fn dechunk(mut body: &[u8]) -> Vec<u8> {
    let mut out = Vec::new();
    loop {
        let line_end = body
            .windows(2)
            .position(|w| w == b"\r\n")
            .expect("chunk size line");
        let size = usize::from_str_radix(
            std::str::from_utf8(&body[..line_end])
                .expect("ascii")
                .trim(),
            16,
        )
        .expect("hex size");
        body = &body[line_end + 2..];
        if size == 0 {
            return out;
        }
        out.extend_from_slice(&body[..size]);
        body = &body[size + 2..];
    }
}

/// A gateway metric's value as `/metrics/proxy` serves it now; 0 when
/// absent.
pub(crate) async fn self_metric(gateway: &TestGateway, name: &str, labels: &[(&str, &str)]) -> f64 {
    let families = tether_model::parse(
        &get(gateway.http, "/metrics/proxy", &[]).await.body,
        tether_model::Format::Text,
    )
    .expect("valid output");
    value_of(&families, name, labels).unwrap_or(0.0)
}

/// The value of the series of `family` whose labels include all of `labels`.
pub(crate) fn value_of(
    families: &[tether_model::MetricFamily],
    family: &str,
    labels: &[(&str, &str)],
) -> Option<f64> {
    let family = families.iter().find(|f| f.name == family)?;
    family.series.iter().find_map(|series| {
        let matches = labels.iter().all(|(name, value)| {
            series
                .labels
                .iter()
                .any(|l| l.name == *name && l.value == *value)
        });
        match (&series.value, matches) {
            (tether_model::Value::Single(v), true) => Some(*v),
            (tether_model::Value::Counter(c), true) => Some(c.total),
            _ => None,
        }
    })
}
