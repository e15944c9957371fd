//! A real Prometheus server scrapes a gateway with agents connected; the
//! test reads what Prometheus stored through its query API.
//!
//! Prometheus comes from the Debian `prometheus` package, which the test
//! command installs.

use std::net::TcpListener;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use tether_gateway::Config;

use crate::support::{RawAgent, TestGateway, gauge, try_get};

/// Kills the Prometheus server when the test ends, however it ends.
struct Prometheus {
    child: Child,
    web: std::net::SocketAddr,
    _dir: TempDir,
}

impl Drop for Prometheus {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

struct TempDir(std::path::PathBuf);

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("a free loopback port")
        .port()
}

fn start_prometheus(target: std::net::SocketAddr) -> Prometheus {
    let dir = std::env::temp_dir().join(format!(
        "tether-prometheus-{}-{}",
        std::process::id(),
        free_port()
    ));
    std::fs::create_dir_all(&dir).expect("temp dir");
    let config = dir.join("prometheus.yml");
    std::fs::write(
        &config,
        format!(
            "global:\n  scrape_interval: 1s\n  scrape_timeout: 1s\nscrape_configs:\n  - job_name: tether\n    honor_labels: true\n    static_configs:\n      - targets: ['{target}']\n"
        ),
    )
    .expect("write prometheus.yml");
    let web = std::net::SocketAddr::from(([127, 0, 0, 1], free_port()));
    let child = Command::new("prometheus")
        .arg(format!("--config.file={}", config.display()))
        .arg(format!("--storage.tsdb.path={}", dir.join("data").display()))
        .arg(format!("--web.listen-address={web}"))
        .arg("--log.level=warn")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("prometheus must be installed (Debian package `prometheus`); the README's test command installs it");
    Prometheus {
        child,
        web,
        _dir: TempDir(dir),
    }
}

/// Runs an instant query and returns the first result's value, if any.
async fn query(prometheus: &Prometheus, promql: &str) -> Option<f64> {
    let encoded: String = promql
        .bytes()
        .map(|b| match b {
            b'a'..=b'z' | b'A'..=b'Z' | b'0'..=b'9' | b'_' | b'-' | b'.' => (b as char).to_string(),
            _ => format!("%{b:02X}"),
        })
        .collect();
    let response = try_get(
        prometheus.web,
        &format!("/api/v1/query?query={encoded}"),
        &[],
    )
    .await?;
    if response.status != 200 {
        return None;
    }
    let json: serde_json::Value = serde_json::from_slice(&response.body).ok()?;
    json["data"]["result"][0]["value"][1].as_str()?.parse().ok()
}

/// Polls `promql` until it equals `expected` or the deadline passes.
async fn eventually(prometheus: &Prometheus, promql: &str, expected: f64) {
    let deadline = Instant::now() + Duration::from_secs(60);
    let mut last = None;
    while Instant::now() < deadline {
        last = query(prometheus, promql).await;
        if last == Some(expected) {
            return;
        }
        // Prometheus scrapes once a second; ask again shortly.
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    panic!("{promql}: expected {expected}, last answer {last:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn prometheus_scrapes_the_gateway_and_stores_every_agent_series() {
    let gateway = TestGateway::start(Config::loopback()).await;
    let mut serving = Vec::new();
    for instance in ["a:1", "b:1", "c:1"] {
        let (agent, _) = RawAgent::hello(gateway.agents, "app", instance, "").await;
        let series: Vec<(String, f64)> = (0..50).map(|i| (format!("s{i}"), f64::from(i))).collect();
        let series: Vec<(&str, f64)> = series.iter().map(|(k, v)| (k.as_str(), *v)).collect();
        serving.push(agent.serve(vec![
            gauge("temperature", &series),
            gauge("load", &[("one", 1.0)]),
        ]));
    }
    let prometheus = start_prometheus(gateway.http);
    eventually(&prometheus, "up{job=\"tether\"}", 1.0).await;
    // honor_labels keeps each agent's job and instance.
    eventually(&prometheus, "count(temperature{job=\"app\"})", 150.0).await;
    eventually(&prometheus, "count(load)", 3.0).await;
    eventually(&prometheus, "sum(tether_agent_up{job=\"app\"})", 3.0).await;
    eventually(&prometheus, "temperature{instance=\"b:1\",k=\"s7\"}", 7.0).await;
    drop(prometheus);
    gateway.stop().await;
    for task in serving {
        task.await.expect("agent task");
    }
}

#[tokio::test]
async fn promtool_and_the_model_checker_accept_the_gateway_output() {
    let gateway = TestGateway::start(Config::loopback()).await;
    let (agent, _) = RawAgent::hello(gateway.agents, "app", "a:1", "").await;
    let _serving = agent.serve(vec![gauge(
        "temperature",
        &[("x\"q\\", 1.0), ("y\nz", 2.0)],
    )]);
    let body = crate::support::get(gateway.http, "/metrics", &[])
        .await
        .body;
    let checked = tether_model::check(
        &body,
        tether_model::Format::Text,
        tether_model::Limits::default(),
        100,
    );
    assert!(checked.errors.is_empty(), "{:?}", checked.errors);
    assert_promtool_accepts(&body);
    gateway.stop().await;
}

/// A family of `metric_type` with one unlabelled series, as protobuf.
fn one_series(name: &str, metric_type: tether_model::MetricType) -> tether_model::pb::MetricFamily {
    use tether_model::{Bucket, Counter, Histogram, MetricFamily, Series, Value};
    let value = match metric_type {
        tether_model::MetricType::Counter => Value::Counter(Counter {
            total: 3.0,
            created: None,
            exemplar: None,
        }),
        tether_model::MetricType::Histogram => Value::Histogram(Histogram {
            buckets: vec![Bucket {
                upper_bound: f64::INFINITY,
                count: 1.0,
                exemplar: None,
            }],
            count: Some(1.0),
            sum: Some(0.5),
            created: None,
        }),
        _ => Value::Single(1.0),
    };
    let mut family = MetricFamily::new(name, metric_type);
    family.help = Some(format!("{name} help."));
    family.series.push(Series {
        labels: vec![],
        value,
        timestamp_ms: None,
    });
    tether_model::to_proto(&family)
}

#[tokio::test]
async fn agents_whose_families_collide_still_make_one_valid_exposition() {
    use tether_model::MetricType::{Counter, Gauge, Histogram};
    let gateway = TestGateway::start(Config::loopback()).await;
    let (a, _) = RawAgent::hello(gateway.agents, "app", "a", "").await;
    let _a = a.serve(vec![
        one_series("x_total", Counter),
        one_series("temp", Gauge),
        one_series("hh", Histogram),
    ]);
    let (b, _) = RawAgent::hello(gateway.agents, "app", "b", "").await;
    let _b = b.serve(vec![
        one_series("x", Gauge),
        one_series("temp", Gauge),
        one_series("hh_count", Gauge),
        one_series("tether_agent_up", Gauge),
    ]);
    for (accept, format) in [
        ("text/plain;version=0.0.4", tether_model::Format::Text),
        (
            "application/openmetrics-text;version=1.0.0",
            tether_model::Format::OpenMetrics,
        ),
    ] {
        let body = crate::support::get(gateway.http, "/metrics", &[("Accept", accept)])
            .await
            .body;
        let text = String::from_utf8_lossy(&body).into_owned();
        let checked = tether_model::check(&body, format, tether_model::Limits::default(), 100);
        assert!(checked.errors.is_empty(), "{:?}\n{text}", checked.errors);
        assert!(
            tether_model::name_collisions(&checked.families).is_empty(),
            "{text}"
        );
        // Each family once, both agents' `temp` in it, the hostile copy of
        // the gateway's own family nowhere.
        assert_eq!(text.matches("# TYPE temp gauge").count(), 1, "{text}");
        assert_eq!(text.matches("temp{").count(), 2, "{text}");
        assert_eq!(text.matches("tether_agent_up{").count(), 2, "{text}");
        if format == tether_model::Format::Text {
            assert_promtool_accepts(&body);
        }
    }
    gateway.stop().await;
}

/// `promtool check metrics` accepts `body`: 0 is clean, 3 is lint advice
/// only (test gauges have no unit suffix).
fn assert_promtool_accepts(body: &[u8]) {
    use std::io::Write;
    let mut promtool = Command::new("promtool")
        .args(["check", "metrics"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("promtool must be installed (Debian package `prometheus`)");
    promtool
        .stdin
        .take()
        .expect("piped")
        .write_all(body)
        .expect("write to promtool");
    let output = promtool.wait_with_output().expect("promtool runs");
    assert!(
        matches!(output.status.code(), Some(0 | 3)),
        "promtool rejected the gateway's output: {}{}\n{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr),
        String::from_utf8_lossy(body)
    );
}
